//! Writing [`RESULT_VIEW`] as ZSTD Parquet: split into files of about a target size and, for a
//! partitioned dataset, into `column=value/` directories — the files a commit adds.

use crate::database::{Database, RESULT_VIEW, relative_text};
use crate::error::{Error, Result, classify, engine};
use crate::sql::{identifier, path_literal};
use duckmesh_contracts::commit::NewFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// One Parquet file written by [`Database::export`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    /// The local file.
    pub path: PathBuf,
    /// Its path relative to the output directory, with `/` separators.
    pub relative: String,
    /// Rows in the file.
    pub rows: u64,
    /// Partition values (column → value as written in the directory name, decoded).
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

    /// The commit's entry for this file uploaded as `key`, with its size and SHA-256.
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

impl Database {
    /// Runs [`RESULT_VIEW`] and writes its rows as ZSTD Parquet into `options.output_dir`,
    /// returning the files in path order (files with no rows are removed).
    ///
    /// DuckDB cannot split by size and by partition in one `COPY`, so a partitioned result is
    /// written per partition first and any partition directory that outgrew the target size is
    /// then rewritten into target-sized files.
    pub fn export(&self, options: &ExportOptions) -> Result<Vec<ExportedFile>> {
        let target = options.target_file_size_bytes;
        let result = format!("SELECT * FROM {RESULT_VIEW}");
        if options.partition_by.is_empty() {
            let sql = copy_statement(&result, &options.output_dir, &[format!("FILE_SIZE_BYTES {target}")]);
            self.connection().execute_batch(&sql).map_err(|error| classify("writing the result", &error))?;
        } else {
            let columns: Vec<String> = options.partition_by.iter().map(|c| identifier(c)).collect();
            let sql = copy_statement(
                &result,
                &options.output_dir,
                // Readers get inputs by content hash, not by directory: keep the values in the files.
                &[format!("PARTITION_BY ({})", columns.join(", ")), "WRITE_PARTITION_COLUMNS true".to_owned()],
            );
            self.connection().execute_batch(&sql).map_err(|error| classify("writing the result", &error))?;
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
            let relative = relative_text(&options.output_dir, &path).ok_or_else(|| Error::Engine {
                step: "listing the output",
                message: format!("{} is outside the output directory", path.display()),
            })?;
            let partition = partition_values(&relative, &options.partition_by);
            files.push(ExportedFile { path, relative, rows, partition });
        }
        Ok(files)
    }

    /// Writes all of [`RESULT_VIEW`] as one ZSTD Parquet file at `file` (its directory is
    /// created) and returns the rows written.
    pub fn export_to_file(&self, file: &Path) -> Result<u64> {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| Error::io("creating the export directory", parent, error))?;
        }
        let copy =
            format!("COPY (SELECT * FROM {RESULT_VIEW}) TO {} (FORMAT parquet, COMPRESSION zstd)", path_literal(file));
        let written = self.connection().execute(&copy, []).map_err(|error| classify("writing the result", &error))?;
        Ok(written as u64)
    }

    /// Writes all of [`RESULT_VIEW`] as one CSV file (a header line, `,`-separated, quoted
    /// where needed) at `file` (its directory is created) and returns the rows written.
    pub fn export_csv_to_file(&self, file: &Path) -> Result<u64> {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| Error::io("creating the export directory", parent, error))?;
        }
        let copy = format!("COPY (SELECT * FROM {RESULT_VIEW}) TO {} (FORMAT csv, HEADER true)", path_literal(file));
        let written = self.connection().execute(&copy, []).map_err(|error| classify("writing the result", &error))?;
        Ok(written as u64)
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
            let list: Vec<String> = files.iter().map(|path| path_literal(path)).collect();
            let sql = copy_statement(
                &format!("SELECT * FROM read_parquet([{}])", list.join(", ")),
                &split,
                &[format!("FILE_SIZE_BYTES {target}")],
            );
            self.connection().execute_batch(&sql).map_err(|error| engine("splitting a large partition", error))?;
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
        let sql =
            format!("SELECT coalesce(sum(num_rows), 0)::UBIGINT FROM parquet_file_metadata({})", path_literal(path));
        self.connection()
            .query_row(&sql, [], |row| row.get::<_, u64>(0))
            .map_err(|error| engine("counting output rows", error))
    }
}

