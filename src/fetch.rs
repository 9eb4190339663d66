//! One bounded HTTP exchange for the bridge's own outbound calls (JWKS keys, metadata-server
//! tokens, schema registration).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

/// An HTTP/1 client for the bridge's outbound calls: https checked against the Mozilla roots
/// bundled in the binary (a distroless image has no CA files), plain http where configuration
/// allowed it (loopback stand-ins in tests).
pub(crate) fn https_client<B>() -> Client<hyper_rustls::HttpsConnector<HttpConnector>, B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// Sends `request` with a deadline and a cap on the answer's body; a non-2xx status is an error.
///
/// Returns the response head and body; the error is a short reason for the caller's own
/// typed error (these calls only ever fail one way for their callers: "not available now").
pub(crate) async fn send<C, B>(
    client: &Client<C, B>,
    request: http::Request<B>,
    max_body_bytes: usize,
    timeout: Duration,
) -> Result<(http::response::Parts, Bytes), String>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body_bytes)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((parts, body))
    };
    let (parts, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))??;
    if !parts.status.is_success() {
        return Err(format!("HTTP {}", parts.status));
    }
    Ok((parts, body))
}
