//! The broker as a whole: startup (storage recovery, registry, bind), run, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rill_storage::{LogManager, LogManagerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker_configs::{BrokerConfigError, DynamicConfigs};
use crate::coordinator::group::{self as groups, GroupConfig, GroupCoordinator};
use crate::coordinator::runtime::CoordinatorRuntime;
use crate::coordinator::txn::coordinator::{TxnConfig, TxnCoordinator};
use crate::coordinator::txn::markers::PartitionMarkers;
use crate::coordinator::txn::records as txn_records;
use crate::coordinator::txn::shard::TxnShard;
use crate::error::BrokerError;
use crate::listener;
use crate::metrics::Metrics;
use crate::producer_id::ProducerIdManager;
use crate::response_writer::WriteMode;
use crate::state::{BrokerState, Coordinators, Endpoint};
use crate::topics::TopicRegistry;

/// Broker settings; the `rill serve` flags map onto these one to one.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Address to bind, `host:port`; port 0 picks a free port, which is then advertised.
    pub listen: String,
    /// `advertised.listeners`: the address clients are told to connect to (Metadata,
    /// FindCoordinator, DescribeCluster), as `PLAINTEXT://host:port` or `host:port`; port 0
    /// means the bound port. `None`: the bound address, or this machine's host name when bound
    /// to a wildcard (0.0.0.0, ::), as Kafka does for a listener without a host. A wildcard
    /// here is refused at start, as Kafka refuses it.
    pub advertised_listeners: Option<String>,
    /// Root of the partition directories and the topic registry.
    pub data_dir: PathBuf,
    /// Partitions of auto-created topics and of CreateTopics with `num_partitions = -1`.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`: create unknown topics on Metadata and Produce.
    pub auto_create_topics: bool,
    /// Connections served at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// `socket.request.max.bytes`: larger request frames close the connection.
    pub socket_request_max_bytes: u32,
    /// How fetch responses send record bytes.
    pub write_mode: WriteMode,
    /// Hot and cold fetch reads: the path policy and the cold-read pool's bounds.
    pub cold_reads: crate::cold_read::ColdReadConfig,
    /// This broker's node id in Metadata; a single node is its own controller.
    pub node_id: i32,
    /// Bound on storage's open segment files; 0 lets storage pick (half the fd limit).
    pub max_open_files: usize,
    /// How long shutdown waits for connections to finish their current request.
    pub shutdown_grace_ms: u64,
    /// `connections.max.idle.ms`: close a connection that sends no request, or does not take
    /// its response, for this long.
    pub connections_max_idle_ms: u64,
    /// `queued.max.request.bytes`: bytes of large request frames (above the 64 KiB every
    /// connection reads into anyway) held at once across all connections. A connection whose
    /// next frame does not fit waits before reading it, so memory is bounded by this plus
    /// 64 KiB per connection, not by `max_connections * socket_request_max_bytes`.
    pub queued_max_request_bytes: u64,
    /// Period of `LogManager::tick` (retention, flush.ms, segment.ms).
    pub tick_interval_ms: u64,
    /// Most partitions a topic may be created with or grown to by a client (CreateTopics,
    /// CreatePartitions, auto-creation), at most [`crate::topics::PARTITIONS_PER_TOPIC_MAX`]
    /// (the default). Each partition is a directory and open files; an embedder, or the
    /// request fuzz target (where one input could otherwise create 10 000 logs), bounds what
    /// one request may cost with it.
    pub max_partitions_per_topic: i32,
    /// `rill.decompressed.batch.max.bytes`: the most one compressed record batch may inflate
    /// to. Produce validation and ListOffsets decompress in a streaming pass with this bound,
    /// so a small batch that inflates to gigabytes costs at most this much CPU and a codec
    /// window of memory; a batch past it is refused with MESSAGE_TOO_LARGE. Kafka has no such
    /// bound. The default, 64 MiB, is 64 times the default `max.message.bytes`.
    pub decompressed_batch_max_bytes: u64,
    /// Threads of the I/O pool (`io_pool.rs`) that validate and append produced batches, or
    /// look up and decompress for ListOffsets. Each job may hold a codec window (up to 16 MiB
    /// for zstd).
    pub io_threads: usize,
    /// Jobs the I/O pool admits beyond its running ones; further callers wait for a slot.
    pub io_queue: usize,
    /// Flusher threads of the data directory (`rill_storage::flusher`): how many flush passes
    /// may run at once when one is stuck on a slow sync.
    pub sync_workers: usize,
    /// Consumer group coordinator settings (session timeouts, offsets topic, retention).
    pub groups: GroupConfig,
    /// The transaction coordinator's settings.
    pub transactions: TxnConfig,
    /// Share groups (KIP-932): `group.share.*` defaults and `__share_group_state`.
    pub shares: crate::coordinator::share::ShareConfig,
    /// The file I/O seam storage writes through; `None` is the real file system. Tests put a
    /// fault-injecting one here (held or failing syncs).
    pub file_io: Option<Arc<dyn rill_storage::file_io::FileIo>>,
    /// Log levels (BROKER_LOGGER resources): the filter the process started with and, from
    /// the binary, the handle that changes it at runtime.
    pub log_levels: Arc<crate::log_levels::LogLevels>,
    /// `producer.id.expiration.ms`: partitions forget an idempotent producer idle this long.
    pub producer_id_expiration_ms: i64,
    /// The log cleaner (`log.cleaner.*`): threads, key map size, throttle, backoff.
    pub cleaner: rill_storage::CleanerConfig,
    /// `rill.delivery.delay.max.ms`: the longest delay a delayed record may ask for (longer
    /// ones are refused with INVALID_RECORD). Default two years.
    pub delivery_delay_max_ms: i64,
    /// `rill.delivery.delay.memory.entries`: waiting records each delay store keeps in memory
    /// (24 bytes plus set overhead each); the others stay in its delay log until due soon.
    pub delivery_delay_memory_entries: usize,
    /// `rill.delivery.cancel.max.pending`: distinct `rill-delay-cancel` ids each delay store
    /// holds while records they may cancel wait (each at most 256 bytes); a cancel beyond it
    /// is refused with POLICY_VIOLATION.
    pub delivery_cancel_max_pending: usize,
    /// Incremental fetch sessions (KIP-227): `max.incremental.fetch.session.cache.slots`,
    /// Kafka's eviction time, and Rill's bound on cached partitions over all sessions.
    pub fetch_sessions: crate::fetch_session::CacheConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".into(),
            advertised_listeners: None,
            data_dir: PathBuf::from("rill-data"),
            num_partitions: 1,
            auto_create_topics: true,
            max_connections: 1000,
            socket_request_max_bytes: 104_857_600,
            write_mode: WriteMode::Sendfile,
            cold_reads: crate::cold_read::ColdReadConfig::default(),
            node_id: 0,
            max_open_files: 0,
            shutdown_grace_ms: 10_000,
            connections_max_idle_ms: 600_000,
            queued_max_request_bytes: 512 << 20,
            tick_interval_ms: 1000,
            max_partitions_per_topic: crate::topics::PARTITIONS_PER_TOPIC_MAX,
            decompressed_batch_max_bytes: 64 << 20,
            io_threads: 4,
            io_queue: 64,
            sync_workers: rill_storage::flusher::SYNC_WORKERS,
            groups: GroupConfig::default(),
            transactions: TxnConfig::default(),
            shares: crate::coordinator::share::ShareConfig::default(),
            file_io: None,
            log_levels: Arc::default(),
            producer_id_expiration_ms:
                rill_storage::producer_state::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            cleaner: rill_storage::CleanerConfig::default(),
            delivery_delay_max_ms: 2 * 365 * 24 * 3600 * 1000,
            delivery_delay_memory_entries: 262_144,
            delivery_cancel_max_pending: 65_536,
            fetch_sessions: crate::fetch_session::CacheConfig::default(),
        }
    }
}

