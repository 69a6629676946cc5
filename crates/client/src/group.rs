//! Consumer groups: the admin calls (`rill group`; KIP-848 groups are described with
//! ConsumerGroupDescribe) and a minimal classic-protocol member
//! (`rill consume --group`): join, range assignment by the leader, sync, heartbeat, commit,
//! leave.
//!
//! Every group request goes to the group's coordinator, found with FindCoordinator.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_group_describe_response;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::client::Client;
use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// Kafka error codes the member reacts to.
const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const GROUP_ID_NOT_FOUND: i16 = 69;

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// (topic, partitions) assigned, when the group uses the consumer protocol.
    pub assignment: Vec<(String, Vec<i32>)>,
    /// KIP-848 groups: the member's epoch and its target assignment.
    pub member_epoch: Option<i32>,
    pub target_assignment: Vec<(String, Vec<i32>)>,
    /// The group protocol the member speaks: `classic` (JoinGroup/SyncGroup; also inside a
    /// KIP-848 group, Kafka's mixed groups) or `consumer` (ConsumerGroupHeartbeat).
    pub protocol: &'static str,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
    /// KIP-848 groups: (group epoch, target assignment epoch).
    pub epochs: Option<(i32, i32)>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

fn group_id(id: &str) -> GroupId {
    GroupId(StrBytes::from_string(id.to_string()))
}

