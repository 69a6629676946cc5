//! Transactions at the log: markers, the last stable offset, the aborted-transaction index,
//! read_committed reads, and their recovery after reopenings and power cuts.

use std::sync::Arc;

use rand::SeedableRng;

use super::sim_io::SimIo;
use super::*;
use crate::batch::{build_producer_batch, BatchHeader, ProducerFields};
use crate::index::IndexEntry;
use crate::producer_state::ProducerError;
use crate::txn_index::AbortedTxnEntry;
use crate::{AbortedTxn, Isolation, StorageError, TxnMarker};

/// Attributes bit of a transactional batch.
const TRANSACTIONAL: i16 = 0x10;

fn txn_batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Vec<u8> {
    build_producer_batch(
        count,
        &[pid as u8; 40],
        1_000_000 + i64::from(seq),
        ProducerFields {
            attributes: TRANSACTIONAL,
            ..ProducerFields::idempotent(pid, epoch, seq)
        },
    )
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    build_producer_batch(
        1,
        b"plain",
        1_000_000,
        ProducerFields::idempotent(pid, epoch, seq),
    )
}

fn marker(pid: i64, epoch: i16, commit: bool) -> TxnMarker {
    TxnMarker {
        producer_id: pid,
        producer_epoch: epoch,
        coordinator_epoch: 0,
        commit,
        timestamp_ms: 2_000_000,
    }
}

fn open_log(dir: &std::path::Path) -> (LogManager, Arc<Log>) {
    let m = manager(dir);
    let log = match m.get_log(&tp(0)).unwrap() {
        Some(log) => log,
        None => m.create_log(&tp(0), small_config()).unwrap(),
    };
    (m, log)
}

/// Waits until everything written is durable (the high watermark under durable visibility).
fn durable(log: &Log) {
    log.wait_durable(log.log_end_offset()).unwrap();
    assert_eq!(log.high_watermark(), log.log_end_offset());
}

fn aborted(pid: i64, first_offset: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset,
    }
}

/// A read_committed read at `offset`: the offsets of the batches it returns (first, last)
/// and the aborted transactions it lists.
fn read_committed(log: &Log, offset: i64) -> (Vec<(i64, i64)>, Vec<AbortedTxn>) {
    let result = log
        .read_with(offset, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    let mut batches = Vec::new();
    for slice in &result.slices {
        let mut bytes = vec![0u8; slice.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&*slice.file, &mut bytes, slice.position)
            .unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let h = BatchHeader::parse(&bytes[at..]).unwrap();
            batches.push((h.base_offset, h.last_offset()));
            at += h.total_size();
        }
    }
    let mut listed = result.aborted.clone();
    listed.sort();
    (batches, listed)
}

