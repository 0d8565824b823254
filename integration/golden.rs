//! Golden files: what users see, pinned. Each scenario runs the real binary
//! and writes a transcript (the command line, the exit code, stdout and
//! stderr) that must equal `integration/golden/<group>/<scenario>.txt`;
//! `EVFS_UPDATE_GOLDEN=1 cargo test --release --test cli golden` rewrites
//! them (and removes those of scenarios that are gone). Code may move freely
//! underneath; a change in a help text, a message, a hint, an exit code or
//! a JSON field shows up here as a diff, to be reviewed and committed.
//!
//! Every command runs as `evfs --keystore <DIR>/keystore ARGS` in a fresh
//! scratch directory `<DIR>`, with `COLUMNS=100`; the transcript shows
//! `evfs ARGS`. What differs from run to run is normalized, and nothing
//! else: the scratch directory (`<DIR>`), UUIDs (`<UUID-n>`, numbered in
//! order of appearance within a scenario, so that "the same UUID" still
//! shows), key fingerprints (`<FP-n>`), RFC 3339 times (`<TIME>`), durations
//! and rates (`<SECS>`, `<RATE>`), thread counts (`<N> threads`), process
//! ids (`process <PID>`), and the few digests of random bytes that a
//! scenario names itself (a stream's ciphertext). The data is
//! [`mixed_data`], so plaintext digests are pinned as they are.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use clap::CommandFactory;
use evfs::emd::format::{EMD_SIZE, Emd};

use crate::common::{Env, b3, mixed_data};

const MIB: usize = 1 << 20;

// ------------------------------------------------------------ the harness

/// The golden files of one group of scenarios: `integration/golden/<name>/`.
struct Group {
    name: &'static str,
    update: bool,
    written: Vec<String>,
    failures: Vec<String>,
}

impl Group {
    fn new(name: &'static str) -> Group {
        Group {
            name,
            update: std::env::var_os("EVFS_UPDATE_GOLDEN").is_some_and(|v| v == "1"),
            written: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("integration/golden")
            .join(self.name)
    }

    /// Compare `transcript` with the scenario's golden file, or rewrite it.
    fn check(&mut self, scenario: &str, transcript: Transcript) {
        let text = transcript.finish();
        let file = format!("{scenario}.txt");
        assert!(!self.written.contains(&file), "scenario {scenario} twice");
        let path = self.dir().join(&file);
        self.written.push(file);
        let golden = std::fs::read_to_string(&path).ok();
        if golden.as_deref() == Some(text.as_str()) {
            return;
        }
        if self.update {
            std::fs::create_dir_all(self.dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
            return;
        }
        let shown = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&path)
            .display()
            .to_string();
        self.failures.push(match golden {
            None => format!("{shown} is missing; this run gives:\n{text}"),
            Some(golden) => format!(
                "{shown} differs (- golden, + this run):\n{}",
                diff(&golden, &text)
            ),
        });
    }

    /// Fail with every difference at once; golden files of scenarios that
    /// are gone are stale (removed when updating).
    fn finish(mut self) {
        for entry in std::fs::read_dir(self.dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.ends_with(".txt") && !self.written.contains(&file) {
                if self.update {
                    std::fs::remove_file(entry.path()).unwrap();
                } else {
                    self.failures.push(format!(
                        "integration/golden/{}/{file} belongs to no scenario",
                        self.name
                    ));
                }
            }
        }
        assert!(
            self.failures.is_empty(),
            "{}\n\nWhat users see has changed. If that is intended, run \
             `EVFS_UPDATE_GOLDEN=1 cargo test --release --test cli golden` and commit integration/golden/.",
            self.failures.join("\n\n")
        );
    }
}

/// The commands of one scenario and what they printed, normalized when done.
struct Transcript<'e> {
    env: &'e Env,
    text: String,
    /// Values a scenario knows to be random, and what to show instead.
    random: Vec<(String, String)>,
}

impl<'e> Transcript<'e> {
    fn new(env: &'e Env) -> Transcript<'e> {
        Transcript {
            env,
            text: String::new(),
            random: Vec::new(),
        }
    }

    /// Show `value` (random bytes' digest, say) as `<name>`.
    fn random(&mut self, value: impl Into<String>, name: &str) {
        self.random.push((value.into(), format!("<{name}>")));
    }

    /// Run `evfs ARGS` (standard input empty) and record it.
    fn run(&mut self, args: &[&str]) -> Output {
        let out = self
            .env
            .cmd(args)
            .env("COLUMNS", "100")
            .env_remove("CLICOLOR_FORCE")
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run evfs");
        self.record(&shell_words(args), &out);
        out
    }

    /// Run `evfs ARGS > FILE` and record it.
    fn run_to_file(&mut self, args: &[&str], file: &str) -> Output {
        let out = self
            .env
            .process(args)
            .env("COLUMNS", "100")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null())
            .stdout(File::create(self.env.path(file)).unwrap())
            .stderr(Stdio::piped())
            .output()
            .expect("run evfs");
        self.record(&format!("{} > {file}", shell_words(args)), &out);
        out
    }

