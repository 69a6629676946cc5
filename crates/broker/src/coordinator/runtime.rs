//! One runtime for Rill's log-backed coordinators (Kafka 4's `coordinator-common`:
//! `CoordinatorShard`, `CoordinatorResult`, `CoordinatorRuntime`, `CoordinatorLoader`).
//!
//! A coordinator keeps its state in an internal topic (`__consumer_offsets`,
//! `__transaction_state`). Each partition of that topic has one [`Shard`]: a state machine
//! whose durable state changes **only** by replaying records. The runtime
//!
//! - loads each shard by replaying its partition's log ([`CoordinatorRuntime::load`]);
//! - runs each operation under its shard's lock ([`CoordinatorRuntime::write`]): the operation
//!   returns the records it wants written and the response ([`Outcome`]); the runtime appends
//!   the records as one batch (all or nothing) and, only if the append succeeded, replays them
//!   into the shard, still under the lock, so the log's order is the order of changes;
//! - answers once the batch is durable ([`Written::committed`]): storage's flusher calls back,
//!   no thread is parked.
//!
//! Load-time replay and run-time writes therefore go through the same `Shard::replay`, and a
//! shard is testable with no I/O at all. State that is never persisted (a coordinator's
//! members in the middle of a join phase, waiters, timers) is not a record: operations may
//! change it directly through the `&mut S` they get. An operation that fails must leave the
//! shard as it found it; the runtime itself never replays a record whose append failed.
//!
//! Transactions: records written by [`CoordinatorRuntime::write_transactional`] go in a
//! transactional batch of the producer; they reach `Shard::replay` with `Some((id, epoch))`,
//! and the commit/abort marker later written to the partition reaches
//! `Shard::replay_end_txn`, at load as at run time.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::Mutex;
use rill_storage::batch;
use rill_storage::records::{ReaderBuffers, RecordReader};
use rill_storage::{Log, StorageError, TxnMarker};
use tokio::sync::oneshot;

/// Largest read while replaying a partition; coordinator batches are small, this only sets the
/// step (each read returns at least one whole batch).
const REPLAY_READ_BYTES: u32 = 4 << 20;

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("malformed {what}")]
    Malformed { what: &'static str },
}

/// What can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Records could not be encoded as a batch (a bug, or a record too large for the format).
    #[error("cannot encode a coordinator batch: {reason}")]
    Encode { reason: String },
    /// A stored record is garbage: the partition cannot be loaded (as in Kafka, whose loader
    /// fails on a record it cannot deserialize rather than skip a change of state).
    #[error("partition {partition}: cannot decode the record at offset {offset}: {source}")]
    Decode {
        partition: i32,
        offset: i64,
        #[source]
        source: RecordError,
    },
    /// A stored batch cannot be read as a record batch.
    #[error("partition {partition}: cannot read the batch at offset {offset}: {reason}")]
    Batch {
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// A partition this runtime does not have (the caller's mistake: partitions come from
    /// [`CoordinatorRuntime::partition_for`]).
    #[error("no coordinator partition {partition} (of {count})")]
    NoPartition { partition: i32, count: i32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The durability callback was dropped without an answer (storage shut down).
    #[error("the write's durability is unknown: storage dropped its callback")]
    DurabilityUnknown,
}

/// One partition's state machine.
pub trait Shard: Send + 'static {
    /// This coordinator's decoded record.
    type Record: Send + 'static;
    /// Decodes one stored record (value None = tombstone). `Ok(None)`: a record type this
    /// version skips (unknown key version). `Err`: garbage.
    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Self::Record>, RecordError>;
    /// Key and value (None = tombstone) of a record to append.
    fn encode(record: &Self::Record) -> (Bytes, Option<Bytes>);
    /// Applies one record. Load-time replay and run-time writes both go through it.
    /// `producer`: `Some((id, epoch))` for records of a transactional batch.
    fn replay(&mut self, offset: i64, producer: Option<(i64, i16)>, record: Self::Record);
    /// A commit/abort marker for `producer_id` in this partition (default: nothing).
    fn replay_end_txn(&mut self, _producer_id: i64, _producer_epoch: i16, _commit: bool) {}
    /// Called once when the start-up replay of the partition is done (default: nothing).
    fn on_loaded(&mut self) {}
}

/// What a write operation returns: records to append (as one batch, atomically) and the answer
/// to give once they are durable.
pub struct Outcome<R, T> {
    pub records: Vec<R>,
    pub response: T,
}

impl<R, T> Outcome<R, T> {
    /// An answer that writes nothing.
    pub fn response(response: T) -> Self {
        Outcome {
            records: Vec::new(),
            response,
        }
    }
}

