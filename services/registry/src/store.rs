//! The registry's state and every operation on it, without I/O.
//!
//! Each mutating operation returns the log records that make it durable; the
//! caller appends them to `_schemas` and then applies them with [`Store::apply`].
//! Restoring after a restart is applying the topic from the beginning, so
//! ids and versions are stable across restarts.

use crate::compat::{self, Level};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Key of a `_schemas` record (the Confluent layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogKey {
    Schema { subject: String, version: u32, magic: u8 },
    Config { subject: Option<String>, magic: u8 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    #[serde(rename = "schemaType", default = "avro")]
    pub schema_type: String,
    #[serde(default)]
    pub deleted: bool,
}

fn avro() -> String {
    "AVRO".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: Level,
}

/// One record for `_schemas`: key and value as JSON, `None` value = tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub key: LogKey,
    pub value: Option<serde_json::Value>,
}

impl LogRecord {
    pub fn key_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.key).expect("keys serialise")
    }
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        self.value.as_ref().map(|v| serde_json::to_vec(v).expect("values serialise"))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Version {
    version: u32,
    id: u32,
    deleted: bool,
}

/// A Confluent error: HTTP status, `error_code`, message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub status: u16,
    pub error_code: u32,
    pub message: String,
}

impl RegistryError {
    fn new(status: u16, error_code: u32, message: impl Into<String>) -> Self {
        RegistryError { status, error_code, message: message.into() }
    }
    pub fn forbidden(message: String) -> Self {
        Self::new(403, 40301, message)
    }
    pub fn subject_not_found(s: &str) -> Self {
        Self::new(404, 40401, format!("Subject '{s}' not found."))
    }
    pub fn version_not_found(v: &str) -> Self {
        Self::new(404, 40402, format!("Version {v} not found."))
    }
    pub fn schema_not_found(what: &str) -> Self {
        Self::new(404, 40403, format!("Schema {what} not found"))
    }
    pub fn invalid_schema(msg: &str) -> Self {
        Self::new(422, 42201, format!("Invalid schema: {msg}"))
    }
    pub fn invalid_version(v: &str) -> Self {
        Self::new(422, 42202, format!("The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""))
    }
    pub fn invalid_level(l: &str) -> Self {
        Self::new(422, 42203, format!("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive; got {l}"))
    }
    pub fn incompatible(messages: &[String]) -> Self {
        Self::new(409, 409, format!("Schema being registered is incompatible with an earlier schema for subject; {}", messages.join("; ")))
    }
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        Self::new(422, 422, msg)
    }
}

/// A schema as a client submits it.
#[derive(Debug, Clone, Deserialize)]
pub struct Submitted {
    pub schema: String,
    #[serde(rename = "schemaType", default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<serde_json::Value>,
}

/// What `GET /subjects/{s}/versions/{v}` and lookups return.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub id: u32,
    pub version: u32,
    pub schema: String,
}

#[derive(Debug, Default, Clone)]
pub struct Store {
    /// id -> canonical schema text
    schemas: BTreeMap<u32, String>,
    /// canonical text -> id
    ids: BTreeMap<String, u32>,
    subjects: BTreeMap<String, Vec<Version>>,
    global: Option<Level>,
    per_subject: BTreeMap<String, Level>,
}

/// Version selector: a number or `latest`.
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        match s {
            "latest" | "-1" => Ok(VersionRef::Latest),
            _ => s.parse::<u32>().ok().filter(|v| *v >= 1 && *v <= i32::MAX as u32).map(VersionRef::Number).ok_or_else(|| RegistryError::invalid_version(s)),
        }
    }
}

