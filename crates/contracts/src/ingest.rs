//! The `POST /v1/ingest/{dataset}` request check, pure: [`parse_body`] splits a JSON array or
//! NDJSON body into records, [`prepare`] checks every record against the dataset's schema and
//! takes its dedupe key. Together they are the whole check the API makes before it buffers a
//! batch; the coordinator applies the same value rules ([`crate::values`]) before DuckDB
//! converts a batch.
//!
//! A batch is all or nothing: one invalid record rejects the whole request, naming the record
//! (0-based) and the field path. Values are checked exactly, at every depth: a value that does
//! not fit its column's type as it is (`"2"` or `3.7` for an `INTEGER`, an unknown `STRUCT`
//! field, a `MAP` value of the wrong type) is refused, never coerced. A NUL character anywhere
//! (`\u0000`, which PostgreSQL cannot store) is refused as `nul_character`.

use crate::types::Column;
use crate::values::{DataType, RecordSchema, kind_of};
use serde_json::{Map, Value};

/// The record field that gives a record's dedupe key explicitly (not stored as a column).
pub const KEY_FIELD: &str = "_dedupe_key";

/// The longest dedupe key, in bytes.
pub const MAX_DEDUPE_KEY_BYTES: usize = 512;

/// One record to buffer: its dedupe key and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestRecord {
    /// Its dedupe key (unique per dataset).
    pub key: String,
    /// The record (a JSON object of column values).
    pub payload: serde_json::Value,
}

/// Why an ingest request was refused (every one a 400 at the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The body is not a JSON array or NDJSON of records, is empty, or holds too many.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// A record does not fit the dataset (the whole request is rejected).
    #[error("record {record}{}: {message}", field.as_ref().map(|f| format!(", field {f:?}")).unwrap_or_default())]
    InvalidRecord {
        /// 0-based position of the record in the request.
        record: usize,
        /// The offending field, when one is to blame.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A record holds a NUL character (`\u0000`), which the catalog cannot store.
    #[error(
        "record {record}, field {field:?}: the value holds a NUL character (\\u0000), which cannot be stored; remove it or encode the value"
    )]
    NulCharacter {
        /// 0-based position of the record in the request.
        record: usize,
        /// The path of the offending value (`name`, `tags[2]`, `address.city`).
        field: String,
    },
}

impl IngestError {
    /// Stable error code (`invalid_request`, `invalid_record`, `nul_character`).
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::InvalidRecord { .. } => "invalid_record",
            Self::NulCharacter { .. } => "nul_character",
        }
    }
}

/// Splits a body into records: a JSON array of objects, or one object per line (NDJSON; blank
/// lines are skipped). At most `max_records`. A UTF-8 byte-order mark before it is skipped.
pub fn parse_body(body: &[u8], max_records: usize) -> Result<Vec<Map<String, Value>>, IngestError> {
    let text = std::str::from_utf8(body).map_err(|error| invalid_body(format!("the body is not UTF-8: {error}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|error| invalid_body(format!("the body is not a JSON array: {error}")))?
    } else {
        let mut values = Vec::new();
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if values.len() == max_records {
                break;
            }
            let value = serde_json::from_str(line)
                .map_err(|error| invalid_body(format!("line {} is not a JSON object: {error}", number + 1)))?;
            values.push(value);
        }
        values
    };
    if values.is_empty() {
        return Err(invalid_body("the body holds no records (send a JSON array or NDJSON)".into()));
    }
    if values.len() > max_records || (values.len() == max_records && more_lines_after(text, max_records)) {
        return Err(IngestError::InvalidRequest {
            message: format!("a request may carry at most {max_records} records; split the batch"),
        });
    }
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| match value {
            Value::Object(map) => Ok(map),
            other => Err(IngestError::InvalidRecord {
                record: index,
                field: None,
                message: format!("expected a JSON object, got {}", kind_of(&other)),
            }),
        })
        .collect()
}

fn more_lines_after(text: &str, records: usize) -> bool {
    !text.trim_start().starts_with('[') && text.lines().filter(|line| !line.trim().is_empty()).nth(records).is_some()
}

fn invalid_body(message: String) -> IngestError {
    IngestError::InvalidRequest { message }
}

