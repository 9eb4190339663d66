//! What every stage's settings are made of: a [`Setting`] that clap never refuses, so that
//! every bad setting is reported at once and named by its environment variable, the parsers
//! that fill it, and the [`ConfigError`] a setting turns into when it cannot be used.
//!
//! A leaf: it knows no stage. Each stage declares its settings as a `clap::Args` struct whose
//! fields are `Setting<T>` (with a default) or `Option<Setting<T>>` (without), and turns them
//! into its own configuration; `config` assembles the stages.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::builder::TypedValueParser;

/// A setting that is missing or cannot be used; always names the variable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is absent or empty.
    #[error("{var} is required ({hint})")]
    Missing {
        /// The variable's name.
        var: &'static str,
        /// What the variable is for.
        hint: &'static str,
    },
    /// A variable holds a value the bridge cannot use.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// The value as given (never a secret: secrets are not validated by content).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More than one setting is wrong: each on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<Self>),
}

impl ConfigError {
    /// One error as itself, more as [`ConfigError::Several`].
    pub(crate) fn from_many(mut errors: Vec<Self>) -> Self {
        match errors.len() {
            1 => errors.remove(0),
            _ => Self::Several(errors),
        }
    }

    /// The variable named (the first one, when several are wrong).
    #[cfg(test)]
    pub(crate) fn var(&self) -> &'static str {
        match self {
            Self::Missing { var, .. } | Self::Invalid { var, .. } => var,
            Self::Several(errors) => errors.first().map_or("", Self::var),
        }
    }

    /// Every single error, in the order the settings are read.
    pub(crate) fn each(&self) -> Vec<&Self> {
        match self {
            Self::Several(errors) => errors.iter().collect(),
            one => vec![one],
        }
    }
}

/// `var=value` cannot be used, because of `reason`.
pub(crate) fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Why a parser refused a value, and the value as the error shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The value as the error line repeats it.
    pub(crate) value: String,
    /// What is wrong with it.
    pub(crate) reason: String,
}

impl Refusal {
    /// `value` refused for `reason`.
    pub(crate) fn new(value: &str, reason: impl Into<String>) -> Self {
        Self {
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// One setting as given: its variable, whether a value was given at all, and the parsed
/// value or why it was refused. Unset or blank, it holds its declared default (parsed like any
/// given value), or nothing when it has none.
#[derive(Clone)]
pub(crate) struct Setting<T> {
    var: &'static str,
    raw: String,
    given: bool,
    parsed: Option<Result<T, Refusal>>,
}

impl<T> std::fmt::Debug for Setting<T> {
    /// The variable only: a setting may hold a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting").field("var", &self.var).finish()
    }
}

impl<T: Clone> Setting<T> {
    /// The environment variable it is read from.
    pub(crate) fn var(&self) -> &'static str {
        self.var
    }

    /// The value as given (trimmed), or the default.
    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether a value was given (a flag or its variable, not blank), rather than defaulted.
    pub(crate) fn is_given(&self) -> bool {
        self.given
    }

    /// The variable and the value as given, when one was: what an error about it names.
    pub(crate) fn given_value(&self) -> Option<(&'static str, &str)> {
        self.given.then_some((self.var, self.raw.as_str()))
    }

    /// The value; `None` when unset without a default.
    pub(crate) fn get(&self) -> Result<Option<T>, ConfigError> {
        match &self.parsed {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value.clone())),
            Some(Err(refusal)) => Err(invalid(self.var, &refusal.value, &refusal.reason)),
        }
    }

    /// The value, which must be set (given, or declared with a default).
    pub(crate) fn required(&self, hint: &'static str) -> Result<T, ConfigError> {
        self.get()?.ok_or(ConfigError::Missing {
            var: self.var,
            hint,
        })
    }

    /// The value of a setting declared with a default.
    pub(crate) fn value(&self) -> Result<T, ConfigError> {
        self.required("it has no default")
    }
}

