//! Kafka record batch v2 (magic 2): header layout, validation, and the little record parsing
//! storage needs (timestamps for ListOffsets). Batches are stored as the producer sent them.
//!
//! ```text
//! 0  baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
//! ```
//! The CRC-32C covers bytes 21..end, so the log may rewrite baseOffset and the leader epoch
//! without re-checksumming. A `LogAppendTime` topic also rewrites attributes and maxTimestamp
//! ([`stamp_log_append_time`]), which does need a new CRC.

use std::io::Read;

use crate::compression::{self, Compression, CompressionError};
use crate::error::{Result, StorageError};
use crate::records::{ReaderBuffers, RecordError, RecordMeta, RecordReader, SliceRecords};

/// Bytes before `batchLength` counts from: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 header.
pub const HEADER_SIZE: usize = 61;
pub const MAGIC_V2: i8 = 2;
/// The smallest possible record: length, attributes, timestamp delta, offset delta, key length,
/// value length, header count, one byte each.
const MIN_RECORD_SIZE: usize = 7;
const CRC_START: usize = 21;

const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;
/// Attribute bit 3: the batch's timestamps are LogAppendTime (set by the broker): every record's
/// timestamp is the batch's maxTimestamp, whatever its delta says.
pub const LOG_APPEND_TIME_FLAG: i16 = 0x08;

/// A read-only view of one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the batchLength field.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence of the first record (-1 when the producer is not idempotent).
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2-byte slice"))
}

impl BatchHeader {
    /// Parses the fixed header; `bytes` must hold at least [`HEADER_SIZE`] bytes.
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < HEADER_SIZE {
            return None;
        }
        Some(BatchHeader {
            base_offset: i64_at(bytes, 0),
            batch_length: i32_at(bytes, 8),
            partition_leader_epoch: i32_at(bytes, 12),
            magic: bytes[16] as i8,
            crc: u32::from_be_bytes(bytes[17..21].try_into().expect("4-byte slice")),
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        })
    }

    /// Whole size of the batch on disk, header included.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    /// Written inside a transaction (attributes bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// A control batch (transaction marker; attributes bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// The timestamp type is LogAppendTime (attributes bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME_FLAG != 0
    }

    /// The first record's timestamp as readers see it: the append time (maxTimestamp) for a
    /// LogAppendTime batch, baseTimestamp otherwise. `segment.ms` counts from it.
    pub fn first_timestamp(&self) -> i64 {
        if self.is_log_append_time() {
            self.max_timestamp
        } else {
            self.base_timestamp
        }
    }

    /// Sequence of the last record, with Kafka's wrap-around after `i32::MAX`.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        crate::producer_state::increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// Checks one batch at the front of `bytes` and returns its header. Used on the produce path
/// and by recovery; the two must agree on what a valid batch is (TigerStyle: pair assertions).
pub fn validate(bytes: &[u8], max_batch_size: usize) -> Result<BatchHeader> {
    check(bytes, max_batch_size, false)
}

/// [`validate`] for a batch already in the log: the cleaner removes records from a batch and
/// keeps its last offset (as Kafka does, so offsets and producer sequences stay put), so a
/// stored batch may have `lastOffsetDelta` above `recordCount - 1`.
pub fn validate_stored(bytes: &[u8], max_batch_size: usize) -> Result<BatchHeader> {
    check(bytes, max_batch_size, true)
}

