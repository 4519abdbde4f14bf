//! Validation and YAML reading as tables: what users get told for each kind of mistake.

use duckmesh_resources::*;
use kube::CustomResourceExt;

/// A Job straight from serde, bypassing the reader's schema check: these rules are the ones
/// the operator applies to objects the API server already accepted.
fn job(yaml: &str) -> Job {
    serde_yaml_ng::from_str(yaml).expect("a Job")
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
    let scheduled = "{compaction: {enabled: true, schedule: '*/10 * * * *'}, retention: {gcSchedule: '0 2 * * *'}, \
                     integrity: {schedule: '0 5 * * 1', verifyHashes: true}}";
    assert!(validate_dataset("d", &dataset(scheduled)).is_ok());
    let errors = validate_dataset(
        "d",
        &dataset("{compaction: {enabled: true, schedule: 'hourly'}, retention: {gcSchedule: '99 * * * *'}}"),
    )
    .expect_err("bad cron");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.compaction.schedule", "spec.retention.gcSchedule"]);
    assert!(errors[0].message.contains("cron expression"), "{}", errors[0].message);

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
            "bad.yaml: document 1: apiVersion: \"batch/v1\" is not \"duckmesh.io/v1alpha1\"",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Pipeline\nmetadata: {name: a}\n",
            "bad.yaml: document 1: kind: unknown kind \"Pipeline\"",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {}\nspec: {}\n",
            "bad.yaml: document 1 (Dataset/?): metadata.name: a Dataset needs a name",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: a}\nspec: {tasks: 3}\n",
            "bad.yaml: document 1 (Job/a): spec.tasks: invalid value 3: expected a list",
        ),
        ("apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: a}\nspec: [\n", "bad.yaml: document 1: "),
    ];
    for (yaml, expected) in cases {
        let error = parse_documents(yaml, "bad.yaml").expect_err(expected);
        let text = error.to_string();
        assert!(text.starts_with(expected), "expected {expected:?} in {text:?}");
        assert_eq!(error.error_code(), "invalid_yaml");
    }
    let second = "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: a}\nspec: {}\n---\nkind: Nope\n";
    assert_eq!(parse_documents(second, "f.yaml").expect_err("second").document, 2);
}

fn problems_of(yaml: &str) -> Vec<String> {
    match read_documents(yaml, "x.yaml") {
        Ok(documents) => panic!("accepted: {documents:?}"),
        Err(errors) => {
            errors.iter().flat_map(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>()).collect()
        }
    }
}

