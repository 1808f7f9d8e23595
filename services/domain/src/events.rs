//! The contract's records: `wire` structs mirror the Avro schemas field for
//! field; the domain structs beside them are what the rest of the hub uses,
//! built by `validate`, which reports every problem of a record at once.

use crate::catalog::{Catalog, ProductCode};
use crate::ids::*;
use crate::quantity::{Kg, Millis, PricePerTonne};
use crate::topology::{Topology, TransportMode};
use crate::Invalid;

/// What validation checks references against.
#[derive(Clone, Copy)]
pub struct Reference<'a> {
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
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Undecodable => "UNDECODABLE",
            ErrorClass::UnknownSchema => "UNKNOWN_SCHEMA",
            ErrorClass::WrongRecord => "WRONG_RECORD",
            ErrorClass::Invalid => "INVALID",
            ErrorClass::UnknownReference => "UNKNOWN_REFERENCE",
        }
    }
}

/// Field-for-field images of the Avro records (names as in `schemas/`).
pub mod wire {
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
}

/// Collects every problem of one record instead of stopping at the first.
struct Check {
    problems: Vec<Invalid>,
    unknown_reference: bool,
}

impl Check {
    fn new() -> Self {
        Check { problems: Vec::new(), unknown_reference: false }
    }
    fn take<T>(&mut self, r: Result<T, Invalid>) -> Option<T> {
        r.map_err(|e| self.problems.push(e)).ok()
    }
    fn reference<T>(&mut self, r: Result<T, Invalid>) -> Option<T> {
        if r.is_err() {
            self.unknown_reference = true;
        }
        self.take(r)
    }
    fn rule(&mut self, ok: bool, field: &str, msg: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(Invalid::new(field, msg()));
        }
    }
    fn product(&mut self, r: &Reference, code: &str) -> Option<ProductCode> {
        let parsed = r.catalog.parse(code);
        // A well-formed code the catalog lacks is an unknown reference; a malformed one is invalid.
        if parsed.is_err() && crate::catalog::split_code(code).is_ok() {
            self.unknown_reference = true;
        }
        self.take(parsed)
    }
    fn cluster(&mut self, r: &Reference, field: &str, id: &str) -> Option<ClusterId> {
        let c = self.take(ClusterId::parse(id).map_err(|e| Invalid::new(field, e.message)))?;
        self.reference(if r.topology.cluster(c.as_str()).is_some() {
            Ok(c)
        } else {
            Err(Invalid::new(field, format!("{id} is not a cluster of the topology")))
        })
    }
    fn site(&mut self, r: &Reference, field: &str, id: &str) -> Option<SiteId> {
        let s = self.take(SiteId::parse(id).map_err(|e| Invalid::new(field, e.message)))?;
        self.reference(if r.topology.site(s.as_str()).is_some() {
            Ok(s)
        } else {
            Err(Invalid::new(field, format!("{id} is not a site of the topology")))
        })
    }
    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Rejection> {
        if self.problems.is_empty() && let Some(v) = build() {
            return Ok(v);
        }
        let class = if self.unknown_reference { ErrorClass::UnknownReference } else { ErrorClass::Invalid };
        Err(Rejection { class, problems: self.problems })
    }
}

/// A record that decoded but broke the contract; carries every problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.reason())]
pub struct Rejection {
    pub class: ErrorClass,
    pub problems: Vec<Invalid>,
}

