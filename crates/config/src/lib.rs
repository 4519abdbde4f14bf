//! The one way DuckMesh reads its configuration. Each component declares its `DUCKMESH_*`
//! knobs as a clap `Args` struct (flag, variable, default, help line); this crate holds what
//! they share: value parsers that trim, range-check and name the variable in their errors
//! ([`knob`]), parsing such a struct from the environment alone ([`from_env`], [`from_lookup`]),
//! the rule that a blank variable counts as unset ([`without_blank_env`]), and the Markdown
//! table docs/configuration.md is generated from ([`markdown_table`]).

pub mod knob;

use clap::{Args, Command, FromArgMatches};
use std::ffi::OsStr;

/// A knob set to a value that cannot be used. The message names the variable and what it
/// accepts; it never carries the value of a secret (secrets are never parsed, only passed on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The variable at fault; empty when the problem is not one variable's.
    pub variable: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// An error that is not about one variable's value (e.g. two variables that contradict).
    pub fn new(message: impl Into<String>) -> Self {
        Self { variable: String::new(), message: message.into() }
    }

    /// `variable` holds `value`, which is not what it takes (`expected`).
    pub fn invalid(variable: &str, value: &str, expected: impl std::fmt::Display) -> Self {
        Self { variable: variable.to_owned(), message: format!("invalid {variable}={value:?}: expected {expected}") }
    }

    /// The stable code of every configuration error.
    pub fn error_code(&self) -> &'static str {
        "invalid_config"
    }
}

/// Parses `A` from the process environment alone (no command-line arguments): what a component
/// started without flags (a worker pod, a library caller) reads.
pub fn from_env<A: Args + FromArgMatches>() -> Result<A, ConfigError> {
    from_lookup(|name| std::env::var(name).ok())
}

/// Parses `A` with every variable read through `lookup` and nothing from the process
/// environment: tests pass a map, dev mode its overlay over the environment. Unset and blank
/// variables keep their defaults; set but invalid ones are errors naming the variable.
pub fn from_lookup<A: Args + FromArgMatches>(lookup: impl Fn(&str) -> Option<String>) -> Result<A, ConfigError> {
    let mut argv = Vec::new();
    let command = A::augment_args(Command::new("duckmesh").no_binary_name(true)).mut_args(|arg| {
        let variable = arg.get_env().and_then(OsStr::to_str).map(str::to_owned);
        let value = variable.as_deref().and_then(&lookup).filter(|value| !value.trim().is_empty());
        match (value, arg.get_long()) {
            (Some(value), Some(long)) => {
                argv.push(format!("--{long}={value}"));
                arg
            }
            // The value captured from the process environment must not leak in.
            _ => arg.env(None),
        }
    });
    let mut matches = command.try_get_matches_from(argv).map_err(from_clap)?;
    A::from_arg_matches_mut(&mut matches).map_err(from_clap)
}

/// The command with every argument whose variable is set but blank treated as unset, as
/// DuckMesh always has: pass the binary's command through this before parsing.
pub fn without_blank_env(command: Command) -> Command {
    command
        .mut_args(|arg| {
            let blank =
                arg.get_env().and_then(std::env::var_os).is_some_and(|value| value.to_string_lossy().trim().is_empty());
            if blank { arg.env(None) } else { arg }
        })
        .mut_subcommands(without_blank_env)
}

/// A clap error as a configuration error: a knob's own message when a knob parser refused a
/// value, else clap's text.
fn from_clap(error: clap::Error) -> ConfigError {
    let rendered = error.to_string();
    let message = rendered.trim().strip_prefix("error: ").unwrap_or(rendered.trim()).to_owned();
    let variable = message
        .strip_prefix("invalid ")
        .and_then(|rest| rest.split_once('='))
        .map(|(variable, _)| variable.to_owned())
        .unwrap_or_default();
    ConfigError { variable, message }
}

