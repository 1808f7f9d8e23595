//! The direct encoding must be byte for byte apache-avro's with the hub's
//! schemas, for every record of the contract, and read back to the same value.

use super::*;
use crate::Schemas;
use orelink_domain::events::wire;
use orelink_domain::{CapacityKind, ErrorClass, OrderKind, OrderState, SharedOrderKind, ShipmentStatus, TransportMode};
use proptest::prelude::*;

fn reference<T: Serialize>(record: &str, v: &T) -> Vec<u8> {
    let schemas = Schemas::embedded();
    let schema = &schemas.get(record).expect("schema").parsed;
    let value = apache_avro::to_value(v).and_then(|x| x.resolve(schema)).expect("the value fits the schema");
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema).build().expect("a writer");
    let mut out = Vec::new();
    writer.write_value_ref(&mut out, &value).expect("apache-avro encodes it");
    out
}

fn same<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(record: &str, v: &T) {
    let mut ours = Vec::new();
    write(v, &mut ours).expect("encodes");
    assert_eq!(ours, reference(record, v), "{record}: bytes differ from apache-avro's");
    assert_eq!(&read::<T>(&ours).expect("decodes"), v, "{record}: does not read back");
}

fn order(kind: OrderKind, n: i64, s: &str) -> wire::OrderEvent {
    wire::OrderEvent {
        event_id: format!("e-{s}"),
        event_time: n,
        order_id: s.into(),
        kind,
        cluster: "baise".into(),
        buyer_id: "91451000MA5L0ABC1X".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: n.wrapping_mul(3),
        deliver_by: -n,
        destination_site: "baise-pingguo-smelter".into(),
        max_price_cny_per_t: n / 7,
        allow_cross_cluster: n % 2 == 0,
    }
}

fn capacity(kind: CapacityKind, energy: Option<i64>) -> wire::CapacityEvent {
    wire::CapacityEvent {
        event_id: "c1".into(),
        event_time: 1_795_000_000_000,
        capacity_id: "CAP-铝-1".into(),
        kind,
        cluster: "hechi".into(),
        provider_id: "91451200MA5L0PRV1Y".into(),
        site_id: "hechi-dachang-tin".into(),
        product_code: "SN-INGOT-SN99.90".into(),
        quantity_kg: 450_000,
        available_from: 0,
        available_until: i64::MAX,
        price_cny_per_t: 260_000,
        min_lot_kg: 1,
        energy_kwh_per_t: energy,
    }
}

