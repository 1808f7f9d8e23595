//! Support for the integration tests: they run against the real local stack
//! (`orelink stack up`, or `tests/run` which starts it), each test in a
//! namespace of its own so topics, subjects and groups never collide.

use orelink_platform::config::{Config, Sources};
use orelink_platform::registry_client::RegistryClient;
use orelink_platform::{Reference, apply};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::PathBuf;
use std::time::Duration;

/// A test's own slice of the stack.
pub struct TestEnv {
    pub ns: String,
    pub cfg: Config,
    pub reference: Reference,
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
        let ns = unique_ns();
        let env = vec![
            ("ORELINK__NAMESPACE".to_string(), ns.clone()),
            ("ORELINK__KAFKA__BROKERS".to_string(), brokers()),
            ("ORELINK__REGISTRY__URL".to_string(), registry_url()),
        ];
        let cfg = Config::load(&Sources { file: None, env }).expect("test config");
        let env = TestEnv { ns, cfg, reference: Reference::embedded() };
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
        let ok = reqwest::get(format!("{}/subjects", self.cfg.registry.url)).await.is_ok_and(|r| r.status().is_success());
        assert!(ok, "the schema registry is not reachable at {}: start the stack with `orelink stack up`", self.cfg.registry.url);
    }

    pub fn client(&self, role: &str) -> ClientConfig {
        self.cfg.kafka.client_config(role)
    }

    pub fn topic(&self, contract: &str) -> String {
        format!("{}{contract}", self.ns)
    }

    pub fn registry(&self) -> RegistryClient {
        RegistryClient::new(&self.cfg.registry.url, Duration::from_secs(10)).unwrap()
    }

    /// Creates this namespace's topics and subjects.
    pub async fn apply(&self) -> apply::Applied {
        apply::apply(&self.client("admin"), &self.registry(), &self.reference, &self.ns, false).await.expect("topology apply")
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
    let out = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
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
