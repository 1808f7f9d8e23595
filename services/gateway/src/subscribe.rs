//! Subscription streams (Server-Sent Events) for callers without a Kafka
//! client: a logistics partner's key opens its own shipments, an enterprise's
//! key the allocations that name it as buyer or provider, and nothing else.
//!
//! Each event's id is the cursor after it (`stream::Cursor`): a client that
//! reconnects with `Last-Event-ID` (EventSource does) continues exactly after
//! the last event it got. Reads are read_committed and use no consumer group.
//! Streams are bounded (`gateway.max_streams`; then 503) and each reader
//! blocks on a small channel, so a slow client slows only itself.

use crate::{ApiError, AppState, caller};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use orelink_codec::Record;
use orelink_domain::topology::topics;
use orelink_outbound::Format;
use orelink_outbound::cursor::Cursor;
use orelink_outbound::stream::{self, From};
use rdkafka::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// `json` (the contract's fields) or `epcis` (shipments only).
    format: Option<String>,
    /// Where a stream without a cursor starts: `earliest` (default) or `latest`.
    from: Option<String>,
    /// The cursor, for clients that cannot send the Last-Event-ID header.
    last_event_id: Option<String>,
}

/// Which records of the topic a caller may see.
enum Filter {
    /// The whole topic is the caller's (a partner's own shipments topic).
    Partner,
    /// Allocations naming this enterprise as buyer or provider.
    Enterprise(String),
}

impl Filter {
    /// The SSE event type, and the formats the stream comes in.
    fn kind(&self) -> (&'static str, &'static [Format]) {
        match self {
            Filter::Partner => ("shipment", &[Format::Json, Format::Epcis]),
            Filter::Enterprise(_) => ("allocation", &[Format::Json]),
        }
    }
}

pub async fn shipments(State(state): State<Arc<AppState>>, headers: HeaderMap, q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let who = caller(&state, &headers)?;
    let carrier = who.carrier.as_deref().ok_or_else(|| ApiError::Forbidden(format!("key {} is not a logistics partner's (it binds no carrier)", who.id)))?;
    let partner = state
        .reference
        .topology
        .partner_by_carrier(carrier)
        .ok_or_else(|| ApiError::Forbidden(format!("carrier {carrier} is not a partner in the topology")))?;
    let topic = state.codec.topic(&topics::partner(partner.id.as_str()));
    open(state.clone(), who, &headers, q, topic, Filter::Partner).await
}

pub async fn allocations(State(state): State<Arc<AppState>>, headers: HeaderMap, q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let who = caller(&state, &headers)?;
    let enterprise = who.enterprise.clone().ok_or_else(|| ApiError::Forbidden(format!("key {} binds no enterprise", who.id)))?;
    let topic = state.codec.topic(topics::ALLOCATIONS);
    open(state.clone(), who, &headers, q, topic, Filter::Enterprise(enterprise)).await
}

async fn open(
    state: Arc<AppState>,
    who: &crate::keys::KeySpec,
    headers: &HeaderMap,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    topic: String,
    filter: Filter,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    state.keys.take(who, 1).map_err(ApiError::RateLimited)?;
    let (kind, formats) = filter.kind();
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let format = Format::parse(q.format.as_deref().unwrap_or("json")).map_err(ApiError::BadRequest)?;
    if !formats.contains(&format) {
        return Err(ApiError::BadRequest(format!("{kind} streams come as {formats:?} only")));
    }
    let from = match q.from.as_deref().unwrap_or("earliest") {
        "earliest" => From::Earliest,
        "latest" => From::Latest,
        other => return Err(ApiError::BadRequest(format!("from {other:?}: expected earliest or latest"))),
    };
    let given = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or(q.last_event_id);
    let given = Cursor::parse(given.as_deref().unwrap_or("")).map_err(|e| ApiError::BadRequest(format!("Last-Event-ID: {e}")))?;
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| ApiError::Unavailable("too many open streams; retry later".into()))?;
    let unavailable = |e: rdkafka::error::KafkaError| ApiError::Unavailable(format!("the event store is unavailable: {e}"));
    let cursor = stream::starting_cursor(&state.cfg, &topic, given, from).await.map_err(unavailable)?;
    let rx = stream::open(&state.cfg, &topic, &cursor, 64, state.shutdown.clone()).await.map_err(unavailable)?;
    tracing::info!(key = %who.id, %topic, %cursor, "subscription opened");
    let events = futures::stream::unfold((rx, cursor, permit, state, topic, filter), move |(mut rx, mut cursor, permit, state, topic, filter)| async move {
        loop {
            let m = match rx.recv().await? {
                Ok(m) => m,
                Err(e) => {
                    // The client reconnects with its last id and loses nothing.
                    tracing::warn!(error = %e, %topic, "subscription reader failed; closing the stream");
                    return None;
                }
            };
            cursor.advance(m.partition(), m.offset());
            let record = match state.codec.decode(&topic, m.payload()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, %topic, partition = m.partition(), offset = m.offset(), "skipping an undecodable record");
                    continue;
                }
            };
            let visible = match (&filter, &record) {
                (Filter::Partner, _) => true,
                (Filter::Enterprise(e), Record::Allocation(a)) => &a.buyer_id == e || &a.provider_id == e,
                (Filter::Enterprise(_), _) => false,
            };
            let Some(data) = visible.then(|| orelink_outbound::render(&record, format)).flatten() else { continue };
            let event = Event::default().id(cursor.to_string()).event(kind).json_data(data).expect("JSON values serialise");
            return Some((Ok(event), (rx, cursor, permit, state, topic, filter)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
