//! `orelink run all`: every hub role in one process, stopped together.

use anyhow::{Context, Result};
use orelink_platform::{Config, Reference};
use tokio_util::sync::CancellationToken;

/// What each role did.
#[derive(Debug, Default)]
pub struct AllStats {
    pub matcher: orelink_matcher::MatcherStats,
    pub share: orelink_share::ShareStats,
    pub view: orelink_view::Applied,
    pub fanout: orelink_fanout::FanoutStats,
}

/// Runs the matcher, the share role, the fanout and the view until `cancel`, or until one of them
/// fails, which stops the others (each drains and commits).
pub async fn run_all(cfg: Config, reference: Reference, cancel: CancellationToken, view_bound: impl FnOnce(std::net::SocketAddr) + Send + 'static) -> Result<AllStats> {
    let mut mcfg = crate::principal::as_role(&cfg, "matcher");
    if mcfg.matcher.instance_id.is_empty() {
        mcfg.matcher.instance_id = "all".into();
    }
    let mut mcfg_for_fanout = crate::principal::as_role(&cfg, "fanout");
    mcfg_for_fanout.matcher.instance_id = mcfg.matcher.instance_id.clone();
    let matcher = {
        let (r, c) = (reference.clone(), cancel.clone());
        tokio::spawn(async move {
            let _stop_all = c.clone().drop_guard();
            orelink_matcher::run(mcfg, r, c).await
        })
    };
    let share = {
        let (cfg, r, c) = (crate::principal::as_role(&cfg, "share"), reference.clone(), cancel.clone());
        tokio::spawn(async move {
            let _stop_all = c.clone().drop_guard();
            orelink_share::run(&cfg, &r, c).await
        })
    };
    let fanout = {
        let (cfg, r, c) = (mcfg_for_fanout, reference.clone(), cancel.clone());
        tokio::spawn(async move {
            let _stop_all = c.clone().drop_guard();
            orelink_fanout::run(&cfg, &r, c).await
        })
    };
    let view = {
        let (cfg, r, c) = (crate::principal::as_role(&cfg, "view"), reference.clone(), cancel.clone());
        tokio::spawn(async move {
            let _stop_all = c.clone().drop_guard();
            orelink_view::run_with(&cfg, &r, c, view_bound).await
        })
    };
    // The gateway serves only where enterprises' keys are configured.
    let gateway = if cfg.gateway.keys_file.is_empty() {
        tracing::warn!("gateway.keys_file is not set: the ingest gateway does not run");
        None
    } else {
        let (cfg, r, c) = (crate::principal::as_role(&cfg, "gateway"), reference.clone(), cancel.clone());
        Some(tokio::spawn(async move {
            let _stop_all = c.clone().drop_guard();
            orelink_gateway::run(&cfg, &r, c).await
        }))
    };
    // Webhooks run where some are configured.
    let webhooks = if cfg.webhooks.file.is_empty() {
        None
    } else {
        let (cfg, r, c) = (crate::principal::as_role(&cfg, "webhooks"), reference.clone(), cancel.clone());
        Some(tokio::spawn(async move {
            let _stop_all = c.clone().drop_guard();
            orelink_partners::webhook::run(&cfg, &r, c).await
        }))
    };
    if let Some(g) = gateway {
        g.await.context("the gateway task panicked")?.context("gateway")?;
    }
    if let Some(w) = webhooks {
        w.await.context("the webhooks task panicked")?.context("webhooks")?;
    }
    let matcher = matcher.await.context("the matcher task panicked")?;
    let share = share.await.context("the share task panicked")?;
    let view = view.await.context("the view task panicked")?;
    let fanout = fanout.await.context("the fanout task panicked")?;
    Ok(AllStats { matcher: matcher.context("matcher")?, share: share.context("share")?, view: view.context("view")?, fanout: fanout.context("fanout")? })
}