/// The entries of a segment's `.txnindex` file as they are on disk.
fn txn_index_file(log: &Log, base: i64) -> Vec<AbortedTxnEntry> {
    let path = log.dir().join(crate::segment::file_name(base, "txnindex"));
    match std::fs::read(&path) {
        Ok(bytes) => bytes
            .chunks_exact(AbortedTxnEntry::SIZE)
            .map(AbortedTxnEntry::decode)
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn producer_error(r: crate::error::Result<crate::AppendInfo>) -> ProducerError {
    match r {
        Err(StorageError::Producer { source, .. }) => source,
        other => panic!("expected a producer error, got {other:?}"),
    }
}

#[test]
fn interleaved_transactions_move_the_lso_and_list_their_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    // Producer 1 opens a transaction at 0..=2.
    log.append(&txn_batch(1, 0, 0, 3)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 0);
    assert_eq!(
        read_committed(&log, 0),
        (vec![], vec![]),
        "nothing stable yet"
    );
    // Plain records at 3..=4; producer 2 opens at 5..=6.
    log.append(&build_batch(2, b"plain", 0)).unwrap();
    log.append(&txn_batch(2, 0, 0, 2)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 0);
    // Uncommitted reads go on to the high watermark.
    let all = log.read(0, 1 << 20, true).unwrap();
    assert_eq!((all.last_stable_offset, all.high_watermark), (0, 7));
    assert!(all.total_len() > 0 && all.aborted.is_empty());

    // Producer 1 commits at 7: the LSO moves to producer 2's first offset once durable.
    let commit = log.append_marker(&marker(1, 0, true)).unwrap();
    assert_eq!((commit.base_offset, commit.last_offset), (7, 7));
    durable(&log);
    assert_eq!(log.last_stable_offset(), 5);
    assert_eq!(
        read_committed(&log, 0),
        (vec![(0, 2), (3, 4)], vec![]),
        "read_committed stops at the LSO, on a batch boundary"
    );
    // Producer 3 opens at 8; producer 2 aborts at 9: the LSO moves to 8.
    log.append(&txn_batch(3, 0, 0, 1)).unwrap();
    log.append_marker(&marker(2, 0, false)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 8);
    // Producer 3 aborts at 10: nothing is open, the LSO is the high watermark.
    log.append_marker(&marker(3, 0, false)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 11);
    assert_eq!(log.high_watermark(), 11);

    // Aborted transactions listed by fetch offset, as Kafka's collectAbortedTxns.
    let (batches, listed) = read_committed(&log, 0);
    assert_eq!(batches.last().unwrap().1, 10, "everything up to the LSO");
    assert_eq!(listed, vec![aborted(2, 5), aborted(3, 8)]);
    assert_eq!(
        read_committed(&log, 6).1,
        vec![aborted(2, 5), aborted(3, 8)]
    );
    assert_eq!(
        read_committed(&log, 10).1,
        vec![aborted(3, 8)],
        "producer 2's marker (9) is below the fetch offset"
    );
    assert_eq!(read_committed(&log, 11), (vec![], vec![]));
    // Read uncommitted lists none.
    assert!(log.read(0, 1 << 20, true).unwrap().aborted.is_empty());
    // The index holds Kafka's entries: the LSO after producer 2's abort was producer 3's
    // first offset (8), after producer 3's the offset past its marker (11).
    log.flush().unwrap();
    assert_eq!(
        txn_index_file(&log, 0),
        vec![
            AbortedTxnEntry::new(2, 5, 9, 8),
            AbortedTxnEntry::new(3, 8, 10, 11)
        ]
    );
    let states = log.producer_states();
    assert_eq!(
        states.iter().map(|e| e.producer_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(states.iter().all(|e| e.current_txn_first_offset.is_none()));
}

#[test]
fn an_abort_across_a_roll_is_indexed_in_the_marker_segment_and_found_from_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&build_batch(1, b"x", 0)).unwrap();
    // Producer 4's transaction spans several 8 KiB segments.
    let mut seq = 0;
    // Bounded: each batch is ~1 KiB, so a few dozen fill several segments.
    while log.segment_count() < 3 {
        log.append(&txn_batch(4, 0, seq, 20)).unwrap();
        seq += 20;
        assert!(seq < 20 * 200, "segments never rolled");
    }
    let end = log.log_end_offset();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 1);
    let abort = log.append_marker(&marker(4, 0, false)).unwrap();
    durable(&log);
    assert_eq!(abort.base_offset, end);
    assert_eq!(log.last_stable_offset(), end + 1);
    let bases = log.segment_bases();
    let marker_segment = *bases.last().unwrap();
    assert!(marker_segment > 1);
    log.flush().unwrap();
    assert_eq!(
        txn_index_file(&log, marker_segment),
        vec![AbortedTxnEntry::new(4, 1, end, end + 1)]
    );
    assert!(txn_index_file(&log, 0).is_empty(), "no abort ended there");
    // A fetch from the first segment lists it (the search goes on to later segments).
    let (batches, listed) = read_committed(&log, 0);
    assert!(batches.last().unwrap().1 < bases[1], "one segment per read");
    assert_eq!(listed, vec![aborted(4, 1)]);
    // And from the middle of the transaction, in the marker's segment.
    assert_eq!(read_committed(&log, end - 1).1, vec![aborted(4, 1)]);
}

