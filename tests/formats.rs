//! Every value format, read back from tansu and decoded by independent decoders (Python's
//! fastavro, google-cloud-pubsub's PubsubMessage, json) field by field.
#![allow(
    clippy::disallowed_methods,
    reason = "tests read their own settings and whole answers"
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use test_support::*;

struct Message {
    id: String,
    data: Vec<u8>,
    attributes: BTreeMap<String, String>,
    ordering_key: Option<String>,
    publish_time: String,
    delivery_attempt: Option<u32>,
}

fn messages(n: usize) -> Vec<Message> {
    let mut seed: u64 = 42;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize
    };
    (0..n)
        .map(|i| {
            let data: Vec<u8> = match i % 5 {
                0 => Vec::new(),
                1 => format!("{{\"n\":{i},\"text\":\"ünïcödé\"}}").into_bytes(),
                _ => (0..next() % 2000).map(|_| next() as u8).collect(),
            };
            Message {
                id: format!("fmt-{i:04}"),
                data,
                attributes: (0..next() % 8)
                    .map(|a| (format!("k{a}"), format!("v{i}-{a} ✓")))
                    .collect(),
                ordering_key: (i % 3 == 0).then(|| format!("key-{}", i % 7)),
                publish_time: format!(
                    "2025-06-{:02}T{:02}:{:02}:{:02}{}Z",
                    1 + i % 28,
                    i % 24,
                    i % 60,
                    (i * 7) % 60,
                    ["", ".1", ".123", ".123456", ".123456789"][i % 5]
                ),
                delivery_attempt: (i % 4 == 0).then_some(1 + (i % 9) as u32),
            }
        })
        .collect()
}

async fn round_trip(format: &str) {
    round_trip_with(format, format, &[]).await;
}

