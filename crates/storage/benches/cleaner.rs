//! Log cleaner benchmark: one compaction pass over a log of 1 GiB of keyed updates (10 000
//! keys, 1 KiB values, 100 records a batch, 64 MiB segments), printed as MB/s of input next to
//! this machine's sequential read (pread of a page-cached file) and write (pwrite into a
//! preallocated file) limits measured in the same run. Prints figures; asserts nothing.
//!
//! `cargo bench -p rill-storage --bench cleaner`. Environment: `RILL_BENCH_DIR` (default: a
//! temp dir under ./target), `RILL_BENCH_CLEAN_MIB` (input size, default 1024).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rill_storage::keyed_records::build_keyed_batch;
use rill_storage::{CleanerConfig, LogConfig, LogManager, LogManagerConfig, TopicPartition};

const MIB: u64 = 1 << 20;
const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 1024;
const BATCH_RECORDS: u64 = 100;

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// pwrite of 1 MiB buffers into a preallocated file, then pread of it back (page cache): the
/// sequential write and read limits.
fn probes(dir: &Path, total: u64) -> (f64, f64) {
    let path = dir.join("probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, total).unwrap();
    let mut buf = vec![7u8; MIB as usize];
    let started = Instant::now();
    for i in 0..total / MIB {
        file.write_all_at(&buf, i * MIB).unwrap();
    }
    let write = mbps(total, started.elapsed());
    let started = Instant::now();
    for i in 0..total / MIB {
        file.read_exact_at(&mut buf, i * MIB).unwrap();
    }
    let read = mbps(total, started.elapsed());
    std::fs::remove_file(path).unwrap();
    (write, read)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench asks benches to list their tests
    }
    let base = std::env::var("RILL_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| std::env::current_dir().unwrap().join("target"));
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let dir = tmp.path();
    let input_mib: u64 = std::env::var("RILL_BENCH_CLEAN_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    println!(
        "rill-storage cleaner benchmark: {input_mib} MiB of updates over {KEYS} keys, data in {}",
        dir.display()
    );
    let (write, read) = probes(dir, 512 * MIB);
    println!(
        "limits: sequential pwrite {write:.0} MB/s; sequential pread (page cache) {read:.0} MB/s"
    );

    let mut config = LogManagerConfig::new(dir.join("data"));
    config.cleaner = CleanerConfig::default();
    let m = LogManager::open(config).unwrap();
    let tp = TopicPartition::new("compacted", 0);
    let mut log_config = LogConfig::default();
    log_config.set("cleanup.policy", "compact").unwrap();
    log_config
        .set("segment.bytes", &(64 * MIB).to_string())
        .unwrap();
    log_config
        .set("flush.messages", &i64::MAX.to_string())
        .unwrap();
    let log = m.create_log(&tp, log_config).unwrap();
    let value = vec![42u8; VALUE_BYTES];
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|k| format!("key-{k:08}").into_bytes())
        .collect();
    let mut next = 0u64;
    let started = Instant::now();
    // Bounded by the input size.
    while log.size_bytes() < input_mib * MIB {
        let records: Vec<_> = (0..BATCH_RECORDS)
            .map(|i| {
                (
                    Some(keys[((next + i) % KEYS) as usize].as_slice()),
                    Some(value.as_slice()),
                )
            })
            .collect();
        next += BATCH_RECORDS;
        log.append(&build_keyed_batch(&records, 1_700_000_000_000))
            .unwrap();
    }
    println!(
        "wrote {} records, {} MiB in {:.1} s",
        next,
        log.size_bytes() / MIB,
        started.elapsed().as_secs_f64()
    );
    m.checkpoint().unwrap();
    let started = Instant::now();
    let stats = m.clean_log(&tp).unwrap().expect("a dirty log");
    let elapsed = started.elapsed();
    let throughput = mbps(stats.bytes_read, elapsed);
    println!(
        "clean: read {} MiB, wrote {} MiB, {} records kept, {} removed, {} -> {} segments, {:.2} s",
        stats.bytes_read / MIB,
        stats.bytes_written / MIB,
        stats.records_kept,
        stats.records_removed,
        stats.segments_before,
        stats.segments_after,
        elapsed.as_secs_f64()
    );
    println!(
        "cleaner throughput {throughput:.0} MB/s of input = {:.2} of read limit, {:.2} of write limit \
         (the pass reads the dirty part twice: once for the key map, once to rewrite)",
        throughput / read,
        throughput / write
    );
    m.close().unwrap();
}
