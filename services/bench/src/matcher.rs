//! The matcher's benchmarks through the real broker (`orelink bench e2e|floor|restore`).
//! They measure; they assert nothing. Each run uses a namespace of its own.
//!
//! - `e2e`: the same Avro messages (a) produced to a plain topic and consumed
//!   read_committed, and (b) produced to the orders and capacity topics and
//!   matched (router, matcher input, transactional matcher, allocations read
//!   read_committed). Throughput unpaced, then order→allocation latency at a
//!   fixed rate; the raw path is measured the same way in the same run.
//! - `floor`: the same messages through one transactional hop that does
//!   nothing else, flat out beside raw, then at the latency run's rate: the
//!   floor any matcher on Kafka transactions has on the same machine.
//! - `restore`: write N events to one partition of the matcher input and time
//!   the replay that rebuilds a book from it.

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


/// A fresh namespace with the topology applied.
async fn namespace(cfg: &Config, reference: &Reference, name: &str) -> Result<Config, BenchError> {
    let mut cfg = cfg.clone();
    cfg.namespace = format!("{}bench-{name}-{}.", cfg.namespace, std::process::id());
    let registry = RegistryClient::new(&cfg.registry.url, Duration::from_secs(10)).map_err(setup)?;
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

/// One encoded event: its topic, key and Avro bytes, and whether it is an order.
struct Encoded {
    contract_topic: &'static str,
    key: String,
    bytes: Vec<u8>,
    order: bool,
}

async fn encode(cfg: &Config, reference: &Reference, inputs: &[Input]) -> Result<Vec<Encoded>, BenchError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(setup)?;
    let (orders, capacity) = (codec.topic(topics::ORDERS), codec.topic(topics::CAPACITY));
    let mut out = Vec::with_capacity(inputs.len());
    for i in inputs {
        let (contract_topic, bytes, order) = match i {
            Input::Order(o) => (topics::ORDERS, codec.encode(&orders, &o.to_wire()).await.map_err(setup)?, true),
            Input::Capacity(c) => (topics::CAPACITY, codec.encode(&capacity, &c.to_wire()).await.map_err(setup)?, false),
            Input::Shared(_) => continue,
        };
        out.push(Encoded { contract_topic, key: i.family().to_owned(), bytes, order });
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
    Ok(cfg.kafka.producer_config("bench").set("linger.ms", "1").set("partitioner", "murmur2_random").create()?)
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
async fn send_all(
    producer: &FutureProducer,
    events: &[Encoded],
    topic_of: impl Fn(&Encoded) -> String,
    rate: Option<u64>,
) -> Result<Sent, BenchError> {
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
        let record = FutureRecord::to(&topic).key(&e.key).payload(&e.bytes).headers(trace.to_headers());
        sent.insert(trace.trace_id, (Instant::now(), wall_ms(), e.order));
        match producer.send_result(record) {
            Ok(d) => pending.push_back(d),
            Err((err, _)) => return Err(err.into()),
        }
        while pending.len() > 10_000 {
            let d = pending.pop_front().expect("non-empty");
            d.await.map_err(|_| setup("producer gone"))?.map_err(|(e, _)| e)?;
        }
    }
    for d in pending {
        d.await.map_err(|_| setup("producer gone"))?.map_err(|(e, _)| e)?;
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
        let consumer: BaseConsumer = cfg
            .kafka
            .client_config("bench-reader")
            .set("group.id", format!("{}reader", cfg.namespace))
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        consumer.subscribe(&[topic])?;
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct E2eReport {
    pub events: usize,
    pub raw_events_per_s: f64,
    pub e2e_events_per_s: f64,
    pub ratio: f64,
    pub rate: u64,
    pub raw_latency: Latency,
    pub order_to_allocation: Latency,
    /// Order sent -> allocation created by the matcher (its Kafka timestamp).
    pub order_to_matcher_output: Latency,
    /// Allocation created -> read by a read_committed consumer: the
    /// transaction's commit and the last hop.
    pub matcher_output_to_read: Latency,
    pub allocations: usize,
    /// This process's CPU per event in the flat-out runs, in µs: the
    /// sender and the reader (raw), or the sender, router and matcher
    /// (matched). The broker's is not in it.
    pub raw_cpu_us_per_event: Option<f64>,
    pub e2e_cpu_us_per_event: Option<f64>,
    /// Share of the machine's cores busy (everything on it, the broker
    /// included) during the raw and the matched latency phase.
    pub raw_latency_machine_busy: Option<f64>,
    pub e2e_latency_machine_busy: Option<f64>,
}

/// Watches the matcher's group commit its input. One client for the whole
/// wait: a client per check (every 20 ms) made the broker authenticate a new
/// connection each time, a load the raw path it is compared with never had.
struct Progress {
    consumer: Arc<BaseConsumer>,
    input: String,
}

impl Progress {
    fn new(cfg: &Config) -> Result<Progress, BenchError> {
        let consumer = cfg.kafka.client_config("bench-probe").set("group.id", orelink_matcher::processor_group(cfg)).create()?;
        Ok(Progress { consumer: Arc::new(consumer), input: format!("{}orelink.matcher-input.v1", cfg.namespace) })
    }

    /// True once the matcher has committed its input up to the end and the input holds `n` events.
    async fn done(&self, n: i64) -> Result<bool, BenchError> {
        let (c, input) = (self.consumer.clone(), self.input.clone());
        let progress = tokio::task::spawn_blocking(move || group_progress(&c, &input, Duration::from_secs(5))).await.map_err(setup)??;
        Ok(progress.iter().map(|p| p.end).sum::<i64>() >= n && progress.iter().all(|p| p.lag() == 0))
    }
}

async fn raw_topic(cfg: &Config, name: &str) -> Result<String, BenchError> {
    let topic = format!("{}{name}", cfg.namespace);
    let admin: AdminClient<DefaultClientContext> = cfg.kafka.client_config("bench").create()?;
    let t = NewTopic::new(&topic, 6, TopicReplication::Fixed(1));
    for r in admin.create_topics([&t], &AdminOptions::new()).await? {
        r.map_err(|(t, c)| setup(format!("creating {t}: {c}")))?;
    }
    Ok(topic)
}

/// Runs the end-to-end benchmark: `events` events unpaced for throughput, then
/// `rate` events/s for `seconds` for latency, raw and matched.
///
/// Warm-up: before its latency is measured, each path takes one second of
/// the same traffic and drains it. The first transaction, the groups'
/// joins and the first metadata lookups are start-up, not the steady state a
/// latency target is about; they had held the first second's events for up
/// to ~600 ms, which alone set the p99 of a 20 s run (`bench floor`, per second).
pub async fn e2e(base: &Config, reference: &Reference, events: usize, rate: u64, seconds: u64, log: &(dyn Fn(&str) + Sync)) -> Result<E2eReport, BenchError> {
    // Throughput: the same messages, flat out.
    let cfg = namespace(base, reference, "tput").await?;
    log("encoding the throughput run's events");
    let encoded = flat_out_events(&cfg, reference, events).await?;
    let n = encoded.len();
    let producer = producer(&cfg)?;

    let raw = raw_topic(&cfg, "raw").await?;
    let rx = Receiver::start(&cfg, &raw)?;
    tokio::time::sleep(Duration::from_secs(3)).await; // the reader joins its group
    log("raw: produce -> consume, flat out");
    let (t0, cpu0) = (Instant::now(), process_cpu());
    let raw_sent = send_all(&producer, &encoded, |_| raw.clone(), None).await?;
    while rx.count() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let raw_secs = t0.elapsed().as_secs_f64();
    let raw_cpu_us_per_event = cpu_per_event(cpu0, n);
    drop(rx.finish());
    drop(raw_sent);

    log("matched: orders and capacity -> router -> matcher -> allocations, flat out");
    let cancel = CancellationToken::new();
    let mut mcfg = cfg.clone();
    mcfg.matcher.instance_id = "bench".into();
    let matcher = tokio::spawn(orelink_matcher::run(mcfg, reference.clone(), cancel.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ns = cfg.namespace.clone();
    let progress = Progress::new(&cfg)?;
    let (t0, cpu0) = (Instant::now(), process_cpu());
    send_all(&producer, &encoded, |e| format!("{ns}{}", e.contract_topic), None).await?;
    log(&format!("matched: all sent after {:.2} s", t0.elapsed().as_secs_f64()));
    while !progress.done(n as i64).await? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e2e_secs = t0.elapsed().as_secs_f64();
    let e2e_cpu_us_per_event = cpu_per_event(cpu0, n);
    cancel.cancel();
    let stats = matcher.await.map_err(setup)?.map_err(setup)?;
    drop_namespace(&cfg).await;

    // Latency at a fixed rate, in a fresh namespace. Each path first takes a
    // second of the same traffic, unmeasured, and drains it (`warm_up`).
    let cfg = namespace(base, reference, "lat").await?;
    let (encoded, warm) = latency_events(&cfg, reference, rate, seconds).await?;
    let (warm_up, measured) = encoded.split_at(warm.min(encoded.len()));
    let producer = self::producer(&cfg)?;
    let raw = raw_topic(&cfg, "raw").await?;
    let rx = Receiver::start(&cfg, &raw)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_all(&producer, warm_up, |_| raw.clone(), Some(rate)).await?;
    while rx.count() < warm_up.len() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log(&format!("raw latency at {rate} events/s for {seconds} s"));
    let busy0 = machine_cpu();
    let sent = send_all(&producer, measured, |_| raw.clone(), Some(rate)).await?;
    while rx.count() < encoded.len() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let raw_latency_machine_busy = machine_busy(busy0);
    let raw_latency = latency(&first_arrivals(&sent, &rx.finish(), false));

    let cancel = CancellationToken::new();
    let mut mcfg = cfg.clone();
    mcfg.matcher.instance_id = "bench".into();
    let matcher = tokio::spawn(orelink_matcher::run(mcfg, reference.clone(), cancel.clone()));
    let rx = Receiver::start(&cfg, &format!("{}{}", cfg.namespace, topics::ALLOCATIONS))?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ns = cfg.namespace.clone();
    let progress = Progress::new(&cfg)?;
    send_all(&producer, warm_up, |e| format!("{ns}{}", e.contract_topic), Some(rate)).await?;
    while !progress.done(warm_up.len() as i64).await? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log(&format!("order -> allocation latency at {rate} events/s for {seconds} s"));
    let busy0 = machine_cpu();
    let sent = send_all(&producer, measured, |e| format!("{ns}{}", e.contract_topic), Some(rate)).await?;
    let e2e_latency_machine_busy = machine_busy(busy0);
    while !progress.done(encoded.len() as i64).await? {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let allocations = rx.finish();
    cancel.cancel();
    matcher.await.map_err(setup)?.map_err(setup)?;
    drop_namespace(&cfg).await;
    let arrivals = first_arrivals(&sent, &allocations, true);
    let order_to_allocation = latency(&arrivals);
    let (order_to_matcher_output, matcher_output_to_read) = latency_split(&arrivals);

    let raw_events_per_s = n as f64 / raw_secs;
    let e2e_events_per_s = n as f64 / e2e_secs;
    Ok(E2eReport {
        events: n,
        raw_events_per_s,
        e2e_events_per_s,
        ratio: e2e_events_per_s / raw_events_per_s,
        rate,
        raw_latency,
        order_to_allocation,
        order_to_matcher_output,
        matcher_output_to_read,
        allocations: stats.processor.allocations as usize,
        raw_cpu_us_per_event,
        e2e_cpu_us_per_event,
        raw_latency_machine_busy,
        e2e_latency_machine_busy,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FloorReport {
    /// Flat out (when asked for): the same messages produced and consumed
    /// raw, and through the forwarder, in events/s, and their ratio.
    pub raw_events_per_s: Option<f64>,
    pub forwarded_events_per_s: Option<f64>,
    pub ratio: Option<f64>,
    /// Events of the latency run, its warm-up included.
    pub events: usize,
    pub rate: u64,
    /// Sent -> read read_committed after one transactional hop.
    pub latency: Latency,
    /// Transactions of the whole run, flat out and warm-up included.
    pub transactions: u64,
    /// One transaction each (begin to committed), in ms.
    pub transaction: Latency,
    pub machine_busy: Option<f64>,
}

/// The floor of one exactly-once hop on this machine: the `e2e` benchmark's
/// messages through a forwarder on the matcher's own exactly-once loop
/// (`txn_loop`: read_committed in, each round and its offsets in one
/// transaction on a commit thread, read_committed out) that does nothing
/// else: no router hop, no Avro, no engine. A matcher built on that loop
/// cannot do better here. First `events` flat
/// out, raw and forwarded (none when 0), then `rate` events/s for `seconds`.
pub async fn floor(base: &Config, reference: &Reference, events: usize, rate: u64, seconds: u64, log: &(dyn Fn(&str) + Sync)) -> Result<FloorReport, BenchError> {
    let cfg = namespace(base, reference, "floor").await?;
    let flat = if events > 0 { flat_out_events(&cfg, reference, events).await? } else { Vec::new() };
    let (encoded, warm) = latency_events(&cfg, reference, rate, seconds).await?;
    let (warm_up, measured) = encoded.split_at(warm.min(encoded.len()));
    let (input, output, raw) = (raw_topic(&cfg, "floor-in").await?, raw_topic(&cfg, "floor-out").await?, raw_topic(&cfg, "raw").await?);
    let stop = CancellationToken::new();
    let forwarder = {
        let (cfg, input, output, stop) = (cfg.clone(), input.clone(), output.clone(), stop.clone());
        std::thread::spawn(move || forward(&cfg, &input, &output, stop))
    };
    let rx = Receiver::start(&cfg, &output)?;
    let raw_rx = Receiver::start(&cfg, &raw)?;
    tokio::time::sleep(Duration::from_secs(4)).await; // the groups joined
    let producer = producer(&cfg)?;
    // Until the forwarder has passed on `n` events; a forwarder that failed
    // ends its thread, and its error is reported below.
    let forwarded = async |n: usize, deadline: Duration| {
        let deadline = Instant::now() + deadline;
        while rx.count() < n && !forwarder.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (mut raw_events_per_s, mut forwarded_events_per_s) = (None, None);
    if !flat.is_empty() {
        log("raw: produce -> consume, flat out");
        let t0 = Instant::now();
        send_all(&producer, &flat, |_| raw.clone(), None).await?;
        while raw_rx.count() < flat.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        raw_events_per_s = Some(flat.len() as f64 / t0.elapsed().as_secs_f64());
        log("forwarded: produce -> transactional hop -> consume, flat out");
        let t0 = Instant::now();
        send_all(&producer, &flat, |_| input.clone(), None).await?;
        forwarded(flat.len(), Duration::from_secs(600)).await;
        forwarded_events_per_s = Some(flat.len() as f64 / t0.elapsed().as_secs_f64());
    }
    drop(raw_rx.finish());
    // The same warm-up as `e2e`'s latency runs.
    send_all(&producer, warm_up, |_| input.clone(), Some(rate)).await?;
    forwarded(flat.len() + warm_up.len(), Duration::from_secs(60)).await;
    log(&format!("one transactional hop at {rate} events/s for {seconds} s"));
    let busy0 = machine_cpu();
    let sent = send_all(&producer, measured, |_| input.clone(), Some(rate)).await?;
    let machine_busy = machine_busy(busy0);
    forwarded(flat.len() + encoded.len(), Duration::from_secs(60)).await;
    let got = rx.finish();
    stop.cancel();
    let txns = tokio::task::spawn_blocking(move || forwarder.join()).await.map_err(setup)?.map_err(|_| setup("the forwarder panicked"))??;
    drop_namespace(&cfg).await;
    if got.len() < flat.len() + encoded.len() {
        return Err(setup(format!("only {} of {} events came through the forwarder", got.len(), flat.len() + encoded.len())));
    }
    Ok(FloorReport {
        raw_events_per_s,
        forwarded_events_per_s,
        ratio: raw_events_per_s.zip(forwarded_events_per_s).map(|(r, f)| f / r),
        events: encoded.len(),
        rate,
        latency: latency(&first_arrivals(&sent, &got, false)),
        transactions: txns.len() as u64,
        transaction: Latency::of(txns),
        machine_busy,
    })
}

/// The floor's forwarder: poll a round, forward it in one transaction with
/// its offsets, commit, again, until `stop`. Returns each transaction's ms.
/// The floor's transform: each message forwarded as it is, on the one
/// exactly-once loop the matcher runs on; times each transaction (from its
/// round being sealed to its commit being known).
struct Forward {
    sealed_at: Option<Instant>,
    took: Vec<f64>,
}

impl orelink_platform::txn_loop::Transform for Forward {
    fn apply(&mut self, m: &rdkafka::message::OwnedMessage, out: &mut Vec<orelink_platform::txn_loop::Record>) -> Result<(), orelink_platform::txn_loop::Step> {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default());
        let trace = TraceContext::from_headers(m.headers()).unwrap_or_else(TraceContext::root);
        out.push(orelink_platform::txn_loop::Record { output: 0, partition: m.partition(), key: Arc::from(&*key), payload: m.payload().unwrap_or_default().to_vec(), trace });
        Ok(())
    }

    fn sealed(&mut self, _offsets: &std::collections::BTreeMap<i32, i64>) {
        self.sealed_at = Some(Instant::now());
    }

    fn committed(&mut self) {
        if let Some(t) = self.sealed_at.take() {
            self.took.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }

    fn aborted(&mut self) {
        self.sealed_at = None;
    }
}

/// Forwards `input` to `output` until `stop`, with the matcher processor's
/// client and loop settings; returns each transaction's duration in ms.
fn forward(cfg: &Config, input: &str, output: &str, stop: CancellationToken) -> Result<Vec<f64>, BenchError> {
    use orelink_platform::txn_loop::{Settings, TxnLoop};
    let timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
    let settings = Settings {
        input: input.to_owned(),
        outputs: vec![output.to_owned()],
        batch_max: cfg.matcher.batch_max,
        batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
        txn_timeout: timeout,
        retry_backoff: Duration::from_millis(cfg.consumer.retry_backoff_ms),
        name: "floor-commit".into(),
    };
    let mut producer = cfg.kafka.transactional_config("bench-floor", &format!("{}floor", cfg.namespace), timeout);
    producer.set("linger.ms", "0");
    let txn = TxnLoop::new(&cfg.kafka.consumer_config("bench-floor", &format!("{}floor", cfg.namespace)), &producer, settings)?;
    let mut hop = Forward { sealed_at: None, took: Vec::new() };
    txn.run(&mut hop, &stop).map_err(setup)?;
    Ok(hop.took)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub open_orders: usize,
    pub open_capacities: usize,
    /// The restored book's snapshot: its size, the time to take it, and a
    /// restore from it (read from the snapshot topic, loaded, nothing left to replay).
    pub snapshot_bytes: usize,
    pub snapshot_take_ms: f64,
    pub from_snapshot_seconds: f64,
}

/// Writes `events` events to partition 0 of a fresh matcher input and times the replay.
pub async fn restore(base: &Config, reference: &Reference, events: usize, log: &(dyn Fn(&str) + Sync)) -> Result<RestoreReport, BenchError> {
    let cfg = namespace(base, reference, "restore").await?;
    let w = steady_state(events / 100, events - events / 100 * 12, 99);
    let inputs: Vec<Input> = w.warm.into_iter().chain(w.stream).take(events).collect();
    log(&format!("encoding {} events", inputs.len()));
    let encoded = encode(&cfg, reference, &inputs).await?;
    let topic = format!("{}orelink.matcher-input.v1", cfg.namespace);
    let producer = producer(&cfg)?;
    log(&format!("writing them to {topic} partition 0"));
    let mut pending = std::collections::VecDeque::new();
    for e in &encoded {
        let headers = OwnedHeaders::new().insert(Header { key: SOURCE_HEADER, value: Some(e.contract_topic.as_bytes()) });
        let rec = FutureRecord::to(&topic).key(&e.key).payload(&e.bytes).partition(0).headers(headers);
        pending.push_back(producer.send_result(rec).map_err(|(e, _)| e)?);
        while pending.len() > 50_000 {
            pending.pop_front().expect("non-empty").await.map_err(|_| setup("producer gone"))?.map_err(|(e, _)| e)?;
        }
    }
    for d in pending {
        d.await.map_err(|_| setup("producer gone"))?.map_err(|(e, _)| e)?;
    }
    let codec = orelink_platform::codec(&cfg, reference).map_err(setup)?;
    let network = Arc::new(Network::new(&reference.topology));
    let rc = cfg.kafka.reader_config("bench-restore", &format!("{}restore", cfg.namespace));
    let snapshot_rc = rc.clone();
    log("restoring");
    let rt = tokio::runtime::Handle::current();
    let n = encoded.len() as i64;
    let (secs, engine, count) = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let r = orelink_matcher::restore(&rc, &topic, 0, n, &codec, &network, &rt);
        (t0.elapsed().as_secs_f64(), r)
    })
    .await
    .map(|(s, r)| r.map(|(e, c)| (s, e, c)))
    .map_err(setup)?
    .map_err(setup)?;
    let summary = engine.summary();

    log("snapshotting the restored book, then restoring from the snapshot");
    let t0 = Instant::now();
    let bytes = engine.snapshot();
    let snapshot_take_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let snapshot_topic = format!("{}{}", cfg.namespace, topics::MATCHER_SNAPSHOTS);
    let store = orelink_matcher::snapshots::Store::new(&cfg.kafka.producer_config("bench"), snapshot_topic.clone())?;
    store.publish(0, n, &bytes);
    store.flush(Duration::from_secs(60));
    let network = engine.network().clone();
    let catalog = reference.catalog.clone();
    let from_snapshot = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let loaded = orelink_matcher::snapshots::load(&snapshot_rc, &snapshot_topic, 0, n, &network, &catalog);
        loaded.map(|(e, at)| (t0.elapsed().as_secs_f64(), e.snapshot(), at))
    })
    .await
    .map_err(setup)?
    .ok_or_else(|| setup("the snapshot just written could not be loaded"))?;
    if from_snapshot.1 != bytes || from_snapshot.2 != n {
        return Err(setup("the book loaded from the snapshot differs from the replayed one"));
    }
    drop_namespace(&cfg).await;
    Ok(RestoreReport {
        events: count,
        seconds: secs,
        events_per_s: count as f64 / secs,
        open_orders: summary.open_orders,
        open_capacities: summary.open_capacities,
        snapshot_bytes: bytes.len(),
        snapshot_take_ms,
        from_snapshot_seconds: from_snapshot.0,
    })
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
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let line = "4242 (orelink (bench) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 37 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_cpu(line), Some(Duration::from_millis(2_870)));
        assert_eq!(stat_cpu("4242 (no fields)"), None);
        assert!(process_cpu().is_some(), "this test runs on Linux");
    }
}
