//! Compatibility levels, checked with apache-avro's schema resolution rules.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }
    pub fn transitive(self) -> bool {
        matches!(self, Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive)
    }
}

/// Problems of `candidate` against one `existing` version under `level`.
/// Backward: the new schema reads data written with the old. Forward: the old reads the new.
pub fn check(level: Level, existing: &Schema, candidate: &Schema) -> Vec<String> {
    let backward = matches!(level, Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive);
    let forward = matches!(level, Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive);
    let mut out = Vec::new();
    if backward && let Err(e) = SchemaCompatibility::can_read(existing, candidate) {
        out.push(format!("the new schema cannot read data written with it (backward): {e}"));
    }
    if forward && let Err(e) = SchemaCompatibility::can_read(candidate, existing) {
        out.push(format!("it cannot read data written with the new schema (forward): {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(Level::parse("backward_transitive"), Some(Level::BackwardTransitive));
        assert_eq!(Level::parse("FULL"), Some(Level::Full));
        assert_eq!(Level::parse("sideways"), None);
    }

    #[test]
    fn forward_and_backward_differ() {
        let old = Schema::parse_str(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#).unwrap();
        // Drops field a: new readers are fine (backward), old readers miss a (not forward).
        let new = Schema::parse_str(r#"{"type":"record","name":"R","fields":[]}"#).unwrap();
        assert!(check(Level::Backward, &old, &new).is_empty());
        assert_eq!(check(Level::Forward, &old, &new).len(), 1);
        assert_eq!(check(Level::Full, &old, &new).len(), 1);
        assert!(check(Level::None, &old, &new).is_empty());
    }
}
