//! Delayed delivery over the wire: records produced with `rill-delay-ms` / `rill-deliver-at`
//! to a topic with `rill.delivery.delayed.enable=true` reach the partition no earlier than
//! due, in due-time order, exactly once, across restarts, with a bounded in-memory
//! window; bad headers refuse the batch; other topics never look at headers. SIGKILLs of a
//! real process are in `crates/cli/tests/delayed_crash.rs`.

mod common;

use common::producer::{bounded, create_with_configs as create, name, s};

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{now_ms, Client, TestBroker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const INVALID_RECORD: i16 = 87;

const DELAYED: &[(&str, &str)] = &[("rill.delivery.delayed.enable", "true")];

/// One record: its value and its headers.
type Rec<'a> = (&'a str, Vec<(&'a str, String)>);

/// A batch of records with the given values and headers (an idempotent producer's when
/// `producer` is `Some((id, sequence))`), compressed with `compression`.
fn batch(records: &[Rec<'_>], producer: Option<(i64, i32)>, compression: Compression) -> Bytes {
    let t = now_ms();
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (value, headers))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer.map_or(-1, |p| p.0),
            producer_epoch: if producer.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: producer.map_or(i as i32 - 1, |p| p.1 + i as i32),
            timestamp: t,
            key: Some(Bytes::from(format!("k-{value}"))),
            value: Some(Bytes::from(value.to_string())),
            headers: headers
                .iter()
                .map(|(k, v)| (s(k), Some(Bytes::from(v.clone()))))
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn delay(ms: i64) -> Vec<(&'static str, String)> {
    vec![("rill-delay-ms", ms.to_string())]
}

/// Produces (acks=all); returns (error code, base offset, error message).
async fn produce(client: &mut Client, topic: &str, records: Bytes) -> (i16, i64, String) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let response = client.send(9, &request).await;
    let p = &response.responses[0].partition_responses[0];
    let message = p.error_message.as_ref().map(|m| m.to_string());
    (p.error_code, p.base_offset, message.unwrap_or_default())
}

/// A fetched record: offset, timestamp, value, headers.
#[derive(Debug, Clone)]
struct Got {
    offset: i64,
    timestamp: i64,
    value: String,
    headers: HashMap<String, String>,
}

async fn fetch_all(client: &mut Client, topic: &str) -> Vec<Got> {
    let mut out: Vec<Got> = Vec::new();
    // Bounded: each round fetches at least one more batch or stops.
    for _ in 0..10_000 {
        let from = out.last().map_or(0, |g| g.offset + 1);
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(4 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(from)
                    .with_partition_max_bytes(4 << 20)])]);
        let response = client.send(12, &request).await;
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut bytes = p.records.clone().unwrap_or_default();
        let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("batches decode");
        let before = out.len();
        for r in sets.iter().flat_map(|set| &set.records) {
            if r.offset < from {
                continue;
            }
            out.push(Got {
                offset: r.offset,
                timestamp: r.timestamp,
                value: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_deref().unwrap_or_default();
                        (k.to_string(), String::from_utf8_lossy(v).into_owned())
                    })
                    .collect(),
            });
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// Fetches until `count` records are there (bounded by `TEST_TIMEOUT` through `bounded`).
async fn wait_for(client: &mut Client, topic: &str, count: usize) -> Vec<Got> {
    loop {
        let got = fetch_all(client, topic).await;
        assert!(got.len() <= count, "more records than produced: {got:?}");
        if got.len() == count {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header_i64(g: &Got, key: &str) -> i64 {
    g.headers
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing in {g:?}"))
        .parse()
        .expect("decimal")
}

/// Every record arrived at or after its due time, in due order, once.
fn check_delivery(got: &[Got]) {
    let mut seen = std::collections::HashSet::new();
    let mut last_due = i64::MIN;
    for g in got {
        let due = header_i64(g, "rill-delayed-deliver-at");
        assert!(
            g.timestamp >= due,
            "delivered at {} before due {due}: {g:?}",
            g.timestamp
        );
        assert!(due >= last_due, "out of due order: {g:?}");
        last_due = due;
        assert!(seen.insert(g.value.clone()), "duplicate {g:?}");
        let source = &g.headers["rill-delayed-source"];
        assert!(source.contains('.'), "{source}");
    }
}

#[tokio::test]
async fn records_arrive_in_due_order_no_earlier_than_due() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "orders", DELAYED).await, 0);
        let produced = now_ms();
        let records = [
            ("c", delay(600)),
            ("a", delay(200)),
            ("now", vec![]),
            ("b", delay(400)),
            (
                "at",
                vec![("rill-deliver-at", (produced + 300).to_string())],
            ),
            ("past", vec![("rill-deliver-at", "1000".to_string())]),
        ];
        let (code, base, message) = produce(
            &mut client,
            "orders",
            batch(&records, None, Compression::None),
        )
        .await;
        assert_eq!((code, base), (0, -1), "{message}");
        // Only the undelayed records are there at first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let early: Vec<String> = fetch_all(&mut client, "orders")
            .await
            .into_iter()
            .map(|g| g.value)
            .collect();
        assert_eq!(early, ["now", "past"]);
        let got = wait_for(&mut client, "orders", records.len()).await;
        let values: Vec<&str> = got.iter().map(|g| g.value.as_str()).collect();
        assert_eq!(values, ["now", "past", "a", "at", "b", "c"]);
        check_delivery(&got);
        for g in &got {
            assert!(header_i64(g, "rill-delayed-produce-timestamp") >= produced - 1000);
            assert_eq!(g.headers.get("x"), None);
        }
        let c = got.iter().find(|g| g.value == "c").unwrap();
        assert_eq!(
            c.headers["rill-delay-ms"], "600",
            "the producer's headers stay"
        );
        assert!(c.timestamp >= produced + 600);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_headers_refuse_the_whole_batch_with_invalid_record() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.delivery_delay_max_ms = 60_000).await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "strict", DELAYED).await, 0);
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (vec![("rill-delay-ms", "soon".into())], "not decimal"),
            (vec![("rill-deliver-at", "".into())], "not decimal"),
            (vec![("rill-delay-ms", "-5".into())], "negative"),
            (vec![("rill-delay-ms", "60001".into())], "beyond"),
            (
                vec![("rill-deliver-at", (now_ms() + 3_600_000).to_string())],
                "beyond",
            ),
            (
                vec![
                    ("rill-delay-ms", "1".into()),
                    ("rill-deliver-at", "1".into()),
                ],
                "both",
            ),
        ];
        for (headers, expect) in cases {
            let records = [("ok", delay(1)), ("bad", headers.clone())];
            let (code, _, message) = produce(
                &mut client,
                "strict",
                batch(&records, None, Compression::None),
            )
            .await;
            assert_eq!(code, INVALID_RECORD, "{headers:?}: {message}");
            assert!(message.contains(expect), "{headers:?}: {message}");
            assert!(message.contains("record 1"), "{message}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(fetch_all(&mut client, "strict").await.is_empty());
        // The partition still works.
        let (code, _, _) = produce(
            &mut client,
            "strict",
            batch(&[("fine", delay(10))], None, Compression::Lz4),
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(wait_for(&mut client, "strict", 1).await[0].value, "fine");
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn other_topics_ignore_delay_headers() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "plain", &[]).await, 0);
        let records = [
            ("x", delay(60_000)),
            ("y", vec![("rill-delay-ms", "junk".into())]),
        ];
        let (code, base, _) = produce(
            &mut client,
            "plain",
            batch(&records, None, Compression::None),
        )
        .await;
        assert_eq!((code, base), (0, 0));
        let got = fetch_all(&mut client, "plain").await;
        assert_eq!(got.len(), 2);
        assert!(got
            .iter()
            .all(|g| !g.headers.contains_key("rill-delayed-source")));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_topic_default_delays_records_without_headers() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let configs = [
            ("rill.delivery.delayed.enable", "true"),
            ("rill.delivery.delay.ms", "300"),
        ];
        assert_eq!(create(&mut client, "later", &configs).await, 0);
        let started = now_ms();
        let records = [("default", vec![]), ("own", delay(100))];
        let (code, _, m) = produce(
            &mut client,
            "later",
            batch(&records, None, Compression::Zstd),
        )
        .await;
        assert_eq!(code, 0, "{m}");
        let got = wait_for(&mut client, "later", 2).await;
        assert_eq!(got[0].value, "own");
        assert_eq!(got[1].value, "default");
        assert_eq!(got[1].headers["rill-delay-ms"], "300");
        assert!(got[1].timestamp >= started + 300);
        check_delivery(&got);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_idempotent_retry_is_stored_once() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "retry", DELAYED).await, 0);
        let (pid, _) = common::producer::init_producer_id(&mut client).await;
        let first = batch(&[("one", delay(700))], Some((pid, 0)), Compression::None);
        assert_eq!(produce(&mut client, "retry", first.clone()).await.0, 0);
        assert_eq!(produce(&mut client, "retry", first).await.0, 0);
        let second = batch(&[("two", delay(10))], Some((pid, 1)), Compression::None);
        assert_eq!(produce(&mut client, "retry", second).await.0, 0);
        let got = wait_for(&mut client, "retry", 2).await;
        let values: Vec<&str> = got.iter().map(|g| g.value.as_str()).collect();
        assert_eq!(values, ["two", "one"]);
        broker.stop().await;
    })
    .await;
}

