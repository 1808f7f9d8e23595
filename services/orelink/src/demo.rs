//! `orelink demo`: the whole hub on the local stack with a simulated workload.
//!
//! With the stack up (`main` brings it up first, reusing what runs, so that
//! the configuration it then reads has the stack's endpoints and login):
//! applies the topology, runs every hub role in this process, each
//! supervised, drives the simulator, and prints a line of live figures every
//! two seconds, read from Kafka itself. Ctrl-C (or `--duration`) stops the
//! simulator and the roles cleanly; the stack keeps running, and the last
//! lines say which roles failed, if any, and where the stack's data is.

use anyhow::Result;
use orelink_domain::topology::topics;
use orelink_platform::registry_client::RegistryClient;
use orelink_platform::{Config, Reference, apply};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the simulator, then the roles, may take to drain and commit once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// What a [`Counter`] makes of one record: whether it counts, and kilograms to add.
type Weigh = Box<dyn Fn(&[u8]) -> (bool, i64) + Send>;

/// Counts a topic's records by reading them (read_committed): on a
/// transactional topic the offsets also count commit markers, so
/// watermarks would overstate. Only this run's, from the current ends.
struct Counter {
    count: std::sync::Arc<std::sync::atomic::AtomicI64>,
    kg: std::sync::Arc<std::sync::atomic::AtomicI64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Counter {
    /// Counts every record of `contract` topic, or, with `weigh`, those it
    /// counts, adding up the kilograms it gives.
    fn start(cfg: &Config, contract: &str, weigh: Option<Weigh>) -> Result<Counter> {
        use std::sync::atomic::Ordering;
        let consumer: BaseConsumer = cfg
            .kafka
            .client_config("demo-reader")
            .set("group.id", format!("{}orelink-demo-{}", cfg.namespace, std::process::id()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()?;
        let topic = format!("{}{contract}", cfg.namespace);
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(5))?;
            tpl.add_partition_offset(&topic, p.id(), rdkafka::Offset::Offset(high))?;
        }
        consumer.assign(&tpl)?;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let kg = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, w, st) = (count.clone(), kg.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            use rdkafka::Message;
            while !st.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let (counts, add) = weigh.as_ref().map_or((true, 0), |f| f(m.payload().unwrap_or_default()));
                    c.fetch_add(i64::from(counts), Ordering::Relaxed);
                    w.fetch_add(add, Ordering::Relaxed);
                }
            }
        });
        Ok(Counter { count, kg, stop, thread })
    }

    fn get(&self) -> i64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn kg(&self) -> i64 {
        self.kg.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Bookings as the demo shows them: a booked part counts; an unbooked
/// remainder adds its kilograms. Decoded through the registry on the
/// counter's thread.
fn weigh_bookings(cfg: &Config, reference: &Reference) -> Result<Weigh> {
    let codec = orelink_platform::codec(cfg, reference)?;
    let topic = format!("{}{}", cfg.namespace, topics::BOOKINGS);
    let rt = tokio::runtime::Handle::current();
    Ok(Box::new(move |payload: &[u8]| match rt.block_on(codec.decode(&topic, Some(payload))) {
        Ok(orelink_codec::Record::Booking(b)) if b.booked => (true, 0),
        Ok(orelink_codec::Record::Booking(b)) => (false, b.quantity_kg),
        _ => (false, 0),
    }))
}

/// Figures read from the broker.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    events_in: i64,
    allocations: i64,
    /// Parts of allocations booked onto carriers' offers, and the tonnes no offer carried.
    booked: i64,
    unbooked_t: i64,
    /// Shares and withdrawals published by the share role.
    shared: i64,
    dead_letters: i64,
    lag: i64,
}

