//! Produce-side record validation through the wire: batches whose headers lie about their
//! records, and decompression bombs, sent as raw bytes by a hand-made client. Each is refused
//! with Kafka's error code and nothing of it is stored.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::{now_ms, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rill_storage::compression::Compression;
use rill_storage::records::{put_varint, BatchBuilder, BatchSpec, Headers, NewRecord};

const INVALID_RECORD: i16 = 87;
const MESSAGE_TOO_LARGE: i16 = 10;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce(topic: &str, batches: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batches))])])
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

async fn offset_for(client: &mut Client, topic: &str, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response = client.send(7, &request).await;
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

async fn produce_code(client: &mut Client, topic: &str, batches: Bytes) -> (i16, i64) {
    let response = client.send(9, &produce(topic, batches)).await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// An honest batch of `count` records, values `v0`, `v1`, ..., timestamps `ts + i`.
fn batch(codec: Compression, count: usize, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(
        BatchSpec {
            base_timestamp: ts,
            ..BatchSpec::default()
        },
        codec,
    );
    for i in 0..count {
        let value = format!("v{i}");
        b.push(&NewRecord {
            offset_delta: i as i32,
            timestamp_delta: i as i64,
            key: None,
            value: Some(value.as_bytes()),
            headers: Headers::NONE,
        });
    }
    let mut out = Vec::new();
    b.finish(&mut out).expect("build batch");
    out
}

/// Sets recordCount and lastOffsetDelta and fixes the CRC, as a lying client does.
fn claim_count(b: &mut [u8], count: i32) {
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A zstd batch of one record whose value is `value_bytes` zeros, compressed in a stream so
/// the test never holds the inflated value: a few KiB on the wire.
fn zstd_bomb(value_bytes: u64, ts: i64) -> Vec<u8> {
    let mut prefix = vec![0u8]; // attributes
    put_varint(&mut prefix, 0); // timestamp delta
    put_varint(&mut prefix, 0); // offset delta
    put_varint(&mut prefix, -1); // null key
    put_varint(&mut prefix, value_bytes as i64);
    let body_len = prefix.len() as u64 + value_bytes + 1; // + header count
    let mut record_head = Vec::new();
    put_varint(&mut record_head, body_len as i64);
    record_head.extend_from_slice(&prefix);

    let mut payload = Vec::new();
    let mut encoder = zstd::stream::write::Encoder::new(&mut payload, 1).expect("zstd");
    encoder.write_all(&record_head).expect("zstd");
    let zeros = vec![0u8; 1 << 20];
    let mut left = value_bytes;
    // Bounded: value_bytes / 1 MiB writes.
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        encoder.write_all(&zeros[..n]).expect("zstd");
        left -= n as u64;
    }
    encoder.write_all(&[0]).expect("zstd"); // no headers
    encoder.finish().expect("zstd");

    let mut b = Vec::with_capacity(61 + payload.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&4i16.to_be_bytes()); // zstd
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn a_gzip_batch_lying_about_its_record_count_is_refused_and_burns_no_offsets() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "liar").await;
        let ts = now_ms();
        // One record, claiming 2^31 - 1 (with a matching lastOffsetDelta): the header alone
        // is consistent, only the records tell.
        let mut liar = batch(Compression::Gzip, 1, ts);
        claim_count(&mut liar, i32::MAX);
        let three: Vec<u8> = [&liar[..], &liar[..], &liar[..]].concat();
        for batches in [liar.clone(), three] {
            let (code, _) = produce_code(&mut client, "liar", Bytes::from(batches)).await;
            assert_eq!(code, INVALID_RECORD);
        }
        // Fewer records than the batch holds is a lie too.
        let mut short = batch(Compression::Gzip, 3, ts);
        claim_count(&mut short, 2);
        let (code, _) = produce_code(&mut client, "liar", Bytes::from(short)).await;
        assert_eq!(code, INVALID_RECORD);
        // A lying batch behind an honest one in the same request: the whole append is refused.
        let mixed = [batch(Compression::Gzip, 2, ts), liar].concat();
        let (code, _) = produce_code(&mut client, "liar", Bytes::from(mixed)).await;
        assert_eq!(code, INVALID_RECORD);
        // Nothing was stored and no offset was burnt: the next honest batch starts at 0.
        assert_eq!(offset_for(&mut client, "liar", -1).await, (0, 0));
        let (code, base) = produce_code(
            &mut client,
            "liar",
            Bytes::from(batch(Compression::Gzip, 2, ts)),
        )
        .await;
        assert_eq!((code, base), (0, 0));
        assert_eq!(offset_for(&mut client, "liar", -1).await, (0, 2));
        assert_eq!(broker.metrics.task_panics(), 0);
        broker.stop().await;
    })
    .await;
}

