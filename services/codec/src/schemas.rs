//! The contract's Avro schemas, as shipped in `schemas/` and embedded here.

use apache_avro::Schema;
use std::collections::{BTreeMap, BTreeSet};

pub struct ParsedSchema {
    /// The document as written, registered verbatim so the registry's
    /// canonical form and ids are stable.
    pub text: String,
    pub parsed: Schema,
}

/// Every contract record's schema, by full name (`orelink.v1.OrderEvent`).
pub struct Schemas {
    by_name: BTreeMap<String, ParsedSchema>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("schemas/{file}: {message}")]
pub struct SchemaProblem {
    pub file: String,
    pub message: String,
}

const EMBEDDED: [(&str, &str); 11] = [
    ("OrderEvent.avsc", include_str!("../../../schemas/OrderEvent.avsc")),
    ("CapacityEvent.avsc", include_str!("../../../schemas/CapacityEvent.avsc")),
    ("InventoryEvent.avsc", include_str!("../../../schemas/InventoryEvent.avsc")),
    ("ShipmentEvent.avsc", include_str!("../../../schemas/ShipmentEvent.avsc")),
    ("Allocation.avsc", include_str!("../../../schemas/Allocation.avsc")),
    ("SharedOrder.avsc", include_str!("../../../schemas/SharedOrder.avsc")),
    ("DeadLetter.avsc", include_str!("../../../schemas/DeadLetter.avsc")),
    ("OrderStatus.avsc", include_str!("../../../schemas/OrderStatus.avsc")),
    ("TransportOffer.avsc", include_str!("../../../schemas/TransportOffer.avsc")),
    ("Booking.avsc", include_str!("../../../schemas/Booking.avsc")),
    ("Alert.avsc", include_str!("../../../schemas/Alert.avsc")),
];

impl Schemas {
    pub fn embedded() -> Schemas {
        Self::parse(EMBEDDED.iter().map(|(f, t)| (f.to_string(), t.to_string())))
            .expect("embedded schemas are checked by tests")
    }

    /// Parses `(file name, text)` pairs; every problem is reported. A file must hold
    /// one record in namespace `orelink.v1` named after the file.
    pub fn parse(files: impl IntoIterator<Item = (String, String)>) -> Result<Schemas, Vec<SchemaProblem>> {
        let mut problems = Vec::new();
        let mut by_name = BTreeMap::new();
        for (file, text) in files {
            let problem = |m: String| SchemaProblem { file: file.clone(), message: m };
            match Schema::parse_str(&text) {
                Ok(Schema::Record(r)) => {
                    let full = r.name.fullname(None);
                    let stem = file.trim_end_matches(".avsc");
                    if r.name.namespace() != Some("orelink.v1") {
                        problems.push(problem(format!("record {full} must be in namespace orelink.v1")));
                    } else if r.name.name() != stem {
                        problems.push(problem(format!("record {full} must be in a file named {}.avsc", r.name.name())));
                    } else {
                        by_name.insert(full, ParsedSchema { parsed: Schema::Record(r), text });
                    }
                }
                Ok(_) => problems.push(problem("top level is not a record".into())),
                Err(e) => problems.push(problem(e.to_string())),
            }
        }
        if problems.is_empty() { Ok(Schemas { by_name }) } else { Err(problems) }
    }

    pub fn get(&self, full_name: &str) -> Option<&ParsedSchema> {
        self.by_name.get(full_name)
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParsedSchema)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(deprecated)] // the one-shot datum helpers read most plainly in a test
    use super::*;
    use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value};
    use orelink_domain::events::*;
    use orelink_domain::{Catalog, Topology};

    #[test]
    fn embedded_schemas_cover_every_topic_of_the_topology() {
        let s = Schemas::embedded();
        let problems = Topology::embedded().check(&Catalog::embedded(), &s.names());
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn misplaced_records_are_reported_all_at_once() {
        let errs = Schemas::parse([
            ("A.avsc".to_string(), r#"{"type":"record","name":"B","namespace":"orelink.v1","fields":[]}"#.to_string()),
            ("C.avsc".to_string(), r#"{"type":"record","name":"C","namespace":"other","fields":[]}"#.to_string()),
            ("D.avsc".to_string(), "{not json".to_string()),
        ])
        .err()
        .unwrap();
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    /// Avro binary round trip of every wire struct through its schema (no registry involved).
    #[test]
    fn wire_structs_fit_their_schemas() {
        let s = Schemas::embedded();
        let order = wire::OrderEvent {
            event_id: "e".into(),
            event_time: 1_795_000_000_000,
            order_id: "o".into(),
            kind: OrderKind::Amended,
            cluster: "baise".into(),
            buyer_id: "b".into(),
            product_code: "AL-INGOT-AL99.70".into(),
            quantity_kg: 1,
            deliver_by: 1_795_000_000_001,
            destination_site: "baise-pingguo-smelter".into(),
            max_price_cny_per_t: 2,
            allow_cross_cluster: false,
        };
        round_trip(&s, "orelink.v1.OrderEvent", &order);
        let dl = wire::DeadLetter {
            source_topic: "t".into(),
            source_partition: 1,
            source_offset: 2,
            key: None,
            value: Some(vec![0, 255, 7]),
            error_class: ErrorClass::UnknownSchema,
            reason: "r".into(),
            failed_at: 3,
            role: "matcher".into(),
        };
        round_trip(&s, "orelink.v1.DeadLetter", &dl);
        let ship = wire::ShipmentEvent {
            event_id: "e".into(),
            event_time: 1,
            shipment_id: "s".into(),
            allocation_id: Some("a".into()),
            carrier_id: "c".into(),
            mode: orelink_domain::TransportMode::River,
            status: ShipmentStatus::InTransit,
            from_site: "x".into(),
            to_site: "y".into(),
            quantity_kg: 5,
            lat: Some(23.1),
            lon: Some(108.2),
            eta: None,
        };
        round_trip(&s, "orelink.v1.ShipmentEvent", &ship);
    }

    fn round_trip<T>(s: &Schemas, name: &str, v: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let schema = &s.get(name).unwrap().parsed;
        let value = to_value(v).unwrap().resolve(schema).unwrap();
        let bytes = to_avro_datum(schema, value).unwrap();
        let back = from_avro_datum(schema, &mut &bytes[..], None).unwrap();
        assert_eq!(&from_value::<T>(&back).unwrap(), v);
    }
}
