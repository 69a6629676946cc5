//! KIP-932 share groups over TCP with encoded requests: ShareGroupHeartbeat validation and
//! fencing, share session epochs, acquisition and delivery counts, acknowledgements (accept,
//! release, reject) and bad ones (another member's records, twice, outside the window,
//! garbage types), lock expiry and the delivery limit, and the share state across a crash.
//! Real clients (the Java `KafkaShareConsumer`) are in tests/compat/java.

mod common;

use common::hold_io::produce_request;
use common::{record_batch, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::share_acknowledge_request::{AcknowledgePartition, AcknowledgeTopic};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic,
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

const LOCK_MS: i64 = 400;

async fn broker_in(dir: tempfile::TempDir) -> TestBroker {
    TestBroker::start_in(dir, |c| {
        c.shares.state_partitions = 2;
        c.shares.record_lock_duration_ms = LOCK_MS;
        c.shares.delivery_count_limit = 3;
    })
    .await
}

async fn broker() -> TestBroker {
    broker_in(tempfile::tempdir().unwrap()).await
}

async fn topic(client: &mut Client, topic: &str) -> Uuid {
    let r = client
        .send(
            7,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_num_partitions(1)
                    .with_replication_factor(-1)]),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
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

async fn produce(client: &mut Client, topic: &str, count: usize) {
    let r = client
        .send(
            9,
            &produce_request(topic, record_batch(count, 8, common::now_ms()), -1),
        )
        .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

fn heartbeat(
    group: &str,
    member: &str,
    epoch: i32,
    topics: Option<&[&str]>,
) -> ShareGroupHeartbeatRequest {
    ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_subscribed_topic_names(topics.map(|t| t.iter().map(|n| TopicName(s(n))).collect()))
}

/// A ShareFetch of partition 0 of `id` with optional acknowledgements.
fn fetch(
    group: &str,
    member: &str,
    epoch: i32,
    id: Uuid,
    acks: Vec<(i64, i64, Vec<i8>)>,
    wait_ms: i32,
) -> ShareFetchRequest {
    ShareFetchRequest::default()
        .with_group_id(Some(GroupId(s(group))))
        .with_member_id(Some(s(member)))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(500)
        .with_batch_size(500)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition_index(0)
                .with_acknowledgement_batches(
                    acks.into_iter()
                        .map(|(f, l, t)| {
                            AcknowledgementBatch::default()
                                .with_first_offset(f)
                                .with_last_offset(l)
                                .with_acknowledge_types(t)
                        })
                        .collect(),
                )])])
}

fn acknowledge(
    group: &str,
    member: &str,
    epoch: i32,
    id: Uuid,
    acks: Vec<(i64, i64, Vec<i8>)>,
) -> ShareAcknowledgeRequest {
    ShareAcknowledgeRequest::default()
        .with_group_id(Some(GroupId(s(group))))
        .with_member_id(Some(s(member)))
        .with_share_session_epoch(epoch)
        .with_topics(vec![AcknowledgeTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![AcknowledgePartition::default()
                .with_partition_index(0)
                .with_acknowledgement_batches(
                    acks.into_iter()
                        .map(|(f, l, t)| {
                            share_acknowledge_request::AcknowledgementBatch::default()
                                .with_first_offset(f)
                                .with_last_offset(l)
                                .with_acknowledge_types(t)
                        })
                        .collect(),
                )])])
}

/// (first, last, delivery count) of the acquired records of the answer's one partition.
fn acquired(r: &ShareFetchResponse) -> Vec<(i64, i64, i16)> {
    r.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .flat_map(|p| p.acquired_records.iter())
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect()
}

fn ack_code(r: &ShareFetchResponse) -> i16 {
    r.responses[0].partitions[0].acknowledge_error_code
}

/// Sends a ShareAcknowledge and returns its one partition's error code.
async fn acknowledged(client: &mut Client, request: ShareAcknowledgeRequest) -> i16 {
    client.send(1, &request).await.responses[0].partitions[0].error_code
}

