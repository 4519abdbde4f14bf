//! The DuckDB of one query: a fresh in-memory database whose views expose exactly the files of
//! the pinned snapshots, then locked down by DuckDB's own configuration before the caller's SQL
//! is seen: extension auto-install and auto-load off, file access limited to those files (and
//! the query's scratch directory, for spilling and exports), external access off, and the
//! configuration frozen so the SQL cannot undo any of it.
//!
//! Everything here is blocking; the service runs it on a blocking thread and stops a long query
//! from another thread with the handle of [`Sandbox::interrupt_handle`].

use crate::error::{Error, Result};
use crate::format;
use crate::model::{ColumnInfo, Format};
use duckdb::InterruptHandle;
use duckdb::arrow::array::RecordBatch;
use duckmesh_catalog::Column;
use duckmesh_engine::{Database, Limits, RESULT_VIEW, Relation};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Per-query engine limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSettings {
    /// DuckDB `threads`; one per core when `None`.
    pub threads: Option<u64>,
    /// DuckDB `memory_limit`; DuckDB's default when `None`.
    pub memory_limit_bytes: Option<u64>,
}

/// One dataset as the query sees it.
#[derive(Debug, Clone)]
pub struct DatasetView {
    /// The dataset's name (a view of that name, plus one with `_` for `-`).
    pub name: String,
    /// Local copies of the snapshot's files.
    pub files: Vec<PathBuf>,
    /// The dataset's columns, for a dataset without files.
    pub schema: Option<Vec<Column>>,
}

/// Inline result caps.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Most rows inline.
    pub max_rows: u64,
    /// Largest inline body.
    pub max_bytes: u64,
}

/// A rendered inline body.
#[derive(Debug)]
pub enum Body {
    /// JSON rows.
    Json(Vec<Vec<serde_json::Value>>),
    /// CSV text.
    Csv(String),
    /// Arrow IPC stream.
    Arrow(Vec<u8>),
}

/// What a query produced.
#[derive(Debug)]
pub enum Outcome {
    /// Small enough to answer inline.
    Inline {
        /// Columns.
        columns: Vec<ColumnInfo>,
        /// Rows.
        row_count: u64,
        /// The rendered rows.
        body: Body,
    },
    /// Over a cap: the whole result was written as Parquet to `file`.
    Exported {
        /// Columns.
        columns: Vec<ColumnInfo>,
        /// Rows written.
        row_count: u64,
        /// The local Parquet file.
        file: PathBuf,
    },
}

/// A locked-down DuckDB for one query.
#[derive(Debug)]
pub struct Sandbox {
    database: Database,
    work_dir: PathBuf,
}

impl Sandbox {
    /// Opens the database, creates the views, and locks it down. `work_dir` must exist and
    /// belong to this query alone.
    pub fn open(settings: EngineSettings, views: &[DatasetView], work_dir: &Path) -> Result<Self> {
        let limits = Limits {
            memory_limit_bytes: settings.memory_limit_bytes,
            threads: settings.threads,
            spill_dir: work_dir.join("spill"),
        };
        let database = Database::open(&limits)?;
        for view in views {
            database.register(&Relation {
                name: view.name.clone(),
                files: view.files.clone(),
                schema: view.schema.clone(),
            })?;
        }
        database.lock_down(&[work_dir.to_owned()])?;
        Ok(Self { database, work_dir: work_dir.to_owned() })
    }

    /// A handle that interrupts the running statement from another thread.
    pub fn interrupt_handle(&self) -> Arc<InterruptHandle> {
        self.database.interrupt_handle()
    }

    /// A new connection to the same locked-down database, for one more query: its temporary
    /// view, its interrupt and its export directory are its own, and the database's views,
    /// settings and warm caches are shared.
    pub fn session(&self) -> Result<Sandbox> {
        Ok(Sandbox { database: self.database.session()?, work_dir: self.work_dir.clone() })
    }

    /// Runs `sql` (already checked by [`crate::sql::analyze`]): inline when the result fits
    /// `caps` in `format`, else exported in full as ZSTD Parquet into the scratch directory.
    pub fn run(&self, sql: &str, format: Format, caps: Caps) -> Result<Outcome> {
        self.run_until(sql, format, caps, &|| false)
    }

