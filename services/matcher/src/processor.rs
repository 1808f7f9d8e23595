//! Stage 2: apply each family's events in order, exactly once, on the one
//! exactly-once loop (`orelink_platform::txn_loop`): this module is the
//! matcher's transform. Each input message is applied to its partition's
//! engine and rendered into allocations and order statuses; the loop writes
//! them with the round's input offsets in one transaction. A partition's book
//! is restored (newest snapshot, then replay) from the first message of an
//! assignment, which is at the committed offset; after an abort every book is
//! dropped and restored again the same way. Books are snapshotted as a round
//! is sealed and published once it has committed.

use crate::SOURCE_HEADER;
use orelink_platform::consume::source_of;
use orelink_codec::{Codec, DecodeError, Record, Refusal, SourceRef};
use orelink_domain::events::ErrorClass;
use orelink_domain::freight::Network;
use orelink_domain::matching::{Decision, Engine, Input, Output, PREFETCH_AHEAD};
use orelink_domain::topology::topics;
use orelink_platform::telemetry;
use orelink_platform::trace::TraceContext;
use orelink_platform::txn_loop::{self, Part, Step, Transform, TxnLoop, TxnLoopError};
use orelink_platform::{Config, Reference};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("fatal transaction error: {0}")]
    Fatal(String),
}

impl From<TxnLoopError> for ProcessorError {
    fn from(e: TxnLoopError) -> Self {
        match e {
            TxnLoopError::Kafka(k) => ProcessorError::Kafka(k),
            TxnLoopError::Fatal(f) => ProcessorError::Fatal(f),
        }
    }
}

/// The loop's outputs, in this order.
const ALLOCATIONS: usize = 0;
const STATUSES: usize = 1;
const DEAD_LETTERS: usize = 2;

pub struct Processor {
    txn: TxnLoop,
    matching: Matching,
}

/// Counts for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessorStats {
    pub transactions: u64,
    pub events: u64,
    pub allocations: u64,
    /// Input events refused (undecodable, invalid, keyed by another family), dead-lettered.
    pub dead_lettered: u64,
    pub aborts: u64,
    /// Snapshots published.
    pub snapshots: u64,
    /// Books restored, and how many of them started from a snapshot.
    pub restores: u64,
    pub restores_from_snapshot: u64,
    /// Input events replayed by those restores.
    pub replayed: u64,
}

impl ProcessorStats {
    /// Adds another thread's counts.
    pub fn add(&mut self, o: &ProcessorStats) {
        self.transactions += o.transactions;
        self.events += o.events;
        self.allocations += o.allocations;
        self.dead_lettered += o.dead_lettered;
        self.aborts += o.aborts;
        self.snapshots += o.snapshots;
        self.restores += o.restores;
        self.restores_from_snapshot += o.restores_from_snapshot;
        self.replayed += o.replayed;
    }
}

/// The instance name of processor thread `thread`: the instance itself for
/// the first (so one thread keeps the ids a single-threaded matcher had),
/// `<instance>-t<n>` for the others. Each names a transactional id and a
/// static group member, so it must be stable across restarts.
pub fn thread_instance(instance: &str, thread: usize) -> String {
    if thread == 0 { instance.to_owned() } else { format!("{instance}-t{thread}") }
}

impl Processor {
    /// Processor thread `thread` of the role (see [`thread_instance`]).
    pub fn new(cfg: &Config, thread: usize, codec: Arc<Codec>, reference: &Reference, rt: tokio::runtime::Handle) -> Result<Processor, ProcessorError> {
        let instance = thread_instance(&cfg.matcher.instance(), thread);
        let txn_timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
        let input_topic = codec.topic(topics::MARKET);
        let settings = txn_loop::Settings {
            inputs: vec![input_topic.clone()],
            outputs: vec![codec.topic(topics::ALLOCATIONS), codec.topic(topics::ORDER_STATUS), codec.dlq_topic()],
            batch_max: cfg.matcher.batch_max,
            batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
            txn_timeout,
            stuck_after: cfg.kafka.stuck_after(),
            retry_backoff: Duration::from_millis(cfg.consumer.retry_backoff_ms),
            role: "matcher".into(),
        };
        let producer = cfg
            .kafka
            .transactional_config("matcher", &format!("{}orelink-matcher-{instance}", cfg.namespace), txn_timeout);
        let txn = TxnLoop::new(&cfg.kafka.member_config("matcher", &crate::processor_group(cfg), &instance), producer.clone().set("linger.ms", "0"), settings)?;
        let snapshot_topic = codec.topic(topics::MATCHER_SNAPSHOTS);
        let snapshots = match cfg.matcher.snapshot_every {
            0 => None,
            _ => Some(crate::snapshots::Store::new(&cfg.kafka.producer_config("matcher-snapshots"), snapshot_topic.clone())?),
        };
        let matching = Matching {
            network: Arc::new(Network::new(&reference.topology)),
            allocations_topic: codec.topic(topics::ALLOCATIONS),
            status_topic: codec.topic(topics::ORDER_STATUS),
            codec,
            rt,
            input_topic,
            restore_config: cfg.kafka.reader_config("matcher-restore", &format!("{}orelink-matcher-restore", cfg.namespace)),
            engines: BTreeMap::new(),
            decisions: Vec::new(),
            snapshot_topic,
            catalog: reference.catalog.clone(),
            snapshots,
            snapshot_every: cfg.matcher.snapshot_every,
            stats: ProcessorStats::default(),
            since_snapshot: BTreeMap::new(),
            pending_snapshots: Vec::new(),
            txn_timeout,
            dedup_horizon_ms: cfg.matcher.dedup_horizon_ms,
            counters: orelink_platform::metrics::EventCounters::new("matcher"),
        };
        Ok(Processor { txn, matching })
    }

