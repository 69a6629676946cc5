//! Admin and auxiliary APIs over TCP: every advertised version of each answers and decodes,
//! and the answers are right for a single node.

mod common;

use common::{now_ms, record_batch, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::alter_configs_request as alter;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

fn create_topics_request(
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> CreateTopicsRequest {
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

async fn partition_count(client: &mut Client, topic: &str) -> Option<usize> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    let response = client.send(12, &request).await;
    let t = &response.topics[0];
    (t.error_code == 0).then_some(t.partitions.len())
}

async fn produce(client: &mut Client, topic: &str, count: usize) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(record_batch(count, 10, now_ms())))])]);
    let response = client.send(9, &request).await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

#[tokio::test]
async fn create_topics_at_every_version_then_refuse_duplicates_and_bad_input() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.auto_create_topics = false).await;
        let mut client = broker.connect().await;
        for version in 2..=7 {
            let topic = format!("created-v{version}");
            let response = client
                .send(
                    version,
                    &create_topics_request(&topic, 2, &[("retention.ms", "60000")]),
                )
                .await;
            let result = &response.topics[0];
            assert_eq!(
                result.error_code, 0,
                "v{version}: {:?}",
                result.error_message
            );
            if version >= 5 {
                assert_eq!(result.num_partitions, 2);
                let configs = result.configs.as_ref().expect("configs");
                let retention = configs
                    .iter()
                    .find(|c| c.name.as_str() == "retention.ms")
                    .unwrap();
                assert_eq!(retention.value.as_deref(), Some("60000"));
            }
            assert_eq!(partition_count(&mut client, &topic).await, Some(2));
        }
        let again = client
            .send(7, &create_topics_request("created-v7", 1, &[]))
            .await;
        assert_eq!(again.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
        let bad_config = client
            .send(
                7,
                &create_topics_request("bad-config", 1, &[("retention.ms", "soon")]),
            )
            .await;
        assert_eq!(bad_config.topics[0].error_code, 40, "INVALID_CONFIG");
        let bad_name = client.send(7, &create_topics_request("a/b", 1, &[])).await;
        assert_eq!(bad_name.topics[0].error_code, 17);
        let zero = client.send(7, &create_topics_request("zero", 0, &[])).await;
        assert_eq!(zero.topics[0].error_code, 37, "INVALID_PARTITIONS");
        let mut rf3 = create_topics_request("rf3", 1, &[]);
        rf3.topics[0].replication_factor = 3;
        assert_eq!(client.send(7, &rf3).await.topics[0].error_code, 38);
        // Auto creation is off: Metadata does not create.
        assert_eq!(partition_count(&mut client, "never").await, None);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delete_topics_by_name_and_by_id() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        for version in 1..=6 {
            let topic = format!("doomed-{version}");
            let created = client.send(7, &create_topics_request(&topic, 1, &[])).await;
            let id = created.topics[0].topic_id;
            produce(&mut client, &topic, 3).await;
            let request = if version >= 6 {
                DeleteTopicsRequest::default()
                    .with_topics(vec![DeleteTopicState::default().with_topic_id(id)])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
            };
            let response = client.send(version, &request.with_timeout_ms(5_000)).await;
            assert_eq!(response.responses[0].error_code, 0, "v{version}");
            let metadata = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name(&topic)))
                ]))
                .with_allow_auto_topic_creation(false);
            assert_eq!(client.send(12, &metadata).await.topics[0].error_code, 3);
        }
        let missing = DeleteTopicsRequest::default().with_topic_names(vec![name("missing")]);
        assert_eq!(client.send(5, &missing).await.responses[0].error_code, 3);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn create_partitions_grows_topics_only() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        client.send(7, &create_topics_request("grow", 1, &[])).await;
        for (version, count) in [(0, 2), (1, 3), (2, 4), (3, 5)] {
            let request = CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("grow"))
                    .with_count(count)]);
            let response = client.send(version, &request).await;
            assert_eq!(response.results[0].error_code, 0, "v{version}");
            assert_eq!(
                partition_count(&mut client, "grow").await,
                Some(count as usize)
            );
        }
        let shrink =
            CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("grow"))
                .with_count(2)]);
        assert_eq!(client.send(3, &shrink).await.results[0].error_code, 37);
        broker.stop().await;
    })
    .await;
}

