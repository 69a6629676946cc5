//! One delay store: the delay log of one target partition, its in-memory index, and the
//! blocking work around them (the produce-side append, scans, deliveries, the cursor).
//!
//! Blocking calls only (storage reads and writes); the deliverer task (`super::deliverer`)
//! runs them on the blocking pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rill_storage::batch::{self, BatchHeader};
use rill_storage::records::{
    BatchBuilder, BatchSpec, Headers, NewRecord, ReaderBuffers, RecordReader,
};
use rill_storage::{AppendInfo, Log, StorageError, TopicPartition};
use tokio::sync::Notify;

use super::headers::{self, DelayError, Request};
use super::index::{DelayIndex, Key, PageIn, Smallest};

/// The producer id of deliveries (outside the range `producer_id.rs` hands out, which counts
/// up from 0 in blocks of 1000). The target partition's producer state keeps its last
/// sequence: that is the durable record of what was delivered.
pub const DELIVERY_PRODUCER_ID: i64 = i64::MAX - 1;
const DELIVERY_EPOCH: i16 = 0;
/// Records per delivered batch.
pub const DELIVERY_BATCH_RECORDS: usize = 500;
/// Bytes read from the delay log at a time by a scan.
const SCAN_READ_BYTES: u32 = 4 * 1024 * 1024;

