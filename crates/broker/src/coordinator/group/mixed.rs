//! Mixed groups (Kafka 4's online migration, KIP-848): classic-protocol members inside a
//! consumer group, and the conversions between the two group types.
//!
//! - **Upgrade.** A first ConsumerGroupHeartbeat to a classic group of the consumer protocol
//!   converts it: the classic group's record is tombstoned and each classic member becomes a
//!   consumer group member (its generation as member epoch, its last assignment as current
//!   and target assignment, `ClassicMemberMetadata` with its session timeout and protocols).
//! - **Classic members in a consumer group** keep speaking JoinGroup/SyncGroup/Heartbeat/
//!   LeaveGroup: a JoinGroup updates the member and reconciles it towards the target
//!   assignment (answered at once, generation = member epoch, no leader); SyncGroup hands out
//!   its assigned partitions as a ConsumerProtocolAssignment; Heartbeat answers
//!   REBALANCE_IN_PROGRESS while the member must rejoin (a new group epoch, partitions to
//!   revoke, or partitions that became free). Revocation comes first, as for any member.
//! - **Downgrade.** When the last consumer-protocol member leaves (or is fenced) and classic
//!   members remain, the consumer group's records are tombstoned and a classic group record
//!   with the remaining members is written; replaying it rebuilds the classic group, which
//!   then rebalances.
//!
//! `group.consumer.migration.policy` gates the two conversions, as in Kafka; classic members
//! joining a consumer group that has members are accepted whatever the policy (Kafka's
//! `classicGroupJoinToConsumerGroup` does not look at it).

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::consumer::{ConsumerGroup, ConsumerMember, MemberDeadlines, TopicLookup};
use super::consumer_ops::{emit, subscription_changed};
use super::consumer_records::{
    Assignment, ClassicMemberMetadata, ConsumerRecord, CurrentAssignment, MemberMetadata,
    MemberState, CLASSIC_PROTOCOLS_MAX,
};
use super::records::{GroupValue, MemberValue, StoredRecord};
use super::state::{Group, JoinOutcome, SyncOutcome};
use super::{code, ErrorCode, GroupCoordinator, GroupShard, JoinRequest, Reply};

/// The embedded protocol type both group types share.
const CONSUMER_PROTOCOL: &str = "consumer";
/// The highest ConsumerProtocolSubscription / Assignment version this broker reads.
const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;

/// What the coordinator reads from a ConsumerProtocolSubscription.
#[derive(Debug, Default)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub rack_id: Option<String>,
    pub owned: Vec<(String, Vec<i32>)>,
}

/// The version a consumer-protocol payload starts with (clamped to what is read).
fn version_of(bytes: &[u8]) -> i16 {
    match bytes {
        [a, b, ..] => i16::from_be_bytes([*a, *b]).clamp(0, CONSUMER_PROTOCOL_VERSION_MAX),
        _ => 0,
    }
}

/// A JoinGroup protocol's ConsumerProtocolSubscription; `None` when malformed.
pub fn decode_subscription(metadata: &Bytes) -> Option<Subscription> {
    if metadata.len() < 2 {
        return None;
    }
    let version = version_of(metadata);
    let mut buf = metadata.slice(2..);
    let sub = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(Subscription {
        topics: sub.topics.iter().map(|t| t.to_string()).collect(),
        rack_id: sub.rack_id.map(|r| r.to_string()),
        owned: sub
            .owned_partitions
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    })
}

/// `a` as a ConsumerProtocolAssignment of `version` (the member's subscription version, as
/// Kafka answers); partitions of topics no longer known are left out.
pub fn encode_assignment(a: &Assignment, topics: &dyn TopicLookup, version: i16) -> Bytes {
    let assigned = a
        .iter()
        .filter_map(|(id, ps)| {
            let name = topics.name_of(id)?;
            Some(
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_string(name)))
                    .with_partitions(ps.iter().copied().collect()),
            )
        })
        .collect();
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(assigned);
    let mut out = BytesMut::new();
    out.put_i16(version);
    if message.encode(&mut out, version).is_err() {
        // Every field is valid in versions 0-3; an empty assignment is the safe answer.
        out.truncate(2);
    }
    out.freeze()
}

