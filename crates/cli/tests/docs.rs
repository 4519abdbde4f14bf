//! The docs name only commands that exist: every `duckmesh …` command and `just …` recipe an
//! operator may copy from README.md, docs/**/*.md or the Helm chart's notes
//! (charts/**/*.md, charts/**/NOTES.txt) is checked against the real binary and the justfile.
//!
//! # What counts as a command
//!
//! Only text meant to be run is read, never prose:
//!
//! - **Command lines**: every line of a fenced code block whose info string is empty or a shell
//!   (`bash`, `sh`, `shell`, `console`, `text`); every line of a `NOTES.txt` (its Go template
//!   actions `{{ … }}` removed first). A line ending in `\` continues on the next one; a
//!   `$ ` prompt is dropped.
//! - **Inline code spans** (`` `…` ``) outside code blocks, each read as one command line.
//!
//! A line is split into words as a shell would (quotes group, a word starting with `#` starts a
//! comment), then into simple commands at the unquoted operators `|`, `||`, `&&`, `;` and `&`.
//! A simple command is a DuckMesh command when, after any `NAME=value` assignments, its first
//! word is `duckmesh` (or a path ending in `/duckmesh`), or when a word `--` (the end of another
//! program's options, as in `kubectl exec … -- duckmesh status`) is followed by `duckmesh`. So
//! `kubectl -n duckmesh …`, `deploy/duckmesh-api`, `helm install duckmesh …`, crate names like
//! `duckmesh-query` and a bare `` `duckmesh` `` are not commands. A simple command whose first
//! word is `just` names the recipe in its first word that is not a flag.
//!
//! # What is checked
//!
//! - The subcommand path: the words after `duckmesh` are subcommands for as long as the command
//!   reached so far has subcommands (its `--help` lists `Commands:`): `duckmesh read-only on` is
//!   `read-only` then `on`, `duckmesh compact trips` is `compact` with the argument `trips`.
//!   A word there that looks like a subcommand (`[a-z][a-z0-9-]*`) must be one (listed, or
//!   hidden but answering `--help`); `on|off|status`
//!   is three alternatives, each checked; a placeholder (`<command>`) ends the path unchecked.
//!   `duckmesh <path…> --help` must exit 0 (run once per distinct path).
//! - Every long flag (`--name`, `--name=value`, `[--name …]`) of the command, outside quotes
//!   and before a bare `--`, must appear in that `--help` output.
//! - Every `just` recipe must be one of `just --summary` (the justfile parsed when `just` is
//!   not installed).
//!
//! A failure lists `file:line` and the command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Fence info strings whose lines are command lines.
const SHELL_FENCES: [&str; 6] = ["", "bash", "sh", "shell", "console", "text"];

/// One command line found in a document.
#[derive(Debug, Clone)]
struct Line {
    /// `file:line`, relative to the repository.
    place: String,
    /// The text, continuations joined.
    text: String,
}

/// A word of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    /// Some of it was quoted: never an operator, a flag or a subcommand.
    quoted: bool,
}

/// One command found: the program (`duckmesh` or `just`) and its arguments.
#[derive(Debug, Clone)]
struct Found {
    place: String,
    program: &'static str,
    args: Vec<Word>,
}

impl Found {
    fn display(&self) -> String {
        let args: Vec<&str> = self.args.iter().map(|word| word.text.as_str()).collect();
        format!("{} {}", self.program, args.join(" ")).trim_end().to_owned()
    }
}

/// The documents to read: README.md, docs/**/*.md, charts/**/*.md and charts/**/NOTES.txt.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    let mut files = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut files, &|path| path.extension().is_some_and(|ext| ext == "md"));
    walk(&root.join("charts"), &mut files, &|path| {
        path.extension().is_some_and(|ext| ext == "md") || path.file_name().is_some_and(|name| name == "NOTES.txt")
    });
    files.sort();
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, keep: &dyn Fn(&Path) -> bool) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, files, keep);
        } else if keep(&path) {
            files.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    let root = Path::new(ROOT).canonicalize().expect("the repository");
    let path = path.canonicalize().expect("a document");
    path.strip_prefix(&root).unwrap_or(&path).display().to_string()
}