/// Why a delayed produce is refused.
#[derive(Debug, thiserror::Error)]
pub enum DelayedError {
    #[error(transparent)]
    Delay(#[from] DelayError),
    #[error("transactional produce to a topic with rill.delivery.delayed.enable is not supported")]
    Transactional,
    #[error("records: {0}")]
    Records(#[from] rill_storage::records::RecordError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("delay store of {0} is closed (topic deleted)")]
    Closed(TopicPartition),
    #[error(transparent)]
    TooManyCancels(#[from] super::cancels::Full),
}

/// Why a delivery round's cursor file or delay log start was not written (retried after the
/// next round).
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("delivery cursor file {path}: {source}")]
    CursorFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("moving the delay log start: {0}")]
    Storage(#[from] StorageError),
}

/// Settings a store reads at each produce.
#[derive(Debug, Clone, Copy)]
pub struct ProduceLimits {
    pub now_ms: i64,
    pub max_delay_ms: i64,
    pub default_delay_ms: i64,
    pub max_decompressed_bytes: u64,
}

pub struct DelayStore {
    pub target: TopicPartition,
    pub delay_log: Arc<Log>,
    /// The index, and the lock that orders appends with deliveries: an append's due times
    /// are computed and indexed under it, so the deliverer never moves its cursor past a key
    /// that is being written.
    pub index: Mutex<DelayIndex>,
    /// Woken when a key becomes the earliest, or the store closes.
    pub wake: Notify,
    pub closed: AtomicBool,
    /// Next sequence of [`DELIVERY_PRODUCER_ID`] in the target partition.
    pub next_sequence: Mutex<i32>,
    /// Due time minus delivery time of the last delivered record, ms (a gauge).
    pub last_lateness_ms: AtomicI64,
    /// Where the durable cursor file lives.
    pub cursor_path: PathBuf,
    /// The decompression bound of every read of the delay log.
    pub max_decompressed_bytes: u64,
}

impl DelayStore {
    /// Stores a produced request's batches for delayed delivery: validates every record and
    /// its delay headers (refusing the whole request on any error, writing nothing), adds
    /// `rill-delay-ms` to header-less records when the topic has a default delay, appends to
    /// the delay log and indexes each record's due time.
    pub fn append(&self, bytes: &[u8], limits: ProduceLimits) -> Result<AppendInfo, DelayedError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DelayedError::Closed(self.target.clone()));
        }
        let max_batch = self.delay_log.config().max_message_bytes as usize;
        let batch_headers = batch::validate_all(bytes, max_batch)?;
        batch::validate_produced_records(bytes, limits.max_decompressed_bytes, None)?;
        if batch_headers
            .iter()
            .any(|h| h.is_transactional() || h.is_control())
        {
            return Err(DelayedError::Transactional);
        }
        let (mut requests, cancels) = requests_of(bytes, limits)?;
        let rewritten;
        let stored: &[u8] = if limits.default_delay_ms > 0
            && requests.iter().flatten().any(|r| *r == Request::None)
        {
            rewritten = with_default_delay(bytes, &requests, limits)?;
            for r in requests.iter_mut().flatten() {
                if *r == Request::None {
                    *r = Request::After(limits.default_delay_ms);
                }
            }
            &rewritten
        } else {
            bytes
        };
        let mut index = self.index.lock();
        let ids: Vec<&[u8]> = cancels.iter().map(|c| c.id.as_slice()).collect();
        index.cancels.check_room(&ids)?;
        let info = self.delay_log.append(stored)?;
        if !info.duplicate {
            let stored_ms = info.log_append_time_ms;
            debug_assert!(stored_ms >= 0, "the delay log is a LogAppendTime log");
            let mut base = info.base_offset;
            let mut earliest = false;
            let mut batch_bases = Vec::with_capacity(batch_headers.len());
            for (h, batch_requests) in batch_headers.iter().zip(&requests) {
                batch_bases.push(base);
                for (i, r) in batch_requests.iter().enumerate() {
                    if *r == Request::Cancel {
                        continue;
                    }
                    let key = Key {
                        due_ms: headers::due_ms(*r, stored_ms),
                        offset: base,
                        index: i as u32,
                    };
                    earliest |= index.insert(key);
                }
                base += i64::from(h.last_offset_delta) + 1;
            }
            for c in &cancels {
                index
                    .cancels
                    .insert(&c.id, batch_bases[c.batch] + i64::from(c.index));
            }
            if !cancels.is_empty() {
                index.drop_moot_cancels();
            }
            drop(index);
            if earliest {
                self.wake.notify_one();
            }
        }
        // The flusher syncs what the deliverer waits for, whatever the producer's acks.
        self.delay_log
            .on_durable(info.last_offset + 1, Box::new(|_| {}));
        Ok(info)
    }

    /// Reads the delay log from `from` to its end and selects the smallest keys above
    /// `cursor`. The last stretch is read under the index lock, so it covers every append.
    pub fn scan(&self, capacity: usize) -> Result<(), StorageError> {
        let (cursor, from, load_cancels) = {
            let mut index = self.index.lock();
            let load_cancels = index.scan_started();
            (index.cursor(), index.scan_from(), load_cancels)
        };
        let mut found = Scan::new(capacity, cursor, self.max_decompressed_bytes);
        found.load_cancels = load_cancels;
        let mut at = from.max(self.delay_log.log_start_offset());
        // Bounded: each pass reads up to the end seen at its start, at most 1000 times before
        // the final pass under the lock.
        for _ in 0..1000 {
            let end = self.delay_log.log_end_offset();
            if end - at < 10_000 {
                break;
            }
            at = found.read(&self.delay_log, at, end)?;
        }
        let mut index = self.index.lock();
        let end = self.delay_log.log_end_offset();
        found.read(&self.delay_log, at, end)?;
        index.page_in(found.finish());
        drop(index);
        self.wake.notify_one();
        Ok(())
    }

    /// Makes a delivery round durable beyond the target's producer state, once the target
    /// has it durably: writes the cursor file, then moves the delay log's start to the
    /// segment holding the lowest record still waiting, so that the segments of delivered and
    /// cancelled records are deleted. The start is a segment base (never a roll of the active
    /// segment just for this) and stays at or below every waiting record and every cancel
    /// that may still match one, so a restart pages in exactly what waits.
    pub fn persist_delivered(&self, d: &super::Delivered) -> Result<(), PersistError> {
        super::cursor::write_file(&self.cursor_path, &d.cursor).map_err(|source| {
            PersistError::CursorFile {
                path: self.cursor_path.clone(),
                source,
            }
        })?;
        let below = d.reclaimable_below.min(self.delay_log.flushed_offset());
        let new_start = self
            .delay_log
            .segment_bases()
            .into_iter()
            .filter(|&b| b <= below)
            .max();
        if let Some(start) = new_start {
            if start > self.delay_log.log_start_offset() {
                self.delay_log.delete_records(start)?;
                tracing::debug!(target = %self.target, start, "delay log start moved");
            }
        }
        Ok(())
    }

    /// Delivers `keys` (due, in key order) to `target`: one batch per
    /// [`DELIVERY_BATCH_RECORDS`], each appended as the delivery producer's next sequence.
    /// Returns how many of `keys` were delivered (a prefix) and the error that stopped it.
    pub fn deliver(
        &self,
        target: &Log,
        keys: &[Key],
        now_ms: i64,
    ) -> (usize, Option<StorageError>) {
        let mut done = 0;
        let mut batches = BatchCache::default();
        for chunk in keys.chunks(DELIVERY_BATCH_RECORDS) {
            let (batch, delivered) = match self.build_delivery(&mut batches, chunk, now_ms) {
                Ok(b) => b,
                Err(e) => return (done, Some(e)),
            };
            let skipped = chunk.len() - delivered;
            if skipped > 0 {
                self.index.lock().cancels.skipped(skipped as u64);
            }
            if delivered == 0 {
                done += chunk.len(); // every record of the chunk was cancelled
                continue;
            }
            match target.append(&batch) {
                Ok(info) => {
                    let mut seq = self.next_sequence.lock();
                    *seq = seq.wrapping_add(delivered as i32).max(0);
                    if let Some(last) = chunk.last() {
                        self.last_lateness_ms
                            .store(now_ms - last.due_ms, Ordering::Relaxed);
                    }
                    debug_assert!(info.record_count as usize == delivered || info.duplicate);
                    done += chunk.len();
                }
                Err(e) => return (done, Some(e)),
            }
        }
        (done, None)
    }

    /// The delivery batch of `keys` without the cancelled ones, and how many it holds.
    fn build_delivery(
        &self,
        batches: &mut BatchCache,
        keys: &[Key],
        now_ms: i64,
    ) -> Result<(Vec<u8>, usize), StorageError> {
        let sequence = *self.next_sequence.lock();
        let spec = BatchSpec {
            base_timestamp: now_ms,
            producer_id: DELIVERY_PRODUCER_ID,
            producer_epoch: DELIVERY_EPOCH,
            base_sequence: sequence,
            ..BatchSpec::default()
        };
        let mut builder = BatchBuilder::new(spec, rill_storage::compression::Compression::None);
        let mut raw = Vec::new();
        let mut encoded = Vec::new();
        let mut cancelled = Vec::with_capacity(keys.len());
        {
            // Ids first, then one look at the cancels (a cancel stored before a key was taken
            // is in the set: both happen under the index lock).
            let mut ids = Vec::with_capacity(keys.len());
            for key in keys {
                ids.push(batches.record(self, key)?.id.clone());
            }
            let index = self.index.lock();
            for (key, id) in keys.iter().zip(&ids) {
                let offset = key.offset + i64::from(key.index);
                cancelled.push(index.cancels.cancels(id.as_deref(), offset));
            }
        }
        let mut delta = 0;
        for (key, _) in keys.iter().zip(&cancelled).filter(|(_, c)| !**c) {
            let record = batches.record(self, key)?;
            let added = [
                (headers::PRODUCE_TIMESTAMP, record.produced_ms.to_string()),
                (headers::DELIVERED_FOR, key.due_ms.to_string()),
                (headers::SOURCE, format!("{}.{}", key.offset, key.index)),
            ];
            let added: Vec<(&[u8], Option<&[u8]>)> = added
                .iter()
                .map(|(k, v)| (*k, Some(v.as_bytes())))
                .collect();
            let more = Headers::encode(&added, &mut encoded);
            raw.clear();
            raw.extend_from_slice(&record.headers);
            raw.extend_from_slice(more.raw());
            builder.push(&NewRecord {
                offset_delta: delta,
                timestamp_delta: 0,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: Headers::from_raw(record.header_count + more.count(), &raw),
            });
            delta += 1;
        }
        let mut out = Vec::new();
        if delta > 0 {
            builder
                .finish(&mut out)
                .map_err(|e| corrupt_reason(e.to_string()))?;
        }
        Ok((out, delta as usize))
    }
}

