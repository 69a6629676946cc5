//! The consumer group APIs over TCP with encoded requests: the classic protocol's state
//! machine, its errors, every advertised version, bounds, and persistence across restarts.
//! Real clients in groups are tested in tests/compat.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

/// A broker whose groups rebalance at once and accept short sessions, so tests stay quick.
async fn broker() -> TestBroker {
    TestBroker::start_with(|c| {
        c.groups.initial_rebalance_delay_ms = 0;
        c.groups.min_session_timeout_ms = 100;
        c.groups.offsets_partitions = 4;
    })
    .await
}

fn join(group: &str, member: &str, instance: Option<&str>, session_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(session_ms)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"meta"))])
}

/// Joins as a new member, following MEMBER_ID_REQUIRED (v4+); returns the join response.
async fn join_new(
    c: &mut Client,
    version: i16,
    group: &str,
    instance: Option<&str>,
    session_ms: i32,
) -> JoinGroupResponse {
    let mut r = c
        .send(version, &join(group, "", instance, session_ms))
        .await;
    if r.error_code == ResponseError::MemberIdRequired.code() {
        assert!(version >= 4 && instance.is_none());
        assert!(!r.member_id.is_empty());
        r = c
            .send(version, &join(group, &r.member_id, instance, session_ms))
            .await;
    }
    r
}

fn sync(
    group: &str,
    generation: i32,
    member: &str,
    assignments: &[(&str, &[u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        )
}

fn heartbeat(group: &str, generation: i32, member: &str) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
}

fn commit(
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: &str,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(s(metadata)))])])
}

fn commit_code(r: &OffsetCommitResponse) -> i16 {
    r.topics[0].partitions[0].error_code
}

/// The committed offset of one partition, read with OffsetFetch at `version`.
async fn fetch_offset(
    c: &mut Client,
    version: i16,
    group: &str,
    topic: &str,
    partition: i32,
) -> (i64, String) {
    let mut request = OffsetFetchRequest::default();
    if version >= 8 {
        request = request.with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![partition])]))]);
        let r = c.send(version, &request).await;
        let p = &r.groups[0].topics[0].partitions[0];
        return (
            p.committed_offset,
            p.metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        );
    }
    request = request.with_group_id(gid(group)).with_topics(Some(vec![
        OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(vec![partition]),
    ]));
    let r = c.send(version, &request).await;
    let p = &r.topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

async fn create_topic(c: &mut Client, topic: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let r = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)]),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
}

async fn describe(c: &mut Client, group: &str) -> describe_groups_response::DescribedGroup {
    let r = c
        .send(
            5,
            &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
        )
        .await;
    r.groups.into_iter().next().unwrap()
}

