//! Hot and cold fetch reads (issue 13): a fetch range whose pages are all in memory is sent
//! with zero copy (`sendfile`, unchanged); one that is not is read on a small bounded pool of
//! threads, without keeping the pages cached, and sent from the buffer.
//!
//! Why: `sendfile` of pages not in memory waits for the disk inside the async worker that
//! runs it, and every connection that worker serves waits too; and the pages it pulls in
//! push the hot tail out of the page cache (Kafka's KAFKA-7504). `scripts/bench-isolation`
//! showed async workers in uninterruptible disk wait during a catch-up read, and the live
//! consumer's p99 17× worse. With this module a cold read slows only its own fetch.
//!
//! The same threads run a catch-up fetch's other disk reads (offset index lookups, batch
//! header walks: [`ColdReads::run`]), so that no disk read at all happens on an async worker.
//!
//! Bounds: `threads` pool threads, at most `in_flight` cold reads queued, running or being
//! sent (each at most `chunk_bytes`, default [`COLD_READ_CHUNK_BYTES`]), so cold reads hold at
//! most `in_flight × chunk_bytes`, and optionally `bytes_per_second` of disk reads in all.

use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rill_storage::flusher::SyncActivity;
use rill_storage::page_cache::{self, Residency, UncachedRead};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Largest cold read handed to the pool at once, by default: large enough for the disk's
/// sequential rate, small enough that a fetch's buffer stays small.
pub const COLD_READ_CHUNK_BYTES: usize = 1 << 20;

/// Bounds of `chunk_bytes` (`rill serve --cold-read-chunk-bytes`): below 64 KiB the per-read
/// cost dominates; above 8 MiB the in-flight buffers grow past what the pool should hold.
pub const COLD_READ_CHUNK_BYTES_MIN: usize = 64 << 10;
pub const COLD_READ_CHUNK_BYTES_MAX: usize = 8 << 20;

/// Most pool threads (`rill serve --cold-read-threads`).
pub const COLD_READ_THREADS_MAX: usize = 16;

/// Longest a cold read waits for running syncs to end before it reads anyway: a sync stuck on
/// a slow disk must not stop catch-up reads. At 1 MiB per read, two threads waiting this long
/// for every read still read 100 MB/s.
pub const GIVE_WAY_MAX: Duration = Duration::from_millis(20);

/// How often a read that gives way looks again.
const GIVE_WAY_POLL: Duration = Duration::from_micros(500);

/// Waits while `syncing()` says a sync runs, at most `max`; returns the time waited. Why: a
/// 1 MiB read queued at the device ahead of a sync's writes delays that sync, and under
/// durable visibility the live consumers and acks=all producers wait for every sync
/// (`scripts/bench-isolation` measured the live p99 3× worse during a catch-up, and 0.98×
/// with visibility `written`, which has no sync on the live path).
fn give_way(syncing: &dyn Fn() -> bool, max: Duration) -> Duration {
    let started = Instant::now();
    // Bounded by `max`.
    while syncing() {
        let waited = started.elapsed();
        if waited >= max {
            return waited;
        }
        std::thread::sleep(GIVE_WAY_POLL.min(max - waited));
    }
    started.elapsed()
}

/// Which path fetch ranges take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPathPolicy {
    /// Hot when every page is resident, else cold (the default).
    #[default]
    Auto,
    /// Always `sendfile`/inline reads, as before issue 13 (for comparison).
    Hot,
    /// Always the cold path (tests compare its bytes with `sendfile`'s).
    Cold,
}

impl std::str::FromStr for ReadPathPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ReadPathPolicy::Auto),
            "hot" => Ok(ReadPathPolicy::Hot),
            "cold" => Ok(ReadPathPolicy::Cold),
            other => Err(format!("unknown read path {other:?} (auto|hot|cold)")),
        }
    }
}

/// The path one range takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// From the page cache: `sendfile` (or an inline `pread` in copy mode).
    Hot,
    /// On the cold-read pool, uncached, then sent from the buffer.
    Cold,
}

