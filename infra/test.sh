#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test tier
# (unit, handler, end-to-end against a real tansu broker started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
infra/install-tansu.sh
cargo test --all-targets "$@"
