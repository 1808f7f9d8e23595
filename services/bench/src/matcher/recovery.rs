//! `orelink bench recovery`: the stall a crash costs. A role (the matcher,
//! the fanout, the enterprises' door, the share role) runs as a process of its own (`orelink run <role>`, as its
//! own principal), fed at a fixed rate; a third of the way in it is
//! SIGKILLed, then either restarted at once with the same instance id
//! (restart in place) or not, a standby instance started beside it from the
//! beginning taking its partitions over. Reported: from the kill to the first
//! output produced after it (read read_committed: an allocation, a routed
//! shipment, a forwarded order, a shared order), and to the role's lag being back to what it was before the kill.

use super::*;
use crate::OrSetup;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
}

impl RecoveryRole {
    pub fn name(self) -> &'static str {
        match self {
            RecoveryRole::Matcher => "matcher",
            RecoveryRole::Fanout => "fanout",
            RecoveryRole::Enterprises => "enterprises",
            RecoveryRole::Share => "share",
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
    /// Kill -> the role's group lag back at or below its worst in the 3 s
    /// before the kill (None: not within the run).
    pub kill_to_caught_up_ms: Option<f64>,
    /// Output records read (allocations, routed shipments).
    pub outputs: usize,
    /// The role's processes' output, for a look when a figure is odd.
    pub log: PathBuf,
}

/// `orelink run <role>` as instance `instance`, in `cfg`'s namespace.
fn start(binary: &Path, env: &[(String, String)], cfg: &Config, role: RecoveryRole, instance: &str, log: &Path) -> Result<Running, BenchError> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).or_setup("the role's log")?;
    let child = Command::new(binary)
        .args(["run", role.name()])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ORELINK__NAMESPACE", &cfg.namespace)
        .env("ORELINK__MATCHER__INSTANCE_ID", instance)
        .env("ORELINK__KAFKA__SESSION_TIMEOUT_MS", cfg.kafka.session_timeout_ms.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone().or_setup("the role's log")?)
        .stderr(out)
        .spawn()
        .or_setup("starting orelink run <role>")?;
    Ok(Running(Some(child)))
}

/// A role's process: stopped with SIGTERM (drain, commit) by `stop`, and
/// killed if dropped otherwise, so a failed run leaves none behind.
struct Running(Option<Child>);

impl Running {
    fn stop(mut self) {
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

/// Shipments, all carried by one partner, keyed by shipment id: the fanout's load.
async fn shipment_events(cfg: &Config, reference: &Reference, n: usize) -> Result<(Vec<Encoded>, String), BenchError> {
    use orelink_domain::events::{ShipmentStatus, wire};
    let codec = orelink_platform::codec(cfg, reference).map_err(setup)?;
    let partner = reference.topology.partners.first().ok_or_else(|| setup("topology/partners.toml declares no partner"))?;
    let topic = codec.topic(topics::SHIPMENTS);
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
        out.push(Encoded { contract_topic: topics::SHIPMENTS, key: w.shipment_id.clone(), bytes: codec.encode(&topic, &w).await.map_err(setup)?, order: false });
    }
    Ok((out, topics::partner(partner.id.as_str())))
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
        out.push(Encoded { contract_topic: topics::ORDERS, key: w.order_id.clone(), bytes: codec.encode(&orders, &w).await.map_err(setup)?, order: true });
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
        out.push(Encoded { contract_topic: topics::ORDER_STATUS, key: w.order_id.clone(), bytes: codec.encode(&topic, &w).await.map_err(setup)?, order: false });
    }
    Ok(out)
}

