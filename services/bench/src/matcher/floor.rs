//! `orelink bench floor`: one transactional hop on the exactly-once loop, doing nothing else.

use super::*;

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
    fn apply(&mut self, m: &rdkafka::message::BorrowedMessage<'_>, out: &mut Vec<orelink_platform::txn_loop::Record>) -> Result<(), orelink_platform::txn_loop::Step> {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default());
        let trace = TraceContext::from_headers(m.headers()).unwrap_or_else(TraceContext::root);
        out.push(orelink_platform::txn_loop::Record { output: 0, key: Arc::from(&*key), payload: m.payload().unwrap_or_default().to_vec(), trace });
        Ok(())
    }

    fn sealed(&mut self, _offsets: &std::collections::BTreeMap<orelink_platform::txn_loop::Part, i64>) {
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
        inputs: vec![input.to_owned()],
        outputs: vec![output.to_owned()],
        batch_max: cfg.matcher.batch_max,
        batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
        txn_timeout: timeout,
        stuck_after: cfg.kafka.stuck_after(),
        retry_backoff: Duration::from_millis(cfg.consumer.retry_backoff_ms),
        role: "bench-floor".into(),
    };
    let mut producer = cfg.kafka.transactional_config("bench-floor", &format!("{}floor", cfg.namespace), timeout);
    producer.set("linger.ms", "0");
    let txn = TxnLoop::new(&cfg.kafka.consumer_config("bench-floor", &format!("{}floor", cfg.namespace)), &producer, settings)?;
    let mut hop = Forward { sealed_at: None, took: Vec::new() };
    txn.run(&mut hop, &stop).map_err(setup)?;
    Ok(hop.took)
}

