//! Incremental fetch sessions (KIP-227): Kafka's `FetchSession`/`FetchSessionCache` as pure
//! state, no I/O, so every rule is unit-tested here and `fetch.rs` only reads and encodes.
//!
//! A consumer of 10 000 partitions would otherwise resend all of them on every poll, and the
//! broker would answer all of them. With a session the broker remembers the partitions (and
//! each one's fetch offset, and the high watermark, last stable offset and log start offset it
//! last sent); a later request names only the partitions whose fetch parameters changed, plus
//! the ones to forget, and the response carries only partitions with something new: records,
//! a moved high watermark, last stable offset or log start offset, or an error.
//!
//! # Metadata
//! `(session_id, epoch)` in the request: epoch 0 (`INITIAL_EPOCH`) is a full fetch that asks
//! for a new session (closing `session_id` if it names one); epoch -1 (`FINAL_EPOCH`) is a
//! full fetch that closes `session_id` and creates none; any other epoch is an incremental
//! fetch on an existing session and must equal the session's epoch, which then advances
//! (after `i32::MAX` back to 1).
//!
//! # Bounds
//! At most `slots` sessions (Kafka's `max.incremental.fetch.session.cache.slots`) and at most
//! `partitions_max` cached partitions over all of them (Rill's own bound on the cache's
//! memory; Kafka has none). A full fetch that finds no room gets session id 0 and the client
//! keeps sending full fetches. Kafka's eviction rules decide who makes room: first a session
//! unused for `eviction_ms`; else the smallest session older than `eviction_ms`, if the new
//! one has at least as many partitions; sessions of followers (privileged) are evicted only
//! by other followers, or by anyone when stale.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use uuid::Uuid;

/// Request epoch of a full fetch that asks for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// Request epoch of a full fetch that closes its session and wants none.
pub const FINAL_EPOCH: i32 = -1;
/// Session id meaning "no session".
pub const INVALID_SESSION_ID: i32 = 0;

/// Kafka's default `max.incremental.fetch.session.cache.slots`.
pub const SLOTS_DEFAULT: usize = 1000;
/// Kafka's `min.incremental.fetch.session.eviction.ms` default: a session is protected from
/// size-based eviction this long after creation, and stale after this long unused.
pub const EVICTION_MS_DEFAULT: u64 = 120_000;
/// Cached partitions over all sessions: 1 000 sessions of 1 000 partitions, about 100 MB.
pub const PARTITIONS_MAX_DEFAULT: u64 = 1_000_000;

/// How a cached partition's topic is named: by id from FetchRequest v13, by name before.
/// A session uses one kind only (FETCH_SESSION_TOPIC_ID_ERROR otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKey {
    Id(Uuid),
    Name(Arc<str>),
}

/// One partition of a session, by topic and index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicKey,
    pub partition: i32,
}

/// What the client asked for a partition, as last sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
}

/// What the broker last answered for a partition; `-1` until the first answer, so a new
/// partition is always in the next response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

impl Answered {
    /// Nothing answered yet.
    pub const NONE: Answered = Answered {
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
    };
}

/// One partition as the response reports it, for the include-or-skip decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub error_code: i16,
    pub answered: Answered,
    pub records_bytes: u64,
}

/// A partition held by a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPartition {
    pub key: PartitionKey,
    pub params: FetchParams,
    pub answered: Answered,
}

impl CachedPartition {
    /// Kafka's `maybeUpdateResponseData`: whether the partition goes in an incremental
    /// response, updating what was answered when it does. An error always goes, and resets
    /// the high watermark so the partition is sent again once the error is gone.
    fn must_respond(&mut self, outcome: &Outcome) -> bool {
        if outcome.error_code != 0 {
            self.answered.high_watermark = -1;
            return true;
        }
        let changed = outcome.records_bytes > 0 || outcome.answered != self.answered;
        self.answered = outcome.answered;
        changed
    }
}

