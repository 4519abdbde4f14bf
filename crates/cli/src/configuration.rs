//! `duckmesh configuration-reference` (hidden): the tables of docs/configuration.md, generated
//! from the clap structs every component declares its knobs in. Each table is printed between
//! `<!-- generated: KEY -->` and `<!-- end generated -->` markers, KEY being a component's
//! help heading (its `Args` struct) or a subcommand's own arguments; the test
//! `crates/cli/tests/configuration.rs` splices them into the document and fails on drift.

use clap::Command;
use std::collections::BTreeSet;

/// Every table, one block per component, then one per subcommand with arguments of its own.
pub fn reference(root: &Command) -> String {
    let mut out = String::new();
    let mut headings = BTreeSet::new();
    let commands: Vec<&Command> =
        std::iter::once(root).chain(root.get_subcommands().filter(|command| !command.is_hide_set())).collect();
    for command in &commands {
        for heading in command.get_arguments().filter_map(|arg| arg.get_help_heading()) {
            if headings.insert(heading.to_owned()) {
                let mut section = Command::new("section");
                for arg in command.get_arguments().filter(|arg| arg.get_help_heading() == Some(heading)) {
                    section = section.arg(arg.clone());
                }
                block(&mut out, heading, &section);
            }
        }
    }
    for command in commands.iter().skip(1) {
        let mut own = Command::new("own");
        for arg in command.get_arguments().filter(|arg| arg.get_help_heading().is_none()) {
            own = own.arg(arg.clone());
        }
        if own.get_arguments().any(|arg| arg.get_env().is_some()) {
            block(&mut out, &format!("duckmesh {}", command.get_name()), &own);
        }
    }
    out
}

fn block(out: &mut String, key: &str, command: &Command) {
    out.push_str(&format!("<!-- generated: {key} -->\n"));
    out.push_str(&duckmesh_config::markdown_table(command));
    out.push_str("<!-- end generated -->\n");
}