fn check(bytes: &[u8], max_batch_size: usize, cleaned: bool) -> Result<BatchHeader> {
    let corrupt = |reason: String| StorageError::CorruptRecord { reason };
    let header = BatchHeader::parse(bytes).ok_or_else(|| {
        corrupt(format!(
            "{} bytes is shorter than a batch header",
            bytes.len()
        ))
    })?;
    if header.magic != MAGIC_V2 {
        return Err(corrupt(format!(
            "magic {} (only v2 batches are stored)",
            header.magic
        )));
    }
    if (header.batch_length as i64) < (HEADER_SIZE - LOG_OVERHEAD) as i64 {
        return Err(corrupt(format!(
            "batchLength {} is below the header size",
            header.batch_length
        )));
    }
    let size = header.total_size();
    if size > max_batch_size {
        return Err(StorageError::RecordTooLarge {
            size: size as u64,
            max: max_batch_size as u64,
        });
    }
    if size > bytes.len() {
        return Err(corrupt(format!(
            "batchLength {} overruns the {} bytes given",
            header.batch_length,
            bytes.len()
        )));
    }
    let crc = crc32c::crc32c(&bytes[CRC_START..size]);
    if crc != header.crc {
        return Err(corrupt(format!(
            "CRC-32C {crc:#010x} does not match header {:#010x}",
            header.crc
        )));
    }
    let invalid = |reason: String| StorageError::InvalidRecord { reason };
    if header.record_count <= 0 {
        return Err(invalid(format!("record count {}", header.record_count)));
    }
    let deltas_ok = if cleaned {
        header.last_offset_delta >= header.record_count - 1
    } else {
        header.last_offset_delta == header.record_count - 1
    };
    if !deltas_ok {
        return Err(invalid(format!(
            "lastOffsetDelta {} does not match record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    if header.compression() == 0
        && (header.record_count as usize) * MIN_RECORD_SIZE > size - HEADER_SIZE
    {
        return Err(invalid(format!(
            "{} records cannot fit in {} bytes",
            header.record_count,
            size - HEADER_SIZE
        )));
    }
    Ok(header)
}

/// Checks the records inside every batch of a produce request against their headers, as
/// Kafka's `LogValidator` does for client appends: the batch holds exactly `recordCount`
/// well-framed records, their offset deltas run 0, 1, 2, ..., and (CreateTime batches) the
/// header's maxTimestamp is the largest record timestamp. Compressed batches are decompressed
/// in a streaming pass that keeps no record and stops with [`StorageError::DecompressedTooLarge`]
/// once more than `max_decompressed_bytes` come out, so memory stays at a read buffer plus one
/// codec window however large the batch inflates.
///
/// Batch headers must already be sane ([`validate_all`]): this walks batches by their
/// `batchLength` and only checks that each lies within `bytes`. Blocking (CPU) work: run it
/// on a blocking pool.
pub fn validate_records_all(bytes: &[u8], max_decompressed_bytes: u64) -> Result<()> {
    validate_produced_records(bytes, max_decompressed_bytes, None)
}

/// [`validate_records_all`], and for a compacted topic (`keys_required_in` names its
/// partition) also Kafka's rule that every record of a data batch has a key, checked in the
/// same pass so a compressed batch is decompressed once.
pub fn validate_produced_records(
    bytes: &[u8],
    max_decompressed_bytes: u64,
    keys_required_in: Option<&crate::TopicPartition>,
) -> Result<()> {
    validate_produced(
        bytes,
        &ProduceChecks {
            max_decompressed_bytes,
            keys_required_in,
            timestamp_bounds_ms: None,
        },
    )
}

/// What [`validate_produced`] checks besides framing.
#[derive(Debug, Clone, Copy)]
pub struct ProduceChecks<'a> {
    /// Bound on any compressed batch's decompressed size.
    pub max_decompressed_bytes: u64,
    /// A compacted topic's partition: every data record must have a key.
    pub keys_required_in: Option<&'a crate::TopicPartition>,
    /// `[earliest, latest]` record timestamps accepted (the broker's clock less
    /// `message.timestamp.before.max.ms`, plus `after.max.ms`), for CreateTime topics;
    /// records outside are [`StorageError::InvalidTimestamp`].
    pub timestamp_bounds_ms: Option<(i64, i64)>,
}

/// [`validate_produced_records`] with every check of [`ProduceChecks`].
pub fn validate_produced(bytes: &[u8], checks: &ProduceChecks<'_>) -> Result<()> {
    let (max_decompressed_bytes, keys_required_in) =
        (checks.max_decompressed_bytes, checks.keys_required_in);
    let mut buffers = ReaderBuffers::default();
    let mut at = 0;
    // Bounded: every iteration consumes at least HEADER_SIZE bytes.
    while at < bytes.len() {
        let header =
            BatchHeader::parse(&bytes[at..]).ok_or_else(|| StorageError::CorruptRecord {
                reason: "trailing bytes shorter than a batch header".into(),
            })?;
        let size = header.total_size().max(HEADER_SIZE);
        let batch = bytes
            .get(at..at + size)
            .ok_or_else(|| StorageError::CorruptRecord {
                reason: format!("batchLength {} overruns the request", header.batch_length),
            })?;
        let keys_required_in = keys_required_in.filter(|_| header.attributes & CONTROL_FLAG == 0);
        let bounds = checks
            .timestamp_bounds_ms
            .filter(|_| header.attributes & CONTROL_FLAG == 0);
        buffers = validate_records(
            batch,
            &header,
            (max_decompressed_bytes, keys_required_in, bounds),
            buffers,
        )?;
        at += size;
    }
    Ok(())
}

/// [`validate_records_all`] for one batch; returns the reader's buffers for the next.
type RecordChecks<'a> = (u64, Option<&'a crate::TopicPartition>, Option<(i64, i64)>);

fn validate_records(
    batch: &[u8],
    header: &BatchHeader,
    checks: RecordChecks<'_>,
    buffers: ReaderBuffers,
) -> Result<ReaderBuffers> {
    let max_decompressed_bytes = checks.0;
    let record_error = |e: RecordError| match e {
        RecordError::Compression(CompressionError::OutputTooLarge {
            max_output_bytes, ..
        }) => StorageError::DecompressedTooLarge {
            max_bytes: max_output_bytes,
        },
        RecordError::Compression(e) => StorageError::CorruptRecord {
            reason: e.to_string(),
        },
        e => StorageError::InvalidRecord {
            reason: e.to_string(),
        },
    };
    if header.compression() == 0 {
        // Uncompressed bytes are already in memory and bounded by max.message.bytes: walk the
        // records where they lie, with no copy through the reader's buffer.
        let payload = batch
            .get(HEADER_SIZE..)
            .ok_or(RecordError::Malformed("shorter than a batch header"))
            .map_err(record_error)?;
        let mut records = SliceRecords::new(payload);
        check_records(header, checks, || {
            records.skip_record().map_err(record_error)
        })?;
        return Ok(buffers);
    }
    let mut reader =
        RecordReader::for_batch(batch, max_decompressed_bytes, buffers).map_err(record_error)?;
    check_records(header, checks, || {
        reader.skip_record().map_err(record_error)
    })?;
    Ok(reader.into_buffers())
}

/// The per-record checks of [`validate_records`] over the records `next` yields one by one.
fn check_records(
    header: &BatchHeader,
    (_, keys_required_in, timestamp_bounds_ms): RecordChecks<'_>,
    mut next: impl FnMut() -> Result<Option<RecordMeta>>,
) -> Result<()> {
    let invalid = |reason: String| StorageError::InvalidRecord { reason };
    let mut count: i64 = 0;
    let mut max_timestamp = i64::MIN;
    // Bounded by the decompressed bytes: every record consumes at least one.
    while let Some(record) = next()? {
        if i64::from(record.offset_delta) != count {
            return Err(invalid(format!(
                "record {count} has offset delta {} (deltas must run 0, 1, 2, ...)",
                record.offset_delta
            )));
        }
        if let (Some(tp), true) = (keys_required_in, record.key_len < 0) {
            return Err(invalid(format!(
                "Compacted topic cannot accept message without key in topic partition {tp}."
            )));
        }
        let timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
        if let Some((earliest, latest)) = timestamp_bounds_ms {
            if timestamp < earliest || timestamp > latest {
                return Err(StorageError::InvalidTimestamp {
                    reason: format!(
                        "Timestamp {timestamp} of message with offset {count} is out of range. \
                         The timestamp should be within [{earliest}, {latest}]"
                    ),
                });
            }
        }
        count += 1;
        if count > i64::from(header.record_count) {
            return Err(invalid(format!(
                "batch holds more records than its count {}",
                header.record_count
            )));
        }
        max_timestamp = max_timestamp.max(timestamp);
    }
    if count != i64::from(header.record_count) {
        return Err(invalid(format!(
            "batch claims {} records but holds {count}",
            header.record_count
        )));
    }
    if header.attributes & LOG_APPEND_TIME_FLAG == 0 && max_timestamp != header.max_timestamp {
        return Err(invalid(format!(
            "maxTimestamp {} differs from the largest record timestamp {max_timestamp}",
            header.max_timestamp
        )));
    }
    Ok(())
}

/// Validates every batch in `bytes` (a produce request's records) and returns their headers.
/// Trailing bytes that do not form a whole batch are an error: Kafka rejects partial batches
/// on produce.
pub fn validate_all(bytes: &[u8], max_batch_size: usize) -> Result<Vec<BatchHeader>> {
    let mut headers = Vec::new();
    let mut at = 0;
    // Bounded: every iteration consumes at least HEADER_SIZE bytes.
    while at < bytes.len() {
        let header = validate(&bytes[at..], max_batch_size)?;
        at += header.total_size();
        headers.push(header);
    }
    if headers.is_empty() {
        return Err(StorageError::InvalidRecord {
            reason: "no record batches".into(),
        });
    }
    Ok(headers)
}

/// The header of `batch` (a validated batch; `header` is its parsed header with the fields the
/// log assigns: base offset, leader epoch) stamped with LogAppendTime: attributes bit 3 set,
/// maxTimestamp `append_time_ms`, and the CRC-32C recomputed over the new header tail and the
/// unchanged records (continued over `batch`'s bytes, which are neither copied nor changed).
/// Updates `header` to match. The caller writes the returned bytes in place of the first
/// [`HEADER_SIZE`] bytes of `batch`, as Kafka's `setMaxTimestamp(LOG_APPEND_TIME, now)` does;
/// baseTimestamp and the records' deltas stay as the producer sent them.
pub fn stamp_log_append_time(
    batch: &[u8],
    header: &mut BatchHeader,
    append_time_ms: i64,
) -> [u8; HEADER_SIZE] {
    let size = header.total_size();
    debug_assert!(size >= HEADER_SIZE && size <= batch.len());
    header.attributes |= LOG_APPEND_TIME_FLAG;
    header.max_timestamp = append_time_ms;
    let mut out = [0u8; HEADER_SIZE];
    out.copy_from_slice(&batch[..HEADER_SIZE]);
    out[0..8].copy_from_slice(&header.base_offset.to_be_bytes());
    out[12..16].copy_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out[21..23].copy_from_slice(&header.attributes.to_be_bytes());
    out[35..43].copy_from_slice(&header.max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[CRC_START..]), &batch[HEADER_SIZE..size]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    header.crc = crc;
    out
}

/// Rewrites every batch of `bytes` (a produce request's validated batches) whose codec is not
/// `target` into `target` at `level`, as Kafka's `LogValidator` does for a topic whose
/// `compression.type` names a codec. The records are decompressed (bounded by
/// `max_decompressed_bytes`) and compressed again unchanged; the header keeps every field but
/// the codec bits, the length and the CRC. Control batches and batches already in `target`
/// are copied as they are. Returns `None` when no batch needs it (the common case copies
/// nothing).
///
/// # Errors
/// A payload that does not decompress, or inflates past the bound.
pub fn recompress_all(
    bytes: &[u8],
    target: Compression,
    level: Option<i32>,
    max_decompressed_bytes: u64,
) -> Result<Option<Vec<u8>>> {
    let needs = |h: &BatchHeader| {
        h.attributes & CONTROL_FLAG == 0 && h.compression() != target.attribute_bits()
    };
    let mut headers = Vec::new();
    let mut at = 0;
    // Bounded: every iteration consumes at least HEADER_SIZE bytes.
    while at + HEADER_SIZE <= bytes.len() {
        let Some(h) = BatchHeader::parse(&bytes[at..]) else {
            break;
        };
        let size = h.total_size().max(HEADER_SIZE);
        headers.push((at, size, h));
        at += size;
    }
    if !headers.iter().any(|(_, _, h)| needs(h)) {
        return Ok(None);
    }
    let corrupt = |e: CompressionError| match e {
        CompressionError::OutputTooLarge {
            max_output_bytes, ..
        } => StorageError::DecompressedTooLarge {
            max_bytes: max_output_bytes,
        },
        e => StorageError::CorruptRecord {
            reason: e.to_string(),
        },
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut plain = Vec::new();
    for (at, size, h) in headers {
        let batch = bytes
            .get(at..at + size)
            .ok_or_else(|| StorageError::CorruptRecord {
                reason: format!("batchLength {} overruns the request", h.batch_length),
            })?;
        if !needs(&h) {
            out.extend_from_slice(batch);
            continue;
        }
        let codec = Compression::from_attributes(h.attributes).map_err(corrupt)?;
        plain.clear();
        let mut decoder =
            compression::decoder(codec, &batch[HEADER_SIZE..], max_decompressed_bytes)
                .map_err(corrupt)?;
        decoder
            .read_to_end(&mut plain)
            .map_err(|e| corrupt(compression::from_io(codec, e)))?;
        let start = out.len();
        out.extend_from_slice(&batch[..HEADER_SIZE]);
        compression::compress_with_level(target, level, &plain, &mut out).map_err(corrupt)?;
        let new_size = out.len() - start;
        let batch_length =
            i32::try_from(new_size - LOG_OVERHEAD).map_err(|_| StorageError::RecordTooLarge {
                size: new_size as u64,
                max: i32::MAX as u64,
            })?;
        let attributes = (h.attributes & !COMPRESSION_MASK) | target.attribute_bits();
        out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
        out[start + 21..start + 23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + CRC_START..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(Some(out))
}

/// Reads a zig-zag varint; `None` on truncation. Kafka records use these for lengths and deltas.
pub(crate) fn read_varlong(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// Offsets and timestamps of the records of an uncompressed batch, in order (for a
/// LogAppendTime batch every record has the batch's maxTimestamp, as clients read it). Returns
/// `None` for compressed batches (storage does not decompress) or malformed records.
pub fn record_timestamps(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != 0 {
        return None;
    }
    let end = header.total_size().min(batch.len());
    let mut at = HEADER_SIZE;
    // Capacity from what can fit, not from the (untrusted) count.
    let fits = end.saturating_sub(HEADER_SIZE) / MIN_RECORD_SIZE;
    let mut out = Vec::with_capacity((header.record_count.max(0) as usize).min(fits));
    for _ in 0..header.record_count {
        let len = read_varlong(batch, &mut at)?;
        let record_end = at.checked_add(usize::try_from(len).ok()?)?;
        if record_end > end {
            return None;
        }
        at += 1; // attributes
        let ts_delta = read_varlong(batch, &mut at)?;
        let offset_delta = read_varlong(batch, &mut at)?;
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.saturating_add(ts_delta)
        };
        out.push((header.base_offset + offset_delta, timestamp));
        at = record_end;
    }
    Some(out)
}

/// Test support: builds a valid uncompressed v2 batch with `count` records of the given
/// value size. Public so benches and the broker's tests can make batches without a client.
pub fn build_batch(count: usize, value: &[u8], base_timestamp: i64) -> Vec<u8> {
    build_producer_batch(count, value, base_timestamp, ProducerFields::NONE)
}

/// The producer fields of a batch header, for [`build_producer_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Attribute bits besides compression (transactional 0x10, control 0x20).
    pub attributes: i16,
}

impl ProducerFields {
    /// A batch from a producer that is not idempotent.
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        attributes: 0,
    };

    /// An idempotent producer's batch.
    pub fn idempotent(producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        ProducerFields {
            producer_id,
            producer_epoch,
            base_sequence,
            attributes: 0,
        }
    }
}

/// Test support: like [`build_batch`], with a producer id, epoch, sequence and attributes.
pub fn build_producer_batch(
    count: usize,
    value: &[u8],
    base_timestamp: i64,
    producer: ProducerFields,
) -> Vec<u8> {
    let varlong = crate::records::put_varint;
    assert!(count > 0, "a batch holds at least one record");
    let mut records = Vec::with_capacity(count * (value.len() + 16));
    let mut body = Vec::with_capacity(value.len() + 16);
    for i in 0..count {
        body.clear();
        body.push(0); // attributes
        varlong(&mut body, i as i64); // timestamp delta
        varlong(&mut body, i as i64); // offset delta
        varlong(&mut body, -1); // null key
        varlong(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        varlong(&mut body, 0); // no headers
        varlong(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut b = Vec::with_capacity(HEADER_SIZE + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&[0; 4]); // crc, filled below
    b.extend_from_slice(&producer.attributes.to_be_bytes());
    b.extend_from_slice(&((count - 1) as i32).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&(base_timestamp + count as i64 - 1).to_be_bytes());
    b.extend_from_slice(&producer.producer_id.to_be_bytes());
    b.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    b.extend_from_slice(&producer.base_sequence.to_be_bytes());
    b.extend_from_slice(&(count as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn built_batch_validates() {
        let b = build_batch(3, b"hello", 1000);
        let h = validate(&b, 1 << 20).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(
            record_timestamps(&b).unwrap(),
            vec![(0, 1000), (1, 1001), (2, 1002)]
        );
    }

    #[test]
    fn rejects_crc_magic_and_size() {
        let mut b = build_batch(1, b"x", 0);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            validate(&b, 1 << 20),
            Err(StorageError::CorruptRecord { .. })
        ));
        let mut b = build_batch(1, b"x", 0);
        b[16] = 1;
        assert!(matches!(
            validate(&b, 1 << 20),
            Err(StorageError::CorruptRecord { .. })
        ));
        let b = build_batch(10, &[7; 100], 0);
        assert!(matches!(
            validate(&b, 500),
            Err(StorageError::RecordTooLarge { .. })
        ));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(StorageError::CorruptRecord { .. })
        ));
        assert!(matches!(
            validate_all(&[], 1 << 20),
            Err(StorageError::InvalidRecord { .. })
        ));
    }

    #[test]
    fn offsets_outside_crc_can_be_rewritten() {
        let mut b = build_batch(2, b"v", 0);
        b[0..8].copy_from_slice(&77i64.to_be_bytes());
        b[12..16].copy_from_slice(&5i32.to_be_bytes());
        let h = validate(&b, 1 << 20).unwrap();
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.last_offset()),
            (77, 5, 78)
        );
    }

    use crate::compression::Compression;
    use crate::records::{BatchBuilder, BatchSpec, Headers, NewRecord};

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// A batch of `values`, one record each, timestamps 1000 + i.
    fn batch_of(codec: Compression, values: &[&[u8]], delta: impl Fn(usize) -> i32) -> Vec<u8> {
        let mut b = BatchBuilder::new(
            BatchSpec {
                base_timestamp: 1000,
                ..BatchSpec::default()
            },
            codec,
        );
        for (i, v) in values.iter().enumerate() {
            b.push(&NewRecord {
                offset_delta: delta(i),
                timestamp_delta: i as i64,
                key: None,
                value: Some(v),
                headers: Headers::NONE,
            });
        }
        let mut out = Vec::new();
        b.finish(&mut out).unwrap();
        out
    }

    /// Rewrites header fields and fixes the CRC, as a lying client would.
    fn patch(b: &mut [u8], last_offset_delta: i32, record_count: i32, max_timestamp: i64) {
        b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        b[57..61].copy_from_slice(&record_count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn honest_batches_of_every_codec_pass() {
        for c in CODECS {
            let b = batch_of(c, &[b"a", b"bb", b"ccc"], |i| i as i32);
            validate_all(&b, 1 << 20).unwrap();
            validate_records_all(&b, 1 << 20).unwrap();
            let mut two = b.clone();
            two.extend_from_slice(&b);
            validate_records_all(&two, 1 << 20).unwrap();
        }
    }

    /// compression.type: every codec into every codec gives a valid batch of the same records
    /// in the target codec; batches already in the target are left alone.
    #[test]
    fn recompression_keeps_the_records_and_changes_the_codec() {
        let values: [&[u8]; 3] = [b"a", b"bb", &[7; 5000]];
        for from in CODECS {
            let b = batch_of(from, &values, |i| i as i32);
            let mut two = b.clone();
            two.extend_from_slice(&b);
            for to in CODECS {
                let out = recompress_all(&two, to, Some(5), 1 << 20).unwrap();
                let Some(out) = out else {
                    assert_eq!(from, to, "only a batch already in {to:?} is kept");
                    continue;
                };
                let headers = validate_all(&out, 1 << 20).unwrap();
                assert_eq!(headers.len(), 2);
                for h in &headers {
                    assert_eq!(h.compression(), to.attribute_bits());
                    assert_eq!((h.record_count, h.max_timestamp), (3, 1002));
                }
                validate_records_all(&out, 1 << 20).unwrap();
                // The same records: both decode to the same uncompressed batches.
                let plain = |b: &[u8]| {
                    recompress_all(b, Compression::None, None, 1 << 20)
                        .unwrap()
                        .unwrap_or_else(|| b.to_vec())
                };
                assert_eq!(plain(&out), plain(&two), "{from:?} -> {to:?}");
            }
        }
        // Inflation past the bound is refused, not allocated.
        let b = batch_of(Compression::Gzip, &[&[0; 100_000]], |i| i as i32);
        assert!(matches!(
            recompress_all(&b, Compression::Zstd, None, 1000),
            Err(StorageError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn timestamps_outside_the_bounds_are_refused() {
        let b = batch_of(Compression::Lz4, &[b"a", b"b"], |i| i as i32);
        let checks = |bounds| ProduceChecks {
            max_decompressed_bytes: 1 << 20,
            keys_required_in: None,
            timestamp_bounds_ms: Some(bounds),
        };
        validate_produced(&b, &checks((1000, 1001))).unwrap();
        for bounds in [(1001, 2000), (0, 1000)] {
            let err = validate_produced(&b, &checks(bounds)).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidTimestamp { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn lying_record_count_is_refused_for_every_codec() {
        for c in CODECS {
            let mut b = batch_of(c, &[b"one"], |i| i as i32);
            patch(&mut b, i32::MAX - 1, i32::MAX, 1000);
            // The header alone is consistent (for compressed batches): only the records tell.
            if c != Compression::None {
                validate(&b, 1 << 20).unwrap();
            }
            let err = validate_records_all(&b, 1 << 20).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidRecord { .. }),
                "{c:?}: {err}"
            );
            // And fewer than the records present.
            let mut b = batch_of(c, &[b"one", b"two", b"three"], |i| i as i32);
            patch(&mut b, 1, 2, 1002);
            let err = validate_records_all(&b, 1 << 20).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidRecord { .. }),
                "{c:?}: {err}"
            );
        }
    }

    #[test]
    fn offset_deltas_must_run_from_zero() {
        for c in CODECS {
            let b = batch_of(c, &[b"a", b"b"], |i| 2 * i as i32);
            let mut b = b;
            patch(&mut b, 1, 2, 1001);
            let err = validate_records_all(&b, 1 << 20).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidRecord { .. }),
                "{c:?}: {err}"
            );
        }
    }

    #[test]
    fn max_timestamp_must_match_the_records() {
        for c in CODECS {
            let mut b = batch_of(c, &[b"a", b"b"], |i| i as i32);
            patch(&mut b, 1, 2, 5000);
            let err = validate_records_all(&b, 1 << 20).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidRecord { .. }),
                "{c:?}: {err}"
            );
            // LogAppendTime batches carry the broker's time there, not the records'.
            b[22] |= LOG_APPEND_TIME_FLAG as u8;
            patch(&mut b, 1, 2, 5000);
            validate_records_all(&b, 1 << 20).unwrap();
        }
    }

    #[test]
    fn a_bomb_is_refused_at_the_bound() {
        let big = vec![0u8; 8 << 20];
        for c in CODECS {
            let b = batch_of(c, &[&big], |i| i as i32);
            if c == Compression::None {
                // Uncompressed bytes are what they are: the bound is on inflation only.
                validate_records_all(&b, 1 << 20).unwrap();
                continue;
            }
            let err = validate_records_all(&b, 1 << 20).unwrap_err();
            assert!(
                matches!(
                    err,
                    StorageError::DecompressedTooLarge {
                        max_bytes: 1_048_576
                    }
                ),
                "{c:?}: {err}"
            );
        }
    }

    proptest! {
        /// Record-level validation never panics, whatever follows a plausible header.
        #[test]
        fn validate_records_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..400), codec in 0i16..8) {
            let mut b = build_batch(1, b"x", 0);
            b.truncate(HEADER_SIZE);
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            b.extend_from_slice(&payload);
            let len = (b.len() - LOG_OVERHEAD) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            let _ = validate_records_all(&b, 4096);
        }

        /// Any byte string either validates or yields a typed error; never a panic.
        #[test]
        fn validate_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_all(&bytes, 1 << 20);
            let _ = record_timestamps(&bytes);
        }

        /// Flipping any byte covered by the CRC is detected.
        #[test]
        fn crc_catches_any_flip(count in 1usize..5, len in 0usize..50, pos in 21usize..400, bit in 0u8..8) {
            let mut b = build_batch(count, &vec![9; len], 0);
            let pos = pos % b.len();
            prop_assume!(pos >= 21);
            b[pos] ^= 1 << bit;
            prop_assert!(validate(&b, 1 << 20).is_err());
        }
    }
}
