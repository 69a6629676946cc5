//! The group commit of a data directory: passes that make every dirty log durable at once, so
//! that N partitions written in the same millisecond share one round of syncs instead of each
//! waiting for its own.
//!
//! Logs queue themselves here when they have something a reader or an acks=all producer waits
//! for (with durable visibility, every append). A pass takes everything queued, leads each
//! log's flush (its sync gate), collects the files to sync, syncs them, and publishes each
//! log's new flushed offset, which wakes its durability waiters and the flush listener (the
//! broker's long-poll fetches). Appends that arrive during a pass queue for the next one, so
//! the delay between an append and its visibility stays near one sync.
//!
//! One slow disk must not stall the others. Passes run on a few worker threads
//! ([`SYNC_WORKERS`]) sharing the queue: normally one pass runs at a time (the next one starts
//! when it ends, with everything queued meanwhile: the group commit, the dirty set taken
//! whole), but once the running pass has been in one sync call (a syncfs, or one log's
//! fdatasync) past the straggler threshold of that kind of call, another worker starts a pass
//! beside it. The thresholds adapt to how long such calls take here (`PassHistory`):
//! [`STRAGGLER_FACTOR`] times the median of the last [`HISTORY_PASSES`] calls of the kind, at
//! least [`STRAGGLER_AFTER`] and at most [`STRAGGLER_AFTER_MAX`]. A fixed 20 ms over the whole
//! pass was below a normal pass over thousands of partitions (issue 13's profile at 10 000):
//! every pass looked stuck, passes overlapped, and overlapping passes synced file by file, one
//! device cache flush per file. A pass that moves on (it prepares more logs, or one of its
//! side-by-side fdatasyncs returns) is in a new call: judged from its start against one
//! fdatasync's threshold, a side-by-side pass of thousands of logs was a straggler after
//! 20 ms, passes started beside it every 20 ms, and under steady writes none ran alone, so
//! none could use syncfs again (issue 13's acks=all collapse, seen in the debug log of the
//! passes: `RILL_LOG=rill_storage::flusher=debug`). No pass waits for a flush already in progress: a log whose
//! sync gate is held (by a running pass, a checkpoint or a close) stays queued and is taken
//! once the gate is released. Within a pass, logs whose last sync was slow are synced last,
//! logs with nothing to sync are published at once, and each log is published, and its gate
//! released, as soon as its own sync returns; a pass uses syncfs only when it runs alone and
//! holds no log known to be slow, since syncfs would also wait for that log's dirty data, or
//! when it holds more than [`SIDE_BY_SIDE_MAX_LOGS`] logs, which would cost more one
//! fdatasync each than a slow log can cost it (`plan`). So a partition whose fdatasync takes
//! seconds delays only itself (and, the first time, the logs after it in its pass).
//!
//! Which logs are slow is known only from syncs measured per file (`charge`): a syncfs
//! covers many logs in one call and cannot say which held it up, so its time is charged to
//! them only when it overran the threshold (then the next pass with them syncs each with its
//! own fdatasync, side by side on the helpers, which finds the slow one and clears the
//! others); a normal syncfs leaves their times as they were. Charging every syncfs to every
//! log it covered marked all of them slow at 10 000 partitions, and before `plan` sent a large
//! pass side by side, the next pass fdatasynced all 10 000 one by one.
//!
//! Measured on this kind of machine (ext4, 4 KiB written per file, median of 60 rounds):
//!
//! | files per pass | fdatasync each | syncfs once |
//! |---|---|---|
//! | 1 | 0.21 ms | 0.32 ms |
//! | 8 | 1.34 ms | 0.31 ms |
//! | 64 | 10.7 ms | 1.15 ms |
//! | 256 | 41.6 ms | 3.4 ms |
//!
//! Again for issue 13 (`/tmp` probe, 16 KiB written per file, median of 7 rounds, load
//! average 10–14 on 2 cores), with fdatasync also on 4 threads at once:
//!
//! | files per pass | fdatasync each | fdatasync, 4 threads | syncfs once |
//! |---|---|---|---|
//! | 1 | 2.05 ms | 1.47 ms | 4.14 ms |
//! | 2 | 2.27 ms | 0.82 ms | 0.48 ms |
//! | 8 | 39.1 ms | 1.04 ms | 0.52 ms |
//! | 64 | 77.5 ms | 15.0 ms | 2.58 ms |
//! | 256 | 302 ms | 71.8 ms | 15.7 ms |
//! | 1024 | 1786 ms | 149 ms | 67.2 ms |
//!
//! The first table was measured on a quiet machine. On a file system shared with other programs
//! syncfs also writes back their dirty data: on the benchmark machine, with other builds
//! running, a syncfs took 120–142 ms where the partition's own fdatasync took under 1 ms, and
//! fdatasyncs issued side by side cost about one (their device waits overlap; 8 files of
//! 4 KiB: 4.1–4.8 ms side by side, 22–26 ms in sequence, syncfs 4.0–4.5 ms, max 120 ms).
//! So by default ([`GroupSync::Parallel`]) a pass of one log fdatasyncs its files, a pass of
//! up to [`SYNC_HELPERS`] logs syncs them side by side on helper threads (`sync_helpers.rs`),
//! and a larger pass uses `syncfs` (`plan` decides). A larger pass that must not use syncfs
//! (it runs beside a stuck pass, or holds a log known to be slow) syncs its logs side by side
//! too, [`SYNC_HELPERS`] at a time, never one by one (at 10 000 partitions an fdatasync per
//! log in sequence took a whole acks=all run into one pass of ~2 MB/s), up to
//! [`SIDE_BY_SIDE_MAX_LOGS`] logs; a larger one uses syncfs anyway. Side by side shares
//! nothing where the file system has no journal, as the benchmark machine's root ext4 has
//! not (kernel stacks of the flusher: `ext4_fsync_nojournal`, then a synchronous inode write
//! and a device cache flush per fdatasync): there a pass of 9 496 logs side by side took
//! 6.0 s. syncfs reports an error without naming the file; the pass then asks every file with
//! fdatasync, which reports the error to the descriptor that wrote, so only the logs whose
//! disk failed go offline.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::file_io::FileIo;
use crate::log::{Log, PreparedFlush};

