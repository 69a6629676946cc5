//! The group coordinator (Kafka's `GroupCoordinator` for the classic protocol) on a single
//! node: every group is coordinated here, on the coordinator runtime
//! ([`crate::coordinator::runtime`]). Each partition of `__consumer_offsets` is a
//! [`GroupShard`] holding the groups whose id hashes to it; every offset commit and every
//! settled group is appended to that partition and replayed at start-up.
//!
//! Durable state (committed offsets, pending transactional offsets, a group's deletion)
//! changes only by replaying the records an operation returns, once they are appended.
//! Membership (join and sync phases, members, waiters, deadlines) is in-memory state that the
//! operations below change directly under the shard's lock (see `shard.rs`).
//!
//! Concurrency: one mutex per `__consumer_offsets` partition (the runtime's shard lock), never
//! held across an await: a rebalance blocks only groups of the same partition, for the
//! in-memory work and a page-cache append. JoinGroup and SyncGroup park on oneshot channels;
//! whichever request (or the timer task) completes the phase answers them all.

pub mod consumer;
mod consumer_ops;
pub mod consumer_records;
mod mixed;
mod records;
mod shard;
mod state;
pub mod timers;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use rill_storage::{Log, TopicPartition};
use tokio::sync::oneshot;

pub use consumer::{ConsumerGroup, ConsumerGroupState, TopicLookup};
pub use consumer_ops::{ConsumerHeartbeat, ConsumerHeartbeatAnswer};
pub use records::{GroupValue, MemberValue, OffsetValue, StoredRecord, TOPIC};
pub use shard::GroupShard;
pub use state::{Committed, Group, GroupState, JoinOutcome, Member, SyncOutcome};
pub use timers::GroupTimers;

use crate::coordinator::runtime::{CoordinatorRuntime, Outcome, RuntimeError, Written};
use crate::group_configs::{GroupConfigs, GroupDefaults};

/// Coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_partitions: i32,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`: members per group.
    pub max_group_size: usize,
    /// Groups this broker keeps; a bound on memory against a flood of group ids.
    pub max_groups: usize,
    /// `offsets.retention.minutes`, in ms: offsets of a group empty this long are dropped.
    pub offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub max_metadata_bytes: usize,
    /// `offsets.topic.segment.bytes` of `__consumer_offsets` when it is created: the log
    /// cleaner compacts sealed segments only, so this bounds the uncompacted tail of each
    /// partition (Kafka's default is 100 MiB; Rill's 16 MiB keeps commit storms smaller).
    pub offsets_segment_bytes: u64,
    /// `group.consumer.session.timeout.ms`: a KIP-848 member silent this long is removed.
    pub consumer_session_timeout_ms: u64,
    /// `group.consumer.heartbeat.interval.ms`: how often KIP-848 members heartbeat.
    pub consumer_heartbeat_interval_ms: u64,
    /// `group.consumer.assignors`: the server-side assignors members may ask for
    /// (`group.remote.assignor`; others get UNSUPPORTED_ASSIGNOR); the first is used when
    /// members ask for none. Never empty; entries from [`consumer::ASSIGNORS`].
    pub consumer_assignors: Vec<&'static str>,
    /// `group.consumer.migration.policy`: whether a classic group converts to a consumer
    /// group when a KIP-848 member joins it (upgrade), and back when its last KIP-848
    /// member leaves (downgrade).
    pub migration_policy: MigrationPolicy,
}

/// Kafka's `ConsumerGroupMigrationPolicy` (default BIDIRECTIONAL, as in Kafka 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    Bidirectional,
    Upgrade,
    Downgrade,
    Disabled,
}

impl MigrationPolicy {
    /// The policy a config value names (case-insensitive, as Kafka's validator).
    pub fn parse(value: &str) -> Option<MigrationPolicy> {
        match value.trim().to_ascii_lowercase().as_str() {
            "bidirectional" => Some(MigrationPolicy::Bidirectional),
            "upgrade" => Some(MigrationPolicy::Upgrade),
            "downgrade" => Some(MigrationPolicy::Downgrade),
            "disabled" => Some(MigrationPolicy::Disabled),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MigrationPolicy::Bidirectional => "bidirectional",
            MigrationPolicy::Upgrade => "upgrade",
            MigrationPolicy::Downgrade => "downgrade",
            MigrationPolicy::Disabled => "disabled",
        }
    }

    pub fn upgrade(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade
        )
    }

    pub fn downgrade(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade
        )
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_partitions: 50,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_group_size: 1_000,
            max_groups: 100_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            max_metadata_bytes: 4_096,
            offsets_segment_bytes: 16 << 20,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_assignors: consumer::ASSIGNORS.to_vec(),
            migration_policy: MigrationPolicy::Bidirectional,
        }
    }
}

/// Longest group id accepted (Kafka has none; unbounded ids are unbounded memory).
pub const GROUP_ID_BYTES_MAX: usize = 1_024;
/// Upper bound on a rebalance timeout, against absurd values.
const REBALANCE_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);

/// A JoinGroup as the coordinator sees it (version differences already resolved).
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and a member id.
    pub require_known_member_id: bool,
}

/// One partition's offset to commit.
#[derive(Debug, Clone)]
pub struct CommitEntry {
    pub tp: TopicPartition,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// Either an answer now or one to wait for; `Option<Written<()>>`: records to wait for
/// before answering.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>, Option<Written<()>>),
}

/// A group operation's error: a Kafka error code (the runtime's errors are mapped by
/// `crate::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub i16);

impl From<RuntimeError> for ErrorCode {
    fn from(e: RuntimeError) -> Self {
        tracing::error!(error = %e, "cannot write {TOPIC}");
        ErrorCode(crate::error::runtime_error_code(&e))
    }
}

