//! orelink-outbound: what leaves the hub over HTTP for logistics partners and
//! enterprises without a Kafka client.
//!
//! - `epcis`: shipment events as GS1 EPCIS 2.0 JSON-LD `ObjectEvent`s (pure).
//! - `cursor` and `stream`: subscription streams read a topic from a cursor
//!   (the SSE event id) without a consumer group, read_committed; the
//!   gateway serves them (`GET /v1/subscriptions/...`). A resumed stream
//!   neither loses nor repeats events.
//! - `webhook`: the `webhooks` role pushes each partner's shipments to its
//!   URL, HMAC-SHA256-signed, retried with backoff until accepted. At least
//!   once, in order per shipment (sequential per partition); offsets are
//!   stored only after the receiver answered 2xx, and each push carries a
//!   stable delivery id so a receiver drops the rare repeat after a crash.

pub mod cursor;
pub mod epcis;
pub mod stream;
pub mod webhook;

use orelink_codec::Record;
use serde_json::Value;

/// How a subscriber wants its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The contract's JSON (the same fields as the Avro record).
    Json,
    /// GS1 EPCIS 2.0 JSON-LD (shipments only).
    Epcis,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "json" => Ok(Format::Json),
            "epcis" => Ok(Format::Epcis),
            other => Err(format!("format {other:?}: expected json or epcis")),
        }
    }
}

/// One record as a subscriber sees it; None for records a subscription does not carry.
pub fn render(record: &Record, format: Format) -> Option<Value> {
    match (record, format) {
        (Record::Shipment(s), Format::Json) => serde_json::to_value(s.to_wire()).ok(),
        (Record::Shipment(s), Format::Epcis) => Some(epcis::object_event(&s.to_wire())),
        (Record::Allocation(a), Format::Json) => serde_json::to_value(a).ok(),
        _ => None,
    }
}
