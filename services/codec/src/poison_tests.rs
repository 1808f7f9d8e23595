//! The pure path every consumer shares (bytes -> record -> validated domain
//! event) under hostile input: arbitrary bytes, and schema-valid records with
//! extreme values. Never a panic; either a validated record within the
//! contract's plausible values, or a refusal with a class and a reason.

use super::*;
use orelink_domain::quantity::bounds;
use proptest::prelude::*;

const RECORDS: [&str; 8] = [
    "orelink.v1.OrderEvent",
    "orelink.v1.CapacityEvent",
    "orelink.v1.InventoryEvent",
    "orelink.v1.ShipmentEvent",
    "orelink.v1.Allocation",
    "orelink.v1.SharedOrder",
    "orelink.v1.DeadLetter",
    "orelink.v1.OrderStatus",
];

fn with<T>(f: impl FnOnce(&Lookup) -> T) -> T {
    let (catalog, topology) = (Catalog::embedded(), Topology::embedded());
    f(&Lookup { catalog: &catalog, topology: &topology })
}

/// Integers at and around every bound, and anything else.
fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(9_000_000_000_000_000_000),
        Just(bounds::MAX_KG),
        Just(bounds::MAX_KG + 1),
        Just(bounds::MAX_PRICE),
        Just(bounds::MAX_PRICE + 1),
        Just(bounds::MIN_MILLIS - 1),
        Just(bounds::MAX_MILLIS),
        1_796_083_200_000i64..1_800_000_000_000,
        1i64..100_000_000,
        any::<i64>(),
    ]
}

/// Empty, long, non-ASCII, control characters, and ids the topology knows.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("x".repeat(128)),
        Just("x".repeat(129)),
        Just("铝锭-百色".into()),
        Just("a\u{0}b\n".into()),
        Just("baise".into()),
        Just("baise-pingguo-smelter".into()),
        Just("AL-INGOT-AL99.70".into()),
        Just("91451000MA5L0ABC1X".into()),
        "[ -~]{0,300}",
        any::<String>(),
    ]
}

fn coordinate() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![Just(None), Just(Some(f64::NAN)), Just(Some(f64::INFINITY)), Just(Some(f64::NEG_INFINITY)), Just(Some(-0.0)), any::<f64>().prop_map(Some)]
}

fn order() -> impl Strategy<Value = wire::OrderEvent> {
    (text(), int(), text(), prop_oneof![Just(OrderKind::Placed), Just(OrderKind::Amended), Just(OrderKind::Cancelled)], text(), text(), text(), int(), int(), text(), int(), any::<bool>())
        .prop_map(|(event_id, event_time, order_id, kind, cluster, buyer_id, product_code, quantity_kg, deliver_by, destination_site, max_price_cny_per_t, allow_cross_cluster)| {
            wire::OrderEvent { event_id, event_time, order_id, kind, cluster, buyer_id, product_code, quantity_kg, deliver_by, destination_site, max_price_cny_per_t, allow_cross_cluster }
        })
}

fn capacity() -> impl Strategy<Value = wire::CapacityEvent> {
    (
        (text(), int(), text(), any::<bool>(), text(), text(), text()),
        (text(), int(), int(), int(), int(), int(), proptest::option::of(int())),
    )
        .prop_map(|((event_id, event_time, capacity_id, declared, cluster, provider_id, site_id), (product_code, quantity_kg, available_from, available_until, price_cny_per_t, min_lot_kg, energy_kwh_per_t))| {
            let kind = if declared { CapacityKind::Declared } else { CapacityKind::Withdrawn };
            wire::CapacityEvent { event_id, event_time, capacity_id, kind, cluster, provider_id, site_id, product_code, quantity_kg, available_from, available_until, price_cny_per_t, min_lot_kg, energy_kwh_per_t }
        })
}

fn inventory() -> impl Strategy<Value = wire::InventoryEvent> {
    (text(), int(), text(), text(), int(), int()).prop_map(|(event_id, event_time, site_id, product_code, on_hand_kg, reserved_kg)| wire::InventoryEvent {
        event_id,
        event_time,
        site_id,
        product_code,
        on_hand_kg,
        reserved_kg,
    })
}

fn shipment() -> impl Strategy<Value = wire::ShipmentEvent> {
    ((text(), int(), text(), proptest::option::of(text()), text()), (text(), text(), int(), coordinate(), coordinate(), proptest::option::of(int()))).prop_map(
        |((event_id, event_time, shipment_id, allocation_id, carrier_id), (from_site, to_site, quantity_kg, lat, lon, eta))| wire::ShipmentEvent {
            event_id,
            event_time,
            shipment_id,
            allocation_id,
            carrier_id,
            mode: TransportMode::Road,
            status: ShipmentStatus::InTransit,
            from_site,
            to_site,
            quantity_kg,
            lat,
            lon,
            eta,
        },
    )
}

fn in_bounds_kg(q: Kg) -> bool {
    q.to_wire() <= bounds::MAX_KG
}

