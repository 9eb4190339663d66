//! Typed values (Pub/Sub schema revisions → Kafka values) checked by independent code: Python's
//! fastavro (its reader of Avro's JSON encoding, its binary reader, its CRC-64-AVRO fingerprint)
//! and Python's protobuf runtime with the definition compiled by grpcio-tools' protoc. For every
//! case the value the bridge writes, decoded, equals the message data read by the same library;
//! BINARY cases start from bytes those libraries wrote.
#![allow(
    clippy::disallowed_methods,
    reason = "tests read their own settings and whole answers"
)]

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use pubsub_kafka_bridge::TestCodec;
use serde_json::{Value, json};
use test_support::emulator::{Emulator, PROJECT, message};
use test_support::python;

/// Runs tests/typed_values.py in `mode` on one JSON line per case; its output lines.
fn run_python(mode: &str, cases: &[Value]) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/typed_values.py");
    let mut child = Command::new(python())
        .args(["-W", "ignore", script, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: String = cases.iter().map(|case| format!("{case}\n")).collect();
    // A decoder that stops at a mismatch closes its input early: its own report says why.
    let _ = child.stdin.take().unwrap().write_all(lines.as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{mode}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// Every Avro type and the common logical types. In `payment`, bytes come before the array of
/// ints: fastavro's writer (BINARY cases) would take Python bytes for that array otherwise.
const ORDER_AVRO: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
  {"name": "id", "type": "long"},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
  {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
     {"name": "name", "type": "string"},
     {"name": "email", "type": ["null", "string"], "default": null}]}},
  {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line",
     "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int", "default": 1},
                {"name": "price", "type": "double"}]}}},
  {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
  {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 4}},
  {"name": "blob", "type": "bytes"},
  {"name": "flag", "type": "boolean"},
  {"name": "ratio", "type": "float"},
  {"name": "count", "type": "int"},
  {"name": "payment", "type": ["null", "string", "Customer", "Status", "Code",
     {"type": "map", "values": "long"}, "bytes", {"type": "array", "items": "int"}, "double"]},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
  {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
  {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
  {"name": "maybe_at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
   "default": null}]}"#;

fn order_json(i: usize) -> String {
    let payment = [
        "null".to_owned(),
        r#"{"string": "card ✓"}"#.to_owned(),
        r#"{"shop.Customer": {"name": "Payer", "email": {"string": "p@x"}}}"#.to_owned(),
        r#"{"shop.Status": "PAID"}"#.to_owned(),
        r#"{"shop.Code": "\u0000\u0001\u00fe\u00ff"}"#.to_owned(),
        r#"{"map": {"a": -1, "b": 9007199254740993}}"#.to_owned(),
        r#"{"bytes": "\u00e9t\u00e9"}"#.to_owned(),
        r#"{"array": [1, -2, 3]}"#.to_owned(),
        r#"{"double": -1.25e-3}"#.to_owned(),
    ][i % 9]
        .clone();
    let email = if i.is_multiple_of(2) {
        String::new()
    } else {
        format!(r#", "email": {{"string": "c{i}@example.com"}}"#)
    };
    let qty = if i.is_multiple_of(3) {
        String::new()
    } else {
        format!(r#", "qty": {i}"#)
    };
    format!(
        r#"{{"id": {id}, "status": "{status}", "customer": {{"name": "Cüstomer {i}"{email}}},
            "lines": [{{"sku": "s{i}", "price": 0.1{qty}}}, {{"sku": "", "qty": -7, "price": 1e10}}],
            "tags": {{"k{i}": ["a", "ß"], "empty": []}}, "code": "abc{c}",
            "blob": "\u0000\u007f\u0080\u00ff", "flag": {flag}, "ratio": 0.5, "count": -2147483648,
            "payment": {payment}, "day": 19723, "at": 1700000000123, "at_us": 1700000000123456,
            "ref": "123e4567-e89b-12d3-a456-42661417400{c}", "amount": "\u0001\u00e2\u0040"}}"#,
        id = i as i64 * 1_000_000_007 - 5,
        status = ["NEW", "PAID"][i % 2],
        c = i % 10,
        flag = i.is_multiple_of(2),
    )
}

