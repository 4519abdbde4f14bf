//! Exact value checks for ingest: is this JSON value a value of that DuckDB column type, as
//! it is, with nothing rounded, parsed from a string, truncated, dropped or nulled? The same
//! pure functions guard the API (`POST /v1/ingest`) and the coordinator (before DuckDB
//! converts a batch), so a record the API would refuse is never coerced by either.
//!
//! The rules, by canonical type (see docs/ingest.md):
//! - `BOOLEAN`: `true` or `false`;
//! - integer types: a JSON integer within the type's range (`1.0`, `"1"` and `3.7` are refused);
//! - `FLOAT`, `DOUBLE`: a number (a `FLOAT` within its range);
//! - `DECIMAL(p,s)`: a number with at most `s` decimal places and `p - s` integer digits;
//! - `VARCHAR`: a string; `ENUM(...)`: one of its strings; `DATE`: a string without a time of
//!   day; `TIME`, `TIMESTAMP…`, `INTERVAL`, `UUID`, `BLOB`, `BIT` and other scalar types: a
//!   string, parsed exactly by the coordinator;
//! - `JSON`: anything;
//! - `T[]`: an array whose elements are `T`; `T[n]`: exactly `n` of them;
//! - `STRUCT(...)`: an object with exactly the struct's fields (`null` for no value: unlike a
//!   missing column, a missing field is refused, as DuckDB's strict conversion refuses it);
//! - `MAP(K, V)`: an object whose keys are `K` written as text and whose values are `V`;
//! - `UNION(...)`: an object with exactly one key, naming the member, whose value is the
//!   member's type.
//!
//! `null` is a value of every type, at any depth (a map key is never null: JSON keys are text).

use crate::types::{Column, canonical_type};
use serde_json::{Map, Number, Value};

/// A column type, parsed from its canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataType {
    /// `BOOLEAN`.
    Boolean,
    /// An integer type with its inclusive range.
    Integer {
        /// The type's name.
        name: &'static str,
        /// Smallest value.
        min: i128,
        /// Largest value.
        max: i128,
    },
    /// `FLOAT` (single precision).
    Float,
    /// `DOUBLE`.
    Double,
    /// `DECIMAL(precision, scale)`.
    Decimal {
        /// Total digits.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// `VARCHAR`.
    Varchar,
    /// `DATE`.
    Date,
    /// `JSON`: any JSON value.
    Json,
    /// `ENUM('a', 'b', ...)`: one of these strings.
    Enum(Vec<String>),
    /// A scalar written as a string and parsed by the coordinator (`TIMESTAMP`, `UUID`…); the
    /// canonical type name.
    Text(String),
    /// `T[]`.
    List(Box<DataType>),
    /// `T[n]`.
    Array(Box<DataType>, usize),
    /// `STRUCT(name T, ...)`.
    Struct(Vec<(String, DataType)>),
    /// `MAP(K, V)`.
    Map(Box<DataType>, Box<DataType>),
    /// `UNION(name T, ...)`.
    Union(Vec<(String, DataType)>),
}

/// Why a value is refused: where it is (`tags[2]`, `address.city`, `attrs["k"]`) and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The path of the value inside the record, starting with the column name.
    pub path: String,
    /// What is wrong, naming the expected type.
    pub message: String,
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ValueError {}

/// A dataset's columns with their parsed types, built once per request or batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSchema {
    columns: Vec<(String, DataType)>,
}

impl RecordSchema {
    /// Parses every column's type (any DuckDB spelling: aliases and letter case are resolved).
    pub fn new(columns: &[Column]) -> Self {
        Self {
            columns: columns.iter().map(|column| (column.name.clone(), DataType::parse(&column.data_type))).collect(),
        }
    }

    /// The type of column `name`, if the dataset has it.
    pub fn column(&self, name: &str) -> Option<&DataType> {
        self.columns.iter().find(|(column, _)| column == name).map(|(_, data_type)| data_type)
    }

