//! What loading a topic of thousands of partitions costs the bridge: tansu behind a
//! frame-aware proxy that counts the Metadata requests and their answers' bytes, the bridge
//! binary, and deliveries until one is acknowledged. Two runs: the topic there at startup, and
//! the topic created after startup. Prints the time to the first acknowledged delivery, the
//! Metadata requests and bytes (the bridge's alone: topics are created past the proxy), and the
//! bridge's peak RSS (`VmHWM`).
//!
//! `cargo build --bin pubsub-kafka-bridge && cargo run --example big_topic -- [PARTITIONS]`
//! (`BRIDGE_BIN` picks another binary; default `target/debug/pubsub-kafka-bridge`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_support::*;

/// How long a run may take before it is reported as never loaded.
const GIVE_UP: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() {
    #[allow(clippy::disallowed_methods, reason = "the example's own settings")]
    let (partitions, binary) = (
        partitions_arg(),
        std::env::var("BRIDGE_BIN").unwrap_or_else(|_| "target/debug/pubsub-kafka-bridge".into()),
    );
    let mut broker = Broker::builder().build();
    let proxy = BrokerProxy::start(broker.port).await;
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    println!("{partitions} partitions, bridge {binary}");

    create_topic(&broker, "big-at-startup", partitions);
    run(&broker, &proxy, &binary, "big-at-startup", None).await;
    run(&broker, &proxy, &binary, "big-later", Some(partitions)).await;
}

/// Starts the bridge for `topic` (creating it after startup when `create` says how many
/// partitions), pushes deliveries until one is acknowledged, and prints the costs.
async fn run(broker: &Broker, proxy: &BrokerProxy, binary: &str, topic: &str, create: Option<i32>) {
    let port = free_port();
    let started = Instant::now();
    let (requests, bytes) = metadata(proxy);
    let answered = proxy.answers(METADATA).len();
    let mut bridge = Command::new(binary)
        .env("PORT", port.to_string())
        .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("KAFKA_TOPIC", topic)
        .env("KAFKA_METADATA_REFRESH_MS", "3600000")
        .env("OIDC_DISABLED", "true")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let client = http_client();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&client, &format!("{base}/healthz"), 200).await;
    if let Some(partitions) = create {
        // The bridge reads metadata when it connects and when it opens its topic, which fails:
        // the topic is created after that.
        let deadline = Instant::now() + Duration::from_secs(20);
        while proxy.answers(METADATA).len() < answered + 2 {
            assert!(
                Instant::now() < deadline,
                "the bridge never tried its topic"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        create_topic(broker, topic, partitions);
    }
    let (requests_before, bytes_before) = metadata(proxy);
    let pushed = Instant::now();
    let mut answers = Vec::new();
    let loaded = loop {
        let id = format!("m{}", answers.len());
        let body = envelope(id.as_bytes(), &[], &id, "2024-01-01T00:00:00Z", None).to_string();
        let (status, _) = post(&client, &base, body, None).await;
        answers.push(status);
        if status == 204 {
            break Some(pushed.elapsed());
        }
        if pushed.elapsed() > GIVE_UP {
            break None;
        }
    };
    let (requests_after, bytes_after) = metadata(proxy);
    let peak = peak_rss_kib(&bridge);
    let every_partition = match (loaded, create.or(partitions_of(topic))) {
        (Some(_), Some(partitions)) => {
            let started = Instant::now();
            let written = write_every_partition(&client, &base, partitions as u32).await;
            format!(
                "; then one delivery to each partition ({written} acknowledged) in {:.1} s, \
                 peak RSS {:.1} MiB",
                started.elapsed().as_secs_f64(),
                peak_rss_kib(&bridge) as f64 / 1024.0
            )
        }
        _ => String::new(),
    };
    stop(&mut bridge);
    let failed = answers.iter().filter(|s| **s != 204).count();
    println!(
        "{topic}: {} ({failed} deliveries answered otherwise first); metadata requests {} \
         ({:.1} MB of answers) from the first delivery, {} ({:.1} MB) from startup; \
         bridge peak RSS {:.1} MiB; run {:.1} s{every_partition}",
        match loaded {
            Some(after) => format!("first 204 after {:.2} s", after.as_secs_f64()),
            None => format!("no 204 within {} s", GIVE_UP.as_secs()),
        },
        requests_after - requests_before,
        (bytes_after - bytes_before) as f64 / 1e6,
        requests_after - requests,
        (bytes_after - bytes) as f64 / 1e6,
        peak as f64 / 1024.0,
        started.elapsed().as_secs_f64(),
    );
}

/// The partitions `main` gave the topic created before startup.
fn partitions_of(topic: &str) -> Option<i32> {
    (topic == "big-at-startup").then(partitions_arg)
}

fn partitions_arg() -> i32 {
    std::env::args()
        .nth(1)
        .map_or(3_000, |n| n.parse::<i32>().expect("PARTITIONS"))
}

/// One keyed delivery to each of `partitions` (keys picked with Kafka's Java partitioner),
/// [`writers`] at a time; how many were acknowledged.
async fn write_every_partition(client: &HttpClient, base: &str, partitions: u32) -> usize {
    use futures_util::StreamExt as _;
    let mut keys: Vec<Option<String>> = vec![None; partitions as usize];
    let mut left = partitions;
    for i in 0.. {
        let key = format!("key-{i}");
        let slot = &mut keys[java_partition(key.as_bytes(), partitions) as usize];
        if slot.is_none() {
            *slot = Some(key);
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    futures_util::stream::iter(keys.into_iter().flatten())
        .map(|key| async move {
            let body = envelope(b"x", &[], &key, "2024-01-01T00:00:00Z", Some(&key)).to_string();
            post(client, base, body, None).await.0 == 204
        })
        .buffer_unordered(writers())
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

/// Deliveries in flight while every partition is written to: `WRITERS`, default 16.
fn writers() -> usize {
    #[allow(clippy::disallowed_methods, reason = "the example's own setting")]
    std::env::var("WRITERS").map_or(16, |n| n.parse().expect("WRITERS"))
}

/// Creates `topic` with tansu's CLI, straight to the broker: the proxy counts the bridge alone.
fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    let status = Command::new(tansu_bin())
        .args([
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ])
        .args(["--broker", &format!("tcp://127.0.0.1:{}", broker.port)])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "tansu topic create {topic}");
}

/// Metadata requests the proxy passed, and the bytes of their answers.
fn metadata(proxy: &BrokerProxy) -> (usize, usize) {
    let answers = proxy.answers(METADATA);
    (
        proxy.requests(METADATA).len(),
        answers.iter().map(|a| a.frame.len() + 4).sum(),
    )
}

/// The process's peak resident set (`VmHWM`, KiB).
fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
