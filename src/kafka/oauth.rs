//! OAUTHBEARER tokens for Google Cloud Managed Service for Apache Kafka: the service account's
//! access token from the metadata server, cached until shortly before it expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rskafka::client::{OauthBearerCredentials, OauthCallback};
use serde::Deserialize;

/// A token is replaced this long before it expires, so a connection never starts with one about to lapse.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// A metadata request that takes longer fails (and the connection attempt is retried).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Fetches and caches the default service account's access token.
pub struct GoogleTokenProvider {
    host: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl GoogleTokenProvider {
    /// A provider asking `metadata_host` (`host[:port]`, normally `metadata.google.internal`).
    pub fn new(metadata_host: &str) -> Self {
        GoogleTokenProvider {
            host: metadata_host.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a fresh one when it is within [`REFRESH_MARGIN`] of expiry.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        // Short-lived tokens (tests, unusual setups) are refreshed at half their life.
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        *cached = Some((token.clone(), Instant::now() + lifetime - margin));
        Ok(token)
    }

    async fn fetch(&self) -> Result<(String, Duration), TokenError> {
        let error = |reason: String| TokenError::Fetch {
            host: self.host.clone(),
            reason,
        };
        let uri = format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/token",
            self.host
        );
        let request = http::Request::get(uri)
            .header("metadata-flavor", "Google")
            .body(Empty::<Bytes>::new())
            .map_err(|e| error(e.to_string()))?;
        let (_, body) = crate::fetch::send(&self.client, request, 64 * 1024, FETCH_TIMEOUT)
            .await
            .map_err(error)?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| error(format!("unexpected token response: {e}")))?;
        Ok((
            parsed.access_token,
            Duration::from_secs(parsed.expires_in.max(1)),
        ))
    }

    /// rskafka's OAUTHBEARER credentials, asking this provider on every new connection.
    pub fn credentials(self: Arc<Self>) -> OauthBearerCredentials {
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