mod inline;
use crate::sync_helpers::{SyncHelpers, SYNC_HELPERS};
use crate::TopicPartition;
pub(crate) use inline::wake_deferred;
pub use inline::DeferredWakes;

/// Called with a partition whose flushed offset (its high watermark, under durable
/// visibility) advanced. Runs on a flushing thread: it must be quick and must not block.
pub type FlushListener = Arc<dyn Fn(&TopicPartition) + Send + Sync>;

/// How a flush pass with several files makes them durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupSync {
    /// A pass of up to [`SYNC_HELPERS`] logs syncs them side by side (each log's fdatasync
    /// on a helper thread, published as soon as it returns); a larger one uses syncfs as
    /// [`GroupSync::Syncfs`] does. A few side-by-side fdatasyncs overlap their device waits,
    /// so they cost about one sync, and unlike syncfs they do not write back other programs'
    /// dirty data on a shared file system (`sync_helpers.rs` has the figures).
    #[default]
    Parallel,
    /// One `syncfs` for the pass (when it has more than one file, runs alone and holds no log
    /// known to be slow; otherwise side by side above [`SYNC_HELPERS`] logs, in sequence
    /// below), per-file fdatasync only to find the failing files after an error.
    /// Best on a file system that holds the data directory alone; on a shared one it also
    /// writes back other programs' data.
    Syncfs,
    /// One fdatasync per file, in sequence.
    PerFile,
}

/// Worker threads per data directory: at most this many passes run at once, so this many
/// slow partitions (or disks) can be syncing before a healthy one waits behind them.
pub const SYNC_WORKERS: usize = 4;

/// How long a pass may run before another worker starts the next pass beside it. Below it,
/// passes run one after the other (the best grouping); above it the running pass is taken to
/// be stuck on a slow disk. A pass of a few MiB syncs in a few ms on the disks measured
/// (write+fdatasync 0.3–1.4 GB/s, 4 KiB fdatasync 0.2–0.4 ms), so 20 ms is well past a normal
/// pass and small next to a stalled one.
pub const STRAGGLER_AFTER: Duration = Duration::from_millis(20);

/// The most the straggler threshold grows to however long calls have taken lately: a sync
/// call older than this is stuck. (1 s was too low: on the loaded benchmark machine a syncfs
/// over 10 000 partitions written at 100 MB/s took up to 1.7 s, and each pass started beside
/// it synced hundreds of logs one by one.)
pub const STRAGGLER_AFTER_MAX: Duration = Duration::from_secs(5);

/// A pass is a straggler once it has run this many times the median recent pass: a normal
/// pass over 10 000 partitions takes tens of ms here, a stuck fdatasync seconds.
pub const STRAGGLER_FACTOR: u32 = 4;

/// Recent sync calls of one kind whose median sets that kind's straggler threshold.
pub const HISTORY_PASSES: usize = 16;

/// Files a pass needs before one syncfs beats an fdatasync per file (the table above: with one
/// file fdatasync is cheaper, with 8 syncfs is 4x faster).
pub const SYNCFS_MIN_FILES: usize = 2;

/// Most logs a pass that may not use syncfs (it runs beside a stuck pass, or holds a log
/// known to be slow) syncs one fdatasync each, side by side; a larger one uses syncfs anyway.
/// Side by side costs a round of fdatasyncs per [`SYNC_HELPERS`] logs, syncfs one sweep: at
/// 10 000 partitions on the loaded benchmark machine (ext4 without a journal, where each
/// fdatasync writes its inode and flushes the device cache alone), 9 496 logs side by side
/// took 6.0 s, a syncfs over the same backlog 1.4 s; on a quiet disk 2 000 files took 0.10 s
/// side by side and 0.056 s with one syncfs. 256 logs is 16 rounds: tens of ms to ~140 ms
/// here, so the isolation from a slow log stays cheaper than what it protects against.
pub const SIDE_BY_SIDE_MAX_LOGS: usize = 256;

/// How a pass makes its files durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// One syncfs for every file of the pass.
    Syncfs,
    /// Each log's fdatasync on a helper thread, [`SYNC_HELPERS`] at a time, each log
    /// published as its own returns.
    SideBySide,
    /// fdatasync per file in sequence on the pass's worker, known-slow logs last.
    PerFile,
}