/// A classic member's stored ConsumerProtocolAssignment as topic ids; `None` when malformed.
fn decode_assignment(bytes: &Bytes, topics: &dyn TopicLookup) -> Option<Assignment> {
    let mut a = Assignment::new();
    if bytes.len() < 2 {
        return Some(a);
    }
    let version = version_of(bytes);
    let mut buf = bytes.slice(2..);
    let decoded = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    for t in decoded.assigned_partitions {
        if let Some((id, _)) = topics.get(&t.topic.0) {
            a.entry(id).or_default().extend(t.partitions);
        }
    }
    Some(a)
}

/// Topic-name partitions as topic ids (unknown topics left out).
fn by_id(owned: &[(String, Vec<i32>)], topics: &dyn TopicLookup) -> Assignment {
    let mut a = Assignment::new();
    for (name, ps) in owned {
        if let Some((id, _)) = topics.get(name) {
            a.entry(id).or_default().extend(ps.iter().copied());
        }
    }
    a
}

/// A classic member's own timeouts inside a consumer group: its session, and the rebalance
/// timeout it has to rejoin within when told to (capped as every rebalance timeout is).
struct ClassicTimeouts {
    session: Duration,
    rebalance: Duration,
}

impl ClassicTimeouts {
    fn of(m: &ConsumerMember) -> Self {
        let session_ms = m.meta.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
        ClassicTimeouts {
            session: Duration::from_millis(session_ms.max(0) as u64),
            rebalance: Duration::from_millis(m.meta.rebalance_timeout_ms.max(0) as u64)
                .min(super::REBALANCE_TIMEOUT_MAX),
        }
    }

    /// Restarts the member's session (a SyncGroup or Heartbeat is a sign of life) and returns
    /// its deadlines for the caller to set or clear the rejoin deadline.
    fn restart_session<'a>(
        &self,
        shard: &'a mut GroupShard,
        group_id: &str,
        member_id: String,
        now: Instant,
    ) -> &'a mut MemberDeadlines {
        let d = shard
            .consumer_deadlines
            .entry(group_id.to_string())
            .or_default()
            .entry(member_id)
            .or_insert(MemberDeadlines {
                session: now + self.session,
                revocation: None,
            });
        d.session = now + self.session;
        d
    }
}

/// A converted or joining classic member's deadlines: its own session timeout.
pub fn classic_deadlines(m: &ConsumerMember, now: Instant) -> MemberDeadlines {
    let session_ms = m.meta.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
    MemberDeadlines {
        session: now + Duration::from_millis(session_ms.max(0) as u64),
        revocation: None,
    }
}

/// The records that turn the classic group `classic` into a consumer group, and that group
/// (the records already replayed onto it). `None` when a member's embedded consumer protocol
/// is malformed (the group then stays classic).
pub fn upgrade(
    classic: &Group,
    topics: &dyn TopicLookup,
    records: &mut Vec<StoredRecord>,
) -> Option<ConsumerGroup> {
    let epoch = classic.generation_id;
    let protocol = classic
        .protocol_name
        .clone()
        .or_else(|| classic.select_protocol())
        .unwrap_or_default();
    let mut g = ConsumerGroup::new(&classic.id);
    let mut out = vec![StoredRecord::Group {
        group: classic.id.clone(),
        value: None,
    }];
    let mut members = Vec::new();
    for m in classic.members.values() {
        let sub = decode_subscription(&m.metadata_for(&protocol))?;
        let assigned = decode_assignment(&m.assignment, topics)?;
        let meta = MemberMetadata {
            instance_id: m.group_instance_id.clone(),
            rack_id: sub.rack_id,
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            subscribed_topic_names: sub.topics,
            subscribed_topic_regex: None,
            rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
            server_assignor: None,
            classic: Some(ClassicMemberMetadata {
                session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                supported_protocols: m.protocols.clone(),
            }),
        };
        members.push((m.member_id.clone(), meta, assigned));
    }
    let group = classic.id.clone();
    let mut push = |g: &mut ConsumerGroup, r: ConsumerRecord| emit(g, &mut out, r);
    for (id, meta, _) in &members {
        push(
            &mut g,
            ConsumerRecord::Member {
                group: group.clone(),
                member: id.clone(),
                value: Some(meta.clone()),
            },
        );
    }
    push(
        &mut g,
        ConsumerRecord::GroupEpoch {
            group: group.clone(),
            epoch: Some((epoch, 0)),
        },
    );
    for (id, _, assigned) in &members {
        push(
            &mut g,
            ConsumerRecord::TargetMember {
                group: group.clone(),
                member: id.clone(),
                value: Some(assigned.clone()),
            },
        );
    }
    push(
        &mut g,
        ConsumerRecord::TargetEpoch {
            group: group.clone(),
            epoch: Some(epoch),
        },
    );
    for (id, _, assigned) in members {
        push(
            &mut g,
            ConsumerRecord::Current {
                group: group.clone(),
                member: id,
                value: Some(CurrentAssignment {
                    member_epoch: epoch,
                    previous_member_epoch: epoch,
                    state: MemberState::Stable,
                    assigned,
                    pending_revocation: Assignment::new(),
                }),
            },
        );
    }
    records.extend(out);
    Some(g)
}

