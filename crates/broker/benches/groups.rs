//! Consumer group benchmark: rebalance time for 50 members on a 100-partition topic, and
//! OffsetCommit throughput and latency from 8 concurrent committers, against an in-process
//! broker over loopback. Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p rill-broker --bench groups`

use std::net::SocketAddr;

mod common;
use common::Conn;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rill_broker::{Broker, BrokerConfig};

const MEMBERS: usize = 50;
const PARTITIONS: i32 = 100;
const COMMITTERS: usize = 8;
const COMMIT_SECONDS: u64 = 5;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s("bench")))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

/// One member: join (with MEMBER_ID_REQUIRED), sync (the leader assigns partitions round
/// robin), returns its connection, member id and generation.
async fn join_and_sync(addr: SocketAddr, known: Option<(Conn, String)>) -> (Conn, String, i32) {
    let (mut c, mut member) = match known {
        Some((c, m)) => (c, m),
        None => (Conn::connect(addr).await, String::new()),
    };
    // As a real client: a SyncGroup answered REBALANCE_IN_PROGRESS means join again.
    for _ in 0..100 {
        let mut j = c.send(9, &join(&member)).await;
        if j.error_code == 79 {
            member = j.member_id.to_string();
            j = c.send(9, &join(&member)).await;
        }
        assert_eq!(j.error_code, 0, "join");
        member = j.member_id.to_string();
        let assignments: Vec<SyncGroupRequestAssignment> = j
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut a = BytesMut::new();
                for p in (0..PARTITIONS).filter(|p| *p as usize % j.members.len() == i) {
                    a.put_i32(p);
                }
                SyncGroupRequestAssignment::default()
                    .with_member_id(m.member_id.clone())
                    .with_assignment(a.freeze())
            })
            .collect();
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("bench")))
            .with_generation_id(j.generation_id)
            .with_member_id(s(&member))
            .with_assignments(assignments);
        match c.send(5, &sync).await.error_code {
            0 => return (c, member, j.generation_id),
            27 => continue,
            other => panic!("sync failed with {other}"),
        }
    }
    panic!("no stable generation after 100 rounds");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    config.groups.initial_rebalance_delay_ms = 0;
    let broker = Broker::start(config).await.unwrap();
    let addr = broker.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(broker.run(async move {
        let _ = stopped.await;
    }));

    // Members behave as consumers: join and sync, then heartbeat every 5 ms and rejoin when
    // told a rebalance is in progress. Each reports (member index, generation) when synced.
    let (report_tx, mut reports) = tokio::sync::mpsc::unbounded_channel::<(usize, i32)>();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let spawn_member = |index: usize| {
        let report = report_tx.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let (mut c, mut member, mut generation) = join_and_sync(addr, None).await;
            let _ = report.send((index, generation));
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let hb = HeartbeatRequest::default()
                    .with_group_id(GroupId(s("bench")))
                    .with_generation_id(generation)
                    .with_member_id(s(&member));
                if c.send(4, &hb).await.error_code != 0 {
                    let (c2, m2, g2) = join_and_sync(addr, Some((c, member))).await;
                    (c, member, generation) = (c2, m2, g2);
                    let _ = report.send((index, generation));
                }
            }
        })
    };
    // Waits until `count` members have all reported the same, newest generation.
    async fn settled(
        reports: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, i32)>,
        count: usize,
    ) -> i32 {
        let mut latest = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (index, generation) = tokio::time::timeout_at(deadline.into(), reports.recv())
                .await
                .expect("group never settled")
                .unwrap();
            latest.insert(index, generation);
            let newest = *latest.values().max().unwrap();
            if latest.len() == count && latest.values().all(|g| *g == newest) {
                return newest;
            }
        }
    }

    let started = Instant::now();
    let mut tasks: Vec<_> = (0..MEMBERS).map(spawn_member).collect();
    let generation = settled(&mut reports, MEMBERS).await;
    println!(
        "{MEMBERS} members join a new group at once ({PARTITIONS} partitions, no initial delay): {:.1} ms until all hold one generation's assignment (generation {generation})",
        started.elapsed().as_secs_f64() * 1000.0
    );
    // Let heartbeats settle, then one more member joins and everyone rebalances.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while reports.try_recv().is_ok() {}
    let started = Instant::now();
    tasks.push(spawn_member(MEMBERS));
    let generation = settled(&mut reports, MEMBERS + 1).await;
    println!(
        "rebalance when a member joins a stable group of {MEMBERS}: {:.1} ms until all {} are assigned again (generation {generation}; members heartbeat every 5 ms)",
        started.elapsed().as_secs_f64() * 1000.0,
        MEMBERS + 1
    );
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // OffsetCommit: 8 committers, each its own group, each waiting for its commit.
    let mut c = Conn::connect(addr).await;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    c.send(
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(s("commits")))
                .with_num_partitions(8)
                .with_replication_factor(-1)]),
    )
    .await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..COMMITTERS)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = Conn::connect(addr).await;
                let mut latencies = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(COMMIT_SECONDS);
                let mut offset = 0;
                while Instant::now() < deadline {
                    offset += 1;
                    let r = OffsetCommitRequest::default()
                        .with_group_id(GroupId(s(&format!("committer-{i}"))))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s("commits")))
                            .with_partitions(vec![OffsetCommitRequestPartition::default()
                                .with_partition_index(i as i32)
                                .with_committed_offset(offset)])]);
                    let t = Instant::now();
                    let response = c.send(8, &r).await;
                    latencies.push(t.elapsed());
                    assert_eq!(response.topics[0].partitions[0].error_code, 0);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    println!(
        "OffsetCommit, {COMMITTERS} committers (durable, acks=all-like): {:.0} commits/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.5).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0,
        all.last().unwrap().as_secs_f64() * 1000.0
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
