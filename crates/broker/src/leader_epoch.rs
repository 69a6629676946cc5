//! OffsetForLeaderEpoch (23): where a leader epoch ends, used by consumers to detect log
//! truncation after a leader change.
//!
//! A single node never changes leader, so there is one epoch, [`rill_storage::Log::leader_epoch`],
//! and it ends at the log end offset. Asking about a newer epoch than ours gets the
//! "undefined" answer (epoch -1, offset -1), as Kafka gives.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use rill_storage::{Log, TopicPartition};

use crate::error::NONE;
use crate::state::BrokerState;

/// Checks a request's `current_leader_epoch` against ours (KIP-320): -1 skips the check.
///
/// # Errors
/// FENCED_LEADER_EPOCH when the client's epoch is older, UNKNOWN_LEADER_EPOCH when newer.
pub fn check_current_epoch(requested: i32, log: &Log) -> Result<(), i16> {
    let ours = log.leader_epoch();
    if requested < 0 || requested == ours {
        Ok(())
    } else if requested < ours {
        Err(ResponseError::FencedLeaderEpoch.code())
    } else {
        Err(ResponseError::UnknownLeaderEpoch.code())
    }
}

/// Answers every partition: the current epoch's end offset, or the error for it.
pub fn handle(
    state: &BrokerState,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let tp = TopicPartition {
                        topic: topic.topic.0.to_string(),
                        partition: p.partition,
                    };
                    let mut result = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let log = match state.log(&tp) {
                        Ok(log) => log,
                        Err(code) => {
                            result.error_code = code;
                            return result;
                        }
                    };
                    if let Err(code) = check_current_epoch(p.current_leader_epoch, &log) {
                        result.error_code = code;
                        return result;
                    }
                    result.error_code = NONE;
                    if p.leader_epoch <= log.leader_epoch() {
                        result.leader_epoch = log.leader_epoch();
                        result.end_offset = log.log_end_offset();
                    }
                    result
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
