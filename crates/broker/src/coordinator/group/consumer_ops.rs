//! The KIP-848 operations of the group coordinator (Kafka's `GroupMetadataManager` for
//! consumer groups): ConsumerGroupHeartbeat, member expiry, and the checks OffsetCommit and
//! OffsetFetch make for consumer groups.
//!
//! A heartbeat works on a scratch copy of the group: each change is a record, replayed onto
//! the copy at once so the next step sees it (membership, then the group epoch, then the
//! target assignment, then the member's reconciliation); the answer is read from the copy;
//! the runtime appends the records and replays them onto the shard's group. So the shard's
//! durable state changes only by replay, and a failed append changes nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use super::consumer::{
    assign_range, assign_uniform, metadata_hash, ConsumerGroup, ConsumerMember, MemberDeadlines,
    TopicLookup,
};
use super::consumer_records::{
    Assignment, ConsumerRecord, CurrentAssignment, MemberMetadata, MemberState,
};
use super::{code, timers, ErrorCode, GroupCoordinator, GroupShard, StoredRecord};
use crate::coordinator::runtime::Outcome;

/// Member epoch of a heartbeat that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member that leaves for now (it keeps its assignment until its
/// session ends or it rejoins).
pub const STATIC_LEAVE_EPOCH: i32 = -2;
/// Bounds on what one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;
pub const REGEX_BYTES_MAX: usize = 4_096;

/// A ConsumerGroupHeartbeat as the coordinator sees it.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns; `None` when not sent (unchanged).
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a ConsumerGroupHeartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerHeartbeatAnswer {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent when the member must (re)learn its assignment.
    pub assignment: Option<Assignment>,
}

impl ConsumerHeartbeatAnswer {
    fn error(code: i16, message: impl Into<String>) -> ConsumerHeartbeatAnswer {
        ConsumerHeartbeatAnswer {
            error: code,
            message: Some(message.into()),
            member_epoch: -1,
            ..ConsumerHeartbeatAnswer::default()
        }
    }
}

fn fail(e: ResponseError, message: impl Into<String>) -> ErrorCode {
    tracing::debug!(code = e.code(), message = %message.into(), "consumer group heartbeat refused");
    ErrorCode(e.code())
}

/// Appends `r` to the records and replays it onto the scratch group.
pub(super) fn emit(g: &mut ConsumerGroup, records: &mut Vec<StoredRecord>, r: ConsumerRecord) {
    g.replay(&r);
    records.push(StoredRecord::Consumer(r));
}

/// The records that remove a member: its current assignment, target and metadata, then the
/// group epoch bump.
pub(super) fn remove_member(g: &mut ConsumerGroup, member: &str, records: &mut Vec<StoredRecord>) {
    let (group, member) = (g.id.clone(), member.to_string());
    emit(
        g,
        records,
        ConsumerRecord::Current {
            group: group.clone(),
            member: member.clone(),
            value: None,
        },
    );
    emit(
        g,
        records,
        ConsumerRecord::TargetMember {
            group: group.clone(),
            member: member.clone(),
            value: None,
        },
    );
    emit(
        g,
        records,
        ConsumerRecord::Member {
            group: group.clone(),
            member,
            value: None,
        },
    );
    bump_epoch(g, g.metadata_hash, records);
}

pub(super) fn bump_epoch(g: &mut ConsumerGroup, hash: i64, records: &mut Vec<StoredRecord>) {
    let group = g.id.clone();
    emit(
        g,
        records,
        ConsumerRecord::GroupEpoch {
            group,
            epoch: Some((g.epoch + 1, hash)),
        },
    );
}

/// `base` with the fields a heartbeat sent (a field not sent keeps its stored value).
fn merged_meta(base: &MemberMetadata, r: &ConsumerHeartbeat) -> MemberMetadata {
    let mut meta = base.clone();
    if let Some(names) = &r.subscribed_topic_names {
        let mut names = names.clone();
        names.sort();
        names.dedup();
        meta.subscribed_topic_names = names;
    }
    if let Some(re) = &r.subscribed_topic_regex {
        meta.subscribed_topic_regex = (!re.is_empty()).then(|| re.clone());
    }
    if r.rebalance_timeout_ms >= 0 {
        meta.rebalance_timeout_ms = r.rebalance_timeout_ms;
    }
    if r.server_assignor.is_some() {
        meta.server_assignor = r.server_assignor.clone();
    }
    if r.rack_id.is_some() {
        meta.rack_id = r.rack_id.clone();
    }
    if r.instance_id.is_some() {
        meta.instance_id = r.instance_id.clone();
    }
    // A ConsumerGroupHeartbeat member speaks the consumer protocol.
    meta.classic = None;
    meta.client_id = r.client_id.clone();
    meta.client_host = r.client_host.clone();
    meta
}

