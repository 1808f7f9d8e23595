//! Support for the integration tests: they run against the real local stack
//! (`orelink stack up`, or `tests/run` which starts it), each test in a
//! namespace of its own so topics, subjects and groups never collide. Its
//! roles run as their own principals (`env.apply()` makes them, with the
//! topology's ACLs), never as the stack's superuser.

pub mod view;

use orelink_platform::config::{Config, Sources};
use orelink_platform::registry_client::RegistryClient;
use orelink_platform::{Reference, apply};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::PathBuf;
use std::time::Duration;

/// A test's own slice of the stack. `cfg` is the stack's admin (for what
/// the test itself reads and writes); `role_config` gives a role's own.
#[derive(Clone)]
pub struct TestEnv {
    pub ns: String,
    pub cfg: Config,
    pub reference: Reference,
    /// Holds the namespace's principals file (`principals_file`).
    dir: std::sync::Arc<tempfile::TempDir>,
}

/// The repository root (for schemas/ and tests/interop/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn brokers() -> String {
    std::env::var("ORELINK__KAFKA__BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn registry_url() -> String {
    std::env::var("ORELINK__REGISTRY__URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

/// A fresh namespace like `t-1a2b3c4d.`.
pub fn unique_ns() -> String {
    format!("t-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl TestEnv {
    /// Config for a new namespace; fails loudly when the stack is not up.
    pub async fn new() -> TestEnv {
        Self::with(Some((brokers(), registry_url())), orelink_platform::config::stack_credentials_path()).await
    }

    /// A namespace on another stack (`orelink stack up` with its own
    /// `ORELINK_HOME`): its endpoints and admin login from its `credentials`.
    pub async fn on_stack(credentials: PathBuf) -> TestEnv {
        Self::with(None, credentials).await
    }

    async fn with(endpoints: Option<(String, String)>, credentials: PathBuf) -> TestEnv {
        let ns = unique_ns();
        let mut env = vec![
            ("ORELINK__NAMESPACE".to_string(), ns.clone()),
            // Kafka's minimum: crashed test members give up their partitions quickly.
            ("ORELINK__KAFKA__SESSION_TIMEOUT_MS".to_string(), "6000".to_string()),
        ];
        if let Some((brokers, registry)) = endpoints {
            env.push(("ORELINK__KAFKA__BROKERS".to_string(), brokers));
            env.push(("ORELINK__REGISTRY__URL".to_string(), registry));
        }
        let cfg = Config::load(&Sources { file: None, env, stack: Some(credentials) }).expect("test config");
        let env = TestEnv { ns, cfg, reference: Reference::embedded(), dir: std::sync::Arc::new(tempfile::tempdir().expect("a temporary directory")) };
        env.require_stack().await;
        env
    }

    async fn require_stack(&self) {
        let consumer: BaseConsumer = self.client("probe").set("log_level", "2").create().expect("client");
        let md = tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(10))).await.unwrap();
        assert!(
            md.is_ok_and(|m| !m.brokers().is_empty()),
            "Kafka is not reachable at {}: start the stack with `orelink stack up` (tests/run does it)",
            self.cfg.kafka.brokers
        );
        let ok = reqwest::get(format!("{}/", self.cfg.registry.url)).await.is_ok_and(|r| r.status().is_success());
        assert!(ok, "the schema registry is not reachable at {}: start the stack with `orelink stack up`", self.cfg.registry.url);
    }

    pub fn client(&self, role: &str) -> ClientConfig {
        self.cfg.kafka.client_config(role)
    }

    pub fn topic(&self, contract: &str) -> String {
        format!("{}{contract}", self.ns)
    }

    pub fn registry(&self) -> RegistryClient {
        RegistryClient::from_config(&self.cfg).unwrap()
    }

    /// Creates this namespace's topics and subjects.
    /// `GET <registry><path>` as this test's Kafka user, the JSON it answers.
    pub async fn registry_get(&self, path: &str) -> serde_json::Value {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.cfg.registry.url));
        if let Some((user, password)) = self.cfg.registry_login() {
            req = req.basic_auth(user, Some(password));
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    /// Creates this namespace's topics, subjects, principals and ACLs.
    pub async fn apply(&self) -> apply::Applied {
        let applied = self.apply_topics().await;
        let (admin, reference, ns, file) = (self.client("admin"), self.reference.clone(), self.ns.clone(), self.principals_file());
        tokio::task::spawn_blocking(move || orelink_platform::access_apply::apply_access(&admin, &reference, &ns, &file, false).expect("access apply")).await.unwrap();
        applied
    }

    /// Creates this namespace's topics and subjects only.
    pub async fn apply_topics(&self) -> apply::Applied {
        apply::apply(&self.client("admin"), &self.registry(), &self.reference, &self.ns, false).await.expect("topology apply")
    }

    /// Where `apply` keeps this namespace's principals' passwords.
    pub fn principals_file(&self) -> PathBuf {
        self.dir.path().join("principals.toml")
    }

    /// The admin's config with `role`'s own credentials (`apply` first).
    pub fn as_role(&self, role: &str) -> Config {
        let mut cfg = self.cfg.clone();
        let user = format!("{}orelink-{role}", self.ns);
        let users = orelink_platform::access_apply::read_users(&self.principals_file()).expect("the principals file");
        cfg.kafka.password = users.get(&user).unwrap_or_else(|| panic!("no principal {user}: call env.apply() first")).clone();
        cfg.kafka.username = user;
        cfg
    }

    pub fn producer(&self) -> FutureProducer {
        self.cfg.kafka.producer_config("test").set("linger.ms", "0").create().expect("producer")
    }

    pub async fn produce(&self, topic: &str, key: &str, value: &[u8]) {
        self.producer()
            .send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    /// A read_committed consumer of `topic` from the beginning, in its own group.
    pub fn consumer(&self, topic: &str) -> BaseConsumer {
        let c: BaseConsumer = self
            .client("test")
            .set("group.id", format!("{}reader-{}", self.ns, uuid::Uuid::new_v4().simple()))
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        c
    }
}

/// Reads `n` messages from a consumer as (key, value) pairs, within `timeout`.
pub async fn read_n(consumer: BaseConsumer, n: usize, timeout: Duration) -> Vec<(Option<Vec<u8>>, Option<Vec<u8>>)> {
    use rdkafka::Message;
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
            }
        }
        out
    })
    .await
    .unwrap()
}

