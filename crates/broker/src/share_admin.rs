//! The KIP-932 share group admin APIs on the wire, as Kafka 4.4's `Admin` uses them:
//! DescribeShareGroupOffsets (90, `listShareGroupOffsets`), AlterShareGroupOffsets (91),
//! DeleteShareGroupOffsets (92), DeleteGroups on a share group (`deleteShareGroups`, which
//! also deletes the group's share state), and DeleteShareGroupState (86), which is
//! inter-broker in Kafka but answered by a single node's broker listener, so it is here too.
//!
//! Error codes follow Kafka's group coordinator: altering or deleting offsets needs an
//! existing, empty share group (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP); a topic that does not
//! exist, or a partition outside it, gets UNKNOWN_TOPIC_OR_PARTITION; describing a topic or
//! partition without share state reports start offset -1, not an error. Every change is a
//! snapshot or tombstone in `__share_group_state`, answered once durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self as m, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::coordinator::runtime::{RuntimeError, Written};
use crate::coordinator::share::partition::SharePartition;
use crate::coordinator::share::records::StateKey;
use crate::state::BrokerState;
use crate::topics::is_internal;

/// Start offset reported for a share-partition without state (Kafka's
/// `PartitionFactory.UNINITIALIZED_START_OFFSET`).
const UNINITIALIZED_START_OFFSET: i64 = -1;

/// Rill's tagged fields on a DescribeShareGroupOffsets partition (clients that do not know
/// them skip them, as every flexible-version field): records in flight (between the start
/// offset and the end of the window), how many of them are acquired, and how many records
/// became dead letters since the share-partition was loaded; each an 8-byte big-endian
/// count, present only for a share-partition that is loaded. `rill group describe` shows
/// them.
pub const TAG_IN_FLIGHT: i32 = 10_000;
pub const TAG_ACQUIRED: i32 = 10_001;
pub const TAG_DEAD_LETTERS: i32 = 10_002;

/// Bound on the partitions one admin request may name (each is a state write at most).
const PARTITIONS_MAX: usize = 100_000;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Why a group's share state may not be changed now.
fn group_error(state: &BrokerState, group_id: &str, must_exist: bool) -> Option<(i16, String)> {
    if group_id.is_empty() {
        return Some((
            ResponseError::InvalidGroupId.code(),
            "The group id must not be empty.".into(),
        ));
    }
    if state.groups.list().iter().any(|g| g.id == group_id) {
        return Some((
            ResponseError::GroupIdNotFound.code(),
            format!("Group {group_id} is not a share group."),
        ));
    }
    if must_exist && !state.shares.is_share_group(group_id) {
        return Some((
            ResponseError::GroupIdNotFound.code(),
            format!("Group {group_id} not found."),
        ));
    }
    if state
        .shares
        .group(group_id)
        .is_some_and(|g| !g.members.is_empty())
    {
        return Some((
            ResponseError::NonEmptyGroup.code(),
            format!("Share group {group_id} is not empty."),
        ));
    }
    None
}

/// A topic a share group may have state for: exists and is not internal.
fn user_topic(state: &BrokerState, name: &str) -> Option<Arc<crate::topics::TopicMeta>> {
    state.topics.get(name).filter(|t| !is_internal(&t.name))
}

/// Awaits state writes: 0 once all are durable, else the code of the last failure.
async fn durable(writes: Vec<Written<()>>) -> i16 {
    let mut code = 0;
    for w in writes {
        if let Err(e) = w.committed().await {
            tracing::warn!(error = %e, "share state write failed");
            code = runtime_code(&e);
        }
    }
    code
}

/// Makes share-state writes on the I/O pool (each appends to `__share_group_state`, which may
/// wait for the disk), then waits for them to be durable; the answer's code.
async fn write_durably<F>(state: &Arc<BrokerState>, write: F) -> i16
where
    F: FnOnce(&BrokerState) -> Result<Vec<Written<()>>, RuntimeError> + Send + 'static,
{
    match state.coordinate("share state write", write).await {
        Ok(Ok(writes)) => durable(writes).await,
        Ok(Err(e)) => runtime_code(&e),
        Err(code) => code,
    }
}

fn runtime_code(e: &RuntimeError) -> i16 {
    match e {
        RuntimeError::Storage(s) => crate::error::storage_error_code(s),
        _ => ResponseError::UnknownServerError.code(),
    }
}