/// One stored record, copied out of its delay log batch.
struct StoredRecord {
    produced_ms: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<u8>,
    header_count: u32,
    /// Its `rill-delay-id`, if the producer set one.
    id: Option<Vec<u8>>,
}

/// Decoded delay log batches of one delivery (keys in due order visit a batch's records in
/// index order, often many from one batch): each batch is read and decoded once. Bounded:
/// past [`BATCH_CACHE_BYTES`] it starts over.
#[derive(Default)]
struct BatchCache {
    batches: std::collections::HashMap<i64, Vec<StoredRecord>>,
    bytes: usize,
}

const BATCH_CACHE_BYTES: usize = 16 << 20;

impl BatchCache {
    fn record(&mut self, store: &DelayStore, key: &Key) -> Result<&StoredRecord, StorageError> {
        if !self.batches.contains_key(&key.offset) {
            let (records, bytes) = decode_batch(store, key.offset)?;
            if self.bytes + bytes > BATCH_CACHE_BYTES {
                self.batches.clear();
                self.bytes = 0;
            }
            self.bytes += bytes;
            self.batches.insert(key.offset, records);
        }
        self.batches
            .get(&key.offset)
            .and_then(|records| records.get(key.index as usize))
            .ok_or_else(|| {
                corrupt_reason(format!(
                    "no record {} in the delay log batch at {}",
                    key.index, key.offset
                ))
            })
    }
}

