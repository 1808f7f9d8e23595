//! The view's HTTP surface: the operators' JSON API (bearer token), live
//! updates over SSE, the dashboard, the OpenAPI document, health and metrics.
//!
//! A token is region-wide or scoped to clusters (`view.operator_token_digests`).
//! A scoped token sees its clusters' cells, orders and series (403 for
//! another's), the allocations its clusters take part in, and other clusters'
//! orders only as shared with its clusters, which the sharing policy has
//! already redacted (no buyer id or price cap unless the policy allows).

use crate::materialise::Change;
use crate::metrics::Metrics;
use crate::store::{Cell, InPeriod, Period, Store};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orelink_domain::Topology;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::broadcast;

const DASHBOARD: &str = include_str!("dashboard.html");

pub struct AppState {
    pub store: Store,
    pub topology: Arc<Topology>,
    pub families: Vec<String>,
    /// family -> (English, Chinese) name, for labels.
    pub family_names: std::collections::BTreeMap<String, (String, String)>,
    pub tokens: Vec<orelink_platform::config::OperatorToken>,
    pub changes: broadcast::Sender<Change>,
    pub metrics: Arc<Metrics>,
    /// Set once the materialiser first caught up with its inputs.
    pub ready: AtomicBool,
}

/// Everything the API can answer besides data; each maps to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("an operator token is required (Authorization: Bearer <token>; ?token= on the event stream only)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the view store is unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), Json(json!({"error": self.code(), "message": self.to_string()}))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{cluster}", get(cluster))
        .route("/api/v1/cells", get(cells))
        .route("/api/v1/orders/open", get(open_orders))
        .route("/api/v1/orders/shared", get(shared_orders))
        .route("/api/v1/orders/{order_id}/allocations", get(order_allocations))
        .route("/api/v1/allocations/latest", get(latest_allocations))
        .route("/api/v1/timeseries", get(timeseries))
        .route("/api/v1/lanes", get(lanes))
        .route("/api/v1/outlook", get(outlook))
        .route("/api/v1/dead-letters", get(dead_letters))
        .route("/api/v1/stream", get(stream))
        .layer(middleware::from_fn_with_state(state.clone(), authorise));
    Router::new()
        .merge(api)
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint; see /openapi.json".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), measure))
        .with_state(state)
}

/// Latency per route template (never per raw path: bounded label values).
async fn measure(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    let route: &'static str = match route.as_deref() {
        Some(r) => ROUTES.iter().find(|k| **k == r).copied().unwrap_or("other"),
        None => "unmatched",
    };
    state.metrics.http(route, resp.status().as_u16(), started.elapsed());
    resp
}

pub(crate) const ROUTES: [&str; 17] = [
    "/api/v1/clusters",
    "/api/v1/clusters/{cluster}",
    "/api/v1/cells",
    "/api/v1/orders/open",
    "/api/v1/orders/shared",
    "/api/v1/orders/{order_id}/allocations",
    "/api/v1/allocations/latest",
    "/api/v1/timeseries",
    "/api/v1/lanes",
    "/api/v1/outlook",
    "/api/v1/dead-letters",
    "/api/v1/stream",
    "/",
    "/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// What a token may see: every cluster, or these.
#[derive(Debug, Clone)]
pub struct Scope(Option<Arc<std::collections::BTreeSet<String>>>);

impl Scope {
    pub fn everything() -> Scope {
        Scope(None)
    }

    pub fn clusters<'a>(clusters: impl IntoIterator<Item = &'a str>) -> Scope {
        Scope(Some(Arc::new(clusters.into_iter().map(str::to_owned).collect())))
    }

    pub fn sees(&self, cluster: &str) -> bool {
        self.0.as_ref().is_none_or(|c| c.contains(cluster))
    }

    fn check(&self, cluster: &str) -> Result<(), ApiError> {
        if self.sees(cluster) { Ok(()) } else { Err(ApiError::Forbidden(format!("this token does not see cluster {cluster:?}"))) }
    }

    /// An allocation is seen by the clusters of its order and of its capacity.
    pub fn sees_allocation(&self, a: &serde_json::Value) -> bool {
        self.0.is_none() || ["order_cluster", "capacity_cluster"].iter().any(|k| a.get(k).and_then(|c| c.as_str()).is_some_and(|c| self.sees(c)))
    }
}

