//! A book's rules: placing, amending, cancelling and sharing orders,
//! declaring and withdrawing capacity, the search for eligible capacity and
//! the fills (contract, "Matching rules (v1)").

use super::index::*;
use super::*;

/// Why an event changed nothing.
pub(super) type Outcome = Result<(), &'static str>;

impl Book {
    pub(super) fn new(net: &Network) -> Book {
        Book {
            cap_buckets: vec![PriceSet::default(); net.site_count() * MAX_GRADES],
            order_by_cluster: vec![PriceSet::default(); net.cluster_count()],
            products: vec![None; MAX_GRADES],
            site_ranks: vec![0; net.site_count()],
            ..Book::default()
        }
    }

    pub(super) fn order_seq(&self, id: &str) -> Option<u32> {
        self.order_seq_hashed(hash_id(id), id)
    }

    /// `order_seq` for an id whose `hash_id` is `h`: a new order's hash serves twice.
    pub(super) fn order_seq_hashed(&self, h: u64, id: &str) -> Option<u32> {
        self.order_ids.find(h, |s| self.orders[s as usize].id == id)
    }

    pub(super) fn cap_seq(&self, id: &str) -> Option<u32> {
        self.cap_seq_hashed(hash_id(id), id)
    }

    pub(super) fn cap_seq_hashed(&self, h: u64, id: &str) -> Option<u32> {
        self.cap_ids.find(h, |s| self.caps[s as usize].id == id)
    }

    /// Adds a new order (with the shares that came before it), not yet indexed.
    pub(super) fn push_order(&mut self, o: &OrderEvent, h: u64, home: usize, dest: usize) -> u32 {
        let seq = self.orders.len() as u32;
        self.learn_product(&o.product);
        // Shares rarely come first: skip hashing the id into an empty map.
        let shared = if self.pending_shares.is_empty() { 0 } else { self.pending_shares.remove(&o.order_id).map_or(0, |w| w.mask) };
        self.orders.push(Order::new(o, home, dest, shared));
        self.order_ids.insert_new(h, seq);
        seq
    }

    /// Adds a new capacity, not yet indexed.
    pub(super) fn push_cap(&mut self, c: &CapacityEvent, h: u64, cluster: usize, site: usize) -> u32 {
        let seq = self.caps.len() as u32;
        self.learn_product(&c.product);
        self.caps.push(Cap::new(c, cluster, site));
        self.cap_ids.insert_new(h, seq);
        seq
    }

    /// The family's product codes by grade rank, kept once for rendering.
    pub(super) fn learn_product(&mut self, p: &ProductCode) {
        let slot = &mut self.products[p.rank() as usize];
        if slot.is_none() {
            *slot = Some(p.clone());
        }
    }

    pub(super) fn product(&self, rank: u16) -> &ProductCode {
        self.products[rank as usize].as_ref().expect("learnt when an order or capacity of this grade arrived")
    }

    pub(super) fn open_order(&self, id: &OrderId) -> Option<u32> {
        self.order_seq(id.as_str()).filter(|s| self.orders[*s as usize].open)
    }