    /// Run `evfs ARGS < FILE` and record it.
    fn run_from_file(&mut self, args: &[&str], file: &str) -> Output {
        let out = self
            .env
            .process(args)
            .env("COLUMNS", "100")
            .env_remove("CLICOLOR_FORCE")
            .stdin(File::open(self.env.path(file)).unwrap())
            .output()
            .expect("run evfs");
        self.record(&format!("{} < {file}", shell_words(args)), &out);
        out
    }

    fn record(&mut self, shown: &str, out: &Output) {
        let t = &mut self.text;
        if !t.is_empty() {
            t.push('\n');
        }
        let code = out
            .status
            .code()
            .map_or_else(|| format!("killed ({:?})", out.status), |c| c.to_string());
        let _ = writeln!(t, "$ evfs {shown}\n[exit {code}]");
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let _ = writeln!(t, "[{name}]");
            let text = String::from_utf8_lossy(bytes);
            for line in text.lines() {
                let _ = writeln!(t, "|{}{line}", if line.is_empty() { "" } else { " " });
            }
            if !text.is_empty() && !text.ends_with('\n') {
                t.push_str("\\ no newline at end\n");
            }
        }
    }

    fn finish(self) -> String {
        let mut text = self.text;
        for (value, shown) in &self.random {
            text = text.replace(value.as_str(), shown);
        }
        let dir = self.env.dir.path();
        let mut dirs = vec![dir.display().to_string()];
        if let Ok(real) = dir.canonicalize() {
            dirs.push(real.display().to_string());
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for d in dirs {
            text = text.replace(&d, "<DIR>");
        }
        normalize(&text)
    }
}

/// `args` as a shell would need them typed.
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A line diff of `old` and `new` (longest common subsequence), with a
/// little context around each change.
fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            lines.push(('+', b[j]));
            j += 1;
        } else {
            lines.push(('-', a[i]));
            i += 1;
        }
    }
    const CONTEXT: usize = 3;
    let near = |k: usize| {
        lines[k.saturating_sub(CONTEXT)..(k + CONTEXT + 1).min(lines.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in lines.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            let _ = writeln!(out, "{c} {line}");
        } else {
            skipped = true;
        }
    }
    out
}

// ------------------------------------------------------------ normalizing