/// Bearer token from the header; only the event stream may pass it as
/// `?token=` (browsers' EventSource cannot set headers), since URLs end up in
/// logs and histories. Checked by its digest against `view.operator_token_digests`;
/// the token's scope goes with the request.
async fn authorise(State(state): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<TokenQuery>, mut req: Request, next: Next) -> Response {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::to_owned);
    let in_query = q.token.filter(|_| req.uri().path() == "/api/v1/stream");
    let presented = bearer.or(in_query).map(|p| orelink_platform::config::sha256_hex(p.trim()));
    let token = presented.and_then(|p| state.tokens.iter().find(|t| constant_time_eq(t.digest.as_bytes(), p.as_bytes())));
    let Some(token) = token else { return ApiError::Unauthorized.into_response() };
    let scope = match &token.clusters {
        None => Scope::everything(),
        Some(c) => Scope::clusters(c.iter().map(String::as_str)),
    };
    req.extensions_mut().insert(scope);
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn known_cluster(state: &AppState, id: &str) -> Result<(), ApiError> {
    state.topology.cluster(id).map(|_| ()).ok_or_else(|| ApiError::NotFound(format!("no cluster {id:?}")))
}

fn known_family(state: &AppState, f: &str) -> Result<(), ApiError> {
    if state.families.iter().any(|x| x == f) { Ok(()) } else { Err(ApiError::NotFound(format!("no product family {f:?}"))) }
}

/// `?period=24h|7d|all` or `?since=YYYY-MM-DD`: the event-time period the
/// `in_period` totals cover (declared, allocated, demand placed); the other
/// figures are the state as of the view's clock, or since the first event.
#[derive(Deserialize)]
struct PeriodQuery {
    period: Option<String>,
    since: Option<String>,
}

impl PeriodQuery {
    fn parse(&self) -> Result<Period, ApiError> {
        period_of(&self.period, &self.since)
    }
}

fn period_of(period: &Option<String>, since: &Option<String>) -> Result<Period, ApiError> {
    Period::parse(period.as_deref(), since.as_deref()).map_err(ApiError::BadRequest)
}

/// A cell as served: its figures and what it had within the period.
fn with_period(cell: &Cell, in_period: InPeriod) -> serde_json::Value {
    let mut v = serde_json::to_value(cell).expect("a cell serialises");
    v["in_period"] = json!(in_period);
    v
}

async fn clusters(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Query(pq): Query<PeriodQuery>) -> ApiResult<serde_json::Value> {
    let period = pq.parse()?;
    let cells = state.store.cells().await?;
    let (covered, in_period) = state.store.in_period(period).await?;
    let out: Vec<serde_json::Value> = state
        .topology
        .clusters
        .iter()
        .filter(|c| scope.sees(c.id.as_str()))
        .map(|c| {
            let mine: Vec<Cell> = cells.iter().filter(|x| x.cluster == c.id.as_str()).cloned().collect();
            let period_total = InPeriod::total(in_period.iter().filter(|((cl, _), _)| cl == c.id.as_str()).map(|(_, v)| *v));
            json!({"id": c.id.as_str(), "name": c.name, "name_zh": c.name_zh, "families": c.families, "totals": with_period(&Cell::total(c.id.as_str(), &mine), period_total)})
        })
        .collect();
    let names: serde_json::Map<String, serde_json::Value> =
        state.family_names.iter().map(|(f, (en, zh))| (f.clone(), json!({"name": en, "name_zh": zh}))).collect();
    Ok(Json(json!({"clusters": out, "family_names": names, "period": covered})))
}

async fn cluster(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Path(id): Path<String>, Query(pq): Query<PeriodQuery>) -> ApiResult<serde_json::Value> {
    known_cluster(&state, &id)?;
    scope.check(&id)?;
    let period = pq.parse()?;
    let c = state.topology.cluster(&id).expect("checked");
    let mine: Vec<Cell> = state.store.cells().await?.iter().filter(|x| x.cluster == id).cloned().collect();
    let (covered, in_period) = state.store.in_period(period).await?;
    let of = |cell: &Cell| in_period.get(&(cell.cluster.clone(), cell.family.clone())).copied().unwrap_or_default();
    let families: Vec<serde_json::Value> = mine.iter().map(|cell| with_period(cell, of(cell))).collect();
    let total = InPeriod::total(mine.iter().map(of));
    Ok(Json(json!({"id": id, "name": c.name, "name_zh": c.name_zh, "families": families, "totals": with_period(&Cell::total(&id, &mine), total), "period": covered})))
}

#[derive(Deserialize)]
struct ClusterQuery {
    cluster: Option<String>,
    limit: Option<usize>,
    direction: Option<String>,
    family: Option<String>,
    period: Option<String>,
    since: Option<String>,
}

