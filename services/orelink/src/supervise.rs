//! Role supervision for `orelink run all` and the demo: a role that fails
//! (an error it returns, or a panic) is restarted with backoff while the
//! other roles keep running; only a configuration error, which no restart
//! can mend, stops them all. What failed, how often and why is kept for the
//! demo's live line and summary.
//!
//! A restart loses nothing: every role resumes from what it committed (its
//! consumer group's offsets, its transactions, or the view's offsets in
//! Redis), so an event in hand when it failed is read again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The first wait before a restart; doubled after each failure, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A role that ran this long before failing starts again from the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// One role's failures so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleHealth {
    pub failures: u32,
    pub last_error: Option<String>,
    /// Whether its supervisor is still running it (or waiting to restart it).
    pub running: bool,
}

/// Every supervised role's health, shared with whoever reports it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<&'static str, RoleHealth>>>);

impl Health {
    pub fn snapshot(&self) -> BTreeMap<&'static str, RoleHealth> {
        self.0.lock().expect("health lock").clone()
    }

    fn failed(&self, role: &'static str, error: String) -> u32 {
        let mut all = self.0.lock().expect("health lock");
        let h = all.entry(role).or_default();
        h.failures += 1;
        h.last_error = Some(error);
        h.failures
    }

    fn set_running(&self, role: &'static str, running: bool) {
        self.0.lock().expect("health lock").entry(role).or_default().running = running;
    }

    /// The roles whose supervisors have not returned: after a stop, the ones that hang.
    pub fn still_running(&self) -> Vec<&'static str> {
        self.snapshot().into_iter().filter(|(_, h)| h.running).map(|(role, _)| role).collect()
    }

    /// One line per role that has failed, e.g. `view failed 2 times, last: redis: ...`.
    pub fn report(&self) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|(_, h)| h.failures > 0)
            .map(|(role, h)| {
                let times = if h.failures == 1 { "once".to_owned() } else { format!("{} times", h.failures) };
                format!("{role} failed {times} and was restarted; last error: {}", h.last_error.unwrap_or_default())
            })
            .collect()
    }
}

/// How a role's error is to be taken.
pub trait RoleError: std::fmt::Display + Send + 'static {
    /// A configuration error: restarting cannot mend it.
    fn fatal(&self) -> bool {
        false
    }
}

impl RoleError for orelink_matcher::MatcherError {}
impl RoleError for orelink_booker::BookerError {}
impl RoleError for orelink_share::ShareError {}
impl RoleError for orelink_view::ViewError {
    fn fatal(&self) -> bool {
        matches!(self, orelink_view::ViewError::Config(_))
    }
}
/// The fanout's and the enterprises' door's.
impl RoleError for orelink_platform::txn_loop::LoopRoleError {
    fn fatal(&self) -> bool {
        matches!(self, orelink_platform::txn_loop::LoopRoleError::Config(_))
    }
}
impl RoleError for orelink_gateway::GatewayError {
    fn fatal(&self) -> bool {
        matches!(self, orelink_gateway::GatewayError::Config(_))
    }
}
impl RoleError for orelink_outbound::webhook::WebhookError {
    fn fatal(&self) -> bool {
        matches!(self, orelink_outbound::webhook::WebhookError::Config(_))
    }
}

/// A role that stopped for good.
#[derive(Debug, thiserror::Error)]
#[error("{role}: {error}")]
pub struct Fatal {
    pub role: &'static str,
    pub error: String,
}

/// Runs `start(token)` until `cancel`, restarting it with backoff whenever it
/// fails or panics. Each run gets a child of `cancel`: a role that cancels its
/// own token when one of its parts ends stops itself, not its neighbours. Returns the last run's result once cancelled (`None` if
/// it was cancelled while failing or waiting to restart); on a fatal error,
/// cancels `cancel` (every role stops) and returns it.
pub async fn supervise<T, E, F, Fut>(role: &'static str, health: Health, cancel: CancellationToken, mut start: F) -> Result<Option<T>, Fatal>
where
    T: Send + 'static,
    E: RoleError,
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    // Marks the role stopped however supervision ends.
    struct Running(Health, &'static str);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.set_running(self.1, false);
        }
    }
    health.set_running(role, true);
    let _running = Running(health.clone(), role);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        // Its own task, so that a panic is caught here and not in the other roles.
        let error = match tokio::spawn(start(cancel.child_token())).await {
            Ok(Ok(stats)) => return Ok(Some(stats)),
            Ok(Err(e)) if e.fatal() => {
                tracing::error!(role, error = %e, "role cannot start; stopping every role");
                cancel.cancel();
                return Err(Fatal { role, error: e.to_string() });
            }
            Ok(Err(e)) => e.to_string(),
            Err(join) => match join.try_into_panic() {
                Ok(p) => format!("panicked: {}", p.downcast_ref::<&str>().copied().or(p.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")),
                Err(e) => format!("task ended: {e}"),
            },
        };
        if cancel.is_cancelled() {
            tracing::warn!(role, error, "role failed while stopping");
            return Ok(None);
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        let failures = health.failed(role, error.clone());
        tracing::error!(role, error, failures, restart_in_ms = backoff.as_millis() as u64, "role failed; restarting it");
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, thiserror::Error)]
    enum E {
        #[error("transient {0}")]
        Transient(u32),
        #[error("bad config")]
        Config,
    }
    impl RoleError for E {
        fn fatal(&self) -> bool {
            matches!(self, E::Config)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_role_is_restarted_until_it_runs_and_its_failures_are_kept() {
        let (health, cancel) = (Health::default(), CancellationToken::new());
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let c = cancel.clone();
        let out = supervise("view", health.clone(), cancel.clone(), move |_| {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            async move {
                match n {
                    0 => Err(E::Transient(0)),
                    1 => panic!("poison"),
                    _ => {
                        c.cancel();
                        Ok::<u32, E>(n)
                    }
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(out, Some(2));
        let h = health.snapshot()["view"].clone();
        assert_eq!(h.failures, 2);
        assert_eq!(h.last_error.as_deref(), Some("panicked: poison"));
        assert_eq!(health.report().len(), 1);
        assert!(health.still_running().is_empty(), "its supervisor returned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_configuration_error_stops_every_role() {
        let (health, cancel) = (Health::default(), CancellationToken::new());
        let err = supervise("gateway", health.clone(), cancel.clone(), |_| async { Err::<(), E>(E::Config) }).await.unwrap_err();
        assert_eq!(err.to_string(), "gateway: bad config");
        assert!(cancel.is_cancelled());
        assert!(health.report().is_empty(), "a fatal error is not a restart");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_during_the_backoff_ends_supervision() {
        let (health, cancel) = (Health::default(), CancellationToken::new());
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            c.cancel();
        });
        let out = supervise("share", health.clone(), cancel, |_| async { Err::<(), E>(E::Transient(1)) }).await.unwrap();
        assert_eq!(out, None);
        assert!(health.snapshot()["share"].failures >= 3, "restarted with backoff until cancelled");
    }
}
