//! Stage 2: apply each family's events in order, exactly once.
//!
//! Runs on its own thread: rdkafka's transaction calls block. Each poll round
//! becomes one transaction: the allocations the batch caused plus the batch's
//! offsets (`send_offsets_to_transaction` with the group's metadata, so a
//! fenced or rebalanced-away instance cannot commit). Errors are classed as
//! the transactional producer reports them: retriable (try the commit again),
//! abortable (abort, rewind to the committed offsets, rebuild the engines),
//! fatal (stop; a restart resumes from the last commit).

use crate::SOURCE_HEADER;
use orelink_codec::{Codec, DecodeError, Record};
use orelink_domain::freight::Network;
use orelink_domain::matching::{Engine, Input, Output};
use orelink_domain::topology::topics;
use orelink_platform::trace::TraceContext;
use orelink_platform::{Config, Reference};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Why a batch's transaction failed.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error("encoding an allocation: {0}")]
    Encode(#[from] orelink_codec::EncodeError),
    #[error("the consumer has no group metadata (not in a group yet)")]
    NoGroup,
}

impl BatchError {
    fn class(&self) -> TxnError {
        match self {
            BatchError::Kafka(e) => classify(e),
            // The registry was unreachable: abort and try the batch again.
            BatchError::Encode(e) if e.retriable() => TxnError::Abort,
            // An allocation that does not fit its schema is a bug: stop.
            BatchError::Encode(_) => TxnError::Fatal,
            BatchError::NoGroup => TxnError::Abort,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("fatal transaction error: {0}")]
    Fatal(String),
}

pub use orelink_platform::txn::{TxnError, classify};

/// Tracks revocations so the processor drops the books of partitions it lost.
#[derive(Default)]
struct Rebalances {
    revoked: Mutex<BTreeSet<i32>>,
}

struct Ctx(Arc<Rebalances>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut r = self.0.revoked.lock().expect("rebalance lock");
            r.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}

pub struct Processor {
    consumer: BaseConsumer<Ctx>,
    producer: BaseProducer,
    rebalances: Arc<Rebalances>,
    codec: Arc<Codec>,
    network: Arc<Network>,
    rt: tokio::runtime::Handle,
    input_topic: String,
    allocations_topic: String,
    status_topic: String,
    restore_config: rdkafka::ClientConfig,
    engines: BTreeMap<i32, Engine>,
    batch_max: usize,
    batch_wait: Duration,
    txn_timeout: Duration,
}

/// Counts for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessorStats {
    pub transactions: u64,
    pub events: u64,
    pub allocations: u64,
    pub aborts: u64,
}

impl Processor {
    pub fn new(cfg: &Config, codec: Arc<Codec>, reference: &Reference, rt: tokio::runtime::Handle) -> Result<Processor, ProcessorError> {
        let rebalances = Arc::new(Rebalances::default());
        let mut cc = cfg.kafka.consumer_config("matcher", &crate::processor_group(cfg));
        // Offsets are committed by the transactions, never by the consumer.
        cc.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer<Ctx> = cc.create_with_context(Ctx(rebalances.clone()))?;
        let input_topic = codec.topic("orelink.matcher-input.v1");
        consumer.subscribe(&[&input_topic])?;
        let txn_timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
        let producer: BaseProducer = cfg
            .kafka
            .producer_config("matcher")
            .set("transactional.id", format!("{}orelink-matcher-{}", cfg.namespace, cfg.matcher.instance()))
            .set("transaction.timeout.ms", txn_timeout.as_millis().to_string())
            .set("linger.ms", "0")
            // Right after a commit the broker may still be writing markers and answers
            // CONCURRENT_TRANSACTIONS; the default 100 ms backoff would add that to every batch.
            .set("retry.backoff.ms", "5")
            .create()?;
        producer.init_transactions(txn_timeout)?;
        let mut restore_config = cfg.kafka.client_config("matcher-restore");
        restore_config
            .set("group.id", format!("{}orelink-matcher-restore", cfg.namespace))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        Ok(Processor {
            consumer,
            producer,
            rebalances,
            network: Arc::new(Network::new(&reference.topology)),
            allocations_topic: codec.topic(topics::ALLOCATIONS),
            status_topic: codec.topic(topics::ORDER_STATUS),
            codec,
            rt,
            input_topic,
            restore_config,
            engines: BTreeMap::new(),
            batch_max: cfg.matcher.batch_max,
            batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
            txn_timeout,
        })
    }

