//! Book snapshots in Kafka (`orelink.matcher-snapshots.v1`), so that a
//! restore replays the input after the newest snapshot instead of all of it.
//!
//! A snapshot of input partition `p` at offset `X` is the book after the
//! input `[0, X)`. The engine is deterministic and the input is never
//! rewritten, so that state does not depend on which run computed it: any
//! complete snapshot at or below the committed offset is a valid start. The
//! processor publishes one only after the transaction that covers `X` has
//! committed, so snapshots never run ahead of the committed offsets.
//!
//! Delivery: at least once, and none is required. A lost or incomplete
//! snapshot only makes a later restore replay more.
//!
//! Records: key `<p>/<chunk>`, value a header (partition, offset, chunk,
//! chunk count) and up to `CHUNK` bytes of `Engine::snapshot`. The topic is
//! compacted, which keeps the newest chunk of each number; generations are
//! told apart by their offset.

use orelink_domain::catalog::Catalog;
use orelink_domain::freight::Network;
use orelink_domain::matching::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of snapshot per record: well under the broker's and librdkafka's
/// default message size limits, so the topic needs no settings of its own.
const CHUNK: usize = 256 * 1024;
const MAGIC: &[u8; 4] = b"OLSN";
const HEADER: usize = MAGIC.len() + 4 + 8 + 4 + 4;

/// Whether a partition's book is due for a snapshot, `since` events after
/// the last one, with `offset` events behind it. At least `every` events
/// apart, and at least an eighth of the history: a snapshot holds all the
/// engine remembers, which grows with the history, so a fixed interval would
/// write more snapshot than input once the history is long (at ~90 bytes of
/// snapshot per event remembered, a 20M-event book every 500k events would
/// be ~3.5 KB written per input event; an eighth keeps it near 700).
pub fn due(since: u64, every: u64, offset: i64) -> bool {
    every > 0 && since >= every && since.saturating_mul(8) >= offset.max(0) as u64
}

/// Where a chunk belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    partition: i32,
    offset: i64,
    chunk: u32,
    count: u32,
}

/// The records of one snapshot: `(key, value)` per chunk.
fn chunks(partition: i32, offset: i64, bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let parts: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(CHUNK).collect() };
    let count = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let mut v = Vec::with_capacity(HEADER + part.len());
            v.extend_from_slice(MAGIC);
            v.extend_from_slice(&partition.to_le_bytes());
            v.extend_from_slice(&offset.to_le_bytes());
            v.extend_from_slice(&(i as u32).to_le_bytes());
            v.extend_from_slice(&count.to_le_bytes());
            v.extend_from_slice(part);
            (format!("{partition}/{i}"), v)
        })
        .collect()
}

fn header(value: &[u8]) -> Option<(Header, &[u8])> {
    if value.len() < HEADER || &value[..4] != MAGIC {
        return None;
    }
    let n = |r: std::ops::Range<usize>| &value[r];
    let h = Header {
        partition: i32::from_le_bytes(n(4..8).try_into().ok()?),
        offset: i64::from_le_bytes(n(8..16).try_into().ok()?),
        chunk: u32::from_le_bytes(n(16..20).try_into().ok()?),
        count: u32::from_le_bytes(n(20..24).try_into().ok()?),
    };
    (h.chunk < h.count).then_some((h, &value[HEADER..]))
}

/// Collects the chunks of one partition's snapshots as they are read and
/// keeps the generations that may still be chosen: complete ones at or
/// below `upto`, newest first, and the ones still being read.
struct Assembly {
    partition: i32,
    upto: i64,
    /// By snapshot offset: the chunk count and the chunks seen.
    generations: BTreeMap<i64, (u32, BTreeMap<u32, Vec<u8>>)>,
}

impl Assembly {
    fn new(partition: i32, upto: i64) -> Assembly {
        Assembly { partition, upto, generations: BTreeMap::new() }
    }

    fn add(&mut self, value: &[u8]) {
        let Some((h, data)) = header(value) else { return };
        if h.partition != self.partition || h.offset > self.upto || h.offset < 0 {
            return;
        }
        let (count, parts) = self.generations.entry(h.offset).or_insert_with(|| (h.count, BTreeMap::new()));
        if *count != h.count {
            // Two writers disagreeing on one offset: the later one stands.
            *count = h.count;
            parts.clear();
        }
        parts.insert(h.chunk, data.to_vec());
        // Once a generation is complete, older ones can no longer be chosen.
        if parts.len() as u32 == *count {
            self.generations = self.generations.split_off(&h.offset);
        }
    }

    fn has_complete(&self) -> bool {
        self.generations.values().any(|(count, parts)| parts.len() as u32 == *count)
    }

    /// Complete generations, newest first: (offset, bytes). Only the newest
    /// complete one is kept while reading (compaction removes the older ones
    /// anyway), so a refused snapshot usually means a replay from the start.
    fn complete(self) -> impl Iterator<Item = (i64, Vec<u8>)> {
        self.generations.into_iter().rev().filter_map(|(offset, (count, parts))| (parts.len() as u32 == count).then(|| (offset, parts.into_values().flatten().collect())))
    }
}

