//! The demand outlook and its capacity-gap alerts on the real stack: the view
//! role refits per cluster × family as its clock (event time) enters a new
//! slot. Three weeks of Nanning aluminium demand (10 t an hour) under twice
//! that in capacity declared: an outlook, no alert. A week of demand at 80 t
//! an hour with the same capacity: one RAISED alert on `orelink.alerts.v1`
//! with the numbers that triggered it, and the API and the dashboard (in
//! headless Chromium) show it open beside the forecast and its band. Then
//! 50 kt of capacity: one CLEARED alert with the same id, and none open.

use orelink_codec::Record;
use orelink_domain::events::wire::{AlertKind, CapacityEvent, OrderStatus};
use orelink_domain::events::{CapacityKind, OrderState};
use orelink_domain::topology::topics;
use orelink_tests::TestEnv;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "outlook-test-token";
const HOUR: i64 = 3_600_000;
/// 2026-11-02 00:00 UTC, a Monday.
const T0: i64 = 1_794_009_600_000;

fn status(n: i64, kg: i64) -> OrderStatus {
    OrderStatus {
        event_id: format!("evt-ol-st-{n}"),
        status_at: T0 + n * HOUR + 60_000,
        version: 1,
        state: OrderState::Open,
        order_id: format!("ORD-OL-{n:05}"),
        cluster: "nanning".into(),
        buyer_id: "91450100MA5L0ABC1X".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        destination_site: "nanning-jiangnan-processing".into(),
        deliver_by: T0 + (n + 240) * HOUR,
        max_price_cny_per_t: 21_000,
        allow_cross_cluster: true,
        remaining_kg: kg,
        allocated_kg: 0,
        shared_to: vec![],
    }
}

fn capacity(id: &str, kind: CapacityKind, at: i64, kg: i64) -> CapacityEvent {
    CapacityEvent {
        event_id: format!("evt-{id}-{kind:?}"),
        event_time: at,
        capacity_id: id.into(),
        kind,
        cluster: "nanning".into(),
        provider_id: "91451000MA5L0PRV1Y".into(),
        site_id: "nanning-jiangnan-processing".into(),
        product_code: "AL-INGOT-AL99.85".into(),
        quantity_kg: kg,
        available_from: at,
        available_until: at + 30 * 24 * HOUR,
        price_cny_per_t: 20_300,
        min_lot_kg: 5_000,
        energy_kwh_per_t: None,
    }
}

