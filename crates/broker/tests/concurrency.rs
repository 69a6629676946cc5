//! Many producers and long-polling consumers at once: every acknowledged batch is fetched,
//! in offset order, exactly once, byte for byte.

mod common;

use std::collections::HashMap;

use bytes::{Buf, Bytes};
use common::{now_ms, record_batch, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const PARTITIONS: i32 = 4;
const PRODUCERS: usize = 6;
const BATCHES_PER_PRODUCER: usize = 50;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Splits a record set into (base offset, record count, batch bytes without base offset).
fn batches(mut records: Bytes) -> Vec<(i64, i32, Bytes)> {
    let mut out = Vec::new();
    while records.len() >= 61 {
        let base_offset = (&records[..8]).get_i64();
        let batch_len = (&records[8..12]).get_i32() as usize;
        let count = (&records[57..61]).get_i32();
        let batch = records.split_to(12 + batch_len);
        out.push((base_offset, count, batch.slice(8..)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_and_long_polling_consumers_agree() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = TestBroker::start_with(|c| c.num_partitions = PARTITIONS).await;
        let mut admin = broker.connect().await;
        let metadata = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("busy")))
            ]))
            .with_allow_auto_topic_creation(true);
        assert_eq!(admin.send(12, &metadata).await.topics[0].error_code, 0);

        let mut producers = Vec::new();
        for producer in 0..PRODUCERS {
            let mut client = broker.connect().await;
            producers.push(tokio::spawn(async move {
                // (partition, base offset) -> batch, for every acknowledged batch
                let mut acked = Vec::new();
                for i in 0..BATCHES_PER_PRODUCER {
                    let partition = ((producer + i) % PARTITIONS as usize) as i32;
                    let batch = record_batch(1 + i % 5, 10 + producer * 7, now_ms());
                    let request = ProduceRequest::default()
                        .with_acks(if i % 2 == 0 { -1 } else { 1 })
                        .with_timeout_ms(5_000)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(name("busy"))
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(partition)
                                .with_records(Some(batch.clone()))])]);
                    let response = client.send(9, &request).await;
                    let p = &response.responses[0].partition_responses[0];
                    assert_eq!(p.error_code, 0);
                    acked.push((partition, p.base_offset, batch));
                }
                acked
            }));
        }

        let mut consumers = Vec::new();
        for partition in 0..PARTITIONS {
            let mut client = broker.connect().await;
            consumers.push(tokio::spawn(async move {
                let expected_batches = (0..PRODUCERS)
                    .flat_map(|p| (0..BATCHES_PER_PRODUCER).map(move |i| p + i))
                    .filter(|n| n % PARTITIONS as usize == partition as usize)
                    .count();
                let mut seen = Vec::new();
                let mut offset = 0i64;
                while seen.len() < expected_batches {
                    let request = FetchRequest::default()
                        .with_max_wait_ms(500)
                        .with_min_bytes(1)
                        .with_max_bytes(1 << 20)
                        .with_topics(vec![FetchTopic::default()
                            .with_topic(name("busy"))
                            .with_partitions(vec![FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(64 * 1024)])]);
                    let response = client.send(12, &request).await;
                    let p = &response.responses[0].partitions[0];
                    assert_eq!(p.error_code, 0);
                    for (base, count, body) in batches(p.records.clone().unwrap_or_default()) {
                        assert_eq!(base, offset, "batches arrive in order without gaps");
                        offset += i64::from(count);
                        seen.push((base, body));
                    }
                }
                (partition, seen)
            }));
        }

        let mut acked: HashMap<(i32, i64), Bytes> = HashMap::new();
        for producer in producers {
            for (partition, base, batch) in producer.await.expect("producer") {
                assert!(acked.insert((partition, base), batch.slice(8..)).is_none());
            }
        }
        let mut fetched = 0;
        for consumer in consumers {
            let (partition, seen) = consumer.await.expect("consumer");
            for (base, body) in seen {
                let sent = acked
                    .get(&(partition, base))
                    .expect("fetched batch was acked");
                assert_eq!(&body, sent, "partition {partition} offset {base}");
                fetched += 1;
            }
        }
        assert_eq!(fetched, acked.len());
        broker.stop().await;
    })
    .await
    .expect("test timed out");
}
