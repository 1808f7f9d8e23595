//! orelink-fanout: routes every shipment event to the topic of the carrier
//! partner it names (`orelink.shipments.partner.<id>.v1`), so a logistics
//! partner reads its own shipments and only those.
//!
//! Delivery: exactly once. Each poll round is one Kafka transaction: the
//! routed records (the original Confluent Avro bytes, keyed by shipment id,
//! so per-shipment order is kept), the dead letters (undecodable events, a
//! carrier that is no partner), and the consumed offsets
//! (`send_offsets_to_transaction`). Retriable errors retry the call, abortable
//! ones abort and rewind to the committed offsets, fatal ones stop the role
//! (a restart fences the old producer and resumes). A registry outage aborts
//! and waits; it never dead-letters.

use orelink_codec::{Codec, DecodeError, Record, Refusal, SourceRef};
use orelink_domain::events::ErrorClass;
use orelink_domain::topology::topics;
use orelink_platform::dlq::now_millis;
use orelink_platform::trace::TraceContext;
use orelink_platform::txn::{self, TxnError, classify};
use orelink_platform::{Config, Reference};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer, DefaultProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("fatal: {0}")]
    Fatal(String),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FanoutStats {
    pub transactions: u64,
    pub routed: u64,
    pub dead_lettered: u64,
    pub aborts: u64,
}

/// Consumer group of the role, per namespace.
pub fn group(cfg: &Config) -> String {
    format!("{}orelink-fanout", cfg.namespace)
}

/// Why one batch did not commit.
enum BatchError {
    Kafka(KafkaError),
    /// The registry is away: abort, wait, read again.
    Retry(String),
}

impl From<KafkaError> for BatchError {
    fn from(e: KafkaError) -> Self {
        BatchError::Kafka(e)
    }
}

struct Fanout {
    consumer: BaseConsumer,
    producer: ThreadedProducer<DefaultProducerContext>,
    codec: Arc<Codec>,
    reference: Reference,
    rt: tokio::runtime::Handle,
    input: String,
    namespace: String,
    txn_timeout: Duration,
    batch_max: usize,
}

/// Runs the role until `cancel` (on a thread of its own: transaction calls block).
pub async fn run(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<FanoutStats, FanoutError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| FanoutError::Config(e.to_string()))?;
    let mut cc = cfg.kafka.consumer_config("fanout", &group(cfg));
    // Offsets are committed by the transactions, never by the consumer.
    cc.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = cc.create()?;
    let input = codec.topic(topics::SHIPMENTS);
    consumer.subscribe(&[&input])?;
    let txn_timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
    let producer: ThreadedProducer<DefaultProducerContext> = cfg
        .kafka
        .transactional_config("fanout", &format!("{}orelink-fanout-{}", cfg.namespace, cfg.matcher.instance()), txn_timeout)
        .set("linger.ms", "1")
        .create()?;
    let f = Fanout {
        consumer,
        producer,
        codec,
        reference: reference.clone(),
        rt: tokio::runtime::Handle::current(),
        input,
        namespace: cfg.namespace.clone(),
        txn_timeout,
        batch_max: cfg.matcher.batch_max,
    };
    tokio::task::spawn_blocking(move || f.run(&cancel)).await.map_err(|e| FanoutError::Fatal(e.to_string()))?
}

impl Fanout {
    fn run(self, cancel: &CancellationToken) -> Result<FanoutStats, FanoutError> {
        self.producer.init_transactions(self.txn_timeout)?;
        let mut stats = FanoutStats::default();
        while !cancel.is_cancelled() {
            let batch = txn::poll_batch(&self.consumer, self.batch_max, Duration::from_millis(5));
            if batch.is_empty() {
                continue;
            }
            match self.transact(&batch, &mut stats) {
                Ok(()) => stats.transactions += 1,
                Err(BatchError::Retry(e)) => {
                    tracing::warn!(error = %e, "registry unavailable; the batch waits");
                    self.abort_and_rewind()?;
                    stats.aborts += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(BatchError::Kafka(e)) => match classify(&e) {
                    TxnError::Fatal => return Err(FanoutError::Fatal(e.to_string())),
                    TxnError::Retriable | TxnError::Abort => {
                        tracing::warn!(error = %e, "transaction aborted; rewinding to the committed offsets");
                        self.abort_and_rewind()?;
                        stats.aborts += 1;
                    }
                },
            }
        }
        tracing::info!(?stats, "fanout stopped");
        Ok(stats)
    }

    fn transact(&self, batch: &[OwnedMessage], stats: &mut FanoutStats) -> Result<(), BatchError> {
        self.producer.begin_transaction()?;
        let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let (mut routed, mut dead) = (0, 0);
        for m in batch {
            offsets.insert(m.partition(), m.offset() + 1);
            let trace = TraceContext::from_headers(m.headers()).map(|p| p.child()).unwrap_or_else(TraceContext::root);
            let refusal = match self.rt.block_on(self.codec.decode(&self.input, m.payload())) {
                Ok(Record::Shipment(s)) => match self.reference.topology.partner_by_carrier(s.carrier_id.as_str()) {
                    Some(p) => {
                        let to = format!("{}{}", self.namespace, topics::partner(p.id.as_str()));
                        let key = s.shipment_id.to_string();
                        txn::send_waiting(&self.producer, BaseRecord::to(&to).key(key.as_bytes()).payload(m.payload().unwrap_or_default()).headers(trace.to_headers()))?;
                        routed += 1;
                        continue;
                    }
                    None => Refusal { class: ErrorClass::UnknownReference, reason: format!("carrier {} is not a partner in topology/partners.toml", s.carrier_id) },
                },
                Ok(other) => Refusal { class: ErrorClass::WrongRecord, reason: format!("not a shipment: {other:?}") },
                Err(DecodeError::Refused(r)) => r,
                Err(DecodeError::Retry(e)) => return Err(BatchError::Retry(e.to_string())),
            };
            let source = SourceRef { topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key(), value: m.payload() };
            let letter = Codec::dead_letter(&source, &refusal, now_millis(), "fanout");
            let dlq = self.codec.dlq_topic();
            let bytes = self.rt.block_on(self.codec.encode(&dlq, &letter)).map_err(|e| BatchError::Retry(e.to_string()))?;
            txn::send_waiting(&self.producer, BaseRecord::to(&dlq).key(m.topic().as_bytes()).payload(bytes.as_slice()).headers(trace.to_headers()))?;
            tracing::warn!(offset = m.offset(), class = refusal.class.as_str(), reason = %refusal.reason, "dead-lettered");
            dead += 1;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &offsets {
            tpl.add_partition_offset(&self.input, *p, Offset::Offset(*o))?;
        }
        let Some(cgm) = self.consumer.group_metadata() else {
            return Err(BatchError::Retry("the consumer has no group metadata yet".into()));
        };
        self.producer.send_offsets_to_transaction(&tpl, &cgm, self.txn_timeout)?;
        txn::commit(&self.producer, self.txn_timeout)?;
        stats.routed += routed;
        stats.dead_lettered += dead;
        Ok(())
    }

    /// Aborts the open transaction and reads again from the committed offsets.
    fn abort_and_rewind(&self) -> Result<(), FanoutError> {
        txn::abort_and_rewind(&self.producer, &self.consumer, self.txn_timeout).map_err(|e| match classify(&e) {
            TxnError::Fatal => FanoutError::Fatal(e.to_string()),
            _ => FanoutError::Kafka(e),
        })
    }
}
