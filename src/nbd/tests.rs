//! The server against an in-memory export, a hand-rolled client and, where
//! installed, the qemu tools.

use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::testutil::fill;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use super::connection::ZERO_CHUNK;
use super::protocol::*;
use super::*;

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
    let initial = fill(1, size);
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
    let fua = fill(2, 7);
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
    let small = fill(3, 100);
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
    let data = fill(4, 8192);
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
    let data = fill(5, 65536);
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
    let data = fill(6, 65536);
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
    let data = fill(7, size as usize);
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
    let data = fill(8, 8192);
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
    let data = fill(9, 65536);
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
        (ALL_FLAGS, false, fill(10, 1000), false),
        (ALL_FLAGS, true, bad_request_magic, false),
        (
            ALL_FLAGS,
            true,
            request(NBD_CMD_READ, 512)[..10].to_vec(),
            true,
        ),
        (ALL_FLAGS, true, huge_write, true),
        (ALL_FLAGS, true, fill(11, 1000), false),
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
    let server = Server::start(MemExport::new(fill(12, 65536)));
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
    let server = Server::start(MemExport::new(fill(20, QEMU_SIZE)));
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
    let mut data = fill(21, QEMU_SIZE);
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
    let mut data = fill(22, QEMU_SIZE);
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
    let initial = fill(23, size);
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
    let data = fill(24, QEMU_SIZE);
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
    let server = Server::start(MemExport::new(fill(25, QEMU_SIZE)));
    let socket = server.path.to_str().unwrap().to_owned();
    let (ok, out) = run_tool("qemu-nbd", &["--list", "-k", &socket]);
    assert!(ok, "{out}");
    assert!(out.contains("exports available: 1"), "{out}");
    assert!(out.contains(&format!("size:  {QEMU_SIZE}")), "{out}");
    assert!(server.stop().0.is_ok());
}
