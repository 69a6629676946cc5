//! Dead letters of share groups (Rill's `rill.share.dlq.topic`, RocketMQ's `%DLQ%`): a record
//! REJECTed, or archived at `group.share.delivery.count.limit`, is appended to the group's
//! dead-letter topic with its key, value and headers, plus headers naming where it came from:
//! `rill-dlq-topic`, `rill-dlq-partition`, `rill-dlq-offset`, `rill-dlq-group`,
//! `rill-dlq-delivery-count` and `rill-dlq-reason` (decimal text for numbers).
//!
//! Delivery to the dead-letter topic is at least once: the dead letters are appended before
//! the share-partition state that archives them is written, so a crash between the two
//! leaves the records in flight (delivered again, and dead-lettered again if they fail
//! again) rather than lost from both places. The dead-letter partition is the source
//! partition modulo the dead-letter topic's partition count; the topic is created (one
//! partition) on first use.

use std::sync::Arc;

use rill_storage::records::{
    BatchBuilder, BatchSpec, Headers, NewRecord, ReaderBuffers, RecordReader,
};
use rill_storage::{Log, TopicPartition};

use crate::coordinator::share::partition::DeadLetter;
use crate::coordinator::share::records::StateKey;
use crate::state::BrokerState;

/// Most bytes read to find one dead record's batch.
const READ_MAX_BYTES: u32 = 1 << 20;

/// Why dead letters could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("dead-letter topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("dead-letter append to {topic}: {source}")]
    Storage {
        topic: String,
        #[source]
        source: rill_storage::StorageError,
    },
}

/// Appends `dead` (records of `source`, the share-partition `key`'s log) to `dlq_topic`.
/// Returns the dead-letter log and the end offset to wait for, if anything was written.
///
/// # Errors
/// [`DlqError`]: the topic cannot be created or written.
pub fn append(
    state: &BrokerState,
    dlq_topic: &str,
    key: &StateKey,
    source: &Log,
    dead: &[DeadLetter],
) -> Result<Option<(Arc<Log>, i64)>, DlqError> {
    if dead.is_empty() {
        return Ok(None);
    }
    let topic_error = |reason: String| DlqError::Topic {
        topic: dlq_topic.to_string(),
        reason,
    };
    if crate::topics::is_internal(dlq_topic) {
        return Err(topic_error(
            "internal topics cannot be dead-letter topics".into(),
        ));
    }
    let meta = state
        .topics
        .get_or_create(&state.logs, dlq_topic, 1)
        .map_err(|e| topic_error(e.to_string()))?;
    let partition = key.partition.rem_euclid(meta.partitions.max(1));
    let tp = TopicPartition::new(dlq_topic, partition);
    let log = state
        .logs
        .get_log(&tp)
        .map_err(|source| DlqError::Storage {
            topic: dlq_topic.to_string(),
            source,
        })?
        .ok_or_else(|| topic_error(format!("{tp} is missing")))?;
    let batch = build(key, source, dead);
    let info = log.append(&batch).map_err(|source| DlqError::Storage {
        topic: dlq_topic.to_string(),
        source,
    })?;
    state.notify_appended(&tp);
    Ok(Some((log, info.last_offset + 1)))
}

/// One uncompressed batch of the dead records (those still in the log; a record removed by
/// retention in the meantime goes with an empty value and its origin headers).
fn build(key: &StateKey, source: &Log, dead: &[DeadLetter]) -> Vec<u8> {
    let now = crate::broker::now_ms();
    let mut builder = BatchBuilder::new(
        BatchSpec {
            base_timestamp: now,
            ..BatchSpec::default()
        },
        rill_storage::compression::Compression::None,
    );
    let topic_name = source.topic_partition().topic.clone();
    for (i, d) in dead.iter().enumerate() {
        let original = read_record(source, d.offset);
        let (rec_key, value, headers) = original
            .as_ref()
            .map_or((None, None, Vec::new()), |(k, v, h)| {
                (k.as_deref(), v.as_deref(), h.clone())
            });
        let mut all: Vec<(Vec<u8>, Option<Vec<u8>>)> = headers;
        let origin = [
            ("rill-dlq-topic", topic_name.clone()),
            ("rill-dlq-partition", key.partition.to_string()),
            ("rill-dlq-offset", d.offset.to_string()),
            ("rill-dlq-group", key.group_id.clone()),
            ("rill-dlq-delivery-count", d.delivery_count.to_string()),
            ("rill-dlq-reason", d.reason.to_string()),
        ];
        all.extend(
            origin
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.clone().into_bytes()))),
        );
        let refs: Vec<(&[u8], Option<&[u8]>)> = all
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        let mut raw = Vec::new();
        let headers = Headers::encode(&refs, &mut raw);
        builder.push(&NewRecord {
            offset_delta: i as i32,
            timestamp_delta: 0,
            key: rec_key,
            value,
            headers,
        });
    }
    let mut out = Vec::new();
    builder
        .finish(&mut out)
        .expect("an uncompressed batch always builds");
    out
}

type OwnedRecord = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

/// The key, value and headers of the record at `offset`, if it is still in the log.
fn read_record(log: &Log, offset: i64) -> Option<OwnedRecord> {
    let bytes = log.read_bytes(offset, READ_MAX_BYTES).ok()?;
    let header = rill_storage::batch::BatchHeader::parse(&bytes)?;
    let batch = bytes.get(..header.total_size())?;
    let mut reader = RecordReader::for_batch(
        batch,
        crate::coordinator::runtime::REPLAY_DECOMPRESSED_MAX_BYTES,
        ReaderBuffers::default(),
    )
    .ok()?;
    // Bounded by the batch's records.
    while let Ok(Some(r)) = reader.next_record() {
        if header.base_offset + i64::from(r.meta.offset_delta) == offset {
            return Some((
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
                r.headers
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                    .collect(),
            ));
        }
    }
    None
}
