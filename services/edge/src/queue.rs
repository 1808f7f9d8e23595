//! The relay's durable queue (redb): sequence number -> entry in QUEUE, the
//! next sequence number and the queued bytes in META, CSV exports taken in by
//! content hash in FILES. Each write transaction is fsync'd when it commits.

use crate::{EdgeError, store};
use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition};
use std::path::{Path, PathBuf};

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// CSV exports already queued (content hash -> first sequence number), so a file
/// seen again after a crash between queueing and moving it is not queued twice.
const FILES: TableDefinition<&str, u64> = TableDefinition::new("files");

pub struct Queue {
    db: Database,
    max_bytes: u64,
    moved_aside: Option<PathBuf>,
}

impl Queue {
    /// Opens (or makes) the queue in `dir`. A store file redb finds corrupted
    /// is moved aside, kept for whoever can recover it, and a new queue
    /// started, so the site can go on sending; `moved_aside` names the file.
    /// Any other failure (the file held by another relay, say) is an error.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Queue, EdgeError> {
        std::fs::create_dir_all(dir).map_err(store)?;
        let path = dir.join("queue.redb");
        let mut moved_aside = None;
        // redb says Corrupted, or InvalidData for a file that is not a redb file at all.
        let corrupted = |e: &DatabaseError| match e {
            DatabaseError::Storage(StorageError::Corrupted(_)) => true,
            DatabaseError::Storage(StorageError::Io(io)) => matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof),
            _ => false,
        };
        let db = match Database::create(&path) {
            Err(e) if corrupted(&e) => {
                let why = e.to_string();
                let aside = dir.join(format!("queue.redb.corrupt-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())));
                std::fs::rename(&path, &aside).map_err(store)?;
                tracing::error!(file = %aside.display(), reason = why, "THE RELAY'S QUEUE FILE IS CORRUPTED: moved aside and kept; a new queue is started. Events in it were not forwarded.");
                moved_aside = Some(aside);
                Database::create(&path).map_err(store)?
            }
            other => other.map_err(store)?,
        };
        let w = db.begin_write().map_err(store)?;
        {
            w.open_table(QUEUE).map_err(store)?;
            w.open_table(META).map_err(store)?;
            w.open_table(FILES).map_err(store)?;
        }
        w.commit().map_err(store)?;
        Ok(Queue { db, max_bytes, moved_aside })
    }

    /// Where a corrupted store file was moved when this queue was opened.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.moved_aside.as_deref()
    }

    /// Appends durably (the commit is fsync'd) one entry (JSON `{kind, event, traceparent?}`) as it is, with
    /// no check: its sequence number, or None when the queue is full. The
    /// forwarder checks every entry again before it goes to Kafka.
    pub fn push(&self, entry: &[u8]) -> Result<Option<u64>, EdgeError> {
        Ok(self.push_all(&[entry.to_vec()], None)?.map(|(first, _)| first))
    }

    /// Appends all entries in one transaction, or none when they do not fit;
    /// `file` records the CSV export they came from. The first and last sequence numbers.
    pub(crate) fn push_all(&self, entries: &[Vec<u8>], file: Option<&str>) -> Result<Option<(u64, u64)>, EdgeError> {
        let size: u64 = entries.iter().map(|e| e.len() as u64).sum();
        let w = self.db.begin_write().map_err(store)?;
        let range = {
            let mut meta = w.open_table(META).map_err(store)?;
            let bytes = meta.get("bytes").map_err(store)?.map(|v| v.value()).unwrap_or(0);
            if bytes + size > self.max_bytes {
                return Ok(None);
            }
            let first = meta.get("next").map_err(store)?.map(|v| v.value()).unwrap_or(1);
            let mut q = w.open_table(QUEUE).map_err(store)?;
            for (i, e) in entries.iter().enumerate() {
                q.insert(first + i as u64, e.as_slice()).map_err(store)?;
            }
            meta.insert("next", first + entries.len() as u64).map_err(store)?;
            meta.insert("bytes", bytes + size).map_err(store)?;
            if let Some(f) = file {
                w.open_table(FILES).map_err(store)?.insert(f, first).map_err(store)?;
            }
            (first, (first + entries.len() as u64).saturating_sub(1))
        };
        w.commit().map_err(store)?;
        Ok(Some(range))
    }

    pub(crate) fn file_done(&self, name: &str) -> Result<bool, EdgeError> {
        let r = self.db.begin_read().map_err(store)?;
        Ok(r.open_table(FILES).map_err(store)?.get(name).map_err(store)?.is_some())
    }

    /// Up to `n` entries from the front.
    pub(crate) fn front(&self, n: usize) -> Result<Vec<(u64, Vec<u8>)>, EdgeError> {
        let r = self.db.begin_read().map_err(store)?;
        let q = r.open_table(QUEUE).map_err(store)?;
        let mut out = Vec::new();
        for item in q.iter().map_err(store)?.take(n) {
            let (k, v) = item.map_err(store)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Drops every entry up to and including `seq` (Kafka has them).
    pub(crate) fn drop_through(&self, seq: u64) -> Result<u64, EdgeError> {
        let w = self.db.begin_write().map_err(store)?;
        let dropped = {
            let mut q = w.open_table(QUEUE).map_err(store)?;
            let mut freed = 0u64;
            let mut n = 0u64;
            let keys: Vec<u64> = q.range(..=seq).map_err(store)?.filter_map(|r| r.ok()).map(|(k, v)| {
                freed += v.value().len() as u64;
                k.value()
            }).collect();
            for k in keys {
                q.remove(k).map_err(store)?;
                n += 1;
            }
            let mut meta = w.open_table(META).map_err(store)?;
            let bytes = meta.get("bytes").map_err(store)?.map(|v| v.value()).unwrap_or(0);
            meta.insert("bytes", bytes.saturating_sub(freed)).map_err(store)?;
            n
        };
        w.commit().map_err(store)?;
        Ok(dropped)
    }

    pub fn backlog(&self) -> Result<(u64, u64), EdgeError> {
        let r = self.db.begin_read().map_err(store)?;
        let q = r.open_table(QUEUE).map_err(store)?;
        let meta = r.open_table(META).map_err(store)?;
        let bytes = meta.get("bytes").map_err(store)?.map(|v| v.value()).unwrap_or(0);
        Ok((q.len().map_err(store)?, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_survives_reopening_and_refuses_when_full() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Queue::open(dir.path(), 100).unwrap();
            assert_eq!(q.push(&[1; 40]).unwrap(), Some(1));
            assert_eq!(q.push(&[2; 40]).unwrap(), Some(2));
            assert_eq!(q.push(&[3; 40]).unwrap(), None, "over the byte bound");
        }
        let q = Queue::open(dir.path(), 100).unwrap();
        assert_eq!(q.backlog().unwrap(), (2, 80));
        assert_eq!(q.front(10).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(q.drop_through(1).unwrap(), 1);
        assert_eq!(q.backlog().unwrap(), (1, 40));
        assert_eq!(q.push(&[4; 40]).unwrap(), Some(3), "sequence numbers never go back");
    }

    #[test]
    fn a_corrupted_store_is_moved_aside_and_kept_and_a_new_queue_started() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = vec![0xA5u8; 8192];
        std::fs::write(dir.path().join("queue.redb"), &garbage).unwrap();
        let q = Queue::open(dir.path(), 1000).unwrap();
        let aside = q.moved_aside().expect("the corrupted file was moved aside").to_owned();
        assert_eq!(std::fs::read(&aside).unwrap(), garbage, "kept as it was");
        assert_eq!(q.push(b"{}").unwrap(), Some(1), "the new queue takes events");
        drop(q);
        let q = Queue::open(dir.path(), 1000).unwrap();
        assert!(q.moved_aside().is_none(), "a sound file is left where it is");
        assert_eq!(q.backlog().unwrap().0, 1);
    }
}
