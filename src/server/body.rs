//! Reading one request body into memory within its limits: its deadlines (the pause between
//! frames, the whole body), its size in data and in wire cost, and the in-flight budget; and
//! draining an oversized one so its 413 reaches the client.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::error::DeliveryError;
use crate::limits::{BodyMeter, BodyVerdict, HttpLimits, InflightPermit};

/// An oversized body is read and discarded up to this wire cost so the 413 reaches the client
/// (closing a connection with unread data makes the kernel reset it, losing the answer).
pub(crate) const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// ... and for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A body that could not be taken in, and whether bytes of it are left unread.
pub(crate) struct BodyFailure {
    pub(crate) error: DeliveryError,
    pub(crate) unread: bool,
}

/// Reads a request body of at most `limit` data bytes into memory held by `permit`.
///
/// Bounded every way a client can stretch it: the pause between frames
/// (`HTTP_BODY_IDLE_TIMEOUT_MS`), the whole body (`HTTP_BODY_TIMEOUT_MS`), data bytes and wire
/// cost ([`BodyMeter`]: tiny chunks or frames count their framing), and the in-flight budget.
/// Small frames are copied into one buffer: keeping them as slices would pin every read buffer.
/// That buffer is sized once from `declared` (Content-Length, already within `limit` and
/// reserved in the budget) instead of growing and copying as frames arrive.
pub(crate) async fn read_body(
    mut body: Incoming,
    limit: usize,
    declared: Option<usize>,
    limits: &HttpLimits,
    permit: &mut InflightPermit,
) -> Result<Bytes, BodyFailure> {
    let whole_by = Instant::now() + limits.body_timeout;
    let mut meter = BodyMeter::new(limit);
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        let pause_by = (Instant::now() + limits.body_idle_timeout).min(whole_by);
        let frame = match tokio::time::timeout_at(pause_by, body.frame()).await {
            Ok(frame) => frame,
            Err(_) => {
                let waited = if pause_by == whole_by {
                    limits.body_timeout
                } else {
                    limits.body_idle_timeout
                };
                return Err(BodyFailure {
                    error: DeliveryError::BodyTimeout(waited),
                    unread: true,
                });
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BodyFailure {
            error: DeliveryError::BodyUnreadable(crate::error::bounded_echo(&e.to_string())),
            unread: true,
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match meter.add_frame(data.len()) {
            BodyVerdict::Within => {}
            // An honest oversized body: drained (bounded) so its 413 reaches the client.
            BodyVerdict::OverData => {
                let wire_left = DRAIN_MAX_BYTES.saturating_sub(meter.wire());
                let drained = drain_within(body, limits, wire_left).await;
                return Err(BodyFailure {
                    error: DeliveryError::BodyTooLarge { limit },
                    unread: !drained,
                });
            }
            // Tiny frames: not another one is read.
            BodyVerdict::OverWire => {
                return Err(BodyFailure {
                    error: DeliveryError::BodyTooLarge { limit },
                    unread: true,
                });
            }
        }
        // Beyond what Content-Length already reserved, the budget grows with the data.
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len();
        if held > permit.reserved() {
            permit
                .reserve(held - permit.reserved())
                .map_err(|overloaded| BodyFailure {
                    error: overloaded.into(),
                    unread: true,
                })?;
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.reserve(declared.unwrap_or(0).max(earlier.len() + data.len()));
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    // One frame (the common case) is handed on as is, without a copy.
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// Reads and discards an oversized body so its 413 reaches the client, within
/// [`DRAIN_MAX_BYTES`] of wire cost, [`DRAIN_TIME`] and the body timeouts.
pub(crate) async fn drain(body: Incoming, limits: &HttpLimits) {
    let _ = drain_within(body, limits, DRAIN_MAX_BYTES).await;
}

/// `true` when the body was read to its end.
async fn drain_within(mut body: Incoming, limits: &HttpLimits, max_wire: u64) -> bool {
    let until = Instant::now() + DRAIN_TIME.min(limits.body_timeout);
    let mut wire = 0u64;
    loop {
        let pause_by = (Instant::now() + limits.body_idle_timeout).min(until);
        match tokio::time::timeout_at(pause_by, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len) as u64;
                wire += len + crate::limits::FRAME_OVERHEAD;
                if wire > max_wire {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}
