//! Disk work that must not run on an async worker (issues 11 and 13), seen through the file
//! I/O seam: reads of old segments by a fetch happen on the cold-read pool (a probe records
//! the thread of every segment read); a fetch that names its topic only by id (v13+) opens its
//! log on the I/O pool, as a fetch by name does; a share state write stuck on the disk, made
//! by a ShareFetch's acquisition, a closed connection's share session or a member leaving its
//! share group, holds up no other connection.
//!
//! The stall tests run the broker on the test's single-threaded runtime: blocking work done
//! inline would stop every connection until the stall's safety bound (`STALL_MAX`) lets it go,
//! which the tests see (`stall_timed_out`) and fail on.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hold_io::{produce_request, HoldIo, StalledOpens, StalledWrites};
use common::producer::{bounded, create_with_configs, name, s};
use common::{record_batch, Client, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use rill_broker::ReadPathPolicy;
use rill_storage::file_io::{FileIo, IoFile, OsIo};
use uuid::Uuid;

/// The real file system; while `recording`, every segment read storage announces
/// (`FileIo::reading`) is recorded with the reading thread's name.
#[derive(Debug, Default)]
struct ReadThreads {
    recording: AtomicBool,
    reads: Mutex<Vec<(String, PathBuf)>>,
}

impl FileIo for ReadThreads {
    fn reading(&self, file: &IoFile) {
        if self.recording.load(Ordering::SeqCst) {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            let path = file.path().to_path_buf();
            self.reads.lock().unwrap().push((thread, path));
        }
    }
    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> std::io::Result<()> {
        OsIo.write_at(file, bufs, offset)
    }
    fn sync_data(&self, file: &IoFile) -> std::io::Result<()> {
        OsIo.sync_data(file)
    }
    fn sync_fs(&self, file: &IoFile) -> std::io::Result<()> {
        OsIo.sync_fs(file)
    }
    fn allocate(&self, file: &IoFile, len: u64) -> std::io::Result<()> {
        OsIo.allocate(file, len)
    }
    fn set_len(&self, file: &IoFile, len: u64) -> std::io::Result<()> {
        OsIo.set_len(file, len)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsIo.sync_dir(dir)
    }
}

/// The base offset a segment file is named by.
fn base_offset(path: &Path) -> i64 {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .unwrap_or_else(|| panic!("not a segment file: {}", path.display()))
}

/// The active segment's base offset: the newest `.log` of the partition directory.
fn active_base_offset(dir: &Path) -> i64 {
    std::fs::read_dir(dir)
        .expect("partition directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|path| base_offset(&path))
        .max()
        .expect("a segment")
}

/// The last offset of the last whole batch in `records` (v2 batch headers: base offset at 0,
/// length at 8, last offset delta at 23).
fn last_offset(records: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut last = None;
    // Bounded: each step moves past one batch.
    while records.len() >= at + 27 {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
        let delta = i32::from_be_bytes(records[at + 23..at + 27].try_into().unwrap());
        if records.len() < at + 12 + len {
            break;
        }
        last = Some(base + i64::from(delta));
        at += 12 + len;
    }
    last
}

fn fetch_by_name(topic: &str, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(64 << 10)])])
}

/// Fills a topic of 64 KiB segments with ~600 KB, then reads it all from offset 0 while
/// `probe` records; returns the (thread, segment) of every read of a segment below the active
/// one, and the records read.
async fn old_segment_reads(policy: ReadPathPolicy) -> (Vec<(String, i64)>, i64) {
    const TOPIC: &str = "oldreads";
    let probe = Arc::new(ReadThreads::default());
    let seam = Arc::clone(&probe);
    let broker = TestBroker::start_with(move |c| {
        c.file_io = Some(seam);
        c.cold_reads.policy = policy;
        // Housekeeping reads nothing of segments, but keep it out of the recording anyway.
        c.tick_interval_ms = 3_600_000;
    })
    .await;
    let mut client = broker.connect().await;
    let created = create_with_configs(&mut client, TOPIC, &[("segment.bytes", "65536")]).await;
    assert_eq!(created, 0);
    let mut end = 0;
    for _ in 0..40 {
        let batch = record_batch(15, 1_000, common::now_ms());
        let r = client.send(9, &produce_request(TOPIC, batch, -1)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        end += 15;
    }
    let active = active_base_offset(&broker.dir.path().join(format!("{TOPIC}-0")));
    assert!(active > 0, "the data spans several segments");

    probe.recording.store(true, Ordering::SeqCst);
    let mut offset = 0;
    // Bounded: each fetch returns at least one batch (15 records) until the end.
    for _ in 0..end {
        if offset >= end {
            break;
        }
        let r = client.send(12, &fetch_by_name(TOPIC, offset)).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let records = p.records.clone().unwrap_or_default();
        offset = last_offset(&records).expect("a fetch below the end returns records") + 1;
    }
    probe.recording.store(false, Ordering::SeqCst);
    assert_eq!(offset, end, "read to the end");
    broker.stop().await;
    let reads = probe.reads.lock().unwrap();
    let old = reads
        .iter()
        .map(|(thread, path)| (thread.clone(), base_offset(path)))
        .filter(|(_, base)| *base < active)
        .collect();
    (old, offset)
}

/// Every read of an old segment (its batch headers, for the index walk and the read's end;
/// the pages may be on disk only) runs on the cold-read pool, never on an async worker. The
/// same reads with the `hot` policy (the behaviour before issue 13) run on the workers, which
/// shows the probe sees them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segment_fetch_reads_run_on_the_cold_read_pool_never_on_a_worker() {
    bounded(async {
        let (reads, _) = old_segment_reads(ReadPathPolicy::Auto).await;
        assert!(!reads.is_empty(), "the probe saw the old segments read");
        let off_pool: Vec<_> = reads
            .iter()
            .filter(|(thread, _)| thread != "rill-cold-read")
            .collect();
        assert!(
            off_pool.is_empty(),
            "old segments read off the cold-read pool: {off_pool:?}"
        );

        let (reads, _) = old_segment_reads(ReadPathPolicy::Hot).await;
        // tokio names its worker threads `tokio-rt-worker` (`tokio-runtime-worker` before 1.4x).
        assert!(
            reads.iter().any(|(thread, _)| thread.starts_with("tokio-")),
            "with the hot policy old segments are read on the workers: {reads:?}"
        );
    })
    .await;
}

