//! Kafka: one connection set made at startup, a batching producer per partition, acks=all.
//!
//! Concurrent deliveries for one partition share a produce request (rskafka's
//! `BatchProducer`, lingering `KAFKA_LINGER_MS`), and each delivery still waits for its own
//! record's offset. rskafka always sends `acks=-1` (all in-sync replicas). Partition counts
//! come from metadata, re-read every `KAFKA_METADATA_REFRESH_MS`.

mod deadline;
pub mod oauth;
pub mod partition;
pub mod secret;
pub mod security;
pub mod settings;

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use rskafka::BackoffConfig;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{
    BatchProducer, BatchProducerBuilder, Error as ProducerError, ProducerClient,
};
use rskafka::client::{Client, ClientBuilder, KeepaliveConfig};
use rskafka::record::Record;
use tokio::sync::watch;

use crate::limits::InflightPermit;
use crate::record::KafkaRecord;
use deadline::DeadlineTimers;
use partition::{RoundRobin, choose_partition};
use settings::{CompressionCodec, KafkaConfig};

/// Why a record was not acknowledged. The client's own error is kept as the source, and
/// [`KafkaError::class`] sorts every variant into retriable or permanent, once.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// No connection to the cluster (yet, or any more).
    #[error("Kafka unreachable: {0}")]
    Unavailable(String),
    /// The topic does not exist (or metadata does not list it yet).
    #[error("topic {topic:?} not found in cluster metadata")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// No acknowledgement within `KAFKA_PRODUCE_TIMEOUT_MS`.
    #[error("no acknowledgement from {topic}/{partition} within {after:?}")]
    Timeout {
        /// The topic.
        topic: String,
        /// The partition (-1: not chosen yet).
        partition: i32,
        /// The timeout.
        after: Duration,
    },
    /// The client or the broker failed a request for `topic` (metadata, a partition's
    /// connection, or a produce sent on its own).
    #[error("{topic}{}: {source}", partition.map(|p| format!("/{p}")).unwrap_or_default())]
    Client {
        /// The topic.
        topic: String,
        /// The partition, when the request had one.
        partition: Option<i32>,
        /// The client's error.
        #[source]
        source: Arc<ClientError>,
    },
    /// The batching producer failed the record.
    #[error("{topic}/{partition}: {source}")]
    Producer {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The producer's error.
        #[source]
        source: ProducerError,
    },
    /// Larger than `KAFKA_MAX_RECORD_BYTES`: refused before sending.
    #[error("{topic}/{partition}: record of {size} bytes exceeds KAFKA_MAX_RECORD_BYTES={limit}")]
    OverRecordLimit {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The record's approximate size on the wire.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Whether a failure can pass on a redelivery, and its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    /// Whether a redelivery can succeed (503) or never will (4xx, dead letter).
    pub retriable: bool,
    /// Stable machine-readable code.
    pub code: &'static str,
}

const fn class(retriable: bool, code: &'static str) -> ErrorClass {
    ErrorClass { retriable, code }
}

impl KafkaError {
    /// The one classification of every Kafka failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable(_) => class(true, "kafka_unavailable"),
            Self::UnknownTopic { .. } => class(true, "unknown_topic"),
            Self::Timeout { .. } => class(true, "kafka_timeout"),
            Self::OverRecordLimit { .. } => class(false, "record_too_large"),
            Self::Client { source, .. } => classify_client(source),
            Self::Producer { source, .. } => match source {
                ProducerError::Client(client) => classify_client(client),
                ProducerError::TooLarge => class(false, "record_too_large"),
                ProducerError::Aggregator(_) | ProducerError::FlushError(_) => {
                    class(true, "kafka_unavailable")
                }
            },
        }
    }

    /// Whether a redelivery can succeed (503) or never will (4xx, dead letter).
    pub fn is_retriable(&self) -> bool {
        self.class().retriable
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        self.class().code
    }
}