/// The one decision of how a pass of `logs` logs (`files` files) syncs. `alone`: no other
/// pass runs (a pass beside another runs because that one is stuck, and a syncfs would wait
/// for the stuck data too); `any_slow`: it holds a log whose last sync was slow (same
/// reason).
///
/// - [`GroupSync::PerFile`]: in sequence, always.
/// - [`GroupSync::Parallel`]: one log in sequence (its own fdatasync); 2 to [`SYNC_HELPERS`]
///   logs side by side; more: syncfs when allowed (alone, no slow log), else side by side.
/// - [`GroupSync::Syncfs`]: syncfs when allowed and the pass has at least
///   [`SYNCFS_MIN_FILES`] files; else side by side when it has more than [`SYNC_HELPERS`]
///   logs, in sequence when fewer.
///
/// A pass of more than [`SIDE_BY_SIDE_MAX_LOGS`] logs is always allowed syncfs (unless so
/// configured): a log per fdatasync would cost it more than a slow log can.
///
/// So no pass of more than [`SYNC_HELPERS`] logs fdatasyncs them one by one unless so
/// configured (at 10 000 partitions that took one acks=all run into a single pass of
/// thousands of fdatasyncs in a row), and none of more than [`SIDE_BY_SIDE_MAX_LOGS`] syncs
/// them one fdatasync each (at 10 000 partitions, passes of ~10 000 logs side by side took
/// 5.3-6.0 s each, and acks=all requests 7 s).
fn plan(group_sync: GroupSync, logs: usize, files: usize, alone: bool, any_slow: bool) -> Plan {
    let syncfs_allowed =
        (logs > SIDE_BY_SIDE_MAX_LOGS || alone && !any_slow) && files >= SYNCFS_MIN_FILES;
    let not_syncfs = if logs > SYNC_HELPERS {
        Plan::SideBySide
    } else {
        Plan::PerFile
    };
    match group_sync {
        GroupSync::PerFile => Plan::PerFile,
        GroupSync::Parallel if logs <= 1 => Plan::PerFile,
        GroupSync::Parallel if logs <= SYNC_HELPERS => Plan::SideBySide,
        GroupSync::Parallel | GroupSync::Syncfs if syncfs_allowed => Plan::Syncfs,
        GroupSync::Parallel | GroupSync::Syncfs => not_syncfs,
    }
}

/// How one log's sync was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncTime {
    /// Its own fdatasyncs, this many ns.
    Own(u64),
    /// A syncfs shared with the rest of the pass, this many ns.
    Shared(u64),
}

/// The log's new last-sync time, if it changes: its own sync time always; a shared syncfs's
/// time only when that overran the straggler threshold (`slow_nanos`), since one of its logs
/// may have held it up and the next pass, syncing them alone, finds out which.
fn charge(time: SyncTime, slow_nanos: u64) -> Option<u64> {
    match time {
        SyncTime::Own(nanos) => Some(nanos),
        SyncTime::Shared(nanos) => (nanos >= slow_nanos).then_some(nanos),
    }
}

/// Durations of the last [`HISTORY_PASSES`] passes: what a normal pass takes on this data
/// directory now, so that a straggler is a pass that takes much longer than that.
#[derive(Debug, Default, Clone)]
struct PassHistory {
    nanos: [u64; HISTORY_PASSES],
    len: usize,
    next: usize,
}

impl PassHistory {
    fn record(&mut self, took: Duration) {
        self.nanos[self.next] = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.next = (self.next + 1) % HISTORY_PASSES;
        self.len = (self.len + 1).min(HISTORY_PASSES);
    }

    fn median(&self) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let mut recent = self.nanos;
        let recent = &mut recent[..self.len];
        recent.sort_unstable();
        Some(Duration::from_nanos(recent[self.len / 2]))
    }

    /// How long a pass may run before another starts beside it.
    fn straggler_after(&self) -> Duration {
        let typical = self.median().unwrap_or(Duration::ZERO);
        typical
            .saturating_mul(STRAGGLER_FACTOR)
            .clamp(STRAGGLER_AFTER, STRAGGLER_AFTER_MAX)
    }
}

#[derive(Default)]
struct Queue {
    logs: Vec<Arc<Log>>,
    stopped: bool,
    /// The sync call each running pass is in now (at most one per worker).
    running: Vec<RunningSync>,
    /// Workers still running.
    workers: usize,
    /// Recent syncfs calls and recent per-log fdatasyncs: each kind of call is a straggler
    /// only against calls of its own kind (a syncfs over 10 000 partitions normally takes far
    /// longer than one log's fdatasync).
    syncfs_history: PassHistory,
    file_history: PassHistory,
    next_pass: u64,
}

/// One running pass and the sync call it is in: a straggler is a pass stuck in one call, not a
/// pass that has many files to sync and keeps publishing them.
#[derive(Debug, Clone, Copy)]
struct RunningSync {
    pass: u64,
    plan: Plan,
    since: Instant,
}

impl Queue {
    /// The history of a kind of sync call (a side-by-side pass waits for fdatasyncs).
    fn history(&self, plan: Plan) -> &PassHistory {
        match plan {
            Plan::Syncfs => &self.syncfs_history,
            Plan::PerFile | Plan::SideBySide => &self.file_history,
        }
    }

