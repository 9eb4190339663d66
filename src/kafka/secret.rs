//! The SASL password read from Secret Manager at connect time (`KAFKA_SASL_PASSWORD_SECRET`).
//!
//! Reading it here rather than through Cloud Run's secret env var means a deploy never fails
//! because the runtime account's accessor grant is still propagating (IAM changes take
//! minutes) or the secret has no version yet: the connection attempt fails, is retried with
//! backoff, and `/readyz` (the startup probe) turns 200 once the password could be read and
//! Kafka accepted it.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Empty;
use serde::Deserialize;

use super::oauth::GoogleTokenProvider;

/// Google's Secret Manager API.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://secretmanager.googleapis.com";
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Secret Manager payloads are at most 64 KiB; base64 and JSON add a third.
const MAX_RESPONSE_BYTES: usize = 128 * 1024;

#[derive(Deserialize)]
struct AccessResponse {
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    data: String,
}

/// `projects/P/secrets/S/versions/V` for `projects/P/secrets/S[/versions/V]`, or why not.
pub(crate) fn version_name(resource: &str) -> Result<String, &'static str> {
    let parts: Vec<&str> = resource.trim_matches('/').split('/').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    };
    match parts.as_slice() {
        ["projects", p, "secrets", s] if valid(p) && valid(s) => {
            Ok(format!("projects/{p}/secrets/{s}/versions/latest"))
        }
        ["projects", p, "secrets", s, "versions", v] if valid(p) && valid(s) && valid(v) => {
            Ok(format!("projects/{p}/secrets/{s}/versions/{v}"))
        }
        _ => Err("expected projects/PROJECT/secrets/SECRET[/versions/VERSION]"),
    }
}

/// Reads secret version `name` through `endpoint` with the metadata server's access token.
pub(crate) async fn access(
    endpoint: &str,
    name: &str,
    metadata_host: &str,
) -> Result<String, String> {
    let (token, _) = GoogleTokenProvider::new(metadata_host, None)
        .fetch_access_token()
        .await
        .map_err(|e| e.to_string())?;
    let client = crate::fetch::https_client::<Empty<Bytes>>();
    let request = http::Request::get(format!(
        "{}/v1/{name}:access",
        endpoint.trim_end_matches('/')
    ))
    .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
    .body(Empty::new())
    .map_err(|e| e.to_string())?;
    let (_, body) = crate::fetch::send(&client, request, MAX_RESPONSE_BYTES, FETCH_TIMEOUT)
        .await
        .map_err(|e| format!("Secret Manager {name}: {e}"))?;
    let parsed: AccessResponse = serde_json::from_slice(&body)
        .map_err(|e| format!("Secret Manager {name}: unexpected answer: {e}"))?;
    let bytes = STANDARD
        .decode(parsed.payload.data)
        .map_err(|_| format!("Secret Manager {name}: payload is not base64"))?;
    String::from_utf8(bytes).map_err(|_| format!("Secret Manager {name}: payload is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_version() {
        assert_eq!(
            version_name("projects/p-1/secrets/kafka-password").unwrap(),
            "projects/p-1/secrets/kafka-password/versions/latest"
        );
        assert_eq!(
            version_name("projects/p/secrets/s/versions/3").unwrap(),
            "projects/p/secrets/s/versions/3"
        );
        for bad in [
            "kafka-password",
            "projects/p/secrets/",
            "projects/p/secrets/s/versions",
            "projects/p/secrets/s?x=1",
            "projects/p/secrets/../x",
        ] {
            assert!(version_name(bad).is_err(), "{bad}");
        }
    }
}
