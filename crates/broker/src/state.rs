//! What every request handler shares.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use rill_storage::{Log, LogManager, TopicPartition};
use tokio::sync::Notify;

use crate::authorizer::{AllowAll, Authorizer};
use crate::broker::BrokerConfig;
use crate::coordinator::group::GroupCoordinator;
use crate::coordinator::txn::coordinator::TxnCoordinator;
use crate::fetch_session::FetchSessionCache;
use crate::metrics::Metrics;
use crate::producer_id::ProducerIdManager;
use crate::response_writer::WriteMode;
use crate::topics::{TopicError, TopicMeta, TopicRegistry};

/// The host and port clients are told to connect to (Metadata, DescribeCluster).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
}

/// Shared broker state, one per broker, behind an `Arc`.
pub struct BrokerState {
    pub config: BrokerConfig,
    pub logs: Arc<LogManager>,
    pub topics: Arc<TopicRegistry>,
    /// Consumer groups and committed offsets.
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Arc<Metrics>,
    pub advertised: Endpoint,
    /// How fetch responses send file ranges.
    pub write_mode: WriteMode,
    /// The cold-read pool (`cold_read.rs`), started by `Broker::start`; `None` sends every
    /// fetch range from the page cache without checking.
    pub cold_reads: Option<Arc<crate::cold_read::ColdReads>>,
    /// Answers "authorized operations"; [`AllowAll`] until security exists.
    pub authorizer: Arc<dyn Authorizer>,
    /// One `Notify` per partition, signalled when new records become visible (after the
    /// append, or after the flush that makes it durable under durable visibility) so
    /// long-polling fetches wake without polling. Entries are created on first use; a topic's
    /// entries are dropped when it is deleted. Shared with storage's flush listener.
    appended: Arc<Mutex<HashMap<TopicPartition, Arc<Notify>>>>,
    /// Signalled with every partition notifier above (one stored permit, so a signal sent
    /// while the view loop is busy is not lost): the view loop waits on it instead of polling.
    pub any_appended: Arc<Notify>,
    /// Producer ids for InitProducerId, unique across restarts.
    pub producer_ids: Arc<ProducerIdManager>,
    /// Transactional ids and their transactions (`__transaction_state`).
    pub txns: Arc<TxnCoordinator>,
    /// The write side's disk pool: produce validation and appends, ListOffsets
    /// (`io_pool.rs`), off the runtime's workers and its general blocking pool.
    pub io_pool: Arc<crate::io_pool::IoPool>,
    /// Filtered views: the maintainer the broker's view loop runs, and /metrics reads.
    pub views: Arc<crate::view::ViewMaintainer>,
    /// Delay stores of delay-enabled partitions (`delayed`).
    pub delayed: crate::delayed::DelayStores,
    /// Dynamic broker configs (AlterConfigs on BROKER), persisted in the data directory.
    pub dynamic: Arc<crate::broker_configs::DynamicConfigs>,
    /// The listener's connection limit, which `max.connections` changes at runtime.
    pub connection_limit: Arc<crate::listener::ConnectionLimit>,
    /// Incremental fetch sessions (KIP-227), bounded by `config.fetch_sessions`.
    pub fetch_sessions: FetchSessionCache,
    /// KIP-932 share groups (`__share_group_state`); `Broker::start` puts the loaded one here.
    pub shares: Arc<crate::coordinator::share::ShareCoordinator>,
    /// Client quotas (AlterClientQuotas), persisted in the data directory; `Broker::start`
    /// puts the loaded ones here.
    pub client_quotas: Arc<crate::client_quotas::ClientQuotas>,
    /// The byte rates the quotas are enforced on (produce and fetch).
    pub quota_sensors: crate::quota_sensors::QuotaSensors,
    /// SCRAM credentials (AlterUserScramCredentials), persisted in the data directory;
    /// `Broker::start` puts the loaded ones here.
    pub scram: Arc<crate::scram::ScramCredentials>,
}

/// The coordinators, loaded from their internal topics.
pub struct Coordinators {
    pub groups: Arc<GroupCoordinator>,
    pub txns: Arc<TxnCoordinator>,
}

