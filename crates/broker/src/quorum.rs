//! DescribeQuorum (55): Admin's `describeMetadataQuorum`, answered as a single-node KRaft
//! Kafka 4.4 in combined mode answers it: the metadata partition `__cluster_metadata-0` has
//! one voter, this node, which leads it, and no observers.
//!
//! Rill keeps its cluster metadata (topics, configs) in files in the data directory, not in a
//! replicated log, so the figures of a metadata log are reported as what is true of a log that
//! holds nothing: high watermark and log end offset 0. The leader epoch is 1: this node became
//! leader once, at its first start, and no election ever happens. The voter's directory id is
//! the nil UUID (Kafka's "unknown"), and its one endpoint is the client listener, named
//! `CONTROLLER` as a Kafka controller listener is (rill has no listener of its own for the
//! quorum). [`crate::voters`] answers changes to this voter set.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;

use crate::error::NONE;
use crate::state::BrokerState;

/// The KRaft metadata topic, the one partition DescribeQuorum describes.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The leader epoch reported for the metadata partition: one election, at the first start.
const LEADER_EPOCH: i32 = 1;

/// Answers a DescribeQuorum request. Anything but exactly `__cluster_metadata-0` gets
/// UNKNOWN_TOPIC_OR_PARTITION on each partition asked for, as Kafka's Raft client answers.
/// Fields newer than `version` are left out (timestamps from v1, nodes from v2).
pub fn describe(
    state: &BrokerState,
    version: i16,
    r: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let valid = matches!(
        r.topics.as_slice(),
        [t] if t.topic_name.0.as_str() == METADATA_TOPIC
            && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0)
    );
    if !valid {
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                TopicData::default()
                    .with_topic_name(t.topic_name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                                    .with_leader_id(BrokerId(-1))
                                    .with_leader_epoch(-1)
                                    .with_high_watermark(-1)
                                    .with_error_message(None)
                            })
                            .collect(),
                    )
            })
            .collect();
        return DescribeQuorumResponse::default()
            .with_error_code(NONE)
            .with_error_message(None)
            .with_topics(topics);
    }
    let node = state.config.node_id;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut voter = ReplicaState::default()
        .with_replica_id(BrokerId(node))
        .with_log_end_offset(0);
    if version >= 1 {
        // The leader is always caught up with itself: Kafka reports the current time for
        // both.
        voter = voter
            .with_last_fetch_timestamp(now)
            .with_last_caught_up_timestamp(now);
    }
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(NONE)
        .with_error_message(None)
        .with_leader_id(BrokerId(node))
        .with_leader_epoch(LEADER_EPOCH)
        .with_high_watermark(0)
        .with_current_voters(vec![voter])
        .with_observers(Vec::new());
    let listener = Listener::default()
        .with_name(StrBytes::from_static_str(
            crate::voters::CONTROLLER_LISTENER,
        ))
        .with_host(StrBytes::from_string(state.advertised.host.clone()))
        .with_port(u16::try_from(state.advertised.port).unwrap_or(0));
    let nodes = if version >= 2 {
        vec![Node::default()
            .with_node_id(BrokerId(node))
            .with_listeners(vec![listener])]
    } else {
        Vec::new()
    };
    DescribeQuorumResponse::default()
        .with_error_code(NONE)
        .with_error_message(None)
        .with_topics(vec![TopicData::default()
            .with_topic_name(kafka_protocol::messages::TopicName(
                StrBytes::from_static_str(METADATA_TOPIC),
            ))
            .with_partitions(vec![partition])])
        .with_nodes(nodes)
}
