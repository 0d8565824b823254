//! The repository carries its own reference: README.md, ARCHITECTURE.md,
//! CHANGELOG.md, the format documents under `formats/` and the manual pages
//! under `man/` refer to nothing outside it, and every relative link in the
//! Markdown files leads to a file or directory that exists. ARCHITECTURE.md
//! names only source paths that exist, and puts every top-level module of
//! `src/` on its map.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, ARCHITECTURE.md, CHANGELOG.md and every file under `formats/`
/// and `man/`, sorted.
fn reference_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("CHANGELOG.md"),
    ];
    for dir in ["formats", "man"] {
        files.extend(crate::common::files_under(&root.join(dir)));
    }
    files.sort();
    files
}

/// The targets of the inline Markdown links `[text](target)` in `text`,
/// outside code spans and fenced code blocks (where `](` is code, not a link).
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans are the odd-numbered pieces between backticks; a
        // link's text may be one (`[`man/`](man/)`), its target is not.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, piece)| piece)
            .collect();
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            links.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    links
}

/// Whether a link target is a path (not another site, not an anchor).
fn is_relative(target: &str) -> bool {
    !(target.contains("://") || target.starts_with("mailto:") || target.starts_with('#'))
}

#[test]
fn the_reference_names_nothing_outside_the_repository() {
    let root = root();
    let mut found = Vec::new();
    for path in reference_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            if ["../shared", "/shared/", "SPEC.md"]
                .iter()
                .any(|outside| line.contains(outside))
            {
                found.push(format!("{name}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the reference must not point outside the repository: {found:#?}"
    );
}

#[test]
fn every_relative_markdown_link_resolves() {
    let root = root();
    let mut markdown: Vec<PathBuf> = reference_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    markdown.sort();
    assert!(markdown.len() >= 4, "{markdown:?}");
    let mut broken = Vec::new();
    for path in &markdown {
        let text = std::fs::read_to_string(path).unwrap();
        let base = path.parent().unwrap();
        for link in markdown_links(&text) {
            if !is_relative(&link) {
                continue;
            }
            let file = link.split('#').next().unwrap_or_default();
            let target = base.join(file);
            let inside = resolved(&target).is_some_and(|t| t.starts_with(resolved(&root).unwrap()));
            if file.is_empty() || !target.exists() || !inside {
                broken.push(format!(
                    "{}: ]({link})",
                    path.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that lead nowhere in the repository: {broken:#?}"
    );
}

/// The code spans of `text` that are paths under `src/` (`src/ops/`,
/// `src/volume/transaction.rs`), outside fenced code blocks.
fn source_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans are the odd-numbered pieces between backticks.
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("src/") {
                paths.push(span.to_string());
            }
        }
    }
    paths
}

#[test]
fn the_architecture_names_only_source_paths_that_exist() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let paths = source_paths(&text);
    assert!(paths.len() >= 20, "{paths:?}");
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| {
            let path = root.join(p);
            let is_dir = p.ends_with('/');
            !(if is_dir {
                path.is_dir()
            } else {
                path.is_file()
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names source paths that do not exist (a directory ends in /): {missing:#?}"
    );
}

#[test]
fn the_architecture_maps_every_top_level_module() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let named = source_paths(&text);
    let mut unmapped = Vec::new();
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if entry.file_type().unwrap().is_dir() {
            format!("src/{name}/")
        } else if name.ends_with(".rs") {
            format!("src/{name}")
        } else {
            continue;
        };
        if !named.contains(&path) {
            unmapped.push(path);
        }
    }
    unmapped.sort();
    assert!(
        unmapped.is_empty(),
        "top-level modules that ARCHITECTURE.md does not name (as `src/dir/` or `src/file.rs`): {unmapped:#?}"
    );
}

fn resolved(path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok()
}

#[test]
fn links_are_found_outside_code_only() {
    let text = "see [the format](formats/EMD.md) and [`SPEC`](../shared/SPEC.md).\n\
                `[code](span.md)` is not one\n```sh\n[not](a-link.md)\n```\n";
    assert_eq!(
        markdown_links(text),
        ["formats/EMD.md", "../shared/SPEC.md"]
    );
}

/// The command line only parses, resolves, calls a use-case and prints:
/// no file of `src/commands/` grows past 250 lines (ARCHITECTURE.md).
#[test]
fn no_command_file_is_over_250_lines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands");
    let mut long = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            seen += 1;
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            if lines > 250 {
                long.push((path, lines));
            }
        }
    }
    assert!(seen > 10, "src/commands/ has only {seen} files");
    assert!(long.is_empty(), "over 250 lines: {long:?}");
}
