//! `topology apply` for access: the principals of `topology/` (a SCRAM user
//! per hub role, per partner and per enterprise with its own Kafka client)
//! and exactly their ACLs on the broker. Bindings that the topology no longer
//! declares are removed, but only for principals this hub manages
//! (`<ns>orelink-*`, `<ns>partner-*`, `<ns>enterprise-*`), so ACLs of anyone
//! else on a shared cluster are never touched.
//!
//! Passwords: made once per user (random, 256 bits) and kept in a users file
//! (mode 0600; on the local stack beside its credentials). They are never
//! printed. On Kubernetes, Strimzi's user operator owns users and passwords
//! instead (`topology render k8s`).

use crate::acl::{AclAdmin, AclError, Binding, bindings};
use crate::config::Secret;
use crate::reference::Reference;
use orelink_domain::access;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessChange {
    CreateUser(String),
    Grant(Binding),
    Revoke(Binding),
}

impl fmt::Display for AccessChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = |b: &Binding| format!("{} {:?} {}{}{}", b.principal, b.op, format!("{:?}", b.kind).to_lowercase(), if b.prefix { " prefix " } else { " " }, b.name);
        match self {
            AccessChange::CreateUser(u) => write!(f, "+ user {u} (SCRAM-SHA-512)"),
            AccessChange::Grant(x) => write!(f, "+ acl {}", b(x)),
            AccessChange::Revoke(x) => write!(f, "- acl {}", b(x)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    Acl(#[from] AclError),
    #[error("{path}: {message}")]
    UsersFile { path: String, message: String },
    /// The broker has no authorizer: there is nothing to apply ACLs to.
    #[error("the broker has no authorizer (security is disabled), so ACLs cannot be applied")]
    NoAuthorizer,
}

/// The users file: user name -> password.
pub fn read_users(path: &Path) -> Result<BTreeMap<String, Secret>, AccessError> {
    let err = |message: String| AccessError::UsersFile { path: path.display().to_string(), message };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let t: toml::Table = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let users = t.get("users").and_then(|u| u.as_table()).cloned().unwrap_or_default();
    users.into_iter().map(|(k, v)| v.as_str().map(|p| (k.clone(), Secret::new(p))).ok_or_else(|| err(format!("users.{k}: expected a string")))).collect()
}

fn write_users(path: &Path, users: &BTreeMap<String, Secret>) -> Result<(), AccessError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| AccessError::UsersFile { path: path.display().to_string(), message: e.to_string() };
    let mut text = String::from("# Written by `orelink topology apply`: SCRAM passwords of the hub's principals. Secret.\n[users]\n");
    for (u, p) in users {
        text.push_str(&format!("{} = {}\n", toml::Value::String(u.clone()), toml::Value::String(p.expose().to_owned())));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn new_password() -> Secret {
    Secret::new(format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()))
}

/// New SCRAM credentials reach the broker's authenticator a moment after the
/// call returns; roles started right after `apply` would see their first
/// logins fail. Waits (up to 15 s) until one of the new users can log in.
fn wait_usable(kafka: &rdkafka::ClientConfig, users: &[(String, Secret)]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let Some((user, pw)) = users.last() else { return };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let mut c = kafka.clone();
        c.set("sasl.username", user).set("sasl.password", pw.expose()).set("log_level", "0");
        let ok = c.create::<BaseConsumer>().is_ok_and(|consumer| consumer.fetch_metadata(None, std::time::Duration::from_secs(2)).is_ok());
        if ok {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    tracing::warn!(%user, "new SCRAM credentials not usable after 15 s");
}

/// Plans, and unless `dry_run` applies, the topology's users and ACLs in `namespace`.
pub fn apply_access(kafka: &rdkafka::ClientConfig, reference: &Reference, namespace: &str, users_file: &Path, dry_run: bool) -> Result<Vec<AccessChange>, AccessError> {
    let admin = AclAdmin::new(kafka)?;
    let principals = access::namespaced(&access::principals(&reference.topology), namespace);
    let want = bindings(&principals);
    let mut have = Vec::new();
    for prefix in [format!("{namespace}orelink-"), format!("{namespace}partner-"), format!("{namespace}enterprise-")] {
        match admin.describe(&prefix) {
            Ok(b) => have.extend(b),
            Err(AclError::Admin { message, .. }) if message.contains("ecurity") && message.contains("disabled") => return Err(AccessError::NoAuthorizer),
            Err(e) => return Err(e.into()),
        }
    }
    have.sort();
    let mut users = read_users(users_file)?;
    let mut changes = Vec::new();
    let mut new_users = Vec::new();
    for p in &principals {
        if !users.contains_key(&p.name) {
            changes.push(AccessChange::CreateUser(p.name.clone()));
            let pw = new_password();
            new_users.push((p.name.clone(), pw.clone()));
            users.insert(p.name.clone(), pw);
        }
    }
    let grant: Vec<Binding> = want.iter().filter(|b| have.binary_search(b).is_err()).cloned().collect();
    let revoke: Vec<Binding> = have.iter().filter(|b| want.binary_search(b).is_err()).cloned().collect();
    changes.extend(grant.iter().cloned().map(AccessChange::Grant));
    changes.extend(revoke.iter().cloned().map(AccessChange::Revoke));
    if !dry_run {
        if !new_users.is_empty() {
            // The file first: a password the broker knows must never be lost.
            write_users(users_file, &users)?;
            admin.upsert_users(&new_users)?;
            wait_usable(kafka, &new_users);
        }
        admin.create(&grant)?;
        admin.delete(&revoke)?;
    }
    Ok(changes)
}
