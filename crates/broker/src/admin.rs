//! Topic administration: CreateTopics (19), DeleteTopics (20), CreatePartitions (37),
//! DeleteRecords (21) and DescribeLogDirs (35).
//!
//! Topic changes go through the [`crate::topics::TopicRegistry`] on the blocking pool (they
//! create or remove directories and rewrite the registry file).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rill_storage::TopicPartition;
use uuid::Uuid;

use crate::configs::{CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_DYNAMIC_TOPIC};
use crate::error::{storage_error_code, NONE};
use crate::state::BrokerState;
use crate::topics::{TopicError, TopicMeta};

fn message(text: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(text))
}

/// CreateTopics: validates each topic (name, partitions, replication factor 1, configs) and
/// creates its partition logs; per-topic errors, as Kafka answers them.
pub async fn create_topics(
    state: &Arc<BrokerState>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if duplicates.contains(topic.name.0.as_str()) {
            result.error_code = ResponseError::InvalidRequest.code();
            result.error_message = message("topic named more than once in the request".into());
            results.push(result);
            continue;
        }
        match create_one(state, &topic, request.validate_only).await {
            Ok(meta) => {
                result.error_code = NONE;
                result.topic_id = meta.id;
                result.num_partitions = meta.partitions;
                result.replication_factor = 1;
                if version >= 5 {
                    result.configs = Some(topic_configs(&state.topics.defaults(), &meta));
                }
            }
            Err((code, text)) => {
                result.error_code = code;
                result.error_message = message(text);
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create_one(
    state: &Arc<BrokerState>,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, (i16, String)> {
    if !(topic.replication_factor == -1 || topic.replication_factor == 1) {
        let text = format!(
            "replication factor {} is larger than the 1 available broker",
            topic.replication_factor
        );
        return Err((ResponseError::InvalidReplicationFactor.code(), text));
    }
    let partitions = match (topic.num_partitions, topic.assignments.len()) {
        (-1, 0) => state.config.num_partitions,
        (-1, n) => i32::try_from(n).unwrap_or(i32::MAX),
        (n, 0) => n,
        (_, _) => {
            let text = "give either num_partitions or assignments, not both".to_string();
            return Err((ResponseError::InvalidRequest.code(), text));
        }
    };
    let configs: BTreeMap<String, String> = topic
        .configs
        .iter()
        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
        .collect();
    let name = topic.name.0.to_string();
    state
        .blocking(move |s| {
            s.topics
                .create(&s.logs, &name, partitions, configs, validate_only)
        })
        .await
        .map_err(|e| (e.code(), e.message()))
}

fn topic_configs(
    defaults: &BTreeMap<String, String>,
    meta: &TopicMeta,
) -> Vec<CreatableTopicConfigs> {
    crate::configs::topic_config_values(defaults, &meta.configs)
        .into_iter()
        .map(|c| {
            let source = if c.overridden {
                CONFIG_SOURCE_DYNAMIC_TOPIC
            } else {
                CONFIG_SOURCE_DEFAULT
            };
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(c.def.name))
                .with_value(Some(StrBytes::from_string(c.value)))
                .with_read_only(false)
                .with_config_source(source)
                .with_is_sensitive(false)
        })
        .collect()
}

/// DeleteTopics: by name (v0-v5) or by name or id (v6); removes the logs and wakes any fetch
/// parked on them.
pub async fn delete_topics(
    state: &Arc<BrokerState>,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-v5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let resolved = match &name {
            Some(name) => Some(name.clone()),
            None => state.topics.get_by_id(&id).map(|m| m.name.clone()),
        };
        let mut result = DeletableTopicResult::default()
            .with_name(
                resolved
                    .clone()
                    .map(|n| TopicName(StrBytes::from_string(n))),
            )
            .with_topic_id(id);
        let Some(target) = resolved else {
            result.error_code = ResponseError::UnknownTopicId.code();
            responses.push(result);
            continue;
        };
        let outcome = state
            .blocking(move |s| s.topics.delete(&s.logs, &target))
            .await;
        match outcome {
            Ok(meta) => {
                state.forget_topic(&meta.name);
                result.error_code = NONE;
                result.topic_id = meta.id;
            }
            Err(e) => {
                result.error_code = e.code();
                result.error_message = message(e.message());
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// CreatePartitions: grows a topic; shrinking or keeping the count is INVALID_PARTITIONS.
pub async fn create_partitions(
    state: &Arc<BrokerState>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let count = topic.count;
        let validate_only = request.validate_only;
        let outcome: Result<_, TopicError> = state
            .blocking(move |s| {
                s.topics
                    .add_partitions(&s.logs, &name, count, validate_only)
            })
            .await;
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name);
        match outcome {
            Ok(_) => result.error_code = NONE,
            Err(e) => {
                result.error_code = e.code();
                result.error_message = message(e.message());
            }
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// DeleteRecords: moves each partition's log start offset (-1 = the high watermark).
pub async fn delete_records(
    state: &Arc<BrokerState>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let tp = TopicPartition {
                topic: topic.name.0.to_string(),
                partition: p.partition_index,
            };
            let mut result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match delete_records_one(state, tp, p.offset).await {
                Ok(low_watermark) => {
                    result.error_code = NONE;
                    result.low_watermark = low_watermark;
                }
                Err(code) => result.error_code = code,
            }
            partitions.push(result);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Moves one partition's log start offset; `offset` -1 means the high watermark.
async fn delete_records_one(
    state: &Arc<BrokerState>,
    tp: TopicPartition,
    offset: i64,
) -> Result<i64, i16> {
    let log = state.log(&tp)?;
    // As Kafka: records of a topic whose cleanup.policy lacks `delete` (compact only) cannot
    // be deleted.
    if !log.config().deletes_by_retention() {
        return Err(ResponseError::PolicyViolation.code());
    }
    let offset = if offset == -1 {
        log.high_watermark()
    } else {
        offset
    };
    if offset < 0 || offset > log.high_watermark() {
        return Err(ResponseError::OffsetOutOfRange.code());
    }
    match tokio::task::spawn_blocking(move || log.delete_records(offset)).await {
        Ok(Ok(low_watermark)) => Ok(low_watermark),
        Ok(Err(e)) => {
            tracing::warn!(%tp, error = %e, "delete records failed");
            Err(storage_error_code(&e))
        }
        Err(e) => {
            state.metrics.task_failed("delete records", &e);
            Err(ResponseError::UnknownServerError.code())
        }
    }
}

/// DescribeLogDirs: one log dir (the data directory) with partition sizes and disk space.
pub fn describe_log_dirs(
    state: &BrokerState,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    match request.topics {
        Some(topics) => {
            for topic in topics {
                wanted.insert(topic.topic.0.to_string(), topic.partitions);
            }
        }
        None => {
            for tp in state.logs.partitions() {
                wanted.entry(tp.topic).or_default().push(tp.partition);
            }
        }
    }
    let topics = wanted
        .into_iter()
        .filter_map(|(name, mut partitions)| {
            partitions.sort_unstable();
            let entries: Vec<_> = partitions
                .into_iter()
                .filter_map(|partition| {
                    let tp = TopicPartition {
                        topic: name.clone(),
                        partition,
                    };
                    let log = state.log(&tp).ok()?;
                    let size = i64::try_from(log.size_bytes()).unwrap_or(i64::MAX);
                    Some(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(partition)
                            .with_partition_size(size)
                            .with_offset_lag(0)
                            .with_is_future_key(false),
                    )
                })
                .collect();
            (!entries.is_empty()).then(|| {
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(entries)
            })
        })
        .collect();
    let data_dir = state.logs.data_dir();
    let log_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let (total_bytes, usable_bytes) = match rustix::fs::statvfs(data_dir) {
        Ok(stat) => (
            i64::try_from(stat.f_blocks.saturating_mul(stat.f_frsize)).unwrap_or(i64::MAX),
            i64::try_from(stat.f_bavail.saturating_mul(stat.f_frsize)).unwrap_or(i64::MAX),
        ),
        Err(_) => (-1, -1),
    };
    let result = DescribeLogDirsResult::default()
        .with_error_code(NONE)
        .with_log_dir(StrBytes::from_string(log_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    DescribeLogDirsResponse::default()
        .with_error_code(NONE)
        .with_results(vec![result])
}