/// A request's partitions are appended together (one I/O-pool job), yet each succeeds or
/// fails alone: a lying batch for one partition between honest ones refuses that partition
/// only, in place, and the others are stored.
#[tokio::test]
async fn one_bad_partition_in_a_request_fails_alone() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let topics = ["mixed-a", "mixed-b", "mixed-c"];
        for topic in topics {
            create_topic(&mut client, topic).await;
        }
        let ts = now_ms();
        let mut liar = batch(Compression::Gzip, 1, ts);
        claim_count(&mut liar, i32::MAX);
        let honest = batch(Compression::None, 3, ts);
        let data = |topic: &str, records: &[u8]| {
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(records.to_vec())))])
        };
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                data(topics[0], &honest),
                data(topics[1], &liar),
                data(topics[2], &honest),
            ]);
        let response = client.send(9, &request).await;
        let answers: Vec<(String, i16, i64)> = response
            .responses
            .iter()
            .map(|t| {
                let p = &t.partition_responses[0];
                (t.name.0.to_string(), p.error_code, p.base_offset)
            })
            .collect();
        assert_eq!(
            answers,
            vec![
                (topics[0].to_string(), 0, 0),
                (topics[1].to_string(), INVALID_RECORD, -1),
                (topics[2].to_string(), 0, 0),
            ]
        );
        assert_eq!(offset_for(&mut client, topics[0], -1).await, (0, 3));
        assert_eq!(offset_for(&mut client, topics[1], -1).await, (0, 0));
        assert_eq!(offset_for(&mut client, topics[2], -1).await, (0, 3));
        assert_eq!(broker.metrics.task_panics(), 0);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn every_codec_is_validated_and_honest_batches_pass() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "codecs").await;
        let ts = now_ms();
        let mut next = 0;
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut liar = batch(codec, 2, ts);
            claim_count(&mut liar, 3);
            let (code, _) = produce_code(&mut client, "codecs", Bytes::from(liar)).await;
            assert_eq!(code, INVALID_RECORD, "{codec:?}");
            let (code, base) =
                produce_code(&mut client, "codecs", Bytes::from(batch(codec, 2, ts))).await;
            assert_eq!((code, base), (0, next), "{codec:?}");
            next += 2;
        }
        // ListOffsets by time finds the exact record inside a compressed batch (the bounded
        // streaming decoder), not only the batch.
        create_topic(&mut client, "inside").await;
        let (code, _) = produce_code(
            &mut client,
            "inside",
            Bytes::from(batch(Compression::Zstd, 3, ts)),
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(offset_for(&mut client, "inside", ts + 2).await, (0, 2));
        assert_eq!(offset_for(&mut client, "inside", -3).await, (0, 2));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_zstd_bomb_is_refused_with_bounded_work() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "bomb").await;
        let ts = now_ms();
        // 256 MiB of zeros in one record, four times the default 64 MiB bound.
        let bomb = zstd_bomb(256 << 20, ts);
        assert!(bomb.len() < 64 << 10, "the bomb is small on the wire");
        let (code, _) = produce_code(&mut client, "bomb", Bytes::from(bomb)).await;
        assert_eq!(code, MESSAGE_TOO_LARGE);
        assert_eq!(offset_for(&mut client, "bomb", -1).await, (0, 0));
        // The same shape under the bound is an honest (if large) batch and is stored.
        let (code, base) =
            produce_code(&mut client, "bomb", Bytes::from(zstd_bomb(1 << 20, ts))).await;
        assert_eq!((code, base), (0, 0));
        assert_eq!(offset_for(&mut client, "bomb", ts).await, (0, 0));
        broker.stop().await;
    })
    .await;
}
