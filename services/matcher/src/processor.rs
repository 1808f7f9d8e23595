//! Stage 2: apply each family's events in order, exactly once.
//!
//! Two threads, because rdkafka's transaction calls block: this one polls the
//! matcher input, decodes, matches and encodes; the commit thread
//! (`committer`) writes one poll round's allocations and statuses plus the
//! round's input offsets in one Kafka transaction (`send_offsets_to_transaction`
//! with the group's metadata, so a fenced or rebalanced-away instance cannot
//! commit). While round N commits, round N+1 is read and matched, so the
//! broker's round trips and the matching overlap; a round is handed over only
//! once N's outcome is known. Errors are classed as the transactional producer
//! reports them: retriable or abortable (abort, rewind to the committed
//! offsets, rebuild the books, which also discards the round being built),
//! fatal (stop; a restart resumes from the last commit).

use crate::SOURCE_HEADER;
use crate::committer::{Committer, InFlight, Out, OutRecord, Outcome, Round, Topics};
use orelink_codec::{Codec, DecodeError, Record};
use orelink_domain::freight::Network;
use orelink_domain::matching::{Decision, Engine, Input, Output, PREFETCH_AHEAD};
use orelink_domain::topology::topics;
use orelink_platform::trace::TraceContext;
use orelink_platform::{Config, Reference};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("fatal transaction error: {0}")]
    Fatal(String),
}

pub use orelink_platform::txn::{TxnError, classify};

/// Tracks revocations so the processor drops the books of partitions it lost,
/// and makes a revocation wait for the round in flight.
struct Rebalances {
    revoked: Mutex<BTreeSet<i32>>,
    in_flight: Arc<InFlight>,
    timeout: Duration,
}

struct Ctx(Arc<Rebalances>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // The round in flight may hold these partitions' offsets: let it
            // finish (commit or abort) before they move.
            if !self.0.in_flight.wait_idle(self.0.timeout) {
                tracing::warn!("a revocation did not see the round in flight finish in time");
            }
            let mut r = self.0.revoked.lock().expect("rebalance lock");
            r.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}

pub struct Processor {
    consumer: BaseConsumer<Ctx>,
    producer: Option<ThreadedProducer<DefaultProducerContext>>,
    rebalances: Arc<Rebalances>,
    codec: Arc<Codec>,
    network: Arc<Network>,
    rt: tokio::runtime::Handle,
    input_topic: String,
    allocations_topic: String,
    status_topic: String,
    restore_config: rdkafka::ClientConfig,
    engines: BTreeMap<i32, Engine>,
    decisions: Vec<Decision>,
    snapshot_topic: String,
    /// A snapshot's grade ranks must agree with it (see `Engine::agrees_with`).
    catalog: Arc<orelink_domain::catalog::Catalog>,
    /// Where snapshots are published; `None` when `matcher.snapshot_every` is 0.
    snapshots: Option<crate::snapshots::Store>,
    snapshot_every: u64,
    stats: ProcessorStats,
    /// Per partition: events applied since its book was last snapshotted (or restored).
    since_snapshot: BTreeMap<i32, u64>,
    /// Snapshots taken when the round in flight was handed over, published
    /// once it has committed: (partition, offset, bytes).
    pending_snapshots: Vec<(i32, i64, Vec<u8>)>,
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
    /// Snapshots published.
    pub snapshots: u64,
    /// Books restored, and how many of them started from a snapshot.
    pub restores: u64,
    pub restores_from_snapshot: u64,
    /// Input events replayed by those restores.
    pub replayed: u64,
}

/// Why a round could not be built.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("encoding an allocation: {0}")]
    Encode(#[from] orelink_codec::EncodeError),
    #[error("{0}")]
    Restore(ProcessorError),
}

