//! The idempotent producer at the protocol level: a proxy in front of tansu drops a Produce
//! answer after the broker wrote the records and closes the connection, so the Kafka client
//! sends the request again (`KAFKA_IDEMPOTENCE`).
//!
//! tansu on sqlite storage: on memory storage its expected sequence advances before the data
//! is stored.

use std::collections::HashMap;

use test_support::*;

/// DUPLICATE_SEQUENCE_NUMBER: tansu's answer to a batch it appended before.
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

struct Setup {
    broker: Broker,
    proxy: BrokerProxy,
    bridge: Bridge,
    client: HttpClient,
}

async fn setup(topic: &str, idempotence: Option<&str>) -> Setup {
    let mut broker = Broker::builder().sqlite().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    broker.create_topic(topic, 1).await;
    let mut env = bridge_env(&broker, topic, None);
    // Room for the retry after the cut connection.
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "20000".into());
    if let Some(value) = idempotence {
        env.insert("KAFKA_IDEMPOTENCE".into(), value.into());
    }
    let bridge = Bridge::start(&env).await;
    Setup {
        broker,
        proxy,
        bridge,
        client: http_client(),
    }
}

impl Setup {
    async fn push(&self, id: &str) -> u16 {
        let body = envelope(id.as_bytes(), &[], id, "2024-01-01T00:00:00Z", None).to_string();
        post(&self.client, &self.bridge.url(), body, None).await.0
    }

