//! Produce (0): append the client's record batches, then acknowledge per `acks`.
//!
//! - acks=0: append and send no response at all.
//! - acks=1: respond once the batches are in the page cache (`Log::append`).
//! - acks=-1 (all): additionally wait until they are on disk, when the topic's flush policy
//!   asks for it (`Log::needs_sync_for_ack`). The wait is async: storage's flusher calls back
//!   when a pass covered the append (`Log::on_durable`), and every partition of every request
//!   written meanwhile shares that pass.
//!
//! Long-polling fetches are woken here only when the append is already visible (Kafka's
//! `written` visibility or a relaxed flush policy); under durable visibility the flusher's
//! listener wakes them when the flush makes it visible.
//!
//! Each partition succeeds or fails alone: a corrupt batch for one partition does not stop
//! the others. Storage validates the batches (headers, and every record: compressed batches are
//! decompressed in a bounded streaming pass) on the broker's I/O pool (`io_pool.rs`) and stores
//! them as sent.
//!
//! Idempotent producers: storage checks producer id, epoch and sequence under the append lock;
//! a retried batch is answered with the offsets it got the first time (and not stored again),
//! a gap with OUT_OF_ORDER_SEQUENCE_NUMBER, a stale epoch with INVALID_PRODUCER_EPOCH.
//! Transactional batches in a request without a transactional id fail the whole request with
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED (checked on batch headers, as Kafka 4.x answers).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use rill_storage::compression::Compression;
use rill_storage::{batch, TimestampType, TopicCompression, TopicPartition};
use tokio::sync::oneshot;

use crate::coordinator::txn::coordinator::TxnError;
use crate::error::{storage_error_code, NONE};
use crate::metrics::Metrics;
use crate::state::BrokerState;

/// A durability wait still running, and where its outcome goes in the response.
struct PendingSync {
    topic_index: usize,
    partition_index: usize,
    wait: oneshot::Receiver<Result<(), rill_storage::StorageError>>,
}

/// Handles a produce request; `None` means acks=0 (no response).
pub async fn handle(
    state: &Arc<BrokerState>,
    version: i16,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    start(state, version, request).await.finish().await
}

/// A produce request whose batches are appended (or refused) and whose answer waits only for
/// durability. A pipelined connection starts the next request once it has this, so requests
/// are appended strictly in request order while their fsyncs are shared.
pub struct Appending {
    state: Arc<BrokerState>,
    acks: i16,
    responses: Vec<TopicProduceResponse>,
    pending: Vec<PendingSync>,
}

impl Appending {
    /// Whether the answer is already known (nothing waits for durability).
    pub fn is_answered(&self) -> bool {
        self.pending.is_empty()
    }

    /// Waits for the durability of every acks=all partition; `None` means acks=0.
    pub async fn finish(mut self) -> Option<ProduceResponse> {
        await_syncs(&mut self.responses, std::mem::take(&mut self.pending)).await;
        for partition in self.responses.iter().flat_map(|t| &t.partition_responses) {
            self.state.metrics.produce_error(partition.error_code);
        }
        if self.acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(self.responses))
    }
}