/// Waits (bounded) until `count` is at least 1.
async fn started(count: &std::sync::atomic::AtomicU64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "{what} never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A request that touches no log: answered at once unless the runtime is blocked.
async fn api_versions(client: &mut Client) {
    let r = client.send(3, &ApiVersionsRequest::default()).await;
    assert_eq!(r.error_code, 0);
}

async fn topic_id(client: &mut Client, topic: &str) -> Uuid {
    let r = client
        .send(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ])),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
    r.topics[0].topic_id
}

/// After a restart a log stays on disk until first used; a v13 fetch that names the topic
/// only by id opens it on the I/O pool. Its open is stuck on the disk (the opens of the
/// partition's files wait), and another connection is answered meanwhile; the fetch is
/// answered, with the record, once the open goes on.
#[tokio::test]
async fn a_fetch_by_topic_id_opens_its_log_off_the_runtime() {
    const TOPIC: &str = "byid";
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create_with_configs(&mut client, TOPIC, &[]).await, 0);
        let batch = record_batch(1, 10, common::now_ms());
        let r = client
            .send(9, &produce_request(TOPIC, batch.clone(), -1))
            .await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        let id = topic_id(&mut client, TOPIC).await;
        let dir = broker.stop().await;

        let io = Arc::new(HoldIo::default());
        // Before the restart, so the log's first open (the housekeeping tick's or the fetch's,
        // whichever comes first; they share one open) is stuck.
        let stall = StalledOpens::new(&io, &format!("{TOPIC}-0"));
        let seam = Arc::clone(&io);
        let broker = TestBroker::start_in(dir, move |c| c.file_io = Some(seam)).await;
        let mut fetcher = broker.connect().await;
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let fetch_id = fetcher.send_only(13, &request).await;
        started(&io.open_stalls, "the log's open").await;

        let mut other = broker.connect().await;
        api_versions(&mut other).await;
        assert!(
            !io.stall_timed_out.load(Ordering::SeqCst),
            "a connection waited for another's log open"
        );
        let early = tokio::time::timeout(Duration::from_millis(100), fetcher.read_frame());
        assert!(early.await.is_err(), "answered before its log was open");
        drop(stall);
        let r = fetcher.read_response::<FetchRequest>(13, fetch_id).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(r.responses[0].topic_id, id);
        assert_eq!(p.error_code, 0);
        assert_eq!(p.high_watermark, 1);
        assert_eq!(p.records.clone().unwrap_or_default(), batch);
        assert!(!io.stall_timed_out.load(Ordering::SeqCst));
        broker.stop().await;
    })
    .await;
}

const LOCK_MS: u64 = 300;

fn share_fetch(member: &str, epoch: i32, id: Uuid, wait_ms: i32) -> ShareFetchRequest {
    use kafka_protocol::messages::share_fetch_request::{FetchPartition, FetchTopic};
    ShareFetchRequest::default()
        .with_group_id(Some(GroupId(s("g"))))
        .with_member_id(Some(s(member)))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(500)
        .with_batch_size(500)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![
                FetchPartition::default().with_partition_index(0)
            ])])
}

/// (first, last, delivery count) of the acquired records of the answer.
fn acquired(r: &ShareFetchResponse) -> Vec<(i64, i64, i16)> {
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    r.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .flat_map(|p| p.acquired_records.iter())
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect()
}

