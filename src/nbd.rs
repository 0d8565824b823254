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

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

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

/// Totals over the lifetime of one [`serve`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Connections accepted (including ones that never completed the handshake).
    pub connections: u64,
    /// Payload bytes returned to clients by successful `NBD_CMD_READ`s.
    pub bytes_read: u64,
    /// Bytes stored by successful `NBD_CMD_WRITE`s and `NBD_CMD_WRITE_ZEROES`.
    pub bytes_written: u64,
}

/// Something that happened while serving, for callers that want to log.
///
/// Borrowed errors are only valid during the callback.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeEvent<'a> {
    /// A client connected; ids count up from 1 in accept order.
    Connected { id: u64 },
    /// A connection ended. `error` is `None` for an orderly end: `NBD_CMD_DISC`,
    /// `NBD_OPT_ABORT`, the client closing between messages, or a server stop.
    Disconnected {
        id: u64,
        error: Option<&'a io::Error>,
    },
    /// The export failed an operation (`op` is e.g. `"read"`, `"flush"`); the
    /// client was answered with `NBD_EIO` and the connection carries on.
    ExportError {
        id: u64,
        op: &'static str,
        error: &'a io::Error,
    },
    /// `accept()` failed transiently, or no thread could be started for a new
    /// connection (which is then dropped); the server keeps running.
    AcceptError { error: &'a io::Error },
}

/// Largest `NBD_CMD_READ`/`NBD_CMD_WRITE` length accepted, advertised as the
/// maximum block size. 32 MiB is the limit the protocol says clients should
/// assume anyway, so well-behaved clients never exceed it.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// How often blocked accepts, reads and writes re-check the stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Serve connections on `listener` until `stop` becomes true.
///
/// `stop` is checked every [`POLL_INTERVAL`], also while clients are
/// connected but idle or not reading. Each connection is handled on its own
/// thread. On stop, requests already received finish and are answered, then
/// connections are closed, all connection threads are joined and
/// `export.flush()` is called before returning.
///
/// A client that misbehaves or disconnects abruptly ends only its own
/// connection; nothing is printed. This is [`serve_with_events`] with the
/// events (which carry those per-connection errors) ignored.
///
/// The listener is consumed and closed on return; removing the socket file is
/// left to the caller, who created it.
///
/// # Errors
///
/// Only for listener-level failures (a non-transient `accept()` error, or
/// making the listener non-blocking) and for a failing final
/// `export.flush()`; see [`serve_with_events`]. Returns `Ok(stats)` after a
/// clean stop.
#[cfg(test)]
pub fn serve(
    listener: UnixListener,
    export: Arc<dyn Export>,
    stop: &AtomicBool,
) -> io::Result<ServeStats> {
    serve_with_events(listener, export, stop, &|_| {})
}

/// Like [`serve`], reporting connection lifecycle and per-connection errors to
/// `on_event`, which is called from the accept loop and from connection
/// threads (so it must be cheap and must not block for long).
///
/// # Errors
///
/// A non-transient `accept()` failure (connections are then closed as on stop,
/// and the export flushed, before returning), or a failure of the final
/// `export.flush()`, which is returned rather than dropped because it may mean
/// acknowledged writes are not durable. Transient `accept()` failures (out of
/// descriptors or memory, aborted connections) are reported as
/// [`ServeEvent::AcceptError`] and retried after a short pause.
pub fn serve_with_events(
    listener: UnixListener,
    export: Arc<dyn Export>,
    stop: &AtomicBool,
    on_event: &(dyn Fn(ServeEvent<'_>) + Sync),
) -> io::Result<ServeStats> {
    // Non-blocking accept lets the loop poll `stop` without a wake-up channel.
    listener.set_nonblocking(true)?;
    let shared = Shared {
        stop,
        abort: AtomicBool::new(false),
        export: &*export,
        on_event,
        connections: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        bytes_written: AtomicU64::new(0),
    };
    // Scoped threads let connections borrow `stop` and the export, and the
    // scope guarantees every connection has finished before we flush.
    let accept_result = thread::scope(|scope| {
        let result = accept_loop(&listener, &shared, scope);
        if result.is_err() {
            shared.abort.store(true, Ordering::Release);
        }
        result
    });
    let flush_result = export.flush();
    accept_result?;
    flush_result?;
    Ok(ServeStats {
        connections: shared.connections.load(Ordering::Relaxed),
        bytes_read: shared.bytes_read.load(Ordering::Relaxed),
        bytes_written: shared.bytes_written.load(Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------------------
// Protocol constants (names as in proto.md).

const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;
const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

const NBD_OPT_EXPORT_NAME: u32 = 1;
const NBD_OPT_ABORT: u32 = 2;
const NBD_OPT_LIST: u32 = 3;
const NBD_OPT_INFO: u32 = 6;
const NBD_OPT_GO: u32 = 7;

const NBD_REP_ACK: u32 = 1;
const NBD_REP_SERVER: u32 = 2;
const NBD_REP_INFO: u32 = 3;
const NBD_REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const NBD_REP_ERR_INVALID: u32 = (1 << 31) + 3;
const NBD_REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

const NBD_INFO_EXPORT: u16 = 0;
const NBD_INFO_BLOCK_SIZE: u16 = 3;

const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

const NBD_CMD_READ: u16 = 0;
const NBD_CMD_WRITE: u16 = 1;
const NBD_CMD_DISC: u16 = 2;
const NBD_CMD_FLUSH: u16 = 3;
const NBD_CMD_TRIM: u16 = 4;
const NBD_CMD_WRITE_ZEROES: u16 = 6;

const NBD_CMD_FLAG_FUA: u16 = 1 << 0;
const NBD_CMD_FLAG_NO_HOLE: u16 = 1 << 1;

const NBD_EPERM: u32 = 1;
const NBD_EIO: u32 = 5;
const NBD_EINVAL: u32 = 22;
const NBD_ENOSPC: u32 = 28;

/// Strings (export names) may not exceed this per the protocol.
const MAX_NAME_LEN: u32 = 4096;
/// Option payloads above this are discarded and refused with `NBD_REP_ERR_TOO_BIG`.
const MAX_OPTION_LEN: u32 = 64 << 10;
/// The protocol requires the preferred block size to be at least 512.
const MIN_PREFERRED_BLOCK: u32 = 512;
/// Bytes of an `NBD_OPT_EXPORT_NAME` reply padding when zeroes were not waived.
const EXPORT_NAME_PADDING: usize = 124;
const REQUEST_LEN: usize = 28;
const SIMPLE_REPLY_LEN: usize = 16;
/// Chunk for discarding unwanted payload, so draining never allocates more.
const DRAIN_CHUNK: usize = 64 << 10;
/// Chunk for `NBD_CMD_WRITE_ZEROES`; a power of two so every piece after the
/// first is aligned to any power-of-two block size up to 1 MiB.
const ZERO_CHUNK: usize = 1 << 20;
static ZEROES: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

// errno values (Linux) of accept() failures that are resource exhaustion or a
// connection dying in the queue, after which accepting again can succeed.
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const EPROTO: i32 = 71;
const ENOBUFS: i32 = 105;

// ---------------------------------------------------------------------------
// Server plumbing.

/// State shared by the accept loop and all connection threads.
struct Shared<'a> {
    stop: &'a AtomicBool,
    /// Set when the accept loop fails, so connections close as on `stop`.
    abort: AtomicBool,
    export: &'a dyn Export,
    on_event: &'a (dyn Fn(ServeEvent<'_>) + Sync),
    connections: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

impl Shared<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.abort.load(Ordering::Acquire)
    }
}

fn accept_loop<'scope>(
    listener: &UnixListener,
    shared: &'scope Shared<'scope>,
    scope: &'scope thread::Scope<'scope, '_>,
) -> io::Result<()> {
    let mut next_id = 0u64;
    loop {
        if shared.stopping() {
            return Ok(());
        }
        match listener.accept() {
            Ok((stream, _addr)) => {
                next_id += 1;
                let id = next_id;
                let spawned = thread::Builder::new()
                    .name(format!("nbd-conn-{id}"))
                    .spawn_scoped(scope, move || run_connection(shared, id, stream));
                match spawned {
                    // The join handle is dropped on purpose: the scope joins
                    // every thread before `serve` returns.
                    Ok(_) => {
                        shared.connections.fetch_add(1, Ordering::Relaxed);
                    }
                    // The stream went down with the closure, closing it.
                    Err(error) => (shared.on_event)(ServeEvent::AcceptError { error: &error }),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL_INTERVAL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if accept_error_is_transient(&e) => {
                (shared.on_event)(ServeEvent::AcceptError { error: &e });
                // Back off: out-of-descriptor errors would otherwise spin.
                thread::sleep(POLL_INTERVAL);
            }
            Err(e) => return Err(e),
        }
    }
}

fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::OutOfMemory
    ) || matches!(e.raw_os_error(), Some(ENFILE | EMFILE | EPROTO | ENOBUFS))
}

fn run_connection(shared: &Shared<'_>, id: u64, stream: UnixStream) {
    (shared.on_event)(ServeEvent::Connected { id });
    // A panicking export must not take down `serve` (the scope would re-raise
    // it); contain it to this connection like any other failure.
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        Connection::new(shared, id, stream).and_then(Connection::run)
    }))
    .unwrap_or_else(|_| Err(io::Error::other("NBD connection handler panicked")));
    (shared.on_event)(ServeEvent::Disconnected {
        id,
        error: result.as_ref().err(),
    });
}

