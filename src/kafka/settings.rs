//! The Kafka stage's settings: brokers, topics, batching and time limits, and the connection's
//! security (TLS, SASL, OAUTHBEARER), declared once for the flag, the variable, the default and
//! the help, and turned into the [`KafkaConfig`] the producer uses.

use std::path::PathBuf;
use std::time::Duration;

use crate::setting::{
    ConfigError, OptionalSetting, Parser, Refusal, Setting, all_or_errors, boolean, file, invalid,
    millis, number, parsed, split_list, text,
};

/// The Kafka settings.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Kafka")]
pub(crate) struct KafkaSettings {
    /// Comma-separated host:port list of brokers [required]
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        value_name = "HOST:PORT,...",
        global = true,
        value_parser = bootstrap(),
    )]
    kafka_bootstrap_servers: Option<Setting<Vec<String>>>,
    /// Where undecodable deliveries go (with error headers) instead of a 4xx (unset: none)
    #[arg(
        long,
        env = "KAFKA_DLQ_TOPIC",
        value_name = "TOPIC",
        global = true,
        value_parser = text(),
    )]
    kafka_dlq_topic: Option<Setting<String>>,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`
    #[arg(
        long,
        env = "KAFKA_COMPRESSION",
        value_name = "CODEC",
        global = true,
        default_value = "none",
        value_parser = parsed::<CompressionCodec>(),
    )]
    kafka_compression: Setting<CompressionCodec>,
    /// How long a record may wait for others to share its produce request
    // 0 measured best (infra/bench.sh, 64 concurrent pushes): records still share produce
    // requests, because those arriving while one is in flight wait for the next.
    #[arg(
        long,
        env = "KAFKA_LINGER_MS",
        value_name = "MS",
        global = true,
        default_value = "0",
        value_parser = millis(0, 10_000),
    )]
    kafka_linger_ms: Setting<Duration>,
    /// After this the delivery answers 503; keep it below the ack deadline
    #[arg(
        long,
        env = "KAFKA_PRODUCE_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value = "10000",
        value_parser = millis(100, 600_000),
    )]
    kafka_produce_timeout_ms: Setting<Duration>,
    /// How long one Kafka request may wait for its answer before its connection is replaced
    // Half the produce timeout: a connection that went silent is given up and replaced while
    // the delivery that found it still has time to succeed on the new one, as Java's
    // `delivery.timeout.ms` (120 s) leaves room for retries after a `request.timeout.ms` (30 s).
    #[arg(
        long,
        env = "KAFKA_REQUEST_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value = "5000",
        value_parser = millis(100, 600_000),
    )]
    kafka_request_timeout_ms: Setting<Duration>,
    /// Cap on the records of one produce request per partition
    #[arg(
        long,
        env = "KAFKA_MAX_BATCH_BYTES",
        value_name = "BYTES",
        global = true,
        default_value = "1048576",
        value_parser = number(1024, 1 << 30),
    )]
    kafka_max_batch_bytes: Setting<u64>,
    /// Refuse larger records before sending (422 or a dead letter) (unset or 0: the broker decides)
    #[arg(
        long,
        env = "KAFKA_MAX_RECORD_BYTES",
        value_name = "BYTES",
        global = true,
        value_parser = number(0, 1 << 31),
    )]
    kafka_max_record_bytes: Option<Setting<u64>>,
    /// How often partition counts are re-read
    #[arg(
        long,
        env = "KAFKA_METADATA_REFRESH_MS",
        value_name = "MS",
        global = true,
        default_value = "30000",
        value_parser = millis(100, 86_400_000),
    )]
    kafka_metadata_refresh_ms: Setting<Duration>,
    /// Kafka client id
    #[arg(
        long,
        env = "KAFKA_CLIENT_ID",
        value_name = "ID",
        global = true,
        default_value = "pubsub-kafka-bridge",
        value_parser = text(),
    )]
    kafka_client_id: Setting<String>,
    /// Idempotent producer: a produce request sent again is never written twice (`false`: off)
    #[arg(
        long,
        env = "KAFKA_IDEMPOTENCE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "true",
        default_missing_value = "true",
        global = true,
        value_parser = boolean(),
    )]
    kafka_idempotence: Setting<bool>,
    /// TLS and SASL.
    #[command(flatten)]
    security: KafkaSecuritySettings,
}

/// How the bridge connects to the brokers.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Kafka security")]
pub(crate) struct KafkaSecuritySettings {
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`
    #[arg(
        long,
        env = "KAFKA_SECURITY_PROTOCOL",
        value_name = "PROTOCOL",
        global = true,
        default_value = "PLAINTEXT",
        value_parser = parsed::<SecurityProtocol>(),
    )]
    kafka_security_protocol: Setting<SecurityProtocol>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (Google Managed Kafka) (unset: no SASL)
    #[arg(
        long,
        env = "KAFKA_SASL_MECHANISM",
        value_name = "MECHANISM",
        global = true,
        value_parser = text(),
    )]
    kafka_sasl_mechanism: Option<Setting<String>>,
    /// SASL user name
    #[arg(
        long,
        env = "KAFKA_SASL_USERNAME",
        value_name = "USER",
        global = true,
        value_parser = text(),
    )]
    kafka_sasl_username: Option<Setting<String>>,
    /// SASL password (never logged; prefer --kafka-sasl-password-secret)
    #[arg(
        long,
        env = "KAFKA_SASL_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        global = true,
        value_parser = text(),
    )]
    kafka_sasl_password: Option<Setting<String>>,
    /// Read the SASL password from this Secret Manager secret at connect time: projects/P/secrets/S[/versions/V]
    #[arg(
        long,
        env = "KAFKA_SASL_PASSWORD_SECRET",
        value_name = "SECRET",
        global = true,
        value_parser = secret_version(),
    )]
    kafka_sasl_password_secret: Option<Setting<String>>,
    /// Secret Manager API base (https; http only on loopback)
    #[arg(
        long,
        env = "SECRET_MANAGER_ENDPOINT",
        value_name = "URL",
        global = true,
        default_value = crate::kafka::secret::DEFAULT_ENDPOINT,
        value_parser = text(),
    )]
    secret_manager_endpoint: Setting<String>,
    /// The `sub` of the OAUTHBEARER token (unset: the metadata server's service account email)
    #[arg(
        long,
        env = "KAFKA_OAUTHBEARER_PRINCIPAL",
        value_name = "EMAIL",
        global = true,
        value_parser = text(),
    )]
    kafka_oauthbearer_principal: Option<Setting<String>>,
    /// Metadata server asked for OAUTHBEARER and Secret Manager tokens
    #[arg(
        long,
        env = "GCE_METADATA_HOST",
        value_name = "HOST[:PORT]",
        global = true,
        default_value = "metadata.google.internal",
        value_parser = text(),
    )]
    gce_metadata_host: Setting<String>,
    /// PEM file of CA certificates for the brokers (unset: the system roots)
    #[arg(
        long,
        env = "KAFKA_SSL_CA_LOCATION",
        value_name = "FILE",
        global = true,
        value_parser = file(),
    )]
    kafka_ssl_ca_location: Option<Setting<PathBuf>>,
    /// Client certificate chain (PEM) for mTLS, with --kafka-ssl-key-location
    #[arg(
        long,
        env = "KAFKA_SSL_CERTIFICATE_LOCATION",
        value_name = "FILE",
        global = true,
        value_parser = file(),
    )]
    kafka_ssl_certificate_location: Option<Setting<PathBuf>>,
    /// Client private key (PEM) for mTLS
    #[arg(
        long,
        env = "KAFKA_SSL_KEY_LOCATION",
        value_name = "FILE",
        global = true,
        value_parser = file(),
    )]
    kafka_ssl_key_location: Option<Setting<PathBuf>>,
}

