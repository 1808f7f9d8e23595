//! The ingest gateway on the real stack: accepted events are in Kafka where
//! the answer says, retries produce nothing, a key cannot publish as another
//! enterprise, every problem of a body comes back at once, and schemathesis
//! (PyPI) fuzzes the OpenAPI document without a 5xx or an event produced from
//! an invalid request.

use orelink_codec::Record;
use orelink_domain::topology::topics;
use orelink_tests::{TestEnv, order_wire};
use rdkafka::Message;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

const BUYER: &str = "91450100MA5L0ABC1X";
const KEY_BUYER: &str = "key-nanning-buyer";
const KEY_PROVIDER: &str = "key-baise-provider";
const KEY_FUZZ: &str = "key-fuzz";
const KEY_BARGES: &str = "key-xijiang-barges";
/// Xijiang River Shipping's carrier id (`topology/partners.toml`).
const BARGES: &str = "91450400MA5L0XJS2M";

fn keys_file(dir: &std::path::Path) -> std::path::PathBuf {
    let d = orelink_gateway::keys::digest;
    let text = format!(
        r#"
[[key]]
id = "nanning-buyer"
sha256 = "{}"
enterprise = "{BUYER}"
sites = ["nanning-jiangnan-processing"]
rate_per_s = 100
burst = 100

[[key]]
id = "baise-provider"
sha256 = "{}"
enterprise = "91451000MA5L0PRV1Y"
rate_per_s = 100
burst = 100

[[key]]
id = "fuzz"
sha256 = "{}"
enterprise = "{BUYER}"
sites = ["nanning-jiangnan-processing"]
carrier = "91450600MA5L0BGL1P"
rate_per_s = 100000
burst = 100000

[[key]]
id = "xijiang-barges"
sha256 = "{}"
carrier = "{BARGES}"
rate_per_s = 100
burst = 100
"#,
        d(KEY_BUYER),
        d(KEY_PROVIDER),
        d(KEY_FUZZ),
        d(KEY_BARGES)
    );
    let path = dir.join("keys.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(env: &TestEnv, dir: &std::path::Path, cancel: CancellationToken) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    orelink_tests::start_gateway(env, &keys_file(dir), cancel).await
}

async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &Value, idem: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().post(format!("http://{addr}{path}")).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(i) = idem {
        req = req.header("Idempotency-Key", i);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_events_are_in_kafka_once_and_keys_bind_identities() {
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (addr, gw) = start(&env, dir.path(), cancel.clone()).await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    // Orders go where the matcher reads them, the market topic.
    let orders = env.topic(topics::MARKET);

    let order = serde_json::to_value(order_wire(7)).unwrap();
    let (status, _, body) = post(addr, "/v1/orders", Some(KEY_BUYER), &order, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!((body["topic"].as_str(), body["event_id"].as_str()), (Some(orders.as_str()), Some("evt-ord-7")));
    let msgs = env.read_topic(&orders).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!((m.partition() as i64, m.offset()), (body["partition"].as_i64().unwrap(), body["offset"].as_i64().unwrap()));
    assert_eq!(m.key(), Some(&b"AL-INGOT"[..]));
    let Record::Order(decoded) = codec.decode(&orders, m.payload()).await.unwrap() else { panic!("not an order") };
    assert_eq!(decoded.to_wire(), order_wire(7));

    // A retry (same event_id) is answered as the first time and produces nothing.
    let (status, headers, again) = post(addr, "/v1/orders", Some(KEY_BUYER), &order, None).await;
    assert_eq!((status, &again), (202, &body));
    assert_eq!(headers.get("idempotent-replay").map(|v| v.to_str().unwrap()), Some("true"));
    // So is one with an explicit Idempotency-Key, even with a new event_id.
    let mut other = order.clone();
    other["event_id"] = json!("evt-ord-7b");
    let first = post(addr, "/v1/orders", Some(KEY_BUYER), &other, Some("retry-1")).await;
    other["event_id"] = json!("evt-ord-7c");
    let second = post(addr, "/v1/orders", Some(KEY_BUYER), &other, Some("retry-1")).await;
    assert_eq!((first.0, second.0), (202, 202));
    assert_eq!(first.2, second.2);

    // A key cannot publish as another enterprise.
    let mut theirs = serde_json::to_value(order_wire(8)).unwrap();
    let (status, _, body) = post(addr, "/v1/orders", Some(KEY_PROVIDER), &theirs, None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    theirs["buyer_id"] = json!("91451000MA5L0PRV1Y");
    let (status, _, _) = post(addr, "/v1/orders", Some(KEY_BUYER), &theirs, None).await;
    assert_eq!(status, 403, "the buyer key published as another buyer");
    // Nor report shipments without being a carrier.
    let (status, _, _) = post(addr, "/v1/shipments", Some(KEY_BUYER), &json!({}), None).await;
    assert_eq!(status, 422, "an empty shipment is invalid before it is forbidden");

    // Every problem of a body at once.
    let mut bad = serde_json::to_value(order_wire(9)).unwrap();
    bad["quantity_kg"] = json!(-5);
    bad["product_code"] = json!("GOLD-BAR-999");
    bad["destination_site"] = json!("atlantis");
    let (status, _, body) = post(addr, "/v1/orders", Some(KEY_BUYER), &bad, None).await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["problems"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
    for f in ["quantity_kg", "product_code", "destination_site"] {
        assert!(fields.contains(&f), "{f} not reported: {body}");
    }
    // Past the contract's plausible values: each field named with its bound.
    let mut absurd = serde_json::to_value(order_wire(9)).unwrap();
    absurd["quantity_kg"] = json!(9_000_000_000_000_000_000i64);
    absurd["max_price_cny_per_t"] = json!(2_000_000_000i64);
    absurd["deliver_by"] = json!(7_258_118_400_000i64);
    let (status, _, body) = post(addr, "/v1/orders", Some(KEY_BUYER), &absurd, None).await;
    assert_eq!(status, 422, "{body}");
    let problems: Vec<(String, String)> =
        body["problems"].as_array().unwrap().iter().map(|p| (p["field"].as_str().unwrap().to_owned(), p["message"].as_str().unwrap().to_owned())).collect();
    for (field, bound) in [("quantity_kg", "10000000000 kg"), ("max_price_cny_per_t", "1000000000 CNY/t"), ("deliver_by", "2100-01-01")] {
        assert!(problems.iter().any(|(f, m)| f == field && m.contains(bound)), "{field} and its bound not reported: {body}");
    }
    let (status, _, body) = post(addr, "/v1/orders", Some(KEY_BUYER), &json!({"event_id": 1, "colour": "red"}), None).await;
    assert_eq!(status, 422);
    assert!(body["problems"].as_array().unwrap().len() >= 10, "{body}");

    // Auth, routing and batches answer in JSON.
    let (status, _, body) = post(addr, "/v1/orders", None, &order, None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let (status, _, body) = post(addr, "/v1/nothing", Some(KEY_BUYER), &order, None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let huge = json!({"events": vec![serde_json::to_value(order_wire(12)).unwrap(); 5_000]});
    let (status, _, body) = post(addr, "/v1/batch", Some(KEY_BUYER), &huge, None).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")), "{body}");
    let r = reqwest::get(format!("http://{addr}/v1/orders")).await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "method_not_allowed");
    let batch = json!({"events": [
        {"kind": "order", "event": serde_json::to_value(order_wire(10)).unwrap()},
        {"kind": "order", "event": bad},
    ]});
    let (status, _, body) = post(addr, "/v1/batch", Some(KEY_BUYER), &batch, None).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["problems"][0]["field"].as_str().unwrap().starts_with("events[1].event."), "{body}");
    let batch = json!({"events": [
        {"kind": "order", "event": serde_json::to_value(order_wire(10)).unwrap()},
        {"kind": "order", "event": serde_json::to_value(order_wire(11)).unwrap()},
    ]});
    let (status, _, body) = post(addr, "/v1/batch", Some(KEY_BUYER), &batch, None).await;
    assert_eq!((status, body["accepted"].as_array().map(Vec::len)), (202, Some(2)), "{body}");

    // Exactly what was accepted is in Kafka: 7, 7b, 10, 11.
    let ids: Vec<String> = futures::future::join_all(env.read_topic(&orders).await.iter().map(|m| codec.decode(&orders, m.payload())))
        .await
        .into_iter()
        .map(|r| match r.unwrap() {
            Record::Order(o) => o.event_id.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["evt-ord-10", "evt-ord-11", "evt-ord-7", "evt-ord-7b"], "{ids:?}");

    cancel.cancel();
    gw.await.unwrap();
}

/// A barge on the Youjiang and Xijiang, Baise to Nanning, next week.
fn barge_offer(n: u32) -> Value {
    json!({
        "event_id": format!("evt-off-{n}"), "event_time": 1_795_000_000_000i64, "offer_id": format!("OFF-{n}"),
        "kind": "OFFERED", "carrier_id": BARGES, "mode": "RIVER", "from_cluster": "baise", "to_cluster": "nanning",
        "capacity_kg": 1_500_000, "available_from": 1_795_100_000_000i64, "available_until": 1_795_700_000_000i64,
        "price_cny_per_t": 62, "transit_hours": 40,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_carrier_posts_its_own_offers_and_no_one_else_posts_them() {
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (addr, gw) = start(&env, dir.path(), cancel.clone()).await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let offers = env.topic(topics::TRANSPORT_OFFERS);

    let offer = barge_offer(1);
    let (status, _, body) = post(addr, "/v1/transport-offers", Some(KEY_BARGES), &offer, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["topic"].as_str(), Some(offers.as_str()));
    // Its withdrawal, in a batch.
    let mut withdrawn = barge_offer(1);
    withdrawn["event_id"] = json!("evt-off-1w");
    withdrawn["kind"] = json!("WITHDRAWN");
    let (status, _, body) = post(addr, "/v1/batch", Some(KEY_BARGES), &json!({"events": [{"kind": "transport_offer", "event": withdrawn}]}), None).await;
    assert_eq!(status, 202, "{body}");

    // Not as another carrier, not with an enterprise's key.
    let mut rail = barge_offer(2);
    rail["carrier_id"] = json!("91450100MA5L0RLF3K");
    rail["mode"] = json!("RAIL");
    let (status, _, body) = post(addr, "/v1/transport-offers", Some(KEY_BARGES), &rail, None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _, body) = post(addr, "/v1/transport-offers", Some(KEY_BUYER), &barge_offer(3), None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    // Every problem at once: no room, no transit, a window that ends before it starts, a lane to nowhere.
    let mut bad = barge_offer(4);
    bad["capacity_kg"] = json!(0);
    bad["transit_hours"] = json!(0);
    bad["available_until"] = json!(1_795_000_000_000i64);
    bad["to_cluster"] = json!("guilin");
    let (status, _, body) = post(addr, "/v1/transport-offers", Some(KEY_BARGES), &bad, None).await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["problems"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
    for f in ["capacity_kg", "transit_hours", "available_until", "to_cluster"] {
        assert!(fields.contains(&f), "{f} not reported: {body}");
    }

    // In Kafka: the offer and its withdrawal, on the lane's key, and nothing refused.
    let msgs = env.read_topic(&offers).await;
    assert_eq!(msgs.len(), 2);
    for (m, kind) in msgs.iter().zip(["OFFERED", "WITHDRAWN"]) {
        assert_eq!(m.key(), Some(&b"baise>nanning"[..]));
        let Record::TransportOffer(o) = codec.decode(&offers, m.payload()).await.unwrap() else { panic!("not an offer") };
        assert_eq!((o.offer_id.as_str(), o.carrier_id.as_str(), o.capacity.to_wire()), ("OFF-1", BARGES, 1_500_000));
        assert_eq!(serde_json::to_value(o.kind).unwrap(), json!(kind));
    }
    cancel.cancel();
    gw.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_server_error_and_invalid_requests_produce_nothing() {
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (addr, gw) = start(&env, dir.path(), cancel.clone()).await;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = tokio::process::Command::new(&python)
        .args(["-m", "schemathesis.cli", "run", &format!("http://{addr}/openapi.json")])
        .args(["--checks", "not_a_server_error", "--max-examples", "120", "--seed", "2026"])
        // Subscription streams never end by design; tests/tests/subscriptions.rs covers them.
        .args(["--exclude-path-regex", "^/v1/subscriptions/"])
        .args(["--header", &format!("Authorization: Bearer {KEY_FUZZ}")])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("schemathesis runs (pip install -r tests/interop/requirements.txt)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    // The process's metrics hold every gateway of this test binary: this one's carry its namespace.
    let mine = format!("namespace=\"{}\"", env.ns);
    let sum = |pred: &dyn Fn(&str) -> bool| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("orelink_http_request_seconds_count{") && l.contains(&mine) && pred(l))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
            .sum()
    };
    let requests = sum(&|_| true);
    let server_errors = sum(&|l| l.contains("status=\"5"));
    assert!(out.status.success(), "schemathesis failed:\n{stdout}\n{stderr}");
    assert!(requests >= 1_000, "only {requests} requests were generated:\n{stdout}");
    assert_eq!(server_errors, 0, "{metrics}");
    // Whatever the fuzzer sent, Kafka holds exactly the events the gateway accepted.
    let accepted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("orelink_gateway_events_accepted_total{") && l.contains(&mine))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
        .sum();
    let mut in_kafka = 0;
    for t in [topics::MARKET, topics::INVENTORY, topics::SHIPMENTS] {
        in_kafka += env.read_topic(&env.topic(t)).await.len() as u64;
    }
    assert_eq!(in_kafka, accepted, "events in Kafka vs accepted answers");
    eprintln!("schemathesis: {requests} requests, {server_errors} server errors, {accepted} events accepted");
    cancel.cancel();
    gw.await.unwrap();
}