/// Checks `records` against `schema` and takes their dedupe keys: from [`KEY_FIELD`] when a
/// record has it, else from the `dedupe_column`. A NUL character anywhere is
/// [`IngestError::NulCharacter`]; unknown fields, values that do not fit their column's type exactly
/// (at any depth, see [`crate::values`]), and missing or null keys are [`IngestError::InvalidRecord`]; both
/// name the record and the field path. Pure: the whole request check after [`parse_body`].
pub fn prepare(
    records: Vec<Map<String, Value>>,
    schema: &[Column],
    dedupe_column: Option<&str>,
) -> Result<Vec<IngestRecord>, IngestError> {
    let schema = RecordSchema::new(schema);
    let mut prepared = Vec::with_capacity(records.len());
    for (index, mut record) in records.into_iter().enumerate() {
        if let Some(field) = crate::values::find_nul_in_record(&record) {
            return Err(IngestError::NulCharacter { record: index, field });
        }
        let fail = |field: &str, message: String| IngestError::InvalidRecord {
            record: index,
            field: Some(field.into()),
            message,
        };
        let explicit = record.remove(KEY_FIELD);
        schema.check_record(&record).map_err(|error| fail(&error.path, error.message))?;
        let key = match (explicit, dedupe_column) {
            (Some(value), _) => key_text(&value).map_err(|message| fail(KEY_FIELD, message))?,
            (None, Some(column)) => match record.get(column) {
                Some(value) => key_text(value).map_err(|message| fail(column, message))?,
                None => return Err(fail(column, "the dedupe key column is missing".into())),
            },
            (None, None) => {
                return Err(fail(
                    KEY_FIELD,
                    format!(
                        "the dataset declares no dedupe key column (spec.ingest.dedupeKey); give each record a \
                         {KEY_FIELD:?} field"
                    ),
                ));
            }
        };
        prepared.push(IngestRecord { key, payload: Value::Object(record) });
    }
    Ok(prepared)
}

/// A dedupe key's text, which is what keys are compared by: a string as is, a number as
/// JSON spells it (`7`, `-3`, `2.5`; so the number `7` and the string `"7"` are the same key),
/// `true`/`false`.
pub fn key_text(value: &Value) -> std::result::Result<String, String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => return Err(format!("a dedupe key must be a string, number or boolean, got {}", kind_of(other))),
    };
    if text.is_empty() || text.len() > MAX_DEDUPE_KEY_BYTES {
        return Err(format!("a dedupe key must be 1 to {MAX_DEDUPE_KEY_BYTES} bytes"));
    }
    Ok(text)
}

