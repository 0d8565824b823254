//! The manual pages under `man/` are generated from the clap definitions:
//! `man/evfs.1` and one page per subcommand (`evfs-backup.1`,
//! `evfs-key-gen.1`, ...). This test fails when a committed page is stale or
//! missing, or when an old page lingers; `EVFS_UPDATE_MAN=1 cargo test --test cli
//! man` rewrites them.
//!
//! clap_mangen renders a command's `after_help` as one filled paragraph; here
//! the text before `Example:`/`Examples:` becomes a NOTES section and the
//! examples an EXAMPLES section in no-fill mode, one command per line.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::Man;
use roff::{Roff, roman};

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

/// Every page, as (file name, contents), the root first.
fn pages() -> Vec<(String, String)> {
    let mut root = evfs::cli::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut cmds = Vec::new();
    collect(&root, &mut cmds);
    let names: Vec<String> = cmds.iter().map(page_name).collect();
    cmds.iter()
        .map(|cmd| (format!("{}.1", page_name(cmd)), render(cmd, &names)))
        .collect()
}

fn collect(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    out.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn render(cmd: &clap::Command, all: &[String]) -> String {
    let name = page_name(cmd);
    let version = cmd.get_version().unwrap_or_default();
    let man = Man::new(cmd.clone()).source(format!("evfs {version}"));
    // Each clap_mangen section renders its own roff preamble; keep the first.
    let mut page = String::new();
    page.push_str(&rendered(|w| man.render_title(w), false));
    page.push_str(&rendered(|w| man.render_name_section(w), true));
    page.push_str(&rendered(|w| man.render_synopsis_section(w), true));
    page.push_str(&rendered(|w| man.render_description_section(w), true));
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        page.push_str(&rendered(|w| man.render_options_section(w), true));
    }
    if cmd.has_subcommands() {
        page.push_str(&rendered(|w| man.render_subcommands_section(w), true));
    }
    let mut extra = Roff::new();
    if let Some(after) = cmd.get_after_help() {
        after_help(&mut extra, &after.to_string());
    }
    extra.control("SH", ["SEE ALSO"]);
    let see: Vec<String> = if name == "evfs" {
        all.iter().skip(1).map(|n| format!("{n}(1)")).collect()
    } else {
        let parent = name.rsplit_once('-').map_or("evfs", |(p, _)| p);
        let mut v = vec!["evfs(1)".to_string()];
        if parent != "evfs" {
            v.push(format!("{parent}(1)"));
        }
        v
    };
    extra.text([roman(format!(
        "{}; the product contract SPEC.md and the formats under formats/ in the evfs sources.",
        see.join(", ")
    ))]);
    page.push_str(&rendered(|w| extra.to_writer(w), true));
    page.push_str(&rendered(|w| man.render_version_section(w), true));
    page
}

/// One section's roff, without the preamble when `strip`.
fn rendered(f: impl Fn(&mut dyn std::io::Write) -> std::io::Result<()>, strip: bool) -> String {
    let mut buf = Vec::new();
    f(&mut buf).expect("render into memory");
    let text = String::from_utf8(buf).expect("UTF-8 page");
    let preamble = Roff::new().render();
    match text.strip_prefix(preamble.as_str()) {
        Some(rest) if strip => rest.to_string(),
        _ => text,
    }
}

/// NOTES (filled paragraphs; indented blocks kept as they are) and EXAMPLES
/// (one command per line) from an `after_help` text.
fn after_help(roff: &mut Roff, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let split = lines
        .iter()
        .position(|l| matches!(l.trim(), "Example:" | "Examples:"))
        .unwrap_or(lines.len());
    let notes = &lines[..split];
    if notes.iter().any(|l| !l.trim().is_empty()) {
        roff.control("SH", ["NOTES"]);
        for para in notes.split(|l| l.trim().is_empty()) {
            if para.is_empty() {
                continue;
            }
            roff.control("PP", []);
            let preformatted = para.iter().skip(1).any(|l| l.starts_with(' '));
            if preformatted {
                roff.control("nf", []);
                for l in para {
                    roff.text([roman(*l)]);
                }
                roff.control("fi", []);
            } else {
                roff.text([roman(para.join(" "))]);
            }
        }
    }
    if split < lines.len() {
        roff.control("SH", ["EXAMPLES"]);
        roff.control("PP", []);
        roff.control("nf", []);
        for l in &lines[split + 1..] {
            roff.text([roman(l.trim())]);
        }
        roff.control("fi", []);
    }
}

#[test]
fn man_pages_are_current() {
    let dir = man_dir();
    let pages = pages();
    let update = std::env::var_os("EVFS_UPDATE_MAN").is_some_and(|v| v == "1");
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut stale = Vec::new();
    for (file, text) in &pages {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            if update {
                std::fs::write(&path, text).unwrap();
            } else {
                stale.push(file.clone());
            }
        }
    }
    // A page whose subcommand is gone.
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.ends_with(".1") && !pages.iter().any(|(f, _)| *f == file) {
            if update {
                std::fs::remove_file(entry.path()).unwrap();
            } else {
                stale.push(format!("{file} (no such command)"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale man pages: {stale:?}; run `EVFS_UPDATE_MAN=1 cargo test --test cli man` and commit man/"
    );
}

#[test]
fn every_page_has_examples_and_the_root_names_every_subcommand() {
    let pages = pages();
    let root = evfs::cli::Cli::command();
    let (_, evfs) = &pages[0];
    for sub in root.get_subcommands() {
        assert!(
            evfs.contains(&format!("evfs\\-{}(1)", sub.get_name())),
            "evfs.1 does not name {}",
            sub.get_name()
        );
    }
    for (file, text) in &pages {
        assert!(text.starts_with(&Roff::new().render()), "{file}");
        assert_eq!(text.matches(".TH ").count(), 1, "{file}");
        assert!(text.contains(".SH EXAMPLES"), "{file} has no examples");
    }
    let backup = &pages.iter().find(|(f, _)| f == "evfs-backup.1").unwrap().1;
    assert!(
        backup.contains("evfs backup vol.img vol\\-copy.img \\-k alice.k1"),
        "{backup}"
    );
}

#[test]
fn man_renders_the_root_page_with_every_subcommand() {
    if !crate::common::tools::have_tools("man_renders", &["man"]) {
        return;
    }
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(man_dir().join("evfs.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        crate::common::tools::unavailable(
            "man_renders",
            &format!(
                "man -l does not render here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return;
    }
    for sub in evfs::cli::Cli::command().get_subcommands() {
        assert!(
            text.contains(&format!("evfs-{}(1)", sub.get_name())),
            "man -l man/evfs.1 does not show {}: {text}",
            sub.get_name()
        );
    }
    assert!(text.contains("EXAMPLES"), "{text}");
}

#[test]
fn bash_completions_know_backup() {
    let env = crate::common::Env::new();
    let script = env.ok(&["completions", "bash"]);
    assert!(script.contains("backup"), "{script}");
    assert!(script.contains("complete -F"), "{script}");
    env.expect(2, &["completions", "tcsh"]);
}
