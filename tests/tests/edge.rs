//! The edge relay as a real process: it keeps accepting while the link to
//! Kafka is cut (the broker frozen with SIGSTOP), is killed with SIGKILL
//! mid-forward and restarted, and once the link returns a read_committed
//! consumer sees every event exactly once, in order per key. A CSV export
//! dropped into the watched folder is taken in, its bad row set aside with
//! the reason; exports are told apart by content, not name, and GBK files are
//! read as well as UTF-8 ones.

use orelink_codec::Record;
use orelink_domain::topology::topics;
use orelink_tests::{KillOnDrop, TestEnv, orelink_bin};
use rdkafka::Message;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SITE: &str = "hechi-dachang-tin";
const SITE_KEY: &str = "dachang-relay-key";
const PRODUCTS: [&str; 4] = ["SN-INGOT-SN99.90", "SN-INGOT-SN99.95", "ZN-INGOT-ZN99.995", "PB-INGOT-PB99.994"];

fn start(env: &TestEnv, dir: &std::path::Path, port: u16) -> KillOnDrop {
    KillOnDrop(Command::new(orelink_bin())
        .args(["run", "edge"])
        .envs(env.process_env("edge"))
        .env("ORELINK__EDGE__DIR", dir.join("queue"))
        .env("ORELINK__EDGE__WATCH_DIR", dir.join("inbox"))
        .env("ORELINK__EDGE__SITE", SITE)
        .env("ORELINK__EDGE__LISTEN", format!("127.0.0.1:{port}"))
        .env("ORELINK__EDGE__BATCH_MAX", "10")
        .env("ORELINK__EDGE__KEY_SHA256", orelink_gateway::keys::digest(SITE_KEY))
        .env("ORELINK__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("orelink run edge starts"))
}

/// Inventory event `n`: four keys (site/product), `n` increasing within each.
fn event(n: u32) -> serde_json::Value {
    json!({
        "event_id": format!("edge-inv-{n:05}"),
        "event_time": 1_795_000_000_000i64 + n as i64 * 1000,
        "site_id": SITE,
        "product_code": PRODUCTS[n as usize % PRODUCTS.len()],
        "on_hand_kg": 100_000 + n as i64,
        "reserved_kg": 0,
    })
}

async fn post(client: &reqwest::Client, port: u16, n: u32) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.post(format!("http://127.0.0.1:{port}/v1/inventory")).bearer_auth(SITE_KEY).json(&event(n)).send().await {
            Ok(r) => return r.status().as_u16(),
            // The relay is still starting.
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("the relay does not answer: {e}"),
        }
    }
}

async fn status(client: &reqwest::Client, port: u16) -> serde_json::Value {
    client.get(format!("http://127.0.0.1:{port}/status")).send().await.unwrap().json().await.unwrap()
}

fn kafka_pid() -> i32 {
    let out = Command::new(orelink_bin()).args(["stack", "status", "--json"]).output().expect("stack status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stack status --json");
    v["kafka"]["pid"].as_i64().expect("the test needs a broker started by `orelink stack up`, to cut the link") as i32
}

