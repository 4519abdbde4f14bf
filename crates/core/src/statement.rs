//! The statement check shared by the query API and the worker: one read-only query and nothing
//! else. DuckDB's own parser turns the text into a syntax tree (run [`SERIALIZE_SQL`] on any
//! DuckDB connection; no data or files are touched) and [`check`] decides from that tree, so
//! both callers accept and refuse exactly the same SQL. Pure: the caller runs the parser.
//!
//! Refused: anything that is not exactly one `SELECT` / `WITH … SELECT` / `VALUES` / `FROM …`
//! query (DDL, DML, `COPY`, `ATTACH`, `INSTALL`, `LOAD`, `SET`, `PRAGMA`, `CALL`, `EXPLAIN`,
//! several statements), table functions other than [`ALLOWED_TABLE_FUNCTIONS`], a file path or
//! URL used as a table, qualified names, `DESCRIBE`/`SHOW`/`SUMMARIZE`, and functions that read
//! the server's settings, variables or secrets ([`is_denied_function`]). DuckDB's sandbox
//! settings enforce file access independently; this check gives a clear error before any work.
//! `PIVOT`/`UNPIVOT` in `FROM` are read-only and allowed.
//!
//! Deep trees (long operator chains, nested subqueries) are read without serde_json's recursion
//! limit, on a thread with a large stack, after a cheap scan has bounded their depth by
//! [`MAX_TREE_DEPTH`]: a deep but sane statement is checked, a deeper one is refused as too
//! complex, and neither is ever a fault.

use serde::Deserialize;
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

/// The deepest parser tree (JSON nesting) [`check`] reads. DuckDB's parser refuses expressions
/// nested deeper than 1000 levels itself; its trees stay well below this.
pub const MAX_TREE_DEPTH: usize = 8192;

/// Trees nested deeper than this are read on a thread of [`DEEP_STACK_BYTES`].
const SHALLOW_TREE_DEPTH: usize = 96;

/// The stack of the thread that reads a deep tree (reserved, touched only as deep as needed).
const DEEP_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Scalar functions a query may not call, besides every `duckdb_*` and `pragma_*` function:
/// they reveal the server's configuration (paths among it), variables or secrets.
pub const DENIED_FUNCTIONS: &[&str] =
    &["current_setting", "getvariable", "which_secret", "getenv", "get_current_setting", "current_setting_value"];

/// Whether `name` (any case) is a function that reads the server's settings, variables,
/// secrets, databases, extensions or files: [`DENIED_FUNCTIONS`] and every `duckdb_*` or
/// `pragma_*` function.
pub fn is_denied_function(name: &str) -> bool {
    let name = name.to_lowercase();
    DENIED_FUNCTIONS.contains(&name.as_str()) || name.starts_with("duckdb_") || name.starts_with("pragma_")
}

/// Size limits a caller may add to the check (the query API does; the worker does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeLimits {
    /// Most expressions in one select list (`None`: unlimited).
    pub max_select_expressions: Option<usize>,
}

/// What an accepted query reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// The table names it reads (lower-case, without CTE names), sorted.
    pub tables: Vec<String>,
    /// For a `PIVOT` whose values come from the data: the probes to run first and the
    /// statement to complete with their answers (see [`crate::pivot`]). The check itself never
    /// sets it; the query API does, after checking the probes and the completed statement's
    /// shape.
    pub pivot: Option<crate::pivot::DynamicPivot>,
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
    /// The statement is larger or deeper than the limits allow.
    #[error("{message}")]
    TooComplex {
        /// Which limit, and by how much.
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
            Self::TooComplex { .. } => "sql_too_complex",
            Self::Unreadable { .. } => "sql_parser_output_unreadable",
        }
    }
}

/// Checks the parser's JSON (the answer of [`SERIALIZE_SQL`]) for one SQL text.
pub fn check(parser_json: &str) -> Result<Analysis, StatementError> {
    check_with(parser_json, TreeLimits::default())
}

/// [`check`] with size `limits` on the tree.
pub fn check_with(parser_json: &str, limits: TreeLimits) -> Result<Analysis, StatementError> {
    let depth = json_depth(parser_json);
    if depth > MAX_TREE_DEPTH {
        return Err(StatementError::TooComplex {
            message: format!(
                "the statement is nested too deeply ({depth} levels in the parser's tree, limit {MAX_TREE_DEPTH})"
            ),
        });
    }
    if depth <= SHALLOW_TREE_DEPTH {
        return check_tree(parser_json, limits);
    }
    // Reading, walking and dropping the tree all recurse once per level.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("sql-check".into())
            .stack_size(DEEP_STACK_BYTES)
            .spawn_scoped(scope, || check_tree(parser_json, limits))
            .map_err(|error| StatementError::Unreadable { message: format!("starting the check thread: {error}") })?
            .join()
            .map_err(|_| StatementError::Unreadable { message: "the check thread panicked".into() })?
    })
}

