//! Every field of what the emulator's client published, read back from Kafka: wrapped pushes
//! (with the emulator's escaped slashes), unwrapped pushes with write_metadata and without it,
//! each subscription routed by its real name.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use test_support::emulator::*;
use test_support::*;

/// What one message was published with.
struct Published {
    id: String,
    data: Vec<u8>,
    attributes: Vec<(&'static str, &'static str)>,
}

/// Data and attributes.
type Message = (Vec<u8>, Vec<(&'static str, &'static str)>);

/// The messages every subscription of the test topic gets: attributes (one named like the
/// bridge's own metadata), data-less, multi-byte UTF-8 in data and attribute values.
fn messages() -> Vec<Message> {
    vec![
        (
            b"hello from the emulator".to_vec(),
            vec![
                ("customer", "c-7"),
                ("region", "eu-west"),
                ("pubsub.message_id", "forged by a publisher"),
            ],
        ),
        (
            Vec::new(),
            vec![("customer", "c-8"), ("only", "attributes")],
        ),
        (
            "grüße, 日本語, 🎉: multi-byte UTF-8".as_bytes().to_vec(),
            vec![("customer", "c-9"), ("greeting", "grüße 日本語 🎉")],
        ),
        (br#"{"order":42,"total":9.99}"#.to_vec(), vec![]),
    ]
}

/// The record's timestamp is the publish time it carries, which lies between the publish
/// call's start and end (the emulator's clock is this machine's).
fn assert_publish_time(record: &Consumed, window: (DateTime<Utc>, DateTime<Utc>)) {
    let header = record.header("pubsub.publish_time").expect("publish time");
    let publish_time: DateTime<Utc> = header.parse().expect("RFC 3339");
    assert_eq!(
        record.record.timestamp.timestamp_millis(),
        publish_time.timestamp_millis(),
        "{header}"
    );
    // The emulator writes milliseconds: a margin of one each side.
    let (start, end) = window;
    assert!(
        start - chrono::Duration::milliseconds(1) <= publish_time
            && publish_time <= end + chrono::Duration::milliseconds(1),
        "{header} outside {start} .. {end}"
    );
}

/// Each published message is in `records` once, with every field the contract maps.
fn assert_mapped(
    records: &[Consumed],
    published: &[Published],
    subscription: &str,
    window: (DateTime<Utc>, DateTime<Utc>),
) {
    assert_eq!(
        records.len(),
        published.len(),
        "{subscription}: each message once"
    );
    for message in published {
        let record = records
            .iter()
            .find(|r| r.header("pubsub.message_id").as_deref() == Some(message.id.as_str()))
            .unwrap_or_else(|| panic!("{subscription}: {} missing", message.id));
        let what = format!("{subscription} {}", message.id);
        assert_eq!(
            record.record.value.as_deref().unwrap_or_default(),
            message.data.as_slice(),
            "{what}"
        );
        assert_eq!(
            record.header("pubsub.subscription").as_deref(),
            Some(subscription),
            "{what}"
        );
        assert_publish_time(record, window);
        let customer = message
            .attributes
            .iter()
            .find(|(k, _)| *k == "customer")
            .map(|(_, v)| v.as_bytes());
        assert_eq!(record.record.key.as_deref(), customer, "{what}: key");
        let mut expected: BTreeMap<String, String> = message
            .attributes
            .iter()
            .map(|(k, v)| {
                let name = if k.starts_with("pubsub.") {
                    format!("pubsub.attribute.{k}")
                } else {
                    (*k).to_owned()
                };
                (name, (*v).to_owned())
            })
            .collect();
        expected.insert("pubsub.message_id".into(), message.id.clone());
        expected.insert("pubsub.subscription".into(), subscription.to_owned());
        expected.insert(
            "pubsub.publish_time".into(),
            record.header("pubsub.publish_time").unwrap(),
        );
        let headers: BTreeMap<String, String> = record
            .record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
            .collect();
        assert_eq!(headers, expected, "{what}: headers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_and_unwrapped_pushes_carry_every_field_to_the_topic_of_their_subscription() {
    let (emulator, broker) = tokio::join!(Emulator::shared(), Broker::start());
    for topic in ["from-wrapped", "from-metadata", "from-plain"] {
        broker.create_topic(topic, 3).await;
    }
    let jwks = JwksServer::start(&[key(1)]).await;
    let wrapped = format!("projects/{PROJECT}/subscriptions/mapped-wrapped");
    // Full name for one subscription, short id for the other: both are the real names.
    let mut routed = bridge_env(&broker, "unused", Some(&jwks));
    routed.remove("KAFKA_TOPIC");
    routed.insert(
        "KAFKA_TOPIC_BY_SUBSCRIPTION".into(),
        format!("{wrapped}=from-wrapped,mapped-metadata=from-metadata,binary-wrapped=from-wrapped"),
    );
    routed.insert("KAFKA_KEY".into(), "attribute:customer".into());
    let routed = Bridge::start(&routed).await;
    let relay = Relay::start(&format!("http://{}", routed.addr)).await;
    // Unwrapped without metadata there is no subscription to route by: a bridge of its own.
    let mut plain = bridge_env(&broker, "from-plain", Some(&jwks));
    plain.insert("PUSH_PAYLOAD".into(), "unwrapped".into());
    plain.insert("KAFKA_KEY".into(), "attribute:customer".into());
    let plain = Bridge::start(&plain).await;
    let plain_relay = Relay::start(&format!("http://{}", plain.addr)).await;

    let topic = emulator.create_topic("mapped", json!({})).await;
    let binary_topic = emulator.create_topic("mapped-binary", json!({})).await;
    for (id, topic, endpoint, config) in [
        (
            "mapped-wrapped",
            &topic,
            format!("{}/wrapped", relay.url),
            json!({}),
        ),
        (
            "mapped-metadata",
            &topic,
            format!("{}/metadata", relay.url),
            json!({"noWrapper": {"writeMetadata": true}}),
        ),
        (
            "mapped-plain",
            &topic,
            format!("{}/plain", plain_relay.url),
            json!({"noWrapper": {"writeMetadata": false}}),
        ),
        // Bytes that are not UTF-8 reach Kafka untouched on the wrapped path only: the emulator
        // replaces them on unwrapped pushes (production does not).
        (
            "binary-wrapped",
            &binary_topic,
            format!("{}/binary", relay.url),
            json!({}),
        ),
    ] {
        emulator
            .create_push_subscription(id, topic, &endpoint, config, json!({}))
            .await;
    }

    let messages = messages();
    let start = Utc::now();
    let ids = emulator
        .publish(
            &topic,
            &messages
                .iter()
                .map(|(data, attributes)| message(data, attributes))
                .collect::<Vec<_>>(),
        )
        .await;
    let binary = vec![0u8, 159, 146, 150, 255, b'\n'];
    let binary_ids = emulator
        .publish(&binary_topic, &[message(&binary, &[("customer", "c-bin")])])
        .await;
    let window = (start, Utc::now());
    let published: Vec<Published> = ids
        .iter()
        .zip(messages)
        .map(|(id, (data, attributes))| Published {
            id: id.clone(),
            data,
            attributes,
        })
        .collect();

    let all_wrapped: Vec<String> = ids.iter().chain(&binary_ids).cloned().collect();
    let records = wait_for_ids(&broker, "from-wrapped", &all_wrapped).await;
    let (binary_records, records): (Vec<Consumed>, Vec<Consumed>) = records
        .into_iter()
        .partition(|r| r.header("pubsub.message_id") == Some(binary_ids[0].clone()));
    assert_mapped(&records, &published, &wrapped, window);
    assert_mapped(
        &binary_records,
        &[Published {
            id: binary_ids[0].clone(),
            data: binary,
            attributes: vec![("customer", "c-bin")],
        }],
        &format!("projects/{PROJECT}/subscriptions/binary-wrapped"),
        window,
    );
    let records = wait_for_ids(&broker, "from-metadata", &ids).await;
    assert_mapped(
        &records,
        &published,
        &format!("projects/{PROJECT}/subscriptions/mapped-metadata"),
        window,
    );

    // The emulator's wrapped bodies escape the subscription's slashes; the bridge unescapes.
    relay
        .wait_until("every push answered", |r| r.len() > 2 * published.len())
        .await;
    let relayed = relay.relayed();
    assert!(relayed.iter().all(|r| r.status == 204), "{relayed:?}");
    // Unwrapped, the emulator declares the data a form (production sends the bytes alike).
    assert!(
        relayed
            .iter()
            .filter(|r| r.path == "/metadata")
            .all(|r| r.content_type.as_deref() == Some("application/x-www-form-urlencoded")),
        "{relayed:?}"
    );
    let wrapped_pushes: Vec<&Relayed> = relayed.iter().filter(|r| r.path != "/metadata").collect();
    assert_eq!(wrapped_pushes.len(), published.len() + 1);
    assert!(
        wrapped_pushes.iter().all(|r| r.escaped_slashes),
        "the emulator's escaped slashes reached the bridge: {wrapped_pushes:?}"
    );

    // Without metadata the record is the data alone: no key, no attributes, and the receive
    // time as timestamp and publish time.
    let records = wait_for_count(&broker, "from-plain", published.len()).await;
    let end = Utc::now();
    let mut values: Vec<Vec<u8>> = records
        .iter()
        .map(|r| r.record.value.clone().unwrap_or_default())
        .collect();
    values.sort();
    let mut expected: Vec<Vec<u8>> = published.iter().map(|p| p.data.clone()).collect();
    expected.sort();
    assert_eq!(values, expected);
    for record in &records {
        let names: Vec<&String> = record.record.headers.keys().collect();
        assert_eq!(names, ["pubsub.publish_time"]);
        assert_eq!(record.record.key, None);
        assert_publish_time(record, (window.0, end));
    }
    let plain_pushes = plain_relay.relayed();
    assert!(
        plain_pushes
            .iter()
            .all(|r| r.status == 204 && r.message_id.is_none())
    );
}
