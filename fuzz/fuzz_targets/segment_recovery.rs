//! Segment recovery on garbage files: the input is split into a `.log` and an `.index` file
//! of one partition (the first two bytes give the index length). Storage must open the
//! partition (truncating at the first invalid batch and rebuilding the index), serve reads and
//! time lookups over what it kept, and accept an append after it, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_storage::{batch, LogManager, LogManagerConfig, TopicPartition};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let index_len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
    let (index, log_bytes) = data[2..].split_at(index_len);
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TopicPartition::new("t", 0);
    let partition_dir = dir.path().join(tp.dir_name());
    std::fs::create_dir_all(&partition_dir).expect("mkdir");
    std::fs::write(partition_dir.join("00000000000000000000.log"), log_bytes).expect("write");
    std::fs::write(partition_dir.join("00000000000000000000.index"), index).expect("write");
    let logs = LogManager::open(LogManagerConfig::new(dir.path())).expect("open storage");
    if let Ok(Some(log)) = logs.get_log(&tp) {
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
            let Ok(headers) = batch::validate_all(&bytes, 1 << 20) else {
                panic!("recovered log serves an invalid batch at {offset}");
            };
            let last = headers
                .last()
                .expect("validate_all returns at least one")
                .last_offset();
            assert!(last >= offset, "no progress at {offset}");
            offset = last + 1;
        }
        let _ = log.offset_for_timestamp(0);
        let appended = log
            .append(&batch::build_batch(2, b"after", 0))
            .expect("a recovered log takes appends");
        assert_eq!(appended.base_offset, end);
    }
    let _ = logs.close();
});
