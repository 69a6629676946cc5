//! The group commit of a data directory: one thread that makes every dirty log durable in one
//! pass, so that N partitions written in the same millisecond share one round of syncs instead
//! of each waiting for its own.
//!
//! Logs queue themselves here when they have something a reader or an acks=all producer waits
//! for (with durable visibility, every append). A pass takes everything queued, leads each
//! log's flush (its sync gate), collects the files to sync, syncs them, and publishes each
//! log's new flushed offset, which wakes its durability waiters and the flush listener (the
//! broker's long-poll fetches). Appends that arrive during a pass queue for the next one, so
//! the delay between an append and its visibility stays near one sync.
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
//! So a pass with one file uses fdatasync and a pass with more uses `syncfs`
//! ([`GroupSync::Syncfs`]). syncfs reports an error without naming the file; the pass then
//! asks every file with fdatasync, which reports the error to the descriptor that wrote, so
//! only the logs whose disk failed go offline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::file_io::FileIo;
use crate::log::{Log, PreparedFlush};
use crate::TopicPartition;

/// Called with a partition whose flushed offset (its high watermark, under durable
/// visibility) advanced. Runs on the flushing thread: it must be quick and must not block.
pub type FlushListener = Arc<dyn Fn(&TopicPartition) + Send + Sync>;

/// How a flush pass with several files makes them durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupSync {
    /// One `syncfs` for the pass (when it has more than one file), per-file fdatasync only to
    /// find the failing files after an error. Best on a file system that holds the data
    /// directory alone; on a shared one it also writes back other programs' data.
    #[default]
    Syncfs,
    /// One fdatasync per file, in sequence.
    PerFile,
}

#[derive(Default)]
struct Queue {
    logs: Vec<Arc<Log>>,
    stopped: bool,
}

/// The flusher's shared half: the queue the logs push to and the listener. The thread holds
/// it, and so does every log (through `Files`); neither holds the `LogManager`.
pub struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
    listener: RwLock<Option<FlushListener>>,
    group_sync: GroupSync,
    passes: AtomicU64,
    syncfs_calls: AtomicU64,
    running: AtomicBool,
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

impl Flusher {
    pub(crate) fn new(group_sync: GroupSync) -> Flusher {
        Flusher {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            listener: RwLock::new(None),
            group_sync,
            passes: AtomicU64::new(0),
            syncfs_calls: AtomicU64::new(0),
            running: AtomicBool::new(false),
        }
    }

    /// Starts the flusher thread.
    pub(crate) fn start(
        self: &Arc<Self>,
        io: Arc<dyn FileIo>,
        name: String,
    ) -> std::io::Result<JoinHandle<()>> {
        self.running.store(true, Ordering::Release);
        let flusher = Arc::clone(self);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || flusher.run(&*io))
    }

    /// Queues `log` for the next pass. Returns false when the thread has stopped: the caller
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
        self.wake.notify_one();
        true
    }

    /// Stops the thread after the pass that drains what is queued.
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

    /// syncfs calls made so far.
    pub fn syncfs_calls(&self) -> u64 {
        self.syncfs_calls.load(Ordering::Relaxed)
    }

    fn run(&self, io: &dyn FileIo) {
        // Bounded by the broker's life: each iteration runs one pass or exits once stopped.
        loop {
            let logs = {
                let mut queue = self.queue.lock();
                while queue.logs.is_empty() && !queue.stopped {
                    self.wake.wait(&mut queue);
                }
                if queue.logs.is_empty() {
                    self.running.store(false, Ordering::Release);
                    return;
                }
                let take = queue.logs.len().min(MAX_LOGS_PER_PASS);
                queue.logs.drain(..take).collect::<Vec<_>>()
            };
            self.pass(io, &logs);
        }
    }

    /// One group commit over `logs`.
    fn pass(&self, io: &dyn FileIo, logs: &[Arc<Log>]) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let mut prepared: Vec<(&Arc<Log>, PreparedFlush)> = Vec::with_capacity(logs.len());
        let mut gates = Vec::with_capacity(logs.len());
        for log in logs {
            // Cleared before the snapshot below: an append after it queues the log again.
            log.dequeued();
            let gate = log.lead_sync();
            match log.prepare_flush() {
                Ok(Some(p)) => {
                    prepared.push((log, p));
                    gates.push(gate);
                }
                // Deleted or offline: its waiters were answered when that happened.
                Ok(None) => {}
                Err(e) => log.finish_flush(None, Err(e)),
            }
        }
        let file_count: usize = prepared.iter().map(|(_, p)| p.file_count()).sum();
        let started = std::time::Instant::now();
        let together = if file_count > 1 && self.group_sync == GroupSync::Syncfs {
            let any = prepared.iter().find_map(|(_, p)| p.any_file());
            any.map(|f| {
                self.syncfs_calls.fetch_add(1, Ordering::Relaxed);
                io.sync_fs(&f)
            })
        } else {
            None
        };
        for (log, p) in prepared {
            let result = match &together {
                // syncfs made everything durable, directory entries included.
                Some(Ok(())) => Ok(()),
                // Find out which files failed (fdatasync reports a writeback error to every
                // descriptor that had not seen it), or sync them one by one.
                Some(Err(_)) | None => log.sync_prepared(&p),
            };
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            log.finish_flush(Some((p, nanos)), result);
        }
        if let Some(Err(e)) = together {
            tracing::warn!(error = %e, "syncfs failed; synced each file to find the failing ones");
        }
        drop(gates);
    }
}
