//! The bounds on definitions and data: checked by flat scans before any recursive parser runs,
//! so a hostile definition cannot exhaust the stack or the memory.

use super::{DefinitionError, SchemaKind};

/// Pub/Sub refuses a schema whose definition field exceeds 300 KB ("Schema definition field
/// cannot exceed 300 KB in size", <https://cloud.google.com/pubsub/docs/schemas#quotas_and_limits>),
/// so no larger revision can exist; read generously as KiB.
pub(crate) const MAX_DEFINITION_BYTES: usize = 300 * 1024;

/// The deepest nesting of brackets (`{`, `[`, `(`) a definition may have, so that the recursive
/// parsers (apache-avro's schema parser, protox's) fit in a fraction of a Tokio worker's 2 MiB
/// stack: at this depth an unoptimised build needs under 1 MiB (a unit test runs them on a
/// 1 MiB thread). An Avro record nested in a record costs 3 JSON levels (4 through a union), so
/// 16 to 21 record levels fit; protox allows 31 nested messages itself.
pub(crate) const MAX_DEFINITION_DEPTH: usize = 64;

/// The deepest nesting of values in one datum, JSON or binary: serde_json's own recursion limit
/// (128) for JSON text, and the bound of the hand-written Avro walks. prost's decoder has its
/// own, 100 nested messages (`prost::encoding::RECURSION_LIMIT`).
pub(crate) const MAX_DATA_DEPTH: usize = 128;

/// Refuses a definition that is too long or nests too deeply, without recursion.
pub(super) fn check_definition(kind: SchemaKind, definition: &str) -> Result<(), DefinitionError> {
    if definition.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionError::TooLarge {
            size: definition.len(),
            limit: MAX_DEFINITION_BYTES,
        });
    }
    let depth = match kind {
        SchemaKind::Avro => json_depth(definition.as_bytes()),
        SchemaKind::Protobuf => proto_depth(definition.as_bytes()),
    };
    if depth > MAX_DEFINITION_DEPTH {
        return Err(DefinitionError::TooDeep {
            limit: MAX_DEFINITION_DEPTH,
        });
    }
    Ok(())
}

/// The deepest bracket nesting of JSON text, brackets inside strings not counted. Malformed text
/// gets some number; the parser refuses it afterwards.
fn json_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut bytes = text.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'"' => {
                // Skip the string: to the next quote that is not escaped.
                while let Some(&inner) = bytes.next() {
                    match inner {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The deepest bracket nesting of `.proto` text: `{` (messages, enums, option literals), `[`
/// (field options), `(` (option names); strings and comments skipped.
fn proto_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut i = 0;
    while let Some(&byte) = text.get(i) {
        i += 1;
        match byte {
            b'"' | b'\'' => {
                while let Some(&inner) = text.get(i) {
                    i += 1;
                    match inner {
                        b'\\' => i += 1,
                        _ if inner == byte => break,
                        _ => {}
                    }
                }
            }
            b'/' if text.get(i) == Some(&b'/') => {
                while text.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'/' if text.get(i) == Some(&b'*') => {
                i += 1;
                while i < text.len() && !text[i..].starts_with(b"*/") {
                    i += 1;
                }
                i += 2;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(br#"{"a": [1, {"b": "}}]]{{"}]}"#), 3);
        assert_eq!(json_depth(br#"{"a\"{": "[\\"}"#), 1);
        assert_eq!(json_depth(b"\"string\""), 0);
        assert_eq!(json_depth(b"]]]{"), 1);
    }

    #[test]
    fn proto_depth_skips_strings_and_comments() {
        let text = br#"
            // { not counted
            /* { nor [ this */
            message A { string s = 1 [default = "{{{", json_name = '(']; message B { } }
        "#;
        assert_eq!(proto_depth(text), 2);
        assert_eq!(proto_depth(b"message A { /* unterminated {"), 1);
        assert_eq!(proto_depth(b"message A { string s = 1 [(x) = 1]; }"), 3);
    }

    #[test]
    fn refuses_a_definition_over_the_pubsub_size_limit() {
        let big = format!("\"{}\"", " ".repeat(MAX_DEFINITION_BYTES - 1));
        assert!(matches!(
            check_definition(SchemaKind::Avro, &big),
            Err(DefinitionError::TooLarge { size, limit: MAX_DEFINITION_BYTES }) if size == MAX_DEFINITION_BYTES + 1
        ));
        let fits = format!("\"{}\"", " ".repeat(MAX_DEFINITION_BYTES - 2));
        assert!(check_definition(SchemaKind::Avro, &fits).is_ok());
    }

    #[test]
    fn refuses_nesting_one_level_past_the_bound() {
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_definition(SchemaKind::Avro, &at(MAX_DEFINITION_DEPTH)).is_ok());
        let error = check_definition(SchemaKind::Avro, &at(MAX_DEFINITION_DEPTH + 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the schema definition nests deeper than 64 levels"
        );
        let proto = |n: usize| format!("{}{}", "message M {".repeat(n), "}".repeat(n));
        assert!(check_definition(SchemaKind::Protobuf, &proto(MAX_DEFINITION_DEPTH)).is_ok());
        assert!(matches!(
            check_definition(SchemaKind::Protobuf, &proto(MAX_DEFINITION_DEPTH + 1)),
            Err(DefinitionError::TooDeep { .. })
        ));
    }
}
