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

use crate::catalog::ProductCode;
use crate::events::{CapacityEvent, CapacityKind, OrderEvent, OrderKind, OrderState, SharedOrder, SharedOrderKind, wire};
use crate::freight::{Network, Route};
use crate::ids::{CapacityId, EnterpriseId, EventId, OrderId};
use crate::catalog::MAX_GRADES;
use std::cmp::Reverse;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound::{Excluded, Included};
use std::sync::Arc;

/// One event for the engine, already validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Order(OrderEvent),
    Capacity(CapacityEvent),
    Shared(SharedOrder),
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

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Allocation(wire::Allocation),
    /// An order the event touched, as it stands after the event.
    Status(wire::OrderStatus),
    /// The event changed nothing, and why (duplicate, unknown order...).
    Ignored { event_id: EventId, reason: String },
}

#[derive(Debug, Clone)]
struct Order {
    id: OrderId,
    buyer: EnterpriseId,
    product: ProductCode,
    home: usize,
    dest: usize,
    event_time: i64,
    deliver_by: i64,
    max_price: u64,
    allow_cross: bool,
    remaining: u64,
    allocated: u64,
    open: bool,
    cancelled: bool,
    /// Bit per cluster whose capacity may fill the order: home, plus shares.
    visible: u64,
    fills: u32,
    /// Statuses reported so far.
    version: u32,
}

#[derive(Debug, Clone)]
struct Cap {
    id: CapacityId,
    provider: EnterpriseId,
    product: ProductCode,
    cluster: usize,
    site: usize,
    available_from: i64,
    available_until: i64,
    price: u64,
    min_lot: u64,
    energy: Option<u64>,
    remaining: u64,
    open: bool,
}

impl Order {
    fn new(o: &OrderEvent, home: usize, dest: usize, visible: u64) -> Order {
        Order {
            id: o.order_id.clone(),
            buyer: o.buyer_id.clone(),
            product: o.product.clone(),
            home,
            dest,
            event_time: o.event_time.0,
            deliver_by: o.deliver_by.0,
            max_price: o.max_price.get(),
            allow_cross: o.allow_cross_cluster,
            remaining: o.quantity.get(),
            allocated: 0,
            open: true,
            cancelled: false,
            visible: if o.allow_cross_cluster { visible } else { 0 } | (1 << home),
            fills: 0,
            version: 0,
        }
    }
}

impl Cap {
    fn new(c: &CapacityEvent, cluster: usize, site: usize) -> Cap {
        Cap {
            id: c.capacity_id.clone(),
            provider: c.provider_id.clone(),
            product: c.product.clone(),
            cluster,
            site,
            available_from: c.available_from.0,
            available_until: c.available_until.0,
            price: c.price.get(),
            min_lot: c.min_lot.get(),
            energy: c.energy_kwh_per_t,
            remaining: c.quantity.get(),
            open: true,
        }
    }
}

/// The book of one product family.
#[derive(Debug, Clone, Default)]
struct Book {
    /// Slabs indexed by arrival sequence number.
    orders: Vec<Order>,
    order_ids: HashMap<OrderId, u32>,
    caps: Vec<Cap>,
    cap_ids: HashMap<CapacityId, u32>,
    /// Per (site, grade rank): open capacity with something left, by (price, seq).
    cap_buckets: Vec<BTreeSet<(u64, u32)>>,
    /// Per cluster: open orders that cluster's capacity may fill, by (max_price, seq).
    order_by_cluster: Vec<BTreeSet<(u64, u32)>>,
    /// Shares that arrived before their order.
    pending_shares: HashMap<OrderId, u64>,
    /// The highest grade rank any capacity in the book has: buckets above are empty.
    max_rank: u16,
}

/// The ranking of one eligible capacity for one order; smaller is better.
type RankKey = (bool, u64, (bool, u64), u32);

struct Candidate {
    cap: u32,
    route: Route,
    landed: u64,
}