/// Every record of the delay log batch at `offset`, and their size in bytes.
fn decode_batch(
    store: &DelayStore,
    offset: i64,
) -> Result<(Vec<StoredRecord>, usize), StorageError> {
    let bytes = store.delay_log.read_bytes(offset, 1)?;
    let (header, body) = batch_at(&bytes, offset)?;
    let mut reader =
        RecordReader::for_batch(body, store.max_decompressed_bytes, ReaderBuffers::default())
            .map_err(corrupt)?;
    let mut out = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    let mut size = 0;
    while let Some(r) = reader.next_record().map_err(corrupt)? {
        size += 64 + r.meta.size_bytes as usize;
        out.push(StoredRecord {
            produced_ms: header.base_timestamp.saturating_add(r.meta.timestamp_delta),
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r.headers.raw().to_vec(),
            header_count: r.headers.count(),
            id: headers::id_of(r.headers).map(<[u8]>::to_vec),
        });
    }
    Ok((out, size))
}

/// The batch holding `offset` in bytes read from the delay log (whole batches), with its
/// header.
fn batch_at(bytes: &[u8], offset: i64) -> Result<(BatchHeader, &[u8]), StorageError> {
    let mut at = 0;
    while let Some(h) = BatchHeader::parse(&bytes[at..]) {
        let end = at + h.total_size();
        if end > bytes.len() {
            break;
        }
        if h.base_offset == offset {
            return Ok((h, &bytes[at..end]));
        }
        at = end;
    }
    Err(corrupt_reason(format!(
        "delay log has no batch at offset {offset}"
    )))
}

fn corrupt(e: rill_storage::records::RecordError) -> StorageError {
    corrupt_reason(e.to_string())
}

