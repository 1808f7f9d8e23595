//! The topology as data: clusters and their sites, logistics partners,
//! enterprises with their own Kafka clients, topics and the roles that read
//! and write them. `Topology::check` reports every
//! problem at once; the files live in `topology/` and are embedded in the binary.

use crate::catalog::Catalog;
use crate::ids::{ClusterId, PartnerId, SiteId, UnifiedSocialCreditCode, check_slug};
use crate::Invalid;
use crate::freight::FreightTable;
use crate::sharing::Sharing;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransportMode {
    Road,
    Rail,
    River,
    Sea,
}

impl TransportMode {
    pub const ALL: [TransportMode; 4] = [TransportMode::Road, TransportMode::Rail, TransportMode::River, TransportMode::Sea];
    pub fn as_str(self) -> &'static str {
        match self {
            TransportMode::Road => "ROAD",
            TransportMode::Rail => "RAIL",
            TransportMode::River => "RIVER",
            TransportMode::Sea => "SEA",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub name_zh: String,
    pub lat: f64,
    pub lon: f64,
    pub modes: Vec<TransportMode>,
    /// What the site does: mine, concentrator, refinery, smelter, processor, port, consumer.
    pub kind: String,
    /// Filled from the enclosing cluster when loaded.
    #[serde(default, skip_deserializing)]
    pub cluster: Option<ClusterId>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub id: ClusterId,
    pub name: String,
    pub name_zh: String,
    /// Product families the cluster produces (its capacity side).
    pub families: Vec<String>,
    #[serde(rename = "site")]
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    pub id: PartnerId,
    pub name: String,
    pub name_zh: String,
    /// The carrier id that shipment events name for this partner.
    pub carrier_id: String,
    pub modes: Vec<TransportMode>,
}

/// An enterprise that connects with its own Kafka client (contract v1.1).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Enterprise {
    /// Its unified social credit code: the buyer or provider id its events name.
    pub id: String,
    pub name: String,
    pub name_zh: String,
    /// The sites it operates: it reports their inventory and ships from them.
    pub sites: Vec<SiteId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Production replication; a local single broker caps it at the broker count.
    pub replication_factor: i32,
    pub cleanup_policy: CleanupPolicy,
    /// -1 keeps forever.
    pub retention_ms: i64,
    /// What the key is: `family`, `site_id/product_code`, `shipment_id`, `source topic`, ...
    pub key: String,
    /// Full name of the Avro value record, or `none` for internal topics whose
    /// values are not Avro; several names joined by `|` for a topic that
    /// carries several records, each under its own subject.
    pub value: String,
    /// Records carry the broker's log-append time, not their producer's
    /// (`message.timestamp.type`): for a topic whose timestamps decide
    /// something on replay (the matcher's dedup horizon on the market topic).
    #[serde(default)]
    pub log_append_time: bool,
    #[serde(default)]
    pub description: String,
}

