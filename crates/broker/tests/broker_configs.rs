//! Dynamic broker configs over the wire: set on this broker (its id) or as the cluster default
//! (`""`), applied at once to every topic without an override, kept across a restart, and
//! refused as Kafka 4.4 refuses them (read-only names and bad values: INVALID_REQUEST, 42).

mod common;

use common::{now_ms, record_batch, Client, TestBroker, TEST_TIMEOUT};
use kafka_protocol::messages::alter_configs_request as alter;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const SET: i8 = 0;
const DELETE: i8 = 1;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT * 2, test)
        .await
        .expect("test timed out");
}

async fn create(client: &mut Client, topic: &str) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(topic)))
            .with_num_partitions(1)
            .with_replication_factor(-1)]);
    assert_eq!(client.send(7, &request).await.topics[0].error_code, 0);
}

async fn set_broker(
    client: &mut Client,
    resource: &str,
    key: &str,
    op: i8,
    value: Option<&str>,
) -> (i16, String) {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental::AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(s(resource))
            .with_configs(vec![incremental::AlterableConfig::default()
                .with_name(s(key))
                .with_config_operation(op)
                .with_value(value.map(s))]),
    ]);
    let response = client.send(1, &request).await;
    let r = &response.responses[0];
    (
        r.error_code,
        r.error_message.as_deref().unwrap_or("").to_string(),
    )
}

async fn describe(
    client: &mut Client,
    resource_type: i8,
    name: &str,
) -> Vec<DescribeConfigsResourceResult> {
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))]);
    let mut response = client.send(4, &request).await;
    assert_eq!(
        response.results[0].error_code, 0,
        "{:?}",
        response.results[0].error_message
    );
    std::mem::take(&mut response.results[0].configs)
}

/// (value, source, synonyms as (name, value, source)) of `key`.
async fn entry(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    key: &str,
) -> (Option<String>, i8, Vec<(String, Option<String>, i8)>) {
    let configs = describe(client, resource_type, name).await;
    let c = configs
        .iter()
        .find(|c| c.name.as_str() == key)
        .unwrap_or_else(|| panic!("{key} described"));
    let synonyms = c
        .synonyms
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.value.as_ref().map(|v| v.to_string()),
                s.source,
            )
        })
        .collect();
    (
        c.value.as_ref().map(|v| v.to_string()),
        c.config_source,
        synonyms,
    )
}

async fn produce(client: &mut Client, topic: &str, value_bytes: usize) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(record_batch(1, value_bytes, now_ms())))])]);
    client.send(9, &request).await.responses[0].partition_responses[0].error_code
}

/// message.max.bytes lowered on this broker: a large record is refused with
/// MESSAGE_TOO_LARGE (10) at once and after a restart; deleting it restores the default.
#[tokio::test]
async fn message_max_bytes_lowered_at_runtime_takes_effect_and_survives_a_restart() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create(&mut client, "big").await;
        assert_eq!(produce(&mut client, "big", 50_000).await, 0);
        assert_eq!(
            set_broker(&mut client, "0", "message.max.bytes", SET, Some("10000"))
                .await
                .0,
            0
        );
        assert_eq!(
            produce(&mut client, "big", 50_000).await,
            10,
            "refused at once"
        );
        assert_eq!(produce(&mut client, "big", 100).await, 0);
        let (value, source, synonyms) = entry(&mut client, 4, "0", "message.max.bytes").await;
        assert_eq!(
            (value.as_deref(), source),
            (Some("10000"), 2),
            "DYNAMIC_BROKER_CONFIG"
        );
        assert_eq!(
            synonyms[1],
            ("message.max.bytes".into(), Some("1048588".into()), 5)
        );
        let (value, source, _) = entry(&mut client, 2, "big", "max.message.bytes").await;
        assert_eq!(
            (value.as_deref(), source),
            (Some("10000"), 2),
            "the topic sees it"
        );
        create(&mut client, "later").await;
        assert_eq!(
            produce(&mut client, "later", 50_000).await,
            10,
            "and new topics too"
        );
        drop(client);
        let dir = broker.stop().await;

        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        assert_eq!(
            produce(&mut client, "big", 50_000).await,
            10,
            "after a restart"
        );
        assert_eq!(
            set_broker(&mut client, "0", "message.max.bytes", DELETE, None)
                .await
                .0,
            0
        );
        assert_eq!(produce(&mut client, "big", 50_000).await, 0);
        broker.stop().await;
    })
    .await;
}

