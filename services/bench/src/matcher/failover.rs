//! `orelink bench failover`: the faults of `tests/tests/failover.rs` at a
//! benchmark's rate, on a three-node stack (`orelink stack up --brokers 3`).
//! The matcher runs as a process of its own (its own principal), fed orders
//! and capacity at `rate`/s for 170 s; 30 s in, the node leading most
//! market-topic partitions is SIGKILLed (restarted 20 s later), at 70 s the
//! active controller likewise, at 110 s a node is frozen (SIGSTOP) for 30 s.
//! Reported per fault: the longest wait between allocations from the fault
//! to the next one (60 s after the last), and the order->allocation latency
//! of the orders sent in the minute around it (30 s either side). It
//! measures; it asserts nothing.

use super::recovery::{RecoveryRole, Running, principals, start};
use super::*;
use std::path::Path;

/// One fault's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultFigures {
    pub fault: String,
    pub node: u8,
    /// Seconds into the load.
    pub at_s: f64,
    pub longest_wait_ms: f64,
    /// Orders sent 30 s either side of the fault, send -> first allocation.
    pub latency_around: Latency,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverReport {
    pub rate: u64,
    pub events: usize,
    pub allocations: usize,
    /// Every order allocated, send -> first allocation.
    pub latency: Latency,
    pub faults: Vec<FaultFigures>,
}

/// What is done to a node, when, and what it stands for.
enum Act {
    Kill(&'static str),
    Start,
    Pause(&'static str),
    Resume,
}

/// The node leading most partitions of `topic`.
fn leader_of_most(cfg: &Config, topic: &str) -> Result<u8, BenchError> {
    let c: BaseConsumer = cfg.kafka.client_config("bench-probe").create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut count: std::collections::BTreeMap<i32, usize> = Default::default();
    for p in md.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        *count.entry(p.leader()).or_default() += 1;
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id as u8).ok_or_else(|| setup(format!("{topic} has no leaders")))
}

/// The longest wait between arrivals within `[from, to]` (from `from` to the first, too).
fn longest_wait(arrivals: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &at in arrivals.iter().filter(|&&at| at > from && at <= to) {
        longest = longest.max(at - last);
        last = at;
    }
    longest.max(to.min(Instant::now()) - last)
}

pub async fn failover(base: &Config, reference: &Reference, rate: u64, binary: &Path, env: &[(String, String)], log: &(dyn Fn(&str) + Sync)) -> Result<FailoverReport, BenchError> {
    let stack = orelink_stack::StackConfig::from_env(binary.to_path_buf()).map_err(setup)?;
    if stack.brokers < 3 {
        return Err(setup("bench failover kills and freezes nodes of a three-node stack: start one with `orelink stack up --brokers 3`"));
    }
    let mut cfg = namespace(base, reference, "failover").await?;
    // The load's producer waits out leader changes, as Kafka's Java clients do (delivery.timeout.ms 120 s).
    cfg.kafka.message_timeout_ms = 120_000;
    let mut env = env.to_vec();
    let (c, r) = (cfg.clone(), reference.clone());
    if let Some(file) = tokio::task::spawn_blocking(move || principals(&c, &r)).await.map_err(setup)?? {
        env.push(("ORELINK__KAFKA__PRINCIPALS_FILE".into(), file.display().to_string()));
    }
    let log_file = std::env::temp_dir().join(format!("orelink-bench-failover-{}.log", std::process::id()));
    let seconds = 170;
    let (events, _) = latency_events(&cfg, reference, rate, seconds).await?;
    let n = events.len();
    let matcher: Running = start(binary, &env, &cfg, RecoveryRole::Matcher, "a", &log_file)?;
    let receiver = Receiver::start(&cfg, &format!("{}{}", cfg.namespace, topics::ALLOCATIONS))?;
    log(&format!("sending {n} events at {rate}/s for {seconds} s; faults at 30, 70 and 110 s (matcher log: {})", log_file.display()));
    let producer = producer(&cfg)?;
    let ns = cfg.namespace.clone();
    let began = Instant::now();
    let sending = tokio::spawn(async move { send_all(&producer, &events, |e| format!("{ns}{}", e.contract_topic), Some(rate)).await });

    let input = format!("{}{}", cfg.namespace, topics::MARKET);
    let plan: [(u64, Act); 6] = [
        (30, Act::Kill("the leader of most market-topic partitions SIGKILLed (restarted 20 s later)")),
        (50, Act::Start),
        (70, Act::Kill("the active controller SIGKILLed (restarted 20 s later)")),
        (90, Act::Start),
        (110, Act::Pause("a node frozen (SIGSTOP) for 30 s")),
        (140, Act::Resume),
    ];
    let mut faults: Vec<(String, u8, Instant)> = Vec::new();
    let mut node = 0u8;
    let progress = |line: &str| log(line);
    for (at, act) in plan {
        tokio::time::sleep_until((began + Duration::from_secs(at)).into()).await;
        let action = match act {
            Act::Kill(what) | Act::Pause(what) => {
                node = if what.contains("controller") { orelink_stack::resolve_node(&stack, "controller").map_err(setup)? } else { leader_of_most(&cfg, &input)? };
                faults.push((what.to_owned(), node, Instant::now()));
                if matches!(act, Act::Kill(_)) { orelink_stack::NodeAction::Kill } else { orelink_stack::NodeAction::Pause }
            }
            Act::Start => orelink_stack::NodeAction::Start,
            Act::Resume => orelink_stack::NodeAction::Resume,
        };
        orelink_stack::node(&stack, node, action, &progress).await.map_err(setup)?;
    }
    let sent = sending.await.map_err(setup)??;
    // Drain: until no allocation has come for 10 s (at most 3 minutes).
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = (receiver.count(), Instant::now());
    while Instant::now() < deadline && last.1.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if receiver.count() != last.0 {
            last = (receiver.count(), Instant::now());
        }
    }
    matcher.stop();
    let got = receiver.finish();
    drop_namespace(&cfg).await;

    let mut arrivals: Vec<Instant> = got.iter().map(|(_, at, _)| *at).collect();
    arrivals.sort_unstable();
    let orders = first_arrivals(&sent, &got, true);
    let figures = faults
        .iter()
        .enumerate()
        .map(|(i, (what, node, at))| {
            let to = faults.get(i + 1).map_or(*at + Duration::from_secs(60), |f| f.2);
            let around: Vec<Arrival> = orders.iter().copied().filter(|((s, _), _)| *s + Duration::from_secs(30) >= *at && *s <= *at + Duration::from_secs(30)).collect();
            FaultFigures {
                fault: what.clone(),
                node: *node,
                at_s: (*at - began).as_secs_f64(),
                longest_wait_ms: longest_wait(&arrivals, *at, to).as_secs_f64() * 1000.0,
                latency_around: latency(&around),
            }
        })
        .collect();
    Ok(FailoverReport { rate, events: n, allocations: got.len(), latency: latency(&orders), faults: figures })
}
