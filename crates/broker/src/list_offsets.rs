//! ListOffsets (2): offsets by time, and the special timestamps Kafka defines.
//!
//! | timestamp | meaning | answer |
//! |---|---|---|
//! | -2 | earliest | log start offset |
//! | -1 | latest | high watermark (= log end on one node) |
//! | -3 | max timestamp (KIP-734) | offset of the record with the largest timestamp |
//! | -4 | earliest local (KIP-405) | log start offset (no tiered storage) |
//! | >= 0 | by time | first offset whose timestamp is >= it, or -1 |

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use rill_storage::{Log, TopicPartition};

use crate::error::{storage_error_code, NONE};
use crate::leader_epoch::check_current_epoch;
use crate::state::BrokerState;

const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

pub fn handle(
    state: &BrokerState,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let tp = TopicPartition {
                        topic: topic.name.0.to_string(),
                        partition: p.partition_index,
                    };
                    let mut result = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let log = match state.log(&tp) {
                        Ok(log) => log,
                        Err(code) => {
                            result.error_code = code;
                            return result;
                        }
                    };
                    if version >= 4 {
                        if let Err(code) = check_current_epoch(p.current_leader_epoch, &log) {
                            result.error_code = code;
                            return result;
                        }
                    }
                    match lookup(&log, p.timestamp) {
                        Ok((timestamp, offset)) => {
                            result.error_code = NONE;
                            result.timestamp = timestamp;
                            result.offset = offset;
                            if version >= 4 {
                                result.leader_epoch = log.leader_epoch();
                            }
                        }
                        Err(code) => result.error_code = code,
                    }
                    result
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (timestamp, offset) for one partition; (-1, -1) when no record qualifies.
fn lookup(log: &Log, timestamp: i64) -> Result<(i64, i64), i16> {
    match timestamp {
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok((-1, log.log_start_offset())),
        LATEST_TIMESTAMP => Ok((-1, log.high_watermark())),
        MAX_TIMESTAMP => match log.max_timestamp() {
            Ok(found) => Ok(found.map_or((-1, -1), |found| (found.timestamp, found.offset))),
            Err(e) => Err(storage_error_code(&e)),
        },
        t if t >= 0 => match log.offset_for_timestamp(t) {
            Ok(Some(found)) => Ok((found.timestamp, found.offset)),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(storage_error_code(&e)),
        },
        // Other negative markers (e.g. -5, tiered storage) name nothing that exists here.
        _ => Ok((-1, -1)),
    }
}
