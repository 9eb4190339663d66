//! Typed configuration, read once from the environment and validated before anything starts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::encode::ValueFormat;
use crate::envelope::PushPayload;
use crate::limits::{HttpLimits, InflightLimits};
use crate::record::{AttributeHeaders, KeySource, RecordOptions, TopicRoute};

/// Default Google JWKS endpoint for push tokens.
pub const DEFAULT_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Issuers Google puts in push tokens.
pub const DEFAULT_ISSUERS: &str = "https://accounts.google.com,accounts.google.com";

/// A setting that is missing or cannot be used; always names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is absent or empty.
    #[error("{var} is required ({hint})")]
    Missing {
        /// The variable's name.
        var: &'static str,
        /// What the variable is for.
        hint: &'static str,
    },
    /// A variable holds a value the bridge cannot use.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// The value as given (never a secret: secrets are not validated by content).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More than one setting is wrong: each on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<Self>),
}

impl ConfigError {
    /// One error as itself, more as [`ConfigError::Several`].
    fn from_many(mut errors: Vec<Self>) -> Self {
        match errors.len() {
            1 => errors.remove(0),
            _ => Self::Several(errors),
        }
    }

    /// The variable named (the first one, when several are wrong).
    pub fn var(&self) -> &'static str {
        match self {
            Self::Missing { var, .. } | Self::Invalid { var, .. } => var,
            Self::Several(errors) => errors.first().map_or("", Self::var),
        }
    }

    /// Every single error, in the order the settings are read.
    pub fn each(&self) -> Vec<&Self> {
        match self {
            Self::Several(errors) => errors.iter().collect(),
            one => vec![one],
        }
    }
}

/// Kafka compression codec for produce requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionCodec {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

