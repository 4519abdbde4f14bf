//! The in-process DuckDB of one attempt: a fresh in-memory database with the task's memory and
//! thread limits, each input exposed as a view under its dataset's name, file access locked to
//! exactly the files of those inputs and the attempt's own scratch directory, the task's SQL
//! checked to be one read-only query, and the result exported as ZSTD Parquet split by size and
//! partition values.
//!
//! Everything here is blocking; the caller runs it on a blocking thread and stops a long query
//! from another thread through [`Engine::interrupt_handle`].

use crate::error::{Error, Result, classify_sql, engine, statement};
use duckdb::{Connection, InterruptHandle};
use duckmesh_catalog::{Column, NewFile};
use duckmesh_core::pivot::{self, DynamicPivot};
use duckmesh_core::statement::{Analysis, SERIALIZE_SQL};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The temporary view that holds the task's query.
const RESULT_VIEW: &str = "__duckmesh_result";

/// How to set up the database.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// DuckDB `memory_limit`; DuckDB's default (80 % of RAM) when `None`.
    pub memory_limit_bytes: Option<u64>,
    /// DuckDB `threads`; one per core when `None`.
    pub threads: Option<u64>,
    /// Where DuckDB spills when the query outgrows its memory.
    pub spill_dir: PathBuf,
    /// The only directories the SQL may touch: the attempt's own scratch (output, spill), never
    /// the shared input cache. Input files are allowed one by one as inputs are registered
    /// ([`Engine::register_input`]).
    pub allowed_dirs: Vec<PathBuf>,
}

/// One input, ready to be exposed to SQL.
#[derive(Debug, Clone)]
pub struct InputRelation {
    /// The name the SQL uses (the dataset's name).
    pub name: String,
    /// Local copies of the snapshot's files.
    pub files: Vec<PathBuf>,
    /// The dataset's columns, used when there are no files to read.
    pub schema: Option<Vec<Column>>,
}

/// How to write the result.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// An empty directory to write into.
    pub output_dir: PathBuf,
    /// Columns that split the output into `column=value/` directories.
    pub partition_by: Vec<String>,
    /// Start a new file once the current one reaches about this size.
    pub target_file_size_bytes: u64,
}

/// One Parquet file written by [`Engine::export`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    /// The local file.
    pub path: PathBuf,
    /// Its path relative to the output directory, with `/` separators.
    pub relative: String,
    /// Rows in the file.
    pub rows: u64,
    /// Partition values (column → value as written in the directory name).
    pub partition: Option<BTreeMap<String, String>>,
}

impl ExportedFile {
    /// Its object key under `prefix` (which ends in `/`) as output file number `index`:
    /// `<prefix>[<partition dirs>/]part-<index:05>.parquet`.
    pub fn object_key(&self, prefix: &str, index: usize) -> String {
        match self.relative.rsplit_once('/').map_or("", |(dir, _)| dir) {
            "" => format!("{prefix}part-{index:05}.parquet"),
            directory => format!("{prefix}{directory}/part-{index:05}.parquet"),
        }
    }

    /// The catalog entry for this file uploaded as `key`, with its size and SHA-256.
    pub fn new_file(&self, key: String, bytes: u64, sha256: String) -> NewFile {
        NewFile {
            path: key,
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            rows: i64::try_from(self.rows).unwrap_or(i64::MAX),
            sha256,
            partition: self.partition.as_ref().map(|values| {
                serde_json::Value::Object(
                    values.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
                )
            }),
        }
    }
}

/// A DuckDB database for one attempt.
#[derive(Debug)]
pub struct Engine {
    connection: Connection,
    /// The files of the registered inputs: the only files outside the allowed directories that
    /// the locked-down database may read.
    readable: Mutex<Vec<PathBuf>>,
}

impl Engine {
    /// Opens a fresh in-memory database with `settings`.
    pub fn open(settings: &EngineSettings) -> Result<Self> {
        let connection = open_in_memory()?;
        let mut setup = vec![
            "SET autoinstall_known_extensions = false".to_owned(),
            "SET autoload_known_extensions = false".to_owned(),
            "SET allow_community_extensions = false".to_owned(),
            format!("SET temp_directory = {}", literal(&path_text(&settings.spill_dir))),
        ];
        if let Some(bytes) = settings.memory_limit_bytes {
            setup.push(format!("SET memory_limit = '{}KiB'", (bytes / 1024).max(1)));
        }
        if let Some(threads) = settings.threads {
            setup.push(format!("SET threads = {}", threads.max(1)));
        }
        connection.execute_batch(&setup.join(";\n")).map_err(|error| engine("configuring the database", error))?;
        Ok(Self { connection, readable: Mutex::new(Vec::new()) })
    }

