//! One partition's log (Kafka's `UnifiedLog` + `LocalLog` for a single node): an ordered set of
//! segments, the last one active. Appends assign offsets and write with one pwritev; reads
//! return file ranges for sendfile, up to the high watermark; flushes are grouped across logs
//! by the data directory's flusher (`flusher.rs`).
//!
//! Locking: `state` guards the segments and is held for page-cache work only (pwrite, header
//! reads, index lookups). fdatasync happens outside it, by one flush leader at a time (the
//! sync gate: the flusher thread, or a checkpoint or close). Durability waiters register a
//! callback ([`Log::on_durable`]) that the flush which covers them calls; nobody parks a
//! thread on a flush except the blocking [`Log::wait_durable`].
//!
//! Visibility: with `rill.high.watermark.visibility=durable` (the default) the high watermark
//! is the flushed offset, and reads stop at the flushed byte position ([`DurablePoint`]).
//!
//! Transactions: the last stable offset (LSO) is the high watermark, or the first offset of the
//! oldest transaction still open (or whose marker is not yet durable) if that is lower.
//! `read_committed` reads ([`Log::read_with`]) stop at it and list the aborted transactions
//! of the range they return, from the segments' `.txnindex` files ([`crate::txn_index`]).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::batch::{self, BatchHeader, HEADER_SIZE};
use crate::config::{FlushPolicy, LogConfig, TimestampType};
use crate::error::{Result, StorageError};
use crate::file_io::IoFile;
use crate::producer_snapshots;
use crate::producer_state::{
    BatchCheckError, BatchVerdict, CompletedTxn, PendingProducers, ProducerStateEntry,
    ProducerStateManager,
};
use crate::segment::{Files, Segment};
use crate::tail_pages::{Release, TailPages};
use crate::txn_index::{self, AbortedTxn, AbortedTxnEntry};
use crate::txn_marker::{self, MarkerRecord, TxnMarker};
use crate::TopicPartition;

/// File in the partition directory holding the log start offset moved by DeleteRecords.
const LOG_START_FILE: &str = "log-start-offset";

/// The flush leader's token: releases the sync gate and wakes every waiter when dropped, even
/// if the flush failed.
pub(crate) struct SyncLeader<'a>(&'a Log);

impl Drop for SyncLeader<'_> {
    fn drop(&mut self) {
        self.0.release_sync();
    }
}

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub record_count: u32,
    pub log_start_offset: i64,
    /// -1: batches keep the producer's CreateTime.
    pub log_append_time_ms: i64,
    /// The batches were a producer's retry of batches already in the log, which kept their
    /// first offsets (above) and were not written again.
    pub duplicate: bool,
}

/// A byte range of a segment file, to be sent with sendfile. Holding it keeps the file open
/// even if retention deletes the segment meanwhile.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<std::fs::File>,
    pub position: u64,
    pub len: u32,
}

/// What a read found: file ranges of whole batches, and the log's offsets at that moment.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub slices: Vec<FileSlice>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// The last stable offset at that moment (both isolation levels: a fetch returns it).
    pub last_stable_offset: i64,
    /// `ReadCommitted` only: the aborted transactions overlapping the returned range (Kafka's
    /// fetch `aborted_transactions`), so the client drops their records; empty otherwise.
    pub aborted: Vec<AbortedTxn>,
}

/// A fetch's isolation level (Kafka's `IsolationLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Up to the high watermark, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset, with the aborted transactions listed.
    ReadCommitted,
}

impl ReadResult {
    pub fn total_len(&self) -> u64 {
        self.slices.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// An offset and the timestamp that found it (ListOffsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

/// Called once with the outcome when the offsets a caller waits for are durable (or can never
/// be: the log went offline or was deleted). Runs on the flushing thread: it must be quick and
/// must not block (send on a channel, wake a task).
pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// Durability waiters, by the end offset each waits for. Bounded by the appends in flight
/// that wait (one per acks=all partition of each request being answered).
#[derive(Default)]
struct Waiters(Vec<(i64, DurableCallback)>);

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} durability waiters", self.0.len())
    }
}

/// Where the flushed prefix of the log ends: its offset, and the byte position in the segment
/// holding it, so a read can stop there without looking at headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurablePoint {
    offset: i64,
    segment_base: i64,
    position: u64,
}

/// What a flush must sync, taken under the state lock; synced outside it.
pub(crate) struct PreparedFlush {
    point: DurablePoint,
    files: Vec<Arc<IoFile>>,
    sync_dir: bool,
    sync_parent: bool,
}

impl PreparedFlush {
    pub(crate) fn file_count(&self) -> usize {
        self.files.len() + usize::from(self.sync_dir) + usize::from(self.sync_parent)
    }

    pub(crate) fn any_file(&self) -> Option<Arc<IoFile>> {
        self.files.first().cloned()
    }
}

#[derive(Debug)]
pub(crate) struct LogState {
    /// By base offset; never empty; the last is the active segment.
    pub(crate) segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    unflushed_messages: u64,
    /// Wall-clock time of the oldest write not yet flushed.
    first_unflushed_ms: Option<i64>,
    /// Directory entries (segment files) created or removed since the last flush.
    dir_dirty: bool,
    /// The end of the flushed prefix: the high watermark under durable visibility.
    durable: DurablePoint,
    /// Idempotent producers' epochs and last batches; checked and updated under this lock
    /// by every append.
    producers: ProducerStateManager,
    /// Whether `producers` has been loaded (snapshot + replay). Loading waits for the first
    /// batch with a producer id, so opening a log that never sees one reads nothing extra.
    producers_loaded: bool,
    /// How far the flushed tail's pages have been given back (`rill.tail.cache.bytes`).
    tail_pages: TailPages,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }
    fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }
    /// The current end as a durable point (what a flush that starts now covers).
    fn end_point(&self) -> DurablePoint {
        let active = self.active();
        DurablePoint {
            offset: active.next_offset,
            segment_base: active.base_offset,
            position: active.size,
        }
    }
}

/// Gives back the page-cache pages of flushed tail ranges (`POSIX_FADV_DONTNEED`). The
/// pages are clean, so this frees them without writeback; advice only, so an error costs
/// memory, never data.
fn release_tail_pages(releases: &[(Arc<IoFile>, Release)]) {
    for (file, release) in releases {
        let len = release
            .to
            .and_then(|to| std::num::NonZeroU64::new(to.saturating_sub(release.from)));
        if release.to.is_some() && len.is_none() {
            continue;
        }
        let _ = rustix::fs::fadvise(
            &**file.file(),
            release.from,
            len,
            rustix::fs::Advice::DontNeed,
        );
    }
}

/// A partition log.
#[derive(Debug)]
pub struct Log {
    tp: TopicPartition,
    dir: PathBuf,
    files: Files,
    /// Shared, so an append takes a reference count rather than copying the config.
    config: RwLock<Arc<LogConfig>>,
    pub(crate) state: Mutex<LogState>,
    /// Held by the one flush in progress; waiters queue here (group commit).
    sync_gate: Mutex<bool>,
    /// Broadcast when a flush ends.
    synced: parking_lot::Condvar,
    /// Every offset below this is on disk: the recovery point.
    flushed_offset: AtomicI64,
    /// The highest point a flush has taken (`prepare_flush`); every such flush ends by
    /// publishing it or by taking the log offline, so a durability wait at or below it needs
    /// no flush of its own (`on_durable`). Without this an acks=all wait registered while
    /// its append's pass was syncing queued a second, empty pass.
    prepared_offset: AtomicI64,
    /// Mirrors of state fields, readable without the lock.
    log_end_offset: AtomicI64,
    log_start_offset: AtomicI64,
    /// Set when an fsync fails: the log is offline, it takes no more reads or writes (the page
    /// cache state is unknown). Other logs go on.
    failed: AtomicBool,
    /// Set when the log is deleted: a handle kept past it must not touch files that a new
    /// partition of the same name now owns.
    deleted: AtomicBool,
    /// Whether the high watermark is the flushed offset (see [`LogConfig::visible_when_durable`]).
    visible_when_durable: AtomicBool,
    /// Whether the log sits in the flusher's queue.
    queued: AtomicBool,
    waiters: Mutex<Waiters>,
    /// This log's own `Arc`, so an append can queue it for the flusher.
    self_ref: OnceLock<Weak<Log>>,
    /// Whether the partition directory itself is new and its parent must be synced.
    parent_dir_dirty: AtomicBool,
    flush_count: AtomicU64,
    /// Time spent in the fdatasync calls of successful flushes, for the flush latency
    /// metric (`flush_nanos_total / flush_count` is the mean).
    flush_nanos_total: AtomicU64,
    /// How long this log's last flush by the flusher took to sync: a pass puts logs known to
    /// be slow last, and does not use syncfs (which would wait for their data too).
    last_sync_nanos: AtomicU64,
    /// The log cleaner's progress and counters for this log (`cleaner.rs`).
    pub(crate) cleaner: crate::cleaner::LogCleanerState,
}

