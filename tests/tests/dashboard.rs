//! The operators' dashboard end to end in headless Chromium (Debian's
//! `chromium`, driven by playwright-core from `tests/browser/`): it loads,
//! shows the numbers the API returns, and shows a new allocation live. The
//! screenshot is kept in `tests/artifacts/dashboard.png`.

use orelink_domain::events::{CapacityKind, OrderKind, wire};
use orelink_domain::topology::topics;
use orelink_tests::{TestEnv, repo_root};
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

async fn allocations_of(addr: std::net::SocketAddr, order: &str) -> usize {
    let r = reqwest::Client::new().get(format!("http://{addr}/api/v1/orders/{order}/allocations")).bearer_auth(TOKEN).send().await.unwrap();
    if r.status() == 404 {
        return 0;
    }
    r.json::<serde_json::Value>().await.unwrap()["allocations"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_api_numbers_and_updates_live() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (tests/run does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} is missing: apt-get install chromium (.ci/run does)");

    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let cancel = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "dashboard"), env.reference.clone(), cancel.clone()));
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
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
    while allocations_of(addr, "ORD-DASH-A").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first allocation never reached the view");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the order's status land too, so the page and the API see one state.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let artifacts = repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
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
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot at {}", shot.display());

    cancel.cancel();
    matcher.await.unwrap().unwrap();
    view.await.unwrap().unwrap();
}