/// The choice for a range, given the policy and what the page cache holds of it (`Err` when
/// the residency check failed: cold, so that an unknown range never blocks a worker).
pub fn choose(policy: ReadPathPolicy, residency: &io::Result<Residency>) -> ReadPath {
    match policy {
        ReadPathPolicy::Hot => ReadPath::Hot,
        ReadPathPolicy::Cold => ReadPath::Cold,
        ReadPathPolicy::Auto => match residency {
            Ok(r) if r.is_resident() => ReadPath::Hot,
            _ => ReadPath::Cold,
        },
    }
}

/// Settings of the cold path (`rill serve --fetch-read-path`, `--cold-read-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdReadConfig {
    pub policy: ReadPathPolicy,
    /// Pool threads; each runs one disk read at a time (1..=[`COLD_READ_THREADS_MAX`]).
    pub threads: usize,
    /// Largest cold read of record bytes ([`COLD_READ_CHUNK_BYTES_MIN`]..=
    /// [`COLD_READ_CHUNK_BYTES_MAX`]): a fetch's cold range is read and sent in pieces of this
    /// size.
    pub chunk_bytes: usize,
    /// Cold reads queued, running or being sent at once, over all connections.
    pub in_flight: usize,
    /// Disk bytes per second for all cold reads together; 0 = unbounded (the threads bound
    /// them).
    pub bytes_per_second: u64,
    pub method: UncachedRead,
}

impl Default for ColdReadConfig {
    fn default() -> Self {
        ColdReadConfig {
            policy: ReadPathPolicy::Auto,
            threads: 2,
            chunk_bytes: COLD_READ_CHUNK_BYTES,
            in_flight: 8,
            bytes_per_second: 0,
            method: UncachedRead::DontCache,
        }
    }
}

/// Work for a pool thread.
enum Job {
    /// A cold range of record bytes, read uncached under the byte budget.
    Read {
        file: Arc<File>,
        position: u64,
        len: usize,
        reply: oneshot::Sender<io::Result<Vec<u8>>>,
    },
    /// Any other read that may wait for the disk (a catch-up fetch's index lookups and batch
    /// header walks, [`ColdReads::run`]); small, so outside the byte budget. It answers
    /// through its own channel.
    Call(Box<dyn FnOnce() + Send>),
}

/// Token bucket over disk bytes: a read waits (on its pool thread) until its bytes fit.
struct Budget {
    bytes_per_second: u64,
    available: f64,
    refilled: Instant,
}

impl Budget {
    /// How long a read of `bytes` must wait; takes the bytes (the balance may go negative,
    /// so a read larger than one second's budget still runs).
    fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let rate = self.bytes_per_second as f64;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.available = (self.available + elapsed * rate).min(rate);
        self.refilled = now;
        self.available -= bytes as f64;
        if self.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.available / rate)
        }
    }
}

/// The cold-read pool, one per broker; its threads end when it is dropped.
pub struct ColdReads {
    config: ColdReadConfig,
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    permits: Arc<Semaphore>,
}

