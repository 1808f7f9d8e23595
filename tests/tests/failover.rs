//! The hub on a replicated Kafka (three KRaft nodes of a stack of the test's
//! own: RF 3, min.insync.replicas 2) while brokers fail under it. Orders,
//! capacity and shipments flow at a few hundred events/s into the matcher,
//! the share role, the fanout and the view, each a process of its own running
//! as its own principal. Faults, one after another: the node leading most
//! market-topic partitions is SIGKILLed and restarted 20 s later; then the
//! active controller likewise; then a node is frozen (SIGSTOP) for 30 s, a
//! hung broker, and continued. Then the load stops and the hub drains.
//!
//! Asserted: every event the producer had acknowledged is in its topic once;
//! the read_committed allocations and order statuses equal a pure-engine
//! replay of the market topic, with no allocation id twice; every routed shipment is in its
//! partner's topic exactly once; the view's numbers equal a recomputation
//! from the topics it reads; no role died (none was restarted by hand).
//! Printed: how long each fault stalled allocations.

use orelink_codec::Record;
use orelink_domain::TransportMode;
use orelink_domain::events::{ShipmentStatus, wire};
use orelink_domain::topology::topics;
use orelink_tests::view::{assert_cells_eq, recompute, served, wait_share_caught_up, wait_view_caught_up};
use orelink_tests::{KillOnDrop, TestEnv, actual_allocations, actual_statuses, expected_outputs, free_ports, orelink_bin, produce_workload};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The three-node stack's ports: Kafka 29092/29094/29096, controllers
/// 29093/29095/29097, the registry 28081. Redis is shared with the main stack.
const STACK_PORTS: [(&str, &str); 3] = [("ORELINK_STACK_KAFKA_PORT", "29092"), ("ORELINK_STACK_CONTROLLER_PORT", "29093"), ("ORELINK_STACK_REGISTRY_PORT", "28081")];

/// The view's operator token.
const TOKEN: &str = "op-failover-token";

/// A three-node stack in a directory of its own, purged when dropped.
struct ThreeNodes {
    home: tempfile::TempDir,
}

impl ThreeNodes {
    fn up() -> ThreeNodes {
        let t = ThreeNodes { home: tempfile::tempdir().expect("a temporary directory") };
        let out = t.stack(&["up", "--brokers", "3"]);
        assert!(out.status.success(), "orelink stack up --brokers 3 failed:\n{}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn stack(&self, args: &[&str]) -> std::process::Output {
        Command::new(orelink_bin()).arg("stack").args(args).env("ORELINK_HOME", self.home.path()).envs(STACK_PORTS).stdin(Stdio::null()).output().expect("orelink stack runs")
    }

    /// `stack kill|start|pause|resume <node>`; returns the node acted on.
    fn node(&self, action: &str, node: &str) -> u8 {
        let out = self.stack(&[action, node]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "stack {action} {node} failed:\n{err}");
        // "[stack] kafka-2: killed (pid ...)"
        err.split("kafka-").nth(1).and_then(|r| r.split(':').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no node named in: {err}"))
    }

    fn credentials(&self) -> PathBuf {
        self.home.path().join("stack/credentials.toml")
    }
}

impl Drop for ThreeNodes {
    fn drop(&mut self) {
        let _ = self.stack(&["down", "--purge"]);
    }
}

fn start(env: &TestEnv, role: &str, logs: &Path, extra: &[(&str, String)]) -> KillOnDrop {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{role}.log"))).unwrap();
    KillOnDrop(
        Command::new(orelink_bin())
            .args(["run", role])
            .envs(env.process_env(&format!("{role}-0")))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("orelink starts"),
    )
}

/// When each allocation arrived, read read_committed as it is committed.
fn watch_allocations(env: &TestEnv, stop: Arc<std::sync::atomic::AtomicBool>) -> (Arc<Mutex<Vec<Instant>>>, std::thread::JoinHandle<()>) {
    let consumer: BaseConsumer = env
        .client("failover-watch")
        .set("group.id", format!("{}failover-watch", env.ns))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&env.topic(topics::ALLOCATIONS)]).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let thread = std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
                s.lock().unwrap().push(Instant::now());
            }
        }
    });
    (seen, thread)
}

