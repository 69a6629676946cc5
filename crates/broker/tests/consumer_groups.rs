//! KIP-848 consumer groups over TCP with encoded ConsumerGroupHeartbeat requests: first
//! heartbeat validation, member epochs and fencing, revocation before reassignment, static
//! members, session expiry, partitions added, group size, the two protocols refusing each
//! other, OffsetCommit/OffsetFetch member epochs, ListGroups/ConsumerGroupDescribe, and the
//! group surviving a broker crash; the broker's assignor list (`group.consumer.assignors`);
//! both group kinds listed and described as Kafka 4.4 does (that test also runs against
//! Kafka with `KAFKA_BOOTSTRAP`). Real clients (librdkafka) are in tests/compat/python.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::consumer_group::{assigned, hb, hb_owning, join, owned, send_hb, Member};
use common::{Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

const SESSION_MS: u64 = 600;

async fn broker_in(dir: tempfile::TempDir) -> TestBroker {
    TestBroker::start_in(dir, |c| {
        c.groups.offsets_partitions = 4;
        c.groups.consumer_session_timeout_ms = SESSION_MS;
        c.groups.consumer_heartbeat_interval_ms = 100;
        c.groups.max_group_size = 3;
        c.groups.initial_rebalance_delay_ms = 0;
        c.groups.min_session_timeout_ms = 100;
    })
    .await
}

async fn broker() -> TestBroker {
    broker_in(tempfile::tempdir().unwrap()).await
}

/// Creates `topic` with `partitions` partitions; returns its id.
async fn topic(client: &mut Client, topic: &str, partitions: i32) -> Uuid {
    let r = client
        .send(
            7,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)]),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
    topic_id(client, topic).await
}

async fn topic_id(client: &mut Client, topic: &str) -> Uuid {
    let r = client
        .send(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))
            ])),
        )
        .await;
    r.topics[0].topic_id
}

#[tokio::test]
async fn bad_heartbeats_get_kafkas_codes() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        topic(&mut c, "t", 2).await;
        let code = |r: ConsumerGroupHeartbeatResponse| r.error_code;
        let invalid = ResponseError::InvalidRequest.code();
        // A first heartbeat needs a rebalance timeout, a subscription, and no owned partitions.
        let no_timeout = join("g", "m", &["t"]).with_rebalance_timeout_ms(-1);
        assert_eq!(code(send_hb(&mut c, &no_timeout).await), invalid);
        let no_sub = join("g", "m", &["t"]).with_subscribed_topic_names(None);
        assert_eq!(code(send_hb(&mut c, &no_sub).await), invalid);
        let owns = join("g", "m", &["t"])
            .with_topic_partitions(owned(Uuid::from_u128(9), &BTreeSet::from([0])));
        assert_eq!(code(send_hb(&mut c, &owns).await), invalid);
        assert_eq!(code(send_hb(&mut c, &hb("g", "m", -3)).await), invalid);
        assert_eq!(
            code(send_hb(&mut c, &hb("g", "m", -2)).await),
            invalid,
            "-2 needs an instance id"
        );
        assert_eq!(code(send_hb(&mut c, &hb("g", "", 3)).await), invalid);
        let assignor = join("g", "m", &["t"]).with_server_assignor(Some(s("sticky")));
        assert_eq!(
            code(send_hb(&mut c, &assignor).await),
            ResponseError::UnsupportedAssignor.code()
        );
        let regex = join("g", "m", &[]).with_subscribed_topic_regex(Some(s("(unclosed")));
        assert_eq!(
            code(send_hb(&mut c, &regex).await),
            ResponseError::InvalidRegularExpression.code()
        );
        assert_eq!(
            code(send_hb(&mut c, &join("", "m", &["t"])).await),
            ResponseError::InvalidGroupId.code()
        );
        // Not a member (no group yet): UNKNOWN_MEMBER_ID, and nothing was created.
        assert_eq!(
            code(send_hb(&mut c, &hb("g", "m", 4)).await),
            ResponseError::UnknownMemberId.code()
        );
        let listed = c.send(5, &ListGroupsRequest::default()).await;
        assert!(
            listed.groups.is_empty(),
            "refused heartbeats created no group"
        );

        // A member: a higher or unknown epoch is fenced; unknown ids are unknown.
        let r = send_hb(&mut c, &join("g", "m", &["t"])).await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.member_epoch, 1);
        assert_eq!(
            code(send_hb(&mut c, &hb("g", "m", 7)).await),
            ResponseError::FencedMemberEpoch.code()
        );
        assert_eq!(
            code(send_hb(&mut c, &hb("g", "other", 1)).await),
            ResponseError::UnknownMemberId.code()
        );
        let ok = send_hb(&mut c, &hb("g", "m", 1)).await;
        assert_eq!(
            (ok.error_code, ok.member_epoch),
            (0, 1),
            "state unchanged by refusals"
        );
        b.stop().await;
    })
    .await;
}

