//! Cold start: from the bridge's process start to `/readyz` 200, and to the first 204.

use std::time::{Duration, Instant};

use http_body_util::Full;
use test_support::{Broker, JwksServer, free_port, get, http_client, send};

use crate::processes::spawn_bridge;
use crate::pushes::Bodies;

/// Process start → /readyz 200, and process start → first 204.
pub(crate) async fn cold_start(
    broker: &Broker,
    jwks: &JwksServer,
    token: &str,
) -> (Duration, Duration) {
    let client = http_client();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let body = Bodies::new(100, "cold").body(0);
    let started = Instant::now();
    let mut child = spawn_bridge(broker, jwks, port);
    let first_204 = loop {
        let request = http::Request::post(format!("{base}/"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(body.clone()))
            .unwrap();
        if send(&client, request).await.0 == 204 {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let started = Instant::now();
    let mut child = spawn_bridge(broker, jwks, port);
    let ready = loop {
        if get(&client, &format!("{base}/readyz")).await.0 == 200 {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    (ready, first_204)
}
