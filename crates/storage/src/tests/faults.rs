//! Disk faults injected through the [`FileIo`] seam: a failed segment creation during a roll,
//! a partition whose fsync fails next to healthy ones, syncs held to see the group commit, and
//! descriptor ownership (the fsync runs on the descriptor that wrote; a deleted log lets go of
//! its files and refuses any further use).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::*;
use crate::file_io::{FileIo, IoFile, OsIo};
use crate::StorageError;

/// The real file system with faults on demand.
#[derive(Debug, Default)]
struct FaultIo {
    /// errno for creating a new file; 0 = no fault.
    create_errno: AtomicI32,
    /// fsyncs of files under this directory fail with EIO (syncfs fails while it is set).
    failing: Mutex<Option<PathBuf>>,
    held: Mutex<bool>,
    /// Syncs that found `held` set and waited.
    held_waits: AtomicU64,
    released: Condvar,
    /// Per path, the descriptors that wrote to it since its last sync (kept open, so neither
    /// the descriptor number nor the allocation can be reused and mistaken for another).
    writers: Mutex<HashMap<PathBuf, Vec<Arc<std::fs::File>>>>,
    /// Syncs that ran on a descriptor that had not written the unsynced data.
    foreign_syncs: AtomicU64,
    syncs: AtomicU64,
    /// A slow disk under this directory: its files' syncs wait while `slow_held`, and so
    /// does a syncfs while any of them has unsynced writes (it would have to write them back).
    slow: Mutex<Option<PathBuf>>,
    slow_held: Mutex<bool>,
    /// Syncs that started waiting on the slow disk.
    slow_waits: AtomicU64,
    /// Opening a file on the slow disk waits too (a log being recovered there is slow).
    slow_opens: std::sync::atomic::AtomicBool,
    /// The thread of each fdatasync, in order.
    sync_threads: Mutex<Vec<std::thread::ThreadId>>,
    /// Every fdatasync and syncfs takes this long first (a loaded disk: slow, not stuck).
    sync_delay_ms: AtomicU64,
    /// Syncs take `sync_delay_ms` and no more: the real fdatasync is skipped (for tests of
    /// how passes are scheduled, whose timing the real disk's spikes would blur).
    delay_only: std::sync::atomic::AtomicBool,
    /// fdatasyncs run on the flusher's helper threads (side by side).
    helper_syncs: AtomicU64,
    /// Header reads wait while this is set (a reader far behind, whose reads go to the disk).
    reads_held: Mutex<bool>,
    /// Header reads that found `reads_held` set and waited.
    read_waits: AtomicU64,
}

impl FaultIo {
    fn fail_creates(&self, errno: Option<rustix::io::Errno>) {
        let code = errno.map_or(0, |e| e.raw_os_error());
        self.create_errno.store(code, Ordering::SeqCst);
    }

    fn fail_syncs_under(&self, dir: &Path) {
        *self.failing.lock() = Some(dir.to_path_buf());
    }

    fn hold(&self, held: bool) {
        *self.held.lock() = held;
        self.released.notify_all();
    }

    fn wait_while_held(&self) {
        let mut held = self.held.lock();
        if *held {
            self.held_waits.fetch_add(1, Ordering::SeqCst);
        }
        // Bounded by the test, which always releases.
        while *held {
            self.released.wait(&mut held);
        }
    }

    fn slow_down(&self, dir: &Path) {
        *self.slow.lock() = Some(dir.to_path_buf());
        *self.slow_held.lock() = true;
    }

    fn release_slow(&self) {
        *self.slow_held.lock() = false;
        self.released.notify_all();
    }

    fn is_slow(&self, path: &Path) -> bool {
        self.slow
            .lock()
            .as_ref()
            .is_some_and(|dir| path.starts_with(dir))
    }

    fn wait_while_slow(&self) {
        self.slow_waits.fetch_add(1, Ordering::SeqCst);
        let mut held = self.slow_held.lock();
        // Bounded by the test, which always releases (`SlowDisk` on drop).
        while *held {
            self.released.wait(&mut held);
        }
    }

    fn hold_reads(&self, held: bool) {
        *self.reads_held.lock() = held;
        self.released.notify_all();
    }

