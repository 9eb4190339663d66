//! The producer pool: a batching producer per partition of each loaded topic, and the produce
//! path of one delivery (its deadline, its hand-over to the Kafka client, its acknowledgement).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rskafka::client::Client;
use rskafka::client::error::Error as ClientError;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder, ProducerClient};
use rskafka::record::Record;
use tokio::sync::watch;

use super::metadata::LoadOutcome;
use super::partition::{RoundRobin, choose_partition};
use super::settings::{CompressionCodec, KafkaConfig};
use super::{Ack, KafkaError};
use crate::metrics::{BatchRecords, Histogram, Latency, ProduceHistograms};
use crate::record::KafkaRecord;

/// Produce requests and records acknowledged, to show how well concurrent deliveries batch
/// and how long Kafka takes.
#[derive(Debug, Default)]
pub struct ProduceStats {
    requests: AtomicU64,
    records: AtomicU64,
    /// Time from sending each acknowledged request to its acknowledgement.
    duration: Histogram<Latency>,
    /// Records per acknowledged request.
    batch_records: Histogram<BatchRecords>,
}

impl ProduceStats {
    /// `(produce requests, records)` acknowledged so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
    }

    /// Latency and records per request of the requests acknowledged so far.
    pub(crate) fn histograms(&self) -> ProduceHistograms {
        ProduceHistograms {
            duration: self.duration.snapshot(),
            batch_records: self.batch_records.snapshot(),
        }
    }
}

/// The partition client seen through the batch producer, counting what each request carries.
#[derive(Debug)]
struct CountingClient {
    inner: Arc<PartitionClient>,
    stats: Arc<ProduceStats>,
    /// `KAFKA_PRODUCE_TIMEOUT_MS` + `KAFKA_REQUEST_TIMEOUT_MS`: a write (its retries included)
    /// still running then can no longer answer any delivery in it, so it ends and the client
    /// lets go of its records. The same bound as a delivery's share of the in-flight budget
    /// (its answer plus one request timeout), so the budget keeps counting the records as long
    /// as the client holds them when the write starts with its delivery.
    write_timeout: Duration,
}

type ProduceFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<i64>, ClientError>> + Send + 'a>>;

impl ProducerClient for CountingClient {
    fn produce(&self, records: Vec<Record>, compression: Compression) -> ProduceFuture<'_> {
        let count = records.len() as u64;
        Box::pin(async move {
            let sent = Instant::now();
            let offsets =
                tokio::time::timeout(self.write_timeout, self.inner.produce(records, compression))
                    .await
                    .map_err(|_| ClientError::Timeout)??;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.stats.records.fetch_add(count, Ordering::Relaxed);
            self.stats.duration.observe_duration(sent.elapsed());
            self.stats.batch_records.observe(count);
            Ok(offsets)
        })
    }
}

/// One partition's producer: concurrent deliveries share its batches.
pub(super) struct PartitionProducer {
    /// For a record larger than a batch, sent on its own (and counted like a batch).
    client: Arc<CountingClient>,
    batch: BatchProducer<RecordAggregator>,
}

impl PartitionProducer {
    /// A producer batching into `partition_client` with the configured linger and compression.
    pub(super) fn new(partition_client: PartitionClient, inner: &Inner) -> Self {
        let counting = Arc::new(CountingClient {
            inner: Arc::new(partition_client),
            stats: Arc::clone(&inner.stats),
            write_timeout: inner.config.produce_timeout + inner.config.request_timeout,
        });
        let batch =
            BatchProducerBuilder::new_with_client(Arc::clone(&counting) as Arc<dyn ProducerClient>)
                .with_linger(inner.config.linger)
                .with_compression(inner.compression)
                .build(RecordAggregator::new(inner.config.max_batch_bytes));
        Self {
            client: counting,
            batch,
        }
    }
}

/// A loaded topic's producers, one per partition.
pub(super) struct TopicProducers {
    pub(super) partitions: Vec<Arc<PartitionProducer>>,
    pub(super) unkeyed: RoundRobin,
}