/// The next capacity of one (site, grade) bucket: its landed-cost lower bound first.
type Cursor = Reverse<(bool, u64, usize, u64, u32)>;

#[derive(Clone)]
pub struct Engine {
    network: Arc<Network>,
    books: BTreeMap<String, Book>,
    seen: HashSet<EventId>,
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
        Engine { network, books: BTreeMap::new(), seen: HashSet::default() }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for b in self.books.values() {
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

    /// Applies one event and returns what it caused, in a deterministic order.
    pub fn apply(&mut self, input: &Input) -> Vec<Output> {
        let ignored = |reason: &str| vec![Output::Ignored { event_id: input.event_id().clone(), reason: reason.to_owned() }];
        if !self.seen.insert(input.event_id().clone()) {
            return ignored("duplicate event_id");
        }
        let net = self.network.clone();
        if !self.books.contains_key(input.family()) {
            self.books.insert(input.family().to_owned(), Book::new(&net));
        }
        let book = self.books.get_mut(input.family()).expect("inserted above");
        let now = input.time();
        let mut out = Vec::new();
        // Orders whose status is reported after the event, in first-touch order.
        let mut touched: Vec<u32> = Vec::new();
        match input {
            Input::Order(o) => match o.kind {
                OrderKind::Placed => {
                    if book.order_ids.contains_key(&o.order_id) {
                        return ignored("order_id already placed");
                    }
                    let (Some(home), Some(dest)) = (net.cluster_index(o.cluster.as_str()), net.site_index(o.destination_site.as_str())) else {
                        return ignored("cluster or destination not in the network");
                    };
                    let seq = book.orders.len() as u32;
                    let shared = book.pending_shares.remove(&o.order_id).unwrap_or(0);
                    book.orders.push(Order::new(o, home, dest, shared));
                    book.order_ids.insert(o.order_id.clone(), seq);
                    book.index_order(seq);
                    book.fill_order(&net, seq, now, &mut out);
                    touched.push(seq);
                }
                OrderKind::Amended => {
                    let Some(seq) = book.open_order(&o.order_id) else { return ignored("no open order with this order_id") };
                    book.unindex_order(seq);
                    let ord = &mut book.orders[seq as usize];
                    ord.remaining = o.quantity.get();
                    ord.deliver_by = o.deliver_by.0;
                    book.index_order(seq);
                    book.fill_order(&net, seq, now, &mut out);
                    touched.push(seq);
                }
                OrderKind::Cancelled => {
                    let Some(seq) = book.open_order(&o.order_id) else { return ignored("no open order with this order_id") };
                    book.unindex_order(seq);
                    book.orders[seq as usize].open = false;
                    book.orders[seq as usize].cancelled = true;
                    touched.push(seq);
                }
            },
            Input::Capacity(c) => match c.kind {
                CapacityKind::Declared => {
                    if book.cap_ids.contains_key(&c.capacity_id) {
                        return ignored("capacity_id already declared");
                    }
                    let (Some(cluster), Some(site)) = (net.cluster_index(c.cluster.as_str()), net.site_index(c.site_id.as_str())) else {
                        return ignored("cluster or site not in the network");
                    };
                    let seq = book.caps.len() as u32;
                    book.caps.push(Cap::new(c, cluster, site));
                    book.cap_ids.insert(c.capacity_id.clone(), seq);
                    book.index_cap(seq);
                    for o in book.orders_for(&net, seq) {
                        if book.caps[seq as usize].remaining == 0 {
                            break;
                        }
                        if book.fill_order(&net, o, now, &mut out) {
                            touched.push(o);
                        }
                    }
                }
                CapacityKind::Withdrawn => {
                    let Some(&seq) = book.cap_ids.get(&c.capacity_id).filter(|s| book.caps[**s as usize].open) else {
                        return ignored("no open capacity with this capacity_id");
                    };
                    book.unindex_cap(seq);
                    book.caps[seq as usize].open = false;
                }
            },
            Input::Shared(s) => {
                let mask = s.target_clusters.iter().filter_map(|c| net.cluster_index(c.as_str())).fold(0u64, |m, c| m | (1 << c));
                let known = book.order_ids.get(&s.order_id).copied();
                match (s.kind, known) {
                    (SharedOrderKind::Shared, None) => *book.pending_shares.entry(s.order_id.clone()).or_default() |= mask,
                    (SharedOrderKind::Withdrawn, None) => {
                        if let Some(m) = book.pending_shares.get_mut(&s.order_id) {
                            *m &= !mask;
                        }
                    }
                    (_, Some(seq)) if !book.orders[seq as usize].allow_cross => {
                        return ignored("the order does not allow cross-cluster filling");
                    }
                    (SharedOrderKind::Shared, Some(seq)) if !book.orders[seq as usize].open => {
                        // A share that crossed the order's closing: report it, so the
                        // share role withdraws what it published.
                        book.orders[seq as usize].visible |= mask;
                        touched.push(seq);
                    }
                    (SharedOrderKind::Withdrawn, Some(seq)) if !book.orders[seq as usize].open => {
                        return ignored("the shared order is closed");
                    }
                    (kind, Some(seq)) => {
                        book.unindex_order(seq);
                        let ord = &mut book.orders[seq as usize];
                        let home = 1u64 << ord.home;
                        ord.visible = match kind {
                            SharedOrderKind::Shared => ord.visible | mask,
                            SharedOrderKind::Withdrawn => (ord.visible & !mask) | home,
                        };
                        book.index_order(seq);
                        if kind == SharedOrderKind::Shared {
                            book.fill_order(&net, seq, now, &mut out);
                        }
                        touched.push(seq);
                    }
                }
            }
        }
        for seq in touched {
            out.push(Output::Status(book.status(&net, seq, input.event_id(), now)));
        }
        out
    }
}

impl Book {
    fn new(net: &Network) -> Book {
        Book {
            cap_buckets: vec![BTreeSet::new(); net.site_count() * MAX_GRADES],
            order_by_cluster: vec![BTreeSet::new(); net.cluster_count()],
            ..Book::default()
        }
    }

