//! The write side's disk pool: a few dedicated threads that run produce appends (validation
//! with its decompression and CRC, pwritev, fallocate, rolls, index writes) and ListOffsets
//! (index lookups, a batch decompressed), so that none of it runs on a tokio worker and none of
//! it competes with the general blocking pool, which long-poll bookkeeping, topic creation and
//! the tickers share.
//!
//! Bounded: at most `threads` jobs run and at most `queue` more wait. A caller past that waits
//! asynchronously for a slot (back-pressure reaches the connection, which stops reading), never
//! a thread. `depth` (waiting + running) is a gauge on `/metrics`.
//!
//! A panicking job is caught and reported to its caller as [`IoPoolError::Panicked`] (the
//! caller counts it in `rill_task_panics_total`); the thread goes on.
//!
//! Jobs reach the threads through storage's `JobQueue` (one wake-up per job, none when a
//! thread is busy), not a channel whose receiver the threads share under a mutex (two
//! wake-ups per job and `sched_yield` spins on the held mutex).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use rill_storage::job_queue::{Job, JobQueue};
use tokio::sync::{oneshot, Semaphore};

/// Why a job did not return.
#[derive(Debug, thiserror::Error)]
pub enum IoPoolError {
    #[error("I/O pool job panicked: {0}")]
    Panicked(String),
    #[error("I/O pool stopped")]
    Stopped,
}

/// The pool. Dropping it (the last `Arc`) ends the threads once the queue is drained.
pub struct IoPool {
    /// Jobs admitted and not yet taken by a thread; closed by `stop`.
    queue: Arc<JobQueue>,
    /// One permit per job that may be queued or running: `threads + queue`.
    slots: Arc<Semaphore>,
    /// Jobs admitted and not finished (queued or running).
    depth: Arc<AtomicU64>,
    /// Jobs run so far.
    jobs: Arc<AtomicU64>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for IoPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoPool")
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

impl IoPool {
    /// Starts `threads` threads (at least one) named `name-N`, admitting `queue` more jobs
    /// than threads.
    ///
    /// # Errors
    /// When no thread could be started.
    pub fn start(name: &str, threads: usize, queue: usize) -> std::io::Result<IoPool> {
        let threads = threads.max(1);
        let jobs = Arc::new(JobQueue::default());
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let jobs = Arc::clone(&jobs);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || jobs.work());
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) if handles.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, started = handles.len(), "could not start every I/O pool thread");
                    break;
                }
            }
        }
        Ok(IoPool {
            queue: jobs,
            slots: Arc::new(Semaphore::new(handles.len() + queue)),
            depth: Arc::new(AtomicU64::new(0)),
            jobs: Arc::new(AtomicU64::new(0)),
            threads: Mutex::new(handles),
        })
    }

    /// Runs `f` on a pool thread and returns its result, waiting (asynchronously) for a slot
    /// first when the pool is full.
    ///
    /// # Errors
    /// [`IoPoolError::Panicked`] if `f` panicked, [`IoPoolError::Stopped`] after `stop`.
    pub async fn run<T, F>(&self, f: F) -> Result<T, IoPoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_inner(f, Arc::new(Mutex::new(None))).await
    }

    /// `f`, answered, then whatever `f` left in `then` (see [`IoPool::run_then`]).
    async fn run_inner<T, F>(&self, f: F, then: Arc<Mutex<Option<Job>>>) -> Result<T, IoPoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| IoPoolError::Stopped)?;
        let (tx, rx) = oneshot::channel();
        let depth = Arc::clone(&self.depth);
        let jobs = Arc::clone(&self.jobs);
        depth.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(f));
            let next = then.lock().take();
            let answer = move || {
                let _ = tx.send(result);
            };
            // Without a continuation the job is counted done before it answers, so a caller
            // sees the pool's gauges settled when its await returns.
            let answer = match next {
                None => Some(answer),
                Some(next) => {
                    answer();
                    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(next)) {
                        let message = panic_message(&*panic);
                        tracing::error!(%message, "I/O pool job's continuation panicked");
                    }
                    None
                }
            };
            depth.fetch_sub(1, Ordering::Relaxed);
            jobs.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            if let Some(answer) = answer {
                answer();
            }
        });
        if self.queue.push(job).is_err() {
            // The job (and its permit) was dropped unrun.
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(IoPoolError::Stopped);
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(IoPoolError::Panicked(panic_message(&*panic))),
            Err(_) => Err(IoPoolError::Stopped),
        }
    }

    /// Runs `f` on a pool thread and returns the first part of its result as soon as `f`
    /// returns; the second part, if any, then runs on the same thread, in the same slot
    /// (the pool stays bounded), while the caller goes on. For work whose caller needs only its
    /// first step: a produce's appends answer the connection (which reads its next request)
    /// while the same thread goes on to make them durable.
    ///
    /// # Errors
    /// As [`IoPool::run`]; a panic in the continuation is logged and counted as a failed job
    /// only in the log (its caller is gone).
    pub async fn run_then<T, F>(&self, f: F) -> Result<T, IoPoolError>
    where
        F: FnOnce() -> (T, Option<Job>) + Send + 'static,
        T: Send + 'static,
    {
        let then: Arc<Mutex<Option<Job>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&then);
        self.run_inner(
            move || {
                let (value, next) = f();
                *slot.lock() = next;
                value
            },
            then,
        )
        .await
    }

    /// Jobs queued or running now.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Jobs finished so far.
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Refuses new jobs, lets the queued ones finish and joins the threads (except the
    /// calling one, when a job's drop of the last handle stops the pool).
    pub fn stop(&self) {
        self.slots.close();
        self.queue.close();
        let me = std::thread::current().id();
        for handle in std::mem::take(&mut *self.threads.lock()) {
            if handle.thread().id() == me {
                continue;
            }
            if handle.join().is_err() {
                tracing::error!("I/O pool thread panicked outside a job");
            }
        }
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_runtime_and_reports_panics() {
        let pool = IoPool::start("test-io", 2, 4).unwrap();
        let caller = std::thread::current().id();
        let (value, thread) = pool
            .run(|| (6 * 7, std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(value, 42);
        assert_ne!(thread, caller, "the job ran on the caller's thread");
        let panicked = pool.run(|| -> u32 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(IoPoolError::Panicked(m)) if m == "boom"));
        // The pool survives a panicking job.
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
        assert_eq!(pool.jobs(), 3);
        assert_eq!(pool.depth(), 0);
        pool.stop();
        assert!(matches!(pool.run(|| 1).await, Err(IoPoolError::Stopped)));
    }

    /// With every thread and queue slot taken, the next caller waits for a slot (it is not
    /// queued past the bound) and runs once one frees.
    #[tokio::test]
    async fn a_full_pool_makes_callers_wait() {
        let pool = Arc::new(IoPool::start("test-io", 1, 1).unwrap());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let mut held = Vec::new();
        for _ in 0..2 {
            let (pool, rx) = (Arc::clone(&pool), Arc::clone(&release_rx));
            held.push(tokio::spawn(async move {
                pool.run(move || rx.lock().recv().unwrap()).await
            }));
        }
        // Bounded: both jobs are admitted at once.
        for _ in 0..1000 {
            if pool.depth() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(pool.depth(), 2);
        let third = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|| 3).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "admitted past the bound");
        assert_eq!(pool.depth(), 2);
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for h in held {
            h.await.unwrap().unwrap();
        }
        assert_eq!(third.await.unwrap().unwrap(), 3);
    }
}
