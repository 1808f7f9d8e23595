//! The one exactly-once loop: read input topics read_committed, hand each
//! message to a role's `Transform`, and write one round's records plus the
//! round's input offsets in one Kafka transaction (`send_offsets_to_transaction`
//! with the group's metadata, so a fenced or rebalanced-away instance cannot
//! commit). The matcher, the fanout and the transaction-floor benchmark run
//! on it; a role brings only its transform, which unit tests drive without
//! Kafka.
//!
//! Two threads, because rdkafka's transaction calls block: the loop's thread
//! polls and transforms; a commit thread turns a sealed round into a
//! transaction. While round N commits, round N+1 is read and transformed; a
//! round is handed over only once N's outcome is known, and a revocation
//! waits for the round in flight before the partitions move.
//!
//! Errors are classed once, here, after rust-rdkafka's transaction tests:
//! retriable or abortable (abort, rewind the input to the committed offsets,
//! tell the transform to drop what it derived since, which also discards the
//! round being built), fatal (stop; a restart fences the old producer and
//! resumes from the last commit). A commit that still times out after its
//! retries has an unknown outcome: it is neither taken as committed nor
//! aborted; the producer is made anew with the same transactional id, whose
//! initialisation makes the broker finish (or abort) what the old one left,
//! and the input is rewound to the offsets the broker then holds. A
//! transform that cannot build a round now (the registry is away) says
//! `Step::Retry`: the round is dropped, the input rewound, and the loop waits
//! a backoff before reading again.
//!
//! Delivery: exactly once for everything the transform writes, given
//! consumers of the outputs read read_committed.

use crate::trace::TraceContext;
use crate::txn;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod commit;

use commit::{Committer, InFlight, Outcome, settle};
pub use commit::{Position, Timings, transact};

/// One partition of one of the loop's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Part {
    /// Index into `Settings::inputs`.
    pub input: usize,
    pub partition: i32,
}

/// One record a transform writes. (The loop remembers which input partition
/// caused it, so a revocation drops it.)
pub struct Record {
    /// Index into `Settings::outputs`.
    pub output: usize,
    pub key: Arc<str>,
    pub payload: Vec<u8>,
    pub trace: TraceContext,
}

impl Record {
    /// `source`'s dead letter (`refusal`, written by `role`) as a record of
    /// the round, to output `output` (the dead-letter topic), keyed by the
    /// source topic as the contract keys the DLQ. Logged as it is made.
    pub fn dead_letter(
        codec: &orelink_codec::Codec,
        rt: &tokio::runtime::Handle,
        source: &orelink_codec::SourceRef<'_>,
        refusal: &orelink_codec::Refusal,
        role: &str,
        output: usize,
        trace: TraceContext,
    ) -> Result<Record, Step> {
        let letter = orelink_codec::Codec::dead_letter(source, refusal, crate::dlq::now_millis(), role);
        let payload = rt.block_on(codec.encode(&codec.dlq_topic(), &letter)).map_err(|e| Step::Retry(format!("encoding a dead letter: {e}")))?;
        tracing::warn!(source_topic = source.topic, partition = source.partition, offset = source.offset, class = refusal.class.as_str(), reason = %refusal.reason, "dead-lettered");
        Ok(Record { output, key: Arc::from(source.topic), payload, trace })
    }
}

/// Why a transform could not take a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Step {
    /// Not now (a dependency is away): drop the round, rewind, wait, read again.
    #[error("retry: {0}")]
    Retry(String),
    /// Stop the loop; a restart resumes from the last commit.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// A role's part of the loop. `apply` is called for every input message in
/// order; the hooks keep the transform's derived state equal to "the input
/// up to the committed offsets, plus the round being built".
pub trait Transform {
    /// One input message: append what it causes to `out`. The message is
    /// the consumer's own, not a copy (copying cost the matcher 8 % of its
    /// thread).
    fn apply(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<Record>) -> Result<(), Step>;
    /// These partitions were taken away: forget what was derived from them.
    fn revoked(&mut self, _partitions: &[Part]) {}
    /// A round is handed over to be committed; `offsets` are the next offsets
    /// to read per input partition, so the state is exactly "after these".
    fn sealed(&mut self, _offsets: &BTreeMap<Part, i64>) {}
    /// The round handed over last has committed.
    fn committed(&mut self) {}
    /// Everything since the last commit was rolled back: drop what was derived
    /// from it (the input is read again from the committed offsets).
    fn aborted(&mut self) {}
}

