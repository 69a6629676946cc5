//! KIP-932 share groups: membership, share sessions, and the share-partitions whose state
//! is kept in `__share_group_state` on the coordinator runtime (Kafka's share coordinator
//! and `SharePartitionManager`, on one node).
//!
//! - [`partition`]: one share-partition's in-flight records (pure state).
//! - [`records`] / [`shard`]: the persisted state, one snapshot record per share-partition,
//!   replayed at load into [`shard::ShareStateShard`]s.
//! - [`group`]: membership and assignment (in memory; members rejoin after a restart). That
//!   a group exists is recorded in `__share_group_state` too ([`records::GroupRecord`]), so
//!   an empty share group outlives its share-partition state and restarts, as in Kafka.
//! - [`session`]: share sessions (in memory; clients reopen them after a restart).
//!
//! A share-partition is loaded from its persisted state on first use (or starts at the
//! group's `share.auto.offset.reset` position). A change that must be durable (an
//! acknowledgement, a record archived at the delivery limit) is made on a clone under the
//! share-partition's lock; the clone's persisted state is written through the runtime, and
//! the clone replaces the share-partition only once the append succeeded. Acquisitions and
//! lock expiries that make records available again are not written: what is persisted
//! already shows an acquired record as available, so a crash loses no record (it is
//! delivered again) and redelivers no acknowledged one.
//!
//! **Lock order:** a share-partition's lock, then the runtime shard's (inside `write`). The
//! groups, partitions and sessions maps are locked alone, never while taking another lock.

pub mod group;
pub mod partition;
pub mod records;
pub mod session;
pub mod shard;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rill_storage::Log;
use tokio::sync::Notify;

use self::group::{Assignment, Heartbeat, HeartbeatError, HeartbeatOk, ShareGroup};
use self::partition::SharePartition;
use self::records::{GroupRecord, ShareRecord, StateKey, StoredRecord};
use self::session::ShareSessions;
use self::shard::ShareStateShard;
use crate::coordinator::runtime::{CoordinatorRuntime, Outcome, RuntimeError, Written};

pub use self::records::TOPIC;

/// Broker-level share group settings (Kafka's `group.share.*`), the defaults of each group's.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// Partitions of `__share_group_state` (`share.coordinator.state.topic.num.partitions`).
    pub state_partitions: i32,
    /// `share.coordinator.state.topic.segment.bytes`.
    pub state_segment_bytes: i64,
    /// `group.share.record.lock.duration.ms` (default 30 s).
    pub record_lock_duration_ms: i64,
    /// `group.share.delivery.count.limit` (default 5).
    pub delivery_count_limit: i16,
    /// `group.share.partition.max.record.locks` (default 2000): the in-flight window.
    pub partition_max_record_locks: i64,
    /// `group.share.session.timeout.ms` (default 45 s).
    pub session_timeout_ms: i64,
    /// `group.share.heartbeat.interval.ms` (default 5 s).
    pub heartbeat_interval_ms: i32,
    /// `group.share.max.size`: members per group (default 200).
    pub max_size: usize,
    /// `group.share.max.share.sessions` (default 2000).
    pub max_share_sessions: usize,
}

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            state_partitions: 8,
            state_segment_bytes: 100 << 20,
            record_lock_duration_ms: 30_000,
            delivery_count_limit: 5,
            partition_max_record_locks: 2_000,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: 200,
            max_share_sessions: 2_000,
        }
    }
}

/// A share-partition, shared by the requests of all members.
pub type SharedPartition = Arc<Mutex<SharePartition>>;

/// Share groups of this broker.
pub struct ShareCoordinator {
    runtime: CoordinatorRuntime<ShareStateShard>,
    config: ShareConfig,
    groups: Mutex<HashMap<String, ShareGroup>>,
    partitions: Mutex<HashMap<StateKey, SharedPartition>>,
    sessions: Mutex<ShareSessions>,
    /// Signalled when records become available again (release, lock expiry), so parked
    /// ShareFetches look again.
    available: Notify,
}

impl ShareCoordinator {
    /// Replays `__share_group_state` (one log per partition). Blocking.
    ///
    /// # Errors
    /// A log that cannot be read or a record that does not decode.
    pub fn load(config: ShareConfig, logs: Vec<Arc<Log>>) -> Result<Self, RuntimeError> {
        let runtime = CoordinatorRuntime::load(logs, |_| ShareStateShard::default())?;
        Ok(Self::with_runtime(config, runtime))
    }

    /// A coordinator with no state partitions (before the broker loads the real one; every
    /// write fails).
    pub fn empty(config: ShareConfig) -> Self {
        let runtime = CoordinatorRuntime::load(Vec::new(), |_| ShareStateShard::default())
            .expect("nothing to replay");
        Self::with_runtime(config, runtime)
    }

