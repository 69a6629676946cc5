//! The log cleaner's threads (Kafka's `LogCleaner` and `LogCleanerManager`): a bounded pool of
//! `log.cleaner.threads` background threads, each taking the dirtiest compacted log (ratio at
//! or above its `min.cleanable.dirty.ratio`, or overdue by `max.compaction.lag.ms`), running
//! one [`crate::cleaner::clean`] pass on it, and sleeping `log.cleaner.backoff.ms` when no log
//! needs cleaning. All threads share one throttle (`log.cleaner.io.max.bytes.per.second`) so
//! cleaning cannot starve produce and fetch of disk bandwidth.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The broker-wide cleaner settings, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.threads`: at least 1.
    pub threads: usize,
    /// `log.cleaner.dedupe.buffer.size`: the key maps of all threads together.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second` (reads and writes together); `f64::MAX`, Kafka's
    /// default, is no limit.
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: sleep when no log needs cleaning.
    pub backoff_ms: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enable: true,
            threads: 1,
            dedupe_buffer_bytes: 128 << 20,
            io_max_bytes_per_second: f64::MAX,
            backoff_ms: 15_000,
        }
    }
}

impl CleanerConfig {
    /// The key map bound of one thread: Kafka splits the buffer between the threads.
    pub fn map_bytes_per_thread(&self) -> usize {
        self.dedupe_buffer_bytes / self.threads.max(1)
    }
}

/// A rate limit over one-second windows (Kafka's `Throttler`): once a window has seen its
/// bytes, the caller sleeps to the window's end.
#[derive(Debug)]
pub(crate) struct Throttle {
    bytes_per_second: f64,
    window: Mutex<(Instant, u64)>,
}

impl Throttle {
    pub(crate) fn new(bytes_per_second: f64) -> Self {
        Throttle {
            bytes_per_second,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Accounts `bytes` and sleeps if this window is over its share. Sleeps at most a second.
    pub(crate) fn acquire(&self, bytes: u64) {
        if self.bytes_per_second >= f64::MAX / 2.0 || bytes == 0 {
            return;
        }
        let sleep = {
            let mut w = self.window.lock();
            let elapsed = w.0.elapsed();
            if elapsed >= Duration::from_secs(1) {
                *w = (Instant::now(), 0);
            }
            w.1 += bytes;
            let due = Duration::from_secs_f64((w.1 as f64 / self.bytes_per_second).min(1.0));
            due.checked_sub(w.0.elapsed())
        };
        if let Some(d) = sleep {
            std::thread::sleep(d);
        }
    }
}

/// The pool's shared state, owned by the [`crate::LogManager`].
#[derive(Debug)]
pub(crate) struct CleanerPool {
    pub(crate) config: CleanerConfig,
    pub(crate) stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) throttle: Throttle,
}

impl CleanerPool {
    pub(crate) fn new(config: CleanerConfig) -> Self {
        let throttle = Throttle::new(config.io_max_bytes_per_second);
        CleanerPool {
            config,
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            threads: Mutex::new(Vec::new()),
            throttle,
        }
    }

    /// Starts the threads; each holds the manager weakly, so dropping it ends them too.
    pub(crate) fn start(&self, manager: Weak<crate::LogManager>) {
        let mut threads = self.threads.lock();
        if !self.config.enable || !threads.is_empty() {
            return;
        }
        self.stop.store(false, Ordering::Release);
        for i in 0..self.config.threads.max(1) {
            let manager = manager.clone();
            let backoff = Duration::from_millis(self.config.backoff_ms.max(1));
            let handle = std::thread::Builder::new()
                .name(format!("rill-cleaner-{i}"))
                .spawn(move || run(manager, backoff));
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => tracing::error!(error = %e, "cannot start a log cleaner thread"),
            }
        }
    }

    /// Stops the threads (a pass in progress abandons its work) and waits for them.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        {
            let _g = self.wake.0.lock();
            self.wake.1.notify_all();
        }
        let handles = std::mem::take(&mut *self.threads.lock());
        for h in handles {
            let _ = h.join();
        }
    }

    /// Sleeps up to `d`, waking early on stop.
    fn sleep(&self, d: Duration) {
        let mut g = self.wake.0.lock();
        if !self.stop.load(Ordering::Acquire) {
            self.wake.1.wait_for(&mut g, d);
        }
    }
}

/// One cleaner thread: clean the dirtiest log, or back off. Bounded by the stop flag.
fn run(manager: Weak<crate::LogManager>, backoff: Duration) {
    loop {
        let Some(m) = manager.upgrade() else { return };
        if m.cleaner_pool().stop.load(Ordering::Acquire) {
            return;
        }
        let result = m.clean_dirtiest(crate::log::now_ms());
        let pool_sleep = match result {
            Ok(Some(_)) => None,
            Ok(None) => Some(backoff),
            Err(e) => {
                tracing::warn!(error = %e, "log cleaner pass failed");
                Some(backoff)
            }
        };
        if let Some(d) = pool_sleep {
            m.cleaner_pool().sleep(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_holds_the_rate() {
        let t = Throttle::new(1_000_000.0);
        let started = Instant::now();
        for _ in 0..30 {
            t.acquire(100_000);
        }
        // 3 MB at 1 MB/s: at least two whole windows slept.
        assert!(
            started.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            started.elapsed()
        );
    }
}