/// A response whose records were appended; [`Written::committed`] gives it once they are
/// durable.
#[must_use = "a write is answered once durable: await `committed`"]
pub struct Written<T> {
    response: T,
    /// The log and the end offset to wait for; `None` when nothing was written.
    durable: Option<(Arc<Log>, i64)>,
}

impl<T> Written<T> {
    /// A response with nothing to wait for.
    pub fn now(response: T) -> Self {
        Written {
            response,
            durable: None,
        }
    }

    /// The response, before durability (to shape an error answer from it).
    pub fn response(&self) -> &T {
        &self.response
    }

    /// The response and, apart, the handle to wait for its records' durability.
    pub fn split(self) -> (T, Written<()>) {
        (
            self.response,
            Written {
                response: (),
                durable: self.durable,
            },
        )
    }

    /// Whether the operation appended records.
    pub fn wrote(&self) -> bool {
        self.durable.is_some()
    }

    /// The response once the write is durable (the data directory's group commit; storage's
    /// flusher calls back, no thread is parked).
    ///
    /// # Errors
    /// The flush failed (the log is offline) or storage dropped the callback.
    pub async fn committed(self) -> Result<T, RuntimeError> {
        if let Some((log, end_offset)) = self.durable {
            let (tx, rx) = oneshot::channel();
            log.on_durable(
                end_offset,
                Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            );
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(RuntimeError::Storage(e)),
                Err(_) => return Err(RuntimeError::DurabilityUnknown),
            }
        }
        Ok(self.response)
    }
}

/// One partition: its log and its shard. The shard's lock is held across an operation, its
/// append (a page-cache write) and the replay, never across an await.
struct Partition<S> {
    log: Arc<Log>,
    shard: Mutex<S>,
}

/// The shards of one coordinator topic, one per partition.
pub struct CoordinatorRuntime<S: Shard> {
    partitions: Vec<Partition<S>>,
}

/// The transactional producer of a batch to write.
#[derive(Debug, Clone, Copy)]
struct Producer {
    id: i64,
    epoch: i16,
}