impl Client {
    /// The coordinator of `group`.
    ///
    /// # Errors
    /// COORDINATOR_NOT_AVAILABLE and connection errors.
    pub async fn coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let response = self.call(&self.any_connection(), &request).await?;
        ClientError::check_msg(
            response.error_code,
            response.error_message.as_deref(),
            || format!("finding the coordinator of group '{group}'"),
        )?;
        self.metadata(Some(&[])).await?;
        self.broker(response.node_id.0).await
    }

    /// Every group the cluster knows.
    ///
    /// # Errors
    /// Broker and connection errors.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let response = self
            .call(&self.any_connection(), &ListGroupsRequest::default())
            .await?;
        ClientError::check(response.error_code, || "listing groups".to_string())?;
        let mut out: Vec<_> = response
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// Describes a group (state `Dead` when it does not exist, as in Kafka).
    ///
    /// # Errors
    /// Broker and connection errors.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = self.coordinator(group).await?;
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let response = self.call(&coordinator, &request).await?;
        let g = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol {
                addr: coordinator.addr().to_string(),
                reason: "DescribeGroups answered no group".into(),
            })?;
        ClientError::check_msg(g.error_code, g.error_message.as_deref(), || {
            format!("describing group '{group}'")
        })?;
        let consumer = g.protocol_type.as_str() == "consumer";
        let description = GroupDescription {
            group_id: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assignment: if consumer {
                        decode_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                    member_epoch: None,
                    target_assignment: Vec::new(),
                    protocol: "classic",
                })
                .collect(),
            epochs: None,
        };
        if description.state == "Dead"
            && coordinator
                .version_for(ApiKey::ConsumerGroupDescribe)
                .is_ok()
        {
            // Not a classic group: a KIP-848 consumer group, or none.
            if let Some(d) = self.describe_consumer_group(&coordinator, group).await? {
                return Ok(d);
            }
        }
        Ok(description)
    }

    /// ConsumerGroupDescribe (KIP-848); `None` when there is no such consumer group.
    async fn describe_consumer_group(
        &self,
        coordinator: &Connection,
        group: &str,
    ) -> Result<Option<GroupDescription>> {
        let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
        let response = self.call(coordinator, &request).await?;
        let Some(g) = response.groups.into_iter().next() else {
            return Ok(None);
        };
        if g.error_code == GROUP_ID_NOT_FOUND {
            return Ok(None);
        }
        ClientError::check_msg(g.error_code, g.error_message.as_deref(), || {
            format!("describing consumer group '{group}'")
        })?;
        let parts = |a: &consumer_group_describe_response::Assignment| -> Vec<(String, Vec<i32>)> {
            a.topic_partitions
                .iter()
                .map(|t| (t.topic_name.to_string(), t.partitions.clone()))
                .collect()
        };
        Ok(Some(GroupDescription {
            group_id: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: "consumer".into(),
            protocol: g.assignor_name.to_string(),
            members: g
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.instance_id.as_ref().map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assignment: parts(&m.assignment),
                    member_epoch: Some(m.member_epoch),
                    target_assignment: parts(&m.target_assignment),
                    // ConsumerGroupDescribe v1's MemberType: 0 classic, 1 consumer.
                    protocol: if m.member_type == 0 {
                        "classic"
                    } else {
                        "consumer"
                    },
                })
                .collect(),
            epochs: Some((g.group_epoch, g.assignment_epoch)),
        }))
    }

    /// The group's committed offsets, every topic.
    ///
    /// # Errors
    /// Broker and connection errors.
    pub async fn committed_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>> {
        let coordinator = self.coordinator(group).await?;
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None);
        let response = self.call(&coordinator, &request).await?;
        ClientError::check(response.error_code, || {
            format!("fetching offsets of group '{group}'")
        })?;
        let mut out = Vec::new();
        for t in response.topics {
            for p in t.partitions {
                ClientError::check(p.error_code, || {
                    format!(
                        "offset of group '{group}' for {}-{}",
                        t.name.0, p.partition_index
                    )
                })?;
                if p.committed_offset >= 0 {
                    out.push(CommittedOffset {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Commits offsets as `member_id` of `generation` (-1 and "" for an admin commit to an
    /// empty group, as `kafka-consumer-groups --reset-offsets` does).
    ///
    /// # Errors
    /// Broker errors (e.g. UNKNOWN_MEMBER_ID when the group is active), connection errors.
    pub async fn commit_offsets(
        &self,
        coordinator: &Connection,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: &[CommittedOffset],
    ) -> Result<()> {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for o in offsets {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(o.partition)
                .with_committed_offset(o.offset)
                .with_committed_leader_epoch(-1);
            match topics.iter_mut().find(|t| t.name.0.as_str() == o.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(o.topic.clone())))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let response = self.call(coordinator, &request).await?;
        for t in response.topics {
            for p in t.partitions {
                ClientError::check(p.error_code, || {
                    format!(
                        "committing offset of group '{group}' for {}-{}",
                        t.name.0, p.partition_index
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Deletes a group (it must have no members).
    ///
    /// # Errors
    /// GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP and connection errors.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let coordinator = self.coordinator(group).await?;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let response = self.call(&coordinator, &request).await?;
        for r in response.results {
            if r.error_code == GROUP_ID_NOT_FOUND {
                return Err(ClientError::Invalid(format!(
                    "group '{group}' does not exist"
                )));
            }
            ClientError::check(r.error_code, || format!("deleting group '{group}'"))?;
        }
        Ok(())
    }
}

/// Decodes a consumer-protocol assignment: (topic, partitions).
pub fn decode_assignment(bytes: &Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if bytes.len() < 2 {
        return Some(Vec::new());
    }
    let mut buf = bytes.clone();
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)).ok()?;
    Some(
        a.assigned_partitions
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    )
}

/// `message` with its version first, as the consumer protocol's metadata and assignments.
///
/// # Errors
/// Encoding errors.
pub fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i16(version);
    message
        .encode(&mut out, version)
        .map_err(|e| ClientError::Invalid(format!("encoding group metadata: {e}")))?;
    Ok(out.freeze())
}

/// A member of a consumer group that subscribes to one topic.
pub struct GroupSession {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
    pub coordinator: Arc<Connection>,
    /// Partitions of the topic this member owns in this generation.
    pub assigned: Vec<i32>,
}

/// Session timeout the member asks for; heartbeats go every third of it.
pub const SESSION_TIMEOUT_MS: i32 = 10_000;

impl Client {
    /// Joins `group` subscribed to `topic` (with `partitions` partitions) and returns the
    /// member with its assignment. The leader assigns ranges of partitions to members in
    /// member-id order, like Kafka's RangeAssignor for one topic.
    ///
    /// # Errors
    /// Broker errors other than the retriable ones handled here; bounded to 10 attempts.
    pub async fn join_group(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<GroupSession> {
        let coordinator = self.coordinator(group).await?;
        let subscription = encode_versioned(
            &ConsumerProtocolSubscription::default()
                .with_topics(vec![StrBytes::from_string(topic.to_string())]),
            0,
        )?;
        let mut member_id = String::new();
        for _attempt in 0..10 {
            let join = JoinGroupRequest::default()
                .with_group_id(group_id(group))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(subscription.clone())]);
            let joined =
                tokio::time::timeout(std::time::Duration::from_secs(60), coordinator.send(&join))
                    .await
                    .map_err(|_| ClientError::Timeout {
                        op: "JoinGroup",
                        addr: coordinator.addr().to_string(),
                        timeout_ms: 60_000,
                    })??;
            if joined.error_code == MEMBER_ID_REQUIRED {
                member_id = joined.member_id.to_string();
                continue;
            }
            if joined.error_code == REBALANCE_IN_PROGRESS {
                continue;
            }
            ClientError::check(joined.error_code, || format!("joining group '{group}'"))?;
            member_id = joined.member_id.to_string();
            let assignments = if joined.leader == joined.member_id {
                let mut members: Vec<String> = joined
                    .members
                    .iter()
                    .map(|m| m.member_id.to_string())
                    .collect();
                members.sort();
                range_assign(topic, partitions, &members)?
            } else {
                Vec::new()
            };
            let sync = SyncGroupRequest::default()
                .with_group_id(group_id(group))
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id.clone())
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(joined.protocol_name.clone())
                .with_assignments(assignments);
            let synced = coordinator.send(&sync).await?;
            if synced.error_code == REBALANCE_IN_PROGRESS {
                continue;
            }
            ClientError::check(synced.error_code, || format!("syncing group '{group}'"))?;
            let assigned = decode_assignment(&synced.assignment)
                .unwrap_or_default()
                .into_iter()
                .filter(|(t, _)| t == topic)
                .flat_map(|(_, ps)| ps)
                .collect();
            return Ok(GroupSession {
                group: group.to_string(),
                member_id,
                generation: joined.generation_id,
                coordinator,
                assigned,
            });
        }
        Err(ClientError::Invalid(format!(
            "could not join group '{group}' after 10 attempts (rebalancing)"
        )))
    }
}

/// Ranges of `partitions` to `members` (sorted), as SyncGroup assignments.
///
/// # Errors
/// Encoding errors.
pub fn range_assign(
    topic: &str,
    partitions: &[i32],
    members: &[String],
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let n = members.len().max(1);
    let per = partitions.len() / n;
    let extra = partitions.len() % n;
    let mut start = 0;
    let mut out = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let len = per + usize::from(i < extra);
        let mine = partitions[start..start + len].to_vec();
        start += len;
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            AssignedTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(mine),
        ]);
        out.push(
            SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(member.clone()))
                .with_assignment(encode_versioned(&assignment, 0)?),
        );
    }
    Ok(out)
}

impl GroupSession {
    /// Sends one heartbeat; `Ok(false)` means a rebalance started (rejoin).
    ///
    /// # Errors
    /// Other broker errors, connection errors.
    pub async fn heartbeat(&self) -> Result<bool> {
        let request = HeartbeatRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let response = self.coordinator.send(&request).await?;
        if response.error_code == REBALANCE_IN_PROGRESS {
            return Ok(false);
        }
        ClientError::check(response.error_code, || {
            format!("heartbeat to group '{}'", self.group)
        })?;
        Ok(true)
    }

    /// Leaves the group, so the others rebalance at once rather than after a timeout.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn leave(&self) -> Result<()> {
        let version = self.coordinator.version_for(ApiKey::LeaveGroup)?;
        let member_id = StrBytes::from_string(self.member_id.clone());
        // v3 replaced the single member id with a list of members.
        let request = if version >= 3 {
            LeaveGroupRequest::default()
                .with_members(vec![MemberIdentity::default().with_member_id(member_id)])
        } else {
            LeaveGroupRequest::default().with_member_id(member_id)
        }
        .with_group_id(group_id(&self.group));
        let response = self.coordinator.send_versioned(&request, version)?.await?;
        ClientError::check(response.error_code, || {
            format!("leaving group '{}'", self.group)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_partition_once() {
        let members: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let out = range_assign("t", &[0, 1, 2, 3, 4, 5, 6], &members).unwrap();
        let decoded: Vec<Vec<i32>> = out
            .iter()
            .map(|a| decode_assignment(&a.assignment).unwrap()[0].1.clone())
            .collect();
        assert_eq!(decoded, vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
    }
}
