#!/usr/bin/env bash
# The benchmark: tansu, the release bridge, a signed-push load generator, the Kafka limit
# (rskafka straight to the broker) and the HTTP limit (a no-op hyper endpoint) in one run.
# `infra/bench.sh --quick` runs a tenth of the load.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
infra/install-tansu.sh
cargo bench --bench bridge -- "$@"
