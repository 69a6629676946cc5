//! `rill`: the broker binary and a command line for any Kafka-compatible broker.
//!
//! `rill` with no arguments is `rill serve` with defaults: listen on 127.0.0.1:9092, data in
//! ./rill-data, metrics on 127.0.0.1:9644. When the broker is ready it prints exactly one
//! line to stdout, `rill listening on HOST:PORT`, which test harnesses wait for; everything
//! else is logged to stderr (filter with `--log-level` or `RILL_LOG`, default `info`).
//!
//! The other commands are clients speaking the Kafka protocol (`rill-client`): `topic`,
//! `produce`, `consume`, `group` and `bench`. Exit codes: 0 success, 1 runtime error,
//! 2 usage error.
//!
//! Modules: [`serve`] (config precedence, banner), [`metrics_http`] (`/metrics`),
//! [`common`] (connection flags, error messages with hints, exit codes), [`topic`],
//! [`produce`], [`consume`], [`group`], [`bench`].

mod allocator;
mod bench;
mod bench_rebalance;
mod bench_spread;
mod common;
mod config;
mod consume;
mod group;
mod group_share;
mod metrics_http;
mod produce;
mod serve;
mod topic;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use rill_broker::log_levels::LogFilterSink;
use tracing_subscriber::{reload, EnvFilter, Registry};

#[derive(Parser, Debug)]
#[command(
    name = "rill",
    version,
    about = "A Kafka-compatible streaming log broker, and a command line for any Kafka-compatible broker",
    after_help = "With no command, `rill` runs `rill serve` with its defaults."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the Kafka protocol (the default command).
    Serve(Box<serve::ServeArgs>),
    /// Create, list, describe, delete and alter topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Write records, one per input line (stdin or --file).
    Produce(produce::ProduceArgs),
    /// Read records and print them (values or JSON lines).
    Consume(consume::ConsumeArgs),
    /// List, describe (with lag), reset offsets of, and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Describe and alter the configs of a topic or a broker (dynamic broker configs).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Measure produce, consume and end-to-end throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = run(cli);
    if let Err(e) = result {
        eprintln!("{}", common::describe(&e));
        std::process::exit(common::exit_code(&e));
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // No command is `rill serve`, parsed as such so its `RILL_*` variables apply too.
    let command = match cli.command {
        Some(command) => command,
        None => Cli::try_parse_from(["rill", "serve"])
            .map_err(|e| common::usage(e.to_string()))?
            .command
            .unwrap_or_else(|| Command::Serve(Box::default())),
    };
    // Before any thread starts: the broker's request buffers and `rill bench`'s batch buffers.
    allocator::keep_freed_request_buffers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    match command {
        Command::Serve(args) => {
            let config =
                serve::ServeConfig::resolve(&args).map_err(|e| common::usage(format!("{e:#}")))?;
            if args.print_config {
                print!("{}", config.to_toml());
                return Ok(());
            }
            let filter = init_logging(&config.log_level, config.log_format == "json");
            runtime.block_on(serve::serve(config, Some(filter)))
        }
        Command::Topic(c) => client(&runtime, topic::run(c)),
        Command::Produce(a) => client(&runtime, produce::run(a)),
        Command::Consume(a) => client(&runtime, consume::run(a)),
        Command::Group(c) => client(&runtime, group::run(c)),
        Command::Config(c) => client(&runtime, config::run(c)),
        Command::Bench(c) => client(&runtime, bench::run(c)),
    }
}

/// Runs a client command; its logs default to warnings only (stdout is its output).
fn client(
    runtime: &tokio::runtime::Runtime,
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // Like other Unix tools, end quietly when stdout's reader goes away (`rill consume | head`)
    // instead of failing on EPIPE. Not for `serve`, whose sockets must never raise SIGPIPE.
    // SAFETY: setting a signal disposition to the default has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    init_logging(
        &std::env::var("RILL_LOG").unwrap_or_else(|_| "warn".into()),
        false,
    );
    runtime.block_on(command)
}

/// Logs to stderr: plain text, with ANSI colours only when stderr is a terminal (a file or a
/// log shipper gets no escape codes), or JSON lines with `json`. Returns the handle that
/// changes the filter at runtime (BROKER_LOGGER resources).
fn init_logging(filter: &str, json: bool) -> Arc<dyn LogFilterSink> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        registry
            .with(lines.json().flatten_event(true).with_current_span(false))
            .init();
    } else {
        registry
            .with(lines.with_ansi(std::io::stderr().is_terminal()))
            .init();
    }
    Arc::new(ReloadFilter(handle))
}

/// The subscriber's filter, replaced when log levels change.
struct ReloadFilter(reload::Handle<EnvFilter, Registry>);

impl LogFilterSink for ReloadFilter {
    fn install(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}