/// Sends 220 varied messages with `KAFKA_VALUE_FORMAT=format` (plus `extra` settings) and has
/// the Python decoder check every record as `decoder`.
async fn round_trip_with(format: &str, decoder: &str, extra: &[(&str, String)]) {
    let broker = Broker::start().await;
    let topic = format!("values-{decoder}");
    broker.create_topic(&topic, 3).await;
    let mut env = bridge_env(&broker, &topic, None);
    env.insert("KAFKA_VALUE_FORMAT".into(), format.into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.clone());
    }
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let sent = messages(220);
    let statuses: Vec<u16> = futures_util::stream::iter(&sent)
        .map(|m| {
            let (client, url) = (client.clone(), bridge.url());
            let attrs: Vec<(String, String)> = m.attributes.clone().into_iter().collect();
            let mut body = envelope(
                &m.data,
                &attrs,
                &m.id,
                &m.publish_time,
                m.ordering_key.as_deref(),
            );
            if let Some(a) = m.delivery_attempt {
                body["deliveryAttempt"] = a.into();
            }
            async move { post(&client, &url, body.to_string(), None).await.0 }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");

    let by_id: BTreeMap<&str, &Message> = sent.iter().map(|m| (m.id.as_str(), m)).collect();
    let records = broker.read_all(&topic).await;
    assert_eq!(records.len(), sent.len());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = String::new();
    for r in &records {
        let id = r.header("pubsub.message_id").unwrap();
        let m = by_id[id.as_str()];
        let line = json!({
            "format": decoder,
            "value": b64.encode(r.record.value.as_deref().unwrap_or_default()),
            "expected": {
                "message_id": m.id,
                "publish_time": m.publish_time,
                "subscription": "projects/test-project/subscriptions/bridge-sub",
                "ordering_key": m.ordering_key,
                "attributes": m.attributes,
                "delivery_attempt": m.delivery_attempt,
                "data": b64.encode(&m.data),
            }
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    assert_eq!(
        decode_in_python(&lines, format),
        format!("checked {} records", sent.len())
    );
}

/// Runs tests/decode_values.py on `lines` (one JSON line per record); its summary line.
fn decode_in_python(lines: &str, what: &str) -> String {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/pubsub_message.avsc");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/decode_values.py");
    let mut child = Command::new(python())
        .args(["-W", "ignore", script, schema])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A decoder that stops at a mismatch closes its input early: its own report says why.
    let _ = child.stdin.take().unwrap().write_all(lines.as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_owned()
}

#[tokio::test]
async fn avro_values_decode_with_fastavro() {
    round_trip("avro").await;
}

/// A local Confluent-compatible registry endpoint: checks the registered schema, answers id 7.
async fn schema_registry(registrations: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let registrations = Arc::clone(&registrations);
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let registrations = Arc::clone(&registrations);
                    async move {
                        let path_ok = req.method() == http::Method::POST
                            && req.uri().path() == "/subjects/values-avro-confluent-value/versions";
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let bundled: Value =
                            serde_json::from_str(include_str!("../schemas/pubsub_message.avsc"))
                                .unwrap();
                        let schema_ok = request["schema"]
                            .as_str()
                            .and_then(|s| serde_json::from_str::<Value>(s).ok())
                            == Some(bundled);
                        let (status, answer) = if path_ok && schema_ok {
                            registrations.fetch_add(1, Ordering::SeqCst);
                            (200, r#"{"id":7}"#)
                        } else {
                            (422, r#"{"error_code":42201,"message":"Invalid schema"}"#)
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn avro_with_a_schema_registry_uses_the_confluent_wire_format() {
    let registrations = Arc::new(AtomicUsize::new(0));
    let url = schema_registry(Arc::clone(&registrations)).await;
    round_trip_with("avro", "avro-confluent", &[("SCHEMA_REGISTRY_URL", url)]).await;
    assert_eq!(
        registrations.load(Ordering::SeqCst),
        1,
        "registered once under <topic>-value"
    );
}

#[tokio::test]
async fn protobuf_values_decode_as_google_pubsub_v1_pubsub_message() {
    round_trip("protobuf").await;
}

#[tokio::test]
async fn json_values_decode_field_by_field() {
    round_trip("json").await;
}

#[tokio::test]
async fn json_embedding_keeps_json_payloads_readable() {
    let broker = Broker::start().await;
    broker.create_topic("embed", 1).await;
    let mut env = bridge_env(&broker, "embed", None);
    env.insert("KAFKA_VALUE_FORMAT".into(), "json".into());
    env.insert("KAFKA_JSON_EMBED_DATA".into(), "true".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let json_body =
        envelope(br#"{"order":7}"#, &[], "j1", "2024-01-01T00:00:00Z", None).to_string();
    let binary_body = envelope(&[0xff, 0x00], &[], "j2", "2024-01-01T00:00:00Z", None).to_string();
    assert_eq!(post(&client, &bridge.url(), json_body, None).await.0, 204);
    assert_eq!(post(&client, &bridge.url(), binary_body, None).await.0, 204);
    let values: Vec<Value> = broker
        .read_all("embed")
        .await
        .iter()
        .map(|r| serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(values[0]["data"], json!({"order": 7}));
    assert_eq!(values[0]["data_encoding"], "json");
    assert_eq!(values[1]["data"], "/wA=");
    assert_eq!(values[1]["data_encoding"], "base64");
}

/// Payloads with their expected `data_encoding` under `KAFKA_JSON_EMBED_DATA=true`.
fn embedding_cases() -> Vec<(&'static str, String, &'static str)> {
    // Arrays and objects alternating, `depth` deep.
    let nested = |depth: usize| {
        let mut text = String::from("true");
        for level in 0..depth {
            text = if level % 2 == 0 {
                format!("[{text}]")
            } else {
                format!(r#"{{"level{level}":{text}}}"#)
            };
        }
        text
    };
    vec![
        (
            "object",
            r#"{"order":7,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}],"note":"ünï"}"#.into(),
            "json",
        ),
        ("at-the-limit", nested(63), "json"),
        ("one-beyond", nested(64), "base64"),
        (
            "50000-deep",
            format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)),
            "base64",
        ),
        (
            "repeated-key",
            r#"{"amount":1,"amount":1000}"#.into(),
            "base64",
        ),
        (
            "repeated-nested",
            r#"{"orders":[{"id":1},{"id":2,"to":"a","to":"b"}]}"#.into(),
            "base64",
        ),
        ("repeated-escaped", r#"{"a":1,"\u0061":2}"#.into(), "base64"),
    ]
}

#[tokio::test]
async fn json_embedding_falls_back_to_base64_when_nested_too_deep_or_a_key_repeats() {
    let broker = Broker::start().await;
    broker.create_topic("embed-limits", 1).await;
    let mut env = bridge_env(&broker, "embed-limits", None);
    env.insert("KAFKA_VALUE_FORMAT".into(), "json".into());
    env.insert("KAFKA_JSON_EMBED_DATA".into(), "true".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let cases = embedding_cases();
    for (id, payload, _) in &cases {
        let body = envelope(payload.as_bytes(), &[], id, "2024-01-01T00:00:00Z", None);
        let (status, text) = post(&client, &bridge.url(), body.to_string(), None).await;
        assert_eq!(status, 204, "{id}: {text}");
    }
    let records = broker.read_all("embed-limits").await;
    assert_eq!(records.len(), cases.len());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = String::new();
    for (record, (id, payload, encoding)) in records.iter().zip(&cases) {
        assert_eq!(record.header("pubsub.message_id").as_deref(), Some(*id));
        let line = json!({
            "format": "json-embed",
            "value": b64.encode(record.record.value.as_deref().unwrap_or_default()),
            "expected": {
                "message_id": id,
                "attributes": {},
                "data_encoding": encoding,
                "data": b64.encode(payload),
            }
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    assert_eq!(
        decode_in_python(&lines, "json-embed"),
        format!("checked {} records", cases.len())
    );
}

#[tokio::test]
async fn avro_delivery_attempts_stay_within_int_and_beyond_int32_is_refused() {
    let broker = Broker::start().await;
    broker.create_topic("attempts", 1).await;
    let mut env = bridge_env(&broker, "attempts", None);
    env.insert("KAFKA_VALUE_FORMAT".into(), "avro".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let mut body = envelope(b"a", &[], "beyond", "2024-01-01T00:00:00Z", None);
    body["deliveryAttempt"] = 2_147_483_648u64.into();
    let (status, text) = post(&client, &bridge.url(), body.to_string(), None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_envelope"), "{text}");
    body["message"]["messageId"] = "max".into();
    body["deliveryAttempt"] = i32::MAX.into();
    assert_eq!(
        post(&client, &bridge.url(), body.to_string(), None).await.0,
        204
    );
    let records = broker.read_all("attempts").await;
    assert_eq!(records.len(), 1, "the refused delivery wrote nothing");
    let b64 = base64::engine::general_purpose::STANDARD;
    let line = json!({
        "format": "avro",
        "value": b64.encode(records[0].record.value.as_deref().unwrap_or_default()),
        "expected": {
            "message_id": "max",
            "publish_time": "2024-01-01T00:00:00Z",
            "subscription": "projects/test-project/subscriptions/bridge-sub",
            "ordering_key": null,
            "attributes": {},
            "delivery_attempt": 2_147_483_647,
            "data": b64.encode(b"a"),
        }
    });
    assert_eq!(
        decode_in_python(&format!("{line}\n"), "avro delivery attempt"),
        "checked 1 records"
    );
}