#[test]
fn stale_and_fenced_markers_are_refused_without_state() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&txn_batch(1, 3, 0, 1)).unwrap();
    let e = producer_error(log.append_marker(&marker(1, 2, true)));
    assert!(
        matches!(
            e,
            ProducerError::InvalidProducerEpoch {
                epoch: 2,
                current: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(log.log_end_offset(), 1, "nothing written");
    // Coordinator epoch 5 commits; a later marker from coordinator epoch 4 is a zombie's.
    log.append_marker(&TxnMarker {
        coordinator_epoch: 5,
        ..marker(1, 3, true)
    })
    .unwrap();
    log.append(&txn_batch(1, 3, 1, 1)).unwrap();
    let e = producer_error(log.append_marker(&TxnMarker {
        coordinator_epoch: 4,
        ..marker(1, 3, false)
    }));
    assert!(
        matches!(
            e,
            ProducerError::TransactionCoordinatorFenced {
                coordinator_epoch: 4,
                current: 5,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(log.log_end_offset(), 3);
    durable(&log);
    assert_eq!(log.last_stable_offset(), 2, "the transaction is still open");
    let entry = log.producer_state(1).unwrap();
    assert_eq!(
        (entry.coordinator_epoch, entry.current_txn_first_offset),
        (5, Some(2))
    );
    // A marker bumping the epoch (KIP-890) aborts it; the old epoch is fenced from then on,
    // and the new one starts its sequences at 0.
    log.append_marker(&TxnMarker {
        coordinator_epoch: 5,
        ..marker(1, 4, false)
    })
    .unwrap();
    let e = producer_error(log.append(&txn_batch(1, 3, 2, 1)));
    assert!(matches!(e, ProducerError::InvalidProducerEpoch { .. }));
    let e = producer_error(log.append(&txn_batch(1, 4, 5, 1)));
    assert!(matches!(e, ProducerError::OutOfOrderSequence { .. }));
    log.append(&txn_batch(1, 4, 0, 1)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 4);
}

#[test]
fn a_non_transactional_batch_inside_an_open_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&txn_batch(1, 0, 0, 2)).unwrap();
    let e = producer_error(log.append(&idempotent_batch(1, 0, 2)));
    assert!(matches!(e, ProducerError::InvalidTxnState { .. }), "{e:?}");
    assert_eq!(log.log_end_offset(), 2);
    // Once committed, the same producer may write outside a transaction.
    log.append_marker(&marker(1, 0, true)).unwrap();
    log.append(&idempotent_batch(1, 0, 2)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 4);
}

#[test]
fn a_marker_without_an_open_transaction_is_written_and_indexes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&build_batch(1, b"x", 0)).unwrap();
    let info = log.append_marker(&marker(9, 0, false)).unwrap();
    assert_eq!(info.base_offset, 1);
    durable(&log);
    assert_eq!(log.last_stable_offset(), 2);
    assert_eq!(read_committed(&log, 0), (vec![(0, 0), (1, 1)], vec![]));
    log.flush().unwrap();
    assert!(txn_index_file(&log, 0).is_empty());
    assert_eq!(
        log.producer_state(9).unwrap().current_txn_first_offset,
        None
    );
}

#[test]
fn open_transactions_survive_a_snapshot_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (m, log) = open_log(dir.path());
        log.append(&build_batch(1, b"x", 0)).unwrap();
        log.append(&txn_batch(1, 0, 0, 2)).unwrap(); // 1..=2
        log.append(&txn_batch(2, 0, 0, 1)).unwrap(); // 3
        log.append(&txn_batch(3, 0, 0, 1)).unwrap(); // 4
        log.append_marker(&marker(3, 0, false)).unwrap(); // 5
        m.checkpoint().unwrap();
        assert!(
            std::fs::read_dir(log.dir()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snapshot")),
            "the checkpoint wrote a snapshot"
        );
        m.close().unwrap();
    }
    let (m, log) = open_log(dir.path());
    // Right at open, before any producer batch: the LSO is producer 1's first offset.
    assert_eq!(log.high_watermark(), 6);
    assert_eq!(log.last_stable_offset(), 1);
    assert_eq!(read_committed(&log, 0).0, vec![(0, 0)]);
    let open: Vec<(i64, Option<i64>)> = log
        .producer_states()
        .iter()
        .map(|e| (e.producer_id, e.current_txn_first_offset))
        .collect();
    assert_eq!(open, vec![(1, Some(1)), (2, Some(3)), (3, None)]);
    log.append_marker(&marker(1, 0, true)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 3);
    log.append_marker(&marker(2, 0, false)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 8);
    assert_eq!(
        read_committed(&log, 0).1,
        vec![aborted(2, 3), aborted(3, 4)]
    );
    drop(m);
}

#[test]
fn expiry_never_forgets_a_producer_with_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&txn_batch(1, 0, 0, 1)).unwrap();
    log.append(&idempotent_batch(2, 0, 0)).unwrap();
    durable(&log);
    let far_future = 1_000_000 + 10 * crate::producer_state::DEFAULT_PRODUCER_ID_EXPIRATION_MS;
    let removed = log.remove_expired_producers(
        far_future,
        crate::producer_state::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
    );
    assert_eq!(removed, 1);
    assert!(log.producer_state(2).is_none());
    assert_eq!(
        log.producer_state(1).unwrap().current_txn_first_offset,
        Some(0)
    );
    assert_eq!(log.last_stable_offset(), 0);
}

