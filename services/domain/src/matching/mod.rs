//! The matching engine: `Engine::apply(event) -> outputs`, pure and deterministic.
//!
//! Rules (contract, "Matching rules (v1)"):
//! - capacity `c` can fill order `o` when they are of one family and `c`'s grade
//!   is at least `o`'s; `c` is in `o`'s home cluster or in a cluster `o` was
//!   shared to; dispatched at `max(c.available_from, o.event_time)`, which must
//!   fall within `c.available_until`, it arrives by `o.deliver_by` on the
//!   cheapest route that makes it; and its landed cost (price + freight) is
//!   within `o.max_price`;
//! - eligible capacity is ranked: home cluster first, then landed cost, then
//!   energy intensity (unknown last), then declaration order;
//! - each allocation takes the best-ranked *usable* capacity: one whose fill
//!   (`min(order remaining, capacity remaining)`) is at least its minimum lot,
//!   or completes the order; this repeats until nothing usable is left;
//! - a new order fills itself at once; new capacity serves eligible open
//!   orders first come, first served; an amendment or a share re-matches the
//!   order; cancellation and withdrawal stop further fills;
//! - an `event_id` seen before changes nothing, within the dedup horizon
//!   (contract "Duplicates and memory (v1.1)"): ids are kept by generation,
//!   each a window of [`DEDUP_HORIZON_MS`] of the market topic's log-append
//!   time (`decide_at`; window `k` is `[k·h, (k+1)·h)`), the current and the
//!   one before it. So an id is remembered for at least one horizon after it
//!   was first seen and forgotten after at most two, and the memory the ids
//!   take is bounded by the input of two horizons, not by history. The same
//!   input with the same log times decides the same way, so a replay agrees
//!   with the first run;
//! - orders and capacity leave the books once they have been closed (filled,
//!   cancelled, withdrawn, exhausted) for a horizon, on the same windows:
//!   what is closed when window `k` begins leaves when window `k + 1`
//!   begins. Open ones leave when their dates (an order's `deliver_by`, a
//!   capacity's `available_until`) ended before window `k − 1` began, and so
//!   do shares that waited that long for an order that never came. The
//!   books then hold what is open and what closed within two horizons: they
//!   grow with what is open, not with history. An event about an order or
//!   capacity that left is taken as one about an unknown id;
//! - a share opens an order to other clusters only if the order allows it;
//! - every order an event touched is reported once, after the event, as an
//!   `OrderStatus` (remaining, allocated, state, clusters shared to): with the
//!   invariant below, an open status with a remainder means no capacity the
//!   order can see is able to fill it, which is what the share role acts on.
//!
//! After every event no open order has a usable eligible capacity, which is why
//! matching only the orders an event touches equals re-matching every open
//! order in arrival order (the property tests check exactly that).

use crate::catalog::{MAX_GRADES, ProductCode};
use crate::events::{CapacityEvent, CapacityKind, OrderEvent, OrderKind, OrderState, SharedOrder, SharedOrderKind, wire};
use crate::freight::{Network, Route};
use crate::slab::Slab;
use crate::table::{FingerprintSet, SeqIndex};
use crate::ids::{EventId, OrderId};
use compact_str::CompactString;
use rustc_hash::FxHashMap as HashMap;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};
use std::cmp::Reverse;
use smallvec::SmallVec;
use std::collections::btree_set;
use std::sync::Arc;

/// How far ahead of the event it decides a caller holding a stream of events
/// calls `Engine::prefetch` (the restore and the benchmark): far enough for
/// the lines to arrive, near enough that they are still cached when used.
pub const PREFETCH_AHEAD: usize = 8;

/// How long a repeated `event_id` is ignored after the first (contract: 7
/// days), on the market topic's log-append time.
pub const DEDUP_HORIZON_MS: i64 = 7 * 86_400_000;

/// One event for the engine, already validated.
// A shared order (which keeps its wire form for re-publication) is boxed: at
// 448 bytes it made every input nearly twice the 232 of a capacity, and a
// batch of inputs (a replay, the benchmark) is read at that stride. Shares
// are rare, so their allocation costs little.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Order(OrderEvent),
    Capacity(CapacityEvent),
    Shared(Box<SharedOrder>),
}

impl Input {
    pub fn event_id(&self) -> &EventId {
        match self {
            Input::Order(o) => &o.event_id,
            Input::Capacity(c) => &c.event_id,
            Input::Shared(s) => &s.event_id,
        }
    }

    /// The product family: the key of every input topic.
    pub fn family(&self) -> &str {
        match self {
            Input::Order(o) => o.product.family_str(),
            Input::Capacity(c) => c.product.family_str(),
            Input::Shared(s) => s.product.family_str(),
        }
    }

