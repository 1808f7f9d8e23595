//! Logging setup: `tracing` to stderr, text or JSON, filtered by `log.level`
//! (overridden by RUST_LOG).

use crate::config::LogSettings;
use tracing_subscriber::EnvFilter;

pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests, `run all`) keeps the first subscriber.
    let _ = if settings.format == "json" { builder.json().try_init() } else { builder.try_init() };
}