    /// Checks every field of `record`: each must be a column, and its value a value of the
    /// column's type (see the module docs). A column the record does not give is `NULL`.
    pub fn check_record(&self, record: &Map<String, Value>) -> Result<(), ValueError> {
        for (field, value) in record {
            let data_type = self
                .column(field)
                .ok_or_else(|| ValueError { path: field.clone(), message: "the dataset has no such column".into() })?;
            data_type.check(value, &mut field.clone())?;
        }
        Ok(())
    }
}

/// The path of the first NUL character (`\u0000`) in `value`, in a string or an object key
/// at any depth, starting from `path`. PostgreSQL's `text` and `jsonb` cannot hold one.
pub fn find_nul(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(index, item)| find_nul(item, &format!("{path}[{index}]")))
        }
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let inner = member_path(path, key);
            if key.contains('\0') { Some(inner) } else { find_nul(item, &inner) }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// [`find_nul`] over a whole record: the path (starting with the field name) of its first NUL.
pub fn find_nul_in_record(record: &Map<String, Value>) -> Option<String> {
    record
        .iter()
        .find_map(|(field, value)| if field.contains('\0') { Some(field.clone()) } else { find_nul(value, field) })
}

/// `path.key`, or `path["key"]` when the key is not a plain name.
fn member_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}")))
    }
}

