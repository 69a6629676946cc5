//! The log's observable behaviour, one property per test.

use super::*;
use crate::batch::{build_batch, BatchHeader};
use crate::StorageError;

fn append_expected(log: &Log) -> i64 {
    let base = log.log_end_offset();
    let info = log.append(&expected_batch(base)).unwrap();
    assert_eq!(info.base_offset, base);
    assert_eq!(info.last_offset, base + expected_count(base) - 1);
    info.last_offset + 1
}

#[test]
fn append_assigns_offsets_and_reads_back_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let log = m.create_log(&tp(0), small_config()).unwrap();
    let mut expected = Vec::new();
    for _ in 0..50 {
        expected.push(expected_batch(log.log_end_offset()));
        append_expected(&log);
    }
    assert!(log.segment_count() > 1, "small segments must have rolled");
    assert_eq!(read_all(&log), expected);
    // A read from the middle of a batch starts at that batch.
    let second = BatchHeader::parse(&expected[1]).unwrap();
    let bytes = log
        .read_bytes(second.base_offset + second.last_offset_delta as i64, 1)
        .unwrap();
    assert_eq!(
        bytes, expected[1],
        "min_one_batch returns the whole batch even past max_bytes"
    );
    let r = log.read(second.base_offset, 1, false).unwrap();
    assert!(
        r.slices.is_empty(),
        "without min_one_batch a too-small max_bytes returns nothing"
    );
    assert_eq!(
        log.read(log.log_end_offset(), 1000, true)
            .unwrap()
            .total_len(),
        0
    );
}

#[test]
fn reads_end_on_whole_batches_within_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let config = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 100,
        ..small_config()
    };
    let log = m.create_log(&tp(0), config).unwrap();
    let mut sizes = Vec::new();
    for _ in 0..40 {
        sizes.push(expected_batch(log.log_end_offset()).len() as u64);
        append_expected(&log);
    }
    log.wait_durable(log.log_end_offset()).unwrap();
    for max in [100u32, 1000, 2000, 5000, 1 << 20] {
        let r = log.read(0, max, true).unwrap();
        let len = r.total_len();
        let mut whole = 0;
        let mut boundaries = vec![0];
        for s in &sizes {
            whole += s;
            boundaries.push(whole);
        }
        assert!(
            boundaries.contains(&len),
            "read of max {max} returned {len}, not a batch boundary"
        );
        let next_boundary = boundaries.iter().find(|&&b| b > len).copied();
        assert!(
            len <= u64::from(max) || len == sizes[0],
            "read {len} exceeds max {max}"
        );
        if let Some(next) = next_boundary {
            assert!(
                next > u64::from(max),
                "read of max {max} stopped at {len} though {next} fits"
            );
        }
    }
}

#[test]
fn rejects_bad_batches_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let log = m.create_log(&tp(0), small_config()).unwrap();
    append_expected(&log);
    let end = log.log_end_offset();
    let good = build_batch(2, b"ok", 5);
    let mut bad_crc = build_batch(2, b"ok", 5);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    // A good batch followed by a bad one: all or nothing.
    let mut mixed = good.clone();
    mixed.extend_from_slice(&bad_crc);
    assert!(matches!(
        log.append(&mixed),
        Err(StorageError::CorruptRecord { .. })
    ));
    assert!(matches!(
        log.append(&good[..good.len() - 3]),
        Err(StorageError::CorruptRecord { .. })
    ));
    let huge = build_batch(1, &vec![1; 2 << 20], 0);
    assert!(matches!(
        log.append(&huge),
        Err(StorageError::RecordTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), vec![expected_batch(0)]);
    // And the log still takes good appends.
    assert_eq!(log.append(&good).unwrap().base_offset, end);
}