/// A partition moves to its new owner only after the previous owner revoked it; meanwhile the
/// new member is at the new epoch without it.
#[tokio::test]
async fn revocation_comes_before_reassignment() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let t = topic(&mut c, "t", 4).await;
        let a1 = send_hb(&mut c, &join("g", "a", &["t"])).await;
        assert_eq!(a1.member_epoch, 1);
        let all = BTreeSet::from([0, 1, 2, 3]);
        assert_eq!(assigned(&a1, t), Some(all.clone()));
        let a_hb = send_hb(&mut c, &hb_owning("g", "a", 1, t, &all)).await;
        assert_eq!((a_hb.error_code, a_hb.member_epoch), (0, 1));

        // b joins: epoch 2; every partition is still a's.
        let b1 = send_hb(&mut c, &join("g", "b", &["t"])).await;
        assert_eq!(b1.error_code, 0);
        assert_eq!(b1.member_epoch, 2);
        assert_eq!(assigned(&b1, t), Some(BTreeSet::new()));

        // a is told to keep two: it stays at epoch 1 until it revokes the others.
        let a2 = send_hb(&mut c, &hb_owning("g", "a", 1, t, &all)).await;
        assert_eq!(a2.member_epoch, 1);
        let keep = assigned(&a2, t).expect("a new assignment");
        assert_eq!(keep.len(), 2);
        let moving: BTreeSet<i32> = all.difference(&keep).copied().collect();

        // b still gets nothing while a owns them.
        let b2 = send_hb(&mut c, &hb_owning("g", "b", 2, t, &BTreeSet::new())).await;
        assert_eq!(b2.member_epoch, 2);
        assert!(assigned(&b2, t).is_none_or(|p| p.is_empty()));

        // a revokes: epoch 2. Then b gets them.
        let a3 = send_hb(&mut c, &hb_owning("g", "a", 1, t, &keep)).await;
        assert_eq!((a3.error_code, a3.member_epoch), (0, 2));
        let b3 = send_hb(&mut c, &hb_owning("g", "b", 2, t, &BTreeSet::new())).await;
        assert_eq!(assigned(&b3, t), Some(moving));

        // ConsumerGroupDescribe shows epochs and the target.
        let d = c
            .send(
                1,
                &ConsumerGroupDescribeRequest::default()
                    .with_group_ids(vec![GroupId(s("g")), GroupId(s("nope"))]),
            )
            .await;
        let g = &d.groups[0];
        assert_eq!(g.error_code, 0);
        assert_eq!((g.group_epoch, g.assignment_epoch), (2, 2));
        assert_eq!(g.group_state.as_str(), "Stable");
        assert_eq!(g.assignor_name.as_str(), "uniform");
        for m in &g.members {
            assert_eq!(m.member_epoch, 2);
            assert_eq!(m.assignment.topic_partitions[0].topic_name.as_str(), "t");
            assert_eq!(
                m.assignment.topic_partitions[0].partitions,
                m.target_assignment.topic_partitions[0].partitions
            );
        }
        assert_eq!(
            d.groups[1].error_code,
            ResponseError::GroupIdNotFound.code()
        );

        // ListGroups v5 shows the type; a classic filter hides it.
        let l = c.send(5, &ListGroupsRequest::default()).await;
        assert_eq!(l.groups[0].group_type.as_str(), "consumer");
        assert_eq!(l.groups[0].group_state.as_str(), "Stable");
        let classic = c
            .send(
                5,
                &ListGroupsRequest::default().with_types_filter(vec![s("classic")]),
            )
            .await;
        assert!(classic.groups.is_empty());

        // a leaves (-1): b gets everything at the next epoch.
        let left = send_hb(&mut c, &hb("g", "a", -1)).await;
        assert_eq!((left.error_code, left.member_epoch), (0, -1));
        let b4 = send_hb(&mut c, &hb("g", "b", 2)).await;
        assert_eq!(b4.member_epoch, 3);
        assert_eq!(assigned(&b4, t), Some(all));
        b.stop().await;
    })
    .await;
}

