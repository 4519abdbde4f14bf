//! Declared resources (the YAML users `kubectl apply`, or the objects the operator watches)
//! turned into catalog specs and stored. Both adapters apply resources through here, so a Job
//! means the same thing in a cluster and in `duckmesh dev`.
//!
//! A task may read and write only datasets of its own tenant in its own namespace (SPEC §2.10):
//! names resolve in the resource's namespace, and a dataset of another tenant is refused with
//! `cross_tenant_dataset` before anything is stored.

use duckmesh_catalog::{Catalog, CommitMode, JobUpsert, SpecBatch, TaskOutput};
use duckmesh_contracts::task::{
    self, CompactSpec, ExportFormat, ExportSpec, GcSpec, InputSpec, IntegritySpec, Quantity, SqlTaskSpec,
};
use duckmesh_core::{DatasetId, TaskId};
use duckmesh_resources::{self as resources, OutputMode, TaskKind, TaskTemplate, ValidationError};
use serde_json::{Map, Value};

/// The identity of a resource: where it lives and which incarnation and generation it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Namespace (`default` when the YAML names none).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`; a new uid under the same name is a new incarnation.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: i64,
}

/// Why a resource could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The resource breaks a validation rule.
    #[error("{kind}/{name} is invalid: {}", join(.errors))]
    Invalid {
        /// `Dataset`, `Job` or `Task`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Every rule it breaks.
        errors: Vec<ValidationError>,
    },
    /// A task reads or writes a dataset that is not declared in its namespace.
    #[error("task {task:?} refers to dataset {dataset:?}, which does not exist in namespace {namespace:?}")]
    UnknownDataset {
        /// The task.
        task: String,
        /// The missing dataset.
        dataset: String,
        /// Where it was looked up.
        namespace: String,
    },
    /// A task reads or writes a dataset that belongs to another tenant.
    #[error(transparent)]
    CrossTenant(Box<CrossTenantReference>),
    /// The catalog refused or failed.
    #[error(transparent)]
    Catalog(#[from] duckmesh_catalog::Error),
}

/// A task's reference to a dataset of another tenant: which resource, task and field, and
/// whose the dataset is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind}/{name}: {field}: dataset {dataset:?} in namespace {namespace:?} belongs to tenant {dataset_tenant:?}, \
     but task {task:?} runs as tenant {tenant:?}; a task may only read and write its own tenant's datasets"
)]
pub struct CrossTenantReference {
    /// `Job` or `Task`.
    pub kind: &'static str,
    /// The resource's name.
    pub name: String,
    /// The task (node name, or the standalone Task's name).
    pub task: String,
    /// The field naming the dataset, e.g. `spec.tasks[1].inputs[0].dataset`.
    pub field: String,
    /// The dataset.
    pub dataset: String,
    /// Its tenant.
    pub dataset_tenant: String,
    /// The tenant the task runs as.
    pub tenant: String,
    /// The namespace of both.
    pub namespace: String,
}

/// A dataset as a task's references resolve to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDataset {
    /// Catalog id.
    pub id: DatasetId,
    /// The tenant that owns it.
    pub tenant: String,
}

/// Where a task template comes from: whose datasets it may use, and how to point at it in
/// messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskScope<'a> {
    /// `Job` or `Task`.
    pub kind: &'static str,
    /// The resource's name.
    pub name: &'a str,
    /// The resource's namespace (its datasets resolve there).
    pub namespace: &'a str,
    /// The tenant its tasks run as.
    pub tenant: &'a str,
    /// The template's field, e.g. `spec.tasks[1]` or `spec.template`.
    pub field: String,
}

impl ApplyError {
    /// Stable error code for logs, conditions and events.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_resource",
            Self::UnknownDataset { .. } => "dataset_not_found",
            Self::CrossTenant(_) => "cross_tenant_dataset",
            Self::Catalog(error) => error.error_code(),
        }
    }

    /// Whether trying again later may succeed without the user changing anything (the
    /// dataset may be applied later; the catalog may come back). A cross-tenant reference
    /// needs a change to the resource (or to the dataset's tenant).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Invalid { .. } | Self::CrossTenant(_) => false,
            Self::UnknownDataset { .. } => true,
            Self::Catalog(error) => error.is_retryable(),
        }
    }
}

