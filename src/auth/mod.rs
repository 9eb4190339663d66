//! Push-token verification: `Authorization: Bearer <JWT>` → verified claims, or why not.
//!
//! The order is the cost order: the cheap checks on the unverified token (`alg`, `kid`, `aud`,
//! `iss`, `exp`, `iat`; [`token`]) come first, so only a well-formed token for this audience
//! may cost a key lookup and an RSA signature check. A token that passed everything is
//! cached until its `exp` (`cache`): Pub/Sub reuses one token for many deliveries.
//!
//! Behind Cloud Run IAM (`OIDC_TRUST_CLOUD_RUN_IAM`) Cloud Run has already verified the
//! signature and forwards the token with its signature replaced by
//! `SIGNATURE_REMOVED_BY_GOOGLE` (Cloud Run troubleshooting, "signature-removed"); then the
//! claims are all that is left to check, and only in the header Cloud Run verified
//! (`credential`). Anywhere else such a token is a forgery.

pub(crate) mod cache;
pub(crate) mod jwks;
pub mod settings;
pub mod token;

use std::sync::{Arc, Mutex};

use jsonwebtoken::Algorithm;

use cache::TokenCache;
use jwks::{JwksCache, JwksError, KeyLookup};
use settings::OidcConfig;
pub use token::Claims;
use token::{ClaimRules, TokenRejection, UnverifiedToken};

/// Tokens kept per verdict; Pub/Sub uses one token per push service account at a time, so
/// this is generous, and the bound keeps floods of distinct tokens from growing memory.
pub(crate) const TOKEN_CACHE_CAPACITY: usize = 1024;

/// Longest email echoed in an error (RFC 5321 caps a path at 256).
const MAX_EMAIL_ECHO: usize = 256;

/// The header a caller of a Cloud Run service may send its ID token in instead of
/// `Authorization`. When both are present Cloud Run checks only this one, removes the signature
/// of its token, and forwards `Authorization` as the caller sent it ("Authenticating
/// service-to-service", Acquire the token: cloud.google.com/run/docs/authenticating/service-to-service#acquire-token;
/// confirmed by the Cloud Run team in GoogleCloudPlatform/cloud-run-proxy#25).
pub(crate) const X_SERVERLESS_AUTHORIZATION: &str = "x-serverless-authorization";

/// Why a delivery's token is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No Authorization header.
    #[error("Authorization header missing")]
    MissingAuthorization,
    /// The header is not `Bearer <token>`.
    #[error("Authorization is not a Bearer token")]
    NotBearer,
    /// The token fails a check that needs no key: shape, algorithm, audience, issuer, time.
    #[error("token rejected: {0}")]
    InvalidToken(#[from] TokenRejection),
    /// The RS256 signature does not verify with the key the token names.
    #[error("token rejected: signature does not verify")]
    BadSignature,
    /// The signature was removed by Cloud Run, but the bridge was not told to trust Cloud Run IAM.
    #[error(
        "token rejected: signature removed by Google; only a service behind Cloud Run IAM with OIDC_TRUST_CLOUD_RUN_IAM=true accepts such tokens"
    )]
    SignatureRemoved,
    /// `Authorization` holds a signature-removed token beside `X-Serverless-Authorization`: Cloud
    /// Run verified the other header, so no one verified this token; it can only be hand-written.
    #[error(
        "Authorization holds a signature-removed token, but Cloud Run verified X-Serverless-Authorization, not it"
    )]
    UnverifiedSignatureRemoved,
    /// The header that carries the credential appears more than once: which one Cloud Run
    /// checked is unknowable, and RFC 9110 (5.3) allows repeating only list-valued fields.
    #[error("more than one {0} header")]
    RepeatedHeader(&'static str),
    /// The token names a key the JWKS does not have.
    #[error("token signed with unknown key id {0:?}")]
    UnknownKey(String),
    /// The token is valid but its email is not allowed (or not verified).
    #[error("token email {email:?} is not allowed")]
    EmailNotAllowed {
        /// The token's email, if any (cut at 256 bytes).
        email: Option<String>,
    },
    /// No key could be fetched at all; not the sender's fault.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(#[from] JwksError),
}

