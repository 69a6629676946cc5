//! The transaction coordinator's operations, on the coordinator runtime: each request runs
//! as an operation on the shard of its transactional id's `__transaction_state` partition,
//! which returns the record to write; the runtime appends it and replays it into the shard,
//! and the answer goes out once the record is durable.
//!
//! The end of a transaction has two phases, as in Kafka: EndTxn writes PrepareCommit or
//! PrepareAbort and is answered once that is durable; a task then writes a marker to every
//! partition of the transaction, waits until all of them are durable, and writes
//! CompleteCommit or CompleteAbort. A broker that stops between the phases finds the prepared
//! transaction when it loads and finishes it ([`TxnCoordinator::tick`] resumes every prepared
//! transaction that no task is completing), so a prepared transaction always ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use rill_storage::{TopicPartition, TxnMarker};

use super::records::{TxnRecord, TRANSACTIONAL_ID_BYTES_MAX};
use super::shard::TxnShard;
use super::state::{self, EndOutcome, InitOutcome, TxnMetadata, TxnState};
use crate::coordinator::runtime::{CoordinatorRuntime, Outcome, RuntimeError, Written};
use crate::io_pool::IoPool;
use crate::metrics::Metrics;
use crate::producer_id::ProducerIdManager;

/// The coordinator epoch written in markers. Rill is one node whose coordinator never moves,
/// so it never changes; with replication it will be the `__transaction_state` partition's
/// leader epoch, as in Kafka.
pub const COORDINATOR_EPOCH: i32 = 0;
/// Delay between attempts to write a marker to a partition that refused it (offline log).
const MARKER_RETRY: Duration = Duration::from_millis(500);

/// The transaction coordinator's settings (Kafka's names).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`, used when the topic is created.
    pub partitions: i32,
    /// `transaction.state.log.segment.bytes`.
    pub segment_bytes: u64,
    /// `transaction.max.timeout.ms`: longer timeouts are refused.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: idle ids are forgotten after this.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often timeouts and
    /// expiry are checked.
    pub abort_check_interval_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            partitions: 50,
            segment_bytes: 100 << 20,
            max_timeout_ms: state::DEFAULT_MAX_TIMEOUT_MS,
            id_expiration_ms: rill_storage::producer_state::DEFAULT_TRANSACTIONAL_ID_EXPIRATION_MS,
            abort_check_interval_ms: 10_000,
        }
    }
}

/// Why a marker could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// The partition no longer exists (its topic was deleted): it needs no marker.
    #[error("partition is gone")]
    PartitionGone,
    #[error("{0}")]
    Failed(String),
}

/// Durability of one written marker.
pub type MarkerDurable =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), MarkerError>> + Send>>;

/// Writes transaction markers into partitions: data partitions through storage, the offsets
/// topic through the group coordinator (which must see them to apply transactional offsets).
pub trait MarkerWriter: Send + Sync + 'static {
    /// Appends `marker` to `tp` (a blocking page-cache write) and returns its durability.
    fn write(&self, tp: &TopicPartition, marker: &TxnMarker) -> Result<MarkerDurable, MarkerError>;
}

