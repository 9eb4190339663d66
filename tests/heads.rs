//! Request heads at Pub/Sub's limits and past them, over raw TCP through the bridge binary and
//! into a real tansu: an unwrapped push carries every attribute as a header, so Pub/Sub's
//! largest message (100 attributes, 256-byte keys, 1 KiB values) must pass with the headers
//! Cloud Run's front end adds, whole or cut in any segments; a head past the limits is refused
//! 431 the same way however it is cut; and every refusal, the HTTP parser's own included, is
//! counted in /metrics and logged with its code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pubsub_kafka_bridge::limits::{MAX_HEAD_BYTES, MAX_HEAD_FIELDS};
use pubsub_kafka_bridge::server::TRANSPORT_HEAD_BYTES;
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "heads";
const SUBSCRIPTION_ID_LEN: usize = 255;

/// Headers Cloud Run's front end and Pub/Sub's push client put beside the attributes
/// (Cloud Run and Cloud Functions request-header references; Pub/Sub's push user agent).
const FRONT_END: &[(&str, &str)] = &[
    ("content-type", "application/octet-stream"),
    (
        "user-agent",
        "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
    ),
    ("accept-encoding", "gzip, deflate, br"),
    ("from", "noreply@google.com"),
    ("forwarded", "for=\"203.0.113.7\";proto=https"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
    (
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/1;o=1",
    ),
    (
        "traceparent",
        "00-105445aa7843bc8bf206b12000100000-00f067aa0ba902b7-01",
    ),
    ("tracestate", "congo=t61rcWkgMzE"),
    ("via", "1.1 google"),
];

/// The bridge binary (text logs would do; JSON lines are read field by field) against tansu.
struct Run {
    broker: Broker,
    _jwks: JwksServer,
    child: std::process::Child,
    base: String,
    addr: String,
    log: PathBuf,
    token: String,
}

impl Run {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let broker = Broker::start().await;
        broker.create_topic(TOPIC, 1).await;
        let jwks = JwksServer::start(&[key(1)]).await;
        let mut env: HashMap<String, String> = bridge_env(&broker, TOPIC, Some(&jwks));
        env.insert("LOG_FORMAT".into(), "json".into());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let log = std::env::temp_dir().join(format!(
            "pkb-heads-log-{}-{}",
            std::process::id(),
            free_port()
        ));
        let (child, base) = spawn_bridge_process(&env, Some(&log)).await;
        wait_for_status(&http_client(), &format!("{base}/readyz"), 200).await;
        let addr = base.trim_start_matches("http://").to_owned();
        Self {
            broker,
            _jwks: jwks,
            child,
            base,
            addr,
            log,
            token: mint(&key(1), &google_claims()),
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let (_, text) = get(&http_client(), &format!("{}/metrics", self.base)).await;
        metric(&text, name)
    }

    /// Waits (10 s at most) until the metric `name` reads `expected`: a refusal by the HTTP
    /// parser is counted as its connection ends, which its client need not wait for.
    async fn await_metric(&self, name: &str, expected: f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.metric(name).await;
            if value == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} is {value}, not {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The JSON log lines so far.
    fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn refusals_logged(&self, code: &str, status: u64) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l["code"] == code && l["status"] == status)
            .count()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Attribute `i` at Pub/Sub's limits: a 256-byte key (lower case: header names lose their
/// case) and a 1,024-byte value of printable ASCII.
fn attribute(i: usize) -> (String, String) {
    let key = format!("{i:03}-{}", "k".repeat(252));
    let value = (0..1024)
        .map(|j| char::from(b'!' + ((i * 7 + j) % 94) as u8))
        .collect();
    (key, value)
}

fn subscription() -> String {
    format!(
        "projects/test-project/subscriptions/{}",
        "s".repeat(SUBSCRIPTION_ID_LEN)
    )
}

/// An unwrapped push (`write_metadata`) as raw HTTP/1.1: metadata headers, `attributes`,
/// the front end's headers and `extra`, then `data`.
fn unwrapped_push(
    token: &str,
    message_id: &str,
    attributes: &[(String, String)],
    extra: &[(String, String)],
    data: &[u8],
) -> Vec<u8> {
    let mut head = String::from("POST /push HTTP/1.1\r\nhost: bridge-abc-uc.a.run.app\r\n");
    head += &format!("authorization: Bearer {token}\r\n");
    head += &format!("x-goog-pubsub-message-id: {message_id}\r\n");
    head += "x-goog-pubsub-publish-time: 2026-12-05T01:02:03.456Z\r\n";
    head += &format!("x-goog-pubsub-subscription-name: {}\r\n", subscription());
    head += &format!("x-goog-pubsub-ordering-key: {}\r\n", "o".repeat(1024));
    for (name, value) in FRONT_END {
        head += &format!("{name}: {value}\r\n");
    }
    for (name, value) in attributes.iter().chain(extra) {
        head += &format!("{name}: {value}\r\n");
    }
    head += &format!("content-length: {}\r\n\r\n", data.len());
    let mut request = head.into_bytes();
    request.extend_from_slice(data);
    request
}

/// The header fields of a request as the bridge counts them.
fn fields_of(request: &[u8]) -> usize {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    String::from_utf8_lossy(&request[..end]).lines().count() - 1
}

/// Sends `request` in pieces of `segment` bytes (each its own write and TCP segment), then
/// reads one answer: its status and body.
async fn exchange(addr: &str, request: &[u8], segment: usize) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for piece in request.chunks(segment) {
        stream.write_all(piece).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if seen.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&seen[end + 4..end + 4 + length]).into_owned();
                return (status, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("an answer within 30 s")
            .unwrap_or(0);
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Filler header fields (not attributes of any message: only heads past the limits carry
/// them) of `value_len` bytes each.
fn fillers(count: usize, value_len: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (format!("filler-{i:03}"), "f".repeat(value_len)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsubs_largest_unwrapped_push_is_delivered_whole_however_it_is_cut() {
    let run = Run::start(&[]).await;
    let attributes: Vec<_> = (0..100).map(attribute).collect();
    let mut sent = Vec::new();
    for (segment, id) in [(usize::MAX, "whole"), (1400, "mss"), (1, "bytewise")] {
        let request = unwrapped_push(&run.token, id, &attributes, &[], id.as_bytes());
        let (status, body) = exchange(&run.addr, &request, segment).await;
        assert_eq!(status, 204, "{id} in {segment}-byte pieces: {body}");
        sent.push((id, request.len()));
    }
    let head_bytes = sent[0].1 - "whole".len();
    let fields = fields_of(&unwrapped_push(&run.token, "x", &attributes, &[], b""));
    eprintln!("Pub/Sub's largest unwrapped push: {head_bytes} bytes of head, {fields} fields");
    assert!(head_bytes > 128_400 && head_bytes < MAX_HEAD_BYTES);
    assert!(fields > 100 && fields < MAX_HEAD_FIELDS);

    let records = run.broker.read_all(TOPIC).await;
    assert_eq!(records.len(), 3);
    for (record, (id, _)) in records.iter().zip(&sent) {
        assert_eq!(record.record.value.as_deref(), Some(id.as_bytes()));
        assert_eq!(record.header("pubsub.message_id").as_deref(), Some(*id));
        assert_eq!(record.header("pubsub.subscription"), Some(subscription()));
        assert_eq!(record.header("pubsub.ordering_key"), Some("o".repeat(1024)));
        assert_eq!(
            record.record.timestamp.timestamp_millis(),
            1_796_432_523_456
        );
        for (key, value) in &attributes {
            assert_eq!(record.header(key).as_ref(), Some(value), "{id}: {key}");
        }
        // The attributes, the 4 metadata headers and nothing of the transport.
        assert_eq!(record.record.headers.len(), 104, "{id}");
    }
    run.await_metric("pubsub_kafka_bridge_deliveries_total{status=\"204\"}", 3.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_past_the_limits_are_refused_431_however_cut_counted_and_logged() {
    let run = Run::start(&[]).await;
    let attributes: Vec<_> = (0..100).map(attribute).collect();
    let base_fields = fields_of(&unwrapped_push(&run.token, "x", &attributes, &[], b""));

    // Exactly at both limits: MAX_HEAD_FIELDS fields, MAX_HEAD_BYTES bytes. Delivered.
    let mut extra = fillers(MAX_HEAD_FIELDS - base_fields, 8);
    let short = unwrapped_push(&run.token, "limit-0", &attributes, &extra, b"");
    let last = extra.last_mut().unwrap();
    last.1 += &"f".repeat(MAX_HEAD_BYTES - short.len());
    let at_limit = unwrapped_push(&run.token, "limit-0", &attributes, &extra, b"");
    assert_eq!(at_limit.len(), MAX_HEAD_BYTES);
    assert_eq!(fields_of(&at_limit), MAX_HEAD_FIELDS);
    let (status, body) = exchange(&run.addr, &at_limit, 1400).await;
    assert_eq!(status, 204, "{body}");

    // One byte more, one field more: 431 with the JSON error, whole, in 1,400-byte and in
    // 1-byte segments alike.
    extra.last_mut().unwrap().1.push('f');
    let byte_over = unwrapped_push(&run.token, "limit-1", &attributes, &extra, b"");
    assert_eq!(byte_over.len(), MAX_HEAD_BYTES + 1);
    let field_over = unwrapped_push(
        &run.token,
        "limit-2",
        &attributes,
        &fillers(MAX_HEAD_FIELDS + 1 - base_fields, 8),
        b"",
    );
    assert_eq!(fields_of(&field_over), MAX_HEAD_FIELDS + 1);
    let mut refused = 0;
    for (name, request) in [("a byte over", &byte_over), ("a field over", &field_over)] {
        for segment in [usize::MAX, 1400, 1] {
            let (status, body) = exchange(&run.addr, request, segment).await;
            assert_eq!(status, 431, "{name} in {segment}-byte pieces: {body}");
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["error"], "head_too_large", "{body}");
            refused += 1;
        }
    }

    // Past the parser's own bound (a head that never ends): hyper answers 431 itself, the
    // same whole or cut, and it is counted and logged all the same.
    let endless = format!(
        "POST / HTTP/1.1\r\nauthorization: Bearer {}\r\nx-pad: {}",
        run.token,
        "p".repeat(TRANSPORT_HEAD_BYTES)
    );
    let endless = &endless.as_bytes()[..TRANSPORT_HEAD_BYTES];
    for segment in [usize::MAX, 1400] {
        let (status, body) = exchange(&run.addr, endless, segment).await;
        assert_eq!(status, 431, "{segment}-byte pieces: {body}");
        refused += 1;
    }
    let transport_refused = 2;

    // A head that is not HTTP: hyper answers 400; counted and logged too.
    let (status, _) = exchange(
        &run.addr,
        b"POST / HTTP/1.1\r\nhost: b\r\nno colon here\r\n\r\n",
        usize::MAX,
    )
    .await;
    assert_eq!(status, 400);
    // A request target over the parser's 65,534 bytes: hyper answers 414; counted and logged.
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: b\r\n\r\n", "a".repeat(70_000));
    let (status, _) = exchange(&run.addr, long_target.as_bytes(), usize::MAX).await;
    assert_eq!(status, 414);

    run.await_metric("pubsub_kafka_bridge_deliveries_total{status=\"414\"}", 1.0)
        .await;
    assert_eq!(run.refusals_logged("uri_too_long", 414), 1);
    run.await_metric(
        "pubsub_kafka_bridge_deliveries_total{status=\"431\"}",
        refused as f64,
    )
    .await;
    run.await_metric("pubsub_kafka_bridge_deliveries_total{status=\"400\"}", 1.0)
        .await;
    assert_eq!(run.refusals_logged("head_too_large", 431), refused);
    let lines = run.log_lines();
    let by_parser = lines
        .iter()
        .filter(|l| {
            l["code"] == "head_too_large" && l["reason"].as_str().unwrap_or("").contains("parser")
        })
        .count();
    assert_eq!(by_parser, transport_refused, "{lines:#?}");
    assert_eq!(run.refusals_logged("malformed_head", 400), 1);
    // Only the push at the limits reached Kafka.
    assert_eq!(run.broker.message_ids(TOPIC).await, ["limit-0"]);
}
