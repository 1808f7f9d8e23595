//! The contract's records: `wire` structs mirror the Avro schemas field for
//! field; the domain structs beside them, one file per record, are what the
//! rest of the hub uses, built by `validate`, which reports every problem of
//! a record at once (`check`).

use crate::catalog::{Catalog, ProductCode};
use crate::ids::*;
use crate::quantity::{Kg, Millis, PricePerTonne};
use crate::topology::{Topology, TransportMode};
use crate::Invalid;

/// The catalog and topology that validation looks products, sites and
/// clusters up in: a borrowed view of the hub's one `Reference` (in
/// `orelink-platform`, which also holds the schemas).
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    pub catalog: &'a Catalog,
    pub topology: &'a Topology,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderKind {
    Placed,
    Amended,
    Cancelled,
}

/// An order's state in the matcher's book (internal `OrderStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    Open,
    Filled,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CapacityKind {
    Declared,
    Withdrawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransportOfferKind {
    Offered,
    Withdrawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShipmentStatus {
    Planned,
    PickedUp,
    InTransit,
    Arrived,
    Delivered,
    Exception,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SharedOrderKind {
    Shared,
    Withdrawn,
}

/// Why an event became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorClass {
    /// Not Confluent wire format, or Avro that does not decode.
    Undecodable,
    /// The schema id is not in the registry.
    UnknownSchema,
    /// Decoded, but a record other than the topic's.
    WrongRecord,
    /// Decoded, but a field breaks a contract rule (negative quantity, bad window...).
    Invalid,
    /// Names a product, site, cluster or partner the hub does not know.
    UnknownReference,
    /// Speaks for someone the sender is not (an enterprise's ingest topic
    /// carrying another's order, capacity or stock). Last, so the schema's
    /// older readers resolve it to the enum's default.
    Identity,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Undecodable => "UNDECODABLE",
            ErrorClass::UnknownSchema => "UNKNOWN_SCHEMA",
            ErrorClass::WrongRecord => "WRONG_RECORD",
            ErrorClass::Invalid => "INVALID",
            ErrorClass::UnknownReference => "UNKNOWN_REFERENCE",
            ErrorClass::Identity => "IDENTITY",
        }
    }
}

pub mod wire;
mod check;
mod capacity;
mod hub;
mod inventory;
mod order;
mod shared_order;
mod shipment;
mod transport_offer;

pub use capacity::CapacityEvent;
pub use check::Rejection;
pub use hub::{validate_alert, validate_allocation, validate_booking, validate_order_status};
pub use inventory::InventoryEvent;
pub use order::OrderEvent;
pub use shared_order::SharedOrder;
pub use shipment::ShipmentEvent;
pub use transport_offer::TransportOffer;

#[cfg(test)]
mod tests;
