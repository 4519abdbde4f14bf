//! The worker's task-spec and dataset-spec readers (`tasks.spec`, `datasets.spec` JSON) on
//! arbitrary JSON: never panic; an accepted spec has a non-empty query, distinct inputs with
//! valid snapshot ids, and limits that hold.
#![no_main]

use duckmesh_contracts::task::{DatasetOptions, SqlTaskSpec, parse_cpu, parse_memory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(spec) = SqlTaskSpec::parse(&value) {
        assert!(!spec.query().is_empty());
        assert!(spec.inputs.iter().all(|input| input.snapshot.is_none_or(|id| id >= 1)));
        let limits = spec.limits().expect("limits were checked by parse");
        assert!(limits.threads.is_none_or(|threads| (1..=4096).contains(&threads)));
        assert!(limits.memory_limit_bytes.is_none_or(|bytes| bytes >= 16 * 1024 * 1024 / 5 * 4));
    }
    let _ = DatasetOptions::parse("fuzz", &value);
    if let Some(memory) = value.as_str() {
        let _ = parse_memory(memory);
        let _ = parse_cpu(memory);
    }
});
