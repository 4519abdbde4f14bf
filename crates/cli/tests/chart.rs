//! The Helm chart (`charts/duckmesh`) checked with the real tools: `helm lint --strict` of the
//! default values and of the two values files under `charts/duckmesh/ci/`, `helm template`, a
//! misspelt key and a wrongly typed value each refused with the schema's error, the rendered
//! objects accepted by a real kube-apiserver (`kubectl apply --dry-run=server`, CRDs first), the
//! operator's rules equal to deployments/kubernetes/operator-rbac.yaml, and the chart's copies
//! (CRDs, Prometheus rules, Grafana dashboard) and docs/install.md's values table free of drift.
//!
//! `helm` is the pinned build of `scripts/go-tools.sh` (built on first use, then cached).
//! `DUCKMESH_BLESS=1 cargo test -p duckmesh --test chart` rewrites the copies and the table.

#[path = "common/mod.rs"]
mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

fn chart() -> PathBuf {
    repo("charts/duckmesh")
}

/// The pinned helm (built once by scripts/go-tools.sh).
fn helm_path() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(common::helm_path)
}

/// `helm` with its caches and configuration in a directory of the test run's own.
fn helm() -> Command {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::Builder::new().prefix("duckmesh-helm-").tempdir().expect("dir"));
    let mut command = Command::new(helm_path());
    for (variable, dir) in [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")] {
        command.env(variable, home.path().join(dir));
    }
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The values files `just chart` checks besides the defaults.
const CI_VALUES: [&str; 2] = ["ci/namespaced-values.yaml", "ci/quickstart-values.yaml"];

/// `helm template` with `values` (relative to the chart), in namespace `duckmesh-system`.
fn template(values: Option<&str>) -> String {
    let mut command = helm();
    command.args(["template", "dm", "--namespace", "duckmesh-system"]).arg(chart());
    if let Some(values) = values {
        command.arg("--values").arg(chart().join(values));
    }
    String::from_utf8(run(command).stdout).expect("UTF-8")
}

/// The rendered objects.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| serde::Deserialize::deserialize(document).expect("rendered YAML parses"))
        .filter(|value: &Value| !value.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name_suffix: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with(name_suffix)))
        .unwrap_or_else(|| panic!("no {kind} *{name_suffix} rendered"))
}

#[test]
fn helm_lint_strict_passes_for_the_default_and_the_ci_values() {
    let mut runs = vec![None];
    runs.extend(CI_VALUES.map(Some));
    for values in runs {
        let mut command = helm();
        command.args(["lint", "--strict", "--namespace", "duckmesh-system"]).arg(chart());
        if let Some(values) = values {
            command.arg("--values").arg(chart().join(values));
        }
        let output = run(command);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("1 chart(s) linted, 0 chart(s) failed"), "{values:?}: {text}");
        assert!(!text.contains("[WARNING]") && !text.contains("[ERROR]"), "{values:?}: {text}");
    }
}

/// A values file with `text`; the schema error `helm template` and `helm lint` refuse it with.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, text).expect("write");
    let mut messages = String::new();
    for verb in ["template", "lint"] {
        let mut command = helm();
        command.arg(verb);
        if verb == "template" {
            command.arg("dm");
        }
        let output = command.arg(chart()).arg("--values").arg(&file).output().expect("helm runs");
        assert!(!output.status.success(), "helm {verb} accepted {text:?}");
        let message = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(message.contains("values don't meet the specifications of the schema"), "{verb}: {message}");
        messages.push_str(&message);
    }
    messages
}

#[test]
fn the_schema_refuses_a_misspelt_key_and_a_wrong_type() {
    let typo = refused("operator:\n  replicaCont: 3\n");
    assert!(typo.contains("additional properties 'replicaCont' not allowed"), "{typo}");
    assert!(typo.contains("/operator"), "the error names where: {typo}");

    let wrong_type = refused("api:\n  port: \"8080\"\n");
    assert!(wrong_type.contains("/api/port") && wrong_type.contains("got string, want integer"), "{wrong_type}");

    let top_level = refused("watchNamespace: pipelines\n");
    assert!(top_level.contains("additional properties 'watchNamespace' not allowed"), "{top_level}");

    let bad_enum = refused("api:\n  auth:\n    mode: open\n");
    assert!(bad_enum.contains("/api/auth/mode"), "{bad_enum}");

    let bad_knob = refused("config:\n  DUCKMESH_TASK_LEASE_SECONDS: [1]\n");
    assert!(bad_knob.contains("/config/DUCKMESH_TASK_LEASE_SECONDS"), "{bad_knob}");
    let not_a_knob = refused("config:\n  TASK_LEASE_SECONDS: 10\n");
    assert!(not_a_knob.contains("'TASK_LEASE_SECONDS' does not match pattern '^DUCKMESH_[A-Z0-9_]+$'"), "{not_a_knob}");
}