    fn with_runtime(config: ShareConfig, runtime: CoordinatorRuntime<ShareStateShard>) -> Self {
        let sessions = Mutex::new(ShareSessions::new(config.max_share_sessions));
        ShareCoordinator {
            runtime,
            config,
            groups: Mutex::default(),
            partitions: Mutex::default(),
            sessions,
            available: Notify::new(),
        }
    }

    pub fn config(&self) -> &ShareConfig {
        &self.config
    }

    pub fn sessions(&self) -> &Mutex<ShareSessions> {
        &self.sessions
    }

    /// Notified when records become available again.
    pub fn available(&self) -> &Notify {
        &self.available
    }

    /// Applies a heartbeat to `group_id` (created on the first join).
    ///
    /// # Errors
    /// [`HeartbeatError`].
    pub fn heartbeat(
        &self,
        group_id: &str,
        hb: Heartbeat<'_>,
        now_ms: i64,
        session_timeout_ms: i64,
        assign: impl Fn(&std::collections::BTreeSet<String>) -> Assignment,
    ) -> Result<HeartbeatOk, HeartbeatError> {
        let mut groups = self.groups.lock();
        if hb.member_epoch != 0 && !groups.contains_key(group_id) {
            return Err(HeartbeatError::UnknownMember);
        }
        let group = groups.entry(group_id.to_string()).or_default();
        group.heartbeat(hb, now_ms, session_timeout_ms, self.config.max_size, assign)
    }

    /// A copy of a group's membership.
    pub fn group(&self, group_id: &str) -> Option<ShareGroup> {
        self.groups.lock().get(group_id).cloned()
    }

    /// A group's membership, or for a recorded group without live members (after a restart,
    /// or created by AlterShareGroupOffsets) an empty group at its recorded epoch.
    pub fn group_or_recorded(&self, group_id: &str) -> Option<ShareGroup> {
        self.group(group_id).or_else(|| {
            self.recorded_epoch(group_id).map(|group_epoch| ShareGroup {
                group_epoch,
                ..ShareGroup::default()
            })
        })
    }

    /// Whether `group_id` is a share group: it has members, is recorded, or has persisted
    /// share-partitions (state written before groups were recorded).
    pub fn is_share_group(&self, group_id: &str) -> bool {
        self.groups.lock().contains_key(group_id)
            || self.recorded_epoch(group_id).is_some()
            || !self.persisted_of(group_id).is_empty()
    }

    /// The recorded group epoch of `group_id`, if the group is recorded.
    pub fn recorded_epoch(&self, group_id: &str) -> Option<i32> {
        let partition = self.group_partition(group_id).ok()?;
        self.runtime
            .read(partition, |shard| shard.group_epoch(group_id))
    }

    /// Records that `group_id` exists at `group_epoch`, unless it is recorded already.
    /// Returns the write to await (None: nothing written).
    ///
    /// # Errors
    /// The runtime's (no state partitions, a failed append).
    pub fn record_group(
        &self,
        group_id: &str,
        group_epoch: i32,
    ) -> Result<Option<Written<()>>, RuntimeError> {
        let partition = self.group_partition(group_id)?;
        let written = self.runtime.write(partition, |shard| {
            let records = if shard.group_epoch(group_id).is_some() {
                Vec::new()
            } else {
                vec![StoredRecord::Group(GroupRecord {
                    group_id: group_id.to_string(),
                    group_epoch: Some(group_epoch),
                })]
            };
            Ok::<_, RuntimeError>(Outcome {
                records,
                response: (),
            })
        })?;
        Ok(written.wrote().then_some(written))
    }

    /// Deletes the record of `group_id` (a tombstone), if it is recorded.
    ///
    /// # Errors
    /// The runtime's.
    pub fn unrecord_group(&self, group_id: &str) -> Result<Option<Written<()>>, RuntimeError> {
        let partition = self.group_partition(group_id)?;
        let written = self.runtime.write(partition, |shard| {
            let records = if shard.group_epoch(group_id).is_some() {
                vec![StoredRecord::Group(GroupRecord {
                    group_id: group_id.to_string(),
                    group_epoch: None,
                })]
            } else {
                Vec::new()
            };
            Ok::<_, RuntimeError>(Outcome {
                records,
                response: (),
            })
        })?;
        Ok(written.wrote().then_some(written))
    }

    /// Every share group id with its state (Kafka's "Empty" or "Stable").
    pub fn list(&self) -> Vec<(String, &'static str)> {
        let mut out: HashMap<String, &'static str> = self
            .groups
            .lock()
            .iter()
            .map(|(id, g)| (id.clone(), g.state_name()))
            .collect();
        for p in 0..self.runtime.partition_count() {
            self.runtime.read(p, |shard| {
                for (key, _) in shard.all() {
                    out.entry(key.group_id.clone()).or_insert("Empty");
                }
                for group_id in shard.groups() {
                    out.entry(group_id.clone()).or_insert("Empty");
                }
            });
        }
        let mut out: Vec<_> = out.into_iter().collect();
        out.sort();
        out
    }