#[test]
fn reopen_keeps_everything_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let m = manager(dir.path());
        let log = m.create_log(&tp(0), small_config()).unwrap();
        for _ in 0..30 {
            expected.push(expected_batch(log.log_end_offset()));
            append_expected(&log);
        }
        m.close().unwrap();
    }
    // Clean close trimmed the preallocated tail: the files are exactly their data.
    let data_bytes: u64 = expected.iter().map(|b| b.len() as u64).sum();
    let total: u64 = std::fs::read_dir(dir.path().join("t-0"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(
        total, data_bytes,
        "segment files hold their data and no tail"
    );
    let m = manager(dir.path());
    assert_eq!(m.partitions(), vec![tp(0)]);
    let log = m.get_log(&tp(0)).unwrap().unwrap();
    assert_eq!(log.size_bytes(), data_bytes);
    assert_eq!(read_all(&log), expected);
    expected.push(expected_batch(log.log_end_offset()));
    append_expected(&log);
    assert_eq!(read_all(&log), expected);
}

/// A partition directory that appears while the manager is open is found by `discover` and
/// recovered on first use, as one found at start-up; partitions already known are not counted.
#[test]
fn discover_adopts_partition_directories_that_appear() {
    let source = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let m = manager(source.path());
        let log = m.create_log(&tp(1), small_config()).unwrap();
        for _ in 0..5 {
            expected.push(expected_batch(log.log_end_offset()));
            append_expected(&log);
        }
        m.close().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    m.create_log(&tp(0), small_config()).unwrap();
    assert_eq!(m.discover().unwrap(), 0);
    assert!(m.get_log(&tp(1)).unwrap().is_none());

    std::fs::rename(source.path().join("t-1"), dir.path().join("t-1")).unwrap();
    assert_eq!(m.discover().unwrap(), 1);
    assert_eq!(m.discover().unwrap(), 0, "found once");
    assert_eq!(m.partitions(), vec![tp(0), tp(1)]);
    let log = m.get_log(&tp(1)).unwrap().expect("discovered");
    assert_eq!(read_all(&log), expected);
    m.delete_log(&tp(1)).unwrap();
    assert_eq!(m.partitions(), vec![tp(0)]);
}

#[test]
fn unclean_reopen_without_checkpoint_recovers_all_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let m = manager(dir.path());
        let log = m.create_log(&tp(0), small_config()).unwrap();
        for _ in 0..30 {
            expected.push(expected_batch(log.log_end_offset()));
            append_expected(&log);
        }
        // No close: the process "dies" with a zero-filled preallocated tail.
    }
    let m = manager(dir.path());
    let log = m.get_log(&tp(0)).unwrap().unwrap();
    assert_eq!(read_all(&log), expected);
}

#[test]
fn deleted_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let m = manager(dir.path());
        let log = m.create_log(&tp(0), small_config()).unwrap();
        for _ in 0..60 {
            expected.push(expected_batch(log.log_end_offset()));
            append_expected(&log);
        }
        m.close().unwrap();
    }
    let part = dir.path().join("t-0");
    let mut indexes: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "index" || x == "timeindex")
        })
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 4);
    std::fs::remove_file(&indexes[0]).unwrap();
    std::fs::write(&indexes[1], [0xff; 24]).unwrap(); // garbage entries
    std::fs::write(&indexes[2], [1, 2, 3]).unwrap(); // ragged length
    let m = manager(dir.path());
    let log = m.get_log(&tp(0)).unwrap().unwrap();
    assert_eq!(read_all(&log), expected);
    for (i, batch) in expected.iter().enumerate().step_by(7) {
        let h = BatchHeader::parse(batch).unwrap();
        assert_eq!(
            &log.read_bytes(h.base_offset, 1).unwrap(),
            batch,
            "batch {i}"
        );
    }
    assert!(indexes[0].exists(), "the missing index was written again");
}