pub(super) struct Inner {
    pub(super) config: KafkaConfig,
    pub(super) compression: Compression,
    pub(super) client: watch::Sender<Option<Arc<Client>>>,
    pub(super) topics: RwLock<HashMap<String, Arc<TopicProducers>>>,
    /// The topic loads under way, each a task of its own that every delivery to the topic waits
    /// for (at most one per topic).
    pub(super) loads: std::sync::Mutex<HashMap<String, watch::Receiver<Option<LoadOutcome>>>>,
    pub(super) started: Instant,
    /// Milliseconds since `started` of the last successful metadata read or produce; 0 = never.
    pub(super) last_contact_ms: AtomicU64,
    /// Milliseconds since `started` of the first delivery that failed for want of an answer
    /// from Kafka after the last contact; 0 = none since.
    pub(super) failing_since_ms: AtomicU64,
    /// Whether the connection task runs (it is restarted after a panic).
    pub(super) connection_task_alive: AtomicBool,
    pub(super) stats: Arc<ProduceStats>,
}

/// How far one produce got: its partition, and whether the Kafka client holds its record.
struct ProduceProgress {
    partition: std::sync::atomic::AtomicI32,
    handed_over: std::sync::atomic::AtomicBool,
}

/// A produce in progress, driven by the delivery that waits for it (no task of its own).
///
/// Dropped unfinished (the delivery timed out, or its client left), it is cancelled if its
/// record had not reached the Kafka client yet; after that, it is handed to a task of its own
/// and runs on until Kafka answers, holding `hold` at most `grace` longer. Spawning only then
/// keeps the common case (Kafka answers in time) free of a task per delivery.
struct InlineProduce<T: Send + 'static, H: Send + 'static> {
    produce: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    progress: Arc<ProduceProgress>,
    /// What the caller keeps while the client holds the record (its share of the budget).
    hold: Option<H>,
    /// How long `hold` is kept after the caller gave up: `KAFKA_REQUEST_TIMEOUT_MS`.
    grace: Duration,
    /// How long the outcome is still awaited after that, so a record that lands late is still
    /// reported to `settled`: `KAFKA_PRODUCE_TIMEOUT_MS` + `KAFKA_REQUEST_TIMEOUT_MS`, the
    /// longest a write of it may take.
    watch: Duration,
}

// Nothing in it is ever pinned in place: the produce is boxed, and `hold` is only moved or dropped.
impl<T: Send + 'static, H: Send + 'static> Unpin for InlineProduce<T, H> {}

impl<T: Send + 'static, H: Send + 'static> Future for InlineProduce<T, H> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let Some(produce) = self.produce.as_mut() else {
            return std::task::Poll::Pending; // finished already; never polled again
        };
        let output = std::task::ready!(produce.as_mut().poll(cx));
        self.produce = None;
        self.hold = None;
        std::task::Poll::Ready(output)
    }
}

