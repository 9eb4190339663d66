//! Counters for `GET /metrics` (Prometheus text format): deliveries by status, batching, tokens.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every status a delivery can be answered with; anything else is counted as `other`.
const STATUSES: [u16; 14] = [
    204, 400, 401, 403, 404, 405, 408, 413, 414, 422, 431, 500, 503, 0,
];

/// Figures read from the rest of the bridge at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gauges {
    /// Produce requests Kafka acknowledged.
    pub(crate) produce_requests: u64,
    /// Records Kafka acknowledged.
    pub(crate) produced_records: u64,
    /// Verified tokens cached.
    pub(crate) cached_tokens: usize,
    /// Deliveries being read or waiting for Kafka.
    pub(crate) inflight_requests: u64,
    /// Body bytes those deliveries hold.
    pub(crate) inflight_bytes: u64,
}

/// Delivery outcomes since start.
#[derive(Debug, Default)]
pub struct Metrics {
    by_status: [AtomicU64; STATUSES.len()],
    duplicates_suppressed: AtomicU64,
}

impl Metrics {
    /// Counts one answered delivery.
    pub(crate) fn record(&self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len() - 1);
        self.by_status[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one redelivery answered without writing (its message's record was acknowledged).
    pub(crate) fn duplicate_suppressed(&self) {
        self.duplicates_suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries answered with `status` so far.
    pub fn count(&self, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == status)
            .map_or(0, |slot| self.by_status[slot].load(Ordering::Relaxed))
    }

    /// The exposition text, with the producer's batching figures, the token cache size and
    /// the in-flight budget in use.
    pub(crate) fn render(&self, gauges: Gauges) -> String {
        let Gauges {
            produce_requests,
            produced_records,
            cached_tokens,
            inflight_requests,
            inflight_bytes,
        } = gauges;
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP pubsub_kafka_bridge_deliveries_total Push deliveries answered, by HTTP status.\n");
        out.push_str("# TYPE pubsub_kafka_bridge_deliveries_total counter\n");
        for (slot, status) in STATUSES.iter().enumerate() {
            let label = if *status == 0 {
                "other".to_owned()
            } else {
                status.to_string()
            };
            let value = self.by_status[slot].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "pubsub_kafka_bridge_deliveries_total{{status=\"{label}\"}} {value}"
            );
        }
        let _ = write!(
            out,
            "# HELP pubsub_kafka_bridge_produce_requests_total Produce requests acknowledged by Kafka.\n\
             # TYPE pubsub_kafka_bridge_produce_requests_total counter\n\
             pubsub_kafka_bridge_produce_requests_total {produce_requests}\n\
             # HELP pubsub_kafka_bridge_produced_records_total Records acknowledged by Kafka.\n\
             # TYPE pubsub_kafka_bridge_produced_records_total counter\n\
             pubsub_kafka_bridge_produced_records_total {produced_records}\n\
             # HELP pubsub_kafka_bridge_verified_tokens Verified push tokens in the cache.\n\
             # TYPE pubsub_kafka_bridge_verified_tokens gauge\n\
             pubsub_kafka_bridge_verified_tokens {cached_tokens}\n\
             # HELP pubsub_kafka_bridge_inflight_requests Deliveries being read or awaiting Kafka.\n\
             # TYPE pubsub_kafka_bridge_inflight_requests gauge\n\
             pubsub_kafka_bridge_inflight_requests {inflight_requests}\n\
             # HELP pubsub_kafka_bridge_inflight_bytes Body bytes held by deliveries in flight.\n\
             # TYPE pubsub_kafka_bridge_inflight_bytes gauge\n\
             pubsub_kafka_bridge_inflight_bytes {inflight_bytes}\n\
             # HELP pubsub_kafka_bridge_duplicates_suppressed_total Redeliveries answered without writing: their message's record was acknowledged.\n\
             # TYPE pubsub_kafka_bridge_duplicates_suppressed_total counter\n\
             pubsub_kafka_bridge_duplicates_suppressed_total {}\n",
            self.duplicates_suppressed.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status_and_renders_prometheus_text() {
        let m = Metrics::default();
        m.record(204);
        m.record(204);
        m.record(503);
        m.record(418);
        m.duplicate_suppressed();
        assert_eq!((m.count(204), m.count(503), m.count(0)), (2, 1, 1));
        let text = m.render(Gauges {
            produce_requests: 3,
            produced_records: 7,
            cached_tokens: 1,
            inflight_requests: 2,
            inflight_bytes: 4096,
        });
        assert!(text.contains("pubsub_kafka_bridge_deliveries_total{status=\"204\"} 2\n"));
        assert!(text.contains("pubsub_kafka_bridge_deliveries_total{status=\"other\"} 1\n"));
        assert!(text.contains("pubsub_kafka_bridge_produced_records_total 7\n"));
        assert!(text.contains("pubsub_kafka_bridge_produce_requests_total 3\n"));
        assert!(text.contains("pubsub_kafka_bridge_verified_tokens 1\n"));
        assert!(text.contains("pubsub_kafka_bridge_inflight_requests 2\n"));
        assert!(text.contains("pubsub_kafka_bridge_inflight_bytes 4096\n"));
        assert!(text.contains("pubsub_kafka_bridge_duplicates_suppressed_total 1\n"));
    }
}