/// The fetch-session fields of a request, decoded.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub session_id: i32,
    pub epoch: i32,
    /// FetchRequest v13+: topics by id.
    pub uses_topic_ids: bool,
    /// A follower's fetch (replica id ≥ 0): its session is privileged.
    pub privileged: bool,
    /// The partitions named, in request order.
    pub partitions: Vec<(PartitionKey, FetchParams)>,
    /// `forgotten_topics_data`, only meaningful on an incremental fetch.
    pub forgotten: Vec<PartitionKey>,
}

/// What the fetch handler does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Context {
    /// Answer the request's partitions; session id 0 in the response.
    Sessionless,
    /// Answer the request's partitions, then offer them to [`FetchSessionCache::create`].
    Full,
    /// Read these partitions (the session's, after the request's changes), then filter the
    /// answers with [`FetchSessionCache::finish_incremental`].
    Incremental {
        session_id: i32,
        /// The session's epoch after this request: the client's next one.
        next_epoch: i32,
        partitions: Vec<CachedPartition>,
    },
    /// Answer with this top-level error and no partitions.
    Error(i16),
}

/// Sizes and times of the session cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub slots: usize,
    pub eviction_ms: u64,
    pub partitions_max: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            slots: SLOTS_DEFAULT,
            eviction_ms: EVICTION_MS_DEFAULT,
            partitions_max: PARTITIONS_MAX_DEFAULT,
        }
    }
}

/// The broker's fetch sessions, behind one lock (held only to look up, copy or update a
/// session, never across a read or a long poll).
pub struct FetchSessionCache {
    inner: Mutex<Inner>,
}

/// Kafka's eviction order: unprivileged before privileged, then fewer partitions, then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EvictableKey {
    privileged: bool,
    size: u32,
    id: i32,
}

struct Session {
    epoch: i32,
    privileged: bool,
    uses_topic_ids: bool,
    creation_ms: u64,
    last_used_ms: u64,
    /// In order: new partitions go last, and partitions that returned records move last, so
    /// that `max_bytes` does not keep serving the same ones first (Kafka's rotation).
    partitions: Vec<CachedPartition>,
    index: HashMap<PartitionKey, usize>,
}

impl Session {
    fn evictable_key(&self, id: i32) -> EvictableKey {
        EvictableKey {
            privileged: self.privileged,
            size: u32::try_from(self.partitions.len()).unwrap_or(u32::MAX),
            id,
        }
    }

    fn reindex(&mut self) {
        self.index = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key.clone(), i))
            .collect();
    }

    /// Applies an incremental request: updates named partitions, appends new ones, drops
    /// forgotten ones.
    fn update(&mut self, request: &SessionRequest) {
        for (key, params) in &request.partitions {
            match self.index.get(key) {
                Some(&i) => self.partitions[i].params = *params,
                None => {
                    self.index.insert(key.clone(), self.partitions.len());
                    self.partitions.push(CachedPartition {
                        key: key.clone(),
                        params: *params,
                        answered: Answered::NONE,
                    });
                }
            }
        }
        if !request.forgotten.is_empty() {
            let forgotten: std::collections::HashSet<&PartitionKey> =
                request.forgotten.iter().collect();
            let before = self.partitions.len();
            self.partitions.retain(|p| !forgotten.contains(&p.key));
            if self.partitions.len() != before {
                self.reindex();
            }
        }
    }
}

struct Inner {
    config: CacheConfig,
    sessions: HashMap<i32, Session>,
    /// `(last_used_ms, id)`: the first entry is the least recently used session.
    last_used: BTreeSet<(u64, i32)>,
    /// Sessions older than `eviction_ms`: evictable by a bigger new session.
    evictable_by_all: BTreeSet<EvictableKey>,
    /// Unprivileged sessions, and privileged ones older than `eviction_ms`: evictable by a
    /// new privileged session.
    evictable_by_privileged: BTreeSet<EvictableKey>,
    partitions_total: u64,
}

