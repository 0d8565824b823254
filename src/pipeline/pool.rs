//! A bounded set of reusable buffers. A buffer goes home when dropped, so the
//! pipeline allocates at most `count` buffers, whatever the volume size, and
//! memory stays bounded by that count.
//!
//! Buffers are made on first need and handed out last in, first out: a run
//! that never has many chunks in flight never makes (or touches) the rest,
//! and the buffer handed out is the one most recently used, still in the
//! cache.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::Result;

/// Where [`Aligned`] buffers start: a page. The kernel copies into a
/// buffer that does not start on a cache line several times slower (4x for
/// `pread` into a heap `Vec`, which starts 16 bytes into a page, on an AMD
/// Zen 3 core), and vector loads and stores of the XTS kernels and BLAKE3
/// then split cache lines.
pub const ALIGN: usize = 4096;

/// A bounded set of buffers of one kind: plain `Vec`s (scratch space) or
/// page-aligned [`Aligned`] buffers (the data the pipeline reads into).
pub struct Pool<B = Vec<u8>> {
    home: Arc<Home<B>>,
}

struct Home<B> {
    state: Mutex<State<B>>,
    returned: Condvar,
    make: Box<dyn Fn() -> B + Send + Sync>,
}

struct State<B> {
    free: Vec<B>,
    /// Buffers that may still be made.
    unmade: usize,
}

impl Pool<Vec<u8>> {
    /// At most `count` buffers of `size` bytes.
    pub fn new(count: usize, size: usize) -> Pool {
        Pool::of(count, move || vec![0u8; size])
    }
}

impl Pool<Aligned> {
    /// At most `count` page-aligned buffers of `size` bytes.
    pub fn aligned(count: usize, size: usize) -> Pool<Aligned> {
        Pool::of(count, move || Aligned::new(size))
    }
}

impl<B> Pool<B> {
    fn of(count: usize, make: impl Fn() -> B + Send + Sync + 'static) -> Pool<B> {
        Pool {
            home: Arc::new(Home {
                state: Mutex::new(State {
                    free: Vec::with_capacity(count),
                    unmade: count,
                }),
                returned: Condvar::new(),
                make: Box::new(make),
            }),
        }
    }

    /// A free buffer: the last one returned, a new one while fewer than
    /// `count` exist, or else the next one returned (this waits).
    pub fn take(&self) -> Result<PooledBuf<B>> {
        let mut state = self.home.lock();
        let buf = loop {
            if let Some(buf) = state.free.pop() {
                break buf;
            }
            if state.unmade > 0 {
                state.unmade -= 1;
                drop(state);
                break (self.home.make)();
            }
            state = self
                .home
                .returned
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        };
        Ok(PooledBuf {
            buf: Some(buf),
            home: self.home.clone(),
        })
    }
}

impl<B> Home<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<B>> {
        // The state is a list and a count, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A buffer on loan from a [`Pool`].
pub struct PooledBuf<B = Vec<u8>> {
    buf: Option<B>,
    home: Arc<Home<B>>,
}

impl<B> Deref for PooledBuf<B> {
    type Target = B;

    fn deref(&self) -> &B {
        self.buf.as_ref().expect("present until dropped")
    }
}

impl<B> DerefMut for PooledBuf<B> {
    fn deref_mut(&mut self) -> &mut B {
        self.buf.as_mut().expect("present until dropped")
    }
}

impl<B> Drop for PooledBuf<B> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.home.lock().free.push(buf);
            self.home.returned.notify_one();
        }
    }
}

/// A heap buffer of a fixed length that starts on an [`ALIGN`] boundary:
/// an over-allocated `Vec` and the aligned window in it (no `unsafe`).
pub struct Aligned {
    vec: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    /// `len` zero bytes, aligned.
    pub fn new(len: usize) -> Aligned {
        let vec = vec![0u8; len + ALIGN];
        // `align_offset` may, in principle, not know: alignment is for
        // speed only, so the buffer then simply starts where the Vec does.
        let start = Some(vec.as_ptr().align_offset(ALIGN))
            .filter(|&s| s < ALIGN)
            .unwrap_or(0);
        Aligned { vec, start, len }
    }
}

impl Deref for Aligned {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }
}

impl DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_when_dropped_and_the_last_returned_goes_out_first() {
        let pool = Pool::new(2, 8);
        let mut a = pool.take().unwrap();
        let b = pool.take().unwrap();
        a[0] = 1;
        assert_eq!(pool.home.lock().unmade, 0);
        drop(a);
        let c = pool.take().unwrap();
        assert_eq!(c.len(), 8);
        assert_eq!(c[0], 1, "the buffer just returned");
        drop((b, c));
        assert_eq!(pool.home.lock().free.len(), 2);
    }

    #[test]
    fn buffers_are_made_only_when_needed() {
        let pool = Pool::aligned(8, 4096);
        for _ in 0..100 {
            let _one = pool.take().unwrap();
        }
        let state = pool.home.lock();
        assert_eq!((state.free.len(), state.unmade), (1, 7));
    }

    #[test]
    fn a_taker_waits_for_a_buffer_to_come_home() {
        let pool = Pool::new(1, 8);
        let held = pool.take().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.take().map(|b| b.len()));
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(held);
            assert_eq!(waiter.join().unwrap().unwrap(), 8);
        });
    }

    #[test]
    fn aligned_buffers_start_on_a_page_and_have_their_length() {
        let pool = Pool::aligned(3, 1 << 20);
        let bufs: Vec<_> = (0..3).map(|_| pool.take().unwrap()).collect();
        for b in &bufs {
            assert_eq!(b.len(), 1 << 20);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.iter().all(|&x| x == 0));
        }
        let small = Aligned::new(0);
        assert!(small.is_empty());
    }
}
