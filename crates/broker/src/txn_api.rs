//! The transaction APIs: AddPartitionsToTxn (24), AddOffsetsToTxn (25), EndTxn (26),
//! DescribeTransactions (65), ListTransactions (66) and DescribeProducers (61). Each decodes
//! its request, asks the transaction coordinator (`coordinator::txn`) or the partitions, and
//! shapes the answer; the rules live in the coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self as m, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use rill_storage::TopicPartition;

use crate::coordinator::txn::coordinator::TxnError;
use crate::coordinator::txn::state::TxnState;
use crate::error::NONE;
use crate::state::BrokerState;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn code_of(result: &Result<(), TxnError>) -> i16 {
    result.as_ref().err().map_or(NONE, TxnError::code)
}

/// PRODUCER_FENCED exists from KIP-588's request versions on; older clients are answered
/// INVALID_PRODUCER_EPOCH, as Kafka does (an older client does not know code 90).
pub fn fenced_code(code: i16, version: i16, first_version_with_fenced: i16) -> i16 {
    if code == ResponseError::ProducerFenced.code() && version < first_version_with_fenced {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        code
    }
}

/// Partitions of a request that do not exist (UNKNOWN_TOPIC_OR_PARTITION), checked before the
/// coordinator sees any: Kafka refuses the whole request then, answering
/// OPERATION_NOT_ATTEMPTED for the partitions that do exist.
fn missing_partitions(state: &BrokerState, partitions: &[(String, i32)]) -> Vec<(String, i32)> {
    partitions
        .iter()
        .filter(|(topic, p)| !state.partition_exists(topic, *p))
        .cloned()
        .collect()
}

fn topic_results(
    partitions: &[(String, i32)],
    code_for: impl Fn(&(String, i32)) -> i16,
) -> Vec<m::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    let mut by_topic: BTreeMap<
        &str,
        Vec<m::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult>,
    > = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(tp.0.as_str()).or_default().push(
            m::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(tp.1)
                .with_partition_error_code(code_for(tp)),
        );
    }
    by_topic
        .into_iter()
        .map(|(topic, results)| {
            m::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(s(topic)))
                .with_results_by_partition(results)
        })
        .collect()
}

fn flatten(
    topics: &[m::add_partitions_to_txn_request::AddPartitionsToTxnTopic],
) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.name.0.to_string(), p)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Adds (or, `verify_only`, checks) one transaction's partitions; per-partition results.
async fn add_one(
    state: &Arc<BrokerState>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    partitions: &[(String, i32)],
) -> Vec<m::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    let missing = missing_partitions(state, partitions);
    if !missing.is_empty() {
        return topic_results(partitions, |tp| {
            if missing.contains(tp) {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::OperationNotAttempted.code()
            }
        });
    }
    if verify_only {
        return topic_results(partitions, |tp| {
            state
                .txns
                .verify(transactional_id, producer_id, epoch, tp)
                .err()
                .map_or(NONE, |e| e.code())
        });
    }
    let result = state
        .txns
        .add_partitions(transactional_id, producer_id, epoch, partitions)
        .await;
    let code = code_of(&result);
    topic_results(partitions, |_| code)
}

