//! Detached child processes that outlive `orelink stack up`, and stopping them safely.

use crate::{StackError, io_err};
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A process `up` started. `marker` is a string its command line must contain,
/// so a recycled pid is never signalled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Managed {
    pub component: String,
    pub pid: u32,
    pub marker: String,
    pub log: String,
}

impl Managed {
    pub fn alive(&self) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // The state letter follows the parenthesised command name; Z is a zombie.
        let zombie = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')).unwrap_or(false);
        !zombie && String::from_utf8_lossy(&cmdline).contains(&self.marker)
    }

    /// Stopped by SIGSTOP (state T).
    pub fn stopped(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    }

    pub fn signal(&self, sig: libc::c_int) {
        signal(self.pid, sig);
    }

    /// Collects its exit status if it is our child (no zombie left).
    pub fn reap(&self) {
        reap(self.pid);
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) {
        // A paused process cannot act on SIGTERM until it continues.
        signal(self.pid, libc::SIGCONT);
        signal(self.pid, libc::SIGTERM);
        let stopped = crate::wait_until(grace, || async { reap(self.pid); !self.alive() }).await;
        if !stopped {
            signal(self.pid, libc::SIGKILL);
            crate::wait_until(Duration::from_secs(5), || async { reap(self.pid); !self.alive() }).await;
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the pid was checked against its command line.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Collects the exit status if the process is our own child, so it does not linger as a zombie.
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a specific pid only reads into `status`.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}

/// Starts `cmd` in its own process group (Ctrl-C in the terminal does not reach
/// it), output appended to `log`.
pub fn spawn_detached(component: &str, mut cmd: Command, log: &Path, marker: &str) -> Result<Managed, StackError> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("opening {}", log.display())))?;
    let err = out.try_clone().map_err(io_err("duplicating a log handle"))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io_err(format!("starting {component}")))?;
    Ok(Managed { component: component.into(), pid: child.id(), marker: marker.into(), log: log.display().to_string() })
}

/// Whether something accepts TCP connections at `addr`.
pub async fn listening(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
