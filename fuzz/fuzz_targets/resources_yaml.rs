//! The YAML resource reader (`duckmesh dev`, `kubectl apply`-style files): never panics, and
//! every resource it returns has a name and a namespace.
#![no_main]

use duckmesh_resources::{Resource, parse_documents};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(resources) = parse_documents(text, "fuzz.yaml") {
        for resource in &resources {
            let metadata = match resource {
                Resource::Dataset(dataset) => &dataset.metadata,
                Resource::Job(job) => &job.metadata,
                Resource::Task(task) => &task.metadata,
            };
            assert!(metadata.name.as_deref().is_some_and(|name| !name.is_empty()), "{}", resource.describe());
            assert!(metadata.namespace.is_some(), "{}", resource.describe());
        }
    }
});
