//! Many partitions survive SIGKILL: a real `rill serve` gets `RILL_MANY_TOPICS` topics of 100
//! partitions (default 20: 2 000 partitions; `scripts/bench-partitions` runs 100, 10 000),
//! acks=all batches on every partition while batches are still in flight on others, then a
//! SIGKILL. The restarted broker must serve at once and hold every acknowledged record at the
//! offset it was acknowledged with. Prints how long the restart took to answer.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::rill_bin;
use rill_client::{Client, ClientConfig, FetchSpec, Producer, ProducerConfig};

const PARTITIONS: i32 = 100;

/// What was acknowledged: (topic index, partition) → [(offset, value)].
type Acked = HashMap<(usize, i32), Vec<(i64, Vec<u8>)>>;
const ROUNDS: u64 = 3;

/// Starts `rill serve` on `dir`; returns it, its address and when it started listening.
fn serve(dir: &Path) -> (Child, String, Duration) {
    serve_limited(dir, None)
}

/// [`serve`] with the open file limit (soft and hard) set to `nofile` by the shell that
/// execs it.
fn serve_limited(dir: &Path, nofile: Option<u32>) -> (Child, String, Duration) {
    let started = Instant::now();
    let command = match nofile {
        None => Command::new(rill_bin()),
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(rill_bin());
            c
        }
    };
    let (child, addr) = common::crash::serve_with(command, dir, Duration::from_secs(60));
    (child, addr, started.elapsed())
}

async fn connect(addr: &str) -> Client {
    Client::connect(ClientConfig {
        bootstrap: addr.to_string(),
        timeout: Duration::from_secs(30),
    })
    .await
    .expect("connect")
}

