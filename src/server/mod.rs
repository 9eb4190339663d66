//! The HTTP server: hyper 1 (HTTP/1.1 and h2c) in front of [`Service`], every connection and
//! request bounded in time and size before authentication costs anything. This file owns the
//! listener and the shutdown: the accept loop, the stop signal and the drain.
//!
//! - `connection`: one connection from accept to close (`protocol` tells HTTP/1 from HTTP/2,
//!   `builders` holds hyper's settings);
//! - `supervise`: the connection's deadlines (a stalled head, idling, the server's stop), over
//!   what `activity` and `heads` observe of it;
//! - `request`: one request from head to answer, its body read by `body` within its limits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::kafka::Produce;
use crate::service::{Service, Signal};

mod activity;
mod body;
mod builders;
mod connection;
mod heads;
mod protocol;
mod request;
mod supervise;

pub use builders::TRANSPORT_HEAD_BYTES;

/// After the grace period, how long 503 answers get to reach their clients before exit.
const ABANDON_FLUSH: Duration = Duration::from_secs(1);
/// How long the accept loop waits after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `service` on `listener` until `shutdown` completes, then drains.
///
/// Draining stops accepting, lets in-flight deliveries finish for `SHUTDOWN_TIMEOUT_MS`, then
/// answers any still waiting with 503 and returns. Nothing is answered 2xx without an ack.
pub async fn run<P: Produce>(
    listener: TcpListener,
    service: Arc<Service<P>>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = service.config().limits;
    let builders = Arc::new(builders::Builders::new(limits.h2_max_streams));
    // One permit per open connection: at the maximum, new clients wait in the listen backlog.
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let stopping = Arc::new(Signal::default());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection::serve_connection(
            stream,
            Arc::clone(&service),
            Arc::clone(&builders),
            permit,
            Arc::clone(&stopping),
        ));
    }
    drop(listener);
    let open = limits.max_connections - connections.available_permits();
    tracing::info!(
        connections = open,
        "shutting down: draining in-flight deliveries"
    );
    stopping.raise();
    let grace = service.config().shutdown_timeout;
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, connections.acquire_many(all))
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            ?grace,
            "grace period over: answering waiting deliveries 503"
        );
        service.abandon_in_flight();
        tokio::time::sleep(ABANDON_FLUSH).await;
    }
    tracing::info!("stopped");
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
