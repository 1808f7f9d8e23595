//! Traces exported over OTLP to a real receiver (Jaeger, built by tests/run):
//! an order posted to the gateway with a `traceparent` becomes one trace in
//! Jaeger, gateway -> router -> matcher, each span the child of the one
//! before, and the allocation on Kafka carries the matcher's span; the edge
//! relay answers with its own span's `traceparent` and forwards the event
//! with it after queueing.

use orelink_domain::topology::topics;
use orelink_platform::trace::TraceContext;
use orelink_tests::{KillOnDrop, TestEnv, capacity_wire, free_ports, order_wire, orelink_bin};
use rdkafka::Message;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = "key-trace-buyer";

fn jaeger_bin() -> PathBuf {
    let bin = std::env::var_os("ORELINK_JAEGER").map(PathBuf::from).expect("ORELINK_JAEGER names the Jaeger binary (tests/run builds it from tests/jaeger/go.mod)");
    assert!(bin.exists(), "{} is missing: tests/run builds it", bin.display());
    bin
}

/// Jaeger with in-memory storage: OTLP/HTTP in on `otlp`, its query API on `query`.
fn start_jaeger(dir: &Path, otlp: u16, query: u16, grpc: u16) -> KillOnDrop {
    let config = format!(
        r#"
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}}
  telemetry:
    metrics: {{level: none}}
    logs: {{level: warn}}
extensions:
  jaeger_storage:
    backends:
      mem: {{memory: {{max_traces: 10000}}}}
  jaeger_query:
    storage: {{traces: mem}}
    http: {{endpoint: "127.0.0.1:{query}"}}
    grpc: {{endpoint: "127.0.0.1:{grpc}"}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
processors:
  batch: {{timeout: 100ms}}
exporters:
  jaeger_storage_exporter: {{trace_storage: mem}}
"#
    );
    let path = dir.join("jaeger.yaml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("jaeger.log")).unwrap();
    KillOnDrop(Command::new(jaeger_bin()).arg("--config").arg(&path).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("jaeger starts"))
}

/// `orelink run <role>` exporting its spans to `otlp`.
fn start_role(env: &TestEnv, role: &str, otlp: u16, extra: &[(&str, String)], log: &Path) -> KillOnDrop {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    KillOnDrop(
        Command::new(orelink_bin())
            .args(["run", role])
            .envs(env.process_env(&format!("trace-{role}")))
            .env("ORELINK__TELEMETRY__OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp}"))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("orelink starts"),
    )
}

async fn wait_http(url: &str, what: &str, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not answer at {url}; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One span of a Jaeger trace: its service, operation, id and parent.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    operation: String,
    id: String,
    parent: Option<String>,
}