/// Joins `member` and opens its share session (epoch 0); the first fetch also sets the
/// share-partition's start at the log end (share.auto.offset.reset=latest).
async fn join_and_open(client: &mut Client, group: &str, member: &str, topic_name: &str, id: Uuid) {
    let r = client
        .send(1, &heartbeat(group, member, 0, Some(&[topic_name])))
        .await;
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let assignment = r.assignment.expect("assignment on join");
    assert_eq!(assignment.topic_partitions[0].topic_id, id);
    assert_eq!(assignment.topic_partitions[0].partitions, vec![0]);
    let r = client
        .send(1, &fetch(group, member, 0, id, vec![], 0))
        .await;
    assert_eq!(r.error_code, 0);
}

#[tokio::test]
async fn heartbeats_get_kafkas_codes_and_groups_are_listed() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        topic(&mut c, "t").await;
        let r = c.send(1, &heartbeat("g", "", 0, Some(&["t"]))).await;
        assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
        let r = c.send(1, &heartbeat("g", "m1", 0, None)).await;
        assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
        let r = c.send(1, &heartbeat("g", "m1", 0, Some(&["t"]))).await;
        assert_eq!((r.error_code, r.member_epoch), (0, 1));
        let r = c.send(1, &heartbeat("g", "m1", 7, None)).await;
        assert_eq!(r.error_code, ResponseError::FencedMemberEpoch.code());
        let r = c.send(1, &heartbeat("g", "nobody", 1, None)).await;
        assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
        let r = c.send(1, &heartbeat("g", "m1", 1, None)).await;
        assert_eq!((r.error_code, r.member_epoch), (0, 1));
        assert!(
            r.assignment.is_none(),
            "unchanged assignment is not sent again"
        );
        let r = c
            .send(
                1,
                &ShareGroupDescribeRequest::default()
                    .with_group_ids(vec![GroupId(s("g")), GroupId(s("none"))]),
            )
            .await;
        assert_eq!(r.groups[0].error_code, 0);
        assert_eq!(r.groups[0].group_state.as_str(), "Stable");
        assert_eq!(r.groups[0].members[0].member_id.as_str(), "m1");
        assert_eq!(
            r.groups[0].members[0].assignment.topic_partitions[0]
                .topic_name
                .0
                .as_str(),
            "t"
        );
        assert_eq!(
            r.groups[1].error_code,
            ResponseError::GroupIdNotFound.code()
        );
        let r = c.send(5, &ListGroupsRequest::default()).await;
        let g = r
            .groups
            .iter()
            .find(|g| g.group_id.0.as_str() == "g")
            .expect("listed");
        assert_eq!(g.group_type.as_str(), "share");
        let r = c.send(1, &heartbeat("g", "m1", -1, None)).await;
        assert_eq!((r.error_code, r.member_epoch), (0, -1));
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sessions_acquisition_and_acknowledgements() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let id = topic(&mut c, "t").await;
        // No session yet.
        let r = c.send(1, &fetch("g", "m1", 1, id, vec![], 0)).await;
        assert_eq!(r.error_code, ResponseError::ShareSessionNotFound.code());
        join_and_open(&mut c, "g", "m1", "t", id).await;
        join_and_open(&mut c, "g", "m2", "t", id).await;
        produce(&mut c, "t", 10).await;
        // A wrong epoch; then the right one (1) acquires all ten, delivered once.
        let r = c.send(1, &fetch("g", "m1", 5, id, vec![], 0)).await;
        assert_eq!(r.error_code, ResponseError::InvalidShareSessionEpoch.code());
        let r = c.send(1, &fetch("g", "m1", 1, id, vec![], 1_000)).await;
        assert_eq!(r.error_code, 0);
        assert_eq!(acquired(&r), vec![(0, 9, 1)]);
        assert_eq!(r.acquisition_lock_timeout_ms, LOCK_MS as i32);
        assert!(!r.responses[0].partitions[0]
            .records
            .as_ref()
            .unwrap()
            .is_empty());
        // m2 gets nothing: all are held.
        let r = c.send(1, &fetch("g", "m2", 1, id, vec![], 0)).await;
        assert!(acquired(&r).is_empty());
        // Bad acknowledgements leave the state as it was.
        assert_eq!(
            acknowledged(&mut c, acknowledge("g", "m2", 2, id, vec![(0, 0, vec![1])])).await,
            ResponseError::InvalidRecordState.code()
        );
        assert_eq!(
            acknowledged(&mut c, acknowledge("g", "m1", 2, id, vec![(0, 0, vec![9])])).await,
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(
            acknowledged(
                &mut c,
                acknowledge("g", "m1", 3, id, vec![(5, 20, vec![1])])
            )
            .await,
            ResponseError::InvalidRecordState.code()
        );
        assert_eq!(
            acknowledged(
                &mut c,
                acknowledge("g", "m1", 4, id, vec![(0, 3, vec![1, 1])])
            )
            .await,
            ResponseError::InvalidRequest.code()
        );
        let r = c
            .send(1, &acknowledge("g", "m1", 0, id, vec![(0, 0, vec![1])]))
            .await;
        assert_eq!(r.error_code, ResponseError::InvalidShareSessionEpoch.code());
        // Accept 0-4, release 5-8, reject 9 (piggy-backed on the next fetch of m1, which
        // gets the released ones back on their second delivery).
        let acks = vec![(0, 4, vec![1]), (5, 9, vec![2, 2, 2, 2, 3])];
        let r = c.send(1, &fetch("g", "m1", 5, id, acks, 1_000)).await;
        assert_eq!((r.error_code, ack_code(&r)), (0, 0));
        assert_eq!(acquired(&r), vec![(5, 8, 2)]);
        // Accepting twice is refused.
        let r = c
            .send(
                1,
                &acknowledge("g", "m1", 6, id, vec![(5, 8, vec![1]), (0, 0, vec![1])]),
            )
            .await;
        assert_eq!(
            r.responses[0].partitions[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(
            acknowledged(&mut c, acknowledge("g", "m1", 7, id, vec![(0, 0, vec![1])])).await,
            ResponseError::InvalidRecordState.code()
        );
        let r = c
            .send(1, &acknowledge("g", "m1", 8, id, vec![(5, 8, vec![1])]))
            .await;
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        // Everything is done: nothing more to acquire for anyone.
        let r = c.send(1, &fetch("g", "m2", 2, id, vec![], 0)).await;
        assert!(acquired(&r).is_empty());
        // Closing the session (-1) ends it.
        let r = c.send(1, &fetch("g", "m1", -1, id, vec![], 0)).await;
        assert_eq!(r.error_code, 0);
        let r = c.send(1, &fetch("g", "m1", 9, id, vec![], 0)).await;
        assert_eq!(r.error_code, ResponseError::ShareSessionNotFound.code());
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn expired_locks_redeliver_until_the_delivery_limit() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let id = topic(&mut c, "t").await;
        join_and_open(&mut c, "g", "m1", "t", id).await;
        join_and_open(&mut c, "g", "m2", "t", id).await;
        produce(&mut c, "t", 3).await;
        let r = c.send(1, &fetch("g", "m1", 1, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(0, 2, 1)]);
        // m2 waits in a long poll until m1's lock expires, then gets them, delivered twice.
        let started = std::time::Instant::now();
        let r = c.send(1, &fetch("g", "m2", 1, id, vec![], 5_000)).await;
        assert_eq!(acquired(&r), vec![(0, 2, 2)]);
        assert!(started.elapsed().as_millis() as i64 >= LOCK_MS - 50);
        // m1's acknowledgement comes too late.
        assert_eq!(
            acknowledged(&mut c, acknowledge("g", "m1", 2, id, vec![(0, 2, vec![1])])).await,
            ResponseError::InvalidRecordState.code()
        );
        // Third delivery, then the lock expires at the limit (3): archived, never again.
        let r = c.send(1, &fetch("g", "m1", 3, id, vec![], 5_000)).await;
        assert_eq!(acquired(&r), vec![(0, 2, 3)]);
        tokio::time::sleep(std::time::Duration::from_millis(LOCK_MS as u64 + 300)).await;
        let r = c.send(1, &fetch("g", "m2", 2, id, vec![], 300)).await;
        assert!(acquired(&r).is_empty(), "{:?}", acquired(&r));
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn accepted_records_stay_accepted_and_acquired_ones_return_after_a_crash() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let id = topic(&mut c, "t").await;
        join_and_open(&mut c, "g", "m1", "t", id).await;
        produce(&mut c, "t", 10).await;
        let r = c.send(1, &fetch("g", "m1", 1, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(0, 9, 1)]);
        // Accept 0-3 and 6 (answered once durable), keep 4, 5, 7-9 acquired.
        let r = c
            .send(
                1,
                &acknowledge("g", "m1", 2, id, vec![(0, 3, vec![1]), (6, 6, vec![1])]),
            )
            .await;
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        let dir = b.kill().await;
        let b = broker_in(dir).await;
        let mut c = b.connect().await;
        // The member and its session are gone: it rejoins and opens a new session.
        let r = c.send(1, &heartbeat("g", "m1", 1, None)).await;
        assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
        let r = c.send(1, &fetch("g", "m1", 3, id, vec![], 0)).await;
        assert_eq!(r.error_code, ResponseError::ShareSessionNotFound.code());
        let r = c.send(1, &heartbeat("g", "m1", 0, Some(&["t"]))).await;
        assert_eq!(r.error_code, 0);
        // The new session's first fetch acquires what was in flight, delivered once more;
        // the accepted records are never delivered again.
        let r = c.send(1, &fetch("g", "m1", 0, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(4, 5, 2), (7, 9, 2)]);
        b.stop().await;
    })
    .await;
}

