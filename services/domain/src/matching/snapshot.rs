//! Book snapshots: an engine's whole state as bytes, and back.
//!
//! A restore by replay reads every input event ever written; a snapshot plus
//! the events after it bounds that by the snapshot interval instead. What is
//! written is what the engine cannot derive: the orders and capacities of
//! each book in arrival order (their positions are the sequence numbers that
//! decisions carry; with whether a closed one is due to leave when the next
//! window begins), the product codes learnt, the shares waiting for their
//! order, and the event-id fingerprints of both generations with the
//! current one's window and the dedup horizon (a snapshot taken under
//! another horizon is refused: a replay would forget ids differently). The
//! id indexes, the price buckets and the per-cluster order sets are rebuilt
//! from those on load, by the same rules that maintain them event by event.
//!
//! The bytes are canonical (fingerprints and waiting shares sorted), so two
//! engines that are in the same state write the same snapshot; the property
//! tests compare them that way. A snapshot names the network it was taken
//! with (site and cluster names by position, which the books refer to by
//! position), and loading it against another network is an error: the
//! caller then replays the input instead. Likewise a caller checks the
//! grade ranks the books learnt against its catalog (`agrees_with`).

use super::{Book, Cap, Engine, InlineId, Order, Waiting, hash_id};
use crate::catalog::{Catalog, MAX_GRADES, ProductCode};
use crate::freight::Network;
use crate::ids::OrderId;
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

const MAGIC: &[u8; 8] = b"ORLKSNP3";

/// Why a snapshot could not be loaded. The engine is never half-loaded: the
/// caller gets an error and restores by replay instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not an engine snapshot of this version")]
    Format,
    #[error("the snapshot ends early")]
    Truncated,
    #[error("the snapshot was taken with another network (sites or clusters differ)")]
    Network,
    #[error("the snapshot was taken with another dedup horizon")]
    Horizon,
    #[error("the snapshot is inconsistent: {0}")]
    Corrupt(&'static str),
}

/// The network's sites and clusters by position.
fn network_fingerprint(net: &Network) -> u64 {
    let mut h = Xxh3::new();
    for (kind, n, name) in [(b'c', net.cluster_count(), Network::cluster_name as fn(&Network, usize) -> &str), (b's', net.site_count(), Network::site_name)] {
        h.update(&[kind]);
        h.update(&(n as u64).to_le_bytes());
        for i in 0..n {
            let s = name(net, i);
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
    h.digest()
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 2^32 entries"));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn bool(&mut self, b: bool) {
        self.u8(b as u8);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.array().map(u64::from_le_bytes)
    }
    fn u128(&mut self) -> Result<u128, SnapshotError> {
        self.array().map(u128::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        self.array().map(i64::from_le_bytes)
    }
    /// A count of entries each at least `min_bytes` long: a count the rest
    /// of the input cannot hold is refused before anything is allocated for it.
    fn len(&mut self, min_bytes: usize) -> Result<usize, SnapshotError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes.max(1)) > self.0.len() {
            return Err(SnapshotError::Truncated);
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let n = self.len(1)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| SnapshotError::Corrupt("a string is not UTF-8"))
    }
    fn bool(&mut self) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(SnapshotError::Corrupt("a flag is neither 0 nor 1")),
        }
    }
}

