//! The demand outlook at the view's edge: each time the view's clock (the
//! latest event time applied) enters a new slot of `view.outlook_refit_hours`,
//! every cluster × family is refitted from the view's own hourly series in
//! Redis (demand placed and capacity declared, the last 8 weeks of event
//! time, so it is rebuilt from Kafka with the rest of the view): the next 7
//! days of both with an 80 % interval (`orelink_outlook`), stored for the API.
//! A cell whose forecast demand exceeds its remaining plus forecast declared
//! capacity opens a capacity-gap episode: one `orelink.v1.Alert` RAISED to
//! `orelink.alerts.v1`, and one CLEARED when the gap closes.
//!
//! Why here and not a role of its own: its inputs are the view's series and
//! remaining capacity, already in Redis; it reads no topic of its own.
//!
//! Delivery: at least once. A slot is claimed in Redis before it is refitted
//! (of several view instances one refits it); an alert is written (and its
//! delivery awaited) before its episode is recorded, so a crash in between
//! repeats it at the next refit; an episode's RAISED and CLEARED carry the
//! same `alert_id`. Refits follow event time, never the wall clock, so the
//! same input gives the same forecasts. A view rebuild starts episodes anew.

use crate::ViewError;
use orelink_codec::Codec;
use orelink_domain::events::wire::{Alert, AlertKind};
use orelink_domain::topology::topics;
use orelink_outlook::{Episode, Forecast, HORIZON, HOUR_MS, LEVEL, MIN_HISTORY, Outlook, Step, WEEK};
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::aio::ConnectionManager;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The history a forecast is fitted on, at most (what the view keeps hourly).
pub const MAX_HISTORY: usize = 8 * WEEK;
/// Hours of history the API returns beside the forecast.
const SHOWN_HISTORY: usize = WEEK;

/// Claims refit slot ARGV[1] if it is newer than the last one claimed.
const CLAIM: &str = "local c = tonumber(redis.call('GET', KEYS[1]) or '-1') if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0";

pub struct Refitter {
    redis: ConnectionManager,
    prefix: String,
    producer: FutureProducer,
    codec: Arc<Codec>,
    alerts: String,
    refit_ms: i64,
}

/// One cell's outlook as stored for the API.
#[derive(Debug, Clone, serde::Serialize)]
struct Stored {
    cluster: String,
    family: String,
    origin_ms: i64,
    /// Hours of history the forecast was fitted on.
    history_hours: usize,
    /// `[hour start ms, kg]`, the last week before the origin.
    history: Vec<(i64, f64)>,
    demand: Option<Forecast>,
    declared: Option<Forecast>,
    outlook: Option<Outlook>,
    gap_kg: Option<f64>,
    alert: Option<Alert>,
    /// Why there is no forecast, if there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Refitter {
    pub fn new(cfg: &orelink_platform::Config, codec: Arc<Codec>, redis: ConnectionManager) -> Result<Refitter, ViewError> {
        let producer = cfg.kafka.producer_config("view-outlook").create().map_err(|e| ViewError::Config(format!("the alerts' producer: {e}")))?;
        Ok(Refitter {
            redis,
            prefix: crate::materialise::prefix(&cfg.namespace),
            producer,
            alerts: codec.topic(topics::ALERTS),
            codec,
            refit_ms: cfg.view.outlook_refit_hours * HOUR_MS,
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Watches the view's clock until `cancel`, refitting each new slot.
    /// Redis or Kafka being away is waited out; the slot is tried again.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "outlook refit failed; trying again");
            }
        }
    }

    /// Refits if the clock entered a slot not refitted yet; whether it did.
    pub async fn tick(&mut self) -> Result<bool, ViewError> {
        let clock: Option<i64> = redis::cmd("GET").arg(self.key("clock")).query_async(&mut self.redis).await?;
        let Some(clock) = clock else { return Ok(false) };
        let slot = clock.div_euclid(self.refit_ms);
        let claimed: i64 = redis::Script::new(CLAIM).key(self.key("outlook-slot")).arg(slot).invoke_async(&mut self.redis).await?;
        if claimed == 0 {
            return Ok(false);
        }
        self.refit(slot * self.refit_ms).await?;
        Ok(true)
    }

