//! orelink-matcher: the role that matches demand with capacity.
//!
//! Its input is `orelink.market.v1`: each family's orders, capacity and
//! shared orders in one total order (keyed by family, log-append time). The
//! hub's doors write orders and capacity there directly. Two stages in one
//! role:
//! 1. **router** (at least once): consumes `orelink.orders.v1`,
//!    `orelink.capacity.v1` (what Kafka clients write under the contract)
//!    and `orelink.shared-orders.v1` through the shared consume loop without
//!    decoding them, and forwards each event's original bytes to the market
//!    topic on its record key, the product family (a key that is no family
//!    goes to the DLQ), with headers naming where it was first written.
//! 2. **processor** (exactly once): on the one exactly-once loop
//!    (`orelink_platform::txn_loop`), consumes the market topic
//!    read_committed, decodes and validates each event once (what fails, or
//!    whose key is not its product's family, is dead-lettered in the same
//!    transaction, named by where it was first written), applies the rest to
//!    the pure engine of its partition, and writes the allocations, order
//!    statuses, dead letters and consumed offsets in one Kafka transaction
//!    per round. A partition's engine is restored by replaying its input up
//!    to the committed offset, so a restarted or rebalanced matcher
//!    continues exactly where the last committed transaction ended.
//!
//! Books are snapshotted to `orelink.matcher-snapshots.v1` every
//! `matcher.snapshot_every` input events of a partition, after the
//! transaction covering them has committed, so that a restore replays only
//! the input after the newest snapshot.
//!
//! Duplicates that the router or a door may write after a crash carry the
//! same `event_id` and change nothing in the engine.

mod processor;
mod router;
pub mod snapshots;

pub use processor::{Processor, ProcessorError, ProcessorStats, decide, decode, restore};
pub use orelink_platform::consume::LoopStats;

/// What each stage did, returned when the role stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatcherStats {
    pub router: LoopStats,
    pub processor: ProcessorStats,
}
pub use router::router_loop;

use orelink_platform::{Config, Reference};
use tokio_util::sync::CancellationToken;

/// Headers of a routed market record (where it was first written), shared with the booker.
pub use orelink_platform::consume::{SOURCE_HEADER, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("router: {0}")]
    Router(String),
    #[error("processor: {0}")]
    Processor(#[from] ProcessorError),
}

/// Runs both stages until `cancel`; returns when both have drained and committed.
///
/// The processor runs `matcher.threads` times, each thread its own member of
/// the processor group with its own transactional producer (as Kafka
/// Streams' `num.stream.threads`): the group spreads the market topic's
/// partitions over them, and since every book belongs to one partition they
/// share nothing. With the broker on the same two cores a second thread
/// added nothing (`docs/benchmarks.md`); more pay where the matcher has
/// cores of its own.
pub async fn run(cfg: Config, reference: Reference, cancel: CancellationToken) -> Result<MatcherStats, MatcherError> {
    let codec = orelink_platform::codec(&cfg, &reference).map_err(|e| MatcherError::Router(e.to_string()))?;
    let router = router_loop(&cfg, codec.clone(), reference.catalog.clone()).map_err(|e| MatcherError::Router(e.to_string()))?;
    let mut stage2 = Vec::new();
    for thread in 0..cfg.matcher.threads.max(1) {
        let processor = Processor::new(&cfg, thread, codec.clone(), &reference, tokio::runtime::Handle::current())?;
        let c = cancel.clone();
        let handle = std::thread::Builder::new()
            .name(format!("matcher-process{thread}"))
            .spawn(move || {
                // However a processor ends (done, failed, panicked), the role stops.
                let _stop = c.clone().drop_guard();
                processor.run(&c)
            })
            .expect("spawning a processor thread");
        stage2.push(handle);
    }
    let r1 = router.run(cancel.clone()).await;
    // And when the router ends first, the processors stop.
    cancel.cancel();
    let r2 = tokio::task::spawn_blocking(move || stage2.into_iter().map(|h| h.join()).collect::<Vec<_>>()).await;
    let router = r1.map_err(MatcherError::Router)?;
    let mut processor = ProcessorStats::default();
    for r in r2.map_err(|_| MatcherError::Router("the processor threads could not be joined".into()))? {
        match r {
            Ok(r) => processor.add(&r?),
            Err(_) => return Err(MatcherError::Router("a processor thread panicked".into())),
        }
    }
    Ok(MatcherStats { router, processor })
}

/// The processor's group, per namespace.
pub fn processor_group(cfg: &Config) -> String {
    format!("{}orelink-matcher", cfg.namespace)
}

pub fn router_group(cfg: &Config) -> String {
    format!("{}orelink-matcher-router", cfg.namespace)
}
