//! Health: when Kafka last answered and since when deliveries fail for want of an answer, read
//! by readiness and liveness.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::KafkaError;
use super::producer::KafkaProducer;

/// `/healthz` fails after this many `KAFKA_REQUEST_TIMEOUT_MS` without a successful Kafka round
/// trip while deliveries fail for want of an answer: a silent connection is replaced within
/// about one request timeout, so six mean the client is not repairing itself.
pub(crate) const STALL_REQUEST_TIMEOUTS: u32 = 6;

/// Whether Kafka, reached once (`last_contact_ms`), has not answered for longer than `bound`
/// since deliveries began to fail (`failing_since_ms`); 0 means never / not failing.
fn stalled(last_contact_ms: u64, failing_since_ms: u64, now_ms: u64, bound: Duration) -> bool {
    last_contact_ms != 0
        && failing_since_ms != 0
        && now_ms.saturating_sub(failing_since_ms) > bound.as_millis() as u64
}

impl KafkaProducer {
    /// Notes an answer from Kafka: it is reached, and nothing fails for want of an answer.
    pub(super) fn touch(&self) {
        let ms = self.now_ms();
        self.inner.last_contact_ms.store(ms, Ordering::Relaxed);
        self.inner.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// Milliseconds since start, at least 1 (0 means "never" in `last_contact_ms` and
    /// `failing_since_ms`).
    fn now_ms(&self) -> u64 {
        (self.inner.started.elapsed().as_millis() as u64).max(1)
    }

    /// Notes a delivery that Kafka did not answer (timed out, or no connection).
    pub(super) fn note_unanswered(&self, error: &KafkaError) {
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
    pub(crate) fn liveness(&self) -> Result<(), &'static str> {
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

    /// Whether Kafka answers now (the connection gauge): it answered within `window`, and no
    /// delivery has failed for want of an answer since. A cluster that stops answering shows at
    /// the first delivery that times out, or, without deliveries, when `window` has passed
    /// without a metadata read.
    pub(crate) fn connected_within(&self, window: Duration) -> bool {
        self.reached_within(window) && self.inner.failing_since_ms.load(Ordering::Relaxed) == 0
    }

    /// Whether the cluster answered within `window` (readiness).
    pub(crate) fn reached_within(&self, window: Duration) -> bool {
        let last = self.inner.last_contact_ms.load(Ordering::Relaxed);
        last != 0
            && self.inner.started.elapsed().as_millis() as u64 <= last + window.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
