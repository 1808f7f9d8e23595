//! orelink-edge: the relay at a remote site whose network and power drop out.
//!
//! It accepts the contract's events locally (the gateway's HTTP API on the
//! site's LAN, same checks), writes each to a durable local queue (redb; the
//! write transaction is fsync'd before the `202`), and forwards the queue to
//! Kafka whenever the link is up.
//!
//! Delivery: exactly once, in order. Forwarding runs in Kafka transactions
//! (transactional id `orelink-edge-<site>`, the only one the site's principal
//! `orelink-edge-<site>` may use): one batch of queued events plus a progress
//! record (`orelink.edge-progress.<site>.v1`, which no other site's principal
//! may read or write; key = site, value = the last queued
//! sequence number in the batch) commit together, through the hub's one
//! transactional write (`txn_loop::transact`, with the progress record where
//! a consumer's offsets would be). Only then are the entries
//! dropped locally. After a crash (SIGKILL, power) the relay reads its site's
//! last committed progress and drops what Kafka already has, so nothing is
//! sent twice; a new producer with the same transactional id fences and
//! aborts whatever the dead one left open. Order per key follows the queue.
//! The queue is bounded (`edge.max_queue_bytes`): when full, new events get
//! `507` and a clear reason, and nothing already accepted is dropped: an
//! event that no longer passes the contract when it is forwarded (the
//! topology changed while it waited) goes to `orelink.dlq.v1` in the same
//! transaction and to `dead-letters.jsonl` beside the queue. A forwarder that
//! fails restarts with backoff; `/status` and `/healthz` say so meanwhile. A
//! queue file found corrupted at start-up is moved aside (kept), a new queue
//! started, and `/status` names the file.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use orelink_codec::{Codec, Refusal, SourceRef};
use orelink_ingest::{Documents, Kind, Rejection, avro_documents, parse};
use orelink_domain::events::ErrorClass;
use orelink_domain::topology::topics;
use orelink_platform::dlq::now_millis;
use orelink_platform::trace::TraceContext;
use orelink_platform::txn_loop;
use orelink_platform::{Config, Reference};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;


#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("local queue: {0}")]
    Store(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("http: {0}")]
    Http(#[from] std::io::Error),
}

fn store<E: std::fmt::Display>(e: E) -> EdgeError {
    EdgeError::Store(e.to_string())
}

/// One queued event, as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    kind: Kind,
    event: Value,
    /// The accepting request's `traceparent`, so the trace spans the time
    /// queued offline. Entries queued before it existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

pub mod csv;
mod queue;
pub use queue::Queue;

struct AppState {
    queue: Arc<Queue>,
    reference: Reference,
    avro: Documents,
    link_up: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    /// Why the forwarder last failed, while it waits to restart; None while it runs.
    failing: Arc<std::sync::Mutex<Option<String>>>,
    accepted: AtomicU64,
    site: String,
    key_sha256: String,
}