#[test]
fn every_contract_record_matches_apache_avro() {
    for k in [OrderKind::Placed, OrderKind::Amended, OrderKind::Cancelled] {
        same("orelink.v1.OrderEvent", &order(k, 1_795_000_000_123, "ORD-1"));
    }
    for (k, e) in [(CapacityKind::Declared, Some(13_100)), (CapacityKind::Withdrawn, None)] {
        same("orelink.v1.CapacityEvent", &capacity(k, e));
    }
    same(
        "orelink.v1.InventoryEvent",
        &wire::InventoryEvent {
            event_id: "i".into(),
            event_time: 5,
            site_id: "fcg-port".into(),
            product_code: "CU-CATHODE-CU-CATH-1".into(),
            on_hand_kg: 0,
            reserved_kg: -1,
        },
    );
    let modes = [TransportMode::Road, TransportMode::Rail, TransportMode::River, TransportMode::Sea];
    let statuses = [ShipmentStatus::Planned, ShipmentStatus::PickedUp, ShipmentStatus::InTransit, ShipmentStatus::Arrived, ShipmentStatus::Delivered, ShipmentStatus::Exception];
    for (i, status) in statuses.into_iter().enumerate() {
        same(
            "orelink.v1.ShipmentEvent",
            &wire::ShipmentEvent {
                event_id: format!("s{i}"),
                event_time: i as i64,
                shipment_id: "SHP-1".into(),
                allocation_id: (i % 2 == 0).then(|| "ALC-ORD-1-1".into()),
                carrier_id: "91450600MA5L0CAR1Z".into(),
                mode: modes[i % 4],
                status,
                from_site: "fcg-port".into(),
                to_site: "nanning-jiangnan-processing".into(),
                quantity_kg: 25_000,
                lat: (i % 3 != 0).then_some(22.5 + i as f64),
                lon: (i % 3 == 1).then_some(-108.3),
                eta: (i > 2).then_some(1_795_000_000_000),
            },
        );
    }
    for (i, mode) in modes.into_iter().enumerate() {
        same(
            "orelink.v1.Allocation",
            &wire::Allocation {
                allocation_id: "ALC-ORD-1-1".into(),
                order_id: "ORD-1".into(),
                capacity_id: "CAP-1".into(),
                order_cluster: "nanning".into(),
                capacity_cluster: "baise".into(),
                buyer_id: "b".into(),
                provider_id: "p".into(),
                product_code: "AL-INGOT-AL99.85".into(),
                quantity_kg: 100_000,
                price_cny_per_t: 20_100,
                freight_cny_per_t: 123,
                from_site: "baise-pingguo-smelter".into(),
                destination_site: "nanning-jiangnan-processing".into(),
                decided_at: 1_795_000_000_000,
                explanation: wire::Explanation {
                    rank: i as i32 + 1,
                    home_cluster: i == 0,
                    requested_product_code: "AL-INGOT-AL99.70".into(),
                    landed_cost_cny_per_t: 20_223,
                    distance_km: 210,
                    transit_hours: 6,
                    mode,
                    energy_kwh_per_t: (i % 2 == 1).then_some(13_200),
                    summary: "a sentence, with ünïcode 铝".into(),
                },
                pick_up: Some(1_795_000_000_000), deliver_by: Some(1_795_600_000_000),
            },
        );
    }
    for (kind, targets) in [(SharedOrderKind::Shared, vec!["baise".to_string(), "hechi".into()]), (SharedOrderKind::Withdrawn, vec![])] {
        same(
            "orelink.v1.SharedOrder",
            &wire::SharedOrder {
                event_id: "sh".into(),
                shared_at: 9,
                kind,
                order_id: "ORD-2".into(),
                origin_cluster: "nanning".into(),
                target_clusters: targets,
                product_code: "ZN-INGOT-ZN99.995".into(),
                remaining_kg: 1,
                deliver_by: 10,
                destination_site: "nanning-jiangnan-processing".into(),
                buyer_id: (kind == SharedOrderKind::Shared).then(|| "b".into()),
                max_price_cny_per_t: (kind == SharedOrderKind::Withdrawn).then_some(23_000),
            },
        );
    }
    for (state, shared_to) in [(OrderState::Open, vec!["hechi".to_string()]), (OrderState::Filled, vec![]), (OrderState::Cancelled, vec!["a".into(), "b".into(), "c".into()])] {
        same(
            "orelink.v1.OrderStatus",
            &wire::OrderStatus {
                event_id: "e/ORD-3".into(),
                status_at: 1,
                version: 3,
                state,
                order_id: "ORD-3".into(),
                cluster: "nanning".into(),
                buyer_id: "b".into(),
                product_code: "PB-INGOT-PB99.994".into(),
                destination_site: "x".into(),
                deliver_by: 2,
                max_price_cny_per_t: 16_500,
                allow_cross_cluster: true,
                remaining_kg: 0,
                allocated_kg: 50_000,
                shared_to,
            },
        );
    }
    let classes = [ErrorClass::Undecodable, ErrorClass::UnknownSchema, ErrorClass::WrongRecord, ErrorClass::Invalid, ErrorClass::UnknownReference];
    for (i, error_class) in classes.into_iter().enumerate() {
        same(
            "orelink.v1.DeadLetter",
            &wire::DeadLetter {
                source_topic: "orelink.orders.v1".into(),
                source_partition: i as i32,
                source_offset: 1 << 40,
                key: (i % 2 == 0).then(|| "AL-INGOT".into()),
                value: (i != 1).then(|| vec![0, 255, 7, 128]),
                error_class,
                reason: "why".into(),
                failed_at: 3,
                role: "matcher".into(),
            },
        );
    }
}

#[test]
fn broken_bodies_are_errors_not_panics() {
    let mut ok = Vec::new();
    write(&order(OrderKind::Placed, 42, "ORD-9"), &mut ok).unwrap();
    for cut in 0..ok.len() {
        assert!(read::<wire::OrderEvent>(&ok[..cut]).is_err(), "a body cut at {cut} bytes decoded");
    }
    let mut long = ok.clone();
    long.push(0);
    assert!(read::<wire::OrderEvent>(&long).unwrap_err().to_string().contains("left over"));
    // An enum index past the symbols: the kind follows event_id, event_time and order_id.
    let mut prefix = Vec::new();
    write(&"e-o", &mut prefix).unwrap();
    write(&1i64, &mut prefix).unwrap();
    write(&"o", &mut prefix).unwrap();
    let mut wrong = Vec::new();
    write(&order(OrderKind::Placed, 1, "o"), &mut wrong).unwrap();
    assert_eq!(wrong[prefix.len()], 0, "PLACED is symbol 0");
    wrong[prefix.len()] = 6; // zigzag 3: a fourth symbol
    assert!(read::<wire::OrderEvent>(&wrong).unwrap_err().to_string().contains("enum index 3"));
}

proptest! {
    #[test]
    fn random_orders_and_statuses_match_apache_avro(
        n in any::<i64>(),
        s in "\\PC{0,40}",
        shared in proptest::collection::vec("[a-z]{0,12}", 0..5),
        energy in proptest::option::of(any::<i64>()),
    ) {
        same("orelink.v1.OrderEvent", &order(OrderKind::Amended, n, &s));
        same("orelink.v1.CapacityEvent", &capacity(CapacityKind::Declared, energy));
        same("orelink.v1.OrderStatus", &wire::OrderStatus {
            event_id: s.clone(), status_at: n, version: (n >> 33) as i32, state: OrderState::Open, order_id: s.clone(),
            cluster: String::new(), buyer_id: s, product_code: "p".into(), destination_site: "d".into(), deliver_by: !n,
            max_price_cny_per_t: n.wrapping_neg(), allow_cross_cluster: n < 0, remaining_kg: 0, allocated_kg: n, shared_to: shared,
        });
    }
}