/// The start offset of every share-partition of `group_id` with state: the live one where the
/// share-partition is loaded (it may have started at `share.auto.offset.reset` and not been
/// written yet), else the persisted one.
fn start_offsets(state: &BrokerState, group_id: &str) -> BTreeMap<(Uuid, i32), i64> {
    let mut out: BTreeMap<(Uuid, i32), i64> = state
        .shares
        .persisted_of(group_id)
        .into_iter()
        .map(|(k, start)| ((k.topic_id, k.partition), start))
        .collect();
    for (k, sp) in state.shares.live_partitions() {
        if k.group_id == group_id {
            out.insert((k.topic_id, k.partition), sp.lock().start_offset());
        }
    }
    out
}

/// DescribeShareGroupOffsets v0.
pub fn describe_offsets(
    state: &BrokerState,
    r: m::DescribeShareGroupOffsetsRequest,
) -> m::DescribeShareGroupOffsetsResponse {
    use m::describe_share_group_offsets_response as d;
    let groups = r
        .groups
        .into_iter()
        .map(|g| {
            let group_id = g.group_id.0.to_string();
            let starts = start_offsets(state, &group_id);
            let live = crate::share_group_api::in_flight(state, &group_id);
            let partition = |topic: &str, index: i32, start: Option<i64>| {
                let p = d::DescribeShareGroupOffsetsResponsePartition::default()
                    .with_partition_index(index)
                    .with_start_offset(start.unwrap_or(UNINITIALIZED_START_OFFSET))
                    .with_leader_epoch(0);
                match live.get(&(topic.to_string(), index)) {
                    Some(&(_, in_flight, acquired, dead)) => {
                        let count = |n: u64| bytes::Bytes::copy_from_slice(&n.to_be_bytes());
                        p.with_unknown_tagged_fields(
                            [
                                (TAG_IN_FLIGHT, count(in_flight as u64)),
                                (TAG_ACQUIRED, count(acquired as u64)),
                                (TAG_DEAD_LETTERS, count(dead)),
                            ]
                            .into(),
                        )
                    }
                    None => p,
                }
            };
            let topics = match g.topics {
                // Every topic the group has state for.
                None => {
                    let mut by_topic: BTreeMap<Uuid, Vec<(i32, i64)>> = BTreeMap::new();
                    for ((id, p), start) in &starts {
                        by_topic.entry(*id).or_default().push((*p, *start));
                    }
                    by_topic
                        .into_iter()
                        .filter_map(|(id, parts)| {
                            let topic = state.topics.get_by_id(&id)?;
                            Some(
                                d::DescribeShareGroupOffsetsResponseTopic::default()
                                    .with_topic_name(TopicName(s(topic.name.clone())))
                                    .with_topic_id(id)
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, start)| {
                                                partition(&topic.name, p, Some(start))
                                            })
                                            .collect(),
                                    ),
                            )
                        })
                        .collect()
                }
                Some(topics) => topics
                    .into_iter()
                    .map(|t| {
                        let found = user_topic(state, &t.topic_name.0);
                        let id = found.as_ref().map_or(Uuid::nil(), |t| t.id);
                        let partitions = t
                            .partitions
                            .iter()
                            .map(|&p| {
                                let start =
                                    found.as_ref().and_then(|_| starts.get(&(id, p)).copied());
                                partition(&t.topic_name.0, p, start)
                            })
                            .collect();
                        d::DescribeShareGroupOffsetsResponseTopic::default()
                            .with_topic_name(t.topic_name)
                            .with_topic_id(id)
                            .with_partitions(partitions)
                    })
                    .collect(),
            };
            d::DescribeShareGroupOffsetsResponseGroup::default()
                .with_group_id(g.group_id)
                .with_topics(topics)
        })
        .collect();
    m::DescribeShareGroupOffsetsResponse::default().with_groups(groups)
}

/// Sets a share-partition's start offset, dropping its in-flight state, and writes it.
fn reset_partition(
    state: &BrokerState,
    key: &StateKey,
    start_offset: i64,
) -> Result<Written<()>, RuntimeError> {
    let sp = state.shares.partition(key, || start_offset);
    let mut sp = sp.lock();
    let next = SharePartition::new(start_offset);
    let written = state.shares.persist(key, Some(&next))?;
    *sp = next;
    Ok(written)
}

