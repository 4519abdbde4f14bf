//! Lets every binary, test and bench that links DuckDB find the prebuilt `libduckdb.so` without
//! `LD_LIBRARY_PATH`: adds its directory (`DUCKDB_LIB_DIR`, set by `.cargo/config.toml`) and
//! `$ORIGIN` (for images that ship the library next to the binary) to the rpath.
//!
//! Link arguments from a build script reach only its own package's targets, so the `duckmesh`
//! binary's package uses this same file as its build script.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    // The `bundled` feature compiles DuckDB into the binary: nothing to find at run time.
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    // Without DUCKDB_LIB_DIR, libduckdb-sys looks for a system-wide DuckDB (pkg-config or the
    // default linker path), which needs no rpath either.
    let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let library = dir.join("libduckdb.so");
        println!("cargo:rerun-if-changed={}", library.display());
        if !library.is_file() {
            eprintln!(
                "error: {} is missing. Run scripts/fetch-duckdb.sh (scripts/bootstrap.sh does) to fetch DuckDB's \
                 prebuilt library, or build with `--features bundled` to compile DuckDB from source (slow).",
                library.display()
            );
            std::process::exit(1);
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN:{}", dir.display());
}