/// Sets group configs of `group` (IncrementalAlterConfigs on a GROUP resource, type 32).
async fn group_configs(client: &mut Client, group: &str, configs: &[(&str, &str)]) {
    use kafka_protocol::messages::incremental_alter_configs_request as inc;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        inc::AlterConfigsResource::default()
            .with_resource_type(32)
            .with_resource_name(s(group))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        inc::AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(0)
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            ),
    ]);
    let r = client.send(1, &request).await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
}

/// Produces records with a `region` header each (one batch).
async fn produce_regions(client: &mut Client, topic: &str, regions: &[&str]) {
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = regions
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let mut headers = IndexMap::new();
            headers.insert(s("region"), Some(bytes::Bytes::from(region.to_string())));
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: common::now_ms(),
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(bytes::Bytes::from(format!("v{i}"))),
                headers,
            }
        })
        .collect();
    let mut out = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    let r = client
        .send(9, &produce_request(topic, out.freeze(), -1))
        .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

/// The records of `topic`-0 with their headers, read from the broker's log.
fn stored_records(b: &TestBroker, topic: &str) -> Vec<kafka_protocol::records::Record> {
    let log = b
        .state
        .logs
        .get_log(&rill_storage::TopicPartition::new(topic, 0))
        .unwrap()
        .expect("dead-letter topic exists");
    let mut bytes = bytes::Bytes::from(log.read_bytes(0, 1 << 20).unwrap());
    let mut out = Vec::new();
    // Bounded: every decode consumes one batch.
    while !bytes.is_empty() {
        let batch = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        out.extend(batch.records);
    }
    out
}

