//! Transactions over the wire, with a raw client: the coordinator's answers (InitProducerId
//! with a transactional id, AddPartitionsToTxn, EndTxn, DescribeTransactions,
//! ListTransactions, DescribeProducers), markers and the last stable offset as read_committed
//! readers see them, fencing, timeouts, and the refusals of bad input. Real clients are in
//! tests/compat; this file pins the codes and the offsets.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::producer::{batch, bounded, create_topic, latest, name, produce_to, Kind};
use common::{Client, TestBroker};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use rill_storage::file_io::{FileIo, IoFile, OsIo};

const INVALID_REQUEST: i16 = 42;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

async fn init_txn(client: &mut Client, id: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    client.send(4, &request).await
}

/// InitProducerId, retried while the coordinator answers CONCURRENT_TRANSACTIONS (it is
/// aborting the id's previous transaction), as clients do. Bounded.
async fn init_txn_ok(client: &mut Client, id: &str) -> (i64, i16) {
    for _ in 0..200 {
        let r = init_txn(client, id, 60_000).await;
        match r.error_code {
            0 => return (r.producer_id.0, r.producer_epoch),
            CONCURRENT_TRANSACTIONS => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            code => panic!("InitProducerId failed with {code}"),
        }
    }
    panic!("InitProducerId kept answering CONCURRENT_TRANSACTIONS");
}

/// AddPartitionsToTxn v3; the error code of each partition, in request order.
async fn add_partitions(
    client: &mut Client,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(&str, i32)],
) -> Vec<i16> {
    let topics = partitions
        .iter()
        .map(|(t, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(name(t))
                .with_partitions(vec![*p])
        })
        .collect();
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    let response = client.send(3, &request).await;
    partitions
        .iter()
        .map(|(t, p)| {
            response
                .results_by_topic_v3_and_below
                .iter()
                .find(|r| r.name.0.as_str() == *t)
                .and_then(|r| {
                    r.results_by_partition
                        .iter()
                        .find(|x| x.partition_index == *p)
                })
                .map(|x| x.partition_error_code)
                .expect("a result for every partition")
        })
        .collect()
}

async fn end_txn(client: &mut Client, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    client.send(3, &request).await.error_code
}

/// Waits (bounded) until the read_committed latest offset of `topic` reaches `offset`: the
/// markers are written after EndTxn is answered.
async fn await_stable(client: &mut Client, topic: &str, offset: i64) {
    for _ in 0..500 {
        if latest(client, topic, true).await >= offset {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "{topic}: the last stable offset stayed at {}, expected {offset}",
        latest(client, topic, true).await
    );
}

async fn fetch(
    client: &mut Client,
    topic: &str,
    offset: i64,
    read_committed: bool,
) -> fetch_response::PartitionData {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let mut response = client.send(12, &request).await;
    let p = response.responses.remove(0).partitions.remove(0);
    assert_eq!(p.error_code, 0);
    p
}

/// (offset, is control) of every record in a fetch answer.
fn records(p: &fetch_response::PartitionData) -> Vec<(i64, bool)> {
    let mut bytes: Bytes = p.records.clone().unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("decode");
    sets.iter()
        .flat_map(|set| set.records.iter().map(|r| (r.offset, r.control)))
        .collect()
}

async fn describe(
    client: &mut Client,
    id: &str,
) -> describe_transactions_response::TransactionState {
    let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id(id)]);
    client.send(0, &request).await.transaction_states.remove(0)
}

