//! Fetch sessions (KIP-227) on the wire: hand-made request sequences against an in-process
//! broker, for the protocol rules and their error codes, and a seeded comparison of a session
//! consumer with a full-fetch consumer over many partitions.

mod common;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use common::{now_ms, record_batch, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

/// Creates `topic` with `partitions` partitions and returns its id once every partition has
/// a leader (Kafka takes a moment; bounded retries).
async fn create_topic(client: &mut Client, topic: &str, partitions: i32) -> Uuid {
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    let response = client.send(5, &create).await;
    assert_eq!(response.topics[0].error_code, 0, "create {topic}");
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic))),
    ]));
    for _ in 0..100 {
        let response = client.send(12, &request).await;
        let t = &response.topics[0];
        let ready = t.error_code == 0
            && t.partitions.len() == partitions as usize
            && t.partitions
                .iter()
                .all(|p| p.error_code == 0 && p.leader_id.0 >= 0);
        if ready {
            return t.topic_id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{topic} has no leaders after 10 s");
}

/// Appends `batch` to a partition with acks=all (so the high watermark includes it); retries
/// a new topic's transient NOT_LEADER (Kafka), bounded.
async fn produce(client: &mut Client, topic: &str, partition: i32, batch: Bytes) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let mut code = -1;
    for _ in 0..50 {
        let response = client.send(9, &request).await;
        code = response.responses[0].partition_responses[0].error_code;
        if code != ResponseError::NotLeaderOrFollower.code() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(code, 0, "produce to {topic}-{partition}");
}

/// Connects to `KAFKA_BOOTSTRAP` (how the expected behaviour was checked against Apache
/// Kafka 4.4 started by `scripts/kafka-local`).
async fn kafka_client() -> Option<Client> {
    let addr = std::env::var("KAFKA_BOOTSTRAP").ok()?;
    let addr = tokio::net::lookup_host(addr).await.ok()?.next()?;
    Some(Client::connect(addr).await)
}

/// One topic as a fetch names it: by id from v13, by name before.
struct Topic {
    name: &'static str,
    id: Uuid,
}

fn fetch_topic(version: i16, topic: &Topic, partitions: &[(i32, i64)]) -> FetchTopic {
    let partitions = partitions
        .iter()
        .map(|&(p, offset)| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let t = FetchTopic::default().with_partitions(partitions);
    if version >= 13 {
        t.with_topic_id(topic.id)
    } else {
        t.with_topic(name(topic.name))
    }
}

fn forget(version: i16, topic: &Topic, partitions: &[i32]) -> ForgottenTopic {
    let f = ForgottenTopic::default().with_partitions(partitions.to_vec());
    if version >= 13 {
        f.with_topic_id(topic.id)
    } else {
        f.with_topic(name(topic.name))
    }
}

fn fetch(session_id: i32, epoch: i32, topics: Vec<FetchTopic>) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(50 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

/// `(partition, records bytes, high watermark)` of every partition in a response, in order.
fn answered(response: &FetchResponse) -> Vec<(i32, usize, i64)> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {} errored", p.partition_index);
            let len = p.records.as_ref().map_or(0, |r| r.len());
            (p.partition_index, len, p.high_watermark)
        })
        .collect()
}

#[tokio::test]
async fn a_session_answers_only_what_changed() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        only_changes(&mut client, "changes").await;
        broker.stop().await;
    })
    .await;
}

/// [`a_session_answers_only_what_changed`] against `KAFKA_BOOTSTRAP`:
/// `KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo test --release -p rill-broker --test fetch_sessions
/// -- --ignored`.
#[tokio::test]
#[ignore = "needs KAFKA_BOOTSTRAP"]
async fn a_session_answers_only_what_changed_as_kafka() {
    let Some(mut client) = kafka_client().await else {
        return;
    };
    bounded(async move {
        only_changes(&mut client, &format!("changes-{}", now_ms())).await;
    })
    .await;
}

