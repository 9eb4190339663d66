//! Typed values from a Pub/Sub schema revision: one compiled Avro or Protobuf definition turns a
//! message's data (JSON or BINARY encoded, as Pub/Sub validated it) into the binary payload and
//! frames it for Kafka. Pure: no I/O; docs/typed-records.md holds the type mapping.

mod avro;
mod bounds;
mod canonical;
mod protobuf;

use std::borrow::Cow;

/// The Schema API's `type`: `AVRO` | `PROTOCOL_BUFFER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaKind {
    /// An Avro schema (JSON text).
    Avro,
    /// A Protocol Buffer definition (`.proto` text with one top-level message).
    Protobuf,
}

/// The attribute `googclient_schemaencoding`: `JSON` | `BINARY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataEncoding {
    /// Avro's JSON encoding, or proto3's JSON mapping.
    Json,
    /// An Avro binary datum, or protobuf wire bytes.
    Binary,
}

/// A schema definition the bridge refuses to compile.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DefinitionError {
    /// Longer than Pub/Sub lets a definition be.
    #[error(
        "the schema definition has {size} bytes, more than the {limit} a Pub/Sub schema may have"
    )]
    TooLarge {
        /// The definition's length in bytes.
        size: usize,
        /// [`MAX_DEFINITION_BYTES`].
        limit: usize,
    },
    /// Nested deeper than [`MAX_DEFINITION_DEPTH`]; refused before any recursive parser runs.
    #[error("the schema definition nests deeper than {limit} levels")]
    TooDeep {
        /// [`MAX_DEFINITION_DEPTH`].
        limit: usize,
    },
    /// Not a valid Avro schema.
    #[error("the Avro schema does not parse: {0}")]
    Avro(String),
    /// Not a valid `.proto` file (or it imports another file, which Pub/Sub does not allow).
    #[error("the Protocol Buffer definition does not compile: {0}")]
    Protobuf(String),
    /// Pub/Sub requires exactly one top-level message type.
    #[error(
        "the Protocol Buffer definition has {found} top-level message types, Pub/Sub requires exactly one"
    )]
    TopLevelMessages {
        /// How many top-level messages the definition has.
        found: usize,
    },
}

/// The data does not decode with its schema revision.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DataMismatch {
    /// JSON-encoded data that is not JSON (or nests deeper than serde_json allows).
    #[error("the data is not JSON: {0}")]
    NotJson(String),
    /// A value that does not fit the schema at `path` (`$` is the whole datum).
    #[error("{path}: {reason}")]
    Field {
        /// Where in the datum: `$`, `$.field`, `$.list[2]`, `$.map["key"]`.
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// A binary datum followed by bytes the schema has no place for.
    #[error("{0} bytes follow the end of the Avro datum")]
    TrailingBytes(usize),
}

/// One compiled schema revision, shared by every delivery of the revision (behind an `Arc`).
#[derive(Debug)]
pub(crate) struct TypedSchema {
    definition: String,
    compiled: Compiled,
}

#[derive(Debug)]
enum Compiled {
    Avro(avro::AvroSchema),
    Protobuf(protobuf::ProtoSchema),
}

impl TypedSchema {
    /// Compiles a revision's definition; bounded in size and nesting before any parser runs.
    pub(crate) fn compile(kind: SchemaKind, definition: &str) -> Result<Self, DefinitionError> {
        bounds::check_definition(kind, definition)?;
        let compiled = match kind {
            SchemaKind::Avro => Compiled::Avro(avro::AvroSchema::compile(definition)?),
            SchemaKind::Protobuf => Compiled::Protobuf(protobuf::ProtoSchema::compile(definition)?),
        };
        Ok(Self {
            definition: definition.to_owned(),
            compiled,
        })
    }

    /// Avro or Protobuf.
    #[allow(dead_code, reason = "the pubsub-schema value format reads it")]
    pub(crate) fn kind(&self) -> SchemaKind {
        match self.compiled {
            Compiled::Avro(_) => SchemaKind::Avro,
            Compiled::Protobuf(_) => SchemaKind::Protobuf,
        }
    }

