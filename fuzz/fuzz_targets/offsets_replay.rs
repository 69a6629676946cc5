//! `__consumer_offsets` replay: the first byte picks the mode.
//! - even: the rest is split into a record key and value and decoded as the coordinator
//!   decodes each replayed record (`StoredRecord::decode`);
//! - odd: the rest is what a read of the partition returns, replayed into a group shard as the
//!   coordinator runtime replays each read at load (`coordinator::runtime::replay_batches`). Storage serves only batches that passed recovery, so
//!   the input is cut, as recovery cuts a segment, before the first batch that fails
//!   `batch::validate_stored` or does not continue the offsets; with bit 1 of the mode byte
//!   set, each batch's CRC is recomputed first so the fuzzer reaches the records.
//!
//! Either way a malformed record is an error or skipped, never a panic. Everything runs in
//! memory: reading the partition from a segment file is storage's recovery, fuzzed by the
//! `segment_recovery` target, and replay from disk is covered by the broker's restart tests
//! (`offsets_and_static_members_survive_restart`).

#![no_main]

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rill_broker::coordinator::group::{GroupShard, StoredRecord};
use rill_broker::coordinator::runtime::replay_batches;
use rill_storage::batch::{self, BatchHeader, HEADER_SIZE};

/// Largest batch the offsets topic stores (the broker's default `message.max.bytes`).
const MAX_BATCH_BYTES: usize = 1 << 20;

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
    let mut bytes = rest.to_vec();
    let Some(first_offset) = stored_prefix(&mut bytes, mode & 2 != 0) else {
        return;
    };
    let mut shard = GroupShard::new(Arc::new(AtomicUsize::new(0)));
    if let Ok((next, _)) = replay_batches(0, &mut shard, &bytes, first_offset) {
        assert!(next > first_offset, "replay returned without progress");
    }
});

/// Cuts `bytes` to the run of valid, contiguous batches at its front (what recovery keeps) and
/// returns the first batch's base offset, or `None` if not even one batch is valid.
fn stored_prefix(bytes: &mut Vec<u8>, fix_crcs: bool) -> Option<i64> {
    let mut at = 0;
    let mut first = None;
    let mut next_offset = 0;
    // Bounded: every iteration moves `at` past a whole batch or stops.
    loop {
        let Some(header) = BatchHeader::parse(&bytes[at..]) else {
            break;
        };
        let size = header.total_size();
        if fix_crcs && size >= HEADER_SIZE && at + size <= bytes.len() {
            let crc = crc32c::crc32c(&bytes[at + 21..at + size]);
            bytes[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        }
        let Ok(header) = batch::validate_stored(&bytes[at..], MAX_BATCH_BYTES) else {
            break;
        };
        if first.is_some() && header.base_offset != next_offset {
            break;
        }
        first.get_or_insert(header.base_offset);
        next_offset = header.last_offset() + 1;
        at += size;
    }
    bytes.truncate(at);
    first
}