    /// Every record batch the bridge sent, in the order the broker received them.
    fn batches(&self) -> Vec<BatchHeader> {
        sent_batches(&self.proxy)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_sent_again_after_its_answer_was_lost_is_written_once() {
    let s = setup("idempotent", None).await;
    assert_eq!(s.push("warm").await, 204);
    for id in ["cut-1", "cut-2", "cut-3"] {
        s.proxy.cut_next_produce_answers(1);
        assert_eq!(s.push(id).await, 204, "{id}");
    }
    assert_eq!(s.push("after").await, 204);
    assert_eq!(s.proxy.cut_answers().len(), 3, "each cut happened");

    assert_eq!(
        s.broker.message_ids("idempotent").await,
        ["warm", "cut-1", "cut-2", "cut-3", "after"],
        "each record once, in order"
    );

    // What went over the wire: one producer id and epoch, sequences from 0 advancing by the
    // record count, and each request whose answer was cut sent again with its same sequence.
    let batches = s.batches();
    let producer = (batches[0].producer_id, batches[0].producer_epoch);
    assert!(
        producer.0 >= 0,
        "a producer id from InitProducerId: {batches:?}"
    );
    let mut expected_sequence = 0;
    let mut previous: Option<BatchHeader> = None;
    for batch in &batches {
        assert_eq!((batch.producer_id, batch.producer_epoch), producer);
        match previous {
            Some(p) if p == *batch => {} // the same batch sent again
            _ => {
                assert_eq!(batch.base_sequence, expected_sequence, "{batches:?}");
                expected_sequence += batch.records;
            }
        }
        previous = Some(*batch);
    }
    assert_eq!(expected_sequence, 5, "five records, each in one batch");
    assert_eq!(
        batches.len(),
        5 + 3,
        "the three cut requests each sent twice"
    );

    // tansu answered each of the three requests sent again as a duplicate; the deliveries
    // were answered 204 all the same.
    let answers = s.proxy.answers(PRODUCE);
    let duplicates = answers
        .iter()
        .flat_map(|a| produce_answer_partitions(&a.frame, a.api_version))
        .filter(|(error, _)| *error == DUPLICATE_SEQUENCE_NUMBER)
        .count();
    assert_eq!(duplicates, 3);
    assert!(s.proxy.faults().is_empty(), "{:?}", s.proxy.faults());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_whose_answer_was_lost_are_written_once() {
    let s = setup("idempotent-concurrent", None).await;
    assert_eq!(s.push("warm").await, 204);
    s.proxy.cut_next_produce_answers(2);
    let pushes: Vec<_> = (0..40)
        .map(|i| {
            let (client, url) = (s.client.clone(), s.bridge.url());
            let id = format!("m-{i:02}");
            let body = envelope(id.as_bytes(), &[], &id, "2024-01-01T00:00:00Z", None).to_string();
            tokio::spawn(async move { post(&client, &url, body, None).await.0 })
        })
        .collect();
    for push in pushes {
        assert_eq!(push.await.unwrap(), 204);
    }
    assert_eq!(s.proxy.cut_answers().len(), 2);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in s.broker.message_ids("idempotent-concurrent").await {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 41);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_batches_carry_no_producer_id_and_a_lost_answer_writes_twice() {
    let s = setup("not-idempotent", Some("false")).await;
    assert_eq!(s.push("warm").await, 204);
    s.proxy.cut_next_produce_answers(1);
    assert_eq!(s.push("cut").await, 204);
    assert_eq!(
        s.broker.message_ids("not-idempotent").await,
        ["warm", "cut", "cut"],
        "the request sent again was appended again"
    );
    for batch in s.batches() {
        assert_eq!(
            (batch.producer_id, batch.producer_epoch, batch.base_sequence),
            (-1, -1, -1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_a_producer_id_stops_the_connection_with_an_error_naming_the_setting() {
    let mut broker = Broker::builder().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    broker.create_topic("refused", 1).await;
    proxy.refuse_init_producer_id(31); // CLUSTER_AUTHORIZATION_FAILED
    let mut env = bridge_env(&broker, "refused", None);
    let check = |env: HashMap<String, String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pubsub-kafka-bridge"))
                .arg("check")
                .env_clear()
                .envs(env)
                .output()
                .unwrap()
        })
    };
    let output = check(env.clone()).await.unwrap();
    let out = String::from_utf8(output.stdout).unwrap();
    assert_ne!(output.status.code(), Some(0), "{out}");
    let kafka = out.lines().next().unwrap();
    assert!(
        kafka.starts_with("✗ kafka")
            && kafka.contains("ClusterAuthorizationFailed")
            && kafka.contains("KAFKA_IDEMPOTENCE=false"),
        "{kafka}"
    );

    env.insert("KAFKA_IDEMPOTENCE".into(), "false".into());
    let output = check(env).await.unwrap();
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(out.starts_with("✓ kafka"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_timed_out_makes_the_partition_start_again_under_a_new_producer_id() {
    let mut broker = Broker::builder().sqlite().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    broker.create_topic("stalled", 1).await;
    let mut env = bridge_env(&broker, "stalled", None);
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1000".into());
    env.insert("KAFKA_REQUEST_TIMEOUT_MS".into(), "300".into());
    let bridge = Bridge::start(&env).await;
    let (client, url) = (http_client(), bridge.url());
    let push = |id: &str| {
        let body = envelope(id.as_bytes(), &[], id, "2024-01-01T00:00:00Z", None).to_string();
        post(&client, &url, body, None)
    };
    assert_eq!(push("warm").await.0, 204);

    // The broker writes the record, its answers never come back in time: the delivery times
    // out, and so do the client's sends of the batch, so its outcome stays unknown.
    proxy.hold_answers();
    assert_eq!(push("stalled").await.0, 503);
    // The client lets go of the batch (its retries end, at most one request timeout after the
    // delivery was answered), which frees the delivery's share of the in-flight budget.
    let metrics_url = format!("http://{}/metrics", bridge.addr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metric(
        &get(&client, &metrics_url).await.1,
        "pubsub_kafka_bridge_inflight_requests",
    ) > 0.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch is never let go of"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stalled_batches = sent_batches(&proxy).len();
    proxy.release_answers();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, text) = push("next").await;
        if status == 204 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {text}");
    }

    let batches = sent_batches(&proxy);
    let first = batches[0];
    let last = *batches.last().unwrap();
    assert!(
        stalled_batches >= 2,
        "the stalled batch was sent: {batches:?}"
    );
    assert_eq!(first.base_sequence, 0, "{batches:?}");
    assert_eq!(
        (batches[1].producer_id, batches[1].base_sequence),
        (first.producer_id, 1),
        "the stalled batch followed the first under the same producer id: {batches:?}"
    );
    assert_ne!(last.producer_id, first.producer_id, "{batches:?}");
    assert_eq!(last.base_sequence, 0, "{batches:?}");
    assert!(proxy.requests(INIT_PRODUCER_ID).len() >= 2);
    let ids = broker.message_ids("stalled").await;
    assert_eq!(
        ids.iter().filter(|id| *id == "stalled").count(),
        1,
        "{ids:?}"
    );
    assert_eq!(ids.first().map(String::as_str), Some("warm"));
    assert_eq!(ids.last().map(String::as_str), Some("next"));
}

/// Every record batch sent through `proxy`, in the order the broker received them.
fn sent_batches(proxy: &BrokerProxy) -> Vec<BatchHeader> {
    proxy
        .requests(PRODUCE)
        .iter()
        .flat_map(|r| produce_batches(&r.frame))
        .collect()
}