/// Whether a metadata change needs a new target assignment (a group epoch bump).
pub(super) fn subscription_changed(old: &MemberMetadata, new: &MemberMetadata) -> bool {
    old.subscribed_topic_names != new.subscribed_topic_names
        || old.subscribed_topic_regex != new.subscribed_topic_regex
        || old.server_assignor != new.server_assignor
}

/// Whether every partition of `a` is in `b`.
fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|bs| ps.is_subset(bs)))
}

/// Assignments equal, ignoring topics with no partitions.
pub(super) fn same(a: &Assignment, b: &Assignment) -> bool {
    is_subset(a, b) && is_subset(b, a)
}

impl GroupCoordinator {
    /// INVALID_REQUEST (and the like) for a heartbeat Kafka refuses before looking at the
    /// group; UNSUPPORTED_ASSIGNOR; INVALID_REGULAR_EXPRESSION.
    fn validate_heartbeat(
        &self,
        r: &ConsumerHeartbeat,
        topics: &dyn TopicLookup,
    ) -> Result<(), ErrorCode> {
        use ResponseError as E;
        Self::validate_group_id(&r.group_id).map_err(ErrorCode)?;
        if r.member_id.len() > super::GROUP_ID_BYTES_MAX
            || r.instance_id
                .as_ref()
                .is_some_and(|i| i.is_empty() || i.len() > super::GROUP_ID_BYTES_MAX)
        {
            return Err(fail(
                E::InvalidRequest,
                "member or instance id too long or empty",
            ));
        }
        match r.member_epoch {
            0 => {
                if r.rebalance_timeout_ms < 0 {
                    return Err(fail(
                        E::InvalidRequest,
                        "RebalanceTimeoutMs must be provided in first request.",
                    ));
                }
                if r.owned
                    .as_ref()
                    .is_none_or(|o| o.values().any(|p| !p.is_empty()))
                {
                    return Err(fail(
                        E::InvalidRequest,
                        "TopicPartitions must be empty when (re-)joining.",
                    ));
                }
                if r.subscribed_topic_names.is_none() && r.subscribed_topic_regex.is_none() {
                    return Err(fail(E::InvalidRequest, "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."));
                }
            }
            LEAVE_EPOCH => {}
            STATIC_LEAVE_EPOCH if r.instance_id.is_some() => {}
            STATIC_LEAVE_EPOCH => {
                return Err(fail(
                    E::InvalidRequest,
                    "InstanceId can't be null when leaving with epoch -2.",
                ))
            }
            e if e < 0 => return Err(fail(E::InvalidRequest, "MemberEpoch is invalid.")),
            _ => {}
        }
        if r.member_id.is_empty() && r.member_epoch != 0 {
            return Err(fail(E::InvalidRequest, "MemberId can't be empty."));
        }
        if r.subscribed_topic_names
            .as_ref()
            .is_some_and(|n| n.len() > SUBSCRIBED_TOPICS_MAX)
        {
            return Err(fail(E::InvalidRequest, "too many subscribed topics"));
        }
        if let Some(a) = &r.server_assignor {
            if !self.config.consumer_assignors.contains(&a.as_str()) {
                return Err(fail(
                    E::UnsupportedAssignor,
                    format!("assignor {a} is not supported"),
                ));
            }
        }
        if let Some(re) = &r.subscribed_topic_regex {
            if re.len() > REGEX_BYTES_MAX || !topics.is_valid_pattern(re) {
                return Err(fail(
                    E::InvalidRegularExpression,
                    format!("invalid regex {re}"),
                ));
            }
        }
        Ok(())
    }

