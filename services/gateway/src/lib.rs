//! orelink-gateway: HTTP/JSON ingest of the contract's events for enterprises
//! without Kafka clients.
//!
//! `POST /v1/orders`, `/v1/capacity`, `/v1/inventory`, `/v1/shipments`,
//! a carrier's `/v1/transport-offers` (one event, the Avro record's fields
//! as JSON) and `/v1/batch` (many). A request
//! is checked against the Avro schema, the catalog and the topology, every
//! problem reported in one JSON body (422); an API key binds the caller to its
//! identity, so it cannot publish as another buyer, provider, site or carrier
//! (403); the event is produced in Confluent Avro with an idempotent producer
//! and answered `202` with topic, partition and offset once Kafka has it.
//!
//! Delivery: an accepted event is durable in Kafka (acks=all). A retry with
//! the same `Idempotency-Key` (else the same `event_id`) within the TTL gets
//! the first answer back and produces nothing (remembered in Redis).

pub mod keys;
mod openapi;
mod subscribe;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use keys::{KeySpec, Keys};
pub use orelink_ingest::{Kind, Parsed, WireEvent};
use orelink_ingest::{Rejection, avro_documents, parse};
use orelink_codec::Codec;
use orelink_platform::trace::TraceContext;
use orelink_platform::{Config, Reference};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("http: {0}")]
    Http(#[from] std::io::Error),
}

/// Everything a request can be refused for; each maps to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("an API key is required: Authorization: Bearer <key> (or X-Api-Key)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the event is not valid")]
    Invalid(Vec<(String, String)>),
    #[error("a request with this idempotency key is still being processed")]
    InProgress,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("too many requests for this key; retry in {0:.1} s")]
    RateLimited(f64),
    #[error("not found; see /openapi.json")]
    NotFound,
    #[error("method not allowed; see /openapi.json")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InProgress => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid(_) => "invalid",
            ApiError::InProgress => "in_progress",
            ApiError::TooLarge(_) => "too_large",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        if let ApiError::Invalid(problems) = &self {
            body["problems"] = problems.iter().map(|(f, m)| json!({"field": f, "message": m})).collect();
        }
        let mut r = (self.status(), Json(body)).into_response();
        match &self {
            ApiError::Unauthorized => {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited(s) => {
                if let Ok(v) = HeaderValue::from_str(&(s.ceil() as u64).max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        r
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(p) => ApiError::Invalid(p),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

/// Whether the key `who` may publish `event` as itself: the identity its key binds.
fn owned_by(event: &Parsed, who: &KeySpec) -> Result<(), ApiError> {
    let forbid = |what: String| Err(ApiError::Forbidden(format!("this key ({}) may not publish {what}", who.id)));
    match &event.wire {
        WireEvent::Order(w) if who.enterprise.as_deref() != Some(w.buyer_id.as_str()) => forbid(format!("orders as buyer {}", w.buyer_id)),
        WireEvent::Capacity(w) if who.enterprise.as_deref() != Some(w.provider_id.as_str()) => forbid(format!("capacity as provider {}", w.provider_id)),
        WireEvent::Inventory(w) if !who.sites.contains(&w.site_id) => forbid(format!("inventory of site {}", w.site_id)),
        WireEvent::Shipment(w) if who.carrier.as_deref() != Some(w.carrier_id.as_str()) => forbid(format!("shipments as carrier {}", w.carrier_id)),
        WireEvent::TransportOffer(w) if who.carrier.as_deref() != Some(w.carrier_id.as_str()) => forbid(format!("transport offers as carrier {}", w.carrier_id)),
        _ => Ok(()),
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        ApiError::Unavailable(format!("the idempotency store is unavailable: {e}"))
    }
}

pub struct AppState {
    codec: Arc<Codec>,
    reference: Reference,
    producer: FutureProducer,
    redis: redis::aio::ConnectionManager,
    keys: Keys,
    /// Avro schema documents by record name, for the checks and OpenAPI.
    avro: std::collections::BTreeMap<&'static str, Value>,
    prefix: String,
    batch_max: usize,
    max_body: usize,
    idem_ttl: u64,
    timeout: Duration,
    accepted: [AtomicU64; Kind::ALL.len()],
    cfg: Config,
    /// Open subscription streams; bounded by gateway.max_streams.
    streams: Arc<tokio::sync::Semaphore>,
    /// Ends the subscription streams on shutdown (they would hold it up).
    shutdown: CancellationToken,
}

/// Answer for one accepted event.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Accepted {
    pub event_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Builds the role's state: the codec, an idempotent producer, Redis, the keys.
pub async fn state(cfg: &Config, reference: &Reference) -> Result<Arc<AppState>, GatewayError> {
    if cfg.gateway.keys_file.is_empty() {
        return Err(GatewayError::Config("gateway.keys_file is empty: the gateway needs its enterprises' API keys".into()));
    }
    let text = std::fs::read_to_string(&cfg.gateway.keys_file).map_err(|e| GatewayError::Config(format!("{}: {e}", cfg.gateway.keys_file)))?;
    let keys = Keys::parse(&text).map_err(|p| GatewayError::Config(format!("{}: {}", cfg.gateway.keys_file, p.join("; "))))?;
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| GatewayError::Config(e.to_string()))?;
    let producer: FutureProducer = cfg.kafka.producer_config("gateway").set("linger.ms", "2").create()?;
    let redis = redis::Client::open(cfg.redis.url.as_str())?.get_connection_manager().await?;
    let avro = avro_documents(reference);
    orelink_platform::metrics::install();
    Ok(Arc::new(AppState {
        codec,
        reference: reference.clone(),
        producer,
        redis,
        keys,
        avro,
        prefix: format!("{}gateway:idem:", cfg.namespace),
        batch_max: cfg.gateway.batch_max,
        max_body: cfg.gateway.max_body_bytes,
        idem_ttl: cfg.gateway.idempotency_ttl_s,
        timeout: Duration::from_millis(cfg.kafka.message_timeout_ms),
        accepted: Default::default(),
        cfg: cfg.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(cfg.gateway.max_streams)),
        shutdown: CancellationToken::new(),
    }))
}

/// Serves until `cancel`; `bound` learns the address (listen may name port 0).
pub async fn run_with(cfg: &Config, reference: &Reference, cancel: CancellationToken, bound: impl FnOnce(std::net::SocketAddr)) -> Result<(), GatewayError> {
    let state = state(cfg, reference).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.gateway.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "ingest gateway");
    bound(listener.local_addr()?);
    let streams = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            cancel.cancelled().await;
            streams.cancel();
        })
        .await?;
    Ok(())
}

