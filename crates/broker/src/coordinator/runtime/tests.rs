//! The runtime with a toy shard (a key-value map) over real logs, no broker.

use std::collections::BTreeMap;

use kafka_protocol::records::RecordBatchDecoder;
use rill_storage::{LogConfig, LogManager, LogManagerConfig, TopicPartition};

use super::*;

/// A key-value map as a shard: `(key, Some(value))` sets, `(key, None)` deletes. Records of a
/// transaction stay pending per producer until a marker commits (applies) or aborts (drops)
/// them. It records every replayed offset, to check what the runtime fed it.
#[derive(Default)]
struct Toy {
    map: BTreeMap<String, String>,
    pending: BTreeMap<i64, Vec<(String, Option<String>)>>,
    offsets: Vec<i64>,
}

type Kv = (String, Option<String>);

impl Toy {
    fn apply(&mut self, (k, v): Kv) {
        match v {
            Some(v) => self.map.insert(k, v),
            None => self.map.remove(&k),
        };
    }
}

impl Shard for Toy {
    type Record = Kv;

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Kv>, RecordError> {
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| RecordError::Malformed { what: "utf-8" })
        };
        if key.first() == Some(&b'?') {
            return Ok(None);
        }
        Ok(Some((text(key)?, value.map(text).transpose()?)))
    }

    fn encode((k, v): &Kv) -> (Bytes, Option<Bytes>) {
        (
            Bytes::copy_from_slice(k.as_bytes()),
            v.as_ref().map(|v| Bytes::copy_from_slice(v.as_bytes())),
        )
    }

    fn replay(&mut self, offset: i64, producer: Option<(i64, i16)>, record: Kv) {
        self.offsets.push(offset);
        match producer {
            Some((id, _)) => self.pending.entry(id).or_default().push(record),
            None => self.apply(record),
        }
    }

    fn replay_end_txn(&mut self, producer_id: i64, _epoch: i16, commit: bool) {
        let records = self.pending.remove(&producer_id).unwrap_or_default();
        if commit {
            for r in records {
                self.apply(r);
            }
        }
    }
}

const TOPIC: &str = "__toy";

fn logs(m: &LogManager, partitions: i32, config: &LogConfig) -> Vec<Arc<Log>> {
    (0..partitions)
        .map(|p| {
            let tp = TopicPartition::new(TOPIC, p);
            match m.get_log(&tp).unwrap() {
                Some(log) => log,
                None => m.create_log(&tp, config.clone()).unwrap(),
            }
        })
        .collect()
}

fn set(k: &str, v: &str) -> Kv {
    (k.to_string(), Some(v.to_string()))
}

fn del(k: &str) -> Kv {
    (k.to_string(), None)
}

fn map(rt: &CoordinatorRuntime<Toy>, p: i32) -> Vec<(String, String)> {
    rt.read(p, |s| {
        s.map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    })
}

fn put(rt: &CoordinatorRuntime<Toy>, p: i32, records: Vec<Kv>) -> Written<()> {
    rt.write(p, |_| {
        Ok::<_, RuntimeError>(Outcome {
            records,
            response: (),
        })
    })
    .unwrap()
}

#[test]
fn load_replays_each_partition_into_its_own_shard() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    {
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let rt = CoordinatorRuntime::load(logs(&m, 2, &config), |_| Toy::default()).unwrap();
        let _ = put(&rt, 0, vec![set("a", "1"), set("b", "2")]);
        let _ = put(&rt, 1, vec![set("c", "3")]);
        let _ = put(&rt, 0, vec![del("a"), set("b", "4")]);
        assert_eq!(map(&rt, 0), vec![("b".into(), "4".into())]);
        m.close().unwrap();
    }
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let shards = std::sync::Mutex::new(Vec::new());
    let rt = CoordinatorRuntime::load(logs(&m, 2, &config), |p| {
        shards.lock().unwrap().push(p);
        Toy::default()
    })
    .unwrap();
    assert_eq!(*shards.lock().unwrap(), vec![0, 1]);
    assert_eq!(rt.partition_count(), 2);
    assert_eq!(map(&rt, 0), vec![("b".into(), "4".into())]);
    assert_eq!(map(&rt, 1), vec![("c".into(), "3".into())]);
    assert_eq!(rt.read(0, |s| s.offsets.clone()), vec![0, 1, 2, 3]);
}

