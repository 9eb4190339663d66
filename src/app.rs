//! The pipeline of one delivery: token, envelope, route, encode, produce (or dead letter).
//!
//! Transport-free and runtime-free: [`crate::service::Service`] routes requests, bounds them,
//! logs and counts outcomes around it, and both the hyper server and the Lambda adapter run
//! that service. Kafka is reached only through the [`Produce`] seam.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;

use crate::auth::Verifier;
use crate::auth::settings::AuthConfig;
use crate::config::Config;
use crate::dedup::{Claim, Dedup};
use crate::encode::{Encoder, ValueFormat};
use crate::envelope::{self, PubsubMessage};
use crate::error::DeliveryError;
use crate::kafka::{Ack, KafkaError, KafkaProducer, Produce};
use crate::limits::InflightPermit;
use crate::pubsub_schema::PubsubSchemas;
use crate::record::{self, KafkaRecord};
use crate::registry::SchemaRegistry;
use crate::routes::{Decision, NoRoute};

/// Header naming the failure of a dead-lettered delivery (stable code).
pub(crate) const HEADER_ERROR: &str = "pubsub.error";
/// Header with the human-readable failure of a dead-lettered delivery.
pub(crate) const HEADER_ERROR_MESSAGE: &str = "pubsub.error_message";
/// Header with the request headers of a dead-lettered unwrapped push, whose metadata and
/// attributes its body lacks (`envelope::request_headers`): what a replay reads it again from.
pub(crate) const HEADER_REQUEST_HEADERS: &str = "pubsub.request_headers";

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The token verifier's settings cannot be used.
    #[error(transparent)]
    Verifier(#[from] crate::auth::VerifierSetupError),
    /// The Kafka TLS material (CA, client certificate or key file) cannot be used: found at
    /// startup, not by a connection retried forever in the background.
    #[error(transparent)]
    KafkaTls(#[from] crate::kafka::security::SecurityError),
}

/// What Kafka acknowledged for a delivery.
#[derive(Debug)]
pub(crate) enum Acked {
    /// The delivery's record.
    Record(Ack),
    /// Nothing: a routing rule dropped the delivery.
    Dropped {
        /// The rule's index.
        rule: usize,
    },
    /// A redelivery of a message whose record Kafka acknowledged already: nothing written.
    Duplicate,
    /// A dead letter of a delivery that can never succeed (`KAFKA_DLQ_TOPIC`).
    DeadLetter {
        /// Where the dead letter landed.
        ack: Ack,
        /// Why the delivery itself could not be produced.
        error: DeliveryError,
    },
}

/// How one delivery ended, with what it learned for its log line.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The delivery's `messageId`, when the body got far enough to tell.
    pub(crate) message_id: Option<String>,
    /// Acknowledged, or why not.
    pub(crate) result: Result<Acked, DeliveryError>,
}

/// The bridge's pipeline: verifies, maps, encodes and produces one push delivery.
pub struct App<P = KafkaProducer> {
    config: Config,
    verifier: Option<Verifier>,
    encoder: Encoder,
    producer: P,
    registry: Option<SchemaRegistry>,
    /// `pubsub-schema`: the messages' schema revisions.
    schemas: Option<PubsubSchemas>,
    dedup: Dedup,
}

impl std::fmt::Debug for App<KafkaProducer> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App<KafkaProducer> {
    /// The pipeline with the real Kafka producer, which starts connecting in the background
    /// (needs a Tokio runtime). TLS material is loaded here, so a bad file stops startup.
    pub fn new(config: Config) -> Result<Self, StartupError> {
        if config.kafka.security.protocol.uses_tls() {
            crate::kafka::security::tls_config(&config.kafka.security)?;
        }
        let producer = KafkaProducer::start(config.kafka.clone());
        Self::with_producer(config, producer)
    }
}

impl<P: Produce> App<P> {
    /// The pipeline producing through `producer` (tests and benchmarks pass their own).
    pub fn with_producer(config: Config, producer: P) -> Result<Self, StartupError> {
        let verifier = match &config.auth {
            AuthConfig::Oidc(oidc) => {
                if oidc.allowed_emails.is_none() {
                    tracing::warn!(
                        "OIDC_ALLOW_ANY_EMAIL=true: a valid token of ANY Google account for the audience can write to Kafka"
                    );
                }
                Some(Verifier::new(oidc.clone())?)
            }
            AuthConfig::Disabled => {
                tracing::warn!(
                    "OIDC_DISABLED=true: push tokens are NOT verified; anyone who can reach this endpoint can write to Kafka"
                );
                None
            }
        };
        Ok(Self {
            encoder: Encoder::new(config.value_format),
            producer,
            verifier,
            registry: config.schema_registry.as_ref().map(|r| {
                let credentials = r
                    .credentials
                    .as_ref()
                    .map(|(u, p)| (u.as_str(), p.as_str()));
                SchemaRegistry::new(&r.url, credentials)
            }),
            schemas: (config.value_format == ValueFormat::PubsubSchema).then(|| {
                PubsubSchemas::new(
                    &config.pubsub_api,
                    &config.kafka.security.metadata_host,
                    config.kafka.produce_timeout,
                )
            }),
            dedup: Dedup::new(config.dedup_cache_entries),
            config,
        })
    }

