//! The matcher's benchmarks through the real broker (`orelink bench e2e|floor|restore`).
//! They measure; they assert nothing. Each run uses a namespace of its own.
//!
//! - `e2e`: the same Avro messages (a) produced to a plain topic and consumed
//!   read_committed, and (b) produced to the market topic as the hub's doors
//!   write them (or, `--routed`, to the orders and capacity topics, through
//!   the matcher's router) and matched (transactional matcher, allocations
//!   read read_committed). Throughput unpaced, then order→allocation latency at a
//!   fixed rate; the raw path is measured the same way in the same run.
//! - `floor`: the same messages through one transactional hop that does
//!   nothing else, flat out beside raw, then at the latency run's rate: the
//!   floor any matcher on Kafka transactions has on the same machine.
//! - `restore`: write N events to one partition of the market topic and time
//!   the replay that rebuilds a book from it.
//! - `recovery`: the stall a SIGKILLed matcher costs, restarted in place or
//!   taken over by a standby;
//! - `failover`: the stall and latency a lost or frozen Kafka node costs the
//!   matcher, on a three-node stack;
//! - `soak`: the books' memory and snapshot size over millions of events
//!   and many dedup horizons (in process, no broker).

use crate::{BenchError, setup};
use orelink_matcher::SOURCE_HEADER;
use orelink_domain::freight::Network;
use orelink_domain::matching::Input;
use orelink_domain::topology::topics;
use orelink_domain::workload::steady_state;
use orelink_platform::trace::TraceContext;
use orelink_platform::kafka::group_progress;
use orelink_platform::{Config, Reference, apply, registry_client::RegistryClient};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;


mod e2e;
mod failover;
mod floor;
mod recovery;
mod restore;
mod soak;

pub use e2e::{E2eReport, e2e};
pub use failover::{FailoverReport, FaultFigures, failover};
pub use floor::{FloorReport, floor};
pub use recovery::{RecoveryReport, RecoveryRole, RecoveryRun, recovery};
pub use restore::{RestoreReport, restore};
pub use soak::{SoakOptions, SoakReport, SoakSample, soak};

/// A fresh namespace with the topology applied.
async fn namespace(cfg: &Config, reference: &Reference, name: &str) -> Result<Config, BenchError> {
    let mut cfg = cfg.clone();
    cfg.namespace = format!("{}bench-{name}-{}.", cfg.namespace, std::process::id());
    let registry = RegistryClient::from_config(&cfg).map_err(setup)?;
    apply::apply(&cfg.kafka.client_config("bench"), &registry, reference, &cfg.namespace, false).await.map_err(setup)?;
    Ok(cfg)
}

/// Deletes the topics of a bench namespace: each run creates a few dozen, and
/// a broker left with thousands of partitions gets slower run after run,
/// which made later runs incomparable with earlier ones.
async fn drop_namespace(cfg: &Config) {
    let result = async {
        let admin: AdminClient<DefaultClientContext> = cfg.kafka.client_config("bench").create()?;
        let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
        let mine: Vec<String> = metadata.topics().iter().map(|t| t.name().to_owned()).filter(|n| n.starts_with(&cfg.namespace)).collect();
        let names: Vec<&str> = mine.iter().map(String::as_str).collect();
        if !names.is_empty() {
            admin.delete_topics(&names, &AdminOptions::new()).await?;
        }
        Ok::<usize, rdkafka::error::KafkaError>(names.len())
    }
    .await;
    if let Err(e) = result {
        eprintln!("[bench] could not delete the topics of {}: {e}", cfg.namespace);
    }
}

/// One encoded event: its topic, key and Avro bytes, and whether it is an
/// order; `market`: the same record as a door writes it to the market topic.
struct Encoded {
    contract_topic: &'static str,
    key: String,
    bytes: Vec<u8>,
    market: Vec<u8>,
    order: bool,
}

