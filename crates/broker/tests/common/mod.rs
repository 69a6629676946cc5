//! Test harness: an in-process broker on 127.0.0.1:0 with a temporary data directory, and a
//! minimal Kafka client that encodes requests with the `kafka-protocol` crate.

#![allow(dead_code)]

pub mod consumer_group;
pub mod hold_io;
pub mod producer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rill_broker::{Broker, BrokerConfig, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every test body runs under this bound.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestBroker {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The broker's shared state (delay stores, logs), for tests that look inside.
    #[allow(dead_code)]
    pub state: Arc<rill_broker::state::BrokerState>,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), rill_broker::BrokerError>>>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        TestBroker::start_in(dir, configure).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut BrokerConfig),
    ) -> TestBroker {
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            shutdown_grace_ms: 2_000,
            ..BrokerConfig::default()
        };
        configure(&mut config);
        let broker = Broker::start(config).await.expect("broker starts");
        let addr = broker.local_addr();
        let metrics = broker.metrics();
        let state = broker.state();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(broker.run(async move {
            let _ = rx.await;
        }));
        TestBroker {
            addr,
            metrics,
            state,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Stops the broker as a crash would: its task is aborted, nothing is flushed or closed
    /// (what it wrote stays in the page cache, as after SIGKILL). Returns its data directory.
    pub async fn kill(mut self) -> tempfile::TempDir {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            let _ = handle.await;
        }
        assert_panic_free(&self.metrics);
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Stops the broker gracefully and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("broker task")
                .expect("broker shuts down cleanly");
        }
        // Every connection task has been joined now: a panic in any of them, or in a timer
        // or blocking task, was counted.
        assert_panic_free(&self.metrics);
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

/// Fails the test if a broker task panicked: the broker survives such panics (a connection
/// closes, a request gets an error), so without this check a test would pass over a bug.
pub fn assert_panic_free(metrics: &Metrics) {
    assert_eq!(
        metrics.task_panics(),
        0,
        "a broker task panicked (the panic message is in the test output)"
    );
}

impl Drop for TestBroker {
    /// Tests that never call `stop` are checked too (for the tasks joined so far).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_panic_free(&self.metrics);
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            correlation_id: 0,
        }
    }

    /// Encodes a request frame (length prefix included).
    pub fn encode<R: Request>(&mut self, version: i16, request: &R) -> (i32, Bytes) {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("rill-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        (self.correlation_id, frame.freeze())
    }

    pub async fn send_only<R: Request>(&mut self, version: i16, request: &R) -> i32 {
        let (correlation_id, frame) = self.encode(version, request);
        self.stream.write_all(&frame).await.expect("write request");
        correlation_id
    }

    pub async fn read_response<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> R::Response {
        let frame = self.read_frame().await.expect("response frame");
        let mut buf = frame;
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .expect("decode response header");
        assert_eq!(header.correlation_id, correlation_id, "correlation id");
        let response = R::Response::decode(&mut buf, version).expect("decode response");
        assert!(buf.is_empty(), "{} trailing bytes in response", buf.len());
        response
    }

    /// Sends a request and reads its response.
    pub async fn send<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let correlation_id = self.send_only(version, request).await;
        self.read_response::<R>(version, correlation_id).await
    }

    /// Reads one response frame body; `None` at EOF.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).await.is_err() {
            return None;
        }
        let len = i32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Bytes::from(body))
    }

    /// True when the broker closed the connection (EOF or reset) within two seconds.
    pub async fn is_closed_by_broker(&mut self) -> bool {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(2), self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

/// Wall-clock milliseconds. Batches must carry recent timestamps: storage's retention
/// (7 days by default, run by the broker's tick) deletes segments with ancient ones.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A v2 record batch with `count` records whose values are `value-<i>`, CRC-32C correct,
/// base offset 0 and partition leader epoch 0 (what the broker will store).
pub fn record_batch(count: usize, value_bytes: usize, timestamp: i64) -> Bytes {
    record_batch_with(count, value_bytes, timestamp, Compression::None)
}

/// [`record_batch`] with a compression codec.
pub fn record_batch_with(
    count: usize,
    value_bytes: usize,
    timestamp: i64,
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut value = format!("value-{i}-").into_bytes();
            value.resize(value_bytes.max(value.len()), b'x');
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch whenever offset - sequence changes; this keeps
                // one batch whose base sequence is -1 (no idempotence).
                sequence: i as i32 - 1,
                timestamp: timestamp + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(value)),
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// The same batch as stored at `base_offset`: only the base offset field differs.
pub fn at_offset(batch: &Bytes, base_offset: i64) -> Bytes {
    let mut out = BytesMut::from(&batch[..]);
    out[..8].copy_from_slice(&base_offset.to_be_bytes());
    out.freeze()
}
