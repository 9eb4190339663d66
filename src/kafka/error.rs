//! The error model: why a record was not acknowledged, and its one retriable/permanent class.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::producer::Error as ProducerError;

/// Why a record was not acknowledged. The client's own error is kept as the source, and
/// `KafkaError::class` sorts every variant into retriable or permanent, once. `Clone`: copies of
/// a message waiting for the first one's produce answer its failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaError {
    /// No connection to the cluster (yet, or any more).
    #[error("Kafka unreachable: {0}")]
    Unavailable(String),
    /// The topic does not exist (or metadata does not list it yet).
    #[error("topic {topic:?} not found in cluster metadata")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// No acknowledgement within `KAFKA_PRODUCE_TIMEOUT_MS`.
    #[error("no acknowledgement from {topic}/{partition} within {after:?}")]
    Timeout {
        /// The topic.
        topic: String,
        /// The partition (-1: not chosen yet).
        partition: i32,
        /// The timeout.
        after: Duration,
    },
    /// The client or the broker failed a request for `topic` (metadata, a partition's
    /// connection, or a produce sent on its own).
    #[error("{topic}{}: {source}", partition.map(|p| format!("/{p}")).unwrap_or_default())]
    Client {
        /// The topic.
        topic: String,
        /// The partition, when the request had one.
        partition: Option<i32>,
        /// The client's error.
        #[source]
        source: Arc<ClientError>,
    },
    /// The batching producer failed the record.
    #[error("{topic}/{partition}: {source}")]
    Producer {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The producer's error.
        #[source]
        source: ProducerError,
    },
    /// Larger than `KAFKA_MAX_RECORD_BYTES`: refused before sending.
    #[error("{topic}/{partition}: record of {size} bytes exceeds KAFKA_MAX_RECORD_BYTES={limit}")]
    OverRecordLimit {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The record's approximate size on the wire.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Whether a failure can pass on a redelivery, and its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorClass {
    /// Whether a redelivery can succeed (503) or never will (4xx, dead letter).
    pub(crate) retriable: bool,
    /// Stable machine-readable code.
    pub(crate) code: &'static str,
}

const fn class(retriable: bool, code: &'static str) -> ErrorClass {
    ErrorClass { retriable, code }
}

impl KafkaError {
    /// The one classification of every Kafka failure.
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable(_) => class(true, "kafka_unavailable"),
            Self::UnknownTopic { .. } => class(true, "unknown_topic"),
            Self::Timeout { .. } => class(true, "kafka_timeout"),
            Self::OverRecordLimit { .. } => class(false, "record_too_large"),
            Self::Client { source, .. } => classify_client(source),
            Self::Producer { source, .. } => match source {
                ProducerError::Client(client) => classify_client(client),
                ProducerError::TooLarge => class(false, "record_too_large"),
                ProducerError::Aggregator(_) | ProducerError::FlushError(_) => {
                    class(true, "kafka_unavailable")
                }
            },
        }
    }

    /// Whether a redelivery can succeed (503) or never will (4xx, dead letter).
    pub(crate) fn is_retriable(&self) -> bool {
        self.class().retriable
    }

    /// Stable machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        self.class().code
    }
}

/// What the broker's (or the transport's) answer means for a redelivery.
fn classify_client(error: &ClientError) -> ErrorClass {
    match error {
        ClientError::ServerError { protocol_error, .. } => match protocol_error {
            ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge => {
                class(false, "record_too_large")
            }
            ProtocolError::CorruptMessage
            | ProtocolError::InvalidRecord
            | ProtocolError::InvalidTimestamp => class(false, "record_rejected"),
            ProtocolError::InvalidTopicException => class(false, "invalid_topic"),
            // The broker's quota throttle (KIP-219) outlasts the produce timeout: the records
            // were not sent, a redelivery after the throttle writes them.
            ProtocolError::ThrottlingQuotaExceeded => class(true, "kafka_throttled"),
            // Authorization and everything else may be fixed by an operator or a leader move.
            _ => class(true, "broker_error"),
        },
        _ => class(true, "kafka_unavailable"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::kafka) fn server_error(protocol_error: ProtocolError) -> Arc<ClientError> {
        Arc::new(ClientError::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Topic("t".into()),
            response: None,
            is_virtual: false,
        })
    }

    fn via_client(source: Arc<ClientError>) -> KafkaError {
        KafkaError::Client {
            topic: "t".into(),
            partition: Some(0),
            source,
        }
    }

    fn via_producer(source: ProducerError) -> KafkaError {
        KafkaError::Producer {
            topic: "t".into(),
            partition: 0,
            source,
        }
    }

    #[test]
    fn too_large_and_invalid_records_are_permanent_whichever_path_reports_them() {
        for (protocol_error, code) in [
            (ProtocolError::MessageTooLarge, "record_too_large"),
            (ProtocolError::RecordListTooLarge, "record_too_large"),
            (ProtocolError::InvalidRecord, "record_rejected"),
            (ProtocolError::CorruptMessage, "record_rejected"),
            (ProtocolError::InvalidTimestamp, "record_rejected"),
            (ProtocolError::InvalidTopicException, "invalid_topic"),
        ] {
            let expected = class(false, code);
            assert_eq!(via_client(server_error(protocol_error)).class(), expected);
            let batched = ProducerError::Client(server_error(protocol_error));
            assert_eq!(via_producer(batched).class(), expected);
        }
        assert_eq!(
            via_producer(ProducerError::TooLarge).class(),
            class(false, "record_too_large")
        );
        let over = KafkaError::OverRecordLimit {
            topic: "t".into(),
            partition: 0,
            size: 2,
            limit: 1,
        };
        assert_eq!(over.class(), class(false, "record_too_large"));
    }

    #[test]
    fn leadership_replication_and_transport_errors_are_retriable() {
        for e in [
            ProtocolError::NotLeaderOrFollower,
            ProtocolError::NotEnoughReplicas,
            ProtocolError::RequestTimedOut,
            ProtocolError::TopicAuthorizationFailed,
        ] {
            assert_eq!(
                via_client(server_error(e)).class(),
                class(true, "broker_error")
            );
        }
        let transport = Arc::new(ClientError::Timeout);
        assert_eq!(
            via_client(Arc::clone(&transport)).class(),
            class(true, "kafka_unavailable")
        );
        assert_eq!(
            via_producer(ProducerError::Client(transport)).class(),
            class(true, "kafka_unavailable")
        );
        assert_eq!(
            via_producer(ProducerError::FlushError("x".into())).class(),
            class(true, "kafka_unavailable")
        );
    }

    #[test]
    fn a_throttle_beyond_the_deadline_is_retriable_and_named() {
        let throttled = server_error(ProtocolError::ThrottlingQuotaExceeded);
        assert_eq!(
            via_client(Arc::clone(&throttled)).class(),
            class(true, "kafka_throttled")
        );
        assert_eq!(
            via_producer(ProducerError::Client(throttled)).class(),
            class(true, "kafka_throttled")
        );
    }

    #[test]
    fn the_client_error_is_kept_as_the_source() {
        let error = via_client(server_error(ProtocolError::MessageTooLarge));
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.to_string().contains("MessageTooLarge"), "{source}");
        assert!(error.to_string().starts_with("t/0: "), "{error}");
    }
}