/// The recursive reference is spelled in full and the list is two nodes long: fastavro's JSON
/// reader does not resolve the short name in a union, nor a third level of recursion.
const LINKED_LIST: &str = r#"{"type": "record", "name": "Node", "namespace": "list", "fields": [
  {"name": "value", "type": "int"},
  {"name": "next", "type": ["null", "list.Node"]}]}"#;

const ORDER_PROTO: &str = r#"syntax = "proto3";
package shop;

enum Status { NEW = 0; PAID = 1; }

message Order {
  message Line { string sku = 1; int32 qty = 2; double price = 3; }
  int64 id = 1;
  string customer_name = 2;
  Status status = 3;
  repeated Line lines = 4;
  map<string, int64> tags = 5;
  bytes blob = 6;
  oneof payment { string card = 7; bool cash = 8; Line voucher = 15; }
  double total = 9;
  repeated sint32 deltas = 10;
  fixed64 big = 11;
  float ratio = 12;
  uint32 small = 13;
  optional string note = 14;
}
"#;

const PROTO2: &str = r#"syntax = "proto2";
message Legacy {
  required int32 a = 1;
  optional string b = 2 [default = "dflt"];
  repeated int64 c = 3 [packed = true];
  optional group G = 4 { optional int32 x = 5; }
}
"#;

fn cases() -> Vec<Value> {
    let mut cases = Vec::new();
    let mut add = |name: String, kind: &str, definition: &str, json: String| {
        cases.push(json!({"name": name, "kind": kind, "definition": definition, "json": json}));
    };
    for i in 0..18 {
        add(format!("order {i}"), "AVRO", ORDER_AVRO, order_json(i));
    }
    add(
        "linked list".into(),
        "AVRO",
        LINKED_LIST,
        r#"{"value": 1, "next": {"list.Node": {"value": 2, "next": null}}}"#.into(),
    );
    add(
        "top-level union".into(),
        "AVRO",
        r#"["null", "string", "long"]"#,
        r#"{"long": -5}"#.into(),
    );
    add(
        "top-level map".into(),
        "AVRO",
        r#"{"type": "map", "values": "float"}"#,
        r#"{"x": 1.5, "y": -0.25}"#.into(),
    );
    for (i, json) in [
        r#"{"id": "-300", "customerName": "Ann ✓", "status": "PAID",
            "lines": [{"sku": "a", "qty": 2, "price": 0.5}, {}], "tags": {"k": "9007199254740993"},
            "blob": "AAH/", "cash": true, "total": -1.5, "deltas": [-1, 0, 1, 2147483647],
            "big": "18446744073709551615", "ratio": 0.25, "small": 4294967295, "note": ""}"#,
        r#"{"customer_name": "original names", "card": "4111", "status": 1}"#,
        r#"{"voucher": {"sku": "v", "qty": -1}, "total": "NaN", "ratio": "-Infinity"}"#,
        "{}",
    ]
    .iter()
    .enumerate()
    {
        add(
            format!("proto order {i}"),
            "PROTOCOL_BUFFER",
            ORDER_PROTO,
            (*json).into(),
        );
    }
    add(
        "proto2".into(),
        "PROTOCOL_BUFFER",
        PROTO2,
        r#"{"a": 5, "c": ["1", "-2"], "g": {"x": 3}}"#.into(),
    );
    cases
}

/// The bridge's value for `case`, in the shape typed_values.py checks.
fn value(case: &Value, encoding: &str, data: &[u8], registry_id: Option<u32>) -> Value {
    let framed = TestCodec::new(
        case["kind"].as_str().unwrap(),
        case["definition"].as_str().unwrap(),
    )
    .and_then(|codec| codec.encode(encoding, data, registry_id))
    .unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
    let mut checked = case.clone();
    checked["value"] = base64::engine::general_purpose::STANDARD
        .encode(framed)
        .into();
    checked["registry_id"] = json!(registry_id);
    checked
}

