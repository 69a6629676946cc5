//! The crash loop: an acks=all producer and a consumer run against a real `rill serve`
//! process that is SIGKILLed at random moments and restarted on the same data directory, over
//! and over. At the end every acknowledged record must be in the log at the offset it was
//! acknowledged with (so in order), and every (offset, value) the consumer ever saw must still
//! be there: no offset shown to a reader was lost or reused for another record.
//!
//! `RILL_CRASH_KILLS` sets the number of kills (default 25 here; `scripts/crash-loop` runs
//! 1000), `RILL_CRASH_SEED` the seed of the kill timing; the run stops early (with what it
//! did) after `RILL_CRASH_BUDGET_S` seconds (default 240).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::crash::{env_or, serve, sigkill, Rng};
use rill_client::{Client, ClientConfig, FetchSpec, Producer, ProducerConfig};

const TOPIC: &str = "crash";

/// What the consumer saw, and any violation it noticed on the way.
#[derive(Default)]
struct Seen {
    values: HashMap<i64, Vec<u8>>,
    next_offset: i64,
    violations: Vec<String>,
}

/// Reads from where the consumer got to until the connection dies (the broker is killed).
async fn consume(client: Arc<Client>, seen: Arc<Mutex<Seen>>) {
    let Ok(topic) = client.topic(TOPIC).await else {
        return;
    };
    let Ok(connection) = client.leader(&topic, 0).await else {
        return;
    };
    // Bounded by the broker's life: each round either reads or fails and ends.
    loop {
        let offset = seen.lock().unwrap().next_offset;
        let spec = FetchSpec {
            topic: TOPIC.to_string(),
            partition: 0,
            offset,
            max_bytes: 1 << 20,
        };
        let Ok(fetch) = client.start_fetch(&connection, &[spec], 100, 1, 1 << 20) else {
            return;
        };
        let Ok(partitions) = fetch.await else { return };
        let Some(p) = partitions.into_iter().next() else {
            return;
        };
        let mut seen = seen.lock().unwrap();
        if p.error_code != 0 {
            seen.violations.push(format!(
                "fetch at {offset} failed with error {} (high watermark {})",
                p.error_code, p.high_watermark
            ));
            return;
        }
        let records = rill_client::batch::decode_records(&p.records).expect("records decode");
        for r in records {
            if r.offset < offset {
                continue;
            }
            let value = r.value.map(|v| v.to_vec()).unwrap_or_default();
            if let Some(before) = seen.values.insert(r.offset, value.clone()) {
                if before != value {
                    seen.violations
                        .push(format!("offset {} was reused for another record", r.offset));
                }
            }
            seen.next_offset = seen.next_offset.max(r.offset + 1);
        }
    }
}

/// Produces one record per acks=all request, recording what was acknowledged, until the
/// broker dies.
async fn produce(client: Arc<Client>, next_seq: u64, acked: Arc<Mutex<Vec<(u64, i64)>>>) {
    let Ok(topic) = client.topic(TOPIC).await else {
        return;
    };
    let config = ProducerConfig {
        acks: -1,
        linger: Duration::ZERO,
        max_in_flight: 1,
        request_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    };
    let Ok(mut producer) = Producer::new(&client, &topic, config).await else {
        return;
    };
    // Bounded by the broker's life.
    for seq in next_seq.. {
        let value = format!("r{seq}");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if producer
            .send(0, now_ms, None, Some(value.as_bytes()), &[], seq)
            .await
            .is_err()
        {
            return;
        }
        if producer.flush().await.is_err() {
            return;
        }
        for ack in producer.take_acks() {
            if ack.error.is_some() {
                return;
            }
            assert_eq!(ack.tags, vec![seq], "one record per request");
            acked.lock().unwrap().push((seq, ack.base_offset));
        }
    }
}

