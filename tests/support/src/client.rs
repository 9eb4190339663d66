//! The tests' HTTP client and its helpers (status and body of an answer).

use super::*;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// POSTs `body` with an optional bearer token; returns status and body.
pub async fn post(
    client: &HttpClient,
    url: &str,
    body: impl Into<Bytes>,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(client, request.body(Full::new(body.into())).unwrap()).await
}

/// Polls `url` until it answers `status`, for at most 20 s.
pub async fn wait_for_status(client: &HttpClient, url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(client, url).await.0 != status {
        assert!(Instant::now() < deadline, "{url} never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn get(client: &HttpClient, url: &str) -> (u16, String) {
    send(
        client,
        http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

pub async fn send(client: &HttpClient, request: http::Request<Full<Bytes>>) -> (u16, String) {
    match client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// The value of the metric `name` (with its labels, if any) in Prometheus text; NaN if absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}