    /// Runs until `cancel`, then commits the round it holds and returns.
    pub fn run(self, cancel: &CancellationToken) -> Result<ProcessorStats, ProcessorError> {
        let Processor { txn, mut matching } = self;
        let result = txn.run(&mut matching, cancel);
        if let Some(store) = &matching.snapshots {
            store.flush(matching.txn_timeout);
        }
        let done = result?;
        let stats = ProcessorStats {
            transactions: done.transactions,
            events: done.events,
            allocations: done.records[ALLOCATIONS],
            dead_lettered: done.records[DEAD_LETTERS],
            aborts: done.aborts,
            ..matching.stats
        };
        tracing::info!(?stats, "matcher processor stopped");
        Ok(stats)
    }
}

/// The matcher's transform: one engine per input partition.
struct Matching {
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
    /// Restores and snapshots (the loop counts the rest).
    stats: ProcessorStats,
    /// Per partition: events applied since its book was last snapshotted (or restored).
    since_snapshot: BTreeMap<i32, u64>,
    /// Snapshots taken when the round in flight was sealed, published once it
    /// has committed: (partition, offset, bytes).
    pending_snapshots: Vec<(i32, i64, Vec<u8>)>,
    txn_timeout: Duration,
    dedup_horizon_ms: i64,
    /// Dead letters by source topic (`orelink_events_total`, as the router counts what it forwards).
    counters: orelink_platform::metrics::EventCounters,
}

