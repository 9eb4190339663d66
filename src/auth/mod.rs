//! Push-token verification: `Authorization: Bearer <JWT>` → verified claims, or why not.
//!
//! Only RS256 with a key from the JWKS is accepted. A verified token is cached until its
//! `exp`: Pub/Sub reuses one token for many deliveries, so the RSA check runs once per token.

pub mod jwks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::config::OidcConfig;
use jwks::{JwksCache, JwksError, KeyLookup};

/// Verified tokens kept at most; Pub/Sub uses one token per push service account at a time,
/// so this is generous, and the bound keeps forged-token floods from growing memory.
pub const TOKEN_CACHE_CAPACITY: usize = 1024;

/// Claims of a Google-signed push token that the bridge reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// The push service account.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether Google verified the email.
    #[serde(default)]
    pub email_verified: Option<bool>,
    /// Subject.
    #[serde(default)]
    pub sub: Option<String>,
}

/// Why a delivery's token is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No Authorization header.
    #[error("Authorization header missing")]
    MissingAuthorization,
    /// The header is not `Bearer <token>`.
    #[error("Authorization is not a Bearer token")]
    NotBearer,
    /// The token is not a JWT or fails signature, expiry, audience or issuer checks.
    #[error("token rejected: {0}")]
    InvalidToken(String),
    /// The token names a key the JWKS does not have.
    #[error("token signed with unknown key id {0:?}")]
    UnknownKey(String),
    /// The token is valid but its email is not allowed (or not verified).
    #[error("token email {email:?} is not allowed")]
    EmailNotAllowed {
        /// The token's email, if any.
        email: Option<String>,
    },
    /// No key could be fetched at all; not the sender's fault.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(#[from] JwksError),
}

impl AuthError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization => "missing_authorization",
            Self::NotBearer => "not_bearer",
            Self::InvalidToken(_) => "invalid_token",
            Self::UnknownKey(_) => "unknown_key",
            Self::EmailNotAllowed { .. } => "email_not_allowed",
            Self::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// The token of an `Authorization` header value.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::MissingAuthorization)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token.trim())
}

/// The allow-list check Google's samples do after verification: email listed and verified.
pub fn check_email(claims: &Claims, allowed: Option<&[String]>) -> Result<(), AuthError> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    let listed = claims
        .email
        .as_ref()
        .is_some_and(|email| allowed.iter().any(|a| a.eq_ignore_ascii_case(email)));
    if listed && claims.email_verified == Some(true) {
        Ok(())
    } else {
        Err(AuthError::EmailNotAllowed {
            email: claims.email.clone(),
        })
    }
}

/// A verifier that cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum VerifierSetupError {
    /// `OIDC_JWKS_URL` does not parse.
    #[error("OIDC_JWKS_URL is not a valid URL: {0}")]
    JwksUrl(String),
    /// `OIDC_JWKS_CA_LOCATION` holds no usable certificate.
    #[error("OIDC_JWKS_CA_LOCATION: {0}")]
    JwksCa(String),
}

fn read_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(roots)
}

/// Verifies push tokens against the configured audience, issuers and JWKS.
pub struct Verifier {
    config: OidcConfig,
    validation: Validation,
    keys: JwksCache,
    verified: Mutex<HashMap<Arc<str>, Arc<Claims>>>,
}

impl Verifier {
    /// A verifier for `config`; keys are fetched on first use or by [`Verifier::warm_up`].
    pub fn new(config: OidcConfig) -> Result<Self, VerifierSetupError> {
        let url: http::Uri = config
            .jwks_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| VerifierSetupError::JwksUrl(e.to_string()))?;
        let roots = match &config.jwks_ca_location {
            Some(path) => Some(read_roots(path).map_err(VerifierSetupError::JwksCa)?),
            None => None,
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&config.issuers);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.leeway = config.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Ok(Verifier {
            config,
            validation,
            keys: JwksCache::new(url, roots),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Fetches the keys ahead of the first delivery.
    pub async fn warm_up(&self) -> Result<(), JwksError> {
        self.keys.refresh().await
    }

    /// Verifies the `Authorization` header value; `now` is seconds since the epoch.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        now: u64,
    ) -> Result<Arc<Claims>, AuthError> {
        let token = bearer_token(authorization)?;
        let claims = match self.cached(token, now) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token).await?);
                self.remember(token, Arc::clone(&claims), now);
                claims
            }
        };
        check_email(&claims, self.config.allowed_emails.as_deref())?;
        Ok(claims)
    }

    async fn verify_signature(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        // Checked before any key lookup: `none`, HS256 with the public key as secret and
        // friends never reach a verifier.
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::InvalidToken(format!(
                "algorithm {:?} is not RS256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::InvalidToken("header has no kid".into()))?;
        let key = match self.keys.key(&kid).await? {
            KeyLookup::Found(key) => key,
            KeyLookup::Unknown => return Err(AuthError::UnknownKey(kid)),
        };
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))
    }

    fn cached(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let claims = cache.get(token)?;
        (claims.exp + self.config.leeway_seconds > now).then(|| Arc::clone(claims))
    }

    fn remember(&self, token: &str, claims: Arc<Claims>, now: u64) {
        let leeway = self.config.leeway_seconds;
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TOKEN_CACHE_CAPACITY {
            cache.retain(|_, c| c.exp + leeway > now);
            if cache.len() >= TOKEN_CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(Arc::from(token), claims);
    }

    /// Verified tokens currently cached (for metrics and tests).
    pub fn cached_tokens(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_needs_the_bearer_scheme() {
        assert_eq!(
            bearer_token(Some("Bearer abc.def.ghi")).unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(bearer_token(Some("bearer  abc")).unwrap(), "abc");
        assert!(matches!(
            bearer_token(None),
            Err(AuthError::MissingAuthorization)
        ));
        assert!(matches!(
            bearer_token(Some("Basic dXNlcjpwYXNz")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            bearer_token(Some("Bearer")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            bearer_token(Some("Bearer  ")),
            Err(AuthError::NotBearer)
        ));
    }

    #[test]
    fn allow_list_needs_a_listed_and_verified_email() {
        let allowed = vec!["push@p.iam.gserviceaccount.com".to_owned()];
        let claims = |email: Option<&str>, verified: Option<bool>| Claims {
            exp: 0,
            email: email.map(str::to_owned),
            email_verified: verified,
            sub: None,
        };
        let ok = claims(Some("push@p.iam.gserviceaccount.com"), Some(true));
        assert!(check_email(&ok, Some(&allowed)).is_ok());
        assert!(check_email(&ok, None).is_ok());
        for bad in [
            claims(Some("other@p.iam.gserviceaccount.com"), Some(true)),
            claims(Some("push@p.iam.gserviceaccount.com"), Some(false)),
            claims(Some("push@p.iam.gserviceaccount.com"), None),
            claims(None, Some(true)),
        ] {
            assert!(matches!(
                check_email(&bad, Some(&allowed)),
                Err(AuthError::EmailNotAllowed { .. })
            ));
        }
    }
}
