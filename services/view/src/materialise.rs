//! Reads the view's input topics and applies them to Redis in batches, with
//! each partition's offset stored in Redis by the same script call that
//! applies its events: the view resumes from Redis, not from a consumer
//! group, so an event is applied once however often it is read.
//!
//! Bad input never stops it. A record that does not decode or validate is
//! dead-lettered here when the view is the only role that reads its topic
//! (`DEAD_LETTERS_FOR`: inventory, allocations, bookings, dead letters); elsewhere its
//! other reader dead-letters it (the router orders, capacity and shares, the
//! share role order statuses, the booker's router carriers' offers) and the view only skips it. A record the script
//! cannot apply is found by the script itself, dead-lettered with the
//! script's reason, and passed over; the rest of its batch goes on. Only
//! Redis or Kafka being unreachable is retried, and those never skip a record.

use crate::metrics::Metrics;
use crate::ops::{Body, Op, op_of};
use orelink_codec::{Codec, DecodeError, Refusal, SourceRef};
use orelink_domain::ErrorClass;
use orelink_domain::Topology;
use orelink_platform::dlq::DeadLetters;
use orelink_platform::trace::TraceContext;
use orelink_domain::topology::topics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use redis::aio::ConnectionManager;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub const SCRIPT: &str = include_str!("view.lua");

/// The contract and internal topics the view reads. Capacity comes from the
/// market topic, where the doors write it and the router forwards what
/// Kafka clients write to `orelink.capacity.v1`, so each declaration counts
/// once; the market's orders and routed shares are skipped (demand comes
/// from the matcher's statuses, shares from their own topic). Carriers'
/// offers and the booker's bookings make the lanes' figures.
pub const INPUTS: [&str; 8] =
    [topics::MARKET, topics::ORDER_STATUS, topics::ALLOCATIONS, topics::SHARED_ORDERS, topics::INVENTORY, topics::DLQ, topics::TRANSPORT_OFFERS, topics::BOOKINGS];

/// Inputs whose bad records no other hub role dead-letters.
pub const DEAD_LETTERS_FOR: [&str; 4] = [topics::INVENTORY, topics::ALLOCATIONS, topics::BOOKINGS, topics::DLQ];

#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("dead letter: {0}")]
    DeadLetter(#[from] orelink_platform::dlq::DeadLetterError),
    #[error("the view script answered {0:?}")]
    Script(String),
}

impl MaterialiseError {
    /// Redis or Kafka being away is worth waiting for; the loop retries those.
    pub fn retriable(&self) -> bool {
        match self {
            MaterialiseError::Redis(e) => e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal(),
            MaterialiseError::DeadLetter(e) => e.retriable(),
            MaterialiseError::Kafka(_) | MaterialiseError::Script(_) => false,
        }
    }
}

/// What a batch changed, for the dashboard's live updates.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    pub applied: i64,
    /// Allocations of the batch (JSON of `orelink.v1.Allocation`), newest last, at most 20.
    pub allocations: Vec<serde_json::Value>,
}

pub struct Materialiser {
    consumer: StreamConsumer,
    /// Metadata and watermarks come from a client of their own: offset
    /// queries on the consumer itself held back its first fetch by seconds
    /// (as in librdkafka issue #1786).
    probe: rdkafka::consumer::BaseConsumer,
    consumer_config: rdkafka::ClientConfig,
    redis: ConnectionManager,
    script: redis::Script,
    codec: Arc<Codec>,
    prefix: String,
    topics: Vec<String>,
    epoch: String,
    batch_max: usize,
    /// `view.closed_retention_ms`: how long closed entities stay in Redis.
    closed_retention_ms: i64,
    changes: broadcast::Sender<Change>,
    metrics: Arc<Metrics>,
    topology: Arc<Topology>,
    dead_letters: DeadLetters,
    /// `DEAD_LETTERS_FOR`, as deployed.
    dead_letters_for: Vec<String>,
    /// Deployed market topic: only its capacity is the view's.
    market: String,
}