/// The command lines of one document (see the module docs).
fn command_lines(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let name = relative(path);
    if path.file_name().is_some_and(|file| file == "NOTES.txt") {
        let lines: Vec<(usize, String)> =
            text.lines().enumerate().map(|(index, line)| (index + 1, strip_template(line))).collect();
        return joined(&name, &lines);
    }
    let mut found = Vec::new();
    let mut fence: Option<(String, bool)> = None;
    let mut block: Vec<(usize, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if let Some((marker, shell)) = &fence {
            if trimmed.starts_with(marker.as_str()) && trimmed.trim_start_matches('`').trim().is_empty() {
                if *shell {
                    found.extend(joined(&name, &block));
                }
                block.clear();
                fence = None;
            } else {
                block.push((number, line.to_owned()));
            }
            continue;
        }
        if trimmed.starts_with("```") {
            let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
            let info = trimmed[ticks..].split_whitespace().next().unwrap_or("").to_owned();
            fence = Some(("`".repeat(ticks), SHELL_FENCES.contains(&info.as_str())));
            continue;
        }
        for span in code_spans(line) {
            found.push(Line { place: format!("{name}:{number}"), text: span });
        }
    }
    found
}

/// Lines of a code block or NOTES.txt, a trailing `\` joining the next line.
fn joined(name: &str, lines: &[(usize, String)]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (number, line) in lines {
        let text = line.trim();
        let text = text.strip_prefix("$ ").unwrap_or(text);
        let (start, mut joined) = pending.take().unwrap_or((*number, String::new()));
        match text.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(text);
                out.push(Line { place: format!("{name}:{start}"), text: joined });
            }
        }
    }
    if let Some((start, text)) = pending {
        out.push(Line { place: format!("{name}:{start}"), text });
    }
    out
}

/// A NOTES.txt line without its Go template actions.
fn strip_template(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push(' ');
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The inline code spans of a Markdown line (a run of n backticks closes at the next run of n).
fn code_spans(line: &str) -> Vec<String> {
    let bytes = line.as_bytes();
    let mut spans = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'`' {
            index += 1;
            continue;
        }
        let open = bytes[index..].iter().take_while(|byte| **byte == b'`').count();
        let start = index + open;
        let mut cursor = start;
        let mut closed = None;
        while cursor < bytes.len() {
            if bytes[cursor] == b'`' {
                let run = bytes[cursor..].iter().take_while(|byte| **byte == b'`').count();
                if run == open {
                    closed = Some(cursor);
                    break;
                }
                cursor += run;
            } else {
                cursor += 1;
            }
        }
        match closed {
            Some(end) => {
                spans.push(line[start..end].trim().to_owned());
                index = end + open;
            }
            None => index = start,
        }
    }
    spans
}

/// Shell-like words: quotes group and mark a word quoted, `\` escapes, an unquoted `#` at the
/// start of a word starts a comment, and the operators `|`, `||`, `&&`, `;`, `&` are words of
/// their own (`on|off` inside a word stays one word: alternatives, not a pipe).
fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    let mut chars = text.chars().peekable();
    let flush = |current: &mut String, quoted: &mut bool, started: &mut bool, out: &mut Vec<Word>| {
        if *started {
            out.push(Word { text: std::mem::take(current), quoted: *quoted });
        }
        *quoted = false;
        *started = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                quoted = true;
                started = true;
                for inner in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                    current.push(inner);
                }
            }
            '\\' => {
                started = true;
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '#' if !started => break,
            c if c.is_whitespace() => flush(&mut current, &mut quoted, &mut started, &mut out),
            ';' => {
                flush(&mut current, &mut quoted, &mut started, &mut out);
                out.push(Word { text: ";".into(), quoted: false });
            }
            '|' | '&' if !started || chars.peek().is_none_or(|next| next.is_whitespace() || *next == c) => {
                flush(&mut current, &mut quoted, &mut started, &mut out);
                let mut operator = c.to_string();
                if chars.peek() == Some(&c) {
                    chars.next();
                    operator.push(c);
                }
                out.push(Word { text: operator, quoted: false });
            }
            c => {
                started = true;
                current.push(c);
            }
        }
    }
    flush(&mut current, &mut quoted, &mut started, &mut out);
    out
}

fn is_operator(word: &Word) -> bool {
    !word.quoted && matches!(word.text.as_str(), "|" | "||" | "&&" | ";" | "&")
}

