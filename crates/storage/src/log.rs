//! One partition's log (Kafka's `UnifiedLog` + `LocalLog` for a single node): an ordered set of
//! segments, the last one active. Appends assign offsets and write with one pwritev; reads
//! return file ranges for sendfile; flushes are grouped so concurrent waiters share one
//! fdatasync.
//!
//! Locking: `state` guards the segments and is held for page-cache work only (pwrite, header
//! reads, index lookups). fdatasync happens outside it, by one flush leader at a time (the
//! sync gate); waiters park on a condvar that every finished flush broadcasts, so they all wake
//! at once and append again while the next flush runs; a waiter that finds its offset already
//! flushed by someone else returns at once.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::batch::{self, BatchHeader};
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{Result, StorageError};
use crate::file_io::IoFile;
use crate::segment::{Files, Segment};
use crate::TopicPartition;

/// File in the partition directory holding the log start offset moved by DeleteRecords.
const LOG_START_FILE: &str = "log-start-offset";

/// The flush leader's token: releases the sync gate and wakes every waiter when dropped, even
/// if the flush failed.
struct SyncLeader<'a>(&'a Log);

impl Drop for SyncLeader<'_> {
    fn drop(&mut self) {
        *self.0.sync_gate.lock() = false;
        self.0.synced.notify_all();
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
    /// Mirrors of state fields, readable without the lock.
    log_end_offset: AtomicI64,
    log_start_offset: AtomicI64,
    /// Set when an fsync fails: the log takes no more writes (the page cache state is unknown).
    failed: AtomicBool,
    /// Whether the partition directory itself is new and its parent must be synced.
    parent_dir_dirty: AtomicBool,
    flush_count: AtomicU64,
    /// Time spent in the fdatasync calls of successful flushes, for the flush latency
    /// metric (`flush_nanos_total / flush_count` is the mean).
    flush_nanos_total: AtomicU64,
    /// The log cleaner's progress and counters for this log (`cleaner.rs`).
    pub(crate) cleaner: crate::cleaner::LogCleanerState,
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
        log.state.lock().dir_dirty = true;
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
        let log = Log::assemble(tp, dir, config, files, segments, log_start, flushed);
        log.state.lock().dir_dirty = true;
        Ok(log)
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
        let state = LogState {
            segments,
            log_start_offset,
            unflushed_messages: 0,
            first_unflushed_ms: None,
            dir_dirty: false,
        };
        let log_end = state.log_end_offset();
        debug_assert!(log_start_offset <= log_end && flushed_offset <= log_end);
        Log {
            tp,
            dir,
            files,
            config: RwLock::new(Arc::new(config)),
            state: Mutex::new(state),
            sync_gate: Mutex::new(false),
            synced: parking_lot::Condvar::new(),
            flushed_offset: AtomicI64::new(flushed_offset),
            log_end_offset: AtomicI64::new(log_end),
            log_start_offset: AtomicI64::new(log_start_offset),
            failed: AtomicBool::new(false),
            parent_dir_dirty: AtomicBool::new(false),
            flush_count: AtomicU64::new(0),
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

    pub fn set_config(&self, config: LogConfig) {
        *self.config.write() = Arc::new(config);
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

    /// On a single node every appended record is committed.
    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
    }

    /// The recovery point: offsets below it survive a power cut.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.lock().segments.values().map(|s| s.size).sum()
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
        let record_count: u32 = headers.iter().map(|h| h.record_count as u32).sum();
        let max_timestamp = headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);
        let now = now_ms();
        let mut state = self.state.lock();
        if self.failed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let base_offset = state.log_end_offset();
        let last_offset = base_offset + i64::from(record_count) - 1;
        let total_len: u64 = headers.iter().map(|h| h.total_size() as u64).sum();
        self.maybe_roll(&mut state, &config, total_len, last_offset, max_timestamp)?;

        // Rewrite base offset and leader epoch (outside the CRC) in small patches, so the
        // producer's bytes go to the file without another copy: one pwritev of patch + body
        // pairs.
        let mut patches = Vec::with_capacity(headers.len());
        let mut next = base_offset;
        for h in headers.iter_mut() {
            h.base_offset = next;
            h.partition_leader_epoch = self.leader_epoch();
            next = h.last_offset() + 1;
            let mut patch = [0u8; 16];
            patch[0..8].copy_from_slice(&h.base_offset.to_be_bytes());
            patch[8..12].copy_from_slice(&h.batch_length.to_be_bytes());
            patch[12..16].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
            patches.push(patch);
        }
        debug_assert_eq!(next, last_offset + 1);
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(headers.len() * 2);
        let mut at = 0;
        for (h, patch) in headers.iter().zip(&patches) {
            bufs.push(patch);
            bufs.push(&batches[at + 16..at + h.total_size()]);
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
            log_append_time_ms: -1,
        };
        drop(state);
        if flush_now {
            self.wait_durable(last_offset + 1)?;
        }
        Ok(info)
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

    fn roll(&self, state: &mut LogState) -> Result<()> {
        let base = state.log_end_offset();
        state.active_mut().seal(&self.files)?;
        let segment = Segment::create(&self.files, &self.dir, base)?;
        state.segments.insert(base, segment);
        state.dir_dirty = true;
        Ok(())
    }

    /// Blocks until every offset below `end_offset` is on disk. Concurrent callers share one
    /// fdatasync: one caller at a time leads a flush of everything appended so far; the others
    /// wait for its broadcast and return if it covered them, or lead the next one.
    pub fn wait_durable(&self, end_offset: i64) -> Result<()> {
        // Bounded: each round either returns, or waits for a flush that was running, or runs
        // one that covers every append made before it started (ours included).
        loop {
            if self.flushed_offset() >= end_offset {
                return Ok(());
            }
            let mut in_progress = self.sync_gate.lock();
            if self.flushed_offset() >= end_offset {
                return Ok(());
            }
            if *in_progress {
                self.synced.wait(&mut in_progress);
                continue;
            }
            *in_progress = true;
            drop(in_progress);
            let _leader = SyncLeader(self);
            self.flush_locked()?;
        }
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        let _leader = self.lead_sync();
        self.flush_locked()
    }

    /// Waits until no flush runs, then becomes the one that does.
    fn lead_sync(&self) -> SyncLeader<'_> {
        let mut in_progress = self.sync_gate.lock();
        // Bounded by the flushes already queued: each ends with a broadcast.
        while *in_progress {
            self.synced.wait(&mut in_progress);
        }
        *in_progress = true;
        SyncLeader(self)
    }

    fn flush_locked(&self) -> Result<()> {
        let (end, to_sync, sync_dir) = {
            let mut state = self.state.lock();
            if self.failed.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            let mut to_sync: Vec<Arc<IoFile>> = Vec::new();
            for segment in state.segments.values_mut().filter(|s| s.dirty) {
                if segment.sealed {
                    // Below the recovery point a sealed segment is trusted whole, indexes too.
                    segment.write_indexes(&self.files)?;
                    to_sync.extend(segment.files_to_sync(&self.files)?);
                } else {
                    // The active segment's indexes are synced at checkpoints
                    // (`checkpoint_offset`); recovery rebuilds entries past the checkpointed
                    // recovery point, so an acknowledgement needs only the log file: one
                    // fdatasync per group commit.
                    to_sync.push(segment.log_file(&self.files, false)?);
                }
                segment.dirty = false;
            }
            state.unflushed_messages = 0;
            state.first_unflushed_ms = None;
            let sync_dir = std::mem::take(&mut state.dir_dirty);
            (state.log_end_offset(), to_sync, sync_dir)
        };
        let sync_started = std::time::Instant::now();
        let result = self.sync_files(&to_sync, sync_dir);
        let sync_nanos = u64::try_from(sync_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Err(e) = result {
            // fsyncgate: after a failed fsync the kernel may have dropped the dirty pages, so
            // a retry could "succeed" without the data. Stop taking writes.
            self.failed.store(true, Ordering::Release);
            tracing::error!(partition = %self.tp, error = %e, "fdatasync failed; log taken offline");
            return Err(e);
        }
        self.flushed_offset.fetch_max(end, Ordering::AcqRel);
        self.flush_count.fetch_add(1, Ordering::Relaxed);
        self.flush_nanos_total
            .fetch_add(sync_nanos, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes, then writes and syncs the active segment's index entries; returns the offset
    /// below which data and indexes are durable: the recovery point to checkpoint. A log with
    /// nothing new does no I/O here.
    pub(crate) fn checkpoint_offset(&self) -> Result<i64> {
        let _leader = self.lead_sync();
        if self.flushed_offset() < self.log_end_offset()
            || self.state.lock().segments.values().any(|s| s.dirty)
        {
            self.flush_locked()?;
        }
        let index_files = {
            let mut state = self.state.lock();
            let active = state.active_mut();
            if active.write_indexes(&self.files)? || active.index_unsynced {
                active.index_unsynced = false;
                let [_, offset_index, time_index] = active.files_to_sync(&self.files)?;
                vec![offset_index, time_index]
            } else {
                Vec::new()
            }
        };
        if let Err(e) = self.sync_files(&index_files, false) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
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
        if self.parent_dir_dirty.swap(false, Ordering::AcqRel) {
            let parent = self.dir.parent().unwrap_or(Path::new("."));
            io.sync_dir(parent)
                .map_err(|e| StorageError::io("fsync dir", parent, e))?;
        }
        Ok(())
    }

    /// Flushes if the oldest unflushed write is older than `flush.ms`.
    pub(crate) fn flush_if_due(&self, now: i64) -> Result<()> {
        let FlushPolicy::IntervalMs(ms) = self.config.read().flush_policy() else {
            return Ok(());
        };
        let due = self
            .state
            .lock()
            .first_unflushed_ms
            .is_some_and(|t| now.saturating_sub(t) >= ms as i64);
        if due {
            self.flush()?;
        }
        Ok(())
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
        let mut state = self.state.lock();
        let (log_start, log_end) = (state.log_start_offset, state.log_end_offset());
        let mut result = ReadResult {
            slices: Vec::new(),
            high_watermark: log_end,
            log_start_offset: log_start,
            log_end_offset: log_end,
        };
        if start_offset < log_start || start_offset > log_end {
            return Err(self.out_of_range(&state, start_offset));
        }
        let bases: Vec<i64> = state
            .segments
            .range(..=start_offset)
            .next_back()
            .map(|(&b, _)| b)
            .into_iter()
            .chain(state.segments.range(start_offset + 1..).map(|(&b, _)| b))
            .collect();
        // Bounded by the segment count; normally the first segment has the offset.
        for base in bases {
            let segment = state
                .segments
                .get_mut(&base)
                .expect("base taken from the map");
            let Some((position, header)) = segment.find_batch(&self.files, start_offset)? else {
                continue;
            };
            let first = header.total_size() as u64;
            let end = if first > u64::from(max_bytes) {
                if !min_one_batch {
                    return Ok(result);
                }
                position + first
            } else {
                segment.batch_boundary_at_or_below(
                    &self.files,
                    position,
                    position + u64::from(max_bytes),
                )?
            };
            debug_assert!(end >= position + first.min(u64::from(max_bytes)));
            let file = segment.log_file(&self.files, false)?;
            result.slices.push(FileSlice {
                file: file.file().clone(),
                position,
                len: (end - position) as u32,
            });
            return Ok(result);
        }
        Ok(result)
    }

    /// Like [`Log::read`], copying the bytes (tests and tools).
    pub fn read_bytes(&self, start_offset: i64, max_bytes: u32) -> Result<Vec<u8>> {
        let result = self.read(start_offset, max_bytes, true)?;
        let mut out = Vec::with_capacity(result.total_len() as usize);
        for slice in &result.slices {
            let start = out.len();
            out.resize(start + slice.len as usize, 0);
            read_exact_at(&slice.file, &mut out[start..], slice.position)
                .map_err(|e| StorageError::io("read", &self.dir, e))?;
        }
        Ok(out)
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is at or after `ts`.
    /// Exact for uncompressed batches; for compressed ones, the batch's first offset (storage
    /// does not decompress).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<TimestampOffset>> {
        let mut state = self.state.lock();
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
            if !(by_time || by_size) {
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

    /// Flushes and gives back the active segment's preallocated tail, so the next open finds
    /// the log exactly as long as its data.
    pub(crate) fn close(&self) -> Result<()> {
        {
            let mut state = self.state.lock();
            let active = state.active_mut();
            active.write_indexes(&self.files)?;
            let (size, path) = (active.size, active.log_path().to_path_buf());
            let file = active.log_file(&self.files, false)?;
            self.files
                .io
                .set_len(&file, size)
                .map_err(|e| StorageError::io("truncate", path, e))?;
            active.dirty = true;
        }
        self.flush()
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
