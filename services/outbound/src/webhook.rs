//! The `webhooks` role: each configured partner's shipments, POSTed to its
//! URL one at a time in partition order, signed with HMAC-SHA256.
//!
//! Request: the body is the event (contract JSON or EPCIS), with headers
//! `X-Orelink-Delivery` (`<partner>/<partition>/<offset>`, stable across
//! retries), `X-Orelink-Timestamp` (ms since the epoch) and
//! `X-Orelink-Signature: sha256=<hex HMAC-SHA256(key, "<delivery>.<timestamp>.<body>")>`:
//! the delivery id is signed too, so a receiver that drops repeats by it
//! cannot be fooled into dropping a new event. A receiver checks the
//! signature (`verify`) and refuses a timestamp outside its tolerance window
//! (`fresh`, five minutes is usual), which stops replays of old requests.
//! Anything but 2xx is tried again after `webhooks.retry_initial_ms`, doubling
//! up to `retry_max_ms`. After `webhooks.max_attempts` the delivery is parked:
//! the event, with its delivery id, attempts and last error in headers, goes
//! to the partner's `orelink.webhooks-parked.<id>.v1`, and the stream moves on,
//! so one dead receiver holds up its own deliveries for an hour at most, never
//! for good. `redrive` sends the parked deliveries again, in order. The offset
//! is stored only after a 2xx or a parking, so a receiver sees every event
//! (or it is parked), and sees it again only if the role dies between the
//! answer and the commit.
//!
//! Where requests may go: never to loopback, private, link-local (the cloud
//! metadata address among them), shared or unspecified addresses, checked on
//! the URL's literal address at start-up and on every address its host name
//! resolves to at each connection, unless the webhook says `allow_private =
//! true` (a receiver on the operator's own network); redirects are not
//! followed (a 3xx is a failed delivery).

use crate::Format;
use hmac::{Hmac, Mac};
use orelink_codec::Record;
use orelink_domain::topology::topics;
use orelink_platform::config::Secret;
use orelink_platform::consume::{Backoff, ConsumeLoop, Done, HandleError, Handler, Inbound, LoopStats, loop_consumer};
use orelink_platform::dlq::{DeadLetters, now_millis};
use orelink_platform::{Config, Reference};
use orelink_platform::trace::TraceContext;
use rdkafka::message::{Header, Headers};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{partner}: {error}")]
    Loop { partner: String, error: String },
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSpec {
    partner: String,
    url: String,
    #[serde(default = "json_format")]
    format: Format,
    /// The environment variable holding the HMAC key.
    secret_env: String,
    /// May it reach loopback and private addresses (a receiver on the operator's own network)?
    #[serde(default)]
    allow_private: bool,
}

fn json_format() -> Format {
    Format::Json
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksFile {
    #[serde(rename = "webhook", default)]
    webhooks: Vec<WebhookSpec>,
}

/// A checked webhook: its partner is in the topology, its key is set.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub partner: String,
    pub url: reqwest::Url,
    pub format: Format,
    pub secret: Secret,
    pub allow_private: bool,
}

/// Addresses a webhook may not reach unless allowed: loopback, private,
/// link-local (169.254.169.254, the cloud metadata service, among them),
/// shared (100.64.0.0/10), unspecified, broadcast, and IPv6 unique-local and
/// link-local (an IPv4-mapped address counts as its IPv4 address).
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

