//! AWS Lambda adapter: a `lambda_http` request in, [`Service::handle`], a `lambda_http` response out.
//!
//! It only translates bodies: the verification, mapping and produce logic are the server's own.
//! It never returns `Err`: an error there would be an invocation failure, not a status.

use bytes::Bytes;
use lambda_http::{Body, Request, Response};

use crate::Service;
use crate::kafka::Produce;

/// Runs one Function URL / API Gateway / ALB request through the shared service.
pub async fn handle<P: Produce>(service: &Service<P>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        // `Body` may grow variants; an unknown one is treated as empty rather than guessed at.
        #[allow(unreachable_patterns)]
        _ => Bytes::new(),
    };
    let response = service.handle(http::Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    let body = if body.is_empty() {
        Body::Empty
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(bytes) => Body::Binary(bytes.into_bytes()),
        }
    };
    Response::from_parts(parts, body)
}
