//! The four Kafka record codecs, for the few places that must look inside a compressed batch
//! (produce validation, ListOffsets by time, the log cleaner).
//!
//! Decompression is streaming and bounded: [`decoder`] returns a [`Read`] that yields the
//! decompressed bytes and fails with [`CompressionError::OutputTooLarge`] as soon as more than
//! `max_output_bytes` would come out, so a 49 KB batch that inflates to 1.5 GiB costs at most
//! the bound in CPU and a codec window in memory, never the output. Callers read it through a
//! buffer they own (see `records::RecordReader`).
//!
//! Formats, as Kafka's clients write them:
//! - gzip: RFC 1952, possibly several members (Java's `GZIPInputStream` reads them all).
//! - snappy: xerial framing (`\x82SNAPPY\0`, version, compatible version, then blocks of
//!   `[u32 length][raw snappy]`), as the Java client writes; without that magic the whole
//!   payload is one raw snappy block, as xerial's `SnappyInputStream` falls back to (and as
//!   some librdkafka versions write).
//! - lz4: the LZ4 frame format (Kafka's `Lz4BlockOutputStream` for magic v2).
//! - zstd: zstd frames.

use std::io::{self, Read, Write};

/// Codec bits of a batch's attributes (bits 0–2).
const CODEC_MASK: i16 = 0x07;

/// xerial snappy-java stream header: magic, then version 1 and compatible version 1.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed block size snappy-java writes; our compressor uses the same.
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;

/// Largest zstd window (log2 bytes) a decoder accepts. zstd's own default limit is 27
/// (128 MiB); streaming compressors at Kafka's default level use 21–23, and the decoder
/// allocates the window a frame declares, so this bounds a decoder's memory at 16 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// A record batch codec, as numbered in the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// What can go wrong decoding or encoding a compressed batch payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// Codec bits 5–7 are not assigned by Kafka.
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    /// The payload inflates past the caller's bound; nothing past the bound was produced.
    #[error("{codec:?} payload decompresses to more than {max_output_bytes} bytes")]
    OutputTooLarge {
        codec: Compression,
        max_output_bytes: u64,
    },
    /// The payload is not valid for its codec.
    #[error("corrupt {codec:?} payload: {reason}")]
    Corrupt { codec: Compression, reason: String },
}

impl Compression {
    /// The codec named by a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Compression, CompressionError> {
        Ok(match attributes & CODEC_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(CompressionError::UnknownCodec(other)),
        })
    }

    /// The codec bits to put in a batch's attributes.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Turns an `io::Error` from a decoder into a typed error; bound errors pass through.
pub fn from_io(codec: Compression, e: io::Error) -> CompressionError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<BoundExceeded>())
    {
        Some(b) => CompressionError::OutputTooLarge {
            codec,
            max_output_bytes: b.0,
        },
        None => CompressionError::Corrupt {
            codec,
            reason: e.to_string(),
        },
    }
}

/// Marker carried inside the `io::Error` a [`Bounded`] reader returns.
#[derive(Debug)]
struct BoundExceeded(u64);

impl std::fmt::Display for BoundExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompressed output exceeds {} bytes", self.0)
    }
}
impl std::error::Error for BoundExceeded {}

/// A streaming decompressor over one batch payload with an output bound. Reading past the
/// bound fails with an error that [`from_io`] maps to [`CompressionError::OutputTooLarge`].
pub struct Decoder<'a> {
    inner: Inner<'a>,
    max_output_bytes: u64,
    produced_bytes: u64,
}

enum Inner<'a> {
    None(&'a [u8]),
    Gzip(Box<flate2::bufread::MultiGzDecoder<&'a [u8]>>),
    Snappy(SnappyDecoder<'a>),
    Lz4(Box<lz4::Decoder<&'a [u8]>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, &'a [u8]>>),
}

/// A bounded streaming decoder of `payload` (the bytes after a batch's 61-byte header).
/// `Compression::None` reads the payload itself, so callers have one code path.
pub fn decoder(
    codec: Compression,
    payload: &[u8],
    max_output_bytes: u64,
) -> Result<Decoder<'_>, CompressionError> {
    let corrupt = |e: io::Error| CompressionError::Corrupt {
        codec,
        reason: e.to_string(),
    };
    let inner = match codec {
        Compression::None => Inner::None(payload),
        Compression::Gzip => Inner::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(payload))),
        Compression::Snappy => Inner::Snappy(SnappyDecoder::new(payload, max_output_bytes)?),
        Compression::Lz4 => Inner::Lz4(Box::new(lz4::Decoder::new(payload).map_err(corrupt)?)),
        Compression::Zstd => {
            // `with_buffer`: the slice is its own buffer, no copy.
            let mut d = zstd::stream::read::Decoder::with_buffer(payload).map_err(corrupt)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(corrupt)?;
            Inner::Zstd(Box::new(d))
        }
    };
    Ok(Decoder {
        inner,
        max_output_bytes,
        produced_bytes: 0,
    })
}

