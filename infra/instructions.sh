#!/usr/bin/env bash
# Instructions and allocations per delivery, counted by callgrind: the figures to quote for any
# before/after of the delivery path (repeatable however busy the machine is). Needs valgrind.
#   infra/instructions.sh [CASE ...]     (cases: target/release/deps/instructions-* list)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source infra/toolchain.sh
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: apt-get install valgrind)" >&2; exit 1; }
binary=$(cargo bench --locked --bench instructions --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])' | tail -1)
python3 infra/instructions.py "$binary" "$@"
