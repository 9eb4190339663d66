//! Message → record value: raw bytes, JSON, Avro (single-object encoding), Pub/Sub's protobuf,
//! or the typed record of the message's own schema revision (`pubsub-schema`).

pub(crate) mod settings;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use apache_avro::Schema;
use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use base64::Engine as _;
use serde::Serialize;

use crate::envelope::PubsubMessage;
use crate::typed::{DataEncoding, TypedSchema};

/// The Avro schema of the `avro` value format; shipped in the repository for consumers.
pub const AVRO_SCHEMA: &str = include_str!("../schemas/pubsub_message.avsc");

/// `KAFKA_VALUE_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueFormat {
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
    /// The data as a typed record of the schema revision its attributes name (Avro binary
    /// datum or protobuf wire bytes, framed); the data untouched when it names none.
    PubsubSchema,
}

impl std::str::FromStr for ValueFormat {
    type Err = &'static str;

    /// `raw`, `json` (without embedding; `KAFKA_JSON_EMBED_DATA` sets that), `avro`, `protobuf`
    /// or `pubsub-schema`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "raw" => Ok(Self::Raw),
            "json" => Ok(Self::Json {
                embed_json_data: false,
            }),
            "avro" => Ok(Self::Avro),
            "protobuf" => Ok(Self::Protobuf),
            "pubsub-schema" => Ok(Self::PubsubSchema),
            _ => Err("expected raw, json, avro, protobuf or pubsub-schema"),
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
    /// The data does not decode with the schema revision it names (`pubsub-schema`).
    #[error("the data does not decode with schema {revision}: {mismatch}")]
    SchemaMismatch {
        /// `projects/P/schemas/S@REVISION`.
        revision: String,
        /// Where and why (the codec's `DataMismatch`, as text).
        mismatch: String,
    },
}

/// Encodes values in one format; built once at startup (the Avro schema is parsed once).
#[derive(Debug)]
pub(crate) struct Encoder {
    format: ValueFormat,
    avro: Option<AvroWriter>,
}

#[derive(Debug)]
struct AvroWriter {
    /// `0xC3 0x01` plus the schema's CRC-64-AVRO fingerprint (little-endian).
    header: Vec<u8>,
}

impl Encoder {
    /// An encoder for `format`.
    pub(crate) fn new(format: ValueFormat) -> Self {
        let avro = (format == ValueFormat::Avro).then(|| {
            let schema = Schema::parse_str(AVRO_SCHEMA).expect("the bundled Avro schema is valid");
            let header = RabinFingerprintHeader::from_schema(&schema).build_header();
            AvroWriter { header }
        });
        Self { format, avro }
    }

    /// The record value for `message`.
    #[cfg(test)]
    pub(crate) fn encode(&self, mut message: PubsubMessage) -> Result<Vec<u8>, EncodeError> {
        self.encode_framed(&mut message, None)
    }

    /// Like [`Encoder::encode`]; with a registry schema id, Avro values use the Confluent wire
    /// format (`0x00`, the id big-endian, the datum) instead of single-object encoding.
    ///
    /// The raw format moves the payload out of `message` (no copy); the others read it and
    /// write the value in one allocation. The rest of `message` is left for the headers.
    pub(crate) fn encode_framed(
        &self,
        message: &mut PubsubMessage,
        schema_id: Option<u32>,
    ) -> Result<Vec<u8>, EncodeError> {
        match (self.format, &self.avro) {
            (ValueFormat::Raw | ValueFormat::PubsubSchema, _) => {
                Ok(std::mem::take(&mut message.data))
            }
            (ValueFormat::Json { embed_json_data }, _) => encode_json(message, embed_json_data),
            (ValueFormat::Avro, Some(avro)) => {
                let confluent;
                let header: &[u8] = match schema_id {
                    Some(id) => {
                        confluent = confluent_header(id);
                        &confluent
                    }
                    None => &avro.header,
                };
                Ok(encode_avro(header, message))
            }
            (ValueFormat::Avro, None) => Err(EncodeError::Avro("writer not initialised".into())),
            (ValueFormat::Protobuf, _) => Ok(encode_protobuf(message)),
        }
    }
}

