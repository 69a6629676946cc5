//! rust-rdkafka against a real broker: create a topic, produce with acks=all, then consume
//! by assignment (assign + explicit offsets, no group membership) and compare bytes.
//! The broker is a fresh `rill serve` (RILL_BIN, default <repo>/target/release/rill) or,
//! when KAFKA_BOOTSTRAP is set, that address (nothing is started).

mod common;
use common::Broker;

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_by_assignment() {
    let broker = Broker::start("rust");
    let topic = format!("rust-pc-{}", std::process::id());
    let partitions = 2;

    let admin: AdminClient<DefaultClientContext> =
        config(&broker.bootstrap).create().expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await
        .expect("CreateTopics request");
    assert!(res[0].is_ok(), "create topic: {:?}", res[0]);

    let producer: FutureProducer = config(&broker.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    // wait (bounded) until the leader serves the partitions
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = (0..partitions).all(|p| {
            producer
                .client()
                .fetch_watermarks(&topic, p, Duration::from_secs(5))
                .is_ok()
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} not served within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // an hour ago: explicit timestamps must be recent, because a broker deletes records
    // older than retention.ms (7 days by default)
    let base_ts: i64 = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        - 3600)
        * 1000;
    let n: usize = 2000;
    let value = |i: usize| -> Vec<u8> { (0..(i % 700)).map(|j| (i * 31 + j) as u8).collect() };
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
    let values: Vec<Vec<u8>> = (0..n).map(value).collect();
    let idx: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let mut futs = Vec::with_capacity(n);
    for i in 0..n {
        let rec = FutureRecord::to(&topic)
            .partition((i % 2) as i32)
            .key(&keys[i])
            .payload(&values[i])
            .timestamp(base_ts + i as i64)
            .headers(OwnedHeaders::new().insert(Header {
                key: "i",
                value: Some(&idx[i]),
            }));
        futs.push(producer.send(rec, Duration::from_secs(30)));
    }
    for (i, f) in futs.into_iter().enumerate() {
        let delivery = f.await.unwrap_or_else(|e| panic!("record {i}: {e:?}"));
        assert_eq!(delivery.partition, (i % 2) as i32);
        assert_eq!(delivery.offset, (i / 2) as i64, "offset of record {i}");
    }

    let consumer: BaseConsumer = config(&broker.bootstrap)
        .set("group.id", "rill-compat-assign-only") // librdkafka requires it; never joins
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .expect("tpl");
    tpl.add_partition_offset(&topic, 1, Offset::Offset(100))
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let want = n / 2 + (n / 2 - 100);
    let mut next = [0i64, 100i64];
    let mut got = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < want {
        assert!(
            Instant::now() < deadline,
            "consumed {got} of {want} in 60 s"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg.expect("fetch error");
        let p = msg.partition() as usize;
        assert_eq!(msg.offset(), next[p], "partition {p} out of order");
        next[p] += 1;
        let i = msg.offset() as usize * 2 + p;
        assert_eq!(
            msg.payload().unwrap_or(&[]),
            &value(i)[..],
            "record {i} value"
        );
        assert_eq!(msg.key(), Some(format!("key-{i}").as_bytes()));
        assert_eq!(msg.timestamp().to_millis(), Some(base_ts + i as i64));
        let h = msg.headers().expect("headers").get(0);
        assert_eq!((h.key, h.value), ("i", Some(i.to_string().as_bytes())));
        got += 1;
    }
    let (lo, hi) = consumer
        .fetch_watermarks(&topic, 1, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((lo, hi), (0, (n / 2) as i64));

    let del = admin
        .delete_topics(&[&topic], &opts)
        .await
        .expect("DeleteTopics request");
    assert!(del[0].is_ok(), "delete topic: {:?}", del[0]);
}