/// Produces `count` records with delays spread over `spread_ms`, in batches of 50.
async fn produce_spread(client: &mut Client, topic: &str, count: usize, spread_ms: i64) {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let values: Vec<String> = (0..count).map(|i| format!("r{i}")).collect();
    for chunk in values.chunks(50) {
        let records: Vec<Rec<'_>> = chunk
            .iter()
            .map(|v| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (v.as_str(), delay((seed % spread_ms as u64) as i64))
            })
            .collect();
        let (code, _, m) = produce(client, topic, batch(&records, None, Compression::None)).await;
        assert_eq!(code, 0, "{m}");
    }
}

#[tokio::test]
async fn memory_stays_within_the_window_and_far_records_are_paged_in() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.delivery_delay_memory_entries = 16).await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "window", DELAYED).await, 0);
        produce_spread(&mut client, "window", 1000, 1500).await;
        let stats = broker.state.delayed.stats();
        assert_eq!(stats.len(), 1);
        assert!(stats[0].in_memory <= 16, "{stats:?}");
        assert!(stats[0].waiting > 100, "{stats:?}");
        // Sample the window while delivering.
        let mut got = Vec::new();
        for _ in 0..2000 {
            let s = &broker.state.delayed.stats()[0];
            assert!(s.in_memory <= 16, "{s:?}");
            got = fetch_all(&mut client, "window").await;
            if got.len() == 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(got.len(), 1000);
        check_delivery(&got);
        assert_eq!(broker.state.delayed.stats()[0].waiting, 0);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn waiting_records_survive_a_restart_and_overdue_ones_come_in_due_order() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "restart", DELAYED).await, 0);
        produce_spread(&mut client, "restart", 300, 1000).await;
        let produced_by = now_ms();
        let dir = broker.stop().await;
        // Every record is overdue by the time the broker is back.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        let got = wait_for(&mut client, "restart", 300).await;
        check_delivery(&got);
        assert!(got.iter().any(|g| g.timestamp > produced_by + 1000));
        broker.stop().await;
    })
    .await;
}

