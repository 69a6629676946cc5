//! Sparse map from timestamp to offset within one segment (Kafka's `TimeIndex`): 8-byte
//! largest timestamp seen so far, 4-byte relative offset of the batch where it was seen.
//! Timestamps only increase, so a binary search finds where to start looking for a time.

use crate::fd_cache::FileKind;
use crate::index::{Index, IndexEntry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    const KIND: FileKind = FileKind::TimeIndex;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }
}

pub type TimeIndex = Index<TimeEntry>;

/// Whether a loaded time index is consistent: timestamps and offsets strictly increasing,
/// offsets inside the segment.
pub fn is_sane(entries: &[TimeEntry], next_relative_offset: u64) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].timestamp < w[1].timestamp && w[0].relative_offset < w[1].relative_offset)
        && entries
            .last()
            .is_none_or(|e| u64::from(e.relative_offset) < next_relative_offset)
}
