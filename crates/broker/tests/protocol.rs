//! Protocol-level tests: an in-process broker spoken to over TCP with requests encoded by the
//! `kafka-protocol` crate, and with hand-made bad input.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{at_offset, now_ms, record_batch, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn fetch_request(
    version: i16,
    topic: &str,
    topic_id: Uuid,
    offset: i64,
    max_wait_ms: i32,
    partition_max_bytes: i32,
) -> FetchRequest {
    let mut fetch_topic = FetchTopic::default().with_partitions(vec![FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(partition_max_bytes)]);
    if version >= 13 {
        fetch_topic.topic_id = topic_id;
    } else {
        fetch_topic.topic = name(topic);
    }
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![fetch_topic])
}

fn metadata_request(topics: &[&str]) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(true)
}

fn list_offsets_request(topic: &str, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])])
}

/// Creates `topic` through Metadata auto-creation and returns its id.
async fn create_topic(client: &mut Client, topic: &str) -> Uuid {
    let response = client.send(12, &metadata_request(&[topic])).await;
    assert_eq!(response.topics[0].error_code, 0);
    response.topics[0].topic_id
}

async fn latest_offset(client: &mut Client, topic: &str) -> i64 {
    let response = client.send(7, &list_offsets_request(topic, -1)).await;
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.offset
}

/// The records bytes of the only partition in a fetch response.
fn fetched_records(response: &FetchResponse) -> Bytes {
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "fetch error");
    partition.records.clone().unwrap_or_default()
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn api_versions_lists_what_we_serve_at_every_version() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        for version in 0..=4 {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("rill-test"))
                .with_client_software_version(StrBytes::from_static_str("1"));
            let response = client.send(version, &request).await;
            assert_eq!(response.error_code, 0);
            let fetch = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::Fetch as i16)
                .expect("fetch advertised");
            assert_eq!((fetch.min_version, fetch.max_version), (4, 16));
            // Exactly what the dispatcher serves (the protocol crate's APIs and those decoded by
            // hand), nothing else (e.g. no Vote, 52: KRaft-internal).
            assert_eq!(
                response.api_keys.len(),
                rill_broker::api_versions::SUPPORTED.len()
                    + rill_broker::hand_codec::HAND_CODED.len()
            );
            for &(key, min, max) in rill_broker::hand_codec::HAND_CODED {
                let listed = response.api_keys.iter().find(|k| k.api_key == key);
                let range = listed.map(|k| (k.min_version, k.max_version));
                assert_eq!(range, Some((min, max)), "hand-coded API {key}");
            }
            assert!(response.api_keys.iter().all(|k| k.api_key != 52));
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn too_new_api_versions_gets_a_v0_unsupported_version_answer() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        // A v9 ApiVersions request: header v2 (flexible), the body is irrelevant.
        let mut body = BytesMut::new();
        body.put_i16(18);
        body.put_i16(9);
        body.put_i32(77);
        body.put_i16(4);
        body.put_slice(b"test");
        body.put_u8(0);
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        client.stream.write_all(&frame).await.unwrap();
        let mut response = client.read_frame().await.expect("response");
        let header = ResponseHeader::decode(&mut response, 0).unwrap();
        assert_eq!(header.correlation_id, 77);
        let body = ApiVersionsResponse::decode(&mut response, 0).unwrap();
        assert_eq!(body.error_code, 35);
        assert!(body
            .api_keys
            .iter()
            .any(|k| k.api_key == 18 && k.max_version == 4));
        broker.stop().await;
    })
    .await;
}

use kafka_protocol::protocol::Decodable;