    /// A handle that interrupts the running statement from another thread.
    pub fn interrupt_handle(&self) -> Arc<InterruptHandle> {
        self.connection.interrupt_handle()
    }

    /// Exposes `input` to SQL as a view named after it: the files it has, or an empty relation
    /// with the dataset's columns when it has none. Dataset names are DNS labels, so a name
    /// with `-` also gets an alias with `_` (`trips-clean` → `trips_clean`) that SQL can use
    /// without quoting. Its files become readable after [`Engine::lock_down`]; no other file of
    /// the cache does.
    pub fn register_input(&self, input: &InputRelation) -> Result<()> {
        let body = if input.files.is_empty() {
            let Some(schema) = input.schema.as_ref().filter(|schema| !schema.is_empty()) else {
                return Err(Error::Input {
                    dataset: input.name.clone(),
                    message: "it has no committed files and no known schema, so there is nothing to read; \
                              declare the dataset's schema or run the task that fills it first"
                        .into(),
                });
            };
            let mut columns = Vec::with_capacity(schema.len());
            for column in schema {
                if column.data_type.contains(';') {
                    return Err(Error::Input {
                        dataset: input.name.clone(),
                        message: format!("column {:?} has an invalid type {:?}", column.name, column.data_type),
                    });
                }
                columns.push(format!("CAST(NULL AS {}) AS {}", column.data_type, identifier(&column.name)));
            }
            format!("SELECT {} LIMIT 0", columns.join(", "))
        } else {
            let files: Vec<String> = input.files.iter().map(|path| literal(&path_text(path))).collect();
            format!("SELECT * FROM read_parquet([{}])", files.join(", "))
        };
        let mut sql = format!("CREATE VIEW {} AS {body};", identifier(&input.name));
        let alias = input.name.replace('-', "_");
        if alias != input.name {
            sql.push_str(&format!(" CREATE VIEW {} AS SELECT * FROM {};", identifier(&alias), identifier(&input.name)));
        }
        self.connection.execute_batch(&sql).map_err(|error| match classify_sql(&error) {
            Error::Sql { message } => Error::Input { dataset: input.name.clone(), message },
            other => other,
        })?;
        self.readable
            .lock()
            .map_err(|_| Error::Engine { step: "registering an input", message: "a lock was poisoned".into() })?
            .extend(input.files.iter().cloned());
        Ok(())
    }

