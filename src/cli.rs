//! The command line: every setting as a flag and as its documented environment variable
//! (clap's `env`), grouped per concern, with `--help`, `--version` and the `check` command.
//!
//! clap only gathers the values (a flag wins over its variable); they are validated by
//! [`Config::from_lookup_in_container`], one parser per type, so the flag and the variable can
//! never disagree about what a value means and every error names the variable.

use std::collections::HashMap;
use std::ffi::OsString;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Google Cloud Pub/Sub push endpoint that produces every verified delivery to Apache Kafka
/// with acks=all, answering 2xx only after Kafka acknowledged it.
///
/// Every setting is a flag and an environment variable (the variable's name is shown as
/// [env: NAME=]); a flag given on the command line wins over its variable.
#[derive(Debug, Parser)]
#[command(name = "pubsub-kafka-bridge", version, max_term_width = 100)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// The commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve push deliveries on PORT (the default).
    Serve,
    /// Check the settings against the real Kafka cluster (TLS/SASL, every configured topic),
    /// the JWKS endpoint and the schema registry; one line per check, exit 0 only if all pass.
    Check,
}

/// Every setting, by concern.
#[derive(Debug, Args)]
pub struct Settings {
    #[command(flatten)]
    http: HttpSettings,
    #[command(flatten)]
    kafka: KafkaSettings,
    #[command(flatten)]
    kafka_security: KafkaSecuritySettings,
    #[command(flatten)]
    record: RecordSettings,
    #[command(flatten)]
    registry: RegistrySettings,
    #[command(flatten)]
    oidc: OidcSettings,
    #[command(flatten)]
    limits: LimitSettings,
    #[command(flatten)]
    logging: LoggingSettings,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP")]
struct HttpSettings {
    /// Listen port (Cloud Run sets it) [default: 8080]
    #[arg(long, env = "PORT", value_name = "PORT", global = true)]
    port: Option<String>,
    /// `auto` (an unwrapped push is recognised by its x-goog-pubsub-message-id header), `wrapped` or `unwrapped` [default: auto]
    #[arg(long, env = "PUSH_PAYLOAD", value_name = "MODE", global = true)]
    push_payload: Option<String>,
    /// After SIGTERM, how long in-flight deliveries may finish before the rest answer 503 [default: 8000]
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", value_name = "MS", global = true)]
    shutdown_timeout_ms: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Kafka")]
struct KafkaSettings {
    /// Comma-separated host:port list of brokers [required]
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        value_name = "HOST:PORT,...",
        global = true
    )]
    kafka_bootstrap_servers: Option<String>,
    /// Target topic [required, or --kafka-topic-by-subscription]
    #[arg(long, env = "KAFKA_TOPIC", value_name = "TOPIC", global = true)]
    kafka_topic: Option<String>,
    /// Route by subscription instead: SUBSCRIPTION=TOPIC,...; `*=TOPIC` is an explicit default, others get 404
    #[arg(
        long,
        env = "KAFKA_TOPIC_BY_SUBSCRIPTION",
        value_name = "SUB=TOPIC,...",
        global = true
    )]
    kafka_topic_by_subscription: Option<String>,
    /// Where undecodable deliveries go (with error headers) instead of a 4xx [default: unset]
    #[arg(long, env = "KAFKA_DLQ_TOPIC", value_name = "TOPIC", global = true)]
    kafka_dlq_topic: Option<String>,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd` [default: none]
    #[arg(long, env = "KAFKA_COMPRESSION", value_name = "CODEC", global = true)]
    kafka_compression: Option<String>,
    /// How long a record may wait for others to share its produce request [default: 0]
    #[arg(long, env = "KAFKA_LINGER_MS", value_name = "MS", global = true)]
    kafka_linger_ms: Option<String>,
    /// After this the delivery answers 503; keep it below the ack deadline [default: 10000]
    #[arg(
        long,
        env = "KAFKA_PRODUCE_TIMEOUT_MS",
        value_name = "MS",
        global = true
    )]
    kafka_produce_timeout_ms: Option<String>,
    /// How long one Kafka request may wait for its answer before its connection is replaced [default: 5000]
    #[arg(
        long,
        env = "KAFKA_REQUEST_TIMEOUT_MS",
        value_name = "MS",
        global = true
    )]
    kafka_request_timeout_ms: Option<String>,
    /// Cap on the records of one produce request per partition [default: 1048576]
    #[arg(
        long,
        env = "KAFKA_MAX_BATCH_BYTES",
        value_name = "BYTES",
        global = true
    )]
    kafka_max_batch_bytes: Option<String>,
    /// Refuse larger records before sending (422 or a dead letter) [default: unset, the broker decides]
    #[arg(
        long,
        env = "KAFKA_MAX_RECORD_BYTES",
        value_name = "BYTES",
        global = true
    )]
    kafka_max_record_bytes: Option<String>,
    /// How often partition counts are re-read [default: 30000]
    #[arg(
        long,
        env = "KAFKA_METADATA_REFRESH_MS",
        value_name = "MS",
        global = true
    )]
    kafka_metadata_refresh_ms: Option<String>,
    /// Kafka client id [default: pubsub-kafka-bridge]
    #[arg(long, env = "KAFKA_CLIENT_ID", value_name = "ID", global = true)]
    kafka_client_id: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Kafka security")]
struct KafkaSecuritySettings {
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` [default: PLAINTEXT]
    #[arg(
        long,
        env = "KAFKA_SECURITY_PROTOCOL",
        value_name = "PROTOCOL",
        global = true
    )]
    kafka_security_protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (Google Managed Kafka) [default: unset]
    #[arg(
        long,
        env = "KAFKA_SASL_MECHANISM",
        value_name = "MECHANISM",
        global = true
    )]
    kafka_sasl_mechanism: Option<String>,
    /// SASL user name
    #[arg(long, env = "KAFKA_SASL_USERNAME", value_name = "USER", global = true)]
    kafka_sasl_username: Option<String>,
    /// SASL password (never logged; prefer --kafka-sasl-password-secret)
    #[arg(
        long,
        env = "KAFKA_SASL_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        global = true
    )]
    kafka_sasl_password: Option<String>,
    /// Read the SASL password from this Secret Manager secret at connect time: projects/P/secrets/S[/versions/V]
    #[arg(
        long,
        env = "KAFKA_SASL_PASSWORD_SECRET",
        value_name = "SECRET",
        global = true
    )]
    kafka_sasl_password_secret: Option<String>,
    /// Secret Manager API base (https; http only on loopback) [default: https://secretmanager.googleapis.com]
    #[arg(
        long,
        env = "SECRET_MANAGER_ENDPOINT",
        value_name = "URL",
        global = true
    )]
    secret_manager_endpoint: Option<String>,
    /// The `sub` of the OAUTHBEARER token [default: the metadata server's service account email]
    #[arg(
        long,
        env = "KAFKA_OAUTHBEARER_PRINCIPAL",
        value_name = "EMAIL",
        global = true
    )]
    kafka_oauthbearer_principal: Option<String>,
    /// Metadata server asked for OAUTHBEARER and Secret Manager tokens [default: metadata.google.internal]
    #[arg(
        long,
        env = "GCE_METADATA_HOST",
        value_name = "HOST[:PORT]",
        global = true
    )]
    gce_metadata_host: Option<String>,
    /// PEM file of CA certificates for the brokers [default: system roots]
    #[arg(
        long,
        env = "KAFKA_SSL_CA_LOCATION",
        value_name = "FILE",
        global = true
    )]
    kafka_ssl_ca_location: Option<String>,
    /// Client certificate chain (PEM) for mTLS, with --kafka-ssl-key-location
    #[arg(
        long,
        env = "KAFKA_SSL_CERTIFICATE_LOCATION",
        value_name = "FILE",
        global = true
    )]
    kafka_ssl_certificate_location: Option<String>,
    /// Client private key (PEM) for mTLS
    #[arg(
        long,
        env = "KAFKA_SSL_KEY_LOCATION",
        value_name = "FILE",
        global = true
    )]
    kafka_ssl_key_location: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Record")]
