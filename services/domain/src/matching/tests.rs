//! Scenario and property tests of the matching engine.

use super::*;
use crate::events::{Lookup, wire};
use crate::topology::Topology;
use crate::{Catalog, TransportMode};
use proptest::prelude::*;
use rustc_hash::FxHashSet as HashSet;
use std::collections::BTreeMap;

const T0: i64 = 1_795_000_000_000;
const HOUR: i64 = 3_600_000;

struct World {
    catalog: Catalog,
    topology: Topology,
    net: Arc<Network>,
}

impl World {
    fn new() -> World {
        let topology = Topology::embedded();
        let net = Arc::new(Network::new(&topology));
        World { catalog: Catalog::embedded(), topology, net }
    }
    fn r(&self) -> Lookup<'_> {
        Lookup { catalog: &self.catalog, topology: &self.topology }
    }
    fn cluster_of(&self, site: &str) -> String {
        self.topology.site(site).unwrap().cluster.as_ref().unwrap().to_string()
    }
    #[allow(clippy::too_many_arguments)]
    fn order(&self, ev: &str, t: i64, id: &str, kind: OrderKind, product: &str, qty: i64, deliver_by: i64, dest: &str, max: i64, cross: bool) -> Input {
        let w = wire::OrderEvent {
            event_id: ev.into(),
            event_time: t,
            order_id: id.into(),
            kind,
            cluster: self.cluster_of(dest),
            buyer_id: "91450100MA5L0ABC1X".into(),
            product_code: product.into(),
            quantity_kg: qty,
            deliver_by,
            destination_site: dest.into(),
            max_price_cny_per_t: max,
            allow_cross_cluster: cross,
        };
        Input::Order(OrderEvent::validate(&w, &self.r()).unwrap())
    }
    #[allow(clippy::too_many_arguments)]
    fn capacity(&self, ev: &str, t: i64, id: &str, kind: CapacityKind, product: &str, site: &str, qty: i64, from: i64, until: i64, price: i64, min_lot: i64, energy: Option<i64>) -> Input {
        let w = wire::CapacityEvent {
            event_id: ev.into(),
            event_time: t,
            capacity_id: id.into(),
            kind,
            cluster: self.cluster_of(site),
            provider_id: "91451000MA5L0PRV1Y".into(),
            site_id: site.into(),
            product_code: product.into(),
            quantity_kg: qty,
            available_from: from,
            available_until: until,
            price_cny_per_t: price,
            min_lot_kg: min_lot,
            energy_kwh_per_t: energy,
        };
        Input::Capacity(CapacityEvent::validate(&w, &self.r()).unwrap())
    }
    #[allow(clippy::too_many_arguments)]
    fn share(&self, ev: &str, t: i64, kind: SharedOrderKind, order: &str, origin: &str, targets: &[&str], product: &str, deliver_by: i64, dest: &str) -> Input {
        let w = wire::SharedOrder {
            event_id: ev.into(),
            shared_at: t,
            kind,
            order_id: order.into(),
            origin_cluster: origin.into(),
            target_clusters: targets.iter().map(|s| s.to_string()).collect(),
            product_code: product.into(),
            remaining_kg: 1,
            deliver_by,
            destination_site: dest.into(),
            buyer_id: None,
            max_price_cny_per_t: None,
        };
        Input::Shared(Box::new(SharedOrder::validate(&w, &self.r()).unwrap()))
    }
}

fn allocations(out: &[Output]) -> Vec<&wire::Allocation> {
    out.iter()
        .filter_map(|o| match o {
            Output::Allocation(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn home_capacity_fills_an_order_with_explanation() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    let cap = w.capacity("c1", T0, "CAP-1", CapacityKind::Declared, "AL-INGOT-AL99.85", "baise-pingguo-smelter", 1_000_000, T0, T0 + 720 * HOUR, 20_100, 50_000, Some(13_200));
    assert!(allocations(&e.apply(&cap)).is_empty());
    let order = w.order("o1", T0 + 1, "ORD-1", OrderKind::Placed, "AL-INGOT-AL99.70", 300_000, T0 + 240 * HOUR, "baise-xinshan-processing", 20_800, false);
    let out = e.apply(&order);
    let a = allocations(&out);
    assert_eq!(a.len(), 1);
    let a = a[0];
    assert_eq!((a.quantity_kg, a.product_code.as_str(), a.price_cny_per_t), (300_000, "AL-INGOT-AL99.85", 20_100));
    assert_eq!(a.explanation.landed_cost_cny_per_t, 20_100 + a.freight_cny_per_t);
    assert!(a.explanation.home_cluster && a.explanation.rank == 1);
    assert_eq!(a.explanation.requested_product_code, "AL-INGOT-AL99.70");
    assert_eq!(a.decided_at, T0 + 1);
    // For booking: it leaves when both the capacity and the order are there, due by the order's deadline.
    assert_eq!((a.pick_up, a.deliver_by), (Some(T0 + 1), Some(T0 + 240 * HOUR)));
    assert!(a.explanation.summary.contains("baise-pingguo-smelter"), "{}", a.explanation.summary);
    assert_eq!(e.summary().open_orders, 0);
    assert_eq!(e.summary().open_capacity_kg, 700_000);
}

#[test]
fn lower_grades_never_fill_higher_orders() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    e.apply(&w.capacity("c1", T0, "CAP-1", CapacityKind::Declared, "AL-INGOT-AL99.70", "baise-pingguo-smelter", 1_000_000, T0, T0 + 720 * HOUR, 20_000, 0, None));
    let out = e.apply(&w.order("o1", T0 + 1, "ORD-1", OrderKind::Placed, "AL-INGOT-AL99.85", 100_000, T0 + 240 * HOUR, "baise-pingguo-smelter", 25_000, false));
    assert!(allocations(&out).is_empty());
}

#[test]
fn ranking_is_home_then_landed_then_energy_then_declaration() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    let until = T0 + 720 * HOUR;
    // Same site, same price: energy decides, unknown energy last, then declaration order.
    e.apply(&w.capacity("c1", T0, "CAP-NOENERGY", CapacityKind::Declared, "AL-INGOT-AL99.70", "nanning-jiangnan-processing", 100_000, T0, until, 20_000, 0, None));
    e.apply(&w.capacity("c2", T0, "CAP-HIGH", CapacityKind::Declared, "AL-INGOT-AL99.70", "nanning-jiangnan-processing", 100_000, T0, until, 20_000, 0, Some(13_900)));
    e.apply(&w.capacity("c3", T0, "CAP-LOW", CapacityKind::Declared, "AL-INGOT-AL99.70", "nanning-jiangnan-processing", 100_000, T0, until, 20_000, 0, Some(13_100)));
    e.apply(&w.capacity("c4", T0, "CAP-LOW-LATER", CapacityKind::Declared, "AL-INGOT-AL99.70", "nanning-jiangnan-processing", 100_000, T0, until, 20_000, 0, Some(13_100)));
    // Cheaper, but in another cluster: only reachable once shared, and ranked after home anyway.
    e.apply(&w.capacity("c5", T0, "CAP-BAISE", CapacityKind::Declared, "AL-INGOT-AL99.70", "baise-pingguo-smelter", 100_000, T0, until, 18_000, 0, Some(12_000)));
    let out = e.apply(&w.order("o1", T0 + 1, "ORD-1", OrderKind::Placed, "AL-INGOT-AL99.70", 500_000, T0 + 480 * HOUR, "nanning-jiangnan-processing", 21_000, true));
    let caps: Vec<&str> = allocations(&out).iter().map(|a| a.capacity_id.as_str()).collect();
    assert_eq!(caps, ["CAP-LOW", "CAP-LOW-LATER", "CAP-HIGH", "CAP-NOENERGY"]);
    // Now shared to Baise: the remaining 100 t come from there.
    let out = e.apply(&w.share("s1", T0 + 2, SharedOrderKind::Shared, "ORD-1", "nanning", &["baise"], "AL-INGOT-AL99.70", T0 + 480 * HOUR, "nanning-jiangnan-processing"));
    let a = allocations(&out);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].capacity_id.as_str(), a[0].capacity_cluster.as_str(), a[0].explanation.home_cluster), ("CAP-BAISE", "baise", false));
}

