//! One small op per record kind, as the view script (`view.lua`) applies them.
//! Pure: a decoded record and where it came from in, an op out. Products of
//! quantities are computed here, checked, so the script only adds integers.

use orelink_codec::Record;
use orelink_domain::Topology;
use orelink_domain::catalog::family_of;
use orelink_domain::events::{CapacityKind, SharedOrderKind};
use serde::Serialize;

/// An op and the input position it comes from (`t` = "topic:partition", `o` = offset).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    pub t: String,
    pub o: i64,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum Body {
    /// Capacity declared (`D`) or withdrawn (`W`).
    Cap { f: String, id: String, c: String, kind: &'static str, q: i64, at: i64 },
    /// An allocation; `ekwh` the energy it took to make (kWh), -1 when its
    /// capacity's intensity is unknown; `j` its JSON for the API.
    Al { f: String, id: String, ord: String, cap: String, cc: String, q: i64, ekwh: i64, at: i64, j: String },
    /// An order status from the matcher; `j` its JSON for the API.
    St { f: String, id: String, c: String, v: i64, s: &'static str, r: i64, a: i64, at: i64, j: String },
    /// A share (`S`) or withdrawal (`W`); `j` its JSON for the API.
    Sh { f: String, ord: String, kind: &'static str, origin: String, targets: Vec<String>, j: String },
    /// A site's stock of one product (`p`), in its site's cluster (`c`).
    Inv { site: String, c: String, f: String, p: String, oh: i64, rs: i64, at: i64 },
    /// A carrier's offer (`O`) or its withdrawal (`W`) on lane `l`: room
    /// `cap` (kg) until `upto` (`until` is a word of Lua's), by `mode`.
    Off { l: String, id: String, kind: &'static str, cap: i64, upto: i64, mode: &'static str, at: i64 },
    /// A part of an allocation booked onto offer `off` (`b` = 1), or its
    /// unbooked remainder (`b` = 0), on lane `l`; `cny` the freight it costs
    /// at the offer's price and `pcny` at the planning figure (CNY), -1 when
    /// unknown or past what the script adds exactly.
    Bk { l: String, id: String, off: String, b: i64, q: i64, cny: i64, pcny: i64, at: i64 },
    /// A dead letter, counted by class.
    Dl { class: &'static str },
    /// Input the view does not use, or cannot decode: only the offset moves.
    Skip {},
}

/// kWh/t times kg, in kWh (rounded); -1 when unknown or past what an i64 holds.
fn energy_kwh(kwh_per_t: Option<i64>, kg: i64) -> i64 {
    kwh_per_t
        .filter(|e| *e >= 0)
        .and_then(|e| e.checked_mul(kg))
        .and_then(|x| x.checked_add(500))
        .map(|x| x / 1000)
        .unwrap_or(-1)
}

/// CNY/t times kg, in CNY (rounded); -1 when unknown or not exact in the script.
fn cost_cny(cny_per_t: Option<i64>, kg: i64) -> i64 {
    const EXACT: i64 = 1 << 53;
    cny_per_t
        .filter(|p| *p >= 0)
        .and_then(|p| p.checked_mul(kg))
        .and_then(|x| x.checked_add(500))
        .map(|x| x / 1000)
        .filter(|c| *c < EXACT)
        .unwrap_or(-1)
}

/// The op for `record`, read at `offset` of `topic`/`partition` (topic without namespace in `t`).
pub fn op_of(t: String, o: i64, record: Option<&Record>, topology: &Topology) -> Op {
    let json = |v: &dyn erased::Json| v.to_json();
    let body = match record {
        Some(Record::Capacity(c)) => Body::Cap {
            f: c.product.family_str().to_owned(),
            id: c.capacity_id.to_string(),
            c: c.cluster.to_string(),
            kind: match c.kind {
                CapacityKind::Declared => "D",
                CapacityKind::Withdrawn => "W",
            },
            q: c.quantity.to_wire(),
            at: c.event_time.0,
        },
        Some(Record::Allocation(a)) => Body::Al {
            f: family_of(&a.product_code).to_owned(),
            id: a.allocation_id.clone(),
            ord: a.order_id.clone(),
            cap: a.capacity_id.clone(),
            cc: a.capacity_cluster.clone(),
            q: a.quantity_kg,
            ekwh: energy_kwh(a.explanation.energy_kwh_per_t, a.quantity_kg),
            at: a.decided_at,
            j: json(a),
        },
        Some(Record::OrderStatus(s)) => Body::St {
            f: family_of(&s.product_code).to_owned(),
            id: s.order_id.clone(),
            c: s.cluster.clone(),
            v: s.version as i64,
            s: match s.state {
                orelink_domain::events::OrderState::Open => "OPEN",
                orelink_domain::events::OrderState::Filled => "FILLED",
                orelink_domain::events::OrderState::Cancelled => "CANCELLED",
            },
            r: s.remaining_kg,
            a: s.allocated_kg,
            at: s.status_at,
            j: json(s),
        },
        Some(Record::SharedOrder(s)) => {
            let w = s.to_wire();
            Body::Sh {
                f: s.product.family_str().to_owned(),
                ord: w.order_id.clone(),
                kind: match s.kind {
                    SharedOrderKind::Shared => "S",
                    SharedOrderKind::Withdrawn => "W",
                },
                origin: w.origin_cluster.clone(),
                targets: w.target_clusters.clone(),
                j: json(&w),
            }
        }
        Some(Record::Inventory(i)) => match topology.site(i.site_id.as_str()).and_then(|s| s.cluster.as_ref()) {
            Some(cluster) => Body::Inv {
                site: i.site_id.to_string(),
                c: cluster.to_string(),
                f: i.product.family_str().to_owned(),
                p: i.product.to_string(),
                oh: i.on_hand.to_wire(),
                rs: i.reserved.to_wire(),
                at: i.event_time.0,
            },
            // Validation found the site in this topology; a site outside every cluster holds no stock here.
            None => Body::Skip {},
        },
        Some(Record::TransportOffer(o)) => Body::Off {
            l: o.lane().key(),
            id: o.offer_id.clone(),
            kind: match o.kind {
                orelink_domain::events::TransportOfferKind::Offered => "O",
                orelink_domain::events::TransportOfferKind::Withdrawn => "W",
            },
            cap: o.capacity.to_wire(),
            upto: o.available_until.0,
            mode: o.mode.as_str(),
            at: o.event_time.0,
        },
        Some(Record::Booking(b)) => Body::Bk {
            l: orelink_domain::booking::Lane::new(&b.from_cluster, &b.to_cluster).key(),
            id: b.booking_id.clone(),
            off: b.offer_id.clone().unwrap_or_default(),
            b: i64::from(b.booked),
            q: b.quantity_kg,
            cny: if b.booked { cost_cny(b.price_cny_per_t, b.quantity_kg) } else { -1 },
            pcny: cost_cny(Some(b.planning_freight_cny_per_t), b.quantity_kg),
            at: b.decided_at,
        },
        Some(Record::DeadLetter(d)) => Body::Dl { class: d.error_class.as_str() },
        _ => Body::Skip {},
    };
    Op { t, o, body }
}

mod erased {
    /// Serialises any wire record to JSON for the API (they are plain structs).
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("wire records serialise")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orelink_domain::events::{OrderState, wire};

    #[test]
    fn ops_serialise_as_the_script_reads_them() {
        let s = wire::OrderStatus {
            event_id: "e/ORD-1".into(),
            status_at: 1_000,
            version: 2,
            state: OrderState::Open,
            order_id: "ORD-1".into(),
            cluster: "nanning".into(),
            buyer_id: "b".into(),
            product_code: "AL-INGOT-AL99.70".into(),
            destination_site: "d".into(),
            deliver_by: 2_000,
            max_price_cny_per_t: 21_000,
            allow_cross_cluster: true,
            remaining_kg: 5,
            allocated_kg: 7,
            shared_to: vec![],
        };
        let topology = Topology::embedded();
        let op = op_of("orelink.order-status.v1:3".into(), 42, Some(&Record::OrderStatus(s)), &topology);
        let v: serde_json::Value = serde_json::to_value(&op).unwrap();
        assert_eq!(v["k"], "st");
        assert_eq!((v["t"].as_str(), v["o"].as_i64(), v["f"].as_str()), (Some("orelink.order-status.v1:3"), Some(42), Some("AL-INGOT")));
        assert_eq!((v["v"].as_i64(), v["s"].as_str(), v["r"].as_i64(), v["a"].as_i64()), (Some(2), Some("OPEN"), Some(5), Some(7)));
        let skip = serde_json::to_value(op_of("x:0".into(), 1, None, &topology)).unwrap();
        assert_eq!(skip["k"], "skip");
    }

    proptest::proptest! {
        /// Every number an op hands the script is an integer Lua holds exactly
        /// (below 2^53), for any allocation and stock within the contract's bounds.
        #[test]
        fn ops_of_bounded_records_carry_exact_integers(
            q in 1i64..=orelink_domain::quantity::bounds::MAX_KG,
            e in proptest::option::of(0i64..=orelink_domain::quantity::bounds::MAX_ENERGY),
            at in orelink_domain::quantity::bounds::MIN_MILLIS..orelink_domain::quantity::bounds::MAX_MILLIS,
        ) {
            const EXACT: i64 = 1 << 53;
            let topology = Topology::embedded();
            let a = wire::Allocation {
                allocation_id: "A".into(), order_id: "O".into(), capacity_id: "C".into(),
                order_cluster: "baise".into(), capacity_cluster: "baise".into(),
                buyer_id: "b".into(), provider_id: "p".into(), product_code: "AL-INGOT-AL99.70".into(),
                quantity_kg: q, price_cny_per_t: 20_000, freight_cny_per_t: 0,
                from_site: "s".into(), destination_site: "d".into(), decided_at: at,
                explanation: wire::Explanation {
                    rank: 1, home_cluster: true, requested_product_code: "AL-INGOT-AL99.70".into(), landed_cost_cny_per_t: 20_000,
                    distance_km: 0, transit_hours: 0, mode: orelink_domain::TransportMode::Road, energy_kwh_per_t: e, summary: String::new(),
                },
                pick_up: None, deliver_by: None,
            };
            let v = serde_json::to_value(op_of("t:0".into(), 0, Some(&Record::Allocation(a)), &topology)).unwrap();
            for field in ["q", "ekwh", "at"] {
                let n = v[field].as_i64().unwrap();
                proptest::prop_assert!(n.abs() < EXACT, "{field} = {n}");
            }
            proptest::prop_assert_eq!(v["ekwh"].as_i64().unwrap(), e.map_or(-1, |e| (e * q + 500) / 1000));
        }
    }

    #[test]
    fn energy_is_multiplied_in_rust_checked_and_in_kwh() {
        assert_eq!(energy_kwh(Some(13_300), 2_000), 26_600);
        assert_eq!(energy_kwh(Some(1_000_000), 10_000_000_000), 10_000_000_000_000);
        assert_eq!(energy_kwh(None, 5), -1);
        assert_eq!(energy_kwh(Some(i64::MAX), i64::MAX), -1, "an overflow is unknown energy, never a wrap");
    }
}
