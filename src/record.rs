//! Message → Kafka record: key, headers and timestamp exactly as the contract maps them.

pub(crate) mod settings;
pub(crate) mod trace;

use std::collections::BTreeMap;

use crate::envelope::PubsubMessage;
use crate::timestamp::RecordTimestamp;

/// Header carrying Pub/Sub's message id; consumers drop redeliveries by it.
pub const HEADER_MESSAGE_ID: &str = "pubsub.message_id";
/// Header carrying the publish time as received (RFC 3339).
pub(crate) const HEADER_PUBLISH_TIME: &str = "pubsub.publish_time";
/// Header carrying the full subscription name.
pub(crate) const HEADER_SUBSCRIPTION: &str = "pubsub.subscription";
/// Header carrying the ordering key, when the message has one.
pub(crate) const HEADER_ORDERING_KEY: &str = "pubsub.ordering_key";
/// Header carrying the delivery attempt (decimal), when Pub/Sub sent one.
pub(crate) const HEADER_DELIVERY_ATTEMPT: &str = "pubsub.delivery_attempt";
/// The bridge's own header namespace: only the bridge writes names that start with it.
pub(crate) const RESERVED_HEADER_PREFIX: &str = "pubsub.";
/// An attribute whose header name would fall in the reserved namespace is written under this
/// prefix instead (`pubsub.ordering_key` → `pubsub.attribute.pubsub.ordering_key`): nothing is
/// lost, and no publisher can pose as the bridge's metadata, whatever Pub/Sub sent.
pub(crate) const RENAMED_ATTRIBUTE_PREFIX: &str = "pubsub.attribute.";

/// Whether `name` lies in the bridge's header namespace (ASCII case-insensitive, since some
/// consumers compare header names without case).
pub(crate) fn is_reserved_header(name: &str) -> bool {
    name.len() >= RESERVED_HEADER_PREFIX.len()
        && name.as_bytes()[..RESERVED_HEADER_PREFIX.len()]
            .eq_ignore_ascii_case(RESERVED_HEADER_PREFIX.as_bytes())
}

/// The header name an attribute is written under; the attribute's own `String` when no prefix
/// or renaming applies (the common case: no copy).
fn attribute_header_name(prefix: &str, attribute: String) -> String {
    let name = if prefix.is_empty() {
        attribute
    } else {
        format!("{prefix}{attribute}")
    };
    if is_reserved_header(&name) {
        format!("{RENAMED_ATTRIBUTE_PREFIX}{name}")
    } else {
        name
    }
}

/// Where the record key comes from (`KAFKA_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The ordering key; no key when the message has none.
    OrderingKey,
    /// The Pub/Sub message id.
    MessageId,
    /// The named attribute; no key when the message lacks it.
    Attribute(String),
    /// Never a key.
    None,
}

/// Which attributes become headers (`KAFKA_ATTRIBUTE_HEADERS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeHeaders {
    /// Every attribute.
    All,
    /// No attribute.
    None,
    /// Only the listed attribute names.
    Only(Vec<String>),
}

impl std::str::FromStr for KeySource {
    type Err = &'static str;

    /// `ordering_key`, `message_id`, `attribute:NAME` or `none`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "ordering_key" => Ok(Self::OrderingKey),
            "message_id" => Ok(Self::MessageId),
            "none" => Ok(Self::None),
            other => match other.strip_prefix("attribute:") {
                Some(name) if !name.is_empty() => Ok(Self::Attribute(name.to_owned())),
                _ => Err("expected ordering_key, message_id, attribute:NAME or none"),
            },
        }
    }
}

impl std::str::FromStr for AttributeHeaders {
    type Err = &'static str;

    /// `all`, `none` or `only:NAME,NAME`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            other => {
                let names: Vec<String> = other
                    .strip_prefix("only:")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect();
                if other.starts_with("only:") && !names.is_empty() {
                    Ok(Self::Only(names))
                } else {
                    Err("expected all, none or only:NAME,NAME")
                }
            }
        }
    }
}

