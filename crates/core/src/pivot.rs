//! `PIVOT … ON col` without an `IN` list, made a single read-only query.
//!
//! DuckDB runs such a PIVOT as two statements: it first creates an `ENUM` type from the
//! distinct values of each `ON` expression, then pivots on that type. The statement check
//! refuses anything but one read-only query, and a view cannot hold the first statement. So a
//! dynamic PIVOT is split here, on its text, into what DuckDB would do: one probe query per
//! `ON` expression without values (`SELECT DISTINCT` of it over the PIVOT's source, as text,
//! sorted, as DuckDB sorts the enum), and the PIVOT with those values written as an `IN` list of
//! string literals. The probes and the completed PIVOT are ordinary read-only queries that the
//! statement check sees like any other; string literals cannot change a statement's shape.
//!
//! Only a statement that *starts* with `PIVOT` (or `PIVOT_WIDER`) is split; a dynamic PIVOT
//! nested in a subquery or after a `WITH` is left to the statement check, which refuses it
//! with a message that says to name the values.

use crate::statement::Analysis;

/// Why a dynamic PIVOT that [`check_dynamic`] cannot split is refused.
pub const NESTED_DYNAMIC_PIVOT: &str = "a PIVOT without an IN list must be the whole statement (not nested in a \
     subquery or after WITH); or name the values: PIVOT <dataset> ON <column> IN ('a', 'b') USING …";

/// Whether `sql` holds the word `PIVOT` (or `PIVOT_WIDER`) anywhere: a refused statement that
/// does may be a dynamic PIVOT.
pub fn mentions_pivot(sql: &str) -> bool {
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| word.eq_ignore_ascii_case("pivot") || word.eq_ignore_ascii_case("pivot_wider"))
}

/// Checks a dynamic PIVOT with `check` (the statement check of one query): the completed
/// statement's shape ([`DynamicPivot::template`]) and each probe, for at most `max_values`
/// values. The analysis names every table they read and carries the split
/// ([`Analysis::pivot`]). `None` when `sql` is not a dynamic PIVOT this module can split.
pub fn check_dynamic<E>(
    sql: &str,
    max_values: usize,
    mut check: impl FnMut(&str) -> Result<Analysis, E>,
) -> Option<Result<Analysis, E>> {
    let pivot = DynamicPivot::parse(sql)?;
    let checked = (|| {
        let mut analysis = check(&pivot.template())?;
        for probe in pivot.probes(max_values) {
            analysis.tables.extend(check(&probe)?.tables);
        }
        analysis.tables.sort();
        analysis.tables.dedup();
        Ok(analysis)
    })();
    Some(checked.map(|analysis| Analysis { pivot: Some(pivot), ..analysis }))
}

/// The placeholder values of [`DynamicPivot::template`]: the completed statement's shape, for
/// checking before any value is known.
const PLACEHOLDER: &str = "'__duckmesh_pivot_value'";

/// The alias of the probed value inside a probe query.
const PROBE_COLUMN: &str = "__duckmesh_pivot_value";

/// A `PIVOT` statement with at least one `ON` expression that has no `IN` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicPivot {
    /// The text from the start up to the first `ON` item.
    head: String,
    /// The `ON` items in order.
    items: Vec<Item>,
    /// The text after the `ON` list (`USING …`, `GROUP BY …`, …).
    tail: String,
    /// The PIVOT's source (a dataset name, a subquery, …) as written.
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// An item with its own `IN` list, kept as written.
    Fixed(String),
    /// An expression whose values come from the data.
    Probe(String),
}

impl DynamicPivot {
    /// Splits `sql` when it is one `PIVOT` statement with an `ON` expression that has no `IN`
    /// list; `None` for anything else (including text this reader cannot follow, which the
    /// statement check then judges as written).
    pub fn parse(sql: &str) -> Option<Self> {
        // Comments become blanks: a `--` comment copied into a probe would swallow its end.
        let sql = &without_comments(sql)?;
        let tokens = top_level_tokens(sql)?;
        let first = tokens.first()?;
        if !first.is_word_in(sql, &["pivot", "pivot_wider"]) {
            return None;
        }
        let on = tokens.iter().position(|token| token.is_word_in(sql, &["on"]))?;
        let source = sql[first.end..tokens[on].start].trim();
        if source.is_empty() {
            return None;
        }
        let list_start = tokens[on].end;
        let end = tokens[on + 1..]
            .iter()
            .find(|token| {
                token.is_word_in(sql, &["using", "group", "order", "limit", "offset"]) || token.is_char(sql, ';')
            })
            .map_or(sql.len(), |token| token.start);
        // Anything after a `;` but blanks is a second statement: not ours to split.
        if let Some(semicolon) = tokens.iter().find(|token| token.is_char(sql, ';')) {
            let rest = &sql[semicolon.end..];
            if top_level_tokens(rest).is_none_or(|rest| !rest.is_empty()) {
                return None;
            }
        }
        let mut items = Vec::new();
        let mut item_start = list_start;
        let mut has_in = false;
        for token in tokens.iter().filter(|token| token.start >= list_start && token.end <= end) {
            if token.is_char(sql, ',') {
                items.push(item(&sql[item_start..token.start], has_in)?);
                item_start = token.end;
                has_in = false;
            } else if token.is_word_in(sql, &["in"]) {
                has_in = true;
            }
        }
        items.push(item(&sql[item_start..end], has_in)?);
        if !items.iter().any(|item| matches!(item, Item::Probe(_))) {
            return None;
        }
        Some(Self { head: sql[..list_start].to_owned(), items, tail: sql[end..].to_owned(), source: source.to_owned() })
    }

