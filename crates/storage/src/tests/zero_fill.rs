//! Zero-filling ahead of small appends (`zero_ahead.rs`), seen through the [`FileIo`] seam:
//! the zeros land only past the data, within the preallocation, never from a large append,
//! and the log reads back whole, before and after a reopen.

use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::*;
use crate::file_io::{FileIo, IoFile, OsIo};
use crate::zero_ahead::ZERO_CHUNK_BYTES;

/// One write to a `.log` file.
#[derive(Debug, Clone, Copy)]
struct LogWrite {
    offset: u64,
    len: u64,
    zeros: bool,
    /// The file's length when it was written (the preallocated end).
    file_len: u64,
}

/// The real file system, recording every write to a `.log` file.
#[derive(Debug, Default)]
struct RecordingIo {
    writes: Mutex<Vec<LogWrite>>,
}

impl FileIo for RecordingIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<IoFile> {
        OsIo.open(path, create)
    }

    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        if file.path().extension().is_some_and(|e| e == "log") {
            let len = bufs.iter().map(|b| b.len() as u64).sum();
            let zeros = bufs.iter().all(|b| b.iter().all(|&x| x == 0));
            let file_len = file.file_len()?;
            self.writes.lock().push(LogWrite {
                offset,
                len,
                zeros,
                file_len,
            });
        }
        OsIo.write_at(file, bufs, offset)
    }

    fn sync_data(&self, file: &IoFile) -> io::Result<()> {
        OsIo.sync_data(file)
    }

    fn allocate(&self, file: &IoFile, len: u64) -> io::Result<()> {
        OsIo.allocate(file, len)
    }

    fn sync_fs(&self, file: &IoFile) -> io::Result<()> {
        OsIo.sync_fs(file)
    }

    fn set_len(&self, file: &IoFile, len: u64) -> io::Result<()> {
        OsIo.set_len(file, len)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsIo.sync_dir(dir)
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        preallocate_step_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, io: &Arc<RecordingIo>) -> LogManager {
    let mut c = LogManagerConfig::new(dir);
    c.default_log_config = config();
    let io: Arc<dyn FileIo> = io.clone();
    LogManager::open_with_io(c, io).unwrap()
}

/// Checks every zero write of `writes` lies past all data written before it and inside the
/// file's preallocated length; returns how many there were.
fn check_zero_writes(writes: &[LogWrite]) -> usize {
    let mut data_end = 0u64;
    let mut zero_writes = 0;
    for w in writes {
        if w.zeros {
            zero_writes += 1;
            assert!(
                w.offset >= data_end,
                "zeros at {} over data ending at {data_end}",
                w.offset
            );
            assert!(
                w.offset + w.len <= w.file_len,
                "zeros past the preallocation"
            );
            assert!(w.len <= ZERO_CHUNK_BYTES);
        } else {
            data_end = data_end.max(w.offset + w.len);
        }
    }
    zero_writes
}

/// Small appends fill zeros ahead of themselves, only past the data and inside the
/// preallocation, and every batch reads back as written, also after the log is reopened.
#[test]
fn small_appends_zero_fill_ahead_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(RecordingIo::default());
    let mut written = Vec::new();
    {
        let m = open(dir.path(), &io);
        let log = m.create_log(&tp(0), config()).unwrap();
        // ~0.75 MB in ~2 000 small appends, each synced as an acks=all append would be;
        // paced so that chunks (at most one per `ZERO_INTERVAL`) can keep ahead.
        for i in 0..2_000 {
            let batch = expected_batch(log.log_end_offset());
            log.append(&batch).unwrap();
            log.wait_durable(log.log_end_offset()).unwrap();
            written.push(batch);
            if i % 100 == 99 {
                std::thread::sleep(crate::zero_ahead::ZERO_INTERVAL);
            }
        }
        assert_eq!(read_all(&log), written);
        m.close().unwrap();
    }
    let writes = io.writes.lock().clone();
    let zero_writes = check_zero_writes(&writes);
    // Without the fill none would be written; with it, at least one per 256 KiB of data.
    assert!(zero_writes >= 2, "{zero_writes} zero writes in {writes:?}");
    let m = open(dir.path(), &io);
    let log = m.get_log(&tp(0)).unwrap().expect("the log exists");
    assert_eq!(read_all(&log), written, "after reopening");
    m.close().unwrap();
}

/// Appends of 64 KiB or more write no zeros (their syncs are large anyway).
#[test]
fn large_appends_do_not_zero_fill() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(RecordingIo::default());
    let m = open(dir.path(), &io);
    let log = m.create_log(&tp(0), config()).unwrap();
    let mut written = Vec::new();
    for _ in 0..8 {
        let base = log.log_end_offset();
        let mut batch = crate::batch::build_batch(64, &[5u8; 1100], 1_000_000 + base);
        assert!(batch.len() >= 64 * 1024);
        log.append(&batch).unwrap();
        batch[0..8].copy_from_slice(&base.to_be_bytes());
        written.push(batch);
    }
    assert_eq!(read_all(&log), written);
    let writes = io.writes.lock().clone();
    assert_eq!(check_zero_writes(&writes), 0, "{writes:?}");
    assert_eq!(writes.len(), 8);
    m.close().unwrap();
}
