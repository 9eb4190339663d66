//! Unwrapped pushes, routing by subscription, event time, header control and dead letters.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use test_support::*;

fn unwrapped_request(
    url: &str,
    data: &[u8],
    attributes: &[(String, String)],
    id: &str,
    time: &str,
    key: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::post(url)
        .header("content-type", "application/octet-stream")
        .header("x-goog-pubsub-message-id", id)
        .header("x-goog-pubsub-publish-time", time)
        .header(
            "x-goog-pubsub-subscription-name",
            "projects/test-project/subscriptions/bridge-sub",
        );
    if let Some(key) = key {
        request = request.header("x-goog-pubsub-ordering-key", key);
    }
    for (k, v) in attributes {
        request = request.header(k.as_str(), v.as_str());
    }
    request
        .body(Full::new(Bytes::copy_from_slice(data)))
        .unwrap()
}

#[tokio::test]
async fn unwrapped_and_wrapped_deliveries_of_one_message_give_identical_records() {
    let broker = Broker::start().await;
    broker.create_topic("wrapped", 4).await;
    broker.create_topic("unwrapped", 4).await;
    let wrapped = Bridge::start(&bridge_env(&broker, "wrapped", None)).await;
    let unwrapped = Bridge::start(&bridge_env(&broker, "unwrapped", None)).await;
    let client = http_client();
    for i in 0..60 {
        let data: Vec<u8> = (0..(i * 37) % 500).map(|b| (b * i) as u8).collect();
        // Lower-case names: on the unwrapped path HTTP folds header names to lower case.
        let attributes: Vec<(String, String)> = (0..i % 6)
            .map(|a| (format!("attr-{a}"), format!("value-{i}-{a}")))
            .collect();
        let id = format!("u-{i}");
        let time = format!("2025-01-02T03:04:{:02}.{:03}Z", i % 60, i);
        let key = (i % 2 == 0).then(|| format!("key-{}", i % 5));
        let body = envelope(&data, &attributes, &id, &time, key.as_deref()).to_string();
        assert_eq!(post(&client, &wrapped.url(), body, None).await.0, 204);
        let request = unwrapped_request(
            &unwrapped.url(),
            &data,
            &attributes,
            &id,
            &time,
            key.as_deref(),
        );
        let (status, text) = send(&client, request).await;
        assert_eq!(status, 204, "{text}");
    }
    let index = |records: Vec<Consumed>| -> HashMap<String, Consumed> {
        records
            .into_iter()
            .map(|c| (c.header("pubsub.message_id").unwrap(), c))
            .collect()
    };
    let a = index(broker.read_all("wrapped").await);
    let b = index(broker.read_all("unwrapped").await);
    assert_eq!(a.len(), 60);
    assert_eq!(b.len(), 60);
    for (id, w) in &a {
        let u = &b[id];
        assert_eq!(
            w.record, u.record,
            "{id}: key, value, headers and timestamp"
        );
        assert_eq!(w.partition, u.partition, "{id}: partition");
    }
}