fn is_assignment(word: &Word) -> bool {
    let Some((name, _)) = word.text.split_once('=') else { return false };
    !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_duckmesh(word: &Word) -> bool {
    !word.quoted && (word.text == "duckmesh" || word.text.ends_with("/duckmesh"))
}

/// The `duckmesh` and `just` commands of one command line.
fn commands(line: &Line) -> Vec<Found> {
    let words = words(&line.text);
    let mut found = Vec::new();
    for simple in words.split(is_operator) {
        let start = simple.iter().position(|word| !is_assignment(word)).unwrap_or(simple.len());
        let simple = &simple[start..];
        let Some(first) = simple.first() else { continue };
        let found_at = |program, args: &[Word]| Found { place: line.place.clone(), program, args: args.to_vec() };
        if is_duckmesh(first) {
            found.push(found_at("duckmesh", &simple[1..]));
        } else if !first.quoted && first.text == "just" {
            found.push(found_at("just", &simple[1..]));
        } else if let Some(at) =
            simple.windows(2).position(|pair| !pair[0].quoted && pair[0].text == "--" && is_duckmesh(&pair[1]))
        {
            found.push(found_at("duckmesh", &simple[at + 2..]));
        }
    }
    found
}

/// `duckmesh <path…> --help`, run once per path: its output when it exits 0.
struct Cli {
    helps: BTreeMap<Vec<String>, Result<String, String>>,
}

impl Cli {
    fn help(&mut self, path: &[String]) -> Result<String, String> {
        self.helps
            .entry(path.to_vec())
            .or_insert_with(|| {
                let scratch = std::env::temp_dir();
                let output = Command::new(env!("CARGO_BIN_EXE_duckmesh"))
                    .args(path)
                    .arg("--help")
                    .current_dir(scratch)
                    .output()
                    .expect("duckmesh runs");
                if output.status.success() {
                    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
                } else {
                    Err(format!(
                        "`duckmesh {} --help` exited with {}: {}",
                        path.join(" "),
                        output.status,
                        String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or("")
                    ))
                }
            })
            .clone()
    }
}

/// The subcommands a `--help` output lists under `Commands:`.
fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line[2..].starts_with(' '))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn looks_like_subcommand(text: &str) -> bool {
    text.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The long flags of `args`: unquoted words (or bracketed ones) starting with `--`, up to a
/// bare `--`.
fn long_flags(args: &[Word]) -> Vec<String> {
    args.iter()
        .filter(|word| !word.quoted)
        .map(|word| word.text.trim_start_matches(['[', '(']))
        .take_while(|text| *text != "--")
        .filter_map(|text| text.strip_prefix("--"))
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>())
        .filter(|name| !name.is_empty())
        .map(|name| format!("--{name}"))
        .collect()
}

/// Whether `help` documents `flag` (followed by neither a letter, a digit nor `-`).
fn documents_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag)
        .any(|(at, _)| help[at + flag.len()..].chars().next().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-')))
}

/// Checks one `duckmesh` command; returns what is wrong.
fn check_duckmesh(cli: &mut Cli, found: &Found) -> Vec<String> {
    let mut problems = Vec::new();
    let mut paths: Vec<Vec<String>> = vec![vec![]];
    let mut consumed = 0;
    for word in &found.args {
        if word.quoted || word.text.starts_with('-') {
            break;
        }
        let alternatives: Vec<&str> = word.text.split('|').collect();
        if !alternatives.iter().all(|text| looks_like_subcommand(text)) {
            break;
        }
        let mut next = Vec::new();
        let mut leaf = false;
        for path in &paths {
            let help = match cli.help(path) {
                Ok(help) => help,
                Err(error) => {
                    problems.push(error);
                    return problems;
                }
            };
            let known = subcommands(&help);
            if known.is_empty() {
                leaf = true;
                continue;
            }
            for alternative in &alternatives {
                let mut longer = path.clone();
                longer.push((*alternative).to_owned());
                // A hidden subcommand is not listed, but its --help answers.
                if known.contains(*alternative) || cli.help(&longer).is_ok() {
                    next.push(longer);
                } else {
                    let command = ["duckmesh"].into_iter().chain(path.iter().map(String::as_str)).collect::<Vec<_>>();
                    problems.push(format!("`{}` has no subcommand `{alternative}`", command.join(" ")));
                }
            }
        }
        if leaf || next.is_empty() {
            break;
        }
        paths = next;
        consumed += 1;
    }
    let flags = long_flags(&found.args[consumed..]);
    for path in &paths {
        match cli.help(path) {
            Ok(help) => {
                for flag in &flags {
                    if !documents_flag(&help, flag) {
                        problems.push(format!("`duckmesh {} --help` does not list {flag}", path.join(" ")));
                    }
                }
            }
            Err(error) => problems.push(error),
        }
    }
    problems
}

