//! The transactional half of the processor, on a thread of its own: it owns
//! the producer and turns one prepared round (records plus input offsets)
//! into one Kafka transaction, while the processor thread already decodes and
//! matches the next round. One round is in flight at a time, so the
//! processor learns the outcome of round N before it hands over round N+1.

use crate::processor::TxnError;
use orelink_platform::trace::TraceContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The two topics the matcher writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    Allocation,
    Status,
}

pub(crate) struct OutRecord {
    pub out: Out,
    /// The input partition whose event caused it (a revocation drops it).
    pub partition: i32,
    pub key: Arc<str>,
    pub payload: Vec<u8>,
    pub trace: TraceContext,
}

/// One poll round's effects: what to write and how far the input was read.
#[derive(Default)]
pub(crate) struct Round {
    pub records: Vec<OutRecord>,
    /// Next offset to read, per input partition.
    pub offsets: BTreeMap<i32, i64>,
    pub events: u64,
    pub allocations: u64,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Forgets partitions this instance no longer owns: their books are gone,
    /// and their offsets must not be committed from here.
    pub fn drop_partitions(&mut self, lost: &[i32]) {
        self.records.retain(|r| !lost.contains(&r.partition));
        for p in lost {
            self.offsets.remove(p);
        }
    }
}

/// How a round's transaction ended.
pub(crate) enum Outcome {
    Committed { events: u64, allocations: u64 },
    /// Aborted (the transaction is rolled back); the input must be read again from the committed offsets.
    Aborted(String),
    /// The producer is unusable.
    Fatal(String),
}

/// Counts rounds handed over and finished, so a revocation can wait for the
/// round in flight before the partitions move.
#[derive(Default)]
pub(crate) struct InFlight {
    counts: Mutex<(u64, u64)>,
    done: Condvar,
}

impl InFlight {
    fn submitted(&self) {
        self.counts.lock().expect("in-flight lock").0 += 1;
    }

    fn finished(&self) {
        self.counts.lock().expect("in-flight lock").1 += 1;
        self.done.notify_all();
    }

    /// Waits until every round handed over has finished, up to `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let guard = self.counts.lock().expect("in-flight lock");
        let (guard, _) = self.done.wait_timeout_while(guard, timeout, |(s, f)| s != f).expect("in-flight lock");
        guard.0 == guard.1
    }
}

pub(crate) struct Committer {
    rounds: SyncSender<(Round, ConsumerGroupMetadata)>,
    outcomes: Receiver<Outcome>,
    in_flight: Arc<InFlight>,
    thread: Option<std::thread::JoinHandle<()>>,
    pending: bool,
}

pub(crate) struct Topics {
    pub input: String,
    pub allocations: String,
    pub status: String,
}

impl Committer {
    pub fn start(producer: ThreadedProducer<DefaultProducerContext>, topics: Topics, timeout: Duration, in_flight: Arc<InFlight>) -> Committer {
        // Capacity 1 each way: the processor hands over a round only after the
        // previous outcome, so neither side ever blocks on a full channel.
        let (rounds, rx) = sync_channel::<(Round, ConsumerGroupMetadata)>(1);
        let (tx, outcomes) = sync_channel::<Outcome>(1);
        let flight = in_flight.clone();
        let thread = std::thread::Builder::new()
            .name("matcher-commit".into())
            .spawn(move || {
                let w = Writer { producer, topics, timeout };
                for (round, group) in rx {
                    let outcome = w.transact(round, &group);
                    let fatal = matches!(outcome, Outcome::Fatal(_));
                    if tx.send(outcome).is_err() {
                        break;
                    }
                    flight.finished();
                    if fatal {
                        break;
                    }
                }
            })
            .expect("spawning the commit thread");
        Committer { rounds, outcomes, in_flight, thread: Some(thread), pending: false }
    }

    pub fn busy(&self) -> bool {
        self.pending
    }

    /// Hands a round over; call only when not busy.
    pub fn submit(&mut self, round: Round, group: ConsumerGroupMetadata) -> Result<(), Outcome> {
        debug_assert!(!self.pending);
        self.in_flight.submitted();
        self.rounds.send((round, group)).map_err(|_| Outcome::Fatal("the commit thread is gone".into()))?;
        self.pending = true;
        Ok(())
    }

    /// The outcome of the round in flight, if it finishes within `wait`
    /// (`None`: block until it has).
    pub fn outcome(&mut self, wait: Option<Duration>) -> Option<Outcome> {
        use std::sync::mpsc::RecvTimeoutError;
        if !self.pending {
            return None;
        }
        let gone = || Outcome::Fatal("the commit thread is gone".into());
        let got = match wait {
            None => Some(self.outcomes.recv().unwrap_or_else(|_| gone())),
            Some(d) => match self.outcomes.recv_timeout(d) {
                Ok(o) => Some(o),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(gone()),
            },
        };
        if got.is_some() {
            self.pending = false;
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

/// When each step of a transaction ended, for the debug log.
struct Timings {
    sent: Instant,
    offsets: Instant,
    flushed: Instant,
}

struct Writer {
    /// Threaded: its own thread serves delivery reports as they arrive, so
    /// waiting for deliveries (`txn::flush`) blocks on a condition. Polling them
    /// here in 1 ms steps spun the CPU: rust-rdkafka's poll runs to its deadline
    /// and rounds the remainder down to 0 ms.
    producer: ThreadedProducer<DefaultProducerContext>,
    topics: Topics,
    timeout: Duration,
}

impl Writer {
    fn transact(&self, round: Round, group: &ConsumerGroupMetadata) -> Outcome {
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
                Outcome::Committed { events: round.events, allocations: round.allocations }
            }
            Err(e) => match crate::processor::classify(&e) {
                TxnError::Fatal => Outcome::Fatal(e.to_string()),
                TxnError::Retriable | TxnError::Abort => {
                    if let Err(a) = self.producer.abort_transaction(self.timeout) && crate::processor::classify(&a) == TxnError::Fatal {
                        return Outcome::Fatal(a.to_string());
                    }
                    Outcome::Aborted(e.to_string())
                }
            },
        }
    }

    fn try_transact(&self, round: &Round, group: &ConsumerGroupMetadata) -> Result<Timings, KafkaError> {
        self.producer.begin_transaction()?;
        for r in &round.records {
            let topic = match r.out {
                Out::Allocation => &self.topics.allocations,
                Out::Status => &self.topics.status,
            };
            let record = BaseRecord::to(topic).key(&*r.key).payload(r.payload.as_slice()).headers(r.trace.to_headers());
            orelink_platform::txn::send_waiting(&self.producer, record)?;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &round.offsets {
            tpl.add_partition_offset(&self.topics.input, *p, rdkafka::Offset::Offset(*o))?;
        }
        let sent = Instant::now();
        self.producer.send_offsets_to_transaction(&tpl, group, self.timeout)?;
        let offsets = Instant::now();
        // Delivered first (timed apart from the commit below, which flushes too).
        orelink_platform::txn::flush(&self.producer, self.timeout)?;
        let flushed = Instant::now();
        orelink_platform::txn::commit(&self.producer, self.timeout)?;
        Ok(Timings { sent, offsets, flushed })
    }
}
