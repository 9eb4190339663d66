//! A steady load for a profiler to attach to (`--profile SIZE`), with the CPU per delivery of
//! the bridge, the load generator and the broker.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use test_support::{Broker, JwksServer, free_port, get, http_client};

use crate::CONCURRENCY;
use crate::closed_loop::Until;
use crate::processes::{KillOnDrop, spawn_bridge};
use crate::push_load::push_load;
use crate::pushes::{body_pool, prepared_pushes};
use crate::usage::process_usage;

/// A steady load of one payload size for a profiler to attach to: prints the bridge's pid, then
/// pushes for `seconds` and prints its CPU per delivery. `infra/bench.sh --profile 1024`, and
/// in another shell `perf record -p PID` (or `perf top -p PID`).
pub(crate) async fn profile(
    broker: &Broker,
    jwks: &JwksServer,
    token: &str,
    size: usize,
    seconds: f64,
) {
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
