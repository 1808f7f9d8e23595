//! The OpenAPI 3.1 document of the view's API, served at `/openapi.json`.
//! A test checks that every route the router serves is described here.

use serde_json::{Value, json};

fn param(name: &str, location: &str, required: bool, description: &str) -> Value {
    json!({"name": name, "in": location, "required": required, "description": description, "schema": {"type": if name == "limit" { "integer" } else { "string" }}})
}

fn op(summary: &str, params: Vec<Value>, schema: &str) -> Value {
    json!({
        "summary": summary,
        "security": [{"operatorToken": []}],
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}
        }
    })
}

pub fn document() -> Value {
    let cluster_q = || param("cluster", "query", true, "Cluster id, e.g. baise, hechi, fangchenggang, nanning");
    let limit_q = || param("limit", "query", false, "At most this many (1..500, default 50)");
    let period_q = || {
        vec![
            param("period", "query", false, "24h, 7d or all (default): the event-time period `in_period` covers, ending at the view's clock"),
            param("since", "query", false, "Instead of period: from the start of this day (YYYY-MM-DD, China Standard Time) to the clock's day"),
        ]
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "orelink view API",
            "version": "1",
            "description": "Cluster operators' live view of capacity, demand, utilisation, shared orders and allocations, materialised from Kafka into Redis. Every /api/v1 endpoint needs an operator token."
        },
        "paths": {
            "/api/v1/clusters": {"get": op("Every cluster with its totals", period_q(), "Clusters")},
            "/api/v1/clusters/{cluster}": {"get": op("One cluster, per product family", [vec![param("cluster", "path", true, "Cluster id")], period_q()].concat(), "Cluster")},
            "/api/v1/cells": {"get": op("Capacity vs demand per cluster and family", [vec![param("cluster", "query", false, "Only this cluster")], period_q()].concat(), "Cells")},
            "/api/v1/orders/open": {"get": op("Open orders of a cluster, newest first", vec![cluster_q(), limit_q()], "Orders")},
            "/api/v1/orders/shared": {"get": op("Orders shared into or out of a cluster, as redacted by policy", vec![cluster_q(), param("direction", "query", false, "in (default) or out"), limit_q()], "Orders")},
            "/api/v1/orders/{order_id}/allocations": {"get": op("An order's status and allocations with their explanations", vec![param("order_id", "path", true, "Order id")], "OrderAllocations")},
            "/api/v1/allocations/latest": {"get": op("Latest allocations across the hub, newest first", vec![limit_q()], "Allocations")},
            "/api/v1/timeseries": {"get": op("kg of demand placed, capacity declared and allocated over event time: without a period, per minute of the last 24 h (minute_kg); with one, points_kg per minute (24h), hour (7d) or day (since, all)", [vec![cluster_q(), param("family", "query", true, "Product family, e.g. AL-INGOT")], period_q()].concat(), "Series")},
            "/api/v1/lanes": {"get": op("Carriers' lanes: per lane, room offered, booked and remaining, unbooked allocations, and booked freight per tonne against the planning figure; with the clusters and their sites' coordinates for the map", vec![], "Lanes")},
            "/api/v1/outlook": {"get": op("A cluster's demand outlook per family (or the one asked for): the last week of hourly demand, the next 7 days of demand and declared capacity with 80 % intervals, refitted each view.outlook_refit_hours of event time, the capacity gap and the open alert", vec![cluster_q(), param("family", "query", false, "Product family, e.g. AL-INGOT")], "Outlook")},
            "/api/v1/dead-letters": {"get": op("Dead letters by error class", vec![], "DeadLetters")},
            "/api/v1/stream": {"get": {
                "summary": "Server-sent events: one `change` event per batch applied to the view (count and new allocations)",
                "security": [{"operatorToken": []}],
                "parameters": [param("token", "query", false, "The operator token, for clients that cannot set headers")],
                "responses": {"200": {"description": "text/event-stream"}, "401": {"$ref": "#/components/responses/Error"}}
            }},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The process serves"}}}},
            "/readyz": {"get": {"summary": "Readiness: Redis answers and the view has caught up once", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
            "/": {"get": {"summary": "The operators' dashboard (HTML)", "responses": {"200": {"description": "text/html"}}}}
        },
        "components": {
            "securitySchemes": {"operatorToken": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "Cell": {"type": "object", "properties": {
                    "cluster": {"type": "string"}, "family": {"type": "string"},
                    "declared_kg": {"type": "integer"}, "allocated_kg": {"type": "integer"}, "remaining_kg": {"type": "integer"},
                    "open_capacities": {"type": "integer"}, "allocations": {"type": "integer"},
                    "orders": {"type": "integer"}, "demand_kg": {"type": "integer"}, "open_demand_kg": {"type": "integer"}, "open_orders": {"type": "integer"},
                    "filled_kg": {"type": "integer"},
                    "fill_rate": {"type": ["number", "null"]}, "utilisation": {"type": ["number", "null"]}, "energy_kwh_per_t": {"type": ["number", "null"]},
                    "stock_on_hand_kg": {"type": "integer", "description": "Stock at the cluster's sites: the latest inventory snapshot of each site and product."},
                    "stock_reserved_kg": {"type": "integer"},
                    "days_of_cover": {"type": ["number", "null"], "description": "Stock on hand divided by the family's placed demand per day in the cluster over the last 7 days of event time; null without such demand."},
                    "shared_out": {"type": "integer"}, "shared_in": {"type": "integer"},
                    "in_period": {"$ref": "#/components/schemas/InPeriod"}
                }, "description": "declared_kg, allocated_kg, demand_kg, orders and allocations count since the first event; open_*, remaining, stock and shares are the state at the view's clock; in_period is the chosen period's."},
                "InPeriod": {"type": "object", "description": "Capacity declared, allocated and demand placed within the period (event time), kg", "properties": {"declared_kg": {"type": "integer"}, "allocated_kg": {"type": "integer"}, "demand_kg": {"type": "integer"}}},
                "Period": {"type": "object", "description": "What in_period covers: [from_ms, to_ms) of event time (from_ms null for everything; both null while the view is empty), the view's clock (latest event time applied), and the buckets summed (hour or day)", "properties": {
                    "period": {"type": "string"}, "from_ms": {"type": ["integer", "null"]}, "to_ms": {"type": ["integer", "null"]}, "clock_ms": {"type": ["integer", "null"]}, "resolution": {"type": "string"}
                }},
                "Cells": {"type": "object", "properties": {"cells": {"type": "array", "items": {"$ref": "#/components/schemas/Cell"}}, "period": {"$ref": "#/components/schemas/Period"}}},
                "Clusters": {"type": "object", "properties": {"clusters": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "name_zh": {"type": "string"}, "families": {"type": "array", "items": {"type": "string"}}, "totals": {"$ref": "#/components/schemas/Cell"}
                }}}, "period": {"$ref": "#/components/schemas/Period"}}},
                "Cluster": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "name_zh": {"type": "string"}, "families": {"type": "array", "items": {"$ref": "#/components/schemas/Cell"}}, "totals": {"$ref": "#/components/schemas/Cell"}, "period": {"$ref": "#/components/schemas/Period"}}},
                "Orders": {"type": "object", "properties": {"cluster": {"type": "string"}, "orders": {"type": "array", "items": {"type": "object"}}}},
                "Allocations": {"type": "object", "properties": {"allocations": {"type": "array", "items": {"type": "object", "description": "orelink.v1.Allocation as JSON"}}}},
                "OrderAllocations": {"type": "object", "properties": {"order_id": {"type": "string"}, "status": {"type": "object", "description": "orelink.v1.OrderStatus as JSON"}, "allocations": {"type": "array", "items": {"type": "object"}}}},
                "Series": {"type": "object", "properties": {"cluster": {"type": "string"}, "family": {"type": "string"},
                    "minute_kg": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}]}}},
                    "points_kg": {"type": "object", "description": "[slot_start_ms, kg] per series, the slot being period.resolution", "additionalProperties": {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}]}}},
                    "period": {"$ref": "#/components/schemas/Period"}}},
                "Outlook": {"type": "object", "properties": {
                    "cluster": {"type": "string"},
                    "outlooks": {"type": "array", "items": {"type": "object", "description": "One family's: origin_ms (the refit's event time), history_hours, history [[hour_ms, kg]], demand and declared forecasts ({level, point, lower, upper}, hourly kg from the origin), outlook {demand_kg, remaining_kg, expected_kg}, gap_kg, alert (orelink.v1.Alert as JSON, or null), or a reason there is none"}},
                    "alerts": {"type": "array", "items": {"type": "object", "description": "The open capacity-gap alerts (orelink.v1.Alert as JSON)"}}
                }},
                "Lanes": {"type": "object", "properties": {
                    "lanes": {"type": "array", "items": {"$ref": "#/components/schemas/Lane"}},
                    "clusters": {"type": "array", "items": {"type": "object", "description": "A cluster at the centre of its sites (WGS84 degrees), with its sites", "properties": {
                        "id": {"type": "string"}, "name": {"type": "string"}, "name_zh": {"type": "string"}, "lat": {"type": "number"}, "lon": {"type": "number"},
                        "sites": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "name_zh": {"type": "string"}, "kind": {"type": "string"}, "lat": {"type": "number"}, "lon": {"type": "number"}}}}
                    }}},
                    "clock_ms": {"type": ["integer", "null"]}
                }},
                "Lane": {"type": "object", "description": "Counts since the first event; remaining_kg is the room of offers neither withdrawn nor past their window at the lane's latest event", "properties": {
                    "lane": {"type": "string", "description": "<from_cluster>><to_cluster>"}, "from_cluster": {"type": "string"}, "to_cluster": {"type": "string"},
                    "modes": {"type": "array", "items": {"type": "string"}},
                    "offers": {"type": "integer"}, "offered_kg": {"type": "integer"}, "withdrawn": {"type": "integer"},
                    "booked_parts": {"type": "integer"}, "booked_kg": {"type": "integer"}, "remaining_kg": {"type": "integer"},
                    "unbooked": {"type": "integer"}, "unbooked_kg": {"type": "integer"},
                    "booked_cny_per_t": {"type": ["number", "null"]}, "planning_cny_per_t": {"type": ["number", "null"]}
                }},
                "DeadLetters": {"type": "object", "properties": {"by_class": {"type": "object", "additionalProperties": {"type": "integer"}}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_served_route_is_documented() {
        let doc = super::document();
        for route in crate::http::ROUTES {
            assert!(doc["paths"].get(route).is_some(), "{route} is served but not in the OpenAPI document");
        }
        assert_eq!(doc["paths"].as_object().unwrap().len(), crate::http::ROUTES.len(), "documented routes that are not served");
    }
}
