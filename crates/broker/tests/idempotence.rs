//! Idempotent producers over the wire, with a raw client: InitProducerId, retried batches
//! answered with their first offsets, gaps, stale epochs, client transaction markers, and
//! the state surviving a restart.

mod common;

use bytes::{Bytes, BytesMut};
use common::{now_ms, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_RECORD: i16 = 87;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

/// How a test batch is marked.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Data,
    Transactional,
    Control,
}

/// One v2 batch of `count` records from producer `pid`/`epoch` starting at sequence `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, count: usize, kind: Kind) -> Bytes {
    let timestamp = now_ms();
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: kind != Kind::Data,
            control: kind == Kind::Control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp,
            key: None,
            value: Some(Bytes::from(format!("p{pid}-e{epoch}-s{}", seq + i as i32))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
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

async fn init_producer_id(client: &mut Client) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let response = client.send(4, &request).await;
    assert_eq!(response.error_code, 0);
    (response.producer_id.0, response.producer_epoch)
}

/// Produces `records` (acks=all) and returns (error code, base offset).
async fn produce(client: &mut Client, topic: &str, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let response = client.send(9, &request).await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn log_end(client: &mut Client, topic: &str) -> i64 {
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

#[tokio::test]
async fn the_same_batch_twice_gets_the_same_offsets_and_is_stored_once() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "idem").await;
        let (pid, epoch) = init_producer_id(&mut client).await;
        assert_eq!(epoch, 0);
        assert_eq!(
            produce(&mut client, "idem", batch(pid, 0, 0, 3, Kind::Data)).await,
            (0, 0)
        );
        assert_eq!(
            produce(&mut client, "idem", batch(pid, 0, 3, 2, Kind::Data)).await,
            (0, 3)
        );
        // Both retried, in any order: the offsets they got the first time, nothing stored.
        assert_eq!(
            produce(&mut client, "idem", batch(pid, 0, 0, 3, Kind::Data)).await,
            (0, 0)
        );
        assert_eq!(
            produce(&mut client, "idem", batch(pid, 0, 3, 2, Kind::Data)).await,
            (0, 3)
        );
        assert_eq!(log_end(&mut client, "idem").await, 5);
        assert_eq!(
            produce(&mut client, "idem", batch(pid, 0, 5, 1, Kind::Data)).await,
            (0, 5)
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn gaps_stale_epochs_and_client_markers_are_refused_and_not_stored() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "strict").await;
        let (pid, _) = init_producer_id(&mut client).await;
        assert_eq!(
            produce(&mut client, "strict", batch(pid, 1, 0, 2, Kind::Data))
                .await
                .0,
            0
        );
        let gap = produce(&mut client, "strict", batch(pid, 1, 5, 1, Kind::Data)).await;
        assert_eq!(gap.0, OUT_OF_ORDER_SEQUENCE_NUMBER);
        let stale = produce(&mut client, "strict", batch(pid, 0, 2, 1, Kind::Data)).await;
        assert_eq!(stale.0, INVALID_PRODUCER_EPOCH);
        let bump_not_at_zero =
            produce(&mut client, "strict", batch(pid, 2, 2, 1, Kind::Data)).await;
        assert_eq!(bump_not_at_zero.0, OUT_OF_ORDER_SEQUENCE_NUMBER);
        let txn = produce(
            &mut client,
            "strict",
            batch(pid, 1, 2, 1, Kind::Transactional),
        )
        .await;
        assert_eq!(txn.0, INVALID_TXN_STATE);
        let marker = produce(&mut client, "strict", batch(pid, 1, 2, 1, Kind::Control)).await;
        assert_eq!(marker.0, INVALID_RECORD);
        assert_eq!(
            log_end(&mut client, "strict").await,
            2,
            "nothing refused was stored"
        );
        // The producer goes on where it was.
        assert_eq!(
            produce(&mut client, "strict", batch(pid, 1, 2, 1, Kind::Data)).await,
            (0, 2)
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn producer_state_and_id_allocation_survive_a_restart() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "durable").await;
        let (pid, _) = init_producer_id(&mut client).await;
        for seq in 0..10 {
            let (code, offset) =
                produce(&mut client, "durable", batch(pid, 0, seq, 1, Kind::Data)).await;
            assert_eq!((code, offset), (0, i64::from(seq)));
        }
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        // The last five batches are still known: retries are duplicates.
        for seq in 5..10 {
            let retry = produce(&mut client, "durable", batch(pid, 0, seq, 1, Kind::Data)).await;
            assert_eq!(retry, (0, i64::from(seq)));
        }
        assert_eq!(log_end(&mut client, "durable").await, 10);
        let gap = produce(&mut client, "durable", batch(pid, 0, 11, 1, Kind::Data)).await;
        assert_eq!(gap.0, OUT_OF_ORDER_SEQUENCE_NUMBER);
        let (pid_after, _) = init_producer_id(&mut client).await;
        assert!(
            pid_after > pid,
            "ids never repeat across restarts: {pid} then {pid_after}"
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn init_producer_id_always_gives_a_new_id_at_epoch_zero() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let (first, _) = init_producer_id(&mut client).await;
        // As Kafka: without a transactional id the given id and epoch are ignored.
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(first))
            .with_producer_epoch(3);
        let response = client.send(4, &request).await;
        assert_eq!(response.error_code, 0);
        assert_ne!(response.producer_id.0, first);
        assert_eq!(response.producer_epoch, 0);
        broker.stop().await;
    })
    .await;
}