/// Runs the relay until `cancel`: the local API and the forwarder.
pub async fn run_with(cfg: &Config, reference: &Reference, cancel: CancellationToken, bound: impl FnOnce(std::net::SocketAddr)) -> Result<(), EdgeError> {
    let e = &cfg.edge;
    if e.site.is_empty() || reference.topology.site(&e.site).is_none() {
        return Err(EdgeError::Config(format!("edge.site {:?}: set it to this relay's site id from topology/clusters.toml", e.site)));
    }
    if e.dir.is_empty() {
        return Err(EdgeError::Config("edge.dir is empty: the relay needs a directory for its durable queue".into()));
    }
    if !orelink_platform::config::is_sha256_hex(&e.key_sha256) {
        return Err(EdgeError::Config("edge.key_sha256: set it to the SHA-256 (64 lower-case hex digits) of the site's key; the relay takes no event without that key".into()));
    }
    let queue = Arc::new(Queue::open(std::path::Path::new(&e.dir), e.max_queue_bytes)?);
    let queue_for_watch = queue.clone();
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| EdgeError::Config(e.to_string()))?;
    let link_up = Arc::new(AtomicBool::new(false));
    let forwarded = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(std::sync::Mutex::new(None));
    let state = Arc::new(AppState {
        failing: failing.clone(),
        queue: queue.clone(),
        reference: reference.clone(),
        avro: avro_documents(reference),
        link_up: link_up.clone(),
        forwarded: forwarded.clone(),
        accepted: AtomicU64::new(0),
        site: e.site.clone(),
        key_sha256: e.key_sha256.clone(),
    });
    let listener = tokio::net::TcpListener::bind(&e.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, site = e.site, "edge relay");
    bound(listener.local_addr()?);
    let forwarder = {
        let (cfg, r, c) = (cfg.clone(), reference.clone(), cancel.clone());
        std::thread::Builder::new()
            .name("edge-forwarder".into())
            .spawn(move || {
                // A forwarder that fails (its store, say) restarts with backoff;
                // meanwhile /status and /healthz say so, and the API keeps queueing.
                let mut backoff = Duration::from_secs(1);
                loop {
                    match forward(&cfg, &r, &codec, &queue, &link_up, &forwarded, &failing, &c) {
                        Err(e) if !c.is_cancelled() => {
                            tracing::error!(error = %e, retry_in_s = backoff.as_secs(), "the forwarder failed; restarting it");
                            link_up.store(false, Ordering::Relaxed);
                            *failing.lock().expect("not poisoned") = Some(e.to_string());
                            sleep(&c, backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                        }
                        done => return done,
                    }
                }
            })
            .map_err(EdgeError::Http)?
    };
    if !e.watch_dir.is_empty() {
        let (dir, q, r, c, site) = (std::path::PathBuf::from(&e.watch_dir), queue_for_watch.clone(), reference.clone(), cancel.clone(), e.site.clone());
        std::fs::create_dir_all(&dir).map_err(store)?;
        tokio::spawn(async move {
            // Parsed once; each scan borrows it (the documents are the four schemas).
            let avro = Arc::new(avro_documents(&r));
            while !c.is_cancelled() {
                let (dir, q, r, avro2, site) = (dir.clone(), q.clone(), r.clone(), avro.clone(), site.clone());
                match tokio::task::spawn_blocking(move || csv::scan(&dir, &q, &r, &avro2, &site)).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "watched folder"),
                    Err(e) => tracing::error!(error = %e, "watched folder scan panicked"),
                    Ok(Ok(_)) => {}
                }
                tokio::select! {
                    _ = c.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
    let app = Router::new()
        .route("/v1/orders", post(|s: State<Arc<AppState>>, t: Extension<TraceContext>, h: axum::http::HeaderMap, b: Result<Bytes, BytesRejection>| accept(s, t, h, b, Kind::Order)))
        .route("/v1/capacity", post(|s: State<Arc<AppState>>, t: Extension<TraceContext>, h: axum::http::HeaderMap, b: Result<Bytes, BytesRejection>| accept(s, t, h, b, Kind::Capacity)))
        .route("/v1/inventory", post(|s: State<Arc<AppState>>, t: Extension<TraceContext>, h: axum::http::HeaderMap, b: Result<Bytes, BytesRejection>| accept(s, t, h, b, Kind::Inventory)))
        .route("/v1/shipments", post(|s: State<Arc<AppState>>, t: Extension<TraceContext>, h: axum::http::HeaderMap, b: Result<Bytes, BytesRejection>| accept(s, t, h, b, Kind::Shipment)))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn(traced))
        .with_state(state);
    let c = cancel.clone();
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { c.cancelled().await }).await;
    cancel.cancel();
    let forwarded = tokio::task::spawn_blocking(move || forwarder.join()).await;
    served?;
    match forwarded {
        Ok(Ok(r)) => r,
        _ => Err(EdgeError::Config("the forwarder thread panicked".into())),
    }
}

/// What the relay's API answers besides success; JSON bodies in the gateway's shape.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the event is not valid")]
    Invalid(Vec<(String, String)>),
    #[error("not found")]
    NotFound,
    #[error("the relay needs the site's key (Authorization: Bearer)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(p) => ApiError::Invalid(p),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let mut body = json!({"error": code, "message": self.to_string()});
        if let ApiError::Invalid(problems) = &self {
            body["problems"] = problems.iter().map(|(f, m)| json!({"field": f, "message": m})).collect();
        }
        (status, Json(body)).into_response()
    }
}