/// Unknown fields are errors at every level, as `kubectl apply --validate=strict` makes them:
/// each names the file, the document (index and Kind/name), the path and the field, lists
/// what is expected and suggests the likely intended field.
#[test]
fn unknown_fields_are_errors_at_every_level() {
    let dataset = "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: d}\nspec: {}\n";
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: nightly}\nspec:\n  tasks:\n    - {name: a, sql: 'SELECT 1', output: {dataset: d}}\n    - {name: b, dependOn: [a], sql: 'SELECT 1', output: {dataset: d}}\n",
            "x.yaml: document 2 (Job/nightly): spec.tasks[1]: unknown field \"dependOn\" (did you mean \"dependsOn\"?), expected one of `compact`, `dependsOn`, ",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: j}\nspec:\n  maxParalel: 2\n  tasks: [{name: a, sql: 'SELECT 1', output: {dataset: d}}]\n",
            "x.yaml: document 2 (Job/j): spec: unknown field \"maxParalel\" (did you mean \"maxParallel\"?)",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: j}\nspec:\n  tasks: [{name: a, sql: 'SELECT 1', inputz: [{dataset: d}], output: {dataset: d}}]\n",
            "x.yaml: document 2 (Job/j): spec.tasks[0]: unknown field \"inputz\" (did you mean \"inputs\"?)",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: j}\nspec:\n  tasks: [{name: a, sql: 'SELECT 1', inputs: [{dataset: d, snapshots: 3}], output: {dataset: d, colour: red}}]\n",
            "x.yaml: document 2 (Job/j): spec.tasks[0].inputs[0]: unknown field \"snapshots\" (did you mean \"snapshot\"?)",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: j}\nspec:\n  tasks: [{name: a, sql: 'SELECT 1', output: {dataset: d, colour: red}, resources: {memroy: 1Gi}}]\n",
            "x.yaml: document 2 (Job/j): spec.tasks[0].output: unknown field \"colour\", expected one of `dataset`, `mode`",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: j}\nspec:\n  tasks: [{name: a, sql: 'SELECT 1', output: {dataset: d}, resources: {memroy: 1Gi}}]\n",
            "x.yaml: document 2 (Job/j): spec.tasks[0].resources: unknown field \"memroy\" (did you mean \"memory\"?)",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: e}\nspec: {retention: {keepSnapshot: 3}, ingest: {dedupeKey: id, rateLimit: 5}}\n",
            "x.yaml: document 2 (Dataset/e): spec.retention: unknown field \"keepSnapshot\" (did you mean \"keepSnapshots\"?)",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: e}\nspec: {schema: [{name: id, typ: BIGINT}]}\n",
            "x.yaml: document 2 (Dataset/e): spec.schema[0]: unknown field \"typ\" (did you mean \"type\"?)",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Task\nmetadata: {name: t}\nspec: {template: {name: t, sql: 'SELECT 1', output: {dataset: d}, timeout: 5}}\n",
            "x.yaml: document 2 (Task/t): spec.template: unknown field \"timeout\"",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: e}\nspecs: {}\n",
            "x.yaml: document 2 (Dataset/e): unknown field \"specs\" (did you mean \"spec\"?), expected one of `apiVersion`, `kind`, `metadata`, ",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: e, label: {a: b}}\nspec: {}\n",
            "x.yaml: document 2 (Dataset/e): metadata: unknown field \"label\" (did you mean \"labels\"?)",
        ),
    ];
    for (document, expected) in cases {
        let problems = problems_of(&format!("{dataset}---\n{document}"));
        assert!(problems.iter().any(|p| p.starts_with(expected)), "expected {expected:?} in {problems:#?}");
    }
    // Every unknown field is reported, not just the first.
    let problems = problems_of(
        "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: j}\nspec:\n  colour: red\n  tasks: [{name: a, sql: 'SELECT 1', output: {dataset: d, colour: red}}]\n",
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
    let error = parse_documents(&format!("{dataset}---\n{dataset}---\nkind: Dataset\napiVersion: duckmesh.io/v1alpha1\nmetadata: {{name: x}}\nspec: {{bogus: 1}}\n"), "x.yaml")
        .expect_err("unknown field");
    assert_eq!((error.document, error.resource.as_deref(), error.error_code()), (3, Some("Dataset/x"), "invalid_yaml"));
}

/// Bad values name the field they are in, with the value and what was expected.
#[test]
fn bad_values_name_their_path() {
    let job = |task: &str| {
        format!(
            "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {{name: j}}\nspec:\n  tasks:\n    - {{name: a, sql: 'SELECT 1', output: {{dataset: d}}}}\n    - {task}\n"
        )
    };
    let cases: &[(String, &str)] = &[
        (
            job("{name: b, sql: 'SELECT 1', output: {dataset: d}, maxAttempts: -5}"),
            "spec.tasks[1].maxAttempts: invalid value -5: must be at least 1",
        ),
        (
            job("{name: b, sql: 'SELECT 1', output: {dataset: d}, timeoutSeconds: soon}"),
            "spec.tasks[1].timeoutSeconds: invalid value \"soon\": expected an integer",
        ),
        (
            job("{name: b, sql: 'SELECT 1', output: {dataset: d, mode: upsert}}"),
            "spec.tasks[1].output.mode: invalid value \"upsert\": expected one of \"append\", \"overwrite\"",
        ),
        (
            job("{name: b, sql: 'SELECT 1', output: {dataset: d}, targetFileSizeBytes: 5}"),
            "spec.tasks[1].targetFileSizeBytes: invalid value 5: must be at least 1048576",
        ),
        (
            job("{name: b, sql: 'SELECT 1', output: {dataset: d}, targetFileSizeBytes: 99999999999999}"),
            "spec.tasks[1].targetFileSizeBytes: invalid value 99999999999999: must be at most 17179869184",
        ),
        (
            job("{name: B_b, sql: 'SELECT 1', output: {dataset: d}}"),
            "spec.tasks[1].name: invalid value \"B_b\": must match",
        ),
        (job("{sql: 'SELECT 1', output: {dataset: d}}"), "spec.tasks[1]: missing required field \"name\""),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: d}\nspec: {targetFileSizeBytes: 5}\n"
                .to_owned(),
            "spec.targetFileSizeBytes: invalid value 5: must be at least 1048576",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: d, labels: {tier: 1}}\nspec: {}\n"
                .to_owned(),
            "metadata.labels.tier: expected a string (quote it), got an integer",
        ),
    ];
    for (yaml, expected) in cases {
        let problems = problems_of(yaml);
        assert!(problems.iter().any(|p| p.contains(expected)), "expected {expected:?} in {problems:#?}");
        assert!(problems.iter().all(|p| p.starts_with("x.yaml: document 1 (")), "{problems:#?}");
        // Bounds read as written (1048576), not as schemars' floats (1048576.0).
        assert!(problems.iter().all(|p| !p.contains(".0")), "{problems:#?}");
    }
    // The rule also holds for specs built in code (the operator's path).
    let mut spec = job_spec_with_file_size(5);
    assert!(
        validate_job("j", &spec).expect_err("too small")[0]
            .to_string()
            .contains("spec.tasks[0].targetFileSizeBytes: must be between 1048576 (1 MiB)")
    );
    spec.tasks[0].target_file_size_bytes = Some(MIN_TARGET_FILE_SIZE_BYTES);
    assert!(validate_job("j", &spec).is_ok());
    let dataset = DatasetSpec {
        target_file_size_bytes: Some(MAX_TARGET_FILE_SIZE_BYTES + 1),
        ..serde_json::from_str("{}").expect("empty spec")
    };
    assert_eq!(validate_dataset("d", &dataset).expect_err("too large")[0].field, "spec.targetFileSizeBytes");
}

