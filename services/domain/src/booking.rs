//! Booking allocations onto carriers' offers (contract v1.1, "Carriers'
//! offers"): pure and deterministic, no I/O. The same ordered input always
//! makes the same bookings, byte for byte, like matching.
//!
//! Each allocation is booked onto offers of its lane (capacity cluster to
//! order cluster) in the order the allocations come. An offer is eligible
//! when it is offered and not withdrawn, has room left, its window contains
//! the pick-up, and pick-up plus its transit is not after the order's
//! deadline. Eligible offers are taken by price ascending, then transit
//! ascending, then the order the offers came in; an allocation is split over
//! as many as it takes, and what none can carry stays unbooked, reported.
//!
//! Each lane keeps its open offers ranked (price, transit, arrival), so an
//! allocation walks them in rank order and stops once it is carried.
//!
//! Memory follows what is open (contract v1.1, "Duplicates and memory"):
//! each input comes with its log-append time; a repeated offer id or
//! allocation id is ignored within the dedup horizon, kept in two
//! generations of one horizon each, and an offer whose window ended a
//! horizon ago leaves its lane's book. A replay reading the same log times
//! decides the same.

use crate::topology::TransportMode;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

const HOUR_MS: i64 = 3_600_000;

/// A lane: from the capacity's cluster to the order's. Its Kafka key is
/// `<from>><to>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lane {
    pub from: String,
    pub to: String,
}

impl Lane {
    pub fn new(from: &str, to: &str) -> Lane {
        Lane { from: from.to_owned(), to: to.to_owned() }
    }

    /// The record key of the lane's offers.
    pub fn key(&self) -> String {
        format!("{}>{}", self.from, self.to)
    }
}

/// A carrier's offer of room on a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub offer_id: String,
    pub carrier_id: String,
    pub mode: TransportMode,
    pub lane: Lane,
    pub capacity_kg: i64,
    pub available_from: i64,
    pub available_until: i64,
    pub price_cny_per_t: i64,
    pub transit_hours: i64,
}

/// An allocation to carry: how much, on which lane, picked up when, due when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToBook {
    pub allocation_id: String,
    pub lane: Lane,
    pub quantity_kg: i64,
    pub pick_up: i64,
    pub deliver_by: i64,
}

/// What the booker reads, in one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Offered(Offer),
    /// The offer takes nothing more; what it carries already stands.
    Withdrawn { lane: Lane, offer_id: String },
    Allocation(ToBook),
}

/// What one input caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Part (or all) of an allocation on one offer.
    Booked(Booking),
    /// What no eligible offer could carry.
    Unbooked { allocation_id: String, lane: Lane, quantity_kg: i64 },
    /// Changed nothing, and why (a repeat, an unknown offer, nothing to carry).
    Ignored { reason: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub allocation_id: String,
    pub offer_id: String,
    pub carrier_id: String,
    pub mode: TransportMode,
    pub lane: Lane,
    pub quantity_kg: i64,
    pub pick_up: i64,
    /// Pick-up plus the offer's transit.
    pub arrival: i64,
    pub price_cny_per_t: i64,
}

/// Arrival of a pick-up at `pick_up` with `transit_hours`; saturates
/// instead of overflowing on absurd values (which never arrive in time).
fn arrival(pick_up: i64, transit_hours: i64) -> i64 {
    pick_up.saturating_add(transit_hours.saturating_mul(HOUR_MS))
}

/// Whether `o` may carry `a` at all, room aside.
pub fn eligible(o: &Offer, a: &ToBook) -> bool {
    o.lane == a.lane && o.available_from <= a.pick_up && a.pick_up <= o.available_until && arrival(a.pick_up, o.transit_hours) <= a.deliver_by
}

struct OfferState {
    offer: Offer,
    left_kg: i64,
}

/// (price, transit, arrival sequence): the order offers are taken in.
type Rank = (i64, i64, u64);

#[derive(Default)]
struct LaneBook {
    /// Open offers with room, by rank.
    ranked: BTreeSet<Rank>,
    by_seq: HashMap<u64, OfferState>,
}

/// The default dedup horizon: 7 days, as the matcher's.
pub const DEFAULT_HORIZON_MS: i64 = 7 * 24 * HOUR_MS;

