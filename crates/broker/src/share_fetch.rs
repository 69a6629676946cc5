//! ShareFetch (78) and ShareAcknowledge (79): share sessions, acknowledgements (piggy-backed
//! on ShareFetch or alone) and acquisition of records under a lock, for share groups
//! (`coordinator::share`).
//!
//! A ShareFetch runs in request order up to its first acquisition (session step, then
//! acknowledgements, then acquisition); if it acquired nothing it parks until records are
//! appended or become available again, or `max_wait_ms` passes. Its answer waits until its
//! acknowledgements are durable. Records are sent as whole stored batches covering the
//! acquired offsets; `AcquiredRecords` says which of them this member holds, with their
//! delivery counts.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self as m};
use kafka_protocol::protocol::StrBytes;
use rill_storage::batch::BatchHeader;
use rill_storage::{Isolation, Log, TopicPartition};
use uuid::Uuid;

use crate::coordinator::runtime::{RuntimeError, Written};
use crate::coordinator::share::partition::{AckError, Acquired, LogBatch, SharePartition};
use crate::coordinator::share::records::StateKey;
use crate::coordinator::share::session::{Session, SessionError};
use crate::share_settings::{share_settings, OffsetReset, ShareSettings};
use crate::state::BrokerState;

/// Most bytes one partition's new records are read in one acquisition.
const READ_MAX_BYTES: u32 = 8 << 20;
/// Most partitions one request may name (fetch or acknowledge).
const PARTITIONS_MAX: usize = 10_000;
/// How often a parked ShareFetch looks again even without a wake-up (lock expiries of other
/// members, partitions other than the one it waits on).
const PARK_STEP_MS: u64 = 50;