#[test]
fn deleting_a_segment_deletes_its_transaction_index() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    log.append(&txn_batch(1, 0, 0, 1)).unwrap();
    log.append_marker(&marker(1, 0, false)).unwrap();
    let index_path = log.dir().join(crate::segment::file_name(0, "txnindex"));
    assert!(index_path.exists(), "written when the abort was");
    // Fill the segment so it rolls, then let retention take it.
    let mut n = 0;
    // Bounded: a few dozen batches fill an 8 KiB segment.
    while log.segment_count() < 2 {
        log.append(&build_batch(10, &[7; 40], 0)).unwrap();
        n += 1;
        assert!(n < 200);
    }
    durable(&log);
    let mut config = log.config();
    config.set("retention.bytes", "1").unwrap();
    log.set_config(config);
    assert!(log.apply_retention(now_ms_for_test()).unwrap() >= 1);
    assert!(!log.segment_bases().contains(&0));
    assert!(!index_path.exists(), "deleted with its segment");
}

fn now_ms_for_test() -> i64 {
    crate::log::now_ms()
}

/// Power cuts between a transaction's data and its marker, and after the marker before any
/// checkpoint (the `.txnindex` entry is then unsynced and may be lost or garbled): after each
/// restart the transaction is still open (first case) or complete with its abort listed
/// (second case), whatever the cut destroyed of the unsynced bytes.
#[test]
fn power_cuts_keep_transactions_open_or_aborted_as_written() {
    for seed in 0..24u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let checkpointed = seed % 2 == 0;
        {
            let io = Arc::new(SimIo::default());
            let m =
                LogManager::open_with_io(LogManagerConfig::new(dir.path()), io.clone()).unwrap();
            let log = m.create_log(&tp(0), small_config()).unwrap();
            log.append(&build_batch(1, b"x", 0)).unwrap();
            log.append(&txn_batch(1, 0, 0, 2)).unwrap(); // 1..=2
            durable(&log);
            if checkpointed {
                m.checkpoint().unwrap();
            }
            io.power_cut(&mut rng);
        }
        let io = Arc::new(SimIo::default());
        {
            let m =
                LogManager::open_with_io(LogManagerConfig::new(dir.path()), io.clone()).unwrap();
            let log = m.get_log(&tp(0)).unwrap().unwrap();
            assert_eq!(log.log_end_offset(), 3, "seed {seed}: durable data kept");
            assert_eq!(log.last_stable_offset(), 1, "seed {seed}: still open");
            assert_eq!(read_committed(&log, 0).0, vec![(0, 0)], "seed {seed}");
            log.append(&txn_batch(2, 0, 0, 1)).unwrap(); // 3
            log.append_marker(&marker(1, 0, false)).unwrap(); // 4
            durable(&log);
            assert_eq!(log.last_stable_offset(), 3, "seed {seed}");
            if checkpointed {
                // The recovery point passes the marker: its index entry must be synced.
                m.checkpoint().unwrap();
            }
            log.append_marker(&marker(2, 0, false)).unwrap(); // 5
            durable(&log);
            io.power_cut(&mut rng);
        }
        let (_m, log) = open_log(dir.path());
        assert_eq!(log.log_end_offset(), 6, "seed {seed}: durable markers kept");
        assert_eq!(log.last_stable_offset(), 6, "seed {seed}");
        assert_eq!(
            read_committed(&log, 0).1,
            vec![aborted(1, 1), aborted(2, 3)],
            "seed {seed}: aborts listed after recovery"
        );
        assert_eq!(
            txn_index_file(&log, 0),
            vec![
                AbortedTxnEntry::new(1, 1, 4, 3),
                AbortedTxnEntry::new(2, 3, 5, 6)
            ],
            "seed {seed}: the index rebuilt"
        );
    }
}