/// Resolves a webhook's host and keeps only the addresses it may reach, so
/// a name that points (or is re-pointed) inside is refused at each connection.
struct Guard;

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<std::net::SocketAddr> = all.iter().copied().filter(|a| !is_internal(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to internal addresses ({all:?}); set allow_private for a receiver on your own network").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Parses the webhooks file against the topology; every problem is reported.
/// `env` looks up the secrets (the process environment, in production).
pub fn parse(text: &str, reference: &Reference, env: impl Fn(&str) -> Option<String>) -> Result<Vec<Webhook>, Vec<String>> {
    let file: WebhooksFile = toml::from_str(text).map_err(|e| vec![e.to_string().trim().to_owned()])?;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, w) in file.webhooks.into_iter().enumerate() {
        let at = format!("webhook[{i}] {}", w.partner);
        if !reference.topology.partners.iter().any(|p| p.id.as_str() == w.partner) {
            problems.push(format!("{at}: no such partner in topology/partners.toml"));
        }
        if out.iter().any(|o: &Webhook| o.partner == w.partner) {
            problems.push(format!("{at}: a second webhook for the same partner"));
        }
        let url = match reqwest::Url::parse(&w.url) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                let literal = match u.host() {
                    Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                    _ => None,
                };
                match literal {
                    Some(ip) if is_internal(ip) && !w.allow_private => {
                        problems.push(format!("{at}: url {:?} is an internal address (loopback, private, link-local or metadata); set allow_private = true for a receiver on your own network", w.url));
                        None
                    }
                    _ => Some(u),
                }
            }
            _ => {
                problems.push(format!("{at}: url {:?} is not an http(s) URL", w.url));
                None
            }
        };
        let secret = env(&w.secret_env).filter(|s| s.len() >= 16);
        if secret.is_none() {
            problems.push(format!("{at}: the environment variable {} must hold the HMAC key (at least 16 characters)", w.secret_env));
        }
        if let (Some(url), Some(secret)) = (url, secret) {
            out.push(Webhook { partner: w.partner, url, format: w.format, secret: Secret::new(secret), allow_private: w.allow_private });
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The HMAC of one delivery: over `"<delivery>.<timestamp>.<body>"`.
fn mac(key: &[u8], delivery: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(delivery.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `sha256=<hex>` of HMAC-SHA256(key, "<delivery>.<timestamp>.<body>").
pub fn signature(key: &[u8], delivery: &str, timestamp: &str, body: &[u8]) -> String {
    let tag = mac(key, delivery, timestamp, body).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Checks a signature as a receiver would (constant time).
pub fn verify(key: &[u8], delivery: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else { return false };
    let Some(tag) = (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect::<Option<Vec<u8>>>() else {
        return false;
    };
    mac(key, delivery, timestamp, body).verify_slice(&tag).is_ok()
}

/// Whether a request's timestamp (ms) is within `tolerance` of the
/// receiver's clock `now_ms`: a receiver refuses older (replayed) requests.
pub fn fresh(timestamp: &str, now_ms: i64, tolerance: Duration) -> bool {
    timestamp.parse::<i64>().is_ok_and(|t| now_ms.abs_diff(t) <= tolerance.as_millis() as u64)
}

/// Consumer group of one partner's webhook.
pub fn group(cfg: &Config, partner: &str) -> String {
    format!("{}orelink-webhooks-{partner}", cfg.namespace)
}

/// The headers of a parked delivery.
pub const PARKED_DELIVERY: &str = "x-orelink-delivery";
pub const PARKED_ATTEMPTS: &str = "orelink-attempts";
pub const PARKED_ERROR: &str = "orelink-last-error";

/// One webhook's client: where requests go, and how they are signed.
struct Sender {
    hook: Webhook,
    http: reqwest::Client,
}

impl Sender {
    fn new(hook: Webhook, timeout_ms: u64) -> Result<Sender, WebhookError> {
        // Redirects are not followed: a receiver cannot send the request elsewhere.
        let mut http = reqwest::Client::builder().timeout(Duration::from_millis(timeout_ms)).redirect(reqwest::redirect::Policy::none());
        if !hook.allow_private {
            http = http.dns_resolver(std::sync::Arc::new(Guard));
        }
        let http = http.build().map_err(|e| WebhookError::Config(format!("HTTP client: {e}")))?;
        Ok(Sender { hook, http })
    }

    /// POSTs one shipment, signed; Err says why it was not accepted.
    async fn send(&self, record: &Record, delivery: &str, trace: &TraceContext) -> Result<(), String> {
        // Partner topics hold shipments only (the fanout writes them).
        let (Record::Shipment(_), Some(body)) = (record, crate::render(record, self.hook.format)) else {
            return Err(format!("not a shipment: {record:?}"));
        };
        let body = serde_json::to_vec(&body).expect("JSON values serialise");
        let timestamp = now_millis().0.to_string();
        let sig = signature(self.hook.secret.expose().as_bytes(), delivery, &timestamp, &body);
        let sent = self
            .http
            .post(self.hook.url.clone())
            .header("content-type", if self.hook.format == Format::Epcis { "application/ld+json" } else { "application/json" })
            .header("x-orelink-delivery", delivery)
            .header("x-orelink-timestamp", &timestamp)
            .header("x-orelink-signature", sig)
            .header("traceparent", trace.header_value())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{} answered {}", self.hook.partner, r.status())),
            Err(e) => Err(format!("{} unreachable: {}", self.hook.partner, e.without_url())),
        }
    }
}

struct Pusher {
    sender: Sender,
    max_attempts: u32,
    /// The delivery being retried and its failed attempts so far.
    failing: Option<(String, u32)>,
    producer: FutureProducer,
    parked_topic: String,
}

impl Pusher {
    /// Parks the event: its bytes as they came, with the delivery id, the
    /// attempts and the last error in headers. Ok once Kafka has it.
    async fn park(&self, ev: &Inbound, delivery: &str, attempts: u32, error: &str) -> Result<(), HandleError> {
        let attempts = attempts.to_string();
        let headers = ev
            .trace
            .to_headers()
            .insert(Header { key: PARKED_DELIVERY, value: Some(delivery) })
            .insert(Header { key: PARKED_ATTEMPTS, value: Some(&attempts) })
            .insert(Header { key: PARKED_ERROR, value: Some(error) });
        let mut record = FutureRecord::to(&self.parked_topic).payload(ev.value.as_deref().unwrap_or_default()).headers(headers);
        if let Some(k) = &ev.key {
            record = record.key(k.as_slice());
        }
        self.producer.send(record, Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| HandleError::Retriable(format!("parking {delivery}: {e}")))
    }
}

impl Handler for Pusher {
    type Later = orelink_platform::consume::Pending;

    async fn handle(&mut self, ev: Inbound) -> Result<Done, HandleError> {
        let partner = self.sender.hook.partner.clone();
        let delivery = format!("{partner}/{}/{}", ev.partition, ev.offset);
        let Some(record) = &ev.record else { return Err(HandleError::Fatal("webhooks take decoded events".into())) };
        let error = match self.sender.send(record, &delivery, &ev.trace).await {
            Ok(()) => {
                self.failing = None;
                return Ok(Done::Now);
            }
            Err(e) if !matches!(record, Record::Shipment(_)) => return Err(HandleError::Fatal(format!("{e} on {}", ev.topic))),
            Err(e) => e,
        };
        let attempts = match &self.failing {
            Some((d, n)) if *d == delivery => n + 1,
            _ => 1,
        };
        if attempts < self.max_attempts {
            tracing::warn!(%partner, %delivery, attempts, error, "webhook delivery failed; retrying");
            self.failing = Some((delivery, attempts));
            return Err(HandleError::Retriable(error));
        }
        self.park(&ev, &delivery, attempts, &error).await?;
        tracing::error!(%partner, %delivery, attempts, error, topic = %self.parked_topic, "webhook delivery parked; the stream moves on");
        metrics::counter!("orelink_webhook_deliveries_parked_total", "partner" => partner).increment(1);
        self.failing = None;
        Ok(Done::Now)
    }
}

/// The webhooks of `webhooks.file`, checked, keys from the environment.
pub fn load(cfg: &Config, reference: &Reference) -> Result<Vec<Webhook>, WebhookError> {
    if cfg.webhooks.file.is_empty() {
        return Err(WebhookError::Config("webhooks.file is empty: the role has no webhooks to serve".into()));
    }
    let text = std::fs::read_to_string(&cfg.webhooks.file).map_err(|e| WebhookError::Config(format!("{}: {e}", cfg.webhooks.file)))?;
    parse(&text, reference, |k| std::env::var(k).ok()).map_err(|p| WebhookError::Config(format!("{}: {}", cfg.webhooks.file, p.join("; "))))
}

/// Runs every configured webhook until `cancel`.
pub async fn run(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<Vec<(String, LoopStats)>, WebhookError> {
    let hooks = load(cfg, reference)?;
    run_hooks(cfg, reference, hooks, cancel).await
}

/// Runs the given webhooks until `cancel` (one consume loop each).
pub async fn run_hooks(cfg: &Config, reference: &Reference, hooks: Vec<Webhook>, cancel: CancellationToken) -> Result<Vec<(String, LoopStats)>, WebhookError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| WebhookError::Config(e.to_string()))?;
    let producer: FutureProducer = cfg.kafka.producer_config("webhooks").create()?;
    let mut tasks = Vec::new();
    for hook in hooks {
        let topic = codec.topic(&topics::partner(&hook.partner));
        let parked_topic = codec.topic(&topics::parked(&hook.partner));
        // A static member: a restarted instance takes its partitions back at once.
        let consumer = loop_consumer(&cfg.kafka.member_config("webhooks", &group(cfg, &hook.partner), &cfg.matcher.instance()), &[&topic], None)?;
        let dead = DeadLetters::new(producer.clone(), codec.clone(), "webhooks");
        let backoff = Backoff { initial: Duration::from_millis(cfg.webhooks.retry_initial_ms), max: Duration::from_millis(cfg.webhooks.retry_max_ms) };
        let looped = ConsumeLoop::new(consumer, codec.clone(), dead, backoff);
        let (partner, cancel) = (hook.partner.clone(), cancel.clone());
        let sender = Sender::new(hook, cfg.webhooks.timeout_ms)?;
        tracing::info!(%partner, url = %sender.hook.url.origin().ascii_serialization(), "webhook");
        let mut pusher = Pusher { sender, max_attempts: cfg.webhooks.max_attempts, failing: None, producer: producer.clone(), parked_topic };
        tasks.push(tokio::spawn(async move { (partner, looped.run(&mut pusher, cancel).await) }));
    }
    let mut stats = Vec::new();
    let mut failed = None;
    for t in tasks {
        let (partner, r) = t.await.expect("a webhook task does not panic");
        match r {
            Ok(s) => stats.push((partner, s)),
            Err(e) => {
                cancel.cancel();
                failed.get_or_insert(WebhookError::Loop { partner, error: e.to_string() });
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// What a redrive did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    /// Parked deliveries accepted this time.
    pub sent: u64,
    /// Parked deliveries still waiting.
    pub left: u64,
    /// The delivery the receiver refused, and why, if one was.
    pub stopped_at: Option<String>,
}

/// Sends the webhook's parked deliveries again, in order, with their own
/// delivery ids (a receiver that saw one before drops it): each one accepted
/// is committed, so the next redrive starts after it; the first refused stops
/// the redrive, and it and those after it stay parked.
pub async fn redrive(cfg: &Config, reference: &Reference, hook: Webhook) -> Result<Redriven, WebhookError> {
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| WebhookError::Config(e.to_string()))?;
    let topic = codec.topic(&topics::parked(&hook.partner));
    let consumer: StreamConsumer = cfg
        .kafka
        .reader_config("webhooks-redrive", &format!("{}orelink-webhooks-redrive-{}", cfg.namespace, hook.partner))
        .set("auto.offset.reset", "earliest")
        .create()?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(&topic), timeout)?;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        ends.insert(p.id(), consumer.fetch_watermarks(&topic, p.id(), timeout)?.1);
        tpl.add_partition_offset(&topic, p.id(), Offset::Stored)?;
    }
    consumer.assign(&tpl)?;
    // Where each partition stands: its committed offset, or its start.
    let committed = consumer.committed(timeout)?;
    let mut at: BTreeMap<i32, i64> = BTreeMap::new();
    for &p in ends.keys() {
        let low = consumer.fetch_watermarks(&topic, p, timeout)?.0;
        let c = committed.find_partition(&topic, p).and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0).unwrap_or(low);
        at.insert(p, c.max(low));
    }
    let sender = Sender::new(hook, cfg.webhooks.timeout_ms)?;
    let mut out = Redriven::default();
    while at.iter().any(|(p, o)| *o < ends[p]) {
        let m = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => return Err(WebhookError::Config(format!("{topic}: no parked delivery arrived in 30 s though the topic has more")))
        };
        let (p, o) = (m.partition(), m.offset());
        if o < at[&p] || o >= ends[&p] {
            continue;
        }
        let delivery = m.headers().and_then(|h| h.iter().find(|h| h.key == PARKED_DELIVERY)).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_else(|| format!("{}/parked/{p}/{o}", sender.hook.partner));
        let record = match codec.decode(&topic, m.payload()).await {
            Ok(r) => r,
            Err(e) => return Err(WebhookError::Config(format!("{topic} offset {o}: {e}"))),
        };
        let trace = TraceContext::from_headers(m.headers()).map(|t| t.child()).unwrap_or_else(TraceContext::root);
        match sender.send(&record, &delivery, &trace).await {
            Ok(()) => {
                consumer.commit_message(&m, CommitMode::Sync)?;
                at.insert(p, o + 1);
                out.sent += 1;
            }
            Err(e) => {
                out.stopped_at = Some(format!("{delivery}: {e}"));
                break;
            }
        }
    }
    out.left = at.iter().map(|(p, o)| (ends[p] - o).max(0) as u64).sum();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = b"0123456789abcdef-key";
        let d = "beibu/0/42";
        let s = signature(key, d, "1700000000000", b"{\"a\":1}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert!(verify(key, d, "1700000000000", b"{\"a\":1}", &s));
        assert!(!verify(key, "beibu/0/43", "1700000000000", b"{\"a\":1}", &s), "the delivery id is signed");
        assert!(!verify(key, d, "1700000000001", b"{\"a\":1}", &s));
        assert!(!verify(key, d, "1700000000000", b"{\"a\":2}", &s));
        assert!(!verify(b"another-key-0123456", d, "1700000000000", b"{\"a\":1}", &s));
        assert!(!verify(key, d, "1700000000000", b"{\"a\":1}", "sha256=zz"));
    }

    #[test]
    fn a_stale_timestamp_is_not_fresh() {
        let five = Duration::from_secs(300);
        assert!(fresh("1700000000000", 1_700_000_000_000 + 299_000, five));
        assert!(!fresh("1700000000000", 1_700_000_000_000 + 301_000, five));
        assert!(!fresh("1700000000000", 1_700_000_000_000 - 301_000, five), "nor one from the future");
        assert!(!fresh("soon", 1_700_000_000_000, five));
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1"] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["8.8.8.8", "203.0.113.7", "100.128.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_webhook_to_an_internal_address_is_refused_unless_allowed() {
        let reference = Reference::embedded();
        let partner = reference.topology.partners[0].id.to_string();
        let key = |_: &str| Some("0123456789abcdef-key".to_owned());
        for url in ["http://127.0.0.1:9000/hook", "http://169.254.169.254/latest", "http://[::1]/hook", "http://10.0.0.8/hook"] {
            let text = format!("[[webhook]]\npartner = \"{partner}\"\nurl = \"{url}\"\nsecret_env = \"K\"\n");
            let problems = parse(&text, &reference, key).unwrap_err();
            assert!(problems[0].contains("internal address"), "{url}: {problems:?}");
            let allowed = format!("{text}allow_private = true\n");
            assert!(parse(&allowed, &reference, key).is_ok(), "{url} allowed");
        }
        let public = format!("[[webhook]]\npartner = \"{partner}\"\nurl = \"https://hooks.example.cn/orelink\"\nsecret_env = \"K\"\n");
        assert!(parse(&public, &reference, key).is_ok());
    }
}
