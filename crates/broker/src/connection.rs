//! One client connection: reads request frames, writes responses.
//!
//! Kafka's broker processes a connection's requests one at a time; we pipeline them (the loop
//! is `listener::serve`, the queue `in_flight.rs`): a request's in-order part runs before the
//! next frame is read, its wait for durability or a long poll overlaps the requests behind it,
//! and answers leave in request order. The number of started, unanswered requests is bounded,
//! so a client that stops reading stalls only itself and costs a bounded number of responses
//! (for fetch, mostly file ranges, not buffers).
//!
//! Request memory is bounded twice: each frame by `socket.request.max.bytes` (checked before
//! anything is allocated for it), and all large frames together by a broker-wide budget
//! (`queued.max.request.bytes`): a connection whose next frame does not fit in the budget
//! waits before allocating for it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ConnectionError;
use crate::frame::{self, LENGTH_PREFIX_BYTES};
use crate::metrics::Metrics;
use crate::response::Response;
use crate::response_writer::{ResponseWriter, WriteMode};

/// Initial read buffer; grows only once a frame's length has been checked against the limit.
/// Frames that fit in it are not charged to the request budget.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The broker-wide budget for large request frames, one semaphore permit per byte.
#[derive(Clone)]
pub struct RequestMemory {
    permits: Arc<Semaphore>,
    capacity_bytes: usize,
}

impl RequestMemory {
    /// A budget of `capacity_bytes` (clamped to what a semaphore can count).
    pub fn new(capacity_bytes: u64) -> RequestMemory {
        let capacity_bytes = usize::try_from(capacity_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        RequestMemory {
            permits: Arc::new(Semaphore::new(capacity_bytes)),
            capacity_bytes,
        }
    }

    /// Bytes of the budget not held by any frame right now.
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for `frame_bytes` of the budget. A frame larger than the whole budget takes all
    /// of it rather than waiting forever. `None` only if the semaphore were closed, which
    /// nothing does; the frame is then read unbudgeted rather than refused.
    async fn take(&self, frame_bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = frame_bytes.min(self.capacity_bytes);
        // `capacity_bytes` is clamped to u32::MAX in new(), so this conversion cannot fail.
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        Arc::clone(&self.permits)
            .acquire_many_owned(permits)
            .await
            .ok()
    }
}

/// A request frame body, with its share of the request budget. Drop it once the request is
/// handled so the budget goes back to other connections.
pub struct Frame {
    pub body: Bytes,
    pub(crate) memory: Option<OwnedSemaphorePermit>,
}

/// A framed Kafka connection.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet returned as frames (pipelined requests land here).
    read_buffer: BytesMut,
    /// `socket.request.max.bytes`: frames above it are refused before any allocation.
    request_max_bytes: u32,
    memory: RequestMemory,
    /// The budget taken for the frame being read. Kept here, not in a local, because
    /// `read_frame` races shutdown and idleness and may be cancelled and called again.
    pending_memory: Option<OwnedSemaphorePermit>,
    writer: ResponseWriter,
}

impl Connection {
    /// Wraps an accepted socket; `request_max_bytes` bounds every frame read from it and
    /// `memory` all large frames of all connections together.
    pub fn new(
        stream: TcpStream,
        request_max_bytes: u32,
        memory: RequestMemory,
        mode: WriteMode,
        cold_reads: Option<Arc<crate::cold_read::ColdReads>>,
        metrics: Arc<Metrics>,
    ) -> Connection {
        Connection {
            stream,
            read_buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            request_max_bytes,
            memory,
            pending_memory: None,
            writer: ResponseWriter::new(mode, cold_reads, metrics),
        }
    }

