//! Storage benchmark: the cost of idempotent-producer checks on the append path. Appends
//! 16 KiB batches of 1 KiB records round-robin to 1 and to 8 partition logs, with producer ids
//! (sequence checked, producer state updated) and without, alternating, and prints the median
//! on/off throughput ratio next to the pwrite limit measured in the same run. No flushes: the
//! cheapest append path, where a per-batch check weighs the most. Prints figures; asserts
//! nothing.
//!
//! `cargo bench -p rill-storage --bench idempotence`. `RILL_BENCH_DIR` picks the directory
//! (default: a temp dir under ./target).

use std::sync::Arc;
use std::time::Instant;

use rill_storage::batch::{build_producer_batch, ProducerFields};
use rill_storage::{Log, LogConfig, LogManager, LogManagerConfig, TopicPartition};

const RECORD: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
const TOTAL_BYTES: usize = 64 << 20;
const ROUNDS: usize = 9;

/// Batches in append order: batch `i` goes to partition `i % partitions`; with `idempotent`,
/// producer `i % partitions` at the next sequences of that partition.
fn batches(partitions: usize, idempotent: bool) -> Vec<Vec<u8>> {
    let value = vec![b'x'; RECORD];
    let per_batch = RECORD * RECORDS_PER_BATCH;
    (0..TOTAL_BYTES / per_batch)
        .map(|i| {
            let producer = if idempotent {
                let seq = (i / partitions * RECORDS_PER_BATCH) as i32;
                ProducerFields::idempotent(1000 + (i % partitions) as i64, 0, seq)
            } else {
                ProducerFields::NONE
            };
            build_producer_batch(RECORDS_PER_BATCH, &value, 1_700_000_000_000, producer)
        })
        .collect()
}

fn logs(m: &LogManager, name: &str, partitions: usize) -> Vec<Arc<Log>> {
    let mut config = LogConfig::default();
    config.set("flush.ms", "9223372036854775807").unwrap();
    config.set("segment.bytes", "1073741824").unwrap();
    (0..partitions as i32)
        .map(|p| {
            m.create_log(&TopicPartition::new(name, p), config.clone())
                .unwrap()
        })
        .collect()
}

/// MB/s of appending `batches` round-robin to fresh logs.
fn run(m: &LogManager, name: &str, partitions: usize, batches: &[Vec<u8>]) -> f64 {
    let logs = logs(m, name, partitions);
    let started = Instant::now();
    for (i, b) in batches.iter().enumerate() {
        logs[i % partitions].append(b).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    for p in 0..partitions as i32 {
        m.delete_log(&TopicPartition::new(name, p)).unwrap();
    }
    batches.iter().map(Vec::len).sum::<usize>() as f64 / secs / 1e6
}

fn probe_pwrite(dir: &std::path::Path) -> f64 {
    use std::os::unix::fs::FileExt;
    let path = dir.join("probe");
    let file = std::fs::File::create(&path).unwrap();
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        TOTAL_BYTES as u64,
    )
    .unwrap();
    let buf = vec![7u8; 1 << 20];
    let started = Instant::now();
    for i in 0..TOTAL_BYTES / buf.len() {
        file.write_all_at(&buf, (i * buf.len()) as u64).unwrap();
    }
    let r = TOTAL_BYTES as f64 / started.elapsed().as_secs_f64() / 1e6;
    std::fs::remove_file(path).unwrap();
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let base = std::env::var("RILL_BENCH_DIR").unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path().join("data"))).unwrap();
    let limit = probe_pwrite(dir.path());
    println!("pwrite limit {limit:.0} MB/s; {} MiB per run, {RECORD} B records, {RECORDS_PER_BATCH} per batch, {ROUNDS} rounds", TOTAL_BYTES >> 20);
    for partitions in [1usize, 8] {
        let plain = batches(partitions, false);
        let idem = batches(partitions, true);
        let (mut offs, mut ons) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            offs.push(run(
                &m,
                &format!("off{partitions}r{round}"),
                partitions,
                &plain,
            ));
            ons.push(run(
                &m,
                &format!("on{partitions}r{round}"),
                partitions,
                &idem,
            ));
        }
        let (off, on) = (median(offs), median(ons));
        println!(
            "partitions={partitions}: idempotence off {off:.0} MB/s ({:.2} of pwrite), on {on:.0} MB/s ({:.2} of pwrite), on/off {:.3} (overhead {:+.1} %)",
            off / limit,
            on / limit,
            on / off,
            100.0 * (1.0 - on / off)
        );
    }
}
