//! `rill serve`: configuration (flags, `RILL_*` variables, a TOML file, in that order of
//! precedence), the startup banner, the `/metrics` endpoint, and running the broker.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use rill_broker::log_levels::{LogFilterSink, LogLevels};
use rill_broker::{Broker, BrokerConfig, WriteMode};
use serde::{Deserialize, Serialize};

use crate::metrics_http;

/// Defaults, in one place: the help text, the effective config and the tests read these.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9092";
pub const DEFAULT_DATA_DIR: &str = "./rill-data";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9644";

/// Flags of `rill serve`. Every one is optional here so that "not given" can fall through to
/// the environment, then the config file, then the default (named in each help text).
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file; its keys are the flag names with `_` for `-` (e.g. `data_dir`).
    /// Unknown keys are errors.
    #[arg(long, env = "RILL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (after flags, environment and file) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on for Kafka clients; port 0 picks a free port (the real one is
    /// printed) [default: 127.0.0.1:9092].
    #[arg(long, env = "RILL_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address clients are told to connect to (Kafka's advertised.listeners):
    /// `PLAINTEXT://host:port` or `host:port`, port 0 meaning the bound port [default: the
    /// listen address, or this machine's host name when listening on 0.0.0.0 or ::].
    #[arg(long, env = "RILL_ADVERTISED_LISTENERS", value_name = "LISTENER")]
    pub advertised_listeners: Option<String>,
    /// Directory holding the partition logs and the topic registry [default: ./rill-data].
    #[arg(long, env = "RILL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Partitions of auto-created topics [default: 1].
    #[arg(long, env = "RILL_NUM_PARTITIONS", value_name = "N")]
    pub num_partitions: Option<i32>,
    /// Create unknown topics on Metadata and Produce requests (true/false) [default: true].
    #[arg(long, env = "RILL_AUTO_CREATE_TOPICS", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub auto_create_topics: Option<bool>,
    /// Connections served at once; more wait in the kernel's accept queue [default: 1000].
    #[arg(long, env = "RILL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest request frame accepted; larger ones close the connection
    /// [default: 104857600].
    #[arg(long, env = "RILL_SOCKET_REQUEST_MAX_BYTES", value_name = "BYTES")]
    pub socket_request_max_bytes: Option<u32>,
    /// Most bytes one compressed record batch may inflate to; produce refuses larger ones with
    /// MESSAGE_TOO_LARGE (rill.decompressed.batch.max.bytes) [default: 67108864].
    #[arg(long, env = "RILL_DECOMPRESSED_BATCH_MAX_BYTES", value_name = "BYTES")]
    pub decompressed_batch_max_bytes: Option<u64>,
    /// How fetch responses send record bytes: `sendfile` (zero copy) or `copy`
    /// [default: sendfile].
    #[arg(long, env = "RILL_FETCH_WRITE_MODE", value_name = "MODE")]
    pub fetch_write_mode: Option<String>,
    /// Which fetch ranges skip the page cache: `auto` (ranges not all resident in memory are
    /// read uncached on the cold-read pool), `hot` (every range from the page cache, as
    /// before), `cold` (every range through the pool; for tests) [default: auto].
    #[arg(long, env = "RILL_FETCH_READ_PATH", value_name = "PATH")]
    pub fetch_read_path: Option<String>,
    /// Disk bytes per second all cold fetch reads may take together; 0 = bounded only by the
    /// pool's two threads [default: 0].
    #[arg(long, env = "RILL_COLD_READ_BYTES_PER_SECOND", value_name = "BYTES")]
    pub cold_read_bytes_per_second: Option<u64>,
    /// Threads of the cold-read pool, each running one disk read at a time (1-16)
    /// [default: 2].
    #[arg(long, env = "RILL_COLD_READ_THREADS", value_name = "N")]
    pub cold_read_threads: Option<usize>,
    /// Largest single cold read: a cold fetch range is read and sent in pieces of this size
    /// (65536-8388608) [default: 1048576].
    #[arg(long, env = "RILL_COLD_READ_CHUNK_BYTES", value_name = "BYTES")]
    pub cold_read_chunk_bytes: Option<usize>,
    /// Close connections idle this long (Kafka's connections.max.idle.ms) [default: 600000].
    #[arg(long, env = "RILL_CONNECTIONS_MAX_IDLE_MS", value_name = "MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// Forget an idempotent producer whose last batch is this old (Kafka's
    /// producer.id.expiration.ms) [default: 86400000].
    #[arg(long, env = "RILL_PRODUCER_ID_EXPIRATION_MS", value_name = "MS")]
    pub producer_id_expiration_ms: Option<i64>,
    /// Forget a transactional id idle this long (Kafka's transactional.id.expiration.ms)
    /// [default: 604800000].
    #[arg(long, env = "RILL_TRANSACTIONAL_ID_EXPIRATION_MS", value_name = "MS")]
    pub transactional_id_expiration_ms: Option<i64>,
    /// How long a new classic group waits for more members before its first rebalance
    /// completes (Kafka's group.initial.rebalance.delay.ms; 0 = no wait) [default: 3000].
    #[arg(long, env = "RILL_GROUP_INITIAL_REBALANCE_DELAY_MS", value_name = "MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// A KIP-848 consumer group member silent this long is removed (Kafka's
    /// group.consumer.session.timeout.ms) [default: 45000].
    #[arg(
        long,
        env = "RILL_GROUP_CONSUMER_SESSION_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub group_consumer_session_timeout_ms: Option<u64>,
    /// How often KIP-848 consumer group members heartbeat (Kafka's
    /// group.consumer.heartbeat.interval.ms) [default: 5000].
    #[arg(
        long,
        env = "RILL_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
        value_name = "MS"
    )]
    pub group_consumer_heartbeat_interval_ms: Option<u64>,
    /// The server-side assignors KIP-848 consumer groups may use, comma-separated; the first
    /// is the default, a member picks another with `group.remote.assignor` (Kafka's
    /// group.consumer.assignors; `uniform`, `range`, or Kafka's class names for them)
    /// [default: uniform,range].
    #[arg(long, env = "RILL_GROUP_CONSUMER_ASSIGNORS", value_name = "LIST")]
    pub group_consumer_assignors: Option<String>,
    /// Whether classic and KIP-848 members may share a group, converting it between the two
    /// types (Kafka's group.consumer.migration.policy: bidirectional, upgrade, downgrade or
    /// disabled) [default: bidirectional].
    #[arg(
        long,
        env = "RILL_GROUP_CONSUMER_MIGRATION_POLICY",
        value_name = "POLICY"
    )]
    pub group_consumer_migration_policy: Option<String>,
    /// How long a share group member holds records it acquired before they are offered again
    /// (Kafka's group.share.record.lock.duration.ms) [default: 30000].
    #[arg(
        long,
        env = "RILL_GROUP_SHARE_RECORD_LOCK_DURATION_MS",
        value_name = "MS"
    )]
    pub group_share_record_lock_duration_ms: Option<i64>,
    /// Deliveries of a share group record before it is archived (Kafka's
    /// group.share.delivery.count.limit) [default: 5].
    #[arg(long, env = "RILL_GROUP_SHARE_DELIVERY_COUNT_LIMIT", value_name = "N")]
    pub group_share_delivery_count_limit: Option<i16>,
    /// Longest delay a delayed record may ask for; longer ones are refused with
    /// INVALID_RECORD (rill.delivery.delay.max.ms) [default: 63072000000, two years].
    #[arg(long, env = "RILL_DELIVERY_DELAY_MAX_MS", value_name = "MS")]
    pub delivery_delay_max_ms: Option<i64>,
    /// Waiting delayed records each delay-enabled partition keeps in memory; the rest wait in
    /// its delay log until due soon (rill.delivery.delay.memory.entries) [default: 262144].
    #[arg(long, env = "RILL_DELIVERY_DELAY_MEMORY_ENTRIES", value_name = "N")]
    pub delivery_delay_memory_entries: Option<usize>,
    /// Distinct `rill-delay-cancel` ids each delay-enabled partition holds while records they
    /// may cancel wait; more are refused (rill.delivery.cancel.max.pending) [default: 65536].
    #[arg(long, env = "RILL_DELIVERY_CANCEL_MAX_PENDING", value_name = "N")]
    pub delivery_cancel_max_pending: Option<usize>,
    /// Address of the Prometheus `/metrics` HTTP endpoint [default: 127.0.0.1:9644]. When the
    /// default address is taken (another broker on this machine) the broker warns and serves
    /// without it; an address given explicitly must be free.
    #[arg(long, env = "RILL_METRICS_LISTEN", value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Turn the `/metrics` endpoint off.
    #[arg(long, env = "RILL_NO_METRICS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub no_metrics: Option<bool>,
    /// Log cleaner threads (Kafka's log.cleaner.threads; 0 turns the cleaner off, as
    /// log.cleaner.enable=false) [default: 1].
    #[arg(long, env = "RILL_LOG_CLEANER_THREADS", value_name = "N")]
    pub log_cleaner_threads: Option<usize>,
    /// Memory for the cleaner's key maps, all threads together
    /// (log.cleaner.dedupe.buffer.size) [default: 134217728].
    #[arg(
        long,
        env = "RILL_LOG_CLEANER_DEDUPE_BUFFER_SIZE",
        value_name = "BYTES"
    )]
    pub log_cleaner_dedupe_buffer_size: Option<u64>,
    /// Cleaner I/O throttle, reads and writes together
    /// (log.cleaner.io.max.bytes.per.second) [default: unlimited].
    #[arg(
        long,
        env = "RILL_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND",
        value_name = "BYTES"
    )]
    pub log_cleaner_io_max_bytes_per_second: Option<i64>,
    /// Sleep of a cleaner thread that found nothing to clean (log.cleaner.backoff.ms)
    /// [default: 15000].
    #[arg(long, env = "RILL_LOG_CLEANER_BACKOFF_MS", value_name = "MS")]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Incremental fetch sessions the broker keeps (Kafka's
    /// max.incremental.fetch.session.cache.slots; 0 turns sessions off) [default: 1000].
    #[arg(
        long,
        env = "RILL_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS",
        value_name = "N"
    )]
    pub max_incremental_fetch_session_cache_slots: Option<usize>,
    /// Log level or filter (`error`, `warn`, `info`, `debug`, `trace`, or `rill_broker=debug`)
    /// [default: info; the RILL_LOG variable also sets it].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format on stderr: `text` (plain, with colours only on a terminal) or `json`
    /// (one object per line, for log shippers) [default: text].
    #[arg(long, env = "RILL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// The config file's keys. Every key is optional; unknown ones are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertised_listeners: Option<String>,
    data_dir: Option<PathBuf>,
    num_partitions: Option<i32>,
    auto_create_topics: Option<bool>,
    max_connections: Option<usize>,
    socket_request_max_bytes: Option<u32>,
    decompressed_batch_max_bytes: Option<u64>,
    fetch_write_mode: Option<String>,
    fetch_read_path: Option<String>,
    cold_read_bytes_per_second: Option<u64>,
    cold_read_threads: Option<usize>,
    cold_read_chunk_bytes: Option<usize>,
    connections_max_idle_ms: Option<u64>,
    producer_id_expiration_ms: Option<i64>,
    transactional_id_expiration_ms: Option<i64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_consumer_session_timeout_ms: Option<u64>,
    group_consumer_heartbeat_interval_ms: Option<u64>,
    group_consumer_assignors: Option<String>,
    group_consumer_migration_policy: Option<String>,
    group_share_record_lock_duration_ms: Option<i64>,
    group_share_delivery_count_limit: Option<i16>,
    delivery_delay_max_ms: Option<i64>,
    delivery_delay_memory_entries: Option<usize>,
    delivery_cancel_max_pending: Option<usize>,
    metrics_listen: Option<String>,
    metrics: Option<bool>,
    log_cleaner_threads: Option<usize>,
    log_cleaner_dedupe_buffer_size: Option<u64>,
    log_cleaner_io_max_bytes_per_second: Option<i64>,
    log_cleaner_backoff_ms: Option<u64>,
    max_incremental_fetch_session_cache_slots: Option<usize>,
    log_level: Option<String>,
    log_format: Option<String>,
}

