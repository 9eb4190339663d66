//! Kafka: one connection set made at startup, a batching producer per partition, acks=all.
//!
//! Concurrent deliveries for one partition share a produce request (rskafka's
//! `BatchProducer`, lingering `KAFKA_LINGER_MS`), and each delivery still waits for its own
//! record's offset. rskafka always sends `acks=-1` (all in-sync replicas). Partition counts
//! come from metadata, re-read every `KAFKA_METADATA_REFRESH_MS`.
//!
//! This file is the seam the pipeline sees ([`Produce`], [`Ack`]); behind it:
//! `producer` (the producer pool and the produce path), `metadata` (topic loads),
//! `connection` (connecting, and the task that keeps the connection), `health` (when Kafka
//! last answered), `error` (the error model and its retriable/permanent class),
//! `partition` (choosing a partition), `security`, `oauth` and `secret` (authentication).

mod connection;
mod error;
mod health;
mod metadata;
pub mod oauth;
pub mod partition;
mod producer;
pub(crate) mod secret;
pub(crate) mod security;
pub(crate) mod settings;

use std::future::Future;
use std::time::Duration;

use crate::limits::InflightPermit;
use crate::metrics::ProduceHistograms;
use crate::record::KafkaRecord;

pub(crate) use connection::connect;
pub use error::KafkaError;
pub use producer::KafkaProducer;

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
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

    /// As [`Produce::produce`], and hands the record's final outcome to `settled` whenever it
    /// comes: a produce given up after its record reached the client runs on, and the record
    /// may still be acknowledged after the delivery was answered. Never called for a produce
    /// cancelled before its record was handed over (nothing was sent).
    fn produce_settled(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: Option<InflightPermit>,
        settled: impl FnOnce(&Result<Ack, KafkaError>) + Send + 'static,
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send {
        let produce = self.produce(topic, record, hold);
        async move {
            let result = produce.await;
            settled(&result);
            result
        }
    }

    /// Whether the cluster answered within `window` (readiness).
    fn reached_within(&self, window: Duration) -> bool;

    /// Whether the producer can make progress (liveness), or why not.
    fn liveness(&self) -> Result<(), &'static str> {
        Ok(())
    }

    /// `(produce requests, records)` acknowledged so far (metrics).
    fn produced(&self) -> (u64, u64);

    /// Latency and records per request of the produce requests acknowledged so far (metrics).
    fn produce_histograms(&self) -> ProduceHistograms {
        ProduceHistograms::default()
    }

    /// Whether Kafka answers now (metrics): reached within `window`, and, where the producer
    /// tells, no delivery failed for want of an answer since.
    fn connected_within(&self, window: Duration) -> bool {
        self.reached_within(window)
    }
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

    fn produce_settled(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: Option<InflightPermit>,
        settled: impl FnOnce(&Result<Ack, KafkaError>) + Send + 'static,
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send {
        self.produce_holding_settled(topic, record, hold, settled)
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

    fn produce_histograms(&self) -> ProduceHistograms {
        self.stats().histograms()
    }

    fn connected_within(&self, window: Duration) -> bool {
        Self::connected_within(self, window)
    }
}
