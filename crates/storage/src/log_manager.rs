//! All logs of one data directory (Kafka's `LogManager`): creates, finds, opens (lazily,
//! with recovery), deletes, and looks after them in a periodic tick (flush.ms, retention,
//! segment.ms rolls, recovery point checkpoints). It owns the directory's flusher thread
//! (`flusher.rs`), the group commit every log shares.
//!
//! One log's failure is that log's alone: housekeeping goes on past a log that fails, and a
//! log whose disk failed is offline (`Log::is_offline`) while every other keeps flushing,
//! checkpointing and retaining.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::checkpoint::{self, RECOVERY_POINT_FILE};
use crate::cleaner::{self, CleanContext, CleanStats};
use crate::cleaner_manager::{CleanerConfig, CleanerPool};
use crate::config::LogConfig;
use crate::error::{Result, StorageError};
use crate::fd_cache::FdCache;
use crate::file_io::{FileIo, OsIo};
use crate::flusher::nanos_since;
use crate::flusher::{FlushListener, Flusher, GroupSync};
use crate::log::{now_ms, Log};
use crate::segment::Files;
use crate::TopicPartition;

/// Most logs [`LogManager::close`] prepares before one sync makes them durable: ~10 syncfs
/// calls for 10 000 partitions, a few milliseconds each after the first.
const CLOSE_BATCH_MAX_LOGS: usize = 1024;

/// How often `tick` rewrites the recovery point checkpoint.
const CHECKPOINT_INTERVAL_MS: i64 = 10_000;
/// Suffix of a partition directory being deleted (Kafka's `-delete`).
const DELETE_SUFFIX: &str = ".deleting";

/// Logs `tick` opens per call at most: 10 000 unopened partitions are all opened within 20
/// ticks of start-up, while requests open the ones they need at once.
pub const OPENS_PER_TICK: usize = 500;

/// Housekeeping ticks (about a second each) a synced log stays unwritten before it gives its
/// active segment's write descriptor back, when descriptors are not scarce.
pub const IDLE_TICKS_BEFORE_RELEASE: u32 = 30;

#[derive(Debug, Clone)]
pub struct LogManagerConfig {
    pub data_dir: PathBuf,
    /// File descriptors of segments and indexes, cached and owned by active segments
    /// together; 0 = three quarters of the process's soft limit.
    pub max_open_files: usize,
    /// Config for logs opened from disk; the broker then applies each topic's own.
    pub default_log_config: LogConfig,
    /// How the flusher syncs a pass with several files.
    pub group_sync: GroupSync,
    /// Flusher threads ([`crate::flusher::SYNC_WORKERS`] by default): how many flush passes
    /// may run at once when one is stuck on a slow sync.
    pub sync_workers: usize,
    /// `producer.id.expiration.ms`: a producer id idle this long (by its last batch's
    /// timestamp, with no open transaction) is forgotten by every partition at the next tick.
    pub producer_id_expiration_ms: i64,
    /// The log cleaner's threads, map size and throttle.
    pub cleaner: CleanerConfig,
}

impl LogManagerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LogManagerConfig {
            data_dir: data_dir.into(),
            max_open_files: 0,
            default_log_config: LogConfig::default(),
            group_sync: GroupSync::default(),
            sync_workers: crate::flusher::SYNC_WORKERS,
            producer_id_expiration_ms: crate::producer_state::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            cleaner: CleanerConfig::default(),
        }
    }
}

#[derive(Debug)]
enum Slot {
    /// Found on disk, not opened yet.
    OnDisk,
    Open(Arc<Log>),
}

#[derive(Debug)]
struct ManagerState {
    logs: HashMap<TopicPartition, Slot>,
    /// From the checkpoint file, for logs not opened yet.
    recovery_points: HashMap<TopicPartition, i64>,
    /// The checkpoint file may still hold the recovery point of a log deleted since it was
    /// written (or found without a directory at open): `create_log` rewrites it first, so a
    /// log re-created under that name is never recovered from its predecessor's point.
    file_has_deleted: bool,
    /// Each topic's log config (`set_topic_config`), which a log opened later opens with;
    /// topics not here use `default_log_config`.
    topic_configs: HashMap<String, LogConfig>,
    last_checkpoint_ms: i64,
}

