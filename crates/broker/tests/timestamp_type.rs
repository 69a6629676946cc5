//! `message.timestamp.type` over the wire: a LogAppendTime topic stamps produced batches with
//! the broker's time (fetched records carry it, Produce answers it as `log_append_time_ms`,
//! ListOffsets finds records by it); CreateTime keeps the producer's; bad values are refused.

mod common;

use common::producer::{bounded, create_with_configs as create, name, s};

use bytes::Bytes;
use common::{now_ms, record_batch_with, Client, TestBroker};
use kafka_protocol::messages::alter_configs_request as alter;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};

const KEY: &str = "message.timestamp.type";
const INVALID_CONFIG: i16 = 40;

/// (value, source) of `KEY` for `topic`.
async fn described(client: &mut Client, topic: &str) -> (String, i8) {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configuration_keys(Some(vec![s(KEY)]))]);
    let response = client.send(4, &request).await;
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    assert_eq!(result.configs.len(), 1, "{KEY} is described");
    let entry = &result.configs[0];
    (
        entry.value.as_deref().unwrap_or("").to_string(),
        entry.config_source,
    )
}

/// Produces `records` to partition 0 (v9, acks=all); returns (base offset, log append time).
async fn produce(client: &mut Client, topic: &str, records: Bytes) -> (i64, i64) {
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
    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    (p.base_offset, p.log_append_time_ms)
}

/// (offset, timestamp, timestamp type) of every record of partition 0 from offset 0.
async fn fetch_all(client: &mut Client, topic: &str) -> Vec<(i64, i64, TimestampType)> {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.send(12, &request).await;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let mut bytes = p.records.clone().unwrap_or_default();
    // Decoding checks each batch's CRC-32C.
    let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("batches decode");
    sets.iter()
        .flat_map(|set| &set.records)
        .map(|r| (r.offset, r.timestamp, r.timestamp_type))
        .collect()
}

/// ListOffsets by `timestamp`: (offset, timestamp).
async fn offset_for(client: &mut Client, topic: &str, timestamp: i64) -> (i64, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response = client.send(7, &request).await;
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.offset, p.timestamp)
}