/// A static member that left with epoch -2 comes back under a new member id with its
/// assignment and epoch; its instance id cannot be taken while it is active.
#[tokio::test]
async fn static_members_rejoin_with_their_assignment() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let t = topic(&mut c, "t", 2).await;
        let j = |m: &str| join("g", m, &["t"]).with_instance_id(Some(s("i1")));
        let a = send_hb(&mut c, &j("a")).await;
        assert_eq!((a.error_code, a.member_epoch), (0, 1));
        let taken = send_hb(&mut c, &j("b")).await;
        assert_eq!(taken.error_code, ResponseError::UnreleasedInstanceId.code());
        let left = send_hb(&mut c, &hb("g", "a", -2).with_instance_id(Some(s("i1")))).await;
        assert_eq!((left.error_code, left.member_epoch), (0, -2));
        let back = send_hb(&mut c, &j("b")).await;
        assert_eq!(back.error_code, 0);
        assert_eq!(back.member_epoch, 1, "the same epoch: no rebalance");
        assert_eq!(assigned(&back, t), Some(BTreeSet::from([0, 1])));
        // The old member id is gone.
        let old = send_hb(&mut c, &hb("g", "a", 1)).await;
        assert_eq!(old.error_code, ResponseError::UnknownMemberId.code());
        b.stop().await;
    })
    .await;
}

/// A silent member's session ends: the group moves on without it.
#[tokio::test]
async fn session_timeout_removes_a_silent_member() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let t = topic(&mut c, "t", 2).await;
        let mut a = Member::new("g", "a", t);
        a.join(&mut c, "t").await;
        assert_eq!((a.epoch, a.owns.len()), (1, 2));
        send_hb(&mut c, &join("g", "b", &["t"])).await;
        // a keeps heartbeating (revoking whatever it is told to), b goes silent.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SESSION_MS * 10);
        loop {
            a.beat(&mut c).await;
            if a.owns.len() == 2 && a.epoch == 3 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "b never expired: {:?} at {}",
                a.owns,
                a.epoch
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gone = send_hb(&mut c, &hb("g", "b", 2)).await;
        assert_eq!(gone.error_code, ResponseError::UnknownMemberId.code());
        b.stop().await;
    })
    .await;
}

/// Partitions added to a subscribed topic start a new epoch that assigns them.
#[tokio::test]
async fn partitions_added_are_assigned() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let t = topic(&mut c, "t", 1).await;
        let a = send_hb(&mut c, &join("g", "a", &["t"])).await;
        assert_eq!(assigned(&a, t), Some(BTreeSet::from([0])));
        let r = c
            .send(
                3,
                &CreatePartitionsRequest::default()
                    .with_timeout_ms(5_000)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_count(3)]),
            )
            .await;
        assert_eq!(r.results[0].error_code, 0);
        let next = send_hb(&mut c, &hb("g", "a", 1)).await;
        assert_eq!(next.member_epoch, 2);
        assert_eq!(assigned(&next, t), Some(BTreeSet::from([0, 1, 2])));
        b.stop().await;
    })
    .await;
}