/// Appends every partition's batches, in request order, and returns the answer still waiting
/// for durability.
pub async fn start(state: &Arc<BrokerState>, version: i16, request: ProduceRequest) -> Appending {
    let acks = request.acks;
    let acks_valid = (-1..=1).contains(&acks);
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    // Appends wait until every partition is checked, then run as one I/O-pool job (request
    // order kept): a job per partition cost a thread handoff each, which dominated requests
    // spread over thousands of partitions (`scripts/bench-partitions`).
    let mut to_append = Vec::new();
    // As Kafka: transactional batches in a request without a transactional id fail every
    // partition with TRANSACTIONAL_ID_AUTHORIZATION_FAILED (the id cannot be authorized).
    let has_txn_id = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty());
    let unauthorized_txn = !has_txn_id
        && request
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .any(|p| {
                p.records
                    .as_deref()
                    .is_some_and(first_batch_is_transactional)
            });
    for (topic_index, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let resolved = if unauthorized_txn {
            Err(ResponseError::TransactionalIdAuthorizationFailed.code())
        } else if crate::topics::is_internal(&name) || crate::delayed::is_delay_log(&name) {
            // Only the group coordinator writes there; a client's bytes could not be replayed.
            Err(ResponseError::InvalidTopicException.code())
        } else if acks_valid {
            match state.resolve_topic(&name, true).await {
                // A filtered view is written only by its maintainer, from its source.
                Ok(meta) if meta.configs.contains_key(crate::view::SOURCE_KEY) => {
                    Err(ResponseError::InvalidRequest.code())
                }
                other => other.map_err(|e| e.code()),
            }
        } else {
            Err(ResponseError::InvalidRequiredAcks.code())
        };
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (partition_index, data) in topic.partition_data.into_iter().enumerate() {
            let mut result = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let tp = TopicPartition {
                topic: name.clone(),
                partition: data.index,
            };
            let verified = match (&resolved, &request.transactional_id) {
                (Ok(_), Some(id)) if has_txn_id => {
                    verify_transactional(state, version, &id.0, &tp, data.records.as_deref()).await
                }
                _ => Ok(()),
            };
            match (&resolved, verified) {
                (Ok(_), Ok(())) => {
                    to_append.push(((topic_index, partition_index), tp, data.records));
                }
                (Err(code), _) => answer(&mut result, Err((*code, None)), &mut pending),
                (Ok(_), Err(code)) => answer(&mut result, Err((code, None)), &mut pending),
            };
            partitions.push(result);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    let (places, appends): (Vec<_>, Vec<_>) = to_append
        .into_iter()
        .map(|(at, tp, r)| (at, (tp, r)))
        .unzip();
    let outcomes = append_all(state, appends, acks).await;
    debug_assert_eq!(places.len(), outcomes.len());
    for ((topic_index, partition_index), outcome) in places.into_iter().zip(outcomes) {
        let result = &mut responses[topic_index].partition_responses[partition_index];
        let mut waits = Vec::new();
        answer(result, outcome, &mut waits);
        pending.extend(waits.into_iter().map(|wait| PendingSync {
            topic_index,
            partition_index,
            wait,
        }));
    }
    Appending {
        state: Arc::clone(state),
        acks,
        responses,
        pending,
    }
}

/// Writes one partition's outcome into its response; a durability wait goes to `waits`.
fn answer<W>(
    result: &mut PartitionProduceResponse,
    outcome: Result<AppendedWith<W>, (i16, Option<String>)>,
    waits: &mut Vec<W>,
) {
    match outcome {
        Ok(appended) => {
            result.error_code = NONE;
            result.base_offset = appended.base_offset;
            result.log_start_offset = appended.log_start_offset;
            result.log_append_time_ms = appended.log_append_time_ms;
            waits.extend(appended.sync);
        }
        Err((code, message)) => {
            result.error_code = code;
            result.error_message = message.map(StrBytes::from_string);
        }
    }
}

/// What a successful append answers, and the durability wait (acks=-1 only) to await.
struct AppendedWith<W> {
    base_offset: i64,
    log_start_offset: i64,
    /// The append time stamped on the batches of a LogAppendTime topic, -1 for CreateTime
    /// (Kafka's `log_append_time_ms`; clients take it as the records' timestamp).
    log_append_time_ms: i64,
    sync: Option<W>,
}

type DurableWait = oneshot::Receiver<Result<(), rill_storage::StorageError>>;
type Appended = AppendedWith<DurableWait>;
type AppendOutcome = Result<Appended, (i16, Option<String>)>;

/// One partition's append, checked and ready for the I/O pool.
struct PoolAppend {
    tp: TopicPartition,
    log: Arc<rill_storage::Log>,
    records: Bytes,
    config: Arc<rill_storage::LogConfig>,
}

/// How one partition of a request is appended.
enum Plan {
    /// Answered without an append (an error).
    Answered(AppendOutcome),
    /// A delay-enabled partition: its own path (`append_delayed`).
    Delayed(Bytes, i64),
    Pool(PoolAppend),
}

/// Appends every partition's batches (in request order) and wakes long-polling fetchers;
/// one outcome per item, in order. Validation (which decompresses) and the writes run on the
/// I/O pool, never on a runtime worker, all of a request's in one job.
async fn append_all(
    state: &Arc<BrokerState>,
    items: Vec<(TopicPartition, Option<Bytes>)>,
    acks: i16,
) -> Vec<AppendOutcome> {
    // A log still on disk is opened (recovered) on the pool, not by the planning below.
    state
        .open_logs_off_runtime(items.iter().map(|(tp, _)| tp))
        .await;
    let mut outcomes: Vec<Option<AppendOutcome>> = Vec::with_capacity(items.len());
    let mut jobs: Vec<(usize, PoolAppend)> = Vec::new();
    for (index, (tp, records)) in items.into_iter().enumerate() {
        let outcome = match plan_append(state, &tp, records, acks) {
            Plan::Answered(outcome) => Some(outcome),
            Plan::Delayed(records, delay_ms) => {
                Some(append_delayed(state, &tp, records, acks, delay_ms).await)
            }
            Plan::Pool(job) => {
                jobs.push((index, job));
                None
            }
        };
        outcomes.push(outcome);
    }
    if !jobs.is_empty() {
        let max_decompressed_bytes = state.config.decompressed_batch_max_bytes;
        let (indexes, jobs): (Vec<usize>, Vec<PoolAppend>) = jobs.into_iter().unzip();
        let ran = state
            .io_pool
            .run_then(move || append_and_sync(jobs, acks, max_decompressed_bytes))
            .await;
        match ran {
            Ok(results) => {
                for (index, (job, result)) in indexes.into_iter().zip(results) {
                    let result = result.map_err(|_| "append panicked".to_string());
                    outcomes[index] = Some(appended(state, &job, acks, result));
                }
            }
            Err(e) => {
                state.metrics.io_job_failed("append", &e);
                for index in indexes {
                    let message = Some(e.to_string());
                    outcomes[index] =
                        Some(Err((ResponseError::UnknownServerError.code(), message)));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every partition is answered above"))
        .collect()
}

/// A produce request's pool job: validates and appends every partition in request order, each
/// succeeding or failing alone (a panic included), and answers that at once (the connection
/// goes on to its next request); then, for acks=all, the same thread makes the appends durable
/// when no flush pass is running (`Log::sync_here`: storage's group commit pass, run here
/// instead of on a flusher thread), so the acknowledgement needs no hand-off to a flusher
/// thread (the durability callback still answers it). The flusher wake-ups of the appends are
/// deferred until then: they would start the pass this thread runs
/// (`rill_storage::flusher::DeferredWakes`).
fn append_and_sync(
    jobs: Vec<PoolAppend>,
    acks: i16,
    max_decompressed_bytes: u64,
) -> (Vec<PoolAppended>, Option<rill_storage::job_queue::Job>) {
    let deferred = jobs
        .first()
        .filter(|_| acks == -1)
        .map(|job| job.log.defer_flush_wakes());
    let results: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                validate_and_append(&job, max_decompressed_bytes)
            }));
            (job, result)
        })
        .collect();
    let to_sync: Vec<(Arc<rill_storage::Log>, i64)> = results
        .iter()
        .filter_map(|(job, result)| match result {
            Ok(Ok(info)) if acks == -1 && job.log.needs_sync_for_ack() => {
                Some((Arc::clone(&job.log), info.last_offset + 1))
            }
            _ => None,
        })
        .collect();
    let then = deferred.map(|deferred| {
        Box::new(move || {
            for (log, end_offset) in to_sync {
                // A panicking pass leaves the answer to `on_durable`, as a flusher thread's
                // would (the pool catches it).
                log.sync_here(end_offset);
            }
            // Ends the deferral, on this thread: wakes a flusher thread if a log is still
            // queued (a pass was running, or a log is known slow).
            drop(deferred);
        }) as rill_storage::job_queue::Job
    });
    (results, then)
}