/// Where a batch's event came from, kept to dead-letter it with its bytes.
pub struct Source {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Refused by the codec, and to be dead-lettered by the view.
    refused: Option<Refusal>,
}

impl Source {
    fn source_ref(&self) -> SourceRef<'_> {
        SourceRef { topic: &self.topic, partition: self.partition, offset: self.offset, key: self.key.as_deref(), value: self.value.as_deref() }
    }
}

/// What one script call answered.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// The epoch changed: resume from Redis.
    Resume,
    /// Every op went through; so many changed the view.
    Applied(i64),
    /// Ops before `index` went through (`applied` changed the view); op `index` did not, for `reason`.
    Failed { applied: i64, index: usize, reason: String },
}

impl Answer {
    fn parse(reply: &[redis::Value]) -> Result<Answer, MaterialiseError> {
        let int = |v: &redis::Value| redis::from_redis_value::<i64>(v.clone()).ok();
        match reply {
            [v] if int(v) == Some(-1) => Ok(Answer::Resume),
            [v] => int(v).map(Answer::Applied).ok_or_else(|| MaterialiseError::Script(format!("{reply:?}"))),
            [a, i, r] => match (int(a), int(i), redis::from_redis_value::<String>(r.clone()).ok()) {
                (Some(applied), Some(i), Some(reason)) if i >= 1 => Ok(Answer::Failed { applied, index: (i - 1) as usize, reason }),
                _ => Err(MaterialiseError::Script(format!("{reply:?}"))),
            },
            _ => Err(MaterialiseError::Script(format!("{reply:?}"))),
        }
    }
}

/// Events read and, of them, applied (not replays, duplicates or skips).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub read: u64,
    pub applied: u64,
}

/// Where each partition ends now: a rebuild stops there.
pub type Ends = BTreeMap<(String, i32), i64>;

impl Materialiser {
    pub async fn new(
        cfg: &orelink_platform::Config,
        reference: &orelink_platform::Reference,
        codec: Arc<Codec>,
        redis: ConnectionManager,
        changes: broadcast::Sender<Change>,
        metrics: Arc<Metrics>,
    ) -> Result<Materialiser, MaterialiseError> {
        // No group management: partitions are assigned by hand from Redis's offsets.
        let consumer_config = cfg.kafka.reader_config("view", &format!("{}orelink-view", cfg.namespace));
        let consumer = consumer_config.create()?;
        let probe = cfg.kafka.client_config("view-probe").set("group.id", format!("{}orelink-view-probe", cfg.namespace)).create()?;
        let dead_letters = DeadLetters::new(cfg.kafka.producer_config("view").create()?, codec.clone(), "view");
        Ok(Materialiser {
            topology: reference.topology.clone(),
            dead_letters,
            dead_letters_for: DEAD_LETTERS_FOR.iter().map(|t| codec.topic(t)).collect(),
            market: codec.topic(topics::MARKET),
            consumer,
            consumer_config,
            probe,
            redis,
            script: redis::Script::new(SCRIPT),
            topics: INPUTS.iter().map(|t| codec.topic(t)).collect(),
            codec,
            prefix: prefix(&cfg.namespace),
            epoch: String::new(),
            batch_max: cfg.view.batch_max,
            closed_retention_ms: cfg.view.closed_retention_ms,
            changes,
            metrics,
        })
    }

