//! The log cleaner's threads (Kafka's `LogCleaner` and `LogCleanerManager`): a bounded pool of
//! `log.cleaner.threads` background threads, each taking the dirtiest compacted log (ratio at
//! or above its `min.cleanable.dirty.ratio`, or overdue by `max.compaction.lag.ms`), running
//! one [`crate::cleaner::clean`] pass on it, and sleeping `log.cleaner.backoff.ms` when no log
//! needs cleaning. All threads share one throttle (`log.cleaner.io.max.bytes.per.second`) so
//! cleaning cannot starve produce and fetch of disk bandwidth.
//!
//! The settings change at runtime (Kafka's `LogCleaner.reconfigure`, for the dynamic broker
//! configs): the throttle takes its new rate at once; the key map and read buffer sizes apply
//! from the next pass; a new thread count or backoff restarts the threads (a pass in progress
//! abandons its uncommitted files, as Kafka's restart of its cleaner threads does).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// `log.cleaner.io.buffer.size`: the read buffers of all threads together (Kafka halves
    /// each thread's share between reading and writing; rill's reads take that half).
    pub io_buffer_bytes: usize,
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
            io_buffer_bytes: 512 << 10,
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

    /// The read chunk of one thread: its half of its share of the I/O buffers, as Kafka sizes
    /// them, at least [`READ_CHUNK_MIN_BYTES`] (a batch larger than the chunk grows it).
    pub fn read_chunk_bytes_per_thread(&self) -> usize {
        (self.io_buffer_bytes / self.threads.max(1) / 2).max(READ_CHUNK_MIN_BYTES)
    }

    /// Whether going from `self` to `next` needs the threads restarted.
    fn restarts_threads(&self, next: &CleanerConfig) -> bool {
        self.enable != next.enable
            || self.threads != next.threads
            || self.backoff_ms != next.backoff_ms
    }
}

/// Smallest read chunk of a cleaner thread, whatever `log.cleaner.io.buffer.size` says.
pub const READ_CHUNK_MIN_BYTES: usize = 4 << 10;

/// A rate limit over one-second windows (Kafka's `Throttler`): once a window has seen its
/// bytes, the caller sleeps to the window's end.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// The rate's `f64` bits: changed at runtime without a lock.
    bytes_per_second: AtomicU64,
    window: Mutex<(Instant, u64)>,
}

impl Throttle {
    pub(crate) fn new(bytes_per_second: f64) -> Self {
        Throttle {
            bytes_per_second: AtomicU64::new(bytes_per_second.to_bits()),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The rate in force.
    pub(crate) fn rate(&self) -> f64 {
        f64::from_bits(self.bytes_per_second.load(Ordering::Relaxed))
    }

    /// Takes a new rate; the current window is counted against it from now on.
    pub(crate) fn set_rate(&self, bytes_per_second: f64) {
        debug_assert!(bytes_per_second > 0.0);
        self.bytes_per_second
            .store(bytes_per_second.to_bits(), Ordering::Relaxed);
    }

    /// Accounts `bytes` and sleeps if this window is over its share. Sleeps at most a second.
    pub(crate) fn acquire(&self, bytes: u64) {
        let bytes_per_second = self.rate();
        if bytes_per_second >= f64::MAX / 2.0 || bytes == 0 {
            return;
        }
        let sleep = {
            let mut w = self.window.lock();
            let elapsed = w.0.elapsed();
            if elapsed >= Duration::from_secs(1) {
                *w = (Instant::now(), 0);
            }
            w.1 += bytes;
            let due = Duration::from_secs_f64((w.1 as f64 / bytes_per_second).min(1.0));
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
    /// The settings in force; see the module doc for when each change applies.
    config: Mutex<CleanerConfig>,
    pub(crate) stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) throttle: Throttle,
}

impl CleanerPool {
    pub(crate) fn new(config: CleanerConfig) -> Self {
        let throttle = Throttle::new(config.io_max_bytes_per_second);
        CleanerPool {
            config: Mutex::new(config),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            threads: Mutex::new(Vec::new()),
            throttle,
        }
    }

    /// The settings in force.
    pub(crate) fn config(&self) -> CleanerConfig {
        self.config.lock().clone()
    }

    /// Takes new settings: the throttle's rate at once, sizes from the next pass, and a
    /// restart of running threads when their count or backoff changed (`manager` is what
    /// restarted threads run against).
    pub(crate) fn reconfigure(&self, mut next: CleanerConfig, manager: Weak<crate::LogManager>) {
        // The broker checks both; a zero here would stop the threads or every pass for good.
        debug_assert!(next.threads >= 1 && next.io_max_bytes_per_second > 0.0);
        next.threads = next.threads.max(1);
        if next.io_max_bytes_per_second.is_nan() || next.io_max_bytes_per_second <= 0.0 {
            next.io_max_bytes_per_second = f64::MAX;
        }
        let restart = {
            let mut config = self.config.lock();
            let restart = config.restarts_threads(&next);
            *config = next.clone();
            restart
        };
        self.throttle.set_rate(next.io_max_bytes_per_second);
        let running = !self.threads.lock().is_empty();
        if restart && running {
            tracing::info!(
                threads = next.threads,
                backoff_ms = next.backoff_ms,
                "restarting the log cleaner with new settings"
            );
            self.stop();
            self.start(manager);
        }
    }

    /// Running threads (tests, metrics).
    pub(crate) fn thread_count(&self) -> usize {
        self.threads.lock().len()
    }

    /// Starts the threads; each holds the manager weakly, so dropping it ends them too.
    pub(crate) fn start(&self, manager: Weak<crate::LogManager>) {
        let config = self.config();
        let mut threads = self.threads.lock();
        if !config.enable || !threads.is_empty() {
            return;
        }
        self.stop.store(false, Ordering::Release);
        for i in 0..config.threads.max(1) {
            let manager = manager.clone();
            let backoff = Duration::from_millis(config.backoff_ms.max(1));
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

    #[test]
    fn throttle_takes_a_new_rate_at_once() {
        let t = Throttle::new(f64::MAX);
        let started = Instant::now();
        t.acquire(10_000_000);
        assert!(started.elapsed() < Duration::from_millis(500), "unlimited");
        t.set_rate(1_000_000.0);
        let started = Instant::now();
        for _ in 0..20 {
            t.acquire(100_000);
        }
        // 2 MB at 1 MB/s, on a window that already saw 10 MB: at least one whole window.
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn read_chunk_follows_kafkas_split_of_the_io_buffer() {
        let mut c = CleanerConfig::default();
        assert_eq!(c.read_chunk_bytes_per_thread(), 256 << 10);
        c.threads = 4;
        assert_eq!(c.read_chunk_bytes_per_thread(), 64 << 10);
        c.io_buffer_bytes = 0;
        assert_eq!(c.read_chunk_bytes_per_thread(), READ_CHUNK_MIN_BYTES);
        let mut more = c.clone();
        assert!(!c.restarts_threads(&more));
        more.io_max_bytes_per_second = 5.0;
        assert!(!c.restarts_threads(&more), "the throttle changes in place");
        more.threads = 2;
        assert!(c.restarts_threads(&more));
    }
}