async fn encode(cfg: &Config, reference: &Reference, inputs: &[Input]) -> Result<Vec<Encoded>, BenchError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(setup)?;
    let (orders, capacity, market) = (codec.topic(topics::ORDERS), codec.topic(topics::CAPACITY), codec.topic(topics::MARKET));
    let mut out = Vec::with_capacity(inputs.len());
    for i in inputs {
        let (contract_topic, bytes, to_market, order) = match i {
            Input::Order(o) => (
                topics::ORDERS,
                codec.encode(&orders, &o.to_wire()).await.map_err(setup)?,
                codec.encode_as(&market, "orelink.v1.OrderEvent", &o.to_wire()).await.map_err(setup)?,
                true,
            ),
            Input::Capacity(c) => (
                topics::CAPACITY,
                codec.encode(&capacity, &c.to_wire()).await.map_err(setup)?,
                codec.encode_as(&market, "orelink.v1.CapacityEvent", &c.to_wire()).await.map_err(setup)?,
                false,
            ),
            Input::Shared(_) => continue,
        };
        out.push(Encoded { contract_topic, key: i.family().to_owned(), bytes, market: to_market, order });
    }
    Ok(out)
}

/// The flat-out runs' events (`e2e`'s throughput run, `floor`'s), encoded:
/// books of `events / 24` open orders and capacities per family, then the
/// stream that makes up the rest.
async fn flat_out_events(cfg: &Config, reference: &Reference, events: usize) -> Result<Vec<Encoded>, BenchError> {
    let w = steady_state(events / 24, events - events / 2, 2026);
    let inputs: Vec<Input> = w.warm.into_iter().chain(w.stream).collect();
    encode(cfg, reference, &inputs).await
}

/// The latency runs' events (`e2e`'s, `floor`'s), encoded: one second of
/// warm-up at `rate`, then `rate * seconds` to measure. Returns all of them
/// and how many the warm-up takes.
async fn latency_events(cfg: &Config, reference: &Reference, rate: u64, seconds: u64) -> Result<(Vec<Encoded>, usize), BenchError> {
    let (warm, count) = (rate as usize, (rate * seconds) as usize);
    let w = steady_state(200, warm + count, 7);
    let inputs: Vec<Input> = w.warm.into_iter().chain(w.stream).take(warm + count).collect();
    let encoded = encode(cfg, reference, &inputs).await?;
    Ok((encoded, warm))
}

fn producer(cfg: &Config) -> Result<FutureProducer, BenchError> {
    Ok(cfg.kafka.producer_config("bench").set("linger.ms", "1").create()?)
}

/// When an event was sent: the instant, the wall clock in ms (to compare
/// with Kafka timestamps), and whether it is an order.
type Sent = HashMap<[u8; 16], (Instant, i64, bool)>;

/// CPU time this process has used (all threads, user and system), from
/// /proc/self/stat; `None` where that file is not there. Its unit is the
/// kernel's USER_HZ, 100 per second on Linux.
fn process_cpu() -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime of a /proc/<pid>/stat line.
fn stat_cpu(stat: &str) -> Option<Duration> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Microseconds of this process's CPU per event since `from`.
fn cpu_per_event(from: Option<Duration>, events: usize) -> Option<f64> {
    Some((process_cpu()? - from?).as_secs_f64() * 1e6 / events as f64)
}

