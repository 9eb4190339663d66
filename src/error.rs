//! The one place where a failed delivery becomes an HTTP status, a retry class and a log level.

use bytes::Bytes;
use http::{Response, StatusCode, header};

use crate::auth::AuthError;
use crate::encode::EncodeError;
use crate::envelope::EnvelopeError;
use crate::kafka::KafkaError;
use crate::pubsub_schema::PubsubSchemaError;
use crate::record::{TimestampOutOfRange, UnknownSubscription};
use crate::registry::RegistryError;
use crate::routes::{NoRoute, RouteFailed};

pub(crate) use crate::echo::bounded_echo;

/// Everything that can stop a delivery from being acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The body is not a usable push delivery.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The token is missing, invalid or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The body is larger than `MAX_BODY_BYTES`.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body could not be read off the connection.
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// The routing table has no topic for the delivery's subscription (a configuration gap,
    /// not a bad message: never dead-lettered, redelivered until the table names it).
    #[error(transparent)]
    UnknownSubscription(#[from] UnknownSubscription),
    /// No routing rule matched and `KAFKA_TOPIC` is unset (a configuration gap, like an
    /// unknown subscription: never dead-lettered).
    #[error(transparent)]
    NoRoute(#[from] NoRoute),
    /// A routing rule could not be evaluated for the message (permanent for the message).
    #[error(transparent)]
    RouteFailed(#[from] RouteFailed),
    /// The record's timestamp would lie outside Kafka's range (a permanent fault of the message).
    #[error(transparent)]
    Timestamp(#[from] TimestampOutOfRange),
    /// The schema registry gave no schema id (retriable).
    #[error(transparent)]
    SchemaRegistry(#[from] RegistryError),
    /// The message's schema revision cannot be had (`pubsub-schema`): not found or refused
    /// (permanent), or the Schema API unavailable (retriable).
    #[error(transparent)]
    PubsubSchema(#[from] PubsubSchemaError),
    /// The message cannot be written in the configured value format.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Kafka did not acknowledge the record.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Only POST delivers (the method as sent, cut by `bounded_echo`).
    #[error("method {0} not allowed; push deliveries are POSTed")]
    MethodNotAllowed(String),
    /// The in-flight budget is full: 503, so Pub/Sub backs off and redelivers.
    #[error(transparent)]
    Overloaded(#[from] crate::limits::Overloaded),
    /// The request head is over the head limits (431).
    #[error(transparent)]
    HeadTooLarge(#[from] crate::limits::HeadTooLarge),
    /// The request target is longer than the HTTP parser takes (414, answered by it).
    #[error("request URI too long")]
    UriTooLong,
    /// The HTTP parser could not read the request head (400, answered by it): the reason as
    /// the parser gives it.
    #[error("request head is not valid HTTP: {0}")]
    MalformedHead(String),
    /// The body did not arrive within `HTTP_BODY_IDLE_TIMEOUT_MS` / `HTTP_BODY_TIMEOUT_MS`.
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The process is shutting down and the delivery could not finish in time.
    #[error("shutting down before Kafka acknowledged")]
    ShuttingDown,
    /// A bug: the handler panicked.
    #[error("internal error")]
    Internal,
}

impl DeliveryError {
    /// The HTTP status Pub/Sub sees.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Envelope(_)
            | Self::BodyUnreadable(_)
            | Self::MalformedHead(_)
            | Self::Timestamp(_) => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Auth(AuthError::EmailNotAllowed { .. }) => StatusCode::FORBIDDEN,
            Self::Auth(AuthError::KeysUnavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownSubscription(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::RouteFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SchemaRegistry(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::PubsubSchema(e) if e.is_permanent() => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PubsubSchema(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Encode(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Kafka(e) if e.is_retriable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Kafka(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code (response bodies, dead-letter `pubsub.error` header).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Envelope(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::Overloaded(_) => "overloaded",
            Self::BodyTimeout(_) => "body_timeout",
            Self::HeadTooLarge(_) => "head_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::MalformedHead(_) => "malformed_head",
            Self::UnknownSubscription(_) => "unknown_subscription",
            Self::NoRoute(_) => "no_route",
            Self::RouteFailed(_) => "route_failed",
            Self::Timestamp(_) => "timestamp_out_of_range",
            Self::SchemaRegistry(_) => "schema_registry_unavailable",
            Self::PubsubSchema(e) => e.code(),
            Self::Encode(EncodeError::SchemaMismatch { .. }) => "schema_mismatch",
            Self::Encode(_) => "encoding_failed",
            Self::Kafka(e) => e.code(),
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal_error",
        }
    }

    /// Whether no redelivery can ever succeed, so the delivery belongs in the dead-letter
    /// topic when one is configured. Unverified requests never qualify: they stay outside Kafka.
    pub(crate) fn is_dead_letter(&self) -> bool {
        match self {
            Self::Envelope(_) | Self::Encode(_) | Self::Timestamp(_) | Self::RouteFailed(_) => true,
            Self::Kafka(e) => !e.is_retriable(),
            Self::PubsubSchema(e) => e.is_permanent(),
            _ => false,
        }
    }

    /// Failures that point at the bridge or Kafka rather than the sender are warnings or errors.
    pub(crate) fn level(&self) -> tracing::Level {
        match self.status().as_u16() {
            500.. if matches!(self, Self::Internal) => tracing::Level::ERROR,
            _ => tracing::Level::WARN,
        }
    }

    /// The response: the status and a short JSON body naming the reason (never the token).
    pub(crate) fn to_response(&self) -> Response<Bytes> {
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "application/json");
        match self {
            Self::MethodNotAllowed(_) => response = response.header(header::ALLOW, "POST"),
            Self::Overloaded(_) => response = response.header(header::RETRY_AFTER, "1"),
            _ => {}
        }
        response
            .body(Bytes::from(body.to_string()))
            .unwrap_or_else(|_| Response::new(Bytes::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let cases: Vec<(DeliveryError, u16)> = vec![
            (EnvelopeError::MissingMessage.into(), 400),
            (timestamp_out_of_range().into(), 400),
            (AuthError::MissingAuthorization.into(), 401),
            (
                AuthError::InvalidToken(crate::auth::token::TokenRejection::Expired).into(),
                401,
            ),
            (AuthError::BadSignature.into(), 401),
            (AuthError::SignatureRemoved.into(), 401),
            (AuthError::UnknownKey("k".into()).into(), 401),
            (AuthError::EmailNotAllowed { email: None }.into(), 403),
            (DeliveryError::BodyTooLarge { limit: 1 }, 413),
            (KafkaError::Unavailable("down".into()).into(), 503),
            (
                KafkaError::Timeout {
                    topic: "t".into(),
                    partition: 0,
                    after: std::time::Duration::from_secs(1),
                }
                .into(),
                503,
            ),
            (
                KafkaError::OverRecordLimit {
                    topic: "t".into(),
                    partition: 0,
                    size: 2,
                    limit: 1,
                }
                .into(),
                422,
            ),
            (DeliveryError::MethodNotAllowed("GET".into()), 405),
            (crate::limits::Overloaded::Requests(1).into(), 503),
            (crate::limits::Overloaded::Bytes(1).into(), 503),
            (
                DeliveryError::BodyTimeout(std::time::Duration::from_secs(1)),
                408,
            ),
            (DeliveryError::ShuttingDown, 503),
            (DeliveryError::Internal, 500),
            (crate::limits::HeadTooLarge::Fields(161).into(), 431),
            (crate::limits::HeadTooLarge::Transport.into(), 431),
            (DeliveryError::UriTooLong, 414),
            (DeliveryError::MalformedHead("x".into()), 400),
            (NoRoute.into(), 404),
            (route_failed().into(), 422),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert!(!error.status().is_success());
        }
    }

    fn timestamp_out_of_range() -> TimestampOutOfRange {
        TimestampOutOfRange {
            origin: crate::record::TimestampOrigin::Attribute("t".into()),
            value: "-1".into(),
        }
    }

    fn route_failed() -> RouteFailed {
        RouteFailed {
            rule: 1,
            part: "key".into(),
            message: "No such key: customer".into(),
        }
    }

    #[test]
    fn routing_failures_have_their_codes_and_only_evaluation_failures_are_dead_letters() {
        let failed = DeliveryError::from(route_failed());
        assert_eq!(failed.code(), "route_failed");
        assert!(failed.is_dead_letter());
        assert_eq!(failed.to_string(), "rule 1 key: No such key: customer");
        let no_route = DeliveryError::from(NoRoute);
        assert_eq!(no_route.code(), "no_route");
        assert!(!no_route.is_dead_letter());
    }

    #[test]
    fn only_permanent_failures_are_dead_letters() {
        assert!(DeliveryError::from(EnvelopeError::MissingMessage).is_dead_letter());
        let timestamp = DeliveryError::from(timestamp_out_of_range());
        assert!(timestamp.is_dead_letter());
        assert_eq!(timestamp.code(), "timestamp_out_of_range");
        assert!(!DeliveryError::from(AuthError::NotBearer).is_dead_letter());
        assert!(!DeliveryError::from(KafkaError::Unavailable("x".into())).is_dead_letter());
        assert!(!DeliveryError::BodyTooLarge { limit: 1 }.is_dead_letter());
        // A refused head was never verified nor read: it stays outside Kafka.
        assert!(!DeliveryError::from(crate::limits::HeadTooLarge::Fields(1)).is_dead_letter());
        assert!(!DeliveryError::MalformedHead("x".into()).is_dead_letter());
        assert!(
            DeliveryError::from(EnvelopeError::DuplicateMetadataHeader(
                "x-goog-pubsub-message-id"
            ))
            .is_dead_letter()
        );
    }

    #[test]
    fn schema_failures_are_permanent_except_an_unavailable_api() {
        let revision = || "projects/p/schemas/s@r".to_owned();
        let reason = || "x".to_owned();
        let cases: Vec<(DeliveryError, u16, &str, bool)> = vec![
            (
                PubsubSchemaError::NotFound {
                    revision: revision(),
                    reason: reason(),
                }
                .into(),
                422,
                "schema_not_found",
                true,
            ),
            (
                PubsubSchemaError::Refused {
                    revision: revision(),
                    reason: reason(),
                }
                .into(),
                422,
                "schema_refused",
                true,
            ),
            (
                PubsubSchemaError::UnknownEncoding {
                    revision: revision(),
                    encoding: reason(),
                }
                .into(),
                422,
                "schema_mismatch",
                true,
            ),
            (
                PubsubSchemaError::Unavailable {
                    revision: revision(),
                    reason: reason(),
                }
                .into(),
                503,
                "schema_api_unavailable",
                false,
            ),
        ];
        for (error, status, code, dead_letter) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.code(), code);
            assert_eq!(error.is_dead_letter(), dead_letter, "{error}");
        }
    }

    #[test]
    fn overload_says_when_to_retry() {
        let response = DeliveryError::from(crate::limits::Overloaded::Requests(1)).to_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "overloaded");
    }

    #[test]
    fn response_body_names_the_reason() {
        let response = DeliveryError::from(AuthError::NotBearer).to_response();
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "not_bearer");
    }
}
