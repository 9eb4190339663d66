#!/usr/bin/env bash
# Runs the bridge end to end on this machine with Google's Pub/Sub emulator: the emulator, a
# tansu broker, a local JWKS endpoint with a real RSA key, the bridge binary, a topic with a push
# subscription to the bridge (through a relay that signs each push, as Pub/Sub does), a handful
# of published messages, what Kafka then holds, and a message the bridge refuses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
if ! gcloud beta emulators pubsub env-init --help >/dev/null 2>&1; then
  echo "local-e2e: needs the Google Cloud CLI with its Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator) and Java 17" >&2
  exit 1
fi
infra/install-tansu.sh
cargo build --release --bin pubsub-kafka-bridge
BRIDGE_BIN="$PWD/target/release/pubsub-kafka-bridge" cargo run --quiet --example local_e2e
