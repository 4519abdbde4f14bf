//! docs/configuration.md's tables are generated from the clap structs the components declare
//! their knobs in (`duckmesh configuration-reference` prints them): this test splices them into
//! the document and fails when the committed file has drifted. It also checks that every
//! `DUCKMESH_*` variable the Helm chart or the image sets is a knob some command reads.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
const UPDATE: &str = "DUCKMESH_UPDATE_DOCS=1 cargo test -p duckmesh --test configuration";

/// The generated blocks by key, each with its markers.
fn reference() -> BTreeMap<String, String> {
    let output =
        Command::new(env!("CARGO_BIN_EXE_duckmesh")).arg("configuration-reference").output().expect("duckmesh runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let mut blocks = BTreeMap::new();
    for block in text.split_inclusive("<!-- end generated -->\n") {
        let key = block
            .strip_prefix("<!-- generated: ")
            .and_then(|rest| rest.split_once(" -->"))
            .map(|(key, _)| key.to_owned())
            .unwrap_or_else(|| panic!("a block without its marker: {block}"));
        blocks.insert(key, block.to_owned());
    }
    blocks
}

/// `doc` with every generated block replaced by its current text, and the keys it holds.
fn splice(doc: &str, blocks: &BTreeMap<String, String>) -> (String, BTreeSet<String>) {
    let mut out = String::new();
    let mut keys = BTreeSet::new();
    let mut rest = doc;
    while let Some(start) = rest.find("<!-- generated: ") {
        out.push_str(&rest[..start]);
        let block = &rest[start..];
        let end = block.find("<!-- end generated -->\n").expect("every generated block ends") + 23;
        let key = block["<!-- generated: ".len()..].split_once(" -->").expect("marker").0.to_owned();
        match blocks.get(&key) {
            Some(current) => out.push_str(current),
            None => panic!("docs/configuration.md has a block {key:?} no command generates: remove it"),
        }
        keys.insert(key);
        rest = &block[end..];
    }
    out.push_str(rest);
    (out, keys)
}

#[test]
fn configuration_md_is_generated_from_the_knobs() {
    let blocks = reference();
    let doc = std::fs::read_to_string(DOC).expect("docs/configuration.md");
    let (mut spliced, keys) = splice(&doc, &blocks);
    let missing: Vec<&String> = blocks.keys().filter(|key| !keys.contains(*key)).collect();
    let update = std::env::var_os("DUCKMESH_UPDATE_DOCS").is_some();
    assert!(
        missing.is_empty() || update,
        "docs/configuration.md has no place for {missing:?}: run {UPDATE} (it adds a section for each \
         at the end of its part; move it and write its prose as you like)"
    );
    for key in missing {
        // A command's own arguments go at the end of "Commands", a component's at the end.
        let section = match key.strip_prefix("duckmesh ") {
            Some(_) => format!("### `{key}`\n\n{}\n", blocks[key]),
            None => format!("\n### {key}\n\n{}", blocks[key]),
        };
        match (key.starts_with("duckmesh "), spliced.find("## Components")) {
            (true, Some(at)) => spliced.insert_str(at, &section),
            _ => spliced.push_str(&section),
        }
    }
    if spliced != doc {
        if update {
            std::fs::write(DOC, &spliced).expect("write docs/configuration.md");
        } else {
            panic!("docs/configuration.md differs from the knobs' flags and help lines: run {UPDATE}");
        }
    }
}

/// The `DUCKMESH_*` names in `text` (prefixes such as `DUCKMESH_S3_` left out).
fn variables(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (index, _) in text.match_indices("DUCKMESH_") {
        let name: String =
            text[index..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        if !name.ends_with('_') {
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_variable_the_chart_and_image_set_is_a_knob() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let known = variables(&reference().into_values().collect::<String>());
    let mut files = vec![format!("{root}/charts/duckmesh/values.yaml"), format!("{root}/Containerfile")];
    for entry in std::fs::read_dir(format!("{root}/charts/duckmesh/templates")).expect("templates") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            files.push(path.display().to_string());
        }
    }
    let mut unknown = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for name in variables(&text) {
            if !known.contains(&name) {
                unknown.push(format!("{name} ({file})"));
            }
        }
    }
    assert!(unknown.is_empty(), "set but read by no command: {unknown:?}");
}
