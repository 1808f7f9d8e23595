//! The view role on the real stack: its numbers equal an independent
//! recomputation from the topics after a run with duplicate input and a view
//! restart; after FLUSHALL, `view rebuild` restores the same numbers; the API
//! refuses requests without an operator token (checked by its digest), and a
//! token in the URL anywhere but on the event stream.

use orelink_codec::{Codec, Record};
use orelink_domain::events::{CapacityKind, OrderState, SharedOrderKind};
use orelink_domain::topology::topics;
use orelink_platform::Config;
use orelink_tests::TestEnv;
use rdkafka::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "op-test-token";
/// Baise's operators: their cluster's data, others' only as shared with them.
const BAISE_TOKEN: &str = "op-baise-token";

fn view_config(env: &TestEnv) -> Config {
    let mut cfg = env.role_config("view", "view-test");
    cfg.view.listen = "127.0.0.1:0".into();
    cfg.view.operator_token_digests = format!("{},{}@baise", orelink_platform::config::sha256_hex(TOKEN), orelink_platform::config::sha256_hex(BAISE_TOKEN));
    cfg
}

fn start_view(env: &TestEnv, cancel: CancellationToken) -> (tokio::task::JoinHandle<orelink_view::Applied>, tokio::sync::oneshot::Receiver<SocketAddr>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (cfg, r) = (view_config(env), env.reference.clone());
    let task = tokio::spawn(async move {
        orelink_view::run_with(&cfg, &r, cancel, move |a| {
            let _ = tx.send(a);
        })
        .await
        .expect("the view runs and stops cleanly")
    });
    (task, rx)
}

/// The numbers of one cluster × family, as the API names them.
type Cells = BTreeMap<(String, String), BTreeMap<&'static str, i64>>;

const FIELDS: [&str; 13] = [
    "declared_kg",
    "allocated_kg",
    "remaining_kg",
    "open_capacities",
    "allocations",
    "orders",
    "demand_kg",
    "open_demand_kg",
    "open_orders",
    "filled_kg",
    "shared_out",
    "shared_in",
    "energy_x1000",
];

