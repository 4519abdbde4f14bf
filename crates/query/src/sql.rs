//! The statement check of the query API: DuckDB's own parser (`json_serialize_sql`) runs on a
//! locked-down connection and the shared, pure check of `duckmesh_core::statement` (the one the
//! worker uses for task SQL) decides whether the text is exactly one read-only query and which
//! datasets it names. The sandbox settings of [`crate::engine`] enforce file access
//! independently; this check gives a clear 400 before any work is done.

use crate::error::{Error, Result};
use duckdb::Connection;
use duckmesh_core::StatementError;
use duckmesh_core::statement::{self, SERIALIZE_SQL};

pub use duckmesh_core::statement::{ALLOWED_TABLE_FUNCTIONS, Analysis};

/// Checks `sql` with DuckDB's parser on `connection` (no data or files are touched).
pub fn analyze(connection: &Connection, sql: &str) -> Result<Analysis> {
    let json: String = connection
        .query_row(SERIALIZE_SQL, [sql], |row| row.get(0))
        .map_err(|error| Error::Engine { step: "parsing the query", message: error.to_string() })?;
    analyze_json(&json)
}

/// Checks the parser's JSON for `sql` (see [`analyze`]).
pub fn analyze_json(json: &str) -> Result<Analysis> {
    statement::check(json).map_err(|error| match error {
        StatementError::Invalid { message } => Error::QueryInvalid { message },
        StatementError::NotAllowed { message } => Error::QueryNotAllowed { message },
        StatementError::Unreadable { .. } => Error::Internal { message: error.to_string() },
    })
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
