//! Mixed groups over TCP (Kafka 4's online migration): a classic group converted to a
//! consumer group by a KIP-848 member's first heartbeat, its classic member told to rejoin
//! (REBALANCE_IN_PROGRESS) and handed its new assignment in SyncGroup with revocation first
//! (no partition ever held by two members), offsets kept across the conversions, the group
//! surviving a crash, and converted back to classic when the last KIP-848 member leaves;
//! `group.consumer.migration.policy=disabled` keeps the two protocols apart.

mod common;

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use common::consumer_group::{hb, join, send_hb, Member};
use common::{Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rill_broker::coordinator::group::MigrationPolicy;
use uuid::Uuid;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

async fn broker_in(dir: tempfile::TempDir, policy: MigrationPolicy) -> TestBroker {
    TestBroker::start_in(dir, |c| {
        c.groups.offsets_partitions = 4;
        c.groups.consumer_session_timeout_ms = 10_000;
        c.groups.consumer_heartbeat_interval_ms = 100;
        c.groups.initial_rebalance_delay_ms = 0;
        c.groups.min_session_timeout_ms = 100;
        c.groups.migration_policy = policy;
    })
    .await
}

async fn topic(client: &mut Client, name: &str, partitions: i32) -> Uuid {
    let r = client
        .send(
            7,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)]),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
    let m = client
        .send(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s(name))))
            ])),
        )
        .await;
    m.topics[0].topic_id
}

/// `message` with its version first, as the consumer protocol embeds it.
fn versioned<M: Encodable>(message: &M, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    message.encode(&mut out, version).unwrap();
    out.freeze()
}

/// A ConsumerProtocolSubscription (v1: with owned partitions) of topic `t`.
fn subscription(t: &str, owned: &BTreeSet<i32>) -> Bytes {
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(vec![s(t)])
        .with_owned_partitions(vec![
            consumer_protocol_subscription::TopicPartition::default()
                .with_topic(TopicName(s(t)))
                .with_partitions(owned.iter().copied().collect()),
        ]);
    versioned(&sub, 1)
}

fn partitions_of(assignment: &Bytes) -> BTreeSet<i32> {
    if assignment.len() < 2 {
        return BTreeSet::new();
    }
    let version = i16::from_be_bytes([assignment[0], assignment[1]]);
    let mut buf = assignment.slice(2..);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version).unwrap();
    a.assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}

/// A classic member of topic "t": JoinGroup v5 (MEMBER_ID_REQUIRED first), SyncGroup v3,
/// Heartbeat v3, as the Java classic consumer speaks them.
struct Classic {
    group: String,
    id: String,
    generation: i32,
    owns: BTreeSet<i32>,
}

impl Classic {
    fn new(group: &str) -> Classic {
        Classic {
            group: group.into(),
            id: String::new(),
            generation: -1,
            owns: BTreeSet::new(),
        }
    }

    async fn join(&mut self, c: &mut Client) -> JoinGroupResponse {
        for _ in 0..3 {
            let r = c
                .send(
                    5,
                    &JoinGroupRequest::default()
                        .with_group_id(GroupId(s(&self.group)))
                        .with_member_id(s(&self.id))
                        .with_session_timeout_ms(10_000)
                        .with_rebalance_timeout_ms(10_000)
                        .with_protocol_type(s("consumer"))
                        .with_protocols(vec![JoinGroupRequestProtocol::default()
                            .with_name(s("cooperative-sticky"))
                            .with_metadata(subscription("t", &self.owns))]),
                )
                .await;
            self.id = r.member_id.to_string();
            if r.error_code == ResponseError::MemberIdRequired.code() {
                continue;
            }
            self.generation = r.generation_id;
            return r;
        }
        panic!("no member id after three joins");
    }

    /// SyncGroup; a leader assigns `leader_assigns` to itself. Adopts the answer.
    async fn sync(&mut self, c: &mut Client, leader_assigns: Option<&BTreeSet<i32>>) -> i16 {
        let assignments = leader_assigns
            .map(|ps| {
                let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
                    consumer_protocol_assignment::TopicPartition::default()
                        .with_topic(TopicName(s("t")))
                        .with_partitions(ps.iter().copied().collect()),
                ]);
                vec![SyncGroupRequestAssignment::default()
                    .with_member_id(s(&self.id))
                    .with_assignment(versioned(&a, 1))]
            })
            .unwrap_or_default();
        let r = c
            .send(
                3,
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(s(&self.group)))
                    .with_member_id(s(&self.id))
                    .with_generation_id(self.generation)
                    .with_assignments(assignments),
            )
            .await;
        if r.error_code == 0 {
            self.owns = partitions_of(&r.assignment);
        }
        r.error_code
    }

    async fn heartbeat(&self, c: &mut Client) -> i16 {
        c.send(
            3,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_member_id(s(&self.id))
                .with_generation_id(self.generation),
        )
        .await
        .error_code
    }
}

