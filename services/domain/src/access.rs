//! Who may do what on the Kafka cluster, derived from `topology/` alone: a
//! principal per hub role (the topics it reads and writes, its consumer-group
//! and transactional-id prefixes) and one per logistics partner (its own
//! topic, groups under its own prefix). `topology render k8s` writes these as
//! Strimzi `KafkaUser`s; `topology apply` sets them on a broker.

use crate::topology::{Topology, topics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Topic,
    Group,
    TransactionalId,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Read,
    Write,
    Describe,
    IdempotentWrite,
}

impl Op {
    /// Kafka's (and Strimzi's) name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "Read",
            Op::Write => "Write",
            Op::Describe => "Describe",
            Op::IdempotentWrite => "IdempotentWrite",
        }
    }
}

/// Operations on one resource (a literal name, or every name with a prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub kind: ResourceKind,
    /// Empty for the cluster.
    pub name: String,
    pub prefix: bool,
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name (`orelink-<role>`, `partner-<id>`), before any namespace.
    pub name: String,
    pub description: String,
    pub grants: Vec<Grant>,
}

fn grant(kind: ResourceKind, name: &str, prefix: bool, ops: &[Op]) -> Grant {
    Grant { kind, name: name.to_owned(), prefix, ops: ops.to_vec() }
}

/// A topic name with `*` grants everything under the part before it.
fn topic_grant(name: &str, ops: &[Op]) -> Grant {
    match name.split_once('*') {
        Some((prefix, _)) => grant(ResourceKind::Topic, prefix, true, ops),
        None => grant(ResourceKind::Topic, name, false, ops),
    }
}

/// The consumer-group prefix a partner's own groups must start with.
pub fn partner_group_prefix(partner_id: &str) -> String {
    format!("partner-{partner_id}-")
}

/// Every principal of the topology, roles first, in declaration order.
pub fn principals(t: &Topology) -> Vec<Principal> {
    let mut out = Vec::new();
    for r in &t.roles {
        let mut grants = Vec::new();
        for topic in &r.reads {
            grants.push(topic_grant(topic, &[Op::Read, Op::Describe]));
        }
        for topic in &r.writes {
            grants.push(topic_grant(topic, &[Op::Write, Op::Describe]));
        }
        if let Some(g) = &r.group_prefix {
            grants.push(grant(ResourceKind::Group, g, true, &[Op::Read, Op::Describe]));
        }
        if let Some(tx) = &r.transactional_id_prefix {
            grants.push(grant(ResourceKind::TransactionalId, tx, true, &[Op::Write, Op::Describe]));
        }
        if r.transactional_id_prefix.is_some() || !r.writes.is_empty() {
            // Idempotent producers needed it before Kafka 3.0 (KIP-679); harmless after.
            grants.push(grant(ResourceKind::Cluster, "", false, &[Op::IdempotentWrite]));
        }
        out.push(Principal { name: format!("orelink-{}", r.name), description: r.description.clone(), grants });
    }
    for p in &t.partners {
        let grants = vec![
            topic_grant(&topics::partner(p.id.as_str()), &[Op::Read, Op::Describe]),
            grant(ResourceKind::Group, &partner_group_prefix(p.id.as_str()), true, &[Op::Read, Op::Describe]),
        ];
        out.push(Principal { name: format!("partner-{}", p.id), description: format!("{} ({}): reads its own shipments only.", p.name, p.name_zh), grants });
    }
    out
}

/// The same principals inside a namespace (a prefix on user, topic, group
/// and transactional-id names), as `topology apply` uses them.
pub fn namespaced(principals: &[Principal], ns: &str) -> Vec<Principal> {
    principals
        .iter()
        .map(|p| Principal {
            name: format!("{ns}{}", p.name),
            description: p.description.clone(),
            grants: p
                .grants
                .iter()
                .map(|g| Grant { name: if g.kind == ResourceKind::Cluster { String::new() } else { format!("{ns}{}", g.name) }, ..g.clone() })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TopologySources;

    #[test]
    fn a_partner_gets_its_own_topic_and_groups_only() {
        let t = Topology::parse(TopologySources::EMBEDDED).unwrap();
        let ps = principals(&t);
        let p = ps.iter().find(|p| p.name == "partner-beibu-gulf-logistics").unwrap();
        assert_eq!(p.grants.len(), 2);
        assert_eq!(p.grants[0], grant(ResourceKind::Topic, "orelink.shipments.partner.beibu-gulf-logistics.v1", false, &[Op::Read, Op::Describe]));
        assert!(p.grants.iter().all(|g| !g.ops.contains(&Op::Write)));
        // Every role is there, and no role may read a partner topic it does not declare.
        assert_eq!(ps.iter().filter(|p| p.name.starts_with("orelink-")).count(), t.roles.len());
        let matcher = ps.iter().find(|p| p.name == "orelink-matcher").unwrap();
        assert!(!matcher.grants.iter().any(|g| g.name.contains("shipments")));
        let ns = namespaced(&ps, "t1.");
        assert!(ns.iter().all(|p| p.name.starts_with("t1.") && p.grants.iter().all(|g| g.kind == ResourceKind::Cluster || g.name.starts_with("t1."))));
    }
}
