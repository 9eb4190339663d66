//! What one remembered message id costs: fills the deduplication cache of one subscription
//! through the same claim and settle a delivery makes, with Pub/Sub-shaped ids (16 decimal
//! digits), under the bridge's allocator (mimalloc), and prints the growth of the process's
//! resident memory per entry (allocator size classes and the tables' spare room included).
//!
//! `cargo run --release --example dedup_memory -- [ENTRIES]` (default 65536, the default of
//! `DEDUP_CACHE_ENTRIES`).

use std::time::Duration;

use pubsub_kafka_bridge::dedup::{Claim, Dedup};
use pubsub_kafka_bridge::kafka::Ack;

/// The bridge binary's allocator, whose size classes and pages are what an entry really costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SUBSCRIPTION: &str = "projects/my-project/subscriptions/orders-push";

fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let entries: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(65_536);
    let dedup = Dedup::new(entries);
    let ack = Ok(Ack {
        partition: 0,
        offset: 0,
    });
    // The subscription's own entry first, so only the ids are measured.
    if let Claim::Produce(Some(ticket)) = dedup.claim(SUBSCRIPTION, "0", Duration::ZERO).await {
        ticket.settle(&ack);
    }
    let resident_before = resident_bytes();
    // Pub/Sub's message ids are decimal numbers of about 16 digits.
    for n in 1..entries {
        let id = (4_000_000_000_000_000_u64 + n as u64 * 7_919).to_string();
        match dedup.claim(SUBSCRIPTION, &id, Duration::ZERO).await {
            Claim::Produce(Some(ticket)) => ticket.settle(&ack),
            other => panic!("{id}: {other:?}"),
        }
    }
    let remembered = dedup.remembered(SUBSCRIPTION);
    assert_eq!(remembered, entries);
    let resident = resident_bytes() - resident_before;
    let counted = (entries - 1) as f64;
    println!(
        "{remembered} message ids of 16 digits remembered for one subscription: \
         {:.0} resident bytes per entry ({:.1} MiB)",
        resident as f64 / counted,
        resident as f64 / f64::from(1 << 20)
    );
}
