//! orelink-stack: the local stack without Docker.
//!
//! - Apache Kafka 4.x in KRaft combined mode, its jars resolved from Maven
//!   Central with `mvn` into a cache outside the repository, storage formatted
//!   on first start;
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

pub use kafka::{ADMIN as KAFKA_ADMIN, KAFKA_VERSION};

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
/// its own `ORELINK_HOME`) runs beside a developer's.
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
        Ok(StackConfig {
            cache_dir,
            data_dir,
            host: "127.0.0.1".into(),
            kafka_port,
            controller_port,
            redis_port,
            registry_port,
            orelink_exe,
            kafka_heap: "1g".into(),
        })
    }

    pub fn kafka_bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.kafka_port)
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StackStatus {
    pub kafka: ComponentStatus,
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

    if kafka::healthy(cfg).await {
        progress(&format!("kafka: already up on {}", cfg.kafka_bootstrap()));
    } else {
        let m = kafka::start(cfg, progress).await?;
        state.started.push(m);
        state.save(&cfg.state_file())?;
        started.push("kafka".to_owned());
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
    let (k, r, g) = tokio::join!(kafka::healthy(cfg), redis::healthy(cfg), registry::healthy(cfg));
    StackStatus {
        kafka: component("kafka", cfg.kafka_bootstrap(), k, format!("Apache Kafka {KAFKA_VERSION}, KRaft combined mode")),
        redis: component("redis", format!("{}:{}", cfg.host, cfg.redis_port), r, "redis-server".into()),
        registry: component("registry", cfg.registry_url(), g, "orelink registry (Confluent-compatible API)".into()),
        data_dir: cfg.data_dir.display().to_string(),
        cache_dir: cfg.cache_dir.display().to_string(),
    }
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
    fn every_bad_port_is_reported_at_once() {
        let e = with(&[("ORELINK_STACK_KAFKA_PORT", "x"), ("ORELINK_STACK_REGISTRY_PORT", "70000")]).unwrap_err().to_string();
        assert!(e.contains("ORELINK_STACK_KAFKA_PORT") && e.contains("ORELINK_STACK_REGISTRY_PORT"), "{e}");
        let e = with(&[("ORELINK_STACK_REDIS_PORT", "9092")]).unwrap_err().to_string();
        assert!(e.contains("must differ"), "{e}");
    }
}
