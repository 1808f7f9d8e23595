//! The consume loop every at-least-once role shares: receive, decode through
//! the registry, dead-letter what cannot be used, hand the rest to the role,
//! and store the offset only once the role (or the DLQ) has the event. A role
//! that routes on the record key alone takes events undecoded
//! (`Handler::DECODES`), and one on a hot path names its own effect type
//! (`Handler::Later`) instead of boxing a future per event.
//!
//! Delivery: at least once. A role that must not double its output makes
//! its handling idempotent (by `event_id`) or uses the transactional loop.
//! Shutdown (the cancellation token) stops receiving, lets the event in hand
//! finish, and commits the stored offsets before returning.

use crate::dlq::{DeadLetterError, DeadLetters};
use crate::trace::TraceContext;
use orelink_codec::{Codec, DecodeError, Record, SourceRef};
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use tokio_util::sync::CancellationToken;

/// Headers of a record a router forwards into a role's ordered input (the
/// matcher's market topic, the booker's lanes): the contract topic it was
/// first written to (without the deployment's namespace), and its partition
/// and offset there (decimal), so its dead letter names where it came from.
/// What a door writes to such a topic directly carries none.
pub const SOURCE_HEADER: &str = "orelink-source";
pub const SOURCE_PARTITION_HEADER: &str = "orelink-source-partition";
pub const SOURCE_OFFSET_HEADER: &str = "orelink-source-offset";

/// The headers of a forwarded record: `trace` (the router's span) and where it came from.
pub fn forwarded_headers(trace: &TraceContext, source: &str, partition: i32, offset: i64) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::Header;
    let (partition, offset) = (partition.to_string(), offset.to_string());
    trace
        .to_headers()
        .insert(Header { key: SOURCE_HEADER, value: Some(source.as_bytes()) })
        .insert(Header { key: SOURCE_PARTITION_HEADER, value: Some(partition.as_bytes()) })
        .insert(Header { key: SOURCE_OFFSET_HEADER, value: Some(offset.as_bytes()) })
}

/// Where a forwarded record was first written: its deployed source topic,
/// partition and offset, from [`forwarded_headers`] (`None` without them).
pub fn source_of<M: Message>(codec: &Codec, m: &M) -> Option<(String, i32, i64)> {
    use rdkafka::message::Headers;
    let header = |name: &str| m.headers().and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value)).map(String::from_utf8_lossy);
    let topic = codec.topic(&header(SOURCE_HEADER)?);
    Some((topic, header(SOURCE_PARTITION_HEADER)?.parse().ok()?, header(SOURCE_OFFSET_HEADER)?.parse().ok()?))
}

/// Produces `record` for a router, waiting while librdkafka's local queue is
/// full (backpressure until the broker catches up); its delivery report.
pub async fn forward<K, P>(producer: &rdkafka::producer::FutureProducer, mut record: rdkafka::producer::FutureRecord<'_, K, P>) -> Result<rdkafka::producer::DeliveryFuture, HandleError>
where
    K: rdkafka::message::ToBytes + ?Sized + Sync,
    P: rdkafka::message::ToBytes + ?Sized + Sync,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(HandleError::Retriable(e.to_string())),
        }
    }
}

/// A router's revocation hook: everything forwarded so far reaches the
/// broker before its partitions move, so the next owner's re-forwards come
/// strictly after (and are ignored as repeats downstream).
pub fn flush_on_revoke(producer: rdkafka::producer::FutureProducer) -> OnRevoke {
    use rdkafka::producer::Producer;
    Arc::new(move || {
        if let Err(e) = producer.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, "flush on revoke failed; the next owner may reorder this partition's records");
        }
    })
}

/// One event for a role: decoded and validated, unless the role takes them undecoded.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// `None` when the handler takes events undecoded (`Handler::DECODES` false).
    pub record: Option<Record>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The value exactly as it arrived (Confluent wire format).
    pub value: Option<Vec<u8>>,
    /// This hop's span: a child of the producer's context, or a new root.
    /// What the handler produces carries it.
    pub trace: TraceContext,
}