type AppendResult = Result<rill_storage::AppendInfo, rill_storage::StorageError>;

/// One partition's append as the pool job ran it (`Err`: it panicked).
type PoolAppended = (PoolAppend, std::thread::Result<AppendResult>);

/// The checks before a partition's append that need no disk.
fn plan_append(
    state: &Arc<BrokerState>,
    tp: &TopicPartition,
    records: Option<Bytes>,
    acks: i16,
) -> Plan {
    match plan_append_inner(state, tp, records, acks) {
        Ok(plan) => plan,
        Err(e) => Plan::Answered(Err(e)),
    }
}

fn plan_append_inner(
    state: &Arc<BrokerState>,
    tp: &TopicPartition,
    records: Option<Bytes>,
    acks: i16,
) -> Result<Plan, (i16, Option<String>)> {
    let log = state.log(tp).map_err(|code| (code, None))?;
    let records = match records {
        Some(records) if !records.is_empty() => records,
        _ => {
            let message = "produce request without record batches".to_string();
            return Err((ResponseError::InvalidRecord.code(), Some(message)));
        }
    };
    let config = log.shared_config();
    if config.delivery_delayed_enable {
        return Ok(Plan::Delayed(records, config.delivery_delay_ms));
    }
    if acks == -1 && config.min_insync_replicas > SINGLE_NODE_ISR {
        // Kafka's answer when the ISR is smaller than min.insync.replicas; a single node is
        // an ISR of one.
        let message = format!(
            "min.insync.replicas {} is above the {SINGLE_NODE_ISR} in-sync replica of a single node",
            config.min_insync_replicas
        );
        return Err((ResponseError::NotEnoughReplicas.code(), Some(message)));
    }
    Ok(Plan::Pool(PoolAppend {
        tp: tp.clone(),
        log,
        records,
        config,
    }))
}

