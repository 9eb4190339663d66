//! Message → record value: raw bytes, JSON, Avro (single-object encoding) or Pub/Sub's protobuf.

use std::collections::{BTreeMap, HashMap};

use apache_avro::Schema;
use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::types::Value as AvroValue;
use base64::Engine as _;
use serde::Serialize;

use crate::envelope::PubsubMessage;

/// The Avro schema of the `avro` value format; shipped in the repository for consumers.
pub const AVRO_SCHEMA: &str = include_str!("../schemas/pubsub_message.avsc");

/// `KAFKA_VALUE_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// The decoded payload, untouched.
    Raw,
    /// A JSON object with every field and `data` as base64; with `embed_json_data`
    /// (`KAFKA_JSON_EMBED_DATA=true`) a payload that is valid UTF-8 JSON is embedded as JSON.
    Json {
        /// Embed JSON payloads instead of base64 (adds `data_encoding`).
        embed_json_data: bool,
    },
    /// Avro single-object encoding of `schemas/pubsub_message.avsc`.
    Avro,
    /// Serialized `google.pubsub.v1.PubsubMessage`.
    Protobuf,
}

impl std::str::FromStr for ValueFormat {
    type Err = &'static str;

    /// `raw`, `json` (without embedding; `KAFKA_JSON_EMBED_DATA` sets that), `avro` or `protobuf`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "raw" => Ok(Self::Raw),
            "json" => Ok(Self::Json {
                embed_json_data: false,
            }),
            "avro" => Ok(Self::Avro),
            "protobuf" => Ok(Self::Protobuf),
            _ => Err("expected raw, json, avro or protobuf"),
        }
    }
}

/// A message that cannot be written in the configured format.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The Avro writer refused the datum.
    #[error("avro encoding failed: {0}")]
    Avro(String),
    /// serde_json failed (cannot happen for these types, kept typed rather than unwrapped).
    #[error("json encoding failed: {0}")]
    Json(String),
}

/// Encodes values in one format; built once at startup (the Avro schema is parsed once).
#[derive(Debug)]
pub struct Encoder {
    format: ValueFormat,
    avro: Option<AvroWriter>,
}

#[derive(Debug)]
struct AvroWriter {
    schema: Schema,
    /// `0xC3 0x01` plus the schema's CRC-64-AVRO fingerprint (little-endian).
    header: Vec<u8>,
}

impl Encoder {
    /// An encoder for `format`.
    pub fn new(format: ValueFormat) -> Self {
        let avro = (format == ValueFormat::Avro).then(|| {
            let schema = Schema::parse_str(AVRO_SCHEMA).expect("the bundled Avro schema is valid");
            let header = RabinFingerprintHeader::from_schema(&schema).build_header();
            AvroWriter { schema, header }
        });
        Self { format, avro }
    }

    /// The configured format.
    pub fn format(&self) -> ValueFormat {
        self.format
    }

    /// The record value for `message`; the raw format moves the payload without copying it.
    pub fn encode(&self, message: PubsubMessage) -> Result<Vec<u8>, EncodeError> {
        self.encode_framed(message, None)
    }

    /// Like [`Encoder::encode`]; with a registry schema id, Avro values use the Confluent wire
    /// format (`0x00`, the id big-endian, the datum) instead of single-object encoding.
    pub fn encode_framed(
        &self,
        message: PubsubMessage,
        schema_id: Option<u32>,
    ) -> Result<Vec<u8>, EncodeError> {
        match (self.format, &self.avro) {
            (ValueFormat::Raw, _) => Ok(message.data),
            (ValueFormat::Json { embed_json_data }, _) => encode_json(&message, embed_json_data),
            (ValueFormat::Avro, Some(avro)) => {
                let confluent;
                let header: &[u8] = match schema_id {
                    Some(id) => {
                        confluent = confluent_header(id);
                        &confluent
                    }
                    None => &avro.header,
                };
                encode_avro(&avro.schema, header, message)
            }
            (ValueFormat::Avro, None) => Err(EncodeError::Avro("writer not initialised".into())),
            (ValueFormat::Protobuf, _) => Ok(encode_protobuf(message)),
        }
    }
}