/// Whether `value` is a value of DuckDB type `data_type` exactly (any spelling of the type;
/// see [`crate::values`]). `null` fits every column.
pub fn check_value(data_type: &str, value: &Value) -> std::result::Result<(), String> {
    DataType::parse(data_type).check(value, &mut String::new()).map_err(|error| error.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Vec<Column> {
        [("id", "BIGINT"), ("amount", "DECIMAL(12,2)"), ("day", "DATE"), ("ok", "BOOLEAN"), ("tags", "VARCHAR[]")]
            .iter()
            .map(|(name, data_type)| Column { name: (*name).into(), data_type: (*data_type).into() })
            .collect()
    }

    fn records(body: &str) -> Vec<Map<String, Value>> {
        parse_body(body.as_bytes(), 100).expect("parses")
    }

    #[test]
    fn bodies_are_arrays_or_ndjson() {
        assert_eq!(records(r#"[{"id": 1}, {"id": 2}]"#).len(), 2);
        assert_eq!(records("{\"id\": 1}\n\n{\"id\": 2}\n").len(), 2);
        let cases: &[(&str, &str)] = &[
            ("", "invalid_request"),
            ("[]", "invalid_request"),
            ("[1, {\"id\": 1}]", "invalid_record"),
            ("{\"id\": 1}\nnot json", "invalid_request"),
            ("[{\"id\": 1}", "invalid_request"),
        ];
        for (body, code) in cases {
            let error = parse_body(body.as_bytes(), 100).expect_err(body);
            assert_eq!(error.error_code(), *code, "{body:?}: {error}");
        }
        let error = parse_body(b"{\"id\":1}\n{\"id\":2}\n{\"id\":3}", 2).expect_err("too many");
        assert!(error.to_string().contains("at most 2 records"), "{error}");
        parse_body(b"{\"id\":1}\n{\"id\":2}\n", 2).expect("exactly the limit");
        assert!(parse_body(br#"[{"id":1},{"id":2},{"id":3}]"#, 2).is_err());
    }

    #[test]
    fn keys_come_from_the_column_or_the_explicit_field() {
        let prepared = prepare(
            records(r#"[{"id": 7, "day": "2024-01-02"}, {"id": 8, "_dedupe_key": "custom"}]"#),
            &schema(),
            Some("id"),
        )
        .expect("valid");
        assert_eq!(prepared[0].key, "7");
        assert_eq!(prepared[1].key, "custom");
        assert_eq!(prepared[1].payload, json!({"id": 8}), "the explicit key is not a column");
        let error = prepare(records(r#"[{"day": "2024-01-02"}]"#), &schema(), None).expect_err("no key");
        assert!(error.to_string().contains("_dedupe_key"), "{error}");
    }

    #[test]
    fn errors_name_the_record_and_field() {
        let cases: &[(&str, usize, &str)] = &[
            (r#"[{"id": 1}, {"id": 2, "nope": 1}]"#, 1, "nope"),
            (r#"[{"id": "x"}]"#, 0, "id"),
            (r#"[{"id": 1}, {"id": 2}, {"id": 1.5}]"#, 2, "id"),
            (r#"[{"id": 1, "amount": "12"}]"#, 0, "amount"),
            (r#"[{"id": 1, "ok": 1}]"#, 0, "ok"),
            (r#"[{"id": 1, "tags": "a"}]"#, 0, "tags"),
            (r#"[{"id": 1, "day": 20240101}]"#, 0, "day"),
            (r#"[{"amount": 1}]"#, 0, "id"),
            (r#"[{"id": null}]"#, 0, "id"),
        ];
        for (body, record, field) in cases {
            match prepare(records(body), &schema(), Some("id")) {
                Err(IngestError::InvalidRecord { record: r, field: Some(f), .. }) => {
                    assert_eq!((r, f.as_str()), (*record, *field), "{body}");
                }
                other => panic!("{body}: expected invalid_record, got {other:?}"),
            }
        }
        prepare(
            records(r#"[{"id": 1, "amount": 3.5, "day": null, "ok": true, "tags": ["a"]}]"#),
            &schema(),
            Some("id"),
        )
        .expect("valid record");
    }

    #[test]
    fn integer_ranges_follow_the_type() {
        assert!(check_value("TINYINT", &json!(127)).is_ok());
        assert!(check_value("TINYINT", &json!(128)).is_err());
        assert!(check_value("UBIGINT", &json!(u64::MAX)).is_ok());
        assert!(check_value("UINTEGER", &json!(-1)).is_err());
        assert!(check_value("integer", &json!(5)).is_ok());
        assert!(check_value("int4", &json!(1_u64 << 40)).is_err(), "aliases take their type's range");
        assert!(check_value("text", &json!(5)).is_err());
        assert!(check_value("numeric(10, 2)", &json!(1.25)).is_ok());
        assert!(check_value("JSON", &json!({"a": [1]})).is_ok());
        assert!(check_value("TIMESTAMP WITH TIME ZONE", &json!("2024-01-01T00:00:00Z")).is_ok());
        assert!(check_value("STRUCT(a INTEGER)", &json!({"a": 1})).is_ok());
    }

    #[test]
    fn a_byte_order_mark_before_the_body_is_skipped() {
        assert_eq!(parse_body("\u{feff}[{\"id\": 1}]".as_bytes(), 100).expect("array").len(), 1);
        assert_eq!(parse_body("\u{feff}{\"id\": 1}\n{\"id\": 2}".as_bytes(), 100).expect("ndjson").len(), 2);
        assert!(parse_body("[{\"id\": 1}]\u{feff}".as_bytes(), 100).is_err(), "only at the start");
    }

    #[test]
    fn a_nul_anywhere_is_refused_naming_record_and_path() {
        let cases: &[(&str, usize, &str)] = &[
            (r#"[{"id": 1}, {"id": 2, "tags": ["a", "b\u0000"]}]"#, 1, "tags[1]"),
            (r#"[{"id": 1, "_dedupe_key": "k\u0000"}]"#, 0, "_dedupe_key"),
            (r#"[{"id": 1, "nope\u0000": 1}]"#, 0, "nope\u{0}"),
        ];
        for (body, record, field) in cases {
            match prepare(records(body), &schema(), Some("id")) {
                Err(IngestError::NulCharacter { record: r, field: f }) => {
                    assert_eq!((r, f.as_str()), (*record, *field))
                }
                other => panic!("{body}: expected nul_character, got {other:?}"),
            }
        }
        let error = prepare(records(r#"[{"id": 1, "tags": ["\u0000"]}]"#), &schema(), Some("id")).expect_err("nul");
        assert_eq!(error.error_code(), "nul_character");
    }

    #[test]
    fn nested_values_are_checked_exactly() {
        let schema: Vec<Column> =
            [("id", "INTEGER"), ("m", "MAP(VARCHAR,INTEGER)"), ("s", "STRUCT(x INTEGER)"), ("l", "INTEGER[]")]
                .iter()
                .map(|(name, data_type)| Column { name: (*name).into(), data_type: (*data_type).into() })
                .collect();
        let cases: &[(&str, &str)] = &[
            (r#"{"id": 1, "m": {"k": "notint"}}"#, "m.k"),
            (r#"{"id": 1, "s": {"y": 1}}"#, "s"),
            (r#"{"id": 1, "s": {}}"#, "s"),
            (r#"{"id": 1, "l": [1, "2", 3.7, 99999999999]}"#, "l[1]"),
            (r#"{"id": 1, "l": [1, 3.7]}"#, "l[1]"),
            (r#"{"id": 1, "l": [1, 99999999999]}"#, "l[1]"),
        ];
        for (body, field) in cases {
            match prepare(records(body), &schema, Some("id")) {
                Err(IngestError::InvalidRecord { record: 0, field: Some(f), .. }) => assert_eq!(f, *field, "{body}"),
                other => panic!("{body}: expected invalid_record, got {other:?}"),
            }
        }
        prepare(records(r#"{"id": 1, "m": {"k": 2}, "s": {"x": null}, "l": [1, null]}"#), &schema, Some("id"))
            .expect("valid");
    }

    #[test]
    fn dedupe_keys_compare_by_text() {
        assert_eq!(key_text(&json!(7)), key_text(&json!("7")), "the number 7 and the string \"7\" are one key");
        assert_eq!(key_text(&json!(true)).as_deref(), Ok("true"));
        assert_eq!(key_text(&json!(2.5)).as_deref(), Ok("2.5"));
        assert!(key_text(&json!([7])).is_err());
        assert!(key_text(&json!("")).is_err());
    }
}
