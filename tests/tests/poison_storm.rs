//! A poison storm against the whole hub (`orelink run all` as a real
//! process): garbage bytes, an unknown schema id, truncated Avro and records
//! past every plausible bound, on every topic the hub's roles read. Afterwards
//! no role has failed, a good order is allocated and shows in the view, good
//! stock shows too, and every poison record is in the DLQ with its source
//! coordinates. And a record the view's script cannot apply (a Redis type
//! error) is dead-lettered alone while the records around it are applied.

use orelink_codec::{Codec, Record};
use orelink_domain::events::{ErrorClass, OrderKind, OrderState, SharedOrderKind, ShipmentStatus, wire};
use orelink_domain::topology::topics;
use orelink_domain::TransportMode;
use orelink_tests::{KillOnDrop, TestEnv, capacity_wire, order_wire};
use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "storm-operator-token";
const FAR: i64 = 7_258_118_400_000; // 2200-01-01: past the bound on every timestamp
const ABSURD: i64 = 9_000_000_000_000_000_000;

/// Nanning aluminium capacity `CAP-<n>` (the good order's match).
fn capacity(n: u32, kg: i64, price: i64) -> wire::CapacityEvent {
    capacity_wire(n, "nanning-jiangnan-processing", "nanning", "AL-INGOT-AL99.85", kg, price)
}

fn inventory(on_hand: i64, reserved: i64) -> wire::InventoryEvent {
    wire::InventoryEvent {
        event_id: format!("storm-inv-{on_hand}-{reserved}"),
        event_time: 1_795_000_100_000,
        site_id: "nanning-jiangnan-processing".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        on_hand_kg: on_hand,
        reserved_kg: reserved,
    }
}

