//! Segment recovery on garbage files: the input is split into a `.log` and an `.index` file
//! of one partition (the first two bytes give the index length). Storage must open the
//! partition (truncating at the first invalid batch and rebuilding the index), serve reads and
//! time lookups over what it kept, accept an append after it and close it, never panic.
//!
//! One `LogManager` (and its flusher thread) serves every input: each input's files are put
//! in a fresh partition directory that the manager then finds (`LogManager::discover`) and
//! recovers on first use, as it does at start-up, and the partition is deleted afterwards.
//! Opening a manager per input (thread start and join, a data directory) took most of the
//! time. The data directory is on tmpfs when `scripts/fuzz` runs it.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rill_storage::{batch, LogManager, LogManagerConfig, TopicPartition};

struct Fixture {
    logs: LogManager,
    partition_dir: PathBuf,
    tp: TopicPartition,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = LogManager::open(LogManagerConfig::new(dir.path())).expect("open storage");
        let tp = TopicPartition::new("t", 0);
        Fixture {
            partition_dir: dir.path().join(tp.dir_name()),
            logs,
            tp,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let index_len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
    let (index, log_bytes) = data[2..].split_at(index_len);
    let f = fixture();
    let dir = &f.partition_dir;
    std::fs::create_dir(dir).expect("mkdir (the last input's partition was deleted)");
    std::fs::write(dir.join("00000000000000000000.log"), log_bytes).expect("write");
    std::fs::write(dir.join("00000000000000000000.index"), index).expect("write");
    assert_eq!(f.logs.discover().expect("list the data directory"), 1);
    if let Ok(Some(log)) = f.logs.get_log(&f.tp) {
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        assert!(start <= end, "log start {start} past log end {end}");
        let mut offset = start;
        // Bounded: each read returns at least one batch, or nothing.
        for _ in 0..1000 {
            if offset >= end {
                break;
            }
            let Ok(bytes) = log.read_bytes(offset, 1 << 16) else {
                break;
            };
            // Stored batches, as recovery checks them: a cleaned batch keeps its last offset
            // with fewer records (`batch::validate_stored`), which a produced one may not.
            let mut last = None;
            let mut at = 0;
            // Bounded: each step moves past at least one batch header.
            while at < bytes.len() {
                let header = match batch::validate_stored(&bytes[at..], 1 << 20) {
                    Ok(header) => header,
                    Err(e) => panic!("recovered log serves an invalid batch at {offset}: {e}"),
                };
                at += header.total_size();
                last = Some(header.last_offset());
            }
            let last = last.expect("a read returns at least one batch");
            assert!(last >= offset, "no progress at {offset}");
            offset = last + 1;
        }
        let _ = log.offset_for_timestamp(0);
        let appended = log
            .append(&batch::build_batch(2, b"after", 0))
            .expect("a recovered log takes appends");
        assert_eq!(appended.base_offset, end);
    }
    // Flushes, trims the preallocated tail and writes the recovery point checkpoint.
    let _ = f.logs.close();
    f.logs
        .delete_log(&f.tp)
        .expect("delete the partition for the next input");
});
