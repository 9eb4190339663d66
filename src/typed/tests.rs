//! The codec for both kinds and both encodings: Avro datums read back with apache-avro's own
//! decoder (independent of the walks under test), protobuf bytes computed by hand; refusals with
//! their messages. tests/typed_values.rs checks the same bytes with Python's decoders.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use proptest::prelude::*;

use super::bounds::MAX_DEFINITION_DEPTH;
use super::*;

fn avro(definition: &str) -> TypedSchema {
    TypedSchema::compile(SchemaKind::Avro, definition).expect("the schema compiles")
}

fn proto(definition: &str) -> TypedSchema {
    TypedSchema::compile(SchemaKind::Protobuf, definition).expect("the definition compiles")
}

/// Transcodes JSON and reads the datum back with apache-avro.
fn avro_json(definition: &str, json: &str) -> Avro {
    let payload = avro(definition)
        .to_binary(DataEncoding::Json, json.as_bytes())
        .unwrap_or_else(|e| panic!("{json} transcodes: {e}"));
    decode(definition, &payload)
}

fn decode(definition: &str, payload: &[u8]) -> Avro {
    let schema = Schema::parse_str(definition).unwrap();
    let mut reader = payload;
    let value = apache_avro::from_avro_datum(&schema, &mut reader, None).unwrap();
    assert!(reader.is_empty(), "the datum is followed by {reader:?}");
    value
}

fn json_mismatch(schema: &TypedSchema, json: &str) -> String {
    schema
        .to_binary(DataEncoding::Json, json.as_bytes())
        .expect_err("the data does not fit")
        .to_string()
}

fn binary_mismatch(schema: &TypedSchema, data: &[u8]) -> String {
    schema
        .to_binary(DataEncoding::Binary, data)
        .expect_err("the data does not fit")
        .to_string()
}

fn record(fields: &[(&str, Avro)]) -> Avro {
    Avro::Record(
        fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
    )
}

const PRIMITIVES: &str = r#"{"type": "record", "name": "Primitives", "fields": [
  {"name": "n", "type": "null"},
  {"name": "b", "type": "boolean"},
  {"name": "i", "type": "int"},
  {"name": "l", "type": "long"},
  {"name": "f", "type": "float"},
  {"name": "d", "type": "double"},
  {"name": "bytes", "type": "bytes"},
  {"name": "s", "type": "string"}]}"#;

#[test]
fn avro_primitives_from_json() {
    let value = avro_json(
        PRIMITIVES,
        r#"{"n": null, "b": true, "i": -2147483648, "l": 9223372036854775807, "f": 1.5,
            "d": -0.25, "bytes": "\u0000\u00ffA", "s": "ünï ✓"}"#,
    );
    assert_eq!(
        value,
        record(&[
            ("n", Avro::Null),
            ("b", Avro::Boolean(true)),
            ("i", Avro::Int(i32::MIN)),
            ("l", Avro::Long(i64::MAX)),
            ("f", Avro::Float(1.5)),
            ("d", Avro::Double(-0.25)),
            ("bytes", Avro::Bytes(vec![0, 255, b'A'])),
            ("s", Avro::String("ünï ✓".into())),
        ])
    );
}

#[test]
fn avro_numbers_take_whole_floats_and_named_non_finite_values() {
    let value = avro_json(
        PRIMITIVES,
        r#"{"n": null, "b": false, "i": 7.0, "l": -3, "f": "NaN", "d": "-Infinity",
            "bytes": "", "s": ""}"#,
    );
    let Avro::Record(fields) = value else {
        panic!("a record")
    };
    assert_eq!(fields[2].1, Avro::Int(7));
    assert!(matches!(fields[4].1, Avro::Float(f) if f.is_nan()));
    assert_eq!(fields[5].1, Avro::Double(f64::NEG_INFINITY));
}