    /// One query per `ON` expression without values: its distinct non-null values as text, in
    /// the order DuckDB gives the pivoted columns, at most `limit + 1` of them (so that a
    /// caller can tell "more than `limit`").
    pub fn probes(&self, limit: usize) -> Vec<String> {
        let limit = limit.saturating_add(1);
        self.items
            .iter()
            .filter_map(|item| match item {
                Item::Probe(expression) => Some(format!(
                    "SELECT DISTINCT CAST(({expression}) AS VARCHAR) AS {PROBE_COLUMN} FROM {} \
                     WHERE {PROBE_COLUMN} IS NOT NULL ORDER BY {PROBE_COLUMN} LIMIT {limit}",
                    self.source
                )),
                Item::Fixed(_) => None,
            })
            .collect()
    }

    /// The statement with every missing `IN` list filled by a placeholder value: what the
    /// completed statement will look like, for the statement check.
    pub fn template(&self) -> String {
        self.render(|_| PLACEHOLDER.to_owned())
    }

    /// The completed statement: the `n`th expression without values gets `values[n]` (the
    /// answers of [`DynamicPivot::probes`], in order) as its `IN` list. An expression without
    /// any value gets `IN (NULL)`, which pivots to no column, as DuckDB's empty enum would.
    pub fn complete(&self, values: &[Vec<String>]) -> String {
        let mut next = values.iter();
        self.render(|_| match next.next() {
            Some(list) if !list.is_empty() => list.iter().map(|value| literal(value)).collect::<Vec<_>>().join(", "),
            _ => "NULL".to_owned(),
        })
    }

    fn render(&self, mut values: impl FnMut(&str) -> String) -> String {
        let items: Vec<String> = self
            .items
            .iter()
            .map(|item| match item {
                Item::Fixed(text) => text.clone(),
                Item::Probe(expression) => format!(" {expression} IN ({}) ", values(expression)),
            })
            .collect();
        format!("{}{}{}", self.head, items.join(","), self.tail)
    }
}

fn item(text: &str, has_in: bool) -> Option<Item> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(if has_in { Item::Fixed(text.to_owned()) } else { Item::Probe(trimmed.to_owned()) })
}

/// `value` as a SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A word, or a single character of punctuation, outside parentheses, quotes and comments.
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
}

impl Token {
    fn is_word_in(&self, sql: &str, words: &[&str]) -> bool {
        let text = &sql[self.start..self.end];
        words.iter().any(|word| text.eq_ignore_ascii_case(word))
    }

    fn is_char(&self, sql: &str, c: char) -> bool {
        sql[self.start..self.end].starts_with(c) && self.end - self.start == c.len_utf8()
    }
}

/// `sql` with every comment replaced by blanks (byte for byte, so offsets stay); `None` when a
/// quote or a block comment is left open.
fn without_comments(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let end = match bytes[i] {
            quote @ (b'\'' | b'"') => skip_quoted(sql, i, quote)?,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(bytes.len(), |at| i + at);
                out.resize(out.len() + (end - i), b' ');
                i = end;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = i + 2 + sql[i + 2..].find("*/")? + 2;
                out.resize(out.len() + (end - i), b' ');
                i = end;
                continue;
            }
            _ => i + 1,
        };
        out.extend_from_slice(&bytes[i..end]);
        i = end;
    }
    String::from_utf8(out).ok()
}

