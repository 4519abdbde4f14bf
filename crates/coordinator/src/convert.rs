//! From a claimed batch's JSON payloads to typed Parquet, in a fresh DuckDB per batch.
//!
//! The events are written to an NDJSON file of `{seq, payload}` and loaded as `JSON`. Every
//! column of the dataset's schema is read from the payload field of the same name (a missing
//! field or JSON `null` is SQL `NULL`) with `TRY_CAST` to the column's type, so a value that
//! does not convert becomes `NULL` instead of failing the batch. An event with a non-null
//! value whose conversion is `NULL` is *poison*: it is parked in the dead-letter table with a
//! message naming the field, the value and the type, and the rest of the batch is written.
//!
//! The SQL is built by pure functions (tested below); [`convert`] runs it on a blocking thread.

use crate::error::{Error, Result};
use duckmesh_catalog::{ClaimedEvent, Column, DatasetRecord, PoisonEvent};
use duckmesh_worker::{
    DEFAULT_TARGET_FILE_SIZE_BYTES, DatasetOptions, Engine, EngineSettings, ExportOptions, ExportedFile,
};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Dead-letter code of a record with a field that does not convert to its column's type.
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

/// The converted value of `column` (SQL): `NULL` when the field is missing, JSON `null`, or
/// does not convert. Scalars convert from their text (`"2024-01-02"` → DATE), arrays and
/// objects from their JSON (→ LIST, STRUCT, MAP).
fn converted(column: &Column) -> String {
    let path = pointer(&column.name);
    if is_json(&column.data_type) {
        return format!("CASE WHEN {} THEN json_extract(payload, {path}) END", has_value(&column.name));
    }
    let data_type = &column.data_type;
    format!(
        "CASE WHEN NOT ({has}) THEN NULL \
         WHEN json_type(payload, {path}) IN ('OBJECT', 'ARRAY') THEN TRY_CAST(json_extract(payload, {path}) AS {data_type}) \
         ELSE TRY_CAST(json_extract_string(payload, {path}) AS {data_type}) END",
        has = has_value(&column.name)
    )
}

/// Whether column number `index` failed to convert (SQL over `__converted`).
fn failed(index: usize, column: &Column) -> String {
    format!("({} AND {} IS NULL)", has_value(&column.name), slot(index))
}

/// Loads the event file into `__events(seq, payload)`.
pub(crate) fn load_sql(events_file: &Path) -> String {
    format!(
        "CREATE TEMP TABLE __events AS SELECT seq, payload FROM read_ndjson({}, \
         columns = {{'seq': 'BIGINT', 'payload': 'JSON'}}, maximum_object_size = {MAX_EVENT_BYTES})",
        literal(&events_file.to_string_lossy())
    )
}

/// Converts every event into `__converted(seq, payload, __c0…, __poison)`.
pub(crate) fn convert_sql(columns: &[Column]) -> String {
    let values: Vec<String> =
        columns.iter().enumerate().map(|(index, column)| format!("{} AS {}", converted(column), slot(index))).collect();
    let mut poison: Vec<String> = vec!["json_type(payload) IS DISTINCT FROM 'OBJECT'".to_owned()];
    poison.extend(columns.iter().enumerate().map(|(index, column)| failed(index, column)));
    format!(
        "CREATE TEMP TABLE __typed AS SELECT seq, payload, {} FROM __events;\n\
         CREATE TEMP VIEW __converted AS SELECT *, ({}) AS __poison FROM __typed",
        values.join(", "),
        poison.join(" OR ")
    )
}

/// One row per failed field of a poison event: `seq, field, value, type` (all text; `field`
/// and `type` are `NULL` when the record is not an object).
pub(crate) fn poison_sql(columns: &[Column]) -> String {
    let mut parts = vec![format!(
        "SELECT seq::VARCHAR, NULL::VARCHAR, left(json_type(payload)::VARCHAR, {VALUE_EXCERPT_CHARS}), NULL::VARCHAR \
         FROM __converted WHERE json_type(payload) IS DISTINCT FROM 'OBJECT'"
    )];
    for (index, column) in columns.iter().enumerate() {
        parts.push(format!(
            "SELECT seq::VARCHAR, {name}, left(json_extract(payload, {path})::VARCHAR, {VALUE_EXCERPT_CHARS}), {kind} \
             FROM __converted WHERE json_type(payload) = 'OBJECT' AND {failed}",
            name = literal(&column.name),
            path = pointer(&column.name),
            kind = literal(&column.data_type),
            failed = failed(index, column),
        ));
    }
    parts.join("\nUNION ALL\n")
}