    fn time(&self) -> i64 {
        match self {
            Input::Order(o) => o.event_time.0,
            Input::Capacity(c) => c.event_time.0,
            Input::Shared(s) => s.shared_at.0,
        }
    }
}

/// What an event caused, as records of the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Allocation(wire::Allocation),
    /// An order the event touched, as it stands after the event.
    Status(wire::OrderStatus),
    /// The event changed nothing, and why (duplicate, unknown order...).
    Ignored { event_id: EventId, reason: String },
}

/// What an event caused, as the engine decides it: numbers and positions in
/// the book of the event's family, no text. `Engine::render` turns a decision
/// into its record (the edge's work; a restore needs none of it). Render a
/// decision with the engine that made it: positions are only meaningful there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Fill(Fill),
    Status(Status),
    Ignored(&'static str),
}

/// One allocation: `quantity_kg` of capacity `cap` to order `order` by `route`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fill {
    /// Positions of the order and the capacity in their book.
    pub order: u32,
    pub cap: u32,
    /// 1 for the order's first fill, and so on.
    pub number: u32,
    /// Rank of the capacity among those eligible for the order.
    pub rank: u32,
    pub quantity_kg: u64,
    pub route: Route,
    pub decided_at: i64,
}

/// An order as it stands right after an event touched it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    pub order: u32,
    pub version: u32,
    pub state: OrderState,
    pub remaining_kg: u64,
    pub allocated_kg: u64,
    pub deliver_by: i64,
    /// Bit per cluster whose capacity may fill the order.
    pub visible: u64,
    pub at: i64,
}

/// Ids and credit codes inline (up to 24 bytes, which covers credit codes and
/// most ids): a slab entry needs no heap allocation of its own.
type InlineId = CompactString;

#[derive(Debug, Clone)]
struct Order {
    id: InlineId,
    buyer: InlineId,
    rank: u16,
    home: u16,
    dest: u16,
    allow_cross: bool,
    open: bool,
    cancelled: bool,
    /// Closed already when the current window of log time began: it leaves
    /// the book when the next one begins (contract "Duplicates and memory").
    aged: bool,
    max_price: u64,
    event_time: i64,
    deliver_by: i64,
    remaining: u64,
    allocated: u64,
    /// Bit per cluster whose capacity may fill the order: home, plus shares.
    visible: u64,
    fills: u32,
    /// Statuses reported so far.
    version: u32,
}

#[derive(Debug, Clone)]
struct Cap {
    id: InlineId,
    provider: InlineId,
    rank: u16,
    cluster: u16,
    site: u16,
    open: bool,
    /// As for orders: closed (withdrawn or exhausted) when the current window began.
    aged: bool,
    available_from: i64,
    available_until: i64,
    price: u64,
    min_lot: u64,
    energy: Option<u64>,
    remaining: u64,
}

impl Order {
    fn new(o: &OrderEvent, home: usize, dest: usize, visible: u64) -> Order {
        Order {
            id: InlineId::new(o.order_id.as_str()),
            buyer: InlineId::new(o.buyer_id.as_str()),
            rank: o.product.rank(),
            home: home as u16,
            dest: dest as u16,
            allow_cross: o.allow_cross_cluster,
            open: true,
            cancelled: false,
            aged: false,
            max_price: o.max_price.get(),
            event_time: o.event_time.0,
            deliver_by: o.deliver_by.0,
            remaining: o.quantity.get(),
            allocated: 0,
            visible: if o.allow_cross_cluster { visible } else { 0 } | (1 << home),
            fills: 0,
            version: 0,
        }
    }
}

impl Cap {
    fn new(c: &CapacityEvent, cluster: usize, site: usize) -> Cap {
        Cap {
            id: InlineId::new(c.capacity_id.as_str()),
            provider: InlineId::new(c.provider_id.as_str()),
            rank: c.product.rank(),
            cluster: cluster as u16,
            site: site as u16,
            open: true,
            aged: false,
            available_from: c.available_from.0,
            available_until: c.available_until.0,
            price: c.price.get(),
            min_lot: c.min_lot.get(),
            energy: c.energy_kwh_per_t,
            remaining: c.quantity.get(),
        }
    }
}

fn hash_id(id: &str) -> u64 {
    xxh3_64(id.as_bytes())
}

/// A share waiting for its order: the clusters it opens the order to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Waiting {
    mask: u64,
    /// Waiting already, unchanged, when the current window began: it leaves
    /// when the next one begins, so shares of orders that never come do not
    /// pile up.
    aged: bool,
}