/// An error of a coordinator operation: a Kafka error for the client, or the runtime's.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("{0:?}")]
    Kafka(ResponseError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<ResponseError> for TxnError {
    fn from(e: ResponseError) -> Self {
        TxnError::Kafka(e)
    }
}

impl TxnError {
    /// The error code to answer with.
    pub fn code(&self) -> i16 {
        match self {
            TxnError::Kafka(e) => e.code(),
            TxnError::Runtime(e) => {
                tracing::error!(error = %e, "transaction coordinator write failed");
                ResponseError::KafkaStorageError.code()
            }
        }
    }
}

/// One transaction as DescribeTransactions and ListTransactions show it.
pub type TxnView = TxnMetadata;

/// The transaction coordinator.
pub struct TxnCoordinator {
    runtime: CoordinatorRuntime<TxnShard>,
    config: TxnConfig,
    producer_ids: Arc<ProducerIdManager>,
    markers: Arc<dyn MarkerWriter>,
    metrics: Arc<Metrics>,
    /// Ids whose markers a task is writing, so no second task starts for them.
    completing: Mutex<HashSet<String>>,
    /// The broker's I/O pool, where operations and their appends to `__transaction_state`
    /// (and the markers) run; set once the broker has started it. Unset (tests of the
    /// coordinator alone) they run inline.
    io_pool: std::sync::OnceLock<Arc<IoPool>>,
}

enum InitReply {
    Ready(i64, i16),
    Fenced(TxnMetadata),
}

fn now_ms() -> i64 {
    crate::coordinator::group::now_ms()
}

fn record(m: &TxnMetadata) -> TxnRecord {
    TxnRecord {
        transactional_id: m.transactional_id.clone(),
        value: Some(m.clone()),
    }
}

impl TxnCoordinator {
    pub fn new(
        runtime: CoordinatorRuntime<TxnShard>,
        config: TxnConfig,
        producer_ids: Arc<ProducerIdManager>,
        markers: Arc<dyn MarkerWriter>,
        metrics: Arc<Metrics>,
    ) -> TxnCoordinator {
        TxnCoordinator {
            runtime,
            config,
            producer_ids,
            markers,
            metrics,
            completing: Mutex::new(HashSet::new()),
            io_pool: std::sync::OnceLock::new(),
        }
    }

    /// Runs operations, their appends and the markers on `pool` from now on (once; later
    /// calls are ignored).
    pub fn use_io_pool(&self, pool: Arc<IoPool>) {
        let _ = self.io_pool.set(pool);
    }

    /// The runtime's write of `op` to `partition`, on the I/O pool when there is one: the
    /// operation, the batch's append and its replay run there under the shard's lock (so the
    /// next operation of the shard sees this one's result), and no runtime worker waits for
    /// the disk.
    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        partition: i32,
        op: impl FnOnce(&mut TxnShard) -> Result<Outcome<TxnRecord, T>, TxnError> + Send + 'static,
    ) -> Result<Written<T>, TxnError> {
        let Some(pool) = self.io_pool.get() else {
            return self.runtime.write(partition, op);
        };
        let this = Arc::clone(self);
        match pool.run(move || this.runtime.write(partition, op)).await {
            Ok(written) => written,
            Err(e) => {
                self.metrics
                    .io_job_failed("transaction coordinator write", &e);
                Err(ResponseError::CoordinatorNotAvailable.into())
            }
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Appends a WriteTxnMarkers marker to a `__transaction_state` partition under its
    /// shard's lock, as Kafka appends one there; the shard ignores it at replay.
    ///
    /// # Errors
    /// The runtime's (no such partition, a stale producer or coordinator epoch).
    pub fn write_marker(
        &self,
        partition: i32,
        marker: &rill_storage::TxnMarker,
    ) -> Result<Written<()>, RuntimeError> {
        self.runtime.write_marker(partition, marker)
    }

    /// INVALID_REQUEST for an empty or oversized transactional id.
    pub fn validate_id(transactional_id: &str) -> Result<(), ResponseError> {
        if transactional_id.is_empty() || transactional_id.len() > TRANSACTIONAL_ID_BYTES_MAX {
            return Err(ResponseError::InvalidRequest);
        }
        Ok(())
    }

    fn partition_for(&self, transactional_id: &str) -> i32 {
        self.runtime.partition_for(transactional_id)
    }

    /// InitProducerId with a transactional id: the producer id and the new epoch.
    pub async fn init_producer_id(
        self: &Arc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        Self::validate_id(transactional_id)?;
        state::validate_timeout(timeout_ms, self.config.max_timeout_ms)?;
        let now = now_ms();
        let ids = Arc::clone(&self.producer_ids);
        let id = transactional_id.to_string();
        let written = self
            .write(
                self.partition_for(transactional_id),
                move |shard: &mut TxnShard| {
                    let outcome = state::init_producer_id(
                        shard.get(&id),
                        &id,
                        timeout_ms,
                        expected,
                        now,
                        || {
                            ids.next_id().map_err(|e| {
                                tracing::error!(error = %e, "cannot allocate a producer id");
                                ResponseError::KafkaStorageError
                            })
                        },
                    )?;
                    let (m, reply) = match outcome {
                        InitOutcome::Ready(m) => {
                            let reply = InitReply::Ready(m.producer_id, m.producer_epoch);
                            (m, reply)
                        }
                        InitOutcome::FenceOngoing(m) => (m.clone(), InitReply::Fenced(m)),
                    };
                    Ok::<_, TxnError>(Outcome {
                        records: vec![record(&m)],
                        response: reply,
                    })
                },
            )
            .await?;
        match written.committed().await? {
            InitReply::Ready(producer_id, epoch) => Ok((producer_id, epoch)),
            InitReply::Fenced(m) => {
                tracing::info!(
                    transactional_id,
                    producer_id = m.producer_id,
                    epoch = m.producer_epoch,
                    "fencing the previous producer: aborting its ongoing transaction"
                );
                self.spawn_completion(m);
                Err(ResponseError::ConcurrentTransactions.into())
            }
        }
    }

    /// AddPartitionsToTxn (the partitions exist; the caller checked) and AddOffsetsToTxn.
    pub async fn add_partitions(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        Self::validate_id(transactional_id).map_err(|_| ResponseError::InvalidProducerIdMapping)?;
        let now = now_ms();
        let (id, partitions) = (transactional_id.to_string(), partitions.to_vec());
        let written = self
            .write(
                self.partition_for(transactional_id),
                move |shard: &mut TxnShard| {
                    let next = state::add_partitions(
                        shard.get(&id),
                        producer_id,
                        epoch,
                        &partitions,
                        now,
                    )?;
                    Ok::<_, TxnError>(Outcome {
                        records: next.iter().map(record).collect(),
                        response: (),
                    })
                },
            )
            .await?;
        written.committed().await?;
        Ok(())
    }

    /// EndTxn: answered once the prepare record is durable; the markers follow. `v2`: a
    /// transactions-v2 client (EndTxn v5), whose epoch is bumped at every end. Returns the
    /// producer id and epoch the client continues with.
    pub async fn end_txn(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        v2: bool,
    ) -> Result<(i64, i16), TxnError> {
        Self::validate_id(transactional_id).map_err(|_| ResponseError::InvalidProducerIdMapping)?;
        let now = now_ms();
        let ids = Arc::clone(&self.producer_ids);
        let id = transactional_id.to_string();
        let written = self
            .write(
                self.partition_for(transactional_id),
                move |shard: &mut TxnShard| {
                    let existing = shard.get(&id);
                    let outcome = if v2 {
                        state::end_txn_v2(existing, producer_id, epoch, commit, now, || {
                            ids.next_id().map_err(|e| {
                                tracing::error!(error = %e, "cannot allocate a producer id");
                                ResponseError::KafkaStorageError
                            })
                        })?
                    } else {
                        state::end_txn(existing, producer_id, epoch, commit, now)?
                    };
                    Ok::<_, TxnError>(match outcome {
                        EndOutcome::Prepare(m) => Outcome {
                            records: vec![record(&m)],
                            response: (state::continue_with(&m), Some(m)),
                        },
                        EndOutcome::AlreadyDone => Outcome {
                            records: Vec::new(),
                            response: (
                                existing.map_or((producer_id, epoch), state::continue_with),
                                None,
                            ),
                        },
                    })
                },
            )
            .await?;
        let (next, prepared) = written.committed().await?;
        if let Some(prepared) = prepared {
            self.spawn_completion(prepared);
        }
        Ok(next)
    }

    /// KIP-890 verification of a transactional produce: the partition must be in the
    /// producer's ongoing transaction, with its current epoch.
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        tp: &(String, i32),
    ) -> Result<(), ResponseError> {
        if Self::validate_id(transactional_id).is_err() {
            return Err(ResponseError::InvalidTxnState);
        }
        self.runtime.read(
            self.partition_for(transactional_id),
            |shard: &TxnShard| match shard.get(transactional_id) {
                None => Err(ResponseError::InvalidProducerIdMapping),
                Some(m) => m.verify(producer_id, epoch, tp).map_or(Ok(()), Err),
            },
        )
    }

    /// DescribeTransactions: the id's metadata, or TRANSACTIONAL_ID_NOT_FOUND.
    pub fn describe(&self, transactional_id: &str) -> Result<TxnView, ResponseError> {
        if Self::validate_id(transactional_id).is_err() {
            return Err(ResponseError::TransactionalIdNotFound);
        }
        self.runtime
            .read(self.partition_for(transactional_id), |shard: &TxnShard| {
                shard.get(transactional_id).cloned()
            })
            .ok_or(ResponseError::TransactionalIdNotFound)
    }

    /// Every transactional id, for ListTransactions (filters applied by the caller).
    pub fn list(&self) -> Vec<TxnView> {
        let mut out = Vec::new();
        for p in 0..self.runtime.partition_count() {
            self.runtime.read(p, |shard: &TxnShard| {
                out.extend(shard.all().cloned());
            });
        }
        out
    }

    /// Aborts timed-out transactions, forgets expired ids, and resumes every prepared
    /// transaction that no task is completing (after a restart, or after a failed task).
    /// Runs every `abort_check_interval_ms`, and once right after load.
    pub async fn tick(self: &Arc<Self>) {
        let now = now_ms();
        for p in 0..self.runtime.partition_count() {
            let (timed_out, expired, prepared) = self.runtime.read(p, |shard: &TxnShard| {
                let mut timed_out = Vec::new();
                let mut expired = Vec::new();
                let mut prepared = Vec::new();
                for m in shard.all() {
                    if m.has_timed_out(now) {
                        timed_out.push(m.transactional_id.clone());
                    } else if m.state.is_preparing() {
                        prepared.push(m.clone());
                    } else if state::is_expired(m, now, self.config.id_expiration_ms) {
                        expired.push(m.transactional_id.clone());
                    }
                }
                (timed_out, expired, prepared)
            });
            for m in prepared {
                self.spawn_completion(m);
            }
            for id in timed_out {
                match self.abort_timed_out(p, &id, now).await {
                    Ok(Some(m)) => self.spawn_completion(m),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(transactional_id = id, error = %e, "cannot abort a timed-out transaction")
                    }
                }
            }
            for id in expired {
                if let Err(e) = self.expire(p, &id, now).await {
                    tracing::warn!(transactional_id = id, error = %e, "cannot expire a transactional id");
                }
            }
        }
    }

    async fn abort_timed_out(
        self: &Arc<Self>,
        partition: i32,
        transactional_id: &str,
        now: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        let id = transactional_id.to_string();
        let written = self
            .write(partition, move |shard: &mut TxnShard| {
                let next = shard.get(&id).and_then(|m| state::abort_timed_out(m, now));
                Ok::<_, TxnError>(Outcome {
                    records: next.iter().map(record).collect(),
                    response: next,
                })
            })
            .await?;
        let aborted = written.committed().await?;
        if let Some(m) = &aborted {
            tracing::info!(
                transactional_id,
                producer_id = m.producer_id,
                timeout_ms = m.timeout_ms,
                "aborting a transaction past its timeout"
            );
        }
        Ok(aborted)
    }

    async fn expire(
        self: &Arc<Self>,
        partition: i32,
        transactional_id: &str,
        now: i64,
    ) -> Result<(), TxnError> {
        let id_expiration_ms = self.config.id_expiration_ms;
        let id = transactional_id.to_string();
        let written = self
            .write(partition, move |shard: &mut TxnShard| {
                let expired = shard
                    .get(&id)
                    .is_some_and(|m| state::is_expired(m, now, id_expiration_ms));
                let records = if expired {
                    vec![TxnRecord {
                        transactional_id: id,
                        value: None,
                    }]
                } else {
                    Vec::new()
                };
                Ok::<_, TxnError>(Outcome {
                    records,
                    response: (),
                })
            })
            .await?;
        written.committed().await?;
        Ok(())
    }

    /// Starts the task that writes the markers of a prepared transaction and completes it,
    /// unless one is already running for this id. A panic in it is counted as a broker task
    /// panic.
    fn spawn_completion(self: &Arc<Self>, prepared: TxnMetadata) {
        if !self
            .completing
            .lock()
            .insert(prepared.transactional_id.clone())
        {
            return;
        }
        let this = Arc::clone(self);
        let id = prepared.transactional_id.clone();
        let task = tokio::spawn(async move { this.complete(prepared).await });
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = task.await;
            this.completing.lock().remove(&id);
            match result {
                Ok(Ok(())) => {}
                // The next tick resumes it.
                Ok(Err(e)) => {
                    tracing::warn!(transactional_id = id, error = %e, "transaction not completed yet")
                }
                Err(e) => this.metrics.task_failed("transaction markers", &e),
            }
        });
    }

    /// Writes the markers of a prepared transaction, waits for them, writes its completion.
    async fn complete(self: &Arc<Self>, prepared: TxnMetadata) -> Result<(), TxnError> {
        // The prepare record must be durable before any marker is written: a marker that
        // outlived a lost prepare would show readers a commit that the coordinator, finding
        // the transaction still ongoing after a restart, then aborts. EndTxn's path has waited
        // for it already; a completion that `tick` resumes may find it still unflushed.
        let log = Arc::clone(
            self.runtime
                .log(self.partition_for(&prepared.transactional_id)),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        log.on_durable(
            log.log_end_offset(),
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RuntimeError::Storage(e).into()),
            Err(_) => return Err(RuntimeError::DurabilityUnknown.into()),
        }
        let marker = TxnMarker {
            producer_id: prepared.producer_id,
            producer_epoch: prepared.producer_epoch,
            coordinator_epoch: COORDINATOR_EPOCH,
            commit: prepared.state == TxnState::PrepareCommit,
            timestamp_ms: now_ms(),
        };
        let partitions = prepared
            .partitions
            .iter()
            .map(|(topic, partition)| TopicPartition::new(topic.clone(), *partition))
            .collect();
        self.write_markers(partitions, marker).await;
        let id = prepared.transactional_id.as_str();
        let now = now_ms();
        let (producer_id, producer_epoch, txn_state) = (
            prepared.producer_id,
            prepared.producer_epoch,
            prepared.state,
        );
        let completing = id.to_string();
        let written = self
            .write(self.partition_for(id), move |shard: &mut TxnShard| {
                // Only the transaction these markers were for: same producer, epoch and state.
                let next = shard
                    .get(&completing)
                    .filter(|m| {
                        m.producer_id == producer_id
                            && m.producer_epoch == producer_epoch
                            && m.state == txn_state
                    })
                    .and_then(|m| state::complete(m, now));
                Ok::<_, TxnError>(Outcome {
                    records: next.iter().map(record).collect(),
                    response: (),
                })
            })
            .await?;
        written.committed().await?;
        tracing::debug!(
            transactional_id = id,
            commit = marker.commit,
            partitions = prepared.partitions.len(),
            "transaction completed"
        );
        Ok(())
    }

    /// Writes the markers (all of them, then waits for all: one flush pass covers them) and
    /// retries those a partition refused (an offline log) until they are durable; a partition
    /// that is gone needs none. Kafka's marker sender retries the same way: a transaction
    /// cannot complete with a partition unmarked.
    async fn write_markers(&self, mut pending: Vec<TopicPartition>, marker: TxnMarker) {
        while !pending.is_empty() {
            let writer = Arc::clone(&self.markers);
            let batch = std::mem::take(&mut pending);
            let retry = batch.clone();
            let write_all = move || {
                batch
                    .into_iter()
                    .map(|tp| {
                        let result = writer.write(&tp, &marker);
                        (tp, result)
                    })
                    .collect::<Vec<_>>()
            };
            // Appends (perhaps a log opened, a segment rolled): on the I/O pool, or the
            // blocking pool without one.
            let written = match self.io_pool.get() {
                Some(pool) => pool.run(write_all).await.map_err(|e| {
                    self.metrics.io_job_failed("transaction marker write", &e);
                }),
                None => tokio::task::spawn_blocking(write_all).await.map_err(|e| {
                    self.metrics.task_failed("transaction marker write", &e);
                }),
            };
            let written = match written {
                Ok(written) => written,
                Err(()) => {
                    pending = retry;
                    tokio::time::sleep(MARKER_RETRY).await;
                    continue;
                }
            };
            let mut waits = Vec::with_capacity(written.len());
            for (tp, result) in written {
                match result {
                    Ok(durable) => waits.push((tp, durable)),
                    Err(MarkerError::PartitionGone) => {}
                    Err(MarkerError::Failed(reason)) => {
                        tracing::warn!(%tp, producer_id = marker.producer_id, reason, "cannot write a transaction marker; retrying");
                        pending.push(tp);
                    }
                }
            }
            for (tp, durable) in waits {
                match durable.await {
                    Ok(()) | Err(MarkerError::PartitionGone) => {}
                    Err(MarkerError::Failed(reason)) => {
                        tracing::warn!(%tp, producer_id = marker.producer_id, reason, "a transaction marker did not become durable; retrying");
                        pending.push(tp);
                    }
                }
            }
            if !pending.is_empty() {
                tokio::time::sleep(MARKER_RETRY).await;
            }
        }
    }
}
