//! One cleaning pass over a compacted log (Kafka's `Cleaner`): the latest record of each key
//! survives, offsets are kept (gaps allowed), and the rewritten segments are swapped in so
//! that a crash at any moment leaves either the old files or the new ones.
//!
//! A pass:
//! 1. Takes the cleanable sealed segments: below the log's *persisted* recovery point (so a
//!    restart opens them as trusted sealed segments and never has to tell a cleaned gap from a
//!    torn tail) and older than `min.compaction.lag.ms`. The active segment is never touched.
//! 2. Reads the dirty part (from the first dirty offset, persisted in `cleaner-offset`) into an
//!    [`OffsetMap`] until the map is full or the cleanable part ends: that is the pass's end.
//! 3. Rewrites every segment below the end, in groups whose input fits `segment.bytes` (so small
//!    cleaned segments merge): a record survives if the map holds no later offset for its key;
//!    keyless records go (as in Kafka); a tombstone goes once it has been through a previous
//!    pass and its segment is older than `delete.retention.ms`.
//! 4. Swaps each group in (see [`complete_swap`]) and persists the new first dirty offset.
//!
//! Batches: a batch whose records all survive is copied as it is; one that loses some is
//! written again with the survivors (same base and last offset, producer fields and
//! timestamps, new count, length and CRC); one that loses all is dropped. Uncompressed
//! records are copied byte for byte; a compressed batch is decompressed (bounded by
//! [`MAX_DECOMPRESSED_BATCH_BYTES`]) and its survivors compressed again with the same codec
//! ([`crate::records::BatchBuilder`]).
//!
//! Transactions (Kafka's `CleanedTransactionMetadata`, simplified): a pass cleans only below
//! the last stable offset, so every transactional batch it sees has its marker in the log and
//! is either aborted (listed in a segment's `.txnindex`) or committed. Aborted batches are
//! dropped whole and never enter the key map (so an aborted record never hides a committed
//! one); committed ones are cleaned by key like any other. A marker is dropped once no record
//! of its transaction is left and its segment has been through a previous pass and is older
//! than `delete.retention.ms` (the tombstone rule); otherwise it is kept as it is. The
//! `.txnindex` entries of a group's segments are carried into the cleaned segment.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::batch::{self, BatchHeader, HEADER_SIZE};
use crate::compression::Compression;
use crate::error::{Result, StorageError};
use crate::file_io::{self, FileIo, IoFile};
use crate::index::IndexEntry;
use crate::keyed_records::{self, RecordRef, CONTROL_FLAG};
use crate::log::{now_ms, Log, LogState};
use crate::offset_map::OffsetMap;
use crate::records::{BatchBuilder, BatchSpec, Headers, NewRecord, ReaderBuffers, RecordReader};
use crate::segment::{file_name, Segment};
use crate::txn_index::AbortedTxnEntry;

/// The file in a partition directory holding the first dirty offset (Kafka keeps these in one
/// `cleaner-offset-checkpoint` per data directory; one per log keeps the cleaner's writes
/// local to the log it cleans).
pub const CLEANER_OFFSET_FILE: &str = "cleaner-offset";
/// Suffix of a rewritten file before its swap is committed.
const CLEANED_SUFFIX: &str = "cleaned";
/// Suffix of the manifest that commits a swap: `<base>.swap` holding the end offset of the
/// segments it replaces.
const SWAP_SUFFIX: &str = "swap";
/// The cleaner reads and writes in chunks of this size.
const IO_CHUNK_BYTES: usize = 1 << 20;
/// The files of a segment, log last: its rename completes the swap of one base. A
/// `.txnindex` exists only for segments with aborted transactions.
const KINDS: [&str; 4] = ["index", "timeindex", "txnindex", "log"];

/// Cleaner state and counters of one log, kept in the [`Log`] so metrics read them directly.
#[derive(Debug)]
pub struct LogCleanerState {
    /// Set while a pass runs: one cleaner thread per log at a time.
    busy: AtomicBool,
    /// First offset not yet cleaned; -1 until read from [`CLEANER_OFFSET_FILE`].
    first_dirty: AtomicI64,
    bytes_read_total: AtomicU64,
    bytes_written_total: AtomicU64,
    clean_nanos_total: AtomicU64,
    last_clean_nanos: AtomicU64,
    passes: AtomicU64,
}