/// Runs the independent Python client (tests/interop/interop.py); returns its JSON lines.
pub fn python(args: &[&str]) -> Vec<serde_json::Value> {
    let script = repo_root().join("tests/interop/interop.py");
    let mut cmd = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    // The stack's credentials, through the environment (never the command line).
    let kafka = Config::load(&Sources { stack: Some(orelink_platform::config::stack_credentials_path()), ..Sources::default() }).expect("config").kafka;
    if kafka.security_protocol.starts_with("sasl") {
        cmd.env("INTEROP_SASL_MECHANISM", &kafka.sasl_mechanism).env("INTEROP_SASL_USERNAME", &kafka.username).env("INTEROP_SASL_PASSWORD", kafka.password.expose());
    }
    let out = cmd
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs (tests/run installs confluent-kafka)");
    assert!(
        out.status.success(),
        "interop.py {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

/// A valid order as a Baise or Nanning ERP would send it.
pub fn order_wire(n: u32) -> orelink_domain::events::wire::OrderEvent {
    orelink_domain::events::wire::OrderEvent {
        event_id: format!("evt-ord-{n}"),
        event_time: 1_795_000_000_000 + n as i64,
        order_id: format!("ORD-NN-{n:05}"),
        kind: orelink_domain::events::OrderKind::Placed,
        cluster: "nanning".into(),
        buyer_id: "91450100MA5L0ABC1X".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 250_000,
        deliver_by: 1_795_600_000_000,
        destination_site: "nanning-jiangnan-processing".into(),
        max_price_cny_per_t: 20_900,
        allow_cross_cluster: true,
    }
}

/// The browser checks' driver folder (`tests/browser`, playwright-core
/// installed) and Debian's Chromium (`$CHROMIUM` to use another); each must
/// be there.
pub fn browser() -> (PathBuf, String) {
    let dir = repo_root().join("tests/browser");
    assert!(dir.join("node_modules/playwright-core").is_dir(), "playwright-core is not installed: run `npm ci --prefix tests/browser` (tests/run does)");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} is missing: apt-get install chromium (.ci/run does)");
    (dir, chromium)
}

/// Where a test keeps `name` (a screenshot) for people to look at: `tests/artifacts/`.
pub fn artifact(name: &str) -> PathBuf {
    let dir = repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Guiyun Road Haulage (`topology/partners.toml`): a carrier partner.
pub const TRUCKS: &str = "91451200MA5L0GYH4H";
/// The event time the carriers' fixtures below are stamped with.
pub const FIXTURE_MS: i64 = 1_795_000_000_000;
const HOUR_MS: i64 = 3_600_000;

/// A site of each cluster, for an allocation's ends.
pub fn site_of(cluster: &str) -> &'static str {
    match cluster {
        "baise" => "baise-pingguo-smelter",
        "hechi" => "hechi-jinchengjiang-smelter",
        "fangchenggang" => "fcg-qisha-copper",
        _ => "nanning-jiangnan-processing",
    }
}

/// A road offer from `TRUCKS` of `kg` on lane `from>to` at `price` CNY/t,
/// `transit_hours` long, open for 72 hours from `from_ms`.
pub fn offer_wire(id: &str, kind: orelink_domain::events::TransportOfferKind, (from, to): (&str, &str), kg: i64, price: i64, transit_hours: i64, from_ms: i64) -> orelink_domain::events::wire::TransportOffer {
    orelink_domain::events::wire::TransportOffer {
        event_id: format!("evt-{id}-{kind:?}"),
        event_time: FIXTURE_MS,
        offer_id: id.into(),
        kind,
        carrier_id: TRUCKS.into(),
        mode: orelink_domain::TransportMode::Road,
        from_cluster: from.into(),
        to_cluster: to.into(),
        capacity_kg: kg,
        available_from: from_ms,
        available_until: from_ms + 72 * HOUR_MS,
        price_cny_per_t: price,
        transit_hours,
    }
}

/// An allocation of `kg` of aluminium from cluster `from` to `to`, as the
/// matcher decides it (by road, planning freight 120 CNY/t), leaving at
/// `pick_up`, due by `deliver_by`.
pub fn allocation_wire(id: &str, (from, to): (&str, &str), kg: i64, pick_up: i64, deliver_by: i64) -> orelink_domain::events::wire::Allocation {
    use orelink_domain::events::wire;
    wire::Allocation {
        allocation_id: id.into(),
        order_id: format!("ORD-{id}"),
        capacity_id: format!("CAP-{id}"),
        order_cluster: to.into(),
        capacity_cluster: from.into(),
        buyer_id: "91450100MA5L0ABC1X".into(),
        provider_id: "91451000MA5L0PRV1Y".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: kg,
        price_cny_per_t: 20_400,
        freight_cny_per_t: 120,
        from_site: site_of(from).into(),
        destination_site: site_of(to).into(),
        decided_at: FIXTURE_MS,
        explanation: wire::Explanation {
            rank: 1,
            home_cluster: from == to,
            requested_product_code: "AL-INGOT-AL99.70".into(),
            landed_cost_cny_per_t: 20_520,
            distance_km: 250,
            transit_hours: 10,
            mode: orelink_domain::TransportMode::Road,
            energy_kwh_per_t: None,
            summary: "test".into(),
        },
        pick_up: Some(pick_up),
        deliver_by: Some(deliver_by),
    }
}

/// A capacity declaration of `kg` at `price` CNY/t, `CAP-<n>` at `site` of `cluster`.
pub fn capacity_wire(n: u32, site: &str, cluster: &str, product: &str, kg: i64, price: i64) -> orelink_domain::events::wire::CapacityEvent {
    orelink_domain::events::wire::CapacityEvent {
        event_id: format!("evt-cap-{n}"),
        event_time: 1_795_000_000_000,
        capacity_id: format!("CAP-{n}"),
        kind: orelink_domain::events::CapacityKind::Declared,
        cluster: cluster.into(),
        provider_id: "91451000MA5L0PRV1Y".into(),
        site_id: site.into(),
        product_code: product.into(),
        quantity_kg: kg,
        available_from: 1_795_000_000_000,
        available_until: 1_797_000_000_000,
        price_cny_per_t: price,
        min_lot_kg: 25_000,
        energy_kwh_per_t: Some(13_150),
    }
}

/// The schema files of the repository as (file name, text), for building altered references.
pub fn schema_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo_root().join("schemas"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "avsc"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

impl TestEnv {
    /// Produces with headers (e.g. a `traceparent`).
    pub async fn produce_with_headers(&self, topic: &str, key: &str, value: &[u8], headers: rdkafka::message::OwnedHeaders) {
        self.producer()
            .send(FutureRecord::to(topic).key(key).payload(value).headers(headers), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    /// The config `role` runs with in this test, as its own principal,
    /// `instance` naming the transactional instance.
    pub fn role_config(&self, role: &str, instance: &str) -> Config {
        let mut cfg = self.as_role(role);
        cfg.matcher.instance_id = instance.into();
        // Its own client id, so a group's members can be told apart (`group_assignment`).
        cfg.kafka.client_id = format!("{}-{instance}", cfg.kafka.client_id);
        cfg
    }

    /// Env vars that point an `orelink` process at this test's namespace; its
    /// roles find their principals in this namespace's file.
    pub fn process_env(&self, instance: &str) -> Vec<(String, String)> {
        vec![
            ("ORELINK__NAMESPACE".into(), self.ns.clone()),
            ("ORELINK__KAFKA__PRINCIPALS_FILE".into(), self.principals_file().display().to_string()),
            ("ORELINK__KAFKA__BROKERS".into(), self.cfg.kafka.brokers.clone()),
            ("ORELINK__REGISTRY__URL".into(), self.cfg.registry.url.clone()),
            ("ORELINK__MATCHER__INSTANCE_ID".into(), instance.into()),
            ("ORELINK__KAFKA__SESSION_TIMEOUT_MS".into(), self.cfg.kafka.session_timeout_ms.to_string()),
            ("ORELINK__LOG__LEVEL".into(), "info".into()),
        ]
    }

    /// How many offsets `contract` topic holds across its partitions (its high watermarks).
    pub async fn written(&self, contract: &str) -> i64 {
        let consumer: BaseConsumer = self.client("probe").create().unwrap();
        let topic = self.topic(contract);
        tokio::task::spawn_blocking(move || {
            let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)).unwrap();
            md.topics()[0].partitions().iter().map(|p| consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(5)).map(|w| w.1).unwrap_or(0)).sum()
        })
        .await
        .unwrap()
    }

    /// True once `group` has committed every partition of `topics` up to its end.
    pub async fn caught_up(&self, group: &str, topics: &[String]) -> bool {
        let consumer: BaseConsumer = self.client("probe").set("group.id", group).set("enable.auto.commit", "false").create().unwrap();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            topics.iter().all(|t| {
                orelink_platform::kafka::group_progress(&consumer, t, Duration::from_secs(5)).is_ok_and(|ps| ps.iter().all(|p| p.lag() == 0))
            })
        })
        .await
        .unwrap()
    }

    /// The partitions of `topic` assigned to each member of a stable `group`, by
    /// client id; None while the group is rebalancing.
    pub async fn group_assignment(&self, group: &str, topic: &str) -> Option<std::collections::BTreeMap<String, Vec<i32>>> {
        let consumer: BaseConsumer = self.client("probe").create().unwrap();
        let (group, topic) = (group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let list = consumer.fetch_group_list(Some(&group), Duration::from_secs(5)).ok()?;
            let info = list.groups().iter().find(|g| g.name() == group)?;
            if info.state() != "Stable" {
                return None;
            }
            let mut out = std::collections::BTreeMap::new();
            for m in info.members() {
                let parts = parse_assignment(m.assignment()?, &topic)?;
                out.entry(m.client_id().to_owned()).or_insert_with(Vec::new).extend(parts);
            }
            Some(out)
        })
        .await
        .unwrap()
    }

    /// Committed offsets of `group` on `topic`, by partition.
    pub async fn committed(&self, group: &str, topic: &str) -> std::collections::BTreeMap<i32, i64> {
        let consumer: BaseConsumer = self.client("probe").set("group.id", group).set("enable.auto.commit", "false").create().unwrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            orelink_platform::kafka::group_progress(&consumer, &topic, Duration::from_secs(5))
                .map(|ps| ps.into_iter().map(|p| (p.partition, p.committed)).collect())
                .unwrap_or_default()
        })
        .await
        .unwrap()
    }

    /// Waits until `caught_up`, or panics after `timeout`.
    pub async fn wait_caught_up(&self, group: &str, topics: &[String], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.caught_up(group, topics).await {
            assert!(tokio::time::Instant::now() < deadline, "group {group} did not catch up with {topics:?} within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `topic` holds a record (within 30 s), failing with `what` otherwise.
    pub async fn wait_for_a_record(&self, topic: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.read_topic(topic).await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every message of `topic` (read_committed), in partition order, as owned messages.
    pub async fn read_topic(&self, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
        use rdkafka::Message;
        let reader = |name: &str| -> BaseConsumer {
            self.client(name)
                .set("group.id", format!("{}dump-{}", self.ns, uuid::Uuid::new_v4().simple()))
                .set("isolation.level", "read_committed")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap()
        };
        // Watermarks from a client of their own: offset queries on the reading
        // consumer hold back its first fetch by seconds (librdkafka #1786).
        // It reads uncommitted, so its high watermarks are the log's ends: a
        // read_committed client's would be the last stable offsets, which stop
        // short while a transaction's markers are still being written (its
        // offsets already committed), and the read would end early.
        let probe: BaseConsumer = self
            .client("probe")
            .set("group.id", format!("{}dump-{}", self.ns, uuid::Uuid::new_v4().simple()))
            .set("isolation.level", "read_uncommitted")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let consumer = reader("reader");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let md = probe.fetch_metadata(Some(&topic), Duration::from_secs(5)).unwrap();
            let mut ends = std::collections::BTreeMap::new();
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in md.topics()[0].partitions() {
                let (low, high) = probe.fetch_watermarks(&topic, p.id(), Duration::from_secs(5)).unwrap();
                if high > low {
                    ends.insert(p.id(), high);
                    tpl.add_partition_offset(&topic, p.id(), rdkafka::Offset::Offset(low)).unwrap();
                }
            }
            let mut out: std::collections::BTreeMap<i32, Vec<rdkafka::message::OwnedMessage>> = Default::default();
            if ends.is_empty() {
                return Vec::new();
            }
            consumer.assign(&tpl).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            // Per partition: the last message's offset and when it came.
            let mut last: std::collections::BTreeMap<i32, (i64, std::time::Instant)> = Default::default();
            while !ends.is_empty() && std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(20)) {
                    Some(Ok(m)) => {
                        if ends.get(&m.partition()).is_some_and(|high| m.offset() + 1 >= *high) {
                            ends.remove(&m.partition());
                        }
                        last.insert(m.partition(), (m.offset(), std::time::Instant::now()));
                        out.entry(m.partition()).or_default().push(m.detach());
                    }
                    _ => {
                        // A transaction's commit marker takes the offset after its
                        // last record and is never delivered: a partition whose
                        // position passed its end is done, and so is one whose
                        // last message sits just before a final marker.
                        let positions = consumer.position().unwrap();
                        ends.retain(|p, high| {
                            let passed = positions.find_partition(&topic, *p).is_some_and(|e| matches!(e.offset(), rdkafka::Offset::Offset(o) if o >= *high));
                            let before_marker = last.get(p).is_some_and(|(o, at)| o + 2 >= *high && at.elapsed() > Duration::from_millis(200));
                            !(passed || before_marker)
                        });
                    }
                }
            }
            out.into_values().flatten().collect()
        })
        .await
        .unwrap()
    }
}