#[tokio::test]
async fn commit_and_abort_as_read_committed_and_read_uncommitted_readers_see_them() {
    let broker = TestBroker::start().await;
    let mut client = broker.connect().await;
    bounded(async {
        for t in ["ta", "tb"] {
            create_topic(&mut client, t).await;
        }
        let (pid, epoch) = init_txn_ok(&mut client, "app-1").await;
        assert_eq!(epoch, 0);
        assert_eq!(
            add_partitions(&mut client, "app-1", pid, epoch, &[("ta", 0), ("tb", 0)]).await,
            vec![0, 0]
        );
        let b = batch(pid, epoch, 0, 3, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("app-1"), "ta", 0, b).await,
            (0, 0)
        );
        let b = batch(pid, epoch, 0, 2, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("app-1"), "tb", 0, b).await,
            (0, 0)
        );
        // Open: read_committed readers see nothing yet, read_uncommitted ones everything.
        assert_eq!(latest(&mut client, "ta", true).await, 0);
        assert_eq!(latest(&mut client, "ta", false).await, 3);
        assert!(records(&fetch(&mut client, "ta", 0, true).await).is_empty());
        let open = describe(&mut client, "app-1").await;
        assert_eq!(open.transaction_state.as_str(), "Ongoing");
        assert_eq!(open.topics.len(), 2);

        assert_eq!(end_txn(&mut client, "app-1", pid, epoch, true).await, 0);
        await_stable(&mut client, "ta", 4).await;
        await_stable(&mut client, "tb", 3).await;
        let committed = fetch(&mut client, "ta", 0, true).await;
        assert_eq!(committed.last_stable_offset, 4);
        assert_eq!(committed.aborted_transactions.as_deref(), Some(&[][..]));
        assert_eq!(
            records(&committed),
            vec![(0, false), (1, false), (2, false), (3, true)]
        );
        // A retried EndTxn of a completed commit succeeds; an abort of it does not.
        assert_eq!(end_txn(&mut client, "app-1", pid, epoch, true).await, 0);
        assert_eq!(
            end_txn(&mut client, "app-1", pid, epoch, false).await,
            INVALID_TXN_STATE
        );

        // A second transaction, aborted.
        assert_eq!(
            add_partitions(&mut client, "app-1", pid, epoch, &[("ta", 0)]).await,
            vec![0]
        );
        let b = batch(pid, epoch, 3, 2, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("app-1"), "ta", 0, b).await,
            (0, 4)
        );
        assert_eq!(end_txn(&mut client, "app-1", pid, epoch, false).await, 0);
        await_stable(&mut client, "ta", 7).await;
        let read = fetch(&mut client, "ta", 0, true).await;
        let aborted = read
            .aborted_transactions
            .clone()
            .expect("a list for read_committed");
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (aborted[0].producer_id.0, aborted[0].first_offset),
            (pid, 4)
        );
        // Fetching past the aborted data returns no aborted transaction.
        let after = fetch(&mut client, "ta", 7, true).await;
        assert_eq!(after.aborted_transactions.as_deref(), Some(&[][..]));
        let uncommitted = fetch(&mut client, "ta", 0, false).await;
        assert!(uncommitted.aborted_transactions.is_none());
        assert_eq!(records(&uncommitted).len(), 7);
        assert_eq!(latest(&mut client, "ta", false).await, 7);

        let done = describe(&mut client, "app-1").await;
        assert_eq!(done.error_code, 0);
        assert_eq!(done.transaction_state.as_str(), "CompleteAbort");
        assert_eq!((done.producer_id.0, done.producer_epoch), (pid, epoch));
        assert!(done.topics.is_empty());

        let listed = client
            .send(
                1,
                &ListTransactionsRequest::default().with_duration_filter(-1),
            )
            .await;
        assert!(listed
            .transaction_states
            .iter()
            .any(|t| t.transactional_id.0.as_str() == "app-1"
                && t.transaction_state.as_str() == "CompleteAbort"));
        let filtered = client
            .send(
                1,
                &ListTransactionsRequest::default()
                    .with_duration_filter(-1)
                    .with_state_filters(vec![
                        StrBytes::from_static_str("Ongoing"),
                        StrBytes::from_static_str("Bogus"),
                    ]),
            )
            .await;
        assert!(filtered.transaction_states.is_empty());
        assert_eq!(filtered.unknown_state_filters.len(), 1);

        let producers = client
            .send(
                0,
                &DescribeProducersRequest::default().with_topics(vec![
                    describe_producers_request::TopicRequest::default()
                        .with_name(name("ta"))
                        .with_partition_indexes(vec![0]),
                ]),
            )
            .await;
        let p = &producers.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let me = p
            .active_producers
            .iter()
            .find(|s| s.producer_id.0 == pid)
            .expect("the producer is listed");
        assert_eq!(me.current_txn_start_offset, -1, "no open transaction");
        assert_eq!(me.last_sequence, 4);
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn bad_input_gets_kafkas_codes_and_leaves_no_state() {
    let broker = TestBroker::start().await;
    let mut client = broker.connect().await;
    bounded(async {
        create_topic(&mut client, "t").await;
        assert_eq!(
            init_txn(&mut client, "", 60_000).await.error_code,
            INVALID_REQUEST
        );
        assert_eq!(
            init_txn(&mut client, "x", 0).await.error_code,
            INVALID_TRANSACTION_TIMEOUT
        );
        assert_eq!(
            init_txn(&mut client, "x", 900_001).await.error_code,
            INVALID_TRANSACTION_TIMEOUT
        );
        // None of that created the id.
        assert_eq!(
            describe(&mut client, "x").await.error_code,
            TRANSACTIONAL_ID_NOT_FOUND
        );
        assert_eq!(
            describe(&mut client, "").await.error_code,
            TRANSACTIONAL_ID_NOT_FOUND
        );

        assert_eq!(
            add_partitions(&mut client, "nobody", 1, 0, &[("t", 0)]).await,
            vec![INVALID_PRODUCER_ID_MAPPING]
        );
        assert_eq!(
            end_txn(&mut client, "nobody", 1, 0, true).await,
            INVALID_PRODUCER_ID_MAPPING
        );
        let (pid, epoch) = init_txn_ok(&mut client, "x").await;
        // EndTxn with no transaction.
        assert_eq!(
            end_txn(&mut client, "x", pid, epoch, true).await,
            INVALID_TXN_STATE
        );
        // Someone else's producer id, a wrong epoch.
        assert_eq!(
            add_partitions(&mut client, "x", pid + 1, epoch, &[("t", 0)]).await,
            vec![INVALID_PRODUCER_ID_MAPPING]
        );
        assert_eq!(
            add_partitions(&mut client, "x", pid, epoch + 1, &[("t", 0)]).await,
            vec![PRODUCER_FENCED]
        );
        // An unknown partition refuses the whole request.
        assert_eq!(
            add_partitions(&mut client, "x", pid, epoch, &[("t", 0), ("t", 9)]).await,
            vec![OPERATION_NOT_ATTEMPTED, UNKNOWN_TOPIC_OR_PARTITION]
        );
        assert_eq!(
            describe(&mut client, "x").await.transaction_state.as_str(),
            "Empty"
        );
        // A transactional batch for a partition not in the transaction.
        let b = batch(pid, epoch, 0, 1, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("x"), "t", 0, b).await.0,
            INVALID_TXN_STATE
        );
        // A client's marker.
        assert_eq!(
            add_partitions(&mut client, "x", pid, epoch, &[("t", 0)]).await,
            vec![0]
        );
        let marker = batch(pid, epoch, 0, 1, Kind::Control);
        assert_ne!(
            produce_to(&mut client, Some("x"), "t", 0, marker).await.0,
            0
        );
        assert_eq!(
            latest(&mut client, "t", false).await,
            0,
            "nothing was stored"
        );
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_second_producer_with_the_same_id_fences_the_first_and_aborts_its_transaction() {
    let broker = TestBroker::start().await;
    let mut first = broker.connect().await;
    let mut second = broker.connect().await;
    bounded(async {
        create_topic(&mut first, "f").await;
        let (pid, epoch) = init_txn_ok(&mut first, "shared").await;
        assert_eq!(
            add_partitions(&mut first, "shared", pid, epoch, &[("f", 0)]).await,
            vec![0]
        );
        let b = batch(pid, epoch, 0, 2, Kind::Transactional);
        assert_eq!(produce_to(&mut first, Some("shared"), "f", 0, b).await.0, 0);

        let (pid2, epoch2) = init_txn_ok(&mut second, "shared").await;
        assert_eq!(pid2, pid, "the id keeps its producer id");
        assert!(
            epoch2 > epoch + 1,
            "fenced (+1) then initialized (+1): {epoch2}"
        );
        // The first producer's transaction was aborted: stable, and aborted for readers.
        await_stable(&mut first, "f", 3).await;
        let read = fetch(&mut first, "f", 0, true).await;
        assert_eq!(read.aborted_transactions.map(|a| a.len()), Some(1));
        // Everything the first producer does now is fenced.
        let late = batch(pid, epoch, 2, 1, Kind::Transactional);
        assert_ne!(
            produce_to(&mut first, Some("shared"), "f", 0, late).await.0,
            0
        );
        assert_eq!(
            end_txn(&mut first, "shared", pid, epoch, true).await,
            PRODUCER_FENCED
        );
        assert_eq!(
            add_partitions(&mut first, "shared", pid, epoch, &[("f", 0)]).await,
            vec![PRODUCER_FENCED]
        );
        // The second one works.
        assert_eq!(
            add_partitions(&mut second, "shared", pid2, epoch2, &[("f", 0)]).await,
            vec![0]
        );
        let b = batch(pid2, epoch2, 0, 1, Kind::Transactional);
        assert_eq!(
            produce_to(&mut second, Some("shared"), "f", 0, b).await,
            (0, 3)
        );
        assert_eq!(end_txn(&mut second, "shared", pid2, epoch2, true).await, 0);
        await_stable(&mut second, "f", 5).await;
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let broker = TestBroker::start_with(|c| c.transactions.abort_check_interval_ms = 50).await;
    let mut client = broker.connect().await;
    bounded(async {
        create_topic(&mut client, "slow").await;
        let r = init_txn(&mut client, "sleepy", 200).await;
        assert_eq!(r.error_code, 0);
        let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
        assert_eq!(
            add_partitions(&mut client, "sleepy", pid, epoch, &[("slow", 0)]).await,
            vec![0]
        );
        let b = batch(pid, epoch, 0, 2, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("sleepy"), "slow", 0, b)
                .await
                .0,
            0
        );
        // Bounded wait for the coordinator's abort (timeout 200 ms, checked every 50 ms).
        let mut state = String::new();
        for _ in 0..200 {
            state = describe(&mut client, "sleepy")
                .await
                .transaction_state
                .to_string();
            if state == "CompleteAbort" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(state, "CompleteAbort");
        await_stable(&mut client, "slow", 3).await;
        assert_eq!(
            end_txn(&mut client, "sleepy", pid, epoch, true).await,
            PRODUCER_FENCED
        );
        let late = batch(pid, epoch, 2, 1, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("sleepy"), "slow", 0, late)
                .await
                .0,
            INVALID_PRODUCER_EPOCH
        );
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn transactions_survive_a_restart() {
    let broker = TestBroker::start().await;
    let mut client = broker.connect().await;
    let (pid, epoch) = bounded_value(async {
        create_topic(&mut client, "r").await;
        let (pid, epoch) = init_txn_ok(&mut client, "durable").await;
        assert_eq!(
            add_partitions(&mut client, "durable", pid, epoch, &[("r", 0)]).await,
            vec![0]
        );
        let b = batch(pid, epoch, 0, 2, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("durable"), "r", 0, b).await.0,
            0
        );
        (pid, epoch)
    })
    .await;
    drop(client);
    let dir = broker.stop().await;
    let broker = TestBroker::start_in(dir, |_| {}).await;
    let mut client = broker.connect().await;
    bounded(async {
        // The open transaction is still open: nothing is stable, and it can be committed.
        assert_eq!(latest(&mut client, "r", true).await, 0);
        let open = describe(&mut client, "durable").await;
        assert_eq!(open.transaction_state.as_str(), "Ongoing");
        assert_eq!((open.producer_id.0, open.producer_epoch), (pid, epoch));
        assert_eq!(end_txn(&mut client, "durable", pid, epoch, true).await, 0);
        await_stable(&mut client, "r", 3).await;
    })
    .await;
    broker.stop().await;
}

/// The real file system, except that writes under `failing` fail with EIO once armed: a
/// partition that refuses the coordinator's markers.
#[derive(Debug, Default)]
struct FailingIo {
    failing: std::sync::Mutex<Option<std::path::PathBuf>>,
}

impl FailingIo {
    fn fails(&self, path: &std::path::Path) -> bool {
        self.failing
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|dir| path.starts_with(dir))
    }
}

impl FileIo for FailingIo {
    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> std::io::Result<()> {
        if self.fails(file.path()) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        OsIo.write_at(file, bufs, offset)
    }
    fn sync_data(&self, file: &IoFile) -> std::io::Result<()> {
        OsIo.sync_data(file)
    }
    fn sync_fs(&self, file: &IoFile) -> std::io::Result<()> {
        OsIo.sync_fs(file)
    }
    fn allocate(&self, file: &IoFile, len: u64) -> std::io::Result<()> {
        OsIo.allocate(file, len)
    }
    fn set_len(&self, file: &IoFile, len: u64) -> std::io::Result<()> {
        OsIo.set_len(file, len)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        OsIo.sync_dir(dir)
    }
}

/// The broker dies between the two phases of a commit (the prepare is durable and answered,
/// one partition has its marker, the other refuses it): after a restart the coordinator
/// finds the prepared transaction, writes the markers, and completes it, so the last stable
/// offsets move and read_committed readers see the commit.
#[tokio::test]
async fn a_crash_between_prepare_and_complete_is_finished_after_restart() {
    let io = Arc::new(FailingIo::default());
    let io_dyn: Arc<dyn FileIo> = io.clone();
    let broker = TestBroker::start_with(|c| c.file_io = Some(io_dyn)).await;
    let mut client = broker.connect().await;
    let (pid, epoch) = bounded_value(async {
        create_topic(&mut client, "good").await;
        create_topic(&mut client, "stuck").await;
        let (pid, epoch) = init_txn_ok(&mut client, "halfway").await;
        assert_eq!(
            add_partitions(
                &mut client,
                "halfway",
                pid,
                epoch,
                &[("good", 0), ("stuck", 0)]
            )
            .await,
            vec![0, 0]
        );
        for t in ["good", "stuck"] {
            let b = batch(pid, epoch, 0, 2, Kind::Transactional);
            assert_eq!(produce_to(&mut client, Some("halfway"), t, 0, b).await.0, 0);
        }
        *io.failing.lock().unwrap() = Some(broker.dir.path().join("stuck-0"));
        assert_eq!(end_txn(&mut client, "halfway", pid, epoch, true).await, 0);
        await_stable(&mut client, "good", 3).await;
        assert_eq!(latest(&mut client, "stuck", true).await, 0, "no marker yet");
        assert_eq!(
            describe(&mut client, "halfway")
                .await
                .transaction_state
                .as_str(),
            "PrepareCommit"
        );
        (pid, epoch)
    })
    .await;
    drop(client);
    // The old broker's marker task keeps failing against its (still armed) file system.
    let dir = broker.kill().await;
    let broker = TestBroker::start_in(dir, |_| {}).await;
    let mut client = broker.connect().await;
    bounded(async {
        await_stable(&mut client, "stuck", 3).await;
        let read = fetch(&mut client, "stuck", 0, true).await;
        assert_eq!(read.aborted_transactions.as_deref(), Some(&[][..]));
        assert_eq!(records(&read), vec![(0, false), (1, false), (2, true)]);
        let mut state = String::new();
        for _ in 0..200 {
            state = describe(&mut client, "halfway")
                .await
                .transaction_state
                .to_string();
            if state == "CompleteCommit" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(state, "CompleteCommit");
        // The producer goes on with the same id and epoch.
        assert_eq!(
            add_partitions(&mut client, "halfway", pid, epoch, &[("good", 0)]).await,
            vec![0]
        );
    })
    .await;
    broker.stop().await;
}

async fn bounded_value<T, F: std::future::Future<Output = T>>(test: F) -> T {
    tokio::time::timeout(common::TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

/// WriteTxnMarkers v1 for one marker on partition 0 of `topic`; that partition's error code.
async fn write_marker(
    client: &mut Client,
    topic: &str,
    pid: i64,
    epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
) -> i16 {
    use write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_coordinator_epoch(coordinator_epoch)
            .with_transaction_result(commit)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(name(topic))
                .with_partition_indexes(vec![0])])]);
    let response = client.send(1, &request).await;
    assert_eq!(response.markers.len(), 1);
    assert_eq!(response.markers[0].producer_id.0, pid);
    let t = &response.markers[0].topics[0];
    assert_eq!(t.name.0.as_str(), topic);
    assert_eq!(t.partitions[0].partition_index, 0);
    t.partitions[0].error_code
}

/// Admin's `abortTransaction` (`kafka-transactions.sh abort`): a WriteTxnMarkers from a client
/// aborts a hanging transaction that its coordinator never ends, so read_committed readers
/// get past it; stale producer or coordinator epochs and partitions that are not there get
/// Kafka's codes and write nothing.
#[tokio::test]
async fn an_admin_abort_marker_ends_a_hanging_transaction() {
    const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
    let broker = TestBroker::start().await;
    let mut client = broker.connect().await;
    bounded(async {
        create_topic(&mut client, "hang").await;
        // A second InitProducerId bumps the epoch to 1, so epoch 0 is stale.
        init_txn_ok(&mut client, "stuck").await;
        let (pid, epoch) = init_txn_ok(&mut client, "stuck").await;
        assert_eq!(epoch, 1);
        assert_eq!(
            add_partitions(&mut client, "stuck", pid, epoch, &[("hang", 0)]).await,
            vec![0]
        );
        let b = batch(pid, epoch, 0, 3, Kind::Transactional);
        assert_eq!(
            produce_to(&mut client, Some("stuck"), "hang", 0, b).await,
            (0, 0)
        );
        let plain = batch(-1, -1, -1, 2, Kind::Data);
        assert_eq!(
            produce_to(&mut client, None, "hang", 0, plain).await,
            (0, 3)
        );
        assert_eq!(
            latest(&mut client, "hang", true).await,
            0,
            "held by the open txn"
        );

        // Refusals write nothing.
        assert_eq!(
            write_marker(&mut client, "hang", pid, epoch - 1, 0, false).await,
            INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            write_marker(&mut client, "nowhere", pid, epoch, 0, false).await,
            UNKNOWN_TOPIC_OR_PARTITION
        );
        {
            // Partitions that do not exist: a negative index, an offsets-topic partition past
            // its count.
            use write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
            let topic = |t: &str, p: i32| {
                WritableTxnMarkerTopic::default()
                    .with_name(name(t))
                    .with_partition_indexes(vec![p])
            };
            let request =
                WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_topics(vec![topic("hang", -1), topic("__consumer_offsets", 9_999)])]);
            let response = client.send(1, &request).await;
            let codes: Vec<_> = response.markers[0]
                .topics
                .iter()
                .map(|t| t.partitions[0].error_code)
                .collect();
            assert_eq!(codes, vec![UNKNOWN_TOPIC_OR_PARTITION; 2]);
        }
        assert_eq!(latest(&mut client, "hang", false).await, 5);
        assert_eq!(latest(&mut client, "hang", true).await, 0);

        // The abort: the marker lands at offset 5 and the last stable offset moves past it.
        assert_eq!(
            write_marker(&mut client, "hang", pid, epoch, 3, false).await,
            0
        );
        assert_eq!(latest(&mut client, "hang", true).await, 6);
        let read = fetch(&mut client, "hang", 0, true).await;
        assert_eq!(read.last_stable_offset, 6);
        let aborted = read.aborted_transactions.clone().expect("read_committed");
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (aborted[0].producer_id.0, aborted[0].first_offset),
            (pid, 0)
        );
        assert_eq!(
            records(&read),
            vec![
                (0, false),
                (1, false),
                (2, false),
                (3, false),
                (4, false),
                (5, true)
            ]
        );

        // A marker from an older coordinator epoch than the last one is fenced; a producer
        // with no open transaction here still gets its marker, as in Kafka.
        assert_eq!(
            write_marker(&mut client, "hang", pid, epoch, 2, false).await,
            TRANSACTION_COORDINATOR_FENCED
        );
        assert_eq!(latest(&mut client, "hang", false).await, 6);
        assert_eq!(
            write_marker(&mut client, "hang", 12_345, 0, 0, false).await,
            0
        );
        assert_eq!(latest(&mut client, "hang", false).await, 7);
        assert_eq!(latest(&mut client, "hang", true).await, 7);
    })
    .await;
    broker.stop().await;
}

