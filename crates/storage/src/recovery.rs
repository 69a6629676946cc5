//! Scans a segment file batch by batch, validating each as the produce path does, to find
//! where the valid log ends after a crash (Redpanda's `log_replayer`, Kafka's
//! `LogSegment.recover`). The first batch that is torn, zero-filled, fails its CRC or does not
//! continue the offsets ends the log.

use std::io;

use crate::batch::{self, BatchHeader, HEADER_SIZE};
use crate::file_io::IoFile;

/// Read size of the scan: large sequential reads, so a 1 GiB tail scans at disk speed.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// File position after the last valid batch.
    pub valid_end: u64,
    /// Offset after the last valid batch.
    pub next_offset: i64,
    /// Whether the scan stopped at bytes that were not a valid batch (rather than at `limit`).
    pub stopped_early: bool,
}

/// Scans `file` from `start` (a batch boundary whose batch must begin at `expected_offset`) up
/// to `limit` bytes, calling `on_batch(position, header)` for each valid batch.
pub fn scan(
    file: &IoFile,
    start: u64,
    limit: u64,
    expected_offset: i64,
    max_batch_bytes: usize,
    on_batch: impl FnMut(u64, &BatchHeader),
) -> io::Result<ScanEnd> {
    scan_inner(
        file,
        start,
        limit,
        expected_offset,
        max_batch_bytes,
        false,
        on_batch,
    )
}

/// [`scan`] over a segment the cleaner rewrote: offsets only increase (whole batches may be
/// gone), so a batch may start past `expected_offset`. Used only for segments below the
/// recovery point (index rebuilds), never to find a torn tail.
pub fn scan_cleaned(
    file: &IoFile,
    start: u64,
    limit: u64,
    expected_offset: i64,
    max_batch_bytes: usize,
    on_batch: impl FnMut(u64, &BatchHeader),
) -> io::Result<ScanEnd> {
    scan_inner(
        file,
        start,
        limit,
        expected_offset,
        max_batch_bytes,
        true,
        on_batch,
    )
}

fn scan_inner(
    file: &IoFile,
    start: u64,
    limit: u64,
    expected_offset: i64,
    max_batch_bytes: usize,
    gaps_allowed: bool,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> io::Result<ScanEnd> {
    let mut buf = vec![
        0u8;
        SCAN_CHUNK_BYTES
            .min((limit.saturating_sub(start)) as usize)
            .max(HEADER_SIZE)
    ];
    let mut buf_pos = start; // file position of buf[0]
    let mut buf_len = 0usize;
    let mut pos = start;
    let mut next_offset = expected_offset;
    // Bounded: each iteration advances `pos` by a whole batch or returns.
    loop {
        if pos + HEADER_SIZE as u64 > limit {
            return Ok(ScanEnd {
                valid_end: pos,
                next_offset,
                stopped_early: pos != limit,
            });
        }
        // Make sure the header is buffered.
        if pos + HEADER_SIZE as u64 > buf_pos + buf_len as u64 {
            buf_pos = pos;
            buf_len = file.read_at(&mut buf, pos)?;
        }
        let at = (pos - buf_pos) as usize;
        let Some(header) = BatchHeader::parse(&buf[at..buf_len]) else {
            return Ok(ScanEnd {
                valid_end: pos,
                next_offset,
                stopped_early: true,
            });
        };
        let size = header.total_size();
        let plausible = header.magic == batch::MAGIC_V2
            && size >= HEADER_SIZE
            && size <= max_batch_bytes
            && pos + size as u64 <= limit
            && (header.base_offset == next_offset
                || (gaps_allowed && header.base_offset > next_offset));
        if !plausible {
            return Ok(ScanEnd {
                valid_end: pos,
                next_offset,
                stopped_early: true,
            });
        }
        if pos + size as u64 > buf_pos + buf_len as u64 {
            if buf.len() < size {
                buf.resize(size, 0);
            }
            buf_pos = pos;
            buf_len = file.read_at(&mut buf, pos)?;
        }
        let at = (pos - buf_pos) as usize;
        match batch::validate_stored(&buf[at..buf_len], max_batch_bytes) {
            Ok(h) => {
                on_batch(pos, &h);
                pos += size as u64;
                next_offset = h.last_offset() + 1;
            }
            Err(_) => {
                return Ok(ScanEnd {
                    valid_end: pos,
                    next_offset,
                    stopped_early: true,
                })
            }
        }
    }
}
