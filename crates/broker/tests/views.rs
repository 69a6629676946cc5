//! Filtered views over the wire: a view topic created with CreateTopics holds exactly the
//! source records its filter selects, in source order, each with its source offset; it keeps
//! up with the source, survives a crash without gaps or duplicates, and refuses bad filters
//! and produce requests.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::producer::{bounded, name, produce_to};
use common::{now_ms, Client, TestBroker};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One source record: (region header, amount header, value).
type Order = (Option<&'static str>, i64, String);

/// The reference evaluator for the filter the tests use:
/// `region = 'eu' AND amount > 100` (a missing region never matches).
const FILTER: &str = "region = 'eu' AND amount > 100";
fn selected(o: &Order) -> bool {
    o.0 == Some("eu") && o.1 > 100
}

fn orders(from: usize, count: usize) -> Vec<Order> {
    let regions = [Some("eu"), Some("us"), None, Some("eu"), Some("cn")];
    (from..from + count)
        .map(|i| (regions[i % 5], (i as i64 * 37) % 250, format!("order-{i}")))
        .collect()
}

fn batch(orders: &[Order]) -> Bytes {
    let timestamp = now_ms();
    let records: Vec<Record> = orders
        .iter()
        .enumerate()
        .map(|(i, (region, amount, value))| {
            let mut record = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(value.clone())),
                headers: Default::default(),
            };
            if let Some(r) = region {
                record
                    .headers
                    .insert(s("region"), Some(Bytes::from(r.to_string())));
            }
            record
                .headers
                .insert(s("amount"), Some(Bytes::from(amount.to_string())));
            record
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Gzip,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn create_request(topic: &str, partitions: i32, configs: &[(&str, &str)]) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            )])
}

/// Creates `topic` and returns (error code, error message).
async fn create(
    client: &mut Client,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> (i16, String) {
    let r = client
        .send(5, &create_request(topic, partitions, configs))
        .await;
    let t = &r.topics[0];
    (
        t.error_code,
        t.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// Every record of one partition from offset 0: (value, source offset header).
async fn fetch_all(client: &mut Client, topic: &str, partition: i32) -> Vec<(String, i64)> {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(8 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(8 << 20)])]);
    let response = client.send(12, &request).await;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let mut bytes = p.records.clone().unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("batches decode");
    sets.iter()
        .flat_map(|set| &set.records)
        .map(|r| {
            let source = r
                .headers
                .get(&s("rill-source-offset"))
                .cloned()
                .flatten()
                .map(|v| {
                    String::from_utf8(v.to_vec())
                        .unwrap()
                        .parse::<i64>()
                        .unwrap()
                })
                .expect("every view record carries its source offset");
            let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            (value, source)
        })
        .collect()
}