/// Marker error: the server is stopping, so the connection closes quietly.
#[derive(Debug)]
struct Stopping;

impl fmt::Display for Stopping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NBD server is stopping")
    }
}

impl std::error::Error for Stopping {}

fn is_stopping(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopping>())
}

fn protocol_error(msg: &'static str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

/// Socket I/O that keeps polling the stop flag while blocked.
struct Io<'a> {
    stream: UnixStream,
    shared: &'a Shared<'a>,
}

impl Io<'_> {
    fn is_retryable(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
        )
    }

    /// Fill `buf`. Returns `Ok(false)` if the peer closed before sending any
    /// byte of it (an orderly close between messages). While no data arrives
    /// the stop flag is polled; data that keeps flowing is read to the end.
    fn read_full_or_eof(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "NBD client closed the connection mid-message",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if Self::is_retryable(&e) => {
                    if self.shared.stopping() {
                        return Err(io::Error::other(Stopping));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.read_full_or_eof(buf)? {
            Ok(())
        } else {
            Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "NBD client closed the connection mid-message",
            ))
        }
    }

    /// Read and discard `len` bytes through `scratch` (never allocating from `len`).
    fn discard(&mut self, mut len: u64, scratch: &mut Vec<u8>) -> io::Result<()> {
        if scratch.len() < DRAIN_CHUNK {
            scratch.resize(DRAIN_CHUNK, 0);
        }
        while len > 0 {
            // Junk being discarded is not an in-flight request worth finishing,
            // and a client could stream up to 4 GiB of it.
            if self.shared.stopping() {
                return Err(io::Error::other(Stopping));
            }
            let n = usize::try_from(len).map_or(DRAIN_CHUNK, |l| l.min(DRAIN_CHUNK));
            self.read_full(&mut scratch[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    /// Write all of `buf`. The stop flag is only consulted while the client is
    /// not accepting data, so replies to finished requests still go out.
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.stream.write(buf) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if Self::is_retryable(&e) => {
                    if self.shared.stopping() {
                        return Err(io::Error::other(Stopping));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One transmission-phase request header.
struct Request {
    flags: u16,
    command: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

impl Request {
    fn parse(b: &[u8; REQUEST_LEN]) -> io::Result<Self> {
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

/// Whether the session goes on to the transmission phase after negotiation.
enum Negotiated {
    Transmit,
    Closed,
}

struct Connection<'a> {
    io: Io<'a>,
    shared: &'a Shared<'a>,
    export: &'a dyn Export,
    id: u64,
    size: u64,
    read_only: bool,
    trim: bool,
    /// Reused for payloads: read replies are built in place after a header.
    buf: Vec<u8>,
    /// Writes were acknowledged since the last successful flush.
    dirty: bool,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared<'a>, id: u64, stream: UnixStream) -> io::Result<Self> {
        // Some platforms let accepted sockets inherit O_NONBLOCK; we want
        // blocking I/O bounded by timeouts so the stop flag is polled.
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(POLL_INTERVAL))?;
        stream.set_write_timeout(Some(POLL_INTERVAL))?;
        let export = shared.export;
        Ok(Self {
            io: Io { stream, shared },
            shared,
            export,
            id,
            size: export.size(),
            read_only: export.read_only(),
            trim: export.supports_trim(),
            buf: Vec::new(),
            dirty: false,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let result = match self.negotiate() {
            Ok(Negotiated::Transmit) => self.transmit(),
            Ok(Negotiated::Closed) => Ok(()),
            Err(e) => Err(e),
        };
        let result = match result {
            Err(e) if is_stopping(&e) => Ok(()),
            other => other,
        };
        // Acknowledged writes must not depend on the client remembering to
        // flush before it goes away.
        if self.dirty
            && let Err(e) = self.export.flush()
        {
            self.export_failed("flush", &e);
            return result.and(Err(e));
        }
        result
    }

    fn transmission_flags(&self) -> u16 {
        let mut flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
        if self.read_only {
            flags |= NBD_FLAG_READ_ONLY;
        } else {
            flags |= NBD_FLAG_SEND_WRITE_ZEROES;
            if self.trim {
                flags |= NBD_FLAG_SEND_TRIM;
            }
        }
        flags
    }

    // -- handshake ----------------------------------------------------------

    fn negotiate(&mut self) -> io::Result<Negotiated> {
        let mut hello = Vec::with_capacity(18);
        hello.extend_from_slice(&NBD_MAGIC.to_be_bytes());
        hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
        hello.extend_from_slice(&(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
        self.io.write_all(&hello)?;

        let mut client_flags = [0u8; 4];
        self.io.read_full(&mut client_flags)?;
        let client_flags = u32::from_be_bytes(client_flags);
        if client_flags & !(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES) != 0 {
            // The protocol requires closing on client flags we do not know.
            return Err(protocol_error("unknown NBD client flags"));
        }
        let no_zeroes = client_flags & NBD_FLAG_C_NO_ZEROES != 0;

        loop {
            if self.shared.stopping() {
                return Err(io::Error::other(Stopping));
            }
            let mut header = [0u8; 16];
            if !self.io.read_full_or_eof(&mut header)? {
                return Ok(Negotiated::Closed);
            }
            if be_u64(&header[0..8]) != IHAVEOPT {
                return Err(protocol_error("bad NBD option magic"));
            }
            let option = be_u32(&header[8..12]);
            let len = be_u32(&header[12..16]);

            if option == NBD_OPT_EXPORT_NAME {
                // This option has no error reply; an unacceptable name can only
                // be answered by closing the connection.
                if len > MAX_NAME_LEN {
                    return Err(protocol_error("NBD export name too long"));
                }
                self.io.discard(u64::from(len), &mut self.buf)?;
                let mut reply = Vec::with_capacity(10 + EXPORT_NAME_PADDING);
                reply.extend_from_slice(&self.size.to_be_bytes());
                reply.extend_from_slice(&self.transmission_flags().to_be_bytes());
                if !no_zeroes {
                    reply.resize(reply.len() + EXPORT_NAME_PADDING, 0);
                }
                self.io.write_all(&reply)?;
                return Ok(Negotiated::Transmit);
            }

            if len > MAX_OPTION_LEN {
                self.io.discard(u64::from(len), &mut self.buf)?;
                self.option_reply(option, NBD_REP_ERR_TOO_BIG, b"option data too large")?;
                continue;
            }
            let mut data = vec![0u8; len as usize];
            self.io.read_full(&mut data)?;

            match option {
                NBD_OPT_ABORT => {
                    // The client may already have closed; the ACK is a courtesy.
                    let _ = self.option_reply(option, NBD_REP_ACK, &[]);
                    return Ok(Negotiated::Closed);
                }
                NBD_OPT_LIST if !data.is_empty() => {
                    self.option_reply(option, NBD_REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                }
                NBD_OPT_LIST => {
                    // One export, named "" (a zero name length, no description).
                    self.option_reply(option, NBD_REP_SERVER, &0u32.to_be_bytes())?;
                    self.option_reply(option, NBD_REP_ACK, &[])?;
                }
                NBD_OPT_INFO | NBD_OPT_GO => {
                    if !info_request_is_valid(&data) {
                        self.option_reply(option, NBD_REP_ERR_INVALID, b"malformed info request")?;
                        continue;
                    }
                    self.send_export_info(option)?;
                    if option == NBD_OPT_GO {
                        return Ok(Negotiated::Transmit);
                    }
                }
                _ => self.option_reply(option, NBD_REP_ERR_UNSUP, &[])?,
            }
        }
    }

    /// Answer NBD_OPT_INFO/NBD_OPT_GO. Every name selects the single export,
    /// and the information we have is sent whatever was requested: clients
    /// must ignore extra items, and NBD_INFO_EXPORT is mandatory anyway.
    fn send_export_info(&mut self, option: u32) -> io::Result<()> {
        let mut export = Vec::with_capacity(12);
        export.extend_from_slice(&NBD_INFO_EXPORT.to_be_bytes());
        export.extend_from_slice(&self.size.to_be_bytes());
        export.extend_from_slice(&self.transmission_flags().to_be_bytes());
        self.option_reply(option, NBD_REP_INFO, &export)?;

        let mut block = Vec::with_capacity(14);
        block.extend_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
        block.extend_from_slice(&1u32.to_be_bytes());
        block.extend_from_slice(&preferred_block_size(self.export.block_size()).to_be_bytes());
        block.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
        self.option_reply(option, NBD_REP_INFO, &block)?;

        self.option_reply(option, NBD_REP_ACK, &[])
    }

    fn option_reply(&mut self, option: u32, reply_type: u32, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "option reply too large"))?;
        let mut msg = Vec::with_capacity(20 + data.len());
        msg.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&reply_type.to_be_bytes());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(data);
        self.io.write_all(&msg)
    }

    // -- transmission -------------------------------------------------------

    fn transmit(&mut self) -> io::Result<()> {
        loop {
            // Checked between requests too, so a client that keeps the pipe
            // full cannot hold off a stop.
            if self.shared.stopping() {
                return Ok(());
            }
            let mut header = [0u8; REQUEST_LEN];
            if !self.io.read_full_or_eof(&mut header)? {
                return Ok(());
            }
            let req = Request::parse(&header)?;
            match req.command {
                NBD_CMD_READ => self.cmd_read(&req)?,
                NBD_CMD_WRITE => self.cmd_write(&req)?,
                NBD_CMD_DISC => return Ok(()),
                NBD_CMD_FLUSH => self.cmd_flush(&req)?,
                NBD_CMD_TRIM => self.cmd_trim(&req)?,
                NBD_CMD_WRITE_ZEROES => self.cmd_write_zeroes(&req)?,
                // Unknown commands carry no payload we could know about.
                _ => self.reply(req.cookie, NBD_EINVAL)?,
            }
        }
    }

    fn in_range(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size)
    }

    fn reply(&mut self, cookie: u64, error: u32) -> io::Result<()> {
        let mut msg = [0u8; SIMPLE_REPLY_LEN];
        encode_simple_reply(&mut msg, error, cookie);
        self.io.write_all(&msg)
    }

    fn export_failed(&self, op: &'static str, error: &io::Error) {
        (self.shared.on_event)(ServeEvent::ExportError {
            id: self.id,
            op,
            error,
        });
    }

    /// Flush for NBD_CMD_FLAG_FUA; returns the NBD error to reply with.
    fn flush_export(&mut self) -> u32 {
        match self.export.flush() {
            Ok(()) => {
                self.dirty = false;
                0
            }
            Err(e) => {
                self.export_failed("flush", &e);
                NBD_EIO
            }
        }
    }

    fn cmd_read(&mut self, req: &Request) -> io::Result<()> {
        // FUA is legal (and meaningless) on every command once negotiated.
        let error = if req.flags & !NBD_CMD_FLAG_FUA != 0
            || req.len > MAX_PAYLOAD
            || !self.in_range(req.offset, u64::from(req.len))
        {
            NBD_EINVAL
        } else {
            0
        };
        if error != 0 || req.len == 0 {
            // A failed simple read reply carries no payload.
            return self.reply(req.cookie, error);
        }
        let total = SIMPLE_REPLY_LEN + req.len as usize;
        if self.buf.len() < total {
            self.buf.resize(total, 0);
        }
        let (header, payload) = self.buf[..total].split_at_mut(SIMPLE_REPLY_LEN);
        match self.export.read_at(payload, req.offset) {
            Ok(()) => {
                encode_simple_reply(header, 0, req.cookie);
                // Header and data in one write: one syscall, no copy.
                self.io.write_all(&self.buf[..total])?;
                self.shared
                    .bytes_read
                    .fetch_add(u64::from(req.len), Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.export_failed("read", &e);
                self.reply(req.cookie, NBD_EIO)
            }
        }
    }

    fn cmd_write(&mut self, req: &Request) -> io::Result<()> {
        let error = if req.flags & !NBD_CMD_FLAG_FUA != 0 {
            NBD_EINVAL
        } else if self.read_only {
            NBD_EPERM
        } else if req.len > MAX_PAYLOAD {
            NBD_EINVAL
        } else if !self.in_range(req.offset, u64::from(req.len)) {
            // proto.md: writes beyond the end SHOULD fail with ENOSPC.
            NBD_ENOSPC
        } else {
            0
        };
        if error != 0 {
            // The payload follows the header regardless; consume it so the
            // next request header is read from the right place.
            self.io.discard(u64::from(req.len), &mut self.buf)?;
            return self.reply(req.cookie, error);
        }
        let len = req.len as usize;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        self.io.read_full(&mut self.buf[..len])?;
        if len > 0 {
            if let Err(e) = self.export.write_at(&self.buf[..len], req.offset) {
                self.export_failed("write", &e);
                return self.reply(req.cookie, NBD_EIO);
            }
            self.dirty = true;
        }
        if req.flags & NBD_CMD_FLAG_FUA != 0 {
            let error = self.flush_export();
            if error != 0 {
                return self.reply(req.cookie, error);
            }
        }
        self.shared
            .bytes_written
            .fetch_add(u64::from(req.len), Ordering::Relaxed);
        self.reply(req.cookie, 0)
    }

    fn cmd_flush(&mut self, req: &Request) -> io::Result<()> {
        // Offset and length must be zero per the protocol, but nothing is
        // gained by refusing a flush over it.
        let error = if req.flags & !NBD_CMD_FLAG_FUA != 0 {
            NBD_EINVAL
        } else {
            self.flush_export()
        };
        self.reply(req.cookie, error)
    }

    fn cmd_trim(&mut self, req: &Request) -> io::Result<()> {
        let len = u64::from(req.len);
        let error = if req.flags & !NBD_CMD_FLAG_FUA != 0 {
            NBD_EINVAL
        } else if self.read_only {
            NBD_EPERM
        } else if !self.trim || !self.in_range(req.offset, len) {
            NBD_EINVAL
        } else if len == 0 {
            0
        } else if let Err(e) = self.export.trim(req.offset, len) {
            self.export_failed("trim", &e);
            NBD_EIO
        } else {
            self.dirty = true;
            if req.flags & NBD_CMD_FLAG_FUA != 0 {
                self.flush_export()
            } else {
                0
            }
        };
        self.reply(req.cookie, error)
    }

    fn cmd_write_zeroes(&mut self, req: &Request) -> io::Result<()> {
        let len = u64::from(req.len);
        let error = if req.flags & !(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE) != 0 {
            NBD_EINVAL
        } else if self.read_only {
            NBD_EPERM
        } else if !self.in_range(req.offset, len) {
            NBD_ENOSPC
        } else {
            // NO_HOLE needs no handling: zeroes are always written as data.
            self.write_zeroes(req.offset, len)
        };
        let error = if error == 0 && req.flags & NBD_CMD_FLAG_FUA != 0 {
            self.flush_export()
        } else {
            error
        };
        if error == 0 {
            self.shared.bytes_written.fetch_add(len, Ordering::Relaxed);
        }
        self.reply(req.cookie, error)
    }

    /// Write zeroes over a validated range in bounded, aligned pieces, so a
    /// 4 GiB request needs no 4 GiB buffer. Returns the NBD error.
    fn write_zeroes(&mut self, mut offset: u64, mut len: u64) -> u32 {
        const CHUNK: u64 = ZERO_CHUNK as u64;
        while len > 0 {
            let piece = len.min(CHUNK - offset % CHUNK);
            // `piece` <= ZERO_CHUNK, so the cast and the slice are in bounds.
            if let Err(e) = self.export.write_at(&ZEROES[..piece as usize], offset) {
                self.export_failed("write zeroes", &e);
                return NBD_EIO;
            }
            self.dirty = true;
            offset += piece;
            len -= piece;
        }
        0
    }
}

/// Turn the export's block size hint into a valid preferred block size: the
/// protocol requires a power of two of at least 512, and it must not exceed
/// the advertised maximum.
fn preferred_block_size(hint: u32) -> u32 {
    hint.clamp(MIN_PREFERRED_BLOCK, MAX_PAYLOAD)
        .checked_next_power_of_two()
        .map_or(MAX_PAYLOAD, |p| p.min(MAX_PAYLOAD))
}

/// NBD_OPT_INFO/NBD_OPT_GO data: u32 name length, name, u16 count, count x u16.
/// Only the framing is checked: every name selects the export and every
/// information request is answered the same way.
fn info_request_is_valid(data: &[u8]) -> bool {
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

fn encode_simple_reply(out: &mut [u8], error: u32, cookie: u64) {
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
}

// Callers pass slices of exactly the right length; a wrong length would be a
// bug in this module, which the fixed-size copies below would expose.
fn be_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(b);
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};
    use std::net::Shutdown;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Mutex;
    use std::thread::JoinHandle;
    use std::time::Instant;

    const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
    /// Generous bound for "promptly" so a loaded CI machine does not flake;
    /// the expected time is about one POLL_INTERVAL.
    const PROMPT: Duration = Duration::from_secs(2);

    // -- in-memory export ---------------------------------------------------

    struct MemExport {
        data: Mutex<Vec<u8>>,
        read_only: bool,
        trim: bool,
        block: u32,
        fail: AtomicBool,
        write_delay: Duration,
        flushes: AtomicU64,
        /// Set if the server ever asked for a range outside the export.
        out_of_range: AtomicBool,
    }

    impl MemExport {
        fn new(data: Vec<u8>) -> Self {
            Self {
                data: Mutex::new(data),
                read_only: false,
                trim: true,
                block: 4096,
                fail: AtomicBool::new(false),
                write_delay: Duration::ZERO,
                flushes: AtomicU64::new(0),
                out_of_range: AtomicBool::new(false),
            }
        }

        fn read_only(mut self) -> Self {
            self.read_only = true;
            self
        }

        fn contents(&self) -> Vec<u8> {
            self.data.lock().unwrap().clone()
        }

        fn check(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected failure"));
            }
            let size = self.data.lock().unwrap().len();
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            match start.checked_add(len) {
                Some(end) if end <= size => Ok(start..end),
                _ => {
                    self.out_of_range.store(true, Ordering::SeqCst);
                    Err(io::Error::other("out of range"))
                }
            }
        }
    }

    impl Export for MemExport {
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn read_only(&self) -> bool {
            self.read_only
        }
        fn block_size(&self) -> u32 {
            self.block
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let r = self.check(offset, buf.len())?;
            buf.copy_from_slice(&self.data.lock().unwrap()[r]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let r = self.check(offset, buf.len())?;
            thread::sleep(self.write_delay);
            self.data.lock().unwrap()[r].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            self.check(0, 0)?;
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
            let r = self.check(offset, usize::try_from(len).unwrap())?;
            self.data.lock().unwrap()[r].fill(0);
            Ok(())
        }
        fn supports_trim(&self) -> bool {
            self.trim
        }
    }

    /// Deterministic non-repeating bytes, so misplaced data is detected.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    // -- server harness -----------------------------------------------------

    struct Server {
        dir: tempfile::TempDir,
        path: PathBuf,
        export: Arc<MemExport>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<io::Result<ServeStats>>>,
        events: Arc<Mutex<Vec<String>>>,
    }

    impl Server {
        fn start(export: MemExport) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("nbd.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let export = Arc::new(export);
            let stop = Arc::new(AtomicBool::new(false));
            let events = Arc::new(Mutex::new(Vec::new()));
            let handle = {
                let export: Arc<dyn Export> = export.clone();
                let stop = stop.clone();
                let events = events.clone();
                thread::spawn(move || {
                    let sink = move |event: ServeEvent<'_>| {
                        events.lock().unwrap().push(format!("{event:?}"));
                    };
                    serve_with_events(listener, export, &stop, &sink)
                })
            };
            Self {
                dir,
                path,
                export,
                stop,
                handle: Some(handle),
                events,
            }
        }

        fn uri(&self, name: &str) -> String {
            format!("nbd+unix:///{name}?socket={}", self.path.display())
        }

        fn client(&self, client_flags: u32) -> Client {
            Client::start(&self.path, client_flags)
        }

        /// Set `stop`, wait for `serve` and return its result and how long
        /// that took.
        fn stop(mut self) -> (io::Result<ServeStats>, Duration) {
            let start = Instant::now();
            self.stop.store(true, Ordering::SeqCst);
            let handle = self.handle.take().unwrap();
            let result = handle.join().expect("serve panicked");
            (result, start.elapsed())
        }

        /// Like `stop`, also returning every event reported; all connection
        /// threads have ended by then, so none is missing.
        fn stop_with_events(self) -> (io::Result<ServeStats>, Duration, Vec<String>) {
            let events = self.events.clone();
            let (result, elapsed) = self.stop();
            let events = events.lock().unwrap().clone();
            assert!(all_events_clean(&events), "{events:?}");
            (result, elapsed, events)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
    }

    // -- hand-rolled client -------------------------------------------------

    const ALL_FLAGS: u32 = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

    struct Client {
        s: UnixStream,
        cookie: u64,
    }

    #[derive(Debug)]
    struct ExportInfo {
        size: u64,
        flags: u16,
        block: Option<(u32, u32, u32)>,
    }

    impl Client {
        fn connect(path: &Path) -> Self {
            let s = UnixStream::connect(path).unwrap();
            s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            s.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            Self { s, cookie: 0 }
        }

        fn start(path: &Path, client_flags: u32) -> Self {
            let mut c = Self::connect(path);
            let flags = c.greeting();
            assert_eq!(flags, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
            c.send(&client_flags.to_be_bytes());
            c
        }

        fn send(&mut self, b: &[u8]) {
            self.s.write_all(b).unwrap();
        }

        fn recv(&mut self, n: usize) -> Vec<u8> {
            let mut b = vec![0u8; n];
            self.s.read_exact(&mut b).unwrap();
            b
        }

        fn recv_u16(&mut self) -> u16 {
            be_u16(&self.recv(2))
        }
        fn recv_u32(&mut self) -> u32 {
            be_u32(&self.recv(4))
        }
        fn recv_u64(&mut self) -> u64 {
            be_u64(&self.recv(8))
        }

        fn greeting(&mut self) -> u16 {
            assert_eq!(self.recv_u64(), NBD_MAGIC);
            assert_eq!(self.recv_u64(), IHAVEOPT);
            self.recv_u16()
        }

        fn send_option(&mut self, option: u32, data: &[u8]) {
            let mut m = IHAVEOPT.to_be_bytes().to_vec();
            m.extend_from_slice(&option.to_be_bytes());
            m.extend_from_slice(&(data.len() as u32).to_be_bytes());
            m.extend_from_slice(data);
            self.send(&m);
        }

        fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
            assert_eq!(self.recv_u64(), OPTION_REPLY_MAGIC);
            let option = self.recv_u32();
            let kind = self.recv_u32();
            let len = self.recv_u32();
            assert!(len < 1 << 20, "absurd option reply length {len}");
            (option, kind, self.recv(len as usize))
        }

        fn info_data(name: &[u8], requests: &[u16]) -> Vec<u8> {
            let mut d = (name.len() as u32).to_be_bytes().to_vec();
            d.extend_from_slice(name);
            d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
            for r in requests {
                d.extend_from_slice(&r.to_be_bytes());
            }
            d
        }

        /// Send NBD_OPT_INFO or NBD_OPT_GO and collect the replies up to ACK.
        fn info(&mut self, option: u32, name: &[u8]) -> ExportInfo {
            self.send_option(option, &Self::info_data(name, &[NBD_INFO_BLOCK_SIZE]));
            let mut export = None;
            let mut block = None;
            loop {
                let (opt, kind, data) = self.option_reply();
                assert_eq!(opt, option);
                match kind {
                    NBD_REP_ACK => break,
                    NBD_REP_INFO => match be_u16(&data[0..2]) {
                        NBD_INFO_EXPORT => {
                            assert_eq!(data.len(), 12);
                            export = Some((be_u64(&data[2..10]), be_u16(&data[10..12])));
                        }
                        NBD_INFO_BLOCK_SIZE => {
                            assert_eq!(data.len(), 14);
                            block = Some((
                                be_u32(&data[2..6]),
                                be_u32(&data[6..10]),
                                be_u32(&data[10..14]),
                            ));
                        }
                        other => panic!("unexpected info type {other}"),
                    },
                    other => panic!("unexpected option reply {other:#x}"),
                }
            }
            let (size, flags) = export.expect("no NBD_INFO_EXPORT");
            ExportInfo { size, flags, block }
        }

        fn request(&mut self, command: u16, flags: u16, offset: u64, len: u32) -> u64 {
            self.cookie += 1;
            let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
            m.extend_from_slice(&flags.to_be_bytes());
            m.extend_from_slice(&command.to_be_bytes());
            m.extend_from_slice(&self.cookie.to_be_bytes());
            m.extend_from_slice(&offset.to_be_bytes());
            m.extend_from_slice(&len.to_be_bytes());
            self.send(&m);
            self.cookie
        }

        /// Read a simple reply for `cookie`; returns the error field.
        fn reply(&mut self, cookie: u64) -> u32 {
            assert_eq!(self.recv_u32(), SIMPLE_REPLY_MAGIC);
            let error = self.recv_u32();
            assert_eq!(self.recv_u64(), cookie);
            error
        }

        fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
            let cookie = self.request(NBD_CMD_READ, 0, offset, len);
            match self.reply(cookie) {
                0 => Ok(self.recv(len as usize)),
                e => Err(e),
            }
        }

        fn write(&mut self, offset: u64, data: &[u8], flags: u16) -> u32 {
            let cookie = self.request(NBD_CMD_WRITE, flags, offset, data.len() as u32);
            self.send(data);
            self.reply(cookie)
        }

        /// A command without payload in either direction.
        fn command(&mut self, command: u16, flags: u16, offset: u64, len: u32) -> u32 {
            let cookie = self.request(command, flags, offset, len);
            self.reply(cookie)
        }

        fn disconnect(mut self) {
            self.request(NBD_CMD_DISC, 0, 0, 0);
            self.expect_closed();
        }

        /// Assert that the server closes the connection (without hanging).
        fn expect_closed(&mut self) {
            let mut b = [0u8; 4096];
            let deadline = Instant::now() + CLIENT_TIMEOUT;
            loop {
                match self.s.read(&mut b) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                    Err(e) => panic!("connection not closed: {e}"),
                }
                assert!(Instant::now() < deadline, "connection not closed");
            }
        }
    }

    fn all_events_clean(events: &[String]) -> bool {
        events.iter().all(|e| !e.contains("panicked"))
    }

    // -- unit tests -----------------------------------------------------------

    #[test]
    fn preferred_block_size_is_sanitised() {
        assert_eq!(preferred_block_size(0), 512);
        assert_eq!(preferred_block_size(1), 512);
        assert_eq!(preferred_block_size(512), 512);
        assert_eq!(preferred_block_size(3000), 4096);
        assert_eq!(preferred_block_size(4096), 4096);
        assert_eq!(preferred_block_size(u32::MAX), MAX_PAYLOAD);
    }

    #[test]
    fn info_request_framing() {
        assert!(info_request_is_valid(&Client::info_data(b"", &[])));
        assert!(info_request_is_valid(&Client::info_data(b"foo", &[1, 3])));
        let mut long = Client::info_data(b"foo", &[3]);
        long.push(0);
        assert!(!info_request_is_valid(&long));
        assert!(!info_request_is_valid(&long[..long.len() - 3]));
        assert!(!info_request_is_valid(&[]));
        assert!(!info_request_is_valid(&[0xff, 0xff, 0xff, 0xff, 0, 0]));
    }

    #[test]
    fn go_read_write_flush_trim_zeroes_disc() {
        let size = 1 << 20;
        let initial = pattern(size, 1);
        let server = Server::start(MemExport::new(initial.clone()));
        let mut model = initial.clone();

        let mut c = server.client(ALL_FLAGS);
        let info = c.info(NBD_OPT_GO, b"");
        assert_eq!(info.size, size as u64);
        let expected_flags = NBD_FLAG_HAS_FLAGS
            | NBD_FLAG_SEND_FLUSH
            | NBD_FLAG_SEND_FUA
            | NBD_FLAG_SEND_TRIM
            | NBD_FLAG_SEND_WRITE_ZEROES;
        assert_eq!(info.flags, expected_flags);
        assert_eq!(info.block, Some((1, 4096, MAX_PAYLOAD)));

        assert_eq!(c.read(0, size as u32).unwrap(), model);

        let data = vec![0xab; 3333];
        assert_eq!(c.write(1000, &data, 0), 0);
        model[1000..4333].copy_from_slice(&data);
        assert_eq!(c.read(999, 3335).unwrap(), model[999..4334]);

        let flushes = server.export.flushes.load(Ordering::SeqCst);
        let fua = pattern(7, 2);
        assert_eq!(c.write(size as u64 - 7, &fua, NBD_CMD_FLAG_FUA), 0);
        model[size - 7..].copy_from_slice(&fua);
        assert_eq!(server.export.flushes.load(Ordering::SeqCst), flushes + 1);

        assert_eq!(c.command(NBD_CMD_FLUSH, 0, 0, 0), 0);
        assert_eq!(server.export.flushes.load(Ordering::SeqCst), flushes + 2);

        assert_eq!(c.command(NBD_CMD_TRIM, 0, 4096, 8192), 0);
        model[4096..12288].fill(0);

        // Spans several ZERO_CHUNK pieces and starts unaligned.
        let (zoff, zlen) = (7usize, (ZERO_CHUNK + 300_000).min(size - 7));
        assert_eq!(
            c.command(
                NBD_CMD_WRITE_ZEROES,
                NBD_CMD_FLAG_NO_HOLE,
                zoff as u64,
                zlen as u32
            ),
            0
        );
        model[zoff..zoff + zlen].fill(0);
        let small = pattern(100, 3);
        assert_eq!(c.write(500_000, &small, 0), 0);
        model[500_000..500_100].copy_from_slice(&small);
        assert_eq!(c.command(NBD_CMD_WRITE_ZEROES, 0, 500_010, 50), 0);
        model[500_010..500_060].fill(0);

        // Zero-length requests succeed without payload.
        assert_eq!(c.read(5, 0).unwrap(), Vec::<u8>::new());
        assert_eq!(c.write(5, &[], 0), 0);

        assert_eq!(c.read(0, size as u32).unwrap(), model);
        c.disconnect();
        assert_eq!(server.export.contents(), model);
        assert!(!server.export.out_of_range.load(Ordering::SeqCst));

        let (result, elapsed, events) = server.stop_with_events();
        let stats = result.unwrap();
        assert!(elapsed < PROMPT, "stop took {elapsed:?}");
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.bytes_read, 2 * size as u64 + 3335);
        assert_eq!(stats.bytes_written, 3333 + 7 + zlen as u64 + 100 + 50);
        assert!(
            events
                .iter()
                .any(|e| e.contains("Disconnected") && e.contains("error: None")),
            "{events:?}"
        );
    }

    #[test]
    fn export_name_option_with_and_without_zero_padding() {
        let data = pattern(8192, 4);
        let server = Server::start(MemExport::new(data.clone()));
        let expected_flags = NBD_FLAG_HAS_FLAGS
            | NBD_FLAG_SEND_FLUSH
            | NBD_FLAG_SEND_FUA
            | NBD_FLAG_SEND_TRIM
            | NBD_FLAG_SEND_WRITE_ZEROES;
        for (flags, name) in [
            (ALL_FLAGS, &b""[..]),
            (NBD_FLAG_C_FIXED_NEWSTYLE, b"foo"),
            (0, b"some/other name"),
        ] {
            let mut c = server.client(flags);
            c.send_option(NBD_OPT_EXPORT_NAME, name);
            assert_eq!(c.recv_u64(), 8192);
            assert_eq!(c.recv_u16(), expected_flags);
            if flags & NBD_FLAG_C_NO_ZEROES == 0 {
                assert_eq!(c.recv(EXPORT_NAME_PADDING), vec![0; EXPORT_NAME_PADDING]);
            }
            assert_eq!(c.read(100, 200).unwrap(), data[100..300]);
            c.disconnect();
        }
        assert_eq!(server.stop().0.unwrap().connections, 3);
    }

    #[test]
    fn option_haggling() {
        let data = pattern(65536, 5);
        let server = Server::start(MemExport::new(data.clone()));
        let mut c = server.client(ALL_FLAGS);

        c.send_option(NBD_OPT_LIST, &[]);
        assert_eq!(c.option_reply(), (NBD_OPT_LIST, NBD_REP_SERVER, vec![0; 4]));
        assert_eq!(c.option_reply(), (NBD_OPT_LIST, NBD_REP_ACK, vec![]));
        c.send_option(NBD_OPT_LIST, b"x");
        assert_eq!(c.option_reply().1, NBD_REP_ERR_INVALID);

        // STARTTLS, STRUCTURED_REPLY, LIST/SET_META_CONTEXT, EXTENDED_HEADERS, unknown.
        for option in [5, 8, 9, 10, 11, 4242] {
            c.send_option(option, &[1, 2, 3]);
            let (opt, kind, _) = c.option_reply();
            assert_eq!((opt, kind), (option, NBD_REP_ERR_UNSUP));
        }

        let info = c.info(NBD_OPT_INFO, b"any name");
        assert_eq!(info.size, 65536);
        assert_eq!(info.block, Some((1, 4096, MAX_PAYLOAD)));

        let mut bad = Client::info_data(b"x", &[3]);
        bad.pop();
        c.send_option(NBD_OPT_GO, &bad);
        assert_eq!(
            c.option_reply(),
            (
                NBD_OPT_GO,
                NBD_REP_ERR_INVALID,
                b"malformed info request".to_vec()
            )
        );

        // Oversized option data is drained and refused; the session goes on.
        c.send_option(NBD_OPT_INFO, &vec![7; MAX_OPTION_LEN as usize + 1]);
        assert_eq!(c.option_reply().1, NBD_REP_ERR_TOO_BIG);

        let info = c.info(NBD_OPT_GO, b"");
        assert_eq!(info.size, 65536);
        assert_eq!(c.read(0, 65536).unwrap(), data);
        c.disconnect();

        let mut c = server.client(ALL_FLAGS);
        c.send_option(NBD_OPT_ABORT, &[]);
        assert_eq!(c.option_reply(), (NBD_OPT_ABORT, NBD_REP_ACK, vec![]));
        c.expect_closed();

        let (result, _, events) = server.stop_with_events();
        assert!(result.is_ok());
        assert!(!events.iter().any(|e| e.contains("Some(")), "{events:?}");
    }

    #[test]
    fn read_only_export_refuses_writes() {
        let data = pattern(65536, 6);
        let server = Server::start(MemExport::new(data.clone()).read_only());
        let mut c = server.client(ALL_FLAGS);
        let info = c.info(NBD_OPT_GO, b"");
        assert_eq!(
            info.flags,
            NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA
        );
        assert_eq!(c.write(0, &[1; 512], 0), NBD_EPERM);
        assert_eq!(c.write(1, &[1; 3], NBD_CMD_FLAG_FUA), NBD_EPERM);
        assert_eq!(c.command(NBD_CMD_TRIM, 0, 0, 512), NBD_EPERM);
        assert_eq!(c.command(NBD_CMD_WRITE_ZEROES, 0, 0, 512), NBD_EPERM);
        assert_eq!(c.command(NBD_CMD_FLUSH, 0, 0, 0), 0);
        assert_eq!(c.read(0, 65536).unwrap(), data);
        c.disconnect();
        assert_eq!(server.export.contents(), data);
        let stats = server.stop().0.unwrap();
        assert_eq!(stats.bytes_written, 0);
    }

    #[test]
    fn invalid_requests_get_errors_and_connection_survives() {
        let size = 65536u64;
        let data = pattern(size as usize, 7);
        let mut export = MemExport::new(data.clone());
        export.trim = false;
        let server = Server::start(export);
        let mut c = server.client(ALL_FLAGS);
        let info = c.info(NBD_OPT_GO, b"");
        assert_eq!(info.flags & NBD_FLAG_SEND_TRIM, 0);

        // Reads out of range: error without payload, so the next reply parses.
        assert_eq!(c.read(size - 10, 11), Err(NBD_EINVAL));
        assert_eq!(c.read(size, 1), Err(NBD_EINVAL));
        assert_eq!(c.read(u64::MAX, 1), Err(NBD_EINVAL));
        assert_eq!(c.read(u64::MAX - 1, u32::MAX), Err(NBD_EINVAL));
        assert_eq!(c.read(0, u32::MAX), Err(NBD_EINVAL));
        assert_eq!(c.read(0, MAX_PAYLOAD + 1), Err(NBD_EINVAL));
        // Unknown or inapplicable flags (DF, REQ_ONE) and unknown commands.
        assert_eq!(c.command(NBD_CMD_READ, 1 << 2, 0, 16), NBD_EINVAL);
        assert_eq!(c.command(NBD_CMD_FLUSH, 1 << 3, 0, 0), NBD_EINVAL);
        assert_eq!(c.command(42, 0, 0, 16), NBD_EINVAL);
        assert_eq!(c.command(5, 0, 0, 16), NBD_EINVAL); // CACHE, not advertised
        // Trim not advertised.
        assert_eq!(c.command(NBD_CMD_TRIM, 0, 0, 512), NBD_EINVAL);
        // Writes out of range: payload consumed, ENOSPC.
        assert_eq!(c.write(size - 3, &[9; 4], 0), NBD_ENOSPC);
        assert_eq!(c.write(u64::MAX - 1, &[9; 4], 0), NBD_ENOSPC);
        assert_eq!(c.command(NBD_CMD_WRITE_ZEROES, 0, size - 3, 4), NBD_ENOSPC);
        assert_eq!(c.command(NBD_CMD_WRITE_ZEROES, 1 << 4, 0, 4), NBD_EINVAL);
        assert_eq!(c.write(0, &[9; 4], 1 << 1), NBD_EINVAL);
        // An oversized write whose payload really follows is drained.
        let big = vec![0x5a; MAX_PAYLOAD as usize + 1];
        assert_eq!(c.write(0, &big, 0), NBD_EINVAL);

        assert_eq!(c.read(0, size as u32).unwrap(), data);
        c.disconnect();
        assert_eq!(server.export.contents(), data);
        assert!(!server.export.out_of_range.load(Ordering::SeqCst));
        assert!(server.stop().0.is_ok());
    }

    #[test]
    fn export_errors_become_eio() {
        let data = pattern(8192, 8);
        let server = Server::start(MemExport::new(data.clone()));
        let mut c = server.client(ALL_FLAGS);
        c.info(NBD_OPT_GO, b"");
        server.export.fail.store(true, Ordering::SeqCst);
        assert_eq!(c.read(0, 512), Err(NBD_EIO));
        assert_eq!(c.write(0, &[1; 512], 0), NBD_EIO);
        assert_eq!(c.command(NBD_CMD_FLUSH, 0, 0, 0), NBD_EIO);
        assert_eq!(c.command(NBD_CMD_TRIM, 0, 0, 512), NBD_EIO);
        assert_eq!(c.command(NBD_CMD_WRITE_ZEROES, 0, 0, 512), NBD_EIO);
        server.export.fail.store(false, Ordering::SeqCst);
        assert_eq!(c.read(0, 8192).unwrap(), data);
        c.disconnect();
        let (result, _, events) = server.stop_with_events();
        assert!(result.is_ok());
        for op in ["read", "write", "flush", "trim", "write zeroes"] {
            let needle = format!("op: \"{op}\"");
            assert!(
                events
                    .iter()
                    .any(|e| e.contains("ExportError") && e.contains(&needle)),
                "{op}: {events:?}"
            );
        }
    }

    #[test]
    fn malformed_clients_only_end_their_own_connection() {
        let data = pattern(65536, 9);
        let server = Server::start(MemExport::new(data.clone()));
        // A client that stays connected throughout must be unaffected.
        let mut good = server.client(ALL_FLAGS);
        good.info(NBD_OPT_GO, b"");

        let header = |option: u32, len: u32| {
            let mut m = IHAVEOPT.to_be_bytes().to_vec();
            m.extend_from_slice(&option.to_be_bytes());
            m.extend_from_slice(&len.to_be_bytes());
            m
        };
        let request = |command: u16, len: u32| {
            let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
            m.extend_from_slice(&0u16.to_be_bytes());
            m.extend_from_slice(&command.to_be_bytes());
            m.extend_from_slice(&[0; 16]);
            m.extend_from_slice(&len.to_be_bytes());
            m
        };
        let mut bad_magic = header(NBD_OPT_GO, 0);
        bad_magic[0] ^= 0xff;
        let mut truncated = header(NBD_OPT_INFO, 100);
        truncated.extend_from_slice(&[0; 10]);
        let mut bad_request_magic = request(NBD_CMD_READ, 512);
        bad_request_magic[3] ^= 1;
        let mut huge_write = request(NBD_CMD_WRITE, u32::MAX);
        huge_write.extend_from_slice(&[0; 1000]);

        // (client flags, go first?, bytes, half-close afterwards?)
        let cases: Vec<(u32, bool, Vec<u8>, bool)> = vec![
            (ALL_FLAGS, false, bad_magic, false),
            (0x80, false, vec![], false),
            (ALL_FLAGS, false, truncated, true),
            (ALL_FLAGS, false, header(NBD_OPT_INFO, u32::MAX), true),
            (
                ALL_FLAGS,
                false,
                header(NBD_OPT_EXPORT_NAME, u32::MAX),
                false,
            ),
            (ALL_FLAGS, false, pattern(1000, 10), false),
            (ALL_FLAGS, true, bad_request_magic, false),
            (
                ALL_FLAGS,
                true,
                request(NBD_CMD_READ, 512)[..10].to_vec(),
                true,
            ),
            (ALL_FLAGS, true, huge_write, true),
            (ALL_FLAGS, true, pattern(1000, 11), false),
        ];
        for (i, (flags, go, bytes, half_close)) in cases.into_iter().enumerate() {
            let mut c = server.client(flags);
            if go {
                c.info(NBD_OPT_GO, b"");
            }
            // The server may close before everything is sent.
            let _ = c.s.write_all(&bytes);
            if half_close {
                let _ = c.s.shutdown(Shutdown::Write);
            }
            c.expect_closed();
            eprintln!("malformed case {i} closed");
        }
        // Clients that vanish at once, before and after reading the greeting.
        drop(UnixStream::connect(&server.path).unwrap());
        let mut c = Client::connect(&server.path);
        c.greeting();
        drop(c);

        assert_eq!(good.read(0, 65536).unwrap(), data);
        good.disconnect();
        let mut c = server.client(ALL_FLAGS);
        assert_eq!(c.info(NBD_OPT_GO, b"").size, 65536);
        c.disconnect();

        let (result, elapsed, events) = server.stop_with_events();
        let stats = result.unwrap();
        assert!(elapsed < PROMPT);
        assert_eq!(stats.connections, 14);
        let errors = events
            .iter()
            .filter(|e| e.contains("Disconnected") && e.contains("Some("))
            .count();
        assert!(errors >= 10, "expected protocol errors in {events:?}");
    }

    #[test]
    fn stop_without_clients_is_prompt() {
        let server = Server::start(MemExport::new(vec![0; 4096]));
        thread::sleep(Duration::from_millis(100));
        let (result, elapsed) = server.stop();
        assert_eq!(result.unwrap(), ServeStats::default());
        assert!(elapsed < PROMPT, "stop took {elapsed:?}");
    }

    #[test]
    fn stop_with_idle_clients_is_prompt() {
        let server = Server::start(MemExport::new(pattern(65536, 12)));
        let export = server.export.clone();
        // Idle in transmission, after a write (so a flush is due).
        let mut transmitting = server.client(ALL_FLAGS);
        transmitting.info(NBD_OPT_GO, b"");
        assert_eq!(transmitting.write(10, &[1, 2, 3], 0), 0);
        // Idle before sending client flags, and idle mid option header.
        let mut silent = Client::connect(&server.path);
        silent.greeting();
        let mut partial = server.client(ALL_FLAGS);
        partial.send(&IHAVEOPT.to_be_bytes()[..5]);
        thread::sleep(Duration::from_millis(200));

        let flushes = export.flushes.load(Ordering::SeqCst);
        let (result, elapsed) = server.stop();
        assert!(elapsed < PROMPT, "stop took {elapsed:?}");
        assert_eq!(result.unwrap().connections, 3);
        // Connection close flushes the dirty data, then serve flushes again.
        assert!(export.flushes.load(Ordering::SeqCst) >= flushes + 2);
        transmitting.expect_closed();
        silent.expect_closed();
        partial.expect_closed();
    }

    #[test]
    fn stop_while_client_ignores_replies_is_prompt() {
        let size = MAX_PAYLOAD;
        let server = Server::start(MemExport::new(vec![0x11; size as usize]));
        let mut c = server.client(ALL_FLAGS);
        c.info(NBD_OPT_GO, b"");
        for _ in 0..4 {
            c.request(NBD_CMD_READ, 0, 0, size);
        }
        // The server is now blocked writing a 32 MiB reply nobody reads.
        thread::sleep(Duration::from_millis(300));
        let (result, elapsed) = server.stop();
        assert!(elapsed < PROMPT, "stop took {elapsed:?}");
        assert!(result.is_ok());
    }

    #[test]
    fn in_flight_request_finishes_on_stop() {
        let mut export = MemExport::new(vec![0; 8192]);
        export.write_delay = Duration::from_millis(400);
        let server = Server::start(export);
        let export = server.export.clone();
        let mut c = server.client(ALL_FLAGS);
        c.info(NBD_OPT_GO, b"");
        let cookie = c.request(NBD_CMD_WRITE, 0, 100, 4);
        c.send(&[7, 7, 7, 7]);
        thread::sleep(Duration::from_millis(100));
        let stopper = thread::spawn(move || server.stop());
        // The write completes and is acknowledged despite the stop ...
        assert_eq!(c.reply(cookie), 0);
        // ... and then the connection is closed.
        c.expect_closed();
        let (result, _) = stopper.join().unwrap();
        assert_eq!(result.unwrap().bytes_written, 4);
        assert_eq!(export.contents()[100..104], [7, 7, 7, 7]);
    }

    #[test]
    fn listener_failure_is_an_error() {
        // accept() on a socket that is not listening fails with EINVAL, which
        // is not transient, so serve must give up rather than spin.
        let (not_listening, _peer) = UnixStream::pair().unwrap();
        let listener = UnixListener::from(std::os::fd::OwnedFd::from(not_listening));
        let stop = AtomicBool::new(false);
        let export = Arc::new(MemExport::new(vec![0; 512]));
        let result = serve(listener, export.clone(), &stop);
        assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidInput);
        // The export was still flushed on the way out.
        assert_eq!(export.flushes.load(Ordering::SeqCst), 1);
    }

    // -- tests against the real qemu tools -------------------------------------

    fn have_tools(test: &str, tools: &[&str]) -> bool {
        for tool in tools {
            let ok = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                crate::testutil::unavailable(
                    test,
                    &format!("`{tool}` is not installed or not runnable"),
                );
                return false;
            }
        }
        true
    }

    /// Run a tool with a deadline; returns (success, stdout + stderr).
    fn run_tool(program: &str, args: &[&str]) -> (bool, String) {
        let mut out = tempfile::tempfile().unwrap();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out.try_clone().unwrap()))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {args:?} timed out");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut text = String::new();
        out.seek(SeekFrom::Start(0)).unwrap();
        out.read_to_string(&mut text).unwrap();
        (status.success(), text)
    }

    const QEMU_SIZE: usize = (3 << 20) + 3 * 4096;

    #[test]
    fn qemu_img_info_with_default_and_named_export() {
        if !have_tools("qemu_img_info", &["qemu-img"]) {
            return;
        }
        let server = Server::start(MemExport::new(pattern(QEMU_SIZE, 20)));
        for name in ["", "foo"] {
            let (ok, out) = run_tool("qemu-img", &["info", &server.uri(name)]);
            assert!(ok, "{out}");
            assert!(out.contains(&format!("({QEMU_SIZE} bytes)")), "{out}");
        }
        let stats = server.stop().0.unwrap();
        assert!(stats.connections >= 2);
    }

    #[test]
    fn qemu_img_convert_reads_the_export() {
        if !have_tools("qemu_img_convert_reads", &["qemu-img"]) {
            return;
        }
        let mut data = pattern(QEMU_SIZE, 21);
        data[100_000..700_000].fill(0); // a zero run, which qemu may write sparse
        let server = Server::start(MemExport::new(data.clone()));
        let out = server.dir.path().join("out.img");
        let out_s = out.to_str().unwrap();
        let (ok, text) = run_tool(
            "qemu-img",
            &["convert", "-f", "raw", "-O", "raw", &server.uri(""), out_s],
        );
        assert!(ok, "{text}");
        assert!(
            std::fs::read(&out).unwrap() == data,
            "converted image differs"
        );
        let stats = server.stop().0.unwrap();
        assert!(stats.bytes_read >= QEMU_SIZE as u64 - 600_000);
    }

    #[test]
    fn qemu_img_convert_writes_the_export() {
        if !have_tools("qemu_img_convert_writes", &["qemu-img"]) {
            return;
        }
        let server = Server::start(MemExport::new(vec![0xee; QEMU_SIZE]));
        let mut data = pattern(QEMU_SIZE, 22);
        // Zero runs must reach the export too (it starts out non-zero).
        data[0..70_000].fill(0);
        data[1_000_000..2_500_000].fill(0);
        let input = server.dir.path().join("in.img");
        std::fs::write(&input, &data).unwrap();
        let (ok, text) = run_tool(
            "qemu-img",
            &[
                "convert",
                "-n",
                "-f",
                "raw",
                "-O",
                "raw",
                input.to_str().unwrap(),
                &server.uri("named"),
            ],
        );
        assert!(ok, "{text}");
        assert!(server.export.contents() == data, "export content differs");
        let stats = server.stop().0.unwrap();
        assert!(stats.bytes_written >= QEMU_SIZE as u64 - 1_570_000);
    }

    #[test]
    fn qemu_io_odd_offsets_and_lengths() {
        if !have_tools("qemu_io_odd_offsets", &["qemu-io"]) {
            return;
        }
        let size = QEMU_SIZE;
        let initial = pattern(size, 23);
        let server = Server::start(MemExport::new(initial.clone()));
        let mut model = initial;
        let end_write = format!("write -P 0x44 {} 7", size - 7);
        let end_read = format!("read -P 0x44 {} 7", size - 7);
        let commands = [
            "write -P 0xab 1000 3333",
            "read -P 0xab 1000 3333",
            "write -P 0x11 1 1",
            "read -P 0x11 1 1",
            "write -P 0x22 4095 4098",
            "read -P 0x22 4095 4098",
            "write -f -P 0x33 65537 100000",
            "read -P 0x33 65537 100000",
            "write -z 200001 300007",
            "read -P 0 200001 300007",
            "discard 1048576 65536",
            "read -P 0 1048576 65536",
            &end_write,
            &end_read,
            "flush",
        ];
        for (byte, off, len) in [
            (0xab, 1000, 3333),
            (0x11, 1, 1),
            (0x22, 4095, 4098),
            (0x33, 65537, 100_000),
            (0x00, 200_001, 300_007),
            (0x00, 1_048_576, 65536),
            (0x44, size - 7, 7),
        ] {
            model[off..off + len].fill(byte);
        }
        let uri = server.uri("");
        let mut args = vec!["-f", "raw", uri.as_str()];
        for c in &commands {
            args.extend(["-c", c]);
        }
        let (ok, out) = run_tool("qemu-io", &args);
        assert!(ok, "{out}");
        assert!(!out.contains("failed") && !out.contains("error"), "{out}");
        assert_eq!(out.matches("read ").count(), 7, "{out}");
        assert!(server.export.contents() == model, "export content differs");
        let stats = server.stop().0.unwrap();
        assert!(stats.bytes_written >= 3333 + 1 + 4098 + 100_000 + 300_007 + 7);
    }

    #[test]
    fn qemu_refuses_writes_to_read_only_export() {
        if !have_tools("qemu_read_only", &["qemu-io", "qemu-img"]) {
            return;
        }
        let data = pattern(QEMU_SIZE, 24);
        let server = Server::start(MemExport::new(data.clone()).read_only());
        let uri = server.uri("");

        let (ok, out) = run_tool("qemu-io", &["-f", "raw", &uri, "-c", "write -P 0xab 0 512"]);
        assert!(
            !ok || out.contains("failed") || out.contains("denied"),
            "{out}"
        );

        let input = server.dir.path().join("in.img");
        std::fs::write(&input, vec![1u8; QEMU_SIZE]).unwrap();
        let (ok, out) = run_tool(
            "qemu-img",
            &[
                "convert",
                "-n",
                "-f",
                "raw",
                "-O",
                "raw",
                input.to_str().unwrap(),
                &uri,
            ],
        );
        assert!(!ok, "{out}");

        let (ok, out) = run_tool("qemu-io", &["-r", "-f", "raw", &uri, "-c", "read 0 4096"]);
        assert!(ok && !out.contains("failed"), "{out}");
        assert!(server.export.contents() == data, "read-only export changed");
        assert_eq!(server.stop().0.unwrap().bytes_written, 0);
    }

    #[test]
    fn qemu_nbd_lists_the_export() {
        if !have_tools("qemu_nbd_list", &["qemu-nbd"]) {
            return;
        }
        let server = Server::start(MemExport::new(pattern(QEMU_SIZE, 25)));
        let socket = server.path.to_str().unwrap().to_owned();
        let (ok, out) = run_tool("qemu-nbd", &["--list", "-k", &socket]);
        assert!(ok, "{out}");
        assert!(out.contains("exports available: 1"), "{out}");
        assert!(out.contains(&format!("size:  {QEMU_SIZE}")), "{out}");
        assert!(server.stop().0.is_ok());
    }
}
