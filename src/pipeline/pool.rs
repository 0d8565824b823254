//! A fixed set of reusable buffers. A buffer goes home when dropped, so the
//! pipeline allocates once, whatever the volume size, and memory stays bounded
//! by the number of buffers.

use std::ops::{Deref, DerefMut};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};

pub struct Pool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Pool {
    /// `count` buffers of `size` bytes.
    pub fn new(count: usize, size: usize) -> Pool {
        let (tx, rx) = crossbeam_channel::bounded(count);
        for _ in 0..count {
            tx.send(vec![0u8; size])
                .expect("the pool has room for every buffer");
        }
        Pool { tx, rx }
    }

    /// Wait for a free buffer.
    pub fn take(&self) -> Result<PooledBuf> {
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
pub struct PooledBuf {
    buf: Option<Vec<u8>>,
    home: Sender<Vec<u8>>,
}

impl Deref for PooledBuf {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        self.buf.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        self.buf.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let _ = self.home.try_send(buf);
        }
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
}
