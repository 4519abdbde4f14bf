//! DuckDB type names in one spelling. A Dataset may declare `int`, `text` or `numeric(10,2)`
//! while DuckDB describes a task's output as `INTEGER`, `VARCHAR` and `DECIMAL(10,2)`; the
//! catalog stores and compares the canonical spelling DuckDB itself reports, so a schema
//! check never fails over an alias or letter case.

use serde::{Deserialize, Serialize};

/// One column of a dataset's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// DuckDB type name, e.g. `BIGINT`, `VARCHAR`, `TIMESTAMP WITH TIME ZONE`.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// The name DuckDB reports for the type written as `text` (as `DESCRIBE` prints it): aliases
/// resolved, upper case, one space between words, `DECIMAL` with its precision and scale,
/// nested types (`[]` lists and arrays, `STRUCT`, `MAP`, `UNION`) canonical inside. Names it
/// does not know (`ENUM(...)`, user types) are only upper-cased and tidied.
pub fn canonical_type(text: &str) -> String {
    let text = squeeze(text);
    if let Some(open) = text.rfind('[')
        && text.ends_with(']')
        && depth_at(&text, open) == 0
    {
        return format!("{}{}", canonical_type(&text[..open]), text[open..].replace(' ', ""));
    }
    if let Some(open) = text.find('(')
        && text.ends_with(')')
    {
        let base = text[..open].trim().to_ascii_uppercase();
        let inner = &text[open + 1..text.len() - 1];
        return with_arguments(&base, inner);
    }
    let upper = text.to_ascii_uppercase();
    alias(&upper).map_or(upper, str::to_owned)
}

/// A type with arguments: `DECIMAL(p, s)`, `VARCHAR(n)`, `STRUCT(name type, ...)`,
/// `MAP(key, value)`, `UNION(name type, ...)`.
fn with_arguments(base: &str, inner: &str) -> String {
    let parts = split_top_level(inner);
    match base {
        "DECIMAL" | "NUMERIC" => {
            let numbers: Vec<&str> = parts.iter().map(|part| part.trim()).collect();
            match numbers.as_slice() {
                [precision] => format!("DECIMAL({precision},0)"),
                [precision, scale] => format!("DECIMAL({precision},{scale})"),
                _ => format!("DECIMAL({})", numbers.join(",")),
            }
        }
        // DuckDB keeps no length on strings.
        "VARCHAR" | "CHAR" | "BPCHAR" | "TEXT" | "STRING" | "NVARCHAR" => "VARCHAR".into(),
        "MAP" => {
            let types: Vec<String> = parts.iter().map(|part| canonical_type(part)).collect();
            format!("MAP({})", types.join(", "))
        }
        "STRUCT" | "ROW" | "UNION" => {
            let fields: Vec<String> = parts
                .iter()
                .map(|field| match split_field(field.trim()) {
                    Some((name, data_type)) => format!("{name} {}", canonical_type(data_type)),
                    None => field.trim().to_owned(),
                })
                .collect();
            let base = if base == "ROW" { "STRUCT" } else { base };
            format!("{base}({})", fields.join(", "))
        }
        _ => {
            let base = alias(base).unwrap_or(base);
            let arguments: Vec<&str> = parts.iter().map(|part| part.trim()).collect();
            format!("{base}({})", arguments.join(", "))
        }
    }
}