    fn history_mut(&mut self, plan: Plan) -> &mut PassHistory {
        match plan {
            Plan::Syncfs => &mut self.syncfs_history,
            Plan::PerFile | Plan::SideBySide => &mut self.file_history,
        }
    }
}

/// The flusher's shared half: the queue the logs push to and the listener. The threads hold
/// it, and so does every log (through `Files`); neither holds the `LogManager`.
pub struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
    listener: RwLock<Option<FlushListener>>,
    group_sync: GroupSync,
    passes: AtomicU64,
    /// Passes started while another was running (a straggler).
    overlapping_passes: AtomicU64,
    syncfs_calls: AtomicU64,
    running: AtomicBool,
    /// Passes syncing now, for readers that give way to syncs ([`SyncActivity`]).
    passes_running: SyncActivity,
    /// Threads that sync a pass's logs side by side ([`Plan::SideBySide`]; none under
    /// [`GroupSync::PerFile`]); started with the workers, stopped when the last one ends.
    helpers: Mutex<Option<Arc<SyncHelpers>>>,
}

/// Whether a flush pass of a data directory is syncing now. The broker's cold reads (catch-up
/// consumers) wait while one is, for a bounded time: a large read queued at the device ahead
/// of a sync's writes delays the sync, and under durable visibility every live consumer and
/// acks=all producer waits for it (issue 13's isolation benchmark: sync p50 0.4 → 1.7 ms, p99
/// 27 → 87 ms during a catch-up read).
#[derive(Debug, Clone, Default)]
pub struct SyncActivity(Arc<AtomicUsize>);

impl SyncActivity {
    /// True while at least one pass is syncing.
    pub fn syncing(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("group_sync", &self.group_sync)
            .field("passes", &self.passes)
            .finish_non_exhaustive()
    }
}

/// Most logs one pass takes, so a pass (and the gates it holds) stays bounded; the rest wait
/// for the next pass. Above 10 000, so one syncfs pass takes the whole dirty set of issue 13's
/// 10 000 partitions.
const MAX_LOGS_PER_PASS: usize = 16_384;

/// A pass preparing its logs tells the others it is moving every this many logs (each a
/// lock of the queue; a stuck one still shows, after one call's threshold).
const PREPARE_PROGRESS_LOGS: usize = 16;

/// The sync gate of one log a pass leads: released as soon as the pass has published that
/// log (so its next flush need not wait for the rest of the pass), or when dropped unused
/// (a log with nothing to flush, or a panic). Owns a handle, so a sync helper can publish it.
struct Gate(Arc<Log>);

impl Drop for Gate {
    fn drop(&mut self) {
        self.0.release_sync();
    }
}

impl Flusher {
    pub(crate) fn new(group_sync: GroupSync) -> Flusher {
        Flusher {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            listener: RwLock::new(None),
            group_sync,
            passes: AtomicU64::new(0),
            overlapping_passes: AtomicU64::new(0),
            syncfs_calls: AtomicU64::new(0),
            running: AtomicBool::new(false),
            passes_running: SyncActivity::default(),
            helpers: Mutex::new(None),
        }
    }

