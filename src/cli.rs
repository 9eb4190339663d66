//! The command line: the commands (`serve`, `check`, `replay`), `--help` and `--version`, and every
//! stage's settings (`Settings`) as flags and their environment variables (clap's `env`).
//!
//! Here clap only gathers the values as given (a flag wins over its variable);
//! `Config::from_lookup_in_container` parses them through the same declarations, so the
//! flag and the variable can never disagree about what a value means, and every error is
//! reported at once naming its variable.

use std::collections::HashMap;
use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigError, Settings};

/// Google Cloud Pub/Sub push endpoint that produces every verified delivery to Apache Kafka
/// with acks=all, answering 2xx only after Kafka acknowledged it.
///
/// Every setting is a flag and an environment variable (the variable's name is shown as
/// [env: NAME=]); a flag given on the command line wins over its variable.
#[derive(Debug, Parser)]
#[command(name = "pubsub-kafka-bridge", version, max_term_width = 100)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// The settings.
    #[command(flatten)]
    pub(crate) settings: Settings,
}

/// The commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve push deliveries on PORT (the default).
    Serve,
    /// Check the settings against the real Kafka cluster (TLS/SASL, every configured topic),
    /// the JWKS endpoint and the schema registry; one line per check, exit 0 only if all pass.
    Check,
    /// Run the dead letters of KAFKA_DLQ_TOPIC through the pipeline with the current settings:
    /// write what succeeds now, leave what still fails; exit 0 when read to the end
    /// (docs/replay.md).
    Replay(crate::replay::ReplayArgs),
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// The command (serve when none is named).
    pub(crate) command: Command,
    /// Every setting given, by its environment variable's name, flag or variable alike.
    pub(crate) settings: HashMap<String, String>,
}

/// Parses `args` (the program name first), reading each setting's variable through clap.
///
/// `Err` is clap's own answer: help, version, or a usage error, to print and exit with.
pub(crate) fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    // Global settings are propagated to the subcommand's matches: read them where they end up.
    let leaf = matches.subcommand().map_or(&matches, |(_, sub)| sub);
    let settings = command
        .get_arguments()
        .filter_map(|arg| {
            let var = arg.get_env()?.to_str()?;
            let id = arg.get_id().as_str();
            // What was given, not the defaults clap filled in: those the configuration applies.
            if !matches!(
                leaf.value_source(id)?,
                ValueSource::CommandLine | ValueSource::EnvVariable
            ) {
                return None;
            }
            let value = leaf.get_raw(id)?.next()?;
            Some((var.to_owned(), value.to_string_lossy().into_owned()))
        })
        .collect();
    Ok(Invocation {
        command: cli.command.unwrap_or(Command::Serve),
        settings,
    })
}

/// The environment variables the command line knows, in `--help` order.
pub fn setting_variables() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|arg| Some(arg.get_env()?.to_str()?.to_owned()))
        .collect()
}

impl Invocation {
    /// The configuration these settings make, for a container with `memory_limit` bytes.
    ///
    /// Names that are not settings (`K_SERVICE`, which says the process runs on Cloud Run)
    /// are read from the process environment.
    #[allow(
        clippy::disallowed_methods,
        reason = "the one read of the environment beside clap's, for names that are not settings"
    )]
    pub(crate) fn config(&self, memory_limit: Option<u64>) -> Result<Config, ConfigError> {
        Config::from_lookup_in_container(
            |name| {
                self.settings
                    .get(name)
                    .cloned()
                    .or_else(|| std::env::var(name).ok())
            },
            memory_limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_flag_names_the_same_setting_as_its_variable() {
        let invocation = parse([
            "pubsub-kafka-bridge",
            "check",
            "--kafka-topic",
            "from-flag",
            "--oidc-disabled",
        ])
        .unwrap();
        assert_eq!(invocation.command, Command::Check);
        assert_eq!(invocation.settings["KAFKA_TOPIC"], "from-flag");
        assert_eq!(invocation.settings["OIDC_DISABLED"], "true");
        let invocation = parse(["pubsub-kafka-bridge", "--port=9000"]).unwrap();
        assert_eq!(invocation.command, Command::Serve);
        assert_eq!(invocation.settings["PORT"], "9000");
    }

    #[test]
    fn every_setting_has_a_variable_and_a_help_text() {
        let command = Cli::command();
        for arg in command.get_arguments() {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            assert!(arg.get_env().is_some(), "{} has no variable", arg.get_id());
            assert!(arg.get_help().is_some(), "{} has no help", arg.get_id());
        }
        let variables = setting_variables();
        let mut unique = variables.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), variables.len(), "a variable named twice");
    }

    #[test]
    fn help_shows_the_defaults_of_the_declarations() {
        let mut command = Cli::command();
        let help = command.render_help().to_string();
        for expected in [
            "[env: KAFKA_PRODUCE_TIMEOUT_MS=] [default: 10000]",
            "[env: PORT=] [default: 8080]",
            "[env: KAFKA_KEY=] [default: ordering_key]",
        ] {
            assert!(help.contains(expected), "--help lacks {expected:?}");
        }
        for arg in command.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                !help.contains("[default:"),
                "{help:?} states its default by hand"
            );
        }
    }
}