    /// The binary payload: Avro binary datum / protobuf wire bytes. JSON data is transcoded;
    /// BINARY data is checked to decode fully (no trailing bytes) and returned borrowed.
    pub(crate) fn to_binary<'a>(
        &self,
        encoding: DataEncoding,
        data: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, DataMismatch> {
        match (&self.compiled, encoding) {
            (Compiled::Avro(schema), DataEncoding::Json) => {
                schema.json_to_binary(data).map(Cow::Owned)
            }
            (Compiled::Avro(schema), DataEncoding::Binary) => {
                schema.check_binary(data).map(|()| Cow::Borrowed(data))
            }
            (Compiled::Protobuf(schema), DataEncoding::Json) => {
                schema.json_to_binary(data).map(Cow::Owned)
            }
            (Compiled::Protobuf(schema), DataEncoding::Binary) => {
                schema.check_binary(data).map(|()| Cow::Borrowed(data))
            }
        }
    }

    /// The record value. With a registry id: Confluent wire format (`0x00`, big-endian `u32` id,
    /// for Protobuf the message indexes, then the payload). Without: Avro single-object encoding
    /// (`C3 01`, the 8-byte little-endian CRC-64-AVRO fingerprint of the canonical form, the
    /// datum); a Protobuf payload as it is.
    pub(crate) fn frame(&self, payload: &[u8], registry_id: Option<u32>) -> Vec<u8> {
        let mut value = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        match (registry_id, &self.compiled) {
            (Some(id), compiled) => {
                // https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html#wire-format:
                // magic byte 0, the schema id as a 4-byte big-endian integer, then (Protobuf
                // only) the message indexes, then the payload.
                value.push(0);
                value.extend_from_slice(&id.to_be_bytes());
                if let Compiled::Protobuf(_) = compiled {
                    // The indexes of the first top-level message, the array [0], are written as
                    // the single byte 0 (same page: "this special case is optimized to just 0");
                    // a Pub/Sub definition has exactly one top-level message, so it is the first.
                    value.push(0);
                }
            }
            (None, Compiled::Avro(schema)) => {
                value.extend_from_slice(schema.single_object_header())
            }
            (None, Compiled::Protobuf(_)) => {}
        }
        value.extend_from_slice(payload);
        value
    }

    /// What a Confluent registry is given: the definition text and its `schemaType`
    /// (`AVRO` | `PROTOBUF`).
    #[allow(dead_code, reason = "the pubsub-schema value format registers it")]
    pub(crate) fn registry_definition(&self) -> (&str, &'static str) {
        let schema_type = match self.kind() {
            SchemaKind::Avro => "AVRO",
            SchemaKind::Protobuf => "PROTOBUF",
        };
        (&self.definition, schema_type)
    }
}

/// The longest header [`TypedSchema::frame`] writes: Avro single-object (2 + 8 bytes).
const FRAME_HEADER_BYTES: usize = 10;

/// The codec for tests and benches outside the crate (tests/typed_values.rs checks its bytes
/// with Python's decoders); hidden because it is not part of the library's API. Names as Pub/Sub
/// spells them: the kind `AVRO` or `PROTOCOL_BUFFER`, the encoding `JSON` or `BINARY`.
#[doc(hidden)]
#[derive(Debug)]
pub struct TestCodec(TypedSchema);

impl TestCodec {
    /// Compiles `definition`; the refusal's message on failure.
    pub fn new(kind: &str, definition: &str) -> Result<Self, String> {
        let kind = match kind {
            "AVRO" => SchemaKind::Avro,
            "PROTOCOL_BUFFER" => SchemaKind::Protobuf,
            other => return Err(format!("unknown schema type {other}")),
        };
        TypedSchema::compile(kind, definition)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// The record value for `data`; the mismatch's message on failure.
    pub fn encode(
        &self,
        encoding: &str,
        data: &[u8],
        registry_id: Option<u32>,
    ) -> Result<Vec<u8>, String> {
        let encoding = match encoding {
            "JSON" => DataEncoding::Json,
            "BINARY" => DataEncoding::Binary,
            other => return Err(format!("unknown encoding {other}")),
        };
        let payload = self
            .0
            .to_binary(encoding, data)
            .map_err(|e| e.to_string())?;
        Ok(self.0.frame(&payload, registry_id))
    }
}

#[cfg(test)]
mod tests;
