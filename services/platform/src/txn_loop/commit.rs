//! The commit side of the exactly-once loop: the commit thread that turns a
//! sealed round into one Kafka transaction (or an abort, or a producer made
//! anew after a commit of unknown outcome), and the one transactional write
//! the edge relay shares (`transact`).

use super::{Part, Rebalances, Record, Round, Settings, Transform, TxnLoopError, TxnStats};
use crate::txn::{self, TxnError, classify};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How a round's transaction ended.
pub(super) enum Outcome {
    Committed { events: u64, records: Vec<u64>, took: Duration },
    /// Aborted (rolled back); the input must be read again from the committed offsets.
    Aborted(String),
    /// The producer is unusable.
    Fatal(String),
}

/// Counts rounds handed over and finished, so a revocation can wait for the
/// round in flight before the partitions move.
#[derive(Default)]
pub(super) struct InFlight {
    counts: Mutex<(u64, u64)>,
    done: Condvar,
}

impl InFlight {
    pub(super) fn submitted(&self) {
        self.counts.lock().expect("in-flight lock").0 += 1;
    }

    pub(super) fn finished(&self) {
        self.counts.lock().expect("in-flight lock").1 += 1;
        self.done.notify_all();
    }

    /// Waits until every round handed over has finished, up to `timeout`.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let guard = self.counts.lock().expect("in-flight lock");
        let (guard, _) = self.done.wait_timeout_while(guard, timeout, |(s, f)| s != f).expect("in-flight lock");
        guard.0 == guard.1
    }
}

/// The commit thread: one sealed round in, one outcome out.
pub(super) struct Committer {
    rounds: SyncSender<(Round, ConsumerGroupMetadata)>,
    outcomes: Receiver<Outcome>,
    rebalances: Arc<Rebalances>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// When the round in flight was handed over (None: none is).
    pending: Option<Instant>,
    /// To make the producer and thread anew when a round never comes back.
    config: ClientConfig,
    settings: Settings,
}


impl Committer {
    pub(super) fn start(producer: ThreadedProducer<DefaultProducerContext>, config: ClientConfig, settings: &Settings, rebalances: Arc<Rebalances>) -> Committer {
        // Capacity 1 each way: a round is handed over only after the previous
        // outcome, so neither side ever blocks on a full channel.
        let (rounds, rx) = sync_channel::<(Round, ConsumerGroupMetadata)>(1);
        let (tx, outcomes) = sync_channel::<Outcome>(1);
        let flight = rebalances.clone();
        let mut writer = Writer { producer, config: config.clone(), inputs: settings.inputs.clone(), outputs: settings.outputs.clone(), timeout: settings.txn_timeout, remade_since_commit: false };
        let thread = std::thread::Builder::new()
            .name(format!("{}-commit", settings.role))
            .spawn(move || {
                for (round, group) in rx {
                    let outcome = writer.transact(round, &group);
                    let fatal = matches!(outcome, Outcome::Fatal(_));
                    if tx.send(outcome).is_err() {
                        break;
                    }
                    flight.in_flight.finished();
                    if fatal {
                        break;
                    }
                }
            })
            .expect("spawning the commit thread");
        Committer { rounds, outcomes, rebalances, thread: Some(thread), pending: None, config, settings: settings.clone() }
    }

    pub(super) fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Gives up a round whose transaction never ended. librdkafka's
    /// `send_offsets_to_transaction` can block past its timeout while it
    /// looks for a group coordinator whose broker was lost
    /// (confluentinc/librdkafka#5456, #5511): the thread is left to it, a new
    /// producer with the same transactional id fences the old one (the
    /// broker aborts what it had open, so nothing of it can commit), and the
    /// round is read again from the committed offsets.
    fn abandon(&mut self) -> Outcome {
        tracing::error!(after_s = self.settings.stuck_after.as_secs(), "a transaction did not end: its producer is fenced by a new one and the round read again");
        metrics::counter!("orelink_transactions_total", "role" => self.settings.role.clone(), "outcome" => "abandoned").increment(1);
        // The old thread's outcome finds no receiver, so it never counts the round finished; this does.
        self.rebalances.in_flight.finished();
        drop(self.thread.take());
        let mut last = None;
        for attempt in 1..=5u32 {
            match self.config.create::<ThreadedProducer<DefaultProducerContext>>().and_then(|p| p.init_transactions(self.settings.txn_timeout).map(|()| p)) {
                Ok(p) => {
                    *self = Committer::start(p, self.config.clone(), &self.settings.clone(), self.rebalances.clone());
                    return Outcome::Aborted("a transaction did not end; its producer was fenced by a new one".into());
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "making the producer anew failed");
                    last = Some(e);
                    std::thread::sleep(self.settings.retry_backoff * attempt);
                }
            }
        }
        Outcome::Fatal(format!("a transaction did not end, and no new producer could be made: {}", last.map(|e| e.to_string()).unwrap_or_default()))
    }

    /// Hands a round over; call only when not busy.
    pub(super) fn submit(&mut self, round: Round, group: ConsumerGroupMetadata) -> Result<(), Outcome> {
        debug_assert!(self.pending.is_none());
        self.rebalances.in_flight.submitted();
        self.rounds.send((round, group)).map_err(|_| Outcome::Fatal("the commit thread is gone".into()))?;
        self.pending = Some(Instant::now());
        Ok(())
    }

    /// The outcome of the round in flight, if it finishes within `wait`
    /// (`None`: block until it has).
    pub(super) fn outcome(&mut self, wait: Option<Duration>) -> Option<Outcome> {
        use std::sync::mpsc::RecvTimeoutError;
        let since = self.pending?;
        let deadline = since + self.settings.stuck_after;
        let left = deadline.saturating_duration_since(Instant::now());
        let got = match self.outcomes.recv_timeout(wait.map_or(left, |d| d.min(left))) {
            Ok(o) => Some(o),
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => Some(self.abandon()),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Outcome::Fatal("the commit thread is gone".into())),
        };
        if got.is_some() {
            self.pending = None;
        }
        got
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the round it is on.
        let (closed, _) = sync_channel(0);
        self.rounds = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counts a finished round and tells the transform: `Ok(true)` committed,
