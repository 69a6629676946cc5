//! A file system seam that holds syncs (all of them, or those of a slow disk under one
//! directory) and fails them under a directory, for tests of what waits for durability, and
//! the requests those tests send.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use rill_storage::file_io::{FileIo, IoFile, OsIo};

use super::producer::name;

/// The real file system, except that syncs wait while `held` and fail with EIO for files
/// under `failing` (and syncfs fails while anything is failing). A slow disk under one
/// directory (`slow_down`): syncs of its files wait while it is held, and so does a syncfs
/// while one of them has unsynced writes (syncfs would write them back too).
#[derive(Debug, Default)]
pub struct HoldIo {
    held: Mutex<bool>,
    released: Condvar,
    failing: Mutex<Option<PathBuf>>,
    slow: Mutex<Option<PathBuf>>,
    slow_held: Mutex<bool>,
    /// A file under the slow directory was written since its last sync.
    slow_dirty: AtomicBool,
    /// Syncs that have started waiting on the slow disk.
    pub slow_waits: AtomicU64,
    /// Writes to files whose path contains this text wait (a stuck write, not a sync) until
    /// [`HoldIo::release_writes`], or [`STALL_MAX`] at most.
    stalled_writes: Mutex<Option<String>>,
    stall_released: Condvar,
    /// Writes that started waiting on the stall.
    pub write_stalls: AtomicU64,
    /// Opens of files whose path contains this text wait (a log's first open stuck on a slow
    /// disk) until [`HoldIo::release_opens`], or [`STALL_MAX`] at most.
    stalled_opens: Mutex<Option<String>>,
    open_released: Condvar,
    /// Opens that started waiting on the stall.
    pub open_stalls: AtomicU64,
    /// A stalled write or open that went on only because [`STALL_MAX`] passed.
    pub stall_timed_out: AtomicBool,
}

