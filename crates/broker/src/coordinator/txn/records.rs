//! The `__transaction_state` topic: one record per transactional id, in Kafka's own key and
//! value schemas (`TransactionLogKey` v0, `TransactionLogValue` v0 and v1), so that a tool that
//! reads Kafka's topic reads Rill's.
//!
//! ```text
//! key   v0: transactional id string
//! value v0: producer id i64, producer epoch i16, timeout ms i32, status i8,
//!           partitions [topic string, partition ids [i32]]?, last update ms i64, start ms i64
//! value v1: the same fields in flexible (compact) encoding, plus tagged fields:
//!           0 previous producer id i64, 1 next producer id i64, 2 client transaction version i16
//! ```
//! Each key and value starts with its version (i16). A null value is a tombstone (an expired
//! transactional id). Rill writes value v1.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{TxnMetadata, TxnState};

/// The internal topic's name, as in Kafka.
pub const TOPIC: &str = "__transaction_state";
const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 1;
/// Longest transactional id accepted (Kafka has no hard limit below the string's i16 length;
/// Rill keeps ids to what one key can hold).
pub const TRANSACTIONAL_ID_BYTES_MAX: usize = i16::MAX as usize;

/// A record of `__transaction_state` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnRecordError {
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("unknown transaction status {0}")]
    UnknownStatus(i8),
}

/// One record: a transactional id and its metadata, or its tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub value: Option<TxnMetadata>,
}

impl TxnRecord {
    pub fn key(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(4 + self.transactional_id.len());
        out.put_i16(KEY_VERSION);
        put_string(&mut out, &self.transactional_id);
        out.freeze()
    }

    pub fn value(&self) -> Option<Bytes> {
        self.value.as_ref().map(encode_value)
    }

    /// Ok(None) for a key version this code does not know (a newer Kafka's record type).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<TxnRecord>, TxnRecordError> {
        let mut k = Reader {
            buf: key,
            what: "transaction log key",
        };
        if k.i16()? != KEY_VERSION {
            return Ok(None);
        }
        let transactional_id = k.string()?;
        let value = match value {
            None => None,
            Some(v) => Some(decode_value(&transactional_id, v)?),
        };
        Ok(Some(TxnRecord {
            transactional_id,
            value,
        }))
    }
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_compact_string(out: &mut BytesMut, s: &str) {
    put_uvarint(out, s.len() as u64 + 1);
    out.put_slice(s.as_bytes());
}

/// Groups partitions by topic, in order, as the value's partition list holds them.
fn by_topic(partitions: &BTreeSet<(String, i32)>) -> Vec<(&str, Vec<i32>)> {
    let mut out: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, p) in partitions {
        match out.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*p),
            _ => out.push((topic.as_str(), vec![*p])),
        }
    }
    out
}

fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(VALUE_VERSION);
    out.put_i64(m.producer_id);
    out.put_i16(m.producer_epoch);
    out.put_i32(m.timeout_ms);
    out.put_i8(m.state.id());
    let topics = by_topic(&m.partitions);
    put_uvarint(&mut out, topics.len() as u64 + 1);
    for (topic, partitions) in topics {
        put_compact_string(&mut out, topic);
        put_uvarint(&mut out, partitions.len() as u64 + 1);
        for p in partitions {
            out.put_i32(p);
        }
        put_uvarint(&mut out, 0); // no tagged fields
    }
    out.put_i64(m.last_update_ms);
    out.put_i64(m.start_ms);
    let mut tags: Vec<(u64, Vec<u8>)> = Vec::new();
    if m.prev_producer_id != -1 {
        tags.push((0, m.prev_producer_id.to_be_bytes().to_vec()));
    }
    if m.next_producer_id != -1 {
        tags.push((1, m.next_producer_id.to_be_bytes().to_vec()));
    }
    if m.client_txn_version != 0 {
        tags.push((2, m.client_txn_version.to_be_bytes().to_vec()));
    }
    put_uvarint(&mut out, tags.len() as u64);
    for (tag, data) in tags {
        put_uvarint(&mut out, tag);
        put_uvarint(&mut out, data.len() as u64);
        out.put_slice(&data);
    }
    out.freeze()
}

