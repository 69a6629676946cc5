//! DescribeTopicPartitions (75): the paged topic description that Kafka 3.7+ `Admin.describeTopics`
//! and `kafka-topics.sh --describe` use instead of Metadata.
//!
//! Semantics follow Kafka's handler: an empty topic list means every topic; topics are answered
//! in name order from the cursor's topic (its partitions from the cursor's index); at most
//! `response_partition_limit` partitions (clamped to 1..=[`MAX_PARTITIONS_PER_RESPONSE`]) go in
//! one response, and `next_cursor` says where the next page starts. A requested topic that does
//! not exist gets UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an illegal name); a
//! cursor naming a topic outside the requested list, or a negative partition index, is
//! INVALID_REQUEST for every requested topic.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::authorizer::ResourceType;
use crate::error::NONE;
use crate::state::BrokerState;
use crate::topics::TopicMeta;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response holds.
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

/// Answers one DescribeTopicPartitions request.
pub fn handle(
    state: &Arc<BrokerState>,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let requested: Vec<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    let cursor = request
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let all_topics = requested.is_empty();
    let cursor_topic = cursor.as_ref().map_or("", |(name, _)| name.as_str());
    // Names at or after the cursor's topic, sorted and without repeats.
    let names: BTreeSet<String> = if all_topics {
        state.topics.all().iter().map(|m| m.name.clone()).collect()
    } else {
        requested.iter().cloned().collect()
    };
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| n.as_str() >= cursor_topic)
        .collect();
    if let Some((topic, index)) = &cursor {
        if *index < 0 || (!all_topics && !names.contains(topic)) {
            return error_response(&requested, ResponseError::InvalidRequest.code());
        }
    }
    let limit = request
        .response_partition_limit
        .clamp(1, MAX_PARTITIONS_PER_RESPONSE);
    let mut response = page(state, &names, cursor.as_ref(), limit, all_topics);
    for topic in &mut response.topics {
        let name = topic.name.as_ref().map_or("", |n| n.0.as_str());
        topic.topic_authorized_operations = state.authorized_operations(ResourceType::Topic, name);
    }
    response
}

/// Fills one page: topics in order until `limit` partitions are in it.
fn page(
    state: &BrokerState,
    names: &[String],
    cursor: Option<&(String, i32)>,
    limit: i32,
    all_topics: bool,
) -> DescribeTopicPartitionsResponse {
    let mut response = DescribeTopicPartitionsResponse::default();
    let mut remaining = limit;
    for name in names {
        if remaining == 0 {
            // The previous topics filled the page exactly: the next one starts the next page.
            response.next_cursor = Some(next_cursor(name, 0));
            break;
        }
        let Some(meta) = state.topics.get(name) else {
            if !all_topics {
                response.topics.push(missing_topic(name));
            }
            continue;
        };
        let first = match cursor {
            Some((topic, index)) if topic == name => *index,
            _ => 0,
        };
        let end = meta.partitions.min(first.saturating_add(remaining));
        response.topics.push(topic_entry(state, &meta, first, end));
        if end < meta.partitions {
            response.next_cursor = Some(next_cursor(name, end));
            break;
        }
        remaining -= (end - first).max(0);
    }
    response
}

fn next_cursor(topic: &str, partition_index: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_index(partition_index)
}

fn topic_entry(
    state: &BrokerState,
    meta: &TopicMeta,
    first: i32,
    end: i32,
) -> DescribeTopicPartitionsResponseTopic {
    let node = BrokerId(state.config.node_id);
    let partitions = (first..end)
        .map(|partition| {
            DescribeTopicPartitionsResponsePartition::default()
                .with_error_code(NONE)
                .with_partition_index(partition)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(Vec::new())
        })
        .collect();
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(StrBytes::from_string(meta.name.clone()))))
        .with_topic_id(meta.id)
        .with_is_internal(crate::topics::is_internal(&meta.name))
        .with_partitions(partitions)
}

fn missing_topic(name: &str) -> DescribeTopicPartitionsResponseTopic {
    let code = match crate::topics::validate_name(name) {
        Ok(()) => ResponseError::UnknownTopicOrPartition.code(),
        Err(_) => ResponseError::InvalidTopicException.code(),
    };
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(code)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(Uuid::nil())
        .with_is_internal(crate::topics::is_internal(name))
}

/// The whole request refused: each requested topic carries `code` (Kafka's
/// `getErrorResponse`).
fn error_response(requested: &[String], code: i16) -> DescribeTopicPartitionsResponse {
    let topics = requested
        .iter()
        .map(|name| {
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(code)
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                .with_topic_authorized_operations(i32::MIN)
        })
        .collect();
    DescribeTopicPartitionsResponse::default().with_topics(topics)
}