impl From<ResponseError> for ErrorCode {
    fn from(e: ResponseError) -> Self {
        ErrorCode(e.code())
    }
}

/// What a group operation hands the runtime.
type GroupOutcome<T> = Result<Outcome<StoredRecord, T>, ErrorCode>;

pub struct GroupCoordinator {
    config: GroupConfig,
    runtime: CoordinatorRuntime<GroupShard>,
    /// Every group's next deadline, so timers fire on time (see `timers`).
    timers: GroupTimers,
    /// GROUP resource configs: KIP-848 groups take their session timeout and heartbeat
    /// interval from here (shared with DescribeConfigs/AlterConfigs through `BrokerState`).
    group_configs: Arc<GroupConfigs>,
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn now_ms() -> i64 {
    crate::broker::now_ms()
}

/// The metadata record of a group as it is now.
fn group_record(g: &Group) -> StoredRecord {
    StoredRecord::Group {
        group: g.id.clone(),
        value: Some(g.to_value()),
    }
}

impl GroupCoordinator {
    /// Builds the coordinator over the offsets topic's logs and replays them.
    ///
    /// # Errors
    /// A record or batch of the offsets topic that cannot be read.
    pub fn load(
        config: GroupConfig,
        logs: Vec<Arc<Log>>,
    ) -> Result<GroupCoordinator, RuntimeError> {
        let count = Arc::new(AtomicUsize::new(0));
        let runtime = CoordinatorRuntime::load(logs, |_| GroupShard::new(count.clone()))?;
        let groups = count.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(groups, "consumer groups loaded");
        let defaults = GroupDefaults::new(
            config.consumer_session_timeout_ms,
            config.consumer_heartbeat_interval_ms,
        );
        Ok(GroupCoordinator {
            config,
            runtime,
            timers: GroupTimers::default(),
            group_configs: Arc::new(GroupConfigs::in_memory(defaults)),
        })
    }

    /// The coordinator reading `group_configs` (the persisted ones) instead of in-memory
    /// defaults.
    pub fn with_group_configs(mut self, group_configs: Arc<GroupConfigs>) -> GroupCoordinator {
        self.group_configs = group_configs;
        self
    }

