//! OAUTHBEARER tokens for Google Cloud Managed Service for Apache Kafka, built from the
//! service account's access token and email on the metadata server, cached until shortly
//! before they expire.
//!
//! GMK refuses a bare access token. It takes a JWT-shaped token of three unpadded base64url
//! parts: `{"typ":"JWT","alg":"GOOG_OAUTH2_TOKEN"}`, `{"exp","iat","iss":"Google",
//! "scope":"kafka","sub":EMAIL}` and the access token itself — what Google's own
//! `GcpLoginCallbackHandler` (Java) and `kafka_gcp_credentials_server.py` (googleapis/managedkafka)
//! send; see ../shared/PUBSUB-PUSH.md, "Google Cloud Managed Service for Apache Kafka".

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rskafka::client::{OauthBearerCredentials, OauthCallback};
use serde::Deserialize;

/// A token is replaced this long before it expires, so a connection never starts with one about to lapse.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Google access tokens live an hour by default and at most 12 hours (with the organization
/// policy `constraints/iam.allowServiceAccountCredentialLifetimeExtension`): a longer
/// `expires_in` from the metadata server is not believed.
pub(crate) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A metadata request that takes longer fails (and the connection attempt is retried).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The metadata server's path prefix of the default service account.
const ACCOUNT_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default";

/// Why no token could be had. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The metadata server could not be reached or answered an error.
    #[error("metadata server {host}: {reason}")]
    Fetch {
        /// The metadata host.
        host: String,
        /// What went wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// The token GMK accepts for `access_token` of the service account `email`, issued at `iat`
/// and expiring at `exp` (seconds since the epoch).
pub(crate) fn gmk_token(access_token: &str, email: &str, iat: u64, exp: u64) -> String {
    let header = serde_json::json!({"typ": "JWT", "alg": "GOOG_OAUTH2_TOKEN"});
    let claims = serde_json::json!({
        "exp": exp,
        "iat": iat,
        "iss": "Google",
        "scope": "kafka",
        "sub": email,
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(access_token),
    )
}

/// The lifetime a token response's `expires_in` (seconds) stands for: at least a second, at
/// most [`MAX_TOKEN_LIFETIME`].
fn lifetime(expires_in: u64) -> Duration {
    Duration::from_secs(expires_in.clamp(1, MAX_TOKEN_LIFETIME.as_secs()))
}

/// When a token fetched at `now` that lives `lifetime` is replaced: [`REFRESH_MARGIN`] before
/// it expires, or at half its life when it is short (tests, unusual setups). Never panics:
/// an instant beyond the clock's range means "refresh on next use".
fn refresh_at(now: Instant, lifetime: Duration) -> Instant {
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    now.checked_add(lifetime - margin).unwrap_or(now)
}

impl std::fmt::Debug for GoogleTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleTokenProvider")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Fetches and caches the GMK token of the default service account.
pub struct GoogleTokenProvider {
    host: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// `KAFKA_OAUTHBEARER_PRINCIPAL`, or the metadata server's email once fetched.
    principal: tokio::sync::OnceCell<String>,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl GoogleTokenProvider {
    /// A provider asking `metadata_host` (`host[:port]`, normally `metadata.google.internal`);
    /// `principal` overrides the email the metadata server names.
    pub fn new(metadata_host: &str, principal: Option<String>) -> Self {
        Self {
            host: metadata_host.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            principal: match principal {
                Some(email) => tokio::sync::OnceCell::new_with(Some(email)),
                None => tokio::sync::OnceCell::new(),
            },
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a fresh one when it is within `REFRESH_MARGIN` of expiry.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let email = self
            .principal
            .get_or_try_init(|| self.fetch_email())
            .await?;
        let (access_token, lifetime) = self.fetch_access_token().await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let token = gmk_token(
            &access_token,
            email,
            now,
            now.saturating_add(lifetime.as_secs()),
        );
        *cached = Some((token.clone(), refresh_at(Instant::now(), lifetime)));
        Ok(token)
    }

    async fn get(&self, path: &str, limit: usize) -> Result<Bytes, TokenError> {
        let uri = format!("http://{}{ACCOUNT_PATH}/{path}", self.host);
        let request = http::Request::get(uri)
            .header("metadata-flavor", "Google")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.error(e.to_string()))?;
        let (_, body) = crate::fetch::send(&self.client, request, limit, FETCH_TIMEOUT)
            .await
            .map_err(|e| self.error(e))?;
        Ok(body)
    }

    fn error(&self, reason: String) -> TokenError {
        TokenError::Fetch {
            host: self.host.clone(),
            reason,
        }
    }

    async fn fetch_email(&self) -> Result<String, TokenError> {
        let body = self.get("email", 1024).await?;
        let email = std::str::from_utf8(&body)
            .map(str::trim)
            .unwrap_or_default();
        if email.is_empty() || !email.contains('@') {
            return Err(self.error("the service account email is not an email".into()));
        }
        Ok(email.to_owned())
    }

    /// The default service account's OAuth access token and its lifetime, fetched now.
    pub(crate) async fn fetch_access_token(&self) -> Result<(String, Duration), TokenError> {
        let body = self.get("token", 64 * 1024).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| self.error(format!("unexpected token response: {e}")))?;
        Ok((parsed.access_token, lifetime(parsed.expires_in)))
    }

    /// rskafka's OAUTHBEARER credentials, asking this provider on every new connection.
    pub(crate) fn credentials(self: Arc<Self>) -> OauthBearerCredentials {
        let callback: OauthCallback = Arc::new(move || {
            let provider = Arc::clone(&self);
            Box::pin(async move {
                provider
                    .token()
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
        });
        OauthBearerCredentials {
            callback,
            authz_id: None,
            bearer_kvs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(token: &str, n: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(n).unwrap())
            .unwrap()
    }

    #[test]
    fn a_server_lifetime_is_bounded_and_never_overflows_the_clock() {
        assert_eq!(lifetime(0), Duration::from_secs(1));
        assert_eq!(lifetime(3599), Duration::from_secs(3599));
        assert_eq!(lifetime(u64::MAX), MAX_TOKEN_LIFETIME);
        let now = Instant::now();
        assert_eq!(
            refresh_at(now, Duration::from_secs(3600)),
            now + Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_at(now, Duration::from_secs(10)),
            now + Duration::from_secs(5)
        );
        assert_eq!(refresh_at(now, Duration::MAX), now);
    }

    #[test]
    fn gmk_token_has_googles_three_parts() {
        let token = gmk_token(
            "ya29.a-b_c",
            "bridge@p.iam.gserviceaccount.com",
            1_000,
            4_600,
        );
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.contains('='), "unpadded");
        let header: serde_json::Value = serde_json::from_slice(&part(&token, 0)).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"typ": "JWT", "alg": "GOOG_OAUTH2_TOKEN"})
        );
        let claims: serde_json::Value = serde_json::from_slice(&part(&token, 1)).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "exp": 4_600, "iat": 1_000, "iss": "Google", "scope": "kafka",
                "sub": "bridge@p.iam.gserviceaccount.com",
            })
        );
        assert_eq!(part(&token, 2), b"ya29.a-b_c");
    }
}