#[test]
fn json_data_transcodes_to_values_independent_decoders_read_back() {
    let mut checked = Vec::new();
    for case in cases() {
        let data = case["json"].as_str().unwrap().as_bytes().to_vec();
        checked.push(value(&case, "JSON", &data, None));
        checked.push(value(&case, "JSON", &data, Some(0x7fff_0001)));
    }
    let report = run_python("decode", &checked);
    assert_eq!(report, [format!("checked {} values", checked.len())]);
}

#[test]
fn binary_data_written_by_independent_encoders_frames_unchanged() {
    let cases = cases();
    let encoded = run_python("encode", &cases);
    assert_eq!(encoded.len(), cases.len());
    let mut checked = Vec::new();
    for (case, datum) in cases.iter().zip(&encoded) {
        let datum = base64::engine::general_purpose::STANDARD
            .decode(datum)
            .unwrap();
        let bare = value(case, "BINARY", &datum, None);
        // Binary data is framed as it came: no re-encoding.
        let framed = base64::engine::general_purpose::STANDARD
            .decode(bare["value"].as_str().unwrap())
            .unwrap();
        assert!(framed.ends_with(&datum), "{}", case["name"]);
        checked.push(bare);
        checked.push(value(case, "BINARY", &datum, Some(3)));
    }
    let report = run_python("decode", &checked);
    assert_eq!(report, [format!("checked {} values", checked.len())]);
}

/// The schema of the emulator checks: a union of a named record, defaults, bytes, a double.
const PROBE_AVRO: &str = r#"{"type": "record", "name": "R", "namespace": "ns", "fields": [
  {"name": "a", "type": "int"},
  {"name": "d", "type": "string", "default": "dflt"},
  {"name": "u", "type": ["null", "string", {"type": "record", "name": "In",
     "fields": [{"name": "x", "type": "long"}]}], "default": null},
  {"name": "f", "type": "double", "default": 0},
  {"name": "b", "type": "bytes", "default": ""}]}"#;

/// JSON data the Pub/Sub emulator (Google's implementation, validating with Avro's Java
/// `JsonDecoder`) accepts for [`PROBE_AVRO`], the letter of the JSON encoding and beyond it.
const EMULATOR_ACCEPTS: &[&str] = &[
    r#"{"a": 1, "d": "x", "u": null, "f": 1.5, "b": "\u00ff"}"#,
    r#"{"a": 1, "d": "x", "u": {"string": "s"}, "f": 1.5, "b": "a"}"#,
    r#"{"a": 1, "d": "x", "u": {"ns.In": {"x": 3}}, "f": 1.5, "b": "a"}"#,
    r#"{"a": 1, "d": "x", "u": {"null": null}, "f": 1.5, "b": "a"}"#,
    // Fields in any order, fields the schema does not have.
    r#"{"d": "x", "f": 1.5, "b": "a", "u": null, "a": 1, "extra": [5]}"#,
    // Numbers: a fraction for an int (cut off), an exponent, an int for a double.
    r#"{"a": 1.5, "d": "x", "u": null, "f": 3, "b": "a"}"#,
    r#"{"a": 1e2, "d": "x", "u": null, "f": -2, "b": "a"}"#,
    // A code point above 255 in bytes (Java writes it as '?').
    r#"{"a": 1, "d": "x", "u": null, "f": 1.5, "b": "\u0100"}"#,
    // Anything after the first JSON value is ignored.
    r#"{"a": 1, "d": "x", "u": null, "f": 1.5, "b": "a"} garbage"#,
];

/// Accepted by the emulator, refused here with a clear message (docs/typed-records.md says why):
/// a union object with two keys, a number beyond a double's range, a lone surrogate.
const EMULATOR_ACCEPTS_REFUSED_HERE: &[&str] = &[
    r#"{"a": 1, "d": "x", "u": {"string": "s", "null": null}, "f": 1.5, "b": "a"}"#,
    r#"{"a": 1, "d": "x", "u": null, "f": 1e400, "b": "a"}"#,
    r#"{"a": 1, "d": "\ud800", "u": null, "f": 1.5, "b": "a"}"#,
];