impl Encoder {
    /// `pubsub-schema`: `message`'s data, written with `encoding` (as its attributes say), as
    /// the binary record of `schema` (revision `revision`), framed for a registry id or without.
    /// BINARY data is checked to decode and used as it is; JSON data is transcoded.
    pub(crate) fn encode_typed(
        &self,
        message: &PubsubMessage,
        schema: &TypedSchema,
        encoding: DataEncoding,
        revision: &str,
        registry_id: Option<u32>,
    ) -> Result<Vec<u8>, EncodeError> {
        let payload = schema
            .to_binary(encoding, &message.data)
            .map_err(|mismatch| EncodeError::SchemaMismatch {
                revision: revision.to_owned(),
                mismatch: mismatch.to_string(),
            })?;
        Ok(schema.frame(&payload, registry_id))
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
    delivery_attempt: Option<i32>,
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
        .and_then(|text| serde_json::from_str::<&serde_json::value::RawValue>(text).ok())
        .filter(|raw| embeddable(raw.get()));
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

/// Deepest nesting (open arrays and objects) of a payload embedded as JSON; a deeper one is
/// written as base64. The record around it adds one level, so every record nests at most 64
/// deep: the lowest default limit among mainstream JSON parsers (.NET's System.Text.Json
/// `MaxDepth` and Json.NET 13's: 64; Ruby's `max_nesting`: 100; serde_json: 128; Jackson's
/// `StreamReadConstraints` and Python's recursion limit: about 1,000). A record a consumer
/// cannot parse loses its metadata too, not only its data.
pub(crate) const MAX_EMBEDDED_JSON_DEPTH: usize = 63;

/// Whether a payload, already read as one JSON value, may be embedded as it is: nesting at
/// most [`MAX_EMBEDDED_JSON_DEPTH`] and no object with a key twice (after unescaping), since
/// parsers disagree on which of two values a repeated key has (RFC 8259 section 4 leaves it
/// open: the first, the last, or an error).
///
/// One pass without recursion: the open containers are a stack bounded by the depth limit,
/// strings are skipped with memchr, and each object's keys go into a hash set, so the cost is
/// linear in the payload whatever its shape.
fn embeddable(text: &str) -> bool {
    embeddable_scan(text).is_some()
}

fn embeddable_scan(text: &str) -> Option<()> {
    let bytes = text.as_bytes();
    // One entry per open container: the keys of an object so far, `None` for an array.
    let mut open: Vec<Option<ObjectKeys<'_>>> = Vec::new();
    // Emptied key sets of closed objects, reused so a payload of many objects allocates few.
    let mut spare: Vec<ObjectKeys<'_>> = Vec::new();
    // Whether the next string is an object key (after `{` or an object's `,`).
    let mut key_next = false;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                let (end, escaped) = string_end(bytes, at + 1)?;
                if key_next {
                    // Quotes are ASCII, so both ends of the contents are char boundaries.
                    let key = match escaped {
                        false => Cow::Borrowed(text.get(at + 1..end)?),
                        true => Cow::Owned(serde_json::from_str(text.get(at..=end)?).ok()?),
                    };
                    if !open.last_mut()?.as_mut()?.insert(key) {
                        return None;
                    }
                    key_next = false;
                }
                at = end;
            }
            b'[' | b'{' => {
                if open.len() == MAX_EMBEDDED_JSON_DEPTH {
                    return None;
                }
                let object = byte == b'{';
                open.push(object.then(|| spare.pop().unwrap_or_default()));
                key_next = object;
            }
            b']' | b'}' => {
                if let Some(mut keys) = open.pop()? {
                    keys.clear();
                    spare.push(keys);
                }
                key_next = false;
            }
            b',' => key_next = matches!(open.last(), Some(Some(_))),
            _ => {}
        }
        at += 1;
    }
    Some(())
}

/// The keys of one object: compared one by one while there are few (most objects: no hashing),
/// hashed once there are more, so a huge object costs linear time too.
#[derive(Default)]
struct ObjectKeys<'a> {
    few: Vec<Cow<'a, str>>,
    many: HashSet<Cow<'a, str>>,
}

impl<'a> ObjectKeys<'a> {
    /// Up to this many keys an object's are compared directly.
    const FEW: usize = 16;

