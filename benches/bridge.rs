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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::producer::BatchProducerBuilder;
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::record::Record;
use test_support::*;

const CONCURRENCY: usize = 64;
const TOPIC: &str = "bench";
const PARTITIONS: i32 = 3;

struct Run {
    /// Acknowledged (204) operations per second.
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Operations refused (503 overloaded and the like), each retried after a pause.
    refused: usize,
}

fn summarize(elapsed: Duration, mut latencies: Vec<Duration>, refused: usize) -> Run {
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        refused,
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

/// The bridge's runtime worker threads (`TOKIO_WORKER_THREADS`, default 1): one, as on a
/// Cloud Run instance of 1 vCPU (the Terraform module's default), where tokio starts one.
/// Here the broker and the load generator share the two cores, so a second worker mostly
/// adds wake-ups; `TOKIO_WORKER_THREADS=2 infra/bench.sh` measures that shape.
fn worker_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
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
    closed_loop(
        CONCURRENCY,
        Until::Count(count),
        || (),
        move |(), i| {
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
                ((), true)
            }
        },
    )
    .await
}

/// How long a closed loop runs.
#[derive(Clone, Copy)]
enum Until {
    /// This many operations in all.
    Count(usize),
    /// Operations keep starting until this much time has passed.
    Elapsed(Duration),
}

/// Operations from `concurrency` callers, each starting its next one when the last finished
/// (the load shape of Pub/Sub's push window), until `until`. Each caller owns a state made by
/// `caller` (a connection, say), which `op(state, i)` takes and hands back. `op` prepares
/// operation `i` before the clock starts; the future it returns is what is timed, and says
/// whether the operation was acknowledged. A refused one is counted, not timed, and its caller
/// pauses 100 ms before the next (Pub/Sub backs off after a negative ack).
async fn closed_loop<S, F, Fut>(
    concurrency: usize,
    until: Until,
    caller: impl Fn() -> S,
    op: F,
) -> Run
where
    S: Send + 'static,
    F: Fn(S, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (S, bool)> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next, mut state) = (op.clone(), Arc::clone(&next), caller());
            tokio::spawn(async move {
                let (mut latencies, mut refused) = (Vec::new(), 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let done = match until {
                        Until::Count(count) => i >= count,
                        Until::Elapsed(limit) => started.elapsed() >= limit,
                    };
                    if done {
                        return (latencies, refused);
                    }
                    let operation = op(state, i);
                    let sent = Instant::now();
                    let acknowledged;
                    (state, acknowledged) = operation.await;
                    if acknowledged {
                        latencies.push(sent.elapsed());
                    } else {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    let (mut latencies, mut refused) = (Vec::new(), 0);
    for w in workers {
        let (mine, theirs) = w.await.unwrap();
        latencies.extend(mine);
        refused += theirs;
    }
    summarize(started.elapsed(), latencies, refused)
}

/// Prepared signed pushes: each a whole HTTP/1.1 request (head and body in one buffer), built
/// before any clock starts.
fn prepared_pushes(addr: SocketAddr, token: &str, bodies: &[Bytes]) -> Arc<Vec<Bytes>> {
    Arc::new(
        bodies
            .iter()
            .map(|body| {
                let mut request = format!(
                    "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                     authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(body);
                Bytes::from(request)
            })
            .collect(),
    )
}

/// One keep-alive connection of the load generator: writes a prepared request, reads the
/// answer's head (and body, if any) with hyper's parser, as wrk does. A pooled HTTP client
/// cost the machine about as much CPU per request as the bridge itself; this costs a few µs,
/// so the cores the bridge shares with its load and the broker go to them.
struct PushConnection {
    addr: SocketAddr,
    stream: Option<tokio::net::TcpStream>,
    received: Vec<u8>,
}

/// What became of one push.
enum Answer {
    /// 204: acknowledged.
    Acknowledged,
    /// 503, or the connection closed under it: Pub/Sub takes either as a negative ack.
    Refused,
    /// Anything else, with the answer for the panic message.
    Unexpected(String),
}

impl PushConnection {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            received: Vec::with_capacity(4096),
        }
    }

    async fn push(&mut self, request: &[u8]) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let Ok(stream) = tokio::net::TcpStream::connect(self.addr).await else {
                return Answer::Refused;
            };
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
            self.received.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        if stream.write_all(request).await.is_err() {
            self.stream = None;
            return Answer::Refused;
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = response.parse(&self.received) {
                let status = response.code.unwrap_or(0);
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
                let closes = header("connection").is_some_and(|v| v == "close");
                let end = head + length;
                if self.received.len() >= end {
                    let text = String::from_utf8_lossy(&self.received[head..end]).into_owned();
                    self.received.drain(..end);
                    if closes {
                        self.stream = None;
                    }
                    return match status {
                        204 => Answer::Acknowledged,
                        503 => Answer::Refused,
                        _ => Answer::Unexpected(format!("{status}: {text}")),
                    };
                }
            }
            let stream = self.stream.as_mut().expect("open while reading");
            if self.received.capacity() == self.received.len() {
                self.received.reserve(4096);
            }
            match stream.read_buf(&mut self.received).await {
                Ok(0) | Err(_) => {
                    self.stream = None;
                    return Answer::Refused;
                }
                Ok(_) => {}
            }
        }
    }
}

/// Pushes from `concurrency` keep-alive connections, each sending its next request when the
/// last was answered (the load shape of Pub/Sub's push window), cycling through `requests`
/// until `until`. Only the exchange is timed. A refused push is counted, not timed, and its
/// connection pauses 100 ms before the next (Pub/Sub backs off after a negative ack); with
/// `strict`, a refusal is an error like any answer but 204.
///
/// The load runs on a thread and single-threaded runtime of its own, as wrk's one thread does:
/// spread over the bench's multi-threaded runtime it cost the cores more in wake-ups between
/// threads than in its own work.
async fn push_load(
    addr: SocketAddr,
    requests: Arc<Vec<Bytes>>,
    concurrency: usize,
    until: Until,
    strict: bool,
) -> Run {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(push_load_here(addr, requests, concurrency, until, strict))
    })
    .await
    .unwrap()
}

