//! KIP-848 ConsumerGroupHeartbeat requests for tests: the request builders, and [`Member`],
//! a member that heartbeats what it owns and takes what the coordinator answers, as a real
//! consumer does (revoking at once). One place for what every consumer group test repeats.

use std::collections::BTreeSet;

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Client;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A heartbeat of `member` at `epoch`, with no subscription or owned partitions (unchanged).
pub fn hb(group: &str, member: &str, epoch: i32) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
}

/// A first heartbeat (epoch 0) subscribing to `topics`.
pub fn join(group: &str, member: &str, topics: &[&str]) -> ConsumerGroupHeartbeatRequest {
    hb(group, member, 0)
        .with_rebalance_timeout_ms(5_000)
        .with_subscribed_topic_names(Some(topics.iter().map(|t| TopicName(s(t))).collect()))
        .with_topic_partitions(Some(Vec::new()))
}

/// The owned-partitions field for `partitions` of topic `id`.
pub fn owned(id: Uuid, partitions: &BTreeSet<i32>) -> Option<Vec<TopicPartitions>> {
    Some(vec![TopicPartitions::default()
        .with_topic_id(id)
        .with_partitions(partitions.iter().copied().collect())])
}

/// A heartbeat at `epoch` saying the member owns `partitions` of topic `id`.
pub fn hb_owning(
    group: &str,
    member: &str,
    epoch: i32,
    id: Uuid,
    partitions: &BTreeSet<i32>,
) -> ConsumerGroupHeartbeatRequest {
    hb(group, member, epoch).with_topic_partitions(owned(id, partitions))
}

/// The partitions of `id` in an answer's assignment (`None`: no assignment sent).
pub fn assigned(r: &ConsumerGroupHeartbeatResponse, id: Uuid) -> Option<BTreeSet<i32>> {
    r.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .filter(|t| t.topic_id == id)
            .flat_map(|t| t.partitions.iter().copied())
            .collect()
    })
}

/// Sends a ConsumerGroupHeartbeat (v1).
pub async fn send_hb(
    client: &mut Client,
    r: &ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    client.send(1, r).await
}

/// A member of one group consuming one topic: it heartbeats its epoch and what it owns, and
/// adopts the assignment and epoch each answer gives.
#[derive(Debug, Clone)]
pub struct Member {
    pub group: String,
    pub id: String,
    pub topic: Uuid,
    pub epoch: i32,
    pub owns: BTreeSet<i32>,
}

impl Member {
    pub fn new(group: &str, id: &str, topic: Uuid) -> Member {
        Member {
            group: group.to_string(),
            id: id.to_string(),
            topic,
            epoch: 0,
            owns: BTreeSet::new(),
        }
    }

    /// Joins subscribing to `topic_name`; panics on an error.
    pub async fn join(&mut self, client: &mut Client, topic_name: &str) {
        let r = send_hb(client, &join(&self.group, &self.id, &[topic_name])).await;
        self.take(&r);
    }

    /// One heartbeat with what it owns; panics on an error.
    pub async fn beat(&mut self, client: &mut Client) -> ConsumerGroupHeartbeatResponse {
        let r = send_hb(
            client,
            &hb_owning(&self.group, &self.id, self.epoch, self.topic, &self.owns),
        )
        .await;
        self.take(&r);
        r
    }

    fn take(&mut self, r: &ConsumerGroupHeartbeatResponse) {
        assert_eq!(r.error_code, 0, "{} heartbeat refused: {r:?}", self.id);
        self.epoch = r.member_epoch;
        if let Some(p) = assigned(r, self.topic) {
            self.owns = p;
        }
    }
}
