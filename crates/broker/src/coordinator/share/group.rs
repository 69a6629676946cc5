//! One share group's membership (KIP-932's `ShareGroup`), as pure state.
//!
//! Members join with epoch 0 and a client-chosen member id (ShareGroupHeartbeat v1), leave
//! with epoch -1, and are fenced when they send another epoch than theirs. The assignment is
//! Kafka's share-group idea taken to its simplest: every member is assigned every partition
//! of the topics it subscribes to (share groups let many members consume one partition), so
//! an assignment changes only when subscriptions or partition counts change. Membership is
//! not persisted: after a restart members get UNKNOWN_MEMBER_ID and rejoin, as Kafka's
//! clients do; the share-partitions' state is what is durable.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// A member's assignment: topic id → partitions.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// One member of a share group.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: BTreeSet<String>,
    pub assignment: Assignment,
    /// When the member is removed unless it heartbeats again.
    pub deadline_ms: i64,
}

/// One share group.
#[derive(Debug, Clone, Default)]
pub struct ShareGroup {
    pub group_epoch: i32,
    pub members: BTreeMap<String, Member>,
}

/// Why a heartbeat was refused (mapped to Kafka codes at the API boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatError {
    /// UNKNOWN_MEMBER_ID.
    UnknownMember,
    /// FENCED_MEMBER_EPOCH.
    FencedEpoch,
    /// INVALID_REQUEST (empty member id, no subscription on join, bad epoch).
    Invalid(&'static str),
    /// GROUP_MAX_SIZE_REACHED.
    GroupFull,
}

/// A heartbeat as the group sees it.
pub struct Heartbeat<'a> {
    pub member_id: &'a str,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed: Option<BTreeSet<String>>,
    pub client_id: &'a str,
    pub client_host: &'a str,
}

/// The answer: the member's epoch and, when it changed, its assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOk {
    pub member_epoch: i32,
    pub assignment: Option<Assignment>,
}

