//! Prometheus text exposition for the HTTP roles: latency histograms and
//! counters. Labels stay low-cardinality: routes are route templates.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

#[derive(Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}\n", self.counts[i]));
        }
        out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n", self.count));
        out.push_str(&format!("{name}_sum{{{labels}}} {}\n", self.sum));
        out.push_str(&format!("{name}_count{{{labels}}} {}\n", self.count));
    }
}

/// Request latency by (route template, status).
#[derive(Default)]
pub struct HttpMetrics {
    by_route: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
}

impl HttpMetrics {
    pub fn observe(&self, route: &'static str, status: u16, took: Duration) {
        self.by_route.lock().expect("metrics lock").entry((route, status)).or_default().observe(took.as_secs_f64());
    }

    /// Requests answered with `status`, over all routes.
    pub fn count_status(&self, pred: impl Fn(u16) -> bool) -> u64 {
        self.by_route.lock().expect("metrics lock").iter().filter(|((_, s), _)| pred(*s)).map(|(_, h)| h.count).sum()
    }

    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP orelink_http_request_seconds HTTP request latency by route template and status.\n# TYPE orelink_http_request_seconds histogram\n");
        for ((route, status), h) in self.by_route.lock().expect("metrics lock").iter() {
            h.render(out, "orelink_http_request_seconds", &format!("route=\"{route}\",status=\"{status}\""));
        }
    }
}

/// Appends one counter (one sample per label set) in the exposition format.
pub fn counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
    for (labels, v) in samples {
        if labels.is_empty() {
            out.push_str(&format!("{name} {v}\n"));
        } else {
            out.push_str(&format!("{name}{{{labels}}} {v}\n"));
        }
    }
}