    /// The per-group configs this coordinator reads.
    pub fn group_configs(&self) -> &Arc<GroupConfigs> {
        &self.group_configs
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn initial_delay(&self) -> Duration {
        Duration::from_millis(self.config.initial_rebalance_delay_ms)
    }

    /// The deadlines of every group (the timer task waits on them).
    pub fn timers(&self) -> &GroupTimers {
        &self.timers
    }

    /// INVALID_GROUP_ID for empty or oversized ids.
    pub fn validate_group_id(id: &str) -> Result<(), i16> {
        if id.is_empty() || id.len() > GROUP_ID_BYTES_MAX {
            return Err(code(ResponseError::InvalidGroupId));
        }
        Ok(())
    }

    /// Runs `op` on `group_id`'s shard (the runtime appends its records and replays them), then
    /// schedules the group's next deadline: whatever the operation changed (a join phase
    /// begun, a member added), its timers are then on time.
    fn write<T>(
        &self,
        group_id: &str,
        op: impl FnOnce(&mut GroupShard) -> GroupOutcome<T>,
    ) -> Result<Written<T>, ErrorCode> {
        let partition = self.runtime.partition_for(group_id);
        self.runtime.write(partition, |shard| {
            let result = op(shard);
            self.schedule(shard, group_id);
            result
        })
    }

    /// [`GroupCoordinator::write`] for operations that move no deadline earlier (a heartbeat
    /// at most): no rescheduling.
    fn write_unscheduled<T>(
        &self,
        group_id: &str,
        op: impl FnOnce(&mut GroupShard) -> GroupOutcome<T>,
    ) -> Result<Written<T>, ErrorCode> {
        self.runtime.write(self.runtime.partition_for(group_id), op)
    }

    fn schedule(&self, shard: &GroupShard, group_id: &str) {
        if let Some(at) = shard.group(group_id).and_then(Group::next_deadline) {
            self.timers.schedule(group_id, at);
        }
    }

    pub fn join(&self, req: JoinRequest, topics: &dyn TopicLookup) -> Reply<JoinOutcome> {
        let fail = |e: i16| Reply::Now(JoinOutcome::error(e, &req.member_id));
        if let Err(e) = Self::validate_group_id(&req.group_id) {
            return fail(e);
        }
        let c = &self.config;
        if req.session_timeout_ms < c.min_session_timeout_ms
            || req.session_timeout_ms > c.max_session_timeout_ms
        {
            return fail(code(ResponseError::InvalidSessionTimeout));
        }
        if req.rebalance_timeout_ms < 0 || req.protocols.is_empty() || req.protocol_type.is_empty()
        {
            return fail(if req.rebalance_timeout_ms < 0 {
                code(ResponseError::InvalidSessionTimeout)
            } else {
                code(ResponseError::InconsistentGroupProtocol)
            });
        }
        let written = self.write(&req.group_id, |shard| {
            let mut records = Vec::new();
            if let Some(cg) = shard.consumer_group(&req.group_id) {
                // A consumer group with members takes the classic member in (see `mixed`);
                // an empty one is removed first and the group starts over as classic.
                if !cg.members.is_empty() {
                    let (reply, records) = self.classic_join(shard, &req, topics)?;
                    return Ok(Outcome {
                        records,
                        response: reply,
                    });
                }
                records.extend(consumer_tombstones(&req.group_id));
            }
            let g = shard
                .group_or_create(&req.group_id, self.config.max_groups)
                .ok_or_else(|| {
                    tracing::warn!(
                        group = %req.group_id,
                        max = self.config.max_groups,
                        "refusing a new group: too many groups"
                    );
                    ErrorCode(code(ResponseError::CoordinatorNotAvailable))
                })?;
            let reply = self.join_group(g, &req, &mut records);
            Ok(Outcome {
                records,
                response: reply,
            })
        });
        match written {
            Err(ErrorCode(e)) => fail(e),
            Ok(w) => {
                let (reply, durable) = w.split();
                match reply {
                    Reply::Later(rx, None) if durable.wrote() => Reply::Later(rx, Some(durable)),
                    Reply::Now(outcome) if durable.wrote() => {
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send(outcome);
                        Reply::Later(rx, Some(durable))
                    }
                    reply => reply,
                }
            }
        }
    }

    /// JoinGroup on a locked group; records to write go to `records`.
    fn join_group(
        &self,
        g: &mut Group,
        req: &JoinRequest,
        records: &mut Vec<StoredRecord>,
    ) -> Reply<JoinOutcome> {
        let fail = |e: i16| Reply::Now(JoinOutcome::error(e, &req.member_id));
        if g.state == GroupState::Dead {
            return fail(code(ResponseError::CoordinatorNotAvailable));
        }
        if !g.accepts(&req.protocol_type, &req.protocols) {
            return fail(code(ResponseError::InconsistentGroupProtocol));
        }
        let now = timers::now();
        let session = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance = Duration::from_millis(req.rebalance_timeout_ms as u64)
            .clamp(session.min(REBALANCE_TIMEOUT_MAX), REBALANCE_TIMEOUT_MAX);
        let fresh_id = || {
            format!(
                "{}-{}",
                req.group_instance_id.as_deref().unwrap_or(&req.client_id),
                uuid::Uuid::new_v4()
            )
        };
        let member_id = if req.member_id.is_empty() {
            let id = fresh_id();
            if let Some(instance) = &req.group_instance_id {
                if let Some(old) = g.static_members.get(instance).cloned() {
                    return self.rejoin_static(g, req, &old, id, now, records);
                }
            } else if req.require_known_member_id {
                if g.pending_members.len() >= self.config.max_group_size {
                    return fail(code(ResponseError::GroupMaxSizeReached));
                }
                g.pending_members.insert(id.clone(), now + session);
                return Reply::Now(JoinOutcome::error(
                    code(ResponseError::MemberIdRequired),
                    &id,
                ));
            }
            id
        } else {
            if let Some(instance) = &req.group_instance_id {
                if g.static_members
                    .get(instance)
                    .is_some_and(|id| *id != req.member_id)
                {
                    return fail(code(ResponseError::FencedInstanceId));
                }
            }
            if !g.members.contains_key(&req.member_id)
                && g.pending_members.remove(&req.member_id).is_none()
            {
                return fail(code(ResponseError::UnknownMemberId));
            }
            req.member_id.clone()
        };
        let (tx, rx) = oneshot::channel();
        if let Some(m) = g.members.get_mut(&member_id) {
            let unchanged = m.protocols == req.protocols;
            m.protocols = req.protocols.clone();
            m.session_timeout = session;
            m.rebalance_timeout = rebalance;
            m.last_heartbeat = now;
            let is_leader = g.leader_id.as_deref() == Some(member_id.as_str());
            match g.state {
                GroupState::CompletingRebalance if unchanged => {
                    return Reply::Now(g.current_generation(&member_id))
                }
                GroupState::Stable if unchanged && !is_leader => {
                    return Reply::Now(g.current_generation(&member_id))
                }
                _ => {}
            }
            let m = g.members.get_mut(&member_id).expect("checked above");
            m.join_waiter = Some(tx);
        } else {
            if g.members.len() >= self.config.max_group_size {
                return fail(code(ResponseError::GroupMaxSizeReached));
            }
            if g.members.is_empty() {
                g.protocol_type = Some(req.protocol_type.clone());
            }
            if let Some(instance) = &req.group_instance_id {
                g.static_members.insert(instance.clone(), member_id.clone());
            }
            g.members.insert(
                member_id.clone(),
                new_member(req, &member_id, session, rebalance, now, tx),
            );
        }
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now, now_ms(), self.initial_delay());
        }
        self.after_join_phase(g, now, records);
        Reply::Later(rx, None)
    }

