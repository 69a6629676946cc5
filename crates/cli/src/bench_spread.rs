//! `rill bench spread`: produce throughput over many partitions of many topics with the
//! client out of the way, so the broker is what limits it (issue 13: "10 000 partitions as
//! fast as 10").
//!
//! One batch of `--batch-size` bytes (full records of `--record-size` value bytes, as a
//! client's `batch.size` holds) is encoded once and sent again and again. Batches go to the
//! partitions in turn (`PREFIX-0` partition 0, 1, ..., then `PREFIX-1`, ...), so every
//! partition gets the same share, and one Produce request carries the next batches in that
//! order, one per partition, up to `--max-request-bytes` (the Java client's
//! `max.request.size`, 1 MiB): 10 partitions give requests of 10 batches, 10 000 partitions
//! requests of 64. Up to `--max-in-flight` requests are pipelined on one connection, as a
//! Java producer does with one broker. So the generator's own cost per byte is the same
//! for 10 and for 10 000 partitions (a copy of the request into the frame), and what differs
//! is the broker's work.
//!
//! The JVM producer of `scripts/bench-partitions.d/PartitionsPerf.java` was the limit at
//! 10 000 partitions (Kafka's acks=1 run took 137 s to drain 10 s of sends); this one is not.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rill_client::batch::BatchBuilder;
use rill_client::{ClientError, Compression};
use serde_json::json;

use crate::common::{usage, ConnectArgs};
use crate::produce::{now_ms, parse_acks};

/// Upper bound on `--topics` x `--partitions`: the slot table is allocated up front.
const MAX_PARTITIONS: u64 = 1_000_000;

/// Bytes of a v2 record batch header.
const BATCH_HEADER_BYTES: usize = 61;