/// The rows to write: every non-poison event, in `seq` order, with the dataset's column names.
pub(crate) fn output_sql(columns: &[Column]) -> String {
    let select: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| format!("{} AS {}", slot(index), identifier(&column.name)))
        .collect();
    format!("SELECT {} FROM __converted WHERE NOT __poison ORDER BY seq", select.join(", "))
}

/// Builds the dead letters from [`poison_sql`]'s rows: one per event, naming every failed field.
pub(crate) fn poison_events(rows: &[Vec<Option<String>>]) -> Result<Vec<PoisonEvent>> {
    let mut by_seq: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for row in rows {
        let [seq, field, value, kind] = row.as_slice() else {
            return Err(internal(format!("a poison row has {} columns, expected 4", row.len())));
        };
        let seq: i64 = seq
            .as_deref()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| internal(format!("a poison row has no valid seq ({seq:?})")))?;
        let reason = match (field, kind) {
            (Some(field), Some(kind)) => {
                format!("field {field:?}: value {} does not convert to {kind}", value.as_deref().unwrap_or("null"))
            }
            _ => format!("the record is not a JSON object (it is {})", value.as_deref().unwrap_or("unknown")),
        };
        by_seq.entry(seq).or_default().push(reason);
    }
    Ok(by_seq
        .into_iter()
        .map(|(seq, reasons)| PoisonEvent {
            seq,
            error_code: CONVERSION_FAILED.to_owned(),
            message: truncate(&reasons.join("; "), MESSAGE_CHARS),
        })
        .collect())
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn internal(message: String) -> Error {
    Error::Engine { source: duckmesh_worker::Error::Engine { step: "reading the poison records", message } }
}