/// Validates (recompressing when the topic asks) and appends one partition's batches; runs
/// on the I/O pool.
fn validate_and_append(
    job: &PoolAppend,
    max_decompressed_bytes: u64,
) -> Result<rill_storage::AppendInfo, rill_storage::StorageError> {
    let config = &job.config;
    let recompressed = recompress(&job.records, config, max_decompressed_bytes)?;
    let batches = recompressed.as_deref().unwrap_or(&job.records);
    let now_ms = crate::broker::now_ms();
    let checks = batch::ProduceChecks {
        max_decompressed_bytes,
        // Kafka refuses keyless records in a compacted topic (INVALID_RECORD).
        keys_required_in: config.compacts().then_some(&job.tp),
        timestamp_bounds_ms: (config.timestamp_type == TimestampType::CreateTime).then(|| {
            (
                now_ms.saturating_sub(config.timestamp_before_max_ms),
                now_ms.saturating_add(config.timestamp_after_max_ms),
            )
        }),
    };
    job.log
        .append_checked(batches, |b| batch::validate_produced(b, &checks))
}

/// The answer of an append that ran: metrics, long-poll wake-up, the durability wait.
fn appended(
    state: &Arc<BrokerState>,
    job: &PoolAppend,
    acks: i16,
    result: Result<Result<rill_storage::AppendInfo, rill_storage::StorageError>, String>,
) -> AppendOutcome {
    let (tp, log, records) = (&job.tp, &job.log, &job.records);
    let info = match result {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            tracing::warn!(%tp, error = %e, "produce refused");
            return Err((storage_error_code(&e), Some(e.to_string())));
        }
        Err(panic) => {
            tracing::error!(%tp, "{panic}");
            return Err((ResponseError::UnknownServerError.code(), Some(panic)));
        }
    };
    debug_assert!(info.last_offset >= info.base_offset);
    if info.duplicate {
        // A producer's retry: answered with the offsets the batch got the first time, after
        // the same durability wait (the first attempt may not be on disk yet).
        tracing::debug!(%tp, base_offset = info.base_offset, "duplicate batch answered with its first offsets");
    } else {
        Metrics::add(&state.metrics.produced_bytes_total, records.len() as u64);
        let record_count = u64::from(info.record_count);
        state
            .metrics
            .record_produce(&tp.topic, records.len() as u64, record_count);
    }
    let end_offset = info.last_offset + 1;
    // Under durable visibility the flush that made it visible woke the long polls already
    // (the flush listener), even when it ran in this request's pool job.
    if !log.visible_when_durable() && log.high_watermark() >= end_offset {
        state.notify_appended(tp);
    }
    let sync = (acks == -1 && log.needs_sync_for_ack()).then(|| {
        let (tx, rx) = oneshot::channel();
        let metrics = Arc::clone(&state.metrics);
        let started = std::time::Instant::now();
        log.on_durable(
            end_offset,
            Box::new(move |durable| {
                metrics.observe_durable_wait(started.elapsed());
                let _ = tx.send(durable);
            }),
        );
        rx
    });
    Ok(Appended {
        base_offset: info.base_offset,
        log_start_offset: info.log_start_offset,
        log_append_time_ms: info.log_append_time_ms,
        sync,
    })
}

