//! One TCP connection to one broker, with pipelined requests.
//!
//! Kafka answers a connection's requests in the order they were sent, so correlation is a
//! FIFO: the writer task records each request's correlation id and reply channel in
//! `pending` just before writing it, and the reader task pops the front for every response
//! and checks the id matches. Many requests may be in flight at once (the producer pipelines
//! produce requests this way); callers bound how many.
//!
//! Requests that get no response (produce with acks=0) are written without a pending entry.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ClientError, Result};

/// Largest response frame accepted; bigger ones mean a confused peer (or a huge fetch we never
/// ask for: fetches are bounded by `max_bytes`, far below this).
const RESPONSE_MAX_BYTES: usize = 1 << 30;

/// The client id sent in every request header.
pub const CLIENT_ID: &str = "rill-cli";

/// Versions this client speaks, per API: (lowest, highest). The highest is what it prefers;
/// the version used is the highest both sides support.
pub fn client_versions(key: ApiKey) -> (i16, i16) {
    match key {
        ApiKey::Produce => (3, 9),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::Metadata => (1, 12),
        ApiKey::ApiVersions => (0, 3),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 6),
        ApiKey::CreatePartitions => (0, 3),
        ApiKey::DescribeConfigs => (1, 4),
        ApiKey::IncrementalAlterConfigs => (0, 1),
        ApiKey::DeleteRecords => (0, 2),
        ApiKey::FindCoordinator => (1, 3),
        ApiKey::ListGroups => (0, 4),
        ApiKey::DescribeGroups => (0, 5),
        ApiKey::OffsetFetch => (1, 7),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::DeleteGroups => (0, 2),
        ApiKey::JoinGroup => (0, 7),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 4),
        ApiKey::ConsumerGroupDescribe => (0, 1),
        ApiKey::ConsumerGroupHeartbeat => (0, 1),
        ApiKey::ShareGroupHeartbeat => (1, 1),
        ApiKey::ShareGroupDescribe => (1, 1),
        ApiKey::ShareFetch => (1, 1),
        ApiKey::ShareAcknowledge => (1, 1),
        _ => (0, 0),
    }
}

type Reply = oneshot::Sender<Result<Bytes>>;

/// A request on its way to the writer task.
struct Outgoing {
    frame: Bytes,
    correlation_id: i32,
    /// `None` for requests without a response (acks=0 produce).
    reply: Option<Reply>,
}

/// Requests written, waiting for their response, in order; and why the connection closed,
/// once it has (requests queued after that fail at once instead of waiting forever).
#[derive(Default)]
struct PendingState {
    queue: VecDeque<(i32, Reply)>,
    closed: Option<String>,
}

type Pending = Arc<Mutex<PendingState>>;

