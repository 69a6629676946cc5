//! One client connection: reads request frames, writes responses.
//!
//! Kafka processes a connection's requests one at a time, in order, and so do we: the
//! handler reads a frame, handles it, writes the whole response, and only then reads the
//! next frame. That gives each connection at most one response in flight, so a client that
//! stops reading its fetch responses stalls only itself and costs one response's worth of
//! memory (and for fetch, most of that is file ranges, not buffers).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::error::ConnectionError;
use crate::frame::{self, LENGTH_PREFIX_BYTES};
use crate::metrics::Metrics;
use crate::response::Response;
use crate::response_writer::{ResponseWriter, WriteMode};

/// Initial read buffer; grows only once a frame's length has been checked against the limit.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A framed Kafka connection.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet returned as frames (pipelined requests land here).
    read_buffer: BytesMut,
    /// `socket.request.max.bytes`: frames above it are refused before any allocation.
    request_max_bytes: u32,
    writer: ResponseWriter,
}

impl Connection {
    /// Wraps an accepted socket; `request_max_bytes` bounds every frame read from it.
    pub fn new(
        stream: TcpStream,
        request_max_bytes: u32,
        mode: WriteMode,
        metrics: Arc<Metrics>,
    ) -> Connection {
        Connection {
            stream,
            read_buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            request_max_bytes,
            writer: ResponseWriter::new(mode, metrics),
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
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        loop {
            if let Some(body_bytes) = frame::check(&self.read_buffer, self.request_max_bytes)? {
                let frame_bytes = LENGTH_PREFIX_BYTES + body_bytes;
                if self.read_buffer.len() >= frame_bytes {
                    let mut frame = self.read_buffer.split_to(frame_bytes);
                    let body = frame.split_off(LENGTH_PREFIX_BYTES);
                    return Ok(Some(body.freeze()));
                }
                // The length is within the limit, so reserving for it is bounded.
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

    /// Writes one whole response before returning.
    ///
    /// # Errors
    /// See [`ResponseWriter::write`].
    pub async fn write_response(&mut self, response: &Response) -> Result<(), ConnectionError> {
        self.writer.write(&self.stream, response).await
    }
}