impl BrokerState {
    /// Shared state over opened storage, registry, coordinators and producer id allocator;
    /// starts the I/O pool.
    ///
    /// # Errors
    /// [`crate::BrokerError::IoPool`] when no I/O pool thread can be started.
    pub fn new(
        config: BrokerConfig,
        logs: Arc<LogManager>,
        topics: Arc<TopicRegistry>,
        coordinators: Coordinators,
        advertised: Endpoint,
        producer_ids: Arc<ProducerIdManager>,
        metrics: Arc<Metrics>,
    ) -> Result<BrokerState, crate::BrokerError> {
        let Coordinators { groups, txns } = coordinators;
        let write_mode = config.write_mode;
        let config_fetch_sessions = config.fetch_sessions;
        let appended: Arc<Mutex<HashMap<TopicPartition, Arc<Notify>>>> = Arc::default();
        let notifiers = Arc::clone(&appended);
        let any_appended = Arc::new(Notify::new());
        let any = Arc::clone(&any_appended);
        logs.set_flush_listener(Arc::new(move |tp: &TopicPartition| {
            let notify = notifiers.lock().get(tp).cloned();
            if let Some(notify) = notify {
                notify.notify_waiters();
            }
            any.notify_one();
        }));
        let dynamic = Arc::new(crate::broker_configs::DynamicConfigs::empty(
            &config.data_dir,
        ));
        let data_dir = config.data_dir.clone();
        let connection_limit = Arc::new(crate::listener::ConnectionLimit::new(
            config.max_connections,
        ));
        let io_pool = crate::io_pool::IoPool::start("rill-io", config.io_threads, config.io_queue)
            .map_err(|source| crate::BrokerError::IoPool { source })?;
        let io_pool = Arc::new(io_pool);
        txns.use_io_pool(Arc::clone(&io_pool));
        Ok(BrokerState {
            config,
            logs,
            topics,
            groups,
            metrics,
            advertised,
            write_mode,
            cold_reads: None,
            authorizer: Arc::new(AllowAll),
            appended,
            any_appended,
            producer_ids,
            txns,
            io_pool,
            views: Arc::default(),
            delayed: crate::delayed::DelayStores::default(),
            dynamic,
            connection_limit,
            fetch_sessions: FetchSessionCache::new(config_fetch_sessions),
            shares: Arc::new(crate::coordinator::share::ShareCoordinator::empty(
                crate::coordinator::share::ShareConfig::default(),
            )),
            client_quotas: Arc::new(crate::client_quotas::ClientQuotas::empty(&data_dir)),
            quota_sensors: crate::quota_sensors::QuotaSensors::default(),
            scram: Arc::new(crate::scram::ScramCredentials::empty(&data_dir)),
        })
    }

    /// The authorized-operations field for a resource, as the authorizer answers it for the
    /// connection's principal (every connection is `ANONYMOUS` until authentication exists).
    pub fn authorized_operations(
        &self,
        resource_type: crate::authorizer::ResourceType,
        name: &str,
    ) -> i32 {
        self.authorizer.authorized_operations_bits(
            crate::authorizer::ANONYMOUS,
            resource_type,
            name,
        )
    }

    /// A partition's log, or the Kafka error code to answer with: UNKNOWN_TOPIC_OR_PARTITION
    /// when it does not exist, a storage code when it cannot be opened.
    pub fn log(&self, tp: &TopicPartition) -> Result<Arc<Log>, i16> {
        match self.logs.get_log(tp) {
            Ok(Some(log)) => Ok(log),
            Ok(None) => Err(ResponseError::UnknownTopicOrPartition.code()),
            Err(e) => {
                tracing::error!(%tp, error = %e, "cannot open partition log");
                Err(crate::error::storage_error_code(&e))
            }
        }
    }