/// A connection to one broker. Cheap to share behind an `Arc`; requests from many tasks are
/// pipelined on the one socket.
pub struct Connection {
    addr: String,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    next_correlation_id: AtomicI32,
    /// Broker's supported version range per API key, from ApiVersions at connect.
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects, starts the reader and writer tasks, and asks the broker which API versions
    /// it supports.
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::Timeout`] when the broker cannot be
    /// reached; protocol errors when it does not speak Kafka.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Connection> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    op: "connect",
                    addr: addr.to_string(),
                    timeout_ms,
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(write_loop(
            write_half,
            outgoing_rx,
            Arc::clone(&pending),
            addr.to_string(),
        ));
        tokio::spawn(read_loop(read_half, pending, addr.to_string()));
        let mut connection = Connection {
            addr: addr.to_string(),
            outgoing,
            next_correlation_id: AtomicI32::new(1),
            broker_versions: HashMap::new(),
        };
        let versions = tokio::time::timeout(timeout, connection.api_versions())
            .await
            .map_err(|_| ClientError::Timeout {
                op: "ApiVersions",
                addr: addr.to_string(),
                timeout_ms,
            })??;
        connection.broker_versions = versions;
        Ok(connection)
    }

    /// The address this connection was made to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The broker's supported versions of `key`, if it supports it at all.
    pub fn broker_supports(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.broker_versions.get(&(key as i16)).copied()
    }

    async fn api_versions(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // v3 first; a broker that does not know v3 answers with v0 (KIP-511) and its ranges.
        let response: ApiVersionsResponse = self.send_versioned(&request, 3)?.await?;
        let response = if response.error_code == 35 {
            self.send_versioned(&request, 0)?.await?
        } else {
            response
        };
        ClientError::check(response.error_code, || {
            format!("ApiVersions to {}", self.addr)
        })?;
        Ok(response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// The version to use for `R`: the highest both sides support.
    ///
    /// # Errors
    /// [`ClientError::UnsupportedApi`] when the ranges do not overlap.
    pub fn version_for(&self, key: ApiKey) -> Result<i16> {
        let (ours_min, ours_max) = client_versions(key);
        let unsupported = || ClientError::UnsupportedApi {
            addr: self.addr.clone(),
            api: api_name(key),
            min: ours_min,
            max: ours_max,
        };
        let (theirs_min, theirs_max) = self.broker_supports(key).ok_or_else(unsupported)?;
        let version = ours_max.min(theirs_max);
        if version < ours_min.max(theirs_min) {
            return Err(unsupported());
        }
        Ok(version)
    }

    /// Sends a request at the negotiated version and waits for its response.
    ///
    /// # Errors
    /// Connection, protocol and version errors; Kafka error codes inside the response are
    /// the caller's to check.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response> {
        let version = self.version_for(api_key_of::<R>())?;
        self.send_versioned(request, version)?.await
    }

    /// Queues a request at `version` and returns the future of its response. The request is
    /// written in call order, so several queued calls are pipelined.
    ///
    /// # Errors
    /// Encoding errors and a closed connection, at once; the future fails with connection
    /// and decoding errors.
    pub fn send_versioned<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<impl Future<Output = Result<R::Response>> + Send + 'static> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(request, version, Some(tx))?;
        let addr = self.addr.clone();
        let key = api_key_of::<R>();
        Ok(async move {
            let mut body = rx.await.map_err(|_| ClientError::ConnectionLost {
                addr: addr.clone(),
                reason: "connection closed".into(),
            })??;
            ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(
                |e| ClientError::Protocol {
                    addr: addr.clone(),
                    reason: format!("{} response header: {e}", api_name(key)),
                },
            )?;
            R::Response::decode(&mut body, version).map_err(|e| ClientError::Protocol {
                addr,
                reason: format!("{} v{version} response: {e}", api_name(key)),
            })
        })
    }

    /// Writes a request that gets no response (Produce with acks=0).
    ///
    /// # Errors
    /// Encoding errors and a closed connection.
    pub fn send_no_response<R: Request>(&self, request: &R) -> Result<()> {
        let version = self.version_for(api_key_of::<R>())?;
        self.enqueue(request, version, None)
    }

    fn enqueue<R: Request>(&self, request: &R, version: i16, reply: Option<Reply>) -> Result<()> {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let header_version = R::header_version(version);
        let protocol = |e: String| ClientError::Protocol {
            addr: self.addr.clone(),
            reason: format!("encoding {} v{version}: {e}", api_name(api_key_of::<R>())),
        };
        let size = header
            .compute_size(header_version)
            .map_err(|e| protocol(e.to_string()))?
            + request
                .compute_size(version)
                .map_err(|e| protocol(e.to_string()))?;
        let mut frame = BytesMut::with_capacity(4 + size);
        frame.put_u32(
            u32::try_from(size).map_err(|_| {
                ClientError::Invalid(format!("request of {size} bytes is too large"))
            })?,
        );
        header
            .encode(&mut frame, header_version)
            .map_err(|e| protocol(e.to_string()))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| protocol(e.to_string()))?;
        debug_assert_eq!(frame.len(), 4 + size);
        self.outgoing
            .send(Outgoing {
                frame: frame.freeze(),
                correlation_id,
                reply,
            })
            .map_err(|_| ClientError::ConnectionLost {
                addr: self.addr.clone(),
                reason: "connection closed".into(),
            })
    }
}

/// The API key of a request type.
pub fn api_key_of<R: Request>() -> ApiKey {
    // R::KEY comes from the same generated code as ApiKey, so the conversion cannot fail.
    ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions)
}

/// The Kafka name of an API, for messages.
pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        _ => "another API",
    }
}

/// Writes queued requests; records each one's reply channel before its bytes go out.
async fn write_loop(
    write_half: OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    pending: Pending,
    addr: String,
) {
    let mut writer = BufWriter::with_capacity(256 * 1024, write_half);
    while let Some(first) = outgoing.recv().await {
        let mut next = Some(first);
        // Write everything already queued, then flush once: fewer syscalls when pipelining.
        while let Some(request) = next.take() {
            if let Some(reply) = request.reply {
                let mut state = lock(&pending);
                if let Some(reason) = &state.closed {
                    let _ = reply.send(Err(ClientError::ConnectionLost {
                        addr: addr.clone(),
                        reason: reason.clone(),
                    }));
                    continue;
                }
                state.queue.push_back((request.correlation_id, reply));
            }
            if let Err(e) = writer.write_all(&request.frame).await {
                fail_all(&pending, &addr, &e.to_string());
                return;
            }
            next = outgoing.try_recv().ok();
        }
        if let Err(e) = writer.flush().await {
            fail_all(&pending, &addr, &e.to_string());
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Reads response frames and hands each to the oldest pending request.
async fn read_loop(mut read_half: OwnedReadHalf, pending: Pending, addr: String) {
    let mut buffer = BytesMut::with_capacity(256 * 1024);
    let reason = loop {
        while buffer.len() >= 4 {
            let size = (&buffer[..4]).get_u32() as usize;
            if size > RESPONSE_MAX_BYTES {
                fail_all(&pending, &addr, &format!("response frame of {size} bytes"));
                return;
            }
            if buffer.len() < 4 + size {
                buffer.reserve(4 + size - buffer.len());
                break;
            }
            buffer.advance(4);
            let frame = buffer.split_to(size).freeze();
            let Some((expected, reply)) = lock(&pending).queue.pop_front() else {
                fail_all(&pending, &addr, "response to no request");
                return;
            };
            let got = if frame.len() >= 4 {
                (&frame[..4]).get_i32()
            } else {
                i32::MIN
            };
            if got != expected {
                let reason = format!("correlation id {got}, expected {expected}");
                let _ = reply.send(Err(ClientError::Protocol {
                    addr: addr.clone(),
                    reason: reason.clone(),
                }));
                fail_all(&pending, &addr, &reason);
                return;
            }
            let _ = reply.send(Ok(frame));
        }
        if buffer.capacity() - buffer.len() < 64 * 1024 {
            buffer.reserve(256 * 1024);
        }
        match read_half.read_buf(&mut buffer).await {
            Ok(0) => break "closed by the broker".to_string(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    fail_all(&pending, &addr, &reason);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves a plain queue, still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fail_all(pending: &Pending, addr: &str, reason: &str) {
    let mut state = lock(pending);
    state.closed.get_or_insert_with(|| reason.to_string());
    for (_, reply) in state.queue.drain(..) {
        let _ = reply.send(Err(ClientError::ConnectionLost {
            addr: addr.to_string(),
            reason: reason.to_string(),
        }));
    }
}
