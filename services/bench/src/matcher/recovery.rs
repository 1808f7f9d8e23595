//! `orelink bench recovery`: the stall a crash costs. A role (the matcher,
//! the fanout, the enterprises' door, the share role, the webhooks role, the
//! view) runs as a process of its own (`orelink run <role>`, as its own
//! principal), fed at a fixed rate; a third of the way in it is SIGKILLed,
//! then either restarted at once with the same instance id (restart in
//! place) or not, a standby instance started beside it from the beginning
//! taking its partitions over. Reported: from the kill to the first output
//! produced after it (read read_committed: an allocation, a routed shipment,
//! a forwarded order, a shared order; a webhook request received; the view's
//! offsets in Redis advancing), and to the role's lag being back to what it
//! was before the kill.

use super::*;
use crate::OrSetup;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use watch::Watch;

mod watch;

/// The role `recovery` crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryRole {
    /// Orders and capacity in, allocations out (its processor group's lag).
    Matcher,
    /// Shipments in, one partner's topic out.
    Fanout,
    /// One enterprise's own orders on its ingest topic in, the shared orders topic out.
    Enterprises,
    /// Open order statuses in (as the matcher writes them), shared orders out.
    Share,
    /// One partner's topic in, signed HTTP requests to its webhook out.
    Webhooks,
    /// Order statuses in, Redis out (no consumer group: its offsets are in Redis).
    View,
    /// A site's events over HTTP in, their topics out (no consumer group:
    /// its progress is a topic of its own, read by hand).
    Edge,
}

impl RecoveryRole {
    pub const ALL: [RecoveryRole; 7] = [
        RecoveryRole::Matcher,
        RecoveryRole::Fanout,
        RecoveryRole::Enterprises,
        RecoveryRole::Share,
        RecoveryRole::Webhooks,
        RecoveryRole::View,
        RecoveryRole::Edge,
    ];

    /// The role by its name (`orelink run <name>`).
    pub fn parse(name: &str) -> Result<RecoveryRole, String> {
        Self::ALL.into_iter().find(|r| r.name() == name).ok_or_else(|| format!("{name:?}: one of {}", Self::ALL.map(|r| r.name()).join(", ")))
    }

