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
//! when it ends, with everything queued meanwhile: the group commit), but once the running
//! pass is older than [`STRAGGLER_AFTER`] another worker starts a pass beside it. No pass
//! waits for a flush already in progress: a log whose sync gate is held (by a running pass, a
//! checkpoint or a close) stays queued and is taken once the gate is released. Within a pass,
//! logs whose last sync was slow are synced last, logs with nothing to sync are published at
//! once, and each log is published, and its gate released, as soon as its own sync returns; a pass uses syncfs only when it runs alone and holds no log known to be slow,
//! since syncfs would also wait for that log's dirty data. So a partition whose fdatasync
//! takes seconds delays only itself (and, the first time, the logs after it in its pass).
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
//! That table was measured on a quiet machine. On a file system shared with other programs
//! syncfs also writes back their dirty data: on the benchmark machine, with other builds
//! running, a syncfs took 120–142 ms where the partition's own fdatasync took under 1 ms, and
//! fdatasyncs issued side by side cost about one (they share the journal commit; 8 files of
//! 4 KiB: 4.1–4.8 ms side by side, 22–26 ms in sequence, syncfs 4.0–4.5 ms, max 120 ms).
//! So by default ([`GroupSync::Parallel`]) a pass of one log fdatasyncs its files, a pass of
//! up to [`SYNC_HELPERS`] logs syncs them side by side on helper threads (`sync_helpers.rs`),
//! and a larger pass uses `syncfs`. syncfs reports an error without naming the file; the
//! pass then asks every file with fdatasync, which reports the error to the descriptor that
//! wrote, so only the logs whose disk failed go offline.

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
    /// [`GroupSync::Syncfs`] does. Side-by-side fdatasyncs share the journal commit, so they
    /// cost about one sync, and unlike syncfs they do not write back other programs' dirty
    /// data on a shared file system (`sync_helpers.rs` has the figures).
    #[default]
    Parallel,
    /// One `syncfs` for the pass (when it has more than one file, runs alone and holds no log
    /// known to be slow), per-file fdatasync only to find the failing files after an error.
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

#[derive(Default)]
struct Queue {
    logs: Vec<Arc<Log>>,
    stopped: bool,
    /// When each pass running now started (at most one per worker).
    running: Vec<Instant>,
    /// Workers still running.
    workers: usize,
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
    /// Threads that sync a pass's logs side by side ([`GroupSync::Parallel`]); started with
    /// the workers, stopped when the last one ends.
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
/// for the next pass.
const MAX_LOGS_PER_PASS: usize = 4096;

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
        if self.group_sync == GroupSync::Parallel {
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

    /// Passes started beside a running one that had passed [`STRAGGLER_AFTER`].
    pub fn overlapping_passes(&self) -> u64 {
        self.overlapping_passes.load(Ordering::Relaxed)
    }

    /// syncfs calls made so far.
    pub fn syncfs_calls(&self) -> u64 {
        self.syncfs_calls.load(Ordering::Relaxed)
    }

    fn run(&self, io: &dyn FileIo) {
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
            let alone = queue.running.is_empty();
            let started = Instant::now();
            queue.running.push(started);
            self.passes_running.0.fetch_add(1, Ordering::AcqRel);
            parking_lot::MutexGuard::unlocked(&mut queue, || {
                let gates: Vec<Gate> = logs.into_iter().map(Gate).collect();
                self.pass(io, gates, alone);
            });
            self.passes_running.0.fetch_sub(1, Ordering::AcqRel);
            if let Some(i) = queue.running.iter().position(|t| *t == started) {
                queue.running.swap_remove(i);
            }
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

    /// One group commit over the logs whose sync gates the caller leads. `alone`: no other
    /// pass was running when it started.
    fn pass(&self, io: &dyn FileIo, gates: Vec<Gate>, alone: bool) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        if !alone {
            self.overlapping_passes.fetch_add(1, Ordering::Relaxed);
        }
        let mut prepared: Vec<(Gate, PreparedFlush)> = Vec::with_capacity(gates.len());
        for gate in gates {
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
        let slow_nanos = u64::try_from(STRAGGLER_AFTER.as_nanos()).unwrap_or(u64::MAX);
        let any_slow = prepared
            .iter()
            .any(|(gate, _)| gate.0.last_sync_nanos() >= slow_nanos);
        let file_count: usize = prepared.iter().map(|(_, p)| p.file_count()).sum();
        let started = Instant::now();
        if let Some(helpers) = self.side_by_side(prepared.len()) {
            let jobs = prepared
                .into_iter()
                .map(|(gate, p)| {
                    Box::new(move || publish(gate, p, None, 0, started)) as Box<dyn FnOnce() + Send>
                })
                .collect();
            helpers.run_all(jobs);
            return;
        }
        let syncfs_mode = match self.group_sync {
            GroupSync::Syncfs => true,
            GroupSync::Parallel => prepared.len() > SYNC_HELPERS,
            GroupSync::PerFile => false,
        };
        let together = if file_count > 1 && syncfs_mode && alone && !any_slow {
            let any = prepared.iter().find_map(|(_, p)| p.any_file());
            any.map(|f| {
                self.syncfs_calls.fetch_add(1, Ordering::Relaxed);
                io.sync_fs(&f)
            })
        } else {
            None
        };
        let together_nanos = nanos_since(started);
        for (gate, p) in prepared {
            let synced = together
                .as_ref()
                .map(|r| r.as_ref().map_err(|_| ()).copied());
            publish(gate, p, synced, together_nanos, started);
        }
        if let Some(Err(e)) = together {
            tracing::warn!(error = %e, "syncfs failed; synced each file to find the failing ones");
        }
    }
}

impl Flusher {
    /// The helpers to sync a pass of `logs` logs side by side, if this pass should: under
    /// [`GroupSync::Parallel`], with more than one log and at most [`SYNC_HELPERS`].
    fn side_by_side(&self, logs: usize) -> Option<Arc<SyncHelpers>> {
        if self.group_sync != GroupSync::Parallel || !(2..=SYNC_HELPERS).contains(&logs) {
            return None;
        }
        self.helpers
            .lock()
            .clone()
            .filter(|helpers| helpers.available())
    }
}

/// Makes one log of a pass durable and publishes it: `synced` is the outcome of the pass's
/// syncfs when it ran one (then only a failure is looked into, by syncing the log's own
/// files, since fdatasync reports a writeback error to every descriptor that had not seen
/// it); `None` syncs the log's files now. Releases the log's gate once published, so its next
/// flush may start in another pass.
fn publish(
    gate: Gate,
    p: PreparedFlush,
    synced: Option<Result<(), ()>>,
    together_nanos: u64,
    started: Instant,
) {
    let log = &gate.0;
    let own = Instant::now();
    let result = match synced {
        // syncfs made everything durable, directory entries included.
        Some(Ok(())) => Ok(()),
        Some(Err(())) | None => log.sync_prepared(&p),
    };
    log.set_last_sync_nanos(together_nanos.saturating_add(nanos_since(own)));
    log.finish_flush(Some((p, nanos_since(started))), result);
    drop(gate);
}

fn nanos_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// How long to wait before starting a pass beside the running ones, if at all: `None` when
/// none runs, every running one has run past [`STRAGGLER_AFTER`], or the flusher is
/// stopping.
fn straggler_wait(queue: &Queue) -> Option<Duration> {
    if queue.stopped {
        return None;
    }
    let newest = queue.running.iter().max()?;
    STRAGGLER_AFTER
        .checked_sub(newest.elapsed())
        .filter(|d| !d.is_zero())
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