fn statuses(out: &[Output]) -> Vec<&wire::OrderStatus> {
    out.iter()
        .filter_map(|o| match o {
            Output::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn every_touched_order_is_reported_once_after_the_event() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    let until = T0 + 720 * HOUR;
    let out = e.apply(&w.order("o1", T0, "ORD-1", OrderKind::Placed, "AL-INGOT-AL99.70", 500_000, T0 + 480 * HOUR, "nanning-jiangnan-processing", 21_000, true));
    let s = statuses(&out);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].state, s[0].remaining_kg, s[0].allocated_kg, s[0].version), (OrderState::Open, 500_000, 0, 1));
    assert_eq!(s[0].event_id, "o1/ORD-1");
    assert!(s[0].shared_to.is_empty() && s[0].allow_cross_cluster);
    // Capacity fills part of it: one status, after the allocation.
    let out = e.apply(&w.capacity("c1", T0 + 1, "CAP-1", CapacityKind::Declared, "AL-INGOT-AL99.70", "nanning-jiangnan-processing", 200_000, T0, until, 20_000, 0, None));
    assert!(matches!(&out[..], [Output::Allocation(_), Output::Status(s)] if s.remaining_kg == 300_000 && s.allocated_kg == 200_000 && s.version == 2));
    // Shared to Baise, which has capacity: filled, and the status says where it was shared.
    e.apply(&w.capacity("c2", T0 + 2, "CAP-2", CapacityKind::Declared, "AL-INGOT-AL99.70", "baise-pingguo-smelter", 1_000_000, T0, until, 18_000, 0, None));
    let out = e.apply(&w.share("s1", T0 + 3, SharedOrderKind::Shared, "ORD-1", "nanning", &["baise", "hechi"], "AL-INGOT-AL99.70", T0 + 480 * HOUR, "nanning-jiangnan-processing"));
    let s = statuses(&out);
    assert_eq!((s[0].state, s[0].remaining_kg, s[0].allocated_kg), (OrderState::Filled, 0, 500_000));
    assert_eq!(s[0].shared_to, ["baise", "hechi"]);
    // A late share of the closed order is reported, so its publisher can withdraw it.
    let out = e.apply(&w.share("s2", T0 + 4, SharedOrderKind::Shared, "ORD-1", "nanning", &["fangchenggang"], "AL-INGOT-AL99.70", T0 + 480 * HOUR, "nanning-jiangnan-processing"));
    assert!(matches!(&statuses(&out)[..], [s] if s.state == OrderState::Filled && s.shared_to.contains(&"fangchenggang".to_string())));
    // Cancellation of another order.
    e.apply(&w.order("o2", T0 + 5, "ORD-2", OrderKind::Placed, "AL-INGOT-AL99.85", 100_000, T0 + 480 * HOUR, "nanning-jiangnan-processing", 10_000, false));
    let out = e.apply(&w.order("o3", T0 + 6, "ORD-2", OrderKind::Cancelled, "AL-INGOT-AL99.85", 0, T0 + 480 * HOUR, "nanning-jiangnan-processing", 10_000, false));
    assert!(matches!(&statuses(&out)[..], [s] if s.state == OrderState::Cancelled && s.remaining_kg == 0 && s.version == 2));
}

#[test]
fn an_order_that_does_not_allow_cross_cluster_is_never_opened_to_other_clusters() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    let until = T0 + 720 * HOUR;
    e.apply(&w.capacity("c1", T0, "CAP-BAISE", CapacityKind::Declared, "AL-INGOT-AL99.70", "baise-pingguo-smelter", 1_000_000, T0, until, 18_000, 0, None));
    // A share that arrives before its order, and one after: both refused.
    e.apply(&w.share("s0", T0, SharedOrderKind::Shared, "ORD-1", "nanning", &["baise"], "AL-INGOT-AL99.70", T0 + 480 * HOUR, "nanning-jiangnan-processing"));
    let out = e.apply(&w.order("o1", T0 + 1, "ORD-1", OrderKind::Placed, "AL-INGOT-AL99.70", 100_000, T0 + 480 * HOUR, "nanning-jiangnan-processing", 21_000, false));
    assert!(allocations(&out).is_empty());
    let out = e.apply(&w.share("s1", T0 + 2, SharedOrderKind::Shared, "ORD-1", "nanning", &["baise"], "AL-INGOT-AL99.70", T0 + 480 * HOUR, "nanning-jiangnan-processing"));
    assert!(matches!(&out[..], [Output::Ignored { reason, .. }] if reason.contains("does not allow")));
}

#[test]
fn min_lot_is_respected_unless_it_completes_the_order() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    let until = T0 + 720 * HOUR;
    let order = |ev: &str, t: i64, id: &str, qty: i64| w.order(ev, t, id, OrderKind::Placed, "CU-CATHODE-CU-CATH-2", qty, T0 + 240 * HOUR, "fcg-port", 80_000, false);
    e.apply(&w.capacity("c1", T0, "CAP-CHEAP", CapacityKind::Declared, "CU-CATHODE-CU-CATH-1", "fcg-qisha-copper", 300_000, T0, until, 60_000, 200_000, None));
    e.apply(&w.capacity("c2", T0, "CAP-DEAR", CapacityKind::Declared, "CU-CATHODE-CU-CATH-1", "fcg-qisha-copper", 2_000_000, T0, until, 70_000, 0, None));
    // 150 t is below CAP-CHEAP's 200 t lot, but it completes the order: allowed.
    let a = e.apply(&order("o1", T0 + 1, "ORD-1", 150_000));
    assert_eq!(allocations(&a).iter().map(|a| (a.capacity_id.as_str(), a.quantity_kg)).collect::<Vec<_>>(), [("CAP-CHEAP", 150_000)]);
    // CAP-CHEAP has 150 t left under a 200 t lot: it cannot part-fill 950 t, so the dearer one does it all.
    let a = e.apply(&order("o2", T0 + 2, "ORD-2", 950_000));
    let got: Vec<_> = allocations(&a).iter().map(|a| (a.capacity_id.as_str(), a.quantity_kg, a.explanation.rank)).collect();
    assert_eq!(got, [("CAP-DEAR", 950_000, 2)]);
    // 120 t completes an order from the 150 t left: the cheaper one again, ranked first.
    let a = e.apply(&order("o3", T0 + 3, "ORD-3", 120_000));
    assert_eq!(allocations(&a).iter().map(|a| (a.capacity_id.as_str(), a.quantity_kg)).collect::<Vec<_>>(), [("CAP-CHEAP", 120_000)]);
}

