//! `--idempotence`: the bridge's 1 KiB deliveries with `KAFKA_IDEMPOTENCE` on and off, measured
//! in turns in one run (the order alternating, each on a fresh broker), so the machine's drift
//! falls on both alike.

use std::net::SocketAddr;

use test_support::{JwksServer, free_port, get, http_client, metric, wait_for_status};

use crate::CONCURRENCY;
use crate::closed_loop::Until;
use crate::processes::{KillOnDrop, fresh_broker, spawn_bridge_with};
use crate::push_load::push_load;
use crate::pushes::{body_pool, prepared_pushes};
use crate::usage::process_usage;

const SIZE: usize = 1024;

/// One measurement: deliveries per second, CPU µs per delivery and records per request.
async fn measure(jwks: &JwksServer, token: &str, idempotence: &str, count: usize) -> [f64; 3] {
    let client = http_client();
    let broker = fresh_broker().await;
    let port = free_port();
    let bridge = KillOnDrop(spawn_bridge_with(
        &broker,
        jwks,
        port,
        &[("KAFKA_IDEMPOTENCE", idempotence)],
    ));
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&client, &format!("{base}/readyz"), 200).await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let warm = prepared_pushes(addr, token, &body_pool(SIZE, "warm"));
    push_load(addr, warm, CONCURRENCY, Until::Count(count / 50), true).await;
    let requests = prepared_pushes(addr, token, &body_pool(SIZE, "idem"));
    let before = get(&client, &format!("{base}/metrics")).await.1;
    let cpu_before = process_usage(bridge.0.id()).cpu();
    let run = push_load(addr, requests, CONCURRENCY, Until::Count(count), true).await;
    let cpu_after = process_usage(bridge.0.id()).cpu();
    let after = get(&client, &format!("{base}/metrics")).await.1;
    let delta = |name| metric(&after, name) - metric(&before, name);
    let per_request = delta("pubsub_kafka_bridge_produced_records_total")
        / delta("pubsub_kafka_bridge_produce_requests_total").max(1.0);
    [
        run.per_second,
        (cpu_after - cpu_before) * 1e6 / count as f64,
        per_request,
    ]
}

/// Prints the medians of `runs` measurements each way and their ratio.
pub(crate) async fn on_and_off(jwks: &JwksServer, token: &str, runs: usize, scale: usize) {
    let count = 120_000 / scale;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for idempotence in if run % 2 == 0 {
            ["true", "false"]
        } else {
            ["false", "true"]
        } {
            let figures = measure(jwks, token, idempotence, count).await;
            if idempotence == "true" {
                &mut on
            } else {
                &mut off
            }
            .push(figures);
        }
    }
    let median = |rows: &[[f64; 3]], i: usize| {
        let mut values: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let range = |rows: &[[f64; 3]]| {
        let values: Vec<f64> = rows.iter().map(|r| r[0]).collect();
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        format!("{low:.0}–{high:.0}")
    };
    println!(
        "KAFKA_IDEMPOTENCE on and off: 1 KiB, {CONCURRENCY} concurrent connections, {count} deliveries per measurement, {runs} measurements each way in turns, tansu (memory storage)"
    );
    println!();
    println!(
        "| KAFKA_IDEMPOTENCE | deliveries/s (median, range) | CPU µs per delivery | records/request |"
    );
    println!("|---|---|---|---|");
    for (label, rows) in [("true", &on), ("false", &off)] {
        println!(
            "| {label} | {:.0} ({}) | {:.1} | {:.1} |",
            median(rows, 0),
            range(rows),
            median(rows, 1),
            median(rows, 2)
        );
    }
    println!();
    println!(
        "on ÷ off: {:.3} deliveries/s, {:.3} CPU per delivery",
        median(&on, 0) / median(&off, 0),
        median(&on, 1) / median(&off, 1)
    );
}