/// Allocations grouped by family, in the order they were written.
pub type ByFamily = std::collections::BTreeMap<String, Vec<orelink_domain::events::wire::Allocation>>;

/// What the matcher must have written: the pure engine replayed over the
/// market topic, each partition in its (commit) order.
pub async fn expected_allocations(env: &TestEnv, codec: &orelink_codec::Codec) -> ByFamily {
    expected_outputs(env, codec).await.0
}

/// Order statuses by family, in the order written.
pub type StatusesByFamily = std::collections::BTreeMap<String, Vec<orelink_domain::events::wire::OrderStatus>>;

/// The allocations and order statuses a pure-engine replay of the matcher
/// input makes (each partition's events through one engine, in order).
pub async fn expected_outputs(env: &TestEnv, codec: &orelink_codec::Codec) -> (ByFamily, StatusesByFamily) {
    use orelink_domain::matching::{Engine, Output};
    use rdkafka::Message;
    let input = env.read_topic(&env.topic(orelink_domain::topology::topics::MARKET)).await;
    let network = std::sync::Arc::new(orelink_domain::freight::Network::new(&env.reference.topology));
    let rt = tokio::runtime::Handle::current();
    // The matcher's decode blocks on the registry client; the test runtime must be multi-threaded.
    tokio::task::block_in_place(|| {
        let mut engines: std::collections::BTreeMap<i32, Engine> = Default::default();
        let (mut allocations, mut statuses) = (ByFamily::new(), StatusesByFamily::new());
        for m in &input {
            let engine = engines.entry(m.partition()).or_insert_with(|| Engine::new(network.clone()).with_dedup_horizon(env.cfg.matcher.dedup_horizon_ms));
            let Some(i) = orelink_matcher::decode(codec, &rt, m) else { continue };
            // At the message's log time, as the matcher decides (its dedup horizon).
            let mut decisions = Vec::new();
            orelink_matcher::decide(engine, &i, m, &mut decisions);
            for o in decisions.iter().map(|d| engine.render(d, &i)) {
                match o {
                    Output::Allocation(a) => allocations.entry(i.family().to_owned()).or_default().push(a),
                    Output::Status(s) => statuses.entry(i.family().to_owned()).or_default().push(s),
                    Output::Ignored { .. } => {}
                }
            }
        }
        (allocations, statuses)
    })
}

