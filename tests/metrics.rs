//! `GET /metrics` after known deliveries on tansu, read by an independent parser (Python's
//! prometheus_client, `tests/prometheus_samples.py`): delivery latency by status class, produce
//! latency and records per produce request, the token cache, the Kafka connection state.
#![allow(
    clippy::disallowed_methods,
    reason = "tests read their own settings and whole answers"
)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::*;

/// One sample as prometheus_client parsed it.
struct Sample {
    name: String,
    labels: Value,
    value: f64,
}

/// `text` parsed by prometheus_client, which also checks every histogram's shape (ascending
/// `le`, cumulative buckets ending in `+Inf` equal to `_count`, a `_sum`) and that every family
/// is typed.
fn parse_in_python(text: &str) -> Vec<Sample> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prometheus_samples.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&output.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// The one sample named `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: Value) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == labels)
        .map(|s| s.value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels}");
    found[0]
}

/// Polls `/metrics` until `name` shows `wanted`, for at most 30 s.
async fn wait_for_metric(client: &HttpClient, url: &str, name: &str, wanted: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = get(client, url).await;
        if status == 200 && metric(&text, name) == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {wanted}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_deliveries_show_in_the_histograms_by_status_class() {
    const DELIVERED: usize = 12;
    let broker = Broker::start().await;
    broker.create_topic("metrics", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "metrics", Some(&jwks));
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1500".into());
    env.insert("KAFKA_REQUEST_TIMEOUT_MS".into(), "1000".into());
    env.insert("KAFKA_METADATA_REFRESH_MS".into(), "500".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let metrics_url = format!("http://{}/metrics", bridge.addr);
    let token = mint(&key(1), &google_claims());
    let body = |id: &str| envelope(b"payload", &[], id, "2024-01-01T00:00:00Z", None).to_string();

    // One after the other: each produce request carries exactly one record.
    for n in 0..DELIVERED {
        let (status, text) = post(
            &client,
            &bridge.url(),
            body(&format!("m-{n}")),
            Some(&token),
        )
        .await;
        assert_eq!(status, 204, "{text}");
    }
    let mut elsewhere = google_claims();
    elsewhere["aud"] = json!("https://elsewhere.example.test/push");
    let (status, _) = post(
        &client,
        &bridge.url(),
        body("aud"),
        Some(&mint(&key(1), &elsewhere)),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(&client, &bridge.url(), "not a push envelope", Some(&token)).await;
    assert_eq!(status, 400);

    broker.pause();
    let (status, text) = post(&client, &bridge.url(), body("paused"), Some(&token)).await;
    assert_eq!(status, 503, "{text}");
    let (_, paused) = get(&client, &metrics_url).await;
    assert_eq!(
        metric(&paused, "pubsub_kafka_bridge_kafka_connected"),
        0.0,
        "a delivery failed for want of an answer"
    );
    // The paused broker never acknowledges the record; wait until the producer let go of it
    // (one request timeout after the answer) so the produce figures are final.
    wait_for_metric(
        &client,
        &metrics_url,
        "pubsub_kafka_bridge_inflight_requests",
        0.0,
    )
    .await;
    broker.resume();
    wait_for_metric(
        &client,
        &metrics_url,
        "pubsub_kafka_bridge_kafka_connected",
        1.0,
    )
    .await;

    let (status, text) = get(&client, &metrics_url).await;
    assert_eq!(status, 200);
    let samples = parse_in_python(&text);
    let delivery = "pubsub_kafka_bridge_delivery_duration_seconds";
    let count = |class: &str| {
        value(
            &samples,
            &format!("{delivery}_count"),
            json!({"status": class}),
        )
    };
    let bucket = |class: &str, le: &str| {
        value(
            &samples,
            &format!("{delivery}_bucket"),
            json!({"status": class, "le": le}),
        )
    };
    let sum = |class: &str| {
        value(
            &samples,
            &format!("{delivery}_sum"),
            json!({"status": class}),
        )
    };
    assert_eq!(
        (count("2xx"), count("4xx"), count("5xx")),
        (DELIVERED as f64, 2.0, 1.0)
    );
    // The same deliveries as the status counter's.
    let answered = |status: &str| {
        value(
            &samples,
            "pubsub_kafka_bridge_deliveries_total",
            json!({ "status": status }),
        )
    };
    assert_eq!(answered("204"), count("2xx"));
    assert_eq!(answered("400") + answered("401"), count("4xx"));
    assert_eq!(answered("503"), count("5xx"));
    // The 503 waited for the produce timeout (1.5 s); the refusals never waited for Kafka.
    assert_eq!(bucket("5xx", "1"), 0.0);
    assert_eq!(bucket("5xx", "+Inf"), 1.0);
    assert!(sum("5xx") >= 1.5, "5xx sum {}", sum("5xx"));
    assert_eq!(bucket("4xx", "1"), 2.0);
    assert!(sum("2xx") > 0.0);

    // One record per acknowledged produce request; the paused one was never acknowledged.
    let requests = value(
        &samples,
        "pubsub_kafka_bridge_produce_requests_total",
        json!({}),
    );
    let records = value(
        &samples,
        "pubsub_kafka_bridge_produced_records_total",
        json!({}),
    );
    assert_eq!((requests, records), (DELIVERED as f64, DELIVERED as f64));
    let produce = "pubsub_kafka_bridge_produce_duration_seconds";
    assert_eq!(
        value(&samples, &format!("{produce}_count"), json!({})),
        requests
    );
    assert!(value(&samples, &format!("{produce}_sum"), json!({})) > 0.0);
    let batch = "pubsub_kafka_bridge_produce_batch_records";
    assert_eq!(
        value(&samples, &format!("{batch}_bucket"), json!({"le": "1"})),
        requests
    );
    assert_eq!(
        value(&samples, &format!("{batch}_count"), json!({})),
        requests
    );
    assert_eq!(value(&samples, &format!("{batch}_sum"), json!({})), records);

    // One token checked in full and cached, then found for every later delivery (the 400 and
    // the 503 included); the foreign-audience token checked in full and refused.
    assert_eq!(
        value(
            &samples,
            "pubsub_kafka_bridge_token_cache_hits_total",
            json!({})
        ),
        DELIVERED as f64 + 1.0
    );
    assert_eq!(
        value(
            &samples,
            "pubsub_kafka_bridge_token_cache_misses_total",
            json!({})
        ),
        2.0
    );
    assert_eq!(
        value(&samples, "pubsub_kafka_bridge_kafka_connected", json!({})),
        1.0
    );
    bridge.shutdown().await;
}
