//! Record batches (magic v2): building them for produce, reading them from fetches.
//!
//! The builder writes records straight into one buffer as they are added (no per-record
//! allocation), so a producer's cost per record is a few varints and one copy of key and
//! value. Compression of the records section uses kafka-protocol's codecs.
//!
//! Layout (Kafka's `DefaultRecordBatch`): baseOffset i64, batchLength i32,
//! partitionLeaderEpoch i32, magic i8 = 2, crc u32 (CRC-32C of everything after it),
//! attributes i16, lastOffsetDelta i32, baseTimestamp i64, maxTimestamp i64, producerId i64,
//! producerEpoch i16, baseSequence i32, recordCount i32, then the records.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::error::{ClientError, Result};

/// Bytes before the records section.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Where the CRC-32C'd part starts (the attributes field).
const CRC_START: usize = 21;

/// Compression codecs, with Kafka's attribute numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec bits of the batch attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!(
                "unknown compression '{s}' (expected none, gzip, snappy, lz4 or zstd)"
            )),
        }
    }
}

/// Builds one v2 batch, record by record.
pub struct BatchBuilder {
    /// Encoded records (uncompressed), without the batch header.
    records: BytesMut,
    record_count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    compression: Compression,
    scratch: Vec<u8>,
    /// Encoded headers of the record being added (reused, like `scratch`).
    tail: Vec<u8>,
}

impl BatchBuilder {
    /// A builder expecting about `capacity_bytes` of records.
    pub fn new(compression: Compression, capacity_bytes: usize) -> BatchBuilder {
        BatchBuilder {
            records: BytesMut::with_capacity(capacity_bytes),
            record_count: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            compression,
            scratch: Vec::with_capacity(64),
            tail: Vec::with_capacity(16),
        }
    }

    /// Records added so far.
    pub fn len(&self) -> usize {
        usize::try_from(self.record_count).unwrap_or(0)
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Encoded size of the records so far (before compression).
    pub fn size_bytes(&self) -> usize {
        self.records.len()
    }

    /// Appends a record. Timestamps are milliseconds since the epoch; the first record's is
    /// the batch's base timestamp.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        if self.record_count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let body = &mut self.scratch;
        body.clear();
        body.push(0); // record attributes: unused
        put_varlong(body, timestamp_ms - self.base_timestamp);
        put_varlong(body, i64::from(self.record_count));
        put_bytes(body, key);
        // The value is written after the length prefix, straight into `records`.
        let value_len = value.map_or(-1, |v| v.len() as i64);
        put_varlong(body, value_len);
        let tail = &mut self.tail;
        tail.clear();
        put_varlong(tail, headers.len() as i64);
        for (name, header_value) in headers {
            put_bytes(tail, Some(name.as_bytes()));
            put_bytes(tail, *header_value);
        }
        let value_bytes = value.map_or(0, <[u8]>::len);
        let record_len = body.len() + value_bytes + tail.len();
        let mut prefix = [0u8; 10];
        let prefix_len = encode_varlong(&mut prefix, record_len as i64);
        self.records.reserve(prefix_len + record_len);
        self.records.put_slice(&prefix[..prefix_len]);
        self.records.put_slice(body);
        if let Some(v) = value {
            self.records.put_slice(v);
        }
        self.records.put_slice(tail);
        self.record_count += 1;
    }

    /// Finishes the batch (base offset 0, no producer id) and resets the builder.
    ///
    /// # Errors
    /// A compression codec failing.
    pub fn finish(&mut self) -> Result<Bytes> {
        assert!(self.record_count > 0, "an empty batch is never sent");
        let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + self.records.len());
        out.put_i64(0); // base offset: the broker assigns it
        out.put_i32(0); // batch length, patched below
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2); // magic
        out.put_u32(0); // crc, patched below
        out.put_i16(self.compression.attribute());
        out.put_i32(self.record_count - 1);
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(-1); // producer id
        out.put_i16(-1); // producer epoch
        out.put_i32(-1); // base sequence
        out.put_i32(self.record_count);
        debug_assert_eq!(out.len(), BATCH_HEADER_BYTES);
        let records = &self.records[..];
        let copy = |buf: &mut BytesMut| {
            buf.put_slice(records);
            Ok(())
        };
        let compressed = match self.compression {
            Compression::None => {
                out.put_slice(records);
                Ok(())
            }
            Compression::Gzip => kafka_protocol::compression::Gzip::compress(&mut out, copy),
            Compression::Snappy => kafka_protocol::compression::Snappy::compress(&mut out, copy),
            Compression::Lz4 => kafka_protocol::compression::Lz4::compress(&mut out, copy),
            Compression::Zstd => kafka_protocol::compression::Zstd::compress(&mut out, copy),
        };
        compressed.map_err(|e| ClientError::Invalid(format!("compressing a batch: {e}")))?;
        let batch_length = i32::try_from(out.len() - 12)
            .map_err(|_| ClientError::Invalid("batch larger than 2 GiB".into()))?;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        self.records.clear();
        self.record_count = 0;
        Ok(out.freeze())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 10];
    let n = encode_varlong(&mut buf, v);
    out.extend_from_slice(&buf[..n]);
}

