//! The operators' dashboard end to end in headless Chromium (Debian's
//! `chromium`, driven by playwright-core from `tests/browser/`): it loads,
//! shows the numbers the API returns, draws the carriers' lanes between the
//! clusters placed by their coordinates with the tonnes the booker booked,
//! and shows a new allocation live. The screenshot is kept in
//! `tests/artifacts/dashboard.png`.

use orelink_domain::events::{CapacityKind, OrderKind, TransportOfferKind, wire};
use orelink_domain::topology::topics;
use orelink_tests::{TestEnv, allocation_wire, offer_wire};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "dashboard-test-token";

fn order(id: &str, kg: i64) -> wire::OrderEvent {
    wire::OrderEvent {
        event_id: format!("evt-{id}"),
        event_time: 1_795_000_000_000,
        order_id: id.into(),
        kind: OrderKind::Placed,
        cluster: "nanning".into(),
        buyer_id: "91450100MA5L0ABC1X".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: kg,
        deliver_by: 1_795_600_000_000,
        destination_site: "nanning-jiangnan-processing".into(),
        max_price_cny_per_t: 21_000,
        allow_cross_cluster: true,
    }
}

const T0: i64 = orelink_tests::FIXTURE_MS;
const HOUR: i64 = 3_600_000;

/// Room on the Baise -> Nanning road.
fn offer(id: &str, kg: i64, price: i64, transit_hours: i64) -> wire::TransportOffer {
    offer_wire(id, TransportOfferKind::Offered, ("baise", "nanning"), kg, price, transit_hours, T0)
}

/// Baise aluminium for Nanning, as the matcher decides it, leaving in an hour.
fn cross_cluster_allocation(id: &str, kg: i64, deliver_by: i64) -> wire::Allocation {
    allocation_wire(id, ("baise", "nanning"), kg, T0 + HOUR, deliver_by)
}

async fn lane(addr: std::net::SocketAddr, key: &str) -> Option<serde_json::Value> {
    let r = reqwest::Client::new().get(format!("http://{addr}/api/v1/lanes")).bearer_auth(TOKEN).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    body["lanes"].as_array().unwrap().iter().find(|l| l["lane"] == key).cloned()
}

