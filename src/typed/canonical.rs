//! An Avro schema's Parsing Canonical Form and its CRC-64-AVRO (Rabin) fingerprint, the
//! single-object encoding's schema identity.
//!
//! Written here from the specification rather than taken from apache-avro 0.21, whose
//! `canonical_form` keeps logical types as objects (`{"type":"long"}` instead of `"long"`, a
//! decimal's precision and scale) and calls every duration's fixed type `duration`: its
//! fingerprint differs from Java's and fastavro's for any schema with a logical type
//! (docs/decisions/avro-canonical-form.md).
//! <https://avro.apache.org/docs/1.11.1/specification/#parsing-canonical-form-for-schemas>

use serde_json::Value;

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of a schema's JSON. The caller has parsed the schema with
/// apache-avro already, so the JSON is a valid schema; its depth is bounded (the recursion).
pub(super) fn parsing_canonical_form(schema: &Value) -> String {
    let mut out = String::new();
    write_schema(schema, "", &mut out);
    out
}

fn write_schema(schema: &Value, namespace: &str, out: &mut String) {
    match schema {
        // [FULLNAMES] A reference to a named type, or [PRIMITIVES] a primitive.
        Value::String(name) => write_string(&full_name(name, namespace), out),
        Value::Array(branches) => {
            out.push('[');
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_schema(branch, namespace, out);
            }
            out.push(']');
        }
        Value::Object(object) => write_complex(object, namespace, out),
        // Not a schema: apache-avro refused it before this runs.
        other => out.push_str(&other.to_string()),
    }
}

fn write_complex(object: &serde_json::Map<String, Value>, namespace: &str, out: &mut String) {
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // `{"type": {...}}`: the inner schema is the type.
        Some(inner) => return write_schema(inner, namespace, out),
        None => "",
    };
    match kind {
        "record" | "error" | "enum" | "fixed" => {
            let name = object.get("name").and_then(Value::as_str).unwrap_or("");
            // A dotted name carries its namespace; otherwise the `namespace` attribute, else the
            // enclosing one (https://avro.apache.org/docs/1.11.1/specification/#names).
            let own_namespace = object
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace);
            let full = full_name(name, own_namespace);
            let inner_namespace = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_owned();
            // [ORDER] name, type, fields, symbols, items, values, size.
            out.push_str("{\"name\":");
            write_string(&full, out);
            out.push_str(",\"type\":");
            write_string(if kind == "error" { "record" } else { kind }, out);
            match kind {
                "enum" => {
                    out.push_str(",\"symbols\":");
                    let symbols = object.get("symbols").cloned().unwrap_or_default();
                    out.push_str(&symbols.to_string());
                }
                "fixed" => {
                    // [INTEGERS] a plain integer.
                    let size = object.get("size").and_then(Value::as_u64).unwrap_or(0);
                    out.push_str(&format!(",\"size\":{size}"));
                }
                _ => {
                    out.push_str(",\"fields\":[");
                    let fields = object.get("fields").and_then(Value::as_array);
                    for (i, field) in fields.into_iter().flatten().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str("{\"name\":");
                        let field_name = field.get("name").and_then(Value::as_str).unwrap_or("");
                        write_string(field_name, out);
                        out.push_str(",\"type\":");
                        write_schema(&field["type"], &inner_namespace, out);
                        out.push('}');
                    }
                    out.push(']');
                }
            }
            out.push('}');
        }
        "array" => {
            out.push_str("{\"type\":\"array\",\"items\":");
            write_schema(&object["items"], namespace, out);
            out.push('}');
        }
        "map" => {
            out.push_str("{\"type\":\"map\",\"values\":");
            write_schema(&object["values"], namespace, out);
            out.push('}');
        }
        // [PRIMITIVES] and [STRIP]: `{"type": "long", "logicalType": ...}` is `"long"`.
        primitive => write_string(&full_name(primitive, namespace), out),
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if PRIMITIVES.contains(&name) || name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

/// [STRINGS] JSON strings with only the escapes JSON requires (serde_json's writer).
fn write_string(text: &str, out: &mut String) {
    out.push_str(&Value::from(text).to_string());
}

/// CRC-64-AVRO of `data`, as the specification's reference code computes it
/// (<https://avro.apache.org/docs/1.11.1/specification/#schema-fingerprints>).
pub(super) fn rabin_fingerprint(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let table: [u64; 256] = std::array::from_fn(|i| {
        let mut fp = i as u64;
        for _ in 0..8 {
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
        }
        fp
    });
    data.iter().fold(EMPTY, |fp, &byte| {
        (fp >> 8) ^ table[((fp ^ u64::from(byte)) & 0xff) as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(definition: &str) -> String {
        parsing_canonical_form(&serde_json::from_str(definition).unwrap())
    }

    #[test]
    fn canonical_form_follows_every_rule() {
        assert_eq!(
            canonical(r#"{"type": "int", "logicalType": "date"}"#),
            r#""int""#
        );
        assert_eq!(
            canonical(
                r#"{"type": "record", "name": "R", "namespace": "a.b", "doc": "gone",
                    "aliases": ["x"], "fields": [
                  {"name": "f", "type": {"type": "fixed", "name": "F", "size": 16,
                                         "logicalType": "decimal", "precision": 4}},
                  {"name": "g", "type": ["null", "F", "c.G"], "default": null},
                  {"name": "h", "type": {"type": "enum", "name": "E", "namespace": "n",
                                         "symbols": ["A", "B"]}},
                  {"name": "i", "type": {"type": "record", "name": "x.I", "fields": [
                      {"name": "j", "type": {"type": "array", "items": "I"}},
                      {"name": "k", "type": {"type": "map", "values": {"type": "string",
                                                "logicalType": "uuid"}}}]}},
                  {"name": "l", "type": "E"},
                  {"name": "m", "type": {"type": "bytes", "logicalType": "decimal",
                                         "precision": 9, "scale": 2}},
                  {"name": "s\u00e9", "type": "string"}]}"#
            ),
            concat!(
                r#"{"name":"a.b.R","type":"record","fields":["#,
                r#"{"name":"f","type":{"name":"a.b.F","type":"fixed","size":16}},"#,
                r#"{"name":"g","type":["null","a.b.F","c.G"]},"#,
                r#"{"name":"h","type":{"name":"n.E","type":"enum","symbols":["A","B"]}},"#,
                r#"{"name":"i","type":{"name":"x.I","type":"record","fields":["#,
                r#"{"name":"j","type":{"type":"array","items":"x.I"}},"#,
                r#"{"name":"k","type":{"type":"map","values":"string"}}]}},"#,
                r#"{"name":"l","type":"a.b.E"},"#,
                r#"{"name":"m","type":"bytes"},"#,
                r#"{"name":"sé","type":"string"}]}"#,
            )
        );
    }

    /// Fingerprints from the Avro project's own test vectors
    /// (share/test/data/schema-tests.txt in apache/avro).
    #[test]
    fn rabin_fingerprints_match_the_avro_test_vectors() {
        assert_eq!(
            rabin_fingerprint(br#""null""#) as i64,
            7_195_948_357_588_979_594
        );
        assert_eq!(
            rabin_fingerprint(br#""int""#) as i64,
            8_247_732_601_305_521_295
        );
        assert_eq!(
            rabin_fingerprint(br#"{"name":"foo","type":"fixed","size":15}"#) as i64,
            1_756_455_273_707_447_556
        );
    }
}
