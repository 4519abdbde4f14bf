//! The statement check: DuckDB's own parser (`json_serialize_sql`) decides whether the text is
//! exactly one read-only query, and its syntax tree tells which datasets the query names and
//! whether it calls a table function that reads files or URLs. The sandbox settings of
//! [`crate::engine`] enforce the same independently; this check gives a clear 400 before any
//! work is done.

use crate::error::{Error, Result};
use duckdb::Connection;
use serde_json::Value;
use std::collections::BTreeSet;

/// Table functions a query may call: they generate rows and touch nothing outside.
pub const ALLOWED_TABLE_FUNCTIONS: &[&str] = &["range", "generate_series", "unnest"];

/// What a query reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// The table names it reads (lower-case, without CTE names), sorted.
    pub tables: Vec<String>,
}

/// Checks `sql` with DuckDB's parser on `connection` (no data or files are touched).
pub fn analyze(connection: &Connection, sql: &str) -> Result<Analysis> {
    let json: String = connection
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |row| row.get(0))
        .map_err(|error| Error::Engine { step: "parsing the query", message: error.to_string() })?;
    analyze_json(&json)
}

/// Checks the parser's JSON for `sql` (see [`analyze`]).
pub fn analyze_json(json: &str) -> Result<Analysis> {
    let tree: Value = serde_json::from_str(json)
        .map_err(|error| Error::Internal { message: format!("unreadable parser output: {error}") })?;
    if tree.get("error").and_then(Value::as_bool).unwrap_or(false) {
        let message = tree.get("error_message").and_then(Value::as_str).unwrap_or("the query does not parse");
        let kind = tree.get("error_type").and_then(Value::as_str).unwrap_or_default();
        return Err(if message.contains("Only SELECT statements") || kind == "not implemented" {
            not_allowed(
                "only read-only queries (SELECT, WITH … SELECT, VALUES, FROM …) are allowed; DDL, DML, COPY, ATTACH, \
                 INSTALL, LOAD, SET, PRAGMA, CALL and EXPLAIN are not",
            )
        } else {
            Error::QueryInvalid { message: message.to_owned() }
        });
    }
    let statements = tree.get("statements").and_then(Value::as_array).map_or(0, Vec::len);
    match statements {
        1 => {}
        0 => return Err(Error::QueryInvalid { message: "the query is empty".into() }),
        n => return Err(not_allowed(&format!("exactly one statement is allowed, found {n}"))),
    }
    let mut tables = BTreeSet::new();
    let mut ctes = BTreeSet::new();
    walk(&tree["statements"][0], &mut tables, &mut ctes)?;
    Ok(Analysis { tables: tables.into_iter().filter(|name| !ctes.contains(name)).collect() })
}

fn not_allowed(message: &str) -> Error {
    Error::QueryNotAllowed { message: message.to_owned() }
}

fn walk(node: &Value, tables: &mut BTreeSet<String>, ctes: &mut BTreeSet<String>) -> Result<()> {
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

fn table_name(object: &serde_json::Map<String, Value>) -> Result<String> {
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
        return Err(not_allowed(&format!("{name:?} is not a dataset name: queries cannot read files or URLs")));
    }
    Ok(name.to_lowercase())
}

fn check_table_function(object: &serde_json::Map<String, Value>) -> Result<()> {
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
        "table function {name}() is not allowed: queries read datasets only (allowed: {})",
        ALLOWED_TABLE_FUNCTIONS.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Analysis> {
        let connection = Connection::open_in_memory().expect("duckdb");
        analyze(&connection, sql)
    }

    #[test]
    fn read_only_queries_pass_and_name_their_datasets() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &[]),
            ("select * from Trips", &["trips"]),
            ("SELECT * FROM \"trips-clean\" JOIN zones USING (zone_id)", &["trips-clean", "zones"]),
            ("WITH t AS (SELECT * FROM trips) SELECT count(*) FROM t, zones", &["trips", "zones"]),
            ("FROM trips_clean", &["trips_clean"]),
            ("VALUES (1), (2)", &[]),
            ("SELECT * FROM range(10) r, (SELECT max(x) FROM facts) s;", &["facts"]),
            ("SELECT (SELECT count(*) FROM a) + (SELECT 1 FROM b WHERE EXISTS (SELECT 1 FROM c))", &["a", "b", "c"]),
            ("SELECT * FROM a UNION ALL SELECT * FROM b", &["a", "b"]),
        ];
        for (sql, tables) in cases {
            let analysis = parse(sql).unwrap_or_else(|error| panic!("{sql}: {error}"));
            assert_eq!(analysis.tables, tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(), "{sql}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_a_code() {
        let cases: &[(&str, &str)] = &[
            ("SELECT * FROM read_csv('/etc/passwd')", "query_not_allowed"),
            ("SELECT * FROM read_parquet('/var/lib/x.parquet')", "query_not_allowed"),
            ("SELECT * FROM glob('/etc/*')", "query_not_allowed"),
            ("SELECT * FROM '/etc/passwd'", "query_not_allowed"),
            ("SELECT * FROM 'https://example.com/x.parquet'", "query_not_allowed"),
            ("SELECT * FROM read_text('/etc/hostname')", "query_not_allowed"),
            ("SELECT * FROM query('SELECT 1')", "query_not_allowed"),
            ("SELECT * FROM duckdb_settings()", "query_not_allowed"),
            ("SELECT (SELECT count(*) FROM read_blob('/etc/passwd'))", "query_not_allowed"),
            ("SELECT * FROM information_schema.tables", "query_not_allowed"),
            ("ATTACH '/tmp/x.db' AS x", "query_not_allowed"),
            ("INSTALL httpfs", "query_not_allowed"),
            ("LOAD httpfs", "query_not_allowed"),
            ("COPY (SELECT 1) TO '/tmp/out.csv'", "query_not_allowed"),
            ("SET enable_external_access = true", "query_not_allowed"),
            ("PRAGMA database_list", "query_not_allowed"),
            ("CREATE TABLE t AS SELECT 1", "query_not_allowed"),
            ("SELECT 1; SELECT 2", "query_not_allowed"),
            ("SELECT 1; DROP TABLE x", "query_not_allowed"),
            ("EXPLAIN SELECT 1", "query_not_allowed"),
            ("SELECT FROM WHERE", "query_invalid"),
            ("", "query_invalid"),
        ];
        for (sql, code) in cases {
            let error = parse(sql).expect_err(sql);
            assert_eq!(error.error_code(), *code, "{sql}: {error}");
        }
    }
}
