//! Broker metrics, and their Prometheus text exposition ([`encode_prometheus`]).
//!
//! Two kinds: plain atomic counters (the first fields of [`Metrics`], read directly by the
//! integration tests and benchmarks through [`crate::Broker::metrics`] and logged at
//! shutdown), and labelled families from the `prometheus-client` crate (per API key, per
//! topic, per error code). Gauges that describe storage (partitions, offsets, open files,
//! flushes) are not kept here at all: they are read from storage at scrape time, so they can
//! never drift from the truth.
//!
//! Call sites stay one short line each: `state.metrics.record_produce(topic, bytes, records)`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::state::BrokerState;

/// Labels of a per-API series: the Kafka API name (`Produce`, `Fetch`, ...).
type ApiLabels = [(&'static str, &'static str); 1];
/// Labels of a per-topic series.
type TopicLabels = [(&'static str, String); 1];
/// Labels of a per-error series: the Kafka error name.
type ErrorLabels = [(&'static str, String); 1];
/// Labels of a per-partition series.
type PartitionLabels = [(&'static str, String); 2];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency buckets: 100 µs to ~13 s, doubling (longer long polls land in +Inf).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// Counters shared by every connection. Relaxed ordering is enough: each counter is
/// independent and only read for reporting.
#[derive(Debug)]
pub struct Metrics {
    /// Record bytes sent to sockets with `sendfile(2)` (never copied through user space).
    pub sendfile_bytes_total: AtomicU64,
    /// Record bytes sent through the copying path (`pread` into a buffer, then `write`).
    pub copied_bytes_total: AtomicU64,
    /// Fetch file ranges found resident in the page cache and sent from it (hot path).
    pub hot_reads_total: AtomicU64,
    pub hot_read_bytes_total: AtomicU64,
    /// Fetch file ranges not resident, read uncached on the cold-read pool (cold path).
    pub cold_reads_total: AtomicU64,
    pub cold_read_bytes_total: AtomicU64,
    /// Requests decoded and handled, of any API.
    pub requests_total: AtomicU64,
    /// Connections accepted since start.
    pub connections_accepted_total: AtomicU64,
    /// Connections closed because the peer broke the protocol (bad frame, unknown API).
    pub connections_rejected_total: AtomicU64,
    /// Record-batch bytes appended by produce requests.
    pub produced_bytes_total: AtomicU64,
    /// Requests started while an earlier request on the same connection was still waiting
    /// for its answer (durability, long poll): how much the connection pipelining is used.
    pub pipelined_requests_total: AtomicU64,
    /// Broker tasks (connections, blocking work, timers) that panicked. Always a bug: the
    /// test harness asserts it stays zero, so a panic swallowed by a join fails the test.
    pub task_panics_total: AtomicU64,
    /// Connections being served right now.
    pub connections_open: Gauge,
    /// Requests handled, per API.
    requests: Family<ApiLabels, Counter>,
    /// Time from decoded request to response ready (long polls included), per API.
    request_seconds: HistogramFamily<ApiLabels>,
    /// Record-batch bytes appended, per topic.
    topic_bytes_in: Family<TopicLabels, Counter>,
    /// Records appended, per topic.
    topic_records_in: Family<TopicLabels, Counter>,
    /// Record-batch bytes returned by fetches, per topic.
    topic_bytes_out: Family<TopicLabels, Counter>,
    /// Partitions of produce requests answered with an error, per error.
    produce_errors: Family<ErrorLabels, Counter>,
    /// Partitions of fetch responses carrying an error, per error.
    fetch_errors: Family<ErrorLabels, Counter>,
    /// How long acks=all produces waited for their group-commit fdatasync.
    durable_wait_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sendfile_bytes_total: AtomicU64::new(0),
            copied_bytes_total: AtomicU64::new(0),
            hot_reads_total: AtomicU64::new(0),
            hot_read_bytes_total: AtomicU64::new(0),
            cold_reads_total: AtomicU64::new(0),
            cold_read_bytes_total: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            connections_accepted_total: AtomicU64::new(0),
            connections_rejected_total: AtomicU64::new(0),
            produced_bytes_total: AtomicU64::new(0),
            pipelined_requests_total: AtomicU64::new(0),
            task_panics_total: AtomicU64::new(0),
            connections_open: Gauge::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            topic_bytes_in: Family::default(),
            topic_records_in: Family::default(),
            topic_bytes_out: Family::default(),
            produce_errors: Family::default(),
            fetch_errors: Family::default(),
            durable_wait_seconds: latency_histogram(),
        }
    }
}

/// A point-in-time copy of the atomic counters of [`Metrics`], for assertions and log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub sendfile_bytes_total: u64,
    pub copied_bytes_total: u64,
    pub hot_reads_total: u64,
    pub hot_read_bytes_total: u64,
    pub cold_reads_total: u64,
    pub cold_read_bytes_total: u64,
    pub requests_total: u64,
    pub connections_accepted_total: u64,
    pub connections_rejected_total: u64,
    pub produced_bytes_total: u64,
}

impl Metrics {
    /// Adds `n` to `counter`. A helper so call sites stay one short line.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Copies every atomic counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            sendfile_bytes_total: self.sendfile_bytes_total.load(Ordering::Relaxed),
            copied_bytes_total: self.copied_bytes_total.load(Ordering::Relaxed),
            hot_reads_total: self.hot_reads_total.load(Ordering::Relaxed),
            hot_read_bytes_total: self.hot_read_bytes_total.load(Ordering::Relaxed),
            cold_reads_total: self.cold_reads_total.load(Ordering::Relaxed),
            cold_read_bytes_total: self.cold_read_bytes_total.load(Ordering::Relaxed),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            connections_accepted_total: self.connections_accepted_total.load(Ordering::Relaxed),
            connections_rejected_total: self.connections_rejected_total.load(Ordering::Relaxed),
            produced_bytes_total: self.produced_bytes_total.load(Ordering::Relaxed),
        }
    }

    /// Records a task that did not complete: a panic is counted and logged as an error
    /// (it is a bug); a cancellation (shutdown aborting a task) is only logged.
    pub fn task_failed(&self, task: &str, error: &tokio::task::JoinError) {
        if error.is_panic() {
            Metrics::add(&self.task_panics_total, 1);
            tracing::error!(task, %error, "broker task panicked");
        } else {
            tracing::debug!(task, %error, "broker task cancelled");
        }
    }

    /// Counts a job of the I/O pool that did not return: a panic (counted, as a panicked
    /// task) or a stopped pool.
    pub fn io_job_failed(&self, task: &str, error: &crate::io_pool::IoPoolError) {
        match error {
            crate::io_pool::IoPoolError::Panicked(_) => {
                Metrics::add(&self.task_panics_total, 1);
                tracing::error!(task, %error, "I/O pool job panicked");
            }
            crate::io_pool::IoPoolError::Stopped => {
                tracing::debug!(task, %error, "I/O pool stopped");
            }
        }
    }

    /// Panicked broker tasks so far (see [`Metrics::task_panics_total`]).
    pub fn task_panics(&self) -> u64 {
        self.task_panics_total.load(Ordering::Relaxed)
    }

    /// Counts one handled request of `api_key` and how long it took.
    pub fn observe_request(&self, api_key: i16, elapsed: Duration) {
        let labels = [("api", api_name(api_key))];
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an append to `topic`.
    pub fn record_produce(&self, topic: &str, bytes: u64, records: u64) {
        let labels = [("topic", topic.to_string())];
        self.topic_bytes_in.get_or_create(&labels).inc_by(bytes);
        self.topic_records_in.get_or_create(&labels).inc_by(records);
    }

    /// Counts record bytes a fetch returned from `topic`.
    pub fn record_fetch(&self, topic: &str, bytes: u64) {
        if bytes > 0 {
            let labels = [("topic", topic.to_string())];
            self.topic_bytes_out.get_or_create(&labels).inc_by(bytes);
        }
    }

    /// Counts a produce partition answered with Kafka error `code` (0 is not an error).
    pub fn produce_error(&self, code: i16) {
        if code != 0 {
            let labels = [("error", error_name(code))];
            self.produce_errors.get_or_create(&labels).inc();
        }
    }

    /// Counts a fetch partition answered with Kafka error `code` (0 is not an error).
    pub fn fetch_error(&self, code: i16) {
        if code != 0 {
            let labels = [("error", error_name(code))];
            self.fetch_errors.get_or_create(&labels).inc();
        }
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// Records how long an acks=all produce waited to be durable.
    pub fn observe_durable_wait(&self, elapsed: Duration) {
        self.durable_wait_seconds.observe(elapsed.as_secs_f64());
    }
}

/// Decrements the open-connections gauge when dropped (see [`Metrics::connection_opened`]).
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Kafka API name of a key, as a label value.
fn api_name(api_key: i16) -> &'static str {
    use kafka_protocol::messages::ApiKey;
    match ApiKey::try_from(api_key) {
        Ok(key) => api_key_name(key),
        Err(()) => match api_key {
            crate::hand_codec::STREAMS_GROUP_DESCRIBE => "StreamsGroupDescribe",
            crate::hand_codec::UNREGISTER_CONTROLLER => "UnregisterController",
            _ => "Unknown",
        },
    }
}

fn api_key_name(key: kafka_protocol::messages::ApiKey) -> &'static str {
    use kafka_protocol::messages::ApiKey as K;
    match key {
        K::Produce => "Produce",
        K::Fetch => "Fetch",
        K::ListOffsets => "ListOffsets",
        K::Metadata => "Metadata",
        K::OffsetCommit => "OffsetCommit",
        K::OffsetFetch => "OffsetFetch",
        K::FindCoordinator => "FindCoordinator",
        K::JoinGroup => "JoinGroup",
        K::Heartbeat => "Heartbeat",
        K::LeaveGroup => "LeaveGroup",
        K::SyncGroup => "SyncGroup",
        K::DescribeGroups => "DescribeGroups",
        K::ListGroups => "ListGroups",
        K::SaslHandshake => "SaslHandshake",
        K::ApiVersions => "ApiVersions",
        K::CreateTopics => "CreateTopics",
        K::DeleteTopics => "DeleteTopics",
        K::DeleteRecords => "DeleteRecords",
        K::InitProducerId => "InitProducerId",
        K::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        K::DescribeConfigs => "DescribeConfigs",
        K::AlterConfigs => "AlterConfigs",
        K::DescribeLogDirs => "DescribeLogDirs",
        K::SaslAuthenticate => "SaslAuthenticate",
        K::CreatePartitions => "CreatePartitions",
        K::DeleteGroups => "DeleteGroups",
        K::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        K::OffsetDelete => "OffsetDelete",
        K::DescribeCluster => "DescribeCluster",
        K::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        K::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        _ => "Other",
    }
}

/// `UNKNOWN_TOPIC_OR_PARTITION` for 3: the names Kafka operators search logs for.
fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
        None => format!("UNKNOWN_{code}"),
    }
}

