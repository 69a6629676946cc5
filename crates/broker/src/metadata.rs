//! Metadata (3) and DescribeCluster (60): what the cluster looks like.
//!
//! One node is the whole cluster: it is every partition's leader, only replica and only ISR
//! member, and the controller. Metadata is also where clients trigger auto topic creation.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::authorizer::ResourceType;
use crate::error::NONE;
use crate::state::BrokerState;
use crate::topics::TopicMeta;

/// "Authorized operations" when the client did not ask for them (Kafka's INT32 MIN marker).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// Metadata: this broker, and the requested topics (all when null; v0: when empty),
/// auto-creating unknown ones when the broker and the request allow it.
pub async fn handle(
    state: &Arc<BrokerState>,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    // v1+ distinguishes null (all topics) from empty (none); v0 has no null, and empty = all.
    let requested = match request.topics {
        Some(topics) if version == 0 && topics.is_empty() => None,
        other => other,
    };
    // v0-v3 have no flag and always allowed auto creation.
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let topics = match requested {
        None => state
            .topics
            .all()
            .iter()
            .map(|meta| topic_entry(state, meta))
            .collect(),
        Some(requested) => {
            let mut entries = Vec::with_capacity(requested.len());
            for topic in requested {
                entries
                    .push(requested_topic(state, topic.name, topic.topic_id, allow_create).await);
            }
            entries
        }
    };
    let mut response = MetadataResponse::default()
        .with_brokers(vec![broker_entry(state)])
        .with_cluster_id(Some(StrBytes::from_string(
            state.topics.cluster_id().to_string(),
        )))
        .with_controller_id(BrokerId(state.config.node_id))
        .with_topics(topics);
    // v8–v10 carry a cluster flag; v11 dropped it in favour of DescribeCluster.
    response.cluster_authorized_operations = if request.include_cluster_authorized_operations {
        cluster_operations(state)
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    if request.include_topic_authorized_operations {
        for topic in &mut response.topics {
            let name = topic.name.as_ref().map_or("", |n| n.0.as_str());
            topic.topic_authorized_operations =
                state.authorized_operations(ResourceType::Topic, name);
        }
    }
    response
}

fn cluster_operations(state: &BrokerState) -> i32 {
    state.authorized_operations(ResourceType::Cluster, "kafka-cluster")
}

async fn requested_topic(
    state: &Arc<BrokerState>,
    name: Option<TopicName>,
    topic_id: Uuid,
    allow_create: bool,
) -> MetadataResponseTopic {
    let Some(name) = name else {
        // v10+: lookup by id (never creates).
        return match state.topics.get_by_id(&topic_id) {
            Some(meta) => topic_entry(state, &meta),
            None => error_entry(None, topic_id, ResponseError::UnknownTopicId.code()),
        };
    };
    match state.resolve_topic(name.0.as_str(), allow_create).await {
        Ok(meta) => topic_entry(state, &meta),
        Err(e) => {
            tracing::debug!(topic = name.0.as_str(), error = %e, "metadata for unavailable topic");
            error_entry(Some(name), Uuid::nil(), e.code())
        }
    }
}

fn error_entry(name: Option<TopicName>, topic_id: Uuid, code: i16) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name)
        .with_topic_id(topic_id);
    entry.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    entry
}

fn topic_entry(state: &BrokerState, meta: &TopicMeta) -> MetadataResponseTopic {
    let node = BrokerId(state.config.node_id);
    let partitions = (0..meta.partitions)
        .map(|partition| {
            MetadataResponsePartition::default()
                .with_error_code(NONE)
                .with_partition_index(partition)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
                .with_offline_replicas(Vec::new())
        })
        .collect();
    let mut entry = MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(StrBytes::from_string(meta.name.clone()))))
        .with_topic_id(meta.id)
        .with_is_internal(crate::topics::is_internal(&meta.name))
        .with_partitions(partitions);
    entry.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    entry
}

fn broker_entry(state: &BrokerState) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(state.config.node_id))
        .with_host(StrBytes::from_string(state.advertised.host.clone()))
        .with_port(state.advertised.port)
        .with_rack(None)
}

/// DescribeCluster: this node, as broker and controller.
pub fn describe_cluster(
    state: &BrokerState,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let include_operations = request.include_cluster_authorized_operations;
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(state.config.node_id))
        .with_host(StrBytes::from_string(state.advertised.host.clone()))
        .with_port(state.advertised.port)
        .with_rack(None)
        .with_is_fenced(false);
    let mut response = DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(StrBytes::from_string(state.topics.cluster_id().to_string()))
        .with_controller_id(BrokerId(state.config.node_id))
        .with_brokers(vec![broker]);
    response.cluster_authorized_operations = if include_operations {
        cluster_operations(state)
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    response
}