/// A ShareFetch after its in-order part.
pub enum Started {
    Ready(m::ShareFetchResponse),
    Waiting(Pin<Box<dyn Future<Output = m::ShareFetchResponse> + Send>>),
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn top_error(code: i16, message: &str) -> m::ShareFetchResponse {
    m::ShareFetchResponse::default()
        .with_error_code(code)
        .with_error_message(Some(s(message)))
}

fn session_code(e: SessionError) -> i16 {
    match e {
        SessionError::NotFound => ResponseError::ShareSessionNotFound.code(),
        SessionError::InvalidEpoch => ResponseError::InvalidShareSessionEpoch.code(),
        SessionError::LimitReached => ResponseError::ShareSessionLimitReached.code(),
    }
}

fn ack_code(e: AckError) -> i16 {
    match e {
        AckError::InvalidRecordState => ResponseError::InvalidRecordState.code(),
        AckError::InvalidRequest => ResponseError::InvalidRequest.code(),
    }
}

/// One partition's answer.
#[derive(Default)]
struct PartitionOut {
    error: i16,
    ack_error: Option<i16>,
    records: Vec<u8>,
    acquired: Vec<Acquired>,
}

/// Acknowledgement batches of one partition, as the wire has them.
type AckBatches = Vec<(i64, i64, Vec<i8>)>;

/// What a ShareFetch's in-order part (on the I/O pool) leaves for the rest of the request.
enum Begun {
    /// Answered at once (a bad request or a session error).
    Ready(m::ShareFetchResponse),
    /// The session was closed (epoch -1): answered once its acknowledgements are durable.
    Closed {
        out: BTreeMap<(Uuid, i32), PartitionOut>,
        lock_ms: i32,
        node_id: i32,
        writes: Vec<Pending>,
    },
    /// The first acquisition ran; the answer waits for the acknowledgements' durability and,
    /// when nothing was acquired, for records (the long poll).
    Acquired(Acquisition),
}

/// A ShareFetch after its first acquisition.
struct Acquisition {
    group: String,
    member: Arc<str>,
    parts: Vec<(Uuid, i32)>,
    max_records: usize,
    max_bytes: u32,
    max_wait_ms: u64,
    lock_ms: i32,
    node_id: i32,
    writes: Vec<Pending>,
    /// Whether the first acquisition got any record.
    got: bool,
    out: BTreeMap<(Uuid, i32), PartitionOut>,
}

/// Handles a ShareFetch up to its first acquisition; the share session then belongs to
/// `connection_id`.
///
/// The session step, the piggy-backed acknowledgements and the acquisition run on the I/O
/// pool (`BrokerState::coordinate`), awaited here so the connection's next request sees them:
/// they open logs on first use, load share-partitions, read records, and append share state
/// when locks expire at the delivery limit, and an async worker must not wait for a disk.
/// The long poll's later acquisitions go there too.
pub async fn start(
    state: &Arc<BrokerState>,
    r: m::ShareFetchRequest,
    connection_id: u64,
) -> Started {
    let starting = Arc::clone(state);
    let begun = state
        .coordinate("share fetch", move |_| begin(&starting, r, connection_id))
        .await;
    match begun {
        Err(code) => Started::Ready(top_error(code, "the I/O pool did not run the share fetch")),
        Ok(Begun::Ready(response)) => Started::Ready(response),
        Ok(Begun::Closed {
            out,
            lock_ms,
            node_id,
            writes,
        }) => Started::Waiting(Box::pin(async move {
            respond(out, lock_ms, node_id, await_writes(writes).await)
        })),
        Ok(Begun::Acquired(acquisition)) => {
            Started::Waiting(Box::pin(long_poll(Arc::clone(state), acquisition)))
        }
    }
}

/// The in-order part of a ShareFetch, on a pool thread.
fn begin(state: &Arc<BrokerState>, r: m::ShareFetchRequest, connection_id: u64) -> Begun {
    let (Some(group), Some(member)) = (
        r.group_id.as_ref().map(|g| g.0.to_string()),
        r.member_id.as_ref().map(|m| m.to_string()),
    ) else {
        return Begun::Ready(top_error(
            ResponseError::InvalidRequest.code(),
            "GroupId and MemberId are required",
        ));
    };
    if group.is_empty() || member.is_empty() {
        return Begun::Ready(top_error(
            ResponseError::InvalidRequest.code(),
            "GroupId and MemberId must not be empty",
        ));
    }
    let partitions: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
    if partitions > PARTITIONS_MAX {
        return Begun::Ready(top_error(
            ResponseError::InvalidRequest.code(),
            "too many partitions",
        ));
    }
    let epoch = r.share_session_epoch;
    let has_acks = r.topics.iter().any(|t| {
        t.partitions
            .iter()
            .any(|p| !p.acknowledgement_batches.is_empty())
    });
    if epoch == 0 && has_acks {
        return Begun::Ready(top_error(
            ResponseError::InvalidRequest.code(),
            "acknowledgements on the initial epoch of a share session",
        ));
    }
    let coord = &state.shares;
    if epoch != -1 {
        let stepped = coord
            .sessions()
            .lock()
            .step(&group, &member, epoch, connection_id);
        match stepped {
            Ok(Some(old)) => release(state, &group, &member, old.partitions.iter().copied()),
            Ok(None) => {}
            Err(e) => return Begun::Ready(top_error(session_code(e), "share session")),
        }
    } else if !coord.sessions().lock().contains(&group, &member) {
        return Begun::Ready(top_error(
            session_code(SessionError::NotFound),
            "share session",
        ));
    }
    let settings = share_settings(state, &group);
    let mut out: BTreeMap<(Uuid, i32), PartitionOut> = BTreeMap::new();
    let mut writes = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            let entry = out.entry((t.topic_id, p.partition_index)).or_default();
            if p.acknowledgement_batches.is_empty() {
                continue;
            }
            let batches: AckBatches = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            let (code, written) = acknowledge(
                state,
                &settings,
                &group,
                &member,
                t.topic_id,
                p.partition_index,
                &batches,
            );
            entry.ack_error = Some(code);
            writes.extend(written);
        }
    }
    let added: Vec<(Uuid, i32)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic_id, p.partition_index))
        })
        .collect();
    let forgotten: Vec<(Uuid, i32)> = r
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
        .collect();
    let lock_ms = i32::try_from(settings.limits.lock_duration_ms).unwrap_or(i32::MAX);
    let node_id = state.config.node_id;
    if epoch == -1 {
        if let Ok(closed) = coord.sessions().lock().close(&group, &member) {
            release(state, &group, &member, closed.partitions.iter().copied());
        }
        return Begun::Closed {
            out,
            lock_ms,
            node_id,
            writes,
        };
    }
    let session = coord
        .sessions()
        .lock()
        .update(&group, &member, &added, &forgotten);
    for (topic_id, partition) in forgotten {
        out.remove(&(topic_id, partition));
    }
    let member: Arc<str> = member.into();
    let max_records = usize::try_from(r.max_records.max(1))
        .unwrap_or(1)
        .min(100_000);
    let max_bytes = u32::try_from(r.max_bytes.max(1))
        .unwrap_or(1)
        .min(READ_MAX_BYTES);
    let parts: Vec<(Uuid, i32)> = session.into_iter().collect();
    let got = acquire_all(
        state,
        &settings,
        &group,
        &member,
        &parts,
        max_records,
        max_bytes,
        &mut out,
    );
    Begun::Acquired(Acquisition {
        group,
        member,
        parts,
        max_records,
        max_bytes,
        max_wait_ms: u64::try_from(r.max_wait_ms).unwrap_or(0).min(60_000),
        lock_ms,
        node_id,
        writes,
        got,
        out,
    })
}