/// A cold read's bytes, and its place among the `in_flight` until they are sent.
pub struct ColdChunk {
    pub bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl ColdReads {
    /// Starts `config.threads` threads named `rill-cold-read`. Each cold read first gives way
    /// (at most [`GIVE_WAY_MAX`]) while `syncs` says the group commit is syncing.
    ///
    /// # Errors
    /// Thread creation.
    pub fn start(config: ColdReadConfig, syncs: Option<SyncActivity>) -> io::Result<ColdReads> {
        let in_flight = config.in_flight.max(1);
        let (tx, rx) = mpsc::sync_channel::<Job>(in_flight);
        let rx = Arc::new(Mutex::new(rx));
        let budget = Arc::new(Mutex::new(Budget {
            bytes_per_second: config.bytes_per_second,
            available: config.bytes_per_second as f64,
            refilled: Instant::now(),
        }));
        for _ in 0..config.threads.clamp(1, COLD_READ_THREADS_MAX) {
            let rx = Arc::clone(&rx);
            let budget = Arc::clone(&budget);
            let method = config.method;
            let syncs = syncs.clone();
            std::thread::Builder::new()
                .name("rill-cold-read".into())
                .spawn(move || loop {
                    // One thread waits on the queue at a time; the others wait for the lock.
                    let job = match rx.lock().recv() {
                        Ok(job) => job,
                        Err(_) => return, // the pool was dropped
                    };
                    match job {
                        Job::Read {
                            file,
                            position,
                            len,
                            reply,
                        } => {
                            let wait = {
                                let mut budget = budget.lock();
                                if budget.bytes_per_second == 0 {
                                    Duration::ZERO
                                } else {
                                    budget.take(len as u64, Instant::now())
                                }
                            };
                            std::thread::sleep(wait);
                            if let Some(syncs) = &syncs {
                                give_way(&|| syncs.syncing(), GIVE_WAY_MAX);
                            }
                            let mut buf = vec![0u8; len];
                            let read = page_cache::read_uncached(&file, position, &mut buf, method)
                                .map(|n| {
                                    buf.truncate(n);
                                    buf
                                });
                            // The fetch may have gone (connection closed): nothing to do then.
                            let _ = reply.send(read);
                        }
                        // A panic drops the call's reply channel (its caller sees an error)
                        // and must not cost the pool a thread.
                        Job::Call(call) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
                        }
                    }
                })?;
        }
        Ok(ColdReads {
            config,
            jobs: Mutex::new(Some(tx)),
            permits: Arc::new(Semaphore::new(in_flight)),
        })
    }

    pub fn policy(&self) -> ReadPathPolicy {
        self.config.policy
    }

    /// Largest read [`ColdReads::read`] takes: the size of the pieces a cold range is sent in.
    pub fn chunk_bytes(&self) -> usize {
        self.config
            .chunk_bytes
            .clamp(COLD_READ_CHUNK_BYTES_MIN, COLD_READ_CHUNK_BYTES_MAX)
    }

    /// Reads up to [`ColdReads::chunk_bytes`] at `position` on the pool; waits (async) for a
    /// place among the `in_flight`. Short only at end of file.
    ///
    /// # Errors
    /// Read errors; `Other` when the pool has stopped.
    pub async fn read(&self, file: Arc<File>, position: u64, len: usize) -> io::Result<ColdChunk> {
        debug_assert!(len <= self.chunk_bytes());
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("cold-read pool stopped"))?;
        let (reply, answer) = oneshot::channel();
        self.queue(Job::Read {
            file,
            position,
            len,
            reply,
        })?;
        let bytes = answer
            .await
            .map_err(|_| io::Error::other("cold-read thread ended"))??;
        Ok(ColdChunk {
            bytes,
            _permit: permit,
        })
    }

    /// Runs `read` on a pool thread and returns its result: for reads that may wait for the
    /// disk but are not record bytes (a catch-up fetch's index lookups and batch header
    /// walks), so that no async worker waits for them. Holds one of the `in_flight` places
    /// while it runs; not counted against the byte budget (they are small).
    ///
    /// # Errors
    /// `Other` when the pool has stopped or `read` panicked.
    pub async fn run<T, F>(&self, read: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let _permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("cold-read pool stopped"))?;
        let (reply, answer) = oneshot::channel();
        self.queue(Job::Call(Box::new(move || {
            // The fetch may have gone (connection closed): nothing to do then.
            let _ = reply.send(read());
        })))?;
        answer
            .await
            .map_err(|_| io::Error::other("cold-read call failed (pool stopped or it panicked)"))
    }

    /// Hands a job to the threads; the caller holds a permit.
    fn queue(&self, job: Job) -> io::Result<()> {
        let jobs = self.jobs.lock();
        let Some(jobs) = jobs.as_ref() else {
            return Err(io::Error::other("cold-read pool stopped"));
        };
        // Never blocks: a job is queued only with a permit, and the queue holds `in_flight`.
        jobs.try_send(job)
            .map_err(|_| io::Error::other("cold-read queue full or pool stopped"))
    }

    /// Stops the threads once the queued reads are done.
    pub fn stop(&self) {
        self.jobs.lock().take();
    }
}

