//! SQL text built from names, paths and declared types: the one quoting of DuckMesh's DuckDB
//! statements, and the check that a declared column type cannot escape the cast it is put in.

use std::path::Path;

/// A SQL string literal: `it's` → `'it''s'`.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A quoted SQL identifier: `a"b` → `"a""b"`.
pub fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A local path as a SQL string literal.
pub fn path_literal(path: &Path) -> String {
    literal(&path.to_string_lossy())
}

/// Whether `text` can stand as the type in `CAST(NULL AS <text>)` without ending that
/// expression: no statement separator, no comment, no quote left open, and parentheses that
/// balance without ever closing one the text did not open. `DECIMAL(18,3)`,
/// `STRUCT(a INTEGER, "b c" VARCHAR[])` and `MAP(VARCHAR, BOOLEAN)` pass;
/// `INT); DROP TABLE t; --` does not. Whether DuckDB knows the type is DuckDB's to say.
pub fn is_type_text(text: &str) -> bool {
    if text.trim().is_empty() || text.contains("--") || text.contains("/*") {
        return false;
    }
    let mut depth = 0usize;
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            ';' | '\'' => return false,
            '(' => depth += 1,
            ')' => match depth.checked_sub(1) {
                Some(outer) => depth = outer,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0 && !quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(path_literal(Path::new("/tmp/o'brien/x.parquet")), "'/tmp/o''brien/x.parquet'");
    }

    #[test]
    fn type_text_cannot_escape_its_cast() {
        for good in [
            "BIGINT",
            "DECIMAL(18,3)",
            "VARCHAR[]",
            "INTEGER[3]",
            "STRUCT(a INTEGER, \"b c\" VARCHAR[])",
            "STRUCT(\"x)\" INTEGER)",
            "MAP(VARCHAR, BOOLEAN)",
            "UNION(n INTEGER, s VARCHAR)",
            "TIMESTAMP WITH TIME ZONE",
        ] {
            assert!(is_type_text(good), "{good}");
        }
        for bad in [
            "",
            "  ",
            "INT); DROP TABLE y; --",
            "INT) AS x, (SELECT 1",
            "INT)",
            "STRUCT(a INT",
            "INT -- comment",
            "INT /* c */",
            "VARCHAR DEFAULT 'x'",
            "STRUCT(\"a INT)",
            "INT; SELECT 1",
        ] {
            assert!(!is_type_text(bad), "{bad}");
        }
    }
}
