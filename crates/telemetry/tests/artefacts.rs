//! Consistency of the operations kit (SPEC §8):
//! - the recording rules are exactly what `slo::recording_rules_yaml()` generates;
//! - every alert has `severity`, `summary` and a `runbook_url` that resolves to a runbook
//!   (and heading) in `docs/runbooks/`, burn-rate alerts carry `slo` and the SPEC §5
//!   window pairs, and every alert has a promtool unit test.
//!
//! That every metric the rules, the promtool tests, the dashboard and docs/observability.md
//! name is exported needs every component's metrics: the `duckmesh` binary's `metrics` test
//! checks it.
//!
//! `DUCKMESH_BLESS=1` rewrites the recording rules file from the SLO table.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::repo_root;
use duckmesh_telemetry::slo::{self, BURN_WINDOWS, MIN_EVENTS_IN_LONG_WINDOW, SLOS};

/// Runbooks SPEC §8 requires, plus the ones the alerts need.
const REQUIRED_RUNBOOKS: &[&str] = &[
    "stuck-leases.md",
    "high-ingest-lag.md",
    "snapshot-publish-failures.md",
    "restore-from-backup.md",
    "compaction-rollback.md",
    "emergency-read-only.md",
    "outbox-failed-rows.md",
    "staging-cleanup.md",
    "slo-burn-rate.md",
    "integrity-failures.md",
    "operator-health.md",
    "ingest-dead-letters.md",
];

/// Sections every runbook has.
const RUNBOOK_SECTIONS: &[&str] =
    &["## Symptoms", "## Alerts and metrics", "## Diagnosis", "## Remediation", "## Verify recovery"];