/// A setting declared without a default is an `Option<Setting<T>>` for clap; the same
/// questions. `config` passes every setting to clap, so it is always `Some`; `None` reads as
/// unset.
pub(crate) trait OptionalSetting<T> {
    /// Whether a value was given.
    fn is_given(&self) -> bool;
    /// The variable and the value as given, when one was.
    fn given_value(&self) -> Option<(&'static str, &str)>;
    /// The value as given (trimmed); empty when unset.
    fn raw(&self) -> &str;
    /// The value; `None` when unset.
    fn get(&self) -> Result<Option<T>, ConfigError>;
    /// The value, which must be given.
    fn required(&self, hint: &'static str) -> Result<T, ConfigError>;
}

impl<T: Clone> OptionalSetting<T> for Option<Setting<T>> {
    fn is_given(&self) -> bool {
        self.as_ref().is_some_and(Setting::is_given)
    }

    fn raw(&self) -> &str {
        self.as_ref().map_or("", Setting::raw)
    }

    fn given_value(&self) -> Option<(&'static str, &str)> {
        self.as_ref().and_then(Setting::given_value)
    }

    fn get(&self) -> Result<Option<T>, ConfigError> {
        self.as_ref().map_or(Ok(None), Setting::get)
    }

    fn required(&self, hint: &'static str) -> Result<T, ConfigError> {
        match self {
            Some(setting) => setting.required(hint),
            None => Err(ConfigError::Missing { var: "", hint }),
        }
    }
}

type ParseFn<T> = dyn Fn(&str) -> Result<T, Refusal> + Send + Sync;

/// clap's value parser for a [`Setting`]: it never fails, so clap reports nothing and the
/// configuration reports every refused value at once, under its variable's name.
#[derive(Clone)]
pub(crate) struct Parser<T>(Arc<ParseFn<T>>);

impl<T> std::fmt::Debug for Parser<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parser")
    }
}

impl<T> Parser<T> {
    /// A parser applying `parse` to the trimmed value.
    pub(crate) fn new(parse: impl Fn(&str) -> Result<T, Refusal> + Send + Sync + 'static) -> Self {
        Self(Arc::new(parse))
    }
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Parser<T> {
    type Value = Setting<T>;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Setting<T>, clap::Error> {
        let var = arg
            .and_then(clap::Arg::get_env)
            .map_or("", |name| intern(&name.to_string_lossy()));
        let value = value.to_string_lossy();
        let given = value.trim();
        // Blank counts as unset: the declared default applies.
        let default = arg
            .and_then(|arg| arg.get_default_values().first())
            .map(|default| default.to_string_lossy().into_owned());
        let raw = match given {
            "" => default.unwrap_or_default(),
            given => given.to_owned(),
        };
        Ok(Setting {
            var,
            given: !given.is_empty(),
            parsed: (!raw.is_empty()).then(|| (self.0)(&raw)),
            raw,
        })
    }
}

/// The settings `S` declares, read through `lookup` by variable name. Each is handed to clap as
/// its flag (blank when unset), so clap reads nothing else: not the process environment, not
/// a default in place of a blank value (the setting's own parser applies that).
pub(crate) fn read<S: clap::Args + clap::FromArgMatches>(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> S {
    let command = S::augment_args(clap::Command::new("settings").no_binary_name(true));
    let args: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| {
            let var = arg.get_env()?.to_str()?;
            let long = arg.get_long()?;
            Some(format!("--{long}={}", lookup(var).unwrap_or_default()))
        })
        .collect();
    let matches = command
        .try_get_matches_from(args)
        .expect("every setting is an option whose parser accepts any text");
    S::from_arg_matches(&matches).expect("the matches come from these settings")
}

/// The settings `S` declares, from `(variable, value)` pairs (unit tests of a stage).
#[cfg(test)]
pub(crate) fn from_vars<S: clap::Args + clap::FromArgMatches>(vars: &[(&str, &str)]) -> S {
    read(&|name| {
        vars.iter()
            .rev()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| (*value).to_owned())
    })
}

/// The variable names, each kept once for the life of the process (they are `&'static` in
/// [`ConfigError`], and clap lends them only for the life of its command).
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Text, as given (trimmed).
pub(crate) fn text() -> Parser<String> {
    Parser::new(|raw| Ok(raw.to_owned()))
}

/// A value of a type with its own parser (`FromStr`, next to the type).
pub(crate) fn parsed<T: std::str::FromStr<Err = &'static str> + Clone + Send + Sync + 'static>()
-> Parser<T> {
    Parser::new(|raw| raw.parse().map_err(|reason| Refusal::new(raw, reason)))
}

/// A whole number in `min..=max`.
pub(crate) fn number(min: u64, max: u64) -> Parser<u64> {
    Parser::new(move |raw| parse_number(raw, min, max))
}

/// A duration in milliseconds (`*_MS`), in `min..=max`.
pub(crate) fn millis(min: u64, max: u64) -> Parser<Duration> {
    Parser::new(move |raw| parse_number(raw, min, max).map(Duration::from_millis))
}

fn parse_number(raw: &str, min: u64, max: u64) -> Result<u64, Refusal> {
    let value: u64 = raw
        .parse()
        .map_err(|_| Refusal::new(raw, "expected a whole number"))?;
    if !(min..=max).contains(&value) {
        return Err(Refusal::new(raw, format!("expected {min}..={max}")));
    }
    Ok(value)
}