/// `KAFKA_BOOTSTRAP_SERVERS`: host:port entries, at least one.
fn bootstrap() -> Parser<Vec<String>> {
    Parser::new(|raw| {
        let servers = split_list(raw);
        for server in &servers {
            let valid_port = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid_port {
                return Err(Refusal::new(raw, format!("{server:?} is not host:port")));
            }
        }
        if servers.is_empty() {
            return Err(Refusal::new(raw, "no host:port given"));
        }
        Ok(servers)
    })
}

/// `KAFKA_SASL_PASSWORD_SECRET`: a Secret Manager secret, as its version's resource name.
fn secret_version() -> Parser<String> {
    Parser::new(|raw| {
        crate::kafka::secret::version_name(raw).map_err(|reason| Refusal::new(raw, reason))
    })
}

impl KafkaSettings {
    /// The Kafka configuration these settings make, or every error among them. Its
    /// `preload_topics` are left for the assembly to fill: they come from the routing.
    pub(crate) fn settings(&self) -> Result<KafkaConfig, Vec<ConfigError>> {
        let bootstrap_servers = self
            .kafka_bootstrap_servers
            .required("comma-separated host:port list of Kafka brokers");
        let dlq_topic = self.kafka_dlq_topic.get();
        let compression = self.kafka_compression.value();
        let linger = self.kafka_linger_ms.value();
        let produce_timeout = self.kafka_produce_timeout_ms.value();
        let request_timeout = self.kafka_request_timeout_ms.value();
        let max_batch_bytes = self.kafka_max_batch_bytes.value();
        let max_record_bytes = self.kafka_max_record_bytes.get();
        let metadata_refresh = self.kafka_metadata_refresh_ms.value();
        let client_id = self.kafka_client_id.value();
        let idempotence = self.kafka_idempotence.value();
        let security = self.security.settings();
        all_or_errors!(
            bootstrap_servers,
            dlq_topic,
            compression,
            linger,
            produce_timeout,
            request_timeout,
            max_batch_bytes,
            max_record_bytes,
            metadata_refresh,
            client_id,
            idempotence,
            security,
        );
        Ok(KafkaConfig {
            bootstrap_servers,
            preload_topics: Vec::new(),
            dlq_topic,
            compression,
            linger,
            produce_timeout,
            request_timeout,
            max_batch_bytes: max_batch_bytes as usize,
            max_record_bytes: max_record_bytes.filter(|&n| n > 0).map(|n| n as usize),
            metadata_refresh,
            client_id,
            idempotence,
            security,
        })
    }
}