/// The longest a stalled write waits: a test whose broker would block its runtime behind one
/// (and so could not release it) still ends, and fails, instead of hanging.
pub const STALL_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl HoldIo {
    /// Makes the disk under `dir` slow: its syncs wait until [`HoldIo::release_slow`].
    pub fn slow_down(&self, dir: &Path) {
        *self.slow.lock().unwrap() = Some(dir.to_path_buf());
        *self.slow_held.lock().unwrap() = true;
    }

    /// Makes writes to files whose path contains `text` wait.
    pub fn stall_writes(&self, text: &str) {
        *self.stalled_writes.lock().unwrap() = Some(text.to_string());
    }

    pub fn release_writes(&self) {
        *self.stalled_writes.lock().unwrap() = None;
        self.stall_released.notify_all();
    }

    /// Makes opens of files whose path contains `text` wait.
    pub fn stall_opens(&self, text: &str) {
        *self.stalled_opens.lock().unwrap() = Some(text.to_string());
    }

    pub fn release_opens(&self) {
        *self.stalled_opens.lock().unwrap() = None;
        self.open_released.notify_all();
    }

    fn wait_while_stalled(&self, path: &Path) {
        self.wait_on(
            &self.stalled_writes,
            &self.stall_released,
            &self.write_stalls,
            path,
        );
    }

    /// Waits while `stall` names text in `path` (at most [`STALL_MAX`]), counting the wait.
    fn wait_on(
        &self,
        stall: &Mutex<Option<String>>,
        released: &Condvar,
        waits: &AtomicU64,
        path: &Path,
    ) {
        let path = path.to_string_lossy();
        let mut stalled = stall.lock().unwrap();
        if !stalled
            .as_ref()
            .is_some_and(|text| path.contains(text.as_str()))
        {
            return;
        }
        waits.fetch_add(1, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + STALL_MAX;
        // Bounded by STALL_MAX.
        while stalled.is_some() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                self.stall_timed_out.store(true, Ordering::SeqCst);
                return;
            }
            stalled = released.wait_timeout(stalled, left).unwrap().0;
        }
    }

    pub fn release_slow(&self) {
        *self.slow_held.lock().unwrap() = false;
        self.released.notify_all();
    }

    fn is_slow(&self, path: &Path) -> bool {
        self.slow
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|dir| path.starts_with(dir))
    }

    fn wait_while_slow(&self) {
        self.slow_waits.fetch_add(1, Ordering::SeqCst);
        let mut held = self.slow_held.lock().unwrap();
        // Bounded by the test, which always releases (`SlowDisk` on drop).
        while *held {
            held = self.released.wait(held).unwrap();
        }
    }

    pub fn hold(&self, held: bool) {
        *self.held.lock().unwrap() = held;
        self.released.notify_all();
    }

    pub fn fail_under(&self, dir: &Path) {
        *self.failing.lock().unwrap() = Some(dir.to_path_buf());
    }

    fn wait_while_held(&self) {
        let mut held = self.held.lock().unwrap();
        // Bounded by the test, which always releases before it ends.
        while *held {
            held = self.released.wait(held).unwrap();
        }
    }

    fn fails(&self, path: &Path) -> bool {
        self.failing
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|dir| path.starts_with(dir))
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl FileIo for HoldIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<IoFile> {
        self.wait_on(
            &self.stalled_opens,
            &self.open_released,
            &self.open_stalls,
            path,
        );
        OsIo.open(path, create)
    }
    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.wait_while_stalled(file.path());
        if self.is_slow(file.path()) {
            self.slow_dirty.store(true, Ordering::SeqCst);
        }
        OsIo.write_at(file, bufs, offset)
    }
    fn sync_data(&self, file: &IoFile) -> io::Result<()> {
        self.wait_while_held();
        let slow = self.is_slow(file.path());
        if slow {
            self.wait_while_slow();
        }
        if self.fails(file.path()) {
            return Err(eio());
        }
        OsIo.sync_data(file)?;
        if slow {
            self.slow_dirty.store(false, Ordering::SeqCst);
        }
        Ok(())
    }
    fn sync_fs(&self, file: &IoFile) -> io::Result<()> {
        self.wait_while_held();
        if self.slow_dirty.load(Ordering::SeqCst) {
            self.wait_while_slow();
        }
        if self.failing.lock().unwrap().is_some() {
            return Err(eio());
        }
        OsIo.sync_fs(file)
    }
    fn allocate(&self, file: &IoFile, len: u64) -> io::Result<()> {
        OsIo.allocate(file, len)
    }
    fn set_len(&self, file: &IoFile, len: u64) -> io::Result<()> {
        OsIo.set_len(file, len)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.wait_while_held();
        if self.is_slow(dir) {
            self.wait_while_slow();
        }
        if self.fails(dir) {
            return Err(eio());
        }
        OsIo.sync_dir(dir)
    }
}

/// Holds syncs until dropped, so a failing assertion releases them too (a held flusher would
/// otherwise keep the failed test from ending).
pub struct Held(Arc<HoldIo>);

impl Held {
    pub fn new(io: &Arc<HoldIo>) -> Held {
        io.hold(true);
        Held(Arc::clone(io))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.hold(false);
    }
}

/// Releases stalled writes when dropped (see [`Held`]).
pub struct StalledWrites(Arc<HoldIo>);

impl StalledWrites {
    pub fn new(io: &Arc<HoldIo>, path_text: &str) -> StalledWrites {
        io.stall_writes(path_text);
        StalledWrites(Arc::clone(io))
    }
}

impl Drop for StalledWrites {
    fn drop(&mut self) {
        self.0.release_writes();
    }
}

/// Releases stalled opens when dropped (see [`Held`]).
pub struct StalledOpens(Arc<HoldIo>);

impl StalledOpens {
    pub fn new(io: &Arc<HoldIo>, path_text: &str) -> StalledOpens {
        io.stall_opens(path_text);
        StalledOpens(Arc::clone(io))
    }
}

impl Drop for StalledOpens {
    fn drop(&mut self) {
        self.0.release_opens();
    }
}

/// Releases the slow disk when dropped (see [`Held`]).
pub struct SlowDisk(Arc<HoldIo>);

impl SlowDisk {
    pub fn new(io: &Arc<HoldIo>, dir: &Path) -> SlowDisk {
        io.slow_down(dir);
        SlowDisk(Arc::clone(io))
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        self.0.release_slow();
    }
}

pub fn produce_request(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

pub fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}