/// For a LogAppendTime topic, sets every header's timestamp type and maxTimestamp to the
/// append time `now` (before the producer state records them, as Kafka's validator does before
/// `ProducerStateManager` sees the batch); the bytes are stamped when written
/// ([`batch::stamp_log_append_time`]). Returns whether the topic is LogAppendTime.
fn stamp_headers(config: &LogConfig, headers: &mut [BatchHeader], now: i64) -> bool {
    if config.timestamp_type != TimestampType::LogAppendTime {
        return false;
    }
    for h in headers {
        h.attributes |= batch::LOG_APPEND_TIME_FLAG;
        h.max_timestamp = now;
    }
    true
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    /// Creates an empty log in a new directory `dir`.
    pub(crate) fn create(
        tp: TopicPartition,
        dir: PathBuf,
        config: LogConfig,
        files: Files,
    ) -> Result<Log> {
        config.validate()?;
        std::fs::create_dir(&dir).map_err(|e| StorageError::io("mkdir", &dir, e))?;
        let segment = Segment::create(&files, &dir, 0)?;
        let log = Log::assemble(tp, dir, config, files, BTreeMap::from([(0, segment)]), 0, 0);
        log.parent_dir_dirty.store(true, Ordering::Relaxed);
        let mut state = log.state.lock();
        state.dir_dirty = true;
        state.producers_loaded = true;
        drop(state);
        Ok(log)
    }

    /// Opens an existing log, recovering every segment at or after `recovery_point`.
    pub(crate) fn open(
        tp: TopicPartition,
        dir: PathBuf,
        config: LogConfig,
        files: Files,
        recovery_point: i64,
    ) -> Result<Log> {
        // A cleaner swap interrupted by a crash is finished or discarded first.
        crate::cleaner::recover_swaps(&*files.io, &dir)?;
        let bases = list_segments(&dir)?;
        let persisted_start = read_log_start(&dir)?;
        if bases.is_empty() {
            let base = persisted_start.unwrap_or(0);
            let segment = Segment::create(&files, &dir, base)?;
            let log = Log::assemble(
                tp,
                dir,
                config,
                files,
                BTreeMap::from([(base, segment)]),
                base,
                base,
            );
            log.state.lock().dir_dirty = true;
            producer_snapshots::delete_beyond(&log.dir, base)?;
            return Ok(log);
        }
        let mut segments = BTreeMap::new();
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            if let Some(next) = next_base.filter(|&n| n <= recovery_point) {
                segments.insert(base, Segment::open_sealed(&files, &dir, base, next)?);
                continue;
            }
            let durable_end = recovery_point.min(next_base.unwrap_or(i64::MAX)).max(base);
            let (mut segment, end) =
                Segment::recover(&files, &dir, base, recovery_point, durable_end)?;
            let torn = next_base.is_some_and(|n| end.next_offset != n);
            if next_base.is_some() && !torn {
                segment.seal(&files)?;
            }
            segments.insert(base, segment);
            if torn {
                // A torn segment that is not the last: everything after it is unreachable.
                tracing::warn!(partition = %tp, offset = end.next_offset, "log torn inside a segment; dropping later segments");
                let files_ref = &files;
                for &later in &bases[i + 1..] {
                    let s = Segment::open_sealed(files_ref, &dir, later, later)?;
                    s.delete_files(files_ref)?;
                }
                break;
            }
        }
        let first_base = *segments.keys().next().expect("at least one segment");
        let log_end = segments
            .values()
            .next_back()
            .expect("non-empty")
            .next_offset;
        let log_start = persisted_start
            .unwrap_or(first_base)
            .clamp(first_base, log_end);
        let flushed = recovery_point.clamp(first_base, log_end);
        let recovered_txn_batches = segments.values().any(|s| s.recovered_txn_batches);
        let log = Log::assemble(tp, dir, config, files, segments, log_start, flushed);
        log.state.lock().dir_dirty = true;
        // Snapshots past the recovered end describe lost batches: gone before any append.
        let lost_snapshots = producer_snapshots::delete_beyond(&log.dir, log_end)?;
        log.load_producers_at_open(recovery_point, recovered_txn_batches, lost_snapshots)?;
        if flushed < log_end {
            // Recovered data past the recovery point is in the page cache only: make it
            // durable before it is visible, so the high watermark never goes backwards.
            log.flush()?;
        }
        Ok(log)
    }

    /// Loads the producer state now, rather than on the first producer batch, when the log
    /// may hold transactions, so the LSO is right before the first read:
    /// - recovery saw transactional or marker batches past the recovery point: the state is
    ///   replayed from a snapshot at or below that point, rebuilding the `.txnindex` entries
    ///   of the aborts recovered (recovery dropped the untrusted ones);
    /// - a snapshot exists, or one was deleted as beyond the recovered end: the log has had
    ///   producers, and any of them may have a transaction open.
    ///
    /// A log that never had a producer id has no snapshot and stays lazy.
    fn load_producers_at_open(
        &self,
        recovery_point: i64,
        recovered_txn_batches: bool,
        lost_snapshots: bool,
    ) -> Result<()> {
        let mut state = self.state.lock();
        if recovered_txn_batches {
            self.replay_producers(&mut state, recovery_point, Some(recovery_point))?;
        } else if lost_snapshots || producer_snapshots::any(&self.dir)? {
            self.load_producers(&mut state)?;
        }
        Ok(())
    }

    fn assemble(
        tp: TopicPartition,
        dir: PathBuf,
        config: LogConfig,
        files: Files,
        segments: BTreeMap<i64, Segment>,
        log_start_offset: i64,
        flushed_offset: i64,
    ) -> Log {
        let segments_last_base = segments.keys().next_back().copied().unwrap_or(0);
        let state = LogState {
            segments,
            log_start_offset,
            unflushed_messages: 0,
            first_unflushed_ms: None,
            dir_dirty: false,
            durable: DurablePoint {
                offset: flushed_offset,
                segment_base: 0,
                position: 0,
            },
            producers: ProducerStateManager::new(),
            producers_loaded: false,
            tail_pages: TailPages::new(segments_last_base),
        };
        let log_end = state.log_end_offset();
        debug_assert!(log_start_offset <= log_end && flushed_offset <= log_end);
        let mut state = state;
        if flushed_offset == log_end {
            state.durable = state.end_point();
        }
        // Otherwise `open` flushes before anyone sees the log, which sets the point.
        let visible_when_durable = AtomicBool::new(config.visible_when_durable());
        Log {
            tp,
            dir,
            files,
            config: RwLock::new(Arc::new(config)),
            state: Mutex::new(state),
            sync_gate: Mutex::new(false),
            synced: parking_lot::Condvar::new(),
            flushed_offset: AtomicI64::new(flushed_offset),
            prepared_offset: AtomicI64::new(flushed_offset),
            log_end_offset: AtomicI64::new(log_end),
            log_start_offset: AtomicI64::new(log_start_offset),
            failed: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            visible_when_durable,
            queued: AtomicBool::new(false),
            waiters: Mutex::new(Waiters::default()),
            self_ref: OnceLock::new(),
            parent_dir_dirty: AtomicBool::new(false),
            flush_count: AtomicU64::new(0),
            last_sync_nanos: AtomicU64::new(0),
            flush_nanos_total: AtomicU64::new(0),
            cleaner: Default::default(),
        }
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        LogConfig::clone(&self.config.read())
    }

    /// The config as shared (a reference count, not a copy of its strings): what a produce
    /// reads once per partition.
    pub fn shared_config(&self) -> Arc<LogConfig> {
        Arc::clone(&self.config.read())
    }

    pub fn set_config(&self, config: LogConfig) {
        let mut current = self.config.write();
        self.visible_when_durable
            .store(config.visible_when_durable(), Ordering::Release);
        *current = Arc::new(config);
    }

    /// Single node: the leader epoch never changes.
    pub fn leader_epoch(&self) -> i32 {
        0
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Whether readers see only durable offsets (the high watermark is the flushed offset):
    /// then the flush that moves it wakes long-polling readers (the flush listener).
    pub fn visible_when_durable(&self) -> bool {
        self.visible_when_durable.load(Ordering::Acquire)
    }

    /// The offset below which readers see records. With durable visibility (the default) it
    /// is the flushed offset: nothing a power cut can remove is ever shown. Otherwise (Kafka's
    /// behaviour, `rill.high.watermark.visibility=written`, or a relaxed flush policy) every
    /// appended record, as a single node commits all it writes.
    pub fn high_watermark(&self) -> i64 {
        if self.visible_when_durable.load(Ordering::Acquire) {
            self.flushed_offset()
        } else {
            self.log_end_offset()
        }
    }

    /// The recovery point: offsets below it survive a power cut.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.lock().segments.values().map(|s| s.size).sum()
    }

    /// The base offset of the active segment: reads below it read sealed segments (old data,
    /// whose indexes and batch headers may not be in memory).
    pub fn active_base_offset(&self) -> i64 {
        self.state.lock().active().base_offset
    }

    pub fn segment_count(&self) -> usize {
        self.state.lock().segments.len()
    }

    /// Whether an acks=all producer must wait for an fdatasync before it is answered.
    pub fn needs_sync_for_ack(&self) -> bool {
        matches!(
            self.config.read().flush_policy(),
            FlushPolicy::OnAck | FlushPolicy::EveryAppend
        )
    }

    /// Validates and appends one or more record batches (a produce request's records),
    /// assigning offsets. All or nothing: on error nothing of `batches` is in the log.
    ///
    /// Batches with a producer id are checked against the partition's producer state under
    /// the append lock, before anything is written: a retry of batches already in the log
    /// returns their first offsets with [`AppendInfo::duplicate`] set and writes nothing.
    pub fn append(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.append_checked(batches, |_| Ok(()))
    }

    /// [`Log::append`] with a further check of the batches (e.g. the broker's record-level
    /// validation, [`batch::validate_records_all`]) that runs after the header checks and
    /// before anything is written; its error refuses the whole append.
    pub fn append_checked(
        &self,
        batches: &[u8],
        check: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<AppendInfo> {
        let config = Arc::clone(&self.config.read());
        let mut headers = batch::validate_all(batches, config.max_message_bytes as usize)?;
        check(batches)?;
        let mut state = self.state.lock();
        self.check_live()?;
        // One clock read per append, under the lock, so LogAppendTime never goes back
        // between appends while the clock does not.
        let now = now_ms();
        let log_append_time = stamp_headers(&config, &mut headers, now);
        let base_offset = state.log_end_offset();
        if !state.producers_loaded && headers.iter().any(|h| h.producer_id >= 0) {
            self.load_producers(&mut state)?;
        }
        let pending = match self.check_producers(&state, &headers, base_offset, log_append_time)? {
            Ok(pending) => pending,
            Err(duplicate) => return Ok(duplicate),
        };
        self.write_locked(state, &config, now, batches, headers, pending, None)
    }

    /// Writes a commit or abort marker for `marker.producer_id` (the transaction coordinator's
    /// WriteTxnMarkers), as Kafka's control batch (`txn_marker.rs`). It closes the producer's
    /// open transaction here, if any (a marker with none is still written, as Kafka does); an
    /// abort adds an entry to the active segment's `.txnindex`; the LSO moves once the marker
    /// is below the high watermark (durable, by default). Refused, writing nothing, when its
    /// epoch is below the producer's (`ProducerError::InvalidProducerEpoch`) or its
    /// coordinator epoch below the last one seen (`TransactionCoordinatorFenced`). Durability
    /// as any append: wait with [`Log::on_durable`] before reporting it complete.
    pub fn append_marker(&self, marker: &TxnMarker) -> Result<AppendInfo> {
        let config = Arc::clone(&self.config.read());
        let batch = txn_marker::build_marker_batch(marker);
        // A marker is tiny; Kafka does not hold coordinator appends to max.message.bytes.
        let mut headers = batch::validate_all(&batch, usize::MAX)?;
        let mut state = self.state.lock();
        self.check_live()?;
        // Kafka stamps coordinator appends (markers) of a LogAppendTime topic too.
        let now = now_ms();
        stamp_headers(&config, &mut headers, now);
        self.load_producers(&mut state)?;
        let base_offset = state.log_end_offset();
        let mut pending = PendingProducers::default();
        let completed = state
            .producers
            .check_marker(&mut pending, marker, base_offset)
            .map_err(|source| StorageError::Producer {
                tp: self.tp.clone(),
                source,
            })?;
        self.write_locked(state, &config, now, &batch, headers, pending, completed)
    }

    /// The write half of an append, under the state lock: rolls if needed, assigns offsets,
    /// writes, commits the producer state (and a transaction a marker completed), and applies
    /// the flush policy after releasing the lock. `headers` are already stamped
    /// ([`stamp_headers`]) with `now` when the topic is LogAppendTime.
    #[allow(clippy::too_many_arguments)]
    fn write_locked(
        &self,
        mut state: MutexGuard<'_, LogState>,
        config: &LogConfig,
        now: i64,
        batches: &[u8],
        mut headers: Vec<BatchHeader>,
        pending: PendingProducers,
        completed: Option<CompletedTxn>,
    ) -> Result<AppendInfo> {
        let log_append_time = config.timestamp_type == TimestampType::LogAppendTime;
        let base_offset = state.log_end_offset();
        let record_count: u32 = headers.iter().map(|h| h.record_count as u32).sum();
        let max_timestamp = headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);
        let last_offset = base_offset + i64::from(record_count) - 1;
        let total_len: u64 = headers.iter().map(|h| h.total_size() as u64).sum();
        self.maybe_roll(&mut state, config, total_len, last_offset, max_timestamp)?;

        // Rewrite base offset and leader epoch (outside the CRC) in small patches, so the
        // producer's bytes go to the file without another copy: one pwritev of patch + body
        // pairs. LogAppendTime also changes attributes and maxTimestamp, inside the CRC: the
        // patch is then the whole header with a CRC continued over the unchanged records.
        let patch_len = if log_append_time { HEADER_SIZE } else { 16 };
        let mut patches = Vec::with_capacity(headers.len());
        let mut next = base_offset;
        let mut at = 0;
        for h in headers.iter_mut() {
            h.base_offset = next;
            h.partition_leader_epoch = self.leader_epoch();
            next = h.last_offset() + 1;
            let patch = if log_append_time {
                debug_assert_eq!(h.max_timestamp, now, "stamped by stamp_headers");
                batch::stamp_log_append_time(&batches[at..], h, now)
            } else {
                let mut patch = [0u8; HEADER_SIZE];
                patch[0..8].copy_from_slice(&h.base_offset.to_be_bytes());
                patch[8..12].copy_from_slice(&h.batch_length.to_be_bytes());
                patch[12..16].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
                patch
            };
            patches.push(patch);
            at += h.total_size();
        }
        debug_assert_eq!(next, last_offset + 1);
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(headers.len() * 2);
        let mut at = 0;
        for (h, patch) in headers.iter().zip(&patches) {
            bufs.push(&patch[..patch_len]);
            bufs.push(&batches[at + patch_len..at + h.total_size()]);
            at += h.total_size();
        }
        state.active_mut().append(
            &self.files,
            &bufs,
            &headers,
            config.preallocate_step_bytes,
            config.index_interval_bytes,
        )?;
        debug_assert_eq!(state.log_end_offset(), last_offset + 1);
        state.producers.commit(pending);
        if let Some(txn) = completed {
            debug_assert_eq!(txn.last_offset, base_offset);
            self.complete_txn(&mut state, txn);
        }
        self.log_end_offset
            .store(last_offset + 1, Ordering::Release);
        state.unflushed_messages += u64::from(record_count);
        state.first_unflushed_ms.get_or_insert(now);
        let flush_now = match config.flush_policy() {
            FlushPolicy::EveryAppend => true,
            FlushPolicy::Messages(n) => state.unflushed_messages >= n,
            _ => false,
        };
        let info = AppendInfo {
            base_offset,
            last_offset,
            max_timestamp,
            record_count,
            log_start_offset: state.log_start_offset,
            log_append_time_ms: if log_append_time { now } else { -1 },
            duplicate: false,
        };
        let releases = Self::plan_tail_release(&mut state, &self.files, config.tail_cache_bytes);
        drop(state);
        release_tail_pages(&releases);
        if flush_now {
            self.wait_durable(last_offset + 1)?;
        } else if config.visible_when_durable() {
            // Readers see it once durable: the flusher's next pass makes it so, acks=1 too.
            self.request_flush();
        }
        Ok(info)
    }

    /// The flushed tail pages to give back now (`tail_pages.rs`), with the files to advise;
    /// planned under the state lock, advised after it. A segment whose file cannot be had
    /// (closed, deleted) is skipped: the advice only saves memory.
    fn plan_tail_release(
        state: &mut LogState,
        files: &Files,
        window_bytes: u64,
    ) -> Vec<(Arc<IoFile>, Release)> {
        let durable = state.durable;
        let planned = state
            .tail_pages
            .plan(durable.segment_base, durable.position, window_bytes);
        planned
            .into_iter()
            .filter_map(|release| {
                let segment = state.segments.get(&release.segment_base)?;
                let file = segment.log_file(files, false).ok()?;
                Some((file, release))
            })
            .collect()
    }

    /// Records a transaction a just-written marker ended: an abort goes into the active
    /// segment's `.txnindex` (with the LSO after it, as Kafka's `TransactionIndex` keeps it).
    /// The marker is in the log whatever happens here: a failed index write keeps the entry
    /// in memory and the next index write (checkpoint, seal) retries it.
    fn complete_txn(&self, state: &mut LogState, txn: CompletedTxn) {
        if txn.aborted {
            let lso = state.producers.stable_offset_after(txn.last_offset);
            let entry =
                AbortedTxnEntry::new(txn.producer_id, txn.first_offset, txn.last_offset, lso);
            if let Err(e) = state.active_mut().append_aborted_txn(&self.files, entry) {
                tracing::warn!(partition = %self.tp, error = %e, "transaction index write failed; retried at the next index write");
            }
        }
        state.producers.complete_txn(txn);
    }

    /// Checks every batch's producer fields (`producer_state.rs` has the rules). `Ok(Ok(_))`:
    /// write them, then commit the returned state; `Ok(Err(info))`: the whole append is a
    /// retry, answer `info`. A request mixing retried and new batches is refused: clients
    /// send one batch per partition, and half an answer would lose the other half.
    fn check_producers(
        &self,
        state: &LogState,
        headers: &[BatchHeader],
        base_offset: i64,
        log_append_time: bool,
    ) -> Result<std::result::Result<PendingProducers, AppendInfo>> {
        let mut pending = PendingProducers::default();
        let mut duplicates = Vec::new();
        let mut next = base_offset;
        for h in headers {
            match state.producers.check_batch(&mut pending, h, next) {
                Ok(BatchVerdict::Append) => next += i64::from(h.last_offset_delta) + 1,
                Ok(BatchVerdict::Duplicate(first)) => duplicates.push(first),
                Err(BatchCheckError::Invalid(reason)) => {
                    return Err(StorageError::InvalidRecord {
                        reason: reason.to_string(),
                    })
                }
                Err(BatchCheckError::Producer(source)) => {
                    return Err(StorageError::Producer {
                        tp: self.tp.clone(),
                        source,
                    })
                }
            }
        }
        if duplicates.is_empty() {
            return Ok(Ok(pending));
        }
        if duplicates.len() != headers.len() {
            return Err(StorageError::InvalidRecord {
                reason: "a produce request mixes retried and new batches of one producer".into(),
            });
        }
        let (first, last) = (duplicates[0], duplicates[duplicates.len() - 1]);
        let max_timestamp = duplicates
            .iter()
            .map(|d| d.timestamp_ms)
            .max()
            .unwrap_or(-1);
        Ok(Err(AppendInfo {
            base_offset: first.first_offset,
            last_offset: last.last_offset,
            max_timestamp,
            record_count: 0,
            log_start_offset: state.log_start_offset,
            // The retained batch's timestamp is the time it was appended (Kafka answers a
            // duplicate with it).
            log_append_time_ms: if log_append_time { max_timestamp } else { -1 },
            duplicate: true,
        }))
    }

    /// Every producer's state here (DescribeProducers): epoch, last sequence
    /// ([`ProducerStateEntry::last_seq`]), last timestamp, coordinator epoch and the open
    /// transaction's first offset, by producer id. Empty if the state cannot be loaded.
    pub fn producer_states(&self) -> Vec<ProducerStateEntry> {
        let mut state = self.state.lock();
        match self.load_producers(&mut state) {
            Ok(()) => state.producers.entries(),
            Err(e) => {
                tracing::warn!(partition = %self.tp, error = %e, "cannot load producer state");
                Vec::new()
            }
        }
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest
    /// transaction still undecided here (open, or its marker not yet below the high
    /// watermark) when that is lower. `read_committed` readers see the log below it.
    pub fn last_stable_offset(&self) -> i64 {
        let mut state = self.state.lock();
        self.lso_locked(&mut state)
    }

    /// The high watermark as the state lock sees it (reads use the same).
    fn high_watermark_locked(&self, state: &LogState) -> i64 {
        if self.visible_when_durable.load(Ordering::Acquire) {
            state.durable.offset
        } else {
            state.log_end_offset()
        }
    }

    fn lso_locked(&self, state: &mut LogState) -> i64 {
        let high_watermark = self.high_watermark_locked(state);
        // Not loaded: the log has no transactional data (`open` loads it otherwise).
        if !state.producers_loaded {
            return high_watermark;
        }
        // As Kafka, never below the log start: a transaction whose first records retention or
        // DeleteRecords removed does not hold readers before the start of the log.
        state
            .producers
            .first_undecided_offset(high_watermark)
            .map_or(high_watermark, |first| {
                first.max(state.log_start_offset).min(high_watermark)
            })
    }

    /// What this partition knows about `producer_id` (DescribeProducers, tests).
    pub fn producer_state(&self, producer_id: i64) -> Option<ProducerStateEntry> {
        let mut state = self.state.lock();
        self.load_producers(&mut state).ok()?;
        state.producers.get(producer_id).cloned()
    }

    /// Number of producer ids this partition remembers.
    pub fn producer_count(&self) -> usize {
        let mut state = self.state.lock();
        self.load_producers(&mut state)
            .map_or(0, |()| state.producers.len())
    }

    /// Forgets producers idle longer than `expiration_ms` (`producer.id.expiration.ms`).
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state
            .lock()
            .producers
            .remove_expired(now_ms, expiration_ms)
    }

    /// Loads the producer state on first need: the newest snapshot not beyond the log end,
    /// then every batch after it replayed from the segments (headers, and the record of
    /// each marker).
    fn load_producers(&self, state: &mut LogState) -> Result<()> {
        if state.producers_loaded {
            return Ok(());
        }
        let log_end = state.log_end_offset();
        self.replay_producers(state, log_end, None)
    }

    /// Loads the producer state from the newest snapshot at or below `snapshot_at_most` (or
    /// the log start), replaying the log after it to the end. With `txn_index_from`, also
    /// writes the `.txnindex` entries of the aborts whose marker lies at or after it (after a
    /// crash, recovery dropped those it could not trust).
    fn replay_producers(
        &self,
        state: &mut LogState,
        snapshot_at_most: i64,
        txn_index_from: Option<i64>,
    ) -> Result<()> {
        let (from, producers) = match producer_snapshots::load(&self.dir, snapshot_at_most)? {
            Some((offset, producers)) if offset >= state.log_start_offset => (offset, producers),
            // A snapshot below the log start (DeleteRecords or retention moved it since):
            // every producer in it was last seen below the log start, where replay cannot
            // see what closed its transaction, so it would stay open for good. Kafka drops
            // such producers on load (`isProducerRetained`); so does this, by starting empty.
            _ => (state.log_start_offset, ProducerStateManager::new()),
        };
        state.producers = producers;
        let first_base = state
            .segments
            .range(..=from)
            .next_back()
            .map_or(from, |(&b, _)| b);
        let bases: Vec<i64> = state
            .segments
            .range(first_base..)
            .map(|(&b, _)| b)
            .collect();
        let mut replayed = 0u64;
        let mut rebuilt: Vec<(i64, AbortedTxnEntry)> = Vec::new();
        for base in bases {
            let LogState {
                segments,
                producers,
                ..
            } = &mut *state;
            let segment = segments.get_mut(&base).expect("base taken from the map");
            let Some((mut position, _)) = segment.find_batch(&self.files, from.max(base))? else {
                continue;
            };
            // Bounded by the segment size: each step moves past one batch.
            while let Some(h) = segment.read_header(&self.files, position)? {
                if h.base_offset >= from {
                    let marker = if h.is_control() {
                        self.read_marker(segment, position, &h)?
                    } else {
                        None
                    };
                    let completed = producers.replay(&h, marker);
                    if let (Some(txn), Some(rebuild_from)) = (completed, txn_index_from) {
                        if txn.aborted && txn.last_offset >= rebuild_from {
                            let lso = producers.stable_offset_after(txn.last_offset);
                            let entry = AbortedTxnEntry::new(
                                txn.producer_id,
                                txn.first_offset,
                                txn.last_offset,
                                lso,
                            );
                            rebuilt.push((base, entry));
                        }
                    }
                    replayed += 1;
                }
                position += h.total_size() as u64;
            }
        }
        self.add_rebuilt_txn_entries(state, rebuilt)?;
        if replayed > 0 {
            tracing::debug!(partition = %self.tp, from, replayed, producers = state.producers.len(), "producer state rebuilt from the log tail");
        }
        state.producers_loaded = true;
        Ok(())
    }

    /// Writes rebuilt `.txnindex` entries (by segment base, in marker order) after the
    /// entries recovery kept: each touched index is rewritten whole (temporary file, sync,
    /// rename), so sealed segments' files stay never-modified-in-place.
    fn add_rebuilt_txn_entries(
        &self,
        state: &mut LogState,
        rebuilt: Vec<(i64, AbortedTxnEntry)>,
    ) -> Result<()> {
        let mut at = 0;
        // Bounded by the rebuilt entries: each round takes those of one segment.
        while at < rebuilt.len() {
            let base = rebuilt[at].0;
            let n = rebuilt[at..].iter().take_while(|(b, _)| *b == base).count();
            let segment = state
                .segments
                .get_mut(&base)
                .expect("base taken from the map");
            segment.ensure_txn_index()?;
            let mut entries = segment.txn_index.to_vec();
            entries.extend(rebuilt[at..at + n].iter().map(|(_, e)| *e));
            entries.dedup_by_key(|e| e.last_offset);
            let path = segment.txn_index.path().to_path_buf();
            segment
                .txn_index
                .rebuild(entries, &*self.files.io)
                .map_err(|e| StorageError::io("write", &path, e))?;
            state.dir_dirty = true;
            at += n;
        }
        Ok(())
    }

    /// The marker a control batch at `position` holds (`None`: not a readable marker).
    fn read_marker(
        &self,
        segment: &Segment,
        position: u64,
        h: &BatchHeader,
    ) -> Result<Option<MarkerRecord>> {
        if h.total_size() > txn_marker::MAX_MARKER_BATCH_BYTES {
            return Ok(None);
        }
        let file = segment.log_file(&self.files, false)?;
        let mut buf = vec![0u8; h.total_size()];
        read_exact_at(file.file(), &mut buf, position)
            .map_err(|e| StorageError::io("read", segment.log_path(), e))?;
        Ok(txn_marker::parse_marker(&buf))
    }

    /// Writes a producer state snapshot at the current log end if the state changed since
    /// the last one (or the active segment has rolled past it). Called at checkpoints, after
    /// the flush, so the snapshot is never older than the recovery point it goes with.
    fn snapshot_producers(&self) -> Result<()> {
        let (offset, generation, bytes) = {
            let state = self.state.lock();
            if !state.producers_loaded
                || !state.producers.needs_snapshot(state.active().base_offset)
            {
                return Ok(());
            }
            (
                state.log_end_offset(),
                state.producers.generation(),
                state.producers.encode_snapshot(),
            )
        };
        producer_snapshots::write(&*self.files.io, &self.dir, offset, &bytes)?;
        self.state
            .lock()
            .producers
            .snapshot_written(offset, generation);
        Ok(())
    }

    /// Rolls to a new segment when the active one is full, too old, or its relative offsets
    /// would overflow.
    fn maybe_roll(
        &self,
        state: &mut LogState,
        config: &LogConfig,
        len: u64,
        last_offset: i64,
        max_timestamp: i64,
    ) -> Result<()> {
        let active = state.active();
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + len > config.segment_bytes;
        // As Kafka: segment.ms compares the new batch's timestamp with the segment's first
        // one, so replayed old data does not roll a segment per append.
        let old = active
            .first_timestamp
            .is_some_and(|t| max_timestamp.saturating_sub(t) > config.segment_ms as i64);
        if full || old || !active.offsets_fit(last_offset) {
            self.roll(state)?;
        }
        Ok(())
    }

    /// Rolls to a new segment: creates it first and seals the old one only then, so a failed
    /// create (EMFILE, ENOSPC, EIO) leaves the old segment active and the append fails
    /// cleanly; a later append tries again.
    fn roll(&self, state: &mut LogState) -> Result<()> {
        let base = state.log_end_offset();
        // First, so no crash leaves a zero-filled tail before a later segment.
        state.active_mut().release_preallocation(&self.files)?;
        let segment = Segment::create(&self.files, &self.dir, base)?;
        if let Err(e) = state.active_mut().seal(&self.files) {
            // The old segment stays active (sealing sets `sealed` last); drop the new files.
            if let Err(cleanup) = segment.delete_files(&self.files) {
                tracing::warn!(partition = %self.tp, error = %cleanup, "could not remove a segment whose roll failed");
            }
            return Err(e);
        }
        state.segments.insert(base, segment);
        state.dir_dirty = true;
        Ok(())
    }

    /// Sets the log's own `Arc` (by the `LogManager`, once), so appends can queue it for the
    /// flusher.
    pub(crate) fn init_self(self: &Arc<Self>) {
        let _ = self.self_ref.set(Arc::downgrade(self));
        let owner: Weak<dyn crate::fd_cache::IdleRelease> = Arc::downgrade(self) as _;
        self.files.cache.register_owner(owner);
    }

    /// Queues the log for the flusher's next pass; flushes here when there is no flusher
    /// (stopped, or a log used without a manager).
    pub(crate) fn request_flush(&self) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.self_ref.get().and_then(Weak::upgrade);
        if let Some(me) = me {
            if self.files.flusher.enqueue(me) {
                return;
            }
        }
        self.queued.store(false, Ordering::Release);
        if let Err(e) = self.flush() {
            tracing::warn!(partition = %self.tp, error = %e, "flush failed");
        }
    }

    /// Called by the flusher when it takes the log from its queue.
    pub(crate) fn dequeued(&self) {
        self.queued.store(false, Ordering::Release);
    }

    /// Calls `done` once every offset below `end_offset` is durable, or with the error that
    /// makes it impossible. Never blocks (except without a running flusher, when it flushes
    /// here): this is how async callers wait.
    pub fn on_durable(&self, end_offset: i64, done: DurableCallback) {
        {
            let mut waiters = self.waiters.lock();
            // Checked under the waiters lock: a flush publishes its offset, and a failure its
            // flag, before taking this lock to answer the waiters.
            if let Err(e) = self.check_live() {
                drop(waiters);
                return done(Err(e));
            }
            if self.flushed_offset() >= end_offset {
                drop(waiters);
                return done(Ok(()));
            }
            waiters.0.push((end_offset, done));
        }
        // A flush that took `end_offset` is under way: it answers this waiter (its publish
        // takes the waiters lock after moving the flushed offset, which was checked above
        // under that lock), or fails every waiter.
        if self.prepared_offset.load(Ordering::Acquire) >= end_offset {
            return;
        }
        self.request_flush();
    }

    /// Blocks until every offset below `end_offset` is on disk: the flusher's next pass, which
    /// concurrent callers on every log of the data directory share.
    pub fn wait_durable(&self, end_offset: i64) -> Result<()> {
        if self.flushed_offset() >= end_offset {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.on_durable(
            end_offset,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        // A flusher wake-up this thread deferred must happen before it blocks on the flusher.
        crate::flusher::wake_deferred();
        // Every registered callback is called: by a flush, a failure or a deletion.
        rx.recv().unwrap_or_else(|_| Err(self.dead_error()))
    }

    /// Defers, on this thread and until the guard drops, the flusher wake-ups of appends to
    /// any log of this log's data directory, for a caller that will run the pass itself
    /// ([`Log::sync_here`]); see `flusher/inline.rs`.
    pub fn defer_flush_wakes(&self) -> crate::flusher::DeferredWakes {
        crate::flusher::DeferredWakes::begin(&self.files.flusher)
    }

    /// For a blocking caller about to wait for `end_offset` to be durable (an acks=all append
    /// on the I/O pool): when no flush pass runs, runs the next one on this thread, over every
    /// log queued on the data directory (the group commit), instead of waking a flusher thread
    /// and waiting for it. Returns whether every offset below `end_offset` is durable now;
    /// when not (a pass was running, a queued log is known slow, the flusher is stopped), the
    /// caller waits as usual (`on_durable`) and the flusher threads do the sync.
    pub fn sync_here(&self, end_offset: i64) -> bool {
        if self.flushed_offset() >= end_offset {
            return true;
        }
        if self.check_live().is_err() || self.prepared_offset.load(Ordering::Acquire) >= end_offset
        {
            // Offline, or a pass under way already covers it.
            return false;
        }
        // Queued by the append under durable visibility; otherwise queued now.
        self.request_flush();
        self.files.flusher.pass_here(&*self.files.io);
        self.flushed_offset() >= end_offset
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        let _leader = self.lead_sync();
        self.flush_locked()
    }

    /// Waits until no flush runs, then becomes the one that does.
    pub(crate) fn lead_sync(&self) -> SyncLeader<'_> {
        let mut in_progress = self.sync_gate.lock();
        // Bounded by the flushes already queued: each ends with a broadcast.
        while *in_progress {
            self.synced.wait(&mut in_progress);
        }
        *in_progress = true;
        SyncLeader(self)
    }

    /// Becomes the flush leader if no flush runs, without waiting (the flusher skips a log
    /// whose flush is in progress and takes it once that ends). The caller must call
    /// [`Log::release_sync`] when its flush is done.
    pub(crate) fn try_lead_sync(&self) -> bool {
        let mut in_progress = self.sync_gate.lock();
        if *in_progress {
            return false;
        }
        *in_progress = true;
        true
    }

    /// Ends the flush this caller leads ([`Log::lead_sync`], [`Log::try_lead_sync`]): wakes
    /// the callers waiting to lead, and the flusher, which may have skipped this log.
    pub(crate) fn release_sync(&self) {
        {
            let mut in_progress = self.sync_gate.lock();
            debug_assert!(*in_progress, "released a sync gate that was not held");
            *in_progress = false;
        }
        self.synced.notify_all();
        self.files.flusher.gate_released();
    }

    /// How long the last flusher sync of this log took.
    pub(crate) fn last_sync_nanos(&self) -> u64 {
        self.last_sync_nanos.load(Ordering::Relaxed)
    }

    pub(crate) fn set_last_sync_nanos(&self, nanos: u64) {
        self.last_sync_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Offline or deleted: the error for any use of the log.
    fn check_live(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(StorageError::Deleted {
                tp: self.tp.clone(),
            });
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(StorageError::Offline {
                tp: self.tp.clone(),
            });
        }
        Ok(())
    }

    fn dead_error(&self) -> StorageError {
        self.check_live().err().unwrap_or(StorageError::Offline {
            tp: self.tp.clone(),
        })
    }

    /// Whether the log is offline after a storage failure.
    pub fn is_offline(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn flush_locked(&self) -> Result<()> {
        let Some(prepared) = self.prepare_flush()? else {
            return Err(self.dead_error());
        };
        let started = std::time::Instant::now();
        match self.sync_prepared(&prepared) {
            Ok(()) => {
                let nanos = crate::flusher::nanos_since(started);
                self.finish_flush(Some((prepared, nanos)), Ok(()));
                Ok(())
            }
            Err(e) => {
                self.go_offline(&e);
                Err(e)
            }
        }
    }

    /// Takes what the next sync must cover, under the state lock (the caller leads the sync
    /// gate). `None` when the log is offline or deleted.
    pub(crate) fn prepare_flush(&self) -> Result<Option<PreparedFlush>> {
        let mut state = self.state.lock();
        if self.check_live().is_err() {
            return Ok(None);
        }
        let mut files: Vec<Arc<IoFile>> = Vec::new();
        for segment in state.segments.values_mut().filter(|s| s.dirty) {
            if segment.sealed {
                // Below the recovery point a sealed segment is trusted whole, indexes too. Its
                // log is synced on the descriptor that wrote it, which it gives up now.
                segment.write_indexes(&self.files)?;
                files.extend(segment.files_to_sync(&self.files)?);
                segment.release_write_file();
            } else {
                // The active segment's indexes are synced at checkpoints
                // (`checkpoint_offset`); recovery rebuilds entries past the checkpointed
                // recovery point, so an acknowledgement needs only the log file.
                files.push(segment.log_file(&self.files, false)?);
            }
            segment.dirty = false;
        }
        state.unflushed_messages = 0;
        state.first_unflushed_ms = None;
        let sync_dir = std::mem::take(&mut state.dir_dirty);
        let sync_parent = self.parent_dir_dirty.swap(false, Ordering::AcqRel);
        let point = state.end_point();
        self.prepared_offset
            .fetch_max(point.offset, Ordering::AcqRel);
        Ok(Some(PreparedFlush {
            point,
            files,
            sync_dir,
            sync_parent,
        }))
    }

    /// fdatasyncs the files of `prepared`, then the directories.
    pub(crate) fn sync_prepared(&self, prepared: &PreparedFlush) -> Result<()> {
        self.sync_files(&prepared.files, prepared.sync_dir)?;
        if prepared.sync_parent {
            let parent = self.dir.parent().unwrap_or(Path::new("."));
            self.files
                .io
                .sync_dir(parent)
                .map_err(|e| StorageError::io("fsync dir", parent, e))?;
        }
        Ok(())
    }

    /// Publishes a flush's outcome: on success the new flushed offset (and high watermark),
    /// answering the waiters it covers and telling the listener; on failure the log goes
    /// offline and every waiter gets the error.
    pub(crate) fn finish_flush(&self, prepared: Option<(PreparedFlush, u64)>, result: Result<()>) {
        if let Err(e) = result {
            // fsyncgate: after a failed fsync the kernel may have dropped the dirty pages, so
            // a retry could "succeed" without the data. The log goes offline.
            self.go_offline(&e);
            return;
        }
        let Some((prepared, sync_nanos)) = prepared else {
            return;
        };
        let point = prepared.point;
        {
            let mut state = self.state.lock();
            if point.offset > state.durable.offset || state.durable == point {
                state.durable = point;
            }
        }
        let before = self
            .flushed_offset
            .fetch_max(point.offset, Ordering::AcqRel);
        self.flush_count.fetch_add(1, Ordering::Relaxed);
        self.flush_nanos_total
            .fetch_add(sync_nanos, Ordering::Relaxed);
        let flushed = self.flushed_offset();
        let ready: Vec<DurableCallback> = {
            let mut waiters = self.waiters.lock();
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut waiters.0)
                .into_iter()
                .partition(|(end, _)| *end <= flushed);
            waiters.0 = waiting;
            ready.into_iter().map(|(_, done)| done).collect()
        };
        for done in ready {
            done(Ok(()));
        }
        if point.offset > before {
            self.files.flusher.flushed(&self.tp);
        }
    }

    /// Takes the log offline after a storage failure: no more reads or writes; waiters get
    /// the error. Logged once.
    fn go_offline(&self, error: &StorageError) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(partition = %self.tp, %error, "storage failure; partition taken offline");
        }
        self.fail_waiters();
    }

    fn fail_waiters(&self) {
        let doomed = std::mem::take(&mut self.waiters.lock().0);
        for (_, done) in doomed {
            done(Err(self.dead_error()));
        }
    }

    /// Marks the log deleted (by `LogManager::delete_log`): it refuses every further use,
    /// closes its files and forgets its cached descriptors, so the disk space is freed as soon
    /// as reads in flight end and a handle kept past the deletion cannot reach files of a
    /// partition created again under the same name.
    pub(crate) fn mark_deleted(&self) {
        {
            let mut state = self.state.lock();
            self.deleted.store(true, Ordering::Release);
            for segment in state.segments.values_mut() {
                segment.close_files(&self.files);
            }
        }
        self.fail_waiters();
    }

    /// Flushes, then writes and syncs the active segment's index entries; returns the offset
    /// below which data and indexes are durable: the recovery point to checkpoint. A log with
    /// nothing new does no I/O here.
    pub(crate) fn checkpoint_offset(&self) -> Result<i64> {
        let leader = self.lead_sync();
        self.checkpoint_led(leader)
    }

    /// [`Log::checkpoint_offset`] unless a flush of this log is in progress (perhaps stuck on
    /// a slow disk): then `Ok(None)` at once, and the log keeps its previous recovery point
    /// until a later checkpoint. The periodic checkpoint uses this, so one stuck sync delays
    /// only its own log's point, not every other log's.
    pub(crate) fn try_checkpoint_offset(&self) -> Result<Option<i64>> {
        if !self.try_lead_sync() {
            return Ok(None);
        }
        self.checkpoint_led(SyncLeader(self)).map(Some)
    }

    /// The body of a checkpoint, run by the holder of the sync gate (`_leader`).
    fn checkpoint_led(&self, _leader: SyncLeader<'_>) -> Result<i64> {
        self.check_live()?;
        if self.flushed_offset() < self.log_end_offset()
            || self.state.lock().segments.values().any(|s| s.dirty)
        {
            self.flush_locked()?;
        }
        let index_files = {
            let mut state = self.state.lock();
            self.check_live()?;
            let active = state.active_mut();
            active.write_indexes(&self.files)?;
            active.take_unsynced_index_files()
        };
        if let Err(e) = self.sync_files(&index_files, false) {
            self.go_offline(&e);
            return Err(e);
        }
        self.snapshot_producers()?;
        Ok(self.flushed_offset())
    }

    /// How many flushes (fdatasync rounds) this log has done: group commit shows as fewer
    /// flushes than durable appends.
    pub fn flush_count(&self) -> u64 {
        self.flush_count.load(Ordering::Relaxed)
    }

    /// Nanoseconds spent syncing in the flushes [`Log::flush_count`] counts.
    pub fn flush_nanos_total(&self) -> u64 {
        self.flush_nanos_total.load(Ordering::Relaxed)
    }

    fn sync_files(&self, to_sync: &[Arc<IoFile>], sync_dir: bool) -> Result<()> {
        let io = &*self.files.io;
        for f in to_sync {
            io.sync_data(f)
                .map_err(|e| StorageError::io("fdatasync", f.path(), e))?;
        }
        if sync_dir {
            io.sync_dir(&self.dir)
                .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
        }
        Ok(())
    }

    /// Queues the log for the flusher if the oldest unflushed write is older than `flush.ms`.
    /// The flusher syncs it (its passes go on past a stuck sync, `flusher.rs`), so the
    /// housekeeping tick that calls this never waits for one log's disk. Returns whether a
    /// flush was requested.
    pub(crate) fn flush_if_due(&self, now: i64) -> bool {
        let FlushPolicy::IntervalMs(ms) = self.config.read().flush_policy() else {
            return false;
        };
        let due = self
            .state
            .lock()
            .first_unflushed_ms
            .is_some_and(|t| now.saturating_sub(t) >= ms as i64);
        if due {
            self.request_flush();
        }
        due
    }

    fn out_of_range(&self, state: &LogState, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: state.log_start_offset,
            log_end_offset: state.log_end_offset(),
        }
    }

    /// File ranges of whole batches from the one holding `start_offset`, at most `max_bytes`
    /// (or the whole first batch when `min_one_batch` and it is larger). Reads one segment at
    /// a time, as Kafka does: the client asks again from where it got to.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: u32,
        min_one_batch: bool,
    ) -> Result<ReadResult> {
        self.read_with(
            start_offset,
            max_bytes,
            min_one_batch,
            Isolation::ReadUncommitted,
        )
    }

    /// [`Log::read`] at an isolation level: `ReadCommitted` stops at the last stable offset
    /// (whole batches below it: the LSO is a batch's first offset or the high watermark) and
    /// lists the aborted transactions overlapping the returned range, as Kafka's fetch does.
    pub fn read_with(
        &self,
        start_offset: i64,
        max_bytes: u32,
        min_one_batch: bool,
        isolation: Isolation,
    ) -> Result<ReadResult> {
        let mut state = self.state.lock();
        self.check_live()?;
        let (log_start, log_end) = (state.log_start_offset, state.log_end_offset());
        let durable = self
            .visible_when_durable
            .load(Ordering::Acquire)
            .then_some(state.durable);
        let high_watermark = durable.map_or(log_end, |d| d.offset);
        debug_assert_eq!(high_watermark, self.high_watermark_locked(&state));
        let last_stable_offset = self.lso_locked(&mut state);
        let mut result = ReadResult {
            slices: Vec::new(),
            high_watermark,
            log_start_offset: log_start,
            log_end_offset: log_end,
            last_stable_offset,
            aborted: Vec::new(),
        };
        if start_offset < log_start || start_offset > log_end {
            return Err(self.out_of_range(&state, start_offset));
        }
        let limit = match isolation {
            Isolation::ReadUncommitted => high_watermark,
            Isolation::ReadCommitted => last_stable_offset,
        };
        if start_offset >= limit {
            // Written but not yet visible (as Kafka past the high watermark or the LSO).
            return Ok(result);
        }
        let bases: Vec<i64> = state
            .segments
            .range(..=start_offset)
            .next_back()
            .map(|(&b, _)| b)
            .into_iter()
            .chain(state.segments.range(start_offset + 1..).map(|(&b, _)| b))
            .collect();
        // The index lookups run under the lock; the header reads, which go to the disk when
        // the reader is far behind, after it (`HeaderWalk`), so that the partition's appends
        // never wait for them.
        // Bounded by the segment count; normally the first segment has the offset.
        for base in bases {
            let Some(segment) = state.segments.get_mut(&base) else {
                return Ok(result);
            };
            let (segment_id, segment_next_offset) = (segment.id, segment.next_offset);
            let from = segment.indexed_position_of(&self.files, start_offset)?;
            // The LSO is the first offset of an open transaction's first batch: the read stops
            // at that batch's position.
            let lso_from = if limit < high_watermark && base <= limit && limit < segment_next_offset
            {
                Some(segment.indexed_position_of(&self.files, limit)?)
            } else {
                None
            };
            let walk = segment.header_walk(&self.files, segment.size)?;
            drop(state);
            let Some((position, header)) = walk.find_batch(from, start_offset)? else {
                state = self.state.lock();
                continue;
            };
            // The segment holding the high watermark is read up to its byte position only
            // (a batch boundary: flushes cover whole appends).
            let mut visible_end = durable
                .filter(|d| d.segment_base == base)
                .map_or(u64::MAX, |d| d.position);
            if let Some(lso_from) = lso_from {
                if let Some((lso_position, _)) = walk.find_batch(lso_from, limit)? {
                    visible_end = visible_end.min(lso_position);
                }
            }
            let first = header.total_size() as u64;
            debug_assert!(position + first <= visible_end);
            let end = if first > u64::from(max_bytes) {
                if !min_one_batch {
                    return Ok(result);
                }
                position + first
            } else {
                let limit = (position + u64::from(max_bytes)).min(visible_end);
                // The index again, under the lock, if the segment is still the one walked (the
                // cleaner may have swapped in a cleaned copy under the same base offset, whose
                // positions differ); otherwise the walk starts from the batch found.
                let from = match self.state.lock().segments.get_mut(&base) {
                    Some(segment) if segment.id == segment_id => {
                        segment.indexed_position_at_or_below(&self.files, position, limit)?
                    }
                    _ => position,
                };
                walk.boundary_at_or_below(from, limit)?
            };
            debug_assert!(end >= position + first.min(u64::from(max_bytes)));
            result.slices.push(FileSlice {
                file: walk.file().file().clone(),
                position,
                len: (end - position) as u32,
            });
            if isolation == Isolation::ReadCommitted {
                // Kafka's fetch upper bound: the offset just past the returned batches.
                let upper_bound = match walk.read_header(end)? {
                    Some(next) => next.base_offset,
                    None => segment_next_offset,
                };
                result.aborted = self.collect_aborted(
                    &mut self.state.lock(),
                    start_offset,
                    upper_bound.min(limit),
                )?;
            }
            return Ok(result);
        }
        Ok(result)
    }

    /// The aborted transactions overlapping `[fetch_offset, upper_bound)`, from the segment
    /// holding `fetch_offset` onward until an entry's LSO shows no later one can overlap
    /// (Kafka's `collectAbortedTransactions`).
    fn collect_aborted(
        &self,
        state: &mut LogState,
        fetch_offset: i64,
        upper_bound: i64,
    ) -> Result<Vec<AbortedTxn>> {
        let mut out = Vec::new();
        let first = state
            .segments
            .range(..=fetch_offset)
            .next_back()
            .map_or(i64::MIN, |(&b, _)| b);
        let bases: Vec<i64> = state.segments.range(first..).map(|(&b, _)| b).collect();
        // Bounded by the segment count.
        for base in bases {
            let segment = state
                .segments
                .get_mut(&base)
                .expect("base taken from the map");
            segment.ensure_txn_index()?;
            if txn_index::collect(&segment.txn_index, fetch_offset, upper_bound, &mut out) {
                break;
            }
        }
        Ok(out)
    }

    /// Like [`Log::read`], copying the bytes (at least one whole batch): for the broker's own
    /// readers that decode records (delay stores, filtered views, cursors) and for tests.
    pub fn read_bytes(&self, start_offset: i64, max_bytes: u32) -> Result<Vec<u8>> {
        let (bytes, _) =
            self.read_bytes_with(start_offset, max_bytes, Isolation::ReadUncommitted)?;
        Ok(bytes)
    }

    /// [`Log::read_bytes`] at an isolation level ([`Log::read_with`]): with `ReadCommitted`
    /// the bytes stop at the last stable offset, and the aborted transactions overlapping
    /// them come with them (for the reader to skip, as a read_committed consumer does).
    pub fn read_bytes_with(
        &self,
        start_offset: i64,
        max_bytes: u32,
        isolation: Isolation,
    ) -> Result<(Vec<u8>, Vec<AbortedTxn>)> {
        let result = self.read_with(start_offset, max_bytes, true, isolation)?;
        let mut out = Vec::with_capacity(result.total_len() as usize);
        for slice in &result.slices {
            let start = out.len();
            out.resize(start + slice.len as usize, 0);
            read_exact_at(&slice.file, &mut out[start..], slice.position)
                .map_err(|e| StorageError::io("read", &self.dir, e))?;
        }
        debug_assert_eq!(out.len() as u64, result.total_len());
        Ok((out, result.aborted))
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is at or after `ts`.
    /// Exact for uncompressed batches; for compressed ones, the batch's first offset (storage
    /// does not decompress).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<TimestampOffset>> {
        let mut state = self.state.lock();
        self.check_live()?;
        let log_start = state.log_start_offset;
        let bases: Vec<i64> = state.segments.keys().copied().collect();
        for base in bases {
            let segment = state
                .segments
                .get_mut(&base)
                .expect("base taken from the map");
            segment.ensure_indexes(&self.files)?;
            if segment.max_timestamp < ts || segment.next_offset <= log_start {
                continue;
            }
            let mut position = segment.time_lookup_position(&self.files, ts)?;
            // Bounded by the segment size: each step moves past one batch.
            while let Some(h) = segment.read_header(&self.files, position)? {
                if h.max_timestamp >= ts && h.last_offset() >= log_start {
                    let found = self.first_record_at_or_after(segment, position, &h, ts)?;
                    return Ok(Some(TimestampOffset {
                        timestamp: found.timestamp,
                        offset: found.offset.max(log_start),
                    }));
                }
                position += h.total_size() as u64;
            }
        }
        Ok(None)
    }

    fn first_record_at_or_after(
        &self,
        segment: &Segment,
        position: u64,
        h: &BatchHeader,
        ts: i64,
    ) -> Result<TimestampOffset> {
        let file = segment.log_file(&self.files, false)?;
        let mut buf = vec![0u8; h.total_size()];
        read_exact_at(file.file(), &mut buf, position)
            .map_err(|e| StorageError::io("read", segment.log_path(), e))?;
        let found = batch::record_timestamps(&buf)
            .and_then(|records| records.into_iter().find(|&(_, t)| t >= ts));
        Ok(match found {
            Some((offset, timestamp)) => TimestampOffset { timestamp, offset },
            None => TimestampOffset {
                timestamp: h.max_timestamp,
                offset: h.base_offset,
            },
        })
    }

    /// ListOffsets MAX_TIMESTAMP: the record with the largest timestamp (the first such).
    pub fn max_timestamp(&self) -> Result<Option<TimestampOffset>> {
        let mut state = self.state.lock();
        self.check_live()?;
        let mut best: Option<(i64, i64)> = None;
        for segment in state.segments.values_mut() {
            segment.ensure_indexes(&self.files)?;
            if segment.max_timestamp >= 0 && best.is_none_or(|(t, _)| segment.max_timestamp > t) {
                best = Some((segment.max_timestamp, segment.base_offset));
            }
        }
        let Some((ts, base)) = best else {
            return Ok(None);
        };
        let segment = state
            .segments
            .get_mut(&base)
            .expect("base taken from the map");
        let offset = segment.offset_of_max_timestamp;
        let Some((position, h)) = segment.find_batch(&self.files, offset)? else {
            return Ok(None);
        };
        // The batch holding the max may not be the first with that max timestamp, but the
        // record with it is inside: find it exactly where the batch is uncompressed.
        let mut pos = position;
        let mut header = h;
        // Bounded by the segment size.
        loop {
            if header.max_timestamp == ts {
                return Ok(Some(
                    self.first_record_at_or_after(segment, pos, &header, ts)?,
                ));
            }
            pos += header.total_size() as u64;
            match segment.read_header(&self.files, pos)? {
                Some(next) => header = next,
                None => {
                    return Ok(Some(TimestampOffset {
                        timestamp: ts,
                        offset,
                    }))
                }
            }
        }
    }

    /// DeleteRecords: moves the log start offset to `offset` and deletes segments wholly below
    /// it. Returns the new log start offset.
    pub fn delete_records(&self, offset: i64) -> Result<i64> {
        let mut state = self.state.lock();
        self.check_live()?;
        let log_end = state.log_end_offset();
        if offset > log_end || offset < 0 {
            return Err(self.out_of_range(&state, offset));
        }
        if offset <= state.log_start_offset {
            return Ok(state.log_start_offset);
        }
        if offset == log_end && state.active().size > 0 {
            self.roll(&mut state)?;
        }
        state.log_start_offset = offset;
        write_log_start(&*self.files.io, &self.dir, offset)?;
        self.log_start_offset.store(offset, Ordering::Release);
        self.delete_segments_below(&mut state, offset)?;
        Ok(offset)
    }

    /// Deletes sealed segments whose offsets all lie below `offset`.
    fn delete_segments_below(&self, state: &mut LogState, offset: i64) -> Result<()> {
        let doomed: Vec<i64> = state
            .segments
            .values()
            .filter(|s| s.sealed && s.next_offset <= offset)
            .map(|s| s.base_offset)
            .collect();
        for base in doomed {
            let segment = state
                .segments
                .remove(&base)
                .expect("base taken from the map");
            segment.delete_files(&self.files)?;
            state.dir_dirty = true;
        }
        Ok(())
    }

    /// Deletes old segments by `retention.ms` and `retention.bytes` when `cleanup.policy`
    /// includes `delete` (a compact-only log is never deleted by age or size, as in Kafka).
    /// Returns the number of segments deleted.
    pub fn apply_retention(&self, now: i64) -> Result<usize> {
        let config = Arc::clone(&self.config.read());
        if !config.deletes_by_retention() {
            return Ok(0);
        }
        let mut state = self.state.lock();
        self.check_live()?;
        // As Kafka: only segments wholly below the high watermark are deleted, so the log
        // start never passes what readers can see.
        let high_watermark = if self.visible_when_durable.load(Ordering::Acquire) {
            state.durable.offset
        } else {
            state.log_end_offset()
        };
        let active = state.active();
        let active_expired = config.retention_ms >= 0
            && active.size > 0
            && active.max_timestamp >= 0
            && active.max_timestamp < now.saturating_sub(config.retention_ms);
        // An expired active segment is rolled so that it can be deleted, as Kafka does.
        if active_expired {
            self.roll(&mut state)?;
        }
        let mut total: u64 = state.segments.values().map(|s| s.size).sum();
        let mut new_start = state.log_start_offset;
        let bases: Vec<i64> = state.segments.keys().copied().collect();
        for base in bases {
            let segment = state
                .segments
                .get_mut(&base)
                .expect("base taken from the map");
            if !segment.sealed {
                break;
            }
            segment.ensure_indexes(&self.files)?;
            let by_time = config.retention_ms >= 0
                && segment.max_timestamp >= 0
                && segment.max_timestamp < now.saturating_sub(config.retention_ms);
            let by_size = config.retention_bytes >= 0
                && total - segment.size >= config.retention_bytes as u64;
            if !(by_time || by_size) || segment.next_offset > high_watermark {
                break;
            }
            total -= segment.size;
            new_start = new_start.max(segment.next_offset);
        }
        let before = state.segments.len();
        if new_start > state.log_start_offset {
            state.log_start_offset = new_start;
            self.log_start_offset.store(new_start, Ordering::Release);
            self.delete_segments_below(&mut state, new_start)?;
        }
        Ok(before - state.segments.len())
    }

    /// Gives the active segment's write descriptor back to the descriptor budget when the
    /// log is idle and everything written is synced (the flushed offset is the log end, so
    /// no write through it awaits an fsync: releasing it cannot hide a writeback error), after
    /// `idle_ticks` housekeeping passes found it so (1 = now). The next append opens a new
    /// one. Never waits for the log's lock (a busy log is not idle). Returns whether it
    /// released one.
    pub(crate) fn release_idle_write_file(&self, idle_ticks: u32) -> bool {
        let Some(mut state) = self.state.try_lock() else {
            return false;
        };
        if self.check_live().is_err() || self.flushed_offset() < state.log_end_offset() {
            return false;
        }
        let active = state.active_mut();
        if active.dirty || !active.owns_write_file() {
            return false;
        }
        active.idle_ticks = active.idle_ticks.saturating_add(1);
        active.idle_ticks >= idle_ticks && active.release_idle_write_file()
    }

    /// The first half of a close, by the holder of the sync gate (`_leader`): writes the
    /// active segment's index entries, gives back its preallocated tail (so the next open
    /// finds the log exactly as long as its data), and takes what the flush must sync: the
    /// dirty segments, as any flush, and the index files just written, so the checkpoint after
    /// the close has nothing left to sync. Nothing is synced here: `LogManager::close`
    /// prepares every log first and then makes them all durable with one syncfs (one
    /// fdatasync per file in turn was most of a 20 s stop at 10 000 partitions).
    /// `Ok(None)` when the log is offline or deleted.
    pub(crate) fn prepare_close(&self, _leader: &SyncLeader<'_>) -> Result<Option<PreparedFlush>> {
        let index_files = {
            let mut state = self.state.lock();
            self.check_live()?;
            let active = state.active_mut();
            active.ensure_write_file(&self.files)?;
            active.write_indexes(&self.files)?;
            let (size, path) = (active.size, active.log_path().to_path_buf());
            let file = active.log_file(&self.files, false)?;
            self.files
                .io
                .set_len(&file, size)
                .map_err(|e| StorageError::io("truncate", path, e))?;
            active.dirty = true;
            active.take_unsynced_index_files()
        };
        let Some(mut prepared) = self.prepare_flush()? else {
            return Ok(None);
        };
        prepared.files.extend(index_files);
        Ok(Some(prepared))
    }

    /// The second half of a close: publishes the flush `prepared` once `synced` says how
    /// syncing it went (the caller's syncfs, or [`Log::sync_prepared`]); a failure takes the
    /// log offline and is returned.
    pub(crate) fn finish_close(
        &self,
        _leader: SyncLeader<'_>,
        prepared: PreparedFlush,
        synced: Result<()>,
        sync_nanos: u64,
    ) -> Result<()> {
        match synced {
            Ok(()) => {
                self.finish_flush(Some((prepared, sync_nanos)), Ok(()));
                Ok(())
            }
            Err(e) => {
                self.go_offline(&e);
                Err(e)
            }
        }
    }

    /// The log cleaner's dirty ratio and counters for this log.
    pub fn cleaner_metrics(&self) -> crate::cleaner::CleanerMetrics {
        crate::cleaner::metrics(self)
    }

    pub(crate) fn files(&self) -> &Files {
        &self.files
    }

    /// The sealed segments, ascending, as the cleaner reads them (files held open).
    pub(crate) fn sealed_segments(&self) -> Result<Vec<crate::cleaner::SegmentView>> {
        let mut state = self.state.lock();
        let mut out = Vec::new();
        for segment in state.segments.values_mut().filter(|s| s.sealed) {
            segment.ensure_indexes(&self.files)?;
            out.push(crate::cleaner::SegmentView {
                id: segment.id,
                base_offset: segment.base_offset,
                next_offset: segment.next_offset,
                size: segment.size,
                max_timestamp: segment.max_timestamp,
                file: segment.log_file(&self.files, false)?,
            });
        }
        Ok(out)
    }

    /// Every segment's `.txnindex` entries, by base offset (the cleaner's view of aborted
    /// transactions).
    pub(crate) fn aborted_txn_entries(
        &self,
    ) -> Result<std::collections::HashMap<i64, Vec<AbortedTxnEntry>>> {
        let mut state = self.state.lock();
        let mut out = std::collections::HashMap::new();
        for segment in state.segments.values_mut() {
            segment.ensure_txn_index()?;
            if !segment.txn_index.is_empty() {
                out.insert(segment.base_offset, segment.txn_index.to_vec());
            }
        }
        Ok(out)
    }

    /// Runs `f` under the log's lock (the cleaner's swap).
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut LogState) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// Whether a flush, retention or roll is worth looking at (tests).
    pub fn segment_bases(&self) -> Vec<i64> {
        self.state.lock().segments.keys().copied().collect()
    }
}

fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// Base offsets of the segments in `dir`, ascending. Removes leftovers of interrupted
/// operations (temporary index files) on the way.
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            match stem.parse::<i64>() {
                Ok(base) if stem.len() == 20 && base >= 0 => bases.push(base),
                _ => {
                    tracing::warn!(file = %entry.path().display(), "ignoring file that is not a segment")
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn read_log_start(dir: &Path) -> Result<Option<i64>> {
    let path = dir.join(LOG_START_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| StorageError::Corrupt {
                path,
                reason: format!("not an offset: {s:?}"),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", path, e)),
    }
}

/// Writes the log start offset durably: temporary file, fdatasync, rename, directory sync.
fn write_log_start(io: &dyn crate::file_io::FileIo, dir: &Path, offset: i64) -> Result<()> {
    let path = dir.join(LOG_START_FILE);
    crate::file_io::write_atomically(io, &path, format!("{offset}\n").as_bytes())
        .map_err(|e| StorageError::io("write", &path, e))
}

impl crate::fd_cache::IdleRelease for Log {
    /// Asked when write descriptors crowd the budget: one idle tick is enough.
    fn release_idle(&self) -> bool {
        self.release_idle_write_file(1)
    }
}
