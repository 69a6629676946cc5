//! Where replicas live: ElectLeaders (43), ListPartitionReassignments (46),
//! AlterPartitionReassignments (45), AlterReplicaLogDirs (34); and which brokers are registered:
//! UnregisterBroker (64).
//!
//! On one node every partition has exactly one replica, here, in the one data directory, and it
//! is always the preferred leader. So nothing ever needs electing or moving, and each call gets
//! the answer Apache Kafka gives for a partition in that state (checked against a single-node
//! Kafka 4.4): ELECTION_NOT_NEEDED, no reassignments, a reassignment onto this node accepted as
//! a no-op, onto any other broker INVALID_REPLICA_ASSIGNMENT, a cancel NO_REASSIGNMENT_IN_PROGRESS,
//! a move to another directory LOG_DIR_NOT_FOUND, any broker id but this node's
//! BROKER_ID_NOT_REGISTERED. With replication these become real.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    UnregisterBrokerRequest, UnregisterBrokerResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::NONE;
use crate::state::BrokerState;

fn message(text: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(text))
}

/// UnregisterBroker: only this node is registered, so any other id gets
/// BROKER_ID_NOT_REGISTERED, as a single-node Kafka answers. This node itself is refused with
/// INVALID_REQUEST: Kafka would drop its registration and the broker would register again at
/// once, which on one node changes nothing a client could use.
pub fn unregister_broker(
    state: &Arc<BrokerState>,
    request: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let id = request.broker_id.0;
    let (code, text) = if id == state.config.node_id {
        (
            ResponseError::InvalidRequest.code(),
            format!("broker {id} is this single node; it cannot be unregistered"),
        )
    } else {
        (
            ResponseError::BrokerIdNotRegistered.code(),
            format!("Broker ID {id} is not currently registered"),
        )
    };
    UnregisterBrokerResponse::default()
        .with_error_code(code)
        .with_error_message(message(text))
}

/// ElectLeaders: every existing partition already has its preferred (and only) leader. A
/// request for all partitions (null) answers with no entries, as Kafka leaves out the
/// partitions whose election was not needed.
pub fn elect_leaders(
    state: &Arc<BrokerState>,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let results = request
        .topic_partitions
        .unwrap_or_default()
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.to_string();
            let partitions = state.topics.get(&name).map(|m| m.partitions);
            let partition_result = topic
                .partitions
                .iter()
                .map(|&partition| {
                    let (code, text) = match partitions {
                        None => (
                            ResponseError::UnknownTopicOrPartition.code(),
                            format!("No such topic as {name}"),
                        ),
                        Some(count) if partition < 0 || partition >= count => (
                            ResponseError::UnknownTopicOrPartition.code(),
                            format!("No such partition as {name}-{partition}"),
                        ),
                        Some(_) => (
                            ResponseError::ElectionNotNeeded.code(),
                            "Leader election not needed for topic partition.".to_string(),
                        ),
                    };
                    PartitionResult::default()
                        .with_partition_id(partition)
                        .with_error_code(code)
                        .with_error_message(message(text))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(topic.topic)
                .with_partition_result(partition_result)
        })
        .collect();
    ElectLeadersResponse::default()
        .with_error_code(NONE)
        .with_replica_election_results(results)
}

/// ListPartitionReassignments: none is ever in progress.
pub fn list_reassignments(
    _request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse::default().with_error_code(NONE)
}

/// AlterPartitionReassignments, per partition.
pub fn alter_reassignments(
    state: &Arc<BrokerState>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let node = state.config.node_id;
    let responses = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = state.topics.get(&name).map(|m| m.partitions);
            let results = topic
                .partitions
                .iter()
                .map(|p| {
                    let (code, text) = reassignment_outcome(&name, partitions, node, p);
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(text.map(StrBytes::from_string))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(results)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_error_code(NONE)
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_responses(responses)
}

fn reassignment_outcome(
    topic: &str,
    partitions: Option<i32>,
    node: i32,
    request: &ReassignablePartition,
) -> (i16, Option<String>) {
    let index = request.partition_index;
    let invalid = |text: String| (ResponseError::InvalidReplicaAssignment.code(), Some(text));
    match (partitions, &request.replicas) {
        (None, _) => (
            ResponseError::UnknownTopicOrPartition.code(),
            Some(format!("Unable to find a topic named {topic}.")),
        ),
        (Some(count), _) if index < 0 || index >= count => (
            ResponseError::UnknownTopicOrPartition.code(),
            Some(format!("Unable to find partition {topic}:{index}.")),
        ),
        (Some(_), None) => (
            ResponseError::NoReassignmentInProgress.code(),
            Some("No partition reassignment is in progress.".to_string()),
        ),
        (Some(_), Some(replicas)) if replicas.is_empty() => {
            invalid("The manual partition assignment includes an empty replica list.".into())
        }
        (Some(_), Some(replicas)) => match replicas.iter().find(|b| b.0 != node) {
            Some(other) => invalid(format!(
                "The manual partition assignment includes broker {}, but no such broker is registered.",
                other.0
            )),
            None if replicas.len() > 1 => invalid(
                "The manual partition assignment includes the partition with duplicate broker ids."
                    .into(),
            ),
            // Already exactly there.
            None => (NONE, None),
        },
    }
}

/// AlterReplicaLogDirs: the data directory is the only log directory; a partition asked to
/// stay there is fine, any other path is LOG_DIR_NOT_FOUND.
pub fn alter_log_dirs(
    state: &Arc<BrokerState>,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let data_dir = state.logs.data_dir();
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for dir in request.dirs {
        let here = std::path::Path::new(dir.path.as_str()) == data_dir;
        for topic in dir.topics {
            let partitions = state
                .topics
                .get(topic.name.0.as_str())
                .map(|m| m.partitions);
            let partition_results = topic
                .partitions
                .iter()
                .map(|&index| {
                    let code = match partitions {
                        _ if !here => ResponseError::LogDirNotFound.code(),
                        Some(count) if (0..count).contains(&index) => NONE,
                        _ => ResponseError::UnknownTopicOrPartition.code(),
                    };
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(topic.name)
                    .with_partitions(partition_results),
            );
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}
