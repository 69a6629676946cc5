//! The group coordinator (Kafka's `GroupCoordinator` for the classic protocol) on a single
//! node: every group is coordinated here. Groups live in memory; every offset commit and every
//! settled group is appended to `__consumer_offsets` and replayed at start-up.
//!
//! Concurrency: a map of groups, each behind its own mutex that is never held across an
//! await, so a rebalance of one group never blocks another group or produce/fetch traffic.
//! JoinGroup and SyncGroup park on oneshot channels; whichever request (or the timer task)
//! completes the phase answers them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use parking_lot::{Mutex, MutexGuard};
use rill_storage::{Log, TopicPartition};
use tokio::sync::oneshot;

use crate::group::{Committed, Group, GroupState, JoinOutcome, Member, SyncOutcome};
use crate::group_timers::GroupTimers;
use crate::offsets_log::{self, OffsetValue, OffsetsLogError, StoredRecord};

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

/// Where a write to `__consumer_offsets` ended, to wait for its durability outside locks.
pub struct PendingWrite {
    pub log: Arc<Log>,
    pub end_offset: i64,
}

/// Either an answer now or one to wait for.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>, Option<PendingWrite>),
}

pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    /// The offsets topic's partition logs, by partition.
    logs: Vec<Arc<Log>>,
    /// Every group's next deadline, so timers fire on time (see `group_timers`).
    timers: GroupTimers,
}

/// A locked group that, when released, schedules the group's next deadline: whatever an
/// operation changed (a join phase begun, a member added), its timers are then on time.
struct Scheduled<'a> {
    group: MutexGuard<'a, Group>,
    timers: &'a GroupTimers,
}

impl std::ops::Deref for Scheduled<'_> {
    type Target = Group;
    fn deref(&self) -> &Group {
        &self.group
    }
}

impl std::ops::DerefMut for Scheduled<'_> {
    fn deref_mut(&mut self) -> &mut Group {
        &mut self.group
    }
}

impl Drop for Scheduled<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.group.next_deadline() {
            self.timers.schedule(&self.group.id, at);
        }
    }
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn now_ms() -> i64 {
    crate::broker::now_ms()
}

