//! Reading configuration from environment variables, through a lookup function so that
//! tests never have to mutate the process environment.

use std::str::FromStr;

use crate::error::{Error, Result};

/// A variable lookup: returns the value of a variable, or `None` when it is unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Looks a variable up in the process environment; unset, empty and non-UTF-8 values all
/// count as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Reads a variable as a trimmed, non-empty string.
pub(crate) fn string_env(lookup: EnvLookup<'_>, name: &str) -> Option<String> {
    lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
}

/// Parses a variable; unset is `Ok(None)`, unparsable is a configuration error naming the
/// variable (never its value, which might be a secret pasted into the wrong variable).
pub(crate) fn parse_env<T: FromStr>(lookup: EnvLookup<'_>, name: &str) -> Result<Option<T>> {
    match string_env(lookup, name) {
        None => Ok(None),
        Some(value) => {
            value.parse().map(Some).map_err(|_| Error::Config { message: format!("{name} has an invalid value") })
        }
    }
}

/// Parses a boolean variable: `true/false`, `1/0`, `yes/no`, `on/off`.
pub(crate) fn bool_env(lookup: EnvLookup<'_>, name: &str) -> Result<Option<bool>> {
    match string_env(lookup, name) {
        None => Ok(None),
        Some(value) => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(Error::Config { message: format!("{name} must be true or false") }),
        },
    }
}
