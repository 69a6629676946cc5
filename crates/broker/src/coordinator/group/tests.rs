//! The group coordinator over real `__consumer_offsets` logs.
use super::*;
use rill_storage::{LogConfig, LogManager, LogManagerConfig};

fn offsets_logs(m: &LogManager, partitions: i32) -> Vec<Arc<Log>> {
    (0..partitions)
        .map(|p| {
            let tp = TopicPartition::new(TOPIC, p);
            match m.get_log(&tp).unwrap() {
                Some(log) => log,
                None => {
                    let mut c = LogConfig::default();
                    c.set("segment.bytes", "4096").unwrap();
                    c.set("cleanup.policy", "compact").unwrap();
                    m.create_log(&tp, c).unwrap()
                }
            }
        })
        .collect()
}

#[test]
fn the_log_cleaner_keeps_the_live_state_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        offsets_partitions: 2,
        ..GroupConfig::default()
    };
    let tp = |p| TopicPartition::new("t", p);
    {
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let logs = offsets_logs(&m, 2);
        let c = GroupCoordinator::load(config.clone(), logs.clone()).unwrap();
        for round in 0..300i64 {
            for g in ["a", "b", "c"] {
                let entries = vec![CommitEntry {
                    tp: tp((round % 3) as i32),
                    offset: round,
                    leader_epoch: 0,
                    metadata: format!("r{round}"),
                }];
                let (codes, _) = c.commit(g, -1, "", None, entries, |_| true);
                assert_eq!(codes, vec![0]);
            }
        }
        let (code, _) = c.delete_group("c");
        assert_eq!(code, 0);
        let before: u64 = logs.iter().map(|l| l.size_bytes()).sum();
        // The cleaner rewrites segments below the checkpointed recovery point.
        m.checkpoint().unwrap();
        for p in 0..2 {
            m.clean_log(&TopicPartition::new(TOPIC, p)).unwrap();
        }
        let after: u64 = logs.iter().map(|l| l.size_bytes()).sum();
        assert!(
            after < before / 4,
            "compaction freed little: {before} -> {after}"
        );
        m.close().unwrap();
    }
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let c = GroupCoordinator::load(config, offsets_logs(&m, 2)).unwrap();
    for g in ["a", "b"] {
        let got = c.fetch_offsets(g, None);
        let want: Vec<_> = (0..3)
            .map(|p| {
                let last = (0..300i64).filter(|r| r % 3 == p).max().unwrap();
                (
                    tp(p as i32),
                    Some(Committed {
                        offset: last,
                        leader_epoch: 0,
                        metadata: format!("r{last}"),
                        commit_timestamp_ms: 0,
                        record_offset: 0,
                    }),
                )
            })
            .collect();
        let strip = |v: Vec<(TopicPartition, Option<Committed>)>| -> Vec<(TopicPartition, Option<i64>, Option<String>)> {
            v.into_iter().map(|(tp, c)| (tp, c.as_ref().map(|c| c.offset), c.map(|c| c.metadata))).collect()
        };
        assert_eq!(strip(got), strip(want), "group {g}");
    }
    assert!(
        c.fetch_offsets("c", None).is_empty(),
        "the deleted group stays deleted"
    );
}