#[test]
fn new_capacity_serves_orders_first_come_first_served() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    for (i, q) in [(1, 300_000), (2, 300_000), (3, 300_000)] {
        e.apply(&w.order(&format!("o{i}"), T0 + i, &format!("ORD-{i}"), OrderKind::Placed, "SN-INGOT-SN99.90", q, T0 + 240 * HOUR, "hechi-yizhou-processing", 260_000, false));
    }
    e.apply(&w.order("o9", T0 + 9, "ORD-9", OrderKind::Cancelled, "SN-INGOT-SN99.90", 0, T0 + 240 * HOUR, "hechi-yizhou-processing", 260_000, false));
    e.apply(&w.order("o2c", T0 + 10, "ORD-2", OrderKind::Cancelled, "SN-INGOT-SN99.90", 0, T0 + 240 * HOUR, "hechi-yizhou-processing", 260_000, false));
    let out = e.apply(&w.capacity("c1", T0 + 11, "CAP-TIN", CapacityKind::Declared, "SN-INGOT-SN99.99", "hechi-dachang-tin", 450_000, T0, T0 + 720 * HOUR, 250_000, 0, None));
    let got: Vec<(&str, i64)> = allocations(&out).iter().map(|a| (a.order_id.as_str(), a.quantity_kg)).collect();
    assert_eq!(got, [("ORD-1", 300_000), ("ORD-3", 150_000)]);
}

#[test]
fn deadlines_pick_the_mode_and_can_exclude() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    e.apply(&w.capacity("c1", T0, "CAP-1", CapacityKind::Declared, "AL-INGOT-AL99.70", "baise-pingguo-smelter", 1_000_000, T0, T0 + 720 * HOUR, 20_000, 0, None));
    let shared = |ev: &str, id: &str| w.share(ev, T0 + 1, SharedOrderKind::Shared, id, "nanning", &["baise"], "AL-INGOT-AL99.70", T0, "nanning-niuwan-port");
    e.apply(&shared("s1", "ORD-SLOW"));
    e.apply(&shared("s2", "ORD-FAST"));
    e.apply(&shared("s3", "ORD-NOW"));
    let slow = e.apply(&w.order("o1", T0 + 2, "ORD-SLOW", OrderKind::Placed, "AL-INGOT-AL99.70", 100_000, T0 + 400 * HOUR, "nanning-niuwan-port", 22_000, true));
    assert_eq!(allocations(&slow)[0].explanation.mode, TransportMode::River);
    let fast = e.apply(&w.order("o2", T0 + 3, "ORD-FAST", OrderKind::Placed, "AL-INGOT-AL99.70", 100_000, T0 + 12 * HOUR, "nanning-niuwan-port", 22_000, true));
    assert_eq!(allocations(&fast)[0].explanation.mode, TransportMode::Road);
    let none = e.apply(&w.order("o3", T0 + 4, "ORD-NOW", OrderKind::Placed, "AL-INGOT-AL99.70", 100_000, T0 + HOUR, "nanning-niuwan-port", 22_000, true));
    assert!(allocations(&none).is_empty());
}

#[test]
fn duplicates_and_unknowns_are_ignored_with_a_reason() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    let c = w.capacity("c1", T0, "CAP-1", CapacityKind::Declared, "ZN-INGOT-ZN99.995", "hechi-jinchengjiang-smelter", 100_000, T0, T0 + 720 * HOUR, 23_000, 0, None);
    e.apply(&c);
    assert!(matches!(&e.apply(&c)[..], [Output::Ignored { reason, .. }] if reason == "duplicate event_id"));
    let amend = w.order("a1", T0 + 1, "ORD-X", OrderKind::Amended, "ZN-INGOT-ZN99.995", 5, T0 + HOUR, "hechi-yizhou-processing", 1, false);
    assert!(matches!(&e.apply(&amend)[..], [Output::Ignored { .. }]));
}

// ---------------------------------------------------------------------------
// Property tests: random event sequences against a naive reference matcher.

#[derive(Debug, Clone)]
enum Op {
    Place { o: u8, cu: bool, grade: u8, site: u8, qty: u8, price: u16, slack_h: u16, cross: bool },
    Amend { o: u8, qty: u8, slack_h: u16 },
    Cancel { o: u8 },
    Declare { c: u8, cu: bool, grade: u8, site: u8, qty: u8, price: u16, min_lot: u8, energy: Option<u16>, from_h: u8, window_h: u16 },
    Withdraw { c: u8 },
    Share { o: u8, targets: u8, withdraw: bool },
    Duplicate { back: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>(), 1u16..400, any::<bool>())
            .prop_map(|(o, cu, grade, site, qty, price, slack_h, cross)| Op::Place { o: o % 12, cu, grade, site, qty, price, slack_h, cross }),
        1 => (any::<u8>(), any::<u8>(), 1u16..400).prop_map(|(o, qty, slack_h)| Op::Amend { o: o % 12, qty, slack_h }),
        1 => any::<u8>().prop_map(|o| Op::Cancel { o: o % 12 }),
        4 => (any::<u8>(), any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>(), any::<u8>(), proptest::option::of(12_000u16..15_000), any::<u8>(), 1u16..600)
            .prop_map(|(c, cu, grade, site, qty, price, min_lot, energy, from_h, window_h)| Op::Declare { c: c % 12, cu, grade, site, qty, price, min_lot, energy, from_h: from_h % 96, window_h }),
        1 => any::<u8>().prop_map(|c| Op::Withdraw { c: c % 12 }),
        2 => (any::<u8>(), 1u8..16, any::<bool>()).prop_map(|(o, targets, withdraw)| Op::Share { o: o % 12, targets, withdraw }),
        1 => any::<u8>().prop_map(|back| Op::Duplicate { back }),
    ]
}

const SITES: [&str; 7] = [
    "baise-pingguo-smelter",
    "baise-xinshan-processing",
    "hechi-jinchengjiang-smelter",
    "fcg-qisha-copper",
    "fcg-port",
    "nanning-niuwan-port",
    "nanning-jiangnan-processing",
];
const CLUSTERS: [&str; 4] = ["baise", "hechi", "fangchenggang", "nanning"];

