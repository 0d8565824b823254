//! `evfs`: parse, dispatch, and turn the result into an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match evfs::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; real usage errors exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            // With --json, every exit prints one object, a usage error too.
            if code == 2 && std::env::args_os().any(|a| a == "--json") {
                let error = e.kind().as_str().map_or_else(
                    || "usage error".to_string(),
                    |k| format!("usage error: {k}"),
                );
                let report = serde_json::json!({
                    "ok": false,
                    "exit": 2,
                    "error": error,
                    "hint": "see --help",
                });
                println!("{report}");
            }
            return ExitCode::from(code);
        }
    };
    match evfs::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Not eprintln!: a closed standard error must not turn the
            // exit status into a panic's.
            use std::io::Write;
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "evfs: {err}");
            if let Some(hint) = err.hint() {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}
