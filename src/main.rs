//! `pubsub-kafka-bridge`: the HTTP server binary (Cloud Run, or any container host),
//! `pubsub-kafka-bridge check`, which tries the settings against the real services, and
//! `pubsub-kafka-bridge replay`, which replays the dead-letter topic.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use pubsub_kafka_bridge::cli::Command;
use pubsub_kafka_bridge::server;

/// mimalloc 2.x instead of glibc's malloc. With 64 deliveries in flight, glibc's per-thread
/// cache overflows and its slow paths (free-chunk consolidation on every allocation of 1 KiB or
/// more) were a fifth of the server's instructions: callgrind over the whole server under
/// `infra/bench.sh --profile 1024` counted 45.3k instructions per delivery with glibc, 37.8k
/// with mimalloc 2. Its 2.x line returns freed pages to the system within milliseconds, so the
/// resident set tracks live memory as the in-flight budget assumes; the 3.x line held more in
/// the same runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match runtime() {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// On one core (Cloud Run's 1-vCPU instance, the Terraform default, or `TOKIO_WORKER_THREADS=1`)
/// a current-thread runtime: everything on one thread, with no hand-offs between the main
/// thread and a lone worker. Measured with `infra/bench.sh --profile 1024`, three runs each
/// alternating: 18.6–19.6 µs of CPU per delivery against 19.1–20.6 µs for a one-worker
/// multi-thread runtime. With more cores, tokio's multi-thread runtime, which reads
/// `TOKIO_WORKER_THREADS` itself.
#[allow(
    clippy::disallowed_methods,
    reason = "TOKIO_WORKER_THREADS is tokio's own setting, which tokio reads itself; it is read \
              here only to choose the runtime's flavour, before the runtime that parses the \
              configuration exists"
)]
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

async fn serve() -> ExitCode {
    let (command, config) =
        match pubsub_kafka_bridge::configure("pubsub-kafka-bridge", std::env::args_os()) {
            Ok(configured) => configured,
            Err(code) => return code,
        };
    match command {
        Command::Check => return pubsub_kafka_bridge::check::run(&config).await,
        Command::Replay(args) => return pubsub_kafka_bridge::replay::run(config, args).await,
        Command::Serve => {}
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
