//! Prometheus metrics of the view role, in the text exposition format.
//! Labels stay low-cardinality: HTTP routes are the route templates.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}\n", self.counts[i]));
        }
        out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n", self.count));
        out.push_str(&format!("{name}_sum{{{labels}}} {}\n", self.sum));
        out.push_str(&format!("{name}_count{{{labels}}} {}\n", self.count));
    }
}

#[derive(Default)]
pub struct Metrics {
    events_read: AtomicU64,
    events_applied: AtomicU64,
    batches: AtomicU64,
    batch_seconds: Mutex<Histogram>,
    /// (route template, status) -> latency histogram.
    http: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    sse_clients: AtomicU64,
}

impl Metrics {
    pub fn batch(&self, read: u64, applied: u64, took: Duration) {
        self.events_read.fetch_add(read, Ordering::Relaxed);
        self.events_applied.fetch_add(applied, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_seconds.lock().expect("metrics lock").observe(took.as_secs_f64());
    }

    pub fn http(&self, route: &'static str, status: u16, took: Duration) {
        self.http.lock().expect("metrics lock").entry((route, status)).or_default().observe(took.as_secs_f64());
    }

    pub fn sse(&self, delta: i64) {
        if delta >= 0 {
            self.sse_clients.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.sse_clients.fetch_sub((-delta) as u64, Ordering::Relaxed);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
        };
        counter(&mut out, "orelink_view_events_read_total", "Input events read by the materialiser.", self.events_read.load(Ordering::Relaxed));
        counter(&mut out, "orelink_view_events_applied_total", "Input events that changed the view (not replays or duplicates).", self.events_applied.load(Ordering::Relaxed));
        counter(&mut out, "orelink_view_batches_total", "Script calls that applied a batch.", self.batches.load(Ordering::Relaxed));
        out.push_str("# HELP orelink_view_batch_seconds Time to apply one batch to Redis.\n# TYPE orelink_view_batch_seconds histogram\n");
        self.batch_seconds.lock().expect("metrics lock").render(&mut out, "orelink_view_batch_seconds", "");
        out.push_str("# HELP orelink_view_sse_clients Dashboards connected for live updates.\n# TYPE orelink_view_sse_clients gauge\n");
        out.push_str(&format!("orelink_view_sse_clients {}\n", self.sse_clients.load(Ordering::Relaxed)));
        out.push_str("# HELP orelink_http_request_seconds HTTP request latency by route template and status.\n# TYPE orelink_http_request_seconds histogram\n");
        for ((route, status), h) in self.http.lock().expect("metrics lock").iter() {
            h.render(&mut out, "orelink_http_request_seconds", &format!("route=\"{route}\",status=\"{status}\""));
        }
        out
    }
}