fn job_spec_with_file_size(bytes: u64) -> JobSpec {
    let mut spec = job(&format!("{HEADER}    - {{name: a, sql: 'SELECT 1', output: {{dataset: d}}}}\n")).spec;
    spec.tasks[0].target_file_size_bytes = Some(bytes);
    spec
}

/// A file without resources is a mistake (a wrong path, an unsaved editor buffer), not an
/// empty pipeline.
#[test]
fn empty_and_comment_only_files_are_errors() {
    for text in ["", "\n\n", "# just a comment\n# another\n", "---\n# nothing\n---\n"] {
        let error = parse_documents(text, "empty.yaml").expect_err(text);
        assert_eq!(error.error_code(), "no_resources");
        assert_eq!(
            error.to_string(),
            "empty.yaml: holds no resources (the file is empty or only has comments); expected Dataset, Job or Task documents"
        );
    }
}

/// Problems beyond the schema carry the same location through [`Resource::validate`], and
/// the kind appears once (`Job/cyc`, never `Job/Job/cyc`).
#[test]
fn validation_problems_name_the_resource_once() {
    let yaml = "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: cyc}\nspec:\n  tasks:\n    - {name: a, dependsOn: [b], sql: 'SELECT 1', output: {dataset: d}}\n    - {name: b, dependsOn: [a], sql: 'SELECT 1', output: {dataset: d}}\n";
    let documents = read_documents(yaml, "cyc.yaml").expect("schema-valid");
    let errors = documents[0].resource.validate().expect_err("a cycle");
    assert!(errors.iter().any(|e| e.field == "spec.tasks" && e.message.contains("cycle")), "{errors:?}");
    assert_eq!(documents[0].resource.describe(), "Job/cyc");
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
        // Unknown fields are pruned (and refused by strict field validation) only where the
        // schema does not keep them: nothing under spec or status may.
        let text = json.to_string();
        assert!(
            !text.contains("x-kubernetes-preserve-unknown-fields"),
            "{}: keeps unknown fields",
            crd.spec.names.kind
        );
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

/// Maintenance kinds: the dataset is `output.dataset`, the settings are those of the task's
/// own kind, and the fields only `sql` tasks use are refused, each at its path.
#[test]
fn maintenance_task_validation_table() {
    let good = job(&format!(
        "{HEADER}    - {{name: load, sql: 'SELECT 1', output: {{dataset: d}}}}\n\
         \x20   - {{name: compact, kind: compact, dependsOn: [load], output: {{dataset: d}}, compact: {{minFiles: 2, targetFileSizeBytes: 1048576}}}}\n\
         \x20   - {{name: check, kind: integrity, dependsOn: [compact], output: {{dataset: d}}, integrity: {{verifyHashes: true}}}}\n\
         \x20   - {{name: gc, kind: gc, dependsOn: [check], output: {{dataset: d}}, gc: {{dryRun: true, graceSeconds: 0}}}}\n\
         \x20   - {{name: export, kind: export, dependsOn: [gc], output: {{dataset: d}}, export: {{prefix: d/today, format: csv, snapshot: 3}}}}\n\
         \x20   - {{name: defaults, kind: compact, output: {{dataset: d}}}}\n"
    ));
    assert_eq!(
        validate_job("etl", &good.spec).expect("valid"),
        vec!["load", "defaults", "compact", "check", "gc", "export"]
    );
    let gc = good.spec.tasks[3].gc.as_ref().expect("gc settings");
    assert_eq!((gc.dry_run, gc.grace_seconds), (Some(true), Some(0)));
    let export = good.spec.tasks[4].export.as_ref().expect("export settings");
    assert_eq!((export.prefix.as_str(), export.format, export.snapshot), ("d/today", Some(ExportFormat::Csv), Some(3)));

    let cases: &[(&str, &str, &str)] = &[
        ("{name: a, kind: compact}", "spec.tasks[0].output.dataset", "needs the dataset it works on"),
        ("{name: a, kind: gc, output: {dataset: d, mode: overwrite}}", "spec.tasks[0].output.mode", "never overwrites"),
        ("{name: a, kind: export, output: {dataset: d}}", "spec.tasks[0].export.prefix", "needs export.prefix"),
        (
            "{name: a, kind: export, output: {dataset: d}, export: {prefix: ../up}}",
            "spec.tasks[0].export.prefix",
            "'..'",
        ),
        (
            "{name: a, kind: export, output: {dataset: d}, export: {prefix: 'a//b'}}",
            "spec.tasks[0].export.prefix",
            "empty",
        ),
        (
            "{name: a, kind: export, output: {dataset: d}, export: {prefix: /}}",
            "spec.tasks[0].export.prefix",
            "must name a directory",
        ),
        (
            "{name: a, kind: export, output: {dataset: d}, export: {prefix: x, snapshot: 0}}",
            "spec.tasks[0].export.snapshot",
            "snapshot id",
        ),
        (
            "{name: a, kind: compact, output: {dataset: d}, compact: {minFiles: 1}}",
            "spec.tasks[0].compact.minFiles",
            "between 2",
        ),
        (
            "{name: a, kind: compact, output: {dataset: d}, compact: {targetFileSizeBytes: 10}}",
            "spec.tasks[0].compact.targetFileSizeBytes",
            "1 MiB",
        ),
        (
            "{name: a, kind: compact, output: {dataset: d}, targetFileSizeBytes: 1048576}",
            "spec.tasks[0].targetFileSizeBytes",
            "set compact.targetFileSizeBytes",
        ),
        ("{name: a, kind: integrity, output: {dataset: d}, sql: 'SELECT 1'}", "spec.tasks[0].sql", "takes no sql"),
        (
            "{name: a, kind: integrity, output: {dataset: d}, inputs: [{dataset: x}]}",
            "spec.tasks[0].inputs",
            "takes no inputs",
        ),
        (
            "{name: a, kind: gc, output: {dataset: d}, resources: {memory: 1Gi}}",
            "spec.tasks[0].resources",
            "takes no resources",
        ),
        (
            "{name: a, kind: integrity, output: {dataset: d}, compact: {minFiles: 2}}",
            "spec.tasks[0].compact",
            "only for tasks of kind compact",
        ),
        (
            "{name: a, kind: gc, output: {dataset: d}, gc: {graceSeconds: 31536001}}",
            "spec.tasks[0].gc.graceSeconds",
            "at most 31536000",
        ),
        (
            "{name: a, kind: integrity, output: {dataset: d}, gc: {dryRun: true}}",
            "spec.tasks[0].gc",
            "only for tasks of kind gc",
        ),
        (
            "{name: a, kind: gc, output: {dataset: d}, integrity: {verifyHashes: true}}",
            "spec.tasks[0].integrity",
            "only for tasks of kind integrity",
        ),
        (
            "{name: a, sql: 'SELECT 1', output: {dataset: d}, export: {prefix: x}}",
            "spec.tasks[0].export",
            "of kind sql",
        ),
    ];
    for (task, field, expected) in cases {
        let job = job(&format!("{HEADER}    - {task}\n"));
        let errors = validate_job("etl", &job.spec).expect_err(task);
        assert!(
            errors.iter().any(|error| error.field == *field && error.message.contains(expected)),
            "{task}: expected {field}: …{expected}… in {errors:?}"
        );
    }

    // A standalone Task is checked the same way, under spec.template.
    let task: Task = serde_yaml_ng::from_str(
        "apiVersion: duckmesh.io/v1alpha1\nkind: Task\nmetadata: {name: t}\nspec:\n  template: {name: t, kind: export, output: {dataset: d}}\n",
    )
    .expect("a Task");
    let errors = validate_task("t", &task.spec).expect_err("no prefix");
    assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["spec.template.export.prefix"]);
}