/// A keyed batch of producer `pid` inside a transaction (`build_keyed_batch` with the
/// producer fields and the transactional bit patched in, CRC recomputed).
fn keyed_txn_batch(pid: i64, seq: i32, records: &[(&str, &str)], ts: i64) -> Vec<u8> {
    let kvs: Vec<crate::keyed_records::KeyValue<'_>> = records
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes())))
        .collect();
    let mut b = crate::keyed_records::build_keyed_batch(&kvs, ts);
    b[21..23].copy_from_slice(&TRANSACTIONAL.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The data records a reader sees (key, value), and the producers of the marker batches.
fn records_and_markers(log: &Log) -> (Vec<(String, String)>, Vec<i64>) {
    let mut records = Vec::new();
    let mut markers = Vec::new();
    for b in read_all(log) {
        let h = BatchHeader::parse(&b).unwrap();
        if h.is_control() {
            markers.push(h.producer_id);
            continue;
        }
        for (_, k, v) in crate::keyed_records::decode(&b).unwrap() {
            let text = |x: Option<Vec<u8>>| String::from_utf8(x.unwrap_or_default()).unwrap();
            records.push((text(k), text(v)));
        }
    }
    (records, markers)
}

/// Compaction and transactions (Kafka's cleaner rules): aborted records go and never hide a
/// committed record of the same key; committed ones are compacted by key; a marker stays while
/// its transaction has records, and goes once they are gone and its segment has been through a
/// pass and is older than delete.retention.ms; `.txnindex` entries follow merged segments.
#[test]
fn compaction_drops_aborted_records_and_then_their_markers() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let mut config = small_config();
    config.segment_bytes = 1024;
    config.cleanup_policy = "compact".into();
    config.delete_retention_ms = 60_000;
    let log = m.create_log(&tp(0), config).unwrap();
    let old = crate::log::now_ms() - 120_000;
    let old_marker = |pid, commit| TxnMarker {
        timestamp_ms: old,
        ..marker(pid, 0, commit)
    };
    let fill = |n: usize, distinct: usize, ts: i64, tag: &str| {
        for i in 0..n {
            let key = format!("{tag}-{}", i % distinct);
            let batch = crate::keyed_records::build_keyed_batch(
                &[(Some(key.as_bytes()), Some(&[9u8; 80][..]))],
                ts,
            );
            log.append(&batch).unwrap();
        }
    };
    log.append(&keyed_txn_batch(
        1,
        0,
        &[("k1", "committed-1"), ("k2", "committed-2")],
        old,
    ))
    .unwrap();
    log.append_marker(&old_marker(1, true)).unwrap();
    fill(12, 2, old, "pre");
    // Producer 2 writes k1 later, then aborts: k1 must keep its committed value.
    let aborted_at = log
        .append(&keyed_txn_batch(
            2,
            0,
            &[("k1", "aborted-1"), ("k3", "aborted-3")],
            old,
        ))
        .unwrap()
        .base_offset;
    log.append_marker(&old_marker(2, false)).unwrap();
    let abort_segment = *log.segment_bases().last().unwrap();
    assert!(abort_segment > 0, "the abort lands past the first segment");
    fill(30, 3, old, "old");
    fill(30, 30, crate::log::now_ms(), "new");
    m.checkpoint().unwrap();
    assert!(log.segment_count() > 4);
    m.clean_log(&tp(0)).unwrap().expect("something to clean");
    let (records, markers) = records_and_markers(&log);
    let values = |key: &str| -> Vec<String> {
        records
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        values("k1"),
        vec!["committed-1"],
        "aborted k1 neither kept nor hiding"
    );
    assert_eq!(values("k2"), vec!["committed-2"]);
    assert!(values("k3").is_empty(), "aborted record removed");
    assert_eq!(markers, vec![1, 2], "first pass: both markers stay");
    // The abort is still listed to read_committed readers (its index entry follows merges),
    // and no index file is left behind for a segment that is gone.
    let check_index = |log: &Log| {
        assert_eq!(
            read_committed(log, aborted_at).1,
            vec![aborted(2, aborted_at)]
        );
        let bases = log.segment_bases();
        for entry in std::fs::read_dir(log.dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".txnindex") {
                assert!(bases.contains(&stem.parse().unwrap()), "orphan {name}");
            }
        }
    };
    check_index(&log);
    // Second pass: producer 2's marker has no records left and is old: it goes. Producer 1's
    // transaction keeps records, so its marker stays. The small cleaned segments merge.
    fill(30, 30, crate::log::now_ms(), "newer");
    m.checkpoint().unwrap();
    m.clean_log(&tp(0)).unwrap().expect("new dirty data");
    let (records, markers) = records_and_markers(&log);
    assert_eq!(markers, vec![1]);
    assert!(records.contains(&("k1".into(), "committed-1".into())));
    assert!(
        !log.segment_bases().contains(&abort_segment),
        "the abort's segment was merged into an earlier one"
    );
    check_index(&log);
    // A reopen replays what is left: no transaction is open.
    m.close().unwrap();
    drop(log);
    drop(m);
    let (_m, log) = open_log(dir.path());
    assert_eq!(log.last_stable_offset(), log.high_watermark());
}

/// One step of the transaction model test.
#[derive(Debug, Clone)]
enum Op {
    /// A transactional batch of `count` records from producer `pid`.
    Data {
        pid: i64,
        count: usize,
    },
    /// Records from no producer.
    Plain,
    /// A commit (or abort) marker for `pid`, open transaction or not.
    End {
        pid: i64,
        commit: bool,
    },
    Checkpoint,
    /// Dropped without closing (the page cache survives): recovery from the recovery point.
    Crash,
}

fn txn_op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (1i64..=3, 1usize..4).prop_map(|(pid, count)| Op::Data { pid, count }),
        2 => Just(Op::Plain),
        4 => (1i64..=3, any::<bool>()).prop_map(|(pid, commit)| Op::End { pid, commit }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Crash),
    ]
}