    /// A static member rejoining with a new member id (it restarted). In a stable group with
    /// unchanged protocols it takes over its old place and assignment with no rebalance
    /// (KIP-345); otherwise the group rebalances.
    fn rejoin_static(
        &self,
        g: &mut Group,
        req: &JoinRequest,
        old_id: &str,
        new_id: String,
        now: Instant,
        records: &mut Vec<StoredRecord>,
    ) -> Reply<JoinOutcome> {
        let Some(mut member) = g.members.remove(old_id) else {
            g.static_members
                .remove(req.group_instance_id.as_deref().unwrap_or_default());
            return Reply::Now(JoinOutcome::error(
                code(ResponseError::UnknownMemberId),
                &req.member_id,
            ));
        };
        // The old incarnation's parked requests are fenced.
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinOutcome::error(
                code(ResponseError::FencedInstanceId),
                old_id,
            ));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncOutcome::error(code(ResponseError::FencedInstanceId)));
        }
        member.member_id = new_id.clone();
        member.protocols = req.protocols.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.last_heartbeat = now;
        g.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.group_instance_id {
            g.static_members.insert(instance.clone(), new_id.clone());
        }
        if g.leader_id.as_deref() == Some(old_id) {
            g.leader_id = Some(new_id.clone());
        }
        // As Kafka: a restarted static member's metadata differs (its owned partitions are
        // gone), which is fine; only a change of the protocol the group would select next
        // needs a rebalance.
        let next_protocol = g.select_protocol();
        let same_protocol = next_protocol.is_some() && next_protocol == g.protocol_name;
        if g.state == GroupState::Stable && same_protocol {
            records.push(group_record(g));
            let mut outcome = g.current_generation(&new_id);
            // The leader need not compute assignments again.
            outcome.skip_assignment = g.leader_id.as_deref() == Some(new_id.as_str());
            return Reply::Now(outcome);
        }
        let (tx, rx) = oneshot::channel();
        g.members
            .get_mut(&new_id)
            .expect("inserted above")
            .join_waiter = Some(tx);
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now, now_ms(), self.initial_delay());
        }
        self.after_join_phase(g, now, records);
        Reply::Later(rx, None)
    }

    /// Completes the join phase if it can; an emptied group is persisted.
    fn after_join_phase(&self, g: &mut Group, now: Instant, records: &mut Vec<StoredRecord>) {
        let was = g.state;
        if g.maybe_complete_join(now, now_ms())
            && g.state == GroupState::Empty
            && was != GroupState::Empty
        {
            records.push(group_record(g));
        }
    }

    pub fn sync(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        topics: &dyn TopicLookup,
    ) -> Reply<SyncOutcome> {
        let fail = |e: i16| Reply::Now(SyncOutcome::error(e));
        let written = self.write(group_id, |shard| {
            if shard.consumer_group(group_id).is_some() {
                let outcome = self.classic_sync(
                    shard,
                    group_id,
                    generation_id,
                    member_id,
                    instance_id,
                    topics,
                )?;
                return Ok(Outcome::response(Reply::Now(outcome)));
            }
            let g = shard
                .group_mut(group_id)
                .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?;
            check_member(g, member_id, instance_id, generation_id).map_err(ErrorCode)?;
            let now = timers::now();
            let reply = match g.state {
                GroupState::Empty | GroupState::Dead => fail(code(ResponseError::UnknownMemberId)),
                GroupState::PreparingRebalance => fail(code(ResponseError::RebalanceInProgress)),
                GroupState::Stable => {
                    let m = &g.members[member_id];
                    Reply::Now(SyncOutcome {
                        error: 0,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    })
                }
                GroupState::CompletingRebalance => {
                    let (tx, rx) = oneshot::channel();
                    let m = g
                        .members
                        .get_mut(member_id)
                        .expect("checked by check_member");
                    m.sync_waiter = Some(tx);
                    m.last_heartbeat = now;
                    if g.leader_id.as_deref() != Some(member_id) {
                        return Ok(Outcome::response(Reply::Later(rx, None)));
                    }
                    g.complete_sync(assignments.into_iter().collect(), now_ms());
                    return Ok(Outcome {
                        records: vec![group_record(g)],
                        response: Reply::Later(rx, None),
                    });
                }
            };
            Ok(Outcome::response(reply))
        });
        match written {
            Err(ErrorCode(e)) => fail(e),
            Ok(w) => {
                let (reply, durable) = w.split();
                match reply {
                    Reply::Later(rx, None) if durable.wrote() => Reply::Later(rx, Some(durable)),
                    reply => reply,
                }
            }
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let written = self.write_unscheduled(group_id, |shard| {
            if shard.consumer_group(group_id).is_some() {
                let code =
                    self.classic_heartbeat(shard, group_id, generation_id, member_id, instance_id)?;
                return Ok(Outcome::response(code));
            }
            let g = shard
                .group_mut(group_id)
                .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?;
            check_member(g, member_id, instance_id, generation_id).map_err(ErrorCode)?;
            g.members
                .get_mut(member_id)
                .expect("checked by check_member")
                .last_heartbeat = timers::now();
            Ok(Outcome::response(match g.state {
                GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
                GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
                _ => 0,
            }))
        });
        match written {
            Ok(w) => *w.response(),
            Err(ErrorCode(e)) => e,
        }
    }

    /// LeaveGroup for each (member id, instance id); returns an error code per member and,
    /// when anything was written, the write to wait for before answering.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<(Vec<i16>, Option<Written<()>>), i16> {
        let written = self.write(group_id, |shard| {
            if shard.consumer_group(group_id).is_some() {
                let (codes, records) = self.classic_leave(shard, group_id, members)?;
                return Ok(Outcome {
                    records,
                    response: codes,
                });
            }
            let g = shard
                .group_mut(group_id)
                .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?;
            let mut results = Vec::with_capacity(members.len());
            let mut removed = false;
            for (member_id, instance) in members {
                let target = match instance {
                    Some(instance) => match g.static_members.get(instance) {
                        Some(id) if member_id.is_empty() || id == member_id => Some(id.clone()),
                        Some(_) => {
                            results.push(code(ResponseError::FencedInstanceId));
                            continue;
                        }
                        None => None,
                    },
                    None => Some(member_id.clone()),
                };
                match target {
                    Some(id) if g.remove_member(&id) => {
                        tracing::debug!(group = group_id, member = %id, "member left");
                        removed = true;
                        results.push(0);
                    }
                    _ => results.push(code(ResponseError::UnknownMemberId)),
                }
            }
            let mut records = Vec::new();
            if removed {
                self.after_members_removed(g, timers::now(), &mut records);
            }
            Ok(Outcome {
                records,
                response: results,
            })
        });
        // The caller answers once the emptied group's record is durable, as Kafka's
        // coordinator answers a write operation once its records are committed.
        written
            .map(|w| {
                let wrote = w.wrote();
                let (codes, pending) = w.split();
                (codes, wrote.then_some(pending))
            })
            .map_err(|ErrorCode(e)| e)
    }

    fn after_members_removed(&self, g: &mut Group, now: Instant, records: &mut Vec<StoredRecord>) {
        let was = g.state;
        g.on_members_removed(now, now_ms(), self.initial_delay());
        if g.state == GroupState::Empty && was != GroupState::Empty {
            records.push(group_record(g));
        }
    }

    /// OffsetCommit. Returns an error code per entry and, when anything was written, the
    /// write to wait for before answering.
    pub fn commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<CommitEntry>,
        topic_exists: impl Fn(&TopicPartition) -> bool,
    ) -> (Vec<i16>, Option<Written<()>>) {
        let n = entries.len();
        if let Err(e) = Self::validate_group_id(group_id) {
            return (vec![e; n], None);
        }
        let simple = generation_id < 0 && member_id.is_empty();
        let mut codes = Vec::with_capacity(n);
        let written = self.write_unscheduled(group_id, |shard| {
            if let Some(check) =
                Self::check_consumer_commit(shard, group_id, member_id, generation_id)
            {
                check?;
                let records = self.offset_records(group_id, entries, &topic_exists, &mut codes);
                return Ok(Outcome {
                    records,
                    response: (),
                });
            }
            let g = if simple {
                shard.group_or_create(group_id, self.config.max_groups)
            } else {
                shard.group_mut(group_id)
            };
            let g = g.ok_or(ErrorCode(code(if simple {
                ResponseError::CoordinatorNotAvailable
            } else {
                ResponseError::UnknownMemberId
            })))?;
            if g.state == GroupState::Dead {
                return Err(ErrorCode(code(ResponseError::CoordinatorNotAvailable)));
            }
            if simple {
                if !g.is_empty() {
                    return Err(ErrorCode(code(ResponseError::UnknownMemberId)));
                }
            } else {
                check_member(g, member_id, instance_id, generation_id).map_err(ErrorCode)?;
                if matches!(
                    g.state,
                    GroupState::PreparingRebalance | GroupState::CompletingRebalance
                ) {
                    return Err(ErrorCode(code(ResponseError::RebalanceInProgress)));
                }
                g.members
                    .get_mut(member_id)
                    .expect("checked by check_member")
                    .last_heartbeat = timers::now();
            }
            let records = self.offset_records(group_id, entries, &topic_exists, &mut codes);
            Ok(Outcome {
                records,
                response: (),
            })
        });
        finish_commit(written, codes, n)
    }

    /// The records of the acceptable entries, with a code per entry in `codes`.
    fn offset_records(
        &self,
        group_id: &str,
        entries: Vec<CommitEntry>,
        topic_exists: &impl Fn(&TopicPartition) -> bool,
        codes: &mut Vec<i16>,
    ) -> Vec<StoredRecord> {
        let now = now_ms();
        let mut records = Vec::new();
        for e in entries {
            if e.metadata.len() > self.config.max_metadata_bytes {
                codes.push(code(ResponseError::OffsetMetadataTooLarge));
            } else if !topic_exists(&e.tp) {
                codes.push(code(ResponseError::UnknownTopicOrPartition));
            } else {
                codes.push(0);
                records.push(StoredRecord::Offset {
                    group: group_id.to_string(),
                    tp: e.tp,
                    value: Some(OffsetValue {
                        offset: e.offset,
                        leader_epoch: e.leader_epoch,
                        metadata: e.metadata,
                        commit_timestamp_ms: now,
                    }),
                });
            }
        }
        records
    }

    /// TxnOffsetCommit: the offsets are written in a transactional batch of the producer and
    /// stay pending (invisible to OffsetFetch) until the transaction's commit marker makes
    /// them the group's committed offsets; an abort marker drops them. Member checks are
    /// Kafka's for transactional commits (v3+ carries the member; older versions send none).
    ///
    /// `txn_holds_group` is the transaction coordinator's answer to "did this producer's open
    /// transaction add the group (AddOffsetsToTxn)?"; it runs under the group's lock, before
    /// anything is written, and its error code answers every entry.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_transactional(
        &self,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        member: &TxnMember<'_>,
        entries: Vec<CommitEntry>,
        topic_exists: impl Fn(&TopicPartition) -> bool,
        txn_holds_group: impl FnOnce() -> Result<(), i16>,
    ) -> (Vec<i16>, Option<Written<()>>) {
        let n = entries.len();
        if let Err(e) = Self::validate_group_id(group_id) {
            return (vec![e; n], None);
        }
        let mut codes = Vec::with_capacity(n);
        let partition = self.runtime.partition_for(group_id);
        let written =
            self.runtime
                .write_transactional(partition, producer_id, producer_epoch, |shard| {
                    // Kafka: an unknown group is created for a "simple" commit (no
                    // generation), else ILLEGAL_GENERATION.
                    if shard.group(group_id).is_none() && member.generation_id >= 0 {
                        return Err(ErrorCode(code(ResponseError::IllegalGeneration)));
                    }
                    let g = shard
                        .group_or_create(group_id, self.config.max_groups)
                        .ok_or(ErrorCode(code(ResponseError::CoordinatorNotAvailable)))?;
                    check_txn_member(g, member).map_err(ErrorCode)?;
                    txn_holds_group().map_err(ErrorCode)?;
                    let records = self.offset_records(group_id, entries, &topic_exists, &mut codes);
                    Ok(Outcome {
                        records,
                        response: (),
                    })
                });
        finish_commit(written, codes, n)
    }

    /// Writes a transaction's commit/abort marker to `__consumer_offsets` partition
    /// `partition` (the transaction coordinator's markers for the offsets topic go here, not
    /// straight to storage): the shard makes the producer's pending offsets committed, or
    /// drops them, as it replays the marker.
    ///
    /// # Errors
    /// No such partition, or the append's (a stale epoch, a storage failure).
    pub fn write_marker(
        &self,
        partition: i32,
        marker: &rill_storage::TxnMarker,
    ) -> Result<Written<()>, RuntimeError> {
        self.runtime.write_marker(partition, marker)
    }

    /// The `__consumer_offsets` partition of `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        self.runtime.partition_for(group_id)
    }

    /// Committed offsets of `group_id`: for the given partitions, or all when `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<Committed>)> {
        self.fetch_offsets_checked(group_id, partitions, false)
            .into_iter()
            .map(|(tp, c, _)| (tp, c))
            .collect()
    }

    /// [`GroupCoordinator::fetch_offsets`] with an error code per partition: with
    /// `require_stable` (OffsetFetch v7+), a partition whose offset an open transaction holds
    /// is UNSTABLE_OFFSET_COMMIT (and no offset), as in Kafka.
    pub fn fetch_offsets_checked(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
        require_stable: bool,
    ) -> Vec<(TopicPartition, Option<Committed>, i16)> {
        let partition = self.runtime.partition_for(group_id);
        self.runtime.read(partition, |shard| {
            let g = shard.group(group_id);
            let answer = |tp: &TopicPartition, c: Option<&Committed>| {
                if require_stable && shard.has_pending_txn_offset(group_id, tp) {
                    (tp.clone(), None, code(ResponseError::UnstableOffsetCommit))
                } else {
                    (tp.clone(), c.cloned(), 0)
                }
            };
            match partitions {
                Some(tps) => tps
                    .iter()
                    .map(|tp| answer(tp, g.and_then(|g| g.offsets.get(tp))))
                    .collect(),
                None => {
                    let mut all: Vec<_> = g
                        .map(|g| {
                            g.offsets
                                .iter()
                                .map(|(tp, c)| answer(tp, Some(c)))
                                .collect()
                        })
                        .unwrap_or_default();
                    all.sort_by(|a, b| a.0.cmp(&b.0));
                    all
                }
            }
        })
    }

    /// Partitions of `group_id` with offsets pending in an open transaction.
    pub fn pending_txn_partitions(&self, group_id: &str) -> Vec<TopicPartition> {
        let partition = self.runtime.partition_for(group_id);
        self.runtime
            .read(partition, |shard| shard.pending_txn_partitions(group_id))
    }

    /// Every live group, classic and consumer (KIP-848), sorted by id.
    pub fn list(&self) -> Vec<ListedGroup> {
        let mut out = Vec::new();
        for p in 0..self.runtime.partition_count() {
            self.runtime.read(p, |shard| {
                out.extend(
                    shard
                        .groups()
                        .filter(|g| {
                            g.state != GroupState::Dead && shard.consumer_group(&g.id).is_none()
                        })
                        .map(|g| ListedGroup {
                            id: g.id.clone(),
                            protocol_type: g.protocol_type.clone().unwrap_or_default(),
                            state: g.state.name(),
                            group_type: "classic",
                        }),
                );
                out.extend(shard.consumer_groups().map(|g| ListedGroup {
                    id: g.id.clone(),
                    protocol_type: "consumer".to_string(),
                    state: g.state().name(),
                    group_type: "consumer",
                }));
            });
        }
        out.sort();
        out
    }

    /// Runs `f` on a group, if it exists.
    pub fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&Group) -> T) -> Option<T> {
        let partition = self.runtime.partition_for(group_id);
        self.runtime
            .read(partition, |shard| shard.group(group_id).map(f))
    }

    /// DeleteGroups for one group (after any deadline that has passed: a member whose session
    /// just ended no longer keeps the group from being empty).
    pub fn delete_group(&self, group_id: &str) -> (i16, Option<Written<()>>) {
        self.fire_if_due(group_id, timers::now());
        let written = self.write(group_id, |shard| {
            if let Some(cg) = shard.consumer_group(group_id) {
                if !cg.members.is_empty() {
                    return Err(ErrorCode(code(ResponseError::NonEmptyGroup)));
                }
                let mut records = consumer_tombstones(group_id);
                tombstone_all(shard, group_id, &mut records);
                return Ok(Outcome {
                    records,
                    response: (),
                });
            }
            let g = shard
                .group_mut(group_id)
                .filter(|g| g.state != GroupState::Dead)
                .ok_or(ErrorCode(code(ResponseError::GroupIdNotFound)))?;
            // Deadlines that have passed count even if the timer task has not run them yet: a
            // member whose session ended a moment ago is gone, as on Kafka.
            let mut records = Vec::new();
            self.run_timers(g, timers::now(), now_ms(), &mut records);
            if !g.is_empty() {
                return Err(ErrorCode(code(ResponseError::NonEmptyGroup)));
            }
            // Replaying the group's tombstone removes it.
            tombstone_all(shard, group_id, &mut records);
            Ok(Outcome {
                records,
                response: (),
            })
        });
        match written {
            Ok(w) => (0, Some(w)),
            Err(ErrorCode(e)) => (e, None),
        }
    }

    /// OffsetDelete: per-partition codes, or a group-level error.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        tps: &[TopicPartition],
    ) -> Result<(Vec<i16>, Option<Written<()>>), i16> {
        let mut codes = Vec::with_capacity(tps.len());
        let written = self.write_unscheduled(group_id, |shard| {
            let g = shard
                .group(group_id)
                .filter(|g| g.state != GroupState::Dead)
                .ok_or(ErrorCode(code(ResponseError::GroupIdNotFound)))?;
            let consumer = shard.consumer_group(group_id);
            let subscribed = if let Some(cg) = consumer.filter(|cg| !cg.members.is_empty()) {
                // A KIP-848 group: the topics its members subscribe to by name, or every
                // topic when one subscribes by pattern (as unknown subscriptions are treated).
                if cg
                    .members
                    .values()
                    .any(|m| m.meta.subscribed_topic_regex.is_some())
                {
                    None
                } else {
                    Some(
                        cg.members
                            .values()
                            .flat_map(|m| m.meta.subscribed_topic_names.iter().cloned())
                            .collect(),
                    )
                }
            } else if g.is_empty() {
                Some(Vec::new())
            } else {
                g.subscribed_topics()
            };
            let mut records = Vec::new();
            for tp in tps {
                let in_use = subscribed
                    .as_ref()
                    .is_none_or(|topics| topics.contains(&tp.topic));
                if in_use {
                    codes.push(code(ResponseError::GroupSubscribedToTopic));
                } else {
                    codes.push(0);
                    if g.offsets.contains_key(tp) || shard.has_pending_txn_offset(group_id, tp) {
                        records.push(StoredRecord::Offset {
                            group: g.id.clone(),
                            tp: tp.clone(),
                            value: None,
                        });
                    }
                }
            }
            Ok(Outcome {
                records,
                response: (),
            })
        });
        match written {
            Ok(w) => Ok((codes, w.wrote().then_some(w))),
            // A failed append: every partition that would have been deleted gets its code.
            Err(ErrorCode(e)) if !codes.is_empty() => Ok((
                codes
                    .into_iter()
                    .map(|c| if c == 0 { e } else { c })
                    .collect(),
                None,
            )),
            Err(ErrorCode(e)) => Err(e),
        }
    }

    /// Fires the timers of every group whose deadline has come (the timer task calls this at
    /// the earliest deadline, see `timers`). Bounded per call; the rest stay due.
    pub fn fire_due(&self, now: Instant) {
        const MAX_GROUPS_PER_CALL: usize = 1024;
        let wall = now_ms();
        for id in self.timers.take_due(now, MAX_GROUPS_PER_CALL) {
            self.fire(&id, now, wall);
        }
    }

    /// Fires `group_id`'s timers if one of its deadlines has passed by `now`, whether or not
    /// the timer task has run yet: DescribeGroups and DeleteGroups see the group as it is at
    /// the moment they are answered, exactly at its deadline, even when the timer task is
    /// scheduled a few milliseconds late on a loaded machine. (Its heap entry stays; firing it
    /// later finds nothing due.)
    pub fn fire_if_due(&self, group_id: &str, now: Instant) {
        let due = self
            .with_group(group_id, |g| g.next_deadline().is_some_and(|d| d <= now))
            .unwrap_or(false);
        if due {
            self.fire(group_id, now, now_ms());
        }
    }

    fn fire(&self, group_id: &str, now: Instant, wall: i64) {
        let written = self.write(group_id, |shard| {
            let mut records = Vec::new();
            if let Some(g) = shard.group_mut(group_id) {
                self.run_timers(g, now, wall, &mut records);
            }
            Ok(Outcome {
                records,
                response: (),
            })
        });
        // An emptied group's record is not waited for: no request waits on a timer.
        drop(written);
    }

    /// What the passage of time does to one group: pending member ids expire, a join phase
    /// completes at its deadline (or when its initial delay ends), members that did not sync
    /// in time are dropped, silent members' sessions end.
    fn run_timers(&self, g: &mut Group, now: Instant, wall: i64, records: &mut Vec<StoredRecord>) {
        g.pending_members.retain(|_, deadline| *deadline > now);
        match g.state {
            GroupState::PreparingRebalance => self.after_join_phase(g, now, records),
            GroupState::CompletingRebalance if g.deadline.is_some_and(|d| now >= d) => {
                let unsynced: Vec<String> = g
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                for id in &unsynced {
                    tracing::info!(group = %g.id, member = %id, "member did not sync in time; removed");
                    g.remove_member(id);
                }
                if unsynced.is_empty() {
                    // The leader never sent its assignment: start over.
                    g.prepare_rebalance(now, wall, self.initial_delay());
                } else {
                    self.after_members_removed(g, now, records);
                }
            }
            _ => {}
        }
        let expired = g.expired_members(now);
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %g.id, member = %id, "session timed out; member removed");
                g.remove_member(id);
            }
            self.after_members_removed(g, now, records);
        }
    }

    /// The periodic sweep, every ~100 ms: a safety net for the deadline timers, and offset
    /// retention of empty groups (not of a group an open transaction holds offsets of).
    pub fn tick(&self, topics: &dyn TopicLookup) {
        let now = timers::now();
        let wall = now_ms();
        for p in 0..self.runtime.partition_count() {
            let written = self.runtime.write(p, |shard| {
                let mut records = Vec::new();
                let mut expired = Vec::new();
                self.expire_consumer_members(shard, now, topics, &mut records);
                for g in shard.groups_mut() {
                    self.run_timers(g, now, wall, &mut records);
                    if g.state == GroupState::Empty
                        && wall - g.state_timestamp_ms > self.config.offsets_retention_ms
                    {
                        expired.push(g.id.clone());
                    }
                }
                // KIP-848 groups: retention counts from when the group emptied (the classic
                // entry that holds their offsets has no membership of its own).
                for cg in shard.consumer_groups_mut() {
                    if !cg.members.is_empty() {
                        cg.empty_since_ms = None;
                        continue;
                    }
                    let since = *cg.empty_since_ms.get_or_insert(wall);
                    if wall - since > self.config.offsets_retention_ms {
                        expired.push(cg.id.clone());
                    }
                }
                expired.sort();
                expired.dedup();
                for id in expired {
                    let consumer = shard.consumer_group(&id);
                    let consumer_expired = consumer.is_some_and(|cg| {
                        cg.members.is_empty()
                            && cg
                                .empty_since_ms
                                .is_some_and(|s| wall - s > self.config.offsets_retention_ms)
                    });
                    if consumer.is_some() && !consumer_expired {
                        continue;
                    }
                    if !shard.has_pending_txn(&id) {
                        tracing::info!(group = %id, "offsets expired (offsets.retention.minutes)");
                        if consumer.is_some() {
                            records.extend(consumer_tombstones(&id));
                        }
                        tombstone_all(shard, &id, &mut records);
                    }
                }
                let ids: Vec<String> = shard.groups().map(|g| g.id.clone()).collect();
                for id in ids {
                    self.schedule(shard, &id);
                }
                Ok::<_, ErrorCode>(Outcome {
                    records,
                    response: (),
                })
            });
            if let Err(ErrorCode(e)) = written {
                tracing::warn!(partition = p, code = e, "group sweep could not write");
            }
        }
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedGroup {
    pub id: String,
    pub protocol_type: String,
    /// Kafka's state name (classic: `Stable`, `PreparingRebalance`...; consumer: `Empty`,
    /// `Assigning`, `Reconciling`, `Stable`).
    pub state: &'static str,
    /// `classic` or `consumer` (ListGroups v5's group type).
    pub group_type: &'static str,
}

/// The records that remove a consumer group's own state (its members are gone already):
/// the target assignment epoch and the group epoch.
fn consumer_tombstones(group_id: &str) -> Vec<StoredRecord> {
    use consumer_records::ConsumerRecord;
    vec![
        StoredRecord::Consumer(ConsumerRecord::TargetEpoch {
            group: group_id.to_string(),
            epoch: None,
        }),
        StoredRecord::Consumer(ConsumerRecord::GroupEpoch {
            group: group_id.to_string(),
            epoch: None,
        }),
    ]
}

/// Codes per entry of an offset commit, with a failed append's code on the accepted ones.
fn finish_commit(
    written: Result<Written<()>, ErrorCode>,
    codes: Vec<i16>,
    n: usize,
) -> (Vec<i16>, Option<Written<()>>) {
    match written {
        Ok(w) => (codes, w.wrote().then_some(w)),
        // The operation refused before looking at entries: one code for all.
        Err(ErrorCode(e)) if codes.is_empty() => (vec![e; n], None),
        Err(ErrorCode(e)) => (
            codes
                .into_iter()
                .map(|c| if c == 0 { e } else { c })
                .collect(),
            None,
        ),
    }
}

/// Tombstones of every offset of `group_id` (pending transactional ones too) and of the group
/// itself: replayed, they remove the group.
fn tombstone_all(shard: &GroupShard, group_id: &str, records: &mut Vec<StoredRecord>) {
    let mut tps: Vec<TopicPartition> = shard
        .group(group_id)
        .map(|g| g.offsets.keys().cloned().collect())
        .unwrap_or_default();
    tps.extend(shard.pending_txn_partitions(group_id));
    tps.sort();
    tps.dedup();
    records.extend(tps.into_iter().map(|tp| StoredRecord::Offset {
        group: group_id.to_string(),
        tp,
        value: None,
    }));
    records.push(StoredRecord::Group {
        group: group_id.to_string(),
        value: None,
    });
}

fn new_member(
    req: &JoinRequest,
    member_id: &str,
    session: Duration,
    rebalance: Duration,
    now: Instant,
    tx: oneshot::Sender<JoinOutcome>,
) -> Member {
    Member {
        member_id: member_id.to_string(),
        group_instance_id: req.group_instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        last_heartbeat: now,
        join_waiter: Some(tx),
        sync_waiter: None,
    }
}

/// UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID or ILLEGAL_GENERATION, as Kafka checks them.
fn check_member(
    g: &Group,
    member_id: &str,
    instance_id: Option<&str>,
    generation_id: i32,
) -> Result<(), i16> {
    if let Some(instance) = instance_id {
        if g.static_members
            .get(instance)
            .is_some_and(|id| id != member_id)
        {
            return Err(code(ResponseError::FencedInstanceId));
        }
    }
    if !g.members.contains_key(member_id) {
        return Err(code(ResponseError::UnknownMemberId));
    }
    if generation_id != g.generation_id {
        return Err(code(ResponseError::IllegalGeneration));
    }
    Ok(())
}

/// The member fields of a TxnOffsetCommit (v3+; older versions send generation -1 and no
/// member).
#[derive(Debug, Clone, Copy)]
pub struct TxnMember<'a> {
    pub generation_id: i32,
    pub member_id: &'a str,
    pub group_instance_id: Option<&'a str>,
}

