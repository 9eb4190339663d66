//! Bounds on what any client can make the bridge hold: connections, time, body bytes on the
//! wire, and the memory of deliveries in flight. Pure accounting here; the server applies it.

pub(crate) mod settings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Header fields a request head may carry. An unwrapped push carries every attribute as a
/// header: Pub/Sub allows 100 attributes per message ("Quotas and limits": 100 attributes,
/// keys up to 256 bytes, values up to 1,024 bytes), plus its 4 `x-goog-pubsub-*` metadata
/// headers and about 10 of its own (`host`, `authorization`, `content-type`, `content-length`,
/// `user-agent`, `accept-encoding`, `from`, ...); Cloud Run's front end adds about 10 more
/// (`forwarded`, `x-forwarded-for`, `x-forwarded-proto`, `x-cloud-trace-context`, `traceparent`,
/// `x-serverless-authorization`, ...). That is about 125; the rest is margin.
pub const MAX_HEAD_FIELDS: usize = 160;
/// Bytes a request head may take, counted as it is written canonically (the request line,
/// then `name: value` and CRLF per field, then CRLF), whatever whitespace or segmentation it
/// arrived with. 100 attributes at Pub/Sub's limits take 100 × (256 + 2 + 1,024 + 2) =
/// 128,400 bytes; the metadata (a 1 KiB ordering key, a subscription name), a token or two
/// and the front end's headers about 8 KiB more; the rest is margin.
pub const MAX_HEAD_BYTES: usize = 192 << 10;

/// Each body frame (an HTTP/1 chunk or read, an HTTP/2 DATA frame) is charged this much on top
/// of its data. More than its framing (a 9-byte HTTP/2 frame header, 5 bytes around a 1-byte
/// chunk): what it costs is the work of handling one more frame, so a body sent in tiny
/// pieces reaches the limit in proportion to that work, long before its data does. Honest
/// senders' frames (a TCP segment or more) stay well inside the framing allowance.
pub(crate) const FRAME_OVERHEAD: u64 = 64;

/// Memory the process needs besides deliveries (runtime, TLS, Kafka client, buffers).
const BASELINE_MEMORY: u64 = 48 << 20;
/// In-flight budget when no container memory limit is visible.
const UNBOUNDED_DEFAULT_INFLIGHT: u64 = 256 << 20;
/// A body held in memory is copied while it is decoded, encoded and batched for Kafka
/// (measured: 100 parallel 1 MiB deliveries peaked near 4 × their bytes), so the budget counts
/// body bytes against a quarter of the memory left after the baseline.
const AMPLIFICATION: u64 = 4;

/// Time, size and count limits of the HTTP server (all settable, see docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpLimits {
    /// `MAX_CONNECTIONS`: open connections; further clients wait in the listen backlog.
    pub(crate) max_connections: usize,
    /// `HTTP_BODY_IDLE_TIMEOUT_MS`: longest pause between two pieces of a body.
    pub(crate) body_idle_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_MS`: longest time to receive a whole body.
    pub(crate) body_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_MS`: a connection with no request in progress is closed after this.
    pub(crate) idle_timeout: Duration,
    /// `HTTP2_MAX_CONCURRENT_STREAMS`: requests one HTTP/2 connection may have open at once.
    pub(crate) h2_max_streams: u32,
    /// `MAX_INFLIGHT_BYTES` and `MAX_INFLIGHT_REQUESTS`.
    pub(crate) inflight: InflightLimits,
}

/// The memory budget of deliveries in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InflightLimits {
    /// Body bytes held by deliveries not yet answered.
    pub(crate) max_bytes: u64,
    /// Deliveries not yet answered.
    pub(crate) max_requests: u32,
}

impl InflightLimits {
    /// The byte budget for a container with `memory_limit` bytes (none visible: a fixed
    /// default); never below one largest body, so every acceptable delivery can pass alone.
    pub(crate) fn default_bytes(memory_limit: Option<u64>, max_body_bytes: usize) -> u64 {
        let derived = match memory_limit {
            Some(limit) => limit.saturating_sub(BASELINE_MEMORY) / AMPLIFICATION,
            None => UNBOUNDED_DEFAULT_INFLIGHT,
        };
        derived.max(max_body_bytes as u64)
    }
}

