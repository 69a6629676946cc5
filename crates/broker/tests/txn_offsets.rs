//! TxnOffsetCommit over TCP with encoded requests: every advertised version, the member checks,
//! bad input (each answered with Kafka's code and leaving no offset behind), and pending
//! transactional offsets as OffsetFetch sees them (invisible; UNSTABLE_OFFSET_COMMIT with
//! `require_stable`), across a restart. Markers come from the transaction coordinator; the
//! group side of commit and abort is tested in `coordinator/group/tests.rs`. The refusal codes
//! and the unstable answer were checked against Apache Kafka 4.4 (`KAFKA_BOOTSTRAP=... cargo
//! test --release -p rill-broker --test txn_offsets -- --ignored`, which runs them inside a
//! real transaction holding the groups, since Kafka verifies the transaction first).

mod common;

use bytes::Bytes;
use common::{Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

async fn broker_in(dir: tempfile::TempDir) -> TestBroker {
    TestBroker::start_in(dir, |c| {
        c.groups.initial_rebalance_delay_ms = 0;
        c.groups.min_session_timeout_ms = 100;
        c.groups.offsets_partitions = 4;
    })
    .await
}

async fn create_topic(c: &mut Client, topic: &str, partitions: i32) {
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

/// Codes a fresh Apache Kafka answers while its coordinators load: retried (bounded).
const LOADING: [i16; 3] = [14, 15, 16];

async fn init_producer_id(c: &mut Client) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    for _ in 0..100 {
        let r = c.send(4, &request).await;
        if r.error_code == 0 {
            return (r.producer_id.0, r.producer_epoch);
        }
        assert!(LOADING.contains(&r.error_code), "{}", r.error_code);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("InitProducerId kept failing");
}

/// FindCoordinator for `group` until it answers (Kafka creates `__consumer_offsets` on the
/// first one).
async fn find_coordinator(c: &mut Client, group: &str) {
    find_coordinator_of(c, group, 0).await
}

async fn find_coordinator_of(c: &mut Client, key: &str, key_type: i8) {
    for _ in 0..100 {
        let r = c
            .send(
                3,
                &FindCoordinatorRequest::default()
                    .with_key(s(key))
                    .with_key_type(key_type),
            )
            .await;
        if r.error_code == 0 {
            return;
        }
        assert!(LOADING.contains(&r.error_code), "{}", r.error_code);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("FindCoordinator kept failing");
}

/// Sends a TxnOffsetCommit, retrying while the group coordinator loads (Kafka only).
async fn send_txn(c: &mut Client, v: i16, r: &TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let mut last = 0;
    for _ in 0..100 {
        let response = c.send(v, r).await;
        last = code(&response);
        if !LOADING.contains(&last) {
            return response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("TxnOffsetCommit v{v}: the coordinator kept answering {last}");
}

/// A TxnOffsetCommit of one offset for `group` (member fields as given; v3+ carries them).
fn txn_commit(
    group: &str,
    (producer_id, epoch): (i64, i16),
    (generation, member, instance): (i32, &str, Option<&str>),
    (topic, partition, offset, metadata): (&str, i32, i64, &str),
) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("txn")))
        .with_group_id(GroupId(s(group)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(s(metadata)))])])
}

fn code(r: &TxnOffsetCommitResponse) -> i16 {
    r.topics[0].partitions[0].error_code
}

const NO_MEMBER: (i32, &str, Option<&str>) = (-1, "", None);

/// (offset, error) of one partition of "t" from OffsetFetch at `version`.
async fn fetch(
    c: &mut Client,
    version: i16,
    group: &str,
    partition: i32,
    require_stable: bool,
) -> (i64, i16) {
    fetch_in(c, version, group, "t", partition, require_stable).await
}

/// (offset, error) of one partition of `topic` from OffsetFetch at `version`.
async fn fetch_in(
    c: &mut Client,
    version: i16,
    group: &str,
    topic: &str,
    partition: i32,
    require_stable: bool,
) -> (i64, i16) {
    let mut request = OffsetFetchRequest::default().with_require_stable(require_stable);
    if version >= 8 {
        request = request.with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![partition])]))]);
        let r = c.send(version, &request).await;
        let p = &r.groups[0].topics[0].partitions[0];
        return (p.committed_offset, p.error_code);
    }
    request = request
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(vec![partition])]));
    let r = c.send(version, &request).await;
    let p = &r.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

