//! Logging and traces: `tracing` to stderr, text or JSON, filtered by
//! `log.level` (overridden by RUST_LOG); with `telemetry.otlp_endpoint` set,
//! the same spans are exported over OTLP/HTTP through `tracing-opentelemetry`.
//!
//! A hop (an HTTP request, a consumed event) is one span whose parent is the
//! `traceparent` it came with; what it produces carries the span's own
//! context ([`hop`]), so a collector sees one trace from the gateway to the
//! allocation. Export is best effort: spans are batched on their own thread
//! and dropped, never waited for, when the collector is away.

use crate::config::{LogSettings, TelemetrySettings};
use crate::trace::TraceContext;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Whether spans are exported: without an exporter, [`hop`] skips the
/// OpenTelemetry bookkeeping, which the hot paths would pay per event.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Logs only (commands that are not a long-running role).
pub fn init(settings: &LogSettings) {
    let _ = install(settings, None);
}

/// Flushes exported spans when dropped; hold it for the life of the process.
#[must_use = "spans are flushed when this is dropped"]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // The batch processor's thread does the export; this only waits for it.
            if let Err(e) = p.shutdown() {
                eprintln!("orelink: flushing spans: {e}");
            }
        }
    }
}

/// Logs, and spans exported as `service` when `telemetry.otlp_endpoint` is set.
pub fn init_with_traces(log: &LogSettings, telemetry: &TelemetrySettings, service: &str) -> Traces {
    let endpoint = telemetry.otlp_endpoint.trim_end_matches('/');
    if endpoint.is_empty() {
        init(log);
        return Traces { provider: None };
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(std::time::Duration::from_secs(5))
        .build();
    let exporter = match exporter {
        Ok(e) => e,
        Err(e) => {
            init(log);
            tracing::warn!(error = %e, endpoint, "spans are not exported: the OTLP exporter could not be built");
            return Traces { provider: None };
        }
    };
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("orelink"));
    if install(log, Some(layer.boxed())) {
        EXPORTING.store(true, Ordering::Relaxed);
        Traces { provider: Some(provider) }
    } else {
        // A subscriber was already installed (a test, `run all` called twice): it stays.
        Traces { provider: None }
    }
}

type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The filter `log.level` (or RUST_LOG) names.
fn level_filter(settings: &LogSettings) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level))
}

/// Whether `meta` is one of the hub's per-event hop spans (`match`,
/// `consume`, ...). They are at debug level: the log shows them only at
/// debug, so at the default level an event pays no span, while an exporter
/// takes them at any level (a trace needs every hop).
fn hop_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && *meta.level() <= tracing::Level::DEBUG && meta.target().starts_with("orelink")
}

fn install(settings: &LogSettings, otel: Option<Boxed>) -> bool {
    use tracing_subscriber::filter::FilterExt;
    let fmt: Boxed = if settings.format == "json" {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(level_filter(settings)).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(level_filter(settings)).boxed()
    };
    // Each layer has its own filter: the log's level does not decide what is exported.
    let otel = otel.map(|l| -> Boxed { l.with_filter(level_filter(settings).or(tracing_subscriber::filter::filter_fn(hop_span))).boxed() });
    // A second init (tests, `run all`) keeps the first subscriber.
    let layers: Vec<Boxed> = otel.into_iter().chain([fmt]).collect();
    tracing_subscriber::registry().with(layers).try_init().is_ok()
}

/// The context a hop writes on what it produces, `span` being the hop's span.
/// Exporting, it is the span's own (its parent set to `parent`), so the next
/// hop's parent is a span the collector has; otherwise a new span id under
/// `parent`, or a new trace.
pub fn hop(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    if EXPORTING.load(Ordering::Relaxed) && !span.is_disabled() {
        if let Some(p) = parent {
            let flags = if p.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            let remote = SpanContext::new(TraceId::from_bytes(p.trace_id), SpanId::from_bytes(p.span_id), flags, true, TraceState::default());
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let cx = span.context();
        let own = cx.span().span_context().clone();
        if own.is_valid() {
            return TraceContext { trace_id: own.trace_id().to_bytes(), span_id: own.span_id().to_bytes(), sampled: own.is_sampled() };
        }
    }
    parent.map(|p| p.child()).unwrap_or_else(TraceContext::root)
}

/// The span of one HTTP request to `role` and the context it hands on: the
/// child of the request's `traceparent` if it has a valid one (an invalid one
/// is ignored, as the W3C spec says), else a new trace. The caller answers
/// with the context's `traceparent`, so a client can find its request's trace.
pub fn http_hop(role: &'static str, method: &str, path: &str, headers: &reqwest::header::HeaderMap) -> (tracing::Span, TraceContext) {
    let parent = headers.get(crate::trace::HEADER).and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
    let span = tracing::info_span!("http", otel.name = %format_args!("{method} {path}"), role, method, path, trace_id = tracing::field::Empty);
    let trace = hop(&span, parent);
    span.record("trace_id", trace.trace_id_hex());
    (span, trace)
}
