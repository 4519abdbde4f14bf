//! The statement check of the query API: DuckDB's own parser (`json_serialize_sql`) runs on a
//! locked-down connection and the shared, pure check of `duckmesh_core::statement` (the one the
//! worker uses for task SQL) decides whether the text is exactly one read-only query and which
//! datasets it names. The sandbox settings of [`crate::engine`] enforce file access
//! independently; this check gives a clear 400 before any work is done.
//!
//! The size limits of [`SqlLimits`] apply first, on the text, so an oversized statement never
//! reaches DuckDB; the select-list width is checked on the parser's tree.

use crate::error::{Error, Result};
use crate::limits::{SqlLimits, check_sql_text};
use duckdb::Connection;
use duckmesh_core::StatementError;
use duckmesh_core::statement::{self, TreeLimits};

pub use duckmesh_core::statement::{ALLOWED_TABLE_FUNCTIONS, Analysis};

/// Checks `sql` with DuckDB's parser on `connection` (no data or files are touched), under the
/// default [`SqlLimits`].
pub fn analyze(connection: &Connection, sql: &str) -> Result<Analysis> {
    analyze_with(connection, sql, &SqlLimits::DEFAULT)
}

/// [`analyze`] under `limits`. Deep statements recurse deeply in DuckDB's parser: call this on
/// a thread with a generous stack (the service uses [`PARSER_STACK_BYTES`]).
pub fn analyze_with(connection: &Connection, sql: &str, limits: &SqlLimits) -> Result<Analysis> {
    check_sql_text(sql, limits)?;
    let tree_limits = TreeLimits { max_select_expressions: Some(limits.max_select_expressions) };
    // `PIVOT … IN (…)` and `UNPIVOT` are read-only table references and pass the check. A
    // `PIVOT` without an `IN` list makes DuckDB create an ENUM type from the data before the
    // query (several statements): the engine splits one that starts the statement into probes
    // of its values and the completed PIVOT, each checked like any query.
    duckmesh_engine::check_statement_on(connection, sql, tree_limits, limits.max_select_expressions)?
        .map_err(statement_error)
}

/// The stack of the thread that runs [`analyze_with`].
pub const PARSER_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Checks the parser's JSON for `sql` (see [`analyze`]).
pub fn analyze_json(json: &str) -> Result<Analysis> {
    analyze_json_with(json, TreeLimits::default())
}

fn analyze_json_with(json: &str, limits: TreeLimits) -> Result<Analysis> {
    statement::check_with(json, limits).map_err(statement_error)
}

