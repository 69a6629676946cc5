//! [`Client`]: bootstrap, cluster metadata, one connection per broker, and the admin,
//! offset and fetch calls the command line needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest, ListOffsetsRequest,
    MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// ListOffsets special timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// Kafka's config resource type for topics.
const RESOURCE_TOPIC: i8 = 2;

/// A resource whose configs DescribeConfigs and IncrementalAlterConfigs read and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    /// A broker by id; `""` is the cluster-wide default of dynamic broker configs.
    Broker(String),
    /// A consumer, share or streams group's configs.
    Group(String),
    /// A broker's log levels, by broker id.
    BrokerLogger(String),
}

impl ConfigResource {
    fn type_and_name(&self) -> (i8, &str) {
        match self {
            ConfigResource::Topic(name) => (RESOURCE_TOPIC, name),
            ConfigResource::Broker(id) => (4, id),
            ConfigResource::BrokerLogger(id) => (8, id),
            ConfigResource::Group(name) => (32, name),
        }
    }

    fn describe(&self) -> String {
        match self {
            ConfigResource::Topic(name) => format!("topic '{name}'"),
            ConfigResource::Broker(id) if id.is_empty() => "the cluster default".to_string(),
            ConfigResource::Broker(id) => format!("broker {id}"),
            ConfigResource::Group(name) => format!("group '{name}'"),
            ConfigResource::BrokerLogger(id) => format!("the log levels of broker {id}"),
        }
    }
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port[,host:port...]`, tried in order.
    pub bootstrap: String,
    /// Bound on connecting and on each request's response.
    pub timeout: Duration,
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// One topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub is_internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// One topic config entry from DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// True when the value is the broker default (not set on the topic).
    pub is_default: bool,
    /// Kafka's ConfigSource: 1 topic, 2 this broker (dynamic), 3 cluster default (dynamic),
    /// 4 static broker setting, 5 default.
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

/// One partition's answer to a fetch.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole record batches, possibly followed by a partial one (ignore it).
    pub records: Bytes,
}

/// What to fetch from one partition.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: i32,
}

/// A connection to a Kafka-compatible cluster.
pub struct Client {
    config: ClientConfig,
    bootstrap: Arc<Connection>,
    /// Node id → address, from the last Metadata.
    brokers: Mutex<HashMap<i32, String>>,
    /// Node id → connection, made on first use.
    connections: tokio::sync::Mutex<HashMap<i32, Arc<Connection>>>,
    controller: Mutex<Option<i32>>,
}

impl Client {
    /// Connects to the first reachable bootstrap address.
    ///
    /// # Errors
    /// The last address's connection error when none is reachable.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let mut last_error = None;
        for addr in config
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, config.timeout).await {
                Ok(connection) => {
                    return Ok(Client {
                        config: config.clone(),
                        bootstrap: Arc::new(connection),
                        brokers: Mutex::default(),
                        connections: tokio::sync::Mutex::default(),
                        controller: Mutex::default(),
                    })
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            ClientError::Invalid("no bootstrap server given (use --bootstrap-server)".into())
        }))
    }

    /// The bootstrap connection (any broker can answer Metadata).
    pub fn any_connection(&self) -> Arc<Connection> {
        Arc::clone(&self.bootstrap)
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Sends `request` on `connection`, bounded by the configured timeout.
    ///
    /// # Errors
    /// As [`Connection::send`], plus [`ClientError::Timeout`].
    pub async fn call<R: kafka_protocol::protocol::Request>(
        &self,
        connection: &Connection,
        request: &R,
    ) -> Result<R::Response> {
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, connection.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                op: crate::connection::api_name(crate::connection::api_key_of::<R>()),
                addr: connection.addr().to_string(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Cluster metadata for `topics` (all topics when `None`), without creating any.
    ///
    /// # Errors
    /// Connection and protocol errors; per-topic errors are in the result.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<Vec<TopicInfo>> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }));
        let response = self.call(&self.bootstrap, &request).await?;
        {
            let mut brokers = lock(&self.brokers);
            for b in &response.brokers {
                brokers.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
            }
        }
        *lock(&self.controller) = Some(response.controller_id.0);
        let mut out: Vec<TopicInfo> = response
            .topics
            .into_iter()
            .map(|t| TopicInfo {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                id: t.topic_id,
                is_internal: t.is_internal,
                error_code: t.error_code,
                partitions: {
                    let mut ps: Vec<_> = t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionInfo {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                            error_code: p.error_code,
                        })
                        .collect();
                    ps.sort_by_key(|p| p.partition);
                    ps
                },
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One existing topic's metadata.
    ///
    /// # Errors
    /// [`ClientError::UnknownTopic`] when it does not exist; other broker errors.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo> {
        let mut topics = self.metadata(Some(&[name.to_string()])).await?;
        let topic = topics
            .pop()
            .ok_or_else(|| ClientError::UnknownTopic { topic: name.into() })?;
        if topic.error_code == 3 {
            return Err(ClientError::UnknownTopic { topic: name.into() });
        }
        ClientError::check(topic.error_code, || format!("metadata of topic '{name}'"))?;
        Ok(topic)
    }

    /// The connection to broker `node_id` (made on first use).
    ///
    /// # Errors
    /// An unknown node id (call [`Client::metadata`] first) or a connection error.
    pub async fn broker(&self, node_id: i32) -> Result<Arc<Connection>> {
        let mut connections = self.connections.lock().await;
        if let Some(c) = connections.get(&node_id) {
            return Ok(Arc::clone(c));
        }
        let addr = lock(&self.brokers).get(&node_id).cloned().ok_or_else(|| {
            ClientError::Invalid(format!("broker {node_id} is not in the cluster metadata"))
        })?;
        let connection = if addr == self.bootstrap.addr() {
            Arc::clone(&self.bootstrap)
        } else {
            Arc::new(Connection::connect(&addr, self.config.timeout).await?)
        };
        connections.insert(node_id, Arc::clone(&connection));
        Ok(connection)
    }

    /// The connection to the partition's leader.
    ///
    /// # Errors
    /// A partition without a leader, or connection errors.
    pub async fn leader(&self, topic: &TopicInfo, partition: i32) -> Result<Arc<Connection>> {
        let p = topic
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| ClientError::UnknownPartition {
                topic: topic.name.clone(),
                partition,
                partitions: topic.partitions.len(),
            })?;
        if p.leader < 0 {
            return Err(ClientError::Broker {
                context: format!("partition {}-{partition}", topic.name),
                code: 5,
                name: crate::error::error_name(5),
                message: Some("no leader".into()),
            });
        }
        self.broker(p.leader).await
    }

    /// The controller's connection, where admin requests go.
    async fn controller(&self) -> Result<Arc<Connection>> {
        let known = *lock(&self.controller);
        let id = match known {
            Some(id) => id,
            None => {
                self.metadata(Some(&[])).await?;
                lock(&self.controller).unwrap_or(-1)
            }
        };
        if id < 0 {
            return Ok(Arc::clone(&self.bootstrap));
        }
        self.broker(id).await
    }

    /// Creates a topic.
    ///
    /// # Errors
    /// The broker's error (TOPIC_ALREADY_EXISTS, INVALID_CONFIG, ...), with its message.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<()> {
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.into())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(timeout_ms(self.config.timeout));
        let controller = self.controller().await?;
        let response = self.call(&controller, &request).await?;
        for t in &response.topics {
            ClientError::check_msg(t.error_code, t.error_message.as_deref(), || {
                format!("creating topic '{name}'")
            })?;
        }
        Ok(())
    }

    /// Deletes a topic by name.
    ///
    /// # Errors
    /// [`ClientError::UnknownTopic`] when it does not exist; other broker errors.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let topic_name = TopicName(StrBytes::from_string(name.into()));
        let request = DeleteTopicsRequest::default()
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic_name.clone()))
            ])
            .with_topic_names(vec![topic_name])
            .with_timeout_ms(timeout_ms(self.config.timeout));
        let controller = self.controller().await?;
        let response = self.call(&controller, &request).await?;
        for r in &response.responses {
            if r.error_code == 3 {
                return Err(ClientError::UnknownTopic { topic: name.into() });
            }
            ClientError::check_msg(r.error_code, r.error_message.as_deref(), || {
                format!("deleting topic '{name}'")
            })?;
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    ///
    /// # Errors
    /// The broker's error (e.g. INVALID_PARTITIONS when shrinking).
    pub async fn create_partitions(&self, name: &str, count: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_count(count)])
            .with_timeout_ms(timeout_ms(self.config.timeout));
        let controller = self.controller().await?;
        let response = self.call(&controller, &request).await?;
        for r in &response.results {
            if r.error_code == 3 {
                return Err(ClientError::UnknownTopic { topic: name.into() });
            }
            ClientError::check_msg(r.error_code, r.error_message.as_deref(), || {
                format!("setting topic '{name}' to {count} partitions")
            })?;
        }
        Ok(())
    }

    /// A topic's configuration, every key (defaults included), sorted by name.
    ///
    /// # Errors
    /// Unknown topic and other broker errors.
    pub async fn describe_topic_configs(&self, name: &str) -> Result<Vec<ConfigEntry>> {
        self.describe_configs(&ConfigResource::Topic(name.into()))
            .await
    }

    /// A resource's configuration, every key, sorted by name.
    ///
    /// # Errors
    /// Unknown topic, a broker that is not the one asked, and other broker errors.
    pub async fn describe_configs(&self, resource: &ConfigResource) -> Result<Vec<ConfigEntry>> {
        let (resource_type, name) = resource.type_and_name();
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.into()))
                .with_configuration_keys(None),
        ]);
        let response = self.call(&self.bootstrap, &request).await?;
        let mut out = Vec::new();
        for r in response.results {
            if r.error_code == 3 {
                return Err(ClientError::UnknownTopic { topic: name.into() });
            }
            ClientError::check_msg(r.error_code, r.error_message.as_deref(), || {
                format!("describing configs of {}", resource.describe())
            })?;
            for c in r.configs {
                out.push(ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    // Config source 1 is DYNAMIC_TOPIC_CONFIG; 5 (or 0 in old versions'
                    // is_default) means the default.
                    is_default: c.config_source != 1,
                    source: c.config_source,
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Sets and deletes (reverts to default) topic config keys.
    ///
    /// # Errors
    /// Unknown topic, invalid config names or values.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        self.alter_configs(&ConfigResource::Topic(name.into()), set, delete)
            .await
    }

    /// Sets and deletes config keys of a topic or broker (IncrementalAlterConfigs).
    ///
    /// # Errors
    /// Unknown topic, invalid or read-only config names, bad values.
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        let (resource_type, name) = resource.type_and_name();
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        configs.extend(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1)
                .with_value(None)
        }));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.into()))
                .with_configs(configs),
        ]);
        let controller = self.controller().await?;
        let response = self.call(&controller, &request).await?;
        for r in &response.responses {
            if r.error_code == 3 {
                return Err(ClientError::UnknownTopic { topic: name.into() });
            }
            ClientError::check_msg(r.error_code, r.error_message.as_deref(), || {
                format!("altering configs of {}", resource.describe())
            })?;
        }
        Ok(())
    }

    /// ListOffsets for every partition of `topic` at `timestamp` ([`LATEST_TIMESTAMP`],
    /// [`EARLIEST_TIMESTAMP`] or milliseconds): (partition, offset, timestamp), offset -1 when
    /// no record is that late.
    ///
    /// # Errors
    /// Broker errors per partition.
    pub async fn list_offsets(
        &self,
        topic: &TopicInfo,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64, i64)>> {
        // Group partitions by leader: one request per broker.
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for &p in partitions {
            let leader = topic
                .partitions
                .iter()
                .find(|i| i.partition == p)
                .map(|i| i.leader)
                .ok_or_else(|| ClientError::UnknownPartition {
                    topic: topic.name.clone(),
                    partition: p,
                    partitions: topic.partitions.len(),
                })?;
            by_leader.entry(leader).or_default().push(p);
        }
        let mut out = Vec::new();
        for (leader, ps) in by_leader {
            let connection = self.broker(leader).await?;
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_partitions(
                        ps.iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]);
            let response = self.call(&connection, &request).await?;
            for t in response.topics {
                for p in t.partitions {
                    ClientError::check(p.error_code, || {
                        format!("ListOffsets of {}-{}", topic.name, p.partition_index)
                    })?;
                    out.push((p.partition_index, p.offset, p.timestamp));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Starts a fetch on `connection` (all `specs` must be led by that broker) and returns
    /// its future, so a caller can keep one fetch in flight while it processes the last.
    ///
    /// # Errors
    /// Encoding errors at once; connection and protocol errors from the future.
    pub fn start_fetch(
        &self,
        connection: &Connection,
        specs: &[FetchSpec],
        max_wait_ms: i32,
        min_bytes: i32,
        max_bytes: i32,
    ) -> Result<impl std::future::Future<Output = Result<Vec<FetchedPartition>>> + Send + 'static>
    {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for spec in specs {
            let partition = FetchPartition::default()
                .with_partition(spec.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(spec.offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(spec.max_bytes);
            match topics.iter_mut().find(|t| t.topic.0.as_str() == spec.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(spec.topic.clone())))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics);
        let version = connection.version_for(ApiKey::Fetch)?;
        let response = connection.send_versioned(&request, version)?;
        Ok(async move {
            let response = response.await?;
            ClientError::check(response.error_code, || "fetch".to_string())?;
            let mut out = Vec::new();
            for t in response.responses {
                let topic = t.topic.0.to_string();
                for p in t.partitions {
                    out.push(FetchedPartition {
                        topic: topic.clone(),
                        partition: p.partition_index,
                        error_code: p.error_code,
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                        records: p.records.unwrap_or_default(),
                    });
                }
            }
            Ok(out)
        })
    }
}

fn timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain maps: still consistent after a panic elsewhere.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