struct RecordSettings {
    /// `ordering_key`, `message_id`, `attribute:NAME` or `none` [default: ordering_key]
    #[arg(long, env = "KAFKA_KEY", value_name = "SOURCE", global = true)]
    kafka_key: Option<String>,
    /// `raw`, `json`, `avro` or `protobuf` [default: raw]
    #[arg(long, env = "KAFKA_VALUE_FORMAT", value_name = "FORMAT", global = true)]
    kafka_value_format: Option<String>,
    /// With json: embed a payload that is valid UTF-8 JSON as JSON [default: false]
    #[arg(long, env = "KAFKA_JSON_EMBED_DATA", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", global = true)]
    kafka_json_embed_data: Option<String>,
    /// Take the record timestamp from this attribute (epoch ms or RFC 3339) [default: publishTime]
    #[arg(
        long,
        env = "KAFKA_TIMESTAMP_ATTRIBUTE",
        value_name = "NAME",
        global = true
    )]
    kafka_timestamp_attribute: Option<String>,
    /// `all`, `none` or `only:NAME,...`: which attributes become headers [default: all]
    #[arg(
        long,
        env = "KAFKA_ATTRIBUTE_HEADERS",
        value_name = "WHICH",
        global = true
    )]
    kafka_attribute_headers: Option<String>,
    /// Put before every attribute header name; never in the reserved `pubsub.` namespace [default: empty]
    #[arg(
        long,
        env = "KAFKA_ATTRIBUTE_HEADER_PREFIX",
        value_name = "PREFIX",
        global = true
    )]
    kafka_attribute_header_prefix: Option<String>,
    /// `false` drops the pubsub.* metadata headers [default: true]
    #[arg(
        long,
        env = "KAFKA_METADATA_HEADERS",
        value_name = "BOOL",
        global = true
    )]
    kafka_metadata_headers: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Schema registry")]
