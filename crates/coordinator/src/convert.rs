//! From a claimed batch's JSON payloads to typed Parquet, in a fresh DuckDB per batch, with
//! nothing coerced.
//!
//! First every payload is checked in Rust with the ingest API's own exact value rules
//! ([`duckmesh_contracts::values`]): a record the API would refuse (a value of the wrong
//! kind or out of range at any depth, an unknown field, a record that is not an object) is
//! *poison* however it got here (an acknowledgement under older rules, a replayed payload). The
//! other events are written to an NDJSON file of `{seq, payload}` and loaded as `JSON`. Every
//! column is read from the payload field of the same name (a missing field or JSON `null` is
//! SQL `NULL`) with a strict `CAST` to the column's type, so DuckDB either converts a value
//! exactly as checked or fails. When the batch fails, it is split in halves until the events
//! that fail alone are found; each is parked in the dead-letter table with DuckDB's reason and
//! the field, and the rest of the batch is written. Nothing is ever turned into `NULL`.
//!
//! The SQL is built by pure functions (tested below); [`convert`] runs it on a blocking thread.

use crate::error::{Error, Result};
use duckmesh_catalog::{ClaimedEvent, Column, DatasetRecord, PoisonEvent};
use duckmesh_contracts::task::{DEFAULT_TARGET_FILE_SIZE_BYTES, DatasetOptions};
use duckmesh_contracts::values::RecordSchema;
use duckmesh_engine::{Database, ExportOptions, ExportedFile};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Dead-letter code of a record with a field that does not convert exactly to its column's type
/// (or that is not a JSON object).
pub const CONVERSION_FAILED: &str = "conversion_failed";
/// Dead-letter code of events of a dataset without a declared schema.
pub const SCHEMA_MISSING: &str = "dataset_schema_missing";
/// Dead-letter code of events of a dataset whose schema names a type DuckDB does not know.
pub const INVALID_SCHEMA: &str = "invalid_dataset_schema";
/// Dead-letter code of events of a dataset whose spec (partitioning, file size) is unusable.
pub const INVALID_DATASET_SPEC: &str = "invalid_dataset_spec";

/// Longest payload excerpt quoted in a dead-letter message, in characters.
const VALUE_EXCERPT_CHARS: usize = 200;
/// Longest dead-letter message, in characters.
const MESSAGE_CHARS: usize = 2_000;
/// Largest single event DuckDB's JSON reader accepts (the default, 16 MiB, is too tight for
/// a line that also carries the envelope).
const MAX_EVENT_BYTES: u64 = 64 * 1024 * 1024;

/// The smallest DuckDB memory limit a conversion runs in: reading NDJSON takes buffers of
/// twice [`MAX_EVENT_BYTES`], plus room for the batch.
pub(crate) const MIN_MEMORY_LIMIT_MB: u64 = 256;

/// How a dataset's events become files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The dataset's columns, in order.
    pub columns: Vec<Column>,
    /// Partition columns (all among `columns`).
    pub partition_by: Vec<String>,
    /// Target file size.
    pub target_file_size_bytes: u64,
}

/// Why a dataset cannot take any event: every event of the batch is dead-lettered with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatasetProblem {
    /// Dead-letter code.
    pub code: &'static str,
    /// What to fix.
    pub message: String,
}

impl DatasetProblem {
    /// Every event of `events` parked with this problem.
    pub fn poison_all(&self, events: &[ClaimedEvent]) -> Vec<PoisonEvent> {
        events
            .iter()
            .map(|event| PoisonEvent {
                seq: event.seq,
                error_code: self.code.to_owned(),
                message: self.message.clone(),
            })
            .collect()
    }
}

/// What a conversion produced.
#[derive(Debug)]
pub(crate) enum Conversion {
    /// Typed rows written (possibly none) and the poison records.
    Rows {
        /// Events parked with the reason.
        poison: Vec<PoisonEvent>,
        /// The Parquet files of the other events, in path order.
        files: Vec<ExportedFile>,
    },
    /// The schema names a type DuckDB does not know: no event can be converted.
    InvalidSchema(DatasetProblem),
}

