//! `rill bench produce|consume|e2e` (and `rebalance`, in `bench_rebalance.rs`, and `spread`,
//! in `bench_spread.rs`): load generator and measurement against any
//! Kafka-compatible broker.
//!
//! - produce: one producer task fills per-partition batches (sticky partitioning: a batch's
//!   worth of records goes to one partition, then the next), pipelines up to
//!   `--max-in-flight` requests, and measures each record's latency from creation to ack.
//! - consume: reads a topic from the beginning with one fetch always in flight, counting
//!   records from batch headers (no decoding), and measures each fetch's latency.
//! - e2e: both at once in one process; each record carries its send time in its first 8
//!   value bytes and the consumer measures produce-to-consume latency.
//!
//! Results: records/s, MB/s (10^6 bytes of record values per second) and latency
//! percentiles from an HDR histogram (microsecond resolution), as text or one JSON object.
//! A progress bar on stdout shows the live rate when stdout is a terminal, nothing otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rill_client::batch::{batch_infos, decode_records};
use rill_client::client::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use rill_client::{
    Client, ClientError, Compression, FetchSpec, Producer, ProducerConfig, TopicInfo,
};
use serde_json::json;

use crate::common::{usage, ConnectArgs};
use crate::produce::{now_ms, parse_acks};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce as fast as allowed; latency from record creation to acknowledgement.
    Produce(ProduceBench),
    /// Read a topic from the beginning; latency of each fetch.
    Consume(ConsumeBench),
    /// Produce and consume at once; latency from send to receive.
    E2e(E2eBench),
    /// A consumer group of many members, one leaves: time until the group settles.
    Rebalance(crate::bench_rebalance::RebalanceBench),
    /// One pre-encoded batch re-sent to many partitions of many topics in turn: the
    /// broker's produce throughput over many partitions, with the client out of the way.
    Spread(crate::bench_spread::SpreadBench),
}

#[derive(Args, Debug, Clone)]
pub struct Workload {
    /// Topic to use; created with --partitions when missing.
    #[arg(long, short = 't', default_value = "rill-bench")]
    pub topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ProducerOptions {
    /// Bytes of each record's value.
    #[arg(long, short = 's', default_value_t = 100)]
    pub record_size: usize,
    /// Records to send [default: 1000000 unless --duration-s is given].
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Send for this many seconds instead of a count.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Records per second at most; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Acknowledgements: 0, 1 or all (all is the default of librdkafka and the Java client).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: Compression,
    /// Bytes per partition batch (as librdkafka's batch.size; keep it below the broker's
    /// max.message.bytes, 1048588 by default).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: usize,
    /// How long a batch may wait to fill, in ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Produce requests in flight at once.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
}

#[derive(Args, Debug)]
pub struct ProduceBench {
    #[command(flatten)]
    pub workload: Workload,
    #[command(flatten)]
    pub producer: ProducerOptions,
}

#[derive(Args, Debug)]
pub struct ConsumeBench {
    #[command(flatten)]
    pub workload: Workload,
    /// Records to read [default: everything in the topic when the run starts].
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Bytes per partition per fetch.
    #[arg(long, default_value_t = 4_194_304)]
    pub fetch_max_bytes: i32,
}

#[derive(Args, Debug)]
pub struct E2eBench {
    #[command(flatten)]
    pub workload: Workload,
    #[command(flatten)]
    pub producer: ProducerOptions,
    /// Bytes per partition per fetch.
    #[arg(long, default_value_t = 1_048_576)]
    pub fetch_max_bytes: i32,
}

/// Runs a benchmark.
///
/// # Errors
/// Usage errors, an unreachable broker, failed requests.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(b) => produce(b).await,
        BenchCommand::Consume(b) => consume(b).await,
        BenchCommand::E2e(b) => e2e(b).await,
        BenchCommand::Rebalance(b) => crate::bench_rebalance::run(b).await,
        BenchCommand::Spread(b) => crate::bench_spread::run(b).await,
    }
}

/// What a run measured.
struct Report {
    mode: &'static str,
    records: u64,
    value_bytes: u64,
    wire_bytes: u64,
    elapsed: Duration,
    errors: u64,
    /// Microseconds.
    latency: Histogram<u64>,
    latency_kind: &'static str,
}

