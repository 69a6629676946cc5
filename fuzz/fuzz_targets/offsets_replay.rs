//! `__consumer_offsets` replay: the first byte picks the mode.
//! - even: the rest is split into a record key and value and decoded as the coordinator
//!   decodes each replayed record (`StoredRecord::decode`);
//! - odd: the rest is the partition's segment file; storage recovers it, then the whole
//!   partition is replayed into the group coordinator (`GroupCoordinator::load`).
//! Either way a malformed record is an error or skipped, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_broker::coordinator::group::{GroupConfig, GroupCoordinator, StoredRecord};
use rill_storage::{LogManager, LogManagerConfig, TopicPartition};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let split = rest.first().map_or(0, |&b| usize::from(b)).min(rest.len());
        let (key, value) = rest.split_at(split);
        let value = (mode & 2 == 0).then_some(value);
        let _ = StoredRecord::decode(key, value);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TopicPartition::new("__consumer_offsets", 0);
    let partition_dir = dir.path().join(tp.dir_name());
    std::fs::create_dir_all(&partition_dir).expect("mkdir");
    std::fs::write(partition_dir.join("00000000000000000000.log"), rest).expect("write");
    let logs = LogManager::open(LogManagerConfig::new(dir.path())).expect("open storage");
    if let Ok(Some(log)) = logs.get_log(&tp) {
        let config = GroupConfig {
            offsets_partitions: 1,
            ..GroupConfig::default()
        };
        let _ = GroupCoordinator::load(config, vec![log]);
    }
    let _ = logs.close();
});