/// Ids remembered for at least one horizon and at most two: the current
/// window's and the previous one's, windows counted in log time.
#[derive(Default)]
struct Generations {
    window: i64,
    current: HashSet<String>,
    previous: HashSet<String>,
}

impl Generations {
    fn contains(&self, id: &str) -> bool {
        self.current.contains(id) || self.previous.contains(id)
    }

    fn insert(&mut self, id: String) -> bool {
        !self.previous.contains(&id) && self.current.insert(id)
    }

    /// Moves to `window`; ids of windows before the previous one are forgotten.
    fn advance(&mut self, window: i64) {
        if window == self.window + 1 {
            self.previous = std::mem::take(&mut self.current);
        } else if window > self.window {
            self.previous.clear();
            self.current.clear();
        } else {
            return;
        }
        self.window = window;
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// The books of every lane.
pub struct Booker {
    lanes: BTreeMap<Lane, LaneBook>,
    /// Open offer id -> (lane, its arrival sequence): offers are named once.
    offers: HashMap<String, (Lane, u64)>,
    /// Ids of offers that left the books (full, withdrawn or ended), and of
    /// allocations booked, within the horizon.
    closed_offers: Generations,
    booked: Generations,
    seq: u64,
    horizon_ms: i64,
    /// The horizon window of the latest input's log time.
    window: Option<i64>,
}

impl Default for Booker {
    fn default() -> Self {
        Booker::with_horizon(DEFAULT_HORIZON_MS)
    }
}

impl Booker {
    pub fn new() -> Booker {
        Booker::default()
    }

    /// A booker whose dedup horizon is `horizon_ms` (at least 1 ms).
    pub fn with_horizon(horizon_ms: i64) -> Booker {
        Booker {
            lanes: BTreeMap::new(),
            offers: HashMap::new(),
            closed_offers: Generations::default(),
            booked: Generations::default(),
            seq: 0,
            horizon_ms: horizon_ms.max(1),
            window: None,
        }
    }

    /// Open offers, offer ids and allocation ids remembered: what memory holds.
    pub fn held(&self) -> (usize, usize, usize) {
        (self.lanes.values().map(|l| l.by_seq.len()).sum(), self.offers.len() + self.closed_offers.len(), self.booked.len())
    }

    /// Applies one input, read at log-append time `at_ms`; appends what it caused to `out`.
    pub fn apply(&mut self, input: &Input, at_ms: i64, out: &mut Vec<Output>) {
        let window = at_ms.div_euclid(self.horizon_ms);
        if self.window.is_none_or(|w| window > w) {
            self.window = Some(window);
            self.age(window, at_ms);
        }
        match input {
            Input::Offered(o) => self.offered(o, out),
            Input::Withdrawn { lane, offer_id } => self.withdrawn(lane, offer_id, out),
            Input::Allocation(a) => self.book(a, out),
        }
    }

    /// A new window: the id generations move on, and offers whose window
    /// ended more than a horizon before `at_ms` leave their lanes.
    fn age(&mut self, window: i64, at_ms: i64) {
        self.closed_offers.advance(window);
        self.booked.advance(window);
        let cutoff = at_ms.saturating_sub(self.horizon_ms);
        for book in self.lanes.values_mut() {
            let ended: Vec<u64> = book.by_seq.iter().filter(|(_, s)| s.offer.available_until < cutoff).map(|(seq, _)| *seq).collect();
            for seq in ended {
                let s = book.by_seq.remove(&seq).expect("listed");
                book.ranked.remove(&(s.offer.price_cny_per_t, s.offer.transit_hours, seq));
                self.offers.remove(&s.offer.offer_id);
                self.closed_offers.insert(s.offer.offer_id);
            }
        }
        self.lanes.retain(|_, b| !b.by_seq.is_empty());
    }

    /// An offer leaves the books (full or withdrawn); its id is remembered for the horizon.
    fn close(&mut self, offer_id: &str) {
        self.offers.remove(offer_id);
        self.closed_offers.insert(offer_id.to_owned());
    }

    fn offered(&mut self, o: &Offer, out: &mut Vec<Output>) {
        if self.offers.contains_key(&o.offer_id) || self.closed_offers.contains(&o.offer_id) {
            // The first offer of an id stands; a repeat (a producer's retry) changes nothing.
            return out.push(Output::Ignored { reason: "offer id already offered" });
        }
        if o.capacity_kg <= 0 {
            return out.push(Output::Ignored { reason: "offer has no room" });
        }
        self.seq += 1;
        let seq = self.seq;
        self.offers.insert(o.offer_id.clone(), (o.lane.clone(), seq));
        let lane = self.lanes.entry(o.lane.clone()).or_default();
        lane.ranked.insert((o.price_cny_per_t, o.transit_hours, seq));
        lane.by_seq.insert(seq, OfferState { offer: o.clone(), left_kg: o.capacity_kg });
    }

    fn withdrawn(&mut self, lane: &Lane, offer_id: &str, out: &mut Vec<Output>) {
        let Some((l, seq)) = self.offers.get(offer_id).cloned() else {
            let reason = if self.closed_offers.contains(offer_id) { "offer already withdrawn or full" } else { "withdrawal of an unknown offer" };
            return out.push(Output::Ignored { reason });
        };
        if &l != lane {
            return out.push(Output::Ignored { reason: "withdrawal names another lane than the offer's" });
        }
        if let Some(book) = self.lanes.get_mut(lane)
            && let Some(s) = book.by_seq.remove(&seq)
        {
            book.ranked.remove(&(s.offer.price_cny_per_t, s.offer.transit_hours, seq));
            if book.by_seq.is_empty() {
                self.lanes.remove(lane);
            }
        }
        self.close(offer_id);
    }

    fn book(&mut self, a: &ToBook, out: &mut Vec<Output>) {
        if a.quantity_kg <= 0 {
            return out.push(Output::Ignored { reason: "nothing to carry" });
        }
        if self.booked.contains(&a.allocation_id) || !self.booked.insert(a.allocation_id.clone()) {
            return out.push(Output::Ignored { reason: "allocation already booked" });
        }
        let mut need = a.quantity_kg;
        if let Some(book) = self.lanes.get_mut(&a.lane) {
            let mut full = Vec::new();
            for rank in &book.ranked {
                if need == 0 {
                    break;
                }
                let state = book.by_seq.get_mut(&rank.2).expect("ranked offers are held");
                if !eligible(&state.offer, a) {
                    continue;
                }
                let take = need.min(state.left_kg);
                state.left_kg -= take;
                need -= take;
                out.push(Output::Booked(Booking {
                    allocation_id: a.allocation_id.clone(),
                    offer_id: state.offer.offer_id.clone(),
                    carrier_id: state.offer.carrier_id.clone(),
                    mode: state.offer.mode,
                    lane: a.lane.clone(),
                    quantity_kg: take,
                    pick_up: a.pick_up,
                    arrival: arrival(a.pick_up, state.offer.transit_hours),
                    price_cny_per_t: state.offer.price_cny_per_t,
                }));
                if state.left_kg == 0 {
                    full.push(*rank);
                }
            }
            // A full offer leaves the ranking: it can carry nothing more.
            let mut closed = Vec::new();
            for rank in full {
                book.ranked.remove(&rank);
                if let Some(s) = book.by_seq.remove(&rank.2) {
                    closed.push(s.offer.offer_id);
                }
            }
            if book.by_seq.is_empty() {
                self.lanes.remove(&a.lane);
            }
            for id in closed {
                self.close(&id);
            }
        }
        if need > 0 {
            out.push(Output::Unbooked { allocation_id: a.allocation_id.clone(), lane: a.lane.clone(), quantity_kg: need });
        }
    }

    /// Room left on an offer (`None` once withdrawn, full or never offered).
    pub fn left_kg(&self, offer_id: &str) -> Option<i64> {
        let (lane, seq) = self.offers.get(offer_id)?;
        self.lanes.get(lane)?.by_seq.get(seq).map(|s| s.left_kg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_796_083_200_000;

    fn offer(id: &str, lane: &Lane, kg: i64, price: i64, transit: i64) -> Offer {
        Offer {
            offer_id: id.into(),
            carrier_id: "91450100MA5L0CAR1X".into(),
            mode: TransportMode::Road,
            lane: lane.clone(),
            capacity_kg: kg,
            available_from: T0,
            available_until: T0 + 10 * DAY,
            price_cny_per_t: price,
            transit_hours: transit,
        }
    }

    fn alloc(id: &str, lane: &Lane, kg: i64) -> ToBook {
        ToBook { allocation_id: id.into(), lane: lane.clone(), quantity_kg: kg, pick_up: T0 + DAY, deliver_by: T0 + 3 * DAY }
    }

    fn run(inputs: &[Input]) -> Vec<Output> {
        let mut b = Booker::new();
        let mut out = Vec::new();
        for i in inputs {
            b.apply(i, T0, &mut out);
        }
        out
    }

    fn booked(out: &[Output]) -> Vec<(String, String, i64)> {
        out.iter().filter_map(|o| if let Output::Booked(b) = o { Some((b.allocation_id.clone(), b.offer_id.clone(), b.quantity_kg)) } else { None }).collect()
    }

    /// Within the horizon a repeated allocation or offer id changes nothing;
    /// two horizons on (log time) the ids are forgotten and count as new.
    #[test]
    fn repeats_are_ignored_within_the_horizon_and_forgotten_after_two() {
        let lane = Lane::new("baise", "nanning");
        let mut b = Booker::with_horizon(DAY);
        let mut out = Vec::new();
        let far = |id: &str| Offer { available_until: T0 + 100 * DAY, ..offer(id, &lane, 1_000_000, 100, 8) };
        b.apply(&Input::Offered(far("O1")), T0, &mut out);
        b.apply(&Input::Allocation(alloc("A1", &lane, 10_000)), T0, &mut out);
        b.apply(&Input::Allocation(alloc("A1", &lane, 10_000)), T0 + DAY / 2, &mut out);
        b.apply(&Input::Withdrawn { lane: lane.clone(), offer_id: "O1".into() }, T0 + DAY, &mut out);
        b.apply(&Input::Offered(far("O1")), T0 + DAY + 1, &mut out);
        assert_eq!(booked(&out).len(), 1, "{out:?}");
        assert_eq!(out.iter().filter(|o| matches!(o, Output::Ignored { .. })).count(), 2, "the repeated allocation and the repeated offer: {out:?}");
        out.clear();
        b.apply(&Input::Offered(far("O1")), T0 + 3 * DAY, &mut out);
        b.apply(&Input::Allocation(alloc("A1", &lane, 10_000)), T0 + 3 * DAY, &mut out);
        assert_eq!(booked(&out), [("A1".into(), "O1".into(), 10_000)], "ids two horizons old are new again");
    }

    /// A year of offers and allocations, a horizon a day: what the booker
    /// holds follows what is open (offers of the last few days, ids of the
    /// last two horizons), not the year behind it.
    #[test]
    fn memory_follows_what_is_open_not_history() {
        let lane = Lane::new("hechi", "nanning");
        let mut b = Booker::with_horizon(DAY);
        let mut out = Vec::new();
        let mut peak = (0, 0, 0);
        for day in 0..365i64 {
            for n in 0..50i64 {
                let at = T0 + day * DAY + n * (DAY / 50);
                let o = Offer { available_from: at, available_until: at + 2 * DAY, ..offer(&format!("O-{day}-{n}"), &lane, 30_000, 100, 8) };
                b.apply(&Input::Offered(o), at, &mut out);
                let a = ToBook { pick_up: at + HOUR_MS, deliver_by: at + 3 * DAY, ..alloc(&format!("A-{day}-{n}"), &lane, 10_000) };
                b.apply(&Input::Allocation(a), at, &mut out);
                out.clear();
            }
            let h = b.held();
            if day >= 30 {
                peak = (peak.0.max(h.0), peak.1.max(h.1), peak.2.max(h.2));
            }
        }
        // 50 a day: open offers are those of the last four days (a two-day
        // window and the horizon after it); offer ids are theirs and those
        // closed in the last two horizons; allocation ids of two or three days.
        assert!(peak.0 <= 5 * 50 && peak.1 <= peak.0 + 3 * 50 && peak.2 <= 3 * 50, "held {peak:?}");
    }

    #[test]
    fn the_cheapest_then_fastest_offer_carries_first_and_a_large_allocation_is_split() {
        let lane = Lane::new("baise", "nanning");
        let out = run(&[
            Input::Offered(offer("slow-cheap", &lane, 20_000, 90, 30)),
            Input::Offered(offer("dear", &lane, 100_000, 120, 8)),
            Input::Offered(offer("fast-cheap", &lane, 20_000, 90, 8)),
            Input::Allocation(alloc("A1", &lane, 50_000)),
        ]);
        assert_eq!(booked(&out), [("A1".into(), "fast-cheap".into(), 20_000), ("A1".into(), "slow-cheap".into(), 20_000), ("A1".into(), "dear".into(), 10_000)]);
        assert_eq!(out.len(), 3, "all of it carried: {out:?}");
    }

    #[test]
    fn a_withdrawn_or_too_slow_offer_is_never_used_and_the_rest_stays_unbooked() {
        let lane = Lane::new("hechi", "nanning");
        let out = run(&[
            Input::Offered(offer("withdrawn", &lane, 100_000, 50, 10)),
            Input::Offered(offer("too-slow", &lane, 100_000, 60, 49)),
            Input::Offered(offer("ok", &lane, 30_000, 80, 20)),
            Input::Withdrawn { lane: lane.clone(), offer_id: "withdrawn".into() },
            Input::Allocation(alloc("A1", &lane, 45_000)),
        ]);
        assert_eq!(booked(&out), [("A1".into(), "ok".into(), 30_000)]);
        assert_eq!(out.last(), Some(&Output::Unbooked { allocation_id: "A1".into(), lane, quantity_kg: 15_000 }));
    }

    #[test]
    fn offers_of_another_lane_or_window_carry_nothing_and_a_repeat_books_nothing() {
        let lane = Lane::new("fangchenggang", "nanning");
        let other = Lane::new("baise", "nanning");
        let mut late = offer("later", &lane, 100_000, 10, 5);
        late.available_from = T0 + 2 * DAY;
        let out = run(&[
            Input::Offered(offer("elsewhere", &other, 100_000, 10, 5)),
            Input::Offered(late),
            Input::Offered(offer("sea", &lane, 100_000, 40, 5)),
            Input::Allocation(alloc("A1", &lane, 10_000)),
            Input::Allocation(alloc("A1", &lane, 10_000)),
        ]);
        assert_eq!(booked(&out), [("A1".into(), "sea".into(), 10_000)]);
        assert_eq!(out.last(), Some(&Output::Ignored { reason: "allocation already booked" }));
    }

    /// The reference: every offer in a list, ranked afresh for each
    /// allocation by sorting, nothing indexed.
    fn naive(inputs: &[Input]) -> Vec<Output> {
        struct O {
            offer: Offer,
            left: i64,
            withdrawn: bool,
        }
        let mut offers: Vec<O> = Vec::new();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for i in inputs {
            match i {
                Input::Offered(o) if o.capacity_kg > 0 && !offers.iter().any(|x| x.offer.offer_id == o.offer_id) => offers.push(O { offer: o.clone(), left: o.capacity_kg, withdrawn: false }),
                Input::Offered(_) => {}
                Input::Withdrawn { lane, offer_id } => {
                    if let Some(x) = offers.iter_mut().find(|x| &x.offer.offer_id == offer_id && &x.offer.lane == lane) {
                        x.withdrawn = true;
                    }
                }
                Input::Allocation(a) => {
                    if a.quantity_kg <= 0 || !seen.insert(a.allocation_id.clone()) {
                        continue;
                    }
                    let mut order: Vec<usize> = (0..offers.len()).filter(|&k| !offers[k].withdrawn && offers[k].left > 0 && eligible(&offers[k].offer, a)).collect();
                    order.sort_by_key(|&k| (offers[k].offer.price_cny_per_t, offers[k].offer.transit_hours, k));
                    let mut need = a.quantity_kg;
                    for k in order {
                        if need == 0 {
                            break;
                        }
                        let take = need.min(offers[k].left);
                        offers[k].left -= take;
                        need -= take;
                        let o = &offers[k].offer;
                        out.push(Output::Booked(Booking {
                            allocation_id: a.allocation_id.clone(),
                            offer_id: o.offer_id.clone(),
                            carrier_id: o.carrier_id.clone(),
                            mode: o.mode,
                            lane: a.lane.clone(),
                            quantity_kg: take,
                            pick_up: a.pick_up,
                            arrival: arrival(a.pick_up, o.transit_hours),
                            price_cny_per_t: o.price_cny_per_t,
                        }));
                    }
                    if need > 0 {
                        out.push(Output::Unbooked { allocation_id: a.allocation_id.clone(), lane: a.lane.clone(), quantity_kg: need });
                    }
                }
            }
        }
        out
    }

    fn lanes() -> Vec<Lane> {
        vec![Lane::new("baise", "nanning"), Lane::new("hechi", "nanning"), Lane::new("fangchenggang", "nanning")]
    }

    fn input() -> impl Strategy<Value = Input> {
        let lane = (0usize..3).prop_map(|k| lanes()[k].clone());
        prop_oneof![
            4 => (0u32..12, lane.clone(), 0i64..60_000, 50i64..200, 1i64..72, 0i64..5, 1i64..8).prop_map(|(id, lane, kg, price, transit, from, len)| Input::Offered(Offer {
                offer_id: format!("OFF-{id}"),
                carrier_id: format!("CAR-{}", id % 3),
                mode: TransportMode::ALL[id as usize % 4],
                lane,
                capacity_kg: kg,
                available_from: T0 + from * DAY,
                available_until: T0 + (from + len) * DAY,
                price_cny_per_t: price,
                transit_hours: transit,
            })),
            1 => (0u32..12, lane.clone()).prop_map(|(id, lane)| Input::Withdrawn { lane, offer_id: format!("OFF-{id}") }),
            5 => (0u32..40, lane, 0i64..80_000, 0i64..8, 0i64..96).prop_map(|(id, lane, kg, day, slack)| Input::Allocation(ToBook {
                allocation_id: format!("ALO-{id}"),
                lane,
                quantity_kg: kg,
                pick_up: T0 + day * DAY,
                deliver_by: T0 + day * DAY + slack * 3_600_000,
            })),
        ]
    }

    fn without_ignored(out: Vec<Output>) -> Vec<Output> {
        out.into_iter().filter(|o| !matches!(o, Output::Ignored { .. })).collect()
    }

    proptest! {
        #[test]
        fn bookings_equal_the_naive_reference(inputs in prop::collection::vec(input(), 0..120)) {
            prop_assert_eq!(without_ignored(run(&inputs)), naive(&inputs));
        }

        /// Nothing is over-booked, every allocation is accounted for, only
        /// eligible offers carry, and nothing carries after its withdrawal.
        #[test]
        fn nothing_is_over_booked_and_every_kilogram_is_booked_or_reported(inputs in prop::collection::vec(input(), 0..120)) {
            let mut offers: HashMap<String, Offer> = HashMap::new();
            let mut withdrawn_at: HashMap<String, usize> = HashMap::new();
            let mut carried: HashMap<String, i64> = HashMap::new();
            let mut per_alloc: HashMap<String, i64> = HashMap::new();
            let mut b = Booker::new();
            for (n, i) in inputs.iter().enumerate() {
                let mut o = Vec::new();
                b.apply(i, T0, &mut o);
                match i {
                    // An offer with no room is ignored, so a later one of its id stands.
                    Input::Offered(x) if x.capacity_kg > 0 => { offers.entry(x.offer_id.clone()).or_insert_with(|| x.clone()); }
                    Input::Offered(_) => {}
                    // A withdrawal counts once its offer is known, on its own lane.
                    Input::Withdrawn { offer_id, lane } if offers.get(offer_id).is_some_and(|x| &x.lane == lane) => { withdrawn_at.entry(offer_id.clone()).or_insert(n); }
                    Input::Withdrawn { .. } => {}
                    Input::Allocation(a) => {
                        for r in &o {
                            match r {
                                Output::Booked(k) => {
                                    let offer = &offers[&k.offer_id];
                                    prop_assert!(eligible(offer, a), "{k:?} on {offer:?}");
                                    prop_assert!(k.quantity_kg > 0);
                                    prop_assert!(!withdrawn_at.contains_key(&k.offer_id), "{k:?} after its withdrawal");
                                    *carried.entry(k.offer_id.clone()).or_default() += k.quantity_kg;
                                    prop_assert!(carried[&k.offer_id] <= offer.capacity_kg);
                                    *per_alloc.entry(a.allocation_id.clone()).or_default() += k.quantity_kg;
                                }
                                Output::Unbooked { quantity_kg, .. } => *per_alloc.entry(a.allocation_id.clone()).or_default() += quantity_kg,
                                Output::Ignored { .. } => {}
                            }
                        }
                        if !o.iter().any(|r| matches!(r, Output::Ignored { .. })) {
                            prop_assert_eq!(per_alloc.get(&a.allocation_id).copied().unwrap_or(0), a.quantity_kg);
                        }
                    }
                }
            }
        }
    }
}