/// Every pod template the chart renders meets the restricted Pod Security Standard and probes
/// its listener.
#[test]
fn every_pod_is_restricted_and_every_server_is_probed() {
    let mut runs = vec![None];
    runs.extend(CI_VALUES.map(Some));
    for values in runs {
        let rendered = objects(&template(values));
        let mut pods = 0;
        for object in &rendered {
            let spec = match object["kind"].as_str() {
                Some("Deployment" | "Job") => &object["spec"]["template"]["spec"],
                Some("Pod") => &object["spec"],
                _ => continue,
            };
            pods += 1;
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let pod_security = &spec["securityContext"];
            assert_eq!(pod_security["runAsNonRoot"], true, "{name}");
            assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
            let tmp = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == "tmp" && v["emptyDir"].is_object());
            let containers: Vec<&Value> = ["initContainers", "containers"]
                .iter()
                .flat_map(|field| spec[field].as_array().into_iter().flatten())
                .collect();
            for container in containers {
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
                assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
                assert!(container["resources"]["requests"].is_object(), "{name}: resources");
                if object["kind"] == "Deployment" {
                    assert!(tmp, "{name}: a /tmp emptyDir");
                    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                        assert!(container[probe]["httpGet"]["path"].is_string(), "{name}: {probe}");
                    }
                    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
                    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
                }
            }
        }
        assert!(pods >= 5, "{values:?}: {pods} pod templates");
    }
}

/// The commands, listeners and the knobs the chart sets, as each subcommand reads them.
#[test]
fn the_components_run_their_subcommands_with_their_settings() {
    let rendered = objects(&template(Some("ci/namespaced-values.yaml")));
    let env = |deployment: &str| -> Vec<(String, Value)> {
        let container = &find(&rendered, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| (e["name"].as_str().expect("name").to_owned(), e["value"].clone()))
            .collect()
    };
    let value = |env: &[(String, Value)], name: &str| {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{name} not set"))
    };
    for (deployment, command, listen, port) in [
        ("-operator", "operator", "DUCKMESH_METRICS_LISTEN", "9090"),
        ("-api", "api", "DUCKMESH_API_LISTEN", "8080"),
        ("-coordinator", "coordinator", "DUCKMESH_COORDINATOR_LISTEN", "9091"),
    ] {
        let object = find(&rendered, "Deployment", deployment);
        let container = &object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], serde_json::json!([command]));
        assert_eq!(
            container["image"],
            "registry.example.com/duckmesh/duckmesh@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
        let env = env(deployment);
        assert_eq!(value(&env, listen), format!("0.0.0.0:{port}"));
        assert_eq!(value(&env, "DUCKMESH_TASK_LEASE_SECONDS"), "180");
        assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"), "http://otel-collector.observability:4318");
        assert_eq!(value(&env, "DUCKMESH_LOG"), "info,duckmesh_operator=debug");
        assert_eq!(container["envFrom"][0]["secretRef"]["name"], "s3-credentials");
    }
    let operator = env("-operator");
    assert_eq!(value(&operator, "DUCKMESH_WATCH_NAMESPACE"), "pipelines");
    assert_eq!(value(&operator, "DUCKMESH_DATABASE_SECRET"), "catalog-credentials");
    assert_eq!(value(&operator, "DUCKMESH_DATABASE_SECRET_KEY"), "database-url");
    assert_eq!(value(&operator, "DUCKMESH_WORKER_SERVICE_ACCOUNT"), "dm-worker");
    assert_eq!(value(&operator, "DUCKMESH_WORKER_ENV_SECRET"), "s3-credentials");
    assert_eq!(value(&operator, "DUCKMESH_GLOBAL_TASK_LIMIT"), "50");
    let api = env("-api");
    assert_eq!(value(&api, "DUCKMESH_API_KEYS_FILE"), "/etc/duckmesh/api-keys/keys.yaml");
    assert_eq!(value(&api, "DUCKMESH_QUERY_ENGINE_POOL"), "8");
    assert_eq!(find(&rendered, "Deployment", "-operator")["spec"]["replicas"], 3);
    assert!(find(&rendered, "Deployment", "-api")["spec"]["replicas"].is_null(), "the HPA owns the API's replicas");
    find(&rendered, "HorizontalPodAutoscaler", "-api");

    // The migration hook runs `duckmesh migrate` before install and upgrade.
    let job = find(&rendered, "Job", "-migrate");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-install,pre-upgrade");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"], serde_json::json!(["migrate"]));

    // The worker account exists where workers run, with no token; nothing binds it.
    let workers: Vec<&Value> =
        rendered.iter().filter(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "dm-worker").collect();
    let namespaces: Vec<&Value> = workers.iter().map(|o| &o["metadata"]["namespace"]).collect();
    assert_eq!(namespaces, [&Value::from("duckmesh-system"), &Value::from("pipelines")]);
    assert!(workers.iter().all(|o| o["automountServiceAccountToken"] == false));
    for binding in rendered.iter().filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Binding"))) {
        for subject in binding["subjects"].as_array().expect("subjects") {
            assert_eq!(subject["name"], "dm-operator", "only the operator is bound: {binding}");
        }
    }
}

