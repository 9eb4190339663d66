//! Token verification's settings: the audience, the allowed accounts, the key source and the
//! tolerances, declared once for the flag, the variable, the default and the help, and turned
//! into the `AuthConfig` the verifier uses.

use std::path::PathBuf;

use crate::setting::{
    ConfigError, OptionalSetting, Setting, boolean, file, https_url, invalid, list, number,
};

/// Default Google JWKS endpoint for push tokens.
pub(crate) const DEFAULT_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Issuers Google puts in push tokens.
pub(crate) const DEFAULT_ISSUERS: &str = "https://accounts.google.com,accounts.google.com";

/// The push token settings.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Push token (OIDC)")]
pub(crate) struct OidcSettings {
    /// The `aud` the push token must carry [required unless --oidc-disabled]
    #[arg(
        long,
        env = "OIDC_AUDIENCE",
        value_name = "AUDIENCE",
        global = true,
        value_parser = crate::setting::text(),
    )]
    oidc_audience: Option<Setting<String>>,
    /// Comma-separated service-account emails allowed to push [required unless --oidc-allow-any-email]
    #[arg(
        long,
        env = "OIDC_ALLOWED_EMAILS",
        value_name = "EMAIL,...",
        global = true,
        value_parser = list(),
    )]
    oidc_allowed_emails: Option<Setting<Vec<String>>>,
    /// Accept a valid token of any email for the audience (loudly logged)
    #[arg(
        long,
        env = "OIDC_ALLOW_ANY_EMAIL",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        global = true,
        value_parser = boolean(),
    )]
    oidc_allow_any_email: Setting<bool>,
    /// Only behind Cloud Run IAM: accept tokens whose signature Cloud Run removed after verifying it
    #[arg(
        long,
        env = "OIDC_TRUST_CLOUD_RUN_IAM",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        global = true,
        value_parser = boolean(),
    )]
    oidc_trust_cloud_run_iam: Setting<bool>,
    /// Where signing keys come from
    #[arg(
        long,
        env = "OIDC_JWKS_URL",
        value_name = "URL",
        global = true,
        default_value = DEFAULT_JWKS_URL,
        value_parser = https_url(),
    )]
    oidc_jwks_url: Setting<http::Uri>,
    /// Accepted `iss` values
    #[arg(
        long,
        env = "OIDC_ISSUERS",
        value_name = "ISSUER,...",
        global = true,
        default_value = DEFAULT_ISSUERS,
        value_parser = list(),
    )]
    oidc_issuers: Setting<Vec<String>>,
    /// PEM CA bundle for a JWKS endpoint with a private CA (unset: the bundled Mozilla roots)
    #[arg(
        long,
        env = "OIDC_JWKS_CA_LOCATION",
        value_name = "FILE",
        global = true,
        value_parser = file(),
    )]
    oidc_jwks_ca_location: Option<Setting<PathBuf>>,
    /// Clock skew tolerated on exp, nbf and iat
    #[arg(
        long,
        env = "OIDC_LEEWAY_SECONDS",
        value_name = "SECONDS",
        global = true,
        default_value = "30",
        value_parser = number(0, 600),
    )]
    oidc_leeway_seconds: Setting<u64>,
    /// Turn verification off, loudly logged (local use only)
    #[arg(
        long,
        env = "OIDC_DISABLED",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        global = true,
        value_parser = boolean(),
    )]
    oidc_disabled: Setting<bool>,
}