/// Waits until the wall clock has moved past `t`, so consecutive appends get distinct times.
async fn clock_past(t: i64) {
    for _ in 0..500 {
        if now_ms() > t {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the clock did not move");
}

#[tokio::test]
async fn log_append_time_topics_stamp_batches_with_the_broker_time() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.auto_create_topics = false).await;
        let mut client = broker.connect().await;
        assert_eq!(
            create(&mut client, "lat", &[(KEY, "LogAppendTime")]).await,
            0
        );
        assert_eq!(
            described(&mut client, "lat").await,
            ("LogAppendTime".into(), 1)
        );
        assert_eq!(create(&mut client, "ct", &[]).await, 0);
        assert_eq!(described(&mut client, "ct").await, ("CreateTime".into(), 5));

        // The producer's clock is half an hour ahead: its timestamps must not survive (a
        // lookup reading them inside a compressed batch would find the wrong record).
        let create_time = now_ms() + 1_800_000;
        let mut appends = Vec::new();
        for codec in [Compression::None, Compression::Zstd, Compression::Gzip] {
            let before = now_ms();
            let (base, time) = produce(
                &mut client,
                "lat",
                record_batch_with(3, 50, create_time, codec),
            )
            .await;
            let after = now_ms();
            assert!(
                (before..=after).contains(&time),
                "{codec:?}: log_append_time_ms {time} outside [{before}, {after}]"
            );
            appends.push((base, time));
            clock_past(after).await;
        }
        let records = fetch_all(&mut client, "lat").await;
        assert_eq!(records.len(), 9);
        for (offset, timestamp, kind) in records {
            let (_, time) = appends
                .iter()
                .rev()
                .find(|(base, _)| *base <= offset)
                .unwrap();
            assert_eq!(
                (timestamp, kind),
                (*time, TimestampType::LogAppend),
                "offset {offset}"
            );
        }
        // Looked up by append time, each batch is found at its first record.
        for &(base, time) in &appends {
            assert_eq!(offset_for(&mut client, "lat", time).await, (base, time));
        }
        assert_eq!(
            offset_for(&mut client, "lat", create_time).await,
            (-1, -1),
            "the producer's timestamps are gone"
        );
        let last = *appends.last().unwrap();
        assert_eq!(
            offset_for(&mut client, "lat", -3).await,
            last,
            "MAX_TIMESTAMP"
        );

        // CreateTime: -1 in the answer, the producer's timestamps in the records.
        let create_time = now_ms() - 3_600_000;
        let (_, time) = produce(
            &mut client,
            "ct",
            record_batch_with(2, 10, create_time, Compression::Lz4),
        )
        .await;
        assert_eq!(time, -1);
        let records = fetch_all(&mut client, "ct").await;
        assert_eq!(
            records,
            vec![
                (0, create_time, TimestampType::Creation),
                (1, create_time + 1, TimestampType::Creation)
            ]
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn timestamp_type_is_altered_reset_and_validated() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.auto_create_topics = false).await;
        let mut client = broker.connect().await;
        for bad in ["logappendtime", "LogAppend", "", "NoTimestampType"] {
            assert_eq!(
                create(&mut client, "bad", &[(KEY, bad)]).await,
                INVALID_CONFIG,
                "{bad:?}"
            );
        }
        assert_eq!(create(&mut client, "t", &[]).await, 0);
        let create_time = now_ms() - 60_000;

        let incremental = |op: i8, value: Option<&str>| {
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![incremental::AlterableConfig::default()
                        .with_name(s(KEY))
                        .with_config_operation(op)
                        .with_value(value.map(s))]),
            ])
        };
        let set = client.send(1, &incremental(0, Some("LogAppendTime"))).await;
        assert_eq!(set.responses[0].error_code, 0);
        assert_eq!(
            described(&mut client, "t").await,
            ("LogAppendTime".into(), 1)
        );
        let (_, stamped) = produce(
            &mut client,
            "t",
            record_batch_with(1, 10, create_time, Compression::None),
        )
        .await;
        assert!(stamped > create_time);

        let bad = client.send(1, &incremental(0, Some("Whenever"))).await;
        assert_eq!(bad.responses[0].error_code, INVALID_CONFIG);
        let delete = client.send(1, &incremental(1, None)).await;
        assert_eq!(delete.responses[0].error_code, 0);
        assert_eq!(described(&mut client, "t").await, ("CreateTime".into(), 5));
        let (_, time) = produce(
            &mut client,
            "t",
            record_batch_with(1, 10, create_time, Compression::None),
        )
        .await;
        assert_eq!(time, -1);

        let alter = |value: &str| {
            AlterConfigsRequest::default().with_resources(vec![
                alter::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![alter::AlterableConfig::default()
                        .with_name(s(KEY))
                        .with_value(Some(s(value)))]),
            ])
        };
        assert_eq!(
            client.send(2, &alter("createtime")).await.responses[0].error_code,
            INVALID_CONFIG
        );
        assert_eq!(
            client.send(2, &alter("LogAppendTime")).await.responses[0].error_code,
            0
        );
        assert_eq!(
            described(&mut client, "t").await,
            ("LogAppendTime".into(), 1)
        );

        // Stamped and unstamped batches side by side, each read as it was written.
        let records = fetch_all(&mut client, "t").await;
        assert_eq!(
            records,
            vec![
                (0, stamped, TimestampType::LogAppend),
                (1, create_time, TimestampType::Creation)
            ]
        );
        // The setting survives a restart.
        drop(client);
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |c| c.auto_create_topics = false).await;
        let mut client = broker.connect().await;
        assert_eq!(
            described(&mut client, "t").await,
            ("LogAppendTime".into(), 1)
        );
        broker.stop().await;
    })
    .await;
}
