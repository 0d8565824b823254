//! What evfs refuses, and why: one function per version that lists the
//! reasons, so the refusal table lives in one place (formats/LUKS.md,
//! "What evfs refuses", is its specification).

use super::luks2::Luks2Header;
use super::metadata::is_online_reencrypt;
use super::{REQUIREMENT_INCOMPLETE, keyslot::SectorCipherKind};

/// Requirements cryptsetup knows (`requirements_flags` in
/// `lib/luks2/luks2_json_metadata.c`), with what each means for evfs.
fn known_requirement(name: &str) -> Option<&'static str> {
    if is_online_reencrypt(name) {
        return Some("online reencryption is in progress (finish it with cryptsetup first)");
    }
    match name {
        "offline-reencrypt" => {
            Some("offline reencryption is in progress (finish it with cryptsetup first)")
        }
        "opal" | "opal-v2" => Some("OPAL hardware encryption (the data is not dm-crypt only)"),
        "inline-hw-tags" => Some("authenticated encryption with inline hardware tags"),
        _ => None,
    }
}

/// Every reason evfs cannot read the data of this LUKS2 volume.
pub fn luks2_reasons(h: &Luks2Header) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut unknown = Vec::new();
    for r in h.requirements() {
        if r == REQUIREMENT_INCOMPLETE {
            reasons.push(format!(
                "requirement {r}: evfs has not finished writing this volume"
            ));
        } else if let Some(why) = known_requirement(r) {
            reasons.push(format!("requirement {r}: {why}"));
        } else {
            unknown.push(r.as_str());
        }
    }
    if !unknown.is_empty() {
        reasons.push(format!(
            "unknown mandatory requirement{} {} (a newer tool marked the header; cryptsetup treats it as read-only)",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        ));
    }
    let meta = h.metadata();
    let data: Vec<_> = meta.data_segments().collect();
    match data.as_slice() {
        [] => reasons.push("no data segment".to_string()),
        [s] => match &s.crypt {
            None => reasons.push(format!(
                "data segment {} has type {:?} (evfs reads crypt segments)",
                s.id, s.type_name
            )),
            Some(c) => {
                if let Some(integrity) = &c.integrity {
                    reasons.push(format!(
                        "authenticated encryption (segment integrity {integrity}): dm-integrity metadata evfs does not handle"
                    ));
                }
                if SectorCipherKind::parse(&c.encryption) != Some(SectorCipherKind::AesXtsPlain64) {
                    reasons.push(format!(
                        "cipher {} (evfs reads LUKS2 volumes with aes-xts-plain64)",
                        c.encryption
                    ));
                }
                if !matches!(c.sector_size, 512 | 1024 | 2048 | 4096) {
                    reasons.push(format!("sector size {}", c.sector_size));
                }
            }
        },
        more => reasons.push(format!(
            "{} data segments (a reencryption left unfinished; evfs reads one)",
            more.len()
        )),
    }
    // Backup segments come with a reencryption requirement; one without is
    // still reencryption bookkeeping evfs does not follow.
    if reasons.is_empty()
        && let Some(s) = meta.segments.iter().find(|s| s.is_backup())
    {
        reasons.push(format!("segment {} is a reencryption backup segment", s.id));
    }
    reasons
}