/// Full fetch, incremental fetches with nothing new, moved offsets, new data, forgotten and
/// added partitions, the final epoch; on topics `<prefix>-12` (by name) and `<prefix>-13` (id).
async fn only_changes(client: &mut Client, prefix: &str) {
    for version in [12i16, 13] {
        let topic_name: &'static str = Box::leak(format!("{prefix}-{version}").into_boxed_str());
        let topic = Topic {
            name: topic_name,
            id: create_topic(client, topic_name, 3).await,
        };
        let batch = record_batch(3, 50, now_ms());
        produce(client, topic.name, 1, batch.clone()).await;
        let all = [(0, 0), (1, 0), (2, 0)];
        // Full fetch (epoch 0): every partition, and a new session.
        let full = fetch(0, 0, vec![fetch_topic(version, &topic, &all)]);
        let response = client.send(version, &full).await;
        assert_eq!(response.error_code, 0);
        let id = response.session_id;
        assert!(id > 0, "v{version}: a full fetch creates a session");
        assert_eq!(
            answered(&response),
            vec![(0, 0, 0), (1, batch.len(), 3), (2, 0, 0)]
        );
        // Incremental, nothing named, nothing new: an empty answer, the same session.
        // (Partition 1's fetch offset is still 0 in the session: its batch comes again,
        // as it would in a full fetch at offset 0.)
        let response = client.send(version, &fetch(id, 1, Vec::new())).await;
        assert_eq!((response.error_code, response.session_id), (0, id));
        assert_eq!(answered(&response), vec![(1, batch.len(), 3)]);
        // Move partition 1's offset past its data: now nothing changes.
        let moved = vec![fetch_topic(version, &topic, &[(1, 3)])];
        let response = client.send(version, &fetch(id, 2, moved)).await;
        assert_eq!(answered(&response), vec![]);
        let response = client.send(version, &fetch(id, 3, Vec::new())).await;
        assert_eq!(answered(&response), vec![]);
        // New data on partition 2 only: only partition 2 is answered.
        produce(client, topic.name, 2, batch.clone()).await;
        let response = client.send(version, &fetch(id, 4, Vec::new())).await;
        assert_eq!(answered(&response), vec![(2, batch.len(), 3)]);
        // Forget partition 2: its new data is not answered any more.
        let forgotten = fetch(id, 5, Vec::new()).with_forgotten_topics_data(vec![forget(
            version,
            &topic,
            &[2],
        )]);
        let response = client.send(version, &forgotten).await;
        assert_eq!(answered(&response), vec![]);
        produce(client, topic.name, 2, batch.clone()).await;
        let response = client.send(version, &fetch(id, 6, Vec::new())).await;
        assert_eq!(answered(&response), vec![]);
        // A new partition added incrementally is answered at once (nothing cached yet).
        let added = vec![fetch_topic(version, &topic, &[(2, 3)])];
        let response = client.send(version, &fetch(id, 7, added)).await;
        assert_eq!(answered(&response), vec![(2, batch.len(), 6)]);
        // The final epoch closes the session and answers as a sessionless fetch.
        let last = fetch(id, -1, vec![fetch_topic(version, &topic, &[(0, 0)])]);
        let response = client.send(version, &last).await;
        assert_eq!((response.error_code, response.session_id), (0, 0));
        assert_eq!(answered(&response), vec![(0, 0, 0)]);
        let response = client.send(version, &fetch(id, 8, Vec::new())).await;
        assert_eq!(
            response.error_code,
            ResponseError::FetchSessionIdNotFound.code()
        );
    }
}

#[tokio::test]
async fn session_errors_are_kafkas_top_level_codes() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        session_errors(&mut client, "errors").await;
        broker.stop().await;
    })
    .await;
}

/// [`session_errors_are_kafkas_top_level_codes`] against `KAFKA_BOOTSTRAP`.
#[tokio::test]
#[ignore = "needs KAFKA_BOOTSTRAP"]
async fn session_errors_are_kafkas_top_level_codes_as_kafka() {
    let Some(mut client) = kafka_client().await else {
        return;
    };
    bounded(async move {
        session_errors(&mut client, &format!("errors-{}", now_ms())).await;
    })
    .await;
}

/// Unknown id, wrong epoch, topic-id mismatch, recovery after them, v6/v7, and a full fetch
/// closing the session it names.
async fn session_errors(client: &mut Client, topic_name: &str) {
    let topic_name: &'static str = Box::leak(topic_name.to_string().into_boxed_str());
    let topic = Topic {
        name: topic_name,
        id: create_topic(client, topic_name, 1).await,
    };
    let full = fetch(0, 0, vec![fetch_topic(12, &topic, &[(0, 0)])]);
    let id = client.send(12, &full).await.session_id;
    assert!(id > 0);
    let expect = |response: &FetchResponse, code: ResponseError| {
        assert_eq!(response.error_code, code.code(), "{code:?}");
        assert_eq!(response.session_id, 0);
        assert!(response.responses.is_empty());
    };
    // An id never handed out.
    let response = client.send(12, &fetch(id ^ 0x55, 1, Vec::new())).await;
    expect(&response, ResponseError::FetchSessionIdNotFound);
    // A wrong epoch (a replayed or skipped request) does not advance the session...
    let response = client.send(12, &fetch(id, 2, Vec::new())).await;
    expect(&response, ResponseError::InvalidFetchSessionEpoch);
    // ...nor does naming its topics the other way (a v12 session used at v13).
    let response = client.send(13, &fetch(id, 1, Vec::new())).await;
    expect(&response, ResponseError::FetchSessionTopicIdError);
    // The right epoch still works after the errors.
    let response = client.send(12, &fetch(id, 1, Vec::new())).await;
    assert_eq!((response.error_code, response.session_id), (0, id));
    // Before v7 there are no sessions; v7 full fetches get one.
    let v6 = fetch(0, -1, vec![fetch_topic(6, &topic, &[(0, 0)])]);
    let response = client.send(6, &v6).await;
    assert_eq!(response.responses.len(), 1);
    let v7 = client.send(7, &v6.with_session_epoch(0)).await;
    assert!(v7.session_id > 0);
    // A full fetch naming a session closes it (and opens another).
    let response = client.send(12, &fetch(id, 0, Vec::new())).await;
    assert_ne!(response.session_id, id);
    let response = client.send(12, &fetch(id, 2, Vec::new())).await;
    expect(&response, ResponseError::FetchSessionIdNotFound);
}

