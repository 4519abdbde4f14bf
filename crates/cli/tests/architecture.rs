//! The crate graph of docs/architecture.md, checked against `cargo metadata`: a dependency
//! between DuckMesh's crates that the architecture does not allow fails here, and so does a
//! pure crate that picks up a dependency with I/O.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Which DuckMesh crates each crate may depend on (normal dependencies; dev-dependencies are
/// free). The binary may depend on every library but the test harnesses.
const ALLOWED: &[(&str, &[&str])] = &[
    ("duckmesh-core", &[]),
    ("duckmesh-config", &[]),
    ("duckmesh-contracts", &[]),
    ("duckmesh-localpg", &[]),
    ("duckmesh-telemetry", &["duckmesh-config"]),
    ("duckmesh-storage", &["duckmesh-config"]),
    ("duckmesh-testbed", &[]),
    ("duckmesh-resources", &["duckmesh-core", "duckmesh-contracts"]),
    ("duckmesh-catalog", &["duckmesh-core", "duckmesh-config", "duckmesh-contracts"]),
    ("duckmesh-engine", &["duckmesh-core", "duckmesh-contracts"]),
    (
        "duckmesh-maintenance",
        &["duckmesh-core", "duckmesh-contracts", "duckmesh-catalog", "duckmesh-engine", "duckmesh-storage"],
    ),
    ("duckmesh-testkit", &["duckmesh-catalog", "duckmesh-localpg"]),
    (
        "duckmesh-history",
        &["duckmesh-core", "duckmesh-catalog", "duckmesh-engine", "duckmesh-maintenance", "duckmesh-storage"],
    ),
    (
        "duckmesh-worker",
        &[
            "duckmesh-core",
            "duckmesh-config",
            "duckmesh-contracts",
            "duckmesh-catalog",
            "duckmesh-engine",
            "duckmesh-storage",
        ],
    ),
    (
        "duckmesh-query",
        &[
            "duckmesh-core",
            "duckmesh-config",
            "duckmesh-contracts",
            "duckmesh-catalog",
            "duckmesh-engine",
            "duckmesh-storage",
            "duckmesh-telemetry",
        ],
    ),
    (
        "duckmesh-coordinator",
        &[
            "duckmesh-core",
            "duckmesh-config",
            "duckmesh-contracts",
            "duckmesh-catalog",
            "duckmesh-engine",
            "duckmesh-storage",
            "duckmesh-telemetry",
        ],
    ),
    (
        "duckmesh-scheduler",
        &["duckmesh-core", "duckmesh-contracts", "duckmesh-catalog", "duckmesh-resources", "duckmesh-telemetry"],
    ),
    (
        "duckmesh-operator",
        &[
            "duckmesh-core",
            "duckmesh-contracts",
            "duckmesh-catalog",
            "duckmesh-resources",
            "duckmesh-scheduler",
            "duckmesh-telemetry",
        ],
    ),
    (
        "duckmesh-dev",
        &[
            "duckmesh-core",
            "duckmesh-config",
            "duckmesh-contracts",
            "duckmesh-catalog",
            "duckmesh-coordinator",
            "duckmesh-localpg",
            "duckmesh-query",
            "duckmesh-resources",
            "duckmesh-scheduler",
            "duckmesh-storage",
            "duckmesh-telemetry",
            "duckmesh-worker",
        ],
    ),
];

/// Edges the architecture forbids that still exist, each with what removes it. The test fails
/// when one of them is gone, so that the list (and docs/architecture.md) shrinks with it.
/// (Empty: the last one, coordinator -> worker, went with the engine crate.)
const PENDING: &[(&str, &str, &str)] = &[];

/// The only crates the pure crates may use: no runtime, database, network or file system.
const PURE: &[(&str, &[&str])] = &[
    ("duckmesh-core", &["chrono", "rand", "serde", "serde_json", "thiserror"]),
    ("duckmesh-contracts", &["chrono", "croner", "serde", "serde_json", "thiserror"]),
];

/// Every workspace crate and its normal (non-dev, non-build) dependencies.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut graph = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let dependencies = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|dependency| dependency["kind"].is_null())
            .map(|dependency| dependency["name"].as_str().expect("name").to_owned())
            .collect();
        graph.insert(name, dependencies);
    }
    graph
}

#[test]
fn crates_depend_only_as_the_architecture_allows() {
    let graph = graph();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut forbidden = Vec::new();
    for (name, dependencies) in &graph {
        for dependency in dependencies.iter().filter(|dependency| dependency.starts_with("duckmesh")) {
            let ok = match allowed.get(name.as_str()) {
                Some(allowed) => allowed.contains(&dependency.as_str()),
                // The binary wires everything together, but never the test harnesses.
                None if name == "duckmesh" => {
                    !matches!(dependency.as_str(), "duckmesh-testkit" | "duckmesh-testbed" | "duckmesh-history")
                }
                None => panic!("{name} is not in docs/architecture.md's table (ALLOWED): add it"),
            };
            let pending = PENDING.iter().any(|(from, to, _)| from == name && to == dependency);
            if !ok && !pending {
                forbidden.push(format!("{name} -> {dependency}"));
            }
        }
    }
    assert!(forbidden.is_empty(), "dependencies the architecture forbids: {forbidden:?}");
    for (from, to, why) in PENDING {
        assert!(
            graph.get(*from).is_some_and(|dependencies| dependencies.contains(*to)),
            "{from} -> {to} is gone ({why}): remove it from PENDING and docs/architecture.md"
        );
    }
}

#[test]
fn the_pure_crates_stay_pure() {
    let graph = graph();
    for (name, allowed) in PURE {
        let dependencies = &graph[*name];
        let extra: Vec<&String> =
            dependencies.iter().filter(|dependency| !allowed.contains(&dependency.as_str())).collect();
        assert!(extra.is_empty(), "{name} must stay free of I/O, but depends on {extra:?}");
    }
}
