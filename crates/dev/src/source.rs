//! The resource source of dev mode: the YAML files users would `kubectl apply`, read once,
//! validated as a whole, and applied to the catalog with stable identities so that a rerun
//! resumes instead of starting over. Nothing is applied unless every document of every file
//! is valid and every dataset reference resolves: a mistake anywhere leaves the catalog as it
//! was.

use duckmesh_catalog::Catalog;
use duckmesh_core::{JobId, TaskId};
use duckmesh_resources::{Problem, Resource, YamlError, YamlErrorKind, read_documents};
use duckmesh_scheduler::{ApplyBatch, ApplyError, ObjectRef};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why the resources could not be loaded or applied.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A path names no YAML at all.
    #[error("{path} holds no .yaml or .yml files")]
    Empty {
        /// The path.
        path: PathBuf,
    },
    /// Documents are not valid DuckMesh resources: every problem of every file, each line
    /// naming the file, document and field.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<YamlError>),
    /// Two documents declare the same resource.
    #[error("{second}: {resource} is declared twice (first at {first})")]
    Duplicate {
        /// `Kind/name`.
        resource: String,
        /// Where it was first declared.
        first: String,
        /// Where it was declared again.
        second: String,
    },
    /// A resource was refused.
    #[error("{location}: {source}")]
    Apply {
        /// `file: document N (Kind/name)`.
        location: String,
        /// Why.
        #[source]
        source: Box<ApplyError>,
    },
}

impl SourceError {
    /// Stable error code.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Read { .. } => "file_unreadable",
            Self::Empty { .. } => "no_resources",
            Self::Invalid(errors) => errors.first().map_or("invalid_yaml", YamlError::error_code),
            Self::Duplicate { .. } => "duplicate_resource",
            Self::Apply { source, .. } => source.error_code(),
        }
    }
}

/// A resource and where it was declared.
#[derive(Debug, Clone)]
pub struct Declared {
    /// The file it was read from.
    pub file: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// The resource.
    pub resource: Resource,
}

impl Declared {
    /// `file: document N (Kind/name)`, as messages start.
    pub fn location(&self) -> String {
        format!("{}: document {} ({})", self.file, self.document, self.resource.describe())
    }
}