impl Decoder<'_> {
    /// Decompressed bytes produced so far.
    pub fn produced_bytes(&self) -> u64 {
        self.produced_bytes
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::None(r) => r.read(buf),
            Inner::Gzip(r) => r.read(buf),
            Inner::Snappy(r) => r.read(buf),
            Inner::Lz4(r) => r.read(buf),
            Inner::Zstd(r) => r.read(buf),
        }
    }
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let remaining = self.max_output_bytes - self.produced_bytes;
        if remaining == 0 {
            // At the bound: the stream must end here. One probe byte tells.
            let mut probe = [0u8; 1];
            return match self.read_inner(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    BoundExceeded(self.max_output_bytes),
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.read_inner(&mut buf[..want])?;
        self.produced_bytes += n as u64;
        Ok(n)
    }
}

/// xerial-framed or raw snappy, one block decoded at a time into a reused buffer (snappy has
/// no streaming block format: a block is decoded whole, and its size is checked against the
/// bound from its preamble before any allocation).
struct SnappyDecoder<'a> {
    /// Remaining xerial blocks (`[u32 length][raw block]`...), or empty for raw snappy.
    rest: &'a [u8],
    block: Vec<u8>,
    pos: usize,
    max_output_bytes: u64,
    decoder: snap::raw::Decoder,
}

impl<'a> SnappyDecoder<'a> {
    fn new(payload: &'a [u8], max_output_bytes: u64) -> Result<Self, CompressionError> {
        let mut d = SnappyDecoder {
            rest: &[],
            block: Vec::new(),
            pos: 0,
            max_output_bytes,
            decoder: snap::raw::Decoder::new(),
        };
        if payload.len() >= XERIAL_HEADER_LEN && payload[..8] == XERIAL_MAGIC[..] {
            d.rest = &payload[XERIAL_HEADER_LEN..];
        } else {
            d.decode_block(payload)
                .map_err(|e| from_io(Compression::Snappy, e))?;
        }
        Ok(d)
    }

    fn decode_block(&mut self, block: &[u8]) -> io::Result<()> {
        let invalid = |e: snap::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let len = snap::raw::decompress_len(block).map_err(invalid)?;
        if len as u64 > self.max_output_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                BoundExceeded(self.max_output_bytes),
            ));
        }
        self.block.resize(len, 0);
        let n = self
            .decoder
            .decompress(block, &mut self.block)
            .map_err(invalid)?;
        self.block.truncate(n);
        self.pos = 0;
        Ok(())
    }
}

impl Read for SnappyDecoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: each turn consumes at least four bytes of `rest`.
        while self.pos == self.block.len() {
            if self.rest.is_empty() {
                return Ok(0);
            }
            let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated xerial block length",
                ));
            };
            let len = u32::from_be_bytes(*len) as usize;
            if len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "xerial block overruns the payload",
                ));
            }
            let (block, rest) = rest.split_at(len);
            self.rest = rest;
            self.decode_block(block)?;
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Compresses `input` with `codec`, appending to `out`, in the format Kafka's Java client
/// writes (so any consumer reads it). `Compression::None` copies.
pub fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    compress_with_level(codec, None, input, out)
}