/// A cluster default reaches every topic without an override, with Kafka's sources and
/// synonyms; an override still wins; units convert (`log.retention.hours`).
#[tokio::test]
async fn cluster_defaults_reach_topics_without_overrides() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create(&mut client, "plain").await;
        assert_eq!(
            set_broker(&mut client, "", "log.retention.ms", SET, Some("3600000"))
                .await
                .0,
            0
        );
        let (value, source, synonyms) = entry(&mut client, 2, "plain", "retention.ms").await;
        assert_eq!((value.as_deref(), source), (Some("3600000"), 3));
        assert_eq!(
            synonyms,
            vec![("log.retention.ms".into(), Some("3600000".into()), 3)]
        );
        let cluster = describe(&mut client, 4, "").await;
        assert_eq!(cluster.len(), 1, "the cluster default lists what is set");
        assert_eq!(cluster[0].name.as_str(), "log.retention.ms");

        assert_eq!(
            set_broker(&mut client, "", "log.retention.ms", DELETE, None)
                .await
                .0,
            0
        );
        assert_eq!(
            set_broker(&mut client, "", "log.retention.hours", SET, Some("2"))
                .await
                .0,
            0
        );
        assert_eq!(
            entry(&mut client, 2, "plain", "retention.ms")
                .await
                .0
                .as_deref(),
            Some("7200000")
        );

        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("plain"))
                .with_configs(vec![incremental::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_config_operation(SET)
                    .with_value(Some(s("1000")))]),
        ]);
        assert_eq!(client.send(1, &request).await.responses[0].error_code, 0);
        let (value, source, synonyms) = entry(&mut client, 2, "plain", "retention.ms").await;
        assert_eq!(
            (value.as_deref(), source),
            (Some("1000"), 1),
            "the override wins"
        );
        assert_eq!(synonyms.len(), 1);
        broker.stop().await;
    })
    .await;
}

/// Refusals as Kafka 4.4 answers them: read-only names and bad values are INVALID_REQUEST
/// with Kafka's message and change nothing; another broker's id is refused; unknown names are
/// kept (Kafka's custom configs); legacy AlterConfigs replaces the whole scope.
/// Waits (bounded) until the broker runs `n` cleaner threads: they start with the broker's
/// run task, just after `TestBroker::start` returns.
async fn cleaner_threads_become(broker: &TestBroker, n: usize) {
    for _ in 0..500 {
        if broker.state.logs.cleaner_threads() == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "{} cleaner threads, not {n}",
        broker.state.logs.cleaner_threads()
    );
}