/// Where the loop reads and writes, and how big a round grows.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The topics read, all in the one consumer group (a role with several
    /// inputs, such as one topic per enterprise, reads them in one loop).
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// A round covers up to this many input messages (or four times as many records).
    pub batch_max: usize,
    /// After a round's first message, wait this long for more when nothing is committing.
    pub batch_wait: Duration,
    pub txn_timeout: Duration,
    /// A round whose transaction has not ended after this long is given up
    /// and its producer made anew (see `commit::Committer::abandon`).
    pub stuck_after: Duration,
    /// The wait after a `Step::Retry`.
    pub retry_backoff: Duration,
    /// The role running the loop: its metrics' `role` label, and its commit
    /// thread's name (`<role>-commit`).
    pub role: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TxnLoopError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("fatal: {0}")]
    Fatal(String),
}

/// Why a role that is one exactly-once loop (the fanout, the enterprises'
/// door) stopped: only `Config` is beyond a restart's mending.
#[derive(Debug, thiserror::Error)]
pub enum LoopRoleError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("fatal: {0}")]
    Fatal(String),
}

impl From<TxnLoopError> for LoopRoleError {
    fn from(e: TxnLoopError) -> Self {
        match e {
            TxnLoopError::Kafka(k) => LoopRoleError::Kafka(k),
            TxnLoopError::Fatal(f) => LoopRoleError::Fatal(f),
        }
    }
}

/// What the loop did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnStats {
    pub transactions: u64,
    /// Input messages committed.
    pub events: u64,
    /// Records committed, per output (as `Settings::outputs`).
    pub records: Vec<u64>,
    pub aborts: u64,
}

impl Settings {
    /// The inputs for a metric label: the one topic, or the pattern the
    /// several share (`orelink.ingest.*.v1`), so labels stay few.
    pub fn input_label(&self) -> String {
        match self.inputs.as_slice() {
            [one] => one.clone(),
            many => {
                let first = many.first().map(String::as_str).unwrap_or_default();
                let pre = many.iter().fold(first.len(), |n, t| n.min(first.bytes().zip(t.bytes()).take_while(|(a, b)| a == b).count()));
                let suf = many.iter().fold(first.len() - pre, |n, t| n.min(first.bytes().rev().zip(t.bytes().rev()).take_while(|(a, b)| a == b).count()));
                format!("{}*{}", &first[..pre], &first[first.len() - suf..])
            }
        }
    }
}

/// Tracks revocations for the loop, and makes a revocation wait for the round in flight.
struct Rebalances {
    /// Input topic -> its index in `Settings::inputs`.
    inputs: std::collections::HashMap<String, usize>,
    revoked: Mutex<BTreeSet<Part>>,
    in_flight: InFlight,
    timeout: Duration,
}

/// The loop's consumer context.
pub struct Ctx(Arc<Rebalances>);

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
            r.extend(tpl.elements().iter().filter_map(|e| self.0.inputs.get(e.topic()).map(|&input| Part { input, partition: e.partition() })));
        }
    }
}

pub struct TxnLoop {
    consumer: BaseConsumer<Ctx>,
    /// The consumer's config, to make it anew after a fatal error.
    consumer_config: ClientConfig,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// The producer's config, to make it anew after a commit of unknown outcome.
    producer_config: ClientConfig,
    rebalances: Arc<Rebalances>,
    settings: Settings,
}

impl TxnLoop {
    /// A consumer of `settings.inputs` in its group (offsets committed only by
    /// the transactions) and an initialised transactional producer.
    pub fn new(consumer: &ClientConfig, producer: &ClientConfig, settings: Settings) -> Result<TxnLoop, KafkaError> {
        let inputs = settings.inputs.iter().enumerate().map(|(i, t)| (t.clone(), i)).collect();
        let rebalances = Arc::new(Rebalances { inputs, revoked: Mutex::default(), in_flight: InFlight::default(), timeout: settings.txn_timeout });
        let mut consumer_config = consumer.clone();
        consumer_config.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        let consumer = subscribe(&consumer_config, &rebalances, &settings)?;
        let producer_config = producer.clone();
        let producer: ThreadedProducer<DefaultProducerContext> = producer.create()?;
        producer.init_transactions(settings.txn_timeout)?;
        Ok(TxnLoop { consumer, consumer_config, producer, producer_config, rebalances, settings })
    }

