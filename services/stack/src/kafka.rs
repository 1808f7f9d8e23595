//! Apache Kafka from Maven Central, run with the machine's Java in KRaft combined mode.

use crate::process::{Managed, listening, spawn_detached};
use crate::{Progress, StackConfig, StackError, io_err, wait_healthy};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const KAFKA_VERSION: &str = "4.4.0";
const LOG4J_VERSION: &str = "2.24.3";
const SLF4J_VERSION: &str = "2.0.17";

/// The Maven project whose dependencies are the Kafka distribution: the broker
/// (kafka_2.13), the tools (perf tests, ACLs, storage), and a log4j2 binding
/// with an slf4j 2 API (Maven would otherwise pick the 1.7 API the broker names).
fn pom() -> String {
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.orelink</groupId>
  <artifactId>kafka-dist</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{SLF4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"#
    )
}

const LOG4J2: &str = "status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
";

pub fn dist_dir(cfg: &StackConfig) -> PathBuf {
    cfg.cache_dir.join(format!("kafka-{KAFKA_VERSION}"))
}

/// The classpath of the cached distribution, fetching it first if needed.
pub fn ensure_jars(cfg: &StackConfig, progress: Progress<'_>) -> Result<PathBuf, StackError> {
    let dir = dist_dir(cfg);
    let libs = dir.join("libs");
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(libs);
    }
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    std::fs::write(dir.join("pom.xml"), pom()).map_err(io_err("writing the Kafka pom"))?;
    progress(&format!("kafka: fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {} (once)", dir.display()));
    let mut child = Command::new("mvn")
        .args(["-B", "--no-transfer-progress", "dependency:copy-dependencies", "-Dmdep.overWriteReleases=false"])
        .arg(format!("-DoutputDirectory={}", libs.display()))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| StackError::Missing(format!("cannot run mvn ({e}); install Maven (apt-get install maven)")))?;
    let mut tail: Vec<String> = Vec::new();
    let mut copied = 0usize;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        if line.contains("Copying ") {
            copied += 1;
            if copied.is_multiple_of(10) {
                progress(&format!("kafka: {copied} jars in place"));
            }
        }
        tail.push(line);
        if tail.len() > 30 {
            tail.remove(0);
        }
    }
    let status = child.wait().map_err(io_err("waiting for mvn"))?;
    if !status.success() {
        return Err(StackError::Fetch(format!("mvn could not fetch Kafka {KAFKA_VERSION}:\n{}", tail.join("\n"))));
    }
    // Maven may still copy the broker's own slf4j 1.7 API; two APIs on one classpath break logging.
    if let Ok(entries) = std::fs::read_dir(&libs) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("slf4j-api-1.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    std::fs::write(&done, KAFKA_VERSION).map_err(io_err("marking the Kafka cache complete"))?;
    progress(&format!("kafka: {copied} jars fetched"));
    Ok(libs)
}

/// The local stack's Kafka superuser. Its password is made on the first
/// `stack up`, kept in `credentials.toml` (mode 0600) beside the data, and
/// never printed; clients read it as a config layer.
pub const ADMIN: &str = "admin";

/// The client credentials file of this stack (a config layer for local commands).
pub fn credentials_file(cfg: &StackConfig) -> PathBuf {
    cfg.data_dir.join("credentials.toml")
}

/// The admin password, if this stack has made one.
pub fn admin_password(cfg: &StackConfig) -> Option<String> {
    let text = std::fs::read_to_string(credentials_file(cfg)).ok()?;
    let t: toml::Table = toml::from_str(&text).ok()?;
    t.get("kafka")?.get("password")?.as_str().map(str::to_owned)
}

/// Writes a file only its owner may read (it holds the admin password).
fn write_private(path: &Path, text: &str) -> Result<(), StackError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let what = format!("writing {}", path.display());
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io_err(what.clone()))?;
    f.write_all(text.as_bytes()).map_err(io_err(what))
}

/// The stack's client file: where its parts listen and how to log in to
/// Kafka. Rewritten on every `up`, so it follows the stack's ports.
pub(crate) fn write_credentials(cfg: &StackConfig, password: &str) -> Result<(), StackError> {
    let text = format!(
        "# Written by `orelink stack up`: how local commands reach this stack\n\
         # (Kafka with SASL/SCRAM as the superuser). A config layer under your own config file.\n\
         # Secret: never commit, print or share it.\n\
         [kafka]\nbrokers = \"{}\"\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"{ADMIN}\"\npassword = \"{password}\"\n\n\
         [registry]\nurl = \"{}\"\nlisten = \"{}:{}\"\n\n\
         [redis]\nurl = \"{}\"\n",
        cfg.kafka_bootstrap(),
        cfg.registry_url(),
        cfg.host,
        cfg.registry_port,
        cfg.redis_url()
    );
    write_private(&credentials_file(cfg), &text)
}