async fn push_load_here(
    addr: SocketAddr,
    requests: Arc<Vec<Bytes>>,
    concurrency: usize,
    until: Until,
    strict: bool,
) -> Run {
    let caller = move || PushConnection::new(addr);
    closed_loop(concurrency, until, caller, move |mut connection, i| {
        let requests = Arc::clone(&requests);
        async move {
            let acknowledged = match connection.push(&requests[i % requests.len()]).await {
                Answer::Acknowledged => true,
                Answer::Refused if !strict => false,
                Answer::Refused => panic!("push refused (503 or connection closed)"),
                Answer::Unexpected(answer) => panic!("unexpected answer {answer}"),
            };
            (connection, acknowledged)
        }
    })
    .await
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

/// The no-op endpoint as a process of its own, fresh for every measurement as the broker is.
struct NoopServer {
    port: u16,
    _process: KillOnDrop,
}

impl NoopServer {
    async fn start(client: &HttpClient) -> Self {
        let port = free_port();
        let process = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args(["--noop-server", &port.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        while get(client, &format!("http://127.0.0.1:{port}/")).await.0 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            port,
            _process: process,
        }
    }
}

/// CPU seconds and peak RSS of a process, from /proc.
struct Usage {
    user: f64,
    system: f64,
    peak_kib: u64,
}

impl Usage {
    fn cpu(&self) -> f64 {
        self.user + self.system
    }
}

/// User and system CPU seconds and peak RSS (KiB) of a process, from /proc.
fn process_usage(pid: u32) -> Usage {
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
    let seconds = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
            / ticks
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Usage {
        user: seconds(11),
        system: seconds(12),
        peak_kib,
    }
}

/// Starts the release bridge; with `BENCH_BRIDGE_UNDER` set (say `valgrind --tool=callgrind`),
/// under that command, to profile the whole server with `--profile`.
fn spawn_bridge(broker: &Broker, jwks: &JwksServer, port: u16) -> Child {
    let bridge = env!("CARGO_BIN_EXE_pubsub-kafka-bridge");
    let under = std::env::var("BENCH_BRIDGE_UNDER").unwrap_or_default();
    let mut command = match under.split_whitespace().collect::<Vec<_>>().split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bridge);
            command
        }
        None => Command::new(bridge),
    };
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("KAFKA_TOPIC", TOPIC)
        .env("OIDC_AUDIENCE", AUDIENCE)
        .env("OIDC_JWKS_URL", &jwks.url)
        .env("OIDC_ALLOWED_EMAILS", PUSH_EMAIL)
        .env("RUST_LOG", "warn")
        // Lingers can be compared: KAFKA_LINGER_MS=5 infra/bench.sh --quick
        .env("KAFKA_LINGER_MS", linger_ms().to_string())
        // tokio's own setting for its worker count (README, Performance).
        .env("TOKIO_WORKER_THREADS", worker_threads().to_string())
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
        verifier
            .verify(Some(token.as_bytes()), now())
            .await
            .unwrap();
    }
    let uncached = started.elapsed().as_secs_f64() * 1e6 / distinct.len() as f64;
    let reused = &distinct[0];
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        verifier
            .verify(Some(reused.as_bytes()), now())
            .await
            .unwrap();
    }
    let cached = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    (uncached, cached)
}

