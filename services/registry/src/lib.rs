//! orelink-registry: a Confluent-compatible schema registry (role `orelink run registry`).
//!
//! Serves the REST API that confluent-kafka clients and schema_registry_converter
//! use (register, lookup, schema by id, subjects and versions, compatibility,
//! config, soft and hard delete) with Confluent's error bodies. Its only durable
//! state is the compacted Kafka topic `_schemas`, read to the end before the
//! first request is served, so ids and versions are stable across restarts.
//! A write is acknowledged only after Kafka has it (acks=all). One instance
//! writes at a time: writes are serialised inside the process, and a second
//! writer instance is not supported (ids could collide). Callers log in with
//! HTTP basic auth as a Kafka user of the hub; only `registry.writers` may
//! change it (`auth`).

pub mod auth;
pub mod compat;
mod http;
mod log;
pub mod store;

use rdkafka::config::ClientConfig;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use store::{LogRecord, RegistryError, Store};
use tokio_util::sync::CancellationToken;

pub use log::LogError;

pub struct Registry {
    store: RwLock<Store>,
    log: log::SchemaLog,
    /// Serialises writers: compute, append to Kafka, apply.
    writer: tokio::sync::Mutex<()>,
}

impl Registry {
    fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.read().expect("registry lock poisoned"))
    }

    async fn write<T>(&self, f: impl FnOnce(&Store) -> Result<(T, Vec<LogRecord>), RegistryError>) -> Result<T, RegistryError> {
        let _guard = self.writer.lock().await;
        let (out, records) = self.read(f)?;
        if !records.is_empty() {
            self.log
                .append(&records)
                .await
                .map_err(|e| RegistryError { status: 500, error_code: 50001, message: format!("Error while storing the schema: {e}") })?;
            let mut store = self.store.write().expect("registry lock poisoned");
            for r in &records {
                store.apply(&r.key_bytes(), r.value_bytes().as_deref());
            }
        }
        Ok(out)
    }
}

pub struct RegistryConfig {
    pub kafka: ClientConfig,
    pub topic: String,
    pub listen: SocketAddr,
    /// Who may call it; None: anyone who reaches the port (a deployment
    /// whose Kafka has no logins to check against says so explicitly).
    pub auth: Option<auth::Auth>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("restoring the schema store: {0}")]
    Log(#[from] LogError),
    #[error("listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Restores the store, then serves until `cancel` fires.
pub async fn serve(cfg: RegistryConfig, cancel: CancellationToken) -> Result<(), ServeError> {
    let (log, store) = log::SchemaLog::open(&cfg.kafka, &cfg.topic).await?;
    let registry = Arc::new(Registry { store: RwLock::new(store), log, writer: tokio::sync::Mutex::new(()) });
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|source| ServeError::Bind { addr: cfg.listen, source })?;
    tracing::info!(listen = %cfg.listen, topic = cfg.topic, "schema registry serving");
    if cfg.auth.is_none() {
        tracing::warn!("the registry takes requests without a login (registry.auth = \"none\")");
    }
    axum::serve(listener, http::router(registry, cfg.auth.map(Arc::new)))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(ServeError::Serve)
}