/// A commit storm (20 000 commits over 100 groups) with the log cleaner running every 1 000
/// commits keeps `__consumer_offsets` bounded on disk (the live offsets plus one interval
/// of commits), and the latest offsets survive a restart.
#[test]
fn a_commit_storm_stays_bounded_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        offsets_partitions: 2,
        ..GroupConfig::default()
    };
    let tp = |p| TopicPartition::new("t", p);
    let groups: Vec<String> = (0..100).map(|g| format!("group-{g}")).collect();
    // 200 rounds (20 000 commits) in CI; `RILL_COMMIT_STORM_ROUNDS=10000` is the full
    // million-commit storm (about 3 minutes).
    let rounds: i64 = std::env::var("RILL_COMMIT_STORM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(10, 100_000);
    let mut written = 0u64;
    let mut largest = 0u64;
    {
        let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
        let logs = offsets_logs(&m, 2);
        let c = GroupCoordinator::load(config.clone(), logs.clone()).unwrap();
        for round in 0..rounds {
            for g in &groups {
                let entries = vec![CommitEntry {
                    tp: tp((round % 3) as i32),
                    offset: round,
                    leader_epoch: 0,
                    metadata: String::new(),
                }];
                let before: u64 = logs.iter().map(|l| l.size_bytes()).sum();
                let (codes, _) = c.commit(g, -1, "", None, entries, |_| true);
                assert_eq!(codes, vec![0]);
                written += logs.iter().map(|l| l.size_bytes()).sum::<u64>() - before;
            }
            if round % 10 == 9 {
                // What the cleaner threads do: checkpoint, then clean what is dirty.
                m.checkpoint().unwrap();
                // Bounded: each pass cleans one log.
                while m.clean_dirtiest(now_ms()).unwrap().is_some() {}
            }
            largest = largest.max(logs.iter().map(|l| l.size_bytes()).sum());
        }
        m.close().unwrap();
    }
    eprintln!(
        "commit storm: {} commits over 100 groups, {written} bytes written, offsets topic at most {largest} bytes",
        rounds * 100
    );
    // 300 live offsets (~35 KB) plus the ~110 KB of commits between two cleans, and a
    // segment per partition: bounded, far below what was written.
    assert!(written > 2_000_000, "{written}");
    assert!(
        largest < 256 * 1024,
        "offsets topic grew to {largest} bytes of {written} written"
    );
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let c = GroupCoordinator::load(config, offsets_logs(&m, 2)).unwrap();
    for g in &groups {
        let got: Vec<_> = c
            .fetch_offsets(g, None)
            .into_iter()
            .map(|(tp, c)| (tp, c.map(|c| c.offset)))
            .collect();
        let want: Vec<_> = (0..3)
            .map(|p| (tp(p as i32), (0..rounds).filter(|r| r % 3 == p).max()))
            .collect();
        assert_eq!(got, want, "{g}");
    }
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let config = GroupConfig {
        offsets_retention_ms: 50,
        offsets_partitions: 1,
        ..GroupConfig::default()
    };
    let logs = offsets_logs(&m, 1);
    let c = GroupCoordinator::load(config.clone(), logs.clone()).unwrap();
    let entry = |offset| {
        vec![CommitEntry {
            tp: TopicPartition::new("t", 0),
            offset,
            leader_epoch: 0,
            metadata: String::new(),
        }]
    };
    assert_eq!(c.commit("old", -1, "", None, entry(5), |_| true).0, vec![0]);
    c.tick(&OneTopic);
    assert_eq!(c.fetch_offsets("old", None).len(), 1, "not expired yet");
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(
        c.commit("fresh", -1, "", None, entry(7), |_| true).0,
        vec![0]
    );
    // Retention counts from when the group became empty (here: was created), as in Kafka.
    c.tick(&OneTopic);
    assert!(c.fetch_offsets("old", None).is_empty(), "expired");
    assert_eq!(
        c.fetch_offsets("fresh", None).len(),
        1,
        "empty for less than the retention"
    );
    assert!(
        c.list().iter().all(|l| l.id != "old"),
        "the expired group is gone"
    );
    // And it stays gone after a restart: tombstones were written.
    let reloaded = GroupCoordinator::load(config, logs).unwrap();
    assert!(reloaded.fetch_offsets("old", None).is_empty());
}