impl Processor {
    pub fn new(cfg: &Config, codec: Arc<Codec>, reference: &Reference, rt: tokio::runtime::Handle) -> Result<Processor, ProcessorError> {
        let txn_timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
        let rebalances = Arc::new(Rebalances { revoked: Mutex::default(), in_flight: Arc::default(), timeout: txn_timeout });
        let mut cc = cfg.kafka.consumer_config("matcher", &crate::processor_group(cfg));
        // Offsets are committed by the transactions, never by the consumer.
        cc.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer<Ctx> = cc.create_with_context(Ctx(rebalances.clone()))?;
        let input_topic = codec.topic(topics::MATCHER_INPUT);
        consumer.subscribe(&[&input_topic])?;
        let producer: ThreadedProducer<DefaultProducerContext> = cfg
            .kafka
            .transactional_config("matcher", &format!("{}orelink-matcher-{}", cfg.namespace, cfg.matcher.instance()), txn_timeout)
            .set("linger.ms", "0")
            .create()?;
        producer.init_transactions(txn_timeout)?;
        let restore_config = cfg.kafka.reader_config("matcher-restore", &format!("{}orelink-matcher-restore", cfg.namespace));
        let snapshot_topic = codec.topic(topics::MATCHER_SNAPSHOTS);
        let snapshots = match cfg.matcher.snapshot_every {
            0 => None,
            _ => Some(crate::snapshots::Store::new(&cfg.kafka.producer_config("matcher-snapshots"), snapshot_topic.clone())?),
        };
        Ok(Processor {
            consumer,
            producer: Some(producer),
            rebalances,
            network: Arc::new(Network::new(&reference.topology)),
            allocations_topic: codec.topic(topics::ALLOCATIONS),
            status_topic: codec.topic(topics::ORDER_STATUS),
            codec,
            rt,
            input_topic,
            restore_config,
            engines: BTreeMap::new(),
            decisions: Vec::new(),
            snapshot_topic,
            catalog: reference.catalog.clone(),
            snapshots,
            snapshot_every: cfg.matcher.snapshot_every,
            stats: ProcessorStats::default(),
            since_snapshot: BTreeMap::new(),
            pending_snapshots: Vec::new(),
            batch_max: cfg.matcher.batch_max,
            batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
            txn_timeout,
        })
    }

