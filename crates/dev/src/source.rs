//! The resource source of dev mode: the YAML files users would `kubectl apply`, read once,
//! validated as a whole (nothing is applied when any document is bad), and applied to the
//! catalog with stable identities so that a rerun resumes instead of starting over.

use duckmesh_catalog::Catalog;
use duckmesh_core::{JobId, TaskId};
use duckmesh_resources::{Resource, parse_documents};
use duckmesh_scheduler::{ApplyError, ObjectRef, apply_dataset, apply_job, apply_task};
use sha2::{Digest, Sha256};
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
    /// A document is not a valid DuckMesh resource.
    #[error(transparent)]
    Yaml(#[from] duckmesh_resources::YamlError),
    /// Two documents declare the same resource.
    #[error("{0} is declared twice")]
    Duplicate(String),
    /// A resource was refused.
    #[error("{resource}: {source}")]
    Apply {
        /// `Kind/name`.
        resource: String,
        /// Why.
        #[source]
        source: ApplyError,
    },
}

impl SourceError {
    /// Stable error code.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Read { .. } => "file_unreadable",
            Self::Empty { .. } => "no_resources",
            Self::Yaml(error) => error.error_code(),
            Self::Duplicate(_) => "duplicate_resource",
            Self::Apply { source, .. } => source.error_code(),
        }
    }
}

/// Reads every resource of `paths` (files, or directories whose `*.yaml`/`*.yml` files are read
/// in name order), datasets first.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Resource>, SourceError> {
    let mut resources = Vec::new();
    for path in paths {
        let files = yaml_files(path)?;
        if files.is_empty() {
            return Err(SourceError::Empty { path: path.clone() });
        }
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|source| SourceError::Read { path: file.clone(), source })?;
            resources.extend(parse_documents(&text, &file.display().to_string())?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for resource in &resources {
        let key = format!("{}/{}", namespace_of(resource), resource.describe());
        if !seen.insert(key) {
            return Err(SourceError::Duplicate(resource.describe()));
        }
    }
    for resource in &resources {
        validate(resource)?;
    }
    resources.sort_by_key(|resource| match resource {
        Resource::Dataset(_) => 0,
        Resource::Job(_) => 1,
        Resource::Task(_) => 2,
    });
    Ok(resources)
}

/// The checks the catalog would apply, run before anything starts.
fn validate(resource: &Resource) -> Result<(), SourceError> {
    let (kind, result) = match resource {
        Resource::Dataset(d) => {
            ("Dataset", duckmesh_resources::validate_dataset(d.metadata.name.as_deref().unwrap_or(""), &d.spec))
        }
        Resource::Job(j) => {
            ("Job", duckmesh_resources::validate_job(j.metadata.name.as_deref().unwrap_or(""), &j.spec).map(|_| ()))
        }
        Resource::Task(t) => {
            ("Task", duckmesh_resources::validate_task(t.metadata.name.as_deref().unwrap_or(""), &t.spec))
        }
    };
    result.map_err(|errors| SourceError::Apply {
        resource: resource.describe(),
        source: ApplyError::Invalid { kind, name: resource.describe(), errors },
    })
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
    let meta = match resource {
        Resource::Dataset(d) => &d.metadata,
        Resource::Job(j) => &j.metadata,
        Resource::Task(t) => &t.metadata,
    };
    meta.namespace.clone().unwrap_or_else(|| "default".into())
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

/// Applies `resources` in order (datasets first). Stops at the first refusal.
pub async fn apply(catalog: &Catalog, resources: &[Resource]) -> Result<Applied, SourceError> {
    let mut applied = Applied::default();
    for resource in resources {
        let failed = |source| SourceError::Apply { resource: resource.describe(), source };
        match resource {
            Resource::Dataset(dataset) => {
                let object = object_ref("Dataset", &dataset.metadata, &dataset.spec);
                apply_dataset(catalog, &object, &dataset.spec).await.map_err(failed)?;
                applied.datasets.push(object.name);
            }
            Resource::Job(job) => {
                let object = object_ref("Job", &job.metadata, &job.spec);
                let upsert = apply_job(catalog, &object, &job.spec).await.map_err(failed)?;
                applied.jobs.push((upsert.job.id, object.name, upsert.created));
            }
            Resource::Task(task) => {
                let object = object_ref("Task", &task.metadata, &task.spec);
                let id = apply_task(catalog, &object, &task.spec).await.map_err(failed)?;
                applied.tasks.push((id, object.name));
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATASET: &str =
        "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: out}\nspec: {tenant: acme}\n";

    #[test]
    fn identities_are_stable_and_follow_the_spec() {
        let resources = parse_documents(DATASET, "t.yaml").expect("valid");
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
        let missing = load(&[dir.path().join("nope.yaml")]).expect_err("missing");
        assert_eq!(missing.error_code(), "file_unreadable");
    }
}