/// The container's memory limit from cgroup v2 `memory.max` or cgroup v1
/// `memory.limit_in_bytes`; `None` when unlimited (`max`, or v1's near-`u64::MAX` value) or unreadable.
pub(crate) fn parse_memory_limit(cgroup_v2: Option<&str>, cgroup_v1: Option<&str>) -> Option<u64> {
    // cgroup v1 reports "unlimited" as the largest page-aligned i64.
    const V1_UNLIMITED: u64 = 1 << 60;
    let parse = |text: &str| text.trim().parse::<u64>().ok();
    match cgroup_v2.map(str::trim) {
        Some("max") => None,
        Some(text) => parse(text),
        None => cgroup_v1.and_then(parse).filter(|&n| n < V1_UNLIMITED),
    }
}

/// Reads the container memory limit of this process (Linux cgroups; elsewhere `None`).
///
/// Only the path is fixed here; what is read from it is tested through `memory_limit_under`.
pub(crate) fn container_memory_limit() -> Option<u64> {
    memory_limit_under(std::path::Path::new("/sys/fs/cgroup"))
}

/// The memory limit from the cgroup files under `root` (v2 `memory.max`, else v1).
fn memory_limit_under(root: &std::path::Path) -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(root.join(path)).ok();
    parse_memory_limit(
        read("memory.max").as_deref(),
        read("memory/memory.limit_in_bytes").as_deref(),
    )
}

/// A request head over [`MAX_HEAD_FIELDS`] or [`MAX_HEAD_BYTES`] (431).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadTooLarge {
    /// More header fields than [`MAX_HEAD_FIELDS`].
    #[error("request head has {0} header fields, over the {MAX_HEAD_FIELDS} accepted")]
    Fields(usize),
    /// More bytes than [`MAX_HEAD_BYTES`].
    #[error("request head takes {0} bytes, over the {MAX_HEAD_BYTES} accepted")]
    Bytes(usize),
    /// Refused by the HTTP parser itself while reading it, past the transport's own bounds
    /// (which sit above these; see `server`), so its size was never known.
    #[error("request head over the HTTP parser's bounds")]
    Transport,
}

/// Checks a request head against the head limits. `method` and `target` (the request target,
/// e.g. `/?a=b`) make the request line; the verdict depends only on the parsed head, never on
/// how it arrived.
pub(crate) fn check_head(
    method: &str,
    target: &str,
    headers: &HeaderMap,
) -> Result<(), HeadTooLarge> {
    if headers.len() > MAX_HEAD_FIELDS {
        return Err(HeadTooLarge::Fields(headers.len()));
    }
    // "METHOD SP target SP HTTP/1.1 CRLF" ... "CRLF"
    let mut bytes = method.len() + 1 + target.len() + 11 + 2;
    for (name, value) in headers {
        bytes += name.as_str().len() + 2 + value.len() + 2;
    }
    if bytes > MAX_HEAD_BYTES {
        return Err(HeadTooLarge::Bytes(bytes));
    }
    Ok(())
}

/// Where a body stands against its limits after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyVerdict {
    /// Still within both limits.
    Within,
    /// More data than the limit: an honest oversized body (worth draining for its 413).
    OverData,
    /// Within the data limit but over the wire cost: tiny frames (not worth reading further).
    OverWire,
}

/// What a body costs against the size limit: its data, and its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyMeter {
    limit: usize,
    data: usize,
    wire: u64,
}

impl BodyMeter {
    /// A meter for bodies of at most `limit` data bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            data: 0,
            wire: 0,
        }
    }

    /// Counts one frame of `len` data bytes against the data limit and the wire cost
    /// (`data + FRAME_OVERHEAD` per frame, against the limit plus 1/8 and 64 KiB of framing
    /// allowance: a body at the limit passes in frames of 512 bytes or more).
    pub(crate) fn add_frame(&mut self, len: usize) -> BodyVerdict {
        self.data = self.data.saturating_add(len);
        self.wire = self
            .wire
            .saturating_add(len as u64)
            .saturating_add(FRAME_OVERHEAD);
        if self.data > self.limit {
            BodyVerdict::OverData
        } else if self.wire > self.wire_budget() {
            BodyVerdict::OverWire
        } else {
            BodyVerdict::Within
        }
    }

    /// Wire cost counted so far.
    pub(crate) fn wire(&self) -> u64 {
        self.wire
    }

    fn wire_budget(&self) -> u64 {
        let limit = self.limit as u64;
        limit + limit / 8 + (64 << 10)
    }
}