impl Default for LogCleanerState {
    fn default() -> Self {
        LogCleanerState {
            busy: AtomicBool::new(false),
            first_dirty: AtomicI64::new(-1),
            bytes_read_total: AtomicU64::new(0),
            bytes_written_total: AtomicU64::new(0),
            clean_nanos_total: AtomicU64::new(0),
            last_clean_nanos: AtomicU64::new(0),
            passes: AtomicU64::new(0),
        }
    }
}

/// What the cleaner reports of one log, for /metrics and `rill topic describe`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CleanerMetrics {
    /// Dirty bytes / cleanable bytes of the sealed segments (0 when there are none).
    pub dirty_ratio: f64,
    /// Input bytes the cleaner has read from this log since start.
    pub bytes_read_total: u64,
    /// Bytes it wrote in their place.
    pub bytes_written_total: u64,
    pub clean_nanos_total: u64,
    pub last_clean_nanos: u64,
    pub passes: u64,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_kept: u64,
    pub records_removed: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// The first dirty offset after the pass.
    pub end_offset: i64,
}

/// What a pass needs from its environment.
pub struct CleanContext<'a> {
    /// Bound of the key map (`log.cleaner.dedupe.buffer.size` / threads).
    pub map_bytes: usize,
    /// Read chunk of this pass (`log.cleaner.io.buffer.size` / threads / 2); a larger batch
    /// grows it.
    pub read_chunk_bytes: usize,
    /// The log's recovery point as last written to the checkpoint file.
    pub persisted_recovery_point: i64,
    pub now_ms: i64,
    /// Called with the bytes read or written, to throttle (`log.cleaner.io.max.bytes.per.second`).
    pub throttle: &'a (dyn Fn(u64) + Sync),
    /// A pass checks this between batches and abandons its work when set (shutdown).
    pub stop: &'a AtomicBool,
}

/// A sealed segment as the cleaner sees it, taken under the log's lock.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub id: u64,
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    pub file: Arc<IoFile>,
}

/// Clears the busy flag when a pass ends, however it ends.
struct Busy<'a>(&'a AtomicBool);
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl LogCleanerState {
    /// Whether a pass is running on this log.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    fn first_dirty(&self, dir: &Path) -> Result<i64> {
        let v = self.first_dirty.load(Ordering::Acquire);
        if v >= 0 {
            return Ok(v);
        }
        let path = dir.join(CLEANER_OFFSET_FILE);
        let v = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map_err(|_| StorageError::Corrupt {
                path: path.clone(),
                reason: format!("not an offset: {s:?}"),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io("read", path, e)),
        };
        self.first_dirty.store(v, Ordering::Release);
        Ok(v)
    }

    fn set_first_dirty(&self, io: &dyn FileIo, dir: &Path, offset: i64) -> Result<()> {
        let path = dir.join(CLEANER_OFFSET_FILE);
        file_io::write_atomically(io, &path, format!("{offset}\n").as_bytes())
            .map_err(|e| StorageError::io("write", &path, e))?;
        self.first_dirty.store(offset, Ordering::Release);
        Ok(())
    }
}

/// The cleanable prefix of `segments` (ascending, sealed): below the persisted recovery point
/// and older than `min.compaction.lag.ms`.
fn cleanable(segments: &[SegmentView], recovery_point: i64, now: i64, min_lag_ms: i64) -> usize {
    segments
        .iter()
        .take_while(|s| {
            s.next_offset <= recovery_point
                && (min_lag_ms <= 0 || s.max_timestamp < now.saturating_sub(min_lag_ms))
        })
        .count()
}