/// The deepest nesting of arrays and objects in `json`, without parsing it (strings skipped).
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn check_tree(parser_json: &str, limits: TreeLimits) -> Result<Analysis, StatementError> {
    let unreadable = |error: serde_json::Error| StatementError::Unreadable { message: error.to_string() };
    // The depth is bounded by `check_with` and the stack sized for it.
    let mut deserializer = serde_json::Deserializer::from_str(parser_json);
    deserializer.disable_recursion_limit();
    let tree = Value::deserialize(&mut deserializer).map_err(unreadable)?;
    deserializer.end().map_err(unreadable)?;
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
    walk(statement, limits, &mut tables, &mut ctes)?;
    Ok(Analysis { tables: tables.into_iter().filter(|name| !ctes.contains(name)).collect(), pivot: None })
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

fn walk(
    node: &Value,
    limits: TreeLimits,
    tables: &mut BTreeSet<String>,
    ctes: &mut BTreeSet<String>,
) -> Result<(), StatementError> {
    match node {
        Value::Array(items) => items.iter().try_for_each(|item| walk(item, limits, tables, ctes)),
        Value::Object(object) => {
            if let (Some(limit), Some(list)) =
                (limits.max_select_expressions, object.get("select_list").and_then(Value::as_array))
                && list.len() > limit
            {
                return Err(StatementError::TooComplex {
                    message: format!("a select list has {} expressions; the limit is {limit}", list.len()),
                });
            }
            if let Some(map) = object.get("cte_map").and_then(|m| m.get("map")).and_then(Value::as_array) {
                for entry in map {
                    if let Some(name) = entry.get("key").and_then(Value::as_str) {
                        ctes.insert(name.to_lowercase());
                    }
                }
            }
            // Expressions carry a "class"; table references and query nodes do not.
            if object.get("class").and_then(Value::as_str) == Some("FUNCTION") {
                let name = object.get("function_name").and_then(Value::as_str).unwrap_or_default();
                if is_denied_function(name) {
                    return Err(not_allowed(&format!(
                        "function {}() is not allowed: SQL cannot read the server's settings, variables, secrets \
                         or databases",
                        name.to_lowercase()
                    )));
                }
            }
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
            object.values().try_for_each(|value| walk(value, limits, tables, ctes))
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
    if ALLOWED_TABLE_FUNCTIONS.contains(&name.as_str()) && !is_denied_function(&name) {
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

    /// A `SELECT <expr>` tree as DuckDB serializes it, with `expr` in the select list.
    fn select(expr: &str) -> String {
        format!(
            r#"{{"error":false,"statements":[{{"node":{{"type":"SELECT_NODE","cte_map":{{"map":[]}},"select_list":[{expr}],"from_table":{{"type":"EMPTY"}}}}}}]}}"#
        )
    }

    fn function(name: &str, children: &str) -> String {
        format!(
            r#"{{"class":"FUNCTION","type":"FUNCTION","function_name":"{name}","schema":"","children":[{children}]}}"#
        )
    }

    const CONSTANT: &str = r#"{"class":"CONSTANT","type":"VALUE_CONSTANT","value":{"value":1}}"#;

    #[test]
    fn functions_that_reveal_settings_are_refused_by_name() {
        for name in [
            "current_setting",
            "CURRENT_SETTING",
            "getvariable",
            "which_secret",
            "duckdb_settings",
            "duckdb_databases",
            "pragma_database_list",
        ] {
            let nested = function("upper", &function(name, CONSTANT));
            let error = check(&select(&nested)).expect_err(name);
            assert_eq!(error.error_code(), "sql_not_allowed", "{name}");
            assert!(error.to_string().contains(&format!("{}()", name.to_lowercase())), "{error}");
        }
        assert!(check(&select(&function("upper", CONSTANT))).is_ok());
        for name in
            ["duckdb_settings", "duckdb_extensions", "duckdb_temporary_files", "duckdb_secrets", "pragma_version"]
        {
            let table = format!(
                r#"{{"error":false,"statements":[{{"node":{{"type":"SELECT_NODE","select_list":[],"from_table":{{"type":"TABLE_FUNCTION","function":{}}}}}}}]}}"#,
                function(name, "")
            );
            let error = check(&table).expect_err(name);
            assert_eq!(error.error_code(), "sql_not_allowed");
            assert!(error.to_string().contains(&format!("{name}()")), "{error}");
        }
        assert!(is_denied_function("DuckDB_Secrets") && !is_denied_function("sum"));
    }

    #[test]
    fn deep_trees_are_read_and_too_deep_ones_refused() {
        // 2000 nested additions: far past serde_json's default recursion limit of 128.
        let mut expr = CONSTANT.to_owned();
        for _ in 0..2000 {
            expr = function("+", &format!("{expr},{CONSTANT}"));
        }
        let json = select(&expr);
        assert!(json_depth(&json) > 4000);
        assert_eq!(check(&json).expect("deep but sane"), Analysis::default());

        let too_deep = format!("{}{}", "[".repeat(MAX_TREE_DEPTH + 1), "]".repeat(MAX_TREE_DEPTH + 1));
        assert_eq!(check(&too_deep).expect_err("too deep").error_code(), "sql_too_complex");
        assert_eq!(json_depth(r#"{"a":"[[[{{\"","b":[1]}"#), 2);
    }

    #[test]
    fn the_select_list_width_is_limited_on_request() {
        let wide = select(&[CONSTANT; 11].join(","));
        assert!(check(&wide).is_ok(), "no limit by default");
        let limits = TreeLimits { max_select_expressions: Some(10) };
        let error = check_with(&wide, limits).expect_err("too wide");
        assert_eq!(error.error_code(), "sql_too_complex");
        assert!(error.to_string().contains("11 expressions"), "{error}");
        assert!(check_with(&select(&[CONSTANT; 10].join(",")), limits).is_ok());
    }
}
