//! The HTTP server: hyper 1 (HTTP/1.1 and h2c) in front of [`App::handle`], with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
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
/// An oversized body is read and discarded up to this many bytes so the 413 reaches the client.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// ... and for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(5);
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
    let version = parts.version;
    let limit = app.config().max_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let refused_unread = declared.is_some_and(|length| length > DRAIN_MAX_BYTES.max(limit as u64));
    let body = if refused_unread {
        // Far too large to be worth reading: refuse at once.
        Err(DeliveryError::BodyTooLarge { limit })
    } else {
        read_body(body, limit).await
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
    let mut response = response.map(Full::new);
    // The unread body makes the connection unusable: say so, so no client sends its next
    // request on a connection the server is about to close (HTTP/1 only; HTTP/2 streams are
    // reset on their own).
    if refused_unread && is_http1(version) {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

fn is_http1(version: http::Version) -> bool {
    version < http::Version::HTTP_2
}

/// Reads a request body of at most `limit` bytes.
///
/// An oversized body is still read to its end (and thrown away), up to [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_TIME`]: closing a connection with unread data makes the kernel reset it, and the
/// client would lose the 413 that tells it why.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, DeliveryError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut kept = 0usize;
    let mut seen = 0u64;
    let mut drain_deadline = None;
    loop {
        let frame = match drain_deadline {
            None => body.frame().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            },
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| DeliveryError::BodyUnreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if drain_deadline.is_none() && kept + data.len() <= limit {
            kept += data.len();
            chunks.push(data);
        } else {
            chunks.clear();
            drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_TIME);
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    }
    if drain_deadline.is_some() {
        return Err(DeliveryError::BodyTooLarge { limit });
    }
    // One chunk (the common case) is handed on as is; several are joined once.
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
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