/// The epoch after `epoch`: Kafka's `FetchMetadata.nextEpoch`.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl FetchSessionCache {
    pub fn new(config: CacheConfig) -> FetchSessionCache {
        FetchSessionCache {
            inner: Mutex::new(Inner {
                config,
                sessions: HashMap::new(),
                last_used: BTreeSet::new(),
                evictable_by_all: BTreeSet::new(),
                evictable_by_privileged: BTreeSet::new(),
                partitions_total: 0,
            }),
        }
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cached partitions over all sessions.
    pub fn partitions_total(&self) -> u64 {
        self.inner.lock().partitions_total
    }

    /// Kafka's `FetchManager.newContext`: what a request means for the sessions.
    pub fn new_context(&self, request: &SessionRequest, now_ms: u64) -> Context {
        let mut inner = self.inner.lock();
        if request.epoch == INITIAL_EPOCH || request.epoch == FINAL_EPOCH {
            if request.session_id != INVALID_SESSION_ID {
                inner.remove(request.session_id);
            }
            return if request.epoch == FINAL_EPOCH {
                Context::Sessionless
            } else {
                Context::Full
            };
        }
        inner.incremental(request, now_ms)
    }

    /// After a full fetch: creates a session holding `partitions` if there is room (or room
    /// can be made); returns its id, or 0.
    pub fn create(
        &self,
        request: &SessionRequest,
        partitions: Vec<CachedPartition>,
        now_ms: u64,
    ) -> i32 {
        let mut inner = self.inner.lock();
        let size = partitions.len() as u64;
        if size > inner.config.partitions_max || inner.config.slots == 0 {
            return INVALID_SESSION_ID;
        }
        let key = EvictableKey {
            privileged: request.privileged,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            id: 0,
        };
        // Make room by Kafka's rules, one eviction per missing slot; then for partitions by
        // the same rules (bounded: each round removes a session or stops).
        let rounds_max = inner.sessions.len() + 1;
        for _ in 0..rounds_max {
            let full = inner.sessions.len() >= inner.config.slots
                || inner.partitions_total + size > inner.config.partitions_max;
            if !full {
                let id = inner.new_session_id();
                let mut session = Session {
                    epoch: next_epoch(INITIAL_EPOCH),
                    privileged: request.privileged,
                    uses_topic_ids: request.uses_topic_ids,
                    creation_ms: now_ms,
                    last_used_ms: now_ms,
                    partitions,
                    index: HashMap::new(),
                };
                session.reindex();
                // A key named twice in the request is held once.
                if session.index.len() != session.partitions.len() {
                    let mut seen = std::collections::HashSet::new();
                    session.partitions.retain(|p| seen.insert(p.key.clone()));
                    session.reindex();
                }
                inner.insert(id, session, now_ms);
                return id;
            }
            if !inner.try_evict(request.privileged, key, now_ms) {
                break;
            }
        }
        INVALID_SESSION_ID
    }

    /// After an incremental read: decides which partitions go in the response (`true` at
    /// their position in `outcomes`, which follows the context's partitions), records what
    /// they answered, and moves those that returned records to the end of the session.
    /// INVALID_FETCH_SESSION_EPOCH if another request used the session meanwhile.
    pub fn finish_incremental(
        &self,
        session_id: i32,
        next_epoch: i32,
        keys: &[PartitionKey],
        outcomes: &[Outcome],
    ) -> Result<Vec<bool>, i16> {
        debug_assert_eq!(keys.len(), outcomes.len());
        let mut inner = self.inner.lock();
        let Some(session) = inner.sessions.get_mut(&session_id) else {
            // Evicted during the read: the answer stands, judged against nothing cached.
            return Ok(vec![true; outcomes.len()]);
        };
        if session.epoch != next_epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch.code());
        }
        let mut include = Vec::with_capacity(outcomes.len());
        let mut moved = false;
        for (key, outcome) in keys.iter().zip(outcomes) {
            let Some(&i) = session.index.get(key) else {
                include.push(true);
                continue;
            };
            include.push(session.partitions[i].must_respond(outcome));
            moved |= outcome.records_bytes > 0;
        }
        if moved {
            let rotate: std::collections::HashSet<&PartitionKey> = keys
                .iter()
                .zip(outcomes)
                .filter(|(_, o)| o.records_bytes > 0)
                .map(|(k, _)| k)
                .collect();
            let (mut stay, last): (Vec<_>, Vec<_>) = std::mem::take(&mut session.partitions)
                .into_iter()
                .partition(|p| !rotate.contains(&p.key));
            stay.extend(last);
            session.partitions = stay;
            session.reindex();
        }
        Ok(include)
    }
}