fn corrupt_reason(reason: String) -> StorageError {
    StorageError::CorruptRecord { reason }
}

/// A cancel record of a produce request: batch number, record index in it, the id it names.
struct CancelRecord {
    batch: usize,
    index: u32,
    id: Vec<u8>,
}

/// Each record's delay request, batch by batch, checked against the maximum, and the cancel
/// records.
#[allow(clippy::type_complexity)]
fn requests_of(
    bytes: &[u8],
    limits: ProduceLimits,
) -> Result<(Vec<Vec<Request>>, Vec<CancelRecord>), DelayedError> {
    let mut out = Vec::new();
    let mut cancels = Vec::new();
    let mut buffers = ReaderBuffers::default();
    let mut at = 0;
    let mut index = 0u32;
    while let Some(h) = BatchHeader::parse(&bytes[at..]) {
        let end = at + h.total_size();
        let mut reader =
            RecordReader::for_batch(&bytes[at..end], limits.max_decompressed_bytes, buffers)?;
        let mut requests = Vec::with_capacity(h.record_count.clamp(0, 4096) as usize);
        while let Some(record) = reader.next_record()? {
            let r = headers::request_of(index, record.headers)?;
            if r == Request::Cancel {
                let id = headers::cancel_id_of(record.headers).expect("checked by request_of");
                cancels.push(CancelRecord {
                    batch: out.len(),
                    index: requests.len() as u32,
                    id: id.to_vec(),
                });
            }
            let effective = match r {
                Request::None if limits.default_delay_ms > 0 => {
                    Request::After(limits.default_delay_ms)
                }
                r => r,
            };
            headers::check_max(index, effective, limits.now_ms, limits.max_delay_ms)?;
            requests.push(r);
            index += 1;
        }
        buffers = reader.into_buffers();
        out.push(requests);
        at = end;
    }
    Ok((out, cancels))
}

/// `bytes` with `rill-delay-ms: <default>` added to every record without a delay header:
/// the stored record then carries its due time, so later changes of the topic default do not
/// move it. Batches keep their producer fields (an idempotent retry is still recognised) and
/// codec.
fn with_default_delay(
    bytes: &[u8],
    requests: &[Vec<Request>],
    limits: ProduceLimits,
) -> Result<Vec<u8>, DelayedError> {
    let default = limits.default_delay_ms.to_string();
    let added: [(&[u8], Option<&[u8]>); 1] = [(headers::DELAY_MS, Some(default.as_bytes()))];
    let mut encoded = Vec::new();
    let extra = Headers::encode(&added, &mut encoded);
    let mut out = Vec::with_capacity(bytes.len() + 32 * requests.len());
    let mut at = 0;
    let mut buffers = ReaderBuffers::default();
    for batch_requests in requests {
        let h = BatchHeader::parse(&bytes[at..]).ok_or_else(|| corrupt_reason("batch".into()))?;
        let end = at + h.total_size();
        let codec = rill_storage::compression::Compression::from_attributes(h.attributes)
            .map_err(rill_storage::records::RecordError::from)?;
        let spec = BatchSpec {
            base_offset: 0,
            partition_leader_epoch: h.partition_leader_epoch,
            attributes: h.attributes,
            base_timestamp: h.base_timestamp,
            max_timestamp: None,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
        };
        let mut builder = BatchBuilder::new(spec, codec);
        let mut reader =
            RecordReader::for_batch(&bytes[at..end], limits.max_decompressed_bytes, buffers)?;
        let mut i = 0;
        let mut raw = Vec::new();
        while let Some(record) = reader.next_record()? {
            raw.clear();
            raw.extend_from_slice(record.headers.raw());
            let mut count = record.headers.count();
            if batch_requests.get(i) == Some(&Request::None) {
                raw.extend_from_slice(extra.raw());
                count += 1;
            }
            builder.push(&NewRecord {
                offset_delta: record.meta.offset_delta,
                timestamp_delta: record.meta.timestamp_delta,
                key: record.key,
                value: record.value,
                headers: Headers::from_raw(count, &raw),
            });
            i += 1;
        }
        buffers = reader.into_buffers();
        builder
            .finish(&mut out)
            .map_err(|e| corrupt_reason(e.to_string()))?;
        at = end;
    }
    Ok(out)
}

