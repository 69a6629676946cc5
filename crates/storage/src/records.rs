//! The records inside a v2 batch: reading them one at a time from a (possibly decompressing)
//! stream, and building a batch from records (the log cleaner re-encodes what it keeps).
//!
//! ```text
//! record := length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//!           | keyLength varint | key | valueLength varint | value
//!           | headerCount varint | (keyLength varint | key | valueLength varint | value)*
//! ```
//! A length of -1 is null. `length` counts the bytes after itself; a record whose fields do not
//! take exactly that many bytes is malformed.
//!
//! [`RecordReader`] reads through a buffer it owns and reuses: [`RecordReader::skip_record`]
//! walks the fields without keeping keys or values (validation: memory is the buffer, whatever
//! the record size), [`RecordReader::next_record`] keeps one record in a reused buffer and lends
//! it out (the cleaner, ListOffsets). Neither allocates per record once its buffers have grown.

use std::io::Read;

use crate::batch::{HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2};
use crate::compression::{self, Compression, CompressionError};

/// Bytes the reader pulls from its source at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
const CRC_START: usize = 21;

/// What is wrong with the records of a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The stream ended inside a record.
    #[error("records end inside a record")]
    Truncated,
    /// A field is out of range or the fields disagree with the record length.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The compressed payload is corrupt or inflates past its bound.
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

/// The fixed fields of one record and the sizes of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The record's `length` field: bytes after it.
    pub size_bytes: u32,
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    /// -1 for a null key.
    pub key_len: i32,
    /// -1 for a null value (a tombstone).
    pub value_len: i32,
    pub header_count: u32,
}

/// Record headers as stored: a count and the encoded bytes, iterated without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headers<'a> {
    count: u32,
    raw: &'a [u8],
}

impl<'a> Headers<'a> {
    /// No headers.
    pub const NONE: Headers<'static> = Headers { count: 0, raw: &[] };

    /// Headers already encoded (e.g. taken from a record being copied).
    pub fn from_raw(count: u32, raw: &'a [u8]) -> Headers<'a> {
        Headers { count, raw }
    }

    /// Encodes `headers` into `out` (cleared first) and returns them as [`Headers`] over it.
    pub fn encode<'b>(headers: &[(&[u8], Option<&[u8]>)], out: &'b mut Vec<u8>) -> Headers<'b> {
        out.clear();
        for (key, value) in headers {
            put_varint(out, key.len() as i64);
            out.extend_from_slice(key);
            put_bytes(out, *value);
        }
        Headers {
            count: headers.len() as u32,
            raw: out,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The encoded bytes, as they sit in the record.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Each header's key and value. The bytes were checked when the record was read.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut at = 0;
        let raw = self.raw;
        (0..self.count).map_while(move |_| {
            let key = slice_bytes(raw, &mut at)?;
            let value = slice_bytes(raw, &mut at);
            Some((key?, value?))
        })
    }
}

/// Reads a length-prefixed byte string from a slice; `Some(None)` is null.
fn slice_bytes<'a>(raw: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *raw.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let len = ((value >> 1) as i64) ^ -((value & 1) as i64);
            if len < 0 {
                return Some(None);
            }
            let end = at.checked_add(len as usize)?;
            let bytes = raw.get(*at..end)?;
            *at = end;
            return Some(Some(bytes));
        }
    }
    None
}

/// One record lent by [`RecordReader::next_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub meta: RecordMeta,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// Reads the records of one batch payload, one at a time. Build it with [`RecordReader::new`]
/// over any reader, or [`RecordReader::for_batch`] over a whole stored batch; reuse buffers
/// across batches with [`RecordReader::into_buffers`] and [`RecordReader::with_buffers`].
pub struct RecordReader<R> {
    src: R,
    codec: Compression,
    chunk: Vec<u8>,
    pos: usize,
    end: usize,
    /// The current record's bytes (after its length) when `next_record` keeps it.
    record: Vec<u8>,
    capture: bool,
    /// Whether the record being walked is kept (`next_record`) once its length is read.
    keep: bool,
    /// Bytes consumed from the decoded stream.
    consumed: u64,
}

