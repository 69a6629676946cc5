//! The pipelined connection through the wire: several requests written at once are started in
//! request order while earlier ones wait (for a held sync, in a long poll), answered strictly
//! in request order, and bounded in number.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::hold_io::{fetch_request, produce_request, Held, HoldIo};
use common::producer::{batch, bounded, create_topic, Kind};
use common::{record_batch, Client, TestBroker};
use kafka_protocol::messages::*;
use rill_broker::in_flight::MAX_IN_FLIGHT_REQUESTS;
use tokio::io::AsyncWriteExt;

/// Polls `done` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start_holding(io: &Arc<HoldIo>) -> TestBroker {
    let io = Arc::clone(io);
    TestBroker::start_with(move |c| c.file_io = Some(io)).await
}

/// Written in one go: an acks=all produce (its sync held), ApiVersions, an acks=1 produce and
/// another acks=all produce. The requests behind the first are started (both later appends
/// happen while the first still waits for its sync), yet nothing is answered before the first,
/// and the answers come back in request order with offsets in request order.
#[tokio::test]
async fn requests_written_at_once_start_while_earlier_ones_wait_and_are_answered_in_order() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let broker = start_holding(&io).await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "pipe").await;
        let batch_bytes = record_batch(3, 100, common::now_ms());
        let produced_before = broker.metrics.produced_bytes_total.load(Ordering::Relaxed);
        let held = Held::new(&io);
        let mut wire = BytesMut::new();
        let mut ids = Vec::new();
        // acks per request; `None` is the ApiVersions between the produces.
        for acks in [Some(-1i16), None, Some(1), Some(-1)] {
            let (id, frame) = match acks {
                Some(acks) => client.encode(9, &produce_request("pipe", batch_bytes.clone(), acks)),
                None => client.encode(3, &ApiVersionsRequest::default()),
            };
            ids.push(id);
            wire.extend_from_slice(&frame);
        }
        client.stream.write_all(&wire).await.expect("write");
        // All three produces are appended while the first one's sync is held.
        let three = produced_before + 3 * batch_bytes.len() as u64;
        eventually("three appends", || {
            broker.metrics.produced_bytes_total.load(Ordering::Relaxed) == three
        })
        .await;
        // And still nothing is answered: the first request is waiting.
        let early = tokio::time::timeout(Duration::from_millis(200), client.read_frame()).await;
        assert!(early.is_err(), "a response overtook the waiting produce");
        drop(held);
        let first = client.read_response::<ProduceRequest>(9, ids[0]).await;
        let second = client.read_response::<ApiVersionsRequest>(3, ids[1]).await;
        let third = client.read_response::<ProduceRequest>(9, ids[2]).await;
        let fourth = client.read_response::<ProduceRequest>(9, ids[3]).await;
        assert_eq!(second.error_code, 0);
        let offsets: Vec<(i16, i64)> = [first, third, fourth]
            .iter()
            .map(|r| {
                let p = &r.responses[0].partition_responses[0];
                (p.error_code, p.base_offset)
            })
            .collect();
        assert_eq!(offsets, vec![(0, 0), (0, 3), (0, 6)]);
        drop(client);
        broker.stop().await;
    })
    .await;
}

/// A fetch long-polling an empty partition, then a produce to it on the same connection: the
/// produce is appended while the fetch waits, so the fetch answers with its records (long
/// before its 20 s wait), then the produce is answered.
#[tokio::test]
async fn a_long_polling_fetch_does_not_hold_up_a_produce_behind_it() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "poll").await;
        let records = record_batch(2, 50, common::now_ms());
        let (fetch_id, fetch_frame) = client.encode(12, &fetch_request("poll", 0, 20_000));
        let (produce_id, produce_frame) =
            client.encode(9, &produce_request("poll", records.clone(), -1));
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&fetch_frame);
        wire.extend_from_slice(&produce_frame);
        let started = Instant::now();
        client.stream.write_all(&wire).await.expect("write");
        let fetched = client.read_response::<FetchRequest>(12, fetch_id).await;
        let partition = &fetched.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.records.as_deref(), Some(&records[..]));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the fetch waited out its long poll: the produce behind it was not started"
        );
        let produced = client.read_response::<ProduceRequest>(9, produce_id).await;
        let p = &produced.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0));
        drop(client);
        broker.stop().await;
    })
    .await;
}

/// Five idempotent batches of one producer written at once (as a client with
/// max.in.flight=5 sends them) are appended in request order: no sequence error, offsets in
/// sequence order, answered in order.
#[tokio::test]
async fn pipelined_idempotent_batches_keep_their_order() {
    bounded(async {
        let broker = TestBroker::start().await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "idem").await;
        let (pid, epoch) = common::producer::init_producer_id(&mut client).await;
        let mut wire = BytesMut::new();
        let mut ids = Vec::new();
        for i in 0..5 {
            let records = batch(pid, epoch, i * 4, 4, Kind::Data);
            let (id, frame) = client.encode(9, &produce_request("idem", records, -1));
            ids.push(id);
            wire.extend_from_slice(&frame);
        }
        client.stream.write_all(&wire).await.expect("write");
        for (i, id) in ids.into_iter().enumerate() {
            let response = client.read_response::<ProduceRequest>(9, id).await;
            let p = &response.responses[0].partition_responses[0];
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, i as i64 * 4),
                "request {i}"
            );
        }
        drop(client);
        broker.stop().await;
    })
    .await;
}

