//! The queue between a thread pool's callers and its threads: jobs in a `VecDeque` under one
//! mutex, idle threads parked on a condvar, one of them woken per job.
//!
//! Why not `Mutex<mpsc::Receiver>` shared by the threads (what the sync helpers and the
//! broker's I/O pool had): one thread blocks inside `recv` holding the mutex while the others
//! queue on the mutex, so every job cost two wake-ups (the receiver, then the next thread to
//! take the mutex, which blocks in `recv` again), and the threads queued on the mutex spun
//! with `sched_yield` before sleeping. Here a job costs one wake-up, none when a thread is
//! busy (it takes the next job when it ends), and no thread spins on a held lock for long:
//! the lock is held only to push or pop.
//!
//! Unbounded by itself: each pool bounds what it pushes (the I/O pool with a semaphore, the
//! sync helpers by the logs of the passes running).

use std::collections::VecDeque;

use parking_lot::{Condvar, Mutex};

/// A job a pool thread runs.
pub type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Jobs {
    queued: VecDeque<Job>,
    closed: bool,
}

/// Jobs waiting for a pool's threads; see the module doc.
#[derive(Default)]
pub struct JobQueue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jobs = self.jobs.lock();
        f.debug_struct("JobQueue")
            .field("queued", &jobs.queued.len())
            .field("closed", &jobs.closed)
            .finish()
    }
}

impl JobQueue {
    /// Queues `job` and wakes one idle thread (none is woken when all are busy: the first to
    /// finish takes it).
    ///
    /// # Errors
    /// Gives the job back, unrun, once the queue is closed.
    pub fn push(&self, job: Job) -> Result<(), Job> {
        {
            let mut jobs = self.jobs.lock();
            if jobs.closed {
                return Err(job);
            }
            jobs.queued.push_back(job);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Refuses further jobs; the threads end once the queued ones are done.
    pub fn close(&self) {
        self.jobs.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether [`JobQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.jobs.lock().closed
    }

    /// A pool thread's loop: runs jobs in order until the queue is closed and empty.
    pub fn work(&self) {
        // Bounded by the pool's life: ends once closed and drained.
        while let Some(job) = self.next() {
            job();
        }
    }

    /// The next job, waiting for one; `None` once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut jobs = self.jobs.lock();
        // Bounded: each wake-up either finds a job, finds the queue closed, or waits again
        // (a spurious wake-up).
        loop {
            if let Some(job) = jobs.queued.pop_front() {
                return Some(job);
            }
            if jobs.closed {
                return None;
            }
            self.ready.wait(&mut jobs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Every pushed job runs exactly once across the threads, closing drains the queue, and a
    /// closed queue gives jobs back.
    #[test]
    fn runs_every_job_once_and_drains_on_close() {
        let queue = Arc::new(JobQueue::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || queue.work())
            })
            .collect();
        for _ in 0..1000 {
            let ran = Arc::clone(&ran);
            let pushed = queue.push(Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }));
            assert!(pushed.is_ok());
        }
        queue.close();
        assert!(queue.is_closed());
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1000);
        let refused = queue.push(Box::new(|| panic!("ran after close")));
        assert!(refused.is_err());
        assert_eq!(ran.load(Ordering::SeqCst), 1000);
    }
}