    /// Runs `call`, a call into a log-backed coordinator, on the I/O pool: its operation, the
    /// append of its batch (encode, pwritev, perhaps a roll) and the replay happen there under
    /// the shard's lock, so a write's result is still in place before the next operation of
    /// the same shard runs, and no runtime worker waits for a disk. The caller awaits the
    /// returned reply (and durability) on the runtime.
    ///
    /// # Errors
    /// COORDINATOR_NOT_AVAILABLE (retriable) when the pool is stopped or the call panicked
    /// (counted in `rill_task_panics_total`).
    pub async fn coordinate<T, F>(self: &Arc<Self>, what: &'static str, call: F) -> Result<T, i16>
    where
        F: FnOnce(&BrokerState) -> T + Send + 'static,
        T: Send + 'static,
    {
        let state = Arc::clone(self);
        self.io_pool.run(move || call(&state)).await.map_err(|e| {
            self.metrics.io_job_failed(what, &e);
            ResponseError::CoordinatorNotAvailable.code()
        })
    }

    /// Opens, on the I/O pool, those of `tps` whose logs are still on disk, so a handler that
    /// reads them inline (fetch) finds them open. Unknown partitions are left to the handler.
    pub async fn open_logs_off_runtime<'a>(
        self: &Arc<Self>,
        tps: impl IntoIterator<Item = &'a TopicPartition>,
    ) {
        // Every produce and fetch passes here: one lock, and a key cloned only for a log
        // that is still on disk.
        let closed = self.logs.on_disk(tps);
        if closed.is_empty() {
            return;
        }
        let state = Arc::clone(self);
        let opened = self
            .io_pool
            .run(move || {
                for tp in &closed {
                    // An error is the handler's to report when it looks the log up again.
                    let _ = state.log(tp);
                }
            })
            .await;
        if let Err(e) = opened {
            self.metrics.io_job_failed("open log", &e);
        }
    }

    /// Whether `partition` of `topic` exists (the registry's view; no log is opened).
    pub fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|meta| (0..meta.partitions).contains(&partition))
    }

    /// The notifier for a partition's appends.
    pub fn append_notify(&self, tp: &TopicPartition) -> Arc<Notify> {
        let mut appended = self.appended.lock();
        if let Some(notify) = appended.get(tp) {
            return Arc::clone(notify);
        }
        let notify = Arc::new(Notify::new());
        appended.insert(tp.clone(), Arc::clone(&notify));
        notify
    }

    /// Wakes every fetch parked on `tp`. Called by produce after an append that is visible at
    /// once; storage's flush listener does the same when a flush makes records visible.
    pub fn notify_appended(&self, tp: &TopicPartition) {
        let notify = self.appended.lock().get(tp).cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
        self.any_appended.notify_one();
    }

    /// Forgets a deleted topic's notifiers, waking anyone parked on them.
    pub fn forget_topic(&self, topic: &str) {
        self.delayed.forget_topic(topic);
        let mut appended = self.appended.lock();
        appended.retain(|tp, notify| {
            let keep = tp.topic != topic;
            if !keep {
                notify.notify_waiters();
            }
            keep
        });
    }

    /// Looks a topic up, creating it when auto creation is enabled and `allow_create` (the
    /// request's own flag) agrees.
    ///
    /// # Errors
    /// [`TopicError::Unknown`] when it does not exist and may not be created; creation errors.
    pub async fn resolve_topic(
        self: &Arc<Self>,
        name: &str,
        allow_create: bool,
    ) -> Result<Arc<TopicMeta>, TopicError> {
        if let Some(meta) = self.topics.get(name) {
            return Ok(meta);
        }
        if !(allow_create && self.config.auto_create_topics) {
            crate::topics::validate_name(name)?;
            return Err(TopicError::Unknown {
                name: name.to_string(),
            });
        }
        let name = name.to_string();
        let partitions = self.config.num_partitions;
        self.blocking(move |state| state.topics.get_or_create(&state.logs, &name, partitions))
            .await
    }

    /// Runs a blocking closure on the blocking pool. A panic there is a bug; it is turned into
    /// a storage error for the one request rather than taking the connection down.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, TopicError>
    where
        F: FnOnce(&BrokerState) -> Result<T, TopicError> + Send + 'static,
        T: Send + 'static,
    {
        let state = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&state)).await {
            Ok(result) => result,
            Err(join_error) => {
                self.metrics.task_failed("blocking", &join_error);
                Err(TopicError::Internal {
                    reason: format!("blocking task failed: {join_error}"),
                })
            }
        }
    }
}