fn header(r: &kafka_protocol::records::Record, name: &str) -> String {
    let v = r
        .headers
        .get(&s(name))
        .cloned()
        .flatten()
        .unwrap_or_default();
    String::from_utf8(v.to_vec()).unwrap()
}

#[tokio::test]
async fn dead_letters_and_redelivery_backoff() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let id = topic(&mut c, "t").await;
        group_configs(
            &mut c,
            "g",
            &[
                ("share.auto.offset.reset", "earliest"),
                ("rill.share.dlq.topic", "dead"),
                ("rill.share.redelivery.backoff.ms", "300"),
                ("rill.share.redelivery.backoff.max.ms", "500"),
            ],
        )
        .await;
        produce_regions(&mut c, "t", &["eu", "us", "eu"]).await;
        let r = c.send(1, &heartbeat("g", "m1", 0, Some(&["t"]))).await;
        assert_eq!(r.error_code, 0);
        // earliest: the records produced before the group existed are delivered.
        let r = c.send(1, &fetch("g", "m1", 0, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(0, 2, 1)]);
        // Reject 0, release 1, accept 2.
        let r = c
            .send(
                1,
                &acknowledge("g", "m1", 1, id, vec![(0, 2, vec![3, 2, 1])]),
            )
            .await;
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        let released_at = std::time::Instant::now();
        let r = c.send(1, &fetch("g", "m1", 2, id, vec![], 0)).await;
        assert!(acquired(&r).is_empty(), "inside its backoff");
        let r = c.send(1, &fetch("g", "m1", 3, id, vec![], 5_000)).await;
        let waited = released_at.elapsed().as_millis() as i64;
        assert_eq!(acquired(&r), vec![(1, 1, 2)]);
        assert!(
            (270..=330 + 60).contains(&waited),
            "first backoff {waited} ms, want 300 (±10 %)"
        );
        // The second release doubles it to 600, capped at 500.
        let r = c
            .send(1, &acknowledge("g", "m1", 4, id, vec![(1, 1, vec![2])]))
            .await;
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        let released_at = std::time::Instant::now();
        let r = c.send(1, &fetch("g", "m1", 5, id, vec![], 5_000)).await;
        let waited = released_at.elapsed().as_millis() as i64;
        assert_eq!(acquired(&r), vec![(1, 1, 3)]);
        assert!(
            (450..=550 + 60).contains(&waited),
            "capped backoff {waited} ms, want 500 (±10 %)"
        );
        // Third delivery released at the limit (3): a dead letter.
        let r = c
            .send(1, &acknowledge("g", "m1", 6, id, vec![(1, 1, vec![2])]))
            .await;
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        let dead = stored_records(&b, "dead");
        assert_eq!(dead.len(), 2, "{dead:?}");
        assert_eq!(dead[0].key.as_deref(), Some(&b"k0"[..]));
        assert_eq!(dead[0].value.as_deref(), Some(&b"v0"[..]));
        assert_eq!(header(&dead[0], "region"), "eu");
        assert_eq!(header(&dead[0], "rill-dlq-topic"), "t");
        assert_eq!(header(&dead[0], "rill-dlq-partition"), "0");
        assert_eq!(header(&dead[0], "rill-dlq-offset"), "0");
        assert_eq!(header(&dead[0], "rill-dlq-group"), "g");
        assert_eq!(header(&dead[0], "rill-dlq-delivery-count"), "1");
        assert_eq!(header(&dead[0], "rill-dlq-reason"), "rejected");
        assert_eq!(header(&dead[1], "rill-dlq-offset"), "1");
        assert_eq!(header(&dead[1], "rill-dlq-delivery-count"), "3");
        assert_eq!(
            header(&dead[1], "rill-dlq-reason"),
            "delivery count limit reached"
        );
        let r = c.send(1, &fetch("g", "m1", 7, id, vec![], 300)).await;
        assert!(acquired(&r).is_empty());
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_share_filter_archives_records_that_do_not_match() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let id = topic(&mut c, "t").await;
        group_configs(
            &mut c,
            "g",
            &[
                ("share.auto.offset.reset", "earliest"),
                ("rill.share.filter", "region = 'eu'"),
                ("rill.share.filter.type", "SQL92"),
            ],
        )
        .await;
        produce_regions(&mut c, "t", &["eu", "us", "eu", "us", "us"]).await;
        let r = c.send(1, &heartbeat("g", "m1", 0, Some(&["t"]))).await;
        assert_eq!(r.error_code, 0);
        let r = c.send(1, &fetch("g", "m1", 0, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(0, 0, 1), (2, 2, 1)]);
        // The others were acknowledged without delivery: accepting the two ends the window.
        let r = c
            .send(
                1,
                &acknowledge("g", "m1", 1, id, vec![(0, 0, vec![1]), (2, 2, vec![1])]),
            )
            .await;
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        assert_eq!(
            acknowledged(&mut c, acknowledge("g", "m1", 2, id, vec![(1, 1, vec![1])])).await,
            ResponseError::InvalidRecordState.code()
        );
        let r = c.send(1, &fetch("g", "m1", 3, id, vec![], 200)).await;
        assert!(acquired(&r).is_empty());
        b.stop().await;
    })
    .await;
}