    /// Runs until `cancel`, then commits the round it holds and returns.
    pub fn run<T: Transform>(self, transform: &mut T, cancel: &CancellationToken) -> Result<TxnStats, TxnLoopError> {
        let TxnLoop { mut consumer, consumer_config, producer, producer_config, rebalances, settings } = self;
        let mut stats = TxnStats { records: vec![0; settings.outputs.len()], ..TxnStats::default() };
        let mut committer = Committer::start(producer, producer_config, &settings, rebalances.clone());
        let mut round = Round::new(settings.outputs.len());
        // When the round's first message was read, for the linger of an idle pipeline.
        let mut first_at: Option<Instant> = None;
        let (batch_max, batch_wait) = (settings.batch_max, settings.batch_wait);
        // A rewind needs the group's committed offsets; while the cluster
        // cannot answer (a node lost, its coordinator moving) it waits and
        // asks again, as every infrastructure error is retried, rather than
        // stopping the role.
        let rewind = |transform: &mut T, consumer: &BaseConsumer<Ctx>| {
            transform.aborted();
            let mut backoff = settings.retry_backoff;
            loop {
                match txn::rewind(consumer) {
                    Err(e) if txn::unreachable(&e) && !cancel.is_cancelled() => {
                        tracing::warn!(error = %e, "the committed offsets could not be read to rewind; retrying");
                        wait(cancel, backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    other => return other,
                }
            }
        };
        let result = loop {
            let stopping = cancel.is_cancelled();
            let mut got = false;
            if !stopping && round.records.len() < batch_max * 4 && round.events < batch_max as u64 {
                // Block for input only when there is nothing else to wait for.
                // (Short consumer polls spin: rust-rdkafka polls to the deadline
                // and rounds the last millisecond down to 0; the wait for a
                // commit happens on its channel below instead.)
                let timeout = match first_at {
                    _ if committer.busy() => Duration::ZERO,
                    Some(t) => batch_wait.saturating_sub(t.elapsed()),
                    None => Duration::from_millis(100),
                };
                let polled = consumer.poll(timeout);
                let revoked: Vec<Part> = std::mem::take(&mut *rebalances.revoked.lock().expect("rebalance lock")).into_iter().collect();
                if !revoked.is_empty() {
                    round.drop_partitions(&revoked);
                    transform.revoked(&revoked);
                }
                let polled = polled.map(|r| r.map(|m| (rebalances.inputs.get(m.topic()).map(|&input| Part { input, partition: m.partition() }), m)));
                match polled {
                    // Its partition was revoked in this poll and not given back:
                    // the next owner reads it again. (One given back in the same
                    // poll restarts from the committed offset, and librdkafka
                    // drops what it had fetched before the revocation, so a
                    // message of it is one to process.)
                    Some(Ok((Some(part), m))) if revoked.contains(&part) && !assigned(&consumer, m.topic(), m.partition()) => {}
                    Some(Ok((None, m))) => tracing::warn!(topic = m.topic(), "a message of a topic the loop does not read"),
                    Some(Ok((Some(part), m))) => {
                        round.offsets.insert(part, m.offset() + 1);
                        round.events += 1;
                        let applied = transform.apply(&m, &mut round.records);
                        round.sources.resize(round.records.len(), part);
                        if let Err(step) = applied {
                            // Nothing of this round is committed: finish the round
                            // in flight, then read again from the committed offsets.
                            if let Some(Err(e)) = committer.outcome(None).map(|o| settle(o, transform, &mut stats, &settings)) {
                                break Err(e);
                            }
                            stats.aborts += 1;
                            if let Step::Fatal(f) = step {
                                break Err(TxnLoopError::Fatal(f));
                            }
                            tracing::warn!(error = %step, "a round could not be built; rewinding to the committed offsets");
                            round = Round::new(settings.outputs.len());
                            first_at = None;
                            if let Err(e) = rewind(transform, &consumer) {
                                break Err(e.into());
                            }
                            wait(cancel, settings.retry_backoff);
                            continue;
                        }
                        first_at.get_or_insert_with(Instant::now);
                        got = true;
                    }
                    // librdkafka has given this consumer up for good (a static
                    // member fenced by its own rejoin after its coordinator
                    // was lost is one): the round in flight ends, nothing of
                    // this one is kept, and a new consumer resumes from the
                    // committed offsets.
                    Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                        tracing::warn!(error = %e, "the consumer failed for good; making it anew from the committed offsets");
                        if let Some(Err(e)) = committer.outcome(None).map(|o| settle(o, transform, &mut stats, &settings)) {
                            break Err(e);
                        }
                        let held: Vec<Part> = consumer
                            .assignment()
                            .map(|tpl| tpl.elements().iter().filter_map(|e| rebalances.inputs.get(e.topic()).map(|&input| Part { input, partition: e.partition() })).collect())
                            .unwrap_or_default();
                        transform.revoked(&held);
                        transform.aborted();
                        round = Round::new(settings.outputs.len());
                        first_at = None;
                        match subscribe(&consumer_config, &rebalances, &settings) {
                            Ok(c) => consumer = c,
                            Err(e) => break Err(e.into()),
                        }
                        metrics::counter!("orelink_consumer_remade_total", "role" => settings.role.clone()).increment(1);
                        continue;
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "poll error"),
                    None => {}
                }
            }
            // The round in flight: wait for its outcome while this round is
            // full (backpressure) or the loop is stopping; otherwise briefly
            // when no input came, and not at all when input did.
            let full = round.events >= batch_max as u64 || round.records.len() >= batch_max * 4;
            let wait_for = if full || stopping {
                None
            } else if got {
                Some(Duration::ZERO)
            } else {
                Some(Duration::from_millis(1))
            };
            if let Some(outcome) = committer.outcome(wait_for) {
                match settle(outcome, transform, &mut stats, &settings) {
                    Ok(true) => {}
                    Ok(false) => {
                        round = Round::new(settings.outputs.len());
                        first_at = None;
                        if let Err(e) = rewind(transform, &consumer) {
                            break Err(e.into());
                        }
                        continue;
                    }
                    Err(e) => break Err(e),
                }
            }
            let lingered = first_at.is_some_and(|t| t.elapsed() >= batch_wait);
            if !committer.busy() && !round.is_empty() && (lingered || full || stopping) {
                let Some(group) = consumer.group_metadata() else {
                    // Not in a group (yet, or any more): nothing of this round may be committed.
                    tracing::warn!("no group metadata; the round is read again");
                    round = Round::new(settings.outputs.len());
                    first_at = None;
                    if let Err(e) = rewind(transform, &consumer) {
                        break Err(e.into());
                    }
                    continue;
                };
                transform.sealed(&round.offsets);
                let sealed = std::mem::replace(&mut round, Round::new(settings.outputs.len()));
                if let Err(Outcome::Fatal(f)) = committer.submit(sealed, group) {
                    break Err(TxnLoopError::Fatal(f));
                }
                first_at = None;
            }
            if stopping && !committer.busy() && round.is_empty() {
                break Ok(());
            }
        };
        drop(committer);
        result.map(|()| stats)
    }
}

/// Reads partition `p` of `topic` from offset `from` up to `upto`
/// (exclusive) with `consumer` (a reader's: read_committed, no group
/// joined), handing each message to `f`: how a transform rebuilds what it
/// derived from a partition after an assignment or an abort (a replay).
/// Offsets of aborted records and of transaction markers are never
/// delivered, so the end is also found from the consumer's position. The
/// number of messages read.
pub fn replay_partition(consumer: &BaseConsumer, topic: &str, p: i32, from: i64, upto: i64, mut f: impl FnMut(&BorrowedMessage<'_>)) -> Result<u64, KafkaError> {
    if upto <= from {
        return Ok(0);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    loop {
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                if m.offset() >= upto {
                    break;
                }
                f(&m);
                n += 1;
                if m.offset() + 1 >= upto {
                    break;
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                let pos = consumer.position()?;
                let at = pos.find_partition(topic, p).and_then(|e| if let rdkafka::Offset::Offset(o) = e.offset() { Some(o) } else { None });
                if at.is_some_and(|o| o >= upto) {
                    break;
                }
            }
        }
    }
    Ok(n)
}

/// A consumer of the loop's inputs in its group, its rebalances told to the loop.
fn subscribe(config: &ClientConfig, rebalances: &Arc<Rebalances>, settings: &Settings) -> Result<BaseConsumer<Ctx>, KafkaError> {
    let consumer: BaseConsumer<Ctx> = config.create_with_context(Ctx(rebalances.clone()))?;
    consumer.subscribe(&settings.inputs.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(consumer)
}

/// Whether `partition` of `topic` is assigned to `consumer` now.
fn assigned(consumer: &BaseConsumer<Ctx>, topic: &str, partition: i32) -> bool {
    consumer.assignment().is_ok_and(|tpl| tpl.find_partition(topic, partition).is_some())
}

/// Sleeps `d`, or less if cancelled.
fn wait(cancel: &CancellationToken, d: Duration) {
    let until = Instant::now() + d;
    while !cancel.is_cancelled() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
    }
}

/// One round's effects: what to write and how far the input was read.
struct Round {
    records: Vec<Record>,
    /// The input partition that caused each record.
    sources: Vec<Part>,
    /// Next offset to read, per input partition.
    offsets: BTreeMap<Part, i64>,
    events: u64,
    outputs: usize,
}

impl Round {
    fn new(outputs: usize) -> Round {
        Round { records: Vec::new(), sources: Vec::new(), offsets: BTreeMap::new(), events: 0, outputs }
    }

    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Forgets partitions this instance no longer owns: their offsets must not be committed from here.
    fn drop_partitions(&mut self, lost: &[Part]) {
        let mut sources = self.sources.iter();
        self.records.retain(|_| !sources.next().is_some_and(|s| lost.contains(s)));
        self.sources.retain(|s| !lost.contains(s));
        for p in lost {
            self.offsets.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_partition_leaves_the_round_with_its_records_and_offsets() {
        let part = |input, partition| Part { input, partition };
        let mut round = Round::new(2);
        for (p, o) in [(part(0, 0), 10), (part(0, 1), 20), (part(0, 0), 11), (part(1, 0), 30)] {
            round.offsets.insert(p, o + 1);
            round.events += 1;
            round.records.push(Record { output: (o % 2) as usize, key: Arc::from(format!("{o}")), payload: vec![], trace: TraceContext::root() });
            round.sources.push(p);
        }
        round.drop_partitions(&[part(0, 0)]);
        assert_eq!(round.offsets, BTreeMap::from([(part(0, 1), 21), (part(1, 0), 31)]));
        assert_eq!(round.records.iter().map(|r| &*r.key).collect::<Vec<_>>(), ["20", "30"], "partition 0 of the second input is another partition");
        assert_eq!(round.sources, [part(0, 1), part(1, 0)]);
        round.drop_partitions(&[part(0, 1), part(1, 0)]);
        assert!(round.is_empty() && round.records.is_empty());
    }

    #[test]
    fn several_inputs_are_labelled_by_the_pattern_they_share() {
        let s = |inputs: &[&str]| Settings {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![],
            batch_max: 1,
            batch_wait: Duration::ZERO,
            txn_timeout: Duration::ZERO,
            stuck_after: Duration::ZERO,
            retry_backoff: Duration::ZERO,
            role: "t".into(),
        };
        assert_eq!(s(&["orelink.orders.v1"]).input_label(), "orelink.orders.v1");
        assert_eq!(s(&["orelink.ingest.914501.v1", "orelink.ingest.914502.v1", "orelink.ingest.91.v1"]).input_label(), "orelink.ingest.91*.v1");
        assert_eq!(s(&["a.v1", "a.v1"]).input_label(), "a.v1*");
    }

    #[test]
    fn a_revocation_waits_for_the_round_in_flight() {
        let flight = Arc::new(InFlight::default());
        flight.submitted();
        assert!(!flight.wait_idle(Duration::from_millis(20)), "a round is in flight");
        let f = flight.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            f.finished();
        });
        assert!(flight.wait_idle(Duration::from_secs(5)));
        t.join().unwrap();
    }
}