/// The order statuses the matcher wrote, read_committed, grouped by family (their key).
pub async fn actual_statuses(env: &TestEnv, codec: &orelink_codec::Codec) -> StatusesByFamily {
    by_family(env, codec, orelink_domain::topology::topics::ORDER_STATUS, |r| if let orelink_codec::Record::OrderStatus(s) = r { Ok(s) } else { Err(r) }).await
}

/// What the matcher wrote, read_committed, grouped by family.
pub async fn actual_allocations(env: &TestEnv, codec: &orelink_codec::Codec) -> ByFamily {
    by_family(env, codec, orelink_domain::topology::topics::ALLOCATIONS, |r| if let orelink_codec::Record::Allocation(a) = r { Ok(a) } else { Err(r) }).await
}

/// The records of one kind on a matcher output, read_committed, grouped by their key (the family).
async fn by_family<T>(env: &TestEnv, codec: &orelink_codec::Codec, contract: &str, take: impl Fn(orelink_codec::Record) -> Result<T, orelink_codec::Record>) -> std::collections::BTreeMap<String, Vec<T>> {
    use rdkafka::Message;
    let mut out: std::collections::BTreeMap<String, Vec<T>> = Default::default();
    let topic = env.topic(contract);
    for m in env.read_topic(&topic).await {
        let family = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let record = codec.decode(&topic, m.payload()).await.unwrap_or_else(|e| panic!("{contract}: a record does not decode: {e}"));
        out.entry(family).or_default().push(take(record).unwrap_or_else(|other| panic!("{contract}: unexpected record {other:?}")));
    }
    out
}