impl AuthError {
    /// Stable machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization => "missing_authorization",
            Self::NotBearer => "not_bearer",
            Self::InvalidToken(_) | Self::BadSignature => "invalid_token",
            Self::SignatureRemoved => "signature_removed",
            Self::UnverifiedSignatureRemoved => "unverified_signature_removed",
            Self::RepeatedHeader(_) => "repeated_authorization",
            Self::UnknownKey(_) => "unknown_key",
            Self::EmailNotAllowed { .. } => "email_not_allowed",
            Self::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// The token of an `Authorization` header value, as the header's bytes.
///
/// Bytes, not text: a token already verified is looked up as it is, so the ~900 bytes of a
/// Google token are not checked character by character on every delivery; a token met for
/// the first time is read as text by [`token::parse`] after `from_utf8`.
pub fn bearer_token(authorization: Option<&[u8]>) -> Result<&[u8], AuthError> {
    let value = authorization
        .ok_or(AuthError::MissingAuthorization)?
        .trim_ascii();
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or(AuthError::NotBearer)?;
    let (scheme, token) = (&value[..space], value[space..].trim_ascii());
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

/// The header value that holds the caller's credential, before anything in it is trusted.
///
/// `Authorization`, unless `trust_cloud_run_iam` and `X-Serverless-Authorization` is present:
/// then Cloud Run checked that header and not `Authorization` ([`X_SERVERLESS_AUTHORIZATION`]),
/// so only its token may pass on the platform's word, and a signature-removed token in
/// `Authorization` beside it is refused. Any other `Authorization` beside it (the caller's own
/// scheme, a signed token) is the application's business and is left alone. A repeated
/// credential header is refused: one copy may be the one Cloud Run checked, the other not.
pub(crate) fn credential(
    headers: &http::HeaderMap,
    trust_cloud_run_iam: bool,
) -> Result<Option<&[u8]>, AuthError> {
    let authorization = single_header(headers, http::header::AUTHORIZATION.as_str())?;
    if !trust_cloud_run_iam {
        return Ok(authorization);
    }
    let Some(serverless) = single_header(headers, X_SERVERLESS_AUTHORIZATION)? else {
        return Ok(authorization);
    };
    let forged_beside = authorization
        .and_then(|value| bearer_token(Some(value)).ok())
        .is_some_and(token::is_signature_removed);
    if forged_beside {
        return Err(AuthError::UnverifiedSignatureRemoved);
    }
    Ok(Some(serverless))
}

fn single_header<'h>(
    headers: &'h http::HeaderMap,
    name: &'static str,
) -> Result<Option<&'h [u8]>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().map(http::HeaderValue::as_bytes);
    if values.next().is_some() {
        return Err(AuthError::RepeatedHeader(name));
    }
    Ok(first)
}

