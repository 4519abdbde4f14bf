//! The task and dataset spec documents the worker reads from the catalog (`tasks.spec`,
//! `datasets.spec`), as typed structs with the checks a user's typo deserves. This format is a
//! contract shared with the operator's CRDs and `duckmesh dev`; docs/worker.md describes it.

use serde::{Deserialize, Serialize};

/// A task or dataset spec that is not usable as written (`invalid_task_spec`; retrying cannot
/// help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task spec: {message}")]
pub struct SpecError {
    /// What is wrong and how to fix it.
    pub message: String,
}

impl SpecError {
    /// Stable error code: `invalid_task_spec`.
    pub fn error_code(&self) -> &'static str {
        "invalid_task_spec"
    }
}

type Result<T> = std::result::Result<T, SpecError>;

/// Default target size of one output Parquet file: 128 MiB.
pub const DEFAULT_TARGET_FILE_SIZE_BYTES: u64 = 128 * 1024 * 1024;
/// Smallest accepted target file size (1 MiB): smaller files only slow readers down.
pub const MIN_TARGET_FILE_SIZE_BYTES: u64 = 1024 * 1024;

/// The spec of a `sql` task (`tasks.spec`, camelCase): written by the scheduler from the
/// declared task, read by the worker. Absent fields are omitted when written.
///
/// ```json
/// {"sql": "SELECT ...", "inputs": [{"dataset": "raw_trips", "snapshot": 12}],
///  "resources": {"memory": "1Gi", "cpu": "2"}, "targetFileSizeBytes": 134217728}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlTaskSpec {
    /// One DuckDB `SELECT` (or any query producing rows) over the inputs.
    pub sql: String,
    /// Input datasets, visible to the SQL under their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputSpec>,
    /// Compute the query may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Target size of each output file; overrides the output dataset's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_file_size_bytes: Option<u64>,
}

/// One input of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputSpec {
    /// Dataset name, in the task's namespace.
    pub dataset: String,
    /// A snapshot to read; the latest committed one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<i64>,
}

/// Kubernetes-style resource quantities.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Memory such as `512Mi`, `2Gi`, `1G` or a byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// CPU such as `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
}

/// A quantity as Kubernetes writes it: a string (`"2Gi"`) or a bare number (`2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// `"2Gi"`, `"500m"`.
    Text(String),
    /// `2`.
    Number(u64),
}

impl Quantity {
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.trim().to_owned(),
            Self::Number(number) => number.to_string(),
        }
    }
}

/// The worker-relevant part of a dataset's spec (`datasets.spec`); other fields belong to other
/// components and are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetOptions {
    /// Columns whose values split the output into one directory per value (`col=value/`).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Target size of each file written to the dataset.
    #[serde(default)]
    pub target_file_size_bytes: Option<u64>,
}

/// What the worker derives from a task's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineLimits {
    /// DuckDB `memory_limit` in bytes (80 % of the task's memory, leaving room for the worker
    /// process itself), when the task sets memory.
    pub memory_limit_bytes: Option<u64>,
    /// DuckDB `threads`: `ceil(cpu)`, at least 1, when the task sets cpu.
    pub threads: Option<u64>,
}

impl SqlTaskSpec {
    /// Parses and checks a task spec. Every problem is an `invalid_task_spec` error whose
    /// message says what to fix.
    pub fn parse(value: &serde_json::Value) -> Result<Self> {
        let spec: Self = serde_json::from_value(value.clone())
            .map_err(|error| invalid(format!("the task spec does not match the sql task format: {error}")))?;
        if spec.sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(invalid("`sql` is empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for input in &spec.inputs {
            if input.dataset.trim().is_empty() {
                return Err(invalid("an input has an empty `dataset` name".into()));
            }
            if !seen.insert(input.dataset.as_str()) {
                return Err(invalid(format!("input dataset {:?} is listed twice", input.dataset)));
            }
            if input.snapshot.is_some_and(|snapshot| snapshot < 1) {
                return Err(invalid(format!(
                    "input {:?}: `snapshot` must be a snapshot id (1 or more)",
                    input.dataset
                )));
            }
        }
        if let Some(size) = spec.target_file_size_bytes {
            check_file_size("targetFileSizeBytes", size)?;
        }
        spec.limits()?;
        Ok(spec)
    }

    /// The DuckDB limits that follow from `resources`.
    pub fn limits(&self) -> Result<EngineLimits> {
        let Some(resources) = &self.resources else {
            return Ok(EngineLimits::default());
        };
        let memory_limit_bytes = match &resources.memory {
            Some(memory) => {
                let bytes = parse_memory(&memory.text())?;
                Some(bytes / 5 * 4)
            }
            None => None,
        };
        let threads = resources.cpu.as_ref().map(|cpu| parse_cpu(&cpu.text())).transpose()?;
        Ok(EngineLimits { memory_limit_bytes, threads })
    }

    /// The SQL without trailing semicolons and whitespace, ready to be wrapped in a view.
    pub fn query(&self) -> &str {
        self.sql.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace())
    }
}