/// Produces a deterministic workload (orders and capacity of two families) as the contract's records.
pub async fn produce_workload(env: &TestEnv, codec: &orelink_codec::Codec, open: usize, events: usize, seed: u64, pace: Option<Duration>) -> usize {
    use orelink_domain::matching::Input;
    let w = orelink_domain::workload::steady_state(open, events, seed);
    let orders = env.topic(orelink_domain::topology::topics::ORDERS);
    let capacity = env.topic(orelink_domain::topology::topics::CAPACITY);
    let producer = env.producer();
    let mut n = 0;
    let mut pending = Vec::new();
    for input in w.warm.iter().chain(&w.stream) {
        let (topic, bytes) = match input {
            Input::Order(o) => (&orders, codec.encode(&orders, &o.to_wire()).await.unwrap()),
            Input::Capacity(c) => (&capacity, codec.encode(&capacity, &c.to_wire()).await.unwrap()),
            Input::Shared(_) => continue,
        };
        let family = input.family().to_owned();
        let delivery = producer.send_result(FutureRecord::to(topic).key(&family).payload(&bytes)).map_err(|(e, _)| e).expect("enqueue");
        pending.push(delivery);
        n += 1;
        if pending.len() >= 200 {
            for f in pending.drain(..) {
                f.await.expect("delivery report").map_err(|(e, _)| e).expect("produce");
            }
            if let Some(p) = pace {
                tokio::time::sleep(p).await;
            }
        }
    }
    for f in pending {
        f.await.expect("delivery report").map_err(|(e, _)| e).expect("produce");
    }
    n
}