/// Checks that `dataset` can take ingest and derives how to write it (pure).
pub(crate) fn plan(dataset: &DatasetRecord) -> std::result::Result<Plan, DatasetProblem> {
    let columns = match dataset.schema.as_ref().filter(|columns| !columns.is_empty()) {
        Some(columns) => columns.clone(),
        None => {
            return Err(DatasetProblem {
                code: SCHEMA_MISSING,
                message: format!(
                    "dataset {}/{} declares no schema, so its records cannot be typed; declare spec.schema and \
                     replay the dead letters",
                    dataset.namespace, dataset.name
                ),
            });
        }
    };
    for column in &columns {
        if let Some(problem) = type_problem(&column.data_type) {
            return Err(DatasetProblem {
                code: INVALID_SCHEMA,
                message: format!("column {:?} has type {:?}: {problem}", column.name, column.data_type),
            });
        }
    }
    let options = DatasetOptions::parse(&dataset.name, &dataset.spec)
        .map_err(|error| DatasetProblem { code: INVALID_DATASET_SPEC, message: error.to_string() })?;
    if let Some(missing) = options.partition_by.iter().find(|name| !columns.iter().any(|c| &c.name == *name)) {
        return Err(DatasetProblem {
            code: INVALID_DATASET_SPEC,
            message: format!(
                "dataset {}/{} is partitioned by {missing:?}, which its schema does not have",
                dataset.namespace, dataset.name
            ),
        });
    }
    Ok(Plan {
        columns,
        partition_by: options.partition_by,
        target_file_size_bytes: options.target_file_size_bytes.unwrap_or(DEFAULT_TARGET_FILE_SIZE_BYTES),
    })
}

/// Why a declared type cannot be spliced into SQL, if it cannot.
fn type_problem(data_type: &str) -> Option<&'static str> {
    if data_type.trim().is_empty() {
        return Some("the type is empty");
    }
    if data_type.contains(';') || data_type.contains("--") || data_type.contains("/*") || data_type.contains('\'') {
        return Some("a type name cannot contain `;`, `'` or comments");
    }
    None
}

/// Whether the type is DuckDB's `JSON` (the field's JSON is stored as is, never poison).
fn is_json(data_type: &str) -> bool {
    data_type.trim().eq_ignore_ascii_case("JSON")
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A quoted SQL identifier.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The JSON Pointer (RFC 6901) of a top-level field, as a SQL literal: any field name works,
/// dots, slashes and quotes included.
fn pointer(field: &str) -> String {
    literal(&format!("/{}", field.replace('~', "~0").replace('/', "~1")))
}

/// The internal name of converted column number `index`.
fn slot(index: usize) -> String {
    format!("__c{index}")
}

/// Whether the payload holds a non-null value for `field` (SQL).
fn has_value(field: &str) -> String {
    format!("coalesce(json_type(payload, {}), 'NULL') <> 'NULL'", pointer(field))
}

/// The converted value of `column` (SQL): `NULL` when the field is missing or JSON `null`,
/// else a strict `CAST` that fails on a value that does not convert. Scalars convert from
/// their text (`"2024-01-02"` → DATE), arrays and objects from their JSON (→ LIST, STRUCT,
/// MAP, UNION).
fn converted(column: &Column) -> String {
    let path = pointer(&column.name);
    if is_json(&column.data_type) {
        return format!("CASE WHEN {} THEN json_extract(payload, {path}) END", has_value(&column.name));
    }
    let data_type = &column.data_type;
    format!(
        "CASE WHEN NOT ({has}) THEN NULL \
         WHEN json_type(payload, {path}) IN ('OBJECT', 'ARRAY') THEN CAST(json_extract(payload, {path}) AS {data_type}) \
         ELSE CAST(json_extract_string(payload, {path}) AS {data_type}) END",
        has = has_value(&column.name)
    )
}

/// Loads the event file into `__events(seq, payload)`.
pub(crate) fn load_sql(events_file: &Path) -> String {
    format!(
        "CREATE TEMP TABLE __events AS SELECT seq, payload FROM read_ndjson({}, \
         columns = {{'seq': 'BIGINT', 'payload': 'JSON'}}, maximum_object_size = {MAX_EVENT_BYTES})",
        literal(&events_file.to_string_lossy())
    )
}

/// The converted columns, `__c0 …`, of the events selected by `filter` (SQL).
fn typed_select(columns: &[Column], filter: &str) -> String {
    let values: Vec<String> =
        columns.iter().enumerate().map(|(index, column)| format!("{} AS {}", converted(column), slot(index))).collect();
    format!("SELECT seq, {} FROM __events WHERE {filter}", values.join(", "))
}

/// Creates the empty `__typed(seq, __c0 …)` table with the columns' types.
pub(crate) fn create_typed_sql(columns: &[Column]) -> String {
    format!("CREATE TEMP TABLE __typed AS {}", typed_select(columns, "false"))
}

/// Converts the events with `seq` from `first` to `last` into `__typed`: all of them, or,
/// when one does not convert, none.
pub(crate) fn insert_typed_sql(columns: &[Column], first: i64, last: i64) -> String {
    format!("INSERT INTO __typed {}", typed_select(columns, &format!("seq BETWEEN {first} AND {last}")))
}

/// Converts column `column` of event `seq` alone (to find which field fails).
fn probe_sql(column: &Column, seq: i64) -> String {
    format!("SELECT ({})::VARCHAR FROM __events WHERE seq = {seq}", converted(column))
}

/// The rows to write: every converted event, in `seq` order, with the dataset's column names.
pub(crate) fn output_sql(columns: &[Column]) -> String {
    let select: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| format!("{} AS {}", slot(index), identifier(&column.name)))
        .collect();
    format!("SELECT {} FROM __typed ORDER BY seq", select.join(", "))
}

