//! Pub/Sub's limits through the emulator: 100 attributes at the key and value limits, and
//! messages up to 10 MB; what Kafka refuses goes to the dead-letter topic or is answered 422,
//! never lost.

use std::time::Instant;

use serde_json::json;

use test_support::emulator::*;
use test_support::*;

/// Attribute `i` at Pub/Sub's limits: a 256-byte key (lower case: header names lose their
/// case on the way) and a 1,024-byte printable value.
fn attribute(message: usize, i: usize) -> (String, String) {
    let key = format!("{i:03}-{}", "k".repeat(252));
    let value = (0..1024)
        .map(|j| char::from(b'!' + ((message * 31 + i * 7 + j) % 94) as u8))
        .collect();
    (key, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_pushes_100_attribute_messages_unwrapped_and_each_lands_whole() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    broker.create_topic("wide", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = Bridge::start(&bridge_env(&broker, "wide", Some(&jwks))).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    let topic = emulator.create_topic("wide-messages", json!({})).await;
    let subscription = emulator
        .create_push_subscription(
            "wide-messages-push",
            &topic,
            &format!("{}/wide", relay.url),
            json!({"noWrapper": {"writeMetadata": true}}),
            json!({}),
        )
        .await;

    let messages: Vec<(String, Vec<(String, String)>)> = (0..5)
        .map(|m| {
            (
                format!("message {m}: UTF-8 data (the emulator rewrites other bytes)"),
                (0..100).map(|i| attribute(m, i)).collect(),
            )
        })
        .collect();
    let ids = emulator
        .publish(
            &topic,
            &messages
                .iter()
                .map(|(data, attributes)| {
                    let attributes: Vec<(&str, &str)> = attributes
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    message(data.as_bytes(), &attributes)
                })
                .collect::<Vec<_>>(),
        )
        .await;

    let records = wait_for_ids(&broker, "wide", &ids).await;
    assert_eq!(records.len(), messages.len(), "each message once");
    for record in &records {
        let id = record.header("pubsub.message_id").unwrap();
        let index = ids.iter().position(|i| *i == id).expect("a published id");
        let (data, attributes) = &messages[index];
        assert_eq!(record.record.value.as_deref(), Some(data.as_bytes()));
        assert_eq!(
            record.header("pubsub.subscription").as_deref(),
            Some(subscription.as_str())
        );
        assert!(record.header("pubsub.publish_time").is_some());
        for (key, value) in attributes {
            assert_eq!(record.header(key).as_ref(), Some(value), "{id}: {key}");
        }
        // The attributes and the 3 metadata headers the emulator writes; nothing of the transport.
        assert_eq!(
            record.record.headers.len(),
            103,
            "{id}: {:?}",
            record
                .record
                .headers
                .keys()
                .filter(|k| k.len() < 200)
                .collect::<Vec<_>>()
        );
    }
    let relayed = relay.relayed();
    assert!(relayed.iter().all(|r| r.status == 204), "{relayed:?}");
    assert_eq!(bridge.service.metrics().count(204), messages.len() as u64);
}

/// Data of `len` bytes, printable UTF-8 (the unwrapped path rewrites other bytes), distinct per
/// `seed` so a mix-up shows.
fn big_data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i / 7 + usize::from(seed)) % 26) as u8)
        .collect()
}

/// A relay to a bridge of its own with `extra` settings, writing to `topic`.
async fn bridge_behind_relay(
    broker: &Broker,
    jwks: &JwksServer,
    topic: &str,
    extra: &[(&str, &str)],
) -> (Bridge, Relay) {
    let mut env = bridge_env(broker, topic, Some(jwks));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let bridge = Bridge::start(&env).await;
    let relay = Relay::start(&format!("http://{}", bridge.addr)).await;
    (bridge, relay)
}