/// What the broker's (or the transport's) answer means for a redelivery.
fn classify_client(error: &ClientError) -> ErrorClass {
    match error {
        ClientError::ServerError { protocol_error, .. } => match protocol_error {
            ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge => {
                class(false, "record_too_large")
            }
            ProtocolError::CorruptMessage
            | ProtocolError::InvalidRecord
            | ProtocolError::InvalidTimestamp => class(false, "record_rejected"),
            ProtocolError::InvalidTopicException => class(false, "invalid_topic"),
            // The broker's quota throttle (KIP-219) outlasts the produce timeout: the records
            // were not sent, a redelivery after the throttle writes them.
            ProtocolError::ThrottlingQuotaExceeded => class(true, "kafka_throttled"),
            // Authorization and everything else may be fixed by an operator or a leader move.
            _ => class(true, "broker_error"),
        },
        _ => class(true, "kafka_unavailable"),
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

/// Produce requests and records acknowledged, to show how well concurrent deliveries batch.
#[derive(Debug, Default)]
pub struct ProduceStats {
    requests: AtomicU64,
    records: AtomicU64,
}

impl ProduceStats {
    /// `(produce requests, records)` acknowledged so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
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
            let offsets =
                tokio::time::timeout(self.write_timeout, self.inner.produce(records, compression))
                    .await
                    .map_err(|_| ClientError::Timeout)??;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.stats.records.fetch_add(count, Ordering::Relaxed);
            Ok(offsets)
        })
    }
}

struct PartitionProducer {
    /// For a record larger than a batch, sent on its own (and counted like a batch).
    client: Arc<CountingClient>,
    batch: BatchProducer<RecordAggregator>,
}

struct TopicProducers {
    partitions: Vec<Arc<PartitionProducer>>,
    unkeyed: RoundRobin,
}

/// How long loading a topic may take: one metadata request (retried within the produce timeout
/// on errors) and no I/O per partition. Deliveries waiting for a load time out on their own
/// deadline; a load that outlasts this fails, and the next delivery to the topic starts another.
pub(crate) const TOPIC_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What a topic load ends with, shared by every delivery that waited for it.
type LoadOutcome = Result<Arc<TopicProducers>, LoadFailure>;

/// Why a topic load failed, cloned for each delivery that waited for it.
#[derive(Debug, Clone)]
enum LoadFailure {
    UnknownTopic,
    Client(Arc<ClientError>),
    TimedOut,
    Interrupted,
}

impl LoadFailure {
    fn into_error(self, topic: &str) -> KafkaError {
        let topic = topic.to_owned();
        match self {
            Self::UnknownTopic => KafkaError::UnknownTopic { topic },
            Self::Client(source) => KafkaError::Client {
                topic,
                partition: None,
                source,
            },
            Self::TimedOut => KafkaError::Timeout {
                topic,
                partition: -1,
                after: TOPIC_LOAD_TIMEOUT,
            },
            Self::Interrupted => KafkaError::Unavailable(format!("loading topic {topic} stopped")),
        }
    }
}

/// A topic load, run as a task of its own. However it ends (a panic or the runtime shutting
/// down included), the topic leaves `loads` and its waiters get an outcome, so the next
/// delivery to the topic can start another load.
struct TopicLoad {
    producer: KafkaProducer,
    topic: String,
    done: watch::Sender<Option<LoadOutcome>>,
}

impl TopicLoad {
    async fn run(self, client: Arc<Client>) {
        let outcome = self.producer.read_topic(&client, &self.topic).await;
        if let Err(failure) = &outcome {
            // Each delivery that waited logs its own failure.
            let error = failure.clone().into_error(&self.topic);
            tracing::debug!(topic = self.topic, %error, "cannot load topic");
        }
        self.finish(outcome);
    }

    /// Publishes the topic's producers and leaves `loads` (under its lock, see
    /// [`KafkaProducer::load_topic`]), then answers the waiters.
    fn finish(&self, outcome: LoadOutcome) {
        let inner = &self.producer.inner;
        let mut loads = inner.loads.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(producers) = &outcome {
            inner
                .topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.topic.clone(), Arc::clone(producers));
        }
        loads.remove(&self.topic);
        drop(loads);
        self.done.send_replace(Some(outcome));
    }
}

impl Drop for TopicLoad {
    fn drop(&mut self) {
        if self.done.borrow().is_none() {
            self.finish(Err(LoadFailure::Interrupted));
        }
    }
}

