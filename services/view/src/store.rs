//! Reads of the view from Redis, shaped for the API. Each read is one
//! command or one pipeline: the API never scans.

use redis::aio::ConnectionManager;
use serde::Serialize;
use std::collections::BTreeMap;

/// Capacity against demand for one cluster and product family.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cell {
    pub cluster: String,
    pub family: String,
    /// Capacity declared in this cluster (kg).
    pub declared_kg: i64,
    /// Of it, allocated to orders of any cluster.
    pub allocated_kg: i64,
    /// Open capacity still unallocated.
    pub remaining_kg: i64,
    pub open_capacities: i64,
    pub allocations: i64,
    /// Orders placed by this cluster's buyers, and what they asked for (kg).
    pub orders: i64,
    pub demand_kg: i64,
    /// Unfilled remainders of open orders.
    pub open_demand_kg: i64,
    pub open_orders: i64,
    /// Allocated to this cluster's orders, from any cluster.
    pub filled_kg: i64,
    /// filled / (filled + open demand); null without demand.
    pub fill_rate: Option<f64>,
    /// allocated / declared; null without capacity.
    pub utilisation: Option<f64>,
    /// Energy intensity of what this cluster's capacity supplied, weighted by
    /// allocated quantity (kWh/t); null when no supplier reported it.
    pub energy_kwh_per_t: Option<f64>,
    /// This cluster's orders currently shared out, and others' shared in.
    pub shared_out: i64,
    pub shared_in: i64,
    /// Stock at this cluster's sites (the latest snapshot of each site and product), kg.
    pub stock_on_hand_kg: i64,
    pub stock_reserved_kg: i64,
    /// On hand divided by the family's placed demand per day in this cluster
    /// over the last 7 days of event time; null without such demand.
    pub days_of_cover: Option<f64>,
    /// Demand placed over those 7 days, kg.
    #[serde(skip)]
    demand_7d_kg: i64,
    #[serde(skip)]
    energy_kwh: i64,
    #[serde(skip)]
    energy_kg: i64,
}

impl Cell {
    /// A cell from its aggregate hash and its placed demand of the last 7 days.
    fn from_hash(cluster: &str, family: &str, h: &BTreeMap<String, i64>, demand_7d_kg: i64) -> Cell {
        let g = |k: &str| h.get(k).copied().unwrap_or(0);
        let mut c = Cell {
            cluster: cluster.to_owned(),
            family: family.to_owned(),
            declared_kg: g("declared_kg"),
            allocated_kg: g("cap_allocated_kg"),
            remaining_kg: g("cap_remaining_kg"),
            open_capacities: g("open_capacities"),
            allocations: g("allocations"),
            orders: g("orders"),
            demand_kg: g("demand_kg"),
            open_demand_kg: g("open_demand_kg"),
            open_orders: g("open_orders"),
            filled_kg: g("order_allocated_kg"),
            shared_out: g("shared_out"),
            shared_in: g("shared_in"),
            stock_on_hand_kg: g("stock_on_hand_kg"),
            stock_reserved_kg: g("stock_reserved_kg"),
            demand_7d_kg,
            energy_kwh: g("energy_kwh"),
            energy_kg: g("energy_kg"),
            ..Cell::default()
        };
        c.derive();
        c
    }

    fn derive(&mut self) {
        let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
        self.fill_rate = ratio(self.filled_kg, self.filled_kg + self.open_demand_kg);
        self.utilisation = ratio(self.allocated_kg, self.declared_kg);
        // kWh per kg is 1000 kWh per tonne.
        self.energy_kwh_per_t = ratio(self.energy_kwh, self.energy_kg).map(|r| r * 1000.0);
        self.days_of_cover = ratio(self.stock_on_hand_kg, self.demand_7d_kg).map(|r| r * 7.0);
    }