/// Splits `events` into those whose payloads pass the ingest API's exact checks against
/// `schema` and dead letters for the rest, naming the field path (pure).
pub(crate) fn screen<'a>(
    schema: &RecordSchema,
    events: &'a [ClaimedEvent],
) -> (Vec<&'a ClaimedEvent>, Vec<PoisonEvent>) {
    let mut valid = Vec::with_capacity(events.len());
    let mut poison = Vec::new();
    for event in events {
        let problem = match &event.payload {
            serde_json::Value::Object(record) => {
                schema.check_record(record).err().map(|error| format!("field {:?}: {}", error.path, error.message))
            }
            other => Some(format!("the record is not a JSON object (it is {})", json_kind(other))),
        };
        match problem {
            Some(message) => poison.push(PoisonEvent {
                seq: event.seq,
                error_code: CONVERSION_FAILED.to_owned(),
                message: truncate(&message, MESSAGE_CHARS),
            }),
            None => valid.push(event),
        }
    }
    (valid, poison)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Whether a DuckDB error is about the data (a value that does not convert), as opposed to
/// the engine (memory, disk), which no dead letter would fix.
fn is_data_error(error: &duckmesh_engine::Error) -> bool {
    match error {
        duckmesh_engine::Error::Sql { message } => ["Conversion Error", "Invalid Input Error", "Out of Range Error"]
            .iter()
            .any(|class| message.contains(class)),
        _ => false,
    }
}

/// The dead letter of event `seq`, which does not convert on its own: the fields that fail,
/// each with its value and DuckDB's reason. `None` when no single field fails (then the
/// failure is not this event's).
fn diagnose(engine: &Database, columns: &[Column], event: &ClaimedEvent) -> Option<PoisonEvent> {
    let reasons: Vec<String> = columns
        .iter()
        .filter_map(|column| {
            let error = engine.query_text(&probe_sql(column, event.seq)).err()?;
            let value = event.payload.get(&column.name).map(|value| value.to_string()).unwrap_or_else(|| "null".into());
            let reason = match &error {
                duckmesh_engine::Error::Sql { message } => message.lines().next().unwrap_or_default().to_owned(),
                other => other.to_string(),
            };
            Some(format!(
                "field {:?}: value {} does not convert to {} ({reason})",
                column.name,
                truncate(&value, VALUE_EXCERPT_CHARS),
                column.data_type
            ))
        })
        .collect();
    (!reasons.is_empty()).then(|| PoisonEvent {
        seq: event.seq,
        error_code: CONVERSION_FAILED.to_owned(),
        message: truncate(&reasons.join("; "), MESSAGE_CHARS),
    })
}

/// Converts `events` (in `seq` order) into `__typed`: the whole batch in one statement when
/// it converts, else halves of it, down to the single events that do not convert, which are
/// returned as dead letters. Engine failures (not about the data) are errors.
fn convert_events(engine: &Database, columns: &[Column], events: &[&ClaimedEvent]) -> Result<Vec<PoisonEvent>> {
    let engine_error = |source| Error::Engine { source };
    let mut poison = Vec::new();
    let mut ranges = vec![(0, events.len())];
    while let Some((start, end)) = ranges.pop() {
        let (Some(first), Some(last)) = (events.get(start), end.checked_sub(1).and_then(|at| events.get(at))) else {
            continue;
        };
        match engine.execute_batch(&insert_typed_sql(columns, first.seq, last.seq)) {
            Ok(()) => {}
            Err(error) if !is_data_error(&error) => return Err(engine_error(error)),
            Err(error) if end - start == 1 => match diagnose(engine, columns, first) {
                Some(dead) => poison.push(dead),
                None => return Err(engine_error(error)),
            },
            Err(_) => {
                let middle = start + (end - start) / 2;
                // Later half first on the stack, so the earlier half is tried first.
                ranges.push((middle, end));
                ranges.push((start, middle));
            }
        }
    }
    poison.sort_by_key(|dead| dead.seq);
    Ok(poison)
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Writes the events as NDJSON lines `{"seq": …, "payload": …}`.
pub(crate) fn write_events(path: &Path, events: &[&ClaimedEvent]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|error| Error::io("creating the event file", path, error))?;
    let mut writer = std::io::BufWriter::new(file);
    for event in events {
        let line = serde_json::json!({"seq": event.seq, "payload": event.payload});
        serde_json::to_writer(&mut writer, &line)
            .map_err(|error| Error::io("writing the event file", path, std::io::Error::other(error.to_string())))?;
        writer.write_all(b"\n").map_err(|error| Error::io("writing the event file", path, error))?;
    }
    writer.flush().map_err(|error| Error::io("writing the event file", path, error))
}

/// DuckDB resources for one batch conversion; `None` keeps DuckDB's default.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Memory limit; past it DuckDB spills to the scratch directory.
    pub memory_limit_bytes: Option<u64>,
    /// Worker threads.
    pub threads: Option<u64>,
}

