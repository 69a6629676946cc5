//! `message.timestamp.type=LogAppendTime`: the log stamps each batch with the append time.

use super::*;
use crate::batch::{self, build_batch, build_producer_batch, BatchHeader, ProducerFields};
use crate::compression::Compression;
use crate::log::now_ms;
use crate::records::{BatchBuilder, BatchSpec, Headers, NewRecord};
use crate::TimestampType;

/// A producer timestamp far in the past, so that a lookup by append time cannot match it.
const CREATE_TIME: i64 = 1_000;

fn append_time_config() -> LogConfig {
    LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..small_config()
    }
}

/// `count` records of `codec` with timestamps `CREATE_TIME + i`.
fn compressed_batch(codec: Compression, count: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(
        BatchSpec {
            base_timestamp: CREATE_TIME,
            ..BatchSpec::default()
        },
        codec,
    );
    let value = vec![7u8; 300];
    for i in 0..count {
        b.push(&NewRecord {
            offset_delta: i as i32,
            timestamp_delta: i as i64,
            key: None,
            value: Some(&value),
            headers: Headers::NONE,
        });
    }
    let mut out = Vec::new();
    b.finish(&mut out).unwrap();
    out
}

/// Waits until the wall clock has moved past `t` (bounded: a few milliseconds).
fn clock_past(t: i64) {
    for _ in 0..1000 {
        if now_ms() > t {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    panic!("the clock did not move in 500 ms");
}

#[test]
fn batches_carry_the_append_time_with_a_valid_crc_and_are_found_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let log = m.create_log(&tp(0), append_time_config()).unwrap();
    let mut sent = Vec::new();
    let mut times = Vec::new();
    // Uncompressed and compressed batches; small segments, so that lookups cross rolls and
    // index entries.
    for i in 0..30 {
        let b = match i % 3 {
            0 => build_batch(1 + i % 4, &[i as u8; 900], CREATE_TIME),
            1 => compressed_batch(Compression::Zstd, 1 + i % 5),
            _ => compressed_batch(Compression::Gzip, 2),
        };
        let before = now_ms();
        let info = log.append(&b).unwrap();
        let after = now_ms();
        assert!(
            (before..=after).contains(&info.log_append_time_ms),
            "append time {} outside [{before}, {after}]",
            info.log_append_time_ms
        );
        assert_eq!(info.max_timestamp, info.log_append_time_ms);
        times.push((info.base_offset, info.log_append_time_ms));
        sent.push(b);
        clock_past(after);
    }
    assert!(log.segment_count() > 1, "small segments must have rolled");

    let check_stored = |log: &Log| {
        let stored = read_all(log); // validates every batch, CRC included
        assert_eq!(stored.len(), sent.len());
        for ((s, orig), &(base, time)) in stored.iter().zip(&sent).zip(&times) {
            // The whole produce-path validation passes too (records and all).
            let h = batch::validate(s, usize::MAX).unwrap();
            batch::validate_records_all(s, 1 << 20).unwrap();
            let o = BatchHeader::parse(orig).unwrap();
            assert!(h.is_log_append_time(), "attributes bit 3 at {base}");
            assert_eq!(h.attributes, o.attributes | batch::LOG_APPEND_TIME_FLAG);
            assert_eq!((h.base_offset, h.max_timestamp), (base, time));
            assert_eq!(h.base_timestamp, CREATE_TIME, "baseTimestamp is kept");
            assert_eq!(
                s[batch::HEADER_SIZE..],
                orig[batch::HEADER_SIZE..],
                "records untouched"
            );
            if h.compression() == 0 {
                let ts = batch::record_timestamps(s).unwrap();
                assert!(ts.iter().all(|&(_, t)| t == time), "records read as {ts:?}");
            }
        }
        // Lookups by time see the append times only (the producer's are far older): every
        // batch is found by its own append time, at its first record.
        for &(base, time) in &times {
            let found = log.offset_for_timestamp(time).unwrap().unwrap();
            assert_eq!((found.offset, found.timestamp), (base, time));
        }
        let found = log.offset_for_timestamp(CREATE_TIME).unwrap().unwrap();
        assert_eq!((found.offset, found.timestamp), times[0]);
        let last = *times.last().unwrap();
        assert_eq!(log.offset_for_timestamp(last.1 + 1).unwrap(), None);
        let max = log.max_timestamp().unwrap().unwrap();
        assert_eq!((max.offset, max.timestamp), last);
    };
    check_stored(&log);
    m.close().unwrap();
    drop(log);

    // After a restart (recovery and index rebuilds read the stamped headers) the same holds.
    for entry in std::fs::read_dir(dir.path().join("t-0")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "timeindex") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let m = manager(dir.path());
    let log = m.get_log(&tp(0)).unwrap().unwrap();
    check_stored(&log);
}

#[test]
fn create_time_topics_keep_the_producer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let log = m.create_log(&tp(0), small_config()).unwrap();
    let b = compressed_batch(Compression::Lz4, 3);
    let info = log.append(&b).unwrap();
    assert_eq!(info.log_append_time_ms, -1);
    assert_eq!(info.max_timestamp, CREATE_TIME + 2);
    let stored = read_all(&log);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0][16..],
        b[16..],
        "past base offset, length and leader epoch: the producer's bytes"
    );

    // Switching the topic to LogAppendTime stamps the appends after it.
    log.set_config(append_time_config());
    let info = log.append(&build_batch(2, b"x", CREATE_TIME)).unwrap();
    assert!(info.log_append_time_ms >= info.max_timestamp && info.max_timestamp > CREATE_TIME);
    let stored = read_all(&log);
    assert!(!BatchHeader::parse(&stored[0]).unwrap().is_log_append_time());
    assert!(BatchHeader::parse(&stored[1]).unwrap().is_log_append_time());
}

#[test]
fn a_retried_batch_is_answered_with_its_first_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let log = m.create_log(&tp(0), append_time_config()).unwrap();
    let b = build_producer_batch(3, b"v", CREATE_TIME, ProducerFields::idempotent(7, 0, 0));
    let first = log.append(&b).unwrap();
    assert!(!first.duplicate && first.log_append_time_ms > CREATE_TIME);
    clock_past(first.log_append_time_ms);
    let retry = log.append(&b).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, first.base_offset);
    assert_eq!(retry.log_append_time_ms, first.log_append_time_ms);
    // The producer state keeps the append time (expiration counts from it).
    let state = log.producer_state(7).unwrap();
    assert_eq!(state.last_timestamp_ms, first.log_append_time_ms);
    assert_eq!(read_all(&log).len(), 1);
}
