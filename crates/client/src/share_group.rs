//! Share groups (KIP-932) for `rill group`: ShareGroupDescribe for membership, and
//! DescribeShareGroupOffsets for each share-partition's start offset, with the in-flight,
//! acquired and dead-letter counts a Rill broker adds as tagged fields (tags 10000-10002,
//! 8-byte big-endian counts; absent from Kafka brokers and for share-partitions not loaded).

use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
use kafka_protocol::messages::{
    ApiKey, DescribeShareGroupOffsetsRequest, GroupId, ShareGroupDescribeRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::{ClientError, Result};

const GROUP_ID_NOT_FOUND: i16 = 69;
const TAG_IN_FLIGHT: i32 = 10_000;
const TAG_ACQUIRED: i32 = 10_001;
const TAG_DEAD_LETTERS: i32 = 10_002;

/// One member of a share group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMember {
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub host: String,
    /// (topic, partitions) assigned.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A described share group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupDescription {
    pub group_id: String,
    pub state: String,
    pub group_epoch: i32,
    pub members: Vec<ShareMember>,
}

/// One share-partition of a group: its start offset and, from a Rill broker, its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when the share-partition has no state.
    pub start_offset: i64,
    /// Records between the start offset and the end of the in-flight window.
    pub in_flight: Option<u64>,
    /// Of those, the ones acquired by a member now.
    pub acquired: Option<u64>,
    /// Records that became dead letters since the broker loaded the share-partition.
    pub dead_letters: Option<u64>,
}

fn count(tags: &std::collections::BTreeMap<i32, bytes::Bytes>, tag: i32) -> Option<u64> {
    let raw: [u8; 8] = tags.get(&tag)?.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

impl Client {
    /// Describes a share group; `None` when there is no share group of that id (or the
    /// broker has no share groups).
    ///
    /// # Errors
    /// Broker and connection errors.
    pub async fn describe_share_group(&self, group: &str) -> Result<Option<ShareGroupDescription>> {
        let coordinator = self.coordinator(group).await?;
        if coordinator.version_for(ApiKey::ShareGroupDescribe).is_err() {
            return Ok(None);
        }
        let request = ShareGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let response = self.call(&coordinator, &request).await?;
        let Some(g) = response.groups.into_iter().next() else {
            return Ok(None);
        };
        if g.error_code == GROUP_ID_NOT_FOUND {
            return Ok(None);
        }
        ClientError::check_msg(g.error_code, g.error_message.as_deref(), || {
            format!("describing share group '{group}'")
        })?;
        Ok(Some(ShareGroupDescription {
            group_id: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            group_epoch: g.group_epoch,
            members: g
                .members
                .into_iter()
                .map(|m| ShareMember {
                    member_id: m.member_id.to_string(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .iter()
                        .map(|t| (t.topic_name.to_string(), t.partitions.clone()))
                        .collect(),
                })
                .collect(),
        }))
    }

    /// Every share-partition of `group` with state, sorted by topic and partition.
    ///
    /// # Errors
    /// Broker and connection errors.
    pub async fn share_group_offsets(&self, group: &str) -> Result<Vec<ShareOffset>> {
        let coordinator = self.coordinator(group).await?;
        let request = DescribeShareGroupOffsetsRequest::default().with_groups(vec![
            DescribeShareGroupOffsetsRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_topics(None),
        ]);
        let response = self.call(&coordinator, &request).await?;
        let mut out = Vec::new();
        for g in response.groups {
            ClientError::check_msg(g.error_code, g.error_message.as_deref(), || {
                format!("describing share group offsets of '{group}'")
            })?;
            for t in g.topics {
                for p in t.partitions {
                    ClientError::check_msg(p.error_code, p.error_message.as_deref(), || {
                        format!("share offsets of {}-{}", t.topic_name.0, p.partition_index)
                    })?;
                    let tags = &p.unknown_tagged_fields;
                    out.push(ShareOffset {
                        topic: t.topic_name.to_string(),
                        partition: p.partition_index,
                        start_offset: p.start_offset,
                        in_flight: count(tags, TAG_IN_FLIGHT),
                        acquired: count(tags, TAG_ACQUIRED),
                        dead_letters: count(tags, TAG_DEAD_LETTERS),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }
}
