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

/// A SIGKILL at every step of a segment roll, with the recovery point checkpointed at the
/// roll's offset: the files as the kill leaves them reopen to exactly the batches appended,
/// with no zero-filled preallocated tail read as data (a roll that created the next segment
/// before giving the tail back left one behind a segment that recovery then trusted whole).
#[test]
fn sigkill_inside_a_roll_leaves_no_zero_filled_tail() {
    use std::sync::Arc;

    use super::sim_io::SimIo;

    let mut rolled_through = false;
    // Bounded: a roll takes a few dozen file operations; the loop ends once one completes.
    for n in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(SimIo::default());
        let m = LogManager::open_with_io(LogManagerConfig::new(dir.path()), io.clone()).unwrap();
        let mut config = LogConfig {
            segment_bytes: 4096,
            preallocate_step_bytes: 64 * 1024,
            ..LogConfig::default()
        };
        config.set("flush.messages", "1").unwrap();
        let log = m.create_log(&tp(0), config).unwrap();
        // Fill the first segment; the next append rolls. A durable checkpoint after each
        // append puts the recovery point at the roll's offset.
        // Bounded: each append adds at least a batch header to the 4 KiB segment.
        while log.size_bytes() + expected_batch(log.log_end_offset()).len() as u64 <= 4096 {
            log.append(&expected_batch(log.log_end_offset())).unwrap();
            log.wait_durable(log.log_end_offset()).unwrap();
            m.checkpoint().unwrap();
        }
        let filled = log.log_end_offset();
        io.freeze_after(n);
        let appender = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || log.append(&expected_batch(filled)).is_ok())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Bounded by the deadline.
        let mut killed = false;
        while !appender.is_finished() && Instant::now() < deadline {
            if io.wait_frozen(Duration::from_millis(5)) {
                killed = true;
                break;
            }
        }
        // The kill: the files as they are now, before any error handling runs.
        let copy = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), copy.path());
        io.thaw();
        let rolled = appender.join().unwrap();
        assert!(killed || rolled, "the append neither froze nor finished");
        drop(log);
        drop(m);
        let reopened = LogManager::open(LogManagerConfig::new(copy.path())).unwrap();
        let log = reopened.get_log(&tp(0)).unwrap().unwrap();
        let mut offset = 0;
        for batch in read_all(&log) {
            assert_eq!(batch, expected_batch(offset), "kill after {n} operations");
            offset += expected_count(offset);
        }
        assert!(
            offset >= filled,
            "kill after {n} operations: acknowledged batches lost"
        );
        if !killed {
            rolled_through = true;
            break;
        }
    }
    assert!(rolled_through, "the roll never completed");
}

/// Copies a directory tree (regular files and directories only).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
