//! DuckMesh's DuckDB, in one place: the worker (a task's query), the query API (a caller's
//! query) and the ingest coordinator (a batch of records) all run DuckDB through this crate, so
//! that the sandbox, the quoting, the views over pinned files, the statement check and the
//! Parquet export are written once.
//!
//! - [`Database`]: a fresh in-memory database with [`Limits`], [`Relation`]s exposed as views,
//!   then locked down ([`Database::lock_down`]) before any SQL from outside runs;
//! - [`check_statement`]: exactly one read-only query, on DuckDB's own parser;
//! - [`Database::export`]: the result as ZSTD Parquet split by size and partition, as the
//!   [`ExportedFile`]s a commit adds;
//! - [`sql`]: literals, identifiers, and declared types that cannot escape their cast;
//! - [`Error`]: one error type with stable codes, [`classify`] telling the SQL's faults from the
//!   engine's.
//!
//! This crate's build script links the prebuilt `libduckdb` and is the build script of every
//! package that links DuckDB (worker, query, coordinator, the binary).

mod check;
mod database;
mod error;
mod export;
pub mod sql;

pub use check::check_statement as check_statement_on;
pub use database::{Database, Limits, MAX_PIVOT_COLUMNS, RESULT_VIEW, Relation, check_statement, open_in_memory};
pub use error::{Error, Result, classify};
pub use export::{ExportOptions, ExportedFile};

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_contracts::Column;
    use std::path::Path;

    fn limits(dir: &Path) -> Limits {
        Limits { memory_limit_bytes: Some(512 * 1024 * 1024), threads: Some(3), spill_dir: dir.join("spill") }
    }

    fn parquet(dir: &Path, name: &str, sql: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let connection = duckdb::Connection::open_in_memory().expect("duckdb");
        connection
            .execute_batch(&format!("COPY ({sql}) TO {} (FORMAT parquet)", sql::path_literal(&path)))
            .expect("write parquet");
        path
    }

    #[test]
    fn limits_are_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = Database::open(&limits(dir.path())).expect("open");
        let threads = database.strings("SELECT current_setting('threads')::VARCHAR", 1).expect("threads");
        assert_eq!(threads, ["3"]);
        let memory = database.strings("SELECT current_setting('memory_limit')", 1).expect("memory");
        assert!(memory[0].starts_with("512.0 MiB") || memory[0].starts_with("536.8 MB"), "{memory:?}");
    }

    /// The contracts' canonical type names (which declared schemas are stored in) must be the
    /// very names DuckDB reports for a result, or an append would fail its schema check.
    #[test]
    fn the_canonical_type_names_are_what_duckdb_reports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = [
            "bool",
            "logical",
            "int1",
            "int2",
            "short",
            "int16",
            "int",
            "int4",
            "signed",
            "int32",
            "int8",
            "long",
            "int64",
            "int128",
            "hugeint",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "uint128",
            "real",
            "float4",
            "float8",
            "double",
            "numeric",
            "decimal(9)",
            "numeric( 10 , 2 )",
            "char",
            "bpchar",
            "text",
            "string",
            "varchar(12)",
            "bytea",
            "binary",
            "varbinary",
            "blob",
            "date",
            "time",
            "datetime",
            "timestamp_us",
            "timestamp_ns",
            "timestamptz",
            "timestamp with time zone",
            "timetz",
            "interval",
            "uuid",
            "json",
            "bitstring",
            "int[]",
            "text [ 3 ]",
            "int[][]",
            "struct(a int, \"b c\" text[])",
            "map(text, bool)",
            "union(n int, s text)",
            "struct(a int)[]",
        ];
        for data_type in written {
            assert!(sql::is_type_text(data_type), "{data_type}");
            // one database per query: the result view is made once per database
            let database = Database::open(&limits(dir.path())).expect("open");
            let columns = database
                .prepare_query(&format!("SELECT CAST(NULL AS {data_type}) AS c"))
                .unwrap_or_else(|error| panic!("{data_type}: {error}"));
            assert_eq!(duckmesh_contracts::canonical_type(data_type), columns[0].data_type, "{data_type:?}");
        }
    }

    /// A PIVOT without an IN list runs as DuckDB would run it (values from the data, in text
    /// order); one that would make too many columns is refused before it runs.
    #[test]
    fn pivots_take_their_values_from_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = Database::open(&limits(dir.path())).expect("open");
        let columns = database
            .prepare_query("PIVOT (SELECT i % 11 AS k, i AS v FROM range(22) t(i)) ON k USING sum(v)")
            .expect("dynamic PIVOT");
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["0", "1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]);
        let database = Database::open(&limits(dir.path())).expect("open");
        let error = database
            .prepare_query("PIVOT (SELECT i FROM range(1001) t(i)) ON i USING count(*)")
            .expect_err("too many columns");
        assert_eq!(error.error_code(), "pivot_too_wide", "{error}");
        assert!(error.to_string().contains("more than 1000 columns"), "{error}");
        let error = check_statement("SELECT * FROM (PIVOT trips ON zone USING count(*))").expect_err("nested");
        assert_eq!(error.error_code(), "sql_not_allowed");
        assert!(error.to_string().contains("IN list"), "{error}");
        let stopped =
            duckmesh_core::pivot::DynamicPivot::parse("PIVOT (SELECT 1 AS k) ON k USING count(*)").expect("dynamic");
        let error = database.complete_pivot(&stopped, 10, &|| true).expect_err("stopped");
        assert_eq!(error.error_code(), "sql_interrupted");
    }

    #[test]
    fn views_answer_the_sandbox_holds_and_sessions_share_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = parquet(dir.path(), "a.parquet", "SELECT i AS id FROM range(100) t(i)");
        let secret = parquet(dir.path(), "secret.parquet", "SELECT 42 AS secret");
        let work = dir.path().join("work");
        let database = Database::open(&limits(&work)).expect("open");
        database.register(&Relation { name: "trips-clean".into(), files: vec![data], schema: None }).expect("register");
        database.lock_down(std::slice::from_ref(&work)).expect("lock down");
        for query in ["SELECT count(*)::VARCHAR FROM trips_clean", "SELECT count(*)::VARCHAR FROM \"trips-clean\""] {
            assert_eq!(database.strings(query, 1).expect(query), ["100"], "{query}");
        }
        let session = database.session().expect("session");
        assert_eq!(session.strings("SELECT max(id)::VARCHAR FROM trips_clean", 1).expect("max"), ["99"]);
        for sql in [
            format!("SELECT * FROM read_parquet({})", sql::path_literal(&secret)),
            "SELECT * FROM read_text('/etc/hostname')".to_owned(),
        ] {
            let error = session.query_text(&sql).expect_err(&sql);
            assert_eq!(error.error_code(), "sql_access_denied", "{sql}: {error}");
        }
        for connection in [&database, &session] {
            let error = connection.execute_batch("SET enable_external_access = true").expect_err("locked");
            assert!(error.is_sql_fault(), "{error}");
        }
    }

    #[test]
    fn relations_without_files_use_their_declared_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = Database::open(&limits(dir.path())).expect("open");
        let schema = vec![
            Column { name: "amount".into(), data_type: "DECIMAL(18,3)".into() },
            Column { name: "tags".into(), data_type: "STRUCT(a INTEGER, \"b c\" VARCHAR[])".into() },
        ];
        database.register(&Relation { name: "e".into(), files: vec![], schema: Some(schema) }).expect("register");
        let rows = database.query_text("SELECT count(*)::VARCHAR FROM e").expect("query");
        assert_eq!(rows, [[Some("0".to_owned())]]);
        let bad = Relation {
            name: "e2".into(),
            files: vec![],
            schema: Some(vec![Column { name: "x".into(), data_type: "INT); DROP TABLE y; --".into() }]),
        };
        assert_eq!(database.register(&bad).expect_err("bad type").error_code(), "relation_invalid");
        let none = Relation { name: "e3".into(), files: vec![], schema: None };
        assert_eq!(database.register(&none).expect_err("empty").error_code(), "relation_empty");
    }

    #[test]
    fn statements_run_and_rows_come_back_as_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = Database::open(&limits(dir.path())).expect("open");
        database
            .execute_batch("CREATE TEMP TABLE t (id BIGINT, name VARCHAR); INSERT INTO t VALUES (1, 'a'), (2, NULL)")
            .expect("set-up");
        let rows = database.query_text("SELECT id::VARCHAR, name FROM t ORDER BY id").expect("query");
        assert_eq!(rows, vec![vec![Some("1".to_owned()), Some("a".to_owned())], vec![Some("2".to_owned()), None]]);
        let error = database.execute_batch("SELECT * FROM no_such_table").expect_err("unknown table");
        assert_eq!(error.error_code(), "sql_error");
        assert!(database.query_text("SELEC 1").is_err());
    }
}
