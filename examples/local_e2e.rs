//! Local end-to-end run: tansu, the bridge binary, signed push deliveries, and a read-back.
//!
//! Run through `infra/local-e2e.sh`, which installs tansu and builds the bridge first.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::*;

#[tokio::main]
async fn main() {
    let broker = Broker::start().await;
    broker.create_topic("pubsub-demo", 3).await;
    println!(
        "tansu broker on {} (topic pubsub-demo, 3 partitions)",
        broker.bootstrap()
    );
    let jwks = JwksServer::start(&[key(1)]).await;
    println!("JWKS endpoint at {}", jwks.url);

    let port = free_port();
    #[allow(clippy::disallowed_methods, reason = "the example's own setting")]
    let binary =
        std::env::var("BRIDGE_BIN").unwrap_or_else(|_| "target/release/pubsub-kafka-bridge".into());
    let mut bridge = Command::new(&binary)
        .env("PORT", port.to_string())
        .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("KAFKA_TOPIC", "pubsub-demo")
        .env("OIDC_AUDIENCE", AUDIENCE)
        .env("OIDC_JWKS_URL", &jwks.url)
        .env("OIDC_ALLOWED_EMAILS", PUSH_EMAIL)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let client = http_client();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while get(&client, &format!("{base}/readyz")).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "bridge not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("bridge ready on {base} after {:?}", started.elapsed());

    let token = mint(&key(1), &google_claims());
    type Sample<'a> = (&'a str, &'a [u8], Vec<(String, String)>, Option<&'a str>);
    let samples: Vec<Sample<'_>> = vec![
        (
            "1001",
            b"hello from pub/sub",
            vec![("source".into(), "demo".into())],
            None,
        ),
        (
            "1002",
            b"{\"order\":42,\"total\":9.99}",
            vec![("content-type".into(), "application/json".into())],
            Some("customer-7"),
        ),
        ("1003", &[0, 159, 146, 150, 255], vec![], Some("customer-7")),
        (
            "1004",
            b"",
            vec![("only".into(), "attributes".into())],
            None,
        ),
        ("1005", b"last one", vec![], Some("customer-9")),
    ];
    for (id, data, attributes, key) in &samples {
        let body = envelope(data, attributes, id, "2026-11-24T10:00:00.123456Z", *key).to_string();
        let (status, text) = post(&client, &format!("{base}/"), body, Some(&token)).await;
        println!("push message {id}: HTTP {status} {text}");
    }
    let (status, _) = post(&client, &format!("{base}/"), "not json", Some(&token)).await;
    println!("push a malformed body: HTTP {status}");
    let (status, _) = post(&client, &format!("{base}/"), "{}", None).await;
    println!("push without a token: HTTP {status}");

    println!("\nWhat Kafka holds in pubsub-demo:");
    for c in broker.read_all("pubsub-demo").await {
        let key = c.record.key.as_deref().map(String::from_utf8_lossy);
        let value = c.record.value.as_deref().unwrap_or_default();
        let headers: Vec<String> = c
            .record
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect();
        println!(
            "  partition {} offset {} timestamp {} key {:?} value {:?}\n    headers: {}",
            c.partition,
            c.offset,
            c.record.timestamp.timestamp_millis(),
            key,
            String::from_utf8_lossy(value),
            headers.join(", ")
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &bridge.id().to_string()])
        .status();
    let _ = bridge.wait();
}