impl Drop for ColdReads {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident(resident_pages: u64, total_pages: u64) -> io::Result<Residency> {
        Ok(Residency {
            resident_pages,
            total_pages,
        })
    }

    #[test]
    fn auto_sends_only_fully_resident_ranges_hot() {
        use ReadPath::*;
        let auto = ReadPathPolicy::Auto;
        assert_eq!(choose(auto, &resident(256, 256)), Hot);
        assert_eq!(choose(auto, &resident(255, 256)), Cold);
        assert_eq!(choose(auto, &resident(0, 256)), Cold);
        assert_eq!(
            choose(auto, &resident(0, 0)),
            Hot,
            "nothing to read waits for nothing"
        );
        assert_eq!(choose(auto, &Err(io::Error::other("x"))), Cold);
    }

    #[test]
    fn forced_policies_ignore_residency() {
        for r in [resident(0, 4), resident(4, 4), Err(io::Error::other("x"))] {
            assert_eq!(choose(ReadPathPolicy::Hot, &r), ReadPath::Hot);
            assert_eq!(choose(ReadPathPolicy::Cold, &r), ReadPath::Cold);
        }
        assert_eq!("cold".parse::<ReadPathPolicy>(), Ok(ReadPathPolicy::Cold));
        assert!("warm".parse::<ReadPathPolicy>().is_err());
    }

    #[test]
    fn budget_spaces_reads_at_its_rate() {
        let start = Instant::now();
        let mut b = Budget {
            bytes_per_second: 1_000_000,
            available: 1_000_000.0,
            refilled: start,
        };
        assert_eq!(b.take(1_000_000, start), Duration::ZERO);
        let wait = b.take(500_000, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // After the wait the next read's bytes are due again.
        let later = start + Duration::from_millis(500);
        let wait = b.take(250_000, later);
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn give_way_waits_while_syncing_and_no_longer() {
        use std::cell::Cell;
        let asked = Cell::new(0);
        let syncing = || {
            asked.set(asked.get() + 1);
            asked.get() <= 3
        };
        give_way(&syncing, Duration::from_secs(60));
        assert_eq!(
            asked.get(),
            4,
            "returns at the first look that finds no sync"
        );
        asked.set(10);
        give_way(&syncing, Duration::from_secs(60));
        assert_eq!(asked.get(), 11, "no sync: one look, no wait");
        let stuck = give_way(&|| true, Duration::from_millis(5));
        assert!(
            stuck >= Duration::from_millis(5),
            "a stuck sync is waited for {stuck:?}"
        );
    }

    #[tokio::test]
    async fn run_calls_on_a_pool_thread_and_survives_a_panic() {
        let pool = ColdReads::start(
            ColdReadConfig {
                threads: 1,
                ..ColdReadConfig::default()
            },
            None,
        )
        .unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("rill-cold-read"));
        let panicked = pool.run(|| -> u32 { panic!("a read panicked") }).await;
        assert!(panicked.is_err(), "a panicking call answers with an error");
        // The single thread is still there.
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn pool_reads_bytes_and_bounds_in_flight() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let pool = ColdReads::start(
            ColdReadConfig {
                in_flight: 2,
                ..ColdReadConfig::default()
            },
            None,
        )
        .unwrap();
        let a = pool.read(Arc::clone(&file), 5, 1 << 20).await.unwrap();
        let b = pool
            .read(Arc::clone(&file), 2_999_990, 1 << 20)
            .await
            .unwrap();
        assert_eq!(a.bytes, data[5..5 + (1 << 20)]);
        assert_eq!(b.bytes, data[2_999_990..], "short at end of file");
        // Both places are held until the chunks are dropped (sent): a third read waits.
        let third = pool.read(Arc::clone(&file), 0, 10);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), third)
                .await
                .is_err(),
            "a third read ran while two chunks were held"
        );
        drop(a);
        let c = pool.read(file, 0, 10).await.unwrap();
        assert_eq!(c.bytes, data[..10]);
        drop(b);
    }
}