/// `c` belongs to the matcher's processor group (it only reads the group's commits).
fn figures(cfg: &Config, c: &BaseConsumer) -> Result<Figures> {
    let md = c.fetch_metadata(None, Duration::from_secs(5))?;
    let sum = |contract: &str| -> i64 {
        let name = format!("{}{contract}", cfg.namespace);
        md.topics()
            .iter()
            .filter(|t| t.name() == name)
            .flat_map(|t| t.partitions().iter().map(move |p| (t.name().to_owned(), p.id())))
            .map(|(t, p)| c.fetch_watermarks(&t, p, Duration::from_secs(5)).map(|w| w.1).unwrap_or(0))
            .sum()
    };
    let input = format!("{}{}", cfg.namespace, topics::MARKET);
    let lag = orelink_platform::kafka::group_progress(c, &input, Duration::from_secs(5))?.iter().map(|p| p.lag()).sum();
    Ok(Figures {
        // The market topic holds the doors' orders and capacity and, routed in, the shares.
        events_in: ([topics::MARKET, topics::ORDERS, topics::CAPACITY, topics::INVENTORY, topics::SHIPMENTS].iter().map(|t| sum(t)).sum::<i64>() - sum(topics::SHARED_ORDERS)).max(0),
        allocations: 0,
        booked: 0,
        unbooked_t: 0,
        shared: sum(topics::SHARED_ORDERS),
        dead_letters: sum(topics::DLQ),
        lag,
    })
}

