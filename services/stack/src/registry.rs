//! The schema registry role, started as `orelink run registry`.

use crate::process::{Managed, spawn_detached};
use crate::{StackConfig, StackError, wait_healthy};
use std::process::Command;
use std::time::Duration;

/// Healthy = `GET /` answers 200.
pub async fn healthy(cfg: &StackConfig) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).no_proxy().build();
    let Ok(client) = client else { return false };
    // `GET /` needs no login: it says only that a registry answers.
    matches!(client.get(format!("{}/", cfg.registry_url())).send().await, Ok(r) if r.status().is_success())
}

pub fn start(cfg: &StackConfig) -> Result<Managed, StackError> {
    let mut cmd = Command::new(&cfg.orelink_exe);
    cmd.args(["run", "registry"])
        .env("ORELINK__KAFKA__BROKERS", cfg.kafka_bootstrap())
        .env("ORELINK__REGISTRY__LISTEN", format!("{}:{}", cfg.host, cfg.registry_port));
    let log = cfg.data_dir.join("registry/registry.log");
    spawn_detached("registry", cmd, &log, "registry")
}

pub async fn wait(cfg: &StackConfig) -> Result<(), StackError> {
    // The registry itself waits up to 60 s for Kafka's leaders; allow for that.
    wait_healthy("registry", Duration::from_secs(90), cfg.data_dir.join("registry/registry.log"), || healthy(cfg)).await
}