impl<S: Shard> CoordinatorRuntime<S> {
    /// Replays each partition log (partition = its index in `logs`) into a new shard
    /// (`new_shard(partition)`). Control batches call `replay_end_txn`; records of
    /// transactional batches are replayed with their producer. Blocking (reads the logs).
    ///
    /// # Errors
    /// A log that cannot be read, a batch that cannot be decoded, or a record that is garbage
    /// ([`RuntimeError::Decode`], naming the partition and offset).
    pub fn load(logs: Vec<Arc<Log>>, new_shard: impl Fn(i32) -> S) -> Result<Self, RuntimeError> {
        let mut partitions = Vec::with_capacity(logs.len());
        for (partition, log) in logs.into_iter().enumerate() {
            let partition = partition as i32;
            let mut shard = new_shard(partition);
            replay_log(partition, &log, &mut shard)?;
            shard.on_loaded();
            partitions.push(Partition {
                log,
                shard: Mutex::new(shard),
            });
        }
        Ok(CoordinatorRuntime { partitions })
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// Kafka's partition for a coordinator key: `abs(java String.hashCode) % partitions`.
    pub fn partition_for(&self, key: &str) -> i32 {
        partition_for(key, self.partition_count())
    }

    /// The log of `partition` (metrics, tests).
    ///
    /// # Panics
    /// If `partition` is not one of this runtime's (a caller bug: partitions come from
    /// [`CoordinatorRuntime::partition_for`]).
    pub fn log(&self, partition: i32) -> &Arc<Log> {
        &self.partitions[partition as usize].log
    }

    /// Runs `f` on the shard under its lock.
    ///
    /// # Panics
    /// If `partition` is not one of this runtime's (see [`CoordinatorRuntime::log`]).
    pub fn read<T>(&self, partition: i32, f: impl FnOnce(&S) -> T) -> T {
        f(&self.partitions[partition as usize].shard.lock())
    }

    /// Runs `op` under the shard's lock; appends its records as one batch; if the append
    /// succeeds, replays them into the shard (still under the lock) and returns the response
    /// with a handle to wait for durability. If `op` errs or the append fails, no record is
    /// replayed (and `op` must not have changed durable state itself). No records: completes
    /// without a write.
    ///
    /// # Errors
    /// `op`'s error, or the append's ([`RuntimeError`] into `E`).
    pub fn write<T, E: From<RuntimeError>>(
        &self,
        partition: i32,
        op: impl FnOnce(&mut S) -> Result<Outcome<S::Record, T>, E>,
    ) -> Result<Written<T>, E> {
        self.write_as(partition, None, op)
    }

    /// [`CoordinatorRuntime::write`] with the batch written as a transactional batch of
    /// (`producer_id`, `producer_epoch`) (TxnOffsetCommit): its records reach `Shard::replay`
    /// with that producer, and stay pending there until a marker ends the transaction.
    ///
    /// # Errors
    /// As [`CoordinatorRuntime::write`]; storage refuses a stale epoch.
    pub fn write_transactional<T, E: From<RuntimeError>>(
        &self,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        op: impl FnOnce(&mut S) -> Result<Outcome<S::Record, T>, E>,
    ) -> Result<Written<T>, E> {
        let producer = Producer {
            id: producer_id,
            epoch: producer_epoch,
        };
        self.write_as(partition, Some(producer), op)
    }

    /// Appends a commit/abort marker (storage's `Log::append_marker`) and replays it
    /// (`Shard::replay_end_txn`) under the shard's lock. Returns the durability handle.
    ///
    /// # Errors
    /// The append's (a stale producer or coordinator epoch, a storage failure); the shard is
    /// then unchanged.
    pub fn write_marker(
        &self,
        partition: i32,
        marker: &TxnMarker,
    ) -> Result<Written<()>, RuntimeError> {
        let p = self.partition(partition)?;
        let mut shard = p.shard.lock();
        let info = p.log.append_marker(marker)?;
        shard.replay_end_txn(marker.producer_id, marker.producer_epoch, marker.commit);
        Ok(Written {
            response: (),
            durable: Some((p.log.clone(), info.last_offset + 1)),
        })
    }

    fn partition(&self, partition: i32) -> Result<&Partition<S>, RuntimeError> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.partitions.get(p))
            .ok_or(RuntimeError::NoPartition {
                partition,
                count: self.partition_count(),
            })
    }

    fn write_as<T, E: From<RuntimeError>>(
        &self,
        partition: i32,
        producer: Option<Producer>,
        op: impl FnOnce(&mut S) -> Result<Outcome<S::Record, T>, E>,
    ) -> Result<Written<T>, E> {
        let p = self.partition(partition)?;
        let mut shard = p.shard.lock();
        let Outcome { records, response } = op(&mut shard)?;
        if records.is_empty() {
            return Ok(Written::now(response));
        }
        // Sequences of a coordinator's transactional batches continue the producer's in this
        // partition (storage checks them as for any idempotent producer); the shard's lock
        // makes this the only writer of the partition.
        let base_sequence = producer.map(|pr| next_sequence(&p.log, pr));
        let batch = encode_batch::<S>(&records, producer, base_sequence, now_ms())?;
        let info = p.log.append(&batch).map_err(RuntimeError::from)?;
        let replayed_producer = producer.map(|pr| (pr.id, pr.epoch));
        for (i, record) in records.into_iter().enumerate() {
            shard.replay(info.base_offset + i as i64, replayed_producer, record);
        }
        Ok(Written {
            response,
            durable: Some((p.log.clone(), info.last_offset + 1)),
        })
    }
}

/// The next sequence of `producer` in `log`: after its last one in the same epoch, else 0 (a
/// new producer or epoch starts at 0).
fn next_sequence(log: &Log, producer: Producer) -> i32 {
    match log.producer_state(producer.id) {
        Some(entry) if entry.producer_epoch == producer.epoch && entry.last_seq() >= 0 => {
            // Kafka's sequences wrap from i32::MAX to 0.
            if entry.last_seq() == i32::MAX {
                0
            } else {
                entry.last_seq() + 1
            }
        }
        _ => 0,
    }
}

fn now_ms() -> i64 {
    crate::broker::now_ms()
}

/// Kafka's partition for a coordinator key: `Utils.abs(key.hashCode()) % partitions`, with
/// Java's String hash.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    (java_string_hash(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Java's `String.hashCode`: over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Encodes records as one uncompressed v2 batch, ready for `Log::append`; transactional for
/// `producer`, starting at `base_sequence`.
fn encode_batch<S: Shard>(
    records: &[S::Record],
    producer: Option<Producer>,
    base_sequence: Option<i32>,
    now_ms: i64,
) -> Result<Bytes, RuntimeError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (key, value) = S::encode(r);
            Record {
                transactional: producer.is_some(),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: producer.map_or(-1, |p| p.id),
                producer_epoch: producer.map_or(-1, |p| p.epoch),
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch wherever `offset - sequence` changes, and
                // takes the batch's base sequence from its first record: so the sequence
                // runs with the offset, from -1 (none) or the producer's next.
                sequence: base_sequence.unwrap_or(-1).wrapping_add(i as i32),
                timestamp: now_ms,
                key: Some(key),
                value,
                headers: Default::default(),
            }
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options).map_err(|e| {
        RuntimeError::Encode {
            reason: e.to_string(),
        }
    })?;
    Ok(out.freeze())
}

