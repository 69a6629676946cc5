//! Zero-filling the active segment's preallocated space just ahead of its appends, so that
//! the fdatasync after a small append writes the data and flushes the device, and nothing
//! else.
//!
//! `fallocate` reserves blocks as *unwritten* extents. The first writeback into such a block
//! converts its extent to written, which changes the inode, so the fdatasync that follows
//! must also write the inode: on ext4 without a journal (the benchmark machine's root file
//! system, `ext4_fsync_nojournal`) a synchronous write of the inode table block, between the
//! data write and the device cache flush. With appends of a few KiB every fdatasync pays it,
//! and the inode table block is shared with other files, whose writeback it then waits for.
//! Block requests per fdatasync of a 4 KiB append (perf `block:block_rq_issue` over 300
//! syncs, a probe beside the broker): ~2 into fallocated space, ~1 into space already written
//! (with zeros). fdatasync times of the same appends, interleaved sync by sync with other
//! helpers' builds running (three rounds of 300): mean 1.47 / 3.50 / 1.69 ms into fallocated
//! space against 1.22 / 2.37 / 1.26 ms into zero-filled space, p99 16.0 / 24.9 / 22.1 ms
//! against 14.5 / 15.3 / 11.9 ms; quieter, p50 109 us against 69 us.
//!
//! So each small append also writes zeros over the next [`ZERO_CHUNK_BYTES`] of the
//! preallocation when fewer than [`ZERO_AHEAD_MIN_BYTES`] are zero-filled ahead of it. The
//! zeros go through the page cache and reach the disk with the next fdatasync, contiguous with
//! the data before them (one larger write, converting the chunk's extents once, not once per
//! append); later appends there overwrite written blocks. PostgreSQL zero-fills whole WAL
//! segments for the same reason; a chunk at a time keeps one sync's extra write small.
//!
//! Bounded: only appends smaller than [`SMALL_APPEND_BYTES`] zero ahead (a large append's
//! sync writes enough data that one inode write does not matter), at most one chunk per
//! [`ZERO_INTERVAL`] per segment (so a busy partition of small appends writes at most
//! [`ZERO_CHUNK_BYTES`] / [`ZERO_INTERVAL`], 16 MiB/s, of zeros), and never past the
//! preallocated end, which bounds the space and the page cache it takes. The zeros are
//! written only past the last batch (`size`), never over data, and recovery reads zeros there
//! as the end of the log, as it reads unwritten space.

use std::time::{Duration, Instant};

/// Bytes zero-filled at a time: one chunk's writeback rides on one append's fdatasync.
pub const ZERO_CHUNK_BYTES: u64 = 256 * 1024;

/// A small append zero-fills the next chunk when fewer bytes than this are zero-filled ahead.
pub const ZERO_AHEAD_MIN_BYTES: u64 = 64 * 1024;

/// Appends of at least this many bytes never zero-fill.
pub const SMALL_APPEND_BYTES: u64 = 64 * 1024;

/// The least time between two chunks of one segment.
pub const ZERO_INTERVAL: Duration = Duration::from_millis(16);

const PAGE_BYTES: u64 = 4096;

const _: () = assert!(ZERO_CHUNK_BYTES % PAGE_BYTES == 0);
const _: () = assert!(ZERO_AHEAD_MIN_BYTES < ZERO_CHUNK_BYTES);

/// A segment's zero-filled region ahead of its appends.
#[derive(Debug, Default, Clone)]
pub struct ZeroAhead {
    /// Bytes of the file below which zeros were written (or data); past it, as far as this
    /// segment knows, the preallocation is unwritten. May lag `size` (then the fill starts at
    /// `size`).
    zeroed_to: u64,
    /// When the last chunk was written.
    last: Option<Instant>,
}