fn describe_topic(topic: &str, keys: Option<Vec<&str>>) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s(topic))
        .with_configuration_keys(keys.map(|k| k.into_iter().map(s).collect()))])
}

async fn topic_config(client: &mut Client, topic: &str, key: &str) -> (String, i8) {
    let response = client
        .send(4, &describe_topic(topic, Some(vec![key])))
        .await;
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    assert_eq!(result.configs.len(), 1);
    let entry = &result.configs[0];
    (
        entry.value.as_deref().unwrap_or("").to_string(),
        entry.config_source,
    )
}

#[tokio::test]
async fn configs_describe_alter_and_incremental_alter() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        client.send(7, &create_topics_request("conf", 1, &[])).await;
        for version in 1..=4 {
            let response = client.send(version, &describe_topic("conf", None)).await;
            assert_eq!(response.results[0].error_code, 0, "v{version}");
            assert!(response.results[0]
                .configs
                .iter()
                .any(|c| c.name.as_str() == "retention.ms"));
        }
        let (_, source) = topic_config(&mut client, "conf", "retention.ms").await;
        assert_eq!(source, 5, "DEFAULT_CONFIG");
        for version in 0..=2 {
            let value = format!("{}", 100_000 + i64::from(version));
            let request = AlterConfigsRequest::default().with_resources(vec![
                alter::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("conf"))
                    .with_configs(vec![alter::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s(&value)))]),
            ]);
            let response = client.send(version, &request).await;
            assert_eq!(response.responses[0].error_code, 0, "v{version}");
            assert_eq!(
                topic_config(&mut client, "conf", "retention.ms").await,
                (value, 1)
            );
        }
        for version in 0..=1 {
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("conf"))
                    .with_configs(vec![
                        incremental::AlterableConfig::default()
                            .with_name(s("retention.bytes"))
                            .with_config_operation(0)
                            .with_value(Some(s("12345"))),
                        incremental::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(1),
                    ]),
            ]);
            let response = client.send(version, &request).await;
            assert_eq!(response.responses[0].error_code, 0, "v{version}");
            assert_eq!(
                topic_config(&mut client, "conf", "retention.bytes").await,
                ("12345".into(), 1)
            );
            assert_eq!(topic_config(&mut client, "conf", "retention.ms").await.1, 5);
        }
        let bad = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("conf"))
                .with_configs(vec![incremental::AlterableConfig::default()
                    .with_name(s("no.such.config"))
                    .with_config_operation(0)
                    .with_value(Some(s("1")))]),
        ]);
        assert_eq!(client.send(1, &bad).await.responses[0].error_code, 40);
        // Broker resource: static configs and the metrics counters.
        let broker_request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("0")),
        ]);
        let response = client.send(4, &broker_request).await;
        assert!(response.results[0]
            .configs
            .iter()
            .any(|c| c.name.as_str() == "rill.metrics.sendfile.bytes.total"));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn topic_configs_survive_a_restart() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        client
            .send(
                7,
                &create_topics_request("kept", 1, &[("retention.bytes", "777")]),
            )
            .await;
        drop(client);
        let dir = broker.stop().await;
        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        assert_eq!(
            topic_config(&mut client, "kept", "retention.bytes").await,
            ("777".into(), 1)
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delete_records_leader_epoch_log_dirs_and_cluster() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        client.send(7, &create_topics_request("misc", 1, &[])).await;
        produce(&mut client, "misc", 5).await;
        produce(&mut client, "misc", 5).await;
        for version in 0..=2 {
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(name("misc"))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(5)])]);
            let response = client.send(version, &request).await;
            let p = &response.topics[0].partitions[0];
            assert_eq!((p.error_code, p.low_watermark), (0, 5), "v{version}");
        }
        for version in 2..=4 {
            let request = OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(name("misc"))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0)])]);
            let response = client.send(version, &request).await;
            let p = &response.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.leader_epoch, p.end_offset),
                (0, 0, 10),
                "v{version}"
            );
        }
        for version in 1..=4 {
            let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
                DescribableLogDirTopic::default()
                    .with_topic(name("misc"))
                    .with_partitions(vec![0]),
            ]));
            let response = client.send(version, &request).await;
            let dir = &response.results[0];
            assert_eq!(dir.error_code, 0);
            assert!(dir.topics[0].partitions[0].partition_size > 0, "v{version}");
        }
        for version in 0..=2 {
            let response = client
                .send(version, &DescribeClusterRequest::default())
                .await;
            assert_eq!(response.error_code, 0);
            assert_eq!(response.brokers[0].port, i32::from(broker.addr.port()));
            assert!(!response.cluster_id.is_empty());
        }
        for version in 0..=5 {
            let response = client
                .send(
                    version,
                    &InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(1000),
                )
                .await;
            assert_eq!(response.error_code, 0, "v{version}");
            assert!(response.producer_id.0 >= 0);
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sasl_is_refused_with_clear_errors() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        for version in 0..=1 {
            let request = SaslHandshakeRequest::default().with_mechanism(s("PLAIN"));
            let response = client.send(version, &request).await;
            assert_eq!(response.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
        }
        for version in 0..=2 {
            let response = client
                .send(version, &SaslAuthenticateRequest::default())
                .await;
            assert_eq!(response.error_code, 34, "ILLEGAL_SASL_STATE");
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn metadata_and_produce_answer_at_every_version() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        for version in 0..=12 {
            let request = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name("every")))
                ]))
                .with_allow_auto_topic_creation(true);
            let response = client.send(version, &request).await;
            assert_eq!(response.topics[0].error_code, 0, "metadata v{version}");
            assert_eq!(response.topics[0].partitions.len(), 1);
        }
        for version in 3..=11 {
            let request = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name("every"))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(record_batch(1, 1, now_ms())))])]);
            let response = client.send(version, &request).await;
            let p = &response.responses[0].partition_responses[0];
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, i64::from(version) - 3),
                "produce v{version}"
            );
        }
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn validate_only_changes_nothing() {
    bounded(async {
        let broker = TestBroker::start_with(|c| c.auto_create_topics = false).await;
        let mut client = broker.connect().await;
        let dry = create_topics_request("dry", 3, &[]).with_validate_only(true);
        let response = client.send(7, &dry).await;
        assert_eq!(response.topics[0].error_code, 0);
        assert_eq!(response.topics[0].num_partitions, 3);
        assert_eq!(partition_count(&mut client, "dry").await, None);
        client.send(7, &create_topics_request("wet", 1, &[])).await;
        let grow = CreatePartitionsRequest::default()
            .with_validate_only(true)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("wet"))
                .with_count(4)]);
        assert_eq!(client.send(3, &grow).await.results[0].error_code, 0);
        assert_eq!(partition_count(&mut client, "wet").await, Some(1));
        broker.stop().await;
    })
    .await;
}

