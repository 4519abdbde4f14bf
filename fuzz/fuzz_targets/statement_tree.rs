//! The shared SQL statement check on structured JSON trees (shaped like DuckDB's parser output,
//! with arbitrary keys and values): it never panics, and whatever it accepts really is one
//! query whose tables are dataset names.
#![no_main]

use duckmesh_fuzz::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|tree: Tree| {
    let text = tree.into_value().to_string();
    if let Ok(analysis) = duckmesh_core::statement::check(&text) {
        duckmesh_fuzz::assert_accepted(&text, &analysis);
    }
});