/// Logs a chunk that could not be written; the next snapshot replaces it.
pub(crate) struct LogFailures;

impl ClientContext for LogFailures {}

impl ProducerContext for LogFailures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            tracing::warn!(error = %e, partition = m.partition(), "a snapshot chunk was not written; until the next snapshot, restores replay more");
        }
    }
}

/// Publishes snapshots.
pub struct Store {
    producer: ThreadedProducer<LogFailures>,
    topic: String,
    partitions: i32,
}

impl Store {
    pub fn new(config: &ClientConfig, topic: String) -> Result<Store, rdkafka::error::KafkaError> {
        let producer: ThreadedProducer<LogFailures> = config.create_with_context(LogFailures)?;
        let partitions = partition_count(producer.client(), &topic)?;
        Ok(Store { producer, topic, partitions })
    }

    /// Queues the snapshot of input partition `p` at `offset`; returns at once.
    pub fn publish(&self, p: i32, offset: i64, bytes: &[u8]) {
        let target = p.rem_euclid(self.partitions);
        for (key, value) in chunks(p, offset, bytes) {
            let record = BaseRecord::to(&self.topic).key(&key).payload(&value).partition(target);
            if let Err(e) = orelink_platform::txn::send_waiting(&self.producer, record) {
                tracing::warn!(error = %e, partition = p, offset, "a snapshot could not be queued; the next one replaces it");
                return;
            }
        }
    }

    /// Waits for the snapshots queued so far (a clean stop publishes them).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "snapshots still queued at the stop were not all written");
        }
    }
}

fn partition_count<C: ClientContext>(client: &rdkafka::client::Client<C>, topic: &str) -> Result<i32, rdkafka::error::KafkaError> {
    let md = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md.topics().first().map_or(0, |t| t.partitions().len() as i32);
    if n == 0 {
        return Err(rdkafka::error::KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition));
    }
    Ok(n)
}

/// The newest usable snapshot of input partition `p` at or below `upto`:
/// the engine and the offset to replay from. `None` (logged when something
/// was there) means replay from the start.
pub fn load(config: &ClientConfig, topic: &str, p: i32, upto: i64, network: &Arc<Network>, catalog: &Catalog, dedup_horizon_ms: i64) -> Option<(Engine, i64)> {
    let started = Instant::now();
    let result = read(config, topic, p, upto);
    let assembly = match result {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(partition = p, error = %e, "snapshots could not be read; replaying the whole input");
            return None;
        }
    };
    let read_ms = started.elapsed().as_millis() as u64;
    for (offset, bytes) in assembly.complete() {
        match Engine::from_snapshot_under(network.clone(), &bytes, dedup_horizon_ms) {
            Ok(engine) if !engine.agrees_with(catalog) => {
                tracing::warn!(partition = p, offset, "a snapshot was refused (taken with other grade ladders in the catalog)");
            }
            Ok(engine) => {
                tracing::info!(partition = p, offset, bytes = bytes.len(), read_ms, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot loaded");
                return Some((engine, offset));
            }
            Err(e) => tracing::warn!(partition = p, offset, error = %e, "a snapshot was refused (another format, network or dedup horizon, or damaged)"),
        }
    }
    None
}

/// Reads the end of the snapshot partition: a window of the last records,
/// widened until it holds a complete snapshot of `p` (or the whole
/// partition). Compaction keeps older generations around for a while (until
/// their segments roll), and reading them all would make a restore slower
/// the longer the matcher ran; generations are written one after another,
/// so the first window that holds a complete one holds the newest.
fn read(config: &ClientConfig, topic: &str, p: i32, upto: i64) -> Result<Assembly, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = crate::processor::bulk_reader(config).create()?;
    let target = p.rem_euclid(partition_count(consumer.client(), topic)?);
    let (low, high) = consumer.fetch_watermarks(topic, target, Duration::from_secs(10))?;
    newest(low, high, 1024, |from| read_range(&consumer, topic, target, p, upto, from, high))
}

/// Reads `[from, high)` through `read` for ever earlier `from`, the window
/// growing fourfold from `first` records, until what was read holds a
/// complete snapshot or `from` reached `low`.
fn newest<E>(low: i64, high: i64, first: i64, mut read: impl FnMut(i64) -> Result<Assembly, E>) -> Result<Assembly, E> {
    let mut window = first.max(1);
    loop {
        let from = high.saturating_sub(window).max(low);
        let assembly = read(from)?;
        if from == low || assembly.has_complete() {
            return Ok(assembly);
        }
        window = window.saturating_mul(4);
    }
}