/// Reusable buffers of a [`RecordReader`].
#[derive(Debug, Default)]
pub struct ReaderBuffers {
    chunk: Vec<u8>,
    record: Vec<u8>,
}

impl<'a> RecordReader<compression::Decoder<'a>> {
    /// A reader over the records of a whole stored batch (header included), decompressing
    /// with an output bound. Errors if the codec is unknown or the batch is shorter than a
    /// header; the header's own checks are `batch::validate`'s job.
    pub fn for_batch(
        batch: &'a [u8],
        max_decompressed_bytes: u64,
        buffers: ReaderBuffers,
    ) -> Result<Self, RecordError> {
        let header = batch
            .get(..HEADER_SIZE)
            .ok_or(RecordError::Malformed("shorter than a batch header"))?;
        let attributes = i16::from_be_bytes([header[21], header[22]]);
        let codec = Compression::from_attributes(attributes)?;
        let decoder = compression::decoder(codec, &batch[HEADER_SIZE..], max_decompressed_bytes)?;
        Ok(RecordReader::with_buffers(decoder, codec, buffers))
    }
}

impl<R: Read> RecordReader<R> {
    /// A reader over an uncompressed record stream (`codec` only names errors).
    pub fn new(src: R, codec: Compression) -> Self {
        Self::with_buffers(src, codec, ReaderBuffers::default())
    }

    pub fn with_buffers(src: R, codec: Compression, buffers: ReaderBuffers) -> Self {
        let mut chunk = buffers.chunk;
        chunk.resize(READ_CHUNK_BYTES, 0);
        RecordReader {
            src,
            codec,
            chunk,
            pos: 0,
            end: 0,
            record: buffers.record,
            capture: false,
            keep: false,
            consumed: 0,
        }
    }

    /// Gives the buffers back for the next batch.
    pub fn into_buffers(self) -> ReaderBuffers {
        ReaderBuffers {
            chunk: self.chunk,
            record: self.record,
        }
    }

    /// Decoded bytes consumed so far.
    pub fn consumed_bytes(&self) -> u64 {
        self.consumed
    }

    /// True when the stream has no more bytes (the batch holds no further record).
    pub fn at_end(&mut self) -> Result<bool, RecordError> {
        Ok(!self.fill()?)
    }

    fn fill(&mut self) -> Result<bool, RecordError> {
        if self.pos < self.end {
            return Ok(true);
        }
        let n = loop {
            match self.src.read(&mut self.chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(compression::from_io(self.codec, e).into()),
            }
        };
        self.pos = 0;
        self.end = n;
        Ok(n > 0)
    }

    fn parse(&mut self, keep: bool) -> Result<Option<RecordMeta>, RecordError> {
        self.capture = false;
        self.keep = keep;
        walk_record(self)
    }

    /// The next record's fields, checked against its length, without keeping key, value or
    /// headers. `None` at the end of the stream.
    pub fn skip_record(&mut self) -> Result<Option<RecordMeta>, RecordError> {
        self.parse(false)
    }

    /// The next record, kept in the reader's reused buffer until the next call.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, RecordError> {
        let Some(meta) = self.parse(true)? else {
            return Ok(None);
        };
        let raw = &self.record[..];
        // The fields were checked by `parse`; walk them again over the kept bytes.
        let mut at = 1; // attributes
        skip_varint(raw, &mut at); // timestampDelta
        skip_varint(raw, &mut at); // offsetDelta
        let malformed = RecordError::Malformed("record changed while read");
        let key = slice_bytes(raw, &mut at).ok_or(RecordError::Malformed("key"))?;
        let value = slice_bytes(raw, &mut at).ok_or(RecordError::Malformed("value"))?;
        skip_varint(raw, &mut at); // headerCount
        let headers = raw.get(at..).ok_or(malformed)?;
        Ok(Some(Record {
            meta,
            key,
            value,
            headers: Headers::from_raw(meta.header_count, headers),
        }))
    }
}