/// What the model expects a read_committed reader to be told at every offset below the LSO.
fn check_reads(log: &Log, open: &[Option<i64>; 4], aborts: &[(i64, i64, i64)]) {
    durable(log);
    let end = log.log_end_offset();
    let lso = open.iter().flatten().copied().min().unwrap_or(end);
    assert_eq!(log.last_stable_offset(), lso, "LSO");
    let states: Vec<(i64, Option<i64>)> = log
        .producer_states()
        .iter()
        .map(|e| (e.producer_id, e.current_txn_first_offset))
        .collect();
    for (pid, first) in states {
        assert_eq!(
            first, open[pid as usize],
            "producer {pid}'s open transaction"
        );
    }
    // Bounded by the offsets of a small log.
    for offset in 0..=end {
        let (batches, listed) = read_committed(log, offset);
        let Some(&(_, last)) = batches.last() else {
            assert!(offset >= lso || listed.is_empty(), "at {offset}");
            continue;
        };
        assert!(
            last < lso,
            "read_committed at {offset} passed the LSO {lso}"
        );
        let upper = last + 1;
        let mut want: Vec<AbortedTxn> = aborts
            .iter()
            .filter(|&&(_, first, marker)| marker >= offset && first < upper)
            .map(|&(pid, first, _)| aborted(pid, first))
            .collect();
        want.sort();
        assert_eq!(listed, want, "aborted transactions listed at {offset}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

    /// Against a model of three transactional producers over 1 KiB segments: the LSO is the
    /// oldest open transaction's first offset (else the log end, all durable); every
    /// read_committed read stops below it and lists exactly the aborted transactions
    /// overlapping what it returned; across checkpoints and crashes (reopen without close).
    #[test]
    fn transactions_follow_the_model(ops in proptest::collection::vec(txn_op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 1024, ..small_config() };
        let open_log = |dir: &std::path::Path| {
            let m = manager(dir);
            let log = match m.get_log(&tp(0)).unwrap() {
                Some(log) => log,
                None => m.create_log(&tp(0), config.clone()).unwrap(),
            };
            log.set_config(config.clone());
            (m, log)
        };
        let (mut m, mut log) = open_log(dir.path());
        let mut open: [Option<i64>; 4] = [None; 4];
        let mut seq = [0i32; 4];
        let mut aborts: Vec<(i64, i64, i64)> = Vec::new();
        for op in ops {
            match op {
                Op::Data { pid, count } => {
                    let info = log.append(&txn_batch(pid, 0, seq[pid as usize], count)).unwrap();
                    seq[pid as usize] += count as i32;
                    open[pid as usize].get_or_insert(info.base_offset);
                }
                Op::Plain => {
                    log.append(&build_batch(2, &[3; 30], 0)).unwrap();
                }
                Op::End { pid, commit } => {
                    let info = log.append_marker(&marker(pid, 0, commit)).unwrap();
                    if let Some(first) = open[pid as usize].take() {
                        if !commit {
                            aborts.push((pid, first, info.base_offset));
                        }
                    }
                }
                Op::Checkpoint => m.checkpoint().unwrap(),
                Op::Crash => {
                    drop(log);
                    drop(m);
                    (m, log) = open_log(dir.path());
                    check_reads(&log, &open, &aborts);
                }
            }
        }
        check_reads(&log, &open, &aborts);
        drop(log);
        drop(m);
        let (_m, log) = open_log(dir.path());
        check_reads(&log, &open, &aborts);
    }
}

/// Long-polling read_committed fetchers wake on the flush listener: the flush that makes a
/// marker durable is the one that moves the LSO, and it tells the listener.
#[test]
fn the_flush_that_moves_the_lso_tells_the_flush_listener() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = open_log(dir.path());
    let told = Arc::new(AtomicU64::new(0));
    let counter = told.clone();
    m.set_flush_listener(Arc::new(move |_tp: &crate::TopicPartition| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    log.append(&txn_batch(1, 0, 0, 2)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 0);
    let before = told.load(Ordering::SeqCst);
    let info = log.append_marker(&marker(1, 0, true)).unwrap();
    log.wait_durable(info.last_offset + 1).unwrap();
    assert_eq!(log.last_stable_offset(), 3);
    // The listener runs after the waiters are answered, on the flusher thread: bounded wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while told.load(Ordering::SeqCst) == before {
        assert!(std::time::Instant::now() < deadline, "listener never told");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

const TXN_CRASH_CHILD_ENV: &str = "RILL_TXN_CRASH_CHILD_DIR";

/// Open transaction first offset by producer id (producers 1..=3; slot 0 unused).
type OpenTxns = [Option<i64>; 4];
/// Aborted transactions: producer id, first offset, marker offset.
type Aborts = Vec<(i64, i64, i64)>;

/// The open transactions and aborts a log's own batches describe (producers 1..=3).
fn model_from_log(log: &Log) -> (OpenTxns, Aborts) {
    let mut open = [None; 4];
    let mut aborts = Vec::new();
    for b in read_all(log) {
        let h = BatchHeader::parse(&b).unwrap();
        if h.producer_id < 0 {
            continue;
        }
        let slot = &mut open[h.producer_id as usize];
        if h.is_control() {
            let m = crate::txn_marker::parse_marker(&b).expect("a marker");
            if let Some(first) = slot.take() {
                if !m.commit {
                    aborts.push((h.producer_id, first, h.base_offset));
                }
            }
        } else if h.is_transactional() {
            slot.get_or_insert(h.base_offset);
        }
    }
    (open, aborts)
}

/// SIGKILL while a producer runs transactions (every append durable before it returns): after
/// each restart, every acknowledged marker has done its work (the LSO and aborted lists match
/// the log's own batches), and a transaction killed between its data and its marker is still
/// open, holding the LSO at its first offset, until a marker is written.
#[test]
fn sigkill_between_data_and_marker_leaves_the_transaction_open() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use rand::Rng;

    if let Ok(dir) = std::env::var(TXN_CRASH_CHILD_ENV) {
        return txn_crash_child(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a5);
    let mut saw_open = 0;
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::transactions::sigkill_between_data_and_marker_leaves_the_transaction_open",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(TXN_CRASH_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(end) = line.strip_prefix("ACK ") {
                    let _ = tx.send(end.trim().parse::<i64>().unwrap());
                } else if line == "OPEN" {
                    let _ = open_tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("child acknowledged nothing");
        if round % 2 == 0 {
            // Between a transaction's data and its marker (the child pauses there).
            open_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("child never paused inside a transaction");
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(30..250)));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let acked_end = rx.try_iter().max().unwrap_or(0);
        let (_m, log) = open_log(dir.path());
        assert!(
            log.log_end_offset() >= acked_end,
            "round {round}: acked data lost"
        );
        let (open, aborts) = model_from_log(&log);
        eprintln!(
            "round {round}: acked up to {acked_end}, log end {}, open {open:?}, {} aborts",
            log.log_end_offset(),
            aborts.len()
        );
        check_reads(&log, &open, &aborts);
        // Close what the kill left open, as the coordinator does after a restart.
        for pid in 1..=3 {
            if open[pid as usize].is_some() {
                saw_open += 1;
                log.append_marker(&marker(pid, 0, false)).unwrap();
            }
        }
        durable(&log);
        assert_eq!(
            log.last_stable_offset(),
            log.log_end_offset(),
            "round {round}"
        );
    }
    eprintln!("{saw_open} transactions were open after a kill");
    assert!(saw_open >= 1, "no kill landed inside a transaction");
}

/// Runs transactions of producers 1..=3 in turn (two data batches, then a commit or an abort)
/// from where the log is, printing the end offset after each acknowledged append, until killed.
fn txn_crash_child(dir: &std::path::Path) {
    let (m, log) = open_log(dir);
    let mut config = small_config();
    config.set("flush.messages", "1").unwrap();
    log.set_config(config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut round = 0u64;
    while std::time::Instant::now() < deadline {
        let pid = 1 + (round % 3) as i64;
        let seq = log.producer_state(pid).map_or(0, |e| e.last_seq() + 1);
        for i in 0..2 {
            let info = log.append(&txn_batch(pid, 0, seq + i * 2, 2)).unwrap();
            println!("ACK {}", info.last_offset + 1);
        }
        if round % 4 == 3 {
            // A pause inside the transaction, for the parent to kill in.
            println!("OPEN");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let info = log
            .append_marker(&marker(pid, 0, !round.is_multiple_of(3)))
            .unwrap();
        println!("ACK {}", info.last_offset + 1);
        round += 1;
        if round.is_multiple_of(10) {
            m.checkpoint().unwrap();
        }
    }
}

/// A segment deletion that a crash interrupts removes the `.log` first and can leave its
/// `.txnindex` behind. A later segment created at the same base offset (recovery that cut a
/// torn segment short reaches that offset again) must not adopt it: sealed, it would list
/// aborted transactions that never happened in the new segment, and read_committed consumers
/// would drop committed records.
#[test]
fn a_segment_created_over_a_stale_txn_index_does_not_adopt_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, log) = open_log(dir.path());
    // Fill the first segment; the next append rolls at `next`.
    let batch_len = idempotent_batch(7, 0, 0).len() as u64;
    // Bounded: each append adds a batch to the segment.
    while log.size_bytes() + batch_len <= small_config().segment_bytes {
        log.append(&idempotent_batch(7, 0, log.log_end_offset() as i32))
            .unwrap();
    }
    let next = log.log_end_offset();
    let mut stale = Vec::new();
    AbortedTxnEntry::new(7, next, next + 2, next).encode(&mut stale);
    std::fs::write(
        log.dir().join(crate::segment::file_name(next, "txnindex")),
        &stale,
    )
    .unwrap();
    // Bounded: as above; the first append rolls into `next`, the last one out of it.
    while log.segment_count() < 3 {
        log.append(&idempotent_batch(7, 0, log.log_end_offset() as i32))
            .unwrap();
    }
    durable(&log);
    assert_eq!(log.segment_bases()[1], next);
    let (batches, listed) = read_committed(&log, next);
    assert!(!batches.is_empty());
    assert_eq!(listed, Vec::new(), "the stale index's abort is listed");
}

/// A deleted partition's recovery point must not outlive it in the checkpoint file: a
/// partition re-created under the same name and killed before the next checkpoint was opened
/// with the old incarnation's recovery point, past its own end, so recovery trusted it whole,
/// did not replay its transactional batches, and the last stable offset passed an open
/// transaction (read_committed consumers would read records that may yet be aborted).
#[test]
fn a_recreated_partition_does_not_inherit_the_deleted_ones_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = open_log(dir.path());
    for seq in 0..20 {
        log.append(&idempotent_batch(1, 0, seq)).unwrap();
    }
    durable(&log);
    m.checkpoint().unwrap();
    m.delete_log(&tp(0)).unwrap();
    let log = m.create_log(&tp(0), small_config()).unwrap();
    log.append(&txn_batch(5, 0, 0, 2)).unwrap();
    log.append(&idempotent_batch(1, 0, 0)).unwrap();
    durable(&log);
    assert_eq!(log.last_stable_offset(), 0);
    // A kill: no close, no checkpoint.
    drop(log);
    drop(m);
    let (_m, log) = open_log(dir.path());
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(
        log.last_stable_offset(),
        0,
        "the open transaction at 0 is forgotten after the kill"
    );
}

/// A producer snapshot older than the log start describes producers last seen below it, and
/// replay (which starts at the log start) cannot see what closed their transactions: loading
/// one reopened a transaction that a marker below the log start had committed, and the last
/// stable offset stayed at the log start for good. Kafka drops such producers on load.
#[test]
fn a_snapshot_below_the_log_start_does_not_reopen_a_closed_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = open_log(dir.path());
    log.append(&txn_batch(5, 0, 0, 1)).unwrap();
    log.append(&idempotent_batch(1, 0, 0)).unwrap();
    durable(&log);
    // Snapshot at 2, with producer 5's transaction open.
    m.checkpoint().unwrap();
    log.append_marker(&marker(5, 0, true)).unwrap();
    log.append(&idempotent_batch(1, 0, 1)).unwrap();
    log.append(&idempotent_batch(1, 0, 2)).unwrap();
    durable(&log);
    assert_eq!(log.delete_records(4).unwrap(), 4);
    assert_eq!(log.last_stable_offset(), 5);
    // A kill before the next checkpoint.
    drop(log);
    drop(m);
    let (_m, log) = open_log(dir.path());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 5));
    durable(&log);
    assert_eq!(
        log.last_stable_offset(),
        5,
        "a transaction committed below the log start is open again"
    );
}

/// As above, with a kill right after the deletion too: the checkpoint file still holds the
/// deleted log's point at the next open, and the log created after it must not inherit it.
#[test]
fn a_partition_recreated_after_a_kill_does_not_inherit_the_deleted_ones_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = open_log(dir.path());
    for seq in 0..20 {
        log.append(&idempotent_batch(1, 0, seq)).unwrap();
    }
    durable(&log);
    m.checkpoint().unwrap();
    m.delete_log(&tp(0)).unwrap();
    drop(log);
    drop(m);
    let m = manager(dir.path());
    assert!(m.get_log(&tp(0)).unwrap().is_none());
    let log = m.create_log(&tp(0), small_config()).unwrap();
    log.append(&txn_batch(5, 0, 0, 2)).unwrap();
    log.append(&idempotent_batch(1, 0, 0)).unwrap();
    durable(&log);
    drop(log);
    drop(m);
    let (_m, log) = open_log(dir.path());
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(
        log.last_stable_offset(),
        0,
        "the open transaction at 0 is forgotten after the kill"
    );
}