#[test]
fn an_operations_records_are_one_batch_replayed_at_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let rt =
        CoordinatorRuntime::load(logs(&m, 1, &LogConfig::default()), |_| Toy::default()).unwrap();
    let _ = put(&rt, 0, vec![set("x", "0")]);
    let written = rt
        .write(0, |s: &mut Toy| {
            // The op sees the state before its own records.
            assert_eq!(s.map.len(), 1);
            Ok::<_, RuntimeError>(Outcome {
                records: vec![set("a", "1"), set("b", "2"), del("x")],
                response: "done",
            })
        })
        .unwrap();
    assert!(written.wrote());
    assert_eq!(rt.read(0, |s| s.offsets.clone()), vec![0, 1, 2, 3]);
    let log = rt.log(0);
    log.wait_durable(log.log_end_offset()).unwrap();
    let mut bytes = Bytes::from(log.read_bytes(1, 1 << 20).unwrap());
    let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
    assert_eq!(sets.len(), 1, "one batch");
    let offsets: Vec<i64> = sets[0].records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3]);
    assert_eq!(
        map(&rt, 0),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
}

#[test]
fn a_failed_operation_or_append_leaves_the_shard_and_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let mut config = LogConfig::default();
    config.set("max.message.bytes", "1024").unwrap();
    let rt = CoordinatorRuntime::load(logs(&m, 1, &config), |_| Toy::default()).unwrap();
    let _ = put(&rt, 0, vec![set("a", "1")]);
    let end = rt.log(0).log_end_offset();

    // The op refuses.
    #[derive(Debug)]
    enum OpError {
        Refused,
        Runtime(RuntimeError),
    }
    impl From<RuntimeError> for OpError {
        fn from(e: RuntimeError) -> Self {
            OpError::Runtime(e)
        }
    }
    let refused = rt.write(0, |_: &mut Toy| Err::<Outcome<Kv, ()>, _>(OpError::Refused));
    assert!(matches!(refused, Err(OpError::Refused)));

    // The append fails: a batch over max.message.bytes, with a change before it in the batch.
    let big = "v".repeat(4096);
    let failed = rt.write(0, |_: &mut Toy| {
        Ok::<_, OpError>(Outcome {
            records: vec![set("b", "2"), set("c", &big)],
            response: (),
        })
    });
    match failed {
        Err(OpError::Runtime(RuntimeError::Storage(StorageError::RecordTooLarge { .. }))) => {}
        other => panic!("expected RecordTooLarge, got {:?}", other.err()),
    }
    assert_eq!(rt.log(0).log_end_offset(), end, "nothing appended");
    assert_eq!(
        map(&rt, 0),
        vec![("a".into(), "1".into())],
        "nothing replayed"
    );
    assert_eq!(rt.read(0, |s| s.offsets.clone()), vec![0]);

    // The next write goes on from there.
    let _ = put(&rt, 0, vec![set("b", "2")]);
    assert_eq!(rt.read(0, |s| s.offsets.clone()), vec![0, 1]);
}

#[test]
fn no_records_complete_without_a_write_and_bad_partitions_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let rt =
        CoordinatorRuntime::load(logs(&m, 2, &LogConfig::default()), |_| Toy::default()).unwrap();
    let w = rt
        .write(1, |s: &mut Toy| {
            // In-memory-only state may change directly.
            s.offsets.push(-1);
            Ok::<_, RuntimeError>(Outcome::response(7))
        })
        .unwrap();
    assert!(!w.wrote());
    assert_eq!(*w.response(), 7);
    assert_eq!(rt.log(1).log_end_offset(), 0);
    for p in [-1, 2] {
        let e = rt.write(p, |_: &mut Toy| {
            Ok::<_, RuntimeError>(Outcome::response(()))
        });
        assert!(matches!(e, Err(RuntimeError::NoPartition { .. })), "{p}");
    }
    assert_eq!(rt.partition_for("hello"), 99_162_322 % 2);
}

#[tokio::test]
async fn committed_answers_once_the_batch_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let rt =
        CoordinatorRuntime::load(logs(&m, 1, &LogConfig::default()), |_| Toy::default()).unwrap();
    let w = rt
        .write(0, |_: &mut Toy| {
            Ok::<_, RuntimeError>(Outcome {
                records: vec![set("a", "1"), set("b", "2")],
                response: "ok",
            })
        })
        .unwrap();
    assert_eq!(w.committed().await.unwrap(), "ok");
    assert!(rt.log(0).flushed_offset() >= 2);
}