    /// Starts `workers` flusher threads (at least one).
    pub(crate) fn start(
        self: &Arc<Self>,
        io: Arc<dyn FileIo>,
        name: &str,
        workers: usize,
    ) -> std::io::Result<Vec<JoinHandle<()>>> {
        let workers = workers.max(1);
        if self.group_sync != GroupSync::PerFile {
            let helpers = SyncHelpers::start(&format!("{name}-sync"), SYNC_HELPERS);
            *self.helpers.lock() = Some(Arc::new(helpers));
        }
        self.running.store(true, Ordering::Release);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let flusher = Arc::clone(self);
            let io = Arc::clone(&io);
            self.queue.lock().workers += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || flusher.run(&*io));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    self.queue.lock().workers -= 1;
                    if threads.is_empty() {
                        self.running.store(false, Ordering::Release);
                        return Err(e);
                    }
                    tracing::warn!(error = %e, started = threads.len(), "could not start every flusher thread");
                    break;
                }
            }
        }
        Ok(threads)
    }

    /// Queues `log` for the next pass. Returns false when the threads have stopped: the caller
    /// flushes itself.
    pub(crate) fn enqueue(&self, log: Arc<Log>) -> bool {
        let mut queue = self.queue.lock();
        if queue.stopped || !self.running.load(Ordering::Acquire) {
            return false;
        }
        // Bounded: a log is queued at most once at a time (`Log::queued`), so the queue holds
        // at most one entry per open log.
        queue.logs.push(log);
        drop(queue);
        // An I/O-pool thread about to run the pass itself defers the wake-up (`inline.rs`).
        if !inline::defer_wake(self) {
            self.wake.notify_one();
        }
        true
    }

    /// Wakes the workers after a log's sync gate was released: a log they skipped because
    /// its flush was in progress may be taken now.
    pub(crate) fn gate_released(&self) {
        // The lock is taken so a worker that just found the gate held is already waiting (no
        // lost wake). One worker is enough, and none when nothing is queued: waking every
        // idle worker on every release (each log of each pass) cost futex wake-ups and lock
        // spins per pass.
        self.wake_if_queued();
    }

    /// Stops the threads once what is queued is drained.
    pub(crate) fn stop(&self) {
        self.queue.lock().stopped = true;
        self.wake.notify_all();
    }

    pub(crate) fn set_listener(&self, listener: FlushListener) {
        *self.listener.write() = Some(listener);
    }

    /// Tells the listener that `tp`'s flushed offset advanced.
    pub(crate) fn flushed(&self, tp: &TopicPartition) {
        let listener = self.listener.read().clone();
        if let Some(listener) = listener {
            listener(tp);
        }
    }

    /// Flush passes run so far (tests and metrics: fewer passes than appends is the group
    /// commit at work).
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Whether a pass is syncing now, as a handle that outlives no one (it holds a counter,
    /// not the flusher).
    pub fn activity(&self) -> SyncActivity {
        self.passes_running.clone()
    }

    /// Passes started beside a running one that had passed the straggler threshold.
    pub fn overlapping_passes(&self) -> u64 {
        self.overlapping_passes.load(Ordering::Relaxed)
    }

    /// syncfs calls made so far.
    pub fn syncfs_calls(&self) -> u64 {
        self.syncfs_calls.load(Ordering::Relaxed)
    }

    /// Whether a close of `logs` logs (`files` files) makes them durable with one syncfs:
    /// the choice a pass running alone with no slow log makes (`plan`), so the configured
    /// [`GroupSync`] holds at shutdown too. Counted as a syncfs call when it does.
    pub(crate) fn close_uses_syncfs(&self, logs: usize, files: usize) -> bool {
        let syncfs = plan(self.group_sync, logs, files, true, false) == Plan::Syncfs;
        if syncfs {
            self.syncfs_calls.fetch_add(1, Ordering::Relaxed);
        }
        syncfs
    }

    fn run(self: &Arc<Self>, io: &dyn FileIo) {
        let mut queue = self.queue.lock();
        // Bounded by the broker's life: each iteration runs one pass, waits, or exits once
        // stopped and drained.
        loop {
            if queue.logs.is_empty() {
                if queue.stopped {
                    break;
                }
                self.wake.wait(&mut queue);
                continue;
            }
            if let Some(wait) = straggler_wait(&queue) {
                self.wake.wait_for(&mut queue, wait);
                continue;
            }
            let logs = take_free(&mut queue.logs);
            if logs.is_empty() {
                // Every queued log is being flushed; the end of that flush wakes us.
                self.wake.wait(&mut queue);
                continue;
            }
            let (alone, thresholds, pass) = self.begin_pass(&mut queue);
            parking_lot::MutexGuard::unlocked(&mut queue, || {
                let gates: Vec<Gate> = logs.into_iter().map(Gate).collect();
                self.pass(io, gates, alone, thresholds, pass);
            });
            self.end_pass(&mut queue, pass);
            // The gates this pass held are free: logs queued again meanwhile go in this
            // worker's next pass (it loops without waiting); their release woke one worker
            // already (`gate_released`), so no other is woken here, unless stopping: then
            // every worker that went back to waiting must see the drained queue and end.
            if queue.stopped {
                self.wake.notify_all();
            }
        }
        queue.workers -= 1;
        let last = queue.workers == 0;
        if last {
            self.running.store(false, Ordering::Release);
        }
        drop(queue);
        if last {
            // No pass runs any more, so no helper holds a job (or waits for the queue lock).
            if let Some(helpers) = self.helpers.lock().take() {
                helpers.stop();
            }
        }
    }

    /// Registers a pass about to run on the calling thread (a flusher worker, or an I/O-pool
    /// thread's inline pass): whether it runs alone, the thresholds its syncs are judged by,
    /// and its number.
    fn begin_pass(&self, queue: &mut Queue) -> (bool, Thresholds, u64) {
        let alone = queue.running.is_empty();
        let thresholds = Thresholds {
            syncfs: queue.syncfs_history.straggler_after(),
            file: queue.file_history.straggler_after(),
        };
        let pass = queue.next_pass;
        queue.next_pass += 1;
        queue.running.push(RunningSync {
            pass,
            plan: Plan::PerFile,
            since: Instant::now(),
        });
        self.passes_running.0.fetch_add(1, Ordering::AcqRel);
        (alone, thresholds, pass)
    }

    /// Ends what [`Flusher::begin_pass`] registered.
    fn end_pass(&self, queue: &mut Queue, pass: u64) {
        self.passes_running.0.fetch_sub(1, Ordering::AcqRel);
        if let Some(i) = queue.running.iter().position(|r| r.pass == pass) {
            queue.running.swap_remove(i);
        }
    }

    /// Notes that pass `pass` moved on: one of its side-by-side fdatasyncs returned, or it
    /// prepared a few more logs. It is a straggler only once it has not moved for the
    /// threshold of its kind of call, as a pass syncing in sequence is at each log's call.
    /// Without this, a pass over thousands of logs (preparing them takes tens of ms, syncing
    /// them side by side hundreds of rounds of [`SYNC_HELPERS`] fdatasyncs) was a straggler
    /// 20 ms after it began.
    fn progress(&self, pass: u64) {
        let mut queue = self.queue.lock();
        if let Some(r) = queue.running.iter_mut().find(|r| r.pass == pass) {
            r.since = Instant::now();
        }
    }

    /// Notes that pass `pass` starts a sync call of kind `plan`, after one of that kind took
    /// `took` (recorded in its history).
    fn sync_call(&self, pass: u64, plan: Plan, took: Option<(Plan, Duration)>) {
        let mut queue = self.queue.lock();
        if let Some((kind, d)) = took {
            queue.history_mut(kind).record(d);
        }
        if let Some(r) = queue.running.iter_mut().find(|r| r.pass == pass) {
            r.plan = plan;
            r.since = Instant::now();
        }
    }

    /// One group commit over the logs whose sync gates the caller leads. `alone`: no other
    /// pass was running when it started. `thresholds`: when it started, how long a syncfs
    /// and a log's fdatasync may take before they count as slow.
    fn pass(
        self: &Arc<Self>,
        io: &dyn FileIo,
        gates: Vec<Gate>,
        alone: bool,
        thresholds: Thresholds,
        pass: u64,
    ) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        if !alone {
            self.overlapping_passes.fetch_add(1, Ordering::Relaxed);
        }
        let mut prepared: Vec<(Gate, PreparedFlush)> = Vec::with_capacity(gates.len());
        for (i, gate) in gates.into_iter().enumerate() {
            if i % PREPARE_PROGRESS_LOGS == PREPARE_PROGRESS_LOGS - 1 {
                self.progress(pass);
            }
            let log = &gate.0;
            // Cleared before the snapshot below: an append after it queues the log again.
            log.dequeued();
            match log.prepare_flush() {
                // Nothing to sync: queued again by a durability wait after the pass that
                // covered it took it. Published now, not held through the others' syncs: its
                // next flush would otherwise wait behind a slow disk it has nothing to do with.
                Ok(Some(p)) if p.file_count() == 0 => log.finish_flush(Some((p, 0)), Ok(())),
                Ok(Some(p)) => prepared.push((gate, p)),
                // Deleted or offline: its waiters were answered when that happened.
                Ok(None) => {}
                Err(e) => log.finish_flush(None, Err(e)),
            }
        }
        // Known slow logs last, so the others are published before their syncs.
        prepared.sort_by_key(|(gate, _)| gate.0.last_sync_nanos());
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let slow_nanos = nanos(thresholds.file);
        let slow_logs = prepared
            .iter()
            .filter(|(gate, _)| gate.0.last_sync_nanos() >= slow_nanos)
            .count();
        let any_slow = slow_logs > 0;
        let file_count: usize = prepared.iter().map(|(_, p)| p.file_count()).sum();
        let started = Instant::now();
        let mut chosen = plan(self.group_sync, prepared.len(), file_count, alone, any_slow);
        tracing::debug!(
            pass,
            logs = prepared.len(),
            slow_logs,
            alone,
            plan = ?chosen,
            syncfs_straggler_ms = thresholds.syncfs.as_millis(),
            file_straggler_ms = thresholds.file.as_millis(),
            "flush pass starts"
        );
        let _ended = PassEnd { pass, started };
        let helpers = match chosen {
            Plan::SideBySide => self.available_helpers(),
            Plan::Syncfs | Plan::PerFile => None,
        };
        if chosen == Plan::SideBySide && helpers.is_none() {
            // No helper threads (the system refused them): one by one on this worker.
            chosen = Plan::PerFile;
        }
        let shared_slow = nanos(thresholds.syncfs);
        if let Some(helpers) = helpers {
            self.sync_call(pass, Plan::SideBySide, None);
            let logs = prepared.len();
            let jobs = prepared
                .into_iter()
                .map(|(gate, p)| {
                    let flusher = Arc::clone(self);
                    Box::new(move || {
                        publish(gate, p, None, 0, shared_slow, started);
                        flusher.progress(pass);
                    }) as Box<dyn FnOnce() + Send>
                })
                .collect();
            // Jobs past the free helpers wait in its channel: at most SYNC_HELPERS of this
            // pass's fdatasyncs run at once.
            helpers.run_all(jobs);
            // A pass of up to SYNC_HELPERS logs costs about one fdatasync: a sample of what
            // one takes here. A larger one (a fallback) says nothing about one call.
            if logs <= SYNC_HELPERS {
                self.queue.lock().file_history.record(started.elapsed());
            }
            return;
        }
        let together = match chosen {
            Plan::Syncfs => prepared.iter().find_map(|(_, p)| p.any_file()).map(|f| {
                self.syncfs_calls.fetch_add(1, Ordering::Relaxed);
                self.sync_call(pass, Plan::Syncfs, None);
                io.sync_fs(&f)
            }),
            Plan::PerFile | Plan::SideBySide => None,
        };
        let together_nanos = nanos_since(started);
        let mut took = together.as_ref().map(|_| (Plan::Syncfs, started.elapsed()));
        for (gate, p) in prepared {
            let synced = together
                .as_ref()
                .map(|r| r.as_ref().map_err(|_| ()).copied());
            if !matches!(synced, Some(Ok(()))) {
                // Its own fdatasync next: that is the call this pass is in now.
                self.sync_call(pass, Plan::PerFile, took.take());
            }
            let own = Instant::now();
            let own_sync = !matches!(synced, Some(Ok(())));
            publish(gate, p, synced, together_nanos, shared_slow, started);
            if own_sync {
                took = Some((Plan::PerFile, own.elapsed()));
            }
        }
        if let Some((kind, d)) = took {
            self.queue.lock().history_mut(kind).record(d);
        }
        if let Some(Err(e)) = together {
            tracing::warn!(error = %e, "syncfs failed; synced each file to find the failing ones");
        }
    }

    /// The helper threads, if they run and take jobs.
    fn available_helpers(&self) -> Option<Arc<SyncHelpers>> {
        self.helpers
            .lock()
            .clone()
            .filter(|helpers| helpers.available())
    }
}

