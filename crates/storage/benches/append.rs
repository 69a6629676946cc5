//! Storage benchmark: append throughput (no flush, flush every MiB, group commit), opening a
//! large clean log and recovering an unflushed tail, each printed next to this machine's own
//! limits measured in the same run (DESIGN.md section 4). Prints figures; asserts nothing.
//!
//! `cargo bench -p rill-storage`. Environment: `RILL_BENCH_DIR` (default: a temp dir under
//! ./target), `RILL_BENCH_BIG_GIB` (size of the clean log to open, default 10).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_storage::batch::build_batch;
use rill_storage::{Log, LogConfig, LogManager, LogManagerConfig, TopicPartition};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const RECORD: usize = 1024;

fn gbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

/// pwrite of 1 MiB buffers into a file preallocated with fallocate: the append limit.
fn probe_pwrite(dir: &Path, total: u64) -> f64 {
    let path = dir.join("probe-pwrite");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, total).unwrap();
    let buf = vec![7u8; MIB as usize];
    let started = Instant::now();
    for i in 0..total / MIB {
        file.write_all_at(&buf, i * MIB).unwrap();
    }
    let r = gbps(total, started.elapsed());
    std::fs::remove_file(path).unwrap();
    r
}

/// write 1 MiB + fdatasync, repeated: the durable-append limit.
fn probe_fsync(dir: &Path, total: u64) -> f64 {
    let path = dir.join("probe-fsync");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let buf = vec![7u8; MIB as usize];
    let started = Instant::now();
    for i in 0..total / MIB {
        file.write_all_at(&buf, i * MIB).unwrap();
        file.sync_data().unwrap();
    }
    let r = gbps(total, started.elapsed());
    std::fs::remove_file(path).unwrap();
    r
}

fn batch_of(bytes: u64) -> Vec<u8> {
    let records = ((bytes as usize - 61) / (RECORD + 12)).max(1);
    build_batch(records, &[42u8; RECORD], 1_700_000_000_000)
}

fn fresh_log(m: &LogManager, name: &str, config: LogConfig) -> Arc<Log> {
    m.create_log(&TopicPartition::new(name, 0), config).unwrap()
}

fn never_flush() -> LogConfig {
    let mut c = LogConfig::default();
    c.set("flush.messages", &i64::MAX.to_string()).unwrap();
    c
}

/// Appends `total` bytes of `batch`, waiting for durability every `sync_every` bytes (0: never).
fn append_run(log: &Log, batch: &[u8], total: u64, sync_every: u64) -> f64 {
    let mut since_sync = 0;
    let started = Instant::now();
    let mut written = 0;
    while written < total {
        let info = log.append(batch).unwrap();
        written += batch.len() as u64;
        since_sync += batch.len() as u64;
        if sync_every > 0 && since_sync >= sync_every {
            log.wait_durable(info.last_offset + 1).unwrap();
            since_sync = 0;
        }
    }
    gbps(written, started.elapsed())
}

/// `threads` appenders on one log, each waiting for durability after every batch.
fn group_commit_run(
    log: &Arc<Log>,
    batch: &[u8],
    per_thread: u64,
    threads: usize,
) -> (f64, u64, u64) {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut written = 0;
                while written < per_thread {
                    let info = log.append(batch).unwrap();
                    log.wait_durable(info.last_offset + 1).unwrap();
                    written += batch.len() as u64;
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let total = per_thread * threads as u64;
    let appends = total / batch.len() as u64;
    (
        gbps(total, elapsed),
        appends * 1_000_000_000 / elapsed.as_nanos().max(1) as u64,
        appends / log.flush_count().max(1),
    )
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
    let big_gib: u64 = std::env::var("RILL_BENCH_BIG_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let run_started = Instant::now();

    println!(
        "rill-storage append benchmark (1 KiB records), data in {}",
        dir.display()
    );
    // Best of two rounds: the first pays for page-cache allocation and dirty throttling.
    let pwrite = probe_pwrite(dir, 512 * MIB).max(probe_pwrite(dir, 512 * MIB));
    let fsync = probe_fsync(dir, 256 * MIB);
    println!("limits: pwrite into preallocated file {pwrite:.2} GB/s; write+fdatasync per MiB {fsync:.2} GB/s");

    let m = LogManager::open(LogManagerConfig::new(dir.join("data"))).unwrap();
    for (label, size) in [("1 MiB", MIB), ("16 KiB", 16 * 1024)] {
        let batch = batch_of(size);
        let log = fresh_log(&m, &format!("noflush-{}", size), never_flush());
        let r = append_run(&log, &batch, GIB, 0);
        println!(
            "append {label} batches, no flush:        {r:.2} GB/s = {:.2} of pwrite limit",
            r / pwrite
        );
        m.delete_log(log.topic_partition()).unwrap();
        let log = fresh_log(&m, &format!("flush-{}", size), LogConfig::default());
        let r = append_run(&log, &batch, 256 * MIB, MIB);
        println!(
            "append {label} batches, flush every MiB: {r:.2} GB/s = {:.2} of fdatasync limit",
            r / fsync
        );
        m.delete_log(log.topic_partition()).unwrap();
    }

    let batch = batch_of(16 * 1024);
    let log = fresh_log(&m, "gc-1", LogConfig::default());
    let (one, one_ops, _) = group_commit_run(&log, &batch, 16 * MIB, 1);
    m.delete_log(log.topic_partition()).unwrap();
    let log = fresh_log(&m, "gc-8", LogConfig::default());
    let (eight, eight_ops, per_sync) = group_commit_run(&log, &batch, 16 * MIB, 8);
    m.delete_log(log.topic_partition()).unwrap();
    println!("16 KiB batches, durable each: 1 appender {one:.3} GB/s ({one_ops} appends/s); 8 appenders (group commit) {eight:.3} GB/s ({eight_ops} appends/s, {per_sync} appends per fdatasync) = {:.1}x", eight / one);
    m.close().unwrap();
    drop(m);

    // A large clean log: opening it must not scan it.
    let big_dir = dir.join("big");
    let tp = TopicPartition::new("big", 0);
    let batch = batch_of(MIB);
    {
        let m = LogManager::open(LogManagerConfig::new(&big_dir)).unwrap();
        let log = m.create_log(&tp, never_flush()).unwrap();
        append_run(&log, &batch, big_gib * GIB, 0);
        m.close().unwrap();
    }
    let started = Instant::now();
    let m = LogManager::open(LogManagerConfig::new(&big_dir)).unwrap();
    let log = m.get_log(&tp).unwrap().unwrap();
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "open a clean {big_gib} GiB log ({} segments): {open_ms:.1} ms (target < 100 ms)",
        log.segment_count()
    );
    // Then a 1 GiB tail that is never flushed, and a crash (no close).
    append_run(&log, &batch, GIB, 0);
    let end = log.log_end_offset();
    drop(log);
    drop(m);
    let started = Instant::now();
    let m = LogManager::open(LogManagerConfig::new(&big_dir)).unwrap();
    let log = m.get_log(&tp).unwrap().unwrap();
    let recover = started.elapsed();
    assert_eq!(
        log.log_end_offset(),
        end,
        "recovery kept the page-cached tail"
    );
    println!(
        "recover a 1 GiB unflushed tail: {:.0} ms ({:.2} GB/s scanned with CRC checks)",
        recover.as_secs_f64() * 1000.0,
        gbps(GIB, recover)
    );
    drop(log);
    drop(m);
    println!(
        "total benchmark time {:.1} s",
        run_started.elapsed().as_secs_f64()
    );
}