/// Dirty bytes over cleanable bytes, and whether the oldest dirty record is past
/// `max.compaction.lag.ms` (then the log is cleaned whatever its ratio).
pub(crate) fn dirty_state(log: &Log, ctx_recovery_point: i64, now: i64) -> Result<(f64, bool)> {
    let config = log.config();
    let segments = log.sealed_segments()?;
    let first_dirty = log.cleaner.first_dirty(log.dir())?;
    let n = cleanable(
        &segments,
        ctx_recovery_point.min(log.last_stable_offset()),
        now,
        config.min_compaction_lag_ms,
    );
    let (mut clean, mut dirty) = (0u64, 0u64);
    let mut oldest_dirty: Option<i64> = None;
    for s in &segments[..n] {
        if s.next_offset <= first_dirty {
            clean += s.size;
        } else {
            dirty += s.size;
            oldest_dirty.get_or_insert(s.max_timestamp);
        }
    }
    let ratio = if dirty == 0 {
        0.0
    } else {
        dirty as f64 / (clean + dirty) as f64
    };
    let overdue = dirty > 0
        && oldest_dirty
            .is_some_and(|t| t >= 0 && t < now.saturating_sub(config.max_compaction_lag_ms));
    Ok((ratio, overdue))
}

/// Counters and dirty ratio of one log.
pub(crate) fn metrics(log: &Log) -> CleanerMetrics {
    let c = &log.cleaner;
    let dirty_ratio = if log.config().compacts() {
        // The metric looks at every sealed segment (the recovery point only delays a clean).
        dirty_state(log, i64::MAX, now_ms()).map_or(0.0, |(r, _)| r)
    } else {
        0.0
    };
    CleanerMetrics {
        dirty_ratio,
        bytes_read_total: c.bytes_read_total.load(Ordering::Relaxed),
        bytes_written_total: c.bytes_written_total.load(Ordering::Relaxed),
        clean_nanos_total: c.clean_nanos_total.load(Ordering::Relaxed),
        last_clean_nanos: c.last_clean_nanos.load(Ordering::Relaxed),
        passes: c.passes.load(Ordering::Relaxed),
    }
}

/// Reads a sealed segment batch by batch in large chunks.
struct BatchReader<'a> {
    file: &'a IoFile,
    end: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_pos: u64,
    buf_len: usize,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a IoFile, end: u64, chunk_bytes: usize) -> Self {
        BatchReader {
            file,
            end,
            pos: 0,
            buf: vec![0; chunk_bytes.min(end as usize).max(HEADER_SIZE)],
            buf_pos: 0,
            buf_len: 0,
        }
    }

    /// The next whole, valid batch, or `None` at the end. A batch that does not validate is
    /// corruption in a sealed segment: an error, never written on.
    fn next(&mut self, throttle: &dyn Fn(u64)) -> Result<Option<(BatchHeader, &[u8])>> {
        if self.pos + HEADER_SIZE as u64 > self.end {
            return Ok(None);
        }
        let corrupt = |reason: String| StorageError::Corrupt {
            path: self.file.path().to_path_buf(),
            reason,
        };
        self.fill(HEADER_SIZE, throttle)?;
        let at = (self.pos - self.buf_pos) as usize;
        let header = BatchHeader::parse(&self.buf[at..self.buf_len])
            .ok_or_else(|| corrupt(format!("short header at {}", self.pos)))?;
        let size = header.total_size();
        if size < HEADER_SIZE || self.pos + size as u64 > self.end {
            return Err(corrupt(format!(
                "batch at {} overruns the segment",
                self.pos
            )));
        }
        self.fill(size, throttle)?;
        let at = (self.pos - self.buf_pos) as usize;
        let bytes = &self.buf[at..at + size];
        batch::validate_stored(bytes, usize::MAX)
            .map_err(|e| corrupt(format!("batch at {}: {e}", self.pos)))?;
        self.pos += size as u64;
        Ok(Some((header, bytes)))
    }

    /// Makes `len` bytes from `pos` available in the buffer.
    fn fill(&mut self, len: usize, throttle: &dyn Fn(u64)) -> Result<()> {
        if self.pos + len as u64 <= self.buf_pos + self.buf_len as u64 {
            return Ok(());
        }
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let want = (self.buf.len() as u64).min(self.end - self.pos) as usize;
        let n = self
            .file
            .read_at(&mut self.buf[..want], self.pos)
            .map_err(|e| StorageError::io("read", self.file.path(), e))?;
        throttle(n as u64);
        self.buf_pos = self.pos;
        self.buf_len = n;
        if n < len {
            return Err(StorageError::Corrupt {
                path: self.file.path().to_path_buf(),
                reason: format!("segment ends inside the batch at {}", self.pos),
            });
        }
        Ok(())
    }
}

