//! Fetch (1): read record batches and send them with zero copy.
//!
//! The response is built by hand ([`ChunkBuilder`]) because its records are not bytes we
//! hold: they are file ranges from `Log::read`, written by the response writer with
//! `sendfile(2)`. Everything else in the body is encoded here for versions 4–16, including
//! the flexible (v12+) compact encodings and empty tagged-field sections.
//!
//! # Long poll
//! When less than `min_bytes` is available, the request parks on every requested partition's
//! append [`Notify`](tokio::sync::Notify) until one is signalled or `max_wait_ms` passes, then
//! reads again. Notifications are enabled *before* reading, so an append between the read and
//! the wait is not lost. No polling loop.
//!
//! # Sizes (KIP-74)
//! `max_bytes` bounds the whole response and `partition_max_bytes` each partition, except that
//! the first partition with data returns its first batch whole even when it is larger, so a
//! consumer can always make progress.
//!
//! # Sessions (KIP-227)
//! From v7 a full fetch (epoch 0) creates a session when the cache has room
//! (`fetch_session.rs` holds the rules); an incremental fetch reads every partition of its
//! session (after the request's additions, updates and forgotten partitions) and answers only
//! those with something new. Session errors are top-level codes with no partitions.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FetchRequest;
use rill_storage::{AbortedTxn, FileSlice, Isolation, StorageError, TopicPartition};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{storage_error_code, NONE};
use crate::fetch_session::{
    Answered, CachedPartition, Context, FetchParams, Outcome, PartitionKey, SessionRequest,
    TopicKey, INVALID_SESSION_ID,
};
use crate::leader_epoch::check_current_epoch;
use crate::response::{ChunkBuilder, Response};
use crate::state::BrokerState;

/// Upper bound on a long poll, whatever the client asks, so a parked fetch cannot outlive
/// reasonable shutdown grace by much.
const MAX_WAIT_MS_MAX: u64 = 60_000;

/// What the request asked of one partition.
struct PartitionFetch {
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: u32,
    current_leader_epoch: i32,
}

/// One requested topic, resolved (or not) against the registry.
struct TopicFetch {
    name: String,
    id: Uuid,
    /// The error every partition gets when the topic is unknown.
    unknown_code: Option<i16>,
    /// Partitions the topic has (0 when unknown): only those get append notifiers, so a
    /// request naming bogus partitions cannot grow the notifier map.
    partition_count: i32,
    partitions: Vec<PartitionFetch>,
}

/// One partition's answer.
struct PartitionData {
    partition: i32,
    error_code: i16,
    high_watermark: i64,
    /// Offsets below it are decided (no open transaction); read_committed reads stop there.
    last_stable_offset: i64,
    log_start_offset: i64,
    /// read_committed: the aborted transactions in the returned range, for the client to drop.
    aborted: Vec<AbortedTxn>,
    slices: Vec<FileSlice>,
    records_bytes: u64,
}

struct TopicData {
    name: String,
    id: Uuid,
    partitions: Vec<PartitionData>,
}

