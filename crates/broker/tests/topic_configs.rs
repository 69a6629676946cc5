//! Every topic config over the wire: described as Apache Kafka 4.4 describes it (compared
//! field by field with Kafka's recorded answer, `fixtures/kafka-topic-configs.tsv`, written by
//! `scripts/record-kafka-configs`), created, altered both ways and refused when invalid; and
//! the effects of compression.type, the timestamp bounds and min.insync.replicas.

mod common;

use std::collections::BTreeMap;

use common::{now_ms, record_batch, record_batch_with, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::alter_configs_request as alter;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rill_storage::topic_configs::{ConfigDef, TOPIC_CONFIGS};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT * 4, test)
        .await
        .expect("test timed out");
}

async fn create(client: &mut Client, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(topic)))
            .with_num_partitions(1)
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
            )]);
    client.send(7, &request).await.topics[0].error_code
}

async fn describe(client: &mut Client, topic: &str) -> Vec<DescribeConfigsResourceResult> {
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_include_documentation(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))]);
    let mut response = client.send(4, &request).await;
    assert_eq!(response.results[0].error_code, 0);
    std::mem::take(&mut response.results[0].configs)
}

async fn value_of(client: &mut Client, topic: &str, key: &str) -> (String, i8) {
    let configs = describe(client, topic).await;
    let c = configs
        .iter()
        .find(|c| c.name.as_str() == key)
        .unwrap_or_else(|| panic!("{key} is described"));
    (
        c.value.as_deref().unwrap_or("").to_string(),
        c.config_source,
    )
}

async fn incremental(
    client: &mut Client,
    topic: &str,
    key: &str,
    op: i8,
    value: Option<&str>,
) -> i16 {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(vec![incremental::AlterableConfig::default()
                .with_name(s(key))
                .with_config_operation(op)
                .with_value(value.map(s))]),
    ]);
    client.send(1, &request).await.responses[0].error_code
}

async fn alter_all(client: &mut Client, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let request =
        AlterConfigsRequest::default().with_resources(vec![alter::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        alter::AlterableConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            )]);
    client.send(2, &request).await.responses[0].error_code
}

/// Kafka's `ConfigSource` names, as the Java `Admin` prints them in the fixture.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        _ => "UNKNOWN",
    }
}

fn type_name(t: i8) -> &'static str {
    match t {
        1 => "BOOLEAN",
        2 => "STRING",
        3 => "INT",
        4 => "SHORT",
        5 => "LONG",
        6 => "DOUBLE",
        7 => "LIST",
        8 => "CLASS",
        9 => "PASSWORD",
        _ => "UNKNOWN",
    }
}

fn unescape(v: &str) -> Option<String> {
    if v == "\\N" {
        return None;
    }
    let mut out = Vec::new();
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8(out).unwrap())
}

/// One config as Kafka answered it.
struct Recorded {
    value: Option<String>,
    source: String,
    read_only: bool,
    sensitive: bool,
    kind: String,
    /// `(name, value, source)`.
    synonyms: Vec<(String, Option<String>, String)>,
    doc: Option<String>,
}

fn fixture() -> BTreeMap<String, Recorded> {
    let text = include_str!("fixtures/kafka-topic-configs.tsv");
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 9, "{line}");
            let synonyms = f[7]
                .split(';')
                .filter(|s| !s.is_empty())
                .map(|syn| {
                    let (name, rest) = syn.split_once('=').unwrap();
                    let (value, source) = rest.rsplit_once('@').unwrap();
                    (unescape(name).unwrap(), unescape(value), source.to_string())
                })
                .collect();
            let recorded = Recorded {
                value: unescape(f[2]),
                source: f[3].to_string(),
                read_only: f[4] == "true",
                sensitive: f[5] == "true",
                kind: f[6].to_string(),
                synonyms,
                doc: unescape(f[8]),
            };
            (unescape(f[1]).unwrap(), recorded)
        })
        .collect()
}