impl Inner {
    fn incremental(&mut self, request: &SessionRequest, now_ms: u64) -> Context {
        let id = request.session_id;
        let Some(session) = self.sessions.get_mut(&id) else {
            return Context::Error(ResponseError::FetchSessionIdNotFound.code());
        };
        if session.epoch != request.epoch {
            return Context::Error(ResponseError::InvalidFetchSessionEpoch.code());
        }
        if session.uses_topic_ids != request.uses_topic_ids {
            return Context::Error(ResponseError::FetchSessionTopicIdError.code());
        }
        let size_before = session.partitions.len() as u64;
        session.update(request);
        let size_after = session.partitions.len() as u64;
        if size_after == 0 {
            self.remove_with_size(id, size_before);
            return Context::Sessionless;
        }
        let total = self.partitions_total - size_before + size_after;
        if total > self.config.partitions_max {
            // Grown past the cache's bound: drop it; the client starts over with a full fetch,
            // which gets no session while the cache is this full.
            self.remove_with_size(id, size_before);
            return Context::Error(ResponseError::FetchSessionIdNotFound.code());
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            unreachable!("session {id} was found above under the same lock");
        };
        session.epoch = next_epoch(session.epoch);
        let context = Context::Incremental {
            session_id: id,
            next_epoch: session.epoch,
            partitions: session.partitions.clone(),
        };
        self.touch(id, size_before, now_ms);
        context
    }

    /// A random positive id not in use (Kafka draws from `[1, i32::MAX)`).
    fn new_session_id(&self) -> i32 {
        // Bounded: with at most `slots` ids taken out of 2^31, a collision is rare; the loop
        // gives up on the random draw after 64 tries and scans.
        for _ in 0..64 {
            let bits = Uuid::new_v4().as_u128() as u32 & 0x7fff_ffff;
            let id = bits as i32;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
        (1..i32::MAX)
            .find(|id| !self.sessions.contains_key(id))
            .unwrap_or(1)
    }

    fn insert(&mut self, id: i32, session: Session, now_ms: u64) {
        let size = session.partitions.len() as u64;
        self.sessions.insert(id, session);
        self.partitions_total += size;
        self.touch(id, size, now_ms);
    }

    /// Kafka's `touch`: re-files the session in the recency and eviction orders;
    /// `size_before` is the size it was filed under (the partition total is adjusted).
    fn touch(&mut self, id: i32, size_before: u64, now_ms: u64) {
        let eviction_ms = self.config.eviction_ms;
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        self.last_used.remove(&(session.last_used_ms, id));
        session.last_used_ms = now_ms;
        self.last_used.insert((now_ms, id));
        let old_key = EvictableKey {
            size: u32::try_from(size_before).unwrap_or(u32::MAX),
            ..session.evictable_key(id)
        };
        self.evictable_by_all.remove(&old_key);
        self.evictable_by_privileged.remove(&old_key);
        let key = session.evictable_key(id);
        let old = now_ms.saturating_sub(session.creation_ms) > eviction_ms;
        if !session.privileged || old {
            self.evictable_by_privileged.insert(key);
        }
        if old {
            self.evictable_by_all.insert(key);
        }
        self.partitions_total = self.partitions_total - size_before + u64::from(key.size);
    }

    fn remove(&mut self, id: i32) {
        if let Some(session) = self.sessions.get(&id) {
            let size = session.partitions.len() as u64;
            self.remove_with_size(id, size);
        }
    }

    /// Removes a session filed under `size` partitions.
    fn remove_with_size(&mut self, id: i32, size: u64) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        self.last_used.remove(&(session.last_used_ms, id));
        let key = EvictableKey {
            privileged: session.privileged,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            id,
        };
        self.evictable_by_all.remove(&key);
        self.evictable_by_privileged.remove(&key);
        self.partitions_total -= size;
    }