pub async fn run(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<(), GatewayError> {
    run_with(cfg, reference, cancel, |_| {}).await
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new();
    for k in Kind::ALL {
        r = r.route(k.path(), post(move |s: State<Arc<AppState>>, t: Extension<TraceContext>, h: HeaderMap, b: Result<Bytes, BytesRejection>| one(s, t, h, b, k)));
    }
    r.route("/v1/batch", post(batch))
        .route("/v1/subscriptions/shipments", get(subscribe::shipments))
        .route("/v1/subscriptions/allocations", get(subscribe::allocations))
        .route("/openapi.json", get(|State(s): State<Arc<AppState>>| async move { Json(openapi::document(&s.avro, s.batch_max)) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Bodies stop being read at the limit; `body` answers the rejection in JSON.
        .layer(DefaultBodyLimit::max(state.max_body))
        .layer(middleware::from_fn_with_state(state.clone(), measure))
        .layer(middleware::from_fn(traced))
        .with_state(state)
}

/// Each request is a span whose parent is the caller's `traceparent`; the
/// events it produces carry the span's context, and the answer its `traceparent`.
async fn traced(mut req: Request, next: Next) -> Response {
    let (span, trace) = orelink_platform::telemetry::http_hop("gateway", req.method().as_str(), req.uri().path(), req.headers());
    req.extensions_mut().insert(trace);
    let mut resp = next.run(req).instrument(span).await;
    resp.headers_mut().insert(orelink_platform::trace::HEADER, HeaderValue::from_str(&trace.header_value()).expect("traceparent is ASCII"));
    resp
}

pub(crate) const ROUTES: [&str; 11] = [
    "/v1/orders",
    "/v1/capacity",
    "/v1/inventory",
    "/v1/shipments",
    "/v1/batch",
    "/v1/subscriptions/shipments",
    "/v1/subscriptions/allocations",
    "/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

async fn measure(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    let route: &'static str = route.as_deref().and_then(|r| ROUTES.iter().find(|k| **k == r).copied()).unwrap_or("other");
    orelink_platform::metrics::http("gateway", &state.cfg.namespace, route, resp.status().as_u16(), started.elapsed());
    resp
}

fn caller<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a KeySpec, ApiError> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let presented = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok())).ok_or(ApiError::Unauthorized)?;
    state.keys.identify(presented.trim()).ok_or(ApiError::Unauthorized)
}

fn body(state: &AppState, b: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let b = b.map_err(|e| if e.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::TooLarge(state.max_body) } else { ApiError::BadRequest(e.body_text()) })?;
    serde_json::from_slice(&b).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))
}