    fn delay_sync(&self) {
        let ms = self.sync_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    fn fails(&self, path: &Path) -> bool {
        self.failing
            .lock()
            .as_ref()
            .is_some_and(|dir| path.starts_with(dir))
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl FileIo for FaultIo {
    fn reading(&self, _file: &IoFile) {
        let mut held = self.reads_held.lock();
        if *held {
            self.read_waits.fetch_add(1, Ordering::SeqCst);
        }
        // Bounded by the test, which always releases.
        while *held {
            self.released.wait(&mut held);
        }
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<IoFile> {
        let code = self.create_errno.load(Ordering::SeqCst);
        if create && code != 0 && !path.exists() {
            return Err(io::Error::from_raw_os_error(code));
        }
        if self.slow_opens.load(Ordering::SeqCst) && self.is_slow(path) {
            self.wait_while_slow();
        }
        OsIo.open(path, create)
    }

    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        OsIo.write_at(file, bufs, offset)?;
        let mut writers = self.writers.lock();
        let list = writers.entry(file.path().to_path_buf()).or_default();
        if !list.iter().any(|f| Arc::ptr_eq(f, file.file())) {
            list.push(Arc::clone(file.file()));
        }
        Ok(())
    }

    fn sync_data(&self, file: &IoFile) -> io::Result<()> {
        self.wait_while_held();
        self.delay_sync();
        if self.is_slow(file.path()) {
            self.wait_while_slow();
        }
        if self.fails(file.path()) {
            return Err(errno(rustix::io::Errno::IO));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.sync_threads.lock().push(std::thread::current().id());
        let on_helper = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("rill-flusher-sync"));
        if on_helper {
            self.helper_syncs.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(list) = self.writers.lock().remove(file.path()) {
            if !list.iter().any(|f| Arc::ptr_eq(f, file.file())) {
                self.foreign_syncs.fetch_add(1, Ordering::SeqCst);
            }
        }
        if self.delay_only.load(Ordering::SeqCst) {
            return Ok(());
        }
        OsIo.sync_data(file)
    }

    fn sync_fs(&self, file: &IoFile) -> io::Result<()> {
        self.wait_while_held();
        self.delay_sync();
        let slow_dirty = self.writers.lock().keys().any(|p| self.is_slow(p));
        if slow_dirty {
            self.wait_while_slow();
        }
        if self.failing.lock().is_some() {
            return Err(errno(rustix::io::Errno::IO));
        }
        // Everything on the file system is durable, whoever wrote it.
        self.writers.lock().clear();
        if self.delay_only.load(Ordering::SeqCst) {
            return Ok(());
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
            return Err(errno(rustix::io::Errno::IO));
        }
        OsIo.sync_dir(dir)
    }
}

fn open_with(dir: &Path, io: &Arc<FaultIo>, max_open_files: usize) -> LogManager {
    let mut config = LogManagerConfig::new(dir);
    config.default_log_config = small_config();
    config.max_open_files = max_open_files;
    let io: Arc<dyn FileIo> = io.clone();
    LogManager::open_with_io(config, io).unwrap()
}

/// `count` logs (partitions 0..count of the test topic) of a manager over a fresh `FaultIo`
/// in a fresh directory (kept alive by the returned guard).
fn logs_on_fault_io(count: i32) -> (tempfile::TempDir, Arc<FaultIo>, LogManager, Vec<Arc<Log>>) {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let m = open_with(dir.path(), &io, 0);
    let logs = (0..count)
        .map(|p| m.create_log(&tp(p), small_config()).unwrap())
        .collect();
    (dir, io, m, logs)
}

fn append_next(log: &Log) -> Result<Vec<u8>, StorageError> {
    let batch = expected_batch(log.log_end_offset());
    log.append(&batch).map(|_| batch)
}

/// A one-record batch of a `value_len`-byte value, as stored at the log's end.
fn append_tiny(log: &Log, value_len: usize) -> Result<Vec<u8>, StorageError> {
    let base = log.log_end_offset();
    let mut batch = crate::batch::build_batch(1, &vec![7u8; value_len], 1_000_000 + base);
    log.append(&batch)?;
    batch[0..8].copy_from_slice(&base.to_be_bytes());
    Ok(batch)
}

/// A roll whose new segment cannot be created fails the append cleanly, and appends work
/// again once the fault clears; nothing is lost, nothing panics.
#[test]
fn a_failed_roll_fails_the_append_and_later_appends_work() {
    for fault in [rustix::io::Errno::MFILE, rustix::io::Errno::NOSPC] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FaultIo::default());
        let m = open_with(dir.path(), &io, 0);
        let config = LogConfig {
            index_interval_bytes: 0,
            ..small_config()
        };
        let log = m.create_log(&tp(0), config).unwrap();
        let mut expected = Vec::new();
        io.fail_creates(Some(fault));
        // Bounded: tiny batches until the 8 KiB segment is more than half full.
        while log.size_bytes() < 5 * 1024 {
            expected.push(append_tiny(&log, 3).unwrap());
        }
        // A batch that does not fit needs a roll, which fails; nothing of it is written.
        for _ in 0..3 {
            let (end, segments) = (log.log_end_offset(), log.segment_count());
            match append_tiny(&log, 4000) {
                Err(StorageError::Io { .. } | StorageError::DiskFull { .. }) => {}
                other => panic!("{fault:?}: {other:?}"),
            }
            assert_eq!(log.log_end_offset(), end, "a failed append adds nothing");
            assert_eq!(log.segment_count(), segments);
        }
        // Batches that fit go on into the old segment, still active.
        for _ in 0..5 {
            expected.push(append_tiny(&log, 3).unwrap());
        }
        io.fail_creates(None);
        for _ in 0..60 {
            expected.push(append_next(&log).unwrap());
        }
        assert!(log.segment_count() > 1, "rolled once the fault cleared");
        assert_eq!(read_all(&log), expected);
        drop(log);
        m.close().unwrap();
        drop(m);
        let m = manager(dir.path());
        let log = m.get_log(&tp(0)).unwrap().unwrap();
        assert_eq!(
            read_all(&log),
            expected,
            "{fault:?}: all there after a reopen"
        );
    }
}

/// A log whose fsync fails goes offline; the logs beside it keep flushing, checkpointing and
/// retaining.
#[test]
fn a_failing_log_goes_offline_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let m = open_with(dir.path(), &io, 0);
    let config = LogConfig {
        retention_bytes: 16 * 1024,
        retention_ms: -1,
        ..small_config()
    };
    let logs: Vec<_> = (0..4)
        .map(|p| m.create_log(&tp(p), config.clone()).unwrap())
        .collect();
    io.fail_syncs_under(&dir.path().join(tp(0).dir_name()));
    for _ in 0..80 {
        for log in &logs {
            let _ = append_next(log);
        }
    }
    assert!(matches!(
        logs[0].wait_durable(logs[0].log_end_offset()),
        Err(StorageError::Offline { .. })
    ));
    assert!(logs[0].is_offline());
    assert!(matches!(
        append_next(&logs[0]),
        Err(StorageError::Offline { .. })
    ));
    assert!(matches!(
        logs[0].read(0, 1000, true),
        Err(StorageError::Offline { .. })
    ));
    assert_eq!(m.offline_partitions(), vec![tp(0)]);
    // Housekeeping goes past the offline log (it comes first in partition order).
    m.checkpoint().unwrap();
    m.tick(crate::log::now_ms()).unwrap();
    let points =
        crate::checkpoint::read(&dir.path().join(crate::checkpoint::RECOVERY_POINT_FILE)).unwrap();
    for (p, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(log.flushed_offset(), log.log_end_offset());
        assert_eq!(
            points.get(&tp(p as i32)),
            Some(&log.log_end_offset()),
            "checkpointed past the failing log"
        );
        assert!(
            log.log_start_offset() > 0,
            "retention ran for {}",
            tp(p as i32)
        );
        assert!(append_next(log).is_ok());
    }
    drop(logs);
    m.close().unwrap();
}

/// Logs written while a sync is in progress share the next pass: one round of syncs (one
/// syncfs) for all of them, not one each.
#[test]
fn partitions_written_together_share_one_flush_pass() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let mut config = LogManagerConfig::new(dir.path());
    config.default_log_config = small_config();
    // Every sync is held, so every pass looks stuck: with more workers the others would start
    // passes beside it (the slow-disk rule, `a_stuck_sync_delays_only_its_own_log`).
    config.sync_workers = 1;
    // The syncfs path; `a_pass_syncs_its_logs_side_by_side` has the default one.
    config.group_sync = crate::flusher::GroupSync::Syncfs;
    let dyn_io: Arc<dyn FileIo> = io.clone();
    let m = LogManager::open_with_io(config, dyn_io).unwrap();
    let logs: Vec<_> = (0..8)
        .map(|p| m.create_log(&tp(p), small_config()).unwrap())
        .collect();
    for log in &logs {
        append_next(log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
        // As if that sync was quick: on a loaded machine it may pass the slow-log threshold,
        // and a pass holding a slow log syncs file by file (the rule tested elsewhere).
        log.set_last_sync_nanos(0);
    }
    io.hold(true);
    let passes = m.flusher_passes();
    let syncfs = m.flusher_syncfs_calls();
    let (tx, rx) = std::sync::mpsc::channel();
    for log in &logs {
        append_next(log).unwrap();
        let tx = tx.clone();
        log.on_durable(
            log.log_end_offset(),
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    assert!(
        rx.try_recv().is_err(),
        "nothing is durable while syncs are held"
    );
    io.hold(false);
    for _ in &logs {
        assert!(rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap());
    }
    // The pass that was held (it may have taken some logs) and one more for the rest.
    let used = m.flusher_passes() - passes;
    assert!((1..=2).contains(&used), "{used} passes for 8 logs");
    assert!(
        m.flusher_syncfs_calls() > syncfs,
        "several files: one syncfs"
    );
    for log in &logs {
        assert_eq!(log.high_watermark(), log.log_end_offset());
    }
}

/// On a disk where every sync takes 30 ms (past the 20 ms floor of the straggler threshold,
/// as a pass over thousands of partitions is), passes still group by syncfs and none is
/// taken for a straggler: the threshold follows the passes' median, and a normal syncfs is
/// not charged to its logs as if each had been slow. (Before issue 13 the 20 ms threshold
/// was fixed and every syncfs was charged to every log: after the first round each log
/// looked slow and every pass synced file by file.)
#[test]
fn slow_but_normal_passes_keep_syncing_with_one_syncfs() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let mut config = LogManagerConfig::new(dir.path());
    config.default_log_config = small_config();
    // The syncfs path for 8 logs (the default syncs up to 16 side by side).
    config.group_sync = crate::flusher::GroupSync::Syncfs;
    let dyn_io: Arc<dyn FileIo> = io.clone();
    let m = LogManager::open_with_io(config, dyn_io).unwrap();
    let logs: Vec<_> = (0..8)
        .map(|p| m.create_log(&tp(p), small_config()).unwrap())
        .collect();
    io.sync_delay_ms.store(30, Ordering::SeqCst);
    let round = || {
        let (tx, rx) = std::sync::mpsc::channel();
        for log in &logs {
            append_next(log).unwrap();
            let tx = tx.clone();
            log.on_durable(
                log.log_end_offset(),
                Box::new(move |r| tx.send(r.is_ok()).unwrap()),
            );
        }
        for _ in &logs {
            let durable = rx.recv_timeout(std::time::Duration::from_secs(30));
            assert_eq!(durable, Ok(true));
        }
    };
    // Warm-up: the passes' history fills (at first a 30 ms syncfs overruns the 20 ms floor
    // and its logs are synced alone once, which shows none of them is slow).
    for _ in 0..4 {
        round();
    }
    let (syncfs, overlapping) = (m.flusher_syncfs_calls(), m.flusher_overlapping_passes());
    let rounds = 5;
    for _ in 0..rounds {
        round();
    }
    let used = m.flusher_syncfs_calls() - syncfs;
    assert!(
        used >= rounds,
        "{used} syncfs calls in {rounds} rounds of 8 logs"
    );
    assert_eq!(
        m.flusher_overlapping_passes(),
        overlapping,
        "a 30 ms pass was taken for a straggler"
    );
    io.sync_delay_ms.store(0, Ordering::SeqCst);
    drop(logs);
    m.close().unwrap();
}

/// Issue 13's acks=all collapse: a pass of many logs that all look slow (as after a syncfs
/// that overran and was charged to each of them) syncs them side by side on the helper
/// threads, never one by one on its worker (at 10 000 partitions that was one pass of
/// ~10 000 fdatasyncs in a row). A blocker log stuck on a slow disk holds the only worker
/// while the 20 logs queue, so they are taken into one pass.
#[test]
fn a_large_pass_of_slow_logs_syncs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let mut config = LogManagerConfig::new(dir.path());
    config.default_log_config = small_config();
    config.sync_workers = 1;
    let dyn_io: Arc<dyn FileIo> = io.clone();
    let m = LogManager::open_with_io(config, dyn_io).unwrap();
    let count = crate::sync_helpers::SYNC_HELPERS + 4;
    let blocker = m.create_log(&tp(100), small_config()).unwrap();
    let logs: Vec<_> = (0..count)
        .map(|p| m.create_log(&tp(p as i32), small_config()).unwrap())
        .collect();
    for log in logs.iter().chain([&blocker]) {
        append_next(log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    io.slow_down(blocker.dir());
    let slow_disk = SlowDisk(&io);
    append_next(&blocker).unwrap();
    eventually("the blocker's sync never started", || {
        io.slow_waits.load(Ordering::SeqCst) > 0
    });
    let (tx, rx) = std::sync::mpsc::channel();
    for log in &logs {
        // Slow by its last sync: the pass may not use syncfs.
        log.set_last_sync_nanos(10_000_000_000);
        append_next(log).unwrap();
        let tx = tx.clone();
        log.on_durable(
            log.log_end_offset(),
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    let (helper_syncs, syncfs) = (
        io.helper_syncs.load(Ordering::SeqCst),
        m.flusher_syncfs_calls(),
    );
    drop(slow_disk);
    for _ in &logs {
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(30)),
            Ok(true)
        );
    }
    // All but the few a first pass took alone, on its worker, before the rest were queued.
    let on_helpers = io.helper_syncs.load(Ordering::SeqCst) - helper_syncs;
    assert!(
        on_helpers >= (count - crate::sync_helpers::SYNC_HELPERS) as u64,
        "{on_helpers} of {count} slow logs synced on the helpers"
    );
    assert_eq!(m.flusher_syncfs_calls(), syncfs, "no syncfs with slow logs");
    for log in &logs {
        assert_eq!(log.high_watermark(), log.log_end_offset());
    }
    drop((logs, blocker));
    m.close().unwrap();
}

/// Issue 13's acks=all collapse, the cause: a pass syncing hundreds of logs side by side
/// (here 256 logs that look slow, so no syncfs: 16 rounds of 16 fdatasyncs of 50 ms, the
/// straggler threshold 4 x 50 ms) keeps publishing logs, and is no straggler. Before, it was
/// judged against one fdatasync's threshold from its start, so a log queued meanwhile got a
/// pass beside it; that pass was not alone, so it could not use syncfs either and synced its
/// logs side by side too, the next one started beside both, and under steady writes no pass
/// ran alone again: at 10 000 partitions every pass synced thousands of logs one fdatasync
/// each, 4 passes at once, and acks=all requests took 5.6 s.
#[test]
fn a_side_by_side_pass_that_keeps_publishing_is_no_straggler() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let mut config = LogManagerConfig::new(dir.path());
    config.default_log_config = small_config();
    let dyn_io: Arc<dyn FileIo> = io.clone();
    let m = LogManager::open_with_io(config, dyn_io).unwrap();
    // As many as a pass of slow logs syncs side by side (more would use syncfs).
    let count = crate::flusher::SIDE_BY_SIDE_MAX_LOGS;
    let late = m.create_log(&tp(10_000), small_config()).unwrap();
    let logs: Vec<_> = (0..count)
        .map(|p| m.create_log(&tp(p as i32), small_config()).unwrap())
        .collect();
    for log in logs.iter().chain([&late]) {
        append_next(log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    // Each sync takes 50 ms, never a spike of the real disk (on the loaded test machine one
    // fdatasync may take 20-60 ms, and a pass stuck in it is rightly a straggler). A few
    // passes of up to 16 logs teach the flusher that an fdatasync takes 50 ms here, so it
    // takes one for stuck after 200 ms: no scheduling stall of a loaded machine (two cores,
    // other tests) between two returning fdatasyncs should come near it.
    io.sync_delay_ms.store(50, Ordering::SeqCst);
    io.delay_only.store(true, Ordering::SeqCst);
    for _ in 0..crate::flusher::HISTORY_PASSES {
        for log in &logs[..8] {
            append_next(log).unwrap();
        }
        for log in &logs[..8] {
            log.wait_durable(log.log_end_offset()).unwrap();
        }
    }
    // Syncs held while the logs queue, so most of them go into one large pass (beside the
    // held pass that took the first: a legitimate straggler).
    io.hold(true);
    let held = Held(&io);
    let (tx, rx) = std::sync::mpsc::channel();
    for log in &logs {
        // Slow by its last sync: the pass may not use syncfs, it syncs side by side.
        log.set_last_sync_nanos(10_000_000_000);
        append_next(log).unwrap();
        let tx = tx.clone();
        log.on_durable(
            log.log_end_offset(),
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    eventually("the large pass never reached the helpers", || {
        io.held_waits.load(Ordering::SeqCst) >= 2
    });
    let helper_syncs = io.helper_syncs.load(Ordering::SeqCst);
    drop(held);
    // A few rounds into the large pass (every queued log is in a pass by now), another log
    // has something to sync.
    eventually("the large pass never synced on the helpers", || {
        io.helper_syncs.load(Ordering::SeqCst) >= helper_syncs + 48
    });
    let overlapping = m.flusher_overlapping_passes();
    append_next(&late).unwrap();
    late.wait_durable(late.log_end_offset()).unwrap();
    for _ in &logs {
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(30)),
            Ok(true)
        );
    }
    // All but the few a first pass took alone, on its worker, before the rest were queued.
    let on_helpers = io.helper_syncs.load(Ordering::SeqCst) - helper_syncs;
    assert!(
        on_helpers >= (count - crate::sync_helpers::SYNC_HELPERS) as u64,
        "{on_helpers} of {count} logs synced on the helpers, {} syncfs",
        m.flusher_syncfs_calls()
    );
    assert_eq!(
        m.flusher_overlapping_passes(),
        overlapping,
        "a pass publishing a log every few ms was taken for a straggler"
    );
    io.sync_delay_ms.store(0, Ordering::SeqCst);
    io.delay_only.store(false, Ordering::SeqCst);
    drop((logs, late));
    m.close().unwrap();
}

/// Under the default group sync a pass syncs its logs side by side: with syncs held, a pass
/// of 7 logs has all 7 fdatasyncs waiting at once (one after the other, only one would be),
/// with no syncfs, and every log is durable once they return.
#[test]
fn a_pass_syncs_its_logs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let mut config = LogManagerConfig::new(dir.path());
    config.default_log_config = small_config();
    // The held pass of log 0 looks stuck after `STRAGGLER_AFTER`; another worker then takes
    // the other 7 (in one pass, or a few if this thread is slow to queue them: 4 workers
    // leave room for three). One sync per pass at a time would make at most 4 wait at once.
    config.sync_workers = 4;
    let dyn_io: Arc<dyn FileIo> = io.clone();
    let m = LogManager::open_with_io(config, dyn_io).unwrap();
    let logs: Vec<_> = (0..8)
        .map(|p| m.create_log(&tp(p), small_config()).unwrap())
        .collect();
    for log in &logs {
        append_next(log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    let held = Held(&io);
    io.hold(true);
    let syncfs = m.flusher_syncfs_calls();
    let (tx, rx) = std::sync::mpsc::channel();
    let wait_for = |log: &Arc<Log>| {
        append_next(log).unwrap();
        let tx = tx.clone();
        log.on_durable(
            log.log_end_offset(),
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    };
    wait_for(&logs[0]);
    eventually("log 0's sync never started", || {
        io.held_waits.load(Ordering::SeqCst) >= 1
    });
    for log in &logs[1..] {
        wait_for(log);
    }
    eventually("the 7 logs' syncs were not waiting at once", || {
        io.held_waits.load(Ordering::SeqCst) >= 8
    });
    assert!(
        rx.try_recv().is_err(),
        "nothing is durable while syncs are held"
    );
    drop(held);
    for _ in &logs {
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(30)),
            Ok(true)
        );
    }
    assert_eq!(m.flusher_syncfs_calls(), syncfs, "no syncfs for 7 logs");
    for log in &logs {
        assert_eq!(log.high_watermark(), log.log_end_offset());
    }
    drop(logs);
    m.close().unwrap();
}

/// A durability wait registered while the pass that took its append is syncing is answered
/// by that pass: it queues no second, empty pass (one more flusher wake-up per acks=all
/// produce on a busy machine).
#[test]
fn a_wait_behind_the_pass_of_its_append_queues_no_second_pass() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let m = open_with(dir.path(), &io, 0);
    let log = m.create_log(&tp(0), small_config()).unwrap();
    append_next(&log).unwrap();
    log.wait_durable(log.log_end_offset()).unwrap();
    let held = Held(&io);
    io.hold(true);
    let waiting = io.held_waits.load(Ordering::SeqCst);
    let passes = m.flusher_passes();
    // The append queues the log; the pass takes it and waits in its sync.
    append_next(&log).unwrap();
    eventually("the append's sync never started", || {
        io.held_waits.load(Ordering::SeqCst) > waiting
    });
    let (tx, rx) = std::sync::mpsc::channel();
    log.on_durable(
        log.log_end_offset(),
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    );
    drop(held);
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(30)),
        Ok(true)
    );
    // A second pass would be queued at once; give it time to show.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(m.flusher_passes() - passes, 1, "a second pass ran");
    drop(log);
    m.close().unwrap();
}

/// Lets held syncs go when dropped, so a failing assertion does not leave flusher threads
/// parked.
struct Held<'a>(&'a FaultIo);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.hold(false);
    }
}