/// A fetch after its first read: answered, or parked in its long poll.
pub enum Fetched {
    Ready(Response),
    /// Less than `min_bytes` was there: the rest of the request is the long poll, which a
    /// pipelined connection runs while it starts the requests behind this one.
    Parked(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// Handles a fetch request; returns the whole response frame.
pub async fn handle(
    state: &Arc<BrokerState>,
    version: i16,
    correlation_id: i32,
    request: FetchRequest,
) -> Response {
    match start(state, version, correlation_id, request, "") {
        Fetched::Ready(response) => response,
        Fetched::Parked(long_poll) => long_poll.await,
    }
}

/// The partitions a request names, by topic name or (v13+) by topic id, for opening their
/// logs on the I/O pool before the read. Unknown topics are left out (the read answers them).
pub fn partitions_of(state: &BrokerState, request: &FetchRequest) -> Vec<TopicPartition> {
    request
        .topics
        .iter()
        .filter_map(|t| {
            if t.topic.0.is_empty() {
                state
                    .topics
                    .get_by_id(&t.topic_id)
                    .map(|meta| (meta.name.clone(), t))
            } else {
                Some((t.topic.0.to_string(), t))
            }
        })
        .flat_map(|(name, t)| {
            t.partitions
                .iter()
                .map(move |p| TopicPartition::new(name.clone(), p.partition))
        })
        .collect()
}

/// Checks the session and reads once, in request order (a session's epochs advance in the
/// order its requests arrive); a fetch that must wait for more data returns its long poll
/// instead of waiting, and finishes its session step when the poll ends.
///
/// `client_id` is the request header's: the `consumer_byte_rate` quota that applies to it caps
/// the response at what the quota allows in one window, and a response that takes the
/// client over its quota is answered empty with the throttle time ([`throttled`]), as Kafka's.
pub fn start(
    state: &Arc<BrokerState>,
    version: i16,
    correlation_id: i32,
    mut request: FetchRequest,
    client_id: &str,
) -> Fetched {
    if let Some(window_bytes_max) = quota_window_bytes(state, client_id) {
        request.max_bytes = request.max_bytes.min(window_bytes_max);
    }
    let client_id = client_id.to_string();
    let encoder = Encoder {
        version,
        correlation_id,
        read_committed: request.isolation_level != 0,
    };
    let session_request = session_request(version, &request);
    let context = match &session_request {
        Some(session_request) => state.fetch_sessions.new_context(session_request, now_ms()),
        None => Context::Sessionless,
    };
    let plan = match &context {
        Context::Error(code) => {
            return Fetched::Ready(encoder.encode(*code, INVALID_SESSION_ID, Vec::new()))
        }
        Context::Sessionless | Context::Full => plan(state, version, &request),
        Context::Incremental { partitions, .. } => plan_session(state, partitions),
    };
    let plan = Arc::new(plan);
    let poll = LongPoll::new(state, &request, &plan, encoder.read_committed);
    if let Some(data) = poll.first_read(state, &plan) {
        let finished = finish(state, &encoder, context, session_request, &plan, data);
        return Fetched::Ready(throttled(state, &encoder, &client_id, finished));
    }
    // Less than `min_bytes`, or a read that may wait for the disk: the rest runs as a
    // future (its reads of old segments on the cold-read pool).
    let state = Arc::clone(state);
    Fetched::Parked(Box::pin(async move {
        let data = poll.wait(&state, &plan).await;
        let finished = finish(&state, &encoder, context, session_request, &plan, data);
        throttled(&state, &encoder, &client_id, finished)
    }))
}

/// Kafka's `getMaxValueInQuotaWindow`: the most a fetch may return when a `consumer_byte_rate`
/// quota applies, the quota times the window it is measured over (a larger response would be
/// throttled whatever came before it).
fn quota_window_bytes(state: &BrokerState, client_id: &str) -> Option<i32> {
    let (quota, _) = state.client_quotas.limit(
        crate::quota_sensors::ANONYMOUS_USER,
        client_id,
        crate::client_quotas::CONSUMER_BYTE_RATE,
    )?;
    let window_s = ((crate::quota_sensors::SAMPLES as u64 - 1)
        * crate::quota_sensors::SAMPLE_WINDOW_MS) as f64
        / 1000.0;
    Some((quota * window_s).clamp(1.0, f64::from(i32::MAX)) as i32)
}

/// Counts a fetch response against the client's `consumer_byte_rate` (Kafka measures a fetch
/// by its response size). Over the quota, the answer is Kafka's throttled response: no
/// partitions, the throttle time, the session id (the session step has run, so the client's
/// next request asks again from the same offsets), and the bytes taken back off the rate,
/// since they were not sent. The connection is then muted for the throttle time.
fn throttled(
    state: &BrokerState,
    encoder: &Encoder,
    client_id: &str,
    (response, session_id): (Response, i32),
) -> Response {
    use crate::quota_sensors::{QuotaKind, ANONYMOUS_USER};
    let (bytes, now) = (response.size_bytes(), now_ms());
    let sensors = &state.quota_sensors;
    let quotas = &state.client_quotas;
    let throttle_ms = sensors.record(
        quotas,
        QuotaKind::Fetch,
        ANONYMOUS_USER,
        client_id,
        bytes,
        now,
    );
    if throttle_ms == 0 {
        return response;
    }
    sensors.unrecord(
        quotas,
        QuotaKind::Fetch,
        ANONYMOUS_USER,
        client_id,
        bytes,
        now,
    );
    let mut empty = encoder.encode(NONE, session_id, Vec::new());
    let throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    empty.patch_i32(throttle_time_offset(encoder.version), throttle_time_ms);
    empty.with_throttle_ms(throttle_ms)
}

/// The session step after the read (a new session for a full fetch, the changed-only filter
/// for an incremental one), then the response, with the session id it carries.
fn finish(
    state: &BrokerState,
    encoder: &Encoder,
    context: Context,
    session_request: Option<SessionRequest>,
    plan: &[TopicFetch],
    data: Vec<TopicData>,
) -> (Response, i32) {
    let (session_id, data) = match (context, session_request) {
        (Context::Full, Some(session_request)) => {
            let cached = cache_entries(plan, &data, session_request.uses_topic_ids);
            let id = state
                .fetch_sessions
                .create(&session_request, cached, now_ms());
            (id, data)
        }
        (
            Context::Incremental {
                session_id,
                next_epoch,
                partitions,
            },
            _,
        ) => {
            let keys: Vec<PartitionKey> = partitions.into_iter().map(|p| p.key).collect();
            let outcomes = outcomes(&data);
            match state
                .fetch_sessions
                .finish_incremental(session_id, next_epoch, &keys, &outcomes)
            {
                Ok(include) => (session_id, keep_included(data, &include)),
                Err(code) => return (encoder.encode(code, session_id, Vec::new()), session_id),
            }
        }
        _ => (INVALID_SESSION_ID, data),
    };
    record_metrics(state, &data);
    (encoder.encode(NONE, session_id, data), session_id)
}

/// A fetch's wait for `min_bytes`: the bounds of the request and the notifiers of its
/// partitions.
struct LongPoll {
    isolation: Isolation,
    max_bytes: u64,
    min_bytes: u64,
    max_wait_ms: u64,
    deadline: Instant,
    notifies: Vec<Arc<Notify>>,
}

impl LongPoll {
    fn new(
        state: &Arc<BrokerState>,
        request: &FetchRequest,
        plan: &[TopicFetch],
        read_committed: bool,
    ) -> LongPoll {
        let max_wait_ms = u64::try_from(request.max_wait_ms)
            .unwrap_or(0)
            .min(MAX_WAIT_MS_MAX);
        LongPoll {
            isolation: if read_committed {
                Isolation::ReadCommitted
            } else {
                Isolation::ReadUncommitted
            },
            max_bytes: u64::try_from(request.max_bytes).unwrap_or(0),
            min_bytes: u64::try_from(request.min_bytes).unwrap_or(0),
            max_wait_ms,
            deadline: Instant::now() + Duration::from_millis(max_wait_ms),
            notifies: append_notifies(state, plan),
        }
    }

    /// The first read, on the calling (async worker) thread: its data when the fetch need not
    /// wait (enough bytes, an error, nothing to wait on, or no wait asked for). `None` also
    /// when a partition must be read below its active segment, which may wait for the disk:
    /// [`LongPoll::wait`] reads on the cold-read pool then.
    fn first_read(&self, state: &Arc<BrokerState>, plan: &[TopicFetch]) -> Option<Vec<TopicData>> {
        let (data, total_bytes, any_error) = read_all(
            state,
            plan,
            self.max_bytes,
            self.isolation,
            ReadSite::Worker,
        )?;
        self.done(total_bytes, any_error).then_some(data)
    }

    /// Whether a read with these results answers the fetch.
    fn done(&self, total_bytes: u64, any_error: bool) -> bool {
        total_bytes >= self.min_bytes
            || any_error
            || self.notifies.is_empty()
            || self.max_wait_ms == 0
            || Instant::now() >= self.deadline
    }

    /// Reads (again) until `min_bytes` are there, an error, or the deadline, waiting for an
    /// append to a partition between reads.
    async fn wait(&self, state: &Arc<BrokerState>, plan: &Arc<Vec<TopicFetch>>) -> Vec<TopicData> {
        loop {
            // Enabled before the read, so an append between the read and the wait is not lost.
            let mut waiters: Vec<_> = self
                .notifies
                .iter()
                .map(|n| Box::pin(n.notified()))
                .collect();
            for waiter in &mut waiters {
                waiter.as_mut().enable();
            }
            let (data, total_bytes, any_error) =
                read_off_worker(state, plan, self.max_bytes, self.isolation).await;
            if self.done(total_bytes, any_error) {
                return data;
            }
            drop(data);
            let any_append = poll_fn(|cx| {
                for waiter in waiters.iter_mut() {
                    if Pin::as_mut(waiter).poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            });
            // Timing out is not an error: the next read answers with whatever is there.
            let _ = tokio::time::timeout_at(self.deadline, any_append).await;
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(crate::broker::now_ms()).unwrap_or(0)
}

/// The session fields of a v7+ request, with its partitions keyed as the session keys them
/// (topic id from v13, name before). `None` before v7, which has no sessions.
fn session_request(version: i16, request: &FetchRequest) -> Option<SessionRequest> {
    if version < 7 {
        return None;
    }
    let uses_topic_ids = version >= 13;
    let topic_key = |name: &str, id: Uuid| {
        if uses_topic_ids {
            TopicKey::Id(id)
        } else {
            TopicKey::Name(Arc::from(name))
        }
    };
    let mut partitions = Vec::new();
    for topic in &request.topics {
        let key = topic_key(topic.topic.0.as_str(), topic.topic_id);
        for p in &topic.partitions {
            let params = FetchParams {
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
            };
            let key = PartitionKey {
                topic: key.clone(),
                partition: p.partition,
            };
            partitions.push((key, params));
        }
    }
    let mut forgotten = Vec::new();
    for topic in &request.forgotten_topics_data {
        let key = topic_key(topic.topic.0.as_str(), topic.topic_id);
        for &partition in &topic.partitions {
            forgotten.push(PartitionKey {
                topic: key.clone(),
                partition,
            });
        }
    }
    Some(SessionRequest {
        session_id: request.session_id,
        epoch: request.session_epoch,
        uses_topic_ids,
        privileged: request.replica_id.0 >= 0 || request.replica_state.replica_id.0 >= 0,
        partitions,
        forgotten,
    })
}

/// A full fetch's partitions as a new session holds them: what was asked, what was answered.
fn cache_entries(
    plan: &[TopicFetch],
    data: &[TopicData],
    uses_topic_ids: bool,
) -> Vec<CachedPartition> {
    let mut cached = Vec::new();
    for (topic, answer) in plan.iter().zip(data) {
        let key = if uses_topic_ids {
            TopicKey::Id(topic.id)
        } else {
            TopicKey::Name(Arc::from(topic.name.as_str()))
        };
        for (p, d) in topic.partitions.iter().zip(&answer.partitions) {
            let mut entry = CachedPartition {
                key: PartitionKey {
                    topic: key.clone(),
                    partition: p.partition,
                },
                params: FetchParams {
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: i32::try_from(p.partition_max_bytes).unwrap_or(i32::MAX),
                    current_leader_epoch: p.current_leader_epoch,
                },
                answered: answered(d),
            };
            if d.error_code != NONE {
                // As Kafka: an errored partition is sent again once the error is gone.
                entry.answered.high_watermark = -1;
            }
            cached.push(entry);
        }
    }
    cached
}

fn answered(d: &PartitionData) -> Answered {
    Answered {
        high_watermark: d.high_watermark,
        last_stable_offset: d.last_stable_offset,
        log_start_offset: d.log_start_offset,
    }
}

/// Each answered partition, in plan order, for the session's include-or-skip decision.
fn outcomes(data: &[TopicData]) -> Vec<Outcome> {
    data.iter()
        .flat_map(|t| &t.partitions)
        .map(|d| Outcome {
            error_code: d.error_code,
            answered: answered(d),
            records_bytes: d.records_bytes,
        })
        .collect()
}

/// Drops the partitions an incremental response leaves out (`include` is in plan order), and
/// the topics left with none.
fn keep_included(data: Vec<TopicData>, include: &[bool]) -> Vec<TopicData> {
    let mut flags = include.iter().copied();
    data.into_iter()
        .filter_map(|mut topic| {
            topic.partitions.retain(|_| flags.next().unwrap_or(true));
            (!topic.partitions.is_empty()).then_some(topic)
        })
        .collect()
}

/// Counts what a fetch returns: record bytes per topic, errors per code.
fn record_metrics(state: &BrokerState, data: &[TopicData]) {
    for topic in data {
        let bytes = topic.partitions.iter().map(|p| p.records_bytes).sum();
        state.metrics.record_fetch(&topic.name, bytes);
        for partition in &topic.partitions {
            state.metrics.fetch_error(partition.error_code);
        }
    }
}

fn plan(state: &BrokerState, version: i16, request: &FetchRequest) -> Vec<TopicFetch> {
    request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| PartitionFetch {
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: u32::try_from(p.partition_max_bytes).unwrap_or(0),
                    current_leader_epoch: p.current_leader_epoch,
                })
                .collect();
            let key = if version >= 13 {
                TopicKey::Id(topic.topic_id)
            } else {
                TopicKey::Name(Arc::from(topic.topic.0.as_str()))
            };
            resolve(state, &key, partitions)
        })
        .collect()
}

/// An incremental fetch's plan: the session's partitions in session order, consecutive
/// partitions of one topic grouped (a topic may appear twice after rotation, as in Kafka).
fn plan_session(state: &BrokerState, partitions: &[CachedPartition]) -> Vec<TopicFetch> {
    let mut plan: Vec<TopicFetch> = Vec::new();
    let mut current: Option<&TopicKey> = None;
    for p in partitions {
        let fetch = PartitionFetch {
            partition: p.key.partition,
            fetch_offset: p.params.fetch_offset,
            partition_max_bytes: u32::try_from(p.params.partition_max_bytes).unwrap_or(0),
            current_leader_epoch: p.params.current_leader_epoch,
        };
        match (current, plan.last_mut()) {
            (Some(topic), Some(last)) if *topic == p.key.topic => last.partitions.push(fetch),
            _ => {
                plan.push(resolve(state, &p.key.topic, vec![fetch]));
                current = Some(&p.key.topic);
            }
        }
    }
    plan
}

/// Looks a requested topic up in the registry, by id or by name.
fn resolve(state: &BrokerState, key: &TopicKey, partitions: Vec<PartitionFetch>) -> TopicFetch {
    let (meta, requested_name, requested_id, unknown) = match key {
        TopicKey::Id(id) => (
            state.topics.get_by_id(id),
            String::new(),
            *id,
            ResponseError::UnknownTopicId.code(),
        ),
        TopicKey::Name(name) => (
            state.topics.get(name),
            name.to_string(),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition.code(),
        ),
    };
    TopicFetch {
        name: meta.as_ref().map_or(requested_name, |m| m.name.clone()),
        id: meta.as_ref().map_or(requested_id, |m| m.id),
        unknown_code: if meta.is_some() { None } else { Some(unknown) },
        partition_count: meta.as_ref().map_or(0, |m| m.partitions),
        partitions,
    }
}

fn append_notifies(state: &BrokerState, plan: &[TopicFetch]) -> Vec<Arc<Notify>> {
    plan.iter()
        .filter(|topic| topic.unknown_code.is_none())
        .flat_map(|topic| {
            let exists = |p: &&PartitionFetch| (0..topic.partition_count).contains(&p.partition);
            topic.partitions.iter().filter(exists).map(|p| {
                state.append_notify(&TopicPartition {
                    topic: topic.name.clone(),
                    partition: p.partition,
                })
            })
        })
        .collect()
}

/// Where a fetch read runs. Reads of the active segment (live consumers: its index and the
/// tail's pages are in memory) run on the async worker; a read below it walks old indexes and
/// batch headers that may be on disk only (a catch-up consumer), and an async worker must not
/// wait for the disk (issue 13): every connection it serves would wait too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadSite {
    /// An async worker: a read of an old segment is not done here ([`read_all`] says so).
    Worker,
    /// A thread that may block (the cold-read pool, or the worker itself when the broker has
    /// no pool or its read path policy is `hot`, as before issue 13).
    Blocking,
}

/// The cold-read pool, when old-segment reads go there (policy `auto` or `cold`).
fn old_read_pool(state: &BrokerState) -> Option<&Arc<crate::cold_read::ColdReads>> {
    state
        .cold_reads
        .as_ref()
        .filter(|pool| pool.policy() != crate::cold_read::ReadPathPolicy::Hot)
}

/// [`read_all`], on the async worker when no partition is read below its active segment,
/// else on the cold-read pool (the worker serves its other connections meanwhile).
async fn read_off_worker(
    state: &Arc<BrokerState>,
    plan: &Arc<Vec<TopicFetch>>,
    max_bytes: u64,
    isolation: Isolation,
) -> (Vec<TopicData>, u64, bool) {
    if let Some(read) = read_all(state, plan, max_bytes, isolation, ReadSite::Worker) {
        return read;
    }
    if let Some(pool) = old_read_pool(state) {
        let (pool_state, pool_plan) = (Arc::clone(state), Arc::clone(plan));
        let read = pool
            .run(move || {
                read_all(
                    &pool_state,
                    &pool_plan,
                    max_bytes,
                    isolation,
                    ReadSite::Blocking,
                )
            })
            .await;
        match read {
            Ok(Some(read)) => return read,
            // Unreachable: a blocking site always reads.
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "fetch read on the cold-read pool failed"),
        }
    }
    // No pool (stopped at shutdown): read here, moving the worker's other tasks away.
    let read = || read_all(state, plan, max_bytes, isolation, ReadSite::Blocking);
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let read = if multi_thread {
        tokio::task::block_in_place(read)
    } else {
        read()
    };
    read.expect("a blocking site always reads")
}

