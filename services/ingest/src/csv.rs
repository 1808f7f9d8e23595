//! CSV exports from MES/ERP systems as the JSON events the HTTP API takes: a
//! file's name says its kind (`orders*.csv`, `capacity*.csv`,
//! `inventory*.csv`, `shipments*.csv`), its header row names the record's
//! fields, and each cell is typed by the Avro schema (an empty cell is null
//! where the field may be). Pure: the edge relay reads and moves the files.

use crate::Kind;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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

/// The text of an export: UTF-8 (its BOM dropped), else GB18030, which
/// covers GBK, as Chinese ERP, MES and weighbridge systems write; bytes that
/// are neither refuse the file.
pub fn decode(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Ok(s.into());
    }
    encoding_rs::GB18030
        .decode_without_bom_handling_and_without_replacement(bytes)
        .ok_or_else(|| "the file is neither UTF-8 nor GB18030/GBK text".to_owned())
}

/// The kind of event a file holds, by its name.
pub fn kind_of(name: &str) -> Option<Kind> {
    [("orders", Kind::Order), ("capacity", Kind::Capacity), ("inventory", Kind::Inventory), ("shipments", Kind::Shipment)]
        .into_iter()
        .find(|(p, _)| name.starts_with(p))
        .map(|(_, k)| k)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_typed_by_the_schema_and_bad_rows_say_why() {
        let avro: Value = serde_json::from_str(include_str!("../../../schemas/InventoryEvent.avsc")).unwrap();
        let text = "event_id,event_time,site_id,product_code,on_hand_kg,reserved_kg\ne1,1795000000000,hechi-dachang-tin,SN-INGOT-SN99.90,5000,0\ne2,soon,hechi-dachang-tin,SN-INGOT-SN99.90,5000,0\n";
        let got = rows(&avro, text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap()["on_hand_kg"], 5000);
        assert!(got[1].as_ref().unwrap_err().contains("event_time"), "{:?}", got[1]);
        assert!(rows(&avro, "event_id,colour\n").is_err(), "unknown columns refuse the file");
    }

    #[test]
    fn gbk_and_utf8_exports_decode_to_the_same_text() {
        let text = "event_id,site_id\n库存-1,hechi-dachang-tin\n";
        let (gbk, _, lossy) = encoding_rs::GBK.encode(text);
        assert!(!lossy);
        assert!(std::str::from_utf8(&gbk).is_err(), "the GBK bytes are not UTF-8");
        assert_eq!(decode(&gbk).unwrap(), text);
        assert_eq!(decode(text.as_bytes()).unwrap(), text);
        let bom = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
        assert_eq!(decode(&bom).unwrap(), text, "a UTF-8 BOM is not part of the header");
        assert!(decode(&[0x81, 0x20]).is_err(), "a lone GB18030 lead byte");
    }

    #[test]
    fn file_names_say_their_kind() {
        assert_eq!(kind_of("orders-2026-12-04.csv"), Some(Kind::Order));
        assert_eq!(kind_of("inventory.csv"), Some(Kind::Inventory));
        assert_eq!(kind_of("weighbridge.csv"), None);
    }
}