    /// ConsumerGroupHeartbeat (KIP-848): join, heartbeat, reconcile, leave.
    pub fn consumer_heartbeat(
        &self,
        r: ConsumerHeartbeat,
        topics: &dyn TopicLookup,
    ) -> (
        ConsumerHeartbeatAnswer,
        Option<crate::coordinator::runtime::Written<()>>,
    ) {
        let mut r = r;
        if r.member_epoch == 0 && r.member_id.is_empty() {
            // ConsumerGroupHeartbeat v0: the coordinator names the member.
            r.member_id = uuid::Uuid::new_v4().simple().to_string();
        }
        if let Err(ErrorCode(e)) = self.validate_heartbeat(&r, topics) {
            return (ConsumerHeartbeatAnswer::error(e, "invalid heartbeat"), None);
        }
        let written = self.write_unscheduled(&r.group_id, |shard| {
            let (answer, records) = self.heartbeat_on(shard, &r, topics)?;
            Ok(Outcome {
                records,
                response: answer,
            })
        });
        match written {
            Ok(w) => {
                let (answer, durable) = w.split();
                (answer, durable.wrote().then_some(durable))
            }
            Err(ErrorCode(e)) => (ConsumerHeartbeatAnswer::error(e, "refused"), None),
        }
    }

    fn heartbeat_on(
        &self,
        shard: &mut GroupShard,
        r: &ConsumerHeartbeat,
        topics: &dyn TopicLookup,
    ) -> Result<(ConsumerHeartbeatAnswer, Vec<StoredRecord>), ErrorCode> {
        use ResponseError as E;
        let now = timers::now();
        let c = &self.config;
        // Per-group settings (GROUP resource configs) over the broker's defaults.
        let group_config = self.group_configs.effective(&r.group_id);
        let mut records = Vec::new();
        let mut upgraded = None;
        if let Some(classic) = shard.group(&r.group_id).filter(|g| !g.members.is_empty()) {
            // Kafka's online upgrade: a first heartbeat converts a classic group of the
            // consumer protocol; anything else finds no consumer group.
            if r.member_epoch != 0 || !self.may_upgrade(classic) {
                return Err(fail(E::GroupIdNotFound, "the group is a classic group"));
            }
            let g = super::mixed::upgrade(classic, topics, &mut records)
                .ok_or_else(|| fail(E::GroupIdNotFound, "malformed consumer protocol"))?;
            let deadlines = shard
                .consumer_deadlines
                .entry(r.group_id.clone())
                .or_default();
            for m in g.members.values() {
                deadlines.insert(m.id.clone(), super::mixed::classic_deadlines(m, now));
            }
            tracing::info!(group = %r.group_id, members = g.members.len(), "classic group upgraded to a consumer group");
            upgraded = Some(g);
        }
        let mut g = match upgraded.or_else(|| shard.consumer_group(&r.group_id).cloned()) {
            Some(g) => g,
            None if r.member_epoch == 0 => {
                if !shard.may_create(c.max_groups) {
                    return Err(fail(E::CoordinatorNotAvailable, "too many groups"));
                }
                ConsumerGroup::new(&r.group_id)
            }
            None => return Err(fail(E::UnknownMemberId, "no such group")),
        };
        let group = r.group_id.clone();

        // Leaving.
        if r.member_epoch < 0 {
            let Some(m) = g.members.get(&r.member_id).cloned() else {
                return Err(fail(E::UnknownMemberId, "unknown member"));
            };
            if r.member_epoch == STATIC_LEAVE_EPOCH {
                if m.meta.instance_id != r.instance_id {
                    return Err(fail(E::FencedInstanceId, "instance id of another member"));
                }
                // Kept with its assignment until its session ends or it rejoins.
                let current = CurrentAssignment {
                    member_epoch: STATIC_LEAVE_EPOCH,
                    previous_member_epoch: m.current.member_epoch,
                    ..m.current.clone()
                };
                emit(
                    &mut g,
                    &mut records,
                    ConsumerRecord::Current {
                        group,
                        member: r.member_id.clone(),
                        value: Some(current),
                    },
                );
            } else {
                shard
                    .consumer_deadlines
                    .entry(r.group_id.clone())
                    .or_default()
                    .remove(&r.member_id);
                self.fence_member(shard, &mut g, &r.member_id, topics, &mut records);
            }
            return Ok((
                ConsumerHeartbeatAnswer {
                    member_id: r.member_id.clone(),
                    member_epoch: r.member_epoch,
                    heartbeat_interval_ms: 0,
                    ..ConsumerHeartbeatAnswer::default()
                },
                records,
            ));
        }

        let mut bump = false;
        let mut joined = false;
        if r.member_epoch == 0 {
            joined = true;
            let holder = r
                .instance_id
                .as_deref()
                .and_then(|i| g.static_member(i))
                .cloned();
            match holder {
                Some(old) if old.id != r.member_id => {
                    if old.current.member_epoch != STATIC_LEAVE_EPOCH {
                        return Err(fail(E::UnreleasedInstanceId, "the instance id is in use"));
                    }
                    // A static member back: the new member id takes over its assignment.
                    let target = g.target.get(&old.id).cloned();
                    let current = CurrentAssignment {
                        member_epoch: old.current.previous_member_epoch,
                        ..old.current.clone()
                    };
                    let (old_id, member) = (old.id.clone(), r.member_id.clone());
                    let meta = merged_meta(&old.meta, r);
                    bump |= subscription_changed(&old.meta, &meta);
                    for rec in [
                        ConsumerRecord::Current {
                            group: group.clone(),
                            member: old_id.clone(),
                            value: None,
                        },
                        ConsumerRecord::TargetMember {
                            group: group.clone(),
                            member: old_id.clone(),
                            value: None,
                        },
                        ConsumerRecord::Member {
                            group: group.clone(),
                            member: old_id.clone(),
                            value: None,
                        },
                        ConsumerRecord::Member {
                            group: group.clone(),
                            member: member.clone(),
                            value: Some(meta),
                        },
                        ConsumerRecord::TargetMember {
                            group: group.clone(),
                            member: member.clone(),
                            value: target,
                        },
                        ConsumerRecord::Current {
                            group: group.clone(),
                            member: member.clone(),
                            value: Some(current),
                        },
                    ] {
                        emit(&mut g, &mut records, rec);
                    }
                    if let Some(d) = shard.consumer_deadlines.get_mut(&r.group_id) {
                        d.remove(&old_id);
                    }
                }
                Some(_) => {}
                None if g.members.contains_key(&r.member_id) => {
                    // The same member id joining again lost its assignment: it starts over.
                    emit(
                        &mut g,
                        &mut records,
                        ConsumerRecord::Current {
                            group: group.clone(),
                            member: r.member_id.clone(),
                            value: Some(CurrentAssignment::default()),
                        },
                    );
                }
                None => {
                    if g.members.len() >= c.max_group_size {
                        return Err(fail(
                            E::GroupMaxSizeReached,
                            "group.consumer.max.size reached",
                        ));
                    }
                    emit(
                        &mut g,
                        &mut records,
                        ConsumerRecord::Member {
                            group: group.clone(),
                            member: r.member_id.clone(),
                            value: Some(merged_meta(&MemberMetadata::default(), r)),
                        },
                    );
                    emit(
                        &mut g,
                        &mut records,
                        ConsumerRecord::Current {
                            group: group.clone(),
                            member: r.member_id.clone(),
                            value: Some(CurrentAssignment::default()),
                        },
                    );
                    bump = true;
                }
            }
        } else {
            let Some(m) = g.members.get(&r.member_id) else {
                return Err(fail(E::UnknownMemberId, "unknown member"));
            };
            if r.instance_id.is_some() && m.meta.instance_id != r.instance_id {
                return Err(fail(E::FencedInstanceId, "instance id of another member"));
            }
            let cur = &m.current;
            let ok = r.member_epoch == cur.member_epoch
                || (r.member_epoch == cur.previous_member_epoch
                    && r.member_epoch < cur.member_epoch
                    && r.owned
                        .as_ref()
                        .is_some_and(|o| is_subset(o, &cur.assigned)));
            if !ok {
                return Err(fail(E::FencedMemberEpoch, "stale or unknown member epoch"));
            }
        }

        // The member's metadata: fields sent replace what is stored (a member that just
        // joined already has the request's, so its join writes one metadata record).
        let m = &g.members[&r.member_id];
        let meta = merged_meta(&m.meta, r);
        if meta != m.meta {
            bump |= subscription_changed(&m.meta, &meta);
            emit(
                &mut g,
                &mut records,
                ConsumerRecord::Member {
                    group: group.clone(),
                    member: r.member_id.clone(),
                    value: Some(meta),
                },
            );
        }

        self.advance_target(&mut g, bump, topics, &mut records);

        // The member's reconciliation.
        let before = g.members[&r.member_id].current.clone();
        let next = g.reconcile(&r.member_id, r.owned.as_ref());
        if next != before {
            emit(
                &mut g,
                &mut records,
                ConsumerRecord::Current {
                    group: group.clone(),
                    member: r.member_id.clone(),
                    value: Some(next.clone()),
                },
            );
        }

        // In-memory deadlines.
        let rebalance =
            Duration::from_millis(g.members[&r.member_id].meta.rebalance_timeout_ms.max(0) as u64)
                .min(super::REBALANCE_TIMEOUT_MAX);
        let deadlines = shard
            .consumer_deadlines
            .entry(r.group_id.clone())
            .or_default();
        let old = deadlines.get(&r.member_id).and_then(|d| d.revocation);
        deadlines.insert(
            r.member_id.clone(),
            MemberDeadlines {
                session: now + Duration::from_millis(group_config.consumer_session_timeout_ms),
                revocation: match next.state {
                    MemberState::UnrevokedPartitions => Some(old.unwrap_or(now + rebalance)),
                    _ => None,
                },
            },
        );

        let send_assignment = joined
            || !same(&next.assigned, &before.assigned)
            || r.owned.as_ref().is_some_and(|o| !same(o, &next.assigned));
        Ok((
            ConsumerHeartbeatAnswer {
                error: 0,
                message: None,
                member_id: r.member_id.clone(),
                member_epoch: next.member_epoch,
                heartbeat_interval_ms: i32::try_from(group_config.consumer_heartbeat_interval_ms)
                    .unwrap_or(i32::MAX),
                assignment: send_assignment.then(|| next.assigned.clone()),
            },
            records,
        ))
    }