/// group.max.size, and the classic and consumer protocols refusing each other's groups.
#[tokio::test]
async fn group_size_and_protocol_boundaries() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        topic(&mut c, "t", 1).await;
        for m in ["a", "b", "c"] {
            assert_eq!(send_hb(&mut c, &join("g", m, &["t"])).await.error_code, 0);
        }
        let full = send_hb(&mut c, &join("g", "d", &["t"])).await;
        assert_eq!(full.error_code, ResponseError::GroupMaxSizeReached.code());

        let classic = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default().with_name(s("range"))
            ]);
        // A classic member may join a consumer group (a mixed group, see mixed_groups.rs),
        // within the group's size.
        let r = c.send(3, &classic).await;
        assert_eq!(r.error_code, ResponseError::GroupMaxSizeReached.code());

        // A classic group with members whose embedded consumer protocol cannot be read is
        // not converted: it refuses a KIP-848 member.
        let r = c
            .send(3, &classic.clone().with_group_id(GroupId(s("classic"))))
            .await;
        assert_eq!(r.error_code, 0);
        let refused = send_hb(&mut c, &join("classic", "x", &["t"])).await;
        assert_eq!(refused.error_code, ResponseError::GroupIdNotFound.code());

        // DescribeGroups (v5) shows a consumer group as Dead, as Kafka before v6.
        let d = c
            .send(
                5,
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
            )
            .await;
        assert_eq!(d.groups[0].group_state.as_str(), "Dead");
        // v6 (KIP-1043), as Kafka 4.4: GROUP_ID_NOT_FOUND with Kafka's message, for a consumer
        // group and for a group that does not exist; a classic group is described in full.
        let d = c
            .send(
                6,
                &DescribeGroupsRequest::default().with_groups(vec![
                    GroupId(s("g")),
                    GroupId(s("nowhere")),
                    GroupId(s("classic")),
                ]),
            )
            .await;
        let answers: Vec<_> = d
            .groups
            .iter()
            .map(|g| {
                (
                    g.error_code,
                    g.error_message.as_deref().map(str::to_string),
                    g.group_state.to_string(),
                )
            })
            .collect();
        let not_found = ResponseError::GroupIdNotFound.code();
        assert_eq!(
            answers[..2],
            [
                (
                    not_found,
                    Some("Group g is not a classic group.".to_string()),
                    String::new()
                ),
                (
                    not_found,
                    Some("Group nowhere not found.".to_string()),
                    String::new()
                ),
            ]
        );
        assert_eq!((answers[2].0, answers[2].1.clone()), (0, None));
        assert_ne!(answers[2].2, "Dead");
        // DeleteGroups: not while members remain.
        let del = c
            .send(
                2,
                &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
            )
            .await;
        assert_eq!(
            del.results[0].error_code,
            ResponseError::NonEmptyGroup.code()
        );
        b.stop().await;
    })
    .await;
}

fn commit(group: &str, member: &str, epoch: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(epoch)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

fn fetch(group: &str, member: &str, epoch: i32) -> OffsetFetchRequest {
    OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(Some(s(member)))
        .with_member_epoch(epoch)
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![0])]))])
}