/// The end of the quoted string or identifier that starts at `start` (a doubled quote stays
/// inside); `None` when it is not closed.
fn skip_quoted(sql: &str, start: usize, quote: u8) -> Option<usize> {
    let bytes = sql.as_bytes();
    let mut j = start + 1;
    loop {
        let at = j + sql[j..].find(quote as char)?;
        if bytes.get(at + 1) == Some(&quote) {
            j = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// The tokens of `sql` (without comments) at parenthesis depth 0: words (`[A-Za-z0-9_]+`), `,`
/// and `;`; `None` when a quote is left open or parentheses do not balance.
fn top_level_tokens(sql: &str) -> Option<Vec<Token>> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' => {
                i = skip_quoted(sql, i, b)?;
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
            b',' | b';' if depth == 0 => tokens.push(Token { start: i, end: i + 1 }),
            _ if depth == 0 && (b.is_ascii_alphanumeric() || b == b'_') => {
                let end = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(bytes.len(), |n| i + n);
                tokens.push(Token { start: i, end });
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (depth == 0).then_some(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pivot_without_values_is_split_into_probes_and_a_completed_statement() {
        let pivot = DynamicPivot::parse("PIVOT trips ON zone USING sum(fare) GROUP BY day").expect("dynamic");
        assert_eq!(
            pivot.probes(100),
            ["SELECT DISTINCT CAST((zone) AS VARCHAR) AS __duckmesh_pivot_value FROM trips WHERE \
             __duckmesh_pivot_value IS NOT NULL ORDER BY __duckmesh_pivot_value LIMIT 101"]
        );
        assert_eq!(
            pivot.complete(&[vec!["a".into(), "it's".into()]]),
            "PIVOT trips ON zone IN ('a', 'it''s') USING sum(fare) GROUP BY day"
        );
        assert_eq!(pivot.template(), "PIVOT trips ON zone IN ('__duckmesh_pivot_value') USING sum(fare) GROUP BY day");
        assert_eq!(pivot.complete(&[vec![]]), "PIVOT trips ON zone IN (NULL) USING sum(fare) GROUP BY day");
    }

    #[test]
    fn items_with_values_are_kept_and_subquery_sources_are_probed() {
        let sql = "pivot_wider (SELECT * FROM trips WHERE fare > 0) ON zone IN ('a', 'b'), day || 'x';";
        let pivot = DynamicPivot::parse(sql).expect("dynamic");
        assert_eq!(pivot.probes(5).len(), 1);
        assert!(pivot.probes(5)[0].contains("CAST((day || 'x') AS VARCHAR)"), "{:?}", pivot.probes(5));
        assert!(pivot.probes(5)[0].contains("FROM (SELECT * FROM trips WHERE fare > 0) WHERE"));
        assert_eq!(
            pivot.complete(&[vec!["1x".into()]]),
            "pivot_wider (SELECT * FROM trips WHERE fare > 0) ON zone IN ('a', 'b'), day || 'x' IN ('1x') ;"
        );
    }

    #[test]
    fn everything_else_is_left_to_the_statement_check() {
        for sql in [
            "SELECT 1",
            "PIVOT trips ON zone IN ('a') USING sum(fare)",
            "UNPIVOT trips ON a, b INTO NAME k VALUE v",
            "SELECT * FROM (PIVOT trips ON zone USING sum(fare))",
            "WITH t AS (SELECT 1) PIVOT t ON zone",
            "PIVOT trips ON zone USING sum(fare); DROP TABLE x",
            "PIVOT ON zone",
            "PIVOT trips ON , zone",
            "PIVOT trips ON zone USING sum(fare) -- ;",
            "PIVOT trips ON 'unterminated",
            "PIVOT trips ON (zone",
            "PIVOT trips ON zone)",
            "PIVOT trips ON zone /* open",
        ] {
            let parsed = DynamicPivot::parse(sql);
            let expected = sql == "PIVOT trips ON zone USING sum(fare) -- ;";
            assert_eq!(parsed.is_some(), expected, "{sql}: {parsed:?}");
        }
    }

    #[test]
    fn keywords_inside_quotes_comments_and_parentheses_do_not_count() {
        let sql = "PIVOT \"on\" /* ON x */ ON \"using\" || (SELECT 'ON') -- ON\n USING count(*)";
        let pivot = DynamicPivot::parse(sql).expect("dynamic");
        let probe = &pivot.probes(1)[0];
        assert!(probe.starts_with("SELECT DISTINCT CAST((\"using\" || (SELECT 'ON')) AS VARCHAR)"), "{probe}");
        assert!(probe.contains(" FROM \"on\" WHERE "), "{probe}");
        let completed = pivot.complete(&[vec!["x".into()]]);
        assert!(completed.ends_with("ON \"using\" || (SELECT 'ON') IN ('x') USING count(*)"), "{completed:?}");
    }
}
