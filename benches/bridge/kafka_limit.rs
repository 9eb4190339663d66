//! The Kafka limit: the bench's records produced with rskafka straight to the broker, as fast as
//! the broker takes them with the bridge's batching and concurrency.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::producer::BatchProducerBuilder;
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::record::Record;
use test_support::Broker;

use crate::closed_loop::{Run, Until, closed_loop};
use crate::processes::linger_ms;
use crate::{CONCURRENCY, PARTITIONS, TOPIC};

/// The same records produced straight to the broker: one batching producer per partition,
/// `CONCURRENCY` callers each waiting for its own record, as the bridge does.
pub(crate) async fn kafka_load(broker: &Broker, size: usize, count: usize) -> Run {
    let client = broker.client().await.unwrap();
    let mut producers = Vec::new();
    for p in 0..PARTITIONS {
        let pc = Arc::new(
            client
                .partition_client(TOPIC, p, UnknownTopicHandling::Retry)
                .await
                .unwrap(),
        );
        producers.push(Arc::new(
            BatchProducerBuilder::new(pc)
                .with_linger(Duration::from_millis(linger_ms()))
                .with_compression(Compression::NoCompression)
                .build(RecordAggregator::new(1 << 20)),
        ));
    }
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    closed_loop(
        CONCURRENCY,
        Until::Count(count),
        || (),
        move |(), i| {
            let headers = [
                ("source", "bench".to_owned()),
                ("seq", i.to_string()),
                ("pubsub.message_id", format!("direct-{i}")),
                (
                    "pubsub.publish_time",
                    "2026-11-24T10:00:00.123456Z".to_owned(),
                ),
                (
                    "pubsub.subscription",
                    "projects/bench/subscriptions/push".to_owned(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect();
            let record = Record {
                key: None,
                value: Some(payload.clone()),
                headers,
                timestamp: chrono::Utc::now(),
            };
            let producer = Arc::clone(&producers[i % producers.len()]);
            async move {
                producer.produce(record).await.unwrap();
                ((), true)
            }
        },
    )
    .await
}
