//! Shared pieces of the fuzz targets: a JSON tree `arbitrary` can build (biased towards the keys
//! and values of DuckDB's parser output) and the invariant every accepted statement holds.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};

/// Keys and strings that DuckDB's `json_serialize_sql` output uses and the statement check
/// reads, so random trees reach the interesting branches.
const WORDS: &[&str] = &[
    "error",
    "error_type",
    "error_message",
    "statements",
    "node",
    "type",
    "class",
    "from_table",
    "cte_map",
    "map",
    "key",
    "value",
    "query",
    "table_name",
    "schema_name",
    "catalog_name",
    "function",
    "function_name",
    "children",
    "select_list",
    "left",
    "right",
    "SELECT_NODE",
    "SET_OPERATION_NODE",
    "RECURSIVE_CTE_NODE",
    "CTE_NODE",
    "BASE_TABLE",
    "TABLE_FUNCTION",
    "SUBQUERY",
    "JOIN",
    "EMPTY",
    "EXPRESSION_LIST",
    "SHOW_REF",
    "COLUMN_REF",
    "FUNCTION",
    "SUBQUERY",
    "range",
    "read_csv",
    "unnest",
    "trips",
    "/etc/passwd",
    "https://example.com/x.parquet",
    "not implemented",
    "parser",
    "Only SELECT statements can be serialized to json!",
];

/// A JSON value built by `arbitrary`.
#[derive(Debug)]
pub struct Tree(Value);

impl Tree {
    /// The JSON value.
    pub fn into_value(self) -> Value {
        self.0
    }
}

impl<'a> Arbitrary<'a> for Tree {
    fn arbitrary(input: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // A parser-shaped envelope most of the time, so the walk is reached.
        let body = value(input, 0)?;
        if input.ratio(1, 8)? {
            return Ok(Self(body));
        }
        let mut envelope = Map::new();
        envelope.insert("error".into(), if input.ratio(1, 8)? { value(input, 5)? } else { Value::Bool(false) });
        let count = if input.ratio(7, 8)? { 1 } else { input.int_in_range(0..=3)? };
        let statements = (0..count)
            .map(|_| {
                let mut statement = Map::new();
                statement.insert("node".into(), value(input, 1)?);
                Ok(Value::Object(statement))
            })
            .collect::<arbitrary::Result<Vec<_>>>()?;
        envelope.insert("statements".into(), Value::Array(statements));
        let _ = body;
        Ok(Self(Value::Object(envelope)))
    }
}

fn word(input: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(if input.ratio(3, 4)? { (*input.choose(WORDS)?).to_owned() } else { String::arbitrary(input)? })
}

fn value(input: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Value> {
    let leaf = depth >= 12 || input.is_empty();
    Ok(match input.int_in_range(0..=if leaf { 3 } else { 5 })? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(input)?),
        2 => Value::from(i64::arbitrary(input)?),
        3 => Value::String(word(input)?),
        4 => {
            let length = input.int_in_range(0..=4)?;
            Value::Array((0..length).map(|_| value(input, depth + 1)).collect::<arbitrary::Result<_>>()?)
        }
        _ => {
            let length = input.int_in_range(0..=6)?;
            let mut object = Map::new();
            for _ in 0..length {
                object.insert(word(input)?, value(input, depth + 1)?);
            }
            Value::Object(object)
        }
    })
}

/// What an accepted statement must be: one statement whose node is a query node DuckDB makes
/// for a read-only query, with sorted, lower-case dataset names.
pub fn assert_accepted(text: &str, analysis: &duckmesh_core::statement::Analysis) {
    let tree: Value = serde_json::from_str(text).expect("accepted text is JSON");
    assert_eq!(tree.get("error"), Some(&Value::Bool(false)), "accepted without error=false: {text}");
    let statements = tree.get("statements").and_then(Value::as_array).expect("accepted without statements");
    assert_eq!(statements.len(), 1, "accepted several statements: {text}");
    let node_type = statements[0].get("node").and_then(|node| node.get("type")).and_then(Value::as_str);
    assert!(
        node_type.is_some_and(|kind| duckmesh_core::statement::QUERY_NODE_TYPES.contains(&kind)),
        "accepted a statement whose node it does not know: {text}"
    );
    let mut sorted = analysis.tables.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, analysis.tables);
    for table in &analysis.tables {
        assert!(
            !table.is_empty()
                && table.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'),
            "accepted table name {table:?}"
        );
    }
}
