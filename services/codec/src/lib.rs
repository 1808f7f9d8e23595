//! orelink-codec: the one place that turns contract records into Kafka bytes
//! and back, through the schema registry (Confluent wire format: magic byte 0,
//! 4-byte big-endian schema id, Avro binary; subjects `<topic>-value`, or
//! `<topic>-<record>` on a topic that carries several, such as an
//! enterprise's ingest topic: `encode_as` writes those).
//!
//! Decoding resolves the writer's schema (fetched by id, cached) against the
//! hub's own reader schema, so producers on any compatible version are read
//! (a writer schema identical to the hub's is read directly, see `binary`);
//! then the record is validated into domain types. Anything that cannot be
//! decoded or validated comes back as a [`Refusal`] carrying the error class
//! for its dead letter; a registry that cannot be reached is [`DecodeError::Retry`],
//! never a dead letter. Nothing here panics on input.

mod binary;
mod schemas;

pub use schemas::{Schemas, SchemaProblem};

use apache_avro::types::Value;
use orelink_domain::events::{wire, Lookup, Rejection, TransportOffer};
use orelink_domain::topology::topics;
use orelink_domain::*;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use std::sync::Arc;
use std::time::Duration;

/// A decoded, validated record of one of the contract's topics.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Order(OrderEvent),
    Capacity(CapacityEvent),
    Inventory(InventoryEvent),
    Shipment(ShipmentEvent),
    Allocation(wire::Allocation),
    SharedOrder(SharedOrder),
    DeadLetter(wire::DeadLetter),
    /// Internal: written by the matcher only, so checked for shape and plausible values only.
    OrderStatus(wire::OrderStatus),
    TransportOffer(TransportOffer),
    /// Internal: written by the booker only, checked for shape and plausible values.
    Booking(wire::Booking),
    Alert(wire::Alert),
}

