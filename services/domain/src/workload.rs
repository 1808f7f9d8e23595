//! Deterministic synthetic workloads for the engine's benchmarks: steady-state
//! books plus a stream of mixed events, held in memory (`steady_state`, for
//! the engine bench and the restore benchmark), and an endless stream with
//! bounded state and flat open books (`Soak`, for the long-run memory
//! benchmark). No randomness source: a small xorshift generator seeded by
//! the caller.

use crate::events::{CapacityEvent, CapacityKind, OrderEvent, OrderKind, Lookup, wire};
use std::collections::VecDeque;
use crate::matching::Input;
use crate::{Catalog, Topology};

const T0: i64 = 1_795_000_000_000;
const HOUR: i64 = 3_600_000;

pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Xorshift(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// (family, grades, home sites, price base CNY/t): Guangxi's metals at late-2026 price levels.
const FAMILIES: [(&str, &[&str], &[&str], i64); 6] = [
    ("AL-INGOT", &["AL99.70", "AL99.85", "AL99.90"], &["baise-pingguo-smelter", "baise-xinshan-processing", "nanning-jiangnan-processing"], 20_000),
    ("ZN-INGOT", &["ZN99.95", "ZN99.99", "ZN99.995"], &["hechi-jinchengjiang-smelter", "hechi-yizhou-processing"], 23_000),
    ("SN-INGOT", &["SN99.90", "SN99.95", "SN99.99"], &["hechi-dachang-tin", "hechi-yizhou-processing"], 260_000),
    ("CU-CATHODE", &["CU-CATH-2", "CU-CATH-1"], &["fcg-qisha-copper", "fcg-port", "fcg-copper-processing"], 72_000),
    ("PB-INGOT", &["PB99.970", "PB99.985", "PB99.994"], &["hechi-jinchengjiang-smelter", "hechi-yizhou-processing"], 16_500),
    ("SB-INGOT", &["SB99.65", "SB99.85", "SB99.90"], &["hechi-chehe-antimony", "hechi-yizhou-processing"], 150_000),
];

pub struct Workload {
    pub warm: Vec<Input>,
    pub stream: Vec<Input>,
}

/// `open` open orders and `open` open capacities in each of six families that cannot match
/// each other (order caps below every capacity's price), then `events` mixed
/// events: orders that fill from the cheap end, capacity that serves waiting
/// orders, cancellations and withdrawals.
pub fn steady_state(open: usize, events: usize, seed: u64) -> Workload {
    let (catalog, topology) = (Catalog::embedded(), Topology::embedded());
    let r = Lookup { catalog: &catalog, topology: &topology };
    let mut rng = Xorshift::new(seed);
    let cluster = |site: &str| topology.site(site).unwrap().cluster.as_ref().unwrap().to_string();
    let mut n = 0u64;
    let mut order = |rng: &mut Xorshift, f: usize, max_price: i64, kind: OrderKind, id: Option<String>| {
        let (family, grades, sites, _) = FAMILIES[f];
        n += 1;
        let dest = sites[rng.below(sites.len() as u64) as usize];
        let w = wire::OrderEvent {
            event_id: format!("e{n}"),
            event_time: T0 + n as i64,
            order_id: id.unwrap_or_else(|| format!("O{n}")),
            kind,
            cluster: cluster(dest),
            buyer_id: "91450100MA5L0ABC1X".into(),
            product_code: format!("{family}-{}", grades[rng.below(grades.len() as u64) as usize]),
            quantity_kg: (rng.below(20) as i64 + 1) * 25_000,
            deliver_by: T0 + (48 + rng.below(400) as i64) * HOUR,
            destination_site: dest.into(),
            max_price_cny_per_t: max_price,
            allow_cross_cluster: true,
        };
        Input::Order(OrderEvent::validate(&w, &r).expect("valid order"))
    };
    let mut m = 0u64;
    let mut capacity = |rng: &mut Xorshift, f: usize, price: i64, kind: CapacityKind, id: Option<String>| {
        let (family, grades, sites, _) = FAMILIES[f];
        m += 1;
        let site = sites[rng.below(sites.len() as u64) as usize];
        let w = wire::CapacityEvent {
            event_id: format!("c{m}"),
            event_time: T0 + m as i64,
            capacity_id: id.unwrap_or_else(|| format!("C{m}")),
            kind,
            cluster: cluster(site),
            provider_id: "91451000MA5L0PRV1Y".into(),
            site_id: site.into(),
            product_code: format!("{family}-{}", grades[rng.below(grades.len() as u64) as usize]),
            quantity_kg: (rng.below(40) as i64 + 1) * 50_000,
            available_from: T0,
            available_until: T0 + 2_000 * HOUR,
            price_cny_per_t: price,
            min_lot_kg: 25_000,
            energy_kwh_per_t: Some(12_800 + rng.below(1_500) as i64),
        };
        Input::Capacity(CapacityEvent::validate(&w, &r).expect("valid capacity"))
    };

    let mut warm = Vec::new();
    for (f, family) in FAMILIES.iter().enumerate() {
        let base = family.3;
        for _ in 0..open {
            // Waiting orders: caps far below the market.
            let p = base - 2_000 - rng.below(1_000) as i64;
            warm.push(order(&mut rng, f, p, OrderKind::Placed, None));
            // Waiting capacity: priced above the market.
            let p = base + 1_500 + rng.below(1_000) as i64;
            warm.push(capacity(&mut rng, f, p, CapacityKind::Declared, None));
        }
    }
    let mut stream = Vec::with_capacity(events);
    let mut placed: Vec<(usize, String)> = Vec::new();
    let mut declared: Vec<(usize, String)> = Vec::new();
    while stream.len() < events {
        let f = rng.below(FAMILIES.len() as u64) as usize;
        let base = FAMILIES[f].3;
        match rng.below(10) {
            // An order at the market: fills from market capacity if any is left.
            0..=3 => {
                let max = base + 400 + rng.below(600) as i64;
                let input = order(&mut rng, f, max, OrderKind::Placed, None);
                if let Input::Order(o) = &input {
                    placed.push((f, o.order_id.to_string()));
                }
                stream.push(input);
            }
            // Capacity at the market: serves market orders still waiting.
            4..=7 => {
                let price = base - 200 + rng.below(400) as i64;
                let input = capacity(&mut rng, f, price, CapacityKind::Declared, None);
                if let Input::Capacity(c) = &input {
                    declared.push((f, c.capacity_id.to_string()));
                }
                stream.push(input);
            }
            8 if !placed.is_empty() => {
                let (f, id) = placed.swap_remove(rng.below(placed.len() as u64) as usize);
                // A cancellation restates a price: the contract bounds every price.
                stream.push(order(&mut rng, f, base, OrderKind::Cancelled, Some(id)));
            }
            _ if !declared.is_empty() => {
                let (f, id) = declared.swap_remove(rng.below(declared.len() as u64) as usize);
                stream.push(capacity(&mut rng, f, base, CapacityKind::Withdrawn, Some(id)));
            }
            _ => {}
        }
    }
    Workload { warm, stream }
}

const DAY: i64 = 24 * HOUR;

/// An endless stream of valid market events, each with the log time it is
/// decided at, for runs long enough to pass the dedup horizon many times.
/// Its own state is bounded: what it must still end (cancellations and
/// withdrawals of what it placed `life` events ago) and the last 64 events
/// (some are sent again, as a producer retrying would). So the open books
/// stay flat too: an order not filled within `life` events is cancelled,
/// capacity is withdrawn after as long. Event time is the log time: events
/// arrive as they happen, one every `ms_per_event` of log time.
pub struct Soak {
    catalog: Catalog,
    topology: Topology,
    rng: Xorshift,
    start_ms: i64,
    ms_per_event: f64,
    life: u64,
    /// Events made so far; the next one's number.
    n: u64,
    /// Ids made so far (orders, capacities, their ends), for unique names.
    ids: u64,
    /// Ends of what was placed or declared, by the event number they are due at.
    ends: VecDeque<(u64, Input)>,
    recent: VecDeque<Input>,
}

impl Soak {
    /// `start_ms`: the first event's log time; `life`: events an order or
    /// capacity stays before it is ended (at least 1).
    pub fn new(seed: u64, start_ms: i64, ms_per_event: f64, life: u64) -> Soak {
        Soak {
            catalog: Catalog::embedded(),
            topology: Topology::embedded(),
            rng: Xorshift::new(seed),
            start_ms,
            ms_per_event,
            life: life.max(1),
            n: 0,
            ids: 0,
            ends: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    /// The log time of event number `n`.
    pub fn log_ms(&self, n: u64) -> i64 {
        self.start_ms + (n as f64 * self.ms_per_event) as i64
    }

    /// Events the generator holds to end later: what bounds its own memory.
    pub fn pending(&self) -> usize {
        self.ends.len() + self.recent.len()
    }

    fn cluster(&self, site: &str) -> String {
        self.topology.site(site).and_then(|s| s.cluster.as_ref()).expect("the workload's sites are in the embedded topology").to_string()
    }

    /// An order placed now (and its cancellation, due `life` events later).
    fn order(&mut self, now: i64) -> (Input, Input) {
        let f = self.rng.below(FAMILIES.len() as u64) as usize;
        let (family, grades, sites, base) = FAMILIES[f];
        self.ids += 1;
        let dest = sites[self.rng.below(sites.len() as u64) as usize];
        let mut w = wire::OrderEvent {
            event_id: format!("s{}", self.ids),
            event_time: now,
            order_id: format!("SO{}", self.ids),
            kind: OrderKind::Placed,
            cluster: self.cluster(dest),
            buyer_id: "91450100MA5L0ABC1X".into(),
            product_code: format!("{family}-{}", grades[self.rng.below(grades.len() as u64) as usize]),
            quantity_kg: (self.rng.below(40) as i64 + 1) * 25_000,
            deliver_by: now + (2 + self.rng.below(18) as i64) * DAY,
            destination_site: dest.into(),
            max_price_cny_per_t: base + 400 + self.rng.below(600) as i64,
            allow_cross_cluster: true,
        };
        let r = Lookup { catalog: &self.catalog, topology: &self.topology };
        let placed = Input::Order(OrderEvent::validate(&w, &r).expect("a valid order"));
        w.kind = OrderKind::Cancelled;
        w.event_id = format!("s{}x", self.ids);
        w.event_time = self.log_ms(self.n + self.life);
        (placed, Input::Order(OrderEvent::validate(&w, &r).expect("a valid cancellation")))
    }

    /// Capacity declared now (and its withdrawal, due `life` events later).
    fn capacity(&mut self, now: i64) -> (Input, Input) {
        let f = self.rng.below(FAMILIES.len() as u64) as usize;
        let (family, grades, sites, base) = FAMILIES[f];
        self.ids += 1;
        let site = sites[self.rng.below(sites.len() as u64) as usize];
        let mut w = wire::CapacityEvent {
            event_id: format!("s{}", self.ids),
            event_time: now,
            capacity_id: format!("SC{}", self.ids),
            kind: CapacityKind::Declared,
            cluster: self.cluster(site),
            provider_id: "91451000MA5L0PRV1Y".into(),
            site_id: site.into(),
            product_code: format!("{family}-{}", grades[self.rng.below(grades.len() as u64) as usize]),
            quantity_kg: (self.rng.below(20) as i64 + 1) * 50_000,
            available_from: now,
            available_until: now + (10 + self.rng.below(30) as i64) * DAY,
            price_cny_per_t: base - 200 + self.rng.below(400) as i64,
            min_lot_kg: 25_000,
            energy_kwh_per_t: Some(12_800 + self.rng.below(1_500) as i64),
        };
        let r = Lookup { catalog: &self.catalog, topology: &self.topology };
        let declared = Input::Capacity(CapacityEvent::validate(&w, &r).expect("a valid capacity"));
        w.kind = CapacityKind::Withdrawn;
        w.event_id = format!("s{}x", self.ids);
        w.event_time = self.log_ms(self.n + self.life);
        (declared, Input::Capacity(CapacityEvent::validate(&w, &r).expect("a valid withdrawal")))
    }
}

impl Iterator for Soak {
    /// An input and the log time it is decided at.
    type Item = (Input, i64);

    fn next(&mut self) -> Option<(Input, i64)> {
        let now = self.log_ms(self.n);
        let input = if self.ends.front().is_some_and(|(due, _)| *due <= self.n) {
            self.ends.pop_front().expect("a due end").1
        } else if !self.recent.is_empty() && self.rng.below(50) == 0 {
            // A repeat of a recent event: the engine ignores it.
            self.recent[self.rng.below(self.recent.len() as u64) as usize].clone()
        } else {
            let (start, end) = if self.rng.below(2) == 0 { self.order(now) } else { self.capacity(now) };
            self.ends.push_back((self.n + self.life, end));
            start
        };
        if self.recent.len() == 64 {
            self.recent.pop_front();
        }
        self.recent.push_back(input.clone());
        self.n += 1;
        Some((input, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soak_stream_is_deterministic_bounded_and_keeps_its_dates_ahead() {
        let a: Vec<(Input, i64)> = Soak::new(7, T0, 600.0, 1_000).take(5_000).collect();
        let b: Vec<(Input, i64)> = Soak::new(7, T0, 600.0, 1_000).take(5_000).collect();
        assert_eq!(a, b);
        let mut s = Soak::new(7, T0, 600.0, 1_000);
        let mut last = i64::MIN;
        for n in 0..20_000u64 {
            let (input, at) = s.next().unwrap();
            assert_eq!(at, T0 + (n as f64 * 600.0) as i64);
            assert!(at >= last);
            last = at;
            // Nothing the stream places can expire while it is open: its dates are after its end.
            match &input {
                Input::Order(o) if o.kind == OrderKind::Placed => assert!(o.deliver_by.0 > at + 1_000 * 600),
                Input::Capacity(c) if c.kind == CapacityKind::Declared => assert!(c.available_until.0 > at + 1_000 * 600),
                _ => {}
            }
            // Each start has one end pending, due within `life` events.
            assert!(s.pending() <= 1_000 + 1 + 64, "{} pending after {n}", s.pending());
        }
    }
}