#[test]
fn avro_refuses_values_of_the_wrong_type_naming_the_field() {
    let schema = avro(PRIMITIVES);
    let base = r#""n": null, "b": true, "l": 1, "f": 1, "d": 1, "bytes": "", "s": """#;
    assert_eq!(
        json_mismatch(&schema, &format!(r#"{{{base}, "i": 2147483648}}"#)),
        "$.i: expected a 32-bit integer, got a number"
    );
    assert_eq!(
        json_mismatch(&schema, &format!(r#"{{{base}, "i": "1"}}"#)),
        "$.i: expected a 32-bit integer, got a string"
    );
    assert_eq!(
        json_mismatch(
            &schema,
            r#"{"n": null, "b": "yes", "i": 1, "l": 1, "f": 1, "d": 1, "bytes": "", "s": ""}"#
        ),
        "$.b: expected a boolean, got a string"
    );
    assert_eq!(
        json_mismatch(&schema, r#"{"n": null}"#),
        "$.b: missing, and the field has no default"
    );
    assert_eq!(
        json_mismatch(&schema, "[]"),
        "$: expected an object, got an array"
    );
    assert!(json_mismatch(&schema, "{").starts_with("the data is not JSON: "));
    assert!(json_mismatch(&schema, "{}}").starts_with("$.n: missing"));
    assert!(json_mismatch(&schema, "").starts_with("the data is not JSON: "));
}

const NESTED: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
  {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
     {"name": "name", "type": "string"},
     {"name": "email", "type": ["null", "string"], "default": null}]}},
  {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line",
     "namespace": "shop.lines", "fields": [
       {"name": "sku", "type": "string"},
       {"name": "qty", "type": "int", "default": 1}]}}},
  {"name": "tags", "type": {"type": "map", "values": "long"}},
  {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 2}},
  {"name": "payment", "type": ["null", "Customer", "shop.lines.Line", "Status", "Code",
     {"type": "array", "items": "int"}, {"type": "map", "values": "boolean"}, "bytes"]}]}"#;

#[test]
fn avro_nested_records_enums_arrays_maps_fixed_and_defaults() {
    let value = avro_json(
        NESTED,
        r#"{"status": "PAID", "customer": {"name": "Ann"},
            "lines": [{"sku": "a"}, {"sku": "b", "qty": 3}], "tags": {"x": 1, "y": -1},
            "code": "\u0001\u00fe", "payment": {"shop.Customer": {"name": "Bo", "email": {"string": "b@x"}}}}"#,
    );
    let line =
        |sku: &str, qty| record(&[("sku", Avro::String(sku.into())), ("qty", Avro::Int(qty))]);
    assert_eq!(
        value,
        record(&[
            ("status", Avro::Enum(1, "PAID".into())),
            (
                "customer",
                record(&[
                    ("name", Avro::String("Ann".into())),
                    ("email", Avro::Union(0, Box::new(Avro::Null))),
                ])
            ),
            ("lines", Avro::Array(vec![line("a", 1), line("b", 3)])),
            (
                "tags",
                Avro::Map(
                    [
                        ("x".to_owned(), Avro::Long(1)),
                        ("y".to_owned(), Avro::Long(-1))
                    ]
                    .into_iter()
                    .collect()
                )
            ),
            ("code", Avro::Fixed(2, vec![1, 254])),
            (
                "payment",
                Avro::Union(
                    1,
                    Box::new(record(&[
                        ("name", Avro::String("Bo".into())),
                        (
                            "email",
                            Avro::Union(1, Box::new(Avro::String("b@x".into())))
                        ),
                    ]))
                )
            ),
        ])
    );
}

