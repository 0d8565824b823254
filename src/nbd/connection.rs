//! One client: the fixed newstyle handshake, then the transmission phase,
//! one request at a time, on the connection's own thread.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;

use super::protocol::*;
use super::shared::{ServeEvent, Shared};
use super::{Export, MAX_PAYLOAD, POLL_INTERVAL};

/// Chunk for discarding unwanted payload, so draining never allocates more.
const DRAIN_CHUNK: usize = 64 << 10;
/// Chunk for `NBD_CMD_WRITE_ZEROES`; a power of two so every piece after the
/// first is aligned to any power-of-two block size up to 1 MiB.
pub(super) const ZERO_CHUNK: usize = 1 << 20;
static ZEROES: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

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

/// Whether the session goes on to the transmission phase after negotiation.
enum Negotiated {
    Transmit,
    Closed,
}

pub(super) struct Connection<'a> {
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
    pub(super) fn new(shared: &'a Shared<'a>, id: u64, stream: UnixStream) -> io::Result<Self> {
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

    pub(super) fn run(mut self) -> io::Result<()> {
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
