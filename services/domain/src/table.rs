//! Insert-only hash tables laid out in 64-byte lines, for the engine's two
//! large lookups: the event ids it has seen and the ids of its orders and
//! capacity. Each lookup usually reads one cache line (hashbrown reads its
//! control bytes and then the slot, two), and the line of a hash can be
//! prefetched ahead of the event that needs it, which is what makes a stream
//! of lookups into tables larger than the cache cheap. Nothing is ever
//! removed, so a probe ends at the first empty slot.

/// One cache line of entries; the all-zero entry marks an empty slot.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line<E, const N: usize>([E; N]);

/// Entries `E` (zero = empty) found by a 64-bit hash: the line from its high
/// bits, then the following lines in turn.
#[derive(Debug, Clone)]
struct LineTable<E, const N: usize> {
    lines: Vec<Line<E, N>>,
    /// 64 minus log2 of the number of lines.
    shift: u32,
    len: usize,
}

/// Lines at the first allocation.
const MIN_LINES: usize = 16;

impl<E: Copy + Default + PartialEq, const N: usize> LineTable<E, N> {
    fn new() -> Self {
        LineTable { lines: Vec::new(), shift: 64, len: 0 }
    }

    /// The line of hash `h`; there must be lines.
    fn home(&self, h: u64) -> usize {
        debug_assert!(!self.lines.is_empty());
        // High bits: they are the well-mixed ones of a multiplicative hash too.
        (h >> self.shift) as usize
    }

    fn prefetch(&self, h: u64) {
        // Before the first insert there are no lines (and `home` would shift by 64).
        if !self.lines.is_empty() {
            prefetch(&self.lines[self.home(h)]);
        }
    }