/// Recomputes every cell from the topics, independently of the view's script.
fn recompute(records: &[(String, Record)]) -> Cells {
    #[derive(Default)]
    struct Cap {
        cluster: String,
        q: i64,
        alloc: i64,
        declared: bool,
        open: bool,
    }
    let mut caps: BTreeMap<(String, String), Cap> = BTreeMap::new();
    let mut first: BTreeMap<(String, String), (String, i64)> = BTreeMap::new(); // order -> (cluster, placed kg)
    let mut latest: BTreeMap<(String, String), orelink_domain::events::wire::OrderStatus> = BTreeMap::new();
    let mut alloc_by_cell: BTreeMap<(String, String), (i64, i64, i64, i64)> = BTreeMap::new(); // kg, count, kWh, kg with energy
    let mut seen_alloc = BTreeSet::new();
    let mut shared_in: BTreeSet<(String, String, String)> = BTreeSet::new(); // cluster, family, order
    let mut shared_out: BTreeSet<(String, String, String)> = BTreeSet::new();
    let fam = |code: &str| code.match_indices('-').nth(1).map_or(code, |(i, _)| &code[..i]).to_owned();
    for (_, r) in records {
        match r {
            Record::Capacity(c) => {
                let e = caps.entry((c.product.family_str().to_owned(), c.capacity_id.to_string())).or_default();
                e.cluster = c.cluster.to_string();
                match c.kind {
                    CapacityKind::Declared if !e.declared => {
                        e.declared = true;
                        e.open = true;
                        e.q = c.quantity.to_wire();
                    }
                    CapacityKind::Withdrawn => e.open = false,
                    _ => {}
                }
            }
            Record::Allocation(a) if seen_alloc.insert(a.allocation_id.clone()) => {
                let f = fam(&a.product_code);
                caps.entry((f.clone(), a.capacity_id.clone())).or_default().alloc += a.quantity_kg;
                let cell = alloc_by_cell.entry((a.capacity_cluster.clone(), f)).or_default();
                cell.0 += a.quantity_kg;
                cell.1 += 1;
                // The view keeps energy as whole kWh, each allocation's rounded.
                if let Some(e) = a.explanation.energy_kwh_per_t {
                    cell.2 += (e * a.quantity_kg + 500) / 1000;
                    cell.3 += a.quantity_kg;
                }
            }
            Record::OrderStatus(s) => {
                let key = (fam(&s.product_code), s.order_id.clone());
                first.entry(key.clone()).or_insert((s.cluster.clone(), s.remaining_kg + s.allocated_kg));
                if latest.get(&key).is_none_or(|l| l.version < s.version) {
                    latest.insert(key, s.clone());
                }
            }
            Record::SharedOrder(s) => {
                let (f, o) = (s.product.family_str().to_owned(), s.order_id.to_string());
                let out = (s.origin_cluster.to_string(), f.clone(), o.clone());
                let ins = s.target_clusters.iter().map(|t| (t.to_string(), f.clone(), o.clone()));
                if s.kind == SharedOrderKind::Shared {
                    shared_out.insert(out);
                    shared_in.extend(ins);
                } else {
                    shared_out.remove(&out);
                    for i in ins {
                        shared_in.remove(&i);
                    }
                }
            }
            _ => {}
        }
    }
    let mut cells = Cells::new();
    let mut add = |cluster: &str, family: &str, field: &'static str, v: i64| {
        *cells.entry((cluster.to_owned(), family.to_owned())).or_default().entry(field).or_default() += v;
    };
    for ((f, _), c) in &caps {
        if c.declared {
            add(&c.cluster, f, "declared_kg", c.q);
            if c.open {
                add(&c.cluster, f, "open_capacities", 1);
                add(&c.cluster, f, "remaining_kg", (c.q - c.alloc).max(0));
            }
        }
    }
    for ((cl, f), (kg, n, kwh, e_kg)) in &alloc_by_cell {
        add(cl, f, "allocated_kg", *kg);
        add(cl, f, "allocations", *n);
        if *e_kg > 0 {
            // kWh per kg × 1000 is kWh per tonne; × 1000 again, rounded, to compare.
            add(cl, f, "energy_x1000", (kwh * 1_000_000 + e_kg / 2) / e_kg);
        }
    }
    for ((f, id), (cluster, placed)) in &first {
        let l = &latest[&(f.clone(), id.clone())];
        add(cluster, f, "orders", 1);
        add(cluster, f, "demand_kg", *placed);
        add(cluster, f, "filled_kg", l.allocated_kg);
        if l.state == OrderState::Open {
            add(cluster, f, "open_orders", 1);
            add(cluster, f, "open_demand_kg", l.remaining_kg);
        }
    }
    for (c, f, _) in &shared_out {
        add(c, f, "shared_out", 1);
    }
    for (c, f, _) in &shared_in {
        add(c, f, "shared_in", 1);
    }
    // Cells that exist only with zeros are dropped on both sides.
    cells.retain(|_, v| v.values().any(|x| *x != 0));
    for v in cells.values_mut() {
        for f in FIELDS {
            v.entry(f).or_insert(0);
        }
    }
    cells
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

/// The view's cells through the API, in the recomputation's shape.
async fn served(addr: SocketAddr) -> Cells {
    let body = api(addr, "/api/v1/cells").await;
    let mut cells = Cells::new();
    for c in body["cells"].as_array().unwrap() {
        let mut v = BTreeMap::new();
        for f in FIELDS {
            let x = match f {
                "energy_x1000" => c["energy_kwh_per_t"].as_f64().map_or(0, |e| (e * 1000.0).round() as i64),
                _ => c[f].as_i64().unwrap(),
            };
            v.insert(f, x);
        }
        if v.values().any(|x| *x != 0) {
            cells.insert((c["cluster"].as_str().unwrap().to_owned(), c["family"].as_str().unwrap().to_owned()), v);
        }
    }
    cells
}