#[tokio::test]
async fn metadata_auto_creates_topics_and_advertises_the_real_port() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.num_partitions = 3).await;
        let mut client = broker.connect().await;
        let response = client.send(12, &metadata_request(&["auto-created"])).await;
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].port, i32::from(broker.addr.port()));
        assert_eq!(response.brokers[0].host.as_str(), "127.0.0.1");
        let topic = &response.topics[0];
        assert_eq!(topic.error_code, 0);
        assert_eq!(topic.partitions.len(), 3);
        assert_ne!(topic.topic_id, Uuid::nil());
        // v1 with a null topic list returns all topics (internal ones aside).
        let all = client
            .send(1, &MetadataRequest::default().with_topics(None))
            .await;
        let user_topics: Vec<_> = all.topics.iter().filter(|t| !t.is_internal).collect();
        assert_eq!(user_topics.len(), 1);
        // Invalid names are refused, not created.
        let bad = client.send(12, &metadata_request(&["bad name"])).await;
        assert_eq!(bad.topics[0].error_code, 17);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn produced_batch_is_fetched_back_byte_for_byte_at_every_fetch_version() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let topic_id = create_topic(&mut client, "bytes").await;
        let first = record_batch(5, 100, now_ms());
        let second = record_batch(3, 10, now_ms() + 1000);
        for (version, batch) in [(3, &first), (11, &second)] {
            let response = client
                .send(version, &produce_request("bytes", 0, batch.clone(), -1))
                .await;
            let partition = &response.responses[0].partition_responses[0];
            assert_eq!(partition.error_code, 0, "produce v{version}");
        }
        let mut expected = BytesMut::from(&first[..]);
        expected.extend_from_slice(&at_offset(&second, 5));
        for version in 4..=16 {
            let request = fetch_request(version, "bytes", topic_id, 0, 0, 1 << 20);
            let response = client.send(version, &request).await;
            assert_eq!(fetched_records(&response), expected, "fetch v{version}");
            let partition = &response.responses[0].partitions[0];
            assert_eq!(partition.high_watermark, 8);
            // Offset in the middle of the second batch returns that whole batch.
            let request = fetch_request(version, "bytes", topic_id, 6, 0, 1 << 20);
            let response = client.send(version, &request).await;
            assert_eq!(fetched_records(&response), at_offset(&second, 5));
        }
        assert!(broker.metrics.snapshot().sendfile_bytes_total > 0);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn fetch_honours_partition_max_bytes_but_returns_one_whole_batch() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let topic_id = create_topic(&mut client, "sizes").await;
        let batch = record_batch(10, 1000, now_ms());
        for _ in 0..3 {
            client
                .send(9, &produce_request("sizes", 0, batch.clone(), -1))
                .await;
        }
        assert_eq!(latest_offset(&mut client, "sizes").await, 30);
        // Smaller than one batch: the first batch comes whole (KIP-74).
        let response = client
            .send(12, &fetch_request(12, "sizes", topic_id, 0, 0, 10))
            .await;
        assert_eq!(fetched_records(&response), batch);
        // Out of range.
        let response = client
            .send(12, &fetch_request(12, "sizes", topic_id, 1000, 0, 1 << 20))
            .await;
        assert_eq!(response.responses[0].partitions[0].error_code, 1);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn list_offsets_answers_earliest_latest_max_and_by_time() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "offsets").await;
        let base = now_ms();
        client
            .send(
                9,
                &produce_request("offsets", 0, record_batch(4, 10, base), -1),
            )
            .await;
        client
            .send(
                9,
                &produce_request("offsets", 0, record_batch(4, 10, base + 4000), -1),
            )
            .await;
        for version in 1..=8 {
            let offset = |response: &ListOffsetsResponse| {
                let p = &response.topics[0].partitions[0];
                assert_eq!(p.error_code, 0, "v{version}");
                (p.timestamp, p.offset)
            };
            let earliest = client
                .send(version, &list_offsets_request("offsets", -2))
                .await;
            assert_eq!(offset(&earliest).1, 0);
            let latest = client
                .send(version, &list_offsets_request("offsets", -1))
                .await;
            assert_eq!(offset(&latest).1, 8);
            let by_time = client
                .send(version, &list_offsets_request("offsets", base + 4001))
                .await;
            assert_eq!(offset(&by_time), (base + 4001, 5));
            let too_late = client
                .send(version, &list_offsets_request("offsets", base + 9999))
                .await;
            assert_eq!(offset(&too_late).1, -1);
            if version >= 7 {
                let max = client
                    .send(version, &list_offsets_request("offsets", -3))
                    .await;
                assert_eq!(offset(&max), (base + 4003, 7));
            }
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_length_prefix_closes_the_connection() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.socket_request_max_bytes = 1024).await;
        let mut client = broker.connect().await;
        client
            .stream
            .write_all(&0x7fff_ffffi32.to_be_bytes())
            .await
            .unwrap();
        assert!(client.is_closed_by_broker().await);
        let mut client = broker.connect().await;
        client
            .stream
            .write_all(&1025i32.to_be_bytes())
            .await
            .unwrap();
        assert!(client.is_closed_by_broker().await);
        let mut client = broker.connect().await;
        client
            .stream
            .write_all(&(-5i32).to_be_bytes())
            .await
            .unwrap();
        assert!(client.is_closed_by_broker().await);
        // The broker still serves others.
        let mut client = broker.connect().await;
        client.send(3, &ApiVersionsRequest::default()).await;
        assert_eq!(broker.metrics.snapshot().connections_rejected_total, 3);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn truncated_frame_and_garbage_bodies_close_only_that_connection() {
    bounded(async {
        let broker = TestBroker::start().await;
        // Truncated: promises 100 bytes, sends 10, then half-closes.
        let mut client = broker.connect().await;
        client
            .stream
            .write_all(&100i32.to_be_bytes())
            .await
            .unwrap();
        client.stream.write_all(&[0u8; 10]).await.unwrap();
        client.stream.shutdown().await.unwrap();
        assert!(client.is_closed_by_broker().await);
        // Shorter than a request header.
        let mut client = broker.connect().await;
        client
            .stream
            .write_all(&[0, 0, 0, 3, 0, 18, 0])
            .await
            .unwrap();
        assert!(client.is_closed_by_broker().await);
        // A valid Metadata v12 header followed by garbage.
        let mut client = broker.connect().await;
        let (_, frame) = client.encode(12, &metadata_request(&["x"]));
        let header_len = 4 + 8 + 2 + "rill-test".len() + 1;
        let mut bad = BytesMut::from(&frame[..header_len]);
        bad.extend_from_slice(&[0xff; 40]);
        let body_len = (bad.len() - 4) as i32;
        bad[..4].copy_from_slice(&body_len.to_be_bytes());
        client.stream.write_all(&bad).await.unwrap();
        assert!(client.is_closed_by_broker().await);
        let mut client = broker.connect().await;
        client.send(3, &ApiVersionsRequest::default()).await;
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_or_unserved_api_keys_close_the_connection() {
    bounded(async {
        let broker = TestBroker::start().await;
        // 999 and -1 are not Kafka APIs; 52 (Vote, KRaft-internal) is one we do not serve.
        for api_key in [999i16, 52, -1] {
            let mut client = broker.connect().await;
            let mut frame = BytesMut::new();
            frame.put_i32(10);
            frame.put_i16(api_key);
            frame.put_i16(0);
            frame.put_i32(1);
            frame.put_i16(-1);
            client.stream.write_all(&frame).await.unwrap();
            assert!(client.is_closed_by_broker().await, "api key {api_key}");
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn batch_with_a_wrong_crc_is_refused_and_not_stored() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "crc").await;
        let mut batch = BytesMut::from(&record_batch(3, 20, now_ms())[..]);
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        let response = client
            .send(9, &produce_request("crc", 0, batch.freeze(), -1))
            .await;
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 2, "CORRUPT_MESSAGE");
        assert_eq!(latest_offset(&mut client, "crc").await, 0);
        // Unknown partition in the same request style: UNKNOWN_TOPIC_OR_PARTITION.
        let response = client
            .send(
                9,
                &produce_request("crc", 7, record_batch(1, 1, now_ms()), 1),
            )
            .await;
        assert_eq!(response.responses[0].partition_responses[0].error_code, 3);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn acks_zero_gets_no_response() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "fire").await;
        client
            .send_only(
                9,
                &produce_request("fire", 0, record_batch(2, 5, now_ms()), 0),
            )
            .await;
        // The next response is the ListOffsets one (its correlation id is checked). The
        // records become visible once the flusher made them durable, a moment later.
        let mut latest = latest_offset(&mut client, "fire").await;
        // Bounded: 100 rounds of 50 ms.
        for _ in 0..100 {
            if latest == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            latest = latest_offset(&mut client, "fire").await;
        }
        assert_eq!(latest, 2);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn long_poll_wakes_on_append_and_times_out_otherwise() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut consumer = broker.connect().await;
        let topic_id = create_topic(&mut consumer, "poll").await;
        // Nothing arrives: answered empty after about max_wait_ms.
        let started = Instant::now();
        let response = consumer
            .send(12, &fetch_request(12, "poll", topic_id, 0, 300, 1 << 20))
            .await;
        assert!(fetched_records(&response).is_empty());
        assert!(started.elapsed() >= Duration::from_millis(250));
        // A produce during the wait wakes the fetch long before max_wait_ms.
        let started = Instant::now();
        let correlation_id = consumer
            .send_only(12, &fetch_request(12, "poll", topic_id, 0, 20_000, 1 << 20))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut producer = broker.connect().await;
        let batch = record_batch(1, 10, now_ms());
        producer
            .send(9, &produce_request("poll", 0, batch.clone(), 1))
            .await;
        let response = consumer
            .read_response::<FetchRequest>(12, correlation_id)
            .await;
        assert_eq!(fetched_records(&response), batch);
        assert!(started.elapsed() < Duration::from_secs(5));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_block_others() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut producer = broker.connect().await;
        let topic_id = create_topic(&mut producer, "stall").await;
        let batch = record_batch(60, 16 * 1024, now_ms()); // just under 1 MiB (max.message.bytes)
        for _ in 0..4 {
            let response = producer
                .send(9, &produce_request("stall", 0, batch.clone(), -1))
                .await;
            assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        }
        // The stalled client pipelines many 4 MiB fetches and never reads.
        let mut stalled = broker.connect().await;
        for _ in 0..64 {
            let (_, frame) =
                stalled.encode(12, &fetch_request(12, "stall", topic_id, 0, 0, 8 << 20));
            // The broker stops reading once its socket buffer is full; don't wait for it.
            if tokio::time::timeout(Duration::from_millis(200), stalled.stream.write_all(&frame))
                .await
                .is_err()
            {
                break;
            }
        }
        // Another client is served promptly, repeatedly.
        let mut other = broker.connect().await;
        for _ in 0..5 {
            let started = Instant::now();
            let response = other
                .send(12, &fetch_request(12, "stall", topic_id, 0, 0, 8 << 20))
                .await;
            assert_eq!(fetched_records(&response).len(), 4 * batch.len());
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        drop(stalled);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sendfile_and_copy_paths_send_the_same_bytes_and_are_counted() {
    bounded(async {
        for mode in [
            rill_broker::WriteMode::Sendfile,
            rill_broker::WriteMode::Copy,
        ] {
            let broker = TestBroker::start_with(|c| c.write_mode = mode).await;
            let mut client = broker.connect().await;
            let topic_id = create_topic(&mut client, "zero").await;
            let batch = record_batch(100, 1000, now_ms());
            client
                .send(9, &produce_request("zero", 0, batch.clone(), -1))
                .await;
            let before = broker.metrics.snapshot();
            let response = client
                .send(16, &fetch_request(16, "zero", topic_id, 0, 0, 1 << 20))
                .await;
            assert_eq!(fetched_records(&response), batch);
            let after = broker.metrics.snapshot();
            let sent = batch.len() as u64;
            match mode {
                rill_broker::WriteMode::Sendfile => {
                    assert_eq!(
                        after.sendfile_bytes_total - before.sendfile_bytes_total,
                        sent
                    );
                    assert_eq!(after.copied_bytes_total, 0);
                }
                rill_broker::WriteMode::Copy => {
                    assert_eq!(after.copied_bytes_total - before.copied_bytes_total, sent);
                    assert_eq!(after.sendfile_bytes_total, 0);
                }
            }
            broker.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn topics_ids_configs_and_data_survive_a_restart() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let topic_id = create_topic(&mut client, "durable").await;
        let batch = record_batch(3, 10, now_ms());
        client
            .send(9, &produce_request("durable", 0, batch.clone(), -1))
            .await;
        let cluster_id = client
            .send(12, &metadata_request(&[]))
            .await
            .cluster_id
            .expect("cluster id");
        drop(client);
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        let metadata = client.send(12, &metadata_request(&["durable"])).await;
        assert_eq!(metadata.cluster_id, Some(cluster_id));
        assert_eq!(metadata.topics[0].topic_id, topic_id);
        let response = client
            .send(13, &fetch_request(13, "durable", topic_id, 0, 0, 1 << 20))
            .await;
        assert_eq!(fetched_records(&response), batch);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn list_offsets_by_time_looks_inside_compressed_batches() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "gz").await;
        let base = now_ms();
        let batch =
            common::record_batch_with(10, 50, base, kafka_protocol::records::Compression::Gzip);
        let response = client.send(9, &produce_request("gz", 0, batch, -1)).await;
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        let by_time = client.send(7, &list_offsets_request("gz", base + 5)).await;
        let p = &by_time.topics[0].partitions[0];
        assert_eq!((p.error_code, p.timestamp, p.offset), (0, base + 5, 5));
        let max = client.send(7, &list_offsets_request("gz", -3)).await;
        let p = &max.topics[0].partitions[0];
        assert_eq!((p.error_code, p.timestamp, p.offset), (0, base + 9, 9));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_second_broker_on_the_same_data_dir_is_refused() {
    bounded(async {
        let broker = TestBroker::start().await;
        let config = rill_broker::BrokerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: broker.dir.path().to_path_buf(),
            ..rill_broker::BrokerConfig::default()
        };
        match rill_broker::Broker::start(config).await {
            Err(rill_broker::BrokerError::DataDirLocked { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("second broker started on a locked data dir"),
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.max_connections = 1).await;
        let mut first = broker.connect().await;
        first.send(3, &ApiVersionsRequest::default()).await;
        // The second connection is accepted by the kernel but not served yet.
        let mut second = broker.connect().await;
        let correlation_id = second.send_only(3, &ApiVersionsRequest::default()).await;
        let early = tokio::time::timeout(Duration::from_millis(300), second.read_frame()).await;
        assert!(early.is_err(), "served beyond max_connections");
        drop(first);
        let response = second
            .read_response::<ApiVersionsRequest>(3, correlation_id)
            .await;
        assert_eq!(response.error_code, 0);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn fetch_max_bytes_spans_partitions_and_first_partition_with_data_gets_a_whole_batch() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.num_partitions = 3).await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "multi").await;
        let batch = record_batch(10, 1000, now_ms());
        for partition in 0..3 {
            for _ in 0..2 {
                let response = client
                    .send(9, &produce_request("multi", partition, batch.clone(), -1))
                    .await;
                assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
            }
        }
        let partitions = (0..3)
            .map(|p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)
            })
            .collect();
        // Room for one and a half batches: partition 0 gets one batch, the rest nothing.
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes((batch.len() + batch.len() / 2) as i32)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("multi"))
                .with_partitions(partitions)]);
        let response = client.send(11, &request).await;
        let sizes: Vec<usize> = response.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .collect();
        assert_eq!(sizes, vec![batch.len(), 0, 0]);
        // max_bytes smaller than one batch still returns the first batch whole (KIP-74).
        let request = request.with_max_bytes(10);
        let response = client.send(11, &request).await;
        let sizes: Vec<usize> = response.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .collect();
        assert_eq!(sizes, vec![batch.len(), 0, 0]);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.connections_max_idle_ms = 300).await;
        let mut idle = broker.connect().await;
        idle.send(3, &ApiVersionsRequest::default()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(idle.is_closed_by_broker().await);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn large_frames_wait_for_the_request_memory_budget() {
    bounded(async {
        let broker = TestBroker::start_with(|c| {
            c.queued_max_request_bytes = 1 << 20;
            c.socket_request_max_bytes = 1 << 20;
        })
        .await;
        let mut setup = broker.connect().await;
        create_topic(&mut setup, "budget").await;
        // A slow client announces a 1 MiB frame, sends part of it, and stalls: it holds the
        // whole budget.
        let mut slow = broker.connect().await;
        slow.stream
            .write_all(&(1i32 << 20).to_be_bytes())
            .await
            .unwrap();
        slow.stream.write_all(&[0u8; 100_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A 500 KB produce must wait for the budget...
        let mut producer = broker.connect().await;
        let batch = record_batch(30, 16 * 1024, now_ms());
        assert!(batch.len() > 64 * 1024);
        let correlation_id = producer
            .send_only(9, &produce_request("budget", 0, batch, 1))
            .await;
        let early = tokio::time::timeout(Duration::from_millis(300), producer.read_frame()).await;
        assert!(early.is_err(), "a large frame was read beyond the budget");
        // ...small requests do not,
        let mut small = broker.connect().await;
        small.send(3, &ApiVersionsRequest::default()).await;
        // ...and it goes through once the slow client leaves.
        drop(slow);
        let response = producer
            .read_response::<ProduceRequest>(9, correlation_id)
            .await;
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn fetch_of_a_missing_partition_answers_at_once_with_an_error() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let topic_id = create_topic(&mut client, "one").await;
        let mut request = fetch_request(12, "one", topic_id, 0, 10_000, 1 << 20);
        request.topics[0].partitions[0].partition = 7;
        let started = Instant::now();
        let response = client.send(12, &request).await;
        assert_eq!(response.responses[0].partitions[0].error_code, 3);
        assert!(started.elapsed() < Duration::from_secs(5));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn advertised_listeners_is_what_metadata_coordinator_and_cluster_answers_name() {
    bounded(async {
        let broker = TestBroker::start_with(|c| {
            c.advertised_listeners = Some("PLAINTEXT://rill.example:0".into());
        })
        .await;
        let port = i32::from(broker.addr.port());
        let mut client = broker.connect().await;
        let metadata = client.send(12, &metadata_request(&[])).await;
        assert_eq!(metadata.brokers.len(), 1);
        assert_eq!(
            (metadata.brokers[0].host.as_str(), metadata.brokers[0].port),
            ("rill.example", port)
        );
        let coordinator = client
            .send(
                2,
                &FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_key_type(0),
            )
            .await;
        assert_eq!(coordinator.error_code, 0);
        assert_eq!(
            (coordinator.host.as_str(), coordinator.port),
            ("rill.example", port)
        );
        let cluster = client.send(0, &DescribeClusterRequest::default()).await;
        assert_eq!(
            (cluster.brokers[0].host.as_str(), cluster.brokers[0].port),
            ("rill.example", port)
        );
        broker.stop().await;
    })
    .await;
}