impl Engine {
    /// The engine's state as canonical bytes (see the module doc).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(MAGIC);
        w.u64(network_fingerprint(&self.network));
        w.i64(self.dedup_horizon_ms);
        w.u8(u8::from(self.generation.is_some()));
        w.i64(self.generation.unwrap_or(0));
        for set in [&self.seen, &self.seen_before] {
            let mut seen: Vec<u128> = set.entries().collect();
            seen.sort_unstable();
            w.len(seen.len());
            for fp in seen {
                w.0.extend_from_slice(&fp.to_le_bytes());
            }
        }
        w.len(self.books.len());
        for (_, family, book) in &self.books {
            w.str(family);
            write_book(&mut w, book);
        }
        w.0
    }

    /// Whether every product code the books learnt has the same grade rank
    /// in `catalog`. The books keep ranks as they were when the codes were
    /// decoded; a replay decodes with today's catalog. So a snapshot loaded
    /// under a catalog whose ladders moved would diverge from a replay, and
    /// the caller refuses it.
    pub fn agrees_with(&self, catalog: &Catalog) -> bool {
        self.books.iter().flat_map(|(_, _, b)| b.products.iter().flatten()).all(|p| catalog.parse(p.as_str()).is_ok_and(|c| c.rank() == p.rank()))
    }

    /// An engine in the state `bytes` were taken in, on `network`.
    pub fn from_snapshot(network: Arc<Network>, bytes: &[u8]) -> Result<Engine, SnapshotError> {
        Engine::from_snapshot_under(network, bytes, super::DEDUP_HORIZON_MS)
    }

    /// [`Engine::from_snapshot`] for an engine with dedup horizon `horizon_ms`.
    pub fn from_snapshot_under(network: Arc<Network>, bytes: &[u8], horizon_ms: i64) -> Result<Engine, SnapshotError> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len()).map_err(|_| SnapshotError::Format)? != MAGIC {
            return Err(SnapshotError::Format);
        }
        if r.u64()? != network_fingerprint(&network) {
            return Err(SnapshotError::Network);
        }
        let mut engine = Engine::new(network).with_dedup_horizon(horizon_ms);
        if r.i64()? != engine.dedup_horizon_ms {
            return Err(SnapshotError::Horizon);
        }
        let started = r.bool()?;
        let window = r.i64()?;
        engine.generation = started.then_some(window);
        for generation in 0..2 {
            let n = r.len(16)?;
            let set = if generation == 0 { &mut engine.seen } else { &mut engine.seen_before };
            set.reserve(n);
            for _ in 0..n {
                let fp = r.u128()?;
                // Stored entries are never 0, and each is new.
                if fp == 0 || !set.insert(fp) {
                    return Err(SnapshotError::Corrupt("a repeated or zero event fingerprint"));
                }
            }
        }
        if engine.seen.entries().any(|fp| engine.seen_before.contains(fp)) {
            return Err(SnapshotError::Corrupt("an event fingerprint in both generations"));
        }
        let books = r.len(4)?;
        for _ in 0..books {
            let family: Box<str> = r.str()?.into();
            let h = hash_id(&family);
            if engine.book_index(h, &family).is_some() {
                return Err(SnapshotError::Corrupt("a family's book twice"));
            }
            let book = read_book(&mut r, &engine.network, &family)?;
            engine.books.push((h, family, book));
        }
        if !r.0.is_empty() {
            return Err(SnapshotError::Corrupt("bytes after the last book"));
        }
        Ok(engine)
    }
}

fn write_book(w: &mut Writer, b: &Book) {
    let learnt: Vec<(usize, &ProductCode)> = b.products.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (i, p))).collect();
    w.len(learnt.len());
    for (rank, p) in learnt {
        w.u16(rank as u16);
        w.str(p.as_str());
    }
    w.len(b.orders.len());
    for o in b.orders.iter() {
        w.str(&o.id);
        w.str(&o.buyer);
        w.u16(o.rank);
        w.u16(o.home);
        w.u16(o.dest);
        w.bool(o.allow_cross);
        w.bool(o.open);
        w.bool(o.cancelled);
        w.bool(o.aged);
        w.u64(o.max_price);
        w.i64(o.event_time);
        w.i64(o.deliver_by);
        w.u64(o.remaining);
        w.u64(o.allocated);
        w.u64(o.visible);
        w.u32(o.fills);
        w.u32(o.version);
    }
    w.len(b.caps.len());
    for c in b.caps.iter() {
        w.str(&c.id);
        w.str(&c.provider);
        w.u16(c.rank);
        w.u16(c.cluster);
        w.u16(c.site);
        w.bool(c.open);
        w.bool(c.aged);
        w.i64(c.available_from);
        w.i64(c.available_until);
        w.u64(c.price);
        w.u64(c.min_lot);
        w.bool(c.energy.is_some());
        w.u64(c.energy.unwrap_or(0));
        w.u64(c.remaining);
    }
    let mut shares: Vec<(&OrderId, &Waiting)> = b.pending_shares.iter().collect();
    shares.sort_unstable();
    w.len(shares.len());
    for (id, waiting) in shares {
        w.str(id.as_str());
        w.u64(waiting.mask);
        w.bool(waiting.aged);
    }
}