    /// Kafka's `tryEvict`: the least recently used session if stale, else the first
    /// evictable one if it is worth less than the proposed `key`.
    fn try_evict(&mut self, privileged: bool, key: EvictableKey, now_ms: u64) -> bool {
        let Some(&(last_used_ms, id)) = self.last_used.first() else {
            return false;
        };
        if now_ms.saturating_sub(last_used_ms) > self.config.eviction_ms {
            self.remove(id);
            return true;
        }
        let evictable = if privileged {
            &self.evictable_by_privileged
        } else {
            &self.evictable_by_all
        };
        match evictable.first() {
            Some(first) if key >= *first => {
                let id = first.id;
                self.remove(id);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: TopicKey::Name(Arc::from(topic)),
            partition,
        }
    }

    fn params(offset: i64) -> FetchParams {
        FetchParams {
            fetch_offset: offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    fn request(session_id: i32, epoch: i32, keys: &[PartitionKey]) -> SessionRequest {
        SessionRequest {
            session_id,
            epoch,
            uses_topic_ids: false,
            privileged: false,
            partitions: keys.iter().map(|k| (k.clone(), params(0))).collect(),
            forgotten: Vec::new(),
        }
    }

    fn cached(keys: &[PartitionKey]) -> Vec<CachedPartition> {
        keys.iter()
            .map(|k| CachedPartition {
                key: k.clone(),
                params: params(0),
                answered: Answered {
                    high_watermark: 10,
                    last_stable_offset: 10,
                    log_start_offset: 0,
                },
            })
            .collect()
    }

    fn config(slots: usize) -> CacheConfig {
        CacheConfig {
            slots,
            eviction_ms: 1000,
            partitions_max: 100,
        }
    }

    /// A session created over `n` partitions `t-0..n` at `now_ms`.
    fn session(cache: &FetchSessionCache, n: i32, privileged: bool, now_ms: u64) -> i32 {
        let keys: Vec<_> = (0..n).map(|p| key("t", p)).collect();
        let mut req = request(0, INITIAL_EPOCH, &keys);
        req.privileged = privileged;
        assert_eq!(cache.new_context(&req, now_ms), Context::Full);
        cache.create(&req, cached(&keys), now_ms)
    }

    fn unchanged() -> Outcome {
        Outcome {
            error_code: 0,
            answered: Answered {
                high_watermark: 10,
                last_stable_offset: 10,
                log_start_offset: 0,
            },
            records_bytes: 0,
        }
    }

    #[test]
    fn epochs_follow_kafka() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), FINAL_EPOCH);
    }

    #[test]
    fn incremental_fetch_checks_id_epoch_and_topic_kind() {
        let cache = FetchSessionCache::new(config(10));
        let id = session(&cache, 2, false, 0);
        assert_ne!(id, INVALID_SESSION_ID);
        assert!(id > 0);
        let not_found = ResponseError::FetchSessionIdNotFound.code();
        let bad_epoch = ResponseError::InvalidFetchSessionEpoch.code();
        assert_eq!(
            cache.new_context(&request(id ^ 1, 1, &[]), 1),
            Context::Error(not_found)
        );
        assert_eq!(
            cache.new_context(&request(id, 2, &[]), 1),
            Context::Error(bad_epoch)
        );
        let mut by_id = request(id, 1, &[]);
        by_id.uses_topic_ids = true;
        assert_eq!(
            cache.new_context(&by_id, 1),
            Context::Error(ResponseError::FetchSessionTopicIdError.code())
        );
        // Errors do not advance the epoch: epoch 1 is still the right one, once.
        match cache.new_context(&request(id, 1, &[]), 1) {
            Context::Incremental {
                session_id,
                next_epoch,
                partitions,
            } => {
                assert_eq!(session_id, id);
                assert_eq!(next_epoch, 2);
                assert_eq!(partitions.len(), 2);
            }
            other => panic!("expected incremental, got {other:?}"),
        }
        assert_eq!(
            cache.new_context(&request(id, 1, &[]), 1),
            Context::Error(bad_epoch)
        );
    }

