//! The codec against hand-computed bytes, for both kinds and both encodings.

use super::*;

const SIMPLE_AVRO: &str = r#"{"type": "record", "name": "Simple", "namespace": "test",
  "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}"#;

#[test]
fn simple_avro_record_from_json() {
    let schema = TypedSchema::compile(SchemaKind::Avro, SIMPLE_AVRO).unwrap();
    let payload = schema
        .to_binary(DataEncoding::Json, br#"{"id": 3, "name": "ab"}"#)
        .unwrap();
    assert_eq!(&payload[..], &[6, 4, b'a', b'b']);
}