/// Shipments of the declared partners' carriers, about 20 a second for `n`.
async fn produce_shipments(env: &TestEnv, codec: &orelink_codec::Codec, n: u32) -> BTreeMap<String, BTreeSet<String>> {
    let topic = env.topic(topics::SHIPMENTS);
    let partners = &env.reference.topology.partners;
    let producer = env.producer();
    let mut sent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in 0..n {
        let p = &partners[i as usize % partners.len()];
        let s = wire::ShipmentEvent {
            event_id: format!("fo-shp-{i:05}"),
            event_time: 1_795_000_000_000 + i as i64 * 1000,
            shipment_id: format!("SHP-FO{:03}", i % 50),
            allocation_id: None,
            carrier_id: p.carrier_id.clone(),
            mode: TransportMode::Road,
            status: ShipmentStatus::InTransit,
            from_site: "fcg-qisha-copper".into(),
            to_site: "nanning-niuwan-port".into(),
            quantity_kg: 30_000,
            lat: None,
            lon: None,
            eta: None,
        };
        let bytes = codec.encode(&topic, &s).await.unwrap();
        // Acknowledged (acks=all, idempotent) before it counts as sent.
        producer.send(rdkafka::producer::FutureRecord::to(&topic).key(&s.shipment_id).payload(&bytes), Duration::from_secs(120)).await.map_err(|(e, _)| e).expect("a shipment acknowledged");
        sent.entry(p.id.to_string()).or_default().insert(s.event_id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent
}

/// Event ids in `topic` (read_committed), each counted.
async fn event_ids(env: &TestEnv, codec: &orelink_codec::Codec, topic: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in env.read_topic(topic).await {
        let id = match codec.decode(topic, m.payload()).await.expect("decodes") {
            Record::Order(o) => o.event_id,
            Record::Capacity(c) => c.event_id,
            Record::Shipment(s) => s.event_id,
            other => panic!("unexpected record in {topic}: {other:?}"),
        };
        *out.entry(id.to_string()).or_default() += 1;
    }
    out
}

/// The node leading most partitions of `topic`.
fn leader_of_most(env: &TestEnv, topic: &str) -> u8 {
    let c: BaseConsumer = env.client("failover-probe").create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut count: BTreeMap<i32, usize> = BTreeMap::new();
    for p in md.topics()[0].partitions() {
        *count.entry(p.leader()).or_default() += 1;
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id as u8).expect("the topic has leaders")
}

/// From `at`: the first allocation after it, and the longest wait between
/// allocations in the `window` after it (None: none came).
fn stall(seen: &[Instant], at: Instant, window: Duration) -> (Option<Duration>, Duration) {
    let after: Vec<Instant> = seen.iter().copied().filter(|t| *t > at && *t <= at + window).collect();
    let first = after.first().map(|t| *t - at);
    let mut longest = first.unwrap_or(window);
    for w in after.windows(2) {
        longest = longest.max(w[1] - w[0]);
    }
    (first, longest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_brokers_loses_and_doubles_nothing() {
    assert!(orelink_bin().exists(), "build the workspace first (tests/run does)");
    let stack = ThreeNodes::up();
    let mut env = TestEnv::on_stack(stack.credentials()).await;
    // The load's producers wait out a leader change as Kafka's Java clients
    // do (delivery.timeout.ms 120 s): a hung leader holds a request until it
    // is fenced and its partitions move.
    env.cfg.kafka.message_timeout_ms = 120_000;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    // Each role's output, kept when the test fails.
    let log = std::env::temp_dir().join(format!("orelink-failover-{}", env.ns.trim_end_matches('.')));
    std::fs::create_dir_all(&log).unwrap();
    let mut roles: Vec<(&str, KillOnDrop)> = ["matcher", "share", "fanout"].into_iter().map(|r| (r, start(&env, r, &log, &[]))).collect();
    let view: std::net::SocketAddr = format!("127.0.0.1:{}", free_ports::<1>()[0]).parse().unwrap();
    let view_env = [("ORELINK__VIEW__LISTEN", view.to_string()), ("ORELINK__VIEW__OPERATOR_TOKEN_DIGESTS", orelink_platform::config::sha256_hex(TOKEN))];
    roles.push(("view", start(&env, "view", &log, &view_env)));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, watcher) = watch_allocations(&env, stop.clone());
    // About 330 events/s of orders and capacity for ~135 s (past the last
    // fault's end), and shipments beside them.
    let producing = {
        let (codec, env) = (codec.clone(), env.clone());
        tokio::spawn(async move { produce_workload(&env, &codec, 200, 45_000, 19, Some(Duration::from_millis(600))).await })
    };
    let shipping = {
        let (codec, env) = (codec.clone(), env.clone());
        tokio::spawn(async move { produce_shipments(&env, &codec, 2_400).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no allocation before the faults; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. The leader of most market-topic partitions, killed, restarted 20 s later.
    let leader = leader_of_most(&env, &env.topic(topics::MARKET));
    let t1 = Instant::now();
    stack.node("kill", &leader.to_string());
    tokio::time::sleep(Duration::from_secs(20)).await;
    stack.node("start", &leader.to_string());
    tokio::time::sleep(Duration::from_secs(5)).await;
    // 2. The active controller, killed, restarted 20 s later.
    let t2 = Instant::now();
    let controller = stack.node("kill", "controller");
    tokio::time::sleep(Duration::from_secs(20)).await;
    stack.node("start", &controller.to_string());
    tokio::time::sleep(Duration::from_secs(5)).await;
    // 3. A hung node: frozen for 30 s, then continued.
    let hung = leader_of_most(&env, &env.topic(topics::MARKET));
    let t3 = Instant::now();
    stack.node("pause", &hung.to_string());
    tokio::time::sleep(Duration::from_secs(30)).await;
    stack.node("resume", &hung.to_string());

    let sent = producing.await.unwrap();
    let shipped = shipping.await.unwrap();
    for (group, inputs) in [
        (orelink_matcher::router_group(&env.cfg), vec![env.topic(topics::ORDERS), env.topic(topics::CAPACITY)]),
        (orelink_matcher::processor_group(&env.cfg), vec![env.topic(topics::MARKET)]),
        (orelink_fanout::group(&env.cfg), vec![env.topic(topics::SHIPMENTS)]),
    ] {
        env.wait_caught_up(&group, &inputs, Duration::from_secs(180)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    // The view, once the share role has published what it owes and the view
    // has applied every record of its inputs: the same numbers as a
    // recomputation from those records.
    wait_share_caught_up(&env).await;
    let records = wait_view_caught_up(&env, &codec).await;
    let cells = recompute(&records);
    assert!(cells.values().any(|c| c["allocations"] > 0), "the recomputation finds no allocation");
    assert_cells_eq(&served(view, TOKEN).await, &cells, "the view differs from the recomputation");

    // No role died on its own; each stops cleanly now (drain, commit, exit 0).
    for (role, p) in &mut roles {
        assert!(p.0.try_wait().unwrap().is_none(), "the {role} died during the faults; see {}", log.display());
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(p.0.id() as libc::pid_t, libc::SIGTERM) };
        let status = p.0.wait().unwrap();
        assert!(status.success(), "the {role} did not stop cleanly ({status}); see {}", log.display());
    }

    for (role, _) in &roles {
        let text = std::fs::read_to_string(log.join(format!("{role}.log"))).unwrap_or_default();
        eprintln!(
            "failover: the {role} made its consumer anew {} time(s), its transactional producer {} time(s), gave up {} transaction(s) that did not end, resumed from Redis {} time(s)",
            text.matches("making it anew").count(),
            text.matches("the producer was").count(),
            text.matches("a transaction did not end").count(),
            text.matches("from Redis's offsets").count()
        );
    }
    let seen = seen.lock().unwrap().clone();
    // Each fault's window runs to the next fault (the last one's: 60 s).
    for (what, at, window) in [
        ("the leader of most market-topic partitions killed (restarted after 20 s)", t1, t2 - t1),
        ("the active controller killed (restarted after 20 s)", t2, t3 - t2),
        ("a node frozen for 30 s", t3, Duration::from_secs(60)),
    ] {
        let (first, longest) = stall(&seen, at, window);
        eprintln!("failover: {what}: first allocation after it {:.1} s; longest wait between allocations in the {:.0} s after it {:.1} s", first.map_or(f64::NAN, |d| d.as_secs_f64()), window.as_secs_f64(), longest.as_secs_f64());
    }

    // Every acknowledged event is in its topic, once.
    let mut inputs = event_ids(&env, &codec, &env.topic(topics::ORDERS)).await;
    inputs.extend(event_ids(&env, &codec, &env.topic(topics::CAPACITY)).await);
    assert_eq!(inputs.len(), sent, "acknowledged orders and capacity: {sent}; distinct in their topics: {}", inputs.len());
    assert!(inputs.values().all(|n| *n == 1), "an input event was written twice: {:?}", inputs.iter().find(|(_, n)| **n > 1));

    // Allocations and order statuses: exactly what a pure-engine replay of the market topic makes.
    let (expected, expected_statuses) = expected_outputs(&env, &codec).await;
    let actual = actual_allocations(&env, &codec).await;
    let ids: Vec<&str> = actual.values().flatten().map(|a| a.allocation_id.as_str()).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "an allocation id was committed twice");
    assert!(!ids.is_empty(), "nothing was allocated");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (family, want) in &expected {
        assert!(&actual[family] == want, "{family}: {} committed allocations, the replay makes {}; or they differ", actual[family].len(), want.len());
    }

    let statuses = actual_statuses(&env, &codec).await;
    assert_eq!(statuses.keys().collect::<Vec<_>>(), expected_statuses.keys().collect::<Vec<_>>());
    for (family, want) in &expected_statuses {
        assert!(&statuses[family] == want, "{family}: {} order statuses committed, the replay makes {}; or they differ", statuses[family].len(), want.len());
    }

    // Every routed shipment is in its partner's topic exactly once.
    let mut routed = 0;
    for (partner, want) in &shipped {
        let got = event_ids(&env, &codec, &env.topic(&topics::partner(partner))).await;
        assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), *want, "{partner}: the routed shipments differ from those sent");
        assert!(got.values().all(|n| *n == 1), "{partner}: a shipment routed twice");
        routed += got.len();
    }
    eprintln!("failover: {sent} orders and capacity, {} allocations, {routed} shipments routed", ids.len());
    let _ = std::fs::remove_dir_all(&log);
}
