//! `orelink`: every role and tool of the hub behind one binary, so one
//! container image serves every Deployment. See `orelink --help`.

mod all;
mod bench;
mod demo;
mod k8s;
mod metrics_server;
mod principal;
mod supervise;
mod topology;

use bench::BenchWhich;
use topology::TopologyAction;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand, ValueEnum};
use orelink_platform::config::{Config, Sources};
use orelink_platform::{Reference, telemetry};
use orelink_stack::StackConfig;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "orelink", version, about = "Event-streaming hub for Guangxi's nonferrous-metals supply chain")]
struct Cli {
    /// Config file (TOML); ORELINK_CONFIG also names one. ORELINK__SECTION__KEY env vars override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local stack (Kafka, Redis, schema registry) without Docker.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Check, show or apply the topology (topics, schemas, clusters, partners).
    Topology {
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Run a role.
    Run {
        role: Role,
        /// Run as the superuser (the configured admin) when the role has no
        /// principal of its own; without it such a role refuses to start.
        #[arg(long)]
        as_admin: bool,
    },
    /// Check the configuration and print it (secrets hidden).
    Config,
    /// A running edge relay's link and backlog.
    Edge {
        #[command(subcommand)]
        action: EdgeAction,
    },
    /// The operators' view in Redis.
    View {
        #[command(subcommand)]
        action: ViewAction,
    },
    /// Partners' webhooks (webhooks.file).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// The whole hub on the local stack with a simulated workload (the main job).
    Demo {
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Simulated events per second.
        #[arg(long, default_value_t = 300)]
        rate: u64,
        /// Stop after this long (default: run until Ctrl-C), e.g. 90s, 10m.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Start of the simulated clock, epoch ms (default: now); with --seed, repeats a run's workload.
        #[arg(long)]
        start_ms: Option<i64>,
    },
    /// Send a seeded, realistic Guangxi workload to the deployment's topics.
    Simulate {
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Events per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// How long, e.g. 90s, 10m, 2h.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// Start of the simulated clock, epoch ms (default 2026-12-01T00:00Z, so a seed always gives the same events).
        #[arg(long, default_value_t = 1_796_083_200_000)]
        start_ms: i64,
    },
    /// Benchmarks through the real broker (the local stack must be up).
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
}

#[derive(Subcommand)]
enum EdgeAction {
    /// Link state, queued events and bytes, accepted and forwarded counts.
    Status {
        /// The relay's address (default: edge.listen).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum WebhooksAction {
    /// Send a partner's parked deliveries again, in order; stops at the first refused.
    Redrive {
        partner: String,
        /// Run as the superuser when the webhooks role has no principal of its own.
        #[arg(long)]
        as_admin: bool,
    },
}

#[derive(Subcommand)]
enum ViewAction {
    /// Empty the view and recompute it from Kafka (Redis is a cache). Safe while view roles run.
    Rebuild,
}

#[derive(Subcommand)]
enum StackAction {
    /// Start what is not running and wait until every part is healthy.
    Up {
        /// Kafka nodes: 1, or 3 (replicated; each node broker and controller). Default: what the stack was made with, else 1.
        #[arg(long)]
        brokers: Option<u8>,
    },
    /// SIGKILL one Kafka node (a number, or "controller": the active one).
    Kill { node: String },
    /// Start a Kafka node that is not running and wait until it is a broker again.
    Start { node: String },
    /// SIGSTOP one Kafka node (a hung broker).
    Pause { node: String },
    /// SIGCONT a paused Kafka node.
    Resume { node: String },
    /// Stop what `up` started.
    Down {
        /// Also remove all local data (Kafka logs, registry topic, Redis dir).
        #[arg(long)]
        purge: bool,
    },
    /// Endpoints and health.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Role {
    /// The Confluent-compatible schema registry.
    Registry,
    /// Matches orders with capacity, exactly once.
    Matcher,
    /// Books allocations onto carriers' offers and plans the shipments, exactly once.
    Booker,
    /// Shares unfilled remainders across clusters by policy.
    Share,
    /// Materialises the operators' view into Redis; serves the API and dashboard.
    View,
    /// HTTP/JSON ingest for enterprises, bound to their API keys.
    Gateway,
    /// Store-and-forward relay at a remote site (edge.site, edge.dir).
    Edge,
    /// Routes shipments to their carrier partner's topic, exactly once.
    Fanout,
    /// Forwards enterprises' own ingest topics, copies their allocations to them, exactly once.
    Enterprises,
    /// Pushes partners' shipments to their webhooks, HMAC-signed (webhooks.file).
    Webhooks,
    /// Every hub role in one process (the registry runs on its own).
    All,
}

/// `90s`, `10m`, `2h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number with s, m or h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unit must be s, m or h")),
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config> {
    Config::load(&Sources::from_process(path)).map_err(|e| anyhow!("{e}"))
}

fn reference(cfg: &Config) -> Result<Reference> {
    Reference::from_config(cfg).map_err(|p| anyhow!("{} topology problem(s):\n  - {}", p.len(), p.join("\n  - ")))
}

/// Cancelled on SIGINT or SIGTERM: roles drain, commit and return.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

/// A failure is one plain message (with its causes), never a backtrace.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(command(cli));
    // A blocking task that hangs (a role that did not stop) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn command(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Stack { action } => stack(action).await,
        Command::Topology { action } => topology::run(action, cli.config).await,
        Command::Run { role, as_admin } => run(role, cli.config, as_admin).await,
        Command::Bench { which } => bench::run(which, cli.config).await,
        Command::Demo { seed, rate, duration, start_ms } => {
            // Configuration problems are reported before anything starts...
            let cfg = load_config(cli.config.clone())?;
            reference(&cfg)?;
            let mut log = cfg.log.clone();
            // The live table is the demo's output; the roles log errors only.
            log.level = std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into());
            telemetry::init(&log);
            let stack = StackConfig::from_env(std::env::current_exe().context("locating the orelink binary")?)?;
            eprintln!("[demo] bringing up the local stack (Kafka, Redis, schema registry)");
            orelink_stack::up(&stack, &|line: &str| eprintln!("[demo] {line}")).await?;
            // ...and the configuration is read again once the stack is up: its
            // first `up` writes the client file (endpoints, Kafka login) it layers in.
            let cfg = load_config(cli.config)?;
            let r = reference(&cfg)?;
            demo::run(cfg, r, &stack, seed, start_ms, rate, duration, shutdown_token()).await
        }
        Command::Simulate { seed, rate, duration, start_ms } => {
            let cfg = load_config(cli.config)?;
            telemetry::init(&cfg.log);
            let r = reference(&cfg)?;
            let stats = orelink_simulator::run(&cfg, &r, seed, start_ms, rate, duration, shutdown_token()).await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(())
        }
        Command::Config => {
            let cfg = load_config(cli.config)?;
            println!("{cfg:#?}");
            Ok(())
        }
        Command::Edge { action: EdgeAction::Status { url } } => {
            let cfg = load_config(cli.config)?;
            let url = url.unwrap_or_else(|| format!("http://{}", cfg.edge.listen));
            let status: serde_json::Value = reqwest::get(format!("{url}/status")).await.with_context(|| format!("no edge relay answers at {url}"))?.json().await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        Command::Webhooks { action: WebhooksAction::Redrive { partner, as_admin } } => {
            let cfg = load_config(cli.config)?;
            telemetry::init(&cfg.log);
            let r = reference(&cfg)?;
            let hook = orelink_outbound::webhook::load(&cfg, &r)?
                .into_iter()
                .find(|h| h.partner == partner)
                .with_context(|| format!("{}: no webhook for partner {partner}", cfg.webhooks.file))?;
            let cfg = principal::as_role(&cfg, "webhooks", as_admin)?;
            let done = orelink_outbound::webhook::redrive(&cfg, &r, hook).await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
            match done.stopped_at {
                Some(at) => anyhow::bail!("redrive stopped at {at}; {} deliveries stay parked", done.left),
                None => Ok(()),
            }
        }
        Command::View { action: ViewAction::Rebuild } => {
            let cfg = load_config(cli.config)?;
            telemetry::init(&cfg.log);
            let r = reference(&cfg)?;
            let started = std::time::Instant::now();
            let (removed, applied) = orelink_view::rebuild(&cfg, &r, shutdown_token()).await?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "view rebuilt: {removed} keys removed; {} events read from Kafka, {} applied, in {secs:.1} s ({:.0} events/s)",
                applied.read,
                applied.applied,
                applied.read as f64 / secs
            );
            Ok(())
        }
    }
}