fn decode_value(transactional_id: &str, bytes: &[u8]) -> Result<TxnMetadata, TxnRecordError> {
    let mut r = Reader {
        buf: bytes,
        what: "transaction log value",
    };
    let version = r.i16()?;
    if !(0..=1).contains(&version) {
        return Err(TxnRecordError::Malformed {
            what: "transaction log value version",
        });
    }
    let flexible = version >= 1;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = r.i8()?;
    let state = TxnState::from_id(status).ok_or(TxnRecordError::UnknownStatus(status))?;
    let mut partitions = BTreeSet::new();
    let topic_count = if flexible {
        r.compact_len()?
    } else {
        r.len32()?
    };
    for _ in 0..topic_count.unwrap_or(0) {
        let topic = if flexible {
            r.compact_string()?
        } else {
            r.string()?
        };
        let count = if flexible {
            r.compact_len()?
        } else {
            r.len32()?
        };
        for _ in 0..count.unwrap_or(0) {
            partitions.insert((topic.clone(), r.i32()?));
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    let mut m = TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        prev_producer_id: -1,
        next_producer_id: -1,
        producer_epoch,
        last_producer_epoch: -1,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
        client_txn_version: 0,
    };
    if flexible {
        let tags = r.uvarint()?;
        for _ in 0..tags {
            let tag = r.uvarint()?;
            let size = r.uvarint()? as usize;
            let data = r.take(size)?;
            match (tag, size) {
                (0, 8) => m.prev_producer_id = i64::from_be_bytes(data.try_into().expect("8")),
                (1, 8) => m.next_producer_id = i64::from_be_bytes(data.try_into().expect("8")),
                (2, 2) => m.client_txn_version = i16::from_be_bytes(data.try_into().expect("2")),
                _ => {}
            }
        }
    }
    Ok(m)
}

/// A bounds-checked reader: malformed input is an error, never a panic, and no length read
/// from the input sizes an allocation before the bytes are there.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn bad(&self) -> TxnRecordError {
        TxnRecordError::Malformed { what: self.what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TxnRecordError> {
        if self.buf.len() < n {
            return Err(self.bad());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn i8(&mut self) -> Result<i8, TxnRecordError> {
        Ok(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Result<i16, TxnRecordError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, TxnRecordError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i64(&mut self) -> Result<i64, TxnRecordError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn uvarint(&mut self) -> Result<u64, TxnRecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad())
    }
    fn utf8(&self, bytes: &[u8]) -> Result<String, TxnRecordError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad())
    }
    fn string(&mut self) -> Result<String, TxnRecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Err(self.bad());
        }
        let bytes = self.take(len as usize)?;
        self.utf8(bytes)
    }
    fn compact_string(&mut self) -> Result<String, TxnRecordError> {
        let len = self.compact_len()?.ok_or_else(|| self.bad())?;
        let bytes = self.take(len)?;
        self.utf8(bytes)
    }
    /// A non-flexible array length; None for null.
    fn len32(&mut self) -> Result<Option<usize>, TxnRecordError> {
        let n = self.i32()?;
        Ok((n >= 0).then_some(n as usize))
    }
    /// A compact length (stored + 1); None for null.
    fn compact_len(&mut self) -> Result<Option<usize>, TxnRecordError> {
        let n = self.uvarint()?;
        if n > self.buf.len() as u64 + 1 {
            return Err(self.bad());
        }
        Ok(n.checked_sub(1).map(|n| n as usize))
    }
    fn skip_tagged_fields(&mut self) -> Result<(), TxnRecordError> {
        let tags = self.uvarint()?;
        for _ in 0..tags {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TxnMetadata {
        let mut m = TxnMetadata::new("tx-1", 42, 60_000, 1_000);
        m.producer_epoch = 3;
        m.state = TxnState::Ongoing;
        m.partitions.insert(("a".into(), 0));
        m.partitions.insert(("a".into(), 2));
        m.partitions.insert(("b".into(), 1));
        m.start_ms = 1_500;
        m.last_update_ms = 2_000;
        m.prev_producer_id = 41;
        m.client_txn_version = 2;
        m
    }

    #[test]
    fn records_round_trip() {
        let record = TxnRecord {
            transactional_id: "tx-1".into(),
            value: Some(sample()),
        };
        let decoded = TxnRecord::decode(&record.key(), record.value().as_deref())
            .unwrap()
            .unwrap();
        let mut expected = sample();
        // Not stored: it only guards retries while the broker runs.
        expected.last_producer_epoch = -1;
        assert_eq!(decoded.value, Some(expected));
        let tombstone = TxnRecord {
            transactional_id: "tx-1".into(),
            value: None,
        };
        assert_eq!(
            TxnRecord::decode(&tombstone.key(), None).unwrap(),
            Some(tombstone)
        );
    }

    #[test]
    fn value_v0_is_read() {
        let mut v = BytesMut::new();
        v.put_i16(0);
        v.put_i64(7);
        v.put_i16(1);
        v.put_i32(900);
        v.put_i8(TxnState::Ongoing.id());
        v.put_i32(1);
        put_string(&mut v, "t");
        v.put_i32(2);
        v.put_i32(0);
        v.put_i32(5);
        v.put_i64(10);
        v.put_i64(9);
        let m = decode_value("x", &v).unwrap();
        assert_eq!(m.producer_id, 7);
        assert_eq!(m.state, TxnState::Ongoing);
        assert_eq!(
            m.partitions.iter().cloned().collect::<Vec<_>>(),
            vec![("t".to_string(), 0), ("t".to_string(), 5)]
        );
        assert_eq!((m.last_update_ms, m.start_ms), (10, 9));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let record = TxnRecord {
            transactional_id: "tx-1".into(),
            value: Some(sample()),
        };
        let value = record.value().unwrap();
        for cut in 0..value.len() {
            assert!(TxnRecord::decode(&record.key(), Some(&value[..cut])).is_err());
        }
        // A huge compact length is refused before anything is allocated.
        let mut v = BytesMut::new();
        v.put_i16(1);
        v.put_i64(1);
        v.put_i16(0);
        v.put_i32(1);
        v.put_i8(0);
        put_uvarint(&mut v, u64::MAX >> 1);
        assert!(decode_value("x", &v).is_err());
        assert!(TxnRecord::decode(&[0], None).is_err());
        // Unknown key versions are skipped, not errors.
        assert_eq!(TxnRecord::decode(&[0, 9, 0, 0], None).unwrap(), None);
        let mut bad_status = BytesMut::from(&value[..]);
        bad_status[2 + 8 + 2 + 4] = 42;
        assert_eq!(
            decode_value("x", &bad_status),
            Err(TxnRecordError::UnknownStatus(42))
        );
    }
}
