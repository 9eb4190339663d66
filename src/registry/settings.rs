//! The schema registry's settings, declared once for the flag, the variable and the help, and
//! turned into the [`SchemaRegistryConfig`] the registry client uses.

use crate::setting::{ConfigError, OptionalSetting, Setting, text};

/// The schema registry settings.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Schema registry")]
pub(crate) struct RegistrySettings {
    /// With avro or pubsub-schema: register the schema under <topic>-value and write the Confluent wire format
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_URL",
        value_name = "URL",
        global = true,
        value_parser = text(),
    )]
    schema_registry_url: Option<Setting<String>>,
    /// Basic auth user (Confluent Cloud: the API key)
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_USERNAME",
        value_name = "USER",
        global = true,
        value_parser = text(),
    )]
    schema_registry_username: Option<Setting<String>>,
    /// Basic auth password (never logged)
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        global = true,
        value_parser = text(),
    )]
    schema_registry_password: Option<Setting<String>>,
}

impl RegistrySettings {
    /// The registry URL's variable and value, when one is given.
    pub(crate) fn url(&self) -> Option<(&'static str, &str)> {
        self.schema_registry_url.given_value()
    }

    /// The registry to register schemas with, if any; the first rule broken when the settings
    /// contradict.
    pub(crate) fn settings(&self) -> Result<Option<SchemaRegistryConfig>, ConfigError> {
        let Some(url) = self.schema_registry_url.get()? else {
            return Ok(None);
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(crate::setting::invalid(
                "SCHEMA_REGISTRY_URL",
                &url,
                "expected an http(s) URL",
            ));
        }
        let credentials = match (
            self.schema_registry_username.get()?,
            self.schema_registry_password.get()?,
        ) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: "SCHEMA_REGISTRY_PASSWORD",
                    hint: "given together with SCHEMA_REGISTRY_USERNAME",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: "SCHEMA_REGISTRY_USERNAME",
                    hint: "given together with SCHEMA_REGISTRY_PASSWORD",
                });
            }
        };
        Ok(Some(SchemaRegistryConfig { url, credentials }))
    }
}

/// Confluent Schema Registry settings (Avro values only).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SchemaRegistryConfig {
    /// Base URL.
    pub(crate) url: String,
    /// Basic-auth user and password (Confluent Cloud: API key and secret).
    pub(crate) credentials: Option<(String, String)>,
}

impl SchemaRegistryConfig {
    /// The basic-auth `Authorization` value, when credentials are set.
    pub(crate) fn authorization(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|(user, password)| super::basic_authorization(user, password))
    }
}

impl std::fmt::Debug for SchemaRegistryConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}
