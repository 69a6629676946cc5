//! A response as the writer sends it: a list of chunks, each either bytes we encoded or a
//! range of a segment file that goes out with `sendfile(2)`.
//!
//! Every response but Fetch is one bytes chunk, encoded with the `kafka-protocol` crate by
//! [`encode`]. Fetch builds its body by hand with [`ChunkBuilder`] so the record bytes stay in
//! the page cache. The four-byte size prefix is part of the first chunk.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use rill_storage::FileSlice;
use uuid::Uuid;

use crate::error::ConnectionError;
use crate::frame::LENGTH_PREFIX_BYTES;

/// One piece of a response on the wire.
pub enum Chunk {
    /// Bytes encoded by the broker (size prefix, headers, partition metadata).
    Bytes(Bytes),
    /// Record batches, straight from a segment file.
    File(FileSlice),
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunk::Bytes(bytes) => write!(f, "Bytes({})", bytes.len()),
            Chunk::File(slice) => write!(f, "File({}+{})", slice.position, slice.len),
        }
    }
}

/// A complete response frame, size prefix included.
#[derive(Debug)]
pub struct Response {
    chunks: Vec<Chunk>,
    size_bytes: u64,
    /// How long the connection stays muted after this response is sent: the quota throttle
    /// (`quota_sensors.rs`) the response's `throttle_time_ms` tells the client.
    throttle_ms: u64,
}

impl Response {
    /// No bytes, only a mute: what a throttled request that gets no response (produce with
    /// acks=0) leaves, as Kafka mutes such a connection too.
    pub fn mute_only(throttle_ms: u64) -> Response {
        Response {
            chunks: Vec::new(),
            size_bytes: 0,
            throttle_ms,
        }
    }

    /// How long to mute the connection after sending this (0: not throttled).
    pub fn throttle_ms(&self) -> u64 {
        self.throttle_ms
    }

    /// Marks the response as throttled: the connection is muted for `throttle_ms` after it
    /// is sent. The caller has put the same time in the body's `throttle_time_ms`.
    pub fn with_throttle_ms(mut self, throttle_ms: u64) -> Response {
        self.throttle_ms = throttle_ms;
        self
    }

    /// Overwrites the four bytes at `offset` (from the start of the frame, size prefix
    /// included) of the first chunk, which must hold them: for fields that are only known
    /// once the response is built (Fetch's `throttle_time_ms`, which depends on its size).
    pub fn patch_i32(&mut self, offset: usize, value: i32) {
        if let Some(Chunk::Bytes(first)) = self.chunks.first_mut() {
            debug_assert!(first.len() >= offset + 4);
            if first.len() >= offset + 4 {
                let mut patched = BytesMut::from(&first[..]);
                patched[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
                *first = patched.freeze();
            }
        }
    }

    /// The chunks in wire order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Total bytes on the wire, size prefix included.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Bytes of the chunks that are file ranges.
    pub fn file_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|chunk| match chunk {
                Chunk::File(slice) => u64::from(slice.len),
                Chunk::Bytes(_) => 0,
            })
            .sum()
    }
}

/// Encodes a response header and body with the `kafka-protocol` crate into one frame.
///
/// The header version comes from the response type (`ApiVersionsResponse` always uses header
/// v0, so a client that does not know our versions can still read it).
///
/// # Errors
/// [`ConnectionError::Encode`] when the crate refuses the message for this version, which is a
/// broker bug (we advertise only versions the crate encodes).
pub fn encode<R: Encodable + HeaderVersion>(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Response, ConnectionError> {
    let encode_error = encode_error(api_key, api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(api_version);
    let size_bytes = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(api_version)?))
        .map_err(encode_error)?;
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + size_bytes);
    buf.put_i32(frame_len(size_bytes));
    header
        .encode(&mut buf, header_version)
        .map_err(encode_error)?;
    body.encode(&mut buf, api_version).map_err(encode_error)?;
    debug_assert_eq!(buf.len(), LENGTH_PREFIX_BYTES + size_bytes);
    Ok(Response {
        throttle_ms: 0,
        size_bytes: buf.len() as u64,
        chunks: vec![Chunk::Bytes(buf.freeze())],
    })
}

/// Wraps the crate's error (an `anyhow::Error`, which this library does not name) with the
/// request it belongs to.
fn encode_error<E: std::fmt::Display>(
    api_key: i16,
    api_version: i16,
) -> impl Fn(E) -> ConnectionError + Copy {
    move |e| ConnectionError::Encode {
        api_key,
        api_version,
        reason: e.to_string(),
    }
}

/// Responses are bounded far below 2 GiB (fetch max_bytes is an i32 and we cap what we read);
/// saturating keeps a broken invariant visible to the client as a bad frame rather than UB.
fn frame_len(size_bytes: usize) -> i32 {
    debug_assert!(size_bytes <= i32::MAX as usize);
    i32::try_from(size_bytes).unwrap_or(i32::MAX)
}

