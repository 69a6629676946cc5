//! Simulated power loss (TigerBeetle-style): random appends, flushes, rolls, checkpoints and
//! reopenings through [`SimIo`], then a power cut that damages every byte not yet fdatasynced.
//! Every append reported durable must survive with its exact bytes, recovery must never
//! surface a corrupt batch, and no reader ever read a record that the cut then removed (durable
//! visibility: the flusher runs in the background throughout, as in the broker). Each case is a seed: `RILL_SIM_SEED=N` replays one,
//! `RILL_SIM_SEEDS=N` sets how many run (default 1500).

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::sim_io::SimIo;
use super::*;
use crate::{LogConfig, LogManager, LogManagerConfig};

fn sim_config(rng: &mut StdRng) -> LogConfig {
    LogConfig {
        segment_bytes: rng.random_range(2..12) * 1024,
        index_interval_bytes: rng.random_range(0..2048),
        preallocate_step_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path, io: Arc<SimIo>) -> LogManager {
    LogManager::open_with_io(LogManagerConfig::new(dir), io).unwrap()
}

/// One seeded case. Panics (with the seed in the message) on a violation.
fn run_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(&mut rng);
    let partitions = rng.random_range(1..=3);
    let mut durable_end = vec![0i64; partitions];
    let cuts = rng.random_range(1..=3);
    for cut in 0..cuts {
        let io = Arc::new(SimIo::default());
        let m = open(dir.path(), io.clone());
        let logs: Vec<_> = (0..partitions as i32)
            .map(|p| match m.get_log(&tp(p)).unwrap() {
                Some(log) => {
                    log.set_config(config.clone());
                    log
                }
                None => m.create_log(&tp(p), config.clone()).unwrap(),
            })
            .collect();
        for (p, log) in logs.iter().enumerate() {
            check_log(seed, cut, log, durable_end[p]);
        }
        let ops = rng.random_range(5..60);
        for _ in 0..ops {
            let p = rng.random_range(0..partitions);
            let log = &logs[p];
            match rng.random_range(0..12) {
                10 | 11 => {
                    // A reader: everything visible must survive any cut from now on.
                    let seen = read_visible(seed, log);
                    durable_end[p] = durable_end[p].max(seen);
                }
                0..=5 => {
                    let base = log.log_end_offset();
                    log.append(&expected_batch(base)).unwrap();
                }
                6 | 7 => {
                    let end = log.log_end_offset();
                    log.wait_durable(end).unwrap();
                    durable_end[p] = durable_end[p].max(end);
                }
                8 => m.checkpoint().unwrap(),
                _ => {
                    // A clean close and reopen in the middle of the case.
                    m.close().unwrap();
                    for (q, l) in logs.iter().enumerate() {
                        durable_end[q] = durable_end[q].max(l.flushed_offset());
                    }
                }
            }
        }
        io.power_cut(&mut rng);
    }
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    for (p, &durable) in durable_end.iter().enumerate() {
        let log = m.get_log(&tp(p as i32)).unwrap().unwrap();
        check_log(seed, cuts, &log, durable);
        // The recovered log takes appends.
        let base = log.log_end_offset();
        log.append(&expected_batch(base)).unwrap();
        assert_eq!(
            read_all(&log).last().unwrap(),
            &expected_batch(base),
            "seed {seed}"
        );
    }
}

/// Reads what the log shows readers, from its start up to where reads stop (the high
/// watermark); checks the bytes and returns the offset after the last batch read.
fn read_visible(seed: u64, log: &Log) -> i64 {
    let mut offset = log.log_start_offset();
    // Bounded: each round moves past at least one batch or ends.
    loop {
        let bytes = log.read_bytes(offset, 64 * 1024).unwrap();
        if bytes.is_empty() {
            return offset;
        }
        let mut at = 0;
        while at < bytes.len() {
            let h = crate::batch::validate(&bytes[at..], usize::MAX).expect("valid batch");
            assert_eq!(
                &bytes[at..at + h.total_size()],
                &expected_batch(offset)[..],
                "seed {seed}: read a wrong batch at {offset}"
            );
            offset = h.last_offset() + 1;
            at += h.total_size();
        }
    }
}

fn check_log(seed: u64, cut: usize, log: &Log, durable_end: i64) {
    let batches = read_all(log);
    let mut offset = 0;
    for batch in &batches {
        assert_eq!(
            batch,
            &expected_batch(offset),
            "seed {seed} cut {cut}: batch at offset {offset} differs"
        );
        offset += expected_count(offset);
    }
    assert!(
        offset >= durable_end,
        "seed {seed} cut {cut}: durable or seen by a reader up to {durable_end}, but the log ends at {offset} (RILL_SIM_SEED={seed} to replay)"
    );
}

#[test]
fn power_cuts_lose_nothing_durable() {
    if let Ok(seed) = std::env::var("RILL_SIM_SEED") {
        return run_case(seed.parse().expect("RILL_SIM_SEED is a number"));
    }
    let seeds: u64 = std::env::var("RILL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let started = std::time::Instant::now();
    for seed in 0..seeds {
        if let Err(panic) = std::panic::catch_unwind(|| run_case(seed)) {
            eprintln!(
                "power-loss simulation failed for seed {seed}; replay with RILL_SIM_SEED={seed}"
            );
            std::panic::resume_unwind(panic);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "simulation over its time budget"
        );
    }
}
