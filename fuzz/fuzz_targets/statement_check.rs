//! The shared SQL statement check on arbitrary text posing as DuckDB's parser JSON: it never
//! panics, and whatever it accepts really is one query whose tables are dataset names.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(analysis) = duckmesh_core::statement::check(text) {
        duckmesh_fuzz::assert_accepted(text, &analysis);
    }
});