/// Releases the slow disk when dropped, so a failing assertion does not leave a flusher
/// thread parked.
struct SlowDisk<'a>(&'a FaultIo);

impl Drop for SlowDisk<'_> {
    fn drop(&mut self) {
        self.0.release_slow();
    }
}

/// One log whose fdatasync hangs (a slow or stuck disk under its directory) delays only its
/// own durability: appends to the other logs of the data directory become durable, and their
/// waiters are answered, while its sync is still stuck; it is answered once the sync returns.
#[test]
fn a_stuck_sync_delays_only_its_own_log() {
    let (_dir, io, m, logs) = logs_on_fault_io(8);
    for log in &logs {
        append_next(log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    let overlapping = m.flusher_overlapping_passes();
    io.slow_down(logs[0].dir());
    let slow_disk = SlowDisk(&io);
    append_next(&logs[0]).unwrap();
    let slow_end = logs[0].log_end_offset();
    let (slow_tx, slow_rx) = std::sync::mpsc::channel();
    logs[0].on_durable(
        slow_end,
        Box::new(move |r| slow_tx.send(r.is_ok()).unwrap()),
    );
    // Bounded: the flusher reaches the stuck sync at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while io.slow_waits.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow sync never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for log in &logs[1..] {
        append_next(log).unwrap();
        let tx = tx.clone();
        log.on_durable(
            log.log_end_offset(),
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    for _ in &logs[1..] {
        let durable = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(durable, Ok(true), "a healthy log waited for the stuck one");
    }
    for log in &logs[1..] {
        assert_eq!(log.high_watermark(), log.log_end_offset());
    }
    assert!(
        slow_rx.try_recv().is_err(),
        "answered before its sync returned"
    );
    assert!(logs[0].high_watermark() < slow_end);
    assert!(m.flusher_overlapping_passes() > overlapping);
    drop(slow_disk);
    let durable = slow_rx.recv_timeout(std::time::Duration::from_secs(30));
    assert_eq!(durable, Ok(true));
    assert_eq!(logs[0].high_watermark(), slow_end);
    drop(logs);
    m.close().unwrap();
}

/// A log queued again with nothing to sync (a durability wait that arrived after the pass
/// covering it had taken it) and taken into the same pass as a log whose sync hangs is not held
/// behind that sync: its next append becomes durable while the other's sync is still stuck.
#[test]
fn a_log_with_nothing_to_sync_is_not_held_behind_a_stuck_sync_in_its_pass() {
    let (_dir, io, m, logs) = logs_on_fault_io(3);
    for log in &logs {
        append_next(log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    let (stuck, idle, busy) = (&logs[0], &logs[1], &logs[2]);
    io.slow_down(stuck.dir());
    let slow_disk = SlowDisk(&io);
    // Synced last in a pass, after the stuck log, as a log whose last sync was slower is.
    idle.set_last_sync_nanos(10_000_000);
    stuck.set_last_sync_nanos(0);
    // A pass held on another log, so that the next pass starts beside it (after the straggler
    // wait) with both the idle log and the stuck one queued.
    let held = Held(&io);
    io.hold(true);
    let overlapping = m.flusher_overlapping_passes();
    append_next(busy).unwrap();
    busy.on_durable(busy.log_end_offset(), Box::new(|_| {}));
    eventually("the first pass is held", || {
        io.held_waits.load(Ordering::SeqCst) > 0
    });
    idle.request_flush();
    append_next(stuck).unwrap();
    stuck.on_durable(stuck.log_end_offset(), Box::new(|_| {}));
    eventually("a second pass started beside the held one", || {
        m.flusher_overlapping_passes() > overlapping
    });
    drop(held);
    eventually("the stuck sync started", || {
        io.slow_waits.load(Ordering::SeqCst) > 0
    });
    append_next(idle).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    idle.on_durable(
        idle.log_end_offset(),
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    );
    let durable = rx.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(durable, Ok(true), "the idle log waited for the stuck one");
    drop(slow_disk);
    drop(logs);
    m.close().unwrap();
}

/// Waits (bounded: 30 s) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Runs the manager's housekeeping tick at `now` on another thread and says whether it
/// returned within 10 s (a tick touches a few small files; waiting for a held sync it would
/// not return until the test releases it).
fn tick_returns(m: &Arc<LogManager>, now: i64) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let m = Arc::clone(m);
    std::thread::spawn(move || {
        let _ = tx.send(m.tick(now).is_ok());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)) == Ok(true)
}

/// flush.ms flushes and the periodic recovery-point checkpoint go on past a log whose sync is
/// stuck on a slow disk: the housekeeping tick hands flush.ms flushes to the flusher (whose
/// passes go on beside a stuck one) and the checkpoint skips a log whose flush is in progress,
/// which keeps its previous point. The other logs are flushed and checkpointed meanwhile.
#[test]
fn a_stuck_sync_holds_up_neither_flush_ms_nor_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let m = Arc::new(open_with(dir.path(), &io, 0));
    let mut config = small_config();
    config.set("flush.ms", "1000").unwrap();
    let logs: Vec<_> = (0..4)
        .map(|p| m.create_log(&tp(p), config.clone()).unwrap())
        .collect();
    let start = crate::log::now_ms();
    for log in &logs {
        append_next(log).unwrap();
        assert!(
            log.flushed_offset() < log.log_end_offset(),
            "flush.ms: not yet synced"
        );
    }
    assert!(tick_returns(&m, start + 2_000));
    eventually("flush.ms flushes before the slow disk", || {
        logs.iter()
            .all(|l| l.flushed_offset() == l.log_end_offset())
    });

    io.slow_down(logs[0].dir());
    let slow_disk = SlowDisk(&io);
    append_next(&logs[0]).unwrap();
    let slow_end = logs[0].log_end_offset();
    assert!(
        tick_returns(&m, start + 4_000),
        "the tick waited for the stuck flush.ms flush"
    );
    eventually("the slow sync never started", || {
        io.slow_waits.load(Ordering::SeqCst) > 0
    });
    for log in &logs[1..] {
        append_next(log).unwrap();
    }
    assert!(tick_returns(&m, start + 6_000));
    eventually(
        "a healthy log's flush.ms flush waited for the stuck one",
        || {
            logs[1..]
                .iter()
                .all(|l| l.flushed_offset() == l.log_end_offset())
        },
    );
    // Past the checkpoint interval: this tick writes the recovery points.
    assert!(
        tick_returns(&m, start + 20_000),
        "the checkpoint waited for the stuck sync"
    );
    let points =
        crate::checkpoint::read(&dir.path().join(crate::checkpoint::RECOVERY_POINT_FILE)).unwrap();
    for (p, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            points.get(&tp(p as i32)),
            Some(&log.log_end_offset()),
            "checkpointed past the stuck log"
        );
    }
    assert!(
        points.get(&tp(0)).is_none_or(|&point| point < slow_end),
        "a point past a sync that has not returned"
    );
    assert!(logs[0].flushed_offset() < slow_end);
    drop(slow_disk);
    eventually("the slow log's flush never finished", || {
        logs[0].flushed_offset() == slow_end
    });
    m.checkpoint().unwrap();
    let points =
        crate::checkpoint::read(&dir.path().join(crate::checkpoint::RECOVERY_POINT_FILE)).unwrap();
    assert_eq!(points.get(&tp(0)), Some(&slow_end));
    drop(logs);
    m.close().unwrap();
}

/// A log opened lazily whose recovery is slow (its disk stalls every file open) holds up
/// neither lookups of logs that are open already nor their appends: the manager's lock is not
/// held across an open. A second caller for the same log waits for the first open and gets
/// the same log.
#[test]
fn a_slow_lazy_open_holds_up_no_open_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = manager(dir.path());
        for p in 0..2 {
            let log = m.create_log(&tp(p), small_config()).unwrap();
            append_next(&log).unwrap();
        }
        m.close().unwrap();
    }
    let io = Arc::new(FaultIo::default());
    let m = Arc::new(open_with(dir.path(), &io, 0));
    let open = m.get_log(&tp(0)).unwrap().unwrap();
    assert!(m.get_open_log(&tp(1)).is_none(), "opened before first use");
    io.slow_down(&dir.path().join(tp(1).dir_name()));
    io.slow_opens.store(true, Ordering::SeqCst);
    let slow_disk = SlowDisk(&io);
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || m.get_log(&tp(1)).unwrap().unwrap())
        })
        .collect();
    eventually("the slow open never started", || {
        io.slow_waits.load(Ordering::SeqCst) > 0
    });
    // Bounded: lookups of the open log answer while the other's open is stuck.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let m = Arc::clone(&m);
        std::thread::spawn(move || {
            let found = m.get_log(&tp(0)).unwrap().unwrap();
            let appended = append_next(&found).is_ok();
            let _ = tx.send((Arc::as_ptr(&found) as usize, appended));
        });
    }
    let looked_up = rx.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(
        looked_up,
        Ok((Arc::as_ptr(&open) as usize, true)),
        "the open log's lookup waited for another log's recovery"
    );
    assert!(m.get_open_log(&tp(1)).is_none());
    drop(slow_disk);
    let opened: Vec<_> = openers.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        Arc::ptr_eq(&opened[0], &opened[1]),
        "the log was opened twice"
    );
    assert!(Arc::ptr_eq(&m.get_open_log(&tp(1)).unwrap(), &opened[0]));
    assert_eq!(opened[0].log_end_offset(), 1);
    drop((open, opened));
    m.close().unwrap();
}

