//! Transaction markers (Kafka's `EndTransactionMarker` and `ControlRecordType`): the control
//! batch the transaction coordinator writes to every partition of a transaction to commit or
//! abort it. Storage builds them ([`build_marker_batch`]) for [`crate::Log::append_marker`]
//! and reads them back ([`parse_marker`]) when it replays the log (recovery) or cleans it.
//!
//! # Format (Kafka's)
//! ```text
//! batch:  attributes = transactional | control (0x30), baseSequence -1, one record
//! key:    version i16 (0) | type i16 (0 abort, 1 commit)
//! value:  version i16 (0) | coordinator epoch i32
//! ```

use crate::batch::{BatchHeader, HEADER_SIZE};
use crate::compression::Compression;
use crate::records::{BatchBuilder, BatchSpec, Headers, NewRecord, ReaderBuffers, RecordReader};

/// Attributes of a marker batch: transactional (0x10) and control (0x20).
pub const MARKER_ATTRIBUTES: i16 = 0x30;
/// Kafka's `ControlRecordType.ABORT`.
const ABORT_TYPE: i16 = 0;
/// Kafka's `ControlRecordType.COMMIT`.
const COMMIT_TYPE: i16 = 1;
/// A marker batch is one small record; anything larger is not one (bounds replay reads).
pub const MAX_MARKER_BATCH_BYTES: usize = 1024;

/// A commit or abort marker, as the transaction coordinator asks a partition to write it
/// (WriteTxnMarkers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The coordinator's epoch: a marker from an older coordinator (a zombie) is refused.
    pub coordinator_epoch: i32,
    /// `true` commits the producer's transaction here, `false` aborts it.
    pub commit: bool,
    pub timestamp_ms: i64,
}

/// What a stored marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerRecord {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The marker as a v2 control batch (base offset 0: the log assigns it).
pub fn build_marker_batch(marker: &TxnMarker) -> Vec<u8> {
    let mut key = [0u8; 4];
    let kind = if marker.commit {
        COMMIT_TYPE
    } else {
        ABORT_TYPE
    };
    key[2..4].copy_from_slice(&kind.to_be_bytes());
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut builder = BatchBuilder::new(
        BatchSpec {
            base_offset: 0,
            partition_leader_epoch: 0,
            attributes: MARKER_ATTRIBUTES,
            base_timestamp: marker.timestamp_ms,
            max_timestamp: None,
            producer_id: marker.producer_id,
            producer_epoch: marker.producer_epoch,
            base_sequence: -1,
        },
        Compression::None,
    );
    builder.push(&NewRecord {
        offset_delta: 0,
        timestamp_delta: 0,
        key: Some(&key),
        value: Some(&value),
        headers: Headers::NONE,
    });
    let mut out = Vec::with_capacity(HEADER_SIZE + 32);
    builder
        .finish(&mut out)
        .expect("an uncompressed batch cannot fail to encode");
    debug_assert!(out.len() <= MAX_MARKER_BATCH_BYTES);
    out
}

/// Reads the marker of a stored control batch (`batch` is the whole batch). `None` when it is
/// not a control batch, is empty (Kafka's cleaner may empty one), or its record is not a
/// version-0 commit or abort: such a batch ends no transaction.
pub fn parse_marker(batch: &[u8]) -> Option<MarkerRecord> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() || batch.len() > MAX_MARKER_BATCH_BYTES {
        return None;
    }
    let mut reader = RecordReader::for_batch(
        batch,
        MAX_MARKER_BATCH_BYTES as u64,
        ReaderBuffers::default(),
    )
    .ok()?;
    let record = reader.next_record().ok()??;
    let key = record.key?;
    let value = record.value?;
    if key.len() < 4 || i16::from_be_bytes([key[0], key[1]]) != 0 {
        return None;
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        ABORT_TYPE => false,
        COMMIT_TYPE => true,
        _ => return None,
    };
    // Kafka reads the value's version and epoch and ignores any trailing bytes (newer versions).
    if value.len() < 6 {
        return None;
    }
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Some(MarkerRecord {
        commit,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every marker survives build → validate → parse, with Kafka's header fields.
        #[test]
        fn markers_round_trip(pid in 0i64..i64::MAX, epoch in 0i16..i16::MAX, coord in any::<i32>(), commit in any::<bool>(), ts in 0i64..1 << 50) {
            let marker = TxnMarker { producer_id: pid, producer_epoch: epoch, coordinator_epoch: coord, commit, timestamp_ms: ts };
            let batch = build_marker_batch(&marker);
            let h = crate::batch::validate(&batch, 1 << 20).unwrap();
            prop_assert!(h.is_control() && h.is_transactional());
            prop_assert_eq!(h.base_sequence, -1);
            prop_assert_eq!(h.record_count, 1);
            prop_assert_eq!((h.producer_id, h.producer_epoch), (pid, epoch));
            prop_assert_eq!(h.max_timestamp, ts);
            prop_assert_eq!(parse_marker(&batch), Some(MarkerRecord { commit, coordinator_epoch: coord }));
        }

        /// Garbage after a control header never panics.
        #[test]
        fn garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut batch = build_marker_batch(&TxnMarker { producer_id: 1, producer_epoch: 0, coordinator_epoch: 0, commit: true, timestamp_ms: 0 });
            batch.truncate(HEADER_SIZE);
            batch.extend_from_slice(&payload);
            let _ = parse_marker(&batch);
        }
    }

    #[test]
    fn data_batches_are_not_markers() {
        let batch = crate::batch::build_batch(1, b"x", 0);
        assert_eq!(parse_marker(&batch), None);
    }
}