/// `Ok(false)` aborted (the caller rewinds), `Err` fatal.
pub(super) fn settle<T: Transform>(outcome: Outcome, transform: &mut T, stats: &mut TxnStats, settings: &Settings) -> Result<bool, TxnLoopError> {
    let role = settings.role.clone();
    match outcome {
        Outcome::Committed { events, records, took } => {
            stats.transactions += 1;
            stats.events += events;
            metrics::counter!("orelink_transactions_total", "role" => role.clone(), "outcome" => "committed").increment(1);
            metrics::histogram!("orelink_transaction_seconds", "role" => role.clone()).record(took.as_secs_f64());
            crate::metrics::events(&role, &settings.input_label(), "committed", events);
            for ((s, n), topic) in stats.records.iter_mut().zip(records).zip(&settings.outputs) {
                *s += n;
                if n > 0 {
                    metrics::counter!("orelink_records_total", "role" => role.clone(), "topic" => topic.clone()).increment(n);
                }
            }
            transform.committed();
            Ok(true)
        }
        Outcome::Aborted(e) => {
            stats.aborts += 1;
            metrics::counter!("orelink_transactions_total", "role" => role, "outcome" => "aborted").increment(1);
            tracing::warn!(error = %e, "transaction aborted; rewinding to the committed offsets");
            Ok(false)
        }
        Outcome::Fatal(e) => Err(TxnLoopError::Fatal(e)),
    }
}

struct Writer {
    /// Threaded: its own thread serves delivery reports as they arrive, so
    /// waiting for deliveries (`txn::flush`) blocks on a condition. Polling them
    /// here in 1 ms steps spun the CPU: rust-rdkafka's poll runs to its deadline
    /// and rounds the remainder down to 0 ms.
    producer: ThreadedProducer<DefaultProducerContext>,
    config: ClientConfig,
    inputs: Vec<String>,
    outputs: Vec<String>,
    timeout: Duration,
    /// The producer failed for good and was made anew, and nothing has committed since.
    remade_since_commit: bool,
}

impl Writer {
    fn transact(&mut self, round: Round, group: &ConsumerGroupMetadata) -> Outcome {
        let started = Instant::now();
        match self.try_transact(&round, group) {
            Ok(t) => {
                let us = |d: Duration| d.as_micros() as u64;
                tracing::debug!(
                    events = round.events,
                    records = round.records.len(),
                    send_us = us(t.sent - started),
                    offsets_us = us(t.offsets - t.sent),
                    flush_us = us(t.flushed - t.offsets),
                    commit_us = us(t.flushed.elapsed()),
                    "committed"
                );
                let mut records = vec![0; round.outputs];
                for r in &round.records {
                    records[r.output] += 1;
                }
                self.remade_since_commit = false;
                Outcome::Committed { events: round.events, records, took: started.elapsed() }
            }
            Err(Failed { committing, error: e }) => match classify(&e) {
                TxnError::Fatal => self.after_fatal(&e),
                // The commit was sent and its answer never came: whether it
                // committed is unknown, so neither assume it nor abort it.
                TxnError::Retriable if committing => match self.reinit() {
                    Ok(()) => {
                        tracing::warn!(error = %e, "a commit's outcome is unknown: the producer was made anew (the broker settled the transaction); rewinding to the committed offsets");
                        Outcome::Aborted(format!("commit outcome unknown ({e}); producer re-initialised"))
                    }
                    Err(r) => Outcome::Fatal(format!("commit outcome unknown ({e}), and the producer could not be made anew: {r}")),
                },
                TxnError::Retriable | TxnError::Abort => {
                    if let Err(a) = self.producer.abort_transaction(self.timeout) && classify(&a) == TxnError::Fatal {
                        return self.after_fatal(&a);
                    }
                    Outcome::Aborted(e.to_string())
                }
            },
        }
    }

