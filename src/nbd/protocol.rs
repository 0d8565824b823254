//! The bytes of the NBD protocol: constants (named as in proto.md), the
//! request header, the simple reply, option data, and the rules on sizes.

use std::io::{self, ErrorKind};

use super::MAX_PAYLOAD;

pub(super) const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
pub(super) const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
pub(super) const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(super) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(super) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

pub(super) const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(super) const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;
pub(super) const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub(super) const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

pub(super) const NBD_OPT_EXPORT_NAME: u32 = 1;
pub(super) const NBD_OPT_ABORT: u32 = 2;
pub(super) const NBD_OPT_LIST: u32 = 3;
pub(super) const NBD_OPT_INFO: u32 = 6;
pub(super) const NBD_OPT_GO: u32 = 7;

pub(super) const NBD_REP_ACK: u32 = 1;
pub(super) const NBD_REP_SERVER: u32 = 2;
pub(super) const NBD_REP_INFO: u32 = 3;
pub(super) const NBD_REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub(super) const NBD_REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub(super) const NBD_REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

pub(super) const NBD_INFO_EXPORT: u16 = 0;
pub(super) const NBD_INFO_BLOCK_SIZE: u16 = 3;

pub(super) const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
pub(super) const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
pub(super) const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
pub(super) const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
pub(super) const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
pub(super) const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

pub(super) const NBD_CMD_READ: u16 = 0;
pub(super) const NBD_CMD_WRITE: u16 = 1;
pub(super) const NBD_CMD_DISC: u16 = 2;
pub(super) const NBD_CMD_FLUSH: u16 = 3;
pub(super) const NBD_CMD_TRIM: u16 = 4;
pub(super) const NBD_CMD_WRITE_ZEROES: u16 = 6;

pub(super) const NBD_CMD_FLAG_FUA: u16 = 1 << 0;
pub(super) const NBD_CMD_FLAG_NO_HOLE: u16 = 1 << 1;

pub(super) const NBD_EPERM: u32 = 1;
pub(super) const NBD_EIO: u32 = 5;
pub(super) const NBD_EINVAL: u32 = 22;
pub(super) const NBD_ENOSPC: u32 = 28;

/// Strings (export names) may not exceed this per the protocol.
pub(super) const MAX_NAME_LEN: u32 = 4096;
/// Option payloads above this are discarded and refused with `NBD_REP_ERR_TOO_BIG`.
pub(super) const MAX_OPTION_LEN: u32 = 64 << 10;
/// The protocol requires the preferred block size to be at least 512.
pub(super) const MIN_PREFERRED_BLOCK: u32 = 512;
/// Bytes of an `NBD_OPT_EXPORT_NAME` reply padding when zeroes were not waived.
pub(super) const EXPORT_NAME_PADDING: usize = 124;
pub(super) const REQUEST_LEN: usize = 28;
pub(super) const SIMPLE_REPLY_LEN: usize = 16;

pub(super) fn protocol_error(msg: &'static str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

/// One transmission-phase request header.
pub(super) struct Request {
    pub(super) flags: u16,
    pub(super) command: u16,
    pub(super) cookie: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
}

impl Request {
    pub(super) fn parse(b: &[u8; REQUEST_LEN]) -> io::Result<Self> {
        if be_u32(&b[0..4]) != REQUEST_MAGIC {
            // Without a valid magic the stream cannot be re-synchronised.
            return Err(protocol_error("bad NBD request magic"));
        }
        Ok(Self {
            flags: be_u16(&b[4..6]),
            command: be_u16(&b[6..8]),
            cookie: be_u64(&b[8..16]),
            offset: be_u64(&b[16..24]),
            len: be_u32(&b[24..28]),
        })
    }
}

/// Turn the export's block size hint into a valid preferred block size: the
/// protocol requires a power of two of at least 512, and it must not exceed
/// the advertised maximum.
pub(super) fn preferred_block_size(hint: u32) -> u32 {
    hint.clamp(MIN_PREFERRED_BLOCK, MAX_PAYLOAD)
        .checked_next_power_of_two()
        .map_or(MAX_PAYLOAD, |p| p.min(MAX_PAYLOAD))
}

/// NBD_OPT_INFO/NBD_OPT_GO data: u32 name length, name, u16 count, count x u16.
/// Only the framing is checked: every name selects the export and every
/// information request is answered the same way.
pub(super) fn info_request_is_valid(data: &[u8]) -> bool {
    let Some(name_len) = data.get(0..4).map(be_u32) else {
        return false;
    };
    if name_len > MAX_NAME_LEN {
        return false;
    }
    let count_at = 4 + name_len as usize;
    let Some(count) = data.get(count_at..count_at + 2).map(be_u16) else {
        return false;
    };
    data.len() == count_at + 2 + 2 * usize::from(count)
}

pub(super) fn encode_simple_reply(out: &mut [u8], error: u32, cookie: u64) {
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
}

// Callers pass slices of exactly the right length; a wrong length would be a
// bug in this module, which the fixed-size copies below would expose.
pub(super) fn be_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(b);
    u16::from_be_bytes(a)
}

pub(super) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

pub(super) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}