/// DescribeTopicPartitions pages through topics in name order with a cursor, as Kafka's
/// handler does; unknown and illegal names get their own codes; a bad cursor refuses the
/// request.
#[tokio::test]
async fn describe_topic_partitions_pages_with_a_cursor() {
    use describe_topic_partitions_request::{Cursor, TopicRequest};
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        for (topic, partitions) in [("dtp-b", 3), ("dtp-a", 2), ("dtp-c", 1)] {
            let r = client
                .send(5, &create_topics_request(topic, partitions, &[]))
                .await;
            assert_eq!(r.topics[0].error_code, 0, "{topic}");
        }
        let ask = |topics: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
            DescribeTopicPartitionsRequest::default()
                .with_topics(
                    topics
                        .iter()
                        .map(|t| TopicRequest::default().with_name(name(t)))
                        .collect(),
                )
                .with_response_partition_limit(limit)
                .with_cursor(cursor.map(|(t, p)| {
                    Cursor::default()
                        .with_topic_name(name(t))
                        .with_partition_index(p)
                }))
        };
        let listed = |r: &DescribeTopicPartitionsResponse| -> Vec<(String, i16, Vec<i32>)> {
            r.topics
                .iter()
                .map(|t| {
                    let n = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    (n, t.error_code, parts)
                })
                .collect()
        };
        let wanted = ["dtp-c", "dtp-b", "dtp-a", "dtp-missing", "bad name!"];
        // 4 partitions per page: a's 2, then b's first 2; the cursor points at b-2.
        let first = client.send(0, &ask(&wanted, 4, None)).await;
        assert_eq!(
            listed(&first),
            vec![
                ("bad name!".into(), 17, vec![]),
                ("dtp-a".into(), 0, vec![0, 1]),
                ("dtp-b".into(), 0, vec![0, 1]),
            ]
        );
        let cursor = first.next_cursor.as_ref().expect("a next page");
        assert_eq!(
            (cursor.topic_name.0.as_str(), cursor.partition_index),
            ("dtp-b", 2)
        );
        let second = client.send(0, &ask(&wanted, 4, Some(("dtp-b", 2)))).await;
        assert_eq!(
            listed(&second),
            vec![
                ("dtp-b".into(), 0, vec![2]),
                ("dtp-c".into(), 0, vec![0]),
                ("dtp-missing".into(), 3, vec![]),
            ]
        );
        assert!(second.next_cursor.is_none(), "last page");
        let topic = &second.topics[1];
        assert_eq!(
            topic.partitions[0].leader_id.0,
            rill_broker::BrokerConfig::default().node_id
        );
        assert_eq!(
            topic.topic_authorized_operations, 0b1101_1111_1000,
            "every topic operation, as Kafka without an authorizer"
        );
        // Empty list: every topic (__consumer_offsets first, so start at a with a cursor),
        // here cut at exactly 2 partitions (a), cursor at b-0.
        let all = client.send(0, &ask(&[], 2, Some(("dtp-a", 0)))).await;
        assert_eq!(listed(&all), vec![("dtp-a".into(), 0, vec![0, 1])]);
        let cursor = all.next_cursor.as_ref().expect("more topics");
        assert_eq!(
            (cursor.topic_name.0.as_str(), cursor.partition_index),
            ("dtp-b", 0)
        );
        // A cursor outside the requested topics, or negative: INVALID_REQUEST (42) for all.
        for bad in [("dtp-zzz", 0), ("dtp-b", -1)] {
            let r = client
                .send(0, &ask(&["dtp-b", "dtp-c"], 10, Some(bad)))
                .await;
            assert_eq!(
                r.topics.iter().map(|t| t.error_code).collect::<Vec<_>>(),
                vec![42, 42],
                "{bad:?}"
            );
        }
        broker.stop().await;
    })
    .await;
}

