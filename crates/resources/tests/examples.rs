//! Every file in `examples/` (and its subdirectories) is something a user can `kubectl apply` as it is: each document
//! parses as one of our kinds, passes the same validation the operator and `duckmesh dev`
//! apply, is accepted by the generated CRD's OpenAPI schema (checked with a real JSON-schema
//! validator), and refers only to datasets declared alongside it.

use duckmesh_resources::{Resource, parse_documents, validate_dataset, validate_job, validate_task};
use kube::CustomResourceExt;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn examples() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, files: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("examples/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, root, files);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("readable");
                let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
                files.push((name, text));
            }
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files = Vec::new();
    walk(&dir, &dir, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no examples found in {}", dir.display());
    // Subdirectories are walked too (examples/kubernetes/…).
    assert!(files.iter().any(|(name, _)| name.contains('/')), "no example in a subdirectory: {files:?}");
    files
}

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> jsonschema::Validator {
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
    let json = serde_json::to_value(schema).expect("schema serialises");
    jsonschema::validator_for(&json).expect("the CRD schema is a valid JSON schema")
}

#[test]
fn every_example_is_valid_for_kubectl_apply_and_duckmesh_dev() {
    let dataset_schema = schema_of(duckmesh_resources::Dataset::crd());
    let job_schema = schema_of(duckmesh_resources::Job::crd());
    let task_schema = schema_of(duckmesh_resources::Task::crd());
    for (file, text) in examples() {
        let resources = parse_documents(&text, &file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!resources.is_empty(), "{file} holds no resources");
        // Schema check on the raw documents, exactly as the API server receives them.
        for (index, document) in text.split("\n---").enumerate() {
            let value: serde_json::Value = serde_yaml_ng::from_str(document).expect("yaml");
            if value.is_null() {
                continue;
            }
            let validator = match value["kind"].as_str() {
                Some("Dataset") => &dataset_schema,
                Some("Job") => &job_schema,
                Some("Task") => &task_schema,
                other => panic!("{file} document {}: unexpected kind {other:?}", index + 1),
            };
            let problems: Vec<String> =
                validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
            assert!(problems.is_empty(), "{file} document {}: {problems:?}", index + 1);
        }
        let declared: HashSet<String> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Dataset(d) => d.metadata.name.clone(),
                _ => None,
            })
            .collect();
        for resource in &resources {
            let referenced: Vec<String> = match resource {
                Resource::Dataset(d) => {
                    validate_dataset(d.metadata.name.as_deref().unwrap_or_default(), &d.spec)
                        .unwrap_or_else(|e| panic!("{file}: {e:?}"));
                    vec![]
                }
                Resource::Job(j) => {
                    validate_job(j.metadata.name.as_deref().unwrap_or_default(), &j.spec)
                        .unwrap_or_else(|e| panic!("{file}: {e:?}"));
                    j.spec
                        .tasks
                        .iter()
                        .flat_map(|t| {
                            t.inputs.iter().map(|i| i.dataset.clone()).chain(t.output.iter().map(|o| o.dataset.clone()))
                        })
                        .collect()
                }
                Resource::Task(t) => {
                    validate_task(t.metadata.name.as_deref().unwrap_or_default(), &t.spec)
                        .unwrap_or_else(|e| panic!("{file}: {e:?}"));
                    t.spec.template.inputs.iter().map(|i| i.dataset.clone()).collect()
                }
            };
            for dataset in referenced {
                assert!(
                    declared.contains(&dataset),
                    "{file}: {} uses undeclared dataset {dataset}",
                    resource.describe()
                );
            }
        }
    }
}

#[test]
fn the_schema_rejects_what_the_api_server_would() {
    let job_schema = schema_of(duckmesh_resources::Job::crd());
    let bad = serde_json::json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Job", "metadata": {"name": "x"},
        "spec": {"tasks": [{"name": "Bad_Name", "maxAttempts": 0, "sql": "SELECT 1", "output": {"dataset": "d", "mode": "upsert"}}]}
    });
    let problems: Vec<String> = job_schema.iter_errors(&bad).map(|e| e.instance_path().to_string()).collect();
    for expected in ["/spec/tasks/0/name", "/spec/tasks/0/maxAttempts", "/spec/tasks/0/output/mode"] {
        assert!(problems.iter().any(|p| p == expected), "expected a problem at {expected}: {problems:?}");
    }
    let empty = serde_json::json!({"apiVersion": "duckmesh.io/v1alpha1", "kind": "Job", "metadata": {"name": "x"}, "spec": {"tasks": []}});
    assert!(!job_schema.is_valid(&empty), "a job needs at least one task");
}