impl Report {
    fn print(&self, json: bool, settings: serde_json::Value) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let rps = self.records as f64 / secs;
        let mbps = self.value_bytes as f64 / secs / 1e6;
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let max_ms = self.latency.max() as f64 / 1000.0;
        if json {
            let out = json!({
                "mode": self.mode,
                "records": self.records,
                "value_bytes": self.value_bytes,
                "wire_bytes": self.wire_bytes,
                "seconds": secs,
                "records_per_sec": rps,
                "mb_per_sec": mbps,
                "wire_mb_per_sec": self.wire_bytes as f64 / secs / 1e6,
                "errors": self.errors,
                "latency_kind": self.latency_kind,
                "latency_ms": {
                    "samples": self.latency.len(),
                    "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
                    "max": max_ms,
                },
                "settings": settings,
            });
            println!("{out}");
            return;
        }
        println!(
            "{}: {} records in {:.2} s: {:.0} records/s, {:.1} MB/s of values ({:.1} MB/s on the wire){}",
            self.mode,
            self.records,
            secs,
            rps,
            mbps,
            self.wire_bytes as f64 / secs / 1e6,
            if self.errors > 0 { format!(", {} records failed", self.errors) } else { String::new() },
        );
        println!(
            "{} latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
            self.latency_kind,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            max_ms,
            self.latency.len(),
        );
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant digits: constant bounds that hdrhistogram accepts
    // (low >= 1, high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// A progress bar on stdout, hidden when stdout is not a terminal.
fn progress(total: Option<u64>, unit: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if std::io::stdout().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stdout_with_hz(5));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = if total.is_some() {
        format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})")
    } else {
        format!("{{spinner}} [{{elapsed_precise}}] {{pos}} {unit} ({{per_sec}})")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// The topic, created with `partitions` partitions when missing.
pub(crate) async fn ensure_topic(
    client: &Client,
    name: &str,
    partitions: i32,
) -> anyhow::Result<TopicInfo> {
    match client.topic(name).await {
        Ok(t) => return Ok(t),
        Err(ClientError::UnknownTopic { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    match client.create_topic(name, partitions, 1, &[]).await {
        Ok(()) | Err(ClientError::Broker { code: 36, .. }) => {}
        Err(e) => return Err(e).context("creating the benchmark topic"),
    }
    // Metadata may lag creation briefly on some brokers; a bounded wait.
    for _ in 0..50 {
        if let Ok(t) = client.topic(name).await {
            if !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader >= 0) {
                return Ok(t);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(client.topic(name).await?)
}

fn check_producer(p: &ProducerOptions) -> anyhow::Result<()> {
    if p.record_size < 8 {
        return Err(usage(
            "--record-size must be at least 8 (the value carries a timestamp)",
        ));
    }
    if p.count.is_some() && p.duration_s.is_some() {
        return Err(usage("give --count or --duration-s, not both"));
    }
    if p.duration_s.is_some_and(|d| d.is_nan() || d <= 0.0) {
        return Err(usage("--duration-s must be positive"));
    }
    if p.max_in_flight == 0 || p.batch_size == 0 {
        return Err(usage("--max-in-flight and --batch-size must be at least 1"));
    }
    Ok(())
}

fn producer_settings(w: &Workload, p: &ProducerOptions, partitions: usize) -> serde_json::Value {
    json!({
        "topic": w.topic, "partitions": partitions, "record_size": p.record_size,
        "rate": p.rate, "acks": p.acks, "compression": format!("{:?}", p.compression).to_lowercase(),
        "batch_size": p.batch_size, "linger_ms": p.linger_ms, "max_in_flight": p.max_in_flight,
    })
}

/// Sends records until the count or duration is reached; returns (sent, failed). Each
/// record's value starts with its send time (ns since `base`), which e2e reads back.
async fn produce_loop(
    producer: &mut Producer,
    p: &ProducerOptions,
    base: Instant,
    latency: &mut Histogram<u64>,
    bar: &ProgressBar,
    stop: &AtomicBool,
) -> anyhow::Result<(u64, u64, u64)> {
    let count = match (p.count, p.duration_s) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 1_000_000,
    };
    let deadline = p
        .duration_s
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let partitions = producer.partition_count().max(1);
    let per_batch = (p.batch_size / (p.record_size + 16)).max(1) as u64;
    let mut value = vec![b'x'; p.record_size];
    let started = Instant::now();
    let (mut sent, mut failed, mut wire) = (0u64, 0u64, 0u64);
    let account = |producer: &mut Producer,
                   failed: &mut u64,
                   wire: &mut u64,
                   latency: &mut Histogram<u64>| {
        let now_ns = base.elapsed().as_nanos() as u64;
        for ack in producer.take_acks() {
            if let Some(e) = &ack.error {
                if *failed == 0 {
                    tracing::error!(partition = ack.partition, error = %e, "batch failed");
                    eprintln!("error: a batch to partition {} failed: {e}", ack.partition);
                }
                *failed += ack.tags.len() as u64;
                continue;
            }
            *wire += ack.batch_bytes as u64;
            for tag in ack.tags {
                let _ = latency.record((now_ns.saturating_sub(tag) / 1000).max(1));
            }
        }
    };
    while sent < count {
        if sent % 1024 == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) || stop.load(Ordering::Relaxed) {
                break;
            }
            bar.set_position(sent);
        }
        if p.rate > 0 {
            // Pace record by record; while waiting, batches whose linger ends still go out.
            let due = started + Duration::from_secs_f64(sent as f64 / p.rate as f64);
            loop {
                let now = Instant::now();
                if due <= now {
                    break;
                }
                let wake = producer.linger_deadline().map_or(due, |l| l.min(due));
                if wake > now {
                    // An answer frees a request slot: collect it (and its ack time) at once
                    // rather than at the next record's time, as a client's network thread does.
                    tokio::select! {
                        () = tokio::time::sleep_until(wake.into()) => {}
                        answered = producer.next_answer() => answered?,
                    }
                }
                producer.poll()?;
                account(producer, &mut failed, &mut wire, latency);
            }
        }
        let tag = base.elapsed().as_nanos() as u64;
        value[..8].copy_from_slice(&tag.to_be_bytes());
        let index = ((sent / per_batch) % partitions as u64) as usize;
        producer
            .send(index, now_ms(), None, Some(&value), &[], tag)
            .await?;
        sent += 1;
        if sent % 256 == 0 {
            account(producer, &mut failed, &mut wire, latency);
        }
    }
    producer.flush().await?;
    account(producer, &mut failed, &mut wire, latency);
    bar.set_position(sent);
    Ok((sent, failed, wire))
}

async fn produce(b: ProduceBench) -> anyhow::Result<()> {
    check_producer(&b.producer)?;
    let client = b.workload.connect.connect().await?;
    let topic = ensure_topic(&client, &b.workload.topic, b.workload.partitions).await?;
    let mut producer =
        Producer::new(&client, &topic, producer_config(&b.producer, &client)).await?;
    let bar = progress(
        b.producer
            .count
            .or(b.producer.duration_s.is_none().then_some(1_000_000)),
        "records",
    );
    let mut latency = histogram();
    let base = Instant::now();
    let stop = AtomicBool::new(false);
    let (sent, failed, wire) =
        produce_loop(&mut producer, &b.producer, base, &mut latency, &bar, &stop).await?;
    let elapsed = base.elapsed();
    bar.finish_and_clear();
    Report {
        mode: "produce",
        records: sent - failed,
        value_bytes: (sent - failed) * b.producer.record_size as u64,
        wire_bytes: wire,
        elapsed,
        errors: failed,
        latency,
        latency_kind: "produce (send to ack)",
    }
    .print(
        b.workload.json,
        producer_settings(&b.workload, &b.producer, topic.partitions.len()),
    );
    if failed > 0 {
        anyhow::bail!("{failed} records were not acknowledged");
    }
    Ok(())
}

fn producer_config(p: &ProducerOptions, client: &Client) -> ProducerConfig {
    ProducerConfig {
        acks: p.acks,
        compression: p.compression,
        batch_size_bytes: p.batch_size,
        linger: Duration::from_millis(p.linger_ms),
        max_in_flight: p.max_in_flight,
        request_timeout: client.timeout().max(Duration::from_secs(30)),
    }
}

/// Partition positions and what a consumer has read.
struct ConsumeState {
    specs: Vec<FetchSpec>,
    records: u64,
    value_bytes: u64,
    wire_bytes: u64,
}

impl ConsumeState {
    /// Counts whole batches of one fetched partition and moves its position past them.
    fn account(&mut self, part: &rill_client::FetchedPartition) -> anyhow::Result<()> {
        ClientError::check(part.error_code, || {
            format!("fetching {}-{}", part.topic, part.partition)
        })?;
        let Some(spec) = self
            .specs
            .iter_mut()
            .find(|s| s.partition == part.partition && s.topic == part.topic)
        else {
            return Ok(());
        };
        for info in batch_infos(&part.records) {
            if info.last_offset < spec.offset {
                continue;
            }
            if !info.is_control {
                let skipped = (spec.offset - info.base_offset).max(0) as u64;
                let n = (info.record_count.max(0) as u64).saturating_sub(skipped);
                self.records += n;
            }
            self.wire_bytes += info.size_bytes as u64;
            spec.offset = info.last_offset + 1;
        }
        Ok(())
    }
}

async fn consume(b: ConsumeBench) -> anyhow::Result<()> {
    let client = b.workload.connect.connect().await?;
    let topic = client.topic(&b.workload.topic).await?;
    let ids: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let starts = client
        .list_offsets(&topic, &ids, EARLIEST_TIMESTAMP)
        .await?;
    let ends = client.list_offsets(&topic, &ids, LATEST_TIMESTAMP).await?;
    let available: u64 = starts
        .iter()
        .zip(&ends)
        .map(|(s, e)| (e.1 - s.1).max(0) as u64)
        .sum();
    let target = b.count.unwrap_or(available);
    if target == 0 && b.duration_s.is_none() {
        return Err(usage(format!(
            "topic '{}' is empty; run `rill bench produce --topic {}` first, or give --count and produce meanwhile",
            topic.name, topic.name
        )));
    }
    let mut state = ConsumeState {
        specs: starts
            .iter()
            .map(|&(partition, offset, _)| FetchSpec {
                topic: topic.name.clone(),
                partition,
                offset,
                max_bytes: b.fetch_max_bytes,
            })
            .collect(),
        records: 0,
        value_bytes: 0,
        wire_bytes: 0,
    };
    let leader = topic.partitions.first().map_or(-1, |p| p.leader);
    let connection = client.broker(leader).await?;
    let bar = progress(Some(target).filter(|&t| t > 0), "records");
    let mut latency = histogram();
    let deadline = b
        .duration_s
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let max_bytes = b.fetch_max_bytes.saturating_mul(ids.len().max(1) as i32);
    let started = Instant::now();
    // One fetch at a time, as Kafka consumers do per broker: the next fetch's offsets come
    // from this one's answer. Counting reads batch headers only, so the gap is short.
    while state.records < target || (b.count.is_none() && b.duration_s.is_some()) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let sent_at = Instant::now();
        let fetched = client
            .start_fetch(&connection, &state.specs, 500, 1, max_bytes)?
            .await?;
        let _ = latency.record((sent_at.elapsed().as_micros() as u64).max(1));
        for part in &fetched {
            state.account(part)?;
        }
        bar.set_position(state.records);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    // Values are what the producer sent: record bytes minus per-record overhead are not
    // known without decoding, so report values as wire bytes here, named as such.
    state.value_bytes = state.wire_bytes;
    Report {
        mode: "consume",
        records: state.records,
        value_bytes: state.value_bytes,
        wire_bytes: state.wire_bytes,
        elapsed,
        errors: 0,
        latency,
        latency_kind: "fetch (request to response)",
    }
    .print(
        b.workload.json,
        json!({"topic": topic.name, "partitions": ids.len(), "fetch_max_bytes": b.fetch_max_bytes}),
    );
    Ok(())
}

async fn e2e(b: E2eBench) -> anyhow::Result<()> {
    check_producer(&b.producer)?;
    let client = Arc::new(b.workload.connect.connect().await?);
    let topic = ensure_topic(&client, &b.workload.topic, b.workload.partitions).await?;
    let ids: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let ends = client.list_offsets(&topic, &ids, LATEST_TIMESTAMP).await?;
    let base = Instant::now();
    let produced_total = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    // The consumer gets its own connection: the broker answers a connection's requests one
    // at a time, so a long-polling fetch would hold up produce requests behind it.
    let consumer_client = Arc::new(b.workload.connect.connect().await?);
    consumer_client.metadata(Some(&[])).await?;
    let consumer = tokio::spawn(e2e_consumer(
        consumer_client,
        topic.clone(),
        ends,
        b.fetch_max_bytes,
        base,
        Arc::clone(&produced_total),
        Arc::clone(&stop),
    ));
    let mut producer =
        Producer::new(&client, &topic, producer_config(&b.producer, &client)).await?;
    let bar = progress(
        b.producer
            .count
            .or(b.producer.duration_s.is_none().then_some(1_000_000)),
        "records",
    );
    let mut produce_latency = histogram();
    let produced = produce_loop(
        &mut producer,
        &b.producer,
        base,
        &mut produce_latency,
        &bar,
        &stop,
    )
    .await;
    let (sent, failed, _wire) = match produced {
        Ok(r) => r,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    produced_total.store(sent - failed, Ordering::Release);
    // The consumer stops once it has every acknowledged record, or 30 s after the last send.
    let consumed = tokio::time::timeout(Duration::from_secs(30), consumer).await;
    stop.store(true, Ordering::Relaxed);
    let (received, latency, wire_bytes) = match consumed {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => anyhow::bail!("consumer task failed: {e}"),
        Err(_) => anyhow::bail!(
            "the consumer did not receive every record within 30 s after the last send"
        ),
    };
    let elapsed = base.elapsed();
    bar.finish_and_clear();
    Report {
        mode: "e2e",
        records: received,
        value_bytes: received * b.producer.record_size as u64,
        wire_bytes,
        elapsed,
        errors: failed,
        latency,
        latency_kind: "end-to-end (send to receive)",
    }
    .print(
        b.workload.json,
        producer_settings(&b.workload, &b.producer, ids.len()),
    );
    if failed > 0 {
        anyhow::bail!("{failed} records were not acknowledged");
    }
    Ok(())
}

/// Reads from `ends` until it has `produced_total` records (set when the producer is done).
async fn e2e_consumer(
    client: Arc<Client>,
    topic: TopicInfo,
    ends: Vec<(i32, i64, i64)>,
    fetch_max_bytes: i32,
    base: Instant,
    produced_total: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, Histogram<u64>, u64)> {
    let mut specs: Vec<FetchSpec> = ends
        .iter()
        .map(|&(partition, offset, _)| FetchSpec {
            topic: topic.name.clone(),
            partition,
            offset,
            max_bytes: fetch_max_bytes,
        })
        .collect();
    let leader = topic.partitions.first().map_or(-1, |p| p.leader);
    let connection = client.broker(leader).await?;
    let mut latency = histogram();
    let (mut received, mut wire_bytes) = (0u64, 0u64);
    let max_bytes = fetch_max_bytes.saturating_mul(specs.len().max(1) as i32);
    while received < produced_total.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) {
        let fetched = client
            .start_fetch(&connection, &specs, 100, 1, max_bytes)?
            .await?;
        let now_ns = base.elapsed().as_nanos() as u64;
        for part in fetched {
            ClientError::check(part.error_code, || {
                format!("fetching {}-{}", part.topic, part.partition)
            })?;
            let Some(spec) = specs.iter_mut().find(|s| s.partition == part.partition) else {
                continue;
            };
            let infos = batch_infos(&part.records);
            let Some(last) = infos.last() else {
                continue;
            };
            wire_bytes += infos.iter().map(|i| i.size_bytes as u64).sum::<u64>();
            for r in decode_records(&part.records)? {
                if r.offset < spec.offset {
                    continue;
                }
                let sent_ns = r
                    .value
                    .as_ref()
                    .and_then(|v| v.get(..8))
                    .and_then(|b| b.try_into().ok())
                    .map_or(now_ns, u64::from_be_bytes);
                let _ = latency.record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
                received += 1;
            }
            spec.offset = last.last_offset + 1;
        }
    }
    Ok((received, latency, wire_bytes))
}