    /// Runs until `cancel`, then commits the round it holds and returns.
    pub fn run(mut self, cancel: &CancellationToken) -> Result<ProcessorStats, ProcessorError> {
        let topics = Topics { input: self.input_topic.clone(), allocations: self.allocations_topic.clone(), status: self.status_topic.clone() };
        let producer = self.producer.take().expect("the producer is taken once");
        let mut committer = Committer::start(producer, topics, self.txn_timeout, self.rebalances.in_flight.clone());
        let mut round = Round::default();
        // When the round's first event was read, for the linger of an idle pipeline.
        let mut first_at: Option<Instant> = None;
        let result = loop {
            let stopping = cancel.is_cancelled();
            let mut got = false;
            if !stopping && round.records.len() < self.batch_max * 4 && round.events < self.batch_max as u64 {
                // Block for input only when there is nothing else to wait for.
                // (Short consumer polls spin: rust-rdkafka polls to the deadline
                // and rounds the last millisecond down to 0; the wait for a
                // commit happens on its channel below instead.)
                let timeout = match first_at {
                    _ if committer.busy() => Duration::ZERO,
                    Some(t) => self.batch_wait.saturating_sub(t.elapsed()),
                    None => Duration::from_millis(100),
                };
                let polled = self.consumer.poll(timeout).map(|r| r.map(|m| m.detach()));
                let revoked = self.drop_revoked(&mut round);
                match polled {
                    // Read before its partition was revoked: the next owner reads it again.
                    Some(Ok(m)) if revoked.contains(&m.partition()) => {}
                    Some(Ok(m)) => {
                        if let Err(e) = self.prepare(&m, &mut round) {
                            // Nothing of this round is committed: finish the round
                            // in flight, then rebuild from the committed offsets.
                            if let Some(Err(e)) = committer.outcome(None).map(|o| self.settle(o)) {
                                break Err(e);
                            }
                            self.stats.aborts += 1;
                            tracing::warn!(error = %e, "a round could not be built; rewinding to the committed offsets");
                            if let PrepareError::Restore(ProcessorError::Fatal(f)) = e {
                                break Err(ProcessorError::Fatal(f));
                            }
                            round = Round::default();
                            first_at = None;
                            if let Err(e) = self.rewind() {
                                break Err(e);
                            }
                            continue;
                        }
                        first_at.get_or_insert_with(Instant::now);
                        got = true;
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "poll error"),
                    None => {}
                }
            }
            // The round in flight: wait for its outcome while this round is
            // full (backpressure) or the processor is stopping; otherwise
            // briefly when no input came, and not at all when input did.
            let full = round.events >= self.batch_max as u64 || round.records.len() >= self.batch_max * 4;
            let wait = if full || stopping {
                None
            } else if got {
                Some(Duration::ZERO)
            } else {
                Some(Duration::from_millis(1))
            };
            if let Some(outcome) = committer.outcome(wait) {
                match self.settle(outcome) {
                    Ok(true) => {}
                    Ok(false) => {
                        round = Round::default();
                        first_at = None;
                        if let Err(e) = self.rewind() {
                            break Err(e);
                        }
                        continue;
                    }
                    Err(e) => break Err(e),
                }
            }
            let lingered = first_at.is_some_and(|t| t.elapsed() >= self.batch_wait);
            if !committer.busy() && !round.is_empty() && (lingered || full || stopping) {
                let Some(group) = self.consumer.group_metadata() else {
                    // Not in a group (yet, or any more): nothing of this round may be committed.
                    tracing::warn!("no group metadata; the round is read again");
                    round = Round::default();
                    first_at = None;
                    if let Err(e) = self.rewind() {
                        break Err(e);
                    }
                    continue;
                };
                self.take_snapshots(&round);
                if let Err(Outcome::Fatal(f)) = committer.submit(std::mem::take(&mut round), group) {
                    break Err(ProcessorError::Fatal(f));
                }
                first_at = None;
            }
            if stopping && !committer.busy() && round.is_empty() {
                break Ok(());
            }
        };
        drop(committer);
        if let Some(store) = &self.snapshots {
            store.flush(self.txn_timeout);
        }
        let stats = self.stats;
        tracing::info!(?stats, "matcher processor stopped");
        result.map(|()| stats)
    }

    /// Forgets the partitions revoked since the last call (books and the
    /// round's share of them) and returns them.
    fn drop_revoked(&mut self, round: &mut Round) -> Vec<i32> {
        let revoked: Vec<i32> = std::mem::take(&mut *self.rebalances.revoked.lock().expect("rebalance lock")).into_iter().collect();
        if revoked.is_empty() {
            return revoked;
        }
        round.drop_partitions(&revoked);
        for p in &revoked {
            self.since_snapshot.remove(p);
            if self.engines.remove(p).is_some() {
                tracing::info!(partition = p, "partition revoked; its book is dropped");
            }
        }
        revoked
    }