/// AlterShareGroupOffsets v0: sets start offsets of an empty (or new) share group.
pub async fn alter_offsets(
    state: &Arc<BrokerState>,
    r: m::AlterShareGroupOffsetsRequest,
) -> m::AlterShareGroupOffsetsResponse {
    use m::alter_share_group_offsets_response as a;
    let group_id = r.group_id.0.to_string();
    let count: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
    if count > PARTITIONS_MAX {
        return m::AlterShareGroupOffsetsResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(s("too many partitions")));
    }
    if let Some((code, message)) = group_error(state, &group_id, false) {
        return m::AlterShareGroupOffsetsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message)));
    }
    // A new group is created by this call (Kafka records it at group epoch 1).
    let epoch = state
        .shares
        .group(&group_id)
        .map_or(1, |g| g.group_epoch.max(1));
    let group = group_id.clone();
    let recorded = write_durably(state, move |state| {
        Ok(state
            .shares
            .record_group(&group, epoch)?
            .into_iter()
            .collect())
    })
    .await;
    if recorded != 0 {
        return m::AlterShareGroupOffsetsResponse::default()
            .with_error_code(recorded)
            .with_error_message(message_of(recorded));
    }
    // (topic index, partition index, code, write); the writes append, so on the I/O pool.
    let wanted: Vec<(usize, usize, String, i32, i64)> = r
        .topics
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            t.partitions.iter().enumerate().map(move |(pi, p)| {
                let name = t.topic_name.0.to_string();
                (ti, pi, name, p.partition_index, p.start_offset)
            })
        })
        .collect();
    let group = group_id.clone();
    let results = state
        .coordinate("share offsets reset", move |state| {
            let mut results: Vec<(usize, usize, i16, Option<Written<()>>)> = Vec::new();
            for (ti, pi, name, partition, start_offset) in wanted {
                let outcome = match user_topic(state, &name) {
                    Some(topic) if (0..topic.partitions).contains(&partition) => {
                        if start_offset < 0 {
                            Err(ResponseError::InvalidRequest.code())
                        } else {
                            let key = StateKey {
                                group_id: group.clone(),
                                topic_id: topic.id,
                                partition,
                            };
                            reset_partition(state, &key, start_offset).map_err(|e| runtime_code(&e))
                        }
                    }
                    _ => Err(ResponseError::UnknownTopicOrPartition.code()),
                };
                match outcome {
                    Ok(w) => results.push((ti, pi, 0, Some(w))),
                    Err(code) => results.push((ti, pi, code, None)),
                }
            }
            results
        })
        .await;
    let results = match results {
        Ok(results) => results,
        Err(code) => {
            return m::AlterShareGroupOffsetsResponse::default()
                .with_error_code(code)
                .with_error_message(message_of(code))
        }
    };
    let mut codes: BTreeMap<(usize, usize), i16> = BTreeMap::new();
    for (ti, pi, code, w) in results {
        let code = match w {
            Some(w) => durable(vec![w]).await,
            None => code,
        };
        codes.insert((ti, pi), code);
    }
    let responses = r
        .topics
        .into_iter()
        .enumerate()
        .map(|(ti, t)| {
            let id = user_topic(state, &t.topic_name.0).map_or(Uuid::nil(), |t| t.id);
            a::AlterShareGroupOffsetsResponseTopic::default()
                .with_topic_name(t.topic_name)
                .with_topic_id(id)
                .with_partitions(
                    t.partitions
                        .iter()
                        .enumerate()
                        .map(|(pi, p)| {
                            let code = codes.get(&(ti, pi)).copied().unwrap_or(0);
                            a::AlterShareGroupOffsetsResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                                .with_error_message(message_of(code))
                        })
                        .collect(),
                )
        })
        .collect();
    m::AlterShareGroupOffsetsResponse::default().with_responses(responses)
}

fn message_of(code: i16) -> Option<StrBytes> {
    (code != 0).then(|| {
        let text = ResponseError::try_from_code(code)
            .map_or_else(|| format!("error {code}"), |e| e.to_string());
        s(text)
    })
}

