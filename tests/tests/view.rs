//! The view role on the real stack: its numbers equal an independent
//! recomputation from the topics after a run with duplicate input and a view
//! restart; after FLUSHALL, `view rebuild` restores the same numbers; the API
//! refuses requests without an operator token (checked by its digest), and a
//! token in the URL anywhere but on the event stream.

use orelink_codec::Record;
use orelink_domain::topology::topics;
use orelink_platform::Config;
use orelink_tests::TestEnv;
use orelink_tests::view::{assert_cells_eq, recompute, recompute_in_period, served, served_in_period, wait_share_caught_up, wait_view_caught_up};
use rdkafka::Message;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "op-test-token";

/// The recomputation test wipes Redis (FLUSHALL) to show the view recovers;
/// a test of this file that reads its own keys meanwhile waits for it.
static REDIS_WIPES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Baise's operators: their cluster's data, others' only as shared with them.
const BAISE_TOKEN: &str = "op-baise-token";

fn view_config(env: &TestEnv) -> Config {
    let mut cfg = env.role_config("view", "view-test");
    cfg.view.listen = "127.0.0.1:0".into();
    cfg.view.operator_token_digests = format!("{},{}@baise", orelink_platform::config::sha256_hex(TOKEN), orelink_platform::config::sha256_hex(BAISE_TOKEN));
    cfg
}

fn start_view(env: &TestEnv, cancel: CancellationToken) -> (tokio::task::JoinHandle<orelink_view::Applied>, tokio::sync::oneshot::Receiver<SocketAddr>) {
    start_view_with(env, view_config(env), cancel)
}

fn start_view_with(env: &TestEnv, cfg: Config, cancel: CancellationToken) -> (tokio::task::JoinHandle<orelink_view::Applied>, tokio::sync::oneshot::Receiver<SocketAddr>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let r = env.reference.clone();
    let task = tokio::spawn(async move {
        orelink_view::run_with(&cfg, &r, cancel, move |a| {
            let _ = tx.send(a);
        })
        .await
        .expect("the view runs and stops cleanly")
    });
    (task, rx)
}

