//! Partners and enterprises over HTTP, on the real stack: a partner's key
//! streams its own shipments and never another's; a stream resumed with
//! Last-Event-ID loses and repeats nothing; EPCIS output validates against the
//! bundled GS1 schema; an enterprise's key streams only the allocations that
//! name it; a webhook receiver that fails twice, then succeeds, gets every
//! event once, in order, with a valid signature; a dead receiver's deliveries
//! are parked after the last attempt and redriven once it is back.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use orelink_domain::events::{ShipmentStatus, wire};
use orelink_domain::topology::{TransportMode, topics};
use orelink_tests::TestEnv;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BEIBU: (&str, &str) = ("beibu-gulf-logistics", "91450600MA5L0BGL1P");
const XIJIANG: (&str, &str) = ("xijiang-shipping", "91450400MA5L0XJS2M");
const BUYER: &str = "91450100MA5L0ABC1X";
const OTHER_BUYER: &str = "91450100MA5L0XYZ2Q";
const PROVIDER: &str = "91451000MA5L0PRV1Y";
const KEY_BEIBU: &str = "key-beibu-partner";
const KEY_XIJIANG: &str = "key-xijiang-partner";
const KEY_BUYER: &str = "key-nanning-buyer";

fn keys_file(dir: &std::path::Path) -> String {
    let d = orelink_gateway::keys::digest;
    let text = format!(
        r#"
[[key]]
id = "beibu"
sha256 = "{}"
carrier = "{}"
rate_per_s = 100
burst = 100

[[key]]
id = "xijiang"
sha256 = "{}"
carrier = "{}"
rate_per_s = 100
burst = 100

[[key]]
id = "buyer"
sha256 = "{}"
enterprise = "{BUYER}"
rate_per_s = 100
burst = 100
"#,
        d(KEY_BEIBU),
        BEIBU.1,
        d(KEY_XIJIANG),
        XIJIANG.1,
        d(KEY_BUYER)
    );
    let path = dir.join("keys.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn shipment(n: u32, carrier: &str) -> wire::ShipmentEvent {
    let status = [ShipmentStatus::Planned, ShipmentStatus::PickedUp, ShipmentStatus::InTransit, ShipmentStatus::Arrived, ShipmentStatus::Delivered][n as usize % 5];
    wire::ShipmentEvent {
        event_id: format!("sub-evt-{carrier}-{n:04}"),
        event_time: 1_795_000_000_000 + n as i64 * 1000,
        shipment_id: format!("SHP-{:03}", n % 9),
        allocation_id: Some(format!("alloc-{n}")),
        carrier_id: carrier.into(),
        mode: TransportMode::Sea,
        status,
        from_site: "fcg-port".into(),
        to_site: "nanning-niuwan-port".into(),
        quantity_kg: 100_000 + n as i64,
        lat: n.is_multiple_of(2).then_some(21.6),
        lon: n.is_multiple_of(2).then_some(108.3),
        eta: None,
    }
}

fn allocation(n: u32, buyer: &str) -> wire::Allocation {
    wire::Allocation {
        allocation_id: format!("sub-alloc-{n:04}"),
        order_id: format!("ord-{n}"),
        capacity_id: format!("cap-{n}"),
        order_cluster: "nanning".into(),
        capacity_cluster: "baise".into(),
        buyer_id: buyer.into(),
        provider_id: PROVIDER.into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 25_000,
        price_cny_per_t: 20_100,
        freight_cny_per_t: 180,
        from_site: "baise-pingguo-smelter".into(),
        destination_site: "nanning-jiangnan-processing".into(),
        decided_at: 1_795_000_000_000 + n as i64,
        explanation: wire::Explanation {
            rank: 1,
            home_cluster: false,
            requested_product_code: "AL-INGOT-AL99.70".into(),
            landed_cost_cny_per_t: 20_280,
            distance_km: 230,
            transit_hours: 6,
            mode: TransportMode::Road,
            energy_kwh_per_t: Some(13_500),
            summary: "test".into(),
        },
        pick_up: None, deliver_by: None,
    }
}

async fn produce_shipments(env: &TestEnv, codec: &orelink_codec::Codec, partner: &str, carrier: &str, range: std::ops::Range<u32>) -> Vec<wire::ShipmentEvent> {
    let topic = env.topic(&topics::partner(partner));
    let mut out = Vec::new();
    for n in range {
        let s = shipment(n, carrier);
        env.produce(&topic, &s.shipment_id, &codec.encode(&topic, &s).await.unwrap()).await;
        out.push(s);
    }
    out
}

async fn start_gateway(env: &TestEnv, dir: &std::path::Path, cancel: CancellationToken) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    orelink_tests::start_gateway(env, std::path::Path::new(&keys_file(dir)), cancel).await
}