/// A started broker: storage recovered, socket bound, not yet accepting.
pub struct Broker {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<BrokerState>,
    /// Holds the data directory's `flock` until the broker is dropped.
    _lock: std::fs::File,
}

impl Broker {
    /// Opens storage (recovering every log found), loads the topic registry and binds the
    /// listener. When this returns the broker is ready: the caller prints its address and
    /// calls [`Broker::run`].
    ///
    /// # Errors
    /// Storage that cannot be opened, a corrupt registry, or an address that cannot be bound.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let mut logs_config = LogManagerConfig::new(config.data_dir.clone());
        logs_config.max_open_files = config.max_open_files;
        logs_config.producer_id_expiration_ms = config.producer_id_expiration_ms;
        logs_config.cleaner = config.cleaner.clone();
        logs_config.sync_workers = config.sync_workers;
        let group_config = config.groups.clone();
        let txn_config = config.transactions.clone();
        let share_config = config.shares.clone();
        let io = config.file_io.clone();
        let (logs, topics, groups, txn_runtime, producer_ids, lock, dynamic, clients) =
            tokio::task::spawn_blocking(move || {
                open_storage(logs_config, group_config, share_config, txn_config, io)
            })
            .await
            .map_err(|source| BrokerError::Join {
                op: "opening storage",
                source,
            })??;
        topics.set_max_partitions(config.max_partitions_per_topic);
        let shares = {
            let (logs, topics, c) = (
                Arc::clone(&logs),
                Arc::clone(&topics),
                config.shares.clone(),
            );
            tokio::task::spawn_blocking(move || open_shares(&logs, &topics, c))
                .await
                .map_err(|source| BrokerError::Join {
                    op: "loading share groups",
                    source,
                })??
        };
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| BrokerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let advertised = advertised_endpoint(config.advertised_listeners.as_deref(), local_addr)?;
        tracing::info!(
            addr = %local_addr,
            advertised = %format!("{}:{}", advertised.host, advertised.port),
            data_dir = %config.data_dir.display(),
            cluster_id = topics.cluster_id(),
            topics = topics.all().len(),
            "broker ready"
        );
        let metrics = Arc::new(Metrics::default());
        let producer_ids = Arc::new(producer_ids);
        let markers = Arc::new(PartitionMarkers::new(
            Arc::clone(&logs),
            Arc::clone(&groups),
        ));
        let txns = Arc::new(TxnCoordinator::new(
            txn_runtime,
            config.transactions.clone(),
            Arc::clone(&producer_ids),
            markers,
            Arc::clone(&metrics),
        ));
        let mut state = BrokerState::new(
            config,
            logs,
            topics,
            Coordinators { groups, txns },
            advertised,
            producer_ids,
            metrics,
        )?;
        if let Some(max_connections) = dynamic.snapshot().max_connections() {
            state.connection_limit.set(max_connections);
        }
        state.dynamic = Arc::new(dynamic);
        state.client_quotas = Arc::new(clients.quotas);
        state.scram = Arc::new(clients.scram);
        state.shares = Arc::new(shares);
        state.cold_reads = Some(Arc::new(
            crate::cold_read::ColdReads::start(
                state.config.cold_reads,
                Some(state.logs.sync_activity()),
            )
            .map_err(BrokerError::ColdReadPool)?,
        ));
        Ok(Broker {
            listener,
            local_addr,
            state: Arc::new(state),
            _lock: lock,
        })
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker's counters, live; keep the `Arc` to read them after `run` returns.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// The shared state, for what runs beside the broker: the `/metrics` endpoint
    /// ([`crate::metrics::encode_prometheus`]) and the startup banner.
    pub fn state(&self) -> Arc<BrokerState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets connections finish the
    /// request they are handling (up to `shutdown_grace_ms`), and closes storage.
    ///
    /// # Errors
    /// Storage failing to close cleanly (the next start recovers).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let ticker = tokio::spawn(tick_loop(Arc::clone(&self.state), stop_rx.clone()));
        let group_ticker = tokio::spawn(group_tick_loop(Arc::clone(&self.state), stop_rx.clone()));
        let group_timer = tokio::spawn(group_timer_loop(Arc::clone(&self.state), stop_rx.clone()));
        let txn_ticker = tokio::spawn(txn_tick_loop(Arc::clone(&self.state), stop_rx.clone()));
        let share_ticker = tokio::spawn(share_tick_loop(Arc::clone(&self.state), stop_rx.clone()));
        let view_maintainer = tokio::spawn(view_loop(Arc::clone(&self.state), stop_rx));
        // The cleaner's own threads; `LogManager::close` below stops them.
        self.state.logs.start_cleaner();
        crate::delayed::DelayStores::open_existing(&self.state).await;
        listener::run(self.listener, Arc::clone(&self.state), shutdown).await;
        // The ticker may be between ticks or inside one; either way it stops at its next
        // await, and we wait for it so tick and close never overlap.
        let _ = stop_tx.send(true);
        if let Err(e) = ticker.await {
            self.state.metrics.task_failed("storage ticker", &e);
        }
        if let Err(e) = group_ticker.await {
            self.state.metrics.task_failed("group ticker", &e);
        }
        if let Err(e) = group_timer.await {
            self.state.metrics.task_failed("group timer", &e);
        }
        if let Err(e) = txn_ticker.await {
            self.state.metrics.task_failed("transaction ticker", &e);
        }
        if let Err(e) = share_ticker.await {
            self.state.metrics.task_failed("share group ticker", &e);
        }
        if let Err(e) = view_maintainer.await {
            self.state.metrics.task_failed("view maintainer", &e);
        }
        self.state.delayed.close(&self.state).await;
        let logs = Arc::clone(&self.state.logs);
        let io_pool = Arc::clone(&self.state.io_pool);
        let closed = tokio::task::spawn_blocking(move || {
            io_pool.stop();
            logs.close()
        })
        .await
        .map_err(|source| BrokerError::Join {
            op: "closing storage",
            source,
        })?;
        let metrics = self.state.metrics.snapshot();
        tracing::info!(
            rill_sendfile_bytes_total = metrics.sendfile_bytes_total,
            rill_copied_bytes_total = metrics.copied_bytes_total,
            rill_requests_total = metrics.requests_total,
            rill_connections_accepted_total = metrics.connections_accepted_total,
            rill_produced_bytes_total = metrics.produced_bytes_total,
            "broker stopped"
        );
        closed.map_err(|source| BrokerError::Storage {
            op: "closing",
            source,
        })
    }
}

