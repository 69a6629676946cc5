//! rust-rdkafka's StreamConsumer in a consumer group (classic protocol): one member consumes
//! everything, committing synchronously after each record, and leaves; then two members join
//! the same group, split the partitions, and resume exactly at the committed offsets.
//! The broker is a fresh `rill serve` (RILL_BIN, default <repo>/target/release/rill) or,
//! when KAFKA_BOOTSTRAP is set, that address (nothing is started).

mod common;
use common::Broker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Offset;

const PARTITIONS: i32 = 3;

fn member(bootstrap: &str, group: &str, name: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", name)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .expect("stream consumer")
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    tag: &str,
    n: usize,
) -> BTreeMap<(i32, i64), String> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let value = format!("{tag}-{i}");
        let rec = FutureRecord::<(), _>::to(topic)
            .partition(i as i32 % PARTITIONS)
            .payload(&value);
        let d = producer
            .send(rec, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("record {i}: {e:?}"));
        out.insert((d.partition, d.offset), value);
    }
    out
}

fn committed(c: &StreamConsumer, topic: &str) -> BTreeMap<i32, Offset> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(30))
        .expect("OffsetFetch");
    got.elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_consumer_group_commit_resume_split() {
    let broker = Broker::start("rust-groups");
    let bs = broker.bootstrap.clone();
    let topic = format!("rust-groups-{}", std::process::id());
    let group = format!("g-{topic}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await
        .expect("CreateTopics request");
    assert!(res[0].is_ok(), "create topic: {:?}", res[0]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("acks", "all")
        .create()
        .expect("producer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(0..PARTITIONS).all(|p| {
        producer
            .client()
            .fetch_watermarks(&topic, p, Duration::from_secs(5))
            .is_ok()
    }) {
        assert!(
            Instant::now() < deadline,
            "topic {topic} not served within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = produce(&producer, &topic, "a", 90).await;

    // one member: everything, a synchronous commit after each record
    {
        let c = member(&bs, &group, "rust-0");
        c.subscribe(&[&topic]).expect("subscribe");
        let mut got = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < first.len() {
            assert!(
                Instant::now() < deadline,
                "consumed {} of {} in 60 s",
                got.len(),
                first.len()
            );
            let Ok(msg) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await else {
                continue;
            };
            let msg = msg.expect("consume error");
            let value = String::from_utf8(msg.payload().unwrap_or(&[]).to_vec()).expect("utf8");
            got.insert((msg.partition(), msg.offset()), value);
            c.commit_message(&msg, CommitMode::Sync).expect("commit");
        }
        assert_eq!(got, first);
        let assigned: BTreeSet<i32> = c
            .assignment()
            .expect("assignment")
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        assert_eq!(assigned, (0..PARTITIONS).collect());
        let want: BTreeMap<i32, Offset> =
            (0..PARTITIONS).map(|p| (p, Offset::Offset(30))).collect();
        assert_eq!(committed(&c, &topic), want);
    } // dropped: close, LeaveGroup

    // two members split the partitions and resume at the commits
    let second = produce(&producer, &topic, "b", 30).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<(i32, i64, String, String)>::new()));
    let members: Vec<Arc<StreamConsumer>> = (1..=2)
        .map(|i| Arc::new(member(&bs, &group, &format!("rust-{i}"))))
        .collect();
    let mut tasks = Vec::new();
    for (i, c) in members.iter().enumerate() {
        c.subscribe(&[&topic]).expect("subscribe");
        let (c, stop, seen) = (c.clone(), stop.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), c.recv()).await
                else {
                    continue;
                };
                let msg = msg.expect("consume error");
                let value = String::from_utf8(msg.payload().unwrap_or(&[]).to_vec()).expect("utf8");
                seen.lock().unwrap().push((
                    msg.partition(),
                    msg.offset(),
                    value,
                    format!("rust-{}", i + 1),
                ));
                // a commit can fail while the group rebalances; the record then comes again
                let _ = c.commit_message(&msg, CommitMode::Sync);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stable_since: Option<Instant> = None;
    loop {
        let owned: Vec<BTreeSet<i32>> = members
            .iter()
            .map(|c| {
                c.assignment()
                    .expect("assignment")
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .collect();
        let all_seen = {
            let s = seen.lock().unwrap();
            second
                .keys()
                .all(|k| s.iter().any(|(p, o, _, _)| (*p, *o) == *k))
        };
        let split = owned.iter().all(|o| !o.is_empty())
            && owned[0].is_disjoint(&owned[1])
            && owned[0].union(&owned[1]).count() == PARTITIONS as usize;
        if split && all_seen {
            let since = *stable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                break;
            }
        } else {
            stable_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "no split with everything consumed in 60 s: owned {owned:?}, all seen {all_seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("member task");
    }
    let s = seen.lock().unwrap().clone();
    for (p, o, v, who) in &s {
        assert_eq!(
            second.get(&(*p, *o)),
            Some(v),
            "{who} got {p}:{o}={v}, which was committed before it joined"
        );
    }
    let want: BTreeMap<i32, Offset> = (0..PARTITIONS).map(|p| (p, Offset::Offset(40))).collect();
    assert_eq!(committed(&members[0], &topic), want);
    drop(members);
    let del = admin
        .delete_topics(&[&topic], &opts)
        .await
        .expect("DeleteTopics request");
    assert!(del[0].is_ok(), "delete topic: {:?}", del[0]);
}
