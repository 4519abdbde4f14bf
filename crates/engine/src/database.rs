//! A fresh in-memory DuckDB for one attempt, one query or one ingest batch: limits applied,
//! extension auto-install and auto-load off, each input exposed as a view under its dataset's
//! name, then locked down by DuckDB's own configuration before any SQL from outside runs —
//! file access limited to exactly the registered files and the caller's scratch directories,
//! external access off, and the configuration frozen so the SQL cannot undo any of it.
//!
//! Everything here is blocking; callers run it on a blocking thread and stop a long statement
//! from another thread through [`Database::interrupt_handle`].

use crate::error::{Error, Result, classify, engine, statement};
use crate::sql::{identifier, is_type_text, literal, path_literal};
use duckdb::{Connection, InterruptHandle};
use duckmesh_contracts::Column;
use duckmesh_core::pivot::DynamicPivot;
use duckmesh_core::statement::{Analysis, TreeLimits};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The temporary view that holds the query being run ([`Database::create_result_view`]).
pub const RESULT_VIEW: &str = "__duckmesh_result";

/// The most columns a `PIVOT` without an `IN` list may make from the values in the data, unless
/// the caller sets its own limit.
pub const MAX_PIVOT_COLUMNS: usize = 1000;

/// The database's resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// DuckDB `memory_limit`; DuckDB's default (80 % of RAM) when `None`.
    pub memory_limit_bytes: Option<u64>,
    /// DuckDB `threads`; one per core when `None`.
    pub threads: Option<u64>,
    /// Where DuckDB spills when a statement outgrows its memory.
    pub spill_dir: PathBuf,
}

/// One input, exposed to SQL as a view.
#[derive(Debug, Clone)]
pub struct Relation {
    /// The name the SQL uses (the dataset's name). A name with `-` also gets an alias with `_`.
    pub name: String,
    /// Local copies of the snapshot's Parquet files.
    pub files: Vec<PathBuf>,
    /// The dataset's columns, used when there are no files to read.
    pub schema: Option<Vec<Column>>,
}

/// A DuckDB database (or one more connection to it, [`Database::session`]).
#[derive(Debug)]
pub struct Database {
    connection: Connection,
    /// The files of the registered relations: the only files outside the allowed directories
    /// that the locked-down database may read.
    readable: Mutex<Vec<PathBuf>>,
}

impl Database {
    /// Opens a fresh in-memory database with `limits`; extensions are never installed or
    /// loaded on their own.
    pub fn open(limits: &Limits) -> Result<Self> {
        let connection = open_in_memory()?;
        let mut setup = vec![
            "SET autoinstall_known_extensions = false".to_owned(),
            "SET autoload_known_extensions = false".to_owned(),
            "SET allow_community_extensions = false".to_owned(),
            format!("SET temp_directory = {}", path_literal(&limits.spill_dir)),
        ];
        if let Some(bytes) = limits.memory_limit_bytes {
            setup.push(format!("SET memory_limit = '{}KiB'", (bytes / 1024).max(1)));
        }
        if let Some(threads) = limits.threads {
            setup.push(format!("SET threads = {}", threads.max(1)));
        }
        connection.execute_batch(&setup.join(";\n")).map_err(|error| engine("configuring the database", error))?;
        Ok(Self { connection, readable: Mutex::new(Vec::new()) })
    }

    /// A new connection to the same database, for one more query: its temporary views and its
    /// interrupt are its own; the database's views, settings (the lock-down included) and warm
    /// caches are shared.
    pub fn session(&self) -> Result<Self> {
        let connection = self.connection.try_clone().map_err(|error| engine("opening a connection", error))?;
        Ok(Self { connection, readable: Mutex::new(Vec::new()) })
    }

    /// The connection, for statements of the caller's own (result streaming, Arrow).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A handle that interrupts the running statement from another thread.
    pub fn interrupt_handle(&self) -> Arc<InterruptHandle> {
        self.connection.interrupt_handle()
    }

