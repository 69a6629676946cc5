//! Group configs (GROUP resources, type 32) over the wire, as Kafka 4.4 answers them (checked
//! with scripts/kafka-local and kafka-clients 4.4): described with Kafka's keys, sources and
//! synonyms; set, deleted and replaced; refused with Kafka's codes and messages; kept across a
//! restart; and read by the KIP-848 coordinator (session timeout, heartbeat interval).

mod common;

use std::time::Duration;

use common::{Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::alter_configs_request as alter;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const GROUP: i8 = 32;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_MEMBER_ID: i16 = 25;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT * 2, test)
        .await
        .expect("test timed out");
}

async fn set(client: &mut Client, group: &str, ops: &[(&str, i8, Option<&str>)]) -> (i16, String) {
    let configs = ops
        .iter()
        .map(|(k, op, v)| {
            incremental::AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(*op)
                .with_value(v.map(s))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental::AlterConfigsResource::default()
            .with_resource_type(GROUP)
            .with_resource_name(s(group))
            .with_configs(configs),
    ]);
    let response = client.send(1, &request).await;
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message.as_deref().unwrap_or("").to_string(),
    )
}

async fn describe(client: &mut Client, group: &str) -> DescribeConfigsResult {
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_include_documentation(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(GROUP)
            .with_resource_name(s(group))]);
    let mut response = client.send(4, &request).await;
    response.results.remove(0)
}

/// (value, source, synonyms) of `key` in group `group`.
async fn entry(
    client: &mut Client,
    group: &str,
    key: &str,
) -> (String, i8, Vec<(String, String, i8)>) {
    let result = describe(client, group).await;
    assert_eq!(result.error_code, 0, "{:?}", result.error_message);
    let c = result
        .configs
        .iter()
        .find(|c| c.name.as_str() == key)
        .unwrap_or_else(|| panic!("{key} described"));
    let synonyms = c
        .synonyms
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.value.as_deref().unwrap_or("").to_string(),
                s.source,
            )
        })
        .collect();
    (
        c.value.as_deref().unwrap_or("").to_string(),
        c.config_source,
        synonyms,
    )
}

/// The keys, sources and synonyms Kafka 4.4 answers for a group with nothing set; an internal
/// key appears once set; the empty name is INVALID_REQUEST as in Kafka.
#[tokio::test]
async fn describes_kafka_group_configs() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let result = describe(&mut client, "g1").await;
        assert_eq!(result.error_code, 0);
        let names: Vec<&str> = result.configs.iter().map(|c| c.name.as_str()).collect();
        // Kafka 4.4's answer for a fresh group (non-internal keys), then rill's.
        for key in [
            "consumer.assignment.interval.ms",
            "consumer.heartbeat.interval.ms",
            "consumer.session.timeout.ms",
            "errors.deadletterqueue.copy.record.enable",
            "errors.deadletterqueue.topic.name",
            "share.assignment.interval.ms",
            "share.auto.offset.reset",
            "share.delivery.count.limit",
            "share.heartbeat.interval.ms",
            "share.isolation.level",
            "share.partition.max.record.locks",
            "share.record.lock.duration.ms",
            "share.renew.acknowledge.enable",
            "share.session.timeout.ms",
            "streams.assignment.interval.ms",
            "streams.assignor.name",
            "streams.heartbeat.interval.ms",
            "streams.initial.rebalance.delay.ms",
            "streams.num.standby.replicas",
            "streams.rack.aware.assignment.tags",
            "streams.session.timeout.ms",
            "rill.share.dlq.topic",
            "rill.share.filter",
        ] {
            assert!(names.contains(&key), "{key} in {names:?}");
        }
        assert_eq!(names.len(), 26, "21 of Kafka's + 5 of rill's: {names:?}");
        assert!(
            !names.contains(&"consumer.assignor.offload.enable"),
            "internal"
        );
        let (value, source, synonyms) =
            entry(&mut client, "g1", "consumer.session.timeout.ms").await;
        assert_eq!((value.as_str(), source), ("45000", 5));
        assert_eq!(
            synonyms,
            vec![(
                "group.consumer.session.timeout.ms".into(),
                "45000".into(),
                5
            )]
        );
        let (value, _, synonyms) = entry(&mut client, "g1", "share.isolation.level").await;
        assert_eq!(value, "read_uncommitted");
        assert_eq!(
            synonyms,
            vec![("share.isolation.level".into(), "read_uncommitted".into(), 5)]
        );
        let session = result
            .configs
            .iter()
            .find(|c| c.name.as_str() == "consumer.session.timeout.ms")
            .unwrap();
        assert_eq!(
            (session.config_type, session.read_only, session.is_sensitive),
            (3, false, false)
        );
        assert!(session.documentation.is_some());

        assert_eq!(
            set(
                &mut client,
                "g1",
                &[("consumer.assignor.offload.enable", SET, Some("false"))]
            )
            .await
            .0,
            0
        );
        let (value, source, synonyms) =
            entry(&mut client, "g1", "consumer.assignor.offload.enable").await;
        assert_eq!((value.as_str(), source), ("false", 8));
        assert_eq!(
            synonyms,
            vec![
                ("consumer.assignor.offload.enable".into(), "false".into(), 8),
                (
                    "group.consumer.assignor.offload.enable".into(),
                    "true".into(),
                    5
                ),
            ]
        );

        let empty = describe(&mut client, "").await;
        assert_eq!(empty.error_code, INVALID_REQUEST);
        assert_eq!(
            empty.error_message.as_deref(),
            Some("Group name must not be empty")
        );
        broker.stop().await;
    })
    .await;
}