    /// Sums cells (a cluster's families) into one, ratios recomputed.
    pub fn total(cluster: &str, cells: &[Cell]) -> Cell {
        let mut t = Cell { cluster: cluster.to_owned(), family: "*".into(), ..Cell::default() };
        // Saturating: a sum of cells never panics, whatever Redis holds.
        for c in cells {
            for (sum, x) in [
                (&mut t.declared_kg, c.declared_kg),
                (&mut t.allocated_kg, c.allocated_kg),
                (&mut t.remaining_kg, c.remaining_kg),
                (&mut t.open_capacities, c.open_capacities),
                (&mut t.allocations, c.allocations),
                (&mut t.orders, c.orders),
                (&mut t.demand_kg, c.demand_kg),
                (&mut t.open_demand_kg, c.open_demand_kg),
                (&mut t.open_orders, c.open_orders),
                (&mut t.filled_kg, c.filled_kg),
                (&mut t.shared_out, c.shared_out),
                (&mut t.shared_in, c.shared_in),
                (&mut t.stock_on_hand_kg, c.stock_on_hand_kg),
                (&mut t.stock_reserved_kg, c.stock_reserved_kg),
                (&mut t.demand_7d_kg, c.demand_7d_kg),
                (&mut t.energy_kwh, c.energy_kwh),
                (&mut t.energy_kg, c.energy_kg),
            ] {
                *sum = sum.saturating_add(x);
            }
        }
        t.derive();
        t
    }
}

/// A period of event time the API totals what was declared, allocated and
/// demanded over, up to the view's clock (the latest event time applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The 24 hours up to the end of the clock's hour.
    Last24h,
    /// The 7 days (168 hours) up to the end of the clock's hour.
    Last7d,
    /// From the start of a day of China Standard Time (UTC+8; the day's
    /// number since 1970-01-01) to the end of the clock's day.
    Since(i64),
    /// Everything the view has applied.
    All,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// China Standard Time is UTC+8: the view's days begin at 16:00 UTC.
const CST_MS: i64 = 8 * HOUR_MS;

/// What a period covers, as served: `[from_ms, to_ms)` of event time (none
/// when the view is empty; `from_ms` none for everything).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Covered {
    pub period: String,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// The view's clock: the latest event time it has applied.
    pub clock_ms: Option<i64>,
    /// The buckets the totals were summed from.
    pub resolution: &'static str,
}

impl Covered {
    /// What a period covers in a view that has applied nothing yet.
    fn nothing(period: Period) -> Covered {
        Covered { period: period.label(), from_ms: None, to_ms: None, clock_ms: None, resolution: period.resolution() }
    }
}

/// Capacity declared, allocated and demand placed within a period, kg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InPeriod {
    pub declared_kg: i64,
    pub allocated_kg: i64,
    pub demand_kg: i64,
}

impl InPeriod {
    pub fn total(cells: impl IntoIterator<Item = InPeriod>) -> InPeriod {
        cells.into_iter().fold(InPeriod::default(), |t, c| InPeriod {
            declared_kg: t.declared_kg.saturating_add(c.declared_kg),
            allocated_kg: t.allocated_kg.saturating_add(c.allocated_kg),
            demand_kg: t.demand_kg.saturating_add(c.demand_kg),
        })
    }
}

impl Period {
    /// `period` (`24h`, `7d`, `all`; `all` when absent) or `since` (a
    /// date, `YYYY-MM-DD`, in China Standard Time), not both.
    pub fn parse(period: Option<&str>, since: Option<&str>) -> Result<Period, String> {
        match (period, since) {
            (Some(_), Some(_)) => Err("give period or since, not both".into()),
            (None, Some(date)) => cst_day(date).map(Period::Since).ok_or_else(|| format!("since {date:?}: expected a date YYYY-MM-DD")),
            (Some("24h"), None) => Ok(Period::Last24h),
            (Some("7d"), None) => Ok(Period::Last7d),
            (Some("all") | None, None) => Ok(Period::All),
            (Some(other), None) => Err(format!("period {other:?}: expected 24h, 7d or all (or since=YYYY-MM-DD)")),
        }
    }

