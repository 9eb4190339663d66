//! The push request: Pub/Sub's JSON envelope (or an unwrapped body) turned into one [`PubsubMessage`].
//!
//! Wrapped pushes carry everything in the JSON body. Unwrapped pushes ("payload unwrapping")
//! carry the raw data as the body and, with `write_metadata`, the metadata as
//! `x-goog-pubsub-*` headers and every attribute as a header of its own name.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;
use serde::Deserialize;

use crate::timestamp::RecordTimestamp;

pub(crate) mod request_headers;
mod scan;
pub(crate) mod settings;

/// Unwrapped push: message id header.
pub(crate) const HEADER_UNWRAPPED_MESSAGE_ID: &str = "x-goog-pubsub-message-id";
/// Unwrapped push: publish time header (RFC 3339).
pub(crate) const HEADER_UNWRAPPED_PUBLISH_TIME: &str = "x-goog-pubsub-publish-time";
/// Unwrapped push: subscription name header.
pub(crate) const HEADER_UNWRAPPED_SUBSCRIPTION: &str = "x-goog-pubsub-subscription-name";
/// Unwrapped push: ordering key header.
pub(crate) const HEADER_UNWRAPPED_ORDERING_KEY: &str = "x-goog-pubsub-ordering-key";
/// The metadata headers an unwrapped push is read from: each must appear at most once.
const UNWRAPPED_METADATA_HEADERS: [&str; 4] = [
    HEADER_UNWRAPPED_MESSAGE_ID,
    HEADER_UNWRAPPED_PUBLISH_TIME,
    HEADER_UNWRAPPED_SUBSCRIPTION,
    HEADER_UNWRAPPED_ORDERING_KEY,
];

/// Request headers that belong to HTTP, proxies or the push itself, never to the message:
/// on an unwrapped push every other header is an attribute.
const TRANSPORT_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "authorization",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "forwarded",
    "from",
    "host",
    "keep-alive",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    // Cloud Run's second credential header (src/auth, X_SERVERLESS_AUTHORIZATION).
    "x-serverless-authorization",
];
/// Header name prefixes added by Google's, AWS's and common proxies' front ends.
const TRANSPORT_PREFIXES: &[&str] = &[
    "x-goog-",
    "x-cloud-",
    "x-forwarded-",
    "x-amzn-",
    "x-envoy-",
    "x-amz-",
];

/// How push bodies are read (`PUSH_PAYLOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushPayload {
    /// Unwrapped when the `x-goog-pubsub-message-id` header is present, else wrapped.
    Auto,
    /// Always the JSON envelope.
    Wrapped,
    /// Always the raw data (for unwrapped subscriptions without `write_metadata`).
    Unwrapped,
}

impl std::str::FromStr for PushPayload {
    type Err = &'static str;

    /// `auto`, `wrapped` or `unwrapped`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "auto" => Ok(Self::Auto),
            "wrapped" => Ok(Self::Wrapped),
            "unwrapped" => Ok(Self::Unwrapped),
            _ => Err("expected auto, wrapped or unwrapped"),
        }
    }
}

/// One Pub/Sub message as it arrived, with everything the record needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubMessage {
    /// The decoded payload; empty when the message carried no data.
    pub data: Vec<u8>,
    /// Message attributes, ordered by name so headers come out deterministically.
    pub attributes: BTreeMap<String, String>,
    /// Pub/Sub's message id.
    pub message_id: String,
    /// Publish time exactly as received (RFC 3339).
    pub publish_time: String,
    /// Publish time in milliseconds since the Unix epoch.
    pub publish_time_ms: i64,
    /// Ordering key; `None` when absent or empty.
    pub ordering_key: Option<String>,
    /// Full subscription name (`projects/P/subscriptions/S`).
    pub subscription: String,
    /// Delivery attempt, present when the subscription has a dead-letter policy. Pub/Sub's API
    /// types it int32 (`ReceivedMessage.delivery_attempt`): a push carrying more is refused, so
    /// every value format and the header write the same number.
    pub delivery_attempt: Option<i32>,
}