impl Transform for Matching {
    /// Applies one input event to its partition's book and adds what it caused.
    fn apply(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<txn_loop::Record>) -> Result<(), Step> {
        let p = m.partition();
        if !self.engines.contains_key(&p) {
            self.restore(p, m.offset()).map_err(|e| match e {
                ProcessorError::Fatal(f) => Step::Fatal(f),
                other => Step::Retry(format!("restoring partition {p}: {other}")),
            })?;
        }
        *self.since_snapshot.entry(p).or_default() += 1;
        let parent = TraceContext::from_headers(m.headers());
        let input = match input_of(&self.codec, &self.rt, m) {
            Ok(input) => input,
            // Refused events change no book (a replay skips them too); they
            // are dead-lettered in this round's transaction, once.
            Err(refusal) => return self.dead_letter(m, &refusal, parent, out),
        };
        // A hop span, at debug level: exported whenever traces are, logged
        // only at debug, and otherwise not made (it cost ~2 µs of the event's
        // time; `docs/benchmarks.md`). Ids are written as hex where they are
        // formatted, with no string of their own.
        let span = tracing::debug_span!(
            "match",
            partition = p,
            offset = m.offset(),
            event_id = input.event_id().as_str(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        );
        let ctx = telemetry::hop(&span, parent);
        span.record("trace_id", tracing::field::display(ctx.trace_id_display())).record("span_id", tracing::field::display(ctx.span_id_display()));
        if let Some(parent) = parent {
            span.record("parent_span_id", tracing::field::display(parent.span_id_display()));
        }
        let _guard = span.enter();
        let engine = self.engines.get_mut(&p).expect("restored above");
        self.decisions.clear();
        let window = engine.window();
        decide(engine, &input, m, &mut self.decisions);
        if engine.window() != window && window.is_some() {
            // Once a horizon: what closed a horizon ago has left the books
            // (the gauges follow when the round is sealed).
            let held = engine.held();
            tracing::info!(partition = p, window = engine.window(), orders = held.orders, capacities = held.capacities, event_ids = held.event_ids, "a new window of the dedup horizon: the books let go of what closed before the last one");
        }
        let key: Arc<str> = Arc::from(input.family());
        let encode_failed = |e: orelink_codec::EncodeError| Step::Retry(format!("encoding an allocation: {e}"));
        for d in &self.decisions {
            let (output, payload) = match engine.render(d, &input) {
                Output::Allocation(a) => (ALLOCATIONS, self.rt.block_on(self.codec.encode(&self.allocations_topic, &a)).map_err(encode_failed)?),
                Output::Status(s) => (STATUSES, self.rt.block_on(self.codec.encode(&self.status_topic, &s)).map_err(encode_failed)?),
                Output::Ignored { reason, .. } => {
                    tracing::debug!(reason, "event changed nothing");
                    continue;
                }
            };
            out.push(txn_loop::Record { output, key: key.clone(), payload, trace: ctx });
        }
        Ok(())
    }

    fn revoked(&mut self, partitions: &[Part]) {
        // One input: a partition number names its book.
        for p in partitions.iter().map(|p| &p.partition) {
            self.since_snapshot.remove(p);
            if self.engines.remove(p).is_some() {
                book_gauges(&self.input_topic, *p, None);
                tracing::info!(partition = p, "partition revoked; its book is dropped");
            }
        }
    }

    /// Snapshots the books of the round's partitions that are due: each book
    /// is exactly the state after the round's last offset; they are published
    /// if the round commits.
    fn sealed(&mut self, offsets: &BTreeMap<Part, i64>) {
        for p in offsets.keys().map(|p| p.partition) {
            if let Some(engine) = self.engines.get(&p) {
                book_gauges(&self.input_topic, p, Some(engine.held()));
            }
        }
        if self.snapshots.is_none() {
            return;
        }
        for (&Part { partition: p, .. }, &offset) in offsets {
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

    fn committed(&mut self) {
        if let Some(store) = &self.snapshots {
            for (p, offset, bytes) in std::mem::take(&mut self.pending_snapshots) {
                store.publish(p, offset, &bytes);
                self.stats.snapshots += 1;
            }
        }
    }

    /// The books hold effects that were never committed: drop them; each is
    /// restored again from the first message read after the rewind.
    fn aborted(&mut self) {
        self.engines.clear();
        self.since_snapshot.clear();
        self.pending_snapshots.clear();
    }
}

impl Matching {
    /// `m`'s dead letter, named by where the event was first written (the
    /// router's headers), added to the round.
    fn dead_letter(&mut self, m: &BorrowedMessage<'_>, refusal: &Refusal, parent: Option<TraceContext>, out: &mut Vec<txn_loop::Record>) -> Result<(), Step> {
        let (topic, partition, offset) = source_of(&self.codec, m).unwrap_or_else(|| (self.input_topic.clone(), m.partition(), m.offset()));
        let source = SourceRef { topic: &topic, partition, offset, key: m.key(), value: m.payload() };
        let trace = parent.map_or_else(TraceContext::root, |p| p.child());
        out.push(txn_loop::Record::dead_letter(&self.codec, &self.rt, &source, refusal, "matcher", DEAD_LETTERS, trace)?);
        self.counters.add(&topic, "dead_lettered", 1);
        Ok(())
    }

    /// A partition's first message in this assignment is at its committed
    /// offset `upto`: the newest snapshot before it plus the input after that
    /// (or the whole input before it) rebuilds its book.
    fn restore(&mut self, p: i32, upto: i64) -> Result<(), ProcessorError> {
        let started = Instant::now();
        let snapshot = if upto > 0 { crate::snapshots::load(&self.restore_config, &self.snapshot_topic, p, upto, &self.network, &self.catalog, self.dedup_horizon_ms) } else { None };
        let start = snapshot.unwrap_or_else(|| (Engine::new(self.network.clone()).with_dedup_horizon(self.dedup_horizon_ms), 0));
        let from = start.1;
        let (engine, n) = replay(&self.restore_config, &self.input_topic, p, start, upto, &self.codec, &self.rt)?;
        tracing::info!(partition = p, snapshot_offset = from, replayed = n, upto, elapsed_ms = started.elapsed().as_millis() as u64, "book restored");
        self.stats.restores += 1;
        self.stats.restores_from_snapshot += u64::from(from > 0);
        self.stats.replayed += n;
        self.since_snapshot.insert(p, n);
        self.engines.insert(p, engine);
        Ok(())
    }
}

/// The engine input of one market message, for a replay: a message the
/// live processor refused (and dead-lettered) is skipped here too.
pub fn decode<M: Message>(codec: &Codec, rt: &tokio::runtime::Handle, m: &M) -> Option<Input> {
    input_of(codec, rt, m).ok()
}

/// The engine input of one market message, or why it is refused: it does
/// not decode or validate as a record of the topic it was first written to
/// (the router's header names it; a door's record is the market's own), or
/// its key (its partition's family) is not its product's family. Waits,
/// never refuses, while the registry is away: a refusal changes the books.
pub fn input_of<M: Message>(codec: &Codec, rt: &tokio::runtime::Handle, m: &M) -> Result<Input, Refusal> {
    let header = |name: &str| m.headers().and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value));
    let topic = codec.topic(&header(SOURCE_HEADER).map_or(std::borrow::Cow::Borrowed(topics::MARKET), String::from_utf8_lossy));
    let mut attempt = 0u32;
    let input = loop {
        match rt.block_on(codec.decode(&topic, m.payload())) {
            Ok(Record::Order(o)) => break Input::Order(o),
            Ok(Record::Capacity(c)) => break Input::Capacity(c),
            Ok(Record::SharedOrder(s)) => break Input::Shared(Box::new(s)),
            // The codec takes only the source topic's record; kept for a topology that changes that.
            Ok(other) => return Err(Refusal { class: ErrorClass::WrongRecord, reason: format!("not an order, capacity or shared order: {other:?}") }),
            Err(DecodeError::Refused(r)) => return Err(r),
            Err(DecodeError::Retry(e)) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "registry unavailable while decoding the market topic");
                std::thread::sleep(Duration::from_millis(200 * attempt.min(25) as u64));
            }
        }
    };
    let key = m.key().unwrap_or_default();
    if key != input.family().as_bytes() {
        let product = match &input {
            Input::Order(o) => o.product.as_str(),
            Input::Capacity(c) => c.product.as_str(),
            Input::Shared(s) => s.product.as_str(),
        };
        return Err(Refusal {
            class: ErrorClass::Invalid,
            reason: format!("keyed {:?}, but its product {product} is of family {} (the contract keys orders, capacity and shared orders by product family)", String::from_utf8_lossy(key), input.family()),
        });
    }
    Ok(input)
}

