//! TxnOffsetCommit (key 28) on the wire: a transactional producer commits a consumer group's
//! offsets inside its transaction (consume-transform-produce). The group coordinator writes
//! them in a transactional batch of the producer; they become the group's committed offsets
//! only when the transaction's commit marker reaches `__consumer_offsets`
//! (`coordinator::group`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self as m, TopicName};
use rill_storage::TopicPartition;

use crate::coordinator::group::{self, CommitEntry, TxnMember};
use crate::state::BrokerState;

pub async fn txn_offset_commit(
    state: &Arc<BrokerState>,
    version: i16,
    r: m::TxnOffsetCommitRequest,
) -> m::TxnOffsetCommitResponse {
    let mut shape: Vec<(TopicName, Vec<i32>)> = Vec::new();
    let mut entries = Vec::new();
    for t in &r.topics {
        shape.push((
            t.name.clone(),
            t.partitions.iter().map(|p| p.partition_index).collect(),
        ));
        for p in &t.partitions {
            entries.push(CommitEntry {
                tp: TopicPartition::new(t.name.to_string(), p.partition_index),
                offset: p.committed_offset,
                // Versions before 2 carry none: the decoder's default is -1.
                leader_epoch: p.committed_leader_epoch,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            });
        }
    }
    let n = entries.len();
    // A transactional batch needs a producer: without one nothing could ever end it.
    let codes = if r.producer_id.0 < 0 || r.producer_epoch < 0 {
        vec![ResponseError::InvalidProducerIdMapping.code(); n]
    } else {
        // The group's offsets partition must be in the producer's ongoing transaction
        // (AddOffsetsToTxn), or the offsets could never be committed or aborted. A
        // transactions-v2 client (v5) does not add it: the broker does, as Kafka (KIP-890).
        let offsets_partition = (
            group::TOPIC.to_string(),
            state.groups.partition_for(&r.group_id),
        );
        let added = if version >= 5 {
            state
                .txns
                .add_partitions(
                    &r.transactional_id,
                    r.producer_id.0,
                    r.producer_epoch,
                    std::slice::from_ref(&offsets_partition),
                )
                .await
                .map_err(|e| e.code())
        } else {
            Ok(())
        };
        // On the I/O pool: the offsets are appended to `__consumer_offsets` there.
        let committed = state
            .coordinate("txn offset commit", move |state| {
                let member = TxnMember {
                    generation_id: r.generation_id,
                    member_id: &r.member_id,
                    group_instance_id: r.group_instance_id.as_deref(),
                };
                let topic_exists =
                    |tp: &TopicPartition| state.partition_exists(&tp.topic, tp.partition);
                state.groups.commit_transactional(
                    &r.group_id,
                    r.producer_id.0,
                    r.producer_epoch,
                    &member,
                    entries,
                    topic_exists,
                    || {
                        added?;
                        state
                            .txns
                            .verify(
                                &r.transactional_id,
                                r.producer_id.0,
                                r.producer_epoch,
                                &offsets_partition,
                            )
                            .map_err(|e| match e {
                                ResponseError::InvalidProducerEpoch => {
                                    ResponseError::ProducerFenced.code()
                                }
                                e => e.code(),
                            })
                    },
                )
            })
            .await;
        let (mut codes, pending) = committed.unwrap_or_else(|e| (vec![e; n], None));
        if let Err(e) = group::durable(pending).await {
            codes.iter_mut().filter(|c| **c == 0).for_each(|c| *c = e);
        }
        codes
    };
    let mut codes = codes
        .into_iter()
        .map(|c| crate::txn_api::fenced_code(c, version, 3));
    m::TxnOffsetCommitResponse::default().with_topics(
        shape
            .into_iter()
            .map(|(name, partitions)| {
                m::txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                m::txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(codes.next().unwrap_or(0))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