struct RegistrySettings {
    /// With avro: register the schema under <topic>-value and write the Confluent wire format
    #[arg(long, env = "SCHEMA_REGISTRY_URL", value_name = "URL", global = true)]
    schema_registry_url: Option<String>,
    /// Basic auth user (Confluent Cloud: the API key)
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_USERNAME",
        value_name = "USER",
        global = true
    )]
    schema_registry_username: Option<String>,
    /// Basic auth password (never logged)
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        global = true
    )]
    schema_registry_password: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Push token (OIDC)")]
struct OidcSettings {
    /// The `aud` the push token must carry [required unless --oidc-disabled]
    #[arg(long, env = "OIDC_AUDIENCE", value_name = "AUDIENCE", global = true)]
    oidc_audience: Option<String>,
    /// Comma-separated service-account emails allowed to push [required unless --oidc-allow-any-email]
    #[arg(
        long,
        env = "OIDC_ALLOWED_EMAILS",
        value_name = "EMAIL,...",
        global = true
    )]
    oidc_allowed_emails: Option<String>,
    /// Accept a valid token of any email for the audience (loudly logged) [default: false]
    #[arg(long, env = "OIDC_ALLOW_ANY_EMAIL", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", global = true)]
    oidc_allow_any_email: Option<String>,
    /// Only behind Cloud Run IAM: accept tokens whose signature Cloud Run removed after verifying it [default: false]
    #[arg(long, env = "OIDC_TRUST_CLOUD_RUN_IAM", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", global = true)]
    oidc_trust_cloud_run_iam: Option<String>,
    /// Where signing keys come from [default: https://www.googleapis.com/oauth2/v3/certs]
    #[arg(long, env = "OIDC_JWKS_URL", value_name = "URL", global = true)]
    oidc_jwks_url: Option<String>,
    /// Accepted `iss` values [default: https://accounts.google.com,accounts.google.com]
    #[arg(long, env = "OIDC_ISSUERS", value_name = "ISSUER,...", global = true)]
    oidc_issuers: Option<String>,
    /// PEM CA bundle for a JWKS endpoint with a private CA [default: bundled Mozilla roots]
    #[arg(
        long,
        env = "OIDC_JWKS_CA_LOCATION",
        value_name = "FILE",
        global = true
    )]
    oidc_jwks_ca_location: Option<String>,
    /// Clock skew tolerated on exp, nbf and iat [default: 30]
    #[arg(
        long,
        env = "OIDC_LEEWAY_SECONDS",
        value_name = "SECONDS",
        global = true
    )]
    oidc_leeway_seconds: Option<String>,
    /// Turn verification off, loudly logged (local use only) [default: false]
    #[arg(long, env = "OIDC_DISABLED", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", global = true)]
    oidc_disabled: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
struct LimitSettings {
    /// Larger bodies get 413 [default: 16777216]
    #[arg(long, env = "MAX_BODY_BYTES", value_name = "BYTES", global = true)]
    max_body_bytes: Option<String>,
    /// Time to tell HTTP/1 from HTTP/2 and to receive a request head [default: 10000]
    #[arg(
        long,
        env = "HTTP_HEADER_READ_TIMEOUT_MS",
        value_name = "MS",
        global = true
    )]
    http_header_read_timeout_ms: Option<String>,
    /// Longest pause while a body arrives; then 408 [default: 10000]
    #[arg(
        long,
        env = "HTTP_BODY_IDLE_TIMEOUT_MS",
        value_name = "MS",
        global = true
    )]
    http_body_idle_timeout_ms: Option<String>,
    /// Longest time for a whole body; then 408 [default: 60000]
    #[arg(long, env = "HTTP_BODY_TIMEOUT_MS", value_name = "MS", global = true)]
    http_body_timeout_ms: Option<String>,
    /// A connection with no request in progress this long is closed [default: 120000]
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_MS", value_name = "MS", global = true)]
    http_idle_timeout_ms: Option<String>,
    /// Requests one HTTP/2 connection may have open at once [default: 64]
    #[arg(
        long,
        env = "HTTP2_MAX_CONCURRENT_STREAMS",
        value_name = "N",
        global = true
    )]
    http2_max_concurrent_streams: Option<String>,
    /// Open connections; beyond it new clients wait in the listen backlog [default: 1024]
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "N", global = true)]
    max_connections: Option<String>,
    /// Body bytes of deliveries in flight; beyond it 503 [default: (container memory - 48 MiB) / 4, else 256 MiB]
    #[arg(long, env = "MAX_INFLIGHT_BYTES", value_name = "BYTES", global = true)]
    max_inflight_bytes: Option<String>,
    /// Deliveries in flight; beyond it 503 [default: 1000]
    #[arg(long, env = "MAX_INFLIGHT_REQUESTS", value_name = "N", global = true)]
    max_inflight_requests: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Logging")]
