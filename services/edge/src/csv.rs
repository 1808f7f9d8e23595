//! CSV exports from MES/ERP systems, dropped into the relay's watched folder.
//!
//! A file's name says its kind (`orders*.csv`, `capacity*.csv`,
//! `inventory*.csv`, `shipments*.csv`); its header row names the record's
//! fields; each row becomes the JSON the HTTP API takes, typed by the Avro
//! schema (empty cells are null where the field may be). UTF-8 and GB18030
//! (GBK) files are both read. Valid rows are queued in one transaction
//! together with the file's content hash, so a file seen again after a crash
//! is not queued twice while a new export under an old name is; invalid rows
//! go to `<name>.rejected.csv` with a `reason` column; the file moves to
//! `done/`. Neither name is ever overwritten: a later one gets its hash.

use crate::{Entry, Queue};
use orelink_ingest::csv::{decode, kind_of, rows};
use orelink_ingest::{Documents, parse};
use orelink_platform::Reference;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `dir/name`, or with the content hash before its suffix (`.csv`,
/// `.rejected.csv`) when a file of that name is already there.
fn unused(dir: &Path, name: &str, hash: &str) -> PathBuf {
    let plain = dir.join(name);
    if !plain.exists() {
        return plain;
    }
    let suffix = [".rejected.csv", ".csv"].into_iter().find(|s| name.ends_with(s)).unwrap_or("");
    dir.join(format!("{}.{}{suffix}", &name[..name.len() - suffix.len()], &hash[..12]))
}

/// Takes in every CSV export waiting in `dir`; returns the rows queued.
pub fn scan(dir: &Path, queue: &Queue, reference: &Reference, avro: &Documents, site: &str) -> Result<usize, crate::EdgeError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(crate::store)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".csv") && !n.ends_with(".rejected.csv"))
        .collect();
    names.sort();
    let done = dir.join("done");
    std::fs::create_dir_all(&done).map_err(crate::store)?;
    let mut queued = 0;
    for name in names {
        let path = dir.join(&name);
        let Some(kind) = kind_of(&name) else {
            tracing::warn!(file = name, "not orders*, capacity*, inventory* or shipments*: left alone");
            continue;
        };
        let bytes = std::fs::read(&path).map_err(crate::store)?;
        let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("sha256:{hash}");
        if !queue.file_done(&id)? {
            let mut entries = Vec::new();
            let mut rejected = Vec::new();
            match decode(&bytes).and_then(|text| rows(&avro[kind.record()], &text)) {
                Err(e) => rejected.push((0, e)),
                Ok(rs) => {
                    for (i, r) in rs.into_iter().enumerate() {
                        let checked = r.and_then(|v| parse(reference, avro, kind, &v, "").map(|_| v).map_err(|e| e.reason())).and_then(|v| {
                            // The relay's own site only, as over HTTP.
                            let sites = crate::sites_of(kind, &v);
                            if sites.contains(&site) { Ok(v) } else { Err(format!("this relay serves site {site}; the row is for {}", sites.join(" -> "))) }
                        });
                        match checked {
                            Ok(v) => entries.push(serde_json::to_vec(&Entry { kind, event: v, traceparent: None }).expect("serialises")),
                            Err(e) => rejected.push((i + 2, e)),
                        }
                    }
                }
            }
            if queue.push_all(&entries, Some(&id))?.is_none() {
                tracing::warn!(file = name, rows = entries.len(), "the queue is full: the file waits");
                continue;
            }
            queued += entries.len();
            if !rejected.is_empty() {
                let mut w = ::csv::Writer::from_path(unused(dir, &format!("{name}.rejected.csv"), &hash)).map_err(crate::store)?;
                w.write_record(["line", "reason"]).map_err(crate::store)?;
                for (line, why) in &rejected {
                    w.write_record([line.to_string().as_str(), why.as_str()]).map_err(crate::store)?;
                }
                w.flush().map_err(crate::store)?;
            }
            tracing::info!(file = name, queued = entries.len(), rejected = rejected.len(), "CSV export taken in");
        }
        std::fs::rename(&path, unused(&done, &name, &hash)).map_err(crate::store)?;
    }
    Ok(queued)
}
