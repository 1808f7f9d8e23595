//! `/metrics` and `/healthz` for the roles without an HTTP server of their
//! own (matcher, share, fanout, webhooks; `run all`), on
//! `telemetry.metrics_listen`.

use anyhow::{Context, Result};
use axum::Router;
use axum::http::header;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Binds `listen` now (a taken address is an error at start-up) and serves until `cancel`.
pub async fn start(listen: &str, cancel: CancellationToken) -> Result<tokio::task::JoinHandle<()>> {
    orelink_platform::metrics::install();
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("telemetry.metrics_listen {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics");
    let app = Router::new()
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, orelink_platform::metrics::CONTENT_TYPE)], orelink_platform::metrics::render()) }))
        .route("/healthz", get(|| async { "ok" }));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    }))
}