/// Reads every resource of `paths` (files, or directories whose `*.yaml`/`*.yml` files are read
/// in name order), datasets first. Every document of every file is read and validated before
/// this returns, and all their problems are reported together.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Declared>, SourceError> {
    let mut declared = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files = yaml_files(path)?;
        if files.is_empty() {
            return Err(SourceError::Empty { path: path.clone() });
        }
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|source| SourceError::Read { path: file.clone(), source })?;
            let name = file.display().to_string();
            match read_documents(&text, &name) {
                Ok(documents) => declared.extend(documents.into_iter().map(|document| Declared {
                    file: name.clone(),
                    document: document.index,
                    resource: document.resource,
                })),
                Err(problems) => errors.extend(problems),
            }
        }
    }
    for item in &declared {
        if let Err(problems) = item.resource.validate() {
            errors.push(YamlError::new(
                &item.file,
                item.document,
                Some(item.resource.describe()),
                YamlErrorKind::Invalid,
                problems.into_iter().map(|p| Problem::new(p.field, p.message)).collect(),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(SourceError::Invalid(errors));
    }
    let mut seen = HashMap::new();
    for item in &declared {
        let key = format!("{}/{}", namespace_of(&item.resource), item.resource.describe());
        if let Some(first) = seen.insert(key, item.location()) {
            return Err(SourceError::Duplicate { resource: item.resource.describe(), first, second: item.location() });
        }
    }
    declared.sort_by_key(|item| match item.resource {
        Resource::Dataset(_) => 0,
        Resource::Job(_) => 1,
        Resource::Task(_) => 2,
    });
    Ok(declared)
}

fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let read = |source| SourceError::Read { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

fn namespace_of(resource: &Resource) -> String {
    resource.metadata().namespace.clone().unwrap_or_else(|| "default".into())
}

/// The identity dev mode gives a resource. Without a cluster there is no `metadata.uid`, so it
/// is derived from the kind, namespace, name and spec: rerunning the same file resumes the same
/// Job (committed tasks are not run again), while editing a Job's spec makes it a new
/// incarnation that runs from the start. A `metadata.uid` in the file is used as is.
pub fn object_ref(kind: &str, meta: &k8s_meta::ObjectMeta, spec: &impl serde::Serialize) -> ObjectRef {
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_else(|| {
        let mut hash = Sha256::new();
        hash.update(kind.as_bytes());
        hash.update([0]);
        hash.update(namespace.as_bytes());
        hash.update([0]);
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(serde_json::to_vec(spec).unwrap_or_default());
        format!("dev-{}", &hex::encode(hash.finalize())[..32])
    });
    ObjectRef { namespace, name, uid, generation: meta.generation.unwrap_or(1) }
}

/// The Kubernetes object metadata type, re-exported for [`object_ref`].
pub mod k8s_meta {
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
}

/// What applying did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Datasets stored.
    pub datasets: Vec<String>,
    /// Jobs stored: `(id, name, created by this run)`.
    pub jobs: Vec<(JobId, String, bool)>,
    /// Standalone tasks stored: `(id, name)`.
    pub tasks: Vec<(TaskId, String)>,
}

/// Applies `declared` (datasets first) in one catalog transaction: every Job and Task
/// resolves its datasets among those declared alongside it and those already in the catalog,
/// and anything that fails on the way (a dangling or cross-tenant reference, a refused update,
/// a lost catalog connection) leaves the catalog as it was.
pub async fn apply(catalog: &Catalog, declared: &[Declared]) -> Result<Applied, SourceError> {
    let catalog_error = |source| SourceError::Apply { location: "the catalog".into(), source: Box::new(source) };
    let mut batch = ApplyBatch::begin(catalog).await.map_err(catalog_error)?;
    let mut applied = Applied::default();
    for item in declared {
        let failed = |source| SourceError::Apply { location: item.location(), source: Box::new(source) };
        match &item.resource {
            Resource::Dataset(dataset) => {
                let object = object_ref("Dataset", &dataset.metadata, &dataset.spec);
                batch.dataset(&object, &dataset.spec).await.map_err(failed)?;
                applied.datasets.push(object.name);
            }
            Resource::Job(job) => {
                let object = object_ref("Job", &job.metadata, &job.spec);
                let upsert = batch.job(&object, &job.spec).await.map_err(failed)?;
                applied.jobs.push((upsert.job.id, object.name, upsert.created));
            }
            Resource::Task(task) => {
                let object = object_ref("Task", &task.metadata, &task.spec);
                let id = batch.task(&object, &task.spec).await.map_err(failed)?;
                applied.tasks.push((id, object.name));
            }
        }
    }
    batch.commit().await.map_err(catalog_error)?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATASET: &str =
        "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: out}\nspec: {tenant: acme}\n";

    #[test]
    fn identities_are_stable_and_follow_the_spec() {
        let resources = duckmesh_resources::parse_documents(DATASET, "t.yaml").expect("valid");
        let Resource::Dataset(dataset) = &resources[0] else { panic!("a dataset") };
        let first = object_ref("Dataset", &dataset.metadata, &dataset.spec);
        let again = object_ref("Dataset", &dataset.metadata, &dataset.spec);
        assert_eq!(first, again);
        assert_eq!((first.namespace.as_str(), first.name.as_str(), first.generation), ("default", "out", 1));
        let mut edited = dataset.spec.clone();
        edited.tenant = "other".into();
        assert_ne!(object_ref("Dataset", &dataset.metadata, &edited).uid, first.uid);
        assert_ne!(object_ref("Job", &dataset.metadata, &dataset.spec).uid, first.uid);
    }

    #[test]
    fn directories_missing_files_and_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(load(&[dir.path().to_path_buf()]), Err(SourceError::Empty { .. })));
        std::fs::write(dir.path().join("b.yaml"), DATASET).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        assert_eq!(load(&[dir.path().to_path_buf()]).expect("loads").len(), 1);
        std::fs::write(dir.path().join("a.yml"), DATASET).expect("write");
        let error = load(&[dir.path().to_path_buf()]).expect_err("duplicate");
        assert_eq!(error.error_code(), "duplicate_resource");
        let text = error.to_string();
        assert!(text.contains("b.yaml: document 1 (Dataset/out): Dataset/out is declared twice (first at "), "{text}");
        assert!(text.contains("a.yml: document 1 (Dataset/out))"), "{text}");
        let missing = load(&[dir.path().join("nope.yaml")]).expect_err("missing");
        assert_eq!(missing.error_code(), "file_unreadable");
    }

    /// Every document of every file is checked before anything is reported, and each problem
    /// names its file, document and field once (`Job/cyc`, not `Job/Job/cyc`).
    #[test]
    fn every_problem_of_every_file_is_reported_with_its_location() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cyclic = "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: cyc}\nspec:\n  tasks:\n    - {name: a, dependsOn: [b], sql: 'SELECT 1', output: {dataset: out}}\n    - {name: b, dependsOn: [a], sql: 'SELECT 1', output: {dataset: out}}\n";
        std::fs::write(dir.path().join("a.yaml"), format!("{DATASET}---\n{cyclic}")).expect("write");
        std::fs::write(dir.path().join("b.yaml"), "# only a comment\n").expect("write");
        let typo = "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: typo}\nspec:\n  tasks: [{name: a, dependOn: [x], sql: 'SELECT 1', output: {dataset: out}}]\n";
        std::fs::write(dir.path().join("c.yaml"), typo).expect("write");
        let error = load(&[dir.path().to_path_buf()]).expect_err("invalid");
        let text = error.to_string();
        let a = dir.path().join("a.yaml").display().to_string();
        let b = dir.path().join("b.yaml").display().to_string();
        let c = dir.path().join("c.yaml").display().to_string();
        for expected in [
            format!("{a}: document 2 (Job/cyc): spec.tasks: "),
            format!("{b}: holds no resources"),
            format!("{c}: document 1 (Job/typo): spec.tasks[0]: unknown field \"dependOn\""),
        ] {
            assert!(text.lines().any(|line| line.starts_with(&expected)), "expected {expected:?} in:\n{text}");
        }
        assert!(!text.contains("Job/Job"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