/// Makes one log of a pass durable and publishes it: `synced` is the outcome of the pass's
/// syncfs when it ran one (then only a failure is looked into, by syncing the log's own
/// files, since fdatasync reports a writeback error to every descriptor that had not seen
/// it); `None` syncs the log's files now. Records the log's sync time as `charge` says
/// (`shared_slow`: the syncfs threshold). Releases the log's gate once published, so its
/// next flush may start in another pass.
fn publish(
    gate: Gate,
    p: PreparedFlush,
    synced: Option<Result<(), ()>>,
    together_nanos: u64,
    shared_slow: u64,
    started: Instant,
) {
    let log = &gate.0;
    let own = Instant::now();
    let (result, time) = match synced {
        // syncfs made everything durable, directory entries included.
        Some(Ok(())) => (Ok(()), SyncTime::Shared(together_nanos)),
        Some(Err(())) | None => {
            let result = log.sync_prepared(&p);
            (result, SyncTime::Own(nanos_since(own)))
        }
    };
    if let Some(nanos) = charge(time, shared_slow) {
        log.set_last_sync_nanos(nanos);
    }
    log.finish_flush(Some((p, nanos_since(started))), result);
    drop(gate);
}

/// Logs (at debug level) how long a pass took, whichever way it ends: with the "flush pass
/// starts" line, what showed issue 13's passes stuck beside each other.
struct PassEnd {
    pass: u64,
    started: Instant,
}