#[test]
fn a_garbage_record_fails_the_load_naming_partition_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let config = LogConfig::default();
    let rt = CoordinatorRuntime::load(logs(&m, 2, &config), |_| Toy::default()).unwrap();
    let _ = put(&rt, 1, vec![set("a", "1")]);
    // A '?' key is a record type the toy skips; a key that is not UTF-8 is garbage to it.
    let _ = put(&rt, 1, vec![del("?skipped")]);
    rt.log(1)
        .append(&raw_batch(vec![plain_record(0, b"\xff\xfe", None)]))
        .unwrap();
    drop(rt);
    match CoordinatorRuntime::load(logs(&m, 2, &config), |_| Toy::default()) {
        Err(RuntimeError::Decode {
            partition: 1,
            offset: 2,
            ..
        }) => {}
        other => panic!("expected a decode error at 1/2, got {:?}", other.err()),
    }
}

fn plain_record(offset: i64, key: &[u8], value: Option<&[u8]>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: 0,
        key: Some(Bytes::copy_from_slice(key)),
        value: value.map(Bytes::copy_from_slice),
        headers: Default::default(),
    }
}

fn txn_record(offset: i64, producer_id: i64, sequence: i32, kv: &Kv) -> Record {
    let (key, value) = Toy::encode(kv);
    Record {
        transactional: true,
        producer_id,
        producer_epoch: 3,
        sequence,
        key: Some(key),
        value,
        ..plain_record(offset, b"", None)
    }
}

fn marker(offset: i64, producer_id: i64, commit: bool) -> Record {
    Record {
        transactional: true,
        control: true,
        producer_id,
        producer_epoch: 3,
        key: Some(Bytes::from(vec![0, 0, 0, u8::from(commit)])),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        ..plain_record(offset, b"", None)
    }
}

fn raw_batch(records: Vec<Record>) -> Bytes {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options).unwrap();
    out.freeze()
}