    /// Forbids file access from here on to everything but the registered inputs' files
    /// (`allowed_paths`) and `settings.allowed_dirs` (`allowed_directories`), turns external
    /// access off, and freezes the configuration so the task's SQL cannot undo it.
    pub fn lock_down(&self, settings: &EngineSettings) -> Result<()> {
        let files: Vec<String> = self
            .readable
            .lock()
            .map_err(|_| Error::Engine { step: "restricting file access", message: "a lock was poisoned".into() })?
            .iter()
            .map(|path| literal(&path_text(path)))
            .collect();
        let dirs: Vec<String> = settings
            .allowed_dirs
            .iter()
            .map(|dir| {
                let mut text = path_text(dir);
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

    /// Runs one or more statements that return no rows (set-up such as `CREATE TEMP TABLE …`).
    /// Errors are classified like the task's own SQL ([`Error::Sql`], [`Error::OutOfMemory`]).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.connection.execute_batch(sql).map_err(|error| classify_sql(&error))
    }

    /// Runs one query and returns its rows, every value as text (`None` for SQL `NULL`).
    /// Every column of the query must be `VARCHAR`: cast in the SQL (`x::VARCHAR`) so the text
    /// is DuckDB's own rendering of the value.
    pub fn query_text(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut statement = self.connection.prepare(sql).map_err(|error| classify_sql(&error))?;
        let mut rows = statement.query([]).map_err(|error| classify_sql(&error))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|error| classify_sql(&error))? {
            let width = row.as_ref().column_count();
            let mut values = Vec::with_capacity(width);
            for index in 0..width {
                values
                    .push(row.get::<_, Option<String>>(index).map_err(|error| engine("reading a result row", error))?);
            }
            out.push(values);
        }
        Ok(out)
    }

    /// Checks that `sql` is exactly one read-only query (the check the query API uses, on this
    /// database's parser) and returns the tables it names. Refusals are
    /// [`Error::SqlNotAllowed`]; SQL that does not parse is [`Error::Sql`].
    pub fn check_statement(&self, sql: &str) -> Result<Analysis> {
        check_statement_on(&self.connection, sql)
    }

    /// Checks the task's query ([`Engine::check_statement`]), then binds it (without running
    /// it) and returns its columns. Parser, binder and catalog errors surface here, before any
    /// work is done.
    pub fn prepare_query(&self, query: &str) -> Result<Vec<Column>> {
        // DuckDB runs every statement of a multi-statement text but the last one when preparing
        // it: only text that the check found to be one query may reach the wrapper.
        let analysis = self.check_statement(query)?;
        // A PIVOT whose values come from the data: its probes run first, on the pinned inputs,
        // and fill its IN lists (as the query API does; see `duckmesh_core::pivot`).
        let completed;
        let query = match &analysis.pivot {
            Some(pivot) => {
                completed = self.complete_pivot(pivot)?;
                completed.as_str()
            }
            None => query,
        };
        // Bound alone first, so that a binder error quotes the user's SQL and positions in it,
        // not the view wrapper below.
        self.connection.prepare(query).map_err(|error| classify_sql(&error))?;
        self.connection
            .execute(&format!("CREATE TEMP VIEW {RESULT_VIEW} AS {query}\n"), [])
            .map_err(|error| classify_sql(&error))?;
        let mut statement = self
            .connection
            .prepare(&format!("SELECT column_name, column_type FROM (DESCRIBE {RESULT_VIEW})"))
            .map_err(|error| engine("describing the result", error))?;
        let rows = statement
            .query_map([], |row| Ok(Column { name: row.get(0)?, data_type: row.get(1)? }))
            .map_err(|error| classify_sql(&error))?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(|error| engine("describing the result", error))
    }

    /// Runs the prepared query and writes its rows as ZSTD Parquet into `options.output_dir`,
    /// returning the files in path order (files with no rows are removed).
    ///
    /// DuckDB cannot split by size and by partition in one `COPY`, so a partitioned result is
    /// written per partition first and any partition directory that outgrew the target size is
    /// then rewritten into target-sized files.
    pub fn export(&self, options: &ExportOptions) -> Result<Vec<ExportedFile>> {
        let target = options.target_file_size_bytes;
        if options.partition_by.is_empty() {
            let sql = copy_statement(
                &format!("SELECT * FROM {RESULT_VIEW}"),
                &options.output_dir,
                &[format!("FILE_SIZE_BYTES {target}")],
            );
            self.connection.execute_batch(&sql).map_err(|error| classify_sql(&error))?;
        } else {
            let columns: Vec<String> = options.partition_by.iter().map(|c| identifier(c)).collect();
            let sql = copy_statement(
                &format!("SELECT * FROM {RESULT_VIEW}"),
                &options.output_dir,
                // Readers get inputs by content hash, not by directory: keep the values in the files.
                &[format!("PARTITION_BY ({})", columns.join(", ")), "WRITE_PARTITION_COLUMNS true".to_owned()],
            );
            self.connection.execute_batch(&sql).map_err(|error| classify_sql(&error))?;
            self.split_large_partitions(&options.output_dir, target)?;
        }

        let mut paths = Vec::new();
        collect_parquet(&options.output_dir, &mut paths)?;
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let rows = self.row_count(&path)?;
            if rows == 0 {
                std::fs::remove_file(&path)
                    .map_err(|error| Error::io("removing an empty output file", &path, error))?;
                continue;
            }
            let relative = path
                .strip_prefix(&options.output_dir)
                .map_err(|_| Error::Engine {
                    step: "listing the output",
                    message: format!("{} is outside the output directory", path.display()),
                })?
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let partition = partition_values(&relative, &options.partition_by);
            files.push(ExportedFile { path, relative, rows, partition });
        }
        Ok(files)
    }

