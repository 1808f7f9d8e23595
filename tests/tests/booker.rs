//! The booker role on the real stack: carriers' offers and an allocation of
//! their lane become PLANNED shipments on the carrier's partner topic
//! (through the fanout) exactly once, split where one offer is too small;
//! a withdrawn or too-slow offer is never used; what no offer carries is a
//! booking record of its own. And the booker killed with SIGKILL mid-stream
//! and restarted, or handing its lanes from one instance to another: the
//! committed bookings are what a replay of the lanes topic through the pure
//! engine makes, nothing lost or doubled.

use orelink_codec::Record;
use orelink_domain::events::{ShipmentStatus, TransportOfferKind, wire};
use orelink_domain::topology::topics;
use orelink_tests::{TRUCKS, TestEnv, allocation_wire, offer_wire};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const T0: i64 = orelink_tests::FIXTURE_MS;
const HOUR: i64 = 3_600_000;

fn offer(id: &str, kind: TransportOfferKind, kg: i64, price: i64, transit_hours: i64) -> wire::TransportOffer {
    offer_wire(id, kind, ("baise", "nanning"), kg, price, transit_hours, T0)
}

/// 90 t of Baise aluminium for Nanning, leaving in an hour, due in ten days.
fn allocation() -> wire::Allocation {
    allocation_wire("ALC-ORD-BK-1-1", ("baise", "nanning"), 90_000, T0 + HOUR, T0 + 240 * HOUR)
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

const LANES: [(&str, &str); 5] = [("baise", "nanning"), ("baise", "baise"), ("hechi", "nanning"), ("fangchenggang", "nanning"), ("hechi", "hechi")];

/// A seeded stream of offers, withdrawals and allocations on five lanes:
/// (contract topic, key, record).
fn lane_workload(n: usize) -> Vec<(&'static str, String, Result<wire::TransportOffer, wire::Allocation>)> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let (mut out, mut offered) = (Vec::new(), Vec::new());
    for i in 0..n {
        let lane = LANES[next(LANES.len() as u64) as usize];
        let key = format!("{}>{}", lane.0, lane.1);
        let at = T0 + next(96) as i64 * HOUR;
        match next(20) {
            0..=7 => {
                let o = offer_wire(&format!("OFF-{i}"), TransportOfferKind::Offered, lane, (20 + next(180) as i64) * 1_000, 50 + next(100) as i64, 4 + next(56) as i64, at);
                offered.push(o.clone());
                out.push((topics::TRANSPORT_OFFERS, key, Ok(o)));
            }
            8 if !offered.is_empty() => {
                let mut o = offered.swap_remove(next(offered.len() as u64) as usize);
                o.kind = TransportOfferKind::Withdrawn;
                o.event_id = format!("{}-w", o.event_id);
                let key = format!("{}>{}", o.from_cluster, o.to_cluster);
                out.push((topics::TRANSPORT_OFFERS, key, Ok(o)));
            }
            _ => {
                let a = allocation_wire(&format!("ALC-ORD-BK-{i}-1"), lane, (10 + next(70) as i64) * 1_000, at, at + (24 + next(176) as i64) * HOUR);
                out.push((topics::ALLOCATIONS, "AL-INGOT".into(), Err(a)));
            }
        }
    }
    out
}

/// Per lane, the bookings (id, booked, kg, offer) in the order written.
type ByLane = std::collections::BTreeMap<String, Vec<(String, bool, i64, Option<String>)>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_books_what_a_replay_books() {
    use std::process::{Command, Stdio};
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let log = std::env::temp_dir().join(format!("orelink-booker-crash-{}.log", env.ns.trim_end_matches('.')));
    let start = || {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        orelink_tests::KillOnDrop(
            Command::new(orelink_tests::orelink_bin())
                .args(["run", "booker"])
                .envs(env.process_env("crash"))
                // Kafka's default: a restart that waited for its dead predecessor would stall 45 s.
                .env("ORELINK__KAFKA__SESSION_TIMEOUT_MS", "45000")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("orelink starts"),
        )
    };
    let mut booker = start();
    let producing = produce_lanes(&env, &codec, 4_000);
    // Kill it once it has committed bookings and while input still arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.written(topics::BOOKINGS).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no bookings before the kill; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!producing.is_finished(), "the kill must happen mid-stream");
    booker.kill();
    let at_kill = env.written(topics::BOOKINGS).await;
    let mut booker = start();
    producing.await.unwrap();
    let lanes = env.topic(topics::LANES);
    env.wait_caught_up(&orelink_booker::router_group(&env.cfg), &[env.topic(topics::ALLOCATIONS), env.topic(topics::TRANSPORT_OFFERS)], Duration::from_secs(120)).await;
    env.wait_caught_up(&orelink_booker::processor_group(&env.cfg), std::slice::from_ref(&lanes), Duration::from_secs(120)).await;
    // Graceful stop: SIGTERM, drain, commit, exit 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(booker.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = booker.0.wait().unwrap();
    assert!(status.success(), "the restarted booker did not exit cleanly ({status}); see {}", log.display());

    assert_bookings_equal_a_replay(&env, &codec, at_kill.max(1)).await;
    let _ = std::fs::remove_file(&log);
}

/// The committed bookings, per lane, are what a replay of the lanes topic
/// (each partition in order, through a fresh engine) makes; more than
/// `at_least` of them, booked parts and unbooked remainders both.
async fn assert_bookings_equal_a_replay(env: &TestEnv, codec: &std::sync::Arc<orelink_codec::Codec>, at_least: i64) {
    use rdkafka::Message;
    // The replay: each lanes partition in order through a fresh engine.
    let lanes = env.topic(topics::LANES);
    let input = env.read_topic(&lanes).await;
    let (codec2, rt, horizon_ms) = (codec.clone(), tokio::runtime::Handle::current(), env.cfg.matcher.dedup_horizon_ms);
    let expected: ByLane = tokio::task::spawn_blocking(move || {
        let (mut books, mut want) = (std::collections::BTreeMap::new(), ByLane::new());
        for m in &input {
            let Ok(read) = orelink_booker::read_of(&codec2, &rt, m) else { continue };
            let book = books.entry(m.partition()).or_insert_with(|| orelink_domain::booking::Booker::with_horizon(horizon_ms));
            let mut outputs = Vec::new();
            let (input, allocation) = match &read {
                orelink_booker::Read::Allocation(a) => (orelink_domain::booking::Input::Allocation(orelink_domain::booking::ToBook {
                    allocation_id: a.allocation_id.clone(),
                    lane: orelink_domain::booking::Lane::new(&a.capacity_cluster, &a.order_cluster),
                    quantity_kg: a.quantity_kg,
                    pick_up: a.pick_up.unwrap(),
                    deliver_by: a.deliver_by.unwrap(),
                }), Some(a)),
                orelink_booker::Read::Offer(i) => (i.clone(), None),
            };
            book.apply(&input, orelink_booker::log_ms(m), &mut outputs);
            if let Some(a) = allocation {
                for (lane, b) in orelink_booker::render(a, &outputs).1 {
                    want.entry(lane.key()).or_default().push((b.booking_id, b.booked, b.quantity_kg, b.offer_id));
                }
            }
        }
        want
    })
    .await
    .unwrap();
    let bookings = env.topic(topics::BOOKINGS);
    let mut actual = ByLane::new();
    for m in env.read_topic(&bookings).await {
        let Record::Booking(b) = codec.decode(&bookings, m.payload()).await.unwrap() else { panic!("not a booking") };
        actual.entry(String::from_utf8_lossy(m.key().unwrap()).into_owned()).or_default().push((b.booking_id, b.booked, b.quantity_kg, b.offer_id));
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total as i64 > at_least, "{total} bookings, not more than {at_least}");
    assert!(expected.values().flatten().any(|b| b.1) && expected.values().flatten().any(|b| !b.1), "both booked parts and unbooked remainders");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (lane, want) in &expected {
        let got = &actual[lane];
        if got != want {
            let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
            let extra: Vec<_> = got.iter().filter(|w| !want.contains(w)).collect();
            panic!("{lane}: {} committed, {} from the replay; not committed: {missing:?}; not in the replay: {extra:?}", got.len(), want.len());
        }
    }
}

/// Produces [`lane_workload`] of `n` records, 100 every 100 ms, in the background.
fn produce_lanes(env: &TestEnv, codec: &std::sync::Arc<orelink_codec::Codec>, n: usize) -> tokio::task::JoinHandle<()> {
    let (codec, env) = (codec.clone(), env.clone());
    tokio::spawn(async move {
        let producer = env.producer();
        for chunk in lane_workload(n).chunks(100) {
            for (topic, key, record) in chunk {
                let topic = env.topic(topic);
                let bytes = match record {
                    Ok(o) => codec.encode(&topic, o).await.unwrap(),
                    Err(a) => codec.encode(&topic, a).await.unwrap(),
                };
                producer.send(rdkafka::producer::FutureRecord::to(&topic).key(key).payload(&bytes), Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_lanes_and_hand_over_without_loss_or_duplicates() {
    // The bookers' restores and stops, shown if the test fails (`RUST_LOG` overrides).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = tokio::spawn(orelink_booker::run(env.role_config("booker", "a"), env.reference.clone(), stop_a.clone()));
    let b = tokio::spawn(orelink_booker::run(env.role_config("booker", "b"), env.reference.clone(), stop_b.clone()));
    let producing = produce_lanes(&env, &codec, 8_000);
    // Both instances hold lanes partitions, and a has committed on one of its own.
    let (group, lanes) = (orelink_booker::processor_group(&env.cfg), env.topic(topics::LANES));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mine = env.group_assignment(&group, &lanes).await.filter(|m| m.len() == 2).and_then(|m| m.into_iter().find(|(id, _)| id.ends_with("-a-booker")).map(|(_, p)| p));
        if let Some(mine) = mine {
            let committed = env.committed(&group, &lanes).await;
            if mine.iter().any(|p| committed.get(p).is_some_and(|o| *o > 0)) {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "instance a never committed on a lanes partition of its own");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Instance a leaves mid-stream: it drains and commits, and b takes its lanes over.
    assert!(!producing.is_finished(), "the handover must happen mid-stream");
    eprintln!("before a stops: assignment {:?}, committed {:?}", env.group_assignment(&group, &lanes).await, env.committed(&group, &lanes).await);
    stop_a.cancel();
    let a = a.await.unwrap().unwrap();
    eprintln!("after a stopped: committed {:?}", env.committed(&group, &lanes).await);
    let at_handover = env.written(topics::BOOKINGS).await;
    producing.await.unwrap();
    env.wait_caught_up(&orelink_booker::router_group(&env.cfg), &[env.topic(topics::ALLOCATIONS), env.topic(topics::TRANSPORT_OFFERS)], Duration::from_secs(120)).await;
    env.wait_caught_up(&orelink_booker::processor_group(&env.cfg), &[env.topic(topics::LANES)], Duration::from_secs(120)).await;
    stop_b.cancel();
    let b = b.await.unwrap().unwrap();
    assert!(a.processor.events > 0 && b.processor.events > 0, "both instances booked: {a:?} {b:?}");
    assert_bookings_equal_a_replay(&env, &codec, at_handover.max(1)).await;
}
