//! Reading the YAML users `kubectl apply`: one file, many documents, any of our kinds.
//!
//! Each document is checked the way `kubectl apply --validate=strict` and the API server check
//! it: against the CRD's structural schema, with unknown fields as errors (the API server
//! would prune them silently without strict validation, and a misspelt `dependsOn` would then
//! change what runs). Every problem names the file, the document (index and `Kind/name`) and
//! the field's path, e.g. `x.yaml: document 3 (Job/nightly): spec.tasks[1]: unknown field
//! "dependOn", expected one of …`.

use crate::{Dataset, GROUP, Job, Task, VERSION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::sync::LazyLock;

/// One resource read from YAML.
// A few read per file and matched right away: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
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
        format!("{}/{}", self.kind(), self.metadata().name.as_deref().unwrap_or("?"))
    }

    /// `Dataset`, `Job` or `Task`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dataset(_) => "Dataset",
            Self::Job(_) => "Job",
            Self::Task(_) => "Task",
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Dataset(d) => &d.metadata,
            Self::Job(j) => &j.metadata,
            Self::Task(t) => &t.metadata,
        }
    }

    /// The checks beyond the schema ([`crate::validate_dataset`], [`crate::validate_job`],
    /// [`crate::validate_task`]) that every consumer applies.
    pub fn validate(&self) -> Result<(), Vec<crate::ValidationError>> {
        let name = self.metadata().name.as_deref().unwrap_or_default();
        match self {
            Self::Dataset(d) => crate::validate_dataset(name, &d.spec),
            Self::Job(j) => crate::validate_job(name, &j.spec).map(|_| ()),
            Self::Task(t) => crate::validate_task(name, &t.spec),
        }
    }
}

/// One problem in a document, at a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, Kubernetes style (`spec.tasks[1].dependsOn`); empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

/// What kind of mistake a [`YamlError`] reports; it decides the stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YamlErrorKind {
    /// Not YAML, not one of our kinds, or not what the CRD's schema accepts (unknown
    /// fields, wrong types, values out of range): `invalid_yaml`.
    Schema,
    /// A file with no resource at all (empty, or only comments): `no_resources`.
    Empty,
    /// Well-formed, but breaks a rule beyond the schema (a cycle, an unknown dependency, a
    /// bad quantity): `invalid_resource`.
    Invalid,
}

/// A document (or file) that is not a valid DuckMesh resource, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    /// The file (or other source) name.
    pub source_name: String,
    /// 1-based document number within the file; 0 for the file as a whole.
    pub document: usize,
    /// `Kind/name` of the document, when it got that far.
    pub resource: Option<String>,
    /// What kind of mistake.
    pub kind: YamlErrorKind,
    /// Every problem, at least one.
    pub problems: Vec<Problem>,
}

impl fmt::Display for YamlError {
    /// One line per problem, each with the whole location, so that every line can be read
    /// (and grepped) on its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.location())?;
            if !problem.path.is_empty() {
                write!(f, ": {}", problem.path)?;
            }
            write!(f, ": {}", problem.message)?;
        }
        Ok(())
    }
}

impl YamlError {
    /// A problem with one document.
    pub fn new(
        source_name: &str,
        document: usize,
        resource: Option<String>,
        kind: YamlErrorKind,
        problems: Vec<Problem>,
    ) -> Self {
        Self { source_name: source_name.to_owned(), document, resource, kind, problems }
    }

    /// `file: document 3 (Job/nightly)`, `file: document 3` or `file`.
    pub fn location(&self) -> String {
        match (self.document, &self.resource) {
            (0, _) => self.source_name.clone(),
            (n, Some(resource)) => format!("{}: document {n} ({resource})", self.source_name),
            (n, None) => format!("{}: document {n}", self.source_name),
        }
    }

    /// The stable code used in logs.
    pub fn error_code(&self) -> &'static str {
        match self.kind {
            YamlErrorKind::Schema => "invalid_yaml",
            YamlErrorKind::Empty => "no_resources",
            YamlErrorKind::Invalid => "invalid_resource",
        }
    }
}