/// SASL/SCRAM-SHA-512 for clients and between brokers, PLAIN on the
/// controller listener, KRaft's StandardAuthorizer with no access unless an
/// ACL grants it; the admin is the only superuser. With three nodes, every
/// node is broker and controller (a quorum of three), and the internal
/// topics and new topics are replicated three times, two in sync to accept a
/// write.
fn server_properties(cfg: &StackConfig, node: u8, log_dirs: &Path, admin_password: &str) -> String {
    let h = &cfg.host;
    let (p, c) = cfg.node_ports(node);
    let pw = admin_password;
    let voters: Vec<String> = (1..=cfg.brokers).map(|n| format!("{n}@{h}:{}", cfg.node_ports(n).1)).collect();
    let voters = voters.join(",");
    let (rf, isr) = if cfg.brokers >= 3 { (3, 2) } else { (1, 1) };
    // A follower that stops fetching (a hung node) leaves the ISR after this
    // long; until then acks=all writes to its partitions wait (Kafka's 30 s
    // default stalled them as long).
    let hung = if cfg.brokers >= 3 { "replica.lag.time.max.ms=10000\n" } else { "" };
    let what = if cfg.brokers == 1 { "a single KRaft node acting as broker and controller".to_owned() } else { format!("KRaft node {node} of {}, broker and controller", cfg.brokers) };
    format!(
        "# Written by `orelink stack up`; {what}.
# Holds the admin password: mode 0600, never printed.
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=SASL_PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}
advertised.listeners=SASL_PLAINTEXT://{h}:{p}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ADMIN}\" password=\"{pw}\";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{ADMIN}\" password=\"{pw}\" user_{ADMIN}=\"{pw}\";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{ADMIN}
log.dirs={}
num.partitions=1
default.replication.factor={rf}
min.insync.replicas={isr}
auto.create.topics.enable=false
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={isr}
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={isr}
group.initial.rebalance.delay.ms=0
log.retention.check.interval.ms=60000
{hung}",
        log_dirs.display()
    )
}

/// A node's directory: `kafka/` for the single node, `kafka-<n>/` for each of three.
pub fn node_dir(cfg: &StackConfig, node: u8) -> PathBuf {
    if cfg.brokers == 1 { cfg.data_dir.join("kafka") } else { cfg.data_dir.join(format!("kafka-{node}")) }
}

/// A node's name in `state.json` and in `stack kill|start <node>`.
pub fn component(cfg: &StackConfig, node: u8) -> String {
    if cfg.brokers == 1 { "kafka".to_owned() } else { format!("kafka-{node}") }
}

fn java(libs: &Path, log4j: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg(format!("-Dlog4j2.configurationFile={}", log4j.display())).arg("-cp").arg(format!("{}/*", libs.display()));
    cmd
}

/// The cached distribution's classpath, fetching it first if needed (with progress lines).
fn libs(cfg: &StackConfig, progress: Progress<'_>) -> Result<PathBuf, StackError> {
    let cfg = cfg.clone();
    // The fetch blocks on mvn; progress lines are collected and printed as they come.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let handle = std::thread::spawn(move || ensure_jars(&cfg, &move |s: &str| drop(tx.send(s.to_owned()))));
    for line in rx {
        progress(&line);
    }
    handle.join().map_err(|_| StackError::Fetch("the fetch thread panicked".into()))?
}

/// The cluster id a node's storage was formatted with, if it was.
fn formatted_id(cfg: &StackConfig, node: u8) -> Option<String> {
    let meta = std::fs::read_to_string(node_dir(cfg, node).join("data/meta.properties")).ok()?;
    meta.lines().find_map(|l| l.strip_prefix("cluster.id=")).map(|v| v.trim().to_owned())
}