fn with_id(id: &str, ms: i64) -> Vec<(&'static str, String)> {
    vec![
        ("rill-delay-id", id.to_string()),
        ("rill-delay-ms", ms.to_string()),
    ]
}

fn cancel(id: &str) -> Vec<(&'static str, String)> {
    vec![("rill-delay-cancel", id.to_string())]
}

async fn produce_one(client: &mut Client, topic: &str, rec: Rec<'_>) -> (i16, String) {
    let (code, _, message) = produce(client, topic, batch(&[rec], None, Compression::None)).await;
    (code, message)
}

#[tokio::test]
async fn a_cancel_before_the_due_time_stops_delivery_and_one_after_it_changes_nothing() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "timeouts", DELAYED).await, 0);
        // A cancel for an id not stored yet does not reach a later record with that id.
        assert_eq!(
            produce_one(&mut client, "timeouts", ("early", cancel("b")))
                .await
                .0,
            0
        );
        let records = [
            ("a", with_id("a", 700)),
            ("b", with_id("b", 700)),
            ("quick", with_id("quick", 50)),
            ("plain", delay(100)),
        ];
        let (code, _, m) = produce(
            &mut client,
            "timeouts",
            batch(&records, None, Compression::Lz4),
        )
        .await;
        assert_eq!(code, 0, "{m}");
        assert_eq!(
            produce_one(&mut client, "timeouts", ("c1", cancel("a")))
                .await
                .0,
            0
        );
        // Cancelling twice is harmless.
        assert_eq!(
            produce_one(&mut client, "timeouts", ("c2", cancel("a")))
                .await
                .0,
            0
        );
        let got = wait_for(&mut client, "timeouts", 2).await;
        assert_eq!(
            got.iter().map(|g| g.value.as_str()).collect::<Vec<_>>(),
            ["quick", "plain"]
        );
        // Too late: "quick" was delivered; the cancel is acknowledged and changes nothing.
        assert_eq!(
            produce_one(&mut client, "timeouts", ("c3", cancel("quick")))
                .await
                .0,
            0
        );
        let got = wait_for(&mut client, "timeouts", 3).await;
        let values: Vec<&str> = got.iter().map(|g| g.value.as_str()).collect();
        assert_eq!(values, ["quick", "plain", "b"]);
        check_delivery(&got);
        assert_eq!(got[2].headers["rill-delay-id"], "b");
        // Nothing more comes: "a" stays cancelled and cancels are never delivered.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(fetch_all(&mut client, "timeouts").await.len(), 3);
        let stats = &broker.state.delayed.stats()[0];
        assert_eq!(stats.cancelled_total, 1, "{stats:?}");
        assert_eq!(stats.waiting, 0, "{stats:?}");
        assert_eq!(
            stats.cancels_pending, 0,
            "nothing waits below them: {stats:?}"
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_cancels_are_refused() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "strict", DELAYED).await, 0);
        let long = "x".repeat(257);
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (vec![("rill-delay-cancel", String::new())], "1 to 256 bytes"),
            (vec![("rill-delay-cancel", long.clone())], "1 to 256 bytes"),
            (vec![("rill-delay-id", long)], "1 to 256 bytes"),
            (
                vec![
                    ("rill-delay-cancel", "a".into()),
                    ("rill-delay-ms", "5".into()),
                ],
                "cannot be combined",
            ),
        ];
        for (headers, expect) in cases {
            let (code, message) =
                produce_one(&mut client, "strict", ("bad", headers.clone())).await;
            assert_eq!(code, INVALID_RECORD, "{headers:?}: {message}");
            assert!(message.contains(expect), "{headers:?}: {message}");
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn pending_cancels_are_bounded() {
    bounded(async {
        const POLICY_VIOLATION: i16 = 44;
        let broker = TestBroker::start_with(|c| c.delivery_cancel_max_pending = 2).await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "bounded", DELAYED).await, 0);
        let records = [
            ("a", with_id("a", 600)),
            ("b", with_id("b", 600)),
            ("c", with_id("c", 600)),
        ];
        let (code, _, m) = produce(
            &mut client,
            "bounded",
            batch(&records, None, Compression::None),
        )
        .await;
        assert_eq!(code, 0, "{m}");
        assert_eq!(
            produce_one(&mut client, "bounded", ("x", cancel("a")))
                .await
                .0,
            0
        );
        assert_eq!(
            produce_one(&mut client, "bounded", ("x", cancel("b")))
                .await
                .0,
            0
        );
        assert_eq!(
            produce_one(&mut client, "bounded", ("x", cancel("a")))
                .await
                .0,
            0,
            "a known id takes no room"
        );
        let (code, message) = produce_one(&mut client, "bounded", ("x", cancel("c"))).await;
        assert_eq!(code, POLICY_VIOLATION, "{message}");
        assert!(
            message.contains("rill.delivery.cancel.max.pending"),
            "{message}"
        );
        let got = wait_for(&mut client, "bounded", 1).await;
        assert_eq!(got[0].value, "c");
        // Once nothing waits below them, the cancels are dropped and there is room again.
        for _ in 0..200 {
            if broker.state.delayed.stats()[0].cancels_pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            produce_one(&mut client, "bounded", ("x", cancel("d")))
                .await
                .0,
            0
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn cancels_survive_a_restart() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "restart", DELAYED).await, 0);
        let records = [
            ("keep", with_id("keep", 800)),
            ("drop", with_id("drop", 800)),
            ("now", vec![]),
        ];
        let (code, _, m) = produce(
            &mut client,
            "restart",
            batch(&records, None, Compression::None),
        )
        .await;
        assert_eq!(code, 0, "{m}");
        assert_eq!(
            produce_one(&mut client, "restart", ("c", cancel("drop")))
                .await
                .0,
            0
        );
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        let got = wait_for(&mut client, "restart", 2).await;
        assert_eq!(got[1].value, "keep");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fetch_all(&mut client, "restart").await.len(), 2);
        assert_eq!(broker.state.delayed.stats()[0].cancelled_total, 1);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_delay_log_is_reclaimed_as_records_are_delivered() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let configs = [
            ("rill.delivery.delayed.enable", "true"),
            ("segment.bytes", "16384"),
        ];
        assert_eq!(create(&mut client, "reclaim", &configs).await, 0);
        produce_spread(&mut client, "reclaim", 2000, 300).await;
        let full = broker.state.delayed.stats()[0].clone();
        assert!(full.log_size_bytes > 50_000, "{full:?}");
        assert_eq!(full.log_start_offset, 0);
        let got = wait_for(&mut client, "reclaim", 2000).await;
        check_delivery(&got);
        // The cursor is persisted about once a second; then the start moves to the base of
        // the segment holding the lowest waiting record: with nothing waiting, the active
        // one (16 KiB at most, of about 70 KiB written).
        let mut stats = full.clone();
        for _ in 0..500 {
            stats = broker.state.delayed.stats()[0].clone();
            if stats.log_start_offset > 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(stats.log_start_offset > 1000, "{stats:?}");
        assert!(
            stats.log_size_bytes <= 16384 && stats.log_size_bytes < full.log_size_bytes / 3,
            "{stats:?} vs {full:?}"
        );
        // A record produced now is still delivered, and a restart neither redelivers what
        // was reclaimed nor loses the new one.
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        assert_eq!(
            produce_one(&mut client, "reclaim", ("after", delay(50)))
                .await
                .0,
            0
        );
        let got = wait_for(&mut client, "reclaim", 2001).await;
        assert_eq!(got[2000].value, "after");
        let stats = &broker.state.delayed.stats()[0];
        assert!(
            stats.log_start_offset > 1000,
            "the start survives a restart: {stats:?}"
        );
        broker.stop().await;
    })
    .await;
}