    /// Adds `key`; false if the object already has it.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if !self.many.is_empty() {
            return self.many.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > Self::FEW {
            self.many.extend(self.few.drain(..));
        }
        true
    }

    fn clear(&mut self) {
        self.few.clear();
        self.many.clear();
    }
}

/// The index of the quote closing the string whose contents start at `at`, and whether the
/// string has an escape.
fn string_end(bytes: &[u8], mut at: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        at += memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes.get(at) == Some(&b'"') {
            return Some((at, escaped));
        }
        // A backslash and the character it escapes (`\u` is followed by hex digits only).
        escaped = true;
        at += 2;
    }
}

/// The Avro binary encoding of `message` as `schemas/pubsub_message.avsc` lays it out, after
/// `header`, in one allocation.
///
/// Written directly rather than through `apache_avro::Value`: the schema is fixed, and the
/// value tree cost about 60 allocations and two copies of the payload per delivery. The tests
/// decode what this writes with apache-avro, and the end-to-end tests with fastavro.
fn encode_avro(header: &[u8], message: &PubsubMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + avro_datum_len(message));
    out.extend_from_slice(header);
    avro_bytes(&mut out, message.message_id.as_bytes());
    avro_bytes(&mut out, message.publish_time.as_bytes());
    avro_bytes(&mut out, message.subscription.as_bytes());
    // Unions: the branch index (0 = null, 1 = the value), then the value.
    match &message.ordering_key {
        None => avro_long(&mut out, 0),
        Some(key) => {
            avro_long(&mut out, 1);
            avro_bytes(&mut out, key.as_bytes());
        }
    }
    // A map is blocks of (count, entries), ended by a block of count 0.
    if !message.attributes.is_empty() {
        avro_long(&mut out, message.attributes.len() as i64);
        for (name, value) in &message.attributes {
            avro_bytes(&mut out, name.as_bytes());
            avro_bytes(&mut out, value.as_bytes());
        }
    }
    avro_long(&mut out, 0);
    match message.delivery_attempt {
        None => avro_long(&mut out, 0),
        Some(attempt) => {
            avro_long(&mut out, 1);
            avro_long(&mut out, i64::from(attempt));
        }
    }
    avro_bytes(&mut out, &message.data);
    out
}