/// Owner of every log in a data directory.
#[derive(Debug)]
pub struct LogManager {
    config: LogManagerConfig,
    files: Files,
    state: Mutex<ManagerState>,
    /// The flusher threads, joined on drop.
    flusher_threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    cleaner: CleanerPool,
    /// Held while the recovery point checkpoint file is written, from computing its entries
    /// to the rename: a checkpoint computed before a deletion can then not be written after
    /// the deletion's own. Taken before `state`.
    checkpoint_file: Mutex<()>,
    /// Held while a log is opened (recovered, its index rebuilt) and while one is deleted, so
    /// that no log is opened twice or deleted under its opener. `state` is not held across
    /// the open: looking up logs that are open already never waits for another's recovery.
    /// Taken after `checkpoint_file` and before `state`.
    opening: Mutex<()>,
}

impl LogManager {
    pub fn open(config: LogManagerConfig) -> Result<LogManager> {
        Self::open_with_io(config, Arc::new(OsIo))
    }

    /// Opens with a given file I/O seam (the power-loss simulator uses this).
    pub fn open_with_io(config: LogManagerConfig, io: Arc<dyn FileIo>) -> Result<LogManager> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("mkdir", dir, e))?;
        let capacity = if config.max_open_files > 0 {
            config.max_open_files
        } else {
            default_max_open_files()
        };
        let flusher = Arc::new(Flusher::new(config.group_sync));
        let files = Files {
            io: Arc::clone(&io),
            cache: Arc::new(FdCache::new(capacity.max(3))),
            flusher: Arc::clone(&flusher),
        };
        let mut recovery_points = checkpoint::read(&dir.join(RECOVERY_POINT_FILE))?;
        let logs: HashMap<_, _> = partition_dirs(dir, true)?
            .into_iter()
            .map(|tp| (tp, Slot::OnDisk))
            .collect();
        // Points of logs deleted before a crash let the file be rewritten.
        let found = recovery_points.len();
        recovery_points.retain(|tp, _| logs.contains_key(tp));
        let file_has_deleted = recovery_points.len() < found;
        tracing::info!(dir = %dir.display(), partitions = logs.len(), "log manager opened");
        let threads = flusher
            .start(io, "rill-flusher", config.sync_workers)
            .map_err(|e| StorageError::io("start flusher thread", dir, e))?;
        let cleaner = CleanerPool::new(config.cleaner.clone());
        Ok(LogManager {
            config,
            cleaner,
            files,
            state: Mutex::new(ManagerState {
                logs,
                recovery_points,
                file_has_deleted,
                topic_configs: HashMap::new(),
                last_checkpoint_ms: now_ms(),
            }),
            flusher_threads: Mutex::new(threads),
            checkpoint_file: Mutex::new(()),
            opening: Mutex::new(()),
        })
    }

    /// Sets the function told about every partition whose flushed offset advanced (the
    /// broker wakes long-polling fetches with it: under durable visibility that is when new
    /// records become visible).
    pub fn set_flush_listener(&self, listener: FlushListener) {
        self.files.flusher.set_listener(listener);
    }

    /// Tells the flush listener that what `tp` shows readers may have changed without a flush:
    /// a transaction marker under "written" visibility moves the last stable offset at once.
    pub fn notify_listener(&self, tp: &TopicPartition) {
        self.files.flusher.flushed(tp);
    }

    /// Flush passes of the group commit so far (each syncs every log queued at its start).
    pub fn flusher_passes(&self) -> u64 {
        self.files.flusher.passes()
    }

    /// Flush passes started beside a running one stuck past the flusher's straggler
    /// threshold (a slow sync; `flusher.rs`).
    pub fn flusher_overlapping_passes(&self) -> u64 {
        self.files.flusher.overlapping_passes()
    }

    /// Whether the group commit is syncing now (for reads that give way to syncs).
    pub fn sync_activity(&self) -> crate::flusher::SyncActivity {
        self.files.flusher.activity()
    }

    /// syncfs calls of the group commit so far.
    pub fn flusher_syncfs_calls(&self) -> u64 {
        self.files.flusher.syncfs_calls()
    }

    /// Open logs taken offline by a storage failure.
    pub fn offline_partitions(&self) -> Vec<TopicPartition> {
        let mut out: Vec<_> = self
            .open_logs()
            .into_iter()
            .filter(|log| log.is_offline())
            .map(|log| log.topic_partition().clone())
            .collect();
        out.sort();
        out
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Open files held by the segment cache right now.
    pub fn open_files(&self) -> usize {
        self.files.cache.len()
    }

    fn log_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.config.data_dir.join(tp.dir_name())
    }

    /// Creates an empty log. Fails if it exists.
    pub fn create_log(&self, tp: &TopicPartition, config: LogConfig) -> Result<Arc<Log>> {
        tp.validate()?;
        let _checkpoint_file = self.checkpoint_file.lock();
        let mut state = self.state.lock();
        if state.logs.contains_key(tp) {
            return Err(StorageError::LogAlreadyExists { tp: tp.clone() });
        }
        if state.file_has_deleted {
            // The file may hold the recovery point of an earlier log of this name: the new
            // log must not be recovered from it after a crash, so it leaves the file (with
            // every other deleted log's) before the new directory exists.
            checkpoint::write(
                &*self.files.io,
                &self.config.data_dir.join(RECOVERY_POINT_FILE),
                &state.recovery_points,
            )?;
            state.file_has_deleted = false;
        }
        let log = Arc::new(Log::create(
            tp.clone(),
            self.log_dir(tp),
            config,
            self.files.clone(),
        )?);
        log.init_self();
        state.logs.insert(tp.clone(), Slot::Open(log.clone()));
        Ok(log)
    }

    /// The log of `tp`, opening (and recovering) it on first use. `Ok(None)` if no such log.
    ///
    /// Blocking when the log is not open yet: recovery scans the unflushed tail and rebuilds
    /// its indexes (a clean open reads a few KiB). Async callers use
    /// [`LogManager::get_open_log`] first and call this off their runtime when it says no.
    pub fn get_log(&self, tp: &TopicPartition) -> Result<Option<Arc<Log>>> {
        match self.state.lock().logs.get(tp) {
            None => return Ok(None),
            Some(Slot::Open(log)) => return Ok(Some(log.clone())),
            Some(Slot::OnDisk) => {}
        }
        let _opening = self.opening.lock();
        // Looked up again: another caller may have opened it, or deleted it, meanwhile.
        let (recovery_point, config) = {
            let state = self.state.lock();
            match state.logs.get(tp) {
                None => return Ok(None),
                Some(Slot::Open(log)) => return Ok(Some(log.clone())),
                Some(Slot::OnDisk) => {}
            }
            let config = state
                .topic_configs
                .get(&tp.topic)
                .unwrap_or(&self.config.default_log_config)
                .clone();
            (state.recovery_points.get(tp).copied().unwrap_or(0), config)
        };
        let log = Arc::new(Log::open(
            tp.clone(),
            self.log_dir(tp),
            config.clone(),
            self.files.clone(),
            recovery_point,
        )?);
        log.init_self();
        let current = {
            let mut state = self.state.lock();
            debug_assert!(matches!(state.logs.get(tp), Some(Slot::OnDisk)));
            state.logs.insert(tp.clone(), Slot::Open(log.clone()));
            state.topic_configs.get(&tp.topic).cloned()
        };
        // A topic config set while the log was opening reached only open logs: apply it here.
        if let Some(current) = current.filter(|c| *c != config) {
            log.set_config(current);
        }
        Ok(Some(log))
    }

    /// The log of `tp` if it is open already; never opens one (never blocks on disk).
    pub fn get_open_log(&self, tp: &TopicPartition) -> Option<Arc<Log>> {
        match self.state.lock().logs.get(tp) {
            Some(Slot::Open(log)) => Some(log.clone()),
            _ => None,
        }
    }

    /// Those of `tps` whose logs are here but still on disk (not opened yet), under one
    /// lock: what a request's handler would open inline on first use.
    pub fn on_disk<'a>(
        &self,
        tps: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Vec<TopicPartition> {
        let state = self.state.lock();
        tps.into_iter()
            .filter(|tp| matches!(state.logs.get(*tp), Some(Slot::OnDisk)))
            .cloned()
            .collect()
    }

    /// Whether `tp` has a log here, open or not (never opens it).
    pub fn contains(&self, tp: &TopicPartition) -> bool {
        self.state.lock().logs.contains_key(tp)
    }

    /// Sets the config of `topic`'s logs: those of partitions `0..partitions` already open
    /// get it now, and every log of the topic opened later opens with it. This is how a
    /// broker with 10 000 partitions starts without opening (and recovering) each log to set
    /// its config: logs stay on disk until first used.
    pub fn set_topic_config(&self, topic: &str, partitions: i32, config: LogConfig) {
        let mut open = Vec::new();
        {
            let mut state = self.state.lock();
            state
                .topic_configs
                .insert(topic.to_string(), config.clone());
            for partition in 0..partitions {
                let tp = TopicPartition {
                    topic: topic.to_string(),
                    partition,
                };
                if let Some(Slot::Open(log)) = state.logs.get(&tp) {
                    open.push(Arc::clone(log));
                }
            }
        }
        for log in open {
            log.set_config(config.clone());
        }
    }

    /// Registers partition directories that appeared in the data directory after it was
    /// opened: like those found at start-up, each is opened, with recovery, on first use.
    /// Returns how many were new. (The `segment_recovery` fuzz target recovers each input's
    /// files this way under one manager instead of opening a manager, and its flusher
    /// thread, per input.)
    pub fn discover(&self) -> Result<usize> {
        // A `.deleting` directory here may be a `delete_log` in progress: left alone.
        let found = partition_dirs(&self.config.data_dir, false)?;
        let mut state = self.state.lock();
        let mut new = 0;
        for tp in found {
            state.logs.entry(tp).or_insert_with(|| {
                new += 1;
                Slot::OnDisk
            });
        }
        Ok(new)
    }

    /// Every partition in the data directory, opened or not.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut out: Vec<_> = self.state.lock().logs.keys().cloned().collect();
        out.sort();
        out
    }

    /// Deletes a log and its directory. Readers holding its files finish their reads; the
    /// log closes its other descriptors and refuses any further use, so its space is freed
    /// and a handle kept past this cannot reach a partition created again with its name.
    pub fn delete_log(&self, tp: &TopicPartition) -> Result<()> {
        let _checkpoint_file = self.checkpoint_file.lock();
        let _opening = self.opening.lock();
        let mut state = self.state.lock();
        match state.logs.remove(tp) {
            None => return Err(StorageError::UnknownPartition { tp: tp.clone() }),
            Some(Slot::Open(log)) => log.mark_deleted(),
            Some(Slot::OnDisk) => {}
        }
        let dir = self.log_dir(tp);
        let doomed = self
            .config
            .data_dir
            .join(format!("{}{DELETE_SUFFIX}", tp.dir_name()));
        std::fs::rename(&dir, &doomed).map_err(|e| StorageError::io("rename", &dir, e))?;
        self.files
            .io
            .sync_dir(&self.config.data_dir)
            .map_err(|e| StorageError::io("fsync dir", &self.config.data_dir, e))?;
        // Its recovery point leaves the file at the next checkpoint, or before a log of the
        // same name is created (`create_log`), whichever comes first.
        if state.recovery_points.remove(tp).is_some() {
            state.file_has_deleted = true;
        }
        drop(state);
        std::fs::remove_dir_all(&doomed).map_err(|e| StorageError::io("delete", &doomed, e))
    }

    fn open_logs(&self) -> Vec<Arc<Log>> {
        self.state
            .lock()
            .logs
            .values()
            .filter_map(|s| match s {
                Slot::Open(log) => Some(log.clone()),
                Slot::OnDisk => None,
            })
            .collect()
    }

    /// Periodic housekeeping, about once a second: flush.ms flushes, retention and segment.ms
    /// rolls and producer id expiry on every log, and the recovery point checkpoint (with producer
    /// state snapshots) every 10 s. Logs not opened yet are opened here, at most
    /// [`OPENS_PER_TICK`] per call, so retention reaches them too without a start-up with
    /// 10 000 partitions opening (and recovering) all of them in its first second.
    ///
    /// A log that fails is logged and skipped (a failed flush takes it offline); the others
    /// are looked after all the same. Errors here are only the checkpoint file's own.
    pub fn tick(&self, now: i64) -> Result<()> {
        let mut opens_left = OPENS_PER_TICK;
        for tp in self.partitions() {
            let on_disk = matches!(self.state.lock().logs.get(&tp), Some(Slot::OnDisk));
            if on_disk {
                if opens_left == 0 {
                    continue;
                }
                opens_left -= 1;
            }
            let log = match self.get_log(&tp) {
                Ok(Some(log)) => log,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(partition = %tp, error = %e, "cannot open log for housekeeping");
                    continue;
                }
            };
            if log.is_offline() {
                continue;
            }
            // Queued for the flusher, never synced here: a stuck disk under one log must not
            // hold up the others' flush.ms flushes, retention and checkpoint.
            log.flush_if_due(now);
            if let Err(e) = log.apply_retention(now) {
                tracing::warn!(partition = %tp, error = %e, "retention failed");
            }
            log.remove_expired_producers(now, self.config.producer_id_expiration_ms);
            // Idle logs give their write descriptor back: after one idle tick when owned
            // descriptors crowd the budget, else after IDLE_TICKS_BEFORE_RELEASE.
            let idle_ticks = if self.files.cache.owned_pressure() {
                1
            } else {
                IDLE_TICKS_BEFORE_RELEASE
            };
            log.release_idle_write_file(idle_ticks);
        }
        let due = {
            let mut state = self.state.lock();
            let due = now - state.last_checkpoint_ms >= CHECKPOINT_INTERVAL_MS;
            if due {
                state.last_checkpoint_ms = now;
            }
            due
        };
        if due {
            self.write_checkpoint(false)?;
        }
        Ok(())
    }

    /// Writes every log's recovery point, flushing what each log has unflushed (and its
    /// index entries) first. A stale checkpoint only makes recovery scan more: a log that
    /// fails here (and goes offline) keeps its previous point, and the others are written.
    /// Waits for a flush already in progress on a log (close and tests want every point);
    /// the periodic checkpoint of [`LogManager::tick`] skips such a log instead.
    pub fn checkpoint(&self) -> Result<()> {
        self.write_checkpoint(true)
    }

    /// The checkpoint; with `wait_for_flushes` false a log whose flush is in progress (a
    /// sync perhaps stuck on a slow disk) keeps its previous point, so the others' points
    /// are not held up behind it.
    fn write_checkpoint(&self, wait_for_flushes: bool) -> Result<()> {
        let mut fresh = Vec::new();
        for log in self.open_logs() {
            if log.is_offline() {
                continue;
            }
            let point = if wait_for_flushes {
                log.checkpoint_offset().map(Some)
            } else {
                log.try_checkpoint_offset()
            };
            match point {
                Ok(Some(point)) => fresh.push((log, point)),
                Ok(None) => {
                    tracing::debug!(partition = %log.topic_partition(), "recovery point kept: a flush is in progress")
                }
                Err(e) => {
                    tracing::warn!(partition = %log.topic_partition(), error = %e, "recovery point not advanced")
                }
            }
        }
        let _checkpoint_file = self.checkpoint_file.lock();
        let points = {
            let mut state = self.state.lock();
            let mut points = std::mem::take(&mut state.recovery_points);
            points.retain(|tp, _| state.logs.contains_key(tp));
            // Only the logs still there: one deleted (and perhaps re-created) since its point
            // was taken must not pass it on.
            for (log, point) in fresh {
                let tp = log.topic_partition();
                if matches!(state.logs.get(tp), Some(Slot::Open(l)) if Arc::ptr_eq(l, &log)) {
                    points.insert(tp.clone(), point);
                }
            }
            state.recovery_points = points.clone();
            points
        };
        checkpoint::write(
            &*self.files.io,
            &self.config.data_dir.join(RECOVERY_POINT_FILE),
            &points,
        )?;
        // Deletions wait for `checkpoint_file`: none happened since `points` was taken.
        self.state.lock().file_has_deleted = false;
        Ok(())
    }

    /// Starts the log cleaner's threads (`log.cleaner.threads`; none when
    /// `log.cleaner.enable` is false). [`LogManager::close`] stops them.
    pub fn start_cleaner(self: &Arc<Self>) {
        self.cleaner.start(Arc::downgrade(self));
    }

    /// Stops the cleaner threads; a pass in progress abandons its uncommitted files.
    pub fn stop_cleaner(&self) {
        self.cleaner.stop();
    }

    pub(crate) fn cleaner_pool(&self) -> &CleanerPool {
        &self.cleaner
    }

    /// The log cleaner's settings in force.
    pub fn cleaner_config(&self) -> CleanerConfig {
        self.cleaner.config()
    }

    /// Changes the log cleaner's settings without a restart (the dynamic `log.cleaner.*`
    /// broker configs): the throttle at once, buffer sizes from the next pass, threads
    /// restarted when their count or backoff changes. Blocks while restarting them.
    pub fn reconfigure_cleaner(self: &Arc<Self>, config: CleanerConfig) {
        self.cleaner.reconfigure(config, Arc::downgrade(self));
    }

    /// Running cleaner threads.
    pub fn cleaner_threads(&self) -> usize {
        self.cleaner.thread_count()
    }

    fn clean_context<'a>(
        &'a self,
        tp: &TopicPartition,
        now: i64,
        throttle: &'a (dyn Fn(u64) + Sync),
    ) -> CleanContext<'a> {
        let config = self.cleaner.config();
        CleanContext {
            map_bytes: config.map_bytes_per_thread(),
            read_chunk_bytes: config.read_chunk_bytes_per_thread(),
            persisted_recovery_point: self.persisted_recovery_point(tp),
            now_ms: now,
            throttle,
            stop: &self.cleaner.stop,
        }
    }

    /// The recovery point of `tp` as last written to the checkpoint file: the cleaner only
    /// rewrites segments below it.
    fn persisted_recovery_point(&self, tp: &TopicPartition) -> i64 {
        self.state
            .lock()
            .recovery_points
            .get(tp)
            .copied()
            .unwrap_or(0)
    }

    /// One cleaning pass over `tp` now, whatever its dirty ratio (tests, tools). `Ok(None)`
    /// when it has nothing cleanable (or is not compacted).
    pub fn clean_log(&self, tp: &TopicPartition) -> Result<Option<CleanStats>> {
        let Some(log) = self.get_log(tp)? else {
            return Err(StorageError::UnknownPartition { tp: tp.clone() });
        };
        let throttle = |n| self.cleaner.throttle.acquire(n);
        cleaner::clean(&log, &self.clean_context(tp, now_ms(), &throttle))
    }

    /// One pass over the dirtiest compacted log whose dirty ratio reaches its
    /// `min.cleanable.dirty.ratio` (or that is overdue by `max.compaction.lag.ms`).
    /// `Ok(None)` when no log needs cleaning.
    pub fn clean_dirtiest(&self, now: i64) -> Result<Option<(TopicPartition, CleanStats)>> {
        let mut best: Option<(f64, Arc<Log>)> = None;
        for log in self.open_logs() {
            let config = log.config();
            if !config.compacts() || log.cleaner.is_busy() {
                continue;
            }
            let tp = log.topic_partition().clone();
            let (ratio, overdue) =
                cleaner::dirty_state(&log, self.persisted_recovery_point(&tp), now)?;
            let due = ratio > 0.0 && ratio >= config.min_cleanable_dirty_ratio();
            // An overdue log comes first, whatever its ratio.
            let rank = if overdue { 2.0 + ratio } else { ratio };
            if (due || overdue) && best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, log));
            }
        }
        let Some((_, log)) = best else {
            return Ok(None);
        };
        let tp = log.topic_partition().clone();
        let throttle = |n| self.cleaner.throttle.acquire(n);
        let stats = cleaner::clean(&log, &self.clean_context(&tp, now, &throttle))?;
        Ok(stats.map(|s| (tp, s)))
    }

    /// Flushes every log, trims preallocated tails and writes the checkpoint, so the next open
    /// scans almost nothing.
    ///
    /// Logs are closed in batches ([`LogManager::close_batch_logs`]), so that a stop with
    /// thousands of partitions costs a few syncs, not a few per partition in turn (at 10 000
    /// partitions those took ~20 s, past a supervisor's stop timeout). A batch is closed in
    /// three steps: every log is prepared (index entries written, tail trimmed, files to sync
    /// taken) under its sync gate; one syncfs makes them all durable (or, for a few logs or
    /// under `GroupSync::PerFile`, each log's own fdatasyncs, as a flusher pass would
    /// choose); each log publishes its flushed offset. After a failed syncfs each log syncs
    /// its own files, so only the logs whose disk failed go offline, as in a flusher pass.
    /// The checkpoint is written once, at the end.
    ///
    /// Goes on past a log that fails to close (it is recovered at the next open) and returns
    /// the first such error after the checkpoint.
    ///
    /// Stops the cleaner first.
    pub fn close(&self) -> Result<()> {
        self.stop_cleaner();
        let mut first_error = None;
        let logs: Vec<Arc<Log>> = self
            .open_logs()
            .into_iter()
            .filter(|log| !log.is_offline())
            .collect();
        let started = Instant::now();
        let mut times = CloseTimes::default();
        for batch in logs.chunks(self.close_batch_logs()) {
            if let Err(e) = self.close_batch(batch, &mut times) {
                first_error.get_or_insert(e);
            }
        }
        let checkpoint_started = Instant::now();
        self.checkpoint()?;
        tracing::info!(
            logs = logs.len(),
            prepare_ms = times.prepare_nanos / 1_000_000,
            sync_ms = times.sync_nanos / 1_000_000,
            publish_ms = times.publish_nanos / 1_000_000,
            checkpoint_ms = checkpoint_started.elapsed().as_millis(),
            total_ms = started.elapsed().as_millis(),
            "storage closed"
        );
        first_error.map_or(Ok(()), Err)
    }

    /// Logs closed together by [`LogManager::close`]. A prepared log holds the descriptors of
    /// the index files it wrote until its sync (two or three beyond its write descriptor,
    /// whether or not the descriptor cache still lists them): a sixteenth of the budget per
    /// batch keeps them within the quarter of the limit left outside the budget. Preparing
    /// all 10 000 logs of issue 13 before syncing any, as the checkpoint after one-by-one
    /// closes also did, ran out of descriptors (EMFILE on half of them).
    fn close_batch_logs(&self) -> usize {
        (self.files.cache.capacity() / 16).clamp(1, CLOSE_BATCH_MAX_LOGS)
    }

    /// One batch of [`LogManager::close`]; returns the first log's error.
    fn close_batch(&self, logs: &[Arc<Log>], times: &mut CloseTimes) -> Result<()> {
        let mut first_error = None;
        let prepare_started = Instant::now();
        let mut prepared = Vec::with_capacity(logs.len());
        for log in logs {
            // Every gate is held until its log is published: no flusher pass syncs a log
            // half closed. Passes only try gates, so holding many cannot deadlock them.
            let leader = log.lead_sync();
            match log.prepare_close(&leader) {
                Ok(Some(p)) => prepared.push((log, leader, p)),
                // Offline or deleted meanwhile: its waiters were answered then.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(partition = %log.topic_partition(), error = %e, "log did not close cleanly");
                    first_error.get_or_insert(e);
                }
            }
        }
        let files: usize = prepared.iter().map(|(_, _, p)| p.file_count()).sum();
        let started = Instant::now();
        times.prepare_nanos += nanos_since(prepare_started);
        let together = if self.files.flusher.close_uses_syncfs(prepared.len(), files) {
            prepared
                .iter()
                .find_map(|(_, _, p)| p.any_file())
                .map(|f| self.files.io.sync_fs(&f))
        } else {
            None
        };
        if let Some(Err(e)) = &together {
            tracing::warn!(error = %e, "syncfs at close failed; syncing each file to find the failing ones");
        }
        let together_nanos = nanos_since(started);
        times.sync_nanos += together_nanos;
        let publish_started = Instant::now();
        for (log, leader, p) in prepared {
            let (synced, nanos) = match &together {
                Some(Ok(())) => (Ok(()), together_nanos),
                Some(Err(_)) | None => {
                    let own = Instant::now();
                    (log.sync_prepared(&p), nanos_since(own))
                }
            };
            if let Err(e) = log.finish_close(leader, p, synced, nanos) {
                tracing::warn!(partition = %log.topic_partition(), error = %e, "log did not close cleanly");
                first_error.get_or_insert(e);
            }
        }
        times.publish_nanos += nanos_since(publish_started);
        first_error.map_or(Ok(()), Err)
    }
}

