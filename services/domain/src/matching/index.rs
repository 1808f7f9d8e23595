//! The book's indexes and the search's buffers: price-ordered sets of open
//! capacity and orders, the search's cursors over (site, grade) buckets.

use super::Route;
use crate::catalog::MAX_GRADES;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, btree_set};

/// Keys `(price, seq)` in order, with the first and the last kept beside the
/// set: the search asks for them for every bucket and cluster it considers,
/// and a B-tree answers them only by walking down from its root.
///
/// A key is packed into one `u64`, the price (capped at `u32::MAX`) above
/// the sequence number: nodes hold half the bytes and compare one word. A
/// price above the cap (over four billion CNY/t) only loosens the index: the
/// packed price stays a lower bound in the same order, which is all the
/// search's pruning relies on, and eligibility checks the real price.
#[derive(Debug, Clone, Default)]
pub(super) struct PriceSet {
    pub(super) set: BTreeSet<u64>,
    pub(super) first: Option<u64>,
    pub(super) last: Option<u64>,
}

impl PriceSet {
    pub(super) fn pack(price: u64, seq: u32) -> u64 {
        (price.min(u32::MAX as u64) << 32) | seq as u64
    }

    /// The (capped) price and the sequence number of a packed key.
    pub(super) fn unpack(key: u64) -> (u64, u32) {
        (key >> 32, key as u32)
    }

    pub(super) fn insert(&mut self, (price, seq): (u64, u32)) {
        let key = Self::pack(price, seq);
        self.set.insert(key);
        if self.first.is_none_or(|f| key < f) {
            self.first = Some(key);
        }
        if self.last.is_none_or(|l| key > l) {
            self.last = Some(key);
        }
    }

    pub(super) fn remove(&mut self, (price, seq): (u64, u32)) {
        let key = Self::pack(price, seq);
        if self.set.remove(&key) {
            if self.first == Some(key) {
                self.first = self.set.first().copied();
            }
            if self.last == Some(key) {
                self.last = self.set.last().copied();
            }
        }
    }

    pub(super) fn first(&self) -> Option<(u64, u32)> {
        self.first.map(Self::unpack)
    }

    /// Whether some key is priced at least `price` (as packed, so capped alike).
    pub(super) fn reaches(&self, price: u64) -> bool {
        self.last.is_some_and(|l| l >= Self::pack(price, 0))
    }

    /// Keys in order, packed.
    pub(super) fn iter(&self) -> btree_set::Iter<'_, u64> {
        self.set.iter()
    }

    /// `(capped price, seq)` of the keys priced at least `price`, in order.
    pub(super) fn from(&self, price: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.set.range(Self::pack(price, 0)..).map(|k| Self::unpack(*k))
    }
}

/// A bit per grade rank.
pub(super) type Ranks = u16;
const _: () = assert!(Ranks::BITS as usize >= MAX_GRADES);

/// The ranking of one eligible capacity for one order; smaller is better.
pub(super) type RankKey = (bool, u64, (bool, u64), u32);

#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(super) cap: u32,
    pub(super) route: Route,
}

/// The next capacity of one (site, grade) bucket: outside the home cluster,
/// landed-cost lower bound, bucket, sequence number.
pub(super) type Cursor = (bool, u64, u32, u32);

/// The search's cursors, smallest taken first. A bucket has at most one
/// cursor, so there are at most (sites × grades) and usually a handful: a
/// vector kept sorted (largest first) does less work than a heap here, and
/// an insertion moves at most that many entries.
#[derive(Debug, Clone, Default)]
pub(super) struct Cursors(Vec<Cursor>);

impl Cursors {
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    pub(super) fn push(&mut self, c: Cursor) {
        let at = self.0.partition_point(|x| *x > c);
        self.0.insert(at, c);
    }

    pub(super) fn peek(&self) -> Option<Cursor> {
        self.0.last().copied()
    }

    pub(super) fn pop(&mut self) -> Option<Cursor> {
        self.0.pop()
    }
}

/// Buffers the search reuses from event to event, so that matching allocates
/// nothing of its own in the steady state.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    pub(super) cursors: Cursors,
    pub(super) found: Vec<Candidate>,
    pub(super) pending: BinaryHeap<Reverse<(RankKey, usize)>>,
    pub(super) orders: Vec<u32>,
    pub(super) touched: Vec<u32>,
}