impl DatasetOptions {
    /// Reads the options from a dataset's spec. A malformed `partitionBy` or
    /// `targetFileSizeBytes` is an `invalid_task_spec` error naming the dataset.
    pub fn parse(dataset: &str, value: &serde_json::Value) -> Result<Self> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let options: Self = serde_json::from_value(value.clone())
            .map_err(|error| invalid(format!("the spec of output dataset {dataset:?} is malformed: {error}")))?;
        let mut seen = std::collections::HashSet::new();
        for column in &options.partition_by {
            if column.trim().is_empty() || !seen.insert(column.as_str()) {
                return Err(invalid(format!(
                    "output dataset {dataset:?}: partitionBy must list distinct, non-empty column names"
                )));
            }
        }
        if let Some(size) = options.target_file_size_bytes {
            check_file_size("the dataset's targetFileSizeBytes", size)?;
        }
        Ok(options)
    }
}

fn check_file_size(what: &str, size: u64) -> Result<()> {
    if size < MIN_TARGET_FILE_SIZE_BYTES {
        return Err(invalid(format!("{what} must be at least {MIN_TARGET_FILE_SIZE_BYTES} (1 MiB), got {size}")));
    }
    Ok(())
}

fn invalid(message: String) -> SpecError {
    SpecError { message }
}

/// Parses a Kubernetes memory quantity into bytes ([`crate::quantity::memory_bytes`]), at
/// least the 16Mi DuckDB needs to run.
pub fn parse_memory(text: &str) -> Result<u64> {
    let bytes = crate::quantity::memory_bytes(text).ok_or_else(|| {
        invalid(format!("resources.memory {text:?} is not a memory quantity such as 512Mi, 2Gi or 1G"))
    })?;
    if bytes < 16 * 1024 * 1024 {
        return Err(invalid(format!("resources.memory {text:?} is below the 16Mi DuckDB needs to run")));
    }
    Ok(bytes)
}

/// Parses a Kubernetes CPU quantity into DuckDB threads: `ceil(cpu)`, at least 1
/// (`500m` → 1, `2` → 2, `2.5` → 3), at most 4096.
pub fn parse_cpu(text: &str) -> Result<u64> {
    crate::quantity::cpu_millis(text)
        .map(|millis| millis.div_ceil(1000))
        .filter(|threads| *threads <= 4096)
        .ok_or_else(|| invalid(format!("resources.cpu {text:?} is not a CPU quantity such as 500m or 2")))
}

/// Default of a `compact` task's `minFiles`: small files a partition needs before it is
/// compacted.
pub const DEFAULT_MIN_FILES: u32 = 16;

/// The spec of a `compact` task (`tasks.spec`, camelCase), written by the scheduler from a
/// Task or Job node's `compact` settings, by `duckmesh compact` and by a Dataset's compaction
/// policy; read by the compaction runner. Absent fields are omitted when written.
///
/// ```json
/// {"minFiles": 8, "targetFileSizeBytes": 134217728}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompactSpec {
    /// Small files a partition needs before it is compacted (at least 2; default
    /// [`DEFAULT_MIN_FILES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_files: Option<u32>,
    /// The size of the files written, and below which a file counts as small (default the
    /// dataset's, else 128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_file_size_bytes: Option<u64>,
}

