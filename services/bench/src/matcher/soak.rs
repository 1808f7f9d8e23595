//! `orelink bench soak`: the matcher's books over a long input, in this
//! process (no broker: what grows with history is the books, not the Kafka
//! clients, whose buffers are bounded by configuration). A bounded stream
//! (`workload::Soak`, open books flat) is decided at log times that pass the
//! dedup horizon many times, each decision rendered as the processor renders
//! it; every `every` events the process's resident memory and the books'
//! snapshot size are reported.
//!
//! What the books hold rises through a window of log time and drops when
//! the next begins (what closed a horizon ago leaves then, and the older
//! generation of event ids). So by default `every` events span exactly one
//! horizon of log time, and every sample is taken at the same point of its
//! window, its last event, where the books hold the most: samples then
//! compare like with like, at their peak.

use orelink_domain::freight::Network;
use orelink_domain::matching::{Decision, Engine};
use orelink_domain::workload::Soak;
use orelink_domain::Topology;
use std::sync::Arc;
use std::time::Instant;

/// The books at one point of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakSample {
    pub events: u64,
    /// Log time since the first event, in days.
    pub log_days: f64,
    /// Resident memory of this process (VmRSS), and its peak so far (VmHWM).
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub snapshot_bytes: usize,
    pub held_orders: usize,
    pub held_capacities: usize,
    pub open_orders: usize,
    pub open_capacities: usize,
    pub seen_ids: usize,
    /// Decided (and rendered) per second since the sample before.
    pub events_per_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    pub events: u64,
    pub horizon_ms: i64,
    pub ms_per_event: f64,
    /// Events an order or capacity stays before it is cancelled or withdrawn.
    pub life: u64,
    pub samples: Vec<SoakSample>,
    /// Change from the first sample at or after `flat_from` events to the
    /// last, in percent: the targets are on these.
    pub flat_from: u64,
    pub rss_change_pct: Option<f64>,
    pub snapshot_change_pct: Option<f64>,
}

/// `(VmRSS, VmHWM)` of this process in MiB (zero where /proc is not there).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How long and how a soak runs.
#[derive(Debug, Clone, Copy)]
pub struct SoakOptions {
    pub events: u64,
    /// Events between samples.
    pub every: u64,
    pub horizon_ms: i64,
    /// Log time per event; by default one horizon per `every` events.
    pub ms_per_event: Option<f64>,
    /// Events an order or capacity stays before it is cancelled or withdrawn.
    pub life: u64,
    /// The change is reported from the first sample at this many events on.
    pub flat_from: u64,
}

/// Decides `events` soak events under `horizon_ms`, a sample every `every` events.
pub fn soak(topology: &Topology, o: SoakOptions, log: &dyn Fn(&str)) -> SoakReport {
    let SoakOptions { events, every, horizon_ms, ms_per_event, life, flat_from } = o;
    let every = every.max(1);
    let ms_per_event = ms_per_event.unwrap_or(horizon_ms as f64 / every as f64);
    // The first event at the start of a window, so each sample falls on a window's last event.
    let start = 1_795_000_000_000i64;
    let start = start - start.rem_euclid(horizon_ms);
    let mut engine = Engine::new(Arc::new(Network::new(topology))).with_dedup_horizon(horizon_ms);
    let mut stream = Soak::new(42, start, ms_per_event, life);
    let mut decisions: Vec<Decision> = Vec::new();
    let mut samples = Vec::new();
    let mut t0 = Instant::now();
    for n in 1..=events {
        let (input, at) = stream.next().expect("the soak stream is endless");
        decisions.clear();
        engine.decide_at(&input, at, &mut decisions);
        for d in &decisions {
            std::hint::black_box(engine.render(d, &input));
        }
        if n % every == 0 || n == events {
            let secs = t0.elapsed().as_secs_f64();
            let (summary, held) = (engine.summary(), engine.held());
            let snapshot_bytes = engine.snapshot().len();
            let (rss_mib, peak_rss_mib) = memory_mib();
            let s = SoakSample {
                events: n,
                log_days: (at - start) as f64 / 86_400_000.0,
                rss_mib,
                peak_rss_mib,
                snapshot_bytes,
                held_orders: held.orders,
                held_capacities: held.capacities,
                open_orders: summary.open_orders,
                open_capacities: summary.open_capacities,
                seen_ids: held.event_ids,
                events_per_s: (n - samples.last().map_or(0, |s: &SoakSample| s.events)) as f64 / secs,
            };
            log(&format!("{} events: RSS {:.1} MiB, snapshot {} bytes", s.events, s.rss_mib, s.snapshot_bytes));
            samples.push(s);
            t0 = Instant::now();
        }
    }
    let from = samples.iter().find(|s| s.events >= flat_from);
    let change = |f: fn(&SoakSample) -> f64| from.zip(samples.last()).filter(|(a, b)| a.events < b.events).map(|(a, b)| (f(b) / f(a) - 1.0) * 100.0);
    SoakReport {
        events,
        horizon_ms,
        ms_per_event,
        life,
        flat_from,
        rss_change_pct: change(|s| s.rss_mib),
        snapshot_change_pct: change(|s| s.snapshot_bytes as f64),
        samples,
    }
}
