//! orelink-view: the operators' live view.
//!
//! The materialiser reads capacity (of the market topic), the matcher's order statuses and
//! allocations, shared orders and dead letters, and applies them to Redis
//! per cluster × product family: declared, allocated and remaining capacity,
//! open demand, fill rate, utilisation, orders shared in and out,
//! energy-weighted kWh/t, and per-minute series of the last 24 h. The HTTP
//! side serves the JSON API (operator token), live updates over SSE, the
//! dashboard, `/openapi.json`, `/healthz`, `/readyz` and `/metrics`.
//!
//! Delivery: effectively once into Redis. Each batch is applied by one Lua
//! script call that also stores the partitions' offsets, and events at or
//! below a stored offset are skipped, so replays, restarts and several
//! instances change nothing twice. Redis is a cache: `orelink view rebuild`
//! (or a FLUSHALL, which the running role notices) recomputes it from Kafka.

// The OpenAPI document is one json! literal, deeper than the default limit.
#![recursion_limit = "256"]

pub mod http;
pub mod materialise;
pub mod metrics;
mod openapi;
pub mod ops;
pub mod outlook;
pub mod store;

pub use materialise::Applied;
use materialise::{Change, Materialiser};
use metrics::Metrics;
use orelink_platform::{Config, Reference};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Materialise(#[from] materialise::MaterialiseError),
    #[error("http: {0}")]
    Http(#[from] std::io::Error),
    #[error("writing a capacity-gap alert: {0}")]
    Alerts(String),
}

async fn connect(cfg: &Config) -> Result<redis::aio::ConnectionManager, ViewError> {
    Ok(redis::Client::open(cfg.redis.url.as_str())?.get_connection_manager().await?)
}

/// Runs the materialiser and the HTTP server until `cancel`. Returns events applied.
pub async fn run(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<Applied, ViewError> {
    run_with(cfg, reference, cancel, |_| {}).await
}

/// [`run`], telling `bound` where the HTTP server listens (`view.listen` may name port 0).
pub async fn run_with(cfg: &Config, reference: &Reference, cancel: CancellationToken, bound: impl FnOnce(std::net::SocketAddr)) -> Result<Applied, ViewError> {
    let tokens = cfg.view.tokens();
    if tokens.is_empty() {
        return Err(ViewError::Config("view.operator_token_digests is empty: set ORELINK__VIEW__OPERATOR_TOKEN_DIGESTS to the SHA-256 digests of the operators' tokens (comma-separated)".into()));
    }
    let unknown: Vec<String> = tokens.iter().flat_map(|t| t.clusters.iter().flatten()).filter(|c| reference.topology.cluster(c).is_none()).map(|c| format!("{c:?}")).collect();
    if !unknown.is_empty() {
        return Err(ViewError::Config(format!("view.operator_token_digests: no cluster {} in topology/clusters.toml", unknown.join(", "))));
    }
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| ViewError::Config(e.to_string()))?;
    let redis = connect(cfg).await?;
    let metrics = Arc::new(Metrics::new(&cfg.namespace));
    let (changes, _) = broadcast::channel::<Change>(256);
    let state = Arc::new(http::AppState {
        store: store::Store::new(redis.clone(), &cfg.namespace),
        topology: reference.topology.clone(),
        families: reference.catalog.families().iter().map(|f| f.family.clone()).collect(),
        family_names: reference.catalog.families().iter().map(|f| (f.family.clone(), (f.name.clone(), f.name_zh.clone()))).collect(),
        tokens,
        changes: changes.clone(),
        metrics: metrics.clone(),
        ready: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(&cfg.view.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "view API and dashboard");
    bound(listener.local_addr()?);
    let server = {
        let c = cancel.clone();
        let app = http::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(async move { c.cancelled().await }).await })
    };
    let refitter = tokio::spawn(outlook::Refitter::new(cfg, codec.clone(), redis.clone())?.run(cancel.clone()));
    let materialiser = Materialiser::new(cfg, reference, codec, redis, changes, metrics).await?;
    let ready_state = state.clone();
    let result = materialiser.run(cancel.clone(), None, move || ready_state.ready.store(true, Ordering::Relaxed)).await;
    // However the materialiser ends, the server stops too.
    cancel.cancel();
    let _ = refitter.await;
    let served = server.await;
    let applied = result?;
    match served {
        Ok(r) => r?,
        Err(e) => return Err(ViewError::Config(format!("the HTTP server task failed: {e}"))),
    }
    tracing::info!(read = applied.read, applied = applied.applied, "view stopped");
    Ok(applied)
}

/// Empties the view and recomputes it from Kafka, up to the inputs' current
/// ends. Safe while a view role runs: it notices the new epoch and resumes.
pub async fn rebuild(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<(u64, Applied), ViewError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| ViewError::Config(e.to_string()))?;
    let mut redis = connect(cfg).await?;
    let removed = materialise::clear(&mut redis, &cfg.namespace).await?;
    let (changes, _) = broadcast::channel::<Change>(16);
    let materialiser = Materialiser::new(cfg, reference, codec, redis, changes, Arc::new(Metrics::new(&cfg.namespace))).await?;
    let ends = materialiser.ends().await?;
    let applied = materialiser.run(cancel, Some(ends), || {}).await?;
    Ok((removed, applied))
}