    /// Fetches signing keys ahead of the first delivery; failures are logged and retried later.
    pub async fn warm_up(&self) {
        if let Some(verifier) = &self.verifier
            && let Err(e) = verifier.warm_up().await
        {
            tracing::warn!(error = %e, "JWKS not reachable at startup; will retry on first delivery");
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The producer (readiness, metrics and tests).
    pub fn producer(&self) -> &P {
        &self.producer
    }

    /// Schema revisions found in and missing from the cache: `(hits, misses)` (metrics).
    pub(crate) fn schema_cache(&self) -> (u64, u64) {
        self.schemas
            .as_ref()
            .map_or((0, 0), |schemas| (schemas.hits(), schemas.misses()))
    }

    /// Verified tokens cached (metrics).
    pub(crate) fn cached_tokens(&self) -> usize {
        self.verifier.as_ref().map_or(0, Verifier::cached_tokens)
    }

    /// Token cache `(hits, misses)` (metrics).
    pub(crate) fn token_cache_lookups(&self) -> (u64, u64) {
        self.verifier
            .as_ref()
            .map_or((0, 0), Verifier::token_cache_lookups)
    }

    /// Checks the request's token from its headers alone, before a byte of the body is read.
    pub(crate) async fn authorize(&self, headers: &HeaderMap) -> Result<(), DeliveryError> {
        let Some(verifier) = &self.verifier else {
            return Ok(());
        };
        verifier.verify_headers(headers, unix_now()).await?;
        Ok(())
    }

    /// Parses, routes, encodes and produces an authorized delivery, or dead-letters it when it
    /// can never succeed and `KAFKA_DLQ_TOPIC` is set. `permit`, the delivery's share of the
    /// in-flight budget, goes to the producer with the record.
    pub(crate) async fn deliver(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        permit: InflightPermit,
    ) -> Outcome {
        let mut message_id = None;
        let mut permit = Some(permit);
        // The request itself is kept only for a dead letter; without one it is dropped once
        // parsed, so a delivery waiting for Kafka holds its record and not its body as well.
        let kept_for_dead_letter = self.config.kafka.dlq_topic.is_some().then(|| body.clone());
        let result = match self
            .produce_delivery(headers, body, &mut message_id, &mut permit)
            .await
        {
            Ok(acked) => Ok(acked),
            Err(error) if error.is_dead_letter() => match &kept_for_dead_letter {
                Some(body) => {
                    self.dead_letter(headers, body, error, message_id.as_deref(), permit.take())
                        .await
                }
                None => Err(error),
            },
            Err(error) => Err(error),
        };
        Outcome { message_id, result }
    }

    async fn produce_delivery(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        message_id: &mut Option<String>,
        permit: &mut Option<InflightPermit>,
    ) -> Result<Acked, DeliveryError> {
        let message: PubsubMessage =
            envelope::parse_push(headers, &body, self.config.push_payload, chrono::Utc::now)
                .inspect_err(|_| *message_id = envelope::message_id_hint(&body))?;
        drop(body);
        *message_id = Some(message.message_id.clone()).filter(|id| !id.is_empty());
        let (topic, routed) = match &self.config.routes {
            None => (self.config.route.topic_for(&message.subscription)?, None),
            Some(routes) => match routes.decide(&message)? {
                Decision::Drop { rule } => return Ok(Acked::Dropped { rule }),
                Decision::Route(routed) => (routed.topic, Some(routed)),
                Decision::NoMatch => match &self.config.route {
                    record::TopicRoute::Single(topic) => (topic.as_str(), None),
                    _ => return Err(NoRoute.into()),
                },
            },
        };
        let patience = self.config.kafka.produce_timeout;
        let ticket = match self
            .dedup
            .claim(&message.subscription, &message.message_id, patience)
            .await
        {
            Claim::Produce(ticket) => ticket,
            Claim::Duplicate => return Ok(Acked::Duplicate),
            Claim::Failed(error) => return Err(error.into()),
            Claim::Unsettled => {
                return Err(KafkaError::Timeout {
                    topic: topic.to_owned(),
                    partition: -1,
                    after: patience,
                }
                .into());
            }
        };
        let typed = match &self.schemas {
            Some(schemas) => schemas.for_message(&message.attributes).await?,
            None => None,
        };
        let schema_id = match (&self.registry, &typed) {
            (Some(registry), Some(typed)) => {
                let (definition, schema_type) = typed.schema.registry_definition();
                let revision = &typed.revision;
                Some(
                    registry
                        .revision_id(topic, revision, definition, schema_type)
                        .await?,
                )
            }
            (Some(registry), None) if self.config.value_format == ValueFormat::Avro => {
                Some(registry.schema_id(topic).await?)
            }
            _ => None,
        };
        let (mut record, fallback): (KafkaRecord, _) =
            record::build_record(message, &self.config.record, |message| {
                match &typed {
                    Some(t) => {
                        let revision = &t.revision;
                        self.encoder
                            .encode_typed(message, &t.schema, t.encoding, revision, schema_id)
                    }
                    None => self.encoder.encode_framed(message, schema_id),
                }
                .map_err(DeliveryError::from)
            })?;
        if let Some(fallback) = fallback {
            tracing::warn!(message_id = message_id.as_deref(), reason = %fallback, "event time unusable; using publishTime");
        }
        if let Some(routed) = routed {
            routed.shape(&mut record);
        }
        let ack = match ticket {
            Some(ticket) => {
                self.producer
                    .produce_settled(topic, record, permit.take(), move |result| {
                        ticket.settle(result);
                    })
                    .await?
            }
            None => self.producer.produce(topic, record, permit.take()).await?,
        };
        Ok(Acked::Record(ack))
    }

    /// Runs a dead letter's original request through the pipeline as it stands now, writing
    /// what succeeds. The token is not checked again (it was verified when the request arrived,
    /// and it has long expired), and what still fails is not dead-lettered again: it is the
    /// caller's to report, and stays where it is (`pubsub-kafka-bridge replay`).
    pub(crate) async fn redeliver(
        &self,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Acked, DeliveryError> {
        self.produce_delivery(headers, body, &mut None, &mut None)
            .await
    }

    /// Writes an undeliverable request to the dead-letter topic.
    async fn dead_letter(
        &self,
        request: &HeaderMap,
        body: &Bytes,
        error: DeliveryError,
        message_id: Option<&str>,
        permit: Option<InflightPermit>,
    ) -> Result<Acked, DeliveryError> {
        let Some(topic) = &self.config.kafka.dlq_topic else {
            return Err(error);
        };
        let mut headers = std::collections::BTreeMap::new();
        headers.insert(HEADER_ERROR.to_owned(), error.code().as_bytes().to_vec());
        headers.insert(
            HEADER_ERROR_MESSAGE.to_owned(),
            error.to_string().into_bytes(),
        );
        if let Some(id) = message_id {
            headers.insert(record::HEADER_MESSAGE_ID.to_owned(), id.as_bytes().to_vec());
        }
        if let Some(kept) = envelope::request_headers::kept(request, self.config.push_payload) {
            headers.insert(HEADER_REQUEST_HEADERS.to_owned(), kept);
        }
        let record = KafkaRecord {
            key: message_id.map(|id| id.as_bytes().to_vec()),
            value: body.to_vec(),
            headers,
            timestamp: crate::timestamp::RecordTimestamp::now(),
            message_id: None,
        };
        match self.producer.produce(topic, record, permit).await {
            Ok(ack) => Ok(Acked::DeadLetter { ack, error }),
            // A dead letter Kafka refuses for good: answer the original failure, so Pub/Sub keeps
            // the message (and its own dead-letter policy takes it) instead of losing it.
            Err(dlq_error) if !dlq_error.is_retriable() => {
                tracing::warn!(dlq_error = %dlq_error, "dead letter refused by Kafka");
                Err(error)
            }
            Err(dlq_error) => {
                tracing::warn!(original = %error, "dead-letter produce failed");
                Err(DeliveryError::Kafka(dlq_error))
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_kafka_ca_file_stops_startup_naming_its_variable() {
        let path = std::env::temp_dir().join(format!("not-a-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let vars: std::collections::HashMap<String, String> = [
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9093"),
            ("KAFKA_TOPIC", "t"),
            ("OIDC_DISABLED", "true"),
            ("KAFKA_SECURITY_PROTOCOL", "SSL"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([(
            "KAFKA_SSL_CA_LOCATION".to_owned(),
            path.display().to_string(),
        )])
        .collect();
        let config = Config::from_map(&vars).unwrap();
        let error = App::new(config).expect_err("startup refused").to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.starts_with("KAFKA_SSL_CA_LOCATION ("), "{error}");
    }
}