/// Where a record walk reads its fields: a (decoded) stream through the reader's chunk
/// buffer, or a payload in memory. One walk over both ([`walk_record`]), so the produce
/// path's in-place validation ([`SliceRecords`]) and the reader ([`RecordReader`]) check the
/// same things in the same order, with the same errors.
trait FieldSource {
    /// Whether another record starts here (false at the end of the payload).
    fn has_more(&mut self) -> Result<bool, RecordError>;
    fn byte(&mut self) -> Result<u8, RecordError>;
    /// Bytes consumed so far.
    fn position(&self) -> u64;
    /// Skips `n` bytes of a field ending the record at `limit`: overrunning the record is
    /// checked before running out of bytes.
    fn skip(&mut self, n: u64, limit: u64) -> Result<(), RecordError>;
    /// Told when the record's fields start (after its length) and when they end.
    fn fields(&mut self, _started: bool) {}
}

/// A zig-zag varint of at most `max_bytes` bytes (5 for int, 10 for long).
fn varint(src: &mut impl FieldSource, max_bytes: u32) -> Result<i64, RecordError> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let b = src.byte()?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(RecordError::Malformed("varint too long"))
}

fn int(src: &mut impl FieldSource) -> Result<i32, RecordError> {
    i32::try_from(varint(src, 5)?).map_err(|_| RecordError::Malformed("varint out of range"))
}

/// A nullable length, then skips that many bytes; returns the length (-1 for null).
fn blob(src: &mut impl FieldSource, limit: u64) -> Result<i32, RecordError> {
    let len = int(src)?;
    if len < -1 {
        return Err(RecordError::Malformed("negative length"));
    }
    if len > 0 {
        src.skip(len as u64, limit)?;
    }
    Ok(len)
}

/// The next record's fields, checked against its length. `None` at the end of the payload.
fn walk_record(src: &mut impl FieldSource) -> Result<Option<RecordMeta>, RecordError> {
    if !src.has_more()? {
        return Ok(None);
    }
    let size = int(src)?;
    let size = u32::try_from(size).map_err(|_| RecordError::Malformed("negative length"))?;
    let limit = src.position() + u64::from(size);
    src.fields(true);
    let attributes = src.byte()? as i8;
    let timestamp_delta = varint(src, 10)?;
    let offset_delta = int(src)?;
    let key_len = blob(src, limit)?;
    let value_len = blob(src, limit)?;
    let header_count = int(src)?;
    let header_count =
        u32::try_from(header_count).map_err(|_| RecordError::Malformed("negative header count"))?;
    // Bounded: each header takes at least two bytes of the record's length.
    if u64::from(header_count) * 2 > u64::from(size) {
        return Err(RecordError::Malformed(
            "header count exceeds the record length",
        ));
    }
    for _ in 0..header_count {
        if blob(src, limit)? < 0 {
            return Err(RecordError::Malformed("null header key"));
        }
        blob(src, limit)?;
    }
    src.fields(false);
    if src.position() != limit {
        return Err(RecordError::Malformed(
            "record fields do not fill the record length",
        ));
    }
    Ok(Some(RecordMeta {
        size_bytes: size,
        attributes,
        timestamp_delta,
        offset_delta,
        key_len,
        value_len,
        header_count,
    }))
}

impl<R: Read> FieldSource for RecordReader<R> {
    fn has_more(&mut self) -> Result<bool, RecordError> {
        self.fill()
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        if !self.fill()? {
            return Err(RecordError::Truncated);
        }
        let b = self.chunk[self.pos];
        self.pos += 1;
        self.consumed += 1;
        if self.capture {
            self.record.push(b);
        }
        Ok(b)
    }

    fn position(&self) -> u64 {
        self.consumed
    }