struct Inner {
    config: KafkaConfig,
    compression: Compression,
    client: watch::Sender<Option<Arc<Client>>>,
    topics: RwLock<HashMap<String, Arc<TopicProducers>>>,
    /// The topic loads under way, each a task of its own that every delivery to the topic waits
    /// for (at most one per topic).
    loads: std::sync::Mutex<HashMap<String, watch::Receiver<Option<LoadOutcome>>>>,
    started: Instant,
    /// Milliseconds since `started` of the last successful metadata read or produce; 0 = never.
    last_contact_ms: AtomicU64,
    /// Milliseconds since `started` of the first delivery that failed for want of an answer
    /// from Kafka after the last contact; 0 = none since.
    failing_since_ms: AtomicU64,
    /// Whether the connection task runs (it is restarted after a panic).
    connection_task_alive: AtomicBool,
    stats: Arc<ProduceStats>,
    /// Each produce's `KAFKA_PRODUCE_TIMEOUT_MS` deadline.
    deadlines: DeadlineTimers,
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
/// and runs on, holding what it holds, until Kafka answers. Spawning only then keeps the
/// common case (Kafka answers in time) free of a task per delivery.
struct InlineProduce<T: Send + 'static> {
    produce: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    progress: Arc<ProduceProgress>,
    /// How long the produce may run on after its caller gave up: `KAFKA_REQUEST_TIMEOUT_MS`.
    grace: Duration,
}

impl<T: Send + 'static> Future for InlineProduce<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let Some(produce) = self.produce.as_mut() else {
            return std::task::Poll::Pending; // finished already; never polled again
        };
        let output = std::task::ready!(produce.as_mut().poll(cx));
        self.produce = None;
        std::task::Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for InlineProduce<T> {
    fn drop(&mut self) {
        let Some(produce) = self.produce.take() else {
            return;
        };
        if self.progress.handed_over.load(Ordering::Acquire)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // At most one request timeout more: by then every request that carried the record
            // has an answer or closed its connection; a retry still running is let go of, so
            // what it holds (the delivery's share of the in-flight budget) is freed.
            let grace = self.grace;
            runtime.spawn(async move {
                let _ = tokio::time::timeout(grace, produce).await;
            });
        }
    }
}

/// TCP keepalive on broker connections: an idle connection whose peer vanished (a NAT flow
/// dropped, a VM paused) is found dead after 60 s + 3 × 10 s instead of at its next request,
/// and the probes keep NAT mappings alive (Cloud NAT drops an established TCP flow idle for
/// 1200 s by default, `tcpEstablishedIdleTimeoutSec`).
const KEEPALIVE: KeepaliveConfig = KeepaliveConfig {
    time: Some(Duration::from_secs(60)),
    interval: Some(Duration::from_secs(10)),
    retries: Some(3),
};

/// `/healthz` fails after this many `KAFKA_REQUEST_TIMEOUT_MS` without a successful Kafka round
/// trip while deliveries fail for want of an answer: a silent connection is replaced within
/// about one request timeout, so six mean the client is not repairing itself.
pub const STALL_REQUEST_TIMEOUTS: u32 = 6;

/// Whether Kafka, reached once (`last_contact_ms`), has not answered for longer than `bound`
/// since deliveries began to fail (`failing_since_ms`); 0 means never / not failing.
fn stalled(last_contact_ms: u64, failing_since_ms: u64, now_ms: u64, bound: Duration) -> bool {
    last_contact_ms != 0
        && failing_since_ms != 0
        && now_ms.saturating_sub(failing_since_ms) > bound.as_millis() as u64
}

/// Connects to the cluster with the configured security: what the producer does at startup
/// and what `pubsub-kafka-bridge check` tries.
///
/// Every step has a deadline: connecting (TCP and TLS) and each request (ApiVersions, SASL,
/// metadata, produce) end after `KAFKA_REQUEST_TIMEOUT_MS`, like the Java client's
/// `request.timeout.ms`; a request that times out closes its connection, which is replaced.
pub async fn connect(config: &KafkaConfig) -> Result<Client, String> {
    let mut builder = ClientBuilder::new(config.bootstrap_servers.clone())
        .client_id(config.client_id.as_str())
        .connect_timeout(Some(config.request_timeout))
        .timeout(Some(config.request_timeout))
        .keepalive_config(KEEPALIVE)
        // rskafka retries forever by default; a delivery must get an answer before
        // Pub/Sub's ack deadline, so retries end with the produce timeout.
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.,
            deadline: Some(config.produce_timeout),
        });
    let mut security = config.security.clone();
    if let Some((endpoint, name)) = &config.security.password_secret {
        let password = secret::access(endpoint, name, &config.security.metadata_host).await?;
        security.set_password(password);
    }
    builder = security::apply(builder, &security).map_err(|e| e.to_string())?;
    builder.build().await.map_err(|e| e.to_string())
}