impl<T: Send + 'static, H: Send + 'static> Drop for InlineProduce<T, H> {
    fn drop(&mut self) {
        let Some(produce) = self.produce.take() else {
            return;
        };
        if self.progress.handed_over.load(Ordering::Acquire)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // The share is kept at most one request timeout more: by then every request that
            // carried the record has an answer or closed its connection, and a retry still
            // running does not hold the budget. Its outcome is still awaited (a write ends
            // within `watch`), so a record that lands then is still reported.
            let (hold, grace, watch) = (self.hold.take(), self.grace, self.watch);
            let mut produce = produce;
            runtime.spawn(async move {
                if tokio::time::timeout(grace, &mut produce).await.is_err() {
                    drop(hold);
                    let _ = tokio::time::timeout(watch, produce).await;
                }
            });
        }
    }
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("brokers", &self.inner.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

/// The bridge's Kafka producer; cheap to clone.
#[derive(Clone)]
pub struct KafkaProducer {
    pub(super) inner: Arc<Inner>,
}

impl KafkaProducer {
    /// Starts connecting in the background and returns at once.
    ///
    /// The HTTP server can listen while the first connection is made; deliveries that arrive
    /// meanwhile wait for it (within their produce timeout) instead of failing.
    pub fn start(config: KafkaConfig) -> Self {
        let compression = match config.compression {
            CompressionCodec::None => Compression::NoCompression,
            CompressionCodec::Gzip => Compression::Gzip,
            CompressionCodec::Snappy => Compression::Snappy,
            CompressionCodec::Lz4 => Compression::Lz4,
            CompressionCodec::Zstd => Compression::Zstd,
        };
        let producer = Self {
            inner: Arc::new(Inner {
                config,
                compression,
                client: watch::Sender::new(None),
                topics: RwLock::new(HashMap::new()),
                loads: std::sync::Mutex::default(),
                started: Instant::now(),
                last_contact_ms: AtomicU64::new(0),
                failing_since_ms: AtomicU64::new(0),
                connection_task_alive: AtomicBool::new(true),
                stats: Arc::default(),
            }),
        };
        tokio::spawn(Self::supervise(Arc::downgrade(&producer.inner)));
        producer
    }

    /// Produces `record` to `topic` and waits for its acknowledgement (acks=all), at most
    /// `KAFKA_PRODUCE_TIMEOUT_MS`, keeping `hold` (the delivery's share of the in-flight
    /// budget) until the Kafka client has let go of the record, or one request timeout after
    /// the delivery was answered, whichever comes first.
    ///
    /// Once handed to the client, a record stays in its batch until its request is answered
    /// or times out (`KAFKA_REQUEST_TIMEOUT_MS`, which closes the silent connection), even
    /// after the delivery timed out or its client left. A produce the caller gives up on after
    /// that point therefore moves to a task of its own that carries `hold` until then, so the
    /// budget keeps counting the record's memory and a stalled Kafka cannot make records pile
    /// up past it; a retry still running one request timeout later no longer holds its share,
    /// so a share is never held for ever. A produce that had not yet handed its record over
    /// when the caller gave up is cancelled instead.
    pub async fn produce_holding<H: Send + 'static>(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: H,
    ) -> Result<Ack, KafkaError> {
        self.produce_holding_settled(topic, record, hold, |_| {})
            .await
    }

    /// As [`KafkaProducer::produce_holding`], handing the record's final outcome to `settled`
    /// when the Kafka client lets go of it, also after the caller gave up (see
    /// [`super::Produce::produce_settled`]).
    pub async fn produce_holding_settled<H: Send + 'static>(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: H,
        settled: impl FnOnce(&Result<Ack, KafkaError>) + Send + 'static,
    ) -> Result<Ack, KafkaError> {
        let timeout = self.inner.config.produce_timeout;
        let progress = Arc::new(ProduceProgress {
            partition: std::sync::atomic::AtomicI32::new(-1),
            handed_over: std::sync::atomic::AtomicBool::new(false),
        });
        let produce = {
            let producer = self.clone();
            let topic = topic.to_owned();
            let progress = Arc::clone(&progress);
            async move {
                let result = producer
                    .produce_inner(&topic, record, &progress, true)
                    .await;
                settled(&result);
                result
            }
        };
        let produce = InlineProduce {
            produce: Some(Box::pin(produce)),
            progress: Arc::clone(&progress),
            hold: Some(hold),
            grace: self.inner.config.request_timeout,
            watch: timeout + self.inner.config.request_timeout,
        };
        let result = tokio::time::timeout(timeout, produce)
            .await
            .unwrap_or_else(|_| {
                Err(KafkaError::Timeout {
                    topic: topic.to_owned(),
                    partition: progress.partition.load(Ordering::Acquire),
                    after: timeout,
                })
            });
        if let Err(e) = &result {
            self.note_unanswered(e);
        }
        result
    }

    /// Everything [`Self::produce_holding`] does before a record is sent (connect, load the
    /// topic, choose the partition, check `KAFKA_MAX_RECORD_BYTES`) and nothing after: the
    /// record is never sent, and the acknowledgement's offset is -1. A replay's dry run.
    pub(crate) async fn rehearse(
        &self,
        topic: &str,
        record: KafkaRecord,
    ) -> Result<Ack, KafkaError> {
        let timeout = self.inner.config.produce_timeout;
        let progress = ProduceProgress {
            partition: std::sync::atomic::AtomicI32::new(-1),
            handed_over: std::sync::atomic::AtomicBool::new(false),
        };
        tokio::time::timeout(timeout, self.produce_inner(topic, record, &progress, false))
            .await
            .unwrap_or_else(|_| {
                Err(KafkaError::Timeout {
                    topic: topic.to_owned(),
                    partition: progress.partition.load(Ordering::Acquire),
                    after: timeout,
                })
            })
    }

    async fn produce_inner(
        &self,
        topic: &str,
        record: KafkaRecord,
        progress: &ProduceProgress,
        send: bool,
    ) -> Result<Ack, KafkaError> {
        let client = self.connected().await;
        let producers = self.topic(&client, topic).await?;
        let partition = choose_partition(
            record.key.as_deref(),
            record.message_id.as_deref(),
            producers.partitions.len() as u32,
            &producers.unkeyed,
        ) as usize;
        progress
            .partition
            .store(partition as i32, Ordering::Release);
        let producer = &producers.partitions[partition];
        let record = Record {
            key: record.key,
            value: Some(record.value),
            headers: record.headers,
            // Within Kafka's range by construction (`RecordTimestamp`): never substituted.
            timestamp: record.timestamp.to_utc(),
        };
        let size = record.approximate_size();
        // The dead-letter topic is exempt: it holds the original request, which is larger than
        // the record that was refused (give that topic a larger max.message.bytes).
        let dead_letter = self.inner.config.dlq_topic.as_deref() == Some(topic);
        let limit = self.inner.config.max_record_bytes.filter(|_| !dead_letter);
        if let Some(limit) = limit.filter(|limit| size > *limit) {
            return Err(KafkaError::OverRecordLimit {
                topic: topic.to_owned(),
                partition: partition as i32,
                size,
                limit,
            });
        }
        if !send {
            return Ok(Ack {
                partition: partition as i32,
                offset: -1,
            });
        }
        progress.handed_over.store(true, Ordering::Release);
        let offset = if size > self.inner.config.max_batch_bytes {
            // Larger than a batch may be: sent on its own so the broker, not the
            // aggregator, decides whether it is too large.
            producer
                .client
                .produce(vec![record], self.inner.compression)
                .await
                .map_err(|e| KafkaError::Client {
                    topic: topic.to_owned(),
                    partition: Some(partition as i32),
                    source: Arc::new(e),
                })?
                .first()
                .copied()
                .unwrap_or(-1)
        } else {
            producer
                .batch
                .produce(record)
                .await
                .map_err(|source| KafkaError::Producer {
                    topic: topic.to_owned(),
                    partition: partition as i32,
                    source,
                })?
        };
        self.touch();
        Ok(Ack {
            partition: partition as i32,
            offset,
        })
    }

    /// The client, waiting for the first connection if it is still being made.
    async fn connected(&self) -> Arc<Client> {
        // Connected already (every delivery after the first): no waiter to register.
        if let Some(client) = self.inner.client.borrow().as_ref() {
            return Arc::clone(client);
        }
        let mut rx = self.inner.client.subscribe();
        // The sender lives in `inner`, which `self` holds, so waiting cannot fail.
        let connected = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|c| c.clone());
        match connected {
            Some(client) => client,
            None => std::future::pending().await,
        }
    }

    /// Batching statistics of this producer.
    pub fn stats(&self) -> &ProduceStats {
        &self.inner.stats
    }
}