/// Markers for the transaction and share coordinators' own topics are appended, as Kafka 4.4
/// appends them (a stale epoch is refused there too, a partition past the topic's count is
/// not there); both coordinators load past them after a crash.
#[tokio::test]
async fn markers_on_the_coordinator_state_topics_are_appended_and_loaded_past() {
    let broker = TestBroker::start().await;
    let mut client = broker.connect().await;
    let epoch_before = bounded_value(async {
        let (_, epoch) = init_txn_ok(&mut client, "survivor").await;
        for topic in ["__transaction_state", "__share_group_state"] {
            assert_eq!(
                write_marker(&mut client, topic, 777, 5, 0, false).await,
                0,
                "{topic}"
            );
            assert_eq!(
                write_marker(&mut client, topic, 777, 4, 0, true).await,
                INVALID_PRODUCER_EPOCH,
                "{topic}"
            );
        }
        epoch
    })
    .await;
    let dir = broker.kill().await;
    let broker = TestBroker::start_in(dir, |_| {}).await;
    let mut client = broker.connect().await;
    bounded(async {
        let (_, epoch) = init_txn_ok(&mut client, "survivor").await;
        assert_eq!(epoch, epoch_before + 1, "the transactional id was loaded");
    })
    .await;
    broker.stop().await;
}
