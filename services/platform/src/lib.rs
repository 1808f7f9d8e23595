//! orelink-platform: what every role shares at its edges.
//!
//! Configuration (defaults, file, `ORELINK__` env; every problem at once),
//! Kafka client settings, the reference data (catalog, topology, schemas),
//! W3C trace context in Kafka headers, the dead-letter path and the
//! at-least-once consume loop, and `topology apply`.
//!
//! Delivery: the consume loop is at least once (offsets stored only after
//! the role or the DLQ has the event); dead letters are written with an
//! idempotent producer and awaited before the offset moves.

pub mod access_apply;
pub mod acl;
pub mod apply;
pub mod config;
pub mod consume;
pub mod dlq;
pub mod kafka;
pub mod metrics;
pub mod reference;
pub mod registry_client;
pub mod telemetry;
pub mod trace;
pub mod txn;
pub mod txn_loop;

pub use config::Config;
pub use reference::Reference;

use orelink_codec::Codec;
use std::sync::Arc;
use std::time::Duration;

/// The codec for this deployment: registry from the config, topics under its namespace.
pub fn codec(cfg: &Config, reference: &Reference) -> Result<Arc<Codec>, orelink_codec::EncodeError> {
    let login = cfg.registry_login();
    let settings = orelink_codec::registry_settings(&cfg.registry.url, Duration::from_millis(cfg.registry.timeout_ms), login.as_ref().map(|(u, p)| (u.as_str(), p.as_str())))?;
    Ok(Arc::new(Codec::new(settings, reference.schemas.clone(), reference.catalog.clone(), reference.topology.clone(), &cfg.namespace)))
}
