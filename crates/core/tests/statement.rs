//! Inputs the fuzz targets (`fuzz/`, `just fuzz`) use as invariants of the statement check: it
//! accepts only what it understands. Each case was accepted before the check required a known
//! query node and a boolean `error` field.

use duckmesh_core::statement::{QUERY_NODE_TYPES, check};

#[test]
fn statements_it_does_not_understand_are_refused() {
    let cases = [
        // No node at all, or a node of no known type.
        r#"{"error":false,"statements":[42]}"#,
        r#"{"error":false,"statements":[{}]}"#,
        r#"{"error":false,"statements":[{"node":{}}]}"#,
        r#"{"error":false,"statements":[{"node":{"type":"INSERT_NODE"}}]}"#,
        r#"{"error":false,"statements":[{"node":{"type":7}}]}"#,
    ];
    for json in cases {
        assert_eq!(check(json).expect_err(json).error_code(), "sql_not_allowed", "{json}");
    }
}

#[test]
fn parser_output_without_a_boolean_error_field_is_unreadable() {
    for json in [
        r#"{"statements":[{"node":{"type":"SELECT_NODE"}}]}"#,
        r#"{"error":"false","statements":[{"node":{"type":"SELECT_NODE"}}]}"#,
        r#"{"error":0,"statements":[{"node":{"type":"SELECT_NODE"}}]}"#,
        "[]",
        "null",
    ] {
        assert_eq!(check(json).expect_err(json).error_code(), "sql_parser_output_unreadable", "{json}");
    }
}

#[test]
fn every_known_query_node_is_accepted() {
    for node in QUERY_NODE_TYPES {
        let json = format!(r#"{{"error":false,"statements":[{{"node":{{"type":"{node}"}}}}]}}"#);
        assert!(check(&json).is_ok(), "{json}");
    }
}