/// Converts `events` (in `seq` order) per `plan` inside `scratch` and writes the good rows as
/// Parquet under `scratch/out`: the events that fail the exact checks or DuckDB's strict
/// conversion are returned as poison. Blocking: run it on a blocking thread.
pub(crate) fn convert(plan: &Plan, events: &[ClaimedEvent], scratch: &Path, limits: Limits) -> Result<Conversion> {
    let spill_dir = scratch.join("spill");
    std::fs::create_dir_all(&spill_dir)
        .map_err(|error| Error::io("creating the spill directory", &spill_dir, error))?;
    let limits =
        duckmesh_engine::Limits { memory_limit_bytes: limits.memory_limit_bytes, threads: limits.threads, spill_dir };
    let engine_error = |source| Error::Engine { source };
    let engine = Database::open(&limits).map_err(engine_error)?;
    engine.lock_down(&[scratch.to_owned()]).map_err(engine_error)?;
    for column in &plan.columns {
        if let Err(error) = engine.execute_batch(&format!("SELECT CAST(NULL AS {})", column.data_type)) {
            return Ok(Conversion::InvalidSchema(DatasetProblem {
                code: INVALID_SCHEMA,
                message: format!(
                    "column {:?} has type {:?}, which DuckDB rejects: {error}",
                    column.name, column.data_type
                ),
            }));
        }
    }
    let (valid, mut poison) = screen(&RecordSchema::new(&plan.columns), events);
    if valid.is_empty() {
        return Ok(Conversion::Rows { poison, files: Vec::new() });
    }
    let events_file = scratch.join("events.ndjson");
    write_events(&events_file, &valid)?;
    engine.execute_batch(&load_sql(&events_file)).map_err(engine_error)?;
    engine.execute_batch(&create_typed_sql(&plan.columns)).map_err(engine_error)?;
    poison.extend(convert_events(&engine, &plan.columns, &valid)?);
    poison.sort_by_key(|dead| dead.seq);
    if poison.len() == events.len() {
        return Ok(Conversion::Rows { poison, files: Vec::new() });
    }
    engine.prepare_query(&output_sql(&plan.columns)).map_err(engine_error)?;
    let output_dir: PathBuf = scratch.join("out");
    let files = engine
        .export(&ExportOptions {
            output_dir,
            partition_by: plan.partition_by.clone(),
            target_file_size_bytes: plan.target_file_size_bytes,
        })
        .map_err(engine_error)?;
    Ok(Conversion::Rows { poison, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_core::DatasetId;
    use serde_json::json;

    fn column(name: &str, data_type: &str) -> Column {
        Column { name: name.into(), data_type: data_type.into() }
    }

    fn dataset(schema: Option<Vec<Column>>, spec: serde_json::Value) -> DatasetRecord {
        DatasetRecord {
            id: DatasetId(1),
            namespace: "default".into(),
            name: "events".into(),
            uid: "u".into(),
            generation: 1,
            tenant: "acme".into(),
            schema,
            spec,
            current_snapshot: None,
            visibility_token: 0,
            file_count: 0,
            row_count: 0,
            byte_count: 0,
            last_commit_at: None,
        }
    }

    fn event(seq: i64, payload: serde_json::Value) -> ClaimedEvent {
        ClaimedEvent {
            seq,
            tenant: "acme".into(),
            key: seq.to_string(),
            payload,
            traceparent: None,
            received_at: chrono::Utc::now(),
            claims: 1,
        }
    }

    #[test]
    fn plans_need_a_schema_and_known_partition_columns() {
        let problem = plan(&dataset(None, json!({}))).expect_err("no schema");
        assert_eq!(problem.code, SCHEMA_MISSING);
        assert!(problem.message.contains("default/events"), "{}", problem.message);
        assert_eq!(plan(&dataset(Some(vec![]), json!({}))).expect_err("empty").code, SCHEMA_MISSING);

        let schema = vec![column("id", "BIGINT"), column("day", "DATE")];
        let problem = plan(&dataset(Some(schema.clone()), json!({"partitionBy": ["region"]}))).expect_err("unknown");
        assert_eq!(problem.code, INVALID_DATASET_SPEC);
        assert!(problem.message.contains("region"));
        let problem = plan(&dataset(Some(schema.clone()), json!({"targetFileSizeBytes": 5}))).expect_err("tiny");
        assert_eq!(problem.code, INVALID_DATASET_SPEC);
        let problem = plan(&dataset(Some(vec![column("x", "INT); DROP TABLE t; --")]), json!({}))).expect_err("sql");
        assert_eq!(problem.code, INVALID_SCHEMA);

        let planned =
            plan(&dataset(Some(schema.clone()), json!({"partitionBy": ["day"], "targetFileSizeBytes": 2097152})))
                .expect("valid");
        assert_eq!(
            planned,
            Plan { columns: schema.clone(), partition_by: vec!["day".into()], target_file_size_bytes: 2_097_152 }
        );
        let planned = plan(&dataset(Some(schema), serde_json::Value::Null)).expect("no spec");
        assert_eq!(planned.target_file_size_bytes, DEFAULT_TARGET_FILE_SIZE_BYTES);
        assert!(planned.partition_by.is_empty());
    }

    #[test]
    fn field_names_become_json_pointers_and_identifiers() {
        assert_eq!(pointer("a"), "'/a'");
        assert_eq!(pointer("a/b~c"), "'/a~1b~0c'");
        assert_eq!(pointer("it's"), "'/it''s'");
        assert_eq!(identifier("we\"ird"), "\"we\"\"ird\"");
        assert!(is_json(" json ") && !is_json("VARCHAR"));
    }

    #[test]
    fn the_sql_converts_every_column_strictly() {
        let columns = vec![column("id", "BIGINT"), column("doc", "JSON")];
        let insert = insert_typed_sql(&columns, 3, 9);
        assert!(insert.contains("ELSE CAST(json_extract_string(payload, '/id') AS BIGINT) END AS __c0"), "{insert}");
        assert!(insert.contains("THEN json_extract(payload, '/doc') END AS __c1"), "{insert}");
        assert!(insert.ends_with("WHERE seq BETWEEN 3 AND 9"), "{insert}");
        assert!(!insert.contains("TRY_CAST"), "a value that does not convert fails, it never becomes NULL");
        assert!(create_typed_sql(&columns).ends_with("WHERE false"));
        let output = output_sql(&columns);
        assert_eq!(output, "SELECT __c0 AS \"id\", __c1 AS \"doc\" FROM __typed ORDER BY seq");
        assert!(load_sql(Path::new("/tmp/o'k/events.ndjson")).contains("'/tmp/o''k/events.ndjson'"));
    }

    #[test]
    fn screening_parks_what_the_api_would_refuse() {
        let schema = RecordSchema::new(&[
            column("id", "BIGINT"),
            column("m", "MAP(VARCHAR, INTEGER)"),
            column("s", "STRUCT(x INTEGER)"),
            column("l", "INTEGER[]"),
        ]);
        let events = vec![
            event(1, json!({"id": 1, "m": {"k": 1}, "s": {"x": 1}, "l": [1, 2]})),
            event(2, json!({"id": 2, "m": {"k": "notint"}})),
            event(3, json!({"id": 3, "s": {"y": 1}})),
            event(4, json!({"id": 4, "l": [1, "2", 3.7, 99999999999_i64]})),
            event(5, json!([1, 2])),
            event(6, json!({"id": 6, "unknown": 1})),
            event(7, json!({"id": 7})),
            event(8, json!({"id": 8, "s": {}})),
        ];
        let (valid, poison) = screen(&schema, &events);
        assert_eq!(valid.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 7]);
        let parked: Vec<(i64, &str)> = poison.iter().map(|p| (p.seq, p.message.as_str())).collect();
        assert_eq!(parked.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [2, 3, 4, 5, 6, 8]);
        assert!(parked[0].1.starts_with("field \"m.k\": "), "{}", parked[0].1);
        assert!(parked[1].1.contains("no field \"y\""), "{}", parked[1].1);
        assert!(parked[2].1.starts_with("field \"l[1]\": "), "{}", parked[2].1);
        assert_eq!(parked[3].1, "the record is not a JSON object (it is an array)");
        assert!(parked[4].1.starts_with("field \"unknown\": the dataset has no such column"), "{}", parked[4].1);
        assert!(poison.iter().all(|p| p.error_code == CONVERSION_FAILED));
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn a_dataset_problem_parks_every_event() {
        let problem = DatasetProblem { code: SCHEMA_MISSING, message: "declare a schema".into() };
        let parked = problem.poison_all(&[event(1, json!({})), event(2, json!({}))]);
        assert_eq!(parked.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(parked.iter().all(|p| p.error_code == SCHEMA_MISSING && p.message == "declare a schema"));
    }

    #[test]
    fn duckdb_converts_good_records_and_parks_poison() {
        let dir = tempfile::tempdir().expect("tempdir");
        let columns = vec![
            column("id", "BIGINT"),
            column("name", "VARCHAR"),
            column("day", "DATE"),
            column("ok", "BOOLEAN"),
            column("tags", "VARCHAR[]"),
            column("extra", "JSON"),
            column("a.b/c", "DOUBLE"),
            column("days", "DATE[]"),
        ];
        let plan = Plan { columns, partition_by: vec![], target_file_size_bytes: DEFAULT_TARGET_FILE_SIZE_BYTES };
        let events = vec![
            event(
                1,
                json!({"id": 1, "name": "x", "day": "2024-01-02", "ok": true, "tags": ["a"], "extra": {"k": 1}, "a.b/c": 1.5}),
            ),
            event(2, json!({"id": 2, "name": null})),
            event(3, json!({"id": "three", "day": "2024-13-45"})),
            event(4, json!([1, 2])),
            event(5, json!({"id": 5, "ok": "maybe", "unknown": 1})),
            event(6, json!({"id": 6, "day": "2024-13-45"})),
            event(7, json!({"id": 7, "days": ["2024-01-01"]})),
            event(8, json!({"id": 8, "days": ["2024-01-01", "2024-02-30"]})),
        ];
        // tight limits, as a small coordinator pod would set them
        let limits = Limits { memory_limit_bytes: Some(MIN_MEMORY_LIMIT_MB * 1024 * 1024), threads: Some(1) };
        let Conversion::Rows { poison, files } = convert(&plan, &events, dir.path(), limits).expect("convert") else {
            panic!("the schema is valid");
        };
        assert_eq!(poison.iter().map(|p| p.seq).collect::<Vec<_>>(), [3, 4, 5, 6, 8]);
        assert!(poison[0].message.contains("\"id\"") && poison[0].message.contains("BIGINT"), "{}", poison[0].message);
        assert!(poison[1].message.contains("not a JSON object"), "{}", poison[1].message);
        assert!(poison[2].message.contains("BOOLEAN"), "{}", poison[2].message);
        // What only DuckDB can tell (a date that does not exist, at any depth) fails strictly
        // and is parked with DuckDB's reason, never stored as NULL.
        assert!(
            poison[3].message.contains("\"day\"") && poison[3].message.contains("2024-13-45"),
            "{}",
            poison[3].message
        );
        assert!(
            poison[3].message.contains("DATE") && poison[3].message.contains("Conversion Error"),
            "{}",
            poison[3].message
        );
        assert!(
            poison[4].message.contains("\"days\"") && poison[4].message.contains("2024-02-30"),
            "{}",
            poison[4].message
        );
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 3);

        let engine = Database::open(&duckmesh_engine::Limits {
            memory_limit_bytes: None,
            threads: Some(1),
            spill_dir: dir.path().join("check-spill"),
        })
        .expect("open");
        let path = files[0].path.to_string_lossy().into_owned();
        let rows = engine
            .query_text(&format!(
                "SELECT id::VARCHAR, name, day::VARCHAR, ok::VARCHAR, tags::VARCHAR, extra::VARCHAR, \"a.b/c\"::VARCHAR, \
                 days::VARCHAR FROM read_parquet('{path}') ORDER BY id"
            ))
            .expect("read back");
        let text = |value: &str| Some(value.to_owned());
        assert_eq!(
            rows,
            vec![
                vec![
                    text("1"),
                    text("x"),
                    text("2024-01-02"),
                    text("true"),
                    text("[a]"),
                    text("{\"k\":1}"),
                    text("1.5"),
                    None
                ],
                vec![text("2"), None, None, None, None, None, None, None],
                vec![text("7"), None, None, None, None, None, None, text("[2024-01-01]")],
            ]
        );
    }

    #[test]
    fn an_unknown_type_is_a_schema_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = Plan {
            columns: vec![column("id", "BIGNUMBER")],
            partition_by: vec![],
            target_file_size_bytes: DEFAULT_TARGET_FILE_SIZE_BYTES,
        };
        match convert(&plan, &[event(1, json!({"id": 1}))], dir.path(), Limits::default()).expect("convert") {
            Conversion::InvalidSchema(problem) => {
                assert_eq!(problem.code, INVALID_SCHEMA);
                assert!(problem.message.contains("BIGNUMBER"), "{}", problem.message);
            }
            Conversion::Rows { .. } => panic!("BIGNUMBER is not a DuckDB type"),
        }
    }
}