/// The effective configuration of `rill serve`, every value decided.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServeConfig {
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_listeners: Option<String>,
    pub data_dir: PathBuf,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub max_connections: usize,
    pub socket_request_max_bytes: u32,
    pub decompressed_batch_max_bytes: u64,
    pub fetch_write_mode: String,
    pub fetch_read_path: String,
    pub cold_read_bytes_per_second: u64,
    pub cold_read_threads: usize,
    pub cold_read_chunk_bytes: usize,
    pub connections_max_idle_ms: u64,
    pub producer_id_expiration_ms: i64,
    pub transactional_id_expiration_ms: i64,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_consumer_session_timeout_ms: u64,
    pub group_consumer_heartbeat_interval_ms: u64,
    pub group_consumer_assignors: String,
    pub group_consumer_migration_policy: String,
    pub group_share_record_lock_duration_ms: i64,
    pub group_share_delivery_count_limit: i16,
    pub delivery_delay_max_ms: i64,
    pub delivery_delay_memory_entries: usize,
    pub delivery_cancel_max_pending: usize,
    pub metrics: bool,
    pub metrics_listen: String,
    /// True when `metrics_listen` was chosen by someone (flag, variable or file) rather than
    /// defaulted: then failing to bind it is an error, not a warning.
    #[serde(skip)]
    pub metrics_listen_explicit: bool,
    pub log_cleaner_threads: usize,
    pub log_cleaner_dedupe_buffer_size: u64,
    /// `i64::MAX`: no limit.
    pub log_cleaner_io_max_bytes_per_second: i64,
    pub log_cleaner_backoff_ms: u64,
    pub max_incremental_fetch_session_cache_slots: usize,
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
}