/// Formats what is not formatted yet and starts every node of the stack
/// whose process is not running (`running` says which are).
pub async fn start(cfg: &StackConfig, running: impl Fn(&str) -> bool, progress: Progress<'_>) -> Result<Vec<Managed>, StackError> {
    let other = if cfg.brokers == 1 { cfg.data_dir.join("kafka-1") } else { cfg.data_dir.join("kafka") };
    if other.join("data/meta.properties").exists() {
        return Err(StackError::Missing(format!(
            "{} holds a stack of {}; this one is to have {} (ORELINK_STACK_BROKERS, --brokers): `orelink stack down --purge` first",
            cfg.data_dir.display(),
            if cfg.brokers == 1 { "three nodes" } else { "one node" },
            if cfg.brokers == 1 { "one" } else { "three" },
        )));
    }
    let libs = libs(cfg, progress)?;
    let ids: Vec<String> = (1..=cfg.brokers).filter_map(|n| formatted_id(cfg, n)).collect();
    let password = match admin_password(cfg) {
        Some(p) => p,
        None if !ids.is_empty() => {
            return Err(StackError::Missing(format!(
                "{} was formatted before the stack used SASL and has no credentials; run `orelink stack down --purge` once",
                cfg.data_dir.display()
            )));
        }
        None => {
            let p = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            write_credentials(cfg, &p)?;
            p
        }
    };
    // Every node of one cluster carries the same id.
    let cluster_id = ids.first().cloned().unwrap_or_else(base64_uuid);
    let mut started = Vec::new();
    for node in 1..=cfg.brokers {
        if running(&component(cfg, node)) {
            continue;
        }
        if listening(&cfg.node_address(node)).await {
            return Err(StackError::Missing(format!("something listens on {} but does not answer as Kafka; stop it or change the port", cfg.node_address(node))));
        }
        started.push(start_node(cfg, node, &libs, &password, &cluster_id, progress)?);
    }
    Ok(started)
}

/// Starts one node again (`stack start <node>`), as it was configured.
pub fn restart_node(cfg: &StackConfig, node: u8, progress: Progress<'_>) -> Result<Managed, StackError> {
    let libs = libs(cfg, progress)?;
    let password = admin_password(cfg).ok_or_else(|| StackError::Missing("this stack has no credentials: `orelink stack up` first".into()))?;
    let cluster_id = formatted_id(cfg, node).ok_or_else(|| StackError::Missing(format!("node {node} was never formatted: `orelink stack up` first")))?;
    start_node(cfg, node, &libs, &password, &cluster_id, progress)
}