/// OffsetCommit v9 and OffsetFetch v9 check member epochs; the group, its epochs and its
/// offsets survive a broker crash, and the member carries on at its epoch.
#[tokio::test]
async fn member_epochs_on_offsets_and_state_across_a_crash() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let t = topic(&mut c, "t", 2).await;
        let a = send_hb(&mut c, &join("g", "a", &["t"])).await;
        assert_eq!(a.member_epoch, 1);
        let code = |r: OffsetCommitResponse| r.topics[0].partitions[0].error_code;
        assert_eq!(code(c.send(9, &commit("g", "a", 1, 42)).await), 0);
        assert_eq!(
            code(c.send(9, &commit("g", "a", 2, 43)).await),
            ResponseError::StaleMemberEpoch.code()
        );
        assert_eq!(
            code(c.send(9, &commit("g", "z", 1, 43)).await),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(
            code(c.send(9, &commit("g", "", -1, 43)).await),
            ResponseError::UnknownMemberId.code(),
            "no admin commits while members remain"
        );
        let f = c.send(9, &fetch("g", "a", 1)).await;
        assert_eq!(f.groups[0].error_code, 0);
        assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, 42);
        let stale = c.send(9, &fetch("g", "a", 5)).await;
        assert_eq!(
            stale.groups[0].error_code,
            ResponseError::StaleMemberEpoch.code()
        );
        // OffsetDelete of a topic the members subscribe to is refused.
        let del = c
            .send(
                0,
                &OffsetDeleteRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(vec![OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(0)
                        ])]),
            )
            .await;
        assert_eq!(
            del.topics[0].partitions[0].error_code,
            ResponseError::GroupSubscribedToTopic.code()
        );

        // Crash and restart on the same data directory.
        let dir = b.kill().await;
        let b = broker_in(dir).await;
        let mut c = b.connect().await;
        assert_eq!(topic_id(&mut c, "t").await, t);
        let again = send_hb(&mut c, &hb_owning("g", "a", 1, t, &BTreeSet::from([0, 1]))).await;
        assert_eq!(
            (again.error_code, again.member_epoch),
            (0, 1),
            "its epoch survived"
        );
        let f = c.send(9, &fetch("g", "a", 1)).await;
        assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, 42);
        let d = c
            .send(
                1,
                &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("g"))]),
            )
            .await;
        assert_eq!(d.groups[0].group_epoch, 1);
        assert_eq!(d.groups[0].members.len(), 1);
        assert_eq!(d.groups[0].members[0].member_id.as_str(), "a");

        // Leaving empties the group; deleting it drops it and its offsets.
        send_hb(&mut c, &hb("g", "a", -1)).await;
        let del = c
            .send(
                2,
                &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
            )
            .await;
        assert_eq!(del.results[0].error_code, 0);
        let dir = b.kill().await;
        let b = broker_in(dir).await;
        let mut c = b.connect().await;
        let l = c.send(5, &ListGroupsRequest::default()).await;
        assert!(l.groups.is_empty(), "{:?}", l.groups);
        b.stop().await;
    })
    .await;
}

/// A pattern subscription (matched against whole names) picks up topics created later.
#[tokio::test]
async fn regex_subscriptions_follow_new_topics() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let t1 = topic(&mut c, "orders-1", 1).await;
        topic(&mut c, "other", 1).await;
        let j = hb("g", "a", 0)
            .with_rebalance_timeout_ms(5_000)
            .with_subscribed_topic_regex(Some(s("orders-.*")))
            .with_topic_partitions(Some(Vec::new()));
        let a = send_hb(&mut c, &j).await;
        assert_eq!(a.error_code, 0);
        let a_topics: Vec<Uuid> = a
            .assignment
            .unwrap()
            .topic_partitions
            .iter()
            .map(|t| t.topic_id)
            .collect();
        assert_eq!(a_topics, vec![t1]);
        let t2 = topic(&mut c, "orders-2", 1).await;
        let next = send_hb(&mut c, &hb("g", "a", 1)).await;
        assert_eq!(next.member_epoch, 2);
        let mut got: Vec<Uuid> = next
            .assignment
            .unwrap()
            .topic_partitions
            .iter()
            .map(|t| t.topic_id)
            .collect();
        got.sort();
        let mut want = vec![t1, t2];
        want.sort();
        assert_eq!(got, want);
        b.stop().await;
    })
    .await;
}

