//! 10 000 partitions in one data directory with a small open-file cache: created, appended,
//! read, closed, reopened and read again, without running out of file descriptors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;

use super::*;

/// Descriptors this process holds on files under `dir` (the cache's and the active segments'
/// own), counted in the kernel's table rather than asked of the cache.
fn open_fds_under(dir: &std::path::Path) -> usize {
    let dir = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.to_string_lossy().starts_with(&dir))
        .count()
}

#[test]
fn ten_thousand_partitions_with_bounded_open_files() {
    const PARTITIONS: i32 = 10_000;
    const MAX_OPEN: usize = 300;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let mut c = LogManagerConfig::new(dir.path());
        c.max_open_files = MAX_OPEN;
        LogManager::open(c).unwrap()
    };
    let config = LogConfig {
        flush_messages: Some(i64::MAX as u64),
        ..LogConfig::default()
    };
    {
        let m = open();
        for p in 0..PARTITIONS {
            let log = m
                .create_log(&TopicPartition::new("many", p), config.clone())
                .unwrap();
            log.append(&expected_batch(0)).unwrap();
            assert!(m.open_files() <= MAX_OPEN);
        }
        // Each active segment owns its write descriptor (outside the cache); everything else
        // is bounded by the cache.
        let fds = open_fds_under(dir.path());
        assert!(
            fds <= MAX_OPEN + PARTITIONS as usize,
            "{fds} descriptors open for {PARTITIONS} partitions"
        );
        for p in (0..PARTITIONS).step_by(7) {
            let log = m.get_log(&TopicPartition::new("many", p)).unwrap().unwrap();
            assert_eq!(read_all(&log), vec![expected_batch(0)]);
        }
        m.close().unwrap();
        assert!(m.open_files() <= MAX_OPEN);
    }
    let m = open();
    assert_eq!(m.partitions().len(), PARTITIONS as usize);
    for p in 0..PARTITIONS {
        let log = m.get_log(&TopicPartition::new("many", p)).unwrap().unwrap();
        assert_eq!(log.log_end_offset(), expected_count(0));
        if p % 13 == 0 {
            assert_eq!(read_all(&log), vec![expected_batch(0)]);
        }
        assert!(m.open_files() <= MAX_OPEN);
    }
    let fds = open_fds_under(dir.path());
    assert!(
        fds <= MAX_OPEN + PARTITIONS as usize,
        "{fds} descriptors open after reopening {PARTITIONS} partitions"
    );
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("10 000 partitions: {:?}", started.elapsed());
}

/// [`SimIo`] that counts the syncs asked of it, so a test can tell a close that syncs the
/// logs together from one that syncs them one by one.
#[derive(Debug, Default)]
struct CountingIo {
    sim: super::sim_io::SimIo,
    sync_data_calls: std::sync::atomic::AtomicU64,
    sync_fs_calls: std::sync::atomic::AtomicU64,
}

impl crate::file_io::FileIo for CountingIo {
    fn open(
        &self,
        path: &std::path::Path,
        create: bool,
    ) -> std::io::Result<crate::file_io::IoFile> {
        self.sim.open(path, create)
    }
    fn write_at(
        &self,
        file: &crate::file_io::IoFile,
        bufs: &[&[u8]],
        offset: u64,
    ) -> std::io::Result<()> {
        self.sim.write_at(file, bufs, offset)
    }
    fn sync_data(&self, file: &crate::file_io::IoFile) -> std::io::Result<()> {
        self.sync_data_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sim.sync_data(file)
    }
    fn allocate(&self, file: &crate::file_io::IoFile, len: u64) -> std::io::Result<()> {
        self.sim.allocate(file, len)
    }
    fn sync_fs(&self, file: &crate::file_io::IoFile) -> std::io::Result<()> {
        self.sync_fs_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sim.sync_fs(file)
    }
    fn set_len(&self, file: &crate::file_io::IoFile, len: u64) -> std::io::Result<()> {
        self.sim.set_len(file, len)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.sim.sync_dir(dir)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        self.sim.rename(from, to)
    }
}

/// A graceful stop of thousands of logs syncs them together (a few syncfs calls, not an
/// fdatasync or three per log, which took ~20 s at 10 000 partitions), and loses nothing:
/// after a power cut right after it every record is there, every log's file ends at its data
/// (the preallocated tail given back) and the checkpoint holds every log's end, so the next
/// open recovers nothing.
#[test]
fn a_graceful_stop_of_thousands_of_logs_syncs_them_together_and_loses_nothing() {
    use std::sync::atomic::Ordering::Relaxed;
    const PARTITIONS: i32 = 3_000;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(CountingIo::default());
    let mut c = LogManagerConfig::new(dir.path());
    // Batches of a sixteenth of this: several batches, so several syncfs calls.
    c.max_open_files = 16_000;
    let m = LogManager::open_with_io(c, io.clone()).unwrap();
    let config = LogConfig {
        flush_messages: Some(i64::MAX as u64),
        ..LogConfig::default()
    };
    for p in 0..PARTITIONS {
        let log = m.create_log(&tp(p), config.clone()).unwrap();
        log.append(&expected_batch(0)).unwrap();
        log.append(&expected_batch(expected_count(0))).unwrap();
    }
    let (data_syncs, fs_syncs) = (
        io.sync_data_calls.load(Relaxed),
        io.sync_fs_calls.load(Relaxed),
    );
    m.close().unwrap();
    let data_syncs = io.sync_data_calls.load(Relaxed) - data_syncs;
    let fs_syncs = io.sync_fs_calls.load(Relaxed) - fs_syncs;
    // The checkpoint file's own write syncs a file and its directory.
    assert!(
        data_syncs <= 4,
        "close fdatasynced {data_syncs} times for {PARTITIONS} logs"
    );
    assert!(
        (1..=8).contains(&fs_syncs),
        "close made {fs_syncs} syncfs calls"
    );
    drop(m);
    io.sim.power_cut(&mut rand::rngs::StdRng::seed_from_u64(13));

    let end = expected_count(0) + expected_count(expected_count(0));
    let points =
        crate::checkpoint::read(&dir.path().join(crate::checkpoint::RECOVERY_POINT_FILE)).unwrap();
    assert_eq!(points.len(), PARTITIONS as usize);
    let data_len = (expected_batch(0).len() + expected_batch(expected_count(0)).len()) as u64;
    for p in 0..PARTITIONS {
        assert_eq!(points.get(&tp(p)), Some(&end), "recovery point of {p}");
        let segment = dir
            .path()
            .join(tp(p).dir_name())
            .join("00000000000000000000.log");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), data_len, "{p}");
    }
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    for p in 0..PARTITIONS {
        let log = m.get_log(&tp(p)).unwrap().unwrap();
        assert_eq!(log.log_end_offset(), end);
        if p % 11 == 0 {
            assert_eq!(
                read_all(&log),
                vec![expected_batch(0), expected_batch(expected_count(0))]
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
}