impl TopicSpec {
    /// The topic configs the broker should hold for this spec.
    pub fn configs(&self) -> BTreeMap<&'static str, String> {
        let mut c = BTreeMap::new();
        c.insert("cleanup.policy", self.cleanup_policy.as_str().to_owned());
        c.insert("retention.ms", self.retention_ms.to_string());
        if self.log_append_time {
            c.insert("message.timestamp.type", "LogAppendTime".to_owned());
        }
        c
    }
    pub fn is_avro(&self) -> bool {
        self.value != "none"
    }
    /// The records the topic carries.
    pub fn records(&self) -> impl Iterator<Item = &str> {
        self.value.split('|').map(str::trim).filter(|r| self.is_avro() && !r.is_empty())
    }
    /// One record per topic: `<topic>-value` (TopicNameStrategy).
    pub fn is_single_record(&self) -> bool {
        self.is_avro() && !self.value.contains('|')
    }
    /// Each record's registry subject: `<topic>-value` for a topic of one
    /// record, `<topic>-<record>` (TopicRecordNameStrategy) for several.
    pub fn subjects(&self) -> Vec<(String, &str)> {
        if self.is_single_record() {
            return vec![(format!("{}-value", self.name), self.value.as_str())];
        }
        self.records().map(|r| (format!("{}-{r}", self.name), r)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub reads: Vec<String>,
    #[serde(default)]
    pub writes: Vec<String>,
    /// Consumer group id prefix the role may use.
    #[serde(default)]
    pub group_prefix: Option<String>,
    /// Transactional id prefix, for exactly-once roles.
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    /// One principal per site (`orelink-<role>-<site>`), each with `*` in
    /// the names above standing for its site, and its transactional id
    /// exactly `<prefix with the site>`: the edge relays, so that one site's
    /// relay cannot fence or advance another's.
    #[serde(default)]
    pub per_site: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClustersFile {
    /// Spec of every `orelink.edge-progress.<site>.v1`.
    edge_progress_topic: TopicTemplate,
    #[serde(rename = "cluster")]
    clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnersFile {
    /// Spec of every `orelink.shipments.partner.<id>.v1` topic; the name is derived.
    partner_topic: TopicTemplate,
    /// Spec of every `orelink.webhooks-parked.<id>.v1` topic: the webhook
    /// deliveries to the partner that were given up on, kept for a redrive.
    parked_topic: TopicTemplate,
    #[serde(rename = "partner")]
    partners: Vec<Partner>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicTemplate {
    partitions: i32,
    replication_factor: i32,
    retention_ms: i64,
}

impl TopicTemplate {
    /// A partner's topic of shipments by this template.
    fn shipments(&self, name: String, description: String) -> TopicSpec {
        self.topic(name, "shipment_id", "orelink.v1.ShipmentEvent".into(), description)
    }

    /// A topic by this template (deleting by time; a caller may compact it).
    fn topic(&self, name: String, key: &str, value: String, description: String) -> TopicSpec {
        TopicSpec {
            name,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            cleanup_policy: CleanupPolicy::Delete,
            retention_ms: self.retention_ms,
            key: key.into(),
            value,
            log_append_time: false,
            description,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnterprisesFile {
    /// Spec of every `orelink.ingest.<id>.v1`.
    ingest_topic: TopicTemplate,
    /// Spec of every `orelink.allocations.enterprise.<id>.v1`.
    allocations_topic: TopicTemplate,
    #[serde(rename = "enterprise", default)]
    enterprises: Vec<Enterprise>,
}

/// The records an enterprise may write to its ingest topic.
pub const INGEST_RECORDS: [&str; 4] = ["orelink.v1.OrderEvent", "orelink.v1.CapacityEvent", "orelink.v1.InventoryEvent", "orelink.v1.ShipmentEvent"];

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsFile {
    #[serde(rename = "topic")]
    topics: Vec<TopicSpec>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    #[serde(rename = "role")]
    roles: Vec<RoleSpec>,
}

/// The text of the topology files.
#[derive(Debug, Clone, Copy)]
pub struct TopologySources<'a> {
    pub clusters: &'a str,
    pub partners: &'a str,
    pub topics: &'a str,
    pub roles: &'a str,
    pub freight: &'a str,
    pub sharing: &'a str,
    pub enterprises: &'a str,
}

impl TopologySources<'static> {
    pub const EMBEDDED: TopologySources<'static> = TopologySources {
        clusters: include_str!("../../../topology/clusters.toml"),
        partners: include_str!("../../../topology/partners.toml"),
        topics: include_str!("../../../topology/topics.toml"),
        roles: include_str!("../../../topology/roles.toml"),
        freight: include_str!("../../../topology/freight.toml"),
        sharing: include_str!("../../../topology/sharing.toml"),
        enterprises: include_str!("../../../topology/enterprises.toml"),
    };
}

/// The contract's topic names; `check` insists each is declared.
pub mod topics {
    pub const ORDERS: &str = "orelink.orders.v1";
    pub const CAPACITY: &str = "orelink.capacity.v1";
    pub const INVENTORY: &str = "orelink.inventory.v1";
    pub const SHIPMENTS: &str = "orelink.shipments.v1";
    pub const ALLOCATIONS: &str = "orelink.allocations.v1";
    pub const SHARED_ORDERS: &str = "orelink.shared-orders.v1";
    pub const DLQ: &str = "orelink.dlq.v1";
    /// Carriers' offers of room on a lane (contract v1.1).
    pub const TRANSPORT_OFFERS: &str = "orelink.transport-offers.v1";
    /// Internal: the matcher's statuses of the orders it touched.
    pub const ORDER_STATUS: &str = "orelink.order-status.v1";
    /// Each family's orders, capacity and shares in the one order the matcher
    /// applies them: the hub's doors write orders and capacity here directly.
    pub const MARKET: &str = "orelink.market.v1";
    /// Internal: snapshots of the matcher's books.
    pub const MATCHER_SNAPSHOTS: &str = "orelink.matcher-snapshots.v1";
    /// Internal: each lane's allocations and carriers' offers in the one
    /// order the booker applies them (key: lane).
    pub const LANES: &str = "orelink.lanes.v1";
    /// The booker's bookings and unbooked remainders (key: lane).
    pub const BOOKINGS: &str = "orelink.bookings.v1";
    /// Capacity-gap alerts of the view's outlook (key: `<cluster>|<family>`).
    pub const ALERTS: &str = "orelink.alerts.v1";
    pub const CONTRACT: [&str; 7] = [ORDERS, CAPACITY, INVENTORY, SHIPMENTS, ALLOCATIONS, SHARED_ORDERS, DLQ];

    pub fn partner(partner_id: &str) -> String {
        format!("orelink.shipments.partner.{partner_id}.v1")
    }

    /// Internal: a partner's parked webhook deliveries.
    pub fn parked(partner_id: &str) -> String {
        format!("orelink.webhooks-parked.{partner_id}.v1")
    }

    /// Internal: a site's edge relay's forwarding progress.
    pub fn edge_progress(site_id: &str) -> String {
        format!("orelink.edge-progress.{site_id}.v1")
    }

    /// What an enterprise with its own Kafka client writes (contract v1.1).
    pub fn ingest(enterprise_id: &str) -> String {
        format!("orelink.ingest.{enterprise_id}.v1")
    }

    /// The allocations naming an enterprise, for its own Kafka client (contract v1.1).
    pub fn enterprise_allocations(enterprise_id: &str) -> String {
        format!("orelink.allocations.enterprise.{enterprise_id}.v1")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub clusters: Vec<Cluster>,
    pub partners: Vec<Partner>,
    pub enterprises: Vec<Enterprise>,
    /// Declared topics, then each partner's, then each enterprise's.
    pub topics: Vec<TopicSpec>,
    pub roles: Vec<RoleSpec>,
    pub freight: FreightTable,
    pub sharing: Sharing,
    sites: BTreeMap<SiteId, Site>,
}

impl Topology {
    /// Parses the four files. Parse errors of all files are reported together;
    /// semantic problems come from `check`.
    pub fn parse(src: TopologySources<'_>) -> Result<Topology, Vec<Invalid>> {
        fn parse_one<T: serde::de::DeserializeOwned>(file: &str, text: &str, errs: &mut Vec<Invalid>) -> Option<T> {
            toml::from_str(text).map_err(|e| errs.push(Invalid::new(format!("topology/{file}"), e.to_string().trim_end()))).ok()
        }
        let mut errs = Vec::new();
        let clusters: Option<ClustersFile> = parse_one("clusters.toml", src.clusters, &mut errs);
        let partners: Option<PartnersFile> = parse_one("partners.toml", src.partners, &mut errs);
        let topics: Option<TopicsFile> = parse_one("topics.toml", src.topics, &mut errs);
        let roles: Option<RolesFile> = parse_one("roles.toml", src.roles, &mut errs);
        let freight: Option<FreightTable> = parse_one("freight.toml", src.freight, &mut errs);
        let sharing: Option<Sharing> = parse_one("sharing.toml", src.sharing, &mut errs);
        let enterprises: Option<EnterprisesFile> = parse_one("enterprises.toml", src.enterprises, &mut errs);
        let (Some(clusters), Some(partners), Some(topics), Some(roles), Some(freight), Some(sharing), Some(enterprises)) =
            (clusters, partners, topics, roles, freight, sharing, enterprises)
        else {
            return Err(errs);
        };
        let ClustersFile { edge_progress_topic: edge_progress, mut clusters } = clusters;
        let mut sites = BTreeMap::new();
        for c in &mut clusters {
            for s in &mut c.sites {
                s.cluster = Some(c.id.clone());
                sites.entry(s.id.clone()).or_insert_with(|| s.clone());
            }
        }
        let mut all_topics = topics.topics;
        for c in &clusters {
            for s in &c.sites {
                let mut t = edge_progress.topic(
                    topics::edge_progress(s.id.as_str()),
                    "site_id",
                    "none".into(),
                    format!("Internal: the edge relay of {}: the last local sequence number forwarded, committed in the same transaction as the events (the number as text).", s.name),
                );
                t.cleanup_policy = CleanupPolicy::Compact;
                all_topics.push(t);
            }
        }
        for p in &partners.partners {
            all_topics.push(partners.partner_topic.shipments(topics::partner(p.id.as_str()), format!("Shipments carried by {}; readable only by that partner.", p.name)));
            all_topics.push(
                partners.parked_topic.shipments(topics::parked(p.id.as_str()), format!("Webhook deliveries to {} given up on after the last attempt, for `orelink webhooks redrive`.", p.name)),
            );
        }
        for e in &enterprises.enterprises {
            all_topics.push(enterprises.ingest_topic.topic(
                topics::ingest(&e.id),
                "family (orders, capacity) | site_id/product_code (inventory) | shipment_id (shipments)",
                INGEST_RECORDS.join("|"),
                format!("What {} writes with its own Kafka client; the enterprises role forwards what is its own.", e.name),
            ));
            all_topics.push(enterprises.allocations_topic.topic(
                topics::enterprise_allocations(&e.id),
                "family",
                "orelink.v1.Allocation".into(),
                format!("Allocations naming {} as buyer or provider; readable only by it.", e.name),
            ));
        }
        Ok(Topology { clusters, partners: partners.partners, enterprises: enterprises.enterprises, topics: all_topics, roles: roles.roles, freight, sharing, sites })
    }

    pub fn embedded() -> Topology {
        Self::parse(TopologySources::EMBEDDED).expect("the embedded topology is checked by its tests")
    }

    pub fn site(&self, id: &str) -> Option<&Site> {
        // SiteId is a transparent String, so a borrowed lookup by &str is sound via a temporary.
        SiteId::parse(id).ok().and_then(|s| self.sites.get(&s))
    }

    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.values()
    }

    pub fn cluster(&self, id: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.id.as_str() == id)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }

    pub fn enterprise(&self, id: &str) -> Option<&Enterprise> {
        self.enterprises.iter().find(|e| e.id == id)
    }

    pub fn partner_by_carrier(&self, carrier_id: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.carrier_id == carrier_id)
    }

    pub fn role(&self, name: &str) -> Option<&RoleSpec> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// Every semantic problem, each with where it is. `records` are the full
    /// names of the Avro records the schemas define.
    pub fn check(&self, catalog: &Catalog, records: &BTreeSet<String>) -> Vec<Invalid> {
        let mut p = self.sharing.check(&self.clusters.iter().map(|c| c.id.to_string()).collect(), catalog);
        let mut cluster_ids = BTreeSet::new();
        let mut site_ids = BTreeSet::new();
        for c in &self.clusters {
            let here = format!("cluster {}", c.id);
            if !cluster_ids.insert(c.id.clone()) {
                p.push(Invalid::new(&here, "declared twice"));
            }
            if c.sites.is_empty() {
                p.push(Invalid::new(&here, "has no sites"));
            }
            for f in &c.families {
                if !catalog.has_family(f) {
                    p.push(Invalid::new(&here, format!("family {f} is not in the catalog")));
                }
            }
            for s in &c.sites {
                let here = format!("site {}", s.id);
                if !site_ids.insert(s.id.clone()) {
                    p.push(Invalid::new(&here, "declared twice"));
                }
                // Guangxi and its neighbours: a coordinate outside is a typo or swapped lat/lon.
                if !(20.0..=27.0).contains(&s.lat) || !(104.0..=113.0).contains(&s.lon) {
                    p.push(Invalid::new(&here, format!("({}, {}) lies outside Guangxi (lat 20..27, lon 104..113)", s.lat, s.lon)));
                }
                if !s.modes.contains(&TransportMode::Road) {
                    p.push(Invalid::new(&here, "must be reachable by ROAD (the freight model's fallback)"));
                }
            }
        }
        if self.clusters.len() > 64 {
            p.push(Invalid::new("topology", format!("{} clusters; the matcher supports at most 64", self.clusters.len())));
        }
        let mut partner_ids = BTreeSet::new();
        let mut carriers = BTreeSet::new();
        for partner in &self.partners {
            let here = format!("partner {}", partner.id);
            if !partner_ids.insert(partner.id.clone()) {
                p.push(Invalid::new(&here, "declared twice"));
            }
            if !carriers.insert(partner.carrier_id.clone()) {
                p.push(Invalid::new(&here, format!("carrier id {} is used by another partner", partner.carrier_id)));
            }
            if partner.modes.is_empty() {
                p.push(Invalid::new(&here, "has no transport modes"));
            }
        }
        let mut enterprise_ids = BTreeSet::new();
        let mut operated = BTreeMap::new();
        for e in &self.enterprises {
            let here = format!("enterprise {}", e.id);
            if let Err(i) = UnifiedSocialCreditCode::parse(&e.id) {
                p.push(Invalid::new(&here, format!("id is not a unified social credit code: {}", i.message)));
            }
            if !enterprise_ids.insert(e.id.as_str()) {
                p.push(Invalid::new(&here, "declared twice"));
            }
            for s in &e.sites {
                if !site_ids.contains(s) {
                    p.push(Invalid::new(&here, format!("site {s} is not in topology/clusters.toml")));
                }
                if let Some(other) = operated.insert(s.clone(), e.id.as_str()) {
                    p.push(Invalid::new(&here, format!("site {s} is already operated by enterprise {other}")));
                }
            }
        }
        let mut names = BTreeSet::new();
        for t in &self.topics {
            let here = format!("topic {}", t.name);
            if !names.insert(t.name.as_str()) {
                p.push(Invalid::new(&here, "declared twice"));
            }
            let legal = !t.name.is_empty()
                && t.name.len() <= 249
                && t.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !legal {
                p.push(Invalid::new(&here, "is not a legal Kafka topic name"));
            }
            if t.partitions < 1 {
                p.push(Invalid::new(&here, format!("partitions is {}, at least 1 needed", t.partitions)));
            }
            if t.replication_factor < 1 {
                p.push(Invalid::new(&here, format!("replication_factor is {}, at least 1 needed", t.replication_factor)));
            }
            if t.retention_ms == 0 || t.retention_ms < -1 {
                p.push(Invalid::new(&here, format!("retention_ms is {}; use -1 (forever) or a positive number", t.retention_ms)));
            }
            for r in t.records() {
                if !records.contains(r) {
                    p.push(Invalid::new(&here, format!("value record {r} is not defined in schemas/")));
                }
            }
        }
        for required in topics::CONTRACT {
            if !names.contains(required) {
                p.push(Invalid::new(format!("topic {required}"), "is in the contract but not declared"));
            }
        }
        if let Some(inv) = self.topic(topics::INVENTORY) && inv.cleanup_policy != CleanupPolicy::Compact {
            p.push(Invalid::new("topic orelink.inventory.v1", "must be compacted (contract)"));
        }
        p.extend(self.freight.check());
        let mut role_names = BTreeSet::new();
        for r in &self.roles {
            let here = format!("role {}", r.name);
            if let Err(e) = check_slug("role", &r.name) {
                p.push(Invalid::new(&here, e.message));
            }
            if !role_names.insert(r.name.as_str()) {
                p.push(Invalid::new(&here, "declared twice"));
            }
            for t in r.reads.iter().chain(&r.writes) {
                // A name with `*` stands for the declared topics it matches (at least one).
                let covered = match t.split_once('*') {
                    Some((pre, post)) => names.iter().any(|n| n.len() > pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)),
                    None => names.contains(t.as_str()),
                };
                if !covered {
                    p.push(Invalid::new(&here, format!("uses topic {t}, which is not declared")));
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> BTreeSet<String> {
        ["OrderEvent", "CapacityEvent", "InventoryEvent", "ShipmentEvent", "Allocation", "SharedOrder", "DeadLetter", "OrderStatus", "TransportOffer", "Booking", "Alert"]
            .iter()
            .map(|r| format!("orelink.v1.{r}"))
            .collect()
    }

    #[test]
    fn embedded_topology_is_clean() {
        let t = Topology::embedded();
        assert_eq!(t.check(&Catalog::embedded(), &records()), vec![]);
        for c in ["baise", "hechi", "fangchenggang", "nanning"] {
            assert!(t.cluster(c).is_some(), "cluster {c} missing");
        }
        for p in &t.partners {
            assert!(t.topic(&topics::partner(p.id.as_str())).is_some());
        }
        let site = t.site("baise-pingguo-smelter").expect("Pingguo smelter");
        assert_eq!(site.cluster.as_ref().unwrap().as_str(), "baise");
        assert!(!t.enterprises.is_empty());
        for e in &t.enterprises {
            let ingest = t.topic(&topics::ingest(&e.id)).expect("ingest topic");
            assert_eq!(ingest.records().collect::<Vec<_>>(), INGEST_RECORDS);
            assert_eq!(ingest.subjects()[0].0, format!("orelink.ingest.{}.v1-orelink.v1.OrderEvent", e.id));
            assert_eq!(t.topic(&topics::enterprise_allocations(&e.id)).unwrap().subjects(), vec![(format!("orelink.allocations.enterprise.{}.v1-value", e.id), "orelink.v1.Allocation")]);
        }
    }

    #[test]
    fn an_enterprise_needs_a_credit_code_and_sites_no_one_else_operates() {
        let enterprises = TopologySources::EMBEDDED.enterprises.replace("91451200MA5L0HXT20", "91451200MA5L0HXT21").replace("\"hechi-dachang-tin\"", "\"baise-pingguo-smelter\", \"nowhere-site\"");
        let t = Topology::parse(TopologySources { enterprises: &enterprises, ..TopologySources::EMBEDDED }).unwrap();
        let text = t.check(&Catalog::embedded(), &records()).iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
        assert!(text.contains("enterprise 91451200MA5L0HXT21: id is not a unified social credit code"), "{text}");
        assert!(text.contains("site baise-pingguo-smelter is already operated by enterprise 91451000MA5L0CHG10"), "{text}");
        assert!(text.contains("site nowhere-site is not in topology/clusters.toml"), "{text}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let clusters = TopologySources::EMBEDDED.clusters.replace("lat = 23.", "lat = 3.").replace("\"AL-INGOT\"", "\"AU-BAR\"");
        let topics = TopologySources::EMBEDDED.topics.replace("orelink.allocations.v1", "orelink.allocation.v1");
        let src = TopologySources { clusters: &clusters, topics: &topics, ..TopologySources::EMBEDDED };
        let t = Topology::parse(src).unwrap();
        let problems = t.check(&Catalog::embedded(), &records());
        let text = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
        assert!(text.contains("outside Guangxi"), "{text}");
        assert!(text.contains("AU-BAR is not in the catalog"), "{text}");
        assert!(text.contains("orelink.allocations.v1 is in the contract but not declared") || text.contains("topic orelink.allocations.v1: is in the contract"), "{text}");
        assert!(text.contains("uses topic orelink.allocations.v1, which is not declared"), "{text}");
    }

    #[test]
    fn parse_errors_of_several_files_are_reported_together() {
        let src = TopologySources { clusters: "[[cluster]]\nid = 3", roles: "nonsense = ", ..TopologySources::EMBEDDED };
        let errs = Topology::parse(src).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].field.contains("clusters.toml") && errs[1].field.contains("roles.toml"));
    }
}
