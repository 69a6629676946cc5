//! The APIs Kafka 4.4 serves that the `kafka-protocol` crate (0.18) does not know:
//! StreamsGroupDescribe (89) and UnregisterController (94). Their requests are read here with
//! a bounded [`Reader`] and their responses written with [`ChunkBuilder`], the broker's one
//! hand encoder (Fetch uses it too); everything else goes through the crate.
//!
//! Both are flexible in every version: request header v2 (decoded with the crate), response
//! header v1. The answers themselves come from [`crate::streams_groups`] and
//! [`crate::voters`]; this module only moves bytes.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::Decodable;

use crate::error::ConnectionError;
use crate::frame::HeaderPrefix;
use crate::response::{ChunkBuilder, Response};
use crate::state::BrokerState;

/// StreamsGroupDescribe (KIP-1071).
pub const STREAMS_GROUP_DESCRIBE: i16 = 89;
/// UnregisterController (Kafka 4.x: drops a removed controller's registration).
pub const UNREGISTER_CONTROLLER: i16 = 94;

/// (api key, min version, max version) of every API served by hand, as Kafka 4.4 advertises
/// them. ApiVersions lists these after the crate's ([`crate::api_versions::SUPPORTED`]).
pub const HAND_CODED: &[(i16, i16, i16)] = &[
    // v1 (KIP-1331) asks for a topology description; rill has no streams groups to describe.
    (STREAMS_GROUP_DESCRIBE, 0, 1),
    (UNREGISTER_CONTROLLER, 0, 0),
];

/// Bound on the group ids of one StreamsGroupDescribe (each costs one answer entry).
const GROUP_IDS_MAX: usize = 10_000;

/// The version range served by hand for `api_key`, if any.
pub fn supported_range(api_key: i16) -> Option<(i16, i16)> {
    HAND_CODED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// Why a hand-read request is malformed (the connection is closed, as for any body that does
/// not decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed request: {0}")]
pub struct Malformed(&'static str);

/// A bounded reader over a request body: every length is checked against the bytes left
/// before anything is allocated for it.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// BOOLEAN: one byte, non-zero is true.
    pub fn bool(&mut self) -> Result<bool, Malformed> {
        Ok(self.take(1)?[0] != 0)
    }

    /// INT32, big-endian.
    pub fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// UNSIGNED_VARINT (at most five bytes for a u32).
    pub fn uvarint(&mut self) -> Result<u32, Malformed> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed("varint longer than five bytes"))
    }

    /// A COMPACT_ARRAY's element count (`None` for a null array), bounded by the bytes left:
    /// every element takes at least `min_element_bytes`.
    pub fn compact_array_len(
        &mut self,
        min_element_bytes: usize,
    ) -> Result<Option<usize>, Malformed> {
        let n = self.uvarint()? as usize;
        if n == 0 {
            return Ok(None);
        }
        let len = n - 1;
        if len.saturating_mul(min_element_bytes.max(1)) > self.0.len() {
            return Err(Malformed("array longer than the request"));
        }
        Ok(Some(len))
    }

    /// COMPACT_STRING (non-null).
    pub fn compact_string(&mut self) -> Result<String, Malformed> {
        let n = self.uvarint()? as usize;
        if n == 0 {
            return Err(Malformed("null string"));
        }
        let bytes = self.take(n - 1)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| Malformed("string is not UTF-8"))
    }

    /// Skips a tagged-field section (no tagged fields of these requests are known).
    pub fn skip_tags(&mut self) -> Result<(), Malformed> {
        let count = self.uvarint()?;
        // Bounded by the bytes left: every field takes at least two bytes.
        if count as usize > self.0.len() / 2 {
            return Err(Malformed("more tagged fields than bytes"));
        }
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }

    /// The body must end here.
    pub fn finish(self) -> Result<(), Malformed> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Malformed("bytes after the request"))
        }
    }
}

/// Writes a COMPACT_NULLABLE_STRING.
pub fn put_nullable_string(b: &mut ChunkBuilder, s: Option<&str>) {
    match s {
        None => b.put_uvarint(0),
        Some(s) => b.put_string(s, true),
    }
}

/// Starts a flexible response: the size prefix (filled in by `finish`), the correlation id
/// and the response header's empty tagged fields (header v1).
pub fn flexible_response(correlation_id: i32) -> ChunkBuilder {
    let mut b = ChunkBuilder::new();
    b.put_i32(correlation_id);
    b.put_empty_tags();
    b
}

/// A StreamsGroupDescribe request, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsGroupDescribeRequest {
    pub group_ids: Vec<String>,
    pub include_authorized_operations: bool,
}