/// What a role's handler may answer.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Try the same event again after a backoff (a dependency is down).
    #[error("retriable: {0}")]
    Retriable(String),
    /// Stop the loop; the event's offset is not stored, so it is read again after a restart.
    #[error("fatal: {0}")]
    Fatal(String),
    /// From a `Done::Later` only: the effect was given up on shutdown (a
    /// delayed publication not yet due). Not an error: the loop stops storing
    /// offsets at this event, so the next run reads it again.
    #[error("abandoned on shutdown")]
    Abandoned,
}

/// A handler's effect that becomes durable later (a produce awaiting its ack).
pub type Pending = Pin<Box<dyn Future<Output = Result<(), HandleError>> + Send>>;

/// What a handler did with an event.
pub enum Done<L = Pending> {
    /// Its effects are durable now: the offset may move.
    Now,
    /// The handler dead-lettered it itself (a handler that does not decode
    /// finds out late); durable now, and counted as dead-lettered.
    Dead,
    /// Its effects are durable when this resolves; the loop keeps a bounded
    /// window of these and moves offsets strictly in order as they complete.
    /// A failure here ends the loop (the event will be read again after a restart).
    Later(L),
}

pub trait Handler: Send {
    /// Whether the loop decodes and validates each event first, dead-lettering
    /// what fails. A handler that routes on the key alone says false and gets
    /// `record: None`; whoever decodes later dead-letters.
    const DECODES: bool = true;
    /// The effect that becomes durable later: `Pending` boxes any future; a
    /// handler on a hot path names a concrete type (no allocation per event).
    type Later: Future<Output = Result<(), HandleError>> + Send + Unpin;
    fn handle(&mut self, event: Inbound) -> impl Future<Output = Result<Done<Self::Later>, HandleError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("handler: {0}")]
    Handler(String),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoopStats {
    pub delivered: u64,
    pub dead_lettered: u64,
}

pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// Runs before partitions are taken away (blocking, inside the consumer's
/// poll): a role flushes what it has in flight here, so that the next owner's
/// output strictly follows its own.
pub type OnRevoke = Arc<dyn Fn() + Send + Sync>;

/// The loop's consumer context: on revocation, run the role's hook, then
/// commit the offsets stored so far.
pub struct LoopContext {
    on_revoke: Option<OnRevoke>,
    /// How the consumer was made, to make it anew after a fatal error.
    config: rdkafka::ClientConfig,
    topics: Vec<String>,
}

impl ClientContext for LoopContext {}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Some(hook) = &self.on_revoke {
                hook();
            }
            if tpl.count() > 0 && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "commit on revoke skipped");
            }
        }
    }
}

pub type LoopConsumer = StreamConsumer<LoopContext>;

/// A consumer for the loop (see `KafkaSettings::consumer_config`), subscribed to `topics`.
pub fn loop_consumer(config: &rdkafka::ClientConfig, topics: &[&str], on_revoke: Option<OnRevoke>) -> Result<LoopConsumer, rdkafka::error::KafkaError> {
    let c: LoopConsumer = config.create_with_context(LoopContext { on_revoke, config: config.clone(), topics: topics.iter().map(|t| t.to_string()).collect() })?;
    c.subscribe(topics)?;
    Ok(c)
}

/// A new consumer made as `old` was (same group, static id, topics and revoke hook).
fn remake(old: &LoopConsumer) -> Result<LoopConsumer, rdkafka::error::KafkaError> {
    let ctx = old.context();
    loop_consumer(&ctx.config, &ctx.topics.iter().map(String::as_str).collect::<Vec<_>>(), ctx.on_revoke.clone())
}

pub struct ConsumeLoop {
    consumer: LoopConsumer,
    codec: Arc<Codec>,
    dead_letters: DeadLetters,
    backoff: Backoff,
    max_in_flight: usize,
}

enum Outcome<L> {
    /// Dead-lettered (durable now).
    Dead,
    Done(Done<L>),
    Cancelled,
}

/// Where an in-flight event's effect stands.
enum Effect<L> {
    Durable,
    Pending(L),
    /// Failed or given up: neither its offset nor any later one is stored.
    Abandoned,
}

/// An event whose effect is not yet durable, and where it came from.
struct InFlight<L> {
    topic: String,
    partition: i32,
    /// The event's own offset: librdkafka's offset store commits the one after it.
    offset: i64,
    effect: Effect<L>,
}