async fn stack(action: StackAction) -> Result<()> {
    let mut cfg = StackConfig::from_env(std::env::current_exe().context("locating the orelink binary")?)?;
    let progress = |line: &str| eprintln!("[stack] {line}");
    let on_node = |node: &str, action| {
        let cfg = cfg.clone();
        let node = node.to_owned();
        async move {
            let n = orelink_stack::resolve_node(&cfg, &node)?;
            orelink_stack::node(&cfg, n, action, &progress).await
        }
    };
    match action {
        StackAction::Kill { node } => on_node(&node, orelink_stack::NodeAction::Kill).await?,
        StackAction::Start { node } => on_node(&node, orelink_stack::NodeAction::Start).await?,
        StackAction::Pause { node } => on_node(&node, orelink_stack::NodeAction::Pause).await?,
        StackAction::Resume { node } => on_node(&node, orelink_stack::NodeAction::Resume).await?,
        StackAction::Up { brokers } => {
            if let Some(n) = brokers {
                cfg.set_brokers(n)?;
            }
            let started = orelink_stack::up(&cfg, &progress).await?;
            let status = orelink_stack::status(&cfg).await;
            print_status(&status);
            if started.is_empty() {
                eprintln!("[stack] everything was already up");
            }
        }
        StackAction::Down { purge } => {
            orelink_stack::down(&cfg, purge, &progress).await?;
            eprintln!("[stack] stopped what `stack up` started{}", if purge { "; local data removed" } else { "" });
        }
        StackAction::Status { json } => {
            let status = orelink_stack::status(&cfg).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            if !status.healthy() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn print_status(s: &orelink_stack::StackStatus) {
    if s.nodes.len() > 1 {
        for n in &s.nodes {
            let state = if n.paused { "PAUSED" } else if n.running { "running" } else { "DOWN" };
            let pid = n.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
            println!("node {:<4} {:<24} {state:<8} controller {}{pid}", n.id, n.endpoint, n.controller);
        }
    }
    for (name, c) in [("kafka", &s.kafka), ("redis", &s.redis), ("registry", &s.registry)] {
        let health = if c.healthy { "healthy" } else { "DOWN" };
        let who = match (c.managed, c.pid) {
            (true, Some(pid)) => format!("started by orelink, pid {pid}"),
            _ if c.healthy => "found running".to_owned(),
            _ => "not running".to_owned(),
        };
        println!("{name:<9} {:<24} {health:<8} {who}  ({})", c.endpoint, c.detail);
    }
    println!("data      {}", s.data_dir);
    println!("cache     {}", s.cache_dir);
}

async fn run(role: Role, config: Option<PathBuf>, as_admin: bool) -> Result<()> {
    let cfg = load_config(config)?;
    let name = role.to_possible_value().expect("every role has a name").get_name().to_owned();
    // Spans of every role, exported when `telemetry.otlp_endpoint` is set; flushed when this is dropped, last.
    let _traces = telemetry::init_with_traces(&cfg.log, &cfg.telemetry, &format!("orelink-{name}"));
    // Before any role records a metric.
    orelink_platform::metrics::install();
    let cancel = shutdown_token();
    // A hub role connects as its own principal (the registry and `all` do not: see principal.rs, all.rs).
    let cfg = match role {
        Role::Registry | Role::All => cfg,
        // A relay's principal is its site's (orelink-edge-<site>).
        Role::Edge => principal::as_role(&cfg, &format!("edge-{}", cfg.edge.site), as_admin)?,
        _ => principal::as_role(&cfg, &name, as_admin)?,
    };
    // The roles without an HTTP server of their own serve /metrics here.
    let _metrics = match role {
        Role::Matcher | Role::Booker | Role::Share | Role::Fanout | Role::Enterprises | Role::Webhooks | Role::All if !cfg.telemetry.metrics_listen.is_empty() => {
            Some(metrics_server::start(&cfg.telemetry.metrics_listen, cancel.clone()).await?)
        }
        _ => None,
    };
    match role {
        Role::Registry => {
            let listen = cfg.registry.listen.parse().context("registry.listen")?;
            let topic = format!("{}_schemas", cfg.namespace);
            // Logins are checked against the same brokers (the user and password of each login replace the registry's own).
            if cfg.registry.auth == "kafka" && !cfg.kafka.security_protocol.starts_with("sasl") {
                anyhow::bail!(
                    "registry.auth \"kafka\" checks logins against Kafka, but kafka.security_protocol is {:?}: use sasl_plaintext or sasl_ssl, or say registry.auth = \"none\"",
                    cfg.kafka.security_protocol
                );
            }
            let auth = (cfg.registry.auth == "kafka").then(|| orelink_registry::auth::Auth::new(cfg.kafka.client_config("registry-auth"), cfg.registry.writers.clone()));
            orelink_registry::serve(orelink_registry::RegistryConfig { kafka: cfg.kafka.client_config("registry"), topic, listen, auth }, cancel).await?;
        }
        Role::Matcher => {
            let r = reference(&cfg)?;
            let stats = orelink_matcher::run(cfg, r, cancel).await?;
            tracing::info!(?stats, "matcher stopped");
        }
        Role::Booker => {
            let r = reference(&cfg)?;
            let stats = orelink_booker::run(cfg, r, cancel).await?;
            tracing::info!(?stats, "booker stopped");
        }
        Role::Share => {
            let r = reference(&cfg)?;
            orelink_share::run(&cfg, &r, cancel).await?;
        }
        Role::View => {
            let r = reference(&cfg)?;
            orelink_view::run(&cfg, &r, cancel).await?;
        }
        Role::Gateway => {
            let r = reference(&cfg)?;
            orelink_gateway::run(&cfg, &r, cancel).await?;
        }
        Role::Fanout => {
            let r = reference(&cfg)?;
            let stats = orelink_fanout::run(&cfg, &r, cancel).await?;
            tracing::info!(?stats, "fanout stopped");
        }
        Role::Enterprises => {
            let r = reference(&cfg)?;
            let stats = orelink_enterprises::run(&cfg, &r, cancel).await?;
            tracing::info!(?stats, "enterprises stopped");
        }
        Role::Webhooks => {
            let r = reference(&cfg)?;
            let stats = orelink_outbound::webhook::run(&cfg, &r, cancel).await?;
            tracing::info!(?stats, "webhooks stopped");
        }
        Role::Edge => {
            let r = reference(&cfg)?;
            orelink_edge::run_with(&cfg, &r, cancel, |_| {}).await?;
        }
        Role::All => {
            let r = reference(&cfg)?;
            let health = supervise::Health::default();
            let stats = all::run_all(cfg, r, cancel, health.clone(), as_admin, |_| {}).await?;
            for line in health.report() {
                tracing::warn!("{line}");
            }
            tracing::info!(?stats, "all roles stopped");
        }
    }
    Ok(())
}