/// Turns ops into valid inputs; orders and capacities keep their fields for amendments.
fn build(w: &World, ops: &[Op]) -> Vec<Input> {
    let mut inputs: Vec<Input> = Vec::new();
    let mut orders: BTreeMap<u8, (String, String, i64, bool)> = BTreeMap::new(); // product, dest, max, cross
    let mut caps: BTreeMap<u8, Input> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let t = T0 + i as i64 * 60_000;
        let ev = format!("ev-{i}");
        let family = |cu: bool, grade: u8| {
            if cu {
                ["CU-CATHODE-CU-CATH-2", "CU-CATHODE-CU-CATH-1"][grade as usize % 2].to_string()
            } else {
                ["AL-INGOT-AL99.50", "AL-INGOT-AL99.70", "AL-INGOT-AL99.85", "AL-INGOT-AL99.90"][grade as usize % 4].to_string()
            }
        };
        // Copper prices sit at the contract's top bound (1e9 CNY/t), the
        // largest the price indexes ever pack into their keys.
        let base = |cu: bool| if cu { crate::quantity::bounds::MAX_PRICE - 1_000 } else { 20_000 };
        let input = match op {
            Op::Place { o, cu, grade, site, qty, price, slack_h, cross } => {
                let product = family(*cu, *grade);
                let dest = SITES[*site as usize % SITES.len()];
                let max = base(*cu) + (*price % 900) as i64;
                let id = format!("ORD-{o}");
                orders.entry(*o).or_insert((product.clone(), dest.to_string(), max, *cross));
                let (product, dest, max, cross) = orders[o].clone();
                w.order(&ev, t, &id, OrderKind::Placed, &product, (*qty as i64 % 40 + 1) * 10_000, t + *slack_h as i64 * HOUR, &dest, max, cross)
            }
            Op::Amend { o, qty, slack_h } => {
                let Some((product, dest, max, cross)) = orders.get(o).cloned() else { continue };
                w.order(&ev, t, &format!("ORD-{o}"), OrderKind::Amended, &product, (*qty as i64 % 40 + 1) * 10_000, t + *slack_h as i64 * HOUR, &dest, max, cross)
            }
            Op::Cancel { o } => {
                let Some((product, dest, max, cross)) = orders.get(o).cloned() else { continue };
                w.order(&ev, t, &format!("ORD-{o}"), OrderKind::Cancelled, &product, 0, t + HOUR, &dest, max, cross)
            }
            Op::Declare { c, cu, grade, site, qty, price, min_lot, energy, from_h, window_h } => {
                let product = family(*cu, *grade);
                let site = SITES[*site as usize % SITES.len()];
                let price = base(*cu) - 200 + (*price % 700) as i64;
                let from = t + *from_h as i64 * HOUR;
                let qty = (*qty as i64 % 60 + 1) * 10_000;
                let lot = ((*min_lot as i64 % 8) * 10_000).min(qty);
                let cap = w.capacity(&ev, t, &format!("CAP-{c}"), CapacityKind::Declared, &product, site, qty, from, from + *window_h as i64 * HOUR, price, lot, energy.map(|e| e as i64));
                caps.entry(*c).or_insert(cap.clone());
                cap
            }
            Op::Withdraw { c } => {
                let Some(Input::Capacity(cap)) = caps.get(c) else { continue };
                let mut w2 = cap.to_wire();
                w2.event_id = ev.clone();
                w2.event_time = t;
                w2.kind = CapacityKind::Withdrawn;
                Input::Capacity(CapacityEvent::validate(&w2, &w.r()).unwrap())
            }
            Op::Share { o, targets, withdraw } => {
                let Some((product, dest, _, cross)) = orders.get(o).cloned() else { continue };
                if !cross {
                    continue;
                }
                let origin = w.cluster_of(&dest);
                let targets: Vec<&str> = CLUSTERS.iter().enumerate().filter(|(i, c)| targets & (1 << i) != 0 && **c != origin).map(|(_, c)| *c).collect();
                if targets.is_empty() {
                    continue;
                }
                let kind = if *withdraw { SharedOrderKind::Withdrawn } else { SharedOrderKind::Shared };
                w.share(&ev, t, kind, &format!("ORD-{o}"), &origin, &targets, &product, t, &dest)
            }
            Op::Duplicate { back } => {
                if inputs.is_empty() {
                    continue;
                }
                inputs[inputs.len() - 1 - (*back as usize % inputs.len())].clone()
            }
        };
        inputs.push(input);
    }
    inputs
}

/// The rules written the slow, obvious way: after every event, every open order
/// in arrival order takes its best usable capacity until none is left.
fn reference(net: &Network, inputs: &[Input]) -> Vec<(String, String, i64, i64, i64, i32)> {
    let mut books: BTreeMap<String, Book> = BTreeMap::new();
    let mut seen = HashSet::default();
    let mut out = Vec::new();
    for input in inputs {
        if !seen.insert(input.event_id().clone()) {
            continue;
        }
        let book = books.entry(input.family().to_owned()).or_insert_with(|| Book::new(net));
        let now = input.time();
        // State changes, no matching.
        match input {
            Input::Order(o) => match o.kind {
                OrderKind::Placed if book.order_seq(o.order_id.as_str()).is_none() => {
                    let (home, dest) = (net.cluster_index(o.cluster.as_str()).unwrap(), net.site_index(o.destination_site.as_str()).unwrap());
                    book.push_order(o, hash_id(o.order_id.as_str()), home, dest);
                }
                OrderKind::Amended => {
                    if let Some(seq) = book.open_order(&o.order_id) {
                        let ord = &mut book.orders[seq as usize];
                        ord.remaining = o.quantity.get();
                        ord.deliver_by = o.deliver_by.0;
                        ord.open = ord.remaining > 0;
                    }
                }
                OrderKind::Cancelled => {
                    if let Some(seq) = book.open_order(&o.order_id) {
                        book.orders[seq as usize].open = false;
                    }
                }
                _ => {}
            },
            Input::Capacity(c) => match c.kind {
                CapacityKind::Declared if book.cap_seq(c.capacity_id.as_str()).is_none() => {
                    book.push_cap(c, hash_id(c.capacity_id.as_str()), net.cluster_index(c.cluster.as_str()).unwrap(), net.site_index(c.site_id.as_str()).unwrap());
                }
                CapacityKind::Withdrawn => {
                    if let Some(seq) = book.cap_seq(c.capacity_id.as_str()) {
                        book.caps[seq as usize].open = false;
                    }
                }
                _ => {}
            },
            Input::Shared(s) => {
                let mask = s.target_clusters.iter().filter_map(|c| net.cluster_index(c.as_str())).fold(0u64, |m, c| m | (1 << c));
                match (s.kind, book.order_seq(s.order_id.as_str())) {
                    (SharedOrderKind::Shared, None) => book.pending_shares.entry(s.order_id.clone()).or_default().mask |= mask,
                    (SharedOrderKind::Withdrawn, None) => {
                        if let Some(w) = book.pending_shares.get_mut(&s.order_id) {
                            w.mask &= !mask;
                        }
                    }
                    (kind, Some(seq)) if book.orders[seq as usize].open => {
                        let ord = &mut book.orders[seq as usize];
                        ord.visible = match kind {
                            SharedOrderKind::Shared => ord.visible | mask,
                            SharedOrderKind::Withdrawn => (ord.visible & !mask) | (1 << ord.home),
                        };
                    }
                    _ => {}
                }
            }
        }
        // Global re-match, brute force over every capacity.
        for seq in 0..book.orders.len() {
            loop {
                let o = &book.orders[seq];
                let mut cands: Vec<(RankKey, usize, Route)> = book
                    .caps
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        let r = Book::eligible(net, o, c)?;
                        let landed = c.price + r.freight_cny_per_t as u64;
                        Some(((c.cluster != o.home, landed, (c.energy.is_none(), c.energy.unwrap_or(0)), i as u32), i, *r))
                    })
                    .collect();
                cands.sort_by_key(|c| c.0);
                let pick = cands.iter().enumerate().find(|(_, (_, i, _))| {
                    let q = o.remaining.min(book.caps[*i].remaining);
                    q >= book.caps[*i].min_lot || q == o.remaining
                });
                let Some((pos, (_, ci, route))) = pick else { break };
                let q = o.remaining.min(book.caps[*ci].remaining);
                out.push((o.id.to_string(), book.caps[*ci].id.to_string(), q as i64, route.freight_cny_per_t as i64, now, pos as i32 + 1));
                let ci = *ci;
                book.caps[ci].remaining -= q;
                let o = &mut book.orders[seq];
                o.remaining -= q;
                if o.remaining == 0 {
                    o.open = false;
                }
            }
        }
    }
    out
}