/// The spans Jaeger holds for `trace_id` (none until the exports arrive).
async fn jaeger_trace(query: u16, trace_id: &str) -> Vec<Span> {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{query}/api/traces/{trace_id}")).await else { return vec![] };
    let Ok(body) = r.json::<Value>().await else { return vec![] };
    let Some(trace) = body["data"].as_array().and_then(|d| d.first()) else { return vec![] };
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Span {
            service: trace["processes"][s["processID"].as_str().unwrap()]["serviceName"].as_str().unwrap().to_owned(),
            operation: s["operationName"].as_str().unwrap().to_owned(),
            id: s["spanID"].as_str().unwrap().to_owned(),
            parent: s["references"].as_array().and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF")).map(|r| r["spanID"].as_str().unwrap().to_owned()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_is_one_trace_from_the_gateway_to_its_allocation_in_jaeger() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("roles.log");
    let [otlp, query, grpc, gateway_port] = free_ports::<4>();
    let _jaeger = start_jaeger(dir.path(), otlp, query, grpc);
    wait_http(&format!("http://127.0.0.1:{query}/api/services"), "jaeger", &dir.path().join("jaeger.log")).await;

    let keys = dir.path().join("keys.toml");
    let buyer = order_wire(1);
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nid = \"trace-buyer\"\nsha256 = \"{}\"\nenterprise = \"{}\"\nsites = [\"{}\"]\nrate_per_s = 100\nburst = 100\n",
            orelink_gateway::keys::digest(KEY),
            buyer.buyer_id,
            buyer.destination_site
        ),
    )
    .unwrap();
    let _matcher = start_role(&env, "matcher", otlp, &[], &log);
    let _gateway = start_role(
        &env,
        "gateway",
        otlp,
        &[("ORELINK__GATEWAY__LISTEN", format!("127.0.0.1:{gateway_port}")), ("ORELINK__GATEWAY__KEYS_FILE", keys.display().to_string())],
        &log,
    );
    wait_http(&format!("http://127.0.0.1:{gateway_port}/healthz"), "the gateway", &log).await;

    // Capacity first, as a Kafka client writes it (the router forwards it to
    // the market topic); once there, the order is what causes the allocation.
    let cap = capacity_wire(1, "nanning-jiangnan-processing", "nanning", "AL-INGOT-AL99.85", 400_000, 20_300);
    let capacity_topic = env.topic(topics::CAPACITY);
    env.produce(&capacity_topic, "AL-INGOT", &codec.encode(&capacity_topic, &cap).await.unwrap()).await;
    let input = env.topic(topics::MARKET);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.read_topic(&input).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the capacity never reached the market topic; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The caller's own trace: the gateway's span must be its child.
    let caller = TraceContext::root();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{gateway_port}/v1/orders"))
        .bearer_auth(KEY)
        .header("traceparent", caller.header_value())
        .json(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let answered = resp.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse).expect("the gateway answers with a traceparent");
    assert_eq!(answered.trace_id, caller.trace_id, "the gateway continues the caller's trace");
    assert_ne!(answered.span_id, caller.span_id, "with a span of its own");

    // The order on Kafka (the market topic, after the routed capacity) carries the gateway's span.
    let market = env.read_topic(&input).await;
    let on_kafka = market.iter().filter(|m| m.key() == Some(&b"AL-INGOT"[..])).filter_map(|m| TraceContext::from_headers(m.headers())).find(|t| t.trace_id == caller.trace_id).expect("the produced order has a traceparent");
    assert_eq!(on_kafka, answered, "what the gateway produced carries the span it answered with");

    // The allocation carries the matcher's span, in the caller's trace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let allocation = loop {
        if let Some(t) = env.read_topic(&env.topic(topics::ALLOCATIONS)).await.iter().find_map(|m| TraceContext::from_headers(m.headers())) {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no allocation; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(allocation.trace_id, caller.trace_id);

    // Jaeger has the whole path: gateway -> matcher (the gateway writes the market topic).
    let trace_id = caller.trace_id_hex();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans = jaeger_trace(query, &trace_id).await;
        if spans.iter().any(|s| s.id == allocation.span_id_hex()) && spans.iter().any(|s| s.id == answered.span_id_hex()) {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "Jaeger never had the trace's spans: {spans:?}; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let by_id = |id: &str| spans.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no span {id} in {spans:?}"));
    let matched = by_id(&allocation.span_id_hex());
    assert_eq!((matched.service.as_str(), matched.operation.as_str()), ("orelink-matcher", "match"));
    let accepted = by_id(matched.parent.as_deref().expect("the matcher's span has a parent"));
    assert_eq!(accepted.id, answered.span_id_hex(), "the gateway's span is the matcher's parent");
    assert_eq!((accepted.service.as_str(), accepted.operation.as_str()), ("orelink-gateway", "POST /v1/orders"));
    assert_eq!(accepted.parent.as_deref(), Some(caller.span_id_hex().as_str()), "the gateway's span is the caller's child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_relay_answers_with_its_span_and_forwards_the_event_with_it() {
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("edge.log");
    let [otlp, query, grpc, edge_port] = free_ports::<4>();
    let _jaeger = start_jaeger(dir.path(), otlp, query, grpc);
    wait_http(&format!("http://127.0.0.1:{query}/api/services"), "jaeger", &dir.path().join("jaeger.log")).await;
    let site = "hechi-dachang-tin";
    let _edge = start_role(
        &env,
        "edge",
        otlp,
        &[
            ("ORELINK__EDGE__DIR", dir.path().join("queue").display().to_string()),
            ("ORELINK__EDGE__WATCH_DIR", dir.path().join("inbox").display().to_string()),
            ("ORELINK__EDGE__SITE", site.to_owned()),
            ("ORELINK__EDGE__LISTEN", format!("127.0.0.1:{edge_port}")),
            ("ORELINK__EDGE__KEY_SHA256", orelink_gateway::keys::digest("trace-relay-key")),
        ],
        &log,
    );
    wait_http(&format!("http://127.0.0.1:{edge_port}/healthz"), "the edge relay", &log).await;

    let caller = TraceContext::root();
    let event = serde_json::json!({
        "event_id": "edge-trace-1", "event_time": 1_795_000_000_000i64, "site_id": site,
        "product_code": "SN-INGOT-SN99.90", "on_hand_kg": 120_000, "reserved_kg": 0,
    });
    let resp = reqwest::Client::new().post(format!("http://127.0.0.1:{edge_port}/v1/inventory")).bearer_auth("trace-relay-key").header("traceparent", caller.header_value()).json(&event).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let answered = resp.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse).expect("the relay answers with a traceparent");
    assert_eq!(answered.trace_id, caller.trace_id);
    assert_ne!(answered.span_id, caller.span_id);

    // Forwarded from the queue, the event carries the accepting request's span.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let forwarded = loop {
        if let Some(t) = env.read_topic(&env.topic(topics::INVENTORY)).await.iter().find_map(|m| TraceContext::from_headers(m.headers())) {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing forwarded; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(forwarded, answered);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let span = loop {
        if let Some(s) = jaeger_trace(query, &caller.trace_id_hex()).await.into_iter().find(|s| s.id == answered.span_id_hex()) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "Jaeger never had the relay's span; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!((span.service.as_str(), span.operation.as_str()), ("orelink-edge", "POST /v1/inventory"));
    assert_eq!(span.parent.as_deref(), Some(caller.span_id_hex().as_str()));
}