/// Authorized operations, when asked for, are every operation the resource type supports
/// (Kafka with no authorizer); when not asked for, the INT32_MIN "omitted" marker.
#[tokio::test]
async fn authorized_operations_when_asked() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let r = client.send(5, &create_topics_request("ops", 1, &[])).await;
        assert_eq!(r.topics[0].error_code, 0);
        const TOPIC_OPS: i32 = 0b1101_1111_1000;
        const CLUSTER_OPS: i32 = 0b1_1111_1010_0000;
        const GROUP_OPS: i32 = 0b1101_0100_1000;
        for (version, ask) in [(8, true), (10, true), (12, true), (12, false)] {
            let mut request = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name("ops")))
                ]))
                .with_include_topic_authorized_operations(ask);
            if version <= 10 {
                request = request.with_include_cluster_authorized_operations(ask);
            }
            let r = client.send(version, &request).await;
            let want = if ask { TOPIC_OPS } else { i32::MIN };
            assert_eq!(r.topics[0].topic_authorized_operations, want, "v{version}");
            if version <= 10 {
                let want = if ask { CLUSTER_OPS } else { i32::MIN };
                assert_eq!(r.cluster_authorized_operations, want, "v{version}");
            }
        }
        for ask in [true, false] {
            let r = client
                .send(
                    1,
                    &DescribeClusterRequest::default()
                        .with_include_cluster_authorized_operations(ask),
                )
                .await;
            let want = if ask { CLUSTER_OPS } else { i32::MIN };
            assert_eq!(r.cluster_authorized_operations, want);
            let r = client
                .send(
                    5,
                    &DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(s("no-such-group"))])
                        .with_include_authorized_operations(ask),
                )
                .await;
            let want = if ask { GROUP_OPS } else { i32::MIN };
            assert_eq!(r.groups[0].authorized_operations, want);
        }
        broker.stop().await;
    })
    .await;
}

