//! SIGKILL anywhere: a seeded random workload over a [`LogManager`] on [`SimIo`] (appends to
//! two plain partitions from plain, idempotent and transactional producers with commit and
//! abort markers, keyed appends and cleaner passes on a compacted partition, rolls,
//! checkpoints with producer snapshots, retention by size, `delete_records`, and a partition
//! deleted and re-created) is frozen at its n-th durable file operation, for n sampled over
//! the whole run. The files are copied as the kill leaves them and reopened with the real
//! file system; then:
//! - every batch readable is valid, and every acknowledged append is there at its offset,
//!   byte for byte (unless the log start, moved by retention or `delete_records`, passed it);
//! - the log start is not below an acknowledged `delete_records`, and not above where the
//!   operation running at the kill would have put it;
//! - a retry of each idempotent producer's last acknowledged batch is answered as a duplicate
//!   with its first offset;
//! - the last stable offset and the aborted transactions a read_committed read lists agree
//!   with the markers in the log;
//! - on the compacted partition, each key's last acknowledged value (or a later one) is there.
//!
//! An append is acknowledged once `wait_durable` returned for it, as acks=all. Each seed runs
//! the workload once without a kill (which sizes the sweep and records where each operation
//! leaves the log start), then `KILLS` times frozen at a random operation.
//! `RILL_KILL_SEED=N` replays one seed, `RILL_KILL_SEEDS=N` runs N (default 12);
//! `RILL_KILL_DEBUG=1` prints each plain partition's batches, files and the workload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::sim_io::SimIo;
use super::*;
use crate::batch::{build_producer_batch, BatchHeader, ProducerFields};
use crate::keyed_records::{build_keyed_batch, decode};
use crate::log::Isolation;
use crate::{AbortedTxn, TxnMarker};

/// Attributes bit of a transactional batch.
const TRANSACTIONAL: i16 = 0x10;
/// Kills per seed (each a fresh run of the workload frozen at a random operation).
const KILLS: usize = 12;
/// The two plain partitions are 0 and 1; this one is compacted.
const COMPACTED: usize = 2;
/// Distinct keys on the compacted partition.
const KEYS: u32 = 6;

fn partitions() -> [TopicPartition; 3] {
    [
        TopicPartition::new("d", 0),
        TopicPartition::new("d", 1),
        TopicPartition::new("c", 0),
    ]
}

fn config(p: usize) -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        preallocate_step_bytes: 16 * 1024,
        retention_ms: -1,
        retention_bytes: if p == COMPACTED { -1 } else { 5 * 1024 },
        cleanup_policy: if p == COMPACTED { "compact" } else { "delete" }.into(),
        ..LogConfig::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Producer {
    Plain,
    /// An idempotent producer (id 1 or 2).
    Idempotent(i64),
    /// The transactional producer of a plain partition (id 10 + partition).
    Transactional,
}

#[derive(Debug, Clone)]
enum Op {
    /// A batch of `count` records to plain partition `p`.
    Append {
        p: usize,
        producer: Producer,
        count: usize,
    },
    /// Ends the open transaction of plain partition `p`.
    Marker {
        p: usize,
        commit: bool,
    },
    /// One batch of keyed records (key, version) to the compacted partition.
    Keyed(Vec<(u32, u64)>),
    Checkpoint,
    Retention(usize),
    /// `delete_records` at this fraction (per mille) of the way from log start to log end.
    DeleteRecords {
        p: usize,
        per_mille: i64,
    },
    Clean,
    /// Deletes plain partition `p` and creates it again, empty.
    Recreate(usize),
}

/// The workload of a seed. Retention, `delete_records` and re-creation only run on a
/// partition with no open transaction, so every transaction's first batch stays in the log
/// (and the expected last stable offset can be read off the log).
fn workload(rng: &mut StdRng) -> Vec<Op> {
    let len = rng.random_range(30..90);
    let mut open = [false; 2];
    let mut version = 0u64;
    let mut ops = Vec::with_capacity(len);
    for _ in 0..len {
        let p = rng.random_range(0..2);
        let op = match rng.random_range(0..20) {
            0..=3 => Op::Append {
                p,
                producer: Producer::Plain,
                count: rng.random_range(1..6),
            },
            4..=6 => Op::Append {
                p,
                producer: Producer::Idempotent(rng.random_range(1..=2)),
                count: rng.random_range(1..6),
            },
            7..=9 => {
                open[p] = true;
                Op::Append {
                    p,
                    producer: Producer::Transactional,
                    count: rng.random_range(1..4),
                }
            }
            10 | 11 if open[p] => {
                open[p] = false;
                Op::Marker {
                    p,
                    commit: rng.random_bool(0.5),
                }
            }
            12 | 13 => Op::Keyed(
                (0..rng.random_range(1..5))
                    .map(|_| {
                        version += 1;
                        (rng.random_range(0..KEYS), version)
                    })
                    .collect(),
            ),
            14 => Op::Checkpoint,
            15 if !open[p] => Op::Retention(p),
            16 if !open[p] => Op::DeleteRecords {
                p,
                per_mille: rng.random_range(0..=1000),
            },
            17 => Op::Clean,
            18 if !open[p] && rng.random_bool(0.3) => Op::Recreate(p),
            _ => Op::Append {
                p,
                producer: Producer::Plain,
                count: 1,
            },
        };
        ops.push(op);
    }
    ops
}

