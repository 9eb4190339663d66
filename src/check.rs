//! `pubsub-kafka-bridge check`: tries the settings against the real services before a deploy.
//!
//! Connects to Kafka with the configured TLS/SASL, reads metadata for every configured topic
//! (it must exist and have partitions), fetches the JWKS, reaches the schema registry when
//! one is set, and, with `pubsub-schema`, the Pub/Sub Schema API with the runtime account's
//! token. One line per check, `✓` or `✗` with the reason; exit 0 only when all pass.
//! Nothing is written anywhere: no record is produced and no schema registered.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;

use crate::auth::Verifier;
use crate::auth::settings::AuthConfig;
use crate::config::Config;

/// Longest any one check may take (a connection that retries, an endpoint that hangs).
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckLine {
    /// Whether it passed.
    pub(crate) ok: bool,
    /// What was checked.
    pub(crate) what: String,
    /// What was found, or why it failed.
    pub(crate) detail: String,
}

impl CheckLine {
    fn pass(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            what: what.into(),
            detail: detail.into(),
        }
    }

    fn fail(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            what: what.into(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { '✓' } else { '✗' };
        write!(f, "{mark} {}: {}", self.what, self.detail)
    }
}

/// The lines for the configured topics, given what the cluster's metadata lists
/// (`(name, partitions)`): each must exist with at least one partition.
pub(crate) fn topic_lines(configured: &[String], listed: &[(String, usize)]) -> Vec<CheckLine> {
    configured
        .iter()
        .map(|topic| {
            let what = format!("topic {topic}");
            match listed.iter().find(|(name, _)| name == topic) {
                Some((_, 0)) => CheckLine::fail(what, "listed without partitions"),
                Some((_, 1)) => CheckLine::pass(what, "1 partition"),
                Some((_, n)) => CheckLine::pass(what, format!("{n} partitions")),
                None => CheckLine::fail(what, "not found in cluster metadata"),
            }
        })
        .collect()
}

/// Runs every check for `config`.
pub(crate) async fn checks(config: &Config) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    if let Some(routes) = &config.routes {
        // The rules compiled with the configuration; their topics are among those checked below.
        lines.push(CheckLine::pass(
            "routing rules",
            format!("{} compiled", routes.rule_count()),
        ));
    }
    lines.extend(kafka_lines(config).await);
    lines.push(jwks_line(config).await);
    if let Some(line) = registry_line(config).await {
        lines.push(line);
    }
    if let Some(line) = schema_api_line(config).await {
        lines.push(line);
    }
    lines
}

/// Runs the checks and prints one line each; the exit code says whether all passed.
pub async fn run(config: &Config) -> ExitCode {
    let lines = checks(config).await;
    for line in &lines {
        println!("{line}");
    }
    if lines.iter().all(|line| line.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn kafka_lines(config: &Config) -> Vec<CheckLine> {
    let kafka = &config.kafka;
    let what = format!(
        "kafka {} ({})",
        kafka.bootstrap_servers.join(","),
        kafka.security.describe()
    );
    let client = match tokio::time::timeout(CHECK_TIMEOUT, crate::kafka::connect(kafka)).await {
        Ok(Ok(client)) => client,
        Ok(Err(reason)) => return vec![CheckLine::fail(what, reason)],
        Err(_) => {
            return vec![CheckLine::fail(
                what,
                format!("no connection within {CHECK_TIMEOUT:?}"),
            )];
        }
    };
    let listed = match tokio::time::timeout(CHECK_TIMEOUT, client.list_topics()).await {
        Ok(Ok(topics)) => topics,
        Ok(Err(e)) => {
            return vec![CheckLine::fail(
                what,
                format!("connected, but metadata failed: {e}"),
            )];
        }
        Err(_) => {
            return vec![CheckLine::fail(
                what,
                format!("no metadata within {CHECK_TIMEOUT:?}"),
            )];
        }
    };
    let listed: Vec<(String, usize)> = listed
        .into_iter()
        .map(|t| (t.name, t.partitions.len()))
        .collect();
    let mut lines = vec![CheckLine::pass(
        what,
        format!("connected; {} topics listed", listed.len()),
    )];
    lines.extend(topic_lines(&kafka.preload_topics, &listed));
    lines
}

async fn jwks_line(config: &Config) -> CheckLine {
    let AuthConfig::Oidc(oidc) = &config.auth else {
        return CheckLine::pass("push tokens", "verification disabled (OIDC_DISABLED=true)");
    };
    let what = format!("jwks {}", oidc.jwks_url);
    let verifier = match Verifier::new(oidc.clone()) {
        Ok(verifier) => verifier,
        Err(e) => return CheckLine::fail(what, e.to_string()),
    };
    match tokio::time::timeout(CHECK_TIMEOUT, verifier.warm_up()).await {
        Ok(Ok(())) => match verifier.keys().key_count() {
            0 => CheckLine::fail(what, "answered, but no usable RS256 signing key"),
            n => CheckLine::pass(what, format!("{n} signing keys")),
        },
        Ok(Err(e)) => CheckLine::fail(what, e.to_string()),
        Err(_) => CheckLine::fail(what, format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

/// `GET /subjects` with the configured credentials: reachable and authorized, nothing written.
async fn registry_line(config: &Config) -> Option<CheckLine> {
    let registry = config.schema_registry.as_ref()?;
    let what = format!("schema registry {}", registry.url);
    let client = crate::fetch::https_client::<Empty<Bytes>>();
    let url = format!("{}/subjects", registry.url.trim_end_matches('/'));
    let mut request = http::Request::get(&url).header(http::header::ACCEPT, "application/json");
    if let Some(authorization) = registry.authorization() {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    let request = match request.body(Empty::new()) {
        Ok(request) => request,
        Err(e) => return Some(CheckLine::fail(what, e.to_string())),
    };
    Some(
        match crate::fetch::send(&client, request, 1 << 20, CHECK_TIMEOUT).await {
            Ok(_) => CheckLine::pass(what, "reachable (GET /subjects answered)"),
            Err(reason) => CheckLine::fail(what, reason),
        },
    )
}

/// With `pubsub-schema`: asks the Schema API for a revision that does not exist, with the
/// token the deliveries would use; a 404 shows the API reachable and the token accepted
/// (Google answers 403 to a token without `pubsub.schemas.get`).
async fn schema_api_line(config: &Config) -> Option<CheckLine> {
    if config.value_format != crate::encode::ValueFormat::PubsubSchema {
        return None;
    }
    let what = format!("pubsub schema api {}", config.pubsub_api.url);
    let schemas = crate::pubsub_schema::PubsubSchemas::new(
        &config.pubsub_api,
        &config.kafka.security.metadata_host,
        CHECK_TIMEOUT * 2,
    );
    let project = config
        .gcp_project
        .as_deref()
        .unwrap_or("pubsub-kafka-bridge-check");
    Some(match schemas.probe(project).await {
        Ok(detail) => CheckLine::pass(what, detail),
        Err(reason) => CheckLine::fail(what, reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_topic_must_exist_with_partitions() {
        let listed = vec![
            ("orders".to_owned(), 3),
            ("one".to_owned(), 1),
            ("empty".to_owned(), 0),
        ];
        let configured = ["orders", "one", "empty", "missing"].map(str::to_owned);
        let lines: Vec<String> = topic_lines(&configured, &listed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "✓ topic orders: 3 partitions",
                "✓ topic one: 1 partition",
                "✗ topic empty: listed without partitions",
                "✗ topic missing: not found in cluster metadata",
            ]
        );
    }
}