#[test]
fn offsets_out_of_range_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let log = m.create_log(&tp(0), small_config()).unwrap();
    for _ in 0..60 {
        append_expected(&log);
    }
    let end = log.log_end_offset();
    log.wait_durable(end).unwrap();
    assert!(matches!(
        log.read(end + 1, 100, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.delete_records(end + 1),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let segments_before = log.segment_count();
    let cut = end / 2;
    assert_eq!(log.delete_records(cut).unwrap(), cut);
    assert_eq!(log.log_start_offset(), cut);
    assert!(
        log.segment_count() < segments_before,
        "whole segments below the cut are gone"
    );
    assert!(matches!(
        log.read(cut - 1, 100, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let first = log.read_bytes(cut, 1).unwrap();
    let h = BatchHeader::parse(&first).unwrap();
    assert!(h.base_offset <= cut && cut <= h.last_offset());
    drop(log);
    m.close().unwrap();
    drop(m);
    let m = manager(dir.path());
    let log = m.get_log(&tp(0)).unwrap().unwrap();
    assert_eq!(
        log.log_start_offset(),
        cut,
        "the log start offset survives a restart"
    );
    assert_eq!(log.delete_records(log.log_end_offset()).unwrap(), end);
    assert_eq!(log.read(end, 100, true).unwrap().total_len(), 0);
}

#[test]
fn retention_by_size_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let config = LogConfig {
        retention_bytes: 20 * 1024,
        retention_ms: -1,
        ..small_config()
    };
    let log = m.create_log(&tp(0), config).unwrap();
    for _ in 0..150 {
        append_expected(&log);
    }
    log.wait_durable(log.log_end_offset()).unwrap();
    let before = log.size_bytes();
    assert!(before > 40 * 1024);
    let deleted = log.apply_retention(crate::log::now_ms()).unwrap();
    assert!(deleted > 0);
    assert!(
        log.size_bytes() <= 20 * 1024 + 8 * 1024,
        "size {} after retention",
        log.size_bytes()
    );
    assert!(log.log_start_offset() > 0);
    assert_eq!(
        read_all(&log)
            .first()
            .map(|b| crate::batch::BatchHeader::parse(b).unwrap().base_offset),
        Some(log.log_start_offset())
    );
    // Time: batch timestamps are ~1970 + 1000 s, far older than 1 hour.
    let mut config = log.config();
    config.retention_ms = 3_600_000;
    config.retention_bytes = -1;
    log.set_config(config);
    log.apply_retention(crate::log::now_ms()).unwrap();
    assert_eq!(log.size_bytes(), 0, "everything expired");
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    append_expected(&log);
}

/// A compact-only log keeps everything however old or large (Kafka's rule); adding `delete`
/// to the policy brings retention back.
#[test]
fn compact_only_policy_is_never_deleted_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let mut config = LogConfig {
        retention_bytes: 1024,
        retention_ms: 1,
        ..small_config()
    };
    config.set("cleanup.policy", "compact").unwrap();
    let log = m.create_log(&tp(0), config).unwrap();
    for _ in 0..60 {
        append_expected(&log);
    }
    let (size, end) = (log.size_bytes(), log.log_end_offset());
    assert!(log.segment_count() > 1, "several segments to delete");
    // Batch timestamps are ~1970: far past retention.ms=1.
    assert_eq!(log.apply_retention(crate::log::now_ms()).unwrap(), 0);
    m.tick(crate::log::now_ms()).unwrap();
    assert_eq!((log.size_bytes(), log.log_start_offset()), (size, 0));
    assert_eq!(read_all(&log).len(), 60, "every batch is still readable");

    let mut config = log.config();
    config.set("cleanup.policy", "compact,delete").unwrap();
    log.set_config(config);
    assert!(log.apply_retention(crate::log::now_ms()).unwrap() > 0);
    assert_eq!(
        log.log_start_offset(),
        end,
        "compact,delete also deletes by time"
    );
}

#[test]
fn list_offsets_by_timestamp_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let log = m.create_log(&tp(0), small_config()).unwrap();
    for _ in 0..80 {
        append_expected(&log);
    }
    // Batch at base b has records with timestamps 1_000_000 + b + i: record at offset o has
    // timestamp 1_000_000 + base(o) + (o - base(o)) = 1_000_000 + o.
    for target in [0i64, 17, 100, 171] {
        let found = log
            .offset_for_timestamp(1_000_000 + target)
            .unwrap()
            .unwrap();
        assert_eq!(found.offset, target.max(0));
        assert_eq!(found.timestamp, 1_000_000 + target);
    }
    assert_eq!(log.offset_for_timestamp(i64::MAX).unwrap(), None);
    let max = log.max_timestamp().unwrap().unwrap();
    assert_eq!(max.offset, log.log_end_offset() - 1);
    assert_eq!(max.timestamp, 1_000_000 + max.offset);
}

#[test]
fn flush_policies_and_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    // Kafka's visibility: nothing flushes until someone waits (durable visibility would have
    // the flusher sync every append).
    let mut written = small_config();
    written
        .set("rill.high.watermark.visibility", "written")
        .unwrap();
    let log = m.create_log(&tp(0), written).unwrap();
    assert!(log.needs_sync_for_ack());
    let end = append_expected(&log);
    assert!(log.flushed_offset() < end);
    assert_eq!(log.high_watermark(), end, "written visibility");
    log.wait_durable(end).unwrap();
    assert_eq!(log.flushed_offset(), end);
    // Durable visibility: the flusher makes an append durable with nobody waiting.
    log.set_config(small_config());
    let end = append_expected(&log);
    let started = std::time::Instant::now();
    // Bounded: 30 s at most.
    while log.flushed_offset() < end && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(log.high_watermark(), end, "the flusher synced it");
    let mut config = small_config();
    config.set("flush.messages", "1").unwrap();
    log.set_config(config);
    let end = append_expected(&log);
    assert_eq!(
        log.flushed_offset(),
        end,
        "flush.messages=1 syncs every append"
    );
    let mut config = small_config();
    config.set("flush.ms", "1000").unwrap();
    log.set_config(config);
    assert!(!log.needs_sync_for_ack());
    let end = append_expected(&log);
    assert!(log.flushed_offset() < end);
    assert!(log.flush_if_due(crate::log::now_ms() + 2000));
    // The flusher syncs it; bounded: 30 s at most.
    let started = std::time::Instant::now();
    while log.flushed_offset() < end && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(log.flushed_offset(), end);

    // Eight threads appending and waiting: every wait returns with its offsets flushed.
    log.set_config(small_config());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20 {
                    let info = log.append(&build_batch(1, b"g", 0)).unwrap();
                    log.wait_durable(info.last_offset + 1).unwrap();
                    assert!(log.flushed_offset() > info.last_offset);
                }
            });
        }
    });
    assert_eq!(log.flushed_offset(), log.log_end_offset());
}

