//! A push token taken apart without trusting it: header, claims and the cheap claim checks.
//!
//! Everything here is pure (time is passed in) and runs before any key lookup or RSA
//! operation, so a token that is not for this audience, not from Google's issuer or
//! expired costs a few microseconds, never a signature check.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// The signature part Cloud Run puts in place of the real one after verifying a token itself
/// (Cloud Run troubleshooting, "signature-removed"; ../shared/PUBSUB-PUSH.md, last section).
pub(crate) const SIGNATURE_REMOVED_BY_GOOGLE: &str = "SIGNATURE_REMOVED_BY_GOOGLE";
/// Longest token looked at; a Google ID token is about 1 KiB.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest key id looked up; Google's are 40 hex digits.
pub(crate) const MAX_KID_BYTES: usize = 128;
/// Longest `exp - iat` accepted, seconds (plus the leeway). Google's ID tokens, the push token
/// among them, are valid for one hour from `iat` (Google Cloud, "Token types", ID tokens:
/// cloud.google.com/docs/authentication/token-types; ../shared/PUBSUB-PUSH.md, "The push
/// token"). A token that claims to live longer was not minted by Google as a push token, and
/// would stay usable long after a real one had expired, so it is refused, whoever signed it.
pub(crate) const MAX_TOKEN_LIFETIME_SECONDS: u64 = 3_600;

/// Why a token is refused before its signature is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not RS256 (`none`, HS256 with the public key as secret and friends).
    #[error("algorithm is not RS256")]
    Algorithm,
    /// The header has no usable `kid`.
    #[error("token header has no usable kid")]
    KeyId,
    /// `aud` does not name this service.
    #[error("audience does not match")]
    Audience,
    /// `iss` is not an accepted issuer.
    #[error("issuer is not accepted")]
    Issuer,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// No `iat`: every Google ID token carries one, and without it the lifetime is unknown.
    #[error("token has no iat")]
    NoIssuedAt,
    /// `exp - iat` exceeds `MAX_TOKEN_LIFETIME_SECONDS` plus the leeway.
    #[error("token lifetime exceeds one hour")]
    LifetimeTooLong,
}

/// The JOSE header fields the bridge reads.
#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519, 4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(aud) => aud == wanted,
            Self::Many(auds) => auds.iter().any(|aud| aud == wanted),
        }
    }
}

/// Claims of a Google-signed push token that the bridge reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Audience.
    pub aud: Audience,
    /// Issuer.
    pub iss: String,
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

/// A token split into its parts, claims decoded, nothing verified yet.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    /// The header's key id (bounded by [`MAX_KID_BYTES`]).
    pub(crate) kid: String,
    /// The decoded claims.
    pub(crate) claims: Claims,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    pub(crate) signing_input: &'a str,
    /// The third part as sent.
    pub(crate) signature: &'a str,
}

impl UnverifiedToken<'_> {
    /// Whether Cloud Run replaced the signature after verifying the token itself.
    pub(crate) fn signature_removed(&self) -> bool {
        self.signature == SIGNATURE_REMOVED_BY_GOOGLE
    }
}

/// Whether `token` (as sent, unparsed) ends in the part Cloud Run writes in place of a signature
/// it verified: the same test [`UnverifiedToken::signature_removed`] makes on a parsed token.
pub(crate) fn is_signature_removed(token: &[u8]) -> bool {
    token
        .strip_suffix(SIGNATURE_REMOVED_BY_GOOGLE.as_bytes())
        .is_some_and(|signed| signed.ends_with(b"."))
}

/// Splits and decodes `token`; checks the header's `alg` and `kid`.
pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, TokenRejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenRejection::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed("not three dot-separated parts"));
    };
    let header: Header = decode_part(header)?;
    if header.alg != "RS256" {
        return Err(TokenRejection::Algorithm);
    }
    let kid = match header.kid {
        Some(kid) if !kid.is_empty() && kid.len() <= MAX_KID_BYTES => kid,
        _ => return Err(TokenRejection::KeyId),
    };
    let claims: Claims = decode_part(claims)?;
    let signing_input = &token[..token.len() - signature.len() - 1];
    Ok(UnverifiedToken {
        kid,
        claims,
        signing_input,
        signature,
    })
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenRejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenRejection::Malformed("a part is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| TokenRejection::Malformed("a part is not the expected JSON"))
}

