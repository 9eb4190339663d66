//! The HTTP limit: a no-op hyper endpoint that reads each push and answers 204, run as a process
//! of its own (this bench's binary with `--noop-server PORT`).

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use test_support::{HttpClient, free_port, get};

use crate::processes::KillOnDrop;

/// A no-op endpoint: hyper reads the body and answers 204. Run as its own process.
pub(crate) async fn noop_server(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .status(204)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
        });
    }
}

/// The no-op endpoint as a process of its own, fresh for every measurement as the broker is.
pub(crate) struct NoopServer {
    pub(crate) port: u16,
    _process: KillOnDrop,
}

impl NoopServer {
    pub(crate) async fn start(client: &HttpClient) -> Self {
        let port = free_port();
        let process = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args(["--noop-server", &port.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        while get(client, &format!("http://127.0.0.1:{port}/")).await.0 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            port,
            _process: process,
        }
    }
}