/// Deliveries past the in-flight budget: answered 503 so Pub/Sub backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// `MAX_INFLIGHT_REQUESTS` deliveries are already waiting.
    #[error("{0} deliveries already in flight")]
    Requests(u32),
    /// Their bodies already hold `MAX_INFLIGHT_BYTES`.
    #[error("in-flight deliveries already hold {0} bytes")]
    Bytes(u64),
}

/// The shared in-flight budget. Taking from it never waits: a delivery that does not fit is
/// refused at once rather than queued, because a queue is memory too.
#[derive(Debug, Clone)]
pub struct InflightBudget {
    limits: InflightLimits,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// One delivery's share of the budget, returned when it is dropped (answered or abandoned).
#[derive(Debug)]
pub struct InflightPermit {
    budget: InflightBudget,
    _request: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
    /// When the delivery's head was admitted: where its latency is measured from.
    admitted: Instant,
}

impl InflightBudget {
    /// A budget of `limits`.
    pub(crate) fn new(limits: InflightLimits) -> Self {
        Self {
            limits,
            requests: Arc::new(Semaphore::new(limits.max_requests as usize)),
            bytes: Arc::new(Semaphore::new(
                limits.max_bytes.min(Semaphore::MAX_PERMITS as u64) as usize,
            )),
        }
    }

    /// Admits one more delivery, holding no bytes yet, whose head was admitted at `admitted`.
    pub(crate) fn admit(&self, admitted: Instant) -> Result<InflightPermit, Overloaded> {
        let request = Arc::clone(&self.requests)
            .try_acquire_owned()
            .map_err(|_| Overloaded::Requests(self.limits.max_requests))?;
        Ok(InflightPermit {
            budget: self.clone(),
            _request: request,
            bytes: None,
            admitted,
        })
    }

    /// Deliveries in flight now.
    pub fn requests_in_flight(&self) -> u64 {
        u64::from(self.limits.max_requests) - self.requests.available_permits() as u64
    }

    /// Body bytes held by deliveries in flight now.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_capacity() - self.bytes.available_permits() as u64
    }

    fn bytes_capacity(&self) -> u64 {
        self.limits.max_bytes.min(Semaphore::MAX_PERMITS as u64)
    }
}

impl InflightPermit {
    /// Grows this delivery's share by `bytes`, or refuses when the budget has no room.
    pub(crate) fn reserve(&mut self, bytes: usize) -> Result<(), Overloaded> {
        if bytes == 0 {
            return Ok(());
        }
        let refused = Overloaded::Bytes(self.budget.limits.max_bytes);
        let count = u32::try_from(bytes).map_err(|_| refused)?;
        let more = Arc::clone(&self.budget.bytes)
            .try_acquire_many_owned(count)
            .map_err(|_| refused)?;
        match &mut self.bytes {
            Some(held) => held.merge(more),
            None => self.bytes = Some(more),
        }
        Ok(())
    }

    /// When the delivery's head was admitted.
    pub(crate) fn admitted(&self) -> Instant {
        self.admitted
    }