/// Publishes `data` to `topic`; whether the emulator accepted it.
async fn emulator_accepts(emulator: &Emulator, topic: &str, data: &[u8]) -> bool {
    let (status, text) = emulator
        .try_call(
            "POST",
            &format!("topics/{topic}:publish"),
            json!({"messages": [message(data, &[])]}),
        )
        .await;
    assert!(status == 200 || status == 400, "{status}: {text}");
    status == 200
}

#[tokio::test]
async fn what_the_emulator_accepts_for_an_avro_schema_transcodes() {
    let emulator = Emulator::shared().await;
    emulator
        .call(
            "POST",
            "schemas?schemaId=typed-values-probe",
            json!({"type": "AVRO", "definition": PROBE_AVRO}),
        )
        .await;
    for encoding in ["JSON", "BINARY"] {
        let topic = format!("typed-values-{}", encoding.to_lowercase());
        emulator
            .create_topic(
                &topic,
                json!({"schemaSettings": {
                    "schema": format!("projects/{PROJECT}/schemas/typed-values-probe"),
                    "encoding": encoding,
                }}),
            )
            .await;
    }
    let codec = TestCodec::new("AVRO", PROBE_AVRO).unwrap();
    for data in EMULATOR_ACCEPTS {
        assert!(
            emulator_accepts(&emulator, "typed-values-json", data.as_bytes()).await,
            "the emulator refused {data}"
        );
        codec
            .encode("JSON", data.as_bytes(), None)
            .unwrap_or_else(|e| panic!("{data}: {e}"));
    }
    for data in EMULATOR_ACCEPTS_REFUSED_HERE {
        assert!(emulator_accepts(&emulator, "typed-values-json", data.as_bytes()).await);
        assert!(
            codec.encode("JSON", data.as_bytes(), None).is_err(),
            "{data}"
        );
    }
    // What the emulator refuses, missing fields even with defaults, is transcoded all the same.
    let missing = br#"{"a": 1}"#;
    assert!(!emulator_accepts(&emulator, "typed-values-json", missing).await);
    assert!(codec.encode("JSON", missing, None).is_ok());

    // BINARY: a datum (a=1, d="x", u=null, f=1.5, b="a"); the emulator also accepts it with bytes
    // after it, which are refused here: the value would carry bytes no schema reader expects.
    let datum = [2, 2, b'x', 0, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 2, b'a'];
    assert!(emulator_accepts(&emulator, "typed-values-binary", &datum).await);
    assert!(codec.encode("BINARY", &datum, None).is_ok());
    let trailing = [&datum[..], &[0]].concat();
    assert!(emulator_accepts(&emulator, "typed-values-binary", &trailing).await);
    assert_eq!(
        codec.encode("BINARY", &trailing, None).unwrap_err(),
        "1 bytes follow the end of the Avro datum"
    );
    let truncated = &datum[..datum.len() - 1];
    assert!(!emulator_accepts(&emulator, "typed-values-binary", truncated).await);
    assert!(codec.encode("BINARY", truncated, None).is_err());
}

/// A 1 KiB JSON message of [`ORDER_AVRO`] (the figure in docs/typed-records.md):
/// `cargo test --release --test typed_values -- --ignored --nocapture transcode_cost`.
#[test]
#[ignore = "a measurement, not a check: run it in release on purpose"]
fn transcode_cost_of_a_1kib_json_avro_message() {
    let mut json = order_json(2);
    let lines = r#"{"sku": "padding-sku", "qty": 12, "price": 3.25}"#;
    while json.len() < 1000 {
        json = json.replacen(r#""lines": ["#, &format!(r#""lines": [{lines}, "#), 1);
    }
    let codec = TestCodec::new("AVRO", ORDER_AVRO).unwrap();
    let iterations = 200_000;
    let started = std::time::Instant::now();
    let mut bytes = 0;
    for _ in 0..iterations {
        bytes += codec
            .encode("JSON", json.as_bytes(), Some(1))
            .unwrap()
            .len();
    }
    let elapsed = started.elapsed();
    println!(
        "{} bytes of JSON -> {} bytes of value: {:?} per transcode",
        json.len(),
        bytes / iterations,
        elapsed / iterations as u32
    );
}