/// The book of one product family.
#[derive(Debug, Clone, Default)]
struct Book {
    /// Slabs indexed by arrival sequence number.
    orders: Slab<Order>,
    /// Sequence numbers by order id; the ids themselves live in the slabs
    /// and are compared only when 32 bits of their hashes agree.
    order_ids: SeqIndex,
    caps: Slab<Cap>,
    cap_ids: SeqIndex,
    /// Per (site, grade rank): open capacity with something left, by (price, seq).
    cap_buckets: Vec<PriceSet>,
    /// Per cluster: open orders that cluster's capacity may fill, by (max_price, seq).
    order_by_cluster: Vec<PriceSet>,
    /// Shares that arrived before their order.
    pending_shares: HashMap<OrderId, Waiting>,
    /// Per site: a bit per grade rank whose bucket holds capacity. The
    /// search skips empty buckets without touching them.
    site_ranks: Vec<Ranks>,
    /// Product codes by grade rank (the book is one family).
    products: Vec<Option<ProductCode>>,
}


#[derive(Clone)]
pub struct Engine {
    network: Arc<Network>,
    /// Books by product family, beside the hash of its name: a handful of
    /// families, found by one hash and one string compare.
    books: Vec<(u64, Box<str>, Book)>,
    /// Event ids seen, by their 128-bit XXH3 fingerprint: 16 bytes each and
    /// no copy of the id. Two distinct ids share a fingerprint with
    /// probability about n²/2¹²⁹ (below 10⁻¹⁸ after 10¹⁰ events); the one
    /// consequence would be a fresh event taken for a duplicate. This is the
    /// current generation: ids first seen in the window `generation`.
    seen: FingerprintSet,
    /// The generation before the current one.
    seen_before: FingerprintSet,
    /// The current generation's window (log time ÷ horizon); `None` until
    /// the first event that came with a log time.
    generation: Option<i64>,
    dedup_horizon_ms: i64,
    scratch: Scratch,
}

/// Open orders and capacity across books, for metrics and views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub open_orders: usize,
    pub open_capacities: usize,
    pub open_demand_kg: u64,
    pub open_capacity_kg: u64,
}

/// What the engine holds, open or closed, counted without walking the
/// books: what the dedup horizon bounds (closed entries leave a horizon
/// after closing, event ids after one to two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub orders: usize,
    pub capacities: usize,
    /// Shares waiting for an order that has not come.
    pub waiting_shares: usize,
    pub event_ids: usize,
}

impl Engine {
    pub fn new(network: Arc<Network>) -> Engine {
        assert!(network.cluster_count() <= 64, "the engine keeps cluster visibility in a 64-bit mask");
        Engine {
            network,
            books: Vec::new(),
            seen: FingerprintSet::default(),
            seen_before: FingerprintSet::default(),
            generation: None,
            dedup_horizon_ms: DEDUP_HORIZON_MS,
            scratch: Scratch::default(),
        }
    }

    /// This engine with another dedup horizon (ms of log time; at least 1).
    pub fn with_dedup_horizon(mut self, ms: i64) -> Engine {
        self.dedup_horizon_ms = ms.max(1);
        self
    }

    /// The current window of log time (log time ÷ horizon), once an event
    /// came with a log time: when it moves on, the books have aged.
    pub fn window(&self) -> Option<i64> {
        self.generation
    }

    /// Event-id fingerprints held (both generations): what the horizon bounds.
    pub fn seen_ids(&self) -> usize {
        self.seen.len() + self.seen_before.len()
    }

    pub fn held(&self) -> Held {
        let mut h = Held { event_ids: self.seen_ids(), ..Held::default() };
        for (_, _, b) in &self.books {
            h.orders += b.orders.len();
            h.capacities += b.caps.len();
            h.waiting_shares += b.pending_shares.len();
        }
        h
    }

    pub fn network(&self) -> &Arc<Network> {
        &self.network
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for (_, _, b) in &self.books {
            for o in b.orders.iter().filter(|o| o.open) {
                s.open_orders += 1;
                s.open_demand_kg += o.remaining;
            }
            for c in b.caps.iter().filter(|c| c.open && c.remaining > 0) {
                s.open_capacities += 1;
                s.open_capacity_kg += c.remaining;
            }
        }
        s
    }

    /// Applies one event and returns what it caused as records, in a deterministic order.
    pub fn apply(&mut self, input: &Input) -> Vec<Output> {
        let mut decisions = Vec::new();
        self.decide(input, &mut decisions);
        decisions.iter().map(|d| self.render(d, input)).collect()
    }

    /// The record decision `d` becomes; `cause` is the event `decide` made it for.
    pub fn render(&self, d: &Decision, cause: &Input) -> Output {
        let book = || self.book(cause.family()).expect("a decision about a family has its book");
        match d {
            Decision::Fill(f) => Output::Allocation(book().render_fill(&self.network, f)),
            Decision::Status(s) => Output::Status(book().render_status(&self.network, s, cause.event_id())),
            Decision::Ignored(reason) => Output::Ignored { event_id: cause.event_id().clone(), reason: (*reason).to_owned() },
        }
    }