fn run(net: &Arc<Network>, inputs: &[Input]) -> Vec<Output> {
    let mut e = Engine::new(net.clone());
    inputs.iter().flat_map(|i| e.apply(i)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn engine_equals_the_naive_reference(ops in proptest::collection::vec(op(), 1..80)) {
        let w = World::new();
        let inputs = build(&w, &ops);
        let got: Vec<_> = allocations(&run(&w.net, &inputs)).iter().map(|a| (
            a.order_id.clone(), a.capacity_id.clone(), a.quantity_kg, a.freight_cny_per_t, a.decided_at, a.explanation.rank,
        )).collect();
        prop_assert_eq!(got, reference(&w.net, &inputs));
    }

    #[test]
    fn invariants_hold(ops in proptest::collection::vec(op(), 1..80)) {
        let w = World::new();
        let inputs = build(&w, &ops);
        let mut e = Engine::new(w.net.clone());
        let mut seen = HashSet::default();
        // Ids are scoped by family: each family's book is matched on its own partition.
        let mut order_left: HashMap<(String, String), i64> = HashMap::default();
        let mut cap_left: HashMap<(String, String), (i64, i64, ProductCode)> = HashMap::default();
        let mut closed: HashSet<(String, String)> = HashSet::default();
        let k = |family: &str, id: &str| (family.to_owned(), id.to_owned());
        for input in &inputs {
            let fresh = seen.insert(input.event_id().clone());
            // The shadow books change first: a placement allocates to its own order at once.
            if fresh {
                match input {
                    Input::Order(o) if o.kind == OrderKind::Placed => { order_left.entry(k(input.family(), o.order_id.as_str())).or_insert(o.quantity.to_wire()); }
                    Input::Order(o) if o.kind == OrderKind::Amended => {
                        let key = k(input.family(), o.order_id.as_str());
                        if !closed.contains(&key) && let Some(l) = order_left.get_mut(&key) && *l > 0 {
                            *l = o.quantity.to_wire();
                        }
                    }
                    Input::Order(o) => { closed.insert(k(input.family(), o.order_id.as_str())); }
                    Input::Capacity(c) if c.kind == CapacityKind::Declared => {
                        cap_left.entry(k(input.family(), c.capacity_id.as_str())).or_insert((c.quantity.to_wire(), c.min_lot.to_wire(), c.product.clone()));
                    }
                    Input::Capacity(c) => { closed.insert(k(input.family(), c.capacity_id.as_str())); }
                    Input::Shared(_) => {}
                }
            }
            let out = e.apply(input);
            if !fresh {
                prop_assert!(allocations(&out).is_empty(), "a duplicate allocated");
                prop_assert!(statuses(&out).is_empty(), "a duplicate reported a status");
            }
            for a in allocations(&out) {
                let (ok, ck) = (k(input.family(), &a.order_id), k(input.family(), &a.capacity_id));
                prop_assert!(!closed.contains(&ok) && !closed.contains(&ck), "fill after cancel/withdraw: {a:?}");
                let left = order_left.get_mut(&ok).expect("allocation for a known order");
                *left -= a.quantity_kg;
                prop_assert!(*left >= 0, "order over-allocated: {a:?}");
                let (cleft, lot, product) = cap_left.get_mut(&ck).expect("known capacity");
                *cleft -= a.quantity_kg;
                prop_assert!(*cleft >= 0, "capacity over-allocated: {a:?}");
                prop_assert!(a.quantity_kg >= *lot || *left == 0, "below min lot without completing: {a:?}");
                let requested = w.catalog.parse(&a.explanation.requested_product_code).unwrap();
                prop_assert!(product.can_fill(&requested), "grade substituted downwards or across families: {a:?}");
                prop_assert_eq!(a.landed_cost(), a.price_cny_per_t + a.freight_cny_per_t);
            }
            // Statuses come last, one per touched order, and agree with the shadow books.
            let first_status = out.iter().position(|o| matches!(o, Output::Status(_))).unwrap_or(out.len());
            prop_assert!(out[first_status..].iter().all(|o| matches!(o, Output::Status(_))), "status before an allocation");
            let reported: HashSet<String> = statuses(&out).iter().map(|s| s.order_id.clone()).collect();
            prop_assert_eq!(reported.len(), statuses(&out).len(), "an order reported twice for one event");
            for a in allocations(&out) {
                prop_assert!(reported.contains(&a.order_id), "allocated order without a status: {}", a.order_id);
            }
            for s in statuses(&out) {
                let key = k(input.family(), &s.order_id);
                let left = order_left[&key];
                match s.state {
                    OrderState::Open => prop_assert_eq!(s.remaining_kg, left, "open remainder differs"),
                    OrderState::Filled => prop_assert_eq!(left, 0, "filled with a remainder"),
                    OrderState::Cancelled => prop_assert!(closed.contains(&key), "cancelled without a cancel"),
                }
                prop_assert!(!s.shared_to.contains(&s.cluster), "home listed as shared");
            }
        }
    }

    /// Values at the contract's bounds (10 Mt, 1e9 CNY/t, 1e6 kWh/t, the last
    /// days before 2100): the engine neither panics nor over-allocates.
    #[test]
    fn the_engine_holds_at_the_bounds(events in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), 0usize..7, 0u8..4), 1..40)) {
        use crate::quantity::bounds::{MAX_ENERGY, MAX_KG, MAX_MILLIS, MAX_PRICE};
        let w = World::new();
        let mut e = Engine::new(w.net.clone());
        let t0 = MAX_MILLIS - 1_000 * HOUR;
        let (mut order_left, mut cap_left): (HashMap<String, i64>, HashMap<String, i64>) = Default::default();
        let mut order_cap: HashMap<String, i64> = HashMap::default();
        for (i, (is_order, big, dear, site, edge)) in events.into_iter().enumerate() {
            let t = t0 + i as i64 * HOUR;
            let qty = if big { MAX_KG } else { 1 + edge as i64 };
            let price = if dear { MAX_PRICE } else { 1 };
            let site = SITES[site];
            let input = if is_order {
                order_left.insert(format!("O{i}"), qty);
                order_cap.insert(format!("O{i}"), price);
                w.order(&format!("e{i}"), t, &format!("O{i}"), OrderKind::Placed, "AL-INGOT-AL99.70", qty, MAX_MILLIS - 1, site, price, edge % 2 == 0)
            } else {
                cap_left.insert(format!("C{i}"), qty);
                let energy = [None, Some(0), Some(MAX_ENERGY), Some(13_000)][edge as usize];
                w.capacity(&format!("e{i}"), t, &format!("C{i}"), CapacityKind::Declared, "AL-INGOT-AL99.90", site, qty, t, MAX_MILLIS - 1, price, qty.min(25_000), energy)
            };
            for a in allocations(&e.apply(&input)) {
                let o = order_left.get_mut(&a.order_id).expect("a known order");
                *o -= a.quantity_kg;
                let c = cap_left.get_mut(&a.capacity_id).expect("a known capacity");
                *c -= a.quantity_kg;
                prop_assert!(*o >= 0 && *c >= 0, "over-allocated: {a:?}");
                prop_assert!(a.landed_cost() <= order_cap[&a.order_id], "over the order's price cap: {a:?}");
            }
        }
    }

    #[test]
    fn status_versions_count_up_per_order(ops in proptest::collection::vec(op(), 1..80)) {
        let w = World::new();
        let mut last: HashMap<(String, String), i32> = HashMap::default();
        for o in run(&w.net, &build(&w, &ops)) {
            if let Output::Status(s) = o {
                let family = s.product_code.split('-').next().unwrap().to_owned();
                let v = last.entry((family, s.order_id.clone())).or_insert(0);
                prop_assert_eq!(s.version, *v + 1);
                *v = s.version;
            }
        }
    }

    #[test]
    fn replay_gives_identical_output(ops in proptest::collection::vec(op(), 1..60)) {
        let w = World::new();
        let inputs = build(&w, &ops);
        prop_assert_eq!(run(&w.net, &inputs), run(&w.net, &inputs));
    }

    #[test]
    fn prefetching_ahead_changes_nothing(ops in proptest::collection::vec(op(), 1..60), ahead in 0usize..10) {
        let w = World::new();
        let inputs = build(&w, &ops);
        let mut e = Engine::new(w.net.clone());
        let mut prefetched = Vec::new();
        // The first events meet no book, then books with empty tables.
        for (n, input) in inputs.iter().enumerate() {
            if let Some(next) = inputs.get(n + ahead) {
                e.prefetch(next);
            }
            prefetched.extend(e.apply(input));
        }
        prop_assert_eq!(prefetched, run(&w.net, &inputs));
    }

    #[test]
    fn duplicates_change_nothing(ops in proptest::collection::vec(op(), 1..60), dup_every in 1usize..5) {
        let w = World::new();
        let inputs = build(&w, &ops);
        let mut with_dups = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            with_dups.push(input.clone());
            if i % dup_every == 0 { with_dups.push(input.clone()); }
        }
        let plain: Vec<wire::Allocation> = allocations(&run(&w.net, &inputs)).into_iter().cloned().collect();
        let dup: Vec<wire::Allocation> = allocations(&run(&w.net, &with_dups)).into_iter().cloned().collect();
        prop_assert_eq!(plain, dup);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A snapshot taken anywhere in a sequence and loaded continues it as
    /// the engine it came from does: the same outputs, the same state.
    #[test]
    fn a_snapshot_continues_exactly(ops in proptest::collection::vec(op(), 1..80), cut in any::<proptest::sample::Index>()) {
        let w = World::new();
        let inputs = build(&w, &ops);
        let k = cut.index(inputs.len() + 1);
        let mut whole = Engine::new(w.net.clone());
        for i in &inputs[..k] {
            whole.apply(i);
        }
        let snap = whole.snapshot();
        let mut loaded = Engine::from_snapshot(w.net.clone(), &snap).unwrap();
        prop_assert_eq!(&loaded.snapshot(), &snap, "loading and saving again changed the bytes");
        prop_assert_eq!(loaded.summary(), whole.summary());
        for i in &inputs[k..] {
            prop_assert_eq!(loaded.apply(i), whole.apply(i), "diverged at {:?}", i.event_id());
        }
        prop_assert_eq!(loaded.snapshot(), whole.snapshot());
    }

    /// Every strict prefix of a snapshot is refused, and damaged bytes are
    /// refused or loaded, never a panic.
    #[test]
    fn a_damaged_snapshot_is_refused(ops in proptest::collection::vec(op(), 1..40), cut in any::<proptest::sample::Index>(), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
        let w = World::new();
        let mut e = Engine::new(w.net.clone());
        for i in &build(&w, &ops) {
            e.apply(i);
        }
        let snap = e.snapshot();
        let n = cut.index(snap.len());
        prop_assert!(Engine::from_snapshot(w.net.clone(), &snap[..n]).is_err(), "a prefix of {} of {} bytes loaded", n, snap.len());
        let mut flipped = snap.clone();
        flipped[at.index(snap.len())] ^= 1 << bit;
        let _ = Engine::from_snapshot(w.net.clone(), &flipped);
    }
}