/// How a message becomes a record, beyond its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOptions {
    /// `KAFKA_KEY`.
    pub key_source: KeySource,
    /// `KAFKA_ATTRIBUTE_HEADERS`.
    pub attribute_headers: AttributeHeaders,
    /// `KAFKA_ATTRIBUTE_HEADER_PREFIX`: put before every attribute header name.
    pub attribute_prefix: String,
    /// `KAFKA_METADATA_HEADERS`: whether the `pubsub.*` headers are written.
    pub metadata_headers: bool,
    /// `KAFKA_TIMESTAMP_ATTRIBUTE`: take the timestamp from this attribute instead of publishTime.
    pub timestamp_attribute: Option<String>,
}

impl Default for RecordOptions {
    /// The contract's mapping: ordering key, every attribute, metadata headers, publishTime.
    fn default() -> Self {
        Self {
            key_source: KeySource::OrderingKey,
            attribute_headers: AttributeHeaders::All,
            attribute_prefix: String::new(),
            metadata_headers: true,
            timestamp_attribute: None,
        }
    }
}

/// One record, ready for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Key bytes (UTF-8 of the chosen string), if any.
    pub key: Option<Vec<u8>>,
    /// Encoded value.
    pub value: Vec<u8>,
    /// Attributes under their own names plus the `pubsub.*` metadata headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// CreateTime, within Kafka's range whatever its source (see [`RecordTimestamp`]).
    pub timestamp: RecordTimestamp,
    /// The Pub/Sub message id, when known: an unkeyed record's partition is computed from it,
    /// so every copy of a message lands in the same partition.
    pub message_id: Option<String>,
}

/// Why the event-time attribute could not be used (the record falls back to publishTime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampFallback {
    /// The message has no such attribute.
    Missing {
        /// The attribute name.
        attribute: String,
    },
    /// The attribute is neither epoch milliseconds nor RFC 3339.
    Unparsable {
        /// The attribute name.
        attribute: String,
        /// Its value.
        value: String,
    },
}

impl std::fmt::Display for TimestampFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { attribute } => write!(f, "attribute {attribute:?} missing"),
            Self::Unparsable { attribute, value } => {
                write!(
                    f,
                    "attribute {attribute:?}={value:?} is neither epoch ms nor RFC 3339"
                )
            }
        }
    }
}

/// Where a record's timestamp came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimestampOrigin {
    /// The message's publish time.
    PublishTime,
    /// The event-time attribute (`KAFKA_TIMESTAMP_ATTRIBUTE`) of this name.
    Attribute(String),
}

impl std::fmt::Display for TimestampOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PublishTime => f.write_str("publishTime"),
            Self::Attribute(name) => write!(f, "attribute {name:?}"),
        }
    }
}

/// A time outside [`RecordTimestamp`]'s range: refused (400, or a dead letter), never
/// replaced by another time, so a record is never written at a time nobody gave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin} {value:?} is outside Kafka's timestamp range {}..={}",
    RecordTimestamp::MIN,
    RecordTimestamp::MAX
)]
pub struct TimestampOutOfRange {
    /// Where the time came from.
    pub(crate) origin: TimestampOrigin,
    /// The value as given (cut by `crate::echo::bounded_echo`).
    pub value: String,
}

/// The key bytes `source` selects from `message`.
pub(crate) fn record_key(message: &PubsubMessage, source: &KeySource) -> Option<Vec<u8>> {
    let key = match source {
        KeySource::OrderingKey => message.ordering_key.as_deref(),
        KeySource::MessageId => Some(message.message_id.as_str()).filter(|id| !id.is_empty()),
        KeySource::Attribute(name) => message.attributes.get(name).map(String::as_str),
        KeySource::None => None,
    };
    key.map(|k| k.as_bytes().to_vec())
}