    /// Joins the current epoch (starting one if Redis has none: a first run
    /// or a FLUSHALL) and assigns every input partition at Redis's offset + 1.
    async fn resume(&mut self) -> Result<(), MaterialiseError> {
        let epoch_key = format!("{}epoch", self.prefix);
        // Join the epoch that is there, or start one; a flush between the two
        // calls (another rebuild, an operator's FLUSHALL) just means: again.
        self.epoch = loop {
            let fresh = uuid::Uuid::new_v4().simple().to_string();
            let _: Option<String> = redis::cmd("SET").arg(&epoch_key).arg(&fresh).arg("NX").query_async(&mut self.redis).await?;
            if let Some(e) = redis::cmd("GET").arg(&epoch_key).query_async::<Option<String>>(&mut self.redis).await? {
                break e;
            }
        };
        let stored: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(format!("{}offsets", self.prefix)).query_async(&mut self.redis).await?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partitions) in self.partitions().await? {
            for p in partitions {
                // The low watermark, not Offset::Beginning: resolving that inside
                // the consumer's first fetch cost seconds per partition here.
                let at = match stored.get(&format!("{topic}:{p}")) {
                    Some(o) => Offset::Offset(o + 1),
                    None => Offset::Offset(self.probe.fetch_watermarks(&topic, p, Duration::from_secs(10))?.0),
                };
                tpl.add_partition_offset(&topic, p, at)?;
            }
        }
        // A new consumer for every resume: re-assigning the old one to earlier
        // offsets left it idle for seconds before its first fetch.
        self.consumer = self.consumer_config.create()?;
        self.consumer.assign(&tpl)?;
        tracing::info!(epoch = self.epoch, partitions = tpl.count(), resumed = stored.len(), "view resumed from Redis offsets");
        Ok(())
    }

    /// `resume`, retried while Kafka or Redis is away (a broker lost, its
    /// partitions' leaders still moving) for up to two minutes: a view that
    /// exits over a transient fault would need restarting by hand. False when
    /// cancelled first.
    async fn resume_patiently(&mut self, cancel: &CancellationToken) -> Result<bool, MaterialiseError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let e = match self.resume().await {
                Ok(()) => return Ok(true),
                Err(e @ MaterialiseError::Kafka(_)) => e,
                Err(e) if e.retriable() => e,
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(e);
            }
            tracing::warn!(error = %e, "could not resume yet; trying again");
            tokio::select! {
                _ = cancel.cancelled() => return Ok(false),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn partitions(&self) -> Result<Vec<(String, Vec<i32>)>, MaterialiseError> {
        let consumer_topics = self.topics.clone();
        let md = self.probe.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(consumer_topics
            .into_iter()
            .map(|t| {
                let ps = md.topics().iter().find(|m| m.name() == t).map(|m| m.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
                (t, ps)
            })
            .collect())
    }

    /// The current end of every input partition.
    pub async fn ends(&self) -> Result<Ends, MaterialiseError> {
        let mut ends = Ends::new();
        for (topic, partitions) in self.partitions().await? {
            for p in partitions {
                let (low, high) = self.probe.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
                if high > low {
                    ends.insert((topic.clone(), p), high);
                }
            }
        }
        Ok(ends)
    }

    /// Applies events until `cancel`, or, with `until`, until every partition
    /// has been read up to those ends (a rebuild). `ready` is called once the
    /// view has read what its inputs held when it started (or they go quiet).
    pub async fn run(mut self, cancel: CancellationToken, until: Option<Ends>, ready: impl Fn()) -> Result<Applied, MaterialiseError> {
        self.resume().await?;
        let mut total = Applied::default();
        let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut not_ready_until = Some(self.ends().await?);
        loop {
            if not_ready_until.as_ref().is_some_and(|ends| self.reached(ends, &positions)) {
                not_ready_until = None;
                ready();
            }
            if until.as_ref().is_some_and(|ends| self.reached(ends, &positions)) {
                break;
            }
            let (mut batch, sources) = tokio::select! {
                _ = cancel.cancelled() => break,
                b = self.next_batch() => match b {
                    Ok(b) => b,
                    Err(e) => {
                        // A fetch that failed (a leader lost, a broker away): what
                        // was read but not applied is read again from Redis's offsets.
                        tracing::warn!(error = %e, "reading failed; resuming from Redis's offsets");
                        positions.clear();
                        if !self.resume_patiently(&cancel).await? {
                            break;
                        }
                        continue;
                    }
                },
            };
            tracing::debug!(events = batch.len(), "batch");
            if batch.is_empty() {
                if not_ready_until.take().is_some() {
                    ready();
                }
                continue;
            }
            for op in &batch {
                if let Some((topic, p)) = op.t.rsplit_once(':') {
                    positions.insert((topic.to_owned(), p.parse().unwrap_or(0)), op.o);
                }
            }
            let outcome = match self.dead_letter_refused(&sources).await {
                Ok(()) => self.apply_all(&mut batch, &sources).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Some(applied)) => {
                    total.read += batch.len() as u64;
                    total.applied += applied as u64;
                    let allocations: Vec<serde_json::Value> = batch
                        .iter()
                        .filter_map(|op| match &op.body {
                            Body::Al { j, .. } => serde_json::from_str(j).ok(),
                            _ => None,
                        })
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    if applied > 0 {
                        let _ = self.changes.send(Change { applied, allocations });
                    }
                }
                Ok(None) => {
                    tracing::warn!("the view's epoch changed (a rebuild or a flush): resuming from Redis");
                    positions.clear();
                    self.resume().await?;
                }
                Err(e) if e.retriable() => {
                    tracing::warn!(error = %e, "redis or kafka unavailable; retrying the batch from Redis's offsets");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    positions.clear();
                    if !self.resume_patiently(&cancel).await? {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn reached(&self, ends: &Ends, positions: &BTreeMap<(String, i32), i64>) -> bool {
        ends.iter().all(|(k, end)| positions.get(k).is_some_and(|p| p + 1 >= *end) || self.at_end(k, *end))
    }

    /// True when the consumer's position for `k` is at `end` (markers and
    /// aborted records have offsets the view never receives).
    fn at_end(&self, k: &(String, i32), end: i64) -> bool {
        self.consumer
            .position()
            .ok()
            .and_then(|tpl| tpl.find_partition(&k.0, k.1).map(|e| e.offset()))
            .is_some_and(|o| matches!(o, Offset::Offset(p) if p >= end))
    }

    /// Up to `batch_max` decoded events and where they came from: waits up to
    /// 200 ms for the first, then takes what has already arrived.
    async fn next_batch(&mut self) -> Result<(Vec<Op>, Vec<Source>), MaterialiseError> {
        let (mut batch, mut sources) = (Vec::new(), Vec::new());
        let first = match tokio::time::timeout(Duration::from_millis(200), self.consumer.recv()).await {
            Err(_) => return Ok((batch, sources)),
            Ok(m) => m?,
        };
        let (op, source) = self.op(&first).await;
        batch.push(op);
        sources.push(source);
        while batch.len() < self.batch_max {
            match tokio::time::timeout(Duration::from_millis(1), self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    let (op, source) = self.op(&m).await;
                    batch.push(op);
                    sources.push(source);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        Ok((batch, sources))
    }

    async fn op(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> (Op, Source) {
        let t = format!("{}:{}", m.topic(), m.partition());
        let mut source = Source {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            refused: None,
        };
        let mut delay = Duration::from_millis(200);
        // Of the market topic, only capacity is the view's: its orders and
        // shares are passed over by their schema id, undecoded.
        let market = m.topic() == self.market;
        loop {
            match self.codec.decode_if(m.topic(), m.payload(), |record| !market || record == "orelink.v1.CapacityEvent").await {
                Ok(r) => return (op_of(t, m.offset(), r.as_ref(), &self.topology), source),
                Err(DecodeError::Refused(r)) => {
                    tracing::debug!(topic = m.topic(), offset = m.offset(), reason = %r, "skipped");
                    if self.dead_letters_for.iter().any(|t| t == m.topic()) {
                        source.refused = Some(r);
                    }
                    return (op_of(t, m.offset(), None, &self.topology), source);
                }
                // The registry is away: the event is not skipped, it waits.
                Err(DecodeError::Retry(e)) => {
                    tracing::warn!(error = %e, "registry unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Dead-letters the batch's refused records, before the batch's offsets move.
    async fn dead_letter_refused(&mut self, sources: &[Source]) -> Result<(), MaterialiseError> {
        for s in sources {
            if let Some(r) = &s.refused {
                self.dead_letter(s, r).await?;
            }
        }
        Ok(())
    }

    /// Writes one dead letter, unless one was written for that offset before
    /// (a rebuild reads the inputs again). Its mark lives outside the view's
    /// keys, so a rebuild keeps it; a crash between the two writes repeats a
    /// dead letter, never loses one.
    async fn dead_letter(&mut self, source: &Source, refusal: &Refusal) -> Result<(), MaterialiseError> {
        let marks = format!("{}-dead-lettered", self.prefix.trim_end_matches(':'));
        let field = format!("{}:{}", source.topic, source.partition);
        let done: Option<i64> = redis::cmd("HGET").arg(&marks).arg(&field).query_async(&mut self.redis).await?;
        if done.is_some_and(|d| d >= source.offset) {
            return Ok(());
        }
        self.dead_letters.send(&source.source_ref(), refusal, &TraceContext::root()).await?;
        self.metrics.dead_lettered();
        let _: () = redis::cmd("HSET").arg(&marks).arg(&field).arg(source.offset).query_async(&mut self.redis).await?;
        Ok(())
    }

    /// Applies `batch`; an op the script refuses is dead-lettered and passed
    /// over, and the ops after it go on. `None` if the epoch changed.
    async fn apply_all(&mut self, batch: &mut [Op], sources: &[Source]) -> Result<Option<i64>, MaterialiseError> {
        let (mut from, mut total) = (0, 0);
        loop {
            match self.apply(&batch[from..]).await? {
                Answer::Resume => return Ok(None),
                Answer::Applied(n) => return Ok(Some(total + n)),
                Answer::Failed { applied, index, reason } => {
                    total += applied;
                    let i = from + index;
                    tracing::warn!(topic = sources[i].topic, offset = sources[i].offset, reason, "the view cannot apply a record; dead-lettering it");
                    let refusal = Refusal { class: ErrorClass::Invalid, reason: format!("the view cannot apply it: {reason}") };
                    self.dead_letter(&sources[i], &refusal).await?;
                    // Applied as a skip: only its offset moves.
                    batch[i].body = Body::Skip {};
                    from = i;
                }
            }
        }
    }

    /// Runs the script once.
    async fn apply(&mut self, batch: &[Op]) -> Result<Answer, MaterialiseError> {
        let started = Instant::now();
        let ops = serde_json::to_string(batch).expect("ops serialise");
        let reply: Vec<redis::Value> = self.script.arg(&self.prefix).arg(&self.epoch).arg(ops).arg(self.closed_retention_ms).invoke_async(&mut self.redis).await?;
        let answer = Answer::parse(&reply)?;
        let applied = match &answer {
            Answer::Applied(n) | Answer::Failed { applied: n, .. } => *n,
            Answer::Resume => 0,
        };
        self.metrics.batch(batch.len() as u64, applied.max(0) as u64, started.elapsed());
        Ok(answer)
    }
}

/// The prefix of every Redis key of this deployment's view.
pub fn prefix(namespace: &str) -> String {
    format!("{namespace}view:")
}

/// Deletes every key of the view (SCAN + UNLINK), so a rebuild starts empty.
pub async fn clear(redis: &mut ConnectionManager, namespace: &str) -> Result<u64, redis::RedisError> {
    let pattern = format!("{}*", prefix(namespace));
    let mut cursor: u64 = 0;
    let mut removed = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(redis).await?;
        if !keys.is_empty() {
            removed += redis::cmd("UNLINK").arg(&keys).query_async::<u64>(redis).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}
