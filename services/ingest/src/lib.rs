//! orelink-ingest: the contract parsing shared by the doors that enterprises
//! use without a Kafka client, the HTTP gateway and the edge relay. A JSON
//! body (or a CSV row, turned into one by `csv`) is checked against the
//! record's Avro schema (`schema`, every problem reported), then validated by
//! the domain's rules; what comes out is a `Parsed` event with its Kafka key,
//! or a `Rejection` that names each field and problem. No I/O, no HTTP:
//! identity and delivery are the doors' business.

pub mod csv;
pub mod schema;

use orelink_codec::Codec;
use orelink_domain::events::{CapacityEvent, InventoryEvent, OrderEvent, ShipmentEvent, TransportOffer, wire};
use orelink_domain::topology::topics;
use orelink_platform::Reference;
use serde_json::Value;

/// Why an event was refused: every problem, as (field path, message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("the event is not valid: {}", self.reason())]
    Invalid(Vec<(String, String)>),
    /// The hub has no schema for the record (a build without it): not the caller's fault.
    #[error("no schema for {0}")]
    NoSchema(&'static str),
}

impl Rejection {
    /// Every problem on one line, `field: message; ...`.
    pub fn reason(&self) -> String {
        match self {
            Rejection::Invalid(p) => p.iter().map(|(f, m)| if f.is_empty() { m.clone() } else { format!("{f}: {m}") }).collect::<Vec<_>>().join("; "),
            other => other.to_string(),
        }
    }
}

/// The Avro schema documents of the kinds, by record name.
pub type Documents = std::collections::BTreeMap<&'static str, Value>;

/// The kinds of event a caller may send: an enterprise's four, and a carrier's offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Order,
    Capacity,
    Inventory,
    Shipment,
    TransportOffer,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Order, Kind::Capacity, Kind::Inventory, Kind::Shipment, Kind::TransportOffer];
    /// What a site's edge relay forwards: its enterprise's events (a carrier's
    /// offers come from the carrier, not from a site).
    pub const SITE: [Kind; 4] = [Kind::Order, Kind::Capacity, Kind::Inventory, Kind::Shipment];
    /// Where the hub's doors write this kind: orders and capacity straight to
    /// the market topic (the matcher's one order per family), the rest to
    /// their contract topics.
    pub fn topic(self) -> &'static str {
        match self {
            Kind::Order | Kind::Capacity => topics::MARKET,
            Kind::Inventory => topics::INVENTORY,
            Kind::Shipment => topics::SHIPMENTS,
            Kind::TransportOffer => topics::TRANSPORT_OFFERS,
        }
    }
    /// The Avro record's full name.
    pub fn record(self) -> &'static str {
        match self {
            Kind::Order => "orelink.v1.OrderEvent",
            Kind::Capacity => "orelink.v1.CapacityEvent",
            Kind::Inventory => "orelink.v1.InventoryEvent",
            Kind::Shipment => "orelink.v1.ShipmentEvent",
            Kind::TransportOffer => "orelink.v1.TransportOffer",
        }
    }
    pub fn path(self) -> &'static str {
        match self {
            Kind::Order => "/v1/orders",
            Kind::Capacity => "/v1/capacity",
            Kind::Inventory => "/v1/inventory",
            Kind::Shipment => "/v1/shipments",
            Kind::TransportOffer => "/v1/transport-offers",
        }
    }
}

/// A contract event as the caller sent it, checked against the schema and the
/// contract; shared by the gateway and the edge relay.
#[derive(Debug, Clone)]
pub enum WireEvent {
    Order(wire::OrderEvent),
    Capacity(wire::CapacityEvent),
    Inventory(wire::InventoryEvent),
    Shipment(wire::ShipmentEvent),
    TransportOffer(wire::TransportOffer),
}

/// A checked event: its kind, id, Kafka key and record.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub kind: Kind,
    pub event_id: String,
    pub key: String,
    pub wire: WireEvent,
}