impl Rejection {
    pub fn reason(&self) -> String {
        self.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub order_id: OrderId,
    pub kind: OrderKind,
    pub cluster: ClusterId,
    pub buyer_id: EnterpriseId,
    pub product: ProductCode,
    pub quantity: Kg,
    pub deliver_by: Millis,
    pub destination_site: SiteId,
    pub max_price: PricePerTonne,
    pub allow_cross_cluster: bool,
}

impl OrderEvent {
    pub fn validate(w: &wire::OrderEvent, r: &Reference) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let order_id = c.take(OrderId::parse(&*w.order_id));
        let cluster = c.cluster(r, "cluster", &w.cluster);
        let buyer_id = c.take(EnterpriseId::parse(&*w.buyer_id).map_err(|e| Invalid::new("buyer_id", e.message)));
        let product = c.product(r, &w.product_code);
        // A cancellation need not restate a quantity; anything else orders something.
        let quantity = if w.kind == OrderKind::Cancelled {
            c.take(Kg::parse("quantity_kg", w.quantity_kg))
        } else {
            c.take(Kg::parse_positive("quantity_kg", w.quantity_kg))
        };
        let deliver_by = c.take(Millis::parse("deliver_by", w.deliver_by));
        // A placement or amendment must leave time to deliver; cancelling an order
        // whose deadline has passed is normal.
        if let (Some(t), Some(d), false) = (event_time, deliver_by, w.kind == OrderKind::Cancelled) {
            c.rule(d > t, "deliver_by", || "is not after event_time".into());
        }
        let destination_site = c.site(r, "destination_site", &w.destination_site);
        let max_price = c.take(PricePerTonne::parse("max_price_cny_per_t", w.max_price_cny_per_t));
        c.finish(|| {
            Some(OrderEvent {
                event_id: event_id?,
                event_time: event_time?,
                order_id: order_id?,
                kind: w.kind,
                cluster: cluster?,
                buyer_id: buyer_id?,
                product: product?,
                quantity: quantity?,
                deliver_by: deliver_by?,
                destination_site: destination_site?,
                max_price: max_price?,
                allow_cross_cluster: w.allow_cross_cluster,
            })
        })
    }

    pub fn to_wire(&self) -> wire::OrderEvent {
        wire::OrderEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            order_id: self.order_id.to_string(),
            kind: self.kind,
            cluster: self.cluster.to_string(),
            buyer_id: self.buyer_id.to_string(),
            product_code: self.product.to_string(),
            quantity_kg: self.quantity.to_wire(),
            deliver_by: self.deliver_by.0,
            destination_site: self.destination_site.to_string(),
            max_price_cny_per_t: self.max_price.to_wire(),
            allow_cross_cluster: self.allow_cross_cluster,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CapacityEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub capacity_id: CapacityId,
    pub kind: CapacityKind,
    pub cluster: ClusterId,
    pub provider_id: EnterpriseId,
    pub site_id: SiteId,
    pub product: ProductCode,
    pub quantity: Kg,
    pub available_from: Millis,
    pub available_until: Millis,
    pub price: PricePerTonne,
    pub min_lot: Kg,
    pub energy_kwh_per_t: Option<u64>,
}

impl CapacityEvent {
    pub fn validate(w: &wire::CapacityEvent, r: &Reference) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let capacity_id = c.take(CapacityId::parse(&*w.capacity_id));
        let cluster = c.cluster(r, "cluster", &w.cluster);
        let provider_id = c.take(EnterpriseId::parse(&*w.provider_id).map_err(|e| Invalid::new("provider_id", e.message)));
        let site_id = c.site(r, "site_id", &w.site_id);
        if let (Some(cl), Some(s)) = (&cluster, &site_id) {
            let home = r.topology.site(s.as_str()).and_then(|s| s.cluster.as_ref());
            c.rule(home == Some(cl), "site_id", || format!("{s} is not a site of cluster {cl}"));
        }
        let product = c.product(r, &w.product_code);
        let quantity = if w.kind == CapacityKind::Withdrawn {
            c.take(Kg::parse("quantity_kg", w.quantity_kg))
        } else {
            c.take(Kg::parse_positive("quantity_kg", w.quantity_kg))
        };
        let available_from = c.take(Millis::parse("available_from", w.available_from));
        let available_until = c.take(Millis::parse("available_until", w.available_until));
        if let (Some(f), Some(u)) = (available_from, available_until) {
            c.rule(u > f, "available_until", || "is not after available_from".into());
        }
        let price = c.take(PricePerTonne::parse("price_cny_per_t", w.price_cny_per_t));
        let min_lot = c.take(Kg::parse("min_lot_kg", w.min_lot_kg));
        if let (Some(m), Some(q), CapacityKind::Declared) = (min_lot, quantity, w.kind) {
            c.rule(m <= q, "min_lot_kg", || format!("{m} is more than the {q} declared"));
        }
        let energy = c.take(crate::quantity::parse_energy("energy_kwh_per_t", w.energy_kwh_per_t));
        c.finish(|| {
            Some(CapacityEvent {
                event_id: event_id?,
                event_time: event_time?,
                capacity_id: capacity_id?,
                kind: w.kind,
                cluster: cluster?,
                provider_id: provider_id?,
                site_id: site_id?,
                product: product?,
                quantity: quantity?,
                available_from: available_from?,
                available_until: available_until?,
                price: price?,
                min_lot: min_lot?,
                energy_kwh_per_t: energy?,
            })
        })
    }

