//! The statement check shared by the query API and the worker: one read-only query and nothing
//! else. DuckDB's own parser turns the text into a syntax tree (run [`SERIALIZE_SQL`] on any
//! DuckDB connection; no data or files are touched) and [`check`] decides from that tree, so
//! both callers accept and refuse exactly the same SQL. Pure: the caller runs the parser.
//!
//! Refused: anything that is not exactly one `SELECT` / `WITH … SELECT` / `VALUES` / `FROM …`
//! query (DDL, DML, `COPY`, `ATTACH`, `INSTALL`, `LOAD`, `SET`, `PRAGMA`, `CALL`, `EXPLAIN`,
//! several statements), table functions other than [`ALLOWED_TABLE_FUNCTIONS`], a file path or
//! URL used as a table, qualified names, and `DESCRIBE`/`SHOW`/`SUMMARIZE`. DuckDB's sandbox
//! settings enforce file access independently; this check gives a clear error before any work.

use serde_json::Value;
use std::collections::BTreeSet;

/// The query that serializes SQL into the syntax tree [`check`] reads: bind the SQL text as its
/// one parameter and read one `VARCHAR` back (DuckDB's `json` extension, built in).
pub const SERIALIZE_SQL: &str = "SELECT json_serialize_sql(?::VARCHAR)";

/// Table functions a query may call: they generate rows and touch nothing outside.
pub const ALLOWED_TABLE_FUNCTIONS: &[&str] = &["range", "generate_series", "unnest"];

/// The query node types DuckDB's serializer writes for a read-only query (`SELECT`, `VALUES`,
/// `FROM …`, set operations, CTEs). A statement whose node is anything else is refused: the check
/// accepts only what it understands.
pub const QUERY_NODE_TYPES: &[&str] = &["SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"];

/// What an accepted query reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// The table names it reads (lower-case, without CTE names), sorted.
    pub tables: Vec<String>,
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// The SQL does not parse, or is empty.
    #[error("{message}")]
    Invalid {
        /// DuckDB's parser message.
        message: String,
    },
    /// The SQL parses but is not exactly one read-only query over datasets.
    #[error("{message}")]
    NotAllowed {
        /// What is not allowed.
        message: String,
    },
    /// The parser's answer could not be read (a fault on our side, not the user's).
    #[error("unreadable parser output: {message}")]
    Unreadable {
        /// The JSON error.
        message: String,
    },
}

impl StatementError {
    /// A stable code; callers usually map the variants onto their own codes.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "sql_invalid",
            Self::NotAllowed { .. } => "sql_not_allowed",
            Self::Unreadable { .. } => "sql_parser_output_unreadable",
        }
    }
}

/// Checks the parser's JSON (the answer of [`SERIALIZE_SQL`]) for one SQL text.
pub fn check(parser_json: &str) -> Result<Analysis, StatementError> {
    let tree: Value =
        serde_json::from_str(parser_json).map_err(|error| StatementError::Unreadable { message: error.to_string() })?;
    let Some(failed) = tree.get("error").and_then(Value::as_bool) else {
        return Err(StatementError::Unreadable { message: "no boolean `error` field".into() });
    };
    if failed {
        let message = tree.get("error_message").and_then(Value::as_str).unwrap_or("the SQL does not parse");
        let kind = tree.get("error_type").and_then(Value::as_str).unwrap_or_default();
        return Err(if message.contains("Only SELECT statements") || kind == "not implemented" {
            not_allowed(
                "only read-only queries (SELECT, WITH … SELECT, VALUES, FROM …) are allowed; DDL, DML, COPY, ATTACH, \
                 INSTALL, LOAD, SET, PRAGMA, CALL and EXPLAIN are not",
            )
        } else {
            StatementError::Invalid { message: parser_message(kind, message) }
        });
    }
    let statements = tree.get("statements").and_then(Value::as_array).map_or(0, Vec::len);
    match statements {
        1 => {}
        0 => return Err(StatementError::Invalid { message: "the SQL is empty".into() }),
        n => return Err(not_allowed(&format!("exactly one statement is allowed, found {n}"))),
    }
    let statement = &tree["statements"][0];
    let node_type = statement.get("node").and_then(|node| node.get("type")).and_then(Value::as_str);
    if !node_type.is_some_and(|kind| QUERY_NODE_TYPES.contains(&kind)) {
        return Err(not_allowed(&format!(
            "only read-only queries are allowed; the parser reports a {} statement",
            node_type.unwrap_or("malformed")
        )));
    }
    let mut tables = BTreeSet::new();
    let mut ctes = BTreeSet::new();
    walk(statement, &mut tables, &mut ctes)?;
    Ok(Analysis { tables: tables.into_iter().filter(|name| !ctes.contains(name)).collect() })
}