fn join(errors: &[ValidationError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The catalog spec of a Dataset. The full resource spec is stored (camelCase) for the
/// components that read policies from it (the worker reads `partitionBy` and
/// `targetFileSizeBytes`).
pub fn dataset_spec(
    object: &ObjectRef,
    spec: &resources::DatasetSpec,
) -> Result<duckmesh_catalog::DatasetSpec, ApplyError> {
    resources::validate_dataset(&object.name, spec).map_err(|errors| ApplyError::Invalid {
        kind: "Dataset",
        name: object.name.clone(),
        errors,
    })?;
    let schema = (!spec.schema.is_empty()).then(|| {
        spec.schema
            .iter()
            .map(|column| duckmesh_catalog::Column { name: column.name.clone(), data_type: column.data_type.clone() })
            .collect()
    });
    Ok(duckmesh_catalog::DatasetSpec {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
        generation: object.generation,
        tenant: spec.tenant.clone(),
        schema,
        spec: serde_json::to_value(spec).unwrap_or(Value::Null),
    })
}

/// The catalog spec of a Job; `resolve` maps a dataset name (in the Job's namespace) to its
/// catalog id and tenant.
pub fn job_spec(
    object: &ObjectRef,
    spec: &resources::JobSpec,
    resolve: impl Fn(&str) -> Option<ResolvedDataset>,
) -> Result<duckmesh_catalog::JobSpec, ApplyError> {
    resources::validate_job(&object.name, spec).map_err(|errors| ApplyError::Invalid {
        kind: "Job",
        name: object.name.clone(),
        errors,
    })?;
    let tasks = spec
        .tasks
        .iter()
        .enumerate()
        .map(|(index, template)| {
            let scope = TaskScope {
                kind: "Job",
                name: &object.name,
                namespace: &object.namespace,
                tenant: &spec.tenant,
                field: format!("spec.tasks[{index}]"),
            };
            task_spec(&scope, template, &resolve)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(duckmesh_catalog::JobSpec {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
        generation: object.generation,
        tenant: spec.tenant.clone(),
        max_parallel: spec.max_parallel,
        spec: serde_json::to_value(spec).unwrap_or(Value::Null),
        tasks,
    })
}

/// The catalog spec of one task template (of a Job, or of a standalone Task). Every input and
/// the output must resolve, in the scope's namespace, to a dataset of the scope's tenant.
pub fn task_spec(
    scope: &TaskScope<'_>,
    template: &TaskTemplate,
    resolve: &impl Fn(&str) -> Option<ResolvedDataset>,
) -> Result<duckmesh_catalog::TaskSpec, ApplyError> {
    let lookup = |dataset: &str, field: String| {
        let resolved = resolve(dataset).ok_or_else(|| ApplyError::UnknownDataset {
            task: template.name.clone(),
            dataset: dataset.to_owned(),
            namespace: scope.namespace.to_owned(),
        })?;
        if resolved.tenant != scope.tenant {
            return Err(ApplyError::CrossTenant(Box::new(CrossTenantReference {
                kind: scope.kind,
                name: scope.name.to_owned(),
                task: template.name.clone(),
                field,
                dataset: dataset.to_owned(),
                dataset_tenant: resolved.tenant,
                tenant: scope.tenant.to_owned(),
                namespace: scope.namespace.to_owned(),
            })));
        }
        Ok(resolved.id)
    };
    for (index, input) in template.inputs.iter().enumerate() {
        lookup(&input.dataset, format!("{}.inputs[{index}].dataset", scope.field))?;
    }
    let output = template
        .output
        .as_ref()
        .map(|output| -> Result<TaskOutput, ApplyError> {
            Ok(TaskOutput {
                dataset: lookup(&output.dataset, format!("{}.output.dataset", scope.field))?,
                mode: match output.mode {
                    OutputMode::Append => CommitMode::Append,
                    OutputMode::Overwrite => CommitMode::Overwrite,
                },
            })
        })
        .transpose()?;
    Ok(duckmesh_catalog::TaskSpec {
        name: template.name.clone(),
        kind: template.kind.as_str().to_owned(),
        depends_on: template.depends_on.clone(),
        max_attempts: template.max_attempts,
        timeout_seconds: template.timeout_seconds,
        output,
        spec: runner_spec(template),
    })
}

/// The kind-specific document a worker reads from `tasks.spec`, absent fields omitted: for a
/// `sql` task the [`SqlTaskSpec`] the worker parses (docs/worker.md); for `compact`,
/// `gc`, `integrity` and `export` the [`CompactSpec`], [`GcSpec`], [`IntegritySpec`] and
/// [`ExportSpec`] their runners parse (docs/maintenance.md), from the template's settings of
/// that kind (a `gc` task's retention is the Dataset's).
pub fn runner_spec(template: &TaskTemplate) -> Value {
    match template.kind {
        TaskKind::Sql => sql_spec(template),
        TaskKind::Compact => {
            let settings = template.compact.clone().unwrap_or_default();
            document(&CompactSpec {
                min_files: settings.min_files,
                target_file_size_bytes: settings.target_file_size_bytes,
            })
        }
        TaskKind::Integrity => document(&IntegritySpec {
            verify_hashes: template.integrity.as_ref().and_then(|settings| settings.verify_hashes).unwrap_or(false),
        }),
        // Validation requires the settings; without them the runner reports the missing prefix.
        TaskKind::Export => match &template.export {
            Some(settings) => document(&ExportSpec {
                prefix: settings.prefix.clone(),
                snapshot: settings.snapshot,
                format: match settings.format.unwrap_or_default() {
                    resources::ExportFormat::Parquet => ExportFormat::Parquet,
                    resources::ExportFormat::Csv => ExportFormat::Csv,
                },
            }),
            None => Value::Object(Map::new()),
        },
        TaskKind::Gc => {
            let settings = template.gc.clone().unwrap_or_default();
            document(&GcSpec { dry_run: settings.dry_run.unwrap_or(false), grace_seconds: settings.grace_seconds })
        }
    }
}

fn sql_spec(template: &TaskTemplate) -> Value {
    let Some(sql) = &template.sql else {
        return Value::Object(Map::new());
    };
    let resources = template
        .resources
        .as_ref()
        .map(|resources| task::Resources {
            memory: resources.memory.clone().map(Quantity::Text),
            cpu: resources.cpu.clone().map(Quantity::Text),
        })
        .filter(|resources| resources.memory.is_some() || resources.cpu.is_some());
    document(&SqlTaskSpec {
        sql: sql.clone(),
        inputs: template
            .inputs
            .iter()
            .map(|input| InputSpec { dataset: input.dataset.clone(), snapshot: input.snapshot })
            .collect(),
        resources,
        target_file_size_bytes: template.target_file_size_bytes,
    })
}

/// A spec as a JSON document. Plain strings and numbers: serializing cannot fail.
fn document(spec: &impl serde::Serialize) -> Value {
    serde_json::to_value(spec).unwrap_or_else(|_| Value::Object(Map::new()))
}

/// Validates and stores a Dataset on its own.
pub async fn apply_dataset(
    catalog: &Catalog,
    object: &ObjectRef,
    spec: &resources::DatasetSpec,
) -> Result<duckmesh_catalog::DatasetRecord, ApplyError> {
    let mut batch = ApplyBatch::begin(catalog).await?;
    let record = batch.dataset(object, spec).await?;
    batch.commit().await?;
    Ok(record)
}

/// Validates and stores a Job on its own, resolving its datasets in the catalog. Applying the
/// same generation again changes nothing; the task graph is fixed when the Job is first stored.
pub async fn apply_job(
    catalog: &Catalog,
    object: &ObjectRef,
    spec: &resources::JobSpec,
) -> Result<JobUpsert, ApplyError> {
    let mut batch = ApplyBatch::begin(catalog).await?;
    let upsert = batch.job(object, spec).await?;
    batch.commit().await?;
    Ok(upsert)
}

/// Validates and stores a standalone Task (one that no Job owns) on its own.
pub async fn apply_task(
    catalog: &Catalog,
    object: &ObjectRef,
    spec: &resources::TaskSpec,
) -> Result<TaskId, ApplyError> {
    let mut batch = ApplyBatch::begin(catalog).await?;
    let id = batch.task(object, spec).await?;
    batch.commit().await?;
    Ok(id)
}

/// Resources applied together: [`ApplyBatch::commit`] stores them all in one catalog
/// transaction, and an error on the way (a validation failure, a refused reference, a lost
/// connection) stores none of them. Datasets applied earlier in the batch resolve the
/// references of the Jobs and Tasks applied after them.
#[derive(Debug)]
pub struct ApplyBatch {
    specs: SpecBatch,
}

impl ApplyBatch {
    /// Starts a batch (a catalog transaction).
    pub async fn begin(catalog: &Catalog) -> Result<Self, ApplyError> {
        Ok(Self { specs: catalog.begin_specs().await? })
    }

    /// Stores everything applied in this batch, atomically.
    pub async fn commit(self) -> Result<(), ApplyError> {
        Ok(self.specs.commit().await?)
    }

    /// Validates and stores a Dataset.
    pub async fn dataset(
        &mut self,
        object: &ObjectRef,
        spec: &resources::DatasetSpec,
    ) -> Result<duckmesh_catalog::DatasetRecord, ApplyError> {
        let spec = dataset_spec(object, spec)?;
        Ok(self.specs.upsert_dataset(&spec).await?)
    }

    /// Validates and stores a Job.
    pub async fn job(&mut self, object: &ObjectRef, spec: &resources::JobSpec) -> Result<JobUpsert, ApplyError> {
        let resolved = self.resolve(&object.namespace, dataset_names(spec.tasks.iter())).await?;
        let spec = job_spec(object, spec, |name| resolved.get(name).cloned())?;
        Ok(self.specs.upsert_job(&spec).await?)
    }

    /// Validates and stores a standalone Task.
    pub async fn task(&mut self, object: &ObjectRef, spec: &resources::TaskSpec) -> Result<TaskId, ApplyError> {
        resources::validate_task(&object.name, spec).map_err(|errors| ApplyError::Invalid {
            kind: "Task",
            name: object.name.clone(),
            errors,
        })?;
        let resolved = self.resolve(&object.namespace, dataset_names(std::iter::once(&spec.template))).await?;
        let mut template = spec.template.clone();
        template.name = object.name.clone();
        let scope = TaskScope {
            kind: "Task",
            name: &object.name,
            namespace: &object.namespace,
            tenant: &spec.tenant,
            field: "spec.template".into(),
        };
        let task = task_spec(&scope, &template, &|name| resolved.get(name).cloned())?;
        Ok(self.specs.upsert_standalone_task(&object.namespace, &spec.tenant, &task).await?)
    }

    /// The datasets of `names` that exist in `namespace`, as this batch sees them.
    async fn resolve(
        &mut self,
        namespace: &str,
        names: Vec<String>,
    ) -> Result<std::collections::HashMap<String, ResolvedDataset>, ApplyError> {
        let mut resolved = std::collections::HashMap::new();
        for name in names {
            match self.specs.dataset_by_name(namespace, &name).await {
                Ok(record) => {
                    resolved.insert(name, ResolvedDataset { id: record.id, tenant: record.tenant });
                }
                Err(duckmesh_catalog::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(resolved)
    }
}

fn dataset_names<'a>(templates: impl Iterator<Item = &'a TaskTemplate>) -> Vec<String> {
    let mut names: Vec<String> = templates
        .flat_map(|t| t.inputs.iter().map(|i| i.dataset.clone()).chain(t.output.iter().map(|o| o.dataset.clone())))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_resources::{InputRef, OutputRef, Resources};
    use serde_json::json;

    fn object(name: &str) -> ObjectRef {
        ObjectRef { namespace: "default".into(), name: name.into(), uid: "uid-1".into(), generation: 1 }
    }

    fn acme(id: i64) -> ResolvedDataset {
        ResolvedDataset { id: DatasetId(id), tenant: "acme".into() }
    }

    fn template(name: &str) -> TaskTemplate {
        TaskTemplate {
            name: name.into(),
            kind: TaskKind::Sql,
            sql: Some("SELECT 1 AS x".into()),
            depends_on: vec![],
            inputs: vec![],
            output: Some(OutputRef { dataset: "out".into(), mode: OutputMode::Overwrite }),
            max_attempts: None,
            timeout_seconds: None,
            resources: None,
            target_file_size_bytes: None,
            compact: None,
            gc: None,
            integrity: None,
            export: None,
        }
    }

    #[test]
    fn runner_spec_keeps_only_what_the_worker_reads() {
        let mut t = template("a");
        t.inputs = vec![
            InputRef { dataset: "raw".into(), snapshot: None },
            InputRef { dataset: "dim".into(), snapshot: Some(7) },
        ];
        t.resources = Some(Resources { memory: Some("1Gi".into()), cpu: None });
        t.target_file_size_bytes = Some(64 << 20);
        assert_eq!(
            runner_spec(&t),
            json!({
                "sql": "SELECT 1 AS x",
                "inputs": [{"dataset": "raw"}, {"dataset": "dim", "snapshot": 7}],
                "resources": {"memory": "1Gi"},
                "targetFileSizeBytes": 67108864
            })
        );
        assert_eq!(runner_spec(&TaskTemplate { sql: None, output: None, ..template("b") }), json!({}));
        // One contract: what the scheduler writes is what the worker reads.
        let read = SqlTaskSpec::parse(&runner_spec(&t)).expect("the worker reads it");
        assert_eq!(read.inputs[1], InputSpec { dataset: "dim".into(), snapshot: Some(7) });
        assert_eq!(read.limits().expect("limits").memory_limit_bytes, Some((1 << 30) / 5 * 4));
    }

    #[test]
    fn maintenance_settings_become_the_specs_their_runners_read() {
        let maintenance = |kind: TaskKind| TaskTemplate { kind, sql: None, ..template("m") };
        let compact = TaskTemplate {
            compact: Some(resources::CompactSettings { min_files: Some(4), target_file_size_bytes: Some(2 << 20) }),
            ..maintenance(TaskKind::Compact)
        };
        assert_eq!(runner_spec(&compact), json!({"minFiles": 4, "targetFileSizeBytes": 2097152}));
        assert_eq!(
            CompactSpec::parse(&runner_spec(&compact)).expect("the compactor reads it"),
            CompactSpec { min_files: Some(4), target_file_size_bytes: Some(2 << 20) }
        );
        assert_eq!(runner_spec(&maintenance(TaskKind::Compact)), json!({}));

        let integrity = TaskTemplate {
            integrity: Some(resources::IntegritySettings { verify_hashes: Some(true) }),
            ..maintenance(TaskKind::Integrity)
        };
        assert!(IntegritySpec::parse(&runner_spec(&integrity)).expect("read").verify_hashes);
        assert_eq!(runner_spec(&maintenance(TaskKind::Integrity)), json!({"verifyHashes": false}));

        let gc = TaskTemplate {
            gc: Some(resources::GcSettings { dry_run: Some(true), grace_seconds: Some(120) }),
            ..maintenance(TaskKind::Gc)
        };
        assert_eq!(runner_spec(&gc), json!({"dryRun": true, "graceSeconds": 120}));
        assert_eq!(
            GcSpec::parse(&runner_spec(&gc)).expect("the GC runner reads it"),
            GcSpec { dry_run: true, grace_seconds: Some(120) }
        );
        assert_eq!(runner_spec(&maintenance(TaskKind::Gc)), json!({}));

        let export = TaskTemplate {
            export: Some(resources::ExportSettings {
                prefix: "out/today".into(),
                format: Some(resources::ExportFormat::Csv),
                snapshot: Some(3),
            }),
            ..maintenance(TaskKind::Export)
        };
        assert_eq!(runner_spec(&export), json!({"prefix": "out/today", "format": "csv", "snapshot": 3}));
        let read = ExportSpec::parse(&runner_spec(&export)).expect("the exporter reads it");
        assert_eq!((read.format, read.snapshot), (ExportFormat::Csv, Some(3)));
        assert_eq!(runner_spec(&maintenance(TaskKind::Gc)), json!({}));
    }

    #[test]
    fn unknown_datasets_are_named() {
        let spec = resources::JobSpec { tenant: "acme".into(), max_parallel: None, tasks: vec![template("a")] };
        let error = job_spec(&object("j"), &spec, |_| None).err();
        match error {
            Some(ApplyError::UnknownDataset { task, dataset, namespace }) => {
                assert_eq!((task.as_str(), dataset.as_str(), namespace.as_str()), ("a", "out", "default"));
            }
            other => panic!("expected UnknownDataset, got {other:?}"),
        }
    }

    #[test]
    fn datasets_of_another_tenant_are_refused_naming_the_field() {
        let resolve = |name: &str| match name {
            "payroll" => Some(ResolvedDataset { id: DatasetId(2), tenant: "globex".into() }),
            _ => Some(acme(1)),
        };
        let mut reads = template("copy");
        reads.inputs = vec![
            InputRef { dataset: "raw".into(), snapshot: None },
            InputRef { dataset: "payroll".into(), snapshot: None },
        ];
        let mut writes = template("clobber");
        writes.output = Some(OutputRef { dataset: "payroll".into(), mode: OutputMode::Overwrite });
        let cases = [(reads, "spec.tasks[1].inputs[1].dataset"), (writes, "spec.tasks[1].output.dataset")];
        for (task, field) in cases {
            let name = task.name.clone();
            let spec =
                resources::JobSpec { tenant: "acme".into(), max_parallel: None, tasks: vec![template("a"), task] };
            let error = job_spec(&object("j"), &spec, resolve).expect_err("another tenant's dataset");
            assert_eq!(error.error_code(), "cross_tenant_dataset");
            assert!(!error.is_retryable());
            let message = error.to_string();
            for part in ["Job/j", field, "\"payroll\"", "tenant \"globex\"", "tenant \"acme\"", name.as_str()] {
                assert!(message.contains(part), "{part}: {message}");
            }
        }
    }

    #[test]
    fn jobs_carry_modes_dependencies_and_limits() {
        let mut b = template("b");
        b.depends_on = vec!["a".into()];
        b.max_attempts = Some(5);
        b.timeout_seconds = Some(60);
        b.output = Some(OutputRef { dataset: "out".into(), mode: OutputMode::Append });
        let spec = resources::JobSpec { tenant: "acme".into(), max_parallel: Some(2), tasks: vec![template("a"), b] };
        let job = job_spec(&object("j"), &spec, |name| (name == "out").then(|| acme(9))).expect("valid job");
        assert_eq!(job.max_parallel, Some(2));
        assert_eq!(job.tenant, "acme");
        assert_eq!(job.tasks[0].output, Some(TaskOutput { dataset: DatasetId(9), mode: CommitMode::Overwrite }));
        assert_eq!(job.tasks[1].output, Some(TaskOutput { dataset: DatasetId(9), mode: CommitMode::Append }));
        assert_eq!(job.tasks[1].depends_on, vec!["a".to_owned()]);
        assert_eq!((job.tasks[1].max_attempts, job.tasks[1].timeout_seconds), (Some(5), Some(60)));
    }

    #[test]
    fn invalid_jobs_are_refused_with_every_reason() {
        let mut a = template("a");
        a.depends_on = vec!["missing".into()];
        let spec = resources::JobSpec { tenant: "acme".into(), max_parallel: None, tasks: vec![a] };
        let error = job_spec(&object("j"), &spec, |_| Some(acme(1))).err();
        match &error {
            Some(error @ ApplyError::Invalid { kind: "Job", .. }) => {
                assert_eq!(error.error_code(), "invalid_resource");
                assert!(error.to_string().contains("missing"), "{error}");
                assert!(!error.is_retryable());
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
