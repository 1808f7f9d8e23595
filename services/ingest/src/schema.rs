//! The request bodies' JSON Schemas, derived from the contract's Avro schemas
//! (so the OpenAPI document cannot drift from the contract), and a check of a
//! JSON body against them that reports every problem, not just the first.

use serde_json::{Map, Value, json};

/// JSON Schema (OpenAPI 3.1 dialect) of an Avro schema document.
pub fn json_schema(avro: &Value) -> Value {
    match avro {
        Value::String(t) => primitive(t),
        Value::Array(branches) => {
            let any: Vec<Value> = branches.iter().map(json_schema).collect();
            json!({ "anyOf": any })
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("record") => {
                let mut props = Map::new();
                let mut required = Vec::new();
                for f in o.get("fields").and_then(Value::as_array).into_iter().flatten() {
                    let name = f["name"].as_str().unwrap_or_default().to_owned();
                    let mut s = json_schema(&f["type"]);
                    if let (Some(doc), Value::Object(m)) = (f.get("doc"), &mut s) {
                        m.insert("description".into(), doc.clone());
                    }
                    if f.get("default").is_none() {
                        required.push(Value::String(name.clone()));
                    }
                    props.insert(name, s);
                }
                json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false })
            }
            Some("enum") => json!({ "type": "string", "enum": o.get("symbols").cloned().unwrap_or(Value::Array(vec![])) }),
            Some("array") => json!({ "type": "array", "items": json_schema(&o["items"]) }),
            Some("long") if o.get("logicalType").and_then(Value::as_str) == Some("timestamp-millis") => {
                json!({ "type": "integer", "format": "int64", "description": "epoch milliseconds" })
            }
            Some(t) => primitive(t),
            None => json!({}),
        },
        _ => json!({}),
    }
}

fn primitive(t: &str) -> Value {
    match t {
        "null" => json!({ "type": "null" }),
        "boolean" => json!({ "type": "boolean" }),
        "int" => json!({ "type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX }),
        "long" => json!({ "type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX }),
        "float" | "double" => json!({ "type": "number" }),
        "string" => json!({ "type": "string" }),
        "bytes" => json!({ "type": "string", "contentEncoding": "base64" }),
        _ => json!({}),
    }
}

/// Every way `value` misses `avro`, each with the path of the field.
pub fn check(avro: &Value, value: &Value, path: &str, problems: &mut Vec<(String, String)>) {
    let mut bad = |msg: String| problems.push((if path.is_empty() { "body".into() } else { path.to_owned() }, msg));
    match avro {
        Value::String(t) => {
            if !primitive_ok(t, value) {
                bad(format!("expected {}, got {}", describe(t), kind(value)));
            }
        }
        Value::Array(branches) => {
            let fits = branches.iter().any(|b| {
                let mut p = Vec::new();
                check(b, value, path, &mut p);
                p.is_empty()
            });
            if !fits {
                let names: Vec<String> = branches.iter().map(|b| b.as_str().map(describe).unwrap_or_else(|| "a value".into())).collect();
                bad(format!("expected {}, got {}", names.join(" or "), kind(value)));
            }
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("record") => {
                let Some(obj) = value.as_object() else {
                    bad(format!("expected an object, got {}", kind(value)));
                    return;
                };
                let fields: Vec<&Value> = o.get("fields").and_then(Value::as_array).map(|v| v.iter().collect()).unwrap_or_default();
                for f in &fields {
                    let name = f["name"].as_str().unwrap_or_default();
                    let at = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
                    match obj.get(name) {
                        Some(v) => check(&f["type"], v, &at, problems),
                        None if f.get("default").is_some() => {}
                        None => problems.push((at, "is required".into())),
                    }
                }
                for k in obj.keys().filter(|k| !fields.iter().any(|f| f["name"] == **k)) {
                    let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    problems.push((at, "is not a field of this record".into()));
                }
            }
            Some("enum") => {
                let symbols: Vec<&str> = o.get("symbols").and_then(Value::as_array).map(|s| s.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                if !value.as_str().is_some_and(|v| symbols.contains(&v)) {
                    bad(format!("expected one of {}", symbols.join(", ")));
                }
            }
            Some("array") => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        check(&o["items"], item, &format!("{path}[{i}]"), problems);
                    }
                }
                None => bad(format!("expected an array, got {}", kind(value))),
            },
            Some(t) => {
                if !primitive_ok(t, value) {
                    bad(format!("expected {}, got {}", describe(t), kind(value)));
                }
            }
            None => bad("the schema has no type".into()),
        },
        _ => bad("the schema is not understood".into()),
    }
}

fn primitive_ok(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "int" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "long" => v.as_i64().is_some(),
        "float" | "double" => v.is_number(),
        "string" | "bytes" => v.is_string(),
        _ => false,
    }
}

fn describe(t: &str) -> String {
    match t {
        "int" => "a 32-bit integer".into(),
        "long" => "a 64-bit integer".into(),
        "string" => "a string".into(),
        "boolean" => "true or false".into(),
        "double" | "float" => "a number".into(),
        "null" => "null".into(),
        other => other.into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer (or one out of range)",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_schema() -> Value {
        serde_json::from_str(include_str!("../../../schemas/OrderEvent.avsc")).unwrap()
    }

    #[test]
    fn every_problem_of_a_body_is_reported() {
        let body = json!({"event_id": 5, "kind": "SOLD", "quantity_kg": "many", "colour": "red"});
        let mut p = Vec::new();
        check(&order_schema(), &body, "", &mut p);
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        for f in ["event_id", "kind", "quantity_kg", "colour", "order_id", "deliver_by"] {
            assert!(fields.contains(&f), "{f} missing from {p:?}");
        }
    }

    #[test]
    fn json_schema_requires_what_avro_requires() {
        let s = json_schema(&order_schema());
        assert_eq!(s["additionalProperties"], false);
        assert!(s["required"].as_array().unwrap().contains(&json!("buyer_id")));
        assert_eq!(s["properties"]["kind"]["enum"], json!(["PLACED", "AMENDED", "CANCELLED"]));
    }
}
