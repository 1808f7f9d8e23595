//! The view role's metrics (see `orelink_platform::metrics`): what the
//! materialiser read, applied and dead-lettered, its batches' time, and the
//! dashboards connected. Labelled with the deployment's namespace, so that
//! several views in one process stay apart.

use std::time::Duration;

pub struct Metrics {
    namespace: String,
}

impl Metrics {
    pub fn new(namespace: &str) -> Metrics {
        orelink_platform::metrics::install();
        Metrics { namespace: namespace.to_owned() }
    }

    fn ns(&self) -> String {
        self.namespace.clone()
    }

    pub fn batch(&self, read: u64, applied: u64, took: Duration) {
        metrics::counter!("orelink_view_events_read_total", "namespace" => self.ns()).increment(read);
        metrics::counter!("orelink_view_events_applied_total", "namespace" => self.ns()).increment(applied);
        metrics::histogram!("orelink_view_batch_seconds", "namespace" => self.ns()).record(took.as_secs_f64());
    }

    pub fn dead_lettered(&self) {
        metrics::counter!("orelink_view_dead_lettered_total", "namespace" => self.ns()).increment(1);
    }

    pub fn sse(&self, delta: i64) {
        metrics::gauge!("orelink_view_sse_clients", "namespace" => self.ns()).increment(delta as f64);
    }

    pub fn http(&self, route: &'static str, status: u16, took: Duration) {
        orelink_platform::metrics::http("view", &self.namespace, route, status, took);
    }
}