async fn outlook(addr: std::net::SocketAddr) -> serde_json::Value {
    let r = reqwest::Client::new().get(format!("http://{addr}/api/v1/outlook?cluster=nanning&family=AL-INGOT")).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// `tests/browser/outlook.mjs` in headless Chromium against the view at
/// `addr`: its JSON summary. The screenshot is kept in `tests/artifacts/outlook.png`.
async fn browser_check(addr: std::net::SocketAddr) -> serde_json::Value {
    let (browser_dir, chromium) = orelink_tests::browser();
    let run = tokio::process::Command::new("node")
        .arg(browser_dir.join("outlook.mjs"))
        .args([&format!("http://{addr}"), TOKEN, "nanning", "AL-INGOT", orelink_tests::artifact("outlook.png").to_str().unwrap()])
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run).await.expect("the browser run ends").expect("node runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser check failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capacity_shortfall_raises_one_alert_and_new_capacity_clears_it() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let mut cfg = env.role_config("view", "outlook-test");
    cfg.view.listen = "127.0.0.1:0".into();
    cfg.view.operator_token_digests = orelink_platform::config::sha256_hex(TOKEN);
    cfg.view.outlook_refit_hours = 24;
    let cancel = CancellationToken::new();
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
    let (statuses, market, alerts) = (env.topic(topics::ORDER_STATUS), env.topic(topics::MARKET), env.topic(topics::ALERTS));
    // Hour by hour: demand placed (more in working hours), and capacity
    // declared for the hour, the previous hour's withdrawn (so what remains is
    // about one hour's).
    // One producer for the run; each phase's records are sent, then their deliveries awaited.
    let producer = env.producer();
    let hours = |from: i64, to: i64, demand_t: i64| {
        let (codec, producer, statuses, market) = (codec.clone(), producer.clone(), statuses.clone(), market.clone());
        async move {
            let mut sent = Vec::new();
            let mut send = |topic: &str, bytes: Vec<u8>| sent.push(producer.send_result(rdkafka::producer::FutureRecord::to(topic).key("AL-INGOT").payload(&bytes)).map_err(|(e, _)| e).unwrap());
            for h in from..to {
                let local = (h + 8) % 24;
                let kg = demand_t * 1_000 * if (8..18).contains(&local) { 13 } else { 8 } / 10;
                send(&statuses, codec.encode(&statuses, &status(h, kg)).await.unwrap());
                let declared = capacity(&format!("CAP-OL-{h}"), CapacityKind::Declared, T0 + h * HOUR, 20_000);
                send(&market, codec.encode_as(&market, "orelink.v1.CapacityEvent", &declared).await.unwrap());
                if h > 0 {
                    let withdrawn = capacity(&format!("CAP-OL-{}", h - 1), CapacityKind::Withdrawn, T0 + h * HOUR + 1_000, 20_000);
                    send(&market, codec.encode_as(&market, "orelink.v1.CapacityEvent", &withdrawn).await.unwrap());
                }
            }
            for d in sent {
                d.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    };
    let alerts_read = || async {
        let mut out = Vec::new();
        for m in env.read_topic(&alerts).await {
            match codec.decode(&alerts, rdkafka::Message::payload(&m)).await.unwrap() {
                Record::Alert(a) => out.push(a),
                other => panic!("not an alert: {other:?}"),
            }
        }
        out
    };
    let wait_for = |what: &'static str, origin: i64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let o = outlook(addr).await;
            if o["outlooks"][0]["origin_ms"].as_i64() >= Some(origin) && !o["outlooks"][0]["demand"].is_null() {
                return o;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: no refit at {origin} or later: {o}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };

    // Three weeks at 10 t an hour, and into the next day: refitted, no gap.
    hours(0, 21 * 24 + 1, 10).await;
    let o = wait_for("three weeks of history", T0 + 21 * 24 * HOUR).await;
    let first = &o["outlooks"][0];
    assert_eq!(first["demand"]["point"].as_array().unwrap().len(), 168, "{first}");
    assert!(first["gap_kg"].as_f64().unwrap() < 0.0, "demand under capacity: {first}");
    assert!(first["alert"].is_null() && o["alerts"].as_array().unwrap().is_empty(), "{o}");
    assert!(alerts_read().await.is_empty());

    // A week at 80 t an hour, and into the next day: one alert, raised.
    hours(21 * 24 + 1, 28 * 24 + 1, 80).await;
    let o = wait_for("a week of shortfall", T0 + 28 * 24 * HOUR).await;
    let raised = alerts_read().await;
    assert_eq!(raised.len(), 1, "one alert per episode: {raised:?}");
    let a = &raised[0];
    assert_eq!((a.kind, a.cluster.as_str(), a.family.as_str(), a.horizon_hours), (AlertKind::Raised, "nanning", "AL-INGOT", 168));
    assert!(a.gap_kg > 0 && a.gap_kg == a.demand_kg - a.remaining_kg - a.expected_kg, "{a:?}");
    assert!(a.demand_kg > 168 * 40_000, "the forecast follows the new level: {a:?}");
    assert_eq!(o["alerts"][0]["alert_id"], a.alert_id.as_str(), "the API shows the open alert: {o}");
    // The dashboard draws the forecast and its band, and lists the open alert.
    let summary = browser_check(addr).await;
    assert_eq!(summary["alerts"], serde_json::json!([a.alert_id]), "{summary}");
    assert_eq!(summary["points"], 168, "{summary}");

    // 50 kt of capacity, and into the next day: the same alert, cleared.
    let big = capacity("CAP-OL-BIG", CapacityKind::Declared, T0 + (28 * 24 + 2) * HOUR, 50_000_000);
    env.produce(&market, "AL-INGOT", &codec.encode_as(&market, "orelink.v1.CapacityEvent", &big).await.unwrap()).await;
    hours(28 * 24 + 1, 29 * 24 + 1, 80).await;
    let o = wait_for("new capacity", T0 + 29 * 24 * HOUR).await;
    let all = alerts_read().await;
    assert_eq!(all.len(), 2, "{all:?}");
    let c = &all[1];
    assert_eq!((c.kind, c.alert_id.as_str(), c.opened_at), (AlertKind::Cleared, a.alert_id.as_str(), a.opened_at));
    assert!(c.gap_kg < 0 && c.remaining_kg >= 50_000_000, "{c:?}");
    assert!(o["alerts"].as_array().unwrap().is_empty(), "{o}");

    cancel.cancel();
    view.await.unwrap().unwrap();
}