/// Attributes as headers, the W3C trace headers (`record::trace`), then the metadata headers.
///
/// Takes the message: attribute names and values, and the metadata, move into the headers
/// without a copy. Metadata is written last, so an attribute that happens to be named
/// `pubsub.message_id` cannot forge the id consumers deduplicate by.
pub fn record_headers(
    message: PubsubMessage,
    options: &RecordOptions,
) -> BTreeMap<String, Vec<u8>> {
    let trace = trace::trace_headers(&message.attributes);
    let selected =
        message
            .attributes
            .into_iter()
            .filter(|(name, _)| match &options.attribute_headers {
                AttributeHeaders::All => true,
                AttributeHeaders::None => false,
                AttributeHeaders::Only(names) => names.iter().any(|n| n == name),
            });
    let mut headers: BTreeMap<String, Vec<u8>> = selected
        .map(|(k, v)| {
            (
                attribute_header_name(&options.attribute_prefix, k),
                v.into_bytes(),
            )
        })
        .collect();
    if let Some((parent, state)) = trace {
        headers.insert(trace::HEADER_TRACEPARENT.to_owned(), parent.into_bytes());
        if let Some(state) = state {
            headers.insert(trace::HEADER_TRACESTATE.to_owned(), state.into_bytes());
        }
    }
    if !options.metadata_headers {
        return headers;
    }
    // Empty metadata only happens on unwrapped pushes without write_metadata: omitted, not faked.
    let mut put = |name: &str, value: String| {
        if !value.is_empty() {
            headers.insert(name.to_owned(), value.into_bytes());
        }
    };
    put(HEADER_MESSAGE_ID, message.message_id);
    put(HEADER_PUBLISH_TIME, message.publish_time);
    put(HEADER_SUBSCRIPTION, message.subscription);
    if let Some(key) = message.ordering_key {
        put(HEADER_ORDERING_KEY, key);
    }
    if let Some(attempt) = message.delivery_attempt {
        put(HEADER_DELIVERY_ATTEMPT, attempt.to_string());
    }
    headers
}

/// The record timestamp: the event-time attribute when configured and usable, else publishTime.
///
/// The attribute is epoch milliseconds (an optionally signed integer) or RFC 3339. A value of
/// either form outside Kafka's range is refused; only a missing attribute, or one of neither
/// form, falls back to publishTime (returned for the caller to log).
pub(crate) fn record_timestamp(
    message: &PubsubMessage,
    attribute: Option<&str>,
) -> Result<(RecordTimestamp, Option<TimestampFallback>), TimestampOutOfRange> {
    let publish_time = || {
        RecordTimestamp::from_millis(message.publish_time_ms).ok_or_else(|| TimestampOutOfRange {
            origin: TimestampOrigin::PublishTime,
            value: message.publish_time_ms.to_string(),
        })
    };
    let Some(attribute) = attribute else {
        return Ok((publish_time()?, None));
    };
    let Some(value) = message.attributes.get(attribute) else {
        let fallback = TimestampFallback::Missing {
            attribute: attribute.to_owned(),
        };
        return Ok((publish_time()?, Some(fallback)));
    };
    match event_time_millis(value) {
        Some(millis) => millis
            .and_then(RecordTimestamp::from_millis)
            .map(|timestamp| (timestamp, None))
            .ok_or_else(|| TimestampOutOfRange {
                origin: TimestampOrigin::Attribute(attribute.to_owned()),
                value: crate::echo::bounded_echo(value),
            }),
        None => Ok((
            publish_time()?,
            Some(TimestampFallback::Unparsable {
                attribute: attribute.to_owned(),
                value: crate::echo::bounded_echo(value),
            }),
        )),
    }
}

/// An event-time attribute read as epoch milliseconds or RFC 3339: `None` when it is neither,
/// `Some(None)` for an integer beyond `i64` (out of any range), else its milliseconds.
fn event_time_millis(value: &str) -> Option<Option<i64>> {
    let text = value.trim();
    match text.parse::<i64>() {
        Ok(millis) => Some(Some(millis)),
        Err(e)
            if matches!(
                e.kind(),
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
            ) =>
        {
            Some(None)
        }
        Err(_) => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Some(t.timestamp_millis())),
    }
}