/// A broker whose share records are archived at their second delivery, with topic `shared`
/// (its id returned), member `m1` of share group `g` (on `client`) and three records that `m1`
/// holds for their second (last) delivery, share session epoch 3 next. Releasing them, or
/// their lock expiring, archives them, and that appends share state.
async fn held_at_the_delivery_limit(io: &Arc<HoldIo>) -> (TestBroker, Client, Uuid) {
    const TOPIC: &str = "shared";
    let seam = Arc::clone(io);
    let broker = TestBroker::start_with(move |c| {
        c.file_io = Some(seam);
        c.shares.state_partitions = 1;
        c.shares.record_lock_duration_ms = LOCK_MS as i64;
        c.shares.delivery_count_limit = 2;
    })
    .await;
    let mut client = broker.connect().await;
    let created = client
        .send(
            7,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(TOPIC))
                    .with_num_partitions(1)
                    .with_replication_factor(-1)]),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    let id = topic_id(&mut client, TOPIC).await;
    let joined = client
        .send(
            1,
            &share_heartbeat(0).with_subscribed_topic_names(Some(vec![name(TOPIC)])),
        )
        .await;
    assert_eq!(joined.error_code, 0, "{:?}", joined.error_message);
    // Opens the session; the share-partition starts at the log end.
    let r = client.send(1, &share_fetch("m1", 0, id, 0)).await;
    assert!(acquired(&r).is_empty());
    let batch: Bytes = record_batch(3, 8, common::now_ms());
    let r = client.send(9, &produce_request(TOPIC, batch, -1)).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let r = client.send(1, &share_fetch("m1", 1, id, 2_000)).await;
    assert_eq!(acquired(&r), vec![(0, 2, 1)]);
    // The lock expires below the limit (nothing written), then the records come again.
    tokio::time::sleep(Duration::from_millis(LOCK_MS + 200)).await;
    let r = client.send(1, &share_fetch("m1", 2, id, 2_000)).await;
    assert_eq!(acquired(&r), vec![(0, 2, 2)]);
    (broker, client, id)
}

/// `m1`'s ShareGroupHeartbeat in group `g` at `epoch`.
fn share_heartbeat(epoch: i32) -> ShareGroupHeartbeatRequest {
    ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s("m1"))
        .with_member_epoch(epoch)
}

/// With the share state write stuck on the disk (started), another connection is answered.
async fn others_answered_during_the_stuck_write(broker: &TestBroker, io: &HoldIo) {
    started(&io.write_stalls, "the share state write").await;
    let mut other = broker.connect().await;
    api_versions(&mut other).await;
    assert!(
        !io.stall_timed_out.load(Ordering::SeqCst),
        "a connection waited for another's stuck share state write"
    );
}

/// A ShareFetch whose acquisition meets an expired lock at the delivery limit appends the
/// share state (the records are archived). With that write stuck on the disk (whether the
/// share ticker or the fetch itself makes it, the fetch waits for it), another connection is
/// answered, and the fetch is answered once the write goes on.
#[tokio::test]
async fn a_share_fetch_stuck_on_a_share_state_write_holds_up_no_other_connection() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let (broker, mut client, id) = held_at_the_delivery_limit(&io).await;
        // This lock expires at the limit: the records are archived, and that is written.
        let stall = StalledWrites::new(&io, "__share_group_state");
        tokio::time::sleep(Duration::from_millis(LOCK_MS + 200)).await;
        let fetch_id = client.send_only(1, &share_fetch("m1", 3, id, 0)).await;
        others_answered_during_the_stuck_write(&broker, &io).await;
        let early = tokio::time::timeout(Duration::from_millis(100), client.read_frame());
        assert!(early.await.is_err(), "answered before the write went on");
        drop(stall);
        let r = client.read_response::<ShareFetchRequest>(1, fetch_id).await;
        assert!(acquired(&r).is_empty(), "archived at the delivery limit");
        assert!(!io.stall_timed_out.load(Ordering::SeqCst));
        broker.stop().await;
    })
    .await;
}

/// A closed connection's share session releases what its member holds; records at the
/// delivery limit are archived, and that write, stuck on the disk, holds up no other
/// connection (it runs on the I/O pool, not on the worker that ran the connection).
#[tokio::test]
async fn a_share_release_on_connection_close_holds_up_no_other_connection() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let (broker, client, _) = held_at_the_delivery_limit(&io).await;
        let stall = StalledWrites::new(&io, "__share_group_state");
        drop(client);
        others_answered_during_the_stuck_write(&broker, &io).await;
        drop(stall);
        broker.stop().await;
        assert!(!io.stall_timed_out.load(Ordering::SeqCst));
    })
    .await;
}

/// A member that leaves its share group (heartbeat at epoch -1) releases what it holds, with
/// the same archive write; stuck, it holds up no other connection, and the leave is answered
/// once the write goes on.
#[tokio::test]
async fn a_share_release_on_leaving_the_group_holds_up_no_other_connection() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let (broker, mut client, _) = held_at_the_delivery_limit(&io).await;
        let stall = StalledWrites::new(&io, "__share_group_state");
        let leave_id = client.send_only(1, &share_heartbeat(-1)).await;
        others_answered_during_the_stuck_write(&broker, &io).await;
        drop(stall);
        let r = client
            .read_response::<ShareGroupHeartbeatRequest>(1, leave_id)
            .await;
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        assert_eq!(r.member_epoch, -1);
        broker.stop().await;
        assert!(!io.stall_timed_out.load(Ordering::SeqCst));
    })
    .await;
}