/// The Markdown table of a component's knobs, one row per argument with a variable (hidden
/// arguments left out): variable, flag, default, meaning. Secrets are marked as such.
pub fn markdown_table(command: &Command) -> String {
    let mut out = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
        let Some(variable) = arg.get_env().and_then(OsStr::to_str) else { continue };
        let flag = arg.get_long().map_or_else(|| "—".to_owned(), |long| format!("`--{long}`"));
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|value| value.to_string_lossy().into_owned()).collect();
        let default = if defaults.is_empty() { "unset".to_owned() } else { format!("`{}`", defaults.join(",")) };
        let mut meaning = arg.get_help().map(ToString::to_string).unwrap_or_default().replace('\n', " ");
        if arg.is_hide_env_values_set() {
            meaning.push_str(" (secret: never printed)");
        }
        out.push_str(&format!("| `{variable}` | {flag} | {default} | {} |\n", meaning.replace('|', "\\|")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    /// A component's knobs, as components declare them.
    #[derive(Debug, clap::Args)]
    struct Sample {
        /// Seconds between beats.
        #[arg(long = "sample-beat-seconds", env = "DUCKMESH_SAMPLE_BEAT_SECONDS", default_value = "30", value_parser = knob::seconds(0.0, 3600.0))]
        beat: Duration,
        /// Workers at once.
        #[arg(long = "sample-workers", env = "DUCKMESH_SAMPLE_WORKERS", default_value = "4", value_parser = knob::number(1, 64))]
        workers: u64,
        /// Optional limit.
        #[arg(long = "sample-limit", env = "DUCKMESH_SAMPLE_LIMIT", value_parser = knob::number(1, 10))]
        limit: Option<u64>,
        /// A switch.
        #[arg(long = "sample-on", env = "DUCKMESH_SAMPLE_ON", default_value = "false", value_parser = knob::flag(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        on: bool,
        /// A password.
        #[arg(long = "sample-secret", env = "DUCKMESH_SAMPLE_SECRET", hide_env_values = true)]
        secret: Option<String>,
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Sample, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_overrides_and_blanks() {
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(
            (defaults.beat, defaults.workers, defaults.limit, defaults.on),
            (Duration::from_secs(30), 4, None, false)
        );
        let set = parse(&[
            ("DUCKMESH_SAMPLE_BEAT_SECONDS", "0.5"),
            ("DUCKMESH_SAMPLE_WORKERS", " 8 "),
            ("DUCKMESH_SAMPLE_LIMIT", "  "),
            ("DUCKMESH_SAMPLE_ON", "Yes"),
            ("DUCKMESH_SAMPLE_SECRET", "hunter2"),
        ])
        .expect("valid");
        assert_eq!((set.beat, set.workers, set.limit, set.on), (Duration::from_millis(500), 8, None, true));
        assert_eq!(set.secret.as_deref(), Some("hunter2"));
    }

    #[test]
    fn errors_name_the_variable() {
        for (variable, value, message) in [
            (
                "DUCKMESH_SAMPLE_WORKERS",
                "0",
                "invalid DUCKMESH_SAMPLE_WORKERS=\"0\": expected a whole number from 1 to 64",
            ),
            (
                "DUCKMESH_SAMPLE_WORKERS",
                "-1",
                "invalid DUCKMESH_SAMPLE_WORKERS=\"-1\": expected a whole number from 1 to 64",
            ),
            (
                "DUCKMESH_SAMPLE_BEAT_SECONDS",
                "0",
                "invalid DUCKMESH_SAMPLE_BEAT_SECONDS=\"0\": expected a number of seconds above 0 up to 3600",
            ),
            (
                "DUCKMESH_SAMPLE_BEAT_SECONDS",
                "NaN",
                "invalid DUCKMESH_SAMPLE_BEAT_SECONDS=\"NaN\": expected a number of seconds above 0 up to 3600",
            ),
            ("DUCKMESH_SAMPLE_ON", "maybe", "invalid DUCKMESH_SAMPLE_ON=\"maybe\": expected true or false"),
        ] {
            let error = parse(&[(variable, value)]).expect_err(variable);
            assert_eq!((error.variable.as_str(), error.message.as_str()), (variable, message));
            assert_eq!(error.error_code(), "invalid_config");
        }
    }

    #[test]
    fn the_table_lists_every_visible_knob() {
        let table = markdown_table(&Sample::augment_args(Command::new("sample")));
        assert!(
            table.contains("| `DUCKMESH_SAMPLE_WORKERS` | `--sample-workers` | `4` | Workers at once |"),
            "{table}"
        );
        assert!(table.contains("| `DUCKMESH_SAMPLE_LIMIT` | `--sample-limit` | unset | Optional limit |"), "{table}");
        assert!(table.contains("A password (secret: never printed)"), "{table}");
    }
}