#[derive(Args, Debug)]
pub struct SpreadBench {
    /// Topics are PREFIX-0 .. PREFIX-(TOPICS-1); they must exist (create them first, e.g.
    /// with `rill topic create`).
    #[arg(long, default_value = "spread")]
    pub topic_prefix: String,
    /// Number of topics.
    #[arg(long, default_value_t = 1)]
    pub topics: u32,
    /// Partitions of each topic (all are written; a topic with fewer is an error).
    #[arg(long, default_value_t = 10)]
    pub partitions: u32,
    /// Bytes of each record's value.
    #[arg(long, short = 's', default_value_t = 1024)]
    pub record_size: usize,
    /// Bytes per batch (the client's batch.size): as many records as fit.
    #[arg(long, default_value_t = 16_384)]
    pub batch_size: usize,
    /// Bytes per Produce request at most (the client's max.request.size).
    #[arg(long, default_value_t = 1_048_576)]
    pub max_request_bytes: usize,
    /// Produce requests in flight at once on the connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Acknowledgements: 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Seconds to send for (requests in flight at the end are waited for and counted).
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

type Answer = Pin<Box<dyn Future<Output = rill_client::Result<ProduceResponse>> + Send>>;

struct InFlight {
    answer: Answer,
    sent_at: Instant,
    batches: u64,
}

/// Runs the benchmark.
///
/// # Errors
/// Usage errors, missing topics, an unreachable broker, a failed request or partition.
pub async fn run(b: SpreadBench) -> anyhow::Result<()> {
    check(&b)?;
    let client = b.connect.connect().await?;
    let names: Vec<String> = (0..b.topics)
        .map(|t| format!("{}-{t}", b.topic_prefix))
        .collect();
    let topics = client.metadata(Some(&names)).await?;
    let mut leader = None;
    for name in &names {
        let Some(t) = topics.iter().find(|t| &t.name == name) else {
            anyhow::bail!("topic {name} is missing from the metadata");
        };
        ClientError::check(t.error_code, || format!("metadata of topic '{name}'"))?;
        if t.partitions.len() < b.partitions as usize {
            anyhow::bail!(
                "topic {name} has {} partitions, fewer than --partitions {}",
                t.partitions.len(),
                b.partitions
            );
        }
        for p in t.partitions.iter().take(b.partitions as usize) {
            match leader {
                None => leader = Some(p.leader),
                Some(l) if l == p.leader => {}
                Some(_) => {
                    anyhow::bail!("the partitions have several leaders; spread drives one broker")
                }
            }
        }
    }
    let leader = leader.context("no partitions")?;
    let connection = client.broker(leader).await?;
    let version = connection.version_for(ApiKey::Produce)?;
    let (batch, records_per_batch) = encode_batch(b.record_size, b.batch_size)?;
    let total = u64::from(b.topics) * u64::from(b.partitions);
    let per_request = (b.max_request_bytes / batch.len()).clamp(1, total as usize) as u64;
    let topic_names: Vec<TopicName> = names
        .iter()
        .map(|n| TopicName(StrBytes::from_string(n.clone())))
        .collect();
    let timeout_ms = i32::try_from(client.timeout().as_millis())
        .unwrap_or(i32::MAX)
        .max(30_000);
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("constant histogram bounds are valid");

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(b.duration_s);
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(b.max_in_flight);
    let (mut next_slot, mut acked_batches, mut requests) = (0u64, 0u64, 0u64);
    // Bounded by the deadline: each iteration sends while a slot is free, then waits for the
    // oldest answer (at most the request timeout).
    loop {
        let sending = Instant::now() < deadline;
        while sending && in_flight.len() < b.max_in_flight {
            let request = build_request(
                &topic_names,
                b.partitions,
                next_slot,
                per_request,
                total,
                &batch,
                b.acks,
                timeout_ms,
            );
            next_slot += per_request;
            let answer = connection.send_versioned(&request, version)?;
            in_flight.push_back(InFlight {
                answer: Box::pin(answer),
                sent_at: Instant::now(),
                batches: per_request,
            });
            requests += 1;
        }
        let Some(oldest) = in_flight.pop_front() else {
            break;
        };
        let response = tokio::time::timeout(
            Duration::from_millis(timeout_ms as u64 + 5_000),
            oldest.answer,
        )
        .await
        .context("no answer to a produce request within its timeout")??;
        check_response(&response)?;
        acked_batches += oldest.batches;
        let _ = latency.record((oldest.sent_at.elapsed().as_micros() as u64).max(1));
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let records = acked_batches * records_per_batch;
    let value_mb = (records * b.record_size as u64) as f64 / 1e6;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    if b.json {
        println!(
            "{}",
            json!({
                "mode": "spread",
                "partitions": total, "topics": b.topics, "acks": b.acks,
                "record_size": b.record_size, "batch_bytes": batch.len(),
                "records_per_batch": records_per_batch, "batches_per_request": per_request,
                "max_in_flight": b.max_in_flight,
                "requests": requests, "records": records, "seconds": elapsed,
                "mb_per_sec": value_mb / elapsed,
                "records_per_sec": records as f64 / elapsed,
                "request_latency_ms": { "p50": ms(0.5), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0 },
            })
        );
    } else {
        println!(
            "spread: {total} partitions, acks={}: {records} records in {elapsed:.2} s: {:.1} MB/s of values, \
             {requests} requests of {per_request} batches of {} bytes",
            b.acks,
            value_mb / elapsed,
            batch.len(),
        );
        println!(
            "request latency ms: p50 {:.3}  p99 {:.3}  max {:.3}",
            ms(0.5),
            ms(0.99),
            latency.max() as f64 / 1000.0
        );
    }
    Ok(())
}

fn check(b: &SpreadBench) -> anyhow::Result<()> {
    if b.topics == 0 || b.partitions == 0 {
        return Err(usage("--topics and --partitions must be at least 1"));
    }
    if u64::from(b.topics) * u64::from(b.partitions) > MAX_PARTITIONS {
        return Err(usage("--topics x --partitions must be at most 1000000"));
    }
    if b.max_in_flight == 0 || b.record_size == 0 {
        return Err(usage(
            "--max-in-flight and --record-size must be at least 1",
        ));
    }
    if b.batch_size < b.record_size + 80 || b.max_request_bytes < b.batch_size {
        return Err(usage(
            "--batch-size must hold one record (record size + 80) and --max-request-bytes one batch",
        ));
    }
    if !(b.duration_s.is_finite() && b.duration_s > 0.0) {
        return Err(usage("--duration-s must be positive"));
    }
    Ok(())
}

/// One uncompressed batch of as many `record_size` records as fit in `batch_size` bytes, and
/// its record count.
fn encode_batch(record_size: usize, batch_size: usize) -> anyhow::Result<(Bytes, u64)> {
    let value = vec![b'x'; record_size];
    let now = now_ms();
    let mut one = BatchBuilder::new(Compression::None, record_size + 32);
    one.push(now, None, Some(&value), &[]);
    // A record's framing grows by a byte once its offset delta passes 63: one byte of slack.
    let record_bytes = one.size_bytes() + 1;
    let count = ((batch_size - BATCH_HEADER_BYTES) / record_bytes).max(1);
    let mut builder = BatchBuilder::new(Compression::None, batch_size);
    for _ in 0..count {
        builder.push(now, None, Some(&value), &[]);
    }
    Ok((builder.finish()?, count as u64))
}

/// The Produce request carrying the batches of slots `first..first + count` (mod `total`),
/// one per partition, grouped by topic in slot order.
#[allow(clippy::too_many_arguments)]
fn build_request(
    topics: &[TopicName],
    partitions: u32,
    first: u64,
    count: u64,
    total: u64,
    batch: &Bytes,
    acks: i16,
    timeout_ms: i32,
) -> ProduceRequest {
    let mut data: Vec<TopicProduceData> = Vec::new();
    for slot in (first..first + count).map(|s| s % total) {
        let topic = (slot / u64::from(partitions)) as usize;
        let partition = (slot % u64::from(partitions)) as i32;
        let entry = PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(batch.clone()));
        match data.last_mut() {
            Some(t) if t.name == topics[topic] => t.partition_data.push(entry),
            _ => data.push(
                TopicProduceData::default()
                    .with_name(topics[topic].clone())
                    .with_partition_data(vec![entry]),
            ),
        }
    }
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(data)
}

/// Fails on the first partition answered with an error.
fn check_response(response: &ProduceResponse) -> anyhow::Result<()> {
    for t in &response.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                anyhow::bail!(
                    "partition {}-{} answered error code {}{}",
                    t.name.0,
                    p.index,
                    p.error_code,
                    p.error_message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_fills_its_size_without_passing_it() {
        let (batch, count) = encode_batch(1024, 16_384).unwrap();
        assert!(batch.len() <= 16_384, "{} bytes", batch.len());
        assert!(
            batch.len() + 1024 + 20 > 16_384,
            "room for one more record: {}",
            batch.len()
        );
        assert_eq!(count, 15);
    }

    #[test]
    fn requests_cover_every_partition_in_turn() {
        let topics: Vec<TopicName> = (0..3)
            .map(|t| TopicName(StrBytes::from_string(format!("s-{t}"))))
            .collect();
        let batch = Bytes::from_static(b"x");
        let mut seen = std::collections::HashMap::new();
        let total = 3 * 4;
        let mut first = 0;
        // 5 requests of 5 batches over 12 partitions: 25 batches, each partition 2 or 3.
        for _ in 0..5 {
            let r = build_request(&topics, 4, first, 5, total, &batch, 1, 1000);
            first += 5;
            let mut in_request = std::collections::HashSet::new();
            for t in &r.topic_data {
                for p in &t.partition_data {
                    assert!(
                        in_request.insert((t.name.0.to_string(), p.index)),
                        "twice in one request"
                    );
                    *seen.entry((t.name.0.to_string(), p.index)).or_insert(0) += 1;
                }
            }
        }
        assert_eq!(seen.len(), 12);
        assert!(seen.values().all(|n| (2..=3).contains(n)), "{seen:?}");
    }
}