fn read_book(r: &mut Reader<'_>, net: &Network, family: &str) -> Result<Book, SnapshotError> {
    let mut b = Book::new(net);
    let (sites, clusters) = (net.site_count(), net.cluster_count());
    let all_clusters = if clusters == 64 { u64::MAX } else { (1u64 << clusters) - 1 };
    let learnt = r.len(6)?;
    for _ in 0..learnt {
        let rank = r.u16()?;
        let code = r.str()?;
        let p = ProductCode::restore(code, rank).map_err(|_| SnapshotError::Corrupt("a product code of the wrong shape"))?;
        if rank as usize >= MAX_GRADES || p.family_str() != family || b.products[rank as usize].is_some() {
            return Err(SnapshotError::Corrupt("a product code out of place"));
        }
        b.products[rank as usize] = Some(p);
    }
    let known = |b: &Book, rank: u16| (rank as usize) < MAX_GRADES && b.products[rank as usize].is_some();
    let orders = r.len(71)?;
    for seq in 0..orders as u32 {
        let (id, buyer) = (InlineId::new(r.str()?), InlineId::new(r.str()?));
        let o = Order {
            id,
            buyer,
            rank: r.u16()?,
            home: r.u16()?,
            dest: r.u16()?,
            allow_cross: r.bool()?,
            open: r.bool()?,
            cancelled: r.bool()?,
            aged: r.bool()?,
            max_price: r.u64()?,
            event_time: r.i64()?,
            deliver_by: r.i64()?,
            remaining: r.u64()?,
            allocated: r.u64()?,
            visible: r.u64()?,
            fills: r.u32()?,
            version: r.u32()?,
        };
        if !known(&b, o.rank) || o.home as usize >= clusters || o.dest as usize >= sites || o.visible & !all_clusters != 0 || o.visible & (1 << o.home) == 0 {
            return Err(SnapshotError::Corrupt("an order refers to an unknown grade, cluster or site"));
        }
        // After every event an open order has something left (a filled one is closed).
        if o.open && (o.remaining == 0 || o.cancelled || o.aged) {
            return Err(SnapshotError::Corrupt("an open order with nothing left, or due to leave"));
        }
        let h = hash_id(&o.id);
        if b.order_seq_hashed(h, &o.id).is_some() {
            return Err(SnapshotError::Corrupt("an order id twice"));
        }
        b.orders.push(o);
        b.order_ids.insert_new(h, seq);
        b.index_order(seq);
    }
    let caps = r.len(65)?;
    for seq in 0..caps as u32 {
        let (id, provider) = (InlineId::new(r.str()?), InlineId::new(r.str()?));
        let rank = r.u16()?;
        let cluster = r.u16()?;
        let site = r.u16()?;
        let open = r.bool()?;
        let aged = r.bool()?;
        let available_from = r.i64()?;
        let available_until = r.i64()?;
        let price = r.u64()?;
        let min_lot = r.u64()?;
        let energy = match (r.bool()?, r.u64()?) {
            (true, e) => Some(e),
            (false, 0) => None,
            (false, _) => return Err(SnapshotError::Corrupt("an unknown energy intensity with a value")),
        };
        let remaining = r.u64()?;
        if !known(&b, rank) || site as usize >= sites || net.cluster_of(site as usize) != cluster as usize {
            return Err(SnapshotError::Corrupt("a capacity refers to an unknown grade or site"));
        }
        if aged && open && remaining > 0 {
            return Err(SnapshotError::Corrupt("an open capacity due to leave"));
        }
        let h = hash_id(&id);
        if b.cap_seq_hashed(h, &id).is_some() {
            return Err(SnapshotError::Corrupt("a capacity id twice"));
        }
        b.caps.push(Cap { id, provider, rank, cluster, site, open, aged, available_from, available_until, price, min_lot, energy, remaining });
        b.cap_ids.insert_new(h, seq);
        b.index_cap(seq);
    }
    let shares = r.len(13)?;
    let mut last: Option<OrderId> = None;
    for _ in 0..shares {
        let id = OrderId::parse(r.str()?).map_err(|_| SnapshotError::Corrupt("a waiting share's order id is invalid"))?;
        let (mask, aged) = (r.u64()?, r.bool()?);
        // Sorted and distinct, as written.
        if last.as_ref().is_some_and(|l| *l >= id) {
            return Err(SnapshotError::Corrupt("waiting shares out of order"));
        }
        last = Some(id.clone());
        b.pending_shares.insert(id, Waiting { mask, aged });
    }
    Ok(b)
}
