#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test tier
# (unit, handler, end-to-end against a real tansu broker started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
infra/install-tansu.sh
# Independent decoders for the value-format tests (fastavro, google-cloud-pubsub).
if [ ! -x target/pyenv/bin/python ] || ! cmp -s tests/requirements.txt target/pyenv/requirements.txt; then
  python3 -m venv target/pyenv
  target/pyenv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt target/pyenv/requirements.txt
fi
cargo test --all-targets "$@"