async fn allocations_of(addr: std::net::SocketAddr, order: &str) -> usize {
    let r = reqwest::Client::new().get(format!("http://{addr}/api/v1/orders/{order}/allocations")).bearer_auth(TOKEN).send().await.unwrap();
    if r.status() == 404 {
        return 0;
    }
    r.json::<serde_json::Value>().await.unwrap()["allocations"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_api_numbers_and_updates_live() {
    let (browser_dir, chromium) = orelink_tests::browser();

    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let cancel = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "dashboard"), env.reference.clone(), cancel.clone()));
    let booker = tokio::spawn(orelink_booker::run(env.role_config("booker", "dashboard"), env.reference.clone(), cancel.clone()));
    let mut cfg = env.as_role("view");
    cfg.view.listen = "127.0.0.1:0".into();
    cfg.view.operator_token_digests = orelink_platform::config::sha256_hex(TOKEN);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let view = {
        let (r, c) = (env.reference.clone(), cancel.clone());
        tokio::spawn(async move {
            orelink_view::run_with(&cfg, &r, c, move |a| {
                let _ = tx.send(a);
            })
            .await
        })
    };
    let addr = rx.await.unwrap();

    // Nanning capacity, and a first order it fills.
    let cap = wire::CapacityEvent {
        event_id: "evt-cap-nn".into(),
        event_time: 1_795_000_000_000,
        capacity_id: "CAP-NN-1".into(),
        kind: CapacityKind::Declared,
        cluster: "nanning".into(),
        provider_id: "91451000MA5L0PRV1Y".into(),
        site_id: "nanning-jiangnan-processing".into(),
        product_code: "AL-INGOT-AL99.85".into(),
        quantity_kg: 2_000_000,
        available_from: 1_795_000_000_000,
        available_until: 1_797_000_000_000,
        price_cny_per_t: 20_300,
        min_lot_kg: 25_000,
        energy_kwh_per_t: Some(13_150),
    };
    let (ct, ot) = (env.topic(topics::CAPACITY), env.topic(topics::ORDERS));
    // And capacity declared ten days earlier, priced above every order's cap:
    // in the totals of everything, not in those of the last 7 days.
    let early = wire::CapacityEvent {
        event_id: "evt-cap-nn-early".into(),
        event_time: 1_795_000_000_000 - 10 * 86_400_000,
        capacity_id: "CAP-NN-EARLY".into(),
        price_cny_per_t: 900_000,
        quantity_kg: 700_000,
        ..cap.clone()
    };
    env.produce(&ct, "AL-INGOT", &codec.encode(&ct, &early).await.unwrap()).await;
    env.produce(&ct, "AL-INGOT", &codec.encode(&ct, &cap).await.unwrap()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    // The router reads capacity and orders independently: send the order once the capacity is in the book.
    while env.read_topic(&env.topic(topics::MARKET)).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the capacity never reached the matcher");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.produce(&ot, "AL-INGOT", &codec.encode(&ot, &order("ORD-DASH-A", 300_000)).await.unwrap()).await;
    // Stock at a Nanning site: the page shows it, and days of cover against the order's demand.
    let it = env.topic(topics::INVENTORY);
    let stock = wire::InventoryEvent {
        event_id: "evt-inv-nn".into(),
        event_time: 1_795_000_000_000,
        site_id: "nanning-jiangnan-processing".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        on_hand_kg: 1_250_000,
        reserved_kg: 250_000,
    };
    env.produce(&it, "nanning-jiangnan-processing/AL-INGOT-AL99.70", &codec.encode(&it, &stock).await.unwrap()).await;
    let mut view = view;
    if view.is_finished() {
        panic!("the view stopped: {:?}", (&mut view).await);
    }
    while allocations_of(addr, "ORD-DASH-A").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first allocation never reached the view");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Carriers' room from Baise to Nanning (a cheap and a dearer truck, and a
    // barge too slow for anything), then two allocations of that lane: 80 t
    // due in ten days (60 t on the cheap offer, 20 t on the dearer one) and
    // 15 t due before any offer arrives (unbooked).
    let offers = env.topic(topics::TRANSPORT_OFFERS);
    for o in [offer("OFF-DASH-CHEAP", 60_000, 100, 8), offer("OFF-DASH-DEAR", 50_000, 110, 8), offer("OFF-DASH-SLOW", 200_000, 60, 400)] {
        env.produce(&offers, "baise>nanning", &codec.encode(&offers, &o).await.unwrap()).await;
    }
    let lanes = env.topic(topics::LANES);
    while env.read_topic(&lanes).await.iter().filter(|r| rdkafka::Message::key(*r) == Some(&b"baise>nanning"[..])).count() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the offers never reached the lanes topic");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = env.topic(topics::ALLOCATIONS);
    for a in [cross_cluster_allocation("ALC-DASH-LANE-1", 80_000, T0 + 240 * HOUR), cross_cluster_allocation("ALC-DASH-LANE-2", 15_000, T0 + 5 * HOUR)] {
        env.produce(&at, "AL-INGOT", &codec.encode(&at, &a).await.unwrap()).await;
    }
    let want = |l: &serde_json::Value| {
        (l["booked_kg"].as_i64(), l["unbooked_kg"].as_i64(), l["booked_parts"].as_i64(), l["unbooked"].as_i64()) == (Some(80_000), Some(15_000), Some(2), Some(1))
    };
    let booked = loop {
        match lane(addr, "baise>nanning").await {
            Some(l) if want(&l) => break l,
            other => assert!(tokio::time::Instant::now() < deadline, "the lane's bookings never reached the view: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Room: 310 t offered, 80 t of it booked; freight 60 t at 100 and 20 t at 110 CNY/t against the planning 120.
    assert_eq!((booked["offers"].as_i64(), booked["offered_kg"].as_i64(), booked["remaining_kg"].as_i64()), (Some(3), Some(310_000), Some(230_000)), "{booked}");
    assert_eq!((booked["booked_cny_per_t"].as_f64(), booked["planning_cny_per_t"].as_f64()), (Some(102.5), Some(120.0)), "{booked}");
    assert_eq!(booked["modes"], serde_json::json!(["ROAD"]));

    // Let the order's status land too, so the page and the API see one state.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let shot = orelink_tests::artifact("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut node = tokio::process::Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .args([&format!("http://{addr}"), TOKEN, "ALC-ORD-DASH-B-1", shot.to_str().unwrap()])
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut stderr = node.stderr.take().unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    let ready = match ready {
        Ok(Ok(Some(l))) if l.starts_with("READY ") => l,
        other => {
            let mut err = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
            panic!("the dashboard did not load and match the API ({other:?}):\n{err}");
        }
    };
    let before: i64 = ready["READY ".len()..].parse().unwrap();
    assert!(before >= 1, "the page counted no allocations");

    // A new allocation while the page is open.
    env.produce(&ot, "AL-INGOT", &codec.encode(&ot, &order("ORD-DASH-B", 200_000)).await.unwrap()).await;
    let status = tokio::time::timeout(Duration::from_secs(90), node.wait()).await.expect("the browser run ends").unwrap();
    let mut err = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
    let mut last = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        last = l;
    }
    assert!(status.success(), "the browser check failed:\n{err}\n{last}");
    let summary: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(summary["before"], before);
    assert!(summary["after"].as_i64().unwrap() > before, "{summary}");
    assert!(summary["explanation"].as_str().unwrap().contains("nanning-jiangnan-processing"), "{summary}");
    assert!(summary["checked"].as_array().unwrap().iter().any(|c| c == "lane baise>nanning"), "{summary}");
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot at {}", shot.display());

    cancel.cancel();
    matcher.await.unwrap().unwrap();
    booker.await.unwrap().unwrap();
    view.await.unwrap().unwrap();
}