/// One SSE event: its id, type and JSON data.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// Reads `n` events from a stream (or panics after `timeout`), then drops the connection.
async fn read_events(addr: SocketAddr, path: &str, key: &str, last_id: Option<&str>, n: usize, timeout: Duration) -> Vec<Sse> {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(key);
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}: {:?}", resp.text().await);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.unwrap_or_else(|_| panic!("{path}: only {} of {n} events within {timeout:?}", out.len()));
        let chunk = chunk.unwrap().expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().into();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().into();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                out.push(Sse { id, event, data: serde_json::from_str(&data).unwrap() });
            }
        }
    }
    out.truncate(n);
    out
}

/// Whether any event arrives within `wait` (for "nothing more" checks).
async fn any_more(addr: SocketAddr, path: &str, key: &str, last_id: &str, wait: Duration) -> bool {
    tokio::time::timeout(wait, read_events(addr, path, key, Some(last_id), 1, wait * 2)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_streams_its_own_shipments_resumes_without_loss_and_gets_valid_epcis() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let beibu = produce_shipments(&env, &codec, BEIBU.0, BEIBU.1, 0..30).await;
    let xijiang = produce_shipments(&env, &codec, XIJIANG.0, XIJIANG.1, 0..10).await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (addr, gateway) = start_gateway(&env, dir.path(), cancel.clone()).await;
    let path = "/v1/subscriptions/shipments";

    // A's key: A's shipments, every one, and nothing of B's (B's topic is never read for A).
    let first = read_events(addr, path, KEY_BEIBU, None, 12, Duration::from_secs(30)).await;
    let rest = read_events(addr, path, KEY_BEIBU, Some(&first.last().unwrap().id), 18, Duration::from_secs(30)).await;
    assert!(!any_more(addr, path, KEY_BEIBU, &rest.last().unwrap().id, Duration::from_secs(2)).await, "events beyond the 30 produced");
    let got: Vec<wire::ShipmentEvent> = first.iter().chain(&rest).map(|e| serde_json::from_value(e.data.clone()).unwrap()).collect();
    assert!(got.iter().all(|s| s.carrier_id == BEIBU.1), "only the partner's own shipments");
    // Resumed: nothing lost, nothing repeated (as sets), and per-shipment order kept.
    let mut ids: Vec<&str> = got.iter().map(|s| s.event_id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = beibu.iter().map(|s| s.event_id.as_str()).collect();
    want.sort();
    assert_eq!(ids, want);
    for sid in beibu.iter().map(|s| &s.shipment_id) {
        let seen: Vec<&str> = got.iter().filter(|s| &s.shipment_id == sid).map(|s| s.event_id.as_str()).collect();
        let sent: Vec<&str> = beibu.iter().filter(|s| &s.shipment_id == sid).map(|s| s.event_id.as_str()).collect();
        assert_eq!(seen, sent, "shipment {sid} in order");
    }
    assert!(first.iter().all(|e| e.event == "shipment"));

    // B's key sees B's ten and never A's.
    let b = read_events(addr, path, KEY_XIJIANG, None, 10, Duration::from_secs(30)).await;
    let b: Vec<wire::ShipmentEvent> = b.iter().map(|e| serde_json::from_value(e.data.clone()).unwrap()).collect();
    assert!(b.iter().all(|s| s.carrier_id == XIJIANG.1));
    assert_eq!(b.len(), xijiang.len());

    // EPCIS: every event validates against the bundled GS1 schema.
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(orelink_tests::repo_root().join("schemas/epcis/EPCIS-JSON-Schema.json")).unwrap()).unwrap();
    let validator = jsonschema::draft7::new(&schema).unwrap();
    let epcis = read_events(addr, &format!("{path}?format=epcis"), KEY_BEIBU, None, 30, Duration::from_secs(30)).await;
    for e in &epcis {
        let problems: Vec<String> = validator.iter_errors(&e.data).map(|p| format!("{p} at {}", p.instance_path)).collect();
        assert!(problems.is_empty(), "{problems:?}\n{:#}", e.data);
        assert_eq!(e.data["type"], "ObjectEvent");
        assert_eq!(e.data["orelink:carrierID"], BEIBU.1);
    }

    // Refusals are JSON: no key, a key of no partner, a bad cursor, a bad format.
    let client = reqwest::Client::new();
    let no_key = client.get(format!("http://{addr}{path}")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let buyer = client.get(format!("http://{addr}{path}")).bearer_auth(KEY_BUYER).send().await.unwrap();
    assert_eq!(buyer.status(), 403);
    assert_eq!(buyer.json::<Value>().await.unwrap()["error"], "forbidden");
    let bad = client.get(format!("http://{addr}{path}")).bearer_auth(KEY_BEIBU).header("Last-Event-ID", "0-x").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad = client.get(format!("http://{addr}/v1/subscriptions/allocations?format=epcis")).bearer_auth(KEY_BUYER).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    cancel.cancel();
    gateway.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enterprise_streams_only_the_allocations_that_name_it() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let topic = env.topic(topics::ALLOCATIONS);
    for n in 0..20 {
        let a = allocation(n, if n % 3 == 0 { BUYER } else { OTHER_BUYER });
        env.produce(&topic, "AL-INGOT", &codec.encode(&topic, &a).await.unwrap()).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (addr, gateway) = start_gateway(&env, dir.path(), cancel.clone()).await;
    let path = "/v1/subscriptions/allocations";
    let mine = read_events(addr, path, KEY_BUYER, None, 7, Duration::from_secs(30)).await;
    let ids: Vec<String> = mine.iter().map(|e| e.data["allocation_id"].as_str().unwrap().to_owned()).collect();
    let want: Vec<String> = (0..20).filter(|n| n % 3 == 0).map(|n| format!("sub-alloc-{n:04}")).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, want);
    assert!(mine.iter().all(|e| e.event == "allocation" && e.data["buyer_id"] == BUYER));
    assert!(!any_more(addr, path, KEY_BUYER, &mine.last().unwrap().id, Duration::from_secs(2)).await, "allocations of other buyers leaked");
    // A partner's key has no enterprise: refused.
    let r = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(KEY_BEIBU).send().await.unwrap();
    assert_eq!(r.status(), 403);
    cancel.cancel();
    gateway.await.unwrap();
}

/// A receiver that refuses its first two requests, then records what it accepts.
#[derive(Default)]
struct Receiver {
    calls: usize,
    accepted: Vec<(String, Value)>,
    bad_signatures: usize,
}

const SECRET: &str = "webhook-secret-0123456789";

/// Serves `app` on a loopback port of its own.
async fn serve_receiver(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The webhooks role with one webhook for Beibu (`extra` adds TOML lines to
/// it), retrying after 50 ms, doubling to 200 ms, parking a delivery after
/// `max_attempts`; stopped by the returned token.
async fn start_webhook(
    env: &TestEnv,
    url: &str,
    extra: &str,
    max_attempts: u32,
) -> (CancellationToken, tokio::task::JoinHandle<Result<Vec<(String, orelink_platform::consume::LoopStats)>, orelink_outbound::webhook::WebhookError>>) {
    let hooks = orelink_outbound::webhook::parse(
        &format!("[[webhook]]\npartner = \"{}\"\nurl = \"{url}\"\nsecret_env = \"HOOK_KEY\"\n{extra}", BEIBU.0),
        &env.reference,
        |k| (k == "HOOK_KEY").then(|| SECRET.to_owned()),
    )
    .expect("the webhook config is valid");
    let mut cfg = env.as_role("webhooks");
    (cfg.webhooks.retry_initial_ms, cfg.webhooks.retry_max_ms, cfg.webhooks.max_attempts) = (50, 200, max_attempts);
    let cancel = CancellationToken::new();
    let (r, c) = (env.reference.clone(), cancel.clone());
    (cancel, tokio::spawn(async move { orelink_outbound::webhook::run_hooks(&cfg, &r, hooks, c).await }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_that_fails_twice_then_succeeds_gets_every_event_once_signed() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let sent = produce_shipments(&env, &codec, BEIBU.0, BEIBU.1, 0..25).await;

    let state = Arc::new(Mutex::new(Receiver::default()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let state = state.clone();
            move |headers: HeaderMap, body: Bytes| async move {
                let mut s = state.lock().unwrap();
                s.calls += 1;
                if s.calls <= 2 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let ts = headers["x-orelink-timestamp"].to_str().unwrap();
                let sig = headers["x-orelink-signature"].to_str().unwrap();
                let delivery = headers["x-orelink-delivery"].to_str().unwrap().to_owned();
                // The receiver's check: the signature over delivery, timestamp and body, and a fresh timestamp.
                let now = orelink_platform::dlq::now_millis().0;
                if !orelink_outbound::webhook::verify(SECRET.as_bytes(), &delivery, ts, &body, sig) || !orelink_outbound::webhook::fresh(ts, now, Duration::from_secs(300)) {
                    s.bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                s.accepted.push((delivery, serde_json::from_slice(&body).unwrap()));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let addr = serve_receiver(app).await;
    // The test's receiver is on loopback, which a webhook reaches only when allowed.
    let (cancel, role) = start_webhook(&env, &format!("http://{addr}/hook"), "allow_private = true\n", 12).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while state.lock().unwrap().accepted.len() < sent.len() {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {} delivered", state.lock().unwrap().accepted.len(), sent.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more arrives (no repeats), then a clean stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel.cancel();
    let stats = role.await.unwrap().expect("the webhooks role stops cleanly");
    let s = state.lock().unwrap();
    assert_eq!(s.calls, sent.len() + 2, "two refusals, then each event once");
    assert_eq!(s.bad_signatures, 0);
    let got: Vec<wire::ShipmentEvent> = s.accepted.iter().map(|(_, v)| serde_json::from_value(v.clone()).unwrap()).collect();
    let mut ids: Vec<&str> = got.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), sent.len(), "every event once");
    for sid in sent.iter().map(|s| &s.shipment_id) {
        let seen: Vec<&str> = got.iter().filter(|s| &s.shipment_id == sid).map(|s| s.event_id.as_str()).collect();
        let want: Vec<&str> = sent.iter().filter(|s| &s.shipment_id == sid).map(|s| s.event_id.as_str()).collect();
        assert_eq!(seen, want, "shipment {sid} in order");
    }
    assert_eq!(stats[0].1.delivered, sent.len() as u64);
    // A config naming an unknown partner or lacking its key is refused, every problem at once.
    let problems = orelink_outbound::webhook::parse("[[webhook]]\npartner = \"nobody\"\nurl = \"ftp://x\"\nsecret_env = \"NOPE\"\n", &env.reference, |_| None).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
}

/// A webhook whose host name resolves only to loopback is never called
/// (the guard checks every resolved address at each connection), unless
/// the webhook allows private addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_to_a_name_that_resolves_inside_is_never_called() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    produce_shipments(&env, &codec, BEIBU.0, BEIBU.1, 0..3).await;
    let calls = Arc::new(Mutex::new(0usize));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let calls = calls.clone();
            move || async move {
                *calls.lock().unwrap() += 1;
                StatusCode::NO_CONTENT
            }
        }),
    );
    let port = serve_receiver(app).await.port();
    // A host name passes the start-up check; its addresses are checked at each connection.
    let (cancel, role) = start_webhook(&env, &format!("http://localhost:{port}/hook"), "", 1_000).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    cancel.cancel();
    let stats = role.await.unwrap().expect("the role stops cleanly");
    assert_eq!(*calls.lock().unwrap(), 0, "the receiver on loopback was called");
    assert_eq!(stats[0].1.delivered, 0, "nothing counts as delivered");
}


/// A receiver that is down: each delivery is tried `max_attempts` times, then
/// parked with its delivery id, and the stream moves on; once the receiver is
/// back, a redrive sends the parked deliveries in order, each once, and a
/// second redrive has nothing left to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_receivers_deliveries_are_parked_then_redriven() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let sent = produce_shipments(&env, &codec, BEIBU.0, BEIBU.1, 0..4).await;
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state = Arc::new(Mutex::new(Receiver::default()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let (up, state) = (up.clone(), state.clone());
            move |headers: HeaderMap, body: Bytes| async move {
                let mut s = state.lock().unwrap();
                s.calls += 1;
                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                    return StatusCode::BAD_GATEWAY;
                }
                let (ts, sig) = (headers["x-orelink-timestamp"].to_str().unwrap(), headers["x-orelink-signature"].to_str().unwrap());
                let delivery = headers["x-orelink-delivery"].to_str().unwrap().to_owned();
                if !orelink_outbound::webhook::verify(SECRET.as_bytes(), &delivery, ts, &body, sig) {
                    s.bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                s.accepted.push((delivery, serde_json::from_slice(&body).unwrap()));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let addr = serve_receiver(app).await;
    let url = format!("http://{addr}/hook");
    let (cancel, role) = start_webhook(&env, &url, "allow_private = true\n", 3).await;

    // Every delivery parked after three attempts; the stream went past them all.
    let parked = env.topic(&topics::parked(BEIBU.0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.read_topic(&parked).await.len() < sent.len() {
        assert!(tokio::time::Instant::now() < deadline, "not every delivery was parked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_caught_up(&orelink_outbound::webhook::group(&env.cfg, BEIBU.0), &[env.topic(&topics::partner(BEIBU.0))], Duration::from_secs(30)).await;
    cancel.cancel();
    role.await.unwrap().expect("the webhooks role stops cleanly");
    assert_eq!(state.lock().unwrap().calls, 3 * sent.len(), "three attempts each");
    let mut parked_ids = Vec::new();
    for m in env.read_topic(&parked).await {
        use rdkafka::message::{Headers, Message};
        let header = |k: &str| m.headers().unwrap().iter().find(|h| h.key == k).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(header(orelink_outbound::webhook::PARKED_ATTEMPTS).as_deref(), Some("3"));
        assert!(header(orelink_outbound::webhook::PARKED_ERROR).unwrap().contains("502"), "the last error is kept");
        parked_ids.push(header(orelink_outbound::webhook::PARKED_DELIVERY).expect("the delivery id is kept"));
    }

    // The receiver is back: a redrive sends each parked delivery once, in order, with its own id.
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let hook = orelink_outbound::webhook::parse(&format!("[[webhook]]\npartner = \"{}\"\nurl = \"{url}\"\nsecret_env = \"HOOK_KEY\"\nallow_private = true\n", BEIBU.0), &env.reference, |_| Some(SECRET.to_owned())).unwrap().remove(0);
    let done = orelink_outbound::webhook::redrive(&env.as_role("webhooks"), &env.reference, hook.clone()).await.unwrap();
    assert_eq!(done, orelink_outbound::webhook::Redriven { sent: sent.len() as u64, left: 0, stopped_at: None });
    let again = orelink_outbound::webhook::redrive(&env.as_role("webhooks"), &env.reference, hook).await.unwrap();
    assert_eq!(again.sent, 0, "a second redrive sends nothing again");
    let s = state.lock().unwrap();
    assert_eq!(s.bad_signatures, 0);
    assert_eq!(s.accepted.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(), parked_ids, "the parked delivery ids, in order");
    let mut got: Vec<String> = s.accepted.iter().map(|(_, v)| v["event_id"].as_str().unwrap().to_owned()).collect();
    got.sort();
    let mut want: Vec<String> = sent.iter().map(|e| e.event_id.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "every parked event once");
}