/// The pipeline's one seam to Kafka: what [`crate::App`] needs of a producer.
///
/// [`KafkaProducer`] is the real one. A trait (not an enum) because the other implementations
/// live outside the product: the handler tests' scripted producer and the instruction-count
/// benchmark's in-memory one, which let the whole pipeline run without a broker.
pub trait Produce: Send + Sync + 'static {
    /// Produces `record` to `topic` and waits for its acknowledgement (acks=all), at most
    /// `KAFKA_PRODUCE_TIMEOUT_MS`, keeping `hold` (the delivery's share of the in-flight
    /// budget) until the producer has let go of the record.
    fn produce(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: Option<InflightPermit>,
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send;

    /// Whether the cluster answered within `window` (readiness).
    fn reached_within(&self, window: Duration) -> bool;

    /// Whether the producer can make progress (liveness), or why not.
    fn liveness(&self) -> Result<(), &'static str> {
        Ok(())
    }

    /// `(produce requests, records)` acknowledged so far (metrics).
    fn produced(&self) -> (u64, u64);
}

impl Produce for KafkaProducer {
    fn produce(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: Option<InflightPermit>,
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send {
        self.produce_holding(topic, record, hold)
    }

    fn reached_within(&self, window: Duration) -> bool {
        Self::reached_within(self, window)
    }

    fn liveness(&self) -> Result<(), &'static str> {
        Self::liveness(self)
    }

