//! The processes a measurement runs against: the release bridge with the bench's settings, and a
//! fresh broker; each killed when dropped.

use std::process::{Child, Command, Stdio};

use test_support::{AUDIENCE, Broker, JwksServer, PUSH_EMAIL};

use crate::{PARTITIONS, TOPIC};

/// The linger of both the bridge and the direct-to-Kafka producers (`KAFKA_LINGER_MS`, default 0
/// as in the bridge), so the two see the same batching.
pub(crate) fn linger_ms() -> u64 {
    std::env::var("KAFKA_LINGER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The bridge's runtime worker threads (`TOKIO_WORKER_THREADS`, default 1): one, as on a
/// Cloud Run instance of 1 vCPU (the Terraform module's default), where tokio starts one.
/// Here the broker and the load generator share the two cores, so a second worker mostly
/// adds wake-ups; `TOKIO_WORKER_THREADS=2 infra/bench.sh` measures that shape.
pub(crate) fn worker_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Starts the release bridge; with `BENCH_BRIDGE_UNDER` set (say `valgrind --tool=callgrind`),
/// under that command, to profile the whole server with `--profile`.
pub(crate) fn spawn_bridge(broker: &Broker, jwks: &JwksServer, port: u16) -> Child {
    spawn_bridge_with(broker, jwks, port, &[])
}

/// [`spawn_bridge`] with more variables set (they override the defaults above).
pub(crate) fn spawn_bridge_with(
    broker: &Broker,
    jwks: &JwksServer,
    port: u16,
    vars: &[(&str, &str)],
) -> Child {
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
        // tokio's own setting for its worker count (docs/performance.md).
        .env("TOKIO_WORKER_THREADS", worker_threads().to_string())
        // The body pools repeat their message ids (256 bodies sent over and over): with the
        // deduplication cache on, every repeat would be answered without reaching Kafka. Its own
        // cost per delivery is counted by infra/instructions.sh, whose ids are all distinct.
        .env("DEDUP_CACHE_ENTRIES", "0")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A broker of its own with the bench topic, for one measurement: tansu's memory storage
/// slows as it fills (a 64 KiB Kafka limit measured after the other sizes' records fell from
/// about 12k to 4k records/s), so no measurement inherits the records of another.
pub(crate) async fn fresh_broker() -> Broker {
    let broker = Broker::start().await;
    broker.create_topic(TOPIC, PARTITIONS).await;
    broker
}

/// A child process killed when dropped, also when the bench panics.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