    /// The period as served: `24h`, `7d`, `all` or `since YYYY-MM-DD`.
    fn label(self) -> String {
        match self {
            Period::Last24h => "24h".into(),
            Period::Last7d => "7d".into(),
            Period::Since(d) => format!("since {}", date_of(d)),
            Period::All => "all".into(),
        }
    }

    /// The buckets its totals are summed from.
    fn resolution(self) -> &'static str {
        if matches!(self, Period::Last24h | Period::Last7d) { "hour" } else { "day" }
    }

    /// The hash the totals are read from, the slots summed (inclusive), and
    /// what is covered, given the view's clock.
    fn slots(self, clock: i64) -> (&'static str, i64, i64, Covered) {
        let hour = clock.div_euclid(HOUR_MS);
        let day = (clock + CST_MS).div_euclid(DAY_MS);
        let covered = |from: Option<i64>, to: i64| Covered { period: self.label(), from_ms: from, to_ms: Some(to), clock_ms: Some(clock), resolution: self.resolution() };
        match self {
            Period::Last24h => ("tsh", hour - 23, hour, covered(Some((hour - 23) * HOUR_MS), (hour + 1) * HOUR_MS)),
            Period::Last7d => ("tsh", hour - 167, hour, covered(Some((hour - 167) * HOUR_MS), (hour + 1) * HOUR_MS)),
            Period::Since(d) => ("tsa", d, day, covered(Some(d * DAY_MS - CST_MS), (day + 1) * DAY_MS - CST_MS)),
            Period::All => ("tsa", i64::MIN, day, covered(None, (day + 1) * DAY_MS - CST_MS)),
        }
    }
}

/// The day number (since 1970-01-01) of a date `YYYY-MM-DD`.
fn cst_day(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 || ![y, m, d].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    orelink_domain::calendar::days_from_civil(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// `YYYY-MM-DD` of day number `z` since 1970-01-01 (the inverse of `cst_day`).
pub fn date_of(z: i64) -> String {
    let (y, m, d) = orelink_domain::calendar::civil_from_days(z);
    format!("{y:04}-{m:02}-{d:02}")
}

/// One lane's carriers' offers and bookings (from the offers and bookings topics).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LaneFigures {
    /// `<from>><to>`.
    pub lane: String,
    pub from_cluster: String,
    pub to_cluster: String,
    /// Modes the lane's offers came by.
    pub modes: Vec<String>,
    /// Offers made and the room they offered (kg), and withdrawals.
    pub offers: i64,
    pub offered_kg: i64,
    pub withdrawn: i64,
    /// Parts of allocations booked onto offers, and their kilograms.
    pub booked_parts: i64,
    pub booked_kg: i64,
    /// Room left on offers that are neither withdrawn nor past their window
    /// at the lane's latest event.
    pub remaining_kg: i64,
    /// Allocations (or their remainders) no offer could carry.
    pub unbooked: i64,
    pub unbooked_kg: i64,
    /// Freight of the booked parts at the offers' prices and at the
    /// matcher's planning figure, per tonne; null before any booking.
    pub booked_cny_per_t: Option<f64>,
    pub planning_cny_per_t: Option<f64>,
}

impl LaneFigures {
    fn from_hash(lane: &str, h: &BTreeMap<String, i64>, modes: Vec<String>) -> Option<LaneFigures> {
        let (from, to) = lane.split_once('>')?;
        let g = |k: &str| h.get(k).copied().unwrap_or(0);
        let per_t = |cny: i64| (g("costed_kg") > 0).then(|| cny as f64 * 1000.0 / g("costed_kg") as f64);
        Some(LaneFigures {
            lane: lane.to_owned(),
            from_cluster: from.to_owned(),
            to_cluster: to.to_owned(),
            modes,
            offers: g("offers"),
            offered_kg: g("offered_kg"),
            withdrawn: g("withdrawn"),
            booked_parts: g("parts"),
            booked_kg: g("booked_kg"),
            remaining_kg: g("room_kg").max(0),
            unbooked: g("unbooked"),
            unbooked_kg: g("unbooked_kg"),
            booked_cny_per_t: per_t(g("booked_cny")),
            planning_cny_per_t: per_t(g("planning_cny")),
        })
    }
}

pub struct Store {
    redis: ConnectionManager,
    prefix: String,
    /// The cells, read at most every `CELLS_TTL`: every dashboard refresh and
    /// most API calls want them, and 250 ms is fresher than anyone can read.
    cells: std::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<Vec<Cell>>)>>,
}

