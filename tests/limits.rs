//! The server's bounds, over raw TCP: token checked from the head before the body is read,
//! deadlines on silent connections and stalled bodies, wire cost of chunk framing, and the
//! in-flight budget. (tests/attacks.py repeats them at scale against the release binary.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn bridge_with(broker: &Broker, jwks: &JwksServer, limits: &[(&str, &str)]) -> Bridge {
    broker.create_topic("limits", 1).await;
    let mut env: HashMap<String, String> = bridge_env(broker, "limits", Some(jwks));
    for (k, v) in limits {
        env.insert((*k).into(), (*v).into());
    }
    Bridge::start(&env).await
}

fn head(token: Option<&str>, extra: &[&str]) -> String {
    let mut lines = vec!["POST / HTTP/1.1".to_owned(), "Host: bridge".to_owned()];
    if let Some(token) = token {
        lines.push(format!("Authorization: Bearer {token}"));
    }
    lines.extend(extra.iter().map(|l| (*l).to_owned()));
    lines.join("\r\n") + "\r\n\r\n"
}

/// Reads until the peer closes or `within` passes; returns what arrived and whether it closed.
async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
        }
    }
}

/// Reads one response head (and what followed it in the same reads).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn body_of(envelope_id: &str) -> String {
    envelope(b"limits", &[], envelope_id, "2025-01-01T00:00:00Z", None).to_string()
}

#[tokio::test]
async fn token_is_checked_from_the_head_before_any_body_byte_or_100_continue() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(&broker, &jwks, &[]).await;

    // No token: 401 at once, no 100 Continue, and the connection is closed (its body unread).
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    let request = head(None, &["Content-Length: 1048576", "Expect: 100-continue"]);
    stream.write_all(request.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("missing_authorization"), "{answer}");
    assert!(closed, "the connection stays open with its body unread");

    // A forged token the same way.
    let forged = mint(&key(2), &google_claims());
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    let request = head(
        Some(&forged),
        &["Content-Length: 1048576", "Expect: 100-continue"],
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(closed);

    // A valid token is told to continue, and its delivery lands.
    let token = mint(&key(1), &google_claims());
    let body = body_of("continued");
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    let length = format!("Content-Length: {}", body.len());
    let request = head(Some(&token), &[&length, "Expect: 100-continue"]);
    stream.write_all(request.as_bytes()).await.unwrap();
    let interim = read_head(&mut stream).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.contains("HTTP/1.1 204 "), "{answer}");
    let records = broker.read_all("limits").await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].header("pubsub.message_id").as_deref(),
        Some("continued")
    );
}

#[tokio::test]
async fn silent_connections_and_stalled_bodies_are_cut_by_their_deadlines() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(
        &broker,
        &jwks,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "400"),
            ("HTTP_BODY_IDLE_TIMEOUT_MS", "400"),
            ("HTTP_BODY_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for opening in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n", b"POST / HT"] {
        let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        silent.push(stream);
    }
    for (i, stream) in silent.iter_mut().enumerate() {
        let (_, closed) = read_until_close(stream, Duration::from_secs(3)).await;
        assert!(closed, "connection {i} still open after 3 s");
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    // A verified body that stops after 10 bytes: 408 after the idle timeout.
    let token = mint(&key(1), &google_claims());
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    let request = head(Some(&token), &["Content-Length: 1000"]) + "{\"message\"";
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(closed);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // A body that trickles a byte every 200 ms never trips the idle timeout, but the whole-body one.
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    let request = head(Some(&token), &["Content-Length: 1000"]);
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
        stream
    };
    let mut stream = trickle.await;
    let (answer, _) = read_until_close(&mut stream, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert!(broker.read_all("limits").await.is_empty());
}