    fn open_order(&self, id: &OrderId) -> Option<u32> {
        self.order_ids.get(id).copied().filter(|s| self.orders[*s as usize].open)
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

    fn unindex_order(&mut self, seq: u32) {
        let o = &self.orders[seq as usize];
        for (c, set) in self.order_by_cluster.iter_mut().enumerate() {
            if o.visible & (1 << c) != 0 {
                set.remove(&(o.max_price, seq));
            }
        }
    }

    fn bucket(site: usize, rank: u16) -> usize {
        site * MAX_GRADES + rank as usize
    }

    fn index_cap(&mut self, seq: u32) {
        let c = &self.caps[seq as usize];
        if c.open && c.remaining > 0 {
            self.max_rank = self.max_rank.max(c.product.rank());
            self.cap_buckets[Self::bucket(c.site, c.product.rank())].insert((c.price, seq));
        }
    }

    fn unindex_cap(&mut self, seq: u32) {
        let c = &self.caps[seq as usize];
        self.cap_buckets[Self::bucket(c.site, c.product.rank())].remove(&(c.price, seq));
    }

    /// The route by which `c` can serve `o`, if it is eligible (grade, cluster, time, price).
    fn eligible<'n>(net: &'n Network, o: &Order, c: &Cap) -> Option<&'n Route> {
        if !(o.open && c.open && o.remaining > 0 && c.remaining > 0) {
            return None;
        }
        if !c.product.can_fill(&o.product) || o.visible & (1 << c.cluster) == 0 {
            return None;
        }
        let dispatch = c.available_from.max(o.event_time);
        if dispatch > c.available_until {
            return None;
        }
        let route = net.cheapest_in_time(c.site, o.dest, dispatch, o.deliver_by)?;
        (c.price + route.freight_cny_per_t as u64 <= o.max_price).then_some(route)
    }

