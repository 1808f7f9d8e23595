use super::*;

fn order() -> wire::OrderEvent {
    wire::OrderEvent {
        event_id: "ev-1".into(),
        event_time: 1_795_000_000_000,
        order_id: "ORD-1".into(),
        kind: OrderKind::Placed,
        cluster: "nanning".into(),
        buyer_id: "91450100MA5L0ABC1X".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 500_000,
        deliver_by: 1_795_600_000_000,
        destination_site: "nanning-jiangnan-processing".into(),
        max_price_cny_per_t: 20_800,
        allow_cross_cluster: true,
    }
}

fn with<T>(f: impl FnOnce(&Lookup) -> T) -> T {
    let (catalog, topology) = (Catalog::embedded(), Topology::embedded());
    f(&Lookup { catalog: &catalog, topology: &topology })
}

#[test]
fn a_good_order_validates_and_round_trips() {
    with(|r| {
        let o = OrderEvent::validate(&order(), r).unwrap();
        assert_eq!(o.product.family_str(), "AL-INGOT");
        assert_eq!(o.to_wire(), order());
    });
}

#[test]
fn every_problem_of_an_order_is_reported() {
    with(|r| {
        let mut w = order();
        w.quantity_kg = -5;
        w.deliver_by = w.event_time - 1;
        w.max_price_cny_per_t = -1;
        w.event_id = "".into();
        let rej = OrderEvent::validate(&w, r).unwrap_err();
        assert_eq!(rej.class, ErrorClass::Invalid);
        let fields: Vec<_> = rej.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["event_id", "quantity_kg", "deliver_by", "max_price_cny_per_t"]);
    });
}

#[test]
fn an_expired_order_can_be_cancelled() {
    with(|r| {
        let mut w = order();
        w.kind = OrderKind::Cancelled;
        w.event_time = w.deliver_by + 1;
        assert!(OrderEvent::validate(&w, r).is_ok());
        w.kind = OrderKind::Amended;
        assert!(OrderEvent::validate(&w, r).is_err(), "an amendment must leave time to deliver");
    });
}

#[test]
fn unknown_product_site_or_cluster_is_an_unknown_reference() {
    with(|r| {
        for mutate in [
            (|w: &mut wire::OrderEvent| w.product_code = "AL-INGOT-AL99.99".into()) as fn(&mut wire::OrderEvent),
            |w| w.destination_site = "mars-base".into(),
            |w| w.cluster = "guilin".into(),
        ] {
            let mut w = order();
            mutate(&mut w);
            let rej = OrderEvent::validate(&w, r).unwrap_err();
            assert_eq!(rej.class, ErrorClass::UnknownReference, "{rej}");
        }
    });
}

#[test]
fn capacity_site_must_belong_to_its_cluster() {
    with(|r| {
        let w = wire::CapacityEvent {
            event_id: "ev-2".into(),
            event_time: 1_795_000_000_000,
            capacity_id: "CAP-1".into(),
            kind: CapacityKind::Declared,
            cluster: "hechi".into(),
            provider_id: "91451200MA5L0XYZ2Q".into(),
            site_id: "baise-pingguo-smelter".into(),
            product_code: "AL-INGOT-AL99.85".into(),
            quantity_kg: 1_000_000,
            available_from: 1_795_000_000_000,
            available_until: 1_796_000_000_000,
            price_cny_per_t: 20_300,
            min_lot_kg: 2_000_000,
            energy_kwh_per_t: Some(13_300),
        };
        let rej = CapacityEvent::validate(&w, r).unwrap_err();
        let text = rej.reason();
        assert!(text.contains("not a site of cluster hechi"), "{text}");
        assert!(text.contains("min_lot_kg"), "{text}");
        let ok = wire::CapacityEvent { cluster: "baise".into(), min_lot_kg: 25_000, ..w };
        assert_eq!(CapacityEvent::validate(&ok, r).unwrap().to_wire(), ok);
    });
}
