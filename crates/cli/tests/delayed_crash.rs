//! Delayed delivery under SIGKILL: a real `rill serve` process takes records with random
//! `rill-delay-ms` delays (acks=all) on a delay-enabled topic, is SIGKILLed several times at
//! random moments while the records fall due, and restarted on the same data directory. In
//! the end every acknowledged record is in the partition exactly once, no earlier than its
//! due time (send time + delay), and the partition is in due-time order. Some records carry a
//! `rill-delay-id` and are cancelled (`rill-delay-cancel`, acks=all) before the first kill:
//! those whose cancel was acknowledged before their due time are never delivered. The delay
//! log has small segments, so its start moves (segments are deleted) between the kills.
//!
//! `RILL_DELAYED_RECORDS` (default 20 000; `scripts/bench-delayed` runs 100 000),
//! `RILL_DELAYED_SPREAD_MS` (the largest delay, default 6 000), `RILL_DELAYED_KILLS`
//! (default 3) and `RILL_DELAYED_SEED` set the run.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::crash::{env_or, serve, sigkill, Rng};
use rill_client::{Client, ClientConfig, FetchSpec, Producer, ProducerConfig};

const TOPIC: &str = "later";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn connect(addr: &str) -> Client {
    Client::connect(ClientConfig {
        bootstrap: addr.to_string(),
        timeout: Duration::from_secs(10),
    })
    .await
    .expect("connect")
}

/// Every `CANCEL_EVERY`th record carries a `rill-delay-id` (its value) and is cancelled when
/// its due time is far enough away.
const CANCEL_EVERY: u64 = 10;

/// Sends `count` records with delays below `spread_ms`; returns each one's earliest allowed
/// delivery time (send time + delay), by value.
async fn produce(addr: &str, count: u64, spread_ms: u64, rng: &mut Rng) -> HashMap<String, i64> {
    let client = connect(addr).await;
    let topic = client.topic(TOPIC).await.expect("topic");
    let config = ProducerConfig {
        acks: -1,
        request_timeout: Duration::from_secs(30),
        ..ProducerConfig::default()
    };
    let mut producer = Producer::new(&client, &topic, config)
        .await
        .expect("producer");
    let mut due = HashMap::new();
    for i in 0..count {
        let delay = rng.below(spread_ms);
        let value = format!("r{i}");
        let sent = now_ms();
        let header = delay.to_string();
        let mut headers = vec![("rill-delay-ms", Some(header.as_bytes()))];
        if i % CANCEL_EVERY == 0 {
            headers.push(("rill-delay-id", Some(value.as_bytes())));
        }
        producer
            .send(
                0,
                sent,
                Some(value.as_bytes()),
                Some(value.as_bytes()),
                &headers,
                i,
            )
            .await
            .expect("send");
        due.insert(value, sent + delay as i64);
    }
    producer.flush().await.expect("flush");
    for ack in producer.take_acks() {
        assert!(ack.error.is_none(), "refused: {:?}", ack.error);
    }
    due
}

/// Cancels the records with an id that are due more than a second from now (acks=all);
/// returns their values and the time every cancel was acknowledged by.
async fn cancel(addr: &str, due: &HashMap<String, i64>) -> (Vec<String>, i64) {
    let client = connect(addr).await;
    let topic = client.topic(TOPIC).await.expect("topic");
    let config = ProducerConfig {
        acks: -1,
        request_timeout: Duration::from_secs(30),
        ..ProducerConfig::default()
    };
    let mut producer = Producer::new(&client, &topic, config)
        .await
        .expect("producer");
    let soon = now_ms() + 1000;
    let mut targets: Vec<String> = due
        .iter()
        .filter(|(v, d)| v[1..].parse::<u64>().is_ok_and(|i| i % CANCEL_EVERY == 0) && **d > soon)
        .map(|(v, _)| v.clone())
        .collect();
    targets.sort();
    for (i, value) in targets.iter().enumerate() {
        let headers = [("rill-delay-cancel", Some(value.as_bytes()))];
        producer
            .send(0, now_ms(), None, Some(b"cancel"), &headers, i as u64)
            .await
            .expect("send cancel");
    }
    producer.flush().await.expect("flush");
    for ack in producer.take_acks() {
        assert!(ack.error.is_none(), "cancel refused: {:?}", ack.error);
    }
    (targets, now_ms())
}

