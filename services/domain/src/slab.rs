//! An append-only arena in fixed-size chunks: indices stay valid, and growing
//! never moves what is already stored (a `Vec` copies everything each time
//! it doubles, which showed up in the engine's profile).

use std::ops::{Index, IndexMut};

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

#[derive(Debug)]
pub(crate) struct Slab<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Clone> Clone for Slab<T> {
    /// Chunks keep their full capacity: a derived clone would give the last
    /// one only its length, and the copy would reallocate as it grows.
    fn clone(&self) -> Self {
        let chunks = self
            .chunks
            .iter()
            .map(|c| {
                let mut copy = Vec::with_capacity(CHUNK);
                copy.extend_from_slice(c);
                copy
            })
            .collect();
        Slab { chunks, len: self.len }
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk with room").push(value);
        self.len += 1;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// The values in index order, taking them out.
    pub(crate) fn into_iter(self) -> impl Iterator<Item = T> {
        self.chunks.into_iter().flatten()
    }
}

impl<T> Index<usize> for Slab<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

impl<T> IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_stay_valid_across_chunks() {
        let mut s = Slab::default();
        for i in 0..(3 * CHUNK + 5) {
            s.push(i);
        }
        assert_eq!(s.len(), 3 * CHUNK + 5);
        assert_eq!(s[0], 0);
        assert_eq!(s[CHUNK - 1], CHUNK - 1);
        assert_eq!(s[CHUNK], CHUNK);
        assert_eq!(s[3 * CHUNK + 4], 3 * CHUNK + 4);
        s[CHUNK] = 7;
        assert_eq!(s[CHUNK], 7);
        assert_eq!(s.iter().count(), 3 * CHUNK + 5);
        assert_eq!(s.iter().nth(CHUNK + 1), Some(&(CHUNK + 1)));
        let mut copy = s.clone();
        assert!(copy.iter().eq(s.iter()));
        assert_eq!(copy.chunks.last().unwrap().capacity(), CHUNK, "a copy grows in place too");
        copy.push(1);
        assert_eq!((copy.len(), s.len()), (3 * CHUNK + 6, 3 * CHUNK + 5));
        assert!(copy.into_iter().take(3 * CHUNK + 5).eq(s.iter().copied()));
    }
}
