#!/usr/bin/env bash
# Runs the bridge end to end on this machine: a tansu broker, the bridge binary, a local JWKS
# endpoint with a real RSA key, a handful of signed push deliveries, and what Kafka then holds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
infra/install-tansu.sh
cargo build --release --bin pubsub-kafka-bridge
BRIDGE_BIN="$PWD/target/release/pubsub-kafka-bridge" cargo run --quiet --example local_e2e