/// Replays one partition's whole log into `shard` (start-up). Returns the records replayed.
fn replay_log<S: Shard>(partition: i32, log: &Log, shard: &mut S) -> Result<usize, RuntimeError> {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    // Reads stop at the high watermark (the durable offset): make everything durable first,
    // so the replay sees the whole log.
    log.wait_durable(end)?;
    let mut replayed = 0;
    // Bounded: each read returns at least one batch and moves `offset` past it.
    while offset < end {
        let bytes = log.read_bytes(offset, REPLAY_READ_BYTES)?;
        if bytes.is_empty() {
            break;
        }
        let (next, n) = replay_batches(partition, shard, &bytes, offset)?;
        replayed += n;
        if next <= offset {
            return Err(RuntimeError::Batch {
                partition,
                offset,
                reason: "no progress".into(),
            });
        }
        offset = next;
    }
    tracing::debug!(partition, replayed, "coordinator partition loaded");
    Ok(replayed)
}

/// Output bound of decompressing one stored batch at load (the broker's default
/// `rill.decompressed.batch.max.bytes`). Coordinators write uncompressed batches and clients
/// cannot produce to their topics, so only a damaged or foreign segment reaches it: it is an
/// error then, never an allocation of what the batch claims.
pub const REPLAY_DECOMPRESSED_MAX_BYTES: u64 = 64 << 20;

/// Replays the records at or after `from` of the whole stored batches in `bytes`. Returns the
/// offset after the last batch (its whole offset range: the cleaner may have removed its last
/// records, and the next read must not return it again) and the number of records replayed.
/// Records are read with storage's bounded streaming reader, as every decompression in the
/// broker.
pub fn replay_batches<S: Shard>(
    partition: i32,
    shard: &mut S,
    bytes: &[u8],
    from: i64,
) -> Result<(i64, usize), RuntimeError> {
    let batch_error = |offset: i64, reason: String| RuntimeError::Batch {
        partition,
        offset,
        reason,
    };
    let mut next = from;
    let mut replayed = 0;
    let mut at = 0;
    let mut buffers = ReaderBuffers::default();
    // Bounded: every iteration moves `at` past one whole batch or returns.
    while at < bytes.len() {
        let header = batch::validate_stored(&bytes[at..], bytes.len() - at)
            .map_err(|e| batch_error(next, e.to_string()))?;
        let stored = &bytes[at..at + header.total_size()];
        at += header.total_size();
        let after = header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta) + 1)
            .ok_or_else(|| batch_error(header.base_offset, "offsets overflow".into()))?;
        next = next.max(after);
        let producer = (header.producer_id, header.producer_epoch);
        let mut reader = RecordReader::for_batch(stored, REPLAY_DECOMPRESSED_MAX_BYTES, buffers)
            .map_err(|e| batch_error(header.base_offset, e.to_string()))?;
        // Bounded by the decompressed bytes: every record consumes at least one.
        while let Some(record) = reader
            .next_record()
            .map_err(|e| batch_error(header.base_offset, e.to_string()))?
        {
            let offset = header
                .base_offset
                .saturating_add(i64::from(record.meta.offset_delta));
            if offset < from {
                continue;
            }
            let decode_error = |what| RuntimeError::Decode {
                partition,
                offset,
                source: RecordError::Malformed { what },
            };
            if header.is_control() {
                let key = record.key.ok_or(decode_error("control key"))?;
                match control_type(key).ok_or(decode_error("control key"))? {
                    CONTROL_ABORT | CONTROL_COMMIT => shard.replay_end_txn(
                        producer.0,
                        producer.1,
                        control_type(key) == Some(CONTROL_COMMIT),
                    ),
                    // Kafka ignores control types it does not know.
                    _ => {}
                }
                continue;
            }
            let Some(key) = record.key else {
                return Err(decode_error("record without a key"));
            };
            let decoded = S::decode(key, record.value).map_err(|source| RuntimeError::Decode {
                partition,
                offset,
                source,
            })?;
            if let Some(r) = decoded {
                shard.replay(offset, header.is_transactional().then_some(producer), r);
                replayed += 1;
            }
        }
        buffers = reader.into_buffers();
    }
    Ok((next, replayed))
}

/// Control record types (Kafka's `ControlRecordType`).
const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;

/// The type of a control record key (version i16, type i16).
fn control_type(key: &[u8]) -> Option<i16> {
    let bytes: [u8; 2] = key.get(2..4)?.try_into().ok()?;
    Some(i16::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests;
