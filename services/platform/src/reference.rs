//! Loads the catalog, topology and schemas, from a directory or the copies
//! built into the binary, and checks them together; every problem is reported.

use orelink_codec::Schemas;
use orelink_domain::topology::TopologySources;
use orelink_domain::{Catalog, Topology};
use std::path::Path;
use std::sync::Arc;

#[derive(Clone)]
pub struct Reference {
    pub catalog: Arc<Catalog>,
    pub topology: Arc<Topology>,
    pub schemas: Arc<Schemas>,
}

impl Reference {
    /// What the domain's validation looks ids up in.
    pub fn lookup(&self) -> orelink_domain::events::Lookup<'_> {
        orelink_domain::events::Lookup { catalog: &self.catalog, topology: &self.topology }
    }

    pub fn embedded() -> Reference {
        Reference { catalog: Arc::new(Catalog::embedded()), topology: Arc::new(Topology::embedded()), schemas: Arc::new(Schemas::embedded()) }
    }

    /// Reads `<root>/topology/*.toml`, `<root>/schemas/*.avsc` and `<root>/schemas/catalog.toml`.
    pub fn load(root: &Path) -> Result<Reference, Vec<String>> {
        let mut problems = Vec::new();
        let mut read = |rel: &str| -> String {
            std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| {
                problems.push(format!("{rel}: {e}"));
                String::new()
            })
        };
        let clusters = read("topology/clusters.toml");
        let partners = read("topology/partners.toml");
        let topics = read("topology/topics.toml");
        let roles = read("topology/roles.toml");
        let freight = read("topology/freight.toml");
        let sharing = read("topology/sharing.toml");
        let enterprises = read("topology/enterprises.toml");
        let catalog_text = read("schemas/catalog.toml");
        let mut avsc = Vec::new();
        match std::fs::read_dir(root.join("schemas")) {
            Ok(entries) => {
                let mut files: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "avsc")).collect();
                files.sort();
                for f in files {
                    match std::fs::read_to_string(&f) {
                        Ok(t) => avsc.push((f.file_name().unwrap_or_default().to_string_lossy().into_owned(), t)),
                        Err(e) => problems.push(format!("{}: {e}", f.display())),
                    }
                }
            }
            Err(e) => problems.push(format!("schemas/: {e}")),
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Self::from_parts(TopologySources { clusters: &clusters, partners: &partners, topics: &topics, roles: &roles, freight: &freight, sharing: &sharing, enterprises: &enterprises }, &catalog_text, avsc)
    }

    pub fn from_parts(src: TopologySources<'_>, catalog: &str, avsc: Vec<(String, String)>) -> Result<Reference, Vec<String>> {
        let mut problems = Vec::new();
        let catalog = Catalog::from_toml(catalog).map_err(|e| problems.extend(e.iter().map(|p| format!("schemas/catalog.toml: {p}")))).ok();
        let topology = Topology::parse(src).map_err(|e| problems.extend(e.iter().map(|p| p.to_string()))).ok();
        let schemas = Schemas::parse(avsc).map_err(|e| problems.extend(e.iter().map(|p| p.to_string()))).ok();
        if let (Some(c), Some(t), Some(s)) = (&catalog, &topology, &schemas) {
            problems.extend(t.check(c, &s.names()).iter().map(|p| p.to_string()));
        }
        match (catalog, topology, schemas) {
            (Some(catalog), Some(topology), Some(schemas)) if problems.is_empty() => {
                Ok(Reference { catalog: Arc::new(catalog), topology: Arc::new(topology), schemas: Arc::new(schemas) })
            }
            _ => Err(problems),
        }
    }

    /// Per the config: a directory, or the embedded copies.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Reference, Vec<String>> {
        if cfg.topology.dir.is_empty() {
            Ok(Self::embedded())
        } else {
            // topology.dir names the topology folder; schemas/ is its sibling.
            let dir = Path::new(&cfg.topology.dir);
            Self::load(dir.parent().unwrap_or(Path::new(".")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_files_load_and_check_clean() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let r = Reference::load(&root).unwrap_or_else(|p| panic!("{p:#?}"));
        assert!(r.topology.topic("orelink.orders.v1").is_some());
    }

    #[test]
    fn problems_in_all_parts_are_reported_together() {
        let src = TopologySources::EMBEDDED;
        let avsc = vec![("X.avsc".to_string(), "{".to_string())];
        let problems = Reference::from_parts(src, "[[family]]\nfamily = 1", avsc).err().unwrap();
        assert!(problems.iter().any(|p| p.contains("catalog.toml")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("X.avsc")), "{problems:?}");
    }
}