/// The rest of a ShareFetch: waits for its acknowledgements' durability and, when the first
/// acquisition got nothing, acquires again (on the I/O pool) each time records are appended
/// or become available, until `max_wait_ms`.
async fn long_poll(state: Arc<BrokerState>, a: Acquisition) -> m::ShareFetchResponse {
    let Acquisition {
        group,
        member,
        parts,
        max_records,
        max_bytes,
        max_wait_ms,
        lock_ms,
        node_id,
        writes,
        got,
        mut out,
    } = a;
    let ack_result = await_writes(writes).await;
    let parts = Arc::new(parts);
    if !got && max_wait_ms > 0 && !parts.is_empty() {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms);
        // Bounded by the deadline; every turn sleeps at most PARK_STEP_MS or is woken.
        while tokio::time::Instant::now() < deadline {
            let notify = parts
                .first()
                .and_then(|(id, p)| state.topics.get_by_id(id).map(|t| (t.name.clone(), *p)))
                .map(|(name, p)| state.append_notify(&TopicPartition::new(name, p)));
            let step = Duration::from_millis(PARK_STEP_MS)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let available = state.shares.available().notified();
            match notify {
                Some(n) => {
                    tokio::select! {
                        _ = n.notified() => {}
                        _ = available => {}
                        _ = tokio::time::sleep(step) => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = available => {}
                        _ = tokio::time::sleep(step) => {}
                    }
                }
            }
            if !state.shares.sessions().lock().contains(&group, &member) {
                break;
            }
            let (g, m, p) = (group.clone(), Arc::clone(&member), Arc::clone(&parts));
            let acquired = state
                .coordinate("share fetch", move |state| {
                    let settings = share_settings(state, &g);
                    let got = acquire_all(
                        state,
                        &settings,
                        &g,
                        &m,
                        &p,
                        max_records,
                        max_bytes,
                        &mut out,
                    );
                    (got, out)
                })
                .await;
            match acquired {
                Ok((got, acquired_out)) => {
                    out = acquired_out;
                    if got {
                        break;
                    }
                }
                // Counted by `coordinate`; `out` went with the failed call, so the answer is
                // what the first acquisition found (nothing), with the pool's error.
                Err(code) => {
                    return top_error(code, "the I/O pool did not run the share fetch");
                }
            }
        }
    }
    respond(out, lock_ms, node_id, ack_result)
}

/// A ShareAcknowledge whose acknowledgements are applied, answered once they are durable.
pub type Acknowledged = Pin<Box<dyn Future<Output = m::ShareAcknowledgeResponse> + Send>>;

/// Handles a ShareAcknowledge: session step and acknowledgements now (in request order),
/// the answer once they are durable.
///
/// The acknowledgements are applied (and the share state appended to
/// `__share_group_state`) on the I/O pool, awaited here so that the connection's next request
/// sees them; the returned future waits for durability.
pub async fn acknowledge_request(
    state: &Arc<BrokerState>,
    r: m::ShareAcknowledgeRequest,
    connection_id: u64,
) -> Acknowledged {
    let acknowledging = Arc::clone(state);
    let response = state
        .coordinate("share acknowledge", move |_| {
            acknowledge_now(&acknowledging, r, connection_id)
        })
        .await
        .unwrap_or_else(|code| {
            Err(m::ShareAcknowledgeResponse::default()
                .with_error_code(code)
                .with_error_message(Some(s("the I/O pool did not run the acknowledgement"))))
        });
    Box::pin(async move {
        match response {
            Err(r) => r,
            Ok((writes, topics)) => {
                let durable = await_writes(writes).await;
                ack_response(topics, durable)
            }
        }
    })
}

type AckTopics = Vec<(Uuid, Vec<(i32, i16)>)>;

