//! `orelink run all`: every hub role in one process, each supervised (see
//! `supervise`): a role that fails is restarted with backoff while the others
//! keep running; a configuration error stops them all.

use crate::supervise::{Fatal, Health, supervise};
use orelink_platform::{Config, Reference};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What each role did in its last run (a restarted role counts from its restart).
#[derive(Debug, Default)]
pub struct AllStats {
    pub matcher: orelink_matcher::MatcherStats,
    pub share: orelink_share::ShareStats,
    pub view: orelink_view::Applied,
    pub fanout: orelink_fanout::FanoutStats,
    pub booker: orelink_booker::Stats,
}

/// Called with the view's address each time it binds.
pub type OnBound = Arc<Mutex<Option<Box<dyn FnOnce(SocketAddr) + Send>>>>;

/// Runs the matcher, the booker, the share role, the fanout, the
/// enterprises' door and the view (and the gateway and webhooks where configured) until `cancel`.
/// Each role drains and commits on the way out. Fails only on a
/// configuration error, such as a role without its own principal (every
/// such role is named at once), unless `as_admin`.
pub async fn run_all(
    cfg: Config,
    reference: Reference,
    cancel: CancellationToken,
    health: Health,
    as_admin: bool,
    view_bound: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<AllStats, Fatal> {
    let mut missing = Vec::new();
    let mut as_role = |role: &str| {
        crate::principal::as_role(&cfg, role, as_admin).unwrap_or_else(|e| {
            missing.push(e.to_string());
            cfg.clone()
        })
    };
    let mut mcfg = as_role("matcher");
    if mcfg.matcher.instance_id.is_empty() {
        mcfg.matcher.instance_id = "all".into();
    }
    let mut fanout_cfg = as_role("fanout");
    fanout_cfg.matcher.instance_id = mcfg.matcher.instance_id.clone();
    let mut booker_cfg = as_role("booker");
    booker_cfg.matcher.instance_id = mcfg.matcher.instance_id.clone();
    let mut enterprises_cfg = as_role("enterprises");
    enterprises_cfg.matcher.instance_id = mcfg.matcher.instance_id.clone();
    let (share_cfg, view_cfg) = (as_role("share"), as_role("view"));
    let gateway_cfg = (!cfg.gateway.keys_file.is_empty()).then(|| as_role("gateway"));
    let webhooks_cfg = (!cfg.webhooks.file.is_empty()).then(|| as_role("webhooks"));
    if !missing.is_empty() {
        return Err(Fatal { role: "all", error: missing.join("\n") });
    }

    // Each role's start: its own copies of the config and reference, so it can start again.
    macro_rules! role {
        ($name:literal, $cfg:expr, |$c:ident, $r:ident, $t:ident| $run:expr) => {{
            let (cfg, reference, cancel, health) = ($cfg, reference.clone(), cancel.clone(), health.clone());
            tokio::spawn(supervise($name, health, cancel, move |$t| {
                let ($c, $r) = (cfg.clone(), reference.clone());
                async move { $run }
            }))
        }};
    }

    let matcher = role!("matcher", mcfg, |c, r, t| orelink_matcher::run(c, r, t).await);
    let booker = role!("booker", booker_cfg, |c, r, t| orelink_booker::run(c, r, t).await);
    let share = role!("share", share_cfg, |c, r, t| orelink_share::run(&c, &r, t).await);
    let fanout = role!("fanout", fanout_cfg, |c, r, t| orelink_fanout::run(&c, &r, t).await);
    let enterprises = role!("enterprises", enterprises_cfg, |c, r, t| orelink_enterprises::run(&c, &r, t).await);
    let on_bound: OnBound = Arc::new(Mutex::new(Some(Box::new(view_bound))));
    let view = {
        let (cfg, reference, health) = (view_cfg, reference.clone(), health.clone());
        tokio::spawn(supervise("view", health, cancel.clone(), move |t| {
            let (c, r, on_bound) = (cfg.clone(), reference.clone(), on_bound.clone());
            async move {
                orelink_view::run_with(&c, &r, t, move |addr| {
                    if let Some(f) = on_bound.lock().expect("view_bound lock").take() {
                        f(addr)
                    }
                })
                .await
            }
        }))
    };
    // The gateway serves only where enterprises' keys are configured.
    let gateway = match gateway_cfg {
        None => {
            tracing::warn!("gateway.keys_file is not set: the ingest gateway does not run");
            None
        }
        Some(gcfg) => Some(role!("gateway", gcfg, |c, r, t| orelink_gateway::run(&c, &r, t).await)),
    };
    // Webhooks run where some are configured.
    let webhooks = webhooks_cfg.map(|wcfg| role!("webhooks", wcfg, |c, r, t| orelink_outbound::webhook::run(&c, &r, t).await));

    let mut fatal: Option<Fatal> = None;
    // Its stats are in its log and metrics; the simulated workload does not use its topics.
    settle(enterprises.await, &mut fatal);
    if let Some(g) = gateway {
        settle(g.await, &mut fatal);
    }
    if let Some(w) = webhooks {
        settle(w.await, &mut fatal);
    }
    let stats = AllStats {
        matcher: settle(matcher.await, &mut fatal).unwrap_or_default(),
        share: settle(share.await, &mut fatal).unwrap_or_default(),
        view: settle(view.await, &mut fatal).unwrap_or_default(),
        fanout: settle(fanout.await, &mut fatal).unwrap_or_default(),
        booker: settle(booker.await, &mut fatal).unwrap_or_default(),
    };
    match fatal {
        Some(f) => Err(f),
        None => Ok(stats),
    }
}

/// A role's last stats; its fatal error, the first of all, is kept in `fatal`.
fn settle<T>(joined: Result<Result<Option<T>, Fatal>, tokio::task::JoinError>, fatal: &mut Option<Fatal>) -> Option<T> {
    match joined.expect("a supervisor catches its role's panics") {
        Ok(stats) => stats,
        Err(f) => {
            fatal.get_or_insert(f);
            None
        }
    }
}