/// DescribeShareGroupOffsets of `group`: (topic, partition, start offset, topic id) of each
/// partition in the answer; `topics` None asks for every topic the group has state for.
async fn share_offsets(
    client: &mut Client,
    group: &str,
    topics: Option<&[(&str, &[i32])]>,
) -> Vec<(String, i32, i64, Uuid)> {
    use describe_share_group_offsets_request::{
        DescribeShareGroupOffsetsRequestGroup, DescribeShareGroupOffsetsRequestTopic,
    };
    let request = DescribeShareGroupOffsetsRequest::default().with_groups(vec![
        DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|(t, ps)| {
                        DescribeShareGroupOffsetsRequestTopic::default()
                            .with_topic_name(TopicName(s(t)))
                            .with_partitions(ps.to_vec())
                    })
                    .collect()
            })),
    ]);
    let r = client.send(0, &request).await;
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].error_code, 0);
    let mut out: Vec<_> = r.groups[0]
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                assert_eq!(p.error_code, 0);
                (
                    t.topic_name.to_string(),
                    p.partition_index,
                    p.start_offset,
                    t.topic_id,
                )
            })
        })
        .collect();
    out.sort();
    out
}

/// AlterShareGroupOffsets: the top-level code and each (topic, partition, code).
async fn alter_share_offsets(
    client: &mut Client,
    group: &str,
    offsets: &[(&str, i32, i64)],
) -> (i16, Vec<(String, i32, i16)>) {
    use alter_share_group_offsets_request::{
        AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
    };
    let topics = offsets
        .iter()
        .map(|(t, p, o)| {
            AlterShareGroupOffsetsRequestTopic::default()
                .with_topic_name(TopicName(s(t)))
                .with_partitions(vec![AlterShareGroupOffsetsRequestPartition::default()
                    .with_partition_index(*p)
                    .with_start_offset(*o)])
        })
        .collect();
    let r = client
        .send(
            0,
            &AlterShareGroupOffsetsRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(topics),
        )
        .await;
    let parts = r
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic_name.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    (r.error_code, parts)
}