async fn api(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// `GET path` with `token`: the status and the JSON body.
async fn get_as(addr: SocketAddr, path: &str, token: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A Baise token sees Baise and what Baise takes part in, never Hechi's
/// orders (buyer ids, price caps) or numbers.
async fn a_cluster_token_sees_its_cluster_only(addr: SocketAddr) {
    let (status, hechi) = get_as(addr, "/api/v1/orders/open?cluster=hechi&limit=500", TOKEN).await;
    assert_eq!(status, 200);
    assert!(hechi["orders"].as_array().unwrap().iter().any(|o| o["buyer_id"].is_string()), "Hechi has open orders with buyer ids to hide: {hechi}");
    for path in ["/api/v1/orders/open?cluster=hechi", "/api/v1/clusters/hechi", "/api/v1/cells?cluster=hechi", "/api/v1/timeseries?cluster=hechi&family=SN-INGOT", "/api/v1/orders/shared?cluster=hechi&direction=out"] {
        let (status, body) = get_as(addr, path, BAISE_TOKEN).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{path}: {body}");
    }
    assert_eq!(get_as(addr, "/api/v1/orders/open?cluster=baise", BAISE_TOKEN).await.0, 200);
    let (_, clusters) = get_as(addr, "/api/v1/clusters", BAISE_TOKEN).await;
    assert_eq!(clusters["clusters"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect::<Vec<_>>(), ["baise"]);
    let (_, cells) = get_as(addr, "/api/v1/cells", BAISE_TOKEN).await;
    assert!(cells["cells"].as_array().unwrap().iter().all(|c| c["cluster"] == "baise") && !cells["cells"].as_array().unwrap().is_empty());
    // The allocations Baise takes part in, no others, and none of them missing.
    let touches_baise = |a: &serde_json::Value| a["order_cluster"] == "baise" || a["capacity_cluster"] == "baise";
    let (_, all) = get_as(addr, "/api/v1/allocations/latest?limit=200", TOKEN).await;
    let (_, mine) = get_as(addr, "/api/v1/allocations/latest?limit=200", BAISE_TOKEN).await;
    let expected: Vec<&serde_json::Value> = all["allocations"].as_array().unwrap().iter().filter(|a| touches_baise(a)).collect();
    assert_eq!(mine["allocations"].as_array().unwrap().iter().collect::<Vec<_>>(), expected);
    assert!(expected.len() < all["allocations"].as_array().unwrap().len(), "some allocations are none of Baise's business");
    // Another cluster's order with no Baise part: not there for Baise.
    let mut checked = false;
    for a in all["allocations"].as_array().unwrap().iter().filter(|a| !touches_baise(a)) {
        let path = format!("/api/v1/orders/{}/allocations", a["order_id"].as_str().unwrap());
        let (status, order) = get_as(addr, &path, TOKEN).await;
        assert_eq!(status, 200, "{path}");
        if order["allocations"].as_array().unwrap().iter().any(touches_baise) {
            continue;
        }
        assert_eq!(get_as(addr, &path, BAISE_TOKEN).await.0, 404, "{path}");
        checked = true;
        break;
    }
    assert!(checked, "no order outside Baise among the latest allocations");
}

/// Totals over a period: what each period covers ends at the view's clock,
/// and its figures equal a recomputation over that span of event time; the
/// periods do not all agree (the workload spans more than a day of event
/// time, so the last 24 h hold less than everything).
async fn periods_equal_a_recomputation(addr: SocketAddr, records: &[(String, Record)]) {
    let clock = api(addr, "/api/v1/cells").await["period"]["clock_ms"].as_i64().expect("the view has a clock");
    // The day before the clock's, in China Standard Time.
    let yesterday = orelink_view::store::date_of((clock + 8 * 3_600_000).div_euclid(86_400_000) - 1);
    let mut seen = Vec::new();
    for query in ["period=all".to_owned(), "period=7d".to_owned(), "period=24h".to_owned(), format!("since={yesterday}")] {
        let (from, to, got) = served_in_period(addr, TOKEN, &query).await;
        assert!(to > clock && from.is_none_or(|f| f <= clock), "{query}: [{from:?}, {to}) does not end at the clock {clock}");
        assert_eq!(got, recompute_in_period(records, from, to), "{query}: the view's totals differ from the recomputation");
        seen.push(got);
    }
    assert!(!seen[0].is_empty(), "nothing in the period of everything");
    // The series of a period add up to its totals, per minute, hour and day.
    for (i, query) in [(2, "period=24h"), (1, "period=7d"), (0, "period=all")] {
        let Some(((c, f), want)) = seen[i].iter().next() else { continue };
        let s = api(addr, &format!("/api/v1/timeseries?cluster={c}&family={f}&{query}")).await;
        let sum = |n: &str| s["points_kg"][n].as_array().unwrap().iter().map(|p| p[1].as_i64().unwrap()).sum::<i64>();
        assert_eq!([sum("declared"), sum("allocated"), sum("demand")], *want, "{query}: the series of {c}/{f} do not add up to its totals ({})", s["period"]);
    }
    assert_ne!(seen[0], seen[2], "the last 24 h hold as much as everything: the workload is too short to tell periods apart");
    let (status, body) = get_as(addr, "/api/v1/cells?period=30d", TOKEN).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("expected 24h, 7d or all"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn view_numbers_equal_a_recomputation_and_survive_duplicates_restarts_and_flushall() {
    let _alone = REDIS_WIPES.lock().await;
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let hub = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "view-test"), env.reference.clone(), hub.clone()));
    let share = {
        let (cfg, r, c) = (env.as_role("share"), env.reference.clone(), hub.clone());
        tokio::spawn(async move { orelink_share::run(&cfg, &r, c).await })
    };
    let view_stop = CancellationToken::new();
    let (view, bound) = start_view(&env, view_stop.clone());
    let addr = bound.await.unwrap();

    // The API wants an operator token; the health endpoints do not.
    let anon = reqwest::get(format!("http://{addr}/api/v1/cells")).await.unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(anon.json::<serde_json::Value>().await.unwrap()["error"], "unauthorized");
    // A token in the URL is taken on the event stream only (URLs end up in logs).
    assert_eq!(reqwest::get(format!("http://{addr}/api/v1/cells?token={TOKEN}")).await.unwrap().status(), 401);
    assert_eq!(reqwest::Client::new().get(format!("http://{addr}/api/v1/cells")).bearer_auth("not-a-token").send().await.unwrap().status(), 401);
    assert_eq!(reqwest::get(format!("http://{addr}/healthz")).await.unwrap().status(), 200);
    let bad = reqwest::Client::new().get(format!("http://{addr}/api/v1/orders/open?cluster=mars")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(bad.status(), 404);

    // A simulated workload (with malformed events), half of it before a view
    // restart. Its clock starts two days back, so it stays behind the wall
    // clock and every delayed share falls due.
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 2 * 86_400_000;
    let sim = |secs: u64, seed: u64| {
        let (cfg, r) = (env.cfg.clone(), env.reference.clone());
        async move { orelink_simulator::run(&cfg, &r, seed, start, 400, Duration::from_secs(secs), CancellationToken::new()).await.unwrap() }
    };
    sim(3, 11).await;
    view_stop.cancel();
    let first = view.await.unwrap();
    assert!(first.read > 0, "the view read nothing before its restart");
    let view_stop = CancellationToken::new();
    let (view, bound) = start_view(&env, view_stop.clone());
    let addr = bound.await.unwrap();
    sim(3, 12).await;
    // Duplicates at new offsets: capacity the simulator declared (on the
    // market topic), declared again byte for byte, as a door's retry would.
    let (cap_topic, market) = (env.topic(topics::CAPACITY), env.topic(topics::MARKET));
    let producer = env.producer();
    let mut dups = Vec::new();
    for m in env.read_topic(&market).await {
        if dups.len() < 40 && matches!(codec.decode(&market, m.payload()).await, Ok(Record::Capacity(_))) {
            dups.push(m);
        }
    }
    assert_eq!(dups.len(), 40, "the simulator declared too little capacity");
    futures::future::join_all(dups.iter().map(|m| producer.send(rdkafka::producer::FutureRecord::to(&market).key(m.key().unwrap()).payload(m.payload().unwrap()), Duration::from_secs(30))))
        .await
        .into_iter()
        .for_each(|r| assert!(r.is_ok(), "duplicate not produced"));
    // Capacity declared (priced above every order's cap, so it stays open),
    // then withdrawn by an event naming another cluster: it leaves its own
    // cluster's numbers, not the other's. Written as a Kafka client writes,
    // to the capacity topic, for the router to forward.
    let Ok(Record::Capacity(first)) = codec.decode(&market, dups[0].payload()).await else { panic!("not a capacity") };
    let declared = orelink_domain::events::wire::CapacityEvent { event_id: "view-test-unsold".into(), capacity_id: "CAP-VIEW-UNSOLD".into(), kind: orelink_domain::events::CapacityKind::Declared, price_cny_per_t: 900_000, ..first.to_wire() };
    let elsewhere = env.reference.topology.sites().find(|s| s.cluster.as_ref().is_some_and(|c| *c != first.cluster)).expect("a site of another cluster");
    let withdrawal = orelink_domain::events::wire::CapacityEvent {
        event_id: "view-test-unsold-withdrawn".into(),
        kind: orelink_domain::events::CapacityKind::Withdrawn,
        cluster: elsewhere.cluster.as_ref().unwrap().to_string(),
        site_id: elsewhere.id.to_string(),
        ..declared.clone()
    };
    // And one declared three days before the workload (unsold too): it is
    // in the totals of everything and of the last 7 days, not of the last 24 h.
    let old = orelink_domain::events::wire::CapacityEvent {
        event_id: "view-test-old".into(),
        capacity_id: "CAP-VIEW-OLD".into(),
        event_time: start - 3 * 86_400_000,
        ..declared.clone()
    };
    for c in [declared, withdrawal, old] {
        env.produce(&cap_topic, first.product.family_str(), &codec.encode(&cap_topic, &c).await.unwrap()).await;
    }
    // The simulated Guangxi trades mostly in Baise: make sure of business that
    // is none of Baise's (a Nanning order filled in Nanning, whichever of its
    // order and capacity the matcher sees first) and of an open Hechi order.
    let orders = env.topic(topics::ORDERS);
    let nanning = orelink_domain::events::wire::OrderEvent { event_id: "view-test-nn".into(), order_id: "ORD-VIEW-NN".into(), allow_cross_cluster: false, ..orelink_tests::order_wire(900) };
    let hechi = orelink_domain::events::wire::OrderEvent {
        event_id: "view-test-hc".into(),
        order_id: "ORD-VIEW-HC".into(),
        cluster: "hechi".into(),
        destination_site: "hechi-yizhou-processing".into(),
        product_code: "ZN-INGOT-ZN99.95".into(),
        max_price_cny_per_t: 1_000,
        ..orelink_tests::order_wire(901)
    };
    for o in [nanning, hechi] {
        let family = orelink_domain::catalog::family_of(&o.product_code).to_owned();
        env.produce(&orders, &family, &codec.encode(&orders, &o).await.unwrap()).await;
    }
    let nanning_cap = orelink_tests::capacity_wire(900, "nanning-jiangnan-processing", "nanning", "AL-INGOT-AL99.85", 250_000, 20_300);
    env.produce(&cap_topic, "AL-INGOT", &codec.encode(&cap_topic, &nanning_cap).await.unwrap()).await;
    env.wait_caught_up(&orelink_matcher::router_group(&env.cfg), &[orders.clone(), cap_topic.clone()], Duration::from_secs(90)).await;
    env.wait_caught_up(&orelink_matcher::processor_group(&env.cfg), std::slice::from_ref(&market), Duration::from_secs(90)).await;
    wait_share_caught_up(&env).await;
    let records = wait_view_caught_up(&env, &codec).await;
    let expected = recompute(&records);
    assert!(expected.values().any(|c| c["allocations"] > 0), "the workload allocated nothing");
    assert!(expected.values().any(|c| c["shared_in"] > 0 || c["shared_out"] > 0) || records.iter().any(|(_, r)| matches!(r, Record::SharedOrder(_))), "nothing was shared");
    assert_cells_eq(&served(addr, TOKEN).await, &expected, "the view differs from the recomputation");
    periods_equal_a_recomputation(addr, &records).await;
    a_cluster_token_sees_its_cluster_only(addr).await;
    let dead = api(addr, "/api/v1/dead-letters").await;
    let dl: i64 = dead["by_class"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(dl, records.iter().filter(|(_, r)| matches!(r, Record::DeadLetter(_))).count() as i64);

    // Redis is a cache: wiped, rebuilt from Kafka, the same numbers.
    view_stop.cancel();
    view.await.unwrap();
    let client = redis::Client::open(env.cfg.redis.url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    let (_, rebuilt) = orelink_view::rebuild(&view_config(&env), &env.reference, CancellationToken::new()).await.unwrap();
    assert!(rebuilt.read >= records.len() as u64, "the rebuild read {} of {} records", rebuilt.read, records.len());
    let view_stop = CancellationToken::new();
    let (view, bound) = start_view(&env, view_stop.clone());
    let addr = bound.await.unwrap();
    assert_cells_eq(&served(addr, TOKEN).await, &expected, "the rebuilt view differs from the recomputation");

    // A FLUSHALL under a running view: it notices and recomputes by itself.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    let family = std::str::from_utf8(dups[0].key().unwrap()).unwrap();
    env.produce(&market, family, dups[0].payload().unwrap()).await;
    wait_view_caught_up(&env, &codec).await;
    assert_cells_eq(&served(addr, TOKEN).await, &expected, "the view did not recover from a FLUSHALL");

    view_stop.cancel();
    view.await.unwrap();
    hub.cancel();
    matcher.await.unwrap().unwrap();
    share.await.unwrap().unwrap();
}

/// A closed order (its status and allocations) and a used-up capacity leave
/// Redis `view.closed_retention_ms` after they closed; an open order stays;
/// the totals keep their numbers, so the view grows with what is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_orders_and_capacity_leave_redis_and_their_numbers_stay() {
    // Long enough for the checks below to see the expiries before they fire
    // on a slow machine; the test then waits out what is left of them.
    const RETAIN_MS: i64 = 15_000;
    let _alone = REDIS_WIPES.lock().await;
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let hub = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "view-retention"), env.reference.clone(), hub.clone()));
    let mut cfg = view_config(&env);
    cfg.view.closed_retention_ms = RETAIN_MS;
    let view_stop = CancellationToken::new();
    let (view, bound) = start_view_with(&env, cfg, view_stop.clone());
    let addr = bound.await.unwrap();

    // 400 t of capacity; the first order (250 t) fills and closes, the second
    // takes the other 150 t and stays open; the capacity is used up.
    let cap_topic = env.topic(topics::CAPACITY);
    let cap = orelink_tests::capacity_wire(1, "nanning-jiangnan-processing", "nanning", "AL-INGOT-AL99.85", 400_000, 20_300);
    env.produce(&cap_topic, "AL-INGOT", &codec.encode(&cap_topic, &cap).await.unwrap()).await;
    let input = env.topic(topics::MARKET);
    env.wait_for_a_record(&input, "the capacity never reached the market topic").await;
    let orders = env.topic(topics::ORDERS);
    for n in [1, 2] {
        env.produce(&orders, "AL-INGOT", &codec.encode(&orders, &orelink_tests::order_wire(n)).await.unwrap()).await;
    }
    env.wait_caught_up(&orelink_matcher::processor_group(&env.cfg), &[input], Duration::from_secs(60)).await;
    let records = wait_view_caught_up(&env, &codec).await;
    let numbers = served(addr, TOKEN).await;
    assert_cells_eq(&numbers, &recompute(&records), "the view differs from the recomputation");

    let client = redis::Client::open(env.cfg.redis.url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let key = |k: &str| format!("{}view:{k}", env.ns);
    let (filled, open, used_up) = (key("ord:AL-INGOT|ORD-NN-00001"), key("ord:AL-INGOT|ORD-NN-00002"), key("cap:AL-INGOT|CAP-1"));
    let filled_allocations = key("alo:AL-INGOT|ORD-NN-00001");
    let mut longest = 0;
    for k in [&filled, &filled_allocations, &used_up] {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query_async(&mut con).await.unwrap();
        assert!((1..=RETAIN_MS).contains(&ttl), "{k}: closed, but its expiry is {ttl} ms");
        longest = longest.max(ttl);
    }
    let ttl: i64 = redis::cmd("PTTL").arg(&open).query_async(&mut con).await.unwrap();
    assert_eq!(ttl, -1, "the open order's status must stay");
    assert_eq!(api(addr, "/api/v1/orders/ORD-NN-00001/allocations").await["allocations"].as_array().unwrap().len(), 1);

    tokio::time::sleep(Duration::from_millis(longest as u64 + 500)).await;
    let gone: i64 = redis::cmd("EXISTS").arg(&filled).arg(&filled_allocations).arg(&used_up).query_async(&mut con).await.unwrap();
    assert_eq!(gone, 0, "closed entities are still in Redis after their retention");
    let kept: i64 = redis::cmd("EXISTS").arg(&open).query_async(&mut con).await.unwrap();
    assert_eq!(kept, 1);
    assert_cells_eq(&served(addr, TOKEN).await, &numbers, "the totals changed when closed entities left");
    let (status, _) = get_as(addr, "/api/v1/orders/ORD-NN-00001/allocations", TOKEN).await;
    assert_eq!(status, 404, "an order that left the view is not found there (its allocations are in Kafka)");
    assert_eq!(api(addr, "/api/v1/orders/ORD-NN-00002/allocations").await["allocations"].as_array().unwrap().len(), 1);

    view_stop.cancel();
    view.await.unwrap();
    hub.cancel();
    matcher.await.unwrap().unwrap();
}

/// Carriers' lanes in the view: offers from `orelink.transport-offers.v1` and
/// bookings from `orelink.bookings.v1`, read independently, so bookings may
/// come before the offers they use and withdrawals before their offers. The
/// lane's figures are the same whatever the order: bookings first (one of
/// them twice, at two offsets), then the offers, a withdrawal and an offer
/// whose window ended before the lane's latest event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lane_figures_add_up_whatever_order_offers_and_bookings_arrive_in() {
    use orelink_domain::TransportMode;
    use orelink_domain::events::{TransportOfferKind, wire};
    const T0: i64 = 1_795_000_000_000;
    const HOUR: i64 = 3_600_000;
    let _alone = REDIS_WIPES.lock().await;
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let stop = CancellationToken::new();
    let (view, bound) = start_view(&env, stop.clone());
    let addr = bound.await.unwrap();

    let booking = |id: &str, offer: Option<&str>, kg: i64, price: i64, planning: i64, at: i64| wire::Booking {
        booking_id: id.into(),
        allocation_id: format!("ALC-{id}"),
        from_cluster: "baise".into(),
        to_cluster: "nanning".into(),
        booked: offer.is_some(),
        offer_id: offer.map(str::to_owned),
        carrier_id: offer.map(|_| orelink_tests::TRUCKS.to_owned()),
        mode: offer.map(|_| TransportMode::Road),
        quantity_kg: kg,
        pick_up: at,
        arrival: offer.map(|_| at + 8 * HOUR),
        price_cny_per_t: offer.map(|_| price),
        planning_freight_cny_per_t: planning,
        decided_at: at,
    };
    let offer = |id: &str, kind: TransportOfferKind, lane: (&str, &str), kg: i64, until: i64| wire::TransportOffer {
        available_until: until,
        ..orelink_tests::offer_wire(id, kind, lane, kg, 100, 8, T0 - HOUR)
    };
    let bookings = env.topic(topics::BOOKINGS);
    let x1 = codec.encode(&bookings, &booking("BKG-X-1", Some("OFF-A"), 40_000, 100, 120, T0)).await.unwrap();
    for bytes in [
        x1.clone(),
        x1,
        codec.encode(&bookings, &booking("BKG-X-2", Some("OFF-B"), 20_000, 110, 120, T0)).await.unwrap(),
        codec.encode(&bookings, &booking("UNB-X", None, 15_000, 0, 120, T0)).await.unwrap(),
        // Three hours on: offer C's window has ended by then.
        codec.encode(&bookings, &booking("BKG-Y-1", Some("OFF-A"), 10_000, 100, 130, T0 + 3 * HOUR)).await.unwrap(),
    ] {
        env.produce(&bookings, "baise>nanning", &bytes).await;
    }
    let offers = env.topic(topics::TRANSPORT_OFFERS);
    let bn = ("baise", "nanning");
    for o in [
        offer("OFF-B", TransportOfferKind::Withdrawn, bn, 50_000, T0 + 72 * HOUR),
        offer("OFF-A", TransportOfferKind::Offered, bn, 60_000, T0 + 72 * HOUR),
        offer("OFF-B", TransportOfferKind::Offered, bn, 50_000, T0 + 72 * HOUR),
        offer("OFF-C", TransportOfferKind::Offered, bn, 200_000, T0 + 2 * HOUR),
        offer("OFF-D", TransportOfferKind::Offered, ("hechi", "nanning"), 30_000, T0 + 72 * HOUR),
    ] {
        let key = format!("{}>{}", o.from_cluster, o.to_cluster);
        env.produce(&offers, &key, &codec.encode(&offers, &o).await.unwrap()).await;
    }

    // 310 t offered, B withdrawn after 20 t, C past its window: A's 10 t left.
    // Booked 70 t: 40 t and 10 t at 100 CNY/t, 20 t at 110, against 120, 120 and 130 planned.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let lanes = loop {
        let body = api(addr, "/api/v1/lanes").await;
        let l = body["lanes"].as_array().unwrap().iter().find(|l| l["lane"] == "baise>nanning").cloned();
        if l.as_ref().is_some_and(|l| l["offers"] == 3 && l["withdrawn"] == 1 && l["booked_parts"] == 3 && l["unbooked"] == 1) && body["lanes"].as_array().unwrap().len() == 2 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "the view never applied the lanes' records: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let l = lanes["lanes"].as_array().unwrap().iter().find(|l| l["lane"] == "baise>nanning").unwrap();
    let n = |f: &str| l[f].as_i64().unwrap_or_else(|| panic!("{f} in {l}"));
    assert_eq!((n("offered_kg"), n("booked_kg"), n("remaining_kg"), n("unbooked_kg")), (310_000, 70_000, 10_000, 15_000), "{l}");
    let per_t = |f: &str| l[f].as_f64().unwrap();
    assert!((per_t("booked_cny_per_t") - 7_200.0 / 70.0).abs() < 1e-9, "{l}");
    assert!((per_t("planning_cny_per_t") - 8_500.0 / 70.0).abs() < 1e-9, "{l}");
    assert_eq!((l["from_cluster"].as_str(), l["to_cluster"].as_str(), &l["modes"]), (Some("baise"), Some("nanning"), &serde_json::json!(["ROAD"])));
    // The map's clusters, at the centre of their sites.
    let clusters = lanes["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), env.reference.topology.clusters.len());
    assert!(clusters.iter().all(|c| c["sites"].as_array().is_some_and(|s| !s.is_empty()) && c["lat"].as_f64().is_some_and(|lat| (20.0..27.0).contains(&lat))));

    // Baise's operators see the lanes from or to Baise only.
    let (status, baise) = get_as(addr, "/api/v1/lanes", BAISE_TOKEN).await;
    assert_eq!(status, 200);
    let seen: Vec<&str> = baise["lanes"].as_array().unwrap().iter().map(|l| l["lane"].as_str().unwrap()).collect();
    assert_eq!(seen, ["baise>nanning"]);

    stop.cancel();
    view.await.unwrap();
}
