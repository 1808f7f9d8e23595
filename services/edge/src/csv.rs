//! CSV exports from MES/ERP systems, dropped into the relay's watched folder.
//!
//! A file's name says its kind (`orders*.csv`, `capacity*.csv`,
//! `inventory*.csv`, `shipments*.csv`); its header row names the record's
//! fields; each row becomes the JSON the HTTP API takes, typed by the Avro
//! schema (empty cells are null where the field may be). Valid rows are queued
//! in one transaction together with the file's name (so a file seen again
//! after a crash is not queued twice); invalid rows go to
//! `<name>.rejected.csv` with a `reason` column; the file moves to `done/`.

use crate::{Entry, Queue};
use orelink_gateway::{Kind, parse};
use orelink_platform::Reference;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The rows of an export as JSON events, or why each row is not one; a header
/// naming no field of the record refuses the whole file.
pub fn rows(avro: &Value, text: &str) -> Result<Vec<Result<Value, String>>, String> {
    let fields: BTreeMap<&str, &Value> = avro["fields"].as_array().into_iter().flatten().filter_map(|f| Some((f["name"].as_str()?, &f["type"]))).collect();
    let mut reader = ::csv::ReaderBuilder::new().trim(::csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> = reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_owned).collect();
    let unknown: Vec<&String> = headers.iter().filter(|h| !fields.contains_key(h.as_str())).collect();
    if !unknown.is_empty() {
        return Err(format!("columns {unknown:?} are not fields of the record"));
    }
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let row = match rec {
            Ok(r) => r,
            Err(e) => {
                out.push(Err(format!("row {}: {e}", i + 2)));
                continue;
            }
        };
        let mut obj = Map::new();
        let mut problems = Vec::new();
        for (h, cell) in headers.iter().zip(row.iter()) {
            match typed(fields[h.as_str()], cell) {
                Ok(v) => {
                    obj.insert(h.clone(), v);
                }
                Err(e) => problems.push(format!("{h}: {e}")),
            }
        }
        out.push(if problems.is_empty() { Ok(Value::Object(obj)) } else { Err(problems.join("; ")) });
    }
    Ok(out)
}

/// A cell as the JSON value the field's Avro type wants.
fn typed(avro: &Value, cell: &str) -> Result<Value, String> {
    match avro {
        Value::Array(branches) => {
            if cell.is_empty() && branches.iter().any(|b| b == "null") {
                return Ok(Value::Null);
            }
            branches.iter().filter(|b| *b != "null").find_map(|b| typed(b, cell).ok()).ok_or_else(|| format!("{cell:?} fits none of its types"))
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("enum") => Ok(Value::String(cell.to_owned())),
            Some(t) => typed(&Value::String(t.to_owned()), cell),
            None => Err("no type".into()),
        },
        Value::String(t) => match t.as_str() {
            "string" => Ok(Value::String(cell.to_owned())),
            "int" | "long" => cell.parse::<i64>().map(Value::from).map_err(|_| format!("{cell:?} is not an integer")),
            "float" | "double" => cell.parse::<f64>().map(Value::from).map_err(|_| format!("{cell:?} is not a number")),
            "boolean" => cell.parse::<bool>().map(Value::from).map_err(|_| format!("{cell:?} is not true or false")),
            other => Err(format!("unsupported type {other}")),
        },
        _ => Err("no type".into()),
    }
}

fn kind_of(name: &str) -> Option<Kind> {
    [("orders", Kind::Order), ("capacity", Kind::Capacity), ("inventory", Kind::Inventory), ("shipments", Kind::Shipment)]
        .into_iter()
        .find(|(p, _)| name.starts_with(p))
        .map(|(_, k)| k)
}

/// Takes in every CSV export waiting in `dir`; returns the rows queued.
pub fn scan(dir: &Path, queue: &Queue, reference: &Reference, avro: &BTreeMap<&'static str, Value>) -> Result<usize, crate::EdgeError> {
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
        if !queue.file_done(&name)? {
            let text = std::fs::read_to_string(&path).map_err(crate::store)?;
            let mut entries = Vec::new();
            let mut rejected = Vec::new();
            match rows(&avro[kind.record()], &text) {
                Err(e) => rejected.push((0, e)),
                Ok(rs) => {
                    for (i, r) in rs.into_iter().enumerate() {
                        let checked = r.and_then(|v| parse(reference, avro, kind, &v, "").map(|_| v).map_err(|e| rejection(&e)));
                        match checked {
                            Ok(v) => entries.push(serde_json::to_vec(&Entry { kind, event: v }).expect("serialises")),
                            Err(e) => rejected.push((i + 2, e)),
                        }
                    }
                }
            }
            if queue.push_all(&entries, Some(&name))?.is_none() {
                tracing::warn!(file = name, rows = entries.len(), "the queue is full: the file waits");
                continue;
            }
            queued += entries.len();
            if !rejected.is_empty() {
                let mut w = ::csv::Writer::from_path(dir.join(format!("{name}.rejected.csv"))).map_err(crate::store)?;
                w.write_record(["line", "reason"]).map_err(crate::store)?;
                for (line, why) in &rejected {
                    w.write_record([line.to_string().as_str(), why.as_str()]).map_err(crate::store)?;
                }
                w.flush().map_err(crate::store)?;
            }
            tracing::info!(file = name, queued = entries.len(), rejected = rejected.len(), "CSV export taken in");
        }
        std::fs::rename(&path, done.join(&name)).map_err(crate::store)?;
    }
    Ok(queued)
}

fn rejection(e: &orelink_gateway::ApiError) -> String {
    match e {
        orelink_gateway::ApiError::Invalid(p) => p.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}