/// DeleteShareGroupOffsets: the top-level code and each (topic, code).
async fn delete_share_offsets(
    client: &mut Client,
    group: &str,
    topics: &[&str],
) -> (i16, Vec<(String, i16)>) {
    let r = client
        .send(
            0,
            &DeleteShareGroupOffsetsRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(
                    topics
                        .iter()
                        .map(|t| {
                            delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic::default()
                                .with_topic_name(TopicName(s(t)))
                        })
                        .collect(),
                ),
        )
        .await;
    let topics = r
        .responses
        .iter()
        .map(|t| (t.topic_name.to_string(), t.error_code))
        .collect();
    (r.error_code, topics)
}

async fn delete_group(client: &mut Client, group: &str) -> i16 {
    let r = client
        .send(
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
        )
        .await;
    r.results[0].error_code
}

async fn listed_groups(client: &mut Client) -> Vec<String> {
    let r = client.send(5, &ListGroupsRequest::default()).await;
    r.groups.iter().map(|g| g.group_id.to_string()).collect()
}

async fn describe_share_group(client: &mut Client, group: &str) -> (i16, String, i32) {
    let r = client
        .send(
            1,
            &ShareGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]),
        )
        .await;
    let g = &r.groups[0];
    (g.error_code, g.group_state.to_string(), g.group_epoch)
}