impl ServeConfig {
    /// Merges flags (which clap has already merged with `RILL_*` variables), the config
    /// file and the defaults, and validates the result.
    ///
    /// # Errors
    /// An unreadable or invalid config file (naming the key), or an invalid value.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = BrokerConfig::default();
        let metrics_listen_explicit =
            args.metrics_listen.is_some() || file.metrics_listen.is_some();
        let config = ServeConfig {
            listen: pick(args.listen.clone(), file.listen, DEFAULT_LISTEN.into()),
            advertised_listeners: args
                .advertised_listeners
                .clone()
                .or(file.advertised_listeners),
            data_dir: pick(
                args.data_dir.clone(),
                file.data_dir,
                DEFAULT_DATA_DIR.into(),
            ),
            num_partitions: pick(
                args.num_partitions,
                file.num_partitions,
                defaults.num_partitions,
            ),
            auto_create_topics: pick(
                args.auto_create_topics,
                file.auto_create_topics,
                defaults.auto_create_topics,
            ),
            max_connections: pick(
                args.max_connections,
                file.max_connections,
                defaults.max_connections,
            ),
            socket_request_max_bytes: pick(
                args.socket_request_max_bytes,
                file.socket_request_max_bytes,
                defaults.socket_request_max_bytes,
            ),
            decompressed_batch_max_bytes: pick(
                args.decompressed_batch_max_bytes,
                file.decompressed_batch_max_bytes,
                defaults.decompressed_batch_max_bytes,
            ),
            fetch_write_mode: pick(
                args.fetch_write_mode.clone(),
                file.fetch_write_mode,
                "sendfile".into(),
            ),
            fetch_read_path: pick(
                args.fetch_read_path.clone(),
                file.fetch_read_path,
                "auto".into(),
            ),
            cold_read_bytes_per_second: pick(
                args.cold_read_bytes_per_second,
                file.cold_read_bytes_per_second,
                0,
            ),
            cold_read_threads: pick(
                args.cold_read_threads,
                file.cold_read_threads,
                rill_broker::ColdReadConfig::default().threads,
            ),
            cold_read_chunk_bytes: pick(
                args.cold_read_chunk_bytes,
                file.cold_read_chunk_bytes,
                rill_broker::ColdReadConfig::default().chunk_bytes,
            ),
            connections_max_idle_ms: pick(
                args.connections_max_idle_ms,
                file.connections_max_idle_ms,
                defaults.connections_max_idle_ms,
            ),
            producer_id_expiration_ms: pick(
                args.producer_id_expiration_ms,
                file.producer_id_expiration_ms,
                defaults.producer_id_expiration_ms,
            ),
            transactional_id_expiration_ms: pick(
                args.transactional_id_expiration_ms,
                file.transactional_id_expiration_ms,
                defaults.transactions.id_expiration_ms,
            ),
            group_initial_rebalance_delay_ms: pick(
                args.group_initial_rebalance_delay_ms,
                file.group_initial_rebalance_delay_ms,
                defaults.groups.initial_rebalance_delay_ms,
            ),
            group_consumer_session_timeout_ms: pick(
                args.group_consumer_session_timeout_ms,
                file.group_consumer_session_timeout_ms,
                defaults.groups.consumer_session_timeout_ms,
            ),
            group_consumer_heartbeat_interval_ms: pick(
                args.group_consumer_heartbeat_interval_ms,
                file.group_consumer_heartbeat_interval_ms,
                defaults.groups.consumer_heartbeat_interval_ms,
            ),
            group_consumer_assignors: pick(
                args.group_consumer_assignors.clone(),
                file.group_consumer_assignors.clone(),
                defaults.groups.consumer_assignors.join(","),
            ),
            group_consumer_migration_policy: pick(
                args.group_consumer_migration_policy.clone(),
                file.group_consumer_migration_policy.clone(),
                defaults.groups.migration_policy.name().to_string(),
            ),
            group_share_record_lock_duration_ms: pick(
                args.group_share_record_lock_duration_ms,
                file.group_share_record_lock_duration_ms,
                defaults.shares.record_lock_duration_ms,
            ),
            group_share_delivery_count_limit: pick(
                args.group_share_delivery_count_limit,
                file.group_share_delivery_count_limit,
                defaults.shares.delivery_count_limit,
            ),
            delivery_delay_max_ms: pick(
                args.delivery_delay_max_ms,
                file.delivery_delay_max_ms,
                defaults.delivery_delay_max_ms,
            ),
            delivery_delay_memory_entries: pick(
                args.delivery_delay_memory_entries,
                file.delivery_delay_memory_entries,
                defaults.delivery_delay_memory_entries,
            ),
            delivery_cancel_max_pending: pick(
                args.delivery_cancel_max_pending,
                file.delivery_cancel_max_pending,
                defaults.delivery_cancel_max_pending,
            ),
            metrics: !args.no_metrics.unwrap_or(false) && file.metrics.unwrap_or(true),
            metrics_listen: pick(
                args.metrics_listen.clone(),
                file.metrics_listen,
                DEFAULT_METRICS_LISTEN.into(),
            ),
            metrics_listen_explicit,
            log_cleaner_threads: pick(
                args.log_cleaner_threads,
                file.log_cleaner_threads,
                defaults.cleaner.threads,
            ),
            log_cleaner_dedupe_buffer_size: pick(
                args.log_cleaner_dedupe_buffer_size,
                file.log_cleaner_dedupe_buffer_size,
                defaults.cleaner.dedupe_buffer_bytes as u64,
            ),
            log_cleaner_io_max_bytes_per_second: pick(
                args.log_cleaner_io_max_bytes_per_second,
                file.log_cleaner_io_max_bytes_per_second,
                i64::MAX,
            ),
            log_cleaner_backoff_ms: pick(
                args.log_cleaner_backoff_ms,
                file.log_cleaner_backoff_ms,
                defaults.cleaner.backoff_ms,
            ),
            max_incremental_fetch_session_cache_slots: pick(
                args.max_incremental_fetch_session_cache_slots,
                file.max_incremental_fetch_session_cache_slots,
                defaults.fetch_sessions.slots,
            ),
            log_level: pick(
                args.log_level
                    .clone()
                    .or_else(|| std::env::var("RILL_LOG").ok()),
                file.log_level,
                "info".into(),
            ),
            log_format: pick(args.log_format.clone(), file.log_format, "text".into()),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.num_partitions < 1 {
            bail!(
                "invalid value for num_partitions: {} (must be at least 1)",
                self.num_partitions
            );
        }
        if self.max_connections < 1 {
            bail!("invalid value for max_connections: 0 (must be at least 1)");
        }
        if !(1..=rill_broker::cold_read::COLD_READ_THREADS_MAX).contains(&self.cold_read_threads) {
            bail!(
                "invalid value for cold_read_threads: {} (must be 1 to {})",
                self.cold_read_threads,
                rill_broker::cold_read::COLD_READ_THREADS_MAX
            );
        }
        let chunk = rill_broker::cold_read::COLD_READ_CHUNK_BYTES_MIN
            ..=rill_broker::cold_read::COLD_READ_CHUNK_BYTES_MAX;
        if !chunk.contains(&self.cold_read_chunk_bytes) {
            bail!(
                "invalid value for cold_read_chunk_bytes: {} (must be {} to {})",
                self.cold_read_chunk_bytes,
                chunk.start(),
                chunk.end()
            );
        }
        // An int in Kafka; the bound also keeps `now + delay` far from overflowing an Instant.
        if self.group_initial_rebalance_delay_ms > i32::MAX as u64 {
            bail!(
                "invalid value for group_initial_rebalance_delay_ms: {} (must be at most {})",
                self.group_initial_rebalance_delay_ms,
                i32::MAX
            );
        }
        if self.socket_request_max_bytes < 1024 {
            bail!(
                "invalid value for socket_request_max_bytes: {} (must be at least 1024)",
                self.socket_request_max_bytes
            );
        }
        for (key, ms) in [
            ("producer_id_expiration_ms", self.producer_id_expiration_ms),
            (
                "transactional_id_expiration_ms",
                self.transactional_id_expiration_ms,
            ),
            ("delivery_delay_max_ms", self.delivery_delay_max_ms),
            (
                "group_share_record_lock_duration_ms",
                self.group_share_record_lock_duration_ms,
            ),
            (
                "group_share_delivery_count_limit",
                i64::from(self.group_share_delivery_count_limit),
            ),
        ] {
            if ms < 1 {
                bail!("invalid value for {key}: {ms} (must be at least 1)");
            }
        }
        if self.group_consumer_heartbeat_interval_ms < 1
            || self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms
        {
            bail!(
                "invalid value for group_consumer_heartbeat_interval_ms: {} (must be at least 1 and below group_consumer_session_timeout_ms, {})",
                self.group_consumer_heartbeat_interval_ms,
                self.group_consumer_session_timeout_ms
            );
        }
        self.consumer_assignors()?;
        self.migration_policy()?;
        if self.delivery_delay_memory_entries < 1 {
            bail!("invalid value for delivery_delay_memory_entries: 0 (must be at least 1)");
        }
        if self.delivery_cancel_max_pending < 1 {
            bail!("invalid value for delivery_cancel_max_pending: 0 (must be at least 1)");
        }
        if self.decompressed_batch_max_bytes < 1024 {
            bail!(
                "invalid value for decompressed_batch_max_bytes: {} (must be at least 1024)",
                self.decompressed_batch_max_bytes
            );
        }
        if self.log_cleaner_threads > 0
            && self.log_cleaner_dedupe_buffer_size < (self.log_cleaner_threads as u64) << 20
        {
            bail!(
                "invalid value for log_cleaner_dedupe_buffer_size: {} (must be at least 1 MiB per cleaner thread)",
                self.log_cleaner_dedupe_buffer_size
            );
        }
        if self.log_cleaner_io_max_bytes_per_second < 1 {
            bail!(
                "invalid value for log_cleaner_io_max_bytes_per_second: {} (must be at least 1)",
                self.log_cleaner_io_max_bytes_per_second
            );
        }
        self.write_mode()?;
        self.read_path()?;
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("invalid value for log_level: '{}'", self.log_level))?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!(
                "invalid value for log_format: '{}' (expected text or json)",
                self.log_format
            );
        }
        Ok(())
    }

    /// `group_consumer_assignors` as the broker's assignor names: each one it implements,
    /// none twice, at least one.
    fn consumer_assignors(&self) -> anyhow::Result<Vec<&'static str>> {
        let mut names = Vec::new();
        for entry in self.group_consumer_assignors.split(',') {
            let Some(name) = rill_broker::coordinator::group::consumer::assignor_named(entry)
            else {
                bail!(
                    "invalid value for group_consumer_assignors: '{}' (unknown assignor '{}'; expected uniform or range)",
                    self.group_consumer_assignors,
                    entry.trim()
                );
            };
            if names.contains(&name) {
                bail!(
                    "invalid value for group_consumer_assignors: '{}' ({name} twice)",
                    self.group_consumer_assignors
                );
            }
            names.push(name);
        }
        Ok(names)
    }

    fn migration_policy(&self) -> anyhow::Result<rill_broker::coordinator::group::MigrationPolicy> {
        rill_broker::coordinator::group::MigrationPolicy::parse(
            &self.group_consumer_migration_policy,
        )
        .ok_or_else(|| {
            anyhow::anyhow!(
                "invalid value for group_consumer_migration_policy: '{}' (expected bidirectional, upgrade, downgrade or disabled)",
                self.group_consumer_migration_policy
            )
        })
    }

    fn write_mode(&self) -> anyhow::Result<WriteMode> {
        self.fetch_write_mode.parse::<WriteMode>().map_err(|e| {
            anyhow::anyhow!(
                "invalid value for fetch_write_mode: '{}' ({e}; expected sendfile or copy)",
                self.fetch_write_mode
            )
        })
    }

    fn read_path(&self) -> anyhow::Result<rill_broker::ReadPathPolicy> {
        self.fetch_read_path.parse().map_err(|e| {
            anyhow::anyhow!(
                "invalid value for fetch_read_path: '{}' ({e})",
                self.fetch_read_path
            )
        })
    }

    /// The broker's settings.
    ///
    /// # Errors
    /// None after [`ServeConfig::resolve`] validated the config.
    pub fn broker_config(&self) -> anyhow::Result<BrokerConfig> {
        Ok(BrokerConfig {
            listen: self.listen.clone(),
            advertised_listeners: self.advertised_listeners.clone(),
            decompressed_batch_max_bytes: self.decompressed_batch_max_bytes,
            data_dir: self.data_dir.clone(),
            num_partitions: self.num_partitions,
            auto_create_topics: self.auto_create_topics,
            max_connections: self.max_connections,
            socket_request_max_bytes: self.socket_request_max_bytes,
            write_mode: self.write_mode()?,
            cold_reads: rill_broker::ColdReadConfig {
                policy: self.read_path()?,
                bytes_per_second: self.cold_read_bytes_per_second,
                threads: self.cold_read_threads,
                chunk_bytes: self.cold_read_chunk_bytes,
                ..rill_broker::ColdReadConfig::default()
            },
            connections_max_idle_ms: self.connections_max_idle_ms,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            delivery_delay_max_ms: self.delivery_delay_max_ms,
            delivery_delay_memory_entries: self.delivery_delay_memory_entries,
            delivery_cancel_max_pending: self.delivery_cancel_max_pending,
            transactions: rill_broker::TxnConfig {
                id_expiration_ms: self.transactional_id_expiration_ms,
                ..rill_broker::TxnConfig::default()
            },
            shares: rill_broker::coordinator::share::ShareConfig {
                record_lock_duration_ms: self.group_share_record_lock_duration_ms,
                delivery_count_limit: self.group_share_delivery_count_limit,
                ..rill_broker::coordinator::share::ShareConfig::default()
            },
            groups: rill_broker::coordinator::group::GroupConfig {
                initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
                consumer_session_timeout_ms: self.group_consumer_session_timeout_ms,
                consumer_heartbeat_interval_ms: self.group_consumer_heartbeat_interval_ms,
                consumer_assignors: self.consumer_assignors()?,
                migration_policy: self.migration_policy()?,
                ..rill_broker::coordinator::group::GroupConfig::default()
            },
            cleaner: rill_storage::CleanerConfig {
                enable: self.log_cleaner_threads > 0,
                threads: self.log_cleaner_threads.max(1),
                dedupe_buffer_bytes: usize::try_from(self.log_cleaner_dedupe_buffer_size)
                    .unwrap_or(usize::MAX),
                io_max_bytes_per_second: if self.log_cleaner_io_max_bytes_per_second == i64::MAX {
                    f64::MAX
                } else {
                    self.log_cleaner_io_max_bytes_per_second as f64
                },
                backoff_ms: self.log_cleaner_backoff_ms,
                ..rill_storage::CleanerConfig::default()
            },
            fetch_sessions: rill_broker::fetch_session::CacheConfig {
                slots: self.max_incremental_fetch_session_cache_slots,
                ..rill_broker::fetch_session::CacheConfig::default()
            },
            ..BrokerConfig::default()
        })
    }

    /// The configuration as TOML (what `--print-config` shows; loadable with `--config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// First of flag/variable, file, default.
fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    // toml's message names the unknown or mistyped key and shows the line.
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// Raises the soft limit on open descriptors to the hard limit: storage sizes its descriptor
/// budget from the soft limit (three quarters of it), and 10 000 partitions need more than
/// the usual 1 024. Failure only leaves the lower limit (and a smaller budget).
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open file limit to its hard limit");
        }
    }
}

/// Runs the broker until SIGINT or SIGTERM.
///
/// # Errors
/// The broker failing to start (address in use, data directory locked or unreadable) or to
/// stop cleanly; the metrics address being taken when it was chosen explicitly.
pub async fn serve(
    config: ServeConfig,
    log_filter: Option<std::sync::Arc<dyn LogFilterSink>>,
) -> anyhow::Result<()> {
    raise_descriptor_limit();
    let started = Instant::now();
    let mut broker_config = config.broker_config()?;
    // BROKER_LOGGER changes reach the subscriber through `log_filter`.
    broker_config.log_levels = std::sync::Arc::new(LogLevels::new(&config.log_level, log_filter));
    let broker = Broker::start(broker_config)
        .await
        .with_context(|| format!("starting the broker on {}", config.listen))?;
    let state = broker.state();
    let metrics_addr = if config.metrics {
        match metrics_http::bind(&config.metrics_listen).await {
            Ok(listener) => {
                let addr = listener.local_addr().ok();
                tokio::spawn(metrics_http::run(listener, state.clone()));
                addr
            }
            Err(e) if !config.metrics_listen_explicit => {
                tracing::warn!(addr = %config.metrics_listen, error = %e,
                    "metrics endpoint not started (address in use?); set --metrics-listen to choose another");
                None
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "binding the metrics endpoint on {} (choose another with --metrics-listen or turn it off with --no-metrics)",
                        config.metrics_listen
                    )
                })
            }
        }
    } else {
        None
    };
    let shutdown = shutdown_signal()?;
    banner(&config, &broker, metrics_addr, started.elapsed());
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "rill listening on {}", broker.local_addr())
            .and_then(|()| stdout.flush())
            .context("writing the ready line to stdout")?;
    }
    broker
        .run(shutdown)
        .await
        .context("shutting the broker down")?;
    Ok(())
}