/// Why an event cannot be used; it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {reason}", class.as_str())]
pub struct Refusal {
    pub class: ErrorClass,
    pub reason: String,
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        Refusal { class: r.class, reason: r.reason() }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    /// The event itself is bad: dead-letter it and go on.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The registry could not be asked right now: try the same event again later.
    #[error("schema registry unavailable: {0}")]
    Retry(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EncodeError {
    /// The registry refused or could not be reached; `retriable` says whether trying again may help.
    #[error("schema registry: {message}")]
    Registry { message: String, retriable: bool },
    /// The value does not fit the schema: a bug in the hub, never retriable.
    #[error("value does not fit schema {record}: {message}")]
    Schema { record: String, message: String },
    #[error("topic {0} is not declared in the topology or carries no Avro value")]
    UnknownTopic(String),
    /// `encode_as` of a record the topic does not carry (or on a topic of one record).
    #[error("topic {topic} does not carry {record} among several records")]
    NotCarried { topic: String, record: String },
}

impl EncodeError {
    pub fn retriable(&self) -> bool {
        matches!(self, EncodeError::Registry { retriable: true, .. })
    }
}

/// Connection settings for the registry.
pub fn registry_settings(url: &str, timeout: Duration, login: Option<(&str, &str)>) -> Result<SrSettings, EncodeError> {
    let mut b = SrSettings::new_builder(url.trim_end_matches('/').to_owned());
    b.no_proxy().set_timeout(timeout);
    if let Some((user, password)) = login {
        b.set_basic_authorization(user, Some(password));
    }
    b.build()
        .map_err(|e| EncodeError::Registry { message: e.to_string(), retriable: false })
}

/// A resolved reader for one writer schema id: built once, used for every message.
type Reader = apache_avro::reader::datum::GenericDatumReader<'static>;

/// How the bodies of one writer schema id are read.
enum Decoder {
    /// The writer's schema is the hub's own: read straight into the wire struct.
    Direct,
    /// Another version: apache-avro resolves it against the hub's schema.
    Resolve(Reader),
}

/// A body on its way into a wire struct.
enum Body<'a> {
    Direct(&'a [u8]),
    Value(Value),
}

pub struct Codec {
    decoder: AvroDecoder,
    /// Writer id -> how its bodies are read: directly when the writer's schema
    /// is the hub's, else a reader resolving it against the hub's schema (its
    /// schemas leaked for a 'static borrow: one per distinct registry id, which
    /// are few and never change).
    readers: std::sync::RwLock<std::collections::HashMap<u32, (String, Arc<Decoder>)>>,
    encoder: AvroEncoder,
    /// Topic (for its subject `<topic>-value`), or `<topic>-<record>` on a
    /// topic of several -> the registry id of the hub's schema under that
    /// subject, learnt from the first
    /// encode through the converter: later encodes write the body directly,
    /// without the converter or apache-avro's value tree.
    ids: std::sync::RwLock<std::collections::HashMap<String, u32>>,
    schemas: Arc<Schemas>,
    catalog: Arc<Catalog>,
    topology: Arc<Topology>,
    namespace: String,
}

impl Codec {
    /// `namespace` is the prefix every topic name carries in this deployment
    /// (empty for none); records are looked up by the contract name behind it.
    pub fn new(settings: SrSettings, schemas: Arc<Schemas>, catalog: Arc<Catalog>, topology: Arc<Topology>, namespace: &str) -> Self {
        Codec {
            decoder: AvroDecoder::new(settings.clone()),
            readers: Default::default(),
            encoder: AvroEncoder::new(settings),
            ids: Default::default(),
            schemas,
            catalog,
            topology,
            namespace: namespace.to_owned(),
        }
    }

    /// The deployed name of a contract topic.
    pub fn topic(&self, contract: &str) -> String {
        format!("{}{contract}", self.namespace)
    }

    fn reference(&self) -> Lookup<'_> {
        Lookup { catalog: &self.catalog, topology: &self.topology }
    }

    /// The topology's spec of a deployed topic.
    fn spec_of(&self, topic: &str) -> Option<&TopicSpec> {
        let contract = topic.strip_prefix(self.namespace.as_str())?;
        self.topology.topic(contract).filter(|t| t.is_avro())
    }

    /// The one Avro record a topic carries (none for a topic of several: the hub never writes those).
    fn record_of(&self, topic: &str) -> Option<&str> {
        self.spec_of(topic).filter(|t| t.is_single_record()).map(|t| t.value.as_str())
    }

    /// Decodes and validates one value of `topic` (on a topic of several
    /// records, whichever of them its schema id names).
    pub async fn decode(&self, topic: &str, payload: Option<&[u8]>) -> Result<Record, DecodeError> {
        Ok(self.decode_if(topic, payload, |_| true).await?.expect("every record is wanted"))
    }

    /// [`Codec::decode`] of only the records `wanted` (by full name): another
    /// record the topic carries is `None`, told by its schema id alone,
    /// without decoding its body (a reader of one record of several).
    pub async fn decode_if(&self, topic: &str, payload: Option<&[u8]>, wanted: impl Fn(&str) -> bool) -> Result<Option<Record>, DecodeError> {
        let refuse = |class, reason: String| DecodeError::Refused(Refusal { class, reason });
        let spec = self.spec_of(topic).ok_or_else(|| refuse(ErrorClass::WrongRecord, format!("topic {topic} carries no contract record")))?;
        let carries = |record: &str| spec.records().find(|r| *r == record);
        let bytes = payload.ok_or_else(|| refuse(ErrorClass::Undecodable, "the value is empty (tombstone)".into()))?;
        let (id, body) = split_wire(bytes).map_err(|reason| refuse(ErrorClass::Undecodable, reason))?;
        let cached = self.readers.read().expect("reader cache").get(&id).cloned();
        let (record, reader) = match cached {
            Some((writer_record, r)) => match carries(&writer_record) {
                Some(record) => (record, r),
                None => return Err(refuse(ErrorClass::WrongRecord, format!("schema id {id} is {writer_record}, but {topic} carries {}", spec.value))),
            },
            None => self.reader_for(id, topic, spec).await?,
        };
        if !wanted(record) {
            return Ok(None);
        }
        let body = match &*reader {
            Decoder::Direct => Body::Direct(body),
            Decoder::Resolve(reader) => {
                let mut cursor = body;
                let value = reader
                    .read_value(&mut cursor)
                    .map_err(|e| refuse(ErrorClass::Undecodable, format!("Avro body does not decode with schema id {id}: {e}")))?;
                if !cursor.is_empty() {
                    return Err(refuse(ErrorClass::Undecodable, format!("{} bytes left over after the record", cursor.len())));
                }
                Body::Value(value)
            }
        };
        let direct = matches!(body, Body::Direct(_));
        self.to_record(record, body).map(Some).map_err(|r| match r.class {
            ErrorClass::Undecodable if direct => DecodeError::Refused(Refusal { reason: format!("Avro body does not decode with schema id {id}: {}", r.reason), ..r }),
            _ => DecodeError::Refused(r),
        })
    }

    /// Fetches writer schema `id`, checks it is a record `spec` carries, and
    /// caches its reader; returns which record it is.
    async fn reader_for<'s>(&self, id: u32, topic: &str, spec: &'s TopicSpec) -> Result<(&'s str, Arc<Decoder>), DecodeError> {
        let refuse = |class, reason: String| DecodeError::Refused(Refusal { class, reason });
        let writer = match self.decoder.get_schema(id).await {
            Ok(s) => s,
            Err(e) if e.retriable => return Err(DecodeError::Retry(e.to_string())),
            Err(e) => return Err(refuse(ErrorClass::UnknownSchema, format!("schema id {id} could not be fetched: {}", e.error))),
        };
        let writer_name = match &writer.parsed {
            apache_avro::Schema::Record(r) => r.name.fullname(None),
            other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)),
        };
        let Some(record) = spec.records().find(|r| *r == writer_name) else {
            return Err(refuse(ErrorClass::WrongRecord, format!("schema id {id} is {writer_name}, but {topic} carries {}", spec.value)));
        };
        let our_schema = &self.schemas.get(record).expect("topology check ensures every topic record has a schema").parsed;
        if writer.parsed.canonical_form() == our_schema.canonical_form() {
            let direct = Arc::new(Decoder::Direct);
            self.readers.write().expect("reader cache").insert(id, (record.to_owned(), direct.clone()));
            return Ok((record, direct));
        }
        let ours: &'static apache_avro::Schema = Box::leak(Box::new(our_schema.clone()));
        let theirs: &'static apache_avro::Schema = Box::leak(Box::new(writer.parsed.clone()));
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(theirs)
            .reader_schema(ours)
            .build()
            .map_err(|e| refuse(ErrorClass::Undecodable, format!("schema id {id} cannot be read as {record}: {e}")))?;
        let reader = Arc::new(Decoder::Resolve(reader));
        self.readers.write().expect("reader cache").insert(id, (record.to_owned(), reader.clone()));
        Ok((record, reader))
    }

    fn to_record(&self, record: &str, value: Body<'_>) -> Result<Record, Refusal> {
        to_record(record, value, &self.reference())
    }

    /// Encodes a wire record for `topic` with the hub's schema, registering it
    /// under `<topic>-value` if the registry does not have it yet.
    pub async fn encode<T: serde::Serialize>(&self, topic: &str, value: &T) -> Result<Vec<u8>, EncodeError> {
        let record = self.record_of(topic).ok_or_else(|| EncodeError::UnknownTopic(topic.to_owned()))?;
        let strategy = |schema: &schemas::ParsedSchema| SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_owned(), false, SuppliedSchema::new(None, SchemaType::Avro, schema.text.clone()));
        self.encode_under(topic, record, topic, strategy, value).await
    }

    /// Encodes `value` as `record` for `topic`, a topic that carries several
    /// records, each under its own subject `<topic>-<record>` (the registry's
    /// TopicRecordNameStrategy), registering the hub's schema there if the
    /// registry does not have it yet. A topic of one record takes [`Codec::encode`].
    pub async fn encode_as<T: serde::Serialize>(&self, topic: &str, record: &str, value: &T) -> Result<Vec<u8>, EncodeError> {
        let spec = self.spec_of(topic).ok_or_else(|| EncodeError::UnknownTopic(topic.to_owned()))?;
        let record = spec.records().find(|r| *r == record).filter(|_| !spec.is_single_record()).ok_or_else(|| EncodeError::NotCarried { topic: topic.to_owned(), record: record.to_owned() })?;
        let strategy =
            |schema: &schemas::ParsedSchema| SubjectNameStrategy::TopicRecordNameStrategyWithSchema(topic.to_owned(), SuppliedSchema::new(Some(record.to_owned()), SchemaType::Avro, schema.text.clone()));
        self.encode_under(topic, record, &format!("{topic}-{record}"), strategy, value).await
    }

    /// Encodes `value` with the hub's schema of `record`, under the subject
    /// that `strategy` names to the registry (`ids` knows it as `id_key`):
    /// directly once its id is known, else through the registry (which
    /// registers the schema there).
    async fn encode_under<T: serde::Serialize>(
        &self,
        topic: &str,
        record: &str,
        id_key: &str,
        strategy: impl FnOnce(&schemas::ParsedSchema) -> SubjectNameStrategy,
        value: &T,
    ) -> Result<Vec<u8>, EncodeError> {
        let schema = self.schemas.get(record).ok_or_else(|| EncodeError::UnknownTopic(topic.to_owned()))?;
        let known = self.ids.read().expect("ids lock").get(id_key).copied();
        if let Some(id) = known {
            // The hub's schema, registered under this id: the wire struct encodes
            // straight to Avro (`binary`; its tests hold it to apache-avro's bytes).
            let mut out = Vec::with_capacity(256);
            out.push(0);
            out.extend_from_slice(&id.to_be_bytes());
            binary::write(value, &mut out).map_err(|e| EncodeError::Schema { record: record.to_owned(), message: e.to_string() })?;
            return Ok(out);
        }
        // Check the value against our schema first, so a bug reads as a schema error, not a registry one.
        let v = apache_avro::to_value(value)
            .and_then(|v| v.resolve(&schema.parsed))
            .map_err(|e| EncodeError::Schema { record: record.to_owned(), message: e.to_string() })?;
        let strategy = strategy(schema);
        let Value::Record(fields) = v else {
            return Err(EncodeError::Schema { record: record.to_owned(), message: "not a record".into() });
        };
        let fields: Vec<(&str, Value)> = fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let bytes = self.encoder.encode(fields, strategy).await.map_err(|e| EncodeError::Registry { message: e.to_string(), retriable: e.retriable })?;
        if let Ok((id, _)) = split_wire(&bytes) {
            self.ids.write().expect("ids lock").insert(id_key.to_owned(), id);
        }
        Ok(bytes)
    }

    /// The wire form of a dead letter for `topic`'s event, ready for [`Codec::encode`] on the DLQ.
    pub fn dead_letter(
        source: &SourceRef<'_>,
        refusal: &Refusal,
        failed_at: Millis,
        role: &str,
    ) -> wire::DeadLetter {
        wire::DeadLetter {
            source_topic: source.topic.to_owned(),
            source_partition: source.partition,
            source_offset: source.offset,
            key: source.key.map(|k| String::from_utf8_lossy(k).into_owned()),
            value: source.value.map(|v| v.to_vec()),
            error_class: refusal.class,
            reason: refusal.reason.clone(),
            failed_at: failed_at.0,
            role: role.to_owned(),
        }
    }

    /// The deployed name of the dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        self.topic(topics::DLQ)
    }
}