/// One piece of a pattern.
#[derive(Clone, Copy)]
enum P {
    Lit(&'static str),
    /// Exactly this many hex digits (lower case, as evfs prints them).
    Hex(usize),
    /// Exactly this many decimal digits.
    Digits(usize),
    /// One or more decimal digits.
    Number,
    /// A decimal number as Rust or serde_json print an f64: `0.0123`,
    /// `12`, `1.5e-5`.
    Float,
    /// `.` and digits, or nothing.
    OptFraction,
    /// This text, or nothing.
    Opt(&'static str),
    /// A unit of `size::human`.
    Unit,
}

/// The length of `pattern` matched at the start of `s`.
fn match_len(s: &str, pattern: &[P]) -> Option<usize> {
    let b = s.as_bytes();
    let mut at = 0;
    let run = |at: usize, f: fn(u8) -> bool| b[at..].iter().take_while(|c| f(**c)).count();
    for p in pattern {
        match *p {
            P::Lit(l) | P::Opt(l) if s[at..].starts_with(l) => at += l.len(),
            P::Lit(_) => return None,
            P::Opt(_) => {}
            P::Hex(n) => {
                if run(at, |c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) < n {
                    return None;
                }
                at += n;
            }
            P::Digits(n) => {
                if run(at, |c| c.is_ascii_digit()) < n {
                    return None;
                }
                at += n;
            }
            P::Number => match run(at, |c| c.is_ascii_digit()) {
                0 => return None,
                n => at += n,
            },
            P::Float => match run(at, |c| c.is_ascii_digit() || b".eE+-".contains(&c)) {
                0 => return None,
                n => at += n,
            },
            P::OptFraction => {
                if b.get(at) == Some(&b'.') {
                    at += 1 + run(at + 1, |c| c.is_ascii_digit());
                }
            }
            P::Unit => {
                let unit = ["KiB", "MiB", "GiB", "TiB", "B"]
                    .into_iter()
                    .find(|u| s[at..].starts_with(u))?;
                at += unit.len();
            }
        }
    }
    Some(at)
}

/// Replace every match of `pattern` that stands alone (not inside a longer
/// word) with `with(matched text)`.
fn replace(text: &str, pattern: &[P], mut with: impl FnMut(&str) -> String) -> String {
    let word = |c: char| c.is_ascii_alphanumeric();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut prev: Option<char> = None;
    while at < text.len() {
        let rest = &text[at..];
        let first = rest.chars().next().unwrap();
        let starts_word = !(prev.is_some_and(word) && word(first));
        if starts_word
            && let Some(n) = match_len(rest, pattern)
            && !rest[n..]
                .chars()
                .next()
                .is_some_and(|c| word(c) && rest[..n].chars().next_back().is_some_and(word))
        {
            out.push_str(&with(&rest[..n]));
            prev = rest[..n].chars().next_back();
            at += n;
            continue;
        }
        out.push(first);
        prev = Some(first);
        at += first.len_utf8();
    }
    out
}

/// Replace each distinct match with `<NAME-n>`, n counting distinct values
/// in order of appearance.
fn number(text: &str, pattern: &[P], name: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    replace(text, pattern, |m| {
        let n = match seen.iter().position(|s| s == m) {
            Some(i) => i + 1,
            None => {
                seen.push(m.to_string());
                seen.len()
            }
        };
        format!("<{name}-{n}>")
    })
}

const UUID: &[P] = &[
    P::Hex(8),
    P::Lit("-"),
    P::Hex(4),
    P::Lit("-"),
    P::Hex(4),
    P::Lit("-"),
    P::Hex(4),
    P::Lit("-"),
    P::Hex(12),
];
const FINGERPRINT: &[P] = &[P::Lit("b3:"), P::Hex(16)];
const TIME: &[P] = &[
    P::Digits(4),
    P::Lit("-"),
    P::Digits(2),
    P::Lit("-"),
    P::Digits(2),
    P::Lit("T"),
    P::Digits(2),
    P::Lit(":"),
    P::Digits(2),
    P::Lit(":"),
    P::Digits(2),
    P::OptFraction,
    P::Lit("Z"),
];
/// `in 0.01 s (1.2 MiB/s)`, as the summaries of backup and restore print it.
const DURATION_AND_RATE: &[P] = &[
    P::Lit("in "),
    P::Float,
    P::Lit(" s ("),
    P::Float,
    P::Lit(" "),
    P::Unit,
    P::Lit("/s)"),
];
const THREADS: &[P] = &[P::Number, P::Lit(" thread"), P::Opt("s")];
const PID: &[P] = &[P::Lit("process "), P::Number];
/// A state ID (random per backup), whole or its first 8 bytes.
const STATE: &[P] = &[P::Lit("state "), P::Hex(32)];
const STATE_SHORT: &[P] = &[P::Lit("state "), P::Hex(16)];
const JSON_SECONDS: &[P] = &[P::Lit("\"seconds\":"), P::Float];
const JSON_RATE: &[P] = &[P::Lit("\"bytes_per_second\":"), P::Number];
const JSON_THREADS: &[P] = &[P::Lit("\"threads\":"), P::Number];

/// What varies between runs of the same scenario, and nothing else.
fn normalize(text: &str) -> String {
    let text = number(text, UUID, "UUID");
    let text = number(&text, FINGERPRINT, "FP");
    let text = replace(&text, TIME, |_| "<TIME>".into());
    let text = replace(&text, DURATION_AND_RATE, |_| {
        "in <SECS> s (<RATE>/s)".into()
    });
    let text = replace(&text, THREADS, |_| "<N> threads".into());
    let text = replace(&text, PID, |_| "process <PID>".into());
    let text = number(&text, STATE, "STATE");
    let text = number(&text, STATE_SHORT, "STATE-SHORT");
    let text = replace(&text, JSON_SECONDS, |_| "\"seconds\":<SECS>".into());
    let text = replace(&text, JSON_RATE, |_| "\"bytes_per_second\":<RATE>".into());
    replace(&text, JSON_THREADS, |_| "\"threads\":<N>".into())
}

#[test]
fn golden_normalizing_touches_only_what_varies() {
    let text = "uuid 0f0e0d0c-0b0a-4908-8706-050403020100 and 0f0e0d0c-0b0a-4908-8706-050403020100, \
                11111111-2222-4333-8444-555555555555; key (b3:0123456789abcdef) at \
                2025-06-01T10:20:30.123Z: 3.0 MiB in 0.01 s (338.0 MiB/s), 2 threads, 1 thread; \
                process 4242 (evfs map); {\"seconds\":1.5e-5,\"bytes_per_second\":77,\"threads\":16}; \
                plaintext blake3 0f0e0d0c0b0a49088706050403020100aa; 12 threadsafe; in 2 s";
    assert_eq!(
        normalize(text),
        "uuid <UUID-1> and <UUID-1>, <UUID-2>; key (<FP-1>) at <TIME>: 3.0 MiB in <SECS> s \
         (<RATE>/s), <N> threads, <N> threads; process <PID> (evfs map); \
         {\"seconds\":<SECS>,\"bytes_per_second\":<RATE>,\"threads\":<N>}; plaintext blake3 \
         0f0e0d0c0b0a49088706050403020100aa; 12 threadsafe; in 2 s"
    );
    assert_eq!(
        shell_words(&["a b", "it's", "-k", "x.pw"]),
        r"'a b' 'it'\''s' -k x.pw"
    );
    assert_eq!(diff("a\nb\nc\n", "a\nB\nc\n"), "  a\n- b\n+ B\n  c\n");
}

// ------------------------------------------------------------ fixtures

const ALICE: &str = "alice.k1";
const BOB: &str = "bob.k1";
const PA: &str = "alice.k1.pw";
const PB: &str = "bob.k1.pw";

/// `ARGS -k alice.k1 --passphrase-file alice.k1.pw`.
fn ka<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["-k", ALICE, "--passphrase-file", PA]);
    v
}