#[test]
fn manager_create_delete_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    m.create_log(&tp(0), small_config()).unwrap();
    assert!(matches!(
        m.create_log(&tp(0), small_config()),
        Err(StorageError::LogAlreadyExists { .. })
    ));
    for bad in ["", "a/b", "..", &"x".repeat(250)] {
        let r = m.create_log(&TopicPartition::new(bad, 0), small_config());
        assert!(
            matches!(r, Err(StorageError::InvalidTopic { .. })),
            "{bad:?}"
        );
    }
    assert!(m.get_log(&tp(9)).unwrap().is_none());
    assert!(matches!(
        m.delete_log(&tp(9)),
        Err(StorageError::UnknownPartition { .. })
    ));
    m.delete_log(&tp(0)).unwrap();
    assert!(!dir.path().join("t-0").exists());
    m.create_log(&tp(0), small_config()).unwrap();
    assert_eq!(m.partitions(), vec![tp(0)]);
    assert_eq!(
        TopicPartition::from_dir_name("my-topic-12"),
        Some(TopicPartition::new("my-topic", 12))
    );
}

/// ENOSPC for real: a 2 MiB tmpfs (the tests run as root here and in CI). Where mounting is
/// not allowed, RLIMIT_FSIZE in a child process stands in (writes past it fail with EFBIG).
#[test]
fn disk_full_fails_the_append_and_the_log_recovers() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let result = std::panic::catch_unwind(|| disk_full_scenario(mnt.path(), None));
        let _ = std::process::Command::new("umount")
            .arg(mnt.path())
            .status();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        return;
    }
    if std::env::var("RILL_DISK_FULL_CHILD").is_ok() {
        disk_full_scenario(mnt.path(), Some(256 * 1024));
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::log_basics::disk_full_fails_the_append_and_the_log_recovers",
            "--test-threads=1",
        ])
        .env("RILL_DISK_FULL_CHILD", "1")
        .status()
        .unwrap();
    assert!(status.success());
}