    /// Applies one input event to its partition's book and adds what it
    /// caused to `round`.
    fn prepare(&mut self, m: &OwnedMessage, round: &mut Round) -> Result<(), PrepareError> {
        let p = m.partition();
        if !self.engines.contains_key(&p) {
            // A partition's first message in this assignment is at its committed
            // offset: the newest snapshot before it plus the input after that
            // (or the whole input before it) rebuilds its book.
            let started = Instant::now();
            let upto = m.offset();
            let snapshot = if upto > 0 { crate::snapshots::load(&self.restore_config, &self.snapshot_topic, p, upto, &self.network, &self.catalog) } else { None };
            let start = snapshot.unwrap_or_else(|| (Engine::new(self.network.clone()), 0));
            let from = start.1;
            let (engine, n) = replay(&self.restore_config, &self.input_topic, p, start, upto, &self.codec, &self.rt).map_err(PrepareError::Restore)?;
            tracing::info!(partition = p, snapshot_offset = from, replayed = n, upto, elapsed_ms = started.elapsed().as_millis() as u64, "book restored");
            self.stats.restores += 1;
            self.stats.restores_from_snapshot += u64::from(from > 0);
            self.stats.replayed += n;
            self.since_snapshot.insert(p, n);
            self.engines.insert(p, engine);
        }
        round.offsets.insert(p, m.offset() + 1);
        round.events += 1;
        *self.since_snapshot.entry(p).or_default() += 1;
        let Some(input) = decode(&self.codec, &self.rt, m) else { return Ok(()) };
        let parent = TraceContext::from_headers(m.headers());
        let ctx = parent.map(|p| p.child()).unwrap_or_else(TraceContext::root);
        let span = tracing::info_span!(
            "match",
            partition = p,
            offset = m.offset(),
            event_id = input.event_id().as_str(),
            trace_id = %ctx.trace_id_hex(),
            span_id = %ctx.span_id_hex(),
            parent_span_id = parent.map(|p| p.span_id_hex()).unwrap_or_default(),
        );
        let _guard = span.enter();
        let engine = self.engines.get_mut(&p).expect("restored above");
        self.decisions.clear();
        engine.decide(&input, &mut self.decisions);
        let key: Arc<str> = Arc::from(input.family());
        for d in &self.decisions {
            let (out, payload) = match engine.render(d, &input) {
                Output::Allocation(a) => {
                    round.allocations += 1;
                    (Out::Allocation, self.rt.block_on(self.codec.encode(&self.allocations_topic, &a))?)
                }
                Output::Status(s) => (Out::Status, self.rt.block_on(self.codec.encode(&self.status_topic, &s))?),
                Output::Ignored { reason, .. } => {
                    tracing::debug!(reason, "event changed nothing");
                    continue;
                }
            };
            round.records.push(OutRecord { out, partition: p, key: key.clone(), payload, trace: ctx });
        }
        Ok(())
    }

    /// Snapshots the books of the round's partitions that are due. Called
    /// as the round is handed over, when each book is exactly the state after
    /// the round's last offset; they are published if the round commits.
    fn take_snapshots(&mut self, round: &Round) {
        if self.snapshots.is_none() {
            return;
        }
        for (&p, &offset) in &round.offsets {
            let due = self.since_snapshot.get(&p).is_some_and(|n| crate::snapshots::due(*n, self.snapshot_every, offset));
            if let (true, Some(engine)) = (due, self.engines.get(&p)) {
                let started = Instant::now();
                let bytes = engine.snapshot();
                tracing::debug!(partition = p, offset, bytes = bytes.len(), elapsed_us = started.elapsed().as_micros() as u64, "snapshot taken");
                self.pending_snapshots.push((p, offset, bytes));
                self.since_snapshot.insert(p, 0);
            }
        }
    }

    /// Counts a finished round (`Ok(true)` committed, `Ok(false)` aborted:
    /// rewind; `Err` fatal) and publishes its snapshots if it committed.
    fn settle(&mut self, outcome: Outcome) -> Result<bool, ProcessorError> {
        let snapshots = std::mem::take(&mut self.pending_snapshots);
        let committed = settle(outcome, &mut self.stats)?;
        if committed && let Some(store) = &self.snapshots {
            for (p, offset, bytes) in snapshots {
                store.publish(p, offset, &bytes);
                self.stats.snapshots += 1;
            }
        }
        Ok(committed)
    }

    /// After an abort the books hold effects that were never committed: drop
    /// them and read again from the committed offsets.
    fn rewind(&mut self) -> Result<(), ProcessorError> {
        self.engines.clear();
        self.since_snapshot.clear();
        self.pending_snapshots.clear();
        orelink_platform::txn::rewind(&self.consumer).map_err(ProcessorError::Kafka)
    }
}

