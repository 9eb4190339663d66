//! The benchmark: the release bridge under signed push load, next to the two limits it sits
//! between (Kafka itself through rskafka, and a no-op hyper endpoint), plus cold start and the
//! token-verification cache. Run with `infra/bench.sh` (or `cargo bench --bench bridge`).
//!
//! Everything runs on this machine: tansu on loopback, the bridge as its own process, the load
//! generator here. Figures are printed, never asserted.
#![allow(
    clippy::disallowed_methods,
    reason = "the bench reads its own settings and whole answers"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::producer::BatchProducerBuilder;
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::record::Record;

const CONCURRENCY: usize = 64;
const TOPIC: &str = "bench";
const PARTITIONS: i32 = 3;

struct Run {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summarize(count: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Run {
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    Run {
        per_second: count as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }
}

/// Push bodies with unique message ids; the payload's base64 is computed once.
struct Bodies {
    encoded: String,
    run: String,
}

impl Bodies {
    fn new(size: usize, run: &str) -> Self {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        Self {
            encoded: base64::engine::general_purpose::STANDARD.encode(payload),
            run: run.to_owned(),
        }
    }
    fn body(&self, i: usize) -> Bytes {
        Bytes::from(format!(
            r#"{{"message":{{"data":"{}","attributes":{{"source":"bench","seq":"{i}"}},"messageId":"{}-{i}","publishTime":"2026-11-24T10:00:00.123456Z"}},"subscription":"projects/bench/subscriptions/push"}}"#,
            self.encoded, self.run
        ))
    }
}

/// The linger of both the bridge and the direct-to-Kafka producers (`KAFKA_LINGER_MS`, default 0
/// as in the bridge), so the two see the same batching.
fn linger_ms() -> u64 {
    std::env::var("KAFKA_LINGER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `count` POSTs over `CONCURRENCY` keep-alive connections; every answer must be `expect`.
async fn http_load(url: &str, token: &str, bodies: &Bodies, count: usize, expect: u16) -> Run {
    let client = http_client();
    let (url, auth) = (url.to_owned(), format!("Bearer {token}"));
    let bodies = Arc::new(Bodies {
        encoded: bodies.encoded.clone(),
        run: bodies.run.clone(),
    });
    closed_loop(count, move |i| {
        // The request is built before the clock starts; only the exchange is timed.
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .header("authorization", &auth)
            .body(Full::new(bodies.body(i)))
            .unwrap();
        let client = client.clone();
        async move {
            let (status, text) = send(&client, request).await;
            assert_eq!(status, expect, "{text}");
        }
    })
    .await
}

/// The same records produced straight to the broker: one batching producer per partition,
/// `CONCURRENCY` callers each waiting for its own record, as the bridge does.
async fn kafka_load(broker: &Broker, size: usize, count: usize) -> Run {
    let client = broker.client().await.unwrap();
    let mut producers = Vec::new();
    for p in 0..PARTITIONS {
        let pc = Arc::new(
            client
                .partition_client(TOPIC, p, UnknownTopicHandling::Retry)
                .await
                .unwrap(),
        );
        producers.push(Arc::new(
            BatchProducerBuilder::new(pc)
                .with_linger(Duration::from_millis(linger_ms()))
                .with_compression(Compression::NoCompression)
                .build(RecordAggregator::new(1 << 20)),
        ));
    }
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    closed_loop(count, move |i| {
        let headers = [
            ("source", "bench".to_owned()),
            ("seq", i.to_string()),
            ("pubsub.message_id", format!("direct-{i}")),
            (
                "pubsub.publish_time",
                "2026-11-24T10:00:00.123456Z".to_owned(),
            ),
            (
                "pubsub.subscription",
                "projects/bench/subscriptions/push".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect();
        let record = Record {
            key: None,
            value: Some(payload.clone()),
            headers,
            timestamp: chrono::Utc::now(),
        };
        let producer = Arc::clone(&producers[i % producers.len()]);
        async move {
            producer.produce(record).await.unwrap();
        }
    })
    .await
}

/// `count` operations from `CONCURRENCY` callers, each starting its next one when the last
/// finished (the load shape of Pub/Sub's push window). `op(i)` prepares operation `i` before
/// the clock starts; the future it returns is what is timed.
async fn closed_loop<F, Fut>(count: usize, op: F) -> Run
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (op, next) = (op.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return latencies;
                    }
                    let operation = op(i);
                    let sent = Instant::now();
                    operation.await;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    summarize(count, started.elapsed(), latencies)
}

/// A no-op endpoint: hyper reads the body and answers 204. Run as its own process.
async fn noop_server(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .status(204)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
        });
    }
}

/// User and system CPU seconds and peak RSS (KiB) of a process, from /proc.
fn process_usage(pid: u32) -> (f64, u64) {
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let cpu = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu / ticks, hwm)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn spawn_bridge(broker: &Broker, jwks: &JwksServer, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pubsub-kafka-bridge"))
        .env_clear()
        .env("PORT", port.to_string())
        .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("KAFKA_TOPIC", TOPIC)
        .env("OIDC_AUDIENCE", AUDIENCE)
        .env("OIDC_JWKS_URL", &jwks.url)
        .env("OIDC_ALLOWED_EMAILS", PUSH_EMAIL)
        .env("RUST_LOG", "warn")
        // Lingers can be compared: KAFKA_LINGER_MS=5 infra/bench.sh --quick
        .env("KAFKA_LINGER_MS", linger_ms().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Process start → /readyz 200, and process start → first 204.
async fn cold_start(broker: &Broker, jwks: &JwksServer, token: &str) -> (Duration, Duration) {
    let client = http_client();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let body = Bodies::new(100, "cold").body(0);
    let started = Instant::now();
    let mut child = spawn_bridge(broker, jwks, port);
    let first_204 = loop {
        let request = http::Request::post(format!("{base}/"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(body.clone()))
            .unwrap();
        if send(&client, request).await.0 == 204 {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let started = Instant::now();
    let mut child = spawn_bridge(broker, jwks, port);
    let ready = loop {
        if get(&client, &format!("{base}/readyz")).await.0 == 200 {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    (ready, first_204)
}

/// Verification cost per delivery: one token reused (cached) vs a new token each time (RSA verify).
async fn token_cache(jwks: &JwksServer) -> (f64, f64) {
    let verifier =
        pubsub_kafka_bridge::auth::Verifier::new(pubsub_kafka_bridge::config::OidcConfig {
            audience: AUDIENCE.into(),
            allowed_emails: Some(vec![PUSH_EMAIL.into()]),
            trust_cloud_run_iam: false,
            jwks_url: jwks.url.parse().unwrap(),
            issuers: vec!["https://accounts.google.com".into()],
            leeway_seconds: 30,
            jwks_ca_location: None,
        })
        .unwrap();
    verifier.warm_up().await.unwrap();
    let distinct: Vec<String> = (0..300)
        .map(|n| {
            let mut claims = google_claims();
            claims["jti"] = n.into();
            format!("Bearer {}", mint(&key(1), &claims))
        })
        .collect();
    let started = Instant::now();
    for token in &distinct {
        verifier.verify(Some(token), now()).await.unwrap();
    }
    let uncached = started.elapsed().as_secs_f64() * 1e6 / distinct.len() as f64;
    let reused = &distinct[0];
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        verifier.verify(Some(reused), now()).await.unwrap();
    }
    let cached = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    (uncached, cached)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--noop-server") {
        noop_server(args[i + 1].parse().unwrap()).await;
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };

    let broker = Broker::start().await;
    broker.create_topic(TOPIC, PARTITIONS).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let token = mint(&key(1), &google_claims());

    let bridge_port = free_port();
    let mut bridge = spawn_bridge(&broker, &jwks, bridge_port);
    let noop_port = free_port();
    let mut noop = Command::new(std::env::current_exe().unwrap())
        .args(["--noop-server", &noop_port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = http_client();
    let base = format!("http://127.0.0.1:{bridge_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&client, &format!("{base}/readyz")).await.0 != 200 {
        assert!(Instant::now() < deadline, "bridge not ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while get(&client, &format!("http://127.0.0.1:{noop_port}/"))
        .await
        .0
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Warm-up: connections, JWKS, partition producers.
    http_load(
        &format!("{base}/"),
        &token,
        &Bodies::new(100, "warm"),
        2_000 / scale,
        204,
    )
    .await;

    println!(
        "pubsub-kafka-bridge benchmark: {} cores, {CONCURRENCY} concurrent connections, KAFKA_LINGER_MS={}, tansu (memory storage) on loopback, topic with {PARTITIONS} partitions",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        linger_ms()
    );
    println!();
    println!(
        "| payload | bridge deliveries/s | ÷ Kafka limit | ÷ HTTP limit | p50 ms | p99 ms | max ms | records/request | CPU s per 10k | Kafka limit rec/s | HTTP limit req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = HashMap::new();
    for (size, count) in [(100usize, 30_000usize), (1024, 30_000), (65_536, 3_000)] {
        let count = count / scale;
        let before = get(&client, &format!("{base}/metrics")).await.1;
        let (cpu_before, _) = process_usage(bridge.id());
        let run = http_load(
            &format!("{base}/"),
            &token,
            &Bodies::new(size, &format!("b{size}")),
            count,
            204,
        )
        .await;
        let (cpu_after, _) = process_usage(bridge.id());
        let after = get(&client, &format!("{base}/metrics")).await.1;
        let requests = metric(&after, "pubsub_kafka_bridge_produce_requests_total")
            - metric(&before, "pubsub_kafka_bridge_produce_requests_total");
        let records = metric(&after, "pubsub_kafka_bridge_produced_records_total")
            - metric(&before, "pubsub_kafka_bridge_produced_records_total");
        let kafka = kafka_load(&broker, size, count).await;
        let noop = http_load(
            &format!("http://127.0.0.1:{noop_port}/"),
            &token,
            &Bodies::new(size, "noop"),
            count,
            204,
        )
        .await;
        let label = if size >= 1024 {
            format!("{} KiB", size / 1024)
        } else {
            format!("{size} B")
        };
        println!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} |",
            run.per_second,
            run.per_second / kafka.per_second,
            run.per_second / noop.per_second,
            run.p50_ms,
            run.p99_ms,
            run.max_ms,
            records / requests.max(1.0),
            (cpu_after - cpu_before) * 10_000.0 / count as f64,
            kafka.per_second,
            noop.per_second,
        );
        rows.insert(size, run.per_second);
    }
    let (_, peak_rss_kib) = process_usage(bridge.id());
    let _ = bridge.kill();
    let _ = bridge.wait();
    let _ = noop.kill();
    let _ = noop.wait();
    println!();
    println!(
        "bridge peak RSS over the whole run: {:.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    let (ready, first) = cold_start(&broker, &jwks, &token).await;
    println!(
        "cold start: process start → /readyz 200 in {:.1} ms; process start → first 204 in {:.1} ms",
        ready.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );
    let (uncached, cached) = token_cache(&jwks).await;
    println!(
        "token verification: {uncached:.1} µs per new token (RSA), {cached:.2} µs per reused token (cache): {:.0}× cheaper",
        uncached / cached
    );
}