/// Where [`LogManager::close`] spent its time, logged when it ends: preparing the logs
/// (index writes, tail trims), the shared syncs, publishing (with each log's own syncs when
/// no syncfs ran).
#[derive(Default)]
struct CloseTimes {
    prepare_nanos: u64,
    sync_nanos: u64,
    publish_nanos: u64,
}

impl Drop for LogManager {
    fn drop(&mut self) {
        self.files.flusher.stop();
        for thread in std::mem::take(&mut *self.flusher_threads.lock()) {
            if thread.join().is_err() {
                tracing::error!("flusher thread panicked");
            }
        }
    }
}

/// The partitions whose directories are in `dir`. With `finish_deletions` (at open), removes
/// the directories of deletions a crash interrupted.
fn partition_dirs(dir: &Path, finish_deletions: bool) -> Result<Vec<TopicPartition>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if name.ends_with(DELETE_SUFFIX) {
            if finish_deletions {
                // A deletion interrupted by a crash: finish it.
                let _ = std::fs::remove_dir_all(entry.path());
            }
            continue;
        }
        if let Some(tp) = TopicPartition::from_dir_name(name) {
            out.push(tp);
        }
    }
    Ok(out)
}

/// Three quarters of the soft descriptor limit (the rest is for sockets, directories,
/// index maps being built and the process's own files), which `rill serve` raises to the
/// hard limit at start. Active segments' write descriptors count in it (`fd_cache.rs`).
fn default_max_open_files() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = limit.current.unwrap_or(4096) as usize;
    (soft / 4 * 3).clamp(64, 1 << 20)
}