/// The records that turn consumer group `g` back into a classic group without `leaving`:
/// tombstones of every consumer record, then the classic group's record (generation = group
/// epoch, each member's target assignment encoded for its protocol). Replaying that record
/// rebuilds the classic group and starts its rebalance (see `GroupShard::replay`).
pub fn downgrade(
    g: &ConsumerGroup,
    leaving: &str,
    topics: &dyn TopicLookup,
    now_ms: i64,
    records: &mut Vec<StoredRecord>,
) {
    let group = g.id.clone();
    let consumer = |r| StoredRecord::Consumer(r);
    // One tombstone per member of a record kind, in Kafka's order of kinds.
    let per_member = |records: &mut Vec<StoredRecord>,
                      kind: fn(String, String) -> ConsumerRecord| {
        records.extend(
            g.members
                .keys()
                .map(|id| consumer(kind(group.clone(), id.clone()))),
        );
    };
    per_member(records, |group, member| ConsumerRecord::Current {
        group,
        member,
        value: None,
    });
    per_member(records, |group, member| ConsumerRecord::TargetMember {
        group,
        member,
        value: None,
    });
    records.push(consumer(ConsumerRecord::TargetEpoch {
        group: group.clone(),
        epoch: None,
    }));
    per_member(records, |group, member| ConsumerRecord::Member {
        group,
        member,
        value: None,
    });
    records.push(consumer(ConsumerRecord::GroupEpoch {
        group: group.clone(),
        epoch: None,
    }));
    let remaining: Vec<&ConsumerMember> = g.members.values().filter(|m| m.id != leaving).collect();
    let protocols = |m: &ConsumerMember| -> Vec<(String, Bytes)> {
        m.meta
            .classic
            .as_ref()
            .map(|c| c.supported_protocols.clone())
            .unwrap_or_default()
    };
    // Kafka's vote: of the protocols every member supports, the one most members prefer.
    let candidates: Vec<String> = remaining
        .first()
        .map(|m| protocols(m).into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let candidates: Vec<String> = candidates
        .into_iter()
        .filter(|n| {
            remaining
                .iter()
                .all(|m| protocols(m).iter().any(|(p, _)| p == n))
        })
        .collect();
    let protocol = candidates
        .iter()
        .max_by_key(|c| {
            let votes = remaining
                .iter()
                .filter(|m| {
                    protocols(m)
                        .iter()
                        .find(|(n, _)| candidates.contains(n))
                        .is_some_and(|(n, _)| n == *c)
                })
                .count();
            // Among equals, the first in the first member's order.
            (
                votes,
                std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
            )
        })
        .cloned()
        .unwrap_or_default();
    let empty = Assignment::new();
    let members = remaining
        .iter()
        .map(|m| {
            let ps = protocols(m);
            let subscription = ps
                .iter()
                .find(|(n, _)| *n == protocol)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            let c = m.meta.classic.as_ref();
            MemberValue {
                member_id: m.id.clone(),
                group_instance_id: m.meta.instance_id.clone(),
                client_id: m.meta.client_id.clone(),
                client_host: m.meta.client_host.clone(),
                rebalance_timeout_ms: m.meta.rebalance_timeout_ms,
                session_timeout_ms: c.map_or(0, |c| c.session_timeout_ms),
                assignment: encode_assignment(
                    g.target.get(&m.id).unwrap_or(&empty),
                    topics,
                    version_of(&subscription),
                ),
                subscription,
            }
        })
        .collect();
    records.push(StoredRecord::Group {
        group,
        value: Some(GroupValue {
            protocol_type: CONSUMER_PROTOCOL.to_string(),
            generation_id: g.epoch,
            protocol_name: Some(protocol),
            leader_id: remaining.first().map(|m| m.id.clone()),
            state_timestamp_ms: now_ms,
            members,
        }),
    });
}

/// Whether a group with these classic members takes a member with `protocols` (Kafka's
/// `ConsumerGroup.supportsClassicProtocols`).
fn supports(g: &ConsumerGroup, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
    if protocol_type != CONSUMER_PROTOCOL || protocols.is_empty() {
        return false;
    }
    let classic: Vec<&ClassicMemberMetadata> = g
        .members
        .values()
        .filter_map(|m| m.meta.classic.as_ref())
        .collect();
    classic.is_empty()
        || protocols.iter().any(|(name, _)| {
            classic
                .iter()
                .all(|c| c.supported_protocols.iter().any(|(n, _)| n == name))
        })
}

/// The member a classic request names: by instance id when given (FENCED_INSTANCE_ID for
/// another member id), else by member id; UNKNOWN_MEMBER_ID for none or for a member of the
/// consumer protocol.
fn classic_member<'a>(
    g: &'a ConsumerGroup,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<&'a ConsumerMember, ErrorCode> {
    let m = match instance_id {
        Some(i) => {
            let m = g
                .static_member(i)
                .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?;
            if m.id != member_id {
                return Err(ErrorCode(code(ResponseError::FencedInstanceId)));
            }
            m
        }
        None => g
            .members
            .get(member_id)
            .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?,
    };
    if m.meta.classic.is_none() {
        return Err(ErrorCode(code(ResponseError::UnknownMemberId)));
    }
    Ok(m)
}

/// Whether some partition of `member`'s target that it does not hold yet is still held by
/// another member (Kafka's `waitingOnUnreleasedPartition`).
fn waiting_on_unreleased(g: &ConsumerGroup, member: &ConsumerMember) -> bool {
    let Some(target) = g.target.get(&member.id) else {
        return false;
    };
    target.iter().any(|(t, ps)| {
        ps.iter().any(|p| {
            !member
                .current
                .assigned
                .get(t)
                .is_some_and(|a| a.contains(p))
                && g.members.values().any(|o| {
                    o.id != member.id
                        && [&o.current.assigned, &o.current.pending_revocation]
                            .iter()
                            .any(|a| a.get(t).is_some_and(|s| s.contains(p)))
                })
        })
    })
}

impl GroupCoordinator {
    /// Kafka's `validateOnlineUpgrade`: the policy allows it, the classic group speaks the
    /// consumer protocol, and its size fits a consumer group.
    pub(super) fn may_upgrade(&self, classic: &Group) -> bool {
        self.config.migration_policy.upgrade()
            && classic.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL)
            && classic.members.len() <= self.config.max_group_size
    }

    /// JoinGroup of a classic member to a consumer group with members (Kafka's
    /// `classicGroupJoinToConsumerGroup`): the member is created or updated from its
    /// subscription, the target assignment advanced, the member reconciled with the
    /// partitions it says it owns; the answer (no leader, generation = member epoch) is sent
    /// once the records are written.
    pub(super) fn classic_join(
        &self,
        shard: &mut GroupShard,
        req: &JoinRequest,
        topics: &dyn TopicLookup,
    ) -> Result<(Reply<JoinOutcome>, Vec<StoredRecord>), ErrorCode> {
        let now = super::timers::now();
        let fail = |e: ResponseError| ErrorCode(code(e));
        let mut g = shard
            .consumer_group(&req.group_id)
            .cloned()
            .ok_or(fail(ResponseError::UnknownMemberId))?;
        let unknown = req.member_id.is_empty();
        let member_id = if unknown {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        if !g.members.contains_key(&member_id) && g.members.len() >= self.config.max_group_size {
            return Err(fail(ResponseError::GroupMaxSizeReached));
        }
        if !supports(&g, &req.protocol_type, &req.protocols)
            || req.protocols.len() > CLASSIC_PROTOCOLS_MAX
        {
            return Err(fail(ResponseError::InconsistentGroupProtocol));
        }
        if unknown && req.require_known_member_id && req.group_instance_id.is_none() {
            return Ok((
                Reply::Now(JoinOutcome::error(
                    code(ResponseError::MemberIdRequired),
                    &member_id,
                )),
                Vec::new(),
            ));
        }
        let sub = decode_subscription(&req.protocols[0].1)
            .ok_or(fail(ResponseError::InconsistentGroupProtocol))?;
        let group = g.id.clone();
        let mut records = Vec::new();
        let mut bump = false;

        // A static member: a new incarnation (unknown member id) replaces the old one and
        // takes over its assignment; a known member id must be the holder's.
        if let Some(instance) = &req.group_instance_id {
            if let Some(old) = g.static_member(instance).cloned() {
                if unknown {
                    let target = g.target.get(&old.id).cloned();
                    for r in [
                        ConsumerRecord::Current {
                            group: group.clone(),
                            member: old.id.clone(),
                            value: None,
                        },
                        ConsumerRecord::TargetMember {
                            group: group.clone(),
                            member: old.id.clone(),
                            value: None,
                        },
                        ConsumerRecord::Member {
                            group: group.clone(),
                            member: old.id.clone(),
                            value: None,
                        },
                        ConsumerRecord::Member {
                            group: group.clone(),
                            member: member_id.clone(),
                            value: Some(old.meta.clone()),
                        },
                        ConsumerRecord::TargetMember {
                            group: group.clone(),
                            member: member_id.clone(),
                            value: target,
                        },
                        ConsumerRecord::Current {
                            group: group.clone(),
                            member: member_id.clone(),
                            value: Some(old.current.clone()),
                        },
                    ] {
                        emit(&mut g, &mut records, r);
                    }
                    if let Some(d) = shard.consumer_deadlines.get_mut(&group) {
                        d.remove(&old.id);
                    }
                } else if old.id != member_id {
                    return Err(fail(ResponseError::FencedInstanceId));
                }
            } else if !unknown && !g.members.contains_key(&member_id) {
                return Err(fail(ResponseError::UnknownMemberId));
            }
        }
        if !g.members.contains_key(&member_id) {
            emit(
                &mut g,
                &mut records,
                ConsumerRecord::Member {
                    group: group.clone(),
                    member: member_id.clone(),
                    value: Some(MemberMetadata::default()),
                },
            );
            emit(
                &mut g,
                &mut records,
                ConsumerRecord::Current {
                    group: group.clone(),
                    member: member_id.clone(),
                    value: Some(CurrentAssignment::default()),
                },
            );
            bump = true;
        }
        let old = g.members[&member_id].meta.clone();
        let mut meta = old.clone();
        meta.instance_id = req.group_instance_id.clone().or(meta.instance_id);
        if sub.rack_id.is_some() {
            meta.rack_id = sub.rack_id.clone();
        }
        if req.rebalance_timeout_ms >= 0 {
            meta.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        let mut names = sub.topics.clone();
        names.sort();
        names.dedup();
        meta.subscribed_topic_names = names;
        meta.subscribed_topic_regex = None;
        meta.client_id = req.client_id.clone();
        meta.client_host = req.client_host.clone();
        meta.classic = Some(ClassicMemberMetadata {
            session_timeout_ms: req.session_timeout_ms,
            supported_protocols: req.protocols.clone(),
        });
        if meta != old {
            bump |= subscription_changed(&old, &meta);
            emit(
                &mut g,
                &mut records,
                ConsumerRecord::Member {
                    group: group.clone(),
                    member: member_id.clone(),
                    value: Some(meta.clone()),
                },
            );
        }
        self.advance_target(&mut g, bump, topics, &mut records);

        let owned = by_id(&sub.owned, topics);
        let before = g.members[&member_id].current.clone();
        let next = g.reconcile(&member_id, Some(&owned));
        if next != before {
            emit(
                &mut g,
                &mut records,
                ConsumerRecord::Current {
                    group: group.clone(),
                    member: member_id.clone(),
                    value: Some(next.clone()),
                },
            );
        }
        // The member now has its session, and its rebalance timeout to send SyncGroup.
        let rebalance = Duration::from_millis(meta.rebalance_timeout_ms.max(0) as u64)
            .min(super::REBALANCE_TIMEOUT_MAX);
        shard.consumer_deadlines.entry(group).or_default().insert(
            member_id.clone(),
            MemberDeadlines {
                session: now + Duration::from_millis(req.session_timeout_ms.max(0) as u64),
                revocation: Some(now + rebalance),
            },
        );
        let outcome = JoinOutcome {
            error: 0,
            generation_id: next.member_epoch,
            protocol_type: Some(CONSUMER_PROTOCOL.to_string()),
            protocol_name: Some(req.protocols[0].0.clone()),
            leader_id: String::new(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
        };
        Ok((Reply::Now(outcome), records))
    }

    /// SyncGroup of a classic member of a consumer group (Kafka's
    /// `classicGroupSyncToConsumerGroup`): its assigned partitions, or REBALANCE_IN_PROGRESS
    /// when a newer group epoch awaits it.
    pub(super) fn classic_sync(
        &self,
        shard: &mut GroupShard,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        topics: &dyn TopicLookup,
    ) -> Result<SyncOutcome, ErrorCode> {
        let now = super::timers::now();
        let g = shard
            .consumer_group(group_id)
            .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?;
        let m = classic_member(g, member_id, instance_id)?;
        if generation_id != m.current.member_epoch {
            return Err(ErrorCode(code(ResponseError::IllegalGeneration)));
        }
        let c = m.meta.classic.as_ref().expect("checked by classic_member");
        let (name, metadata) = c.supported_protocols.first().cloned().unwrap_or_default();
        let rebalance =
            g.epoch > m.current.member_epoch && m.current.state != MemberState::UnrevokedPartitions;
        let assignment = encode_assignment(&m.current.assigned, topics, version_of(&metadata));
        let (id, timeouts) = (m.id.clone(), ClassicTimeouts::of(m));
        let d = timeouts.restart_session(shard, group_id, id, now);
        if rebalance {
            // It must rejoin within its rebalance timeout.
            d.revocation.get_or_insert(now + timeouts.rebalance);
            return Err(ErrorCode(code(ResponseError::RebalanceInProgress)));
        }
        d.revocation = None;
        Ok(SyncOutcome {
            error: 0,
            protocol_type: Some(CONSUMER_PROTOCOL.to_string()),
            protocol_name: Some(name),
            assignment,
        })
    }

    /// Heartbeat of a classic member of a consumer group (Kafka's
    /// `classicGroupHeartbeatToConsumerGroup`): REBALANCE_IN_PROGRESS when it must rejoin (a
    /// newer group epoch, partitions to revoke, or partitions it waits for that are free).
    pub(super) fn classic_heartbeat(
        &self,
        shard: &mut GroupShard,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<i16, ErrorCode> {
        let now = super::timers::now();
        let g = shard
            .consumer_group(group_id)
            .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?;
        let m = classic_member(g, member_id, instance_id)?;
        if generation_id != m.current.member_epoch {
            return Err(ErrorCode(code(ResponseError::IllegalGeneration)));
        }
        let rejoin = m.current.member_epoch < g.epoch
            || m.current.state == MemberState::UnrevokedPartitions
            || (m.current.state == MemberState::UnreleasedPartitions
                && !waiting_on_unreleased(g, m));
        let (id, timeouts) = (m.id.clone(), ClassicTimeouts::of(m));
        let d = timeouts.restart_session(shard, group_id, id, now);
        if rejoin {
            d.revocation.get_or_insert(now + timeouts.rebalance);
            return Ok(code(ResponseError::RebalanceInProgress));
        }
        Ok(0)
    }

    /// LeaveGroup of classic members of a consumer group (Kafka's
    /// `classicGroupLeaveToConsumerGroup`): a code per member; the group epoch is bumped once
    /// if any left.
    pub(super) fn classic_leave(
        &self,
        shard: &mut GroupShard,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<(Vec<i16>, Vec<StoredRecord>), ErrorCode> {
        let mut g = shard
            .consumer_group(group_id)
            .cloned()
            .ok_or(ErrorCode(code(ResponseError::UnknownMemberId)))?;
        let mut codes = Vec::with_capacity(members.len());
        let mut records = Vec::new();
        for (member_id, instance) in members {
            let found = match instance {
                // Administrative removal by instance id alone is allowed.
                Some(i) if member_id.is_empty() => g
                    .static_member(i)
                    .filter(|m| m.meta.classic.is_some())
                    .map(|m| m.id.clone())
                    .ok_or(ErrorCode(code(ResponseError::UnknownMemberId))),
                _ => classic_member(&g, member_id, instance.as_deref()).map(|m| m.id.clone()),
            };
            match found {
                Ok(id) => {
                    let group = g.id.clone();
                    for r in [
                        ConsumerRecord::Current {
                            group: group.clone(),
                            member: id.clone(),
                            value: None,
                        },
                        ConsumerRecord::TargetMember {
                            group: group.clone(),
                            member: id.clone(),
                            value: None,
                        },
                        ConsumerRecord::Member {
                            group,
                            member: id.clone(),
                            value: None,
                        },
                    ] {
                        emit(&mut g, &mut records, r);
                    }
                    if let Some(d) = shard.consumer_deadlines.get_mut(group_id) {
                        d.remove(&id);
                    }
                    codes.push(0);
                }
                Err(ErrorCode(e)) => codes.push(e),
            }
        }
        if !records.is_empty() {
            let hash = g.metadata_hash;
            super::consumer_ops::bump_epoch(&mut g, hash, &mut records);
        }
        Ok((codes, records))
    }
}