/// Name of the lock file in the data directory root.
pub const LOCK_FILE_NAME: &str = ".lock";

/// Takes an exclusive `flock` on `<data_dir>/.lock` (Kafka does the same), so a second broker
/// pointed at the same directory fails at startup instead of corrupting the first one's logs.
/// The lock lives as long as the returned file.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, BrokerError> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let lock_error = |source| BrokerError::DataDirLock {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_error)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(BrokerError::DataDirLocked { path }),
        Err(e) => Err(lock_error(e.into())),
    }
}

type Opened = (
    Arc<LogManager>,
    Arc<TopicRegistry>,
    Arc<GroupCoordinator>,
    CoordinatorRuntime<TxnShard>,
    ProducerIdManager,
    std::fs::File,
    DynamicConfigs,
    ClientSettings,
);

/// What the data directory holds about clients: their quotas and SCRAM credentials.
struct ClientSettings {
    quotas: crate::client_quotas::ClientQuotas,
    scram: crate::scram::ScramCredentials,
}

fn open_storage(
    mut config: LogManagerConfig,
    group_config: GroupConfig,
    share_config: crate::coordinator::share::ShareConfig,
    txn_config: TxnConfig,
    io: Option<Arc<dyn rill_storage::file_io::FileIo>>,
) -> Result<Opened, BrokerError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| BrokerError::Storage {
        op: "creating the data directory",
        source: rill_storage::StorageError::Io {
            op: "create_dir_all",
            path: data_dir.clone(),
            source,
        },
    })?;
    let lock = lock_data_dir(&data_dir)?;
    let dynamic = DynamicConfigs::load(&data_dir).map_err(BrokerError::BrokerConfigs)?;
    let clients = ClientSettings {
        quotas: crate::client_quotas::ClientQuotas::load(&data_dir)
            .map_err(BrokerError::ClientQuotas)?,
        scram: crate::scram::ScramCredentials::load(&data_dir).map_err(BrokerError::Scram)?,
    };
    // The cleaner starts on its dynamic settings (the command line's under them).
    config.cleaner = dynamic.snapshot().cleaner(&config.cleaner);
    let io = io.unwrap_or_else(|| Arc::new(rill_storage::file_io::OsIo));
    let logs = LogManager::open_with_io(config, io).map_err(|source| BrokerError::Storage {
        op: "opening the log manager",
        source,
    })?;
    let topics = TopicRegistry::load(&logs).map_err(|source| BrokerError::Registry {
        path: data_dir.join(crate::topics::REGISTRY_FILE_NAME),
        source,
    })?;
    topics
        .set_defaults(&logs, dynamic.snapshot().topic_defaults(), false)
        .map_err(|e| {
            BrokerError::BrokerConfigs(BrokerConfigError::Invalid {
                name: "topic defaults".into(),
                value: String::new(),
                reason: e.message(),
            })
        })?;
    let groups = open_groups(&logs, &topics, group_config, &share_config)?;
    let txns = open_transactions(&logs, &topics, &txn_config)?;
    let producer_ids = ProducerIdManager::open(&data_dir, now_ms())?;
    Ok((
        Arc::new(logs),
        Arc::new(topics),
        Arc::new(groups),
        txns,
        producer_ids,
        lock,
        dynamic,
        clients,
    ))
}

