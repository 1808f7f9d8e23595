//! orelink-stack: the local stack without Docker.
//!
//! - Apache Kafka 4.x in KRaft combined mode, one node or three (a
//!   replicated cluster: RF 3, min.insync.replicas 2), its jars resolved from
//!   Maven Central with `mvn` into a cache outside the repository, storage
//!   formatted on first start; `kill|start|pause|resume <node>` for faults;
//! - Redis: one already listening is reused, else Debian's `redis-server` is
//!   started (and installed with apt-get when missing and we are root);
//! - the schema registry: `orelink run registry`, which keeps its schemas in
//!   Kafka's compacted `_schemas` topic.
//!
//! `up` is idempotent and returns once every part answers; `down` stops only
//! what `up` started (recorded in `state.json`, each pid checked against its
//! command line before it is signalled); `--purge` removes the local data.
//! Nothing here is used on the hub's data path: it only runs servers.

mod kafka;
mod process;
mod redis;
mod registry;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use kafka::{ADMIN as KAFKA_ADMIN, KAFKA_VERSION, active_controller};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Fetch(String),
    #[error("{component} did not become healthy within {waited:?}; its log is {log}")]
    Unhealthy { component: &'static str, waited: Duration, log: String },
    #[error("{0}")]
    Missing(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// Where and how the stack runs. Defaults: Kafka on 127.0.0.1:9092 (controller
/// 9093), Redis on 6379, registry on 8081; `ORELINK_STACK_KAFKA_PORT`,
/// `ORELINK_STACK_CONTROLLER_PORT`, `ORELINK_STACK_REDIS_PORT` and
/// `ORELINK_STACK_REGISTRY_PORT` move them, so a second stack (a test's, with
/// its own `ORELINK_HOME`) runs beside a developer's. `ORELINK_STACK_BROKERS`
/// (1 or 3; `stack up --brokers`) makes Kafka three nodes, node n on the
/// Kafka and controller ports + 2(n-1); a stack keeps its count once made.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Downloaded artifacts (Kafka jars); kept by `--purge`.
    pub cache_dir: PathBuf,
    /// Logs, Kafka's log dirs, Redis' dir, `state.json`; removed by `--purge`.
    pub data_dir: PathBuf,
    pub host: String,
    pub kafka_port: u16,
    pub controller_port: u16,
    pub redis_port: u16,
    pub registry_port: u16,
    /// The `orelink` binary that serves the registry role.
    pub orelink_exe: PathBuf,
    pub kafka_heap: String,
    /// Kafka nodes: 1, or 3 (a replicated cluster, each node broker and controller).
    pub brokers: u8,
}

/// The environment variables that move the stack's ports, with their defaults.
pub const PORT_VARS: [(&str, u16); 4] =
    [("ORELINK_STACK_KAFKA_PORT", 9092), ("ORELINK_STACK_CONTROLLER_PORT", 9093), ("ORELINK_STACK_REDIS_PORT", 6379), ("ORELINK_STACK_REGISTRY_PORT", 8081)];

impl StackConfig {
    /// Defaults under `$ORELINK_CACHE` (else `~/.cache/orelink`) and
    /// `$ORELINK_HOME` (else `~/.local/share/orelink`), ports from `PORT_VARS`.
    /// Every malformed port is reported at once.
    pub fn from_env(orelink_exe: PathBuf) -> Result<StackConfig, StackError> {
        Self::from_vars(orelink_exe, |k| std::env::var_os(k))
    }

    pub fn from_vars(orelink_exe: PathBuf, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<StackConfig, StackError> {
        let home = var("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        let cache_dir = var("ORELINK_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join(".cache/orelink"));
        let data_dir = var("ORELINK_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".local/share/orelink")).join("stack");
        let mut problems = Vec::new();
        let ports = PORT_VARS.map(|(name, default)| match var(name) {
            None => default,
            Some(v) => v.to_str().and_then(|s| s.trim().parse::<u16>().ok()).filter(|p| *p > 0).unwrap_or_else(|| {
                problems.push(format!("{name}={v:?} is not a port (1 to 65535)"));
                default
            }),
        });
        let mut sorted = ports;
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            problems.push(format!("the stack's four ports must differ ({})", PORT_VARS.map(|(n, _)| n).join(", ")));
        }
        if !problems.is_empty() {
            return Err(StackError::Missing(problems.join("; ")));
        }
        let [kafka_port, controller_port, redis_port, registry_port] = ports;
        // The count this stack was made with, unless the environment names one.
        let made = std::fs::read_to_string(data_dir.join("brokers")).ok().and_then(|s| s.trim().parse::<u8>().ok());
        let brokers = match var("ORELINK_STACK_BROKERS") {
            None => made.unwrap_or(1),
            Some(v) => match v.to_str().and_then(|s| s.trim().parse::<u8>().ok()) {
                Some(n @ (1 | 3)) => n,
                _ => return Err(StackError::Missing(format!("ORELINK_STACK_BROKERS={v:?}: 1 or 3"))),
            },
        };
        let mut cfg = StackConfig {
            cache_dir,
            data_dir,
            host: "127.0.0.1".into(),
            kafka_port,
            controller_port,
            redis_port,
            registry_port,
            orelink_exe,
            kafka_heap: "1g".into(),
            brokers: 1,
        };
        cfg.set_brokers(brokers)?;
        Ok(cfg)
    }

    /// Sets the Kafka node count (1 or 3), checking the nodes' ports against the others.
    pub fn set_brokers(&mut self, n: u8) -> Result<(), StackError> {
        if !matches!(n, 1 | 3) {
            return Err(StackError::Missing(format!("{n} Kafka nodes: the stack runs 1 or 3")));
        }
        self.brokers = n;
        // Three JVMs on one machine: each with less heap than a lone node.
        self.kafka_heap = if n == 1 { "1g" } else { "512m" }.into();
        let mut ports: Vec<u16> = (1..=n).flat_map(|i| { let (p, c) = self.node_ports(i); [p, c] }).chain([self.redis_port, self.registry_port]).collect();
        ports.sort_unstable();
        if ports.windows(2).any(|w| w[0] == w[1]) {
            return Err(StackError::Missing(format!("the ports of {n} Kafka nodes (Kafka and controller ports + 2 per node), Redis and the registry must all differ")));
        }
        Ok(())
    }

    /// Node n's (1-based) client and controller ports.
    pub fn node_ports(&self, n: u8) -> (u16, u16) {
        let step = 2 * (n as u16 - 1);
        (self.kafka_port.saturating_add(step), self.controller_port.saturating_add(step))
    }

    /// Node n's client address.
    pub fn node_address(&self, n: u8) -> String {
        format!("{}:{}", self.host, self.node_ports(n).0)
    }

    /// Every node's client address, comma-separated.
    pub fn kafka_bootstrap(&self) -> String {
        (1..=self.brokers).map(|n| self.node_address(n)).collect::<Vec<_>>().join(",")
    }
    pub fn redis_url(&self) -> String {
        format!("redis://{}:{}/", self.host, self.redis_port)
    }
    pub fn registry_url(&self) -> String {
        format!("http://{}:{}", self.host, self.registry_port)
    }
    fn state_file(&self) -> PathBuf {
        self.data_dir.join("state.json")
    }
}

/// What `up` started, so `down` stops exactly that.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    started: Vec<process::Managed>,
}

impl State {
    fn load(path: &Path) -> State {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
    fn save(&self, path: &Path) -> Result<(), StackError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("state serialises"))
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io_err(format!("writing {}", path.display())))
    }
    fn managed(&self, component: &str) -> Option<&process::Managed> {
        self.started.iter().find(|m| m.component == component && m.alive())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComponentStatus {
    pub endpoint: String,
    pub healthy: bool,
    /// Started by `orelink stack up` (as opposed to found running).
    pub managed: bool,
    pub pid: Option<u32>,
    pub log: Option<String>,
    pub detail: String,
}

/// One Kafka node of the stack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub id: u8,
    pub endpoint: String,
    pub controller: String,
    /// Its process runs (it may be paused: `paused`).
    pub running: bool,
    pub paused: bool,
    pub pid: Option<u32>,
    pub log: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StackStatus {
    /// The cluster: healthy while any broker answers (`nodes` says which run).
    pub kafka: ComponentStatus,
    pub nodes: Vec<NodeStatus>,
    pub redis: ComponentStatus,
    pub registry: ComponentStatus,
    pub data_dir: String,
    pub cache_dir: String,
}

impl StackStatus {
    pub fn healthy(&self) -> bool {
        self.kafka.healthy && self.redis.healthy && self.registry.healthy
    }
}

/// Progress lines for a person watching `up`.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// Brings every part up, reusing what already runs. Returns the names of what it started.
pub async fn up(cfg: &StackConfig, progress: Progress<'_>) -> Result<Vec<String>, StackError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(format!("creating {}", cfg.data_dir.display())))?;
    let mut state = State::load(&cfg.state_file());
    state.started.retain(|m| m.alive());
    let mut started = Vec::new();

    if kafka::brokers_up(cfg).await >= cfg.brokers as usize {
        progress(&format!("kafka: already up on {}", cfg.kafka_bootstrap()));
    } else {
        let nodes = kafka::start(cfg, |c| state.managed(c).is_some(), progress).await?;
        std::fs::write(cfg.data_dir.join("brokers"), cfg.brokers.to_string()).map_err(io_err("recording the stack's node count"))?;
        for m in nodes {
            started.push(m.component.clone());
            state.started.push(m);
        }
        state.save(&cfg.state_file())?;
        kafka::wait(cfg, progress).await?;
    }

    if redis::healthy(cfg).await {
        progress(&format!("redis: already up on {}:{}", cfg.host, cfg.redis_port));
    } else {
        let m = redis::start(cfg, progress).await?;
        state.started.push(m);
        state.save(&cfg.state_file())?;
        started.push("redis".to_owned());
        redis::wait(cfg).await?;
        progress("redis: healthy");
    }

    if registry::healthy(cfg).await {
        progress(&format!("registry: already up on {}", cfg.registry_url()));
    } else {
        let m = registry::start(cfg)?;
        state.started.push(m);
        state.save(&cfg.state_file())?;
        started.push("registry".to_owned());
        registry::wait(cfg).await?;
        progress(&format!("registry: healthy on {}", cfg.registry_url()));
    }
    // Local commands find this stack's endpoints (and its Kafka login) there.
    if let Some(password) = kafka::admin_password(cfg) {
        kafka::write_credentials(cfg, &password)?;
    }
    Ok(started)
}

/// Stops what `up` started, newest first (the registry before the Kafka it uses).
pub async fn down(cfg: &StackConfig, purge: bool, progress: Progress<'_>) -> Result<(), StackError> {
    let state = State::load(&cfg.state_file());
    for m in state.started.iter().rev() {
        if m.alive() {
            progress(&format!("{}: stopping pid {}", m.component, m.pid));
            m.stop(Duration::from_secs(30)).await;
        }
    }
    State::default().save(&cfg.state_file())?;
    if purge {
        progress(&format!("removing {}", cfg.data_dir.display()));
        match std::fs::remove_dir_all(&cfg.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StackError::Io { what: format!("removing {}", cfg.data_dir.display()), source: e }),
        }
    }
    Ok(())
}

