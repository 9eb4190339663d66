//! The whole configuration: every stage's settings composed into one set, read once and
//! checked before anything starts.
//!
//! Each stage declares its own settings beside the code that uses them (`kafka::settings`,
//! `auth::settings`, `record::settings`, `encode::settings`, `registry::settings`,
//! `limits::settings`, `envelope::settings`, `logging::settings`): one `clap::Args` field per
//! setting gives its flag, variable, default, help and parsed type. Here they are only
//! assembled, with the rules that span stages.

use std::collections::HashMap;
use std::time::Duration;

use clap::{Args, FromArgMatches};

use crate::auth::settings::OidcSettings;
pub use crate::auth::settings::{AuthConfig, DEFAULT_ISSUERS, DEFAULT_JWKS_URL, OidcConfig};
use crate::encode::ValueFormat;
use crate::encode::settings::EncodeSettings;
use crate::envelope::PushPayload;
use crate::envelope::settings::EnvelopeSettings;
use crate::kafka::settings::KafkaSettings;
pub use crate::kafka::settings::{
    CompressionCodec, KafkaConfig, KafkaSecurity, SaslMechanism, SecurityProtocol,
};
use crate::limits::HttpLimits;
use crate::limits::settings::ServerSettings;
pub use crate::logging::settings::LogFormat;
use crate::logging::settings::LoggingSettings;
use crate::record::settings::RecordSettings;
use crate::record::{RecordOptions, TopicRoute};
use crate::registry::settings::RegistrySettings;
pub use crate::registry::settings::SchemaRegistryConfig;
pub use crate::setting::ConfigError;
use crate::setting::{all_or_errors, invalid};

/// Every setting, by stage, in `--help` order.
#[derive(Debug, Args)]
pub struct Settings {
    #[command(flatten)]
    server: ServerSettings,
    #[command(flatten)]
    envelope: EnvelopeSettings,
    #[command(flatten)]
    kafka: KafkaSettings,
    #[command(flatten)]
    record: RecordSettings,
    #[command(flatten)]
    encode: EncodeSettings,
    #[command(flatten)]
    registry: RegistrySettings,
    #[command(flatten)]
    auth: OidcSettings,
    #[command(flatten)]
    logging: LoggingSettings,
}

impl Settings {
    /// Every setting read through `lookup`, by variable name. Each is handed to clap as its
    /// flag (blank when unset), so clap reads nothing else: not the process environment, not
    /// a default in place of a blank value (the setting's own parser applies that).
    fn read(lookup: &dyn Fn(&str) -> Option<String>) -> Self {
        let command = Self::augment_args(clap::Command::new("settings").no_binary_name(true));
        let args: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| {
                let var = arg.get_env()?.to_str()?;
                let long = arg.get_long()?;
                Some(format!("--{long}={}", lookup(var).unwrap_or_default()))
            })
            .collect();
        let matches = command
            .try_get_matches_from(args)
            .expect("every setting is an option whose parser accepts any text");
        Self::from_arg_matches(&matches).expect("the matches come from these settings")
    }
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
    /// `RUST_LOG`: the log filter.
    pub log_filter: Option<String>,
    /// `SCHEMA_REGISTRY_URL` with optional `SCHEMA_REGISTRY_USERNAME`/`SCHEMA_REGISTRY_PASSWORD`.
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// `GOOGLE_CLOUD_PROJECT` (or `GCP_PROJECT`): used to build Cloud Logging trace names.
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
    /// the in-flight budget's default is derived); every bad setting is reported at once.
    pub fn from_lookup_in_container(
        lookup: impl Fn(&str) -> Option<String>,
        memory_limit: Option<u64>,
    ) -> Result<Self, ConfigError> {
        let settings = Settings::read(&lookup);
        // Names that are not settings: what the platform says about where the process runs.
        let platform = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        assemble(&settings, &platform, memory_limit).map_err(ConfigError::from_many)
    }
}

/// Every stage's configuration, with the rules that span stages.
fn assemble(
    settings: &Settings,
    platform: &dyn Fn(&str) -> Option<String>,
    memory_limit: Option<u64>,
) -> Result<Config, Vec<ConfigError>> {
    let route = settings.record.route();
    let kafka = settings.kafka.settings();
    let server = settings.server.settings(memory_limit);
    let push_payload = settings.envelope.settings();
    let record = settings.record.options();
    let value_format = settings.encode.settings();
    let schema_registry = schema_registry(&settings.registry, value_format.as_ref().ok());
    let auth = settings.auth.settings();
    let logging = settings.logging.settings(platform("K_SERVICE").is_some());
    all_or_errors!(
        route,
        kafka,
        server,
        push_payload,
        record,
        value_format,
        schema_registry,
        auth,
        logging,
    );
    let mut kafka = kafka;
    kafka.preload_topics = preload_topics(&route, kafka.dlq_topic.as_deref());
    Ok(Config {
        port: server.port,
        max_body_bytes: server.max_body_bytes,
        header_read_timeout: server.header_read_timeout,
        shutdown_timeout: server.shutdown_timeout,
        limits: server.limits,
        kafka,
        route,
        push_payload,
        record,
        value_format,
        auth,
        log_format: logging.format,
        log_filter: Some(logging.filter),
        schema_registry,
        gcp_project: logging.project.or_else(|| platform("GCP_PROJECT")),
    })
}

/// The registry only serves Avro values: a registry beside another format is a mistake.
fn schema_registry(
    registry: &RegistrySettings,
    value_format: Option<&ValueFormat>,
) -> Result<Option<SchemaRegistryConfig>, ConfigError> {
    match registry.url() {
        Some((var, url)) if value_format != Some(&ValueFormat::Avro) => Err(invalid(
            var,
            url,
            "applies only with KAFKA_VALUE_FORMAT=avro",
        )),
        _ => registry.settings(),
    }
}

/// Topics opened at startup: every routed topic, then the dead-letter topic.
fn preload_topics(route: &TopicRoute, dlq_topic: Option<&str>) -> Vec<String> {
    let mut topics = route.topics();
    topics.extend(dlq_topic.map(str::to_owned));
    topics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AttributeHeaders, KeySource};

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
