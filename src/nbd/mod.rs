//! A small NBD (Network Block Device) server that serves one [`Export`] over a
//! Unix domain socket.
//!
//! The server speaks the fixed newstyle handshake of the NBD protocol
//! (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>) and
//! then simple (not structured) replies in the transmission phase. It is meant
//! for local clients such as `qemu-img`, `qemu-io` or `qemu-nbd --list`, which
//! reach it with a URI like `nbd+unix:///?socket=/path/to/socket`.
//!
//! Supported:
//!
//! * Handshake: `NBD_FLAG_FIXED_NEWSTYLE` and `NBD_FLAG_NO_ZEROES`; options
//!   `NBD_OPT_EXPORT_NAME`, `NBD_OPT_GO`, `NBD_OPT_INFO` (answering
//!   `NBD_INFO_EXPORT` and `NBD_INFO_BLOCK_SIZE`), `NBD_OPT_LIST` (a single
//!   export with the empty name) and `NBD_OPT_ABORT`. Every other option,
//!   including `NBD_OPT_STARTTLS`, `NBD_OPT_STRUCTURED_REPLY` and
//!   `NBD_OPT_EXTENDED_HEADERS`, is refused with `NBD_REP_ERR_UNSUP`, so
//!   clients fall back to plain, simple-reply transmission.
//! * Any export name (including the empty default name) selects the one export.
//! * Commands `NBD_CMD_READ`, `NBD_CMD_WRITE` (with `NBD_CMD_FLAG_FUA`),
//!   `NBD_CMD_FLUSH`, `NBD_CMD_TRIM` (only when [`Export::supports_trim`]),
//!   `NBD_CMD_WRITE_ZEROES` and `NBD_CMD_DISC`.
//!
//! Robustness rules, because the peer is untrusted input:
//!
//! * No allocation is ever sized from a client-supplied length beyond
//!   [`MAX_PAYLOAD`] (requests) or 64 KiB (option data); larger payloads are
//!   read and discarded in bounded chunks, then refused.
//! * A client that misbehaves or disconnects ends only its own connection.
//!   Nothing is logged; per-connection outcomes are reported through the
//!   optional callback of [`serve_with_events`].
//! * Sockets use short timeouts so every connection notices the `stop` flag
//!   within about [`POLL_INTERVAL`], even when the client is idle or is not
//!   reading its replies.
//!
//! Each connection is served on its own thread and handles its requests in
//! order, one at a time (replies are therefore never reordered).
//!
//! The server writes to sockets with plain `write(2)`; like the rest of a Rust
//! program it relies on `SIGPIPE` being ignored (the Rust runtime does this for
//! binaries by default) so that a vanished client yields `EPIPE`, not a signal.
//!
//! The server knows nothing of volumes: it serves whatever implements
//! [`Export`]. Its parts: `protocol.rs` (constants and the encoding of
//! requests, replies and option data), `connection.rs` (one client's
//! handshake and requests), `server.rs` (the accept loop, the totals and the
//! events).

mod connection;
mod protocol;
mod server;
mod shared;
#[cfg(test)]
mod tests;

use std::io;
use std::time::Duration;

#[cfg(test)]
pub use server::serve;
pub use server::{ServeStats, serve_with_events};
pub use shared::ServeEvent;

/// The storage served over NBD.
///
/// Implementations are shared by all connections (each on its own thread), so
/// they must do their own locking.
pub trait Export: Send + Sync {
    /// Size of the export in bytes; sampled once per connection at handshake.
    fn size(&self) -> u64;
    /// Whether the export refuses writes (advertised as `NBD_FLAG_READ_ONLY`).
    fn read_only(&self) -> bool;
    /// Preferred/minimum block size hint (e.g. 512 or 4096); the export itself must still
    /// accept any offset and length within size (it does read-modify-write internally).
    fn block_size(&self) -> u32;
    /// Fill `buf` from `offset`; the server guarantees the range is within `size()`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write `buf` at `offset`; the server guarantees the range is within `size()`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make all completed writes durable.
    fn flush(&self) -> io::Result<()>;
    /// Discard a range; an export may implement it as writing zeros, or return Ok and do nothing.
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Whether to advertise NBD_FLAG_SEND_TRIM.
    fn supports_trim(&self) -> bool;
}

/// Largest `NBD_CMD_READ`/`NBD_CMD_WRITE` length accepted, advertised as the
/// maximum block size. 32 MiB is the limit the protocol says clients should
/// assume anyway, so well-behaved clients never exceed it.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// How often blocked accepts, reads and writes re-check the stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