impl OidcSettings {
    /// Whether and how push tokens are verified; the first rule broken when the settings
    /// contradict.
    pub(crate) fn settings(&self) -> Result<AuthConfig, ConfigError> {
        if self.oidc_disabled.value()? {
            // Verification settings next to OIDC_DISABLED=true would be silently ignored: the
            // operator meant one or the other.
            let beside = [
                self.oidc_audience.given_value(),
                self.oidc_allowed_emails.given_value(),
                self.oidc_allow_any_email.given_value(),
                self.oidc_trust_cloud_run_iam.given_value(),
                self.oidc_jwks_url.given_value(),
                self.oidc_issuers.given_value(),
            ];
            if let Some((var, value)) = beside.into_iter().flatten().next() {
                return Err(invalid(
                    var,
                    value,
                    "contradicts OIDC_DISABLED=true (tokens are not verified); unset one of them",
                ));
            }
            return Ok(AuthConfig::Disabled);
        }
        let audience = self.oidc_audience.required(
            "the audience of the push subscription's OIDC token; or OIDC_DISABLED=true",
        )?;
        let jwks_url = self.oidc_jwks_url.value()?;
        let issuers = self.oidc_issuers.value()?;
        if issuers.is_empty() {
            return Err(invalid("OIDC_ISSUERS", "", "no issuer given"));
        }
        let allow_any_email = self.oidc_allow_any_email.value()?;
        let allowed_emails = match (self.oidc_allowed_emails.get()?, allow_any_email) {
            (Some(emails), false) => {
                if emails.is_empty() {
                    return Err(invalid(
                        "OIDC_ALLOWED_EMAILS",
                        self.oidc_allowed_emails.raw(),
                        "no email given",
                    ));
                }
                Some(emails)
            }
            (Some(_), true) => {
                return Err(invalid(
                    "OIDC_ALLOWED_EMAILS",
                    self.oidc_allowed_emails.raw(),
                    "contradicts OIDC_ALLOW_ANY_EMAIL=true; unset one of them",
                ));
            }
            (None, true) => None,
            (None, false) => {
                return Err(ConfigError::Missing {
                    var: "OIDC_ALLOWED_EMAILS",
                    hint: "the push service account email(s): any Google account can mint a token for any audience. \
                           OIDC_ALLOW_ANY_EMAIL=true accepts every account instead",
                });
            }
        };
        let trust_cloud_run_iam = self.oidc_trust_cloud_run_iam.value()?;
        if trust_cloud_run_iam && allowed_emails.is_none() {
            // Without a signature the email is the only thing tying a token to the push account.
            return Err(invalid(
                "OIDC_TRUST_CLOUD_RUN_IAM",
                "true",
                "needs OIDC_ALLOWED_EMAILS (not OIDC_ALLOW_ANY_EMAIL)",
            ));
        }
        Ok(AuthConfig::Oidc(OidcConfig {
            audience,
            allowed_emails,
            trust_cloud_run_iam,
            jwks_url,
            issuers,
            leeway_seconds: self.oidc_leeway_seconds.value()?,
            jwks_ca_location: self.oidc_jwks_ca_location.get()?,
        }))
    }
}

/// OIDC push-token verification settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// `OIDC_AUDIENCE`.
    pub audience: String,
    /// `OIDC_ALLOWED_EMAILS`; `None` only with `OIDC_ALLOW_ANY_EMAIL=true`: any valid token.
    pub allowed_emails: Option<Vec<String>>,
    /// `OIDC_TRUST_CLOUD_RUN_IAM`: accept tokens whose signature Cloud Run removed after
    /// verifying it (claims are still checked).
    pub trust_cloud_run_iam: bool,
    /// `OIDC_JWKS_URL`.
    pub jwks_url: http::Uri,
    /// `OIDC_ISSUERS`.
    pub issuers: Vec<String>,
    /// `OIDC_LEEWAY_SECONDS`: clock skew tolerated on `exp`/`nbf`/`iat`.
    pub leeway_seconds: u64,
    /// `OIDC_JWKS_CA_LOCATION`: PEM CA bundle for a private JWKS endpoint (bundled roots otherwise).
    pub jwks_ca_location: Option<PathBuf>,
}