    /// [`Sandbox::run`] that checks `stopped` before each of its statements and gives up with a
    /// timeout once it answers `true`: an interrupt that arrives between two statements is
    /// forgotten by DuckDB.
    pub fn run_until(&self, sql: &str, format: Format, caps: Caps, stopped: &dyn Fn() -> bool) -> Result<Outcome> {
        let check = || if stopped() { Err(Error::QueryTimeout { limit_ms: 0 }) } else { Ok(()) };
        check()?;
        // DuckDB runs every statement of a multi-statement text but the last when preparing it:
        // only SQL that the statement check found to be one query gets here. The newline ends a
        // trailing comment.
        self.database.create_result_view(sql)?;
        check()?;
        let columns: Vec<ColumnInfo> = self
            .database
            .result_columns()?
            .into_iter()
            .map(|Column { name, data_type }| ColumnInfo { name, data_type })
            .collect();
        check()?;
        let probe = caps.max_rows.saturating_add(1);
        let failed = |error: duckdb::Error| Error::from(duckmesh_engine::classify("running the query", &error));
        let mut statement = self
            .database
            .connection()
            .prepare(&format!("SELECT * FROM {RESULT_VIEW} LIMIT {probe}"))
            .map_err(failed)?;
        let batches: Vec<RecordBatch> = statement.query_arrow([]).map_err(failed)?.collect();
        let schema = statement.schema();
        let row_count: u64 = batches.iter().map(|batch| batch.num_rows() as u64).sum();
        if row_count <= caps.max_rows {
            let (body, bytes) = match format {
                Format::Json => {
                    let rows = format::json_rows(&batches)?;
                    let bytes = serde_json::to_vec(&rows).map_or(u64::MAX, |body| body.len() as u64);
                    (Body::Json(rows), bytes)
                }
                Format::Csv => {
                    let text = format::csv(&schema, &batches)?;
                    let bytes = text.len() as u64;
                    (Body::Csv(text), bytes)
                }
                Format::Arrow => {
                    let data = format::arrow_ipc(&schema, &batches)?;
                    let bytes = data.len() as u64;
                    (Body::Arrow(data), bytes)
                }
            };
            if bytes <= caps.max_bytes {
                return Ok(Outcome::Inline { columns, row_count, body });
            }
        }
        drop(batches);
        check()?;
        let file = self.work_dir.join(format!("export-{}", uuid::Uuid::new_v4().simple())).join("result.parquet");
        let written = self.database.export_to_file(&file)?;
        Ok(Outcome::Exported { columns, row_count: written, file })
    }

    /// The first column of `sql` (already checked) as text, at most `limit` rows.
    pub fn strings(&self, sql: &str, limit: usize) -> Result<Vec<String>> {
        Ok(self.database.strings(sql, limit)?)
    }

    /// Completes a `PIVOT` whose values come from the data (see [`duckmesh_core::pivot`]): runs
    /// its probes and fills its `IN` lists, so that it pivots to at most `max_columns` columns.
    pub fn complete_pivot(
        &self,
        pivot: &duckmesh_core::pivot::DynamicPivot,
        max_columns: usize,
        stopped: &dyn Fn() -> bool,
    ) -> Result<String> {
        Ok(self.database.complete_pivot(pivot, max_columns, stopped)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parquet(dir: &Path, name: &str, sql: &str) -> PathBuf {
        let path = dir.join(name);
        let connection = duckdb::Connection::open_in_memory().expect("duckdb");
        connection
            .execute_batch(&format!("COPY ({sql}) TO {} (FORMAT parquet)", duckmesh_engine::sql::path_literal(&path)))
            .expect("write parquet");
        path
    }

    #[test]
    fn views_answer_and_the_sandbox_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = parquet(dir.path(), "a.parquet", "SELECT i AS id FROM range(100) t(i)");
        let secret = parquet(dir.path(), "secret.parquet", "SELECT 42 AS secret");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        let view = DatasetView { name: "trips-clean".into(), files: vec![data], schema: None };
        let sandbox = Sandbox::open(EngineSettings::default(), &[view], &work).expect("open");
        let caps = Caps { max_rows: 10, max_bytes: 1 << 20 };
        match sandbox.run("SELECT count(*) AS n, sum(id) AS total FROM trips_clean", Format::Json, caps).expect("run") {
            Outcome::Inline { columns, row_count, body: Body::Json(rows) } => {
                assert_eq!(columns[0], ColumnInfo { name: "n".into(), data_type: "BIGINT".into() });
                assert_eq!((row_count, rows), (1, vec![vec![serde_json::json!(100), serde_json::json!(4950)]]));
            }
            other => panic!("{other:?}"),
        }
        // Engine-level defences, independent of the statement check.
        for sql in [
            format!("SELECT * FROM read_parquet({})", duckmesh_engine::sql::path_literal(&secret)),
            "SELECT * FROM read_text('/etc/hostname')".to_owned(),
        ] {
            let sandbox = Sandbox::open(EngineSettings::default(), &[], &work).expect("open");
            let error = sandbox.run(&sql, Format::Json, caps).expect_err(&sql);
            assert_eq!(error.error_code(), "query_not_allowed", "{sql}: {error}");
        }
        let sandbox = Sandbox::open(EngineSettings::default(), &[], &work).expect("open");
        assert!(
            sandbox.database.execute_batch("SET enable_external_access = true").is_err(),
            "configuration is locked"
        );
    }

    #[test]
    fn sessions_share_views_but_not_queries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = parquet(dir.path(), "a.parquet", "SELECT i AS id FROM range(10) t(i)");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        let view = DatasetView { name: "t".into(), files: vec![data], schema: None };
        let sandbox = Sandbox::open(EngineSettings::default(), &[view], &work).expect("open");
        let caps = Caps { max_rows: 100, max_bytes: 1 << 20 };
        for sql in ["SELECT count(*) FROM t", "SELECT max(id) FROM t"] {
            let session = sandbox.session().expect("session");
            assert!(matches!(session.run(sql, Format::Json, caps).expect(sql), Outcome::Inline { row_count: 1, .. }));
        }
        let session = sandbox.session().expect("session");
        assert!(session.database.execute_batch("SET enable_external_access = true").is_err(), "still locked");
    }