async fn plain_commit(c: &mut Client, group: &str, partition: i32, offset: i64) {
    plain_commit_in(c, group, "t", partition, offset).await
}

async fn plain_commit_in(c: &mut Client, group: &str, topic: &str, partition: i32, offset: i64) {
    let r = c
        .send(
            8,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset)])]),
        )
        .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
}

/// Joins `group` as its only member and syncs: (generation, member id).
async fn join_and_sync(c: &mut Client, group: &str) -> (i32, String) {
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"meta"))])
    };
    let mut r = c.send(5, &join("")).await;
    if r.error_code == ResponseError::MemberIdRequired.code() {
        r = c.send(5, &join(&r.member_id)).await;
    }
    assert_eq!(r.error_code, 0);
    let sync = c
        .send(
            3,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(r.generation_id)
                .with_member_id(r.member_id.clone()),
        )
        .await;
    assert_eq!(sync.error_code, 0);
    (r.generation_id, r.member_id.to_string())
}

#[tokio::test]
async fn txn_offset_commit_bad_input_gets_kafka_codes_and_leaves_no_offset() {
    bounded(async {
        let broker = broker_in(tempfile::tempdir().unwrap()).await;
        let mut c = broker.connect().await;
        let versions = rill_broker::api_versions::supported_range(ApiKey::TxnOffsetCommit as i16);
        assert_eq!(versions, Some((0, 5)));
        // Without a transaction holding the group, every version is refused before the group
        // checks (KIP-890 verification; v5 would add the group itself, as a v2 client expects).
        let (pid, epoch) = init_producer_id(&mut c).await;
        create_topic(&mut c, "lonely", 1).await;
        for v in 0..=4 {
            let r = send_txn(
                &mut c,
                v,
                &txn_commit("g0", (pid, epoch), NO_MEMBER, ("lonely", 0, 1, "")),
            )
            .await;
            assert_ne!(code(&r), 0, "v{v}");
        }
        refusals_in_a_transaction(&mut c, "").await;
        broker.stop().await;
    })
    .await;
}

/// The same checks against another broker: `KAFKA_BOOTSTRAP=127.0.0.1:PORT cargo test
/// --release -p rill-broker --test txn_offsets -- --ignored` (how the expected codes were
/// checked against Apache Kafka 4.4).
#[tokio::test]
#[ignore = "needs KAFKA_BOOTSTRAP"]
async fn refusals_match_kafka() {
    let Ok(addr) = std::env::var("KAFKA_BOOTSTRAP") else {
        return;
    };
    bounded(async {
        let addr = tokio::net::lookup_host(addr).await.unwrap().next().unwrap();
        let mut c = Client::connect(addr).await;
        let suffix = format!("-{}", common::now_ms());
        refusals_in_a_transaction(&mut c, &suffix).await;
        eprintln!("TxnOffsetCommit refusals as expected at {addr}");
    })
    .await;
}

/// [`refusals`] by a transactional producer whose transaction holds the groups
/// (AddOffsetsToTxn): the broker verifies the transaction before the group checks, so a real
/// one is needed for the group checks to be what answers.
async fn refusals_in_a_transaction(c: &mut Client, suffix: &str) {
    let txn_id = "txn";
    find_coordinator_of(c, txn_id, 1).await;
    let producer = init_transactional(c, txn_id).await;
    for group in groups(suffix) {
        add_offsets(c, txn_id, producer, &group).await;
    }
    refusals(c, suffix, producer).await;
}

/// AddOffsetsToTxn v3 of `group` to `txn_id`'s transaction.
async fn add_offsets(c: &mut Client, txn_id: &str, producer: (i64, i16), group: &str) {
    find_coordinator(c, group).await;
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s(txn_id)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_group_id(GroupId(s(group)));
    let r = c.send(3, &request).await;
    assert_eq!(r.error_code, 0, "AddOffsetsToTxn {group}");
}

/// InitProducerId for `txn_id` (Kafka; retried while its coordinator loads).
async fn init_transactional(c: &mut Client, txn_id: &str) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(txn_id))))
        .with_transaction_timeout_ms(60_000);
    for _ in 0..100 {
        let r = c.send(4, &request).await;
        if r.error_code == 0 {
            return (r.producer_id.0, r.producer_epoch);
        }
        // CONCURRENT_TRANSACTIONS: a previous run's transaction is being aborted.
        let retriable = LOADING.contains(&r.error_code) || r.error_code == 51;
        assert!(retriable, "{}", r.error_code);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("InitProducerId kept failing");
}