/// The machine's CPU time so far, busy and total (all cores), from the
/// first line of /proc/stat; `None` where that file is not there.
fn machine_cpu() -> Option<(u64, u64)> {
    machine_cpu_of(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// (busy, total) jiffies of a /proc/stat text: idle and iowait are not busy.
fn machine_cpu_of(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Share of all cores busy since `from` (0 to 1).
fn machine_busy(from: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (from?, machine_cpu()?);
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Sends every event, each with a trace of its own; `rate` paces it (events/s), `None` = flat out.
/// Returns when each trace id was sent.
async fn send_all(producer: &FutureProducer, events: &[Encoded], topic_of: impl Fn(&Encoded) -> String, rate: Option<u64>) -> Result<Sent, BenchError> {
    send_noting(producer, events, topic_of, rate, None).await
}

/// [`send_all`] straight into the market topic, as the hub's doors write:
/// each record under its own subject there, no router headers.
async fn send_market(producer: &FutureProducer, events: &[Encoded], market: &str, rate: Option<u64>) -> Result<Sent, BenchError> {
    send_with(producer, events, |_| market.to_owned(), rate, None, true).await
}

/// Which partition each trace id's event went to, as their deliveries come.
type Partitions = Arc<Mutex<HashMap<[u8; 16], i32>>>;

/// [`send_all`], noting in `partitions` where each event went.
async fn send_noting(
    producer: &FutureProducer,
    events: &[Encoded],
    topic_of: impl Fn(&Encoded) -> String,
    rate: Option<u64>,
    partitions: Option<&Partitions>,
) -> Result<Sent, BenchError> {
    send_with(producer, events, topic_of, rate, partitions, false).await
}

async fn send_with(
    producer: &FutureProducer,
    events: &[Encoded],
    topic_of: impl Fn(&Encoded) -> String,
    rate: Option<u64>,
    partitions: Option<&Partitions>,
    as_door: bool,
) -> Result<Sent, BenchError> {
    use std::future::Future;
    let note = |trace_id, delivery: rdkafka::producer::future_producer::OwnedDeliveryResult| -> Result<(), BenchError> {
        let partition = delivery.map_err(|(e, _)| e)?.partition;
        if let Some(p) = partitions {
            p.lock().expect("partitions lock").insert(trace_id, partition);
        }
        Ok(())
    };
    let mut sent = HashMap::with_capacity(events.len());
    let mut pending = std::collections::VecDeque::new();
    let start = Instant::now();
    for (n, e) in events.iter().enumerate() {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(n as f64 / r as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let trace = TraceContext::root();
        let topic = topic_of(e);
        let payload = if as_door { &e.market } else { &e.bytes };
        let record = FutureRecord::to(&topic).key(&e.key).payload(payload).headers(trace.to_headers());
        sent.insert(trace.trace_id, (Instant::now(), wall_ms(), e.order));
        match producer.send_result(record) {
            Ok(d) => pending.push_back((trace.trace_id, d)),
            Err((err, _)) => return Err(err.into()),
        }
        // Deliveries already in, taken without waiting (so `partitions` keeps up).
        while let Some((_, d)) = pending.front_mut() {
            let std::task::Poll::Ready(delivery) = std::pin::Pin::new(d).poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) else { break };
            let (t, _) = pending.pop_front().expect("non-empty");
            note(t, delivery.map_err(|_| setup("producer gone"))?)?;
        }
        while pending.len() > 10_000 {
            let (t, d) = pending.pop_front().expect("non-empty");
            note(t, d.await.map_err(|_| setup("producer gone"))?)?;
        }
    }
    for (t, d) in pending {
        note(t, d.await.map_err(|_| setup("producer gone"))?)?;
    }
    Ok(sent)
}

/// One record received: its trace id, when, and its Kafka timestamp (ms;
/// the time its producer created it).
type Seen = ([u8; 16], Instant, Option<i64>);

/// Reads `topic` read_committed on a thread of its own, noting when each trace id arrived.
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(cfg: &Config, topic: &str) -> Result<Receiver, BenchError> {
        Self::start_all(cfg, &[topic])
    }

    /// A receiver of several topics at once.
    fn start_all(cfg: &Config, topics: &[&str]) -> Result<Receiver, BenchError> {
        let consumer: BaseConsumer = cfg
            .kafka
            .client_config("bench-reader")
            .set("group.id", format!("{}reader", cfg.namespace))
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        consumer.subscribe(topics)?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50))
                    && let Some(t) = TraceContext::from_headers(m.headers())
                {
                    s.lock().expect("receiver lock").push((t.trace_id, Instant::now(), m.timestamp().to_millis()));
                }
            }
        });
        Ok(Receiver { seen, stop, thread: Some(thread) })
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("receiver lock").len()
    }

    /// When the last record so far arrived.
    fn last_arrival(&self) -> Option<Instant> {
        self.seen.lock().expect("receiver lock").iter().map(|(_, at, _)| *at).max()
    }

    /// When the first record created (Kafka timestamp) after `wall_ms` arrived.
    fn first_created_after(&self, wall_ms: i64) -> Option<Instant> {
        self.seen.lock().expect("receiver lock").iter().filter(|(_, _, ts)| ts.is_some_and(|t| t > wall_ms)).map(|(_, at, _)| *at).min()
    }

    fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.seen.lock().expect("receiver lock"))
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| if ms.is_empty() { 0.0 } else { ms[((ms.len() - 1) as f64 * p).round() as usize] };
        Latency { samples: ms.len(), p50_ms: q(0.5), p99_ms: q(0.99), max_ms: ms.last().copied().unwrap_or(0.0) }
    }
}

