//! `orelink topology apply`: make the broker and the registry match `topology/`.
//!
//! Topics are created, grown and reconfigured; each Avro topic's subject
//! `<topic>-value` gets BACKWARD_TRANSITIVE and the hub's schema. Applying
//! twice changes nothing the second time. A schema the registry finds
//! incompatible is refused with the registry's reason, and nothing about
//! that subject changes.

use crate::registry_client::{RegistryClient, RegistryClientError};
use crate::reference::Reference;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub const COMPATIBILITY: &str = "BACKWARD_TRANSITIVE";

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    CreateTopic { name: String, partitions: i32, replication: i32, configs: BTreeMap<&'static str, String> },
    AddPartitions { name: String, from: i32, to: i32 },
    AlterConfigs { name: String, changed: Vec<(String, Option<String>, String)> },
    SetCompatibility { subject: String, from: Option<String>, to: String },
    RegisterSchema { subject: String, record: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateTopic { name, partitions, replication, configs } => {
                let c: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "+ topic {name}: {partitions} partitions, replication {replication}, {}", c.join(", "))
            }
            Change::AddPartitions { name, from, to } => write!(f, "~ topic {name}: partitions {from} -> {to}"),
            Change::AlterConfigs { name, changed } => {
                let c: Vec<String> = changed.iter().map(|(k, from, to)| format!("{k} {} -> {to}", from.as_deref().unwrap_or("(default)"))).collect();
                write!(f, "~ topic {name}: {}", c.join(", "))
            }
            Change::SetCompatibility { subject, from, to } => {
                write!(f, "~ subject {subject}: compatibility {} -> {to}", from.as_deref().unwrap_or("(global)"))
            }
            Change::RegisterSchema { subject, record } => write!(f, "+ subject {subject}: register {record}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Registry(#[from] RegistryClientError),
    #[error("{what}: {code}")]
    Broker { what: String, code: rdkafka::types::RDKafkaErrorCode },
    /// Every subject whose schema the registry refused, with its reasons; the rest was applied.
    #[error("refused by the schema registry:\n{}", .0.iter().map(|(s, r)| format!("  {s}: {}", r.join("; "))).collect::<Vec<_>>().join("\n"))]
    Incompatible(Vec<(String, Vec<String>)>),
}

pub struct Applied {
    pub changes: Vec<Change>,
    /// Things that cannot be applied and need a person, e.g. fewer partitions than exist.
    pub notes: Vec<String>,
}

pub async fn apply(kafka: &ClientConfig, registry: &RegistryClient, reference: &Reference, namespace: &str, dry_run: bool) -> Result<Applied, ApplyError> {
    let admin: AdminClient<DefaultClientContext> = kafka.create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))).request_timeout(Some(Duration::from_secs(30)));
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
    let brokers = metadata.brokers().len().max(1) as i32;
    let existing: BTreeMap<String, i32> = metadata.topics().iter().map(|t| (t.name().to_owned(), t.partitions().len() as i32)).collect();

    let mut changes = Vec::new();
    let mut notes = Vec::new();
    let mut to_describe = Vec::new();
    for spec in &reference.topology.topics {
        let name = format!("{namespace}{}", spec.name);
        match existing.get(&name) {
            None => changes.push(Change::CreateTopic {
                name,
                partitions: spec.partitions,
                replication: spec.replication_factor.min(brokers),
                configs: spec.configs(),
            }),
            Some(&have) => {
                if have < spec.partitions {
                    changes.push(Change::AddPartitions { name: name.clone(), from: have, to: spec.partitions });
                } else if have > spec.partitions {
                    notes.push(format!("topic {name} has {have} partitions, more than the {} declared; Kafka cannot shrink a topic", spec.partitions));
                }
                to_describe.push((name, spec.configs()));
            }
        }
    }
    if !to_describe.is_empty() {
        let specs: Vec<ResourceSpecifier> = to_describe.iter().map(|(n, _)| ResourceSpecifier::Topic(n)).collect();
        let described = admin.describe_configs(specs.iter(), &opts).await?;
        for ((name, want), got) in to_describe.iter().zip(described) {
            let got = got.map_err(|code| ApplyError::Broker { what: format!("describing {name}"), code })?;
            let changed: Vec<(String, Option<String>, String)> = want
                .iter()
                .filter_map(|(k, v)| {
                    let have = got.get(k).and_then(|e| e.value.clone());
                    (have.as_deref() != Some(v.as_str())).then(|| (k.to_string(), have, v.clone()))
                })
                .collect();
            if !changed.is_empty() {
                changes.push(Change::AlterConfigs { name: name.clone(), changed });
            }
        }
    }

    // Registry: level first, then the schema checked under that level.
    let mut refused = Vec::new();
    // Subjects whose level a real run already set, so that `execute` does not set it again.
    let mut level_set = std::collections::BTreeSet::new();
    for (subject, record) in reference.topology.topics.iter().flat_map(|t| t.subjects()) {
        let subject = format!("{namespace}{subject}");
        let schema = &reference.schemas.get(record).expect("checked by the topology check").text;
        let level = registry.subject_level(&subject).await?;
        let level_differs = level.as_deref() != Some(COMPATIBILITY);
        if level_differs {
            changes.push(Change::SetCompatibility { subject: subject.clone(), from: level, to: COMPATIBILITY.into() });
        }
        if registry.lookup(&subject, schema).await?.is_none() {
            let problems = if registry.has_versions(&subject).await? {
                // Under the subject's current level on a dry run; a real run sets the level first.
                if !dry_run && level_differs {
                    registry.set_subject_level(&subject, COMPATIBILITY).await?;
                    level_set.insert(subject.clone());
                }
                registry.incompatibilities(&subject, schema).await?
            } else {
                vec![]
            };
            if problems.is_empty() {
                changes.push(Change::RegisterSchema { subject, record: record.to_owned() });
            } else {
                refused.push((subject, problems));
            }
        }
    }

    if !dry_run {
        execute(&admin, &opts, registry, reference, namespace, &changes, &level_set).await?;
    }
    if refused.is_empty() { Ok(Applied { changes, notes }) } else { Err(ApplyError::Incompatible(refused)) }
}