/// `N` distinct ports free right now (all bound at once, so none repeats).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// The `orelink` binary built beside the test binaries (tests/run builds the workspace first).
pub fn orelink_bin() -> PathBuf {
    std::env::current_exe().expect("test binary path").parent().and_then(|d| d.parent()).expect("target dir").join("orelink")
}

/// A role's process, killed when dropped, so a failing test leaves none behind.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The partitions of `topic` in a consumer-protocol assignment (Kafka's
/// ConsumerProtocolAssignment: version, then topics with their partitions).
fn parse_assignment(bytes: &[u8], topic: &str) -> Option<Vec<i32>> {
    let mut at = 2usize; // version
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let i32_of = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let topics = i32_of(take(4)?);
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(take(len)?).ok()?.to_owned();
        let n = i32_of(take(4)?);
        for _ in 0..n.max(0) {
            let p = i32_of(take(4)?);
            if name == topic {
                out.push(p);
            }
        }
    }
    Some(out)
}

/// Starts the gateway in-process on a free port with `keys_file`; stops on `cancel`.
pub async fn start_gateway(env: &TestEnv, keys_file: &std::path::Path, cancel: tokio_util::sync::CancellationToken) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let mut cfg = env.as_role("gateway");
    cfg.gateway.listen = "127.0.0.1:0".into();
    cfg.gateway.keys_file = keys_file.to_string_lossy().into_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let r = env.reference.clone();
    let task = tokio::spawn(async move {
        orelink_gateway::run_with(&cfg, &r, cancel, move |a| {
            let _ = tx.send(a);
        })
        .await
        .expect("the gateway runs and stops cleanly")
    });
    (rx.await.unwrap(), task)
}