/// Whether one record survives: it has a key, no later offset of that key is in the map,
/// and it is not a tombstone past its time.
fn keep_record(
    key: Option<&[u8]>,
    tombstone: bool,
    offset: i64,
    map: &OffsetMap,
    drop_tombstones: bool,
) -> bool {
    let Some(key) = key else {
        return false; // Kafka's cleaner drops keyless records of a compacted log.
    };
    if map.get(key).is_some_and(|latest| latest > offset) {
        return false;
    }
    !(tombstone && drop_tombstones)
}

/// Whether a batch is one the cleaner looks inside: data batches (not control batches).
fn is_cleanable_batch(header: &BatchHeader) -> bool {
    header.attributes & CONTROL_FLAG == 0
}

/// What a pass knows of transactions: the aborted ones, from every segment's `.txnindex`, and
/// which producers still have a record of their current transaction kept by the pass (their
/// marker must stay). Bounded by the aborted transactions of the log.
#[derive(Debug, Default)]
pub(crate) struct TxnCleaning {
    /// By producer: (first offset, marker offset) of each aborted transaction, in marker order.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// Producers with a record kept since their last marker in this pass.
    data_kept: HashSet<i64>,
    /// The `.txnindex` entries of each segment, by base offset.
    entries_by_segment: HashMap<i64, Vec<AbortedTxnEntry>>,
}

impl TxnCleaning {
    pub(crate) fn new(entries_by_segment: HashMap<i64, Vec<AbortedTxnEntry>>) -> Self {
        let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        let mut all: Vec<&AbortedTxnEntry> = entries_by_segment.values().flatten().collect();
        all.sort_unstable_by_key(|e| e.last_offset);
        for e in all {
            aborted
                .entry(e.producer_id)
                .or_default()
                .push((e.first_offset, e.last_offset));
        }
        TxnCleaning {
            aborted,
            data_kept: HashSet::new(),
            entries_by_segment,
        }
    }

    /// Whether a data batch belongs to an aborted transaction.
    fn is_aborted(&self, h: &BatchHeader) -> bool {
        if !h.is_transactional() || h.is_control() {
            return false;
        }
        let Some(txns) = self.aborted.get(&h.producer_id) else {
            return false;
        };
        // The first abort whose marker follows the batch is the only one that can hold it.
        let i = txns.partition_point(|&(_, last)| last < h.base_offset);
        txns.get(i)
            .is_some_and(|&(first, _)| first <= h.base_offset)
    }

    /// Notes a kept data batch.
    fn kept(&mut self, h: &BatchHeader) {
        if h.is_transactional() && !h.is_control() {
            self.data_kept.insert(h.producer_id);
        }
    }

    /// Whether a marker batch may go (`old_enough`: its segment passes the tombstone rule):
    /// none of its transaction's records is left. Ends the producer's transaction either way.
    fn drop_marker(&mut self, h: &BatchHeader, bytes: &[u8], old_enough: bool) -> bool {
        let had_data = self.data_kept.remove(&h.producer_id);
        old_enough && !had_data && crate::txn_marker::parse_marker(bytes).is_some()
    }

    /// The entries for the cleaned segment replacing `group`.
    fn entries_for(&self, group: &[&SegmentView]) -> Vec<AbortedTxnEntry> {
        group
            .iter()
            .filter_map(|s| self.entries_by_segment.get(&s.base_offset))
            .flatten()
            .copied()
            .collect()
    }
}

/// The most a compressed batch may inflate to in the cleaner, as the broker's default
/// `rill.decompressed.batch.max.bytes`: every stored batch passed that bound on produce. A
/// batch past it is kept whole.
pub const MAX_DECOMPRESSED_BATCH_BYTES: u64 = 64 << 20;

/// One record of a compressed batch, decoded.
struct OwnedRecord {
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    header_count: u32,
    headers: Vec<u8>,
}

/// The records of a compressed batch; `None` if they do not decode (the batch is then kept
/// whole).
fn decode_compressed(bytes: &[u8]) -> Option<Vec<OwnedRecord>> {
    let mut reader = RecordReader::for_batch(
        bytes,
        MAX_DECOMPRESSED_BATCH_BYTES,
        ReaderBuffers::default(),
    )
    .ok()?;
    let mut out = Vec::new();
    // Bounded by the decompression bound.
    while let Some(r) = reader.next_record().ok()? {
        out.push(OwnedRecord {
            offset_delta: r.meta.offset_delta,
            timestamp_delta: r.meta.timestamp_delta,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            header_count: r.headers.count(),
            headers: r.headers.raw().to_vec(),
        });
    }
    Some(out)
}