/// How a JSON value is named in messages (`a string`, `an array`, …).
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of `value` for messages.
fn excerpt(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

impl DataType {
    /// Parses a DuckDB type name (canonicalised first).
    pub fn parse(text: &str) -> Self {
        Self::parse_canonical(&canonical_type(text))
    }

    fn parse_canonical(text: &str) -> Self {
        let text = text.trim();
        if text.ends_with(']')
            && let Some(open) = last_top_level_bracket(text)
        {
            let element = Box::new(Self::parse_canonical(&text[..open]));
            let size = text[open + 1..text.len() - 1].trim();
            return match size.parse::<usize>() {
                _ if size.is_empty() => Self::List(element),
                Ok(size) => Self::Array(element, size),
                Err(_) => Self::Text(text.to_owned()),
            };
        }
        if let Some(open) = text.find('(')
            && text.ends_with(')')
        {
            let base = text[..open].trim();
            let parts = split_top_level(&text[open + 1..text.len() - 1]);
            let parsed = match base {
                "DECIMAL" => decimal(&parts),
                "STRUCT" => fields(&parts).map(Self::Struct),
                "UNION" => fields(&parts).map(Self::Union),
                "MAP" => match parts.as_slice() {
                    [key, value] => {
                        Some(Self::Map(Box::new(Self::parse_canonical(key)), Box::new(Self::parse_canonical(value))))
                    }
                    _ => None,
                },
                "ENUM" => {
                    parts.iter().map(|part| unquote(part.trim(), '\'')).collect::<Option<Vec<_>>>().map(Self::Enum)
                }
                _ => None,
            };
            return parsed.unwrap_or_else(|| Self::Text(text.to_owned()));
        }
        let integer = |name: &'static str, min: i128, max: i128| Self::Integer { name, min, max };
        match text {
            "BOOLEAN" => Self::Boolean,
            "TINYINT" => integer("TINYINT", i8::MIN.into(), i8::MAX.into()),
            "SMALLINT" => integer("SMALLINT", i16::MIN.into(), i16::MAX.into()),
            "INTEGER" => integer("INTEGER", i32::MIN.into(), i32::MAX.into()),
            "BIGINT" => integer("BIGINT", i64::MIN.into(), i64::MAX.into()),
            "HUGEINT" => integer("HUGEINT", i128::MIN, i128::MAX),
            "UTINYINT" => integer("UTINYINT", 0, u8::MAX.into()),
            "USMALLINT" => integer("USMALLINT", 0, u16::MAX.into()),
            "UINTEGER" => integer("UINTEGER", 0, u32::MAX.into()),
            "UBIGINT" => integer("UBIGINT", 0, u64::MAX.into()),
            // JSON numbers here never pass u64, so i128's range loses nothing.
            "UHUGEINT" => integer("UHUGEINT", 0, i128::MAX),
            "FLOAT" => Self::Float,
            "DOUBLE" => Self::Double,
            "VARCHAR" => Self::Varchar,
            "DATE" => Self::Date,
            "JSON" => Self::Json,
            other => Self::Text(other.to_owned()),
        }
    }

    /// The type's DuckDB name, for messages.
    pub fn name(&self) -> String {
        match self {
            Self::Boolean => "BOOLEAN".into(),
            Self::Integer { name, .. } => (*name).into(),
            Self::Float => "FLOAT".into(),
            Self::Double => "DOUBLE".into(),
            Self::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            Self::Varchar => "VARCHAR".into(),
            Self::Date => "DATE".into(),
            Self::Json => "JSON".into(),
            Self::Enum(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect();
                format!("ENUM({})", quoted.join(", "))
            }
            Self::Text(name) => name.clone(),
            Self::List(element) => format!("{}[]", element.name()),
            Self::Array(element, size) => format!("{}[{size}]", element.name()),
            Self::Struct(fields) | Self::Union(fields) => {
                let base = if matches!(self, Self::Struct(_)) { "STRUCT" } else { "UNION" };
                let inner: Vec<String> = fields.iter().map(|(name, t)| format!("{name} {}", t.name())).collect();
                format!("{base}({})", inner.join(", "))
            }
            Self::Map(key, value) => format!("MAP({}, {})", key.name(), value.name()),
        }
    }

    /// Checks that `value` is a value of this type exactly; `path` names it in the error
    /// (and is extended while descending, then restored).
    pub fn check(&self, value: &Value, path: &mut String) -> Result<(), ValueError> {
        if value.is_null() {
            return Ok(());
        }
        let fail = |path: &str, message: String| Err(ValueError { path: path.to_owned(), message });
        let expected = |path: &str, wanted: &str| {
            fail(
                path,
                format!("expected {wanted} for a {} value, got {} ({})", self.name(), kind_of(value), excerpt(value)),
            )
        };
        match self {
            Self::Json => Ok(()),
            Self::Boolean => {
                if value.is_boolean() {
                    Ok(())
                } else {
                    expected(path, "true or false")
                }
            }
            Self::Integer { name, min, max } => match value {
                Value::Number(number) => match integer_of(number) {
                    Some(n) if (*min..=*max).contains(&n) => Ok(()),
                    Some(n) => fail(path, format!("{n} is out of range for {name} ({min} to {max})")),
                    None => fail(path, format!("{number} is not an integer, as {name} needs")),
                },
                _ => expected(path, &format!("an integer from {min} to {max}")),
            },
            Self::Float => match value.as_f64() {
                Some(number) if number.is_finite() && number.abs() <= f64::from(f32::MAX) => Ok(()),
                Some(_) => fail(path, format!("{} is out of range for FLOAT", excerpt(value))),
                None => expected(path, "a number"),
            },
            Self::Double => {
                if value.is_number() {
                    Ok(())
                } else {
                    expected(path, "a number")
                }
            }
            Self::Decimal { precision, scale } => match value {
                Value::Number(number) => decimal_fits(&number.to_string(), *precision, *scale)
                    .map_err(|message| ValueError { path: path.clone(), message: format!("{number} {message}") }),
                _ => expected(path, "a number"),
            },
            Self::Varchar | Self::Text(_) => {
                if value.is_string() {
                    Ok(())
                } else {
                    expected(path, "a string")
                }
            }
            Self::Date => match value {
                Value::String(text) => date_text(text).map_err(|message| ValueError { path: path.clone(), message }),
                _ => expected(path, "a string"),
            },
            Self::Enum(values) => match value {
                Value::String(text) if values.contains(text) => Ok(()),
                Value::String(text) => fail(path, format!("{text:?} is not one of the values of {}", self.name())),
                _ => expected(path, "a string"),
            },
            Self::List(element) => match value {
                Value::Array(items) => check_items(element, items, path),
                _ => expected(path, "an array"),
            },
            Self::Array(element, size) => match value {
                Value::Array(items) if items.len() == *size => check_items(element, items, path),
                Value::Array(items) => {
                    fail(path, format!("expected {size} elements for a {}, got {}", self.name(), items.len()))
                }
                _ => expected(path, &format!("an array of {size} elements")),
            },
            Self::Struct(fields) => match value {
                Value::Object(map) => {
                    for (key, item) in map {
                        let Some((_, field_type)) = fields.iter().find(|(name, _)| name == key) else {
                            let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
                            return fail(
                                path,
                                format!("{} has no field {key:?} (its fields: {})", self.name(), names.join(", ")),
                            );
                        };
                        descend(path, &member_path("", key), |path| field_type.check(item, path))?;
                    }
                    match fields.iter().find(|(name, _)| !map.contains_key(name)) {
                        Some((missing, _)) => {
                            fail(path, format!("{} needs its field {missing:?} (give null for no value)", self.name()))
                        }
                        None => Ok(()),
                    }
                }
                _ => expected(path, "an object"),
            },
            Self::Map(key_type, value_type) => match value {
                Value::Object(map) => {
                    for (key, item) in map {
                        key_type.check_key(key).map_err(|message| ValueError {
                            path: path.clone(),
                            message: format!("map key {key:?}: {message}"),
                        })?;
                        descend(path, &member_path("", key), |path| value_type.check(item, path))?;
                    }
                    Ok(())
                }
                _ => expected(path, "an object"),
            },
            Self::Union(members) => match value {
                Value::Object(map) if map.len() == 1 => {
                    let (tag, item) = map
                        .iter()
                        .next()
                        .ok_or_else(|| ValueError { path: path.clone(), message: "an empty union object".into() })?;
                    let Some((_, member_type)) = members.iter().find(|(name, _)| name == tag) else {
                        return fail(path, format!("{} has no member {tag:?}", self.name()));
                    };
                    descend(path, &member_path("", tag), |path| member_type.check(item, path))
                }
                _ => expected(path, "an object with exactly one key, the member's name"),
            },
        }
    }

    /// Checks a map key (always JSON text) against this key type.
    fn check_key(&self, key: &str) -> Result<(), String> {
        match self {
            Self::Varchar | Self::Text(_) | Self::Json => Ok(()),
            Self::Date => date_text(key),
            Self::Boolean => {
                if key == "true" || key == "false" {
                    Ok(())
                } else {
                    Err("expected true or false".into())
                }
            }
            Self::Integer { name, min, max } => match key.parse::<i128>() {
                // Only the canonical spelling: "07" or "+7" would be changed by the conversion.
                Ok(n) if n.to_string() == key && (*min..=*max).contains(&n) => Ok(()),
                _ => Err(format!("expected an integer from {min} to {max} for a {name} key")),
            },
            Self::Float | Self::Double => match key.parse::<f64>() {
                Ok(n) if n.is_finite() && (matches!(self, Self::Double) || n.abs() <= f64::from(f32::MAX)) => Ok(()),
                _ => Err(format!("expected a number for a {} key", self.name())),
            },
            Self::Decimal { precision, scale } => decimal_fits(key, *precision, *scale),
            Self::Enum(values) if values.iter().any(|v| v == key) => Ok(()),
            Self::Enum(_) => Err(format!("not one of the values of {}", self.name())),
            Self::List(_) | Self::Array(..) | Self::Struct(_) | Self::Map(..) | Self::Union(_) => {
                Err(format!("keys of type {} cannot be written as JSON object keys", self.name()))
            }
        }
    }
}

/// Runs `check` with `suffix` appended to `path`, then restores `path`.
fn descend(
    path: &mut String,
    suffix: &str,
    check: impl FnOnce(&mut String) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    let length = path.len();
    path.push_str(suffix);
    let result = check(path);
    path.truncate(length);
    result
}

fn check_items(element: &DataType, items: &[Value], path: &mut String) -> Result<(), ValueError> {
    for (index, item) in items.iter().enumerate() {
        descend(path, &format!("[{index}]"), |path| element.check(item, path))?;
    }
    Ok(())
}

/// A JSON number as an integer, if it is one (`1.0` is not: it was written as a fraction).
fn integer_of(number: &Number) -> Option<i128> {
    number.as_i64().map(i128::from).or_else(|| number.as_u64().map(i128::from))
}

/// A `DATE` string must not carry a time of day: the conversion would drop it.
fn date_text(text: &str) -> Result<(), String> {
    if text.contains(':') { Err(format!("{text:?} has a time of day, which a DATE cannot keep")) } else { Ok(()) }
}

/// Whether the decimal literal `text` (`-12.50`, `1e3`, `2.5E-4`) fits `DECIMAL(precision,
/// scale)` exactly: at most `scale` significant decimal places and `precision - scale` integer
/// digits.
fn decimal_fits(text: &str, precision: u32, scale: u32) -> Result<(), String> {
    let invalid = || format!("is not a decimal number for DECIMAL({precision},{scale})");
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().map_err(|_| invalid())?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let digits = format!("{whole}{fraction}");
    // The value is digits × 10^(exponent - fraction length); count its significant places.
    let point = i64::try_from(fraction.len()).map_err(|_| invalid())? - exponent;
    let trailing = i64::try_from(digits.len() - digits.trim_end_matches('0').len()).map_err(|_| invalid())?;
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return Ok(());
    }
    let places = (point - trailing).max(0);
    let length = i64::try_from(digits.trim_start_matches('0').len()).map_err(|_| invalid())?;
    let integer_digits = (length - point).max(0);
    if places > i64::from(scale) {
        return Err(format!("has {places} decimal places; DECIMAL({precision},{scale}) keeps {scale}"));
    }
    if integer_digits > i64::from(precision.saturating_sub(scale)) {
        return Err(format!(
            "has {integer_digits} integer digits; DECIMAL({precision},{scale}) holds {}",
            precision.saturating_sub(scale)
        ));
    }
    Ok(())
}