#[test]
fn avro_union_branches_go_by_type_name_or_full_name() {
    let with = |payment: &str| {
        let value = avro_json(
            NESTED,
            &format!(
                r#"{{"status": "NEW", "customer": {{"name": "A"}}, "lines": [], "tags": {{}},
                    "code": "ab", "payment": {payment}}}"#
            ),
        );
        let Avro::Record(fields) = value else {
            panic!("a record")
        };
        fields.into_iter().last().unwrap().1
    };
    assert_eq!(with("null"), Avro::Union(0, Box::new(Avro::Null)));
    assert_eq!(
        with(r#"{"shop.lines.Line": {"sku": "s", "qty": 2}}"#),
        Avro::Union(
            2,
            Box::new(record(&[
                ("sku", Avro::String("s".into())),
                ("qty", Avro::Int(2))
            ]))
        )
    );
    assert_eq!(
        with(r#"{"shop.Status": "NEW"}"#),
        Avro::Union(3, Box::new(Avro::Enum(0, "NEW".into())))
    );
    assert_eq!(
        with(r#"{"shop.Code": "zz"}"#),
        Avro::Union(4, Box::new(Avro::Fixed(2, b"zz".to_vec())))
    );
    assert_eq!(
        with(r#"{"array": [1, 2]}"#),
        Avro::Union(5, Box::new(Avro::Array(vec![Avro::Int(1), Avro::Int(2)])))
    );
    assert_eq!(
        with(r#"{"map": {"k": true}}"#),
        Avro::Union(
            6,
            Box::new(Avro::Map(
                [("k".to_owned(), Avro::Boolean(true))]
                    .into_iter()
                    .collect()
            ))
        )
    );
    assert_eq!(
        with(r#"{"bytes": "\u0007"}"#),
        Avro::Union(7, Box::new(Avro::Bytes(vec![7])))
    );
}

#[test]
fn avro_refuses_unions_not_written_in_the_json_encoding() {
    let schema = avro(NESTED);
    let order = |payment: &str, lines: &str| {
        format!(
            r#"{{"status": "NEW", "customer": {{"name": "A"}}, "lines": {lines}, "tags": {{"k": 1}},
                "code": "ab", "payment": {payment}}}"#
        )
    };
    assert_eq!(
        json_mismatch(&schema, &order(r#"{"Customer": {"name": "B"}}"#, "[]")),
        "$.payment: \"Customer\" is not a branch of the union (null, shop.Customer, \
         shop.lines.Line, shop.Status, shop.Code, array, map, bytes)"
    );
    assert_eq!(
        json_mismatch(&schema, &order(r#""NEW""#, "[]")),
        "$.payment: expected null or a union value wrapped as {\"type\": value}, got a string"
    );
    assert_eq!(
        json_mismatch(&schema, &order(r#"{"array": [1], "map": {}}"#, "[]")),
        "$.payment: expected null or a union value wrapped as {\"type\": value}, got an object"
    );
    assert_eq!(
        json_mismatch(&schema, &order("null", r#"[{"sku": "a"}, {"sku": 5}]"#)),
        "$.lines[1].sku: expected a string, got a number"
    );
    assert_eq!(
        json_mismatch(&schema, &order(r#"{"map": {"a b": 1}}"#, "[]")),
        "$.payment[\"a b\"]: expected a boolean, got a number"
    );
    assert_eq!(
        json_mismatch(
            &schema,
            &order("null", "[]").replace(r#""status": "NEW""#, r#""status": "OLD""#)
        ),
        "$.status: \"OLD\" is not one of the enum's symbols"
    );
    assert_eq!(
        json_mismatch(
            &schema,
            &order("null", "[]").replace(r#""code": "ab""#, r#""code": "abc""#)
        ),
        "$.code: expected 2 bytes, got 3"
    );
}

#[test]
fn avro_defaults_of_every_kind_fill_missing_fields() {
    let definition = r#"{"type": "record", "name": "D", "fields": [
      {"name": "u", "type": ["string", "null"], "default": "first branch, unwrapped"},
      {"name": "r", "type": {"type": "record", "name": "R", "fields": [
          {"name": "x", "type": "int"}, {"name": "y", "type": "string", "default": "dy"}]},
       "default": {"x": 4}},
      {"name": "a", "type": {"type": "array", "items": "long"}, "default": [1, 2]},
      {"name": "m", "type": {"type": "map", "values": "string"}, "default": {"k": "v"}},
      {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}, "default": "B"},
      {"name": "by", "type": "bytes", "default": "\u00ff"},
      {"name": "f", "type": "float", "default": 0.5}]}"#;
    assert_eq!(
        avro_json(definition, "{}"),
        record(&[
            (
                "u",
                Avro::Union(0, Box::new(Avro::String("first branch, unwrapped".into())))
            ),
            (
                "r",
                record(&[("x", Avro::Int(4)), ("y", Avro::String("dy".into()))])
            ),
            ("a", Avro::Array(vec![Avro::Long(1), Avro::Long(2)])),
            (
                "m",
                Avro::Map(
                    [("k".to_owned(), Avro::String("v".into()))]
                        .into_iter()
                        .collect()
                )
            ),
            ("e", Avro::Enum(1, "B".into())),
            ("by", Avro::Bytes(vec![255])),
            ("f", Avro::Float(0.5)),
        ])
    );
}

/// What the Pub/Sub emulator (Avro's Java `JsonDecoder`) accepts beyond the JSON encoding's
/// letter: fractions for integers (cut off), code points above 255 in bytes (written as `?`),
/// anything after the first JSON value (ignored).
#[test]
fn avro_json_accepted_by_pubsub_beyond_the_letter_transcodes() {
    let value = avro_json(
        PRIMITIVES,
        r#"{"n": null, "b": true, "i": -1.9, "l": 2.5e3, "f": 1, "d": 1, "bytes": "aĀb", "s": ""}
           garbage"#,
    );
    let Avro::Record(fields) = value else {
        panic!("a record")
    };
    assert_eq!(fields[2].1, Avro::Int(-1));
    assert_eq!(fields[3].1, Avro::Long(2500));
    assert_eq!(fields[6].1, Avro::Bytes(b"a?b".to_vec()));
    let value = avro_json(
        r#"{"type": "record", "name": "U", "fields": [{"name": "u", "type": ["string", "null"]}]}"#,
        r#"{"u": {"null": null}}"#,
    );
    assert_eq!(
        value,
        record(&[("u", Avro::Union(1, Box::new(Avro::Null)))])
    );
}

#[test]
fn avro_fields_the_schema_does_not_have_are_left_out() {
    let value = avro_json(
        r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}"#,
        r#"{"a": 1, "extra": [1, 2, 3]}"#,
    );
    assert_eq!(value, record(&[("a", Avro::Int(1))]));
}

#[test]
fn avro_logical_types_are_written_as_the_types_that_carry_them() {
    let definition = r#"{"type": "record", "name": "L", "fields": [
      {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}},
      {"name": "decf", "type": {"type": "fixed", "name": "DecF", "size": 3, "logicalType": "decimal", "precision": 5, "scale": 2}},
      {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
      {"name": "day", "type": {"type": "int", "logicalType": "date"}},
      {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
      {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
      {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
      {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
      {"name": "lms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
      {"name": "dur", "type": {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}},
      {"name": "maybe", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]}]}"#;
    let json = r#"{"dec": "\u0030\u0039", "decf": "\u0000\u0030\u0039",
        "id": "123e4567-e89b-12d3-a456-426614174000", "day": 19000, "tm": 1000, "tu": 2000,
        "ms": 1700000000000, "us": 1700000000000000, "lms": 5,
        "dur": "\u0001\u0000\u0000\u0000\u0002\u0000\u0000\u0000\u0003\u0000\u0000\u0000",
        "maybe": {"long": 1700000000001}}"#;
    let payload = avro(definition)
        .to_binary(DataEncoding::Json, json.as_bytes())
        .unwrap();
    let mut expected = Vec::new();
    expected.extend_from_slice(&[4, 0x30, 0x39]); // bytes: length 2, unscaled 12345
    expected.extend_from_slice(&[0, 0x30, 0x39]); // fixed(3)
    expected.push(72); // 36 characters
    expected.extend_from_slice(b"123e4567-e89b-12d3-a456-426614174000");
    for long in [
        19000,
        1000,
        2000,
        1_700_000_000_000,
        1_700_000_000_000_000,
        5,
    ] {
        super::avro::write_long(&mut expected, long);
    }
    expected.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    expected.push(2); // union branch 1
    super::avro::write_long(&mut expected, 1_700_000_000_001);
    assert_eq!(&payload[..], &expected[..]);
    // apache-avro reads the same bytes as the logical values.
    let Avro::Record(fields) = decode(definition, &payload) else {
        panic!("a record")
    };
    assert_eq!(fields[3].1, Avro::Date(19000));
    assert_eq!(fields[6].1, Avro::TimestampMillis(1_700_000_000_000));
    assert_eq!(
        fields[10].1,
        Avro::Union(1, Box::new(Avro::TimestampMillis(1_700_000_000_001)))
    );
}

const LINKED_LIST: &str = r#"{"type": "record", "name": "Node", "namespace": "list", "fields": [
  {"name": "value", "type": "int"},
  {"name": "next", "type": ["null", "Node"], "default": null}]}"#;

fn linked_list_json(length: usize) -> String {
    let mut json = String::from("null");
    for i in (0..length).rev() {
        json = format!(r#"{{"list.Node": {{"value": {i}, "next": {json}}}}}"#);
    }
    // The outermost node is the record itself, not a union.
    json.strip_prefix(r#"{"list.Node": "#)
        .and_then(|j| j.strip_suffix('}'))
        .unwrap()
        .to_owned()
}

#[test]
fn avro_recursive_records() {
    let value = avro_json(LINKED_LIST, &linked_list_json(3));
    let node = |value, next| record(&[("value", Avro::Int(value)), ("next", next)]);
    let null = Avro::Union(0, Box::new(Avro::Null));
    assert_eq!(
        value,
        node(
            0,
            Avro::Union(
                1,
                Box::new(node(1, Avro::Union(1, Box::new(node(2, null)))))
            )
        )
    );
}

#[test]
fn avro_binary_is_checked_and_borrowed() {
    let schema = avro(NESTED);
    let json = r#"{"status": "PAID", "customer": {"name": "Ann", "email": null},
        "lines": [{"sku": "a", "qty": 2}], "tags": {"x": 1}, "code": "ab",
        "payment": {"map": {"k": true}}}"#;
    let payload = schema
        .to_binary(DataEncoding::Json, json.as_bytes())
        .unwrap()
        .into_owned();
    // The same datum written by apache-avro's own writer.
    let parsed = Schema::parse_str(NESTED).unwrap();
    let written = apache_avro::to_avro_datum(&parsed, decode(NESTED, &payload)).unwrap();
    assert_eq!(written, payload);
    let checked = schema.to_binary(DataEncoding::Binary, &written).unwrap();
    assert!(matches!(checked, Cow::Borrowed(bytes) if bytes == &written[..]));

    let mut trailing = written.clone();
    trailing.push(0);
    assert_eq!(
        binary_mismatch(&schema, &trailing),
        "1 bytes follow the end of the Avro datum"
    );
    assert_eq!(
        binary_mismatch(&schema, &written[..written.len() - 1]),
        "$.payment: the datum ends inside a number"
    );
    assert_eq!(
        binary_mismatch(&schema, &[4]),
        "$.status: enum index 2 is not below the 2 symbols"
    );
    // The datum ends with the union: branch 6, count 1, key length 1, "k", true, end of map.
    assert_eq!(written[written.len() - 6..], [12, 2, 2, b'k', 1, 0]);
    let mut bad_union = written.clone();
    let union_at = bad_union.len() - 6;
    bad_union[union_at] = 16;
    assert_eq!(
        binary_mismatch(&schema, &bad_union),
        "$.payment: union branch 8 is not below the 8 branches"
    );
}

#[test]
fn avro_binary_refuses_strings_that_are_not_utf8_and_overlong_numbers() {
    let schema =
        avro(r#"{"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]}"#);
    assert!(binary_mismatch(&schema, &[2, 0xff]).starts_with("$.s: the string is not UTF-8"));
    assert_eq!(binary_mismatch(&schema, &[1]), "$.s: negative length -1");
    assert_eq!(
        binary_mismatch(&schema, &[8, b'a']),
        "$.s: the datum ends 3 bytes early"
    );
    let long = avro(r#""long""#);
    assert_eq!(
        binary_mismatch(&long, &[0xff; 11]),
        "$: a number longer than 64 bits"
    );
    assert!(
        long.to_binary(
            DataEncoding::Binary,
            &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        )
        .is_ok()
    );
    let int = avro(r#""int""#);
    assert_eq!(
        binary_mismatch(&int, &[0x80, 0x80, 0x80, 0x80, 0x10]),
        "$: 2147483648 does not fit an int"
    );
}

#[test]
fn avro_hostile_block_counts_are_refused_before_any_work() {
    let nulls = avro(r#"{"type": "array", "items": "null"}"#);
    // A block of 2^62 null items: nothing to read, so only the item bound stops it.
    let mut huge = Vec::new();
    super::avro::write_long(&mut huge, 1 << 62);
    huge.push(0);
    assert_eq!(
        binary_mismatch(&nulls, &huge),
        format!(
            "$: a block claims {} items, more than the datum's size allows",
            1u64 << 62
        )
    );
    // Negative counts carry the block's size; a few null items are fine.
    assert!(nulls.to_binary(DataEncoding::Binary, &[5, 0, 0]).is_ok());
    let strings = avro(r#"{"type": "map", "values": "string"}"#);
    let mut claim = Vec::new();
    super::avro::write_long(&mut claim, i64::MAX);
    assert!(binary_mismatch(&strings, &claim).contains("more than the datum's size allows"));
    // A length far beyond the data.
    let bytes = avro(r#""bytes""#);
    assert_eq!(
        binary_mismatch(&bytes, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
        "$: the datum ends 2147483647 bytes early"
    );
}

#[test]
fn avro_data_nested_past_the_bound_is_refused_not_overflowing_the_stack() {
    let schema = avro(LINKED_LIST);
    // Binary: value 0, branch 1 (next), ... 10 000 levels deep, in 20 000 bytes.
    let deep: Vec<u8> = std::iter::repeat_n([0u8, 2u8], 10_000).flatten().collect();
    let error = binary_mismatch(&schema, &deep);
    assert!(error.ends_with("nested deeper than 128 levels"), "{error}");
    assert!(
        schema
            .to_binary(DataEncoding::Json, linked_list_json(60).as_bytes())
            .is_ok()
    );
    // JSON nests 2 levels per node: serde_json's own bound refuses it first.
    let error = json_mismatch(&schema, &linked_list_json(100));
    assert!(
        error.starts_with("the data is not JSON: recursion limit exceeded"),
        "{error}"
    );
}

#[test]
fn avro_defaults_that_would_expand_without_end_are_refused() {
    // Each level would fill the missing field with the same default again. apache-avro checks a
    // default against its type in full, so the schema is refused; the walk's depth bound would
    // stop it otherwise.
    let definition = r#"{"type": "record", "name": "Loop", "fields": [
      {"name": "self", "type": {"type": "array", "items": "Loop"}, "default": [{}]}]}"#;
    let error = TypedSchema::compile(SchemaKind::Avro, definition)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("the Avro schema does not parse: "),
        "{error}"
    );
}

#[test]
fn avro_refuses_definitions_that_do_not_parse() {
    for (definition, start) in [
        ("{", "the Avro schema does not parse: "),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}"#,
            "the Avro schema does not parse: ",
        ),
        (r#""nothing""#, "the Avro schema does not parse: "),
    ] {
        let error = TypedSchema::compile(SchemaKind::Avro, definition)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(start), "{definition}: {error}");
    }
}

#[test]
fn definitions_at_the_nesting_bound_compile_on_a_small_stack() {
    // Arrays of arrays of int: one JSON level each, the innermost `"int"` none.
    let mut avro_definition = String::from(r#""int""#);
    for _ in 0..MAX_DEFINITION_DEPTH {
        avro_definition = format!(r#"{{"type": "array", "items": {avro_definition}}}"#);
    }
    let avro_data = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    // protox allows 31 nested message levels itself; an option's text-format value may nest as
    // deep as the bound (the option is unknown, so the definition is refused after parsing).
    let mut messages = String::from("int32 leaf = 1;");
    for level in (0..31).rev() {
        messages = format!("message M{level} {{ {messages} }}");
    }
    let literal = format!(
        "syntax = \"proto3\"; message A {{ option (o) = {}{} }}",
        "{ a ".repeat(MAX_DEFINITION_DEPTH - 2),
        "}".repeat(MAX_DEFINITION_DEPTH - 2)
    );
    // Tokio's worker threads have 2 MiB stacks: the parsers, unoptimised, fit in half of that.
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            let schema = avro(&avro_definition);
            assert!(
                schema
                    .to_binary(DataEncoding::Json, avro_data.as_bytes())
                    .is_ok()
            );
            proto(&format!("syntax = \"proto3\";\n{messages}"));
            assert!(TypedSchema::compile(SchemaKind::Protobuf, &literal).is_err());
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn avro_frames_single_object_or_confluent() {
    let schema = avro(SIMPLE_AVRO);
    let payload = [6, 4, b'a', b'b'];
    // apache-avro's fingerprint is right for a schema without logical types.
    let parsed = Schema::parse_str(SIMPLE_AVRO).unwrap();
    let fingerprint = parsed.fingerprint::<apache_avro::rabin::Rabin>().bytes;
    let mut single = vec![0xC3, 0x01];
    single.extend_from_slice(&fingerprint);
    single.extend_from_slice(&payload);
    assert_eq!(schema.frame(&payload, None), single);
    assert_eq!(
        schema.frame(&payload, Some(0x0102_0304)),
        [0, 1, 2, 3, 4, 6, 4, b'a', b'b']
    );
    assert_eq!(schema.kind(), SchemaKind::Avro);
    assert_eq!(schema.registry_definition(), (SIMPLE_AVRO, "AVRO"));
}

const SIMPLE_AVRO: &str = r#"{"type": "record", "name": "Simple", "namespace": "test",
  "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}"#;

#[test]
fn simple_avro_record_from_json() {
    let schema = avro(SIMPLE_AVRO);
    let payload = schema
        .to_binary(DataEncoding::Json, br#"{"id": 3, "name": "ab"}"#)
        .unwrap();
    assert_eq!(&payload[..], &[6, 4, b'a', b'b']);
}

const ORDER_PROTO: &str = r#"
syntax = "proto3";
package shop;

// A top-level enum beside the one top-level message.
enum Status { NEW = 0; PAID = 1; }

message Order {
  message Line { string sku = 1; int32 qty = 2; }
  int64 id = 1;
  string customer_name = 2;
  Status status = 3;
  repeated Line lines = 4;
  map<string, int32> tags = 5;
  bytes blob = 6;
  oneof payment { string card = 7; bool cash = 8; }
  double total = 9;
  repeated sint32 deltas = 10;
}
"#;

#[test]
fn protobuf_from_proto3_json() {
    let schema = proto(ORDER_PROTO);
    let payload = schema
        .to_binary(
            DataEncoding::Json,
            br#"{"id": "300", "customerName": "Ann", "status": "PAID",
                 "lines": [{"sku": "a", "qty": 2}], "tags": {"k": 1}, "blob": "AQI=",
                 "cash": true, "total": 0.5, "deltas": [-1, 1]}"#,
        )
        .unwrap();
    let mut expected = vec![0x08, 0xAC, 0x02]; // id 300
    expected.extend_from_slice(&[0x12, 3, b'A', b'n', b'n']); // customer_name
    expected.extend_from_slice(&[0x18, 1]); // status PAID
    expected.extend_from_slice(&[0x22, 5, 0x0A, 1, b'a', 0x10, 2]); // lines[0]
    expected.extend_from_slice(&[0x2A, 5, 0x0A, 1, b'k', 0x10, 1]); // tags entry
    expected.extend_from_slice(&[0x32, 2, 1, 2]); // blob
    expected.extend_from_slice(&[0x40, 1]); // cash
    expected.push(0x49); // total, fixed64
    expected.extend_from_slice(&0.5f64.to_le_bytes());
    expected.extend_from_slice(&[0x52, 2, 1, 2]); // deltas, packed zigzag
    assert_eq!(&payload[..], &expected[..]);

    let checked = schema.to_binary(DataEncoding::Binary, &expected).unwrap();
    assert!(matches!(checked, Cow::Borrowed(_)));
    // The original field names are accepted too, as the JSON mapping requires.
    assert!(
        schema
            .to_binary(DataEncoding::Json, br#"{"customer_name": "Ann"}"#)
            .is_ok()
    );
}

#[test]
fn protobuf_refuses_json_that_does_not_fit_naming_the_field() {
    let schema = proto(ORDER_PROTO);
    let error = json_mismatch(&schema, r#"{"lines": [{"sku": "a"}, {"qty": "x"}]}"#);
    assert!(error.starts_with("$.lines[1].qty: "), "{error}");
    let error = json_mismatch(&schema, r#"{"nope": 1}"#);
    assert!(
        error.starts_with("$: unrecognized field name 'nope'"),
        "{error}"
    );
    let error = json_mismatch(&schema, r#"{"status": "LOST"}"#);
    assert!(error.starts_with("$.status: "), "{error}");
    let error = json_mismatch(&schema, r#"{"id": 1} trailing"#);
    assert!(
        error.starts_with("the data is not JSON: trailing characters"),
        "{error}"
    );
    let error = json_mismatch(&schema, r#"{"id": "#);
    assert!(error.starts_with("the data is not JSON: "), "{error}");
}

#[test]
fn protobuf_binary_that_does_not_decode_is_refused() {
    let schema = proto(ORDER_PROTO);
    let error = binary_mismatch(&schema, &[0x12, 5, b'a']);
    assert!(
        error.starts_with("$: does not decode as shop.Order: "),
        "{error}"
    );
    assert!(binary_mismatch(&schema, &[0xFF]).starts_with("$: does not decode as shop.Order: "));
    // A string field with bytes that are not UTF-8.
    assert!(binary_mismatch(&schema, &[0x12, 1, 0xFF]).contains("shop.Order"));
    // Nested past prost's recursion limit (100): refused, not a stack overflow.
    let recursive = proto("syntax = \"proto3\"; message R { R next = 1; }");
    let mut deep = Vec::new();
    for _ in 0..200 {
        let mut outer = vec![0x0A];
        super::avro::write_varint(&mut outer, deep.len() as u64);
        outer.extend_from_slice(&deep);
        deep = outer;
    }
    assert!(binary_mismatch(&recursive, &deep).contains("recursion limit"));
}

#[test]
fn protobuf_definitions_pubsub_refuses_are_refused() {
    let refusal = |definition: &str| {
        TypedSchema::compile(SchemaKind::Protobuf, definition)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refusal("syntax = \"proto3\"; message A {} message B {}"),
        "the Protocol Buffer definition has 2 top-level message types, Pub/Sub requires exactly one"
    );
    assert_eq!(
        refusal("syntax = \"proto3\"; enum E { X = 0; }"),
        "the Protocol Buffer definition has 0 top-level message types, Pub/Sub requires exactly one"
    );
    let import = refusal(
        "syntax = \"proto3\"; import \"google/protobuf/timestamp.proto\"; message A { google.protobuf.Timestamp t = 1; }",
    );
    assert!(
        import.starts_with("the Protocol Buffer definition does not compile: ")
            && import.contains("google/protobuf/timestamp.proto"),
        "{import}"
    );
    assert!(refusal("message {").starts_with("the Protocol Buffer definition does not compile: "));
    assert!(
        refusal("syntax = \"proto3\"; message A { Missing m = 1; }")
            .starts_with("the Protocol Buffer definition does not compile: ")
    );
}

#[test]
fn protobuf_proto2_definitions_compile() {
    let schema = proto(
        "syntax = \"proto2\"; message P { optional int32 a = 1 [default = 5]; required string b = 2; }",
    );
    let payload = schema
        .to_binary(DataEncoding::Json, br#"{"a": 1, "b": "x"}"#)
        .unwrap();
    assert_eq!(&payload[..], &[0x08, 1, 0x12, 1, b'x']);
}

#[test]
fn protobuf_frames_with_message_indexes_or_bare() {
    let schema = proto(ORDER_PROTO);
    let payload = [0x08, 1];
    assert_eq!(schema.frame(&payload, None), payload);
    assert_eq!(schema.frame(&payload, Some(7)), [0, 0, 0, 0, 7, 0, 0x08, 1]);
    assert_eq!(schema.kind(), SchemaKind::Protobuf);
    assert_eq!(schema.registry_definition(), (ORDER_PROTO, "PROTOBUF"));
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-zA-Z.\u{00}-\u{ff}Ā]{0,6}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("NEW"),
            Just("PAID"),
            Just("null"),
            Just("string"),
            Just("shop.Customer"),
            Just("map"),
            Just("array"),
            Just("list.Node"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("status".to_owned()),
                    Just("customer".to_owned()),
                    Just("name".to_owned()),
                    Just("lines".to_owned()),
                    Just("sku".to_owned()),
                    Just("payment".to_owned()),
                    Just("value".to_owned()),
                    Just("next".to_owned()),
                    Just("list.Node".to_owned()),
                    Just("shop.Customer".to_owned()),
                    Just("id".to_owned()),
                    Just("tags".to_owned()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn property_schemas() -> Vec<TypedSchema> {
    vec![
        avro(NESTED),
        avro(LINKED_LIST),
        avro(PRIMITIVES),
        proto(ORDER_PROTO),
        proto(
            "syntax = \"proto3\"; message R { R next = 1; map<string, R> kids = 2; int32 value = 3; }",
        ),
    ]
}

proptest! {
    /// No input panics, and whatever JSON transcodes is a datum the binary check accepts.
    #[test]
    fn random_json_never_panics_and_what_transcodes_checks(json in arbitrary_json()) {
        let text = json.to_string();
        for schema in property_schemas() {
            if let Ok(payload) = schema.to_binary(DataEncoding::Json, text.as_bytes()) {
                prop_assert!(schema.to_binary(DataEncoding::Binary, &payload).is_ok());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        for schema in property_schemas() {
            let _ = schema.to_binary(DataEncoding::Binary, &data);
            let _ = schema.to_binary(DataEncoding::Json, &data);
        }
    }
}

#[test]
fn avro_binary_mismatch_inside_a_map_names_its_key() {
    let schema = avro(r#"{"type": "map", "values": "int"}"#);
    let mut data = vec![2, 2, b'k'];
    super::avro::write_long(&mut data, 1 << 40);
    data.push(0);
    assert_eq!(
        binary_mismatch(&schema, &data),
        "$[\"k\"]: 1099511627776 does not fit an int"
    );
    assert!(
        binary_mismatch(&schema, &[2, 2, 0xff, 0, 0]).starts_with("$[0]: the map key is not UTF-8")
    );
    assert!(
        schema
            .to_binary(DataEncoding::Binary, &[2, 2, b'k', 4, 0])
            .is_ok()
    );
}