/// Writes the survivors of a compressed batch as a new batch with the same header fields and
/// codec. `None` if it cannot be compressed again (the batch is then kept whole).
fn rebuild_compressed(
    header: &BatchHeader,
    bytes: &[u8],
    keep: &[&OwnedRecord],
    out: &mut Vec<u8>,
) -> Option<()> {
    let codec = Compression::from_attributes(header.attributes).ok()?;
    let spec = BatchSpec {
        base_offset: header.base_offset,
        partition_leader_epoch: header.partition_leader_epoch,
        attributes: header.attributes,
        base_timestamp: header.base_timestamp,
        max_timestamp: Some(header.max_timestamp),
        producer_id: header.producer_id,
        producer_epoch: i16::from_be_bytes([bytes[51], bytes[52]]),
        base_sequence: i32::from_be_bytes([bytes[53], bytes[54], bytes[55], bytes[56]]),
    };
    let mut builder = BatchBuilder::new(spec, codec);
    for r in keep {
        builder.push(&NewRecord {
            offset_delta: r.offset_delta,
            timestamp_delta: r.timestamp_delta,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: Headers::from_raw(r.header_count, &r.headers),
        });
    }
    builder.set_last_offset_delta(header.last_offset_delta);
    let at = out.len();
    if builder.finish(out).is_err() {
        out.truncate(at);
        return None;
    }
    Some(())
}

fn cleaned_path(dir: &Path, base: i64, kind: &str) -> PathBuf {
    dir.join(format!("{}.{CLEANED_SUFFIX}", file_name(base, kind)))
}

/// Runs one pass over `log`. `Ok(None)` when there was nothing to clean (or another thread is
/// on it). Blocking: reads and writes whole segments.
pub fn clean(log: &Log, ctx: &CleanContext<'_>) -> Result<Option<CleanStats>> {
    let config = log.config();
    if !config.compacts() {
        return Ok(None);
    }
    if log.cleaner.busy.swap(true, Ordering::AcqRel) {
        return Ok(None);
    }
    let _busy = Busy(&log.cleaner.busy);
    let started = Instant::now();
    let segments = log.sealed_segments()?;
    // Below the LSO only: every transaction there is decided (Kafka's first uncleanable offset).
    let n = cleanable(
        &segments,
        ctx.persisted_recovery_point.min(log.last_stable_offset()),
        ctx.now_ms,
        config.min_compaction_lag_ms,
    );
    let segments = &segments[..n];
    let mut txns = TxnCleaning::new(log.aborted_txn_entries()?);
    let first_dirty = log.cleaner.first_dirty(log.dir())?;
    let Some(cleanable_end) = segments.last().map(|s| s.next_offset) else {
        return Ok(None);
    };
    if cleanable_end <= first_dirty {
        return Ok(None);
    }
    let throttle = ctx.throttle;

    // 2. The key map over the dirty part.
    let mut map = OffsetMap::new(ctx.map_bytes);
    let mut map_end = cleanable_end;
    let mut stats = CleanStats {
        segments_before: segments.len(),
        ..CleanStats::default()
    };
    'segments: for s in segments.iter().filter(|s| s.next_offset > first_dirty) {
        let mut reader = BatchReader::new(&s.file, s.size, ctx.read_chunk_bytes);
        while let Some((header, bytes)) = reader.next(throttle)? {
            if ctx.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if header.last_offset() < first_dirty
                || !is_cleanable_batch(&header)
                || txns.is_aborted(&header)
            {
                continue;
            }
            let fits = if header.compression() == 0 {
                let Some(records) = keyed_records::records(bytes) else {
                    continue; // Malformed records are kept as they are.
                };
                let entries: Vec<(&[u8], i64)> = records
                    .iter()
                    .filter_map(|r| {
                        let key = r.key.clone()?;
                        Some((&bytes[key], header.base_offset + r.offset_delta))
                    })
                    .collect();
                map.put_all(&entries)
            } else {
                let Some(records) = decode_compressed(bytes) else {
                    continue;
                };
                let entries: Vec<(&[u8], i64)> = records
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.key.as_deref()?,
                            header.base_offset + i64::from(r.offset_delta),
                        ))
                    })
                    .collect();
                map.put_all(&entries)
            };
            if !fits {
                map_end = header.base_offset;
                break 'segments;
            }
        }
    }
    if map_end <= first_dirty {
        tracing::warn!(partition = %log.topic_partition(), "log.cleaner.dedupe.buffer.size is too small for one batch of keys; not cleaning");
        return Ok(None);
    }

    // 3. Groups of segments below the end, each rewritten into one.
    let targets: Vec<&SegmentView> = segments
        .iter()
        .filter(|s| s.base_offset < map_end)
        .collect();
    let mut groups: Vec<Vec<&SegmentView>> = Vec::new();
    for s in targets {
        match groups.last_mut() {
            Some(g)
                if g.iter().map(|x| x.size).sum::<u64>() + s.size <= config.segment_bytes
                    && s.next_offset - g[0].base_offset <= i64::from(i32::MAX) =>
            {
                g.push(s)
            }
            _ => groups.push(vec![s]),
        }
    }
    let delete_horizon = ctx.now_ms.saturating_sub(config.delete_retention_ms);
    for group in &groups {
        if ctx.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let written = rewrite_group(
            log,
            group,
            &map,
            first_dirty,
            delete_horizon,
            ctx,
            &mut stats,
            &mut txns,
        )?;
        let Some(written) = written else {
            return Ok(None);
        };
        stats.bytes_written += written;
    }
    stats.segments_after = log.sealed_segments()?.len();
    log.cleaner
        .set_first_dirty(&*log.files().io, log.dir(), map_end)?;
    stats.end_offset = map_end;
    let c = &log.cleaner;
    let nanos = crate::flusher::nanos_since(started);
    c.bytes_read_total
        .fetch_add(stats.bytes_read, Ordering::Relaxed);
    c.bytes_written_total
        .fetch_add(stats.bytes_written, Ordering::Relaxed);
    c.clean_nanos_total.fetch_add(nanos, Ordering::Relaxed);
    c.last_clean_nanos.store(nanos, Ordering::Relaxed);
    c.passes.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(partition = %log.topic_partition(), read = stats.bytes_read, written = stats.bytes_written, ms = nanos / 1_000_000, "cleaned");
    Ok(Some(stats))
}