/// The justfile's recipes: `just --summary`, or the justfile parsed when `just` is missing.
fn recipes() -> BTreeSet<String> {
    let justfile = Path::new(ROOT).join("justfile");
    if let Ok(output) = Command::new("just").arg("--justfile").arg(&justfile).arg("--summary").output()
        && output.status.success()
    {
        return String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_owned).collect();
    }
    let text = std::fs::read_to_string(&justfile).expect("reading the justfile");
    text.lines()
        .filter(|line| line.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .filter(|line| !line.starts_with("set ") && !line.contains(":="))
        .filter_map(|line| line.split_once(':').map(|(head, _)| head))
        .filter_map(|head| head.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn docs_name_only_commands_that_exist() {
    let mut cli = Cli { helps: BTreeMap::new() };
    let recipes = recipes();
    assert!(recipes.contains("test") && recipes.contains("lint"), "the justfile's recipes: {recipes:?}");
    let mut problems = Vec::new();
    let (mut commands_checked, mut recipes_checked) = (BTreeSet::new(), BTreeSet::new());
    for document in documents() {
        for line in command_lines(&document) {
            for found in commands(&line) {
                match found.program {
                    "just" => {
                        let Some(recipe) = found.args.iter().find(|word| !word.text.starts_with('-')) else {
                            continue;
                        };
                        recipes_checked.insert(recipe.text.clone());
                        if !recipes.contains(&recipe.text) {
                            problems.push(format!(
                                "{}: `{}`: the justfile has no recipe `{}`",
                                found.place,
                                found.display(),
                                recipe.text
                            ));
                        }
                    }
                    _ => {
                        commands_checked.insert(found.display());
                        for problem in check_duckmesh(&mut cli, &found) {
                            problems.push(format!("{}: `{}`: {problem}", found.place, found.display()));
                        }
                    }
                }
            }
        }
    }
    let paths = cli.helps.keys().filter(|path| !path.is_empty()).count();
    println!(
        "checked {} distinct duckmesh command lines ({paths} subcommands run with --help) and {} just recipes:",
        commands_checked.len(),
        recipes_checked.len()
    );
    for command in commands_checked.iter().chain(&recipes_checked) {
        println!("  {command}");
    }
    assert!(paths >= 10, "suspiciously few duckmesh commands found in the docs: {commands_checked:?}");
    assert!(problems.is_empty(), "the docs name commands that do not exist:\n{}", problems.join("\n"));
}

#[test]
fn the_extraction_rule() {
    let line = |text: &str| Line { place: "doc.md:1".into(), text: text.into() };
    let shown = |text: &str| commands(&line(text)).iter().map(Found::display).collect::<Vec<_>>();
    assert_eq!(shown("duckmesh crds | kubectl apply -f -"), ["duckmesh crds"]);
    assert_eq!(shown("DUCKMESH_LOG=debug duckmesh gc trips --dry-run # a comment"), ["duckmesh gc trips --dry-run"]);
    assert_eq!(shown("kubectl -n duckmesh exec deploy/duckmesh-operator -- duckmesh status"), ["duckmesh status"]);
    assert_eq!(shown("kubectl -n duckmesh logs deploy/duckmesh-api"), Vec::<String>::new());
    assert_eq!(shown("helm install duckmesh charts/duckmesh"), Vec::<String>::new());
    assert_eq!(shown("just test && just invariants 42"), ["just test", "just invariants 42"]);
    assert_eq!(shown("duckmesh read-only on|off|status"), ["duckmesh read-only on|off|status"]);
    let found = commands(&line(r#"duckmesh query "SELECT '--x'" [--format table|json]"#));
    assert_eq!(long_flags(&found[0].args), ["--format"]);
    assert_eq!(code_spans("run `duckmesh gc x` or ``just `lint` ``"), ["duckmesh gc x", "just `lint`"]);
    assert_eq!(
        strip_template(r#"  duckmesh query{{- if x }} --api-key "$K"{{ end }}"#),
        "  duckmesh query  --api-key \"$K\" "
    );
    assert_eq!(
        subcommands("Usage: x\n\nCommands:\n  on      Turn on\n          more\n  off     Off\n\nOptions:\n  -h\n"),
        BTreeSet::from(["on".to_owned(), "off".to_owned()])
    );
    assert!(documents_flag("  --dry-run  List", "--dry-run") && !documents_flag("  --dry-run-x", "--dry-run"));
}