/// The random sequences share placed orders only; a share that comes
/// before its order waits in the book, and a snapshot keeps it waiting.
#[test]
fn a_snapshot_keeps_shares_waiting_for_their_order() {
    let w = World::new();
    let dest = "baise-xinshan-processing";
    let home = w.cluster_of(dest);
    let mut whole = Engine::new(w.net.clone());
    whole.apply(&w.share("s1", T0, SharedOrderKind::Shared, "ORD-9", &home, &["hechi", "nanning"], "AL-INGOT-AL99.70", T0 + 240 * HOUR, dest));
    let mut loaded = Engine::from_snapshot(w.net.clone(), &whole.snapshot()).unwrap();
    let place = w.order("o9", T0 + 1, "ORD-9", OrderKind::Placed, "AL-INGOT-AL99.70", 1_000, T0 + 240 * HOUR, dest, 30_000, true);
    let out = whole.apply(&place);
    assert_eq!(statuses(&out)[0].shared_to, vec!["hechi".to_owned(), "nanning".to_owned()]);
    assert_eq!(loaded.apply(&place), out);
}

#[test]
fn a_book_agrees_with_the_catalog_its_ranks_came_from_only() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    e.apply(&w.order("e1", T0, "o1", OrderKind::Placed, "AL-INGOT-AL99.70", 1_000, T0 + 240 * HOUR, "baise-pingguo-smelter", 30_000, false));
    let loaded = Engine::from_snapshot(w.net.clone(), &e.snapshot()).unwrap();
    assert!(loaded.agrees_with(&w.catalog));
    // The lowest aluminium grade moved to the top: AL99.70 is one rank lower now.
    let mut families = w.catalog.families().to_vec();
    let al = families.iter_mut().find(|f| f.family == "AL-INGOT").unwrap();
    al.grades.rotate_left(1);
    assert!(!loaded.agrees_with(&Catalog::from_specs(families.clone()).unwrap()));
    // Without the family at all.
    families.retain(|f| f.family != "AL-INGOT");
    assert!(!loaded.agrees_with(&Catalog::from_specs(families).unwrap()));
}

