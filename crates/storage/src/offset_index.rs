//! Sparse map from offset to file position within one segment (Kafka's `OffsetIndex`):
//! 4-byte offset relative to the segment's base offset, 4-byte position, big-endian.

use crate::fd_cache::FileKind;
use crate::index::{Index, IndexEntry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Offset of a batch's first record, minus the segment's base offset.
    pub relative_offset: u32,
    /// Where that batch starts in the segment file.
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    const KIND: FileKind = FileKind::OffsetIndex;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }
}

pub type OffsetIndex = Index<OffsetEntry>;

/// Whether a loaded offset index is consistent with a segment of `log_size` bytes holding
/// offsets below `next_relative_offset`: strictly increasing offsets and positions, all
/// inside the log.
pub fn is_sane(entries: &[OffsetEntry], log_size: u64, next_relative_offset: u64) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
        && entries.last().is_none_or(|e| {
            u64::from(e.position) < log_size && u64::from(e.relative_offset) < next_relative_offset
        })
}