/// Kafka's `ClassicGroup.validateOffsetCommit` for a transactional commit: a dead group is
/// COORDINATOR_NOT_AVAILABLE; no generation on an empty group is a simple commit; a request
/// naming a member must name a current one of the current generation; with no member at all
/// (versions before 3) any state is accepted; rebalances do not refuse it.
fn check_txn_member(g: &Group, m: &TxnMember<'_>) -> Result<(), i16> {
    if g.state == GroupState::Dead {
        return Err(code(ResponseError::CoordinatorNotAvailable));
    }
    if m.generation_id < 0 && g.state == GroupState::Empty {
        return Ok(());
    }
    if m.generation_id >= 0 || !m.member_id.is_empty() || m.group_instance_id.is_some() {
        match m.group_instance_id {
            Some(instance) => match g.static_members.get(instance) {
                None => return Err(code(ResponseError::UnknownMemberId)),
                Some(id) if id != m.member_id => return Err(code(ResponseError::FencedInstanceId)),
                Some(_) => {}
            },
            None if !g.members.contains_key(m.member_id) => {
                return Err(code(ResponseError::UnknownMemberId))
            }
            None => {}
        }
        if m.generation_id != g.generation_id {
            return Err(code(ResponseError::IllegalGeneration));
        }
    }
    Ok(())
}

/// Waits for a write to `__consumer_offsets` to be durable (the data directory's group
/// commit), without holding a thread: storage's flusher calls back.
pub async fn durable(written: Option<Written<()>>) -> Result<(), i16> {
    match written {
        None => Ok(()),
        Some(w) => w
            .committed()
            .await
            .map_err(|e| crate::error::runtime_error_code(&e)),
    }
}

#[cfg(test)]
mod tests;