async fn cells(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Query(q): Query<ClusterQuery>) -> ApiResult<serde_json::Value> {
    if let Some(c) = &q.cluster {
        known_cluster(&state, c)?;
        scope.check(c)?;
    }
    let period = period_of(&q.period, &q.since)?;
    let (covered, in_period) = state.store.in_period(period).await?;
    let cells: Vec<serde_json::Value> = state
        .store
        .cells()
        .await?
        .iter()
        .filter(|c| q.cluster.as_ref().is_none_or(|x| *x == c.cluster) && scope.sees(&c.cluster))
        .map(|c| with_period(c, in_period.get(&(c.cluster.clone(), c.family.clone())).copied().unwrap_or_default()))
        .collect();
    Ok(Json(json!({"cells": cells, "period": covered})))
}

fn limit(q: &ClusterQuery) -> Result<usize, ApiError> {
    match q.limit {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!("limit {n}: expected 1..=500"))),
    }
}

/// The query's cluster: required, known, and seen by the token.
fn required_cluster(state: &AppState, scope: &Scope, q: &ClusterQuery) -> Result<String, ApiError> {
    let c = q.cluster.clone().ok_or_else(|| ApiError::BadRequest("cluster is required".into()))?;
    known_cluster(state, &c)?;
    scope.check(&c)?;
    Ok(c)
}

#[derive(serde::Serialize)]
struct OrdersBody {
    cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    orders: Vec<crate::store::Raw>,
}

async fn open_orders(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Query(q): Query<ClusterQuery>) -> ApiResult<OrdersBody> {
    let (c, n) = (required_cluster(&state, &scope, &q)?, limit(&q)?);
    let orders = state.store.open_orders(&c, n).await?;
    Ok(Json(OrdersBody { cluster: c, direction: None, orders }))
}

/// `in`: other clusters' orders shared with `cluster`, as the sharing policy
/// redacted them; `out`: `cluster`'s own shared remainders.
async fn shared_orders(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Query(q): Query<ClusterQuery>) -> ApiResult<OrdersBody> {
    let (c, n) = (required_cluster(&state, &scope, &q)?, limit(&q)?);
    let inbound = match q.direction.as_deref().unwrap_or("in") {
        "in" => true,
        "out" => false,
        other => return Err(ApiError::BadRequest(format!("direction {other:?}: expected in or out"))),
    };
    let orders = state.store.shared(&c, inbound, n).await?;
    Ok(Json(OrdersBody { cluster: c, direction: Some(if inbound { "in" } else { "out" }), orders }))
}

/// An order's status and allocations. A scoped token sees the status of
/// its clusters' orders only, and of another cluster's order just the
/// allocations its clusters' capacity took part in.
async fn order_allocations(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Path(order_id): Path<String>) -> ApiResult<serde_json::Value> {
    let not_found = || ApiError::NotFound(format!("no order {order_id:?} in the view"));
    let (status, mut allocations) = state.store.order(&state.families, &order_id).await?.ok_or_else(not_found)?;
    let own = status.get("cluster").and_then(|c| c.as_str()).is_some_and(|c| scope.sees(c));
    if !own {
        allocations.retain(|a| scope.sees_allocation(a));
        if allocations.is_empty() {
            return Err(not_found());
        }
    }
    let status = if own { status } else { serde_json::Value::Null };
    Ok(Json(json!({"order_id": order_id, "status": status, "allocations": allocations})))
}

#[derive(serde::Serialize)]
struct AllocationsBody {
    allocations: Vec<crate::store::Raw>,
}

async fn latest_allocations(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Query(q): Query<ClusterQuery>) -> ApiResult<AllocationsBody> {
    let n = limit(&q)?.min(200);
    // The newest 200 are kept; a scoped token sees those its clusters took part in.
    let all = state.store.latest_allocations(if scope.0.is_none() { n } else { 200 }).await?;
    let seen = |a: &crate::store::Raw| serde_json::from_str::<serde_json::Value>(a.get()).is_ok_and(|v| scope.sees_allocation(&v));
    Ok(Json(AllocationsBody { allocations: all.into_iter().filter(seen).take(n).collect() }))
}