/// Each request is a span whose parent is the caller's `traceparent`; the
/// answer carries the span's, and so does the event when it is forwarded.
async fn traced(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (span, trace) = orelink_platform::telemetry::http_hop("edge", req.method().as_str(), req.uri().path(), req.headers());
    req.extensions_mut().insert(trace);
    let mut resp = next.run(req).instrument(span).await;
    resp.headers_mut().insert(orelink_platform::trace::HEADER, axum::http::HeaderValue::from_str(&trace.header_value()).expect("traceparent is ASCII"));
    resp
}

/// The sites an event speaks for: where stock or capacity is, where an order
/// is delivered, where a shipment leaves or arrives.
pub(crate) fn sites_of(kind: Kind, event: &Value) -> Vec<&str> {
    let fields: &[&str] = match kind {
        Kind::Inventory | Kind::Capacity => &["site_id"],
        Kind::Order => &["destination_site"],
        Kind::Shipment => &["from_site", "to_site"],
        // Not a site's: no route of the relay takes one, so it speaks for no site.
        Kind::TransportOffer => &[],
    };
    fields.iter().filter_map(|f| event[*f].as_str()).collect()
}

/// Whether a request carries the site's key (compared as SHA-256 digests).
fn authorised(headers: &axum::http::HeaderMap, key_sha256: &str) -> bool {
    let Some(key) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else { return false };
    orelink_platform::config::sha256_hex(key.trim()) == key_sha256
}

async fn accept(State(state): State<Arc<AppState>>, Extension(trace): Extension<TraceContext>, headers: axum::http::HeaderMap, b: Result<Bytes, BytesRejection>, kind: Kind) -> Result<Response, ApiError> {
    if !authorised(&headers, &state.key_sha256) {
        return Err(ApiError::Unauthorized);
    }
    let b = b.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let value: Value = serde_json::from_slice(&b).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let parsed = parse(&state.reference, &state.avro, kind, &value, "")?;
    // A relay speaks for its own site only: one site's key cannot send another's stock, capacity or orders.
    let sites = sites_of(kind, &value);
    if !sites.contains(&state.site.as_str()) {
        return Err(ApiError::Forbidden(format!("this relay serves site {}; the event is for {}", state.site, sites.join(" -> "))));
    }
    let entry = serde_json::to_vec(&Entry { kind, event: value, traceparent: Some(trace.header_value()) }).expect("serialises");
    let queue = state.queue.clone();
    let seq = tokio::task::spawn_blocking(move || queue.push(&entry))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let Some(seq) = seq else {
        let body = json!({"error": "queue_full", "message": "the relay's local queue is full: nothing was accepted; retry once the link has drained it"});
        return Ok((StatusCode::INSUFFICIENT_STORAGE, Json(body)).into_response());
    };
    state.accepted.fetch_add(1, Ordering::Relaxed);
    Ok((StatusCode::ACCEPTED, Json(json!({"event_id": parsed.event_id, "queued": seq}))).into_response())
}

/// 200 while the forwarder runs (link up or down: the queue holds), 503 while it has failed.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.failing.lock().expect("not poisoned").clone() {
        None => Json(json!({"status": "ok"})).into_response(),
        Some(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "failing", "forwarder": e}))).into_response(),
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let (backlog, bytes) = state.queue.backlog().map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let forwarder = match state.failing.lock().expect("not poisoned").clone() {
        None => json!("running"),
        Some(e) => json!({"failing": e}),
    };
    // A queue file found corrupted at start-up stays named here until the relay restarts.
    let store = match state.queue.moved_aside() {
        None => json!("ok"),
        Some(p) => json!({"corrupted_file_moved_aside": p.display().to_string()}),
    };
    Ok(Json(json!({
        "site": state.site,
        "forwarder": forwarder,
        "store": store,
        "link": if state.link_up.load(Ordering::Relaxed) { "up" } else { "down" },
        "backlog_events": backlog,
        "backlog_bytes": bytes,
        "accepted": state.accepted.load(Ordering::Relaxed),
        "forwarded": state.forwarded.load(Ordering::Relaxed),
    })))
}

/// The relay's figures, set as they stand now, with everything else this
/// process records (one relay per process: no labels).
async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    orelink_platform::metrics::install();
    let (backlog, bytes) = state.queue.backlog().map_err(|e| ApiError::Unavailable(e.to_string()))?;
    metrics::gauge!("orelink_edge_backlog_events").set(backlog as f64);
    metrics::gauge!("orelink_edge_backlog_bytes").set(bytes as f64);
    metrics::gauge!("orelink_edge_link_up").set(u8::from(state.link_up.load(Ordering::Relaxed)));
    metrics::counter!("orelink_edge_events_accepted_total").absolute(state.accepted.load(Ordering::Relaxed));
    metrics::counter!("orelink_edge_events_forwarded_total").absolute(state.forwarded.load(Ordering::Relaxed));
    Ok(([(axum::http::header::CONTENT_TYPE, orelink_platform::metrics::CONTENT_TYPE)], orelink_platform::metrics::render()).into_response())
}