/// A pool of push bodies of `size`, each with its own message id, shared by all callers:
/// building a 1 MiB body per request would load the cores the bridge is measured on.
fn body_pool(size: usize, run: &str) -> Arc<Vec<Bytes>> {
    let bodies = Bodies::new(size, run);
    let distinct = if size >= 1 << 20 { 16 } else { 256 };
    Arc::new((0..distinct).map(|i| bodies.body(i)).collect())
}

/// Example prices for the cost column: Cloud Run, Tier 1 region, request-based billing, as
/// cloud.google.com/run/pricing listed them (stored copy read 2026-12-02). Prices change;
/// pass your own with `--price-vcpu-second`, `--price-gib-second`, `--price-million-requests`.
struct Prices {
    vcpu_second: f64,
    gib_second: f64,
    million_requests: f64,
}

/// Instance shape the cost column assumes: 1 vCPU, 512 MiB.
const COST_VCPUS: f64 = 1.0;
const COST_GIB: f64 = 0.5;

/// Compute cost of a million deliveries when CPU is what the instance is busy with: an instance
/// kept at full CPU spends `cpu / COST_VCPUS` seconds per delivery (the request fee aside).
fn compute_cost_cpu_bound(cpu: f64, prices: &Prices) -> f64 {
    let busy_seconds = 1e6 * cpu / COST_VCPUS;
    busy_seconds * (COST_VCPUS * prices.vcpu_second + COST_GIB * prices.gib_second)
}

/// Compute cost of a million deliveries billed by busy time at the measured rate: request-based
/// billing charges an instance for as long as any request is in flight, which in a closed loop
/// of `per_second` deliveries is all the time.
fn compute_cost_busy(per_second: f64, prices: &Prices) -> f64 {
    1e6 / per_second.max(f64::MIN_POSITIVE)
        * (COST_VCPUS * prices.vcpu_second + COST_GIB * prices.gib_second)
}

/// The scaling table: deliveries/s, latency, batching, peak RSS and cost for every
/// concurrency × payload size. Each cell gets a bridge process of its own (started, warmed,
/// measured for `seconds`, stopped), so its peak RSS and CPU are its own.
async fn scaling(jwks: &JwksServer, token: &str, seconds: f64, prices: &Prices) {
    println!(
        "scaling: a fresh bridge process per cell (TOKIO_WORKER_THREADS={}, MAX_INFLIGHT_BYTES default 256 MiB), {seconds} s per cell; a refused delivery is retried after 100 ms",
        worker_threads()
    );
    println!();
    println!(
        "| payload | concurrency | deliveries/s | refused/s | p50 ms | p99 ms | records/request | peak RSS MiB | CPU µs/delivery | compute $/1M, CPU-bound | compute $/1M, busy time at this rate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for size in [100usize, 1024, 65_536, 1 << 20] {
        let pool = body_pool(size, &format!("s{size}"));
        for concurrency in [1usize, 8, 64, 256, 1000] {
            let broker = fresh_broker().await;
            let port = free_port();
            let bridge = KillOnDrop(spawn_bridge(&broker, jwks, port));
            let base = format!("http://127.0.0.1:{port}");
            let client = http_client();
            wait_for_status(&client, &format!("{base}/readyz"), 200).await;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let requests = prepared_pushes(addr, token, &pool);
            // Connections opened, keys fetched and partitions loaded before the cell is measured.
            push_load(
                addr,
                Arc::clone(&requests),
                concurrency,
                Until::Count(concurrency * 2),
                false,
            )
            .await;
            let before = get(&client, &format!("{base}/metrics")).await.1;
            let cpu_before = process_usage(bridge.0.id()).cpu();
            let run = push_load(
                addr,
                requests,
                concurrency,
                Until::Elapsed(Duration::from_secs_f64(seconds)),
                false,
            )
            .await;
            let after_run = process_usage(bridge.0.id());
            let (cpu_after, peak_kib) = (after_run.cpu(), after_run.peak_kib);
            let after = get(&client, &format!("{base}/metrics")).await.1;
            drop(bridge);
            let delta = |name: &str| metric(&after, name) - metric(&before, name);
            let delivered = delta("pubsub_kafka_bridge_deliveries_total{status=\"204\"}");
            let requests = delta("pubsub_kafka_bridge_produce_requests_total");
            let records = delta("pubsub_kafka_bridge_produced_records_total");
            let cpu_per_delivery = (cpu_after - cpu_before) / delivered.max(1.0);
            println!(
                "| {} | {concurrency} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.4} | {:.4} |",
                size_label(size),
                run.per_second,
                run.refused as f64 / seconds,
                run.p50_ms,
                run.p99_ms,
                records / requests.max(1.0),
                peak_kib as f64 / 1024.0,
                cpu_per_delivery * 1e6,
                compute_cost_cpu_bound(cpu_per_delivery, prices),
                compute_cost_busy(run.per_second, prices),
            );
        }
    }
    println!();
    println!(
        "compute $/1M, CPU-bound = 1e6 × CPU s per delivery ÷ vCPUs × (vCPUs × $/vCPU-s + GiB × $/GiB-s)"
    );
    println!(
        "compute $/1M, busy time = 1e6 ÷ deliveries/s × (vCPUs × $/vCPU-s + GiB × $/GiB-s)   (one instance, always busy at this rate)"
    );
    println!(
        "instance: {COST_VCPUS} vCPU, {COST_GIB} GiB; example prices: ${}/vCPU-s, ${}/GiB-s; add ${} per 1M requests for the request fee",
        prices.vcpu_second, prices.gib_second, prices.million_requests
    );
}