/// Changes and refusals with Kafka 4.4's codes and messages; a refused change leaves the
/// group as it was; legacy AlterConfigs replaces the whole set; all of it survives a restart.
#[tokio::test]
async fn alters_refuses_and_keeps_group_configs_across_a_restart() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        assert_eq!(set(&mut client, "g", &[("consumer.session.timeout.ms", SET, Some("50000"))]).await.0, 0);
        assert_eq!(
            set(&mut client, "g", &[("consumer.session.timeout.ms", SET, Some("1000"))]).await,
            (INVALID_CONFIG, "consumer.session.timeout.ms must be in the range 45000 to 60000 inclusive.".into())
        );
        assert_eq!(
            set(&mut client, "g", &[("share.record.lock.duration.ms", SET, Some("999"))]).await,
            (
                INVALID_CONFIG,
                "Invalid value 999 for configuration share.record.lock.duration.ms: Value must be at least 1000".into()
            )
        );
        assert_eq!(
            set(&mut client, "g", &[("nonsense.key", SET, Some("1"))]).await,
            (INVALID_CONFIG, "Unknown group config name: nonsense.key".into())
        );
        assert_eq!(
            set(&mut client, "g", &[("streams.rack.aware.assignment.tags", APPEND, Some("a"))]).await,
            (
                INVALID_CONFIG,
                "Can't APPEND to key streams.rack.aware.assignment.tags because its type is not LIST.".into()
            )
        );
        assert_eq!(
            set(&mut client, "", &[("consumer.session.timeout.ms", SET, Some("50000"))]).await,
            (INVALID_REQUEST, "Default group resources are not allowed.".into())
        );
        assert_eq!(set(&mut client, "g", &[("rill.share.filter", SET, Some("a = "))]).await.0, INVALID_CONFIG);
        // Several operations at once, one bad: none applies.
        let (code, _) = set(
            &mut client,
            "g",
            &[("share.delivery.count.limit", SET, Some("7")), ("share.delivery.count.limit", SET, Some("11"))],
        )
        .await;
        assert_eq!(code, INVALID_CONFIG);
        assert_eq!(entry(&mut client, "g", "share.delivery.count.limit").await.0, "5");
        assert_eq!(
            set(
                &mut client,
                "g",
                &[
                    ("share.auto.offset.reset", SET, Some("by_duration:PT1H")),
                    ("share.isolation.level", SET, Some("read_committed")),
                    ("rill.share.filter.type", SET, Some("TAG")),
                    ("rill.share.filter", SET, Some("TagA || TagB")),
                    ("nonsense.key", DELETE, None),
                ]
            )
            .await
            .0,
            0
        );
        let (value, source, synonyms) = entry(&mut client, "g", "consumer.session.timeout.ms").await;
        assert_eq!((value.as_str(), source), ("50000", 8));
        assert_eq!(
            synonyms,
            vec![
                ("consumer.session.timeout.ms".into(), "50000".into(), 8),
                ("group.consumer.session.timeout.ms".into(), "45000".into(), 5),
            ]
        );
        drop(client);
        let dir = broker.stop().await;

        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        assert_eq!(entry(&mut client, "g", "consumer.session.timeout.ms").await.0, "50000");
        assert_eq!(entry(&mut client, "g", "rill.share.filter").await.0, "TagA || TagB");
        assert_eq!(set(&mut client, "g", &[("consumer.session.timeout.ms", DELETE, None)]).await.0, 0);
        assert_eq!(entry(&mut client, "g", "consumer.session.timeout.ms").await.1, 5);

        let request = AlterConfigsRequest::default().with_resources(vec![alter::AlterConfigsResource::default()
            .with_resource_type(GROUP)
            .with_resource_name(s("g"))
            .with_configs(vec![alter::AlterableConfig::default()
                .with_name(s("share.delivery.count.limit"))
                .with_value(Some(s("3")))])]);
        assert_eq!(client.send(2, &request).await.responses[0].error_code, 0);
        assert_eq!(entry(&mut client, "g", "share.delivery.count.limit").await, ("3".into(), 8, vec![
            ("share.delivery.count.limit".into(), "3".into(), 8),
            ("group.share.delivery.count.limit".into(), "5".into(), 5),
        ]));
        assert_eq!(entry(&mut client, "g", "rill.share.filter").await.1, 5, "replaced");
        broker.stop().await;
    })
    .await;
}

