//! Shipment events as GS1 EPCIS 2.0 JSON-LD `ObjectEvent`s: pure functions,
//! checked against the bundled GS1 JSON Schema (`schemas/epcis/`).
//!
//! Mapping (CBV 2.0 vocabulary): the shipment status gives the business step
//! and disposition; the quantity is one `quantityList` entry in tonnes (UN/CEFACT
//! `TNE`) of the shipment's class; the last reported position is the read point
//! (a `geo:` URI), else the origin site; origin and destination are the source
//! and destination locations; the allocation is a business transaction. What
//! EPCIS has no field for (carrier, mode, status, ETA, event id) travels as
//! `orelink:` extension fields, declared in the `@context`.

use orelink_domain::events::{ShipmentStatus, wire};
use serde_json::{Map, Value, json};

/// The GS1 EPCIS 2.0 context, and the hub's own namespace for extensions.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld";
pub const ORELINK_NS: &str = "https://orelink.gx.cn/epcis/";
/// Guangxi keeps China Standard Time.
const TZ_OFFSET: &str = "+08:00";

/// (bizStep, disposition) for a shipment status.
pub fn step_of(status: ShipmentStatus) -> (&'static str, &'static str) {
    use ShipmentStatus::*;
    match status {
        Planned => ("staging_outbound", "in_progress"),
        PickedUp => ("shipping", "in_transit"),
        InTransit => ("transporting", "in_transit"),
        Arrived => ("arriving", "in_transit"),
        Delivered => ("receiving", "in_progress"),
        Exception => ("holding", "unavailable"),
    }
}

/// One shipment event as a standalone EPCIS `ObjectEvent` (with its `@context`).
pub fn object_event(s: &wire::ShipmentEvent) -> Value {
    let (biz_step, disposition) = step_of(s.status);
    let site = |id: &str| format!("urn:orelink:site:{}", uri_part(id));
    let read_point = match (s.lat, s.lon) {
        (Some(lat), Some(lon)) => format!("geo:{lat},{lon}"),
        _ => site(&s.from_site),
    };
    let mut e = Map::new();
    e.insert("@context".into(), json!([EPCIS_CONTEXT, {"orelink": ORELINK_NS}]));
    e.insert("type".into(), json!("ObjectEvent"));
    e.insert("eventID".into(), json!(format!("urn:orelink:event:{}", uri_part(&s.event_id))));
    e.insert("eventTime".into(), json!(rfc3339_millis(s.event_time)));
    e.insert("eventTimeZoneOffset".into(), json!(TZ_OFFSET));
    e.insert("action".into(), json!("OBSERVE"));
    e.insert("bizStep".into(), json!(biz_step));
    e.insert("disposition".into(), json!(disposition));
    e.insert(
        "quantityList".into(),
        json!([{
            "epcClass": format!("urn:orelink:shipment:{}", uri_part(&s.shipment_id)),
            "quantity": s.quantity_kg as f64 / 1000.0,
            "uom": "TNE",
        }]),
    );
    e.insert("readPoint".into(), json!({"id": read_point}));
    if matches!(s.status, ShipmentStatus::Arrived | ShipmentStatus::Delivered) {
        e.insert("bizLocation".into(), json!({"id": site(&s.to_site)}));
    }
    if let Some(a) = &s.allocation_id {
        e.insert("bizTransactionList".into(), json!([{"type": "po", "bizTransaction": format!("urn:orelink:allocation:{}", uri_part(a))}]));
    }
    e.insert("sourceList".into(), json!([{"type": "location", "source": site(&s.from_site)}]));
    e.insert("destinationList".into(), json!([{"type": "location", "destination": site(&s.to_site)}]));
    e.insert("orelink:carrierID".into(), json!(s.carrier_id));
    e.insert("orelink:transportMode".into(), serde_json::to_value(s.mode).unwrap_or(Value::Null));
    e.insert("orelink:status".into(), serde_json::to_value(s.status).unwrap_or(Value::Null));
    e.insert("orelink:eventID".into(), json!(s.event_id));
    if let Some(eta) = s.eta {
        e.insert("orelink:eta".into(), json!(rfc3339_millis(eta)));
    }
    Value::Object(e)
}

