//! Fetch throughput, sendfile versus copying path, next to loopback probes measured in the
//! same run (DESIGN.md §4: a figure means something only next to its limit).
//!
//! Not part of the normal suite:
//! `cargo test --release -p rill-broker --test throughput -- --ignored --nocapture`

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{now_ms, record_batch, TestBroker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rill_broker::WriteMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BATCHES: usize = 48;
const RUN: Duration = Duration::from_secs(2);
const FETCH_BYTES: i32 = 16 << 20;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Reads and discards bytes until `total` have arrived.
async fn drain(stream: &mut TcpStream, buf: &mut [u8], mut total: usize) {
    while total > 0 {
        let want = total.min(buf.len());
        let n = stream.read(&mut buf[..want]).await.expect("read");
        assert!(n > 0, "peer closed");
        total -= n;
    }
}

async fn fetch_gbps(mode: WriteMode) -> f64 {
    let broker = TestBroker::start_with(|c| c.write_mode = mode).await;
    let mut client = broker.connect().await;
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("tp")))
        ]))
        .with_allow_auto_topic_creation(true);
    client.send(12, &metadata).await;
    let batch = record_batch(60, 16 * 1024, now_ms());
    for _ in 0..BATCHES {
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("tp"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.clone()))])]);
        client.send(9, &request).await;
    }
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("tp"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(FETCH_BYTES)])]);
    let (_, frame) = client.encode(11, &fetch);
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut bytes = 0usize;
    while started.elapsed() < RUN {
        client.stream.write_all(&frame).await.expect("write");
        let mut len = [0u8; 4];
        client.stream.read_exact(&mut len).await.expect("len");
        let len = i32::from_be_bytes(len) as usize;
        drain(&mut client.stream, &mut buf, len).await;
        bytes += len + 4;
    }
    let gbps = bytes as f64 / started.elapsed().as_secs_f64() / 1e9;
    let metrics = broker.metrics.snapshot();
    println!(
        "fetch {mode:?}: {gbps:.2} GB/s (sendfile {} MB, copied {} MB)",
        metrics.sendfile_bytes_total >> 20,
        metrics.copied_bytes_total >> 20
    );
    broker.stop().await;
    gbps
}

/// Loopback probe: one sender writing `FETCH_BYTES` per round, by sendfile or write.
async fn probe_gbps(use_sendfile: bool) -> f64 {
    let mut file = tempfile::tempfile().expect("tempfile");
    let data = vec![7u8; FETCH_BYTES as usize];
    file.write_all(&data).expect("fill");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sender = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let stream = stream.into_std().expect("std");
        stream.set_nonblocking(false).expect("blocking");
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut stream = stream;
            while started.elapsed() < RUN {
                if use_sendfile {
                    let mut offset = 0u64;
                    while offset < FETCH_BYTES as u64 {
                        let left = FETCH_BYTES as usize - offset as usize;
                        let sent = rustix::fs::sendfile(
                            stream.as_fd(),
                            file.as_fd(),
                            Some(&mut offset),
                            left,
                        );
                        if sent.is_err() {
                            return;
                        }
                    }
                } else if stream.write_all(&data).is_err() {
                    return;
                }
            }
        })
        .await
        .expect("sender");
    });
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut bytes = 0usize;
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        bytes += n;
    }
    sender.await.expect("sender task");
    bytes as f64 / started.elapsed().as_secs_f64() / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn fetch_throughput_against_loopback_limits() {
    let sendfile_probe = probe_gbps(true).await;
    let write_probe = probe_gbps(false).await;
    println!("probe: loopback sendfile {sendfile_probe:.2} GB/s, write {write_probe:.2} GB/s");
    let zero_copy = fetch_gbps(WriteMode::Sendfile).await;
    let copy = fetch_gbps(WriteMode::Copy).await;
    println!(
        "fetch sendfile {zero_copy:.2} GB/s ({:.2} of the sendfile probe); copy {copy:.2} GB/s ({:.2} of the write probe)",
        zero_copy / sendfile_probe,
        copy / write_probe
    );
}