/// ACLs, elections, reassignments, log dir moves, SCRAM, delegation tokens and quotas answer
/// at every advertised version as a single Kafka node with no authorizer, SASL or other
/// brokers does (checked against Kafka 4.4 by tests/compat/java ClusterAdminTest).
#[tokio::test]
async fn cluster_admin_apis_answer_as_a_single_node_without_security() {
    use alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    use elect_leaders_request::TopicPartitions;
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let r = client
            .send(5, &create_topics_request("placed", 2, &[]))
            .await;
        assert_eq!(r.topics[0].error_code, 0);
        let node = BrokerId(rill_broker::BrokerConfig::default().node_id);
        for v in 1..=3 {
            let r = client.send(v, &DescribeAclsRequest::default()).await;
            assert_eq!(r.error_code, 54, "SECURITY_DISABLED v{v}");
            let r = client
                .send(
                    v,
                    &CreateAclsRequest::default().with_creations(vec![Default::default(); 2]),
                )
                .await;
            assert_eq!(
                r.results.iter().map(|x| x.error_code).collect::<Vec<_>>(),
                [54, 54]
            );
            let r = client
                .send(
                    v,
                    &DeleteAclsRequest::default().with_filters(vec![Default::default()]),
                )
                .await;
            assert_eq!(r.filter_results[0].error_code, 54);
        }
        for v in 0..=2 {
            let request = ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(name("placed"))
                    .with_partitions(vec![0, 7]),
                TopicPartitions::default()
                    .with_topic(name("nope"))
                    .with_partitions(vec![0]),
            ]));
            let r = client.send(v, &request).await;
            let codes: Vec<Vec<i16>> = r
                .replica_election_results
                .iter()
                .map(|t| t.partition_result.iter().map(|p| p.error_code).collect())
                .collect();
            // ELECTION_NOT_NEEDED, UNKNOWN_TOPIC_OR_PARTITION.
            assert_eq!(codes, vec![vec![84, 3], vec![3]], "v{v}");
            let all = client.send(v, &ElectLeadersRequest::default()).await;
            assert!(
                all.replica_election_results.is_empty(),
                "all partitions: nothing to say"
            );
        }
        let r = client
            .send(0, &ListPartitionReassignmentsRequest::default())
            .await;
        assert_eq!((r.error_code, r.topics.len()), (0, 0));
        for v in 0..=1 {
            let partition = |i: i32, replicas: Option<Vec<BrokerId>>| {
                ReassignablePartition::default()
                    .with_partition_index(i)
                    .with_replicas(replicas)
            };
            let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
                ReassignableTopic::default()
                    .with_name(name("placed"))
                    .with_partitions(vec![
                        partition(0, Some(vec![node])),
                        partition(1, Some(vec![BrokerId(node.0 + 7)])),
                        partition(0, None),
                        partition(1, Some(vec![])),
                    ]),
                ReassignableTopic::default()
                    .with_name(name("nope"))
                    .with_partitions(vec![partition(0, Some(vec![node]))]),
            ]);
            let r = client.send(v, &request).await;
            let codes: Vec<Vec<i16>> = r
                .responses
                .iter()
                .map(|t| t.partitions.iter().map(|p| p.error_code).collect())
                .collect();
            // none, INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS, invalid; unknown.
            assert_eq!(codes, vec![vec![0, 39, 85, 39], vec![3]], "v{v}");
        }
        let data_dir = broker.dir.path().to_string_lossy().to_string();
        for v in 1..=2 {
            use alter_replica_log_dirs_request::{AlterReplicaLogDir, AlterReplicaLogDirTopic};
            let dir = |path: &str| {
                AlterReplicaLogDir::default()
                    .with_path(s(path))
                    .with_topics(vec![AlterReplicaLogDirTopic::default()
                        .with_name(name("placed"))
                        .with_partitions(vec![0])])
            };
            let r = client
                .send(
                    v,
                    &AlterReplicaLogDirsRequest::default()
                        .with_dirs(vec![dir(&data_dir), dir("/elsewhere")]),
                )
                .await;
            let codes: Vec<i16> = r
                .results
                .iter()
                .map(|t| t.partitions[0].error_code)
                .collect();
            assert_eq!(
                codes,
                vec![0, 57],
                "here: fine; elsewhere: LOG_DIR_NOT_FOUND; v{v}"
            );
        }
        {
            use describe_user_scram_credentials_request::UserName;
            let user = |n: &str| UserName::default().with_name(s(n));
            let r = client
                .send(
                    0,
                    &DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                        user("alice"),
                        user("bob"),
                        user("bob"),
                    ])),
                )
                .await;
            let codes: Vec<(String, i16)> = r
                .results
                .iter()
                .map(|u| (u.user.to_string(), u.error_code))
                .collect();
            // RESOURCE_NOT_FOUND, DUPLICATE_RESOURCE.
            assert_eq!(codes, vec![("alice".into(), 91), ("bob".into(), 92)]);
            let all = client
                .send(0, &DescribeUserScramCredentialsRequest::default())
                .await;
            assert!(all.results.is_empty());
        }
        for v in 1..=3 {
            let r = client
                .send(v, &DescribeDelegationTokenRequest::default())
                .await;
            assert_eq!(
                r.error_code, 64,
                "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED v{v}"
            );
            let r = client
                .send(v, &CreateDelegationTokenRequest::default())
                .await;
            assert_eq!(r.error_code, 64);
        }
        for v in 1..=2 {
            let r = client
                .send(v, &RenewDelegationTokenRequest::default())
                .await;
            assert_eq!(r.error_code, 64);
            let r = client
                .send(v, &ExpireDelegationTokenRequest::default())
                .await;
            assert_eq!(r.error_code, 64);
        }
        for v in 0..=1 {
            let r = client
                .send(v, &DescribeClientQuotasRequest::default())
                .await;
            assert_eq!((r.error_code, r.entries.map(|e| e.len())), (0, Some(0)));
        }
        broker.stop().await;
    })
    .await;
}