/// The groups `refusals` uses: (plain, never created, with a member).
fn groups(suffix: &str) -> [String; 3] {
    [
        format!("g{suffix}"),
        format!("nogroup{suffix}"),
        format!("members{suffix}"),
    ]
}

/// A producer id -1, an empty group id, an unknown topic or partition, oversized metadata, a
/// generation for a group that does not exist, a stale generation, an unknown member and an
/// unknown static member: each answered with Kafka's code at every version, and no offset
/// written. Names get `suffix` (unique against a long-lived broker).
async fn refusals(c: &mut Client, suffix: &str, producer: (i64, i16)) {
    let topic = format!("t{suffix}");
    let [g, nogroup, members] = groups(suffix);
    create_topic(c, &topic, 2).await;
    for group in [&g, &nogroup, &members] {
        find_coordinator(c, group).await;
    }
    let (pid, epoch) = producer;
    for v in 0..=5 {
        let r = send_txn(
            c,
            v,
            &txn_commit(&g, (-1, 0), NO_MEMBER, (&topic, 0, 1, "")),
        )
        .await;
        assert_eq!(
            code(&r),
            ResponseError::InvalidProducerIdMapping.code(),
            "v{v}"
        );
        let r = send_txn(
            c,
            v,
            &txn_commit("", (pid, epoch), NO_MEMBER, (&topic, 0, 1, "")),
        )
        .await;
        assert_eq!(code(&r), ResponseError::InvalidGroupId.code(), "v{v}");
        let r = send_txn(
            c,
            v,
            &txn_commit(
                &g,
                (pid, epoch),
                NO_MEMBER,
                (&format!("nope{suffix}"), 0, 1, ""),
            ),
        )
        .await;
        assert_eq!(
            code(&r),
            ResponseError::UnknownTopicOrPartition.code(),
            "v{v}"
        );
        let r = send_txn(
            c,
            v,
            &txn_commit(&g, (pid, epoch), NO_MEMBER, (&topic, 9, 1, "")),
        )
        .await;
        assert_eq!(
            code(&r),
            ResponseError::UnknownTopicOrPartition.code(),
            "v{v}"
        );
        let big = "m".repeat(5_000);
        let r = send_txn(
            c,
            v,
            &txn_commit(&g, (pid, epoch), NO_MEMBER, (&topic, 0, 1, &big)),
        )
        .await;
        assert_eq!(
            code(&r),
            ResponseError::OffsetMetadataTooLarge.code(),
            "v{v}"
        );
    }
    // v3+: a generation for a group that does not exist.
    let r = send_txn(
        c,
        3,
        &txn_commit(&nogroup, (pid, epoch), (1, "m", None), (&topic, 0, 1, "")),
    )
    .await;
    assert_eq!(code(&r), ResponseError::IllegalGeneration.code());
    // v3+: member checks against a real group.
    let (generation, member) = join_and_sync(c, &members).await;
    let cases = [
        (
            (generation + 1, member.as_str(), None),
            ResponseError::IllegalGeneration,
        ),
        (
            (generation, "stranger", None),
            ResponseError::UnknownMemberId,
        ),
        (
            (generation, member.as_str(), Some("who")),
            ResponseError::UnknownMemberId,
        ),
    ];
    for (member_fields, want) in cases {
        let r = send_txn(
            c,
            3,
            &txn_commit(&members, (pid, epoch), member_fields, (&topic, 0, 1, "")),
        )
        .await;
        assert_eq!(code(&r), want.code(), "{member_fields:?}");
    }
    for group in [&g, &nogroup, &members] {
        for stable in [false, true] {
            assert_eq!(
                fetch_in(c, 7, group, &topic, 0, stable).await,
                (-1, 0),
                "{group}: nothing written"
            );
        }
    }
}

