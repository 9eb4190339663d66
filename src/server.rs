//! The HTTP server: hyper 1 (HTTP/1.1 and h2c) in front of [`App::handle`], with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
use crate::error::DeliveryError;

/// Largest request head (request line plus headers) accepted over HTTP/1.1; oversized heads
/// are answered 431 by hyper instead of filling memory.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// After the grace period, how long 503 answers get to reach their clients before exit.
const ABANDON_FLUSH: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` completes, then drains.
///
/// Draining stops accepting, lets in-flight deliveries finish for `SHUTDOWN_TIMEOUT_MS`, then
/// answers any still waiting with 503 and returns. Nothing is answered 2xx without an ack.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config().header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let service = service_fn(move |request| serve(Arc::clone(&app), request));
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining in-flight deliveries"
    );
    let grace = app.config().shutdown_timeout;
    let drained = tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            ?grace,
            "grace period over: answering waiting deliveries 503"
        );
        app.abandon_in_flight();
        tokio::time::sleep(ABANDON_FLUSH).await;
    }
    tracing::info!("stopped");
}

/// Reads the body within the limit and runs the handler in its own task, so that a panic
/// becomes a 500 rather than a dropped connection.
async fn serve(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let limit = app.config().max_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match declared {
        Some(length) if length > limit as u64 => Err(DeliveryError::BodyTooLarge { limit }),
        _ => match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(DeliveryError::BodyTooLarge { limit })
            }
            Err(e) => Err(DeliveryError::BodyUnreadable(e.to_string())),
        },
    };
    let response = match body {
        Ok(body) => {
            let request = Request::from_parts(parts, body);
            let handler = tokio::spawn(async move { app.handle(request).await });
            match handler.await {
                Ok(response) => response,
                Err(e) => {
                    tracing::error!(error = %e, "handler panicked");
                    DeliveryError::Internal.to_response()
                }
            }
        }
        Err(error) => {
            tracing::warn!(status = error.status().as_u16(), reason = %error, "delivery failed");
            error.to_response()
        }
    };
    Ok(response.map(Full::new))
}

/// Resolves on SIGTERM (Cloud Run's stop signal) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
