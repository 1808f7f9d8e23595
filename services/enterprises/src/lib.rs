//! orelink-enterprises: the door for enterprises with their own Kafka
//! clients (contract v1.1, "Enterprises with their own Kafka clients").
//! Enterprise `<id>` writes `orelink.ingest.<id>.v1` as principal
//! `enterprise-<id>`; this role forwards each record to its shared topic
//! (orders and capacity to the market topic, inventory and shipments to
//! their own) only when it is the enterprise's
//! own (`orelink_domain::identity`: the same binding as the gateway's keys
//! and the edge relay's site keys), and dead-letters anything else: another
//! enterprise's order is `IDENTITY`, a record that does not decode or
//! validate keeps its class. It also copies every allocation naming a
//! declared enterprise, as buyer or provider, to that enterprise's
//! `orelink.allocations.enterprise.<id>.v1`, the only allocations its
//! principal may read.
//!
//! Delivery: exactly once, on the one exactly-once loop
//! (`orelink_platform::txn_loop`) reading every ingest topic and
//! `orelink.allocations.v1` in one group: each round is one transaction of
//! the forwarded records (re-encoded with the hub's schema of the shared
//! topic and keyed as the contract says, whatever key the enterprise chose),
//! the copies, the dead letters and the consumed offsets. A registry outage
//! drops the round and waits; it never dead-letters.

use orelink_codec::{Codec, DecodeError, Record, Refusal, SourceRef};
use orelink_domain::events::ErrorClass;
use orelink_domain::identity::Claim;
use orelink_domain::topology::{Enterprise, topics};
use orelink_platform::telemetry;
use orelink_platform::trace::TraceContext;
use orelink_platform::txn_loop::{self, LoopRoleError, Step, Transform, TxnLoop};
use orelink_platform::{Config, Reference};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The role's error: the loop's, shared with the other loop roles.
pub type EnterprisesError = LoopRoleError;

#[derive(Debug, Default, Clone, Copy)]
pub struct EnterprisesStats {
    pub transactions: u64,
    /// Ingest records forwarded to the shared topics.
    pub forwarded: u64,
    /// Allocation copies written to enterprises' topics.
    pub copied: u64,
    pub dead_lettered: u64,
    pub aborts: u64,
}

/// Consumer group of the role, per namespace.
pub fn group(cfg: &Config) -> String {
    format!("{}orelink-enterprises", cfg.namespace)
}

/// The loop's fixed outputs; each enterprise's allocations topic follows.
const DLQ: usize = 0;
/// Orders and capacity: the market topic.
const MARKET: usize = 1;
const INVENTORY: usize = 2;
const SHIPMENTS: usize = 3;
const SHARED_OUTPUTS: usize = 4;

/// What one input message causes.
#[derive(Debug, PartialEq)]
enum Effect {
    /// The enterprise's own event, for a shared topic (output, key, the wire record re-encoded there).
    Forward { output: usize, key: String },
    /// An allocation, copied unchanged to these enterprises' topics (outputs).
    Copy(Vec<usize>),
    /// An allocation naming no declared enterprise.
    Nothing,
    Dead(Refusal),
}

/// The role's transform.
pub struct Door {
    codec: Arc<Codec>,
    rt: tokio::runtime::Handle,
    /// Deployed ingest topic -> the enterprise that writes it.
    ingest: HashMap<String, Enterprise>,
    /// Deployed `orelink.allocations.v1`.
    allocations: String,
    /// Enterprise id -> the output index of its allocations topic.
    copies: HashMap<String, usize>,
    outputs: Vec<String>,
}

impl Door {
    /// The transform, the topics it reads and the outputs it writes, in the loop's order.
    pub fn new(codec: Arc<Codec>, reference: &Reference, rt: tokio::runtime::Handle) -> (Door, Vec<String>, Vec<String>) {
        let mut outputs: Vec<String> = [topics::DLQ, topics::MARKET, topics::INVENTORY, topics::SHIPMENTS].iter().map(|t| codec.topic(t)).collect();
        let allocations = codec.topic(topics::ALLOCATIONS);
        let mut inputs = vec![allocations.clone()];
        let mut ingest = HashMap::new();
        let mut copies = HashMap::new();
        for e in &reference.topology.enterprises {
            let topic = codec.topic(&topics::ingest(&e.id));
            inputs.push(topic.clone());
            ingest.insert(topic, e.clone());
            outputs.push(codec.topic(&topics::enterprise_allocations(&e.id)));
            copies.insert(e.id.clone(), outputs.len() - 1);
        }
        (Door { codec, rt, ingest, allocations, copies, outputs: outputs.clone() }, inputs, outputs)
    }

