//! Prometheus metrics through the `metrics` facade: one recorder per process
//! (its Prometheus exporter, installed on first use), rendered by every
//! role's `/metrics`: the view, gateway and edge on their own HTTP servers,
//! the other roles (and `run all`) on `telemetry.metrics_listen`.
//!
//! The same names in every role, with low-cardinality labels only: `role`,
//! `topic` (the deployment's topics), `partition` (of a topic), `outcome`, `route` (templates, never
//! raw paths), `status`, `kind`, and `namespace` (the deployment's topic
//! prefix, one value outside tests), so several instances in one process
//! (tests, `run all`) stay apart.
//!
//! - `orelink_events_total{role,topic,outcome}`: input events by outcome
//!   (`delivered`, `dead_lettered` in the at-least-once loop; `committed` in
//!   the exactly-once loop);
//! - `orelink_transactions_total{role,outcome}` (`committed`, `aborted`) and
//!   `orelink_transaction_seconds{role}`: the exactly-once loop's rounds;
//! - `orelink_records_total{role,topic}`: records the exactly-once loop committed;
//! - `orelink_http_request_seconds{role,route,status}`: HTTP latency;
//! - role-specific families named `orelink_<role>_...`, such as
//!   `orelink_matcher_book_entries{topic,partition,kind}` (what each
//!   matcher book holds; `partition` is bounded by the input's partitions).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics shows nothing of it");
        }
        handle
    })
}

/// Installs the recorder now (so that nothing recorded before the first
/// render is lost); idempotent.
pub fn install() {
    handle();
}

/// The exposition text of every metric of this process.
pub fn render() -> String {
    handle().render()
}

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// One HTTP request answered by `role`.
pub fn http(role: &'static str, namespace: &str, route: &'static str, status: u16, took: Duration) {
    metrics::histogram!("orelink_http_request_seconds", "role" => role, "namespace" => namespace.to_owned(), "route" => route, "status" => status.to_string())
        .record(took.as_secs_f64());
}

/// `n` input events of `topic` that `role` handled with `outcome`.
pub fn events(role: &str, topic: &str, outcome: &'static str, n: u64) {
    metrics::counter!("orelink_events_total", "role" => role.to_owned(), "topic" => topic.to_owned(), "outcome" => outcome).increment(n);
}

/// `orelink_events_total` of one role, for a loop that counts every event:
/// each (topic, outcome) handle is made once, so an event costs an
/// increment, not a label set built, hashed and looked up.
pub struct EventCounters {
    role: String,
    counters: std::collections::HashMap<String, Vec<(&'static str, metrics::Counter)>>,
}

impl EventCounters {
    pub fn new(role: &str) -> EventCounters {
        EventCounters { role: role.to_owned(), counters: Default::default() }
    }

    /// `n` input events of `topic` handled with `outcome`.
    pub fn add(&mut self, topic: &str, outcome: &'static str, n: u64) {
        if let Some((_, c)) = self.counters.get(topic).and_then(|v| v.iter().find(|(o, _)| *o == outcome)) {
            c.increment(n);
            return;
        }
        let c = metrics::counter!("orelink_events_total", "role" => self.role.clone(), "topic" => topic.to_owned(), "outcome" => outcome);
        c.increment(n);
        self.counters.entry(topic.to_owned()).or_default().push((outcome, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_recorded_is_rendered_with_its_labels() {
        install();
        events("test-role", "t.orelink.orders.v1", "delivered", 1);
        let mut counters = EventCounters::new("test-role");
        counters.add("t.orelink.orders.v1", "delivered", 1);
        counters.add("t.orelink.orders.v1", "delivered", 1);
        http("test-role", "t.", "/v1/orders", 202, Duration::from_millis(3));
        let text = render();
        assert!(
            text.lines().any(|l| l == "orelink_events_total{role=\"test-role\",topic=\"t.orelink.orders.v1\",outcome=\"delivered\"} 3"),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("orelink_http_request_seconds_bucket{role=\"test-role\",namespace=\"t.\",route=\"/v1/orders\",status=\"202\",le=\"0.005\"} 1")), "{text}");
    }
}