/// Waits (bounded) until the view partition holds `expected.len()` records, then checks
/// they are exactly `expected`, in order.
async fn expect_view(client: &mut Client, view: &str, partition: i32, expected: &[(String, i64)]) {
    let mut got = Vec::new();
    for _ in 0..200 {
        got = fetch_all(client, view, partition).await;
        if got.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(got, expected, "view {view}-{partition}");
}

/// Produces `orders` to `topic`-`partition` in batches of 10; returns the expected view
/// records (value, source offset) of those the filter selects.
async fn produce_orders(
    client: &mut Client,
    topic: &str,
    partition: i32,
    orders: &[Order],
) -> Vec<(String, i64)> {
    let mut expected = Vec::new();
    for chunk in orders.chunks(10) {
        let (code, base) = produce_to(client, None, topic, partition, batch(chunk)).await;
        assert_eq!(code, 0);
        for (i, o) in chunk.iter().enumerate() {
            if selected(o) {
                expected.push((o.2.clone(), base + i as i64));
            }
        }
    }
    expected
}

#[tokio::test]
async fn a_view_holds_exactly_the_matching_records_across_a_crash() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut c = broker.connect().await;
        assert_eq!(create(&mut c, "orders", 2, &[]).await.0, 0);
        // Records before the view exists are part of it too.
        let mut expected = [
            produce_orders(&mut c, "orders", 0, &orders(0, 100)).await,
            produce_orders(&mut c, "orders", 1, &orders(100, 50)).await,
        ];
        let view_configs = [("rill.view.source", "orders"), ("rill.view.filter", FILTER)];
        assert_eq!(create(&mut c, "orders-eu", 2, &view_configs).await.0, 0);
        expect_view(&mut c, "orders-eu", 0, &expected[0]).await;
        expect_view(&mut c, "orders-eu", 1, &expected[1]).await;
        // It keeps up with the source.
        expected[0].extend(produce_orders(&mut c, "orders", 0, &orders(150, 60)).await);
        expect_view(&mut c, "orders-eu", 0, &expected[0]).await;

        // A crash (nothing flushed or closed), more source records, a restart: the view
        // continues where its own log ends, with no gap and no duplicate.
        let dir = broker.kill().await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut c = broker.connect().await;
        expected[0].extend(produce_orders(&mut c, "orders", 0, &orders(210, 40)).await);
        expected[1].extend(produce_orders(&mut c, "orders", 1, &orders(250, 40)).await);
        expect_view(&mut c, "orders-eu", 0, &expected[0]).await;
        expect_view(&mut c, "orders-eu", 1, &expected[1]).await;
        assert!(expected[0].len() > 20 && expected[1].len() > 10);

        // Clients cannot write to a view.
        let (code, _) = produce_to(&mut c, None, "orders-eu", 0, batch(&orders(0, 1))).await;
        assert_eq!(code, 42, "INVALID_REQUEST");
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_views_are_refused_with_invalid_config() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut c = broker.connect().await;
        assert_eq!(create(&mut c, "src", 1, &[]).await.0, 0);
        let (code, message) = create(
            &mut c,
            "v1",
            1,
            &[
                ("rill.view.source", "src"),
                ("rill.view.filter", "region = 'eu' AND"),
            ],
        )
        .await;
        assert_eq!(code, 40, "INVALID_CONFIG");
        assert!(message.contains("column 18"), "{message}");
        for configs in [
            vec![
                ("rill.view.source", "missing"),
                ("rill.view.filter", "a = 1"),
            ],
            vec![("rill.view.source", "v2"), ("rill.view.filter", "a = 1")],
            vec![("rill.view.source", "src")],
            vec![
                ("rill.view.source", "src"),
                ("rill.view.filter", "a = 1"),
                ("rill.view.filter.type", "regex"),
            ],
            vec![("rill.view.sauce", "src")],
        ] {
            let (code, message) = create(&mut c, "v2", 1, &configs).await;
            assert_eq!(code, 40, "{configs:?}: {message}");
        }
        // A TAG view.
        let tag = [
            ("rill.view.source", "src"),
            ("rill.view.filter", "TagA || TagB"),
            ("rill.view.filter.type", "TAG"),
        ];
        assert_eq!(create(&mut c, "v3", 1, &tag).await.0, 0);
        broker.stop().await;
    })
    .await;
}

/// A pass that selects more than one view batch's worth (256 KiB) appends several batches,
/// in order, all or nothing.
#[tokio::test]
async fn a_large_pass_is_split_into_batches() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut c = broker.connect().await;
        assert_eq!(create(&mut c, "big", 1, &[]).await.0, 0);
        let mut expected = Vec::new();
        for round in 0..3 {
            let big: Vec<Order> = (0..40)
                .map(|i| {
                    (
                        Some("eu"),
                        200,
                        format!("{round}-{i}-{}", "x".repeat(8 * 1024)),
                    )
                })
                .collect();
            expected.extend(produce_orders(&mut c, "big", 0, &big).await);
        }
        let configs = [("rill.view.source", "big"), ("rill.view.filter", FILTER)];
        assert_eq!(create(&mut c, "big-eu", 1, &configs).await.0, 0);
        expect_view(&mut c, "big-eu", 0, &expected).await;
        assert_eq!(expected.len(), 120);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_view_does_not_resume_on_a_recreated_source() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut c = broker.connect().await;
        assert_eq!(create(&mut c, "src", 1, &[]).await.0, 0);
        let expected = produce_orders(&mut c, "src", 0, &orders(0, 50)).await;
        let view_configs = [("rill.view.source", "src"), ("rill.view.filter", FILTER)];
        assert_eq!(create(&mut c, "src-eu", 1, &view_configs).await.0, 0);
        expect_view(&mut c, "src-eu", 0, &expected).await;
        let delete = DeleteTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topic_names(vec![name("src")]);
        let r = c.send(4, &delete).await;
        assert_eq!(r.responses[0].error_code, 0);
        assert_eq!(create(&mut c, "src", 1, &[]).await.0, 0);
        // The new source's offsets start at 0 again and run past the old ones: a view
        // resuming at the old offset would copy some of them.
        let newer = produce_orders(&mut c, "src", 0, &orders(50, 150)).await;
        assert!(newer.iter().any(|(_, o)| *o > expected.last().unwrap().1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fetch_all(&mut c, "src-eu", 0).await, expected);
        // Nor after a restart.
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut c = broker.connect().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fetch_all(&mut c, "src-eu", 0).await, expected);
        broker.stop().await;
    })
    .await;
}