/// With a file cache far smaller than the logs, every fsync still runs on the descriptor that
/// wrote the data (an active segment's descriptor is never evicted and reopened).
#[test]
fn fsyncs_run_on_the_descriptor_that_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let mut config = LogManagerConfig::new(dir.path());
    config.default_log_config = small_config();
    config.max_open_files = 3;
    // One file per sync, so every sync is an fdatasync the seam can attribute.
    config.group_sync = crate::flusher::GroupSync::PerFile;
    let dyn_io: Arc<dyn FileIo> = io.clone();
    let m = LogManager::open_with_io(config, dyn_io).unwrap();
    let logs: Vec<_> = (0..6)
        .map(|p| m.create_log(&tp(p), small_config()).unwrap())
        .collect();
    for round in 0..30 {
        for log in &logs {
            append_next(log).unwrap();
            // Reads of old segments go through the small cache and evict.
            let _ = log.read_bytes(log.log_start_offset(), 100);
            if round % 3 == 0 {
                log.wait_durable(log.log_end_offset()).unwrap();
            }
        }
    }
    for log in &logs {
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    m.checkpoint().unwrap();
    assert!(m.open_files() <= 3);
    assert!(io.syncs.load(Ordering::SeqCst) > 0);
    assert_eq!(
        io.foreign_syncs.load(Ordering::SeqCst),
        0,
        "a sync ran on a descriptor that had not written the data"
    );
}