/// The API's error for the statement check's verdict.
fn statement_error(error: StatementError) -> Error {
    match error {
        StatementError::Invalid { message } => Error::QueryInvalid { message },
        StatementError::NotAllowed { message } => Error::QueryNotAllowed { message },
        StatementError::TooComplex { message } => Error::QueryTooComplex { message },
        StatementError::Unreadable { .. } => Error::Internal { message: error.to_string() },
    }
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
            ("pivot trips ON zone IN ('a', 'b') USING sum(fare) GROUP BY day", &["trips"]),
            ("-- wide\nUNPIVOT trips ON a, b INTO NAME k VALUE v", &["trips"]),
            (
                "SELECT * FROM (PIVOT trips ON zone IN (1, 2) USING count(*)) p JOIN zones USING (day)",
                &["trips", "zones"],
            ),
            ("FROM trips PIVOT (sum(fare) FOR zone IN ('a'))", &["trips"]),
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
            ("SELECT current_setting('temp_directory')", "query_not_allowed"),
            ("SELECT current_setting('allowed_directories')", "query_not_allowed"),
            ("SELECT upper(current_setting('secret_directory'))", "query_not_allowed"),
            ("SELECT main.current_setting('temp_directory')", "query_not_allowed"),
            ("SELECT getvariable('x')", "query_not_allowed"),
            ("SELECT which_secret('s3://b/x', 's3')", "query_not_allowed"),
            ("SELECT * FROM duckdb_databases()", "query_not_allowed"),
            ("SELECT * FROM duckdb_extensions()", "query_not_allowed"),
            ("SELECT * FROM duckdb_temporary_files()", "query_not_allowed"),
            ("SELECT * FROM duckdb_secrets()", "query_not_allowed"),
            ("SELECT * FROM pragma_database_list()", "query_not_allowed"),
            ("PIVOT trips ON zone USING sum(fare); DROP TABLE x", "query_not_allowed"),
            ("PIVOT read_csv('/etc/passwd') ON a USING count(*)", "query_not_allowed"),
            ("SELECT '\0'", "query_invalid"),
            ("SELECT FROM WHERE", "query_invalid"),
            ("", "query_invalid"),
        ];
        for (sql, code) in cases {
            let error = parse(sql).expect_err(sql);
            assert_eq!(error.error_code(), *code, "{sql}: {error}");
        }
        let error = parse("SELECT current_setting('temp_directory')").expect_err("settings");
        assert!(error.to_string().contains("current_setting()"), "{error}");
        let error = parse("SELECT * FROM (PIVOT trips ON zone USING sum(fare))").expect_err("nested dynamic PIVOT");
        assert!(error.to_string().contains("IN list"), "{error}");
        // A dynamic PIVOT of its own is split: its probe and the completed statement are checked.
        let analysis = parse("/* by zone */ PIVOT trips ON zone USING sum(fare)").expect("dynamic PIVOT");
        assert_eq!(analysis.tables, ["trips"]);
        assert!(analysis.pivot.is_some());
        // The probe and the completed PIVOT get the same check as any query.
        let error =
            parse("PIVOT trips ON zone || current_setting('temp_directory') USING count(*)").expect_err("settings");
        assert_eq!(error.error_code(), "query_not_allowed", "{error}");
        assert!(error.to_string().contains("current_setting()"), "{error}");
    }

    /// serde_json's default recursion limit (128) made these a 500 `internal`.
    #[test]
    fn deep_but_sane_statements_are_checked() {
        let connection = Connection::open_in_memory().expect("duckdb");
        let chain = format!("SELECT {}", vec!["1"; 63].join(" + "));
        let mut nested = "SELECT 1 AS x".to_owned();
        for _ in 0..60 {
            nested = format!("SELECT x FROM ({nested})");
        }
        let mut scalar = "1".to_owned();
        for _ in 0..63 {
            scalar = format!("(SELECT {scalar})");
        }
        let run = |sql: String| {
            let connection = connection.try_clone().expect("connection");
            std::thread::Builder::new()
                .stack_size(PARSER_STACK_BYTES)
                .spawn(move || analyze(&connection, &sql))
                .expect("thread")
                .join()
                .expect("join")
        };
        for sql in [chain, nested, format!("SELECT {scalar}"), format!("SELECT {}", vec!["1"; 400].join("+"))] {
            run(sql.clone()).unwrap_or_else(|error| panic!("{}…: {error}", &sql[..40]));
        }
        let mut deeper = "SELECT 1 AS x".to_owned();
        for _ in 0..65 {
            deeper = format!("SELECT x FROM ({deeper})");
        }
        assert_eq!(run(deeper).expect_err("past the nesting limit").error_code(), "query_too_complex");
        let long_chain = format!("SELECT {}", vec!["1"; 5000].join("+"));
        assert_eq!(run(long_chain).expect_err("DuckDB's own depth limit").error_code(), "query_invalid");
    }

    #[test]
    fn wide_and_long_statements_are_refused_before_duckdb_binds_them() {
        let connection = Connection::open_in_memory().expect("duckdb");
        let wide = format!("SELECT {}", vec!["1"; 1001].join(","));
        let error = analyze(&connection, &wide).expect_err("wide");
        assert_eq!(error.error_code(), "query_too_complex");
        assert!(error.to_string().contains("1001 expressions"), "{error}");
        analyze(&connection, &format!("SELECT {}", vec!["1"; 1000].join(","))).expect("at the limit");
        let raised = SqlLimits { max_select_expressions: 2000, ..SqlLimits::DEFAULT };
        analyze_with(&connection, &wide, &raised).expect("limit raised");
        let long = format!("SELECT {}", vec!["1"; 60_000].join(","));
        assert_eq!(analyze(&connection, &long).expect_err("long").error_code(), "query_too_complex");
    }
}
