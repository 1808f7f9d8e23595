//! Configuration: embedded defaults, then a file, then `ORELINK__` environment
//! variables. Unknown keys, wrong types and invalid values are all collected
//! and reported together at start-up.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub security_protocol: String,
    pub sasl_mechanism: String,
    pub username: String,
    pub password: Secret,
    /// Where `topology apply` kept the principals' passwords, for a role
    /// started with the admin's credentials (empty: the local stack's file).
    pub principals_file: String,
    pub client_id: String,
    pub message_timeout_ms: u64,
    /// librdkafka's socket.timeout.ms: how long a request to a broker may go unanswered.
    pub socket_timeout_ms: u64,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// The consumer group protocol: "classic" (static members, the client's
    /// member timeout, `session_timeout_ms`) or "consumer" (KIP-848: the
    /// broker assigns, times dead members out and fences a restarted static
    /// member; so no static ids).
    pub group_protocol: String,
    pub compression: String,
    pub fetch_wait_max_ms: u64,
    pub fetch_min_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    pub url: String,
    pub listen: String,
    pub timeout_ms: u64,
    /// The registry role's check of its callers: "kafka" (basic auth with a
    /// Kafka login of the hub) or "none".
    pub auth: String,
    /// Kafka users who may change the registry (register, delete, configure).
    pub writers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySettings {
    pub dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub metrics_listen: String,
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherSettings {
    pub instance_id: String,
    /// Processor threads, each a member of the group with its own share of
    /// the market topic's partitions.
    pub threads: usize,
    pub batch_max: usize,
    pub batch_wait_ms: u64,
    pub transaction_timeout_ms: u64,
    /// Input events per partition between snapshots of its book; 0: none.
    pub snapshot_every: u64,
    /// How long a repeated event id is ignored, in ms of the market topic's
    /// log-append time (contract: 7 days by default).
    pub dedup_horizon_ms: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSettings {
    pub listen: String,
    /// The operators' bearer tokens, comma-separated, each as the SHA-256
    /// digest (hex) of the token, for a region-wide operator, or
    /// `<digest>@<cluster>+<cluster>` for a cluster's operators, who see
    /// their clusters' data and others' only as the sharing policy redacts
    /// it. The tokens themselves are in no file and no environment of the hub.
    pub operator_token_digests: String,
    pub batch_max: usize,
    /// How long the view keeps a closed order (its status, allocations and
    /// shares) or a closed capacity after it closed, in ms of wall-clock
    /// time: its numbers stay in the totals, but the entity itself leaves
    /// Redis, so the view grows with what is open, not with history.
    pub closed_retention_ms: i64,
    /// Hours of event time between two refits of the demand outlook (1 to 168).
    pub outlook_refit_hours: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub listen: String,
    /// TOML file of enterprise API keys (digests and the identities they bind).
    pub keys_file: String,
    pub batch_max: usize,
    pub max_body_bytes: usize,
    /// How long an Idempotency-Key (or event_id) is remembered, in seconds.
    pub idempotency_ttl_s: u64,
    /// Open subscription streams (SSE) at once; more get 503.
    pub max_streams: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// TOML file of webhooks: [[webhook]] partner, url, format, secret_env.
    pub file: String,
    /// One delivery attempt's time limit, in ms.
    pub timeout_ms: u64,
    /// Attempts of one delivery before it is parked.
    pub max_attempts: u32,
    /// Wait before the second attempt, in ms; it doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSettings {
    pub listen: String,
    /// Directory of the durable local queue.
    pub dir: String,
    /// The site this relay serves (topology/clusters.toml).
    pub site: String,
    pub max_queue_bytes: u64,
    pub batch_max: usize,
    /// Folder watched for CSV exports; empty: none.
    pub watch_dir: String,
    /// SHA-256 (hex) of the site's key, which every request to the relay's
    /// API presents (`Authorization: Bearer`).
    pub key_sha256: String,
}

/// One operator token of `view.operator_token_digests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorToken {
    /// SHA-256 of the token, lower-case hex.
    pub digest: String,
    /// The clusters it sees; `None`: every cluster (a region-wide operator).
    pub clusters: Option<Vec<String>>,
}

impl ViewSettings {
    pub fn tokens(&self) -> Vec<OperatorToken> {
        self.operator_token_digests
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t.split_once('@') {
                Some((digest, clusters)) => OperatorToken {
                    digest: digest.trim().to_owned(),
                    clusters: Some(clusters.split('+').map(|c| c.trim().to_owned()).collect()),
                },
                None => OperatorToken { digest: t.to_owned(), clusters: None },
            })
            .collect()
    }
}