/// Appends one partition's batches to its delay store (`rill.delivery.delayed.enable`): the
/// records are decoded (their delay headers checked) and stored in the partition's delay log;
/// the acknowledgement waits for that log's durability. The offsets of the records in the
/// partition are assigned at delivery, so the response's base offset is -1.
async fn append_delayed(
    state: &Arc<BrokerState>,
    tp: &TopicPartition,
    records: Bytes,
    acks: i16,
    default_delay_ms: i64,
) -> AppendOutcome {
    use crate::delayed::store::{DelayedError, ProduceLimits};
    let store = crate::delayed::DelayStores::get_or_open(state, tp)
        .await
        .map_err(|e| (storage_error_code(&e), Some(e.to_string())))?;
    let limits = ProduceLimits {
        now_ms: crate::broker::now_ms(),
        max_delay_ms: state.config.delivery_delay_max_ms,
        default_delay_ms,
        max_decompressed_bytes: state.config.decompressed_batch_max_bytes,
    };
    let (appending, batches) = (Arc::clone(&store), records.clone());
    let appended = state
        .io_pool
        .run(move || appending.append(&batches, limits))
        .await;
    let info = match appended {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            tracing::warn!(%tp, error = %e, "delayed produce refused");
            let code = match &e {
                DelayedError::Storage(e) => storage_error_code(e),
                DelayedError::Closed(_) => ResponseError::UnknownTopicOrPartition.code(),
                DelayedError::TooManyCancels(_) => ResponseError::PolicyViolation.code(),
                _ => ResponseError::InvalidRecord.code(),
            };
            return Err((code, Some(e.to_string())));
        }
        Err(e) => {
            state.metrics.io_job_failed("delayed append", &e);
            return Err((
                ResponseError::UnknownServerError.code(),
                Some(e.to_string()),
            ));
        }
    };
    if !info.duplicate {
        Metrics::add(&state.metrics.produced_bytes_total, records.len() as u64);
    }
    let delay_log = &store.delay_log;
    let sync = (acks == -1 && delay_log.needs_sync_for_ack()).then(|| {
        let (tx, rx) = oneshot::channel();
        let metrics = Arc::clone(&state.metrics);
        let started = std::time::Instant::now();
        delay_log.on_durable(
            info.last_offset + 1,
            Box::new(move |durable| {
                metrics.observe_durable_wait(started.elapsed());
                let _ = tx.send(durable);
            }),
        );
        rx
    });
    Ok(Appended {
        base_offset: -1,
        log_start_offset: -1,
        log_append_time_ms: -1,
        sync,
    })
}

/// The in-sync replicas of a partition on a single node: the leader.
const SINGLE_NODE_ISR: u32 = 1;