impl ZeroAhead {
    /// The byte range to zero-fill after an append of `append_bytes` that left the segment at
    /// `size` with `allocated` bytes preallocated, if any. Records it as filled: call
    /// [`ZeroAhead::forget`] if the write fails.
    pub fn next_range(
        &mut self,
        size: u64,
        allocated: u64,
        append_bytes: u64,
        now: Instant,
    ) -> Option<(u64, u64)> {
        if append_bytes >= SMALL_APPEND_BYTES {
            return None;
        }
        // Whole pages only: the page holding `size` is written with the data anyway.
        let start = self.zeroed_to.max(size.div_ceil(PAGE_BYTES) * PAGE_BYTES);
        if start >= size.saturating_add(ZERO_AHEAD_MIN_BYTES) {
            return None;
        }
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < ZERO_INTERVAL)
        {
            return None;
        }
        let end = allocated.min(start.saturating_add(ZERO_CHUNK_BYTES)) / PAGE_BYTES * PAGE_BYTES;
        if end <= start {
            return None;
        }
        debug_assert!(start >= size, "zero-fill must never cover data");
        debug_assert!(end - start <= ZERO_CHUNK_BYTES);
        self.zeroed_to = end;
        self.last = Some(now);
        Some((start, end))
    }

    /// Forgets the filled region (a failed write, or the preallocation given back).
    pub fn forget(&mut self) {
        self.zeroed_to = 0;
    }
}

/// A chunk of zeros to write from (static, so a fill allocates nothing).
pub static ZEROS: [u8; ZERO_CHUNK_BYTES as usize] = [0; ZERO_CHUNK_BYTES as usize];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_a_chunk_past_the_data_page_and_then_waits_until_it_runs_low() {
        let now = Instant::now();
        let mut z = ZeroAhead::default();
        let mb = 1 << 20;
        assert_eq!(
            z.next_range(1000, mb, 1000, now),
            Some((4096, 4096 + ZERO_CHUNK_BYTES))
        );
        // Plenty ahead: nothing, whatever the time.
        let later = now + ZERO_INTERVAL;
        assert_eq!(z.next_range(2000, mb, 1000, later), None);
        // Low again: the next chunk follows the last one.
        let size = 4096 + ZERO_CHUNK_BYTES - 1000;
        assert_eq!(
            z.next_range(size, mb, 1000, later),
            Some((4096 + ZERO_CHUNK_BYTES, 4096 + 2 * ZERO_CHUNK_BYTES))
        );
    }

    #[test]
    fn never_fills_below_the_data_or_past_the_preallocation() {
        let now = Instant::now();
        let mut z = ZeroAhead::default();
        // Only part of a chunk is preallocated: fill to its end, in whole pages.
        assert_eq!(z.next_range(5000, 70_000, 100, now), Some((8192, 69_632)));
        // Data overtook the filled region (a large append in between): start at the data.
        let mut z = ZeroAhead::default();
        z.next_range(0, 1 << 20, 100, now);
        let size = 3 * ZERO_CHUNK_BYTES + 10;
        let later = now + ZERO_INTERVAL;
        let (start, end) = z.next_range(size, 1 << 22, 100, later).unwrap();
        assert_eq!(start, 3 * ZERO_CHUNK_BYTES + PAGE_BYTES);
        assert_eq!(end - start, ZERO_CHUNK_BYTES);
        // Nothing preallocated past the data page: nothing to fill.
        let mut z = ZeroAhead::default();
        assert_eq!(z.next_range(4000, 4096, 100, now), None);
    }

    #[test]
    fn large_appends_and_a_recent_chunk_do_not_fill() {
        let now = Instant::now();
        let mut z = ZeroAhead::default();
        assert_eq!(z.next_range(0, 1 << 24, SMALL_APPEND_BYTES, now), None);
        assert!(z.next_range(0, 1 << 24, 10, now).is_some());
        // Used up at once, but the last chunk is too recent.
        let size = ZERO_CHUNK_BYTES + 4096;
        assert_eq!(z.next_range(size, 1 << 24, 10, now), None);
        assert!(z
            .next_range(size, 1 << 24, 10, now + ZERO_INTERVAL)
            .is_some());
    }

    #[test]
    fn forgetting_fills_again_from_the_data() {
        let now = Instant::now();
        let mut z = ZeroAhead::default();
        z.next_range(0, 1 << 20, 10, now);
        z.forget();
        assert_eq!(
            z.next_range(100, 1 << 20, 10, now + ZERO_INTERVAL),
            Some((4096, 4096 + ZERO_CHUNK_BYTES))
        );
    }
}