/// The partition logs of an internal topic, creating it on first start with `configs`.
fn internal_topic_logs(
    logs: &LogManager,
    topics: &TopicRegistry,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<Vec<Arc<rill_storage::Log>>, String> {
    let meta = match topics.get(name) {
        Some(meta) => meta,
        None => {
            let configs = configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            topics
                .create(logs, name, partitions, configs, false)
                .map_err(|e| e.to_string())?
        }
    };
    (0..meta.partitions)
        .map(|partition| {
            let tp = rill_storage::TopicPartition::new(name, partition);
            logs.get_log(&tp)
                .map_err(|e| format!("cannot open {tp}: {e}"))?
                .ok_or_else(|| format!("{tp} is missing"))
        })
        .collect()
}

/// Creates `__consumer_offsets` on first start (kept forever: retention would drop committed
/// offsets) and replays it into the group coordinator.
fn open_groups(
    logs: &LogManager,
    topics: &TopicRegistry,
    config: GroupConfig,
    shares: &crate::coordinator::share::ShareConfig,
) -> Result<GroupCoordinator, BrokerError> {
    // An ordinary compacted topic, cleaned by the log cleaner; segments of
    // offsets.topic.segment.bytes (only sealed segments are cleaned); a large batch limit for
    // groups with many members.
    let segment_bytes = config.offsets_segment_bytes.to_string();
    let partition_logs = internal_topic_logs(
        logs,
        topics,
        groups::TOPIC,
        config.offsets_partitions,
        &[
            ("cleanup.policy", "compact"),
            ("retention.ms", "-1"),
            ("segment.bytes", segment_bytes.as_str()),
            ("max.message.bytes", "16777216"),
        ],
    )
    .map_err(|reason| BrokerError::Groups { reason })?;
    // The share group settings of the broker are the share.* group config defaults.
    let defaults = crate::group_configs::GroupDefaults::new(
        config.consumer_session_timeout_ms,
        config.consumer_heartbeat_interval_ms,
    )
    .with_broker_value(
        "share.record.lock.duration.ms",
        shares.record_lock_duration_ms,
    )
    .with_broker_value(
        "share.delivery.count.limit",
        i64::from(shares.delivery_count_limit),
    )
    .with_broker_value(
        "share.partition.max.record.locks",
        shares.partition_max_record_locks,
    )
    .with_broker_value("share.session.timeout.ms", shares.session_timeout_ms)
    .with_broker_value(
        "share.heartbeat.interval.ms",
        i64::from(shares.heartbeat_interval_ms),
    );
    let group_configs = crate::group_configs::GroupConfigs::load(logs.data_dir(), defaults)
        .map_err(BrokerError::GroupConfigs)?;
    let coordinator =
        GroupCoordinator::load(config, partition_logs).map_err(|e| BrokerError::Groups {
            reason: e.to_string(),
        })?;
    Ok(coordinator.with_group_configs(Arc::new(group_configs)))
}

/// Creates `__transaction_state` on first start (compacted, kept forever, as Kafka's) and
/// replays it into the transaction coordinator's shards.
fn open_transactions(
    logs: &LogManager,
    topics: &TopicRegistry,
    config: &TxnConfig,
) -> Result<CoordinatorRuntime<TxnShard>, BrokerError> {
    let segment_bytes = config.segment_bytes.to_string();
    let partition_logs = internal_topic_logs(
        logs,
        topics,
        txn_records::TOPIC,
        config.partitions,
        &[
            ("cleanup.policy", "compact"),
            ("retention.ms", "-1"),
            ("segment.bytes", segment_bytes.as_str()),
        ],
    )
    .map_err(|reason| BrokerError::Transactions { reason })?;
    let runtime =
        CoordinatorRuntime::load(partition_logs, |_| TxnShard::default()).map_err(|e| {
            BrokerError::Transactions {
                reason: e.to_string(),
            }
        })?;
    Ok(runtime)
}

/// Creates `__share_group_state` on first start (compacted: every record is a snapshot of
/// one share-partition) and replays it into the share coordinator.
fn open_shares(
    logs: &LogManager,
    topics: &TopicRegistry,
    config: crate::coordinator::share::ShareConfig,
) -> Result<crate::coordinator::share::ShareCoordinator, BrokerError> {
    let segment_bytes = config.state_segment_bytes.to_string();
    let partition_logs = internal_topic_logs(
        logs,
        topics,
        crate::coordinator::share::TOPIC,
        config.state_partitions,
        &[
            ("cleanup.policy", "compact"),
            ("retention.ms", "-1"),
            ("segment.bytes", segment_bytes.as_str()),
            ("max.message.bytes", "16777216"),
        ],
    )
    .map_err(|reason| BrokerError::Groups { reason })?;
    crate::coordinator::share::ShareCoordinator::load(config, partition_logs).map_err(|e| {
        BrokerError::Groups {
            reason: format!("share groups: {e}"),
        }
    })
}

/// Expires share groups' acquisition locks and members every 100 ms.
async fn share_tick_loop(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        crate::share_fetch::tick(&state).await;
    }
}

