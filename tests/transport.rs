//! The HTTP layer itself: h2c, slow clients, oversized heads.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn bridge(broker: &Broker, extra: &[(&str, &str)]) -> Bridge {
    broker.create_topic("transport", 1).await;
    let mut env = bridge_env(broker, "transport", None);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Bridge::start(&env).await
}

#[tokio::test]
async fn deliveries_over_h2c_prior_knowledge() {
    let broker = Broker::start().await;
    let bridge = bridge(&broker, &[]).await;
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let body = envelope(b"over h2c", &[], "h2-1", "2024-01-01T00:00:00Z", None).to_string();
    let request = http::Request::post(bridge.url())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = h2.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 204);
    let records = broker.read_all("transport").await;
    assert_eq!(records[0].record.value.as_deref(), Some(&b"over h2c"[..]));
}

#[tokio::test]
async fn slow_loris_clients_are_cut_off_and_others_still_served() {
    let broker = Broker::start().await;
    let bridge = bridge(&broker, &[("HTTP_HEADER_READ_TIMEOUT_MS", "500")]).await;
    // 50 connections that send half a request head and then nothing.
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    let body = envelope(b"x", &[], "during-loris", "2024-01-01T00:00:00Z", None).to_string();
    assert_eq!(post(&http_client(), &bridge.url(), body, None).await.0, 204);
    let started = Instant::now();
    for mut s in idle {
        let mut buf = Vec::new();
        // The server closes the connection (possibly after a 408) once the timeout passes.
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "slow connection still open after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let broker = Broker::start().await;
    let bridge = bridge(&broker, &[]).await;
    let mut s = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(
        get(&http_client(), &format!("http://{}/healthz", bridge.addr))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn json_logs_name_the_failed_delivery_for_cloud_logging() {
    let broker = Broker::start().await;
    broker.create_topic("logs", 1).await;
    let log_path = std::env::temp_dir().join(format!(
        "pkb-json-log-{}-{}",
        std::process::id(),
        free_port()
    ));
    let mut env = bridge_env(&broker, "logs", None);
    env.insert("LOG_FORMAT".into(), "json".into());
    env.insert("GOOGLE_CLOUD_PROJECT".into(), "test-project".into());
    let (mut child, base) = spawn_bridge_process(&env, Some(&log_path)).await;
    let client = http_client();
    wait_for_status(&client, &format!("{base}/readyz"), 200).await;
    let bad = r#"{"message":{"data":"@@@","messageId":"42","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#;
    let request = http::Request::post(format!("{base}/"))
        .header(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )
        .body(Full::new(Bytes::from_static(bad.as_bytes())))
        .unwrap();
    assert_eq!(send(&client, request).await.0, 400);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["message"] == "delivery failed")
        .expect("a failed-delivery line");
    assert_eq!(failed["severity"], "WARNING");
    assert_eq!(failed["message_id"], "42");
    assert_eq!(failed["status"], 400);
    assert_eq!(failed["code"], "invalid_base64");
    assert_eq!(
        failed["logging.googleapis.com/trace"],
        "projects/test-project/traces/105445aa7843bc8bf206b12000100000"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["severity"].is_string() && l["message"].is_string())
    );
}
