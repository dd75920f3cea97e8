//! The layout's one rule, checked: data flows one way, so no module imports one on a
//! higher plane (README, Development). Reads every source file under `src/` (unit
//! tests aside, which may reach anywhere) and names each import that goes up.

use std::path::{Path, PathBuf};

/// From the bottom up; a module may import its own plane and those below.
const PLANES: &[&[&str]] = &[
    &["secret", "settings", "text", "http", "shutdown", "watchdog"],
    &["ledger"],
    &["storage"],
    &["event", "delivery", "pop3", "oauth2"],
    &["mailbox"],
    &["ops"],
    &["service"],
    &["config"],
];

fn plane(module: &str) -> Option<usize> {
    PLANES.iter().position(|p| p.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // `foo/tests.rs` and `foo/tests/…` are unit tests.
            if path.file_name().is_some_and(|n| n != "tests") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names after `crate::`, including those inside a
/// `crate::{…}` group.
fn imported(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            found.push(name);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn no_module_imports_one_on_a_higher_plane() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "read only {} files", files.len());
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let own = plane(&top).unwrap_or_else(|| {
            panic!("src/{top} is on no plane: add it to PLANES (and the README's layout)")
        });
        let text = std::fs::read_to_string(file).unwrap();
        // Inline unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for module in imported(code) {
            if module == top {
                continue;
            }
            match plane(&module) {
                Some(p) if p > own => upward.push(format!(
                    "src/{} ({top}) imports {module}",
                    relative.display()
                )),
                Some(_) => {}
                None => upward.push(format!(
                    "src/{} imports crate::{module}, which is on no plane",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the flow:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let found = imported("use crate::ledger::Ledger;\nuse crate::{ops::monitor::{A, B}, secret};\nlet x = crate::text::one_line(b\"\", 1);");
    assert_eq!(found, ["ledger", "ops", "secret", "text"]);
}
