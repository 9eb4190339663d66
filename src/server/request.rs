//! One request, from its head to its answer: refused from the head when it can be, else its
//! body read within the limits and the delivery run.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};

use super::activity::Busy;
use super::body::{BodyFailure, DRAIN_MAX_BYTES, drain, read_body};
use crate::error::DeliveryError;
use crate::kafka::Produce;
use crate::service::{Head, Service};

/// One request: answered from its head when possible (token, method, budget) without reading
/// the body; otherwise the body is read within the limits and the delivery runs. When the
/// client goes away hyper drops this future, which cancels the delivery and frees its memory
/// (Pub/Sub redelivers what it never got an answer for).
pub(crate) async fn serve<P: Produce>(
    service: Arc<Service<P>>,
    head: http::request::Parts,
    body: Incoming,
    _busy: Busy,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let http1 = head.version < http::Version::HTTP_2;
    let mut permit = match service.admit(&head).await {
        Head::Delivery(permit) => permit,
        Head::Answered(response) => {
            let unread = !body.is_end_stream();
            return Ok(finish(response, unread && http1));
        }
    };
    let limits = service.config().limits;
    let max_body = service.config().max_body_bytes;
    // The length hyper framed the body by (Content-Length, validated), without a second
    // header lookup and parse; `None` for a chunked body.
    let declared = body.size_hint().exact();
    let body = match declared {
        // Far too large to be worth reading: refuse at once.
        Some(length) if length > DRAIN_MAX_BYTES.max(max_body as u64) => Err(BodyFailure {
            error: DeliveryError::BodyTooLarge { limit: max_body },
            unread: true,
        }),
        Some(length) if length > max_body as u64 => {
            drain(body, &limits).await;
            Err(BodyFailure {
                error: DeliveryError::BodyTooLarge { limit: max_body },
                unread: false,
            })
        }
        // The declared length is taken from the budget before any of it is read.
        Some(length) => match permit.reserve(length as usize) {
            Ok(()) => read_body(body, max_body, Some(length as usize), &limits, &mut permit).await,
            Err(overloaded) => Err(BodyFailure {
                error: overloaded.into(),
                unread: length > 0,
            }),
        },
        None => read_body(body, max_body, None, &limits, &mut permit).await,
    };
    match body {
        Ok(body) => Ok(finish(service.deliver(&head, body, permit).await, false)),
        Err(failure) => {
            let admitted = permit.admitted();
            drop(permit);
            let response = service.refuse(failure.error, &head.headers, admitted);
            Ok(finish(response, failure.unread && http1))
        }
    }
}

/// The response as hyper sends it; `close` says `Connection: close` because unread body bytes
/// make the HTTP/1 connection unusable (HTTP/2 resets just the stream on its own).
fn finish(response: Response<Bytes>, close: bool) -> Response<Full<Bytes>> {
    let mut response = response.map(Full::new);
    if close {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}