    /// Exposes `relation` as a view named after it: its files, or an empty relation with its
    /// declared columns when it has none ([`Error::NoData`] when it has neither). A name with
    /// `-` also gets an alias with `_` (`trips-clean` → `trips_clean`) that SQL can use without
    /// quoting. Its files become readable after [`Database::lock_down`]; no other file does.
    pub fn register(&self, relation: &Relation) -> Result<()> {
        self.connection
            .execute_batch(&view_sql(relation)?)
            .map_err(|error| Error::Relation { name: relation.name.clone(), message: error.to_string() })?;
        self.readable
            .lock()
            .map_err(|_| Error::Engine { step: "registering an input", message: "a lock was poisoned".into() })?
            .extend(relation.files.iter().cloned());
        Ok(())
    }

    /// Forbids file access from here on to everything but the registered relations' files
    /// (`allowed_paths`) and `allowed_dirs` (`allowed_directories`: scratch, spill, output),
    /// turns external access off, and freezes the configuration so SQL cannot undo it.
    pub fn lock_down(&self, allowed_dirs: &[PathBuf]) -> Result<()> {
        let files: Vec<String> = self
            .readable
            .lock()
            .map_err(|_| Error::Engine { step: "restricting file access", message: "a lock was poisoned".into() })?
            .iter()
            .map(|path| path_literal(path))
            .collect();
        let dirs: Vec<String> = allowed_dirs
            .iter()
            .map(|dir| {
                let mut text = dir.to_string_lossy().into_owned();
                if !text.ends_with('/') {
                    text.push('/');
                }
                literal(&text)
            })
            .collect();
        let sql = format!(
            "SET allowed_paths = [{}];\nSET allowed_directories = [{}];\nSET enable_external_access = false;\n\
             SET lock_configuration = true",
            files.join(", "),
            dirs.join(", ")
        );
        self.connection.execute_batch(&sql).map_err(|error| engine("restricting file access", error))
    }

    /// Runs statements that return no rows (set-up such as `CREATE TEMP TABLE …`), their
    /// errors classified like SQL from outside.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.connection.execute_batch(sql).map_err(|error| classify("running SQL", &error))
    }

    /// Runs one query and returns its rows, every value as text (`None` for SQL `NULL`). Every
    /// column must be `VARCHAR`: cast in the SQL (`x::VARCHAR`) so the text is DuckDB's own
    /// rendering of the value.
    pub fn query_text(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let failed = |error: duckdb::Error| classify("running SQL", &error);
        let mut statement = self.connection.prepare(sql).map_err(failed)?;
        let mut rows = statement.query([]).map_err(failed)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(failed)? {
            let width = row.as_ref().column_count();
            let mut values = Vec::with_capacity(width);
            for index in 0..width {
                values.push(row.get::<_, Option<String>>(index).map_err(|error| engine("reading a row", error))?);
            }
            out.push(values);
        }
        Ok(out)
    }

    /// The first column of `sql` as text, at most `limit` rows.
    pub fn strings(&self, sql: &str, limit: usize) -> Result<Vec<String>> {
        let failed = |error: duckdb::Error| classify("running SQL", &error);
        let mut statement = self.connection.prepare(sql).map_err(failed)?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(failed)?;
        rows.take(limit).collect::<std::result::Result<Vec<_>, _>>().map_err(failed)
    }

    /// Checks that `sql` is exactly one read-only query ([`crate::check_statement`] on this
    /// database's parser, default tree limits) and returns the relations it names. Refusals are
    /// [`Error::SqlNotAllowed`]; SQL that does not parse is [`Error::Sql`].
    pub fn check_statement(&self, sql: &str) -> Result<Analysis> {
        crate::check::check_statement(&self.connection, sql, TreeLimits::default(), MAX_PIVOT_COLUMNS)?
            .map_err(statement)
    }

    /// Runs the probes of a dynamic `PIVOT` and returns it with its `IN` lists filled, for at
    /// most `max_columns` columns ([`Error::PivotTooWide`] beyond). `stopped` is asked before
    /// each probe: an interrupt that arrives between two statements is forgotten by DuckDB.
    pub fn complete_pivot(
        &self,
        pivot: &DynamicPivot,
        max_columns: usize,
        stopped: &dyn Fn() -> bool,
    ) -> Result<String> {
        let mut values = Vec::new();
        let mut columns = 1usize;
        for probe in pivot.probes(max_columns) {
            if stopped() {
                return Err(Error::Interrupted { message: "stopped between two statements".into() });
            }
            let found = self.strings(&probe, max_columns.saturating_add(1))?;
            columns = columns.saturating_mul(found.len().max(1));
            if columns > max_columns {
                return Err(Error::PivotTooWide { max_columns });
            }
            values.push(found);
        }
        Ok(pivot.complete(&values))
    }

    /// Makes `query` (already checked to be one query) the temporary [`RESULT_VIEW`], without
    /// running it. The trailing newline ends a trailing comment.
    pub fn create_result_view(&self, query: &str) -> Result<()> {
        // DuckDB runs every statement of a multi-statement text but the last when preparing
        // it: only text that the check found to be one query may get here.
        self.connection
            .execute(&format!("CREATE TEMP VIEW {RESULT_VIEW} AS {query}\n"), [])
            .map(drop)
            .map_err(|error| classify("running SQL", &error))
    }

    /// The columns of [`RESULT_VIEW`], as DuckDB names their types.
    pub fn result_columns(&self) -> Result<Vec<Column>> {
        let mut statement = self
            .connection
            .prepare(&format!("SELECT column_name, column_type FROM (DESCRIBE {RESULT_VIEW})"))
            .map_err(|error| engine("describing the result", error))?;
        let rows = statement
            .query_map([], |row| Ok(Column { name: row.get(0)?, data_type: row.get(1)? }))
            .map_err(|error| classify("describing the result", &error))?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(|error| engine("describing the result", error))
    }

    /// Checks `query` ([`Database::check_statement`]), completes a dynamic `PIVOT` from the
    /// data, binds it (without running it) as [`RESULT_VIEW`] and returns its columns. Parser,
    /// binder and catalog errors surface here, before any work is done.
    pub fn prepare_query(&self, query: &str) -> Result<Vec<Column>> {
        let analysis = self.check_statement(query)?;
        let completed;
        let query = match &analysis.pivot {
            Some(pivot) => {
                completed = self.complete_pivot(pivot, MAX_PIVOT_COLUMNS, &|| false)?;
                completed.as_str()
            }
            None => query,
        };
        // Bound alone first, so that a binder error quotes the SQL and positions in it, not the
        // view wrapper.
        self.connection.prepare(query).map_err(|error| classify("running SQL", &error))?;
        self.create_result_view(query)?;
        self.result_columns()
    }
}