/// Kafka 4.4's DescribeConfigs answer for a topic without overrides, field by field. Where
/// the recording broker's own setup decided a value (kafka-local sets `message.max.bytes`; a
/// KRaft cluster stores `min.insync.replicas` as a cluster default), rill, which has neither,
/// must answer what Kafka's `DEFAULT_CONFIG` synonym says.
#[tokio::test]
async fn describe_answers_as_kafka_does_field_by_field() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(create(&mut client, "plain", &[]).await, 0);
        let rill: BTreeMap<String, DescribeConfigsResourceResult> = describe(&mut client, "plain")
            .await
            .into_iter()
            .map(|c| (c.name.to_string(), c))
            .collect();
        let kafka = fixture();
        assert!(kafka.len() >= 37, "the fixture holds Kafka's topic configs");
        for (name, k) in &kafka {
            let r = rill
                .get(name)
                .unwrap_or_else(|| panic!("rill describes {name}"));
            let r_synonyms: Vec<(String, Option<String>, String)> = r
                .synonyms
                .iter()
                .map(|s| {
                    let value = s.value.as_ref().map(|v| v.to_string());
                    (s.name.to_string(), value, source_name(s.source).to_string())
                })
                .collect();
            let environment_set = k.source != "DEFAULT_CONFIG";
            let (k_value, k_source, k_synonyms) = if environment_set {
                let defaults: Vec<_> = k
                    .synonyms
                    .iter()
                    .filter(|s| s.2 == "DEFAULT_CONFIG")
                    .cloned()
                    .collect();
                (
                    defaults[0].1.clone(),
                    "DEFAULT_CONFIG".to_string(),
                    defaults,
                )
            } else {
                (k.value.clone(), k.source.clone(), k.synonyms.clone())
            };
            let r_value = r.value.as_ref().map(|v| v.to_string());
            assert_eq!(r_value, k_value, "{name}: value");
            assert_eq!(source_name(r.config_source), k_source, "{name}: source");
            assert_eq!(r.read_only, k.read_only, "{name}: read-only");
            assert_eq!(r.is_sensitive, k.sensitive, "{name}: sensitive");
            assert_eq!(type_name(r.config_type), k.kind, "{name}: type");
            assert_eq!(r_synonyms, k_synonyms, "{name}: synonyms");
            let r_doc = r.documentation.as_ref().map(|d| d.to_string());
            assert_eq!(r_doc, k.doc, "{name}: documentation");
        }
        for name in rill.keys() {
            assert!(
                kafka.contains_key(name) || name.starts_with("rill."),
                "{name}: rill describes only Kafka's keys and its own rill.* ones"
            );
        }
        broker.stop().await;
    })
    .await;
}

/// A valid value other than the default, for any config of the table.
fn other_value(def: &ConfigDef) -> String {
    let default = def.default;
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(n) = default.parse::<i64>() {
        candidates.extend([n.saturating_add(1), n.saturating_sub(1), 1, 2].map(|v| v.to_string()));
    }
    candidates.extend(
        [
            "true",
            "0.25",
            "lz4",
            "LogAppendTime",
            "written",
            "compact",
            "*",
            "0:1",
        ]
        .map(str::to_string),
    );
    candidates
        .into_iter()
        .find(|c| {
            def.parse(c)
                .is_ok_and(|v| v.canonical() != def.default_value().canonical())
        })
        .unwrap_or_else(|| default.to_string())
}

fn invalid_value(def: &ConfigDef) -> Option<&'static str> {
    ["not-a-value", "-3"]
        .into_iter()
        .find(|v| def.parse(v).is_err())
}

