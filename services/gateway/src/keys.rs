//! Enterprise API keys: each binds a caller to its identity (the enterprise's
//! unified social credit code, its sites, or a carrier) and a rate. The file
//! holds SHA-256 digests only, so it can sit in a ConfigMap-adjacent Secret
//! without being a password list.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// A name for logs and metrics (never the key).
    pub id: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// The enterprise it may publish orders (as buyer) and capacity (as provider) for.
    #[serde(default)]
    pub enterprise: Option<String>,
    /// Sites it may report inventory for.
    #[serde(default)]
    pub sites: Vec<String>,
    /// The carrier id it may report shipments as.
    #[serde(default)]
    pub carrier: Option<String>,
    /// Sustained requests per second, and the burst above it.
    pub rate_per_s: u32,
    pub burst: u32,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(rename = "key")]
    keys: Vec<KeySpec>,
}

pub fn digest(key: &str) -> String {
    orelink_platform::config::sha256_hex(key)
}

/// The keys, looked up by digest, with a token bucket each.
pub struct Keys {
    by_digest: HashMap<String, KeySpec>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Keys {
    /// Parses the keys file; every problem is reported.
    pub fn parse(text: &str) -> Result<Keys, Vec<String>> {
        let file: KeysFile = toml::from_str(text).map_err(|e| vec![e.to_string().trim().to_owned()])?;
        let mut problems = Vec::new();
        let mut by_digest = HashMap::new();
        for (i, k) in file.keys.into_iter().enumerate() {
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!("key[{i}] {}: sha256 must be 64 hex digits", k.id));
            }
            if k.enterprise.is_none() && k.sites.is_empty() && k.carrier.is_none() {
                problems.push(format!("key[{i}] {}: binds no identity (enterprise, sites or carrier)", k.id));
            }
            if k.rate_per_s == 0 || k.burst == 0 {
                problems.push(format!("key[{i}] {}: rate_per_s and burst must be > 0", k.id));
            }
            if by_digest.insert(k.sha256.to_ascii_lowercase(), k.clone()).is_some() {
                problems.push(format!("key[{i}] {}: the same key twice", k.id));
            }
        }
        if problems.is_empty() { Ok(Keys { by_digest, buckets: Mutex::new(HashMap::new()) }) } else { Err(problems) }
    }

    /// The key presented, if known.
    pub fn identify(&self, presented: &str) -> Option<&KeySpec> {
        self.by_digest.get(&digest(presented))
    }

    /// Takes `n` tokens from the key's bucket; `Err(seconds to wait)` when empty.
    /// Per process: replicas each grant the rate.
    pub fn take(&self, key: &KeySpec, n: u32) -> Result<(), f64> {
        let mut b = self.buckets.lock().expect("bucket lock");
        let now = Instant::now();
        let (tokens, at) = b.entry(key.id.clone()).or_insert((key.burst as f64, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * key.rate_per_s as f64).min(key.burst as f64);
        *at = now;
        if *tokens >= n as f64 {
            *tokens -= n as f64;
            Ok(())
        } else {
            Err((n as f64 - *tokens) / key.rate_per_s as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_known_by_digest_and_rate_limited() {
        let text = format!(
            "[[key]]\nid = \"a\"\nsha256 = \"{}\"\nenterprise = \"91451000MA5L0PRV1Y\"\nrate_per_s = 1\nburst = 2\n",
            digest("secret-a")
        );
        let keys = Keys::parse(&text).unwrap();
        let k = keys.identify("secret-a").unwrap().clone();
        assert!(keys.identify("secret-b").is_none());
        assert!(keys.take(&k, 1).is_ok() && keys.take(&k, 1).is_ok());
        assert!(keys.take(&k, 1).is_err(), "the burst is spent");
    }

    #[test]
    fn bad_key_files_report_every_problem() {
        let text = "[[key]]\nid = \"a\"\nsha256 = \"xyz\"\nrate_per_s = 0\nburst = 1\n";
        let p = Keys::parse(text).err().unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