/// SHA-256 of `secret`, lower-case hex: how keys and tokens are kept (their digests, never themselves).
pub fn sha256_hex(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Config {
    /// The login the registry's clients send: this process's Kafka user, when Kafka has logins.
    pub fn registry_login(&self) -> Option<(String, String)> {
        self.kafka.security_protocol.starts_with("sasl").then(|| (self.kafka.username.clone(), self.kafka.password.expose().to_owned()))
    }
}

impl MatcherSettings {
    pub fn instance(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "0".into())
    }
}

/// A string that never shows in Debug or Display output.
#[derive(Clone, Deserialize, Default, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub redis: RedisSettings,
    pub topology: TopologySettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub consumer: ConsumerSettings,
    pub matcher: MatcherSettings,
    pub view: ViewSettings,
    pub gateway: GatewaySettings,
    pub edge: EdgeSettings,
    pub webhooks: WebhookSettings,
}

/// Every problem found, one line each.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where the settings come from; `load` reads the process's own.
/// Layers, each over the one before: embedded defaults, the local stack's
/// client credentials (if `orelink stack up` wrote them), the file, env vars.
#[derive(Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub stack: Option<PathBuf>,
}

impl Sources {
    pub fn from_process(file: Option<PathBuf>) -> Sources {
        let file = file.or_else(|| std::env::var_os("ORELINK_CONFIG").map(PathBuf::from));
        Sources { file, env: std::env::vars().filter(|(k, _)| k.starts_with("ORELINK__")).collect(), stack: Some(stack_credentials_path()) }
    }
}

/// Where `orelink stack up` keeps the local broker's client credentials
/// (`$ORELINK_HOME/stack/credentials.toml`, else under ~/.local/share/orelink).
/// A config layer when it exists, so local commands reach the secured local
/// broker without a password on their command line; absent elsewhere.
pub fn stack_credentials_path() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    std::env::var_os("ORELINK_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".local/share/orelink")).join("stack/credentials.toml")
}

impl Config {
    pub fn load(src: &Sources) -> Result<Config, ConfigErrors> {
        let defaults: toml::Table = toml::from_str(DEFAULTS).expect("embedded defaults parse");
        let mut merged = defaults.clone();
        let mut errors = Vec::new();

        if let Some(path) = src.stack.as_ref().filter(|p| p.exists()) {
            match read_file(path) {
                Ok(table) => merge(&defaults, &mut merged, table, &mut Vec::new(), &format!("{}", path.display()), &mut errors),
                Err(e) => errors.push(e),
            }
        }
        if let Some(path) = &src.file {
            match read_file(path) {
                Ok(table) => merge(&defaults, &mut merged, table, &mut Vec::new(), &format!("{}", path.display()), &mut errors),
                Err(e) => errors.push(e),
            }
        }
        for (name, raw) in &src.env {
            let Some(rest) = name.strip_prefix("ORELINK__") else { continue };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            match lookup(&defaults, &path) {
                None => errors.push(format!("{name}: unknown setting {}", path.join("."))),
                Some(default) => match typed(default, raw) {
                    Ok(v) => set(&mut merged, &path, v),
                    Err(e) => errors.push(format!("{name}: {e}")),
                },
            }
        }

        fn section<T: for<'de> Deserialize<'de>>(merged: &toml::Table, name: &str, errors: &mut Vec<String>) -> Option<T> {
            let value = merged.get(name).cloned().unwrap_or(toml::Value::Table(Default::default()));
            T::deserialize(value).map_err(|e| errors.push(format!("[{name}]: {}", e.to_string().trim()))).ok()
        }
        let namespace = merged.get("namespace").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let kafka = section::<KafkaSettings>(&merged, "kafka", &mut errors);
        let registry = section::<RegistrySettings>(&merged, "registry", &mut errors);
        let redis = section::<RedisSettings>(&merged, "redis", &mut errors);
        let topology = section::<TopologySettings>(&merged, "topology", &mut errors);
        let log = section::<LogSettings>(&merged, "log", &mut errors);
        let telemetry = section::<TelemetrySettings>(&merged, "telemetry", &mut errors);
        let consumer = section::<ConsumerSettings>(&merged, "consumer", &mut errors);
        let matcher = section::<MatcherSettings>(&merged, "matcher", &mut errors);
        let view = section::<ViewSettings>(&merged, "view", &mut errors);
        let gateway = section::<GatewaySettings>(&merged, "gateway", &mut errors);
        let edge = section::<EdgeSettings>(&merged, "edge", &mut errors);
        let webhooks = section::<WebhookSettings>(&merged, "webhooks", &mut errors);
        let (Some(kafka), Some(registry), Some(redis), Some(topology), Some(log), Some(telemetry), Some(consumer), Some(matcher), Some(view), Some(gateway), Some(edge), Some(webhooks)) =
            (kafka, registry, redis, topology, log, telemetry, consumer, matcher, view, gateway, edge, webhooks)
        else {
            return Err(ConfigErrors(errors));
        };
        let cfg = Config { namespace, kafka, registry, redis, topology, log, telemetry, consumer, matcher, view, gateway, edge, webhooks };
        errors.extend(cfg.validate());
        if errors.is_empty() { Ok(cfg) } else { Err(ConfigErrors(errors)) }
    }

