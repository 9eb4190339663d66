//! Protocol Buffers: proto3's JSON mapping → wire bytes, and the check that wire bytes decode.
//!
//! protox compiles the `.proto` text at run time and prost-reflect reads and writes messages of
//! it (`DynamicMessage`, its serde support for the JSON mapping,
//! <https://protobuf.dev/programming-guides/json/>).

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde::de::DeserializeSeed as _;

use super::{DataMismatch, DefinitionError};

/// The name the definition is compiled under; it appears in no output.
const FILE_NAME: &str = "pubsub_schema.proto";

/// A compiled Protocol Buffer definition: its one top-level message.
#[derive(Debug)]
pub(super) struct ProtoSchema {
    message: MessageDescriptor,
}

/// Serves the one file; any import is refused. Pub/Sub: "you must define only one top-level
/// type. Import statements that reference other types aren't supported"
/// (<https://cloud.google.com/pubsub/docs/schemas>).
/// The text is owned: protox's resolver must be `'static`.
struct DefinitionOnly(String);

impl protox::file::FileResolver for DefinitionOnly {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == FILE_NAME {
            protox::file::File::from_source(name, &self.0)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

impl ProtoSchema {
    pub(super) fn compile(definition: &str) -> Result<Self, DefinitionError> {
        let mut compiler =
            protox::Compiler::with_file_resolver(DefinitionOnly(definition.to_owned()));
        compiler
            .open_file(FILE_NAME)
            .map_err(|e| DefinitionError::Protobuf(e.to_string()))?;
        let pool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(FILE_NAME)
            .ok_or_else(|| DefinitionError::Protobuf("the file did not compile".into()))?;
        let mut messages = file.messages();
        match (messages.next(), messages.len()) {
            (Some(message), 0) => Ok(Self { message }),
            (first, more) => Err(DefinitionError::TopLevelMessages {
                found: usize::from(first.is_some()) + more,
            }),
        }
    }

    /// proto3 JSON → wire bytes. Unknown fields are refused, as the JSON mapping's parsers do
    /// unless told otherwise.
    pub(super) fn json_to_binary(&self, data: &[u8]) -> Result<Vec<u8>, DataMismatch> {
        let mut json = serde_json::Deserializer::from_slice(data);
        let mut track = serde_path_to_error::Track::new();
        let message = self
            .message
            .clone()
            .deserialize(serde_path_to_error::Deserializer::new(
                &mut json, &mut track,
            ))
            .map_err(|e| mismatch(&track.path(), e))?;
        json.end()
            .map_err(|e| DataMismatch::NotJson(e.to_string()))?;
        Ok(message.encode_to_vec())
    }

    /// Checks that `data` decodes as the message. Protobuf has no end marker: the whole buffer
    /// is the message, so nothing can trail it.
    pub(super) fn check_binary(&self, data: &[u8]) -> Result<(), DataMismatch> {
        DynamicMessage::decode(self.message.clone(), data)
            .map(drop)
            .map_err(|e| DataMismatch::Field {
                path: "$".into(),
                reason: format!("does not decode as {}: {e}", self.message.full_name()),
            })
    }
}

/// A JSON error: syntax errors are "not JSON", the rest name the field path.
fn mismatch(path: &serde_path_to_error::Path, error: serde_json::Error) -> DataMismatch {
    if error.is_syntax() || error.is_eof() {
        return DataMismatch::NotJson(error.to_string());
    }
    let path = path.to_string();
    DataMismatch::Field {
        path: if path == "." {
            "$".into()
        } else {
            format!("$.{path}")
        },
        reason: error.to_string(),
    }
}