fn observability_dir() -> PathBuf {
    repo_root().join("deployments").join("observability")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn alert_rules() -> String {
    read(&observability_dir().join("prometheus/duckmesh_rules.yaml"))
}

fn recording_rules_path() -> PathBuf {
    observability_dir().join("prometheus/duckmesh_recording_rules.yaml")
}

fn dashboard() -> serde_json::Value {
    let path = observability_dir().join("grafana/duckmesh_slo_dashboard.json");
    serde_json::from_str(&read(&path)).expect("dashboard is valid JSON")
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

/// `- alert:` blocks of the rules file: name → block text.
fn alert_blocks(rules: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in rules.lines() {
        let trimmed = line.trim_start();
        let starts_rule =
            trimmed.starts_with("- alert:") || trimmed.starts_with("- record:") || trimmed.starts_with("- name:");
        if starts_rule {
            if let Some((name, block)) = current.take() {
                blocks.insert(name, block);
            }
            if let Some(name) = trimmed.strip_prefix("- alert:") {
                current = Some((name.trim().to_owned(), String::new()));
            }
        }
        if let Some((_, block)) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    if let Some((name, block)) = current {
        blocks.insert(name, block);
    }
    blocks
}

fn yaml_value<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    block
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(&format!("{key}:")).map(|value| value.trim().trim_matches('"')))
}

/// GitHub-style heading anchor.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

#[test]
fn recording_rules_match_the_slo_table() {
    let generated = slo::recording_rules_yaml();
    let path = recording_rules_path();
    if std::env::var_os("DUCKMESH_BLESS").is_some() {
        fs::write(&path, &generated).expect("write recording rules");
    }
    let committed = read(&path);
    assert!(
        committed == generated,
        "{} drifted from crates/telemetry/src/slo.rs; regenerate with \
         DUCKMESH_BLESS=1 cargo test -p duckmesh-telemetry --test artefacts",
        path.display()
    );
}

#[test]
fn every_alert_has_severity_summary_and_runbook() {
    let blocks = alert_blocks(&alert_rules());
    assert!(blocks.len() >= 20, "only {} alerts", blocks.len());
    for (name, block) in &blocks {
        let severity = yaml_value(block, "severity").unwrap_or_else(|| panic!("{name}: no severity"));
        assert!(["critical", "warning"].contains(&severity), "{name}: severity {severity}");
        assert!(yaml_value(block, "summary").is_some(), "{name}: no summary");
        assert!(yaml_value(block, "description").is_some(), "{name}: no description");
        assert!(yaml_value(block, "runbook_url").is_some(), "{name}: no runbook_url");
        assert!(name.starts_with("DuckMesh"), "{name}: alerts are named DuckMesh…");
        if name.contains("BurnRate") {
            let slo = yaml_value(block, "slo").unwrap_or_else(|| panic!("{name}: no slo label"));
            assert!(slo::slo(slo).is_some(), "{name}: unknown slo {slo}");
        }
    }
}

#[test]
fn every_runbook_url_resolves_to_a_runbook_heading() {
    let runbooks = repo_root().join("docs").join("runbooks");
    let mut checked = 0;
    for (name, block) in alert_blocks(&alert_rules()) {
        let url = yaml_value(&block, "runbook_url").unwrap_or_default();
        let (_, path) = url
            .split_once("/docs/runbooks/")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not under docs/runbooks/"));
        let (file, anchor) = path.split_once('#').unwrap_or((path, ""));
        let runbook = runbooks.join(file);
        assert!(runbook.is_file(), "{name}: {} does not exist", runbook.display());
        if !anchor.is_empty() {
            let text = read(&runbook);
            let anchors: BTreeSet<String> = text
                .lines()
                .filter(|line| line.starts_with('#'))
                .map(|line| slug(line.trim_start_matches('#')))
                .collect();
            assert!(anchors.contains(anchor), "{name}: no heading #{anchor} in {file}");
        }
        checked += 1;
    }
    assert!(checked >= 20);
}

#[test]
fn runbooks_exist_with_every_section() {
    let runbooks = repo_root().join("docs").join("runbooks");
    for file in REQUIRED_RUNBOOKS {
        let path = runbooks.join(file);
        let text = read(&path);
        for section in RUNBOOK_SECTIONS {
            assert!(text.contains(section), "{file} lacks {section}");
        }
        assert!(text.contains("```sql") || text.contains("```bash"), "{file}: no diagnosis commands");
        assert!(text.contains("```promql"), "{file}: no PromQL");
    }
}

#[test]
fn burn_rate_alerts_use_every_window_pair_for_every_slo() {
    let rules = alert_rules();
    for slo in &SLOS {
        for window in BURN_WINDOWS {
            let threshold = format!("({} * {})", window.factor, slo.error_budget);
            for range in [window.long, window.short] {
                let condition = format!("duckmesh:sli_error:ratio_rate{range}{{slo=\"{}\"}} > {threshold}", slo.name);
                assert!(rules.contains(&condition), "missing: {condition}");
            }
            let seconds = match window.long {
                "1h" => 3600,
                "6h" => 21_600,
                "1d" => 86_400,
                "3d" => 259_200,
                other => panic!("unexpected window {other}"),
            };
            let guard = format!(
                "duckmesh:sli_requests:rate{}{{slo=\"{}\"}} * {seconds} >= {MIN_EVENTS_IN_LONG_WINDOW}",
                window.long, slo.name
            );
            assert!(rules.contains(&guard), "missing: {guard}");
        }
    }
}

#[test]
fn every_alert_has_a_promtool_unit_test() {
    let tests: String = promtool_tests().into_iter().map(|(_, text)| text).collect();
    for name in alert_blocks(&alert_rules()).keys() {
        assert!(tests.contains(&format!("alertname: {name}\n")), "{name} has no promtool test");
        assert!(
            tests.contains(&format!("alertname: {name}\n        exp_alerts: []")),
            "{name} has no silent-case test"
        );
    }
}

#[test]
fn dashboard_covers_the_slo_topics() {
    let dashboard = dashboard();
    let titles: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|panel| panel["title"].as_str().map(str::to_lowercase))
        .collect();
    for topic in [
        "availability",
        "ingest ack",
        "write-to-visible",
        "query",
        "barrier",
        "error budget",
        "burn rate",
        "freshness",
        "backlog",
        "lease",
    ] {
        assert!(titles.iter().any(|title| title.contains(topic)), "no panel about {topic}: {titles:?}");
    }
    assert_eq!(dashboard["uid"], "duckmesh-slo");
}

#[test]
fn alertmanager_inhibits_warning_by_critical_for_the_same_slo() {
    let config = read(&observability_dir().join("alertmanager/alertmanager.example.yaml"));
    assert!(config.contains("inhibit_rules:"));
    assert!(config.contains("severity=\"critical\""));
    assert!(config.contains("severity=\"warning\""));
    assert!(config.contains("equal: [slo]") || config.contains("equal: ['slo']"));
}
