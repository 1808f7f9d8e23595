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
//! - an `event_id` seen before changes nothing;
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
use std::collections::{BTreeSet, BinaryHeap, btree_set};
use std::sync::Arc;

/// How far ahead of the event it decides a caller holding a stream of events
/// calls `Engine::prefetch` (the restore and the benchmark): far enough for
/// the lines to arrive, near enough that they are still cached when used.
pub const PREFETCH_AHEAD: usize = 8;

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
    pending_shares: HashMap<OrderId, u64>,
    /// Per site: a bit per grade rank whose bucket holds capacity. The
    /// search skips empty buckets without touching them.
    site_ranks: Vec<Ranks>,
    /// Product codes by grade rank (the book is one family).
    products: Vec<Option<ProductCode>>,
}

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
struct PriceSet {
    set: BTreeSet<u64>,
    first: Option<u64>,
    last: Option<u64>,
}

impl PriceSet {
    fn pack(price: u64, seq: u32) -> u64 {
        (price.min(u32::MAX as u64) << 32) | seq as u64
    }

    /// The (capped) price and the sequence number of a packed key.
    fn unpack(key: u64) -> (u64, u32) {
        (key >> 32, key as u32)
    }

    fn insert(&mut self, (price, seq): (u64, u32)) {
        let key = Self::pack(price, seq);
        self.set.insert(key);
        if self.first.is_none_or(|f| key < f) {
            self.first = Some(key);
        }
        if self.last.is_none_or(|l| key > l) {
            self.last = Some(key);
        }
    }

    fn remove(&mut self, (price, seq): (u64, u32)) {
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

    fn first(&self) -> Option<(u64, u32)> {
        self.first.map(Self::unpack)
    }

    /// Whether some key is priced at least `price` (as packed, so capped alike).
    fn reaches(&self, price: u64) -> bool {
        self.last.is_some_and(|l| l >= Self::pack(price, 0))
    }

    /// Keys in order, packed.
    fn iter(&self) -> btree_set::Iter<'_, u64> {
        self.set.iter()
    }

    /// `(capped price, seq)` of the keys priced at least `price`, in order.
    fn from(&self, price: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.set.range(Self::pack(price, 0)..).map(|k| Self::unpack(*k))
    }
}

/// A bit per grade rank.
type Ranks = u16;
const _: () = assert!(Ranks::BITS as usize >= MAX_GRADES);

/// The ranking of one eligible capacity for one order; smaller is better.
type RankKey = (bool, u64, (bool, u64), u32);

#[derive(Debug, Clone, Copy)]
struct Candidate {
    cap: u32,
    route: Route,
}

/// The next capacity of one (site, grade) bucket: outside the home cluster,
/// landed-cost lower bound, bucket, sequence number.
type Cursor = (bool, u64, u32, u32);

/// The search's cursors, smallest taken first. A bucket has at most one
/// cursor, so there are at most (sites × grades) and usually a handful: a
/// vector kept sorted (largest first) does less work than a heap here, and
/// an insertion moves at most that many entries.
#[derive(Debug, Clone, Default)]
struct Cursors(Vec<Cursor>);

impl Cursors {
    fn clear(&mut self) {
        self.0.clear();
    }

    fn push(&mut self, c: Cursor) {
        let at = self.0.partition_point(|x| *x > c);
        self.0.insert(at, c);
    }

    fn peek(&self) -> Option<Cursor> {
        self.0.last().copied()
    }

    fn pop(&mut self) -> Option<Cursor> {
        self.0.pop()
    }
}

