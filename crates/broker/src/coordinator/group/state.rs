//! One consumer group of the classic group protocol: its members and the state machine
//! (Kafka's `ClassicGroup`). Pure state: no locks, no I/O, no clocks of its own (`now` is passed
//! in), so every transition is unit-testable. [`super::GroupCoordinator`] owns the groups,
//! persists them and drives the timers.
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                 ▲        ▲                                   │ leader's SyncGroup
//!     │ last member     │        └──── join / leave / expiry ────────┤
//!     └── leaves ───────┴────────────── join / leave / expiry ◀── Stable ◀┘
//!   Dead: deleted (DeleteGroups, offsets expired); never reused.
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use rill_storage::TopicPartition;
use tokio::sync::oneshot;

use super::records::{GroupValue, MemberValue, OffsetValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup gets back, before it is encoded for the request's version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Filled for the leader only: every member and its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinOutcome {
    pub fn error(code: i16, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: code,
            generation_id: -1,
            member_id: member_id.to_string(),
            ..JoinOutcome::default()
        }
    }
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(code: i16) -> SyncOutcome {
        SyncOutcome {
            error: code,
            ..SyncOutcome::default()
        }
    }
}

#[derive(Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    /// Set while the member's JoinGroup waits for the rebalance to complete.
    pub join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    /// Set while the member's SyncGroup waits for the leader's assignment.
    pub sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    /// When this member's session ends unless it heartbeats again.
    pub fn session_deadline(&self) -> Instant {
        self.last_heartbeat + self.session_timeout
    }

    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A committed offset as kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Offset of the record in `__consumer_offsets` that committed it: of a plain and a
    /// transactional commit, the later record wins (as in Kafka).
    pub record_offset: i64,
}

