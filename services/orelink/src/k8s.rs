//! `orelink topology render k8s`: Strimzi `KafkaTopic` and `KafkaUser`
//! resources rendered from `topology/`, so the topology stays the one source
//! of topics, partitions, retention and ACLs. Deterministic: the checked-in
//! files under `k8s/base/kafka/` must equal what this renders (a test says so).

use orelink_domain::Topology;
use orelink_domain::access::{self, Grant, ResourceKind};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The Strimzi Kafka cluster the resources belong to.
pub const CLUSTER: &str = "orelink";

/// A Kubernetes object name for a topic (DNS-1123: lower case, `.` and `-`).
fn object_name(topic: &str) -> String {
    let s: String = topic.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c.to_ascii_lowercase() } else { '-' }).collect();
    s.trim_matches(|c| c == '-' || c == '.').to_owned()
}

/// A Strimzi `simple` authorization ACL for one grant.
fn acl(g: &Grant) -> Value {
    let ops: Vec<&str> = g.ops.iter().map(|o| o.name()).collect();
    let kind = match g.kind {
        ResourceKind::Topic => "topic",
        ResourceKind::Group => "group",
        ResourceKind::TransactionalId => "transactionalId",
        ResourceKind::Cluster => return json!({"resource": {"type": "cluster"}, "operations": ops}),
    };
    json!({"resource": {"type": kind, "name": g.name, "patternType": if g.prefix { "prefix" } else { "literal" }}, "operations": ops})
}

/// File name -> YAML text.
pub fn render(t: &Topology) -> BTreeMap<String, String> {
    let labels = json!({"strimzi.io/cluster": CLUSTER, "app.kubernetes.io/part-of": "orelink", "app.kubernetes.io/managed-by": "orelink-topology-render"});
    let topics: Vec<Value> = t
        .topics
        .iter()
        .map(|s| {
            let mut config = json!({"cleanup.policy": s.cleanup_policy.as_str(), "retention.ms": s.retention_ms, "min.insync.replicas": if s.replication_factor >= 3 { 2 } else { 1 }});
            if s.log_append_time {
                config["message.timestamp.type"] = json!("LogAppendTime");
            }
            json!({
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": {"name": object_name(&s.name), "labels": labels, "annotations": {"orelink.io/description": s.description, "orelink.io/key": s.key, "orelink.io/value": s.value}},
                "spec": {
                    "topicName": s.name,
                    "partitions": s.partitions,
                    "replicas": s.replication_factor,
                    "config": config
                }
            })
        })
        .collect();
    let users: Vec<Value> = access::principals(t).iter().map(|p| user(&p.name, &p.description, p.grants.iter().map(acl).collect(), &labels)).collect();
    let mut out = BTreeMap::new();
    out.insert("kafka-topics.yaml".to_owned(), docs(&topics));
    out.insert("kafka-users.yaml".to_owned(), docs(&users));
    out
}

fn user(name: &str, description: &str, acls: Vec<Value>, labels: &Value) -> Value {
    json!({
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {"name": name, "labels": labels, "annotations": {"orelink.io/description": description}},
        "spec": {"authentication": {"type": "scram-sha-512"}, "authorization": {"type": "simple", "acls": acls}}
    })
}

fn docs(values: &[Value]) -> String {
    let mut out = String::from("# Rendered from topology/ by `orelink topology render k8s`; do not edit.\n");
    for v in values {
        out.push_str("---\n");
        yaml(v, 0, &mut out);
    }
    out
}

/// A small, deterministic YAML emitter for JSON values (maps keep their order).
fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", scalar_key(k)));
                        yaml(x, indent + 2, out);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", scalar_key(k)));
                        yaml(x, indent, out);
                    }
                    _ => out.push_str(&format!("{pad}{}: {}\n", scalar_key(k), scalar(x))),
                }
            }
        }
        Value::Array(items) => {
            for x in items {
                match x {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        yaml(x, indent + 2, &mut inner);
                        // The first line of the item carries the dash.
                        let body = inner.strip_prefix(&" ".repeat(indent + 2)).unwrap_or(&inner);
                        out.push_str(&format!("{pad}- {body}"));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(x))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn scalar_key(k: &str) -> String {
    if k.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c)) { k.to_owned() } else { serde_json::to_string(k).expect("string") }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // Strings are always quoted (JSON strings are valid YAML), so "true" or "1" stay strings.
        other => serde_json::to_string(other).expect("scalar"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_manifests_equal_the_render() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/base/kafka");
        for (file, text) in render(&Topology::embedded()) {
            let on_disk = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
            assert!(on_disk == text, "k8s/base/kafka/{file} is stale: run `orelink topology render k8s`");
        }
    }

    #[test]
    fn every_role_gets_exactly_its_topics() {
        let t = Topology::embedded();
        let users = render(&t)["kafka-users.yaml"].clone();
        let share = users.split("---\n").find(|d| d.contains("name: \"orelink-share\"") || d.contains("name: orelink-share")).expect("share user");
        assert!(share.contains("\"orelink.order-status.v1\""), "{share}");
        assert!(!share.contains("\"orelink.orders.v1\""), "the share role reads no orders: {share}");
        let partner = users.split("---\n").find(|d| d.contains("partner-")).expect("a partner user");
        // Its own shipments (read) and the carriers' offers (write), nothing else.
        assert_eq!(partner.matches("type: \"topic\"").count(), 2, "a partner has two topics: {partner}");
        assert!(partner.contains("\"orelink.transport-offers.v1\""), "{partner}");
    }

    #[test]
    fn object_names_are_dns_labels() {
        assert_eq!(object_name("_schemas"), "schemas");
        assert_eq!(object_name("orelink.orders.v1"), "orelink.orders.v1");
    }
}
