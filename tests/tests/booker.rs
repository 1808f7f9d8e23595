//! The booker role on the real stack: carriers' offers and an allocation of
//! their lane become PLANNED shipments on the carrier's partner topic
//! (through the fanout) exactly once, split where one offer is too small;
//! a withdrawn or too-slow offer is never used; what no offer carries is a
//! booking record of its own.

use orelink_codec::Record;
use orelink_domain::TransportMode;
use orelink_domain::events::{ShipmentStatus, TransportOfferKind, wire};
use orelink_domain::topology::topics;
use orelink_tests::TestEnv;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_795_000_000_000;
const HOUR: i64 = 3_600_000;
/// Guiyun Road Haulage (`topology/partners.toml`).
const TRUCKS: &str = "91451200MA5L0GYH4H";

fn offer(id: &str, kind: TransportOfferKind, kg: i64, price: i64, transit_hours: i64) -> wire::TransportOffer {
    wire::TransportOffer {
        event_id: format!("evt-{id}-{kind:?}"),
        event_time: T0,
        offer_id: id.into(),
        kind,
        carrier_id: TRUCKS.into(),
        mode: TransportMode::Road,
        from_cluster: "baise".into(),
        to_cluster: "nanning".into(),
        capacity_kg: kg,
        available_from: T0,
        available_until: T0 + 72 * HOUR,
        price_cny_per_t: price,
        transit_hours,
    }
}

/// 90 t of Baise aluminium for Nanning, leaving in an hour, due in ten days.
fn allocation() -> wire::Allocation {
    wire::Allocation {
        allocation_id: "ALC-ORD-BK-1-1".into(),
        order_id: "ORD-BK-1".into(),
        capacity_id: "CAP-BK-1".into(),
        order_cluster: "nanning".into(),
        capacity_cluster: "baise".into(),
        buyer_id: "91450100MA5L0ABC1X".into(),
        provider_id: "91451000MA5L0PRV1Y".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 90_000,
        price_cny_per_t: 20_400,
        freight_cny_per_t: 120,
        from_site: "baise-pingguo-smelter".into(),
        destination_site: "nanning-jiangnan-processing".into(),
        decided_at: T0,
        explanation: wire::Explanation {
            rank: 1,
            home_cluster: false,
            requested_product_code: "AL-INGOT-AL99.70".into(),
            landed_cost_cny_per_t: 20_520,
            distance_km: 250,
            transit_hours: 10,
            mode: TransportMode::Road,
            energy_kwh_per_t: None,
            summary: "test".into(),
        },
        pick_up: Some(T0 + HOUR),
        deliver_by: Some(T0 + 240 * HOUR),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_allocation_is_booked_onto_fitting_offers_and_planned_on_the_carriers_topic_once() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let cancel = CancellationToken::new();
    let booker = tokio::spawn(orelink_booker::run(env.role_config("booker", "bk"), env.reference.clone(), cancel.clone()));
    let fanout = {
        let (cfg, reference, cancel) = (env.role_config("fanout", "bk"), env.reference.clone(), cancel.clone());
        tokio::spawn(async move { orelink_fanout::run(&cfg, &reference, cancel).await })
    };

    // The lane's offers: two that fit (the cheaper one smaller), one whose
    // transit misses the deadline, and the cheapest, withdrawn.
    let offers = env.topic(topics::TRANSPORT_OFFERS);
    for o in [
        offer("OFF-DEAR", TransportOfferKind::Offered, 40_000, 110, 8),
        offer("OFF-CHEAP", TransportOfferKind::Offered, 30_000, 100, 8),
        offer("OFF-SLOW", TransportOfferKind::Offered, 200_000, 60, 400),
        offer("OFF-GONE", TransportOfferKind::Offered, 200_000, 40, 8),
        offer("OFF-GONE", TransportOfferKind::Withdrawn, 200_000, 40, 8),
    ] {
        env.produce(&offers, "baise>nanning", &codec.encode(&offers, &o).await.unwrap()).await;
    }
    // The router reads offers and allocations independently: let the offers
    // reach the lane first, so the allocation is what books.
    let lanes = env.topic(topics::LANES);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.read_topic(&lanes).await.len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "the offers never reached the lanes topic");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The allocation, and a repeat of it (a matcher's duplicate after a crash is another record of the same id).
    let allocations = env.topic(topics::ALLOCATIONS);
    let bytes = codec.encode(&allocations, &allocation()).await.unwrap();
    env.produce(&allocations, "AL-INGOT", &bytes).await;
    env.produce(&allocations, "AL-INGOT", &bytes).await;

    // On the carrier's partner topic: the two parts, cheaper offer first.
    let partner = env.reference.topology.partner_by_carrier(TRUCKS).unwrap().id.clone();
    let partner_topic = env.topic(&topics::partner(partner.as_str()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.read_topic(&partner_topic).await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no planned shipments on {partner_topic}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every lanes record applied (both copies of the allocation): what the
    // booker wrote is all there is, and the fanout routed each of it once.
    env.wait_caught_up(&orelink_booker::processor_group(&env.cfg), std::slice::from_ref(&lanes), Duration::from_secs(60)).await;
    assert_eq!(env.read_topic(&env.topic(topics::SHIPMENTS)).await.len(), 2, "the repeat planned nothing");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut planned = Vec::new();
    for m in env.read_topic(&partner_topic).await {
        use rdkafka::Message;
        let Record::Shipment(s) = codec.decode(&partner_topic, m.payload()).await.unwrap() else { panic!("not a shipment") };
        planned.push((s.shipment_id.to_string(), s.quantity.to_wire(), s.status, s.eta.map(|t| t.0)));
    }
    planned.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        planned,
        [
            ("SHP-ALC-ORD-BK-1-1-1".to_owned(), 30_000, ShipmentStatus::Planned, Some(T0 + HOUR + 8 * HOUR)),
            ("SHP-ALC-ORD-BK-1-1-2".to_owned(), 40_000, ShipmentStatus::Planned, Some(T0 + HOUR + 8 * HOUR)),
        ],
        "split over the two fitting offers, once"
    );
    // The booking records: the two parts on their offers, and the 20 t no offer could carry.
    let bookings = env.topic(topics::BOOKINGS);
    let mut got = Vec::new();
    for m in env.read_topic(&bookings).await {
        use rdkafka::Message;
        assert_eq!(m.key(), Some(&b"baise>nanning"[..]));
        let Record::Booking(b) = codec.decode(&bookings, m.payload()).await.unwrap() else { panic!("not a booking") };
        got.push((b.booking_id, b.booked, b.quantity_kg, b.offer_id, b.price_cny_per_t, b.planning_freight_cny_per_t));
    }
    assert_eq!(
        got,
        [
            ("BKG-ALC-ORD-BK-1-1-1".to_owned(), true, 30_000, Some("OFF-CHEAP".to_owned()), Some(100), 120),
            ("BKG-ALC-ORD-BK-1-1-2".to_owned(), true, 40_000, Some("OFF-DEAR".to_owned()), Some(110), 120),
            ("UNB-ALC-ORD-BK-1-1".to_owned(), false, 20_000, None, None, 120),
        ],
        "the withdrawn and the too-slow offers carry nothing; the repeat books nothing"
    );

    cancel.cancel();
    let stats = booker.await.unwrap().unwrap();
    assert_eq!((stats.processor.planned, stats.processor.bookings, stats.processor.dead_lettered), (2, 3, 0), "{stats:?}");
    fanout.await.unwrap().unwrap();
}
