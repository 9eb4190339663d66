//! The Schema API's settings, declared once for the flag, the variable, the default and the
//! help, and turned into the [`SchemaApiConfig`] the schema client uses.

use crate::setting::{ConfigError, Setting, https_url};

/// Google's Pub/Sub API.
pub(crate) const DEFAULT_API_URL: &str = "https://pubsub.googleapis.com";

/// Where schema revisions are read.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Pub/Sub schemas")]
pub(crate) struct PubsubSchemaSettings {
    /// With pubsub-schema: where schema revisions are read (https; http only on loopback, sent no token)
    #[arg(
        long,
        env = "PUBSUB_API_URL",
        value_name = "URL",
        global = true,
        default_value = DEFAULT_API_URL,
        value_parser = https_url(),
    )]
    pubsub_api_url: Setting<http::Uri>,
}

impl PubsubSchemaSettings {
    /// The Schema API's base URL and whether it is sent the access token.
    pub(crate) fn settings(&self) -> Result<SchemaApiConfig, ConfigError> {
        let url = self.pubsub_api_url.value()?;
        Ok(SchemaApiConfig::new(&url))
    }
}

/// Where schema revisions are read, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaApiConfig {
    /// The base URL without a trailing slash.
    pub(crate) url: String,
    /// Whether requests carry the runtime service account's access token: over https only.
    /// The setting allows plain http only on loopback, which is the emulator (or a local
    /// stand-in): it needs no token, and a token must not travel unencrypted.
    pub(crate) send_token: bool,
}

impl SchemaApiConfig {
    /// The configuration for a URL the setting accepted.
    pub(crate) fn new(url: &http::Uri) -> Self {
        Self {
            url: url.to_string().trim_end_matches('/').to_owned(),
            send_token: url.scheme_str() == Some("https"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    fn config(url: Option<&str>) -> Result<SchemaApiConfig, ConfigError> {
        let vars: Vec<(&str, &str)> = url.map(|u| ("PUBSUB_API_URL", u)).into_iter().collect();
        from_vars::<PubsubSchemaSettings>(&vars).settings()
    }

    #[test]
    fn defaults_to_googles_api_with_a_token() {
        assert_eq!(
            config(None).unwrap(),
            SchemaApiConfig {
                url: "https://pubsub.googleapis.com".into(),
                send_token: true
            }
        );
    }

    #[test]
    fn a_loopback_http_url_is_the_emulator_and_gets_no_token() {
        assert_eq!(
            config(Some("http://127.0.0.1:8085/")).unwrap(),
            SchemaApiConfig {
                url: "http://127.0.0.1:8085".into(),
                send_token: false
            }
        );
        assert!(config(Some("https://pubsub.example/")).unwrap().send_token);
    }

    #[test]
    fn plain_http_elsewhere_is_refused_naming_the_variable() {
        let error = config(Some("http://pubsub.example")).unwrap_err();
        assert_eq!(error.var(), "PUBSUB_API_URL");
        assert!(
            error.to_string().contains("http only on loopback"),
            "{error}"
        );
        assert_eq!(
            config(Some("not a url")).unwrap_err().var(),
            "PUBSUB_API_URL"
        );
    }
}