/// Runs the hub on `stack`, which is up.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut cfg: Config,
    reference: Reference,
    stack: &orelink_stack::StackConfig,
    seed: u64,
    start_ms: Option<i64>,
    rate: u64,
    duration: Option<Duration>,
    cancel: CancellationToken,
) -> Result<()> {
    // The dashboard needs an operator token: one for this run, unless some are
    // configured (then only their digests are known, and the operator signs in).
    let token = cfg.view.tokens().is_empty().then(|| uuid::Uuid::new_v4().simple().to_string());
    if let Some(t) = &token {
        cfg.view.operator_token_digests = orelink_platform::config::sha256_hex(t);
    }
    // The simulated clock starts now, unless given: each run is new business.
    let start_ms = start_ms.unwrap_or_else(|| {
        let now = orelink_platform::dlq::now_millis().0;
        now - now % 60_000
    });
    let progress = |line: &str| eprintln!("[demo] {line}");
    let registry = RegistryClient::from_config(&cfg)?;
    let applied = apply::apply(&cfg.kafka.client_config("admin"), &registry, &reference, &cfg.namespace, false).await?;
    progress(&format!("topology applied ({} changes)", applied.changes.len()));
    // Each role then connects as its own principal, under the topology's ACLs.
    let (kafka, r, ns, users) = (cfg.kafka.client_config("admin"), reference.clone(), cfg.namespace.clone(), crate::principal::users_file_of(&cfg));
    match tokio::task::spawn_blocking(move || orelink_platform::access_apply::apply_access(&kafka, &r, &ns, &users, false)).await? {
        Ok(changes) => progress(&format!("principals and ACLs applied ({} changes)", changes.len())),
        Err(orelink_platform::access_apply::AccessError::NoAuthorizer) => progress("the broker has no authorizer: roles connect with the configured credentials"),
        Err(e) => return Err(e.into()),
    }

    let roles = CancellationToken::new();
    let counter = Counter::start(&cfg, topics::ALLOCATIONS, None)?;
    let bookings = Counter::start(&cfg, topics::BOOKINGS, Some(weigh_bookings(&cfg, &reference)?))?;
    // One client for the figures, kept for the whole run.
    let probe: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
        cfg.kafka.client_config("demo-probe").set("group.id", orelink_matcher::processor_group(&cfg)).create()?,
    );
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let health = crate::supervise::Health::default();
    let hub = tokio::spawn(crate::all::run_all(cfg.clone(), reference.clone(), roles.clone(), health.clone(), false, move |addr| {
        let _ = bound_tx.send(addr);
    }));
    let dashboard = match tokio::time::timeout(Duration::from_secs(30), bound_rx).await {
        Ok(Ok(addr)) => match &token {
            Some(t) => format!("http://{addr}/?token={t}"),
            None => format!("http://{addr}/ (sign in with one of view.operator_token_digests' tokens)"),
        },
        _ => {
            roles.cancel();
            let e = match hub.await? {
                Err(e) => e.to_string(),
                Ok(_) => health.snapshot().remove("view").and_then(|h| h.last_error).unwrap_or_else(|| "it did not start within 30 s".into()),
            };
            anyhow::bail!("the view role failed to start: {e}");
        }
    };
    let sim_stop = cancel.child_token();
    let sim = {
        let (cfg, reference, stop) = (cfg.clone(), reference.clone(), sim_stop.clone());
        let run_for = duration.unwrap_or(Duration::from_secs(u64::MAX / 4));
        tokio::spawn(async move { orelink_simulator::run(&cfg, &reference, seed, start_ms, rate, run_for, stop).await })
    };
    progress(&format!("running: the matcher, the booker, the share role, the fanout, the view, and the simulator at {rate} events/s (seed {seed}); Ctrl-C stops"));
    progress(&format!("dashboard: {dashboard}"));
    progress(&format!("the same workload again: --seed {seed} --start-ms {start_ms}"));
    println!("{:>8} {:>10} {:>9} {:>12} {:>9} {:>8} {:>10} {:>8} {:>8} {:>6}", "time", "events in", "in/s", "allocations", "alloc/s", "booked", "unbooked t", "shared", "DLQ", "lag");
    let started = Instant::now();
    let mut last = Figures::default();
    let mut last_at = Instant::now();
    let mut reported = health.snapshot();
    let stop_at = duration.map(|d| started + d);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let (c, p) = (cfg.clone(), probe.clone());
        let mut f = tokio::task::spawn_blocking(move || figures(&c, &p)).await??;
        f.allocations = counter.get();
        f.booked = bookings.get();
        f.unbooked_t = bookings.kg() / 1_000;
        let dt = last_at.elapsed().as_secs_f64();
        println!(
            "{:>7.0}s {:>10} {:>9.0} {:>12} {:>9.0} {:>8} {:>10} {:>8} {:>8} {:>6}",
            started.elapsed().as_secs_f64(),
            f.events_in,
            (f.events_in - last.events_in) as f64 / dt,
            f.allocations,
            (f.allocations - last.allocations) as f64 / dt,
            f.booked,
            f.unbooked_t,
            f.shared,
            f.dead_letters,
            f.lag
        );
        // A role that failed is restarted by its supervisor; say so as it happens.
        let now_failed = health.snapshot();
        for (role, h) in &now_failed {
            if reported.get(role).map(|r| r.failures) != Some(h.failures) {
                progress(&format!("{role} failed ({} so far) and is being restarted: {}", h.failures, h.last_error.as_deref().unwrap_or("")));
            }
        }
        reported = now_failed;
        last = f;
        last_at = Instant::now();
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
    }
    progress("stopping: simulator, then the roles (drain and commit)");
    sim_stop.cancel();
    // A stop that hangs is an error naming what hangs, never a demo that runs on.
    let sim_stats = match tokio::time::timeout(STOP_GRACE, sim).await {
        Ok(r) => r??,
        Err(_) => {
            roles.cancel();
            anyhow::bail!("the simulator did not stop within {} s (its last deliveries)", STOP_GRACE.as_secs());
        }
    };
    roles.cancel();
    let stats = match tokio::time::timeout(STOP_GRACE, hub).await {
        Ok(r) => r??,
        Err(_) => anyhow::bail!("roles did not stop within {} s of being told to: {}", STOP_GRACE.as_secs(), health.still_running().join(", ")),
    };
    counter.stop();
    let (booked, unbooked_t) = (bookings.get(), bookings.kg() / 1_000);
    bookings.stop();
    progress(&format!(
        "done: {} events simulated ({} malformed), {} allocations committed by the matcher, {} orders shared across clusters and {} shares withdrawn, {} dead letters; {} events applied to the operators' view; {} shipments planned by the booker on carriers' offers ({} booking records, unbooked remainders included; read back: {} parts booked, {} t unbooked); {} shipments routed to their carriers",
        sim_stats.events,
        sim_stats.malformed,
        stats.matcher.processor.allocations,
        stats.share.shared,
        stats.share.withdrawn,
        last.dead_letters,
        stats.view.applied,
        stats.booker.processor.planned,
        stats.booker.processor.bookings,
        booked,
        unbooked_t,
        stats.fanout.routed
    ));
    let failures = health.report();
    if failures.is_empty() {
        progress("every role ran without a failure");
    }
    for line in failures {
        progress(&line);
    }
    progress(&format!("the stack keeps running; its data is in {} (stop it with `orelink stack down`, add --purge to remove the data)", stack.data_dir.display()));
    Ok(())
}