/// Builds a response by hand: primitive encoders for Kafka's wire types plus file chunks.
///
/// Used by Fetch, whose record bytes must not be copied into the response buffer.
pub struct ChunkBuilder {
    chunks: Vec<Chunk>,
    current: BytesMut,
    size_bytes: u64,
}

impl Default for ChunkBuilder {
    fn default() -> Self {
        ChunkBuilder::new()
    }
}

impl ChunkBuilder {
    /// Starts a frame, reserving the size prefix that [`ChunkBuilder::finish`] fills in.
    pub fn new() -> ChunkBuilder {
        let mut current = BytesMut::with_capacity(1024);
        current.put_i32(0);
        ChunkBuilder {
            chunks: Vec::new(),
            current,
            size_bytes: 0,
        }
    }

    /// INT8.
    pub fn put_i8(&mut self, v: i8) {
        self.current.put_i8(v);
    }

    /// INT16, big-endian like every Kafka integer.
    pub fn put_i16(&mut self, v: i16) {
        self.current.put_i16(v);
    }

    /// INT32.
    pub fn put_i32(&mut self, v: i32) {
        self.current.put_i32(v);
    }

    /// INT64.
    pub fn put_i64(&mut self, v: i64) {
        self.current.put_i64(v);
    }

    /// UUID: 16 bytes, most significant first.
    pub fn put_uuid(&mut self, v: Uuid) {
        self.current.put_slice(v.as_bytes());
    }

    /// Kafka's UNSIGNED_VARINT: 7 bits per byte, low groups first.
    pub fn put_uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.current.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.current.put_u8(v as u8);
    }

    /// Array length: INT32 in classic versions, UNSIGNED_VARINT of `len + 1` in flexible ones.
    /// `None` encodes a null array.
    pub fn put_array_len(&mut self, len: Option<usize>, flexible: bool) {
        match (len, flexible) {
            (None, false) => self.put_i32(-1),
            (None, true) => self.put_uvarint(0),
            (Some(n), false) => self.put_i32(frame_len(n)),
            (Some(n), true) => self.put_uvarint(frame_len(n) as u32 + 1),
        }
    }

    /// STRING (INT16 length) or COMPACT_STRING (UNSIGNED_VARINT length + 1).
    pub fn put_string(&mut self, s: &str, flexible: bool) {
        if flexible {
            self.put_uvarint(s.len() as u32 + 1);
        } else {
            // Topic names are at most 249 bytes; the registry validates them.
            debug_assert!(s.len() <= i16::MAX as usize);
            self.put_i16(s.len() as i16);
        }
        self.current.put_slice(s.as_bytes());
    }

    /// An empty tagged-field section (flexible versions only).
    pub fn put_empty_tags(&mut self) {
        self.put_uvarint(0);
    }

    /// Appends a file range; the bytes encoded so far become their own chunk.
    pub fn put_file(&mut self, slice: FileSlice) {
        self.flush_current();
        self.size_bytes += u64::from(slice.len);
        self.chunks.push(Chunk::File(slice));
    }

    fn flush_current(&mut self) {
        if !self.current.is_empty() {
            let bytes = std::mem::take(&mut self.current).freeze();
            self.size_bytes += bytes.len() as u64;
            self.chunks.push(Chunk::Bytes(bytes));
        }
    }

    /// Writes the size prefix and returns the frame.
    pub fn finish(mut self) -> Response {
        self.flush_current();
        let body_bytes = self.size_bytes - LENGTH_PREFIX_BYTES as u64;
        let prefix = frame_len(usize::try_from(body_bytes).unwrap_or(usize::MAX));
        if let Some(Chunk::Bytes(first)) = self.chunks.first_mut() {
            // The first chunk always starts with the four placeholder bytes written by new().
            let mut patched = BytesMut::from(&first[..]);
            patched[..LENGTH_PREFIX_BYTES].copy_from_slice(&prefix.to_be_bytes());
            *first = patched.freeze();
        }
        Response {
            chunks: self.chunks,
            size_bytes: self.size_bytes,
            throttle_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_matches_kafka_encoding() {
        let mut b = ChunkBuilder::new();
        b.put_uvarint(0);
        b.put_uvarint(127);
        b.put_uvarint(128);
        b.put_uvarint(300);
        let response = b.finish();
        let Chunk::Bytes(bytes) = &response.chunks()[0] else {
            panic!("bytes chunk expected");
        };
        assert_eq!(&bytes[..4], &[0, 0, 0, 6]);
        assert_eq!(&bytes[4..], &[0x00, 0x7f, 0x80, 0x01, 0xac, 0x02]);
        assert_eq!(response.size_bytes(), 10);
    }
}
