//! The manual pages under `man/` are generated from the clap definitions:
//! `man/evfs.1` and one page per subcommand (`evfs-backup.1`,
//! `evfs-key-gen.1`, ...). This test fails when a committed page is stale or
//! missing, or when an old page lingers; `EVFS_UPDATE_MAN=1 cargo test --release
//! --test cli man` rewrites them.
//!
//! clap_mangen renders a command's `after_help` as one filled paragraph; here
//! it is split into sections: its `Exit status:` block (one `  N  meaning`
//! line per code, longer meanings continued on lines indented further)
//! becomes EXIT STATUS, the other text before `Example:`/`Examples:` NOTES,
//! and the examples EXAMPLES in no-fill mode, one command per line. SEE ALSO
//! names the root page, the parent and the subcommands of a page, and the
//! format documents in the evfs sources: only pages that exist.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::Man;
use roff::{Roff, bold, roman};

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

/// Every page, as (file name, contents), the root first.
fn pages() -> Vec<(String, String)> {
    let mut root = evfs::cli::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut cmds = Vec::new();
    collect(&root, None, &mut cmds);
    let names: Vec<String> = cmds.iter().map(|(cmd, _)| page_name(cmd)).collect();
    cmds.iter()
        .map(|(cmd, parent)| {
            let see = see_also(cmd, parent.as_deref(), &names);
            (format!("{}.1", page_name(cmd)), render(cmd, &see))
        })
        .collect()
}

/// Every visible command of the tree, with the page name of its parent.
fn collect(
    cmd: &clap::Command,
    parent: Option<String>,
    out: &mut Vec<(clap::Command, Option<String>)>,
) {
    out.push((cmd.clone(), parent));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, Some(page_name(cmd)), out);
    }
}

