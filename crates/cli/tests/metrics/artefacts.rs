//! The operations kit (SPEC §8) against what a process with every component exports: every
//! metric name in the rules, the promtool tests and the Grafana dashboard is exported, a
//! recording rule we define, or an allowed kube-state-metrics / Prometheus series; and
//! docs/observability.md lists every exported family. (The kit's other checks, which need no
//! exposition, are in `duckmesh-telemetry`'s `artefacts` test.)

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use duckmesh_telemetry::slo;

use crate::exposition::{families, repo_root, scrape, series_names};
use crate::process_metrics::every_component;

/// Series we reference but do not export: kube-state-metrics and Prometheus' own.
const ALLOWED_FOREIGN_SERIES: &[&str] = &["kube_pod_container_status_restarts_total", "up"];

fn observability_dir() -> PathBuf {
    repo_root().join("deployments").join("observability")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn promtool_tests() -> Vec<(String, String)> {
    let dir = observability_dir().join("prometheus/tests");
    let mut files: Vec<(String, String)> = fs::read_dir(&dir)
        .expect("prometheus/tests exists")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| (path.display().to_string(), read(&path)))
        .collect();
    files.sort();
    files
}

/// Identifiers in `text` that name DuckMesh series: `duckmesh_…` metrics and
/// `duckmesh:…` recording rules, plus foreign series we know by prefix.
fn referenced_series(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut index = 0;
    while index < bytes.len() {
        if !is_ident(bytes[index]) || (index > 0 && is_ident(bytes[index - 1])) {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len() && is_ident(bytes[index]) {
            index += 1;
        }
        let word = &text[start..index];
        if word.starts_with("duckmesh_") || word.starts_with("duckmesh:") || word.starts_with("kube_") {
            found.insert(word.to_owned());
        }
    }
    found
}

/// The PromQL of a rules or promtool test file: every `expr:` (inline or block scalar) and
/// every input `series:`.
fn yaml_promql(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let value = trimmed
            .strip_prefix("expr:")
            .or_else(|| trimmed.strip_prefix("- series:"))
            .or_else(|| trimmed.strip_prefix("series:"));
        let Some(value) = value else { continue };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            while let Some(next) = lines.peek() {
                let next_indent = next.len() - next.trim_start().len();
                if next.trim().is_empty() || next_indent > indent {
                    out.push_str(next);
                    out.push('\n');
                    lines.next();
                } else {
                    break;
                }
            }
        } else {
            out.push_str(value);
            out.push('\n');
        }
    }
    out
}

/// Every `"expr"` string of the dashboard.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                if (key == "expr" || key == "query")
                    && let Some(text) = child.as_str()
                {
                    out.push(text.to_owned());
                }
                dashboard_exprs(child, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| dashboard_exprs(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_referenced_metric_is_exported_or_defined() {
    let exported = series_names(&scrape(&every_component()).await.body);
    let recorded: BTreeSet<String> = slo::recorded_series_names().into_iter().collect();
    let recording_file = read(&observability_dir().join("prometheus/duckmesh_recording_rules.yaml"));
    let defined_in_file: BTreeSet<String> = recording_file
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- record:"))
        .map(|name| name.trim().to_owned())
        .collect();
    assert_eq!(recorded, defined_in_file);

    let alert_rules = read(&observability_dir().join("prometheus/duckmesh_rules.yaml"));
    let mut sources: Vec<(String, String)> = vec![
        ("duckmesh_rules.yaml".to_owned(), yaml_promql(&alert_rules)),
        ("duckmesh_recording_rules.yaml".to_owned(), yaml_promql(&recording_file)),
    ];
    let dashboard_path = observability_dir().join("grafana/duckmesh_slo_dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&dashboard_path)).expect("dashboard is valid JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "dashboard has only {} queries", exprs.len());
    sources.push(("duckmesh_slo_dashboard.json".to_owned(), exprs.join("\n")));
    sources.extend(promtool_tests().into_iter().map(|(name, text)| (name, yaml_promql(&text))));

    let mut unknown = Vec::new();
    let mut seen_any = 0;
    for (source, text) in &sources {
        for name in referenced_series(text) {
            seen_any += 1;
            let known =
                exported.contains(&name) || recorded.contains(&name) || ALLOWED_FOREIGN_SERIES.contains(&name.as_str());
            if !known {
                unknown.push(format!("{source}: {name}"));
            }
        }
    }
    assert!(seen_any > 50, "suspiciously few metric references ({seen_any})");
    assert!(unknown.is_empty(), "metrics referenced but not exported or recorded:\n{}", unknown.join("\n"));
}

#[tokio::test]
async fn observability_doc_lists_every_exported_metric() {
    let body = scrape(&every_component()).await.body;
    let doc = read(&repo_root().join("docs").join("observability.md"));
    let mut listed = 0;
    for (family, kind) in families(&body) {
        let name = if kind == "counter" { format!("{family}_total") } else { family };
        let row = format!("| `{name}` | {kind} |");
        assert!(doc.contains(&row), "docs/observability.md has no table row {row}");
        listed += 1;
    }
    assert!(listed >= 46, "only {listed} metric families exported");
}