fn in_bounds_time(t: Millis) -> bool {
    (bounds::MIN_MILLIS..bounds::MAX_MILLIS).contains(&t.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(record in 0usize..RECORDS.len(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        with(|r| match read_record(RECORDS[record], &bytes, r) {
            Ok(_) => {}
            Err(refusal) => assert!(!refusal.reason.is_empty()),
        });
    }

    #[test]
    fn truncated_records_are_refused_not_panicked(o in order(), cut in 0usize..64) {
        let body = write_body(&o).unwrap();
        let cut = cut.min(body.len().saturating_sub(1));
        with(|r| {
            let refused = read_record("orelink.v1.OrderEvent", &body[..cut], r).unwrap_err();
            assert_eq!(refused.class, ErrorClass::Undecodable, "{refused}");
        });
    }

    #[test]
    fn extreme_orders_validate_only_within_bounds(o in order()) {
        with(|r| match read_record("orelink.v1.OrderEvent", &write_body(&o).unwrap(), r) {
            Ok(Record::Order(v)) => {
                assert!(in_bounds_kg(v.quantity) && in_bounds_time(v.event_time) && in_bounds_time(v.deliver_by));
                assert!((1..=bounds::MAX_PRICE).contains(&v.max_price.to_wire()));
            }
            Ok(other) => panic!("not an order: {other:?}"),
            Err(refusal) => assert!(matches!(refusal.class, ErrorClass::Invalid | ErrorClass::UnknownReference) && !refusal.reason.is_empty()),
        });
    }

    #[test]
    fn extreme_capacity_validates_only_within_bounds(c in capacity()) {
        with(|r| match read_record("orelink.v1.CapacityEvent", &write_body(&c).unwrap(), r) {
            Ok(Record::Capacity(v)) => {
                assert!(in_bounds_kg(v.quantity) && in_bounds_kg(v.min_lot));
                assert!(v.kind == CapacityKind::Withdrawn || v.min_lot <= v.quantity);
                assert!(in_bounds_time(v.available_from) && in_bounds_time(v.available_until));
                assert!((1..=bounds::MAX_PRICE).contains(&v.price.to_wire()));
                assert!(v.energy_kwh_per_t.is_none_or(|e| e <= bounds::MAX_ENERGY as u64));
            }
            Ok(other) => panic!("not capacity: {other:?}"),
            Err(refusal) => assert!(matches!(refusal.class, ErrorClass::Invalid | ErrorClass::UnknownReference), "{refusal}"),
        });
    }

    #[test]
    fn extreme_inventory_validates_only_within_bounds(i in inventory()) {
        with(|r| match read_record("orelink.v1.InventoryEvent", &write_body(&i).unwrap(), r) {
            Ok(Record::Inventory(v)) => assert!(in_bounds_kg(v.on_hand) && v.reserved <= v.on_hand && in_bounds_time(v.event_time)),
            Ok(other) => panic!("not inventory: {other:?}"),
            Err(refusal) => assert!(matches!(refusal.class, ErrorClass::Invalid | ErrorClass::UnknownReference), "{refusal}"),
        });
    }

    #[test]
    fn extreme_shipments_validate_only_within_bounds(s in shipment()) {
        with(|r| match read_record("orelink.v1.ShipmentEvent", &write_body(&s).unwrap(), r) {
            Ok(Record::Shipment(v)) => {
                assert!(in_bounds_kg(v.quantity) && in_bounds_time(v.event_time) && v.eta.is_none_or(in_bounds_time));
                assert!(v.position.is_none_or(|(lat, lon)| lat.is_finite() && lon.is_finite()));
            }
            Ok(other) => panic!("not a shipment: {other:?}"),
            Err(refusal) => assert!(matches!(refusal.class, ErrorClass::Invalid | ErrorClass::UnknownReference), "{refusal}"),
        });
    }
}

#[test]
fn the_absurd_capacity_of_the_issue_is_refused_with_its_field_and_bound() {
    let c = wire::CapacityEvent {
        event_id: "ev-absurd".into(),
        event_time: 1_796_083_200_000,
        capacity_id: "CAP-ABSURD".into(),
        kind: CapacityKind::Declared,
        cluster: "baise".into(),
        provider_id: "91451000MA5L0PRV1Y".into(),
        site_id: "baise-pingguo-smelter".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 9_000_000_000_000_000_000,
        available_from: 1_796_083_200_000,
        available_until: 1_796_688_000_000,
        price_cny_per_t: 20_300,
        min_lot_kg: 25_000,
        energy_kwh_per_t: Some(13_300),
    };
    let refused = with(|r| read_record("orelink.v1.CapacityEvent", &write_body(&c).unwrap(), r)).unwrap_err();
    assert_eq!(refused.class, ErrorClass::Invalid);
    assert!(refused.reason.contains("quantity_kg") && refused.reason.contains("10000000000 kg"), "{}", refused.reason);
}