/// The last sequence number this site committed to Kafka, from its progress records.
fn committed_progress(cfg: &Config, topic: &str, site: &str) -> Result<Option<u64>, EdgeError> {
    let c: BaseConsumer = cfg
        .kafka
        .reader_config("edge-progress", &format!("{}orelink-edge-{site}-progress", cfg.namespace))
        .create()?;
    let probe: BaseConsumer = cfg.kafka.client_config("edge-probe").create()?;
    let md = probe.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut last = None;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = probe.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Offset(low))?;
            ends.insert(p.id(), high);
        }
    }
    if ends.is_empty() {
        return Ok(None);
    }
    c.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if m.key() == Some(site.as_bytes()) {
                    last = m.payload().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()).or(last);
                }
                if ends.get(&m.partition()).is_some_and(|h| m.offset() + 2 >= *h) {
                    ends.remove(&m.partition());
                }
            }
            _ => {
                let pos = c.position()?;
                ends.retain(|p, h| !pos.find_partition(topic, *p).is_some_and(|e| matches!(e.offset(), rdkafka::Offset::Offset(o) if o >= *h)));
            }
        }
    }
    Ok(last)
}

/// The forwarder: batches from the queue's front, each in one Kafka
/// transaction with the site's progress; retries with backoff while the link is down.
#[allow(clippy::too_many_arguments)]
fn forward(
    cfg: &Config,
    reference: &Reference,
    codec: &Codec,
    queue: &Queue,
    link_up: &AtomicBool,
    forwarded: &AtomicU64,
    failing: &std::sync::Mutex<Option<String>>,
    cancel: &CancellationToken,
) -> Result<(), EdgeError> {
    let site = cfg.edge.site.clone();
    let avro = avro_documents(reference);
    // The site's own progress topic: its principal can write no other site's.
    let progress_topic = format!("{}{}", cfg.namespace, topics::edge_progress(&site));
    // The transaction's outputs: one per kind of event, in `Kind::SITE`'s order, then the dead letters.
    let outputs: Vec<String> = Kind::SITE.iter().map(|k| codec.topic(k.topic())).chain([codec.dlq_topic()]).collect();
    let dead_file = std::path::Path::new(&cfg.edge.dir).join(DEAD_LETTERS_FILE);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(EdgeError::Http)?;
    let txn_timeout = Duration::from_secs(30);
    let mut backoff = Duration::from_millis(200);
    // (Re)connects: fences any zombie with this site's transactional id, then
    // drops what its last committed batch already put in Kafka.
    let connect = || -> Result<ThreadedProducer<DefaultProducerContext>, EdgeError> {
        let p: ThreadedProducer<DefaultProducerContext> = cfg
            .kafka
            .transactional_config("edge", &format!("{}orelink-edge-{site}", cfg.namespace), txn_timeout)
            .set("linger.ms", "5")
            // A remote uplink: back off like librdkafka's default, not the hub's 5 ms.
            .set("retry.backoff.ms", "100")
            // Whole buffered batches over a weak uplink: bytes matter more than CPU here.
            .set("compression.type", "zstd")
            .create()?;
        p.init_transactions(txn_timeout)?;
        if let Some(done) = committed_progress(cfg, &progress_topic, &site)? {
            let n = queue.drop_through(done)?;
            if n > 0 {
                tracing::info!(through = done, dropped = n, "already in Kafka before the restart: dropped locally");
            }
        }
        Ok(p)
    };
    let mut producer = None;
    while !cancel.is_cancelled() {
        if producer.is_none() {
            match connect() {
                Ok(p) => {
                    producer = Some(p);
                    *failing.lock().expect("not poisoned") = None;
                    link_up.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    link_up.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "link down");
                    sleep(cancel, backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        let batch = queue.front(cfg.edge.batch_max)?;
        if batch.is_empty() {
            sleep(cancel, Duration::from_millis(100));
            continue;
        }
        let p = producer.as_ref().expect("connected above");
        let last = batch.last().map(|(s, _)| *s).expect("not empty");
        let mut refused: Vec<Refused> = Vec::new();
        let result = (|| -> Result<(), EdgeError> {
            let mut records = Vec::with_capacity(batch.len());
            refused.clear();
            for (seq, raw) in &batch {
                // Checked when accepted; checked again in case the topology changed
                // since. What no longer passes is dead-lettered in the same
                // transaction, never dropped: nothing accepted is lost.
                let entry = match serde_json::from_slice::<Entry>(raw) {
                    Ok(e) => e,
                    Err(e) => {
                        refused.push(Refused { seq: *seq, topic: "unknown".into(), class: ErrorClass::Undecodable, reason: format!("the queued entry does not decode: {e}"), raw: raw.clone() });
                        continue;
                    }
                };
                let parsed = match parse(reference, &avro, entry.kind, &entry.event, "") {
                    Ok(p) => p,
                    Err(e) => {
                        refused.push(Refused { seq: *seq, topic: codec.topic(entry.kind.topic()), class: ErrorClass::Invalid, reason: e.reason(), raw: raw.clone() });
                        continue;
                    }
                };
                let payload = rt.block_on(parsed.encode(codec)).map_err(|e| EdgeError::Config(e.to_string()))?;
                let output = Kind::SITE.iter().position(|k| *k == parsed.kind).expect("every kind has an output");
                records.push(txn_loop::Record { output, key: Arc::from(parsed.key.as_str()), payload, trace: entry.traceparent.as_deref().and_then(TraceContext::parse).unwrap_or_else(TraceContext::root) });
            }
            for r in &refused {
                tracing::error!(seq = r.seq, class = r.class.as_str(), reason = %r.reason, "a queued event no longer passes the contract: dead-lettered");
                let source = SourceRef { topic: &r.topic, partition: -1, offset: r.seq as i64, key: Some(site.as_bytes()), value: Some(&r.raw) };
                let letter = Codec::dead_letter(&source, &Refusal { class: r.class, reason: r.reason.clone() }, now_millis(), "edge");
                let payload = rt.block_on(codec.encode(&codec.dlq_topic(), &letter)).map_err(|e| EdgeError::Config(e.to_string()))?;
                records.push(txn_loop::Record { output: DLQ_OUTPUT, key: Arc::from(r.topic.as_str()), payload, trace: TraceContext::root() });
            }
            let value = last.to_string();
            let position = txn_loop::Position::Progress { topic: &progress_topic, key: &site, value: value.as_bytes() };
            txn_loop::transact(p, &outputs, &records, position, txn_timeout)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                // Kept on the site too, where its operator looks first.
                if !refused.is_empty() {
                    append_dead_letters(&dead_file, &site, &refused)?;
                }
                queue.drop_through(last)?;
                forwarded.fetch_add(batch.len() as u64, Ordering::Relaxed);
                link_up.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "forwarding failed; reconnecting");
                link_up.store(false, Ordering::Relaxed);
                if let Some(p) = producer.take() {
                    let _ = p.abort_transaction(Duration::from_secs(5));
                }
                sleep(cancel, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    Ok(())
}

/// The transaction output index of `orelink.dlq.v1` (after the four kinds).
const DLQ_OUTPUT: usize = Kind::SITE.len();

/// Where a relay keeps, beside its queue, every event it dead-lettered (JSON lines).
pub const DEAD_LETTERS_FILE: &str = "dead-letters.jsonl";

/// A queued event that no longer passes the contract.
struct Refused {
    seq: u64,
    topic: String,
    class: ErrorClass,
    reason: String,
    raw: Vec<u8>,
}

fn append_dead_letters(path: &std::path::Path, site: &str, refused: &[Refused]) -> Result<(), EdgeError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(store)?;
    for r in refused {
        let entry: Value = serde_json::from_slice(&r.raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.raw).into_owned()));
        let line = json!({"site": site, "seq": r.seq, "topic": r.topic, "class": r.class.as_str(), "reason": r.reason, "entry": entry});
        writeln!(f, "{line}").map_err(store)?;
    }
    f.sync_all().map_err(store)
}

fn sleep(cancel: &CancellationToken, d: Duration) {
    let until = std::time::Instant::now() + d;
    while !cancel.is_cancelled() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}
