"""Independent decoder for the bridge's typed records (KAFKA_VALUE_FORMAT=pubsub-schema).

Reads JSON lines on stdin, one per Kafka record value, and prints one JSON line per record:
the decoded datum (Avro: as fastavro reads it, bytes as latin-1 text; Protobuf: the message
as `MessageToDict` gives it, with fields that hold their default value included). Decoders,
none sharing code with the bridge:

  {"decoder": "confluent-avro", "registry": URL, "value": base64}
      confluent-kafka's AvroDeserializer, asking the registry for the writer's schema by id;
  {"decoder": "avro-single-object", "schema": JSON text, "value": base64}
      Avro single-object encoding checked by hand (0xC3 0x01, then the little-endian
      CRC-64-AVRO fingerprint of the schema as fastavro computes it), the datum read by fastavro;
  {"decoder": "confluent-protobuf", "proto": path, "message": name, "value": base64}
      confluent-kafka's ProtobufDeserializer for the class protoc (grpcio-tools) generates;
  {"decoder": "protobuf", "proto": path, "message": name, "value": base64}
      the same class's ParseFromString on the plain wire bytes.

Exits 1, saying why, on the first value that does not decode.
"""
import base64
import importlib
import io
import json
import os
import sys
import tempfile

import fastavro
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf.json_format import MessageToDict
from grpc_tools import protoc

CONTEXT = SerializationContext("typed", MessageField.VALUE)
_deserializers = {}
_classes = {}


def plain(value):
    """JSON-printable: bytes as latin-1 text."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def message_class(proto, name):
    key = (proto, name)
    if key not in _classes:
        out = tempfile.mkdtemp()
        directory, file = os.path.split(proto)
        code = protoc.main(["protoc", f"-I{directory}", f"--python_out={out}", file])
        if code != 0:
            raise SystemExit(f"protoc failed on {proto}")
        sys.path.insert(0, out)
        module = importlib.import_module(file[: -len(".proto")] + "_pb2")
        sys.path.remove(out)
        _classes[key] = getattr(module, name)
    return _classes[key]


def decode(line):
    value = base64.b64decode(line["value"])
    decoder = line["decoder"]
    if decoder == "confluent-avro":
        key = ("avro", line["registry"])
        if key not in _deserializers:
            client = SchemaRegistryClient({"url": line["registry"]})
            _deserializers[key] = AvroDeserializer(client)
        return plain(_deserializers[key](value, CONTEXT))
    if decoder == "avro-single-object":
        schema = fastavro.parse_schema(json.loads(line["schema"]))
        canonical = fastavro.schema.to_parsing_canonical_form(schema)
        # fastavro gives the fingerprint's bytes in hex, already little-endian as the
        # specification orders them (decode_values.py's own CRC-64-AVRO agrees).
        fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        header = b"\xc3\x01" + fingerprint
        if value[:10] != header:
            raise ValueError(f"header {value[:10].hex()} is not {header.hex()}")
        datum = io.BytesIO(value[10:])
        read = fastavro.schemaless_reader(datum, schema)
        if datum.read():
            raise ValueError("bytes follow the datum")
        return plain(read)
    cls = message_class(line["proto"], line["message"])
    if decoder == "confluent-protobuf":
        key = ("protobuf", cls)
        if key not in _deserializers:
            _deserializers[key] = ProtobufDeserializer(cls, {"use.deprecated.format": False})
        message = _deserializers[key](value, CONTEXT)
    elif decoder == "protobuf":
        message = cls()
        message.ParseFromString(value)
    else:
        raise ValueError(f"unknown decoder {decoder}")
    return MessageToDict(message, always_print_fields_with_no_presence=True)


def main():
    for number, text in enumerate(sys.stdin, 1):
        line = json.loads(text)
        try:
            print(json.dumps(decode(line), sort_keys=True), flush=True)
        except Exception as error:  # noqa: BLE001 - the report is the point
            print(f"record {number} ({line['decoder']}): {type(error).__name__}: {error}")
            sys.exit(1)


if __name__ == "__main__":
    main()