impl CompactSpec {
    /// Parses and checks a task spec.
    pub fn parse(value: &serde_json::Value) -> Result<Self> {
        let spec: Self = serde_json::from_value(value.clone())
            .map_err(|error| invalid(format!("the task spec does not match the compact task format: {error}")))?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks the values: `minFiles` at least 2, `targetFileSizeBytes` at least 1 MiB.
    pub fn check(&self) -> Result<()> {
        if self.min_files.is_some_and(|files| files < 2) {
            return Err(invalid("minFiles must be at least 2".into()));
        }
        if let Some(size) = self.target_file_size_bytes {
            check_file_size("targetFileSizeBytes", size)?;
        }
        Ok(())
    }
}

/// The spec of an `integrity` task (`tasks.spec`, camelCase).
///
/// ```json
/// {"verifyHashes": true}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntegritySpec {
    /// Download every file and compare its SHA-256 too (default `false`: sizes only).
    #[serde(default)]
    pub verify_hashes: bool,
}

impl IntegritySpec {
    /// Parses a task spec.
    pub fn parse(value: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(value.clone())
            .map_err(|error| invalid(format!("the task spec does not match the integrity task format: {error}")))
    }
}

/// The longest grace a `gc` task accepts: 365 days, in seconds.
pub const MAX_GC_GRACE_SECONDS: u64 = 365 * 24 * 3600;

/// The spec of a `gc` task (`tasks.spec`, camelCase), written by the scheduler from a Task or
/// Job node's `gc` settings and by `duckmesh gc` from its flags; read by the GC runner. What
/// is expired stays the Dataset's `retention`. Absent fields are omitted when written.
///
/// ```json
/// {"dryRun": true, "graceSeconds": 7200}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcSpec {
    /// Change nothing: the run lists what it would expire, checkpoint and delete (and is not
    /// recorded as a maintenance run). Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Seconds between a snapshot's expiry and the deletion of the files only it referenced
    /// (0 to [`MAX_GC_GRACE_SECONDS`]; default the runner's, one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

impl GcSpec {
    /// Parses and checks a task spec.
    pub fn parse(value: &serde_json::Value) -> Result<Self> {
        let spec: Self = serde_json::from_value(value.clone())
            .map_err(|error| invalid(format!("the task spec does not match the gc task format: {error}")))?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks the values: `graceSeconds` at most [`MAX_GC_GRACE_SECONDS`].
    pub fn check(&self) -> Result<()> {
        if let Some(grace) = self.grace_seconds
            && grace > MAX_GC_GRACE_SECONDS
        {
            return Err(invalid(format!(
                "graceSeconds must be at most {MAX_GC_GRACE_SECONDS} (365 days), got {grace}"
            )));
        }
        Ok(())
    }
}

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// ZSTD Parquet, split by target file size.
    #[default]
    Parquet,
    /// One CSV file with a header line.
    Csv,
}

/// The longest export prefix accepted, in bytes (it is part of object keys of at most 1024).
pub const MAX_EXPORT_PREFIX_BYTES: usize = 512;

/// The spec of an `export` task (`tasks.spec`, camelCase).
///
/// ```json
/// {"prefix": "trips/2026-12-02", "format": "csv", "snapshot": 41}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportSpec {
    /// Where under `_exports/<namespace>/` to write (e.g. `trips/2026-12-02`).
    pub prefix: String,
    /// The snapshot to export; the current one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<i64>,
    /// `parquet` (default) or `csv`.
    #[serde(default)]
    pub format: ExportFormat,
}

impl ExportSpec {
    /// Parses and checks a task spec; the prefix comes back without leading or trailing `/`.
    pub fn parse(value: &serde_json::Value) -> Result<Self> {
        let spec: Self = serde_json::from_value(value.clone())
            .map_err(|error| invalid(format!("the task spec does not match the export task format: {error}")))?;
        spec.check()?;
        Ok(Self { prefix: spec.prefix.trim_matches('/').to_owned(), ..spec })
    }

