//! Validation beyond what the schema can express: DAG shape, cross-field rules, quantities,
//! name lengths of derived objects. The operator turns errors into a `Valid=False` condition
//! and a Warning event; `duckmesh dev` prints them and exits. Pure functions.

use crate::dataset::DatasetSpec;
use crate::job::JobSpec;
use crate::task::{OutputMode, TaskKind, TaskSpec, TaskTemplate};
use crate::{MAX_TARGET_FILE_SIZE_BYTES, MAX_TASKS_PER_JOB, MIN_TARGET_FILE_SIZE_BYTES};
use duckmesh_contracts::quantity::{cpu_millis, memory_bytes};
use duckmesh_contracts::task::{ExportSpec, MAX_GC_GRACE_SECONDS};
use std::collections::HashSet;

/// One problem with a resource, located by a JSON-path-like field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Where, e.g. `spec.tasks[2].dependsOn`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The stable code used in conditions and events.
    pub fn error_code(&self) -> &'static str {
        "invalid_resource"
    }
}

/// Longest name of a Kubernetes object (DNS subdomain).
const MAX_OBJECT_NAME: usize = 253;
/// Longest DNS label.
const MAX_LABEL: usize = 63;

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn check_name(errors: &mut Vec<ValidationError>, field: &str, name: &str) {
    if !is_dns_label(name) {
        errors.push(ValidationError::new(
            field,
            format!(
                "{name:?} must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"
            ),
        ));
    }
}

fn check_target_file_size(errors: &mut Vec<ValidationError>, field: &str, size: Option<u64>) {
    if size.is_some_and(|bytes| !(MIN_TARGET_FILE_SIZE_BYTES..=MAX_TARGET_FILE_SIZE_BYTES).contains(&bytes)) {
        errors.push(ValidationError::new(
            field,
            format!(
                "must be between {MIN_TARGET_FILE_SIZE_BYTES} (1 MiB) and {MAX_TARGET_FILE_SIZE_BYTES} (16 GiB) bytes"
            ),
        ));
    }
}

/// Checks a Dataset.
pub fn validate_dataset(name: &str, spec: &DatasetSpec) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    check_name(&mut errors, "metadata.name", name);
    let mut seen = HashSet::new();
    for (i, column) in spec.schema.iter().enumerate() {
        if column.name.trim().is_empty() {
            errors.push(ValidationError::new(format!("spec.schema[{i}].name"), "must not be empty"));
        }
        if !seen.insert(column.name.as_str()) {
            errors.push(ValidationError::new(
                format!("spec.schema[{i}].name"),
                format!("{:?} is declared twice", column.name),
            ));
        }
    }
    let known = |column: &str| spec.schema.is_empty() || seen.contains(column);
    for (i, column) in spec.partition_by.iter().enumerate() {
        if !known(column) {
            errors.push(ValidationError::new(
                format!("spec.partitionBy[{i}]"),
                format!("{column:?} is not a column of spec.schema"),
            ));
        }
    }
    check_target_file_size(&mut errors, "spec.targetFileSizeBytes", spec.target_file_size_bytes);
    let schedules = [
        ("spec.compaction.schedule", spec.compaction.as_ref().and_then(|policy| policy.schedule.as_deref())),
        ("spec.retention.gcSchedule", spec.retention.as_ref().and_then(|policy| policy.gc_schedule.as_deref())),
        ("spec.integrity.schedule", spec.integrity.as_ref().and_then(|policy| policy.schedule.as_deref())),
    ];
    for (field, pattern) in schedules {
        if let Some(pattern) = pattern
            && let Err(error) = duckmesh_contracts::maintenance::Schedule::parse(field, pattern)
        {
            errors.push(ValidationError::new(field, error.message));
        }
    }
    if let Some(ingest) = &spec.ingest
        && !known(&ingest.dedupe_key)
    {
        errors.push(ValidationError::new(
            "spec.ingest.dedupeKey",
            format!("{:?} is not a column of spec.schema", ingest.dedupe_key),
        ));
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Checks a Job and returns its task names in dependency order.
pub fn validate_job<'a>(name: &str, spec: &'a JobSpec) -> Result<Vec<&'a str>, Vec<ValidationError>> {
    let mut errors = Vec::new();
    check_name(&mut errors, "metadata.name", name);
    if spec.tasks.len() > MAX_TASKS_PER_JOB {
        errors.push(ValidationError::new("spec.tasks", format!("at most {MAX_TASKS_PER_JOB} tasks per Job")));
    }
    for (i, task) in spec.tasks.iter().enumerate() {
        let field = format!("spec.tasks[{i}]");
        validate_template(&mut errors, &field, task);
        // Task resources are named <job>-<task>, their pods <job>-<task>-a<attempt>.
        let pod_name = format!("{name}-{}-a100", task.name);
        if pod_name.len() > MAX_OBJECT_NAME {
            errors.push(ValidationError::new(format!("{field}.name"), "job and task names together are too long"));
        }
    }
    let order = duckmesh_core::topological_order(
        spec.tasks.iter().map(|task| (task.name.as_str(), task.depends_on.iter().map(String::as_str))),
    );
    match order {
        Ok(order) if errors.is_empty() => Ok(order),
        Ok(_) => Err(errors),
        Err(dag) => {
            errors.push(ValidationError::new("spec.tasks", dag.to_string()));
            Err(errors)
        }
    }
}