fn acknowledge_now(
    state: &Arc<BrokerState>,
    r: m::ShareAcknowledgeRequest,
    connection_id: u64,
) -> Result<(Vec<Pending>, AckTopics), m::ShareAcknowledgeResponse> {
    let error = |code: i16, message: &str| {
        Err(m::ShareAcknowledgeResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message))))
    };
    let (Some(group), Some(member)) = (
        r.group_id.as_ref().map(|g| g.0.to_string()),
        r.member_id.as_ref().map(|m| m.to_string()),
    ) else {
        return error(
            ResponseError::InvalidRequest.code(),
            "GroupId and MemberId are required",
        );
    };
    let partitions: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
    if partitions > PARTITIONS_MAX {
        return error(ResponseError::InvalidRequest.code(), "too many partitions");
    }
    let coord = &state.shares;
    let epoch = r.share_session_epoch;
    let stepped = match epoch {
        0 => Err(SessionError::InvalidEpoch),
        -1 => {
            if coord.sessions().lock().contains(&group, &member) {
                Ok(None)
            } else {
                Err(SessionError::NotFound)
            }
        }
        e => coord
            .sessions()
            .lock()
            .step(&group, &member, e, connection_id),
    };
    if let Err(e) = stepped {
        return error(session_code(e), "share session");
    }
    let settings = share_settings(state, &group);
    let mut writes = Vec::new();
    let mut topics = Vec::new();
    for t in &r.topics {
        let mut parts = Vec::new();
        for p in &t.partitions {
            let batches: AckBatches = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            let (code, written) = acknowledge(
                state,
                &settings,
                &group,
                &member,
                t.topic_id,
                p.partition_index,
                &batches,
            );
            writes.extend(written);
            parts.push((p.partition_index, code));
        }
        topics.push((t.topic_id, parts));
    }
    if epoch == -1 {
        if let Ok(closed) = coord.sessions().lock().close(&group, &member) {
            release(state, &group, &member, closed.partitions.iter().copied());
        }
    }
    Ok((writes, topics))
}