    /// Runs until `cancel`, then finishes the open batch and returns.
    pub fn run(mut self, cancel: &CancellationToken) -> Result<ProcessorStats, ProcessorError> {
        let mut stats = ProcessorStats::default();
        while !cancel.is_cancelled() {
            let batch = orelink_platform::txn::poll_batch(&self.consumer, self.batch_max, self.batch_wait);
            self.drop_revoked();
            if batch.is_empty() {
                continue;
            }
            let batch = self.still_assigned(batch);
            if batch.is_empty() {
                continue;
            }
            self.restore_missing(&batch)?;
            let started = Instant::now();
            let result = self.transact(&batch, &mut stats);
            tracing::debug!(events = batch.len(), elapsed_us = started.elapsed().as_micros() as u64, "batch");
            match result {
                Ok(()) => {}
                Err(e) => match e.class() {
                    TxnError::Fatal => return Err(ProcessorError::Fatal(e.to_string())),
                    TxnError::Retriable | TxnError::Abort => {
                        stats.aborts += 1;
                        tracing::warn!(error = %e, "transaction aborted; rewinding to the committed offsets");
                        self.abort_and_rewind()?;
                    }
                },
            }
        }
        tracing::info!(?stats, "matcher processor stopped");
        Ok(stats)
    }

    fn drop_revoked(&mut self) {
        let revoked: Vec<i32> = std::mem::take(&mut *self.rebalances.revoked.lock().expect("rebalance lock")).into_iter().collect();
        for p in revoked {
            if self.engines.remove(&p).is_some() {
                tracing::info!(partition = p, "partition revoked; its book is dropped");
            }
        }
    }

    /// Drops messages of partitions revoked while the batch was collected.
    fn still_assigned(&self, batch: Vec<OwnedMessage>) -> Vec<OwnedMessage> {
        let Ok(assignment) = self.consumer.assignment() else { return batch };
        let mine: BTreeSet<i32> = assignment.elements().iter().map(|e| e.partition()).collect();
        batch.into_iter().filter(|m| mine.contains(&m.partition())).collect()
    }

    /// A partition's first message in this assignment is at its committed
    /// offset: replaying everything before it rebuilds its book.
    fn restore_missing(&mut self, batch: &[OwnedMessage]) -> Result<(), ProcessorError> {
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        for m in batch {
            first.entry(m.partition()).or_insert(m.offset());
        }
        for (p, upto) in first {
            if self.engines.contains_key(&p) {
                continue;
            }
            let started = Instant::now();
            let (engine, n) = restore(&self.restore_config, &self.input_topic, p, upto, &self.codec, &self.network, &self.rt)?;
            tracing::info!(partition = p, events = n, upto, elapsed_ms = started.elapsed().as_millis() as u64, "book restored");
            self.engines.insert(p, engine);
        }
        Ok(())
    }