/// A broker of its own with the bench topic, for one measurement: tansu's memory storage
/// slows as it fills (a 64 KiB Kafka limit measured after the other sizes' records fell from
/// about 12k to 4k records/s), so no measurement inherits the records of another.
async fn fresh_broker() -> Broker {
    let broker = Broker::start().await;
    broker.create_topic(TOPIC, PARTITIONS).await;
    broker
}

/// A child process killed when dropped, also when the bench panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1024 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// `--NAME VALUE` from the command line.
/// A steady load of one payload size for a profiler to attach to: prints the bridge's pid, then
/// pushes for `seconds` and prints its CPU per delivery. `infra/bench.sh --profile 1024`, and
/// in another shell `perf record -p PID` (or `perf top -p PID`).
async fn profile(broker: &Broker, jwks: &JwksServer, token: &str, size: usize, seconds: f64) {
    let port = free_port();
    let bridge = KillOnDrop(spawn_bridge(broker, jwks, port));
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    while get(&client, &format!("{base}/readyz")).await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let warm = prepared_pushes(addr, token, &body_pool(size, "warm"));
    push_load(addr, warm, CONCURRENCY, Until::Count(2_000), true).await;
    println!(
        "bridge pid {}: {size} B deliveries for {seconds} s",
        bridge.0.id()
    );
    let requests = prepared_pushes(addr, token, &body_pool(size, "profile"));
    let before = process_usage(bridge.0.id());
    let load_before = process_usage(std::process::id());
    let broker_before = process_usage(broker.pid());
    let run = push_load(
        addr,
        requests,
        CONCURRENCY,
        Until::Elapsed(Duration::from_secs_f64(seconds)),
        false,
    )
    .await;
    let load_after = process_usage(std::process::id());
    let broker_after = process_usage(broker.pid());
    let after = process_usage(bridge.0.id());
    // SIGTERM, so a profiler the bridge runs under writes its data as the bridge exits.
    let _ = Command::new("kill")
        .args(["-TERM", &bridge.0.id().to_string()])
        .status();
    let mut bridge = bridge;
    let _ = bridge.0.wait();
    let delivered = run.per_second * seconds;
    let per_delivery = |seconds: f64| seconds / delivered * 1e6;
    println!(
        "{:.0} deliveries/s, p99 {:.2} ms, {:.1} µs CPU per delivery ({:.1} user, {:.1} system), \
         peak RSS {:.1} MiB",
        run.per_second,
        run.p99_ms,
        per_delivery(after.cpu() - before.cpu()),
        per_delivery(after.user - before.user),
        per_delivery(after.system - before.system),
        after.peak_kib as f64 / 1024.0
    );
    println!(
        "CPU per delivery of the other two on these cores: load generator {:.1} µs, broker {:.1} µs",
        per_delivery(load_after.cpu() - load_before.cpu()),
        per_delivery(broker_after.cpu() - broker_before.cpu()),
    );
}