    /// Consumes `n` bytes (keeping them when capturing).
    fn skip(&mut self, n: u64, limit: u64) -> Result<(), RecordError> {
        if self.consumed + n > limit {
            return Err(RecordError::Malformed("field overruns the record length"));
        }
        let mut left = n;
        while left > 0 {
            if !self.fill()? {
                return Err(RecordError::Truncated);
            }
            let take = (self.end - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            if self.capture {
                self.record
                    .extend_from_slice(&self.chunk[self.pos..self.pos + take]);
            }
            self.pos += take;
            self.consumed += take as u64;
            left -= take as u64;
        }
        Ok(())
    }

    /// Keeps the record's bytes after its length, when `next_record` asked for them.
    fn fields(&mut self, started: bool) {
        if started {
            self.capture = self.keep;
            self.record.clear();
        } else {
            self.capture = false;
        }
    }
}

impl FieldSource for SliceRecords<'_> {
    fn has_more(&mut self) -> Result<bool, RecordError> {
        Ok(self.at < self.raw.len())
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        let b = *self.raw.get(self.at).ok_or(RecordError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn position(&self) -> u64 {
        self.at as u64
    }

    fn skip(&mut self, n: u64, limit: u64) -> Result<(), RecordError> {
        let end = self.at as u64 + n;
        if end > limit {
            return Err(RecordError::Malformed("field overruns the record length"));
        }
        if end > self.raw.len() as u64 {
            return Err(RecordError::Truncated);
        }
        self.at = end as usize;
        Ok(())
    }
}

/// Walks the records of an uncompressed payload in place: [`RecordReader::skip_record`]'s
/// walk ([`walk_record`]), without copying the payload through a chunk buffer. Produce
/// validation of uncompressed batches (the common case, and every byte of it) goes through
/// here; compressed ones need the reader.
#[derive(Debug, Clone)]
pub struct SliceRecords<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> SliceRecords<'a> {
    /// A walker over `payload`, the bytes after a batch header.
    pub fn new(payload: &'a [u8]) -> Self {
        SliceRecords {
            raw: payload,
            at: 0,
        }
    }

    /// The next record's fields, checked against its length. `None` at the end of the payload.
    pub fn skip_record(&mut self) -> Result<Option<RecordMeta>, RecordError> {
        walk_record(self)
    }
}

fn skip_varint(raw: &[u8], at: &mut usize) {
    while let Some(b) = raw.get(*at) {
        *at += 1;
        if b & 0x80 == 0 {
            return;
        }
    }
}

/// Appends a zig-zag varint (Kafka's varint and varlong share the encoding).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// One record to add to a [`BatchBuilder`].
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Offset minus the batch's base offset. The cleaner keeps the original deltas, so they
    /// may have gaps; they must increase.
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// The batch header fields a [`BatchBuilder`] does not derive from its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpec {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// Attributes other than the codec bits (timestamp type, transactional, control), which the
    /// builder sets from its codec.
    pub attributes: i16,
    pub base_timestamp: i64,
    /// `None`: the largest record timestamp. Kafka's LogAppendTime batches carry the append
    /// time here, whatever the records say.
    pub max_timestamp: Option<i64>,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            base_timestamp: 0,
            max_timestamp: None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// Builds one v2 batch record by record. Record bytes go to a buffer the builder owns (give it
/// one to reuse with [`BatchBuilder::with_buffer`]); `finish` compresses them and writes the
/// header and CRC-32C.
pub struct BatchBuilder {
    spec: BatchSpec,
    codec: Compression,
    records: Vec<u8>,
    body: Vec<u8>,
    count: i32,
    last_offset_delta: i32,
    max_timestamp_delta: i64,
}

impl BatchBuilder {
    pub fn new(spec: BatchSpec, codec: Compression) -> Self {
        Self::with_buffer(spec, codec, Vec::new())
    }

    /// Like [`BatchBuilder::new`], writing records into `buffer` (cleared first).
    pub fn with_buffer(spec: BatchSpec, codec: Compression, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        BatchBuilder {
            spec,
            codec,
            records: buffer,
            body: Vec::new(),
            count: 0,
            last_offset_delta: -1,
            max_timestamp_delta: i64::MIN,
        }
    }