/// Every record of the partition: (value, timestamp, rill-delayed-deliver-at).
async fn read_all(addr: &str) -> Vec<(String, i64, i64)> {
    let client = connect(addr).await;
    let topic = client.topic(TOPIC).await.expect("topic");
    let connection = client.leader(&topic, 0).await.expect("leader");
    let mut out = Vec::new();
    let mut offset = 0;
    // Bounded: each round reads at least one record or ends.
    loop {
        let spec = FetchSpec {
            topic: TOPIC.to_string(),
            partition: 0,
            offset,
            max_bytes: 4 << 20,
        };
        let p = client
            .start_fetch(&connection, &[spec], 0, 1, 4 << 20)
            .expect("fetch")
            .await
            .expect("fetch")
            .remove(0);
        assert_eq!(p.error_code, 0);
        let records = rill_client::batch::decode_records(&p.records).expect("decode");
        let before = offset;
        for r in records.into_iter().filter(|r| r.offset >= before) {
            offset = r.offset + 1;
            let header = |name: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| k.as_str() == name)
                    .and_then(|(_, v)| v.as_ref())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let due: i64 = header("rill-delayed-deliver-at")
                .expect("delivered records name their due time")
                .parse()
                .expect("decimal");
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into();
            out.push((value, r.timestamp, due));
        }
        if offset == before {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_neither_loses_nor_duplicates() {
    let count = env_or("RILL_DELAYED_RECORDS", 20_000);
    let spread_ms = env_or("RILL_DELAYED_SPREAD_MS", 6_000).max(1);
    let kills = env_or("RILL_DELAYED_KILLS", 3);
    let mut rng = Rng(env_or("RILL_DELAYED_SEED", 0x5eed) | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, mut addr) = serve(dir.path());
    let configs = [
        (
            "rill.delivery.delayed.enable".to_string(),
            "true".to_string(),
        ),
        ("segment.bytes".to_string(), "65536".to_string()),
    ];
    connect(&addr)
        .await
        .create_topic(TOPIC, 1, 1, &configs)
        .await
        .expect("create topic");
    let started = Instant::now();
    let mut due = produce(&addr, count, spread_ms, &mut rng).await;
    let produced_in = started.elapsed();
    let (cancelled, cancels_acked) = cancel(&addr, &due).await;
    // A cancel acknowledged before its record's due time guarantees no delivery; one that
    // came later may or may not have been in time.
    let (never, maybe): (Vec<String>, Vec<String>) = cancelled
        .iter()
        .cloned()
        .partition(|v| due[v] > cancels_acked);
    assert!(
        never.len() as u64 > count / CANCEL_EVERY / 4,
        "too few cancels in time to test: {} of {}",
        never.len(),
        cancelled.len()
    );
    for v in &cancelled {
        due.remove(v);
    }
    let last_due = due.values().copied().max().unwrap_or(0);
    for _ in 0..kills {
        // Somewhere while records fall due (or right away when producing took longer).
        let left = (last_due - now_ms()).max(1) as u64;
        tokio::time::sleep(Duration::from_millis(rng.below(left.min(spread_ms)))).await;
        sigkill(&mut child);
        (child, addr) = serve(dir.path());
    }
    // Everything is due by `last_due`; delivery then takes a bounded while.
    let deadline = Instant::now()
        + Duration::from_millis((last_due - now_ms()).max(0) as u64)
        + Duration::from_secs(60);
    let delivered =
        |got: &[(String, i64, i64)]| got.iter().filter(|g| due.contains_key(&g.0)).count();
    let mut got = read_all(&addr).await;
    while delivered(&got) < due.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = read_all(&addr).await;
    }
    // Long enough for a cancelled record to show up if it were (wrongly) delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    got = read_all(&addr).await;
    sigkill(&mut child);
    let never: std::collections::HashSet<&String> = never.iter().collect();
    let maybe: std::collections::HashSet<&String> = maybe.iter().collect();
    let mut seen = HashMap::new();
    let mut previous_due = i64::MIN;
    let mut late_cancels_delivered = 0;
    for (i, (value, timestamp, record_due)) in got.iter().enumerate() {
        assert!(
            !never.contains(value),
            "{value} delivered though cancelled in time"
        );
        *seen.entry(value.clone()).or_insert(0u32) += 1;
        if maybe.contains(value) {
            late_cancels_delivered += 1;
            continue;
        }
        let earliest = due.get(value).copied().unwrap_or(i64::MAX);
        assert!(
            *record_due >= earliest,
            "{value} due at {record_due}, sent for {earliest}"
        );
        assert!(
            timestamp >= record_due,
            "{value} delivered at {timestamp}, due {record_due}"
        );
        assert!(
            *record_due >= previous_due,
            "record {i} ({value}) out of due order"
        );
        previous_due = *record_due;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    let missing: Vec<_> = due
        .keys()
        .filter(|v| !seen.contains_key(*v))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {count} missing, e.g. {missing:?}",
        due.len() - seen.len()
    );
    assert_eq!(got.len(), due.len() + late_cancels_delivered);
    eprintln!(
        "{count} delayed records, {} cancelled in time, {} cancelled late ({late_cancels_delivered} of those delivered), {kills} SIGKILLs: the others all delivered once, in due order, none early (produced in {produced_in:?})",
        never.len(),
        maybe.len()
    );
}