    /// Reads the next request frame (without its length prefix).
    ///
    /// # Returns
    /// `Ok(None)` when the peer closed the connection between frames.
    ///
    /// # Errors
    /// [`ConnectionError::Frame`] for a length we refuse, [`ConnectionError::TruncatedFrame`]
    /// when the peer closes in the middle of a frame, and socket errors.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ConnectionError> {
        loop {
            if let Some(body_bytes) = frame::check(&self.read_buffer, self.request_max_bytes)? {
                let frame_bytes = LENGTH_PREFIX_BYTES + body_bytes;
                if self.read_buffer.len() >= frame_bytes {
                    let mut frame = self.read_buffer.split_to(frame_bytes);
                    let body = frame.split_off(LENGTH_PREFIX_BYTES);
                    self.shrink_after_large_frame();
                    return Ok(Some(Frame {
                        body: body.freeze(),
                        memory: self.pending_memory.take(),
                    }));
                }
                if frame_bytes > READ_BUFFER_BYTES && self.pending_memory.is_none() {
                    self.pending_memory = self.memory.take(frame_bytes).await;
                }
                // Within the frame limit and the budget, so reserving for it is bounded.
                self.read_buffer
                    .reserve(frame_bytes - self.read_buffer.len());
            } else if self.read_buffer.capacity() == self.read_buffer.len() {
                self.read_buffer.reserve(READ_BUFFER_BYTES);
            }
            let read_bytes = self.stream.read_buf(&mut self.read_buffer).await?;
            if read_bytes == 0 {
                if self.read_buffer.is_empty() {
                    return Ok(None);
                }
                return Err(ConnectionError::TruncatedFrame {
                    buffered_bytes: self.read_buffer.len(),
                });
            }
        }
    }

    /// After a large frame the read buffer still owns the rest of that large allocation; move
    /// the leftover (the start of the next pipelined frame) into a fresh buffer so the memory
    /// is really returned along with the budget.
    fn shrink_after_large_frame(&mut self) {
        if self.read_buffer.capacity() > 2 * READ_BUFFER_BYTES {
            let mut fresh = BytesMut::with_capacity(READ_BUFFER_BYTES.max(self.read_buffer.len()));
            fresh.extend_from_slice(&self.read_buffer);
            self.read_buffer = fresh;
        }
    }

    /// Writes one whole response before returning.
    ///
    /// # Errors
    /// See [`ResponseWriter::write`].
    pub async fn write_response(&mut self, response: &Response) -> Result<(), ConnectionError> {
        self.writer.write(&self.stream, response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Sends `frames` (bodies) split into writes of the given sizes; returns what the
    /// connection reads back, frame by frame.
    async fn round_trip(
        frames: Vec<Vec<u8>>,
        cuts: Vec<usize>,
        memory: RequestMemory,
    ) -> Vec<Vec<u8>> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut wire = Vec::new();
        for body in &frames {
            wire.extend_from_slice(&(body.len() as i32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        let writer = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let mut at = 0;
            for cut in cuts.into_iter().cycle() {
                if at >= wire.len() {
                    break;
                }
                let end = (at + cut.max(1)).min(wire.len());
                stream.write_all(&wire[at..end]).await.expect("write");
                at = end;
            }
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let mut connection = Connection::new(
            stream,
            1 << 20,
            memory,
            WriteMode::Copy,
            None,
            Arc::new(Metrics::default()),
        );
        let mut out = Vec::new();
        while let Some(frame) = connection.read_frame().await.expect("frame") {
            out.push(frame.body.to_vec());
        }
        writer.await.expect("writer");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Frames of any size (small and above the read buffer), pipelined and split at any
        /// byte boundaries, come out whole and in order; the budget is returned each time.
        #[test]
        fn frames_survive_any_split(
            sizes in proptest::collection::vec(prop_oneof![0usize..200, 60_000usize..200_000], 1..6),
            cuts in proptest::collection::vec(1usize..100_000, 1..8),
        ) {
            let frames: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            // A budget smaller than some frames: they take all of it, one at a time.
            let memory = RequestMemory::new(150_000);
            let got = runtime.block_on(round_trip(frames.clone(), cuts, memory.clone()));
            prop_assert_eq!(got, frames);
            prop_assert_eq!(memory.available_bytes(), 150_000);
        }
    }
}