/// The Avro schema documents of the kinds, by record name.
pub fn avro_documents(reference: &Reference) -> Documents {
    Kind::ALL
        .iter()
        .filter_map(|k| {
            let text = &reference.schemas.get(k.record())?.text;
            Some((k.record(), serde_json::from_str(text).ok()?))
        })
        .collect()
}

/// Schema and contract checks of one event (`at` prefixes field paths);
/// every problem is reported. No identity, no I/O.
pub fn parse(reference: &Reference, avro: &Documents, kind: Kind, value: &Value, at: &str) -> Result<Parsed, Rejection> {
    let mut problems = Vec::new();
    match avro.get(kind.record()) {
        Some(schema) => schema::check(schema, value, at, &mut problems),
        None => return Err(Rejection::NoSchema(kind.record())),
    }
    if !problems.is_empty() {
        return Err(Rejection::Invalid(problems));
    }
    let r = reference.lookup();
    let invalid = |p: Vec<orelink_domain::Invalid>| -> Rejection {
        Rejection::Invalid(p.into_iter().map(|i| (if at.is_empty() { i.field } else { format!("{at}.{}", i.field) }, i.message)).collect())
    };
    let (event_id, key, wire) = match kind {
        Kind::Order => {
            let w: wire::OrderEvent = de(value, at)?;
            let o = OrderEvent::validate(&w, &r).map_err(|e| invalid(e.problems))?;
            (w.event_id.clone(), o.product.family_str().to_owned(), WireEvent::Order(w))
        }
        Kind::Capacity => {
            let w: wire::CapacityEvent = de(value, at)?;
            let c = CapacityEvent::validate(&w, &r).map_err(|e| invalid(e.problems))?;
            (w.event_id.clone(), c.product.family_str().to_owned(), WireEvent::Capacity(w))
        }
        Kind::Inventory => {
            let w: wire::InventoryEvent = de(value, at)?;
            InventoryEvent::validate(&w, &r).map_err(|e| invalid(e.problems))?;
            (w.event_id.clone(), format!("{}/{}", w.site_id, w.product_code), WireEvent::Inventory(w))
        }
        Kind::Shipment => {
            let w: wire::ShipmentEvent = de(value, at)?;
            ShipmentEvent::validate(&w, &r).map_err(|e| invalid(e.problems))?;
            (w.event_id.clone(), w.shipment_id.clone(), WireEvent::Shipment(w))
        }
        Kind::TransportOffer => {
            let w: wire::TransportOffer = de(value, at)?;
            let o = TransportOffer::validate(&w, &r).map_err(|e| invalid(e.problems))?;
            (w.event_id.clone(), o.lane().key(), WireEvent::TransportOffer(w))
        }
    };
    Ok(Parsed { kind, event_id, key, wire })
}

impl Parsed {
    /// Confluent Avro for the deployed topic (`codec.topic(kind.topic())`),
    /// under the record's own subject on the market topic.
    pub async fn encode(&self, codec: &Codec) -> Result<Vec<u8>, orelink_codec::EncodeError> {
        let topic = codec.topic(self.kind.topic());
        match &self.wire {
            WireEvent::Order(w) => codec.encode_as(&topic, self.kind.record(), w).await,
            WireEvent::Capacity(w) => codec.encode_as(&topic, self.kind.record(), w).await,
            WireEvent::Inventory(w) => codec.encode(&topic, w).await,
            WireEvent::Shipment(w) => codec.encode(&topic, w).await,
            WireEvent::TransportOffer(w) => codec.encode(&topic, w).await,
        }
    }
}


fn de<T: serde::de::DeserializeOwned>(v: &Value, at: &str) -> Result<T, Rejection> {
    serde_json::from_value(v.clone()).map_err(|e| Rejection::Invalid(vec![(at.to_owned(), e.to_string())]))
}
