//! Two configurations of the bridge under the same 1 KiB load, measured in turns in one run (the
//! order alternating, each measurement on a fresh broker), so the machine's drift falls on both
//! alike: `--idempotence` (`KAFKA_IDEMPOTENCE` on and off) and `--routes` (three routing rules
//! and none).

use std::net::SocketAddr;

use test_support::{JwksServer, free_port, get, http_client, metric, wait_for_status};

use crate::CONCURRENCY;
use crate::closed_loop::Until;
use crate::processes::{KillOnDrop, fresh_broker, spawn_bridge_with};
use crate::push_load::push_load;
use crate::pushes::{Bodies, prepared_pushes};
use crate::usage::process_usage;

const SIZE: usize = 1024;

/// The rules of `--routes`, as `infra/instructions.sh`'s `-order-routes` cases have them: route
/// by attribute (the last rule matching), a key from a JSON field, one header. Every rule names
/// the bench's one topic ([`crate::TOPIC`]), so the broker needs no other.
pub(crate) const ROUTES: &str = r#"[
  {"when": "attributes.type == 'click'", "topic": "bench"},
  {"when": "attributes.type == 'view'", "topic": "bench"},
  {"when": "attributes.type == 'order'", "topic": "bench",
   "key": "json.customer.id", "headers": {"source": "attributes.origin"}}
]"#;

/// One side of the comparison.
struct Side {
    label: &'static str,
    settings: &'static [(&'static str, &'static str)],
}

/// One measurement: deliveries per second, CPU µs per delivery and records per request.
async fn measure(
    jwks: &JwksServer,
    token: &str,
    side: &Side,
    bodies: fn(&str) -> Bodies,
    count: usize,
) -> [f64; 3] {
    let client = http_client();
    let broker = fresh_broker().await;
    let port = free_port();
    let bridge = KillOnDrop(spawn_bridge_with(&broker, jwks, port, side.settings));
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&client, &format!("{base}/readyz"), 200).await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let warm = prepared_pushes(addr, token, &bodies("warm").pool(SIZE));
    push_load(addr, warm, CONCURRENCY, Until::Count(count / 50), true).await;
    let requests = prepared_pushes(addr, token, &bodies(side.label).pool(SIZE));
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

/// Measures both sides `runs` times in turns and prints the medians and their ratio.
async fn in_turns(
    jwks: &JwksServer,
    token: &str,
    (title, column): (&str, &str),
    sides: [Side; 2],
    bodies: fn(&str) -> Bodies,
    runs: usize,
    scale: usize,
) {
    let count = 120_000 / scale;
    let mut rows: [Vec<[f64; 3]>; 2] = [Vec::new(), Vec::new()];
    for run in 0..runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let figures = measure(jwks, token, &sides[side], bodies, count).await;
            rows[side].push(figures);
        }
    }
    let median = |rows: &[[f64; 3]], i: usize| {
        let mut values: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let range = |rows: &[[f64; 3]], i: usize| {
        let values: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        (low, high)
    };
    println!(
        "{title}: 1 KiB, {CONCURRENCY} concurrent connections, {count} deliveries per measurement, {runs} measurements each way in turns, tansu (memory storage)"
    );
    println!();
    println!(
        "| {column} | deliveries/s (median, range) | CPU µs per delivery (median, range) | records/request |"
    );
    println!("|---|---|---|---|");
    for (side, rows) in sides.iter().zip(&rows) {
        let (low, high) = range(rows, 0);
        let (cpu_low, cpu_high) = range(rows, 1);
        println!(
            "| {} | {:.0} ({low:.0}–{high:.0}) | {:.2} ({cpu_low:.2}–{cpu_high:.2}) | {:.1} |",
            side.label,
            median(rows, 0),
            median(rows, 1),
            median(rows, 2)
        );
    }
    println!();
    println!(
        "{} ÷ {}: {:.3} deliveries/s, {:.3} CPU per delivery ({:+.2} µs)",
        sides[0].label,
        sides[1].label,
        median(&rows[0], 0) / median(&rows[1], 0),
        median(&rows[0], 1) / median(&rows[1], 1),
        median(&rows[0], 1) - median(&rows[1], 1)
    );
}

/// `--idempotence`: the idempotent producer on and off.
pub(crate) async fn idempotence(jwks: &JwksServer, token: &str, runs: usize, scale: usize) {
    let sides = [
        Side {
            label: "true",
            settings: &[("KAFKA_IDEMPOTENCE", "true")],
        },
        Side {
            label: "false",
            settings: &[("KAFKA_IDEMPOTENCE", "false")],
        },
    ];
    let bodies = |run: &str| Bodies::new(SIZE, run);
    let title = ("KAFKA_IDEMPOTENCE on and off", "KAFKA_IDEMPOTENCE");
    in_turns(jwks, token, title, sides, bodies, runs, scale).await;
}

/// `--routes`: [`ROUTES`] and no rules, on the same orders.
pub(crate) async fn routes(jwks: &JwksServer, token: &str, runs: usize, scale: usize) {
    let sides = [
        Side {
            label: "three rules",
            settings: &[("ROUTES", ROUTES)],
        },
        Side {
            label: "no rules",
            settings: &[],
        },
    ];
    let bodies = |run: &str| Bodies::orders(SIZE, run);
    let title = ("ROUTES, three rules and none", "rules");
    in_turns(jwks, token, title, sides, bodies, runs, scale).await;
}
