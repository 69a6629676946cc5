//! One segment of a partition log (Kafka's `LogSegment`): the `.log` file of record batches
//! starting at `base_offset`, its `.index` and `.timeindex`. Not thread-safe: the owning
//! [`crate::log::Log`] serializes access under its lock.
//!
//! The active segment is preallocated in bounded steps ahead of the write position and written
//! with pwrite; bytes past `size` are zeros (or garbage after a crash) and never read. When the
//! segment is sealed its file is truncated to `size`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{BatchHeader, HEADER_SIZE};
use crate::error::{Result, StorageError};
use crate::fd_cache::{FdCache, FileKind, OwnedFile};
use crate::file_io::{FileIo, IoFile};
use crate::offset_index::{self, OffsetEntry, OffsetIndex};
use crate::recovery::{self, ScanEnd};
use crate::time_index::{self, TimeEntry, TimeIndex};
use crate::txn_index::{self, AbortedTxnEntry, TxnIndex};

/// The file operations and open-file cache every segment of a data directory shares.
#[derive(Debug, Clone)]
pub struct Files {
    pub io: Arc<dyn FileIo>,
    pub cache: Arc<FdCache>,
    /// The data directory's group commit, which logs queue themselves on.
    pub flusher: Arc<crate::flusher::Flusher>,
}

/// `00000000000000000042.log`: the base offset, zero-padded to 20 digits, as Kafka names them.
pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// The largest batch recovery will consider (bounded by the file, too): large enough for any
/// `max.message.bytes` a topic had when the batch was written.
const RECOVERY_MAX_BATCH_BYTES: usize = i32::MAX as usize;

#[derive(Debug)]
pub struct Segment {
    /// Cache key of this segment's files; unique per process.
    pub id: u64,
    /// The descriptor appends write through, owned outside the cache while the segment is
    /// active and until the flush after sealing: an fsync must run on the descriptor that
    /// wrote (a descriptor opened later does not see an earlier writeback error: fsyncgate).
    /// It takes a slot of the descriptor budget. An idle active segment whose data is all
    /// synced gives it back ([`Segment::release_idle_write_file`]); the next append opens a
    /// new one ([`Segment::ensure_write_file`]), which sees only writes made through it.
    write_file: Option<OwnedFile>,
    pub base_offset: i64,
    log_path: PathBuf,
    /// Bytes of valid batches.
    pub size: u64,
    /// Bytes reserved in the file (active segment); `size <= allocated`.
    allocated: u64,
    /// Offset after the last batch.
    pub next_offset: i64,
    /// Largest batch max timestamp, and the base offset of its batch; -1 when unknown or empty.
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// First record timestamp of the first batch (`BatchHeader::first_timestamp`; segment.ms
    /// rolls), if any.
    pub first_timestamp: Option<i64>,
    bytes_since_index: u64,
    /// `index.interval.bytes` in force: the log sets it before each append.
    pub index_interval_bytes: u64,
    last_time_entry: Option<TimeEntry>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Transactions aborted by markers in this segment (`.txnindex`, created on first use).
    pub txn_index: TxnIndex,
    /// Recovery saw a transactional or control batch at or after the recovery point: the
    /// log must load its producer state at open (open transactions move the LSO) and
    /// rebuild the `.txnindex` entries of the markers it recovered.
    pub recovered_txn_batches: bool,
    /// Written since the last fdatasync.
    pub dirty: bool,
    /// Housekeeping ticks since the last append that found the segment synced and idle
    /// (`Log::release_idle_write_file`).
    pub idle_ticks: u32,
    /// The descriptors that wrote index entries not yet synced (offset index, time index,
    /// txn index): the sync runs on them, not on a descriptor the cache may have reopened
    /// meanwhile.
    index_writers: [Option<Arc<IoFile>>; 3],
    pub sealed: bool,
}