/// The allow-list check Google's samples do after verification: email listed and verified.
/// `None` is `OIDC_ALLOW_ANY_EMAIL=true`: any valid token for the audience.
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
            email: claims.email.as_deref().map(|e| truncate(e, MAX_EMAIL_ECHO)),
        })
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A verifier that cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum VerifierSetupError {
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

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

/// Verifies push tokens against the configured audience, issuers, allow-list and JWKS.
pub struct Verifier {
    config: OidcConfig,
    keys: JwksCache,
    /// Tokens that passed every check.
    accepted: Mutex<TokenCache<Arc<Claims>>>,
    /// Genuine tokens of accounts not on the allow-list (their email): answered 403 again
    /// without another RSA check, and kept apart so they can never evict an accepted token.
    refused: Mutex<TokenCache<Option<String>>>,
}

impl Verifier {
    /// A verifier for `config`; keys are fetched on first use or by [`Verifier::warm_up`].
    pub fn new(config: OidcConfig) -> Result<Self, VerifierSetupError> {
        let url = config.jwks_url.clone();
        let roots = match &config.jwks_ca_location {
            Some(path) => Some(read_roots(path).map_err(VerifierSetupError::JwksCa)?),
            None => None,
        };
        Ok(Self {
            config,
            keys: JwksCache::new(url, roots),
            accepted: Mutex::new(TokenCache::new(TOKEN_CACHE_CAPACITY)),
            refused: Mutex::new(TokenCache::new(TOKEN_CACHE_CAPACITY)),
        })
    }

    /// Fetches the keys ahead of the first delivery.
    pub async fn warm_up(&self) -> Result<(), JwksError> {
        self.keys.refresh().await
    }

    /// The signing keys (readiness checks and tests).
    pub(crate) fn keys(&self) -> &JwksCache {
        &self.keys
    }

    /// Verifies the credential of a request's headers (see [`credential`]); `now` is seconds
    /// since the epoch.
    pub(crate) async fn verify_headers(
        &self,
        headers: &http::HeaderMap,
        now: u64,
    ) -> Result<Arc<Claims>, AuthError> {
        let value = credential(headers, self.config.trust_cloud_run_iam)?;
        self.verify(value, now).await
    }

    /// Verifies one `Bearer` header value; `now` is seconds since the epoch.
    pub async fn verify(
        &self,
        authorization: Option<&[u8]>,
        now: u64,
    ) -> Result<Arc<Claims>, AuthError> {
        let token = bearer_token(authorization)?;
        if let Some(claims) = lock(&self.accepted).get(token, now) {
            return Ok(claims);
        }
        if let Some(email) = lock(&self.refused).get(token, now) {
            return Err(AuthError::EmailNotAllowed { email });
        }
        let text = std::str::from_utf8(token)
            .map_err(|_| TokenRejection::Malformed("not base64url text"))?;
        let parsed = token::parse(text)?;
        let rules = ClaimRules {
            audience: &self.config.audience,
            issuers: &self.config.issuers,
            leeway_seconds: self.config.leeway_seconds,
        };
        token::check_claims(&parsed.claims, &rules, now)?;
        // Boxed: a token seen for the first time may wait on a JWKS fetch, whose state would
        // otherwise be carried (and moved) by every request's future.
        Box::pin(self.check_signature(&parsed)).await?;
        let expires_at = parsed.claims.exp.saturating_add(self.config.leeway_seconds);
        match check_email(&parsed.claims, self.config.allowed_emails.as_deref()) {
            Ok(()) => {
                let claims = Arc::new(parsed.claims);
                lock(&self.accepted).insert(token, Arc::clone(&claims), expires_at, now);
                Ok(claims)
            }
            Err(error) => {
                if let AuthError::EmailNotAllowed { email } = &error {
                    lock(&self.refused).insert(token, email.clone(), expires_at, now);
                }
                Err(error)
            }
        }
    }

    /// The RS256 signature with the JWKS key the token names, or, behind Cloud Run IAM, the
    /// platform's word for it.
    async fn check_signature(&self, token: &UnverifiedToken<'_>) -> Result<(), AuthError> {
        if token.signature_removed() {
            return if self.config.trust_cloud_run_iam {
                Ok(())
            } else {
                Err(AuthError::SignatureRemoved)
            };
        }
        let key = match self.keys.key(&token.kid).await? {
            KeyLookup::Found(key) => key,
            KeyLookup::Unknown => return Err(AuthError::UnknownKey(token.kid.clone())),
        };
        match jsonwebtoken::crypto::verify(
            token.signature,
            token.signing_input.as_bytes(),
            &key,
            Algorithm::RS256,
        ) {
            Ok(true) => Ok(()),
            _ => Err(AuthError::BadSignature),
        }
    }

    /// Accepted tokens currently cached (for metrics and tests).
    pub(crate) fn cached_tokens(&self) -> usize {
        lock(&self.accepted).len()
    }

    /// Token cache `(hits, misses)` (metrics): a hit is a verdict, accepted or refused, found
    /// cached; a miss a token checked in full. A token not among the accepted is looked up
    /// among the refused, so the refused cache's misses are the tokens checked in full.
    pub(crate) fn token_cache_lookups(&self) -> (u64, u64) {
        let (accepted_hits, _) = lock(&self.accepted).lookups();
        let (refused_hits, misses) = lock(&self.refused).lookups();
        (accepted_hits + refused_hits, misses)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_needs_the_bearer_scheme() {
        assert_eq!(
            bearer_token(Some(b"Bearer abc.def.ghi")).unwrap(),
            b"abc.def.ghi"
        );
        assert_eq!(bearer_token(Some(b"bearer  abc")).unwrap(), b"abc");
        assert!(matches!(
            bearer_token(None),
            Err(AuthError::MissingAuthorization)
        ));
        assert!(matches!(
            bearer_token(Some(b"Basic dXNlcjpwYXNz")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            bearer_token(Some(b"Bearer")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            bearer_token(Some(b"Bearer  ")),
            Err(AuthError::NotBearer)
        ));
    }

    fn headers(lines: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, http::HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const STRIPPED: &str = "Bearer h.c.SIGNATURE_REMOVED_BY_GOOGLE";
    const OTHER_STRIPPED: &str = "Bearer h.other.SIGNATURE_REMOVED_BY_GOOGLE";
    const X: &str = X_SERVERLESS_AUTHORIZATION;

    #[test]
    fn without_trusting_cloud_run_only_authorization_is_read() {
        let both = headers(&[(X, OTHER_STRIPPED), ("authorization", STRIPPED)]);
        assert_eq!(credential(&both, false).unwrap(), Some(STRIPPED.as_bytes()));
        assert_eq!(credential(&headers(&[(X, STRIPPED)]), false).unwrap(), None);
        assert_eq!(credential(&headers(&[]), false).unwrap(), None);
    }

    #[test]
    fn behind_cloud_run_x_serverless_authorization_is_the_credential_when_present() {
        let only_authorization = headers(&[("authorization", STRIPPED)]);
        assert_eq!(
            credential(&only_authorization, true).unwrap(),
            Some(STRIPPED.as_bytes())
        );
        let only_x = headers(&[(X, STRIPPED)]);
        assert_eq!(
            credential(&only_x, true).unwrap(),
            Some(STRIPPED.as_bytes())
        );
        for beside in [
            "Basic dXNlcjpwYXNz",
            "Bearer opaque",
            "Bearer h.c.signature",
            "Bearer",
        ] {
            let both = headers(&[(X, STRIPPED), ("authorization", beside)]);
            assert_eq!(
                credential(&both, true).unwrap(),
                Some(STRIPPED.as_bytes()),
                "{beside}"
            );
        }
        assert_eq!(credential(&headers(&[]), true).unwrap(), None);
    }

    #[test]
    fn behind_cloud_run_a_signature_removed_authorization_beside_the_verified_header_is_refused() {
        for x in [OTHER_STRIPPED, STRIPPED, "Bearer h.c.signed"] {
            let both = headers(&[(X, x), ("authorization", STRIPPED)]);
            assert!(matches!(
                credential(&both, true),
                Err(AuthError::UnverifiedSignatureRemoved)
            ));
        }
        let lowercase = headers(&[
            (X, OTHER_STRIPPED),
            ("authorization", "bearer   h.c.SIGNATURE_REMOVED_BY_GOOGLE "),
        ]);
        assert!(credential(&lowercase, true).is_err());
        assert_eq!(
            AuthError::UnverifiedSignatureRemoved.code(),
            "unverified_signature_removed"
        );
    }

    #[test]
    fn a_repeated_credential_header_is_refused() {
        let twice = headers(&[
            ("authorization", STRIPPED),
            ("authorization", OTHER_STRIPPED),
        ]);
        for trust in [false, true] {
            assert!(matches!(
                credential(&twice, trust),
                Err(AuthError::RepeatedHeader("authorization"))
            ));
        }
        let x_twice = headers(&[(X, STRIPPED), (X, OTHER_STRIPPED)]);
        assert!(matches!(
            credential(&x_twice, true),
            Err(AuthError::RepeatedHeader(X_SERVERLESS_AUTHORIZATION))
        ));
        assert_eq!(credential(&x_twice, false).unwrap(), None, "not read");
        assert_eq!(
            AuthError::RepeatedHeader("authorization").code(),
            "repeated_authorization"
        );
    }

    fn claims(email: Option<&str>, verified: Option<bool>) -> Claims {
        Claims {
            exp: 0,
            iat: None,
            nbf: None,
            aud: token::Audience::One("a".into()),
            iss: "accounts.google.com".into(),
            email: email.map(str::to_owned),
            email_verified: verified,
            sub: None,
        }
    }

    #[test]
    fn allow_list_needs_a_listed_and_verified_email() {
        let allowed = vec!["push@p.iam.gserviceaccount.com".to_owned()];
        let ok = claims(Some("push@p.iam.gserviceaccount.com"), Some(true));
        assert!(check_email(&ok, Some(&allowed)).is_ok());
        let upper = claims(Some("PUSH@p.iam.gserviceaccount.com"), Some(true));
        assert!(check_email(&upper, Some(&allowed)).is_ok());
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

    #[test]
    fn refused_email_is_echoed_bounded() {
        // One ASCII byte first, so the cut at 256 bytes falls inside a two-byte character.
        let long = format!("a{}@x", "é".repeat(300));
        let Err(AuthError::EmailNotAllowed { email: Some(echo) }) =
            check_email(&claims(Some(&long), Some(true)), Some(&[]))
        else {
            panic!("refused")
        };
        assert!(echo.len() <= MAX_EMAIL_ECHO && long.starts_with(&echo));
        assert!(
            echo.len() > MAX_EMAIL_ECHO - 4,
            "cut at a char boundary, not emptied"
        );
        let Err(AuthError::EmailNotAllowed { email }) =
            check_email(&claims(Some("other@p.iam"), Some(true)), Some(&[]))
        else {
            panic!("refused")
        };
        assert_eq!(
            email.as_deref(),
            Some("other@p.iam"),
            "a short email is echoed whole"
        );
    }
}