/// Reads every partition once. Returns the data, the record bytes in it, and whether any
/// partition failed (which answers the fetch at once, as Kafka does); `None` when `site` is
/// the worker and a partition must be read below its active segment (see [`ReadSite`]).
fn read_all(
    state: &BrokerState,
    plan: &[TopicFetch],
    max_bytes: u64,
    isolation: Isolation,
    site: ReadSite,
) -> Option<(Vec<TopicData>, u64, bool)> {
    let site = match site {
        ReadSite::Worker if old_read_pool(state).is_none() => ReadSite::Blocking,
        site => site,
    };
    let mut remaining_bytes = max_bytes;
    let mut total_bytes = 0u64;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(plan.len());
    for topic in plan {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let data = match topic.unknown_code {
                Some(code) => error_data(p.partition, code),
                None => {
                    let limit = u64::from(p.partition_max_bytes).min(remaining_bytes);
                    let read = PartitionRead {
                        limit_bytes: limit,
                        min_one_batch: total_bytes == 0,
                        isolation,
                        site,
                    };
                    read_partition(state, &topic.name, p, read)?
                }
            };
            any_error |= data.error_code != NONE;
            total_bytes += data.records_bytes;
            remaining_bytes = remaining_bytes.saturating_sub(data.records_bytes);
            partitions.push(data);
        }
        topics.push(TopicData {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
        });
    }
    Some((topics, total_bytes, any_error))
}

