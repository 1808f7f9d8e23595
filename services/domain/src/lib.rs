//! orelink-domain: the pure core of the hub.
//!
//! Validated domain types (ids, product codes, quantities, prices, times), the
//! product catalog with its grade ladders, the topology model (clusters, sites,
//! partners, topics) and the contract's event records, as plain data and
//! deterministic functions. No Kafka, Redis, HTTP, clock or randomness here:
//! delivery guarantees are the edges' business; this crate only guarantees that
//! the same input gives the same output.

pub mod access;
pub mod booking;
pub mod calendar;
pub mod catalog;
pub mod events;
pub mod freight;
pub mod identity;
pub mod ids;
pub mod matching;
pub mod quantity;
pub mod sharing;
mod slab;
mod table;
pub mod topology;
pub mod workload;

pub use catalog::{Catalog, Family, ProductCode};
pub use events::*;
pub use ids::*;
pub use quantity::{Kg, Millis, PricePerTonne};
pub use topology::{Cluster, Enterprise, Partner, Site, TopicSpec, Topology, TransportMode};

/// Why a value was refused. One message per problem, stable enough for tests and dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}