    /// The producer failed for good (librdkafka's fatal errors). When a
    /// broker hangs under a transaction, its coordinator aborts it once
    /// `transaction.timeout.ms` has passed and bumps the producer's epoch;
    /// the client then reports the producer fenced, or the broker refuses
    /// its next step as an invalid transactional state, although no other
    /// instance exists. A new producer (whose initialisation settles whatever
    /// was open) and a rewind recover, as after a commit of unknown outcome.
    /// A second failure before anything commits is fatal: a newer instance
    /// holding the transactional id, or a producer that cannot work here
    /// (its ACLs, its settings), so two instances never fight on.
    fn after_fatal(&mut self, e: &KafkaError) -> Outcome {
        if self.remade_since_commit {
            return Outcome::Fatal(format!("failed for good again before anything committed: {e}"));
        }
        self.remade_since_commit = true;
        let why = if txn::fenced(e) { "fenced (its transaction outlived the transaction timeout, or another instance took its id)" } else { "failed for good" };
        match self.reinit() {
            Ok(()) => {
                tracing::warn!(error = %e, "the producer was {why}: made anew; rewinding to the committed offsets");
                Outcome::Aborted(format!("producer {why} ({e}); re-initialised"))
            }
            Err(r) => Outcome::Fatal(format!("{e}, and the producer could not be made anew: {r}")),
        }
    }

    fn try_transact(&self, round: &Round, group: &ConsumerGroupMetadata) -> Result<Timings, Failed> {
        let position = Position::Offsets { inputs: &self.inputs, offsets: &round.offsets, group };
        transact_steps(&self.producer, &self.outputs, &round.records, position, self.timeout)
    }

    /// A new producer with the same transactional id: its initialisation
    /// fences the old one and has the broker complete or abort the
    /// transaction it left, so the committed offsets are the truth again.
    fn reinit(&mut self) -> Result<(), KafkaError> {
        let producer: ThreadedProducer<DefaultProducerContext> = self.config.create()?;
        producer.init_transactions(self.timeout)?;
        self.producer = producer;
        Ok(())
    }
}

/// A transaction's failure, and whether it came at the commit (the records
/// and offsets all sent, the commit asked for).
struct Failed {
    committing: bool,
    error: KafkaError,
}

/// Where a transaction's input ends, committed with its records.
pub enum Position<'a> {
    /// Consumer offsets (next to read, per input partition), sent to the
    /// transaction with the group's metadata.
    Offsets { inputs: &'a [String], offsets: &'a BTreeMap<Part, i64>, group: &'a ConsumerGroupMetadata },
    /// A record of the source's own progress, for a source that is no
    /// consumer (the edge relay's local queue).
    Progress { topic: &'a str, key: &'a str, value: &'a [u8] },
}

/// When each step of a transaction ended.
pub struct Timings {
    pub sent: Instant,
    pub offsets: Instant,
    pub flushed: Instant,
}

/// One transaction: `records` (to `outputs[record.output]`) and the input's
/// `position`, committed together or not at all. The caller classes an error
/// with `txn::classify` and aborts, or, after a commit that timed out (its
/// outcome unknown), makes its producer anew (the edge relay reconnects).
pub fn transact(
    producer: &ThreadedProducer<DefaultProducerContext>,
    outputs: &[String],
    records: &[Record],
    position: Position<'_>,
    timeout: Duration,
) -> Result<Timings, KafkaError> {
    transact_steps(producer, outputs, records, position, timeout).map_err(|f| f.error)
}

fn transact_steps(
    producer: &ThreadedProducer<DefaultProducerContext>,
    outputs: &[String],
    records: &[Record],
    position: Position<'_>,
    timeout: Duration,
) -> Result<Timings, Failed> {
    let before = |error: KafkaError| Failed { committing: false, error };
    transact_until_commit(producer, outputs, records, position, timeout).map_err(before).and_then(|(sent, offsets, flushed)| {
        txn::commit(producer, timeout).map_err(|error| Failed { committing: true, error })?;
        Ok(Timings { sent, offsets, flushed })
    })
}

/// Everything of a transaction but its commit; returns when each step ended.
fn transact_until_commit(
    producer: &ThreadedProducer<DefaultProducerContext>,
    outputs: &[String],
    records: &[Record],
    position: Position<'_>,
    timeout: Duration,
) -> Result<(Instant, Instant, Instant), KafkaError> {
    producer.begin_transaction()?;
    for r in records {
        let record = BaseRecord::to(&outputs[r.output]).key(&*r.key).payload(r.payload.as_slice()).headers(r.trace.to_headers());
        txn::send_waiting(producer, record)?;
    }
    let sent = Instant::now();
    match position {
        Position::Offsets { inputs, offsets, group } => {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in offsets {
                tpl.add_partition_offset(&inputs[p.input], p.partition, rdkafka::Offset::Offset(*o))?;
            }
            producer.send_offsets_to_transaction(&tpl, group, timeout)?;
        }
        Position::Progress { topic, key, value } => txn::send_waiting(producer, BaseRecord::to(topic).key(key).payload(value))?,
    }
    let offsets = Instant::now();
    // Delivered first (timed apart from the commit, which flushes too).
    txn::flush(producer, timeout)?;
    let flushed = Instant::now();
    Ok((sent, offsets, flushed))
}