/// Buffers the search reuses from event to event, so that matching allocates
/// nothing of its own in the steady state.
#[derive(Debug, Clone, Default)]
struct Scratch {
    cursors: Cursors,
    found: Vec<Candidate>,
    pending: BinaryHeap<Reverse<(RankKey, usize)>>,
    orders: Vec<u32>,
    touched: Vec<u32>,
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
    /// consequence would be a fresh event taken for a duplicate.
    seen: FingerprintSet,
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

impl Engine {
    pub fn new(network: Arc<Network>) -> Engine {
        assert!(network.cluster_count() <= 64, "the engine keeps cluster visibility in a 64-bit mask");
        Engine { network, books: Vec::new(), seen: FingerprintSet::default(), scratch: Scratch::default() }
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
            for c in b.caps.iter().filter(|c| c.open) {
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
        self.seen.prefetch(xxh3_128(input.event_id().as_str().as_bytes()));
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

    /// Applies one event and appends what it caused to `out`, in a deterministic order.
    pub fn decide(&mut self, input: &Input, out: &mut Vec<Decision>) {
        if !self.seen.insert(xxh3_128(input.event_id().as_str().as_bytes())) {
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


/// Why an event changed nothing.
type Outcome = Result<(), &'static str>;

impl Book {
    fn new(net: &Network) -> Book {
        Book {
            cap_buckets: vec![PriceSet::default(); net.site_count() * MAX_GRADES],
            order_by_cluster: vec![PriceSet::default(); net.cluster_count()],
            products: vec![None; MAX_GRADES],
            site_ranks: vec![0; net.site_count()],
            ..Book::default()
        }
    }

    fn order_seq(&self, id: &str) -> Option<u32> {
        self.order_seq_hashed(hash_id(id), id)
    }

    /// `order_seq` for an id whose `hash_id` is `h`: a new order's hash serves twice.
    fn order_seq_hashed(&self, h: u64, id: &str) -> Option<u32> {
        self.order_ids.find(h, |s| self.orders[s as usize].id == id)
    }

    fn cap_seq(&self, id: &str) -> Option<u32> {
        self.cap_seq_hashed(hash_id(id), id)
    }

    fn cap_seq_hashed(&self, h: u64, id: &str) -> Option<u32> {
        self.cap_ids.find(h, |s| self.caps[s as usize].id == id)
    }

    /// Adds a new order (with the shares that came before it), not yet indexed.
    fn push_order(&mut self, o: &OrderEvent, h: u64, home: usize, dest: usize) -> u32 {
        let seq = self.orders.len() as u32;
        self.learn_product(&o.product);
        // Shares rarely come first: skip hashing the id into an empty map.
        let shared = if self.pending_shares.is_empty() { 0 } else { self.pending_shares.remove(&o.order_id).unwrap_or(0) };
        self.orders.push(Order::new(o, home, dest, shared));
        self.order_ids.insert_new(h, seq);
        seq
    }

    /// Adds a new capacity, not yet indexed.
    fn push_cap(&mut self, c: &CapacityEvent, h: u64, cluster: usize, site: usize) -> u32 {
        let seq = self.caps.len() as u32;
        self.learn_product(&c.product);
        self.caps.push(Cap::new(c, cluster, site));
        self.cap_ids.insert_new(h, seq);
        seq
    }

    /// The family's product codes by grade rank, kept once for rendering.
    fn learn_product(&mut self, p: &ProductCode) {
        let slot = &mut self.products[p.rank() as usize];
        if slot.is_none() {
            *slot = Some(p.clone());
        }
    }

    fn product(&self, rank: u16) -> &ProductCode {
        self.products[rank as usize].as_ref().expect("learnt when an order or capacity of this grade arrived")
    }

    fn open_order(&self, id: &OrderId) -> Option<u32> {
        self.order_seq(id.as_str()).filter(|s| self.orders[*s as usize].open)
    }

    fn on_order(&mut self, net: &Network, sc: &mut Scratch, o: &OrderEvent, now: i64, out: &mut Vec<Decision>, touched: &mut Vec<u32>) -> Outcome {
        match o.kind {
            OrderKind::Placed => {
                let h = hash_id(o.order_id.as_str());
                if self.order_seq_hashed(h, o.order_id.as_str()).is_some() {
                    return Err("order_id already placed");
                }
                let (Some(home), Some(dest)) = (net.cluster_index(o.cluster.as_str()), net.site_index(o.destination_site.as_str())) else {
                    return Err("cluster or destination not in the network");
                };
                let seq = self.push_order(o, h, home, dest);
                // Filled first, indexed after: an order that fills at once never enters the index.
                self.fill_order(net, sc, seq, now, out);
                self.index_order(seq);
                touched.push(seq);
            }
            OrderKind::Amended => {
                let seq = self.open_order(&o.order_id).ok_or("no open order with this order_id")?;
                // The index key (max price, seq) does not change with quantity or deadline.
                let ord = &mut self.orders[seq as usize];
                ord.remaining = o.quantity.get();
                ord.deliver_by = o.deliver_by.0;
                self.fill_order(net, sc, seq, now, out);
                self.settle_order(seq);
                touched.push(seq);
            }
            OrderKind::Cancelled => {
                let seq = self.open_order(&o.order_id).ok_or("no open order with this order_id")?;
                self.unindex_order(seq);
                self.orders[seq as usize].open = false;
                self.orders[seq as usize].cancelled = true;
                touched.push(seq);
            }
        }
        Ok(())
    }

    fn on_capacity(&mut self, net: &Network, sc: &mut Scratch, c: &CapacityEvent, now: i64, out: &mut Vec<Decision>, touched: &mut Vec<u32>) -> Outcome {
        match c.kind {
            CapacityKind::Declared => {
                let h = hash_id(c.capacity_id.as_str());
                if self.cap_seq_hashed(h, c.capacity_id.as_str()).is_some() {
                    return Err("capacity_id already declared");
                }
                // The site names its cluster: one lookup, and a compare that the event agrees.
                let Some(site) = net.site_index(c.site_id.as_str()) else {
                    return Err("cluster or site not in the network");
                };
                let cluster = net.cluster_of(site);
                if net.cluster_name(cluster) != c.cluster.as_str() {
                    return Err("cluster or site not in the network");
                }
                let seq = self.push_cap(c, h, cluster, site);
                self.index_cap(seq);
                let mut waiting = std::mem::take(&mut sc.orders);
                self.orders_for(net, seq, &mut waiting);
                for &o in &waiting {
                    if self.caps[seq as usize].remaining == 0 {
                        break;
                    }
                    if self.fill_order(net, sc, o, now, out) {
                        self.settle_order(o);
                        touched.push(o);
                    }
                }
                sc.orders = waiting;
            }
            CapacityKind::Withdrawn => {
                let seq = self.cap_seq(c.capacity_id.as_str()).filter(|s| self.caps[*s as usize].open).ok_or("no open capacity with this capacity_id")?;
                self.unindex_cap(seq);
                self.caps[seq as usize].open = false;
            }
        }
        Ok(())
    }

    fn on_share(&mut self, net: &Network, sc: &mut Scratch, s: &SharedOrder, now: i64, out: &mut Vec<Decision>, touched: &mut Vec<u32>) -> Outcome {
        let mask = s.target_clusters.iter().filter_map(|c| net.cluster_index(c.as_str())).fold(0u64, |m, c| m | (1 << c));
        match (s.kind, self.order_seq(s.order_id.as_str())) {
            (SharedOrderKind::Shared, None) => *self.pending_shares.entry(s.order_id.clone()).or_default() |= mask,
            (SharedOrderKind::Withdrawn, None) => {
                if let Some(m) = self.pending_shares.get_mut(&s.order_id) {
                    *m &= !mask;
                }
            }
            (_, Some(seq)) if !self.orders[seq as usize].allow_cross => {
                return Err("the order does not allow cross-cluster filling");
            }
            (SharedOrderKind::Shared, Some(seq)) if !self.orders[seq as usize].open => {
                // A share that crossed the order's closing: report it, so the
                // share role withdraws what it published.
                self.orders[seq as usize].visible |= mask;
                touched.push(seq);
            }
            (SharedOrderKind::Withdrawn, Some(seq)) if !self.orders[seq as usize].open => {
                return Err("the shared order is closed");
            }
            (kind, Some(seq)) => {
                self.unindex_order(seq);
                let ord = &mut self.orders[seq as usize];
                let home = 1u64 << ord.home;
                ord.visible = match kind {
                    SharedOrderKind::Shared => ord.visible | mask,
                    SharedOrderKind::Withdrawn => (ord.visible & !mask) | home,
                };
                self.index_order(seq);
                if kind == SharedOrderKind::Shared {
                    self.fill_order(net, sc, seq, now, out);
                    self.settle_order(seq);
                }
                touched.push(seq);
            }
        }
        Ok(())
    }

    fn index_order(&mut self, seq: u32) {
        let o = &self.orders[seq as usize];
        if !o.open || o.remaining == 0 {
            self.orders[seq as usize].open = false;
            return;
        }
        for (c, set) in self.order_by_cluster.iter_mut().enumerate() {
            if o.visible & (1 << c) != 0 {
                set.insert((o.max_price, seq));
            }
        }
    }

    /// Closes an indexed order with nothing left to fill.
    fn settle_order(&mut self, seq: u32) {
        if self.orders[seq as usize].open && self.orders[seq as usize].remaining == 0 {
            self.unindex_order(seq);
            self.orders[seq as usize].open = false;
        }
    }

    fn unindex_order(&mut self, seq: u32) {
        let o = &self.orders[seq as usize];
        for (c, set) in self.order_by_cluster.iter_mut().enumerate() {
            if o.visible & (1 << c) != 0 {
                set.remove((o.max_price, seq));
            }
        }
    }

    fn bucket(site: usize, rank: u16) -> usize {
        site * MAX_GRADES + rank as usize
    }

    fn index_cap(&mut self, seq: u32) {
        let c = &self.caps[seq as usize];
        if c.open && c.remaining > 0 {
            self.site_ranks[c.site as usize] |= 1 << c.rank;
            self.cap_buckets[Self::bucket(c.site as usize, c.rank)].insert((c.price, seq));
        }
    }

    fn unindex_cap(&mut self, seq: u32) {
        let c = &self.caps[seq as usize];
        let bucket = &mut self.cap_buckets[Self::bucket(c.site as usize, c.rank)];
        bucket.remove((c.price, seq));
        if bucket.first().is_none() {
            self.site_ranks[c.site as usize] &= !(1 << c.rank);
        }
    }

    /// The route by which `c` can serve `o`, if it is eligible (grade, cluster, time, price).
    /// Both are of this book's family, so the grade check is on ranks alone.
    fn eligible<'n>(net: &'n Network, o: &Order, c: &Cap) -> Option<&'n Route> {
        if !(o.open && c.open && o.remaining > 0 && c.remaining > 0) {
            return None;
        }
        if c.rank < o.rank || o.visible & (1 << c.cluster) == 0 {
            return None;
        }
        let dispatch = c.available_from.max(o.event_time);
        if dispatch > c.available_until {
            return None;
        }
        let route = net.cheapest_in_time(c.site as usize, o.dest as usize, dispatch, o.deliver_by)?;
        (c.price + route.freight_cny_per_t as u64 <= o.max_price).then_some(route)
    }

    /// The best-ranked usable capacity for order `seq`, with its rank among
    /// the eligible. Buckets are merged lazily by a lower bound of landed cost
    /// (price + the cheapest freight from the bucket's site), so only capacity
    /// that could rank first is looked at. Each bucket is walked by one
    /// iterator, begun only when its first capacity (kept beside the set) is
    /// not enough: a fresh range search per step cost more than the rest of
    /// the search together, and most orders need one bucket's first.
    fn best_usable(&self, net: &Network, sc: &mut Scratch, seq: u32) -> Option<(u32, Candidate)> {
        let o = &self.orders[seq as usize];
        if !o.open || o.remaining == 0 {
            return None;
        }
        let Scratch { cursors, found, pending, .. } = sc;
        cursors.clear();
        found.clear();
        pending.clear();
        let dest = o.dest as usize;
        let reach = |site: usize| {
            let min_freight = net.min_freight(site, dest) as u64;
            (o.max_price.saturating_sub(min_freight), min_freight)
        };
        // A cursor stands for a bucket's first capacity within reach until it
        // is taken; only then is the bucket walked, by an iterator kept here.
        let mut walks: SmallVec<[(u32, btree_set::Iter<'_, u64>); 4]> = SmallVec::new();
        for cluster in (0..net.cluster_count()).filter(|c| o.visible & (1 << c) != 0) {
            let away = cluster != o.home as usize;
            for &site in net.sites_of(cluster) {
                // Grades the order accepts (its own and up) that the site has.
                let mut ranks = self.site_ranks[site] >> o.rank << o.rank;
                if ranks == 0 {
                    continue;
                }
                let (bound, min_freight) = reach(site);
                while ranks != 0 {
                    let rank = ranks.trailing_zeros() as u16;
                    ranks &= ranks - 1;
                    let b = Self::bucket(site, rank);
                    if let Some((price, cseq)) = self.cap_buckets[b].first().filter(|(p, _)| *p <= bound) {
                        cursors.push((away, price + min_freight, b as u32, cseq));
                    }
                }
            }
        }
        let mut ranked_above = 0u32;
        loop {
            let next_bound = cursors.peek().map(|(away, lb, ..)| (away, lb));
            if let Some(&Reverse((key, i))) = pending.peek() {
                // Emit only when no unexplored capacity can tie or beat it.
                if next_bound.is_none_or(|b| (key.0, key.1) < b) {
                    pending.pop();
                    let c = &self.caps[found[i].cap as usize];
                    let qty = o.remaining.min(c.remaining);
                    if qty >= c.min_lot || qty == o.remaining {
                        return Some((ranked_above + 1, found[i]));
                    }
                    ranked_above += 1;
                    continue;
                }
            }
            let (away, _, b, cseq) = cursors.pop()?;
            let c = &self.caps[cseq as usize];
            if let Some(route) = Self::eligible(net, o, c) {
                let landed = c.price + route.freight_cny_per_t as u64;
                let key = (away, landed, (c.energy.is_none(), c.energy.unwrap_or(0)), cseq);
                pending.push(Reverse((key, found.len())));
                found.push(Candidate { cap: cseq, route: *route });
            }
            let w = match walks.iter().position(|(wb, _)| *wb == b) {
                Some(w) => w,
                None => {
                    let mut walk = self.cap_buckets[b as usize].iter();
                    walk.next(); // the bucket's first, just taken
                    walks.push((b, walk));
                    walks.len() - 1
                }
            };
            let (bound, min_freight) = reach(b as usize / MAX_GRADES);
            if let Some((p, s)) = walks[w].1.next().map(|k| PriceSet::unpack(*k)).filter(|(p, _)| *p <= bound) {
                cursors.push((away, p + min_freight, b, s));
            }
        }
    }

    /// Open orders that capacity `cseq` is eligible for, first come first served, into `seqs`.
    fn orders_for(&self, net: &Network, cseq: u32, seqs: &mut Vec<u32>) {
        let c = &self.caps[cseq as usize];
        seqs.clear();
        let orders = &self.order_by_cluster[c.cluster as usize];
        // Usually every waiting order's cap is below the price: no range search then.
        if !orders.reaches(c.price) {
            return;
        }
        seqs.extend(
            orders
                .from(c.price)
                .map(|(_, s)| s)
                .filter(|s| Self::eligible(net, &self.orders[*s as usize], c).is_some()),
        );
        seqs.sort_unstable();
    }

    /// Fills order `seq` from its best usable capacity, again and again;
    /// whether anything was allocated. Leaves the order index to the caller.
    fn fill_order(&mut self, net: &Network, sc: &mut Scratch, seq: u32, decided_at: i64, out: &mut Vec<Decision>) -> bool {
        let before = self.orders[seq as usize].fills;
        while let Some((rank, cand)) = self.best_usable(net, sc, seq) {
            let cseq = cand.cap;
            let qty = self.orders[seq as usize].remaining.min(self.caps[cseq as usize].remaining);
            // Index keys hold prices, not quantities: only an exhausted capacity leaves its bucket.
            self.caps[cseq as usize].remaining -= qty;
            if self.caps[cseq as usize].remaining == 0 {
                self.unindex_cap(cseq);
            }
            let o = &mut self.orders[seq as usize];
            o.remaining -= qty;
            o.allocated += qty;
            o.fills += 1;
            out.push(Decision::Fill(Fill {
                order: seq,
                cap: cseq,
                number: o.fills,
                rank,
                quantity_kg: qty,
                route: cand.route,
                decided_at,
            }));
        }
        self.orders[seq as usize].fills != before
    }

    /// Order `seq` as it stands now; counts a version.
    fn status(&mut self, seq: u32, at: i64) -> Status {
        let o = &mut self.orders[seq as usize];
        o.version += 1;
        let state = match (o.open, o.cancelled) {
            (true, _) => OrderState::Open,
            (false, true) => OrderState::Cancelled,
            (false, false) => OrderState::Filled,
        };
        Status {
            order: seq,
            version: o.version,
            state,
            remaining_kg: if o.open { o.remaining } else { 0 },
            allocated_kg: o.allocated,
            deliver_by: o.deliver_by,
            visible: o.visible,
            at,
        }
    }
}

impl Book {
    fn render_status(&self, net: &Network, d: &Status, cause: &EventId) -> wire::OrderStatus {
        let o = &self.orders[d.order as usize];
        let home = o.home as usize;
        wire::OrderStatus {
            event_id: format!("{cause}/{}", o.id),
            status_at: d.at,
            version: d.version as i32,
            state: d.state,
            order_id: o.id.to_string(),
            cluster: net.cluster_name(home).to_owned(),
            buyer_id: o.buyer.to_string(),
            product_code: self.product(o.rank).to_string(),
            destination_site: net.site_name(o.dest as usize).to_owned(),
            deliver_by: d.deliver_by,
            max_price_cny_per_t: o.max_price as i64,
            allow_cross_cluster: o.allow_cross,
            remaining_kg: d.remaining_kg as i64,
            allocated_kg: d.allocated_kg as i64,
            shared_to: (0..net.cluster_count()).filter(|c| *c != home && d.visible & (1 << c) != 0).map(|c| net.cluster_name(c).to_owned()).collect(),
        }
    }

    fn render_fill(&self, net: &Network, f: &Fill) -> wire::Allocation {
        let (o, c, route) = (&self.orders[f.order as usize], &self.caps[f.cap as usize], &f.route);
        let (o_home, c_cluster, c_site) = (o.home as usize, c.cluster as usize, c.site as usize);
        let home = c.cluster == o.home;
        let freight = route.freight_cny_per_t as i64;
        let landed = c.price + route.freight_cny_per_t as u64;
        let product = self.product(c.rank);
        let summary = format!(
            "{} from {} ({}, {}) by {} {} km in {} h: {} + {} freight = {} CNY/t within the {} cap; rank {}",
            product,
            net.site_name(c_site),
            net.cluster_name(c_cluster),
            if home { "home cluster" } else { "shared" },
            route.mode.as_str(),
            route.distance_km,
            route.transit_hours,
            c.price,
            freight,
            landed,
            o.max_price,
            f.rank
        );
        wire::Allocation {
            allocation_id: format!("ALC-{}-{}", o.id, f.number),
            order_id: o.id.to_string(),
            capacity_id: c.id.to_string(),
            order_cluster: net.cluster_name(o_home).to_owned(),
            capacity_cluster: net.cluster_name(c_cluster).to_owned(),
            buyer_id: o.buyer.to_string(),
            provider_id: c.provider.to_string(),
            product_code: product.to_string(),
            quantity_kg: f.quantity_kg as i64,
            price_cny_per_t: c.price as i64,
            freight_cny_per_t: freight,
            from_site: net.site_name(c_site).to_owned(),
            destination_site: net.site_name(o.dest as usize).to_owned(),
            decided_at: f.decided_at,
            explanation: wire::Explanation {
                rank: f.rank as i32,
                home_cluster: home,
                requested_product_code: self.product(o.rank).to_string(),
                landed_cost_cny_per_t: landed as i64,
                distance_km: route.distance_km as i64,
                transit_hours: route.transit_hours as i64,
                mode: route.mode,
                energy_kwh_per_t: c.energy.map(|e| e as i64),
                summary,
            },
        }
    }
}

#[path = "matching_snapshot.rs"]
mod snapshot;
pub use snapshot::SnapshotError;

#[cfg(test)]
#[path = "matching_tests.rs"]
mod tests;