/// `ARGS` and `ARGS --json`: a scenario's human and JSON output.
fn both(t: &mut Transcript, args: &[&str]) {
    t.run(args);
    let mut json = args.to_vec();
    json.push("--json");
    t.run(&json);
}

/// alice.k1 (owner) and bob.k1 with small KDF parameters; `plain`, 3 MiB of
/// mixed text, zeros and pseudo-random bytes; `vol`, a volume encrypted
/// from it and owned by alice.k1.
fn fixture() -> Env {
    let env = Env::on_tmpfs();
    env.gen_key(ALICE);
    env.gen_key(BOB);
    env.volume_from_data("plain", "vol", ALICE, 3 * MIB, 7);
    env
}

/// `env.ok`, for the steps of a scenario that are not what it pins.
fn setup(env: &Env, args: &[&str]) {
    env.ok(args);
}

fn write(env: &Env, name: &str, data: &[u8]) {
    std::fs::write(env.path(name), data).unwrap();
}

/// Rewrite both EMD copies of `vol` with `change` applied, checksums fixed
/// up and the MAC left as it was: what a crash or kill leaves, without one.
fn forge(env: &Env, vol: &str, change: impl Fn(&mut Emd)) {
    let path = env.path(vol);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut emd = Emd::parse(&bytes[..EMD_SIZE]).unwrap();
    change(&mut emd);
    let encoded = emd.encode();
    let backup = (bytes.len() & !4095) - EMD_SIZE;
    bytes[..EMD_SIZE].copy_from_slice(&encoded[..]);
    bytes[backup..backup + EMD_SIZE].copy_from_slice(&encoded[..]);
    std::fs::write(&path, bytes).unwrap();
}

// ------------------------------------------------------------ --help

/// Every command path of the clap tree: `[]`, `["key"]`, `["key", "gen"]`,
/// ...; clap's own `help` subcommands print what `--help` prints.
fn command_paths(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(path.clone());
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        command_paths(sub, p, out);
    }
}

#[test]
fn golden_help_of_every_command() {
    let env = Env::new();
    let mut group = Group::new("help");
    let mut root = evfs::cli::Cli::command();
    root.build();
    let mut paths = Vec::new();
    command_paths(&root, Vec::new(), &mut paths);
    assert!(paths.len() > 25, "{paths:?}");
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        let name = std::iter::once("evfs")
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join("-");
        args.push("--help");
        let mut t = Transcript::new(&env);
        t.run(&args);
        group.check(&name, t);
    }
    group.finish();
}

// ------------------------------------------------------------ the configuration table

/// The rows of the backup configuration table that run: the summary line
/// of each (README "The configuration table", `src/backup/decide.rs`).
#[test]
fn golden_backup_rows_that_run() {
    let env = fixture();
    let mut g = Group::new("backup-runs");

    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "copy"]));
    g.check("reencrypt-into-a-new-file", t);

    // A refresh keeps the clone's UUID (the same <UUID-n> in both objects).
    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "copy"]));
    t.run(&ka(&["backup", "vol", "copy", "--json"]));
    t.run(&ka(&["backup", "vol", "copy", "--rekey", "--json"]));
    g.check("refresh-a-clone-of-the-source", t);

    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "--stream", "vol.evfs"]));
    t.run_to_file(&ka(&["backup", "vol", "-"]), "vol2.evfs");
    g.check("reencrypt-into-a-stream", t);

    setup(
        &env,
        &[
            "create",
            "own",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
            "--size",
            "8M",
        ],
    );
    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "own"]));
    g.check(
        "reencrypt-into-a-volume-with-its-own-emd-and-a-slot-for-k",
        t,
    );

    setup(
        &env,
        &[
            "create",
            "bobs",
            "--owner",
            BOB,
            "--passphrase-file",
            PB,
            "--size",
            "8M",
        ],
    );
    let mut t = Transcript::new(&env);
    t.run(&ka(&[
        "backup",
        "vol",
        "bobs",
        "--target-key",
        BOB,
        "--target-passphrase-file",
        PB,
    ]));
    g.check("reencrypt-into-a-volume-with-target-key", t);

    let mut t = Transcript::new(&env);
    t.run(&[
        "backup",
        "plain",
        "new.vol",
        "--owner",
        ALICE,
        "--passphrase-file",
        PA,
    ]);
    t.run(&[
        "backup",
        "plain",
        "--stream",
        "plain.evfs",
        "--owner",
        ALICE,
        "--passphrase-file",
        PA,
    ]);
    g.check("encrypt-plain-data-into-a-new-volume-or-stream", t);

    setup(
        &env,
        &[
            "create",
            "bobs2",
            "--owner",
            BOB,
            "--passphrase-file",
            PB,
            "--size",
            "8M",
        ],
    );
    setup(
        &env,
        &[
            "create",
            "bobs3",
            "--owner",
            BOB,
            "--passphrase-file",
            PB,
            "--size",
            "8M",
        ],
    );
    let mut t = Transcript::new(&env);
    t.run(&[
        "backup",
        "plain",
        "bobs2",
        "-k",
        BOB,
        "--passphrase-file",
        PB,
    ]);
    t.run(&[
        "backup",
        "plain",
        "bobs3",
        "--target-key",
        BOB,
        "--target-passphrase-file",
        PB,
    ]);
    g.check("encrypt-plain-data-into-a-volume", t);

    let mut t = Transcript::new(&env);
    t.run(&["backup", "vol", "mirror", "--raw"]);
    t.run(&["backup", "vol", "--stream", "raw.evfs", "--raw"]);
    g.check("raw-clone-into-a-new-file-or-stream", t);

    setup(&env, &ka(&["disable", "mirror"]));
    let mut t = Transcript::new(&env);
    t.run(&["backup", "vol", "mirror", "--raw"]);
    g.check("raw-clone-into-a-disabled-volume-of-the-source", t);

    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "export.raw", "--cleartext"]));
    t.run_to_file(&ka(&["backup", "vol", "-", "--cleartext"]), "export2.raw");
    g.check("cleartext-export", t);

    write(&env, "foreign", &mixed_data(MIB, 3));
    setup(
        &env,
        &[
            "create",
            "carols",
            "--owner",
            BOB,
            "--passphrase-file",
            PB,
            "--size",
            "8M",
        ],
    );
    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "foreign", "--force"]));
    t.run(&ka(&["backup", "vol", "carols", "--force"]));
    g.check("force-replaces-foreign-data-or-another-volume", t);

    // The recovery path: the copy backed up into the original, with the
    // original's own key; the original keeps its identity.
    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "copy", "vol"]));
    t.run(&ka(&["backup", "vol", "copy"]));
    g.check("a-copy-backed-up-into-its-original", t);

    g.finish();
}