/// Kafka's member checks for a transactional commit (`ClassicGroup.validateOffsetCommit`
/// with `isTransactional`).
#[test]
fn txn_offset_commit_checks_members_as_kafka() {
    let mut g = Group::new("g", 0);
    let none = TxnMember {
        generation_id: -1,
        member_id: "",
        group_instance_id: None,
    };
    assert_eq!(
        check_txn_member(&g, &none),
        Ok(()),
        "simple commit, empty group"
    );
    let (tx, _rx) = oneshot::channel();
    let req = JoinRequest {
        group_id: "g".into(),
        member_id: String::new(),
        group_instance_id: Some("i".into()),
        client_id: "c".into(),
        client_host: "h".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: false,
    };
    let d = Duration::from_secs(10);
    g.members
        .insert("m".into(), new_member(&req, "m", d, d, Instant::now(), tx));
    g.static_members.insert("i".into(), "m".into());
    g.generation_id = 3;
    g.state = GroupState::PreparingRebalance;
    let member = |generation_id, member_id, group_instance_id| TxnMember {
        generation_id,
        member_id,
        group_instance_id,
    };
    // Versions before 3 name no member: accepted in any state, rebalances included.
    assert_eq!(check_txn_member(&g, &none), Ok(()));
    assert_eq!(check_txn_member(&g, &member(3, "m", Some("i"))), Ok(()));
    assert_eq!(check_txn_member(&g, &member(3, "m", None)), Ok(()));
    let err = |e: ResponseError| Err(e.code());
    assert_eq!(
        check_txn_member(&g, &member(2, "m", None)),
        err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        check_txn_member(&g, &member(3, "x", None)),
        err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        check_txn_member(&g, &member(3, "x", Some("i"))),
        err(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        check_txn_member(&g, &member(3, "m", Some("other"))),
        err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        check_txn_member(&g, &member(-1, "m", None)),
        err(ResponseError::IllegalGeneration),
        "a member with no generation"
    );
    g.state = GroupState::Dead;
    assert_eq!(
        check_txn_member(&g, &none),
        err(ResponseError::CoordinatorNotAvailable)
    );
}

fn marker(producer_id: i64, commit: bool) -> rill_storage::TxnMarker {
    rill_storage::TxnMarker {
        producer_id,
        producer_epoch: 0,
        coordinator_epoch: 0,
        commit,
        timestamp_ms: 0,
    }
}

/// TxnOffsetCommit's offsets over real `__consumer_offsets` logs: pending (invisible,
/// unstable) until the marker the transaction coordinator writes through
/// `GroupCoordinator::write_marker`; a commit makes them the group's offsets, an abort drops
/// them, and a restart replays exactly that (an open transaction stays pending).
#[test]
fn transactional_offsets_follow_their_markers_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        offsets_partitions: 2,
        ..GroupConfig::default()
    };
    let tp = |p| TopicPartition::new("t", p);
    let entry = |p, offset| CommitEntry {
        tp: tp(p),
        offset,
        leader_epoch: 0,
        metadata: String::new(),
    };
    let none = TxnMember {
        generation_id: -1,
        member_id: "",
        group_instance_id: None,
    };
    let offsets = |c: &GroupCoordinator, g: &str| -> Vec<(i32, Option<i64>, i16)> {
        c.fetch_offsets_checked(g, Some(&[tp(0), tp(1)]), true)
            .into_iter()
            .map(|(tp, c, e)| (tp.partition, c.map(|c| c.offset), e))
            .collect()
    };
    let unstable = ResponseError::UnstableOffsetCommit.code();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let c = GroupCoordinator::load(config.clone(), offsets_logs(&m, 2)).unwrap();
    assert_eq!(
        c.commit("g", -1, "", None, vec![entry(0, 5)], |_| true).0,
        vec![0]
    );
    for (producer, offset) in [(7, 10), (8, 20), (9, 30)] {
        let (codes, _) = c.commit_transactional(
            "g",
            producer,
            0,
            &none,
            vec![entry(0, offset), entry(1, offset)],
            |_| true,
            || Ok(()),
        );
        assert_eq!(codes, vec![0, 0]);
    }
    // The transaction coordinator's refusal answers every entry and writes nothing.
    let end = |c: &GroupCoordinator| c.runtime.log(c.partition_for("g")).log_end_offset();
    let before = end(&c);
    let (codes, _) = c.commit_transactional(
        "g",
        10,
        0,
        &none,
        vec![entry(0, 99), entry(1, 99)],
        |_| true,
        || Err(ResponseError::InvalidTxnState.code()),
    );
    assert_eq!(codes, vec![ResponseError::InvalidTxnState.code(); 2]);
    assert_eq!(end(&c), before);

    assert_eq!(
        offsets(&c, "g"),
        vec![(0, None, unstable), (1, None, unstable)]
    );
    assert_eq!(c.fetch_offsets("g", None).len(), 1, "only the plain commit");
    let p = c.partition_for("g");
    let _ = c.write_marker(p, &marker(8, false)).unwrap();
    let _ = c.write_marker(p, &marker(7, true)).unwrap();
    // 9 is still open.
    assert_eq!(
        offsets(&c, "g"),
        vec![(0, None, unstable), (1, None, unstable)]
    );
    let stable = c.fetch_offsets("g", Some(&[tp(0), tp(1)]));
    assert_eq!(
        stable
            .iter()
            .map(|(_, c)| c.as_ref().map(|c| c.offset))
            .collect::<Vec<_>>(),
        vec![Some(10), Some(10)]
    );
    drop(c);

    let c = GroupCoordinator::load(config, offsets_logs(&m, 2)).unwrap();
    assert_eq!(
        offsets(&c, "g"),
        vec![(0, None, unstable), (1, None, unstable)]
    );
    let _ = c.write_marker(p, &marker(9, true)).unwrap();
    assert_eq!(offsets(&c, "g"), vec![(0, Some(30), 0), (1, Some(30), 0)]);
}

