//! The plaintext BLAKE3 of a whole backup, computed in parallel.
//!
//! BLAKE3 is a tree. Workers hash their chunk as a subtree (its chaining
//! value, at its offset in the input); the ordered collector merges those in
//! input order exactly as BLAKE3's own incremental hasher merges chunk CVs.
//! Chunks are one power-of-two size (at least 1 KiB) except the last, so the
//! merge shape equals BLAKE3's and the result equals `b3sum` of the input.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// What a worker computes for one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHash {
    /// The chunk's subtree chaining value.
    pub cv: ChainingValue,
    /// For the first chunk only: the root hash, in case it is the only chunk.
    pub root: Option<blake3::Hash>,
}

/// Hash one chunk that starts at `offset` in the input.
pub fn hash_chunk(offset: u64, data: &[u8]) -> ChunkHash {
    let mut h = chunk_hasher(offset);
    h.update(data);
    finish_chunk(offset, &h)
}

/// A hasher positioned at `offset`, for chunks hashed in pieces.
pub fn chunk_hasher(offset: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h
}

/// Finish a chunk hashed in pieces. The chunk must not be empty.
pub fn finish_chunk(offset: u64, h: &blake3::Hasher) -> ChunkHash {
    ChunkHash {
        cv: h.finalize_non_root(),
        root: (offset == 0).then(|| h.finalize()),
    }
}

/// Merges chunk results in input order.
#[derive(Clone)]
pub struct TreeMerger {
    stack: Vec<ChainingValue>,
    chunks: u64,
    single_root: Option<blake3::Hash>,
}

impl Default for TreeMerger {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeMerger {
    pub fn new() -> Self {
        TreeMerger {
            stack: Vec::with_capacity(64),
            chunks: 0,
            single_root: None,
        }
    }

    /// Add the next chunk (chunks arrive in order; all but the last are full).
    pub fn push(&mut self, chunk: ChunkHash) {
        // Lazy merging: merge what the chunks so far complete, but keep the
        // newest subtree unmerged until we know more input follows.
        let keep = self.chunks.count_ones() as usize;
        while self.stack.len() > keep {
            let right = self.stack.pop().expect("stack longer than keep");
            let left = self.stack.pop().expect("two subtrees to merge");
            self.stack
                .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
        if self.chunks == 0 {
            self.single_root = chunk.root;
        }
        self.stack.push(chunk.cv);
        self.chunks += 1;
    }

    /// Chunks pushed so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The root hash of everything pushed so far (more may follow).
    pub fn digest(&self) -> blake3::Hash {
        self.clone().finish()
    }

    /// The root hash of everything pushed.
    pub fn finish(mut self) -> blake3::Hash {
        match self.chunks {
            0 => blake3::hash(b""),
            1 => self
                .single_root
                .expect("the first chunk carries its root hash"),
            _ => {
                while self.stack.len() > 2 {
                    let right = self.stack.pop().expect("right subtree");
                    let left = self.stack.pop().expect("left subtree");
                    self.stack
                        .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
                }
                merge_subtrees_root(&self.stack[0], &self.stack[1], Mode::Hash)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree_hash(data: &[u8], chunk: usize) -> blake3::Hash {
        let mut m = TreeMerger::new();
        for (i, piece) in data.chunks(chunk).enumerate() {
            m.push(hash_chunk((i * chunk) as u64, piece));
        }
        m.finish()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn equals_plain_blake3_at_edge_sizes() {
        let chunk = 4096;
        for len in [
            0,
            1,
            1023,
            1024,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk,
            3 * chunk,
            3 * chunk + 5,
            7 * chunk,
            8 * chunk,
            9 * chunk + 1024,
            33 * chunk - 1,
        ] {
            let d = data(len);
            assert_eq!(tree_hash(&d, chunk), blake3::hash(&d), "len {len}");
        }
    }

    #[test]
    fn equals_plain_blake3_with_one_mib_chunks() {
        let d = data(5 * (1 << 20) + 777);
        assert_eq!(tree_hash(&d, 1 << 20), blake3::hash(&d));
    }

    proptest! {
        #[test]
        fn equals_plain_blake3_for_random_lengths(len in 0usize..40_000, shift in 10u32..14) {
            let d = data(len);
            prop_assert_eq!(tree_hash(&d, 1 << shift), blake3::hash(&d));
        }
    }
}
