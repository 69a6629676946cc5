//! One slow disk through the wire: an in-process broker over a file I/O seam whose syncs of
//! one partition's directory hang. acks=all produces to the other partitions are answered (and
//! their records are durable: visible to a fetch) while that sync is stuck; the slow
//! partition's producer is answered only once its sync returns. A coordinator's append that
//! hangs (a stuck write to `__consumer_offsets`) holds up no other connection.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hold_io::{HoldIo, SlowDisk, StalledWrites};
use common::producer::{bounded, create_topic, name};
use common::{record_batch, Client, TestBroker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;

const TOPIC: &str = "slowdisk";
const PARTITIONS: i32 = 8;

fn produce(partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(TOPIC))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// (error code, base offset) of a one-partition produce answer.
fn produced(response: &ProduceResponse) -> (i16, i64) {
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// (high watermark, records) of `partition` from `offset`, without waiting.
async fn fetch(client: &mut Client, partition: i32, offset: i64) -> (i64, Bytes) {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.send(12, &request).await;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.high_watermark, p.records.clone().unwrap_or_default())
}

#[tokio::test]
async fn a_stuck_sync_on_one_partition_delays_only_its_own_acks() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let seam = Arc::clone(&io);
        let broker = TestBroker::start_with(move |c| {
            c.file_io = Some(seam);
            c.num_partitions = PARTITIONS;
        })
        .await;
        let mut client = broker.connect().await;
        create_topic(&mut client, TOPIC).await;
        // One durable record everywhere first, so the partition directories are synced.
        for p in 0..PARTITIONS {
            let first = record_batch(1, 10, common::now_ms());
            let response = client.send(9, &produce(p, first)).await;
            assert_eq!(produced(&response), (0, 0));
        }

        let slow_dir = broker.dir.path().join(format!("{TOPIC}-0"));
        assert!(slow_dir.is_dir());
        let slow_disk = SlowDisk::new(&io, &slow_dir);
        eprintln!("step: first records acknowledged");
        let mut slow_client = broker.connect().await;
        let slow_batch = record_batch(1, 10, common::now_ms());
        let slow_id = slow_client
            .send_only(9, &produce(0, slow_batch.clone()))
            .await;
        // Bounded: the flusher reaches the stuck sync at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while io.slow_waits.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the slow sync never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // Every other partition is acknowledged while partition 0's sync hangs (without the
        // fix these waits never end and the test's bound fails it), and what was acknowledged
        // is durable: visible means durable, so a fetch returns it.
        eprintln!("step: slow sync started");
        for p in 1..PARTITIONS {
            let batch = record_batch(2, 10, common::now_ms());
            eprintln!("step: produce to {p}");
            let response = client.send(9, &produce(p, batch.clone())).await;
            eprintln!("step: fetch from {p}");
            assert_eq!(produced(&response), (0, 1), "partition {p}");
            let (high_watermark, records) = fetch(&mut client, p, 1).await;
            assert_eq!(high_watermark, 3, "partition {p}");
            assert_eq!(records, common::at_offset(&batch, 1), "partition {p}");
        }
        let early = tokio::time::timeout(Duration::from_millis(200), slow_client.read_frame());
        assert!(early.await.is_err(), "answered before its sync returned");
        let (high_watermark, _) = fetch(&mut client, 0, 0).await;
        assert_eq!(high_watermark, 1, "the unsynced record is not visible");

        eprintln!("step: releasing the slow disk");
        drop(slow_disk);
        let response = slow_client
            .read_response::<ProduceRequest>(9, slow_id)
            .await;
        assert_eq!(produced(&response), (0, 1));
        let (high_watermark, records) = fetch(&mut client, 0, 1).await;
        assert_eq!(high_watermark, 2);
        assert_eq!(records, common::at_offset(&slow_batch, 1));
        eprintln!("step: stopping");
        broker.stop().await;
    })
    .await;
}

fn offset_commit(group: &str, offset: i64) -> OffsetCommitRequest {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    OffsetCommitRequest::default()
        .with_group_id(GroupId(kafka_protocol::protocol::StrBytes::from_string(
            group.to_string(),
        )))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

/// The group coordinator's appends run on the I/O pool: while an OffsetCommit's write to
/// `__consumer_offsets` hangs, another connection's produce and fetch are answered. The test
/// runs the broker on a single-threaded runtime, so an append made inline would stop every
/// connection until the stall's safety bound (`STALL_MAX`) lets it go; the test then sees the
/// stall timed out and fails. The commit is answered once its write goes on.
#[tokio::test]
async fn a_stuck_coordinator_write_holds_up_no_other_connection() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let seam = Arc::clone(&io);
        let broker = TestBroker::start_with(move |c| {
            c.file_io = Some(seam);
            c.num_partitions = 1;
        })
        .await;
        let mut client = broker.connect().await;
        create_topic(&mut client, TOPIC).await;
        let first = client
            .send(9, &produce(0, record_batch(1, 10, common::now_ms())))
            .await;
        assert_eq!(produced(&first), (0, 0));
        let committed = client.send(2, &offset_commit("g", 1)).await;
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);

        let stall = StalledWrites::new(&io, "__consumer_offsets");
        let mut committer = broker.connect().await;
        let commit_id = committer.send_only(2, &offset_commit("g", 1)).await;
        // Bounded: the commit reaches its append at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while io.write_stalls.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the commit's write never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let batch = record_batch(1, 10, common::now_ms());
        let response = client.send(9, &produce(0, batch.clone())).await;
        assert_eq!(produced(&response), (0, 1));
        let (high_watermark, records) = fetch(&mut client, 0, 1).await;
        assert_eq!(high_watermark, 2);
        assert_eq!(records, common::at_offset(&batch, 1));
        assert!(
            !io.stall_timed_out.load(Ordering::SeqCst),
            "the produce waited for the coordinator's stuck write"
        );
        let early = tokio::time::timeout(Duration::from_millis(100), committer.read_frame());
        assert!(early.await.is_err(), "answered before its write went on");
        drop(stall);
        let response = committer
            .read_response::<OffsetCommitRequest>(2, commit_id)
            .await;
        assert_eq!(response.topics[0].partitions[0].error_code, 0);
        assert!(!io.stall_timed_out.load(Ordering::SeqCst));
        broker.stop().await;
    })
    .await;
}
