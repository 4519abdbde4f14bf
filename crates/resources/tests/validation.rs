//! Validation and YAML reading as tables: what users get told for each kind of mistake.

use duckmesh_resources::*;
use kube::CustomResourceExt;

fn job(yaml: &str) -> Job {
    match parse_documents(yaml, "test.yaml").expect("parses").remove(0) {
        Resource::Job(job) => job,
        other => panic!("not a job: {}", other.describe()),
    }
}

const HEADER: &str = "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: etl}\nspec:\n  tasks:\n";

#[test]
fn job_validation_table() {
    let cases: &[(&str, &str)] = &[
        ("    - {name: a, dependsOn: [a], sql: 'SELECT 1', output: {dataset: d}}\n", "depends on itself"),
        (
            "    - {name: a, dependsOn: [b], sql: 'SELECT 1', output: {dataset: d}}\n    - {name: b, dependsOn: [a], sql: 'SELECT 1', output: {dataset: d}}\n",
            "cycle",
        ),
        (
            "    - {name: a, dependsOn: [ghost], sql: 'SELECT 1', output: {dataset: d}}\n",
            "\"ghost\", which is not a task",
        ),
        (
            "    - {name: a, sql: 'SELECT 1', output: {dataset: d}}\n    - {name: a, sql: 'SELECT 1', output: {dataset: d}}\n",
            "used more than once",
        ),
        ("    - {name: a, output: {dataset: d}}\n", "needs a query"),
        ("    - {name: a, sql: 'SELECT 1'}\n", "needs an output dataset"),
        ("    - {name: a, kind: gc, sql: 'SELECT 1'}\n", "takes no sql"),
        ("    - {name: Bad_Name, sql: 'SELECT 1', output: {dataset: d}}\n", "lower-case letters"),
        (
            "    - {name: a, sql: 'SELECT 1', output: {dataset: d}, resources: {memory: lots}}\n",
            "not a memory quantity",
        ),
        ("    - {name: a, sql: 'SELECT 1', output: {dataset: d}, resources: {memory: 1Mi}}\n", "at least 64Mi"),
        ("    - {name: a, sql: 'SELECT 1', output: {dataset: d}, resources: {cpu: fast}}\n", "not a CPU quantity"),
        ("    - {name: a, sql: 'SELECT 1', output: {dataset: d}, maxAttempts: 0}\n", "between 1 and 100"),
        (
            "    - {name: a, sql: 'SELECT 1', output: {dataset: d}, inputs: [{dataset: x}, {dataset: x}]}\n",
            "listed twice",
        ),
    ];
    for (tasks, expected) in cases {
        let job = job(&format!("{HEADER}{tasks}"));
        let errors = validate_job("etl", &job.spec).expect_err(expected);
        let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        assert!(text.contains(expected), "expected {expected:?} in {text:?}");
        assert!(errors.iter().all(|e| e.error_code() == "invalid_resource"));
    }
    let good = job(&format!(
        "{HEADER}    - {{name: load, sql: 'SELECT 1', output: {{dataset: d}}}}\n    - {{name: agg, dependsOn: [load], sql: 'SELECT 2', output: {{dataset: e}}}}\n"
    ));
    assert_eq!(validate_job("etl", &good.spec).expect("valid"), vec!["load", "agg"]);
    assert!(validate_job("ETL", &good.spec).is_err(), "resource names are DNS labels");
}

#[test]
fn dataset_and_task_validation() {
    let dataset = |spec: &str| -> DatasetSpec {
        let yaml = format!("apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {{name: d}}\nspec: {spec}\n");
        match parse_documents(&yaml, "d.yaml").expect("parses").remove(0) {
            Resource::Dataset(d) => d.spec,
            _ => unreachable!(),
        }
    };
    assert!(validate_dataset("d", &dataset("{}")).is_ok());
    let schema = "schema: [{name: id, type: BIGINT}, {name: day, type: DATE}]";
    assert!(
        validate_dataset("d", &dataset(&format!("{{{schema}, partitionBy: [day], ingest: {{dedupeKey: id}}}}")))
            .is_ok()
    );
    let errors =
        validate_dataset("d", &dataset(&format!("{{{schema}, partitionBy: [month], ingest: {{dedupeKey: uuid}}}}")))
            .expect_err("unknown columns");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.partitionBy[0]", "spec.ingest.dedupeKey"]);
    let duplicate = validate_dataset("d", &dataset("{schema: [{name: id, type: BIGINT}, {name: id, type: INT}]}"));
    assert!(duplicate.expect_err("duplicate").iter().any(|e| e.message.contains("declared twice")));
    assert_eq!(dataset("{}").tenant, "default", "tenant defaults");

    let task = |spec: &str| -> Task {
        let yaml = format!("apiVersion: duckmesh.io/v1alpha1\nkind: Task\nmetadata: {{name: t}}\nspec: {spec}\n");
        match parse_documents(&yaml, "t.yaml").expect("parses").remove(0) {
            Resource::Task(t) => t,
            _ => unreachable!(),
        }
    };
    let standalone = task("{template: {name: t, sql: 'SELECT 1', output: {dataset: d}}}");
    assert!(validate_task("t", &standalone.spec).is_ok());
    let dependent = task("{template: {name: t, dependsOn: [x], sql: 'SELECT 1', output: {dataset: d}}}");
    assert!(validate_task("t", &dependent.spec).expect_err("standalone deps")[0].message.contains("put them in a Job"));
}