/// Transactional batches of two producers, then a commit marker for one and an abort marker
/// for the other (as a partition holds them): the shard gets each data record with its
/// producer and each marker as `replay_end_txn`; replay starts at the requested offset.
#[test]
fn transactional_records_and_markers_replay_with_their_producer() {
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&raw_batch(vec![plain_record(0, b"k", Some(b"plain"))]));
    bytes.extend_from_slice(&raw_batch(vec![
        txn_record(1, 7, 0, &set("a", "committed")),
        txn_record(2, 7, 1, &set("k", "committed")),
    ]));
    bytes.extend_from_slice(&raw_batch(vec![txn_record(3, 8, 0, &set("b", "aborted"))]));
    bytes.extend_from_slice(&raw_batch(vec![marker(4, 8, false)]));
    bytes.extend_from_slice(&raw_batch(vec![txn_record(5, 9, 0, &set("c", "open"))]));
    bytes.extend_from_slice(&raw_batch(vec![marker(6, 7, true)]));
    let bytes = bytes.freeze();

    let mut toy = Toy::default();
    let (next, replayed) = replay_batches(0, &mut toy, &bytes, 0).unwrap();
    assert_eq!((next, replayed), (7, 5));
    assert_eq!(toy.offsets, vec![0, 1, 2, 3, 5]);
    let got: Vec<_> = toy.map.clone().into_iter().collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), "committed".into()),
            ("k".into(), "committed".into())
        ]
    );
    assert_eq!(toy.pending.keys().copied().collect::<Vec<_>>(), vec![9]);

    // From the middle of the bytes (a read that starts inside the first batch's range).
    let mut toy = Toy::default();
    let (next, replayed) = replay_batches(0, &mut toy, &bytes, 3).unwrap();
    assert_eq!((next, replayed), (7, 2));
    assert_eq!(toy.offsets, vec![3, 5]);

    // A control record whose key is too short is garbage.
    let mut short = marker(0, 7, true);
    short.key = Some(Bytes::from_static(&[0]));
    let e = replay_batches(3, &mut Toy::default(), &raw_batch(vec![short]), 0);
    assert!(
        matches!(
            e,
            Err(RuntimeError::Decode {
                partition: 3,
                offset: 0,
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn partition_matches_java_string_hash() {
    // Values of Java's String.hashCode(), computed by a JVM.
    assert_eq!(java_string_hash("hello"), 99_162_322);
    assert_eq!(java_string_hash(""), 0);
    assert_eq!(
        java_string_hash("Aa"),
        java_string_hash("BB"),
        "Java's classic collision"
    );
    assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
    for g in ["a", "my-group", "ünïcødé", "console-consumer-12345"] {
        assert!((0..50).contains(&partition_for(g, 50)));
    }
}

fn txn_marker(producer_id: i64, producer_epoch: i16, commit: bool) -> TxnMarker {
    TxnMarker {
        producer_id,
        producer_epoch,
        coordinator_epoch: 0,
        commit,
        timestamp_ms: 0,
    }
}

fn put_txn(rt: &CoordinatorRuntime<Toy>, producer: (i64, i16), records: Vec<Kv>) {
    let _ = rt
        .write_transactional(0, producer.0, producer.1, |_| {
            Ok::<_, RuntimeError>(Outcome {
                records,
                response: (),
            })
        })
        .unwrap();
}

/// Transactional writes reach the shard with their producer and wait for a marker; markers
/// written through the runtime are replayed at once and at load; several writes of one
/// transaction continue the producer's sequences (storage checks them); a marker storage
/// refuses (a stale epoch) leaves the shard unchanged.
#[test]
fn transactional_writes_and_markers_replay_at_run_time_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let rt = CoordinatorRuntime::load(logs(&m, 1, &config), |_| Toy::default()).unwrap();
    let _ = put(&rt, 0, vec![set("k", "plain")]);
    put_txn(&rt, (7, 1), vec![set("a", "1")]);
    put_txn(&rt, (7, 1), vec![set("b", "2"), set("k", "txn")]);
    put_txn(&rt, (8, 0), vec![set("c", "3")]);
    put_txn(&rt, (9, 0), vec![set("d", "4")]);
    assert_eq!(map(&rt, 0), vec![("k".into(), "plain".into())]);
    assert_eq!(
        rt.log(0).producer_state(7).map(|e| e.last_seq()),
        Some(2),
        "one sequence per record, continued across writes"
    );

    let _ = rt.write_marker(0, &txn_marker(7, 1, true)).unwrap();
    let _ = rt.write_marker(0, &txn_marker(8, 0, false)).unwrap();
    let stale = rt.write_marker(0, &txn_marker(9, -1, true));
    assert!(stale.is_err(), "a marker below the producer's epoch");
    let want: Vec<(String, String)> = vec![
        ("a".into(), "1".into()),
        ("b".into(), "2".into()),
        ("k".into(), "txn".into()),
    ];
    assert_eq!(map(&rt, 0), want);
    assert_eq!(
        rt.read(0, |s| s.pending.keys().copied().collect::<Vec<_>>()),
        vec![9]
    );
    drop(rt);

    let rt = CoordinatorRuntime::load(logs(&m, 1, &config), |_| Toy::default()).unwrap();
    assert_eq!(map(&rt, 0), want);
    assert_eq!(
        rt.read(0, |s| s.pending.keys().copied().collect::<Vec<_>>()),
        vec![9]
    );
    let _ = rt.write_marker(0, &txn_marker(9, 0, true)).unwrap();
    assert_eq!(map(&rt, 0).len(), 4);
}

/// Found by the offsets_replay fuzz target: a stored snappy batch whose header claims 2.8 GB.
/// kafka-protocol's decoder allocated that much at start-up; the load's bounded reader errors.
#[test]
fn a_batch_claiming_gigabytes_is_an_error_not_an_allocation() {
    // Raw snappy: the varint uncompressed length, then (too little) data.
    let payload = [0xcc, 0xcb, 0xcb, 0xcb, 0x0a, 0x0a, 0x0a, 0x0a];
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    batch.extend_from_slice(&(49 + payload.len() as i32).to_be_bytes()); // batchLength
    batch.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend_from_slice(&[0; 4]); // crc, below
    batch.extend_from_slice(&2i16.to_be_bytes()); // attributes: snappy
    batch.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    batch.extend_from_slice(&0i64.to_be_bytes()); // baseTimestamp
    batch.extend_from_slice(&0i64.to_be_bytes()); // maxTimestamp
    batch.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    batch.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    batch.extend_from_slice(&1i32.to_be_bytes()); // recordCount
    batch.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    rill_storage::batch::validate_stored(&batch, 1 << 20).expect("a valid stored header");
    let mut toy = Toy::default();
    let result = replay_batches(0, &mut toy, &batch, 0);
    assert!(
        matches!(result, Err(RuntimeError::Batch { .. })),
        "{result:?}"
    );
    assert!(toy.offsets.is_empty());
}

/// A batch whose last records the cleaner removed keeps its offset range: the load moves past
/// all of it (reading from the missing offsets again would return the same batch: no
/// progress).
#[test]
fn the_load_moves_past_a_cleaned_batchs_whole_range() {
    let (key, value) = Toy::encode(&set("a", "1"));
    let mut batch = raw_batch(vec![plain_record(0, &key, value.as_deref())]).to_vec();
    // Claim offsets 0..=4 (lastOffsetDelta 4) with only the first record left.
    batch[23..27].copy_from_slice(&4i32.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut toy = Toy::default();
    let (next, replayed) = replay_batches(0, &mut toy, &batch, 0).unwrap();
    assert_eq!((next, replayed), (5, 1));
}