pub async fn status(cfg: &StackConfig) -> StackStatus {
    let state = State::load(&cfg.state_file());
    let component = |name: &str, endpoint: String, healthy: bool, detail: String| {
        let m = state.managed(name);
        ComponentStatus {
            endpoint,
            healthy,
            managed: m.is_some(),
            pid: m.map(|m| m.pid),
            log: m.map(|m| m.log.clone()),
            detail,
        }
    };
    let (k, r, g) = tokio::join!(kafka::brokers_up(cfg), redis::healthy(cfg), registry::healthy(cfg));
    let nodes: Vec<NodeStatus> = (1..=cfg.brokers)
        .map(|n| {
            let m = state.managed(&kafka::component(cfg, n));
            NodeStatus {
                id: n,
                endpoint: cfg.node_address(n),
                controller: format!("{}:{}", cfg.host, cfg.node_ports(n).1),
                running: m.is_some(),
                paused: m.is_some_and(|m| m.stopped()),
                pid: m.map(|m| m.pid),
                log: kafka::node_dir(cfg, n).join("kafka.log").display().to_string(),
            }
        })
        .collect();
    let detail = if cfg.brokers == 1 {
        format!("Apache Kafka {KAFKA_VERSION}, KRaft combined mode")
    } else {
        format!("Apache Kafka {KAFKA_VERSION}, {} KRaft nodes (broker and controller), {k} brokers answering", cfg.brokers)
    };
    // The first node's process stands for the cluster's (the single node's pid, as before).
    let mut kafka = component(&kafka::component(cfg, 1), cfg.kafka_bootstrap(), k > 0, detail);
    kafka.log = Some(kafka::node_dir(cfg, 1).join("kafka.log").display().to_string()).filter(|_| kafka.managed);
    StackStatus {
        kafka,
        nodes,
        redis: component("redis", format!("{}:{}", cfg.host, cfg.redis_port), r, "redis-server".into()),
        registry: component("registry", cfg.registry_url(), g, "orelink registry (Confluent-compatible API)".into()),
        data_dir: cfg.data_dir.display().to_string(),
        cache_dir: cfg.cache_dir.display().to_string(),
    }
}