/// How one partition is read.
struct PartitionRead {
    limit_bytes: u64,
    min_one_batch: bool,
    isolation: Isolation,
    site: ReadSite,
}

fn error_data(partition: i32, error_code: i16) -> PartitionData {
    PartitionData {
        partition,
        error_code,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted: Vec::new(),
        slices: Vec::new(),
        records_bytes: 0,
    }
}

/// One partition's answer; `None` when `read.site` is the worker and the read is below the
/// active segment. The record bytes themselves take the response writer's cold path when not
/// resident.
fn read_partition(
    state: &BrokerState,
    topic: &str,
    p: &PartitionFetch,
    read: PartitionRead,
) -> Option<PartitionData> {
    let tp = TopicPartition {
        topic: topic.to_string(),
        partition: p.partition,
    };
    let log = match state.log(&tp) {
        Ok(log) => log,
        Err(code) => return Some(error_data(p.partition, code)),
    };
    let mut data = error_data(p.partition, NONE);
    data.high_watermark = log.high_watermark();
    data.last_stable_offset = log.last_stable_offset();
    data.log_start_offset = log.log_start_offset();
    if let Err(code) = check_current_epoch(p.current_leader_epoch, &log) {
        data.error_code = code;
        return Some(data);
    }
    if read.site == ReadSite::Worker && p.fetch_offset < log.active_base_offset() {
        return None;
    }
    let limit_bytes = u32::try_from(read.limit_bytes).unwrap_or(u32::MAX);
    let read = log.read_with(
        p.fetch_offset,
        limit_bytes,
        read.min_one_batch,
        read.isolation,
    );
    match read {
        Ok(read) => {
            data.high_watermark = read.high_watermark;
            data.last_stable_offset = read.last_stable_offset;
            data.log_start_offset = read.log_start_offset;
            data.records_bytes = read.total_len();
            data.aborted = read.aborted;
            data.slices = read.slices;
        }
        Err(e) => {
            if !matches!(e, StorageError::OffsetOutOfRange { .. }) {
                tracing::warn!(%tp, error = %e, "fetch read failed");
            }
            data.error_code = storage_error_code(&e);
        }
    }
    Some(data)
}

