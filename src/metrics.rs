//! Counters for `GET /metrics` (Prometheus text format): deliveries by status, batching, tokens.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every status a delivery can be answered with; anything else is counted as `other`.
const STATUSES: [u16; 11] = [204, 400, 401, 403, 404, 405, 413, 422, 500, 503, 0];

/// Delivery outcomes since start.
#[derive(Debug, Default)]
pub struct Metrics {
    by_status: [AtomicU64; STATUSES.len()],
}

impl Metrics {
    /// Counts one answered delivery.
    pub fn record(&self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len() - 1);
        self.by_status[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries answered with `status` so far.
    pub fn count(&self, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == status)
            .map_or(0, |slot| self.by_status[slot].load(Ordering::Relaxed))
    }

    /// The exposition text, with the producer's batching figures and the token cache size.
    pub fn render(
        &self,
        produce_requests: u64,
        produced_records: u64,
        cached_tokens: usize,
    ) -> String {
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
             pubsub_kafka_bridge_verified_tokens {cached_tokens}\n"
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
        assert_eq!((m.count(204), m.count(503), m.count(0)), (2, 1, 1));
        let text = m.render(3, 7, 1);
        assert!(text.contains("pubsub_kafka_bridge_deliveries_total{status=\"204\"} 2\n"));
        assert!(text.contains("pubsub_kafka_bridge_deliveries_total{status=\"other\"} 1\n"));
        assert!(text.contains("pubsub_kafka_bridge_produced_records_total 7\n"));
    }
}