impl GroupCoordinator {
    /// Builds the coordinator over the offsets topic's logs and replays them.
    ///
    /// # Errors
    /// A record or batch of the offsets topic that cannot be read.
    pub fn load(
        config: GroupConfig,
        logs: Vec<Arc<Log>>,
    ) -> Result<GroupCoordinator, OffsetsLogError> {
        let now = crate::group_timers::now();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut records = 0usize;
        for log in &logs {
            for record in offsets_log::replay(log)? {
                records += 1;
                match record {
                    StoredRecord::Offset { group, tp, value } => {
                        let g = groups
                            .entry(group.clone())
                            .or_insert_with(|| Group::new(&group, now_ms()));
                        match value {
                            Some(v) => {
                                g.offsets.insert(tp, v.into());
                            }
                            None => {
                                g.offsets.remove(&tp);
                            }
                        }
                    }
                    StoredRecord::Group {
                        group,
                        value: Some(v),
                    } => {
                        groups
                            .entry(group.clone())
                            .or_insert_with(|| Group::new(&group, now_ms()))
                            .restore(v, now);
                    }
                    StoredRecord::Group { group, value: None } => {
                        if let Some(g) = groups.get_mut(&group) {
                            g.members.clear();
                            g.static_members.clear();
                            g.state = GroupState::Empty;
                        }
                    }
                }
            }
        }
        groups.retain(|_, g| {
            !g.offsets.is_empty() || !g.members.is_empty() || g.protocol_type.is_some()
        });
        tracing::info!(groups = groups.len(), records, "consumer groups loaded");
        Ok(GroupCoordinator {
            config,
            groups: Mutex::new(
                groups
                    .into_iter()
                    .map(|(k, g)| (k, Arc::new(Mutex::new(g))))
                    .collect(),
            ),
            logs,
            timers: GroupTimers::default(),
        })
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn initial_delay(&self) -> Duration {
        Duration::from_millis(self.config.initial_rebalance_delay_ms)
    }

    /// Locks a group for an operation that may move its deadlines.
    fn lock<'a>(&'a self, group: &'a Mutex<Group>) -> Scheduled<'a> {
        Scheduled {
            group: group.lock(),
            timers: &self.timers,
        }
    }

    /// The deadlines of every group (the timer task waits on them).
    pub fn timers(&self) -> &GroupTimers {
        &self.timers
    }

    fn group(&self, id: &str) -> Option<Arc<Mutex<Group>>> {
        self.groups.lock().get(id).cloned()
    }

    fn group_or_create(&self, id: &str) -> Result<Arc<Mutex<Group>>, i16> {
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get(id) {
            return Ok(g.clone());
        }
        if groups.len() >= self.config.max_groups {
            tracing::warn!(
                group = id,
                max = self.config.max_groups,
                "refusing a new group: too many groups"
            );
            return Err(code(ResponseError::CoordinatorNotAvailable));
        }
        let g = Arc::new(Mutex::new(Group::new(id, now_ms())));
        groups.insert(id.to_string(), g.clone());
        Ok(g)
    }

    /// INVALID_GROUP_ID for empty or oversized ids.
    pub fn validate_group_id(id: &str) -> Result<(), i16> {
        if id.is_empty() || id.len() > GROUP_ID_BYTES_MAX {
            return Err(code(ResponseError::InvalidGroupId));
        }
        Ok(())
    }

    fn log_for(&self, group: &str) -> &Arc<Log> {
        &self.logs[offsets_log::partition_for(group, self.logs.len() as i32) as usize]
    }

    /// Appends records of `group` to its offsets partition. Called with the group's lock held
    /// so the log's order is the order of changes; the append itself is a page-cache write.
    fn append(&self, group: &str, records: &[StoredRecord]) -> Result<PendingWrite, i16> {
        let log = self.log_for(group).clone();
        let batch = offsets_log::encode_batch(records, now_ms()).map_err(|e| {
            tracing::error!(group, error = %e, "cannot encode offsets records");
            code(ResponseError::UnknownServerError)
        })?;
        match log.append(&batch) {
            Ok(info) => Ok(PendingWrite {
                log,
                end_offset: info.last_offset + 1,
            }),
            Err(e) => {
                tracing::error!(group, error = %e, "cannot write {}", offsets_log::TOPIC);
                Err(crate::error::storage_error_code(&e))
            }
        }
    }

    fn persist_group(&self, g: &Group) -> Option<PendingWrite> {
        let record = StoredRecord::Group {
            group: g.id.clone(),
            value: Some(g.to_value()),
        };
        self.append(&g.id, &[record]).ok()
    }

    pub fn join(&self, req: JoinRequest) -> Reply<JoinOutcome> {
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
        let group = match self.group_or_create(&req.group_id) {
            Ok(g) => g,
            Err(e) => return fail(e),
        };
        let mut g = self.lock(&group);
        if g.state == GroupState::Dead {
            return fail(code(ResponseError::CoordinatorNotAvailable));
        }
        if !g.accepts(&req.protocol_type, &req.protocols) {
            return fail(code(ResponseError::InconsistentGroupProtocol));
        }
        let now = crate::group_timers::now();
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
                    return self.rejoin_static(&mut g, &req, &old, id, now);
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
                new_member(&req, &member_id, session, rebalance, now, tx),
            );
        }
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now, now_ms(), self.initial_delay());
        }
        self.after_join_phase(&mut g, now);
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
            let pending = self.persist_group(g);
            let mut outcome = g.current_generation(&new_id);
            // The leader need not compute assignments again.
            outcome.skip_assignment = g.leader_id.as_deref() == Some(new_id.as_str());
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(outcome);
            return Reply::Later(rx, pending);
        }
        let (tx, rx) = oneshot::channel();
        g.members
            .get_mut(&new_id)
            .expect("inserted above")
            .join_waiter = Some(tx);
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now, now_ms(), self.initial_delay());
        }
        self.after_join_phase(g, now);
        Reply::Later(rx, None)
    }

    /// Completes the join phase if it can, persisting an emptied group.
    fn after_join_phase(&self, g: &mut Group, now: Instant) {
        let was = g.state;
        if g.maybe_complete_join(now, now_ms())
            && g.state == GroupState::Empty
            && was != GroupState::Empty
        {
            self.persist_group(g);
        }
    }

    pub fn sync(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncOutcome> {
        let fail = |e: i16| Reply::Now(SyncOutcome::error(e));
        let Some(group) = self.group(group_id) else {
            return fail(code(ResponseError::UnknownMemberId));
        };
        let mut g = self.lock(&group);
        if let Err(e) = check_member(&g, member_id, instance_id, generation_id) {
            return fail(e);
        }
        let now = crate::group_timers::now();
        match g.state {
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
                    return Reply::Later(rx, None);
                }
                g.complete_sync(assignments.into_iter().collect(), now_ms());
                let pending = self.persist_group(&g);
                Reply::Later(rx, pending)
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
        let Some(group) = self.group(group_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        let mut g = group.lock();
        if let Err(e) = check_member(&g, member_id, instance_id, generation_id) {
            return e;
        }
        g.members
            .get_mut(member_id)
            .expect("checked by check_member")
            .last_heartbeat = crate::group_timers::now();
        match g.state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            _ => 0,
        }
    }

    /// LeaveGroup for each (member id, instance id); returns an error code per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, i16> {
        let group = self
            .group(group_id)
            .ok_or(code(ResponseError::UnknownMemberId))?;
        let mut g = self.lock(&group);
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
        if removed {
            self.after_members_removed(&mut g, crate::group_timers::now());
        }
        Ok(results)
    }

    fn after_members_removed(&self, g: &mut Group, now: Instant) {
        let was = g.state;
        g.on_members_removed(now, now_ms(), self.initial_delay());
        if g.state == GroupState::Empty && was != GroupState::Empty {
            self.persist_group(g);
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
    ) -> (Vec<i16>, Option<PendingWrite>) {
        let all = |e: i16| (vec![e; entries.len()], None);
        if let Err(e) = Self::validate_group_id(group_id) {
            return all(e);
        }
        let simple = generation_id < 0 && member_id.is_empty();
        let group = if simple {
            self.group_or_create(group_id)
        } else {
            self.group(group_id)
                .ok_or(code(ResponseError::UnknownMemberId))
        };
        let group = match group {
            Ok(g) => g,
            Err(e) => return all(e),
        };
        // Moves no deadline earlier (a heartbeat at most): no rescheduling, as for Heartbeat.
        let mut g = group.lock();
        if g.state == GroupState::Dead {
            return all(code(ResponseError::CoordinatorNotAvailable));
        }
        if simple {
            if !g.is_empty() {
                return all(code(ResponseError::UnknownMemberId));
            }
        } else {
            if let Err(e) = check_member(&g, member_id, instance_id, generation_id) {
                return all(e);
            }
            if matches!(
                g.state,
                GroupState::PreparingRebalance | GroupState::CompletingRebalance
            ) {
                return all(code(ResponseError::RebalanceInProgress));
            }
            g.members
                .get_mut(member_id)
                .expect("checked by check_member")
                .last_heartbeat = crate::group_timers::now();
        }
        let now = now_ms();
        let mut codes = Vec::with_capacity(entries.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for e in entries {
            if e.metadata.len() > self.config.max_metadata_bytes {
                codes.push(code(ResponseError::OffsetMetadataTooLarge));
            } else if !topic_exists(&e.tp) {
                codes.push(code(ResponseError::UnknownTopicOrPartition));
            } else {
                codes.push(0);
                let value = OffsetValue {
                    offset: e.offset,
                    leader_epoch: e.leader_epoch,
                    metadata: e.metadata,
                    commit_timestamp_ms: now,
                };
                records.push(StoredRecord::Offset {
                    group: group_id.to_string(),
                    tp: e.tp.clone(),
                    value: Some(value.clone()),
                });
                accepted.push((e.tp, Committed::from(value)));
            }
        }
        if records.is_empty() {
            return (codes, None);
        }
        match self.append(group_id, &records) {
            Ok(pending) => {
                // Applied with the append, under the group lock: memory and log agree.
                g.offsets.extend(accepted);
                (codes, Some(pending))
            }
            Err(e) => (
                codes
                    .into_iter()
                    .map(|c| if c == 0 { e } else { c })
                    .collect(),
                None,
            ),
        }
    }

    /// Committed offsets of `group_id`: for the given partitions, or all when `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<Committed>)> {
        let group = self.group(group_id);
        let g = group.as_ref().map(|g| g.lock());
        match partitions {
            Some(tps) => tps
                .iter()
                .map(|tp| {
                    (
                        tp.clone(),
                        g.as_ref().and_then(|g| g.offsets.get(tp).cloned()),
                    )
                })
                .collect(),
            None => {
                let mut all: Vec<_> = g
                    .map(|g| {
                        g.offsets
                            .iter()
                            .map(|(tp, c)| (tp.clone(), Some(c.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
        }
    }

    /// (group id, protocol type, state) of every live group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        let mut out: Vec<_> = groups
            .iter()
            .map(|g| {
                let g = g.lock();
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .filter(|(_, _, s)| *s != GroupState::Dead)
            .collect();
        out.sort();
        out
    }

    /// Runs `f` on a group, if it exists.
    pub fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&Group) -> T) -> Option<T> {
        self.group(group_id).map(|g| f(&g.lock()))
    }

    /// DeleteGroups for one group.
    pub fn delete_group(&self, group_id: &str) -> (i16, Option<PendingWrite>) {
        let Some(group) = self.group(group_id) else {
            return (code(ResponseError::GroupIdNotFound), None);
        };
        let mut g = self.lock(&group);
        if g.state == GroupState::Dead {
            return (code(ResponseError::GroupIdNotFound), None);
        }
        // Deadlines that have passed count even if the timer task has not run them yet: a
        // member whose session ended a moment ago is gone, as on Kafka.
        self.run_timers(&mut g, crate::group_timers::now(), now_ms());
        if !g.is_empty() {
            return (code(ResponseError::NonEmptyGroup), None);
        }
        let pending = match self.tombstone_all(&g) {
            Ok(p) => p,
            Err(e) => return (e, None),
        };
        g.set_state(GroupState::Dead, now_ms());
        drop(g);
        self.groups.lock().remove(group_id);
        (0, pending)
    }

    fn tombstone_all(&self, g: &Group) -> Result<Option<PendingWrite>, i16> {
        let mut records: Vec<StoredRecord> = g
            .offsets
            .keys()
            .map(|tp| StoredRecord::Offset {
                group: g.id.clone(),
                tp: tp.clone(),
                value: None,
            })
            .collect();
        records.push(StoredRecord::Group {
            group: g.id.clone(),
            value: None,
        });
        self.append(&g.id, &records).map(Some)
    }

    /// OffsetDelete: per-partition codes, or a group-level error.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        tps: &[TopicPartition],
    ) -> Result<(Vec<i16>, Option<PendingWrite>), i16> {
        let group = self
            .group(group_id)
            .ok_or(code(ResponseError::GroupIdNotFound))?;
        // Moves no deadline earlier (a heartbeat at most): no rescheduling, as for Heartbeat.
        let mut g = group.lock();
        if g.state == GroupState::Dead {
            return Err(code(ResponseError::GroupIdNotFound));
        }
        let subscribed = if g.is_empty() {
            Some(Vec::new())
        } else {
            g.subscribed_topics()
        };
        let mut codes = Vec::with_capacity(tps.len());
        let mut records = Vec::new();
        for tp in tps {
            let in_use = subscribed
                .as_ref()
                .is_none_or(|topics| topics.contains(&tp.topic));
            if in_use {
                codes.push(code(ResponseError::GroupSubscribedToTopic));
            } else {
                codes.push(0);
                if g.offsets.contains_key(tp) {
                    records.push(StoredRecord::Offset {
                        group: g.id.clone(),
                        tp: tp.clone(),
                        value: None,
                    });
                }
            }
        }
        if records.is_empty() {
            return Ok((codes, None));
        }
        let pending = self.append(group_id, &records)?;
        for r in &records {
            if let StoredRecord::Offset { tp, .. } = r {
                g.offsets.remove(tp);
            }
        }
        Ok((codes, Some(pending)))
    }

    /// Fires the timers of every group whose deadline has come (the timer task calls this at
    /// the earliest deadline, see `group_timers`). Bounded per call; the rest stay due.
    pub fn fire_due(&self, now: Instant) {
        const MAX_GROUPS_PER_CALL: usize = 1024;
        let wall = now_ms();
        for id in self.timers.take_due(now, MAX_GROUPS_PER_CALL) {
            if let Some(group) = self.group(&id) {
                let mut g = self.lock(&group);
                self.run_timers(&mut g, now, wall);
            }
        }
    }

    /// What the passage of time does to one group: pending member ids expire, a join phase
    /// completes at its deadline (or when its initial delay ends), members that did not sync
    /// in time are dropped, silent members' sessions end.
    fn run_timers(&self, g: &mut Group, now: Instant, wall: i64) {
        g.pending_members.retain(|_, deadline| *deadline > now);
        match g.state {
            GroupState::PreparingRebalance => self.after_join_phase(g, now),
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
                    self.after_members_removed(g, now);
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
            self.after_members_removed(g, now);
        }
    }

    /// The periodic sweep, every ~100 ms: a safety net for the deadline timers, and offset
    /// retention of empty groups.
    pub fn tick(&self) {
        let now = crate::group_timers::now();
        let wall = now_ms();
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        let mut dead = Vec::new();
        for group in groups {
            let mut g = self.lock(&group);
            self.run_timers(&mut g, now, wall);
            if g.state == GroupState::Empty
                && wall - g.state_timestamp_ms > self.config.offsets_retention_ms
                && self.tombstone_all(&g).is_ok()
            {
                tracing::info!(group = %g.id, "offsets expired (offsets.retention.minutes)");
                g.set_state(GroupState::Dead, wall);
                dead.push(g.id.clone());
            }
        }
        if !dead.is_empty() {
            let mut groups = self.groups.lock();
            for id in dead {
                groups.remove(&id);
            }
        }
    }
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

/// Waits for a write to `__consumer_offsets` to be durable (the data directory's group
/// commit), without holding a thread: storage's flusher calls back.
pub async fn durable(pending: Option<PendingWrite>) -> Result<(), i16> {
    let Some(PendingWrite { log, end_offset }) = pending else {
        return Ok(());
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.on_durable(
        end_offset,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::error::storage_error_code(&e)),
        Err(_) => Err(code(ResponseError::UnknownServerError)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_storage::{LogConfig, LogManager, LogManagerConfig};

    fn offsets_logs(m: &LogManager, partitions: i32) -> Vec<Arc<Log>> {
        (0..partitions)
            .map(|p| {
                let tp = TopicPartition::new(offsets_log::TOPIC, p);
                match m.get_log(&tp).unwrap() {
                    Some(log) => log,
                    None => {
                        let mut c = LogConfig::default();
                        c.set("segment.bytes", "4096").unwrap();
                        c.set("cleanup.policy", "compact").unwrap();
                        m.create_log(&tp, c).unwrap()
                    }
                }
            })
            .collect()
    }

    #[test]
    fn the_log_cleaner_keeps_the_live_state_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let config = GroupConfig {
            offsets_partitions: 2,
            ..GroupConfig::default()
        };
        let tp = |p| TopicPartition::new("t", p);
        {
            let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
            let logs = offsets_logs(&m, 2);
            let c = GroupCoordinator::load(config.clone(), logs.clone()).unwrap();
            for round in 0..300i64 {
                for g in ["a", "b", "c"] {
                    let entries = vec![CommitEntry {
                        tp: tp((round % 3) as i32),
                        offset: round,
                        leader_epoch: 0,
                        metadata: format!("r{round}"),
                    }];
                    let (codes, _) = c.commit(g, -1, "", None, entries, |_| true);
                    assert_eq!(codes, vec![0]);
                }
            }
            let (code, _) = c.delete_group("c");
            assert_eq!(code, 0);
            let before: u64 = logs.iter().map(|l| l.size_bytes()).sum();
            // The cleaner rewrites segments below the checkpointed recovery point.
            m.checkpoint().unwrap();
            for p in 0..2 {
                m.clean_log(&TopicPartition::new(offsets_log::TOPIC, p))
                    .unwrap();
            }
            let after: u64 = logs.iter().map(|l| l.size_bytes()).sum();
            assert!(
                after < before / 4,
                "compaction freed little: {before} -> {after}"
            );
            m.close().unwrap();
        }
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let c = GroupCoordinator::load(config, offsets_logs(&m, 2)).unwrap();
        for g in ["a", "b"] {
            let got = c.fetch_offsets(g, None);
            let want: Vec<_> = (0..3)
                .map(|p| {
                    let last = (0..300i64).filter(|r| r % 3 == p).max().unwrap();
                    (
                        tp(p as i32),
                        Some(Committed {
                            offset: last,
                            leader_epoch: 0,
                            metadata: format!("r{last}"),
                            commit_timestamp_ms: 0,
                        }),
                    )
                })
                .collect();
            let strip = |v: Vec<(TopicPartition, Option<Committed>)>| -> Vec<(TopicPartition, Option<i64>, Option<String>)> {
                v.into_iter().map(|(tp, c)| (tp, c.as_ref().map(|c| c.offset), c.map(|c| c.metadata))).collect()
            };
            assert_eq!(strip(got), strip(want), "group {g}");
        }
        assert!(
            c.fetch_offsets("c", None).is_empty(),
            "the deleted group stays deleted"
        );
    }

    /// A commit storm (20 000 commits over 100 groups) with the log cleaner running every 1 000
    /// commits keeps `__consumer_offsets` bounded on disk (the live offsets plus one interval
    /// of commits), and the latest offsets survive a restart.
    #[test]
    fn a_commit_storm_stays_bounded_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let config = GroupConfig {
            offsets_partitions: 2,
            ..GroupConfig::default()
        };
        let tp = |p| TopicPartition::new("t", p);
        let groups: Vec<String> = (0..100).map(|g| format!("group-{g}")).collect();
        // 200 rounds (20 000 commits) in CI; `RILL_COMMIT_STORM_ROUNDS=10000` is the full
        // million-commit storm (about 3 minutes).
        let rounds: i64 = std::env::var("RILL_COMMIT_STORM_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
            .clamp(10, 100_000);
        let mut written = 0u64;
        let mut largest = 0u64;
        {
            let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
            let logs = offsets_logs(&m, 2);
            let c = GroupCoordinator::load(config.clone(), logs.clone()).unwrap();
            for round in 0..rounds {
                for g in &groups {
                    let entries = vec![CommitEntry {
                        tp: tp((round % 3) as i32),
                        offset: round,
                        leader_epoch: 0,
                        metadata: String::new(),
                    }];
                    let before: u64 = logs.iter().map(|l| l.size_bytes()).sum();
                    let (codes, _) = c.commit(g, -1, "", None, entries, |_| true);
                    assert_eq!(codes, vec![0]);
                    written += logs.iter().map(|l| l.size_bytes()).sum::<u64>() - before;
                }
                if round % 10 == 9 {
                    // What the cleaner threads do: checkpoint, then clean what is dirty.
                    m.checkpoint().unwrap();
                    // Bounded: each pass cleans one log.
                    while m.clean_dirtiest(now_ms()).unwrap().is_some() {}
                }
                largest = largest.max(logs.iter().map(|l| l.size_bytes()).sum());
            }
            m.close().unwrap();
        }
        eprintln!(
            "commit storm: {} commits over 100 groups, {written} bytes written, offsets topic at most {largest} bytes",
            rounds * 100
        );
        // 300 live offsets (~35 KB) plus the ~110 KB of commits between two cleans, and a
        // segment per partition: bounded, far below what was written.
        assert!(written > 2_000_000, "{written}");
        assert!(
            largest < 256 * 1024,
            "offsets topic grew to {largest} bytes of {written} written"
        );
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let c = GroupCoordinator::load(config, offsets_logs(&m, 2)).unwrap();
        for g in &groups {
            let got: Vec<_> = c
                .fetch_offsets(g, None)
                .into_iter()
                .map(|(tp, c)| (tp, c.map(|c| c.offset)))
                .collect();
            let want: Vec<_> = (0..3)
                .map(|p| (tp(p as i32), (0..rounds).filter(|r| r % 3 == p).max()))
                .collect();
            assert_eq!(got, want, "{g}");
        }
    }

    #[test]
    fn offsets_of_an_empty_group_expire_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let config = GroupConfig {
            offsets_retention_ms: 50,
            offsets_partitions: 1,
            ..GroupConfig::default()
        };
        let logs = offsets_logs(&m, 1);
        let c = GroupCoordinator::load(config.clone(), logs.clone()).unwrap();
        let entry = |offset| {
            vec![CommitEntry {
                tp: TopicPartition::new("t", 0),
                offset,
                leader_epoch: 0,
                metadata: String::new(),
            }]
        };
        assert_eq!(c.commit("old", -1, "", None, entry(5), |_| true).0, vec![0]);
        c.tick();
        assert_eq!(c.fetch_offsets("old", None).len(), 1, "not expired yet");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            c.commit("fresh", -1, "", None, entry(7), |_| true).0,
            vec![0]
        );
        // Retention counts from when the group became empty (here: was created), as in Kafka.
        c.tick();
        assert!(c.fetch_offsets("old", None).is_empty(), "expired");
        assert_eq!(
            c.fetch_offsets("fresh", None).len(),
            1,
            "empty for less than the retention"
        );
        assert!(
            c.list().iter().all(|(id, _, _)| id != "old"),
            "the expired group is gone"
        );
        // And it stays gone after a restart: tombstones were written.
        let reloaded = GroupCoordinator::load(config, logs).unwrap();
        assert!(reloaded.fetch_offsets("old", None).is_empty());
    }
}
