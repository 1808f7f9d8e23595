//! Where a crashed role's output shows, and how far behind it is: records
//! on a topic, requests to a webhook receiver, the view's offsets in Redis,
//! or the edge relay's backlog.

use super::super::{Partitions, Receiver};
use crate::{BenchError, OrSetup};
use orelink_platform::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The view's offsets in Redis (`<topic>:<partition>` -> offset), and when they were read.
type OffsetsAt = (Instant, BTreeMap<String, i64>);

/// Where the role's output shows, and how far behind the role is.
pub(super) enum Watch {
    /// Records on a topic, read read_committed; lag: the role's group's.
    /// With `partitions` (where each input event went, by trace id), caught
    /// up instead when every input partition with output in the 3 s before
    /// the kill has output again: for a role that commits its offsets in the
    /// background, whose group lag says too little.
    Topic { receiver: Receiver, probe: BaseConsumer, partitions: Option<Partitions> },
    /// Requests to a webhook receiver served here, with the partition each
    /// came from (its delivery id says); caught up: every partition that was
    /// delivering before the kill delivers again (the role commits its
    /// offsets every few seconds, so its group lag says too little).
    Hook { arrivals: Arc<Mutex<Vec<(Instant, String)>>>, stop: CancellationToken },
    /// The view's offsets in Redis, sampled; lag: input ends minus them.
    View { samples: Arc<Mutex<Vec<OffsetsAt>>>, probe: BaseConsumer, stop: CancellationToken },
    /// Records on a topic, read read_committed; lag: the relay's queued
    /// events (its `/status`; none while it is down).
    Edge { receiver: Receiver, status: String, http: reqwest::Client },
}