/// What `stack kill|start|pause|resume` does to one Kafka node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// SIGKILL: a crash (the node's log and data stay).
    Kill,
    /// Starts a node that is not running, and waits until it is a broker again.
    Start,
    /// SIGSTOP: a hung node (its sockets stay open, nothing answers).
    Pause,
    /// SIGCONT.
    Resume,
}

/// Which node: a number, or "controller" (the quorum's active controller, asked of the quorum).
pub fn resolve_node(cfg: &StackConfig, node: &str) -> Result<u8, StackError> {
    let n = if node == "controller" {
        kafka::active_controller(cfg)?
    } else {
        node.parse().map_err(|_| StackError::Missing(format!("node {node:?}: a number from 1 to {}, or \"controller\"", cfg.brokers)))?
    };
    if n == 0 || n > cfg.brokers {
        return Err(StackError::Missing(format!("node {n}: this stack has {} Kafka node(s)", cfg.brokers)));
    }
    Ok(n)
}

/// Does `action` to Kafka node `node` (1-based) of a stack `up` started.
pub async fn node(cfg: &StackConfig, node: u8, action: NodeAction, progress: Progress<'_>) -> Result<(), StackError> {
    let mut state = State::load(&cfg.state_file());
    let name = kafka::component(cfg, node);
    let running = state.managed(&name).cloned();
    match (action, running) {
        (NodeAction::Start, Some(m)) => progress(&format!("{name}: already running (pid {})", m.pid)),
        (NodeAction::Start, None) => {
            let m = kafka::restart_node(cfg, node, progress)?;
            state.started.retain(|s| s.component != name);
            state.started.push(m);
            state.save(&cfg.state_file())?;
            wait_healthy("kafka", Duration::from_secs(120), kafka::node_dir(cfg, node).join("kafka.log"), || kafka::node_answers(cfg, node)).await?;
            progress(&format!("{name}: a broker again on {}", cfg.node_address(node)));
        }
        (_, None) => return Err(StackError::Missing(format!("{name} is not running (started by `orelink stack up`)"))),
        (NodeAction::Kill, Some(m)) => {
            m.signal(libc::SIGKILL);
            wait_until(Duration::from_secs(10), || async { m.reap(); !m.alive() }).await;
            progress(&format!("{name}: killed (pid {})", m.pid));
        }
        (NodeAction::Pause, Some(m)) => {
            m.signal(libc::SIGSTOP);
            progress(&format!("{name}: paused (pid {}); `orelink stack resume {node}` continues it", m.pid));
        }
        (NodeAction::Resume, Some(m)) => {
            m.signal(libc::SIGCONT);
            progress(&format!("{name}: resumed"));
        }
    }
    Ok(())
}

