//! Idempotent producers at the log: duplicates, gaps, epochs, expiry, snapshots and the
//! rebuild after a crash.

use std::sync::Arc;

use super::*;
use crate::batch::{build_producer_batch, ProducerFields};
use crate::producer_state::{snapshot_file_name, ProducerError};
use crate::StorageError;

fn batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Vec<u8> {
    build_producer_batch(
        count,
        &[seq as u8; 40],
        1_000_000 + i64::from(seq),
        ProducerFields::idempotent(pid, epoch, seq),
    )
}

fn open_log(dir: &std::path::Path) -> (LogManager, Arc<Log>) {
    let m = manager(dir);
    let log = match m.get_log(&tp(0)).unwrap() {
        Some(log) => log,
        None => m.create_log(&tp(0), small_config()).unwrap(),
    };
    (m, log)
}

fn producer_error(r: crate::error::Result<crate::AppendInfo>) -> ProducerError {
    match r {
        Err(StorageError::Producer { source, .. }) => source,
        other => panic!("expected a producer error, got {other:?}"),
    }
}

#[test]
fn a_retried_batch_gets_its_first_offsets_and_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&build_batch(2, b"x", 0)).unwrap();
    let first = log.append(&batch(7, 0, 0, 3)).unwrap();
    assert_eq!(
        (first.base_offset, first.last_offset, first.duplicate),
        (2, 4, false)
    );
    let retry = log.append(&batch(7, 0, 0, 3)).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.duplicate),
        (2, 4, true)
    );
    assert_eq!(log.log_end_offset(), 5, "the retry wrote nothing");
    let next = log.append(&batch(7, 0, 3, 1)).unwrap();
    assert_eq!(next.base_offset, 5);
    assert_eq!(read_all(&log).len(), 3);
}

#[test]
fn a_sequence_gap_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&batch(7, 0, 0, 2)).unwrap();
    let e = producer_error(log.append(&batch(7, 0, 3, 1)));
    assert!(
        matches!(
            e,
            ProducerError::OutOfOrderSequence {
                first_seq: 3,
                expected: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(log.log_end_offset(), 2);
    log.append(&batch(7, 0, 2, 1)).unwrap();
    assert_eq!(log.producer_state(7).unwrap().last_seq(), 2);
}

#[test]
fn epochs_fence_older_producers_and_restart_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&batch(7, 3, 0, 1)).unwrap();
    log.append(&batch(7, 3, 1, 1)).unwrap();
    let stale = producer_error(log.append(&batch(7, 2, 2, 1)));
    assert!(matches!(
        stale,
        ProducerError::InvalidProducerEpoch {
            epoch: 2,
            current: 3,
            ..
        }
    ));
    // KIP-360: a bumped epoch must start at sequence 0.
    let bad_bump = producer_error(log.append(&batch(7, 4, 2, 1)));
    assert!(matches!(
        bad_bump,
        ProducerError::OutOfOrderSequence { expected: 0, .. }
    ));
    log.append(&batch(7, 4, 0, 1)).unwrap();
    // The old epoch is fenced now, and its batches are no longer duplicates.
    let old = producer_error(log.append(&batch(7, 3, 1, 1)));
    assert!(matches!(
        old,
        ProducerError::InvalidProducerEpoch { current: 4, .. }
    ));
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn unknown_producers_start_at_any_sequence_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    // As Kafka 4.x: no UNKNOWN_PRODUCER_ID; an unknown producer may start anywhere.
    log.append(&batch(7, 0, 42, 1)).unwrap();
    assert_eq!(log.producer_count(), 1);
    assert_eq!(log.remove_expired_producers(1_000_042 + 10, 1_000), 0);
    assert_eq!(log.remove_expired_producers(1_000_042 + 1_000, 1_000), 1);
    // Expired: the same batch is accepted again (Kafka's behaviour after expiry).
    let again = log.append(&batch(7, 0, 42, 1)).unwrap();
    assert!(!again.duplicate);
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn control_batches_from_clients_are_refused_without_state() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    let control = ProducerFields {
        attributes: 0x20,
        ..ProducerFields::idempotent(7, 0, 0)
    };
    let r = log.append(&build_producer_batch(1, b"m", 0, control));
    assert!(
        matches!(r, Err(StorageError::InvalidRecord { .. })),
        "{r:?}"
    );
    // A request whose second batch is refused writes nothing, its first batch included.
    let mut two = batch(8, 0, 0, 1);
    two.extend_from_slice(&build_producer_batch(1, b"m", 0, control));
    assert!(log.append(&two).is_err());
    assert_eq!((log.log_end_offset(), log.producer_count()), (0, 0));
}