/// The refused rows: the message, the hint and the exit code, and the
/// `--json` failure object of each.
#[test]
fn golden_backup_refusals() {
    let env = fixture();
    let mut g = Group::new("backup-refusals");
    setup(&env, &ka(&["backup", "vol", "copy"]));
    setup(&env, &ka(&["backup", "vol", "--stream", "vol.evfs"]));

    setup(&env, &ka(&["backup", "vol", "dis"]));
    setup(&env, &ka(&["disable", "dis"]));
    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "dis", "x"]));
    both(
        &mut t,
        &[
            "backup",
            "dis",
            "x",
            "--raw",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
        ],
    );
    both(&mut t, &["backup", "vol", "copy", "--raw"]);
    g.check("double-encryption", t);

    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "vol", "copy", "--cleartext"]));
    both(&mut t, &ka(&["backup", "vol", "dis"]));
    both(
        &mut t,
        &[
            "backup",
            "plain",
            "dis",
            "-k",
            ALICE,
            "--passphrase-file",
            PA,
        ],
    );
    g.check("cleartext-onto-encrypted-media", t);

    std::fs::hard_link(env.path("vol"), env.path("vol.link")).unwrap();
    std::os::unix::fs::symlink("vol", env.path("vol.symlink")).unwrap();
    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "vol", "vol"]));
    both(&mut t, &ka(&["backup", "vol", "vol.link"]));
    both(&mut t, &ka(&["backup", "vol", "vol.symlink"]));
    g.check("the-target-is-the-source", t);

    setup(
        &env,
        &[
            "create",
            "tiny",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
            "--size",
            "3M",
        ],
    );
    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "vol", "tiny"]));
    g.check("too-small", t);

    write(&env, "foreign", &mixed_data(MIB, 3));
    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "vol", "foreign"]));
    g.check("foreign-data-without-force", t);

    setup(
        &env,
        &[
            "create",
            "bobs",
            "--owner",
            BOB,
            "--passphrase-file",
            PB,
            "--size",
            "8M",
        ],
    );
    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "vol", "bobs"]));
    both(
        &mut t,
        &[
            "backup",
            "plain",
            "bobs",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
        ],
    );
    g.check("a-volume-with-an-emd-of-its-own", t);

    // vol is written to after the copy was made: the copy written back is
    // a rollback.
    write(&env, "newer", &mixed_data(3 * MIB, 8));
    setup(&env, &ka(&["backup", "newer", "vol"]));
    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "copy", "vol"]));
    g.check("a-rollback", t);

    // Plain data that is not plain: random everywhere, a LUKS header, a
    // disk image holding a volume further in.
    write(&env, "random.bin", &mixed_data(3 * MIB, 9)[2 * MIB..]);
    let mut luks = b"LUKS\xba\xbe\x00\x02".to_vec();
    luks.extend(mixed_data(MIB, 10));
    write(&env, "luks.img", &luks);
    let mut disk = vec![0u8; MIB];
    disk.extend(std::fs::read(env.path("copy")).unwrap());
    write(&env, "disk.img", &disk);
    let mut t = Transcript::new(&env);
    both(
        &mut t,
        &[
            "backup",
            "random.bin",
            "x",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
        ],
    );
    both(
        &mut t,
        &[
            "backup",
            "luks.img",
            "x",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
        ],
    );
    both(
        &mut t,
        &[
            "backup",
            "disk.img",
            "x",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
        ],
    );
    g.check("plain-data-that-looks-like-ciphertext", t);

    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "vol.evfs", "x"]));
    g.check("a-stream-as-the-source", t);

    // Flags the table cannot reconcile.
    let mut t = Transcript::new(&env);
    both(&mut t, &["backup", "vol", "x", "--raw", "--cleartext"]);
    both(
        &mut t,
        &ka(&[
            "backup",
            "vol",
            "x",
            "--cleartext",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
        ]),
    );
    both(
        &mut t,
        &ka(&[
            "backup",
            "vol",
            "x",
            "--owner",
            ALICE,
            "--passphrase-file",
            PA,
        ]),
    );
    both(&mut t, &ka(&["backup", "vol", "x", "--target-key", BOB]));
    both(
        &mut t,
        &ka(&["backup", "vol", "--stream", "x.evfs", "--cleartext"]),
    );
    both(&mut t, &["backup", "plain", "x"]);
    both(&mut t, &["backup", "plain", "x", "-k", ALICE]);
    both(&mut t, &["backup", "plain", "x", "--cleartext"]);
    g.check("flags-that-do-not-fit-the-source-or-target", t);

    g.finish();
}

