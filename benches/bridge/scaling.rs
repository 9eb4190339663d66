//! The scaling table (`--scaling`): a fresh bridge per concurrency × payload size, with its rate,
//! latency, batching, memory, CPU and cost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use test_support::{JwksServer, free_port, get, http_client, metric, wait_for_status};

use crate::closed_loop::Until;
use crate::cost::{COST_GIB, COST_VCPUS, Prices, compute_cost_busy, compute_cost_cpu_bound};
use crate::processes::{KillOnDrop, fresh_broker, spawn_bridge, worker_threads};
use crate::push_load::push_load;
use crate::pushes::{body_pool, prepared_pushes};
use crate::table::size_label;
use crate::usage::process_usage;

/// The scaling table: deliveries/s, latency, batching, peak RSS and cost for every
/// concurrency × payload size. Each cell gets a bridge process of its own (started, warmed,
/// measured for `seconds`, stopped), so its peak RSS and CPU are its own.
pub(crate) async fn scaling(jwks: &JwksServer, token: &str, seconds: f64, prices: &Prices) {
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