#[test]
fn several_batches_of_one_producer_in_one_request_are_checked_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    let mut two = batch(7, 0, 0, 2);
    two.extend_from_slice(&batch(7, 0, 2, 2));
    let info = log.append(&two).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 3));
    let retry = log.append(&two).unwrap();
    assert!(retry.duplicate && retry.base_offset == 0 && retry.last_offset == 3);
    let mut gap = batch(7, 0, 4, 1);
    gap.extend_from_slice(&batch(7, 0, 6, 1));
    assert!(log.append(&gap).is_err());
    let mut mixed = batch(7, 0, 2, 2);
    mixed.extend_from_slice(&batch(7, 0, 4, 1));
    assert!(matches!(
        log.append(&mixed),
        Err(StorageError::InvalidRecord { .. })
    ));
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn concurrent_retries_of_one_producer_store_each_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    const BATCHES: i32 = 200;
    // Four threads send the same sequence of batches; gaps are refused and retried.
    std::thread::scope(|s| {
        for _ in 0..4 {
            let log = &log;
            s.spawn(move || {
                let mut seq = 0;
                let mut attempts = 0;
                while seq < BATCHES {
                    attempts += 1;
                    assert!(attempts < 100_000, "bounded");
                    match log.append(&batch(7, 0, seq, 1)) {
                        Ok(info) => {
                            assert_eq!(info.base_offset, i64::from(seq), "offset of seq {seq}");
                            seq += 1;
                        }
                        Err(StorageError::Producer { .. }) => {
                            // Another thread is ahead: this one's next batch is older than the
                            // last 5 retained; skip to where the log is.
                            seq = log.producer_state(7).unwrap().last_seq() + 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    assert_eq!(log.log_end_offset(), i64::from(BATCHES));
    let batches = read_all(&log);
    for (i, b) in batches.iter().enumerate() {
        let h = crate::batch::BatchHeader::parse(b).unwrap();
        assert_eq!((h.base_offset, h.base_sequence), (i as i64, i as i32));
    }
}

#[test]
fn state_survives_a_restart_through_snapshot_and_tail_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (m, log) = open_log(dir.path());
        for seq in 0..30 {
            log.append(&batch(7, 0, seq, 1)).unwrap();
        }
        m.checkpoint().unwrap();
        assert!(dir.path().join("t-0").join(snapshot_file_name(30)).exists());
        for seq in 30..33 {
            log.append(&batch(7, 0, seq, 1)).unwrap();
        }
        log.flush().unwrap();
        // Dropped without close: the tail after the snapshot must be replayed.
    }
    let (_m, log) = open_log(dir.path());
    let entry = log.producer_state(7).unwrap();
    assert_eq!((entry.producer_epoch, entry.last_seq()), (0, 32));
    for seq in 28..33 {
        let retry = log.append(&batch(7, 0, seq, 1)).unwrap();
        assert!(
            retry.duplicate && retry.base_offset == i64::from(seq),
            "seq {seq}"
        );
    }
    assert!(
        log.append(&batch(7, 0, 34, 1)).is_err(),
        "a gap after restart is still a gap"
    );
    assert_eq!(log.append(&batch(7, 0, 33, 1)).unwrap().base_offset, 33);
}

#[test]
fn state_is_rebuilt_from_the_whole_log_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_m, log) = open_log(dir.path());
        for i in 0..100 {
            log.append(&batch(9, 1, i * 2, 2)).unwrap();
        }
        assert!(log.segment_count() > 1);
        log.flush().unwrap();
    }
    let (_m, log) = open_log(dir.path());
    assert_eq!(log.producer_state(9).unwrap().last_seq(), 199);
    let retry = log.append(&batch(9, 1, 198, 2)).unwrap();
    assert!(retry.duplicate && retry.base_offset == 198, "{retry:?}");
}

#[test]
fn snapshots_past_the_log_end_or_damaged_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("t-0");
    {
        let (m, log) = open_log(dir.path());
        for seq in 0..5 {
            log.append(&batch(7, 0, seq, 1)).unwrap();
        }
        m.checkpoint().unwrap();
        log.append(&batch(7, 0, 5, 1)).unwrap();
        m.checkpoint().unwrap();
        m.close().unwrap();
    }
    // A snapshot claiming state beyond the log (its batches lost) is deleted; a damaged
    // newest one is skipped for the older one plus replay.
    std::fs::write(part.join(snapshot_file_name(100)), b"RPS1 whatever").unwrap();
    let newest = part.join(snapshot_file_name(6));
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let (_m, log) = open_log(dir.path());
    assert!(!part.join(snapshot_file_name(100)).exists());
    assert_eq!(log.producer_state(7).unwrap().last_seq(), 5);
    assert!(log.append(&batch(7, 0, 5, 1)).unwrap().duplicate);
}

const CRASH_CHILD_ENV: &str = "RILL_IDEMPOTENCE_CRASH_CHILD_DIR";

/// SIGKILL while an idempotent producer appends (flush per append, a checkpoint with a
/// producer snapshot every 50 appends): after each restart, every acknowledged batch is still
/// recognised as a duplicate with the offsets it got, and each sequence is stored once.
#[test]
fn producer_state_survives_sigkill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use rand::{Rng, SeedableRng};

    if let Ok(dir) = std::env::var(CRASH_CHILD_ENV) {
        return crash_child(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1de4);
    let mut acked: Vec<(i32, i64)> = Vec::new();
    for round in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::idempotence::producer_state_survives_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let (seq, offset) = rest.split_once(' ').unwrap();
                    let _ = tx.send((seq.parse::<i32>().unwrap(), offset.parse::<i64>().unwrap()));
                }
            }
        });
        acked.push(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("child acknowledged nothing"),
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(50..300)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let log = m.get_log(&tp(0)).unwrap().unwrap();
        let started = Instant::now();
        // Each sequence once, in order, at the offset it was acknowledged with.
        for (i, b) in read_all(&log).iter().enumerate() {
            let h = crate::batch::BatchHeader::parse(b).unwrap();
            assert_eq!(
                (h.base_offset, h.base_sequence),
                (i as i64, i as i32),
                "round {round}"
            );
        }
        let (last_seq, last_offset) = *acked.last().unwrap();
        assert!(
            log.log_end_offset() > last_offset,
            "round {round}: acked batch lost"
        );
        // The last five batches in the log (the acknowledged last one among them, and one
        // written but killed before its acknowledgement) are duplicates after the crash.
        let log_last_seq = (log.log_end_offset() - 1) as i32;
        assert!(log_last_seq >= last_seq);
        for seq in (log_last_seq - 4).max(0)..=log_last_seq {
            let retry = log.append(&batch(7, 0, seq, 1)).unwrap();
            assert!(
                retry.duplicate && retry.base_offset == i64::from(seq),
                "round {round} seq {seq}: {retry:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        eprintln!(
            "round {round}: acked up to seq {last_seq}, log end {}",
            log.log_end_offset()
        );
    }
}