/// Every key of the table: created with a value, described as a topic override, reset by
/// DELETE, set again by AlterConfigs, and an invalid value refused with INVALID_CONFIG.
#[tokio::test]
async fn every_topic_config_is_created_described_altered_and_checked() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        for (i, def) in TOPIC_CONFIGS.iter().enumerate() {
            // Keys the broker checks together (a view's source and filter) are covered by
            // tests/views.rs.
            if matches!(def.effect, rill_storage::topic_configs::Effect::Broker(_)) {
                continue;
            }
            let topic = format!("key-{i}");
            let value = other_value(def);
            let canonical = def.parse(&value).unwrap().canonical();
            assert_eq!(
                create(&mut client, &topic, &[(def.name, &value)]).await,
                0,
                "{}",
                def.name
            );
            assert_eq!(
                value_of(&mut client, &topic, def.name).await,
                (canonical.clone(), 1),
                "{}",
                def.name
            );
            assert_eq!(incremental(&mut client, &topic, def.name, 1, None).await, 0);
            assert_eq!(
                value_of(&mut client, &topic, def.name).await,
                (def.default.to_string(), 5),
                "{} reset",
                def.name
            );
            assert_eq!(
                alter_all(&mut client, &topic, &[(def.name, &value)]).await,
                0
            );
            assert_eq!(
                value_of(&mut client, &topic, def.name).await,
                (canonical.clone(), 1)
            );
            if let Some(bad) = invalid_value(def) {
                assert_eq!(
                    incremental(&mut client, &topic, def.name, 0, Some(bad)).await,
                    40,
                    "{}={bad}",
                    def.name
                );
                assert_eq!(
                    create(&mut client, &format!("bad-{i}"), &[(def.name, bad)]).await,
                    40
                );
                assert_eq!(
                    value_of(&mut client, &topic, def.name).await,
                    (canonical, 1),
                    "unchanged"
                );
            }
        }
        assert_eq!(
            create(&mut client, "unknown", &[("no.such.config", "1")]).await,
            40
        );
        assert_eq!(
            create(&mut client, "tiered", &[("remote.storage.enable", "true")]).await,
            40
        );
        // APPEND and SUBTRACT on a list start from its default.
        assert_eq!(create(&mut client, "lists", &[]).await, 0);
        assert_eq!(
            incremental(&mut client, "lists", "cleanup.policy", 2, Some("compact")).await,
            0
        );
        assert_eq!(
            value_of(&mut client, "lists", "cleanup.policy").await.0,
            "delete,compact"
        );
        assert_eq!(
            incremental(&mut client, "lists", "cleanup.policy", 3, Some("delete")).await,
            0
        );
        assert_eq!(
            value_of(&mut client, "lists", "cleanup.policy").await.0,
            "compact"
        );
        assert_eq!(
            incremental(&mut client, "lists", "retention.ms", 2, Some("1")).await,
            40
        );
        broker.stop().await;
    })
    .await;
}

async fn produce(client: &mut Client, topic: &str, acks: i16, records: bytes::Bytes) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    client.send(9, &request).await.responses[0].partition_responses[0].error_code
}

/// The codec bits of every stored batch, and every record's value, from a raw fetch.
async fn fetch_codecs(client: &mut Client, topic: &str) -> (Vec<i16>, Vec<bytes::Bytes>) {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.send(12, &request).await;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let raw = p.records.clone().unwrap_or_default();
    let mut codecs = Vec::new();
    let mut at = 0;
    while at + 61 <= raw.len() {
        let len = i32::from_be_bytes(raw[at + 8..at + 12].try_into().unwrap()) as usize + 12;
        codecs.push(i16::from_be_bytes(raw[at + 21..at + 23].try_into().unwrap()) & 7);
        at += len;
    }
    let mut bytes = raw.clone();
    let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("batches decode, CRCs hold");
    let values = sets
        .iter()
        .flat_map(|set| &set.records)
        .map(|r| r.value.clone().unwrap_or_default())
        .collect();
    (codecs, values)
}

