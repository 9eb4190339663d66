//! Quota throttling as the Kafka protocol defines it since KIP-219.
//!
//! A broker that finds a client over its quota still handles the request (a produce request's
//! records are appended) and reports how long the client is throttled in the answer's
//! `throttle_time_ms`. From the KIP-219 version of each API on, it answers at once and the
//! client must not send its next request to that broker before the throttle time has passed
//! (the broker mutes the connection meanwhile); before that version the broker delayed the
//! answer itself, so the throttle is already served when the answer arrives
//! (<https://cwiki.apache.org/confluence/display/KAFKA/KIP-219+-+Improve+quota+communication>;
//! the versions are those of Apache Kafka's `AbstractResponse::shouldClientThrottle`).
//!
//! Patched (see PATCHED.md): a throttled answer is an answer. rskafka 0.6.0 slept for the
//! throttle time and sent the same request again, which wrote a produce request's records twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::warn;

use crate::protocol::{api_key::ApiKey, api_version::ApiVersion, primitives::Int32};

/// The first version of `api_key` whose throttle the client serves (KIP-219), if any.
fn first_client_throttled_version(api_key: ApiKey) -> Option<i16> {
    match api_key {
        ApiKey::Produce => Some(6),
        ApiKey::Fetch => Some(8),
        ApiKey::ListOffsets => Some(3),
        ApiKey::Metadata => Some(6),
        ApiKey::ApiVersions => Some(2),
        ApiKey::CreateTopics => Some(3),
        ApiKey::DeleteTopics => Some(2),
        ApiKey::DeleteRecords => Some(1),
        _ => None,
    }
}

/// How long the client must wait before its next request to the broker that sent this answer.
///
/// `None` when the answer was not throttled, or when the broker already served the throttle by
/// delaying this answer (versions before KIP-219's). A negative time is a broker bug: ignored.
pub(crate) fn client_delay(
    api_key: ApiKey,
    version: ApiVersion,
    throttle_time_ms: Option<Int32>,
) -> Option<Duration> {
    let throttle_time_ms = throttle_time_ms.map(|t| t.0).unwrap_or_default();
    let millis = match u64::try_from(throttle_time_ms) {
        Ok(0) => return None,
        Ok(millis) => millis,
        Err(_) => {
            warn!(throttle_time_ms, "Invalid throttle time");
            return None;
        }
    };
    let first = first_client_throttled_version(api_key)?;
    (version.0.0 >= first).then(|| Duration::from_millis(millis))
}

/// When the client may send its next request to one broker.
#[derive(Debug)]
pub(crate) struct ThrottleGate {
    base: Instant,
    /// Milliseconds after `base` before which no request may go; 0 while open.
    closed_until_ms: AtomicU64,
}

impl ThrottleGate {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            closed_until_ms: AtomicU64::new(0),
        }
    }

    /// Keeps requests back for `delay` from now (or longer, if already closed for longer).
    pub(crate) fn close_for(&self, delay: Duration) {
        let until = self.base.elapsed().saturating_add(delay);
        // Rounded up: a request never leaves before the throttle time has fully passed.
        let until_ms = until.as_nanos().div_ceil(1_000_000).max(1);
        let until_ms = u64::try_from(until_ms).unwrap_or(u64::MAX);
        self.closed_until_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    /// How long requests are still kept back; `None` when one may go now.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let until_ms = self.closed_until_ms.load(Ordering::Acquire);
        if until_ms == 0 {
            return None;
        }
        let remaining = Duration::from_millis(until_ms).saturating_sub(self.base.elapsed());
        (!remaining.is_zero()).then_some(remaining)
    }
}

/// One [`ThrottleGate`] per broker id, shared by every client of a [`crate::client::Client`]: a
/// quota is the broker's view of this client (its user and client id), whichever partition a
/// request is for.
#[derive(Debug, Default)]
pub(crate) struct BrokerThrottles {
    gates: Mutex<std::collections::HashMap<i32, Arc<ThrottleGate>>>,
}

impl BrokerThrottles {
    /// The gate of broker `broker_id`.
    pub(crate) fn gate(&self, broker_id: i32) -> Arc<ThrottleGate> {
        Arc::clone(
            self.gates
                .lock()
                .entry(broker_id)
                .or_insert_with(|| Arc::new(ThrottleGate::new())),
        )
    }
}