/// One resource of a file and where it is.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based document number within the file.
    pub index: usize,
    /// The resource.
    pub resource: Resource,
}

/// Parses every document of `text` and returns the first error. See [`read_documents`].
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Resource>, YamlError> {
    match read_documents(text, source_name) {
        Ok(documents) => Ok(documents.into_iter().map(|d| d.resource).collect()),
        Err(mut errors) => Err(errors.remove(0)),
    }
}

/// Parses every document of `text`, checking each against its CRD's schema as the API server
/// does with strict field validation, and returns either every resource or every document's
/// problems (never a part). Empty documents (`---` alone) are skipped, but a file with no
/// resource at all is an error. A document of another API group or an unknown kind is an
/// error. Resources without a namespace get `default`, as `kubectl apply` would.
///
/// Only the schema is checked here; [`Resource::validate`] checks the rules beyond it.
pub fn read_documents(text: &str, source_name: &str) -> Result<Vec<Document>, Vec<YamlError>> {
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for (position, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = position + 1;
        let value = match serde_yaml_ng::Value::deserialize(document) {
            Ok(value) => value,
            Err(error) => {
                errors.push(YamlError::new(
                    source_name,
                    index,
                    None,
                    YamlErrorKind::Schema,
                    vec![Problem::new("", error.to_string())],
                ));
                // The YAML stream cannot be followed past a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match read_document(value) {
            Ok(resource) => documents.push(Document { index, resource }),
            Err((resource, problems)) => {
                errors.push(YamlError::new(source_name, index, resource, YamlErrorKind::Schema, problems))
            }
        }
    }
    if documents.is_empty() && errors.is_empty() {
        errors.push(YamlError::new(
            source_name,
            0,
            None,
            YamlErrorKind::Empty,
            vec![Problem::new(
                "",
                "holds no resources (the file is empty or only has comments); expected Dataset, Job or Task documents",
            )],
        ));
    }
    if errors.is_empty() { Ok(documents) } else { Err(errors) }
}

type DocumentProblems = (Option<String>, Vec<Problem>);

fn read_document(yaml: serde_yaml_ng::Value) -> Result<Resource, DocumentProblems> {
    let value: Value = serde_json::to_value(&yaml)
        .map_err(|e| (None, vec![Problem::new("", format!("not a JSON-like document: {e}"))]))?;
    let Value::Object(object) = &value else {
        return Err((
            None,
            vec![Problem::new("", format!("expected a mapping (a resource), got {}", json_type(&value)))],
        ));
    };
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default();
    let expected = format!("{GROUP}/{VERSION}");
    if api_version != expected {
        return Err((None, vec![Problem::new("apiVersion", format!("{api_version:?} is not {expected:?}"))]));
    }
    let Some(schema) = schema_of(kind) else {
        return Err((
            None,
            vec![Problem::new("kind", format!("unknown kind {kind:?}; expected Dataset, Job or Task"))],
        ));
    };
    let described = Some(format!("{kind}/{}", if name.is_empty() { "?" } else { name }));
    let mut problems = Vec::new();
    if name.is_empty() {
        problems.push(Problem::new("metadata.name", format!("a {kind} needs a name")));
    }
    check_metadata(object.get("metadata"), &mut problems);
    let mut path = Vec::new();
    unknown_fields(&schema.raw, &value, true, &mut path, &mut problems);
    for error in schema.validator.iter_errors(&value) {
        problems.push(schema_problem(&error, &value));
    }
    if !problems.is_empty() {
        return Err((described, problems));
    }
    let typed = |error: serde_json::Error| (described.clone(), vec![Problem::new("", error.to_string())]);
    let mut resource = match kind {
        "Dataset" => Resource::Dataset(serde_json::from_value(value).map_err(typed)?),
        "Job" => Resource::Job(serde_json::from_value(value).map_err(typed)?),
        _ => Resource::Task(serde_json::from_value(value).map_err(typed)?),
    };
    let metadata = match &mut resource {
        Resource::Dataset(d) => &mut d.metadata,
        Resource::Job(j) => &mut j.metadata,
        Resource::Task(t) => &mut t.metadata,
    };
    metadata.namespace.get_or_insert_with(|| "default".to_owned());
    Ok(resource)
}

/// A kind's schema: the raw structural schema (for unknown fields) and a compiled validator.
struct KindSchema {
    raw: Value,
    validator: jsonschema::Validator,
}

fn compile(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Option<KindSchema> {
    let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    let raw = serde_json::to_value(schema).ok()?;
    let validator = jsonschema::validator_for(&raw).ok()?;
    Some(KindSchema { raw, validator })
}

static SCHEMAS: LazyLock<[Option<KindSchema>; 3]> =
    LazyLock::new(|| [compile(Dataset::crd()), compile(Job::crd()), compile(Task::crd())]);

fn schema_of(kind: &str) -> Option<&'static KindSchema> {
    let index = match kind {
        "Dataset" => 0,
        "Job" => 1,
        "Task" => 2,
        _ => return None,
    };
    SCHEMAS[index].as_ref()
}

/// The fields of `ObjectMeta` a user may write (what the API server accepts in `metadata`).
const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "generation",
    "generateName",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "managedFields",
    "ownerReferences",
    "selfLink",
];