    pub fn to_wire(&self) -> wire::CapacityEvent {
        wire::CapacityEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            capacity_id: self.capacity_id.to_string(),
            kind: self.kind,
            cluster: self.cluster.to_string(),
            provider_id: self.provider_id.to_string(),
            site_id: self.site_id.to_string(),
            product_code: self.product.to_string(),
            quantity_kg: self.quantity.to_wire(),
            available_from: self.available_from.0,
            available_until: self.available_until.0,
            price_cny_per_t: self.price.to_wire(),
            min_lot_kg: self.min_lot.to_wire(),
            energy_kwh_per_t: self.energy_kwh_per_t.map(|e| e as i64),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InventoryEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub site_id: SiteId,
    pub product: ProductCode,
    pub on_hand: Kg,
    pub reserved: Kg,
}

impl InventoryEvent {
    pub fn validate(w: &wire::InventoryEvent, r: &Reference) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let site_id = c.site(r, "site_id", &w.site_id);
        let product = c.product(r, &w.product_code);
        let on_hand = c.take(Kg::parse("on_hand_kg", w.on_hand_kg));
        let reserved = c.take(Kg::parse("reserved_kg", w.reserved_kg));
        if let (Some(o), Some(res)) = (on_hand, reserved) {
            c.rule(res <= o, "reserved_kg", || format!("{res} reserved is more than the {o} on hand"));
        }
        c.finish(|| {
            Some(InventoryEvent {
                event_id: event_id?,
                event_time: event_time?,
                site_id: site_id?,
                product: product?,
                on_hand: on_hand?,
                reserved: reserved?,
            })
        })
    }

