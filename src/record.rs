//! Message → Kafka record: key, headers and timestamp exactly as the contract maps them.

use std::collections::BTreeMap;

use crate::envelope::PubsubMessage;

/// Header carrying Pub/Sub's message id; consumers drop redeliveries by it.
pub const HEADER_MESSAGE_ID: &str = "pubsub.message_id";
/// Header carrying the publish time as received (RFC 3339).
pub const HEADER_PUBLISH_TIME: &str = "pubsub.publish_time";
/// Header carrying the full subscription name.
pub const HEADER_SUBSCRIPTION: &str = "pubsub.subscription";
/// Header carrying the ordering key, when the message has one.
pub const HEADER_ORDERING_KEY: &str = "pubsub.ordering_key";
/// Header carrying the delivery attempt (decimal), when Pub/Sub sent one.
pub const HEADER_DELIVERY_ATTEMPT: &str = "pubsub.delivery_attempt";

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

/// One record, ready for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Key bytes (UTF-8 of the chosen string), if any.
    pub key: Option<Vec<u8>>,
    /// Encoded value.
    pub value: Vec<u8>,
    /// Attributes under their own names plus the `pubsub.*` metadata headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// CreateTime in milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// The key bytes `source` selects from `message`.
pub fn record_key(message: &PubsubMessage, source: &KeySource) -> Option<Vec<u8>> {
    let key = match source {
        KeySource::OrderingKey => message.ordering_key.as_deref(),
        KeySource::MessageId => Some(message.message_id.as_str()),
        KeySource::Attribute(name) => message.attributes.get(name).map(String::as_str),
        KeySource::None => None,
    };
    key.map(|k| k.as_bytes().to_vec())
}

/// Attributes as headers, then the metadata headers.
///
/// Metadata is written last, so an attribute that happens to be named `pubsub.message_id`
/// cannot forge the id consumers deduplicate by.
pub fn record_headers(message: &PubsubMessage) -> BTreeMap<String, Vec<u8>> {
    let mut headers: BTreeMap<String, Vec<u8>> = message
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    headers.insert(
        HEADER_MESSAGE_ID.into(),
        message.message_id.as_bytes().to_vec(),
    );
    headers.insert(
        HEADER_PUBLISH_TIME.into(),
        message.publish_time.as_bytes().to_vec(),
    );
    headers.insert(
        HEADER_SUBSCRIPTION.into(),
        message.subscription.as_bytes().to_vec(),
    );
    if let Some(key) = &message.ordering_key {
        headers.insert(HEADER_ORDERING_KEY.into(), key.as_bytes().to_vec());
    }
    if let Some(attempt) = message.delivery_attempt {
        headers.insert(
            HEADER_DELIVERY_ATTEMPT.into(),
            attempt.to_string().into_bytes(),
        );
    }
    headers
}

/// The full record for `message`; `encode` turns the message into the value.
///
/// The message is handed to `encode` by value so a raw payload moves into the record
/// without a copy.
pub fn build_record<E>(
    message: PubsubMessage,
    key_source: &KeySource,
    encode: impl FnOnce(PubsubMessage) -> Result<Vec<u8>, E>,
) -> Result<KafkaRecord, E> {
    let key = record_key(&message, key_source);
    let headers = record_headers(&message);
    let timestamp_ms = message.publish_time_ms;
    Ok(KafkaRecord {
        key,
        value: encode(message)?,
        headers,
        timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn headers_carry_attributes_and_metadata_and_metadata_wins() {
        let record = build_record(message(), &KeySource::OrderingKey, |_| {
            Ok::<_, ()>(b"v".to_vec())
        })
        .unwrap();
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
        assert_eq!(record.headers.len(), 6);
        assert_eq!(record.timestamp_ms, 1_614_366_835_749);
        assert_eq!(record.value, b"v");
    }

    #[test]
    fn optional_metadata_headers_are_absent_when_the_message_lacks_them() {
        let m = PubsubMessage {
            ordering_key: None,
            delivery_attempt: None,
            ..message()
        };
        let headers = record_headers(&m);
        assert!(!headers.contains_key(HEADER_ORDERING_KEY));
        assert!(!headers.contains_key(HEADER_DELIVERY_ATTEMPT));
    }
}