/// A validated event, ready to produce: its wire record as Avro bytes, key and id.
struct Ready {
    kind: Kind,
    event_id: String,
    key: String,
    bytes: Vec<u8>,
}

/// Schema, contract and identity checks of one event, then its Avro bytes.
async fn validate(state: &AppState, who: &KeySpec, kind: Kind, value: &Value, at: &str) -> Result<Ready, ApiError> {
    let parsed = parse(&state.reference, &state.avro, kind, value, at)?;
    owned_by(&parsed, who)?;
    let bytes = parsed.encode(&state.codec).await.map_err(|e| ApiError::Unavailable(format!("the schema registry is unavailable: {e}")))?;
    Ok(Ready { kind, event_id: parsed.event_id, key: parsed.key, bytes })
}

/// What Redis holds for an idempotency key.
enum Remembered {
    New,
    Done(Accepted),
    Pending,
}

async fn remember(state: &AppState, who: &KeySpec, idem: &str) -> Result<Remembered, ApiError> {
    let mut con = state.redis.clone();
    let key = format!("{}{}:{idem}", state.prefix, who.id);
    // "pending" lives only as long as a produce can take: a gateway that dies
    // mid-request must not leave the key refusing retries for the whole TTL.
    let pending_ttl = (state.timeout.as_secs() * 2).clamp(10, state.idem_ttl);
    let set: Option<String> = redis::cmd("SET").arg(&key).arg("pending").arg("NX").arg("EX").arg(pending_ttl).query_async(&mut con).await?;
    if set.is_some() {
        return Ok(Remembered::New);
    }
    let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
    Ok(match v.as_deref().map(serde_json::from_str::<Accepted>) {
        Some(Ok(a)) => Remembered::Done(a),
        _ => Remembered::Pending,
    })
}

async fn settle(state: &AppState, who: &KeySpec, idem: &str, outcome: Option<&Accepted>) -> Result<(), ApiError> {
    let mut con = state.redis.clone();
    let key = format!("{}{}:{idem}", state.prefix, who.id);
    match outcome {
        Some(a) => redis::cmd("SET").arg(&key).arg(serde_json::to_string(a).expect("serialises")).arg("EX").arg(state.idem_ttl).query_async::<()>(&mut con).await?,
        // Not produced: forget the key, so a retry produces.
        None => redis::cmd("DEL").arg(&key).query_async::<()>(&mut con).await?,
    }
    Ok(())
}

/// Produces one validated event (or returns its first answer on a retry).
async fn produce(state: &AppState, who: &KeySpec, ready: &Ready, idem: &str, trace: &TraceContext) -> Result<(Accepted, bool), ApiError> {
    match remember(state, who, idem).await? {
        Remembered::Done(a) => return Ok((a, true)),
        Remembered::Pending => return Err(ApiError::InProgress),
        Remembered::New => {}
    }
    let topic = state.codec.topic(ready.kind.topic());
    let sent = state.producer.send(FutureRecord::to(&topic).key(&ready.key).payload(&ready.bytes).headers(trace.to_headers()), state.timeout).await;
    match sent {
        Ok(delivery) => {
            let a = Accepted { event_id: ready.event_id.clone(), topic: topic.clone(), partition: delivery.partition, offset: delivery.offset };
            state.accepted[ready.kind as usize].fetch_add(1, Ordering::Relaxed);
            metrics::counter!("orelink_gateway_events_accepted_total", "namespace" => state.cfg.namespace.clone(), "kind" => KIND_LABELS[ready.kind as usize]).increment(1);
            settle(state, who, idem, Some(&a)).await?;
            Ok((a, false))
        }
        Err((e, _)) => {
            settle(state, who, idem, None).await?;
            Err(ApiError::Unavailable(format!("Kafka did not take the event: {e}")))
        }
    }
}