/// Where `throttle_time_ms` sits in a fetch response frame of `version`: after the size
/// prefix, the correlation id, and (flexible versions) the header's empty tag buffer.
fn throttle_time_offset(version: i16) -> usize {
    4 + 4 + usize::from(version >= 12)
}

/// Encodes a fetch response body for one version.
struct Encoder {
    version: i16,
    correlation_id: i32,
    read_committed: bool,
}

impl Encoder {
    fn flexible(&self) -> bool {
        self.version >= 12
    }

    fn encode(&self, error_code: i16, session_id: i32, topics: Vec<TopicData>) -> Response {
        let flexible = self.flexible();
        let mut b = ChunkBuilder::new();
        b.put_i32(self.correlation_id);
        if flexible {
            b.put_empty_tags(); // response header v1
        }
        b.put_i32(0); // throttle_time_ms
        if self.version >= 7 {
            b.put_i16(error_code);
            b.put_i32(session_id);
        }
        b.put_array_len(Some(topics.len()), flexible);
        for topic in topics {
            if self.version >= 13 {
                b.put_uuid(topic.id);
            } else {
                b.put_string(&topic.name, flexible);
            }
            b.put_array_len(Some(topic.partitions.len()), flexible);
            for partition in topic.partitions {
                self.encode_partition(&mut b, partition);
            }
            if flexible {
                b.put_empty_tags();
            }
        }
        if flexible {
            b.put_empty_tags();
        }
        b.finish()
    }