/// The whole log as offset → value, read from a fresh broker.
async fn read_log(addr: &str) -> HashMap<i64, Vec<u8>> {
    let client = Client::connect(ClientConfig {
        bootstrap: addr.to_string(),
        timeout: Duration::from_secs(10),
    })
    .await
    .expect("connect");
    let topic = client.topic(TOPIC).await.expect("topic");
    let connection = client.leader(&topic, 0).await.expect("leader");
    let mut log = HashMap::new();
    let mut offset = 0;
    // Bounded: each round reads at least one record or ends.
    loop {
        let spec = FetchSpec {
            topic: TOPIC.to_string(),
            partition: 0,
            offset,
            max_bytes: 1 << 20,
        };
        let p = client
            .start_fetch(&connection, &[spec], 0, 1, 1 << 20)
            .expect("fetch")
            .await
            .expect("fetch")
            .remove(0);
        assert_eq!(
            p.error_code, 0,
            "final read at {offset}: high watermark {}, log start {}",
            p.high_watermark, p.log_start_offset
        );
        let records = rill_client::batch::decode_records(&p.records).expect("decode");
        let before = offset;
        for r in records.into_iter().filter(|r| r.offset >= before) {
            offset = r.offset + 1;
            log.insert(r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default());
        }
        if offset == before {
            assert!(offset >= p.high_watermark, "stuck below the high watermark");
            return log;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_keeps_every_acknowledged_record_and_never_reuses_an_offset() {
    let kills = env_or("RILL_CRASH_KILLS", 25);
    let budget = Duration::from_secs(env_or("RILL_CRASH_BUDGET_S", 240));
    let mut rng = Rng(env_or("RILL_CRASH_SEED", 0x5eed) | 1);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let acked = Arc::new(Mutex::new(Vec::<(u64, i64)>::new()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut done = 0;
    for round in 0..kills {
        if started.elapsed() > budget {
            break;
        }
        let (mut child, addr) = serve(dir.path());
        let client = Arc::new(
            Client::connect(ClientConfig {
                bootstrap: addr.clone(),
                timeout: Duration::from_secs(10),
            })
            .await
            .expect("connect"),
        );
        if round == 0 {
            client
                .create_topic(TOPIC, 1, 1, &[])
                .await
                .expect("create topic");
        }
        let next_seq = acked.lock().unwrap().last().map_or(0, |(s, _)| s + 1);
        let producer = tokio::spawn(produce(Arc::clone(&client), next_seq, Arc::clone(&acked)));
        let consumer = tokio::spawn(consume(Arc::clone(&client), Arc::clone(&seen)));
        // A random moment: during start-up work, mid-request, mid-fsync.
        tokio::time::sleep(Duration::from_millis(5 + rng.below(300))).await;
        sigkill(&mut child);
        producer.await.expect("producer task");
        consumer.await.expect("consumer task");
        done += 1;
    }
    let (mut child, addr) = serve(dir.path());
    let log = read_log(&addr).await;
    sigkill(&mut child);

    let acked = acked.lock().unwrap();
    let seen = seen.lock().unwrap();
    eprintln!(
        "crash loop: {done} kills in {:.1} s, {} acknowledged records, {} records in the log, {} offsets seen by the consumer",
        started.elapsed().as_secs_f64(),
        acked.len(),
        log.len(),
        seen.values.len()
    );
    assert!(done >= kills.min(5), "only {done} kills ran");
    assert!(!acked.is_empty(), "nothing was acknowledged");
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    let mut last_offset = -1;
    for &(seq, offset) in acked.iter() {
        assert!(
            offset > last_offset,
            "record {seq} acknowledged out of order"
        );
        last_offset = offset;
        assert_eq!(
            log.get(&offset).map(Vec::as_slice),
            Some(format!("r{seq}").as_bytes()),
            "acknowledged record {seq} at offset {offset} is missing or different"
        );
    }
    for (offset, value) in &seen.values {
        assert_eq!(
            log.get(offset),
            Some(value),
            "offset {offset} was shown to the consumer and then lost or reused"
        );
    }
}