async fn one(State(state): State<Arc<AppState>>, Extension(trace): Extension<TraceContext>, headers: HeaderMap, b: Result<Bytes, BytesRejection>, kind: Kind) -> Result<Response, ApiError> {
    let who = caller(&state, &headers)?;
    state.keys.take(who, 1).map_err(ApiError::RateLimited)?;
    let value = body(&state, b)?;
    let ready = validate(&state, who, kind, &value, "").await?;
    let idem = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_else(|| ready.event_id.clone());
    let (accepted, replay) = produce(&state, who, &ready, &idem, &trace).await?;
    let mut r = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if replay {
        r.headers_mut().insert("idempotent-replay", HeaderValue::from_static("true"));
    }
    Ok(r)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    kind: Kind,
    event: Value,
}

/// Many events: all are validated first, and nothing is produced unless all pass.
async fn batch(State(state): State<Arc<AppState>>, Extension(trace): Extension<TraceContext>, headers: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let who = caller(&state, &headers)?;
    let value = body(&state, b)?;
    let items = value.get("events").and_then(Value::as_array).ok_or_else(|| ApiError::Invalid(vec![("events".into(), "expected an array of {kind, event}".into())]))?;
    if value.as_object().is_some_and(|o| o.len() != 1) {
        return Err(ApiError::Invalid(vec![("body".into(), "only `events` is allowed".into())]));
    }
    if items.is_empty() || items.len() > state.batch_max {
        return Err(ApiError::Invalid(vec![("events".into(), format!("between 1 and {} events", state.batch_max))]));
    }
    state.keys.take(who, items.len() as u32).map_err(ApiError::RateLimited)?;
    let mut problems = Vec::new();
    let mut forbidden = Vec::new();
    let mut ready = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("events[{i}]");
        let item: BatchItem = match serde_json::from_value(item.clone()) {
            Ok(x) => x,
            Err(e) => {
                problems.push((at, format!("expected {{kind: order|capacity|inventory|shipment, event}}: {e}")));
                continue;
            }
        };
        match validate(&state, who, item.kind, &item.event, &format!("{at}.event")).await {
            Ok(r) => ready.push(r),
            Err(ApiError::Invalid(p)) => problems.extend(p),
            Err(ApiError::Forbidden(m)) => forbidden.push(format!("{at}: {m}")),
            Err(e) => return Err(e),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    if !forbidden.is_empty() {
        return Err(ApiError::Forbidden(forbidden.join("; ")));
    }
    let mut out = Vec::with_capacity(ready.len());
    for r in &ready {
        out.push(produce(&state, who, r, &r.event_id, &trace).await?.0);
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": out }))).into_response())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut con = state.redis.clone();
    let redis = redis::cmd("PING").query_async::<String>(&mut con).await.is_ok();
    let p = state.producer.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        p.client().fetch_metadata(None, Duration::from_secs(2)).is_ok_and(|m| !m.brokers().is_empty())
    })
    .await
    .unwrap_or(false);
    let body = Json(json!({"kafka": kafka, "redis": redis}));
    if kafka && redis { (StatusCode::OK, body).into_response() } else { (StatusCode::SERVICE_UNAVAILABLE, body).into_response() }
}

/// The `kind` label of each kind, in `Kind::ALL`'s order.
const KIND_LABELS: [&str; Kind::ALL.len()] = ["order", "capacity", "inventory", "shipment", "transport_offer"];

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, orelink_platform::metrics::CONTENT_TYPE)], orelink_platform::metrics::render())
}

/// Events accepted so far, for tests and the bench.
pub fn accepted_total(state: &AppState) -> u64 {
    state.accepted.iter().map(|a| a.load(Ordering::Relaxed)).sum()
}