/// The log cleaner's settings (Kafka 4.4's reconfigurable `log.cleaner.*`) change on the
/// running broker: more threads at once, the throttle at once, both described as dynamic
/// with their default as a synonym; kept across a restart; Kafka's limits on the thread count
/// refused with INVALID_REQUEST; DELETE goes back to the command line's values.
#[tokio::test]
async fn cleaner_settings_change_live_and_survive_a_restart() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        cleaner_threads_become(&broker, 1).await;
        let threads = "log.cleaner.threads";
        let rate = "log.cleaner.io.max.bytes.per.second";
        assert_eq!(
            set_broker(&mut client, "0", threads, SET, Some("2"))
                .await
                .0,
            0
        );
        assert_eq!(broker.state.logs.cleaner_threads(), 2, "restarted at once");
        assert_eq!(
            set_broker(&mut client, "", rate, SET, Some("1000000"))
                .await
                .0,
            0
        );
        assert_eq!(
            broker.state.logs.cleaner_config().io_max_bytes_per_second,
            1_000_000.0
        );
        assert_eq!(
            entry(&mut client, 4, "0", threads).await,
            (
                Some("2".into()),
                2,
                vec![
                    (threads.into(), Some("2".into()), 2),
                    (threads.into(), Some("1".into()), 5)
                ]
            )
        );
        let (value, source, synonyms) = entry(&mut client, 4, "0", rate).await;
        assert_eq!((value.as_deref(), source), (Some("1000000.0"), 3));
        assert_eq!(
            synonyms[1],
            (rate.into(), Some("1.7976931348623157E308".into()), 5)
        );
        for (key, bad) in [
            (threads, "5"),
            (threads, "0"),
            ("log.cleaner.backoff.ms", "-1"),
            (rate, "fast"),
        ] {
            assert_eq!(
                set_broker(&mut client, "0", key, SET, Some(bad)).await.0,
                42,
                "{key}={bad}"
            );
        }
        assert_eq!(broker.state.logs.cleaner_threads(), 2, "unchanged");
        drop(client);
        let dir = broker.stop().await;

        let broker = TestBroker::start_in(dir, |_| {}).await;
        let mut client = broker.connect().await;
        cleaner_threads_become(&broker, 2).await;
        assert_eq!(
            broker.state.logs.cleaner_config().io_max_bytes_per_second,
            1_000_000.0,
            "after a restart"
        );
        assert_eq!(
            set_broker(&mut client, "0", threads, DELETE, None).await.0,
            0
        );
        assert_eq!(set_broker(&mut client, "", rate, DELETE, None).await.0, 0);
        assert_eq!(broker.state.logs.cleaner_threads(), 1);
        assert_eq!(
            broker.state.logs.cleaner_config(),
            rill_storage::CleanerConfig::default()
        );
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn read_only_and_invalid_broker_configs_are_refused() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let (code, message) = set_broker(&mut client, "0", "node.id", SET, Some("5")).await;
        assert_eq!(
            (code, message.as_str()),
            (42, "Cannot update these configs dynamically: [node.id]")
        );
        assert_eq!(
            set_broker(&mut client, "0", "log.dirs", SET, Some("/tmp"))
                .await
                .0,
            42
        );
        let (code, message) =
            set_broker(&mut client, "0", "message.max.bytes", SET, Some("abc")).await;
        assert_eq!(code, 42);
        assert!(
            message.starts_with("Invalid value abc for configuration message.max.bytes"),
            "{message}"
        );
        assert_eq!(
            set_broker(&mut client, "0", "log.segment.bytes", SET, Some("1"))
                .await
                .0,
            42
        );
        assert_eq!(
            set_broker(&mut client, "0", "max.connections", SET, Some("0"))
                .await
                .0,
            42
        );
        assert_eq!(
            set_broker(&mut client, "7", "message.max.bytes", SET, Some("1000"))
                .await
                .0,
            42
        );
        assert_eq!(
            entry(&mut client, 4, "0", "message.max.bytes").await.1,
            5,
            "unchanged"
        );
        assert_eq!(
            set_broker(&mut client, "0", "some.custom.config", SET, Some("x"))
                .await
                .0,
            0
        );
        assert_eq!(
            entry(&mut client, 4, "0", "some.custom.config")
                .await
                .0
                .as_deref(),
            Some("x")
        );

        let request = AlterConfigsRequest::default().with_resources(vec![
            alter::AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("0"))
                .with_configs(vec![alter::AlterableConfig::default()
                    .with_name(s("log.segment.bytes"))
                    .with_value(Some(s("2000000")))]),
        ]);
        assert_eq!(client.send(2, &request).await.responses[0].error_code, 0);
        let configs = describe(&mut client, 4, "0").await;
        assert!(
            !configs
                .iter()
                .any(|c| c.name.as_str() == "some.custom.config"),
            "replaced"
        );
        let segment = configs
            .iter()
            .find(|c| c.name.as_str() == "log.segment.bytes")
            .unwrap();
        assert_eq!(
            (
                segment.value.as_deref(),
                segment.config_source,
                segment.read_only
            ),
            (Some("2000000"), 2, false)
        );
        let node = configs
            .iter()
            .find(|c| c.name.as_str() == "node.id")
            .unwrap();
        assert!(node.read_only);
        broker.stop().await;
    })
    .await;
}

