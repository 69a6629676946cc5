//! 10 000 partitions in one data directory with a small open-file cache: created, appended,
//! read, closed, reopened and read again, without running out of file descriptors.

use std::time::{Duration, Instant};

use super::*;

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
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("10 000 partitions: {:?}", started.elapsed());
}
