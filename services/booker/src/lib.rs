//! orelink-booker: the role that books allocations onto carriers' offers.
//!
//! Its input is `orelink.lanes.v1`: each lane's allocations and offers in one
//! total order (keyed by lane `<from_cluster>><to_cluster>`, log-append
//! time). Two stages in one role, as the matcher has:
//! 1. **router** (at least once): consumes `orelink.allocations.v1` (keyed by
//!    family) and `orelink.transport-offers.v1` (keyed by lane) through the
//!    shared consume loop, which decodes and dead-letters what fails, and
//!    forwards each record's original bytes to the lanes topic on its lane,
//!    with headers naming where it was first written. A repeat it may write
//!    after a crash changes nothing: the engine ignores an allocation or an
//!    offer id it has seen.
//! 2. **processor** (exactly once): on the one exactly-once loop
//!    (`orelink_platform::txn_loop`), consumes the lanes topic
//!    read_committed, applies each record to its partition's pure booking
//!    engine (`orelink_domain::booking`) and writes, in one transaction per
//!    round, a `ShipmentEvent` `PLANNED` per booked part (to
//!    `orelink.shipments.v1`, which the fanout routes to the carrier's
//!    partner topic), an `orelink.v1.Booking` per booked part and per
//!    unbooked remainder (to `orelink.bookings.v1`), dead letters and the
//!    consumed offsets. A partition's engine is restored by replaying the
//!    lanes topic up to the committed offset, so a restarted or rebalanced
//!    booker continues exactly where the last committed transaction ended.
//!
//! Memory follows what is open: the engine forgets ids and ended offers
//! after the dedup horizon (`matcher.dedup_horizon_ms`) of the lanes
//! topic's log time, which a replay reads alike. A restore still replays
//! the lanes topic from its start (kept for it): snapshots, as the
//! matcher's, would bound that too.

mod processor;
mod router;

pub use orelink_platform::consume::LoopStats;
pub use processor::{BookerStats, Processor, ProcessorError, Read, log_ms, read_of, render};
pub use router::router_loop;

use orelink_platform::{Config, Reference};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BookerError {
    #[error("router: {0}")]
    Router(String),
    #[error("processor: {0}")]
    Processor(#[from] ProcessorError),
}

/// What each stage did, returned when the role stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub router: LoopStats,
    pub processor: BookerStats,
}

/// The processor's group, per namespace.
pub fn processor_group(cfg: &Config) -> String {
    format!("{}orelink-booker", cfg.namespace)
}

pub fn router_group(cfg: &Config) -> String {
    format!("{}orelink-booker-router", cfg.namespace)
}

/// Runs both stages until `cancel`; returns when both have drained and committed.
pub async fn run(cfg: Config, reference: Reference, cancel: CancellationToken) -> Result<Stats, BookerError> {
    let codec = orelink_platform::codec(&cfg, &reference).map_err(|e| BookerError::Router(e.to_string()))?;
    let router = router_loop(&cfg, codec.clone()).map_err(|e| BookerError::Router(e.to_string()))?;
    let processor = Processor::new(&cfg, codec, tokio::runtime::Handle::current())?;
    let c = cancel.clone();
    let stage2 = std::thread::Builder::new()
        .name("booker-process".into())
        .spawn(move || {
            // However the processor ends (done, failed, panicked), the router stops too.
            let _stop_router = c.clone().drop_guard();
            processor.run(&c)
        })
        .expect("spawning the processor thread");
    let r1 = router.run(cancel.clone()).await;
    // And when the router ends first, the processor stops.
    cancel.cancel();
    let r2 = tokio::task::spawn_blocking(move || stage2.join()).await;
    let router = r1.map_err(BookerError::Router)?;
    match r2 {
        Ok(Ok(r)) => Ok(Stats { router, processor: r? }),
        _ => Err(BookerError::Router("the processor thread panicked".into())),
    }
}