/// A scan in progress: the smallest keys above the cursor, and counts.
struct Scan {
    max_decompressed_bytes: u64,
    smallest: Smallest,
    cursor: Option<Key>,
    waiting: u64,
    min_offset: Option<i64>,
    buffers: ReaderBuffers,
    /// Whether to collect cancel records (the first scan after opening).
    load_cancels: bool,
    cancels: Vec<(Vec<u8>, i64)>,
}

impl Scan {
    fn new(capacity: usize, cursor: Option<Key>, max_decompressed_bytes: u64) -> Scan {
        Scan {
            max_decompressed_bytes,
            smallest: Smallest::new(capacity),
            cursor,
            waiting: 0,
            min_offset: None,
            buffers: ReaderBuffers::default(),
            load_cancels: false,
            cancels: Vec::new(),
        }
    }

    /// Reads `[from, until)`; returns where it got to.
    fn read(&mut self, log: &Log, mut from: i64, until: i64) -> Result<i64, StorageError> {
        while from < until {
            let bytes = match log.read_bytes(from, SCAN_READ_BYTES) {
                Ok(b) => b,
                Err(StorageError::OffsetOutOfRange { .. }) => break,
                Err(e) => return Err(e),
            };
            if bytes.is_empty() {
                break;
            }
            let mut at = 0;
            let start = from;
            while let Some(h) = BatchHeader::parse(&bytes[at..]) {
                let end = at + h.total_size();
                if end > bytes.len() || h.base_offset >= until {
                    break;
                }
                if h.last_offset() >= from && !h.is_control() {
                    self.batch(&bytes[at..end], &h)?;
                }
                from = from.max(h.last_offset() + 1);
                at = end;
            }
            if from == start {
                break; // nothing readable (past the high watermark)
            }
        }
        Ok(from)
    }

    fn batch(&mut self, bytes: &[u8], h: &BatchHeader) -> Result<(), StorageError> {
        let buffers = std::mem::take(&mut self.buffers);
        let mut reader = RecordReader::for_batch(bytes, self.max_decompressed_bytes, buffers)
            .map_err(corrupt)?;
        let mut i = 0u32;
        while let Some(record) = reader.next_record().map_err(corrupt)? {
            // Checked at produce; a record that fails now is delivered at once, not lost.
            let request = headers::request_of(i, record.headers).unwrap_or(Request::None);
            if request == Request::Cancel {
                if let Some(id) = headers::cancel_id_of(record.headers) {
                    if self.load_cancels {
                        self.cancels
                            .push((id.to_vec(), h.base_offset + i64::from(i)));
                    }
                }
                i += 1;
                continue;
            }
            let key = Key {
                due_ms: headers::due_ms(request, h.max_timestamp),
                offset: h.base_offset,
                index: i,
            };
            if self.cursor.is_none_or(|c| key > c) {
                self.waiting += 1;
                self.min_offset = Some(self.min_offset.map_or(key.offset, |m| m.min(key.offset)));
                self.smallest.offer(key);
            }
            i += 1;
        }
        self.buffers = reader.into_buffers();
        Ok(())
    }

    fn finish(self) -> PageIn {
        let disk_min_offset = self.smallest.dropped_min_offset();
        let (keys, truncated) = self.smallest.into_parts();
        PageIn {
            keys,
            truncated,
            waiting: self.waiting,
            min_offset: self.min_offset,
            disk_min_offset,
            cancels: self.cancels,
        }
    }
}