/// The principals of a bench namespace, with the topology's ACLs: the role
/// runs as its own principal, as anywhere else. `None` where the broker has
/// no authorizer (then it runs with the configured credentials).
fn principals(cfg: &Config, reference: &Reference) -> Result<Option<PathBuf>, BenchError> {
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
/// matchers with, `env` what they need besides the namespace (a config file).
pub async fn recovery(base: &Config, reference: &Reference, run: RecoveryRun, binary: &Path, env: &[(String, String)], log: &(dyn Fn(&str) + Sync)) -> Result<RecoveryReport, BenchError> {
    let RecoveryRun { role, rate, seconds, standby } = run;
    let cfg = namespace(base, reference, "recovery").await?;
    let mut env = env.to_vec();
    let (c, r) = (cfg.clone(), reference.clone());
    if let Some(file) = tokio::task::spawn_blocking(move || principals(&c, &r)).await.map_err(setup)?? {
        env.push(("ORELINK__KAFKA__PRINCIPALS_FILE".into(), file.display().to_string()));
    }
    let env = env.as_slice();
    let log_file = std::env::temp_dir().join(format!("orelink-bench-recovery-{}.log", std::process::id()));
    // What the role reads and writes, and the group whose lag tells it caught up.
    // (The events' topic, when not their contract topic: the ingest topic.)
    let (events, output, input, group, send_to) = match role {
        RecoveryRole::Matcher => {
            let (events, _) = latency_events(&cfg, reference, rate, seconds).await?;
            (events, topics::ALLOCATIONS.to_owned(), topics::MATCHER_INPUT.to_owned(), orelink_matcher::processor_group(&cfg), None)
        }
        RecoveryRole::Fanout => {
            let (events, output) = shipment_events(&cfg, reference, (rate * (seconds + 1)) as usize).await?;
            (events, output, topics::SHIPMENTS.to_owned(), orelink_fanout::group(&cfg), None)
        }
        RecoveryRole::Share => {
            let events = status_events(&cfg, reference, (rate * (seconds + 1)) as usize).await?;
            (events, topics::SHARED_ORDERS.to_owned(), topics::ORDER_STATUS.to_owned(), orelink_share::group(&cfg), None)
        }
        RecoveryRole::Enterprises => {
            let (events, ingest) = ingest_events(&cfg, reference, (rate * (seconds + 1)) as usize).await?;
            (events, topics::ORDERS.to_owned(), ingest.clone(), orelink_enterprises::group(&cfg), Some(ingest))
        }
    };
    let mut a = Some(start(binary, env, &cfg, role, "a", &log_file)?);
    let b = if standby { Some(start(binary, env, &cfg, role, "b", &log_file)?) } else { None };
    let receiver = Receiver::start(&cfg, &format!("{}{output}", cfg.namespace))?;
    let input = format!("{}{input}", cfg.namespace);
    let probe: BaseConsumer = cfg.kafka.reader_config("bench-probe", &group).create()?;

    log(&format!("sending {} events at {rate}/s; the kill comes a third of the way in", events.len()));
    let producer = producer(&cfg)?;
    let ns = cfg.namespace.clone();
    let sending = tokio::spawn(async move { send_all(&producer, &events, |e| format!("{ns}{}", send_to.as_deref().unwrap_or(e.contract_topic)), Some(rate)).await.map(|s| s.len()) });

    // Before the kill: the lag the matcher keeps up with, sampled.
    let kill_at = Instant::now() + Duration::from_secs(seconds / 3).max(Duration::from_secs(4));
    let mut worst_before = 0;
    while Instant::now() < kill_at {
        if Instant::now() + Duration::from_secs(3) >= kill_at {
            worst_before = worst_before.max(lag(&probe, &input).unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if receiver.count() == 0 {
        return Err(setup(format!("no output before the kill; see {}", log_file.display())));
    }
    let killed_at = (Instant::now(), wall_ms());
    a.take().expect("started").kill()?;
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
            first_output = receiver.first_created_after(killed_at.1).map(|at| at.duration_since(killed_at.0));
        }
        if first_output.is_some() && caught_up.is_none() && lag(&probe, &input).is_some_and(|l| l <= worst_before) {
            caught_up = Some(killed_at.0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sending.await.map_err(setup)??;
    let outputs = receiver.finish().len();
    for m in a.into_iter().chain(b) {
        m.stop();
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