#[tokio::test]
async fn one_member_cycle_at_every_version() {
    bounded(async {
        let broker = broker().await;
        let mut c = broker.connect().await;
        create_topic(&mut c, "t", 2).await;
        for version in 0..=9i16 {
            let group = format!("g-v{version}");
            let session = if version == 0 { 30_000 } else { 10_000 };
            let j = join_new(&mut c, version, &group, None, session).await;
            assert_eq!(j.error_code, 0, "join v{version}");
            assert_eq!(j.generation_id, 1);
            assert_eq!(j.leader, j.member_id, "a lone member leads");
            assert_eq!(j.members.len(), 1);
            let sync_version = version.min(5);
            let sr = c
                .send(
                    sync_version,
                    &sync(&group, 1, &j.member_id, &[(&j.member_id, b"assigned")]),
                )
                .await;
            assert_eq!(sr.error_code, 0);
            assert_eq!(&sr.assignment[..], b"assigned");
            let hb = c
                .send(version.min(4), &heartbeat(&group, 1, &j.member_id))
                .await;
            assert_eq!(hb.error_code, 0);
            let commit_version = version.clamp(2, 9);
            let cr = c
                .send(
                    commit_version,
                    &commit(
                        &group,
                        1,
                        &j.member_id,
                        "t",
                        1,
                        40 + i64::from(version),
                        "md",
                    ),
                )
                .await;
            assert_eq!(commit_code(&cr), 0, "commit v{commit_version}");
            let fetch_version = version.clamp(1, 9);
            assert_eq!(
                fetch_offset(&mut c, fetch_version, &group, "t", 1).await,
                (40 + i64::from(version), "md".to_string())
            );
            assert_eq!(
                fetch_offset(&mut c, fetch_version, &group, "t", 0).await.0,
                -1,
                "nothing committed there"
            );
            let leave = if version.min(5) >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(gid(&group))
                    .with_members(vec![
                        MemberIdentity::default().with_member_id(j.member_id.clone())
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(gid(&group))
                    .with_member_id(j.member_id.clone())
            };
            let lr = c.send(version.min(5), &leave).await;
            assert_eq!(lr.error_code, 0);
            assert!(lr.members.iter().all(|m| m.error_code == 0));
            assert_eq!(describe(&mut c, &group).await.group_state.as_str(), "Empty");
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn second_member_triggers_rebalance_and_stale_members_get_errors() {
    bounded(async {
        let broker = broker().await;
        let mut a = broker.connect().await;
        create_topic(&mut a, "t", 1).await;
        let ja = join_new(&mut a, 9, "g", None, 10_000).await;
        assert_eq!(ja.generation_id, 1);
        assert_eq!(
            a.send(5, &sync("g", 1, &ja.member_id, &[]))
                .await
                .error_code,
            0
        );
        assert_eq!(
            commit_code(
                &a.send(9, &commit("g", 1, &ja.member_id, "t", 0, 5, ""))
                    .await
            ),
            0
        );

        // B joins: its JoinGroup parks until A rejoins.
        let addr = broker.addr;
        let b_join = tokio::spawn(async move {
            let mut b = Client::connect(addr).await;
            let j = join_new(&mut b, 9, "g", None, 10_000).await;
            (b, j)
        });
        let mut hb = 0;
        for _ in 0..100 {
            hb = a
                .send(4, &heartbeat("g", 1, &ja.member_id))
                .await
                .error_code;
            if hb != 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(hb, ResponseError::RebalanceInProgress.code());
        let c = commit_code(
            &a.send(9, &commit("g", 1, &ja.member_id, "t", 0, 6, ""))
                .await,
        );
        assert_eq!(c, ResponseError::RebalanceInProgress.code());
        let ja2 = a.send(9, &join("g", &ja.member_id, None, 10_000)).await;
        let (mut b, jb) = b_join.await.unwrap();
        assert_eq!((ja2.error_code, jb.error_code), (0, 0));
        assert_eq!((ja2.generation_id, jb.generation_id), (2, 2));
        assert_eq!(ja2.leader, ja.member_id, "the leader stays");
        assert_eq!(ja2.members.len(), 2);
        assert!(jb.members.is_empty(), "followers do not see members");

        // B's SyncGroup waits for the leader's.
        let b_member = jb.member_id.to_string();
        let b_sync = tokio::spawn(async move {
            let r = b.send(5, &sync("g", 2, &b_member, &[])).await;
            (b, r)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sa = a
            .send(
                5,
                &sync(
                    "g",
                    2,
                    &ja.member_id,
                    &[(&ja.member_id, b"A"), (&jb.member_id, b"B")],
                ),
            )
            .await;
        let (mut b, sb) = b_sync.await.unwrap();
        assert_eq!(
            (&sa.assignment[..], &sb.assignment[..]),
            (&b"A"[..], &b"B"[..])
        );

        let stale = a
            .send(4, &heartbeat("g", 1, &ja.member_id))
            .await
            .error_code;
        assert_eq!(stale, ResponseError::IllegalGeneration.code());
        let unknown = b.send(4, &heartbeat("g", 2, "nobody")).await.error_code;
        assert_eq!(unknown, ResponseError::UnknownMemberId.code());
        let stale_commit = commit_code(
            &a.send(9, &commit("g", 1, &ja.member_id, "t", 0, 7, ""))
                .await,
        );
        assert_eq!(stale_commit, ResponseError::IllegalGeneration.code());
        let d = describe(&mut b, "g").await;
        assert_eq!(d.group_state.as_str(), "Stable");
        assert_eq!(d.protocol_data.as_str(), "range");
        assert_eq!(d.members.len(), 2);
        assert!(d
            .members
            .iter()
            .all(|m| m.client_host.starts_with("/127.0.0.1")));
        // A non-empty group cannot be deleted; its members can leave and then it can.
        let del = b
            .send(
                2,
                &DeleteGroupsRequest::default().with_groups_names(vec![gid("g")]),
            )
            .await;
        assert_eq!(
            del.results[0].error_code,
            ResponseError::NonEmptyGroup.code()
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn silent_member_expires_after_its_session() {
    bounded(async {
        let broker = broker().await;
        let mut c = broker.connect().await;
        let j = join_new(&mut c, 9, "g", None, 300).await;
        assert_eq!(
            c.send(5, &sync("g", 1, &j.member_id, &[])).await.error_code,
            0
        );
        let mut state = String::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            state = describe(&mut c, "g").await.group_state.to_string();
            if state == "Empty" {
                break;
            }
        }
        assert_eq!(state, "Empty");
        let hb = c.send(4, &heartbeat("g", 1, &j.member_id)).await.error_code;
        assert_eq!(hb, ResponseError::UnknownMemberId.code());
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn static_member_restart_keeps_assignment_without_rebalance() {
    bounded(async {
        let broker = broker().await;
        let mut a = broker.connect().await;
        let ja = join_new(&mut a, 9, "g", Some("instance-a"), 10_000).await;
        assert_eq!(
            a.send(5, &sync("g", 1, &ja.member_id, &[(&ja.member_id, b"mine")]))
                .await
                .error_code,
            0
        );
        // The consumer restarts: new connection, no member id, same instance id, and different
        // metadata (a restarted consumer owns no partitions yet).
        let mut a2 = broker.connect().await;
        let restarted = join("g", "", Some("instance-a"), 10_000).with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"meta, owning nothing")),
        ]);
        let j2 = a2.send(9, &restarted).await;
        assert_eq!(j2.error_code, 0);
        assert_eq!(j2.generation_id, 1, "no rebalance");
        assert_ne!(j2.member_id, ja.member_id, "a new member id");
        assert!(j2.skip_assignment, "the leader need not assign again");
        let s2 = a2.send(5, &sync("g", 1, &j2.member_id, &[])).await;
        assert_eq!((s2.error_code, &s2.assignment[..]), (0, &b"mine"[..]));
        // The old incarnation is fenced.
        let old = a
            .send(
                4,
                &HeartbeatRequest::default()
                    .with_group_id(gid("g"))
                    .with_generation_id(1)
                    .with_member_id(ja.member_id.clone())
                    .with_group_instance_id(Some(s("instance-a"))),
            )
            .await;
        assert_eq!(old.error_code, ResponseError::FencedInstanceId.code());
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_bounded_state() {
    bounded(async {
        let broker = TestBroker::start_with(|c| {
            c.groups.initial_rebalance_delay_ms = 0;
            c.groups.max_group_size = 5;
        })
        .await;
        let mut c = broker.connect().await;
        create_topic(&mut c, "t", 1).await;
        let code = |r: JoinGroupResponse| r.error_code;
        assert_eq!(
            code(c.send(9, &join("", "", None, 10_000)).await),
            ResponseError::InvalidGroupId.code()
        );
        assert_eq!(
            code(c.send(9, &join(&"g".repeat(2_000), "", None, 10_000)).await),
            ResponseError::InvalidGroupId.code()
        );
        assert_eq!(
            code(c.send(9, &join("g", "", None, 1)).await),
            ResponseError::InvalidSessionTimeout.code()
        );
        assert_eq!(
            code(c.send(9, &join("g", "", None, i32::MAX)).await),
            ResponseError::InvalidSessionTimeout.code()
        );
        assert_eq!(
            code(c.send(9, &join("g", "made-up", None, 10_000)).await),
            ResponseError::UnknownMemberId.code()
        );
        // A flood of new members: ids are handed out only up to group.max.size.
        let mut refused = 0;
        for _ in 0..20 {
            if code(c.send(9, &join("flood", "", None, 10_000)).await)
                == ResponseError::GroupMaxSizeReached.code()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 15);
        // Protocol type must match the group's.
        let j = join_new(&mut c, 9, "typed", None, 10_000).await;
        assert_eq!(j.error_code, 0);
        let other = join("typed", "", None, 10_000).with_protocol_type(s("connect"));
        assert_eq!(
            code(c.send(9, &other).await),
            ResponseError::InconsistentGroupProtocol.code()
        );
        // Offsets: unknown topic, oversized metadata, simple (group-less) commits.
        let unknown_topic =
            commit_code(&c.send(9, &commit("simple", -1, "", "nope", 0, 1, "")).await);
        assert_eq!(unknown_topic, ResponseError::UnknownTopicOrPartition.code());
        let big = commit_code(
            &c.send(9, &commit("simple", -1, "", "t", 0, 1, &"m".repeat(5_000)))
                .await,
        );
        assert_eq!(big, ResponseError::OffsetMetadataTooLarge.code());
        assert_eq!(
            commit_code(&c.send(9, &commit("simple", -1, "", "t", 0, 11, "")).await),
            0
        );
        assert_eq!(fetch_offset(&mut c, 9, "simple", "t", 0).await.0, 11);
        let del = c
            .send(
                2,
                &DeleteGroupsRequest::default()
                    .with_groups_names(vec![gid("missing"), gid("simple")]),
            )
            .await;
        assert_eq!(
            del.results[0].error_code,
            ResponseError::GroupIdNotFound.code()
        );
        assert_eq!(del.results[1].error_code, 0);
        assert_eq!(
            fetch_offset(&mut c, 9, "simple", "t", 0).await.0,
            -1,
            "deleted with its group"
        );
        // Nobody but the coordinator writes the offsets topic.
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let produce = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s("__consumer_offsets")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(common::record_batch(1, 10, 0)))])]);
        let r = c.send(9, &produce).await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::InvalidTopicException.code()
        );
        // Nor can a client delete it or change its partition count (the group hash uses it).
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
        let del = c
            .send(
                6,
                &DeleteTopicsRequest::default()
                    .with_timeout_ms(5_000)
                    .with_topics(vec![DeleteTopicState::default()
                        .with_name(Some(TopicName(s("__consumer_offsets"))))]),
            )
            .await;
        assert_eq!(
            del.responses[0].error_code,
            ResponseError::InvalidTopicException.code()
        );
        let grow = c
            .send(
                3,
                &CreatePartitionsRequest::default()
                    .with_timeout_ms(5_000)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(TopicName(s("__consumer_offsets")))
                        .with_count(60)]),
            )
            .await;
        assert_eq!(
            grow.results[0].error_code,
            ResponseError::InvalidTopicException.code()
        );
        assert_eq!(
            commit_code(&c.send(9, &commit("simple", -1, "", "t", 0, 12, "")).await),
            0,
            "the coordinator still writes"
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn offsets_and_static_members_survive_restart() {
    bounded(async {
        let broker = broker().await;
        let mut c = broker.connect().await;
        create_topic(&mut c, "t", 3).await;
        let j = join_new(&mut c, 9, "g", Some("keeper"), 60_000).await;
        assert_eq!(
            c.send(5, &sync("g", 1, &j.member_id, &[(&j.member_id, b"p0-2")]))
                .await
                .error_code,
            0
        );
        for p in 0..3 {
            assert_eq!(
                commit_code(
                    &c.send(
                        9,
                        &commit("g", 1, &j.member_id, "t", p, 100 + i64::from(p), "x")
                    )
                    .await
                ),
                0
            );
        }
        drop(c);
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |c| {
            c.groups.initial_rebalance_delay_ms = 0;
            c.groups.offsets_partitions = 4;
        })
        .await;
        let mut c = broker.connect().await;
        for p in 0..3 {
            assert_eq!(
                fetch_offset(&mut c, 9, "g", "t", p).await,
                (100 + i64::from(p), "x".to_string())
            );
        }
        let d = describe(&mut c, "g").await;
        assert_eq!(d.group_state.as_str(), "Stable");
        assert_eq!(d.members.len(), 1);
        assert_eq!(
            d.members[0].group_instance_id.as_ref().map(|i| i.as_str()),
            Some("keeper")
        );
        // The static member comes back after the restart and keeps its assignment.
        let j2 = c.send(9, &join("g", "", Some("keeper"), 60_000)).await;
        assert_eq!((j2.error_code, j2.generation_id), (0, 1));
        let s2 = c.send(5, &sync("g", 1, &j2.member_id, &[])).await;
        assert_eq!(&s2.assignment[..], b"p0-2");
        let listed = c.send(5, &ListGroupsRequest::default()).await;
        assert!(listed
            .groups
            .iter()
            .any(|g| g.group_id.as_str() == "g" && g.group_state.as_str() == "Stable"));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn find_coordinator_at_every_version() {
    bounded(async {
        let broker = broker().await;
        let mut c = broker.connect().await;
        for version in 0..=5i16 {
            let request = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")])
            } else {
                FindCoordinatorRequest::default().with_key(s("a"))
            };
            let r = c.send(version, &request).await;
            if version >= 4 {
                assert_eq!(r.coordinators.len(), 2);
                assert!(r
                    .coordinators
                    .iter()
                    .all(|k| k.error_code == 0 && k.port == broker.addr.port() as i32));
            } else {
                assert_eq!((r.error_code, r.port), (0, broker.addr.port() as i32));
            }
        }
        let r = c
            .send(1, &FindCoordinatorRequest::default().with_key(s("")))
            .await;
        assert_eq!(r.error_code, ResponseError::InvalidGroupId.code());
        broker.stop().await;
    })
    .await;
}

/// A silent static member's session ends at its deadline, not at the next sweep.
///
/// What clients see is exact: DescribeGroups and DeleteGroups apply a deadline that has passed
/// before answering, so a DescribeGroups answered before the earliest possible deadline never
/// shows the group empty, one sent after the latest possible deadline never shows it Stable,
/// and DeleteGroups 5 ms after the deadline deletes it as empty (Kafka answers all three so).
///
/// The timer task that ends sessions nobody asks about fires within a few ms of the deadline;
/// it is measured by reading the group's state in memory (no request) every millisecond, and
/// the median of five rounds must be within 10 ms (a 100 ms sweep gives a median near 50 ms).
/// Broker and test share one process: when the poller itself was descheduled for more than
/// 5 ms just before it saw the group empty, the round says nothing about the timer and another
/// is run (at most 15). The figures are printed.
#[tokio::test]
async fn static_member_session_ends_at_its_deadline() {
    bounded(async {
        let broker = broker().await;
        let mut c = broker.connect().await;
        let mut probe = broker.connect().await;
        const SESSION: Duration = Duration::from_millis(400);
        const LATE_MAX: Duration = Duration::from_millis(10);
        const POLL: Duration = Duration::from_millis(1);
        const ROUNDS: usize = 5;
        const ROUNDS_MAX: usize = 15;
        const POLL_GAP_MAX: Duration = Duration::from_millis(5);
        let groups = std::sync::Arc::clone(&broker.state.groups);
        let stable_in_memory = |group: &str| {
            groups
                .with_group(group, |g| g.state.name() == "Stable")
                .unwrap_or(false)
        };
        let mut timer_late = Vec::with_capacity(ROUNDS);
        let mut noisy = 0;
        for round in 0..ROUNDS_MAX {
            let last = timer_late.len() == ROUNDS;
            let group = format!("timed-{round}");
            let j = join_new(
                &mut c,
                9,
                &group,
                Some("static-1"),
                SESSION.as_millis() as i32,
            )
            .await;
            assert_eq!(j.error_code, 0);
            // The leader's SyncGroup restarts the session (as its join did): the deadline lies
            // between SESSION after sending the sync and SESSION after its answer.
            let sync_sent = tokio::time::Instant::now();
            let sync = c
                .send(5, &sync(&group, j.generation_id, &j.member_id, &[]))
                .await;
            let sync_answered = tokio::time::Instant::now();
            assert_eq!(sync.error_code, 0);
            let earliest = sync_sent + SESSION;
            let latest = sync_answered + SESSION;
            tokio::time::sleep_until(earliest - Duration::from_millis(20)).await;
            let state = describe(&mut probe, &group).await.group_state.to_string();
            if state != "Stable" {
                assert!(
                    tokio::time::Instant::now() >= earliest,
                    "round {round}: {state} before its deadline"
                );
            }
            if last {
                tokio::time::sleep_until(latest + Duration::from_millis(5)).await;
                let r = probe
                    .send(
                        2,
                        &DeleteGroupsRequest::default().with_groups_names(vec![gid(&group)]),
                    )
                    .await;
                assert_eq!(
                    r.results[0].error_code, 0,
                    "deleted as empty, not NON_EMPTY_GROUP"
                );
                break;
            }
            // The timer task, unobserved: poll the state in memory (bounded: a second).
            tokio::time::sleep_until(earliest).await;
            let mut polled = tokio::time::Instant::now();
            let (fired_seen, gap) = loop {
                let now = tokio::time::Instant::now();
                if !stable_in_memory(&group) {
                    break (now, now - polled);
                }
                polled = now;
                assert!(
                    now < latest + Duration::from_secs(1),
                    "round {round}: never ended"
                );
                tokio::time::sleep(POLL).await;
            };
            let late = fired_seen.saturating_duration_since(latest);
            // A request sent after the latest deadline sees the group empty, exactly.
            assert_eq!(
                describe(&mut probe, &group).await.group_state.as_str(),
                "Empty",
                "round {round}"
            );
            eprintln!(
                "round {round}: the timer emptied the group {late:?} after the latest deadline \
                 (seen within {:?} of the earliest; poll gap {gap:?}; sync took {:?})",
                fired_seen - earliest,
                sync_answered - sync_sent
            );
            if gap > POLL_GAP_MAX && late > LATE_MAX {
                noisy += 1;
            } else {
                timer_late.push(late);
            }
        }
        assert_eq!(
            timer_late.len(),
            ROUNDS,
            "{noisy} of {ROUNDS_MAX} rounds had the poller descheduled"
        );
        // A request in the window: sent after the latest deadline, answered Empty at once,
        // whether or not the timer task ran yet.
        let group = "timed-asked";
        let j = join_new(
            &mut c,
            9,
            group,
            Some("static-1"),
            SESSION.as_millis() as i32,
        )
        .await;
        let sync = c
            .send(5, &sync(group, j.generation_id, &j.member_id, &[]))
            .await;
        assert_eq!(sync.error_code, 0);
        tokio::time::sleep_until(tokio::time::Instant::now() + SESSION).await;
        assert_eq!(
            describe(&mut probe, group).await.group_state.as_str(),
            "Empty"
        );
        timer_late.sort();
        let median = timer_late[ROUNDS / 2];
        assert!(
            median <= LATE_MAX,
            "the timer task's median lateness {median:?} over {timer_late:?}"
        );
        broker.stop().await;
    })
    .await;
}

/// LeaveGroup of the last member empties the group, and its record (state Empty) is written to
/// `__consumer_offsets`: the answer comes once that record is durable, as Kafka's coordinator
/// answers a write once its records are committed. With syncs held, no answer; released, the
/// leave succeeds.
#[tokio::test]
async fn leave_group_answers_once_the_emptied_groups_record_is_durable() {
    use common::hold_io::{Held, HoldIo};
    use std::sync::Arc;
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let seam = Arc::clone(&io);
        let broker = TestBroker::start_with(move |c| {
            c.file_io = Some(seam);
            c.groups.initial_rebalance_delay_ms = 0;
            c.groups.offsets_partitions = 1;
        })
        .await;
        let mut c = broker.connect().await;
        let j = join_new(&mut c, 9, "leaving", None, 10_000).await;
        assert_eq!(j.error_code, 0);
        let synced = c.send(5, &sync("leaving", 1, &j.member_id, &[])).await;
        assert_eq!(synced.error_code, 0);

        let held = Held::new(&io);
        let leave = LeaveGroupRequest::default()
            .with_group_id(gid("leaving"))
            .with_members(vec![
                MemberIdentity::default().with_member_id(j.member_id.clone())
            ]);
        let id = c.send_only(5, &leave).await;
        let early = tokio::time::timeout(Duration::from_millis(300), c.read_frame());
        assert!(
            early.await.is_err(),
            "answered before the record was durable"
        );
        drop(held);
        let r = c.read_response::<LeaveGroupRequest>(5, id).await;
        assert_eq!(r.error_code, 0);
        assert!(r.members.iter().all(|m| m.error_code == 0));
        broker.stop().await;
    })
    .await;
}