/// Confluent wire format header: magic byte 0 and the schema id, big-endian.
fn confluent_header(schema_id: u32) -> [u8; 5] {
    let id = schema_id.to_be_bytes();
    [0, id[0], id[1], id[2], id[3]]
}

#[derive(Serialize)]
struct JsonValue<'a> {
    message_id: &'a str,
    publish_time: &'a str,
    subscription: &'a str,
    ordering_key: Option<&'a str>,
    attributes: &'a BTreeMap<String, String>,
    delivery_attempt: Option<u32>,
    data: JsonData<'a>,
    /// Present only with `KAFKA_JSON_EMBED_DATA`: `"json"` or `"base64"`, so readers know
    /// whether a string `data` is a JSON string payload or base64 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_encoding: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonData<'a> {
    Base64(String),
    Embedded(&'a serde_json::value::RawValue),
}

fn encode_json(message: &PubsubMessage, embed_json_data: bool) -> Result<Vec<u8>, EncodeError> {
    let embedded = embed_json_data
        .then(|| std::str::from_utf8(&message.data).ok())
        .flatten()
        .and_then(|text| serde_json::from_str::<&serde_json::value::RawValue>(text).ok());
    let (data, data_encoding) = match embedded {
        Some(raw) => (JsonData::Embedded(raw), Some("json")),
        None => (
            JsonData::Base64(base64::engine::general_purpose::STANDARD.encode(&message.data)),
            embed_json_data.then_some("base64"),
        ),
    };
    serde_json::to_vec(&JsonValue {
        message_id: &message.message_id,
        publish_time: &message.publish_time,
        subscription: &message.subscription,
        ordering_key: message.ordering_key.as_deref(),
        attributes: &message.attributes,
        delivery_attempt: message.delivery_attempt,
        data,
        data_encoding,
    })
    .map_err(|e| EncodeError::Json(e.to_string()))
}

fn encode_avro(
    schema: &Schema,
    header: &[u8],
    message: PubsubMessage,
) -> Result<Vec<u8>, EncodeError> {
    let nullable = |value: Option<AvroValue>| match value {
        None => AvroValue::Union(0, Box::new(AvroValue::Null)),
        Some(v) => AvroValue::Union(1, Box::new(v)),
    };
    let attributes: HashMap<String, AvroValue> = message
        .attributes
        .into_iter()
        .map(|(k, v)| (k, AvroValue::String(v)))
        .collect();
    let record = AvroValue::Record(vec![
        ("message_id".into(), AvroValue::String(message.message_id)),
        (
            "publish_time".into(),
            AvroValue::String(message.publish_time),
        ),
        (
            "subscription".into(),
            AvroValue::String(message.subscription),
        ),
        (
            "ordering_key".into(),
            nullable(message.ordering_key.map(AvroValue::String)),
        ),
        ("attributes".into(), AvroValue::Map(attributes)),
        (
            "delivery_attempt".into(),
            nullable(message.delivery_attempt.map(|a| AvroValue::Int(a as i32))),
        ),
        ("data".into(), AvroValue::Bytes(message.data)),
    ]);
    let datum =
        apache_avro::to_avro_datum(schema, record).map_err(|e| EncodeError::Avro(e.to_string()))?;
    let mut value = Vec::with_capacity(header.len() + datum.len());
    value.extend_from_slice(header);
    value.extend_from_slice(&datum);
    Ok(value)
}