    /// Semantic checks, each problem reported.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let ns_ok = self.namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ns_ok || self.namespace.len() > 100 {
            p.push(format!("namespace {:?}: only letters, digits, '.', '_' and '-', at most 100", self.namespace));
        }
        if self.kafka.brokers.split(',').any(|b| b.trim().rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none()) {
            p.push(format!("kafka.brokers {:?}: expected host:port[,host:port...]", self.kafka.brokers));
        }
        let sasl = match self.kafka.security_protocol.as_str() {
            "plaintext" | "ssl" => false,
            "sasl_plaintext" | "sasl_ssl" => true,
            other => {
                p.push(format!("kafka.security_protocol {other:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl"));
                false
            }
        };
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.kafka.compression.as_str()) {
            p.push(format!("kafka.compression {:?}: expected none, gzip, snappy, lz4 or zstd", self.kafka.compression));
        }
        if sasl && (self.kafka.username.is_empty() || self.kafka.password.is_empty()) {
            p.push("kafka.username and kafka.password are required with a SASL security_protocol".into());
        }
        if self.kafka.fetch_min_bytes == 0 || self.kafka.fetch_wait_max_ms == 0 || self.kafka.fetch_wait_max_ms > 1000 {
            p.push(format!(
                "kafka.fetch_min_bytes {} and kafka.fetch_wait_max_ms {}: expected at least 1 byte and 1 to 1000 ms",
                self.kafka.fetch_min_bytes, self.kafka.fetch_wait_max_ms
            ));
        }
        if self.kafka.heartbeat_interval_ms == 0 || self.kafka.heartbeat_interval_ms * 3 > self.kafka.session_timeout_ms {
            p.push(format!(
                "kafka.heartbeat_interval_ms {}: expected between 1 and a third of kafka.session_timeout_ms ({})",
                self.kafka.heartbeat_interval_ms, self.kafka.session_timeout_ms
            ));
        }
        if !(1000..=300_000).contains(&self.kafka.socket_timeout_ms) {
            p.push(format!("kafka.socket_timeout_ms {}: expected 1000 to 300000", self.kafka.socket_timeout_ms));
        }
        if !["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"].contains(&self.kafka.sasl_mechanism.as_str()) {
            p.push(format!("kafka.sasl_mechanism {:?}: expected SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN", self.kafka.sasl_mechanism));
        }
        if !(self.registry.url.starts_with("http://") || self.registry.url.starts_with("https://")) {
            p.push(format!("registry.url {:?}: expected an http:// or https:// URL", self.registry.url));
        }
        if self.registry.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("registry.listen {:?}: expected ip:port", self.registry.listen));
        }
        if !self.redis.url.starts_with("redis://") && !self.redis.url.starts_with("rediss://") {
            p.push(format!("redis.url {:?}: expected a redis:// URL", self.redis.url));
        }
        for t in self.view.tokens() {
            if !is_sha256_hex(&t.digest) {
                p.push(format!("view.operator_token_digests: {:?} is not a SHA-256 digest (64 lower-case hex digits; `sha256sum` of a token gives it)", t.digest));
            }
            if t.clusters.as_ref().is_some_and(|c| c.iter().any(String::is_empty)) {
                p.push(format!("view.operator_token_digests: the token {}… names an empty cluster (write <digest>@<cluster>+<cluster>)", &t.digest[..t.digest.len().min(8)]));
            }
        }
        if !["classic", "consumer"].contains(&self.kafka.group_protocol.as_str()) {
            p.push(format!("kafka.group_protocol {:?}: expected \"classic\" or \"consumer\"", self.kafka.group_protocol));
        }
        if !["kafka", "none"].contains(&self.registry.auth.as_str()) {
            p.push(format!("registry.auth {:?}: expected \"kafka\" or \"none\"", self.registry.auth));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            p.push(format!("log.format {:?}: expected text or json", self.log.format));
        }
        if !self.telemetry.metrics_listen.is_empty() && self.telemetry.metrics_listen.parse::<SocketAddr>().is_err() {
            p.push(format!("telemetry.metrics_listen {:?}: expected ip:port, or empty for none", self.telemetry.metrics_listen));
        }
        let otlp = &self.telemetry.otlp_endpoint;
        if !otlp.is_empty() && !otlp.starts_with("http://") && !otlp.starts_with("https://") {
            p.push(format!("telemetry.otlp_endpoint {otlp:?}: expected an http:// or https:// URL (an OTLP/HTTP receiver, e.g. http://127.0.0.1:4318), or empty for none"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(format!("log.level {:?}: not a tracing filter", self.log.level));
        }
        if !self.topology.dir.is_empty() && !Path::new(&self.topology.dir).is_dir() {
            p.push(format!("topology.dir {:?}: not a directory", self.topology.dir));
        }
        if self.consumer.retry_backoff_ms == 0 || self.consumer.retry_backoff_max_ms < self.consumer.retry_backoff_ms {
            p.push("consumer.retry_backoff_ms must be > 0 and at most consumer.retry_backoff_max_ms".into());
        }
        if self.matcher.batch_max == 0 || self.matcher.transaction_timeout_ms < 1_000 {
            p.push("matcher.batch_max must be > 0 and matcher.transaction_timeout_ms at least 1000".into());
        }
        if !(1..=64).contains(&self.matcher.threads) {
            p.push(format!("matcher.threads is {}: from 1 to 64 (more than the market topic's partitions leaves threads idle)", self.matcher.threads));
        }
        if self.matcher.dedup_horizon_ms < 60_000 {
            p.push(format!("matcher.dedup_horizon_ms is {}: at least 60000 (a minute of log time)", self.matcher.dedup_horizon_ms));
        }
        if self.view.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("view.listen {:?}: expected ip:port", self.view.listen));
        }
        if self.view.batch_max == 0 {
            p.push("view.batch_max must be > 0".into());
        }
        if !(1..=168).contains(&self.view.outlook_refit_hours) {
            p.push(format!("view.outlook_refit_hours is {}: expected 1 to 168 (a week)", self.view.outlook_refit_hours));
        }
        if self.view.closed_retention_ms < 60_000 {
            p.push(format!("view.closed_retention_ms is {}: at least 60000 (a minute)", self.view.closed_retention_ms));
        }
        if self.edge.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("edge.listen {:?}: expected ip:port", self.edge.listen));
        }
        if self.edge.max_queue_bytes < 1024 || self.edge.batch_max == 0 {
            p.push("edge.max_queue_bytes must be at least 1024 and edge.batch_max > 0".into());
        }
        if self.webhooks.max_attempts == 0 || self.webhooks.retry_initial_ms == 0 || self.webhooks.retry_max_ms < self.webhooks.retry_initial_ms {
            p.push("webhooks.max_attempts and webhooks.retry_initial_ms must be > 0, and webhooks.retry_max_ms at least webhooks.retry_initial_ms".into());
        }
        if self.webhooks.timeout_ms == 0 {
            p.push("webhooks.timeout_ms must be > 0".into());
        }
        if self.gateway.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("gateway.listen {:?}: expected ip:port", self.gateway.listen));
        }
        if self.gateway.batch_max == 0 || self.gateway.max_body_bytes < 1024 || self.gateway.idempotency_ttl_s == 0 || self.gateway.max_streams == 0 {
            p.push("gateway.batch_max, gateway.idempotency_ttl_s and gateway.max_streams must be > 0, gateway.max_body_bytes at least 1024".into());
        }
        p
    }
}