pub async fn add_partitions_to_txn(
    state: &Arc<BrokerState>,
    version: i16,
    r: m::AddPartitionsToTxnRequest,
) -> m::AddPartitionsToTxnResponse {
    if version <= 3 {
        let partitions = flatten(&r.v3_and_below_topics);
        let results = add_one(
            state,
            &r.v3_and_below_transactional_id.0,
            r.v3_and_below_producer_id.0,
            r.v3_and_below_producer_epoch,
            false,
            &partitions,
        )
        .await;
        let results = results
            .into_iter()
            .map(|mut t| {
                for p in &mut t.results_by_partition {
                    p.partition_error_code = fenced_code(p.partition_error_code, version, 2);
                }
                t
            })
            .collect();
        return m::AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(results);
    }
    // v4+: batched, as brokers send them (KIP-890 verification).
    let mut results = Vec::with_capacity(r.transactions.len());
    for t in &r.transactions {
        let partitions = flatten(&t.topics);
        let topic_results = add_one(
            state,
            &t.transactional_id.0,
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &partitions,
        )
        .await;
        results.push(
            m::add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    m::AddPartitionsToTxnResponse::default()
        .with_error_code(NONE)
        .with_results_by_transaction(results)
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction, so its
/// TxnOffsetCommit is committed or aborted with it.
pub async fn add_offsets_to_txn(
    state: &Arc<BrokerState>,
    version: i16,
    r: m::AddOffsetsToTxnRequest,
) -> m::AddOffsetsToTxnResponse {
    let group = r.group_id.0.as_str();
    if crate::coordinator::group::GroupCoordinator::validate_group_id(group).is_err() {
        return m::AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code());
    }
    let offsets_partitions = state
        .topics
        .get(crate::coordinator::group::TOPIC)
        .map_or(1, |meta| meta.partitions);
    let partition = (
        crate::coordinator::group::TOPIC.to_string(),
        crate::coordinator::runtime::partition_for(group, offsets_partitions),
    );
    let result = state
        .txns
        .add_partitions(
            &r.transactional_id.0,
            r.producer_id.0,
            r.producer_epoch,
            &[partition],
        )
        .await;
    m::AddOffsetsToTxnResponse::default().with_error_code(fenced_code(code_of(&result), version, 2))
}

pub async fn end_txn(
    state: &Arc<BrokerState>,
    version: i16,
    r: m::EndTxnRequest,
) -> m::EndTxnResponse {
    // v5 is a transactions-v2 client: its epoch is bumped at every end, and the answer says
    // which producer id and epoch to continue with.
    let result = state
        .txns
        .end_txn(
            &r.transactional_id.0,
            r.producer_id.0,
            r.producer_epoch,
            r.committed,
            version >= 5,
        )
        .await;
    match result {
        Ok((producer_id, epoch)) => m::EndTxnResponse::default()
            .with_error_code(NONE)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => m::EndTxnResponse::default()
            .with_error_code(fenced_code(e.code(), version, 2))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

pub fn describe_transactions(
    state: &BrokerState,
    r: m::DescribeTransactionsRequest,
) -> m::DescribeTransactionsResponse {
    let states = r
        .transactional_ids
        .iter()
        .map(|id| {
            let out = m::describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone());
            match state.txns.describe(id) {
                Err(e) => out
                    .with_error_code(e.code())
                    .with_transaction_state(s(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
                Ok(t) => {
                    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    for (topic, p) in &t.partitions {
                        topics.entry(topic.as_str()).or_default().push(*p);
                    }
                    out.with_error_code(NONE)
                        .with_transaction_state(s(t.state.name()))
                        .with_transaction_timeout_ms(t.timeout_ms)
                        .with_transaction_start_time_ms(if t.state == TxnState::Empty {
                            -1
                        } else {
                            t.start_ms
                        })
                        .with_producer_id(ProducerId(t.producer_id))
                        .with_producer_epoch(t.producer_epoch)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(topic, partitions)| {
                                    m::describe_transactions_response::TopicData::default()
                                        .with_topic(TopicName(s(topic)))
                                        .with_partitions(partitions)
                                })
                                .collect(),
                        )
                }
            }
        })
        .collect();
    m::DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// Every state name a filter may use.
const STATE_NAMES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

pub fn list_transactions(
    state: &BrokerState,
    version: i16,
    r: m::ListTransactionsRequest,
) -> m::ListTransactionsResponse {
    let unknown: Vec<StrBytes> = r
        .state_filters
        .iter()
        .filter(|f| !STATE_NAMES.iter().any(|st| st.name() == f.as_str()))
        .cloned()
        .collect();
    let now = crate::coordinator::group::now_ms();
    // v1+: only transactions running longer than this (-1: no filter).
    let min_duration = if version >= 1 { r.duration_filter } else { -1 };
    let listed = state
        .txns
        .list()
        .into_iter()
        .filter(|t| {
            r.state_filters.is_empty()
                || r.state_filters.iter().any(|f| f.as_str() == t.state.name())
        })
        .filter(|t| {
            r.producer_id_filters.is_empty()
                || r.producer_id_filters.contains(&ProducerId(t.producer_id))
        })
        .filter(|t| {
            min_duration < 0
                || (t.state == TxnState::Ongoing && now.saturating_sub(t.start_ms) >= min_duration)
        })
        .map(|t| {
            m::list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(s(t.transactional_id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(s(t.state.name()))
        })
        .collect();
    m::ListTransactionsResponse::default()
        .with_error_code(NONE)
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}

/// DescribeProducers: the producer state of each asked partition.
pub fn describe_producers(
    state: &BrokerState,
    r: m::DescribeProducersRequest,
) -> m::DescribeProducersResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let out = m::describe_producers_response::PartitionResponse::default()
                        .with_partition_index(p);
                    let tp = TopicPartition::new(t.name.0.to_string(), p);
                    match state.log(&tp) {
                        Err(code) => out.with_error_code(code),
                        Ok(log) => out.with_error_code(NONE).with_active_producers(
                            log.producer_states()
                                .into_iter()
                                .map(|e| {
                                    m::describe_producers_response::ProducerState::default()
                                        .with_producer_id(ProducerId(e.producer_id))
                                        .with_producer_epoch(i32::from(e.producer_epoch))
                                        .with_last_sequence(e.last_seq())
                                        .with_last_timestamp(e.last_timestamp_ms)
                                        .with_coordinator_epoch(e.coordinator_epoch)
                                        .with_current_txn_start_offset(
                                            e.current_txn_first_offset.unwrap_or(-1),
                                        )
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            m::describe_producers_response::TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    m::DescribeProducersResponse::default().with_topics(topics)
}