/// Everything the broker knows about itself, in the Prometheus text exposition format
/// (OpenMetrics flavour, ending in `# EOF`). Storage gauges are read now.
pub fn encode_prometheus(state: &BrokerState) -> String {
    let metrics = &state.metrics;
    let mut registry = Registry::with_prefix("rill");
    register_counters(&mut registry, metrics);
    register_storage(&mut registry, state);
    register_groups(&mut registry, state);
    register_views(&mut registry, state);
    register_delayed(&mut registry, state);
    register_fetch_sessions(&mut registry, state);
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = encode(&mut out, &registry) {
        // Encoding into a String only fails if a metric's own encoder does; say so in-band.
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

fn register_counters(registry: &mut Registry, m: &Metrics) {
    let c = |a: &AtomicU64| ConstCounter::new(a.load(Ordering::Relaxed));
    registry.register_with_unit(
        "sendfile",
        "Record bytes sent with sendfile(2), never copied through user space",
        Unit::Bytes,
        c(&m.sendfile_bytes_total),
    );
    registry.register_with_unit(
        "copied",
        "Record bytes sent through the copying path (pread + write)",
        Unit::Bytes,
        c(&m.copied_bytes_total),
    );
    registry.register(
        "fetch_hot_reads",
        "Fetch file ranges resident in the page cache, sent from it",
        c(&m.hot_reads_total),
    );
    registry.register_with_unit(
        "fetch_hot_read",
        "Record bytes of fetch ranges resident in the page cache",
        Unit::Bytes,
        c(&m.hot_read_bytes_total),
    );
    registry.register(
        "fetch_cold_reads",
        "Fetch file ranges not resident, read uncached on the cold-read pool",
        c(&m.cold_reads_total),
    );
    registry.register_with_unit(
        "fetch_cold_read",
        "Record bytes of fetch ranges read uncached on the cold-read pool",
        Unit::Bytes,
        c(&m.cold_read_bytes_total),
    );
    registry.register(
        "connections_accepted",
        "Connections accepted since start",
        c(&m.connections_accepted_total),
    );
    registry.register(
        "connections_rejected",
        "Connections closed because the peer broke the protocol",
        c(&m.connections_rejected_total),
    );
    registry.register(
        "pipelined_requests",
        "Requests started while an earlier one on their connection awaited its answer",
        c(&m.pipelined_requests_total),
    );
    registry.register(
        "task_panics",
        "Broker tasks that panicked (a bug; should stay zero)",
        c(&m.task_panics_total),
    );
    registry.register(
        "connections_open",
        "Connections being served now",
        m.connections_open.clone(),
    );
    registry.register("requests", "Requests handled, per API", m.requests.clone());
    registry.register_with_unit(
        "request_latency",
        "Time from decoded request to response ready, per API (fetch long polls included)",
        Unit::Seconds,
        m.request_seconds.clone(),
    );
    registry.register_with_unit(
        "topic_in",
        "Record-batch bytes appended by produce, per topic",
        Unit::Bytes,
        m.topic_bytes_in.clone(),
    );
    registry.register(
        "topic_records_in",
        "Records appended by produce, per topic",
        m.topic_records_in.clone(),
    );
    registry.register_with_unit(
        "topic_out",
        "Record-batch bytes returned by fetch, per topic",
        Unit::Bytes,
        m.topic_bytes_out.clone(),
    );
    registry.register(
        "produce_errors",
        "Produce partitions answered with an error, per Kafka error",
        m.produce_errors.clone(),
    );
    registry.register(
        "fetch_errors",
        "Fetch partitions answered with an error, per Kafka error",
        m.fetch_errors.clone(),
    );
    registry.register_with_unit(
        "durable_wait",
        "Time acks=all produces waited for their group-commit fdatasync",
        Unit::Seconds,
        m.durable_wait_seconds.clone(),
    );
}

/// Delayed delivery, per delay-enabled partition with an open store: records waiting, the
/// earliest due time in memory, and the lateness of the last delivery.
fn register_delayed(registry: &mut Registry, state: &BrokerState) {
    let waiting = Family::<PartitionLabels, Gauge>::default();
    let in_memory = Family::<PartitionLabels, Gauge>::default();
    let next_due = Family::<PartitionLabels, Gauge>::default();
    let lateness = Family::<PartitionLabels, Gauge>::default();
    let cancels_pending = Family::<PartitionLabels, Gauge>::default();
    let cancelled = Family::<PartitionLabels, Counter>::default();
    for s in state.delayed.stats() {
        let labels = [
            ("topic", s.target.topic.clone()),
            ("partition", s.target.partition.to_string()),
        ];
        waiting
            .get_or_create(&labels)
            .set(i64::try_from(s.waiting).unwrap_or(i64::MAX));
        in_memory
            .get_or_create(&labels)
            .set(i64::try_from(s.in_memory).unwrap_or(i64::MAX));
        next_due
            .get_or_create(&labels)
            .set(s.next_due_ms.unwrap_or(-1));
        lateness.get_or_create(&labels).set(s.last_lateness_ms);
        cancels_pending
            .get_or_create(&labels)
            .set(i64::try_from(s.cancels_pending).unwrap_or(i64::MAX));
        cancelled.get_or_create(&labels).inc_by(s.cancelled_total);
    }
    registry.register(
        "delayed_pending_records",
        "Delayed records stored and not yet delivered",
        waiting,
    );
    registry.register(
        "delayed_in_memory_records",
        "Delayed records in the in-memory window (bounded by rill.delivery.delay.memory.entries)",
        in_memory,
    );
    registry.register(
        "delayed_next_due_ms",
        "Earliest due time in the in-memory window, epoch ms (-1: none)",
        next_due,
    );
    registry.register(
        "delayed_delivery_lag_ms",
        "Delivery time minus due time of the last delivered record, ms",
        lateness,
    );
    registry.register(
        "delayed_cancels_pending",
        "Distinct rill-delay-cancel ids held while records they may cancel wait",
        cancels_pending,
    );
    registry.register(
        "delayed_cancelled",
        "Delayed records not delivered because a cancel came before their due time",
        cancelled,
    );
}

fn register_storage(registry: &mut Registry, state: &BrokerState) {
    let logs = &state.logs;
    let partitions = logs.partitions();
    let log_end_offset = Family::<PartitionLabels, Gauge>::default();
    let high_watermark = Family::<PartitionLabels, Gauge>::default();
    let log_start_offset = Family::<PartitionLabels, Gauge>::default();
    let log_size = Family::<PartitionLabels, Gauge>::default();
    let dirty_ratio = Family::<PartitionLabels, Gauge<f64, AtomicU64>>::default();
    let cleaner_read = Family::<PartitionLabels, Counter>::default();
    let cleaner_written = Family::<PartitionLabels, Counter>::default();
    let cleaner_seconds = Family::<PartitionLabels, Counter<f64, AtomicU64>>::default();
    let cleaner_last_seconds = Family::<PartitionLabels, Gauge<f64, AtomicU64>>::default();
    let mut flushes: u64 = 0;
    let mut flush_nanos: u64 = 0;
    for tp in &partitions {
        // This may open a log nobody used yet; the storage tick opens them all within a
        // second of startup anyway.
        let Ok(Some(log)) = logs.get_log(tp) else {
            continue;
        };
        let labels = [
            ("topic", tp.topic.clone()),
            ("partition", tp.partition.to_string()),
        ];
        log_end_offset
            .get_or_create(&labels)
            .set(log.log_end_offset());
        high_watermark
            .get_or_create(&labels)
            .set(log.high_watermark());
        log_start_offset
            .get_or_create(&labels)
            .set(log.log_start_offset());
        log_size
            .get_or_create(&labels)
            .set(i64::try_from(log.size_bytes()).unwrap_or(i64::MAX));
        flushes += log.flush_count();
        flush_nanos += log.flush_nanos_total();
        if log.config().compacts() {
            // Read from storage at scrape time, as the offsets above.
            let c = log.cleaner_metrics();
            dirty_ratio.get_or_create(&labels).set(c.dirty_ratio);
            cleaner_read
                .get_or_create(&labels)
                .inc_by(c.bytes_read_total);
            cleaner_written
                .get_or_create(&labels)
                .inc_by(c.bytes_written_total);
            cleaner_seconds
                .get_or_create(&labels)
                .inc_by(c.clean_nanos_total as f64 / 1e9);
            cleaner_last_seconds
                .get_or_create(&labels)
                .set(c.last_clean_nanos as f64 / 1e9);
        }
    }
    registry.register(
        "log_cleaner_dirty_ratio",
        "Dirty bytes / cleanable bytes of a compacted partition's sealed segments",
        dirty_ratio,
    );
    registry.register_with_unit(
        "log_cleaner_read",
        "Bytes the log cleaner read from a compacted partition",
        Unit::Bytes,
        cleaner_read,
    );
    registry.register_with_unit(
        "log_cleaner_written",
        "Bytes the log cleaner wrote in their place",
        Unit::Bytes,
        cleaner_written,
    );
    registry.register_with_unit(
        "log_cleaner_time",
        "Time the log cleaner spent on a compacted partition",
        Unit::Seconds,
        cleaner_seconds,
    );
    registry.register_with_unit(
        "log_cleaner_last_clean_duration",
        "Duration of the last cleaning pass of a compacted partition",
        Unit::Seconds,
        cleaner_last_seconds,
    );
    registry.register(
        "partitions",
        "Partitions in the data directory",
        ConstGauge::new(i64::try_from(partitions.len()).unwrap_or(i64::MAX)),
    );
    registry.register(
        "open_segment_files",
        "Segment files held open by storage's file descriptor cache",
        ConstGauge::new(i64::try_from(logs.open_files()).unwrap_or(i64::MAX)),
    );
    if let Some(fds) = open_fds() {
        registry.register(
            "process_open_fds",
            "File descriptors open in the broker process",
            ConstGauge::new(fds),
        );
    }
    registry.register(
        "offline_partitions",
        "Partitions taken offline by a storage failure (a failed fsync); they answer KAFKA_STORAGE_ERROR",
        ConstGauge::new(i64::try_from(logs.offline_partitions().len()).unwrap_or(i64::MAX)),
    );
    registry.register(
        "log_flushes",
        "fdatasync rounds (group commits) of open partition logs",
        ConstCounter::new(flushes),
    );
    registry.register(
        "flusher_passes",
        "Passes of the data directory's flusher; each makes every log queued at its start durable",
        ConstCounter::new(logs.flusher_passes()),
    );
    registry.register(
        "flusher_overlapping_passes",
        "Flusher passes started beside a running pass that was stuck on a slow sync",
        ConstCounter::new(logs.flusher_overlapping_passes()),
    );
    registry.register(
        "flusher_syncfs_calls",
        "syncfs calls of the flusher: passes that made all their files durable at once",
        ConstCounter::new(logs.flusher_syncfs_calls()),
    );
    registry.register(
        "io_pool_depth",
        "Jobs (produce appends, ListOffsets) queued or running on the broker's I/O pool",
        ConstGauge::new(i64::try_from(state.io_pool.depth()).unwrap_or(i64::MAX)),
    );
    registry.register(
        "io_pool_jobs",
        "Jobs the broker's I/O pool has run",
        ConstCounter::new(state.io_pool.jobs()),
    );
    registry.register_with_unit(
        "log_flush",
        "Time spent in fdatasync by those flushes (divide by rill_log_flushes_total for the mean)",
        Unit::Seconds,
        ConstCounter::new(flush_nanos as f64 / 1e9),
    );
    registry.register(
        "log_end_offset",
        "Offset the next appended record will get, per partition",
        log_end_offset,
    );
    registry.register(
        "high_watermark",
        "Offset below which records are visible to consumers, per partition",
        high_watermark,
    );
    registry.register(
        "log_start_offset",
        "First offset still in the log, per partition",
        log_start_offset,
    );
    registry.register_with_unit(
        "log_size",
        "Bytes of the partition's segments",
        Unit::Bytes,
        log_size,
    );
}

/// Committed offset and lag (high watermark minus committed, never negative) for every
/// partition a live group has committed for.
/// Kafka's NumIncrementalFetchSessions and NumIncrementalFetchPartitionsCached.
fn register_fetch_sessions(registry: &mut Registry, state: &BrokerState) {
    let sessions = &state.fetch_sessions;
    registry.register(
        "fetch_sessions",
        "Incremental fetch sessions held (KIP-227)",
        ConstGauge::new(i64::try_from(sessions.len()).unwrap_or(i64::MAX)),
    );
    registry.register(
        "fetch_session_partitions",
        "Partitions cached by all incremental fetch sessions",
        ConstGauge::new(i64::try_from(sessions.partitions_total()).unwrap_or(i64::MAX)),
    );
}

fn register_groups(registry: &mut Registry, state: &BrokerState) {
    type GroupLabels = [(&'static str, String); 3];
    let committed = Family::<GroupLabels, Gauge>::default();
    let lag = Family::<GroupLabels, Gauge>::default();
    for group in state.groups.list().into_iter().map(|l| l.id) {
        for (tp, offset) in state.groups.fetch_offsets(&group, None) {
            let Some(offset) = offset else {
                continue;
            };
            let Ok(Some(log)) = state.logs.get_log(&tp) else {
                continue; // a deleted topic's offsets linger until they expire
            };
            let labels = [
                ("group", group.clone()),
                ("topic", tp.topic.clone()),
                ("partition", tp.partition.to_string()),
            ];
            committed.get_or_create(&labels).set(offset.offset);
            lag.get_or_create(&labels)
                .set((log.high_watermark() - offset.offset).max(0));
        }
    }
    registry.register(
        "consumer_group_committed_offset",
        "Offset a consumer group committed, per partition",
        committed,
    );
    registry.register(
        "consumer_group_lag",
        "Records between a group's committed offset and the high watermark, per partition",
        lag,
    );
}

/// How far each filtered view's partition is behind its source.
fn register_views(registry: &mut Registry, state: &BrokerState) {
    let lag = Family::<PartitionLabels, Gauge>::default();
    for (tp, records) in state.views.lags() {
        let labels = [
            ("topic", tp.topic.clone()),
            ("partition", tp.partition.to_string()),
        ];
        lag.get_or_create(&labels).set(records);
    }
    registry.register(
        "view_lag",
        "Source records a filtered view's partition has not yet scanned, per view partition",
        lag,
    );
}

/// Open file descriptors of this process (Linux: entries of /proc/self/fd).
fn open_fds() -> Option<i64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    i64::try_from(entries.count()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kafka_spelling() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(1), "Fetch");
        assert_eq!(api_name(-5), "Unknown");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
    }

    #[test]
    fn families_count_per_label() {
        let m = Metrics::default();
        m.observe_request(0, Duration::from_millis(2));
        m.observe_request(0, Duration::from_millis(3));
        m.record_produce("t", 100, 4);
        m.produce_error(0);
        m.produce_error(3);
        let mut registry = Registry::with_prefix("rill");
        register_counters(&mut registry, &m);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("rill_requests_total{api=\"Produce\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("rill_request_latency_seconds_count{api=\"Produce\"} 2\n"));
        assert!(text.contains("rill_topic_records_in_total{topic=\"t\"} 4\n"));
        assert!(text.contains("rill_topic_in_bytes_total{topic=\"t\"} 100\n"));
        assert!(
            text.contains("rill_produce_errors_total{error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 1\n")
        );
        assert!(!text.contains("error=\"NONE\""));
        let open = m.connection_opened();
        assert_eq!(m.connections_open.get(), 1);
        drop(open);
        assert_eq!(m.connections_open.get(), 0);
    }
}
