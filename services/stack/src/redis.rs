//! Redis: reuse one that answers, else start Debian's redis-server.

use crate::process::{Managed, spawn_detached};
use crate::{Progress, StackConfig, StackError, io_err, wait_healthy};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Healthy = answers PING with PONG.
pub async fn healthy(cfg: &StackConfig) -> bool {
    let addr = format!("{}:{}", cfg.host, cfg.redis_port);
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin"])
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.is_file())
}

pub async fn start(cfg: &StackConfig, progress: Progress<'_>) -> Result<Managed, StackError> {
    let bin = match which("redis-server") {
        Some(b) => b,
        None => {
            install(progress)?;
            which("redis-server").ok_or_else(|| StackError::Missing("redis-server is still missing after apt-get install".into()))?
        }
    };
    let dir = cfg.data_dir.join("redis");
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let mut cmd = Command::new(bin);
    // A cache for the view role: no snapshots, no AOF; `orelink view rebuild` refills it from Kafka.
    cmd.args(["--bind", &cfg.host, "--port", &cfg.redis_port.to_string(), "--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir);
    let log = dir.join("redis.log");
    progress(&format!("redis: starting redis-server on {}:{}", cfg.host, cfg.redis_port));
    spawn_detached("redis", cmd, &log, "redis-server")
}

/// Installs Debian's redis-server when we are root and apt-get exists; otherwise says what to do.
fn install(progress: Progress<'_>) -> Result<(), StackError> {
    // SAFETY: geteuid has no side effects.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || which("apt-get").is_none() {
        return Err(StackError::Missing("redis-server is not installed: run `sudo apt-get install redis-server`".into()));
    }
    progress("redis: installing Debian's redis-server (apt-get)");
    for args in [&["update", "-qq"][..], &["install", "-y", "-qq", "redis-server"][..]] {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(io_err("running apt-get"))?;
        if !out.status.success() {
            return Err(StackError::Missing(format!(
                "apt-get {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(())
}

pub async fn wait(cfg: &StackConfig) -> Result<(), StackError> {
    wait_healthy("redis", Duration::from_secs(20), cfg.data_dir.join("redis/redis.log"), || healthy(cfg)).await
}