/// Open descriptors of this process on files under `dir`.
fn open_fds_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().to_string())
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// Deleting a log closes its descriptors at once (its disk space is freed), and a handle kept
/// across a delete and re-create can neither write into nor read the new partition.
#[test]
fn delete_frees_files_and_a_stale_handle_cannot_touch_the_new_partition() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let stale = m.create_log(&tp(0), small_config()).unwrap();
    for _ in 0..40 {
        append_next(&stale).unwrap();
    }
    read_all(&stale); // maps sealed indexes and opens cached files
    assert!(stale.segment_count() > 1);
    let deleted_dir = dir.path().join(tp(0).dir_name());
    assert!(!open_fds_under(&deleted_dir).is_empty());
    m.delete_log(&tp(0)).unwrap();
    assert_eq!(
        open_fds_under(&deleted_dir),
        Vec::<String>::new(),
        "descriptors of the deleted log are still open"
    );
    let fresh = m.create_log(&tp(0), small_config()).unwrap();
    assert!(matches!(
        append_next(&stale),
        Err(StorageError::Deleted { .. })
    ));
    assert!(matches!(
        stale.read(0, 1000, true),
        Err(StorageError::Deleted { .. })
    ));
    assert!(matches!(
        stale.wait_durable(stale.log_end_offset() + 1),
        Err(StorageError::Deleted { .. })
    ));
    assert_eq!(fresh.log_end_offset(), 0);
    assert_eq!(read_all(&fresh), Vec::<Vec<u8>>::new());
    let first = append_next(&fresh).unwrap();
    assert_eq!(read_all(&fresh), vec![first.clone()]);
    drop(stale);
    drop(fresh);
    m.close().unwrap();
    drop(m);
    let m = manager(dir.path());
    let log = m.get_log(&tp(0)).unwrap().unwrap();
    assert_eq!(
        read_all(&log),
        vec![first],
        "only the new partition's record"
    );
}