fn start_node(cfg: &StackConfig, node: u8, libs: &Path, password: &str, cluster_id: &str, progress: Progress<'_>) -> Result<Managed, StackError> {
    let dir = node_dir(cfg, node);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(io_err(format!("creating {}", data.display())))?;
    let props = dir.join("server.properties");
    write_private(&props, &server_properties(cfg, node, &data, password))?;
    let log4j = dir.join("log4j2.properties");
    std::fs::write(&log4j, LOG4J2).map_err(io_err("writing log4j2.properties"))?;

    if !data.join("meta.properties").exists() {
        progress(&format!("{}: formatting KRaft storage (SASL/SCRAM, ACLs enforced)", component(cfg, node)));
        // The superuser's SCRAM credential must exist before the first start
        // (brokers authenticate to each other with it).
        let out = java(libs, &log4j)
            .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "--add-scram"])
            .arg(format!("SCRAM-SHA-512=[name={ADMIN},password={password}]"))
            .arg("-c")
            .arg(&props)
            .output()
            .map_err(|e| StackError::Missing(format!("cannot run java ({e}); install a Java 17 runtime")))?;
        if !out.status.success() {
            return Err(StackError::Fetch(format!(
                "formatting Kafka storage failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    let mut cmd = java(libs, &log4j);
    cmd.args([
        &format!("-Xmx{}", cfg.kafka_heap),
        &format!("-Xms{}", cfg.kafka_heap),
        // The GC settings of Kafka's own launch script (kafka-run-class.sh):
        // without MaxGCPauseMillis=20, G1 aims at pauses of up to 200 ms.
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        &format!("-Dkafka.logs.dir={}", dir.join("logs").display()),
        "kafka.Kafka",
    ])
    .arg(&props);
    let log = dir.join("kafka.log");
    progress(&format!("{}: starting {KAFKA_VERSION} on {} (log {})", component(cfg, node), cfg.node_address(node), log.display()));
    spawn_detached(&component(cfg, node), cmd, &log, &props.display().to_string())
}

/// The node leading the controller quorum (the active controller), asked
/// of the quorum with Kafka's own tool (`kafka-metadata-quorum describe --status`).
pub fn active_controller(cfg: &StackConfig) -> Result<u8, StackError> {
    let libs = libs(cfg, &|_| {})?;
    let password = admin_password(cfg).ok_or_else(|| StackError::Missing("this stack has no credentials".into()))?;
    let props = cfg.data_dir.join("controller-client.properties");
    write_private(
        &props,
        &format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{ADMIN}\" password=\"{password}\";\n"
        ),
    )?;
    let controllers: Vec<String> = (1..=cfg.brokers).map(|n| format!("{}:{}", cfg.host, cfg.node_ports(n).1)).collect();
    let log4j = cfg.data_dir.join("tool-log4j2.properties");
    std::fs::write(&log4j, LOG4J2.replace("rootLogger.level = INFO", "rootLogger.level = WARN")).map_err(io_err("writing the tool's log4j2.properties"))?;
    let out = java(&libs, &log4j)
        .args(["org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-controller", &controllers.join(","), "--command-config"])
        .arg(&props)
        .args(["describe", "--status"])
        .output()
        .map_err(|e| StackError::Missing(format!("cannot run java ({e})")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("LeaderId:").and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| StackError::Fetch(format!("the quorum named no leader:\n{text}{}", String::from_utf8_lossy(&out.stderr))))
}

/// A new KRaft cluster id, as Kafka's `Uuid.randomUuid` makes them: a
/// random UUID in URL-safe base64 without padding, drawn again when it
/// starts with '-', which the storage tool would read as an option (about
/// one format in 64 failed so).
fn base64_uuid() -> String {
    loop {
        if let Some(id) = cluster_id(*uuid::Uuid::new_v4().as_bytes()) {
            return id;
        }
    }
}

fn cluster_id(bytes: [u8; 16]) -> Option<String> {
    use base64::Engine;
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    (!id.starts_with('-')).then_some(id)
}

/// Waits until every node of the stack is a broker in the cluster's metadata.
pub async fn wait(cfg: &StackConfig, progress: Progress<'_>) -> Result<(), StackError> {
    let n = cfg.brokers as usize;
    wait_healthy("kafka", Duration::from_secs(120), node_dir(cfg, 1).join("kafka.log"), || async { brokers_up(cfg).await >= n }).await?;
    progress(&format!("kafka: healthy on {}", cfg.kafka_bootstrap()));
    Ok(())
}

/// How many brokers the cluster's metadata lists (0: no answer).
pub async fn brokers_up(cfg: &StackConfig) -> usize {
    let addrs: Vec<String> = (1..=cfg.brokers).map(|n| cfg.node_address(n)).collect();
    let mut any = false;
    for a in &addrs {
        any |= listening(a).await;
    }
    if !any {
        return 0;
    }
    brokers_listed(cfg, cfg.kafka_bootstrap()).await
}

/// Whether node n itself answers a metadata request (the cluster's metadata
/// may still list a node that was just killed).
pub async fn node_answers(cfg: &StackConfig, n: u8) -> bool {
    listening(&cfg.node_address(n)).await && brokers_listed(cfg, cfg.node_address(n)).await > 0
}

async fn brokers_listed(cfg: &StackConfig, bootstrap: String) -> usize {
    let password = admin_password(cfg);
    tokio::task::spawn_blocking(move || {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &bootstrap).set("log_level", "2");
        if let Some(pw) = password {
            c.set("security.protocol", "sasl_plaintext").set("sasl.mechanism", "SCRAM-SHA-512").set("sasl.username", ADMIN).set("sasl.password", pw);
        }
        let consumer: Result<BaseConsumer, _> = c.create();
        consumer.and_then(|c| c.fetch_metadata(None, Duration::from_secs(3))).map(|m| m.brokers().len()).unwrap_or(0)
    })
    .await
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_never_start_with_a_dash() {
        // 0xF8 puts 62, URL-safe base64's '-', in the first six bits.
        assert_eq!(cluster_id([0xF8; 16]), None);
        let id = cluster_id([0x04; 16]).unwrap();
        assert_eq!(id.len(), 22, "16 bytes, unpadded");
        // With one draw in 64 refused, a few thousand draws meet many refusals.
        for _ in 0..5_000 {
            assert!(!base64_uuid().starts_with('-'));
        }
    }
}
