//! orelink-share: the role that shares unfilled order remainders across
//! clusters (contract rule 5) and withdraws them when the order closes.
//!
//! It reads the matcher's `orelink.order-status.v1` (read_committed), asks the
//! pure [`Sharing::decide`] what the order's policy (`topology/sharing.toml`)
//! says, and publishes redacted `SharedOrder` records on
//! `orelink.shared-orders.v1`, which the matcher's router feeds back into the
//! family's book: the order then sees capacity in the target clusters (home
//! capacity still ranks first).
//!
//! Delivery: at least once. A status's offset is stored only once what it
//! caused is acknowledged by Kafka, or, for a delayed share, once the share
//! is published or made moot by the order closing. Shares carry
//! deterministic `event_id`s, so one published twice (after a restart) is
//! ignored by the matcher. Delayed shares are timed on event time or the wall
//! clock, whichever is ahead, so a simulated or replayed stream shares as its
//! own clock says while a quiet live stream still shares on time. A delayed
//! share holds its status's offset: at most the consume loop's in-flight
//! window of them wait at once (backpressure), and on shutdown they are
//! abandoned unstored, to be read and scheduled again by the next run.

use orelink_codec::{Codec, Record};
use orelink_domain::catalog::family_of;
use orelink_domain::events::{OrderState, wire};
use orelink_domain::sharing::{Decision, Sharing};
use orelink_domain::topology::topics;
use orelink_platform::consume::{Backoff, ConsumeLoop, Done, HandleError, Handler, Inbound, LoopStats, loop_consumer};
use orelink_platform::dlq::{DeadLetters, now_millis};
use orelink_platform::trace::TraceContext;
use orelink_platform::{Config, Reference};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("codec: {0}")]
    Codec(String),
    #[error("{0}")]
    Loop(String),
}

/// What the role did, returned when it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShareStats {
    pub statuses: LoopStats,
    pub shared: u64,
    pub withdrawn: u64,
}

/// Consumer group of the role, per namespace.
pub fn group(cfg: &Config) -> String {
    format!("{}orelink-share", cfg.namespace)
}

/// Runs the role until `cancel`; returns once in-flight publications are acknowledged and offsets committed.
pub async fn run(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<ShareStats, ShareError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| ShareError::Codec(e.to_string()))?;
    let producer: FutureProducer = cfg.kafka.producer_config("share").set("linger.ms", "5").create()?;
    let status_topic = codec.topic(topics::ORDER_STATUS);
    // A static member: a restarted instance takes its partitions back at once.
    let consumer = loop_consumer(&cfg.kafka.member_config("share", &group(cfg), &cfg.matcher.instance()), &[&status_topic], None)?;
    let dead = DeadLetters::new(producer.clone(), codec.clone(), "share");
    let backoff = Backoff { initial: Duration::from_millis(cfg.consumer.retry_backoff_ms), max: Duration::from_millis(cfg.consumer.retry_backoff_max_ms) };
    let publisher = Publisher { producer: producer.clone(), codec: codec.clone(), topic: codec.topic(topics::SHARED_ORDERS) };
    let timers = Arc::new(Timers::default());
    let mut handler = ShareHandler {
        sharing: reference.topology.sharing.clone(),
        clusters: reference.topology.clusters.iter().map(|c| c.id.to_string()).collect(),
        publisher: publisher.clone(),
        timers: timers.clone(),
        recent: Recent::new(100_000),
        counts: Counts::default(),
    };
    let timer_task = tokio::spawn(fire_due(timers.clone(), publisher, cancel.clone()));
    let statuses = ConsumeLoop::new(consumer, codec, dead, backoff).run(&mut handler, cancel.clone()).await;
    cancel.cancel();
    let fired = timer_task.await.unwrap_or_default();
    let _ = producer.flush(Duration::from_secs(10));
    let statuses = statuses.map_err(|e| ShareError::Loop(e.to_string()))?;
    let stats = ShareStats { statuses, shared: handler.counts.shared + fired, withdrawn: handler.counts.withdrawn };
    tracing::info!(?stats, "share role stopped");
    Ok(stats)
}

#[derive(Default)]
struct Counts {
    shared: u64,
    withdrawn: u64,
}

/// Publishes shared-order records (Avro, keyed by family) with the status's trace context.
#[derive(Clone)]
struct Publisher {
    producer: FutureProducer,
    codec: Arc<Codec>,
    topic: String,
}

impl Publisher {
    /// Enqueues `record`; the returned future resolves when Kafka has it.
    async fn publish(&self, record: &wire::SharedOrder, trace: &TraceContext) -> Result<impl Future<Output = Result<(), HandleError>> + use<>, HandleError> {
        let bytes = self.codec.encode(&self.topic, record).await.map_err(|e| {
            if e.retriable() { HandleError::Retriable(e.to_string()) } else { HandleError::Fatal(e.to_string()) }
        })?;
        let family = family_of(&record.product_code).to_owned();
        let mut rec = FutureRecord::to(&self.topic).key(&family).payload(&bytes).headers(trace.to_headers());
        let delivery = loop {
            match self.producer.send_result(rec) {
                Ok(d) => break d,
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(HandleError::Retriable(e.to_string())),
            }
        };
        Ok(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(HandleError::Fatal(format!("publishing a shared order failed: {e}"))),
                Err(_) => Err(HandleError::Fatal("the producer went away".into())),
            }
        })
    }
}

/// A delayed share and the statuses whose offsets wait for it.
struct Waiting {
    due: i64,
    share: wire::SharedOrder,
    trace: TraceContext,
    waiters: Vec<oneshot::Sender<Result<(), HandleError>>>,
}

