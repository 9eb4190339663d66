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

use clap::Args;

use crate::auth::settings::AuthConfig;
use crate::auth::settings::OidcSettings;
use crate::dedup::settings::DedupSettings;
use crate::encode::ValueFormat;
use crate::encode::settings::EncodeSettings;
use crate::envelope::PushPayload;
use crate::envelope::settings::EnvelopeSettings;
use crate::kafka::settings::KafkaConfig;
use crate::kafka::settings::KafkaSettings;
use crate::limits::HttpLimits;
use crate::limits::settings::ServerSettings;
use crate::logging::settings::LogFormat;
use crate::logging::settings::LoggingSettings;
use crate::pubsub_schema::settings::{PubsubSchemaSettings, SchemaApiConfig};
use crate::record::settings::RecordSettings;
use crate::record::{RecordOptions, TopicRoute};
use crate::registry::settings::RegistrySettings;
pub(crate) use crate::registry::settings::SchemaRegistryConfig;
use crate::routes::settings::RoutesSettings;
pub(crate) use crate::setting::ConfigError;
use crate::setting::{all_or_errors, invalid};

/// Every setting, by stage, in `--help` order.
#[derive(Debug, Args)]
pub(crate) struct Settings {
    #[command(flatten)]
    server: ServerSettings,
    #[command(flatten)]
    envelope: EnvelopeSettings,
    #[command(flatten)]
    kafka: KafkaSettings,
    #[command(flatten)]
    record: RecordSettings,
    #[command(flatten)]
    routes: RoutesSettings,
    #[command(flatten)]
    encode: EncodeSettings,
    #[command(flatten)]
    registry: RegistrySettings,
    #[command(flatten)]
    pubsub_schema: PubsubSchemaSettings,
    #[command(flatten)]
    dedup: DedupSettings,
    #[command(flatten)]
    auth: OidcSettings,
    #[command(flatten)]
    logging: LoggingSettings,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `PORT`.
    pub port: u16,
    /// `MAX_BODY_BYTES`: larger requests are answered 413.
    pub(crate) max_body_bytes: usize,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`: slow clients are cut off after this.
    pub(crate) header_read_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: how long in-flight deliveries may finish after SIGTERM.
    pub(crate) shutdown_timeout: Duration,
    /// Kafka side.
    pub kafka: KafkaConfig,
    /// `KAFKA_TOPIC` or `KAFKA_TOPIC_BY_SUBSCRIPTION`.
    pub route: TopicRoute,
    /// `ROUTES` or `ROUTES_FILE`: the routing rules, tried before `route`.
    pub(crate) routes: Option<std::sync::Arc<crate::routes::Routes>>,
    /// `PUSH_PAYLOAD`.
    pub(crate) push_payload: PushPayload,
    /// Key, headers and timestamp settings.
    pub(crate) record: RecordOptions,
    /// `KAFKA_VALUE_FORMAT` (with `KAFKA_JSON_EMBED_DATA`).
    pub(crate) value_format: ValueFormat,
    /// Token verification.
    pub(crate) auth: AuthConfig,
    /// `LOG_FORMAT`.
    pub(crate) log_format: LogFormat,
    /// `RUST_LOG`: the log filter.
    pub(crate) log_filter: String,
    /// `SCHEMA_REGISTRY_URL` with optional `SCHEMA_REGISTRY_USERNAME`/`SCHEMA_REGISTRY_PASSWORD`.
    pub(crate) schema_registry: Option<SchemaRegistryConfig>,
    /// `PUBSUB_API_URL`: where `pubsub-schema` reads schema revisions.
    pub(crate) pubsub_api: SchemaApiConfig,
    /// `GOOGLE_CLOUD_PROJECT` (or `GCP_PROJECT`): used to build Cloud Logging trace names.
    pub(crate) gcp_project: Option<String>,
    /// Connection, time, body and in-flight limits of the HTTP server.
    pub(crate) limits: HttpLimits,
    /// `DEDUP_CACHE_ENTRIES`: acknowledged message ids remembered per subscription (0: off).
    pub(crate) dedup_cache_entries: usize,
}

impl Config {
    /// Reads settings from a map (tests and embedders).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads settings through `lookup`; empty values count as unset.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::from_lookup_in_container(lookup, None)
    }

    /// Reads settings through `lookup` for a container with `memory_limit` bytes (from which
    /// the in-flight budget's default is derived); every bad setting is reported at once.
    pub(crate) fn from_lookup_in_container(
        lookup: impl Fn(&str) -> Option<String>,
        memory_limit: Option<u64>,
    ) -> Result<Self, ConfigError> {
        let settings: Settings = crate::setting::read(&lookup);
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
    let routes = settings.routes.settings();
    let route = routes_and_topic(&settings.routes, settings.record.route());
    let kafka = settings.kafka.settings();
    let server = settings.server.settings(memory_limit);
    let push_payload = settings.envelope.settings();
    let record = settings.record.options();
    let value_format = settings.encode.settings();
    let schema_registry = schema_registry(&settings.registry, value_format.as_ref().ok());
    let pubsub_api = settings.pubsub_schema.settings();
    let auth = settings.auth.settings();
    let logging = settings.logging.settings(platform("K_SERVICE").is_some());
    let dedup_cache_entries = settings.dedup.settings();
    all_or_errors!(
        route,
        routes,
        kafka,
        server,
        push_payload,
        record,
        value_format,
        schema_registry,
        pubsub_api,
        auth,
        logging,
        dedup_cache_entries,
    );
    let mut kafka = kafka;
    kafka.preload_topics = preload_topics(&route, routes.as_deref(), kafka.dlq_topic.as_deref());
    Ok(Config {
        port: server.port,
        max_body_bytes: server.max_body_bytes,
        header_read_timeout: server.header_read_timeout,
        shutdown_timeout: server.shutdown_timeout,
        limits: server.limits,
        kafka,
        route,
        routes,
        push_payload,
        record,
        value_format,
        auth,
        log_format: logging.format,
        log_filter: logging.filter,
        schema_registry,
        pubsub_api,
        gcp_project: logging.project.or_else(|| platform("GCP_PROJECT")),
        dedup_cache_entries,
    })
}

/// The registry only serves Avro and typed values: a registry beside another format is a mistake.
fn schema_registry(
    registry: &RegistrySettings,
    value_format: Option<&ValueFormat>,
) -> Result<Option<SchemaRegistryConfig>, ConfigError> {
    match registry.url() {
        Some((var, url))
            if !matches!(
                value_format,
                Some(ValueFormat::Avro | ValueFormat::PubsubSchema)
            ) =>
        {
            Err(invalid(
                var,
                url,
                "applies only with KAFKA_VALUE_FORMAT=avro or pubsub-schema",
            ))
        }
        _ => registry.settings(),
    }
}

/// Rules replace the routing table (`subscription` is a CEL variable), and make `KAFKA_TOPIC`
/// optional: it is then where deliveries no rule matches go.
fn routes_and_topic(
    routes: &RoutesSettings,
    route: Result<TopicRoute, ConfigError>,
) -> Result<TopicRoute, ConfigError> {
    let Some((var, value)) = routes.given() else {
        return route;
    };
    match route {
        Err(ConfigError::Missing {
            var: "KAFKA_TOPIC", ..
        }) => Ok(TopicRoute::Unset),
        Ok(TopicRoute::BySubscription(_)) => Err(invalid(
            var,
            &crate::echo::bounded_echo(value),
            "set either routing rules or KAFKA_TOPIC_BY_SUBSCRIPTION: `subscription` is a CEL variable, so a rule replaces the table",
        )),
        other => other,
    }
}

/// Topics opened at startup: every routed topic, every topic a rule names, then the
/// dead-letter topic.
fn preload_topics(
    route: &TopicRoute,
    routes: Option<&crate::routes::Routes>,
    dlq_topic: Option<&str>,
) -> Vec<String> {
    let mut topics = route.topics();
    for topic in routes
        .map(crate::routes::Routes::topics)
        .unwrap_or_default()
    {
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    topics.extend(dlq_topic.map(str::to_owned));
    topics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::settings::DEFAULT_JWKS_URL;
    use crate::kafka::settings::CompressionCodec;

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
    fn cloud_run_defaults_to_json_logs() {
        let mut vars = BASE.to_vec();
        vars.push(("K_SERVICE", "bridge"));
        assert_eq!(config(&vars).unwrap().log_format, LogFormat::Json);
        vars.push(("K_SERVICE", " "));
        assert_eq!(config(&vars).unwrap().log_format, LogFormat::Text);
    }

    #[test]
    fn the_trace_project_falls_back_to_gcp_project() {
        assert_eq!(config(&BASE).unwrap().gcp_project, None);
        let mut vars = BASE.to_vec();
        vars.push(("GCP_PROJECT", "legacy"));
        assert_eq!(
            config(&vars).unwrap().gcp_project.as_deref(),
            Some("legacy")
        );
        vars.push(("GOOGLE_CLOUD_PROJECT", "current"));
        assert_eq!(
            config(&vars).unwrap().gcp_project.as_deref(),
            Some("current")
        );
    }

    #[test]
    fn a_schema_registry_needs_avro_values() {
        let mut vars = BASE.to_vec();
        vars.push(("SCHEMA_REGISTRY_URL", "http://registry.example"));
        assert_eq!(
            config(&vars).unwrap_err().to_string(),
            "SCHEMA_REGISTRY_URL=\"http://registry.example\" is invalid: \
             applies only with KAFKA_VALUE_FORMAT=avro or pubsub-schema"
        );
        vars.push(("KAFKA_VALUE_FORMAT", "pubsub-schema"));
        assert!(config(&vars).unwrap().schema_registry.is_some());
        vars.push(("KAFKA_VALUE_FORMAT", "avro"));
        let registry = config(&vars).unwrap().schema_registry.unwrap();
        assert_eq!(registry.url, "http://registry.example");
        assert_eq!(registry.credentials, None);
        vars.push(("SCHEMA_REGISTRY_USERNAME", "key"));
        assert_eq!(config(&vars).unwrap_err().var(), "SCHEMA_REGISTRY_PASSWORD");
        vars.push(("SCHEMA_REGISTRY_PASSWORD", "secret"));
        let registry = config(&vars).unwrap().schema_registry.unwrap();
        assert_eq!(
            registry.credentials,
            Some(("key".to_owned(), "secret".to_owned()))
        );
        assert!(!format!("{registry:?}").contains("secret"));
        // Without Avro, the registry is refused whatever else is wrong with it.
        vars.push(("KAFKA_VALUE_FORMAT", "raw"));
        vars.push(("SCHEMA_REGISTRY_URL", "ftp://registry.example"));
        assert!(
            config(&vars)
                .unwrap_err()
                .to_string()
                .ends_with("applies only with KAFKA_VALUE_FORMAT=avro or pubsub-schema")
        );
        // A value format that is itself wrong: both are reported.
        vars.push(("KAFKA_VALUE_FORMAT", "xml"));
        let vars_named: Vec<_> = config(&vars)
            .unwrap_err()
            .each()
            .iter()
            .map(|e| e.var())
            .collect();
        assert_eq!(vars_named, ["KAFKA_VALUE_FORMAT", "SCHEMA_REGISTRY_URL"]);
    }

    #[test]
    fn every_stage_reports_its_errors_at_once() {
        let vars = [
            ("KAFKA_BOOTSTRAP_SERVERS", "nohost"),
            ("PORT", "eighty"),
            ("PUSH_PAYLOAD", "sideways"),
            ("KAFKA_KEY", "attribute:"),
            ("KAFKA_VALUE_FORMAT", "xml"),
            ("OIDC_DISABLED", "maybe"),
            ("LOG_FORMAT", "xml"),
        ];
        let error = config(&vars).unwrap_err();
        let named: Vec<_> = error.each().iter().map(|e| e.var()).collect();
        assert_eq!(
            named,
            [
                "KAFKA_TOPIC",
                "KAFKA_BOOTSTRAP_SERVERS",
                "PORT",
                "PUSH_PAYLOAD",
                "KAFKA_KEY",
                "KAFKA_VALUE_FORMAT",
                "OIDC_DISABLED",
                "LOG_FORMAT",
            ]
        );
        assert_eq!(error.to_string().lines().count(), named.len());
    }

    #[test]
    fn values_are_trimmed_and_blank_ones_take_the_default() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("KAFKA_TOPIC", "  spaced  "),
            ("PORT", " 9000 "),
            ("KAFKA_PRODUCE_TIMEOUT_MS", "   "),
            ("KAFKA_DLQ_TOPIC", ""),
        ]);
        let c = config(&vars).unwrap();
        assert_eq!(c.route, TopicRoute::Single("spaced".into()));
        assert_eq!(c.port, 9000);
        assert_eq!(c.kafka.produce_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka.dlq_topic, None);
        assert_eq!(c.kafka.preload_topics, ["spaced"]);
    }

    #[test]
    fn routing_rules_make_the_topic_a_fallback_and_exclude_the_routing_table() {
        let rules = r#"[{"when": "attributes.t == 'a'", "topic": "a"}, {"drop": true}]"#;
        let vars = [
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            ("ROUTES", rules),
            ("KAFKA_DLQ_TOPIC", "dlq"),
            ("OIDC_DISABLED", "true"),
        ];
        let c = config(&vars).unwrap();
        assert_eq!(c.route, TopicRoute::Unset);
        assert_eq!(c.routes.as_ref().unwrap().topics(), ["a"]);
        assert_eq!(c.kafka.preload_topics, ["a", "dlq"]);
        let mut with_topic = vars.to_vec();
        with_topic.push(("KAFKA_TOPIC", "fallback"));
        assert_eq!(
            config(&with_topic).unwrap().kafka.preload_topics,
            ["fallback", "a", "dlq"]
        );
        let mut with_table = vars.to_vec();
        with_table.push(("KAFKA_TOPIC_BY_SUBSCRIPTION", "s=x"));
        let error = config(&with_table).unwrap_err().to_string();
        assert!(error.starts_with("ROUTES="), "{error}");
        assert!(error.contains("or KAFKA_TOPIC_BY_SUBSCRIPTION"), "{error}");
        // Bad rules are reported with every other bad setting.
        let broken = [
            (
                "ROUTES",
                r#"[{"topic": "a", "x": 1}, {"when": "(", "topic": "b"}]"#,
            ),
            ("PORT", "x"),
        ];
        let error = config(&broken).unwrap_err();
        let named: Vec<_> = error.each().iter().map(|e| e.var()).collect();
        assert_eq!(
            named,
            [
                "ROUTES",
                "ROUTES",
                "KAFKA_BOOTSTRAP_SERVERS",
                "PORT",
                "OIDC_AUDIENCE"
            ]
        );
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
}