/// A client that keeps writing requests whose answers cannot come (their syncs are held)
/// gets at most `MAX_IN_FLIGHT_REQUESTS` of them started: the broker stops reading, and TCP
/// holds back the rest. Once the syncs go, every request is answered in order.
#[tokio::test]
async fn requests_in_flight_per_connection_are_bounded() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let broker = start_holding(&io).await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "bound").await;
        let records = record_batch(1, 10, common::now_ms());
        let sent = MAX_IN_FLIGHT_REQUESTS + 8;
        let requests_before = broker.metrics.requests_total.load(Ordering::Relaxed);
        let held = Held::new(&io);
        let mut wire = BytesMut::new();
        let mut ids = Vec::new();
        for _ in 0..sent {
            let (id, frame) = client.encode(9, &produce_request("bound", records.clone(), -1));
            ids.push(id);
            wire.extend_from_slice(&frame);
        }
        client.stream.write_all(&wire).await.expect("write");
        let started = || broker.metrics.requests_total.load(Ordering::Relaxed) - requests_before;
        eventually("a full pipeline", || {
            started() == MAX_IN_FLIGHT_REQUESTS as u64
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            started(),
            MAX_IN_FLIGHT_REQUESTS as u64,
            "read past the bound"
        );
        drop(held);
        for (i, id) in ids.into_iter().enumerate() {
            let response = client.read_response::<ProduceRequest>(9, id).await;
            let p = &response.responses[0].partition_responses[0];
            assert_eq!((p.error_code, p.base_offset), (0, i as i64), "request {i}");
        }
        drop(client);
        broker.stop().await;
    })
    .await;
}

/// A request that closes the connection (an unknown API key) behind a waiting produce: the
/// produce is still answered, then the connection closes.
#[tokio::test]
async fn a_bad_request_behind_a_waiting_one_closes_after_the_earlier_answer() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let broker = start_holding(&io).await;
        let mut client: Client = broker.connect().await;
        create_topic(&mut client, "bad").await;
        let held = Held::new(&io);
        let records = record_batch(1, 10, common::now_ms());
        let (id, frame) = client.encode(9, &produce_request("bad", records, -1));
        let mut wire = BytesMut::from(&frame[..]);
        // api key 9999, version 0, correlation id 77, no client id.
        wire.extend_from_slice(&[0, 0, 0, 10, 0x27, 0x0f, 0, 0, 0, 0, 0, 77, 0xff, 0xff]);
        client.stream.write_all(&wire).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let response = client.read_response::<ProduceRequest>(9, id).await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0));
        assert!(client.is_closed_by_broker().await);
        drop(client);
        broker.stop().await;
    })
    .await;
}

/// While a request's append runs (here stuck in its write), the connection reads the next
/// frame: a produce of ~24 MB behind it, far more than the kernel's socket buffers hold, is
/// taken off the socket before the first append ends, so a client's sending overlaps the
/// broker's appending. The frame read ahead starts only after the first request's append, and
/// both are answered in order with offsets in order.
#[tokio::test]
async fn the_next_frame_is_read_while_a_request_appends() {
    bounded(async {
        let io = Arc::new(HoldIo::default());
        let broker = start_holding(&io).await;
        let mut client = broker.connect().await;
        create_topic(&mut client, "ahead").await;
        let first = record_batch(3, 100, common::now_ms());
        // Batches within the default message.max.bytes (1 MiB), 24 of them in one request.
        let one = record_batch(1000, 1000, common::now_ms());
        let mut big = BytesMut::new();
        for _ in 0..24 {
            big.extend_from_slice(&one);
        }
        io.stall_writes("ahead-0");
        let (first_id, first_frame) = client.encode(9, &produce_request("ahead", first, 1));
        let (big_id, big_frame) = client.encode(9, &produce_request("ahead", big.freeze(), 1));
        let mut wire = BytesMut::from(&first_frame[..]);
        wire.extend_from_slice(&big_frame);
        let sent = tokio::time::timeout(Duration::from_secs(5), client.stream.write_all(&wire));
        let sent = sent.await;
        if sent.is_ok() {
            // The first append is still stuck: the big frame was read while it ran.
            eventually("the first append's write", || {
                io.write_stalls.load(Ordering::SeqCst) >= 1
            })
            .await;
        }
        io.release_writes();
        assert!(
            sent.is_ok(),
            "the frame behind an appending request was not read ({} bytes sent)",
            wire.len()
        );
        sent.unwrap_or_else(|_| unreachable!("checked above"))
            .expect("write");
        assert!(!io.stall_timed_out.load(Ordering::SeqCst));
        let first = client.read_response::<ProduceRequest>(9, first_id).await;
        let big = client.read_response::<ProduceRequest>(9, big_id).await;
        let offsets: Vec<(i16, i64)> = [first, big]
            .iter()
            .map(|r| {
                let p = &r.responses[0].partition_responses[0];
                (p.error_code, p.base_offset)
            })
            .collect();
        assert_eq!(offsets, vec![(0, 0), (0, 3)]);
        drop(client);
        broker.stop().await;
    })
    .await;
}