fn key(k: u32) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn value(k: u32, version: u64) -> Vec<u8> {
    format!(
        "value-{k}-{version}-{}",
        "v".repeat((version % 30) as usize)
    )
    .into_bytes()
}

/// An acknowledged batch: where it is and what it must read as.
#[derive(Debug, Clone)]
struct Acked {
    base: i64,
    bytes: Vec<u8>,
}

/// What the workload had acknowledged when it stopped.
#[derive(Debug, Default, Clone)]
struct Record {
    /// Per plain partition: acknowledged batches (of its current incarnation).
    acked: [Vec<Acked>; 2],
    /// Per plain partition: the highest acknowledged `delete_records` offset.
    deleted_to: [i64; 2],
    /// Per plain partition: its log start after the last completed operation.
    start: [i64; 2],
    /// Per idempotent producer and plain partition: its last acknowledged batch.
    last_idempotent: HashMap<(i64, usize), Acked>,
    /// Per key of the compacted partition: the offset and value of its last acknowledged write.
    keyed: BTreeMap<u32, (i64, Vec<u8>)>,
    /// Index of the operation that failed (the one the kill interrupted), if any.
    in_flight: Option<usize>,
    /// Per operation (completed runs only): the log starts it left.
    starts_after: Vec<[i64; 2]>,
}

/// Per producer: next sequence; per plain partition, the transactional producer's.
#[derive(Debug, Default)]
struct Sequences(HashMap<(i64, usize), i32>);

impl Sequences {
    fn take(&mut self, pid: i64, p: usize, count: usize) -> i32 {
        let seq = self.0.entry((pid, p)).or_insert(0);
        let first = *seq;
        *seq += count as i32;
        first
    }
}

fn open_manager(dir: &std::path::Path, io: Option<Arc<SimIo>>) -> LogManager {
    let mut config = LogManagerConfig::new(dir);
    config.default_log_config = config_for_reads();
    match io {
        Some(io) => LogManager::open_with_io(config, io).unwrap(),
        None => LogManager::open(config).unwrap(),
    }
}

fn config_for_reads() -> LogConfig {
    LogConfig {
        retention_bytes: -1,
        retention_ms: -1,
        ..config(0)
    }
}

/// Runs `ops` until one fails (the kill), recording what was acknowledged.
fn run(m: &LogManager, ops: &[Op], record: &mut Record) {
    let tps = partitions();
    let mut logs = Vec::with_capacity(3);
    for (p, tp) in tps.iter().enumerate() {
        match m.create_log(tp, config(p)) {
            Ok(log) => logs.push(log),
            Err(_) => return, // killed before the workload began: nothing acknowledged
        }
    }
    let mut seqs = Sequences::default();
    let mut generation = [0i64; 2];
    for (i, op) in ops.iter().enumerate() {
        if step(m, &mut logs, &mut seqs, &mut generation, op, record).is_err() {
            record.in_flight = Some(i);
            return;
        }
        record.start = [logs[0].log_start_offset(), logs[1].log_start_offset()];
        record.starts_after.push(record.start);
    }
}

