//! A fixed set of reusable buffers. A buffer goes home when dropped, so the
//! pipeline allocates once, whatever the volume size, and memory stays bounded
//! by the number of buffers.

use std::ops::{Deref, DerefMut};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};

/// Where [`Aligned`] buffers start: a page. The kernel copies into a
/// buffer that does not start on a cache line several times slower (4x for
/// `pread` into a heap `Vec`, which starts 16 bytes into a page, on an AMD
/// Zen 3 core), and vector loads and stores of the XTS kernels and BLAKE3
/// then split cache lines.
pub const ALIGN: usize = 4096;

/// A fixed set of buffers of one kind: plain `Vec`s (scratch space) or
/// page-aligned [`Aligned`] buffers (the data the pipeline reads into).
pub struct Pool<B = Vec<u8>> {
    tx: Sender<B>,
    rx: Receiver<B>,
}

impl Pool<Vec<u8>> {
    /// `count` buffers of `size` bytes.
    pub fn new(count: usize, size: usize) -> Pool {
        Pool::of(count, || vec![0u8; size])
    }
}

impl Pool<Aligned> {
    /// `count` page-aligned buffers of `size` bytes.
    pub fn aligned(count: usize, size: usize) -> Pool<Aligned> {
        Pool::of(count, || Aligned::new(size))
    }
}

impl<B> Pool<B> {
    fn of(count: usize, make: impl Fn() -> B) -> Pool<B> {
        let (tx, rx) = crossbeam_channel::bounded(count);
        for _ in 0..count {
            tx.send(make()).expect("the pool has room for every buffer");
        }
        Pool { tx, rx }
    }

    /// Wait for a free buffer.
    pub fn take(&self) -> Result<PooledBuf<B>> {
        let buf = self
            .rx
            .recv()
            .map_err(|_| Error::runtime("the pipeline's buffer pool closed"))?;
        Ok(PooledBuf {
            buf: Some(buf),
            home: self.tx.clone(),
        })
    }
}

/// A buffer on loan from a [`Pool`].
pub struct PooledBuf<B = Vec<u8>> {
    buf: Option<B>,
    home: Sender<B>,
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
            let _ = self.home.try_send(buf);
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
    fn buffers_return_when_dropped() {
        let pool = Pool::new(2, 8);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(pool.rx.try_recv().is_err());
        drop(a);
        let c = pool.take().unwrap();
        assert_eq!(c.len(), 8);
        drop((b, c));
        assert_eq!(pool.rx.len(), 2);
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