// ------------------------------------------------------------ common mistakes

#[test]
fn golden_common_mistakes() {
    let env = fixture();
    let mut g = Group::new("mistakes");
    setup(&env, &ka(&["backup", "vol", "--stream", "vol.evfs"]));
    write(&env, "wrong.pw", b"not the passphrase\n");

    let mut t = Transcript::new(&env);
    both(&mut t, &["backup", "vol", "x"]);
    t.run(&["hash", "vol"]);
    t.run(&["cat", "vol"]);
    g.check("a-volume-without-k", t);

    let mut t = Transcript::new(&env);
    both(
        &mut t,
        &[
            "backup",
            "vol",
            "x",
            "-k",
            ALICE,
            "--passphrase-file",
            "wrong.pw",
        ],
    );
    t.run(&["hash", "vol", "-k", ALICE, "--passphrase-file", "wrong.pw"]);
    g.check("a-wrong-passphrase", t);

    let mut t = Transcript::new(&env);
    both(&mut t, &["backup", "vol", "x", "-k", ALICE]);
    t.run(&["enable", "vol", "-k", ALICE]);
    g.check("no-passphrase-source", t);

    let mut t = Transcript::new(&env);
    both(
        &mut t,
        &["backup", "vol", "x", "-k", BOB, "--passphrase-file", PB],
    );
    t.run(&["cat", "vol", "-k", BOB, "--passphrase-file", PB]);
    t.run(&["hash", "vol", "-k", "carol.k1", "--passphrase-file", PB]);
    g.check("a-key-in-no-slot", t);

    mkfifo(&env.path("fifo"));
    let ciphertext = b3(&std::fs::read(env.path("vol.evfs")).unwrap());
    for (what, name) in [
        ("missing", "a-missing-file"),
        ("plain", "plain-data-where-a-volume-is-needed"),
        ("vol.evfs", "a-stream-where-a-volume-is-needed"),
        ("fifo", "a-fifo-where-a-volume-is-needed"),
    ] {
        let mut t = Transcript::new(&env);
        t.random(ciphertext.clone(), "BLAKE3 of vol.evfs, random as its key");
        both(&mut t, &["info", what]);
        both(&mut t, &["check", what]);
        t.run(&ka(&["hash", what]));
        t.run(&ka(&["cat", what]));
        g.check(name, t);
    }

    let mut t = Transcript::new(&env);
    both(&mut t, &["restore", "vol", "restored"]);
    both(&mut t, &["restore", "plain", "restored"]);
    g.check("restore-of-a-volume-or-plain-data", t);

    let mut t = Transcript::new(&env);
    both(&mut t, &["verify", "plain"]);
    both(&mut t, &ka(&["verify", "plain"]));
    g.check("verify-of-plain-data", t);

    write(&env, "foreign", &mixed_data(MIB, 3));
    setup(
        &env,
        &[
            "create",
            "bobs",
            "--owner",
            BOB,
            "--passphrase-file",
            PB,
            "--size",
            "8M",
        ],
    );
    let mut t = Transcript::new(&env);
    both(&mut t, &["restore", "vol.evfs", "foreign"]);
    both(&mut t, &["restore", "vol.evfs", "bobs"]);
    g.check("restore-onto-a-foreign-target", t);

    let mut t = Transcript::new(&env);
    t.run(&["create", "vol", "--owner", ALICE, "--passphrase-file", PA]);
    t.run(&["create", "plain", "--owner", ALICE, "--passphrase-file", PA]);
    t.run(&["create", "new", "--owner", ALICE, "--passphrase-file", PA]);
    g.check("create-over-an-existing-emd-or-data", t);

    setup(&env, &ka(&["user", "add", "vol", BOB]));
    let mut t = Transcript::new(&env);
    t.run(&[
        "user",
        "add",
        "vol",
        "carol.k1",
        "-k",
        BOB,
        "--passphrase-file",
        PB,
    ]);
    t.run(&[
        "user",
        "remove",
        "vol",
        ALICE,
        "-k",
        BOB,
        "--passphrase-file",
        PB,
    ]);
    t.run(&ka(&["user", "remove", "vol", ALICE]));
    t.run(&ka(&["user", "add", "vol", BOB]));
    g.check("user-add-and-remove-by-a-non-owner", t);

    g.finish();
}

