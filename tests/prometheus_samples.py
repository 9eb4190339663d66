"""Independent reader of the bridge's `GET /metrics` text: prometheus_client's parser.

Reads Prometheus text (exposition format 0.0.4) on stdin, parses it with
prometheus_client.parser (no code shared with the bridge), and checks what a scraper relies on:
every family has a TYPE; every histogram series has buckets in ascending `le`, cumulative
(never decreasing), ending with `+Inf`, whose count equals `_count`, and a `_sum`. Prints the
samples as one JSON array of [name, labels, value]; exits 1 with the reason on a violation.
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def check_histogram(family):
    series = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        key = tuple(sorted(labels.items()))
        entry = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if sample.name == family.name + "_bucket":
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name == family.name + "_sum":
            entry["sum"] = sample.value
        elif sample.name == family.name + "_count":
            entry["count"] = sample.value
        else:
            fail(f"{family.name}: unexpected sample {sample.name}")
    if not series:
        fail(f"{family.name}: no series")
    for key, entry in series.items():
        buckets = entry["buckets"]
        where = f"{family.name}{dict(key)}"
        if not buckets or buckets[-1][0] != math.inf:
            fail(f"{where}: no +Inf bucket last")
        bounds = [le for le, _ in buckets]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            fail(f"{where}: bucket bounds not strictly ascending: {bounds}")
        counts = [count for _, count in buckets]
        if any(b < a for a, b in zip(counts, counts[1:])):
            fail(f"{where}: buckets not cumulative: {counts}")
        if entry["count"] != counts[-1]:
            fail(f"{where}: _count {entry['count']} != +Inf bucket {counts[-1]}")
        if entry["sum"] is None or entry["sum"] < 0:
            fail(f"{where}: no _sum")


def main():
    samples = []
    for family in text_string_to_metric_families(sys.stdin.read()):
        if family.type not in ("counter", "gauge", "histogram"):
            fail(f"{family.name}: type {family.type}")
        if family.type == "histogram":
            check_histogram(family)
        samples.extend([s.name, s.labels, s.value] for s in family.samples)
    json.dump(samples, sys.stdout)


main()