/// max.connections lowered at runtime: with the limit at 1, new connections wait until the
/// open ones close. (The listener holds the permit for its next accept before the change, so
/// one more connection than the new limit may be served while the old ones stay open.)
#[tokio::test]
async fn max_connections_changes_at_runtime() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut first = broker.connect().await;
        assert_eq!(
            set_broker(&mut first, "0", "max.connections", SET, Some("1"))
                .await
                .0,
            0
        );
        let mut second = broker.connect().await;
        second.send(3, &ApiVersionsRequest::default()).await;
        let mut third = broker.connect().await;
        third.send_only(3, &ApiVersionsRequest::default()).await;
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(500), third.read_frame()).await;
        assert!(waited.is_err(), "not served while the limit is reached");
        drop(first);
        drop(second);
        let frame = tokio::time::timeout(TEST_TIMEOUT, third.read_frame()).await;
        assert!(frame.expect("served once the others closed").is_some());
        let (value, source, _) = entry(&mut third, 4, "0", "max.connections").await;
        assert_eq!((value.as_deref(), source), (Some("1"), 2));
        broker.stop().await;
    })
    .await;
}

/// BROKER_LOGGER (type 8) as Kafka 4.4 answers it: every logger with its level (source
/// DYNAMIC_BROKER_LOGGER_CONFIG, type UNKNOWN), SET and DELETE change levels (a module inherits
/// its parent's), and Kafka's refusals: unknown logger and bad level INVALID_CONFIG, deleting
/// root and APPEND INVALID_REQUEST, another broker's id INVALID_REQUEST.
#[tokio::test]
async fn broker_logger_levels_change_as_kafka() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        let logger = |op: i8, key: &str, value: Option<&str>, id: &str| {
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental::AlterConfigsResource::default()
                    .with_resource_type(8)
                    .with_resource_name(s(id))
                    .with_configs(vec![incremental::AlterableConfig::default()
                        .with_name(s(key))
                        .with_config_operation(op)
                        .with_value(value.map(s))]),
            ])
        };
        assert_eq!(
            change(&mut client, logger(SET, "rill_broker", Some("DEBUG"), "0"))
                .await
                .0,
            0
        );
        assert_eq!(
            change(
                &mut client,
                logger(SET, "no.such.Logger", Some("DEBUG"), "0")
            )
            .await,
            (40, "Logger no.such.Logger does not exist!".into())
        );
        let (code, message) = change(&mut client, logger(SET, "root", Some("BOGUS"), "0")).await;
        assert_eq!(code, 40);
        assert!(
            message.ends_with("Valid log levels are DEBUG, ERROR, FATAL, INFO, TRACE, WARN"),
            "{message}"
        );
        assert_eq!(
            change(&mut client, logger(DELETE, "root", None, "0")).await,
            (
                42,
                "Removing the log level of the root logger is not allowed".into()
            )
        );
        assert_eq!(
            change(&mut client, logger(2, "rill_broker", Some("DEBUG"), "0")).await,
            (
                42,
                "APPEND operation is not allowed for the BROKER_LOGGER resource".into()
            )
        );
        assert_eq!(
            change(&mut client, logger(SET, "root", Some("WARN"), "7"))
                .await
                .0,
            42
        );
        let configs = describe(&mut client, 8, "0").await;
        let level = |name: &str| {
            let c = configs.iter().find(|c| c.name.as_str() == name).unwrap();
            assert_eq!(
                (c.config_source, c.config_type, c.synonyms.len()),
                (6, 0, 0)
            );
            c.value.as_deref().unwrap().to_string()
        };
        assert_eq!(level("rill_broker::fetch"), "DEBUG", "inherited");
        assert_eq!(level("rill_storage"), "INFO");
        assert_eq!(level("root"), "INFO");
        assert_eq!(
            change(&mut client, logger(DELETE, "rill_broker", None, "0"))
                .await
                .0,
            0
        );
        let configs = describe(&mut client, 8, "0").await;
        let fetch = configs
            .iter()
            .find(|c| c.name.as_str() == "rill_broker::fetch")
            .unwrap();
        assert_eq!(fetch.value.as_deref(), Some("INFO"));
        broker.stop().await;
    })
    .await;
}

async fn change(client: &mut Client, request: IncrementalAlterConfigsRequest) -> (i16, String) {
    let r = client.send(1, &request).await.responses.remove(0);
    (
        r.error_code,
        r.error_message.map(|m| m.to_string()).unwrap_or_default(),
    )
}