    /// Rewrites every partition directory whose files add up to more than `target` bytes into
    /// files of about `target` bytes each.
    fn split_large_partitions(&self, output_dir: &Path, target: u64) -> Result<()> {
        let mut paths = Vec::new();
        collect_parquet(output_dir, &mut paths)?;
        let mut by_directory: BTreeMap<PathBuf, (u64, Vec<PathBuf>)> = BTreeMap::new();
        for path in paths {
            let size =
                std::fs::metadata(&path).map_err(|error| Error::io("sizing an output file", &path, error))?.len();
            let directory = path.parent().unwrap_or(output_dir).to_owned();
            let entry = by_directory.entry(directory).or_default();
            entry.0 += size;
            entry.1.push(path);
        }
        for (index, (directory, (size, files))) in by_directory.into_iter().enumerate() {
            if size <= target {
                continue;
            }
            let split = output_dir.join(format!(".split-{index}"));
            let list: Vec<String> = files.iter().map(|path| literal(&path_text(path))).collect();
            let sql = copy_statement(
                &format!("SELECT * FROM read_parquet([{}])", list.join(", ")),
                &split,
                &[format!("FILE_SIZE_BYTES {target}")],
            );
            self.connection.execute_batch(&sql).map_err(|error| engine("splitting a large partition", error))?;
            for file in &files {
                std::fs::remove_file(file).map_err(|error| Error::io("replacing a partition file", file, error))?;
            }
            let mut written = Vec::new();
            collect_parquet(&split, &mut written)?;
            for file in written {
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let destination = directory.join(format!("split-{name}"));
                std::fs::rename(&file, &destination)
                    .map_err(|error| Error::io("moving a split partition file", &destination, error))?;
            }
            std::fs::remove_dir_all(&split).map_err(|error| Error::io("removing a split directory", &split, error))?;
        }
        Ok(())
    }

    /// Rows in a Parquet file, from its footer.
    fn row_count(&self, path: &Path) -> Result<u64> {
        let sql = format!(
            "SELECT coalesce(sum(num_rows), 0)::UBIGINT FROM parquet_file_metadata({})",
            literal(&path_text(path))
        );
        self.connection
            .query_row(&sql, [], |row| row.get::<_, u64>(0))
            .map_err(|error| engine("counting output rows", error))
    }
}

impl Engine {
    /// Runs the probes of a dynamic PIVOT and returns the PIVOT with its `IN` lists filled, for
    /// at most [`MAX_PIVOT_COLUMNS`] columns.
    fn complete_pivot(&self, pivot: &DynamicPivot) -> Result<String> {
        let mut values = Vec::new();
        let mut columns = 1usize;
        for probe in pivot.probes(MAX_PIVOT_COLUMNS) {
            let mut statement = self.connection.prepare(&probe).map_err(|error| classify_sql(&error))?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(|error| classify_sql(&error))?;
            let found = rows
                .take(MAX_PIVOT_COLUMNS + 1)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|error| classify_sql(&error))?;
            columns = columns.saturating_mul(found.len().max(1));
            if columns > MAX_PIVOT_COLUMNS {
                return Err(Error::SqlNotAllowed {
                    message: format!(
                        "the PIVOT would make more than {MAX_PIVOT_COLUMNS} columns from the values in the data; name \
                         the values you want: ON <column> IN ('a', 'b')"
                    ),
                });
            }
            values.push(found);
        }
        Ok(pivot.complete(&values))
    }
}

/// The most columns a `PIVOT` without an `IN` list may make from the values in the data.
pub const MAX_PIVOT_COLUMNS: usize = 1000;

/// Checks task SQL before an attempt does any work: [`Engine::check_statement`] on a fresh,
/// empty database that only parses.
pub fn check_statement(sql: &str) -> Result<Analysis> {
    check_statement_on(&open_in_memory()?, sql)
}

fn check_statement_on(connection: &Connection, sql: &str) -> Result<Analysis> {
    let check = |text: &str| {
        let json: String = connection
            .query_row(SERIALIZE_SQL, [text], |row| row.get(0))
            .map_err(|error| engine("parsing the task's SQL", error))?;
        duckmesh_core::statement::check(&json).map_err(statement)
    };
    let checked = check(sql);
    // A PIVOT without an IN list is several statements to DuckDB: split it (probes, then the
    // completed PIVOT), each checked as one query.
    if matches!(checked, Err(Error::SqlNotAllowed { .. })) && pivot::mentions_pivot(sql) {
        return pivot::check_dynamic(sql, MAX_PIVOT_COLUMNS, check)
            .unwrap_or_else(|| Err(Error::SqlNotAllowed { message: pivot::NESTED_DYNAMIC_PIVOT.into() }));
    }
    checked
}