    /// Records added so far.
    pub fn count(&self) -> i32 {
        self.count
    }

    /// Adds a record. Panics (a caller bug) if its offset delta does not increase.
    pub fn push(&mut self, r: &NewRecord<'_>) {
        assert!(
            r.offset_delta > self.last_offset_delta,
            "offset deltas must increase: {} after {}",
            r.offset_delta,
            self.last_offset_delta
        );
        let body = &mut self.body;
        body.clear();
        body.push(0); // record attributes: unused in v2
        put_varint(body, r.timestamp_delta);
        put_varint(body, i64::from(r.offset_delta));
        put_bytes(body, r.key);
        put_bytes(body, r.value);
        put_varint(body, i64::from(r.headers.count()));
        body.extend_from_slice(r.headers.raw());
        put_varint(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(body);
        self.count += 1;
        self.last_offset_delta = r.offset_delta;
        self.max_timestamp_delta = self.max_timestamp_delta.max(r.timestamp_delta);
    }

    /// Keeps a larger lastOffsetDelta than the last record's (the cleaner preserves a batch's
    /// offset range when it drops its last records, as Kafka does).
    pub fn set_last_offset_delta(&mut self, last_offset_delta: i32) {
        self.last_offset_delta = self.last_offset_delta.max(last_offset_delta);
    }

    /// Appends the finished batch to `out` and returns the record buffer for reuse.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<Vec<u8>, CompressionError> {
        let start = out.len();
        let spec = self.spec;
        let max_timestamp = spec.max_timestamp.unwrap_or(if self.count == 0 {
            spec.base_timestamp
        } else {
            spec.base_timestamp.saturating_add(self.max_timestamp_delta)
        });
        out.extend_from_slice(&spec.base_offset.to_be_bytes());
        out.extend_from_slice(&[0; 4]); // batchLength, below
        out.extend_from_slice(&spec.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]); // crc, below
        let attributes = (spec.attributes & !0x07) | self.codec.attribute_bits();
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&self.last_offset_delta.max(0).to_be_bytes());
        out.extend_from_slice(&spec.base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&spec.producer_id.to_be_bytes());
        out.extend_from_slice(&spec.producer_epoch.to_be_bytes());
        out.extend_from_slice(&spec.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        compression::compress(self.codec, &self.records, out)?;
        let batch_length = (out.len() - start - LOG_OVERHEAD) as i32;
        out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + CRC_START..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
        Ok(self.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{self, BatchHeader};
    use proptest::prelude::*;

    type Rec = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn build(records: &[Rec], codec: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(
            BatchSpec {
                base_timestamp: 1_000,
                partition_leader_epoch: 0,
                ..BatchSpec::default()
            },
            codec,
        );
        let mut hbuf = Vec::new();
        for (i, (ts, k, v, h)) in records.iter().enumerate() {
            let hs: Vec<(&[u8], Option<&[u8]>)> =
                h.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
            let headers = Headers::encode(&hs, &mut hbuf);
            b.push(&NewRecord {
                offset_delta: i as i32,
                timestamp_delta: *ts,
                key: k.as_deref(),
                value: v.as_deref(),
                headers,
            });
        }
        let mut out = Vec::new();
        b.finish(&mut out).unwrap();
        out
    }

    fn codec_strategy() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
            Just(Compression::Lz4),
            Just(Compression::Zstd),
        ]
    }

