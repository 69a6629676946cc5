//! Durable visibility and storage failures through the wire: an in-process broker over a file
//! I/O seam whose syncs a test can hold (so written data stays not durable for as long as it
//! likes) or fail for one partition's directory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::hold_io::{fetch_request, produce_request, HoldIo};
use common::{at_offset, now_ms, record_batch, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create_topic(client: &mut Client, topic: &str) {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(true);
    let response = client.send(12, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
}

async fn produce(client: &mut Client, topic: &str, records: Bytes, acks: i16) -> (i16, i64) {
    let response = client.send(9, &produce_request(topic, records, acks)).await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// (error code, high watermark, record bytes) of a fetch of partition 0.
async fn fetch(
    client: &mut Client,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Bytes) {
    let response = client
        .send(12, &fetch_request(topic, offset, max_wait_ms))
        .await;
    let p = &response.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

async fn latest_offset(client: &mut Client, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let response = client.send(7, &request).await;
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

async fn start(io: &Arc<HoldIo>) -> TestBroker {
    let io = Arc::clone(io);
    TestBroker::start_with(move |c| c.file_io = Some(io)).await
}

/// A record that is written but not durable is not fetched, not counted by ListOffsets, and
/// an acks=all producer is not answered; once the sync completes the fetcher parked on it
/// wakes with the record.
#[tokio::test]
async fn records_become_visible_only_when_durable() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let broker = start(&io).await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "vis").await;
        let first = record_batch(1, 10, now_ms());
        assert_eq!(produce(&mut client, "vis", first.clone(), 1).await, (0, 0));
        // Visible once the flusher has synced it (it does so by itself, for acks=1 too).
        let (code, hwm, records) = fetch(&mut client, "vis", 0, 5_000).await;
        assert_eq!((code, hwm), (0, 1));
        assert_eq!(records, first);

        io.hold(true);
        let second = record_batch(1, 10, now_ms());
        assert_eq!(produce(&mut client, "vis", second.clone(), 1).await, (0, 1));
        let (code, hwm, records) = fetch(&mut client, "vis", 1, 200).await;
        assert_eq!(
            (code, hwm),
            (0, 1),
            "the high watermark is the durable offset"
        );
        assert!(records.is_empty(), "an unflushed record was fetched");
        let (_, _, records) = fetch(&mut client, "vis", 0, 200).await;
        assert_eq!(
            records, first,
            "a read from before stops at the durable offset"
        );
        assert_eq!(latest_offset(&mut client, "vis").await, 1);

        // acks=all waits for the held sync.
        let mut producer = broker.connect().await;
        let third = record_batch(1, 10, now_ms());
        let pending = producer
            .send_only(9, &produce_request("vis", third.clone(), -1))
            .await;
        let mut consumer = broker.connect().await;
        let parked = consumer
            .send_only(12, &fetch_request("vis", 1, 20_000))
            .await;
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            producer.read_response::<ProduceRequest>(9, pending),
        )
        .await;
        assert!(early.is_err(), "acks=all answered before its sync");

        io.hold(false);
        let response = producer.read_response::<ProduceRequest>(9, pending).await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 2));
        // The parked fetch was woken by the flush (well before its 20 s wait) with the
        // record that became durable.
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            consumer.read_response::<FetchRequest>(12, parked),
        )
        .await
        .expect("the flush wakes long-polling fetches");
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert!(p
            .records
            .as_ref()
            .is_some_and(|r| r.starts_with(&at_offset(&second, 1))));
        assert_eq!(latest_offset(&mut client, "vis").await, 3);
        broker.stop().await;
    })
    .await;
}

/// `rill.high.watermark.visibility=written` restores Kafka's behaviour.
#[tokio::test]
async fn written_visibility_shows_records_before_they_are_durable() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let broker = start(&io).await;
        let mut client = broker.connect().await;
        let request = CreateTopicsRequest::default().with_topics(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                .with_name(name("kafka-like"))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![
                    kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default(
                    )
                    .with_name(StrBytes::from_static_str("rill.high.watermark.visibility"))
                    .with_value(Some(StrBytes::from_static_str("written"))),
                ]),
        ]);
        let response = client.send(5, &request).await;
        assert_eq!(response.topics[0].error_code, 0);
        io.hold(true);
        let batch = record_batch(1, 10, now_ms());
        assert_eq!(
            produce(&mut client, "kafka-like", batch.clone(), 1).await,
            (0, 0)
        );
        let (code, hwm, records) = fetch(&mut client, "kafka-like", 0, 200).await;
        assert_eq!((code, hwm), (0, 1));
        assert_eq!(records, batch);
        io.hold(false);
        broker.stop().await;
    })
    .await;
}

/// A partition whose fsync fails goes offline (KAFKA_STORAGE_ERROR for produce and fetch);
/// the partition beside it goes on taking and serving records.
#[tokio::test]
async fn a_failing_partition_goes_offline_and_its_neighbour_goes_on() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let broker = start(&io).await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "bad").await;
        create_topic(&mut client, "good").await;
        io.fail_under(&broker.dir.path().join("bad-0"));
        let batch = record_batch(1, 10, now_ms());
        let (code, _) = produce(&mut client, "bad", batch.clone(), -1).await;
        assert_eq!(code, 56, "KAFKA_STORAGE_ERROR for the failed sync");
        let (code, _) = produce(&mut client, "bad", batch.clone(), 1).await;
        assert_eq!(code, 56, "an offline partition takes no writes");
        let (code, _, _) = fetch(&mut client, "bad", 0, 0).await;
        assert_eq!(code, 56, "an offline partition serves no reads");
        for expected_offset in 0..3 {
            let (code, base) = produce(&mut client, "good", batch.clone(), -1).await;
            assert_eq!((code, base), (0, expected_offset));
        }
        let (code, hwm, records) = fetch(&mut client, "good", 0, 1_000).await;
        assert_eq!((code, hwm), (0, 3));
        assert!(records.starts_with(&batch));
        broker.stop().await;
    })
    .await;
}