    fn book(&self, family: &str) -> Option<&Book> {
        self.book_index(hash_id(family), family).map(|b| &self.books[b].2)
    }

    /// Where the book of `family`, whose `hash_id` is `h`, is in `books`.
    fn book_index(&self, h: u64, family: &str) -> Option<usize> {
        self.books.iter().position(|(bh, name, _)| *bh == h && **name == *family)
    }

    /// Brings in the memory `decide(input)` looks up first: the line of the
    /// seen event ids, the line of the book's id index where the event's id
    /// belongs, and the event's site name. A caller that holds the next
    /// events prefetches a few ahead of the one it decides, so that their
    /// cache misses overlap with work instead of following one another. A
    /// hint: results never depend on it.
    pub fn prefetch(&self, input: &Input) {
        let fp = xxh3_128(input.event_id().as_str().as_bytes());
        self.seen.prefetch(fp);
        self.seen_before.prefetch(fp);
        if let Some(book) = self.book(input.family()) {
            match input {
                Input::Order(o) => book.order_ids.prefetch(hash_id(o.order_id.as_str())),
                Input::Capacity(c) => book.cap_ids.prefetch(hash_id(c.capacity_id.as_str())),
                Input::Shared(s) => book.order_ids.prefetch(hash_id(s.order_id.as_str())),
            }
        }
        // The site decide looks up by name: a long one (over 24 bytes) is on the heap.
        match input {
            Input::Order(o) => crate::table::prefetch(o.destination_site.as_str()),
            Input::Capacity(c) => crate::table::prefetch(c.site_id.as_str()),
            Input::Shared(_) => {}
        }
    }

    /// Applies one event and appends what it caused to `out`, in a
    /// deterministic order; its log time is not known, so the generations of
    /// seen ids do not move (a test, a benchmark).
    pub fn decide(&mut self, input: &Input, out: &mut Vec<Decision>) {
        self.decide_inner(input, out)
    }

    /// [`Engine::decide`] for an event appended to the market topic at
    /// `log_ms` (its Kafka log-append time): the seen ids move on a
    /// generation when `log_ms` falls in a later window than the current one.
    pub fn decide_at(&mut self, input: &Input, log_ms: i64, out: &mut Vec<Decision>) {
        self.advance_generation(log_ms);
        self.decide_inner(input, out)
    }

    /// Moves to `log_ms`'s window if it is later than the current one: the
    /// current generation becomes the one before (the window right after
    /// it), or both are forgotten (a later window: every id in them is more
    /// than a horizon old); and the books let go of what closed or expired a
    /// horizon ago (`Book::age`). A log time in an earlier window changes nothing.
    fn advance_generation(&mut self, log_ms: i64) {
        let window = log_ms.div_euclid(self.dedup_horizon_ms);
        match self.generation {
            Some(g) if window <= g => {}
            Some(g) => {
                let current = std::mem::take(&mut self.seen);
                self.seen_before = if window == g + 1 { current } else { FingerprintSet::default() };
                self.generation = Some(window);
                // Dates that ended before the window before this one ended a horizon ago or more.
                let expired_before = (window - 1).saturating_mul(self.dedup_horizon_ms);
                let net = &*self.network;
                for (_, _, book) in &mut self.books {
                    book.age(net, expired_before);
                }
            }
            None => self.generation = Some(window),
        }
    }

    fn decide_inner(&mut self, input: &Input, out: &mut Vec<Decision>) {
        let fp = xxh3_128(input.event_id().as_str().as_bytes());
        if self.seen_before.contains(fp) || !self.seen.insert(fp) {
            return out.push(Decision::Ignored("duplicate event_id"));
        }
        let net = &*self.network;
        let family = input.family();
        let h = hash_id(family);
        let b = match self.book_index(h, family) {
            Some(b) => b,
            None => {
                self.books.push((h, family.into(), Book::new(net)));
                self.books.len() - 1
            }
        };
        let book = &mut self.books[b].2;
        let sc = &mut self.scratch;
        let now = input.time();
        // Orders whose status is reported after the event, in first-touch order.
        let mut touched = std::mem::take(&mut sc.touched);
        touched.clear();
        let ignored = match input {
            Input::Order(o) => book.on_order(net, sc, o, now, out, &mut touched),
            Input::Capacity(c) => book.on_capacity(net, sc, c, now, out, &mut touched),
            Input::Shared(s) => book.on_share(net, sc, s, now, out, &mut touched),
        };
        if let Err(reason) = ignored {
            out.push(Decision::Ignored(reason));
        }
        for &seq in &touched {
            out.push(Decision::Status(book.status(seq, now)));
        }
        sc.touched = touched;
    }
}



mod book;
mod index;
mod render;
mod snapshot;
pub use snapshot::SnapshotError;

use index::*;

#[cfg(test)]
mod tests;