/// UnregisterBroker (64): any id but this node's is BROKER_ID_NOT_REGISTERED, as a single-node
/// Kafka 4.4 answers (tests/compat/java AdminAuditTest); this node itself is refused.
#[tokio::test]
async fn unregister_broker_knows_only_this_node() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let node = rill_broker::BrokerConfig::default().node_id;
        let r = client
            .send(
                0,
                &UnregisterBrokerRequest::default().with_broker_id(BrokerId(node + 100)),
            )
            .await;
        assert_eq!(r.error_code, 102, "BROKER_ID_NOT_REGISTERED");
        let r = client
            .send(
                0,
                &UnregisterBrokerRequest::default().with_broker_id(BrokerId(node)),
            )
            .await;
        assert_eq!(r.error_code, 42, "INVALID_REQUEST");
        assert!(r.error_message.is_some());
        broker.stop().await;
    })
    .await;
}

fn quorum_request(topic: &str, partitions: &[i32]) -> DescribeQuorumRequest {
    use describe_quorum_request::{PartitionData, TopicData};
    DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(name(topic))
        .with_partitions(
            partitions
                .iter()
                .map(|&p| PartitionData::default().with_partition_index(p))
                .collect(),
        )])
}

/// Admin's `describeMetadataQuorum`: a single-node quorum of this node, as a combined-mode
/// KRaft Kafka answers, at every version; any other partition is UNKNOWN_TOPIC_OR_PARTITION.
#[tokio::test]
async fn describe_quorum_is_a_single_voter_led_by_this_node() {
    let broker = TestBroker::start().await;
    let mut client = broker.connect().await;
    let node = broker.state.config.node_id;
    bounded(async {
        for version in 0..=2 {
            let r = client
                .send(version, &quorum_request("__cluster_metadata", &[0]))
                .await;
            assert_eq!(r.error_code, 0, "v{version}");
            assert_eq!(r.topics.len(), 1);
            assert_eq!(r.topics[0].topic_name.0.as_str(), "__cluster_metadata");
            let p = &r.topics[0].partitions[0];
            assert_eq!((p.partition_index, p.error_code), (0, 0));
            assert_eq!(p.leader_id.0, node);
            assert!(p.leader_epoch >= 1);
            assert_eq!(p.current_voters.len(), 1);
            assert_eq!(p.current_voters[0].replica_id.0, node);
            assert_eq!(p.current_voters[0].log_end_offset, p.high_watermark);
            assert!(p.observers.is_empty());
            if version >= 1 {
                assert!(p.current_voters[0].last_caught_up_timestamp > 0);
            }
            if version >= 2 {
                assert_eq!(r.nodes.len(), 1);
                assert_eq!(r.nodes[0].node_id.0, node);
                assert_eq!(r.nodes[0].listeners[0].port, broker.addr.port());
            }
        }
        for (topic, partitions) in [("__cluster_metadata", &[1][..]), ("orders", &[0][..])] {
            let r = client.send(2, &quorum_request(topic, partitions)).await;
            assert_eq!(r.error_code, 0);
            assert_eq!(r.topics[0].partitions[0].error_code, 3, "{topic}");
        }
    })
    .await;
    broker.stop().await;
}