    pub fn name(self) -> &'static str {
        match self {
            RecoveryRole::Matcher => "matcher",
            RecoveryRole::Fanout => "fanout",
            RecoveryRole::Enterprises => "enterprises",
            RecoveryRole::Share => "share",
            RecoveryRole::Webhooks => "webhooks",
            RecoveryRole::View => "view",
            RecoveryRole::Edge => "edge",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoveryReport {
    pub role: RecoveryRole,
    /// "restart" (in place) or "standby" (no restart).
    pub mode: &'static str,
    pub rate: u64,
    pub session_timeout_ms: u64,
    /// Kill -> the first output created after the kill, read
    /// read_committed. With a standby this is mostly the standby's own
    /// partitions going on: its takeover shows in `kill_to_caught_up_ms`.
    pub kill_to_first_output_ms: f64,
    /// Kill -> the role's lag back at or below its worst in the 3 s before
    /// the kill; for webhooks, every partition delivering before the kill
    /// delivering again (None: not within the run).
    pub kill_to_caught_up_ms: Option<f64>,
    /// Output records read (allocations, routed shipments).
    pub outputs: usize,
    /// The role's processes' output, for a look when a figure is odd.
    pub log: PathBuf,
}

/// `orelink run <role>` as instance `instance`, in `cfg`'s namespace.
pub(super) fn start(binary: &Path, env: &[(String, String)], cfg: &Config, role: RecoveryRole, instance: &str, log: &Path) -> Result<Running, BenchError> {
    // Only the view serves HTTP of its own; two of them must not share a port.
    let listen = (role == RecoveryRole::View).then_some(("ORELINK__VIEW__LISTEN", "127.0.0.1:0"));
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).or_setup("the role's log")?;
    let child = Command::new(binary)
        .args(["run", role.name()])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ORELINK__NAMESPACE", &cfg.namespace)
        .env("ORELINK__MATCHER__INSTANCE_ID", instance)
        .env("ORELINK__KAFKA__SESSION_TIMEOUT_MS", cfg.kafka.session_timeout_ms.to_string())
        .envs(listen)
        .stdin(Stdio::null())
        .stdout(out.try_clone().or_setup("the role's log")?)
        .stderr(out)
        .spawn()
        .or_setup("starting orelink run <role>")?;
    Ok(Running(Some(child)))
}

/// A role's process: stopped with SIGTERM (drain, commit) by `stop`, and
/// killed if dropped otherwise, so a failed run leaves none behind.
pub(super) struct Running(Option<Child>);

impl Running {
    pub(super) fn stop(mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    fn kill(mut self) -> Result<(), BenchError> {
        let mut c = self.0.take().expect("running");
        let killed = c.kill().or_setup("SIGKILL");
        let _ = c.wait();
        killed
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How `recovery` loads the role: events per second for `seconds`, and
/// whether a standby runs beside it (then the killed one is not restarted).
#[derive(Debug, Clone, Copy)]
pub struct RecoveryRun {
    pub role: RecoveryRole,
    pub rate: u64,
    pub seconds: u64,
    pub standby: bool,
}

/// Shipments, all carried by one partner, keyed by shipment id: the
/// fanout's load (on the shipments topic), or the webhooks role's (straight
/// on that partner's topic, as the fanout would write them). Returns the
/// events, the topic they go to, and the partner's topic.
async fn shipment_events(cfg: &Config, reference: &Reference, n: usize, on_partner_topic: bool) -> Result<(Vec<Encoded>, String, String), BenchError> {
    use orelink_domain::events::{ShipmentStatus, wire};
    let codec = orelink_platform::codec(cfg, reference).map_err(setup)?;
    let partner = reference.topology.partners.first().ok_or_else(|| setup("topology/partners.toml declares no partner"))?;
    let partner_topic = topics::partner(partner.id.as_str());
    let to = if on_partner_topic { partner_topic.clone() } else { topics::SHIPMENTS.to_owned() };
    let topic = codec.topic(&to);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let w = wire::ShipmentEvent {
            event_id: format!("bench-shp-{i}"),
            event_time: 1_795_000_000_000 + i as i64,
            shipment_id: format!("SHP-B{:05}", i % 5_000),
            allocation_id: None,
            carrier_id: partner.carrier_id.clone(),
            mode: orelink_domain::TransportMode::Road,
            status: ShipmentStatus::InTransit,
            from_site: "fcg-qisha-copper".into(),
            to_site: "nanning-niuwan-port".into(),
            quantity_kg: 30_000,
            lat: None,
            lon: None,
            eta: None,
        };
        out.push(Encoded { contract_topic: topics::SHIPMENTS, key: w.shipment_id.clone(), bytes: codec.encode(&topic, &w).await.map_err(setup)?, market: Vec::new(), order: false });
    }
    Ok((out, to, partner_topic))
}

/// Orders of the first declared enterprise, as buyer, for its ingest topic:
/// the enterprises' door's load (every one its own, so every one forwarded).
async fn ingest_events(cfg: &Config, reference: &Reference, n: usize) -> Result<(Vec<Encoded>, String), BenchError> {
    use orelink_domain::events::{OrderKind, wire};
    let codec = orelink_platform::codec(cfg, reference).map_err(setup)?;
    let enterprise = reference.topology.enterprises.first().ok_or_else(|| setup("topology/enterprises.toml declares no enterprise"))?;
    // The hub's order schema: registered under the ingest topic's order subject too.
    let orders = codec.topic(topics::ORDERS);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let w = wire::OrderEvent {
            event_id: format!("bench-ingest-{i}"),
            event_time: 1_795_000_000_000 + i as i64,
            order_id: format!("ING-{i:06}"),
            kind: OrderKind::Placed,
            cluster: "baise".into(),
            buyer_id: enterprise.id.clone(),
            product_code: "AL2O3-SGA-AO-2".into(),
            quantity_kg: 100_000,
            deliver_by: 1_796_000_000_000,
            destination_site: "baise-pingguo-smelter".into(),
            max_price_cny_per_t: 3_000,
            allow_cross_cluster: false,
        };
        // Keyed by order id, so the ingest topic's partitions all carry some
        // (and a standby owns some, the killed instance others); the door
        // keys what it forwards by family, whatever the enterprise chose.
        out.push(Encoded { contract_topic: topics::ORDERS, key: w.order_id.clone(), bytes: codec.encode(&orders, &w).await.map_err(setup)?, market: Vec::new(), order: true });
    }
    Ok((out, topics::ingest(&enterprise.id)))
}

/// Statuses of open Baise alumina orders that could not be filled at home:
/// the share role's load (alumina shares at once, topology/sharing.toml), as
/// the matcher would write them to the order-status topic.
async fn status_events(cfg: &Config, reference: &Reference, n: usize) -> Result<Vec<Encoded>, BenchError> {
    use orelink_domain::events::{OrderState, wire};
    let codec = orelink_platform::codec(cfg, reference).map_err(setup)?;
    let topic = codec.topic(topics::ORDER_STATUS);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let w = wire::OrderStatus {
            event_id: format!("bench-status-{i}"),
            status_at: 1_795_000_000_000 + i as i64,
            version: 1,
            state: OrderState::Open,
            order_id: format!("SHR-{i:06}"),
            cluster: "baise".into(),
            buyer_id: "91451000MA5L0CHG10".into(),
            product_code: "AL2O3-SGA-AO-2".into(),
            destination_site: "baise-pingguo-smelter".into(),
            deliver_by: 1_796_000_000_000,
            max_price_cny_per_t: 3_000,
            allow_cross_cluster: true,
            remaining_kg: 100_000,
            allocated_kg: 0,
            shared_to: vec![],
        };
        // Keyed by order id, so every partition carries some (the matcher keys by family).
        out.push(Encoded { contract_topic: topics::ORDER_STATUS, key: w.order_id.clone(), bytes: codec.encode(&topic, &w).await.map_err(setup)?, market: Vec::new(), order: false });
    }
    Ok(out)
}

/// What loads the role: records produced to Kafka (to their contract
/// topic, or `send_to`), or events POSTed to the edge relay with its key.
enum Load {
    Kafka { events: Vec<Encoded>, send_to: Option<String>, partitions: Option<Partitions> },
    Http { events: Vec<serde_json::Value>, url: String, key: String },
}

/// The edge relay's site (clusters.toml): the Dachang tin smelter.
const EDGE_SITE: &str = "hechi-dachang-tin";

/// Inventory readings of the edge's site, four products in turn.
fn inventory_events(n: usize) -> Vec<serde_json::Value> {
    const PRODUCTS: [&str; 4] = ["SN-INGOT-SN99.90", "SN-INGOT-SN99.95", "ZN-INGOT-ZN99.995", "PB-INGOT-PB99.994"];
    (0..n)
        .map(|i| {
            serde_json::json!({
                "event_id": format!("bench-edge-inv-{i}"),
                "event_time": 1_795_000_000_000i64 + i as i64,
                "site_id": EDGE_SITE,
                "product_code": PRODUCTS[i % PRODUCTS.len()],
                "on_hand_kg": 100_000 + i as i64,
                "reserved_kg": 0,
            })
        })
        .collect()
}

/// POSTs `events` at `rate` per second, as a site's systems would: each
/// retried until the relay answers 202 (it is down between kill and
/// restart), so late ones go in a burst after. Returns how many were taken.
async fn post_all(events: Vec<serde_json::Value>, url: String, key: String, rate: u64) -> Result<usize, BenchError> {
    let http = reqwest::Client::new();
    let start = Instant::now();
    for (n, e) in events.iter().enumerate() {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            match http.post(&url).bearer_auth(&key).json(e).send().await {
                Ok(r) if r.status().as_u16() == 202 => break,
                Ok(r) if r.status().is_client_error() => return Err(setup(format!("the relay refused event {n}: {} {}", r.status(), r.text().await.unwrap_or_default()))),
                _ if Instant::now() < give_up => tokio::time::sleep(Duration::from_millis(20)).await,
                other => return Err(setup(format!("the relay did not take event {n} within 60 s: {other:?}"))),
            }
        }
    }
    Ok(events.len())
}