const CELLS_TTL: std::time::Duration = std::time::Duration::from_millis(250);

pub type RedisResult<T> = Result<T, redis::RedisError>;

/// Records kept as the JSON the materialiser stored: served as they are, never re-parsed.
pub type Raw = Box<serde_json::value::RawValue>;

fn raw(s: String) -> Option<Raw> {
    serde_json::value::RawValue::from_string(s).ok()
}

fn parse_json(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

impl Store {
    pub fn new(redis: ConnectionManager, namespace: &str) -> Store {
        Store { redis, prefix: crate::materialise::prefix(namespace), cells: Default::default() }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Every (cluster, family) cell the view has seen, sorted; at most `CELLS_TTL` old.
    pub async fn cells(&self) -> RedisResult<std::sync::Arc<Vec<Cell>>> {
        if let Some((at, cells)) = self.cells.lock().expect("cells lock").as_ref() && at.elapsed() < CELLS_TTL {
            return Ok(cells.clone());
        }
        let fresh = std::sync::Arc::new(self.read_cells().await?);
        *self.cells.lock().expect("cells lock") = Some((std::time::Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    async fn read_cells(&self) -> RedisResult<Vec<Cell>> {
        let mut con = self.redis.clone();
        let mut names: Vec<String> = redis::cmd("SMEMBERS").arg(self.key("cells")).query_async(&mut con).await?;
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.key("clock"));
        for n in &names {
            pipe.cmd("HGETALL").arg(self.key(&format!("agg:{n}")));
            pipe.cmd("HGETALL").arg(self.key(&format!("tsd:{n}:demand")));
        }
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut con).await?;
        let rest = replies.split_off(1);
        let clock: Option<i64> = redis::from_redis_value(replies.remove(0))?;
        // The last 7 days of event time, the view's clock's day included.
        let today = clock.unwrap_or(0).div_euclid(86_400_000);
        let mut cells = Vec::with_capacity(names.len());
        for (n, pair) in names.iter().zip(rest.chunks(2)) {
            let agg: BTreeMap<String, i64> = redis::from_redis_value(pair[0].clone())?;
            let days: BTreeMap<i64, i64> = redis::from_redis_value(pair[1].clone())?;
            let demand_7d = days.range(today - 6..=today).map(|(_, kg)| kg).sum();
            if let Some((c, f)) = n.split_once('|') {
                cells.push(Cell::from_hash(c, f, &agg, demand_7d));
            }
        }
        Ok(cells)
    }

    /// The view's clock: the latest event time it has applied (ms), if any.
    pub async fn clock(&self) -> RedisResult<Option<i64>> {
        let mut con = self.redis.clone();
        redis::cmd("GET").arg(self.key("clock")).query_async(&mut con).await
    }

    /// Open orders of a cluster, newest first (the matcher's status JSON).
    pub async fn open_orders(&self, cluster: &str, limit: usize) -> RedisResult<Vec<Raw>> {
        let mut con = self.redis.clone();
        let members: Vec<String> = redis::cmd("ZREVRANGE").arg(self.key(&format!("open:{cluster}"))).arg(0).arg(limit.saturating_sub(1)).query_async(&mut con).await?;
        self.hash_json(&mut con, "ord:", &members).await
    }

    /// Orders shared into (`in`) or out of (`out`) a cluster (SharedOrder JSON, as redacted).
    pub async fn shared(&self, cluster: &str, inbound: bool, limit: usize) -> RedisResult<Vec<Raw>> {
        let mut con = self.redis.clone();
        let set = if inbound { format!("sin:{cluster}") } else { format!("sout:{cluster}") };
        let mut members: Vec<String> = redis::cmd("SMEMBERS").arg(self.key(&set)).query_async(&mut con).await?;
        members.sort();
        members.truncate(limit);
        self.hash_json(&mut con, "shr:", &members).await
    }

    async fn hash_json(&self, con: &mut ConnectionManager, kind: &str, members: &[String]) -> RedisResult<Vec<Raw>> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for m in members {
            pipe.cmd("HGET").arg(self.key(&format!("{kind}{m}"))).arg("j");
        }
        let found: Vec<Option<String>> = pipe.query_async(con).await?;
        Ok(found.into_iter().flatten().filter_map(raw).collect())
    }

    /// The allocations of an order, in the order they were decided, and its latest status.
    pub async fn order(&self, families: &[String], order_id: &str) -> RedisResult<Option<(serde_json::Value, Vec<serde_json::Value>)>> {
        let mut con = self.redis.clone();
        let mut pipe = redis::pipe();
        for f in families {
            pipe.cmd("HGET").arg(self.key(&format!("ord:{f}|{order_id}"))).arg("j");
            pipe.cmd("HVALS").arg(self.key(&format!("alo:{f}|{order_id}")));
        }
        let found: Vec<redis::Value> = pipe.query_async(&mut con).await?;
        for pair in found.chunks(2) {
            let status: Option<String> = redis::from_redis_value(pair[0].clone())?;
            let allocs: Vec<String> = redis::from_redis_value(pair[1].clone())?;
            if status.is_some() || !allocs.is_empty() {
                let mut allocs: Vec<serde_json::Value> = allocs.into_iter().filter_map(|s| serde_json::from_str(&s).ok()).collect();
                allocs.sort_by_key(|a| (a["decided_at"].as_i64(), a["allocation_id"].as_str().map(str::to_owned)));
                return Ok(Some((parse_json(status).unwrap_or(serde_json::Value::Null), allocs)));
            }
        }
        Ok(None)
    }

    /// The latest allocations across the hub, newest first.
    pub async fn latest_allocations(&self, limit: usize) -> RedisResult<Vec<Raw>> {
        let mut con = self.redis.clone();
        let raw_list: Vec<String> = redis::cmd("LRANGE").arg(self.key("latest")).arg(0).arg(limit.saturating_sub(1)).query_async(&mut con).await?;
        Ok(raw_list.into_iter().filter_map(raw).collect())
    }

    /// Per-minute series (demand placed, capacity declared, allocated) of the
    /// last 24 h of event time, as `[minute_start_ms, kg]` pairs.
    pub async fn series(&self, cluster: &str, family: &str) -> RedisResult<BTreeMap<&'static str, Vec<(i64, i64)>>> {
        let mut con = self.redis.clone();
        let names = ["demand", "declared", "allocated"];
        let mut pipe = redis::pipe();
        for n in names {
            pipe.cmd("HGETALL").arg(self.key(&format!("ts:{cluster}|{family}:{n}")));
        }
        let hashes: Vec<BTreeMap<String, i64>> = pipe.query_async(&mut con).await?;
        let mut out = BTreeMap::new();
        let latest = hashes.iter().flat_map(|h| h.keys().filter_map(|k| k.parse::<i64>().ok())).max().unwrap_or(0);
        for (n, h) in names.into_iter().zip(hashes) {
            let mut points: Vec<(i64, i64)> =
                h.into_iter().filter_map(|(k, v)| k.parse::<i64>().ok().map(|m| (m, v))).filter(|(m, _)| *m > latest - 1440).map(|(m, v)| (m * 60_000, v)).collect();
            points.sort();
            out.insert(n, points);
        }
        Ok(out)
    }

    /// The series (demand placed, capacity declared, allocated) of one cell
    /// over `period`, as `[slot_start_ms, kg]` pairs: per minute for the
    /// last 24 h, per hour for 7 days, per day (China Standard Time) since a
    /// date or for everything. Empty slots are left out.
    pub async fn series_over(&self, cluster: &str, family: &str, period: Period) -> RedisResult<(Covered, BTreeMap<&'static str, Vec<(i64, i64)>>)> {
        let mut con = self.redis.clone();
        let clock: Option<i64> = redis::cmd("GET").arg(self.key("clock")).query_async(&mut con).await?;
        let names = ["demand", "declared", "allocated"];
        let Some(clock) = clock else {
            return Ok((Covered::nothing(period), names.into_iter().map(|n| (n, Vec::new())).collect()));
        };
        let (hash, mut lo, mut hi, mut covered) = period.slots(clock);
        let (hash, slot_ms, offset) = match period {
            // The same 24 hours, by the minute.
            Period::Last24h => {
                (lo, hi) = (lo * 60, hi * 60 + 59);
                covered.resolution = "minute";
                ("ts", 60_000, 0)
            }
            Period::Last7d => (hash, HOUR_MS, 0),
            Period::Since(_) | Period::All => (hash, DAY_MS, -CST_MS),
        };
        let mut pipe = redis::pipe();
        for n in names {
            pipe.cmd("HGETALL").arg(self.key(&format!("{hash}:{cluster}|{family}:{n}")));
        }
        let hashes: Vec<BTreeMap<String, i64>> = pipe.query_async(&mut con).await?;
        let mut out = BTreeMap::new();
        for (n, h) in names.into_iter().zip(hashes) {
            let mut points: Vec<(i64, i64)> = h
                .into_iter()
                .filter_map(|(k, v)| k.parse::<i64>().ok().filter(|s| (lo..=hi).contains(s)).map(|s| (s * slot_ms + offset, v)))
                .filter(|(_, v)| *v != 0)
                .collect();
            points.sort();
            out.insert(n, points);
        }
        Ok((covered, out))
    }

    /// Per (cluster, family) cell, what was declared, allocated and
    /// demanded within `period`, and what the period covers.
    pub async fn in_period(&self, period: Period) -> RedisResult<(Covered, BTreeMap<(String, String), InPeriod>)> {
        let mut con = self.redis.clone();
        let (mut names, clock): (Vec<String>, Option<i64>) = redis::pipe().cmd("SMEMBERS").arg(self.key("cells")).cmd("GET").arg(self.key("clock")).query_async(&mut con).await?;
        names.sort();
        let Some(clock) = clock else {
            return Ok((Covered::nothing(period), BTreeMap::new()));
        };
        let (hash, lo, hi, covered) = period.slots(clock);
        let series = ["declared", "allocated", "demand"];
        let mut pipe = redis::pipe();
        for n in &names {
            for s in series {
                pipe.cmd("HGETALL").arg(self.key(&format!("{hash}:{n}:{s}")));
            }
        }
        let hashes: Vec<BTreeMap<String, i64>> = if names.is_empty() { Vec::new() } else { pipe.query_async(&mut con).await? };
        let sum = |h: &BTreeMap<String, i64>| h.iter().filter_map(|(k, v)| k.parse::<i64>().ok().filter(|s| (lo..=hi).contains(s)).map(|_| *v)).fold(0i64, i64::saturating_add);
        let mut out = BTreeMap::new();
        for (n, h) in names.iter().zip(hashes.chunks(series.len())) {
            if let Some((c, f)) = n.split_once('|') {
                out.insert((c.to_owned(), f.to_owned()), InPeriod { declared_kg: sum(&h[0]), allocated_kg: sum(&h[1]), demand_kg: sum(&h[2]) });
            }
        }
        Ok((covered, out))
    }

    /// Every lane the view has seen an offer or a booking on, sorted by key.
    pub async fn lanes(&self) -> RedisResult<Vec<LaneFigures>> {
        let mut con = self.redis.clone();
        let mut keys: Vec<String> = redis::cmd("SMEMBERS").arg(self.key("lanes")).query_async(&mut con).await?;
        keys.sort();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("HGETALL").arg(self.key(&format!("lane:{k}")));
            pipe.cmd("SMEMBERS").arg(self.key(&format!("lanem:{k}")));
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut con).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (k, pair) in keys.iter().zip(replies.chunks(2)) {
            let h: BTreeMap<String, i64> = redis::from_redis_value(pair[0].clone())?;
            let mut modes: Vec<String> = redis::from_redis_value(pair[1].clone())?;
            modes.sort();
            if let Some(l) = LaneFigures::from_hash(k, &h, modes) {
                out.push(l);
            }
        }
        Ok(out)
    }

    /// The refitted outlooks of `cells` (`cluster|family`), as stored.
    pub async fn outlooks(&self, cells: &[String]) -> RedisResult<Vec<serde_json::Value>> {
        crate::outlook::stored(&self.redis, &self.prefix, cells).await
    }

    /// Dead letters counted by error class.
    pub async fn dead_letters(&self) -> RedisResult<BTreeMap<String, i64>> {
        let mut con = self.redis.clone();
        redis::cmd("HGETALL").arg(self.key("dlq")).query_async(&mut con).await
    }

    pub async fn ping(&self) -> RedisResult<()> {
        let mut con = self.redis.clone();
        redis::cmd("PING").query_async::<String>(&mut con).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_of_china_standard_time_and_periods_end_at_the_clock() {
        assert_eq!(cst_day("1970-01-01"), Some(0));
        assert_eq!(cst_day("2026-12-05"), Some(20_792));
        assert_eq!(date_of(20_792), "2026-12-05");
        assert_eq!(cst_day("2024-02-29").map(date_of).as_deref(), Some("2024-02-29"));
        for bad in ["2026-02-29", "2026-13-01", "2026-1-05", "26-12-05", "2026-12-05T00", "", "yyyy-mm-dd"] {
            assert_eq!(cst_day(bad), None, "{bad}");
        }
        for z in [-1, 0, 59, 60, 11_016, 20_792, 2_000_000] {
            assert_eq!(cst_day(&date_of(z)), Some(z), "{z}");
        }
        // 2026-12-05 03:30 UTC is 11:30 that day in Guangxi.
        let clock = 1_796_441_400_000;
        let (hash, lo, hi, c) = Period::Since(20_792).slots(clock);
        assert_eq!((hash, lo, hi, c.from_ms, c.to_ms, c.period.as_str()), ("tsa", 20_792, 20_792, Some(20_792 * DAY_MS - CST_MS), Some(20_793 * DAY_MS - CST_MS), "since 2026-12-05"));
        let (hash, lo, hi, c) = Period::Last24h.slots(clock);
        assert_eq!((hash, hi - lo + 1, c.to_ms.unwrap() - c.from_ms.unwrap()), ("tsh", 24, DAY_MS));
        assert!(c.from_ms.unwrap() <= clock - 23 * HOUR_MS && clock < c.to_ms.unwrap());
        let (_, lo, hi, _) = Period::Last7d.slots(clock);
        assert_eq!(hi - lo + 1, 168);
        assert_eq!(Period::parse(None, None), Ok(Period::All));
        assert_eq!(Period::parse(Some("7d"), None), Ok(Period::Last7d));
        assert_eq!(Period::parse(None, Some("2026-12-01")), Ok(Period::Since(20_788)));
        assert!(Period::parse(Some("30d"), None).unwrap_err().contains("expected 24h, 7d or all"));
        assert!(Period::parse(Some("7d"), Some("2026-12-01")).is_err());
        assert!(Period::parse(None, Some("2026-12-32")).unwrap_err().contains("YYYY-MM-DD"));
    }
}