/// What the claims must satisfy, whoever signed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimRules<'a> {
    /// The one audience accepted.
    pub(crate) audience: &'a str,
    /// Accepted issuers.
    pub(crate) issuers: &'a [String],
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    pub(crate) leeway_seconds: u64,
}

/// `aud`, `iss`, `exp`, `nbf` and `iat` at `now` (seconds since the epoch), and the lifetime
/// `exp - iat`; overflow-safe.
pub(crate) fn check_claims(
    claims: &Claims,
    rules: &ClaimRules<'_>,
    now: u64,
) -> Result<(), TokenRejection> {
    if !claims.aud.contains(rules.audience) {
        return Err(TokenRejection::Audience);
    }
    if !rules.issuers.contains(&claims.iss) {
        return Err(TokenRejection::Issuer);
    }
    if claims.exp.saturating_add(rules.leeway_seconds) <= now {
        return Err(TokenRejection::Expired);
    }
    let latest_start = now.saturating_add(rules.leeway_seconds);
    if claims.nbf.is_some_and(|nbf| nbf > latest_start)
        || claims.iat.is_some_and(|iat| iat > latest_start)
    {
        return Err(TokenRejection::NotYetValid);
    }
    let issued_at = claims.iat.ok_or(TokenRejection::NoIssuedAt)?;
    let longest = MAX_TOKEN_LIFETIME_SECONDS.saturating_add(rules.leeway_seconds);
    if claims.exp.saturating_sub(issued_at) > longest {
        return Err(TokenRejection::LifetimeTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn token(header: serde_json::Value, claims: serde_json::Value, signature: &str) -> String {
        format!("{}.{}.{signature}", b64(&header), b64(&claims))
    }

    fn google_claims() -> serde_json::Value {
        serde_json::json!({
            "aud": "https://bridge.example",
            "iss": "https://accounts.google.com",
            "exp": 2_000, "iat": 1_000,
            "email": "push@p.iam.gserviceaccount.com", "email_verified": true,
        })
    }

    fn rs256() -> serde_json::Value {
        serde_json::json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})
    }

    const ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];

    fn rules(issuers: &[String]) -> ClaimRules<'_> {
        ClaimRules {
            audience: "https://bridge.example",
            issuers,
            leeway_seconds: 30,
        }
    }

    fn issuers() -> Vec<String> {
        ISSUERS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_parts_and_keeps_the_signing_input() {
        let t = token(rs256(), google_claims(), "c2ln");
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.kid, "k1");
        assert_eq!(parsed.signature, "c2ln");
        assert_eq!(format!("{}.c2ln", parsed.signing_input), t);
        assert_eq!(parsed.claims.exp, 2_000);
        assert_eq!(parsed.claims.iat, Some(1_000));
        assert_eq!(
            parsed.claims.email.as_deref(),
            Some("push@p.iam.gserviceaccount.com")
        );
        assert!(!parsed.signature_removed());
        let removed = token(rs256(), google_claims(), SIGNATURE_REMOVED_BY_GOOGLE);
        assert!(parse(&removed).unwrap().signature_removed());
    }

    #[test]
    fn refuses_other_algorithms_and_bad_kids_before_anything_else() {
        for alg in ["none", "HS256", "RS512", "ES256", "rs256"] {
            let t = token(
                serde_json::json!({"alg": alg, "kid": "k1"}),
                google_claims(),
                "x",
            );
            assert_eq!(parse(&t).unwrap_err(), TokenRejection::Algorithm, "{alg}");
        }
        for header in [
            serde_json::json!({"alg": "RS256"}),
            serde_json::json!({"alg": "RS256", "kid": ""}),
            serde_json::json!({"alg": "RS256", "kid": "k".repeat(MAX_KID_BYTES + 1)}),
        ] {
            assert_eq!(
                parse(&token(header, google_claims(), "x")).unwrap_err(),
                TokenRejection::KeyId
            );
        }
        let longest = serde_json::json!({"alg": "RS256", "kid": "k".repeat(MAX_KID_BYTES)});
        assert!(parse(&token(longest, google_claims(), "x")).is_ok());
    }

    #[test]
    fn tokens_up_to_the_size_limit_are_read_and_longer_ones_refused_unread() {
        let base = token(rs256(), google_claims(), "");
        let at_limit = format!("{base}{}", "s".repeat(MAX_TOKEN_BYTES - base.len()));
        assert_eq!(at_limit.len(), MAX_TOKEN_BYTES);
        assert!(
            parse(&at_limit).is_ok(),
            "a token of exactly the limit is read"
        );
        let over = format!("{at_limit}s");
        assert_eq!(
            parse(&over).err(),
            Some(TokenRejection::Malformed("token too long"))
        );
        // Google ID tokens are about 1 KiB, but long emails and claims grow them: 8 KiB is read.
        assert_eq!(MAX_TOKEN_BYTES, 8192);
    }

    #[test]
    fn refuses_malformed_tokens() {
        let good = token(rs256(), google_claims(), "x");
        for bad in [
            "".to_owned(),
            "a.b".to_owned(),
            format!("{good}.extra"),
            format!("!!!.{}", good.split_once('.').unwrap().1),
            format!("{}.e30.x", b64(&rs256())),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(
                matches!(parse(&bad), Err(TokenRejection::Malformed(_))),
                "{bad:.40}"
            );
        }
    }

    #[test]
    fn claims_need_audience_issuer_and_time_window() {
        let issuers = issuers();
        let rules = rules(&issuers);
        let claims = |patch: serde_json::Value| -> Claims {
            let mut c = google_claims();
            c.as_object_mut()
                .unwrap()
                .extend(patch.as_object().unwrap().clone());
            serde_json::from_value(c).unwrap()
        };
        let ok = claims(serde_json::json!({}));
        assert_eq!(check_claims(&ok, &rules, 1_500), Ok(()));
        assert_eq!(
            check_claims(
                &claims(serde_json::json!({"aud": ["x", "https://bridge.example"]})),
                &rules,
                1_500
            ),
            Ok(())
        );
        assert_eq!(
            check_claims(
                &claims(serde_json::json!({"aud": "https://other.example"})),
                &rules,
                1_500
            ),
            Err(TokenRejection::Audience)
        );
        assert_eq!(
            check_claims(
                &claims(serde_json::json!({"aud": ["https://other.example"]})),
                &rules,
                1_500
            ),
            Err(TokenRejection::Audience)
        );
        assert_eq!(
            check_claims(
                &claims(serde_json::json!({"iss": "https://evil.example"})),
                &rules,
                1_500
            ),
            Err(TokenRejection::Issuer)
        );
        assert_eq!(
            check_claims(
                &claims(serde_json::json!({"iss": "accounts.google.com"})),
                &rules,
                1_500
            ),
            Ok(())
        );
        // exp with leeway: valid until exp + 30 (exclusive).
        assert_eq!(check_claims(&ok, &rules, 2_029), Ok(()));
        assert_eq!(
            check_claims(&ok, &rules, 2_030),
            Err(TokenRejection::Expired)
        );
        // iat/nbf in the future beyond the leeway.
        assert_eq!(check_claims(&ok, &rules, 970), Ok(()));
        assert_eq!(
            check_claims(&ok, &rules, 969),
            Err(TokenRejection::NotYetValid)
        );
        let nbf = claims(serde_json::json!({"nbf": 1_200}));
        assert_eq!(check_claims(&nbf, &rules, 1_170), Ok(()));
        assert_eq!(
            check_claims(&nbf, &rules, 1_169),
            Err(TokenRejection::NotYetValid)
        );
        // Overflow-safe at the end of time.
        let last_hour = claims(serde_json::json!({"exp": u64::MAX, "iat": u64::MAX - 3_600}));
        assert_eq!(check_claims(&last_hour, &rules, u64::MAX - 10), Ok(()));
        assert_eq!(
            check_claims(&ok, &rules, u64::MAX),
            Err(TokenRejection::Expired)
        );
        let zero_leeway = ClaimRules {
            leeway_seconds: 0,
            ..rules.clone()
        };
        assert_eq!(check_claims(&ok, &zero_leeway, 1_999), Ok(()));
        assert_eq!(
            check_claims(&ok, &zero_leeway, 2_000),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn lifetime_beyond_an_hour_and_the_leeway_is_refused() {
        let issuers = issuers();
        let rules = rules(&issuers);
        let lifetime = |seconds: u64| -> Claims {
            let mut c = google_claims();
            c["iat"] = 1_000.into();
            c["exp"] = (1_000 + seconds).into();
            serde_json::from_value(c).unwrap()
        };
        // Google's own: exactly one hour.
        assert_eq!(check_claims(&lifetime(3_600), &rules, 1_500), Ok(()));
        // The leeway (30 s here) is the margin, inclusive.
        assert_eq!(check_claims(&lifetime(3_630), &rules, 1_500), Ok(()));
        assert_eq!(
            check_claims(&lifetime(3_631), &rules, 1_500),
            Err(TokenRejection::LifetimeTooLong)
        );
        let ten_years = lifetime(10 * 365 * 86_400);
        assert_eq!(
            check_claims(&ten_years, &rules, 1_500),
            Err(TokenRejection::LifetimeTooLong)
        );
        let forever = claims_with_exp_and_iat(u64::MAX, Some(1_000));
        assert_eq!(
            check_claims(&forever, &rules, 1_500),
            Err(TokenRejection::LifetimeTooLong)
        );
        let zero_leeway = ClaimRules {
            leeway_seconds: 0,
            ..rules.clone()
        };
        assert_eq!(check_claims(&lifetime(3_600), &zero_leeway, 1_500), Ok(()));
        assert_eq!(
            check_claims(&lifetime(3_601), &zero_leeway, 1_500),
            Err(TokenRejection::LifetimeTooLong)
        );
        // exp before iat is no lifetime at all (and expired by then), never an underflow.
        assert_eq!(
            check_claims(&claims_with_exp_and_iat(1_000, Some(1_020)), &rules, 1_010),
            Ok(())
        );
        assert_eq!(MAX_TOKEN_LIFETIME_SECONDS, 3_600);
    }

    #[test]
    fn a_token_without_iat_is_refused() {
        let issuers = issuers();
        let rules = rules(&issuers);
        assert_eq!(
            check_claims(&claims_with_exp_and_iat(2_000, None), &rules, 1_500),
            Err(TokenRejection::NoIssuedAt)
        );
        assert_eq!(
            check_claims(&claims_with_exp_and_iat(2_000, Some(1_000)), &rules, 1_500),
            Ok(())
        );
    }

    fn claims_with_exp_and_iat(exp: u64, iat: Option<u64>) -> Claims {
        let mut c = google_claims();
        c["exp"] = exp.into();
        match iat {
            Some(iat) => c["iat"] = iat.into(),
            None => {
                c.as_object_mut().unwrap().remove("iat");
            }
        }
        serde_json::from_value(c).unwrap()
    }

    #[test]
    fn a_signature_removed_token_is_recognised_unparsed() {
        assert!(is_signature_removed(b"h.c.SIGNATURE_REMOVED_BY_GOOGLE"));
        assert!(is_signature_removed(b".SIGNATURE_REMOVED_BY_GOOGLE"));
        assert!(!is_signature_removed(b"SIGNATURE_REMOVED_BY_GOOGLE"));
        assert!(!is_signature_removed(b"h.c.xSIGNATURE_REMOVED_BY_GOOGLE"));
        assert!(!is_signature_removed(b"h.c.SIGNATURE_REMOVED_BY_GOOGLE.x"));
        assert!(!is_signature_removed(b"h.c.signature_removed_by_google"));
        assert!(!is_signature_removed(b""));
        let parsed = token(rs256(), google_claims(), SIGNATURE_REMOVED_BY_GOOGLE);
        assert!(is_signature_removed(parsed.as_bytes()));
        assert!(parse(&parsed).unwrap().signature_removed());
    }
}
