//! Fault suite: the broker killed with SIGKILL under load, a slow or unreachable broker, a slow
//! JWKS endpoint. Every test is bounded in time and talks only to loopback.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use test_support::*;

/// Keeps `concurrency` pushers going until `stop`; like Pub/Sub, a delivery that is not answered
/// 2xx is sent again. Returns the ids answered 2xx.
fn sustained_load(
    url: String,
    stop: Arc<AtomicBool>,
    concurrency: usize,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    tokio::spawn(async move {
        let client = http_client();
        let next = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, next, failures, acked, stop, url) = (
                    client.clone(),
                    Arc::clone(&next),
                    Arc::clone(&failures),
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                    url.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("load-{:06}", next.fetch_add(1, Ordering::Relaxed));
                        let body = envelope(id.as_bytes(), &[], &id, "2024-01-01T00:00:00Z", None)
                            .to_string();
                        // Redeliver until acknowledged (or the run ends), as Pub/Sub does.
                        while !stop.load(Ordering::Relaxed) {
                            let (status, _) = post(&client, &url, body.clone(), None).await;
                            if (200..300).contains(&status) {
                                acked.lock().unwrap().push(id.clone());
                                break;
                            }
                            failures.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
        let acked = acked.lock().unwrap().clone();
        (acked, failures.load(Ordering::Relaxed))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_with_sigkill_under_load_loses_no_acknowledged_delivery() {
    let mut broker = Broker::start_sqlite().await;
    broker.create_topic("survive", 3).await;
    let mut env = bridge_env(&broker, "survive", None);
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "1500".into());
    env.insert("KAFKA_METADATA_REFRESH_MS".into(), "500".into());
    let bridge = Bridge::start(&env).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = sustained_load(bridge.url(), Arc::clone(&stop), 8);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    broker.kill(); // SIGKILL
    tokio::time::sleep(Duration::from_secs(3)).await; // longer than the produce timeout
    broker.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = load.await.unwrap();

    let records = broker.read_all("survive").await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *counts
            .entry(r.header("pubsub.message_id").unwrap())
            .or_default() += 1;
    }
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 under load: {} deliveries acknowledged, {} answered non-2xx and redelivered, {} records in Kafka, {} lost, {} duplicates",
        acked.len(),
        failures,
        records.len(),
        lost.len(),
        duplicates
    );
    assert!(acked.len() > 100, "load ran ({} acked)", acked.len());
    assert!(failures > 0, "the outage was seen");
    assert!(
        lost.is_empty(),
        "acknowledged but not in Kafka: {:?}",
        &lost[..lost.len().min(10)]
    );
    let acked_after_restart = acked.iter().filter(|id| counts.contains_key(*id)).count();
    assert_eq!(acked_after_restart, acked.len());
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// POSTs `body` on a connection of its own and times the bridge from the request's first byte
/// to its answer. Connection set-up is left out on purpose: on a loaded machine a pooled client
/// may wait for it and then hand the request a connection another request just released,
/// which timed the other request's 800 ms as well (seen as 1.6 s answers in 3 of 12 suite runs).
async fn timed_post(addr: &str, body: String) -> (u16, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let took = started.elapsed();
    let status = String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_unreachable_broker_answers_503_within_the_timeout_with_bounded_memory() {
    let mut broker = Broker::sqlite_unstarted();
    let proxy = BrokerProxy::start(broker.port).await;
    let delay = Arc::clone(&proxy.delay_ms);
    broker.advertised_port = Some(proxy.port);
    broker.start_now().await;
    broker.create_topic("slow", 2).await;

    let mut env = bridge_env(&broker, "slow", None);
    env.insert("KAFKA_PRODUCE_TIMEOUT_MS".into(), "800".into());
    env.insert("RUST_LOG".into(), "error".into());
    let (mut child, base) = spawn_bridge_process(&env, None).await;
    let client = http_client();
    let url = format!("{base}/");
    wait_for_status(&client, &format!("{base}/readyz"), 200).await;
    let body =
        |id: String| envelope(&[7u8; 2048], &[], &id, "2024-01-01T00:00:00Z", None).to_string();
    assert_eq!(post(&client, &url, body("warm".into()), None).await.0, 204);
    let rss_before = peak_rss_kib(child.id());
    let addr = base.trim_start_matches("http://");

    let mut worst = Duration::ZERO;
    for (phase, n) in [("slow", 0), ("unreachable", 1)] {
        if n == 0 {
            delay.store(3_000, Ordering::Relaxed); // every chunk held 3 s: far beyond the timeout
        } else {
            broker.kill();
        }
        let results: Vec<(u16, Duration)> = futures_util::future::join_all(
            (0..300).map(|i| timed_post(addr, body(format!("{phase}-{i}")))),
        )
        .await;
        let mut times: Vec<Duration> = results.iter().map(|(_, took)| *took).collect();
        times.sort();
        eprintln!(
            "{phase}: fastest {:?}, median {:?}, slowest {:?}",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
        for (status, took) in &results {
            assert_eq!(*status, 503, "{phase}");
            worst = worst.max(*took);
        }
    }
    let rss_after = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "slow and unreachable broker: 600 deliveries all 503, slowest answer {:.0} ms (timeout 800 ms), peak RSS {} → {} KiB",
        worst.as_secs_f64() * 1e3,
        rss_before,
        rss_after
    );
    assert!(
        worst < Duration::from_millis(1_500),
        "an answer took {worst:?}"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_jwks_endpoint_never_holds_up_deliveries() {
    let broker = Broker::start().await;
    broker.create_topic("jwks-slow", 1).await;
    let jwks = JwksServer::start(&[key(1)]).await;
    let bridge = Bridge::start(&bridge_env(&broker, "jwks-slow", Some(&jwks))).await;
    let client = http_client();
    let body = |id: &str| envelope(b"x", &[], id, "2024-01-01T00:00:00Z", None).to_string();
    let token = mint(&key(1), &google_claims());
    assert_eq!(
        post(&client, &bridge.url(), body("warm"), Some(&token))
            .await
            .0,
        204
    );

    *jwks.delay.lock().unwrap() = Duration::from_secs(30);
    // Known key, new tokens: served from the cached key at once.
    let started = Instant::now();
    for n in 0..20 {
        let mut claims = google_claims();
        claims["jti"] = json!(n);
        let token = mint(&key(1), &claims);
        assert_eq!(
            post(
                &client,
                &bridge.url(),
                body(&format!("cached-{n}")),
                Some(&token)
            )
            .await
            .0,
            204
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cached keys served slowly: {:?}",
        started.elapsed()
    );
    // Unknown key while the endpoint hangs: the refresh gives up after its 5 s timeout.
    let started = Instant::now();
    let unknown = mint(&key(2), &google_claims());
    let (status, _) = post(&client, &bridge.url(), body("unknown"), Some(&unknown)).await;
    assert!(status == 401 || status == 503, "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "hung for {:?}",
        started.elapsed()
    );
    let ids: HashSet<String> = broker.message_ids("jwks-slow").await.into_iter().collect();
    assert_eq!(ids.len(), 21);
}