fn check_metadata(metadata: Option<&Value>, problems: &mut Vec<Problem>) {
    let Some(metadata) = metadata else { return };
    let Value::Object(fields) = metadata else {
        problems.push(Problem::new("metadata", format!("expected a mapping, got {}", json_type(metadata))));
        return;
    };
    for (key, value) in fields {
        let path = format!("metadata.{key}");
        match key.as_str() {
            "name" | "namespace" | "uid" | "generateName" | "resourceVersion" if !value.is_string() => {
                problems.push(Problem::new(path, format!("expected a string, got {}", json_type(value))));
            }
            "labels" | "annotations" => match value {
                Value::Object(entries) => {
                    for (entry, text) in entries.iter().filter(|(_, v)| !v.is_string()) {
                        problems.push(Problem::new(
                            format!("{path}.{entry}"),
                            format!("expected a string (quote it), got {}", json_type(text)),
                        ));
                    }
                }
                Value::Null => {}
                other => problems.push(Problem::new(path, format!("expected a mapping, got {}", json_type(other)))),
            },
            known if METADATA_FIELDS.contains(&known) => {}
            unknown => problems.push(unknown_field("metadata", unknown, METADATA_FIELDS.iter().copied())),
        }
    }
}

/// Fields the schema does not declare, anywhere in `value` (what the API server prunes, and
/// what strict field validation refuses).
fn unknown_fields(schema: &Value, value: &Value, root: bool, path: &mut Vec<String>, problems: &mut Vec<Problem>) {
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in fields {
                    match properties.get(key) {
                        Some(child_schema) => {
                            path.push(format!(".{key}"));
                            unknown_fields(child_schema, child, false, path, problems);
                            path.pop();
                        }
                        // The envelope; metadata is checked against ObjectMeta.
                        None if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {}
                        None => {
                            let mut expected: Vec<&str> = properties.keys().map(String::as_str).collect();
                            if root {
                                expected.splice(0..0, ["apiVersion", "kind", "metadata"]);
                            }
                            problems.push(unknown_field(&join_path(path), key, expected.into_iter()));
                        }
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (key, child) in fields {
                    path.push(format!(".{key}"));
                    unknown_fields(additional, child, false, path, problems);
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    unknown_fields(item_schema, item, false, path, problems);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn join_path(parts: &[String]) -> String {
    parts.concat().trim_start_matches('.').to_owned()
}

fn unknown_field<'a>(path: &str, field: &str, expected: impl Iterator<Item = &'a str>) -> Problem {
    let expected: Vec<&str> = expected.collect();
    let suggestion = expected
        .iter()
        .filter(|candidate| candidate.eq_ignore_ascii_case(field) || edit_distance(candidate, field) <= 2)
        .min_by_key(|candidate| edit_distance(candidate, field))
        .map(|candidate| format!(" (did you mean {candidate:?}?)"))
        .unwrap_or_default();
    let listed = expected.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
    Problem::new(path, format!("unknown field {field:?}{suggestion}, expected one of {listed}"))
}

/// Levenshtein distance, for "did you mean" (field names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value as a message quotes it: JSON, cut short.
fn quoted(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 { format!("{}…", text.chars().take(60).collect::<String>()) } else { text }
}

/// A JSON pointer into `value` (`/spec/tasks/0/name`) as a Kubernetes field path
/// (`spec.tasks[0].name`).
fn field_path(pointer: &str, value: &Value) -> String {
    let mut path = String::new();
    let mut node = Some(value);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                node = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                node = other.and_then(|n| n.get(&segment));
            }
        }
    }
    path
}