/// Deletes the state of share-partitions (tombstones) and forgets their live state.
fn delete_keys(state: &BrokerState, keys: &[StateKey]) -> Result<Vec<Written<()>>, RuntimeError> {
    let mut writes = Vec::with_capacity(keys.len());
    for key in keys {
        writes.push(state.shares.persist(key, None)?);
        state.shares.forget(key);
    }
    Ok(writes)
}

/// The share-partitions of `group_id` with state, by topic id.
fn keys_by_topic(state: &BrokerState, group_id: &str) -> BTreeMap<Uuid, Vec<StateKey>> {
    let mut out: BTreeMap<Uuid, Vec<StateKey>> = BTreeMap::new();
    for (topic_id, partition) in start_offsets(state, group_id).into_keys() {
        out.entry(topic_id).or_default().push(StateKey {
            group_id: group_id.to_string(),
            topic_id,
            partition,
        });
    }
    out
}

/// DeleteShareGroupOffsets v0: deletes the state of whole topics of an empty share group.
pub async fn delete_offsets(
    state: &Arc<BrokerState>,
    r: m::DeleteShareGroupOffsetsRequest,
) -> m::DeleteShareGroupOffsetsResponse {
    use m::delete_share_group_offsets_response as d;
    let group_id = r.group_id.0.to_string();
    if let Some((code, message)) = group_error(state, &group_id, true) {
        return m::DeleteShareGroupOffsetsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message)));
    }
    let mut by_topic = keys_by_topic(state, &group_id);
    let mut responses = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let topic = user_topic(state, &t.topic_name.0);
        let keys = topic.as_ref().and_then(|t| by_topic.remove(&t.id));
        let code = match keys {
            None => ResponseError::UnknownTopicOrPartition.code(),
            Some(keys) => write_durably(state, move |state| delete_keys(state, &keys)).await,
        };
        responses.push(
            d::DeleteShareGroupOffsetsResponseTopic::default()
                .with_topic_name(t.topic_name)
                .with_topic_id(topic.map_or(Uuid::nil(), |t| t.id))
                .with_error_code(code)
                .with_error_message(message_of(code)),
        );
    }
    m::DeleteShareGroupOffsetsResponse::default().with_responses(responses)
}

/// DeleteGroups on a share group: NON_EMPTY_GROUP while it has members, else its share
/// state and its record are deleted with it. Returns the group's code.
pub async fn delete_group(state: &Arc<BrokerState>, group_id: &str) -> i16 {
    if let Some((code, _)) = group_error(state, group_id, true) {
        return code;
    }
    let keys: Vec<StateKey> = keys_by_topic(state, group_id)
        .into_values()
        .flatten()
        .collect();
    let code = write_durably(state, move |state| delete_keys(state, &keys)).await;
    if code != 0 {
        return code;
    }
    let group = group_id.to_string();
    let code = write_durably(state, move |state| {
        Ok(state.shares.unrecord_group(&group)?.into_iter().collect())
    })
    .await;
    if code == 0 {
        state.shares.remove_group(group_id);
    }
    code
}

/// DeleteShareGroupState v0 (inter-broker in Kafka; a single node answers it on its one
/// listener): deletes the named share-partitions' state. A share-partition without state
/// is already deleted (NONE).
pub async fn delete_state(
    state: &Arc<BrokerState>,
    r: m::DeleteShareGroupStateRequest,
) -> m::DeleteShareGroupStateResponse {
    use m::delete_share_group_state_response as d;
    let group_id = r.group_id.to_string();
    let count: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
    let refuse = if group_id.is_empty() {
        Some(ResponseError::InvalidGroupId.code())
    } else if count > PARTITIONS_MAX {
        Some(ResponseError::InvalidRequest.code())
    } else if state
        .shares
        .group(&group_id)
        .is_some_and(|g| !g.members.is_empty())
    {
        Some(ResponseError::NonEmptyGroup.code())
    } else {
        None
    };
    let mut results = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let code = match refuse {
                Some(code) => code,
                None => {
                    let key = StateKey {
                        group_id: group_id.clone(),
                        topic_id: t.topic_id,
                        partition: p.partition,
                    };
                    write_durably(state, move |state| delete_keys(state, &[key])).await
                }
            };
            partitions.push(
                d::PartitionResult::default()
                    .with_partition(p.partition)
                    .with_error_code(code)
                    .with_error_message(message_of(code)),
            );
        }
        results.push(
            d::DeleteStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    m::DeleteShareGroupStateResponse::default().with_results(results)
}