/// No partition is held by both.
fn assert_disjoint(a: &BTreeSet<i32>, b: &BTreeSet<i32>) {
    assert!(
        a.is_disjoint(b),
        "a partition is owned twice: classic {a:?}, consumer {b:?}"
    );
}

async fn listed(c: &mut Client, group: &str) -> (String, String) {
    let r = c.send(5, &ListGroupsRequest::default()).await;
    let g = r
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == group)
        .expect("listed");
    (g.group_type.to_string(), g.group_state.to_string())
}

fn commit(group: &str, member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

async fn committed(c: &mut Client, group: &str) -> i64 {
    let r = c
        .send(
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(None),
        )
        .await;
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == 0)
        .map_or(-1, |p| p.committed_offset)
}

/// Upgrade, the classic member's rebalance with revocation first, a crash, and the
/// downgrade when the KIP-848 member leaves; offsets committed under each protocol kept.
#[tokio::test]
async fn a_group_upgrades_survives_a_crash_and_downgrades() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_in(dir, MigrationPolicy::Bidirectional).await;
        let mut c = b.connect().await;
        let t = topic(&mut c, "t", 6).await;

        // A classic group: one member owning the six partitions, an offset committed.
        let mut a = Classic::new("g");
        let j = a.join(&mut c).await;
        assert_eq!(j.error_code, 0);
        assert_eq!(j.leader, j.member_id, "alone, it leads");
        let all: BTreeSet<i32> = (0..6).collect();
        assert_eq!(a.sync(&mut c, Some(&all)).await, 0);
        assert_eq!(a.owns, all);
        let code = |r: OffsetCommitResponse| r.topics[0].partitions[0].error_code;
        assert_eq!(
            code(c.send(8, &commit("g", &a.id, a.generation, 10)).await),
            0
        );
        assert_eq!(listed(&mut c, "g").await.0, "classic");

        // A KIP-848 member's first heartbeat converts the group.
        let mut k = Member::new("g", "k", t);
        k.join(&mut c, "t").await;
        assert!(k.owns.is_empty(), "all six are still the classic member's");
        assert_eq!(listed(&mut c, "g").await.0, "consumer");
        let d = c
            .send(
                1,
                &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("g"))]),
            )
            .await;
        let types: Vec<(String, i8)> = d.groups[0]
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.member_type))
            .collect();
        assert!(types.contains(&(a.id.clone(), 0)), "{types:?}");
        assert!(types.contains(&("k".to_string(), 1)), "{types:?}");
        assert_eq!(committed(&mut c, "g").await, 10, "offsets kept");

        // The classic member must rejoin; it keeps three and revokes the rest first.
        assert_eq!(
            a.heartbeat(&mut c).await,
            ResponseError::RebalanceInProgress.code()
        );
        let old_generation = a.generation;
        let j = a.join(&mut c).await;
        assert_eq!(j.error_code, 0);
        assert_eq!(j.leader.as_str(), "", "no leader: the broker assigns");
        assert_eq!(
            j.protocol_name.as_ref().map(|p| p.to_string()).as_deref(),
            Some("cooperative-sticky")
        );
        assert_eq!(
            j.generation_id, old_generation,
            "epoch kept until it revokes"
        );
        assert_eq!(a.sync(&mut c, None).await, 0);
        assert_eq!(a.owns.len(), 3, "kept half: {:?}", a.owns);
        k.beat(&mut c).await;
        assert_disjoint(&a.owns, &k.owns);
        assert!(k.owns.is_empty(), "nothing released yet: {:?}", k.owns);
        // Revoked: the next heartbeat says rejoin, the join moves it to the new epoch.
        assert_eq!(
            a.heartbeat(&mut c).await,
            ResponseError::RebalanceInProgress.code()
        );
        let j = a.join(&mut c).await;
        assert!(j.generation_id > old_generation);
        assert_eq!(a.sync(&mut c, None).await, 0);
        assert_eq!(a.heartbeat(&mut c).await, 0, "stable");
        k.beat(&mut c).await;
        assert_disjoint(&a.owns, &k.owns);
        assert_eq!(a.owns.union(&k.owns).count(), 6, "all assigned");
        assert_eq!(k.owns.len(), 3);

        // Commits: the classic member with its generation (= member epoch).
        assert_eq!(
            code(c.send(8, &commit("g", &a.id, a.generation, 20)).await),
            0
        );
        assert_eq!(
            code(c.send(8, &commit("g", &a.id, a.generation - 1, 21)).await),
            ResponseError::IllegalGeneration.code()
        );

        // A crash: the mixed group comes back from __consumer_offsets.
        let dir = b.kill().await;
        let b = broker_in(dir, MigrationPolicy::Bidirectional).await;
        let mut c = b.connect().await;
        assert_eq!(listed(&mut c, "g").await.0, "consumer");
        assert_eq!(
            a.heartbeat(&mut c).await,
            0,
            "same generation after restart"
        );
        assert_eq!(committed(&mut c, "g").await, 20);
        let d = c
            .send(
                1,
                &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("g"))]),
            )
            .await;
        assert_eq!(d.groups[0].members.len(), 2);
        assert!(d.groups[0]
            .members
            .iter()
            .any(|m| m.member_id.as_str() == a.id && m.member_type == 0));

        // The KIP-848 member leaves: the group is classic again and rebalances.
        let left = send_hb(&mut c, &hb("g", "k", -1)).await;
        assert_eq!(left.error_code, 0);
        assert_eq!(
            listed(&mut c, "g").await,
            ("classic".to_string(), "PreparingRebalance".to_string())
        );
        assert_eq!(
            a.heartbeat(&mut c).await,
            ResponseError::RebalanceInProgress.code()
        );
        let j = a.join(&mut c).await;
        assert_eq!(j.error_code, 0);
        assert_eq!(
            j.leader, j.member_id,
            "the classic protocol again: it leads"
        );
        assert_eq!(a.sync(&mut c, Some(&all)).await, 0);
        assert_eq!(a.heartbeat(&mut c).await, 0);
        assert_eq!(
            listed(&mut c, "g").await,
            ("classic".to_string(), "Stable".to_string())
        );
        assert_eq!(committed(&mut c, "g").await, 20, "offsets kept");
        assert_eq!(
            code(c.send(8, &commit("g", &a.id, a.generation, 30)).await),
            0
        );

        // And across another crash, classic.
        let dir = b.kill().await;
        let b = broker_in(dir, MigrationPolicy::Bidirectional).await;
        let mut c = b.connect().await;
        assert_eq!(listed(&mut c, "g").await.0, "classic");
        assert_eq!(committed(&mut c, "g").await, 30);
        b.stop().await;
    })
    .await;
}

