//! One connection from accept to close: its protocol told from its first bytes, hyper serving
//! its requests under supervision, and what the HTTP parser refused of it counted.

use std::pin::pin;
use std::sync::Arc;

use http::Request;
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::activity::{Activity, HeadWatch};
use super::builders::Builders;
use super::protocol::{Protocol, await_request_start};
use super::request::serve;
use super::supervise::{Deadlines, supervise};
use crate::error::DeliveryError;
use crate::kafka::Produce;
use crate::limits::HeadTooLarge;
use crate::service::{Service, Signal};

/// Drives one connection: waits (bounded) for its first bytes, serves it with the protocol
/// they show, and closes it when an HTTP/1 request head stalls past `HTTP_HEADER_READ_TIMEOUT_MS`,
/// when it idles past `HTTP_IDLE_TIMEOUT_MS`, or when the server stops.
pub(crate) async fn serve_connection<P: Produce>(
    stream: TcpStream,
    service: Arc<Service<P>>,
    builders: Arc<Builders>,
    _permit: OwnedSemaphorePermit,
    stopping: Arc<Signal>,
) {
    let config = service.config();
    let first_bytes_by = Instant::now() + config.header_read_timeout;
    // A connection that has not started a request when the server stops is closed at once
    // instead of holding the shutdown for its head deadline; one whose bytes are there is
    // served (and then closed) as the others are.
    let stop = stopping.notified(); // created before the flag is read (see `Signal`)
    let started = if stopping.is_raised() {
        None
    } else {
        tokio::select! {
            biased;
            protocol = await_request_start(&stream, first_bytes_by) => protocol,
            () = stop => None,
        }
    };
    let Some(protocol) = started else {
        return; // dropped: closed
    };
    let deadlines = Deadlines {
        head: config.header_read_timeout,
        idle: config.limits.idle_timeout,
    };
    let activity = Arc::new(Activity::new(protocol == Protocol::Http1));
    let requests = {
        let activity = Arc::clone(&activity);
        let service = Arc::clone(&service);
        service_fn(move |request: Request<Incoming>| {
            let busy = Activity::begin(&activity, request.body().size_hint().exact());
            // Taken apart here: the parts the request future holds are then its only copy.
            let (head, body) = request.into_parts();
            serve(Arc::clone(&service), head, body, busy)
        })
    };
    // A refusal is recorded while the connection (its socket) is still held: whoever sees it
    // closed can already see the refusal counted.
    match protocol {
        Protocol::Http1 => {
            let io = TokioIo::new(HeadWatch::new(stream, Arc::clone(&activity)));
            let connection = pin!(builders.http1.serve_connection(io, requests));
            let ended = supervise(connection, &activity, deadlines, &stopping).await;
            record_head_refusal(&service, ended);
        }
        Protocol::Http2 => {
            let connection = pin!(
                builders
                    .http2
                    .serve_connection(TokioIo::new(stream), requests)
            );
            let ended = supervise(connection, &activity, deadlines, &stopping).await;
            record_head_refusal(&service, ended);
        }
    }
}

/// Logs and counts what the HTTP parser refused of a connection that ended with `ended`.
fn record_head_refusal<P: Produce>(service: &Service<P>, ended: Option<hyper::Result<()>>) {
    if let Some(Err(error)) = ended
        && let Some(refusal) = head_refusal(&error)
    {
        service.refused_by_transport(&refusal);
    }
}

/// The refusal hyper answered itself when it could not take a request head (it writes 400,
/// 414 or 431 and ends the connection); `None` for anything else that ends a connection.
fn head_refusal(error: &hyper::Error) -> Option<DeliveryError> {
    if !error.is_parse() {
        return None;
    }
    Some(if error.is_parse_too_large() {
        // hyper puts an overlong request target (414) in the same class as a large head.
        if error.to_string().contains("URI") {
            DeliveryError::UriTooLong
        } else {
            HeadTooLarge::Transport.into()
        }
    } else {
        DeliveryError::MalformedHead(crate::error::bounded_echo(&error.to_string()))
    })
}
