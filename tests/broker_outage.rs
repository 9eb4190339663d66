//! The broker goes away and comes back: 503 within the produce timeout, then 204 again without a restart.

use std::time::{Duration, Instant};

use test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_answers_503_within_the_timeout_and_recovers_by_itself() {
    let mut broker = Broker::start_sqlite().await;
    broker.create_topic("outage", 2).await;
    let mut env = bridge_env(&broker, "outage", None);
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "2000".into());
    env.insert("KAFKA_METADATA_REFRESH_MS".into(), "500".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let body =
        |id: &str| envelope(b"payload", &[], id, "2024-01-01T00:00:00Z", Some(id)).to_string();

    assert_eq!(
        post(&client, &bridge.url(), body("before"), None).await.0,
        204
    );

    broker.kill();
    for n in 0..3 {
        let started = Instant::now();
        let (status, text) = post(&client, &bridge.url(), body(&format!("during-{n}")), None).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{text}");
        assert!(
            took < Duration::from_millis(2_900),
            "answered after {took:?}"
        );
    }
    // Readiness follows: metadata cannot be read any more.
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&client, &format!("http://{}/readyz", bridge.addr))
        .await
        .0
        != 503
    {
        assert!(
            Instant::now() < deadline,
            "readyz still 200 with the broker down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    broker.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let (status, text) = post(&client, &bridge.url(), body(&format!("after-{n}")), None).await;
        if status == 204 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(
            Instant::now() < deadline,
            "no 204 within 30 s of the broker's return: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every 204 is in Kafka; the 503s may or may not be (at-least-once, Pub/Sub redelivers them).
    let ids = broker.message_ids("outage").await;
    assert!(ids.contains(&"before".to_owned()));
    assert!(ids.contains(&format!("after-{n}")));
    assert_eq!(
        get(&client, &format!("http://{}/readyz", bridge.addr))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_count_changes_are_picked_up_without_a_restart() {
    let broker = Broker::start().await;
    broker.create_topic("grow", 2).await;
    let mut env = bridge_env(&broker, "grow", None);
    env.insert("KAFKA_METADATA_REFRESH_MS".into(), "200".into());
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let keyed = |id: &str, key: &str| {
        envelope(b"v", &[], id, "2024-01-01T00:00:00Z", Some(key)).to_string()
    };
    assert_eq!(
        post(&client, &bridge.url(), keyed("before", "k-before"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        bridge.service.app().producer().partition_count("grow"),
        Some(2)
    );

    // The topic grows to 6 partitions (tansu has no CreatePartitions: recreate it).
    let controller = broker.client().await.unwrap().controller_client().unwrap();
    controller.delete_topic("grow", 5_000).await.unwrap();
    broker.create_topic("grow", 6).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge.service.app().producer().partition_count("grow") != Some(6) {
        assert!(Instant::now() < deadline, "partition count not refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Keys whose Java partition is one of the new ones land there.
    let keys: Vec<String> = (0..200)
        .map(|i| format!("key-{i}"))
        .filter(|k| java_partition(k.as_bytes(), 6) >= 2)
        .take(20)
        .collect();
    for key in &keys {
        let (status, text) = post(&client, &bridge.url(), keyed(key, key), None).await;
        assert_eq!(status, 204, "{text}");
    }
    let records = broker.read_all("grow").await;
    for key in &keys {
        let r = records
            .iter()
            .find(|r| r.header("pubsub.message_id").as_deref() == Some(key))
            .expect("record");
        assert_eq!(
            r.partition as u32,
            java_partition(key.as_bytes(), 6),
            "{key}"
        );
    }
}

/// A produce given up (timed out) after its record reached the Kafka client keeps its share of
/// the in-flight budget until Kafka answers: the client still holds the record. One given up
/// before that point (still waiting for metadata) lets go of it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_given_up_after_hand_over_holds_its_share_until_kafka_answers() {
    use std::sync::Arc;

    use pubsub_kafka_bridge::kafka::{KafkaError, KafkaProducer};
    use pubsub_kafka_bridge::record::KafkaRecord;

    let broker = Broker::start().await;
    broker.create_topic("held", 1).await;
    broker.create_topic("unloaded", 1).await;
    let mut env = bridge_env(&broker, "held", None);
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "500".into());
    let config = pubsub_kafka_bridge::Config::from_map(&env).unwrap();
    let producer = KafkaProducer::start(config.kafka.clone());
    let record = || KafkaRecord {
        key: None,
        value: b"value".to_vec(),
        headers: Default::default(),
        timestamp: pubsub_kafka_bridge::timestamp::RecordTimestamp::from_millis(1_700_000_000_000)
            .unwrap(),
        message_id: None,
    };
    // Connected, and the topic's partition producer open.
    producer
        .produce_holding("held", record(), ())
        .await
        .unwrap();

    broker.pause();
    let hold = Arc::new(());
    let given_up = producer
        .produce_holding("held", record(), Arc::clone(&hold))
        .await;
    assert!(
        matches!(given_up, Err(KafkaError::Timeout { .. })),
        "{given_up:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        Arc::strong_count(&hold),
        2,
        "the Kafka client still holds the record, so its share stays held"
    );

    let unloaded = Arc::new(());
    let given_up = producer
        .produce_holding("unloaded", record(), Arc::clone(&unloaded))
        .await;
    assert!(
        matches!(given_up, Err(KafkaError::Timeout { .. })),
        "{given_up:?}"
    );
    assert_eq!(
        Arc::strong_count(&unloaded),
        1,
        "given up before its record reached the client: cancelled, its share freed at once"
    );

    broker.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Arc::strong_count(&hold) > 1 {
        assert!(Instant::now() < deadline, "the share was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
