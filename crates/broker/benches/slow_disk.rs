//! Slow-disk benchmark: acks=all produce latency on seven healthy partitions while the eighth
//! partition's fsyncs take 2 s each (a fault-injecting `FileIo` under its directory), against
//! a baseline run with no delay, in the same process. Each of the 8 partitions has its own
//! connection sending 16 KiB requests (16 × 1 KiB records) one at a time for 10 s. A third run
//! uses a single flusher thread (how main flushed before the sync workers) to show the stall
//! they remove. Prints the healthy partitions' p50/p99/max and the p99 ratio to the baseline
//! (goal: within 2×). Asserts nothing about speed.
//!
//! `cargo bench -p rill-broker --bench slow_disk` (or `scripts/bench-slow-disk`)

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rill_broker::{Broker, BrokerConfig};
use rill_storage::file_io::{FileIo, IoFile, OsIo};
use tokio::io::AsyncWriteExt;

mod common;
use common::{decode, frame, Conn};

const TOPIC: &str = "slow-disk";
const PARTITIONS: i32 = 8;
const RECORD: usize = 1024;
const RECORDS_PER_REQUEST: usize = 16;
const RUN: Duration = Duration::from_secs(10);
const SLOW_SYNC: Duration = Duration::from_secs(2);

/// The real file system, except that syncs touching `slow` (a partition directory) sleep
/// `delay` first: its files' fdatasyncs, its directory's fsync, and a syncfs while it has
/// unsynced writes (syncfs would write them back too).
#[derive(Debug)]
struct DelayIo {
    slow: Option<PathBuf>,
    delay: Duration,
    slow_dirty: AtomicBool,
}

impl DelayIo {
    fn is_slow(&self, path: &Path) -> bool {
        self.slow.as_ref().is_some_and(|dir| path.starts_with(dir))
    }
}

impl FileIo for DelayIo {
    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        if self.is_slow(file.path()) {
            self.slow_dirty.store(true, Ordering::SeqCst);
        }
        OsIo.write_at(file, bufs, offset)
    }
    fn sync_data(&self, file: &IoFile) -> io::Result<()> {
        let slow = self.is_slow(file.path());
        if slow {
            std::thread::sleep(self.delay);
        }
        OsIo.sync_data(file)?;
        if slow {
            self.slow_dirty.store(false, Ordering::SeqCst);
        }
        Ok(())
    }
    fn sync_fs(&self, file: &IoFile) -> io::Result<()> {
        if self.slow_dirty.load(Ordering::SeqCst) {
            std::thread::sleep(self.delay);
        }
        OsIo.sync_fs(file)
    }
    fn allocate(&self, file: &IoFile, len: u64) -> io::Result<()> {
        OsIo.allocate(file, len)
    }
    fn set_len(&self, file: &IoFile, len: u64) -> io::Result<()> {
        OsIo.set_len(file, len)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.is_slow(dir) {
            std::thread::sleep(self.delay);
        }
        OsIo.sync_dir(dir)
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce_request(partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(TOPIC))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// One partition's closed loop for `RUN`; returns its request latencies in µs.
async fn produce_loop(addr: SocketAddr, partition: i32) -> Vec<u64> {
    let records = Bytes::from(rill_storage::batch::build_batch(
        RECORDS_PER_REQUEST,
        &[42u8; RECORD],
        rill_broker::broker::now_ms(),
    ));
    let request = frame(9, 1, &produce_request(partition, records));
    let mut c = Conn::connect(addr).await;
    let mut latencies = Vec::new();
    let started = Instant::now();
    // Bounded by RUN (a request may end it late by one slow sync).
    while started.elapsed() < RUN {
        let t = Instant::now();
        c.stream.write_all(&request).await.unwrap();
        let response = decode::<ProduceRequest>(9, c.read_frame().await);
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        latencies.push(t.elapsed().as_micros().max(1) as u64);
    }
    latencies
}

struct Figures {
    requests: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    slow_requests: usize,
}

async fn run(dir: &Path, slow: bool, sync_workers: usize) -> Figures {
    let data_dir = dir.join(format!("data-{slow}-{sync_workers}"));
    let io = Arc::new(DelayIo {
        slow: slow.then(|| data_dir.join(format!("{TOPIC}-0"))),
        delay: SLOW_SYNC,
        slow_dirty: AtomicBool::new(false),
    });
    let config = BrokerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir,
        num_partitions: PARTITIONS,
        sync_workers,
        file_io: Some(io),
        ..BrokerConfig::default()
    };
    let broker = Broker::start(config).await.unwrap();
    let addr = broker.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(broker.run(async move {
        let _ = stopped.await;
    }));
    let mut c = Conn::connect(addr).await;
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(name(TOPIC)))]))
        .with_allow_auto_topic_creation(true);
    assert_eq!(c.send(12, &metadata).await.topics[0].error_code, 0);
    let loops: Vec<_> = (0..PARTITIONS)
        .map(|p| tokio::spawn(produce_loop(addr, p)))
        .collect();
    let mut healthy = Vec::new();
    let mut slow_requests = 0;
    for (p, l) in loops.into_iter().enumerate() {
        let latencies = l.await.unwrap();
        if p == 0 {
            slow_requests = latencies.len();
        } else {
            healthy.extend(latencies);
        }
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    healthy.sort_unstable();
    let at = |q: f64| healthy[((healthy.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    Figures {
        requests: healthy.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        slow_requests,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::current_dir().unwrap().join("target");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let workers = rill_storage::flusher::SYNC_WORKERS;
    let baseline = run(dir.path(), false, workers).await;
    let print = |what: &str, f: &Figures| {
        println!(
            "{what}: healthy partitions p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({} requests; slow partition {} requests); p99 / baseline p99 = {:.2}",
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            f.requests,
            f.slow_requests,
            f.p99_ms / baseline.p99_ms
        );
    };
    print("baseline, no delay", &baseline);
    let slow = run(dir.path(), true, workers).await;
    print(
        &format!("partition 0 fsyncs +2 s, {workers} sync workers"),
        &slow,
    );
    let single = run(dir.path(), true, 1).await;
    print("partition 0 fsyncs +2 s, 1 flusher thread", &single);
}