impl Watch {
    /// Serves `POST /hook` on loopback, noting when each request came.
    pub(super) async fn hook() -> Result<(Watch, std::net::SocketAddr), BenchError> {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let a = arrivals.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                // x-orelink-delivery: <partner>/<partition>/<offset>.
                let delivery = headers.get("x-orelink-delivery").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let partition = delivery.split('/').nth(1).unwrap_or_default().to_owned();
                a.lock().expect("hook lock").push((Instant::now(), partition));
                async { axum::http::StatusCode::NO_CONTENT }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.or_setup("the webhook receiver")?;
        let addr = listener.local_addr().or_setup("the webhook receiver")?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(s.cancelled_owned()).await });
        Ok((Watch::Hook { arrivals, stop }, addr))
    }

    /// Samples the view's offsets hash every 50 ms.
    pub(super) async fn view(cfg: &Config, probe: BaseConsumer) -> Result<Watch, BenchError> {
        let mut redis = redis::Client::open(cfg.redis.url.as_str()).or_setup("redis")?.get_connection_manager().await.or_setup("redis")?;
        let key = format!("{}offsets", orelink_view::materialise::prefix(&cfg.namespace));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (s, st) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            while !st.is_cancelled() {
                if let Ok(offsets) = redis::cmd("HGETALL").arg(&key).query_async::<BTreeMap<String, i64>>(&mut redis).await {
                    s.lock().expect("view samples lock").push((Instant::now(), offsets));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(Watch::View { samples, probe, stop })
    }

    /// Any output yet?
    pub(super) fn any(&self) -> bool {
        self.outputs() > 0
    }

    /// Outputs so far: records read, requests received, or events the view stored.
    pub(super) fn outputs(&self) -> usize {
        match self {
            Watch::Topic { receiver, .. } | Watch::Edge { receiver, .. } => receiver.count(),
            Watch::Hook { arrivals, .. } => arrivals.lock().expect("hook lock").len(),
            Watch::View { samples, .. } => samples.lock().expect("view samples lock").last().map_or(0, |(_, o)| o.values().map(|v| (v + 1) as usize).sum()),
        }
    }

    /// The first output made after the kill: created after `killed_ms`
    /// (records), or seen after `dead` (the killed process gone), when it came.
    pub(super) fn first_after(&self, killed_ms: i64, dead: Instant) -> Option<Instant> {
        match self {
            Watch::Topic { receiver, .. } | Watch::Edge { receiver, .. } => receiver.first_created_after(killed_ms),
            Watch::Hook { arrivals, .. } => arrivals.lock().expect("hook lock").iter().map(|(at, _)| *at).find(|at| *at > dead),
            // A sample whose offsets moved from one taken after the process was gone.
            Watch::View { samples, .. } => samples.lock().expect("view samples lock").windows(2).find(|w| w[0].0 >= dead && w[1].1 != w[0].1).map(|w| w[1].0),
        }
    }

    /// When the role was back where it was before the kill: its lag at or
    /// below `worst_before` now (then `now`), or, for webhooks, when the last
    /// partition delivering in the 3 s before `killed` delivered again after `dead`.
    pub(super) async fn caught_up(&self, input: &str, worst_before: i64, (killed, killed_ms): (Instant, i64), dead: Instant, group_lag: impl Fn(&BaseConsumer) -> Option<i64>) -> Option<Instant> {
        let arrivals: Vec<(Instant, String)> = match self {
            Watch::Hook { arrivals, .. } => arrivals.lock().expect("hook lock").clone(),
            Watch::Topic { receiver, partitions: Some(partitions), .. } => {
                let partitions = partitions.lock().expect("partitions lock");
                // Arrivals before the kill, and outputs created after it (a
                // transaction committed after the kill may hold older ones).
                let seen = receiver.seen.lock().expect("receiver lock");
                seen.iter()
                    .filter(|(_, at, ts)| *at <= killed || ts.is_some_and(|t| t > killed_ms))
                    .filter_map(|(t, at, _)| Some((*at, partitions.get(t)?.to_string())))
                    .collect()
            }
            _ => return self.lag(input, group_lag).await.is_some_and(|l| l <= worst_before).then(Instant::now),
        };
        let active: std::collections::BTreeSet<&str> = arrivals.iter().filter(|(at, _)| *at <= killed && *at + Duration::from_secs(3) > killed).map(|(_, p)| p.as_str()).collect();
        active.iter().map(|p| arrivals.iter().find(|(at, q)| *at > dead && q == p).map(|(at, _)| *at)).collect::<Option<Vec<_>>>()?.into_iter().max()
    }

    /// The role's lag on `input`, summed over partitions (None for webhooks).
    pub(super) async fn lag(&self, input: &str, group_lag: impl Fn(&BaseConsumer) -> Option<i64>) -> Option<i64> {
        match self {
            Watch::Topic { probe, .. } => group_lag(probe),
            Watch::Hook { .. } => None,
            Watch::Edge { status, http, .. } => {
                let s: serde_json::Value = http.get(status).timeout(Duration::from_secs(1)).send().await.ok()?.json().await.ok()?;
                s["backlog_events"].as_i64()
            }
            Watch::View { samples, probe, .. } => {
                let stored = samples.lock().expect("view samples lock").last()?.1.clone();
                let md = probe.fetch_metadata(Some(input), Duration::from_secs(5)).ok()?;
                let mut lag = 0;
                for p in md.topics().first()?.partitions() {
                    let (low, high) = probe.fetch_watermarks(input, p.id(), Duration::from_secs(5)).ok()?;
                    let next = stored.get(&format!("{input}:{}", p.id())).map_or(low, |o| o + 1);
                    lag += (high - next).max(0);
                }
                Some(lag)
            }
        }
    }

    pub(super) fn finish(self) -> usize {
        let n = self.outputs();
        match self {
            Watch::Topic { receiver, .. } | Watch::Edge { receiver, .. } => {
                receiver.finish();
            }
            Watch::Hook { stop, .. } | Watch::View { stop, .. } => stop.cancel(),
        }
        n
    }
}
