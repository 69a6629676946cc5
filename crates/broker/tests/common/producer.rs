//! Raw-client helpers for tests of producers: batches with producer ids (idempotent,
//! transactional, control), topic creation, InitProducerId and produce requests.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{now_ms, Client, TEST_TIMEOUT};

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Creates `topic` (one partition) with the config overrides `configs`; returns the error
/// code.
pub async fn create_with_configs(
    client: &mut Client,
    topic: &str,
    configs: &[(&str, &str)],
) -> i16 {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            )]);
    client.send(7, &request).await.topics[0].error_code
}

pub async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

/// How a test batch is marked.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Data,
    Transactional,
    Control,
}

/// One v2 batch of `count` records from producer `pid`/`epoch` starting at sequence `seq`.
pub fn batch(pid: i64, epoch: i16, seq: i32, count: usize, kind: Kind) -> Bytes {
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

pub async fn create_topic(client: &mut Client, topic: &str) {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(true);
    // Kafka answers the first Metadata while it creates the topic: bounded retries.
    for _ in 0..50 {
        if client.send(12, &request).await.topics[0].error_code == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("topic {topic} was not created");
}

pub async fn init_producer_id(client: &mut Client) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    // Kafka may answer COORDINATOR_LOAD_IN_PROGRESS right after start: bounded retries.
    for _ in 0..100 {
        let response = client.send(4, &request).await;
        if response.error_code == 0 {
            return (response.producer_id.0, response.producer_epoch);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("InitProducerId kept failing");
}

/// Produces `records` (acks=all) and returns (error code, base offset).
pub async fn produce(client: &mut Client, topic: &str, records: Bytes) -> (i16, i64) {
    produce_as(client, None, topic, records).await
}

/// [`produce`] with the request's transactional id.
pub async fn produce_as(
    client: &mut Client,
    transactional_id: Option<&str>,
    topic: &str,
    records: Bytes,
) -> (i16, i64) {
    produce_to(client, transactional_id, topic, 0, records).await
}

/// [`produce_as`] to one partition.
pub async fn produce_to(
    client: &mut Client,
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_string()))),
        )
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let response = client.send(9, &request).await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// ListOffsets latest for partition 0 of `topic`, at either isolation level (read_committed:
/// the last stable offset).
pub async fn latest(client: &mut Client, topic: &str, read_committed: bool) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(i8::from(read_committed))
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