/// The pages SEE ALSO names: every other page from the root; from a
/// subcommand, the root, its parent (where that is not the root) and its
/// own subcommands. Parents come from the command tree, not from the page
/// name: `evfs-key-store-passphrase` is a child of `evfs-key`.
fn see_also(cmd: &clap::Command, parent: Option<&str>, all: &[String]) -> Vec<String> {
    let name = page_name(cmd);
    let Some(parent) = parent else {
        return all.iter().filter(|n| **n != name).cloned().collect();
    };
    let mut see = vec![all[0].clone()];
    if parent != all[0] {
        see.push(parent.to_string());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        see.push(format!("{name}-{}", sub.get_name()));
    }
    see
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn render(cmd: &clap::Command, see: &[String]) -> String {
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
    let after = cmd
        .get_after_help()
        .map(|a| a.to_string())
        .unwrap_or_default();
    after_help(&mut extra, &after);
    extra.control("SH", ["SEE ALSO"]);
    let see: Vec<String> = see.iter().map(|n| format!("{n}(1)")).collect();
    extra.text([roman(format!(
        "{}; the formats of the EMD and of the backup stream, formats/EMD.md and formats/STREAM.md in the evfs sources.",
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

/// The `Exit status:` block of an `after_help` text: (code, meaning) per
/// code, and the lines left around it.
fn exit_status(lines: &[&str]) -> (Vec<(String, String)>, Vec<String>) {
    let Some(start) = lines.iter().position(|l| l.trim() == "Exit status:") else {
        return (Vec::new(), lines.iter().map(|l| l.to_string()).collect());
    };
    let end = lines[start..]
        .iter()
        .position(|l| l.trim().is_empty())
        .map_or(lines.len(), |n| start + n);
    let mut codes: Vec<(String, String)> = Vec::new();
    for line in &lines[start + 1..end] {
        let text = line.trim();
        match text.split_once("  ") {
            Some((code, meaning)) if code.bytes().all(|b| b.is_ascii_digit()) => {
                codes.push((code.to_string(), meaning.trim().to_string()));
            }
            _ => {
                let (_, meaning) = codes
                    .last_mut()
                    .unwrap_or_else(|| panic!("an exit status line without a code: {line:?}"));
                meaning.push(' ');
                meaning.push_str(text);
            }
        }
    }
    let rest = lines[..start]
        .iter()
        .chain(&lines[end..])
        .map(|l| l.to_string())
        .collect();
    (codes, rest)
}

/// EXIT STATUS (one tagged paragraph per code), NOTES (filled paragraphs;
/// indented blocks kept as they are) and EXAMPLES (one command per line)
/// from an `after_help` text, in the order man-pages(7) gives them.
fn after_help(roff: &mut Roff, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let split = lines
        .iter()
        .position(|l| matches!(l.trim(), "Example:" | "Examples:"))
        .unwrap_or(lines.len());
    let (codes, notes) = exit_status(&lines[..split]);
    if !codes.is_empty() {
        roff.control("SH", ["EXIT STATUS"]);
        for (code, meaning) in &codes {
            roff.control("TP", []);
            roff.text([bold(code.as_str())]);
            roff.text([roman(meaning.as_str())]);
        }
    }
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
                    roff.text([roman(l.as_str())]);
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
        "stale man pages: {stale:?}; run `EVFS_UPDATE_MAN=1 cargo test --release --test cli man` and commit man/"
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

/// Every command's exit codes, from its `after_help` as the pages render it.
fn exit_codes(cmd: &clap::Command) -> Vec<u8> {
    let text = cmd
        .get_after_help()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    exit_status(&lines)
        .0
        .iter()
        .map(|(code, _)| code.parse().expect("a numeric exit code"))
        .collect()
}

#[test]
fn every_page_has_an_exit_status_and_the_root_has_the_whole_table() {
    let mut root = evfs::cli::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut cmds = Vec::new();
    collect(&root, None, &mut cmds);
    for (cmd, parent) in &cmds {
        let name = page_name(cmd);
        let codes = exit_codes(cmd);
        if parent.is_none() {
            assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6], "{name}");
        }
        // Success, and clap's usage errors, for every command.
        assert!(
            codes.starts_with(&[0]) && codes.contains(&2),
            "{name}: exit codes {codes:?}"
        );
        assert!(
            codes.windows(2).all(|w| w[0] < w[1]) && codes.iter().all(|c| *c <= 6),
            "{name}: exit codes {codes:?} are not the table's, in order"
        );
    }
    for (file, text) in pages() {
        assert_eq!(text.matches(".SH \"EXIT STATUS\"").count(), 1, "{file}");
        assert!(text.contains(".TP\n\\fB0\\fR\n"), "{file}");
    }
    // `check` is the only command that reports a dirty volume.
    let check = root.find_subcommand("check").unwrap();
    assert!(exit_codes(check).contains(&6));
    let backup = root.find_subcommand("backup").unwrap();
    assert_eq!(exit_codes(backup), [0, 1, 2, 3, 4, 5]);
}

/// The page names a page refers to as `name(1)`, with roff's `\-` read as `-`.
fn references(text: &str) -> Vec<String> {
    let text = text.replace("\\-", "-");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("(1)") {
        let before = &rest[..at];
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &before[start..];
        if !name.is_empty() {
            out.push(name.to_string());
        }
        rest = &rest[at + 3..];
    }
    out
}

/// The lines of a page's SEE ALSO section.
fn see_also_section(text: &str) -> &str {
    let start = text
        .find(".SH \"SEE ALSO\"\n")
        .map(|i| i + ".SH \"SEE ALSO\"\n".len())
        .unwrap_or(text.len());
    let end = text[start..]
        .find("\n.SH ")
        .map_or(text.len(), |i| start + i);
    &text[start..end]
}

#[test]
fn every_page_a_page_refers_to_exists_in_man() {
    let dir = man_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    files.sort();
    assert!(files.len() > 1, "no pages in {}", dir.display());
    let exists = |name: &str| dir.join(format!("{name}.1")).is_file();
    let mut dangling = Vec::new();
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let see = see_also_section(&text);
        let named = references(see);
        assert!(!named.is_empty(), "{file}: SEE ALSO names no page");
        // Every page SEE ALSO names, whatever its section, is one of man/.
        for word in see.replace("\\-", "-").split([',', ';', ' ', '\n']) {
            if let Some((name, section)) = word.strip_suffix(')').and_then(|w| w.split_once('('))
                && !dir.join(format!("{name}.{section}")).is_file()
            {
                dangling.push(format!("{file}: SEE ALSO {word}"));
            }
        }
        for name in references(&text) {
            if name.starts_with("evfs") && !exists(&name) {
                dangling.push(format!("{file}: {name}(1)"));
            }
        }
    }
    assert!(
        dangling.is_empty(),
        "pages referring to pages that man/ does not have: {dangling:#?}"
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