/// A commit whose append fails (a batch over the partition's max.message.bytes) is answered
/// with the storage error on the entries it would have written, and changes nothing: the
/// offset is not committed, now or after a reload.
#[test]
fn a_commit_whose_append_fails_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let tp0 = TopicPartition::new(TOPIC, 0);
    let mut c = LogConfig::default();
    c.set("max.message.bytes", "1024").unwrap();
    let logs = vec![m.create_log(&tp0, c).unwrap()];
    let config = GroupConfig {
        offsets_partitions: 1,
        ..GroupConfig::default()
    };
    let coordinator = GroupCoordinator::load(config.clone(), logs.clone()).unwrap();
    let entry = |p, metadata: &str| CommitEntry {
        tp: TopicPartition::new("t", p),
        offset: 1,
        leader_epoch: 0,
        metadata: metadata.to_string(),
    };
    let (codes, written) = coordinator.commit(
        "g",
        -1,
        "",
        None,
        vec![
            entry(0, "small"),
            entry(1, &"m".repeat(2_000)),
            entry(2, &"m".repeat(5_000)),
        ],
        |_| true,
    );
    assert!(written.is_none());
    assert_eq!(
        codes,
        vec![
            ResponseError::MessageTooLarge.code(),
            ResponseError::MessageTooLarge.code(),
            ResponseError::OffsetMetadataTooLarge.code(),
        ]
    );
    assert!(coordinator.fetch_offsets("g", None).is_empty());
    assert_eq!(logs[0].log_end_offset(), 0);
    let (codes, _) = coordinator.commit("g", -1, "", None, vec![entry(0, "small")], |_| true);
    assert_eq!(codes, vec![0]);
    let reloaded = GroupCoordinator::load(config, logs).unwrap();
    let offsets: Vec<_> = reloaded
        .fetch_offsets("g", None)
        .into_iter()
        .map(|(tp, c)| (tp.partition, c.map(|c| c.metadata)))
        .collect();
    assert_eq!(offsets, vec![(0, Some("small".to_string()))]);
}

/// Deleting a group drops its pending transactional offsets too (they are tombstoned with
/// the rest): the transaction's later commit marker brings nothing back, before or after a
/// reload. Retention does not expire a group an open transaction holds offsets of.
#[test]
fn deleting_a_group_drops_its_pending_transactional_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let config = GroupConfig {
        offsets_partitions: 1,
        offsets_retention_ms: 0,
        ..GroupConfig::default()
    };
    let c = GroupCoordinator::load(config.clone(), offsets_logs(&m, 1)).unwrap();
    let none = TxnMember {
        generation_id: -1,
        member_id: "",
        group_instance_id: None,
    };
    let entry = CommitEntry {
        tp: TopicPartition::new("t", 0),
        offset: 3,
        leader_epoch: 0,
        metadata: String::new(),
    };
    let (codes, _) = c.commit_transactional("g", 7, 0, &none, vec![entry], |_| true, || Ok(()));
    assert_eq!(codes, vec![0]);
    std::thread::sleep(Duration::from_millis(5));
    c.tick(&OneTopic);
    assert_eq!(
        c.pending_txn_partitions("g"),
        vec![TopicPartition::new("t", 0)],
        "not expired while a transaction holds its offsets"
    );
    let (code, _) = c.delete_group("g");
    assert_eq!(code, 0);
    assert!(c.pending_txn_partitions("g").is_empty());
    let _ = c.write_marker(0, &marker(7, true)).unwrap();
    assert!(c.fetch_offsets("g", None).is_empty());
    assert!(c.list().is_empty());
    let reloaded = GroupCoordinator::load(config, offsets_logs(&m, 1)).unwrap();
    assert!(reloaded.fetch_offsets("g", None).is_empty());
    assert!(reloaded.list().is_empty());
}

