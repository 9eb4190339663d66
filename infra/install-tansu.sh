#!/usr/bin/env bash
# Installs the tansu broker (Kafka-compatible, from crates.io) unless the right version is on PATH.
# About 10 minutes the first time on 2 cores; cargo keeps the binary in ~/.cargo/bin afterwards.
set -euo pipefail
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  exit 0
fi
echo "installing tansu $TANSU_VERSION (first time only, ~10 min)..." >&2
cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore,libsql