#[tokio::test]
async fn routing_by_subscription_hits_the_right_topic_and_refuses_unknown_ones() {
    let broker = Broker::start().await;
    broker.create_topic("orders", 2).await;
    broker.create_topic("clicks", 2).await;
    let mut env = bridge_env(&broker, "unused", None);
    env.remove("KAFKA_TOPIC");
    env.insert(
        "KAFKA_TOPIC_BY_SUBSCRIPTION".into(),
        "projects/shop/subscriptions/orders-push=orders,clicks-push=clicks".into(),
    );
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let deliver = |subscription: &str, id: &str| {
        let mut body = envelope(b"x", &[], id, "2024-01-01T00:00:00Z", None);
        body["subscription"] = subscription.into();
        body.to_string()
    };
    assert_eq!(
        post(
            &client,
            &bridge.url(),
            deliver("projects/shop/subscriptions/orders-push", "o1"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        post(
            &client,
            &bridge.url(),
            deliver("projects/shop/subscriptions/clicks-push", "c1"),
            None
        )
        .await
        .0,
        204
    );
    let (status, text) = post(
        &client,
        &bridge.url(),
        deliver("projects/shop/subscriptions/other", "x1"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown_subscription"));
    let ids = |records: Vec<Consumed>| {
        records
            .iter()
            .filter_map(|r| r.header("pubsub.message_id"))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(broker.read_all("orders").await), vec!["o1"]);
    assert_eq!(ids(broker.read_all("clicks").await), vec!["c1"]);
}

#[tokio::test]
async fn event_time_and_header_options_shape_the_record() {
    let broker = Broker::start().await;
    broker.create_topic("shaped", 1).await;
    let mut env = bridge_env(&broker, "shaped", None);
    env.insert("KAFKA_TIMESTAMP_ATTRIBUTE".into(), "event_time".into());
    env.insert(
        "KAFKA_ATTRIBUTE_HEADERS".into(),
        "only:tenant,event_time".into(),
    );
    env.insert("KAFKA_ATTRIBUTE_HEADER_PREFIX".into(), "attr.".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let attrs = |time: &str| {
        vec![
            ("event_time".to_owned(), time.to_owned()),
            ("tenant".into(), "acme".into()),
            ("secret".into(), "x".into()),
        ]
    };
    for (id, time) in [
        ("ms", "1700000000123"),
        ("iso", "2023-11-14T22:13:20.456Z"),
        ("junk", "not a time"),
    ] {
        let body = envelope(b"v", &attrs(time), id, "2024-01-01T00:00:00.999Z", None).to_string();
        assert_eq!(post(&client, &bridge.url(), body, None).await.0, 204);
    }
    let records = broker.read_all("shaped").await;
    let ts: Vec<i64> = records
        .iter()
        .map(|r| r.record.timestamp.timestamp_millis())
        .collect();
    assert_eq!(
        ts,
        vec![1_700_000_000_123, 1_700_000_000_456, 1_704_067_200_999],
        "event time, else publishTime"
    );
    let names: Vec<&String> = records[0].record.headers.keys().collect();
    assert_eq!(
        names,
        vec![
            "attr.event_time",
            "attr.tenant",
            "pubsub.message_id",
            "pubsub.publish_time",
            "pubsub.subscription"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_requests_go_to_the_dead_letter_topic_with_their_bytes_and_reason() {
    let mut broker = Broker::start_sqlite().await;
    broker.create_topic("main", 2).await;
    broker.create_topic("dlq", 1).await;
    let mut env = bridge_env(&broker, "main", None);
    env.insert("KAFKA_DLQ_TOPIC".into(), "dlq".into());
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1500".into());
    env.insert("KAFKA_MAX_RECORD_BYTES".into(), "4096".into());
    let too_large = envelope(&[1u8; 5000], &[], "big", "2024-01-01T00:00:00Z", None).to_string();
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let causes: Vec<(&str, String)> = vec![
        ("invalid_envelope", "this is not json".into()),
        ("missing_message", r#"{"subscription":"s"}"#.into()),
        ("invalid_base64", r#"{"message":{"data":"@@@","messageId":"b64","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#.into()),
        ("invalid_publish_time", r#"{"message":{"data":"aGk=","messageId":"pt","publishTime":"noon"},"subscription":"s"}"#.into()),
        ("missing_field", r#"{"message":{"data":"aGk=","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#.into()),
        ("record_too_large", too_large),
    ];
    for (code, body) in &causes {
        let (status, text) = post(&client, &bridge.url(), body.clone(), None).await;
        assert_eq!(status, 204, "{code}: {text}");
    }
    // Retriable failures are never dead letters: broker down → 503, nothing in the DLQ for it.
    broker.kill();
    let good = envelope(b"fine", &[], "retriable", "2024-01-01T00:00:00Z", None).to_string();
    assert_eq!(post(&client, &bridge.url(), good, None).await.0, 503);
    broker.restart().await;

    let dead = broker.read_all("dlq").await;
    assert_eq!(
        dead.len(),
        causes.len(),
        "one dead letter per undeliverable request"
    );
    for (record, (code, body)) in dead.iter().zip(&causes) {
        assert_eq!(record.header("pubsub.error").as_deref(), Some(*code));
        assert!(
            !record
                .header("pubsub.error_message")
                .unwrap_or_default()
                .is_empty()
        );
        assert_eq!(
            record.record.value.as_deref(),
            Some(body.as_bytes()),
            "{code}: original bytes"
        );
    }
    // The id is read leniently from a body that failed later checks, so the dead letter names it.
    assert_eq!(dead[2].header("pubsub.message_id").as_deref(), Some("b64"));
    assert_eq!(
        dead[0].header("pubsub.message_id"),
        None,
        "not JSON: no id to name"
    );
    assert_eq!(dead[5].header("pubsub.message_id").as_deref(), Some("big"));
    assert!(
        broker
            .read_all("main")
            .await
            .iter()
            .all(|r| r.header("pubsub.message_id").as_deref() != Some("b64"))
    );
}

#[tokio::test]
async fn attributes_in_the_pubsub_namespace_are_renamed_on_both_paths() {
    let broker = Broker::start().await;
    broker.create_topic("namespace", 1).await;
    let bridge = Bridge::start(&bridge_env(&broker, "namespace", None)).await;
    let client = http_client();
    // Neither message has an ordering key or a delivery attempt of its own: the forged
    // attributes would otherwise be the only values of those headers.
    let forged: Vec<(String, String)> = [
        ("pubsub.ordering_key", "forged-key"),
        ("pubsub.delivery_attempt", "99"),
        ("pubsub.message_id", "forged-id"),
        ("tenant", "acme"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let body = envelope(b"w", &forged, "wrapped-1", "2025-01-02T03:04:05Z", None);
    assert_eq!(
        post(&client, &bridge.url(), body.to_string(), None).await.0,
        204
    );
    let request = unwrapped_request(
        &bridge.url(),
        b"u",
        &forged,
        "unwrapped-1",
        "2025-01-02T03:04:05Z",
        None,
    );
    let (status, text) = send(&client, request).await;
    assert_eq!(status, 204, "{text}");
    let records = broker.read_all("namespace").await;
    assert_eq!(records.len(), 2);
    let mut ids = Vec::new();
    for record in &records {
        let id = record.header("pubsub.message_id").unwrap();
        assert_eq!(record.header("pubsub.ordering_key"), None, "{id}");
        assert_eq!(record.header("pubsub.delivery_attempt"), None, "{id}");
        assert_eq!(
            record
                .header("pubsub.attribute.pubsub.ordering_key")
                .as_deref(),
            Some("forged-key"),
            "{id}"
        );
        assert_eq!(
            record
                .header("pubsub.attribute.pubsub.delivery_attempt")
                .as_deref(),
            Some("99")
        );
        assert_eq!(
            record
                .header("pubsub.attribute.pubsub.message_id")
                .as_deref(),
            Some("forged-id")
        );
        assert_eq!(record.header("tenant").as_deref(), Some("acme"));
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, ["unwrapped-1", "wrapped-1"]);
}

#[tokio::test]
async fn event_times_outside_kafkas_range_are_dead_letters_and_the_edges_are_kept() {
    let broker = Broker::start().await;
    broker.create_topic("timed", 1).await;
    broker.create_topic("timed-dlq", 1).await;
    let mut env = bridge_env(&broker, "timed", None);
    env.insert("KAFKA_TIMESTAMP_ATTRIBUTE".into(), "event_time".into());
    env.insert("KAFKA_DLQ_TOPIC".into(), "timed-dlq".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let cases = [
        ("before-1970", "1969-12-31T23:59:59.999Z"),
        ("minus-one", "-1"),
        ("after-9999", "253402300800000"),
        ("beyond-chrono", "9223372036854775807"),
        ("first", "0"),
        ("last", "9999-12-31T23:59:59.999Z"),
    ];
    let mut bodies = HashMap::new();
    for (id, time) in cases {
        let attributes = [("event_time".to_owned(), time.to_owned())];
        let body = envelope(b"v", &attributes, id, "2024-01-01T00:00:00Z", None).to_string();
        let (status, text) = post(&client, &bridge.url(), body.clone(), None).await;
        assert_eq!(status, 204, "{id}: {text}");
        bodies.insert(id, body);
    }
    let dead = broker.read_all("timed-dlq").await;
    let dead_ids: Vec<String> = dead
        .iter()
        .map(|r| r.header("pubsub.message_id").unwrap())
        .collect();
    assert_eq!(
        dead_ids,
        ["before-1970", "minus-one", "after-9999", "beyond-chrono"]
    );
    for record in &dead {
        let id = record.header("pubsub.message_id").unwrap();
        assert_eq!(
            record.header("pubsub.error").as_deref(),
            Some("timestamp_out_of_range"),
            "{id}"
        );
        assert_eq!(
            record.record.value.as_deref(),
            Some(bodies[id.as_str()].as_bytes()),
            "{id}: the original request"
        );
    }
    let kept: Vec<(String, i64)> = broker
        .read_all("timed")
        .await
        .iter()
        .map(|r| {
            (
                r.header("pubsub.message_id").unwrap(),
                r.record.timestamp.timestamp_millis(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            ("first".to_owned(), 0),
            ("last".to_owned(), 253_402_300_799_999)
        ],
        "only the times within the range, each exactly as given"
    );
}