#[test]
fn a_snapshot_of_another_network_or_no_snapshot_is_refused() {
    let w = World::new();
    let mut e = Engine::new(w.net.clone());
    e.apply(&w.order("e1", T0, "o1", OrderKind::Placed, "AL-INGOT-AL99.70", 1_000, T0 + 240 * HOUR, "baise-pingguo-smelter", 30_000, false));
    let snap = e.snapshot();
    assert!(Engine::from_snapshot(w.net.clone(), &snap).is_ok());
    let mut other = Topology::embedded();
    other.clusters[0].sites.pop();
    let other = Arc::new(Network::new(&other));
    assert_eq!(Engine::from_snapshot(other, &snap).err(), Some(SnapshotError::Network));
    assert_eq!(Engine::from_snapshot(w.net.clone(), b"not a snapshot").err(), Some(SnapshotError::Format));
}

trait Landed {
    fn landed_cost(&self) -> i64;
}

impl Landed for wire::Allocation {
    fn landed_cost(&self) -> i64 {
        self.explanation.landed_cost_cny_per_t
    }
}

proptest! {
    /// Dedup horizon: an id repeated within a horizon of the occurrence the
    /// engine took is ignored; one repeated two horizons or more after it is
    /// taken again. Log times move forward by random steps.
    #[test]
    fn a_repeated_id_is_ignored_within_the_horizon_and_taken_after_two(steps in proptest::collection::vec((0u8..6, 0i64..700), 1..200)) {
        const H: i64 = 1_000;
        let w = World::new();
        let mut e = Engine::new(w.net.clone()).with_dedup_horizon(H);
        let mut taken: BTreeMap<u8, i64> = BTreeMap::new();
        let mut at = T0;
        for (n, (id, step)) in steps.into_iter().enumerate() {
            at += step;
            let event = w.order(&format!("dup-{id}"), T0, &format!("o{n}"), OrderKind::Placed, "AL-INGOT-AL99.70", 1_000, T0 + 240 * HOUR, "baise-pingguo-smelter", 30_000, false);
            let mut out = Vec::new();
            e.decide_at(&event, at, &mut out);
            let duplicate = matches!(out.as_slice(), [Decision::Ignored("duplicate event_id")]);
            match taken.get(&id) {
                Some(t) if at - t < H => prop_assert!(duplicate, "id {id} taken at {t}, again at {at}: not ignored"),
                Some(t) if at - t >= 2 * H => prop_assert!(!duplicate, "id {id} taken at {t}, again at {at}: still ignored"),
                None => prop_assert!(!duplicate, "id {id} first seen at {at} taken for a duplicate"),
                Some(_) => {}
            }
            if !duplicate {
                taken.insert(id, at);
            }
        }
    }
}

/// The ids the engine holds are those of two horizons at most, however long
/// the input; a snapshot carries both generations, and one taken under
/// another horizon is refused.
#[test]
fn seen_ids_are_bounded_by_two_horizons_and_snapshots_keep_the_generations() {
    const H: i64 = 1_000;
    let w = World::new();
    let mut e = Engine::new(w.net.clone()).with_dedup_horizon(H);
    let order = |n: u32| w.order(&format!("e{n}"), T0, &format!("o{n}"), OrderKind::Placed, "AL-INGOT-AL99.70", 1_000, T0 + 240 * HOUR, "baise-pingguo-smelter", 30_000, false);
    let mut out = Vec::new();
    // 10,000 ids, one a millisecond: ten horizons.
    for n in 0..10_000u32 {
        e.decide_at(&order(n), T0 + n as i64, &mut out);
        assert!(e.seen_ids() <= 2 * H as usize, "{} ids held after {n} events", e.seen_ids());
    }
    // An id of the generation before (first seen at T0 + 8,500, in the
    // window before the current one) is still known after a snapshot round trip.
    let loaded = Engine::from_snapshot_under(w.net.clone(), &e.snapshot(), H).unwrap();
    assert_eq!(loaded.snapshot(), e.snapshot());
    let mut loaded = loaded;
    let last = T0 + 9_999;
    let window_start = last - last.rem_euclid(H);
    let older = (window_start - H / 2 - T0) as u32;
    out.clear();
    loaded.decide_at(&order(older), last, &mut out);
    assert_eq!(out, vec![Decision::Ignored("duplicate event_id")]);
    assert_eq!(Engine::from_snapshot(w.net.clone(), &e.snapshot()).err(), Some(SnapshotError::Horizon));
}

/// `Engine::apply` at a log time.
fn apply_at(e: &mut Engine, input: &Input, log_ms: i64) -> Vec<Output> {
    let mut out = Vec::new();
    e.decide_at(input, log_ms, &mut out);
    out.iter().map(|d| e.render(d, input)).collect()
}