fn schema_problem(error: &jsonschema::ValidationError<'_>, document: &Value) -> Problem {
    use jsonschema::error::ValidationErrorKind as Kind;
    let instance = error.instance();
    let path = field_path(error.instance_path().as_str(), document);
    let got = quoted(instance);
    let message = match error.kind() {
        Kind::Type { kind } => format!("invalid value {got}: expected {}", expected_type(kind)),
        Kind::Minimum { limit } => format!("invalid value {got}: must be at least {}", number(limit)),
        Kind::Maximum { limit } => format!("invalid value {got}: must be at most {}", number(limit)),
        Kind::ExclusiveMinimum { limit } => format!("invalid value {got}: must be more than {}", number(limit)),
        Kind::ExclusiveMaximum { limit } => format!("invalid value {got}: must be less than {}", number(limit)),
        Kind::MinLength { limit } => format!("invalid value {got}: must be at least {limit} character(s) long"),
        Kind::MaxLength { limit } => format!("invalid value {got}: must be at most {limit} characters long"),
        Kind::MinItems { limit } => format!("must have at least {limit} item(s)"),
        Kind::MaxItems { limit } => format!("must have at most {limit} items"),
        Kind::Pattern { pattern } => format!("invalid value {got}: must match {pattern}"),
        Kind::Enum { options } => {
            let options = match options.as_ref() {
                Value::Array(items) => items.iter().map(quoted).collect::<Vec<_>>().join(", "),
                other => quoted(other),
            };
            format!("invalid value {got}: expected one of {options}")
        }
        Kind::Required { property } => {
            let field = property.as_str().map(str::to_owned).unwrap_or_else(|| property.to_string());
            format!("missing required field {field:?}")
        }
        _ => error.to_string(),
    };
    Problem::new(path, message)
}

/// A schema bound as people write it: `1048576`, not schemars' `1048576.0`.
fn number(limit: &Value) -> String {
    match limit.as_f64() {
        Some(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => format!("{}", value as i64),
        _ => limit.to_string(),
    }
}

fn expected_type(kind: &jsonschema::error::TypeKind) -> String {
    use jsonschema::error::TypeKind;
    let name = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "integer" => "an integer".to_owned(),
        "number" => "a number".to_owned(),
        "string" => "a string".to_owned(),
        "boolean" => "a boolean".to_owned(),
        "array" => "a list".to_owned(),
        "object" => "a mapping".to_owned(),
        other => other.to_owned(),
    };
    match kind {
        TypeKind::Single(t) => name(t),
        TypeKind::Multiple(types) => types.iter().map(|t| name(&t)).collect::<Vec<_>>().join(" or "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("dependOn", "dependsOn"), 1);
        assert_eq!(edit_distance("inputz", "inputs"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn pointers_become_field_paths() {
        let document = serde_json::json!({"spec": {"tasks": [{"name": "a"}, {"output": {"dataset": "d"}}]}});
        assert_eq!(field_path("/spec/tasks/1/output/dataset", &document), "spec.tasks[1].output.dataset");
        assert_eq!(field_path("", &document), "");
    }
}
