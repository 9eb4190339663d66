//! Local end-to-end run with Google's Pub/Sub emulator: a topic with a push subscription to the
//! bridge binary (through a relay that signs each push, as Pub/Sub does), a handful of published
//! messages, what Kafka then holds, and a message the bridge refuses.
//!
//! Run through `infra/local-e2e.sh`, which installs tansu and builds the bridge first.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use test_support::emulator::*;
use test_support::*;

const KAFKA_TOPIC: &str = "pubsub-demo";
const KAFKA_DLQ_TOPIC: &str = "pubsub-demo-dlq";
/// Small enough for the demo to show a refused message without publishing megabytes.
const MAX_RECORD_BYTES: usize = 65_536;

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let (emulator, broker) = tokio::join!(Emulator::start(), Broker::start());
    println!("Pub/Sub emulator on {} (project {PROJECT})", emulator.host);
    broker.create_topic(KAFKA_TOPIC, 3).await;
    broker.create_topic(KAFKA_DLQ_TOPIC, 1).await;
    println!(
        "tansu broker on {} (topics {KAFKA_TOPIC} with 3 partitions, {KAFKA_DLQ_TOPIC})",
        broker.bootstrap()
    );
    let jwks = JwksServer::start(&[key(1)]).await;
    println!("JWKS endpoint at {}", jwks.url);

    let port = free_port();
    #[allow(clippy::disallowed_methods, reason = "the example's own setting")]
    let binary =
        std::env::var("BRIDGE_BIN").unwrap_or_else(|_| "target/release/pubsub-kafka-bridge".into());
    let env: HashMap<&str, String> = [
        ("PORT", port.to_string()),
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
        ("KAFKA_TOPIC", KAFKA_TOPIC.into()),
        ("KAFKA_DLQ_TOPIC", KAFKA_DLQ_TOPIC.into()),
        ("KAFKA_MAX_RECORD_BYTES", MAX_RECORD_BYTES.to_string()),
        ("KAFKA_KEY", "attribute:customer".into()),
        ("OIDC_AUDIENCE", AUDIENCE.into()),
        ("OIDC_JWKS_URL", jwks.url.clone()),
        ("OIDC_ALLOWED_EMAILS", PUSH_EMAIL.into()),
        (
            "RUST_LOG",
            "warn,rskafka::client::producer::broadcast=error".into(),
        ),
    ]
    .into_iter()
    .collect();
    let mut bridge = Command::new(&binary)
        .envs(&env)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&http_client(), &format!("{base}/readyz"), 200).await;
    println!(
        "bridge ready on {base}: KAFKA_KEY=attribute:customer, KAFKA_MAX_RECORD_BYTES={MAX_RECORD_BYTES}, KAFKA_DLQ_TOPIC={KAFKA_DLQ_TOPIC}"
    );
    let relay = Relay::start(&base).await;
    println!(
        "push relay on {}: adds a token signed by the JWKS key (the emulator sends none)",
        relay.url
    );

    let topic = emulator.create_topic("orders", json!({})).await;
    let subscription = emulator
        .create_push_subscription(
            "orders-to-kafka",
            &topic,
            &format!("{}/push", relay.url),
            json!({}),
            json!({"enableMessageOrdering": true}),
        )
        .await;
    println!(
        "topic {topic}, push subscription {subscription} -> {}/push\n",
        relay.url
    );

    /// Data, attributes, ordering key.
    type Sample<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
    let samples: [Sample<'_>; 5] = [
        ("hello from pub/sub", &[("source", "demo")], None),
        (
            r#"{"order":42,"total":9.99}"#,
            &[
                ("customer", "customer-7"),
                ("content-type", "application/json"),
            ],
            Some("customer-7"),
        ),
        (
            r#"{"order":43,"total":1.50}"#,
            &[("customer", "customer-7")],
            Some("customer-7"),
        ),
        (
            "",
            &[("customer", "customer-9"), ("only", "attributes")],
            None,
        ),
        (
            "grüße 🎉",
            &[("customer", "customer-9")],
            Some("customer-9"),
        ),
    ];
    let messages: Vec<Value> = samples
        .iter()
        .map(|(data, attributes, ordering_key)| {
            let mut message = message(data.as_bytes(), attributes);
            if let Some(key) = ordering_key {
                message["orderingKey"] = (*key).into();
            }
            message
        })
        .collect();
    let ids = emulator.publish(&topic, &messages).await;
    for ((data, attributes, ordering_key), id) in samples.iter().zip(&ids) {
        println!(
            "published {id}: data {data:?} attributes {attributes:?} ordering key {ordering_key:?}"
        );
    }
    relay
        .wait_until("every message acknowledged", |relayed| {
            ids.iter().all(|id| {
                relayed
                    .iter()
                    .any(|r| r.message_id.as_ref() == Some(id) && r.status == 204)
            })
        })
        .await;
    for push in relay.relayed() {
        println!(
            "  push of {} -> HTTP {}",
            push.message_id.unwrap_or_default(),
            push.status
        );
    }

    println!("\nWhat Kafka holds in {KAFKA_TOPIC}:");
    print_records(&wait_for_ids(&broker, KAFKA_TOPIC, &ids).await);
    println!(
        "(the emulator does not push ordering keys; production Pub/Sub does, and the bridge then \
         writes pubsub.ordering_key)"
    );

    let large = "x".repeat(100_000);
    let refused = emulator
        .publish(
            &topic,
            &[message(large.as_bytes(), &[("customer", "customer-7")])],
        )
        .await;
    println!(
        "\npublished {}: 100,000 bytes, over KAFKA_MAX_RECORD_BYTES={MAX_RECORD_BYTES}",
        refused[0]
    );
    let dead_letters = wait_for_ids(&broker, KAFKA_DLQ_TOPIC, &refused).await;
    relay
        .wait_until("the refused message answered", |relayed| {
            relayed
                .iter()
                .any(|r| r.message_id.as_ref() == Some(&refused[0]) && r.status == 204)
        })
        .await;
    println!(
        "  the bridge refused the record before sending, as Kafka refuses one over its \
         message.max.bytes (record_too_large), wrote the whole push to {KAFKA_DLQ_TOPIC} and \
         answered 204, so Pub/Sub stops redelivering it:"
    );
    for record in &dead_letters {
        println!(
            "  {KAFKA_DLQ_TOPIC} offset {}: key {:?}, value {} bytes (the push body), headers: {}",
            record.offset,
            record.record.key.as_deref().map(String::from_utf8_lossy),
            record.record.value.as_ref().map_or(0, Vec::len),
            headers(record)
        );
    }
    println!("\ndone in {:.0?}", started.elapsed());

    let _ = Command::new("kill")
        .args(["-TERM", &bridge.id().to_string()])
        .status();
    let _ = bridge.wait();
}

fn headers(record: &Consumed) -> String {
    record
        .record
        .headers
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_records(records: &[Consumed]) {
    for c in records {
        println!(
            "  partition {} offset {} timestamp {} key {:?} value {:?}\n    headers: {}",
            c.partition,
            c.offset,
            c.record.timestamp.timestamp_millis(),
            c.record.key.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(c.record.value.as_deref().unwrap_or_default()),
            headers(c)
        );
    }
}