    /// The best-ranked usable capacity for order `seq`, with its rank among
    /// the eligible. Buckets are merged lazily by a lower bound of landed cost
    /// (price + the cheapest freight from the bucket's site), so only capacity
    /// that could rank first is looked at.
    fn best_usable(&self, net: &Network, seq: u32) -> Option<(usize, Candidate)> {
        let o = &self.orders[seq as usize];
        if !o.open || o.remaining == 0 {
            return None;
        }
        let mut cursors: BinaryHeap<Cursor> = BinaryHeap::new();
        let bound_of = |site: usize| o.max_price.saturating_sub(net.min_freight(site, o.dest) as u64);
        for cluster in (0..net.cluster_count()).filter(|c| o.visible & (1 << c) != 0) {
            for site in net.sites_of(cluster) {
                let min_freight = net.min_freight(site, o.dest) as u64;
                for rank in o.product.rank()..=self.max_rank {
                    let b = Self::bucket(site, rank);
                    if let Some(&(price, cseq)) = self.cap_buckets[b].range(..=(bound_of(site), u32::MAX)).next() {
                        cursors.push(Reverse((cluster != o.home, price + min_freight, b, price, cseq)));
                    }
                }
            }
        }
        let mut found: Vec<Candidate> = Vec::new();
        let mut pending: BinaryHeap<Reverse<(RankKey, usize)>> = BinaryHeap::new();
        let mut ranked_above = 0usize;
        loop {
            let next_bound = cursors.peek().map(|Reverse((home, lb, ..))| (*home, *lb));
            if let Some(&Reverse((key, i))) = pending.peek() {
                // Emit only when no unexplored capacity can tie or beat it.
                if next_bound.is_none_or(|b| (key.0, key.1) < b) {
                    pending.pop();
                    let c = &self.caps[found[i].cap as usize];
                    let qty = o.remaining.min(c.remaining);
                    if qty >= c.min_lot || qty == o.remaining {
                        let cand = found.swap_remove(i);
                        return Some((ranked_above + 1, cand));
                    }
                    ranked_above += 1;
                    continue;
                }
            }
            let Reverse((home, _, b, price, cseq)) = cursors.pop()?;
            let c = &self.caps[cseq as usize];
            if let Some(route) = Self::eligible(net, o, c) {
                let landed = c.price + route.freight_cny_per_t as u64;
                let key = (home, landed, (c.energy.is_none(), c.energy.unwrap_or(0)), cseq);
                // swap_remove above may reorder `found`; indices stay valid because we return right after.
                pending.push(Reverse((key, found.len())));
                found.push(Candidate { cap: cseq, route: *route, landed });
            }
            let site = b / MAX_GRADES;
            let next = self.cap_buckets[b].range((Excluded((price, cseq)), Included((bound_of(site), u32::MAX)))).next();
            if let Some(&(p, s)) = next {
                cursors.push(Reverse((home, p + net.min_freight(site, o.dest) as u64, b, p, s)));
            }
        }
    }

