//! The committed CRD YAML (`crds/duckmesh.io.yaml`) must equal what the types generate.
//! Regenerate with `DUCKMESH_BLESS=1 cargo test -p duckmesh-resources --test crds` (or `just crds`).

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds/duckmesh.io.yaml")
}

#[test]
fn committed_crds_match_the_types() {
    let generated = duckmesh_resources::crds_yaml().expect("CRDs serialise");
    let path = committed_path();
    if std::env::var_os("DUCKMESH_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir crds");
        std::fs::write(&path, &generated).expect("write crds");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/duckmesh.io.yaml is out of date: run `just crds` (DUCKMESH_BLESS=1 cargo test -p duckmesh-resources --test crds) and commit it"
    );
}
