//! The dynamic-PIVOT splitter (`duckmesh_core::pivot`) on arbitrary text: never panics; a split
//! statement has at least one probe, and its template and completed forms are no longer
//! dynamic (every `ON` expression has an `IN` list), whatever values the probes return.
#![no_main]

use duckmesh_core::pivot::DynamicPivot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let Some(pivot) = DynamicPivot::parse(sql) else { return };
    let probes = pivot.probes(10);
    assert!(!probes.is_empty());
    assert_eq!(DynamicPivot::parse(&pivot.template()), None, "template of {sql:?}");
    let values: Vec<Vec<String>> = probes.iter().map(|_| vec!["x".into(), "it's".into(), "--".into()]).collect();
    assert_eq!(DynamicPivot::parse(&pivot.complete(&values)), None, "completion of {sql:?}");
});