/// The startup banner on stderr: what an operator checks first. With `--log-format json` it
/// is one log event (so every stderr line is JSON for the log shipper), filtered as `info`.
fn banner(
    config: &ServeConfig,
    broker: &Broker,
    metrics_addr: Option<std::net::SocketAddr>,
    startup: std::time::Duration,
) {
    let state = broker.state();
    let partitions = state.logs.partitions().len();
    let metrics = metrics_addr.map_or_else(|| "off".to_string(), |a| format!("http://{a}/metrics"));
    if config.log_format == "json" {
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            listener = %broker.local_addr(),
            data_dir = %config.data_dir.display(),
            partitions,
            startup_ms = startup.as_millis() as u64,
            metrics = %metrics,
            "rill started"
        );
        return;
    }
    eprintln!(
        "rill {version}\n  kafka listener  {listen}\n  data dir        {data}\n  partitions      {partitions} found, storage opened in {ms} ms\n  metrics         {metrics}",
        version = env!("CARGO_PKG_VERSION"),
        listen = broker.local_addr(),
        data = config.data_dir.display(),
        ms = startup.as_millis(),
    );
}

/// Registers SIGINT and SIGTERM now (so a signal sent right after the ready line is not lost
/// to the default action) and returns a future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let f = write("listen = \"127.0.0.1:1234\"\nnum_partitions = 3\nmetrics = false\n");
        let args = ServeArgs {
            config: Some(f.path().into()),
            num_partitions: Some(7),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1234");
        assert_eq!(c.num_partitions, 7);
        assert!(!c.metrics);
        assert_eq!(c.max_connections, 1000);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn unknown_key_is_named() {
        let f = write("listen = \"127.0.0.1:1\"\nnum_partition = 3\n");
        let args = ServeArgs {
            config: Some(f.path().into()),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("num_partition"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let f = write("num_partitions = \"three\"\n");
        let args = ServeArgs {
            config: Some(f.path().into()),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("num_partitions"), "{e}");
        let args = ServeArgs {
            fetch_write_mode: Some("mmap".into()),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("fetch_write_mode"), "{e}");
        let args = ServeArgs {
            fetch_read_path: Some("warm".into()),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("fetch_read_path"), "{e}");
    }

    #[test]
    fn initial_rebalance_delay_reaches_the_group_coordinator() {
        let c = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(
            c.broker_config().unwrap().groups.initial_rebalance_delay_ms,
            3_000
        );
        let f = write("group_initial_rebalance_delay_ms = 0\n");
        let args = ServeArgs {
            config: Some(f.path().into()),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(
            c.broker_config().unwrap().groups.initial_rebalance_delay_ms,
            0
        );
        let args = ServeArgs {
            group_initial_rebalance_delay_ms: Some(u64::from(u32::MAX)),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("group_initial_rebalance_delay_ms"), "{e}");
    }

    #[test]
    fn consumer_assignors_are_checked_and_ordered() {
        let c = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(
            c.broker_config().unwrap().groups.consumer_assignors,
            vec!["uniform", "range"]
        );
        let f = write("group_consumer_assignors = \"org.apache.kafka.coordinator.group.assignor.RangeAssignor\"\n");
        let args = ServeArgs {
            config: Some(f.path().into()),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(
            c.broker_config().unwrap().groups.consumer_assignors,
            vec!["range"]
        );
        for bad in ["sticky", "range,range", ""] {
            let args = ServeArgs {
                group_consumer_assignors: Some(bad.into()),
                ..ServeArgs::default()
            };
            let e = ServeConfig::resolve(&args).unwrap_err().to_string();
            assert!(e.contains("group_consumer_assignors"), "{bad}: {e}");
        }
    }

    #[test]
    fn printed_config_loads_back() {
        let c = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        let f = write(&c.to_toml());
        let args = ServeArgs {
            config: Some(f.path().into()),
            ..ServeArgs::default()
        };
        let mut back = ServeConfig::resolve(&args).unwrap();
        back.metrics_listen_explicit = false;
        assert_eq!(back, c);
    }
}