    /// Bumps the group epoch when `bump` (membership or subscriptions changed) or the
    /// subscribed topics' metadata changed, then computes the target assignment of a new
    /// epoch: its records go to `records`, replayed onto `g`.
    pub(super) fn advance_target(
        &self,
        g: &mut ConsumerGroup,
        bump: bool,
        topics: &dyn TopicLookup,
        records: &mut Vec<StoredRecord>,
    ) {
        let group = g.id.clone();
        // The group epoch: membership, subscriptions or the subscribed topics changed.
        let (subs, snapshot) = g.subscriptions(topics);
        let hash = metadata_hash(&snapshot);
        if bump || hash != g.metadata_hash {
            bump_epoch(g, hash, records);
        }

        // The target assignment for the new epoch.
        if g.epoch > g.target_epoch {
            let next = match g.assignor(&self.config.consumer_assignors) {
                "range" => assign_range(&subs, &snapshot),
                _ => assign_uniform(&subs, &snapshot, &g.target),
            };
            for (member, a) in next {
                if g.target.get(&member).is_none_or(|old| !same(old, &a)) {
                    emit(
                        g,
                        records,
                        ConsumerRecord::TargetMember {
                            group: group.clone(),
                            member,
                            value: Some(a),
                        },
                    );
                }
            }
            let epoch = g.epoch;
            emit(
                g,
                records,
                ConsumerRecord::TargetEpoch {
                    group: group.clone(),
                    epoch: Some(epoch),
                },
            );
        }
    }