/// Writes the cleaned form of `group` as `.cleaned` files, syncs them, and swaps them in under
/// the log's lock. Returns the bytes written, or `None` when the pass was stopped or the
/// segments changed underneath (retention, DeleteRecords): the new files are then removed.
#[allow(clippy::too_many_arguments)]
fn rewrite_group(
    log: &Log,
    group: &[&SegmentView],
    map: &OffsetMap,
    first_dirty: i64,
    delete_horizon: i64,
    ctx: &CleanContext<'_>,
    stats: &mut CleanStats,
    txns: &mut TxnCleaning,
) -> Result<Option<u64>> {
    let files = log.files();
    let io = &*files.io;
    let dir = log.dir();
    let base = group[0].base_offset;
    let end = group.last().expect("a group is not empty").next_offset;
    let log_path = cleaned_path(dir, base, "log");
    let out = io
        .open(&log_path, true)
        .map_err(|e| StorageError::io("create", &log_path, e))?;
    io.set_len(&out, 0)
        .map_err(|e| StorageError::io("truncate", &log_path, e))?;
    let mut scratch = Segment::scratch(files, dir, base, log.config().index_interval_bytes);
    let mut buf: Vec<u8> = Vec::with_capacity(IO_CHUNK_BYTES + HEADER_SIZE);
    let mut written: u64 = 0;
    let flush = |buf: &mut Vec<u8>, written: &mut u64| -> Result<()> {
        io.write_at(&out, &[buf], *written)
            .map_err(|e| StorageError::io("pwrite", &log_path, e))?;
        (ctx.throttle)(buf.len() as u64);
        *written += buf.len() as u64;
        buf.clear();
        Ok(())
    };
    for s in group {
        // A tombstone goes once a previous pass has seen it and its segment is old enough.
        let drop_tombstones = s.next_offset <= first_dirty && s.max_timestamp < delete_horizon;
        let mut reader = BatchReader::new(&s.file, s.size, ctx.read_chunk_bytes);
        while let Some((header, bytes)) = reader.next(ctx.throttle)? {
            if ctx.stop.load(Ordering::Relaxed) {
                discard_cleaned(dir, base);
                return Ok(None);
            }
            stats.bytes_read += bytes.len() as u64;
            let at = buf.len();
            if !is_cleanable_batch(&header) {
                if txns.drop_marker(&header, bytes, drop_tombstones) {
                    stats.records_removed += 1;
                    continue;
                }
                buf.extend_from_slice(bytes);
            } else if txns.is_aborted(&header) {
                stats.records_removed += header.record_count.max(0) as u64;
                continue;
            } else if header.compression() == 0 {
                match keyed_records::records(bytes) {
                    None => buf.extend_from_slice(bytes),
                    Some(records) => {
                        let keep: Vec<&RecordRef> = records
                            .iter()
                            .filter(|r| {
                                keep_record(
                                    r.key.clone().map(|k| &bytes[k]),
                                    r.value.is_none(),
                                    header.base_offset + r.offset_delta,
                                    map,
                                    drop_tombstones,
                                )
                            })
                            .collect();
                        stats.records_kept += keep.len() as u64;
                        stats.records_removed += (records.len() - keep.len()) as u64;
                        if keep.is_empty() {
                            continue;
                        } else if keep.len() == records.len() {
                            buf.extend_from_slice(bytes);
                        } else {
                            keyed_records::rebuild(bytes, &keep, &mut buf);
                        }
                    }
                }
            } else {
                match decode_compressed(bytes) {
                    None => buf.extend_from_slice(bytes),
                    Some(records) => {
                        let keep: Vec<&OwnedRecord> = records
                            .iter()
                            .filter(|r| {
                                keep_record(
                                    r.key.as_deref(),
                                    r.value.is_none(),
                                    header.base_offset + i64::from(r.offset_delta),
                                    map,
                                    drop_tombstones,
                                )
                            })
                            .collect();
                        stats.records_kept += keep.len() as u64;
                        stats.records_removed += (records.len() - keep.len()) as u64;
                        if keep.is_empty() {
                            continue;
                        } else if keep.len() == records.len()
                            || rebuild_compressed(&header, bytes, &keep, &mut buf).is_none()
                        {
                            buf.extend_from_slice(bytes);
                        }
                    }
                }
            }
            let new_header =
                BatchHeader::parse(&buf[at..]).expect("a whole header was just written");
            txns.kept(&new_header);
            scratch.track_batch(written + at as u64, &new_header);
            if buf.len() >= IO_CHUNK_BYTES {
                flush(&mut buf, &mut written)?;
            }
        }
    }
    if !buf.is_empty() {
        flush(&mut buf, &mut written)?;
    }
    io.sync_data(&out)
        .map_err(|e| StorageError::io("fdatasync", &log_path, e))?;
    let (offsets, times) = scratch.finish_scratch();
    write_index(io, &cleaned_path(dir, base, "index"), &offsets)?;
    write_index(io, &cleaned_path(dir, base, "timeindex"), &times)?;
    let aborted = txns.entries_for(group);
    if !aborted.is_empty() {
        write_index(io, &cleaned_path(dir, base, "txnindex"), &aborted)?;
    }
    io.sync_dir(dir)
        .map_err(|e| StorageError::io("fsync dir", dir, e))?;

    let swapped = log.with_state(|state| swap_in(log, state, group, base, end));
    match swapped {
        Ok(true) => Ok(Some(written)),
        Ok(false) => {
            discard_cleaned(dir, base);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn write_index<E: IndexEntry>(io: &dyn FileIo, path: &Path, entries: &[E]) -> Result<()> {
    let mut bytes = Vec::with_capacity(entries.len() * E::SIZE);
    for e in entries {
        e.encode(&mut bytes);
    }
    let f = io
        .open(path, true)
        .map_err(|e| StorageError::io("create", path, e))?;
    io.set_len(&f, 0)
        .map_err(|e| StorageError::io("truncate", path, e))?;
    io.write_at(&f, &[&bytes], 0)
        .map_err(|e| StorageError::io("write", path, e))?;
    io.sync_data(&f)
        .map_err(|e| StorageError::io("fdatasync", path, e))
}

/// Removes a group's uncommitted `.cleaned` files (best effort: recovery removes leftovers).
fn discard_cleaned(dir: &Path, base: i64) {
    for kind in KINDS {
        let _ = std::fs::remove_file(cleaned_path(dir, base, kind));
    }
}

/// Under the log's lock: checks that the group's segments are still the ones read, commits
/// the swap with its manifest, completes it, and puts the new segment in their place.
fn swap_in(
    log: &Log,
    state: &mut LogState,
    group: &[&SegmentView],
    base: i64,
    end: i64,
) -> Result<bool> {
    let unchanged = group.iter().all(|v| {
        state
            .segments
            .get(&v.base_offset)
            .is_some_and(|s| s.id == v.id && s.sealed)
    });
    if !unchanged {
        return Ok(false);
    }
    let files = log.files();
    let dir = log.dir();
    let manifest = manifest_path(dir, base);
    file_io::write_atomically(&*files.io, &manifest, format!("{end}\n").as_bytes())
        .map_err(|e| StorageError::io("write", &manifest, e))?;
    // Committed: from here recovery finishes the swap if we do not.
    for v in group {
        let mut old = state
            .segments
            .remove(&v.base_offset)
            .expect("checked under the same lock");
        // Its descriptors (cached or owned) and index maps, so the replaced files' space is
        // freed when they are deleted below.
        old.close_files(files);
    }
    complete_swap(&*files.io, dir, base, end)?;
    let segment = Segment::open_sealed(files, dir, base, end)?;
    state.segments.insert(base, segment);
    Ok(true)
}

/// Finishes a committed swap (idempotent, so recovery can run it again after a crash in it):
/// removes the replaced segments above `base` and below `end`, renames each `.cleaned` file of
/// `base` over its segment file, syncs the directory, then removes the manifest.
pub(crate) fn complete_swap(io: &dyn FileIo, dir: &Path, base: i64, end: i64) -> Result<()> {
    for old in segment_bases(dir)? {
        if old > base && old < end {
            for kind in KINDS {
                let path = dir.join(file_name(old, kind));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("delete", path, e)),
                }
            }
        }
    }
    for kind in KINDS {
        let from = cleaned_path(dir, base, kind);
        if from.exists() {
            let to = dir.join(file_name(base, kind));
            io.rename(&from, &to)
                .map_err(|e| StorageError::io("rename", &from, e))?;
        }
    }
    io.sync_dir(dir)
        .map_err(|e| StorageError::io("fsync dir", dir, e))?;
    let manifest = manifest_path(dir, base);
    match std::fs::remove_file(&manifest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("delete", manifest, e)),
    }
    io.sync_dir(dir)
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}