/// `google.pubsub.v1.PubsubMessage`, field numbers as in Google's `pubsub.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PubsubMessageProto {
    /// The payload.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Attributes.
    #[prost(btree_map = "string, string", tag = "2")]
    pub attributes: BTreeMap<String, String>,
    /// Message id.
    #[prost(string, tag = "3")]
    pub message_id: String,
    /// Publish time.
    #[prost(message, optional, tag = "4")]
    pub publish_time: Option<ProtoTimestamp>,
    /// Ordering key (empty when none).
    #[prost(string, tag = "5")]
    pub ordering_key: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ProtoTimestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The publish time at full precision from its RFC 3339 text; from the milliseconds when the
/// text is absent (an unwrapped push without metadata, stamped with the receive time).
fn proto_timestamp(publish_time: &str, publish_time_ms: i64) -> ProtoTimestamp {
    chrono::DateTime::parse_from_rfc3339(publish_time)
        .map(|t| ProtoTimestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        })
        .unwrap_or(ProtoTimestamp {
            seconds: publish_time_ms.div_euclid(1000),
            nanos: (publish_time_ms.rem_euclid(1000) * 1_000_000) as i32,
        })
}

fn encode_protobuf(message: PubsubMessage) -> Vec<u8> {
    use prost::Message as _;
    let publish_time = proto_timestamp(&message.publish_time, message.publish_time_ms);
    PubsubMessageProto {
        data: message.data,
        attributes: message.attributes,
        message_id: message.message_id,
        publish_time: Some(publish_time),
        ordering_key: message.ordering_key.unwrap_or_default(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_format_name_parses_and_nothing_else() {
        let parsed: Vec<_> = ["raw", "json", "avro", "protobuf"]
            .iter()
            .map(|name| name.parse::<ValueFormat>())
            .collect();
        assert_eq!(
            parsed,
            [
                Ok(ValueFormat::Raw),
                Ok(ValueFormat::Json {
                    embed_json_data: false
                }),
                Ok(ValueFormat::Avro),
                Ok(ValueFormat::Protobuf),
            ]
        );
        assert!("Avro".parse::<ValueFormat>().is_err());
        assert!("".parse::<ValueFormat>().is_err());
    }

    #[test]
    fn protobuf_publish_time_keeps_nanoseconds_or_falls_back_to_milliseconds() {
        let full = proto_timestamp("2021-02-26T19:13:55.749123456Z", 0);
        assert_eq!((full.seconds, full.nanos), (1_614_366_835, 749_123_456));
        let fallback = proto_timestamp("", 1_614_366_835_749);
        assert_eq!(
            (fallback.seconds, fallback.nanos),
            (1_614_366_835, 749_000_000)
        );
        // Before 1970 the nanos stay positive, as protobuf's Timestamp requires.
        let early = proto_timestamp("", -1_500);
        assert_eq!((early.seconds, early.nanos), (-2, 500_000_000));
    }
    use prost::Message as _;

    fn message() -> PubsubMessage {
        PubsubMessage {
            data: vec![0, 159, 146, 150, b'x'],
            attributes: [("a".to_owned(), "1".to_owned())].into_iter().collect(),
            message_id: "m1".into(),
            publish_time: "2021-02-26T19:13:55.749123456Z".into(),
            publish_time_ms: 1_614_366_835_749,
            ordering_key: Some("k".into()),
            subscription: "projects/p/subscriptions/s".into(),
            delivery_attempt: Some(4),
        }
    }

    #[test]
    fn raw_is_the_payload_untouched() {
        assert_eq!(
            Encoder::new(ValueFormat::Raw).encode(message()).unwrap(),
            message().data
        );
    }

    #[test]
    fn json_carries_every_field_and_base64_data() {
        let value = Encoder::new(ValueFormat::Json {
            embed_json_data: false,
        })
        .encode(message())
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "message_id": "m1",
                "publish_time": "2021-02-26T19:13:55.749123456Z",
                "subscription": "projects/p/subscriptions/s",
                "ordering_key": "k",
                "attributes": {"a": "1"},
                "delivery_attempt": 4,
                "data": "AJ+Slng="
            })
        );
        let bare = PubsubMessage {
            ordering_key: None,
            delivery_attempt: None,
            ..message()
        };
        let v: serde_json::Value = serde_json::from_slice(
            &Encoder::new(ValueFormat::Json {
                embed_json_data: false,
            })
            .encode(bare)
            .unwrap(),
        )
        .unwrap();
        assert!(v["ordering_key"].is_null() && v["delivery_attempt"].is_null());
    }

    #[test]
    fn avro_is_single_object_encoded_and_round_trips() {
        let value = Encoder::new(ValueFormat::Avro).encode(message()).unwrap();
        assert_eq!(&value[..2], &[0xC3, 0x01]);
        let schema = Schema::parse_str(AVRO_SCHEMA).unwrap();
        let fingerprint = schema.fingerprint::<apache_avro::rabin::Rabin>();
        assert_eq!(&value[2..10], &fingerprint.bytes[..]);
        let decoded = apache_avro::from_avro_datum(&schema, &mut &value[10..], None).unwrap();
        let AvroValue::Record(fields) = decoded else {
            panic!("not a record")
        };
        assert_eq!(fields[0].1, AvroValue::String("m1".into()));
        assert_eq!(
            fields[3].1,
            AvroValue::Union(1, Box::new(AvroValue::String("k".into())))
        );
        assert_eq!(
            fields[5].1,
            AvroValue::Union(1, Box::new(AvroValue::Int(4)))
        );
        assert_eq!(fields[6].1, AvroValue::Bytes(message().data));
    }

    #[test]
    fn protobuf_decodes_as_pubsub_message_with_nanosecond_time() {
        let value = Encoder::new(ValueFormat::Protobuf)
            .encode(message())
            .unwrap();
        let decoded = PubsubMessageProto::decode(value.as_slice()).unwrap();
        assert_eq!(decoded.data, message().data);
        assert_eq!(decoded.message_id, "m1");
        assert_eq!(decoded.ordering_key, "k");
        assert_eq!(decoded.attributes.get("a").map(String::as_str), Some("1"));
        assert_eq!(
            decoded.publish_time,
            Some(ProtoTimestamp {
                seconds: 1_614_366_835,
                nanos: 749_123_456
            })
        );
    }

    #[test]
    fn json_embeds_json_payloads_when_asked() {
        let encoder = Encoder::new(ValueFormat::Json {
            embed_json_data: true,
        });
        let json_payload = PubsubMessage {
            data: br#"{"order": 42, "items": ["a"]}"#.to_vec(),
            ..message()
        };
        let v: serde_json::Value =
            serde_json::from_slice(&encoder.encode(json_payload).unwrap()).unwrap();
        assert_eq!(v["data"], serde_json::json!({"order": 42, "items": ["a"]}));
        assert_eq!(v["data_encoding"], "json");
        let v: serde_json::Value =
            serde_json::from_slice(&encoder.encode(message()).unwrap()).unwrap();
        assert_eq!(v["data"], "AJ+Slng=");
        assert_eq!(v["data_encoding"], "base64");
        let text = PubsubMessage {
            data: b"not json".to_vec(),
            ..message()
        };
        let v: serde_json::Value = serde_json::from_slice(&encoder.encode(text).unwrap()).unwrap();
        assert_eq!(v["data_encoding"], "base64");
    }

    #[test]
    fn avro_with_a_registry_id_uses_the_confluent_wire_format() {
        let value = Encoder::new(ValueFormat::Avro)
            .encode_framed(message(), Some(258))
            .unwrap();
        assert_eq!(&value[..5], &[0, 0, 0, 1, 2]);
        let schema = Schema::parse_str(AVRO_SCHEMA).unwrap();
        assert!(apache_avro::from_avro_datum(&schema, &mut &value[5..], None).is_ok());
    }
}