impl Segment {
    fn new(files: &Files, dir: &Path, base_offset: i64) -> Segment {
        Segment {
            id: files.cache.segment_id(),
            write_file: None,
            base_offset,
            log_path: dir.join(file_name(base_offset, "log")),
            size: 0,
            allocated: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_timestamp: None,
            bytes_since_index: 0,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL,
            last_time_entry: None,
            offset_index: OffsetIndex::active(
                dir.join(file_name(base_offset, "index")),
                Vec::new(),
            ),
            time_index: TimeIndex::active(
                dir.join(file_name(base_offset, "timeindex")),
                Vec::new(),
            ),
            txn_index: TxnIndex::active(dir.join(file_name(base_offset, "txnindex")), Vec::new()),
            recovered_txn_batches: false,
            dirty: false,
            idle_ticks: 0,
            index_writers: [None, None, None],
            sealed: false,
        }
    }

    /// Creates the files of a new, empty active segment. The directory entry becomes durable at
    /// the log's next flush, which syncs the directory first.
    pub fn create(files: &Files, dir: &Path, base_offset: i64) -> Result<Segment> {
        let mut segment = Segment::new(files, dir, base_offset);
        let created = segment.create_files(files);
        if created.is_err() {
            // Leave nothing half made: no stray segment file at an offset the log may still
            // be writing below.
            segment.release_write_file();
            if let Err(e) = segment.delete_files(files) {
                tracing::warn!(segment = %segment.log_path.display(), error = %e, "cannot remove a segment whose creation failed");
            }
        }
        created.map(|()| segment)
    }