    /// Open orders that capacity `cseq` is eligible for, first come first served.
    fn orders_for(&self, net: &Network, cseq: u32) -> Vec<u32> {
        let c = &self.caps[cseq as usize];
        let mut seqs: Vec<u32> = self.order_by_cluster[c.cluster]
            .range((c.price, 0)..)
            .map(|&(_, s)| s)
            .filter(|s| Self::eligible(net, &self.orders[*s as usize], c).is_some())
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// Fills order `seq` from its best usable capacity, again and again;
    /// whether anything was allocated.
    fn fill_order(&mut self, net: &Network, seq: u32, decided_at: i64, out: &mut Vec<Output>) -> bool {
        let before = self.orders[seq as usize].fills;
        while let Some((rank, cand)) = self.best_usable(net, seq) {
            let qty = self.orders[seq as usize].remaining.min(self.caps[cand.cap as usize].remaining);
            out.push(Output::Allocation(self.allocation(net, seq, &cand, rank, qty, decided_at)));
            let cseq = cand.cap;
            self.unindex_cap(cseq);
            self.caps[cseq as usize].remaining -= qty;
            self.index_cap(cseq);
            self.unindex_order(seq);
            let o = &mut self.orders[seq as usize];
            o.remaining -= qty;
            o.allocated += qty;
            o.fills += 1;
            self.index_order(seq);
        }
        self.orders[seq as usize].fills != before
    }

    /// Order `seq` as it stands now; counts a version.
    fn status(&mut self, net: &Network, seq: u32, cause: &EventId, at: i64) -> wire::OrderStatus {
        let o = &mut self.orders[seq as usize];
        o.version += 1;
        let state = match (o.open, o.cancelled) {
            (true, _) => OrderState::Open,
            (false, true) => OrderState::Cancelled,
            (false, false) => OrderState::Filled,
        };
        wire::OrderStatus {
            event_id: format!("{cause}/{}", o.id),
            status_at: at,
            version: o.version as i32,
            state,
            order_id: o.id.to_string(),
            cluster: net.cluster_name(o.home).to_owned(),
            buyer_id: o.buyer.to_string(),
            product_code: o.product.to_string(),
            destination_site: net.site_name(o.dest).to_owned(),
            deliver_by: o.deliver_by,
            max_price_cny_per_t: o.max_price as i64,
            allow_cross_cluster: o.allow_cross,
            remaining_kg: if o.open { o.remaining as i64 } else { 0 },
            allocated_kg: o.allocated as i64,
            shared_to: (0..net.cluster_count()).filter(|c| *c != o.home && o.visible & (1 << c) != 0).map(|c| net.cluster_name(c).to_owned()).collect(),
        }
    }

    fn allocation(&self, net: &Network, seq: u32, cand: &Candidate, rank: usize, qty: u64, decided_at: i64) -> wire::Allocation {
        let o = &self.orders[seq as usize];
        let c = &self.caps[cand.cap as usize];
        let home = c.cluster == o.home;
        let freight = cand.route.freight_cny_per_t as i64;
        let summary = format!(
            "{} from {} ({}, {}) by {} {} km in {} h: {} + {} freight = {} CNY/t within the {} cap; rank {}",
            c.product,
            net.site_name(c.site),
            net.cluster_name(c.cluster),
            if home { "home cluster" } else { "shared" },
            cand.route.mode.as_str(),
            cand.route.distance_km,
            cand.route.transit_hours,
            c.price,
            freight,
            cand.landed,
            o.max_price,
            rank
        );
        wire::Allocation {
            allocation_id: format!("ALC-{}-{}", o.id, o.fills + 1),
            order_id: o.id.to_string(),
            capacity_id: c.id.to_string(),
            order_cluster: net.cluster_name(o.home).to_owned(),
            capacity_cluster: net.cluster_name(c.cluster).to_owned(),
            buyer_id: o.buyer.to_string(),
            provider_id: c.provider.to_string(),
            product_code: c.product.to_string(),
            quantity_kg: qty as i64,
            price_cny_per_t: c.price as i64,
            freight_cny_per_t: freight,
            from_site: net.site_name(c.site).to_owned(),
            destination_site: net.site_name(o.dest).to_owned(),
            decided_at,
            explanation: wire::Explanation {
                rank: rank as i32,
                home_cluster: home,
                requested_product_code: o.product.to_string(),
                landed_cost_cny_per_t: cand.landed as i64,
                distance_km: cand.route.distance_km as i64,
                transit_hours: cand.route.transit_hours as i64,
                mode: cand.route.mode,
                energy_kwh_per_t: c.energy.map(|e| e as i64),
                summary,
            },
        }
    }
}

#[cfg(test)]
#[path = "matching_tests.rs"]
mod tests;