/// Waits until `check` holds, or reports the component unhealthy with its log.
pub(crate) async fn wait_healthy<F, Fut>(component: &'static str, limit: Duration, log: PathBuf, check: F) -> Result<(), StackError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if wait_until(limit, check).await {
        Ok(())
    } else {
        Err(StackError::Unhealthy { component, waited: limit, log: log.display().to_string() })
    }
}

/// Polls `check` every 250 ms until it holds or `limit` passes.
pub(crate) async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn with(vars: &[(&str, &str)]) -> Result<StackConfig, StackError> {
        let vars: Vec<(String, OsString)> = vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        StackConfig::from_vars("orelink".into(), |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn ports_default_and_move_with_the_environment() {
        let d = with(&[("HOME", "/h")]).unwrap();
        assert_eq!((d.kafka_port, d.controller_port, d.redis_port, d.registry_port), (9092, 9093, 6379, 8081));
        assert_eq!(d.data_dir, PathBuf::from("/h/.local/share/orelink/stack"));
        let m = with(&[("ORELINK_HOME", "/t"), ("ORELINK_STACK_KAFKA_PORT", "19092"), ("ORELINK_STACK_REDIS_PORT", "16379")]).unwrap();
        assert_eq!((m.kafka_bootstrap(), m.redis_url()), ("127.0.0.1:19092".to_owned(), "redis://127.0.0.1:16379/".to_owned()));
        assert_eq!(m.data_dir, PathBuf::from("/t/stack"));
    }

    #[test]
    fn three_nodes_take_every_second_port_and_must_not_meet_the_others() {
        let t = with(&[("ORELINK_STACK_BROKERS", "3")]).unwrap();
        assert_eq!((1..=3).map(|n| t.node_ports(n)).collect::<Vec<_>>(), vec![(9092, 9093), (9094, 9095), (9096, 9097)]);
        assert_eq!(t.kafka_bootstrap(), "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096");
        let e = with(&[("ORELINK_STACK_BROKERS", "3"), ("ORELINK_STACK_REGISTRY_PORT", "9095")]).unwrap_err().to_string();
        assert!(e.contains("must all differ"), "{e}");
        let e = with(&[("ORELINK_STACK_BROKERS", "2")]).unwrap_err().to_string();
        assert!(e.contains("1 or 3"), "{e}");
        assert_eq!(with(&[]).unwrap().kafka_bootstrap(), "127.0.0.1:9092", "one node unless asked");
    }

    #[test]
    fn every_bad_port_is_reported_at_once() {
        let e = with(&[("ORELINK_STACK_KAFKA_PORT", "x"), ("ORELINK_STACK_REGISTRY_PORT", "70000")]).unwrap_err().to_string();
        assert!(e.contains("ORELINK_STACK_KAFKA_PORT") && e.contains("ORELINK_STACK_REGISTRY_PORT"), "{e}");
        let e = with(&[("ORELINK_STACK_REDIS_PORT", "9092")]).unwrap_err().to_string();
        assert!(e.contains("must differ"), "{e}");
    }
}
