//! Field-for-field images of the Avro records (names as in `schemas/`).

use super::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub event_id: String,
    pub event_time: i64,
    pub order_id: String,
    pub kind: OrderKind,
    pub cluster: String,
    pub buyer_id: String,
    pub product_code: String,
    pub quantity_kg: i64,
    pub deliver_by: i64,
    pub destination_site: String,
    pub max_price_cny_per_t: i64,
    pub allow_cross_cluster: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityEvent {
    pub event_id: String,
    pub event_time: i64,
    pub capacity_id: String,
    pub kind: CapacityKind,
    pub cluster: String,
    pub provider_id: String,
    pub site_id: String,
    pub product_code: String,
    pub quantity_kg: i64,
    pub available_from: i64,
    pub available_until: i64,
    pub price_cny_per_t: i64,
    pub min_lot_kg: i64,
    pub energy_kwh_per_t: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryEvent {
    pub event_id: String,
    pub event_time: i64,
    pub site_id: String,
    pub product_code: String,
    pub on_hand_kg: i64,
    pub reserved_kg: i64,
}

/// A carrier's offer of room on a lane (contract v1.1, "Carriers' offers").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransportOffer {
    pub event_id: String,
    pub event_time: i64,
    pub offer_id: String,
    pub kind: super::TransportOfferKind,
    pub carrier_id: String,
    pub mode: TransportMode,
    pub from_cluster: String,
    pub to_cluster: String,
    pub capacity_kg: i64,
    pub available_from: i64,
    pub available_until: i64,
    pub price_cny_per_t: i64,
    pub transit_hours: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentEvent {
    pub event_id: String,
    pub event_time: i64,
    pub shipment_id: String,
    pub allocation_id: Option<String>,
    pub carrier_id: String,
    pub mode: TransportMode,
    pub status: ShipmentStatus,
    pub from_site: String,
    pub to_site: String,
    pub quantity_kg: i64,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub eta: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub rank: i32,
    pub home_cluster: bool,
    pub requested_product_code: String,
    pub landed_cost_cny_per_t: i64,
    pub distance_km: i64,
    pub transit_hours: i64,
    pub mode: TransportMode,
    pub energy_kwh_per_t: Option<i64>,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub allocation_id: String,
    pub order_id: String,
    pub capacity_id: String,
    pub order_cluster: String,
    pub capacity_cluster: String,
    pub buyer_id: String,
    pub provider_id: String,
    pub product_code: String,
    pub quantity_kg: i64,
    pub price_cny_per_t: i64,
    pub freight_cny_per_t: i64,
    pub from_site: String,
    pub destination_site: String,
    pub decided_at: i64,
    pub explanation: Explanation,
    /// When the goods can leave (contract rule 1's dispatch), for booking.
    #[serde(default)]
    pub pick_up: Option<i64>,
    /// The order's deadline, for booking.
    #[serde(default)]
    pub deliver_by: Option<i64>,
}

/// A capacity gap's episode raised or cleared (the view's outlook).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub kind: AlertKind,
    pub cluster: String,
    pub family: String,
    pub opened_at: i64,
    pub at: i64,
    pub horizon_hours: i32,
    pub demand_kg: i64,
    pub remaining_kg: i64,
    pub expected_kg: i64,
    pub gap_kg: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    Raised,
    Cleared,
}

/// Part of an allocation booked onto an offer, or its unbooked remainder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub booking_id: String,
    pub allocation_id: String,
    pub from_cluster: String,
    pub to_cluster: String,
    pub booked: bool,
    #[serde(default)]
    pub offer_id: Option<String>,
    #[serde(default)]
    pub carrier_id: Option<String>,
    #[serde(default)]
    pub mode: Option<TransportMode>,
    pub quantity_kg: i64,
    pub pick_up: i64,
    #[serde(default)]
    pub arrival: Option<i64>,
    #[serde(default)]
    pub price_cny_per_t: Option<i64>,
    pub planning_freight_cny_per_t: i64,
    pub decided_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedOrder {
    pub event_id: String,
    pub shared_at: i64,
    pub kind: SharedOrderKind,
    pub order_id: String,
    pub origin_cluster: String,
    pub target_clusters: Vec<String>,
    pub product_code: String,
    pub remaining_kg: i64,
    pub deliver_by: i64,
    pub destination_site: String,
    pub buyer_id: Option<String>,
    pub max_price_cny_per_t: Option<i64>,
}

/// Internal to the hub (`orelink.order-status.v1`): an order right after an event touched it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderStatus {
    pub event_id: String,
    pub status_at: i64,
    pub version: i32,
    pub state: OrderState,
    pub order_id: String,
    pub cluster: String,
    pub buyer_id: String,
    pub product_code: String,
    pub destination_site: String,
    pub deliver_by: i64,
    pub max_price_cny_per_t: i64,
    pub allow_cross_cluster: bool,
    pub remaining_kg: i64,
    pub allocated_kg: i64,
    pub shared_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: Option<String>,
    #[serde(with = "serde_bytes_opt")]
    pub value: Option<Vec<u8>>,
    pub error_class: ErrorClass,
    pub reason: String,
    pub failed_at: i64,
    pub role: String,
}

/// Avro `bytes` wants serde's bytes, not a sequence of integers.
mod serde_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    struct Bytes<'a>(&'a [u8]);
    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[derive(Deserialize)]
    struct ByteBuf(#[serde(deserialize_with = "buf")] Vec<u8>);

    fn buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(d)?.map(|b| b.0))
    }
}