/// The exact length of what [`encode_avro`] writes after the header.
fn avro_datum_len(message: &PubsubMessage) -> usize {
    let bytes = |len: usize| avro_long_len(len as i64) + len;
    let attributes = if message.attributes.is_empty() {
        0
    } else {
        avro_long_len(message.attributes.len() as i64)
            + message
                .attributes
                .iter()
                .map(|(k, v)| bytes(k.len()) + bytes(v.len()))
                .sum::<usize>()
    };
    bytes(message.message_id.len())
        + bytes(message.publish_time.len())
        + bytes(message.subscription.len())
        + 1
        + message.ordering_key.as_ref().map_or(0, |k| bytes(k.len()))
        + attributes
        + 1
        + 1
        + message
            .delivery_attempt
            .map_or(0, |a| avro_long_len(i64::from(a)))
        + bytes(message.data.len())
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// How many bytes [`avro_long`] writes for `value`.
fn avro_long_len(value: i64) -> usize {
    let mut rest = zigzag(value);
    let mut len = 1;
    while rest >= 0x80 {
        rest >>= 7;
        len += 1;
    }
    len
}

/// Avro `long` (and `int`): zig-zag, then a little-endian base-128 varint.
fn avro_long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = zigzag(value);
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Avro `bytes` and `string`: the length as a `long`, then the bytes.
fn avro_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    avro_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// `google.pubsub.v1.PubsubMessage`, field numbers as in Google's `pubsub.proto`: what the
/// tests decode the hand-written protobuf writer's output with.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PubsubMessageProto {
    /// The payload.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) data: Vec<u8>,
    /// Attributes.
    #[prost(btree_map = "string, string", tag = "2")]
    pub(crate) attributes: BTreeMap<String, String>,
    /// Message id.
    #[prost(string, tag = "3")]
    pub(crate) message_id: String,
    /// Publish time.
    #[prost(message, optional, tag = "4")]
    pub(crate) publish_time: Option<ProtoTimestamp>,
    /// Ordering key (empty when none).
    #[prost(string, tag = "5")]
    pub(crate) ordering_key: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct ProtoTimestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
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

/// `google.pubsub.v1.PubsubMessage` written from the borrowed message, byte for byte what
/// prost writes for [`PubsubMessageProto`] (proto3: empty fields are left out), without first
/// copying the payload and attributes into that struct.
fn encode_protobuf(message: &PubsubMessage) -> Vec<u8> {
    use prost::encoding::{btree_map, bytes, message as nested, string};
    let publish_time = proto_timestamp(&message.publish_time, message.publish_time_ms);
    let ordering_key = message.ordering_key.as_ref().filter(|k| !k.is_empty());
    let data = (!message.data.is_empty()).then_some(&message.data);
    let message_id = Some(&message.message_id).filter(|id| !id.is_empty());
    let attributes = |buf: Option<&mut Vec<u8>>| match buf {
        Some(buf) => {
            btree_map::encode(
                string::encode,
                string::encoded_len,
                string::encode,
                string::encoded_len,
                2,
                &message.attributes,
                buf,
            );
            0
        }
        None => btree_map::encoded_len(
            string::encoded_len,
            string::encoded_len,
            2,
            &message.attributes,
        ),
    };
    let len = data.map_or(0, |d| bytes::encoded_len(1, d))
        + attributes(None)
        + message_id.map_or(0, |id| string::encoded_len(3, id))
        + nested::encoded_len(4, &publish_time)
        + ordering_key.map_or(0, |k| string::encoded_len(5, k));
    let mut buf = Vec::with_capacity(len);
    if let Some(data) = data {
        bytes::encode(1, data, &mut buf);
    }
    attributes(Some(&mut buf));
    if let Some(id) = message_id {
        string::encode(3, id, &mut buf);
    }
    nested::encode(4, &publish_time, &mut buf);
    if let Some(key) = ordering_key {
        string::encode(5, key, &mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as AvroValue;

    #[test]
    fn every_value_format_name_parses_and_nothing_else() {
        let parsed: Vec<_> = ["raw", "json", "avro", "protobuf", "pubsub-schema"]
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
                Ok(ValueFormat::PubsubSchema),
            ]
        );
        assert!("Avro".parse::<ValueFormat>().is_err());
        assert!("pubsub_schema".parse::<ValueFormat>().is_err());
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
    fn pubsub_schema_without_a_schema_is_the_payload_untouched() {
        let encoder = Encoder::new(ValueFormat::PubsubSchema);
        assert_eq!(encoder.encode(message()).unwrap(), message().data);
    }

    #[test]
    fn pubsub_schema_writes_the_typed_record_or_names_the_mismatch() {
        use crate::typed::SchemaKind;
        let encoder = Encoder::new(ValueFormat::PubsubSchema);
        let schema = TypedSchema::compile(SchemaKind::Avro, r#"{"type":"long"}"#).unwrap();
        let mut message = message();
        message.data = b"42".to_vec();
        let value = encoder
            .encode_typed(&message, &schema, DataEncoding::Json, "p/s@r", Some(7))
            .unwrap();
        assert_eq!(
            value,
            [0, 0, 0, 0, 7, 84],
            "Confluent header, then zig-zag 42"
        );
        message.data = b"\"not a long\"".to_vec();
        let error = encoder
            .encode_typed(&message, &schema, DataEncoding::Json, "p/s@r", None)
            .unwrap_err();
        assert!(matches!(error, EncodeError::SchemaMismatch { .. }));
        assert!(error.to_string().contains("schema p/s@r"), "{error}");
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

    /// The record `encode` writes for `payload` with embedding on, as serde_json reads it.
    fn embedded_record(payload: &[u8]) -> serde_json::Value {
        let encoder = Encoder::new(ValueFormat::Json {
            embed_json_data: true,
        });
        let message = PubsubMessage {
            data: payload.to_vec(),
            ..message()
        };
        serde_json::from_slice(&encoder.encode(message).unwrap()).unwrap()
    }

    fn nested(depth: usize) -> String {
        // Arrays and objects alternating, a scalar innermost.
        let mut text = String::from("7");
        for level in 0..depth {
            text = if level % 2 == 0 {
                format!("[{text}]")
            } else {
                format!(r#"{{"k{level}":{text}}}"#)
            };
        }
        text
    }

    #[test]
    fn embedding_stops_at_the_depth_limit() {
        for depth in [0, 1, 2, MAX_EMBEDDED_JSON_DEPTH] {
            let payload = nested(depth);
            let record = embedded_record(payload.as_bytes());
            assert_eq!(record["data_encoding"], "json", "depth {depth}");
            assert_eq!(
                record["data"],
                serde_json::from_str::<serde_json::Value>(&payload).unwrap()
            );
        }
        for depth in [
            MAX_EMBEDDED_JSON_DEPTH + 1,
            MAX_EMBEDDED_JSON_DEPTH + 2,
            120,
        ] {
            let payload = nested(depth);
            let record = embedded_record(payload.as_bytes());
            assert_eq!(record["data_encoding"], "base64", "depth {depth}");
            assert_eq!(
                record["data"],
                base64::engine::general_purpose::STANDARD.encode(&payload)
            );
        }
        // Brackets inside strings are text, not nesting.
        let quoted = format!(r#"{{"a":"{}","b":"\"[{{"}}"#, "[".repeat(200));
        assert_eq!(embedded_record(quoted.as_bytes())["data_encoding"], "json");
    }

    #[test]
    fn embedding_refuses_a_key_repeated_in_any_object() {
        for repeated in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":{"c":[{"x":1,"y":2,"x":3}]}}"#,
            r#"[1,{"k":{},"k":{}}]"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"\"":1,"\u0022":2}"#,
            r#"{"é":1,"\u00e9":2}"#,
            r#"{"😀":1,"\ud83d\ude00":2}"#,
            r#"{"a":{"b":1},"a":{"b":1}}"#,
        ] {
            let record = embedded_record(repeated.as_bytes());
            assert_eq!(record["data_encoding"], "base64", "{repeated}");
            assert_eq!(
                record["data"],
                base64::engine::general_purpose::STANDARD.encode(repeated)
            );
        }
        // Objects beyond the directly compared few: hashed, same verdicts.
        let many = |keys: &[usize]| {
            let entries: Vec<String> = keys.iter().map(|k| format!(r#""k{k}":{k}"#)).collect();
            format!("{{{}}}", entries.join(","))
        };
        let distinct: Vec<usize> = (0..40).collect();
        assert_eq!(
            embedded_record(many(&distinct).as_bytes())["data_encoding"],
            "json"
        );
        for (repeat, of) in [(16, 0), (17, 3), (39, 20), (39, 38)] {
            let mut keys = distinct[..repeat].to_vec();
            keys.push(of);
            assert_eq!(
                embedded_record(many(&keys).as_bytes())["data_encoding"],
                "base64",
                "key {of} again after {repeat}"
            );
        }
        // One key in many objects, and values equal to keys, are no repetition.
        for distinct in [
            r#"[{"a":1},{"a":1}]"#,
            r#"{"a":{"a":{"a":"a"}},"b":"a"}"#,
            r#"{"a":1,"A":2,"a ":3,"\\u0061":4}"#,
            r#"{"x":[1,2],"y":{"x":[],"y":{}}}"#,
            r#"{}"#,
            r#""a""#,
        ] {
            assert_eq!(
                embedded_record(distinct.as_bytes())["data_encoding"],
                "json",
                "{distinct}"
            );
        }
    }

    #[test]
    fn embedding_checks_a_huge_payload_without_recursing() {
        // 10 MB of '[': neither serde_json's reading nor the check may recurse on it.
        let open = vec![b'['; 10 << 20];
        assert_eq!(embedded_record(&open)["data_encoding"], "base64");
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert_eq!(embedded_record(deep.as_bytes())["data_encoding"], "base64");
        assert!(!embeddable(&deep));
        // Cut strings and stray closers (never checked: serde_json refuses them first) do not
        // panic the check.
        for broken in [r#"{"a"#, r#"{"a\"#, "]]]", "}", r#"{"a":1}}"#, "\"\\"] {
            let _ = embeddable(broken);
        }
    }

    /// The reference shape of a JSON text, read recursively by serde_json: its nesting depth
    /// and whether some object repeats a key.
    #[derive(Debug, Default)]
    struct Shape {
        depth: usize,
        repeated_key: bool,
    }

    impl<'de> serde::Deserialize<'de> for Shape {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Reader;
            impl<'de> serde::de::Visitor<'de> for Reader {
                type Value = Shape;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                    Ok(Shape::default())
                }
                fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                    Ok(Shape::default())
                }
                fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                    Ok(Shape::default())
                }
                fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                    Ok(Shape::default())
                }
                fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                    Ok(Shape::default())
                }
                fn visit_unit<E>(self) -> Result<Shape, E> {
                    Ok(Shape::default())
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Shape, A::Error> {
                    let mut shape = Shape::default();
                    while let Some(child) = seq.next_element::<Shape>()? {
                        shape.depth = shape.depth.max(child.depth);
                        shape.repeated_key |= child.repeated_key;
                    }
                    shape.depth += 1;
                    Ok(shape)
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Shape, A::Error> {
                    let mut shape = Shape::default();
                    let mut keys = std::collections::HashSet::new();
                    while let Some((key, child)) = map.next_entry::<String, Shape>()? {
                        shape.repeated_key |= !keys.insert(key);
                        shape.depth = shape.depth.max(child.depth);
                        shape.repeated_key |= child.repeated_key;
                    }
                    shape.depth += 1;
                    Ok(shape)
                }
            }
            deserializer.deserialize_any(Reader)
        }
    }

    /// JSON text with repeated and escaped keys, strings full of brackets, and nesting around
    /// the depth limit.
    fn any_json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        const KEYS: &[&str] = &[
            r#""a""#,
            r#""b""#,
            r#""\u0061""#,
            r#""\"""#,
            r#""[{""#,
            r#""\\""#,
        ];
        const LEAVES: &[&str] = &[
            "1",
            "-2.5e3",
            "null",
            "true",
            r#""a""#,
            r#""]}\"[{""#,
            "[]",
            "{}",
        ];
        let leaf = proptest::sample::select(LEAVES).prop_map(str::to_owned);
        let tree = leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(", "))),
                proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..4).prop_map(
                    |entries| {
                        let entries: Vec<String> =
                            entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                        format!("{{{}}}", entries.join(","))
                    }
                ),
            ]
        });
        (tree, 0usize..70, any::<bool>()).prop_map(|(tree, wrap, objects)| {
            let (open, close) = if objects {
                (r#"{"w":"#, "}")
            } else {
                ("[", "]")
            };
            format!(" {}{tree}{} ", open.repeat(wrap), close.repeat(wrap))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// The one-pass check agrees with the recursive reference on every valid text, and the
        /// record says which form it holds.
        #[test]
        fn embedding_check_agrees_with_a_recursive_reader(text in any_json_text()) {
            let shape: Shape = serde_json::from_str(&text).unwrap();
            let reference = shape.depth <= MAX_EMBEDDED_JSON_DEPTH && !shape.repeated_key;
            proptest::prop_assert_eq!(embeddable(text.trim()), reference, "{} {:?}", text, shape);
            let record = embedded_record(text.as_bytes());
            proptest::prop_assert_eq!(
                &record["data_encoding"],
                if reference { "json" } else { "base64" }
            );
        }

        /// Arbitrary bytes never panic the check.
        #[test]
        fn embedding_check_takes_any_text(text in "[\\[\\]{}\",:\\\\a-c0-9 ]{0,64}") {
            let _ = embeddable(&text);
        }
    }

    /// The datum as apache-avro's own writer builds it from a value tree (the reference).
    fn reference_avro_datum(message: &PubsubMessage) -> Vec<u8> {
        let schema = Schema::parse_str(AVRO_SCHEMA).unwrap();
        let nullable = |value: Option<AvroValue>| match value {
            None => AvroValue::Union(0, Box::new(AvroValue::Null)),
            Some(v) => AvroValue::Union(1, Box::new(v)),
        };
        let record = AvroValue::Record(vec![
            (
                "message_id".into(),
                AvroValue::String(message.message_id.clone()),
            ),
            (
                "publish_time".into(),
                AvroValue::String(message.publish_time.clone()),
            ),
            (
                "subscription".into(),
                AvroValue::String(message.subscription.clone()),
            ),
            (
                "ordering_key".into(),
                nullable(message.ordering_key.clone().map(AvroValue::String)),
            ),
            (
                "attributes".into(),
                AvroValue::Map(
                    message
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), AvroValue::String(v.clone())))
                        .collect(),
                ),
            ),
            (
                "delivery_attempt".into(),
                nullable(message.delivery_attempt.map(AvroValue::Int)),
            ),
            ("data".into(), AvroValue::Bytes(message.data.clone())),
        ]);
        apache_avro::to_avro_datum(&schema, record).unwrap()
    }

    fn any_message() -> impl proptest::strategy::Strategy<Value = PubsubMessage> {
        use proptest::prelude::*;
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::btree_map(".{0,12}", ".{0,40}", 0..6),
            (".{0,20}", ".{0,40}", ".{0,60}"),
            proptest::option::of(".{0,20}"),
            proptest::option::of(any::<i32>()),
            any::<i64>(),
        )
            .prop_map(
                |(
                    data,
                    attributes,
                    (message_id, publish_time, subscription),
                    ordering_key,
                    delivery_attempt,
                    publish_time_ms,
                )| {
                    PubsubMessage {
                        data,
                        attributes,
                        message_id,
                        publish_time,
                        publish_time_ms: publish_time_ms / 1000,
                        ordering_key,
                        subscription,
                        delivery_attempt,
                    }
                },
            )
    }

    proptest::proptest! {
        /// The written datum decodes (with apache-avro) to exactly what apache-avro's own writer
        /// encodes, and is as long (map order may differ, so values are compared, not bytes).
        #[test]
        fn avro_matches_apache_avros_writer(message in any_message()) {
            let schema = Schema::parse_str(AVRO_SCHEMA).unwrap();
            let ours = Encoder::new(ValueFormat::Avro).encode(message.clone()).unwrap();
            let reference = reference_avro_datum(&message);
            proptest::prop_assert_eq!(ours.len() - 10, reference.len());
            // Written into one allocation sized exactly, up front.
            proptest::prop_assert_eq!(ours.capacity(), ours.len());
            let decode = |mut bytes: &[u8]| {
                let value = apache_avro::from_avro_datum(&schema, &mut bytes, None).unwrap();
                proptest::prop_assert!(bytes.is_empty(), "trailing bytes");
                Ok(value)
            };
            proptest::prop_assert_eq!(decode(&ours[10..])?, decode(&reference)?);
        }

        /// Byte for byte what prost's derived encoder writes for the owned message.
        #[test]
        fn protobuf_matches_prosts_derived_encoder(message in any_message()) {
            let ours = Encoder::new(ValueFormat::Protobuf).encode(message.clone()).unwrap();
            let reference = PubsubMessageProto {
                publish_time: Some(proto_timestamp(&message.publish_time, message.publish_time_ms)),
                data: message.data,
                attributes: message.attributes,
                message_id: message.message_id,
                ordering_key: message.ordering_key.unwrap_or_default(),
            }
            .encode_to_vec();
            // Sized exactly, as prost sizes it.
            proptest::prop_assert_eq!(ours.capacity(), ours.len());
            proptest::prop_assert_eq!(ours, reference);
        }
    }

    #[test]
    fn avro_longs_are_zigzag_varints() {
        for (value, bytes) in [
            (0i64, &[0x00][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (
                i64::MAX,
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            avro_long(&mut out, value);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(avro_long_len(value), bytes.len(), "{value}");
        }
    }

    #[test]
    fn avro_with_a_registry_id_uses_the_confluent_wire_format() {
        let value = Encoder::new(ValueFormat::Avro)
            .encode_framed(&mut message(), Some(258))
            .unwrap();
        assert_eq!(&value[..5], &[0, 0, 0, 1, 2]);
        let schema = Schema::parse_str(AVRO_SCHEMA).unwrap();
        assert!(apache_avro::from_avro_datum(&schema, &mut &value[5..], None).is_ok());
    }
}
