//! The main table: for each payload size, the bridge's rate, latency, batching, CPU and memory
//! under signed push load, next to the Kafka and HTTP limits measured right after it.

use std::net::SocketAddr;

use test_support::{JwksServer, free_port, get, http_client, metric, wait_for_status};

use crate::closed_loop::Until;
use crate::http_limit::NoopServer;
use crate::kafka_limit::kafka_load;
use crate::processes::{KillOnDrop, fresh_broker, linger_ms, spawn_bridge, worker_threads};
use crate::push_load::push_load;
use crate::pushes::{body_pool, prepared_pushes};
use crate::usage::process_usage;
use crate::{CONCURRENCY, PARTITIONS};

/// Prints the table: each row the median of `runs` measurements of its payload size, each with
/// `1 / scale` of the full load.
pub(crate) async fn throughput_table(jwks: &JwksServer, token: &str, runs: usize, scale: usize) {
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
            let row = measure((size, count / scale, 2_000 / scale), jwks, token);
            rows.push(row.await);
        }
        print_row(&size_label(size), &rows);
    }
    println!();
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

pub(crate) fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1024 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
