//! Wire benchmark: the broker driven over loopback with pre-encoded requests. Prints produce
//! throughput (1 KiB records in 1 MiB batches; 1 and 8 partitions; acks=1 and acks=all) and
//! fetch throughput of the same data, each as a ratio of this machine's loopback limits
//! measured in the same run (TCP write() of a user buffer, sendfile() of a page-cached file),
//! and produce latency at a fixed 10 000 records/s (HDR histogram). Asserts nothing about
//! speed. `cargo bench -p rill-broker --bench wire`

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rill_broker::{Broker, BrokerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::{decode, frame, Conn};

const MIB: usize = 1 << 20;
const RECORD: usize = 1024;
const PROBE: Duration = Duration::from_secs(2);
const PRODUCE_RUN: Duration = Duration::from_secs(3);
const LATENCY_RUN: Duration = Duration::from_secs(3);
/// Requests a producer connection keeps in flight (pipelining, as clients do).
const IN_FLIGHT: usize = 4;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn gbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// A receiver that discards everything; returns its address and a handle yielding the count.
async fn sink() -> (SocketAddr, tokio::task::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4 * MIB];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    (addr, handle)
}

/// Loopback limit 1: write() of a hot 1 MiB user buffer.
async fn probe_write() -> f64 {
    let (addr, received) = sink().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let buf = vec![7u8; MIB];
    let started = Instant::now();
    while started.elapsed() < PROBE {
        s.write_all(&buf).await.unwrap();
    }
    drop(s);
    let total = received.await.unwrap();
    gbps(total, started.elapsed())
}

/// Loopback limit 2: sendfile() of a page-cached 256 MiB file, 16 MiB per call.
async fn probe_sendfile(dir: &std::path::Path) -> f64 {
    let path = dir.join("probe");
    std::fs::write(&path, vec![9u8; 256 * MIB]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let (addr, received) = sink().await;
    let s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut offset = 0u64;
    while started.elapsed() < PROBE {
        s.writable().await.unwrap();
        let mut pos = offset % (256 * MIB as u64);
        let want = (256 * MIB - pos as usize).min(16 * MIB);
        match s.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(s.as_fd(), &file, Some(&mut pos), want)
                .map_err(std::io::Error::from)
        }) {
            Ok(n) => offset += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("sendfile: {e}"),
        }
    }
    drop(s);
    let total = received.await.unwrap();
    std::fs::remove_file(path).unwrap();
    gbps(total, started.elapsed())
}

/// A valid uncompressed v2 batch of `count` 1 KiB records.
fn batch(count: usize, timestamp: i64) -> Bytes {
    Bytes::from(rill_storage::batch::build_batch(
        count,
        &[42u8; RECORD],
        timestamp,
    ))
}

fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// One connection per partition, each keeping IN_FLIGHT pre-encoded requests in flight.
async fn produce_throughput(addr: SocketAddr, topic: &str, partitions: i32, acks: i16) -> f64 {
    let records = batch((MIB - 61) / (RECORD + 12), rill_broker::broker::now_ms());
    let started = Instant::now();
    let tasks: Vec<_> = (0..partitions)
        .map(|p| {
            let request = frame(9, 1, &produce_request(topic, p, acks, records.clone()));
            tokio::spawn(async move {
                let mut c = Conn::connect(addr).await;
                let (mut sent, mut answered) = (0u64, 0u64);
                while started.elapsed() < PRODUCE_RUN || answered < sent {
                    if sent - answered < IN_FLIGHT as u64 && started.elapsed() < PRODUCE_RUN {
                        c.stream.write_all(&request).await.unwrap();
                        sent += 1;
                        continue;
                    }
                    let response = decode::<ProduceRequest>(9, c.read_frame().await);
                    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
                    answered += 1;
                }
                answered * request.len() as u64
            })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.unwrap();
    }
    gbps(bytes, started.elapsed())
}

/// Reads partition 0 of `topic` from the start to its end, 16 MiB per fetch.
async fn fetch_throughput(addr: SocketAddr, topic: &str, end_offset: i64) -> f64 {
    let mut c = Conn::connect(addr).await;
    let mut offset = 0i64;
    let mut bytes = 0u64;
    let started = Instant::now();
    // Bounded: every fetch advances past at least one batch.
    while offset < end_offset {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(16 << 20)])]);
        let response = c.send(12, &request).await;
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut records = p.records.clone().unwrap_or_default();
        bytes += records.len() as u64;
        let before = offset;
        // Walk the batch headers to the next offset.
        while records.remaining() >= 61 {
            let base = i64::from_be_bytes(records[0..8].try_into().unwrap());
            let len = i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize + 12;
            let last_delta = i32::from_be_bytes(records[23..27].try_into().unwrap());
            if len > records.len() {
                break;
            }
            offset = base + i64::from(last_delta) + 1;
            records.advance(len);
        }
        assert!(offset > before, "fetch made no progress at {before}");
    }
    gbps(bytes, started.elapsed())
}

/// Produce latency at 10 000 records/s: 10 records every millisecond, one request at a time.
async fn produce_latency(addr: SocketAddr, topic: &str, acks: i16) -> hdrhistogram::Histogram<u64> {
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut c = Conn::connect(addr).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    while started.elapsed() < LATENCY_RUN {
        tick.tick().await;
        let request = frame(
            9,
            1,
            &produce_request(topic, 0, acks, batch(10, rill_broker::broker::now_ms())),
        );
        let t = Instant::now();
        c.stream.write_all(&request).await.unwrap();
        let response = decode::<ProduceRequest>(9, c.read_frame().await);
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
    }
    hist
}

async fn create_topic(addr: SocketAddr, topic: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let mut c = Conn::connect(addr).await;
    let r = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)]),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::current_dir().unwrap().join("target");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let write_limit = probe_write().await;
    let sendfile_limit = probe_sendfile(dir.path()).await;
    println!("loopback limits: write() {write_limit:.2} GB/s; sendfile() from page cache {sendfile_limit:.2} GB/s");

    let config = BrokerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data"),
        ..BrokerConfig::default()
    };
    let broker = Broker::start(config).await.unwrap();
    let addr = broker.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(broker.run(async move {
        let _ = stopped.await;
    }));

    for (partitions, acks) in [(1, 1i16), (8, 1), (1, -1), (8, -1)] {
        let topic = format!("p{partitions}-acks{acks}");
        create_topic(addr, &topic, partitions).await;
        let r = produce_throughput(addr, &topic, partitions, acks).await;
        println!(
            "produce 1 MiB batches, {partitions} partition(s), acks={acks:>2}: {r:.2} GB/s = {:.2} of write() limit",
            r / write_limit
        );
    }
    // Fetch back what the single-partition acks=1 run wrote.
    let mut c = Conn::connect(addr).await;
    let lo = c
        .send(7, &ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default().with_name(name("p1-acks1")).with_partitions(vec![
                kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1),
            ]),
        ]))
        .await;
    let end = lo.topics[0].partitions[0].offset;
    let r = fetch_throughput(addr, "p1-acks1", end).await;
    println!("fetch the same data (sendfile, 16 MiB per partition fetch): {r:.2} GB/s = {:.2} of sendfile limit, {:.2} of write() limit", r / sendfile_limit, r / write_limit);

    for acks in [1i16, -1] {
        let topic = format!("latency-acks{acks}");
        create_topic(addr, &topic, 1).await;
        let h = produce_latency(addr, &topic, acks).await;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "produce latency at 10 000 records/s, acks={acks:>2}: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms ({} requests)",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0,
            h.len()
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