/// Why a push body is not a usable delivery. Every variant is the sender's fault (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is not JSON of the push envelope's shape.
    #[error("body is not a Pub/Sub push envelope: {0}")]
    NotAnEnvelope(String),
    /// The envelope has no `message` object.
    #[error("envelope has no \"message\"")]
    MissingMessage,
    /// A required field is absent or empty.
    #[error("message has no {0}")]
    MissingField(&'static str),
    /// `message.data` is not standard base64.
    #[error("message.data is not valid base64: {0}")]
    InvalidBase64(String),
    /// `publishTime` is not RFC 3339, or not within Kafka's timestamp range.
    #[error(
        "publishTime {0:?} is not an RFC 3339 timestamp within Kafka's range {min}..={max}",
        min = RecordTimestamp::MIN,
        max = RecordTimestamp::MAX
    )]
    InvalidPublishTime(String),
    /// An unwrapped push's metadata header appears more than once: which one is Pub/Sub's
    /// cannot be told, and taking either would let an added header forge the id, time or
    /// subscription.
    #[error("metadata header {0} appears more than once")]
    DuplicateMetadataHeader(&'static str),
}

impl EnvelopeError {
    /// Stable machine-readable code, used in dead-letter headers and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnEnvelope(_) => "invalid_envelope",
            Self::MissingMessage => "missing_message",
            Self::MissingField(_) => "missing_field",
            Self::InvalidBase64(_) => "invalid_base64",
            Self::InvalidPublishTime(_) => "invalid_publish_time",
            Self::DuplicateMetadataHeader(_) => "duplicate_metadata_header",
        }
    }
}

/// Standard alphabet; Pub/Sub pads, but hand-made requests often do not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The envelope as serde reads it; `D` is how `message.data` is taken (see [`parse_wrapped`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
struct RawEnvelope<'a, D> {
    #[serde(borrow)]
    message: Option<RawMessage<'a, D>>,
    #[serde(borrow)]
    subscription: Option<Cow<'a, str>>,
    #[serde(rename = "deliveryAttempt")]
    delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
struct RawMessage<'a, D> {
    data: Option<D>,
    attributes: Option<BTreeMap<String, String>>,
    #[serde(rename = "messageId", borrow)]
    message_id_camel: Option<Cow<'a, str>>,
    #[serde(rename = "message_id", borrow)]
    message_id_snake: Option<Cow<'a, str>>,
    #[serde(rename = "publishTime", borrow)]
    publish_time_camel: Option<Cow<'a, str>>,
    #[serde(rename = "publish_time", borrow)]
    publish_time_snake: Option<Cow<'a, str>>,
    #[serde(rename = "orderingKey", borrow)]
    ordering_key_camel: Option<Cow<'a, str>>,
    #[serde(rename = "ordering_key", borrow)]
    ordering_key_snake: Option<Cow<'a, str>>,
}

/// Parses one push request per `payload`; `now` stands in for a publish time an unwrapped
/// push without metadata does not carry (read only then: the clock costs on every delivery).
pub fn parse_push(
    headers: &HeaderMap,
    body: &[u8],
    payload: PushPayload,
    now: impl FnOnce() -> chrono::DateTime<chrono::Utc>,
) -> Result<PubsubMessage, EnvelopeError> {
    if reads_unwrapped(headers, payload) {
        parse_unwrapped(headers, body, now())
    } else {
        parse_wrapped(body)
    }
}

/// Whether [`parse_push`] reads this request as an unwrapped push.
pub(crate) fn reads_unwrapped(headers: &HeaderMap, payload: PushPayload) -> bool {
    // A `HeaderName` built once: looking a `&str` up parses and lower-cases it on every call.
    static UNWRAPPED_MESSAGE_ID: http::HeaderName =
        http::HeaderName::from_static(HEADER_UNWRAPPED_MESSAGE_ID);
    match payload {
        PushPayload::Auto => headers.contains_key(&UNWRAPPED_MESSAGE_ID),
        PushPayload::Wrapped => false,
        PushPayload::Unwrapped => true,
    }
}

