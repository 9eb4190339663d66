//! Duplicates on a real broker: redeliveries of a message whose record Kafka acknowledged are
//! answered without writing (also when the acknowledgement came after a 503), copies in flight
//! share the first one's outcome, and every copy of an unkeyed message lands in the partition
//! Java's partitioner gives its message id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use test_support::emulator::wait_for_ids;
use test_support::*;

const SUPPRESSED: &str = "pubsub_kafka_bridge_duplicates_suppressed_total";

/// An unkeyed push envelope for `id` (no ordering key, so no record key).
fn unkeyed(id: &str) -> String {
    envelope(id.as_bytes(), &[], id, "2024-01-01T00:00:00Z", None).to_string()
}

/// A bridge verifying real tokens, with `extra` settings, and a token it accepts.
async fn bridge_with(
    broker: &Broker,
    topic: &str,
    extra: &[(&str, &str)],
) -> (Bridge, JwksServer, Arc<String>) {
    let jwks = JwksServer::start(&[key(1)]).await;
    let mut env = bridge_env(broker, topic, Some(&jwks));
    for (name, value) in extra {
        env.insert((*name).to_owned(), (*value).to_owned());
    }
    let bridge = Bridge::start(&env).await;
    (bridge, jwks, Arc::new(mint(&key(1), &google_claims())))
}

async fn suppressed(bridge: &Bridge) -> f64 {
    let (_, text) = get(&http_client(), &format!("http://{}/metrics", bridge.addr)).await;
    metric(&text, SUPPRESSED)
}

/// How many records of `topic` carry each message id.
async fn copies(broker: &Broker, topic: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in broker.message_ids(topic).await {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// The broker frozen (SIGSTOP) past the produce timeout while the test redelivers as Pub/Sub
/// does: the first pushes answer 503 with their records still with the client, copies sent
/// meanwhile wait for them, and once the broker runs again every record lands once and every
/// later redelivery is answered 204 without writing, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_past_a_stalled_broker_are_written_once_and_counted() {
    const PARTITIONS: u32 = 3;
    let broker = Broker::start().await;
    broker.create_topic("stall", PARTITIONS as i32).await;
    // A request timeout longer than the stall: the records wait on their connections, as
    // behind a slow broker, rather than being sent again on new ones.
    let (bridge, _jwks, token) = bridge_with(
        &broker,
        "stall",
        &[
            ("KAFKA_PRODUCE_TIMEOUT_MS", "1500"),
            ("KAFKA_REQUEST_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let client = http_client();
    let push = |id: String| {
        let (client, token, url) = (client.clone(), Arc::clone(&token), bridge.url());
        async move { post(&client, &url, unkeyed(&id), Some(&token)).await }
    };
    // Every partition written to once, so each has its connection before the broker stops.
    let mut warmed = [false; PARTITIONS as usize];
    for n in 0.. {
        let id = format!("warm-{n}");
        let partition = java_partition(id.as_bytes(), PARTITIONS) as usize;
        if !warmed[partition] {
            assert_eq!(push(id).await.0, 204);
            warmed[partition] = true;
        }
        if warmed.iter().all(|w| *w) {
            break;
        }
    }

    let ids: Vec<String> = (0..6).map(|n| format!("stalled-{n}")).collect();
    broker.pause();
    let first = futures_util::future::join_all(ids.iter().cloned().map(push)).await;
    for (id, (status, text)) in ids.iter().zip(&first) {
        assert_eq!(*status, 503, "{id}: {text}");
    }
    // Redelivered while the first records are still with the client: each copy waits for its
    // first one, at most a produce timeout; the broker resumes meanwhile.
    let waiting: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| tokio::spawn(push(id)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.resume();
    let mut answered_without_writing = 0;
    for (id, copy) in ids.iter().zip(waiting) {
        let (status, text) = copy.await.unwrap();
        // 204: the first's record was acknowledged while the copy waited; 503: not within the
        // copy's produce timeout. Either way the copy wrote nothing.
        assert!(matches!(status, 204 | 503), "{id}: {status} {text}");
        answered_without_writing += usize::from(status == 204);
    }
    println!(
        "stalled broker: {answered_without_writing} of {} copies sent in flight shared their \
         first one's acknowledgement",
        ids.len()
    );
    wait_for_ids(&broker, "stall", &ids).await;
    // Redelivered after the late acknowledgements: every one answered without writing. A
    // copy may still find its first in flight for a moment (the acknowledgement on its way):
    // it shares it.
    for id in &ids {
        let (status, text) = push(id.clone()).await;
        assert_eq!(status, 204, "{id}: {text}");
        answered_without_writing += 1;
    }

    let counts = copies(&broker, "stall").await;
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "{id}: {counts:?}");
    }
    assert_eq!(suppressed(&bridge).await, answered_without_writing as f64);
    for record in broker.read_all("stall").await {
        let id = record.header("pubsub.message_id").unwrap();
        assert_eq!(
            record.partition as u32,
            java_partition(id.as_bytes(), PARTITIONS),
            "{id}"
        );
    }
}

/// With `DEDUP_CACHE_ENTRIES=0` every copy is written, and every copy of an unkeyed message
/// lands in the partition Java's partitioner gives its message id, as a key would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_every_copy_is_written_in_its_message_ids_partition() {
    const PARTITIONS: u32 = 4;
    let broker = Broker::start().await;
    broker.create_topic("copies", PARTITIONS as i32).await;
    let (bridge, _jwks, token) =
        bridge_with(&broker, "copies", &[("DEDUP_CACHE_ENTRIES", "0")]).await;
    let client = http_client();
    let ids: Vec<String> = (0..8_u64)
        .map(|n| (4_489_048_289_571_733 + n).to_string())
        .collect();
    for _copy in 0..3 {
        for id in &ids {
            let (status, text) = post(&client, &bridge.url(), unkeyed(id), Some(&token)).await;
            assert_eq!(status, 204, "{id}: {text}");
        }
    }
    let records = broker.read_all("copies").await;
    assert_eq!(records.len(), 3 * ids.len());
    let mut partitions_used = std::collections::HashSet::new();
    for record in &records {
        assert_eq!(record.record.key, None);
        let id = record.header("pubsub.message_id").unwrap();
        assert_eq!(
            record.partition as u32,
            java_partition(id.as_bytes(), PARTITIONS),
            "{id}"
        );
        partitions_used.insert(record.partition);
    }
    assert!(partitions_used.len() > 1, "{partitions_used:?}");
    assert_eq!(suppressed(&bridge).await, 0.0);
}

/// `DEDUP_CACHE_ENTRIES` bounds the ids remembered: the oldest is forgotten first, and its
/// redelivery is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_forgets_the_oldest_id_first() {
    let broker = Broker::start().await;
    broker.create_topic("bounded", 2).await;
    let (bridge, _jwks, token) =
        bridge_with(&broker, "bounded", &[("DEDUP_CACHE_ENTRIES", "2")]).await;
    let client = http_client();
    for id in ["a", "b", "c", "c", "b", "a"] {
        let (status, text) = post(&client, &bridge.url(), unkeyed(id), Some(&token)).await;
        assert_eq!(status, 204, "{id}: {text}");
    }
    // a, b, c written; c and b remembered (a forgotten): their copies suppressed, a's written.
    let counts = copies(&broker, "bounded").await;
    assert_eq!(counts["a"], 2, "{counts:?}");
    assert_eq!(counts["b"], 1, "{counts:?}");
    assert_eq!(counts["c"], 1, "{counts:?}");
    assert_eq!(suppressed(&bridge).await, 2.0);
}