/// Counts a finished round: `Ok(true)` committed, `Ok(false)` aborted (rewind), `Err` fatal.
fn settle(outcome: Outcome, stats: &mut ProcessorStats) -> Result<bool, ProcessorError> {
    match outcome {
        Outcome::Committed { events, allocations } => {
            stats.transactions += 1;
            stats.events += events;
            stats.allocations += allocations;
            Ok(true)
        }
        Outcome::Aborted(e) => {
            stats.aborts += 1;
            tracing::warn!(error = %e, "transaction aborted; rewinding to the committed offsets");
            Ok(false)
        }
        Outcome::Fatal(e) => Err(ProcessorError::Fatal(e)),
    }
}

/// The engine input of one matcher-input message; `None` (logged) if it no
/// longer decodes, which only a topology change between runs can cause.
pub fn decode<M: Message>(codec: &Codec, rt: &tokio::runtime::Handle, m: &M) -> Option<Input> {
    let source = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == SOURCE_HEADER).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned()))?;
    let topic = codec.topic(&source);
    let mut attempt = 0u32;
    loop {
        match rt.block_on(codec.decode(&topic, m.payload())) {
            Ok(Record::Order(o)) => return Some(Input::Order(o)),
            Ok(Record::Capacity(c)) => return Some(Input::Capacity(c)),
            Ok(Record::SharedOrder(s)) => return Some(Input::Shared(Box::new(s))),
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
    replay(config, topic, p, (Engine::new(network.clone()), 0), upto, codec, rt)
}

/// `config` for reading one partition end to end (a replay, a snapshot):
/// fetching 16 MiB at a time, not librdkafka's 1 MiB (1M events: 8.9 s ->
/// 5.4-5.7 s in `orelink bench restore`).
pub(crate) fn bulk_reader(config: &rdkafka::ClientConfig) -> rdkafka::ClientConfig {
    let mut config = config.clone();
    config.set("max.partition.fetch.bytes", "16777216").set("fetch.max.bytes", "67108864");
    config
}

/// Replays partition `p` of the matcher input into `engine`, which holds
/// the state after the input before `from`, up to `upto` (exclusive).
pub fn replay(
    config: &rdkafka::ClientConfig,
    topic: &str,
    p: i32,
    (mut engine, from): (Engine, i64),
    upto: i64,
    codec: &Codec,
    rt: &tokio::runtime::Handle,
) -> Result<(Engine, u64), ProcessorError> {
    if upto <= from {
        // Nothing to replay (a new partition, or a snapshot that covers it
        // all): no client to open. A new partition's first event had waited
        // ~150 ms for one, partition after partition, on the matching thread.
        return Ok((engine, 0));
    }
    let consumer: BaseConsumer = bulk_reader(config).create()?;
    let (low, _high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
    if low > from {
        tracing::error!(partition = p, low, from, "matcher input was truncated by retention: the book cannot be fully restored");
    }
    if upto <= low {
        return Ok((engine, 0));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(low.max(from)))?;
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    // A replay needs the engine's state, not its records: decisions are dropped unrendered.
    let mut decisions = Vec::new();
    // Decoded events wait a few deep, so that the engine prefetches what each will look up.
    let mut ahead: VecDeque<Input> = VecDeque::with_capacity(PREFETCH_AHEAD + 1);
    let mut replay = |engine: &mut Engine, ahead: &mut VecDeque<Input>, keep: usize| {
        while ahead.len() > keep {
            let input = ahead.pop_front().expect("longer than keep");
            engine.decide(&input, &mut decisions);
            decisions.clear();
        }
    };
    loop {
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                if m.offset() >= upto {
                    break;
                }
                if let Some(input) = decode(codec, rt, &m.detach()) {
                    engine.prefetch(&input);
                    ahead.push_back(input);
                    replay(&mut engine, &mut ahead, PREFETCH_AHEAD);
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
    replay(&mut engine, &mut ahead, 0);
    Ok((engine, n))
}