/// The chunks of `p`'s snapshots in offsets `[from, high)` of the snapshot partition.
fn read_range(consumer: &BaseConsumer, topic: &str, target: i32, p: i32, upto: i64, from: i64, high: i64) -> Result<Assembly, rdkafka::error::KafkaError> {
    let mut assembly = Assembly::new(p, upto);
    if high <= from {
        return Ok(assembly);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, target, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let prefix = format!("{p}/");
    loop {
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                if m.key().is_some_and(|k| k.starts_with(prefix.as_bytes()))
                    && let Some(v) = m.payload()
                {
                    assembly.add(v);
                }
                if m.offset() + 1 >= high {
                    return Ok(assembly);
                }
            }
            Some(Err(e)) => return Err(e),
            // Everything below the high watermark is there to read at once:
            // a poll that waited in vain means the rest was compacted away.
            None => return Ok(assembly),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assembled(p: i32, upto: i64, records: &[(String, Vec<u8>)]) -> Vec<(i64, Vec<u8>)> {
        let mut a = Assembly::new(p, upto);
        for (_, v) in records {
            a.add(v);
        }
        a.complete().collect()
    }

    #[test]
    fn a_snapshot_is_chunked_and_put_back_together() {
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        let records = chunks(3, 1_000, &bytes);
        assert_eq!(records.len(), 3);
        assert_eq!(records.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["3/0", "3/1", "3/2"]);
        assert!(records.iter().all(|(_, v)| v.len() <= HEADER + CHUNK));
        assert_eq!(assembled(3, 1_000, &records), vec![(1_000, bytes.clone())]);
        // Another partition's snapshot, or one beyond the committed offset, is not taken.
        assert!(assembled(4, 1_000, &records).is_empty());
        assert!(assembled(3, 999, &records).is_empty());
    }

    #[test]
    fn the_newest_complete_generation_comes_first_and_incomplete_ones_never() {
        let old = chunks(0, 10, &vec![1u8; CHUNK + 1]);
        let new = chunks(0, 20, &vec![2u8; CHUNK + 1]);
        let newest = chunks(0, 30, &vec![3u8; CHUNK + 1]);
        // The newest lost its second chunk; compaction had replaced the old one's first.
        let log: Vec<_> = [old[1].clone(), new[0].clone(), new[1].clone(), newest[0].clone()].into();
        let got = assembled(0, 100, &log);
        assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [20]);
        assert_eq!(got[0].1, vec![2u8; CHUNK + 1]);
        // An empty engine's snapshot still makes one record.
        assert_eq!(assembled(0, 5, &chunks(0, 5, &[])), vec![(5, vec![])]);
    }

    #[test]
    fn snapshots_are_due_every_so_many_events_or_an_eighth_of_the_history() {
        assert!(!due(499_999, 500_000, 1_000_000));
        assert!(due(500_000, 500_000, 1_000_000));
        assert!(due(500_000, 500_000, 4_000_000));
        assert!(!due(500_000, 500_000, 4_000_001));
        assert!(due(2_500_000, 500_000, 20_000_000));
        assert!(!due(10_000_000, 0, 1), "0 turns snapshots off");
    }

    #[test]
    fn reading_starts_at_the_end_and_widens_only_until_a_snapshot_is_complete() {
        let big = vec![5u8; 2 * CHUNK + 1];
        // Ten generations of three chunks each; then one of the eleventh's three.
        let mut log: Vec<Vec<u8>> = (1..=10).flat_map(|g| chunks(0, g * 10, &big).into_iter().map(|(_, v)| v)).collect();
        let read = |log: &[Vec<u8>], from: i64, reads: &mut Vec<i64>| {
            reads.push(from);
            let mut a = Assembly::new(0, 1_000);
            log[from as usize..].iter().for_each(|v| a.add(v));
            Ok::<_, ()>(a)
        };
        let mut reads = Vec::new();
        let got = newest(0, log.len() as i64, 4, |from| read(&log, from, &mut reads)).unwrap();
        assert_eq!(reads, [26], "the last four records hold the newest generation");
        assert_eq!(got.complete().next().map(|(o, b)| (o, b.len())), Some((100, big.len())));

        log.push(chunks(0, 110, &big)[0].1.clone());
        let mut reads = Vec::new();
        let got = newest(0, log.len() as i64, 2, |from| read(&log, from, &mut reads)).unwrap();
        assert_eq!(reads, [29, 23], "widened once, past the incomplete newest generation");
        assert_eq!(got.complete().next().map(|(o, _)| o), Some(100));

        // Nothing complete anywhere: the whole partition is read, once.
        let mut reads = Vec::new();
        let got = newest(0, 2, 1, |from| read(&log[..2], from, &mut reads)).unwrap();
        assert_eq!(reads, [1, 0]);
        assert!(!got.has_complete());
    }

    #[test]
    fn damaged_values_are_ignored() {
        let mut records = chunks(1, 7, b"state");
        records[0].1[0] ^= 0xff;
        assert!(assembled(1, 7, &records).is_empty());
        assert!(header(b"OLSN").is_none());
    }
}
