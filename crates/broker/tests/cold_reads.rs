//! Hot and cold fetch reads (issue 13), over the wire: a fetch answered through the cold-read
//! pool (ranges read uncached into a buffer) is byte for byte the fetch answered with
//! `sendfile`, across compressed, idempotent and transactional batches (committed and aborted,
//! with their markers and aborted-transaction lists) and segment boundaries; and the `auto`
//! policy sends ranges dropped from the page cache cold and freshly written ones hot.

mod common;

use bytes::Bytes;
use common::producer::{batch, bounded, create_topic, latest, name, produce_as, Kind};
use common::{record_batch_with, Client, TestBroker};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
use kafka_protocol::records::Compression;
use rill_broker::ReadPathPolicy;
use uuid::Uuid;

const TOPIC: &str = "coldtopic";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A topic with 64 KiB segments, so the data below spans many of them.
async fn create_small_segment_topic(client: &mut Client) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(TOPIC))
            .with_num_partitions(1)
            .with_replication_factor(-1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(s("segment.bytes"))
                .with_value(Some(s("65536")))])]);
    assert_eq!(client.send(7, &request).await.topics[0].error_code, 0);
    create_topic(client, TOPIC).await; // waits until Metadata knows it
}

async fn transaction(client: &mut Client, id: &str, commit: bool) {
    let init = client
        .send(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s(id))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![0])]);
    let added = client.send(3, &add).await;
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    for seq in [0, 20] {
        let records = batch(pid, epoch, seq, 20, Kind::Transactional);
        assert_eq!(produce_as(client, Some(id), TOPIC, records).await.0, 0);
    }
    let end = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    assert_eq!(client.send(3, &end).await.error_code, 0);
}