/// Where an event came from, for its dead letter.
#[derive(Debug, Clone, Copy)]
pub struct SourceRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The pure half of decoding, shared by every consumer: an Avro body written
/// with the hub's own schema of `record`, read and validated. No registry, no
/// I/O; never panics, whatever the bytes.
pub fn read_record(record: &str, body: &[u8], reference: &Lookup<'_>) -> Result<Record, Refusal> {
    to_record(record, Body::Direct(body), reference)
}

fn to_record(record: &str, value: Body<'_>, r: &Lookup<'_>) -> Result<Record, Refusal> {
    fn de<T: serde::de::DeserializeOwned>(b: Body<'_>) -> Result<T, Refusal> {
        let undecodable = |reason: String| Refusal { class: ErrorClass::Undecodable, reason };
        match b {
            Body::Value(v) => apache_avro::from_value(&v).map_err(|e| undecodable(e.to_string())),
            Body::Direct(bytes) => binary::read(bytes).map_err(|e| undecodable(e.to_string())),
        }
    }
    Ok(match record {
        "orelink.v1.OrderEvent" => Record::Order(OrderEvent::validate(&de(value)?, r)?),
        "orelink.v1.CapacityEvent" => Record::Capacity(CapacityEvent::validate(&de(value)?, r)?),
        "orelink.v1.InventoryEvent" => Record::Inventory(InventoryEvent::validate(&de(value)?, r)?),
        "orelink.v1.ShipmentEvent" => Record::Shipment(ShipmentEvent::validate(&de(value)?, r)?),
        "orelink.v1.Allocation" => {
            let w: wire::Allocation = de(value)?;
            orelink_domain::events::validate_allocation(&w, r)?;
            Record::Allocation(w)
        }
        "orelink.v1.SharedOrder" => Record::SharedOrder(SharedOrder::validate(&de(value)?, r)?),
        "orelink.v1.DeadLetter" => Record::DeadLetter(de(value)?),
        "orelink.v1.OrderStatus" => {
            let w: wire::OrderStatus = de(value)?;
            orelink_domain::events::validate_order_status(&w, r)?;
            Record::OrderStatus(w)
        }
        "orelink.v1.TransportOffer" => Record::TransportOffer(TransportOffer::validate(&de(value)?, r)?),
        "orelink.v1.Booking" => {
            let w: wire::Booking = de(value)?;
            orelink_domain::events::validate_booking(&w, r)?;
            Record::Booking(w)
        }
        "orelink.v1.Alert" => {
            let w: wire::Alert = de(value)?;
            orelink_domain::events::validate_alert(&w, r)?;
            Record::Alert(w)
        }
        other => return Err(Refusal { class: ErrorClass::WrongRecord, reason: format!("no decoder for {other}") }),
    })
}

/// Encodes a wire record with the hub's own schema, without the registry
/// (the body of Confluent wire format; tests and tools use it).
pub fn write_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    binary::write(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Splits Confluent wire format into schema id and Avro body.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [m, ..] if bytes.len() >= 5 => Err(format!("magic byte is {m}, not 0: not Confluent wire format")),
        _ => Err(format!("{} bytes is too short for Confluent wire format (5-byte header)", bytes.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_header_is_checked() {
        assert_eq!(split_wire(&[0, 0, 0, 1, 2, 9, 9]).unwrap(), (258, &[9u8, 9][..]));
        assert!(split_wire(&[1, 0, 0, 0, 1]).unwrap_err().contains("magic byte"));
        assert!(split_wire(&[0, 0]).unwrap_err().contains("too short"));
        assert!(split_wire(&[]).is_err());
    }

    proptest! {
        #[test]
        fn split_wire_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match split_wire(&bytes) {
                Ok((_, body)) => prop_assert_eq!(body.len() + 5, bytes.len()),
                Err(_) => prop_assert!(bytes.len() < 5 || bytes[0] != 0),
            }
        }
    }
}

#[cfg(test)]
mod poison_tests;