/// Zig-zag varlong into `buf`; returns the length (at most 10).
fn encode_varlong(buf: &mut [u8; 10], v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 0;
    while z >= 0x80 {
        buf[n] = (z as u8 & 0x7f) | 0x80;
        z >>= 7;
        n += 1;
    }
    buf[n] = z as u8;
    n + 1
}

/// Summary of one batch in a fetched record set, read from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i32,
    pub size_bytes: usize,
    pub compression: i16,
    pub is_control: bool,
}

/// Walks the batch headers of a fetched record set without decoding records (cheap; what
/// the consume benchmark uses to count). A trailing partial batch (Kafka may cut one at
/// `max_bytes`) is ignored.
pub fn batch_infos(mut records: &[u8]) -> Vec<BatchInfo> {
    let mut out = Vec::new();
    while records.len() >= BATCH_HEADER_BYTES {
        let base_offset = i64::from_be_bytes(records[0..8].try_into().unwrap_or_default());
        let batch_length = i32::from_be_bytes(records[8..12].try_into().unwrap_or_default());
        let Ok(batch_length) = usize::try_from(batch_length) else {
            break;
        };
        let size_bytes = 12 + batch_length;
        if size_bytes > records.len() || size_bytes < BATCH_HEADER_BYTES {
            break;
        }
        let attributes = i16::from_be_bytes(records[21..23].try_into().unwrap_or_default());
        let last_delta = i32::from_be_bytes(records[23..27].try_into().unwrap_or_default());
        let record_count = i32::from_be_bytes(records[57..61].try_into().unwrap_or_default());
        out.push(BatchInfo {
            base_offset,
            last_offset: base_offset + i64::from(last_delta),
            record_count,
            size_bytes,
            compression: attributes & 0x7,
            is_control: attributes & 0x20 != 0,
        });
        records = &records[size_bytes..];
    }
    out
}

/// Decodes every record of a fetched record set (decompressing as needed), skipping control
/// batches (transaction markers), which consumers never show.
///
/// # Errors
/// A batch that does not decode.
pub fn decode_records(records: &Bytes) -> Result<Vec<Record>> {
    let infos = batch_infos(records);
    let whole: usize = infos.iter().map(|i| i.size_bytes).sum();
    let mut buf = records.slice(..whole);
    let mut out = Vec::new();
    for info in &infos {
        let mut one = buf.split_to(info.size_bytes);
        if info.is_control {
            continue;
        }
        let set = RecordBatchDecoder::decode(&mut one).map_err(|e| {
            ClientError::Invalid(format!(
                "decoding batch at offset {}: {e}",
                info.base_offset
            ))
        })?;
        out.extend(set.records);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(compression: Compression) {
        let mut b = BatchBuilder::new(compression, 1024);
        b.push(1000, Some(b"k1"), Some(b"v1"), &[("h", Some(b"x"))]);
        b.push(1005, None, Some(&[7u8; 300]), &[]);
        b.push(1002, Some(b""), None, &[("n", None)]);
        let batch = b.finish().unwrap();
        assert!(b.is_empty());
        let infos = batch_infos(&batch);
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].record_count, 3);
        assert_eq!(infos[0].last_offset, 2);
        assert_eq!(infos[0].size_bytes, batch.len());
        assert_eq!(infos[0].compression, compression.attribute());
        let records = decode_records(&batch).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[0].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(records[0].headers.len(), 1);
        assert_eq!(records[1].timestamp, 1005);
        assert_eq!(records[1].offset, 1);
        assert_eq!(records[1].value.as_deref().map(<[u8]>::len), Some(300));
        assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
        assert_eq!(records[2].value, None);
        assert_eq!(records[2].timestamp, 1002);
    }

    #[test]
    fn batches_roundtrip_with_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            roundtrip(c);
        }
    }

    #[test]
    fn crc_covers_attributes_to_end() {
        let mut b = BatchBuilder::new(Compression::None, 64);
        b.push(5, None, Some(b"x"), &[]);
        let batch = b.finish().unwrap();
        let stored = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(stored, crc32c::crc32c(&batch[21..]));
        assert_eq!(batch[16], 2);
    }

    #[test]
    fn partial_trailing_batch_is_ignored() {
        let mut b = BatchBuilder::new(Compression::None, 64);
        b.push(5, None, Some(b"x"), &[]);
        let one = b.finish().unwrap();
        let mut two = one.to_vec();
        two.extend_from_slice(&one[..one.len() - 3]);
        assert_eq!(batch_infos(&two).len(), 1);
    }
}