/// A classic member leaving a mixed group: the group epoch moves, the KIP-848 member gets
/// its partitions; LeaveGroup of a KIP-848 member id is UNKNOWN_MEMBER_ID.
#[tokio::test]
async fn classic_members_leave_a_consumer_group() {
    bounded(async {
        let b = broker_in(tempfile::tempdir().unwrap(), MigrationPolicy::Bidirectional).await;
        let mut c = b.connect().await;
        let t = topic(&mut c, "t", 4).await;
        let mut k = Member::new("g", "k", t);
        k.join(&mut c, "t").await;
        assert_eq!(k.owns.len(), 4);
        // A classic member joins the consumer group (no conversion needed).
        let mut a = Classic::new("g");
        assert_eq!(a.join(&mut c).await.error_code, 0);
        assert_eq!(a.sync(&mut c, None).await, 0);
        assert!(a.owns.is_empty(), "k still holds all four");
        for _ in 0..3 {
            k.beat(&mut c).await;
            assert_disjoint(&a.owns, &k.owns);
            if a.heartbeat(&mut c).await != 0 {
                a.join(&mut c).await;
                assert_eq!(a.sync(&mut c, None).await, 0);
                assert_disjoint(&a.owns, &k.owns);
            }
        }
        assert_eq!(a.owns.len(), 2, "{:?} / {:?}", a.owns, k.owns);
        let leave = |member: &str| {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_members(vec![MemberIdentity::default().with_member_id(s(member))])
        };
        let r = c.send(3, &leave("k")).await;
        assert_eq!(
            r.members[0].error_code,
            ResponseError::UnknownMemberId.code(),
            "k speaks the consumer protocol"
        );
        let r = c.send(3, &leave(&a.id)).await;
        assert_eq!(r.members[0].error_code, 0);
        for _ in 0..3 {
            k.beat(&mut c).await;
        }
        assert_eq!(
            k.owns.len(),
            4,
            "k took the classic member's partitions back"
        );
        assert_eq!(listed(&mut c, "g").await.0, "consumer");
        b.stop().await;
    })
    .await;
}

/// `group.consumer.migration.policy=disabled`: a classic group refuses a KIP-848 member
/// (GROUP_ID_NOT_FOUND, as before mixed groups), and a consumer group is not converted back
/// when its last KIP-848 member leaves.
#[tokio::test]
async fn disabled_policy_converts_nothing() {
    bounded(async {
        let b = broker_in(tempfile::tempdir().unwrap(), MigrationPolicy::Disabled).await;
        let mut c = b.connect().await;
        topic(&mut c, "t", 2).await;
        let mut a = Classic::new("classic");
        assert_eq!(a.join(&mut c).await.error_code, 0);
        let refused = send_hb(&mut c, &join("classic", "x", &["t"])).await;
        assert_eq!(refused.error_code, ResponseError::GroupIdNotFound.code());
        assert_eq!(listed(&mut c, "classic").await.0, "classic");

        assert_eq!(send_hb(&mut c, &join("g", "k", &["t"])).await.error_code, 0);
        let mut m = Classic::new("g");
        assert_eq!(m.join(&mut c).await.error_code, 0);
        assert_eq!(send_hb(&mut c, &hb("g", "k", -1)).await.error_code, 0);
        assert_eq!(
            listed(&mut c, "g").await.0,
            "consumer",
            "no downgrade when disabled"
        );
        b.stop().await;
    })
    .await;
}