/// The principals of a bench namespace, with the topology's ACLs: the role
/// runs as its own principal, as anywhere else. `None` where the broker has
/// no authorizer (then it runs with the configured credentials).
pub(super) fn principals(cfg: &Config, reference: &Reference) -> Result<Option<PathBuf>, BenchError> {
    let file = std::env::temp_dir().join(format!("orelink-bench-principals-{}.toml", std::process::id()));
    match orelink_platform::access_apply::apply_access(&cfg.kafka.client_config("bench"), reference, &cfg.namespace, &file, false) {
        Ok(_) => Ok(Some(file)),
        Err(orelink_platform::access_apply::AccessError::NoAuthorizer) => Ok(None),
        Err(e) => Err(setup(e)),
    }
}

/// The group's lag on `input`, summed over partitions.
fn lag(probe: &BaseConsumer, input: &str) -> Option<i64> {
    group_progress(probe, input, Duration::from_secs(5)).ok().map(|ps| ps.iter().map(|p| (p.end - p.committed).max(0)).sum())
}

/// Runs the recovery benchmark; `binary` is the `orelink` to start the
/// role with, `env` what it needs besides the namespace (a config file).
pub async fn recovery(base: &Config, reference: &Reference, run: RecoveryRun, binary: &Path, env: &[(String, String)], log: &(dyn Fn(&str) + Sync)) -> Result<RecoveryReport, BenchError> {
    let RecoveryRun { role, rate, seconds, standby } = run;
    let cfg = namespace(base, reference, "recovery").await?;
    let mut env = env.to_vec();
    let (c, r) = (cfg.clone(), reference.clone());
    if let Some(file) = tokio::task::spawn_blocking(move || principals(&c, &r)).await.map_err(setup)?? {
        env.push(("ORELINK__KAFKA__PRINCIPALS_FILE".into(), file.display().to_string()));
    }
    let log_file = std::env::temp_dir().join(format!("orelink-bench-recovery-{}.log", std::process::id()));
    let n = (rate * (seconds + 1)) as usize;
    // What the role reads (and the events' topic, when not their contract
    // topic), where its output shows, and the group whose lag tells it caught up.
    let topic_watch = |output: &str, group: &str| -> Result<Watch, BenchError> {
        Ok(Watch::Topic { receiver: Receiver::start(&cfg, &format!("{}{output}", cfg.namespace))?, probe: cfg.kafka.reader_config("bench-probe", group).create()?, partitions: None })
    };
    let kafka = |events, send_to| Load::Kafka { events, send_to, partitions: None };
    let (load, input, watch) = match role {
        RecoveryRole::Matcher => {
            let (events, _) = latency_events(&cfg, reference, rate, seconds).await?;
            (kafka(events, None), topics::MARKET.to_owned(), topic_watch(topics::ALLOCATIONS, &orelink_matcher::processor_group(&cfg))?)
        }
        RecoveryRole::Fanout => {
            let (events, _, output) = shipment_events(&cfg, reference, n, false).await?;
            (kafka(events, None), topics::SHIPMENTS.to_owned(), topic_watch(&output, &orelink_fanout::group(&cfg))?)
        }
        RecoveryRole::Share => {
            let events = status_events(&cfg, reference, n).await?;
            // The share role commits in the background: caught up is told by partitions flowing again.
            let partitions = Partitions::default();
            let mut watch = topic_watch(topics::SHARED_ORDERS, &orelink_share::group(&cfg))?;
            if let Watch::Topic { partitions: p, .. } = &mut watch {
                *p = Some(partitions.clone());
            }
            (Load::Kafka { events, send_to: None, partitions: Some(partitions) }, topics::ORDER_STATUS.to_owned(), watch)
        }
        RecoveryRole::Enterprises => {
            let (events, ingest) = ingest_events(&cfg, reference, n).await?;
            (kafka(events, Some(ingest.clone())), ingest, topic_watch(topics::ORDERS, &orelink_enterprises::group(&cfg))?)
        }
        RecoveryRole::Webhooks => {
            let (events, to, partner_topic) = shipment_events(&cfg, reference, n, true).await?;
            let partner = reference.topology.partners.first().map(|p| p.id.to_string()).unwrap_or_default();
            let (watch, addr) = Watch::hook().await?;
            let file = std::env::temp_dir().join(format!("orelink-bench-webhooks-{}.toml", std::process::id()));
            let hooks = format!("[[webhook]]\npartner = \"{partner}\"\nurl = \"http://{addr}/hook\"\nsecret_env = \"ORELINK_BENCH_HOOK_KEY\"\nallow_private = true\n");
            std::fs::write(&file, hooks).or_setup("the webhooks file")?;
            env.push(("ORELINK__WEBHOOKS__FILE".into(), file.display().to_string()));
            env.push(("ORELINK_BENCH_HOOK_KEY".into(), uuid::Uuid::new_v4().simple().to_string()));
            (kafka(events, Some(to)), partner_topic, watch)
        }
        RecoveryRole::View => {
            let events = status_events(&cfg, reference, n).await?;
            // Any token: nothing here asks the view's API.
            env.push(("ORELINK__VIEW__OPERATOR_TOKEN_DIGESTS".into(), orelink_platform::config::sha256_hex(&uuid::Uuid::new_v4().simple().to_string())));
            (kafka(events, None), topics::ORDER_STATUS.to_owned(), Watch::view(&cfg, cfg.kafka.client_config("bench-probe").create()?).await?)
        }
        RecoveryRole::Edge => {
            if standby {
                return Err(setup("the edge has no standby: a site has one relay (a second would fence the first), restarted where it runs"));
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).or_setup("a free port")?.port();
            let key = uuid::Uuid::new_v4().simple().to_string();
            let dir = std::env::temp_dir().join(format!("orelink-bench-edge-{}", std::process::id()));
            for (k, v) in [
                ("ORELINK__EDGE__DIR", dir.display().to_string()),
                ("ORELINK__EDGE__SITE", EDGE_SITE.to_owned()),
                ("ORELINK__EDGE__LISTEN", format!("127.0.0.1:{port}")),
                ("ORELINK__EDGE__KEY_SHA256", orelink_platform::config::sha256_hex(&key)),
            ] {
                env.push((k.into(), v));
            }
            let url = format!("http://127.0.0.1:{port}/v1/inventory");
            let watch = Watch::Edge { receiver: Receiver::start(&cfg, &format!("{}{}", cfg.namespace, topics::INVENTORY))?, status: format!("http://127.0.0.1:{port}/status"), http: reqwest::Client::new() };
            (Load::Http { events: inventory_events(n), url, key }, topics::INVENTORY.to_owned(), watch)
        }
    };
    let env = env.as_slice();
    let mut a = Some(start(binary, env, &cfg, role, "a", &log_file)?);
    let b = if standby { Some(start(binary, env, &cfg, role, "b", &log_file)?) } else { None };
    let input = format!("{}{input}", cfg.namespace);
    let group_lag = |probe: &BaseConsumer| lag(probe, &input);

    log(&format!("sending {n} events at {rate}/s; the kill comes a third of the way in"));
    let sending = match load {
        Load::Kafka { events, send_to, partitions } => {
            let producer = producer(&cfg)?;
            let ns = cfg.namespace.clone();
            tokio::spawn(async move { send_noting(&producer, &events, |e| format!("{ns}{}", send_to.as_deref().unwrap_or(e.contract_topic)), Some(rate), partitions.as_ref()).await.map(|s| s.len()) })
        }
        Load::Http { events, url, key } => tokio::spawn(post_all(events, url, key, rate)),
    };

    // Before the kill: the lag the role keeps up with, sampled.
    let kill_at = Instant::now() + Duration::from_secs(seconds / 3).max(Duration::from_secs(4));
    let mut worst_before = 0;
    while Instant::now() < kill_at {
        if Instant::now() + Duration::from_secs(3) >= kill_at {
            worst_before = worst_before.max(watch.lag(&input, group_lag).await.unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !watch.any() {
        return Err(setup(format!("no output before the kill; see {}", log_file.display())));
    }
    let killed_at = (Instant::now(), wall_ms());
    a.take().expect("started").kill()?;
    // The killed process is gone: whatever shows from here on is the restarted one's, or the standby's.
    let dead = Instant::now();
    if !standby {
        a = Some(start(binary, env, &cfg, role, "a", &log_file)?);
    }
    log(&if standby { "killed instance a; b takes over".to_owned() } else { format!("killed the {} and started it again", role.name()) });

    // After: the first output made after the kill, and the lag back where it was.
    let deadline = Instant::now() + Duration::from_secs(seconds.max(60));
    let mut caught_up = None;
    let mut first_output = None;
    while Instant::now() < deadline && (first_output.is_none() || caught_up.is_none()) {
        if first_output.is_none() {
            first_output = watch.first_after(killed_at.1, dead).map(|at| at.duration_since(killed_at.0));
        }
        if first_output.is_some() && caught_up.is_none() {
            caught_up = watch.caught_up(&input, worst_before, killed_at, dead, group_lag).await.map(|at| at.duration_since(killed_at.0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sending.await.map_err(setup)??;
    for m in a.into_iter().chain(b) {
        m.stop();
    }
    let outputs = watch.finish();
    if role == RecoveryRole::View
        && let Ok(mut redis) = async { redis::Client::open(cfg.redis.url.as_str())?.get_connection_manager().await }.await
    {
        let _ = orelink_view::materialise::clear(&mut redis, &cfg.namespace).await;
    }
    if role == RecoveryRole::Edge {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("orelink-bench-edge-{}", std::process::id())));
    }
    drop_namespace(&cfg).await;
    let first_output = first_output.ok_or_else(|| setup(format!("no output after the kill ({sent} events sent); see {}", log_file.display())))?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(RecoveryReport {
        role,
        mode: if standby { "standby" } else { "restart" },
        rate,
        session_timeout_ms: cfg.kafka.session_timeout_ms,
        kill_to_first_output_ms: ms(first_output),
        kill_to_caught_up_ms: caught_up.map(ms),
        outputs,
        log: log_file,
    })
}

#[cfg(test)]
mod tests {
    use super::RecoveryRole;

    #[test]
    fn every_role_is_named_as_it_is_run_and_parsed_back() {
        for r in RecoveryRole::ALL {
            assert_eq!(RecoveryRole::parse(r.name()), Ok(r));
        }
        let e = RecoveryRole::parse("gateway").unwrap_err();
        assert!(e.contains("matcher") && e.contains("edge"), "{e}");
    }
}
