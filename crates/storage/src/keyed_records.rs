//! The records of an uncompressed v2 batch, seen by key: what the log cleaner needs to decide
//! which records survive, and to write a batch again with only the survivors. Records are kept
//! byte for byte (their offset and timestamp deltas are relative to the batch header, which
//! the cleaner keeps), so only the header's count, length and CRC change.
//!
//! ```text
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//!         | keyLength varint | key | valueLength varint | value | headerCount varint | headers
//! ```

use std::ops::Range;

use crate::batch::{read_varlong, BatchHeader, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2};
use crate::records::put_varint;

/// Attribute bit of a transactional batch.
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
/// Attribute bit of a control batch (transaction markers).
pub const CONTROL_FLAG: i16 = 0x20;
/// Start of the bytes the CRC-32C covers.
const CRC_START: usize = 21;

/// One record of a batch, as positions into the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    /// The key's bytes; `None` for a null key.
    pub key: Option<Range<usize>>,
    /// The value's bytes; `None` for a tombstone.
    pub value: Option<Range<usize>>,
    /// The whole record, length prefix included.
    pub bytes: Range<usize>,
}

/// A length-prefixed byte field (key or value): `None` for length -1.
fn field(bytes: &[u8], at: &mut usize, end: usize) -> Option<Option<Range<usize>>> {
    let len = read_varlong(bytes, at)?;
    if len < 0 {
        return (len == -1).then_some(None);
    }
    let stop = at.checked_add(usize::try_from(len).ok()?)?;
    if stop > end {
        return None;
    }
    let range = *at..stop;
    *at = stop;
    Some(Some(range))
}

/// The records of a whole uncompressed batch. `None` for a compressed batch (the cleaner
/// keeps those whole) or when the records do not parse exactly to the batch's end.
pub fn records(batch: &[u8]) -> Option<Vec<RecordRef>> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != 0 || header.total_size() != batch.len() {
        return None;
    }
    let end = batch.len();
    let mut at = HEADER_SIZE;
    // Capacity from what can fit, not from the (untrusted) count.
    let mut out = Vec::with_capacity((header.record_count.max(0) as usize).min(end / 7));
    for _ in 0..header.record_count {
        let start = at;
        let len = read_varlong(batch, &mut at)?;
        let record_end = at.checked_add(usize::try_from(len).ok()?)?;
        if record_end > end {
            return None;
        }
        at += 1; // attributes
        let timestamp_delta = read_varlong(batch, &mut at)?;
        let offset_delta = read_varlong(batch, &mut at)?;
        let key = field(batch, &mut at, record_end)?;
        let value = field(batch, &mut at, record_end)?;
        if at > record_end {
            return None;
        }
        out.push(RecordRef {
            offset_delta,
            timestamp_delta,
            key,
            value,
            bytes: start..record_end,
        });
        at = record_end;
    }
    (at == end).then_some(out)
}

/// `batch` written again with only `keep` (a subset of its records, in order): same base
/// offset, last offset delta, timestamps, producer fields and attributes; new record count,
/// length and CRC. Kafka's cleaner keeps the last offset the same way, so a batch may end up
/// with `lastOffsetDelta > recordCount - 1` ([`crate::batch::validate_stored`]).
pub fn rebuild(batch: &[u8], keep: &[&RecordRef], out: &mut Vec<u8>) {
    debug_assert!(!keep.is_empty());
    let start = out.len();
    out.extend_from_slice(&batch[..HEADER_SIZE]);
    for r in keep {
        out.extend_from_slice(&batch[r.bytes.clone()]);
    }
    let len = (out.len() - start - LOG_OVERHEAD) as i32;
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
    out[start + 57..start + 61].copy_from_slice(&(keep.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

/// A record to build: key and value, `None` for null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds an uncompressed v2 batch of keyed records (`None` key: null; `None` value: a
/// tombstone) at base offset 0, timestamps `base_timestamp + i`. Public for tests, benches and
/// the broker's tests, which need keyed batches without a client.
pub fn build_keyed_batch(records: &[KeyValue<'_>], base_timestamp: i64) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, i as i64); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        for f in [key, value] {
            match f {
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        put_varint(&mut rec, 0); // no headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let count = records.len();
    let mut b = Vec::with_capacity(HEADER_SIZE + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&((count - 1) as i32).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&(base_timestamp + count as i64 - 1).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(count as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Whether any record of an uncompressed batch has a null key: a compacted topic refuses
/// such a produce (Kafka's INVALID_RECORD). `None` when the batch is compressed or its records
/// do not parse (the produce path's own validation reports those).
pub fn has_null_key(batch: &[u8]) -> Option<bool> {
    records(batch).map(|rs| rs.iter().any(|r| r.key.is_none()))
}

/// `(offset, key, value)` of every record of an uncompressed batch (tests and tools).
#[allow(clippy::type_complexity)]
pub fn decode(batch: &[u8]) -> Option<Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>> {
    let header = BatchHeader::parse(batch)?;
    let rs = records(batch)?;
    Some(
        rs.iter()
            .map(|r| {
                (
                    header.base_offset + r.offset_delta,
                    r.key.clone().map(|k| batch[k].to_vec()),
                    r.value.clone().map(|v| batch[v].to_vec()),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{validate, validate_stored};
    use proptest::prelude::*;

    #[test]
    fn rebuild_keeps_offsets_and_validates_as_stored() {
        let b = build_keyed_batch(
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), None),
                (Some(b"a"), Some(b"2")),
            ],
            100,
        );
        validate(&b, 1 << 20).unwrap();
        let rs = records(&b).unwrap();
        assert_eq!(rs.len(), 3);
        let mut out = Vec::new();
        rebuild(&b, &[&rs[1], &rs[2]], &mut out);
        let h = validate_stored(&out, 1 << 20).unwrap();
        assert_eq!((h.record_count, h.last_offset()), (2, 2));
        assert!(
            validate(&out, 1 << 20).is_err(),
            "a gap is refused on produce"
        );
        assert_eq!(
            decode(&out).unwrap(),
            vec![
                (1, Some(b"b".to_vec()), None),
                (2, Some(b"a".to_vec()), Some(b"2".to_vec()))
            ]
        );
    }

    #[test]
    fn null_keys_are_found() {
        let b = build_keyed_batch(&[(Some(b"a"), Some(b"1")), (None, Some(b"x"))], 0);
        assert_eq!(has_null_key(&b), Some(true));
        let b = build_keyed_batch(&[(Some(b"a"), Some(b"1"))], 0);
        assert_eq!(has_null_key(&b), Some(false));
    }

    proptest! {
        /// Any bytes parse or yield `None`; never a panic.
        #[test]
        fn records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = records(&bytes);
            let mut b = build_keyed_batch(&[(Some(b"k"), Some(b"v"))], 0);
            let n = bytes.len().min(b.len() - HEADER_SIZE);
            b[HEADER_SIZE..HEADER_SIZE + n].copy_from_slice(&bytes[..n]);
            let _ = records(&b);
        }
    }
}