fn value(topic: usize, partition: i32, seq: u64) -> Vec<u8> {
    format!("t{topic}-p{partition}-r{seq}").into_bytes()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends `ROUNDS` one-record batches to every partition of every topic with acks=all;
/// returns what was acknowledged: (topic, partition) → [(offset, value)]. The last round is
/// left in flight on the last `in_flight_topics` topics (never the first) when it returns,
/// so the kill lands mid-traffic.
async fn produce(client: &Client, topics: usize, in_flight_topics: usize) -> Acked {
    let mut acked: Acked = HashMap::new();
    let mut producers = Vec::new();
    for t in 0..topics {
        let topic = client.topic(&format!("many-{t}")).await.expect("topic");
        let config = ProducerConfig {
            acks: -1,
            linger: Duration::from_millis(2),
            max_in_flight: 5,
            request_timeout: Duration::from_secs(30),
            ..ProducerConfig::default()
        };
        producers.push(
            Producer::new(client, &topic, config)
                .await
                .expect("producer"),
        );
    }
    for round in 0..ROUNDS {
        for (t, producer) in producers.iter_mut().enumerate() {
            for p in 0..PARTITIONS {
                let tag = round * PARTITIONS as u64 + p as u64;
                let v = value(t, p, round);
                producer
                    .send(p as usize, now_ms(), None, Some(&v), &[], tag)
                    .await
                    .expect("send");
            }
            if round + 1 < ROUNDS || t == 0 || t + in_flight_topics < topics {
                producer.flush().await.expect("flush");
            } else {
                producer.poll().expect("poll");
            }
            for ack in producer.take_acks() {
                assert!(ack.error.is_none(), "ack error: {:?}", ack.error);
                for (i, tag) in ack.tags.iter().enumerate() {
                    let (r, p) = (tag / PARTITIONS as u64, (tag % PARTITIONS as u64) as i32);
                    let offset = ack.base_offset + i as i64;
                    acked
                        .entry((t, p))
                        .or_default()
                        .push((offset, value(t, p, r)));
                }
            }
        }
    }
    acked
}

/// Every record of one partition, from offset 0.
async fn read_partition(client: &Client, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    let info = client.topic(topic).await.expect("topic");
    let connection = client.leader(&info, partition).await.expect("leader");
    let spec = FetchSpec {
        topic: topic.to_string(),
        partition,
        offset: 0,
        max_bytes: 1 << 20,
    };
    let p = client
        .start_fetch(&connection, &[spec], 0, 1, 1 << 20)
        .expect("fetch")
        .await
        .expect("fetch")
        .remove(0);
    assert_eq!(p.error_code, 0, "{topic}-{partition}");
    rill_client::batch::decode_records(&p.records)
        .expect("decode")
        .into_iter()
        .map(|r| (r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_partitions_survive_sigkill_with_every_acknowledged_record() {
    let topics: usize = std::env::var("RILL_MANY_TOPICS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, addr, _) = serve(dir.path());
    let client = connect(&addr).await;
    for t in 0..topics {
        client
            .create_topic(&format!("many-{t}"), PARTITIONS, 1, &[])
            .await
            .expect("create topic");
    }
    let acked = produce(&client, topics, topics).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    drop(client);

    let restarted = Instant::now();
    let (mut child, addr, listening) = serve(dir.path());
    let client = connect(&addr).await;
    // The first answer: a partition's records (opening its log, with recovery).
    let first = read_partition(&client, "many-0", 0).await;
    let served = restarted.elapsed();
    assert!(!first.is_empty());
    eprintln!(
        "{} partitions: listening {listening:?} after restart, first fetch answered after \
         {served:?}",
        topics * PARTITIONS as usize
    );
    let mut records = 0;
    for ((t, p), want) in &acked {
        let got = read_partition(&client, &format!("many-{t}"), *p).await;
        for (offset, value) in want {
            assert!(
                got.contains(&(*offset, value.clone())),
                "many-{t}-{p}: acknowledged offset {offset} lost or changed"
            );
        }
        records += want.len();
    }
    assert!(
        records >= topics * PARTITIONS as usize * (ROUNDS as usize - 1),
        "acknowledged {records} records"
    );
    child.kill().expect("kill");
    child.wait().expect("reap");
}

/// Issue 13: more partitions than descriptors. Each open log's active segment owns its write
/// descriptor (fsyncgate), and those used to sit outside the descriptor budget, so 10 000
/// partitions hit EMFILE near 10 000 with a 20 000 limit. Here a broker limited to 256
/// descriptors serves 600 partitions: acks=all batches to all of them (a topic's 100 at a
/// time, the last one in flight at the kill), SIGKILL, restart under the same limit, every
/// acknowledged record fetched back from every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_partitions_than_descriptors_survive_sigkill() {
    const NOFILE: u32 = 256;
    let topics = 6;
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, addr, _) = serve_limited(dir.path(), Some(NOFILE));
    let client = connect(&addr).await;
    for t in 0..topics {
        client
            .create_topic(&format!("many-{t}"), PARTITIONS, 1, &[])
            .await
            .expect("create topic");
    }
    assert!(topics * PARTITIONS as usize > NOFILE as usize * 2);
    let acked = produce(&client, topics, 1).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    drop(client);

    let (mut child, addr, _) = serve_limited(dir.path(), Some(NOFILE));
    let client = connect(&addr).await;
    let mut records = 0;
    for ((t, p), want) in &acked {
        let got = read_partition(&client, &format!("many-{t}"), *p).await;
        for (offset, value) in want {
            assert!(
                got.contains(&(*offset, value.clone())),
                "many-{t}-{p}: acknowledged offset {offset} lost or changed"
            );
        }
        records += want.len();
    }
    assert!(
        records >= topics * PARTITIONS as usize * (ROUNDS as usize - 1),
        "acknowledged {records} records"
    );
    // Still serving: a new batch on every partition of one topic after reading them all.
    let again = produce(&client, 1, 0).await;
    assert_eq!(again.len(), PARTITIONS as usize);
    child.kill().expect("kill");
    child.wait().expect("reap");
}
