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
//! Storage answers exactly for uncompressed batches but only to the batch for compressed ones;
//! [`refine_in_compressed_batch`] decompresses that one batch to find the record, as Kafka
//! does, in a streaming pass bounded by `rill.decompressed.batch.max.bytes`, on the blocking
//! pool.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use rill_storage::batch::BatchHeader;
use rill_storage::records::{ReaderBuffers, RecordReader};
use rill_storage::{Log, TimestampOffset, TopicPartition};

use crate::error::{storage_error_code, NONE};
use crate::leader_epoch::check_current_epoch;
use crate::state::BrokerState;

const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

/// Answers every partition of the request; unknown ones get UNKNOWN_TOPIC_OR_PARTITION.
/// Runs on the broker's I/O pool: index lookups read the disk and the answer may decompress a
/// batch.
pub async fn handle(
    state: &Arc<BrokerState>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let shape = request.clone();
    let answering = Arc::clone(state);
    let answered = state
        .io_pool
        .run(move || answer(&answering, version, request))
        .await;
    match answered {
        Ok(response) => response,
        Err(e) => {
            state.metrics.io_job_failed("list offsets", &e);
            failed(shape)
        }
    }
}

/// Every partition of `request` answered UNKNOWN_SERVER_ERROR.
fn failed(request: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(ResponseError::UnknownServerError.code())
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1)
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn answer(state: &BrokerState, version: i16, request: ListOffsetsRequest) -> ListOffsetsResponse {
    // v2+: read_committed clients see offsets up to the last stable offset only.
    let read_committed = version >= 2 && request.isolation_level == 1;
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
                    let bound = state.config.decompressed_batch_max_bytes;
                    match lookup(&log, p.timestamp, read_committed, bound) {
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
/// offset at or past the last fetchable offset is not shown: the high watermark (under
/// durable visibility: not yet durable), or for read_committed the last stable offset.
fn lookup(
    log: &Log,
    timestamp: i64,
    read_committed: bool,
    max_decompressed_bytes: u64,
) -> Result<(i64, i64), i16> {
    let fetchable = if read_committed {
        log.last_stable_offset()
    } else {
        log.high_watermark()
    };
    let found = lookup_any(log, timestamp, fetchable, max_decompressed_bytes)?;
    if (timestamp >= 0 || timestamp == MAX_TIMESTAMP) && found.1 >= fetchable {
        return Ok((-1, -1));
    }
    Ok(found)
}

fn lookup_any(
    log: &Log,
    timestamp: i64,
    fetchable: i64,
    max_decompressed_bytes: u64,
) -> Result<(i64, i64), i16> {
    match timestamp {
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok((-1, log.log_start_offset())),
        LATEST_TIMESTAMP => Ok((-1, fetchable)),
        MAX_TIMESTAMP => match log.max_timestamp() {
            Ok(Some(found)) => Ok(refine_in_compressed_batch(
                log,
                found.timestamp,
                found,
                max_decompressed_bytes,
            )),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(storage_error_code(&e)),
        },
        t if t >= 0 => match log.offset_for_timestamp(t) {
            Ok(Some(found)) => Ok(refine_in_compressed_batch(
                log,
                t,
                found,
                max_decompressed_bytes,
            )),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(storage_error_code(&e)),
        },
        // Other negative markers (e.g. -5, tiered storage) name nothing that exists here.
        _ => Ok((-1, -1)),
    }
}

/// When `found` points into a compressed batch, decompresses that batch (streaming, bounded
/// by `max_decompressed_bytes`, keeping no record) and returns the first record at or after
/// `found.offset` whose timestamp is >= `timestamp`. Falls back to `found` if the batch cannot
/// be read or decoded (the answer is then batch-granular).
fn refine_in_compressed_batch(
    log: &Log,
    timestamp: i64,
    found: TimestampOffset,
    max_decompressed_bytes: u64,
) -> (i64, i64) {
    let fallback = (found.timestamp, found.offset);
    // max_bytes 1 with storage's min-one-batch read: exactly the batch holding the offset.
    let Ok(bytes) = log.read_bytes(found.offset, 1) else {
        return fallback;
    };
    let Some(header) = BatchHeader::parse(&bytes) else {
        return fallback;
    };
    // A LogAppendTime batch: every record has its maxTimestamp, so storage's answer (the
    // batch's first offset at or after `found`) is already exact.
    if header.compression() == 0 || header.is_log_append_time() {
        return fallback;
    }
    let batch = &bytes[..header.total_size().min(bytes.len())];
    let mut reader =
        match RecordReader::for_batch(batch, max_decompressed_bytes, ReaderBuffers::default()) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::warn!(error = %e, offset = found.offset, "cannot decode stored batch");
                return fallback;
            }
        };
    // Bounded by the decompressed bytes: every record consumes at least one.
    loop {
        match reader.skip_record() {
            Ok(Some(record)) => {
                let offset = header.base_offset + i64::from(record.offset_delta);
                let record_timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
                if offset >= found.offset && record_timestamp >= timestamp {
                    return (record_timestamp, offset);
                }
            }
            Ok(None) => return fallback,
            Err(e) => {
                tracing::warn!(error = %e, offset = found.offset, "cannot decode stored batch");
                return fallback;
            }
        }
    }
}
