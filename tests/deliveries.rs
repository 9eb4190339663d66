//! End to end: signed push deliveries over HTTP → the bridge → tansu, read back by a consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use test_support::*;

/// Deterministic pseudo-random numbers (no seed drift between runs).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Sent {
    data: Vec<u8>,
    attributes: BTreeMap<String, String>,
    ordering_key: Option<String>,
    publish_time: String,
    publish_time_ms: i64,
}

fn sample(i: usize, rng: &mut Lcg) -> Sent {
    let data: Vec<u8> = match i % 4 {
        0 => Vec::new(),
        1 => format!("utf-8 payload #{i} – ünïcödé ✓").into_bytes(),
        _ => (0..rng.below(3000)).map(|_| rng.next() as u8).collect(),
    };
    let attributes: BTreeMap<String, String> = (0..rng.below(21))
        .map(|a| (format!("attr-{a}"), format!("value {i}/{a} ✓")))
        .collect();
    let ordering_key = (rng.below(2) == 0).then(|| format!("customer-{}", rng.below(40)));
    // Fractional seconds of varying length, as Pub/Sub sends them (ms to ns).
    let fraction = ["", ".7", ".749", ".749123", ".749123456"][i % 5];
    let second = i % 60;
    let publish_time = format!("2024-03-01T12:34:{second:02}{fraction}Z");
    let millis: i64 = match fraction {
        "" => 0,
        ".7" => 700,
        _ => 749,
    };
    let publish_time_ms = 1_709_296_440_000 + second as i64 * 1000 + millis;
    Sent {
        data,
        attributes,
        ordering_key,
        publish_time,
        publish_time_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_deliveries_land_exactly_once_as_the_contract_maps_them() {
    let broker = Broker::start().await;
    broker.create_topic("pubsub-in", 3).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "pubsub-in", Some(&jwks));
    env.insert("OIDC_ALLOWED_EMAILS".into(), PUSH_EMAIL.into());
    let bridge = Bridge::start(&env).await;
    let token = Arc::new(mint(&key(1), &google_claims()));
    let client = http_client();

    let mut rng = Lcg(7);
    let sent: HashMap<String, Sent> = (0..1000)
        .map(|i| (format!("msg-{i:04}"), sample(i, &mut rng)))
        .collect();
    let bodies: Vec<(String, String)> = sent
        .iter()
        .map(|(id, s)| {
            let attrs: Vec<(String, String)> = s.attributes.clone().into_iter().collect();
            let body = envelope(
                &s.data,
                &attrs,
                id,
                &s.publish_time,
                s.ordering_key.as_deref(),
            )
            .to_string();
            (id.clone(), body)
        })
        .collect();
    let started = std::time::Instant::now();
    let statuses: Vec<(String, u16, String)> = futures_util::stream::iter(bodies)
        .map(|(id, body)| {
            let (client, token, url) = (client.clone(), Arc::clone(&token), bridge.url());
            async move {
                let (status, text) = post(&client, &url, body, Some(&token)).await;
                (id, status, text)
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for (id, status, text) in &statuses {
        assert_eq!(*status, 204, "{id}: {text}");
    }
    let (requests, produced) = bridge.service.app().producer().stats().snapshot();
    assert_eq!(produced, 1000);
    assert!(
        requests < produced,
        "concurrent deliveries share produce requests ({requests} requests)"
    );
    eprintln!(
        "1000 deliveries, 50 concurrent: {:.0} deliveries/s, {:.1} records per produce request (debug build)",
        1000.0 / elapsed.as_secs_f64(),
        produced as f64 / requests as f64
    );

    let records = broker.read_all("pubsub-in").await;
    assert_eq!(records.len(), 1000, "every delivery exactly once");
    let mut seen = HashMap::new();
    let mut unkeyed_partitions = std::collections::BTreeSet::new();
    for consumed in &records {
        let id = consumed
            .header("pubsub.message_id")
            .expect("message id header");
        assert!(seen.insert(id.clone(), ()).is_none(), "{id} twice");
        let s = &sent[&id];
        let r = &consumed.record;
        assert_eq!(
            r.value.as_deref().unwrap_or_default(),
            s.data.as_slice(),
            "{id} value"
        );
        assert_eq!(
            r.key.as_deref(),
            s.ordering_key.as_deref().map(str::as_bytes),
            "{id} key"
        );
        assert_eq!(
            r.timestamp.timestamp_millis(),
            s.publish_time_ms,
            "{id} timestamp"
        );
        let mut expected: BTreeMap<String, Vec<u8>> = s
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        expected.insert("pubsub.message_id".into(), id.as_bytes().to_vec());
        expected.insert(
            "pubsub.publish_time".into(),
            s.publish_time.as_bytes().to_vec(),
        );
        expected.insert(
            "pubsub.subscription".into(),
            b"projects/test-project/subscriptions/bridge-sub".to_vec(),
        );
        if let Some(k) = &s.ordering_key {
            expected.insert("pubsub.ordering_key".into(), k.as_bytes().to_vec());
        }
        assert_eq!(r.headers, expected, "{id} headers");
        match &s.ordering_key {
            Some(k) => assert_eq!(
                consumed.partition as u32,
                java_partition(k.as_bytes(), 3),
                "{id} partition"
            ),
            None => {
                unkeyed_partitions.insert(consumed.partition);
            }
        }
    }
    assert_eq!(
        unkeyed_partitions.len(),
        3,
        "unkeyed records spread over every partition"
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn key_choices_and_delivery_attempt_follow_the_settings() {
    let broker = Broker::start().await;
    let cases = [
        ("message_id", Some("id-1")),
        ("attribute:tenant", Some("acme")),
        ("none", None),
        ("ordering_key", Some("ok-1")),
    ];
    for (n, (setting, expected_key)) in cases.iter().enumerate() {
        let topic = format!("keys-{n}");
        broker.create_topic(&topic, 4).await;
        let mut env = bridge_env(&broker, &topic, None);
        env.insert("KAFKA_KEY".into(), setting.to_string());
        let bridge = Bridge::start(&env).await;
        let mut body = envelope(
            b"x",
            &[("tenant".into(), "acme".into())],
            "id-1",
            "2024-01-01T00:00:00Z",
            Some("ok-1"),
        );
        body["deliveryAttempt"] = 5.into();
        let (status, text) = post(&http_client(), &bridge.url(), body.to_string(), None).await;
        assert_eq!(status, 204, "{text}");
        let records = broker.read_all(&topic).await;
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0].record.key.as_deref(),
            expected_key.map(str::as_bytes),
            "{setting}"
        );
        if let Some(k) = expected_key {
            assert_eq!(
                records[0].partition as u32,
                java_partition(k.as_bytes(), 4),
                "{setting}"
            );
        }
        assert_eq!(
            records[0].header("pubsub.delivery_attempt").as_deref(),
            Some("5")
        );
        bridge.shutdown().await;
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let broker = Broker::start().await;
    broker.create_topic("ready", 1).await;
    let bridge = Bridge::start(&bridge_env(&broker, "ready", None)).await;
    let client = http_client();
    assert_eq!(
        get(&client, &format!("http://{}/healthz", bridge.addr))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&client, &format!("http://{}/readyz", bridge.addr))
            .await
            .0,
        200
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn every_compression_codec_produces_readable_records() {
    let broker = Broker::start().await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compressed-{codec}");
        broker.create_topic(&topic, 1).await;
        let mut env = bridge_env(&broker, &topic, None);
        env.insert("KAFKA_COMPRESSION".into(), codec.into());
        let bridge = Bridge::start(&env).await;
        let payload = format!("{codec} ").repeat(200);
        let body = envelope(
            payload.as_bytes(),
            &[("codec".into(), codec.into())],
            codec,
            "2024-01-01T00:00:00Z",
            None,
        );
        let (status, text) = post(&http_client(), &bridge.url(), body.to_string(), None).await;
        assert_eq!(status, 204, "{codec}: {text}");
        let records = broker.read_all(&topic).await;
        assert_eq!(records.len(), 1, "{codec}");
        assert_eq!(
            records[0].record.value.as_deref(),
            Some(payload.as_bytes()),
            "{codec}"
        );
        assert_eq!(records[0].header("codec").as_deref(), Some(codec));
        bridge.shutdown().await;
    }
}

/// A record larger than `KAFKA_MAX_BATCH_BYTES` goes to Kafka in a produce request of its own;
/// it lands whole and is counted in the batching figures like any other request.
#[tokio::test]
async fn records_larger_than_a_batch_are_produced_alone_and_counted() {
    let broker = Broker::start().await;
    broker.create_topic("large", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(&broker, "large", Some(&jwks));
    env.insert("OIDC_ALLOWED_EMAILS".into(), PUSH_EMAIL.into());
    env.insert("KAFKA_MAX_BATCH_BYTES".into(), "4096".into());
    let bridge = Bridge::start(&env).await;
    let token = mint(&key(1), &google_claims());
    let client = http_client();
    let sizes = [10_000usize, 100, 30_000];
    for (i, size) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*size).map(|b| (b * 7 + i) as u8).collect();
        let body = envelope(
            &data,
            &[],
            &format!("big-{i}"),
            "2024-01-01T00:00:00Z",
            None,
        );
        let (status, text) = post(&client, &bridge.url(), body.to_string(), Some(&token)).await;
        assert_eq!(status, 204, "{text}");
    }
    assert_eq!(
        bridge.service.app().producer().stats().snapshot(),
        (3, 3),
        "one request per delivery, large or not, all counted"
    );
    let consumed = broker.read_all("large").await;
    let lengths: Vec<usize> = consumed
        .iter()
        .map(|c| c.record.value.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(lengths, sizes);
}

/// With no linger (`KAFKA_LINGER_MS=0`, the default) a partition's batch goes to Kafka as soon
/// as no write of that partition is in flight, and records arriving while one is wait and then
/// travel together. Seen at the broker: the broker's answer to the first request is held back,
/// five more deliveries arrive one by one, and nothing more is sent until it is released; then
/// all five go in one produce request.
#[tokio::test]
async fn records_arriving_while_a_write_is_in_flight_share_the_next_request() {
    let mut broker = Broker::builder().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    broker.create_topic("gathered", 1).await;
    let env = bridge_env(&broker, "gathered", None);
    let bridge = Bridge::start(&env).await;
    let client = http_client();
    let metrics_url = format!("http://{}/metrics", bridge.addr);
    let inflight = || async {
        metric(
            &get(&client, &metrics_url).await.1,
            "pubsub_kafka_bridge_inflight_requests",
        )
    };
    let push = |id: &str| {
        let (client, url) = (client.clone(), bridge.url());
        let body = envelope(id.as_bytes(), &[], id, "2024-01-01T00:00:00Z", None).to_string();
        tokio::spawn(async move { post(&client, &url, body, None).await })
    };
    // The first delivery loads the topic's partitions; the counts start after it.
    assert_eq!(push("warm").await.unwrap().0, 204);
    let stats = bridge.service.app().producer().stats();
    let (requests_before, records_before) = stats.snapshot();

    proxy.hold_answers();
    let sent_before = proxy.sent();
    let mut answers = vec![push("first")];
    wait_until(|| async { proxy.sent() > sent_before }).await;
    let first_request_sent = proxy.sent();
    for i in 1..=5 {
        answers.push(push(&format!("later-{i}")));
        wait_until(|| async { inflight().await == (1 + i) as f64 }).await;
        // Past the runtime timer's next tick, which `sleep(0)` would have waited for.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        proxy.sent(),
        first_request_sent,
        "a request was sent while the partition's first write was in flight"
    );
    proxy.release_answers();
    for answer in answers {
        assert_eq!(answer.await.unwrap().0, 204);
    }
    let (requests, records) = stats.snapshot();
    assert_eq!(
        (requests - requests_before, records - records_before),
        (2, 6),
        "the first record alone, the five that arrived while it was in flight together"
    );
    let ids = broker.message_ids("gathered").await;
    assert_eq!(
        ids,
        [
            "warm", "first", "later-1", "later-2", "later-3", "later-4", "later-5"
        ]
    );
}

/// Polls `done` every few milliseconds, for at most 10 s.
async fn wait_until<F, Fut>(done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
