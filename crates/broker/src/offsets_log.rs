//! The `__consumer_offsets` topic: where committed offsets and group metadata live, in
//! Kafka's own key and value schemas so that tools that read that topic understand it.
//!
//! ```text
//! offset commit   key   v1: group string, topic string, partition i32
//!                 value v3: offset i64, leader epoch i32, metadata string, commit time i64
//! group metadata  key   v2: group string
//!                 value v3: protocol type string, generation i32, protocol string?,
//!                           leader string?, state time i64, members [member]
//!                 member:   id string, instance id string?, client id string, client host
//!                           string, rebalance timeout i32, session timeout i32,
//!                           subscription bytes, assignment bytes
//! ```
//! A null value is a tombstone. Each group lives in one partition, chosen as Kafka does from
//! the Java hash of its id, so a group's records are totally ordered.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rill_storage::batch;
use rill_storage::records::{ReaderBuffers, RecordReader};
use rill_storage::{Log, StorageError, TopicPartition};

/// The internal topic's name, as in Kafka.
pub const TOPIC: &str = "__consumer_offsets";

/// Largest read while replaying a partition; batches are small, this only sets the step.
const REPLAY_READ_BYTES: u32 = 4 << 20;

/// Output bound of decompressing one stored batch during replay (the broker's default
/// `rill.decompressed.batch.max.bytes`). The coordinator writes uncompressed batches and
/// clients cannot produce to the topic, so only a damaged or foreign segment reaches it.
pub const REPLAY_DECOMPRESSED_MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// One record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRecord {
    Offset {
        group: String,
        tp: TopicPartition,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsLogError {
    #[error("malformed {what} in {TOPIC}")]
    Malformed { what: &'static str },
    #[error("cannot read {TOPIC}: {source}")]
    Storage {
        #[from]
        source: StorageError,
    },
    #[error("cannot decode a batch of {TOPIC}: {reason}")]
    Batch { reason: String },
}

/// The partition of the offsets topic that holds `group`: Kafka's
/// `Utils.abs(groupId.hashCode()) % partitions`, with Java's String hash.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    (java_string_hash(group) & 0x7fff_ffff) % partitions.max(1)
}

/// Java's `String.hashCode`: over UTF-16 code units, wrapping.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

/// A bounds-checked reader: malformed input is an error, never a panic.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OffsetsLogError> {
        if self.buf.len() < n {
            return Err(OffsetsLogError::Malformed { what: self.what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, OffsetsLogError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, OffsetsLogError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, OffsetsLogError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn nullable_string(&mut self) -> Result<Option<String>, OffsetsLogError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| OffsetsLogError::Malformed { what: self.what })
    }
    fn string(&mut self) -> Result<String, OffsetsLogError> {
        self.nullable_string()?
            .ok_or(OffsetsLogError::Malformed { what: self.what })
    }
    fn bytes(&mut self) -> Result<Bytes, OffsetsLogError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

impl StoredRecord {
    fn key(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            StoredRecord::Offset { group, tp, .. } => {
                out.put_i16(1);
                put_string(&mut out, group);
                put_string(&mut out, &tp.topic);
                out.put_i32(tp.partition);
            }
            StoredRecord::Group { group, .. } => {
                out.put_i16(2);
                put_string(&mut out, group);
            }
        }
        out.freeze()
    }

    fn value(&self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        match self {
            StoredRecord::Offset { value: None, .. } | StoredRecord::Group { value: None, .. } => {
                return None
            }
            StoredRecord::Offset { value: Some(v), .. } => {
                out.put_i16(3);
                out.put_i64(v.offset);
                out.put_i32(v.leader_epoch);
                put_string(&mut out, &v.metadata);
                out.put_i64(v.commit_timestamp_ms);
            }
            StoredRecord::Group { value: Some(v), .. } => {
                out.put_i16(3);
                put_string(&mut out, &v.protocol_type);
                out.put_i32(v.generation_id);
                put_nullable_string(&mut out, v.protocol_name.as_deref());
                put_nullable_string(&mut out, v.leader_id.as_deref());
                out.put_i64(v.state_timestamp_ms);
                out.put_i32(v.members.len() as i32);
                for m in &v.members {
                    put_string(&mut out, &m.member_id);
                    put_nullable_string(&mut out, m.group_instance_id.as_deref());
                    put_string(&mut out, &m.client_id);
                    put_string(&mut out, &m.client_host);
                    out.put_i32(m.rebalance_timeout_ms);
                    out.put_i32(m.session_timeout_ms);
                    put_bytes(&mut out, &m.subscription);
                    put_bytes(&mut out, &m.assignment);
                }
            }
        }
        Some(out.freeze())
    }

    /// Decodes a record; `Ok(None)` for key versions this broker does not know (skipped, as a
    /// newer Kafka's records would be).
    pub fn decode(
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<StoredRecord>, OffsetsLogError> {
        let mut k = Reader {
            buf: key,
            what: "key",
        };
        match k.i16()? {
            0 | 1 => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let tp = TopicPartition::new(topic, partition);
                let value = value.map(decode_offset_value).transpose()?;
                Ok(Some(StoredRecord::Offset { group, tp, value }))
            }
            2 => {
                let group = k.string()?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(Some(StoredRecord::Group { group, value }))
            }
            _ => Ok(None),
        }
    }
}

fn decode_offset_value(bytes: &[u8]) -> Result<OffsetValue, OffsetsLogError> {
    let mut r = Reader {
        buf: bytes,
        what: "offset value",
    };
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp_ms = r.i64()?;
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(bytes: &[u8]) -> Result<GroupValue, OffsetsLogError> {
    let mut r = Reader {
        buf: bytes,
        what: "group value",
    };
    let version = r.i16()?;
    if version != 3 {
        return Err(OffsetsLogError::Malformed {
            what: "group value version",
        });
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol_name = r.nullable_string()?;
    let leader_id = r.nullable_string()?;
    let state_timestamp_ms = r.i64()?;
    let count = r.i32()?;
    // Bounded by the bytes present: each member takes at least 28 bytes.
    if count < 0 || count as usize > r.buf.len() / 28 {
        return Err(OffsetsLogError::Malformed {
            what: "group member count",
        });
    }
    let mut members = Vec::with_capacity(count as usize);
    for _ in 0..count {
        members.push(MemberValue {
            member_id: r.string()?,
            group_instance_id: r.nullable_string()?,
            client_id: r.string()?,
            client_host: r.string()?,
            rebalance_timeout_ms: r.i32()?,
            session_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        state_timestamp_ms,
        members,
    })
}

/// Encodes records as one uncompressed v2 batch, ready for `Log::append`.
pub fn encode_batch(records: &[StoredRecord], now_ms: i64) -> Result<Bytes, OffsetsLogError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now_ms,
            key: Some(r.key()),
            value: r.value(),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options).map_err(|e| {
        OffsetsLogError::Batch {
            reason: e.to_string(),
        }
    })?;
    Ok(out.freeze())
}

/// Reads every record of one offsets partition, in order (start-up replay).
pub fn replay(log: &Log) -> Result<Vec<StoredRecord>, OffsetsLogError> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    // Reads stop at the high watermark (the durable offset): make everything durable first,
    // so the replay sees the whole log.
    log.wait_durable(end)?;
    // Bounded: each read returns at least one batch and moves `offset` past it.
    while offset < end {
        let bytes = log.read_bytes(offset, REPLAY_READ_BYTES)?;
        if bytes.is_empty() {
            break;
        }
        offset = replay_read(&bytes, offset, REPLAY_DECOMPRESSED_MAX_BYTES, &mut out)?;
    }
    Ok(out)
}

/// Decodes one read of the partition (whole stored batches, the first holding `offset`) into
/// `out`, skipping control batches, records before `offset` and malformed records. Returns
/// the offset after the last batch read. Split from [`replay`] so the decoding can be checked
/// on bytes in memory (the fuzz target does) without a log on disk.
///
/// Compressed batches are decompressed by storage's streaming reader with an output bound of
/// `max_decompressed_bytes`, as every decompression in the broker is: a stored batch that
/// claims (or inflates to) more is an error, never an allocation of that size.
///
/// # Errors
/// Bytes that are not whole valid batches, records that do not parse, a batch that inflates
/// past the bound, or a read that does not move past `offset`.
pub fn replay_read(
    bytes: &[u8],
    offset: i64,
    max_decompressed_bytes: u64,
    out: &mut Vec<StoredRecord>,
) -> Result<i64, OffsetsLogError> {
    let batch_error = |reason: String| OffsetsLogError::Batch { reason };
    let mut next = offset;
    let mut at = 0;
    let mut buffers = ReaderBuffers::default();
    // Bounded: every iteration moves `at` past one whole batch or returns.
    while at < bytes.len() {
        let header = batch::validate_stored(&bytes[at..], bytes.len() - at)
            .map_err(|e| batch_error(e.to_string()))?;
        let batch = &bytes[at..at + header.total_size()];
        at += header.total_size();
        let after = header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta) + 1)
            .ok_or_else(|| batch_error(format!("offsets overflow at {}", header.base_offset)))?;
        // The whole batch, even if the cleaner removed its last records: the next read
        // starts after it.
        next = next.max(after);
        if header.is_control() {
            continue;
        }
        let mut reader = RecordReader::for_batch(batch, max_decompressed_bytes, buffers)
            .map_err(|e| batch_error(e.to_string()))?;
        // Bounded by the decompressed bytes: every record consumes at least one.
        while let Some(record) = reader
            .next_record()
            .map_err(|e| batch_error(e.to_string()))?
        {
            let record_offset = header
                .base_offset
                .saturating_add(i64::from(record.meta.offset_delta));
            if record_offset < offset {
                continue;
            }
            let Some(key) = record.key else { continue };
            match StoredRecord::decode(key, record.value) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                // One unreadable record must not keep every group from loading.
                Err(e) => {
                    tracing::warn!(offset = record_offset, error = %e, "skipping a malformed record")
                }
            }
        }
        buffers = reader.into_buffers();
    }
    if next <= offset {
        return Err(batch_error(format!("no progress at offset {offset}")));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_string_hash() {
        // Values of Java's String.hashCode(), computed by a JVM.
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(
            java_string_hash("Aa"),
            java_string_hash("BB"),
            "Java's classic collision"
        );
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        for g in ["a", "my-group", "ünïcødé", "console-consumer-12345"] {
            assert!((0..50).contains(&partition_for(g, 50)));
        }
    }

    #[test]
    fn records_round_trip() {
        let records = vec![
            StoredRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 3),
                value: Some(OffsetValue {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_timestamp_ms: 7,
                }),
            },
            StoredRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 4),
                value: None,
            },
            StoredRecord::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    protocol_type: "consumer".into(),
                    generation_id: 5,
                    protocol_name: Some("range".into()),
                    leader_id: Some("m-1".into()),
                    state_timestamp_ms: 9,
                    members: vec![MemberValue {
                        member_id: "m-1".into(),
                        group_instance_id: Some("i-1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300_000,
                        session_timeout_ms: 45_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                }),
            },
            StoredRecord::Group {
                group: "gone".into(),
                value: None,
            },
        ];
        for r in &records {
            let decoded = StoredRecord::decode(&r.key(), r.value().as_deref())
                .unwrap()
                .unwrap();
            assert_eq!(&decoded, r);
        }
        let batch = encode_batch(&records, 1).unwrap();
        rill_storage::batch::validate(&batch, 1 << 20).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            &[0, 1, 0, 9, b'x'],
            &[0, 2, 0xff, 0xff],
            &[0, 3, 1, 2, 3],
        ] {
            let _ = StoredRecord::decode(bytes, Some(bytes));
        }
        assert!(StoredRecord::decode(&[0, 1, 0, 9, b'x'], None).is_err());
        assert!(
            StoredRecord::decode(&[0, 9], None).unwrap().is_none(),
            "unknown key versions are skipped"
        );
    }

    fn commit(partition: i32, offset: i64, metadata: &str) -> StoredRecord {
        StoredRecord::Offset {
            group: "g".into(),
            tp: TopicPartition::new("t", partition),
            value: Some(OffsetValue {
                offset,
                leader_epoch: 0,
                metadata: metadata.into(),
                commit_timestamp_ms: 1,
            }),
        }
    }

    /// One stored batch of `records` (offset deltas 0, 1, ...), compressed with `codec`, with
    /// lastOffsetDelta `last_offset_delta` (larger than the last record's after cleaning).
    fn stored_batch(
        base_offset: i64,
        records: &[StoredRecord],
        codec: rill_storage::compression::Compression,
        last_offset_delta: i32,
    ) -> Vec<u8> {
        use rill_storage::records::{BatchBuilder, BatchSpec, Headers, NewRecord};
        let spec = BatchSpec {
            base_offset,
            ..BatchSpec::default()
        };
        let mut builder = BatchBuilder::new(spec, codec);
        for (i, r) in records.iter().enumerate() {
            let (key, value) = (r.key(), r.value());
            builder.push(&NewRecord {
                offset_delta: i as i32,
                timestamp_delta: 0,
                key: Some(&key),
                value: value.as_deref(),
                headers: Headers::NONE,
            });
        }
        builder.set_last_offset_delta(last_offset_delta);
        let mut out = Vec::new();
        builder.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn replay_read_decodes_compressed_batches_within_the_bound() {
        use rill_storage::compression::Compression;
        let records = [commit(0, 5, &"m".repeat(4096)), commit(1, 6, "")];
        let batch = stored_batch(10, &records, Compression::Zstd, 1);
        assert!(batch.len() < 1024, "zstd shrinks the repeated metadata");

        let mut out = Vec::new();
        assert_eq!(replay_read(&batch, 10, 1 << 20, &mut out).unwrap(), 12);
        assert_eq!(out, records);

        // The same batch with a bound below what it inflates to: an error, nothing decoded.
        let mut out = Vec::new();
        let err = replay_read(&batch, 10, 1024, &mut out).unwrap_err();
        assert!(
            err.to_string()
                .contains("decompresses to more than 1024 bytes"),
            "{err}"
        );
        assert!(out.is_empty());
    }

    /// Found by the `offsets_replay` fuzz target: a stored snappy batch whose payload claims
    /// to inflate to 2 842 879 436 bytes made replay (kafka-protocol's decoder) allocate that
    /// much at start-up.
    #[test]
    fn replay_read_refuses_a_snappy_batch_claiming_gigabytes() {
        // Raw snappy: the varint uncompressed length, then (too little) data.
        let payload = [0xcc, 0xcb, 0xcb, 0xcb, 0x0a, 0x0a, 0x0a, 0x0a];
        let mut batch = Vec::new();
        batch.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
        batch.extend_from_slice(&(49 + payload.len() as i32).to_be_bytes()); // batchLength
        batch.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
        batch.push(2); // magic
        batch.extend_from_slice(&[0; 4]); // crc, below
        batch.extend_from_slice(&2i16.to_be_bytes()); // attributes: snappy
        batch.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
        batch.extend_from_slice(&0i64.to_be_bytes()); // baseTimestamp
        batch.extend_from_slice(&0i64.to_be_bytes()); // maxTimestamp
        batch.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        batch.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        batch.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        batch.extend_from_slice(&1i32.to_be_bytes()); // recordCount
        batch.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        rill_storage::batch::validate_stored(&batch, 1 << 20).expect("a valid stored header");

        let mut out = Vec::new();
        let result = replay_read(&batch, 0, REPLAY_DECOMPRESSED_MAX_BYTES, &mut out);
        assert!(
            matches!(result, Err(OffsetsLogError::Batch { .. })),
            "{result:?}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn replay_read_moves_past_a_cleaned_batch() {
        use rill_storage::compression::Compression;
        // The cleaner dropped the batch's last records and kept its lastOffsetDelta (4): the
        // next read must start after the whole batch, not after its last remaining record
        // (a read there would return this batch again and make no progress).
        let records = [commit(0, 1, "")];
        let batch = stored_batch(0, &records, Compression::None, 4);
        let mut out = Vec::new();
        assert_eq!(replay_read(&batch, 0, 1 << 20, &mut out).unwrap(), 5);
        assert_eq!(out, records);
        // A read that starts inside that batch, past its records, still progresses.
        let mut out = Vec::new();
        assert_eq!(replay_read(&batch, 3, 1 << 20, &mut out).unwrap(), 5);
        assert!(out.is_empty());
    }
}