fn step(
    m: &LogManager,
    logs: &mut [Arc<Log>],
    seqs: &mut Sequences,
    generation: &mut [i64; 2],
    op: &Op,
    record: &mut Record,
) -> crate::error::Result<()> {
    let tps = partitions();
    match *op {
        Op::Append { p, producer, count } => {
            let log = &logs[p];
            // Contents that name the partition's generation, offset-independent.
            let fill = [(p as u8) * 16 + (generation[p] as u8 % 16); 60];
            let ts = 1_000_000 + log.log_end_offset();
            let (fields, pid) = match producer {
                Producer::Plain => (ProducerFields::NONE, None),
                Producer::Idempotent(pid) => (
                    ProducerFields::idempotent(pid, 0, seqs.take(pid, p, count)),
                    Some(pid),
                ),
                Producer::Transactional => {
                    let pid = 10 + p as i64;
                    (
                        ProducerFields {
                            attributes: TRANSACTIONAL,
                            ..ProducerFields::idempotent(pid, 0, seqs.take(pid, p, count))
                        },
                        None,
                    )
                }
            };
            let mut bytes = build_producer_batch(count, &fill, ts, fields);
            let info = log.append(&bytes)?;
            log.wait_durable(info.last_offset + 1)?;
            bytes[0..8].copy_from_slice(&info.base_offset.to_be_bytes());
            let acked = Acked {
                base: info.base_offset,
                bytes,
            };
            if let Some(pid) = pid {
                record.last_idempotent.insert((pid, p), acked.clone());
            }
            record.acked[p].push(acked);
        }
        Op::Marker { p, commit } => {
            let log = &logs[p];
            let info = log.append_marker(&TxnMarker {
                producer_id: 10 + p as i64,
                producer_epoch: 0,
                coordinator_epoch: 0,
                commit,
                timestamp_ms: 2_000_000,
            })?;
            log.wait_durable(info.last_offset + 1)?;
        }
        Op::Keyed(ref records) => {
            let log = &logs[COMPACTED];
            let keys: Vec<Vec<u8>> = records.iter().map(|&(k, _)| key(k)).collect();
            let values: Vec<Vec<u8>> = records.iter().map(|&(k, v)| value(k, v)).collect();
            let batch: Vec<crate::keyed_records::KeyValue<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice())))
                .collect();
            let info = log.append(&build_keyed_batch(&batch, 1_000_000))?;
            log.wait_durable(info.last_offset + 1)?;
            for (i, &(k, _)) in records.iter().enumerate() {
                record
                    .keyed
                    .insert(k, (info.base_offset + i as i64, values[i].clone()));
            }
        }
        Op::Checkpoint => m.checkpoint()?,
        Op::Retention(p) => {
            logs[p].apply_retention(3_000_000)?;
        }
        Op::DeleteRecords { p, per_mille } => {
            let log = &logs[p];
            let (start, end) = (log.log_start_offset(), log.log_end_offset());
            let to = start + (end - start) * per_mille / 1000;
            let now = log.delete_records(to)?;
            record.deleted_to[p] = record.deleted_to[p].max(now);
        }
        Op::Clean => {
            m.clean_log(&tps[COMPACTED])?;
        }
        Op::Recreate(p) => {
            m.delete_log(&tps[p])?;
            record.acked[p].clear();
            record.deleted_to[p] = 0;
            record.last_idempotent.retain(|&(_, q), _| q != p);
            generation[p] += 1;
            // A new incarnation: its producers start over (Kafka forgets them with the topic).
            seqs.0.retain(|&(_, q), _| q != p);
            logs[p] = m.create_log(&tps[p], config(p))?;
        }
    }
    Ok(())
}

/// Copies a directory tree as it is now; files removed while copying are skipped (a kill
/// would have seen them gone, or there: both are states a crash can leave).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.map_while(Result::ok) {
        let target = to.join(entry.file_name());
        match entry.file_type() {
            Ok(t) if t.is_dir() => copy_tree(&entry.path(), &target),
            Ok(_) => {
                let _ = std::fs::copy(entry.path(), &target);
            }
            Err(_) => {}
        }
    }
}