/// `COPY (<query>) TO '<dir>' (FORMAT parquet, COMPRESSION zstd, FILENAME_PATTERN …, <extra>)`.
fn copy_statement(query: &str, directory: &Path, extra: &[String]) -> String {
    let mut settings =
        vec!["FORMAT parquet".to_owned(), "COMPRESSION zstd".to_owned(), "FILENAME_PATTERN 'part-{i}'".to_owned()];
    settings.extend(extra.iter().cloned());
    format!("COPY ({query}) TO {} ({})", path_literal(directory), settings.join(", "))
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

/// Reads `column=value` directory names back into partition values, undoing the `%XX` escaping
/// DuckDB applies to values in directory names.
fn partition_values(relative: &str, partition_by: &[String]) -> Option<BTreeMap<String, String>> {
    if partition_by.is_empty() {
        return None;
    }
    let mut values = BTreeMap::new();
    for segment in relative.split('/') {
        if let Some((column, value)) = segment.split_once('=')
            && partition_by.iter().any(|c| c == column)
        {
            let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
            values.insert(column.to_owned(), decoded);
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn exported_files_name_their_keys_and_commit_entries() {
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

    #[test]
    fn partition_directories_are_read_back() {
        let by = vec!["day".to_owned(), "kind".to_owned()];
        let values = partition_values("day=2024-01-01/kind=a%2Fb/part-0.parquet", &by).expect("partitioned");
        assert_eq!(values.get("day").map(String::as_str), Some("2024-01-01"));
        assert_eq!(values.get("kind").map(String::as_str), Some("a/b"));
        assert_eq!(partition_values("part-0.parquet", &[]), None);
        let odd = partition_values("kind=100%/x=%zz%41/part-0.parquet", &["kind".to_owned(), "x".to_owned()])
            .expect("partitioned");
        assert_eq!(odd.get("kind").map(String::as_str), Some("100%"));
        assert_eq!(odd.get("x").map(String::as_str), Some("%zzA"));
    }

    #[test]
    fn exports_split_by_size_and_partition_and_count_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits { memory_limit_bytes: None, threads: Some(2), spill_dir: dir.path().join("spill") };
        let database = Database::open(&limits).expect("open");
        database.lock_down(&[dir.path().to_owned()]).expect("lock down");
        database.prepare_query("SELECT i AS id, hash(i) AS h FROM range(300000) t(i)").expect("prepare");
        let files = database
            .export(&ExportOptions {
                output_dir: dir.path().join("out"),
                partition_by: vec![],
                target_file_size_bytes: 1024 * 1024,
            })
            .expect("export");
        assert!(files.len() >= 2, "{files:?}");
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 300_000);
        assert!(files.iter().all(|f| f.partition.is_none() && !f.relative.contains('/')));

        let database = Database::open(&limits).expect("open");
        database.prepare_query("SELECT i % 2 AS k, i AS v FROM range(1000) t(i)").expect("prepare");
        let files = database
            .export(&ExportOptions {
                output_dir: dir.path().join("parts"),
                partition_by: vec!["k".into()],
                target_file_size_bytes: 1 << 20,
            })
            .expect("export");
        let keys: Vec<_> = files.iter().map(|f| f.partition.clone().expect("partitioned")["k"].clone()).collect();
        assert_eq!(keys, ["0", "1"]);
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 1000);
        let single = dir.path().join("whole/result.parquet");
        assert_eq!(database.export_to_file(&single).expect("whole"), 1000);
        assert!(single.is_file());
        let csv = dir.path().join("whole/result.csv");
        assert_eq!(database.export_csv_to_file(&csv).expect("csv"), 1000);
        let text = std::fs::read_to_string(&csv).expect("read csv");
        assert_eq!(text.lines().next(), Some("k,v"));
        assert_eq!(text.lines().count(), 1001);
    }
}