/// The sync activity handle says "syncing" exactly while a pass is held in its sync, so the
/// broker's cold reads can give way to it (`cold_read.rs`).
#[test]
fn sync_activity_is_seen_while_a_pass_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultIo::default());
    let m = open_with(dir.path(), &io, 0);
    let log = m.create_log(&tp(0), small_config()).unwrap();
    let activity = m.sync_activity();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let idle = |what: &str| {
        // The pass publishes the log before it ends: wait (bounded) for its end.
        while activity.syncing() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    append_next(&log).unwrap();
    log.wait_durable(log.log_end_offset()).unwrap();
    idle("the first pass never ended");
    io.hold(true);
    append_next(&log).unwrap();
    // Bounded: the flusher takes the queued log at once and parks in the held sync.
    while !activity.syncing() {
        assert!(std::time::Instant::now() < deadline, "no pass started");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Held: the pass stays in its sync, and the handle keeps saying so.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(activity.syncing(), "a held sync is not seen");
    io.hold(false);
    log.wait_durable(log.log_end_offset()).unwrap();
    idle("the held pass never ended");
    drop(log);
    m.close().unwrap();
}

/// An acks=all append's thread (the broker's I/O pool) runs the group-commit pass itself when
/// none runs (`Log::sync_here`): the log is durable when it returns, the fdatasync ran on that
/// thread, and no flusher thread ran a pass of its own (its wake-up was deferred, then not
/// needed). Each log queued at that moment is in the same pass.
#[test]
fn an_append_is_synced_on_its_own_thread_when_no_pass_runs() {
    let (_dir, io, m, logs) = logs_on_fault_io(2);
    // Syncs skip the disk: on a loaded machine a real fdatasync past the straggler threshold
    // marks its log slow, and a pass is never run inline over a slow log.
    io.delay_only.store(true, Ordering::SeqCst);
    for log in &logs {
        append_next(log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    // A pass publishes each log as its sync returns, before it ends: wait for its end.
    let activity = m.sync_activity();
    eventually("the flusher's pass ends", || !activity.syncing());
    let passes = m.flusher_passes();
    let syncs = io.sync_threads.lock().len();
    {
        let _deferred = logs[0].defer_flush_wakes();
        for log in &logs {
            append_next(log).unwrap();
        }
        assert!(logs[0].sync_here(logs[0].log_end_offset()));
        // The other log was queued too: the same pass made it durable.
        assert!(logs[1].sync_here(logs[1].log_end_offset()));
    }
    for log in &logs {
        assert_eq!(log.flushed_offset(), log.log_end_offset());
        assert_eq!(log.high_watermark(), log.log_end_offset());
    }
    assert_eq!(
        m.flusher_passes(),
        passes + 1,
        "a flusher thread ran a pass too"
    );
    // Two logs were synced side by side (on the sync helpers); one alone is synced on this
    // thread.
    assert_eq!(io.sync_threads.lock().len(), syncs + 2);
    let me = std::thread::current().id();
    {
        let _deferred = logs[0].defer_flush_wakes();
        append_next(&logs[0]).unwrap();
        assert!(logs[0].sync_here(logs[0].log_end_offset()));
    }
    assert_eq!(io.sync_threads.lock().last(), Some(&me));
    drop(logs);
    m.close().unwrap();
}

/// The appending thread never syncs a log whose last sync was slow, nor while another pass
/// runs (at most one such thread syncs, and a slow disk holds no I/O-pool thread): it returns
/// at once, and the flusher threads make the log durable, woken when the deferral ends.
#[test]
fn a_slow_log_or_a_running_pass_is_left_to_the_flusher_threads() {
    let (_dir, io, m, logs) = logs_on_fault_io(2);
    // The flusher learns what a sync takes here (its slow-log threshold is 4 times the
    // median of recent ones, STRAGGLER_AFTER at least), then log 0's sync is slow once (held
    // ten times past STRAGGLER_AFTER).
    for _ in 0..8 {
        append_next(&logs[1]).unwrap();
        logs[1].wait_durable(logs[1].log_end_offset()).unwrap();
    }
    io.slow_down(logs[0].dir());
    let slow_disk = SlowDisk(&io);
    append_next(&logs[0]).unwrap();
    let waiter = {
        let log = Arc::clone(&logs[0]);
        std::thread::spawn(move || log.wait_durable(log.log_end_offset()))
    };
    eventually("the slow sync starts", || {
        io.slow_waits.load(Ordering::SeqCst) > 0
    });
    // A pass is running: log 1 is left to the flusher threads.
    let me = std::thread::current().id();
    {
        let _deferred = logs[1].defer_flush_wakes();
        append_next(&logs[1]).unwrap();
        assert!(!logs[1].sync_here(logs[1].log_end_offset()));
    }
    logs[1].wait_durable(logs[1].log_end_offset()).unwrap();
    std::thread::sleep(crate::flusher::STRAGGLER_AFTER * 10);
    drop(slow_disk);
    waiter.join().unwrap().unwrap();
    // No pass runs now, but log 0 is known slow.
    {
        let _deferred = logs[0].defer_flush_wakes();
        append_next(&logs[0]).unwrap();
        assert!(!logs[0].sync_here(logs[0].log_end_offset()));
    }
    logs[0].wait_durable(logs[0].log_end_offset()).unwrap();
    assert!(
        !io.sync_threads.lock().contains(&me),
        "the appending thread synced"
    );
    drop(logs);
    m.close().unwrap();
}

/// A fetch whose batch-header read waits on the disk (a consumer far behind) holds up no
/// append to the same partition: the header walk runs without the log's state lock. Under
/// the lock, every append waited for each cold header read of a catch-up reader.
#[test]
fn an_append_does_not_wait_for_a_readers_header_read() {
    let (_dir, io, _m, logs) = logs_on_fault_io(1);
    let log = Arc::clone(&logs[0]);
    let written: Vec<Vec<u8>> = (0..3).map(|_| append_next(&log).unwrap()).collect();
    log.wait_durable(log.log_end_offset()).unwrap();
    let end_before = log.log_end_offset();
    io.hold_reads(true);
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.read_bytes(1, 1 << 20))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Bounded by the deadline.
    while io.read_waits.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let reader_waiting = io.read_waits.load(Ordering::SeqCst) > 0;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let appender = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let appended = append_next(&log);
            done_tx.send(appended.is_ok()).ok();
        })
    };
    let appended = done_rx.recv_timeout(std::time::Duration::from_secs(5));
    io.hold_reads(false);
    let read = reader.join().unwrap().unwrap();
    appender.join().unwrap();
    assert!(reader_waiting, "the reader never reached a header read");
    assert_eq!(
        appended,
        Ok(true),
        "the append waited for the reader's header read"
    );
    // The held read still returns exactly the batches from offset 1 on, as written.
    assert_eq!(read, [&written[1][..], &written[2][..]].concat());
    assert!(log.log_end_offset() > end_before);
}