    /// Every cell's outlook from the hours before `origin_ms`.
    async fn refit(&mut self, origin_ms: i64) -> Result<(), ViewError> {
        let started = std::time::Instant::now();
        let mut cells: Vec<String> = redis::cmd("SMEMBERS").arg(self.key("cells")).query_async(&mut self.redis).await?;
        cells.sort();
        let origin_hour = origin_ms.div_euclid(HOUR_MS);
        for cell in &cells {
            let Some((cluster, family)) = cell.split_once('|') else { continue };
            let mut pipe = redis::pipe();
            pipe.cmd("HGETALL").arg(self.key(&format!("tsh:{cell}:demand")));
            pipe.cmd("HGETALL").arg(self.key(&format!("tsh:{cell}:declared")));
            pipe.cmd("HGET").arg(self.key(&format!("agg:{cell}"))).arg("cap_remaining_kg");
            pipe.cmd("GET").arg(self.key(&format!("alert:{cell}")));
            let (demand, declared, remaining, open): (BTreeMap<String, i64>, BTreeMap<String, i64>, Option<i64>, Option<String>) = pipe.query_async(&mut self.redis).await?;
            let (demand, declared) = (hours(&demand, origin_hour), hours(&declared, origin_hour));
            // The history starts at the cell's first hour with anything in it.
            let first = demand.iter().position(|v| *v != 0.0).unwrap_or(demand.len()).min(declared.iter().position(|v| *v != 0.0).unwrap_or(declared.len()));
            let (demand, declared) = (demand[first..].to_vec(), declared[first..].to_vec());
            let shown = demand.iter().enumerate().skip(demand.len().saturating_sub(SHOWN_HISTORY)).map(|(i, kg)| (origin_ms - (demand.len() - i) as i64 * HOUR_MS, *kg)).collect();
            let mut stored = Stored {
                cluster: cluster.to_owned(),
                family: family.to_owned(),
                origin_ms,
                history_hours: demand.len(),
                history: shown,
                demand: None,
                declared: None,
                outlook: None,
                gap_kg: None,
                alert: None,
                reason: None,
            };
            let open: Option<Episode> = open.and_then(|s| serde_json::from_str(&s).ok());
            if demand.len() < MIN_HISTORY {
                stored.reason = Some(format!("{} hours of history; a forecast needs {MIN_HISTORY}", demand.len()));
            } else {
                // Two fits per series (one to calibrate the interval): off the async threads.
                let (fd, fc) = tokio::task::spawn_blocking(move || (orelink_outlook::forecast(&demand, HORIZON, LEVEL), orelink_outlook::forecast(&declared, HORIZON, LEVEL)))
                    .await
                    .map_err(|e| ViewError::Config(format!("the outlook's fit panicked: {e}")))?;
                match (fd, fc) {
                    (Ok(fd), Ok(fc)) => {
                        let outlook = Outlook { demand_kg: fd.total(), remaining_kg: remaining.unwrap_or(0).max(0) as f64, expected_kg: fc.total() };
                        stored.gap_kg = Some(outlook.gap_kg());
                        let step = Episode::step(open.as_ref(), &outlook, origin_ms);
                        let now_open = match &step {
                            Step::Raise(e) => Some(self.alert(cluster, family, e, AlertKind::Raised, origin_ms, &outlook).await?),
                            Step::Clear(e) => {
                                self.alert(cluster, family, e, AlertKind::Cleared, origin_ms, &outlook).await?;
                                None
                            }
                            Step::Quiet => open.as_ref().map(|e| alert_of(cluster, family, e, AlertKind::Raised, origin_ms, &outlook)),
                        };
                        // The episode is recorded only once its alert is delivered (at least once).
                        match &step {
                            Step::Raise(e) => redis::cmd("SET").arg(self.key(&format!("alert:{cell}"))).arg(serde_json::to_string(e).expect("an episode serialises")).query_async::<()>(&mut self.redis).await?,
                            Step::Clear(_) => redis::cmd("DEL").arg(self.key(&format!("alert:{cell}"))).query_async::<()>(&mut self.redis).await?,
                            Step::Quiet => {}
                        }
                        stored.alert = now_open;
                        stored.outlook = Some(outlook);
                        stored.demand = Some(fd);
                        stored.declared = Some(fc);
                    }
                    (Err(e), _) | (_, Err(e)) => stored.reason = Some(e.to_string()),
                }
            }
            redis::cmd("SET").arg(self.key(&format!("outlook:{cell}"))).arg(serde_json::to_string(&stored).expect("an outlook serialises")).query_async::<()>(&mut self.redis).await?;
        }
        tracing::info!(origin_ms, cells = cells.len(), elapsed_ms = started.elapsed().as_millis() as u64, "outlook refitted");
        Ok(())
    }