/// compression.type: a topic with a codec stores every batch in it whatever the producer
/// sent, with the same records; `producer` keeps the producer's codec.
#[tokio::test]
async fn compression_type_recompresses_into_the_topic_codec() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let cases = [
            ("producer", Compression::Gzip, 1),
            ("zstd", Compression::Gzip, 4),
            ("lz4", Compression::None, 3),
            ("gzip", Compression::Snappy, 1),
            ("snappy", Compression::Lz4, 2),
            ("uncompressed", Compression::Zstd, 0),
        ];
        for (i, (topic_codec, sent, stored)) in cases.into_iter().enumerate() {
            let topic = format!("codec-{i}");
            assert_eq!(
                create(&mut client, &topic, &[("compression.type", topic_codec)]).await,
                0
            );
            let batch = record_batch_with(5, 300, now_ms(), sent);
            assert_eq!(produce(&mut client, &topic, -1, batch.clone()).await, 0);
            let (codecs, values) = fetch_codecs(&mut client, &topic).await;
            assert_eq!(codecs, vec![stored], "{topic_codec} topic, {sent:?} batch");
            let mut sent_bytes = batch.clone();
            let sent_values: Vec<_> = RecordBatchDecoder::decode_all(&mut sent_bytes)
                .unwrap()
                .iter()
                .flat_map(|set| &set.records)
                .map(|r| r.value.clone().unwrap_or_default())
                .collect();
            assert_eq!(values, sent_values, "{topic_codec}: the same records");
        }
        broker.stop().await;
    })
    .await;
}

/// message.timestamp.before/after.max.ms: CreateTime records outside the window are refused
/// with INVALID_TIMESTAMP (32) and nothing is stored; the default after-bound is Kafka 4's
/// one hour; LogAppendTime topics ignore both. min.insync.replicas above 1 refuses acks=all
/// with NOT_ENOUGH_REPLICAS (19) and lets acks=1 through.
#[tokio::test]
async fn timestamp_bounds_and_min_insync_replicas_take_effect() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let hour = 3_600_000;
        assert_eq!(
            create(
                &mut client,
                "bounded",
                &[("message.timestamp.before.max.ms", "60000")]
            )
            .await,
            0
        );
        assert_eq!(
            produce(
                &mut client,
                "bounded",
                -1,
                record_batch(2, 10, now_ms() - hour)
            )
            .await,
            32
        );
        assert_eq!(
            produce(
                &mut client,
                "bounded",
                -1,
                record_batch(2, 10, now_ms() + 2 * hour)
            )
            .await,
            32
        );
        let zstd_late = record_batch_with(2, 10, now_ms() + 2 * hour, Compression::Zstd);
        assert_eq!(
            produce(&mut client, "bounded", -1, zstd_late).await,
            32,
            "inside compressed batches too"
        );
        assert!(
            fetch_codecs(&mut client, "bounded").await.0.is_empty(),
            "nothing stored"
        );
        assert_eq!(
            produce(&mut client, "bounded", -1, record_batch(2, 10, now_ms())).await,
            0
        );
        assert_eq!(
            incremental(
                &mut client,
                "bounded",
                "message.timestamp.after.max.ms",
                0,
                Some("9223372036854775807")
            )
            .await,
            0
        );
        assert_eq!(
            produce(
                &mut client,
                "bounded",
                -1,
                record_batch(2, 10, now_ms() + 2 * hour)
            )
            .await,
            0
        );
        assert_eq!(
            create(
                &mut client,
                "appended",
                &[
                    ("message.timestamp.type", "LogAppendTime"),
                    ("message.timestamp.before.max.ms", "0")
                ]
            )
            .await,
            0
        );
        assert_eq!(
            produce(&mut client, "appended", -1, record_batch(1, 10, 0)).await,
            0
        );

        assert_eq!(
            create(&mut client, "isr", &[("min.insync.replicas", "2")]).await,
            0
        );
        assert_eq!(
            produce(&mut client, "isr", -1, record_batch(1, 10, now_ms())).await,
            19
        );
        assert_eq!(
            produce(&mut client, "isr", 1, record_batch(1, 10, now_ms())).await,
            0
        );
        assert_eq!(
            incremental(&mut client, "isr", "min.insync.replicas", 1, None).await,
            0
        );
        assert_eq!(
            produce(&mut client, "isr", -1, record_batch(1, 10, now_ms())).await,
            0
        );
        broker.stop().await;
    })
    .await;
}
