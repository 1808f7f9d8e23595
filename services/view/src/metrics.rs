//! Prometheus metrics of the view role.

use orelink_platform::metrics::{Histogram, HttpMetrics, counter};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    events_read: AtomicU64,
    events_applied: AtomicU64,
    batches: AtomicU64,
    dead_lettered: AtomicU64,
    batch_seconds: Mutex<Histogram>,
    pub http: HttpMetrics,
    sse_clients: AtomicU64,
}

impl Metrics {
    pub fn batch(&self, read: u64, applied: u64, took: Duration) {
        self.events_read.fetch_add(read, Ordering::Relaxed);
        self.events_applied.fetch_add(applied, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_seconds.lock().expect("metrics lock").observe(took.as_secs_f64());
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
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
        counter(&mut out, "orelink_view_events_read_total", "Input events read by the materialiser.", &[("", self.events_read.load(Ordering::Relaxed))]);
        counter(&mut out, "orelink_view_events_applied_total", "Input events that changed the view (not replays or duplicates).", &[("", self.events_applied.load(Ordering::Relaxed))]);
        counter(&mut out, "orelink_view_batches_total", "Script calls that applied a batch.", &[("", self.batches.load(Ordering::Relaxed))]);
        counter(&mut out, "orelink_view_dead_lettered_total", "Records the view dead-lettered: bad inventory, or a record its script could not apply.", &[("", self.dead_lettered.load(Ordering::Relaxed))]);
        out.push_str("# HELP orelink_view_batch_seconds Time to apply one batch to Redis.\n# TYPE orelink_view_batch_seconds histogram\n");
        self.batch_seconds.lock().expect("metrics lock").render(&mut out, "orelink_view_batch_seconds", "");
        out.push_str("# HELP orelink_view_sse_clients Dashboards connected for live updates.\n# TYPE orelink_view_sse_clients gauge\n");
        out.push_str(&format!("orelink_view_sse_clients {}\n", self.sse_clients.load(Ordering::Relaxed)));
        self.http.render(&mut out);
        out
    }
}