/// Checks SQL before any work is done: [`Database::check_statement`] on a fresh, empty database
/// that only parses.
pub fn check_statement(sql: &str) -> Result<Analysis> {
    crate::check::check_statement(&open_in_memory()?, sql, TreeLimits::default(), MAX_PIVOT_COLUMNS)?.map_err(statement)
}

/// An in-memory database with extension auto-loading off from the start.
pub fn open_in_memory() -> Result<Connection> {
    let config = duckdb::Config::default()
        .enable_autoload_extension(false)
        .map_err(|error| engine("configuring the database", error))?;
    Connection::open_in_memory_with_flags(config).map_err(|error| engine("opening the database", error))
}

/// `CREATE VIEW` statements for a relation (and its `_` alias).
fn view_sql(relation: &Relation) -> Result<String> {
    let body = if relation.files.is_empty() {
        let Some(schema) = relation.schema.as_ref().filter(|schema| !schema.is_empty()) else {
            return Err(Error::NoData { name: relation.name.clone() });
        };
        let mut columns = Vec::with_capacity(schema.len());
        for column in schema {
            if !is_type_text(&column.data_type) {
                return Err(Error::Relation {
                    name: relation.name.clone(),
                    message: format!("column {:?} has an invalid type {:?}", column.name, column.data_type),
                });
            }
            columns.push(format!("CAST(NULL AS {}) AS {}", column.data_type, identifier(&column.name)));
        }
        format!("SELECT {} LIMIT 0", columns.join(", "))
    } else {
        let files: Vec<String> = relation.files.iter().map(|path| path_literal(path)).collect();
        format!("SELECT * FROM read_parquet([{}])", files.join(", "))
    };
    let mut sql = format!("CREATE VIEW {} AS {body};", identifier(&relation.name));
    let alias = relation.name.replace('-', "_");
    if alias != relation.name {
        sql.push_str(&format!(" CREATE VIEW {} AS SELECT * FROM {};", identifier(&alias), identifier(&relation.name)));
    }
    Ok(sql)
}

/// The path of `path` relative to `root`, with `/` separators.
pub(crate) fn relative_text(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    Some(
        relative.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"),
    )
}
