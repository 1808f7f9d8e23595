//! A deterministic synthetic workload for the engine's benchmarks and the
//! restore benchmark: steady-state books plus a stream of mixed events. No
//! randomness source: a small xorshift generator seeded by the caller.

use crate::events::{CapacityEvent, CapacityKind, OrderEvent, OrderKind, Lookup, wire};
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
