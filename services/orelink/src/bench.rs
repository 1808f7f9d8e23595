//! `orelink bench ...`: the benchmarks through the real stack (`orelink_bench`), printed.

use crate::{load_config, reference};
use anyhow::Result;
use clap::Subcommand;
use orelink_platform::telemetry;
use std::path::PathBuf;

/// A path through the broker measured flat out, then at a fixed rate.
#[derive(clap::Args)]
pub(crate) struct PathArgs {
    /// Events for the flat-out (throughput) run.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Events per second for the latency run.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum BenchWhich {
    /// Matcher throughput and order->allocation latency, beside the raw
    /// produce->consume path and the floor (one transactional hop) at the same
    /// rate; the last three lines are the ratios the targets are set on.
    E2e {
        #[command(flatten)]
        path: PathArgs,
        /// Matched events as Kafka clients write them, to the per-type
        /// contract topics, forwarded by the matcher's router (by default
        /// they go where the hub's doors write them, the market topic).
        #[arg(long)]
        routed: bool,
    },
    /// View materialisation events/s and API query latency at a fixed rate.
    View {
        /// Simulated events to process first.
        #[arg(long, default_value_t = 50_000)]
        events: u64,
        /// API requests per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long)]
        json: bool,
    },
    /// One Kafka transaction that does nothing else, flat out beside raw and
    /// at the e2e latency run's rate: the floor of any exactly-once matcher here.
    Floor(PathArgs),
    /// The stall after a role (any of --role) is SIGKILLed:
    /// restarted in place, or (with --standby) taken over by a second instance.
    Recovery {
        /// matcher, fanout, enterprises, share, webhooks, view or edge.
        #[arg(long, default_value = "matcher", value_parser = orelink_bench::matcher::RecoveryRole::parse)]
        role: orelink_bench::matcher::RecoveryRole,
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long)]
        standby: bool,
        #[arg(long)]
        json: bool,
    },
    /// The stall and latency a lost or frozen Kafka node costs the matcher
    /// (needs a three-node stack: `orelink stack up --brokers 3`).
    Failover {
        /// Events per second (orders and capacity).
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
        #[arg(long)]
        json: bool,
    },
    /// The matcher's books over a long input in this process (no broker):
    /// resident memory and snapshot size every --every events, as log time
    /// passes the dedup horizon many times.
    Soak {
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
        /// Events between samples; by default they span one horizon of log time.
        #[arg(long, default_value_t = 1_000_000)]
        every: u64,
        /// Log time per event, ms (default: one horizon per --every events).
        #[arg(long)]
        ms_per_event: Option<f64>,
        /// Events an order or capacity stays before it is cancelled or withdrawn.
        #[arg(long, default_value_t = 20_000)]
        life: u64,
        /// The change is reported from the first sample at this many events on.
        #[arg(long, default_value_t = 2_000_000)]
        flat_from: u64,
        #[arg(long)]
        json: bool,
    },
    /// The demand outlook backtested on a seeded simulation (no broker):
    /// per family, MASE beside the seasonal-naive baseline's, and the share of
    /// hours within the 80 % interval, over rolling origins.
    Outlook {
        #[arg(long, default_value_t = 5)]
        seed: u64,
        /// Simulated days (at least 21: two weeks of history and one ahead).
        #[arg(long, default_value_t = 91)]
        days: u64,
        /// Hours between forecast origins.
        #[arg(long, default_value_t = 24)]
        every: usize,
        /// The simulated clock's start (ms since the epoch); 2027-01-04 00:00 UTC, a Monday, by default.
        #[arg(long, default_value_t = 1_799_020_800_000)]
        start_ms: i64,
        #[arg(long)]
        json: bool,
    },
    /// Time to restore a matcher book from its input.
    Restore {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(which: BenchWhich, config: Option<PathBuf>) -> Result<()> {
    let mut cfg = load_config(config.clone())?;
    // The roles under test log warnings only, unless RUST_LOG says otherwise.
    cfg.log.level = "warn".into();
    telemetry::init(&cfg.log);
    let r = reference(&cfg)?;
    let log = |s: &str| eprintln!("[bench] {s}");
    match which {
        BenchWhich::E2e { path: PathArgs { events, rate, seconds, json }, routed } => {
            let rep = orelink_bench::e2e(&cfg, &r, events, rate, seconds, routed, &log).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("events                         {}{}", rep.events, if rep.routed { " (routed: per-type topics, router hop)" } else { "" });
                println!("raw produce->consume           {:>10.0} events/s", rep.raw_events_per_s);
                println!("matched end to end             {:>10.0} events/s", rep.e2e_events_per_s);
                if let (Some(raw), Some(e2e)) = (rep.raw_cpu_us_per_event, rep.e2e_cpu_us_per_event) {
                    println!("CPU of this process per event  raw {raw:.1} us, matched {e2e:.1} us (broker not included)");
                }
                println!(
                    "raw latency at {} ev/s       p50 {:.1} ms  p99 {:.1} ms  ({} samples)",
                    rep.rate, rep.raw_latency.p50_ms, rep.raw_latency.p99_ms, rep.raw_latency.samples
                );
                if let (Some(raw), Some(e2e)) = (rep.raw_latency_machine_busy, rep.e2e_latency_machine_busy) {
                    println!("machine CPU busy at {} ev/s  raw {:.0} %, matched {:.0} % of all cores (broker included)", rep.rate, raw * 100.0, e2e * 100.0);
                }
                println!(
                    "order->allocation at {} ev/s p50 {:.1} ms  p99 {:.1} ms  ({} samples)",
                    rep.rate, rep.order_to_allocation.p50_ms, rep.order_to_allocation.p99_ms, rep.order_to_allocation.samples
                );
                let (a, b) = (&rep.order_to_matcher_output, &rep.matcher_output_to_read);
                println!("  of which order->matcher output p50 {:.0} ms  p99 {:.0} ms  (Kafka timestamps, ms)", a.p50_ms, a.p99_ms);
                println!("  and matcher output->read       p50 {:.0} ms  p99 {:.0} ms  (commit and last hop)", b.p50_ms, b.p99_ms);
                let f = &rep.floor_latency;
                println!("floor (one transactional hop)  p50 {:.1} ms  p99 {:.1} ms  ({} samples)", f.p50_ms, f.p99_ms, f.samples);
                // The three figures the targets are set on, last.
                println!("ratio e2e / raw                {:>10.2}", rep.ratio);
                println!("p99 matched / p99 floor        {:>10.2}", rep.p99_over_floor);
                println!("machine CPU busy (whole run)   {:>10}", rep.machine_busy.map_or("n/a".into(), |b| format!("{:.0} %", b * 100.0)));
            }
        }
        BenchWhich::View { events, rate, seconds, json } => {
            let rep = orelink_bench::view::run(&cfg, &r, events, rate, seconds, &log).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("view input events              {}", rep.input_events);
                println!("materialised (read+decode+apply) {:>8.0} events/s", rep.materialise_events_per_s);
                println!("queries at {} req/s            {} ({} errors)", rep.query_rate, rep.queries, rep.errors);
                println!("query latency                  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms", rep.p50_ms, rep.p99_ms, rep.max_ms);
                for (k, v) in &rep.by_endpoint_p99_ms {
                    println!("  p99 {k:<12} {v:>6.2} ms");
                }
            }
        }
        BenchWhich::Floor(PathArgs { events, rate, seconds, json }) => {
            let rep = orelink_bench::floor(&cfg, &r, events, rate, seconds, &log).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                if let (Some(raw), Some(fwd), Some(ratio)) = (rep.raw_events_per_s, rep.forwarded_events_per_s, rep.ratio) {
                    println!("raw produce->consume           {raw:>10.0} events/s");
                    println!("one transactional hop          {fwd:>10.0} events/s");
                    println!("ratio hop / raw                {ratio:>10.2}");
                }
                let (l, t) = (&rep.latency, &rep.transaction);
                println!("one transactional hop at {} ev/s p50 {:.1} ms  p99 {:.1} ms  ({} samples)", rep.rate, l.p50_ms, l.p99_ms, l.samples);
                println!(
                    "transactions                   {} ({:.0} events each), p50 {:.1} ms  p99 {:.1} ms",
                    rep.transactions,
                    rep.events as f64 / rep.transactions.max(1) as f64,
                    t.p50_ms,
                    t.p99_ms
                );
                if let Some(b) = rep.machine_busy {
                    println!("machine CPU busy               {:.0} % of all cores (broker included)", b * 100.0);
                }
            }
        }
        BenchWhich::Recovery { role, rate, seconds, standby, json } => {
            let binary = std::env::current_exe()?;
            // The matchers read the same configuration as this command.
            let env: Vec<(String, String)> = config.iter().map(|c| ("ORELINK_CONFIG".to_owned(), c.display().to_string())).collect();
            let rep = orelink_bench::recovery(&cfg, &r, orelink_bench::matcher::RecoveryRun { role, rate, seconds, standby }, &binary, &env, &log).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("{:<38} {}, {}", "mode", role.name(), if standby { "standby takes over (no restart)" } else { "restart in place" });
                println!("{:<38} {} events/s, member timeout {} ms", "load", rep.rate, rep.session_timeout_ms);
                let first = if standby { "kill -> first output (any instance)" } else { "kill -> first output after it" };
                println!("{first:<38} {:.0} ms", rep.kill_to_first_output_ms);
                match rep.kill_to_caught_up_ms {
                    Some(ms) => println!("{:<38} {ms:.0} ms", "kill -> back to its pace before"),
                    None => println!("{:<38} not within the run", "kill -> back to its pace before"),
                }
                println!("{:<38} {} (log: {})", "outputs read", rep.outputs, rep.log.display());
            }
        }
        BenchWhich::Failover { rate, json } => {
            let binary = std::env::current_exe()?;
            let env: Vec<(String, String)> = config.iter().map(|c| ("ORELINK_CONFIG".to_owned(), c.display().to_string())).collect();
            let rep = orelink_bench::failover(&cfg, &r, rate, &binary, &env, &log).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("{} events at {} events/s, {} allocations; order->allocation p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms", rep.events, rep.rate, rep.allocations, rep.latency.p50_ms, rep.latency.p99_ms, rep.latency.max_ms);
                for f in &rep.faults {
                    let l = &f.latency_around;
                    println!("{:>5.0} s  node {}  {}", f.at_s, f.node, f.fault);
                    println!("         longest wait between allocations {:.1} s; orders sent 30 s either side: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", f.longest_wait_ms / 1000.0, l.p50_ms, l.p99_ms, l.max_ms);
                }
            }
        }
        BenchWhich::Soak { events, every, ms_per_event, life, flat_from, json } => {
            let horizon = cfg.matcher.dedup_horizon_ms;
            let options = orelink_bench::matcher::SoakOptions { events, every, horizon_ms: horizon, ms_per_event, life, flat_from };
            let rep = orelink_bench::soak(&r.topology, options, &|s: &str| eprintln!("[bench] {s}"));
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("events      log days  RSS MiB  peak MiB  snapshot MiB  held orders  held caps  open orders  open caps  event ids  events/s");
                for s in &rep.samples {
                    println!(
                        "{:>9} {:>9.1} {:>8.1} {:>9.1} {:>13.1} {:>12} {:>10} {:>12} {:>10} {:>10} {:>9.0}",
                        s.events,
                        s.log_days,
                        s.rss_mib,
                        s.peak_rss_mib,
                        s.snapshot_bytes as f64 / (1024.0 * 1024.0),
                        s.held_orders,
                        s.held_capacities,
                        s.open_orders,
                        s.open_capacities,
                        s.seen_ids,
                        s.events_per_s
                    );
                }
                let pct = |p: Option<f64>| p.map_or("n/a".into(), |p| format!("{p:+.1} %"));
                println!("horizon {} ms, {:.1} ms of log time per event, life {} events", rep.horizon_ms, rep.ms_per_event, rep.life);
                println!("RSS from {} events to the end       {}", rep.flat_from, pct(rep.rss_change_pct));
                println!("snapshot from {} events to the end  {}", rep.flat_from, pct(rep.snapshot_change_pct));
            }
        }
        BenchWhich::Outlook { seed, days, every, start_ms, json } => {
            anyhow::ensure!(days >= 21, "--days {days}: a backtest needs at least 21 simulated days");
            anyhow::ensure!(every >= 1, "--every must be at least 1 hour");
            let rep = orelink_bench::outlook::run(seed, start_ms, days, every)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!("{} simulated days (seed {}), origins every {} h, 7-day horizon, 80 % interval; {:.1} s", rep.days, rep.seed, rep.origins_every_hours, rep.seconds);
                println!("{:<12} {:>12} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9}", "family", "t/h (mean)", "origins", "MASE", "naive MASE", "coverage", "7d total", "naive");
                for f in &rep.families {
                    println!(
                        "{:<12} {:>12.1} {:>8} {:>8.3} {:>11.3} {:>8.1}% {:>8.1}% {:>8.1}%",
                        f.family,
                        f.mean_kg_per_hour / 1000.0,
                        f.backtest.origins,
                        f.backtest.mase,
                        f.backtest.naive_mase,
                        f.coverage * 100.0,
                        f.backtest.total_error * 100.0,
                        f.backtest.naive_total_error * 100.0
                    );
                }
            }
        }
        BenchWhich::Restore { events, json } => {
            let rep = orelink_bench::restore(&cfg, &r, events, &log).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!(
                    "restored {} events in {:.2} s ({:.0} events/s); book: {} open orders, {} open capacities",
                    rep.events, rep.seconds, rep.events_per_s, rep.open_orders, rep.open_capacities
                );
                println!(
                    "its snapshot: {:.1} MiB, taken in {:.0} ms; a restore from it (read, load, no replay) in {:.2} s",
                    rep.snapshot_bytes as f64 / (1024.0 * 1024.0),
                    rep.snapshot_take_ms,
                    rep.from_snapshot_seconds
                );
            }
        }
    }
    Ok(())
}