struct LoggingSettings {
    /// `json` (Cloud Logging fields) or `text` [default: json on Cloud Run (K_SERVICE set), else text]
    #[arg(long, env = "LOG_FORMAT", value_name = "FORMAT", global = true)]
    log_format: Option<String>,
    /// Log filter [default: info,rskafka=warn]
    #[arg(long, env = "RUST_LOG", value_name = "FILTER", global = true)]
    log_filter: Option<String>,
    /// Project id for Cloud Logging trace names (projects/P/traces/T)
    #[arg(
        long,
        env = "GOOGLE_CLOUD_PROJECT",
        value_name = "PROJECT",
        global = true
    )]
    google_cloud_project: Option<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub struct Invocation {
    /// The command (serve when none is named).
    pub command: Command,
    /// Every setting given, by its environment variable's name, flag or variable alike.
    pub settings: HashMap<String, String>,
}

/// Parses `args` (the program name first), reading each setting's variable through clap.
///
/// `Err` is clap's own answer: help, version, or a usage error, to print and exit with.
pub fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    // Global settings are propagated to the subcommand's matches: read them where they end up.
    let leaf = matches.subcommand().map_or(&matches, |(_, sub)| sub);
    let settings = command
        .get_arguments()
        .filter_map(|arg| {
            let var = arg.get_env()?.to_str()?;
            let value = leaf.get_one::<String>(arg.get_id().as_str())?;
            Some((var.to_owned(), value.clone()))
        })
        .collect();
    Ok(Invocation {
        command: cli.command.unwrap_or(Command::Serve),
        settings,
    })
}

/// The environment variables the command line knows, in `--help` order.
pub fn setting_variables() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|arg| Some(arg.get_env()?.to_str()?.to_owned()))
        .collect()
}

impl Invocation {
    /// The configuration these settings make, for a container with `memory_limit` bytes.
    ///
    /// Names that are not settings (`K_SERVICE`, which says the process runs on Cloud Run)
    /// are read from the process environment.
    #[allow(
        clippy::disallowed_methods,
        reason = "the one read of the environment beside clap's, for names that are not settings"
    )]
    pub fn config(&self, memory_limit: Option<u64>) -> Result<Config, ConfigError> {
        Config::from_lookup_in_container(
            |name| {
                self.settings
                    .get(name)
                    .cloned()
                    .or_else(|| std::env::var(name).ok())
            },
            memory_limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_flag_names_the_same_setting_as_its_variable() {
        let invocation = parse([
            "pubsub-kafka-bridge",
            "check",
            "--kafka-topic",
            "from-flag",
            "--oidc-disabled",
        ])
        .unwrap();
        assert_eq!(invocation.command, Command::Check);
        assert_eq!(invocation.settings["KAFKA_TOPIC"], "from-flag");
        assert_eq!(invocation.settings["OIDC_DISABLED"], "true");
        let invocation = parse(["pubsub-kafka-bridge", "--port=9000"]).unwrap();
        assert_eq!(invocation.command, Command::Serve);
        assert_eq!(invocation.settings["PORT"], "9000");
    }

    #[test]
    fn every_setting_has_a_variable_and_a_help_text() {
        let command = Cli::command();
        for arg in command.get_arguments() {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            assert!(arg.get_env().is_some(), "{} has no variable", arg.get_id());
            assert!(arg.get_help().is_some(), "{} has no help", arg.get_id());
        }
        let variables = setting_variables();
        let mut unique = variables.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), variables.len(), "a variable named twice");
    }

    #[test]
    fn help_states_the_defaults_the_configuration_uses() {
        let command = Cli::command();
        for number in crate::config::numbers::ALL {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_env().and_then(|e| e.to_str()) == Some(number.var))
                .unwrap_or_else(|| panic!("{} is not on the command line", number.var));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let stated = if number.var == "KAFKA_MAX_RECORD_BYTES" {
                "[default: unset".to_owned() // 0: no limit of the bridge's own
            } else {
                format!("[default: {}]", number.default)
            };
            assert!(
                help.contains(&stated),
                "{}: {help:?} lacks {stated:?}",
                number.var
            );
        }
    }
}