/// A share group exists until it is deleted, as in Kafka (its `ShareGroupMetadata` record):
/// also once its only share-partition state was deleted and it has no members, and across a
/// crash. Created by AlterShareGroupOffsets (at epoch 1, as Kafka) or by a first join.
#[tokio::test]
async fn an_empty_share_group_outlives_its_offsets_its_members_and_a_crash() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let id = topic(&mut c, "t").await;
        let not_found = ResponseError::GroupIdNotFound.code();
        assert_eq!(describe_share_group(&mut c, "e").await.0, not_found);
        assert_eq!(alter_share_offsets(&mut c, "e", &[("t", 0, 0)]).await.0, 0);
        assert_eq!(
            describe_share_group(&mut c, "e").await,
            (0, "Empty".into(), 1)
        );
        let (code, topics) = delete_share_offsets(&mut c, "e", &["t"]).await;
        assert_eq!((code, topics), (0, vec![("t".into(), 0)]));
        assert_eq!(share_offsets(&mut c, "e", None).await, vec![]);
        assert_eq!(
            describe_share_group(&mut c, "e").await,
            (0, "Empty".into(), 1)
        );
        // A group whose only member left.
        join_and_open(&mut c, "j", "m1", "t", id).await;
        let r = c.send(1, &heartbeat("j", "m1", -1, None)).await;
        assert_eq!(r.error_code, 0);
        let dir = b.kill().await;
        let b = broker_in(dir).await;
        let mut c = b.connect().await;
        let listed = listed_groups(&mut c).await;
        assert!(listed.contains(&"e".to_string()), "{listed:?}");
        assert!(listed.contains(&"j".to_string()), "{listed:?}");
        assert_eq!(
            describe_share_group(&mut c, "e").await,
            (0, "Empty".into(), 1)
        );
        assert_eq!(describe_share_group(&mut c, "j").await.1, "Empty");
        // Deleted, it is gone, also after a crash.
        assert_eq!(delete_group(&mut c, "e").await, 0);
        assert_eq!(delete_group(&mut c, "e").await, not_found);
        assert_eq!(describe_share_group(&mut c, "e").await.0, not_found);
        let dir = b.kill().await;
        let b = broker_in(dir).await;
        let mut c = b.connect().await;
        assert!(!listed_groups(&mut c).await.contains(&"e".to_string()));
        assert_eq!(describe_share_group(&mut c, "e").await.0, not_found);
        assert_eq!(delete_group(&mut c, "j").await, 0);
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn share_group_admin_apis_describe_alter_and_delete_offsets_and_groups() {
    bounded(async {
        let b = broker().await;
        let mut c = b.connect().await;
        let id = topic(&mut c, "t").await;
        join_and_open(&mut c, "g", "m1", "t", id).await;
        produce(&mut c, "t", 10).await;
        let r = c.send(1, &fetch("g", "m1", 1, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(0, 9, 1)]);
        let r = c
            .send(1, &acknowledge("g", "m1", 2, id, vec![(0, 4, vec![1])]))
            .await;
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        // Kafka reports -1 (no state) for a missing partition or topic, not an error.
        assert_eq!(
            share_offsets(&mut c, "g", Some(&[("t", &[0, 1]), ("nope", &[0])])).await,
            vec![
                ("nope".into(), 0, -1, Uuid::nil()),
                ("t".into(), 0, 5, id),
                ("t".into(), 1, -1, id),
            ]
        );
        assert_eq!(
            share_offsets(&mut c, "g", None).await,
            vec![("t".into(), 0, 5, id)]
        );
        // A group with a member refuses changes.
        let non_empty = ResponseError::NonEmptyGroup.code();
        assert_eq!(
            alter_share_offsets(&mut c, "g", &[("t", 0, 2)]).await.0,
            non_empty
        );
        assert_eq!(delete_share_offsets(&mut c, "g", &["t"]).await.0, non_empty);
        assert_eq!(delete_group(&mut c, "g").await, non_empty);
        // Once it left: altering resets the share-partition (its in-flight records too).
        let r = c.send(1, &heartbeat("g", "m1", -1, None)).await;
        assert_eq!(r.error_code, 0);
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        let (code, parts) =
            alter_share_offsets(&mut c, "g", &[("t", 0, 2), ("t", 5, 0), ("nope", 0, 0)]).await;
        assert_eq!(code, 0);
        assert_eq!(
            parts,
            vec![
                ("t".into(), 0, 0),
                ("t".into(), 5, unknown),
                ("nope".into(), 0, unknown)
            ]
        );
        assert_eq!(
            share_offsets(&mut c, "g", None).await,
            vec![("t".into(), 0, 2, id)]
        );
        // The altered start survives a crash, and consumption restarts there.
        let dir = b.kill().await;
        let b = broker_in(dir).await;
        let mut c = b.connect().await;
        assert_eq!(
            share_offsets(&mut c, "g", None).await,
            vec![("t".into(), 0, 2, id)]
        );
        let r = c.send(1, &heartbeat("g", "m2", 0, Some(&["t"]))).await;
        assert_eq!(r.error_code, 0);
        let r = c.send(1, &fetch("g", "m2", 0, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(2, 9, 1)]);
        let r = c.send(1, &heartbeat("g", "m2", -1, None)).await;
        assert_eq!(r.error_code, 0);
        // Deleting offsets: whole topics the group has state for.
        let (code, topics) = delete_share_offsets(&mut c, "g", &["nope", "t"]).await;
        assert_eq!(code, 0);
        assert_eq!(topics, vec![("nope".into(), unknown), ("t".into(), 0)]);
        assert_eq!(share_offsets(&mut c, "g", None).await, vec![]);
        let (code, _) = delete_share_offsets(&mut c, "other", &["t"]).await;
        assert_eq!(code, ResponseError::GroupIdNotFound.code());
        // DeleteGroups deletes a share group with its state; both stay deleted after a crash.
        assert_eq!(alter_share_offsets(&mut c, "g", &[("t", 0, 3)]).await.0, 0);
        assert!(listed_groups(&mut c).await.contains(&"g".to_string()));
        assert_eq!(delete_group(&mut c, "g").await, 0);
        assert!(!listed_groups(&mut c).await.contains(&"g".to_string()));
        assert_eq!(
            delete_group(&mut c, "g").await,
            ResponseError::GroupIdNotFound.code()
        );
        let dir = b.kill().await;
        let b = broker_in(dir).await;
        let mut c = b.connect().await;
        assert!(!listed_groups(&mut c).await.contains(&"g".to_string()));
        assert_eq!(
            share_offsets(&mut c, "g", Some(&[("t", &[0])])).await,
            vec![("t".into(), 0, -1, id)]
        );
        // DeleteShareGroupState (inter-broker in Kafka) deletes named share-partitions.
        assert_eq!(alter_share_offsets(&mut c, "h", &[("t", 0, 1)]).await.0, 0);
        let r = c
            .send(
                0,
                &DeleteShareGroupStateRequest::default()
                    .with_group_id(s("h"))
                    .with_topics(vec![
                        delete_share_group_state_request::DeleteStateData::default()
                            .with_topic_id(id)
                            .with_partitions(vec![
                                delete_share_group_state_request::PartitionData::default()
                                    .with_partition(0),
                            ]),
                    ]),
            )
            .await;
        assert_eq!(r.results[0].partitions[0].error_code, 0);
        assert_eq!(share_offsets(&mut c, "h", None).await, vec![]);
        // Bad input: an empty group id, a negative start offset.
        assert_eq!(
            alter_share_offsets(&mut c, "", &[("t", 0, 1)]).await.0,
            ResponseError::InvalidGroupId.code()
        );
        assert_eq!(
            delete_share_offsets(&mut c, "", &["t"]).await.0,
            ResponseError::InvalidGroupId.code()
        );
        assert_eq!(
            alter_share_offsets(&mut c, "h", &[("t", 0, -5)]).await.1,
            vec![("t".into(), 0, ResponseError::InvalidRequest.code())]
        );
        assert_eq!(share_offsets(&mut c, "h", None).await, vec![]);
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_closed_connection_releases_its_sessions_records_at_once() {
    bounded(async {
        // Locks that outlast the test: only the connection's close can release the records.
        let b = TestBroker::start_in(tempfile::tempdir().unwrap(), |c| {
            c.shares.state_partitions = 2;
            c.shares.record_lock_duration_ms = 600_000;
        })
        .await;
        let mut c1 = b.connect().await;
        let id = topic(&mut c1, "t").await;
        join_and_open(&mut c1, "g", "m1", "t", id).await;
        let mut c2 = b.connect().await;
        join_and_open(&mut c2, "g", "m2", "t", id).await;
        produce(&mut c1, "t", 5).await;
        let r = c1.send(1, &fetch("g", "m1", 1, id, vec![], 1_000)).await;
        assert_eq!(acquired(&r), vec![(0, 4, 1)]);
        // m2 finds nothing while m1 holds every record.
        let r = c2.send(1, &fetch("g", "m2", 1, id, vec![], 200)).await;
        assert_eq!(acquired(&r), vec![]);
        // m1's connection dies (its member still heartbeats in the group's view): m2's
        // parked fetch gets the records, delivered a second time, long before any lock ends.
        drop(c1);
        let started = std::time::Instant::now();
        let r = c2.send(1, &fetch("g", "m2", 2, id, vec![], 10_000)).await;
        assert_eq!(acquired(&r), vec![(0, 4, 2)]);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Closing m2's connection after a reconnect that kept its epoch does not end the
        // session it moved to the new connection.
        let mut c3 = b.connect().await;
        let r = c3.send(1, &fetch("g", "m2", 3, id, vec![], 0)).await;
        assert_eq!(r.error_code, 0);
        drop(c2);
        // Give the broker time to see the close before the acknowledgement (ordering only).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let r = c3
            .send(1, &acknowledge("g", "m2", 4, id, vec![(0, 4, vec![1])]))
            .await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
        b.stop().await;
    })
    .await;
}