async fn timeseries(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Query(q): Query<ClusterQuery>) -> ApiResult<serde_json::Value> {
    let c = required_cluster(&state, &scope, &q)?;
    let f = q.family.clone().ok_or_else(|| ApiError::BadRequest("family is required".into()))?;
    known_family(&state, &f)?;
    if q.period.is_none() && q.since.is_none() {
        return Ok(Json(json!({"cluster": c, "family": f, "minute_kg": state.store.series(&c, &f).await?})));
    }
    let period = period_of(&q.period, &q.since)?;
    let (covered, points) = state.store.series_over(&c, &f, period).await?;
    Ok(Json(json!({"cluster": c, "family": f, "period": covered, "points_kg": points})))
}

/// Carriers' lanes: each lane's offers, bookings and freight against the
/// planning figure (a scoped token sees the lanes from or to its clusters),
/// and the clusters with their sites' coordinates for the map.
async fn lanes(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>) -> ApiResult<serde_json::Value> {
    let lanes: Vec<crate::store::LaneFigures> =
        state.store.lanes().await?.into_iter().filter(|l| scope.sees(&l.from_cluster) || scope.sees(&l.to_cluster)).collect();
    let clusters: Vec<serde_json::Value> = state
        .topology
        .clusters
        .iter()
        .map(|c| {
            let n = c.sites.len().max(1) as f64;
            let (lat, lon) = (c.sites.iter().map(|s| s.lat).sum::<f64>() / n, c.sites.iter().map(|s| s.lon).sum::<f64>() / n);
            let sites: Vec<serde_json::Value> = c.sites.iter().map(|s| json!({"id": s.id.as_str(), "name": s.name, "name_zh": s.name_zh, "kind": s.kind, "lat": s.lat, "lon": s.lon})).collect();
            json!({"id": c.id.as_str(), "name": c.name, "name_zh": c.name_zh, "lat": lat, "lon": lon, "sites": sites})
        })
        .collect();
    Ok(Json(json!({"lanes": lanes, "clusters": clusters, "clock_ms": state.store.clock().await?})))
}

/// A cluster's demand outlook: per family (or the one asked for), the last
/// week of hourly demand, the next 7 days of demand and declared capacity
/// with their 80 % intervals, the gap, and the open capacity-gap alert.
async fn outlook(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>, Query(q): Query<ClusterQuery>) -> ApiResult<serde_json::Value> {
    let c = required_cluster(&state, &scope, &q)?;
    if let Some(f) = &q.family {
        known_family(&state, f)?;
    }
    let cells: Vec<String> = state
        .store
        .cells()
        .await?
        .iter()
        .filter(|x| x.cluster == c && q.family.as_ref().is_none_or(|f| *f == x.family))
        .map(|x| format!("{}|{}", x.cluster, x.family))
        .collect();
    let outlooks = state.store.outlooks(&cells).await?;
    let alerts: Vec<&serde_json::Value> = outlooks.iter().filter_map(|o| o.get("alert").filter(|a| !a.is_null())).collect();
    Ok(Json(json!({"cluster": c, "outlooks": outlooks, "alerts": alerts})))
}

async fn dead_letters(State(state): State<Arc<AppState>>) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({"by_class": state.store.dead_letters().await?})))
}

/// Live updates: one `change` event per applied batch (count and the new
/// allocations the token sees).
async fn stream(State(state): State<Arc<AppState>>, Extension(scope): Extension<Scope>) -> impl IntoResponse {
    let rx = state.changes.subscribe();
    let metrics = state.metrics.clone();
    metrics.sse(1);
    struct Gone(Arc<Metrics>);
    impl Drop for Gone {
        fn drop(&mut self) {
            self.0.sse(-1);
        }
    }
    let gone = Gone(metrics);
    let events = futures::stream::unfold((rx, gone, scope), |(mut rx, gone, scope)| async move {
        match rx.recv().await {
            Ok(mut change) => {
                change.allocations.retain(|a| scope.sees_allocation(a));
                let ev = Event::default().event("change").json_data(&change).unwrap_or_default();
                Some((Ok::<Event, std::convert::Infallible>(ev), (rx, gone, scope)))
            }
            // A slow dashboard skipped some batches: tell it to reload everything.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let ev = Event::default().event("change").data(json!({"applied": n, "allocations": []}).to_string());
                Some((Ok(ev), (rx, gone, scope)))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let redis = state.store.ping().await;
    let caught_up = state.ready.load(Ordering::Relaxed);
    let body = json!({"redis": redis.is_ok(), "caught_up": caught_up});
    if redis.is_ok() && caught_up { (StatusCode::OK, Json(body)).into_response() } else { (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response() }
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, orelink_platform::metrics::CONTENT_TYPE)], orelink_platform::metrics::render())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