async fn heartbeat(
    client: &mut Client,
    request: &ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    client.send(0, request).await
}

fn join(group: &str, member: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(5_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(Vec::new()))
}

/// The KIP-848 coordinator reads a group's `consumer.session.timeout.ms` and
/// `consumer.heartbeat.interval.ms`: with the broker's session at 1 s, a group set to 45 s keeps
/// a silent member that another group loses, and its members are told its heartbeat interval.
#[tokio::test]
async fn consumer_groups_run_with_their_group_configs() {
    bounded(async {
        let broker = TestBroker::start_with(|c| {
            c.groups.offsets_partitions = 2;
            c.groups.consumer_session_timeout_ms = 1_000;
            c.groups.consumer_heartbeat_interval_ms = 200;
            c.groups.initial_rebalance_delay_ms = 0;
        })
        .await;
        let mut client = broker.connect().await;
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(s("t")))
                .with_num_partitions(1)
                .with_replication_factor(-1)]);
        assert_eq!(client.send(7, &request).await.topics[0].error_code, 0);
        // The broker's own values are the synonyms' STATIC_BROKER_CONFIG, and widen the bounds.
        let (value, source, synonyms) =
            entry(&mut client, "long", "consumer.session.timeout.ms").await;
        assert_eq!((value.as_str(), source), ("1000", 4));
        assert_eq!(
            synonyms[0],
            ("group.consumer.session.timeout.ms".into(), "1000".into(), 4)
        );
        assert_eq!(
            set(
                &mut client,
                "long",
                &[
                    ("consumer.session.timeout.ms", SET, Some("45000")),
                    ("consumer.heartbeat.interval.ms", SET, Some("7000"))
                ]
            )
            .await
            .0,
            0
        );
        let long = heartbeat(&mut client, &join("long", "a")).await;
        assert_eq!(long.error_code, 0);
        assert_eq!(long.heartbeat_interval_ms, 7_000, "the group's interval");
        let short = heartbeat(&mut client, &join("short", "b")).await;
        assert_eq!(short.error_code, 0);
        assert_eq!(short.heartbeat_interval_ms, 200, "the broker's interval");

        // Both members fall silent for twice the broker's session.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let request = |g: &str, m: &str, epoch: i32| {
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s(g)))
                .with_member_id(s(m))
                .with_member_epoch(epoch)
                .with_rebalance_timeout_ms(-1)
        };
        let short_after = heartbeat(&mut client, &request("short", "b", short.member_epoch)).await;
        assert_eq!(
            short_after.error_code, UNKNOWN_MEMBER_ID,
            "expired after the broker's 1 s"
        );
        let long_after = heartbeat(&mut client, &request("long", "a", long.member_epoch)).await;
        assert_eq!(long_after.error_code, 0, "kept by the group's 45 s");
        broker.stop().await;
    })
    .await;
}