/// One topic, "t" with 4 partitions, and no patterns.
struct OneTopic;

impl TopicLookup for OneTopic {
    fn get(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        (name == "t").then_some((uuid::Uuid::from_u128(1), 4))
    }
    fn is_valid_pattern(&self, _pattern: &str) -> bool {
        false
    }
    fn matching(&self, _pattern: &str) -> Arc<[String]> {
        Arc::from(Vec::new())
    }
    fn name_of(&self, id: &uuid::Uuid) -> Option<String> {
        (*id == uuid::Uuid::from_u128(1)).then(|| "t".to_string())
    }
}

/// Collects every record replayed (to see what an operation wrote).
#[derive(Default)]
struct Recorder(Vec<StoredRecord>);

impl crate::coordinator::runtime::Shard for Recorder {
    type Record = StoredRecord;
    fn decode(
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<StoredRecord>, crate::coordinator::runtime::RecordError> {
        StoredRecord::decode(key, value)
    }
    fn encode(record: &StoredRecord) -> (Bytes, Option<Bytes>) {
        (record.key(), record.value())
    }
    fn replay(&mut self, _offset: i64, _producer: Option<(i64, i16)>, record: StoredRecord) {
        self.0.push(record);
    }
}

fn written(log: &Log) -> Vec<StoredRecord> {
    log.wait_durable(log.log_end_offset()).unwrap();
    let bytes = log.read_bytes(0, 1 << 20).unwrap();
    let mut r = Recorder::default();
    crate::coordinator::runtime::replay_batches(0, &mut r, &bytes, 0).unwrap();
    r.0
}

#[test]
fn a_consumer_group_join_writes_the_member_metadata_once() {
    use super::consumer_records::ConsumerRecord;
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(LogManagerConfig::new(dir.path())).unwrap();
    let logs = offsets_logs(&m, 1);
    let c = GroupCoordinator::load(
        GroupConfig {
            offsets_partitions: 1,
            ..GroupConfig::default()
        },
        logs.clone(),
    )
    .unwrap();
    let join = ConsumerHeartbeat {
        group_id: "g".into(),
        member_id: "a".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 5_000,
        subscribed_topic_names: Some(vec!["t".into()]),
        owned: Some(Default::default()),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        ..ConsumerHeartbeat::default()
    };
    let (answer, _) = c.consumer_heartbeat(join, &OneTopic);
    assert_eq!((answer.error, answer.member_epoch), (0, 1));
    let records = written(&logs[0]);
    let metadata: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            StoredRecord::Consumer(ConsumerRecord::Member { member, value, .. }) => {
                Some((member.clone(), value.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(metadata.len(), 1, "{records:?}");
    let (member, meta) = &metadata[0];
    assert_eq!(member, "a");
    let meta = meta.as_ref().expect("not a tombstone");
    assert_eq!(meta.subscribed_topic_names, vec!["t".to_string()]);
    assert_eq!(meta.client_id, "c");

    // A heartbeat that changes nothing writes nothing.
    let before = logs[0].log_end_offset();
    let (answer, _) = c.consumer_heartbeat(
        ConsumerHeartbeat {
            group_id: "g".into(),
            member_id: "a".into(),
            member_epoch: 1,
            rebalance_timeout_ms: -1,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            ..ConsumerHeartbeat::default()
        },
        &OneTopic,
    );
    assert_eq!((answer.error, answer.member_epoch), (0, 1));
    assert_eq!(logs[0].log_end_offset(), before);
    m.close().unwrap();
}
