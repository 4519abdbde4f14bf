//! The CRDs as users meet them: installed with `kubectl apply --server-side`, Established,
//! explained, every example accepted by the API server, and listed with their columns.

use crate::harness::{Env, MANAGER, REPO, shipped_rules};
use std::path::{Path, PathBuf};

fn example_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            example_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn crds_are_established_explained_and_every_example_is_accepted() {
    let env = Env::new("crds").await;

    // Field docs come from the resource types' doc comments.
    let explained = env.kubectl_ok(&["explain", "jobs.spec.tasks", "--api-version=duckmesh.io/v1alpha1"]);
    assert!(explained.contains("dependsOn"), "{explained}");
    assert!(explained.to_lowercase().contains("sql"), "{explained}");
    let explained = env.kubectl_ok(&["explain", "datasets.spec.retention", "--api-version=duckmesh.io/v1alpha1"]);
    assert!(explained.contains("keepSnapshots"), "{explained}");

    // Every example passes the API server's own validation, with no warnings (an
    // unrecognised schema format is warned about on every apply).
    let mut files = Vec::new();
    example_files(&Path::new(REPO).join("examples"), &mut files);
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).expect("example");
        let text = text.replace("namespace: default", &format!("namespace: {}", env.ns));
        let copy = env.dir.path().join(file.file_name().expect("name"));
        std::fs::write(&copy, text).expect("copy");
        let output = env
            .kubectl()
            .args(["apply", "--dry-run=server", "--server-side", "--field-manager", MANAGER, "-f"])
            .arg(&copy)
            .output()
            .expect("kubectl");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{} rejected: {stderr}", file.display());
        assert!(!stderr.contains("Warning"), "{} warned: {stderr}", file.display());
    }

    // `kubectl get duckmesh` lists all three kinds with their printer columns.
    env.apply_file("examples/quickstart.yaml");
    env.apply_yaml(
        "apiVersion: duckmesh.io/v1alpha1\nkind: Task\nmetadata:\n  name: lonely\nspec:\n  template:\n    name: lonely\n    sql: SELECT 1 AS x\n    output: {dataset: zones}\n",
    );
    let listed = env.kubectl_ok(&["get", "duckmesh"]);
    for needle in
        ["dataset.duckmesh.io/zones", "job.duckmesh.io/quickstart", "task.duckmesh.io/lonely", "SNAPSHOT", "PHASE"]
    {
        assert!(listed.contains(needle), "`kubectl get duckmesh` lacks {needle}:\n{listed}");
    }
}

/// docs/operator.md documents exactly the rules deployments/kubernetes/operator-rbac.yaml ships
/// (which every test here runs the operator with).
#[test]
fn the_documented_rbac_is_the_shipped_rbac() {
    let docs = std::fs::read_to_string(Path::new(REPO).join("docs/operator.md")).expect("docs");
    let section = docs.split("## RBAC").nth(1).expect("an RBAC section");
    let block = section.split("```yaml").nth(1).and_then(|b| b.split("```").next()).expect("a yaml block");
    let documented: serde_json::Value = serde_yaml_ng::from_str(block).expect("the documented rules parse");
    let documented: Vec<k8s_openapi::api::rbac::v1::PolicyRule> =
        serde_json::from_value(documented["rules"].clone()).expect("rules");
    let (cluster, election) = shipped_rules();
    let shipped: Vec<_> = cluster.into_iter().chain(election).collect();
    assert_eq!(documented, shipped, "docs/operator.md and deployments/kubernetes/operator-rbac.yaml disagree");
    for rule in &shipped {
        for word in rule.verbs.iter().chain(rule.resources.iter().flatten()) {
            assert_ne!(word, "*", "no wildcard verbs or resources: {rule:?}");
        }
    }
}
