//! `rill.tail.cache.bytes` on a real file system: flushed data behind the window leaves the
//! page cache, the window stays, and 0 keeps every page.

use super::*;
use crate::batch::build_batch;
use crate::page_cache;
use crate::tail_pages::RELEASE_STEP_BYTES;

const MIB: u64 = 1 << 20;

/// Appends batches of about 0.9 MiB, each made durable before the next (releases are planned
/// at the append after a flush), until two release steps past a 2 MiB window are written;
/// returns the log and the batch count.
fn write_batches(m: &LogManager, window_bytes: u64) -> (std::sync::Arc<Log>, u64) {
    let mut config = LogConfig::default();
    config
        .set("rill.tail.cache.bytes", &window_bytes.to_string())
        .unwrap();
    let log = m.create_log(&tp(0), config).unwrap();
    let batch = build_batch(900, &[7u8; 1040], 1_000_000);
    assert!(batch.len() as u64 > MIB * 8 / 10 && batch.len() as u64 <= MIB);
    let count = (2 * MIB + 2 * RELEASE_STEP_BYTES) / batch.len() as u64 + 3;
    // Bounded: `count` appends.
    for _ in 0..count {
        log.append(&batch).unwrap();
        log.flush().unwrap();
    }
    (log, count)
}

/// Pages in memory of `len` bytes near the start of the log's only segment (past the first
/// batch header, which finding the file reads back in) and of its last `len` bytes.
fn head_and_tail_resident(log: &Log, len: u64) -> (page_cache::Residency, page_cache::Residency) {
    let read = log.read(0, 1, true).unwrap();
    let file = &read.slices[0].file;
    let size = file.metadata().unwrap().len();
    let end = log.read(log.log_end_offset() - 1, 1, true).unwrap();
    let last = &end.slices[0];
    let tail_end = last.position + u64::from(last.len);
    assert!(tail_end <= size && tail_end > len);
    let head = page_cache::residency(file, 64 * 1024, len).unwrap();
    let tail = page_cache::residency(file, tail_end - len, len).unwrap();
    (head, tail)
}

#[test]
fn flushed_pages_behind_the_window_leave_the_cache_and_the_window_stays() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let (log, count) = write_batches(&m, 2 * MIB);
    let (head, tail) = head_and_tail_resident(&log, MIB);
    assert_eq!(
        head.resident_pages, 0,
        "the oldest flushed MiB was given back: {head:?}"
    );
    assert!(
        tail.is_resident(),
        "the newest MiB is within the window: {tail:?}"
    );
    // Every byte is still there.
    assert_eq!(read_all(&log).len() as u64, count);
}

#[test]
fn a_window_of_zero_keeps_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let (log, _) = write_batches(&m, 0);
    let (head, tail) = head_and_tail_resident(&log, MIB);
    assert!(head.is_resident(), "{head:?}");
    assert!(tail.is_resident(), "{tail:?}");
}