impl Store {
    /// Applies one record read from (or just written to) `_schemas`. Unknown or
    /// malformed records are skipped: the log may hold records of newer versions.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = serde_json::from_slice::<LogKey>(key) else { return };
        match key {
            LogKey::Schema { subject, version, .. } => match value.map(serde_json::from_slice::<SchemaValue>) {
                Some(Ok(v)) => {
                    self.schemas.entry(v.id).or_insert_with(|| v.schema.clone());
                    self.ids.entry(v.schema.clone()).or_insert(v.id);
                    let versions = self.subjects.entry(subject).or_default();
                    match versions.iter_mut().find(|x| x.version == version) {
                        Some(x) => x.deleted = v.deleted,
                        None => {
                            versions.push(Version { version, id: v.id, deleted: v.deleted });
                            versions.sort_by_key(|x| x.version);
                        }
                    }
                }
                Some(Err(_)) => {}
                None => {
                    if let Some(versions) = self.subjects.get_mut(&subject) {
                        versions.retain(|x| x.version != version);
                        if versions.is_empty() {
                            self.subjects.remove(&subject);
                        }
                    }
                }
            },
            LogKey::Config { subject, .. } => {
                let level = value.and_then(|v| serde_json::from_slice::<ConfigValue>(v).ok()).map(|c| c.compatibility_level);
                match (subject, level) {
                    (None, l) => self.global = l,
                    (Some(s), Some(l)) => {
                        self.per_subject.insert(s, l);
                    }
                    (Some(s), None) => {
                        self.per_subject.remove(&s);
                    }
                }
            }
        }
    }

    pub fn global_level(&self) -> Level {
        self.global.unwrap_or(Level::Backward)
    }

    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.per_subject.get(subject).copied()
    }

    fn effective_level(&self, subject: &str) -> Level {
        self.subject_level(subject).unwrap_or_else(|| self.global_level())
    }

    pub fn schema_by_id(&self, id: u32) -> Result<&str, RegistryError> {
        self.schemas.get(&id).map(|s| s.as_str()).ok_or_else(|| RegistryError::schema_not_found(&id.to_string()))
    }

    pub fn subjects_of_id(&self, id: u32) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (s, versions) in &self.subjects {
            for v in versions.iter().filter(|v| v.id == id && !v.deleted) {
                out.push((s.clone(), v.version));
            }
        }
        out
    }

    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, v)| include_deleted || v.iter().any(|x| !x.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn live_versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<&Version>, RegistryError> {
        let versions: Vec<&Version> = self
            .subjects
            .get(subject)
            .map(|v| v.iter().filter(|x| include_deleted || !x.deleted).collect())
            .unwrap_or_default();
        if versions.is_empty() { Err(RegistryError::subject_not_found(subject)) } else { Ok(versions) }
    }

    pub fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>, RegistryError> {
        Ok(self.live_versions(subject, include_deleted)?.iter().map(|v| v.version).collect())
    }

    pub fn version(&self, subject: &str, which: &VersionRef, include_deleted: bool) -> Result<SubjectVersion, RegistryError> {
        let versions = self.live_versions(subject, include_deleted)?;
        let v = match which {
            VersionRef::Latest => versions.last().copied(),
            VersionRef::Number(n) => versions.iter().find(|v| v.version == *n).copied(),
        }
        .ok_or_else(|| RegistryError::version_not_found(&match which {
            VersionRef::Latest => "latest".into(),
            VersionRef::Number(n) => n.to_string(),
        }))?;
        Ok(SubjectVersion { subject: subject.into(), id: v.id, version: v.version, schema: self.schemas[&v.id].clone() })
    }

    /// The canonical text of a submitted schema, or a 42201.
    pub fn canonical(sub: &Submitted) -> Result<(String, apache_avro::Schema), RegistryError> {
        match sub.schema_type.as_deref() {
            None | Some("AVRO") => {}
            Some(other) => return Err(RegistryError::invalid_schema(&format!("schema type {other} is not supported; this registry serves AVRO"))),
        }
        if !sub.references.is_empty() {
            return Err(RegistryError::invalid_schema("schema references are not supported"));
        }
        let parsed = apache_avro::Schema::parse_str(&sub.schema).map_err(|e| RegistryError::invalid_schema(&e.to_string()))?;
        // Compact JSON keeps docs and defaults (unlike Avro's parsing canonical form), so
        // schemas that differ only there get different ids, as in Confluent's registry.
        let json: serde_json::Value = serde_json::from_str(&sub.schema).map_err(|e| RegistryError::invalid_schema(&e.to_string()))?;
        Ok((serde_json::to_string(&json).expect("json serialises"), parsed))
    }

    /// `POST /subjects/{s}` — is this schema registered under the subject?
    pub fn lookup(&self, subject: &str, sub: &Submitted, include_deleted: bool) -> Result<SubjectVersion, RegistryError> {
        let (canonical, _) = Self::canonical(sub)?;
        let versions = self.live_versions(subject, include_deleted)?;
        let id = self.ids.get(&canonical).ok_or_else(|| RegistryError::schema_not_found("not"))?;
        let v = versions.iter().rev().find(|v| v.id == *id).ok_or_else(|| RegistryError::schema_not_found("not"))?;
        Ok(SubjectVersion { subject: subject.into(), id: v.id, version: v.version, schema: canonical })
    }

    /// Messages of every incompatibility of `candidate` with the subject's
    /// versions, as the subject's level (or `level`) requires. Empty = compatible.
    pub fn incompatibilities(&self, subject: &str, candidate: &apache_avro::Schema, against: Option<&VersionRef>) -> Result<Vec<String>, RegistryError> {
        let level = self.effective_level(subject);
        let versions: Vec<&Version> = self.subjects.get(subject).map(|v| v.iter().filter(|x| !x.deleted).collect()).unwrap_or_default();
        let chosen: Vec<&Version> = match against {
            Some(VersionRef::Number(n)) => {
                vec![*versions.iter().find(|v| v.version == *n).ok_or_else(|| RegistryError::version_not_found(&n.to_string()))?]
            }
            Some(VersionRef::Latest) if versions.is_empty() => return Err(RegistryError::subject_not_found(subject)),
            Some(VersionRef::Latest) => vec![*versions.last().expect("non-empty")],
            None if level.transitive() => versions,
            None => versions.last().map(|v| vec![*v]).unwrap_or_default(),
        };
        let mut messages = Vec::new();
        for v in chosen {
            let existing = apache_avro::Schema::parse_str(&self.schemas[&v.id]).map_err(|e| RegistryError::new(500, 50001, e.to_string()))?;
            for m in compat::check(level, &existing, candidate) {
                messages.push(format!("version {}: {m}", v.version));
            }
        }
        Ok(messages)
    }

    /// `POST /subjects/{s}/versions`: the id, and the records to append if it is new.
    pub fn register(&self, subject: &str, sub: &Submitted) -> Result<(u32, Vec<LogRecord>), RegistryError> {
        let (canonical, parsed) = Self::canonical(sub)?;
        let versions: Vec<&Version> = self.subjects.get(subject).map(|v| v.iter().collect()).unwrap_or_default();
        if let Some(id) = self.ids.get(&canonical) && versions.iter().any(|v| v.id == *id && !v.deleted) {
            return Ok((*id, vec![]));
        }
        let messages = self.incompatibilities(subject, &parsed, None)?;
        if !messages.is_empty() {
            return Err(RegistryError::incompatible(&messages));
        }
        let id = self.ids.get(&canonical).copied().unwrap_or_else(|| self.schemas.keys().next_back().map_or(1, |m| m + 1));
        // Versions keep counting past soft-deleted ones, as Confluent's do.
        let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        let value = SchemaValue { subject: subject.into(), version, id, schema: canonical, schema_type: avro(), deleted: false };
        Ok((id, vec![LogRecord {
            key: LogKey::Schema { subject: subject.into(), version, magic: 1 },
            value: Some(serde_json::to_value(value).expect("serialises")),
        }]))
    }

    fn schema_record(&self, subject: &str, v: &Version, deleted: bool, permanent: bool) -> LogRecord {
        let key = LogKey::Schema { subject: subject.into(), version: v.version, magic: 1 };
        if permanent {
            return LogRecord { key, value: None };
        }
        let value = SchemaValue { subject: subject.into(), version: v.version, id: v.id, schema: self.schemas[&v.id].clone(), schema_type: avro(), deleted };
        LogRecord { key, value: Some(serde_json::to_value(value).expect("serialises")) }
    }

    /// `DELETE /subjects/{s}`: soft, or hard (`permanent`) after a soft delete.
    pub fn delete_subject(&self, subject: &str, permanent: bool) -> Result<(Vec<u32>, Vec<LogRecord>), RegistryError> {
        let versions = self.subjects.get(subject).filter(|v| !v.is_empty()).ok_or_else(|| RegistryError::subject_not_found(subject))?;
        if permanent {
            if versions.iter().any(|v| !v.deleted) {
                return Err(RegistryError::new(404, 40405, format!("Subject '{subject}' was not deleted first before being permanently deleted")));
            }
        } else if versions.iter().all(|v| v.deleted) {
            return Err(RegistryError::new(404, 40404, format!("Subject '{subject}' was soft deleted. Set permanent=true to delete permanently")));
        }
        let chosen: Vec<&Version> = versions.iter().filter(|v| permanent || !v.deleted).collect();
        let mut records: Vec<LogRecord> = chosen.iter().map(|v| self.schema_record(subject, v, true, permanent)).collect();
        if permanent && self.per_subject.contains_key(subject) {
            records.push(LogRecord { key: LogKey::Config { subject: Some(subject.into()), magic: 0 }, value: None });
        }
        Ok((chosen.iter().map(|v| v.version).collect(), records))
    }

    /// `DELETE /subjects/{s}/versions/{v}`.
    pub fn delete_version(&self, subject: &str, which: &VersionRef, permanent: bool) -> Result<(u32, Vec<LogRecord>), RegistryError> {
        let all = self.subjects.get(subject).filter(|v| !v.is_empty()).ok_or_else(|| RegistryError::subject_not_found(subject))?;
        let v = match which {
            VersionRef::Latest => all.iter().rev().find(|v| !v.deleted || permanent),
            VersionRef::Number(n) => all.iter().find(|v| v.version == *n),
        }
        .ok_or_else(|| RegistryError::version_not_found("requested"))?;
        if permanent && !v.deleted {
            return Err(RegistryError::new(404, 40407, format!("Subject '{subject}' Version {} was not deleted first before being permanently deleted", v.version)));
        }
        if !permanent && v.deleted {
            return Err(RegistryError::new(404, 40406, format!("Subject '{subject}' Version {} was soft deleted. Set permanent=true to delete permanently", v.version)));
        }
        Ok((v.version, vec![self.schema_record(subject, v, true, permanent)]))
    }

    pub fn set_config(subject: Option<&str>, level: Level) -> LogRecord {
        LogRecord {
            key: LogKey::Config { subject: subject.map(str::to_owned), magic: 0 },
            value: Some(serde_json::to_value(ConfigValue { compatibility_level: level }).expect("serialises")),
        }
    }

    pub fn delete_config(&self, subject: &str) -> Result<(Level, LogRecord), RegistryError> {
        let level = self.subject_level(subject).ok_or_else(|| RegistryError::subject_not_found(subject))?;
        Ok((level, LogRecord { key: LogKey::Config { subject: Some(subject.into()), magic: 0 }, value: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str) -> Submitted {
        Submitted { schema: s.into(), schema_type: None, references: vec![] }
    }

    const V1: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"long"}]}"#;
    const V2_OK: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"long"},{"name":"b","type":["null","string"],"default":null}]}"#;
    const V2_BAD: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"long"},{"name":"c","type":"string"}]}"#;

    fn commit(store: &mut Store, records: Vec<LogRecord>) {
        for r in records {
            store.apply(&r.key_bytes(), r.value_bytes().as_deref());
        }
    }

    #[test]
    fn register_is_idempotent_and_ids_are_shared_across_subjects() {
        let mut s = Store::default();
        let (id, recs) = s.register("a-value", &sub(V1)).unwrap();
        assert_eq!(id, 1);
        commit(&mut s, recs);
        let (again, recs) = s.register("a-value", &sub(V1)).unwrap();
        assert_eq!((again, recs.len()), (1, 0));
        let (other, recs) = s.register("b-value", &sub(V1)).unwrap();
        assert_eq!(other, 1);
        commit(&mut s, recs);
        assert_eq!(s.subjects(false), vec!["a-value", "b-value"]);
        assert_eq!(s.version("b-value", &VersionRef::Latest, false).unwrap().version, 1);
    }

    #[test]
    fn backward_transitive_refuses_a_new_required_field() {
        let mut s = Store::default();
        commit(&mut s, vec![Store::set_config(Some("a-value"), Level::BackwardTransitive)]);
        let (_, recs) = s.register("a-value", &sub(V1)).unwrap();
        commit(&mut s, recs);
        let (id2, recs) = s.register("a-value", &sub(V2_OK)).unwrap();
        assert_eq!(id2, 2);
        commit(&mut s, recs);
        let err = s.register("a-value", &sub(V2_BAD)).unwrap_err();
        assert_eq!((err.status, err.error_code), (409, 409));
        assert!(err.message.contains("version 1") && err.message.contains("version 2"), "{}", err.message);
    }

    #[test]
    fn restore_from_the_log_gives_the_same_ids() {
        let mut s = Store::default();
        let mut log = Vec::new();
        for (subject, schema) in [("a-value", V1), ("a-value", V2_OK), ("c-value", V2_OK)] {
            let (_, recs) = s.register(subject, &sub(schema)).unwrap();
            log.extend(recs.clone());
            commit(&mut s, recs);
        }
        let mut restored = Store::default();
        commit(&mut restored, log);
        for subject in ["a-value", "c-value"] {
            assert_eq!(restored.version(subject, &VersionRef::Latest, false), s.version(subject, &VersionRef::Latest, false));
        }
        assert_eq!(restored.schema_by_id(2).unwrap(), s.schema_by_id(2).unwrap());
    }

    #[test]
    fn soft_then_hard_delete() {
        let mut s = Store::default();
        let (_, recs) = s.register("a-value", &sub(V1)).unwrap();
        commit(&mut s, recs);
        assert_eq!(s.delete_subject("a-value", true).unwrap_err().error_code, 40405);
        let (versions, recs) = s.delete_subject("a-value", false).unwrap();
        assert_eq!(versions, vec![1]);
        commit(&mut s, recs);
        assert_eq!(s.versions("a-value", false).unwrap_err().error_code, 40401);
        assert_eq!(s.subjects(true), vec!["a-value"]);
        // The id still resolves after a soft delete (consumers of old data need it).
        assert!(s.schema_by_id(1).is_ok());
        let (_, recs) = s.delete_subject("a-value", true).unwrap();
        commit(&mut s, recs);
        assert!(s.subjects(true).is_empty());
    }

    #[test]
    fn errors_carry_confluent_codes() {
        let s = Store::default();
        assert_eq!(s.schema_by_id(7).unwrap_err().error_code, 40403);
        assert_eq!(s.versions("nope", false).unwrap_err().error_code, 40401);
        assert_eq!(Store::canonical(&sub("{")).unwrap_err().error_code, 42201);
        assert_eq!(VersionRef::parse("0").err().unwrap().error_code, 42202);
    }
}