/// One row's figures, from one measurement of the bridge and the two limits right after it.
struct Row {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    records_per_request: f64,
    cpu_us: f64,
    peak_rss_mib: f64,
    kafka_limit: f64,
    http_limit: f64,
    load_cpu_us: f64,
    broker_cpu_us: f64,
    limit_broker_cpu_us: f64,
    limit_producer_cpu_us: f64,
}

impl Row {
    fn kafka_ratio(&self) -> f64 {
        self.per_second / self.kafka_limit
    }
    fn http_ratio(&self) -> f64 {
        self.per_second / self.http_limit
    }
}

/// `count` signed pushes of `size` through a fresh bridge and broker (after `warm_up` of them),
/// then the same count straight to a fresh broker (the Kafka limit) and to the no-op endpoint
/// (the HTTP limit).
async fn measure(
    (size, count, warm_up): (usize, usize, usize),
    jwks: &JwksServer,
    token: &str,
) -> Row {
    let client = http_client();
    let broker = fresh_broker().await;
    let bridge_port = free_port();
    let bridge = KillOnDrop(spawn_bridge(&broker, jwks, bridge_port));
    let base = format!("http://127.0.0.1:{bridge_port}");
    wait_for_status(&client, &format!("{base}/readyz"), 200).await;
    let addr: SocketAddr = ([127, 0, 0, 1], bridge_port).into();
    // Warm-up: connections, JWKS, partition producers.
    let warm = prepared_pushes(addr, token, &body_pool(size, "warm"));
    push_load(addr, warm, CONCURRENCY, Until::Count(warm_up), true).await;
    let requests = prepared_pushes(addr, token, &body_pool(size, &format!("b{size}")));
    let before = get(&client, &format!("{base}/metrics")).await.1;
    let cpu_before = process_usage(bridge.0.id()).cpu();
    let (load_before, broker_before) = (
        process_usage(std::process::id()).cpu(),
        process_usage(broker.pid()).cpu(),
    );
    let run = push_load(addr, requests, CONCURRENCY, Until::Count(count), true).await;
    let after_run = process_usage(bridge.0.id());
    let (load_after, broker_after) = (
        process_usage(std::process::id()).cpu(),
        process_usage(broker.pid()).cpu(),
    );
    let (cpu_after, peak_rss_kib) = (after_run.cpu(), after_run.peak_kib);
    let after = get(&client, &format!("{base}/metrics")).await.1;
    drop(bridge);
    drop(broker);
    let requests = metric(&after, "pubsub_kafka_bridge_produce_requests_total")
        - metric(&before, "pubsub_kafka_bridge_produce_requests_total");
    let records = metric(&after, "pubsub_kafka_bridge_produced_records_total")
        - metric(&before, "pubsub_kafka_bridge_produced_records_total");
    // The Kafka limit, with what it costs its producer (this process) and its broker.
    let limit_broker = fresh_broker().await;
    let limit_broker_before = process_usage(limit_broker.pid()).cpu();
    let limit_producer_before = process_usage(std::process::id()).cpu();
    let kafka = kafka_load(&limit_broker, size, count).await;
    let limit_producer_after = process_usage(std::process::id()).cpu();
    let limit_broker_after = process_usage(limit_broker.pid()).cpu();
    drop(limit_broker);
    let noop = NoopServer::start(&client).await;
    let noop_addr: SocketAddr = ([127, 0, 0, 1], noop.port).into();
    let noop_requests = prepared_pushes(noop_addr, token, &body_pool(size, "noop"));
    let noop = push_load(
        noop_addr,
        noop_requests,
        CONCURRENCY,
        Until::Count(count),
        true,
    )
    .await;
    Row {
        per_second: run.per_second,
        p50_ms: run.p50_ms,
        p99_ms: run.p99_ms,
        max_ms: run.max_ms,
        records_per_request: records / requests.max(1.0),
        cpu_us: (cpu_after - cpu_before) * 1e6 / count as f64,
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        kafka_limit: kafka.per_second,
        http_limit: noop.per_second,
        load_cpu_us: (load_after - load_before) * 1e6 / count as f64,
        broker_cpu_us: (broker_after - broker_before) * 1e6 / count as f64,
        limit_broker_cpu_us: (limit_broker_after - limit_broker_before) * 1e6 / count as f64,
        limit_producer_cpu_us: (limit_producer_after - limit_producer_before) * 1e6 / count as f64,
    }
}

