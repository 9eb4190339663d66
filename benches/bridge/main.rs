//! The benchmark: the release bridge under signed push load, next to the two limits it sits
//! between (Kafka itself through rskafka, and a no-op hyper endpoint), plus cold start and the
//! token-verification cache. Run with `infra/bench.sh` (or `cargo bench --bench bridge`).
//!
//! Everything runs on this machine: tansu on loopback, the bridge as its own process, the load
//! generator here. Figures are printed, never asserted.
//!
//! This file reads the command line and runs the report in order; each measurement and each part
//! of the load lives in a module of its own.
#![allow(
    clippy::disallowed_methods,
    reason = "the bench reads its own settings and whole answers"
)]

mod closed_loop;
mod cold_start;
mod cost;
mod http_limit;
mod in_turns;
mod kafka_limit;
mod processes;
mod profile;
mod push_load;
mod pushes;
mod scaling;
mod table;
mod token_cache;
mod usage;

use test_support::{JwksServer, google_claims, key, mint};

use crate::cold_start::cold_start;
use crate::cost::Prices;
use crate::http_limit::noop_server;
use crate::processes::fresh_broker;
use crate::profile::profile;
use crate::scaling::scaling;
use crate::table::throughput_table;
use crate::token_cache::token_cache;

/// Concurrent callers of the main table, its limits and `--profile`.
pub(crate) const CONCURRENCY: usize = 64;
/// The topic every measurement produces to, created on each fresh broker.
pub(crate) const TOPIC: &str = "bench";
pub(crate) const PARTITIONS: i32 = 3;

/// `--NAME VALUE` from the command line.
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
    if args.iter().any(|a| a == "--idempotence") {
        in_turns::idempotence(&jwks, &token, runs.max(3), scale).await;
        return;
    }
    if args.iter().any(|a| a == "--routes") {
        in_turns::routes(&jwks, &token, runs.max(3), scale).await;
        return;
    }
    if let Some(size) = flag(&args, "--profile") {
        let seconds = flag(&args, "--seconds").unwrap_or(20.0);
        profile(&fresh_broker().await, &jwks, &token, size as usize, seconds).await;
        return;
    }

    throughput_table(&jwks, &token, runs, scale).await;
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
