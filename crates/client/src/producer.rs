//! A batching, pipelining producer for one topic.
//!
//! Records accumulate per partition in a [`BatchBuilder`]. A partition's batch is *ready*
//! when it reaches `batch_size_bytes` or has waited `linger`; ready batches of every
//! partition led by the same broker go out together in one Produce request. Up to
//! `max_in_flight` requests are outstanding at once (pipelined on the connection); when that
//! many are out, [`Producer::send`] waits for the oldest. Records keep accumulating meanwhile,
//! which is what makes batches big under load even with `linger` 0 (as in Kafka).
//!
//! Every record carries a caller-chosen `u64` tag (the benchmark uses its send time); acks
//! come back with the tags of the records they cover, in the order requests were sent.
//! No retries: a failed batch is reported in its [`Ack`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::task::JoinHandle;

use crate::batch::{BatchBuilder, Compression};
use crate::client::{Client, TopicInfo};
use crate::connection::Connection;
use crate::error::{error_name, ClientError, Result};

/// Producer settings, named as in Kafka where there is a Kafka name.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks`: 0 (no response), 1 (leader wrote it) or -1 (all: durable per the broker's
    /// flush policy).
    pub acks: i16,
    /// `compression.type`.
    pub compression: Compression,
    /// `batch.size`: a partition's batch is sent once its records reach this many bytes.
    pub batch_size_bytes: usize,
    /// `linger.ms`: how long a non-full batch may wait for more records.
    pub linger: Duration,
    /// `max.in.flight.requests.per.connection`.
    pub max_in_flight: usize,
    /// `request.timeout.ms`.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            compression: Compression::None,
            batch_size_bytes: 64 * 1024,
            linger: Duration::from_millis(5),
            max_in_flight: 5,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The outcome of one batch.
#[derive(Debug)]
pub struct Ack {
    pub partition: i32,
    /// Offset of the batch's first record; -1 with acks=0 or on error.
    pub base_offset: i64,
    /// The tags of the batch's records, in order.
    pub tags: Vec<u64>,
    /// Bytes of the batch as sent (after compression).
    pub batch_bytes: usize,
    /// Why the batch failed, if it did.
    pub error: Option<String>,
}

struct PartitionBuffer {
    partition: i32,
    /// Index into `Producer::connections` of the partition's leader.
    leader: usize,
    builder: BatchBuilder,
    tags: Vec<u64>,
    /// When the oldest record of the current batch was added.
    first_at: Option<Instant>,
    /// The batch is full and goes out with the next request, whatever its linger.
    sealed: bool,
}

/// (partition, tags, bytes) of one batch in a request.
type SentBatch = (i32, Vec<u64>, usize);

struct InFlight {
    response: JoinHandle<Result<ProduceResponse>>,
    /// (partition, tags) of each batch in the request.
    batches: Vec<SentBatch>,
}

/// See the module docs.
pub struct Producer {
    topic: String,
    config: ProducerConfig,
    buffers: Vec<PartitionBuffer>,
    connections: Vec<Arc<Connection>>,
    in_flight: VecDeque<InFlight>,
    acks: Vec<Ack>,
}

