//! `evfs verify TARGET [-k ID] [--against SRC]`: the use-case's verdict,
//! printed as lines or one JSON object; exit 5 on any failed check.

use serde_json::json;

use super::luks::{self, SecretFiles};
use super::{CliKeys, Ctx, out, threads};
use crate::cli::VerifyArgs;
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::ops::verify::{self, LuksVerify, VerifyRequest};
use crate::volume::sniff::Kind;

pub fn run(ctx: &Ctx, args: VerifyArgs) -> Result<()> {
    let target = args.targets[0].clone();
    // SRC (--against) opens with --luks-*, TARGET with --target-luks-* (as
    // in the backup that made the copy), or with --luks-* where it is the
    // only LUKS volume.
    let files = SecretFiles::source(&args.luks).with_target(&args.target_luks);
    let stdin = |p: Option<&std::path::Path>| p == Some(std::path::Path::new("-"));
    luks::one_stdin(
        &files,
        &[
            (
                "--passphrase-file",
                stdin(args.key.passphrase_file.as_deref()),
            ),
            ("a stream TARGET", target.as_os_str() == "-"),
        ],
    )?;
    let req = VerifyRequest {
        target: target.clone(),
        more: args.targets[1..].to_vec(),
        key: args.key.key.as_deref().map(KeyId::parse).transpose()?,
        against: args.against.clone(),
        threads: threads(args.threads)?,
        luks: LuksVerify {
            target: luks::target_access(&args.target_luks),
            against: luks::access(&args.luks),
        },
    };
    let keys = CliKeys::new(ctx, args.key.passphrase_file.clone(), None)
        .with_luks(files)
        .with_policy(
            super::report::fingerprints(&args.trust.trust)?,
            args.trust.require_signature,
        );
    let v = verify::check(&req, &keys)?;
    // A chain is named by its links.
    let name = args
        .targets
        .iter()
        .map(|t| t.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let failure = v
        .first_failure()
        .map(|what| Error::integrity(format!("{name}: {what}")));
    if args.json {
        let checks: Vec<_> = v
            .checks()
            .iter()
            .map(|c| json!({"ok": c.ok, "check": c.what}))
            .collect();
        let report = json!({
            "ok": v.ok(),
            "target": name,
            "kind": match v.kind { Kind::Stream => "stream", Kind::Volume => "volume", Kind::Luks => "luks", Kind::Plain => "plain" },
            "plaintext_blake3": v.plaintext.map(|d| d.hash.to_hex().to_string()),
            "bytes": v.plaintext.map(|d| d.bytes),
            "against": args.against.as_ref().map(|p| p.display().to_string()),
            "signed_by": super::report::signed_json(v.signed_by.as_ref()),
            "checks": checks,
        });
        return match failure {
            Some(err) => Err(ctx.fail_with_report(report, err)),
            None => out(format!("{report}\n")),
        };
    }
    // -q: only what failed (the exit status says the rest).
    let mut text: String = v
        .lines()
        .iter()
        .filter(|l| !ctx.quiet || l.starts_with("FAIL"))
        .map(|l| format!("{l}\n"))
        .collect();
    if v.ok() && !ctx.quiet {
        text.push_str(&format!("{name}: verified\n"));
    }
    out(text)?;
    failure.map_or(Ok(()), Err)
}
