//! The transport-agnostic core: `App::handle(Request<Bytes>) -> Response<Bytes>`, shared by hyper and Lambda.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::auth::Verifier;
use crate::config::{AuthConfig, Config};
use crate::encode::Encoder;
use crate::envelope::{self, PubsubMessage};
use crate::error::DeliveryError;
use crate::kafka::{Ack, KafkaProducer};
use crate::limits::{InflightBudget, InflightPermit};
use crate::metrics::{Gauges, Metrics};
use crate::record::{self, KafkaRecord};
use crate::registry::SchemaRegistry;

/// Header naming the failure of a dead-lettered delivery (stable code).
pub const HEADER_ERROR: &str = "pubsub.error";
/// Header with the human-readable failure of a dead-lettered delivery.
pub const HEADER_ERROR_MESSAGE: &str = "pubsub.error_message";

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

/// What the request head decides, before a byte of the body is read.
#[derive(Debug)]
pub enum Head {
    /// Answered from the head alone: health, readiness, metrics, a wrong method, a token that
    /// fails verification, or a full in-flight budget.
    Answered(Response<Bytes>),
    /// A verified delivery with its place in the in-flight budget: read the body into the
    /// permit ([`InflightPermit::reserve`]), then [`App::deliver`].
    Delivery(InflightPermit),
}

/// What one delivery learned, for its log line, and its share of the in-flight budget (handed
/// on to the Kafka client with the record, see [`KafkaProducer::produce_holding`]).
#[derive(Default)]
struct DeliveryContext {
    message_id: Option<String>,
    permit: Option<InflightPermit>,
}

/// The bridge: verifies, maps, encodes and produces one push delivery per request.
pub struct App {
    config: Config,
    verifier: Option<Verifier>,
    encoder: Encoder,
    kafka: KafkaProducer,
    /// Flips to `true` when the shutdown grace period is over: waiting deliveries answer 503.
    abandon: watch::Sender<bool>,
    metrics: Metrics,
    registry: Option<SchemaRegistry>,
    inflight: InflightBudget,
}

impl App {
    /// Builds the app and starts connecting to Kafka in the background (needs a Tokio runtime).
    pub fn new(config: Config) -> Result<Self, StartupError> {
        if config.kafka.security.protocol.uses_tls() {
            crate::kafka::security::tls_config(&config.kafka.security)?;
        }
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
        Ok(App {
            encoder: Encoder::new(config.value_format),
            kafka: KafkaProducer::start(config.kafka.clone()),
            verifier,
            abandon: watch::Sender::new(false),
            metrics: Metrics::default(),
            inflight: InflightBudget::new(config.limits.inflight),
            registry: config.schema_registry.as_ref().map(|r| {
                let credentials = r
                    .credentials
                    .as_ref()
                    .map(|(u, p)| (u.as_str(), p.as_str()));
                SchemaRegistry::new(&r.url, credentials)
            }),
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
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The Kafka producer (readiness and tests).
    pub fn kafka(&self) -> &KafkaProducer {
        &self.kafka
    }

    /// Ends the shutdown grace period: deliveries still waiting for Kafka answer 503.
    pub fn abandon_in_flight(&self) {
        self.abandon.send_replace(true);
    }

    /// Handles one HTTP request of any kind whose body is already in memory (Lambda, tests).
    pub async fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
        let (head, body) = request.into_parts();
        let mut permit = match self.admit(&head).await {
            Head::Answered(response) => return response,
            Head::Delivery(permit) => permit,
        };
        if body.len() > self.config.max_body_bytes {
            let limit = self.config.max_body_bytes;
            return self.refuse(DeliveryError::BodyTooLarge { limit }, &head.headers);
        }
        if let Err(overloaded) = permit.reserve(body.len()) {
            return self.refuse(overloaded.into(), &head.headers);
        }
        self.deliver(head, body, permit).await
    }

    /// Decides what the head alone can: routes, method, token, room in the in-flight budget.
    ///
    /// The token is verified here, before the body is read, so an unauthenticated client never
    /// gets a `100 Continue`, never has its body read, and never holds in-flight budget.
    pub async fn admit(&self, head: &Parts) -> Head {
        match (&head.method, head.uri.path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                return Head::Answered(plain(StatusCode::OK, "ok"));
            }
            (&Method::GET | &Method::HEAD, "/readyz") => return Head::Answered(self.readiness()),
            (&Method::GET, "/metrics") => return Head::Answered(self.metrics_text()),
            (&Method::POST, _) => {}
            (method, _) => {
                let method = crate::error::bounded_echo(method.as_str());
                return Head::Answered(self.fail(
                    DeliveryError::MethodNotAllowed(method),
                    &DeliveryContext::default(),
                    &head.headers,
                ));
            }
        }
        if let Some(verifier) = &self.verifier {
            let authorization = head
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Err(e) = verifier.verify(authorization, unix_now()).await {
                return Head::Answered(self.refuse(e.into(), &head.headers));
            }
        }
        match self.inflight.admit() {
            Ok(permit) => Head::Delivery(permit),
            Err(overloaded) => Head::Answered(self.refuse(overloaded.into(), &head.headers)),
        }
    }

    /// Answers a delivery that failed before its pipeline ran (token, body, budget): one log
    /// line, counted in the metrics.
    pub fn refuse(&self, error: DeliveryError, headers: &HeaderMap) -> Response<Bytes> {
        let response = self.fail(error, &DeliveryContext::default(), headers);
        self.metrics.record(response.status().as_u16());
        response
    }

    fn metrics_text(&self) -> Response<Bytes> {
        let (produce_requests, produced_records) = self.kafka.stats().snapshot();
        let gauges = Gauges {
            produce_requests,
            produced_records,
            cached_tokens: self.verifier.as_ref().map_or(0, Verifier::cached_tokens),
            inflight_requests: self.inflight.requests_in_flight(),
            inflight_bytes: self.inflight.bytes_in_flight(),
        };
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Bytes::from(self.metrics.render(gauges)))
            .unwrap_or_default()
    }