/// Keeps URN parts to unreserved characters; anything else is percent-encoded.
fn uri_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian, UTC).
pub fn rfc3339_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = orelink_domain::calendar::civil_from_days(days);
    let (h, min, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use orelink_domain::topology::TransportMode;

    fn schema() -> jsonschema::Validator {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/epcis/EPCIS-JSON-Schema.json")).unwrap();
        jsonschema::draft7::new(&serde_json::from_str(&text).unwrap()).expect("the GS1 schema compiles")
    }

    fn shipment(status: ShipmentStatus) -> wire::ShipmentEvent {
        wire::ShipmentEvent {
            event_id: "evt-0001/β".into(),
            event_time: 1_795_000_000_123,
            shipment_id: "SHP-2026-000042".into(),
            allocation_id: Some("alloc-7".into()),
            carrier_id: "91450600MA5L0BGL1P".into(),
            mode: TransportMode::Sea,
            status,
            from_site: "fcg-port".into(),
            to_site: "nanning-jiangnan-processing".into(),
            quantity_kg: 125_500,
            lat: Some(21.61),
            lon: Some(108.35),
            eta: Some(1_795_086_400_000),
        }
    }

    fn problems(v: &Value) -> Vec<String> {
        schema().iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path)).collect()
    }

    #[test]
    fn every_status_renders_a_valid_object_event() {
        use ShipmentStatus::*;
        for status in [Planned, PickedUp, InTransit, Arrived, Delivered, Exception] {
            let e = object_event(&shipment(status));
            assert_eq!(problems(&e), Vec::<String>::new(), "{status:?}: {e:#}");
            assert_eq!(e["bizStep"], step_of(status).0);
        }
    }

    #[test]
    fn quantity_is_in_tonnes_and_fields_carry_over() {
        let e = object_event(&shipment(ShipmentStatus::Delivered));
        assert_eq!(e["quantityList"][0]["quantity"], 125.5);
        assert_eq!(e["quantityList"][0]["uom"], "TNE");
        assert_eq!(e["eventTime"], "2026-11-18T11:06:40.123Z");
        assert_eq!(e["eventID"], "urn:orelink:event:evt-0001%2F%CE%B2");
        assert_eq!(e["readPoint"]["id"], "geo:21.61,108.35");
        assert_eq!(e["bizLocation"]["id"], "urn:orelink:site:nanning-jiangnan-processing");
        assert_eq!(e["orelink:carrierID"], "91450600MA5L0BGL1P");
    }

    #[test]
    fn the_schema_refuses_what_epcis_forbids() {
        // The check must be able to fail: an ObjectEvent without its action.
        let mut e = object_event(&shipment(ShipmentStatus::InTransit));
        e.as_object_mut().unwrap().remove("action");
        assert!(!problems(&e).is_empty());
        let mut e = object_event(&shipment(ShipmentStatus::InTransit));
        e["eventTimeZoneOffset"] = json!("+8");
        assert!(!problems(&e).is_empty());
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_shipment_renders_valid_epcis(
            status in 0usize..6, qty in 0i64..100_000_000, t in 0i64..4_102_444_800_000,
            pos in proptest::option::of((-90.0f64..90.0, -180.0f64..180.0)), alloc in proptest::option::of("[a-zA-Z0-9 /:_-]{1,20}"),
            id in "[a-zA-Z0-9 /:_.-]{1,30}",
        ) {
            use ShipmentStatus::*;
            let mut s = shipment([Planned, PickedUp, InTransit, Arrived, Delivered, Exception][status]);
            s.quantity_kg = qty;
            s.event_time = t;
            s.event_id = id.clone();
            s.shipment_id = id;
            (s.lat, s.lon) = (pos.map(|p| p.0), pos.map(|p| p.1));
            s.allocation_id = alloc;
            let e = object_event(&s);
            prop_assert_eq!(problems(&e), Vec::<String>::new());
        }
    }
}