/// Send to first arrival, per trace id.
fn latency(arrivals: &[Arrival]) -> Latency {
    Latency::of(arrivals.iter().map(|((s, _), (at, _))| at.duration_since(*s).as_secs_f64() * 1000.0).collect())
}

/// The same first arrivals cut at the record's Kafka timestamp, when its
/// producer (the matcher) created it: (send -> created, created -> read).
/// Wall-clock milliseconds, so coarser than `latency`.
fn latency_split(arrivals: &[Arrival]) -> (Latency, Latency) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for &((_, sent_ms), (_, read)) in arrivals {
        if let Some((created, read_ms)) = read {
            before.push((created - sent_ms) as f64);
            after.push((read_ms - created) as f64);
        }
    }
    (Latency::of(before), Latency::of(after))
}

/// One trace id's send (instant, wall ms) and first arrival (instant, and
/// (Kafka timestamp, wall ms) when the record had a timestamp).
type Arrival = ((Instant, i64), (Instant, Option<(i64, i64)>));

/// The first arrival of each trace id sent (and an order, if `orders_only`).
fn first_arrivals(sent: &Sent, got: &[Seen], orders_only: bool) -> Vec<Arrival> {
    let mut first: HashMap<[u8; 16], (Instant, Option<i64>)> = HashMap::new();
    for (t, at, ts) in got {
        first.entry(*t).or_insert((*at, *ts));
    }
    // The arrival's wall clock, from its instant and the run's one clock pair.
    let (now, now_ms) = (Instant::now(), wall_ms());
    let wall = |at: Instant| now_ms - now.duration_since(at).as_millis() as i64;
    first
        .into_iter()
        .filter_map(|(t, (at, ts))| {
            let (s, s_ms, order) = sent.get(&t)?;
            (!orders_only || *order).then(|| ((*s, *s_ms), (at, ts.map(|ts| (ts, wall(at))))))
        })
        .collect()
}

/// A plain topic of the bench namespace, for the raw path and the floor.
async fn raw_topic(cfg: &Config, name: &str) -> Result<String, BenchError> {
    let topic = format!("{}{name}", cfg.namespace);
    let admin: AdminClient<DefaultClientContext> = cfg.kafka.client_config("bench").create()?;
    let t = NewTopic::new(&topic, 6, TopicReplication::Fixed(1));
    for r in admin.create_topics([&t], &AdminOptions::new()).await? {
        r.map_err(|(t, c)| setup(format!("creating {t}: {c}")))?;
    }
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_counts_idle_and_iowait_as_not_busy() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 50 2 25 400 10 1 1 5 0 0\n";
        assert_eq!(machine_cpu_of(stat), Some((170, 990)));
        assert_eq!(machine_cpu_of("intr 1 2 3"), None);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // pid (comm) state ppid pgrp sid tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let line = "4242 (orelink (bench) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 37 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_cpu(line), Some(Duration::from_millis(2_870)));
        assert_eq!(stat_cpu("4242 (no fields)"), None);
        assert!(process_cpu().is_some(), "this test runs on Linux");
    }
}