/// Offsets retention counts from when a KIP-848 group emptied: an active group's offsets stay
/// however long it runs; an empty group and its offsets go once retention passes.
#[tokio::test]
async fn offsets_retention_starts_when_the_group_empties() {
    bounded(async {
        let b = TestBroker::start_with(|c| {
            c.groups.offsets_partitions = 4;
            c.groups.consumer_session_timeout_ms = 5_000;
            c.groups.offsets_retention_ms = 300;
        })
        .await;
        let mut c = b.connect().await;
        topic(&mut c, "t", 1).await;
        let a = send_hb(&mut c, &join("g", "a", &["t"])).await;
        assert_eq!(a.member_epoch, 1);
        let code = |r: OffsetCommitResponse| r.topics[0].partitions[0].error_code;
        assert_eq!(code(c.send(9, &commit("g", "a", 1, 42)).await), 0);
        // Five retention periods with a live member: the offset stays.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(send_hb(&mut c, &hb("g", "a", 1)).await.error_code, 0);
        }
        let f = c.send(9, &fetch("g", "a", 1)).await;
        assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, 42);

        send_hb(&mut c, &hb("g", "a", -1)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let l = c.send(5, &ListGroupsRequest::default()).await;
            if l.groups.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the empty group never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let f = c.send(9, &fetch("g", "", -1)).await;
        assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, -1);
        b.stop().await;
    })
    .await;
}

async fn assignor_of(c: &mut Client, group: &str) -> String {
    let d = c
        .send(
            1,
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]),
        )
        .await;
    assert_eq!(d.groups[0].error_code, 0);
    d.groups[0].assignor_name.to_string()
}

/// `group.consumer.assignors`: only the listed assignors may be asked for
/// (`group.remote.assignor`), the first is the default, and a member's choice is used.
#[tokio::test]
async fn broker_assignors_bound_what_members_choose() {
    bounded(async {
        // Default list (uniform, range): no choice runs uniform, a choice of range runs range.
        let b = broker().await;
        let mut c = b.connect().await;
        topic(&mut c, "t", 2).await;
        assert_eq!(
            send_hb(&mut c, &join("g1", "a", &["t"])).await.error_code,
            0
        );
        assert_eq!(assignor_of(&mut c, "g1").await, "uniform");
        let range = join("g2", "a", &["t"]).with_server_assignor(Some(s("range")));
        assert_eq!(send_hb(&mut c, &range).await.error_code, 0);
        assert_eq!(assignor_of(&mut c, "g2").await, "range");
        b.stop().await;

        // Only range: it is the default, and uniform is refused.
        let b = TestBroker::start_with(|c| {
            c.groups.offsets_partitions = 4;
            c.groups.consumer_assignors = vec!["range"];
        })
        .await;
        let mut c = b.connect().await;
        topic(&mut c, "t", 2).await;
        let uniform = join("g", "a", &["t"]).with_server_assignor(Some(s("uniform")));
        assert_eq!(
            send_hb(&mut c, &uniform).await.error_code,
            ResponseError::UnsupportedAssignor.code()
        );
        assert_eq!(send_hb(&mut c, &join("g", "a", &["t"])).await.error_code, 0);
        assert_eq!(assignor_of(&mut c, "g").await, "range");
        b.stop().await;
    })
    .await;
}

