//! Kafka's side at the protocol level: a frame-aware proxy (`test_support::proxy`) between the
//! bridge and tansu writes a quota throttle into real Produce answers, delays Metadata answers
//! and counts the requests of each kind, and the records are read back from the broker.

use std::time::{Duration, Instant};

use test_support::*;

/// A broker whose clients all go through a Kafka-aware proxy (it advertises the proxy's port).
async fn proxied_broker() -> (Broker, BrokerProxy) {
    let mut broker = Broker::builder().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    (broker, proxy)
}

/// Pushes one delivery whose data and message id are `id`: status, body, time to the answer.
async fn push(client: &HttpClient, bridge: &Bridge, id: &str) -> (u16, String, Duration) {
    let body = envelope(id.as_bytes(), &[], id, "2024-01-01T00:00:00Z", None).to_string();
    let started = Instant::now();
    let (status, body) = post(client, &bridge.url(), body, None).await;
    (status, body, started.elapsed())
}

/// The record values of `topic`, partition by partition, in offset order.
async fn values(broker: &Broker, topic: &str) -> Vec<String> {
    broker
        .read_all(topic)
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.record.value.unwrap_or_default()).unwrap())
        .collect()
}

/// The answer the proxy passed back for `request`.
fn answer_to(proxy: &BrokerProxy, request: &Seen) -> Seen {
    proxy
        .answers(request.api_key)
        .into_iter()
        .find(|a| a.connection == request.connection && a.correlation_id == request.correlation_id)
        .expect("the request was answered")
}

/// KIP-219: a broker over a client's quota appends the records, answers at once with the
/// throttle time, and expects the client to wait that long before its next request to it.
/// The throttled answer is the delivery's acknowledgement; the batch is never sent again; the
/// next produce leaves only after the throttle time.
#[tokio::test]
async fn a_throttled_produce_is_acknowledged_once_and_the_next_produce_waits_out_the_throttle() {
    const THROTTLE_MS: i32 = 1_500;
    let (broker, proxy) = proxied_broker().await;
    broker.create_topic("throttled", 1).await;
    let bridge = Bridge::start(&bridge_env(&broker, "throttled", None)).await;
    let client = http_client();
    assert_eq!(push(&client, &bridge, "warm").await.0, 204);
    let before = proxy.requests(PRODUCE).len();

    proxy.throttle_next_produce(THROTTLE_MS);
    let (status, body, took) = push(&client, &bridge, "throttled").await;
    assert_eq!(
        status, 204,
        "the throttled answer acknowledges the record: {body}"
    );
    let sent = proxy.requests(PRODUCE)[before..].to_vec();
    assert_eq!(
        sent.len(),
        1,
        "one Produce request for the delivery, never sent again (answered after {took:?})"
    );
    assert!(
        sent[0].api_version >= 6,
        "Produce v{}: the client serves throttles from v6 on (KIP-219)",
        sent[0].api_version
    );
    let throttled = answer_to(&proxy, &sent[0]);
    assert_eq!(produce_throttle(&throttled.frame), THROTTLE_MS);
    assert!(
        took < Duration::from_millis(THROTTLE_MS as u64),
        "answered without waiting out the throttle: {took:?}"
    );

    let (status, body, _) = push(&client, &bridge, "after").await;
    assert_eq!(status, 204, "{body}");
    let next = proxy.requests(PRODUCE)[before + 1..].to_vec();
    assert_eq!(next.len(), 1, "one Produce request for the next delivery");
    let waited = next[0].at.duration_since(throttled.at);
    assert!(
        waited >= Duration::from_millis(THROTTLE_MS as u64),
        "the next produce left {waited:?} after the throttled answer, before the throttle ended"
    );

    assert_eq!(
        values(&broker, "throttled").await,
        ["warm", "throttled", "after"],
        "each record once, with its bytes"
    );
    assert_eq!(proxy.faults(), Vec::<String>::new());
}