    /// The in-flight budget (its gauges for tests and metrics).
    pub fn inflight(&self) -> &InflightBudget {
        &self.inflight
    }

    /// Delivery counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn readiness(&self) -> Response<Bytes> {
        // Metadata is re-read every refresh interval; two missed reads mean Kafka is gone.
        let window = (self.config.kafka.metadata_refresh * 2).max(Duration::from_secs(10));
        if self.kafka.reached_within(window) {
            plain(StatusCode::OK, "ready")
        } else {
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka not reached recently",
            )
        }
    }

    /// Runs an admitted delivery through the pipeline and answers it; `permit` (its share of
    /// the in-flight budget) is released with the answer.
    pub async fn deliver(
        &self,
        head: Parts,
        body: Bytes,
        permit: InflightPermit,
    ) -> Response<Bytes> {
        let request = Request::from_parts(head, body);
        let mut context = DeliveryContext {
            message_id: None,
            permit: Some(permit),
        };
        let response = self.run_pipeline(&request, &mut context).await;
        self.metrics.record(response.status().as_u16());
        response
    }

    async fn run_pipeline(
        &self,
        request: &Request<Bytes>,
        context: &mut DeliveryContext,
    ) -> Response<Bytes> {
        let mut abandon = self.abandon.subscribe();
        let outcome = tokio::select! {
            outcome = self.try_deliver(request, context) => outcome,
            _ = abandon.wait_for(|abandoned| *abandoned) => Err(DeliveryError::ShuttingDown),
        };
        match outcome {
            Ok(ack) => {
                tracing::debug!(
                    message_id = context.message_id.as_deref(),
                    partition = ack.partition,
                    offset = ack.offset,
                    "delivered"
                );
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Bytes::new())
                    .unwrap_or_default()
            }
            Err(error) if error.is_dead_letter() && self.config.kafka.dlq_topic.is_some() => {
                let permit = context.permit.take();
                self.dead_letter(request, error, context, permit).await
            }
            Err(error) => self.fail(error, context, request.headers()),
        }
    }

    /// Verify, parse, map, encode, produce: the whole pipeline of one delivery.
    async fn try_deliver(
        &self,
        request: &Request<Bytes>,
        context: &mut DeliveryContext,
    ) -> Result<Ack, DeliveryError> {
        let body = request.body();
        if body.len() > self.config.max_body_bytes {
            return Err(DeliveryError::BodyTooLarge {
                limit: self.config.max_body_bytes,
            });
        }
        let message: PubsubMessage = envelope::parse_push(
            request.headers(),
            body,
            self.config.push_payload,
            chrono::Utc::now(),
        )
        .inspect_err(|_| context.message_id = envelope::message_id_hint(body))?;
        context.message_id = Some(message.message_id.clone()).filter(|id| !id.is_empty());
        let topic = self.config.route.topic_for(&message.subscription)?;
        let schema_id = match &self.registry {
            Some(registry) => Some(registry.schema_id(topic).await?),
            None => None,
        };
        let (record, fallback): (KafkaRecord, _) =
            record::build_record(message, &self.config.record, |m| {
                self.encoder.encode_framed(m, schema_id)
            })?;
        if let Some(fallback) = fallback {
            tracing::warn!(message_id = context.message_id.as_deref(), reason = %fallback, "event time unusable; using publishTime");
        }
        let permit = context.permit.take();
        Ok(self.kafka.produce_holding(topic, record, permit).await?)
    }

    /// Writes an undeliverable request to the dead-letter topic; 204 once Kafka has it.
    async fn dead_letter(
        &self,
        request: &Request<Bytes>,
        error: DeliveryError,
        context: &DeliveryContext,
        permit: Option<InflightPermit>,
    ) -> Response<Bytes> {
        let Some(topic) = &self.config.kafka.dlq_topic else {
            return self.fail(error, context, request.headers());
        };
        let mut headers = std::collections::BTreeMap::new();
        headers.insert(HEADER_ERROR.to_owned(), error.code().as_bytes().to_vec());
        headers.insert(
            HEADER_ERROR_MESSAGE.to_owned(),
            error.to_string().into_bytes(),
        );
        if let Some(id) = &context.message_id {
            headers.insert(record::HEADER_MESSAGE_ID.to_owned(), id.as_bytes().to_vec());
        }
        let record = KafkaRecord {
            key: context.message_id.as_ref().map(|id| id.as_bytes().to_vec()),
            value: request.body().to_vec(),
            headers,
            timestamp_ms: unix_now_ms(),
        };
        match self.kafka.produce_holding(topic, record, permit).await {
            Ok(ack) => {
                tracing::warn!(
                    message_id = context.message_id.as_deref(),
                    reason = %error,
                    code = error.code(),
                    dlq_topic = %topic,
                    partition = ack.partition,
                    offset = ack.offset,
                    trace = self.trace(request.headers()).as_deref(),
                    "delivery dead-lettered"
                );
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Bytes::new())
                    .unwrap_or_default()
            }
            // A dead letter Kafka refuses for good: answer the original failure, so Pub/Sub keeps
            // the message (and its own dead-letter policy takes it) instead of losing it.
            Err(dlq_error) if !dlq_error.is_retriable() => {
                tracing::warn!(dlq_error = %dlq_error, "dead letter refused by Kafka");
                self.fail(error, context, request.headers())
            }
            Err(dlq_error) => {
                tracing::warn!(original = %error, "dead-letter produce failed");
                self.fail(DeliveryError::Kafka(dlq_error), context, request.headers())
            }
        }
    }

    /// Logs the one line a failed delivery gets and builds its response.
    fn fail(
        &self,
        error: DeliveryError,
        context: &DeliveryContext,
        headers: &HeaderMap,
    ) -> Response<Bytes> {
        let status = error.status().as_u16();
        let trace = self.trace(headers);
        let message_id = context.message_id.as_deref();
        if error.level() == tracing::Level::ERROR {
            tracing::error!(message_id, status, code = error.code(), reason = %error, trace = trace.as_deref(), "delivery failed");
        } else {
            tracing::warn!(message_id, status, code = error.code(), reason = %error, trace = trace.as_deref(), "delivery failed");
        }
        error.to_response()
    }

    /// Cloud Logging trace name from `X-Cloud-Trace-Context` or `traceparent`.
    fn trace(&self, headers: &HeaderMap) -> Option<String> {
        let id = trace_id(headers)?;
        Some(match &self.config.gcp_project {
            Some(project) => format!("projects/{project}/traces/{id}"),
            None => id.to_owned(),
        })
    }
}

/// The trace id of a request: `X-Cloud-Trace-Context: TRACE/SPAN;o=1` or W3C `traceparent`.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    let valid = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(value) = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
    {
        let id = value.split(['/', ';']).next().unwrap_or_default();
        if valid(id) {
            return Some(id);
        }
    }
    let value = headers.get("traceparent").and_then(|v| v.to_str().ok())?;
    let id = value.split('-').nth(1)?;
    valid(id).then_some(id)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Bytes::from_static(text.as_bytes()))
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
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
        let error = App::new(config).err().expect("startup refused").to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.starts_with("KAFKA_SSL_CA_LOCATION ("), "{error}");
    }

    #[test]
    fn trace_id_comes_from_either_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1".parse().unwrap(),
        );
        assert_eq!(trace_id(&headers), Some("105445aa7843bc8bf206b12000100000"));
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(trace_id(&headers), Some("0af7651916cd43dd8448eb211c80319c"));
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(trace_id(&headers), None);
    }
}