    fn transact(&mut self, batch: &[OwnedMessage], stats: &mut ProcessorStats) -> Result<(), BatchError> {
        self.producer.begin_transaction()?;
        let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut allocations = 0u64;
        for m in batch {
            offsets.insert(m.partition(), m.offset() + 1);
            let Some(input) = decode(&self.codec, &self.rt, m) else { continue };
            let parent = TraceContext::from_headers(m.headers());
            let ctx = parent.map(|p| p.child()).unwrap_or_else(TraceContext::root);
            let span = tracing::info_span!(
                "match",
                partition = m.partition(),
                offset = m.offset(),
                event_id = input.event_id().as_str(),
                trace_id = %ctx.trace_id_hex(),
                span_id = %ctx.span_id_hex(),
                parent_span_id = parent.map(|p| p.span_id_hex()).unwrap_or_default(),
            );
            let _guard = span.enter();
            let engine = self.engines.get_mut(&m.partition()).expect("restored before the transaction");
            for out in engine.apply(&input) {
                match out {
                    Output::Allocation(a) => {
                        let bytes = self.rt.block_on(self.codec.encode(&self.allocations_topic, &a))?;
                        self.send(&self.allocations_topic, input.family(), &bytes, &ctx)?;
                        allocations += 1;
                    }
                    Output::Status(s) => {
                        let bytes = self.rt.block_on(self.codec.encode(&self.status_topic, &s))?;
                        self.send(&self.status_topic, input.family(), &bytes, &ctx)?;
                    }
                    Output::Ignored { reason, .. } => tracing::debug!(reason, "event changed nothing"),
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &offsets {
            tpl.add_partition_offset(&self.input_topic, *p, Offset::Offset(*o))?;
        }
        let applied = Instant::now();
        // Serve the delivery reports first, polling briefly: librdkafka's commit
        // counts unserved reports as outstanding, and rust-rdkafka's flush polls
        // in 100 ms steps, which would add up to 100 ms to every batch.
        self.await_deliveries()?;
        let flushed = Instant::now();
        let cgm = self.consumer.group_metadata().ok_or(BatchError::NoGroup)?;
        self.producer.send_offsets_to_transaction(&tpl, &cgm, self.txn_timeout)?;
        let offsets_sent = Instant::now();
        orelink_platform::txn::commit(&self.producer, self.txn_timeout)?;
        tracing::debug!(flush_us = (flushed - applied).as_micros() as u64, offsets_us = (offsets_sent - flushed).as_micros() as u64, commit_us = offsets_sent.elapsed().as_micros() as u64, allocations, "committed");
        stats.transactions += 1;
        stats.events += batch.len() as u64;
        stats.allocations += allocations;
        Ok(())
    }

    fn await_deliveries(&self) -> Result<(), KafkaError> {
        let deadline = Instant::now() + self.txn_timeout;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    fn send(&self, topic: &str, key: &str, payload: &[u8], trace: &TraceContext) -> Result<(), KafkaError> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload).headers(trace.to_headers());
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// After an abort the engines hold effects that were never committed:
    /// drop them and read again from the committed offsets.
    fn abort_and_rewind(&mut self) -> Result<(), ProcessorError> {
        self.engines.clear();
        orelink_platform::txn::abort_and_rewind(&self.producer, &self.consumer, self.txn_timeout).map_err(|e| match classify(&e) {
            TxnError::Fatal => ProcessorError::Fatal(e.to_string()),
            _ => ProcessorError::Kafka(e),
        })
    }
}

/// The engine input of one matcher-input message; `None` (logged) if it no
/// longer decodes, which only a topology change between runs can cause.
pub fn decode(codec: &Codec, rt: &tokio::runtime::Handle, m: &OwnedMessage) -> Option<Input> {
    let source = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == SOURCE_HEADER).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned()))?;
    let topic = codec.topic(&source);
    let mut attempt = 0u32;
    loop {
        match rt.block_on(codec.decode(&topic, m.payload())) {
            Ok(Record::Order(o)) => return Some(Input::Order(o)),
            Ok(Record::Capacity(c)) => return Some(Input::Capacity(c)),
            Ok(Record::SharedOrder(s)) => return Some(Input::Shared(s)),
            Ok(other) => {
                tracing::error!(?other, "matcher input holds a record the matcher does not take");
                return None;
            }
            Err(DecodeError::Refused(r)) => {
                tracing::error!(partition = m.partition(), offset = m.offset(), reason = %r, "matcher input no longer validates; skipped");
                return None;
            }
            Err(DecodeError::Retry(e)) => {
                // The registry is down: wait, never skip (skipping would change the books).
                attempt += 1;
                tracing::warn!(error = %e, attempt, "registry unavailable while decoding matcher input");
                std::thread::sleep(Duration::from_millis(200 * attempt.min(25) as u64));
            }
        }
    }
}

/// Replays partition `p` of the matcher input from the start up to `upto` (exclusive).
pub fn restore(
    config: &rdkafka::ClientConfig,
    topic: &str,
    p: i32,
    upto: i64,
    codec: &Codec,
    network: &Arc<Network>,
    rt: &tokio::runtime::Handle,
) -> Result<(Engine, u64), ProcessorError> {
    let mut engine = Engine::new(network.clone());
    let consumer: BaseConsumer = config.create()?;
    let (low, _high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
    if low > 0 {
        tracing::error!(partition = p, low, "matcher input was truncated by retention: the book cannot be fully restored");
    }
    if upto <= low {
        return Ok((engine, 0));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    // A replay needs the engine's state, not its records: decisions are dropped unrendered.
    let mut decisions = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                if m.offset() >= upto {
                    break;
                }
                if let Some(input) = decode(codec, rt, &m.detach()) {
                    engine.decide(&input, &mut decisions);
                    decisions.clear();
                }
                n += 1;
                if m.offset() + 1 >= upto {
                    break;
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Nothing more to read: with read_committed, offsets of aborted or control records are skipped.
                let pos = consumer.position()?;
                let at = pos.find_partition(topic, p).and_then(|e| if let Offset::Offset(o) = e.offset() { Some(o) } else { None });
                if at.is_some_and(|o| o >= upto) {
                    break;
                }
            }
        }
    }
    Ok((engine, n))
}