#[test]
fn yaml_reading_table() {
    let ok = "---\napiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: a}\nspec: {}\n---\n---\n\
              apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: b, namespace: team}\nspec: {}\n";
    let resources = parse_documents(ok, "ok.yaml").expect("parses");
    let namespaces: Vec<Option<String>> = resources
        .iter()
        .map(|r| match r {
            Resource::Dataset(d) => d.metadata.namespace.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(namespaces, [Some("default".to_owned()), Some("team".to_owned())], "empty documents skipped");

    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: a}\n",
            "apiVersion \"batch/v1\" is not \"duckmesh.io/v1alpha1\"",
        ),
        ("apiVersion: duckmesh.io/v1alpha1\nkind: Pipeline\nmetadata: {name: a}\n", "unknown kind \"Pipeline\""),
        ("apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {}\nspec: {}\n", "has no metadata.name"),
        ("apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: a}\nspec: {tasks: 3}\n", "invalid type"),
        ("apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: a}\nspec: [\n", "document 1"),
    ];
    for (yaml, expected) in cases {
        let error = parse_documents(yaml, "bad.yaml").expect_err(expected);
        let text = error.to_string();
        assert!(text.starts_with("bad.yaml, document 1:"), "{text}");
        assert!(text.contains(expected), "expected {expected:?} in {text:?}");
        assert_eq!(error.error_code(), "invalid_yaml");
    }
    let second = "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: a}\nspec: {}\n---\nkind: Nope\n";
    assert_eq!(parse_documents(second, "f.yaml").expect_err("second").document, 2);
}

/// The API server only accepts structural schemas: every node states its type (or opts out
/// explicitly), and there are no `$ref`s.
#[test]
fn generated_schemas_are_structural_and_documented() {
    fn walk(path: &str, node: &serde_json::Value, problems: &mut Vec<String>) {
        let Some(object) = node.as_object() else { return };
        if object.contains_key("$ref") {
            problems.push(format!("{path}: $ref"));
        }
        let typed = object.contains_key("type")
            || object.contains_key("x-kubernetes-int-or-string")
            || object.contains_key("x-kubernetes-preserve-unknown-fields");
        if !typed {
            problems.push(format!("{path}: no type"));
        }
        if !path.ends_with(".spec")
            && !path.ends_with(".status")
            && path.matches('.').count() > 1
            && !object.contains_key("description")
        {
            problems.push(format!("{path}: no description (kubectl explain shows nothing)"));
        }
        if let Some(properties) = object.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in properties {
                walk(&format!("{path}.{name}"), child, problems);
            }
        }
        if let Some(items) = object.get("items") {
            walk(&format!("{path}[]"), items, problems);
        }
    }
    for crd in [Dataset::crd(), Job::crd(), Task::crd()] {
        let schema = crd.spec.versions[0].schema.clone().and_then(|s| s.open_api_v3_schema).expect("schema");
        let json = serde_json::to_value(schema).expect("json");
        let mut problems = Vec::new();
        assert!(
            json["properties"]["spec"]["properties"].as_object().is_some_and(|p| !p.is_empty()),
            "spec has properties"
        );
        assert!(
            json["properties"]["status"]["properties"].as_object().is_some_and(|p| !p.is_empty()),
            "status has properties"
        );
        for part in ["spec", "status"] {
            walk(&format!("{}.{part}", crd.spec.names.kind), &json["properties"][part], &mut problems);
        }
        let problems: Vec<&String> = problems.iter().filter(|p| !p.contains("[]: no description")).collect();
        assert!(problems.is_empty(), "{}: {problems:#?}", crd.spec.names.kind);
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["duckmesh".to_owned()][..]));
        assert!(crd.spec.versions[0].subresources.as_ref().is_some_and(|s| s.status.is_some()), "status subresource");
        assert!(crd.spec.versions[0].additional_printer_columns.as_ref().is_some_and(|c| c.len() >= 4));
    }
}

/// The API server knows only `int32` and `int64` for integers and warns about any other format
/// on every apply; schemars' `uint32`/`uint64` must not reach the CRDs. Unsigned fields keep a
/// `minimum` of at least 0.
#[test]
fn integer_formats_are_ones_the_api_server_knows() {
    fn walk(path: &str, value: &serde_json::Value, formats: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(object) => {
                if object.get("type").and_then(|t| t.as_str()) == Some("integer") {
                    let format = object.get("format").and_then(|f| f.as_str()).unwrap_or("").to_owned();
                    formats.push((path.to_owned(), format));
                }
                for (key, child) in object {
                    walk(&format!("{path}.{key}"), child, formats);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), child, formats);
                }
            }
            _ => {}
        }
    }
    let mut formats = Vec::new();
    for crd in [Dataset::crd(), Job::crd(), Task::crd()] {
        let schema = crd.spec.versions[0].schema.clone().and_then(|s| s.open_api_v3_schema).expect("schema");
        let json = serde_json::to_value(schema).expect("json");
        walk(&crd.spec.names.kind, &json, &mut formats);
    }
    assert!(formats.len() > 20, "integers found: {formats:?}");
    let unknown: Vec<_> = formats.iter().filter(|(_, f)| !f.is_empty() && f != "int32" && f != "int64").collect();
    assert!(unknown.is_empty(), "formats the API server does not know: {unknown:#?}");
    let yaml = duckmesh_resources::crds_yaml().expect("yaml");
    assert!(!yaml.contains("format: uint"), "the generated YAML still names an unsigned format");
    // A counter that was a u32 is still non-negative.
    let job = serde_json::to_value(Job::crd()).expect("json");
    let total = &job["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["counts"]
        ["properties"]["total"];
    assert_eq!((total["format"].as_str(), total["minimum"].as_f64()), (Some("int64"), Some(0.0)), "{total}");
}