impl ShareGroup {
    /// Applies one heartbeat. `assign` maps a subscription to the partitions that exist now;
    /// `session_timeout_ms` sets the member's new deadline.
    ///
    /// # Errors
    /// [`HeartbeatError`], the group unchanged.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat<'_>,
        now_ms: i64,
        session_timeout_ms: i64,
        max_members: usize,
        assign: impl Fn(&BTreeSet<String>) -> Assignment,
    ) -> Result<HeartbeatOk, HeartbeatError> {
        if hb.member_id.is_empty() || hb.member_id.len() > 255 {
            return Err(HeartbeatError::Invalid(
                "MemberId must be 1 to 255 characters",
            ));
        }
        match hb.member_epoch {
            -1 => match self.members.remove(hb.member_id) {
                Some(_) => {
                    self.group_epoch += 1;
                    Ok(HeartbeatOk {
                        member_epoch: -1,
                        assignment: None,
                    })
                }
                None => Err(HeartbeatError::UnknownMember),
            },
            0 => {
                let Some(subscribed) = hb.subscribed.clone().filter(|s| !s.is_empty()) else {
                    return Err(HeartbeatError::Invalid(
                        "SubscribedTopicNames must be set in first request",
                    ));
                };
                if !self.members.contains_key(hb.member_id) && self.members.len() >= max_members {
                    return Err(HeartbeatError::GroupFull);
                }
                self.group_epoch += 1;
                let assignment = assign(&subscribed);
                self.members.insert(
                    hb.member_id.to_string(),
                    Member {
                        member_id: hb.member_id.to_string(),
                        member_epoch: self.group_epoch,
                        rack_id: hb.rack_id,
                        client_id: hb.client_id.to_string(),
                        client_host: hb.client_host.to_string(),
                        subscribed,
                        assignment: assignment.clone(),
                        deadline_ms: now_ms.saturating_add(session_timeout_ms),
                    },
                );
                Ok(HeartbeatOk {
                    member_epoch: self.group_epoch,
                    assignment: Some(assignment),
                })
            }
            e if e < -1 => Err(HeartbeatError::Invalid("MemberEpoch is invalid")),
            epoch => {
                let Some(member) = self.members.get(hb.member_id) else {
                    return Err(HeartbeatError::UnknownMember);
                };
                if member.member_epoch != epoch {
                    return Err(HeartbeatError::FencedEpoch);
                }
                let subscribed = hb
                    .subscribed
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| member.subscribed.clone());
                let assignment = assign(&subscribed);
                let changed = assignment != member.assignment || subscribed != member.subscribed;
                if changed {
                    self.group_epoch += 1;
                }
                let group_epoch = self.group_epoch;
                let member = self.members.get_mut(hb.member_id).expect("checked above");
                member.deadline_ms = now_ms.saturating_add(session_timeout_ms);
                member.subscribed = subscribed;
                if changed {
                    member.assignment = assignment.clone();
                    member.member_epoch = group_epoch;
                }
                Ok(HeartbeatOk {
                    member_epoch: member.member_epoch,
                    assignment: changed.then_some(assignment),
                })
            }
        }
    }

    /// Removes members whose session timed out; returns their ids.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.deadline_ms <= now_ms)
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.group_epoch += 1;
        }
        expired
    }

    /// "Empty" or "Stable" (Kafka's share group states).
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb<'a>(id: &'a str, epoch: i32, topics: Option<&[&str]>) -> Heartbeat<'a> {
        Heartbeat {
            member_id: id,
            member_epoch: epoch,
            rack_id: None,
            subscribed: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            client_id: "c",
            client_host: "/127.0.0.1",
        }
    }

    fn assign(topics: &BTreeSet<String>) -> Assignment {
        topics
            .iter()
            .map(|t| (Uuid::from_u128(t.len() as u128), BTreeSet::from([0])))
            .collect()
    }

    #[test]
    fn join_heartbeat_fence_leave() {
        let mut g = ShareGroup::default();
        assert_eq!(
            g.heartbeat(hb("", 0, Some(&["t"])), 0, 100, 10, assign),
            Err(HeartbeatError::Invalid(
                "MemberId must be 1 to 255 characters"
            ))
        );
        assert!(matches!(
            g.heartbeat(hb("m", 0, None), 0, 100, 10, assign),
            Err(HeartbeatError::Invalid(_))
        ));
        let ok = g
            .heartbeat(hb("m", 0, Some(&["t"])), 0, 100, 10, assign)
            .unwrap();
        assert_eq!(ok.member_epoch, 1);
        assert!(ok.assignment.is_some());
        let ok = g.heartbeat(hb("m", 1, None), 10, 100, 10, assign).unwrap();
        assert_eq!(
            ok,
            HeartbeatOk {
                member_epoch: 1,
                assignment: None
            }
        );
        assert_eq!(
            g.heartbeat(hb("m", 7, None), 10, 100, 10, assign),
            Err(HeartbeatError::FencedEpoch)
        );
        assert_eq!(
            g.heartbeat(hb("x", 1, None), 10, 100, 10, assign),
            Err(HeartbeatError::UnknownMember)
        );
        // New subscription: new epoch and assignment.
        let ok = g
            .heartbeat(hb("m", 1, Some(&["tt"])), 10, 100, 10, assign)
            .unwrap();
        assert_eq!(ok.member_epoch, 2);
        assert!(ok.assignment.is_some());
        assert_eq!(
            g.heartbeat(hb("m", -1, None), 10, 100, 10, assign)
                .unwrap()
                .member_epoch,
            -1
        );
        assert!(g.members.is_empty());
    }

    #[test]
    fn expiry_and_size_bound() {
        let mut g = ShareGroup::default();
        g.heartbeat(hb("a", 0, Some(&["t"])), 0, 100, 1, assign)
            .unwrap();
        assert_eq!(
            g.heartbeat(hb("b", 0, Some(&["t"])), 0, 100, 1, assign),
            Err(HeartbeatError::GroupFull)
        );
        assert!(g.expire(99).is_empty());
        assert_eq!(g.expire(100), vec!["a".to_string()]);
        assert_eq!(g.state_name(), "Empty");
    }
}