/// One run of the workload, killed at durable operation `n` (never, with `None`). Returns
/// the record and the copy of the files as the kill left them.
fn killed_run(ops: &[Op], n: Option<u64>) -> (Record, tempfile::TempDir, u64, bool) {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(SimIo::default());
    let m = Arc::new(open_manager(dir.path(), Some(io.clone())));
    if let Some(n) = n {
        io.freeze_after(n);
    }
    let worker = {
        let (m, ops) = (Arc::clone(&m), ops.to_vec());
        std::thread::spawn(move || {
            let mut record = Record::default();
            run(&m, &ops, &mut record);
            record
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut killed = false;
    // Bounded by the deadline.
    while n.is_some() && !worker.is_finished() && Instant::now() < deadline {
        if io.wait_frozen(Duration::from_millis(5)) {
            killed = true;
            break;
        }
    }
    if !killed {
        // Bounded: the workload is finite and every wait in it ends (no kill, or a failure).
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(worker.is_finished(), "the workload hung");
    }
    // The kill: the files as they are now, before any error handling runs.
    let copy = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), copy.path());
    io.thaw();
    let record = worker.join().unwrap();
    let ops_done = io.ops_done();
    drop(m);
    (record, copy, ops_done, killed)
}

/// Every batch of `log` from its start, validated (read_all asserts validity).
fn batches(log: &Log) -> Vec<(BatchHeader, Vec<u8>)> {
    read_all(log)
        .into_iter()
        .map(|b| (BatchHeader::parse(&b).unwrap(), b))
        .collect()
}

/// The aborted transactions a read_committed reader is told about, from the log start to the
/// last stable offset.
fn listed_aborts(log: &Log) -> HashSet<AbortedTxn> {
    let mut listed = HashSet::new();
    let mut offset = log.log_start_offset();
    let lso = log.last_stable_offset();
    // Bounded: each read returns at least one batch below the LSO, or the loop ends.
    for _ in 0..10_000 {
        if offset >= lso {
            break;
        }
        let result = log
            .read_with(offset, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap();
        listed.extend(result.aborted.iter().cloned());
        let mut last = None;
        for slice in &result.slices {
            let mut bytes = vec![0u8; slice.len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&*slice.file, &mut bytes, slice.position)
                .unwrap();
            let mut at = 0;
            while at < bytes.len() {
                let h = BatchHeader::parse(&bytes[at..]).unwrap();
                last = Some(h.last_offset());
                at += h.total_size();
            }
        }
        let Some(last) = last else { break };
        offset = last + 1;
    }
    listed
}

/// Checks the reopened copy against what the workload acknowledged.
fn check(ctx: &str, copy: &std::path::Path, ops: &[Op], record: &Record, reference: &Record) {
    // Shown with a failure inside a helper (read_all) that cannot name the case.
    eprintln!("checking {ctx}");
    let m = open_manager(copy, None);
    let tps = partitions();
    let in_flight = record.in_flight.map(|i| (i, &ops[i]));
    for (p, tp) in tps.iter().enumerate().take(2) {
        let recreating = matches!(in_flight, Some((_, Op::Recreate(q))) if *q == p);
        let Some(log) = m.get_log(tp).unwrap() else {
            assert!(
                recreating || record.acked[p].is_empty(),
                "{ctx}: partition {p} lost"
            );
            continue;
        };
        let all = batches(&log);
        if recreating {
            continue; // old or new incarnation: only validity (checked by reading)
        }
        let start = log.log_start_offset();
        let end = log.log_end_offset();
        // The log start: not below an acknowledged delete_records, not past where the
        // operation running at the kill would have put it.
        assert!(
            start >= record.deleted_to[p],
            "{ctx}: partition {p} log start {start} below the acknowledged delete_records {}",
            record.deleted_to[p]
        );
        let mut bound = record.start[p];
        if let Some((i, Op::Retention(q) | Op::DeleteRecords { p: q, .. })) = in_flight {
            if *q == p {
                bound = bound.max(reference.starts_after[i][p]);
            }
        }
        assert!(
            start <= bound,
            "{ctx}: partition {p} log start {start} past {bound} (acknowledged data deleted)"
        );
        let by_base: HashMap<i64, &Vec<u8>> = all.iter().map(|(h, b)| (h.base_offset, b)).collect();
        for acked in &record.acked[p] {
            if acked.base < start {
                continue;
            }
            assert!(
                acked.base < end,
                "{ctx}: partition {p} lost offset {}",
                acked.base
            );
            let found = by_base.get(&acked.base);
            assert_eq!(
                found.map(|b| b.as_slice()),
                Some(acked.bytes.as_slice()),
                "{ctx}: partition {p}: acknowledged batch at {} differs",
                acked.base
            );
        }
        // Transactions, as the markers in the log tell them.
        let mut open: HashMap<i64, i64> = HashMap::new();
        let mut aborts: Vec<(AbortedTxn, bool)> = Vec::new();
        for (h, b) in &all {
            if h.is_control() {
                let marker = crate::txn_marker::parse_marker(b).expect("a valid marker");
                // With no batch of its transaction left (all below the log start), the
                // marker stands for it: a reader has nothing of it to drop, so it may be
                // listed or not.
                let first = open.remove(&h.producer_id);
                if !marker.commit {
                    aborts.push((
                        AbortedTxn {
                            producer_id: h.producer_id,
                            first_offset: first.unwrap_or(h.base_offset),
                        },
                        first.is_some(),
                    ));
                }
            } else if h.is_transactional() {
                open.entry(h.producer_id).or_insert(h.base_offset);
            }
        }
        if std::env::var("RILL_KILL_DEBUG").is_ok() {
            for (h, _) in &all {
                eprintln!(
                    "p{p} batch {}..={} pid {} txn {} control {}",
                    h.base_offset,
                    h.last_offset(),
                    h.producer_id,
                    h.is_transactional(),
                    h.is_control()
                );
            }
            eprintln!(
                "segments {:?} start {start} lso {}",
                log.segment_bases(),
                log.last_stable_offset()
            );
            for (i, op) in ops.iter().enumerate() {
                eprintln!("op {i} {op:?}");
            }
            for d in std::fs::read_dir(log.dir()).unwrap() {
                let d = d.unwrap();
                eprintln!("file {:?} {}", d.file_name(), d.metadata().unwrap().len());
            }
        }
        let expected_lso = open.values().copied().min().unwrap_or(end);
        assert_eq!(
            log.last_stable_offset(),
            expected_lso,
            "{ctx}: partition {p}: last stable offset (open transactions {open:?})"
        );
        // An abort whose transaction began below the log start (closed before the start moved
        // past its first batch) is seen from its first batch still in the log; the index
        // keeps its true first offset.
        let same = |listed: &AbortedTxn, seen: &AbortedTxn| {
            listed.producer_id == seen.producer_id
                && (listed.first_offset == seen.first_offset
                    || (listed.first_offset < start && listed.first_offset < seen.first_offset))
        };
        let listed = listed_aborts(&log);
        for (abort, has_data) in &aborts {
            if *has_data && abort.first_offset < expected_lso {
                assert!(
                    listed.iter().any(|l| same(l, abort)),
                    "{ctx}: partition {p}: aborted {abort:?} not listed (listed {listed:?})"
                );
            }
        }
        for l in &listed {
            assert!(
                aborts.iter().any(|(a, _)| same(l, a)),
                "{ctx}: partition {p}: {l:?} listed as aborted, the log says otherwise"
            );
        }
        // Producer state: a retry of the last acknowledged batch is a duplicate.
        for (&(pid, q), acked) in &record.last_idempotent {
            if q != p || acked.base < start {
                continue;
            }
            let mut retry = acked.bytes.clone();
            retry[0..8].copy_from_slice(&0i64.to_be_bytes());
            let info = log.append(&retry).unwrap();
            assert!(
                info.duplicate && info.base_offset == acked.base,
                "{ctx}: partition {p}: producer {pid}'s retry of {} was not a duplicate: {info:?}",
                acked.base
            );
        }
    }
    // The compacted partition: each key's last acknowledged value, or a later one.
    if let Some(log) = m.get_log(&tps[COMPACTED]).unwrap() {
        let mut latest: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)> = HashMap::new();
        for (_, b) in batches(&log) {
            for (offset, k, v) in decode(&b).expect("a keyed batch") {
                latest.insert(k.expect("keyed"), (offset, v));
            }
        }
        for (&k, (offset, v)) in &record.keyed {
            let found = latest.get(&key(k));
            assert!(
                found.is_some_and(|(o, fv)| *o > *offset
                    || (*o == *offset && fv.as_deref() == Some(v.as_slice()))),
                "{ctx}: key {k}: acknowledged value at {offset} lost (found {found:?})"
            );
        }
    } else {
        assert!(record.keyed.is_empty(), "{ctx}: compacted partition lost");
    }
}

fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ops = workload(&mut rng);
    let (reference, copy, total, _) = killed_run(&ops, None);
    assert_eq!(
        reference.in_flight, None,
        "seed {seed}: the workload failed unkilled"
    );
    check(
        &format!("seed {seed}, no kill"),
        copy.path(),
        &ops,
        &reference,
        &reference,
    );
    for _ in 0..KILLS {
        let n = rng.random_range(0..total + 1);
        let (record, copy, _, _) = killed_run(&ops, Some(n));
        let ctx = format!(
            "seed {seed}, kill at operation {n} of {total} during {:?}",
            record.in_flight.map(|i| &ops[i])
        );
        check(&ctx, copy.path(), &ops, &record, &reference);
    }
}

#[test]
fn sigkill_anywhere_loses_nothing_acknowledged() {
    if let Ok(seed) = std::env::var("RILL_KILL_SEED") {
        return run_seed(seed.parse().unwrap());
    }
    let seeds: u64 = std::env::var("RILL_KILL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 0..seeds {
        run_seed(seed);
    }
}