/// A throttle longer than `KAFKA_PRODUCE_TIMEOUT_MS`: the throttled delivery is acknowledged
/// (204, its record written once); a delivery to the throttled broker is answered 503
/// `kafka_throttled` at once, its record never sent while the throttle lasts, and its
/// redelivery after the throttle writes it once.
#[tokio::test]
async fn a_throttle_beyond_the_produce_timeout_answers_at_once_and_writes_nothing_twice() {
    const THROTTLE_MS: i32 = 6_000;
    const TIMEOUT: Duration = Duration::from_millis(2_000);
    let (broker, proxy) = proxied_broker().await;
    broker.create_topic("long-throttle", 1).await;
    let mut env = bridge_env(&broker, "long-throttle", None);
    env.insert(
        "KAFKA_PRODUCE_TIMEOUT_MS".into(),
        TIMEOUT.as_millis().to_string(),
    );
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    assert_eq!(push(&client, &bridge, "warm").await.0, 204);
    let before = proxy.requests(PRODUCE).len();

    proxy.throttle_next_produce(THROTTLE_MS);
    let (status, body, took) = push(&client, &bridge, "throttled").await;
    assert_eq!(
        status, 204,
        "the throttled answer acknowledges the record (after {took:?}): {body}"
    );
    assert!(
        took < TIMEOUT,
        "answered within the produce timeout: {took:?}"
    );
    let throttled = answer_to(&proxy, &proxy.requests(PRODUCE)[before]);

    let (status, body, took) = push(&client, &bridge, "during").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kafka_throttled"), "{body}");
    assert!(
        took < TIMEOUT,
        "answered at once, not at the deadline: {took:?}"
    );
    assert_eq!(
        proxy.requests(PRODUCE).len(),
        before + 1,
        "nothing sent during the throttle"
    );
    assert_eq!(
        values(&broker, "long-throttle").await,
        ["warm", "throttled"]
    );

    // Pub/Sub redelivers: refused, unsent, until the throttle has passed; then written once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, took) = push(&client, &bridge, "during").await;
        assert!(took < TIMEOUT + Duration::from_secs(1), "{took:?}");
        if status == 204 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the throttle never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = proxy.requests(PRODUCE)[before + 1..].to_vec();
    assert_eq!(after.len(), 1, "one Produce request for the redelivery");
    let waited = after[0].at.duration_since(throttled.at);
    assert!(
        waited >= Duration::from_millis(THROTTLE_MS as u64),
        "sent {waited:?} after the throttled answer"
    );
    assert_eq!(
        values(&broker, "long-throttle").await,
        ["warm", "throttled", "during"],
        "each record once"
    );
    assert_eq!(proxy.faults(), Vec::<String>::new());
}

/// A topic of many partitions, created after startup, loads from ONE metadata request, in a
/// task of its own: deliveries that time out while it loads do not stop it, deliveries that
/// arrive meanwhile wait for the same load, and then every partition is writable.
#[tokio::test]
async fn a_big_topic_loads_from_one_metadata_request_shared_by_deliveries_that_time_out() {
    const PARTITIONS: u32 = 1_000;
    const TIMEOUT: Duration = Duration::from_millis(2_000);
    // Longer than a delivery's timeout, shorter than two.
    const METADATA_DELAY: Duration = Duration::from_millis(3_000);
    let (broker, proxy) = proxied_broker().await;
    let mut env = bridge_env(&broker, "big", None);
    env.insert(
        "KAFKA_PRODUCE_TIMEOUT_MS".into(),
        TIMEOUT.as_millis().to_string(),
    );
    env.insert("KAFKA_METADATA_REFRESH_MS".into(), "3600000".into());
    let answered = proxy.answers(METADATA).len();
    let bridge = Bridge::start(&env).await;
    // The bridge reads metadata when it connects and when it opens its topic at startup, which
    // fails: "big" does not exist yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.answers(METADATA).len() < answered + 2 {
        assert!(
            Instant::now() < deadline,
            "the bridge never tried its topic"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.create_topic("big", PARTITIONS as i32).await;
    let client = http_client();
    let metadata_before = proxy.requests(METADATA).len();
    proxy.delay_answers(METADATA, METADATA_DELAY);

    let wave = |name: &'static str| {
        (0..8)
            .map(|i| {
                let (client, url) = (client.clone(), bridge.url());
                let id = format!("{name}-{i}");
                async move {
                    let body = envelope(id.as_bytes(), &[], &id, "2024-01-01T00:00:00Z", Some(&id));
                    let started = Instant::now();
                    let (status, body) = post(&client, &url, body.to_string(), None).await;
                    (id, status, body, started.elapsed())
                }
            })
            .collect::<futures_util::future::JoinAll<_>>()
    };
    // The first deliveries start the load and time out while it waits for its answer.
    for (id, status, body, took) in wave("early").await {
        assert_eq!(status, 503, "{id}: {body}");
        assert!(body.contains("kafka_timeout"), "{id}: {body}");
        assert!(took < TIMEOUT + Duration::from_secs(1), "{id}: {took:?}");
    }
    // These arrive while the same load goes on, and are written when it ends.
    let late = wave("late").await;
    for (id, status, body, took) in &late {
        assert_eq!(*status, 204, "{id} (after {took:?}): {body}");
    }
    let loads = proxy.requests(METADATA)[metadata_before..].to_vec();
    assert_eq!(
        loads.len(),
        1,
        "one Metadata request loaded {PARTITIONS} partitions for all deliveries"
    );
    assert_eq!(
        bridge
            .service
            .app()
            .producer()
            .partition_count("big")
            .unwrap(),
        PARTITIONS as usize
    );

    // Each record in the partition Kafka's Java partitioner picks for its key (the ordering key).
    proxy.delay_answers(METADATA, Duration::ZERO);
    let reader = broker.client().await.unwrap();
    for (id, ..) in &late {
        let partition = java_partition(id.as_bytes(), PARTITIONS) as i32;
        let partition_client = reader
            .partition_client(
                "big",
                partition,
                rskafka::client::partition::UnknownTopicHandling::Retry,
            )
            .await
            .unwrap();
        let (records, _) = partition_client
            .fetch_records(0, 1..1_000_000, 100)
            .await
            .unwrap();
        let found: Vec<_> = records
            .iter()
            .filter_map(|r| r.record.value.as_deref())
            .collect();
        assert_eq!(found, [id.as_bytes()], "partition {partition}");
    }
    assert_eq!(proxy.faults(), Vec::<String>::new());
}