/// A strict boolean: anything but true/false (1/0, yes/no, in any case) is an error, so a typo
/// never flips a setting silently.
pub(crate) fn boolean() -> Parser<bool> {
    Parser::new(|raw| match raw.to_ascii_lowercase().as_str() {
        "false" | "0" | "no" => Ok(false),
        "true" | "1" | "yes" => Ok(true),
        other => Err(Refusal::new(other, "expected true or false")),
    })
}

/// A comma-separated list (blank entries dropped).
pub(crate) fn list() -> Parser<Vec<String>> {
    Parser::new(|raw| Ok(split_list(raw)))
}

/// The path of a file that exists.
pub(crate) fn file() -> Parser<PathBuf> {
    Parser::new(|raw| {
        if std::path::Path::new(raw).is_file() {
            Ok(PathBuf::from(raw))
        } else {
            Err(Refusal::new(raw, "no such file"))
        }
    })
}

/// An https URL (http only on loopback), for keys and secrets.
pub(crate) fn https_url() -> Parser<http::Uri> {
    Parser::new(require_https)
}

/// Keys and secrets come over https; plain http only on loopback (tests, local stand-ins).
pub(crate) fn require_https(url: &str) -> Result<http::Uri, Refusal> {
    let uri: http::Uri = url.parse().map_err(|_| Refusal::new(url, "not a URL"))?;
    let loopback = matches!(
        uri.host(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(Refusal::new(url, "must be https (http only on loopback)")),
    }
}

/// `raw` split on commas, entries trimmed, blank ones dropped.
pub(crate) fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One error or several, as a list.
pub(crate) trait IntoErrors {
    /// The errors, in order.
    fn into_errors(self) -> Vec<ConfigError>;
}

impl IntoErrors for ConfigError {
    fn into_errors(self) -> Vec<ConfigError> {
        vec![self]
    }
}

impl IntoErrors for Vec<ConfigError> {
    fn into_errors(self) -> Vec<ConfigError> {
        self
    }
}

/// Binds each named `Result` to its value, or returns `Err` with every error among them at
/// once (a `Vec<ConfigError>`), so one run reports every bad setting.
macro_rules! all_or_errors {
    ($($name:ident),* $(,)?) => {
        let mut errors: Vec<$crate::setting::ConfigError> = Vec::new();
        $(
            let $name = match $name {
                Ok(value) => Some(value),
                Err(error) => {
                    errors.extend($crate::setting::IntoErrors::into_errors(error));
                    None
                }
            };
        )*
        $(
            let Some($name) = $name else {
                return Err(errors);
            };
        )*
    };
}
pub(crate) use all_or_errors;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_the_range_they_expect() {
        assert_eq!(parse_number("7", 1, 9), Ok(7));
        assert_eq!(parse_number("1", 1, 9), Ok(1));
        assert_eq!(parse_number("9", 1, 9), Ok(9));
        assert_eq!(
            parse_number("10", 1, 9),
            Err(Refusal::new("10", "expected 1..=9"))
        );
        assert_eq!(
            parse_number("0", 1, 9),
            Err(Refusal::new("0", "expected 1..=9"))
        );
        assert_eq!(
            parse_number("-1", 0, 9),
            Err(Refusal::new("-1", "expected a whole number"))
        );
    }

    #[test]
    fn lists_drop_blank_entries() {
        assert_eq!(split_list(" a, ,b ,"), ["a", "b"]);
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn https_is_required_except_on_loopback() {
        assert!(require_https("https://keys.example/certs").is_ok());
        assert!(require_https("http://127.0.0.1:8080/certs").is_ok());
        assert!(require_https("http://localhost/certs").is_ok());
        assert!(require_https("http://[::1]:1/certs").is_ok());
        assert_eq!(
            require_https("http://keys.example/certs")
                .unwrap_err()
                .reason,
            "must be https (http only on loopback)"
        );
        assert_eq!(
            require_https("ftp://127.0.0.1/x").unwrap_err().reason,
            "must be https (http only on loopback)"
        );
        assert_eq!(require_https("").unwrap_err().reason, "not a URL");
    }

    #[test]
    fn one_error_stands_alone_and_several_are_listed() {
        let one = invalid("A", "x", "bad");
        assert_eq!(ConfigError::from_many(vec![one.clone()]), one);
        let two = ConfigError::from_many(vec![one.clone(), invalid("B", "y", "worse")]);
        assert_eq!(two.var(), "A");
        assert_eq!(two.each().len(), 2);
        assert_eq!(
            two.to_string(),
            "A=\"x\" is invalid: bad\nB=\"y\" is invalid: worse"
        );
        let name = String::from("A");
        assert!(
            std::ptr::eq(intern("A"), intern(name.as_str())),
            "kept once"
        );
    }
}