/// `mkfifo PATH`.
fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from(0o600)).expect("mkfifo");
}

#[test]
fn golden_check_on_dirty_and_unfinished_volumes() {
    let env = fixture();
    let mut g = Group::new("check");

    let mut t = Transcript::new(&env);
    both(&mut t, &["check", "vol"]);
    g.check("a-clean-volume", t);

    setup(&env, &ka(&["backup", "vol", "dirty"]));
    forge(&env, "dirty", |e| e.dirty = true);
    let mut t = Transcript::new(&env);
    both(&mut t, &["check", "dirty"]);
    t.run(&["check", "-r", "dirty"]);
    both(&mut t, &["check", "dirty"]);
    g.check("a-dirty-volume-and-check-r", t);

    // The primary EMD copy damaged (a byte of its body flipped): check
    // names it (exit 5); check -r rewrites it from the backup copy.
    setup(&env, &ka(&["backup", "vol", "damaged"]));
    let mut bytes = std::fs::read(env.path("damaged")).unwrap();
    bytes[200] ^= 0x01;
    write(&env, "damaged", &bytes);
    let mut t = Transcript::new(&env);
    both(&mut t, &["check", "damaged"]);
    t.run(&["check", "-r", "damaged"]);
    t.run(&["check", "damaged"]);
    g.check("a-damaged-emd-copy-and-check-r", t);

    setup(&env, &ka(&["backup", "vol", "dirty2"]));
    forge(&env, "dirty2", |e| e.dirty = true);
    let mut t = Transcript::new(&env);
    t.run(&["check", "-r", "dirty2", "--json"]);
    g.check("check-r-json", t);

    // An interrupted backup, as a kill at a third of the data leaves it.
    setup(&env, &ka(&["backup", "vol", "cut"]));
    let source = env.info("vol");
    let source_uuid = uuid_bytes(source["uuid"].as_str().unwrap());
    let generation = source["generation"].as_u64().unwrap();
    forge(&env, "cut", |e| {
        e.dirty = true;
        e.checkpoint = Some(evfs::emd::Checkpoint {
            task: evfs::emd::Task::Backup,
            run_id: [7; 16],
            source_uuid,
            bytes_done: MIB as u64,
            total: 3 * MIB as u64,
            source_generation: generation,
        });
    });
    let mut t = Transcript::new(&env);
    both(&mut t, &["check", "cut"]);
    both(&mut t, &["check", "-r", "cut"]);
    t.run(&["info", "cut"]);
    g.check("an-unfinished-backup", t);

    setup(&env, &ka(&["backup", "vol", "cut2"]));
    forge(&env, "cut2", |e| {
        e.dirty = true;
        e.checkpoint = Some(evfs::emd::Checkpoint {
            task: evfs::emd::Task::Restore,
            run_id: [8; 16],
            source_uuid,
            bytes_done: 0,
            total: 3 * MIB as u64,
            source_generation: 0,
        });
    });
    let mut t = Transcript::new(&env);
    both(&mut t, &["check", "cut2"]);
    g.check("an-unfinished-restore", t);

    g.finish();
}

/// `8-4-4-4-12` hex as 16 bytes.
fn uuid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

// ------------------------------------------------------------ reports and JSON

#[test]
fn golden_reports_and_json() {
    let env = fixture();
    let mut g = Group::new("reports");
    setup(&env, &ka(&["user", "add", "vol", BOB]));

    let mut t = Transcript::new(&env);
    both(&mut t, &["key", "list"]);
    g.check("key-list", t);

    let mut t = Transcript::new(&env);
    both(&mut t, &["info", "vol"]);
    g.check("info-of-a-volume-encrypted-from-plain-data", t);

    let mut t = Transcript::new(&env);
    both(&mut t, &ka(&["backup", "vol", "copy"]));
    both(&mut t, &["info", "copy"]);
    g.check("backup-and-info-of-the-copy", t);

    let mut t = Transcript::new(&env);
    both(&mut t, &["verify", "copy"]);
    both(&mut t, &ka(&["verify", "copy"]));
    both(&mut t, &ka(&["verify", "copy", "--against", "vol"]));
    both(&mut t, &ka(&["verify", "copy", "--against", "plain"]));
    g.check("verify-a-volume", t);

    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "--stream", "vol.evfs"]));
    both(&mut t, &["verify", "vol.evfs"]);
    both(&mut t, &ka(&["verify", "vol.evfs"]));
    both(&mut t, &["restore", "vol.evfs", "restored"]);
    both(&mut t, &["check", "restored"]);
    g.check("stream-verify-and-restore", t);

    // One byte of the copy's data area flipped: its plaintext no longer
    // matches the provenance.
    let data_offset = env.info("copy")["data_offset"].as_u64().unwrap() as usize;
    let mut bytes = std::fs::read(env.path("copy")).unwrap();
    bytes[data_offset + 5000] ^= 0x40;
    write(&env, "copy", &bytes);
    // The flipped bit turns a block of plaintext into noise under the
    // copy's random key: its digest is random.
    let damaged = env.hash("copy", ALICE);
    write(&env, "other", &mixed_data(3 * MIB, 8));
    let mut t = Transcript::new(&env);
    t.random(
        damaged,
        "BLAKE3 of the damaged plaintext, random as the key",
    );
    both(&mut t, &ka(&["verify", "copy"]));
    both(&mut t, &ka(&["verify", "copy", "--against", "plain"]));
    both(&mut t, &ka(&["verify", "vol", "--against", "other"]));
    g.check("verify-a-damaged-copy-or-another-source", t);

    // A stream cut short.
    let stream = std::fs::read(env.path("vol.evfs")).unwrap();
    write(&env, "cut.evfs", &stream[..stream.len() / 2]);
    let mut t = Transcript::new(&env);
    both(&mut t, &["verify", "cut.evfs"]);
    // From a file, the missing trailer is seen before anything is written;
    // from a pipe, only at the cut: the target is left dirty.
    both(&mut t, &["restore", "cut.evfs", "restored2"]);
    t.run_from_file(&["restore", "-", "restored2"], "cut.evfs");
    t.run(&["check", "restored2"]);
    // Half of the data, under a fresh key: its digest differs every run.
    let out = t.run(&ka(&["hash", "restored2"]));
    let partial = String::from_utf8_lossy(&out.stdout);
    t.random(
        partial.split_whitespace().next().unwrap_or("-").to_string(),
        "PARTIAL-DIGEST",
    );
    g.check("a-truncated-stream", t);

    g.finish();
}