/// An append made while an I/O-pool thread's pass syncs (it finds the pass running and leaves
/// its sync) goes in the next pass, which that same thread runs as soon as its own ends,
/// rather than a flusher thread woken for it: every sync after the held one ran on that
/// thread, and it returned with the later append durable.
#[test]
fn an_append_during_an_inline_pass_is_synced_by_that_threads_next_pass() {
    let (_dir, io, m, logs) = logs_on_fault_io(1);
    let log = Arc::clone(&logs[0]);
    // Slow but normal syncs first (200 ms each, no real fdatasync), so the straggler
    // threshold (4 times the median) is far above the short hold below and no flusher
    // thread starts a pass beside the held one.
    io.delay_only.store(true, Ordering::SeqCst);
    io.sync_delay_ms.store(200, Ordering::SeqCst);
    for _ in 0..3 {
        append_next(&log).unwrap();
        log.wait_durable(log.log_end_offset()).unwrap();
    }
    io.sync_delay_ms.store(0, Ordering::SeqCst);
    let activity = m.sync_activity();
    eventually("the flusher's pass ends", || !activity.syncing());
    let held_waits = io.held_waits.load(Ordering::SeqCst);
    io.hold(true);
    let held = Held(&io);
    let inline = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let _deferred = log.defer_flush_wakes();
            append_next(&log).unwrap();
            let durable = log.sync_here(log.log_end_offset());
            (durable, std::thread::current().id())
        })
    };
    eventually("the inline pass waits in its sync", || {
        io.held_waits.load(Ordering::SeqCst) > held_waits
    });
    let passes = m.flusher_passes();
    let syncs = io.sync_threads.lock().len();
    {
        let _deferred = log.defer_flush_wakes();
        append_next(&log).unwrap();
        assert!(
            !log.sync_here(log.log_end_offset()),
            "a pass is running: this thread must not sync"
        );
    }
    let end = log.log_end_offset();
    drop(held);
    let (durable, inline_thread) = inline.join().unwrap();
    assert!(durable);
    log.wait_durable(end).unwrap();
    let threads = io.sync_threads.lock()[syncs..].to_vec();
    assert!(!threads.is_empty());
    assert!(
        threads.iter().all(|t| *t == inline_thread),
        "a flusher thread synced the later append: {threads:?} (inline {inline_thread:?})"
    );
    assert_eq!(
        m.flusher_passes(),
        passes + 1,
        "one more pass, on that thread"
    );
    drop(logs);
    drop(log);
    m.close().unwrap();
}