/// Plain, compressed (all four codecs), idempotent and transactional batches, ~700 KB.
async fn fill(client: &mut Client) -> i64 {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for round in 0..8 {
        for (i, codec) in codecs.iter().enumerate() {
            let records = record_batch_with(40, 300 + 97 * i, common::now_ms(), *codec);
            assert_eq!(produce_as(client, None, TOPIC, records).await.0, 0);
        }
        let idempotent = batch(1_000 + round, 0, 0, 30, Kind::Data);
        let pid = client
            .send(
                4,
                &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
            )
            .await;
        let idempotent = if pid.error_code == 0 {
            batch(pid.producer_id.0, pid.producer_epoch, 0, 30, Kind::Data)
        } else {
            idempotent
        };
        assert_eq!(produce_as(client, None, TOPIC, idempotent).await.0, 0);
        transaction(client, &format!("txn-{round}"), round % 2 == 0).await;
        // Uncompressed bulk so the data crosses segment boundaries.
        let bulk = record_batch_with(60, 1_000, common::now_ms(), Compression::None);
        assert_eq!(produce_as(client, None, TOPIC, bulk).await.0, 0);
    }
    let end = latest(client, TOPIC, false).await;
    // The last markers are durable and stable before we read.
    for _ in 0..500 {
        if latest(client, TOPIC, true).await >= end {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    end
}

fn fetch_request(
    version: i16,
    topic_id: Uuid,
    offset: i64,
    partition_max_bytes: i32,
    read_committed: bool,
) -> FetchRequest {
    let mut topic = FetchTopic::default().with_partitions(vec![FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(partition_max_bytes)]);
    if version >= 13 {
        topic.topic_id = topic_id;
    } else {
        topic.topic = name(TOPIC);
    }
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![topic])
}

/// Raw response frames of a fixed series of fetches (versions, offsets, sizes, isolation),
/// with the record bytes they carried.
async fn fetch_frames(broker: &TestBroker, topic_id: Uuid, end: i64) -> (Vec<Bytes>, u64) {
    let mut client = broker.connect().await;
    let mut frames = Vec::new();
    let mut record_bytes = 0u64;
    let offsets = [0, 1, end / 5, end / 3, end / 2, end - 1];
    for version in [4i16, 11, 12, 16] {
        for &offset in &offsets {
            for (max_bytes, read_committed) in [(300_000, false), (2_000_000, true), (1, false)] {
                let request = fetch_request(version, topic_id, offset, max_bytes, read_committed);
                client.send_only(version, &request).await;
                let frame = client.read_frame().await.expect("fetch response");
                // Decode it too: the framing must be a valid Fetch response.
                let mut body = frame.clone();
                ResponseHeader::decode(&mut body, FetchResponse::header_version(version))
                    .expect("header");
                let response = FetchResponse::decode(&mut body, version).expect("fetch response");
                let partition = &response.responses[0].partitions[0];
                assert_eq!(partition.error_code, 0);
                record_bytes += partition.records.as_ref().map_or(0, |r| r.len() as u64);
                frames.push(frame);
            }
        }
    }
    (frames, record_bytes)
}

/// Drops the page-cache pages of every file under `dir` (synced first, so all can go).
fn drop_cache(dir: &std::path::Path) {
    for entry in walk(dir) {
        let file = std::fs::File::open(&entry).unwrap();
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

// Multi-threaded, as `rill serve` runs: reads below the active segment then go through
// `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_reads_send_exactly_the_bytes_sendfile_sends() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.cold_reads.policy = ReadPathPolicy::Hot).await;
        let mut client = broker.connect().await;
        create_small_segment_topic(&mut client).await;
        let end = fill(&mut client).await;
        let topic_id = client
            .send(12, &MetadataRequest::default().with_topics(None))
            .await
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(TOPIC))
            .expect("topic")
            .topic_id;
        let segments = walk(broker.dir.path())
            .iter()
            .filter(|p| {
                p.parent().unwrap().ends_with(format!("{TOPIC}-0"))
                    && p.extension().is_some_and(|e| e == "log")
            })
            .count();
        assert!(
            segments >= 5,
            "{segments} segments: the data should span many"
        );
        let (hot_frames, hot_bytes) = fetch_frames(&broker, topic_id, end).await;
        let hot = broker.metrics.snapshot();
        assert!(hot_bytes > 1_000_000, "{hot_bytes}");
        assert_eq!(hot.cold_reads_total, 0);
        assert_eq!(hot.sendfile_bytes_total, hot_bytes);
        drop(client);
        let dir = broker.stop().await;

        let broker =
            TestBroker::start_in(dir, |c| c.cold_reads.policy = ReadPathPolicy::Cold).await;
        let (cold_frames, cold_bytes) = fetch_frames(&broker, topic_id, end).await;
        assert_eq!(cold_frames.len(), hot_frames.len());
        for (i, (cold, hot)) in cold_frames.iter().zip(&hot_frames).enumerate() {
            assert!(
                cold == hot,
                "fetch {i}: cold frame differs from the sendfile frame"
            );
        }
        let cold = broker.metrics.snapshot();
        assert_eq!(cold_bytes, hot_bytes);
        assert_eq!(
            cold.sendfile_bytes_total, 0,
            "forced cold sends nothing with sendfile"
        );
        assert_eq!(cold.cold_read_bytes_total, cold_bytes);
        assert!(cold.cold_reads_total > 0);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn auto_reads_dropped_pages_cold_and_fresh_ones_hot() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let response = client
            .send(
                12,
                &MetadataRequest::default()
                    .with_topics(Some(vec![
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(name("auto"))),
                    ]))
                    .with_allow_auto_topic_creation(true),
            )
            .await;
        let topic_id = response.topics[0].topic_id;
        let records = record_batch_with(200, 1_000, common::now_ms(), Compression::None);
        assert_eq!(
            produce_as(&mut client, None, "auto", records.clone())
                .await
                .0,
            0
        );
        let fetch = |offset| {
            let mut r = fetch_request(16, topic_id, offset, 1 << 20, false);
            r.topics[0].topic_id = topic_id;
            r
        };
        // Just written: resident, hot.
        let before = broker.metrics.snapshot();
        let got = client.send(16, &fetch(0)).await;
        assert_eq!(
            got.responses[0].partitions[0].records.as_ref(),
            Some(&records)
        );
        let after = broker.metrics.snapshot();
        assert_eq!(after.hot_reads_total - before.hot_reads_total, 1);
        assert_eq!(after.cold_reads_total, before.cold_reads_total);

        // Dropped from the page cache: cold, same bytes.
        drop_cache(broker.dir.path());
        let got = client.send(16, &fetch(0)).await;
        assert_eq!(
            got.responses[0].partitions[0].records.as_ref(),
            Some(&records)
        );
        let cold = broker.metrics.snapshot();
        assert!(cold.cold_reads_total > after.cold_reads_total, "{cold:?}");
        assert_eq!(cold.cold_read_bytes_total, records.len() as u64);
        assert_eq!(cold.sendfile_bytes_total, after.sendfile_bytes_total);
        // The cold read did not leave the pages cached: the next read of them is cold too.
        let _ = client.send(16, &fetch(0)).await;
        let again = broker.metrics.snapshot();
        assert!(again.cold_reads_total > cold.cold_reads_total, "{again:?}");
        assert_eq!(again.hot_reads_total, cold.hot_reads_total);
        broker.stop().await;
    })
    .await;
}