/// The shipped rules: the ClusterRole's and the leader-election Role's.
fn shipped_rules() -> (Value, Value) {
    let text = std::fs::read_to_string(repo("deployments/kubernetes/operator-rbac.yaml")).expect("rbac");
    let documents = objects(&text);
    let cluster = find(&documents, "ClusterRole", "duckmesh-operator")["rules"].clone();
    let election = find(&documents, "Role", "duckmesh-operator-leader-election")["rules"].clone();
    (cluster, election)
}

fn assert_no_wildcards(rules: &Value) {
    for rule in rules.as_array().expect("rules") {
        for field in ["apiGroups", "resources", "verbs"] {
            for item in rule[field].as_array().into_iter().flatten() {
                assert!(item != "*", "a wildcard in {field}: {rule}");
            }
        }
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
    }
}

#[test]
fn the_operator_rules_are_the_documented_least_privilege_ones() {
    let (cluster, election) = shipped_rules();
    assert_no_wildcards(&cluster);
    assert_no_wildcards(&election);

    // Watching every namespace: one ClusterRole with the shipped rules, no namespaced Role
    // besides the Lease's.
    let all = objects(&template(None));
    assert_eq!(find(&all, "ClusterRole", "-operator-duckmesh-system")["rules"], cluster);
    let lease_role = find(&all, "Role", "-operator-leader-election");
    assert_eq!(lease_role["rules"], election);
    assert_eq!(lease_role["metadata"]["namespace"], "duckmesh-system");
    assert_eq!(all.iter().filter(|o| o["kind"] == "Role").count(), 1);

    // Watching one namespace: the same rules as a Role there, and no cluster-wide rights.
    let namespaced = objects(&template(Some("ci/namespaced-values.yaml")));
    assert!(!namespaced.iter().any(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding"));
    let role = find(&namespaced, "Role", "dm-operator");
    assert_eq!(role["rules"], cluster);
    assert_eq!(role["metadata"]["namespace"], "pipelines");
    let binding = find(&namespaced, "RoleBinding", "dm-operator");
    assert_eq!(binding["metadata"]["namespace"], "pipelines");
    assert_eq!(binding["subjects"][0]["namespace"], "duckmesh-system");
    assert_eq!(find(&namespaced, "Role", "dm-operator-leader-election")["rules"], election);
    for object in &namespaced {
        if object["kind"] == "Role" || object["kind"] == "ClusterRole" {
            assert_no_wildcards(&object["rules"]);
        }
    }
}

/// The monitoring objects: the rules are the files of deployments/observability/prometheus as
/// they are, the dashboard carries the sidecar's label, the scrape jobs are named as the
/// absent-target alerts expect.
#[test]
fn the_monitoring_objects_carry_the_shipped_rules_and_dashboard() {
    let rendered = objects(&template(Some("ci/quickstart-values.yaml")));
    for file in ["duckmesh_recording_rules.yaml", "duckmesh_rules.yaml"] {
        let suffix = format!("-{}", file.trim_end_matches(".yaml").replace('_', "-"));
        let rule = find(&rendered, "PrometheusRule", &suffix);
        let text = std::fs::read_to_string(repo("deployments/observability/prometheus").join(file)).expect("rules");
        let shipped: Value = serde_yaml_ng::from_str(&text).expect("rules parse");
        assert_eq!(rule["spec"], shipped, "{file}");
        assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus-stack");
    }
    let dashboard = find(&rendered, "ConfigMap", "-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped = std::fs::read_to_string(repo("deployments/observability/grafana/duckmesh_slo_dashboard.json"))
        .expect("dashboard");
    assert_eq!(
        dashboard["data"]["duckmesh_slo_dashboard.json"].as_str().expect("data"),
        shipped.trim_end_matches('\n')
    );
    for component in ["operator", "api", "coordinator"] {
        let monitor = find(&rendered, "ServiceMonitor", &format!("-{component}"));
        assert_eq!(monitor["spec"]["jobLabel"], "duckmesh.io/scrape-job");
        let service = find(&rendered, "Service", &format!("-{component}"));
        assert_eq!(service["metadata"]["labels"]["duckmesh.io/scrape-job"], format!("duckmesh-{component}"));
    }
}

/// Byte-identical copies inside the chart of files Helm cannot read from outside it
/// (`.Files.Get` stays in the chart directory, `helm package` does not follow symlinks).
#[test]
fn the_charts_copies_do_not_drift() {
    let bless = std::env::var_os("DUCKMESH_BLESS").is_some();
    let mut drifted = Vec::new();
    for (source, copy) in [
        ("crds/duckmesh.io.yaml", "charts/duckmesh/crds/duckmesh.io.yaml"),
        (
            "deployments/observability/prometheus/duckmesh_recording_rules.yaml",
            "charts/duckmesh/files/prometheus/duckmesh_recording_rules.yaml",
        ),
        (
            "deployments/observability/prometheus/duckmesh_rules.yaml",
            "charts/duckmesh/files/prometheus/duckmesh_rules.yaml",
        ),
        (
            "deployments/observability/grafana/duckmesh_slo_dashboard.json",
            "charts/duckmesh/files/grafana/duckmesh_slo_dashboard.json",
        ),
    ] {
        let wanted = std::fs::read(repo(source)).expect("source");
        if std::fs::read(repo(copy)).ok().as_deref() != Some(&wanted[..]) {
            if bless {
                std::fs::write(repo(copy), &wanted).expect("write");
            } else {
                drifted.push(copy);
            }
        }
    }
    let mut files: Vec<String> = std::fs::read_dir(repo("charts/duckmesh/files/prometheus"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["duckmesh_recording_rules.yaml", "duckmesh_rules.yaml"], "a rules file the chart does not know");
    assert!(
        drifted.is_empty(),
        "{drifted:?} differ from their sources: DUCKMESH_BLESS=1 cargo test -p duckmesh --test chart copies them"
    );
}

/// One row of the values table: the key, its type, its default and its `# --` comment.
fn values_table() -> String {
    let text = std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml");
    let values: Value = serde_yaml_ng::from_str(&text).expect("values.yaml parses");
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut description: Option<String> = None;
    let mut rows = Vec::new();
    let mut documented: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(comment) = trimmed.strip_prefix("# -- ") {
            description = Some(comment.to_owned());
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with('-') || trimmed.is_empty() {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else { continue };
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        while stack.last().is_some_and(|(level, _)| *level >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_owned()));
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let dotted = path.join(".");
        if documented.iter().any(|d| dotted.starts_with(&format!("{d}."))) {
            continue;
        }
        if let Some(description) = description.take() {
            let value = path.iter().fold(&values, |v, k| &v[*k]);
            let kind = match value {
                Value::String(_) => "string",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_i64() || n.is_u64() => "int",
                Value::Number(_) => "number",
                Value::Array(_) => "list",
                Value::Object(_) => "object",
                Value::Null => "null",
            };
            let default = serde_json::to_string(value).expect("json").replace('|', "\\|");
            rows.push(format!("| `{dotted}` | {kind} | `{default}` | {} |", description.replace('|', "\\|")));
            documented.push(dotted);
        }
    }
    // Every leaf of values.yaml is documented by a row (its own or an enclosing object's).
    fn leaves(value: &Value, path: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    leaves(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut all = Vec::new();
    leaves(&values, String::new(), &mut all);
    let undocumented: Vec<&String> = all
        .iter()
        .filter(|leaf| !documented.iter().any(|d| *leaf == d || leaf.starts_with(&format!("{d}."))))
        .collect();
    assert!(undocumented.is_empty(), "values without a `# --` comment in values.yaml: {undocumented:?}");
    let mut table = String::from("| key | type | default | description |\n|---|---|---|---|\n");
    for row in rows {
        table.push_str(&row);
        table.push('\n');
    }
    table
}

#[test]
fn the_values_table_in_docs_install_md_is_generated_from_values_yaml() {
    const START: &str =
        "<!-- values-table:start (generated from charts/duckmesh/values.yaml by crates/cli/tests/chart.rs) -->\n";
    const END: &str = "<!-- values-table:end -->";
    let path = repo("docs/install.md");
    let doc = std::fs::read_to_string(&path).expect("docs/install.md");
    let start = doc.find(START).expect("the table's start marker") + START.len();
    let end = doc.find(END).expect("the table's end marker");
    let wanted = values_table();
    if doc[start..end] != wanted {
        if std::env::var_os("DUCKMESH_BLESS").is_some() {
            std::fs::write(&path, format!("{}{wanted}{}", &doc[..start], &doc[end..])).expect("write");
        } else {
            panic!(
                "docs/install.md's values table is stale: DUCKMESH_BLESS=1 cargo test -p duckmesh --test chart regenerates it"
            );
        }
    }
}

/// The rendered objects (default values and both ci files) are accepted by a real API server.
/// ServiceMonitor and PrometheusRule need prometheus-operator's CRDs, which the bed does not
/// have: they are left out of the dry run (the test above checks their content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_is_accepted_by_the_api_server() {
    let control_plane = duckmesh_testbed::ControlPlane::start(duckmesh_testbed::ControlPlaneOptions::default())
        .await
        .expect("control plane");
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut command = control_plane.kubectl();
        command.args(args);
        let output = match stdin {
            Some(text) => {
                let dir = tempfile::tempdir().expect("dir");
                let file = dir.path().join("objects.yaml");
                std::fs::write(&file, text).expect("write");
                command.arg("-f").arg(&file).output().expect("kubectl")
            }
            None => command.output().expect("kubectl"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "kubectl {args:?}: {stdout}{stderr}");
        (stdout, stderr)
    };
    let crds = repo("charts/duckmesh/crds/duckmesh.io.yaml").display().to_string();
    kubectl(&["apply", "--server-side", "-f", &crds], None);
    kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "-f", &crds], None);
    for namespace in ["duckmesh-system", "pipelines"] {
        kubectl(&["create", "namespace", namespace], None);
    }
    let mut runs = vec![None];
    runs.extend(CI_VALUES.map(Some));
    for values in runs {
        let rendered = template(values);
        let kept: Vec<String> = objects(&rendered)
            .into_iter()
            .filter(|o| o["apiVersion"].as_str().is_some_and(|v| !v.starts_with("monitoring.coreos.com/")))
            .map(|o| serde_json::to_string(&o).expect("json"))
            .collect();
        let (stdout, stderr) = kubectl(&["apply", "--dry-run=server"], Some(&kept.join("\n---\n")));
        let accepted = stdout.lines().filter(|l| l.ends_with("(server dry run)")).count();
        assert_eq!(accepted, kept.len(), "{values:?}: every object accepted:\n{stdout}{stderr}");
        assert!(!stderr.contains("Warning"), "{values:?}: the API server warned:\n{stderr}");
    }
    control_plane.stop();
}