async fn execute(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    registry: &RegistryClient,
    reference: &Reference,
    namespace: &str,
    changes: &[Change],
    level_set: &std::collections::BTreeSet<String>,
) -> Result<(), ApplyError> {
    let broker_err = |what: String| move |(_, code)| ApplyError::Broker { what: what.clone(), code };
    for change in changes {
        match change {
            Change::CreateTopic { name, partitions, replication, configs } => {
                let mut t = NewTopic::new(name, *partitions, TopicReplication::Fixed(*replication));
                for (k, v) in configs {
                    t = t.set(k, v);
                }
                for r in admin.create_topics([&t], opts).await? {
                    r.map_err(broker_err(format!("creating {name}")))?;
                }
            }
            Change::AddPartitions { name, to, .. } => {
                let p = NewPartitions::new(name, *to as usize);
                for r in admin.create_partitions([&p], opts).await? {
                    r.map_err(broker_err(format!("adding partitions to {name}")))?;
                }
            }
            Change::AlterConfigs { name, .. } => {
                // AlterConfigs replaces the topic's dynamic configs, so send every managed key.
                let spec = reference.topology.topic(name.strip_prefix(namespace).unwrap_or(name)).expect("planned from the topology");
                let want = spec.configs();
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
                for (k, v) in &want {
                    alter = alter.set(k, v);
                }
                for r in admin.alter_configs([&alter], opts).await? {
                    r.map_err(|(_, code)| ApplyError::Broker { what: format!("configuring {name}"), code })?;
                }
            }
            Change::SetCompatibility { subject, .. } if level_set.contains(subject) => {}
            Change::SetCompatibility { subject, to, .. } => registry.set_subject_level(subject, to).await?,
            Change::RegisterSchema { subject, record } => {
                let schema = &reference.schemas.get(record).expect("planned from the schemas").text;
                registry.register(subject, schema).await?;
            }
        }
    }
    Ok(())
}