fn disk_full_scenario(dir: &std::path::Path, file_size_limit: Option<u64>) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let filler = dir.join("filler");
    if file_size_limit.is_none() {
        std::fs::write(&filler, vec![1u8; 1536 * 1024]).unwrap();
    }
    let m = manager(dir);
    let config = LogConfig {
        segment_bytes: 1 << 30,
        preallocate_step_bytes: 1 << 20,
        ..small_config()
    };
    let log = m.create_log(&tp(0), config).unwrap();
    if let Some(limit) = file_size_limit {
        // SAFETY: setting SIGXFSZ to SIG_IGN has no memory-safety preconditions; it makes the
        // kernel return EFBIG instead of killing this (child) process.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        setrlimit(
            Resource::Fsize,
            Rlimit {
                current: Some(limit),
                maximum: None,
            },
        )
        .unwrap();
    }
    let mut expected = Vec::new();
    let mut failed = None;
    for _ in 0..5000 {
        let batch = expected_batch(log.log_end_offset());
        match log.append(&batch) {
            Ok(_) => expected.push(batch),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match failed {
        Some(StorageError::DiskFull { .. }) => {}
        Some(StorageError::Io { ref source, .. }) if source.raw_os_error() == Some(libc::EFBIG) => {
        }
        other => panic!("expected a disk-full error, got {other:?}"),
    }
    assert!(!expected.is_empty());
    let end = log.log_end_offset();
    assert_eq!(
        read_all(&log),
        expected,
        "the failed append left the log as it was"
    );
    // Free space (or lift the limit): the same log takes appends again, nothing was lost.
    match file_size_limit {
        Some(_) => setrlimit(
            Resource::Fsize,
            Rlimit {
                current: None,
                maximum: None,
            },
        )
        .unwrap(),
        None => std::fs::remove_file(&filler).unwrap(),
    }
    expected.push(expected_batch(end));
    log.append(expected.last().unwrap()).unwrap();
    assert_eq!(log.log_end_offset(), end + expected_count(end));
    m.close().unwrap();
    drop((log, m));
    let m = manager(dir);
    assert_eq!(read_all(&m.get_log(&tp(0)).unwrap().unwrap()), expected);
}

/// A read-only file system (a tmpfs remounted read-only): opening and creating logs fail with a
/// typed error, never a panic, and the data is still there once it is writable again.
#[test]
fn read_only_file_system_gives_typed_errors() {
    let mnt = tempfile::tempdir().unwrap();
    let mount = |opts: &str| {
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(mnt.path())
            .status()
            .is_ok_and(|s| s.success())
    };
    let remount = |opts: &str| {
        std::process::Command::new("mount")
            .args(["-o", opts])
            .arg(mnt.path())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !mount("size=4m") {
        eprintln!("mount not permitted here: read-only file system test not run");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let dir = mnt.path().join("data");
        {
            let m = manager(&dir);
            let log = m.create_log(&tp(0), small_config()).unwrap();
            append_expected(&log);
            m.close().unwrap();
        }
        assert!(remount("remount,ro"));
        let m = manager(&dir);
        match m.create_log(&tp(1), small_config()) {
            Err(StorageError::ReadOnly { .. }) => {}
            other => panic!("expected ReadOnly, got {other:?}"),
        }
        // Opening needs to write (index rebuild after recovery): a typed error too.
        match m.get_log(&tp(0)) {
            Err(StorageError::ReadOnly { .. }) => {}
            Ok(Some(log)) => assert!(matches!(
                log.append(&expected_batch(log.log_end_offset())),
                Err(StorageError::ReadOnly { .. })
            )),
            other => panic!("expected ReadOnly, got {other:?}"),
        }
        drop(m);
        assert!(remount("remount,rw"));
        let m = manager(&dir);
        assert_eq!(
            read_all(&m.get_log(&tp(0)).unwrap().unwrap()),
            vec![expected_batch(0)]
        );
    });
    let _ = std::process::Command::new("umount")
        .arg(mnt.path())
        .status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
