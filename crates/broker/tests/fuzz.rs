//! Mutated and random requests: the broker answers or closes the connection, never crashes,
//! never hangs the listener, and keeps serving well-formed clients afterwards. A connection
//! task that panics also closes its connection; the harness tells the two apart through the
//! broker's panic counter (`TestBroker::stop` asserts it is zero).

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{now_ms, record_batch, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncWriteExt;

/// Deterministic xorshift, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Valid request frames (length prefix included) for the APIs that do not create or delete
/// anything on their own beyond one auto-created topic.
fn seed_frames(client: &mut Client) -> Vec<Bytes> {
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("fz")))
        ]))
        .with_allow_auto_topic_creation(true);
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("fz"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(record_batch(3, 20, now_ms())))])]);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("fz"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20)])]);
    let list_offsets = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(name("fz"))
        .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]);
    let mut frames = Vec::new();
    for v in [0, 4, 9, 12] {
        frames.push(client.encode(v, &metadata).1);
    }
    for v in [3, 9, 11] {
        frames.push(client.encode(v, &produce).1);
    }
    for v in [4, 11, 12] {
        frames.push(client.encode(v, &fetch).1);
    }
    for v in [1, 7] {
        frames.push(client.encode(v, &list_offsets).1);
    }
    frames.push(client.encode(3, &ApiVersionsRequest::default()).1);
    frames.push(client.encode(4, &DescribeConfigsRequest::default()).1);
    frames
}

/// Flips, overwrites, truncates or extends a valid frame, keeping the length prefix honest
/// most of the time (so the body decoder, not the framer, sees the damage).
fn mutate(rng: &mut Rng, frame: &Bytes) -> Bytes {
    let mut body = BytesMut::from(&frame[4..]);
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 if !body.is_empty() => {
                let i = rng.below(body.len());
                body[i] ^= 1 << rng.below(8);
            }
            1 if !body.is_empty() => {
                let i = rng.below(body.len());
                body[i] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
            }
            2 if body.len() > 8 => {
                let keep = 8 + rng.below(body.len() - 8);
                body.truncate(keep);
            }
            _ => {
                for _ in 0..rng.below(16) {
                    body.extend_from_slice(&[rng.next() as u8]);
                }
            }
        }
    }
    let mut out = BytesMut::with_capacity(body.len() + 4);
    let len = if rng.below(10) == 0 {
        rng.next() as i32
    } else {
        body.len() as i32
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out.freeze()
}

#[tokio::test]
async fn mutated_requests_never_take_the_broker_down() {
    tokio::time::timeout(TEST_TIMEOUT * 2, async {
        let broker = TestBroker::start_with(|c| c.socket_request_max_bytes = 1 << 20).await;
        let mut setup = broker.connect().await;
        let frames = seed_frames(&mut setup);
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let (mut answered, mut closed) = (0, 0);
        for case in 0..2000 {
            let frame = mutate(&mut rng, &frames[case % frames.len()]);
            let mut client = broker.connect().await;
            client.stream.write_all(&frame).await.expect("write");
            // Either a response, a close, or (a long poll / waiting for more bytes) nothing:
            // all acceptable. What matters is what comes after.
            match tokio::time::timeout(Duration::from_millis(500), client.read_frame()).await {
                Ok(Some(_)) => answered += 1,
                Ok(None) => closed += 1,
                Err(_) => {}
            }
        }
        eprintln!("answered {answered}, closed {closed}");
        // The mutations reach both outcomes (else they test nothing).
        assert!(
            answered > 100 && closed > 100,
            "answered {answered}, closed {closed}"
        );
        // The broker still serves a well-formed client.
        let mut client = broker.connect().await;
        let response = client.send(3, &ApiVersionsRequest::default()).await;
        assert_eq!(response.error_code, 0);
        let metrics = std::sync::Arc::clone(&broker.metrics);
        // Joins every connection task; a panic among the "closed" ones fails here.
        broker.stop().await;
        assert_eq!(metrics.task_panics(), 0, "a closed connection was a panic");
    })
    .await
    .expect("test timed out");
}