    /// Removes members whose sessions timed out; returns (group, member) pairs.
    pub fn expire_members(&self, now_ms: i64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut groups = self.groups.lock();
        for (id, g) in groups.iter_mut() {
            for m in g.expire(now_ms) {
                out.push((id.clone(), m));
            }
        }
        out
    }

    /// The persisted share-partitions of a group (start offsets for describe and admin).
    pub fn persisted_of(&self, group_id: &str) -> Vec<(StateKey, i64)> {
        let mut out = Vec::new();
        for p in 0..self.runtime.partition_count() {
            self.runtime.read(p, |shard| {
                for (key, state) in shard.all() {
                    if key.group_id == group_id {
                        out.push((key.clone(), state.start_offset));
                    }
                }
            });
        }
        out.sort();
        out
    }

    /// The live share-partition of `key`: loaded from its persisted state, else started at
    /// `initial_offset()` (the group's `share.auto.offset.reset` position).
    pub fn partition(
        &self,
        key: &StateKey,
        initial_offset: impl FnOnce() -> i64,
    ) -> SharedPartition {
        if let Some(sp) = self.partitions.lock().get(key) {
            return Arc::clone(sp);
        }
        let persisted = self
            .runtime_partition(key)
            .ok()
            .and_then(|p| self.runtime.read(p, |shard| shard.get(key).cloned()));
        let sp = match persisted {
            Some(state) => SharePartition::from_persisted(&state),
            None => SharePartition::new(initial_offset()),
        };
        let mut partitions = self.partitions.lock();
        Arc::clone(
            partitions
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Mutex::new(sp))),
        )
    }

    /// The live share-partitions (for lock expiry and describe).
    pub fn live_partitions(&self) -> Vec<(StateKey, SharedPartition)> {
        self.partitions
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// Applies `change` to a clone of `sp` (whose lock the caller holds); when it reports
    /// a durable change, writes the clone's persisted state and keeps the clone only if the
    /// append succeeded. Returns `change`'s value and the write to await (outside the lock).
    ///
    /// # Errors
    /// `change`'s error, or the append's; `sp` is then unchanged.
    pub fn change<T, E: From<RuntimeError>>(
        &self,
        key: &StateKey,
        sp: &mut SharePartition,
        change: impl FnOnce(&mut SharePartition) -> Result<(T, bool), E>,
    ) -> Result<(T, Option<Written<()>>), E> {
        let mut next = sp.clone();
        let (value, durable) = change(&mut next)?;
        if !durable {
            *sp = next;
            return Ok((value, None));
        }
        let written = self.persist(key, Some(&next))?;
        *sp = next;
        Ok((value, Some(written)))
    }

    /// Writes (or, for `None`, deletes) a share-partition's persisted state.
    ///
    /// # Errors
    /// The runtime's.
    pub fn persist(
        &self,
        key: &StateKey,
        sp: Option<&SharePartition>,
    ) -> Result<Written<()>, RuntimeError> {
        let partition = self.runtime_partition(key)?;
        let record = StoredRecord::State(ShareRecord {
            key: key.clone(),
            state: sp.map(SharePartition::persisted),
        });
        self.runtime.write(partition, |_| {
            Ok::<_, RuntimeError>(Outcome {
                records: vec![record],
                response: (),
            })
        })
    }

    /// Appends a WriteTxnMarkers marker to a `__share_group_state` partition under its
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

    /// Forgets a share-partition's live state (after its persisted state was deleted or
    /// replaced by an admin call); the next use loads it again.
    pub fn forget(&self, key: &StateKey) {
        self.partitions.lock().remove(key);
    }

    /// Removes a group's membership (DeleteGroups on an empty share group).
    pub fn remove_group(&self, group_id: &str) {
        self.groups.lock().remove(group_id);
    }

    /// The state partition of a group's record: Kafka's share coordinator key for a group.
    fn group_partition(&self, group_id: &str) -> Result<i32, RuntimeError> {
        let count = self.runtime.partition_count();
        if count == 0 {
            return Err(RuntimeError::NoPartition {
                partition: 0,
                count,
            });
        }
        Ok(self.runtime.partition_for(group_id))
    }

    fn runtime_partition(&self, key: &StateKey) -> Result<i32, RuntimeError> {
        let count = self.runtime.partition_count();
        if count == 0 {
            return Err(RuntimeError::NoPartition {
                partition: 0,
                count,
            });
        }
        // Kafka's share coordinator key: "group:topicId:partition".
        Ok(self.runtime.partition_for(&format!(
            "{}:{}:{}",
            key.group_id, key.topic_id, key.partition
        )))
    }
}