    #[test]
    fn large_results_are_exported_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        let sandbox = Sandbox::open(EngineSettings::default(), &[], &work).expect("open");
        let caps = Caps { max_rows: 10, max_bytes: 1 << 20 };
        match sandbox.run("SELECT i FROM range(25) t(i)", Format::Csv, caps).expect("run") {
            Outcome::Exported { row_count, file, .. } => {
                assert_eq!(row_count, 25);
                assert!(file.starts_with(&work) && file.exists());
            }
            other => panic!("{other:?}"),
        }
        let sandbox = Sandbox::open(EngineSettings::default(), &[], &work).expect("open");
        let tiny = Caps { max_rows: 10, max_bytes: 8 };
        assert!(matches!(
            sandbox.run("SELECT 'a long string' AS s", Format::Json, tiny).expect("run"),
            Outcome::Exported { row_count: 1, .. }
        ));
    }

    #[test]
    fn duplicate_column_names_are_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        for caps in [Caps { max_rows: 10, max_bytes: 1 << 20 }, Caps { max_rows: 1, max_bytes: 1 << 20 }] {
            let sandbox = Sandbox::open(EngineSettings::default(), &[], &work).expect("open");
            let outcome = sandbox
                .run(
                    "SELECT * FROM (VALUES (1, 2), (3, 4)) a(id, x) JOIN (VALUES (1, 5)) b(id, x) ON a.id = b.id",
                    Format::Json,
                    caps,
                )
                .expect("run");
            let columns = match &outcome {
                Outcome::Inline { columns, .. } | Outcome::Exported { columns, .. } => columns,
            };
            assert_eq!(columns.len(), 4, "{outcome:?}");
        }
    }

    #[test]
    fn empty_datasets_use_their_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        let schema = Some(vec![Column { name: "amount".into(), data_type: "DECIMAL(18,3)".into() }]);
        let view = DatasetView { name: "e".into(), files: vec![], schema };
        let sandbox = Sandbox::open(EngineSettings::default(), &[view], &work).expect("open");
        let caps = Caps { max_rows: 10, max_bytes: 1 << 20 };
        match sandbox.run("SELECT * FROM e", Format::Json, caps).expect("run") {
            Outcome::Inline { columns, row_count, .. } => {
                assert_eq!(columns, [ColumnInfo { name: "amount".into(), data_type: "DECIMAL(18,3)".into() }]);
                assert_eq!(row_count, 0);
            }
            other => panic!("{other:?}"),
        }
        let bad = DatasetView {
            name: "e".into(),
            files: vec![],
            schema: Some(vec![Column { name: "x".into(), data_type: "INT); DROP TABLE y; --".into() }]),
        };
        let error = Sandbox::open(EngineSettings::default(), &[bad], &work).expect_err("invalid type");
        assert_eq!(error.error_code(), "engine_error", "{error}");
        let none = DatasetView { name: "e".into(), files: vec![], schema: None };
        let error = Sandbox::open(EngineSettings::default(), &[none], &work).expect_err("empty");
        assert_eq!(error.error_code(), "dataset_empty");
    }
}
