//! `orelink bench view`: materialisation events/s and view query latency.
//!
//! 1. In a fresh namespace, the simulator writes a workload and the matcher
//!    and share role process it (real broker, real registry).
//! 2. `view rebuild` from an empty view: read + decode + apply, events/s.
//! 3. The view role serves, and an open-loop client sends a mix of API
//!    queries at a fixed rate: p50/p99/max latency, measured at the client.
//!
//! It measures; it asserts nothing.

use crate::{BenchError, OrSetup};
use orelink_platform::registry_client::RegistryClient;
use orelink_platform::{Config, Reference, apply};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, serde::Serialize)]
pub struct ViewReport {
    pub input_events: u64,
    pub materialise_events_per_s: f64,
    pub query_rate: u64,
    pub queries: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub by_endpoint_p99_ms: std::collections::BTreeMap<&'static str, f64>,
}

pub async fn run(base: &Config, reference: &Reference, sim_events: u64, rate: u64, seconds: u64, log: &(dyn Fn(&str) + Sync)) -> Result<ViewReport, BenchError> {
    let mut cfg = base.clone();
    cfg.namespace = format!("{}bench-view-{}.", cfg.namespace, std::process::id());
    cfg.matcher.instance_id = "bench-view".into();
    cfg.view.listen = "127.0.0.1:0".into();
    let token = uuid::Uuid::new_v4().simple().to_string();
    cfg.view.operator_token_digests = orelink_platform::config::sha256_hex(&token);
    let registry = RegistryClient::from_config(&cfg).or_setup("registry client")?;
    apply::apply(&cfg.kafka.client_config("bench"), &registry, reference, &cfg.namespace, false).await.or_setup("topology apply")?;

    // 1. A workload, processed by the matcher and the share role.
    log(&format!("simulating {sim_events} events into {}", cfg.namespace));
    let hub = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(cfg.clone(), reference.clone(), hub.clone()));
    let share = {
        let (c, r, h) = (cfg.clone(), reference.clone(), hub.clone());
        tokio::spawn(async move { orelink_share::run(&c, &r, h).await })
    };
    let sim_rate = 5_000;
    let secs = sim_events.div_ceil(sim_rate);
    // The simulated clock runs behind the wall clock, so delayed shares fall due.
    let start = orelink_platform::dlq::now_millis().0 - 30 * 86_400_000;
    orelink_simulator::run(&cfg, reference, 7, start, sim_rate, Duration::from_secs(secs), CancellationToken::new()).await.or_setup("simulator")?;
    log("waiting for the matcher and the share role to catch up");
    let probe: rdkafka::consumer::BaseConsumer = cfg.kafka.client_config("bench-probe").set("group.id", orelink_matcher::processor_group(&cfg)).create().or_setup("probe")?;
    let input = format!("{}orelink.market.v1", cfg.namespace);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let p = orelink_platform::kafka::group_progress(&probe, &input, Duration::from_secs(5)).or_setup("matcher progress")?;
        if p.iter().all(|x| x.lag() == 0) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Setup("the matcher did not catch up".into()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The share role's last publications follow the statuses within a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    hub.cancel();
    matcher.await.or_setup("matcher task")?.or_setup("matcher")?;
    share.await.or_setup("share task")?.or_setup("share")?;

    // 2. Materialisation from an empty view.
    log("rebuilding the view from Kafka");
    let started = Instant::now();
    let (_, applied) = orelink_view::rebuild(&cfg, reference, CancellationToken::new()).await.or_setup("view rebuild")?;
    let materialise = applied.read as f64 / started.elapsed().as_secs_f64();
    log(&format!("{} events read, {} applied in {:.2} s", applied.read, applied.applied, started.elapsed().as_secs_f64()));

    // 3. Queries at a fixed rate against the serving view.
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let view = {
        let (c, r, s) = (cfg.clone(), reference.clone(), stop.clone());
        tokio::spawn(async move {
            orelink_view::run_with(&c, &r, s, move |a| {
                let _ = tx.send(a);
            })
            .await
        })
    };
    let addr = rx.await.or_setup("the view did not start")?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().or_setup("http client")?;
    let order = {
        let r: serde_json::Value = client.get(format!("http://{addr}/api/v1/allocations/latest?limit=1")).bearer_auth(&token).send().await.or_setup("latest allocations")?.json().await.or_setup("latest allocations")?;
        r["allocations"][0]["order_id"].as_str().unwrap_or("none").to_owned()
    };
    let endpoints: Vec<(&'static str, String)> = vec![
        ("clusters", "/api/v1/clusters".into()),
        ("cluster", "/api/v1/clusters/baise".into()),
        ("cells", "/api/v1/cells?cluster=hechi".into()),
        ("open-orders", "/api/v1/orders/open?cluster=nanning&limit=50".into()),
        ("shared-in", "/api/v1/orders/shared?cluster=baise&direction=in&limit=50".into()),
        ("latest", "/api/v1/allocations/latest?limit=30".into()),
        ("order", format!("/api/v1/orders/{order}/allocations")),
        ("series", "/api/v1/timeseries?cluster=baise&family=AL-INGOT".into()),
    ];
    // Warm the connection pool and the server.
    for (_, path) in &endpoints {
        client.get(format!("http://{addr}{path}")).bearer_auth(&token).send().await.or_setup("warm-up")?.bytes().await.or_setup("warm-up")?;
    }
    log(&format!("querying at {rate} requests/s for {seconds} s"));
    let total = (rate * seconds) as usize;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    // Bounded: never more than this many requests in flight (the client would otherwise queue without limit).
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(512));
    for i in 0..total {
        // Open loop: each request leaves at its scheduled time; latency counts from then.
        let due = begin + period * i as u32;
        tokio::time::sleep_until(due).await;
        let (name, path) = endpoints[i % endpoints.len()].clone();
        let (client, token, slots) = (client.clone(), token.clone(), slots.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.ok();
            let r = client.get(format!("http://{addr}{path}")).bearer_auth(&token).send().await;
            let ok = match r {
                Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                Err(_) => false,
            };
            (name, due.elapsed(), ok)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut per: std::collections::BTreeMap<&'static str, Vec<f64>> = Default::default();
    let mut errors = 0;
    for t in tasks {
        let (name, took, ok) = t.await.or_setup("query task")?;
        let ms = took.as_secs_f64() * 1000.0;
        if !ok {
            errors += 1;
        }
        all.push(ms);
        per.entry(name).or_default().push(ms);
    }
    stop.cancel();
    view.await.or_setup("view task")?.or_setup("view")?;
    let q = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * p).round() as usize] }
    };
    let by_endpoint_p99_ms = per.iter_mut().map(|(k, v)| (*k, q(v, 0.99))).collect();
    Ok(ViewReport {
        input_events: applied.read,
        materialise_events_per_s: materialise,
        query_rate: rate,
        queries: all.len(),
        errors,
        p50_ms: q(&mut all, 0.5),
        p99_ms: q(&mut all, 0.99),
        max_ms: all.last().copied().unwrap_or(0.0),
        by_endpoint_p99_ms,
    })
}
