//! `orelink topology check|show|apply|render`.

use crate::{k8s, load_config, principal, reference};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use orelink_platform::registry_client::RegistryClient;
use orelink_platform::{Reference, apply, telemetry};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum TopologyAction {
    /// Validate topology/ and schemas/ under ROOT; every problem is reported.
    Check {
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Print clusters, sites, partners and topics.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Create or update topics, register schemas, and set the principals (SCRAM
    /// users) and ACLs of every role and partner; a second apply changes nothing.
    Apply {
        #[arg(long)]
        dry_run: bool,
        /// Where the principals' passwords are kept (mode 0600); default: beside
        /// the local stack's credentials.
        #[arg(long)]
        users_file: Option<PathBuf>,
    },
    /// Render deployment resources from the topology (today: `k8s`, Strimzi KafkaTopic and KafkaUser).
    Render {
        #[arg(value_parser = ["k8s"])]
        target: String,
        /// Where the files go.
        #[arg(long, default_value = "k8s/base/kafka")]
        out: PathBuf,
    },
}

pub(crate) async fn run(action: TopologyAction, config: Option<PathBuf>) -> Result<()> {
    match action {
        TopologyAction::Check { root } => {
            let r = Reference::load(&root).map_err(|p| anyhow!("{} problem(s):\n  - {}", p.len(), p.join("\n  - ")))?;
            println!(
                "ok: {} clusters, {} sites, {} partners, {} topics, {} schemas, {} product families",
                r.topology.clusters.len(),
                r.topology.sites().count(),
                r.topology.partners.len(),
                r.topology.topics.len(),
                r.schemas.names().len(),
                r.catalog.families().len()
            );
            Ok(())
        }
        TopologyAction::Show { json } => {
            let cfg = load_config(config)?;
            let r = reference(&cfg)?;
            let t = &r.topology;
            if json {
                let doc = serde_json::json!({
                    "namespace": cfg.namespace,
                    "clusters": t.clusters,
                    "partners": t.partners,
                    "topics": t.topics.iter().map(|s| {
                        let mut v = serde_json::to_value(s).expect("serialises");
                        v["name"] = serde_json::Value::String(format!("{}{}", cfg.namespace, s.name));
                        v
                    }).collect::<Vec<_>>(),
                    "roles": t.roles,
                    "catalog": r.catalog.families(),
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                for c in &t.clusters {
                    println!("cluster {} — {} ({})", c.id, c.name, c.name_zh);
                    for s in &c.sites {
                        let modes: Vec<_> = s.modes.iter().map(|m| m.as_str()).collect();
                        println!("  site {:<32} {:>6.2}N {:>7.2}E  {:<10} {}", s.id, s.lat, s.lon, s.kind, modes.join("/"));
                    }
                }
                for p in &t.partners {
                    println!("partner {} — {} ({})", p.id, p.name, p.name_zh);
                }
                for s in &t.topics {
                    println!("topic {}{}: {} partitions, {}, key {}", cfg.namespace, s.name, s.partitions, s.cleanup_policy.as_str(), s.key);
                }
            }
            Ok(())
        }
        TopologyAction::Render { target: _, out } => {
            let cfg = load_config(config)?;
            let r = reference(&cfg)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (file, text) in k8s::render(&r.topology) {
                let path = out.join(&file);
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        TopologyAction::Apply { dry_run, users_file } => {
            let cfg = load_config(config)?;
            telemetry::init(&cfg.log);
            let r = reference(&cfg)?;
            let registry = RegistryClient::from_config(&cfg)?;
            let result = apply::apply(&cfg.kafka.client_config("admin"), &registry, &r, &cfg.namespace, dry_run).await;
            let applied = match result {
                Ok(a) => a,
                Err(e) => bail!("topology apply: {e}"),
            };
            for n in &applied.notes {
                println!("! {n}");
            }
            let users_file = users_file.unwrap_or_else(|| principal::users_file_of(&cfg));
            let kafka = cfg.kafka.client_config("admin");
            let ns = cfg.namespace.clone();
            let access = tokio::task::spawn_blocking(move || orelink_platform::access_apply::apply_access(&kafka, &r, &ns, &users_file, dry_run)).await?;
            let access = match access {
                Ok(c) => c,
                Err(orelink_platform::access_apply::AccessError::NoAuthorizer) => {
                    println!("! the broker has no authorizer: principals and ACLs not applied");
                    vec![]
                }
                Err(e) => bail!("topology apply (access): {e}"),
            };
            if applied.changes.is_empty() && access.is_empty() {
                println!("no changes");
            }
            for c in &applied.changes {
                println!("{c}");
            }
            for c in &access {
                println!("{c}");
            }
            if dry_run && !(applied.changes.is_empty() && access.is_empty()) {
                println!("(dry run: nothing was changed)");
            }
            Ok(())
        }
    }
}