impl Committed {
    /// The offset committed by the stored `value` at `record_offset`.
    pub fn from_record(v: OffsetValue, record_offset: i64) -> Self {
        Committed {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata,
            commit_timestamp_ms: v.commit_timestamp_ms,
            record_offset,
        }
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    /// Wall-clock time of the last state change (stored; offset retention counts from it).
    pub state_timestamp_ms: i64,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → member id, for static members.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their session timeout deadline.
    pub pending_members: HashMap<String, Instant>,
    /// PreparingRebalance: when the join phase ends regardless; CompletingRebalance: when
    /// members that have not synced are dropped.
    pub deadline: Option<Instant>,
    /// A new group waits this long for more members before its first rebalance
    /// (`group.initial.rebalance.delay.ms`).
    pub initial_delay_until: Option<Instant>,
    pub offsets: HashMap<TopicPartition, Committed>,
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            deadline: None,
            initial_delay_until: None,
            offsets: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Whether a member with these protocols may join: same protocol type, and at least one
    /// protocol every current member also supports.
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    pub fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|&c| (0, c)).collect();
        for m in self.members.values() {
            if let Some(choice) = m
                .protocols
                .iter()
                .map(|(n, _)| n)
                .find(|n| candidates.contains(n))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == choice) {
                    v.0 += 1;
                }
            }
        }
        // Most votes; among equals, the first in the first member's order.
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .into_iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.clone())
    }

    /// Starts a rebalance: members must rejoin. Members waiting in SyncGroup are told to
    /// rejoin.
    pub fn prepare_rebalance(&mut self, now: Instant, now_ms: i64, initial_delay: Duration) {
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncOutcome::error(
                    ResponseError::RebalanceInProgress.code(),
                ));
            }
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(initial_delay);
        if self.state == GroupState::Empty {
            self.initial_delay_until = Some(now + initial_delay.min(rebalance_timeout));
        }
        self.deadline = Some(now + rebalance_timeout);
        self.set_state(GroupState::PreparingRebalance, now_ms);
    }

    /// Ends the join phase if every member has rejoined (and a new group's initial delay has
    /// passed) or the rebalance timeout is up. Returns whether it completed.
    pub fn maybe_complete_join(&mut self, now: Instant, now_ms: i64) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_joined =
            !self.members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let timed_out = self.deadline.is_some_and(|t| now >= t);
        let ready = timed_out || (all_joined && delay_over);
        if !ready {
            return false;
        }
        self.complete_join(now, now_ms);
        true
    }

    fn complete_join(&mut self, now: Instant, now_ms: i64) {
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in absent {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.remove_member(&id);
        }
        self.initial_delay_until = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader_id = None;
            self.deadline = None;
            self.set_state(GroupState::Empty, now_ms);
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader_id
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader_id = self.members.keys().next().cloned();
        }
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let leader = self.leader_id.clone().unwrap_or_default();
        let everyone: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.member_id.clone(),
                    m.group_instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.deadline = Some(now + rebalance_timeout);
        self.set_state(GroupState::CompletingRebalance, now_ms);
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_heartbeat = now;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinOutcome {
                    error: 0,
                    generation_id: self.generation_id,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader_id: leader.clone(),
                    member_id: m.member_id.clone(),
                    members: if m.member_id == leader {
                        everyone.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
        }
    }

    /// The current generation as a join answer that needs no rebalance.
    pub fn current_generation(&self, member_id: &str) -> JoinOutcome {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader_id.as_deref() == Some(member_id);
        JoinOutcome {
            error: 0,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            m.group_instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    /// The leader's SyncGroup: stores every member's assignment, becomes Stable and answers
    /// every waiting SyncGroup.
    pub fn complete_sync(&mut self, assignments: HashMap<String, Bytes>, now_ms: i64) {
        debug_assert_eq!(self.state, GroupState::CompletingRebalance);
        self.deadline = None;
        self.set_state(GroupState::Stable, now_ms);
        for m in self.members.values_mut() {
            m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncOutcome {
                    error: 0,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
    }

    /// Drops every member and returns to Empty (the group became a consumer group): parked
    /// JoinGroup and SyncGroup requests answer REBALANCE_IN_PROGRESS, so those members
    /// rejoin, now into the consumer group.
    pub fn clear_membership(&mut self, now_ms: i64) {
        let rejoin = ResponseError::RebalanceInProgress.code();
        for (id, m) in std::mem::take(&mut self.members) {
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinOutcome::error(rejoin, &id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(SyncOutcome::error(rejoin));
            }
        }
        self.static_members.clear();
        self.pending_members.clear();
        self.leader_id = None;
        self.protocol_type = None;
        self.protocol_name = None;
        self.deadline = None;
        self.initial_delay_until = None;
        self.set_state(GroupState::Empty, now_ms);
    }

    /// Removes a member (left, expired, or did not rejoin). Dropping its waiters wakes their
    /// requests, which answer UNKNOWN_MEMBER_ID.
    pub fn remove_member(&mut self, member_id: &str) -> bool {
        let Some(member) = self.members.remove(member_id) else {
            return false;
        };
        if let Some(instance) = &member.group_instance_id {
            if self
                .static_members
                .get(instance)
                .is_some_and(|id| id == member_id)
            {
                self.static_members.remove(instance);
            }
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = None;
        }
        true
    }

    /// After members left or expired: rebalance, finish a join phase, or become Empty.
    pub fn on_members_removed(&mut self, now: Instant, now_ms: i64, initial_delay: Duration) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation_id += 1;
                    self.protocol_name = None;
                    self.deadline = None;
                    self.set_state(GroupState::Empty, now_ms);
                } else {
                    self.prepare_rebalance(now, now_ms, initial_delay);
                }
            }
            GroupState::PreparingRebalance => {
                if self.members.is_empty() {
                    self.generation_id += 1;
                    self.protocol_name = None;
                    self.deadline = None;
                    self.initial_delay_until = None;
                    self.set_state(GroupState::Empty, now_ms);
                } else {
                    self.maybe_complete_join(now, now_ms);
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The members whose session ran out (not counting members whose JoinGroup is parked:
    /// they are waiting on us, not silent). A session ends at `last_heartbeat +
    /// session_timeout`, inclusive.
    pub fn expired_members(&self, now: Instant) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.session_deadline() <= now)
            .map(|m| m.member_id.clone())
            .collect()
    }

    /// The earliest moment at which a timer could change this group: a session end, the join
    /// or sync deadline, the end of the initial rebalance delay, a pending member id's expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(Member::session_deadline);
        let phase = match self.state {
            GroupState::PreparingRebalance | GroupState::CompletingRebalance => {
                [self.deadline, self.initial_delay_until]
            }
            _ => [None, None],
        };
        sessions
            .chain(phase.into_iter().flatten())
            .chain(self.pending_members.values().copied())
            .min()
    }

    /// Stored form of the group's metadata (GroupMetadataValue v3).
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores metadata read back at start-up. Members get a fresh session: those that do not
    /// come back expire after their session timeout.
    pub fn restore(&mut self, value: GroupValue, now: Instant) {
        self.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
        self.generation_id = value.generation_id;
        self.protocol_name = value.protocol_name;
        self.leader_id = value.leader_id;
        self.state_timestamp_ms = value.state_timestamp_ms;
        self.members.clear();
        self.static_members.clear();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        for m in value.members {
            if let Some(instance) = &m.group_instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// Topics the members subscribe to, from consumer-protocol metadata (OffsetDelete refuses
    /// to delete offsets of a subscribed topic). Unreadable metadata counts as "all topics".
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return Some(Vec::new());
        }
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let mut topics = Vec::new();
        for m in self.members.values() {
            let mut meta = m.metadata_for(&protocol);
            if meta.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([meta[0], meta[1]]);
            let _ = bytes::Buf::get_i16(&mut meta);
            let sub = ConsumerProtocolSubscription::decode(&mut meta, version.clamp(0, 3)).ok()?;
            topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
        }
        Some(topics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            assignment: Bytes::new(),
            last_heartbeat: crate::coordinator::group::timers::now(),
            join_waiter: None,
            sync_waiter: None,
        }
    }

    #[test]
    fn protocol_vote_picks_common_and_most_preferred() {
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        g.members
            .insert("a".into(), member("a", &["range", "roundrobin"]));
        g.members
            .insert("b".into(), member("b", &["roundrobin", "range"]));
        g.members
            .insert("c".into(), member("c", &["roundrobin", "sticky"]));
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
        assert!(!g.accepts("consumer", &[("sticky".into(), Bytes::new())]));
        assert!(g.accepts("consumer", &[("roundrobin".into(), Bytes::new())]));
        assert!(!g.accepts("connect", &[("roundrobin".into(), Bytes::new())]));
    }

    #[test]
    fn join_sync_cycle_and_member_loss() {
        let now = crate::coordinator::group::timers::now();
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        let mut receivers = Vec::new();
        for id in ["a", "b"] {
            let (tx, rx) = oneshot::channel();
            let mut m = member(id, &["range"]);
            m.join_waiter = Some(tx);
            g.members.insert(id.into(), m);
            receivers.push(rx);
        }
        g.prepare_rebalance(now, 0, Duration::from_millis(0));
        assert!(g.maybe_complete_join(now, 0));
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.generation_id, 1);
        let outcomes: Vec<JoinOutcome> = receivers
            .into_iter()
            .map(|mut r| r.try_recv().unwrap())
            .collect();
        assert_eq!(outcomes[0].leader_id, "a");
        assert_eq!(outcomes[0].members.len(), 2, "the leader sees every member");
        assert!(outcomes[1].members.is_empty());
        let (tx, mut rx) = oneshot::channel();
        g.members.get_mut("b").unwrap().sync_waiter = Some(tx);
        g.complete_sync(
            HashMap::from([("b".to_string(), Bytes::from_static(b"p0"))]),
            0,
        );
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(rx.try_recv().unwrap().assignment, Bytes::from_static(b"p0"));
        // b goes silent: it expires, and the group rebalances without it.
        let later = now + Duration::from_secs(11);
        g.members.get_mut("a").unwrap().last_heartbeat = later;
        assert_eq!(g.expired_members(later), vec!["b".to_string()]);
        g.remove_member("b");
        g.on_members_removed(later, 0, Duration::ZERO);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        g.remove_member("a");
        g.on_members_removed(later, 0, Duration::ZERO);
        assert_eq!(g.state, GroupState::Empty);
    }

    #[test]
    fn stored_value_round_trips_members() {
        let mut g = Group::new("g", 5);
        g.protocol_type = Some("consumer".into());
        g.protocol_name = Some("range".into());
        g.generation_id = 3;
        let mut m = member("a", &["range"]);
        m.group_instance_id = Some("i".into());
        m.assignment = Bytes::from_static(b"x");
        g.members.insert("a".into(), m);
        g.leader_id = Some("a".into());
        let value = g.to_value();
        let mut restored = Group::new("g", 0);
        restored.restore(value.clone(), crate::coordinator::group::timers::now());
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(
            restored.static_members.get("i").map(String::as_str),
            Some("a")
        );
        assert_eq!(restored.to_value(), value);
    }
}