impl Producer {
    /// A producer for every partition of `topic` (connecting to each leader).
    ///
    /// # Errors
    /// Partitions without leaders, connection errors, a broker without Produce.
    pub async fn new(
        client: &Client,
        topic: &TopicInfo,
        config: ProducerConfig,
    ) -> Result<Producer> {
        if config.max_in_flight == 0 || config.batch_size_bytes == 0 {
            return Err(ClientError::Invalid(
                "max in-flight requests and batch size must be at least 1".into(),
            ));
        }
        let mut connections: Vec<Arc<Connection>> = Vec::new();
        let mut buffers = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let connection = client.leader(topic, p.partition).await?;
            connection.version_for(ApiKey::Produce)?;
            let leader = match connections.iter().position(|c| Arc::ptr_eq(c, &connection)) {
                Some(i) => i,
                None => {
                    connections.push(connection);
                    connections.len() - 1
                }
            };
            buffers.push(PartitionBuffer {
                partition: p.partition,
                leader,
                builder: BatchBuilder::new(config.compression, config.batch_size_bytes + 1024),
                tags: Vec::new(),
                first_at: None,
                sealed: false,
            });
        }
        Ok(Producer {
            topic: topic.name.clone(),
            config,
            buffers,
            connections,
            in_flight: VecDeque::new(),
            acks: Vec::new(),
        })
    }

    /// Partitions of the topic, as indexes accepted by [`Producer::send`].
    pub fn partition_count(&self) -> usize {
        self.buffers.len()
    }

    /// Adds a record to partition index `index` (0-based position in the topic's partition
    /// list, which is the partition id for Kafka topics) and sends ready batches.
    ///
    /// # Errors
    /// A bad partition index, encoding or connection errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &mut self,
        index: usize,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        tag: u64,
    ) -> Result<()> {
        let partitions = self.buffers.len();
        if index >= partitions {
            return Err(ClientError::Invalid(format!(
                "partition index {index} of {partitions}"
            )));
        }
        // A batch never grows past `batch_size_bytes` (brokers refuse batches above
        // max.message.bytes): when this record would not fit, send the batch first.
        let record_bytes = 24
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 4)
                .sum::<usize>();
        let buffer = &mut self.buffers[index];
        if !buffer.builder.is_empty()
            && buffer.builder.size_bytes() + record_bytes > self.config.batch_size_bytes
        {
            buffer.sealed = true;
            while self.in_flight.len() >= self.config.max_in_flight {
                self.await_oldest().await;
            }
            self.dispatch(false)?;
        }
        let buffer = &mut self.buffers[index];
        buffer.builder.push(timestamp_ms, key, value, headers);
        buffer.tags.push(tag);
        buffer.first_at.get_or_insert_with(Instant::now);
        let full = buffer.builder.size_bytes() >= self.config.batch_size_bytes;
        self.reap_finished();
        if full {
            while self.in_flight.len() >= self.config.max_in_flight {
                self.await_oldest().await;
            }
        }
        self.dispatch(false)
    }

    /// When the oldest waiting batch's linger ends (`None` when nothing waits).
    pub fn linger_deadline(&self) -> Option<Instant> {
        self.buffers
            .iter()
            .filter_map(|b| b.first_at)
            .min()
            .map(|t| t + self.config.linger)
    }

    /// Sends batches whose linger has passed, if a request slot is free.
    ///
    /// # Errors
    /// Encoding or connection errors.
    pub fn poll(&mut self) -> Result<()> {
        self.reap_finished();
        self.dispatch(false)
    }

    /// Sends everything buffered and waits for every outstanding request.
    ///
    /// # Errors
    /// Encoding or connection errors.
    pub async fn flush(&mut self) -> Result<()> {
        loop {
            while self.in_flight.len() >= self.config.max_in_flight {
                self.await_oldest().await;
            }
            self.dispatch(true)?;
            if self.buffers.iter().all(|b| b.builder.is_empty()) {
                break;
            }
        }
        while !self.in_flight.is_empty() {
            self.await_oldest().await;
        }
        Ok(())
    }

    /// Takes the acks collected so far.
    pub fn take_acks(&mut self) -> Vec<Ack> {
        std::mem::take(&mut self.acks)
    }

    /// Waits until the oldest outstanding request is answered, then records its acks and
    /// sends what waited for its request slot; never returns while none is outstanding.
    /// Cancel-safe (the request stays outstanding), so a paced sender can wait for the next
    /// record's time or the next answer, whichever comes first: otherwise answers are only
    /// collected when it wakes for a record, and with every slot taken, records wait for
    /// that wake-up (up to a timer tick) before they are even sent.
    ///
    /// # Errors
    /// Encoding or connection errors of the requests it sends.
    pub async fn next_answer(&mut self) -> Result<()> {
        let Some(front) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        let result = match (&mut front.response).await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Invalid(format!("produce task failed: {e}"))),
        };
        // No await since the answer was taken: the entry is removed before any cancellation.
        if let Some(done) = self.in_flight.pop_front() {
            self.record(done.batches, result);
        }
        self.poll()
    }

    /// Requests outstanding.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Builds and sends one request per broker with every ready batch, while request slots
    /// are free. `all` makes every non-empty batch ready.
    fn dispatch(&mut self, all: bool) -> Result<()> {
        let now = Instant::now();
        for leader in 0..self.connections.len() {
            if self.in_flight.len() >= self.config.max_in_flight {
                return Ok(());
            }
            let mut topic = TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(self.topic.clone())));
            let mut batches = Vec::new();
            for buffer in self.buffers.iter_mut().filter(|b| b.leader == leader) {
                let Some(first_at) = buffer.first_at else {
                    continue;
                };
                let ready = all
                    || buffer.sealed
                    || buffer.builder.size_bytes() >= self.config.batch_size_bytes
                    || now.duration_since(first_at) >= self.config.linger;
                if !ready {
                    continue;
                }
                let records: Bytes = buffer.builder.finish()?;
                let batch_bytes = records.len();
                buffer.first_at = None;
                buffer.sealed = false;
                topic.partition_data.push(
                    PartitionProduceData::default()
                        .with_index(buffer.partition)
                        .with_records(Some(records)),
                );
                batches.push((
                    buffer.partition,
                    std::mem::take(&mut buffer.tags),
                    batch_bytes,
                ));
            }
            if batches.is_empty() {
                continue;
            }
            let request = ProduceRequest::default()
                .with_acks(self.config.acks)
                .with_timeout_ms(
                    i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX),
                )
                .with_topic_data(vec![topic]);
            let connection = &self.connections[leader];
            if self.config.acks == 0 {
                connection.send_no_response(&request)?;
                for (partition, tags, batch_bytes) in batches {
                    self.acks.push(Ack {
                        partition,
                        base_offset: -1,
                        tags,
                        batch_bytes,
                        error: None,
                    });
                }
                continue;
            }
            let version = connection.version_for(ApiKey::Produce)?;
            let response = connection.send_versioned(&request, version)?;
            let timeout = self.config.request_timeout;
            let addr = connection.addr().to_string();
            let response = tokio::spawn(async move {
                match tokio::time::timeout(timeout, response).await {
                    Ok(r) => r,
                    Err(_) => Err(ClientError::Timeout {
                        op: "Produce",
                        addr,
                        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    }),
                }
            });
            self.in_flight.push_back(InFlight { response, batches });
        }
        Ok(())
    }

    /// Collects acks of requests already answered, oldest first, without waiting.
    fn reap_finished(&mut self) {
        while self
            .in_flight
            .front()
            .is_some_and(|f| f.response.is_finished())
        {
            // The loop condition saw a front entry.
            let Some(mut done) = self.in_flight.pop_front() else {
                break;
            };
            match poll_once(&mut done.response) {
                Some(result) => self.record(done.batches, result),
                None => {
                    // Finished, but tokio's cooperative budget made the poll return Pending:
                    // leave it for the next call (or `await_oldest`).
                    self.in_flight.push_front(done);
                    break;
                }
            }
        }
    }

    async fn await_oldest(&mut self) {
        let Some(done) = self.in_flight.pop_front() else {
            return;
        };
        let result = match done.response.await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Invalid(format!("produce task failed: {e}"))),
        };
        self.record(done.batches, result);
    }

    fn record(&mut self, batches: Vec<SentBatch>, result: Result<ProduceResponse>) {
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let error = e.to_string();
                for (partition, tags, batch_bytes) in batches {
                    self.acks.push(Ack {
                        partition,
                        base_offset: -1,
                        tags,
                        batch_bytes,
                        error: Some(error.clone()),
                    });
                }
                return;
            }
        };
        for (partition, tags, batch_bytes) in batches {
            let answer = response
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == partition);
            let (base_offset, error) = match answer {
                None => (-1, Some("no answer for the partition".to_string())),
                Some(p) if p.error_code != 0 => (
                    -1,
                    Some(format!(
                        "{}{}",
                        error_name(p.error_code),
                        p.error_message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    )),
                ),
                Some(p) => (p.base_offset, None),
            };
            self.acks.push(Ack {
                partition,
                base_offset,
                tags,
                batch_bytes,
                error,
            });
        }
    }
}

/// Polls a task's handle once with a no-op waker: `Some` with its result when ready.
fn poll_once(handle: &mut JoinHandle<Result<ProduceResponse>>) -> Option<Result<ProduceResponse>> {
    use std::future::Future as _;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(handle).poll(&mut cx) {
        std::task::Poll::Ready(Ok(r)) => Some(r),
        std::task::Poll::Ready(Err(e)) => Some(Err(ClientError::Invalid(format!(
            "produce task failed: {e}"
        )))),
        std::task::Poll::Pending => None,
    }
}