impl StreamsGroupDescribeRequest {
    /// Reads v0 or v1 (v1 adds IncludeTopologyDescription, which changes nothing here: no
    /// group has a topology).
    ///
    /// # Errors
    /// [`Malformed`].
    pub fn read(body: &[u8], version: i16) -> Result<Self, Malformed> {
        let mut r = Reader::new(body);
        let count = r.compact_array_len(1)?.ok_or(Malformed("null group ids"))?;
        if count > GROUP_IDS_MAX {
            return Err(Malformed("too many group ids"));
        }
        let mut group_ids = Vec::with_capacity(count);
        for _ in 0..count {
            group_ids.push(r.compact_string()?);
        }
        let include_authorized_operations = r.bool()?;
        if version >= 1 {
            let _include_topology_description = r.bool()?;
        }
        r.skip_tags()?;
        r.finish()?;
        Ok(StreamsGroupDescribeRequest {
            group_ids,
            include_authorized_operations,
        })
    }
}

/// Reads an UnregisterController v0 request: the controller id.
///
/// # Errors
/// [`Malformed`].
pub fn read_unregister_controller(body: &[u8]) -> Result<i32, Malformed> {
    let mut r = Reader::new(body);
    let id = r.i32()?;
    r.skip_tags()?;
    r.finish()?;
    Ok(id)
}

/// Writes an UnregisterController v0 response.
pub fn unregister_controller_response(
    correlation_id: i32,
    error_code: i16,
    message: Option<&str>,
) -> Response {
    let mut b = flexible_response(correlation_id);
    b.put_i32(0); // throttle_time_ms
    b.put_i16(error_code);
    put_nullable_string(&mut b, message);
    b.put_empty_tags();
    b.finish()
}

/// Handles a request of an API in [`HAND_CODED`], whose version the dispatcher checked.
///
/// # Errors
/// [`ConnectionError::Decode`] for a body that does not read, or an unknown key (a
/// dispatcher bug).
pub fn handle(
    state: &Arc<BrokerState>,
    prefix: HeaderPrefix,
    frame: Bytes,
) -> Result<Response, ConnectionError> {
    let decode_error = |reason: String| ConnectionError::Decode {
        api_key: prefix.api_key,
        api_version: prefix.api_version,
        reason,
    };
    let mut body = frame;
    // Flexible requests carry header v2.
    RequestHeader::decode(&mut body, 2).map_err(|e| decode_error(e.to_string()))?;
    match prefix.api_key {
        STREAMS_GROUP_DESCRIBE => {
            let request = StreamsGroupDescribeRequest::read(&body, prefix.api_version)
                .map_err(|e| decode_error(e.to_string()))?;
            Ok(crate::streams_groups::describe(
                state,
                prefix.api_version,
                prefix.correlation_id,
                &request,
            ))
        }
        UNREGISTER_CONTROLLER => {
            let id = read_unregister_controller(&body).map_err(|e| decode_error(e.to_string()))?;
            let (code, message) = crate::voters::unregister_controller(state.config.node_id, id);
            Ok(unregister_controller_response(
                prefix.correlation_id,
                code,
                message.as_deref(),
            ))
        }
        _ => Err(ConnectionError::UnknownApiKey {
            api_key: prefix.api_key,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uvarint(out: &mut Vec<u8>, mut v: u32) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn describe_body(ids: &[&str], version: i16) -> Vec<u8> {
        let mut out = Vec::new();
        uvarint(&mut out, ids.len() as u32 + 1);
        for id in ids {
            uvarint(&mut out, id.len() as u32 + 1);
            out.extend_from_slice(id.as_bytes());
        }
        out.push(1);
        if version >= 1 {
            out.push(0);
        }
        out.push(0);
        out
    }

    #[test]
    fn streams_group_describe_reads_both_versions() {
        for version in 0..=1 {
            let body = describe_body(&["a", "", "bc"], version);
            let r = StreamsGroupDescribeRequest::read(&body, version).unwrap();
            assert_eq!(r.group_ids, vec!["a", "", "bc"]);
            assert!(r.include_authorized_operations);
        }
    }

    #[test]
    fn truncated_garbage_and_huge_counts_are_refused() {
        let body = describe_body(&["abc"], 1);
        for cut in 0..body.len() {
            assert!(StreamsGroupDescribeRequest::read(&body[..cut], 1).is_err());
        }
        let mut extra = body.clone();
        extra.push(7);
        assert!(StreamsGroupDescribeRequest::read(&extra, 1).is_err());
        // A count of 2^28 in a 6-byte body: refused before allocating.
        let huge = [0x80, 0x80, 0x80, 0x80, 0x01, 0x00];
        assert_eq!(
            StreamsGroupDescribeRequest::read(&huge, 0),
            Err(Malformed("array longer than the request"))
        );
        assert!(read_unregister_controller(&[0, 0, 0]).is_err());
        assert_eq!(read_unregister_controller(&[0, 0, 0, 7, 0]), Ok(7));
    }

    #[test]
    fn tagged_fields_are_skipped() {
        let mut r = Reader::new(&[2, 0, 1, 9, 5, 2, 1, 1]);
        r.skip_tags().unwrap();
        r.finish().unwrap();
        let mut r = Reader::new(&[1, 0, 5, 9]);
        assert!(r.skip_tags().is_err());
    }
}