#[tokio::test]
async fn a_full_cache_creates_no_session_and_fetches_still_work() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.fetch_sessions.slots = 1).await;
        let mut client = broker.connect().await;
        let topic = Topic {
            name: "slots",
            id: create_topic(&mut client, "slots", 1).await,
        };
        let batch = record_batch(2, 10, now_ms());
        produce(&mut client, topic.name, 0, batch.clone()).await;
        let full = fetch(0, 0, vec![fetch_topic(12, &topic, &[(0, 0)])]);
        let first = client.send(12, &full).await;
        assert!(first.session_id > 0);
        // The only slot is taken by a young session of the same size: no eviction.
        let second = client.send(12, &full).await;
        assert_eq!(second.error_code, 0);
        assert_eq!(second.session_id, 0);
        assert_eq!(answered(&second), vec![(0, batch.len(), 2)]);
        // Sessions off entirely.
        let off = TestBroker::start_with(|c| c.fetch_sessions.slots = 0).await;
        let mut off_client = off.connect().await;
        create_topic(&mut off_client, "slots", 1).await;
        let response = off_client.send(12, &full).await;
        assert_eq!((response.error_code, response.session_id), (0, 0));
        off.stop().await;
        broker.stop().await;
    })
    .await;
}

/// A consumer of many partitions: what it holds per partition (bytes read, high watermark)
/// and its fetch offsets.
#[derive(Default)]
struct Consumer {
    bytes: HashMap<(String, i32), BytesMut>,
    offsets: HashMap<(String, i32), i64>,
    high_watermarks: HashMap<(String, i32), i64>,
}

impl Consumer {
    /// Takes a response in: appends records, advances offsets past whole batches. Returns
    /// the partitions whose offset moved.
    fn take(&mut self, topics: &[Topic], response: &FetchResponse) -> Vec<(String, i32)> {
        let mut moved = Vec::new();
        for t in &response.responses {
            let topic = topics
                .iter()
                .find(|x| x.id == t.topic_id || x.name == t.topic.0.as_str())
                .expect("known topic");
            for p in &t.partitions {
                assert_eq!(p.error_code, 0);
                let key = (topic.name.to_string(), p.partition_index);
                self.high_watermarks.insert(key.clone(), p.high_watermark);
                let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
                    continue;
                };
                self.bytes.entry(key.clone()).or_default().extend(records);
                // Every batch here has base offset + record count ending at the high
                // watermark or below; the last batch's end is the next offset.
                let next = last_batch_end(records);
                self.offsets.insert(key.clone(), next);
                moved.push(key);
            }
        }
        moved
    }
}