/// Delayed shares, by order and by due time; and the stream's event time.
#[derive(Default)]
struct Timers {
    state: Mutex<TimerState>,
    changed: Notify,
}

#[derive(Default)]
struct TimerState {
    waiting: BTreeMap<String, Waiting>,
    by_due: BTreeSet<(i64, String)>,
    stream_time: i64,
}

impl TimerState {
    fn now(&self) -> i64 {
        self.stream_time.max(now_millis().0)
    }
}

/// Publishes delayed shares as they fall due; on shutdown, abandons the rest.
async fn fire_due(timers: Arc<Timers>, publisher: Publisher, cancel: CancellationToken) -> u64 {
    let mut fired = 0;
    loop {
        let (due_now, sleep_ms) = {
            let mut st = timers.state.lock().expect("timer lock");
            let now = st.now();
            let mut due_now = Vec::new();
            while let Some((due, order)) = st.by_due.first().cloned() {
                if due > now {
                    break;
                }
                st.by_due.pop_first();
                if let Some(w) = st.waiting.remove(&order) {
                    due_now.push(w);
                }
            }
            let next = st.by_due.first().map(|(d, _)| d - now).unwrap_or(1_000);
            (due_now, next.clamp(1, 1_000) as u64)
        };
        for w in due_now {
            let result = match publisher.publish(&w.share, &w.trace).await {
                Ok(delivery) => delivery.await,
                Err(e) => Err(e),
            };
            if result.is_ok() {
                fired += 1;
                tracing::info!(order_id = w.share.order_id, targets = ?w.share.target_clusters, "delayed share published");
            }
            for tx in w.waiters {
                let _ = tx.send(result.clone_err());
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = timers.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
        }
    }
    let mut st = timers.state.lock().expect("timer lock");
    for (_, w) in std::mem::take(&mut st.waiting) {
        for tx in w.waiters {
            let _ = tx.send(Err(HandleError::Abandoned));
        }
    }
    fired
}

trait CloneErr {
    fn clone_err(&self) -> Self;
}

impl CloneErr for Result<(), HandleError> {
    fn clone_err(&self) -> Self {
        match self {
            Ok(()) => Ok(()),
            Err(HandleError::Retriable(e)) => Err(HandleError::Fatal(e.clone())),
            Err(HandleError::Fatal(e)) => Err(HandleError::Fatal(e.clone())),
            Err(HandleError::Abandoned) => Err(HandleError::Abandoned),
        }
    }
}

/// Event ids published lately: a share re-decided from a status that did not
/// yet see the matcher apply it is not published again (the matcher would
/// ignore it anyway). Bounded; forgetting only costs a duplicate.
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Recent {
    fn new(cap: usize) -> Recent {
        Recent { set: HashSet::new(), order: VecDeque::new(), cap }
    }
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
    fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > self.cap && let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

struct ShareHandler {
    sharing: Sharing,
    clusters: Vec<String>,
    publisher: Publisher,
    timers: Arc<Timers>,
    recent: Recent,
    counts: Counts,
}

impl Handler for ShareHandler {
    type Later = orelink_platform::consume::Pending;

    async fn handle(&mut self, ev: Inbound) -> Result<Done, HandleError> {
        let Some(Record::OrderStatus(status)) = ev.record else {
            return Err(HandleError::Fatal(format!("the share role reads order statuses only, got {:?}", ev.record)));
        };
        let decision = self.sharing.decide(&self.clusters, &status);
        let mut wait = None;
        let now = {
            let mut st = self.timers.state.lock().expect("timer lock");
            st.stream_time = st.stream_time.max(status.status_at);
            // A closed order makes its delayed share moot: release whoever waits for it.
            if status.state != OrderState::Open && let Some(w) = st.waiting.remove(&status.order_id) {
                st.by_due.remove(&(w.due, status.order_id.clone()));
                for tx in w.waiters {
                    let _ = tx.send(Ok(()));
                }
            }
            if let Decision::Share { due, share } = &decision {
                if let Some(w) = st.waiting.get_mut(&status.order_id) {
                    // Still waiting: keep the first due time, share the latest remainder.
                    w.share.remaining_kg = share.remaining_kg;
                    let (tx, rx) = oneshot::channel();
                    w.waiters.push(tx);
                    wait = Some(rx);
                } else if *due > st.now() && !self.recent.contains(&share.event_id) {
                    let (tx, rx) = oneshot::channel();
                    st.waiting.insert(status.order_id.clone(), Waiting { due: *due, share: share.clone(), trace: ev.trace, waiters: vec![tx] });
                    st.by_due.insert((*due, status.order_id.clone()));
                    self.recent.insert(share.event_id.clone());
                    wait = Some(rx);
                }
            }
            st.now()
        };
        self.timers.changed.notify_one();
        if let Some(rx) = wait {
            tracing::debug!(order_id = status.order_id, "share delayed by policy");
            return Ok(Done::Later(Box::pin(async move { rx.await.unwrap_or(Err(HandleError::Abandoned)) })));
        }
        let record = match decision {
            Decision::Nothing => return Ok(Done::Now),
            Decision::Share { due, share } if due <= now && !self.recent.contains(&share.event_id) => {
                self.counts.shared += 1;
                share
            }
            Decision::Share { .. } => return Ok(Done::Now),
            Decision::Withdraw(w) => {
                self.counts.withdrawn += 1;
                w
            }
        };
        tracing::debug!(order_id = record.order_id, kind = ?record.kind, targets = ?record.target_clusters, "publishing");
        let delivery = self.publisher.publish(&record, &ev.trace).await?;
        self.recent.insert(record.event_id.clone());
        Ok(Done::Later(Box::pin(delivery)))
    }
}
