//! Signing keys from the JWKS endpoint: fetched over HTTPS, cached per Cache-Control, refreshed without blocking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};

/// After a fetch ends, the next may start no sooner than this, so forged kids cannot hammer the endpoint.
pub(crate) const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Keys are kept this long when the response has no usable max-age.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// Bounds on a server-given max-age: not refetched on every request, not kept for days.
const MAX_AGE_RANGE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(86_400));
/// A JWKS fetch that takes longer than this fails; cached keys keep serving.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set is a few KiB; anything larger is not one.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Transport failure or timeout.
    #[error("fetching {url} failed: {reason}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The endpoint answered, but not with a usable key set.
    #[error("{url} did not return a usable JWK set: {reason}")]
    Invalid {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl std::fmt::Debug for KeyLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Found(_) => "Found(..)",
            Self::Unknown => "Unknown",
        })
    }
}

/// A lookup outcome.
#[derive(Clone)]
pub(crate) enum KeyLookup {
    /// The key for the kid.
    Found(Arc<DecodingKey>),
    /// The key set (fresh or stale) has no such kid, even after an allowed refresh.
    Unknown,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<DecodingKey>>,
    expires_at: Option<Instant>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct Inner {
    url: http::Uri,
    client: HttpsClient,
    keys: RwLock<KeySet>,
    /// Held while a fetch runs (single flight); remembers when the last one ended.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches finished so far: a waiter that sees it move while queued shares that fetch.
    fetches: AtomicU64,
    /// A background refresh of stale keys is running (at most one, never one per request).
    background: AtomicBool,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

/// Shared, cheaply cloned cache of the JWKS endpoint's RSA keys.
#[derive(Clone)]
pub(crate) struct JwksCache {
    inner: Arc<Inner>,
}

impl JwksCache {
    /// A cache for `url`; nothing is fetched until [`JwksCache::refresh`] or the first lookup.
    ///
    /// The endpoint's certificate is checked against the Mozilla roots bundled in the binary
    /// (no CA files needed in a distroless image), or against `roots` when given
    /// (`OIDC_JWKS_CA_LOCATION`, for a private JWKS endpoint).
    pub(crate) fn new(url: http::Uri, roots: Option<rustls::RootCertStore>) -> Self {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match roots {
            Some(roots) => builder.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ),
            None => builder.with_webpki_roots(),
        };
        let https = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Self {
            inner: Arc::new(Inner {
                url,
                client,
                keys: RwLock::new(KeySet::default()),
                refresh: tokio::sync::Mutex::new(None),
                fetches: AtomicU64::new(0),
                background: AtomicBool::new(false),
            }),
        }
    }

    /// The key for `kid`.
    ///
    /// Stale keys still serve while one background refresh runs, so a slow or dead endpoint
    /// never holds up a delivery whose key is known. An unknown kid waits for a refresh that
    /// every concurrent waiter shares; fetches are [`MIN_REFRESH_INTERVAL`] apart at least.
    pub(crate) async fn key(&self, kid: &str) -> Result<KeyLookup, JwksError> {
        let (found, stale) = self.cached(kid);
        if let Some(key) = found {
            if stale
                && self
                    .inner
                    .background
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                let cache = self.clone();
                tokio::spawn(async move {
                    let _ = cache.refresh_rate_limited().await;
                    cache.inner.background.store(false, Ordering::Release);
                });
            }
            return Ok(KeyLookup::Found(key));
        }
        let refreshed = self.refresh_rate_limited().await;
        match self.cached(kid).0 {
            Some(key) => Ok(KeyLookup::Found(key)),
            None => match refreshed {
                // Nothing cached at all and the fetch failed: the keys are unavailable, not the token bad.
                Err(e) if self.is_empty() => Err(e),
                _ => Ok(KeyLookup::Unknown),
            },
        }
    }

    fn cached(&self, kid: &str) -> (Option<Arc<DecodingKey>>, bool) {
        let keys = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        let stale = keys.expires_at.is_none_or(|t| Instant::now() >= t);
        (keys.keys.get(kid).cloned(), stale)
    }

    fn is_empty(&self) -> bool {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .is_empty()
    }