/// Ops whose inputs name nothing that can have left the books: each order
/// and capacity id placed or declared once (a second one of an id that left
/// is new) and no repeated events (their ids are forgotten after the
/// horizon too).
fn never_naming_what_left(ops: Vec<Op>) -> Vec<Op> {
    let (mut placed, mut declared) = (HashSet::default(), HashSet::default());
    ops.into_iter()
        .filter(|op| match op {
            Op::Place { o, .. } => placed.insert(*o),
            Op::Declare { c, .. } => declared.insert(*c),
            Op::Duplicate { .. } => false,
            _ => true,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Letting go of what closed a horizon ago renumbers what stays and
    /// rebuilds the indexes; for events that name nothing that left, the
    /// engine allocates exactly as one that never lets go, with the same open
    /// books. Log time runs with event time, a window every three events, so
    /// the books age many times in a sequence (and nothing expires: every date
    /// is after its event).
    #[test]
    fn letting_go_of_closed_entries_changes_no_allocation(ops in proptest::collection::vec(op(), 1..80)) {
        const H: i64 = 180_000;
        let w = World::new();
        let inputs = build(&w, &never_naming_what_left(ops));
        let mut aging = Engine::new(w.net.clone()).with_dedup_horizon(H);
        let mut keeping = Engine::new(w.net.clone());
        for i in &inputs {
            let (a, k) = (apply_at(&mut aging, i, i.time()), keeping.apply(i));
            prop_assert_eq!(allocations(&a), allocations(&k), "diverged at {:?}", i.event_id());
            let (sa, sk) = (aging.summary(), keeping.summary());
            prop_assert_eq!(
                (sa.open_orders, sa.open_capacities, sa.open_demand_kg, sa.open_capacity_kg),
                (sk.open_orders, sk.open_capacities, sk.open_demand_kg, sk.open_capacity_kg)
            );
            let (ha, hk) = (aging.held(), keeping.held());
            prop_assert!(ha.orders <= hk.orders && ha.capacities <= hk.capacities);
        }
    }

    /// A snapshot taken anywhere in a sequence decided at log times that
    /// cross many windows continues it exactly: what is due to leave leaves
    /// at the same event in both.
    #[test]
    fn a_snapshot_continues_exactly_across_windows(ops in proptest::collection::vec(op(), 1..80), cut in any::<proptest::sample::Index>(), step in 1i64..400_000) {
        const H: i64 = 180_000;
        let w = World::new();
        let inputs = build(&w, &ops);
        let k = cut.index(inputs.len() + 1);
        let mut whole = Engine::new(w.net.clone()).with_dedup_horizon(H);
        for (n, i) in inputs[..k].iter().enumerate() {
            apply_at(&mut whole, i, T0 + n as i64 * step);
        }
        let snap = whole.snapshot();
        let mut loaded = Engine::from_snapshot_under(w.net.clone(), &snap, H).unwrap();
        prop_assert_eq!(&loaded.snapshot(), &snap, "loading and saving again changed the bytes");
        for (n, i) in inputs.iter().enumerate().skip(k) {
            let at = T0 + n as i64 * step;
            prop_assert_eq!(apply_at(&mut loaded, i, at), apply_at(&mut whole, i, at), "diverged at {:?}", i.event_id());
        }
        prop_assert_eq!(loaded.snapshot(), whole.snapshot());
    }
}

/// What closed stays known for a horizon and leaves within two; what
/// stays open stays, in its place in the queue; open entries whose dates
/// ended more than a horizon before leave; a share waiting for an order that
/// never comes leaves too.
#[test]
fn closed_and_expired_entries_leave_the_books_after_the_horizon() {
    const H: i64 = 1_000;
    let w = World::new();
    let mut e = Engine::new(w.net.clone()).with_dedup_horizon(H);
    let (site, dest, al) = ("baise-pingguo-smelter", "baise-xinshan-processing", "AL-INGOT-AL99.70");
    let far = T0 + 2_000 * HOUR;
    let order = |ev: &str, id: &str, kind, qty, deliver_by| w.order(ev, T0, id, kind, al, qty, deliver_by, dest, 30_000, true);
    let cap = |ev: &str, id: &str, kind, qty, until| w.capacity(ev, T0, id, kind, al, site, qty, T0, until, 18_000, 1_000, None);
    let held = |e: &Engine| (e.held().orders, e.held().capacities, e.held().waiting_shares);
    let at = T0 - T0.rem_euclid(H); // the start of a window
    // A filled order and the capacity it exhausted; a withdrawn capacity;
    // two open orders, one whose delivery date is long past by the end.
    apply_at(&mut e, &order("e1", "FILLED", OrderKind::Placed, 5_000, far), at);
    assert_eq!(allocations(&apply_at(&mut e, &cap("e2", "EXHAUSTED", CapacityKind::Declared, 5_000, far), at)).len(), 1);
    apply_at(&mut e, &cap("e3", "WITHDRAWN", CapacityKind::Declared, 1_000, far), at);
    apply_at(&mut e, &w.capacity("e3b", T0, "WITHDRAWN", CapacityKind::Withdrawn, al, site, 1_000, T0, far, 18_000, 1_000, None), at);
    apply_at(&mut e, &order("e4", "WAITING-1", OrderKind::Placed, 2_000, far), at + 1);
    apply_at(&mut e, &order("e5", "LATE", OrderKind::Placed, 2_000, at + 2 * H), at + 2);
    apply_at(&mut e, &w.share("e6", T0, SharedOrderKind::Shared, "NEVER", "baise", &["hechi"], al, far, dest), at + 3);
    assert_eq!(held(&e), (3, 2, 1));

    // The next window: all still held; the filled order's id is still taken.
    let again = apply_at(&mut e, &order("e7", "FILLED", OrderKind::Placed, 1_000, far), at + H);
    assert!(matches!(again.as_slice(), [Output::Ignored { reason, .. }] if reason == "order_id already placed"), "{again:?}");
    apply_at(&mut e, &order("e8", "WAITING-2", OrderKind::Placed, 2_000, far), at + H + 1);
    assert_eq!(held(&e), (4, 2, 1));

    // Two windows on: the closed ones and the waiting share left; the open
    // ones stay (the late one's date is not yet a horizon past).
    apply_at(&mut e, &order("e9", "OTHER", OrderKind::Cancelled, 1, far), at + 2 * H);
    assert_eq!(held(&e), (3, 0, 0));
    // Three windows on: the late order's date ended before the window before, so it left.
    apply_at(&mut e, &order("e10", "OTHER", OrderKind::Cancelled, 1, far), at + 4 * H);
    assert_eq!(held(&e), (2, 0, 0));
    let cancel_late = apply_at(&mut e, &order("e11", "LATE", OrderKind::Cancelled, 1, far), at + 4 * H);
    assert!(matches!(cancel_late.as_slice(), [Output::Ignored { reason, .. }] if reason == "no open order with this order_id"));

    // The id that left can be placed again, as a new order; new capacity
    // serves the waiting orders first come, first served: their arrival order
    // survived the renumbering.
    let out = apply_at(&mut e, &order("e12", "FILLED", OrderKind::Placed, 1_000, far), at + 4 * H);
    assert!(statuses(&out).iter().any(|s| s.order_id == "FILLED" && s.state == OrderState::Open), "{out:?}");
    let out = apply_at(&mut e, &cap("e13", "NEW", CapacityKind::Declared, 3_000, far), at + 4 * H);
    let got: Vec<(&str, i64)> = allocations(&out).iter().map(|a| (a.order_id.as_str(), a.quantity_kg)).collect();
    assert_eq!(got, vec![("WAITING-1", 2_000), ("WAITING-2", 1_000)]);
}

/// However long the input, the books hold what is open and what closed
/// within the last two windows of log time: with one event a millisecond,
/// at most two horizons' worth of entries beyond the open ones.
#[test]
fn the_books_stay_within_two_horizons_of_input_however_long_it_runs() {
    const H: i64 = 10_000;
    const LIFE: u64 = 200;
    let w = World::new();
    let mut e = Engine::new(w.net.clone()).with_dedup_horizon(H);
    let mut out = Vec::new();
    let mut most = 0;
    for (input, at) in crate::workload::Soak::new(3, T0 - T0.rem_euclid(H), 1.0, LIFE).take(20 * H as usize) {
        out.clear();
        e.decide_at(&input, at, &mut out);
        let held = e.held().orders + e.held().capacities;
        // Entries open when the window before began (at most one per event of the last `LIFE`) may stay too.
        assert!(held <= 2 * H as usize + LIFE as usize, "{held} entries held at {}", at - T0);
        assert!(e.seen_ids() <= 2 * H as usize);
        most = most.max(held);
    }
    // Near the bound: about half the events place or declare something.
    assert!(most > H as usize * 9 / 10, "at most {most} held");
}
