"""Independent decoder for the bridge's value formats (issue: formats checked field by field).

Reads JSON lines on stdin, one per Kafka record:
  {"format": "avro"|"protobuf"|"json", "value": base64, "expected": {...}}
and decodes each value with libraries that share no code with the bridge: fastavro for Avro
single-object encoding, google-cloud-pubsub's PubsubMessage for protobuf, json for JSON
("json-embed": the JSON format with KAFKA_JSON_EMBED_DATA, `data_encoding` expected too).
Prints "checked N records" and exits 1 on the first mismatch.
"""
import base64
import datetime
import io
import json
import sys

import fastavro
from google.pubsub_v1 import PubsubMessage

SCHEMA_PATH = sys.argv[1]


def rabin_fingerprint(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification defines it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def rfc3339_to_ns(value: str) -> int:
    """UTC RFC 3339 ("...Z") with 0-9 fractional digits → epoch nanoseconds."""
    assert value.endswith("Z"), value
    clock, _, frac = value[:-1].partition(".")
    base = datetime.datetime.fromisoformat(clock + "+00:00")
    nanos = int((frac + "000000000")[:9]) if frac else 0
    return int(base.timestamp()) * 1_000_000_000 + nanos


def fail(message: str) -> None:
    print(f"MISMATCH: {message}", file=sys.stderr)
    sys.exit(1)


def check(label, got, want):
    if got != want:
        fail(f"{label}: got {got!r}, want {want!r}")


def depth(value) -> int:
    """Nesting depth of a parsed JSON value (open arrays and objects), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def unique_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        fail(f"embedded object repeats a key: {keys}")
    return dict(pairs)


def main() -> None:
    with open(SCHEMA_PATH) as f:
        schema = fastavro.parse_schema(json.load(f))
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    fingerprint = rabin_fingerprint(canonical.encode()).to_bytes(8, "little")
    count = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        item = json.loads(line)
        value = base64.b64decode(item["value"])
        want = item["expected"]
        want_data = base64.b64decode(want["data"])
        mid = want["message_id"]
        fmt = item["format"]
        if fmt in ("avro", "avro-confluent"):
            if fmt == "avro":
                check(f"{mid} avro marker", value[:2], b"\xc3\x01")
                check(f"{mid} avro fingerprint", value[2:10], fingerprint)
                datum = value[10:]
            else:
                check(f"{mid} confluent magic byte", value[0], 0)
                check(f"{mid} confluent schema id", int.from_bytes(value[1:5], "big"), 7)
                datum = value[5:]
            rec = fastavro.schemaless_reader(io.BytesIO(datum), schema)
            check(f"{mid} message_id", rec["message_id"], mid)
            check(f"{mid} publish_time", rec["publish_time"], want["publish_time"])
            check(f"{mid} subscription", rec["subscription"], want["subscription"])
            check(f"{mid} ordering_key", rec["ordering_key"], want["ordering_key"])
            check(f"{mid} attributes", rec["attributes"], want["attributes"])
            check(f"{mid} delivery_attempt", rec["delivery_attempt"], want["delivery_attempt"])
            check(f"{mid} data", rec["data"], want_data)
        elif fmt == "protobuf":
            msg = PubsubMessage.deserialize(value)
            pb = PubsubMessage.pb(msg)
            check(f"{mid} message_id", pb.message_id, mid)
            check(f"{mid} data", pb.data, want_data)
            check(f"{mid} attributes", dict(pb.attributes), want["attributes"])
            check(f"{mid} ordering_key", pb.ordering_key, want["ordering_key"] or "")
            ns = pb.publish_time.seconds * 1_000_000_000 + pb.publish_time.nanos
            check(f"{mid} publish_time", ns, rfc3339_to_ns(want["publish_time"]))
        elif fmt == "json":
            obj = json.loads(value)
            check(f"{mid} keys", sorted(obj), sorted(
                ["message_id", "publish_time", "subscription", "ordering_key", "attributes", "delivery_attempt", "data"]))
            check(f"{mid} message_id", obj["message_id"], mid)
            check(f"{mid} publish_time", obj["publish_time"], want["publish_time"])
            check(f"{mid} subscription", obj["subscription"], want["subscription"])
            check(f"{mid} ordering_key", obj["ordering_key"], want["ordering_key"])
            check(f"{mid} attributes", obj["attributes"], want["attributes"])
            check(f"{mid} delivery_attempt", obj["delivery_attempt"], want["delivery_attempt"])
            check(f"{mid} data", base64.b64decode(obj["data"]), want_data)
        elif fmt == "json-embed":
            # The whole record must parse (a payload nested too deep would fail it, metadata
            # included) and nest no deeper than the bridge promises.
            obj = json.loads(value)
            check(f"{mid} record depth <= 64", depth(obj) <= 64, True)
            check(f"{mid} message_id", obj["message_id"], mid)
            check(f"{mid} attributes", obj["attributes"], want["attributes"])
            check(f"{mid} data_encoding", obj["data_encoding"], want["data_encoding"])
            if obj["data_encoding"] == "json":
                # Embedded only when no object repeats a key: then every reader agrees.
                embedded = json.loads(want_data, object_pairs_hook=unique_keys)
                check(f"{mid} data", obj["data"], embedded)
            else:
                check(f"{mid} data", base64.b64decode(obj["data"]), want_data)
        else:
            fail(f"unknown format {fmt}")
        count += 1
    print(f"checked {count} records")


if __name__ == "__main__":
    main()
