//! The statement check on DuckDB's own parser: `json_serialize_sql` turns the text into a tree
//! and the pure check of [`duckmesh_core::statement`] decides whether it is exactly one read-only
//! query and which relations it names. A `PIVOT` whose values come from the data is split as
//! DuckDB itself would run it ([`duckmesh_core::pivot`]) and each part checked the same way.
//! The worker checks task SQL and the query API checks callers' SQL through this one function.

use crate::error::{Error, Result, classify};
use duckdb::Connection;
use duckmesh_core::StatementError;
use duckmesh_core::pivot;
use duckmesh_core::statement::{self, Analysis, SERIALIZE_SQL, TreeLimits};

/// Checks `sql` with the parser of `connection` (no data or files are touched). The outer error
/// is DuckDB failing to parse at all (an engine fault or an interrupt); the inner one is the
/// check's verdict on the statement. `max_pivot_columns` bounds the probes of a dynamic PIVOT.
pub fn check_statement(
    connection: &Connection,
    sql: &str,
    limits: TreeLimits,
    max_pivot_columns: usize,
) -> Result<std::result::Result<Analysis, StatementError>> {
    /// Either verdict of one check: the statement's, or DuckDB's failure to parse at all.
    enum Failure {
        Statement(StatementError),
        Engine(Error),
    }
    let check = |text: &str| -> std::result::Result<Analysis, Failure> {
        let json: String = connection
            .query_row(SERIALIZE_SQL, [text], |row| row.get(0))
            .map_err(|error| Failure::Engine(classify("parsing the SQL", &error)))?;
        statement::check_with(&json, limits).map_err(Failure::Statement)
    };
    let mut checked = check(sql);
    if matches!(checked, Err(Failure::Statement(StatementError::NotAllowed { .. }))) && pivot::mentions_pivot(sql) {
        checked = pivot::check_dynamic(sql, max_pivot_columns, check).unwrap_or_else(|| {
            Err(Failure::Statement(StatementError::NotAllowed { message: pivot::NESTED_DYNAMIC_PIVOT.into() }))
        });
    }
    match checked {
        Ok(analysis) => Ok(Ok(analysis)),
        Err(Failure::Statement(error)) => Ok(Err(error)),
        Err(Failure::Engine(error)) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str) -> std::result::Result<Analysis, StatementError> {
        let connection = Connection::open_in_memory().expect("duckdb");
        check_statement(&connection, sql, TreeLimits::default(), 1000).expect("parses")
    }

    #[test]
    fn one_read_only_query_passes_and_names_its_relations() {
        let analysis = check("SELECT * FROM trips JOIN zones USING (zone)").expect("allowed");
        assert_eq!(analysis.tables, ["trips", "zones"]);
        assert!(matches!(check("DROP TABLE trips"), Err(StatementError::NotAllowed { .. })));
        assert!(matches!(check("SELECT 1; SELECT 2"), Err(StatementError::NotAllowed { .. })));
    }

    #[test]
    fn dynamic_pivots_are_split_and_nested_ones_refused() {
        let analysis = check("PIVOT trips ON zone USING count(*)").expect("dynamic PIVOT");
        assert!(analysis.pivot.is_some(), "{analysis:?}");
        let error = check("SELECT * FROM (PIVOT trips ON zone USING count(*))").expect_err("nested");
        assert!(error.to_string().contains("IN list"), "{error}");
    }
}
