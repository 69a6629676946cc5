//! Tests that span modules: the log's behaviour, a model-based property test, crash and
//! simulated power-loss tests, and many partitions.

mod compaction;
mod crash;
mod faults;
mod idempotence;
mod kill_anywhere;
mod log_append_time;
mod log_basics;
mod many_partitions;
mod model;
mod power_loss;
mod sim_io;
mod tail_cache;
mod transactions;

use crate::batch::build_batch;
use crate::{Log, LogConfig, LogManager, LogManagerConfig, TopicPartition};

/// The batch a test writes at `base_offset`: its contents derive from the offset so any
/// reader can tell what must be there. Returned as it will be stored (offset assigned).
pub fn expected_batch(base_offset: i64) -> Vec<u8> {
    let b = base_offset as usize;
    let mut batch = build_batch(
        1 + b % 5,
        &vec![(b % 251) as u8; 20 + (b * 37) % 700],
        1_000_000 + base_offset,
    );
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch
}

/// Number of records in [`expected_batch`] for `base_offset`.
pub fn expected_count(base_offset: i64) -> i64 {
    1 + base_offset % 5
}

pub fn tp(n: i32) -> TopicPartition {
    TopicPartition::new("t", n)
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        preallocate_step_bytes: 16 * 1024,
        ..LogConfig::default()
    }
}

pub fn manager(dir: &std::path::Path) -> LogManager {
    let mut config = LogManagerConfig::new(dir);
    config.default_log_config = small_config();
    LogManager::open(config).unwrap()
}

/// Reads the whole log batch by batch, asserting each batch is valid, and returns them. Waits
/// for durability first: with durable visibility reads stop at the flushed offset.
pub fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    log.wait_durable(end).unwrap();
    assert!(log.high_watermark() >= end, "durable, hence visible");
    // Bounded: each read advances past at least one batch or ends the loop.
    while offset < end {
        let bytes = log.read_bytes(offset, 64 * 1024).unwrap();
        assert!(
            !bytes.is_empty(),
            "read at {offset} below the end {} returned nothing",
            log.log_end_offset()
        );
        let mut at = 0;
        while at < bytes.len() {
            let h = crate::batch::validate_stored(&bytes[at..], usize::MAX)
                .expect("log holds only valid batches");
            out.push(bytes[at..at + h.total_size()].to_vec());
            offset = h.last_offset() + 1;
            at += h.total_size();
        }
    }
    out
}