/// The offset after the last batch in `records` (v2 batches: base offset at 0, last offset
/// delta at 23).
fn last_batch_end(records: &[u8]) -> i64 {
    let mut pos = 0usize;
    let mut end = 0i64;
    while pos + 61 <= records.len() {
        let base = i64::from_be_bytes(records[pos..pos + 8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let delta = i32::from_be_bytes(records[pos + 23..pos + 27].try_into().expect("4 bytes"));
        end = base + i64::from(delta) + 1;
        pos += 12 + len as usize;
    }
    assert_eq!(pos, records.len(), "whole batches only");
    end
}

/// Seeded: producers write random batches to 2 topics × 16 partitions between polls; a
/// session consumer (sending only what changed, applying incremental answers) and a full-fetch
/// consumer read until caught up. They end with the same bytes and high watermarks, at v12
/// (names) and v13 (ids).
#[tokio::test]
async fn session_consumers_read_exactly_what_full_fetches_read() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let mut session_client = broker.connect().await;
        let mut full_client = broker.connect().await;
        for version in [12i16, 13] {
            let names: [&'static str; 2] = if version == 12 {
                ["m12a", "m12b"]
            } else {
                ["m13a", "m13b"]
            };
            let mut topics = Vec::new();
            for n in names {
                let id = create_topic(&mut client, n, 16).await;
                topics.push(Topic { name: n, id });
            }
            let mut seed: u64 = 0x5eed_0000 + version as u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut session = Consumer::default();
            let mut full = Consumer::default();
            let (mut session_id, mut epoch) = (0i32, 0i32);
            let mut changed: Vec<(String, i32)> = Vec::new();
            for round in 0..12 {
                for _ in 0..(next() % 6) {
                    let t = &topics[(next() % 2) as usize];
                    let p = (next() % 16) as i32;
                    let batch = record_batch(1 + (next() % 4) as usize, 20, now_ms());
                    produce(&mut client, t.name, p, batch).await;
                }
                // Full consumer: every partition at its offset, no session.
                let all: Vec<FetchTopic> = topics
                    .iter()
                    .map(|t| {
                        let parts: Vec<(i32, i64)> = (0..16)
                            .map(|p| {
                                let key = (t.name.to_string(), p);
                                (p, *full.offsets.get(&key).unwrap_or(&0))
                            })
                            .collect();
                        fetch_topic(version, t, &parts)
                    })
                    .collect();
                let response = full_client.send(version, &fetch(0, -1, all)).await;
                assert_eq!(response.session_id, 0);
                full.take(&topics, &response);
                // Session consumer: a full fetch the first time, then only changed offsets.
                let request = if session_id == 0 {
                    let all = topics
                        .iter()
                        .map(|t| {
                            let parts: Vec<(i32, i64)> = (0..16).map(|p| (p, 0)).collect();
                            fetch_topic(version, t, &parts)
                        })
                        .collect();
                    fetch(0, 0, all)
                } else {
                    let named = topics
                        .iter()
                        .filter_map(|t| {
                            let parts: Vec<(i32, i64)> = changed
                                .iter()
                                .filter(|(n, _)| n == t.name)
                                .map(|k| (k.1, session.offsets[k]))
                                .collect();
                            (!parts.is_empty()).then(|| fetch_topic(version, t, &parts))
                        })
                        .collect();
                    fetch(session_id, epoch, named)
                };
                let response = session_client.send(version, &request).await;
                assert_eq!(response.error_code, 0, "round {round}");
                if session_id == 0 {
                    session_id = response.session_id;
                    assert!(session_id > 0);
                    epoch = 1;
                } else {
                    assert_eq!(response.session_id, session_id);
                    epoch += 1;
                }
                changed = session.take(&topics, &response);
            }
            // Drain: both read until nothing is new.
            for _ in 0..3 {
                let named = topics
                    .iter()
                    .filter_map(|t| {
                        let parts: Vec<(i32, i64)> = changed
                            .iter()
                            .filter(|(n, _)| n == t.name)
                            .map(|k| (k.1, session.offsets[k]))
                            .collect();
                        (!parts.is_empty()).then(|| fetch_topic(version, t, &parts))
                    })
                    .collect();
                let response = session_client
                    .send(version, &fetch(session_id, epoch, named))
                    .await;
                epoch += 1;
                changed = session.take(&topics, &response);
            }
            assert!(changed.is_empty(), "v{version}: session consumer caught up");
            for _ in 0..3 {
                let all: Vec<FetchTopic> = topics
                    .iter()
                    .map(|t| {
                        let parts: Vec<(i32, i64)> = (0..16)
                            .map(|p| (p, *full.offsets.get(&(t.name.to_string(), p)).unwrap_or(&0)))
                            .collect();
                        fetch_topic(version, t, &parts)
                    })
                    .collect();
                let response = full_client.send(version, &fetch(0, -1, all)).await;
                full.take(&topics, &response);
            }
            let mut produced = 0usize;
            for t in &topics {
                for p in 0..16 {
                    let key = (t.name.to_string(), p);
                    let a = session
                        .bytes
                        .get(&key)
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    let b = full.bytes.get(&key).map(|b| b.to_vec()).unwrap_or_default();
                    assert_eq!(a, b, "v{version} {key:?}: same records");
                    assert_eq!(
                        session.high_watermarks.get(&key),
                        full.high_watermarks.get(&key),
                        "v{version} {key:?}: same high watermark"
                    );
                    produced += a.len();
                }
            }
            assert!(produced > 0, "the seed produced something");
        }
        broker.stop().await;
    })
    .await;
}