/// `compression.type`: the batches rewritten into the topic's codec, or `None` when the topic
/// keeps the producer's codec (`producer`, the never-decoded default) or every batch is already
/// in it. Blocking (CPU) work.
fn recompress(
    batches: &[u8],
    config: &rill_storage::LogConfig,
    max_decompressed_bytes: u64,
) -> Result<Option<Vec<u8>>, rill_storage::StorageError> {
    let TopicCompression::Codec(codec) = config.compression_type else {
        return Ok(None);
    };
    // The batch headers must be sane before they are walked; the append checks them again.
    batch::validate_all(batches, config.max_message_bytes as usize)?;
    let level = match codec {
        Compression::Gzip => Some(config.compression_gzip_level),
        Compression::Lz4 => Some(config.compression_lz4_level),
        Compression::Zstd => Some(config.compression_zstd_level),
        Compression::None | Compression::Snappy => None,
    };
    batch::recompress_all(batches, codec, level, max_decompressed_bytes)
}

/// Waits for every durability wait and records failures in the response.
async fn await_syncs(responses: &mut [TopicProduceResponse], pending: Vec<PendingSync>) {
    for sync in pending {
        let error = match sync.wait.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => (storage_error_code(&e), e.to_string()),
            // Storage calls every callback; a dropped one would be a bug there.
            Err(_) => (
                ResponseError::KafkaStorageError.code(),
                "durability wait abandoned".to_string(),
            ),
        };
        tracing::warn!(error = %error.1, "acks=all durability wait failed");
        let partition = &mut responses[sync.topic_index].partition_responses[sync.partition_index];
        partition.error_code = error.0;
        partition.error_message = Some(StrBytes::from_string(error.1));
        partition.base_offset = -1;
    }
}

/// Whether the first batch's attributes have the transactional bit (a header read, as Kafka's
/// `hasTransactionalRecords`; the records stay undecoded).
/// KIP-890: a transactional batch may only be written to a partition of its producer's
/// ongoing transaction, with its current epoch, so a late batch of an aborted or fenced
/// transaction cannot open a new, never-ending one. Produce v12+ comes from a
/// transactions-v2 client, for which the broker adds the partition to the transaction itself
/// (part 2); older versions are only verified (part 1). The coordinator's errors are mapped as
/// Kafka maps them for produce.
async fn verify_transactional(
    state: &BrokerState,
    version: i16,
    transactional_id: &str,
    tp: &TopicPartition,
    records: Option<&[u8]>,
) -> Result<(), i16> {
    let Some(header) = records.and_then(rill_storage::batch::BatchHeader::parse) else {
        return Ok(());
    };
    // A client's control batch is refused as an invalid record by the append, whatever the
    // coordinator would say.
    if !header.is_transactional() || header.is_control() {
        return Ok(());
    }
    let partition = (tp.topic.clone(), tp.partition);
    let result = if version >= 12 {
        state
            .txns
            .add_partitions(
                transactional_id,
                header.producer_id,
                header.producer_epoch,
                std::slice::from_ref(&partition),
            )
            .await
            .map_err(|e| match e {
                TxnError::Kafka(e) => e,
                e => ResponseError::try_from_code(e.code())
                    .unwrap_or(ResponseError::UnknownServerError),
            })
    } else {
        state.txns.verify(
            transactional_id,
            header.producer_id,
            header.producer_epoch,
            &partition,
        )
    };
    result.map_err(|e| match e {
        // A producer the coordinator does not know is not in a transaction.
        ResponseError::InvalidProducerIdMapping => ResponseError::InvalidTxnState.code(),
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch.code(),
        // The previous transaction is still being completed: a code clients retry.
        ResponseError::ConcurrentTransactions => ResponseError::NotEnoughReplicas.code(),
        e => e.code(),
    })
}

fn first_batch_is_transactional(records: &[u8]) -> bool {
    rill_storage::batch::BatchHeader::parse(records).is_some_and(|h| h.is_transactional())
}