    /// Bytes this delivery holds.
    pub(crate) fn reserved(&self) -> usize {
        self.bytes
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head of `fields` fields whose canonical size is exactly `bytes` (the last value padded).
    fn head_of(fields: usize, bytes: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let line = "POST / HTTP/1.1\r\n\r\n".len();
        let mut used = line;
        for i in 0..fields {
            let name = format!("a{i:03}");
            used += name.len() + 4;
            let value = if i + 1 == fields {
                "v".repeat(bytes - used)
            } else {
                String::new()
            };
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn heads_within_the_limits_pass_and_one_field_or_byte_more_does_not() {
        let headers = head_of(MAX_HEAD_FIELDS, MAX_HEAD_BYTES);
        assert_eq!(check_head("POST", "/", &headers), Ok(()));
        let over = head_of(MAX_HEAD_FIELDS, MAX_HEAD_BYTES + 1);
        assert_eq!(
            check_head("POST", "/", &over),
            Err(HeadTooLarge::Bytes(MAX_HEAD_BYTES + 1))
        );
        // The request line counts: one more byte of target is over.
        assert_eq!(
            check_head("POST", "/x", &headers),
            Err(HeadTooLarge::Bytes(MAX_HEAD_BYTES + 1))
        );
        let mut more = head_of(MAX_HEAD_FIELDS, 4096);
        assert_eq!(check_head("POST", "/", &more), Ok(()));
        more.append("a000", "again".parse().unwrap());
        assert_eq!(
            check_head("POST", "/", &more),
            Err(HeadTooLarge::Fields(MAX_HEAD_FIELDS + 1))
        );
    }

    #[test]
    fn pubsubs_largest_unwrapped_push_fits_with_room() {
        // 100 attributes of 256-byte keys and 1 KiB values, the metadata, a token and the
        // front end's headers.
        let mut headers = HeaderMap::new();
        for i in 0..100 {
            let name = format!("{i:03}{}", "k".repeat(253));
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "v".repeat(1024).parse().unwrap(),
            );
        }
        for (name, len) in [
            ("x-goog-pubsub-message-id", 20),
            ("x-goog-pubsub-publish-time", 24),
            ("x-goog-pubsub-subscription-name", 300),
            ("x-goog-pubsub-ordering-key", 1024),
            ("authorization", 1400),
            ("x-serverless-authorization", 1400),
        ] {
            headers.append(name, "x".repeat(len).parse().unwrap());
        }
        for i in 0..24 {
            headers.append(
                http::HeaderName::from_bytes(format!("front-end-{i}").as_bytes()).unwrap(),
                "x".repeat(200).parse().unwrap(),
            );
        }
        assert_eq!(headers.len(), 130);
        assert_eq!(check_head("POST", "/", &headers), Ok(()));
    }

    #[test]
    fn memory_limit_from_cgroup_v2_or_v1() {
        assert_eq!(
            parse_memory_limit(Some("268435456\n"), None),
            Some(256 << 20)
        );
        assert_eq!(parse_memory_limit(Some("max\n"), Some("1024")), None);
        assert_eq!(
            parse_memory_limit(None, Some("536870912\n")),
            Some(512 << 20)
        );
        assert_eq!(parse_memory_limit(None, Some("9223372036854771712")), None);
        assert_eq!(
            parse_memory_limit(None, Some(&(1u64 << 60).to_string())),
            None
        );
        assert_eq!(
            parse_memory_limit(None, Some(&((1u64 << 60) - 1).to_string())),
            Some((1 << 60) - 1)
        );
        assert_eq!(parse_memory_limit(None, None), None);
        assert_eq!(parse_memory_limit(Some("garbage"), None), None);
    }

    #[test]
    fn memory_limit_is_read_from_the_cgroup_files() {
        let root = std::env::temp_dir().join(format!("cgroup-{}", std::process::id()));
        std::fs::create_dir_all(root.join("memory")).unwrap();
        assert_eq!(memory_limit_under(&root), None);
        std::fs::write(root.join("memory/memory.limit_in_bytes"), "536870912\n").unwrap();
        assert_eq!(memory_limit_under(&root), Some(512 << 20));
        std::fs::write(root.join("memory.max"), "268435456\n").unwrap();
        assert_eq!(memory_limit_under(&root), Some(256 << 20));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn byte_budget_follows_the_container_and_fits_one_largest_body() {
        // 256 MiB container: (256 - 48) / 4 = 52 MiB.
        assert_eq!(
            InflightLimits::default_bytes(Some(256 << 20), 16 << 20),
            52 << 20
        );
        assert_eq!(InflightLimits::default_bytes(None, 16 << 20), 256 << 20);
        // A small container still admits one largest body.
        assert_eq!(
            InflightLimits::default_bytes(Some(64 << 20), 16 << 20),
            16 << 20
        );
        assert_eq!(
            InflightLimits::default_bytes(Some(10 << 20), 1 << 20),
            1 << 20
        );
    }

    #[test]
    fn meter_counts_data_against_the_limit() {
        let mut meter = BodyMeter::new(1000);
        assert_eq!(meter.add_frame(600), BodyVerdict::Within);
        assert_eq!(meter.add_frame(400), BodyVerdict::Within);
        assert_eq!(meter.wire(), 1000 + 2 * FRAME_OVERHEAD);
        assert_eq!(meter.add_frame(1), BodyVerdict::OverData);
    }

    #[test]
    fn meter_counts_framing_so_tiny_frames_hit_the_limit_first() {
        let limit = 1 << 20;
        let mut meter = BodyMeter::new(limit);
        let budget = limit as u64 + (limit as u64) / 8 + (64 << 10);
        let frames_allowed = budget / (1 + FRAME_OVERHEAD);
        for _ in 0..frames_allowed {
            assert_eq!(meter.add_frame(1), BodyVerdict::Within);
        }
        assert_eq!(
            meter.add_frame(1),
            BodyVerdict::OverWire,
            "wire {}",
            meter.wire()
        );
        // Under a fiftieth of the limit in data got through.
        assert!(frames_allowed < (limit as u64) / 50);
    }

    #[test]
    fn wire_cost_exactly_at_the_budget_passes() {
        // Limit 1024: budget 1024 + 128 + 65536 = 66688 = 1042 empty frames of 64.
        let mut meter = BodyMeter::new(1024);
        for _ in 0..1042 {
            assert_eq!(meter.add_frame(0), BodyVerdict::Within);
        }
        assert_eq!(meter.wire(), 66_688);
        assert_eq!(meter.add_frame(0), BodyVerdict::OverWire);
    }

    #[test]
    fn honest_large_frames_reach_the_data_limit_exactly() {
        let limit = 16 << 20;
        let mut meter = BodyMeter::new(limit);
        // 512-byte pieces: the framing allowance covers them.
        let mut sent = 0;
        while sent + 512 <= limit {
            assert_eq!(
                meter.add_frame(512),
                BodyVerdict::Within,
                "refused at {sent}"
            );
            sent += 512;
        }
        assert_eq!(meter.add_frame(limit - sent), BodyVerdict::Within);
        assert_eq!(meter.add_frame(1), BodyVerdict::OverData);
    }

    #[test]
    fn budget_counts_requests_and_bytes_and_releases_on_drop() {
        let budget = InflightBudget::new(InflightLimits {
            max_bytes: 100,
            max_requests: 2,
        });
        let mut first = budget.admit(Instant::now()).unwrap();
        first.reserve(60).unwrap();
        first.reserve(0).unwrap();
        assert_eq!(first.reserved(), 60);
        let mut second = budget.admit(Instant::now()).unwrap();
        assert_eq!(
            budget.admit(Instant::now()).unwrap_err(),
            Overloaded::Requests(2)
        );
        assert_eq!(second.reserve(41).unwrap_err(), Overloaded::Bytes(100));
        second.reserve(40).unwrap();
        assert_eq!(budget.bytes_in_flight(), 100);
        assert_eq!(budget.requests_in_flight(), 2);
        drop(first);
        assert_eq!(budget.bytes_in_flight(), 40);
        assert_eq!(budget.requests_in_flight(), 1);
        assert!(budget.admit(Instant::now()).is_ok());
        drop(second);
        assert_eq!(budget.bytes_in_flight(), 0);
        assert_eq!(budget.requests_in_flight(), 0);
    }

    #[test]
    fn reservation_larger_than_u32_is_refused_not_truncated() {
        let budget = InflightBudget::new(InflightLimits {
            max_bytes: u64::MAX,
            max_requests: 1,
        });
        let mut permit = budget.admit(Instant::now()).unwrap();
        assert!(permit.reserve(usize::MAX).is_err());
        assert_eq!(permit.reserved(), 0);
    }
}
