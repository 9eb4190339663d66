"""Instructions and allocations per delivery, from callgrind: repeatable on a noisy machine.

    python3 infra/instructions.py BENCH_BINARY [CASE ...]

Runs the `instructions` bench binary under `valgrind --tool=callgrind`, counting only its
`measured_deliveries` function, once per case, and prints per delivery: instructions (Ir) and
calls into the allocator (malloc, calloc, realloc, aligned allocations). infra/instructions.sh
builds the binary and calls this.
"""

import os
import re
import subprocess
import sys
import tempfile

ALLOCATORS = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}


def deliveries_for(case):
    """Enough deliveries to dwarf the per-run noise, few enough for callgrind's ~50x slowdown."""
    if case.startswith("1MiB"):
        return 10
    if case.startswith("64KiB"):
        return 50
    return 400


def parse(path):
    """Total Ir of the collected part, and the calls into the allocator from it."""
    total, allocations, callee = 0, 0, None
    with open(path) as out:
        for line in out:
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
            elif line.startswith("cfn="):
                # --compress-strings=no: the callee's name as written.
                name = line[4:].strip()
                callee = re.sub(r"^\(\d+\)\s*", "", name)
            elif line.startswith("calls=") and callee is not None:
                if callee in ALLOCATORS:
                    allocations += int(line[6:].split()[0])
                callee = None
    return total, allocations


def main():
    binary = sys.argv[1]
    cases = sys.argv[2:] or subprocess.run([binary, "list"], capture_output=True, text=True, check=True).stdout.split()
    print(f"{'case':<28} {'deliveries':>10} {'instructions/delivery':>22} {'allocations/delivery':>21}")
    with tempfile.TemporaryDirectory() as work:
        for case in cases:
            n = deliveries_for(case)
            out = os.path.join(work, f"{case}.callgrind")
            subprocess.run(
                ["valgrind", "--tool=callgrind", "--toggle-collect=*measured_deliveries*",
                 "--compress-strings=no", "--compress-pos=no", f"--callgrind-out-file={out}",
                 binary, case, str(n)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            total, allocations = parse(out)
            print(f"{case:<28} {n:>10} {total / n:>22,.0f} {allocations / n:>21.1f}", flush=True)


if __name__ == "__main__":
    main()
