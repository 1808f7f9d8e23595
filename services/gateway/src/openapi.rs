//! The gateway's OpenAPI 3.1 document, built from the contract's Avro schemas
//! at start-up (so request bodies cannot drift from the contract).

use crate::Kind;
use orelink_ingest::schema::json_schema;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub fn document(avro: &BTreeMap<&'static str, Value>, batch_max: usize) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let errors = |codes: &[&str]| -> Value {
        codes.iter().map(|c| (c.to_string(), json!({"$ref": "#/components/responses/Error"}))).collect::<Map<String, Value>>().into()
    };
    for k in Kind::ALL {
        let name = k.record().rsplit('.').next().unwrap_or_default();
        schemas.insert(name.to_owned(), avro.get(k.record()).map(json_schema).unwrap_or(json!({})));
        let mut responses = errors(&["400", "401", "403", "409", "413", "422", "429", "503"]);
        responses["202"] = json!({"description": "In Kafka: topic, partition and offset", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}});
        paths.insert(
            k.path().to_owned(),
            json!({"post": {
                "summary": format!("Publish one {} event", name),
                "security": [{"apiKey": []}],
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 200}, "description": "Retries with the same key get the first answer and produce nothing (default: the event_id)"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}},
                "responses": responses
            }}),
        );
    }
    let items: Vec<Value> = Kind::ALL
        .iter()
        .map(|k| {
            let name = k.record().rsplit('.').next().unwrap_or_default();
            let kind = serde_json::to_value(k).unwrap_or(Value::Null);
            json!({"type": "object", "required": ["kind", "event"], "additionalProperties": false,
                   "properties": {"kind": {"const": kind}, "event": {"$ref": format!("#/components/schemas/{name}")}}})
        })
        .collect();
    let mut responses = errors(&["400", "401", "403", "409", "413", "422", "429", "503"]);
    responses["202"] = json!({"description": "All in Kafka", "content": {"application/json": {"schema": {"type": "object", "properties": {"accepted": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}}}}}}});
    paths.insert(
        "/v1/batch".into(),
        json!({"post": {
            "summary": "Publish many events: all are validated first; none is produced unless all pass",
            "security": [{"apiKey": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["events"], "additionalProperties": false,
                "properties": {"events": {"type": "array", "minItems": 1, "maxItems": batch_max, "items": {"oneOf": items}}}
            }}}},
            "responses": responses
        }}),
    );
    let stream = |summary: &str, formats: &[&str]| {
        json!({"get": {
            "summary": summary,
            "description": "Server-Sent Events. Each event's id is a cursor; reconnect with Last-Event-ID (or ?last_event_id=) to continue exactly after it. Keep-alive comments every 15 s.",
            "security": [{"apiKey": []}],
            "parameters": [
                {"name": "format", "in": "query", "schema": {"type": "string", "enum": formats}},
                {"name": "from", "in": "query", "schema": {"type": "string", "enum": ["earliest", "latest"]}},
                {"name": "last_event_id", "in": "query", "schema": {"type": "string", "pattern": "^([0-9]+-[0-9]+)(\\.[0-9]+-[0-9]+)*$"}},
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "The stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"}, "429": {"$ref": "#/components/responses/Error"},
                "503": {"$ref": "#/components/responses/Error"}
            }
        }})
    };
    paths.insert("/v1/subscriptions/shipments".into(), stream("A logistics partner's own shipments (its key binds the carrier), as contract JSON or GS1 EPCIS 2.0 ObjectEvents", &["json", "epcis"]));
    paths.insert("/v1/subscriptions/allocations".into(), stream("The allocations that name the key's enterprise as buyer or provider", &["json"]));
    paths.insert("/openapi.json".into(), json!({"get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}}));
    paths.insert("/healthz".into(), json!({"get": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}}));
    paths.insert("/readyz".into(), json!({"get": {"summary": "Kafka and Redis answer", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}}));
    paths.insert("/metrics".into(), json!({"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain"}}}}));
    schemas.insert(
        "Accepted".into(),
        json!({"type": "object", "required": ["event_id", "topic", "partition", "offset"], "properties": {
            "event_id": {"type": "string"}, "topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}}}),
    );
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "orelink ingest gateway", "version": "1", "description": "HTTP/JSON ingest of the orelink event contract for enterprises without Kafka clients. Bodies are the Avro records' fields as JSON."},
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "Refused, with every problem", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": schemas
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_served_route_is_documented() {
        let avro = std::collections::BTreeMap::new();
        let doc = super::document(&avro, 10);
        for r in crate::ROUTES {
            assert!(doc["paths"].get(r).is_some(), "{r} is served but not documented");
        }
    }
}
