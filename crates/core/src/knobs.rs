//! Reading `DUCKMESH_*` knobs through a lookup function (the process environment, or a map in
//! tests): trimmed strings, bounded whole numbers and flags, each failure naming the variable.

/// A knob set to an unusable value; the message names the variable and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KnobError {
    /// What is wrong and what the variable accepts.
    pub message: String,
}

/// Knob readers over a lookup.
#[derive(Clone, Copy)]
pub struct Knobs<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Knobs<F> {
    /// Readers over `lookup` (unset and blank values count as unset).
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// The trimmed value, `None` when unset or blank.
    pub fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
    }

    /// A whole number from `min` to `max`; `None` when unset.
    pub fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, KnobError> {
        match self.string(name) {
            None => Ok(None),
            Some(raw) => match raw.parse::<u64>() {
                Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
                _ => Err(KnobError { message: format!("{name}={raw:?}: expected a whole number from {min} to {max}") }),
            },
        }
    }

    /// A flag (`true/false`, `1/0`, `yes/no`, `on/off`, any case); unset is `false`.
    pub fn flag(&self, name: &str) -> Result<bool, KnobError> {
        match self.string(name).map(|value| value.to_ascii_lowercase()).as_deref() {
            None | Some("false" | "0" | "no" | "off") => Ok(false),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some(_) => Err(KnobError { message: format!("{name} must be true or false") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_parse_and_name_the_variable() {
        let knobs = Knobs::new(|name: &str| match name {
            "N" => Some(" 42 ".to_owned()),
            "BIG" => Some("9000".to_owned()),
            "BLANK" => Some("  ".to_owned()),
            "YES" => Some("On".to_owned()),
            "BAD" => Some("maybe".to_owned()),
            _ => None,
        });
        assert_eq!(knobs.string("N").as_deref(), Some("42"));
        assert_eq!(knobs.string("BLANK"), None);
        assert_eq!(knobs.number("N", 1, 100), Ok(Some(42)));
        assert_eq!(knobs.number("UNSET", 1, 100), Ok(None));
        let error = knobs.number("BIG", 1, 100).expect_err("out of range");
        assert_eq!(error.message, "BIG=\"9000\": expected a whole number from 1 to 100");
        assert_eq!(knobs.flag("YES"), Ok(true));
        assert_eq!(knobs.flag("UNSET"), Ok(false));
        assert_eq!(knobs.flag("BAD").expect_err("bad").message, "BAD must be true or false");
    }
}
