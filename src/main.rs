//! `pubsub-kafka-bridge`: the HTTP server binary (Cloud Run, or any container host), and
//! `pubsub-kafka-bridge check`, which tries the settings against the real services.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use pubsub_kafka_bridge::cli::Command;
use pubsub_kafka_bridge::server;

fn main() -> ExitCode {
    let runtime = if std::env::var("BRIDGE_RT").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    runtime.expect("runtime").block_on(serve())
}

async fn serve() -> ExitCode {
    let (command, config) =
        match pubsub_kafka_bridge::configure("pubsub-kafka-bridge", std::env::args_os()) {
            Ok(configured) => configured,
            Err(code) => return code,
        };
    if command == Command::Check {
        return pubsub_kafka_bridge::check::run(&config).await;
    }
    let service = match pubsub_kafka_bridge::start(config) {
        Ok(service) => service,
        Err(code) => return code,
    };
    // Listen on both stacks: Cloud Run and most container hosts route over IPv4, some over IPv6.
    let port = service.config().port;
    let listener = match bind(port).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(port, error = %e, "cannot listen");
            return ExitCode::from(1);
        }
    };
    tracing::info!(addr = ?listener.local_addr().ok(), topics = ?service.config().route.topics(), "listening");
    let warm = Arc::clone(&service);
    tokio::spawn(async move { warm.app().warm_up().await });
    server::run(listener, service, server::shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
        Ok(listener) => Ok(listener),
        Err(_) => tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await,
    }
}
