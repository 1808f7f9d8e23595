//! `orelink bench e2e`: matched end to end beside raw produce→consume.

use super::*;

#[derive(Debug, Clone, serde::Serialize)]
pub struct E2eReport {
    /// True when the matched events came as Kafka clients write them, to the
    /// per-type topics through the router (`--routed`); else as the doors
    /// write them, straight to the market topic.
    pub routed: bool,
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
    /// sender and the reader (raw), or the sender, the matcher role and the
    /// reader of its outputs (matched). The broker's is not in it.
    pub raw_cpu_us_per_event: Option<f64>,
    pub e2e_cpu_us_per_event: Option<f64>,
    /// Share of the machine's cores busy (everything on it, the broker
    /// included) during the raw and the matched latency phase.
    pub raw_latency_machine_busy: Option<f64>,
    pub e2e_latency_machine_busy: Option<f64>,
    /// The same latency run's messages through one transactional hop that
    /// does nothing else (`bench floor`), right after the matched run.
    pub floor_latency: Latency,
    /// p99 order->allocation over the floor's p99.
    pub p99_over_floor: f64,
    /// Share of the machine's cores busy over the whole invocation.
    pub machine_busy: Option<f64>,
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
        Ok(Progress { consumer: Arc::new(consumer), input: format!("{}{}", cfg.namespace, topics::MARKET) })
    }

    /// True once the matcher has committed its input up to the end and the input holds `n` events.
    async fn done(&self, n: i64) -> Result<bool, BenchError> {
        let (c, input) = (self.consumer.clone(), self.input.clone());
        let progress = tokio::task::spawn_blocking(move || group_progress(&c, &input, Duration::from_secs(5))).await.map_err(setup)??;
        Ok(progress.iter().map(|p| p.end).sum::<i64>() >= n && progress.iter().all(|p| p.lag() == 0))
    }
}

/// Runs the end-to-end benchmark: `events` events unpaced for throughput, then
/// `rate` events/s for `seconds` for latency, raw and matched.
///
/// Warm-up: before its latency is measured, each path takes one second of
/// the same traffic and drains it. The first transaction, the groups'
/// joins and the first metadata lookups are start-up, not the steady state a
/// latency target is about; they had held the first second's events for up
/// to ~600 ms, which alone set the p99 of a 20 s run (`bench floor`, per second).
///
/// Last, the floor (`bench floor`'s latency run, no flat-out part) at the same
/// rate, so the matched p99 is set against the floor measured minutes apart
/// on the same machine, not against a figure from another hour.
///
/// The matched events go where the hub's doors write them, straight to the
/// market topic; `routed`: where Kafka clients write them under the
/// contract, the per-type topics, so the matcher's router forwards each.
/// The whole matcher role runs either way.
pub async fn e2e(base: &Config, reference: &Reference, events: usize, rate: u64, seconds: u64, routed: bool, log: &(dyn Fn(&str) + Sync)) -> Result<E2eReport, BenchError> {
    let busy_all = machine_cpu();
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

    log(if routed { "matched: orders and capacity -> router -> market -> matcher -> allocations, flat out" } else { "matched: orders and capacity -> market -> matcher -> allocations, flat out" });
    let cancel = CancellationToken::new();
    let matcher = start_matching(&cfg, reference, cancel.clone());
    // The matched run ends when the last output is read, read_committed, as
    // the raw one ends when its last message is: the matcher's committed
    // offsets only say when to stop looking (a probe every 20 ms had cost the
    // broker ~400 requests/s and ended the run up to 0.5 s late).
    let (allocations_topic, status_topic) = (format!("{}{}", cfg.namespace, topics::ALLOCATIONS), format!("{}{}", cfg.namespace, topics::ORDER_STATUS));
    let outputs = Receiver::start_all(&cfg, &[&allocations_topic, &status_topic])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let progress = Progress::new(&cfg)?;
    let (t0, cpu0) = (Instant::now(), process_cpu());
    send_matched(&cfg, &producer, &encoded, routed, None).await?;
    log(&format!("matched: all sent after {:.2} s", t0.elapsed().as_secs_f64()));
    while !progress.done(n as i64).await? {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Outputs still on their way to the reader.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e2e_cpu_us_per_event = cpu_per_event(cpu0, n);
    let e2e_secs = outputs.last_arrival().map_or_else(|| t0.elapsed(), |at| at - t0).as_secs_f64();
    drop(outputs.finish());
    cancel.cancel();
    let allocated = matcher.await.map_err(setup)??;
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
    let matcher = start_matching(&cfg, reference, cancel.clone());
    let rx = Receiver::start(&cfg, &format!("{}{}", cfg.namespace, topics::ALLOCATIONS))?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let progress = Progress::new(&cfg)?;
    send_matched(&cfg, &producer, warm_up, routed, Some(rate)).await?;
    while !progress.done(warm_up.len() as i64).await? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log(&format!("order -> allocation latency at {rate} events/s for {seconds} s"));
    let busy0 = machine_cpu();
    let sent = send_matched(&cfg, &producer, measured, routed, Some(rate)).await?;
    let e2e_latency_machine_busy = machine_busy(busy0);
    while !progress.done(encoded.len() as i64).await? {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let allocations = rx.finish();
    cancel.cancel();
    matcher.await.map_err(setup)??;
    drop_namespace(&cfg).await;
    let arrivals = first_arrivals(&sent, &allocations, true);
    let order_to_allocation = latency(&arrivals);
    let (order_to_matcher_output, matcher_output_to_read) = latency_split(&arrivals);

    let floor = super::floor::floor(base, reference, 0, rate, seconds, log).await?;
    let machine_busy = machine_busy(busy_all);
    let p99_over_floor = order_to_allocation.p99_ms / floor.latency.p99_ms;

    let raw_events_per_s = n as f64 / raw_secs;
    let e2e_events_per_s = n as f64 / e2e_secs;
    Ok(E2eReport {
        routed,
        events: n,
        raw_events_per_s,
        e2e_events_per_s,
        ratio: e2e_events_per_s / raw_events_per_s,
        rate,
        raw_latency,
        order_to_allocation,
        order_to_matcher_output,
        matcher_output_to_read,
        allocations: allocated as usize,
        raw_cpu_us_per_event,
        e2e_cpu_us_per_event,
        raw_latency_machine_busy,
        e2e_latency_machine_busy,
        p99_over_floor,
        floor_latency: floor.latency,
        machine_busy,
    })
}


/// The matcher role for a run; resolves to the allocations it wrote.
fn start_matching(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> tokio::task::JoinHandle<Result<u64, BenchError>> {
    let mut mcfg = cfg.clone();
    mcfg.matcher.instance_id = "bench".into();
    let reference = reference.clone();
    tokio::spawn(async move { Ok(orelink_matcher::run(mcfg, reference, cancel).await.map_err(setup)?.processor.allocations) })
}

/// Sends the matched path's events: to the market topic as the doors do,
/// or (`routed`) to their per-type contract topics.
async fn send_matched(cfg: &Config, producer: &FutureProducer, events: &[Encoded], routed: bool, rate: Option<u64>) -> Result<Sent, BenchError> {
    let ns = &cfg.namespace;
    if routed {
        send_all(producer, events, |e| format!("{ns}{}", e.contract_topic), rate).await
    } else {
        send_market(producer, events, &format!("{ns}{}", topics::MARKET), rate).await
    }
}