    /// The compacted topic's key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.site_id, self.product)
    }

    pub fn to_wire(&self) -> wire::InventoryEvent {
        wire::InventoryEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            site_id: self.site_id.to_string(),
            product_code: self.product.to_string(),
            on_hand_kg: self.on_hand.to_wire(),
            reserved_kg: self.reserved.to_wire(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShipmentEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub shipment_id: ShipmentId,
    pub allocation_id: Option<AllocationId>,
    pub carrier_id: EnterpriseId,
    pub mode: TransportMode,
    pub status: ShipmentStatus,
    pub from_site: SiteId,
    pub to_site: SiteId,
    pub quantity: Kg,
    pub position: Option<(f64, f64)>,
    pub eta: Option<Millis>,
}

impl ShipmentEvent {
    pub fn validate(w: &wire::ShipmentEvent, r: &Reference) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let shipment_id = c.take(ShipmentId::parse(&*w.shipment_id));
        let allocation_id = match &w.allocation_id {
            None => Some(None),
            Some(a) => c.take(AllocationId::parse(&**a).map(Some)),
        };
        let carrier_id = c.take(EnterpriseId::parse(&*w.carrier_id).map_err(|e| Invalid::new("carrier_id", e.message)));
        let from_site = c.site(r, "from_site", &w.from_site);
        let to_site = c.site(r, "to_site", &w.to_site);
        let quantity = c.take(Kg::parse_positive("quantity_kg", w.quantity_kg));
        let position = match (w.lat, w.lon) {
            (None, None) => Some(None),
            (Some(lat), Some(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => Some(Some((lat, lon))),
            (Some(lat), Some(lon)) => c.take(Err(Invalid::new("lat", format!("({lat}, {lon}) is not a position on Earth")))),
            _ => c.take(Err(Invalid::new("lat", "lat and lon come together or not at all"))),
        };
        let eta = match w.eta {
            None => Some(None),
            Some(e) => c.take(Millis::parse("eta", e).map(Some)),
        };
        c.finish(|| {
            Some(ShipmentEvent {
                event_id: event_id?,
                event_time: event_time?,
                shipment_id: shipment_id?,
                allocation_id: allocation_id?,
                carrier_id: carrier_id?,
                mode: w.mode,
                status: w.status,
                from_site: from_site?,
                to_site: to_site?,
                quantity: quantity?,
                position: position?,
                eta: eta?,
            })
        })
    }

    pub fn to_wire(&self) -> wire::ShipmentEvent {
        wire::ShipmentEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            shipment_id: self.shipment_id.to_string(),
            allocation_id: self.allocation_id.as_ref().map(|a| a.to_string()),
            carrier_id: self.carrier_id.to_string(),
            mode: self.mode,
            status: self.status,
            from_site: self.from_site.to_string(),
            to_site: self.to_site.to_string(),
            quantity_kg: self.quantity.to_wire(),
            lat: self.position.map(|p| p.0),
            lon: self.position.map(|p| p.1),
            eta: self.eta.map(|e| e.0),
        }
    }
}

/// Records the hub writes itself are checked only for shape: ids and codes
/// parse, quantities are sane. They are trusted otherwise.
pub fn validate_allocation(w: &wire::Allocation, r: &Reference) -> Result<(), Rejection> {
    let mut c = Check::new();
    c.take(AllocationId::parse(&*w.allocation_id));
    c.take(OrderId::parse(&*w.order_id));
    c.take(CapacityId::parse(&*w.capacity_id));
    c.cluster(r, "order_cluster", &w.order_cluster);
    c.cluster(r, "capacity_cluster", &w.capacity_cluster);
    c.product(r, &w.product_code);
    c.take(Kg::parse_positive("quantity_kg", w.quantity_kg));
    c.take(PricePerTonne::parse("price_cny_per_t", w.price_cny_per_t));
    c.take(PricePerTonne::parse_charge("freight_cny_per_t", w.freight_cny_per_t));
    c.take(Millis::parse("decided_at", w.decided_at));
    c.finish(|| Some(()))
}

/// The matcher's order status, checked for shape and plausible values like
/// an allocation: what reads it (share, view) never sees numbers no event admits.
pub fn validate_order_status(w: &wire::OrderStatus, r: &Reference) -> Result<(), Rejection> {
    let mut c = Check::new();
    c.take(EventId::parse(&*w.event_id));
    c.take(Millis::parse("status_at", w.status_at));
    c.rule(w.version >= 1, "version", || format!("is {}; versions start at 1", w.version));
    c.take(OrderId::parse(&*w.order_id));
    c.cluster(r, "cluster", &w.cluster);
    c.product(r, &w.product_code);
    c.take(Millis::parse("deliver_by", w.deliver_by));
    c.take(PricePerTonne::parse("max_price_cny_per_t", w.max_price_cny_per_t));
    c.take(Kg::parse("remaining_kg", w.remaining_kg));
    c.take(Kg::parse("allocated_kg", w.allocated_kg));
    for t in &w.shared_to {
        c.cluster(r, "shared_to", t);
    }
    c.finish(|| Some(()))
}

/// An order remainder shared with other clusters (or the share withdrawn).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedOrder {
    pub event_id: EventId,
    pub shared_at: Millis,
    pub kind: SharedOrderKind,
    pub order_id: OrderId,
    pub origin_cluster: ClusterId,
    pub target_clusters: Vec<ClusterId>,
    pub product: ProductCode,
    pub remaining: Kg,
    pub deliver_by: Millis,
    pub destination_site: SiteId,
    pub buyer_id: Option<EnterpriseId>,
    pub max_price: Option<PricePerTonne>,
    wire: wire::SharedOrder,
}

