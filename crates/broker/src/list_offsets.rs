//! ListOffsets (2): offsets by time, and the special timestamps Kafka defines.
//!
//! | timestamp | meaning | answer |
//! |---|---|---|
//! | -2 | earliest | log start offset |
//! | -1 | latest | high watermark (= log end on one node) |
//! | -3 | max timestamp (KIP-734) | offset of the record with the largest timestamp |
//! | -4 | earliest local (KIP-405) | log start offset (no tiered storage) |
//! | >= 0 | by time | first offset whose timestamp is >= it, or -1 |
//!
//! Storage answers exactly for uncompressed batches but, having no codecs, only to the batch
//! for compressed ones; [`refine_in_compressed_batch`] decompresses that one batch to find
//! the record, as Kafka does.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use rill_storage::{Log, TimestampOffset, TopicPartition};

use crate::error::{storage_error_code, NONE};
use crate::leader_epoch::check_current_epoch;
use crate::state::BrokerState;

const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

/// Answers every partition of the request; unknown ones get UNKNOWN_TOPIC_OR_PARTITION.
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

/// (timestamp, offset) for one partition; (-1, -1) when no record qualifies. As Kafka, an
/// offset at or past the high watermark is not shown (under durable visibility: not yet
/// durable).
fn lookup(log: &Log, timestamp: i64) -> Result<(i64, i64), i16> {
    let high_watermark = log.high_watermark();
    let found = lookup_any(log, timestamp)?;
    if (timestamp >= 0 || timestamp == MAX_TIMESTAMP) && found.1 >= high_watermark {
        return Ok((-1, -1));
    }
    Ok(found)
}

fn lookup_any(log: &Log, timestamp: i64) -> Result<(i64, i64), i16> {
    match timestamp {
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok((-1, log.log_start_offset())),
        LATEST_TIMESTAMP => Ok((-1, log.high_watermark())),
        MAX_TIMESTAMP => match log.max_timestamp() {
            Ok(Some(found)) => Ok(refine_in_compressed_batch(log, found.timestamp, found)),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(storage_error_code(&e)),
        },
        t if t >= 0 => match log.offset_for_timestamp(t) {
            Ok(Some(found)) => Ok(refine_in_compressed_batch(log, t, found)),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(storage_error_code(&e)),
        },
        // Other negative markers (e.g. -5, tiered storage) name nothing that exists here.
        _ => Ok((-1, -1)),
    }
}

/// Byte offset of the attributes field in a v2 batch header, and the codec bits in it.
const ATTRIBUTES_OFFSET: usize = 21;
const COMPRESSION_MASK: i16 = 0x7;

/// When `found` points into a compressed batch, decompresses that batch and returns the first
/// record at or after `found.offset` whose timestamp is >= `timestamp`. Falls back to `found`
/// if the batch cannot be read or decoded (the answer is then batch-granular, as before).
fn refine_in_compressed_batch(log: &Log, timestamp: i64, found: TimestampOffset) -> (i64, i64) {
    let fallback = (found.timestamp, found.offset);
    // max_bytes 1 with storage's min-one-batch read: exactly the batch holding the offset.
    let Ok(bytes) = log.read_bytes(found.offset, 1) else {
        return fallback;
    };
    let Some(attributes) = bytes.get(ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2) else {
        return fallback;
    };
    if i16::from_be_bytes([attributes[0], attributes[1]]) & COMPRESSION_MASK == 0 {
        return fallback;
    }
    let mut buf = Bytes::from(bytes);
    match RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| r.offset >= found.offset && r.timestamp >= timestamp)
            .map_or(fallback, |r| (r.timestamp, r.offset)),
        Err(e) => {
            tracing::warn!(error = %e, offset = found.offset, "cannot decode stored batch");
            fallback
        }
    }
}
