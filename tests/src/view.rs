//! The view's numbers, recomputed independently from the topics it reads,
//! and what the view serves, in one shape to compare (the view and failover
//! tests).

use crate::TestEnv;
use orelink_codec::{Codec, Record};
use orelink_domain::events::{CapacityKind, OrderState, SharedOrderKind};
use orelink_domain::topology::topics;
use rdkafka::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// The numbers of one cluster × family, as the API names them.
pub type Cells = BTreeMap<(String, String), BTreeMap<&'static str, i64>>;

pub const FIELDS: [&str; 13] = [
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
pub fn recompute(records: &[(String, Record)]) -> Cells {
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
    let fam = |code: &str| orelink_domain::catalog::family_of(code).to_owned();
    for (_, r) in records {
        match r {
            Record::Capacity(c) => {
                let e = caps.entry((c.product.family_str().to_owned(), c.capacity_id.to_string())).or_default();
                match c.kind {
                    // A capacity's cluster is its declaration's, whatever a withdrawal names.
                    CapacityKind::Declared if !e.declared => {
                        e.cluster = c.cluster.to_string();
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

/// The view's cells through the API, in the recomputation's shape.
pub async fn served(addr: SocketAddr, token: &str) -> Cells {
    let r = reqwest::Client::new().get(format!("http://{addr}/api/v1/cells")).bearer_auth(token).send().await.unwrap();
    assert!(r.status().is_success(), "/api/v1/cells: {}", r.status());
    let body: serde_json::Value = r.json().await.unwrap();
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
pub fn assert_cells_eq(got: &Cells, want: &Cells, what: &str) {
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
pub async fn inputs(env: &TestEnv, codec: &Codec) -> (Vec<(String, Record)>, BTreeMap<String, i64>) {
    let mut records = Vec::new();
    let mut last = BTreeMap::new();
    for t in [topics::MARKET, topics::ORDER_STATUS, topics::ALLOCATIONS, topics::SHARED_ORDERS, topics::DLQ] {
        let topic = env.topic(t);
        for m in env.read_topic(&topic).await {
            last.insert(format!("{topic}:{}", m.partition()), m.offset());
            match codec.decode(&topic, m.payload()).await {
                // Of the market, capacity only: shares count from their own topic.
                Ok(r) if t == topics::MARKET && !matches!(r, Record::Capacity(_)) => {}
                Ok(r) => records.push((topic.clone(), r)),
                Err(_) => {}
            }
        }
    }
    (records, last)
}

/// Waits until the view's stored offsets reach every partition's last record.
pub async fn wait_view_caught_up(env: &TestEnv, codec: &Codec) -> Vec<(String, Record)> {
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
pub async fn wait_share_caught_up(env: &TestEnv) {
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

/// Per cell, `[declared, allocated, demand placed]` kg of a period.
pub type PeriodCells = BTreeMap<(String, String), [i64; 3]>;

/// What was declared, allocated and demanded with event time in
/// `[from, to)` (`from` none: since the beginning), recomputed from the
/// topics: a capacity counts at its first declaration, an allocation once
/// by its id at its decision time, an order's demand at its first status.
pub fn recompute_in_period(records: &[(String, Record)], from: Option<i64>, to: i64) -> PeriodCells {
    let within = |t: i64| from.is_none_or(|f| t >= f) && t < to;
    let fam = |code: &str| orelink_domain::catalog::family_of(code).to_owned();
    let (mut caps, mut allocs, mut orders) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut cells = PeriodCells::new();
    for (_, r) in records {
        let (cell, i, kg, at) = match r {
            Record::Capacity(c) if c.kind == CapacityKind::Declared && caps.insert((c.product.family_str().to_owned(), c.capacity_id.to_string())) => {
                ((c.cluster.to_string(), c.product.family_str().to_owned()), 0, c.quantity.to_wire(), c.event_time.0)
            }
            Record::Allocation(a) if allocs.insert(a.allocation_id.clone()) => ((a.capacity_cluster.clone(), fam(&a.product_code)), 1, a.quantity_kg, a.decided_at),
            Record::OrderStatus(s) if orders.insert((fam(&s.product_code), s.order_id.clone())) => ((s.cluster.clone(), fam(&s.product_code)), 2, s.remaining_kg + s.allocated_kg, s.status_at),
            _ => continue,
        };
        if within(at) {
            cells.entry(cell).or_default()[i] += kg;
        }
    }
    cells.retain(|_, v| v.iter().any(|x| *x != 0));
    cells
}

/// The view's `in_period` figures for `query` (`period=7d`, `since=...`)
/// and the `[from, to)` it says they cover.
pub async fn served_in_period(addr: SocketAddr, token: &str, query: &str) -> (Option<i64>, i64, PeriodCells) {
    let r = reqwest::Client::new().get(format!("http://{addr}/api/v1/cells?{query}")).bearer_auth(token).send().await.unwrap();
    assert!(r.status().is_success(), "/api/v1/cells?{query}: {}", r.status());
    let body: serde_json::Value = r.json().await.unwrap();
    let period = &body["period"];
    let (from, to) = (period["from_ms"].as_i64(), period["to_ms"].as_i64().expect("a view with events has a period end"));
    let mut cells = PeriodCells::new();
    for c in body["cells"].as_array().unwrap() {
        let p = &c["in_period"];
        let v = ["declared_kg", "allocated_kg", "demand_kg"].map(|f| p[f].as_i64().unwrap());
        if v.iter().any(|x| *x != 0) {
            cells.insert((c["cluster"].as_str().unwrap().to_owned(), c["family"].as_str().unwrap().to_owned()), v);
        }
    }
    (from, to, cells)
}