    /// The first entry on `h`'s probe path that `hit` accepts; `None` when an
    /// empty slot comes first.
    fn find(&self, h: u64, mut hit: impl FnMut(E) -> bool) -> Option<E> {
        if self.lines.is_empty() {
            return None;
        }
        let mask = self.lines.len() - 1;
        let mut i = self.home(h);
        loop {
            for &e in &self.lines[i].0 {
                if e == E::default() {
                    return None;
                }
                if hit(e) {
                    return Some(e);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts `e` under `h` unless `same` accepts an entry on its probe
    /// path; whether it was inserted. `rehash` gives the hash of a stored
    /// entry, for growing.
    fn insert(&mut self, h: u64, e: E, mut same: impl FnMut(E) -> bool, rehash: impl Fn(E) -> u64) -> bool {
        debug_assert!(e != E::default(), "the zero entry marks empty slots");
        // At most 3/4 full: probes stay about one line long.
        if (self.len + 1) * 4 > self.lines.len() * N * 3 {
            self.grow(&rehash);
        }
        let mask = self.lines.len() - 1;
        let mut i = self.home(h);
        loop {
            for slot in &mut self.lines[i].0 {
                if *slot == E::default() {
                    *slot = e;
                    self.len += 1;
                    return true;
                }
                if same(*slot) {
                    return false;
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Grows until `additional` more entries fit without growing again.
    fn reserve(&mut self, additional: usize, rehash: &impl Fn(E) -> u64) {
        while (self.len + additional) * 4 > self.lines.len() * N * 3 {
            self.grow(rehash);
        }
    }

    /// The stored entries, in table order.
    fn entries(&self) -> impl Iterator<Item = E> + '_ {
        self.lines.iter().flat_map(|l| l.0).filter(|e| *e != E::default())
    }

    fn grow(&mut self, rehash: &impl Fn(E) -> u64) {
        let lines = (self.lines.len() * 2).max(MIN_LINES);
        let old = std::mem::replace(&mut self.lines, vec![Line([E::default(); N]); lines]);
        self.shift = 64 - lines.trailing_zeros();
        self.len = 0;
        let mask = lines - 1;
        for e in old.iter().flat_map(|l| l.0).filter(|e| *e != E::default()) {
            let mut i = self.home(rehash(e));
            // Distinct entries and room to spare: each takes the first empty slot on its path.
            loop {
                if let Some(slot) = self.lines[i].0.iter_mut().find(|s| **s == E::default()) {
                    *slot = e;
                    break;
                }
                i = (i + 1) & mask;
            }
            self.len += 1;
        }
    }
}

/// Asks the CPU to bring `value`'s cache line in; a hint with no effect on results.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not access memory architecturally; the
    // pointer comes from a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A set of 128-bit fingerprints, four to a line.
#[derive(Debug, Clone)]
pub(crate) struct FingerprintSet(LineTable<u128, 4>);

impl Default for FingerprintSet {
    fn default() -> Self {
        FingerprintSet(LineTable::new())
    }
}

impl FingerprintSet {
    /// Zero marks an empty slot, so the fingerprint 0 is stored as 1: two
    /// ids then share a fingerprint with twice the odds of any other pair,
    /// which leaves them negligible.
    fn entry(fp: u128) -> u128 {
        fp.max(1)
    }

    fn hash(fp: u128) -> u64 {
        (fp >> 64) as u64
    }

    /// Whether `fp` is new; it is in the set afterwards.
    pub(crate) fn insert(&mut self, fp: u128) -> bool {
        let e = Self::entry(fp);
        self.0.insert(Self::hash(e), e, |s| s == e, Self::hash)
    }

    pub(crate) fn prefetch(&self, fp: u128) {
        self.0.prefetch(Self::hash(Self::entry(fp)))
    }

    /// Whether `fp` is in the set.
    pub(crate) fn contains(&self, fp: u128) -> bool {
        let e = Self::entry(fp);
        self.0.find(Self::hash(e), |s| s == e).is_some()
    }

    /// Room for `additional` more fingerprints. Needed before inserting many
    /// in sorted order: while the table is still small for them, sorted
    /// fingerprints all fall into its first lines, and each insert probes
    /// past all the ones before it (a snapshot of 1M took 26 s to load).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional, &Self::hash)
    }

    /// The stored fingerprints (as stored: 0 reads as 1), in table order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = u128> + '_ {
        self.0.entries()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len
    }
}

/// Sequence numbers by the 64-bit hash of a key kept elsewhere (the slabs):
/// each entry holds the high 32 bits of the hash beside the number, eight to
/// a line, and the caller compares keys only when those bits agree. The line
/// comes from the same bits, so growing needs no key.
#[derive(Debug, Clone)]
pub(crate) struct SeqIndex(LineTable<u64, 8>);

impl Default for SeqIndex {
    fn default() -> Self {
        SeqIndex(LineTable::new())
    }
}

const HIGH: u64 = !0xffff_ffff;

impl SeqIndex {
    /// The sequence number under hash `h` for which `is` holds.
    pub(crate) fn find(&self, h: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = h & HIGH;
        self.0.find(h, |e| e & HIGH == tag && is(e as u32 - 1)).map(|e| e as u32 - 1)
    }

    /// Adds `seq` under `h`; the caller knows its key is not in the index yet.
    pub(crate) fn insert_new(&mut self, h: u64, seq: u32) {
        assert!(seq < u32::MAX, "sequence numbers fit 32 bits");
        // seq + 1: the zero entry is the empty slot. An entry is its own
        // hash for growing: the line index takes at most the high 32 bits.
        let e = (h & HIGH) | (seq as u64 + 1);
        self.0.insert(h, e, |_| false, |e| e & HIGH);
    }

    pub(crate) fn prefetch(&self, h: u64) {
        self.0.prefetch(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn reserved_room_takes_sorted_fingerprints_without_growing_and_all_are_found() {
        let mut s = FingerprintSet::default();
        s.insert(7);
        let fps: std::collections::BTreeSet<u128> = (1..20_000u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).collect();
        s.reserve(fps.len());
        let lines = s.0.lines.len();
        for &fp in &fps {
            s.insert(fp);
        }
        assert_eq!(s.0.lines.len(), lines, "inserting what was reserved grew the table");
        assert!(fps.iter().all(|&fp| !s.insert(fp)), "a fingerprint went missing");
        assert!(!s.insert(7));
        assert_eq!(s.len(), fps.len() + usize::from(!fps.contains(&7)));
    }

    #[test]
    fn empty_tables_take_prefetches_and_lookups() {
        let (s, ix) = (FingerprintSet::default(), SeqIndex::default());
        s.prefetch(u128::MAX);
        ix.prefetch(u64::MAX);
        assert_eq!(ix.find(u64::MAX, |_| true), None);
    }

    #[test]
    fn fingerprints_grow_and_remember() {
        let spread = |i: u128| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 64) | i;
        let mut s = FingerprintSet::default();
        for i in 0..10_000u128 {
            assert!(s.insert(spread(i)));
        }
        // High bits zero: all start at line 0 and probe on past full lines.
        for small in 2..50u128 {
            assert!(s.insert(small));
        }
        assert_eq!(s.len(), 10_000 + 48);
        for i in 0..10_000u128 {
            assert!(!s.insert(spread(i)));
        }
        for small in 2..50u128 {
            assert!(!s.insert(small));
        }
        // spread(0) is 0, kept as 1: 0 and 1 are one entry.
        assert!(!s.insert(1));
        assert_eq!(s.len(), 10_000 + 48);
    }

    proptest! {
        #[test]
        fn fingerprint_set_is_a_set(fps in proptest::collection::vec(any::<u128>().prop_map(|x| x % 64 + (x % 3).wrapping_mul(x << 64)), 0..400)) {
            let mut s = FingerprintSet::default();
            let mut model = HashSet::new();
            for fp in fps {
                prop_assert_eq!(s.insert(fp), model.insert(fp.max(1)));
            }
            prop_assert_eq!(s.len(), model.len());
        }

        #[test]
        fn seq_index_finds_every_key(keys in proptest::collection::vec(0u64..1_000, 0..600), shift in 0u32..64) {
            // Hashes from a deliberately poor function (the key rotated) crowd lines and tags.
            let hash = |k: u64| k.rotate_left(shift);
            let mut ix = SeqIndex::default();
            let mut stored: Vec<u64> = Vec::new();
            let mut model = HashMap::new();
            for k in keys {
                if model.contains_key(&k) {
                    continue;
                }
                let seq = stored.len() as u32;
                ix.insert_new(hash(k), seq);
                stored.push(k);
                model.insert(k, seq);
            }
            for k in 0..1_000u64 {
                prop_assert_eq!(ix.find(hash(k), |s| stored[s as usize] == k), model.get(&k).copied());
            }
        }
    }
}
