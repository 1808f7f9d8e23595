//! The door's decisions, without Kafka: what is forwarded, copied or dead-lettered.

use super::*;
use orelink_domain::events::{CapacityEvent, InventoryEvent, OrderEvent, wire};
use orelink_domain::{CapacityKind, OrderKind};

const PINGGUO: &str = "91451000MA5L0CHG10";
const DACHANG: &str = "91451200MA5L0HXT20";
const T0: i64 = 1_795_000_000_000;

fn door() -> (Door, Vec<String>, Vec<String>) {
    let reference = Reference::embedded();
    let mut cfg = Config::load(&orelink_platform::config::Sources::default()).unwrap();
    cfg.namespace = "t.".into();
    let codec = orelink_platform::codec(&cfg, &reference).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    Door::new(codec, &reference, rt.handle().clone())
}

fn order(buyer: &str) -> Record {
    let w = wire::OrderEvent {
        event_id: "e1".into(),
        event_time: T0,
        order_id: "O-1".into(),
        kind: OrderKind::Placed,
        cluster: "baise".into(),
        buyer_id: buyer.into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 50_000,
        deliver_by: T0 + 7 * 86_400_000,
        destination_site: "baise-xinshan-processing".into(),
        max_price_cny_per_t: 21_000,
        allow_cross_cluster: true,
    };
    let reference = Reference::embedded();
    Record::Order(OrderEvent::validate(&w, &reference.lookup()).unwrap())
}

fn capacity(provider: &str) -> Record {
    let w = wire::CapacityEvent {
        event_id: "c1".into(),
        event_time: T0,
        capacity_id: "C-1".into(),
        kind: CapacityKind::Declared,
        cluster: "baise".into(),
        provider_id: provider.into(),
        site_id: "baise-pingguo-smelter".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 500_000,
        available_from: T0,
        available_until: T0 + 30 * 86_400_000,
        price_cny_per_t: 19_800,
        min_lot_kg: 25_000,
        energy_kwh_per_t: Some(13_200),
    };
    let reference = Reference::embedded();
    Record::Capacity(CapacityEvent::validate(&w, &reference.lookup()).unwrap())
}

fn inventory(site: &str) -> Record {
    let w = wire::InventoryEvent { event_id: "i1".into(), event_time: T0, site_id: site.into(), product_code: "AL-INGOT-AL99.70".into(), on_hand_kg: 80_000, reserved_kg: 0 };
    let reference = Reference::embedded();
    Record::Inventory(InventoryEvent::validate(&w, &reference.lookup()).unwrap())
}

fn ingest(id: &str) -> String {
    format!("t.{}", topics::ingest(id))
}

#[test]
fn the_door_reads_every_ingest_topic_and_the_allocations() {
    let (_, inputs, outputs) = door();
    assert_eq!(inputs[0], "t.orelink.allocations.v1");
    assert!(inputs.contains(&ingest(PINGGUO)) && inputs.contains(&ingest(DACHANG)));
    assert_eq!(outputs[..SHARED_OUTPUTS], ["t.orelink.dlq.v1", "t.orelink.market.v1", "t.orelink.inventory.v1", "t.orelink.shipments.v1"]);
    assert!(outputs.contains(&format!("t.{}", topics::enterprise_allocations(PINGGUO))));
}

#[test]
fn an_enterprises_own_events_are_forwarded_keyed_as_the_contract_says() {
    let (door, _, _) = door();
    let topic = ingest(PINGGUO);
    assert_eq!(door.effect(&topic, Ok(&order(PINGGUO))), Effect::Forward { output: MARKET, key: "AL-INGOT".into() });
    assert_eq!(door.effect(&topic, Ok(&capacity(PINGGUO))), Effect::Forward { output: MARKET, key: "AL-INGOT".into() });
    assert_eq!(door.effect(&topic, Ok(&inventory("baise-pingguo-smelter"))), Effect::Forward { output: INVENTORY, key: "baise-pingguo-smelter/AL-INGOT-AL99.70".into() });
}

#[test]
fn another_enterprises_event_is_a_dead_letter_of_class_identity() {
    let (door, _, _) = door();
    let topic = ingest(DACHANG);
    for record in [order(PINGGUO), capacity(PINGGUO), inventory("baise-pingguo-smelter")] {
        match door.effect(&topic, Ok(&record)) {
            Effect::Dead(r) => assert_eq!(r.class, ErrorClass::Identity, "{r}"),
            other => panic!("{other:?}"),
        }
    }
    let refused = Refusal { class: ErrorClass::Undecodable, reason: "garbage".into() };
    assert_eq!(door.effect(&topic, Err(refused.clone())), Effect::Dead(refused));
}

#[test]
fn an_allocation_is_copied_to_each_declared_enterprise_it_names_once() {
    let (door, _, outputs) = door();
    let allocation = |buyer: &str, provider: &str| {
        Record::Allocation(wire::Allocation {
            allocation_id: "A-1".into(),
            order_id: "O-1".into(),
            capacity_id: "C-1".into(),
            order_cluster: "baise".into(),
            capacity_cluster: "baise".into(),
            buyer_id: buyer.into(),
            provider_id: provider.into(),
            product_code: "AL-INGOT-AL99.70".into(),
            quantity_kg: 50_000,
            price_cny_per_t: 19_800,
            freight_cny_per_t: 40,
            from_site: "baise-pingguo-smelter".into(),
            destination_site: "baise-xinshan-processing".into(),
            decided_at: T0,
            explanation: wire::Explanation {
                rank: 1,
                home_cluster: true,
                requested_product_code: "AL-INGOT-AL99.70".into(),
                landed_cost_cny_per_t: 19_840,
                distance_km: 150,
                transit_hours: 4,
                mode: orelink_domain::TransportMode::Road,
                energy_kwh_per_t: None,
                summary: "test".into(),
            },
            pick_up: None, deliver_by: None,
        })
    };
    let copy_of = |id: &str| outputs.iter().position(|o| *o == format!("t.{}", topics::enterprise_allocations(id))).unwrap();
    let alloc = "t.orelink.allocations.v1";
    assert_eq!(door.effect(alloc, Ok(&allocation(DACHANG, PINGGUO))), Effect::Copy(vec![copy_of(DACHANG), copy_of(PINGGUO)]));
    assert_eq!(door.effect(alloc, Ok(&allocation(PINGGUO, PINGGUO))), Effect::Copy(vec![copy_of(PINGGUO)]));
    assert_eq!(door.effect(alloc, Ok(&allocation("91450100MA5L0ABC1X", "91451000MA5L0PRV1Y"))), Effect::Nothing);
}