/// Freezes the broker; thawed on drop, so a failing test never leaves it stopped.
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_cut_link_and_a_killed_relay_exactly_once_in_order() {
    assert!(orelink_bin().exists(), "build the workspace first (tests/run does)");
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    let [port] = orelink_tests::free_ports::<1>();
    let client = reqwest::Client::new();
    let mut relay = start(&env, dir.path(), port);

    // Link up: accepted and forwarded.
    for n in 0..60 {
        assert_eq!(post(&client, port, n).await, 202);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&client, port).await["backlog_events"] != 0 {
        assert!(Instant::now() < deadline, "the relay did not drain with the link up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Link cut: the relay keeps accepting into its queue.
    let frozen = Frozen::new(kafka_pid());
    for n in 60..160 {
        assert_eq!(post(&client, port, n).await, 202, "refused while offline");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(&client, port).await;
    let buffered = s["backlog_events"].as_u64().unwrap();
    let metrics = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    let gauge: u64 = metrics.lines().find_map(|l| l.strip_prefix("orelink_edge_backlog_events ")).and_then(|v| v.parse().ok()).expect("backlog gauge");
    assert!(gauge >= buffered, "the backlog metric says {gauge}, the status {buffered}");
    assert!(buffered > 0, "nothing buffered while the broker was frozen: {s}");

    // Killed mid-forward (a transaction is open on the frozen broker), then the link returns.
    relay.kill();
    drop(frozen);
    let restarted = Instant::now();
    let mut relay = start(&env, dir.path(), port);
    for n in 160..200 {
        assert_eq!(post(&client, port, n).await, 202);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(&client, port).await;
        if s["backlog_events"] == 0 && s["link"] == "up" {
            eprintln!("edge: {buffered} events queued while the broker was frozen; backlog drained {:.1} s after the restart", restarted.elapsed().as_secs_f64());
            break;
        }
        assert!(Instant::now() < deadline, "the relay did not drain after the link returned: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A CSV export from the site's MES: three good rows and one bad.
    let inbox = dir.path().join("inbox");
    let mut csv = String::from("event_id,event_time,site_id,product_code,on_hand_kg,reserved_kg\n");
    for n in 200..203 {
        let e = event(n);
        csv.push_str(&format!("{},{},{},{},{},{}\n", e["event_id"].as_str().unwrap(), e["event_time"], SITE, e["product_code"].as_str().unwrap(), e["on_hand_kg"], e["reserved_kg"]));
    }
    csv.push_str(&format!("edge-inv-99999,1795000000000,{SITE},GOLD-BAR-999,5,0\n"));
    std::fs::write(inbox.join("inventory-export.csv.part"), &csv).unwrap();
    // Renamed into place whole, as an export tool should.
    std::fs::rename(inbox.join("inventory-export.csv.part"), inbox.join("inventory-export.csv")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&client, port).await;
        if inbox.join("done/inventory-export.csv").exists() && s["backlog_events"] == 0 && s["forwarded"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the CSV export was not taken in: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rejected = std::fs::read_to_string(inbox.join("inventory-export.csv.rejected.csv")).unwrap();
    assert_eq!(rejected.lines().count(), 2, "{rejected}");
    assert!(rejected.contains("product_code"), "{rejected}");

    // Every event exactly once, in order per key.
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let topic = env.topic(topics::INVENTORY);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut per_key: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    for m in env.read_topic(&topic).await {
        let Record::Inventory(inv) = codec.decode(&topic, m.payload()).await.unwrap() else { panic!("not inventory") };
        let id = inv.event_id.to_string();
        let n: u32 = id.trim_start_matches("edge-inv-").parse().unwrap();
        *seen.entry(id).or_default() += 1;
        per_key.entry(m.key().unwrap().to_vec()).or_default().push(n);
    }
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    assert_eq!(seen.len(), 203, "missing events");
    assert!(!seen.contains_key("edge-inv-99999"), "the bad CSV row was forwarded");
    for (k, ns) in &per_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "out of order for {}: {ns:?}", String::from_utf8_lossy(k));
    }
    relay.kill();
}

/// A test namespace with its topology, and a relay on a free port over a queue of its own.
async fn relay() -> (TestEnv, tempfile::TempDir, u16, reqwest::Client, KillOnDrop) {
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    let [port] = orelink_tests::free_ports::<1>();
    let relay = start(&env, dir.path(), port);
    (env, dir, port, reqwest::Client::new(), relay)
}

/// An inventory CSV row for event `edge-csv-<n>`.
fn csv_row(n: u32) -> String {
    format!("edge-csv-{n},{},{SITE},{},{},0\n", 1_795_000_000_000i64 + n as i64 * 1000, PRODUCTS[n as usize % PRODUCTS.len()], 50_000 + n)
}

/// Writes an export into the inbox whole (written aside, then renamed), as an export tool should.
fn drop_export(inbox: &std::path::Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(inbox).unwrap();
    std::fs::write(inbox.join(format!("{name}.part")), bytes).unwrap();
    std::fs::rename(inbox.join(format!("{name}.part")), inbox.join(name)).unwrap();
}

/// Waits until the relay has moved `name` out of the inbox and forwarded everything.
async fn wait_taken(client: &reqwest::Client, port: u16, inbox: &std::path::Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The relay may still be starting.
        let s = match client.get(format!("http://127.0.0.1:{port}/status")).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap(),
            Err(e) => json!({"error": e.to_string()}),
        };
        if !inbox.join(name).exists() && s["backlog_events"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{name} was not taken in: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_count_by_content_and_gbk_files_are_read() {
    let (env, dir, port, client, _relay) = relay().await;
    let inbox = dir.path().join("inbox");
    let header = "event_id,event_time,site_id,product_code,on_hand_kg,reserved_kg\n";
    let export = |ns: std::ops::Range<u32>| header.to_owned() + &ns.map(csv_row).collect::<String>();

    // The day's export, then a new export under the same name: both are taken in.
    drop_export(&inbox, "inventory-daily.csv", export(0..3).as_bytes());
    wait_taken(&client, port, &inbox, "inventory-daily.csv").await;
    drop_export(&inbox, "inventory-daily.csv", export(3..6).as_bytes());
    wait_taken(&client, port, &inbox, "inventory-daily.csv").await;
    // The first export dropped again, byte for byte: already queued once, not again.
    drop_export(&inbox, "inventory-daily.csv", export(0..3).as_bytes());
    wait_taken(&client, port, &inbox, "inventory-daily.csv").await;
    let done = std::fs::read_dir(inbox.join("done")).unwrap().count();
    assert_eq!(done, 3, "every export is kept in done/, none overwritten");

    // A weighbridge export in GBK: its good rows go, the row with a Chinese id
    // is rejected with the character named, decoded right.
    let text = export(6..8) + &format!("库存-9,1795000009000,{SITE},SN-INGOT-SN99.90,1,0\n");
    let (gbk, _, lossy) = encoding_rs::GBK.encode(&text);
    assert!(!lossy && std::str::from_utf8(&gbk).is_err(), "the file really is GBK");
    drop_export(&inbox, "inventory-weighbridge.csv", &gbk);
    wait_taken(&client, port, &inbox, "inventory-weighbridge.csv").await;
    let rejected = std::fs::read_to_string(inbox.join("inventory-weighbridge.csv.rejected.csv")).unwrap();
    assert!(rejected.contains("'库'"), "the reason names the decoded character: {rejected}");

    // Exactly the eight good rows, once each.
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let topic = env.topic(topics::INVENTORY);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for m in env.read_topic(&topic).await {
        let Record::Inventory(inv) = codec.decode(&topic, m.payload()).await.unwrap() else { panic!("not inventory") };
        *seen.entry(inv.event_id.to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, u32> = (0..8).map(|n| (format!("edge-csv-{n}"), 1)).collect();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_event_that_no_longer_passes_is_dead_lettered_not_dropped() {
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    // Queued before a restart: one good event, one for a site the topology no
    // longer has (as after a topology change), and an entry that does not decode.
    {
        let queue = orelink_edge::Queue::open(&dir.path().join("queue"), 1 << 20).unwrap();
        let entry = |event: serde_json::Value| serde_json::to_vec(&json!({"kind": "inventory", "event": event})).unwrap();
        let mut gone = event(1);
        gone["site_id"] = json!("atlantis-deep-mine");
        for e in [entry(event(0)), entry(gone), b"{\"kind\": \"inv".to_vec()] {
            queue.push(&e).unwrap().expect("room in the queue");
        }
    }
    let [port] = orelink_tests::free_ports::<1>();
    let client = reqwest::Client::new();
    let _relay = start(&env, dir.path(), port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = reqwest::get(format!("http://127.0.0.1:{port}/status")).await.ok().map(|r| r.json::<serde_json::Value>());
        if let Some(s) = s {
            let s = s.await.unwrap();
            if s["backlog_events"] == 0 && s["link"] == "up" {
                assert_eq!(s["forwarder"], "running");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the relay did not drain its queue");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap().status(), 200);

    // The good event went; the two others are dead letters, on Kafka and on the site.
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let inventory = env.topic(topics::INVENTORY);
    let forwarded = env.read_topic(&inventory).await;
    assert_eq!(forwarded.len(), 1);
    let dlq = env.topic(topics::DLQ);
    let mut letters = Vec::new();
    for m in env.read_topic(&dlq).await {
        let Record::DeadLetter(d) = codec.decode(&dlq, m.payload()).await.unwrap() else { panic!("not a dead letter") };
        letters.push((d.role.clone(), d.error_class.as_str().to_owned(), d.reason.clone(), d.source_offset));
    }
    letters.sort_by_key(|l| l.3);
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().all(|l| l.0 == "edge"), "{letters:?}");
    assert_eq!((letters[0].1.as_str(), letters[0].3), ("INVALID", 2), "{letters:?}");
    assert!(letters[0].2.contains("atlantis-deep-mine"), "{letters:?}");
    assert_eq!((letters[1].1.as_str(), letters[1].3), ("UNDECODABLE", 3), "{letters:?}");
    let local = std::fs::read_to_string(dir.path().join("queue").join(orelink_edge::DEAD_LETTERS_FILE)).unwrap();
    assert_eq!(local.lines().count(), 2, "{local}");
    assert!(local.contains("atlantis-deep-mine"), "{local}");
}

/// The relay takes events only with its site's key, and only for its site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_wants_its_sites_key_and_takes_its_own_sites_events_only() {
    let (_env, _dir, port, client, _relay) = relay().await;
    let url = format!("http://127.0.0.1:{port}/v1/inventory");
    // Own site with the key: accepted (the first call waits for the relay to listen).
    assert_eq!(post(&client, port, 0).await, 202);
    let r = client.post(&url).json(&event(1)).send().await.unwrap();
    assert_eq!(r.status(), 401, "no key");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "unauthorized");
    assert_eq!(client.post(&url).bearer_auth("another-sites-key").json(&event(1)).send().await.unwrap().status(), 401, "a wrong key");
    let mut elsewhere = event(2);
    elsewhere["site_id"] = json!("hechi-chehe-antimony");
    let r = client.post(&url).bearer_auth(SITE_KEY).json(&elsewhere).send().await.unwrap();
    assert_eq!(r.status(), 403, "another site's stock");
    assert!(r.json::<serde_json::Value>().await.unwrap()["message"].as_str().unwrap().contains("hechi-chehe-antimony"));
    let s = status(&client, port).await;
    assert_eq!(s["accepted"], 1, "only the own site's event was taken: {s}");
}