    /// Refreshes unless a fetch finished while this caller waited for the lock (its result is
    /// shared) or the last one ended within [`MIN_REFRESH_INTERVAL`].
    async fn refresh_rate_limited(&self) -> Result<(), JwksError> {
        let seen = self.inner.fetches.load(Ordering::Acquire);
        let mut last = self.inner.refresh.lock().await;
        if self.inner.fetches.load(Ordering::Acquire) != seen
            || last.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL)
        {
            return Ok(());
        }
        let result = self.refresh_locked().await;
        *last = Some(Instant::now());
        result
    }

    /// Fetches the key set now (startup warm-up); failures leave cached keys in place.
    pub(crate) async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.inner.refresh.lock().await;
        let result = self.refresh_locked().await;
        *last = Some(Instant::now());
        result
    }

    /// Signing keys held now.
    pub(crate) fn key_count(&self) -> usize {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }

    async fn refresh_locked(&self) -> Result<(), JwksError> {
        let fetched = self.fetch().await;
        self.inner.fetches.fetch_add(1, Ordering::AcqRel);
        match fetched {
            Ok(set) => {
                tracing::debug!(url = %self.inner.url, keys = set.keys.len(), "JWKS refreshed");
                *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = set;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; cached keys stay in use");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let url = self.inner.url.to_string();
        let fetch_error = |reason: String| JwksError::Fetch {
            url: url.clone(),
            reason,
        };
        let request = http::Request::get(self.inner.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fetch_error(e.to_string()))?;
        let (parts, body) =
            crate::fetch::send(&self.inner.client, request, MAX_JWKS_BYTES, FETCH_TIMEOUT)
                .await
                .map_err(fetch_error)?;
        let keys = parse_key_set(&body).map_err(|reason| JwksError::Invalid {
            url: url.clone(),
            reason,
        })?;
        let max_age = parts
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(MAX_AGE_RANGE.0, MAX_AGE_RANGE.1);
        Ok(KeySet {
            keys,
            expires_at: Some(Instant::now() + max_age),
        })
    }
}

/// Whether a JWK may verify RS256 signatures: an RSA key not marked for another use
/// (`use: enc`), another operation or another algorithm.
fn verifies_rs256(jwk: &Jwk) -> bool {
    let common = &jwk.common;
    matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
        && common
            .public_key_use
            .as_ref()
            .is_none_or(|u| *u == PublicKeyUse::Signature)
        && common
            .key_operations
            .as_ref()
            .is_none_or(|ops| ops.contains(&KeyOperations::Verify))
        && common
            .key_algorithm
            .is_none_or(|alg| alg == KeyAlgorithm::RS256)
}

/// The RS256 signing keys of a JWK set by kid; keys of other types or uses, or without a kid,
/// are skipped.
pub(crate) fn parse_key_set(body: &[u8]) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let keys: HashMap<_, _> = set
        .keys
        .iter()
        .filter(|jwk| verifies_rs256(jwk))
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, Arc::new(key)))
        })
        .collect();
    if keys.is_empty() {
        return Err("no RSA signing key with a kid".into());
    }
    Ok(keys)
}

/// `max-age` of a Cache-Control value (`no-store`/`no-cache` count as zero).
pub(crate) fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .map(str::trim)
        .find_map(|directive| {
            if directive.eq_ignore_ascii_case("no-store")
                || directive.eq_ignore_ascii_case("no-cache")
            {
                return Some(Duration::ZERO);
            }
            let (name, value) = directive.split_once('=')?;
            name.trim().eq_ignore_ascii_case("max-age").then(|| {
                value
                    .trim()
                    .trim_matches('"')
                    .parse()
                    .ok()
                    .map(Duration::from_secs)
            })?
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age_from_googles_cache_control() {
        assert_eq!(
            max_age("public, max-age=20616, must-revalidate, no-transform"),
            Some(Duration::from_secs(20_616))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn key_set_keeps_rsa_keys_by_kid() {
        let jwk = include_str!("../../tests/data/keys/key1.jwk.json");
        let body = format!(r#"{{"keys":[{jwk},{{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}}]}}"#);
        let keys = parse_key_set(body.as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["key1"]);
        assert!(parse_key_set(br#"{"keys":[]}"#).is_err());
        // Keys meant for something else never verify a token.
        let jwk: serde_json::Value = serde_json::from_str(jwk).unwrap();
        let with = |field: &str, value: serde_json::Value, kid: &str| {
            let mut k = jwk.clone();
            k[field] = value;
            k["kid"] = kid.into();
            k
        };
        let body = serde_json::json!({"keys": [
            with("use", "enc".into(), "enc"),
            with("key_ops", serde_json::json!(["encrypt"]), "ops"),
            with("alg", "RS512".into(), "rs512"),
            with("use", "sig".into(), "sig"),
            with("key_ops", serde_json::json!(["verify"]), "verify"),
            with("alg", "RS256".into(), "rs256"),
        ]});
        let keys = parse_key_set(body.to_string().as_bytes()).unwrap();
        let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["rs256", "sig", "verify"]);
        assert!(parse_key_set(b"<html>").is_err());
    }
}