/// Resolves when the oldest in-flight effect completes (never, if there is none
/// pending), so a quiet stream still gets its last offsets stored.
async fn front_done<L: Future<Output = Result<(), HandleError>> + Unpin>(window: &mut VecDeque<InFlight<L>>) -> Result<(), HandleError> {
    let Some(front) = window.front_mut() else { return std::future::pending().await };
    match &mut front.effect {
        Effect::Pending(p) => {
            let r = p.await;
            // Only a success frees the offset; an abandoned effect stays abandoned.
            front.effect = if r.is_ok() { Effect::Durable } else { Effect::Abandoned };
            r
        }
        Effect::Abandoned => Err(HandleError::Abandoned),
        Effect::Durable => std::future::pending().await,
    }
}

impl ConsumeLoop {
    pub fn new(consumer: LoopConsumer, codec: Arc<Codec>, dead_letters: DeadLetters, backoff: Backoff) -> Self {
        ConsumeLoop { consumer, codec, dead_letters, backoff, max_in_flight: 1024 }
    }

    /// Completes in-flight effects from the front and stores their offsets in
    /// order. Waits while more than `keep` are in flight; past that only takes
    /// what has already completed.
    async fn settle<L: Future<Output = Result<(), HandleError>> + Unpin>(&self, window: &mut VecDeque<InFlight<L>>, keep: usize) -> Result<(), LoopError> {
        loop {
            let must_wait = window.len() > keep;
            let Some(front) = window.front_mut() else { break };
            match &mut front.effect {
                Effect::Durable => {}
                Effect::Abandoned => return Ok(()),
                Effect::Pending(p) => {
                    let r = if must_wait { Some(p.await) } else { futures::FutureExt::now_or_never(p) };
                    match r {
                        None => return Ok(()),
                        Some(Ok(())) => front.effect = Effect::Durable,
                        Some(Err(HandleError::Abandoned)) => {
                            front.effect = Effect::Abandoned;
                            return Ok(());
                        }
                        // The entry stays, so nothing from here on is stored.
                        Some(Err(e)) => {
                            front.effect = Effect::Abandoned;
                            return Err(LoopError::Handler(e.to_string()));
                        }
                    }
                }
            }
            let f = window.pop_front().expect("front exists");
            match self.consumer.store_offset(&f.topic, f.partition, f.offset) {
                Ok(()) => {}
                // The partition was revoked meanwhile: its next owner reads the event again
                // (at least once), after what we already flushed.
                Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::State) => {
                    tracing::debug!(topic = f.topic, partition = f.partition, "offset of a revoked partition not stored");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub async fn run<H: Handler>(mut self, handler: &mut H, cancel: CancellationToken) -> Result<LoopStats, LoopError> {
        let mut stats = LoopStats::default();
        let mut counters = crate::metrics::EventCounters::new(self.dead_letters.role());
        let mut window: VecDeque<InFlight<H::Later>> = VecDeque::new();
        let result = loop {
            if let Err(e) = self.settle(&mut window, self.max_in_flight - 1).await {
                break Err(e);
            }
            let msg = tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                done = front_done(&mut window) => match done {
                    Ok(()) => continue,
                    Err(HandleError::Abandoned) => break Ok(()),
                    Err(e) => break Err(LoopError::Handler(e.to_string())),
                },
                m = self.consumer.recv() => m,
            };
            let msg = match msg {
                Ok(m) => m,
                // librdkafka has given this consumer up for good: a static
                // member fenced by its own rejoin after its coordinator was
                // lost (a broker killed or hung) is one. A new consumer resumes
                // from the committed offsets; what this one had read since is
                // read again (at least once), once its effects are done.
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                    tracing::warn!(error = %e, "the consumer failed for good; making it anew from the committed offsets");
                    for f in window.drain(..) {
                        if let Effect::Pending(p) = f.effect {
                            let _ = p.await;
                        }
                    }
                    match remake(&self.consumer) {
                        Ok(c) => self.consumer = c,
                        Err(e) => break Err(e.into()),
                    }
                    metrics::counter!("orelink_consumer_remade_total", "role" => self.dead_letters.role().to_owned()).increment(1);
                    continue;
                }
                Err(e) => {
                    // Broker-side errors surface here and librdkafka recovers from them itself.
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
            };
            let parent = TraceContext::from_headers(msg.headers());
            let span = tracing::debug_span!(
                "consume",
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                parent_span_id = tracing::field::Empty,
            );
            let trace = crate::telemetry::hop(&span, parent);
            // Hex written where the fields are formatted, no string per event.
            span.record("trace_id", tracing::field::display(trace.trace_id_display())).record("span_id", tracing::field::display(trace.span_id_display()));
            if let Some(parent) = parent {
                span.record("parent_span_id", tracing::field::display(parent.span_id_display()));
            }
            let effect = match self.process(&msg, trace, handler, &cancel).instrument(span).await {
                Ok(Outcome::Dead) => {
                    stats.dead_lettered += 1;
                    counters.add(msg.topic(), "dead_lettered", 1);
                    Effect::Durable
                }
                Ok(Outcome::Done(Done::Dead)) => {
                    stats.dead_lettered += 1;
                    counters.add(msg.topic(), "dead_lettered", 1);
                    Effect::Durable
                }
                Ok(Outcome::Done(done)) => {
                    stats.delivered += 1;
                    counters.add(msg.topic(), "delivered", 1);
                    match done {
                        Done::Now | Done::Dead => Effect::Durable,
                        Done::Later(p) => Effect::Pending(p),
                    }
                }
                Ok(Outcome::Cancelled) => break Ok(()),
                Err(e) => break Err(e),
            };
            // Stored once this event and everything before it are durable.
            window.push_back(InFlight { topic: msg.topic().to_owned(), partition: msg.partition(), offset: msg.offset(), effect });
        };
        // Drain: whatever is in flight becomes durable (or fails) before the final
        // commit. Not after a failure: an effect that failed must not have its
        // offset, or any later one, stored; the event is read again after a restart.
        let result = match result {
            Ok(()) => self.settle(&mut window, 0).await,
            Err(e) => Err(e),
        };
        // Commit what was stored; a failure here only means some events are read twice.
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::info!(error = %e, "final commit skipped");
        }
        result.map(|()| stats)
    }

    async fn process<H: Handler>(
        &self,
        msg: &BorrowedMessage<'_>,
        trace: TraceContext,
        handler: &mut H,
        cancel: &CancellationToken,
    ) -> Result<Outcome<H::Later>, LoopError> {
        let mut delay = self.backoff.initial;
        loop {
            let decoded = if H::DECODES { self.codec.decode(msg.topic(), msg.payload()).await.map(Some) } else { Ok(None) };
            let attempt = match decoded {
                Ok(record) => {
                    let inbound = Inbound {
                        record,
                        topic: msg.topic().to_owned(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                        key: msg.key().map(<[u8]>::to_vec),
                        value: msg.payload().map(<[u8]>::to_vec),
                        trace,
                    };
                    match handler.handle(inbound).await {
                        Ok(done) => return Ok(Outcome::Done(done)),
                        Err(HandleError::Fatal(e)) => return Err(LoopError::Handler(e)),
                        Err(HandleError::Abandoned) => return Ok(Outcome::Cancelled),
                        Err(HandleError::Retriable(e)) => e,
                    }
                }
                Err(DecodeError::Refused(refusal)) => {
                    let source = SourceRef { topic: msg.topic(), partition: msg.partition(), offset: msg.offset(), key: msg.key(), value: msg.payload() };
                    match self.dead_letters.send(&source, &refusal, &trace).await {
                        Ok(()) => return Ok(Outcome::Dead),
                        Err(e @ DeadLetterError::Encode(_)) if !e.retriable() => return Err(LoopError::Handler(e.to_string())),
                        Err(e) => e.to_string(),
                    }
                }
                Err(DecodeError::Retry(e)) => e,
            };
            tracing::warn!(error = %attempt, retry_in_ms = delay.as_millis() as u64, "event not processed yet; retrying");
            tokio::select! {
                _ = cancel.cancelled() => return Ok(Outcome::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.backoff.max);
        }
    }
}
