//! Routing rule settings: the rules inline (`ROUTES`) or in a file (`ROUTES_FILE`), declared
//! once for the flag, the variable, the default and the help.

use std::path::PathBuf;
use std::sync::Arc;

use super::Routes;
use crate::setting::{ConfigError, OptionalSetting, Setting, file, invalid, text};

/// The routing rules.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Routing")]
pub(crate) struct RoutesSettings {
    /// Routing rules: a JSON array of {"when": CEL, "topic": NAME | "drop": true, "key", "headers", "timestamp"} (docs/routing.md) (unset: none)
    #[arg(long, env = "ROUTES", value_name = "JSON", global = true, value_parser = text())]
    routes: Option<Setting<String>>,
    /// The routing rules read from this file instead (unset: none)
    #[arg(
        long,
        env = "ROUTES_FILE",
        value_name = "PATH",
        global = true,
        value_parser = file(),
    )]
    routes_file: Option<Setting<PathBuf>>,
}

impl RoutesSettings {
    /// The compiled rules, if any are set; every rule's errors at once, each naming its variable.
    pub(crate) fn settings(&self) -> Result<Option<Arc<Routes>>, Vec<ConfigError>> {
        let inline = self.routes.get().map_err(|e| vec![e])?;
        let from_file = self.routes_file.get().map_err(|e| vec![e])?;
        let (var, source) = match (inline, from_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(path)) => {
                return Err(vec![invalid(
                    "ROUTES_FILE",
                    &path.display().to_string(),
                    "set either ROUTES or ROUTES_FILE",
                )]);
            }
            (Some(source), None) => ("ROUTES", source),
            (None, Some(path)) => {
                let source = std::fs::read_to_string(&path).map_err(|e| {
                    vec![invalid(
                        "ROUTES_FILE",
                        &path.display().to_string(),
                        &format!("cannot be read: {e}"),
                    )]
                })?;
                ("ROUTES_FILE", source)
            }
        };
        // Each error shows the file, or the rule itself: the whole list is too long to repeat.
        let shown = |error: &super::RuleError| match var {
            "ROUTES_FILE" => self.routes_file.raw().to_owned(),
            _ if error.written.is_empty() => crate::echo::bounded_echo(&source),
            _ => crate::echo::bounded_echo(&error.written),
        };
        Routes::compile(&source)
            .map(|routes| Some(Arc::new(routes)))
            .map_err(|errors| {
                errors
                    .iter()
                    .map(|error| invalid(var, &shown(error), &error.to_string()))
                    .collect()
            })
    }

    /// The variable that set the rules, when one did (cross-stage rules name it).
    pub(crate) fn given(&self) -> Option<(&'static str, &str)> {
        self.routes
            .given_value()
            .or_else(|| self.routes_file.given_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    fn routes(vars: &[(&str, &str)]) -> Result<Option<Arc<Routes>>, Vec<ConfigError>> {
        from_vars::<RoutesSettings>(vars).settings()
    }

    #[test]
    fn unset_means_no_rules() {
        assert_eq!(routes(&[]).unwrap(), None);
        assert_eq!(from_vars::<RoutesSettings>(&[]).given(), None);
    }

    #[test]
    fn inline_rules_compile() {
        let rules = routes(&[("ROUTES", r#"[{"topic": "t"}]"#)])
            .unwrap()
            .unwrap();
        assert_eq!(rules.topics(), ["t"]);
    }

    #[test]
    fn rules_from_a_file_compile_and_both_at_once_are_refused() {
        let path = std::env::temp_dir().join(format!("routes-{}.json", std::process::id()));
        std::fs::write(&path, r#"[{"when": "true", "topic": "from-file"}]"#).unwrap();
        let path_text = path.display().to_string();
        let rules = routes(&[("ROUTES_FILE", &path_text)]).unwrap().unwrap();
        assert_eq!(rules.topics(), ["from-file"]);
        let both = routes(&[("ROUTES_FILE", &path_text), ("ROUTES", "[]")]).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(both[0].var(), "ROUTES_FILE");
        assert!(both[0].to_string().contains("either ROUTES or ROUTES_FILE"));
        let missing = routes(&[("ROUTES_FILE", "/no/such/routes.json")]).unwrap_err();
        assert_eq!(missing[0].var(), "ROUTES_FILE");
    }

    #[test]
    fn every_rule_error_is_reported_naming_the_variable_and_the_rule() {
        let errors = routes(&[(
            "ROUTES",
            r#"[{"when": "attributes.x ==", "topic": "a"}, {"topic": "b", "tpoic": "c"}]"#,
        )])
        .unwrap_err();
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("ROUTES="), "{}", lines[0]);
        assert!(lines[0].contains("rule 0: when: "), "{}", lines[0]);
        assert!(
            lines[1].contains("rule 1: unknown field `tpoic`"),
            "{}",
            lines[1]
        );
        // Each line shows its own rule, compact, not the whole list.
        assert!(
            lines[1].starts_with(r#"ROUTES="{\"topic\":\"b\",\"tpoic\":\"c\"}" is invalid"#),
            "{}",
            lines[1]
        );
        // An error of the whole list shows the list.
        let whole = routes(&[("ROUTES", "{}")]).unwrap_err();
        assert!(
            whole[0]
                .to_string()
                .starts_with(r#"ROUTES="{}" is invalid"#),
            "{}",
            whole[0]
        );
    }

    #[test]
    fn errors_in_a_rules_file_show_the_file() {
        let path = std::env::temp_dir().join(format!("routes-bad-{}.json", std::process::id()));
        std::fs::write(&path, r#"[{"topic": "b", "tpoic": "c"}]"#).unwrap();
        let path_text = path.display().to_string();
        let errors = routes(&[("ROUTES_FILE", &path_text)]).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let line = errors[0].to_string();
        assert!(
            line.starts_with(&format!("ROUTES_FILE={path_text:?} is invalid")),
            "{line}"
        );
        assert!(line.contains("rule 0: unknown field `tpoic`"), "{line}");
    }
}
