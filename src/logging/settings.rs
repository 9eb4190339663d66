//! Logging's settings, declared once for the flag, the variable, the default and the help.

use super::DEFAULT_FILTER;
use crate::setting::{ConfigError, OptionalSetting, Setting, parsed, text};

/// How and what the bridge logs.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Logging")]
pub(crate) struct LoggingSettings {
    /// `json` (Cloud Logging fields) or `text` (unset: json on Cloud Run, where K_SERVICE is set, else text)
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "FORMAT",
        global = true,
        value_parser = parsed::<LogFormat>(),
    )]
    log_format: Option<Setting<LogFormat>>,
    /// Log filter
    #[arg(
        long,
        env = "RUST_LOG",
        value_name = "FILTER",
        global = true,
        default_value = DEFAULT_FILTER,
        value_parser = text(),
    )]
    log_filter: Setting<String>,
    /// Project id for Cloud Logging trace names (projects/P/traces/T) (unset: GCP_PROJECT)
    #[arg(
        long,
        env = "GOOGLE_CLOUD_PROJECT",
        value_name = "PROJECT",
        global = true,
        value_parser = text(),
    )]
    google_cloud_project: Option<Setting<String>>,
}

/// What the logging settings make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggingConfig {
    /// `LOG_FORMAT`.
    pub(crate) format: LogFormat,
    /// `RUST_LOG`.
    pub(crate) filter: String,
    /// `GOOGLE_CLOUD_PROJECT`.
    pub(crate) project: Option<String>,
}

impl LoggingSettings {
    /// The logging configuration; `on_cloud_run` picks the default format.
    pub(crate) fn settings(&self, on_cloud_run: bool) -> Result<LoggingConfig, ConfigError> {
        let default = if on_cloud_run {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
        Ok(LoggingConfig {
            format: self.log_format.get()?.unwrap_or(default),
            filter: self.log_filter.value()?,
            project: self.google_cloud_project.get()?,
        })
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// Cloud Logging structured JSON lines.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = &'static str;

    /// `json` or `text`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            _ => Err("expected json or text"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    #[test]
    fn formats_parse_exactly_and_the_default_follows_the_platform() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("JSON".parse::<LogFormat>().is_err());
        let unset: LoggingSettings = from_vars(&[]);
        assert_eq!(unset.settings(false).unwrap().format, LogFormat::Text);
        assert_eq!(unset.settings(true).unwrap().format, LogFormat::Json);
        assert_eq!(unset.settings(false).unwrap().filter, DEFAULT_FILTER);
        let given: LoggingSettings = from_vars(&[("LOG_FORMAT", "text"), ("RUST_LOG", "debug")]);
        let config = given.settings(true).unwrap();
        assert_eq!(
            (config.format, config.filter.as_str()),
            (LogFormat::Text, "debug")
        );
        let wrong: LoggingSettings = from_vars(&[("LOG_FORMAT", "xml")]);
        assert_eq!(wrong.settings(false).unwrap_err().var(), "LOG_FORMAT");
    }
}