/// DuckDB's own name for an alias (the argument is upper case), or `None` if it is not one.
fn alias(upper: &str) -> Option<&'static str> {
    Some(match upper {
        "BOOL" | "LOGICAL" => "BOOLEAN",
        "INT1" => "TINYINT",
        "INT2" | "SHORT" | "INT16" => "SMALLINT",
        "INT" | "INT4" | "SIGNED" | "INT32" => "INTEGER",
        "INT8" | "LONG" | "INT64" => "BIGINT",
        "INT128" => "HUGEINT",
        "UINT8" => "UTINYINT",
        "UINT16" => "USMALLINT",
        "UINT32" => "UINTEGER",
        "UINT64" => "UBIGINT",
        "UINT128" => "UHUGEINT",
        "REAL" | "FLOAT4" => "FLOAT",
        "FLOAT8" => "DOUBLE",
        "DECIMAL" | "NUMERIC" => "DECIMAL(18,3)",
        "CHAR" | "BPCHAR" | "TEXT" | "STRING" => "VARCHAR",
        "BYTEA" | "BINARY" | "VARBINARY" => "BLOB",
        "DATETIME" | "TIMESTAMP_US" | "TIMESTAMP WITHOUT TIME ZONE" => "TIMESTAMP",
        "TIMESTAMPTZ" => "TIMESTAMP WITH TIME ZONE",
        "TIMETZ" => "TIME WITH TIME ZONE",
        "BITSTRING" => "BIT",
        _ => return None,
    })
}

/// Trimmed, with every run of whitespace made one space and none just inside brackets or
/// before commas (quoted names are left alone).
fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut pending_space = false;
    for ch in text.trim().chars() {
        if quoted {
            out.push(ch);
            quoted = ch != '"';
            continue;
        }
        if ch.is_whitespace() {
            pending_space = true;
            continue;
        }
        let tight = matches!(ch, ')' | ']' | ',' | '(' | '[') || out.ends_with(['(', '[']);
        if pending_space && !tight && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(ch);
        quoted = ch == '"';
    }
    out
}

/// How deep inside parentheses or quotes byte `at` of `text` is.
fn depth_at(text: &str, at: usize) -> usize {
    let mut depth = 0usize;
    let mut quoted = false;
    for ch in text[..at].chars() {
        match ch {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth + usize::from(quoted)
}

/// `inner` split at the commas that are not inside parentheses or quotes.
fn split_top_level(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0usize);
    for (index, ch) in inner.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                parts.push(&inner[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

/// A struct field `name type` (the name possibly quoted) as its two halves.
fn split_field(field: &str) -> Option<(&str, &str)> {
    if let Some(rest) = field.strip_prefix('"') {
        let close = rest.find('"')? + 2;
        return Some((&field[..close], field[close..].trim()));
    }
    let space = field.find(' ')?;
    Some((&field[..space], field[space..].trim()))
}

#[cfg(test)]
mod tests {
    use super::canonical_type;

    #[test]
    fn aliases_case_and_spacing_become_duckdbs_own_names() {
        let cases = [
            ("bigint", "BIGINT"),
            ("  int8 ", "BIGINT"),
            ("int", "INTEGER"),
            ("Text", "VARCHAR"),
            ("varchar(255)", "VARCHAR"),
            ("numeric", "DECIMAL(18,3)"),
            ("numeric( 10 , 2 )", "DECIMAL(10,2)"),
            ("decimal(9)", "DECIMAL(9,0)"),
            ("timestamptz", "TIMESTAMP WITH TIME ZONE"),
            ("timestamp   with time zone", "TIMESTAMP WITH TIME ZONE"),
            ("datetime", "TIMESTAMP"),
            ("bool", "BOOLEAN"),
            ("float8", "DOUBLE"),
            ("real", "FLOAT"),
            ("bytea", "BLOB"),
            ("int[]", "INTEGER[]"),
            ("text [ 3 ]", "VARCHAR[3]"),
            ("int[][]", "INTEGER[][]"),
            ("struct(a int, \"b c\" text[])", "STRUCT(a INTEGER, \"b c\" VARCHAR[])"),
            ("map(text, struct(x bool))", "MAP(VARCHAR, STRUCT(x BOOLEAN))"),
            ("struct(a int)[]", "STRUCT(a INTEGER)[]"),
            ("enum('a', 'b')", "ENUM('a', 'b')"),
            ("UUID", "UUID"),
            ("my_type", "MY_TYPE"),
        ];
        for (written, canonical) in cases {
            assert_eq!(canonical_type(written), canonical, "{written:?}");
            assert_eq!(canonical_type(canonical), canonical, "{canonical:?} is a fixed point");
        }
    }
}