    /// Checks the values: the prefix (leading and trailing `/` aside) is a relative path of
    /// non-empty segments, none `.` or `..`, without control characters, at most
    /// [`MAX_EXPORT_PREFIX_BYTES`]; the snapshot, when set, is a snapshot id (1 or more).
    pub fn check(&self) -> Result<()> {
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() {
            return Err(invalid("prefix must name a directory under _exports/<namespace>/".into()));
        }
        if prefix.len() > MAX_EXPORT_PREFIX_BYTES {
            return Err(invalid(format!("prefix is longer than {MAX_EXPORT_PREFIX_BYTES} bytes")));
        }
        if prefix.chars().any(char::is_control) {
            return Err(invalid(format!("prefix {prefix:?} contains a control character")));
        }
        if prefix.split('/').any(|segment| matches!(segment, "" | "." | "..")) {
            return Err(invalid(format!("prefix {prefix:?} has an empty, '.' or '..' segment")));
        }
        if self.snapshot.is_some_and(|snapshot| snapshot < 1) {
            return Err(invalid("snapshot must be a snapshot id (1 or more)".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_spec_parses() {
        let spec = SqlTaskSpec::parse(&json!({
            "sql": "SELECT * FROM raw_trips;  ",
            "inputs": [{"dataset": "raw_trips", "snapshot": 12}, {"dataset": "zones"}],
            "resources": {"memory": "1Gi", "cpu": "1500m"},
            "targetFileSizeBytes": 134217728u64
        }))
        .expect("valid");
        assert_eq!(spec.query(), "SELECT * FROM raw_trips");
        assert_eq!(spec.inputs[0], InputSpec { dataset: "raw_trips".into(), snapshot: Some(12) });
        assert_eq!(spec.inputs[1].snapshot, None);
        let limits = spec.limits().expect("limits");
        assert_eq!(limits.memory_limit_bytes, Some(1024 * 1024 * 1024 / 5 * 4));
        assert_eq!(limits.threads, Some(2));
        assert_eq!(spec.target_file_size_bytes, Some(134_217_728));
    }

    #[test]
    fn minimal_spec_has_no_limits() {
        let spec = SqlTaskSpec::parse(&json!({"sql": "SELECT 1"})).expect("valid");
        assert!(spec.inputs.is_empty());
        assert_eq!(spec.limits().expect("limits"), EngineLimits::default());
    }

    #[test]
    fn invalid_specs_say_what_is_wrong() {
        let cases = [
            (json!({}), "missing field `sql`"),
            (json!({"sql": " ; "}), "`sql` is empty"),
            (json!({"sql": "SELECT 1", "input": []}), "unknown field `input`"),
            (json!({"sql": "SELECT 1", "inputs": [{"dataset": "a"}, {"dataset": "a"}]}), "listed twice"),
            (json!({"sql": "SELECT 1", "inputs": [{"dataset": "a", "snapshot": 0}]}), "snapshot id"),
            (json!({"sql": "SELECT 1", "inputs": [{"name": "a"}]}), "unknown field `name`"),
            (json!({"sql": "SELECT 1", "resources": {"memory": "lots"}}), "resources.memory \"lots\""),
            (json!({"sql": "SELECT 1", "resources": {"cpu": "-1"}}), "resources.cpu \"-1\""),
            (json!({"sql": "SELECT 1", "resources": {"gpu": 1}}), "unknown field `gpu`"),
            (json!({"sql": "SELECT 1", "targetFileSizeBytes": 10}), "at least 1048576"),
            (json!("SELECT 1"), "does not match"),
        ];
        for (value, expected) in cases {
            let error = SqlTaskSpec::parse(&value).expect_err("invalid");
            assert_eq!(error.error_code(), "invalid_task_spec");
            assert!(error.to_string().contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn memory_quantities() {
        let cases = [
            ("512Mi", 512 * 1024 * 1024),
            ("2Gi", 2 * 1024 * 1024 * 1024),
            ("1G", 1_000_000_000),
            ("1.5Gi", 1024 * 1024 * 1024 * 3 / 2),
            ("134217728", 134_217_728),
            ("1e9", 1_000_000_000),
            ("64M", 64_000_000),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_memory(text).expect(text), bytes, "{text}");
        }
        for text in ["", "Gi", "2GB", "-1Gi", "1Ki", "abc", "1..2G"] {
            assert!(parse_memory(text).is_err(), "{text} should be rejected");
        }
        let numeric = SqlTaskSpec::parse(&json!({"sql": "SELECT 1", "resources": {"memory": 1073741824u64, "cpu": 3}}))
            .expect("bare numbers");
        assert_eq!(numeric.limits().expect("limits").threads, Some(3));
    }

    #[test]
    fn cpu_quantities_round_up_to_threads() {
        for (text, threads) in [("500m", 1), ("1", 1), ("2", 2), ("2.5", 3), ("1001m", 2), ("0.1", 1)] {
            assert_eq!(parse_cpu(text).expect(text), threads, "{text}");
        }
        for text in ["0", "0m", "", "m", "two", "1e9"] {
            assert!(parse_cpu(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn dataset_options() {
        let options =
            DatasetOptions::parse("trips", &json!({"partitionBy": ["day"], "targetFileSizeBytes": 2097152, "x": 1}))
                .expect("valid");
        assert_eq!(options.partition_by, vec!["day".to_owned()]);
        assert_eq!(options.target_file_size_bytes, Some(2_097_152));
        assert_eq!(DatasetOptions::parse("trips", &json!({})).expect("empty"), DatasetOptions::default());
        assert_eq!(DatasetOptions::parse("trips", &serde_json::Value::Null).expect("null"), DatasetOptions::default());
        for bad in [json!({"partitionBy": "day"}), json!({"partitionBy": ["day", "day"]}), json!({"partitionBy": [""]})]
        {
            let error = DatasetOptions::parse("trips", &bad).expect_err("invalid");
            assert!(error.to_string().contains("trips"), "{error}");
        }
    }

    #[test]
    fn maintenance_specs_round_trip_and_are_checked() {
        let compact = CompactSpec { min_files: Some(4), target_file_size_bytes: None };
        assert_eq!(serde_json::to_value(&compact).expect("json"), json!({"minFiles": 4}));
        assert_eq!(CompactSpec::parse(&json!({"minFiles": 4})).expect("valid"), compact);
        assert_eq!(CompactSpec::parse(&json!({})).expect("empty"), CompactSpec::default());
        for bad in [json!({"minFiles": 1}), json!({"targetFileSizeBytes": 10}), json!({"sql": "x"})] {
            assert_eq!(CompactSpec::parse(&bad).expect_err("invalid").error_code(), "invalid_task_spec", "{bad}");
        }
        assert!(IntegritySpec::parse(&json!({"verifyHashes": true})).expect("valid").verify_hashes);
        assert!(!IntegritySpec::parse(&json!({})).expect("empty").verify_hashes);
        assert!(IntegritySpec::parse(&json!({"verify": true})).is_err());

        let gc = GcSpec { dry_run: true, grace_seconds: Some(0) };
        assert_eq!(serde_json::to_value(gc).expect("json"), json!({"dryRun": true, "graceSeconds": 0}));
        assert_eq!(GcSpec::parse(&json!({"dryRun": true, "graceSeconds": 0})).expect("valid"), gc);
        assert_eq!(GcSpec::parse(&json!({})).expect("empty"), GcSpec::default());
        assert_eq!(serde_json::to_value(GcSpec::default()).expect("json"), json!({}));
        let max = GcSpec::parse(&json!({"graceSeconds": MAX_GC_GRACE_SECONDS})).expect("the longest grace");
        assert_eq!(max.grace_seconds, Some(MAX_GC_GRACE_SECONDS));
        for (bad, expected) in [
            (json!({"graceSeconds": MAX_GC_GRACE_SECONDS + 1}), "graceSeconds must be at most 31536000"),
            (json!({"graceSeconds": -1}), "gc task format"),
            (json!({"grace": 10}), "unknown field `grace`"),
            (json!({"dryRun": "yes"}), "gc task format"),
            (json!({"keepSnapshots": 3}), "unknown field `keepSnapshots`"),
        ] {
            let error = GcSpec::parse(&bad).expect_err("invalid");
            assert_eq!(error.error_code(), "invalid_task_spec", "{bad}");
            assert!(error.to_string().contains(expected), "{bad}: {error}");
        }

        let export = ExportSpec::parse(&json!({"prefix": "/trips/2026-12-02/"})).expect("valid");
        assert_eq!(
            (export.prefix.as_str(), export.format, export.snapshot),
            ("trips/2026-12-02", ExportFormat::Parquet, None)
        );
        let csv = ExportSpec { prefix: "x".into(), snapshot: Some(3), format: ExportFormat::Csv };
        let value = serde_json::to_value(&csv).expect("json");
        assert_eq!(value, json!({"prefix": "x", "snapshot": 3, "format": "csv"}));
        assert_eq!(ExportSpec::parse(&value).expect("valid"), csv);
        for bad in [
            json!({}),
            json!({"prefix": "/"}),
            json!({"prefix": "a//b"}),
            json!({"prefix": "../escape"}),
            json!({"prefix": "a/\u{1}"}),
            json!({"prefix": "x", "snapshot": 0}),
            json!({"prefix": "x", "format": "json"}),
        ] {
            assert_eq!(ExportSpec::parse(&bad).expect_err("invalid").error_code(), "invalid_task_spec", "{bad}");
        }
    }
}