    #[test]
    fn full_and_final_fetches_close_the_named_session() {
        let cache = FetchSessionCache::new(config(10));
        let id = session(&cache, 3, false, 0);
        assert_eq!(cache.partitions_total(), 3);
        assert_eq!(
            cache.new_context(&request(id, INITIAL_EPOCH, &[]), 1),
            Context::Full
        );
        assert!(cache.is_empty());
        assert_eq!(cache.partitions_total(), 0);
        let id = session(&cache, 3, false, 0);
        assert_eq!(
            cache.new_context(&request(id, FINAL_EPOCH, &[]), 1),
            Context::Sessionless
        );
        assert!(cache.is_empty());
        assert_eq!(
            cache.new_context(&request(id, 1, &[]), 1),
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
    }

    #[test]
    fn incremental_requests_add_update_and_forget_partitions() {
        let cache = FetchSessionCache::new(config(10));
        let id = session(&cache, 2, false, 0);
        let mut req = request(id, 1, &[key("t", 1), key("u", 0)]);
        req.partitions[0].1 = params(7);
        req.forgotten = vec![key("t", 0), key("nope", 3)];
        let Context::Incremental { partitions, .. } = cache.new_context(&req, 1) else {
            panic!("expected incremental");
        };
        let got: Vec<_> = partitions
            .iter()
            .map(|p| (p.key.clone(), p.params.fetch_offset, p.answered))
            .collect();
        assert_eq!(
            got,
            vec![
                (key("t", 1), 7, unchanged().answered),
                (key("u", 0), 0, Answered::NONE),
            ]
        );
        assert_eq!(cache.partitions_total(), 2);
        // Forgetting every partition closes the session.
        let mut req = request(id, 2, &[]);
        req.forgotten = vec![key("t", 1), key("u", 0)];
        assert_eq!(cache.new_context(&req, 2), Context::Sessionless);
        assert!(cache.is_empty());
        assert_eq!(cache.partitions_total(), 0);
    }

    #[test]
    fn incremental_responses_carry_only_changes_and_rotate_partitions_with_records() {
        let cache = FetchSessionCache::new(config(10));
        let id = session(&cache, 4, false, 0);
        let Context::Incremental {
            next_epoch,
            partitions,
            ..
        } = cache.new_context(&request(id, 1, &[]), 1)
        else {
            panic!("expected incremental");
        };
        let keys: Vec<_> = partitions.iter().map(|p| p.key.clone()).collect();
        let mut outcomes = vec![unchanged(); 4];
        outcomes[1].records_bytes = 100;
        outcomes[1].answered.high_watermark = 12;
        outcomes[2].answered.log_start_offset = 3;
        outcomes[3].error_code = 6;
        let include = cache
            .finish_incremental(id, next_epoch, &keys, &outcomes)
            .expect("epoch matches");
        assert_eq!(include, vec![false, true, true, true]);
        // Next round: the partition with records moved last; the errored one is sent again
        // even without change (its high watermark was reset); the others are quiet.
        let Context::Incremental {
            next_epoch,
            partitions,
            ..
        } = cache.new_context(&request(id, 2, &[]), 2)
        else {
            panic!("expected incremental");
        };
        let order: Vec<i32> = partitions.iter().map(|p| p.key.partition).collect();
        assert_eq!(order, vec![0, 2, 3, 1]);
        let keys: Vec<_> = partitions.iter().map(|p| p.key.clone()).collect();
        let mut outcomes = vec![unchanged(); 4];
        outcomes[1].answered.log_start_offset = 3; // p2, as answered last time
        outcomes[3].answered.high_watermark = 12; // p1, as answered last time
        let include = cache
            .finish_incremental(id, next_epoch, &keys, &outcomes)
            .expect("epoch matches");
        assert_eq!(include, vec![false, false, true, false]);
        // The LSO alone moving is a change too.
        let Context::Incremental {
            next_epoch,
            partitions,
            ..
        } = cache.new_context(&request(id, 3, &[]), 3)
        else {
            panic!("expected incremental");
        };
        let keys: Vec<_> = partitions.iter().map(|p| p.key.clone()).collect();
        let mut outcomes = vec![unchanged(); 4];
        outcomes[1].answered.log_start_offset = 3;
        outcomes[3].answered.high_watermark = 12;
        outcomes[0].answered.last_stable_offset = 8;
        let include = cache
            .finish_incremental(id, next_epoch, &keys, &outcomes)
            .expect("epoch matches");
        assert_eq!(include, vec![true, false, false, false]);
    }

    #[test]
    fn a_concurrent_request_on_the_session_fails_the_slower_one() {
        let cache = FetchSessionCache::new(config(10));
        let id = session(&cache, 1, false, 0);
        let Context::Incremental {
            next_epoch,
            partitions,
            ..
        } = cache.new_context(&request(id, 1, &[]), 1)
        else {
            panic!("expected incremental");
        };
        // A second request (epoch 2) arrives while the first one still reads.
        assert!(matches!(
            cache.new_context(&request(id, 2, &[]), 1),
            Context::Incremental { .. }
        ));
        let keys = vec![partitions[0].key.clone()];
        assert_eq!(
            cache.finish_incremental(id, next_epoch, &keys, &[unchanged()]),
            Err(ResponseError::InvalidFetchSessionEpoch.code())
        );
    }

    #[test]
    fn no_room_means_no_session_until_eviction_rules_allow_one() {
        let cache = FetchSessionCache::new(config(2));
        let a = session(&cache, 5, false, 0);
        let b = session(&cache, 3, false, 0);
        assert!(a > 0 && b > 0 && a != b);
        // Full, and both sessions are young: nobody is evicted, whatever the size.
        assert_eq!(session(&cache, 50, false, 10), INVALID_SESSION_ID);
        // Keep both in use past eviction_ms so they are old but not stale.
        for (id, epoch) in [(a, 1), (b, 1)] {
            assert!(matches!(
                cache.new_context(&request(id, epoch, &[]), 1500),
                Context::Incremental { .. }
            ));
        }
        // Old: a bigger session evicts the smallest one (b, 3 partitions); a smaller one
        // evicts nothing.
        assert_eq!(session(&cache, 2, false, 1600), INVALID_SESSION_ID);
        let c = session(&cache, 4, false, 1600);
        assert!(c > 0);
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.new_context(&request(b, 2, &[]), 1600),
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
        assert!(matches!(
            cache.new_context(&request(a, 2, &[]), 2000),
            Context::Incremental { .. }
        ));
        // Stale (unused for eviction_ms): evicted by anyone, even a tiny session.
        let d = session(&cache, 1, false, 2601);
        assert!(d > 0, "c was last used at 1600 and is stale at 2601");
        assert!(matches!(
            cache.new_context(&request(a, 3, &[]), 2601),
            Context::Incremental { .. }
        ));
        assert_eq!(cache.partitions_total(), 6);
    }

    #[test]
    fn privileged_sessions_resist_consumers_and_evict_them() {
        let cache = FetchSessionCache::new(config(1));
        let follower = session(&cache, 1, true, 0);
        assert!(follower > 0);
        assert!(matches!(
            cache.new_context(&request(follower, 1, &[]), 1500),
            Context::Incremental { .. }
        ));
        // Old but privileged: a consumer, however big, cannot evict it.
        assert_eq!(session(&cache, 90, false, 1600), INVALID_SESSION_ID);
        let cache = FetchSessionCache::new(config(1));
        let consumer = session(&cache, 90, false, 0);
        assert!(consumer > 0);
        // A young consumer session is evictable by a follower, even a smaller one.
        let follower = session(&cache, 1, true, 10);
        assert!(follower > 0);
        assert_eq!(
            cache.new_context(&request(consumer, 1, &[]), 10),
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
    }

    #[test]
    fn the_partition_bound_holds_over_all_sessions() {
        let cache = FetchSessionCache::new(config(10));
        assert_eq!(session(&cache, 101, false, 0), INVALID_SESSION_ID);
        let a = session(&cache, 60, false, 0);
        assert!(a > 0);
        assert_eq!(session(&cache, 50, false, 0), INVALID_SESSION_ID);
        assert!(session(&cache, 40, false, 0) > 0);
        assert_eq!(cache.partitions_total(), 100);
        // Growing past the bound drops the session.
        let req = request(a, 1, &[key("x", 0)]);
        assert_eq!(
            cache.new_context(&req, 1),
            Context::Error(ResponseError::FetchSessionIdNotFound.code())
        );
        assert_eq!(cache.partitions_total(), 40);
    }
}