fn decimal(parts: &[&str]) -> Option<DataType> {
    match parts {
        [precision, scale] => {
            Some(DataType::Decimal { precision: precision.trim().parse().ok()?, scale: scale.trim().parse().ok()? })
        }
        _ => None,
    }
}

fn fields(parts: &[&str]) -> Option<Vec<(String, DataType)>> {
    parts
        .iter()
        .map(|part| {
            let part = part.trim();
            let (name, rest) = if let Some(quoted) = part.strip_prefix('"') {
                let close = quoted.find('"').map(|at| at + 1)?;
                // A doubled quote is an escaped quote inside the name.
                let mut end = close;
                while part[end + 1..].starts_with('"') {
                    end = part[end + 2..].find('"').map(|at| at + end + 2)?;
                }
                (unquote(&part[..=end], '"')?, &part[end + 1..])
            } else {
                let space = part.find(' ')?;
                (part[..space].to_owned(), &part[space..])
            };
            Some((name, DataType::parse_canonical(rest.trim())))
        })
        .collect()
}

/// `'text'` or `"text"` without its quotes, doubled quotes made single.
fn unquote(text: &str, quote: char) -> Option<String> {
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    Some(inner.replace(&format!("{quote}{quote}"), &quote.to_string()))
}

/// Byte offset of the `[` that opens the last top-level `[...]` suffix of `text`.
fn last_top_level_bracket(text: &str) -> Option<usize> {
    let (mut depth, mut quote, mut open) = (0usize, None::<char>, None);
    for (index, ch) in text.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(ch),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, '[') if depth == 0 => open = Some(index),
            _ => {}
        }
    }
    open
}