    pub(super) fn on_order(&mut self, net: &Network, sc: &mut Scratch, o: &OrderEvent, now: i64, out: &mut Vec<Decision>, touched: &mut Vec<u32>) -> Outcome {
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

    pub(super) fn on_capacity(&mut self, net: &Network, sc: &mut Scratch, c: &CapacityEvent, now: i64, out: &mut Vec<Decision>, touched: &mut Vec<u32>) -> Outcome {
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

    pub(super) fn on_share(&mut self, net: &Network, sc: &mut Scratch, s: &SharedOrder, now: i64, out: &mut Vec<Decision>, touched: &mut Vec<u32>) -> Outcome {
        let mask = s.target_clusters.iter().filter_map(|c| net.cluster_index(c.as_str())).fold(0u64, |m, c| m | (1 << c));
        match (s.kind, self.order_seq(s.order_id.as_str())) {
            (SharedOrderKind::Shared, None) => {
                let w = self.pending_shares.entry(s.order_id.clone()).or_default();
                *w = Waiting { mask: w.mask | mask, aged: false };
            }
            (SharedOrderKind::Withdrawn, None) => {
                if let Some(w) = self.pending_shares.get_mut(&s.order_id) {
                    *w = Waiting { mask: w.mask & !mask, aged: false };
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

    /// The book as it stands when a new window of log time begins: orders
    /// and capacity that were closed when the window before began (so closed
    /// a horizon ago or more) leave, as do open ones whose dates ended before
    /// `expired_before` (an order's `deliver_by`, a capacity's
    /// `available_until`), and shares that have waited, unchanged, since then
    /// for an order that never came. What stays keeps its arrival order under
    /// new sequence numbers, so matching decides exactly as before; the
    /// indexes are rebuilt by the rules that keep them event by event. What is
    /// closed now is marked to leave at the next window.
    pub(super) fn age(&mut self, net: &Network, expired_before: i64) {
        let old = std::mem::replace(self, Book::new(net));
        self.products = old.products;
        for mut o in old.orders.into_iter() {
            let closed = !o.open;
            if (closed && o.aged) || (!closed && o.deliver_by < expired_before) {
                continue;
            }
            o.aged = closed;
            let (seq, h) = (self.orders.len() as u32, hash_id(&o.id));
            self.orders.push(o);
            self.order_ids.insert_new(h, seq);
            self.index_order(seq);
        }
        for mut c in old.caps.into_iter() {
            let closed = !c.open || c.remaining == 0;
            if (closed && c.aged) || (!closed && c.available_until < expired_before) {
                continue;
            }
            c.aged = closed;
            let (seq, h) = (self.caps.len() as u32, hash_id(&c.id));
            self.caps.push(c);
            self.cap_ids.insert_new(h, seq);
            self.index_cap(seq);
        }
        self.pending_shares = old.pending_shares;
        self.pending_shares.retain(|_, w| !w.aged);
        self.pending_shares.shrink_to_fit();
        for w in self.pending_shares.values_mut() {
            w.aged = true;
        }
    }

    pub(super) fn index_order(&mut self, seq: u32) {
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
    pub(super) fn settle_order(&mut self, seq: u32) {
        if self.orders[seq as usize].open && self.orders[seq as usize].remaining == 0 {
            self.unindex_order(seq);
            self.orders[seq as usize].open = false;
        }
    }

    pub(super) fn unindex_order(&mut self, seq: u32) {
        let o = &self.orders[seq as usize];
        for (c, set) in self.order_by_cluster.iter_mut().enumerate() {
            if o.visible & (1 << c) != 0 {
                set.remove((o.max_price, seq));
            }
        }
    }

    pub(super) fn bucket(site: usize, rank: u16) -> usize {
        site * MAX_GRADES + rank as usize
    }

    pub(super) fn index_cap(&mut self, seq: u32) {
        let c = &self.caps[seq as usize];
        if c.open && c.remaining > 0 {
            self.site_ranks[c.site as usize] |= 1 << c.rank;
            self.cap_buckets[Self::bucket(c.site as usize, c.rank)].insert((c.price, seq));
        }
    }

    pub(super) fn unindex_cap(&mut self, seq: u32) {
        let c = &self.caps[seq as usize];
        let bucket = &mut self.cap_buckets[Self::bucket(c.site as usize, c.rank)];
        bucket.remove((c.price, seq));
        if bucket.first().is_none() {
            self.site_ranks[c.site as usize] &= !(1 << c.rank);
        }
    }

    /// The route by which `c` can serve `o`, if it is eligible (grade, cluster, time, price).
    /// Both are of this book's family, so the grade check is on ranks alone.
    pub(super) fn eligible<'n>(net: &'n Network, o: &Order, c: &Cap) -> Option<&'n Route> {
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
    pub(super) fn best_usable(&self, net: &Network, sc: &mut Scratch, seq: u32) -> Option<(u32, Candidate)> {
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
    pub(super) fn orders_for(&self, net: &Network, cseq: u32, seqs: &mut Vec<u32>) {
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
    pub(super) fn fill_order(&mut self, net: &Network, sc: &mut Scratch, seq: u32, decided_at: i64, out: &mut Vec<Decision>) -> bool {
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
    pub(super) fn status(&mut self, seq: u32, at: i64) -> Status {
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