/// Appends producer 7's batches from where the log is until killed.
fn crash_child(dir: &std::path::Path) {
    let m = LogManager::open(LogManagerConfig::new(dir)).unwrap();
    let mut config = small_config();
    config.set("flush.messages", "1").unwrap();
    let log = match m.get_log(&tp(0)).unwrap() {
        Some(log) => {
            log.set_config(config);
            log
        }
        None => m.create_log(&tp(0), config).unwrap(),
    };
    let mut seq = log.producer_state(7).map_or(0, |e| e.last_seq() + 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let info = log.append(&batch(7, 0, seq, 1)).unwrap();
        assert!(!info.duplicate);
        println!("ACK {seq} {}", info.base_offset);
        seq += 1;
        if seq % 50 == 0 {
            m.checkpoint().unwrap();
        }
    }
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Retry(usize),
    Gap,
    Stale,
    BumpEpoch,
    Checkpoint,
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (1usize..4).prop_map(Op::Send),
        4 => (0usize..8).prop_map(Op::Retry),
        1 => Just(Op::Gap),
        1 => Just(Op::Stale),
        1 => Just(Op::BumpEpoch),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Against a model of one producer: sends land at the log end, retries of the last five
    /// batches of the epoch are duplicates with their first offsets, older retries and gaps are
    /// out of order, stale epochs are fenced; across checkpoints and reopenings alike.
    #[test]
    fn producer_state_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, mut log) = open_log(dir.path());
        let mut epoch = 0i16;
        // (first seq, count, first offset) of this epoch's batches, oldest first.
        let mut sent: Vec<(i32, usize, i64)> = Vec::new();
        let mut next_seq = 0i32;
        let mut known = false;
        let mut known_epoch = None;
        for op in ops {
            match op {
                Op::Send(count) => {
                    let end = log.log_end_offset();
                    let info = log.append(&batch(7, epoch, next_seq, count)).unwrap();
                    proptest::prop_assert!(!info.duplicate && info.base_offset == end);
                    sent.push((next_seq, count, end));
                    next_seq += count as i32;
                    known = true;
                    known_epoch = Some(epoch);
                }
                Op::Retry(back) if back < sent.len() => {
                    let (seq, count, offset) = sent[sent.len() - 1 - back];
                    let end = log.log_end_offset();
                    let r = log.append(&batch(7, epoch, seq, count));
                    if back < crate::producer_state::BATCHES_RETAINED {
                        let info = r.unwrap();
                        proptest::prop_assert!(info.duplicate && info.base_offset == offset, "{info:?}");
                    } else {
                        proptest::prop_assert!(matches!(r, Err(StorageError::Producer { source: ProducerError::OutOfOrderSequence { .. }, .. })), "{r:?}");
                    }
                    proptest::prop_assert_eq!(log.log_end_offset(), end);
                }
                Op::Retry(_) => {}
                Op::Gap => {
                    let r = log.append(&batch(7, epoch, next_seq + 1, 1));
                    // Refused unless the producer is unknown here (nothing sent yet).
                    proptest::prop_assert_eq!(r.is_err(), known, "{:?}", r);
                    if r.is_ok() {
                        // An unknown producer may start anywhere (Kafka 4.x).
                        let end = log.log_end_offset() - 1;
                        sent.push((next_seq + 1, 1, end));
                        next_seq += 2;
                        known = true;
                        known_epoch = Some(epoch);
                    }
                }
                // Fenced once the log has seen the current epoch.
                Op::Stale if epoch > 0 && known_epoch == Some(epoch) => {
                    let r = log.append(&batch(7, epoch - 1, next_seq, 1));
                    proptest::prop_assert!(matches!(r, Err(StorageError::Producer { source: ProducerError::InvalidProducerEpoch { .. }, .. })), "{r:?}");
                }
                Op::Stale => {}
                Op::BumpEpoch => {
                    epoch += 1;
                    sent.clear();
                    next_seq = 0;
                }
                Op::Checkpoint => m.checkpoint().unwrap(),
                Op::Reopen => {
                    drop(log);
                    drop(m);
                    (m, log) = open_log(dir.path());
                }
            }
        }
    }
}