/// `orelink_matcher_book_entries{topic,partition,kind}`: what partition
/// `p`'s book holds (orders, capacities, waiting shares, event ids), open or
/// closed, which the dedup horizon bounds; zero once the partition is
/// revoked (`None`). Partitions are few, so the label stays low-cardinality.
fn book_gauges(topic: &str, p: i32, held: Option<orelink_domain::matching::Held>) {
    let h = held.unwrap_or_default();
    for (kind, n) in [("orders", h.orders), ("capacities", h.capacities), ("waiting_shares", h.waiting_shares), ("event_ids", h.event_ids)] {
        metrics::gauge!("orelink_matcher_book_entries", "topic" => topic.to_owned(), "partition" => p.to_string(), "kind" => kind).set(n as f64);
    }
}

/// Applies `input`, read from market message `m`, at `m`'s log time
/// (the topic keeps log-append time), which moves the engine's dedup
/// horizon; live and replay both decide through here.
pub fn decide<M: Message>(engine: &mut Engine, input: &Input, m: &M, out: &mut Vec<Decision>) {
    decide_logged(engine, input, m.timestamp().to_millis(), out)
}

/// [`decide`] with the log time already taken from the message (`None`: it had none).
fn decide_logged(engine: &mut Engine, input: &Input, log_ms: Option<i64>, out: &mut Vec<Decision>) {
    match log_ms {
        Some(t) => engine.decide_at(input, t, out),
        None => engine.decide(input, out),
    }
}

/// Replays partition `p` of the market topic from the start up to `upto` (exclusive).
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
    // Once the prefetched queue passes its threshold (64 MiB by default, less
    // than a large snapshot or replay), librdkafka postpones the next fetch
    // by this backoff, 1 s by default: a reader that drains its queue as fast
    // as it can then waits most of that second for nothing.
    config.set("fetch.queue.backoff.ms", "10");
    config
}

/// Replays partition `p` of the market topic into `engine`, which holds
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
        tracing::error!(partition = p, low, from, "the market topic was truncated by retention: the book cannot be fully restored");
    }
    if upto <= low {
        return Ok((engine, 0));
    }
    // A replay needs the engine's state, not its records: decisions are dropped unrendered.
    let mut decisions = Vec::new();
    // Decoded events wait a few deep, so that the engine prefetches what each will look up.
    let mut ahead: VecDeque<(Input, Option<i64>)> = VecDeque::with_capacity(PREFETCH_AHEAD + 1);
    let mut replay = |engine: &mut Engine, ahead: &mut VecDeque<(Input, Option<i64>)>, keep: usize| {
        while ahead.len() > keep {
            let (input, log_ms) = ahead.pop_front().expect("longer than keep");
            decide_logged(engine, &input, log_ms, &mut decisions);
            decisions.clear();
        }
    };
    let n = txn_loop::replay_partition(&consumer, topic, p, low.max(from), upto, |m| {
        if let Some(input) = decode(codec, rt, m) {
            engine.prefetch(&input);
            ahead.push_back((input, m.timestamp().to_millis()));
            replay(&mut engine, &mut ahead, PREFETCH_AHEAD);
        }
    })?;
    replay(&mut engine, &mut ahead, 0);
    Ok((engine, n))
}
