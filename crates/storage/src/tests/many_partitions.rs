//! 10 000 partitions in one data directory with a small open-file cache: created, appended,
//! read, closed, reopened and read again, without running out of file descriptors.

use std::time::{Duration, Instant};

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
