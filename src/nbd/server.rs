//! The accept loop: one thread per connection, the stop flag, the totals
//! and the events a caller hears.

use std::io::{self, ErrorKind};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use super::connection::Connection;
use super::shared::{ServeEvent, Shared};
use super::{Export, POLL_INTERVAL};

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

// errno values (Linux) of accept() failures that are resource exhaustion or a
// connection dying in the queue, after which accepting again can succeed.
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const EPROTO: i32 = 71;
const ENOBUFS: i32 = 105;

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