    fn produced(&self) -> (u64, u64) {
        self.stats().snapshot()
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
    inner: Arc<Inner>,
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
                deadlines: DeadlineTimers::default(),
            }),
        };
        tokio::spawn(Self::supervise(Arc::downgrade(&producer.inner)));
        producer
    }

    /// Runs the connection task, and runs it again after a panic: deliveries depend on it
    /// (the first connection, metadata refresh), so it must not silently stay dead.
    async fn supervise(inner: Weak<Inner>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let task = tokio::spawn(Self::maintain(Weak::clone(&inner)));
            let Err(e) = task.await else {
                return; // the producer is gone
            };
            let Some(alive) = inner.upgrade() else { return };
            if !e.is_panic() {
                return; // the runtime is shutting down
            }
            alive.connection_task_alive.store(false, Ordering::Relaxed);
            tracing::error!(restart_in = ?backoff, "the Kafka connection task panicked");
            drop(alive);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Connects (retrying with backoff), loads the configured topics, then re-reads metadata
    /// until the producer is dropped.
    ///
    /// The task owns only a weak handle and holds a strong one just while it works, so it ends
    /// (and with it the connections) at its next step after the last producer handle is gone.
    async fn maintain(inner: Weak<Inner>) {
        let upgrade = || inner.upgrade().map(|inner| Self { inner });
        if let Some(producer) = upgrade() {
            producer
                .inner
                .connection_task_alive
                .store(true, Ordering::Relaxed);
        }
        let mut backoff = Duration::from_millis(100);
        let (producer, client) = loop {
            let Some(producer) = upgrade() else { return };
            match producer.connect().await {
                Ok(client) => break (producer, Arc::new(client)),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach Kafka");
                    drop(producer);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!(brokers = ?producer.inner.config.bootstrap_servers, "connected to Kafka");
        producer.touch();
        producer
            .inner
            .client
            .send_replace(Some(Arc::clone(&client)));
        for topic in producer.inner.config.preload_topics.clone() {
            if let Err(e) = producer.topic(&client, &topic).await {
                tracing::warn!(topic, error = %e, "topic not ready yet");
            }
        }
        let mut interval = tokio::time::interval(producer.inner.config.metadata_refresh);
        drop(producer);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(producer) = upgrade() else { return };
            if let Err(e) = producer.refresh_metadata(&client).await {
                tracing::warn!(error = %e, "Kafka metadata refresh failed");
            }
        }
    }

    async fn connect(&self) -> Result<Client, String> {
        connect(&self.inner.config).await
    }

    fn touch(&self) {
        let ms = self.now_ms();
        self.inner.last_contact_ms.store(ms, Ordering::Relaxed);
        self.inner.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// Milliseconds since start, at least 1 (0 means "never" in the clocks above).
    fn now_ms(&self) -> u64 {
        (self.inner.started.elapsed().as_millis() as u64).max(1)
    }

    /// Notes a delivery that Kafka did not answer (timed out, or no connection).
    fn note_unanswered(&self, error: &KafkaError) {
        if matches!(error.code(), "kafka_timeout" | "kafka_unavailable") {
            let now = self.now_ms();
            let _ = self.inner.failing_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether the Kafka client can make progress (liveness), or why not.
    ///
    /// Not live when the connection task is down, or when Kafka, once reached, has not
    /// answered for [`STALL_REQUEST_TIMEOUTS`] request timeouts while deliveries failed for
    /// want of an answer. A cluster never reached (a cold start against an unreachable
    /// cluster) is no reason: the startup probe (`/readyz`) is the one that waits for it, and
    /// restarting would not reach it sooner.
    pub fn liveness(&self) -> Result<(), &'static str> {
        if !self.inner.connection_task_alive.load(Ordering::Relaxed) {
            return Err("the Kafka connection task is not running");
        }
        if stalled(
            self.inner.last_contact_ms.load(Ordering::Relaxed),
            self.inner.failing_since_ms.load(Ordering::Relaxed),
            self.now_ms(),
            self.inner.config.request_timeout * STALL_REQUEST_TIMEOUTS,
        ) {
            return Err("Kafka has not answered while deliveries failed");
        }
        Ok(())
    }

    /// Whether the cluster answered within `window` (readiness).
    pub fn reached_within(&self, window: Duration) -> bool {
        let last = self.inner.last_contact_ms.load(Ordering::Relaxed);
        last != 0
            && self.inner.started.elapsed().as_millis() as u64 <= last + window.as_millis() as u64
    }

    /// Re-reads partition counts; loaded topics that grew get producers for the new partitions.
    async fn refresh_metadata(&self, client: &Arc<Client>) -> Result<(), ClientError> {
        let listed = client.list_topics().await?;
        self.touch();
        let counts: HashMap<String, usize> = listed
            .into_iter()
            .map(|t| (t.name, t.partitions.len()))
            .collect();
        let loaded: Vec<(String, usize)> = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len()))
            .collect();
        for (topic, known) in loaded {
            let current = counts.get(&topic).copied().unwrap_or(0);
            if current > known {
                tracing::info!(topic, from = known, to = current, "partition count changed");
                if let Err(e) = self.load_topic(client, &topic, true).await {
                    tracing::warn!(topic, error = %e, "cannot open new partitions");
                }
            }
        }
        Ok(())
    }

    async fn topic(
        &self,
        client: &Arc<Client>,
        topic: &str,
    ) -> Result<Arc<TopicProducers>, KafkaError> {
        if let Some(loaded) = self.loaded(topic) {
            return Ok(loaded);
        }
        // Boxed: only the first deliveries to a topic wait here, and the state of the wait
        // would otherwise be part of every delivery's produce future, moved onto the heap per
        // delivery.
        Box::pin(self.load_topic(client, topic, false)).await
    }

    /// Waits for `topic`'s producers, loading them in a task of their own unless a load is
    /// under way: every delivery that arrives meanwhile waits for the same load, and one that
    /// stops waiting (its deadline came) leaves the load running. `grow`: load even when the
    /// topic is loaded already (it has more partitions now).
    async fn load_topic(
        &self,
        client: &Arc<Client>,
        topic: &str,
        grow: bool,
    ) -> Result<Arc<TopicProducers>, KafkaError> {
        let mut outcome = {
            let mut loads = self.inner.loads.lock().unwrap_or_else(|e| e.into_inner());
            // A load publishes its topic and leaves `loads` under this lock, so a topic that is
            // neither loaded nor loading here has no load to wait for.
            match (loads.get(topic), self.loaded(topic)) {
                (Some(load), _) => load.clone(),
                (None, Some(loaded)) if !grow => return Ok(loaded),
                (None, _) => {
                    let (done, load) = watch::channel(None);
                    loads.insert(topic.to_owned(), load.clone());
                    let task = TopicLoad {
                        producer: self.clone(),
                        topic: topic.to_owned(),
                        done,
                    };
                    tokio::spawn(task.run(Arc::clone(client)));
                    load
                }
            }
        };
        // `TopicLoad` always sends before it drops its sender, so the wait cannot fail.
        let finished = outcome
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|outcome| outcome.clone());
        match finished {
            Some(Ok(producers)) => Ok(producers),
            Some(Err(failure)) => Err(failure.into_error(topic)),
            None => Err(LoadFailure::Interrupted.into_error(topic)),
        }
    }

    /// Reads the cluster's metadata once and makes a producer for each partition of `topic`
    /// it lists, keeping those already made.
    async fn read_topic(
        &self,
        client: &Client,
        topic: &str,
    ) -> Result<Arc<TopicProducers>, LoadFailure> {
        let clients = tokio::time::timeout(
            TOPIC_LOAD_TIMEOUT,
            client.partition_clients(topic, UnknownTopicHandling::Error),
        )
        .await
        .map_err(|_| LoadFailure::TimedOut)?
        .map_err(|e| match e {
            ClientError::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                ..
            } => LoadFailure::UnknownTopic,
            e => LoadFailure::Client(Arc::new(e)),
        })?;
        self.touch();
        if clients.is_empty() {
            return Err(LoadFailure::UnknownTopic);
        }
        let mut partitions: Vec<Arc<PartitionProducer>> = match self.loaded(topic) {
            Some(existing) if existing.partitions.len() >= clients.len() => return Ok(existing),
            Some(existing) => existing.partitions.clone(),
            None => Vec::with_capacity(clients.len()),
        };
        for partition_client in clients.into_iter().skip(partitions.len()) {
            let counting = Arc::new(CountingClient {
                inner: Arc::new(partition_client),
                stats: Arc::clone(&self.inner.stats),
                write_timeout: self.inner.config.produce_timeout
                    + self.inner.config.request_timeout,
            });
            let batch = BatchProducerBuilder::new_with_client(
                Arc::clone(&counting) as Arc<dyn ProducerClient>
            )
            .with_linger(self.inner.config.linger)
            .with_compression(self.inner.compression)
            .build(RecordAggregator::new(self.inner.config.max_batch_bytes));
            partitions.push(Arc::new(PartitionProducer {
                client: counting,
                batch,
            }));
        }
        Ok(Arc::new(TopicProducers {
            partitions,
            unkeyed: RoundRobin::default(),
        }))
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
    /// up past it; a retry still running one request timeout later is let go of, so a share
    /// is never held for ever. A produce that had not yet handed its record over when the
    /// caller gave up is cancelled instead.
    pub async fn produce_holding<H: Send + 'static>(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: H,
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
                let result = producer.produce_inner(&topic, record, &progress).await;
                drop(hold);
                result
            }
        };
        let mut produce = InlineProduce {
            produce: Some(Box::pin(produce)),
            progress: Arc::clone(&progress),
            grace: self.inner.config.request_timeout,
        };
        let mut deadline = self
            .inner
            .deadlines
            .lease(tokio::time::Instant::now() + timeout);
        // The produce first, as `tokio::time::timeout` does: an answer that is there wins.
        let answered = poll_fn(|cx| match Pin::new(&mut produce).poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending => Pin::new(&mut deadline).poll(cx).map(|()| None),
        })
        .await;
        let result = answered.unwrap_or_else(|| {
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

    async fn produce_inner(
        &self,
        topic: &str,
        record: KafkaRecord,
        progress: &ProduceProgress,
    ) -> Result<Ack, KafkaError> {
        let client = self.connected().await;
        let producers = self.topic(&client, topic).await?;
        let partition = choose_partition(
            record.key.as_deref(),
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

    /// The producers of `topic`, if loaded.
    fn loaded(&self, topic: &str) -> Option<Arc<TopicProducers>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
    }

    /// The open partition count of `topic`, if loaded.
    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.loaded(topic).map(|t| t.partitions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(protocol_error: ProtocolError) -> Arc<ClientError> {
        Arc::new(ClientError::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Topic("t".into()),
            response: None,
            is_virtual: false,
        })
    }

    fn via_client(source: Arc<ClientError>) -> KafkaError {
        KafkaError::Client {
            topic: "t".into(),
            partition: Some(0),
            source,
        }
    }

    fn via_producer(source: ProducerError) -> KafkaError {
        KafkaError::Producer {
            topic: "t".into(),
            partition: 0,
            source,
        }
    }

    #[test]
    fn too_large_and_invalid_records_are_permanent_whichever_path_reports_them() {
        for (protocol_error, code) in [
            (ProtocolError::MessageTooLarge, "record_too_large"),
            (ProtocolError::RecordListTooLarge, "record_too_large"),
            (ProtocolError::InvalidRecord, "record_rejected"),
            (ProtocolError::CorruptMessage, "record_rejected"),
            (ProtocolError::InvalidTimestamp, "record_rejected"),
            (ProtocolError::InvalidTopicException, "invalid_topic"),
        ] {
            let expected = class(false, code);
            assert_eq!(via_client(server_error(protocol_error)).class(), expected);
            let batched = ProducerError::Client(server_error(protocol_error));
            assert_eq!(via_producer(batched).class(), expected);
        }
        assert_eq!(
            via_producer(ProducerError::TooLarge).class(),
            class(false, "record_too_large")
        );
        let over = KafkaError::OverRecordLimit {
            topic: "t".into(),
            partition: 0,
            size: 2,
            limit: 1,
        };
        assert_eq!(over.class(), class(false, "record_too_large"));
    }

    #[test]
    fn leadership_replication_and_transport_errors_are_retriable() {
        for e in [
            ProtocolError::NotLeaderOrFollower,
            ProtocolError::NotEnoughReplicas,
            ProtocolError::RequestTimedOut,
            ProtocolError::TopicAuthorizationFailed,
        ] {
            assert_eq!(
                via_client(server_error(e)).class(),
                class(true, "broker_error")
            );
        }
        let transport = Arc::new(ClientError::Timeout);
        assert_eq!(
            via_client(Arc::clone(&transport)).class(),
            class(true, "kafka_unavailable")
        );
        assert_eq!(
            via_producer(ProducerError::Client(transport)).class(),
            class(true, "kafka_unavailable")
        );
        assert_eq!(
            via_producer(ProducerError::FlushError("x".into())).class(),
            class(true, "kafka_unavailable")
        );
    }

    #[test]
    fn a_throttle_beyond_the_deadline_is_retriable_and_named() {
        let throttled = server_error(ProtocolError::ThrottlingQuotaExceeded);
        assert_eq!(
            via_client(Arc::clone(&throttled)).class(),
            class(true, "kafka_throttled")
        );
        assert_eq!(
            via_producer(ProducerError::Client(throttled)).class(),
            class(true, "kafka_throttled")
        );
    }

    #[test]
    fn a_failed_topic_load_is_told_to_each_waiter_with_no_partition_chosen() {
        assert!(matches!(
            LoadFailure::TimedOut.into_error("t"),
            KafkaError::Timeout { partition: -1, after, .. } if after == TOPIC_LOAD_TIMEOUT
        ));
        assert_eq!(
            LoadFailure::UnknownTopic.into_error("t").code(),
            "unknown_topic"
        );
        assert_eq!(
            LoadFailure::Interrupted.into_error("t").code(),
            "kafka_unavailable"
        );
        let client = LoadFailure::Client(server_error(ProtocolError::InvalidTopicException));
        assert_eq!(client.into_error("t").code(), "invalid_topic");
    }

    #[test]
    fn the_client_error_is_kept_as_the_source() {
        let error = via_client(server_error(ProtocolError::MessageTooLarge));
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.to_string().contains("MessageTooLarge"), "{source}");
        assert!(error.to_string().starts_with("t/0: "), "{error}");
    }

    #[test]
    fn stalled_only_after_the_bound_of_failures_without_an_answer_once_reached() {
        let bound = Duration::from_millis(1_000);
        // Never reached: a cold start against an unreachable cluster is not a stall.
        assert!(!stalled(0, 100, 60_000, bound));
        // Reached, nothing failing.
        assert!(!stalled(50, 0, 60_000, bound));
        // Failing, within the bound (inclusive).
        assert!(!stalled(50, 100, 1_000, bound));
        assert!(!stalled(50, 100, 1_100, bound));
        assert!(stalled(50, 100, 1_101, bound));
        // A clock read before the failure was noted never underflows.
        assert!(!stalled(50, 100, 99, bound));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_connection_task_ends_with_its_producer() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let unreachable = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().to_string()
        };
        let vars: std::collections::HashMap<String, String> = [
            ("KAFKA_BOOTSTRAP_SERVERS", unreachable.as_str()),
            ("KAFKA_TOPIC", "t"),
            ("OIDC_DISABLED", "true"),
            ("KAFKA_PRODUCE_TIMEOUT_MS", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = crate::Config::from_map(&vars).unwrap();
        let producer = KafkaProducer::start(config.kafka);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(tasks() > before, "retrying to connect in the background");
        drop(producer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tasks() > before {
            assert!(
                Instant::now() < deadline,
                "the background task outlived its producer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