    /// Writes the episode's alert and waits for its delivery.
    async fn alert(&self, cluster: &str, family: &str, e: &Episode, kind: AlertKind, at: i64, o: &Outlook) -> Result<Alert, ViewError> {
        let a = alert_of(cluster, family, e, kind, at, o);
        let bytes = self.codec.encode(&self.alerts, &a).await.map_err(|e| ViewError::Config(format!("encoding an alert: {e}")))?;
        let key = format!("{cluster}|{family}");
        self.producer
            .send(FutureRecord::to(&self.alerts).key(&key).payload(&bytes), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| ViewError::Alerts(e.to_string()))?;
        tracing::warn!(alert_id = a.alert_id, kind = ?kind, gap_kg = a.gap_kg, "capacity-gap alert");
        Ok(a)
    }
}

fn alert_of(cluster: &str, family: &str, e: &Episode, kind: AlertKind, at: i64, o: &Outlook) -> Alert {
    let (demand, remaining, expected) = (o.demand_kg.round() as i64, o.remaining_kg.round() as i64, o.expected_kg.round() as i64);
    Alert {
        alert_id: format!("GAP-{cluster}-{family}-{}", e.since_ms),
        kind,
        cluster: cluster.to_owned(),
        family: family.to_owned(),
        opened_at: e.since_ms,
        at,
        horizon_hours: HORIZON as i32,
        demand_kg: demand,
        remaining_kg: remaining,
        expected_kg: expected,
        // From the rounded figures, so the alert's numbers add up.
        gap_kg: demand - remaining - expected,
    }
}

/// The `MAX_HISTORY` hours before `origin_hour` from an hourly hash (slot -> kg), oldest first.
fn hours(h: &BTreeMap<String, i64>, origin_hour: i64) -> Vec<f64> {
    let from = origin_hour - MAX_HISTORY as i64;
    let mut out = vec![0.0; MAX_HISTORY];
    for (slot, kg) in h {
        if let Ok(s) = slot.parse::<i64>()
            && (from..origin_hour).contains(&s)
        {
            out[(s - from) as usize] += *kg as f64;
        }
    }
    out
}

/// The stored outlooks of `cells` (JSON, as refitted), for the API.
pub async fn stored(redis: &ConnectionManager, prefix: &str, cells: &[String]) -> Result<Vec<serde_json::Value>, redis::RedisError> {
    if cells.is_empty() {
        return Ok(Vec::new());
    }
    let mut con = redis.clone();
    let mut pipe = redis::pipe();
    for c in cells {
        pipe.cmd("GET").arg(format!("{prefix}outlook:{c}"));
    }
    let got: Vec<Option<String>> = pipe.query_async(&mut con).await?;
    Ok(cells
        .iter()
        .zip(got)
        .map(|(c, s)| {
            s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_else(|| {
                let (cluster, family) = c.split_once('|').unwrap_or((c, ""));
                json!({"cluster": cluster, "family": family, "reason": "not refitted yet: the view's clock has not entered a new refit slot"})
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_take_the_slots_before_the_origin_oldest_first() {
        let h: BTreeMap<String, i64> = [("99".to_owned(), 5), ("100".to_owned(), 7), ("low".to_owned(), 99), (format!("{}", 100 - MAX_HISTORY as i64 - 1), 3)].into();
        let v = hours(&h, 100);
        assert_eq!(v.len(), MAX_HISTORY);
        assert_eq!(v[MAX_HISTORY - 1], 5.0, "the last hour before the origin");
        assert_eq!(v.iter().sum::<f64>(), 5.0, "the origin's own hour, the bucket bookkeeping and hours too old are not history");
    }
}