/// Checks a standalone Task (or one created from a Job).
pub fn validate_task(name: &str, spec: &TaskSpec) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    if name.is_empty() || name.len() > MAX_OBJECT_NAME {
        errors.push(ValidationError::new("metadata.name", "must be 1-253 characters"));
    }
    validate_template(&mut errors, "spec.template", &spec.template);
    if spec.job.is_none() && !spec.template.depends_on.is_empty() {
        errors.push(ValidationError::new(
            "spec.template.dependsOn",
            "a standalone Task cannot depend on other tasks; put them in a Job",
        ));
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn validate_template(errors: &mut Vec<ValidationError>, field: &str, task: &TaskTemplate) {
    check_name(errors, &format!("{field}.name"), &task.name);
    if task.kind == TaskKind::Sql {
        match &task.sql {
            Some(sql) if !sql.trim().is_empty() => {}
            _ => errors.push(ValidationError::new(format!("{field}.sql"), "an sql task needs a query")),
        }
        if task.output.is_none() {
            errors.push(ValidationError::new(format!("{field}.output"), "an sql task needs an output dataset"));
        }
    } else {
        validate_maintenance(errors, field, task);
    }
    validate_settings(errors, field, task);
    let mut inputs = HashSet::new();
    for (i, input) in task.inputs.iter().enumerate() {
        check_name(errors, &format!("{field}.inputs[{i}].dataset"), &input.dataset);
        if !inputs.insert(input.dataset.as_str()) {
            errors.push(ValidationError::new(
                format!("{field}.inputs[{i}]"),
                format!("{:?} is listed twice", input.dataset),
            ));
        }
    }
    if let Some(output) = &task.output {
        check_name(errors, &format!("{field}.output.dataset"), &output.dataset);
    }
    if task.max_attempts.is_some_and(|n| !(1..=100).contains(&n)) {
        errors.push(ValidationError::new(format!("{field}.maxAttempts"), "must be between 1 and 100"));
    }
    if task.timeout_seconds.is_some_and(|s| !(1..=604_800).contains(&s)) {
        errors.push(ValidationError::new(format!("{field}.timeoutSeconds"), "must be between 1 and 604800 (7 days)"));
    }
    check_target_file_size(errors, &format!("{field}.targetFileSizeBytes"), task.target_file_size_bytes);
    if let Some(resources) = &task.resources {
        if let Some(memory) = &resources.memory
            && memory_bytes(memory).is_none_or(|bytes| bytes < 64 * 1024 * 1024)
        {
            errors.push(ValidationError::new(
                format!("{field}.resources.memory"),
                format!("{memory:?} is not a memory quantity of at least 64Mi (e.g. 512Mi, 2Gi)"),
            ));
        }
        if let Some(cpu) = &resources.cpu
            && cpu_millis(cpu).is_none_or(|millis| millis > 4_096_000)
        {
            errors.push(ValidationError::new(
                format!("{field}.resources.cpu"),
                format!("{cpu:?} is not a CPU quantity of at most 4096 cores (e.g. 500m, 2)"),
            ));
        }
    }
}

/// The fields only an `sql` task takes, refused on a maintenance kind, and the dataset a
/// maintenance kind needs (`output.dataset`: the dataset it compacts, collects, checks or
/// exports).
fn validate_maintenance(errors: &mut Vec<ValidationError>, field: &str, task: &TaskTemplate) {
    let kind = task.kind.as_str();
    match &task.output {
        None => errors.push(ValidationError::new(
            format!("{field}.output.dataset"),
            format!("a {kind} task needs the dataset it works on as output.dataset"),
        )),
        Some(output) if output.mode == OutputMode::Overwrite => errors.push(ValidationError::new(
            format!("{field}.output.mode"),
            format!("a {kind} task never overwrites its dataset; remove mode"),
        )),
        Some(_) => {}
    }
    let sql_only = [
        ("sql", task.sql.is_some()),
        ("inputs", !task.inputs.is_empty()),
        ("resources", task.resources.is_some()),
        ("targetFileSizeBytes", task.target_file_size_bytes.is_some()),
    ];
    for (name, _) in sql_only.into_iter().filter(|(_, set)| *set) {
        let hint = match (name, task.kind) {
            ("targetFileSizeBytes", TaskKind::Compact) => " (set compact.targetFileSizeBytes)",
            _ => "",
        };
        errors.push(ValidationError::new(
            format!("{field}.{name}"),
            format!("a {kind} task takes no {name}: only sql tasks do{hint}"),
        ));
    }
    if task.kind == TaskKind::Export && task.export.is_none() {
        errors.push(ValidationError::new(
            format!("{field}.export.prefix"),
            "an export task needs export.prefix: where under _exports/<namespace>/ to write",
        ));
    }
}

/// Each kind's settings: only on a task of that kind, and with values its runner accepts.
fn validate_settings(errors: &mut Vec<ValidationError>, field: &str, task: &TaskTemplate) {
    let settings = [
        ("compact", TaskKind::Compact, task.compact.is_some()),
        ("gc", TaskKind::Gc, task.gc.is_some()),
        ("integrity", TaskKind::Integrity, task.integrity.is_some()),
        ("export", TaskKind::Export, task.export.is_some()),
    ];
    for (name, kind, set) in settings {
        if set && task.kind != kind {
            errors.push(ValidationError::new(
                format!("{field}.{name}"),
                format!(
                    "{name} settings are only for tasks of kind {name}; this task is of kind {}",
                    task.kind.as_str()
                ),
            ));
        }
    }
    if let Some(compact) = &task.compact {
        if compact.min_files.is_some_and(|files| !(2..=100_000).contains(&files)) {
            errors.push(ValidationError::new(format!("{field}.compact.minFiles"), "must be between 2 and 100000"));
        }
        check_target_file_size(errors, &format!("{field}.compact.targetFileSizeBytes"), compact.target_file_size_bytes);
    }
    if let Some(grace) = task.gc.as_ref().and_then(|gc| gc.grace_seconds)
        && grace > MAX_GC_GRACE_SECONDS
    {
        errors.push(ValidationError::new(
            format!("{field}.gc.graceSeconds"),
            format!("must be at most {MAX_GC_GRACE_SECONDS} (365 days)"),
        ));
    }
    if let Some(export) = &task.export {
        let spec = ExportSpec { prefix: export.prefix.clone(), snapshot: None, format: Default::default() };
        if let Err(error) = spec.check() {
            errors.push(ValidationError::new(format!("{field}.export.prefix"), error.message));
        }
        if export.snapshot.is_some_and(|snapshot| snapshot < 1) {
            errors.push(ValidationError::new(format!("{field}.export.snapshot"), "must be a snapshot id (1 or more)"));
        }
    }
}