/// The full record for `message`; `encode` turns the message into the value.
///
/// `encode` runs first and may take what it uses (the raw format moves the payload out);
/// everything else then moves into the headers, so no part of the message is copied twice.
/// A timestamp fallback is returned for the caller to log; a timestamp out of Kafka's range
/// is an error before anything is encoded.
pub fn build_record<E: From<TimestampOutOfRange>>(
    mut message: PubsubMessage,
    options: &RecordOptions,
    encode: impl FnOnce(&mut PubsubMessage) -> Result<Vec<u8>, E>,
) -> Result<(KafkaRecord, Option<TimestampFallback>), E> {
    let key = record_key(&message, &options.key_source);
    let message_id = (!message.message_id.is_empty()).then(|| message.message_id.clone());
    let (timestamp, fallback) = record_timestamp(&message, options.timestamp_attribute.as_deref())?;
    let value = encode(&mut message)?;
    let record = KafkaRecord {
        key,
        value,
        headers: record_headers(message, options),
        timestamp,
        message_id,
    };
    Ok((record, fallback))
}

/// Where records go (`KAFKA_TOPIC`, or `KAFKA_TOPIC_BY_SUBSCRIPTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRoute {
    /// Every delivery to one topic.
    Single(String),
    /// By subscription: full name (`projects/P/subscriptions/S`) or its short id `S` → topic;
    /// `*` is an explicit default. Anything else is refused, never guessed.
    BySubscription(BTreeMap<String, String>),
    /// No topic of its own (routing rules without `KAFKA_TOPIC`): only the rules route.
    Unset,
}

/// A subscription the routing table does not name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subscription {subscription:?} has no topic in KAFKA_TOPIC_BY_SUBSCRIPTION")]
pub struct UnknownSubscription {
    /// The subscription of the delivery.
    pub(crate) subscription: String,
}