/// Write `plain` changed at one byte of MiB `chunk` into `vol` (a backup
/// of plain data into it with its own key).
fn change_vol(env: &Env, chunk: usize) {
    let mut data = std::fs::read(env.path("plain")).unwrap();
    data[chunk * MIB + 5] ^= 0x5a;
    write(env, "plain", &data);
    setup(
        env,
        &[
            "backup",
            "plain",
            "vol",
            "--target-key",
            ALICE,
            "--target-passphrase-file",
            PA,
        ],
    );
}

#[test]
fn golden_incremental_backups() {
    let env = fixture();
    let mut g = Group::new("incremental");

    // A refresh after one chunk changed, and --full.
    setup(&env, &ka(&["backup", "vol", "copy"]));
    change_vol(&env, 1);
    let mut t = Transcript::new(&env);
    t.run(&ka(&["backup", "vol", "copy", "-v"]));
    t.run(&ka(&["backup", "vol", "copy", "--json"]));
    t.run(&ka(&["backup", "vol", "copy", "--full", "-v"]));
    g.check("a-changed-only-refresh-and-full", t);

    // A full stream with its manifest, an incremental one, the chain.
    let mut t = Transcript::new(&env);
    t.run(&ka(&[
        "backup",
        "vol",
        "--stream",
        "full.evfs",
        "--manifest",
        "full.man",
    ]));
    change_vol(&env, 2);
    t.run(&ka(&[
        "backup",
        "vol",
        "--stream",
        "i1.evfs",
        "--since",
        "full.man",
        "--manifest",
        "i1.man",
        "--json",
    ]));
    change_vol(&env, 0);
    // A stream is a base as well as its manifest.
    t.run(&ka(&[
        "backup", "vol", "--stream", "i2.evfs", "--since", "i1.evfs",
    ]));
    t.run(&["restore", "full.evfs", "i1.evfs", "i2.evfs", "r.vol"]);
    t.run(&ka(&["verify", "full.evfs", "i1.evfs", "i2.evfs"]));
    t.run(&ka(&["hash", "r.vol"]));
    t.run(&ka(&["hash", "vol"]));
    g.check("an-incremental-chain", t);

    // Links out of place, and what --since refuses.
    setup(&env, &["restore", "full.evfs", "t.vol"]);
    setup(&env, &["backup", "vol", "--stream", "raw.evfs", "--raw"]);
    setup(
        &env,
        &["backup", "plain", "--stream", "p.evfs", "--owner", ALICE],
    );
    let mut t = Transcript::new(&env);
    t.run(&ka(&["restore", "i2.evfs", "t.vol"]));
    t.run(&["restore", "i1.evfs", "new.vol"]);
    t.run(&["restore", "full.evfs", "i2.evfs", "c.vol"]);
    t.run(&["restore", "full.evfs", "i1.evfs", "i1.evfs", "c.vol"]);
    t.run(&["verify", "i1.evfs", "full.evfs"]);
    t.run(&ka(&[
        "backup", "vol", "--stream", "x.evfs", "--since", "raw.evfs",
    ]));
    t.run(&ka(&[
        "backup", "vol", "--stream", "x.evfs", "--since", "p.evfs",
    ]));
    t.run(&ka(&[
        "backup",
        "vol",
        "--stream",
        "x.evfs",
        "--since",
        "copy",
        "--sector-size",
        "512",
    ]));
    t.run(&ka(&["backup", "vol", "copy2", "--since", "full.man"]));
    t.run(&[
        "backup", "plain", "--stream", "x.evfs", "--owner", ALICE, "--since", "full.man",
    ]);
    g.check("links-out-of-place-and-since-refusals", t);

    g.finish();
}