impl Drop for PassEnd {
    fn drop(&mut self) {
        let ms = self.started.elapsed().as_millis();
        tracing::debug!(pass = self.pass, ms, "flush pass ends");
    }
}

pub(crate) fn nanos_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// How long a syncfs and one log's fdatasync may take before they count as slow.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    syncfs: Duration,
    file: Duration,
}

/// How long to wait before starting a pass beside the running ones, if at all: `None` when
/// none runs, every running one has been in its current sync call past the threshold of
/// that kind of call, or the flusher is stopping.
fn straggler_wait(queue: &Queue) -> Option<Duration> {
    if queue.stopped {
        return None;
    }
    queue
        .running
        .iter()
        .filter_map(|r| {
            queue
                .history(r.plan)
                .straggler_after()
                .checked_sub(r.since.elapsed())
        })
        .filter(|d| !d.is_zero())
        .max()
}

/// Takes up to [`MAX_LOGS_PER_PASS`] queued logs whose flush is not in progress, leading
/// their sync gates; the others stay queued.
fn take_free(queued: &mut Vec<Arc<Log>>) -> Vec<Arc<Log>> {
    let mut taken = Vec::with_capacity(queued.len().min(MAX_LOGS_PER_PASS));
    let mut i = 0;
    // Bounded by the queue's length: each step takes an entry or moves past one.
    while i < queued.len() && taken.len() < MAX_LOGS_PER_PASS {
        if queued[i].try_lead_sync() {
            taken.push(queued.swap_remove(i));
        } else {
            i += 1;
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncfs_only_for_a_pass_of_several_files_alone_with_no_slow_log() {
        use GroupSync::{PerFile as Conf, Syncfs as Fs};
        let many = 10_000;
        assert_eq!(plan(Fs, 2, SYNCFS_MIN_FILES, true, false), Plan::Syncfs);
        assert_eq!(plan(Fs, many, many, true, false), Plan::Syncfs);
        assert_eq!(
            plan(Fs, 1, SYNCFS_MIN_FILES - 1, true, false),
            Plan::PerFile,
            "one file: fdatasync"
        );
        assert_eq!(
            plan(Fs, 8, 8, false, false),
            Plan::PerFile,
            "a few logs beside a stuck pass"
        );
        assert_eq!(
            plan(Conf, many, many, true, false),
            Plan::PerFile,
            "configured per file"
        );
    }

    #[test]
    fn parallel_syncs_one_log_alone_a_few_side_by_side_and_many_with_syncfs() {
        use GroupSync::Parallel as Par;
        assert_eq!(plan(Par, 1, 2, true, false), Plan::PerFile);
        assert_eq!(plan(Par, 2, 2, true, false), Plan::SideBySide);
        assert_eq!(
            plan(Par, SYNC_HELPERS, SYNC_HELPERS, true, true),
            Plan::SideBySide,
            "a slow log among a few"
        );
        assert_eq!(
            plan(Par, SYNC_HELPERS + 1, SYNC_HELPERS + 1, true, false),
            Plan::Syncfs
        );
    }

    /// Issue 13's acks=all collapse: an overrun syncfs marked all 10 000 logs of its pass
    /// slow, and the next pass fdatasynced them one by one; then passes of ~10 000 logs beside
    /// a stuck one synced side by side, 6 s each. Whatever the rule that rejects syncfs (a
    /// slow log, a stuck pass beside), a pass of up to SIDE_BY_SIDE_MAX_LOGS logs syncs side
    /// by side, a larger one uses syncfs.
    #[test]
    fn a_large_pass_that_may_not_use_syncfs_never_syncs_one_by_one() {
        for group_sync in [GroupSync::Parallel, GroupSync::Syncfs] {
            for (alone, any_slow) in [(true, true), (false, false), (false, true)] {
                assert_eq!(
                    plan(group_sync, 10_000, 10_000, alone, any_slow),
                    Plan::Syncfs,
                    "{group_sync:?} alone={alone} any_slow={any_slow}"
                );
                assert_eq!(
                    plan(
                        group_sync,
                        SIDE_BY_SIDE_MAX_LOGS + 1,
                        SIDE_BY_SIDE_MAX_LOGS + 1,
                        alone,
                        any_slow
                    ),
                    Plan::Syncfs
                );
                assert_eq!(
                    plan(
                        group_sync,
                        SIDE_BY_SIDE_MAX_LOGS,
                        SIDE_BY_SIDE_MAX_LOGS,
                        alone,
                        any_slow
                    ),
                    Plan::SideBySide
                );
                assert_eq!(
                    plan(
                        group_sync,
                        SYNC_HELPERS + 1,
                        SYNC_HELPERS + 1,
                        alone,
                        any_slow
                    ),
                    Plan::SideBySide
                );
            }
        }
    }

    #[test]
    fn a_syncfs_is_charged_to_its_logs_only_when_it_overran() {
        let slow = 20_000_000;
        assert_eq!(
            charge(SyncTime::Own(5), slow),
            Some(5),
            "own time, even fast"
        );
        assert_eq!(charge(SyncTime::Own(slow * 3), slow), Some(slow * 3));
        assert_eq!(
            charge(SyncTime::Shared(slow - 1), slow),
            None,
            "a normal syncfs"
        );
        assert_eq!(
            charge(SyncTime::Shared(slow), slow),
            Some(slow),
            "an overrun syncfs"
        );
    }

    #[test]
    fn a_straggler_is_a_pass_stuck_in_one_call_of_its_kind() {
        let mut q = Queue::default();
        assert_eq!(straggler_wait(&q), None, "nothing runs: start now");
        let ago = |ms: u64| Instant::now() - Duration::from_millis(ms);
        q.running.push(RunningSync {
            pass: 0,
            plan: Plan::PerFile,
            since: ago(0),
        });
        assert!(straggler_wait(&q).is_some(), "a fresh fdatasync: wait");
        // A pass that has run for long but has just begun the fdatasync of its next log
        // (it keeps publishing logs) is not a straggler.
        q.running[0].since = ago(5);
        assert!(straggler_wait(&q).is_some());
        q.running[0].since = ago(25);
        assert_eq!(
            straggler_wait(&q),
            None,
            "one fdatasync past the 20 ms floor"
        );
        // syncfs calls here normally take 30 ms: one of 25 ms is normal, of 130 ms stuck.
        for _ in 0..HISTORY_PASSES {
            q.syncfs_history.record(Duration::from_millis(30));
        }
        q.running[0].plan = Plan::Syncfs;
        assert!(straggler_wait(&q).is_some(), "a normal syncfs");
        q.running[0].since = ago(130);
        assert_eq!(straggler_wait(&q), None, "4 x the median syncfs");
        // Beside it, a second pass in a fresh call: the next waits for that one too.
        q.running.push(RunningSync {
            pass: 1,
            plan: Plan::PerFile,
            since: ago(0),
        });
        assert!(straggler_wait(&q).is_some());
        q.stopped = true;
        assert_eq!(straggler_wait(&q), None, "stopping: drain now");
    }

    #[test]
    fn the_straggler_threshold_follows_the_median_pass_within_bounds() {
        let mut h = PassHistory::default();
        assert_eq!(h.straggler_after(), STRAGGLER_AFTER, "no passes yet");
        for _ in 0..HISTORY_PASSES {
            h.record(Duration::from_micros(300));
        }
        assert_eq!(
            h.straggler_after(),
            STRAGGLER_AFTER,
            "fast passes: the floor"
        );
        for _ in 0..HISTORY_PASSES {
            h.record(Duration::from_millis(30));
        }
        assert_eq!(
            h.straggler_after(),
            Duration::from_millis(120),
            "4 x 30 ms passes"
        );
        // A few stuck passes do not move the median.
        for _ in 0..HISTORY_PASSES / 2 - 1 {
            h.record(Duration::from_secs(5));
        }
        assert_eq!(h.straggler_after(), Duration::from_millis(120));
        // Calls this slow for a while: capped, a call past 5 s is stuck.
        for _ in 0..HISTORY_PASSES {
            h.record(Duration::from_millis(2_000));
        }
        assert_eq!(h.straggler_after(), STRAGGLER_AFTER_MAX);
    }
}