fn ack_response(topics: AckTopics, durable: i16) -> m::ShareAcknowledgeResponse {
    m::ShareAcknowledgeResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(topic_id, parts)| {
                m::share_acknowledge_response::ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(topic_id)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(partition, code)| {
                                let code = if code == 0 { durable } else { code };
                                m::share_acknowledge_response::PartitionData::default()
                                    .with_partition_index(partition)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// A write to wait for before answering: 0 once durable, else the error code.
type Pending = Pin<Box<dyn Future<Output = i16> + Send>>;

fn pending_state(w: Written<()>) -> Pending {
    Box::pin(async move {
        match w.committed().await {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "share state write failed");
                runtime_code(&e)
            }
        }
    })
}

fn pending_dlq(log: Arc<Log>, end_offset: i64) -> Pending {
    Box::pin(async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        log.on_durable(
            end_offset,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        match rx.await {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => crate::error::storage_error_code(&e),
            Err(_) => ResponseError::UnknownServerError.code(),
        }
    })
}

/// Awaits the acknowledgements' writes: 0, or the error code of the last that failed.
async fn await_writes(writes: Vec<Pending>) -> i16 {
    let mut code = 0;
    for w in writes {
        let c = w.await;
        if c != 0 {
            code = c;
        }
    }
    code
}

fn runtime_code(e: &RuntimeError) -> i16 {
    match e {
        RuntimeError::Storage(s) => crate::error::storage_error_code(s),
        _ => ResponseError::UnknownServerError.code(),
    }
}

fn respond(
    out: BTreeMap<(Uuid, i32), PartitionOut>,
    lock_ms: i32,
    node_id: i32,
    durable: i16,
) -> m::ShareFetchResponse {
    let mut topics: BTreeMap<Uuid, Vec<m::share_fetch_response::PartitionData>> = BTreeMap::new();
    for ((topic_id, partition), p) in out {
        let ack_code = match p.ack_error {
            Some(0) => durable,
            Some(c) => c,
            None => 0,
        };
        let data = m::share_fetch_response::PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(p.error)
            .with_acknowledge_error_code(ack_code)
            .with_current_leader(
                m::share_fetch_response::LeaderIdAndEpoch::default()
                    .with_leader_id(node_id)
                    .with_leader_epoch(0),
            )
            .with_records(Some(Bytes::from(p.records)))
            .with_acquired_records(
                p.acquired
                    .iter()
                    .map(|a| {
                        m::share_fetch_response::AcquiredRecords::default()
                            .with_first_offset(a.first_offset)
                            .with_last_offset(a.last_offset)
                            .with_delivery_count(a.delivery_count)
                    })
                    .collect(),
            );
        topics.entry(topic_id).or_default().push(data);
    }
    m::ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    m::share_fetch_response::ShareFetchableTopicResponse::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// The share-partition of (group, topic id, partition) and its log, or a partition error.
fn resolve(
    state: &BrokerState,
    settings: &ShareSettings,
    group: &str,
    topic_id: Uuid,
    partition: i32,
) -> Result<
    (
        StateKey,
        Arc<Log>,
        crate::coordinator::share::SharedPartition,
    ),
    i16,
> {
    let Some(topic) = state.topics.get_by_id(&topic_id) else {
        return Err(ResponseError::UnknownTopicId.code());
    };
    if crate::topics::is_internal(&topic.name) {
        return Err(ResponseError::UnknownTopicId.code());
    }
    let log = state.log(&TopicPartition::new(topic.name.clone(), partition))?;
    let key = StateKey {
        group_id: group.to_string(),
        topic_id,
        partition,
    };
    let reset = settings.auto_offset_reset;
    let sp = state.shares.partition(&key, || match reset {
        OffsetReset::Earliest => log.log_start_offset(),
        OffsetReset::Latest => log.high_watermark(),
        OffsetReset::ByDurationMs(ms) => {
            let since = crate::broker::now_ms().saturating_sub(ms);
            match log.offset_for_timestamp(since) {
                Ok(Some(found)) => found.offset,
                _ => log.high_watermark(),
            }
        }
    });
    Ok((key, log, sp))
}

/// Applies one partition's acknowledgements; returns the partition's code and the write.
fn acknowledge(
    state: &BrokerState,
    settings: &ShareSettings,
    group: &str,
    member: &str,
    topic_id: Uuid,
    partition: i32,
    batches: &AckBatches,
) -> (i16, Vec<Pending>) {
    let (key, log, sp) = match resolve(state, settings, group, topic_id, partition) {
        Ok(r) => r,
        Err(code) => return (code, Vec::new()),
    };
    let now = crate::broker::now_ms();
    let mut sp = sp.lock();
    let result = state
        .shares
        .change(&key, &mut sp, |next: &mut SharePartition| {
            let dead = next
                .acknowledge(member, batches, now, &settings.limits)
                .map_err(AckFailure::Ack)?;
            // Dead letters before the state that archives them (at least once).
            let dlq = dead_letters(state, settings, &key, &log, &dead).map_err(AckFailure::Dlq)?;
            Ok::<_, AckFailure>((dlq, true))
        });
    match result {
        Ok((dlq, written)) => {
            // Released records may be acquired by parked fetches of other members.
            state.shares.available().notify_waiters();
            let mut pending: Vec<Pending> = written.into_iter().map(pending_state).collect();
            pending.extend(dlq.map(|(log, end)| pending_dlq(log, end)));
            (0, pending)
        }
        Err(AckFailure::Ack(e)) => (ack_code(e), Vec::new()),
        Err(AckFailure::Runtime(e)) => (runtime_code(&e), Vec::new()),
        Err(AckFailure::Dlq(e)) => {
            tracing::warn!(error = %e, group, "dead letters not written; acknowledgement refused");
            (ResponseError::KafkaStorageError.code(), Vec::new())
        }
    }
}

/// Appends dead letters to the group's dead-letter topic, if it has one.
fn dead_letters(
    state: &BrokerState,
    settings: &ShareSettings,
    key: &StateKey,
    log: &Log,
    dead: &[crate::coordinator::share::partition::DeadLetter],
) -> Result<Option<(Arc<Log>, i64)>, crate::share_dlq::DlqError> {
    match &settings.dlq_topic {
        Some(topic) if !dead.is_empty() => crate::share_dlq::append(state, topic, key, log, dead),
        _ => Ok(None),
    }
}

enum AckFailure {
    Ack(AckError),
    Runtime(RuntimeError),
    Dlq(crate::share_dlq::DlqError),
}

impl From<RuntimeError> for AckFailure {
    fn from(e: RuntimeError) -> Self {
        AckFailure::Runtime(e)
    }
}

/// Ends the share sessions of a closed connection and makes what their members acquired
/// through them available again at once, as Kafka does when a share session's connection
/// disconnects (the records' delivery counts stay as they are; no lock is waited for).
pub async fn connection_closed(state: &Arc<BrokerState>, connection_id: u64) {
    let ended = state
        .shares
        .sessions()
        .lock()
        .remove_connection(connection_id);
    for (group, member, _) in &ended {
        tracing::debug!(%group, %member, connection_id, "share session's connection closed");
    }
    release_ended(state, "share session close", ended).await;
}

/// Makes what each ended session's member acquired through it available again, on the I/O
/// pool: records released at the delivery limit are archived, and that appends share state,
/// which may wait for the disk. The caller's async worker only waits.
pub async fn release_ended(
    state: &Arc<BrokerState>,
    what: &'static str,
    ended: Vec<(String, String, Session)>,
) {
    if ended.is_empty() {
        return;
    }
    // A failed job is counted by `coordinate`; the records' locks then expire at their
    // deadline, as when a member vanishes without a word.
    let _ = state
        .coordinate(what, move |state| {
            for (group, member, session) in &ended {
                release(state, group, member, session.partitions.iter().copied());
            }
        })
        .await;
}

/// Makes what `member` holds in `parts` available again (its session closed or replaced).
fn release(
    state: &BrokerState,
    group: &str,
    member: &str,
    parts: impl Iterator<Item = (Uuid, i32)>,
) {
    let settings = share_settings(state, group);
    let now = crate::broker::now_ms();
    for (topic_id, partition) in parts {
        if let Ok((key, _, sp)) = resolve(state, &settings, group, topic_id, partition) {
            let mut sp = sp.lock();
            let _ = expire_or_release(state, &settings, &key, &mut sp, now, Some(member));
        }
    }
    state.shares.available().notify_waiters();
}

/// Expires locks (and, with `member`, releases what it holds) on one share-partition,
/// writing the state when records were archived at the delivery limit.
fn expire_or_release(
    state: &BrokerState,
    settings: &ShareSettings,
    key: &StateKey,
    sp: &mut SharePartition,
    now: i64,
    member: Option<&str>,
) -> Vec<Pending> {
    let limits = settings.limits;
    let log = state.topics.get_by_id(&key.topic_id).and_then(|t| {
        state
            .log(&TopicPartition::new(t.name.clone(), key.partition))
            .ok()
    });
    let result = state.shares.change(key, sp, |next: &mut SharePartition| {
        let mut dead = Vec::new();
        let mut changed = false;
        if let Some(m) = member {
            let (released, d) = next.release_member(m, now, &limits);
            changed |= released;
            dead.extend(d);
        }
        let (expired, d) = next.expire_locks(now, &limits);
        changed |= expired;
        dead.extend(d);
        let dlq = match &log {
            Some(log) => dead_letters(state, settings, key, log, &dead).map_err(AckFailure::Dlq)?,
            None => None,
        };
        Ok::<_, AckFailure>(((changed, dlq), !dead.is_empty()))
    });
    match result {
        Ok(((changed, dlq), written)) => {
            if changed {
                state.shares.available().notify_waiters();
            }
            let mut pending: Vec<Pending> = written.into_iter().map(pending_state).collect();
            pending.extend(dlq.map(|(log, end)| pending_dlq(log, end)));
            pending
        }
        Err(AckFailure::Runtime(e)) => {
            tracing::warn!(error = %e, group = %key.group_id, "share state write failed");
            Vec::new()
        }
        Err(AckFailure::Dlq(e)) => {
            tracing::warn!(error = %e, group = %key.group_id, "dead letters not written; will retry");
            Vec::new()
        }
        Err(AckFailure::Ack(_)) => Vec::new(),
    }
}

/// Expires acquisition locks of every live share-partition and share group members whose
/// session timed out (the broker's share ticker).
pub async fn tick(state: &Arc<BrokerState>) {
    let now = crate::broker::now_ms();
    let ended: Vec<_> = state
        .shares
        .expire_members(now)
        .into_iter()
        .filter_map(|(group, member)| {
            let session = state
                .shares
                .sessions()
                .lock()
                .remove_member(&group, &member);
            session.map(|session| (group, member, session))
        })
        .collect();
    release_ended(state, "share member expiry", ended).await;
    // Expiring locks may append share state: on the I/O pool. A failure is counted by
    // `coordinate`; the next tick tries again.
    let writes = state
        .coordinate("share tick", move |state| {
            let mut writes = Vec::new();
            for (key, sp) in state.shares.live_partitions() {
                let settings = share_settings(state, &key.group_id);
                let mut sp = sp.lock();
                if sp.next_deadline_ms().is_some_and(|d| d <= now) {
                    writes.extend(expire_or_release(
                        state, &settings, &key, &mut sp, now, None,
                    ));
                }
            }
            writes
        })
        .await
        .unwrap_or_default();
    await_writes(writes).await;
}

/// Acquires records for `member` on each of `parts`, filling `out`; true if any was acquired.
#[allow(clippy::too_many_arguments)]
fn acquire_all(
    state: &BrokerState,
    settings: &ShareSettings,
    group: &str,
    member: &Arc<str>,
    parts: &[(Uuid, i32)],
    max_records: usize,
    max_bytes: u32,
    out: &mut BTreeMap<(Uuid, i32), PartitionOut>,
) -> bool {
    let mut remaining = max_records;
    let mut bytes_left = max_bytes;
    let mut any = false;
    for &(topic_id, partition) in parts {
        if remaining == 0 || bytes_left == 0 {
            break;
        }
        let entry = out.entry((topic_id, partition)).or_default();
        let (key, log, sp) = match resolve(state, settings, group, topic_id, partition) {
            Ok(r) => r,
            Err(code) => {
                entry.error = code;
                continue;
            }
        };
        match acquire_partition(
            state, settings, &key, &log, &sp, member, remaining, bytes_left,
        ) {
            Ok((records, acquired)) => {
                let n: i64 = acquired
                    .iter()
                    .map(|a| a.last_offset - a.first_offset + 1)
                    .sum();
                if n > 0 {
                    any = true;
                    remaining = remaining.saturating_sub(n as usize);
                    bytes_left = bytes_left.saturating_sub(records.len() as u32);
                    entry.records.extend_from_slice(&records);
                    entry.acquired.extend(acquired);
                }
            }
            Err(code) => entry.error = code,
        }
    }
    any
}

/// One partition's acquisition: redeliveries first, then new records from the log.
#[allow(clippy::too_many_arguments)]
fn acquire_partition(
    state: &BrokerState,
    settings: &ShareSettings,
    key: &StateKey,
    log: &Log,
    sp: &crate::coordinator::share::SharedPartition,
    member: &Arc<str>,
    max_records: usize,
    max_bytes: u32,
) -> Result<(Vec<u8>, Vec<Acquired>), i16> {
    let now = crate::broker::now_ms();
    let limits = settings.limits;
    let mut sp = sp.lock();
    sp.skip_to(log.log_start_offset());
    if sp.next_deadline_ms().is_some_and(|d| d <= now) {
        // Expired locks first, so their records can be acquired now; a write (records
        // archived at the limit) is awaited by nobody here: its durability only matters
        // for what it archived, which is never delivered again either way.
        drop(expire_or_release(state, settings, key, &mut sp, now, None));
    }
    let mut acquired = sp.acquire_available(member, now, max_records, &limits);
    let mut bytes = Covering::default();
    let redelivered: i64 = acquired
        .iter()
        .map(|a| a.last_offset - a.first_offset + 1)
        .sum();
    if !acquired.is_empty() {
        bytes
            .cover(log, &acquired, max_bytes)
            .map_err(|e| crate::error::storage_error_code(&e))?;
    }
    let wanted = max_records.saturating_sub(redelivered as usize);
    let end = sp.end_offset();
    let limit = if settings.read_committed {
        log.last_stable_offset()
    } else {
        log.high_watermark()
    };
    if wanted > 0 && sp.room(&limits) > 0 && end < limit {
        let (new_bytes, batches) = read_new(log, end, max_bytes, settings)
            .map_err(|e| crate::error::storage_error_code(&e))?;
        let got = sp.acquire_new(member, now, wanted, &batches, &limits);
        if let Some(last) = got.last().map(|a| a.last_offset) {
            bytes.append_up_to(&new_bytes, last);
        }
        acquired.extend(got);
    }
    Ok((bytes.out, acquired))
}

/// Record bytes for a response: whole batches, in offset order, each at most once.
#[derive(Default)]
struct Covering {
    out: Vec<u8>,
    /// The offset after the last batch added.
    next: i64,
}

impl Covering {
    /// Adds the stored batches covering `ranges` (sorted), read from `log`.
    fn cover(
        &mut self,
        log: &Log,
        ranges: &[Acquired],
        max_bytes: u32,
    ) -> Result<(), rill_storage::StorageError> {
        for r in ranges {
            // Bounded: every read returns at least one batch, which moves `next` on.
            while self.next <= r.last_offset {
                let from = self.next.max(r.first_offset);
                let bytes = log.read_bytes(from, max_bytes.max(1))?;
                if bytes.is_empty() {
                    break;
                }
                let before = self.next;
                for (header, batch) in batches(&bytes) {
                    if header.base_offset > r.last_offset {
                        break;
                    }
                    self.push(&header, batch);
                }
                if self.next == before {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Adds the batches of `bytes` up to the one holding `last_offset`.
    fn append_up_to(&mut self, bytes: &[u8], last_offset: i64) {
        for (header, batch) in batches(bytes) {
            if header.base_offset > last_offset {
                break;
            }
            self.push(&header, batch);
        }
    }

    fn push(&mut self, header: &BatchHeader, batch: &[u8]) {
        if header.last_offset() < self.next {
            return;
        }
        self.out.extend_from_slice(batch);
        self.next = header.last_offset() + 1;
    }
}

/// The whole batches in `bytes` with their headers.
fn batches(bytes: &[u8]) -> impl Iterator<Item = (BatchHeader, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(bytes.get(at..)?)?;
        let size = header.total_size();
        let batch = bytes.get(at..at + size)?;
        at += size;
        Some((header, batch))
    })
}

/// New records from `from`: the bytes read and their batches as acquisition sees them
/// (control batches and, at read_committed, aborted ones are not delivered).
fn read_new(
    log: &Log,
    from: i64,
    max_bytes: u32,
    settings: &ShareSettings,
) -> Result<(Vec<u8>, Vec<LogBatch>), rill_storage::StorageError> {
    let isolation = if settings.read_committed {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    let read = log.read_with(from, max_bytes.max(1), true, isolation)?;
    let mut bytes = Vec::with_capacity(read.total_len() as usize);
    for slice in &read.slices {
        let start = bytes.len();
        bytes.resize(start + slice.len as usize, 0);
        std::os::unix::fs::FileExt::read_exact_at(
            &*slice.file,
            &mut bytes[start..],
            slice.position,
        )
        .map_err(|e| rill_storage::StorageError::Io {
            op: "read",
            path: std::path::PathBuf::from(log.topic_partition().to_string()),
            source: e,
        })?;
    }
    let mut aborted = read.aborted.clone();
    aborted.sort_by_key(|a| a.first_offset);
    let mut aborted = aborted.into_iter().peekable();
    let mut aborting = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (header, batch) in batches(&bytes) {
        // Kafka's read_committed consumer logic: a producer's records are aborted from its
        // aborted transaction's first offset until its abort marker.
        while aborted
            .peek()
            .is_some_and(|a| a.first_offset <= header.base_offset)
        {
            aborting.insert(aborted.next().expect("peeked").producer_id);
        }
        let mut deliver = !header.is_control();
        if header.is_control() {
            aborting.remove(&header.producer_id);
        } else if header.is_transactional() && aborting.contains(&header.producer_id) {
            deliver = false;
        }
        if deliver {
            if let Some(filter) = &settings.filter {
                filtered(batch, &header, filter, &mut out);
                continue;
            }
        }
        out.push(LogBatch {
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            deliver,
        });
    }
    Ok((bytes, out))
}

/// One `LogBatch` per record of `batch`, delivered only if it matches `filter` (issue 15's
/// share filter: records that do not match are archived without being delivered). A batch
/// whose records cannot be read is delivered whole, for the client to judge.
fn filtered(
    batch: &[u8],
    header: &BatchHeader,
    filter: &crate::filter::Filter,
    out: &mut Vec<LogBatch>,
) {
    let whole = LogBatch {
        first_offset: header.base_offset,
        last_offset: header.last_offset(),
        deliver: true,
    };
    let Ok(mut reader) = rill_storage::records::RecordReader::for_batch(
        batch,
        crate::coordinator::runtime::REPLAY_DECOMPRESSED_MAX_BYTES,
        Default::default(),
    ) else {
        out.push(whole);
        return;
    };
    let start = out.len();
    loop {
        match reader.next_record() {
            Ok(Some(record)) => {
                let offset = header.base_offset + i64::from(record.meta.offset_delta);
                let fields = crate::filter::RecordFields {
                    key: record.key,
                    headers: record.headers,
                    timestamp: header.base_timestamp + record.meta.timestamp_delta,
                };
                out.push(LogBatch {
                    first_offset: offset,
                    last_offset: offset,
                    deliver: filter.matches(&fields),
                });
            }
            Ok(None) => break,
            Err(_) => {
                out.truncate(start);
                out.push(whole);
                return;
            }
        }
    }
    // Offsets after the last record (a compacted batch) are skipped, so the next read
    // starts past the batch.
    let covered = out
        .last()
        .filter(|_| out.len() > start)
        .map_or(header.base_offset - 1, |b| b.last_offset);
    if covered < header.last_offset() {
        out.push(LogBatch {
            first_offset: covered + 1,
            last_offset: header.last_offset(),
            deliver: false,
        });
    }
}