/// [`compress`] at a codec level (a topic's `compression.<codec>.level`; `None` or gzip's -1
/// is the codec default). Snappy has no levels. Levels outside a codec's range are clamped.
pub fn compress_with_level(
    codec: Compression,
    level: Option<i32>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let failed = |e: io::Error| CompressionError::Corrupt {
        codec,
        reason: format!("compressing: {e}"),
    };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let gzip_level = match level {
                Some(l @ 1..=9) => flate2::Compression::new(l as u32),
                _ => flate2::Compression::default(),
            };
            let mut e = flate2::write::GzEncoder::new(out, gzip_level);
            e.write_all(input).map_err(failed)?;
            e.finish().map_err(failed)?;
        }
        Compression::Snappy => {
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in input.chunks(XERIAL_BLOCK_SIZE) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
                let n = encoder
                    .compress(chunk, &mut out[start..])
                    .map_err(|e| failed(io::Error::other(e)))?;
                out.truncate(start + n);
                out[len_at..start].copy_from_slice(&(n as u32).to_be_bytes());
            }
        }
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .level(level.unwrap_or(0).clamp(0, 17) as u32)
                .build(out)
                .map_err(failed)?;
            e.write_all(input).map_err(failed)?;
            let (_, result) = e.finish();
            result.map_err(failed)?;
        }
        Compression::Zstd => {
            let mut e =
                zstd::stream::write::Encoder::new(out, level.unwrap_or(3)).map_err(failed)?;
            e.write_all(input).map_err(failed)?;
            e.finish().map_err(failed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn decode_all(
        codec: Compression,
        payload: &[u8],
        max: u64,
    ) -> Result<Vec<u8>, CompressionError> {
        let mut d = decoder(codec, payload, max)?;
        let mut out = Vec::new();
        d.read_to_end(&mut out).map_err(|e| from_io(codec, e))?;
        Ok(out)
    }

    #[test]
    fn codec_bits_round_trip() {
        for c in ALL {
            assert_eq!(
                Compression::from_attributes(c.attribute_bits() | 0x30).unwrap(),
                c
            );
        }
        for bits in 5..8 {
            assert!(matches!(
                Compression::from_attributes(bits),
                Err(CompressionError::UnknownCodec(b)) if b == bits
            ));
        }
    }

    #[test]
    fn bound_refuses_a_bomb_without_allocating_it() {
        // 64 MiB of zeros compresses to a few KiB; a 1 MiB bound must stop it.
        let zeros = vec![0u8; 64 << 20];
        for c in ALL {
            let mut payload = Vec::new();
            compress(c, &zeros, &mut payload).unwrap();
            let mut d = decoder(c, &payload, 1 << 20).unwrap();
            let mut buf = vec![0u8; 8192];
            let err = loop {
                match d.read(&mut buf) {
                    Ok(0) => panic!("{c:?}: read past the bound without an error"),
                    Ok(_) => assert!(d.produced_bytes() <= 1 << 20),
                    Err(e) => break from_io(c, e),
                }
            };
            assert!(
                matches!(err, CompressionError::OutputTooLarge { max_output_bytes, .. } if max_output_bytes == 1 << 20),
                "{c:?}: {err}"
            );
        }
    }

    #[test]
    fn output_exactly_at_the_bound_is_accepted() {
        let data = vec![7u8; 5000];
        for c in ALL {
            let mut payload = Vec::new();
            compress(c, &data, &mut payload).unwrap();
            assert_eq!(decode_all(c, &payload, 5000).unwrap(), data, "{c:?}");
            assert!(decode_all(c, &payload, 4999).is_err(), "{c:?}");
        }
    }

    #[test]
    fn raw_snappy_without_xerial_framing_is_read() {
        let data = b"librdkafka may send raw snappy".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decode_all(Compression::Snappy, &raw, 1 << 20).unwrap(),
            data
        );
        // A raw block whose preamble claims more than the bound is refused before allocating.
        assert!(matches!(
            decode_all(Compression::Snappy, &raw, 100),
            Err(CompressionError::OutputTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..100_000), pick in 0usize..5) {
            let c = ALL[pick];
            let mut payload = Vec::new();
            compress(c, &data, &mut payload).unwrap();
            prop_assert_eq!(decode_all(c, &payload, data.len() as u64).unwrap(), data);
        }

        /// Garbage yields an error or some bounded output, never a panic.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000), pick in 0usize..5) {
            let c = ALL[pick];
            if let Ok(out) = decode_all(c, &data, 10_000) {
                prop_assert!(out.len() <= 10_000);
            }
            // Garbage behind a valid header too.
            let mut framed = XERIAL_MAGIC.to_vec();
            framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
            framed.extend_from_slice(&data);
            let _ = decode_all(Compression::Snappy, &framed, 10_000);
        }
    }
}
