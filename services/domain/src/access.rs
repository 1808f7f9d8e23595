//! Who may do what on the Kafka cluster, derived from `topology/` alone: a
//! principal per hub role (the topics it reads and writes, its consumer-group
//! and transactional-id prefixes), one per logistics partner (its own
//! topic, groups under its own prefix) and one per enterprise with its own
//! Kafka client (writes its ingest topic, reads its allocations topic), and
//! a per-site role's once per site (the edge relays). `topology render k8s`
//! writes these as Strimzi `KafkaUser`s; `topology apply` sets them on a broker.

use crate::topology::{RoleSpec, Topology, topics};

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

/// The consumer-group prefix an enterprise's own groups must start with.
pub fn enterprise_group_prefix(enterprise_id: &str) -> String {
    format!("enterprise-{enterprise_id}-")
}

/// Every principal of the topology, roles first, in declaration order.
pub fn principals(t: &Topology) -> Vec<Principal> {
    let mut out = Vec::new();
    for r in &t.roles {
        if r.per_site {
            out.extend(t.sites().map(|s| site_principal(r, s.id.as_str())));
            continue;
        }
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
            // Carriers post their offers of room on the lanes (contract v1.1).
            topic_grant(topics::TRANSPORT_OFFERS, &[Op::Write, Op::Describe]),
            grant(ResourceKind::Cluster, "", false, &[Op::IdempotentWrite]),
        ];
        let description = format!("{} ({}): reads its own shipments only; posts its offers of room on the lanes.", p.name, p.name_zh);
        out.push(Principal { name: format!("partner-{}", p.id), description, grants });
    }
    for e in &t.enterprises {
        let grants = vec![
            topic_grant(&topics::ingest(&e.id), &[Op::Write, Op::Describe]),
            topic_grant(&topics::enterprise_allocations(&e.id), &[Op::Read, Op::Describe]),
            grant(ResourceKind::Group, &enterprise_group_prefix(&e.id), true, &[Op::Read, Op::Describe]),
            grant(ResourceKind::Cluster, "", false, &[Op::IdempotentWrite]),
        ];
        let description = format!("{} ({}): writes its own ingest topic, reads its own allocations.", e.name, e.name_zh);
        out.push(Principal { name: format!("enterprise-{}", e.id), description, grants });
    }
    out
}

/// A per-site role's principal for `site`: `*` in its names is the site,
/// and its transactional id is exactly the prefix with the site, so it can
/// fence no other site's producer.
fn site_principal(r: &RoleSpec, site: &str) -> Principal {
    let at = |name: &str| name.replace('*', site);
    let mut grants = Vec::new();
    for topic in &r.reads {
        grants.push(grant(ResourceKind::Topic, &at(topic), false, &[Op::Read, Op::Describe]));
    }
    for topic in &r.writes {
        grants.push(grant(ResourceKind::Topic, &at(topic), false, &[Op::Write, Op::Describe]));
    }
    if let Some(g) = &r.group_prefix {
        grants.push(grant(ResourceKind::Group, &at(g), true, &[Op::Read, Op::Describe]));
    }
    if let Some(tx) = &r.transactional_id_prefix {
        grants.push(grant(ResourceKind::TransactionalId, &at(tx), false, &[Op::Write, Op::Describe]));
    }
    grants.push(grant(ResourceKind::Cluster, "", false, &[Op::IdempotentWrite]));
    Principal { name: format!("orelink-{}-{site}", r.name), description: format!("{} (site {site})", r.description), grants }
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
        assert_eq!(p.grants.len(), 4);
        assert_eq!(p.grants[0], grant(ResourceKind::Topic, "orelink.shipments.partner.beibu-gulf-logistics.v1", false, &[Op::Read, Op::Describe]));
        // It reads nothing else, and writes only its offers of room on the lanes.
        assert!(p.grants.iter().filter(|g| g.ops.contains(&Op::Read)).all(|g| g.kind == ResourceKind::Group || g.name.contains("beibu-gulf-logistics")));
        let writes: Vec<&str> = p.grants.iter().filter(|g| g.ops.contains(&Op::Write)).map(|g| g.name.as_str()).collect();
        assert_eq!(writes, ["orelink.transport-offers.v1"]);
        // Every role is there (a per-site role once per site), and no role may read a partner topic it does not declare.
        assert_eq!(ps.iter().filter(|p| p.name.starts_with("orelink-")).count(), t.roles.len() - 1 + t.sites().count());
        let matcher = ps.iter().find(|p| p.name == "orelink-matcher").unwrap();
        assert!(!matcher.grants.iter().any(|g| g.name.contains("shipments")));
        let e = ps.iter().find(|p| p.name == "enterprise-91451000MA5L0CHG10").unwrap();
        let topics_of = |op: Op| e.grants.iter().filter(|g| g.kind == ResourceKind::Topic && g.ops.contains(&op)).map(|g| (g.name.as_str(), g.prefix)).collect::<Vec<_>>();
        assert_eq!(topics_of(Op::Write), [("orelink.ingest.91451000MA5L0CHG10.v1", false)]);
        assert_eq!(topics_of(Op::Read), [("orelink.allocations.enterprise.91451000MA5L0CHG10.v1", false)]);
        // Each site's relay: its own progress topic and transactional id, literally.
        let relay = ps.iter().find(|p| p.name == "orelink-edge-baise-pingguo-smelter").unwrap();
        assert!(relay.grants.contains(&grant(ResourceKind::Topic, "orelink.edge-progress.baise-pingguo-smelter.v1", false, &[Op::Write, Op::Describe])));
        assert!(relay.grants.contains(&grant(ResourceKind::TransactionalId, "orelink-edge-baise-pingguo-smelter", false, &[Op::Write, Op::Describe])));
        assert!(relay.grants.iter().all(|g| !g.name.contains("hechi") && !g.name.contains('*')), "{relay:?}");
        assert!(ps.iter().all(|p| p.name != "orelink-edge"), "no relay principal for every site");
        let ns = namespaced(&ps, "t1.");
        assert!(ns.iter().all(|p| p.name.starts_with("t1.") && p.grants.iter().all(|g| g.kind == ResourceKind::Cluster || g.name.starts_with("t1."))));
    }
}