/// Transactional offsets are invisible to OffsetFetch until their marker; with
/// `require_stable` their partitions are UNSTABLE_OFFSET_COMMIT, also after a restart (the
/// pending offsets are replayed from `__consumer_offsets`). Every version writes.
#[tokio::test]
async fn pending_transactional_offsets_are_unstable_until_their_marker() {
    bounded(async {
        let broker = broker_in(tempfile::tempdir().unwrap()).await;
        let mut c = broker.connect().await;
        create_topic(&mut c, "t", 2).await;
        plain_commit(&mut c, "g", 0, 5).await;
        let (pid, epoch) = init_transactional(&mut c, "txn").await;
        add_offsets(&mut c, "txn", (pid, epoch), "g").await;
        for v in 0..=5 {
            let r = c
                .send(
                    v,
                    &txn_commit(
                        "g",
                        (pid, epoch),
                        NO_MEMBER,
                        ("t", 0, 10 + i64::from(v), ""),
                    ),
                )
                .await;
            assert_eq!(code(&r), 0, "v{v}");
        }
        // A member of the group commits in the transaction too (v3+ checks it).
        let (generation, member) = join_and_sync(&mut c, "members").await;
        add_offsets(&mut c, "txn", (pid, epoch), "members").await;
        let r = c
            .send(
                3,
                &txn_commit(
                    "members",
                    (pid, epoch),
                    (generation, &member, None),
                    ("t", 1, 7, ""),
                ),
            )
            .await;
        assert_eq!(code(&r), 0);

        check_pending(&mut c).await;
        let dir = broker.stop().await;
        let broker = broker_in(dir).await;
        let mut c = broker.connect().await;
        check_pending(&mut c).await;
        broker.stop().await;
    })
    .await;
}

/// What `pending_transactional_offsets_are_unstable_until_their_marker` wrote, as OffsetFetch
/// v7-9 sees it.
async fn check_pending(c: &mut Client) {
    for v in [7, 8, 9] {
        assert_eq!(fetch(c, v, "g", 0, false).await, (5, 0), "v{v}");
        assert_eq!(
            fetch(c, v, "g", 0, true).await,
            (-1, ResponseError::UnstableOffsetCommit.code()),
            "v{v}"
        );
        assert_eq!(fetch(c, v, "g", 1, true).await, (-1, 0), "v{v}");
        assert_eq!(
            fetch(c, v, "members", 1, true).await,
            (-1, ResponseError::UnstableOffsetCommit.code()),
            "v{v}"
        );
    }
}

/// What OffsetFetch answers for a partition with a pending transactional offset, against
/// another broker (`KAFKA_BOOTSTRAP`, see `refusals_match_kafka`): the plain offset without
/// `require_stable`, UNSTABLE_OFFSET_COMMIT and no offset with it, at v7-9.
#[tokio::test]
#[ignore = "needs KAFKA_BOOTSTRAP"]
async fn unstable_offsets_match_kafka() {
    let Ok(addr) = std::env::var("KAFKA_BOOTSTRAP") else {
        return;
    };
    bounded(async {
        let addr = tokio::net::lookup_host(addr).await.unwrap().next().unwrap();
        let mut c = Client::connect(addr).await;
        let suffix = common::now_ms();
        let (topic, group, txn_id) = (format!("tu-{suffix}"), format!("u-{suffix}"), "txn-u");
        create_topic(&mut c, &topic, 2).await;
        find_coordinator(&mut c, &group).await;
        find_coordinator_of(&mut c, txn_id, 1).await;
        plain_commit_in(&mut c, &group, &topic, 0, 5).await;
        let producer = init_transactional(&mut c, txn_id).await;
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s(txn_id)))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_group_id(GroupId(s(&group)));
        assert_eq!(c.send(3, &add).await.error_code, 0);
        let commit = txn_commit(&group, producer, NO_MEMBER, (&topic, 0, 10, ""))
            .with_transactional_id(TransactionalId(s(txn_id)));
        assert_eq!(code(&send_txn(&mut c, 3, &commit).await), 0);
        for v in [7, 8, 9] {
            assert_eq!(
                fetch_in(&mut c, v, &group, &topic, 0, false).await,
                (5, 0),
                "v{v}"
            );
            assert_eq!(
                fetch_in(&mut c, v, &group, &topic, 0, true).await,
                (-1, ResponseError::UnstableOffsetCommit.code()),
                "v{v}"
            );
            assert_eq!(
                fetch_in(&mut c, v, &group, &topic, 1, true).await,
                (-1, 0),
                "v{v}"
            );
        }
        eprintln!("unstable offsets as expected at {addr}");
    })
    .await;
}