    /// Members whose session ended, or who did not revoke in their rebalance timeout, are
    /// removed (the sweep calls this; the next heartbeat computes the new target).
    pub(super) fn expire_consumer_members(
        &self,
        shard: &mut GroupShard,
        now: Instant,
        topics: &dyn TopicLookup,
        records: &mut Vec<StoredRecord>,
    ) {
        let ids: Vec<String> = shard.consumer_groups().map(|g| g.id.clone()).collect();
        for id in ids {
            let session = Duration::from_millis(
                self.group_configs
                    .effective(&id)
                    .consumer_session_timeout_ms,
            );
            let Some(members) = shard.consumer_group(&id).map(|g| {
                g.members
                    .values()
                    .map(|m| {
                        // A classic member's session is its JoinGroup's.
                        let own = m
                            .meta
                            .classic
                            .as_ref()
                            .map(|c| Duration::from_millis(c.session_timeout_ms.max(0) as u64));
                        (m.id.clone(), own.unwrap_or(session))
                    })
                    .collect::<Vec<(String, Duration)>>()
            }) else {
                continue;
            };
            let deadlines = shard.consumer_deadlines.entry(id.clone()).or_default();
            deadlines.retain(|m, _| members.iter().any(|(id, _)| id == m));
            let mut expired = Vec::new();
            for (m, session) in members {
                let d = deadlines.entry(m.clone()).or_insert(MemberDeadlines {
                    // Loaded members get a full session to come back.
                    session: now + session,
                    revocation: None,
                });
                if d.session <= now || d.revocation.is_some_and(|r| r <= now) {
                    expired.push(m);
                }
            }
            if expired.is_empty() {
                continue;
            }
            let Some(mut g) = shard.consumer_group(&id).cloned() else {
                continue;
            };
            for m in expired {
                tracing::info!(group = %id, member = %m, "consumer group member expired (session or rebalance timeout)");
                if let Some(d) = shard.consumer_deadlines.get_mut(&id) {
                    d.remove(&m);
                }
                if self.fence_member(shard, &mut g, &m, topics, records) {
                    // Now a classic group: its own timers take the other members.
                    break;
                }
            }
        }
    }