/// The median of each column over the runs; with more than one run, the range of the columns
/// a reader compares (rate, the two ratios, CPU) follows in brackets.
fn print_row(label: &str, rows: &[Row]) {
    let column = |value: fn(&Row) -> f64, decimals: usize, range: bool| {
        let mut values: Vec<f64> = rows.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        let (low, high) = (values[0], values[values.len() - 1]);
        if range && values.len() > 1 {
            format!("{median:.decimals$} ({low:.decimals$}–{high:.decimals$})")
        } else {
            format!("{median:.decimals$}")
        }
    };
    let columns = [
        column(|r| r.per_second, 0, true),
        column(Row::kafka_ratio, 2, true),
        column(Row::http_ratio, 2, true),
        column(|r| r.p50_ms, 2, false),
        column(|r| r.p99_ms, 2, false),
        column(|r| r.max_ms, 1, false),
        column(|r| r.records_per_request, 1, false),
        column(|r| r.cpu_us, 1, true),
        column(|r| r.peak_rss_mib, 1, false),
        column(|r| r.kafka_limit, 0, false),
        column(|r| r.http_limit, 0, false),
        column(|r| r.load_cpu_us, 1, false),
        column(|r| r.broker_cpu_us, 1, false),
        format!(
            "{} / {}",
            column(|r| r.limit_producer_cpu_us, 1, false),
            column(|r| r.limit_broker_cpu_us, 1, false)
        ),
    ];
    println!("| {label} | {} |", columns.join(" | "));
}

fn flag(args: &[String], name: &str) -> Option<f64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
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
    // Each row is the median of this many measurements (bridge, then both limits, each time).
    let runs = flag(&args, "--runs").map_or(if quick { 1 } else { 3 }, |n| n.max(1.0) as usize);

    let jwks = JwksServer::start(&[key(1)]).await;
    let token = mint(&key(1), &google_claims());
    if args.iter().any(|a| a == "--scaling") {
        let prices = Prices {
            vcpu_second: flag(&args, "--price-vcpu-second").unwrap_or(0.000_024),
            gib_second: flag(&args, "--price-gib-second").unwrap_or(0.000_002_5),
            million_requests: flag(&args, "--price-million-requests").unwrap_or(0.40),
        };
        let seconds = flag(&args, "--seconds").unwrap_or(if quick { 1.5 } else { 4.0 });
        scaling(&jwks, &token, seconds, &prices).await;
        return;
    }
    if let Some(size) = flag(&args, "--profile") {
        let seconds = flag(&args, "--seconds").unwrap_or(20.0);
        profile(&fresh_broker().await, &jwks, &token, size as usize, seconds).await;
        return;
    }

    println!(
        "pubsub-kafka-bridge benchmark: {} cores, {CONCURRENCY} concurrent connections, KAFKA_LINGER_MS={}, TOKIO_WORKER_THREADS={}, tansu (memory storage) on loopback, topic with {PARTITIONS} partitions, a fresh broker and no-op endpoint for every measurement; each row the median of {runs} (the range in brackets), each of them the bridge and then both limits",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        linger_ms(),
        worker_threads()
    );
    println!();
    println!(
        "| payload | bridge deliveries/s | ÷ Kafka limit | ÷ HTTP limit | p50 ms | p99 ms | max ms | records/request | bridge CPU µs per delivery | bridge peak RSS MiB | Kafka limit rec/s | HTTP limit req/s | load generator CPU µs per delivery | broker CPU µs per delivery | Kafka limit: producer / broker CPU µs per record |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // About 3 s per measurement at 1 KiB: runs of under a second moved the ratios by several
    // hundredths from one run to the next.
    for (size, count) in [(100usize, 120_000usize), (1024, 120_000), (65_536, 15_000)] {
        let mut rows = Vec::new();
        for _ in 0..runs {
            let row = measure((size, count / scale, 2_000 / scale), &jwks, &token);
            rows.push(row.await);
        }
        print_row(&size_label(size), &rows);
    }
    println!();
    let (ready, first) = cold_start(&fresh_broker().await, &jwks, &token).await;
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