    fn create_files(&mut self, files: &Files) -> Result<()> {
        let segment = self;
        let log = Arc::new(
            files
                .io
                .open(&segment.log_path, true)
                .map_err(|e| StorageError::io("create", &segment.log_path, e))?,
        );
        files
            .io
            .set_len(&log, 0)
            .map_err(|e| StorageError::io("truncate", &segment.log_path, e))?;
        crate::page_cache::no_readahead(log.file());
        segment.write_file = Some(files.cache.own(log));
        for (kind, path) in [
            (FileKind::OffsetIndex, segment.offset_index.path()),
            (FileKind::TimeIndex, segment.time_index.path()),
        ] {
            let f = files
                .cache
                .get((segment.id, kind), &*files.io, path, true)
                .map_err(|e| StorageError::io("create", path, e))?;
            files
                .io
                .set_len(&f, 0)
                .map_err(|e| StorageError::io("truncate", path, e))?;
        }
        // The transaction index is created on the first abort, so a `.txnindex` already at
        // this base is a leftover of a deletion that a crash interrupted (the log file goes
        // first) and would be adopted: written over from its start, read whole once sealed,
        // listing aborts that never happened here.
        let txn_path = segment.txn_index.path();
        match std::fs::remove_file(txn_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("delete", txn_path, e)),
        }
        Ok(())
    }

    /// Opens a segment that lies wholly before the recovery point: its files are trusted, its
    /// indexes are mapped only when first used. `next_offset` is the next segment's base.
    pub fn open_sealed(
        files: &Files,
        dir: &Path,
        base_offset: i64,
        next_offset: i64,
    ) -> Result<Segment> {
        let mut segment = Segment::new(files, dir, base_offset);
        segment.size = std::fs::metadata(&segment.log_path)
            .map_err(|e| StorageError::io("stat", &segment.log_path, e))?
            .len();
        segment.allocated = segment.size;
        segment.next_offset = next_offset;
        segment.offset_index = OffsetIndex::sealed(segment.offset_index.path().to_path_buf());
        segment.time_index = TimeIndex::sealed(segment.time_index.path().to_path_buf());
        segment.txn_index = TxnIndex::sealed(segment.txn_index.path().to_path_buf());
        segment.sealed = true;
        Ok(segment)
    }

    /// Opens a segment at or after the recovery point: keeps the index entries below
    /// `recovery_point` that are consistent, then scans and validates the log from there,
    /// truncating it at the first invalid byte. `durable_end` is the offset the segment is known
    /// to reach (the recovery point, or the next segment's base when that is lower): a scan that
    /// stops short of it is retried from the segment's start before it is believed.
    pub fn recover(
        files: &Files,
        dir: &Path,
        base_offset: i64,
        recovery_point: i64,
        durable_end: i64,
    ) -> Result<(Segment, ScanEnd)> {
        let (segment, end) =
            Self::recover_from_index(files, dir, base_offset, recovery_point, true)?;
        if end.next_offset >= durable_end {
            return Ok((segment, end));
        }
        // Flushed data seems lost: the index entry we started from may be damaged. Scan the
        // whole segment before believing that.
        tracing::warn!(
            segment = base_offset,
            "recovery from the index lost flushed data; rescanning the whole segment"
        );
        Self::recover_from_index(files, dir, base_offset, recovery_point, false)
    }

    fn recover_from_index(
        files: &Files,
        dir: &Path,
        base_offset: i64,
        recovery_point: i64,
        trust_index: bool,
    ) -> Result<(Segment, ScanEnd)> {
        let mut segment = Segment::new(files, dir, base_offset);
        // Recovery may write to it (as the active segment) and the flush after opening syncs
        // it: the segment owns this descriptor.
        let log = Arc::new(
            files
                .io
                .open(&segment.log_path, false)
                .map_err(|e| StorageError::io("open", &segment.log_path, e))?,
        );
        segment.write_file = Some(files.cache.own(Arc::clone(&log)));
        let file_len = log
            .file_len()
            .map_err(|e| StorageError::io("stat", &segment.log_path, e))?;
        let limit = file_len.min(u64::from(u32::MAX));

        let trusted_offsets = load_prefix::<OffsetEntry>(segment.offset_index.path(), |e| {
            trust_index
                && base_offset + i64::from(e.relative_offset) < recovery_point
                && u64::from(e.position) < limit
        });
        let trusted_offsets = longest_sane_prefix(trusted_offsets, |w| {
            w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position
        });
        let start = trusted_offsets.last().copied();
        let (start_pos, start_offset) = match start {
            Some(e) => (
                u64::from(e.position),
                base_offset + i64::from(e.relative_offset),
            ),
            None => (0, base_offset),
        };
        let trusted_times = load_prefix::<TimeEntry>(segment.time_index.path(), |e| {
            base_offset + i64::from(e.relative_offset) < start_offset
        });
        let trusted_times = longest_sane_prefix(trusted_times, |w| {
            w[0].timestamp < w[1].timestamp && w[0].relative_offset < w[1].relative_offset
        });
        segment.last_time_entry = trusted_times.last().copied();
        if let Some(t) = segment.last_time_entry {
            segment.max_timestamp = t.timestamp;
            segment.offset_of_max_timestamp = base_offset + i64::from(t.relative_offset);
        }
        segment.offset_index =
            OffsetIndex::active(segment.offset_index.path().to_path_buf(), trusted_offsets);
        segment.time_index =
            TimeIndex::active(segment.time_index.path().to_path_buf(), trusted_times);
        segment.size = start_pos;
        segment.next_offset = start_offset;
        segment.bytes_since_index = 0;
        let end = recovery::scan(
            &log,
            start_pos,
            limit,
            start_offset,
            RECOVERY_MAX_BATCH_BYTES,
            |pos, h| {
                segment.track_batch(pos, h);
                if h.base_offset >= recovery_point && (h.is_transactional() || h.is_control()) {
                    segment.recovered_txn_batches = true;
                }
            },
        )
        .map_err(|e| StorageError::io("read", &segment.log_path, e))?;
        debug_assert_eq!(end.valid_end, segment.size);
        debug_assert_eq!(end.next_offset, segment.next_offset);
        segment.allocated = file_len;
        if segment.first_timestamp.is_none() && segment.size > 0 {
            segment.first_timestamp = segment.read_header(files, 0)?.map(|h| h.first_timestamp());
        }
        // The index files may hold stale entries past what we kept: rewrite them whole.
        let offsets = segment.offset_index.to_vec();
        let times = segment.time_index.to_vec();
        segment
            .offset_index
            .rebuild(offsets, &*files.io)
            .map_err(|e| StorageError::io("write", segment.offset_index.path(), e))?;
        segment
            .time_index
            .rebuild(times, &*files.io)
            .map_err(|e| StorageError::io("write", segment.time_index.path(), e))?;
        segment.recover_txn_index(files, recovery_point.min(end.next_offset))?;
        files.cache.forget(segment.id);
        segment.dirty = true;
        // Recovery is done reading it in order: from now on its reads are fetches' batch
        // headers (see `no_readahead`).
        crate::page_cache::no_readahead(log.file());
        Ok((segment, end))
    }

    /// Keeps the `.txnindex` entries whose marker lies below `trusted_end` (they were synced
    /// before the recovery point passed them) and drops the rest: the log rebuilds those by
    /// replaying the markers it recovered.
    fn recover_txn_index(&mut self, files: &Files, trusted_end: i64) -> Result<()> {
        let path = self.txn_index.path().to_path_buf();
        if !path.exists() {
            return Ok(());
        }
        let base = self.base_offset;
        let kept = load_prefix::<AbortedTxnEntry>(&path, |e| {
            e.last_offset >= base && e.last_offset < trusted_end
        });
        let kept = longest_sane_prefix(kept, txn_index::is_sane);
        self.txn_index
            .rebuild(kept, &*files.io)
            .map_err(|e| StorageError::io("write", &path, e))
    }

    /// Adds an aborted transaction whose marker was just written to this (active) segment,
    /// and writes it through the I/O seam at once; the descriptor is kept for the next sync.
    /// A failed write keeps the entry in memory, and the next index write retries it.
    pub fn append_aborted_txn(&mut self, files: &Files, entry: AbortedTxnEntry) -> Result<()> {
        debug_assert!(!self.sealed);
        debug_assert!(
            entry.last_offset >= self.base_offset && entry.last_offset < self.next_offset
        );
        self.txn_index.push(entry);
        self.write_indexes(files)
    }

    /// Makes the `.txnindex` usable for lookups: maps a sealed segment's file on first use. A
    /// missing file is an empty index; a damaged one keeps its sane prefix (with a warning).
    pub fn ensure_txn_index(&mut self) -> Result<()> {
        if self.txn_index.is_loaded() {
            return Ok(());
        }
        let path = self.txn_index.path().to_path_buf();
        let ok = self
            .txn_index
            .load(txn_index::is_sane)
            .map_err(|e| StorageError::io("map", &path, e))?;
        if !ok {
            let kept = longest_sane_prefix(
                load_prefix::<AbortedTxnEntry>(&path, |_| true),
                txn_index::is_sane,
            );
            if path.exists() {
                tracing::warn!(file = %path.display(), kept = kept.len(), "damaged transaction index; keeping its sane prefix");
            }
            self.txn_index = TxnIndex::active(path, kept);
        }
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_file(&self, files: &Files, create: bool) -> Result<Arc<IoFile>> {
        if let Some(file) = &self.write_file {
            return Ok(Arc::clone(file.file()));
        }
        files
            .cache
            .get((self.id, FileKind::Log), &*files.io, &self.log_path, create)
            .map_err(|e| StorageError::io("open", &self.log_path, e))
    }

    /// Gives up the owned write descriptor (the segment was sealed and synced, or deleted);
    /// reads then go through the cache.
    pub fn release_write_file(&mut self) {
        self.write_file = None;
    }

    /// Whether the segment owns a write descriptor now.
    pub fn owns_write_file(&self) -> bool {
        self.write_file.is_some()
    }

    /// An active segment with nothing written since its last flush gives its write
    /// descriptor back. The caller (holding the log's lock) has checked that the flushed
    /// offset is the log end, so every byte written through the descriptor was synced through
    /// it, and no later fsync needs it: nothing an fsync on a new descriptor could miss.
    /// Returns whether a descriptor was released.
    pub fn release_idle_write_file(&mut self) -> bool {
        if self.sealed || self.dirty || self.write_file.is_none() {
            return false;
        }
        self.write_file = None;
        true
    }

    /// Opens the active segment's write descriptor again after an idle release, before any
    /// write goes through it.
    pub fn ensure_write_file(&mut self, files: &Files) -> Result<()> {
        if self.sealed || self.write_file.is_some() {
            return Ok(());
        }
        let log = files
            .io
            .open(&self.log_path, false)
            .map_err(|e| StorageError::io("open", &self.log_path, e))?;
        crate::page_cache::no_readahead(log.file());
        self.write_file = Some(files.cache.own(Arc::new(log)));
        Ok(())
    }

    /// Closes everything the segment holds open (its descriptors, cached or owned, and a
    /// sealed segment's index maps), so the space of deleted files is freed at once.
    pub fn close_files(&mut self, files: &Files) {
        self.release_write_file();
        self.index_writers = [None, None, None];
        files.cache.forget(self.id);
        if self.sealed {
            self.offset_index = OffsetIndex::sealed(self.offset_index.path().to_path_buf());
            self.time_index = TimeIndex::sealed(self.time_index.path().to_path_buf());
            self.txn_index = TxnIndex::sealed(self.txn_index.path().to_path_buf());
        }
    }

    /// An in-memory segment that only tracks batches, for the cleaner to compute the index
    /// entries of a segment it rewrites (no file is opened).
    pub(crate) fn scratch(
        files: &Files,
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
    ) -> Self {
        let mut s = Segment::new(files, dir, base_offset);
        s.index_interval_bytes = u64::from(index_interval);
        s
    }

    /// The index entries of a scratch segment, with the final time entry a seal adds.
    pub(crate) fn finish_scratch(mut self) -> (Vec<OffsetEntry>, Vec<TimeEntry>) {
        self.maybe_add_time_entry();
        (self.offset_index.to_vec(), self.time_index.to_vec())
    }

    /// Updates sizes, offsets, timestamps and index entries for a batch written at `position`.
    /// Offsets may jump forward in a cleaned segment (whole batches removed).
    pub(crate) fn track_batch(&mut self, position: u64, header: &BatchHeader) {
        debug_assert_eq!(position, self.size);
        debug_assert!(header.base_offset >= self.next_offset);
        if self.first_timestamp.is_none() {
            self.first_timestamp = Some(header.first_timestamp());
        }
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index >= self.index_interval_bytes && position > 0 {
            self.add_index_entries(header.base_offset, position);
        }
        let size = header.total_size() as u64;
        self.bytes_since_index += size;
        self.size = position + size;
        self.next_offset = header.last_offset() + 1;
    }

    fn add_index_entries(&mut self, offset: i64, position: u64) {
        self.offset_index.push(OffsetEntry {
            relative_offset: self.relative(offset),
            position: position as u32,
        });
        self.bytes_since_index = 0;
        self.maybe_add_time_entry();
    }

    fn maybe_add_time_entry(&mut self) {
        if self.max_timestamp >= 0
            && self
                .last_time_entry
                .is_none_or(|t| self.max_timestamp > t.timestamp)
        {
            let entry = TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.relative(self.offset_of_max_timestamp),
            };
            if self
                .last_time_entry
                .is_none_or(|t| entry.relative_offset > t.relative_offset)
            {
                self.time_index.push(entry);
                self.last_time_entry = Some(entry);
            }
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        let rel = offset - self.base_offset;
        debug_assert!(
            (0..=i64::from(i32::MAX)).contains(&rel),
            "offset {offset} outside segment {}",
            self.base_offset
        );
        rel as u32
    }

    /// Whether `records` more offsets still fit the 4-byte relative offsets of the index.
    pub fn offsets_fit(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i64::from(i32::MAX)
    }

    /// Writes already-validated batches (with offsets assigned) at the end of the segment as one
    /// pwritev, after making sure the space is allocated. On error nothing is recorded as
    /// written: the bytes past `size` are ignored and overwritten by the next append.
    pub fn append(
        &mut self,
        files: &Files,
        bufs: &[&[u8]],
        headers: &[BatchHeader],
        preallocate_step_bytes: u64,
        index_interval_bytes: u32,
    ) -> Result<()> {
        debug_assert!(!self.sealed);
        let len: u64 = headers.iter().map(|h| h.total_size() as u64).sum();
        debug_assert_eq!(len, bufs.iter().map(|b| b.len() as u64).sum::<u64>());
        self.ensure_write_file(files)?;
        self.idle_ticks = 0;
        let log = self.log_file(files, false)?;
        let end = self.size + len;
        if end > self.allocated {
            // Grow by doubling from 64 KiB up to the configured step, so an idle partition
            // reserves 64 KiB, not a step, and a busy one preallocates in large steps.
            let grow = self.allocated.clamp(
                MIN_PREALLOCATE_BYTES,
                preallocate_step_bytes.max(MIN_PREALLOCATE_BYTES),
            );
            let target = end.max(self.allocated + grow).div_ceil(4096) * 4096;
            let target = match files.io.allocate(&log, target) {
                Ok(()) => target,
                // Nearly full disk: take only what this append needs.
                Err(e)
                    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
                        && target > end =>
                {
                    files
                        .io
                        .allocate(&log, end)
                        .map_err(|e| StorageError::io("fallocate", &self.log_path, e))?;
                    end
                }
                Err(e) => return Err(StorageError::io("fallocate", &self.log_path, e)),
            };
            self.allocated = target;
        }
        files
            .io
            .write_at(&log, bufs, self.size)
            .map_err(|e| StorageError::io("pwrite", &self.log_path, e))?;
        self.index_interval_bytes = u64::from(index_interval_bytes);
        let mut position = self.size;
        for h in headers {
            self.track_batch(position, h);
            position += h.total_size() as u64;
        }
        self.dirty = true;
        Ok(())
    }

    /// Writes index entries not yet on disk, keeping the descriptors written through until
    /// they are synced.
    pub fn write_indexes(&mut self, files: &Files) -> Result<()> {
        if let Some(f) = self
            .offset_index
            .write_pending(&*files.io, &files.cache, self.id)
            .map_err(|e| StorageError::io("write", self.offset_index.path(), e))?
        {
            self.index_writers[0] = Some(f);
        }
        if let Some(f) = self
            .time_index
            .write_pending(&*files.io, &files.cache, self.id)
            .map_err(|e| StorageError::io("write", self.time_index.path(), e))?
        {
            self.index_writers[1] = Some(f);
        }
        if let Some(f) = self
            .txn_index
            .write_pending(&*files.io, &files.cache, self.id)
            .map_err(|e| StorageError::io("write", self.txn_index.path(), e))?
        {
            self.index_writers[2] = Some(f);
        }
        Ok(())
    }

    /// The index files with unsynced entries, on the descriptors that wrote them (taken: the
    /// caller syncs them).
    pub fn take_unsynced_index_files(&mut self) -> Vec<Arc<IoFile>> {
        self.index_writers
            .iter_mut()
            .filter_map(Option::take)
            .collect()
    }

    /// The segment's three files, for a flush to fdatasync outside the log's lock: each on
    /// the descriptor that wrote it when one holds unsynced data.
    pub fn files_to_sync(&mut self, files: &Files) -> Result<Vec<Arc<IoFile>>> {
        let log = self.log_file(files, false)?;
        let [offsets, times, txns] = std::mem::take(&mut self.index_writers);
        let open = |written: Option<Arc<IoFile>>, kind, path: &Path| match written {
            Some(f) => Ok(f),
            None => files
                .cache
                .get((self.id, kind), &*files.io, path, true)
                .map_err(|e| StorageError::io("open", path, e)),
        };
        let mut out = vec![
            log,
            open(offsets, FileKind::OffsetIndex, self.offset_index.path())?,
            open(times, FileKind::TimeIndex, self.time_index.path())?,
        ];
        // The txn index exists only with entries; unsynced ones are on the descriptor kept.
        out.extend(txns);
        Ok(out)
    }

    /// Stops being the active segment: records a final time index entry, writes the indexes,
    /// and gives back the preallocated tail. The caller's next flush syncs it.
    pub fn seal(&mut self, files: &Files) -> Result<()> {
        if self.sealed {
            return Ok(());
        }
        self.maybe_add_time_entry();
        self.write_indexes(files)?;
        self.release_preallocation(files)?;
        self.offset_index.seal();
        self.time_index.seal();
        self.txn_index.seal();
        self.sealed = true;
        self.dirty = true;
        Ok(())
    }

    /// Gives back the preallocated tail, so the file ends at its last batch. A roll does this
    /// before the next segment's file exists: a segment followed by another one opens trusted
    /// whole (file length included) once the recovery point passes it, and a zero-filled tail
    /// left by a crash inside the roll would then be read as batches. The segment may stay
    /// active (the next append preallocates again).
    pub fn release_preallocation(&mut self, files: &Files) -> Result<()> {
        if self.allocated != self.size {
            self.ensure_write_file(files)?;
            let log = self.log_file(files, false)?;
            files
                .io
                .set_len(&log, self.size)
                .map_err(|e| StorageError::io("truncate", &self.log_path, e))?;
            self.allocated = self.size;
            self.dirty = true;
        }
        Ok(())
    }

    /// Makes the indexes usable for lookups: maps a sealed segment's index files, rebuilding
    /// them from the log when missing or inconsistent.
    pub fn ensure_indexes(&mut self, files: &Files) -> Result<()> {
        if self.offset_index.is_loaded() && self.time_index.is_loaded() {
            return Ok(());
        }
        let (size, next_rel) = (self.size, (self.next_offset - self.base_offset) as u64);
        let offsets_ok = self
            .offset_index
            .load(|e| offset_index::is_sane(e, size, next_rel))
            .map_err(|e| StorageError::io("map", self.offset_index.path(), e))?;
        let times_ok = self
            .time_index
            .load(|e| time_index::is_sane(e, next_rel))
            .map_err(|e| StorageError::io("map", self.time_index.path(), e))?;
        if offsets_ok && times_ok {
            if let Some(t) = self.time_index.last() {
                self.max_timestamp = t.timestamp;
                self.offset_of_max_timestamp = self.base_offset + i64::from(t.relative_offset);
            }
            return Ok(());
        }
        tracing::warn!(segment = %self.log_path.display(), "rebuilding inconsistent or missing index");
        self.rebuild_indexes(files)
    }

    /// Scans the whole (sealed) segment and writes fresh index files.
    fn rebuild_indexes(&mut self, files: &Files) -> Result<()> {
        let log = self.log_file(files, false)?;
        let mut scratch = Segment::new(
            files,
            self.log_path.parent().unwrap_or(Path::new(".")),
            self.base_offset,
        );
        // Sealed segments may have been cleaned: offsets may skip forward.
        let end = recovery::scan_cleaned(
            &log,
            0,
            self.size,
            self.base_offset,
            RECOVERY_MAX_BATCH_BYTES,
            |pos, h| scratch.track_batch(pos, h),
        )
        .map_err(|e| StorageError::io("read", &self.log_path, e))?;
        if end.valid_end != self.size || end.next_offset > self.next_offset {
            return Err(StorageError::Corrupt {
                path: self.log_path.clone(),
                reason: format!(
                    "sealed segment holds valid batches up to byte {} (offset {}), expected {} (offset {})",
                    end.valid_end, end.next_offset, self.size, self.next_offset
                ),
            });
        }
        scratch.maybe_add_time_entry();
        files.cache.forget(self.id);
        self.offset_index
            .rebuild(scratch.offset_index.to_vec(), &*files.io)
            .map_err(|e| StorageError::io("write", self.offset_index.path(), e))?;
        self.time_index
            .rebuild(scratch.time_index.to_vec(), &*files.io)
            .map_err(|e| StorageError::io("write", self.time_index.path(), e))?;
        self.max_timestamp = scratch.max_timestamp;
        self.offset_of_max_timestamp = scratch.offset_of_max_timestamp;
        Ok(())
    }

    /// Reads the batch header at `position`, if a whole header lies before `size`.
    pub fn read_header(&self, files: &Files, position: u64) -> Result<Option<BatchHeader>> {
        if position + HEADER_SIZE as u64 > self.size {
            return Ok(None);
        }
        let log = self.log_file(files, false)?;
        files.io.reading(&log);
        let mut buf = [0u8; HEADER_SIZE];
        let n = log
            .read_at(&mut buf, position)
            .map_err(|e| StorageError::io("read", &self.log_path, e))?;
        Ok(BatchHeader::parse(&buf[..n]))
    }

    /// The file position of the batch holding `offset` and that batch's header: an index
    /// lookup, then a walk over at most `index.interval.bytes` of headers.
    pub fn find_batch(&mut self, files: &Files, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        self.ensure_indexes(files)?;
        let rel = offset
            .saturating_sub(self.base_offset)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let mut position = self
            .offset_index
            .floor(|e| e.relative_offset <= rel)
            .map_or(0, |e| u64::from(e.position));
        // Bounded by the segment size: each step moves past one batch.
        while let Some(h) = self.read_header(files, position)? {
            if h.last_offset() >= offset {
                return Ok(Some((position, h)));
            }
            position += h.total_size() as u64;
        }
        Ok(None)
    }

    /// The largest batch boundary at or below `limit` (at least `from`), found through the
    /// index and a short header walk, so a read can end on a whole batch.
    pub fn batch_boundary_at_or_below(
        &mut self,
        files: &Files,
        from: u64,
        limit: u64,
    ) -> Result<u64> {
        if limit >= self.size {
            return Ok(self.size);
        }
        self.ensure_indexes(files)?;
        let mut position = self
            .offset_index
            .floor(|e| u64::from(e.position) <= limit)
            .map_or(from, |e| u64::from(e.position).max(from));
        // Bounded: at most index.interval.bytes of batches past the indexed position.
        while let Some(h) = self.read_header(files, position)? {
            let next = position + h.total_size() as u64;
            if next > limit {
                break;
            }
            position = next;
        }
        Ok(position)
    }

    /// Where to start looking for the first record with a timestamp at or after `timestamp`.
    pub fn time_lookup_position(&mut self, files: &Files, timestamp: i64) -> Result<u64> {
        self.ensure_indexes(files)?;
        let Some(entry) = self.time_index.floor(|e| e.timestamp < timestamp) else {
            return Ok(0);
        };
        let offset = self.base_offset + i64::from(entry.relative_offset);
        Ok(self.find_batch(files, offset)?.map_or(0, |(pos, _)| pos))
    }

    /// Removes the segment's files (retention, or recovery dropping segments after a torn one).
    /// Readers holding the log file open keep reading it until they drop it.
    pub fn delete_files(&self, files: &Files) -> Result<()> {
        files.cache.forget(self.id);
        for path in [
            self.log_path.as_path(),
            self.offset_index.path(),
            self.time_index.path(),
            self.txn_index.path(),
        ] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("delete", path, e)),
            }
        }
        Ok(())
    }
}

/// The first preallocation of a segment; later ones double up to `preallocate_step_bytes`.
const MIN_PREALLOCATE_BYTES: u64 = 64 * 1024;

/// Kafka's `index.interval.bytes` default, used until the log sets its own.
const DEFAULT_INDEX_INTERVAL: u64 = 4096;

/// Loads an index file's entries while `keep` holds; a missing or ragged file yields the
/// whole entries before the damage.
fn load_prefix<E: crate::index::IndexEntry>(path: &Path, keep: impl Fn(&E) -> bool) -> Vec<E> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    bytes
        .chunks_exact(E::SIZE)
        .map(E::decode)
        .take_while(|e| keep(e))
        .collect()
}

/// The longest prefix of `entries` in which every adjacent pair satisfies `ordered`.
fn longest_sane_prefix<E: Copy>(mut entries: Vec<E>, ordered: impl Fn(&[E]) -> bool) -> Vec<E> {
    let good = entries
        .windows(2)
        .position(|w| !ordered(w))
        .map_or(entries.len(), |i| i + 1);
    entries.truncate(good);
    entries
}