fn open_in_memory() -> Result<Connection> {
    let config = duckdb::Config::default()
        .enable_autoload_extension(false)
        .map_err(|error| engine("configuring the database", error))?;
    Connection::open_in_memory_with_flags(config).map_err(|error| engine("opening the database", error))
}

/// `COPY (<query>) TO '<dir>' (FORMAT parquet, COMPRESSION zstd, FILENAME_PATTERN …, <extra>)`.
fn copy_statement(query: &str, directory: &Path, extra: &[String]) -> String {
    let mut settings =
        vec!["FORMAT parquet".to_owned(), "COMPRESSION zstd".to_owned(), "FILENAME_PATTERN 'part-{i}'".to_owned()];
    settings.extend(extra.iter().cloned());
    format!("COPY ({query}) TO {} ({})", literal(&path_text(directory)), settings.join(", "))
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io("listing the output", dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("listing the output", dir, error))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|error| Error::io("listing the output", &path, error))?;
        if kind.is_dir() {
            collect_parquet(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads `column=value` directory names back into partition values.
fn partition_values(relative: &str, partition_by: &[String]) -> Option<BTreeMap<String, String>> {
    if partition_by.is_empty() {
        return None;
    }
    let mut values = BTreeMap::new();
    for segment in relative.split('/') {
        if let Some((column, value)) = segment.split_once('=')
            && partition_by.iter().any(|c| c == column)
        {
            values.insert(column.to_owned(), percent_decode(value));
        }
    }
    Some(values)
}

/// Undoes the `%XX` escaping DuckDB applies to partition values in directory names.
fn percent_decode(text: &str) -> String {
    let hex = |byte: u8| (byte as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let (Some(&high), Some(&low)) = (bytes.get(index + 1), bytes.get(index + 2))
            && let (Some(high), Some(low)) = (hex(high), hex(low))
        {
            out.push((high * 16 + low) as u8);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A SQL string literal.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A quoted SQL identifier.
pub(crate) fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_files_name_their_keys_and_catalog_entries() {
        let plain =
            ExportedFile { path: "/x/a.parquet".into(), relative: "data_0.parquet".into(), rows: 3, partition: None };
        assert_eq!(plain.object_key("ds/attempts/7/1/", 2), "ds/attempts/7/1/part-00002.parquet");
        let partition = BTreeMap::from([("day".to_owned(), "2026-01-02".to_owned())]);
        let split = ExportedFile {
            path: "/x/b.parquet".into(),
            relative: "day=2026-01-02/data_0.parquet".into(),
            rows: 5,
            partition: Some(partition),
        };
        let key = split.object_key("ds/ingest/9/", 0);
        assert_eq!(key, "ds/ingest/9/day=2026-01-02/part-00000.parquet");
        let entry = split.new_file(key.clone(), 120, "ab".repeat(32));
        assert_eq!((entry.path, entry.bytes, entry.rows), (key, 120, 5));
        assert_eq!(entry.partition, Some(serde_json::json!({"day": "2026-01-02"})));
    }

    fn settings(dir: &Path) -> EngineSettings {
        EngineSettings {
            memory_limit_bytes: Some(512 * 1024 * 1024),
            threads: Some(3),
            spill_dir: dir.join("spill"),
            allowed_dirs: vec![dir.to_owned()],
        }
    }

    /// The catalog's canonical type names (which declared schemas are stored in) must be the
    /// very names DuckDB reports for a task's output, or an append would fail its schema check.
    #[test]
    fn the_catalogs_canonical_type_names_are_what_duckdb_reports() {
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
            // one engine per query: the result view is made once per engine
            let engine = Engine::open(&settings(dir.path())).expect("open");
            let columns = engine
                .prepare_query(&format!("SELECT CAST(NULL AS {data_type}) AS c"))
                .unwrap_or_else(|error| panic!("{data_type}: {error}"));
            assert_eq!(duckmesh_catalog::canonical_type(data_type), columns[0].data_type, "{data_type:?}");
        }
    }

    #[test]
    fn limits_are_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(&settings(dir.path())).expect("open");
        let threads: i64 =
            engine.connection.query_row("SELECT current_setting('threads')", [], |row| row.get(0)).expect("threads");
        assert_eq!(threads, 3);
        let memory: String =
            engine.connection.query_row("SELECT current_setting('memory_limit')", [], |row| row.get(0)).expect("mem");
        assert!(memory.starts_with("512.0 MiB") || memory.starts_with("536.8 MB"), "{memory}");
    }

    #[test]
    fn exports_split_by_size_and_count_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path());
        let engine = Engine::open(&settings).expect("open");
        engine.lock_down(&settings).expect("lock down");
        let schema = engine.prepare_query("SELECT i AS id, hash(i) AS h FROM range(300000) t(i)").expect("prepare");
        assert_eq!(schema.iter().map(|c| c.data_type.as_str()).collect::<Vec<_>>(), ["BIGINT", "UBIGINT"]);
        let files = engine
            .export(&ExportOptions {
                output_dir: dir.path().join("out"),
                partition_by: vec![],
                target_file_size_bytes: 1024 * 1024,
            })
            .expect("export");
        assert!(files.len() >= 2, "{files:?}");
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 300_000);
        assert!(files.iter().all(|f| f.partition.is_none() && !f.relative.contains('/')));
        // Outside the allowed directories nothing can be read.
        let error = engine.prepare_query("SELECT * FROM read_text('/etc/hostname')");
        assert!(error.is_err());
    }

    /// A PIVOT without an IN list runs as DuckDB would run it (values from the data, in text
    /// order); one that would make too many columns is refused before it runs.
    #[test]
    fn pivots_take_their_values_from_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(&settings(dir.path())).expect("open");
        let columns = engine
            .prepare_query("PIVOT (SELECT i % 11 AS k, i AS v FROM range(22) t(i)) ON k USING sum(v)")
            .expect("dynamic PIVOT");
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["0", "1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]);
        let engine = Engine::open(&settings(dir.path())).expect("open");
        let error = engine
            .prepare_query("PIVOT (SELECT i FROM range(1001) t(i)) ON i USING count(*)")
            .expect_err("too many columns");
        assert_eq!(error.error_code(), "sql_not_allowed", "{error}");
        assert!(error.to_string().contains("more than 1000 columns"), "{error}");
        let error = check_statement("SELECT * FROM (PIVOT trips ON zone USING count(*))").expect_err("nested");
        assert!(error.to_string().contains("IN list"), "{error}");
    }

    #[test]
    fn partition_directories_are_read_back() {
        let by = vec!["day".to_owned(), "kind".to_owned()];
        let values = partition_values("day=2024-01-01/kind=a%2Fb/part-0.parquet", &by).expect("partitioned");
        assert_eq!(values.get("day").map(String::as_str), Some("2024-01-01"));
        assert_eq!(values.get("kind").map(String::as_str), Some("a/b"));
        assert_eq!(partition_values("part-0.parquet", &[]), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn hyphenated_inputs_are_also_reachable_with_underscores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(&settings(dir.path())).expect("open");
        let schema = vec![Column { name: "id".into(), data_type: "BIGINT".into() }];
        let input = InputRelation { name: "trips-clean".into(), files: vec![], schema: Some(schema) };
        engine.register_input(&input).expect("register");
        for query in ["SELECT count(*) FROM trips_clean", "SELECT count(*) FROM \"trips-clean\""] {
            let rows: i64 = engine.connection.query_row(query, [], |row| row.get(0)).expect(query);
            assert_eq!(rows, 0, "{query}");
        }
    }

    #[test]
    fn statements_run_and_rows_come_back_as_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(&settings(dir.path())).expect("open");
        engine
            .execute_batch("CREATE TEMP TABLE t (id BIGINT, name VARCHAR); INSERT INTO t VALUES (1, 'a'), (2, NULL)")
            .expect("set-up");
        let rows = engine.query_text("SELECT id::VARCHAR, name FROM t ORDER BY id").expect("query");
        assert_eq!(rows, vec![vec![Some("1".to_owned()), Some("a".to_owned())], vec![Some("2".to_owned()), None]]);
        let error = engine.execute_batch("SELECT * FROM no_such_table").expect_err("unknown table");
        assert_eq!(error.error_code(), "sql_error");
        assert!(engine.query_text("SELEC 1").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(identifier("a\"b"), "\"a\"\"b\"");
    }
}
