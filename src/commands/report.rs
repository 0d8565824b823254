//! How the command line shows a backup's or restore's report: one summary
//! line on stderr, or one JSON object with `--json`.

use serde_json::json;

use crate::emd::format::uuid_string;
use crate::ops::Report;
use crate::ops::trust::SignedBy;
use crate::stream::format::StreamMode;

/// The `--json` object of a backup or restore report.
pub fn json(r: &Report) -> serde_json::Value {
    let mut v = json!({
        "ok": true,
        "mode": r.mode.name(),
        "stream_mode": r.stream_mode.map(StreamMode::name),
        "bytes": r.bytes,
        "seconds": r.seconds,
        "plaintext_blake3": r.digest.map(|d| d.to_hex().to_string()),
        "threads": r.threads,
        "source": r.source,
        "target": r.target,
        "source_uuid": r.source_uuid.map(|u| uuid_string(&u)),
        "target_uuid": r.target_uuid.map(|u| uuid_string(&u)),
        "bytes_per_second": rate(r.bytes, r.seconds),
        "stream_bytes": r.stream_bytes,
        "resumed_at": r.resumed_at,
    });
    // Every backup counts its chunks.
    if let (Some(c), Some(o)) = (r.chunks, v.as_object_mut()) {
        o.insert("chunks_total".into(), c.total.into());
        o.insert("chunks_unchanged".into(), c.unchanged.into());
        o.insert("chunks_written".into(), c.rewritten().into());
        o.insert("bytes_read".into(), c.bytes_read.into());
        o.insert("bytes_written".into(), c.bytes_written.into());
        o.insert("bytes_sent".into(), c.bytes_sent.into());
    }
    v
}

/// The summary line of a backup or restore report.
pub fn summary(r: &Report, verb: &str) -> String {
    let mut s = format!(
        "evfs: {verb} ({}) of {} to {}: {} in {:.2} s ({}/s), {} thread{}",
        r.mode.name(),
        r.source,
        r.target,
        crate::size::human(r.bytes),
        r.seconds,
        crate::size::human(rate(r.bytes, r.seconds)),
        r.threads,
        if r.threads == 1 { "" } else { "s" }
    );
    if let Some(m) = r.stream_mode {
        let name = m.name();
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        s.push_str(&format!(", {article} {name} stream"));
    }
    if let Some(n) = r.stream_bytes {
        s.push_str(&format!(", stream {}", crate::size::human(n)));
    }
    if let Some(c) = r.chunks.filter(|c| c.unchanged > 0) {
        s.push_str(&format!(
            ", {} of {} chunks unchanged, {} {}",
            c.unchanged,
            c.total,
            c.rewritten(),
            if c.bytes_sent > 0 {
                "sent".to_string()
            } else {
                format!("rewritten ({})", crate::size::human(c.bytes_written))
            }
        ));
    }
    if let Some(n) = r.resumed_at {
        s.push_str(&format!(
            ", resumed at {} (the rest was copied before)",
            crate::size::human(n)
        ));
    }
    if let Some(d) = r.digest {
        s.push_str(&format!("\nevfs: plaintext blake3 {}", d.to_hex()));
    }
    s
}

fn rate(bytes: u64, seconds: f64) -> u64 {
    if seconds > 0.0 {
        (bytes as f64 / seconds) as u64
    } else {
        0
    }
}

/// The `signed_by` member of `verify`, `restore` and `info` JSON.
pub fn signed_json(s: Option<&SignedBy>) -> serde_json::Value {
    match s {
        None => serde_json::Value::Null,
        Some(s) => json!({
            "id": s.id.as_str(),
            "fingerprint": s.fingerprint,
            "trusted": s.trusted,
            "valid": s.valid,
        }),
    }
}

/// `--trust` values, checked: each a key fingerprint as `key list` prints it.
pub fn fingerprints(values: &[String]) -> crate::error::Result<Vec<String>> {
    values
        .iter()
        .map(|v| {
            let hex = v.strip_prefix("b3:").unwrap_or("");
            if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(v.to_ascii_lowercase())
            } else {
                Err(crate::error::Error::usage(format!(
                    "--trust {v}: a fingerprint is b3: and 16 hex digits, as `evfs key list` prints it"
                )))
            }
        })
        .collect()
}