impl SharedOrder {
    pub fn validate(w: &wire::SharedOrder, r: &Reference) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let shared_at = c.take(Millis::parse("shared_at", w.shared_at));
        let order_id = c.take(OrderId::parse(&*w.order_id));
        let origin = c.cluster(r, "origin_cluster", &w.origin_cluster);
        let targets: Vec<Option<ClusterId>> = w.target_clusters.iter().map(|t| c.cluster(r, "target_clusters", t)).collect();
        let product = c.product(r, &w.product_code);
        let remaining = c.take(Kg::parse("remaining_kg", w.remaining_kg));
        let deliver_by = c.take(Millis::parse("deliver_by", w.deliver_by));
        let destination_site = c.site(r, "destination_site", &w.destination_site);
        let buyer_id = match &w.buyer_id {
            None => Some(None),
            Some(b) => c.take(EnterpriseId::parse(&**b).map(Some)),
        };
        let max_price = match w.max_price_cny_per_t {
            None => Some(None),
            Some(p) => c.take(PricePerTonne::parse("max_price_cny_per_t", p).map(Some)),
        };
        c.finish(|| {
            Some(SharedOrder {
                event_id: event_id?,
                shared_at: shared_at?,
                kind: w.kind,
                order_id: order_id?,
                origin_cluster: origin?,
                target_clusters: targets.into_iter().collect::<Option<Vec<_>>>()?,
                product: product?,
                remaining: remaining?,
                deliver_by: deliver_by?,
                destination_site: destination_site?,
                buyer_id: buyer_id?,
                max_price: max_price?,
                wire: w.clone(),
            })
        })
    }

    pub fn to_wire(&self) -> wire::SharedOrder {
        self.wire.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> wire::OrderEvent {
        wire::OrderEvent {
            event_id: "ev-1".into(),
            event_time: 1_795_000_000_000,
            order_id: "ORD-1".into(),
            kind: OrderKind::Placed,
            cluster: "nanning".into(),
            buyer_id: "91450100MA5L0ABC1X".into(),
            product_code: "AL-INGOT-AL99.70".into(),
            quantity_kg: 500_000,
            deliver_by: 1_795_600_000_000,
            destination_site: "nanning-jiangnan-processing".into(),
            max_price_cny_per_t: 20_800,
            allow_cross_cluster: true,
        }
    }

    fn with<T>(f: impl FnOnce(&Reference) -> T) -> T {
        let (catalog, topology) = (Catalog::embedded(), Topology::embedded());
        f(&Reference { catalog: &catalog, topology: &topology })
    }

    #[test]
    fn a_good_order_validates_and_round_trips() {
        with(|r| {
            let o = OrderEvent::validate(&order(), r).unwrap();
            assert_eq!(o.product.family_str(), "AL-INGOT");
            assert_eq!(o.to_wire(), order());
        });
    }

    #[test]
    fn every_problem_of_an_order_is_reported() {
        with(|r| {
            let mut w = order();
            w.quantity_kg = -5;
            w.deliver_by = w.event_time - 1;
            w.max_price_cny_per_t = -1;
            w.event_id = "".into();
            let rej = OrderEvent::validate(&w, r).unwrap_err();
            assert_eq!(rej.class, ErrorClass::Invalid);
            let fields: Vec<_> = rej.problems.iter().map(|p| p.field.as_str()).collect();
            assert_eq!(fields, ["event_id", "quantity_kg", "deliver_by", "max_price_cny_per_t"]);
        });
    }

    #[test]
    fn an_expired_order_can_be_cancelled() {
        with(|r| {
            let mut w = order();
            w.kind = OrderKind::Cancelled;
            w.event_time = w.deliver_by + 1;
            assert!(OrderEvent::validate(&w, r).is_ok());
            w.kind = OrderKind::Amended;
            assert!(OrderEvent::validate(&w, r).is_err(), "an amendment must leave time to deliver");
        });
    }

    #[test]
    fn unknown_product_site_or_cluster_is_an_unknown_reference() {
        with(|r| {
            for mutate in [
                (|w: &mut wire::OrderEvent| w.product_code = "AL-INGOT-AL99.99".into()) as fn(&mut wire::OrderEvent),
                |w| w.destination_site = "mars-base".into(),
                |w| w.cluster = "guilin".into(),
            ] {
                let mut w = order();
                mutate(&mut w);
                let rej = OrderEvent::validate(&w, r).unwrap_err();
                assert_eq!(rej.class, ErrorClass::UnknownReference, "{rej}");
            }
        });
    }

    #[test]
    fn capacity_site_must_belong_to_its_cluster() {
        with(|r| {
            let w = wire::CapacityEvent {
                event_id: "ev-2".into(),
                event_time: 1_795_000_000_000,
                capacity_id: "CAP-1".into(),
                kind: CapacityKind::Declared,
                cluster: "hechi".into(),
                provider_id: "91451200MA5L0XYZ2Q".into(),
                site_id: "baise-pingguo-smelter".into(),
                product_code: "AL-INGOT-AL99.85".into(),
                quantity_kg: 1_000_000,
                available_from: 1_795_000_000_000,
                available_until: 1_796_000_000_000,
                price_cny_per_t: 20_300,
                min_lot_kg: 2_000_000,
                energy_kwh_per_t: Some(13_300),
            };
            let rej = CapacityEvent::validate(&w, r).unwrap_err();
            let text = rej.reason();
            assert!(text.contains("not a site of cluster hechi"), "{text}");
            assert!(text.contains("min_lot_kg"), "{text}");
            let ok = wire::CapacityEvent { cluster: "baise".into(), min_lot_kg: 25_000, ..w };
            assert_eq!(CapacityEvent::validate(&ok, r).unwrap().to_wire(), ok);
        });
    }
}
