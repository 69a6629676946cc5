//! Kafka's framing: every request and response is a big-endian `i32` length followed by that
//! many bytes.
//!
//! Checking a frame is split from reading it (as in mini-redis) so the connection can refuse
//! an oversized or negative length *before* allocating anything for it: a peer that sends
//! `0x7fffffff` costs us four bytes of buffer, not two gigabytes.
//!
//! ```text
//! +----------------+-----------+-------------+----------------+------------------------+
//! | length: i32 BE | api_key   | api_version | correlation_id | client_id, tags, body  |
//! |                | i16 BE    | i16 BE      | i32 BE         | (header version dep.)  |
//! +----------------+-----------+-------------+----------------+------------------------+
//! ```

use thiserror::Error;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes of the fixed part of every request header: api key, api version, correlation id.
pub const HEADER_PREFIX_BYTES: usize = 8;

/// Why a frame is refused. Every variant closes the connection.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size_bytes} bytes exceeds socket.request.max.bytes {max_bytes}")]
    TooLarge { size_bytes: i64, max_bytes: u32 },
    #[error("negative frame length {size_bytes}")]
    Negative { size_bytes: i32 },
    #[error("frame of {size_bytes} bytes is shorter than a request header")]
    TooShort { size_bytes: usize },
}

/// Looks at the start of `buf` and returns the length of the frame body when the prefix is
/// complete, `None` when fewer than four bytes are buffered.
///
/// # Errors
/// [`FrameError::TooLarge`] or [`FrameError::Negative`] when the length prefix is not one we
/// will ever accept; the caller must close the connection without reading further.
pub fn check(buf: &[u8], max_bytes: u32) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let mut raw = [0u8; LENGTH_PREFIX_BYTES];
    raw.copy_from_slice(prefix);
    let size_bytes = i32::from_be_bytes(raw);
    if size_bytes < 0 {
        return Err(FrameError::Negative { size_bytes });
    }
    if size_bytes as u64 > u64::from(max_bytes) {
        return Err(FrameError::TooLarge {
            size_bytes: i64::from(size_bytes),
            max_bytes,
        });
    }
    Ok(Some(size_bytes as usize))
}

/// The fixed start of every request header, readable for any API key and version. The
/// dispatcher needs it before it knows whether the crate can decode the rest: to close on an
/// unknown key, and to answer a too-new ApiVersions request in the v0 format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl HeaderPrefix {
    /// Reads the first eight bytes of a frame body.
    ///
    /// # Errors
    /// [`FrameError::TooShort`] when the frame cannot hold a header.
    pub fn parse(frame: &[u8]) -> Result<HeaderPrefix, FrameError> {
        if frame.len() < HEADER_PREFIX_BYTES {
            return Err(FrameError::TooShort {
                size_bytes: frame.len(),
            });
        }
        Ok(HeaderPrefix {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_prefix_is_not_an_error() {
        assert_eq!(check(&[0, 0, 1], 100), Ok(None));
        assert_eq!(check(&[], 100), Ok(None));
    }

    #[test]
    fn length_is_checked_against_the_limit() {
        assert_eq!(check(&[0, 0, 0, 100], 100), Ok(Some(100)));
        assert_eq!(
            check(&[0, 0, 0, 101], 100),
            Err(FrameError::TooLarge {
                size_bytes: 101,
                max_bytes: 100
            })
        );
        assert_eq!(
            check(&[0xff, 0xff, 0xff, 0xff], 100),
            Err(FrameError::Negative { size_bytes: -1 })
        );
    }

    #[test]
    fn header_prefix_parses_big_endian() {
        let frame = [0, 18, 0, 3, 0, 0, 0, 7, 0xff];
        let prefix = HeaderPrefix::parse(&frame).expect("long enough");
        assert_eq!(prefix.api_key, 18);
        assert_eq!(prefix.api_version, 3);
        assert_eq!(prefix.correlation_id, 7);
        assert!(HeaderPrefix::parse(&frame[..7]).is_err());
    }
}