/// Every record kind the hub reads, each past every bound its fields have.
async fn absurd(codec: &Codec, topic: &str, contract: &str) -> Vec<u8> {
    match contract {
        topics::ORDERS => {
            let o = wire::OrderEvent { quantity_kg: ABSURD, max_price_cny_per_t: 2_000_000_000, deliver_by: FAR, ..order_wire(900) };
            codec.encode(topic, &o).await.unwrap()
        }
        // What a door writes, past every bound: the matcher refuses it here too.
        topics::MARKET => {
            let c = wire::CapacityEvent { event_id: "storm-market".into(), quantity_kg: ABSURD, price_cny_per_t: 2_000_000_000, available_until: FAR, ..capacity(901, 1, 1) };
            codec.encode_as(topic, "orelink.v1.CapacityEvent", &c).await.unwrap()
        }
        topics::CAPACITY => {
            let c = wire::CapacityEvent { quantity_kg: ABSURD, price_cny_per_t: 2_000_000_000, energy_kwh_per_t: Some(2_000_000), available_until: FAR, ..capacity(900, 1, 1) };
            codec.encode(topic, &c).await.unwrap()
        }
        topics::INVENTORY => codec.encode(topic, &inventory(ABSURD, ABSURD)).await.unwrap(),
        topics::SHIPMENTS => {
            let s = wire::ShipmentEvent {
                event_id: "storm-shp".into(),
                event_time: FAR,
                shipment_id: "SHP-STORM".into(),
                allocation_id: None,
                carrier_id: "91450100MA5L0CAR1X".into(),
                mode: TransportMode::Road,
                status: ShipmentStatus::InTransit,
                from_site: "baise-pingguo-smelter".into(),
                to_site: "nanning-jiangnan-processing".into(),
                quantity_kg: ABSURD,
                lat: Some(f64::NAN),
                lon: Some(f64::INFINITY),
                eta: Some(FAR),
            };
            codec.encode(topic, &s).await.unwrap()
        }
        topics::SHARED_ORDERS => {
            let s = wire::SharedOrder {
                event_id: "storm-share".into(),
                shared_at: FAR,
                kind: SharedOrderKind::Shared,
                order_id: "ORD-STORM".into(),
                origin_cluster: "nanning".into(),
                target_clusters: vec!["baise".into()],
                product_code: "AL-INGOT-AL99.70".into(),
                remaining_kg: ABSURD,
                deliver_by: FAR,
                destination_site: "nanning-jiangnan-processing".into(),
                buyer_id: None,
                max_price_cny_per_t: Some(2_000_000_000),
            };
            codec.encode(topic, &s).await.unwrap()
        }
        topics::ORDER_STATUS => {
            let s = wire::OrderStatus {
                event_id: "storm-status".into(),
                status_at: FAR,
                version: 1,
                state: OrderState::Open,
                order_id: "ORD-STORM".into(),
                cluster: "nanning".into(),
                buyer_id: "91450100MA5L0ABC1X".into(),
                product_code: "AL-INGOT-AL99.70".into(),
                destination_site: "nanning-jiangnan-processing".into(),
                deliver_by: FAR,
                max_price_cny_per_t: 2_000_000_000,
                allow_cross_cluster: true,
                remaining_kg: ABSURD,
                allocated_kg: ABSURD,
                shared_to: vec![],
            };
            codec.encode(topic, &s).await.unwrap()
        }
        topics::ALLOCATIONS => {
            let a = wire::Allocation {
                allocation_id: "ALLOC-STORM".into(),
                order_id: "ORD-STORM".into(),
                capacity_id: "CAP-STORM".into(),
                order_cluster: "nanning".into(),
                capacity_cluster: "nanning".into(),
                buyer_id: "91450100MA5L0ABC1X".into(),
                provider_id: "91451000MA5L0PRV1Y".into(),
                product_code: "AL-INGOT-AL99.85".into(),
                quantity_kg: ABSURD,
                price_cny_per_t: 2_000_000_000,
                freight_cny_per_t: -1,
                from_site: "nanning-jiangnan-processing".into(),
                destination_site: "nanning-jiangnan-processing".into(),
                decided_at: FAR,
                explanation: wire::Explanation {
                    rank: 1,
                    home_cluster: true,
                    requested_product_code: "AL-INGOT-AL99.70".into(),
                    landed_cost_cny_per_t: i64::MAX,
                    distance_km: 0,
                    transit_hours: 0,
                    mode: TransportMode::Road,
                    energy_kwh_per_t: Some(i64::MAX),
                    summary: String::new(),
                },
                pick_up: None, deliver_by: None,
            };
            codec.encode(topic, &a).await.unwrap()
        }
        // A dead letter has no bounds of its own: only the other kinds of poison.
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_storm_stops_no_role_and_every_poison_record_is_dead_lettered() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let view_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut hub = KillOnDrop(
        Command::new(orelink_tests::orelink_bin())
            .args(["run", "all"])
            .envs(env.process_env("storm"))
            .env("ORELINK__VIEW__LISTEN", view_addr.to_string())
            .env("ORELINK__VIEW__OPERATOR_TOKEN_DIGESTS", orelink_platform::config::sha256_hex(TOKEN))
            .env("ORELINK__TELEMETRY__METRICS_LISTEN", metrics_addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("orelink run all starts"),
    );
    let http = reqwest::Client::new();
    let api = |path: &str| http.get(format!("http://{view_addr}{path}")).bearer_auth(TOKEN).send();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !http.get(format!("http://{view_addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(tokio::time::Instant::now() < deadline, "the view never became ready:\n{}", std::fs::read_to_string(log.path()).unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The storm: on each topic, garbage, an unknown schema id, truncated Avro, and (for record kinds with bounds) an absurd record.
    let producer = env.producer();
    let mut poison: BTreeSet<(String, i32, i64)> = BTreeSet::new();
    let inputs = [topics::MARKET, topics::ORDERS, topics::CAPACITY, topics::INVENTORY, topics::SHIPMENTS, topics::SHARED_ORDERS, topics::ORDER_STATUS, topics::ALLOCATIONS, topics::DLQ];
    for contract in inputs {
        let topic = env.topic(contract);
        let key = match contract {
            topics::INVENTORY => "nanning-jiangnan-processing/AL-INGOT-AL99.70",
            topics::SHIPMENTS => "SHP-STORM",
            topics::DLQ => "storm",
            _ => "AL-INGOT",
        };
        let bad = absurd(&codec, &topic, contract).await;
        let valid_header = match contract {
            // Truncated after a real schema id of this topic.
            topics::DLQ => {
                let dl = wire::DeadLetter {
                    source_topic: "x".into(),
                    source_partition: 0,
                    source_offset: 0,
                    key: None,
                    value: Some(vec![1, 2, 3]),
                    error_class: ErrorClass::Invalid,
                    reason: "a reason long enough to cut".into(),
                    failed_at: 1_795_000_000_000,
                    role: "storm".into(),
                };
                codec.encode(&topic, &dl).await.unwrap()
            }
            _ => bad.clone(),
        };
        let truncated = valid_header[..valid_header.len() / 2].to_vec();
        let mut values: Vec<Vec<u8>> = vec![b"\xff\xfe legacy CSV;20t;AL99.70".to_vec(), vec![0, 0x7f, 0xff, 0xff, 0xf0, 2, 4, 6], truncated];
        if !bad.is_empty() {
            values.push(bad);
        }
        for v in values {
            let d = producer.send(FutureRecord::to(&topic).key(key).payload(&v), Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("poison produced");
            poison.insert((topic.clone(), d.partition, d.offset));
        }
    }

    // After the storm: capacity, then an order it fills, and good stock.
    let capacity_topic = env.topic(topics::CAPACITY);
    env.produce(&capacity_topic, "AL-INGOT", &codec.encode(&capacity_topic, &capacity(1, 400_000, 20_300)).await.unwrap()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let order = wire::OrderEvent { kind: OrderKind::Placed, ..order_wire(7) };
    let orders = env.topic(topics::ORDERS);
    env.produce(&orders, "AL-INGOT", &codec.encode(&orders, &order).await.unwrap()).await;
    let inventory_topic = env.topic(topics::INVENTORY);
    env.produce(&inventory_topic, "nanning-jiangnan-processing/AL-INGOT-AL99.70", &codec.encode(&inventory_topic, &inventory(1_200_000, 200_000)).await.unwrap()).await;

    // The order is allocated and the view shows it; the stock shows too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let allocations = loop {
        let r = api(&format!("/api/v1/orders/{}/allocations", order.order_id)).await.unwrap();
        if r.status().is_success() {
            let body: serde_json::Value = r.json().await.unwrap();
            if body["allocations"].as_array().is_some_and(|a| !a.is_empty()) {
                break body;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the good order never showed allocated in the view:\n{}", std::fs::read_to_string(log.path()).unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(allocations["allocations"][0]["capacity_id"], "CAP-1");
    let stock = loop {
        let cells: serde_json::Value = api("/api/v1/cells?cluster=nanning").await.unwrap().json().await.unwrap();
        let cell = cells["cells"].as_array().unwrap().iter().find(|c| c["family"] == "AL-INGOT").cloned();
        if let Some(c) = cell.filter(|c| c["stock_on_hand_kg"].as_i64() == Some(1_200_000)) {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "the good stock never showed in the view: {cells}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(stock["stock_reserved_kg"], 200_000);
    assert!(stock["days_of_cover"].as_f64().is_some_and(|d| d > 0.0), "demand was placed, so stock has days of cover: {stock}");

    // Every poison record is in the DLQ, named by its source coordinates.
    let dlq = env.topic(topics::DLQ);
    let mut missing = poison.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut reasons = Vec::new();
    while !missing.is_empty() {
        for m in env.read_topic(&dlq).await {
            if let Ok(Record::DeadLetter(d)) = codec.decode(&dlq, m.payload()).await
                && missing.remove(&(d.source_topic.clone(), d.source_partition, d.source_offset))
            {
                reasons.push(format!("{}: {} {}", d.source_topic, d.error_class.as_str(), d.reason));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered: {missing:?}\nlog:\n{}", std::fs::read_to_string(log.path()).unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Out-of-bounds records name a field and its bound.
    assert!(reasons.iter().any(|r| r.contains("quantity_kg") && r.contains("10000000000 kg")), "{reasons:#?}");

    // The roles' metrics say what happened, on the process's /metrics.
    let metrics = http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |prefix: &str| -> f64 { metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum() };
    let orders = env.topic(topics::ORDERS);
    assert!(value(&format!("orelink_events_total{{role=\"matcher\",topic=\"{orders}\",outcome=\"dead_lettered\"}}")) >= 4.0, "{metrics}");
    assert!(value(&format!("orelink_events_total{{role=\"matcher\",topic=\"{orders}\",outcome=\"delivered\"}}")) >= 1.0, "{metrics}");
    assert!(value("orelink_transactions_total{role=\"matcher\",outcome=\"committed\"}") >= 1.0, "{metrics}");
    assert!(value("orelink_transactions_total{role=\"fanout\",outcome=\"committed\"}") >= 1.0, "the fanout committed the shipments' dead letters: {metrics}");
    assert!(value(&format!("orelink_view_events_read_total{{namespace=\"{}\"}}", env.ns)) > 0.0, "{metrics}");
    assert!(value(&format!("orelink_view_dead_lettered_total{{namespace=\"{}\"}}", env.ns)) >= 1.0, "{metrics}");
    assert!(value("orelink_http_request_seconds_count{role=\"view\"") > 0.0, "{metrics}");

    // Still running, and no role ever failed.
    assert!(hub.0.try_wait().unwrap().is_none(), "orelink run all exited:\n{}", std::fs::read_to_string(log.path()).unwrap());
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(!text.contains("role failed"), "a role failed during the storm:\n{text}");
    hub.kill();
}

/// A Redis type error (an operator wrote a key the script uses) is found by
/// the script, that one record is dead-lettered with the reason, and the
/// records around it are applied: the view keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_the_script_cannot_apply_is_dead_lettered_and_the_rest_applied() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let client = redis::Client::open(env.cfg.redis.url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    // The Baise aluminium cell's aggregate is a string now: HINCRBY on it fails with WRONGTYPE.
    let _: () = redis::cmd("SET").arg(format!("{}view:agg:baise|AL-INGOT", env.ns)).arg("not a hash").query_async(&mut con).await.unwrap();
    // The view takes capacity from the market topic, where the doors write it.
    let capacity_topic = env.topic(topics::MARKET);
    let cap = |n: u32, site: &str, cluster: &str| wire::CapacityEvent { energy_kwh_per_t: None, ..capacity_wire(n, site, cluster, "AL-INGOT-AL99.85", 300_000 + n as i64, 20_300) };
    // One partition (same key) and one batch: good, poisoned, good.
    for c in [cap(1, "nanning-jiangnan-processing", "nanning"), cap(2, "baise-pingguo-smelter", "baise"), cap(3, "hechi-jinchengjiang-smelter", "hechi")] {
        env.produce(&capacity_topic, "AL-INGOT", &codec.encode_as(&capacity_topic, "orelink.v1.CapacityEvent", &c).await.unwrap()).await;
    }
    let cancel = CancellationToken::new();
    let (tx, bound) = tokio::sync::oneshot::channel();
    let mut cfg = env.role_config("view", "view-poison");
    cfg.view.listen = "127.0.0.1:0".into();
    cfg.view.operator_token_digests = orelink_platform::config::sha256_hex(TOKEN);
    let (r, c) = (env.reference.clone(), cancel.clone());
    let view = tokio::spawn(async move {
        orelink_view::run_with(&cfg, &r, c, move |a| {
            let _ = tx.send(a);
        })
        .await
        .expect("the view runs and stops cleanly")
    });
    let addr = bound.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let dlq = env.topic(topics::DLQ);
    let letter = loop {
        let found = futures::future::join_all(env.read_topic(&dlq).await.iter().map(|m| codec.decode(&dlq, m.payload()))).await;
        if let Some(d) = found.into_iter().find_map(|r| match r {
            Ok(Record::DeadLetter(d)) if d.role == "view" => Some(d),
            _ => None,
        }) {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter from the view");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(letter.source_topic, capacity_topic);
    assert_eq!(letter.error_class, ErrorClass::Invalid);
    assert!(letter.reason.contains("WRONGTYPE"), "{}", letter.reason);
    let poisoned = codec.decode(&capacity_topic, letter.value.as_deref()).await.unwrap();
    assert!(matches!(&poisoned, Record::Capacity(c) if c.capacity_id.as_str() == "CAP-2"), "{poisoned:?}");
    // The records before and after it are in the view.
    let declared = |cells: &serde_json::Value, cluster: &str| {
        cells["cells"].as_array().unwrap().iter().find(|c| c["cluster"] == cluster && c["family"] == "AL-INGOT").and_then(|c| c["declared_kg"].as_i64())
    };
    let http = reqwest::Client::new();
    let cells = loop {
        let c: serde_json::Value = http.get(format!("http://{addr}/api/v1/cells")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        if declared(&c, "hechi").is_some() {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "the record after the poison was not applied: {c}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(declared(&cells, "nanning"), Some(300_001));
    assert_eq!(declared(&cells, "hechi"), Some(300_003));
    assert!(!view.is_finished(), "the view stopped");
    cancel.cancel();
    view.await.unwrap();
}