fn feature_update(feature: &str, level: i16, upgrade_type: i8) -> UpdateFeaturesRequest {
    use update_features_request::FeatureUpdateKey;
    UpdateFeaturesRequest::default()
        .with_timeout_ms(30_000)
        .with_feature_updates(vec![FeatureUpdateKey::default()
            .with_feature(s(feature))
            .with_max_version_level(level)
            .with_upgrade_type(upgrade_type)])
}

/// Admin's `updateFeatures`: the current level validates (and applies as a no-op); any other
/// level is INVALID_UPDATE_VERSION with Kafka's message, and the finalized levels that
/// ApiVersions reports do not change.
#[tokio::test]
async fn update_features_accepts_only_the_current_levels() {
    const INVALID_UPDATE_VERSION: i16 = 95;
    let broker = TestBroker::start().await;
    let mut client = broker.connect().await;
    bounded(async {
        for version in 1..=2 {
            for validate_only in [true, false] {
                let r = client
                    .send(
                        version,
                        &feature_update("group.version", 1, 1).with_validate_only(validate_only),
                    )
                    .await;
                assert_eq!((r.error_code, r.error_message.as_deref()), (0, None));
                let rows: Vec<_> = r.results.iter().map(|x| x.error_code).collect();
                assert_eq!(rows, if version == 1 { vec![0] } else { vec![] });
            }
        }
        let refused = [
            ("group.version", 2, 1, "only supports versions 0-1"),
            ("group.version", 0, 1, "Can't downgrade"),
            ("transaction.version", 1, 2, "fixed by its binary"),
            ("metadata.version", 27, 1, "does not support this feature"),
        ];
        for (feature, level, kind, reason) in refused {
            let r = client
                .send(
                    2,
                    &feature_update(feature, level, kind).with_validate_only(true),
                )
                .await;
            assert_eq!(r.error_code, INVALID_UPDATE_VERSION, "{feature} {level}");
            let message = r.error_message.expect("a message").to_string();
            assert!(
                message.starts_with(
                    "The update failed for all features since the following feature had an \
                     error: Invalid update version"
                ),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
            if level == 2 {
                let node = broker.state.config.node_id;
                assert!(message.ends_with(&format!(
                    "Local controller {node} only supports versions 0-1"
                )));
            }
            assert!(r.results.is_empty());
        }
        let features = client.send(3, &ApiVersionsRequest::default()).await;
        let finalized: Vec<_> = features
            .finalized_features
            .iter()
            .map(|f| (f.name.to_string(), f.max_version_level))
            .collect();
        assert!(finalized.contains(&("group.version".to_string(), 1)));
        assert!(finalized.contains(&("transaction.version".to_string(), 2)));
    })
    .await;
    broker.stop().await;
}

/// `producer_byte_rate` and `consumer_byte_rate` at the wire, as Kafka enforces them: a
/// produce that takes the client id over its quota is answered with the throttle time Kafka's
/// formula gives (its bytes over a first 10 s window), and the connection reads nothing more
/// until that time has passed; a fetch over the quota is answered with no partitions and the
/// throttle time. The throttle is a lower bound on the wait, so the check cannot be flaky.
#[tokio::test]
async fn byte_rate_quotas_throttle_and_mute_the_connection() {
    use common::hold_io::{fetch_request, produce_request};
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let created = client
            .send(7, &create_topics_request("quota", 1, &[]))
            .await;
        assert_eq!(created.topics[0].error_code, 0);
        let op = |key: &'static str| {
            OpData::default()
                .with_key(StrBytes::from_static_str(key))
                .with_value(10_000.0)
        };
        let quota = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
            .with_entity(vec![EntityData::default()
                .with_entity_type(StrBytes::from_static_str("client-id"))
                .with_entity_name(Some(StrBytes::from_static_str("rill-test")))])
            .with_ops(vec![op("producer_byte_rate"), op("consumer_byte_rate")])]);
        let r = client.send(1, &quota).await;
        assert_eq!(
            r.entries[0].error_code, 0,
            "{:?}",
            r.entries[0].error_message
        );

        // 120 KB against 10 000 B/s measured over 10 s: 12 000 B/s, 2 s over.
        let records = record_batch(120, 1_000, now_ms());
        let mut producer = broker.connect().await;
        let r = producer
            .send(9, &produce_request("quota", records, 1))
            .await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        let throttle_ms = r.throttle_time_ms;
        assert!(
            (2_000..2_400).contains(&throttle_ms),
            "throttle {throttle_ms} ms"
        );
        let asked = std::time::Instant::now();
        producer.send(3, &ApiVersionsRequest::default()).await;
        let waited_ms = asked.elapsed().as_millis();
        assert!(
            waited_ms + 50 >= throttle_ms as u128,
            "answered after {waited_ms} ms"
        );

        // The fetch returns the whole 120 KB batch (over the 100 KB window cap: one batch is
        // always returned), which takes the consumer over its quota: no partitions, throttled.
        let mut consumer = broker.connect().await;
        let r = consumer.send(12, &fetch_request("quota", 0, 0)).await;
        assert_eq!(r.error_code, 0);
        assert!(r.throttle_time_ms > 0, "fetch throttled");
        assert!(
            r.responses.is_empty(),
            "a throttled fetch carries no records"
        );

        // Quota removed: no throttle.
        let remove = |key: &'static str| {
            OpData::default()
                .with_key(StrBytes::from_static_str(key))
                .with_remove(true)
        };
        let mut unquota = quota.clone();
        unquota.entries[0].ops = vec![remove("producer_byte_rate"), remove("consumer_byte_rate")];
        assert_eq!(client.send(1, &unquota).await.entries[0].error_code, 0);
        let mut free = broker.connect().await;
        let records = record_batch(120, 1_000, now_ms());
        let r = free.send(9, &produce_request("quota", records, 1)).await;
        assert_eq!(r.throttle_time_ms, 0);
        let r = free.send(12, &fetch_request("quota", 0, 0)).await;
        assert_eq!((r.throttle_time_ms, r.responses.len()), (0, 1));
        broker.stop().await;
    })
    .await;
}