    /// Removes `member` (it left, or was fenced) from the scratch `g`, or, when the members
    /// left all speak the classic protocol and the policy allows it, converts the group back
    /// to a classic group (Kafka's online downgrade). Returns whether it converted.
    pub(super) fn fence_member(
        &self,
        shard: &mut GroupShard,
        g: &mut ConsumerGroup,
        member: &str,
        topics: &dyn TopicLookup,
        records: &mut Vec<StoredRecord>,
    ) -> bool {
        let others: Vec<&ConsumerMember> = g.members.values().filter(|m| m.id != member).collect();
        let downgrade = self.config.migration_policy.downgrade()
            && !others.is_empty()
            && others.len() <= self.config.max_group_size
            && others.iter().all(|m| m.meta.classic.is_some());
        if !downgrade {
            remove_member(g, member, records);
            return false;
        }
        tracing::info!(group = %g.id, member = %member, "the last consumer-protocol member left: consumer group downgraded to a classic group");
        super::mixed::downgrade(g, member, topics, super::now_ms(), records);
        shard.consumer_deadlines.remove(&g.id);
        true
    }

    /// OffsetCommit's member check for a consumer group (Kafka's
    /// `ConsumerGroup.validateOffsetCommit`): `None` when `group_id` is not a consumer group.
    pub(super) fn check_consumer_commit(
        shard: &GroupShard,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
    ) -> Option<Result<(), ErrorCode>> {
        let g = shard.consumer_group(group_id)?;
        if member_epoch < 0 && member_id.is_empty() {
            // An admin or manual commit: only to a group with no members.
            return Some(if g.members.is_empty() {
                Ok(())
            } else {
                Err(ErrorCode(code(ResponseError::UnknownMemberId)))
            });
        }
        let Some(m) = g.members.get(member_id) else {
            return Some(Err(ErrorCode(code(ResponseError::UnknownMemberId))));
        };
        if member_epoch != m.current.member_epoch {
            // A classic member's generation is its member epoch (Kafka's
            // `validateMemberEpoch`: ILLEGAL_GENERATION for the classic protocol).
            return Some(Err(ErrorCode(code(if m.meta.classic.is_some() {
                ResponseError::IllegalGeneration
            } else {
                ResponseError::StaleMemberEpoch
            }))));
        }
        Some(Ok(()))
    }

    /// OffsetFetch v9+'s member check: a member id and epoch name a current member of a
    /// consumer group (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH); 0 otherwise.
    pub fn check_consumer_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> i16 {
        let Some(member_id) = member_id.filter(|m| !m.is_empty()) else {
            return 0;
        };
        if member_epoch < 0 {
            return 0;
        }
        let partition = self.runtime.partition_for(group_id);
        self.runtime.read(partition, |shard| {
            match Self::check_consumer_commit(shard, group_id, member_id, member_epoch) {
                Some(Err(ErrorCode(e))) => e,
                Some(Ok(())) | None => 0,
            }
        })
    }

    /// Runs `f` on a consumer group, if it exists.
    pub fn with_consumer_group<T>(
        &self,
        group_id: &str,
        f: impl FnOnce(&ConsumerGroup) -> T,
    ) -> Option<T> {
        let partition = self.runtime.partition_for(group_id);
        self.runtime
            .read(partition, |shard| shard.consumer_group(group_id).map(f))
    }

    /// The partitions of `a` as a set per topic id (ConsumerGroupDescribe, `rill group`).
    pub fn partitions(a: &Assignment) -> Vec<(uuid::Uuid, Vec<i32>)> {
        a.iter()
            .map(|(t, ps)| {
                (
                    *t,
                    ps.iter()
                        .copied()
                        .collect::<BTreeSet<i32>>()
                        .into_iter()
                        .collect(),
                )
            })
            .collect()
    }
}
