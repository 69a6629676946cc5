//! The aborted-transaction index of one segment (Kafka's `TransactionIndex`, file
//! `<base>.txnindex`): one entry per transaction aborted by a marker in this segment, in marker
//! order. A `read_committed` fetch collects the entries overlapping the range it returns
//! ([`collect`], Kafka's `collectAbortedTxns`) so the client can drop the aborted records; the
//! broker never filters records.
//!
//! # Format (Kafka's, 34 bytes per entry, big-endian)
//! ```text
//! version i16 (0) | producer id i64 | first offset i64 | last offset i64 | last stable offset i64
//! ```
//! `last offset` is the abort marker's offset; `last stable offset` the partition's LSO once
//! the transaction completed (it lets a search stop early: no later entry can overlap a range
//! below it).
//!
//! The file exists only once a segment has an entry. The active segment keeps its entries in
//! memory ([`crate::index::Index`]), writes each one through the I/O seam when its marker is
//! appended, and syncs it at checkpoints (before the recovery point passes it) and at the
//! flush after sealing; a sealed segment's file is mapped on first use. Recovery keeps the
//! entries whose marker lies below the recovery point and rebuilds the rest by replaying the
//! markers (`Log::open`).

use crate::fd_cache::FileKind;
use crate::index::{Index, IndexEntry};

/// Kafka's entry version.
const VERSION: i16 = 0;

/// One aborted transaction as a fetch response lists it (Kafka's `AbortedTransaction`): the
/// client drops that producer's records from `first_offset` up to its abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// One entry of a `.txnindex` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxnEntry {
    pub version: i16,
    pub producer_id: i64,
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
    /// The partition's last stable offset once this transaction completed.
    pub last_stable_offset: i64,
}

impl AbortedTxnEntry {
    pub fn new(producer_id: i64, first_offset: i64, last_offset: i64, lso: i64) -> Self {
        // The LSO may lie below both: an older transaction may still be open.
        debug_assert!(
            first_offset < last_offset,
            "a transaction's data precedes its marker"
        );
        AbortedTxnEntry {
            version: VERSION,
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: lso,
        }
    }

    pub fn aborted(&self) -> AbortedTxn {
        AbortedTxn {
            producer_id: self.producer_id,
            first_offset: self.first_offset,
        }
    }
}

impl IndexEntry for AbortedTxnEntry {
    const SIZE: usize = 2 + 8 + 8 + 8 + 8;
    const KIND: FileKind = FileKind::TxnIndex;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        AbortedTxnEntry {
            version: i16::from_be_bytes([b[0], b[1]]),
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        }
    }
}

const _: () = assert!(<AbortedTxnEntry as IndexEntry>::SIZE == 34);

pub type TxnIndex = Index<AbortedTxnEntry>;

/// Whether entries read from a file can be trusted: Kafka's version, data before the marker
/// (a transaction with an entry had data, so a zero-filled entry is refused), markers in
/// increasing order.
pub fn is_sane(entries: &[AbortedTxnEntry]) -> bool {
    entries
        .iter()
        .all(|e| e.version == VERSION && 0 <= e.first_offset && e.first_offset < e.last_offset)
        && entries
            .windows(2)
            .all(|w| w[0].last_offset < w[1].last_offset)
}

/// Adds to `out` the entries of `index` whose transaction overlaps `[fetch_offset,
/// upper_bound)`, Kafka's `collectAbortedTxns`. Returns `true` when the search is complete: an
/// entry's last stable offset reached `upper_bound`, so no later segment can add one.
pub fn collect(
    index: &TxnIndex,
    fetch_offset: i64,
    upper_bound: i64,
    out: &mut Vec<AbortedTxn>,
) -> bool {
    // Bounded by the entries of one segment.
    for i in 0..index.len() {
        let e = index.get(i);
        if e.last_offset >= fetch_offset && e.first_offset < upper_bound {
            out.push(e.aborted());
        }
        if e.last_stable_offset >= upper_bound {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entries_round_trip(pid in any::<i64>(), first in any::<i64>(), last in any::<i64>(), lso in any::<i64>()) {
            let e = AbortedTxnEntry { version: 0, producer_id: pid, first_offset: first, last_offset: last, last_stable_offset: lso };
            let mut bytes = Vec::new();
            e.encode(&mut bytes);
            prop_assert_eq!(bytes.len(), 34);
            prop_assert_eq!(AbortedTxnEntry::decode(&bytes), e);
        }
    }

    #[test]
    fn collect_stops_at_the_upper_bound_as_kafka() {
        let mut index = TxnIndex::active("x.txnindex".into(), Vec::new());
        // pid 1 aborted [0, 5], pid 2 aborted [3, 9] (LSO after: 10), pid 3 aborted [20, 25].
        index.push(AbortedTxnEntry::new(1, 0, 5, 3));
        index.push(AbortedTxnEntry::new(2, 3, 9, 10));
        index.push(AbortedTxnEntry::new(3, 20, 25, 26));
        let mut out = Vec::new();
        assert!(collect(&index, 6, 10, &mut out), "LSO 10 reaches the bound");
        assert_eq!(
            out,
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 3
            }]
        );
        out.clear();
        assert!(!collect(&index, 0, 30, &mut out), "no entry reaches 30");
        assert_eq!(out.len(), 3);
        out.clear();
        collect(&index, 10, 20, &mut out);
        assert!(out.is_empty(), "nothing overlaps [10, 20)");
        assert!(is_sane(&index.to_vec()));
        let mut bad = index.to_vec();
        bad.swap(0, 1);
        assert!(!is_sane(&bad));
    }
}