/// ListGroups, DescribeGroups and ConsumerGroupDescribe on one classic and one KIP-848 group,
/// both Stable: each is listed with its type, protocol type and state, and each describe API
/// answers for its own kind only. The same body runs against Kafka 4.4 in
/// [`both_kinds_are_listed_and_described_as_kafka`].
async fn both_kinds(c: &mut Client, prefix: &str) {
    let topic_name = format!("{prefix}-t");
    let t = topic(c, &topic_name, 2).await;
    let (classic, consumer) = (format!("{prefix}-classic"), format!("{prefix}-consumer"));

    // Kafka creates `__consumer_offsets` on the first FindCoordinator: wait for it.
    for group in [&classic, &consumer] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let f = c
                .send(
                    3,
                    &FindCoordinatorRequest::default()
                        .with_key(s(group))
                        .with_key_type(0),
                )
                .await;
            if f.error_code == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no coordinator: {f:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // A classic group of one member, synced (Stable). Kafka answers NOT_COORDINATOR or
    // COORDINATOR_LOAD_IN_PROGRESS while the new partition's coordinator starts: retried.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s(&classic)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(s("range"))
        ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let joined = loop {
        let joined = c.send(3, &join).await;
        let starting = [
            ResponseError::NotCoordinator.code(),
            ResponseError::CoordinatorLoadInProgress.code(),
        ];
        if !starting.contains(&joined.error_code) || tokio::time::Instant::now() > deadline {
            break joined;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(joined.error_code, 0);
    let synced = c
        .send(
            3,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(s(&classic)))
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id.clone()),
        )
        .await;
    assert_eq!(synced.error_code, 0);

    // A KIP-848 group of one member owning both partitions (Stable).
    let mut m = Member::new(&consumer, &format!("{prefix}-member"), t);
    m.join(c, &topic_name).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while m.owns.len() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never assigned: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        m.beat(c).await;
    }
    m.beat(c).await;

    let listed = c.send(5, &ListGroupsRequest::default()).await;
    let find = |id: &str| {
        listed
            .groups
            .iter()
            .find(|g| g.group_id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} not listed: {:?}", listed.groups))
    };
    let (lc, lk) = (find(&classic), find(&consumer));
    assert_eq!(
        (
            lc.protocol_type.as_str(),
            lc.group_state.as_str(),
            lc.group_type.as_str()
        ),
        ("consumer", "Stable", "classic")
    );
    assert_eq!(
        (
            lk.protocol_type.as_str(),
            lk.group_state.as_str(),
            lk.group_type.as_str()
        ),
        ("consumer", "Stable", "consumer")
    );

    // DescribeGroups (v5): the classic group in full; the consumer group as Dead, no error.
    let d = c
        .send(
            5,
            &DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(s(&classic)), GroupId(s(&consumer))]),
        )
        .await;
    let by_id = |id: &str| {
        d.groups
            .iter()
            .find(|g| g.group_id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} not described: {:?}", d.groups))
    };
    let (dc, dk) = (by_id(&classic), by_id(&consumer));
    assert_eq!((dc.error_code, dc.group_state.as_str()), (0, "Stable"));
    assert_eq!(dc.protocol_type.as_str(), "consumer");
    assert_eq!(dc.protocol_data.as_str(), "range");
    assert_eq!(dc.members.len(), 1);
    assert_eq!(
        (dk.error_code, dk.group_state.as_str()),
        (0, "Dead"),
        "{dk:?}"
    );
    assert!(dk.members.is_empty());

    // ConsumerGroupDescribe: the consumer group in full; the classic one is not found.
    let d = c
        .send(
            0,
            &ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(s(&consumer)), GroupId(s(&classic))]),
        )
        .await;
    // Kafka answers in its own order (by coordinator partition), not the request's.
    let by_id = |id: &str| {
        d.groups
            .iter()
            .find(|g| g.group_id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} not described: {:?}", d.groups))
    };
    let (dk, dc) = (by_id(&consumer), by_id(&classic));
    assert_eq!((dk.error_code, dk.group_state.as_str()), (0, "Stable"));
    assert_eq!(dk.members.len(), 1);
    assert_eq!(dk.members[0].member_epoch, m.epoch);
    assert_eq!(
        dc.error_code,
        ResponseError::GroupIdNotFound.code(),
        "{dc:?}"
    );

    send_hb(c, &hb(&consumer, &m.id, -1)).await;
}

#[tokio::test]
async fn both_kinds_are_listed_and_described() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        both_kinds(&mut c, "kinds").await;
        b.stop().await;
    })
    .await;
}

/// [`both_kinds_are_listed_and_described`] against `KAFKA_BOOTSTRAP` (Apache Kafka 4.4 from
/// `scripts/kafka-local`): `KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo test --release -p
/// rill-broker --test consumer_groups -- --ignored`.
#[tokio::test]
#[ignore = "needs KAFKA_BOOTSTRAP"]
async fn both_kinds_are_listed_and_described_as_kafka() {
    let Some(addr) = std::env::var("KAFKA_BOOTSTRAP").ok() else {
        return;
    };
    let addr = tokio::net::lookup_host(addr)
        .await
        .expect("KAFKA_BOOTSTRAP resolves")
        .next()
        .expect("an address");
    let prefix = format!(
        "kinds-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis()
    );
    bounded(async move {
        let mut c = Client::connect(addr).await;
        both_kinds(&mut c, &prefix).await;
    })
    .await;
}
