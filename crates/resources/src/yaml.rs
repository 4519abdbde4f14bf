//! Reading the YAML users `kubectl apply`: one file, many documents, any of our kinds.

use crate::{Dataset, GROUP, Job, Task, VERSION};
use serde::Deserialize;

/// One resource read from YAML.
#[derive(Debug, Clone)]
pub enum Resource {
    /// A Dataset.
    Dataset(Dataset),
    /// A Job.
    Job(Job),
    /// A standalone Task.
    Task(Task),
}

impl Resource {
    /// `Kind/name`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Dataset(d) => format!("Dataset/{}", d.metadata.name.as_deref().unwrap_or("?")),
            Self::Job(j) => format!("Job/{}", j.metadata.name.as_deref().unwrap_or("?")),
            Self::Task(t) => format!("Task/{}", t.metadata.name.as_deref().unwrap_or("?")),
        }
    }
}

/// A document that is not a valid DuckMesh resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}, document {document}: {message}")]
pub struct YamlError {
    /// The file (or other source) name.
    pub source_name: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// What is wrong.
    pub message: String,
}

impl YamlError {
    /// The stable code used in logs.
    pub fn error_code(&self) -> &'static str {
        "invalid_yaml"
    }
}

/// Parses every document of `text`. Empty documents are skipped; a document of another API
/// group or an unknown kind is an error (nothing is half-applied: the caller gets all or none).
/// Resources without a namespace get `default`, as `kubectl apply` would.
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Resource>, YamlError> {
    let mut resources = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let error = |message: String| YamlError { source_name: source_name.to_owned(), document: index + 1, message };
        let value = serde_yaml_ng::Value::deserialize(document).map_err(|e| error(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let expected = format!("{GROUP}/{VERSION}");
        if api_version != expected {
            return Err(error(format!("apiVersion {api_version:?} is not {expected:?}")));
        }
        let mut resource = match kind.as_str() {
            "Dataset" => Resource::Dataset(serde_yaml_ng::from_value(value).map_err(|e| error(e.to_string()))?),
            "Job" => Resource::Job(serde_yaml_ng::from_value(value).map_err(|e| error(e.to_string()))?),
            "Task" => Resource::Task(serde_yaml_ng::from_value(value).map_err(|e| error(e.to_string()))?),
            other => return Err(error(format!("unknown kind {other:?}; expected Dataset, Job or Task"))),
        };
        let metadata = match &mut resource {
            Resource::Dataset(d) => &mut d.metadata,
            Resource::Job(j) => &mut j.metadata,
            Resource::Task(t) => &mut t.metadata,
        };
        if metadata.name.as_deref().is_none_or(str::is_empty) {
            return Err(error(format!("{kind} has no metadata.name")));
        }
        metadata.namespace.get_or_insert_with(|| "default".to_owned());
        resources.push(resource);
    }
    Ok(resources)
}