fn read_file(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim()))
}

/// Merges `src` into `dst`, reporting every key the defaults do not have.
fn merge(defaults: &toml::Table, dst: &mut toml::Table, src: toml::Table, path: &mut Vec<String>, origin: &str, errors: &mut Vec<String>) {
    for (k, v) in src {
        path.push(k.clone());
        match (defaults.get(&k), v) {
            (None, _) => errors.push(format!("{origin}: unknown setting {}", path.join("."))),
            (Some(toml::Value::Table(d)), toml::Value::Table(t)) => {
                let slot = dst.entry(k).or_insert_with(|| toml::Value::Table(Default::default()));
                if let toml::Value::Table(slot) = slot {
                    merge(d, slot, t, path, origin, errors);
                }
            }
            (Some(toml::Value::Table(_)), _) => errors.push(format!("{origin}: {} must be a table", path.join("."))),
            (Some(_), v) => {
                dst.insert(k, v);
            }
        }
        path.pop();
    }
}

fn lookup<'a>(t: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = t.get(first)?;
    if rest.is_empty() {
        return if v.is_table() { None } else { Some(v) };
    }
    lookup(v.as_table()?, rest)
}

fn set(t: &mut toml::Table, path: &[String], v: toml::Value) {
    let (first, rest) = path.split_first().expect("non-empty path");
    if rest.is_empty() {
        t.insert(first.clone(), v);
    } else if let Some(toml::Value::Table(inner)) = t.get_mut(first) {
        set(inner, rest, v);
    }
}

