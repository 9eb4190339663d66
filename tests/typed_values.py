"""Independent codecs for the bridge's typed values (Pub/Sub schema revisions → Kafka values).

Reads JSON lines on stdin, one per case:
  {"kind": "AVRO"|"PROTOCOL_BUFFER", "definition": str, "json": str, ...}
Two modes (argv[1]):
  encode  prints each case's data as a binary datum / wire bytes (base64), written by fastavro
          from Avro's JSON encoding, or by Python's protobuf runtime from proto3 JSON;
  decode  each case also has "value" (base64, the bridge's record value) and "registry_id"
          (null or an int); checks the framing (Confluent wire format, Avro single-object
          encoding with the schema's CRC-64-AVRO fingerprint, bare protobuf), decodes the
          payload and compares it with the JSON data read by the same independent library.
The .proto definitions are compiled with grpcio-tools' protoc. Prints "checked N values" and
exits 1 on the first mismatch.
"""
import base64
import hashlib
import importlib
import io
import json
import os
import struct
import sys
import tempfile

import fastavro
import fastavro.schema
from google.protobuf import json_format
from grpc_tools import protoc

PROTO_DIR = tempfile.mkdtemp(prefix="typed-values-")
sys.path.insert(0, PROTO_DIR)


def fail(message):
    print(f"MISMATCH: {message}", file=sys.stderr)
    sys.exit(1)


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


def avro_schema(definition):
    return fastavro.parse_schema(json.loads(definition))


def avro_from_json(schema, text):
    """The JSON data as fastavro's reader of Avro's JSON encoding sees it."""
    # fastavro reads one record per line.
    one_line = json.dumps(json.loads(text))
    records = list(fastavro.json_reader(io.StringIO(one_line), schema))
    if len(records) != 1:
        fail(f"{len(records)} records in {text!r}")
    return records[0]


def proto_class(definition):
    """Compiles the definition with protoc; its one top-level message class."""
    name = "m" + hashlib.sha256(definition.encode()).hexdigest()[:16]
    path = os.path.join(PROTO_DIR, name + ".proto")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(definition)
        code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={PROTO_DIR}", path])
        if code != 0:
            fail(f"protoc refused {definition!r}")
    module = importlib.import_module(name + "_pb2")
    messages = list(module.DESCRIPTOR.message_types_by_name.values())
    if len(messages) != 1:
        fail(f"{len(messages)} top-level messages")
    return getattr(module, messages[0].name)


def encode(case):
    if case["kind"] == "AVRO":
        schema = avro_schema(case["definition"])
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, avro_from_json(schema, case["json"]))
        return out.getvalue()
    message = json_format.Parse(case["json"], proto_class(case["definition"])())
    return message.SerializeToString()


def check_avro(case, value):
    schema = avro_schema(case["definition"])
    registry_id = case["registry_id"]
    if registry_id is None:
        canonical = fastavro.schema.to_parsing_canonical_form(schema)
        fingerprint = rabin_fingerprint(canonical.encode())
        header = b"\xc3\x01" + struct.pack("<Q", fingerprint)
    else:
        header = b"\x00" + struct.pack(">I", registry_id)
    if not value.startswith(header):
        fail(f"{case['name']}: header {value[:len(header)].hex()}, want {header.hex()}")
    stream = io.BytesIO(value[len(header):])
    got = fastavro.schemaless_reader(stream, schema, None)
    if stream.read():
        fail(f"{case['name']}: bytes left after the datum")
    want = avro_from_json(schema, case["json"])
    if got != want:
        fail(f"{case['name']}: decoded {got!r}, want {want!r}")


def check_protobuf(case, value):
    registry_id = case["registry_id"]
    header = b"" if registry_id is None else b"\x00" + struct.pack(">I", registry_id) + b"\x00"
    if not value.startswith(header):
        fail(f"{case['name']}: header {value[:len(header)].hex()}, want {header.hex()}")
    cls = proto_class(case["definition"])
    got = cls.FromString(value[len(header):])
    want = json_format.Parse(case["json"], cls())
    if got != want:
        fail(f"{case['name']}: decoded {got}, want {want}")


def main():
    mode = sys.argv[1]
    count = 0
    for line in sys.stdin:
        case = json.loads(line)
        if mode == "encode":
            print(base64.b64encode(encode(case)).decode())
            continue
        value = base64.b64decode(case["value"])
        if case["kind"] == "AVRO":
            check_avro(case, value)
        else:
            check_protobuf(case, value)
        count += 1
    if mode == "decode":
        print(f"checked {count} values")


main()