#[tokio::test]
async fn chunk_framing_counts_against_the_body_limit() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(&broker, &jwks, &[("MAX_BODY_BYTES", "65536")]).await;
    let token = mint(&key(1), &google_claims());
    let body = body_of("chunked");
    assert!(body.len() < 1024);

    // The same small body in one chunk is delivered ...
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    let request = head(Some(&token), &["Transfer-Encoding: chunked"])
        + &format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");

    // ... but 20,000 one-byte chunks (20 KB of data, far under the limit in data) are refused:
    // their wire cost is over it.
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    let mut request = head(Some(&token), &["Transfer-Encoding: chunked"]).into_bytes();
    for _ in 0..20_000 {
        request.extend_from_slice(b"1\r\n \r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&request).await;
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert_eq!(broker.read_all("limits").await.len(), 1);
}

#[tokio::test]
async fn deliveries_beyond_the_inflight_budget_are_answered_503_unread() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(
        &broker,
        &jwks,
        &[
            ("MAX_INFLIGHT_REQUESTS", "2"),
            ("MAX_INFLIGHT_BYTES", "4096"),
            ("MAX_BODY_BYTES", "4096"),
        ],
    )
    .await;
    let token = mint(&key(1), &google_claims());
    let client = http_client();
    // One delivery holds 3,000 bytes of the budget while its body is slow to arrive.
    let body = body_of("held");
    let padded = format!("{body}{}", " ".repeat(3000 - body.len()));
    let mut held = TcpStream::connect(bridge.addr).await.unwrap();
    let request = head(Some(&token), &["Content-Length: 3000"]) + &padded[..100];
    held.write_all(request.as_bytes()).await.unwrap();
    let metric = |name: &'static str| {
        let client = client.clone();
        let url = format!("http://{}/metrics", bridge.addr);
        async move {
            let (_, text) = get(&client, &url).await;
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric("pubsub_kafka_bridge_inflight_bytes ").await != 3000 {
        assert!(
            Instant::now() < deadline,
            "the held delivery never reserved its bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 2,000 more bytes do not fit: 503 with Retry-After, and not a byte of the body read.
    let mut refused = TcpStream::connect(bridge.addr).await.unwrap();
    let request = head(Some(&token), &["Content-Length: 2000"]);
    refused.write_all(request.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_close(&mut refused, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("overloaded"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(closed);
    // A small one fits beside it, and takes the second request slot.
    let (status, text) = post(&client, &bridge.url(), body_of("small"), Some(&token)).await;
    assert_eq!(status, 204, "{text}");
    // The held delivery completes; afterwards the budget is whole again.
    held.write_all(&padded.as_bytes()[100..]).await.unwrap();
    let answer = read_head(&mut held).await;
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");
    assert_eq!(metric("pubsub_kafka_bridge_inflight_bytes ").await, 0);
    assert_eq!(metric("pubsub_kafka_bridge_inflight_requests ").await, 0);
    assert_eq!(bridge.service.metrics().count(503), 1);
    assert_eq!(broker.read_all("limits").await.len(), 2);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_http2_included() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(&broker, &jwks, &[("HTTP_IDLE_TIMEOUT_MS", "500")]).await;
    let stream = TcpStream::connect(bridge.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/healthz", bridge.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // Idle from now on (HTTP/2 PINGs do not count): the bridge ends the connection.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "HTTP/2 connection still open after 5 s idle");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

/// The head deadline runs from a head's first bytes, not from the end of the last request: a
/// keep-alive connection may idle (without a byte) up to `HTTP_IDLE_TIMEOUT_MS`, however short
/// `HTTP_HEADER_READ_TIMEOUT_MS` is, while a later head that stalls halfway is cut at the head
/// deadline, long before the idle one.
#[tokio::test]
async fn keep_alive_connections_idle_to_the_idle_timeout_but_a_stalled_later_head_is_cut() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(
        &broker,
        &jwks,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "300"),
            ("HTTP_IDLE_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n";

    // Idle between requests: open past three head deadlines, closed by the idle one.
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    stream.write_all(healthz).await.unwrap();
    assert!(read_head(&mut stream).await.starts_with("HTTP/1.1 200 "));
    let idle_from = Instant::now();
    let (_, closed) = read_until_close(&mut stream, Duration::from_millis(1000)).await;
    assert!(!closed, "closed after {:?} idle", idle_from.elapsed());
    let (_, closed) = read_until_close(&mut stream, Duration::from_secs(3)).await;
    assert!(
        closed,
        "still open {:?} after its last request",
        idle_from.elapsed()
    );
    assert!(idle_from.elapsed() >= Duration::from_millis(1400));

    // A second head, stalled after a few bytes: cut at the head deadline.
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    stream.write_all(healthz).await.unwrap();
    assert!(read_head(&mut stream).await.starts_with("HTTP/1.1 200 "));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let stalled_from = Instant::now();
    let (answer, closed) = read_until_close(&mut stream, Duration::from_secs(3)).await;
    assert!(closed, "a stalled head kept its connection open");
    assert_eq!(answer, "", "nothing is answered to half a head");
    let waited = stalled_from.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1200),
        "{waited:?}"
    );
}

/// Header bytes that are not text (obs-text, invalid UTF-8) in `Authorization` are an invalid
/// token: 401 from the head, the connection still usable, nothing produced.
#[tokio::test]
async fn an_authorization_value_that_is_not_text_is_an_invalid_token() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(&broker, &jwks, &[]).await;
    let body = body_of("not-text");
    let mut request =
        b"POST / HTTP/1.1\r\nHost: bridge\r\nAuthorization: Bearer ey\xff\xfe.e30.c2ln\r\n"
            .to_vec();
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(answer.contains("invalid_token"), "{answer}");
    assert!(broker.read_all("limits").await.is_empty());
}

/// The head deadline times every head, also one whose first bytes came in the same read as
/// the request before it (and so sit in the parser's buffer, where no later read shows them):
/// a request and the start of the next in one write, then nothing, is closed at the head
/// deadline, not the idle one. Both ways such bytes arrive: behind a request without a body,
/// and behind a body counted off by its Content-Length.
#[tokio::test]
async fn a_head_begun_in_the_same_read_as_the_request_before_it_is_cut_at_the_head_deadline() {
    let broker = Broker::start().await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = bridge_with(
        &broker,
        &jwks,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "300"),
            ("HTTP_IDLE_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    let token = mint(&key(1), &google_claims());
    let body = body_of("pipelined");
    let length = format!("Content-Length: {}", body.len());
    let delivery = head(Some(&token), &[&length]) + &body;
    for (first, expected) in [
        (
            "GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n".to_owned(),
            "HTTP/1.1 200 ",
        ),
        (delivery, "HTTP/1.1 204 "),
    ] {
        let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
        let started = Instant::now();
        stream
            .write_all(format!("{first}GET /healthz HTTP/1.1\r\nHo").as_bytes())
            .await
            .unwrap();
        let (answer, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
        let waited = started.elapsed();
        assert!(
            closed,
            "{expected}: still open after {waited:?} with half a head"
        );
        assert!(answer.starts_with(expected), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(2500),
            "{expected}: closed after {waited:?}"
        );
    }
    assert_eq!(broker.message_ids("limits").await, ["pipelined"]);
}