impl std::str::FromStr for CompressionCodec {
    type Err = &'static str;

    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`, in any case.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "snappy" => Ok(Self::Snappy),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            _ => Err("expected none, gzip, snappy, lz4 or zstd"),
        }
    }
}

/// How the bridge talks to the brokers (`KAFKA_SECURITY_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// Plain TCP.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether the connection is wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    /// Whether SASL authentication runs on the connection.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = &'static str;

    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`, in any case.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            _ => Err("expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
        }
    }
}

/// SASL mechanism and its credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    Plain {
        /// User name.
        username: String,
        /// Password (never logged).
        password: String,
    },
    /// SCRAM-SHA-256.
    ScramSha256 {
        /// User name.
        username: String,
        /// Password (never logged).
        password: String,
    },
    /// SCRAM-SHA-512.
    ScramSha512 {
        /// User name.
        username: String,
        /// Password (never logged).
        password: String,
    },
    /// OAUTHBEARER with a Google access token from the metadata server.
    OauthBearer,
}

impl std::fmt::Debug for SaslMechanism {
    /// Only the mechanism name: credentials must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain { .. } => "PLAIN",
            Self::ScramSha256 { .. } => "SCRAM-SHA-256",
            Self::ScramSha512 { .. } => "SCRAM-SHA-512",
            Self::OauthBearer => "OAUTHBEARER",
        })
    }
}

/// Connection security settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// `KAFKA_SECURITY_PROTOCOL`.
    pub protocol: SecurityProtocol,
    /// `KAFKA_SASL_MECHANISM` with `KAFKA_SASL_USERNAME`/`KAFKA_SASL_PASSWORD`.
    pub sasl: Option<SaslMechanism>,
    /// `KAFKA_SSL_CA_LOCATION`: PEM CA bundle; system roots when unset.
    pub ca_location: Option<PathBuf>,
    /// `KAFKA_SSL_CERTIFICATE_LOCATION`: client certificate chain (PEM) for mTLS.
    pub client_cert_location: Option<PathBuf>,
    /// `KAFKA_SSL_KEY_LOCATION`: client private key (PEM) for mTLS.
    pub client_key_location: Option<PathBuf>,
    /// `GCE_METADATA_HOST`: metadata server for OAUTHBEARER tokens.
    pub metadata_host: String,
    /// `KAFKA_SASL_PASSWORD_SECRET`: Secret Manager version holding the SASL password, read
    /// at connect time (`projects/P/secrets/S/versions/V`); `SECRET_MANAGER_ENDPOINT` with it.
    pub password_secret: Option<(String, String)>,
    /// `KAFKA_OAUTHBEARER_PRINCIPAL`: the service account email put in OAUTHBEARER tokens
    /// instead of the one the metadata server names.
    pub oauthbearer_principal: Option<String>,
}

impl KafkaSecurity {
    /// The protocol and SASL mechanism, as an operator names them (never a credential).
    pub fn describe(&self) -> String {
        let protocol = match self.protocol {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        };
        match &self.sasl {
            None => protocol.to_owned(),
            Some(SaslMechanism::Plain { .. }) => format!("{protocol}, PLAIN"),
            Some(SaslMechanism::ScramSha256 { .. }) => format!("{protocol}, SCRAM-SHA-256"),
            Some(SaslMechanism::ScramSha512 { .. }) => format!("{protocol}, SCRAM-SHA-512"),
            Some(SaslMechanism::OauthBearer) => format!("{protocol}, OAUTHBEARER"),
        }
    }

    /// Puts `password` into the SASL credentials (a password read from Secret Manager).
    pub fn set_password(&mut self, new: String) {
        if let Some(
            SaslMechanism::Plain { password, .. }
            | SaslMechanism::ScramSha256 { password, .. }
            | SaslMechanism::ScramSha512 { password, .. },
        ) = &mut self.sasl
        {
            *password = new;
        }
    }
}

/// Everything about the Kafka side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `KAFKA_BOOTSTRAP_SERVERS`, split on commas.
    pub bootstrap_servers: Vec<String>,
    /// Topics opened at startup (every routed topic and the DLQ topic).
    pub preload_topics: Vec<String>,
    /// `KAFKA_DLQ_TOPIC`.
    pub dlq_topic: Option<String>,
    /// `KAFKA_COMPRESSION`.
    pub compression: CompressionCodec,
    /// `KAFKA_LINGER_MS`.
    pub linger: Duration,
    /// `KAFKA_PRODUCE_TIMEOUT_MS`.
    pub produce_timeout: Duration,
    /// `KAFKA_REQUEST_TIMEOUT_MS`: how long one Kafka request (or a connection attempt) may
    /// wait for its answer before its connection is closed and replaced.
    pub request_timeout: Duration,
    /// `KAFKA_MAX_BATCH_BYTES`: cap of one produce request's records per partition.
    pub max_batch_bytes: usize,
    /// `KAFKA_MAX_RECORD_BYTES`: records larger than this are refused before sending, like the
    /// Java producer's `max.request.size`; `None` leaves the decision to the broker.
    pub max_record_bytes: Option<usize>,
    /// `KAFKA_METADATA_REFRESH_MS`: how often partition counts are re-read.
    pub metadata_refresh: Duration,
    /// `KAFKA_CLIENT_ID`.
    pub client_id: String,
    /// TLS and SASL.
    pub security: KafkaSecurity,
}

/// OIDC push-token verification settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// `OIDC_AUDIENCE`.
    pub audience: String,
    /// `OIDC_ALLOWED_EMAILS`; `None` only with `OIDC_ALLOW_ANY_EMAIL=true`: any valid token.
    pub allowed_emails: Option<Vec<String>>,
    /// `OIDC_TRUST_CLOUD_RUN_IAM`: accept tokens whose signature Cloud Run removed after
    /// verifying it (claims are still checked).
    pub trust_cloud_run_iam: bool,
    /// `OIDC_JWKS_URL`.
    pub jwks_url: http::Uri,
    /// `OIDC_ISSUERS`.
    pub issuers: Vec<String>,
    /// `OIDC_LEEWAY_SECONDS`: clock skew tolerated on `exp`/`nbf`/`iat`.
    pub leeway_seconds: u64,
    /// `OIDC_JWKS_CA_LOCATION`: PEM CA bundle for a private JWKS endpoint (bundled roots otherwise).
    pub jwks_ca_location: Option<PathBuf>,
}

/// Confluent Schema Registry settings (Avro values only).
#[derive(Clone, PartialEq, Eq)]
pub struct SchemaRegistryConfig {
    /// Base URL.
    pub url: String,
    /// Basic-auth user and password (Confluent Cloud: API key and secret).
    pub credentials: Option<(String, String)>,
}

impl SchemaRegistryConfig {
    /// The basic-auth `Authorization` value, when credentials are set.
    pub fn authorization(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|(user, password)| crate::registry::basic_authorization(user, password))
    }
}

impl std::fmt::Debug for SchemaRegistryConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// Whether push tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// Verify every delivery's token.
    Oidc(OidcConfig),
    /// `OIDC_DISABLED=true`: accept deliveries without a token.
    Disabled,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// Cloud Logging structured JSON lines.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = &'static str;

    /// `json` or `text`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            _ => Err("expected json or text"),
        }
    }
}

/// A whole-number setting: its variable, default and accepted range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number {
    /// The environment variable.
    pub var: &'static str,
    /// The value when unset.
    pub default: u64,
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
}

/// Every whole-number setting with a fixed default, in one place (`numbers::ALL` for checks).
pub mod numbers {
    use super::Number;

    /// `KAFKA_LINGER_MS`.
    pub const KAFKA_LINGER_MS: Number = Number {
        var: "KAFKA_LINGER_MS",
        default: 0,
        min: 0,
        max: 10_000,
    };
    /// `KAFKA_PRODUCE_TIMEOUT_MS`.
    pub const KAFKA_PRODUCE_TIMEOUT_MS: Number = Number {
        var: "KAFKA_PRODUCE_TIMEOUT_MS",
        default: 10_000,
        min: 100,
        max: 600_000,
    };
    /// `KAFKA_REQUEST_TIMEOUT_MS`. Half the produce timeout: a connection that went silent is
    /// given up and replaced while the delivery that found it still has time to succeed on
    /// the new one, as Java's `delivery.timeout.ms` (120 s) leaves room for retries after a
    /// `request.timeout.ms` (30 s).
    pub const KAFKA_REQUEST_TIMEOUT_MS: Number = Number {
        var: "KAFKA_REQUEST_TIMEOUT_MS",
        default: 5_000,
        min: 100,
        max: 600_000,
    };
    /// `KAFKA_MAX_BATCH_BYTES`.
    pub const KAFKA_MAX_BATCH_BYTES: Number = Number {
        var: "KAFKA_MAX_BATCH_BYTES",
        default: 1 << 20,
        min: 1024,
        max: 1 << 30,
    };
    /// `KAFKA_MAX_RECORD_BYTES`.
    pub const KAFKA_MAX_RECORD_BYTES: Number = Number {
        var: "KAFKA_MAX_RECORD_BYTES",
        default: 0,
        min: 0,
        max: 1 << 31,
    };
    /// `KAFKA_METADATA_REFRESH_MS`.
    pub const KAFKA_METADATA_REFRESH_MS: Number = Number {
        var: "KAFKA_METADATA_REFRESH_MS",
        default: 30_000,
        min: 100,
        max: 86_400_000,
    };
    /// `MAX_BODY_BYTES`.
    pub const MAX_BODY_BYTES: Number = Number {
        var: "MAX_BODY_BYTES",
        default: 16 << 20,
        min: 1024,
        max: 1 << 30,
    };
    /// `PORT`.
    pub const PORT: Number = Number {
        var: "PORT",
        default: 8080,
        min: 0,
        max: 65_535,
    };
    /// `HTTP_HEADER_READ_TIMEOUT_MS`.
    pub const HTTP_HEADER_READ_TIMEOUT_MS: Number = Number {
        var: "HTTP_HEADER_READ_TIMEOUT_MS",
        default: 10_000,
        min: 100,
        max: 600_000,
    };
    /// `SHUTDOWN_TIMEOUT_MS`.
    pub const SHUTDOWN_TIMEOUT_MS: Number = Number {
        var: "SHUTDOWN_TIMEOUT_MS",
        default: 8_000,
        min: 0,
        max: 3_600_000,
    };
    /// `MAX_CONNECTIONS`.
    pub const MAX_CONNECTIONS: Number = Number {
        var: "MAX_CONNECTIONS",
        default: 1024,
        min: 1,
        max: 1 << 20,
    };
    /// `HTTP_BODY_IDLE_TIMEOUT_MS`.
    pub const HTTP_BODY_IDLE_TIMEOUT_MS: Number = Number {
        var: "HTTP_BODY_IDLE_TIMEOUT_MS",
        default: 10_000,
        min: 100,
        max: 600_000,
    };
    /// `HTTP_BODY_TIMEOUT_MS`.
    pub const HTTP_BODY_TIMEOUT_MS: Number = Number {
        var: "HTTP_BODY_TIMEOUT_MS",
        default: 60_000,
        min: 100,
        max: 3_600_000,
    };
    /// `HTTP_IDLE_TIMEOUT_MS`.
    pub const HTTP_IDLE_TIMEOUT_MS: Number = Number {
        var: "HTTP_IDLE_TIMEOUT_MS",
        default: 120_000,
        min: 100,
        max: 3_600_000,
    };
    /// `HTTP2_MAX_CONCURRENT_STREAMS`.
    pub const HTTP2_MAX_CONCURRENT_STREAMS: Number = Number {
        var: "HTTP2_MAX_CONCURRENT_STREAMS",
        default: 64,
        min: 1,
        max: 10_000,
    };
    /// `MAX_INFLIGHT_REQUESTS`.
    pub const MAX_INFLIGHT_REQUESTS: Number = Number {
        var: "MAX_INFLIGHT_REQUESTS",
        default: 1000,
        min: 1,
        max: 1 << 20,
    };
    /// `OIDC_LEEWAY_SECONDS`.
    pub const OIDC_LEEWAY_SECONDS: Number = Number {
        var: "OIDC_LEEWAY_SECONDS",
        default: 30,
        min: 0,
        max: 600,
    };

    /// All of them.
    pub const ALL: &[Number] = &[
        KAFKA_LINGER_MS,
        KAFKA_PRODUCE_TIMEOUT_MS,
        KAFKA_REQUEST_TIMEOUT_MS,
        KAFKA_MAX_BATCH_BYTES,
        KAFKA_MAX_RECORD_BYTES,
        KAFKA_METADATA_REFRESH_MS,
        MAX_BODY_BYTES,
        PORT,
        HTTP_HEADER_READ_TIMEOUT_MS,
        SHUTDOWN_TIMEOUT_MS,
        MAX_CONNECTIONS,
        HTTP_BODY_IDLE_TIMEOUT_MS,
        HTTP_BODY_TIMEOUT_MS,
        HTTP_IDLE_TIMEOUT_MS,
        HTTP2_MAX_CONCURRENT_STREAMS,
        MAX_INFLIGHT_REQUESTS,
        OIDC_LEEWAY_SECONDS,
    ];
}

/// Binds each named `Result` to its value, or returns every error among them at once.
macro_rules! all_or_errors {
    ($($name:ident),* $(,)?) => {
        let mut errors = Vec::new();
        $(
            let $name = match $name {
                Ok(value) => Some(value),
                Err(error) => {
                    errors.push(error);
                    None
                }
            };
        )*
        $(
            let Some($name) = $name else {
                return Err(ConfigError::from_many(errors));
            };
        )*
    };
}
/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `PORT`.
    pub port: u16,
    /// `MAX_BODY_BYTES`: larger requests are answered 413.
    pub max_body_bytes: usize,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`: slow clients are cut off after this.
    pub header_read_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: how long in-flight deliveries may finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Kafka side.
    pub kafka: KafkaConfig,
    /// `KAFKA_TOPIC` or `KAFKA_TOPIC_BY_SUBSCRIPTION`.
    pub route: TopicRoute,
    /// `PUSH_PAYLOAD`.
    pub push_payload: PushPayload,
    /// Key, headers and timestamp settings.
    pub record: RecordOptions,
    /// `KAFKA_VALUE_FORMAT` (with `KAFKA_JSON_EMBED_DATA`).
    pub value_format: ValueFormat,
    /// Token verification.
    pub auth: AuthConfig,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`: the log filter (`None`: the default filter).
    pub log_filter: Option<String>,
    /// `SCHEMA_REGISTRY_URL` with optional `SCHEMA_REGISTRY_USERNAME`/`SCHEMA_REGISTRY_PASSWORD`.
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// `GOOGLE_CLOUD_PROJECT`: used to build Cloud Logging trace names.
    pub gcp_project: Option<String>,
    /// Connection, time, body and in-flight limits of the HTTP server.
    pub limits: HttpLimits,
}

impl Config {
    /// Reads settings from a map (tests and embedders).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_lookup_in_container(lookup, None)
    }

    /// Reads settings through `lookup` for a container with `memory_limit` bytes (from which
    /// the in-flight budget's default is derived).
    pub fn from_lookup_in_container(
        lookup: impl Fn(&str) -> Option<String>,
        memory_limit: Option<u64>,
    ) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        // Every setting is parsed on its own, so one run reports every bad setting at once.
        let route = parse_route(&env);
        let dlq_topic = env.get("KAFKA_DLQ_TOPIC");
        let bootstrap_servers = env
            .required(
                "KAFKA_BOOTSTRAP_SERVERS",
                "comma-separated host:port list of Kafka brokers",
            )
            .and_then(|raw| parse_bootstrap(&raw));
        let compression = env.parse_or("KAFKA_COMPRESSION", CompressionCodec::None);
        // 0 measured best (infra/bench.sh, 64 concurrent pushes): records still share produce
        // requests, because those arriving while one is in flight wait for the next.
        let linger = env.millis(&numbers::KAFKA_LINGER_MS);
        let produce_timeout = env.millis(&numbers::KAFKA_PRODUCE_TIMEOUT_MS);
        let request_timeout = env.millis(&numbers::KAFKA_REQUEST_TIMEOUT_MS);
        let max_batch_bytes = env.number(&numbers::KAFKA_MAX_BATCH_BYTES);
        let max_record_bytes = env.number(&numbers::KAFKA_MAX_RECORD_BYTES);
        let metadata_refresh = env.millis(&numbers::KAFKA_METADATA_REFRESH_MS);
        let security = parse_security(&env);
        let auth = parse_auth(&env);
        let on_cloud_run = env.get("K_SERVICE").is_some();
        let log_format = env.parse_or(
            "LOG_FORMAT",
            if on_cloud_run {
                LogFormat::Json
            } else {
                LogFormat::Text
            },
        );
        let max_body_bytes = env.number(&numbers::MAX_BODY_BYTES);
        let limits = match &max_body_bytes {
            Ok(max_body_bytes) => parse_http_limits(&env, *max_body_bytes as usize, memory_limit),
            // Reported once, as MAX_BODY_BYTES.
            Err(_) => parse_http_limits(&env, 0, memory_limit),
        };
        let attribute_prefix = env.get("KAFKA_ATTRIBUTE_HEADER_PREFIX").unwrap_or_default();
        let attribute_prefix = if crate::record::is_reserved_header(&attribute_prefix) {
            Err(invalid(
                "KAFKA_ATTRIBUTE_HEADER_PREFIX",
                &attribute_prefix,
                "the pubsub. header namespace is reserved for the bridge's own headers",
            ))
        } else {
            Ok(attribute_prefix)
        };
        let port = env.number(&numbers::PORT);
        let header_read_timeout = env.millis(&numbers::HTTP_HEADER_READ_TIMEOUT_MS);
        let shutdown_timeout = env.millis(&numbers::SHUTDOWN_TIMEOUT_MS);
        let push_payload = env.parse_or("PUSH_PAYLOAD", PushPayload::Auto);
        let key_source = env.parse_or("KAFKA_KEY", KeySource::OrderingKey);
        let attribute_headers = env.parse_or("KAFKA_ATTRIBUTE_HEADERS", AttributeHeaders::All);
        let metadata_headers = env.bool_or("KAFKA_METADATA_HEADERS", true);
        let value_format = env
            .parse_or("KAFKA_VALUE_FORMAT", ValueFormat::Raw)
            .and_then(|format| with_json_embedding(format, env.bool("KAFKA_JSON_EMBED_DATA")?));
        let schema_registry =
            parse_schema_registry(&env, matches!(value_format, Ok(ValueFormat::Avro)));
        all_or_errors!(
            route,
            bootstrap_servers,
            compression,
            linger,
            produce_timeout,
            request_timeout,
            max_batch_bytes,
            max_record_bytes,
            metadata_refresh,
            security,
            auth,
            log_format,
            max_body_bytes,
            limits,
            attribute_prefix,
            port,
            header_read_timeout,
            shutdown_timeout,
            push_payload,
            key_source,
            attribute_headers,
            metadata_headers,
            value_format,
            schema_registry
        );
        let mut preload_topics = route.topics();
        preload_topics.extend(dlq_topic.clone());
        Ok(Self {
            port: port as u16,
            max_body_bytes: max_body_bytes as usize,
            limits,
            header_read_timeout,
            shutdown_timeout,
            route,
            push_payload,
            record: RecordOptions {
                key_source,
                attribute_headers,
                attribute_prefix,
                metadata_headers,
                timestamp_attribute: env.get("KAFKA_TIMESTAMP_ATTRIBUTE"),
            },
            value_format,
            kafka: KafkaConfig {
                bootstrap_servers,
                preload_topics,
                dlq_topic,
                compression,
                linger,
                produce_timeout,
                request_timeout,
                max_batch_bytes: max_batch_bytes as usize,
                max_record_bytes: match max_record_bytes {
                    0 => None,
                    n => Some(n as usize),
                },
                metadata_refresh,
                client_id: env
                    .get("KAFKA_CLIENT_ID")
                    .unwrap_or_else(|| "pubsub-kafka-bridge".to_owned()),
                security,
            },
            auth,
            log_format,
            log_filter: env.get("RUST_LOG"),
            schema_registry,
            gcp_project: env
                .get("GOOGLE_CLOUD_PROJECT")
                .or_else(|| env.get("GCP_PROJECT")),
        })
    }
}

/// The server's limits; the in-flight byte budget defaults from the container's memory.
fn parse_http_limits(
    env: &Env<'_>,
    max_body_bytes: usize,
    memory_limit: Option<u64>,
) -> Result<HttpLimits, ConfigError> {
    let max_bytes = env.number_in(
        "MAX_INFLIGHT_BYTES",
        InflightLimits::default_bytes(memory_limit, max_body_bytes),
        1024,
        1 << 40,
    )?;
    if max_bytes < max_body_bytes as u64 {
        return Err(invalid(
            "MAX_INFLIGHT_BYTES",
            &max_bytes.to_string(),
            &format!(
                "below MAX_BODY_BYTES ({max_body_bytes}): the largest delivery could never pass"
            ),
        ));
    }
    Ok(HttpLimits {
        max_connections: env.number(&numbers::MAX_CONNECTIONS)? as usize,
        body_idle_timeout: env.millis(&numbers::HTTP_BODY_IDLE_TIMEOUT_MS)?,
        body_timeout: env.millis(&numbers::HTTP_BODY_TIMEOUT_MS)?,
        idle_timeout: env.millis(&numbers::HTTP_IDLE_TIMEOUT_MS)?,
        h2_max_streams: env.number(&numbers::HTTP2_MAX_CONCURRENT_STREAMS)? as u32,
        inflight: InflightLimits {
            max_bytes,
            max_requests: env.number(&numbers::MAX_INFLIGHT_REQUESTS)? as u32,
        },
    })
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, var: &'static str, hint: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing { var, hint })
    }

    fn number(&self, setting: &Number) -> Result<u64, ConfigError> {
        self.number_in(setting.var, setting.default, setting.min, setting.max)
    }

    fn number_in(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        let value: u64 = raw
            .parse()
            .map_err(|_| invalid(var, &raw, "expected a whole number"))?;
        if !(min..=max).contains(&value) {
            return Err(invalid(var, &raw, &format!("expected {min}..={max}")));
        }
        Ok(value)
    }

    /// A value of a type with its own parser (`FromStr`, next to the type); `default` when unset.
    fn parse_or<T: std::str::FromStr<Err = &'static str>>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|reason| invalid(var, &raw, reason)),
        }
    }

    /// A duration in milliseconds (`*_MS`).
    fn millis(&self, setting: &Number) -> Result<Duration, ConfigError> {
        self.number(setting).map(Duration::from_millis)
    }

    /// A strict boolean, `false` when unset: anything but true/false (1/0, yes/no) is an
    /// error, so a typo never flips a setting silently.
    fn bool(&self, var: &'static str) -> Result<bool, ConfigError> {
        self.bool_or(var, false)
    }

    fn bool_or(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("false") | Some("0") | Some("no") => Ok(false),
            Some("true") | Some("1") | Some("yes") => Ok(true),
            Some(other) => Err(invalid(var, other, "expected true or false")),
        }
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Keys and secrets come over https; plain http only on loopback (tests, local stand-ins).
fn require_https(var: &'static str, url: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = url.parse().map_err(|_| invalid(var, url, "not a URL"))?;
    let loopback = matches!(
        uri.host(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(invalid(var, url, "must be https (http only on loopback)")),
    }
}

fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_bootstrap(raw: &str) -> Result<Vec<String>, ConfigError> {
    let servers = split_list(raw);
    for server in &servers {
        let valid_port = server
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid_port {
            return Err(invalid(
                "KAFKA_BOOTSTRAP_SERVERS",
                raw,
                &format!("{server:?} is not host:port"),
            ));
        }
    }
    if servers.is_empty() {
        return Err(invalid(
            "KAFKA_BOOTSTRAP_SERVERS",
            raw,
            "no host:port given",
        ));
    }
    Ok(servers)
}

fn parse_schema_registry(
    env: &Env<'_>,
    avro: bool,
) -> Result<Option<SchemaRegistryConfig>, ConfigError> {
    let Some(url) = env.get("SCHEMA_REGISTRY_URL") else {
        return Ok(None);
    };
    if !avro {
        return Err(invalid(
            "SCHEMA_REGISTRY_URL",
            &url,
            "applies only with KAFKA_VALUE_FORMAT=avro",
        ));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid(
            "SCHEMA_REGISTRY_URL",
            &url,
            "expected an http(s) URL",
        ));
    }
    let credentials = match (
        env.get("SCHEMA_REGISTRY_USERNAME"),
        env.get("SCHEMA_REGISTRY_PASSWORD"),
    ) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                var: "SCHEMA_REGISTRY_PASSWORD",
                hint: "given together with SCHEMA_REGISTRY_USERNAME",
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                var: "SCHEMA_REGISTRY_USERNAME",
                hint: "given together with SCHEMA_REGISTRY_PASSWORD",
            });
        }
    };
    Ok(Some(SchemaRegistryConfig { url, credentials }))
}

fn parse_route(env: &Env<'_>) -> Result<TopicRoute, ConfigError> {
    match (
        env.get("KAFKA_TOPIC"),
        env.get("KAFKA_TOPIC_BY_SUBSCRIPTION"),
    ) {
        (Some(topic), None) => Ok(TopicRoute::Single(topic)),
        (None, None) => Err(ConfigError::Missing {
            var: "KAFKA_TOPIC",
            hint: "the Kafka topic records go to (or KAFKA_TOPIC_BY_SUBSCRIPTION)",
        }),
        (Some(_), Some(map)) => Err(invalid(
            "KAFKA_TOPIC_BY_SUBSCRIPTION",
            &map,
            "set either KAFKA_TOPIC or KAFKA_TOPIC_BY_SUBSCRIPTION (use *=TOPIC for a default)",
        )),
        (None, Some(raw)) => {
            let mut map = std::collections::BTreeMap::new();
            for entry in split_list(&raw) {
                match entry.split_once('=').map(|(s, t)| (s.trim(), t.trim())) {
                    Some((subscription, topic))
                        if !subscription.is_empty() && !topic.is_empty() =>
                    {
                        map.insert(subscription.to_owned(), topic.to_owned());
                    }
                    _ => {
                        return Err(invalid(
                            "KAFKA_TOPIC_BY_SUBSCRIPTION",
                            &raw,
                            &format!("{entry:?} is not SUBSCRIPTION=TOPIC"),
                        ));
                    }
                }
            }
            if map.is_empty() {
                return Err(invalid(
                    "KAFKA_TOPIC_BY_SUBSCRIPTION",
                    &raw,
                    "no SUBSCRIPTION=TOPIC entry",
                ));
            }
            Ok(TopicRoute::BySubscription(map))
        }
    }
}

/// `KAFKA_JSON_EMBED_DATA` applied to the value format it belongs to.
fn with_json_embedding(format: ValueFormat, embed: bool) -> Result<ValueFormat, ConfigError> {
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

fn parse_security(env: &Env<'_>) -> Result<KafkaSecurity, ConfigError> {
    let protocol = env.parse_or("KAFKA_SECURITY_PROTOCOL", SecurityProtocol::Plaintext)?;
    let mechanism = env
        .get("KAFKA_SASL_MECHANISM")
        .map(|v| v.to_ascii_uppercase());
    let password_secret = match env.get("KAFKA_SASL_PASSWORD_SECRET") {
        None => None,
        Some(raw) => {
            let name = crate::kafka::secret::version_name(&raw)
                .map_err(|reason| invalid("KAFKA_SASL_PASSWORD_SECRET", &raw, reason))?;
            if env.get("KAFKA_SASL_PASSWORD").is_some() {
                return Err(invalid(
                    "KAFKA_SASL_PASSWORD_SECRET",
                    &raw,
                    "set either KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_SECRET, not both",
                ));
            }
            let endpoint = env
                .get("SECRET_MANAGER_ENDPOINT")
                .unwrap_or_else(|| crate::kafka::secret::DEFAULT_ENDPOINT.to_owned());
            require_https("SECRET_MANAGER_ENDPOINT", &endpoint)?;
            Some((endpoint, name))
        }
    };
    let credentials = || -> Result<(String, String), ConfigError> {
        let username = env.required(
            "KAFKA_SASL_USERNAME",
            "SASL user name for the chosen mechanism",
        )?;
        // With KAFKA_SASL_PASSWORD_SECRET the password is read at connect time.
        let password = match &password_secret {
            Some(_) => String::new(),
            None => env.required(
                "KAFKA_SASL_PASSWORD",
                "SASL password for the chosen mechanism (or KAFKA_SASL_PASSWORD_SECRET)",
            )?,
        };
        Ok((username, password))
    };
    let sasl = match (protocol.uses_sasl(), mechanism.as_deref()) {
        (false, None) => None,
        (false, Some(m)) => {
            return Err(invalid(
                "KAFKA_SASL_MECHANISM",
                m,
                "set KAFKA_SECURITY_PROTOCOL to SASL_SSL or SASL_PLAINTEXT to use SASL",
            ));
        }
        (true, None) => {
            return Err(ConfigError::Missing {
                var: "KAFKA_SASL_MECHANISM",
                hint: "required with a SASL_* security protocol",
            });
        }
        (true, Some("PLAIN")) => {
            let (username, password) = credentials()?;
            Some(SaslMechanism::Plain { username, password })
        }
        (true, Some("SCRAM-SHA-256")) => {
            let (username, password) = credentials()?;
            Some(SaslMechanism::ScramSha256 { username, password })
        }
        (true, Some("SCRAM-SHA-512")) => {
            let (username, password) = credentials()?;
            Some(SaslMechanism::ScramSha512 { username, password })
        }
        (true, Some("OAUTHBEARER")) => Some(SaslMechanism::OauthBearer),
        (true, Some(other)) => {
            return Err(invalid(
                "KAFKA_SASL_MECHANISM",
                other,
                "expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
            ));
        }
    };
    let path = |var: &'static str| -> Result<Option<PathBuf>, ConfigError> {
        match env.get(var) {
            None => Ok(None),
            Some(p) if std::path::Path::new(&p).is_file() => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(invalid(var, &p, "no such file")),
        }
    };
    let security = KafkaSecurity {
        protocol,
        sasl,
        ca_location: path("KAFKA_SSL_CA_LOCATION")?,
        client_cert_location: path("KAFKA_SSL_CERTIFICATE_LOCATION")?,
        client_key_location: path("KAFKA_SSL_KEY_LOCATION")?,
        oauthbearer_principal: env.get("KAFKA_OAUTHBEARER_PRINCIPAL"),
        password_secret: password_secret.clone(),
        metadata_host: env
            .get("GCE_METADATA_HOST")
            .unwrap_or_else(|| "metadata.google.internal".to_owned()),
    };
    if let Some((_, name)) = &security.password_secret
        && !matches!(
            security.sasl,
            Some(
                SaslMechanism::Plain { .. }
                    | SaslMechanism::ScramSha256 { .. }
                    | SaslMechanism::ScramSha512 { .. }
            )
        )
    {
        return Err(invalid(
            "KAFKA_SASL_PASSWORD_SECRET",
            name,
            "only used with KAFKA_SASL_MECHANISM PLAIN or SCRAM-*",
        ));
    }
    if let Some(principal) = &security.oauthbearer_principal
        && security.sasl != Some(SaslMechanism::OauthBearer)
    {
        return Err(invalid(
            "KAFKA_OAUTHBEARER_PRINCIPAL",
            principal,
            "only used with KAFKA_SASL_MECHANISM=OAUTHBEARER",
        ));
    }
    if security.client_cert_location.is_some() != security.client_key_location.is_some() {
        return Err(ConfigError::Missing {
            var: if security.client_cert_location.is_some() {
                "KAFKA_SSL_KEY_LOCATION"
            } else {
                "KAFKA_SSL_CERTIFICATE_LOCATION"
            },
            hint: "a client certificate and its key are given together",
        });
    }
    Ok(security)
}

fn parse_auth(env: &Env<'_>) -> Result<AuthConfig, ConfigError> {
    if env.bool("OIDC_DISABLED")? {
        // Verification settings next to OIDC_DISABLED=true would be silently ignored: the
        // operator meant one or the other.
        for var in [
            "OIDC_AUDIENCE",
            "OIDC_ALLOWED_EMAILS",
            "OIDC_ALLOW_ANY_EMAIL",
            "OIDC_TRUST_CLOUD_RUN_IAM",
            "OIDC_JWKS_URL",
            "OIDC_ISSUERS",
        ] {
            if let Some(value) = env.get(var) {
                return Err(invalid(
                    var,
                    &value,
                    "contradicts OIDC_DISABLED=true (tokens are not verified); unset one of them",
                ));
            }
        }
        return Ok(AuthConfig::Disabled);
    }
    let audience = env.required(
        "OIDC_AUDIENCE",
        "the audience of the push subscription's OIDC token; or OIDC_DISABLED=true",
    )?;
    let jwks_url = env
        .get("OIDC_JWKS_URL")
        .unwrap_or_else(|| DEFAULT_JWKS_URL.to_owned());
    let jwks_url = require_https("OIDC_JWKS_URL", &jwks_url)?;
    let issuers = split_list(
        &env.get("OIDC_ISSUERS")
            .unwrap_or_else(|| DEFAULT_ISSUERS.to_owned()),
    );
    if issuers.is_empty() {
        return Err(invalid("OIDC_ISSUERS", "", "no issuer given"));
    }
    let allow_any_email = env.bool("OIDC_ALLOW_ANY_EMAIL")?;
    let allowed_emails = match (env.get("OIDC_ALLOWED_EMAILS"), allow_any_email) {
        (Some(list), false) => {
            let emails = split_list(&list);
            if emails.is_empty() {
                return Err(invalid("OIDC_ALLOWED_EMAILS", &list, "no email given"));
            }
            Some(emails)
        }
        (Some(list), true) => {
            return Err(invalid(
                "OIDC_ALLOWED_EMAILS",
                &list,
                "contradicts OIDC_ALLOW_ANY_EMAIL=true; unset one of them",
            ));
        }
        (None, true) => None,
        (None, false) => {
            return Err(ConfigError::Missing {
                var: "OIDC_ALLOWED_EMAILS",
                hint: "the push service account email(s): any Google account can mint a token for any audience. \
                       OIDC_ALLOW_ANY_EMAIL=true accepts every account instead",
            });
        }
    };
    let trust_cloud_run_iam = env.bool("OIDC_TRUST_CLOUD_RUN_IAM")?;
    if trust_cloud_run_iam && allowed_emails.is_none() {
        // Without a signature the email is the only thing tying a token to the push account.
        return Err(invalid(
            "OIDC_TRUST_CLOUD_RUN_IAM",
            "true",
            "needs OIDC_ALLOWED_EMAILS (not OIDC_ALLOW_ANY_EMAIL)",
        ));
    }
    Ok(AuthConfig::Oidc(OidcConfig {
        audience,
        allowed_emails,
        trust_cloud_run_iam,
        jwks_url,
        issuers,
        leeway_seconds: env.number(&numbers::OIDC_LEEWAY_SECONDS)?,
        jwks_ca_location: match env.get("OIDC_JWKS_CA_LOCATION") {
            None => None,
            Some(p) if std::path::Path::new(&p).is_file() => Some(PathBuf::from(p)),
            Some(p) => return Err(invalid("OIDC_JWKS_CA_LOCATION", &p, "no such file")),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_protocols_and_log_formats_parse_in_one_place() {
        let codecs: Vec<_> = ["none", "GZIP", "snappy", "Lz4", "zstd"]
            .iter()
            .map(|c| c.parse::<CompressionCodec>())
            .collect();
        assert_eq!(
            codecs,
            [
                Ok(CompressionCodec::None),
                Ok(CompressionCodec::Gzip),
                Ok(CompressionCodec::Snappy),
                Ok(CompressionCodec::Lz4),
                Ok(CompressionCodec::Zstd),
            ]
        );
        assert!("brotli".parse::<CompressionCodec>().is_err());
        let protocols: Vec<_> = ["plaintext", "SSL", "sasl_plaintext", "SASL_SSL"]
            .iter()
            .map(|p| p.parse::<SecurityProtocol>())
            .collect();
        assert_eq!(
            protocols,
            [
                Ok(SecurityProtocol::Plaintext),
                Ok(SecurityProtocol::Ssl),
                Ok(SecurityProtocol::SaslPlaintext),
                Ok(SecurityProtocol::SaslSsl),
            ]
        );
        assert!("TLS".parse::<SecurityProtocol>().is_err());
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("JSON".parse::<LogFormat>().is_err());
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&map)
    }

    const BASE: [(&str, &str); 4] = [
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        ("KAFKA_TOPIC", "t"),
        ("OIDC_AUDIENCE", "https://bridge.example"),
        ("OIDC_ALLOWED_EMAILS", "push@p.iam.gserviceaccount.com"),
    ];

    fn base_with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut vars = BASE.to_vec();
        vars.extend_from_slice(extra);
        config(&vars)
    }

    #[test]
    fn booleans_are_strict_so_a_typo_never_flips_a_setting() {
        assert!(base_with(&[]).unwrap().record.metadata_headers);
        for off in ["false", "0", "no", "FALSE"] {
            let c = base_with(&[("KAFKA_METADATA_HEADERS", off)]).unwrap();
            assert!(!c.record.metadata_headers, "{off}");
        }
        assert!(
            base_with(&[("KAFKA_METADATA_HEADERS", "true")])
                .unwrap()
                .record
                .metadata_headers
        );
        let error = base_with(&[("KAFKA_METADATA_HEADERS", "flase")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("KAFKA_METADATA_HEADERS=\"flase\""),
            "{error}"
        );
    }

    #[test]
    fn server_limits_have_defaults_and_refuse_a_budget_below_one_body() {
        let c = base_with(&[]).unwrap();
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.h2_max_streams, 64);
        assert_eq!(c.limits.body_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.body_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.limits.inflight.max_requests, 1000);
        assert_eq!(c.limits.inflight.max_bytes, 256 << 20);
        let map: HashMap<String, String> = BASE
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let in_256_mib = Config::from_lookup_in_container(|k| map.get(k).cloned(), Some(256 << 20));
        assert_eq!(in_256_mib.unwrap().limits.inflight.max_bytes, 52 << 20);
        let c = base_with(&[
            ("MAX_INFLIGHT_BYTES", "33554432"),
            ("MAX_INFLIGHT_REQUESTS", "7"),
            ("MAX_CONNECTIONS", "9"),
            ("HTTP2_MAX_CONCURRENT_STREAMS", "3"),
            ("HTTP_BODY_IDLE_TIMEOUT_MS", "1500"),
            ("HTTP_BODY_TIMEOUT_MS", "2500"),
            ("HTTP_IDLE_TIMEOUT_MS", "3500"),
        ])
        .unwrap();
        assert_eq!(c.limits.inflight.max_bytes, 32 << 20);
        assert_eq!(c.limits.inflight.max_requests, 7);
        assert_eq!(c.limits.max_connections, 9);
        assert_eq!(c.limits.h2_max_streams, 3);
        assert_eq!(c.limits.body_idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.limits.body_timeout, Duration::from_millis(2500));
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(3500));
        // Exactly one largest body is enough; one byte less is not.
        assert!(base_with(&[("MAX_BODY_BYTES", "4096"), ("MAX_INFLIGHT_BYTES", "4096")]).is_ok());
        let error = base_with(&[("MAX_BODY_BYTES", "4096"), ("MAX_INFLIGHT_BYTES", "4095")])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("MAX_INFLIGHT_BYTES"), "{error}");
        let error = base_with(&[("KAFKA_ATTRIBUTE_HEADER_PREFIX", "PubSub.")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("KAFKA_ATTRIBUTE_HEADER_PREFIX"),
            "{error}"
        );
        assert!(base_with(&[("KAFKA_ATTRIBUTE_HEADER_PREFIX", "attr.")]).is_ok());
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.record, RecordOptions::default());
        assert_eq!(c.route, TopicRoute::Single("t".into()));
        assert_eq!(c.push_payload, PushPayload::Auto);
        assert_eq!(c.value_format, ValueFormat::Raw);
        assert_eq!(c.kafka.compression, CompressionCodec::None);
        assert_eq!(c.kafka.produce_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka.request_timeout, Duration::from_secs(5));
        assert_eq!(c.max_body_bytes, 16 << 20);
        assert_eq!(c.log_format, LogFormat::Text);
        let AuthConfig::Oidc(oidc) = c.auth else {
            panic!("auth should be on")
        };
        assert_eq!(oidc.jwks_url.to_string(), DEFAULT_JWKS_URL);
        assert_eq!(
            oidc.issuers,
            vec!["https://accounts.google.com", "accounts.google.com"]
        );
        assert_eq!(
            oidc.allowed_emails,
            Some(vec!["push@p.iam.gserviceaccount.com".to_owned()])
        );
        assert!(!oidc.trust_cloud_run_iam);
    }

    fn with(
        extra: &[(&'static str, &'static str)],
        without: &[&str],
    ) -> Vec<(&'static str, &'static str)> {
        let mut vars: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| !without.contains(k))
            .copied()
            .collect();
        vars.extend_from_slice(extra);
        vars
    }

    fn error_var(vars: &[(&str, &str)]) -> &'static str {
        config(vars).unwrap_err().var()
    }

    #[test]
    fn refuses_to_start_without_an_allow_list_unless_any_email_is_explicit() {
        assert_eq!(
            error_var(&with(&[], &["OIDC_ALLOWED_EMAILS"])),
            "OIDC_ALLOWED_EMAILS"
        );
        assert_eq!(
            error_var(&with(
                &[("OIDC_ALLOWED_EMAILS", " , ")],
                &["OIDC_ALLOWED_EMAILS"]
            )),
            "OIDC_ALLOWED_EMAILS"
        );
        let any = config(&with(
            &[("OIDC_ALLOW_ANY_EMAIL", "true")],
            &["OIDC_ALLOWED_EMAILS"],
        ))
        .unwrap();
        let AuthConfig::Oidc(oidc) = any.auth else {
            panic!("auth on")
        };
        assert_eq!(oidc.allowed_emails, None);
        // Both at once: which did the operator mean?
        assert_eq!(
            error_var(&with(&[("OIDC_ALLOW_ANY_EMAIL", "true")], &[])),
            "OIDC_ALLOWED_EMAILS"
        );
        let listed = config(&with(&[("OIDC_ALLOW_ANY_EMAIL", "false")], &[])).unwrap();
        assert!(matches!(
            listed.auth,
            AuthConfig::Oidc(OidcConfig {
                allowed_emails: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn trusting_cloud_run_iam_needs_an_allow_list() {
        let c = config(&with(&[("OIDC_TRUST_CLOUD_RUN_IAM", "true")], &[])).unwrap();
        let AuthConfig::Oidc(oidc) = c.auth else {
            panic!("auth on")
        };
        assert!(oidc.trust_cloud_run_iam);
        assert_eq!(
            error_var(&with(
                &[
                    ("OIDC_TRUST_CLOUD_RUN_IAM", "true"),
                    ("OIDC_ALLOW_ANY_EMAIL", "true")
                ],
                &["OIDC_ALLOWED_EMAILS"]
            )),
            "OIDC_TRUST_CLOUD_RUN_IAM"
        );
        assert_eq!(
            error_var(&with(&[("OIDC_TRUST_CLOUD_RUN_IAM", "yes please")], &[])),
            "OIDC_TRUST_CLOUD_RUN_IAM"
        );
    }

    #[test]
    fn disabled_verification_refuses_verification_settings_beside_it() {
        for var in [
            "OIDC_AUDIENCE",
            "OIDC_ALLOWED_EMAILS",
            "OIDC_ALLOW_ANY_EMAIL",
            "OIDC_TRUST_CLOUD_RUN_IAM",
            "OIDC_JWKS_URL",
            "OIDC_ISSUERS",
        ] {
            let vars = [
                ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                ("KAFKA_TOPIC", "t"),
                ("OIDC_DISABLED", "true"),
                (var, "https://x.example"),
            ];
            assert_eq!(error_var(&vars), var);
        }
    }

    #[test]
    fn refuses_to_start_without_audience_unless_disabled() {
        let err = config(&BASE[..2]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                var: "OIDC_AUDIENCE",
                ..
            }
        ));
        let mut vars = BASE[..2].to_vec();
        vars.push(("OIDC_DISABLED", "true"));
        assert_eq!(config(&vars).unwrap().auth, AuthConfig::Disabled);
        vars.push(("OIDC_ALLOW_ANY_EMAIL", ""));
        assert_eq!(config(&vars).unwrap().auth, AuthConfig::Disabled);
    }

    #[test]
    fn every_error_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("KAFKA_KEY", "attribute:", "KAFKA_KEY"),
            ("KAFKA_VALUE_FORMAT", "xml", "KAFKA_VALUE_FORMAT"),
            ("KAFKA_COMPRESSION", "brotli", "KAFKA_COMPRESSION"),
            ("KAFKA_LINGER_MS", "soon", "KAFKA_LINGER_MS"),
            ("KAFKA_PRODUCE_TIMEOUT_MS", "5", "KAFKA_PRODUCE_TIMEOUT_MS"),
            ("KAFKA_REQUEST_TIMEOUT_MS", "0", "KAFKA_REQUEST_TIMEOUT_MS"),
            ("PORT", "70000", "PORT"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT"),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                "nohost",
                "KAFKA_BOOTSTRAP_SERVERS",
            ),
            ("OIDC_JWKS_URL", "http://example.com/certs", "OIDC_JWKS_URL"),
            ("OIDC_DISABLED", "maybe", "OIDC_DISABLED"),
            ("KAFKA_SECURITY_PROTOCOL", "TLS", "KAFKA_SECURITY_PROTOCOL"),
            (
                "KAFKA_SSL_CA_LOCATION",
                "/no/such/ca.pem",
                "KAFKA_SSL_CA_LOCATION",
            ),
        ];
        for (var, value, named) in cases {
            let mut vars: Vec<(&str, &str)> =
                BASE.iter().filter(|(k, _)| k != var).copied().collect();
            vars.push((var, value));
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.starts_with(named), "{var}={value}: {err}");
        }
    }

    #[test]
    fn parses_key_sources() {
        let mut vars = BASE.to_vec();
        vars.push(("KAFKA_KEY", "attribute:tenant"));
        assert_eq!(
            config(&vars).unwrap().record.key_source,
            KeySource::Attribute("tenant".into())
        );
        vars.pop();
        vars.push(("KAFKA_KEY", "message_id"));
        assert_eq!(
            config(&vars).unwrap().record.key_source,
            KeySource::MessageId
        );
        vars.pop();
        vars.push(("KAFKA_KEY", "none"));
        assert_eq!(config(&vars).unwrap().record.key_source, KeySource::None);
    }

    #[test]
    fn sasl_needs_mechanism_and_credentials_and_hides_them() {
        let mut vars = BASE.to_vec();
        vars.push(("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"));
        assert!(
            config(&vars)
                .unwrap_err()
                .to_string()
                .starts_with("KAFKA_SASL_MECHANISM")
        );
        vars.push(("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"));
        assert!(
            config(&vars)
                .unwrap_err()
                .to_string()
                .starts_with("KAFKA_SASL_USERNAME")
        );
        vars.push(("KAFKA_SASL_USERNAME", "bridge"));
        vars.push(("KAFKA_SASL_PASSWORD", "s3cret-value"));
        let c = config(&vars).unwrap();
        assert!(!format!("{c:?}").contains("s3cret-value"));
    }

    #[test]
    fn cloud_run_defaults_to_json_logs() {
        let mut vars = BASE.to_vec();
        vars.push(("K_SERVICE", "bridge"));
        assert_eq!(config(&vars).unwrap().log_format, LogFormat::Json);
    }

    #[test]
    fn routing_table_replaces_the_single_topic() {
        let vars = [
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            (
                "KAFKA_TOPIC_BY_SUBSCRIPTION",
                "projects/p/subscriptions/a=topic-a, b=topic-b",
            ),
            ("KAFKA_DLQ_TOPIC", "dlq"),
            ("OIDC_DISABLED", "true"),
        ];
        let c = config(&vars).unwrap();
        assert_eq!(
            c.route.topic_for("projects/p/subscriptions/a"),
            Ok("topic-a")
        );
        assert_eq!(c.kafka.preload_topics, vec!["topic-a", "topic-b", "dlq"]);
        let broken = [vars[0], ("KAFKA_TOPIC_BY_SUBSCRIPTION", "a"), vars[3]];
        assert!(
            config(&broken)
                .unwrap_err()
                .to_string()
                .starts_with("KAFKA_TOPIC_BY_SUBSCRIPTION")
        );
    }

    #[test]
    fn header_and_time_options() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("KAFKA_ATTRIBUTE_HEADERS", "only:a, b"),
            ("KAFKA_ATTRIBUTE_HEADER_PREFIX", "attr."),
            ("KAFKA_METADATA_HEADERS", "false"),
            ("KAFKA_TIMESTAMP_ATTRIBUTE", "event_time"),
            ("PUSH_PAYLOAD", "unwrapped"),
        ]);
        let c = config(&vars).unwrap();
        assert_eq!(
            c.record.attribute_headers,
            AttributeHeaders::Only(vec!["a".into(), "b".into()])
        );
        assert_eq!(c.record.attribute_prefix, "attr.");
        assert!(!c.record.metadata_headers);
        assert_eq!(c.record.timestamp_attribute.as_deref(), Some("event_time"));
        assert_eq!(c.push_payload, PushPayload::Unwrapped);
    }
}