/// Whether push tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthConfig {
    /// Verify every delivery's token.
    Oidc(OidcConfig),
    /// `OIDC_DISABLED=true`: accept deliveries without a token.
    Disabled,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    fn auth(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        from_vars::<OidcSettings>(vars).settings()
    }

    const BASE: [(&str, &str); 2] = [
        ("OIDC_AUDIENCE", "https://bridge.example"),
        ("OIDC_ALLOWED_EMAILS", "push@p.iam.gserviceaccount.com"),
    ];

    fn with(
        extra: &[(&'static str, &'static str)],
        without: &[&str],
    ) -> Vec<(&'static str, &'static str)> {
        let mut vars: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| !without.contains(k))
            .copied()
            .collect();
        vars.extend_from_slice(extra);
        vars
    }

    fn error_var(vars: &[(&str, &str)]) -> &'static str {
        auth(vars).unwrap_err().var()
    }

    #[test]
    fn defaults_are_google_keys_and_issuers() {
        let AuthConfig::Oidc(oidc) = auth(&BASE).unwrap() else {
            panic!("auth should be on")
        };
        assert_eq!(oidc.jwks_url.to_string(), DEFAULT_JWKS_URL);
        assert_eq!(
            oidc.issuers,
            vec!["https://accounts.google.com", "accounts.google.com"]
        );
        assert_eq!(oidc.leeway_seconds, 30);
        assert_eq!(oidc.jwks_ca_location, None);
        assert!(!oidc.trust_cloud_run_iam);
        assert_eq!(
            error_var(&with(&[("OIDC_ISSUERS", " , ")], &[])),
            "OIDC_ISSUERS"
        );
        assert_eq!(
            error_var(&with(&[("OIDC_LEEWAY_SECONDS", "601")], &[])),
            "OIDC_LEEWAY_SECONDS"
        );
    }

    #[test]
    fn refuses_to_start_without_an_allow_list_unless_any_email_is_explicit() {
        assert_eq!(
            error_var(&with(&[], &["OIDC_ALLOWED_EMAILS"])),
            "OIDC_ALLOWED_EMAILS"
        );
        assert_eq!(
            error_var(&with(
                &[("OIDC_ALLOWED_EMAILS", " , ")],
                &["OIDC_ALLOWED_EMAILS"]
            )),
            "OIDC_ALLOWED_EMAILS"
        );
        let any = auth(&with(
            &[("OIDC_ALLOW_ANY_EMAIL", "true")],
            &["OIDC_ALLOWED_EMAILS"],
        ))
        .unwrap();
        let AuthConfig::Oidc(oidc) = any else {
            panic!("auth on")
        };
        assert_eq!(oidc.allowed_emails, None);
        // Both at once: which did the operator mean?
        assert_eq!(
            error_var(&with(&[("OIDC_ALLOW_ANY_EMAIL", "true")], &[])),
            "OIDC_ALLOWED_EMAILS"
        );
        let listed = auth(&with(&[("OIDC_ALLOW_ANY_EMAIL", "false")], &[])).unwrap();
        assert!(matches!(
            listed,
            AuthConfig::Oidc(OidcConfig {
                allowed_emails: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn trusting_cloud_run_iam_needs_an_allow_list() {
        let c = auth(&with(&[("OIDC_TRUST_CLOUD_RUN_IAM", "true")], &[])).unwrap();
        let AuthConfig::Oidc(oidc) = c else {
            panic!("auth on")
        };
        assert!(oidc.trust_cloud_run_iam);
        assert_eq!(
            error_var(&with(
                &[
                    ("OIDC_TRUST_CLOUD_RUN_IAM", "true"),
                    ("OIDC_ALLOW_ANY_EMAIL", "true")
                ],
                &["OIDC_ALLOWED_EMAILS"]
            )),
            "OIDC_TRUST_CLOUD_RUN_IAM"
        );
        assert_eq!(
            error_var(&with(&[("OIDC_TRUST_CLOUD_RUN_IAM", "yes please")], &[])),
            "OIDC_TRUST_CLOUD_RUN_IAM"
        );
    }

    #[test]
    fn disabled_verification_refuses_verification_settings_beside_it() {
        for var in [
            "OIDC_AUDIENCE",
            "OIDC_ALLOWED_EMAILS",
            "OIDC_ALLOW_ANY_EMAIL",
            "OIDC_TRUST_CLOUD_RUN_IAM",
            "OIDC_JWKS_URL",
            "OIDC_ISSUERS",
        ] {
            let vars = [("OIDC_DISABLED", "true"), (var, "https://x.example")];
            assert_eq!(error_var(&vars), var);
        }
    }

    #[test]
    fn refuses_to_start_without_audience_unless_disabled() {
        let err = auth(&[]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                var: "OIDC_AUDIENCE",
                ..
            }
        ));
        let mut vars = vec![("OIDC_DISABLED", "true")];
        assert_eq!(auth(&vars).unwrap(), AuthConfig::Disabled);
        vars.push(("OIDC_ALLOW_ANY_EMAIL", ""));
        assert_eq!(auth(&vars).unwrap(), AuthConfig::Disabled);
    }
}