/// Aborts timed-out transactions, expires idle transactional ids and resumes prepared
/// transactions: once at start (a restart finishes what it finds prepared), then every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
async fn txn_tick_loop(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(state.txns.config().abort_check_interval_ms.max(10));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        state.txns.tick().await;
    }
}

/// Keeps filtered views up to date (see `view`): a pass whenever records become visible
/// anywhere (`BrokerState::any_appended`; a view's source is read up to its high watermark and
/// last stable offset, and both only move with such a signal), back to back while passes find
/// records to copy. Without views the loop only looks for new ones, a few times a second: a
/// view created meanwhile copies what its source already holds on its first pass.
async fn view_loop(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    /// How often the loop looks for views while there are none.
    const NO_VIEWS: Duration = Duration::from_millis(250);
    /// A pass at least this often while views exist, as a bound should a visibility change
    /// ever come without its signal.
    const FALLBACK: Duration = Duration::from_secs(1);
    let maintainer = Arc::clone(&state.views);
    loop {
        let any_view = state
            .topics
            .all()
            .iter()
            .any(|t| t.configs.contains_key(crate::view::SOURCE_KEY));
        let advanced = if any_view {
            let (s, m) = (Arc::clone(&state), Arc::clone(&maintainer));
            match tokio::task::spawn_blocking(move || m.pass(&s)).await {
                Ok(stats) => stats.advanced,
                Err(e) => {
                    state.metrics.task_failed("view pass", &e);
                    0
                }
            }
        } else {
            0
        };
        if advanced > 0 && !*stop.borrow() {
            tokio::task::yield_now().await;
            continue;
        }
        let wait = if any_view { FALLBACK } else { NO_VIEWS };
        tokio::select! {
            _ = state.any_appended.notified(), if any_view => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Fires group timers at their deadlines (sessions, join and sync deadlines): sleeps until the
/// earliest one, or until an operation schedules an earlier one.
async fn group_timer_loop(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    loop {
        let next = state.groups.timers().next_deadline();
        // Nothing scheduled: sleep until woken (an hour is only a bound on the sleep).
        let until = next.unwrap_or_else(|| {
            crate::coordinator::group::timers::now() + Duration::from_secs(3600)
        });
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = state.groups.timers().woken() => continue,
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        // On the I/O pool, like the group requests themselves: in-memory work plus, for a
        // group that empties, one append to `__consumer_offsets` (no sync is awaited).
        let fired = state
            .coordinate("group timers", |state| {
                state
                    .groups
                    .fire_due(crate::coordinator::group::timers::now());
            })
            .await;
        if fired.is_err() {
            // Counted by `coordinate`; the timers fire again at their next deadline.
            continue;
        }
    }
}

async fn group_tick_loop(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        // On the I/O pool: expiring offsets appends tombstones, and compaction may fsync.
        // A failure is counted by `coordinate`; the next tick tries again.
        let _ = state
            .coordinate("group tick", |state| {
                state
                    .groups
                    .tick(&crate::consumer_group_api::RegistryTopics(&state.topics))
            })
            .await;
    }
}

/// Where clients are told to connect: `advertised.listeners` when set, else the bound
/// address. A wildcard bind (0.0.0.0, ::) cannot be connected to, and advertising loopback
/// would send remote clients to themselves, so it advertises this machine's host name (Kafka
/// does the same for a listener with no host, and refuses 0.0.0.0 as an advertised address).
fn advertised_endpoint(
    advertised_listeners: Option<&str>,
    local_addr: SocketAddr,
) -> Result<Endpoint, BrokerError> {
    let invalid = |reason: String| BrokerError::Config {
        key: "advertised.listeners",
        reason,
    };
    let Some(listeners) = advertised_listeners else {
        let ip = local_addr.ip();
        let host = if ip.is_unspecified() {
            host_name().ok_or_else(|| {
                invalid(format!(
                    "bound to {ip}, and this machine's host name is unknown: set it"
                ))
            })?
        } else {
            ip.to_string()
        };
        return Ok(Endpoint {
            host,
            port: i32::from(local_addr.port()),
        });
    };
    let listeners = listeners.trim();
    if listeners.contains(',') {
        return Err(invalid(format!(
            "{listeners:?}: rill serves one PLAINTEXT listener"
        )));
    }
    let address = match listeners.split_once("://") {
        Some((protocol, address)) if protocol.eq_ignore_ascii_case("PLAINTEXT") => address,
        Some((protocol, _)) => {
            return Err(invalid(format!(
                "{protocol}: only PLAINTEXT listeners are served"
            )))
        }
        None => listeners,
    };
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid(format!("{address:?} is not host:port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(format!("{port:?} is not a port")))?;
    if host.is_empty() {
        return Err(invalid(format!("{address:?} has no host")));
    }
    if host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err(invalid(format!(
            "{host} is a wildcard, not an address clients can connect to"
        )));
    }
    Ok(Endpoint {
        host: host.to_string(),
        port: i32::from(if port == 0 { local_addr.port() } else { port }),
    })
}

/// This machine's host name (Linux: the kernel's nodename).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Calls `LogManager::tick` every `tick_interval_ms` on the blocking pool until stopped.
async fn tick_loop(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(state.config.tick_interval_ms.max(10));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let logs = Arc::clone(&state.logs);
        let now = now_ms();
        match tokio::task::spawn_blocking(move || logs.tick(now)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "storage tick failed"),
            Err(e) => state.metrics.task_failed("storage tick", &e),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(addr: &str) -> SocketAddr {
        addr.parse().expect("socket address")
    }

    fn endpoint(setting: Option<&str>, addr: &str) -> Result<(String, i32), BrokerError> {
        advertised_endpoint(setting, bound(addr)).map(|e| (e.host, e.port))
    }

    #[test]
    fn a_wildcard_bind_advertises_the_host_name_not_loopback() {
        let host = host_name().expect("this machine has a host name");
        for wildcard in ["0.0.0.0:9092", "[::]:9092"] {
            let (advertised, port) = endpoint(None, wildcard).unwrap();
            assert_eq!((advertised.as_str(), port), (host.as_str(), 9092));
            assert_ne!(advertised, "127.0.0.1");
        }
        assert_eq!(
            endpoint(None, "127.0.0.1:9092").unwrap(),
            ("127.0.0.1".into(), 9092)
        );
    }

    #[test]
    fn advertised_listeners_is_parsed_as_kafka_writes_it() {
        let cases = [
            ("PLAINTEXT://kafka.example:9093", ("kafka.example", 9093)),
            ("plaintext://10.1.2.3:9093", ("10.1.2.3", 9093)),
            ("kafka.example:9093", ("kafka.example", 9093)),
            ("PLAINTEXT://[2001:db8::1]:9093", ("2001:db8::1", 9093)),
            // Port 0: the bound port (handy with `--listen host:0`).
            ("localhost:0", ("localhost", 7000)),
        ];
        for (setting, (host, port)) in cases {
            assert_eq!(
                endpoint(Some(setting), "0.0.0.0:7000").unwrap(),
                (host.to_string(), port),
                "{setting}"
            );
        }
        for bad in [
            "0.0.0.0:9092",
            "PLAINTEXT://[::]:9092",
            "SSL://kafka.example:9093",
            "PLAINTEXT://a:1,PLAINTEXT://b:2",
            "kafka.example",
            ":9092",
            "kafka.example:http",
        ] {
            assert!(
                matches!(
                    endpoint(Some(bad), "127.0.0.1:7000"),
                    Err(BrokerError::Config {
                        key: "advertised.listeners",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