    fn encode_partition(&self, b: &mut ChunkBuilder, p: PartitionData) {
        let flexible = self.flexible();
        b.put_i32(p.partition);
        b.put_i16(p.error_code);
        b.put_i64(p.high_watermark);
        b.put_i64(p.last_stable_offset);
        if self.version >= 5 {
            b.put_i64(p.log_start_offset);
        }
        // Aborted transactions: null for read_uncommitted, as Kafka sends.
        if self.read_committed {
            b.put_array_len(Some(p.aborted.len()), flexible);
            for txn in &p.aborted {
                b.put_i64(txn.producer_id);
                b.put_i64(txn.first_offset);
                if flexible {
                    b.put_empty_tags();
                }
            }
        } else {
            b.put_array_len(None, flexible);
        }
        if self.version >= 11 {
            b.put_i32(-1); // preferred_read_replica: none
        }
        // Records are bounded by max_bytes (an i32) plus one batch (max.message.bytes).
        let records_bytes = u32::try_from(p.records_bytes).unwrap_or(u32::MAX);
        if flexible {
            b.put_uvarint(records_bytes.saturating_add(1));
        } else {
            b.put_i32(i32::try_from(records_bytes).unwrap_or(i32::MAX));
        }
        for slice in p.slices {
            b.put_file(slice);
        }
        if flexible {
            b.put_empty_tags();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Chunk;
    use bytes::Bytes;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    use proptest::prelude::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// The response as a client receives it: file chunks read back from the file.
    fn materialize(response: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in response.chunks() {
            match chunk {
                Chunk::Bytes(bytes) => out.extend_from_slice(bytes),
                Chunk::File(slice) => {
                    let mut buf = vec![0u8; slice.len as usize];
                    slice
                        .file
                        .read_exact_at(&mut buf, slice.position)
                        .expect("read back");
                    out.extend_from_slice(&buf);
                }
            }
        }
        out
    }

    type PartitionSpec = (i32, i16, i64, i64, Vec<u8>, bool);

    fn partition_spec() -> impl Strategy<Value = PartitionSpec> {
        (
            0i32..1000,
            prop::sample::select(vec![0i16, 1, 3, 74]),
            -1i64..1_000_000,
            -1i64..1000,
            prop::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The hand-written encoder and the crate's decoder agree on every fetch version.
        #[test]
        fn encoded_fetch_responses_decode_with_the_crate(
            version in 4i16..=16,
            correlation_id in any::<i32>(),
            read_committed in any::<bool>(),
            topics in prop::collection::vec(
                ("[a-z][a-z0-9._-]{0,20}", prop::collection::vec(partition_spec(), 0..4)),
                0..4,
            ),
        ) {
            let mut file = tempfile::tempfile().expect("tempfile");
            let mut expected = Vec::new();
            let mut position = 0u64;
            let mut data = Vec::new();
            for (name, partitions) in &topics {
                let id = Uuid::new_v4();
                let mut parts = Vec::new();
                for (partition, error_code, hwm, start, records, split) in partitions {
                    file.write_all(records).expect("write");
                    let len = records.len() as u32;
                    // Optionally split the records over two slices, as storage may.
                    let cut = if *split { len / 2 } else { len };
                    let mut slices = Vec::new();
                    let shared = Arc::new(file.try_clone().expect("clone fd"));
                    for (pos, n) in [(position, cut), (position + u64::from(cut), len - cut)] {
                        if n > 0 {
                            slices.push(FileSlice { file: Arc::clone(&shared), position: pos, len: n });
                        }
                    }
                    position += u64::from(len);
                    parts.push(PartitionData {
                        partition: *partition,
                        error_code: *error_code,
                        high_watermark: *hwm,
                        last_stable_offset: hwm - 1,
                        log_start_offset: *start,
                        aborted: if read_committed {
                            vec![AbortedTxn { producer_id: *hwm, first_offset: *start }]
                        } else {
                            Vec::new()
                        },
                        slices,
                        records_bytes: u64::from(len),
                    });
                }
                expected.push((name.clone(), id, partitions.clone()));
                data.push(TopicData { name: name.clone(), id, partitions: parts });
            }
            let encoder = Encoder { version, correlation_id, read_committed };
            let response = encoder.encode(NONE, 0, data);
            let bytes = materialize(&response);
            prop_assert_eq!(bytes.len() as u64, response.size_bytes());
            let frame_len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            prop_assert_eq!(frame_len as usize, bytes.len() - 4);
            let mut buf = Bytes::from(bytes[4..].to_vec());
            let header_version = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut buf, header_version).expect("header");
            prop_assert_eq!(header.correlation_id, correlation_id);
            let decoded = FetchResponse::decode(&mut buf, version).expect("body");
            prop_assert!(buf.is_empty(), "{} trailing bytes", buf.len());
            prop_assert_eq!(decoded.responses.len(), expected.len());
            for (topic, (name, id, partitions)) in decoded.responses.iter().zip(&expected) {
                if version >= 13 {
                    prop_assert_eq!(topic.topic_id, *id);
                } else {
                    prop_assert_eq!(topic.topic.0.as_str(), name.as_str());
                }
                prop_assert_eq!(topic.partitions.len(), partitions.len());
                for (p, spec) in topic.partitions.iter().zip(partitions) {
                    prop_assert_eq!(p.partition_index, spec.0);
                    prop_assert_eq!(p.error_code, spec.1);
                    prop_assert_eq!(p.high_watermark, spec.2);
                    prop_assert_eq!(p.last_stable_offset, spec.2 - 1);
                    if version >= 5 {
                        prop_assert_eq!(p.log_start_offset, spec.3);
                    }
                    prop_assert_eq!(p.aborted_transactions.is_some(), read_committed);
                    if let Some(aborted) = &p.aborted_transactions {
                        prop_assert_eq!(aborted.len(), 1);
                        prop_assert_eq!(aborted[0].producer_id.0, spec.2);
                        prop_assert_eq!(aborted[0].first_offset, spec.3);
                    }
                    prop_assert_eq!(p.records.as_deref().unwrap_or(&[]), &spec.4[..]);
                }
            }
        }
    }
}