    fn record_strategy() -> impl Strategy<Value = Rec> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        (
            0i64..1_000_000,
            bytes(),
            bytes(),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..8), bytes()),
                0..3,
            ),
        )
    }

    #[test]
    fn built_batch_passes_header_validation_and_matches_the_client_format() {
        // Same records as batch::build_batch writes: the two encoders must agree byte for byte.
        let value = b"hello".to_vec();
        let recs: Vec<Rec> = (0..3)
            .map(|i| (i, None, Some(value.clone()), vec![]))
            .collect();
        let ours = build(&recs, Compression::None);
        let reference = batch::build_batch(3, b"hello", 1_000);
        assert_eq!(ours, reference);
        batch::validate(&ours, 1 << 20).unwrap();
    }

    #[test]
    fn fields_must_fill_the_record_length() {
        let mut b = batch::build_batch(1, b"abc", 0);
        // The first record's length varint sits right after the header; claim one more byte.
        b[HEADER_SIZE] += 2;
        let mut r = RecordReader::for_batch(&b, 1 << 20, ReaderBuffers::default()).unwrap();
        assert!(matches!(
            r.skip_record(),
            Err(RecordError::Malformed(_) | RecordError::Truncated)
        ));
    }

    proptest! {
        #[test]
        fn records_round_trip(recs in proptest::collection::vec(record_strategy(), 1..20), codec in codec_strategy()) {
            let b = build(&recs, codec);
            let h = BatchHeader::parse(&b).unwrap();
            prop_assert_eq!(h.record_count as usize, recs.len());
            prop_assert_eq!(h.total_size(), b.len());
            batch::validate(&b, 1 << 20).unwrap();
            let mut r = RecordReader::for_batch(&b, 1 << 20, ReaderBuffers::default()).unwrap();
            for (i, (ts, k, v, hs)) in recs.iter().enumerate() {
                let rec = r.next_record().unwrap().unwrap();
                prop_assert_eq!(rec.meta.offset_delta, i as i32);
                prop_assert_eq!(rec.meta.timestamp_delta, *ts);
                prop_assert_eq!(rec.key, k.as_deref());
                prop_assert_eq!(rec.value, v.as_deref());
                let got: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                    rec.headers.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
                prop_assert_eq!(&got, hs);
            }
            prop_assert!(r.next_record().unwrap().is_none());
            // skip_record sees the same metadata.
            let mut r = RecordReader::for_batch(&b, 1 << 20, r.into_buffers()).unwrap();
            let mut n = 0;
            while let Some(meta) = r.skip_record().unwrap() {
                prop_assert_eq!(meta.offset_delta, n);
                n += 1;
            }
            prop_assert_eq!(n as usize, recs.len());
        }

        /// The in-place walker agrees with the streaming reader on every payload, honest or
        /// not: same records, then the same error variant and message at the same record.
        #[test]
        fn slice_walker_matches_the_reader(
            recs in proptest::collection::vec(record_strategy(), 0..8),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let mut payload = build(&recs, Compression::None)[HEADER_SIZE..].to_vec();
            for (at, byte) in flips {
                if !payload.is_empty() {
                    let at = at % payload.len();
                    payload[at] = byte;
                }
            }
            if let Some(cut) = cut {
                payload.truncate(cut % (payload.len() + 1));
            }
            let mut reader = RecordReader::new(&payload[..], Compression::None);
            let mut walker = SliceRecords::new(&payload);
            // Bounded: every record consumes at least one byte of the payload.
            for _ in 0..=payload.len() {
                let (a, b) = (reader.skip_record(), walker.skip_record());
                match (&a, &b) {
                    (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
                    (Err(x), Err(y)) => prop_assert_eq!(x.to_string(), y.to_string()),
                    _ => prop_assert!(false, "reader {:?} but walker {:?}", a, b),
                }
                if !matches!(a, Ok(Some(_))) {
                    break;
                }
            }
        }

        /// Garbage records (any codec bits) give an error or records, never a panic or a hang.
        #[test]
        fn garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..600), codec in codec_strategy()) {
            let mut b = batch::build_batch(1, b"x", 0);
            b.truncate(HEADER_SIZE);
            b[22] = codec.attribute_bits() as u8;
            b.extend_from_slice(&payload);
            let Ok(mut r) = RecordReader::for_batch(&b, 4096, ReaderBuffers::default()) else {
                return Ok(());
            };
            for _ in 0..1000 {
                match r.next_record() {
                    Ok(Some(rec)) => {
                        let _ = rec.headers.iter().count();
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