    /// Pure: what a decoded (or refused) message of `topic` causes.
    fn effect(&self, topic: &str, decoded: Result<&Record, Refusal>) -> Effect {
        let record = match decoded {
            Ok(r) => r,
            Err(r) => return Effect::Dead(r),
        };
        if topic == self.allocations {
            let Record::Allocation(a) = record else {
                return Effect::Dead(Refusal { class: ErrorClass::WrongRecord, reason: "not an allocation".into() });
            };
            let mut to: Vec<usize> = [&a.buyer_id, &a.provider_id].iter().filter_map(|id| self.copies.get(id.as_str()).copied()).collect();
            to.dedup();
            return if to.is_empty() { Effect::Nothing } else { Effect::Copy(to) };
        }
        let Some(enterprise) = self.ingest.get(topic) else {
            return Effect::Dead(Refusal { class: ErrorClass::WrongRecord, reason: format!("{topic} is no enterprise's ingest topic") });
        };
        let (claim, output, key) = match record {
            Record::Order(o) => (Claim::order(o), MARKET, o.product.family_str().to_owned()),
            Record::Capacity(c) => (Claim::capacity(c), MARKET, c.product.family_str().to_owned()),
            Record::Inventory(i) => (Claim::inventory(i), INVENTORY, format!("{}/{}", i.site_id, i.product)),
            Record::Shipment(s) => (Claim::shipment(s), SHIPMENTS, s.shipment_id.to_string()),
            other => return Effect::Dead(Refusal { class: ErrorClass::WrongRecord, reason: format!("an ingest topic carries orders, capacity, inventory and shipments, not {other:?}") }),
        };
        match enterprise.speaks_for(claim) {
            Ok(()) => Effect::Forward { output, key },
            Err(reason) => Effect::Dead(Refusal { class: ErrorClass::Identity, reason }),
        }
    }

    /// The record's bytes for the shared topic, with the hub's schema there.
    fn encode(&self, output: usize, record: &Record) -> Result<Vec<u8>, orelink_codec::EncodeError> {
        let topic = &self.outputs[output];
        let codec = &self.codec;
        self.rt.block_on(async {
            match record {
                Record::Order(o) => codec.encode_as(topic, "orelink.v1.OrderEvent", &o.to_wire()).await,
                Record::Capacity(c) => codec.encode_as(topic, "orelink.v1.CapacityEvent", &c.to_wire()).await,
                Record::Inventory(i) => codec.encode(topic, &i.to_wire()).await,
                Record::Shipment(s) => codec.encode(topic, &s.to_wire()).await,
                _ => Err(orelink_codec::EncodeError::UnknownTopic(topic.clone())),
            }
        })
    }
}

impl Transform for Door {
    fn apply(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<txn_loop::Record>) -> Result<(), Step> {
        let span = tracing::debug_span!("enterprise", topic = m.topic(), partition = m.partition(), offset = m.offset());
        let _guard = span.enter();
        let trace = telemetry::hop(&span, TraceContext::from_headers(m.headers()));
        let decoded = match self.rt.block_on(self.codec.decode(m.topic(), m.payload())) {
            Ok(r) => Ok(r),
            Err(DecodeError::Refused(r)) => Err(r),
            // The registry is away: the round waits, nothing is dead-lettered.
            Err(DecodeError::Retry(e)) => return Err(Step::Retry(format!("registry unavailable: {e}"))),
        };
        let refusal = match (self.effect(m.topic(), decoded.as_ref().map_err(Clone::clone)), &decoded) {
            (Effect::Forward { output, key }, Ok(record)) => {
                let payload = self.encode(output, record).map_err(|e| Step::Retry(format!("encoding for {}: {e}", self.outputs[output])))?;
                out.push(txn_loop::Record { output, key: Arc::from(key), payload, trace });
                return Ok(());
            }
            (Effect::Copy(to), _) => {
                // The matcher's bytes, under its key (the family): the same record, readable by its enterprises.
                let key: Arc<str> = Arc::from(String::from_utf8_lossy(m.key().unwrap_or_default()).as_ref());
                for output in to {
                    out.push(txn_loop::Record { output, key: key.clone(), payload: m.payload().unwrap_or_default().to_vec(), trace });
                }
                return Ok(());
            }
            (Effect::Nothing, _) => return Ok(()),
            (Effect::Dead(r), _) => r,
            (Effect::Forward { .. }, Err(r)) => r.clone(),
        };
        let source = SourceRef { topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key(), value: m.payload() };
        out.push(txn_loop::Record::dead_letter(&self.codec, &self.rt, &source, &refusal, "enterprises", DLQ, trace)?);
        Ok(())
    }
}

/// Runs the role until `cancel` (on a thread of its own: transaction calls block).
pub async fn run(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<EnterprisesStats, EnterprisesError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| LoopRoleError::Config(e.to_string()))?;
    let (mut door, inputs, outputs) = Door::new(codec, reference, tokio::runtime::Handle::current());
    let txn_timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
    let settings = txn_loop::Settings {
        inputs,
        outputs,
        batch_max: cfg.matcher.batch_max,
        batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
        txn_timeout,
        stuck_after: cfg.kafka.stuck_after(),
        retry_backoff: Duration::from_millis(cfg.consumer.retry_backoff_ms),
        role: "enterprises".into(),
    };
    let instance = cfg.matcher.instance();
    let mut producer = cfg.kafka.transactional_config("enterprises", &format!("{}orelink-enterprises-{instance}", cfg.namespace), txn_timeout);
    producer.set("linger.ms", "1");
    // A static member: a restarted instance takes its partitions back at once.
    let consumer = cfg.kafka.member_config("enterprises", &group(cfg), &instance);
    let txn = TxnLoop::new(&consumer, &producer, settings)?;
    let done = tokio::task::spawn_blocking(move || txn.run(&mut door, &cancel)).await.map_err(|e| LoopRoleError::Fatal(e.to_string()))??;
    let stats = EnterprisesStats {
        transactions: done.transactions,
        forwarded: done.records[MARKET..SHARED_OUTPUTS].iter().sum(),
        copied: done.records[SHARED_OUTPUTS..].iter().sum(),
        dead_lettered: done.records[DLQ],
        aborts: done.aborts,
    };
    tracing::info!(?stats, "enterprises stopped");
    Ok(stats)
}

#[cfg(test)]
mod tests;
