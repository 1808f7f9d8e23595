//! Reads the view's input topics and applies them to Redis in batches, with
//! each partition's offset stored in Redis by the same script call that
//! applies its events: the view resumes from Redis, not from a consumer
//! group, so an event is applied once however often it is read.

use crate::metrics::Metrics;
use crate::ops::{Body, Op, op_of};
use orelink_codec::{Codec, DecodeError};
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

/// The contract and internal topics the view reads.
pub const INPUTS: [&str; 5] = [topics::CAPACITY, topics::ORDER_STATUS, topics::ALLOCATIONS, topics::SHARED_ORDERS, topics::DLQ];

#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl MaterialiseError {
    /// Redis or Kafka being away is worth waiting for; the loop retries those.
    pub fn retriable(&self) -> bool {
        match self {
            MaterialiseError::Redis(e) => e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal(),
            MaterialiseError::Kafka(_) => false,
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
    changes: broadcast::Sender<Change>,
    metrics: Arc<Metrics>,
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
        codec: Arc<Codec>,
        redis: ConnectionManager,
        changes: broadcast::Sender<Change>,
        metrics: Arc<Metrics>,
    ) -> Result<Materialiser, MaterialiseError> {
        // No group management: partitions are assigned by hand from Redis's offsets.
        let consumer_config = cfg.kafka.reader_config("view", &format!("{}orelink-view", cfg.namespace));
        let consumer = consumer_config.create()?;
        let probe = cfg.kafka.client_config("view-probe").set("group.id", format!("{}orelink-view-probe", cfg.namespace)).create()?;
        Ok(Materialiser {
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
            let batch = tokio::select! {
                _ = cancel.cancelled() => break,
                b = self.next_batch() => b?,
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
            match self.apply(&batch).await {
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
                    tracing::warn!(error = %e, "redis unavailable; retrying the batch from Redis's offsets");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    positions.clear();
                    self.resume().await?;
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

    /// Up to `batch_max` decoded events: waits up to 200 ms for the first,
    /// then takes what has already arrived.
    async fn next_batch(&mut self) -> Result<Vec<Op>, MaterialiseError> {
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(Duration::from_millis(200), self.consumer.recv()).await {
            Err(_) => return Ok(batch),
            Ok(m) => m?,
        };
        batch.push(self.op(&first).await);
        while batch.len() < self.batch_max {
            match tokio::time::timeout(Duration::from_millis(1), self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(self.op(&m).await),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn op(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Op {
        let t = format!("{}:{}", m.topic(), m.partition());
        let mut delay = Duration::from_millis(200);
        loop {
            match self.codec.decode(m.topic(), m.payload()).await {
                Ok(r) => return op_of(t, m.offset(), Some(&r)),
                // The router (or the role that wrote it) dead-letters bad input; the view only moves on.
                Err(DecodeError::Refused(r)) => {
                    tracing::debug!(topic = m.topic(), offset = m.offset(), reason = %r, "skipped");
                    return op_of(t, m.offset(), None);
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

    /// Runs the script; `None` if the epoch changed.
    async fn apply(&mut self, batch: &[Op]) -> Result<Option<i64>, MaterialiseError> {
        let started = Instant::now();
        let ops = serde_json::to_string(batch).expect("ops serialise");
        let applied: i64 = self.script.arg(&self.prefix).arg(&self.epoch).arg(ops).invoke_async(&mut self.redis).await?;
        self.metrics.batch(batch.len() as u64, applied.max(0) as u64, started.elapsed());
        Ok((applied >= 0).then_some(applied))
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