/// Writes the events as NDJSON lines `{"seq": …, "payload": …}`.
pub(crate) fn write_events(path: &Path, events: &[ClaimedEvent]) -> Result<()> {
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

/// Converts the events of `events_file` per `plan` inside `scratch` and writes the good
/// rows as Parquet under `scratch/out`. Blocking: run it on a blocking thread.
pub(crate) fn convert(plan: &Plan, events_file: &Path, scratch: &Path, limits: Limits) -> Result<Conversion> {
    let spill_dir = scratch.join("spill");
    std::fs::create_dir_all(&spill_dir)
        .map_err(|error| Error::io("creating the spill directory", &spill_dir, error))?;
    let settings = EngineSettings {
        memory_limit_bytes: limits.memory_limit_bytes,
        threads: limits.threads,
        spill_dir,
        allowed_dirs: vec![scratch.to_owned()],
    };
    let engine_error = |source| Error::Engine { source };
    let engine = Engine::open(&settings).map_err(engine_error)?;
    engine.lock_down(&settings).map_err(engine_error)?;
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
    engine.execute_batch(&load_sql(events_file)).map_err(engine_error)?;
    engine.execute_batch(&convert_sql(&plan.columns)).map_err(engine_error)?;
    let poison = poison_events(&engine.query_text(&poison_sql(&plan.columns)).map_err(engine_error)?)?;
    let remaining =
        engine.query_text("SELECT count(*)::VARCHAR FROM __converted WHERE NOT __poison").map_err(engine_error)?;
    let remaining: u64 = remaining
        .first()
        .and_then(|row| row.first())
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if remaining == 0 {
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
    fn the_sql_converts_every_column_and_flags_failures() {
        let columns = vec![column("id", "BIGINT"), column("doc", "JSON")];
        let convert = convert_sql(&columns);
        assert!(convert.contains("TRY_CAST(json_extract_string(payload, '/id') AS BIGINT) END AS __c0"), "{convert}");
        assert!(convert.contains("THEN json_extract(payload, '/doc') END AS __c1"), "{convert}");
        assert!(convert.contains("__c0 IS NULL") && convert.contains("__c1 IS NULL"));
        let output = output_sql(&columns);
        assert_eq!(output, "SELECT __c0 AS \"id\", __c1 AS \"doc\" FROM __converted WHERE NOT __poison ORDER BY seq");
        assert_eq!(poison_sql(&columns).matches("UNION ALL").count(), 2);
        assert!(load_sql(Path::new("/tmp/o'k/events.ndjson")).contains("'/tmp/o''k/events.ndjson'"));
    }

    #[test]
    fn poison_rows_become_one_dead_letter_per_event() {
        let text = |value: &str| Some(value.to_owned());
        let rows = vec![
            vec![text("7"), text("amount"), text("\"abc\""), text("BIGINT")],
            vec![text("3"), None, text("ARRAY"), None],
            vec![text("7"), text("day"), text("\"2024-13-45\""), text("DATE")],
        ];
        let poison = poison_events(&rows).expect("rows");
        assert_eq!(poison.len(), 2);
        assert_eq!(poison[0].seq, 3);
        assert_eq!(poison[0].message, "the record is not a JSON object (it is ARRAY)");
        assert_eq!(poison[1].seq, 7);
        assert_eq!(poison[1].error_code, CONVERSION_FAILED);
        assert_eq!(
            poison[1].message,
            "field \"amount\": value \"abc\" does not convert to BIGINT; field \"day\": value \"2024-13-45\" does not \
             convert to DATE"
        );
        assert!(poison_events(&[vec![text("x"), None, None, None]]).is_err());
        assert!(poison_events(&[vec![text("1")]]).is_err());
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
        ];
        let plan = Plan { columns, partition_by: vec![], target_file_size_bytes: DEFAULT_TARGET_FILE_SIZE_BYTES };
        let events = vec![
            event(
                1,
                json!({"id": 1, "name": "x", "day": "2024-01-02", "ok": true, "tags": ["a"], "extra": {"k": 1}, "a.b/c": 1.5}),
            ),
            event(2, json!({"id": "2", "name": null})),
            event(3, json!({"id": "three", "day": "2024-13-45"})),
            event(4, json!([1, 2])),
            event(5, json!({"id": 5, "ok": "maybe", "unknown": 1})),
        ];
        let file = dir.path().join("events.ndjson");
        write_events(&file, &events).expect("write");
        // tight limits, as a small coordinator pod would set them
        let limits = Limits { memory_limit_bytes: Some(MIN_MEMORY_LIMIT_MB * 1024 * 1024), threads: Some(1) };
        let Conversion::Rows { poison, files } = convert(&plan, &file, dir.path(), limits).expect("convert") else {
            panic!("the schema is valid");
        };
        assert_eq!(poison.iter().map(|p| p.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(
            poison[0].message.contains("\"id\"") && poison[0].message.contains("\"three\""),
            "{}",
            poison[0].message
        );
        assert!(poison[0].message.contains("DATE"), "{}", poison[0].message);
        assert!(poison[1].message.contains("not a JSON object"), "{}", poison[1].message);
        assert!(poison[2].message.contains("BOOLEAN"), "{}", poison[2].message);
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 2);

        let engine = Engine::open(&EngineSettings {
            memory_limit_bytes: None,
            threads: Some(1),
            spill_dir: dir.path().join("check-spill"),
            allowed_dirs: vec![dir.path().to_owned()],
        })
        .expect("open");
        let path = files[0].path.to_string_lossy().into_owned();
        let rows = engine
            .query_text(&format!(
                "SELECT id::VARCHAR, name, day::VARCHAR, ok::VARCHAR, tags::VARCHAR, extra::VARCHAR, \"a.b/c\"::VARCHAR \
                 FROM read_parquet('{path}') ORDER BY id"
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
                    text("1.5")
                ],
                vec![text("2"), None, None, None, None, None, None],
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
        let file = dir.path().join("events.ndjson");
        write_events(&file, &[event(1, json!({"id": 1}))]).expect("write");
        match convert(&plan, &file, dir.path(), Limits::default()).expect("convert") {
            Conversion::InvalidSchema(problem) => {
                assert_eq!(problem.code, INVALID_SCHEMA);
                assert!(problem.message.contains("BIGNUMBER"), "{}", problem.message);
            }
            Conversion::Rows { .. } => panic!("BIGNUMBER is not a DuckDB type"),
        }
    }
}