/// Fails with only the cells and fields that differ, so a failure reads.
fn assert_cells_eq(got: &Cells, want: &Cells, what: &str) {
    let keys: BTreeSet<_> = got.keys().chain(want.keys()).collect();
    let zero = BTreeMap::new();
    let diff: Vec<String> = keys
        .into_iter()
        .flat_map(|k| {
            let (g, w) = (got.get(k).unwrap_or(&zero), want.get(k).unwrap_or(&zero));
            FIELDS.iter().filter_map(move |f| {
                let (a, b) = (g.get(f).copied().unwrap_or(0), w.get(f).copied().unwrap_or(0));
                (a != b).then(|| format!("{}/{} {f}: view {a}, recomputed {b}", k.0, k.1))
            })
        })
        .collect();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

/// Every record of the view's inputs, decoded, and the last data offset of each partition.
async fn inputs(env: &TestEnv, codec: &Codec) -> (Vec<(String, Record)>, BTreeMap<String, i64>) {
    let mut records = Vec::new();
    let mut last = BTreeMap::new();
    for t in [topics::CAPACITY, topics::ORDER_STATUS, topics::ALLOCATIONS, topics::SHARED_ORDERS, topics::DLQ] {
        let topic = env.topic(t);
        for m in env.read_topic(&topic).await {
            last.insert(format!("{topic}:{}", m.partition()), m.offset());
            if let Ok(r) = codec.decode(&topic, m.payload()).await {
                records.push((topic.clone(), r));
            }
        }
    }
    (records, last)
}

/// Waits until the view's stored offsets reach every partition's last record.
async fn wait_view_caught_up(env: &TestEnv, codec: &Codec) -> Vec<(String, Record)> {
    let client = redis::Client::open(env.cfg.redis.url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (records, last) = inputs(env, codec).await;
        let stored: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(format!("{}view:offsets", env.ns)).query_async(&mut con).await.unwrap();
        let behind: Vec<_> = last.iter().filter(|(k, o)| stored.get(*k) != Some(o)).collect();
        if behind.is_empty() {
            return records;
        }
        assert!(tokio::time::Instant::now() < deadline, "the view did not catch up: {behind:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The share role has committed past the last status of every partition. (On
/// a transactional topic the high watermark also counts the last commit
/// marker, which a consumer never commits past: lag-to-watermark stays 1.)
async fn wait_share_caught_up(env: &TestEnv) {
    let topic = env.topic(topics::ORDER_STATUS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for m in env.read_topic(&topic).await {
            last.insert(m.partition(), m.offset());
        }
        let consumer: rdkafka::consumer::BaseConsumer = env.client("probe").set("group.id", orelink_share::group(&env.cfg)).set("enable.auto.commit", "false").create().unwrap();
        let t = topic.clone();
        let progress = tokio::task::spawn_blocking(move || orelink_platform::kafka::group_progress(&consumer, &t, Duration::from_secs(5)).unwrap()).await.unwrap();
        if progress.iter().all(|p| last.get(&p.partition).is_none_or(|l| p.committed > *l)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the share role did not catch up: {progress:?} vs {last:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn view_numbers_equal_a_recomputation_and_survive_duplicates_restarts_and_flushall() {
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
    // Duplicates at new offsets: capacity declared again, byte for byte.
    let cap_topic = env.topic(topics::CAPACITY);
    let producer = env.producer();
    let dups = env.read_topic(&cap_topic).await.into_iter().take(40).collect::<Vec<_>>();
    futures::future::join_all(dups.iter().map(|m| producer.send(rdkafka::producer::FutureRecord::to(&cap_topic).key(m.key().unwrap()).payload(m.payload().unwrap()), Duration::from_secs(30))))
        .await
        .into_iter()
        .for_each(|r| assert!(r.is_ok(), "duplicate not produced"));
    env.wait_caught_up(&orelink_matcher::processor_group(&env.cfg), &[env.topic("orelink.matcher-input.v1")], Duration::from_secs(90)).await;
    wait_share_caught_up(&env).await;
    let records = wait_view_caught_up(&env, &codec).await;
    let expected = recompute(&records);
    assert!(expected.values().any(|c| c["allocations"] > 0), "the workload allocated nothing");
    assert!(expected.values().any(|c| c["shared_in"] > 0 || c["shared_out"] > 0) || records.iter().any(|(_, r)| matches!(r, Record::SharedOrder(_))), "nothing was shared");
    assert_cells_eq(&served(addr).await, &expected, "the view differs from the recomputation");
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
    assert_cells_eq(&served(addr).await, &expected, "the rebuilt view differs from the recomputation");

    // A FLUSHALL under a running view: it notices and recomputes by itself.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    env.produce(&cap_topic, "AL-INGOT", env.read_topic(&cap_topic).await[0].payload().unwrap()).await;
    wait_view_caught_up(&env, &codec).await;
    assert_cells_eq(&served(addr).await, &expected, "the view did not recover from a FLUSHALL");

    view_stop.cancel();
    view.await.unwrap();
    hub.cancel();
    matcher.await.unwrap().unwrap();
    share.await.unwrap().unwrap();
}