/// Whether a request header of an unwrapped push is one of the message's attributes (not
/// HTTP's, a proxy's or the push's own).
fn is_attribute_header(name: &str) -> bool {
    !TRANSPORT_HEADERS.contains(&name) && !TRANSPORT_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Parses an unwrapped push: the body is the data, metadata and attributes are headers.
///
/// Header names are case-insensitive, so attribute names arrive lower-cased. Pub/Sub writes
/// each metadata header once; a repeated one is refused rather than read first-wins.
pub(crate) fn parse_unwrapped(
    headers: &HeaderMap,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PubsubMessage, EnvelopeError> {
    if let Some(repeated) = UNWRAPPED_METADATA_HEADERS
        .into_iter()
        .find(|name| headers.get_all(*name).iter().nth(1).is_some())
    {
        return Err(EnvelopeError::DuplicateMetadataHeader(repeated));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .filter(|v| !v.is_empty())
    };
    let publish_time = header(HEADER_UNWRAPPED_PUBLISH_TIME)
        .unwrap_or_else(|| now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let attributes = headers
        .iter()
        .filter(|(name, _)| is_attribute_header(name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(PubsubMessage {
        data: body.to_vec(),
        attributes,
        message_id: header(HEADER_UNWRAPPED_MESSAGE_ID).unwrap_or_default(),
        publish_time_ms: parse_publish_time(&publish_time)?,
        publish_time,
        ordering_key: header(HEADER_UNWRAPPED_ORDERING_KEY),
        subscription: header(HEADER_UNWRAPPED_SUBSCRIPTION).unwrap_or_default(),
        delivery_attempt: None,
    })
}

/// Parses a wrapped push body (`{"message": {...}, "subscription": ...}`).
///
/// Unknown fields are ignored so new Pub/Sub fields never break deliveries.
///
/// Read the fastest way that applies, each a strict subset of the next:
/// 1. `scan`: one pass over a body of the shape Pub/Sub sends, fields borrowed from it.
/// 2. serde, with `data` as the string's bytes borrowed from the body (serde_json finds the
///    closing quote with a SIMD search and skips its per-byte UTF-8 and control-character
///    checks): bodies with unknown fields, escapes outside `data`, `null`s.
/// 3. serde the strict way, whose verdicts and error messages are the ones answered.
///
/// The first two decode `data` with SIMD base64. Valid base64 is plain ASCII, so whatever that
/// decodes is a string the strict reading accepts too; anything the faster readings refuse (an
/// escape in `data`, bad base64, any other fault) goes on to the next.
pub fn parse_wrapped(body: &[u8]) -> Result<PubsubMessage, EnvelopeError> {
    let decode_fast =
        |data: &[u8]| decode_base64(data).map_err(|_| EnvelopeError::InvalidBase64(String::new()));
    let fast = scan::envelope(body)
        .and_then(|raw| message_from(raw, decode_fast).ok())
        .or_else(|| {
            serde_json::from_slice::<RawEnvelope<'_, &[u8]>>(body)
                .ok()
                .and_then(|raw| message_from(raw, decode_fast).ok())
        });
    if let Some(message) = fast {
        return Ok(message);
    }
    let strict: RawEnvelope<'_, Cow<'_, str>> = serde_json::from_slice(body)
        .map_err(|e| EnvelopeError::NotAnEnvelope(crate::echo::bounded_echo(&e.to_string())))?;
    message_from(strict, |data| {
        BASE64
            .decode(data.as_bytes())
            .map_err(|e| EnvelopeError::InvalidBase64(crate::echo::bounded_echo(&e.to_string())))
    })
}

/// The message of a parsed envelope, `decode` turning its `data` into the payload.
fn message_from<D>(
    raw: RawEnvelope<'_, D>,
    decode: impl FnOnce(D) -> Result<Vec<u8>, EnvelopeError>,
) -> Result<PubsubMessage, EnvelopeError> {
    let message = raw.message.ok_or(EnvelopeError::MissingMessage)?;
    let data = match message.data {
        None => Vec::new(),
        Some(data) => decode(data)?,
    };
    let message_id = non_empty(message.message_id_camel.or(message.message_id_snake))
        .ok_or(EnvelopeError::MissingField("messageId"))?;
    let publish_time = non_empty(message.publish_time_camel.or(message.publish_time_snake))
        .ok_or(EnvelopeError::MissingField("publishTime"))?;
    let subscription =
        non_empty(raw.subscription).ok_or(EnvelopeError::MissingField("subscription"))?;
    Ok(PubsubMessage {
        data,
        attributes: message.attributes.unwrap_or_default(),
        message_id,
        publish_time_ms: parse_publish_time(&publish_time)?,
        publish_time,
        ordering_key: non_empty(message.ordering_key_camel.or(message.ordering_key_snake)),
        subscription,
        delivery_attempt: raw.delivery_attempt.map(delivery_attempt).transpose()?,
    })
}

/// `deliveryAttempt` within Pub/Sub's int32; anything larger is not from Pub/Sub (its
/// dead-letter policy stops at 100 attempts) and is refused like any other mistyped field.
fn delivery_attempt(attempt: u32) -> Result<i32, EnvelopeError> {
    i32::try_from(attempt).map_err(|_| {
        EnvelopeError::NotAnEnvelope(format!(
            "deliveryAttempt {attempt} is beyond Pub/Sub's int32 ({})",
            i32::MAX
        ))
    })
}

/// Standard base64, padded (as Pub/Sub sends it) or unpadded (as hand-made requests often are),
/// decoded with SIMD where the CPU has it (AVX2 on Cloud Run's and Lambda's x86 hosts, NEON on
/// Graviton). Anything else it refuses, such as partial padding, [`parse_wrapped`] reads again
/// the strict way.
fn decode_base64(text: &[u8]) -> Result<Vec<u8>, base64_simd::Error> {
    let engine = if text.len().is_multiple_of(4) {
        &base64_simd::STANDARD
    } else {
        &base64_simd::STANDARD_NO_PAD
    };
    engine.decode_to_vec(text)
}

/// The message id of a body that failed to parse, if it can still be read: so the failure's
/// log line names the message. Only runs on the error path.
pub(crate) fn message_id_hint(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.get("message")?;
    let id = message
        .get("messageId")
        .or_else(|| message.get("message_id"))?;
    id.as_str().filter(|id| !id.is_empty()).map(str::to_owned)
}

fn non_empty(value: Option<Cow<'_, str>>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(Cow::into_owned)
}

/// RFC 3339 with any number of fractional digits → epoch milliseconds (truncated, like Java).
///
/// Times outside Kafka's range ([`RecordTimestamp`]) are refused: before 1970 (Kafka has no
/// negative CreateTime) or, through an offset, after 9999; Pub/Sub never sends either.
pub(crate) fn parse_publish_time(value: &str) -> Result<i64, EnvelopeError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| RecordTimestamp::from_millis(t.timestamp_millis()))
        .map(RecordTimestamp::millis)
        .ok_or_else(|| EnvelopeError::InvalidPublishTime(crate::echo::bounded_echo(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_payload_modes_parse_strictly() {
        assert_eq!("auto".parse(), Ok(PushPayload::Auto));
        assert_eq!("wrapped".parse(), Ok(PushPayload::Wrapped));
        assert_eq!("unwrapped".parse(), Ok(PushPayload::Unwrapped));
        assert!("Wrapped".parse::<PushPayload>().is_err());
    }

    /// The example body from Google's "Push subscriptions" page.
    const DOC_EXAMPLE: &str = r#"{
      "message": {
        "attributes": {"key": "value"},
        "data": "SGVsbG8gQ2xvdWQgUHViL1N1YiEgSGVyZSBpcyBteSBtZXNzYWdlIQ==",
        "messageId": "2070443601311540",
        "message_id": "2070443601311540",
        "publishTime": "2021-02-26T19:13:55.749Z",
        "publish_time": "2021-02-26T19:13:55.749Z"
      },
      "subscription": "projects/myproject/subscriptions/mysubscription"
    }"#;

    #[test]
    fn parses_the_documented_example() {
        let m = parse_wrapped(DOC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(m.data, b"Hello Cloud Pub/Sub! Here is my message!");
        assert_eq!(m.attributes.get("key").map(String::as_str), Some("value"));
        assert_eq!(m.message_id, "2070443601311540");
        assert_eq!(m.publish_time, "2021-02-26T19:13:55.749Z");
        assert_eq!(m.publish_time_ms, 1_614_366_835_749);
        assert_eq!(m.ordering_key, None);
        assert_eq!(
            m.subscription,
            "projects/myproject/subscriptions/mysubscription"
        );
        assert_eq!(m.delivery_attempt, None);
    }

    #[test]
    fn accepts_snake_case_fields_unpadded_base64_and_ordering_key() {
        let body = r#"{"message":{"data":"aGk","message_id":"7","publish_time":"2024-01-01T00:00:00.123456789Z","orderingKey":"k","unknown":1},
                      "subscription":"projects/p/subscriptions/s","deliveryAttempt":3,"extra":true}"#;
        let m = parse_wrapped(body.as_bytes()).unwrap();
        assert_eq!(m.data, b"hi");
        assert_eq!(m.message_id, "7");
        assert_eq!(m.publish_time_ms, 1_704_067_200_123);
        assert_eq!(m.ordering_key.as_deref(), Some("k"));
        assert_eq!(m.delivery_attempt, Some(3));
    }

    #[test]
    fn absent_or_empty_data_is_an_empty_payload() {
        for data in ["", r#","data":"""#, r#","data":null"#] {
            let body = format!(
                r#"{{"message":{{"messageId":"1","publishTime":"2024-01-01T00:00:00Z"{data}}},"subscription":"s"}}"#
            );
            assert_eq!(parse_wrapped(body.as_bytes()).unwrap().data, b"");
        }
    }

    #[test]
    fn rejects_malformed_envelopes_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "invalid_envelope"),
            ("[]", "invalid_envelope"),
            ("{", "invalid_envelope"),
            ("{}", "missing_message"),
            (r#"{"message":null}"#, "missing_message"),
            (r#"{"message":"x"}"#, "invalid_envelope"),
            (
                r#"{"message":{"data":"!!!","messageId":"1","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#,
                "invalid_base64",
            ),
            (
                r#"{"message":{"data":"aGk=","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#,
                "missing_field",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"yesterday"},"subscription":"s"}"#,
                "invalid_publish_time",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"1969-12-31T23:59:59Z"},"subscription":"s"}"#,
                "invalid_publish_time",
            ),
            (
                r#"{"message":{"messageId":"1"},"subscription":"s"}"#,
                "missing_field",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"2024-01-01T00:00:00Z"}}"#,
                "missing_field",
            ),
            (
                r#"{"message":{"messageId":1,"publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#,
                "invalid_envelope",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"2024-01-01T00:00:00Z","attributes":{"a":1}},"subscription":"s"}"#,
                "invalid_envelope",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s","deliveryAttempt":"3"}"#,
                "invalid_envelope",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s","deliveryAttempt":2147483648}"#,
                "invalid_envelope",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s","deliveryAttempt":4294967295}"#,
                "invalid_envelope",
            ),
            (
                r#"{"message":{"messageId":"1","publishTime":"9999-12-31T23:59:59-00:01"},"subscription":"s"}"#,
                "invalid_publish_time",
            ),
        ];
        for (body, code) in cases {
            let err = parse_wrapped(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), *code, "{body}: {err}");
        }
    }

    #[test]
    fn delivery_attempts_and_publish_times_at_the_edges_of_their_ranges_are_kept() {
        let body = r#"{"message":{"messageId":"1","publishTime":"9999-12-31T23:59:59.999999Z"},"subscription":"s","deliveryAttempt":2147483647}"#;
        let m = parse_wrapped(body.as_bytes()).unwrap();
        assert_eq!(m.delivery_attempt, Some(i32::MAX));
        assert_eq!(m.publish_time_ms, RecordTimestamp::MAX.millis());
        let refused =
            parse_wrapped(body.replace("2147483647", "2147483648").as_bytes()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "body is not a Pub/Sub push envelope: deliveryAttempt 2147483648 is beyond Pub/Sub's int32 (2147483647)"
        );
        assert_eq!(parse_publish_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_publish_time("9999-12-31T23:59:59.999+00:00"),
            Ok(RecordTimestamp::MAX.millis())
        );
        let late = parse_publish_time("9999-12-31T23:59:59.999-00:01").unwrap_err();
        assert_eq!(
            late.to_string(),
            "publishTime \"9999-12-31T23:59:59.999-00:01\" is not an RFC 3339 timestamp within \
             Kafka's range 1970-01-01T00:00:00.000Z..=9999-12-31T23:59:59.999Z"
        );
        // The unwrapped path reads its publish time header the same way.
        let now = chrono::Utc::now();
        for (time, code) in [
            ("1969-12-31T23:59:59.999Z", Some("invalid_publish_time")),
            (
                "9999-12-31T23:59:59.999-00:01",
                Some("invalid_publish_time"),
            ),
            ("9999-12-31T23:59:59.999Z", None),
        ] {
            let h = headers(&[
                ("x-goog-pubsub-message-id", "1"),
                ("x-goog-pubsub-publish-time", time),
            ]);
            let parsed = parse_push(&h, b"", PushPayload::Auto, || now);
            assert_eq!(
                parsed.as_ref().err().map(EnvelopeError::code),
                code,
                "{time}"
            );
        }
    }

    /// The reference verdict for a `data` string: serde_json's string, then the base64 crate.
    fn reference_decode(json_string: &str) -> Result<Vec<u8>, &'static str> {
        let text: String = serde_json::from_str(json_string).map_err(|_| "invalid_envelope")?;
        BASE64.decode(text).map_err(|_| "invalid_base64")
    }

    #[test]
    fn the_fast_decoder_takes_padded_and_unpadded_base64_itself() {
        // Both forms in use must not fall back to the strict reading (that is what is fast).
        for (text, data) in [
            (&b""[..], &b""[..]),
            (b"aGk=", b"hi"),
            (b"aGk", b"hi"),
            (b"aA==", b"h"),
            (b"aA", b"h"),
            (b"aGVsbG8h", b"hello!"),
        ] {
            assert_eq!(decode_base64(text).ok().as_deref(), Some(data), "{text:?}");
        }
        // What it refuses is left to the strict reading.
        for text in [&b"aGk=="[..], b"aG=k", b"QUJDRA=", b"a", b"aGl="] {
            assert!(decode_base64(text).is_err(), "{text:?}");
        }
    }

    /// What `parse_wrapped` makes of `data` given as `json_string`.
    fn fast_decode(json_string: &str) -> Result<Vec<u8>, &'static str> {
        let body = format!(
            r#"{{"message":{{"data":{json_string},"messageId":"1","publishTime":"2024-01-01T00:00:00Z"}},"subscription":"s"}}"#
        );
        parse_wrapped(body.as_bytes())
            .map(|m| m.data)
            .map_err(|e| e.code())
    }

    #[test]
    fn data_decodes_as_the_reference_decoder_on_edge_cases() {
        for text in [
            r#""""#,
            r#""aGk""#,
            r#""aGk=""#,
            r#""aGk==""#,
            r#""aGl=""#,
            r#""aG==""#,
            r#""a===""#,
            r#""=""#,
            r#""====""#,
            r#""aGVsbG8""#,
            r#""aGVsbG8=""#,
            r#""aGVs bG8=""#,
            r#""aGVs
bG8=""#,
            r#""aGVsbG8=""#,
            r#""\/w==""#,
            r#""aG\u0001k""#,
            "\"aGk\u{1}\"",
            r#""-_==""#,
            r#""aGk=aGk=""#,
            r#""\\""#,
            r#""QUJD""#,
            r#""QUJDRA""#,
            r#""QUJDRA==""#,
            r#""QUJDRA=""#,
        ] {
            assert_eq!(fast_decode(text), reference_decode(text), "{text}");
        }
    }

    #[test]
    fn publish_times_read_to_the_millisecond() {
        assert_eq!(parse_publish_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_publish_time("2026-11-24T10:00:00.123456Z"),
            Ok(1_795_514_400_123)
        );
        assert_eq!(
            parse_publish_time("2024-02-29T23:59:59.9Z"),
            Ok(1_709_251_199_900)
        );
        assert_eq!(
            parse_publish_time("2000-03-01T00:00:00.000000001Z"),
            Ok(951_868_800_000)
        );
        assert_eq!(
            parse_publish_time("2024-01-01T01:00:00+01:00"),
            Ok(1_704_067_200_000)
        );
        for refused in [
            "2023-02-29T00:00:00Z", // not a leap year
            "2024-01-01T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2024-01-01T24:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
        ] {
            assert_eq!(
                parse_publish_time(refused).map_err(|e| e.code()),
                Err("invalid_publish_time"),
                "{refused}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Near-valid base64: real encodings with their padding cut or stretched and one symbol
        /// changed, where decoders differ if they ever do.
        #[test]
        fn near_valid_data_decodes_as_the_reference_decoder(
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            pad in 0usize..4,
            cut in 0usize..3,
            change in proptest::option::of((0usize..64, "[A-Za-z0-9+/=_-]")),
        ) {
            let mut text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&payload);
            text.truncate(text.len().saturating_sub(cut));
            text.push_str(&"=".repeat(pad));
            if let Some((at, symbol)) = change.filter(|(at, _)| *at < text.len()) {
                text.replace_range(at..at + 1, &symbol);
            }
            let json = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(fast_decode(&json), reference_decode(&json), "{}", json);
        }

        #[test]
        fn data_decodes_as_the_reference_decoder(text in "[A-Za-z0-9+/=\\\\\\-_ ]{0,70}") {
            let json = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(fast_decode(&json), reference_decode(&json), "{}", json);
        }

        /// Publish times of Pub/Sub's shape and near it (each field ranging past its limits,
        /// fractions of 0 to 12 digits, one byte changed): chrono's milliseconds from 1970 on,
        /// nothing before.
        #[test]
        fn publish_times_read_as_chrono_reads_them(
            fields in (1960i64..2500, 0i64..14, 0i64..33, 0i64..25, 0i64..61, 0i64..61),
            fraction in "[0-9]{0,12}",
            change in proptest::option::of((0usize..32, "[0-9TZtz:.+ -]")),
        ) {
            let (year, month, day, hour, minute, second) = fields;
            let dot = if fraction.is_empty() { "" } else { "." };
            let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{dot}{fraction}Z");
            if let Some((at, symbol)) = change.filter(|(at, _)| *at < text.len()) {
                text.replace_range(at..at + 1, &symbol);
            }
            let chrono_ms = chrono::DateTime::parse_from_rfc3339(&text)
                .ok()
                .map(|t| t.timestamp_millis())
                .filter(|ms| *ms >= 0);
            proptest::prop_assert_eq!(parse_publish_time(&text).ok(), chrono_ms, "{}", text);
        }

        #[test]
        fn any_payload_round_trips_padded_or_not(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::STANDARD_NO_PAD] {
                let json = format!("\"{}\"", engine.encode(&payload));
                proptest::prop_assert_eq!(fast_decode(&json), Ok(payload.clone()));
            }
        }
    }

    #[test]
    fn data_with_whitespace_around_or_escapes_inside_is_read() {
        let body = br#"{"message":{"data" :  "aGk\u003d" ,"messageId":"1","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#;
        assert_eq!(parse_wrapped(body).unwrap().data, b"hi");
        let number = br#"{"message":{"data":5,"messageId":"1","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#;
        assert_eq!(
            parse_wrapped(number).unwrap_err().code(),
            "invalid_envelope"
        );
    }

    #[test]
    fn message_id_hint_names_a_message_that_failed_later_checks() {
        let body = br#"{"message":{"data":"@@","messageId":"42","publishTime":"2024-01-01T00:00:00Z"},"subscription":"s"}"#;
        assert!(parse_wrapped(body).is_err());
        assert_eq!(message_id_hint(body).as_deref(), Some("42"));
        assert_eq!(message_id_hint(b"garbage"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn unwrapped_push_reads_metadata_and_attribute_headers() {
        let h = headers(&[
            ("x-goog-pubsub-message-id", "2070443601311540"),
            ("x-goog-pubsub-publish-time", "2021-02-26T19:13:55.749Z"),
            (
                "x-goog-pubsub-subscription-name",
                "projects/p/subscriptions/s",
            ),
            ("x-goog-pubsub-ordering-key", "k1"),
            ("Tenant", "acme"),
            ("content-type", "application/octet-stream"),
            ("authorization", "Bearer x"),
            ("user-agent", "APIs-Google"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-cloud-trace-context", "abc/1;o=1"),
        ]);
        let now = chrono::Utc::now();
        let m = parse_push(&h, b"raw bytes", PushPayload::Auto, || now).unwrap();
        assert_eq!(m.data, b"raw bytes");
        assert_eq!(m.message_id, "2070443601311540");
        assert_eq!(m.publish_time_ms, 1_614_366_835_749);
        assert_eq!(m.subscription, "projects/p/subscriptions/s");
        assert_eq!(m.ordering_key.as_deref(), Some("k1"));
        assert_eq!(m.attributes.len(), 1, "{:?}", m.attributes);
        assert_eq!(m.attributes.get("tenant").map(String::as_str), Some("acme"));
    }

    #[test]
    fn a_repeated_metadata_header_is_refused_not_read_first_wins() {
        let now = chrono::Utc::now();
        let once = [
            ("x-goog-pubsub-message-id", "1"),
            ("x-goog-pubsub-publish-time", "2021-02-26T19:13:55.749Z"),
            (
                "x-goog-pubsub-subscription-name",
                "projects/p/subscriptions/s",
            ),
            ("x-goog-pubsub-ordering-key", "k"),
            ("tenant", "a"),
        ];
        assert!(parse_push(&headers(&once), b"", PushPayload::Auto, || now).is_ok());
        for (name, forged) in [
            ("x-goog-pubsub-message-id", "2"),
            ("x-goog-pubsub-publish-time", "2030-01-01T00:00:00Z"),
            (
                "x-goog-pubsub-subscription-name",
                "projects/p/subscriptions/other",
            ),
            ("X-Goog-PubSub-Ordering-Key", "k2"),
        ] {
            let mut pairs = once.to_vec();
            pairs.push((name, forged));
            let error = parse_push(&headers(&pairs), b"", PushPayload::Auto, || now).unwrap_err();
            assert_eq!(
                error,
                EnvelopeError::DuplicateMetadataHeader(
                    UNWRAPPED_METADATA_HEADERS
                        .into_iter()
                        .find(|h| h.eq_ignore_ascii_case(name))
                        .unwrap()
                ),
                "{name}"
            );
            assert_eq!(error.code(), "duplicate_metadata_header");
        }
        // Even the same value twice: Pub/Sub writes each once.
        let mut pairs = once.to_vec();
        pairs.push(("x-goog-pubsub-message-id", "1"));
        assert!(parse_push(&headers(&pairs), b"", PushPayload::Unwrapped, || now).is_err());
        // A repeated attribute header is not metadata: the rules of attributes apply.
        let mut pairs = once.to_vec();
        pairs.push(("tenant", "b"));
        assert!(parse_push(&headers(&pairs), b"", PushPayload::Auto, || now).is_ok());
    }

    #[test]
    fn payload_mode_decides_how_the_body_is_read() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z")
            .unwrap()
            .to_utc();
        // Auto without metadata headers: the body must be an envelope.
        assert!(parse_push(&HeaderMap::new(), b"raw", PushPayload::Auto, || now).is_err());
        // Forced unwrapped without write_metadata: the receive time stands in for publishTime.
        let m = parse_push(&HeaderMap::new(), b"raw", PushPayload::Unwrapped, || now).unwrap();
        assert_eq!(
            (m.data.as_slice(), m.message_id.as_str()),
            (&b"raw"[..], "")
        );
        assert_eq!(m.publish_time_ms, 1_714_521_600_000);
        // Forced wrapped ignores metadata headers.
        let h = headers(&[("x-goog-pubsub-message-id", "1")]);
        assert!(parse_push(&h, b"raw", PushPayload::Wrapped, || now).is_err());
        let bad_time = headers(&[
            ("x-goog-pubsub-message-id", "1"),
            ("x-goog-pubsub-publish-time", "soon"),
        ]);
        assert_eq!(
            parse_push(&bad_time, b"", PushPayload::Auto, || now)
                .unwrap_err()
                .code(),
            "invalid_publish_time"
        );
    }
}