/// DuckDB's message with its error class in front (`Parser Error: …`), as DuckDB itself shows
/// errors; the serializer reports the class separately.
fn parser_message(kind: &str, message: &str) -> String {
    if kind.is_empty() || message.contains(" Error: ") {
        return message.to_owned();
    }
    let mut class: Vec<String> = kind
        .split_whitespace()
        .map(|word| {
            let mut letters = word.chars();
            letters.next().map(|first| first.to_uppercase().chain(letters).collect()).unwrap_or_default()
        })
        .collect();
    class.push("Error:".into());
    format!("{} {message}", class.join(" "))
}

fn not_allowed(message: &str) -> StatementError {
    StatementError::NotAllowed { message: message.to_owned() }
}

fn walk(node: &Value, tables: &mut BTreeSet<String>, ctes: &mut BTreeSet<String>) -> Result<(), StatementError> {
    match node {
        Value::Array(items) => items.iter().try_for_each(|item| walk(item, tables, ctes)),
        Value::Object(object) => {
            if let Some(map) = object.get("cte_map").and_then(|m| m.get("map")).and_then(Value::as_array) {
                for entry in map {
                    if let Some(name) = entry.get("key").and_then(Value::as_str) {
                        ctes.insert(name.to_lowercase());
                    }
                }
            }
            // Expressions carry a "class"; table references and query nodes do not.
            if !object.contains_key("class") {
                match object.get("type").and_then(Value::as_str) {
                    Some("BASE_TABLE") => {
                        tables.insert(table_name(object)?);
                    }
                    Some("TABLE_FUNCTION") => check_table_function(object)?,
                    Some("SHOW_REF") => return Err(not_allowed("DESCRIBE, SHOW and SUMMARIZE are not supported")),
                    _ => {}
                }
            }
            object.values().try_for_each(|value| walk(value, tables, ctes))
        }
        _ => Ok(()),
    }
}

fn table_name(object: &serde_json::Map<String, Value>) -> Result<String, StatementError> {
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
    let name = text("table_name");
    if !text("schema_name").is_empty() || !text("catalog_name").is_empty() {
        return Err(not_allowed(&format!(
            "qualified table names are not supported ({}); name datasets directly",
            [text("catalog_name"), text("schema_name"), name]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(".")
        )));
    }
    // Dataset names are DNS labels; anything else in FROM is DuckDB reading a file or URL.
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(not_allowed(&format!("{name:?} is not a dataset name: SQL cannot read files or URLs")));
    }
    Ok(name.to_lowercase())
}

fn check_table_function(object: &serde_json::Map<String, Value>) -> Result<(), StatementError> {
    let name = object
        .get("function")
        .and_then(|function| function.get("function_name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    if ALLOWED_TABLE_FUNCTIONS.contains(&name.as_str()) {
        return Ok(());
    }
    Err(not_allowed(&format!(
        "table function {name}() is not allowed: SQL reads datasets only (allowed: {})",
        ALLOWED_TABLE_FUNCTIONS.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_errors_keep_their_class() {
        let json = r#"{"error":true,"error_type":"parser","error_message":"syntax error at or near \"SELEC\""}"#;
        let error = check(json).expect_err("does not parse");
        assert_eq!(error.error_code(), "sql_invalid");
        assert_eq!(error.to_string(), "Parser Error: syntax error at or near \"SELEC\"");
        assert_eq!(parser_message("", "x"), "x");
        assert_eq!(parser_message("not implemented", "x"), "Not Implemented Error: x");
    }

    #[test]
    fn several_statements_and_unreadable_output_are_refused() {
        let two = r#"{"error":false,"statements":[{"node":{}},{"node":{}}]}"#;
        assert_eq!(check(two).expect_err("two").error_code(), "sql_not_allowed");
        let none = r#"{"error":false,"statements":[]}"#;
        assert_eq!(check(none).expect_err("none").error_code(), "sql_invalid");
        assert_eq!(check("not json").expect_err("garbage").error_code(), "sql_parser_output_unreadable");
        let not_select = r#"{"error":true,"error_type":"not implemented","error_message":"Only SELECT statements can be serialized to json!"}"#;
        assert_eq!(check(not_select).expect_err("DDL").error_code(), "sql_not_allowed");
    }
}
