//! SIGKILL crash test: a child process appends with a flush after every append and reports
//! each acknowledged offset on stdout; the parent kills it at random moments, reopens the log
//! and checks that every acknowledged batch is there, intact, and that the log holds only
//! valid batches. Repeated over several rounds on the same directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::*;
use crate::LogConfig;

const CHILD_ENV: &str = "RILL_CRASH_CHILD_DIR";
const ROUNDS: usize = 6;

fn crash_config() -> LogConfig {
    let mut c = LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    };
    c.set("flush.messages", "1").unwrap();
    c
}

#[test]
fn sigkill_loses_no_acknowledged_append() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return child(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut acked_end = 0i64;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::crash::sigkill_loses_no_acknowledged_append",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let kill_after = Duration::from_millis(rng.random_range(50..400));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(end) = line.strip_prefix("ACK ") {
                    let _ = tx.send(end.trim().parse::<i64>().unwrap());
                }
            }
        });
        let started = Instant::now();
        // Wait for the first ack (the child is up), then a random time, then SIGKILL.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child acknowledged nothing");
        acked_end = acked_end.max(first);
        std::thread::sleep(kill_after);
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for end in rx.try_iter() {
            acked_end = acked_end.max(end);
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let log = m.get_log(&tp(0)).unwrap().unwrap();
        let batches = read_all(&log);
        let mut offset = 0;
        for batch in &batches {
            assert_eq!(
                batch,
                &expected_batch(offset),
                "round {round}: batch at {offset} differs"
            );
            offset += expected_count(offset);
        }
        assert!(
            log.log_end_offset() >= acked_end,
            "round {round}: acked up to {acked_end}, log ends at {}",
            log.log_end_offset()
        );
        eprintln!(
            "round {round}: killed after {kill_after:?}, acked {acked_end}, log end {}",
            log.log_end_offset()
        );
    }
    assert!(acked_end > 0);
}

/// Appends forever (until killed), printing the end offset of each durable append.
fn child(dir: &std::path::Path) {
    let m = LogManager::open(LogManagerConfig::new(dir)).unwrap();
    let log = match m.get_log(&tp(0)).unwrap() {
        Some(log) => {
            log.set_config(crash_config());
            log
        }
        None => m.create_log(&tp(0), crash_config()).unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let base = log.log_end_offset();
        let info = log.append(&expected_batch(base)).unwrap();
        println!("ACK {}", info.last_offset + 1);
    }
}
