//! Value encoding's settings, declared once for the flag, the variable, the default and the
//! help, and turned into the [`ValueFormat`] records are written in.

use super::ValueFormat;
use crate::setting::{ConfigError, Setting, boolean, invalid, parsed};

/// How record values are written.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Record")]
pub(crate) struct EncodeSettings {
    /// `raw`, `json`, `avro`, `protobuf` or `pubsub-schema`
    #[arg(
        long,
        env = "KAFKA_VALUE_FORMAT",
        value_name = "FORMAT",
        global = true,
        default_value = "raw",
        value_parser = parsed::<ValueFormat>(),
    )]
    kafka_value_format: Setting<ValueFormat>,
    /// With json: embed a payload that is valid UTF-8 JSON as JSON
    #[arg(
        long,
        env = "KAFKA_JSON_EMBED_DATA",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        global = true,
        value_parser = boolean(),
    )]
    kafka_json_embed_data: Setting<bool>,
}

impl EncodeSettings {
    /// The value format, with `KAFKA_JSON_EMBED_DATA` applied to the format it belongs to.
    pub(crate) fn settings(&self) -> Result<ValueFormat, ConfigError> {
        let format = self.kafka_value_format.value()?;
        let embed = self.kafka_json_embed_data.value()?;
        match format {
            ValueFormat::Json { .. } => Ok(ValueFormat::Json {
                embed_json_data: embed,
            }),
            _ if embed => Err(invalid(
                "KAFKA_JSON_EMBED_DATA",
                "true",
                "only applies with KAFKA_VALUE_FORMAT=json",
            )),
            other => Ok(other),
        }
    }
}
