//! Threads that let one flush pass sync its logs side by side: each log's fdatasync (and
//! directory syncs) runs on a helper, and the pass waits for all of them.
//!
//! Why not `syncfs`: on a file system shared with other programs, syncfs also writes back
//! their dirty data. On the benchmark machine (a shared root file system, other builds
//! running) one syncfs of a pass with a single new partition took 142 ms, while that
//! partition's fdatasync took under 1 ms. fdatasyncs issued at once overlap their waits on
//! the device, so a few of them cost about one (8 files of 4 KiB: p50 4.1–4.8 ms side by side, 22–26
//! ms one after the other, syncfs 4.0–4.5 ms with a 120 ms maximum), and each writes back
//! only its own file. They do not share a journal commit on the benchmark machine, whose root
//! ext4 has no journal: there each writes its own inode and flushes the device cache, which
//! is why thousands of them side by side cost more than one syncfs (`flusher.rs`).
//!
//! Bounded: [`SYNC_HELPERS`] threads per data directory; a pass with more logs than that
//! uses syncfs (or syncs in sequence) instead. Jobs beyond the free helpers wait in the
//! queue (`job_queue.rs`: one wake-up per job), which holds at most the logs of the passes
//! running (each pass waits for its own jobs before it ends).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::job_queue::{Job, JobQueue};

/// Helper threads per data directory, and the most logs a pass syncs side by side.
pub const SYNC_HELPERS: usize = 16;

/// The helper threads of one data directory's flusher.
pub(crate) struct SyncHelpers {
    /// Closed when no helper thread started, or once stopped.
    queue: Arc<JobQueue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Counts a pass's jobs down; the pass waits for zero.
#[derive(Default)]
struct Latch {
    left: Mutex<usize>,
    done: Condvar,
}

/// Counts its job done when dropped, so a panicking job does not leave the pass waiting.
struct Done(Arc<Latch>);

impl Drop for Done {
    fn drop(&mut self) {
        let mut left = self.0.left.lock();
        *left -= 1;
        if *left == 0 {
            self.0.done.notify_all();
        }
    }
}

impl SyncHelpers {
    /// Starts up to `count` threads named `name-N`; fewer (even none) when the system refuses
    /// threads, in which case [`SyncHelpers::run_all`] runs jobs on the caller.
    pub(crate) fn start(name: &str, count: usize) -> SyncHelpers {
        let queue = Arc::new(JobQueue::default());
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || queue.work());
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    tracing::warn!(error = %e, started = threads.len(), "could not start every sync helper");
                    break;
                }
            }
        }
        if threads.is_empty() {
            queue.close();
        }
        SyncHelpers {
            queue,
            threads: Mutex::new(threads),
        }
    }

    /// Whether jobs run side by side (helpers exist and have not been stopped).
    pub(crate) fn available(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Runs every job, side by side on the helpers, and returns once all have ended (a
    /// panicking job included: it is reported and counted done). Jobs the helpers cannot take
    /// (stopped) run on the caller.
    pub(crate) fn run_all(&self, jobs: Vec<Job>) {
        let latch = Arc::new(Latch {
            left: Mutex::new(jobs.len()),
            done: Condvar::new(),
        });
        let mut local = Vec::new();
        for job in jobs {
            let done = Done(Arc::clone(&latch));
            let wrapped: Job = Box::new(move || {
                let _done = done;
                if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a sync helper job panicked");
                }
            });
            if let Err(refused) = self.queue.push(wrapped) {
                local.push(refused);
            }
        }
        for job in local {
            job();
        }
        let mut left = latch.left.lock();
        // Bounded: every job counts down once, when it ends or unwinds.
        while *left > 0 {
            latch.done.wait(&mut left);
        }
    }

    /// Ends the threads once their queued jobs are done; later `run_all` calls run on the
    /// caller.
    pub(crate) fn stop(&self) {
        self.queue.close();
        let me = std::thread::current().id();
        for thread in std::mem::take(&mut *self.threads.lock()) {
            if thread.thread().id() == me {
                continue;
            }
            if thread.join().is_err() {
                tracing::error!("a sync helper panicked outside a job");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Barrier};

    /// Jobs really run at the same time: each waits at a barrier sized for all of them, which
    /// only opens if every one is running (one after the other, the first would wait forever;
    /// the barrier's wait is bounded by the test's own timeout thread).
    #[test]
    fn jobs_run_side_by_side_and_the_caller_waits_for_all() {
        let helpers = SyncHelpers::start("test-sync", 8);
        assert!(helpers.available());
        let barrier = Arc::new(Barrier::new(8));
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let jobs: Vec<Job> = (0..8)
            .map(|_| {
                let (barrier, ran) = (Arc::clone(&barrier), Arc::clone(&ran));
                Box::new(move || {
                    barrier.wait();
                    ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }) as Job
            })
            .collect();
        let runner = std::thread::spawn(move || {
            helpers.run_all(jobs);
            tx.send(()).unwrap();
            helpers
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("jobs did not run side by side");
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 8);
        let helpers = runner.join().unwrap();
        // A panicking job is counted done; stopped helpers run jobs on the caller.
        helpers.run_all(vec![Box::new(|| panic!("boom")) as Job]);
        helpers.stop();
        assert!(!helpers.available());
        let caller = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        helpers.run_all(vec![
            Box::new(move || tx.send(std::thread::current().id()).unwrap()) as Job,
        ]);
        assert_eq!(rx.recv().unwrap(), caller);
    }
}