/// `inner` split at the commas outside brackets and quotes.
fn split_top_level(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0usize, None::<char>, 0usize);
    for (index, ch) in inner.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(ch),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth = depth.saturating_sub(1),
            (None, ',') if depth == 0 => {
                parts.push(&inner[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(data_type: &str, value: Value) -> Result<(), ValueError> {
        DataType::parse(data_type).check(&value, &mut "v".to_owned())
    }

    fn refused_at(data_type: &str, value: Value) -> String {
        match check(data_type, value.clone()) {
            Err(error) => error.path,
            Ok(()) => panic!("{data_type}: {value} was accepted"),
        }
    }

    #[test]
    fn types_parse_from_any_spelling() {
        assert_eq!(DataType::parse("int[]"), DataType::List(Box::new(DataType::parse("INTEGER"))));
        assert_eq!(DataType::parse("numeric(10, 2)"), DataType::Decimal { precision: 10, scale: 2 });
        assert_eq!(
            DataType::parse("struct(a int, \"b c\" text[3])"),
            DataType::Struct(vec![
                ("a".into(), DataType::parse("INTEGER")),
                ("b c".into(), DataType::Array(Box::new(DataType::Varchar), 3)),
            ])
        );
        assert_eq!(
            DataType::parse("map(text, struct(x bool))[]"),
            DataType::List(Box::new(DataType::Map(
                Box::new(DataType::Varchar),
                Box::new(DataType::Struct(vec![("x".into(), DataType::Boolean)]))
            )))
        );
        assert_eq!(DataType::parse("enum('a', 'it''s')"), DataType::Enum(vec!["a".into(), "it's".into()]));
        assert_eq!(DataType::parse("timestamptz"), DataType::Text("TIMESTAMP WITH TIME ZONE".into()));
        assert_eq!(DataType::parse("union(n int, s text)").name(), "UNION(n INTEGER, s VARCHAR)");
    }

    /// The values of issue 20 that DuckDB's conversion used to change silently.
    #[test]
    fn nested_values_that_do_not_fit_are_refused_with_their_path() {
        assert_eq!(refused_at("MAP(VARCHAR, INTEGER)", json!({"k": "notint"})), "v.k");
        assert_eq!(refused_at("STRUCT(x INTEGER)", json!({"y": 1})), "v");
        assert_eq!(refused_at("STRUCT(x INTEGER, y VARCHAR)", json!({"x": 1})), "v");
        assert_eq!(refused_at("STRUCT(x INTEGER)", json!({})), "v");
        assert_eq!(refused_at("INTEGER[]", json!([1, "2", 3.7, 99999999999_i64])), "v[1]");
        assert_eq!(refused_at("INTEGER[]", json!([1, 3.7])), "v[1]");
        assert_eq!(refused_at("INTEGER[]", json!([1, 99999999999_i64])), "v[1]");
        assert_eq!(refused_at("STRUCT(a STRUCT(b SMALLINT[]))", json!({"a": {"b": [1, 40000]}})), "v.a.b[1]");
        assert!(check("STRUCT(x INTEGER)", json!({})).expect_err("missing").message.contains("needs its field \"x\""));
        assert_eq!(refused_at("MAP(VARCHAR, DOUBLE)", json!({"a b": "x"})), "v[\"a b\"]");
        assert_eq!(refused_at("MAP(INTEGER, VARCHAR)", json!({"07": "x"})), "v");
        assert_eq!(refused_at("MAP(INTEGER, VARCHAR)", json!({"x": "x"})), "v");
        assert_eq!(refused_at("UNION(n INTEGER, s VARCHAR)", json!(1)), "v");
        assert_eq!(refused_at("UNION(n INTEGER, s VARCHAR)", json!({"n": "1"})), "v.n");
        assert_eq!(refused_at("UNION(n INTEGER, s VARCHAR)", json!({"x": 1})), "v");
        assert_eq!(refused_at("UNION(n INTEGER, s VARCHAR)", json!({"n": 1, "s": "a"})), "v");
        assert_eq!(refused_at("INTEGER[3]", json!([1, 2])), "v");
        assert_eq!(refused_at("ENUM('a', 'b')", json!("c")), "v");
        assert_eq!(refused_at("BOOLEAN[]", json!([true, "true"])), "v[1]");
        assert_eq!(refused_at("DATE", json!("2024-01-02 10:00:00")), "v");
        assert_eq!(refused_at("FLOAT", json!(1e39)), "v");
        let error = check("STRUCT(x INTEGER)", json!({"y": 1})).expect_err("unknown field");
        assert!(error.message.contains("no field \"y\""), "{error}");
        let error = check("INTEGER[]", json!([1, 99999999999_i64])).expect_err("range");
        assert!(error.message.contains("out of range for INTEGER"), "{error}");
    }

    #[test]
    fn values_that_fit_exactly_are_accepted() {
        let cases = [
            ("MAP(VARCHAR, INTEGER)", json!({"k": 1, "n": null})),
            ("MAP(INTEGER, VARCHAR)", json!({"-7": "x", "12": "y"})),
            ("MAP(BOOLEAN, DATE)", json!({"true": "2024-01-02"})),
            ("STRUCT(x INTEGER, y VARCHAR)", json!({"x": 1, "y": null})),
            ("INTEGER[]", json!([1, null, -3])),
            ("INTEGER[2][]", json!([[1, 2], [3, 4]])),
            ("UNION(n INTEGER, s VARCHAR)", json!({"s": "a"})),
            ("DECIMAL(5,2)", json!(123.45)),
            ("DECIMAL(5,2)", json!(-999.9)),
            ("DECIMAL(5,2)", json!(100)),
            ("DECIMAL(38,0)", json!(1e20)),
            ("UBIGINT", json!(u64::MAX)),
            ("HUGEINT", json!(i64::MIN)),
            ("JSON", json!({"anything": [1, "x", null]})),
            ("ENUM('a', 'b')", json!("b")),
            ("TIMESTAMP", json!("2024-01-02 10:00:00")),
            ("FLOAT", json!(1.5)),
        ];
        for (data_type, value) in cases {
            check(data_type, value.clone()).unwrap_or_else(|error| panic!("{data_type}: {value}: {error}"));
        }
    }

    #[test]
    fn decimals_keep_their_scale_and_precision() {
        for (text, fits) in [
            ("12.34", true),
            ("12.345", false),
            ("12.340", true),
            ("999.99", true),
            ("1000", false),
            ("0.001", false),
            ("1e2", true),
            ("1e3", false),
            ("1.5e-1", true),
            ("1.5e-2", false),
            ("0", true),
            ("-0.00", true),
            ("abc", false),
            ("1.2.3", false),
        ] {
            assert_eq!(decimal_fits(text, 5, 2).is_ok(), fits, "{text}");
        }
    }

    #[test]
    fn integer_widths_have_their_ranges() {
        for (data_type, inside, outside) in [
            ("TINYINT", json!(-128), json!(128)),
            ("SMALLINT", json!(32767), json!(-32769)),
            ("INTEGER", json!(i32::MIN), json!(i64::from(i32::MAX) + 1)),
            ("BIGINT", json!(i64::MAX), json!(u64::MAX)),
            ("UTINYINT", json!(255), json!(-1)),
            ("USMALLINT", json!(65535), json!(65536)),
            ("UINTEGER", json!(u32::MAX), json!(u64::from(u32::MAX) + 1)),
            ("UBIGINT", json!(0), json!(-1)),
        ] {
            assert!(check(data_type, inside.clone()).is_ok(), "{data_type} {inside}");
            assert!(check(data_type, outside.clone()).is_err(), "{data_type} {outside}");
            assert!(check(data_type, json!(1.0)).is_err(), "{data_type}: 1.0 is not an integer");
            assert!(check(data_type, json!("1")).is_err(), "{data_type}: a string is not an integer");
        }
    }

    #[test]
    fn nul_characters_are_found_at_any_depth() {
        let record = |value: Value| value.as_object().cloned().unwrap_or_default();
        assert_eq!(find_nul_in_record(&record(json!({"a": "x\u{0}y"}))).as_deref(), Some("a"));
        assert_eq!(
            find_nul_in_record(&record(json!({"a": [1, {"b": ["ok", "\u{0}"]}]}))).as_deref(),
            Some("a[1].b[1]")
        );
        assert_eq!(find_nul_in_record(&record(json!({"a": {"k\u{0}": 1}}))).as_deref(), Some("a[\"k\\u0000\"]"));
        assert_eq!(find_nul_in_record(&record(json!({"a\u{0}": 1}))).as_deref(), Some("a\u{0}"));
        assert_eq!(find_nul_in_record(&record(json!({"a": "fine", "b": [1, 2]}))), None);
    }

    #[test]
    fn records_are_checked_field_by_field() {
        let schema = RecordSchema::new(&[
            Column { name: "id".into(), data_type: "bigint".into() },
            Column { name: "attrs".into(), data_type: "map(text, int)".into() },
        ]);
        let record = |value: Value| value.as_object().cloned().unwrap_or_default();
        schema.check_record(&record(json!({"id": 1, "attrs": {"a": 1}}))).expect("valid");
        assert_eq!(schema.check_record(&record(json!({"id": 1, "nope": 1}))).expect_err("unknown").path, "nope");
        assert_eq!(schema.check_record(&record(json!({"attrs": {"a": "1"}}))).expect_err("nested").path, "attrs.a");
    }
}