/// Reads an environment value as the type its default has.
fn typed(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match default {
        toml::Value::Integer(_) => raw.trim().parse::<i64>().map(toml::Value::Integer).map_err(|_| format!("{raw:?} is not a whole number")),
        toml::Value::Boolean(_) => raw.trim().parse::<bool>().map(toml::Value::Boolean).map_err(|_| format!("{raw:?} is not true or false")),
        toml::Value::Float(_) => raw.trim().parse::<f64>().map(toml::Value::Float).map_err(|_| format!("{raw:?} is not a number")),
        _ => Ok(toml::Value::String(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_load_clean() {
        let c = Config::load(&Sources::default()).unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.namespace, "");
    }

    #[test]
    fn file_then_env_override() {
        // Removed when the test ends, pass or fail.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let f = dir.join("c.toml");
        std::fs::write(&f, "[kafka]\nbrokers = \"k1:9092\"\nclient_id = \"from-file\"\n").unwrap();
        let c = Config::load(&Sources { file: Some(f), env: env(&[("ORELINK__KAFKA__CLIENT_ID", "from-env"), ("ORELINK__REGISTRY__TIMEOUT_MS", "99")]), stack: None }).unwrap();
        assert_eq!(c.kafka.brokers, "k1:9092");
        assert_eq!(c.kafka.client_id, "from-env");
        assert_eq!(c.registry.timeout_ms, 99);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        // Removed when the test ends, pass or fail.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let f = dir.join("c.toml");
        std::fs::write(&f, "[kafka]\nbrokerz = \"x\"\nsecurity_protocol = \"sasl_ssl\"\nheartbeat_interval_ms = 60000\nfetch_wait_max_ms = 0\n[redis]\nurl = \"http://x\"\n[nonsense]\na = 1\n").unwrap();
        let errs = Config::load(&Sources {
            file: Some(f),
            env: env(&[("ORELINK__LOG__FORMAT", "xml"), ("ORELINK__CONSUMER__RETRY_BACKOFF_MS", "soon"), ("ORELINK__NOPE", "1"), ("ORELINK__KAFKA__COMPRESSION", "brotli"), ("ORELINK__VIEW__CLOSED_RETENTION_MS", "5")]),
            stack: None,
        })
        .unwrap_err();
        let text = errs.to_string();
        for needle in [
            "unknown setting kafka.brokerz",
            "unknown setting nonsense",
            "ORELINK__CONSUMER__RETRY_BACKOFF_MS: \"soon\" is not a whole number",
            "ORELINK__NOPE: unknown setting nope",
            "username and kafka.password are required",
            "redis.url",
            "log.format",
            "kafka.heartbeat_interval_ms 60000: expected between 1 and a third of kafka.session_timeout_ms (10000)",
            "kafka.compression \"brotli\": expected none, gzip, snappy, lz4 or zstd",
            "kafka.fetch_min_bytes 1 and kafka.fetch_wait_max_ms 0: expected at least 1 byte and 1 to 1000 ms",
            "view.closed_retention_ms is 5: at least 60000 (a minute)",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(errs.0.len(), 11, "{text}");
    }

    #[test]
    fn the_stack_credentials_sit_between_defaults_and_the_file() {
        // Removed when the test ends, pass or fail.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let stack = dir.join("credentials.toml");
        std::fs::write(&stack, "[kafka]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"admin\"\npassword = \"local-secret\"\n").unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[kafka]\nusername = \"from-file\"\n").unwrap();
        let c = Config::load(&Sources { file: Some(file), env: vec![], stack: Some(stack.clone()) }).unwrap();
        assert_eq!((c.kafka.security_protocol.as_str(), c.kafka.username.as_str(), c.kafka.password.expose()), ("sasl_plaintext", "from-file", "local-secret"));
        // Absent: nothing changes.
        let c = Config::load(&Sources { stack: Some(dir.join("missing.toml")), ..Sources::default() }).unwrap();
        assert_eq!(c.kafka.security_protocol, "plaintext");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::load(&Sources { env: env(&[("ORELINK__KAFKA__PASSWORD", "hunter2")]), ..Sources::default() }).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.kafka.password.expose(), "hunter2");
    }
}
