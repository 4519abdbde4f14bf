//! Value parsers for knobs. Each trims the value, checks it and, when it is unusable, fails
//! with a [`ConfigError`](crate::ConfigError) message naming the variable (or the flag, for a
//! value given on the command line), the value and what the knob accepts.

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

/// A knob's parser: a check from the trimmed text to the value, or to what was expected.
#[derive(Clone)]
pub struct Knob<T> {
    check: Arc<dyn Fn(&str) -> Result<T, String> + Send + Sync>,
}

impl<T> Knob<T> {
    /// A parser from a check that returns the value, or a description of what is accepted.
    pub fn new(check: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static) -> Self {
        Self { check: Arc::new(check) }
    }
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Knob<T> {
    type Value = T;

    fn parse_ref(&self, command: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let raw = value.to_string_lossy();
        (self.check)(raw.trim()).map_err(|expected| {
            let variable = match arg {
                Some(arg) => match (arg.get_env().and_then(OsStr::to_str), arg.get_long()) {
                    (Some(variable), _) => variable.to_owned(),
                    (None, Some(long)) => format!("--{long}"),
                    (None, None) => arg.get_id().to_string(),
                },
                None => "value".to_owned(),
            };
            let error = crate::ConfigError::invalid(&variable, &raw, expected);
            clap::Error::raw(ErrorKind::ValueValidation, format!("{error}\n")).with_cmd(command)
        })
    }
}

/// A whole number from `min` to `max`.
pub fn number(min: u64, max: u64) -> Knob<u64> {
    Knob::new(move |text| match text.parse::<u64>() {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(format!("a whole number from {min} to {max}")),
    })
}

/// A number of seconds (fractions allowed) above `min` (or equal to it when `min` is not 0)
/// and at most `max`, as a duration.
pub fn seconds(min: f64, max: f64) -> Knob<Duration> {
    Knob::new(move |text| match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value <= max && (value > min || (min > 0.0 && value == min)) => {
            Ok(Duration::from_secs_f64(value))
        }
        _ if min == 0.0 => Err(format!("a number of seconds above 0 up to {max}")),
        _ => Err(format!("a number of seconds from {min} to {max}")),
    })
}

/// A flag: `true/false`, `1/0`, `yes/no`, `on/off`, any case.
pub fn flag() -> Knob<bool> {
    Knob::new(|text| match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("true or false".to_owned()),
    })
}

/// One of `choices` (any case), as written in `choices`.
pub fn choice(choices: &'static [&'static str]) -> Knob<String> {
    Knob::new(move |text| {
        let lower = text.to_ascii_lowercase();
        choices.iter().find(|choice| **choice == lower).map(|choice| (*choice).to_owned()).ok_or_else(|| {
            let mut names: Vec<String> = choices.iter().map(|choice| format!("`{choice}`")).collect();
            let last = names.pop().unwrap_or_default();
            if names.is_empty() { last } else { format!("{} or {last}", names.join(", ")) }
        })
    })
}

/// Any text, trimmed.
pub fn text() -> Knob<String> {
    Knob::new(|text| Ok(text.to_owned()))
}

/// A path, trimmed.
pub fn path() -> Knob<std::path::PathBuf> {
    Knob::new(|text| Ok(text.into()))
}
