//! `rill`: the broker binary.
//!
//! `rill` with no arguments is `rill serve` with defaults: listen on 127.0.0.1:9092, data in
//! ./rill-data. When the broker is ready it prints exactly one line to stdout,
//! `rill listening on HOST:PORT`, which test harnesses wait for; everything else is logged to
//! stderr (filter with `RILL_LOG`, default `info`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rill_broker::{Broker, BrokerConfig, WriteMode};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "rill",
    version,
    about = "A Kafka-compatible streaming log broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the Kafka protocol (the default command).
    Serve(ServeArgs),
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// Directory holding the partition logs and the topic registry.
    #[arg(long, default_value = "./rill-data")]
    data_dir: PathBuf,
    /// Partitions of auto-created topics.
    #[arg(long, default_value_t = 1)]
    num_partitions: i32,
    /// Create unknown topics on Metadata and Produce requests.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Connections served at once.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Largest request frame accepted; larger ones close the connection.
    #[arg(long, default_value_t = 104_857_600)]
    socket_request_max_bytes: u32,
    /// How fetch responses send record bytes: `sendfile` (zero copy) or `copy`.
    #[arg(long, default_value = "sendfile")]
    fetch_write_mode: WriteMode,
}

impl Default for ServeArgs {
    fn default() -> Self {
        // Parsing no arguments yields exactly the declared defaults.
        ServeArgs::parse_from(["serve"])
    }
}

/// `ServeArgs` alone, so `Default` can reuse clap's defaults.
#[derive(Parser, Debug)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    fn parse_from<I: IntoIterator<Item = &'static str>>(args: I) -> ServeArgs {
        ServeOnly::parse_from(args).args
    }

    fn into_config(self) -> BrokerConfig {
        BrokerConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            num_partitions: self.num_partitions,
            auto_create_topics: self.auto_create_topics,
            max_connections: self.max_connections,
            socket_request_max_bytes: self.socket_request_max_bytes,
            write_mode: self.fetch_write_mode,
            ..BrokerConfig::default()
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("RILL_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => ServeArgs::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let broker = Broker::start(args.into_config())
        .await
        .context("starting the broker")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "rill listening on {}", broker.local_addr())
            .and_then(|()| stdout.flush())
            .context("writing the ready line to stdout")?;
    }
    broker
        .run(shutdown_signal())
        .await
        .context("shutting the broker down")?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