fn manifest_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.{SWAP_SUFFIX}"))
}

fn segment_bases(dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        if let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<i64>().ok())
        {
            out.push(base);
        }
    }
    Ok(out)
}

/// At open, before the segments are listed: finishes every committed swap (a `.swap`
/// manifest exists) and removes the `.cleaned` files of uncommitted ones.
pub(crate) fn recover_swaps(io: &dyn FileIo, dir: &Path) -> Result<()> {
    let mut manifests = Vec::new();
    let mut cleaned = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(&format!(".{SWAP_SUFFIX}")) {
            if let Ok(base) = stem.parse::<i64>() {
                manifests.push((base, entry.path()));
            }
        } else if name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            cleaned.push(entry.path());
        }
    }
    manifests.sort();
    for (base, path) in manifests {
        let text =
            std::fs::read_to_string(&path).map_err(|e| StorageError::io("read", &path, e))?;
        let end: i64 = text.trim().parse().map_err(|_| StorageError::Corrupt {
            path: path.clone(),
            reason: format!("not an offset: {text:?}"),
        })?;
        tracing::info!(dir = %dir.display(), base, end, "finishing an interrupted cleaner swap");
        complete_swap(io, dir, base, end)?;
    }
    for path in cleaned {
        if path.exists() {
            tracing::info!(file = %path.display(), "removing an uncommitted cleaned file");
            std::fs::remove_file(&path).map_err(|e| StorageError::io("delete", &path, e))?;
        }
    }
    Ok(())
}