/// The largest message Pub/Sub takes arrives whole, wrapped (13.3 MB of base64) and unwrapped.
/// A record over the Kafka limit (`KAFKA_MAX_RECORD_BYTES` at Kafka's default
/// `message.max.bytes`) is a dead letter with its whole push, or, without a dead-letter topic,
/// answered 422 and redelivered by Pub/Sub: never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_messages_arrive_whole_and_what_kafka_refuses_is_kept() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    for topic in ["large", "limited", "limited-dlq"] {
        broker.create_topic(topic, 1).await;
    }
    let jwks = JwksServer::start(&[key(1)]).await;
    let (_whole, relay) = bridge_behind_relay(&broker, &jwks, "large", &[]).await;
    let kafka_limit = ("KAFKA_MAX_RECORD_BYTES", "1048588");
    let (_dead_letters, dlq_relay) = bridge_behind_relay(
        &broker,
        &jwks,
        "limited",
        &[kafka_limit, ("KAFKA_DLQ_TOPIC", "limited-dlq")],
    )
    .await;
    let (_refusing, refusing_relay) =
        bridge_behind_relay(&broker, &jwks, "limited", &[kafka_limit]).await;

    let large = emulator.create_topic("large-messages", json!({})).await;
    let wrapped = emulator
        .create_push_subscription(
            "large-wrapped",
            &large,
            &format!("{}/w", relay.url),
            json!({}),
            json!({}),
        )
        .await;
    let unwrapped = emulator
        .create_push_subscription(
            "large-unwrapped",
            &large,
            &format!("{}/u", relay.url),
            json!({"noWrapper": {"writeMetadata": true}}),
            json!({}),
        )
        .await;
    let over = emulator.create_topic("over-kafka-limit", json!({})).await;
    let dlq_subscription = emulator
        .create_push_subscription(
            "over-limit-dlq",
            &over,
            &format!("{}/d", dlq_relay.url),
            json!({}),
            json!({}),
        )
        .await;
    emulator
        .create_push_subscription(
            "over-limit-422",
            &over,
            &format!("{}/r", refusing_relay.url),
            json!({}),
            json!({}),
        )
        .await;

    // Pub/Sub's limit is 10 MB of data and attributes together.
    let largest = big_data(10_000_000 - 64, 1);
    let started = Instant::now();
    let ids = emulator
        .publish(&large, &[message(&largest, &[("size", "largest")])])
        .await;
    let records = wait_for_count(&broker, "large", 2).await;
    eprintln!(
        "a 10 MB message in Kafka through both subscriptions after {:?}",
        started.elapsed()
    );
    assert_eq!(records.len(), 2, "one record per subscription");
    let mut subscriptions = Vec::new();
    for record in &records {
        assert_eq!(record.header("pubsub.message_id"), Some(ids[0].clone()));
        assert_eq!(record.record.value.as_deref(), Some(largest.as_slice()));
        assert_eq!(record.header("size").as_deref(), Some("largest"));
        subscriptions.push(record.header("pubsub.subscription").unwrap());
    }
    subscriptions.sort();
    assert_eq!(subscriptions, [unwrapped, wrapped]);
    let relayed = relay.relayed();
    assert!(relayed.iter().all(|r| r.status == 204), "{relayed:?}");

    let refused = big_data(2_000_000, 2);
    let ids = emulator
        .publish(&over, &[message(&refused, &[("size", "2 MB")])])
        .await;
    let dead_letters = wait_for_ids(&broker, "limited-dlq", &ids).await;
    assert_eq!(dead_letters.len(), 1);
    let dead_letter = &dead_letters[0];
    assert_eq!(
        dead_letter.header("pubsub.error").as_deref(),
        Some("record_too_large")
    );
    let push: serde_json::Value =
        serde_json::from_slice(dead_letter.record.value.as_deref().unwrap()).unwrap();
    assert_eq!(push["subscription"], dlq_subscription.as_str());
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(push["message"]["data"].as_str().unwrap())
            .unwrap(),
        refused
    );
    dlq_relay
        .wait_until("the dead letter acknowledged", |r| {
            r.iter().any(|r| r.status == 204)
        })
        .await;
    // Without a dead-letter topic: 422, and Pub/Sub keeps the message and pushes it again.
    refusing_relay
        .wait_until("the refused message pushed twice", |r| {
            r.iter()
                .filter(|r| r.message_id == Some(ids[0].clone()))
                .count()
                >= 2
        })
        .await;
    let answers: Vec<u16> = refusing_relay.relayed().iter().map(|r| r.status).collect();
    assert!(answers.iter().all(|s| *s == 422), "{answers:?}");
    emulator.delete_subscription("over-limit-422").await;
    assert!(broker.read_all("limited").await.is_empty());
}