impl TopicRoute {
    /// The topic for a delivery from `subscription`.
    pub(crate) fn topic_for<'a>(
        &'a self,
        subscription: &str,
    ) -> Result<&'a str, UnknownSubscription> {
        match self {
            Self::Single(topic) => Ok(topic),
            Self::Unset => Err(UnknownSubscription {
                subscription: crate::echo::bounded_echo(subscription),
            }),
            Self::BySubscription(map) => {
                let short = subscription.rsplit('/').next().unwrap_or(subscription);
                map.get(subscription)
                    .or_else(|| map.get(short))
                    .or_else(|| map.get("*"))
                    .map(String::as_str)
                    .ok_or_else(|| UnknownSubscription {
                        subscription: crate::echo::bounded_echo(subscription),
                    })
            }
        }
    }

    /// Every topic the route can produce to (opened at startup).
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = match self {
            Self::Single(topic) => vec![topic.clone()],
            Self::BySubscription(map) => map.values().cloned().collect(),
            Self::Unset => Vec::new(),
        };
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources_and_attribute_header_choices_parse_strictly() {
        assert_eq!("ordering_key".parse(), Ok(KeySource::OrderingKey));
        assert_eq!("message_id".parse(), Ok(KeySource::MessageId));
        assert_eq!("none".parse(), Ok(KeySource::None));
        assert_eq!(
            "attribute:tenant".parse(),
            Ok(KeySource::Attribute("tenant".into()))
        );
        for bad in ["attribute:", "Message_Id", "key"] {
            assert!(bad.parse::<KeySource>().is_err(), "{bad}");
        }
        assert_eq!("all".parse(), Ok(AttributeHeaders::All));
        assert_eq!("none".parse(), Ok(AttributeHeaders::None));
        assert_eq!(
            "only:a, b,,".parse(),
            Ok(AttributeHeaders::Only(vec!["a".into(), "b".into()]))
        );
        for bad in ["only:", "only: ,", "some", "a,b"] {
            assert!(bad.parse::<AttributeHeaders>().is_err(), "{bad}");
        }
    }

    fn message() -> PubsubMessage {
        PubsubMessage {
            data: b"payload".to_vec(),
            attributes: [("tenant", "acme"), ("pubsub.message_id", "forged")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            message_id: "42".into(),
            publish_time: "2021-02-26T19:13:55.749123Z".into(),
            publish_time_ms: 1_614_366_835_749,
            ordering_key: Some("order-7".into()),
            subscription: "projects/p/subscriptions/s".into(),
            delivery_attempt: Some(2),
        }
    }

    #[test]
    fn key_follows_each_source() {
        let m = message();
        assert_eq!(
            record_key(&m, &KeySource::OrderingKey),
            Some(b"order-7".to_vec())
        );
        assert_eq!(record_key(&m, &KeySource::MessageId), Some(b"42".to_vec()));
        assert_eq!(
            record_key(&m, &KeySource::Attribute("tenant".into())),
            Some(b"acme".to_vec())
        );
        assert_eq!(record_key(&m, &KeySource::Attribute("absent".into())), None);
        assert_eq!(record_key(&m, &KeySource::None), None);
        let unordered = PubsubMessage {
            ordering_key: None,
            ..m
        };
        assert_eq!(record_key(&unordered, &KeySource::OrderingKey), None);
    }

    #[test]
    fn headers_carry_attributes_and_metadata_and_forged_metadata_is_renamed() {
        let (record, fallback) = build_record(message(), &RecordOptions::default(), |_| {
            Ok::<_, TimestampOutOfRange>(b"v".to_vec())
        })
        .unwrap();
        assert_eq!(fallback, None);
        let header = |name: &str| {
            record
                .headers
                .get(name)
                .map(|v| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(header("tenant").as_deref(), Some("acme"));
        assert_eq!(header(HEADER_MESSAGE_ID).as_deref(), Some("42"));
        assert_eq!(
            header(HEADER_PUBLISH_TIME).as_deref(),
            Some("2021-02-26T19:13:55.749123Z")
        );
        assert_eq!(
            header(HEADER_SUBSCRIPTION).as_deref(),
            Some("projects/p/subscriptions/s")
        );
        assert_eq!(header(HEADER_ORDERING_KEY).as_deref(), Some("order-7"));
        assert_eq!(header(HEADER_DELIVERY_ATTEMPT).as_deref(), Some("2"));
        assert_eq!(
            header("pubsub.attribute.pubsub.message_id").as_deref(),
            Some("forged")
        );
        assert_eq!(record.headers.len(), 7);
        assert_eq!(record.timestamp.millis(), 1_614_366_835_749);
        assert_eq!(record.value, b"v");
    }

    #[test]
    fn attributes_never_pose_as_metadata_headers() {
        let mut m = PubsubMessage {
            ordering_key: None,
            delivery_attempt: None,
            ..message()
        };
        for name in [
            "pubsub.ordering_key",
            "pubsub.delivery_attempt",
            "PubSub.Message_Id",
            "pubsub.message_id",
        ] {
            m.attributes.insert(name.into(), "forged".into());
        }
        let headers = record_headers(m.clone(), &RecordOptions::default());
        assert!(!headers.contains_key(HEADER_ORDERING_KEY));
        assert!(!headers.contains_key(HEADER_DELIVERY_ATTEMPT));
        assert_eq!(headers[HEADER_MESSAGE_ID], b"42");
        assert!(!headers.contains_key("PubSub.Message_Id"));
        for name in [
            "pubsub.ordering_key",
            "pubsub.delivery_attempt",
            "PubSub.Message_Id",
            "pubsub.message_id",
        ] {
            assert_eq!(
                headers[&format!("pubsub.attribute.{name}")],
                b"forged",
                "{name}"
            );
        }
        assert_eq!(headers["tenant"], b"acme");
        // Without metadata headers the namespace is still the bridge's.
        let bare = RecordOptions {
            metadata_headers: false,
            ..RecordOptions::default()
        };
        let headers = record_headers(m.clone(), &bare);
        assert!(
            headers
                .keys()
                .all(|k| !k.starts_with("pubsub.") || k.starts_with("pubsub.attribute."))
        );
    }

    #[test]
    fn reserved_namespace_is_matched_without_case() {
        assert!(is_reserved_header("pubsub.x"));
        assert!(is_reserved_header("PUBSUB."));
        assert!(!is_reserved_header("pubsub"));
        assert!(!is_reserved_header("pubsubx.y"));
        assert!(!is_reserved_header("x.pubsub.y"));
        assert_eq!(
            attribute_header_name("attr.", "pubsub.a".to_owned()),
            "attr.pubsub.a"
        );
        assert_eq!(attribute_header_name("", "tenant".to_owned()), "tenant");
    }

    #[test]
    fn optional_metadata_headers_are_absent_when_the_message_lacks_them() {
        let m = PubsubMessage {
            ordering_key: None,
            delivery_attempt: None,
            ..message()
        };
        let headers = record_headers(m.clone(), &RecordOptions::default());
        assert!(!headers.contains_key(HEADER_ORDERING_KEY));
        assert!(!headers.contains_key(HEADER_DELIVERY_ATTEMPT));
    }

    #[test]
    fn header_options_drop_prefix_or_select_attributes_and_metadata() {
        let m = message();
        let names = |options: RecordOptions| {
            record_headers(m.clone(), &options)
                .into_keys()
                .collect::<Vec<_>>()
        };
        let none = RecordOptions {
            attribute_headers: AttributeHeaders::None,
            ..RecordOptions::default()
        };
        assert!(!names(none).contains(&"tenant".to_owned()));
        let prefixed = RecordOptions {
            attribute_prefix: "attr.".into(),
            ..RecordOptions::default()
        };
        let prefixed = names(prefixed);
        assert!(
            prefixed.contains(&"attr.tenant".to_owned())
                && !prefixed.contains(&"tenant".to_owned())
        );
        assert!(prefixed.contains(&HEADER_MESSAGE_ID.to_owned()));
        let only = RecordOptions {
            attribute_headers: AttributeHeaders::Only(vec!["tenant".into()]),
            metadata_headers: false,
            ..RecordOptions::default()
        };
        assert_eq!(names(only), vec!["tenant".to_owned()]);
    }

    /// `record_timestamp` as milliseconds, for comparing with literals.
    fn event_time(
        m: &PubsubMessage,
        attribute: Option<&str>,
    ) -> Result<(i64, Option<TimestampFallback>), TimestampOutOfRange> {
        record_timestamp(m, attribute).map(|(timestamp, fallback)| (timestamp.millis(), fallback))
    }

    #[test]
    fn event_time_from_an_attribute_or_back_to_publish_time() {
        let mut m = message();
        m.attributes.insert("ms".into(), "1700000000123".into());
        m.attributes
            .insert("iso".into(), "2023-11-14T22:13:20.5+01:00".into());
        m.attributes.insert("junk".into(), "yesterday".into());
        assert_eq!(event_time(&m, Some("ms")), Ok((1_700_000_000_123, None)));
        assert_eq!(event_time(&m, Some("iso")), Ok((1_699_996_400_500, None)));
        let (ts, fallback) = event_time(&m, Some("junk")).unwrap();
        assert_eq!(ts, m.publish_time_ms);
        assert!(matches!(
            fallback,
            Some(TimestampFallback::Unparsable { .. })
        ));
        assert_eq!(
            fallback.as_ref().unwrap().to_string(),
            "attribute \"junk\"=\"yesterday\" is neither epoch ms nor RFC 3339"
        );
        let (ts, fallback) = event_time(&m, Some("absent")).unwrap();
        assert_eq!(ts, m.publish_time_ms);
        assert_eq!(
            fallback.as_ref().unwrap().to_string(),
            "attribute \"absent\" missing"
        );
        assert!(matches!(fallback, Some(TimestampFallback::Missing { .. })));
        assert_eq!(event_time(&m, None), Ok((m.publish_time_ms, None)));
    }

    #[test]
    fn event_times_at_the_edges_of_kafkas_range_are_kept_exactly() {
        let mut m = message();
        for (value, millis) in [
            ("0", 0),
            ("+0", 0),
            (" 253402300799999 ", 253_402_300_799_999),
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T01:00:00+01:00", 0),
            ("9999-12-31T23:59:59.999Z", 253_402_300_799_999),
            ("9999-12-31T23:59:59.999999999Z", 253_402_300_799_999),
            ("9999-12-31T23:59:59.999+00:00", 253_402_300_799_999),
        ] {
            m.attributes.insert("t".into(), value.into());
            assert_eq!(event_time(&m, Some("t")), Ok((millis, None)), "{value}");
        }
    }

    #[test]
    fn event_times_outside_kafkas_range_are_refused_not_replaced() {
        let mut m = message();
        for value in [
            "-1",
            "-0001",
            "-9223372036854775808",
            "253402300800000",
            "9223372036854775807",
            "99999999999999999999",
            "-99999999999999999999",
            "1969-12-31T23:59:59.999Z",
            "1969-12-31T23:59:59.9999Z",
            "1970-01-01T00:59:59.999+01:00",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999-00:01",
            "9999-12-31T23:59:59-23:59",
        ] {
            m.attributes.insert("t".into(), value.into());
            let refused = event_time(&m, Some("t")).unwrap_err();
            assert_eq!(
                refused.origin,
                TimestampOrigin::Attribute("t".into()),
                "{value}"
            );
            assert_eq!(refused.value, value);
            assert_eq!(
                refused.to_string(),
                format!(
                    "attribute \"t\" {value:?} is outside Kafka's timestamp range \
                     1970-01-01T00:00:00.000Z..=9999-12-31T23:59:59.999Z"
                )
            );
        }
        // A long value is cut in the error, as every echo is.
        m.attributes.insert("t".into(), "9".repeat(500));
        assert!(event_time(&m, Some("t")).unwrap_err().value.len() < 200);
    }

    #[test]
    fn a_publish_time_outside_kafkas_range_is_refused_with_or_without_an_attribute() {
        let mut m = message();
        m.publish_time_ms = -1;
        for attribute in [None, Some("absent")] {
            assert_eq!(
                event_time(&m, attribute).unwrap_err().origin,
                TimestampOrigin::PublishTime
            );
        }
        // A usable event time needs no publish time.
        m.attributes.insert("t".into(), "5".into());
        assert_eq!(event_time(&m, Some("t")), Ok((5, None)));
        m.publish_time_ms = RecordTimestamp::MAX.millis() + 1;
        let refused = build_record(m, &RecordOptions::default(), |_| {
            Ok::<_, TimestampOutOfRange>(Vec::new())
        })
        .unwrap_err();
        assert_eq!(refused.origin, TimestampOrigin::PublishTime);
        assert_eq!(refused.value, "253402300800000");
    }

    #[test]
    fn routing_by_subscription_never_guesses() {
        let route = TopicRoute::BySubscription(
            [
                ("projects/p/subscriptions/orders", "orders-topic"),
                ("clicks", "clicks-topic"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        assert_eq!(
            route.topic_for("projects/p/subscriptions/orders"),
            Ok("orders-topic")
        );
        assert_eq!(
            route.topic_for("projects/other/subscriptions/clicks"),
            Ok("clicks-topic")
        );
        assert!(route.topic_for("projects/p/subscriptions/unknown").is_err());
        assert!(route.topic_for("projects/p/subscriptions/ORDERS").is_err());
        assert_eq!(
            TopicRoute::Single("t".into()).topic_for("anything"),
            Ok("t")
        );
        assert_eq!(
            route.topics(),
            vec!["clicks-topic".to_owned(), "orders-topic".to_owned()]
        );
    }

    #[test]
    fn the_trace_headers_are_written_whichever_attributes_and_metadata_are() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut traced = message();
        traced
            .attributes
            .insert(trace::ATTRIBUTE_TRACEPARENT.into(), parent.into());
        traced
            .attributes
            .insert(trace::ATTRIBUTE_TRACESTATE.into(), "congo=t61".into());
        let options = RecordOptions {
            attribute_headers: AttributeHeaders::None,
            metadata_headers: false,
            ..RecordOptions::default()
        };
        let headers = record_headers(traced, &options);
        assert_eq!(
            headers,
            BTreeMap::from([
                ("traceparent".to_owned(), parent.as_bytes().to_vec()),
                ("tracestate".to_owned(), b"congo=t61".to_vec()),
            ])
        );
        let untraced = record_headers(message(), &options);
        assert!(untraced.is_empty());
    }

    #[test]
    fn no_topic_of_its_own_routes_nothing() {
        assert_eq!(TopicRoute::Unset.topics(), Vec::<String>::new());
        let error = TopicRoute::Unset.topic_for("projects/p/subscriptions/s");
        assert_eq!(
            error.unwrap_err().subscription,
            "projects/p/subscriptions/s"
        );
    }
}