impl KafkaSecuritySettings {
    /// The connection's security; the first rule broken when the settings contradict.
    fn settings(&self) -> Result<KafkaSecurity, ConfigError> {
        let protocol = self.kafka_security_protocol.value()?;
        let mechanism = self
            .kafka_sasl_mechanism
            .get()?
            .map(|v| v.to_ascii_uppercase());
        let password_secret = match self.kafka_sasl_password_secret.get()? {
            None => None,
            Some(name) => {
                if self.kafka_sasl_password.is_given() {
                    return Err(invalid(
                        "KAFKA_SASL_PASSWORD_SECRET",
                        self.kafka_sasl_password_secret.raw(),
                        "set either KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_SECRET, not both",
                    ));
                }
                let endpoint = self.secret_manager_endpoint.value()?;
                crate::setting::require_https(&endpoint).map_err(|refusal| {
                    invalid(
                        self.secret_manager_endpoint.var(),
                        &refusal.value,
                        &refusal.reason,
                    )
                })?;
                Some((endpoint, name))
            }
        };
        let credentials = || -> Result<(String, String), ConfigError> {
            let username = self
                .kafka_sasl_username
                .required("SASL user name for the chosen mechanism")?;
            // With KAFKA_SASL_PASSWORD_SECRET the password is read at connect time.
            let password = match &password_secret {
                Some(_) => String::new(),
                None => self.kafka_sasl_password.required(
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
        let security = KafkaSecurity {
            protocol,
            sasl,
            ca_location: self.kafka_ssl_ca_location.get()?,
            client_cert_location: self.kafka_ssl_certificate_location.get()?,
            client_key_location: self.kafka_ssl_key_location.get()?,
            oauthbearer_principal: self.kafka_oauthbearer_principal.get()?,
            password_secret,
            metadata_host: self.gce_metadata_host.value()?,
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
}

/// Kafka compression codec for produce requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompressionCodec {
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
pub(crate) enum SecurityProtocol {
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
    pub(crate) fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    /// Whether SASL authentication runs on the connection.
    pub(crate) fn uses_sasl(self) -> bool {
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
pub(crate) enum SaslMechanism {
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
pub(crate) struct KafkaSecurity {
    /// `KAFKA_SECURITY_PROTOCOL`.
    pub(crate) protocol: SecurityProtocol,
    /// `KAFKA_SASL_MECHANISM` with `KAFKA_SASL_USERNAME`/`KAFKA_SASL_PASSWORD`.
    pub(crate) sasl: Option<SaslMechanism>,
    /// `KAFKA_SSL_CA_LOCATION`: PEM CA bundle; system roots when unset.
    pub(crate) ca_location: Option<PathBuf>,
    /// `KAFKA_SSL_CERTIFICATE_LOCATION`: client certificate chain (PEM) for mTLS.
    pub(crate) client_cert_location: Option<PathBuf>,
    /// `KAFKA_SSL_KEY_LOCATION`: client private key (PEM) for mTLS.
    pub(crate) client_key_location: Option<PathBuf>,
    /// `GCE_METADATA_HOST`: metadata server for OAUTHBEARER tokens.
    pub(crate) metadata_host: String,
    /// `KAFKA_SASL_PASSWORD_SECRET`: Secret Manager version holding the SASL password, read
    /// at connect time (`projects/P/secrets/S/versions/V`); `SECRET_MANAGER_ENDPOINT` with it.
    pub(crate) password_secret: Option<(String, String)>,
    /// `KAFKA_OAUTHBEARER_PRINCIPAL`: the service account email put in OAUTHBEARER tokens
    /// instead of the one the metadata server names.
    pub(crate) oauthbearer_principal: Option<String>,
}

impl KafkaSecurity {
    /// The protocol and SASL mechanism, as an operator names them (never a credential).
    pub(crate) fn describe(&self) -> String {
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
    pub(crate) fn set_password(&mut self, new: String) {
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
    pub(crate) bootstrap_servers: Vec<String>,
    /// Topics opened at startup (every routed topic and the DLQ topic).
    pub(crate) preload_topics: Vec<String>,
    /// `KAFKA_DLQ_TOPIC`.
    pub(crate) dlq_topic: Option<String>,
    /// `KAFKA_COMPRESSION`.
    pub(crate) compression: CompressionCodec,
    /// `KAFKA_LINGER_MS`.
    pub(crate) linger: Duration,
    /// `KAFKA_PRODUCE_TIMEOUT_MS`.
    pub(crate) produce_timeout: Duration,
    /// `KAFKA_REQUEST_TIMEOUT_MS`: how long one Kafka request (or a connection attempt) may
    /// wait for its answer before its connection is closed and replaced.
    pub(crate) request_timeout: Duration,
    /// `KAFKA_MAX_BATCH_BYTES`: cap of one produce request's records per partition.
    pub(crate) max_batch_bytes: usize,
    /// `KAFKA_MAX_RECORD_BYTES`: records larger than this are refused before sending, like the
    /// Java producer's `max.request.size`; `None` leaves the decision to the broker.
    pub(crate) max_record_bytes: Option<usize>,
    /// `KAFKA_METADATA_REFRESH_MS`: how often partition counts are re-read.
    pub(crate) metadata_refresh: Duration,
    /// `KAFKA_CLIENT_ID`.
    pub(crate) client_id: String,
    /// `KAFKA_IDEMPOTENCE`: the idempotent producer (a producer id, its epoch and a sequence
    /// per partition in every record batch).
    pub(crate) idempotence: bool,
    /// TLS and SASL.
    pub(crate) security: KafkaSecurity,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    fn kafka(vars: &[(&str, &str)]) -> Result<KafkaConfig, Vec<ConfigError>> {
        from_vars::<KafkaSettings>(vars).settings()
    }

    fn first_error(vars: &[(&str, &str)]) -> String {
        kafka(vars).unwrap_err()[0].to_string()
    }

    #[test]
    fn defaults_and_limits() {
        let c = kafka(&[("KAFKA_BOOTSTRAP_SERVERS", " a:1, b:2 ")]).unwrap();
        assert_eq!(c.bootstrap_servers, ["a:1", "b:2"]);
        assert_eq!(c.compression, CompressionCodec::None);
        assert_eq!(c.linger, Duration::ZERO);
        assert_eq!(c.produce_timeout, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.max_batch_bytes, 1 << 20);
        assert_eq!(c.max_record_bytes, None);
        assert_eq!(c.metadata_refresh, Duration::from_secs(30));
        assert_eq!(c.client_id, "pubsub-kafka-bridge");
        assert!(c.idempotence);
        assert_eq!(c.security.protocol, SecurityProtocol::Plaintext);
        assert_eq!(c.security.metadata_host, "metadata.google.internal");
        let c = kafka(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "a:1"),
            ("KAFKA_MAX_RECORD_BYTES", "0"),
        ])
        .unwrap();
        assert_eq!(c.max_record_bytes, None, "0: the broker decides");
        let c = kafka(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "a:1"),
            ("KAFKA_MAX_RECORD_BYTES", "1"),
        ])
        .unwrap();
        assert_eq!(c.max_record_bytes, Some(1));
        let c = kafka(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "a:1"),
            ("KAFKA_IDEMPOTENCE", "false"),
        ])
        .unwrap();
        assert!(!c.idempotence);
        assert!(
            first_error(&[
                ("KAFKA_BOOTSTRAP_SERVERS", "a:1"),
                ("KAFKA_IDEMPOTENCE", "off")
            ])
            .starts_with("KAFKA_IDEMPOTENCE=\"off\" is invalid")
        );
        assert!(first_error(&[]).starts_with("KAFKA_BOOTSTRAP_SERVERS is required"));
        assert_eq!(
            first_error(&[("KAFKA_BOOTSTRAP_SERVERS", " , ")]),
            "KAFKA_BOOTSTRAP_SERVERS=\",\" is invalid: no host:port given"
        );
        assert_eq!(
            first_error(&[("KAFKA_BOOTSTRAP_SERVERS", "a:1,:2")]),
            "KAFKA_BOOTSTRAP_SERVERS=\"a:1,:2\" is invalid: \":2\" is not host:port"
        );
    }

    #[test]
    fn every_bad_kafka_setting_is_reported() {
        let errors = kafka(&[
            ("KAFKA_LINGER_MS", "10001"),
            ("KAFKA_PRODUCE_TIMEOUT_MS", "99"),
            ("KAFKA_COMPRESSION", "brotli"),
        ])
        .unwrap_err();
        let vars: Vec<_> = errors.iter().map(ConfigError::var).collect();
        assert_eq!(
            vars,
            [
                "KAFKA_BOOTSTRAP_SERVERS",
                "KAFKA_COMPRESSION",
                "KAFKA_LINGER_MS",
                "KAFKA_PRODUCE_TIMEOUT_MS"
            ]
        );
    }

    #[test]
    fn security_settings_that_contradict_are_refused() {
        let base = ("KAFKA_BOOTSTRAP_SERVERS", "a:1");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("KAFKA_SASL_MECHANISM", "PLAIN")],
                "KAFKA_SASL_MECHANISM=\"PLAIN\" is invalid: set KAFKA_SECURITY_PROTOCOL",
            ),
            (
                &[
                    ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                    ("KAFKA_SASL_MECHANISM", "gssapi"),
                ],
                "KAFKA_SASL_MECHANISM=\"GSSAPI\" is invalid: expected PLAIN",
            ),
            (
                &[("KAFKA_OAUTHBEARER_PRINCIPAL", "a@b")],
                "KAFKA_OAUTHBEARER_PRINCIPAL=\"a@b\" is invalid: only used with",
            ),
            (
                &[("KAFKA_SASL_PASSWORD_SECRET", "projects/p/secrets/s")],
                "KAFKA_SASL_PASSWORD_SECRET=\"projects/p/secrets/s/versions/latest\" is invalid: only used with",
            ),
            (
                &[("KAFKA_SASL_PASSWORD_SECRET", "projects/p")],
                "KAFKA_SASL_PASSWORD_SECRET=\"projects/p\" is invalid: expected projects/",
            ),
            (
                &[
                    ("KAFKA_SASL_PASSWORD_SECRET", "projects/p/secrets/s"),
                    ("KAFKA_SASL_PASSWORD", "pw"),
                ],
                "KAFKA_SASL_PASSWORD_SECRET=\"projects/p/secrets/s\" is invalid: set either",
            ),
            (
                &[
                    ("KAFKA_SASL_PASSWORD_SECRET", "projects/p/secrets/s"),
                    ("SECRET_MANAGER_ENDPOINT", "http://sm.example"),
                ],
                "SECRET_MANAGER_ENDPOINT=\"http://sm.example\" is invalid: must be https",
            ),
            (
                &[("KAFKA_SSL_KEY_LOCATION", "Cargo.toml")],
                "KAFKA_SSL_CERTIFICATE_LOCATION is required",
            ),
            (
                &[("KAFKA_SSL_CERTIFICATE_LOCATION", "Cargo.toml")],
                "KAFKA_SSL_KEY_LOCATION is required",
            ),
        ];
        for (extra, expected) in cases {
            let mut vars = vec![base];
            vars.extend_from_slice(extra);
            let error = first_error(&vars);
            assert!(error.starts_with(expected), "{extra:?}: {error}");
        }
        let mut secret = vec![
            base,
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-256"),
            ("KAFKA_SASL_USERNAME", "bridge"),
            ("KAFKA_SASL_PASSWORD_SECRET", "projects/p/secrets/s"),
        ];
        let c = kafka(&secret).unwrap();
        assert_eq!(
            c.security.password_secret,
            Some((
                crate::kafka::secret::DEFAULT_ENDPOINT.to_owned(),
                "projects/p/secrets/s/versions/latest".to_owned()
            ))
        );
        assert_eq!(c.security.describe(), "SASL_SSL, SCRAM-SHA-256");
        secret[2] = ("KAFKA_SASL_MECHANISM", "OAUTHBEARER");
        secret.truncate(3);
        secret.push(("KAFKA_OAUTHBEARER_PRINCIPAL", "a@b"));
        let c = kafka(&secret).unwrap();
        assert_eq!(c.security.sasl, Some(SaslMechanism::OauthBearer));
        assert_eq!(c.security.oauthbearer_principal.as_deref(), Some("a@b"));
        let c = kafka(&[
            base,
            ("KAFKA_SSL_CERTIFICATE_LOCATION", "Cargo.toml"),
            ("KAFKA_SSL_KEY_LOCATION", "Cargo.toml"),
        ])
        .unwrap();
        assert!(
            c.security.client_cert_location.is_some() && c.security.client_key_location.is_some()
        );
    }

    #[test]
    fn codecs_and_protocols_parse_in_any_case() {
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
    }

    #[test]
    fn sasl_needs_mechanism_and_credentials_and_hides_them() {
        let mut vars = vec![("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")];
        vars.push(("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"));
        assert!(first_error(&vars).starts_with("KAFKA_SASL_MECHANISM"));
        vars.push(("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"));
        assert!(first_error(&vars).starts_with("KAFKA_SASL_USERNAME"));
        vars.push(("KAFKA_SASL_USERNAME", "bridge"));
        vars.push(("KAFKA_SASL_PASSWORD", "s3cret-value"));
        let c = kafka(&vars).unwrap();
        assert!(!format!("{c:?}").contains("s3cret-value"));
        let settings: KafkaSettings = from_vars(&vars);
        assert!(!format!("{settings:?}").contains("s3cret-value"));
    }
}
