//! How much of a log's written tail stays in the page cache (`rill.tail.cache.bytes`).
//!
//! Why: every page a write touches for the first time comes from free memory. On the 2-core
//! benchmark VMs that memory has been handed back to the host (virtio-balloon free page
//! reporting), so each fresh page costs a host fault inside `pwritev`'s copy; on a machine
//! whose RAM is full of page cache it costs reclaim or compaction instead. Measured on the
//! benchmark VM (`pwrite` 1 MiB + `fdatasync` every 4 MiB, 3 GB): 1.07–1.14 CPU s/GB keeping
//! every page, 0.26–0.28 giving back flushed pages 64 MiB behind the write position.
//!
//! So a log gives back (`POSIX_FADV_DONTNEED`) the pages of flushed data more than `window`
//! bytes behind its durable end. Only flushed pages are dropped: they are clean, so the
//! advice frees them at once and never starts writeback or loses a byte. Reads within the
//! window stay zero-copy from the page cache (sendfile); older reads find the pages gone and
//! take the cold-read path (`ColdReads` in the broker), as any catch-up read does.
//!
//! [`TailPages`] is the bookkeeping only (no I/O), so its plans are tested alone; `Log` runs
//! the advice outside its lock.

/// Bytes given back at least per advice call, so the syscall is amortized over many appends.
pub const RELEASE_STEP_BYTES: u64 = 8 << 20;

/// A range of one segment's `.log` file to give back; `to: None` means to the file's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub segment_base: i64,
    pub from: u64,
    pub to: Option<u64>,
}

/// How far a log's tail pages have been given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailPages {
    /// The segment the mark is in.
    segment_base: i64,
    /// Below this position of that segment, pages were given back.
    released_position: u64,
}

impl TailPages {
    /// Nothing given back yet, starting in the segment at `segment_base`.
    pub fn new(segment_base: i64) -> TailPages {
        TailPages {
            segment_base,
            released_position: 0,
        }
    }

    /// What to give back now that the durable end is `position` in the segment at
    /// `segment_base`, keeping `window_bytes` behind it (0: keep everything). At most two
    /// ranges: the rest of a segment the durable end has left (once the new one holds a whole
    /// window), and the part of the durable end's own segment that fell out of the window.
    pub fn plan(&mut self, segment_base: i64, position: u64, window_bytes: u64) -> Vec<Release> {
        let mut out = Vec::new();
        if window_bytes == 0 || segment_base < self.segment_base {
            return out;
        }
        if segment_base > self.segment_base {
            if position < window_bytes {
                // The old segment's end is still inside the window.
                return out;
            }
            out.push(Release {
                segment_base: self.segment_base,
                from: self.released_position,
                to: None,
            });
            *self = TailPages::new(segment_base);
        }
        // A truncated segment (recovery, DeleteRecords of everything) restarts the mark.
        self.released_position = self.released_position.min(position);
        let keep_from = position.saturating_sub(window_bytes);
        if keep_from >= self.released_position + RELEASE_STEP_BYTES {
            out.push(Release {
                segment_base,
                from: self.released_position,
                to: Some(keep_from),
            });
            self.released_position = keep_from;
        }
        debug_assert!(out.len() <= 2);
        debug_assert!(self.released_position <= position);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn off_gives_back_nothing() {
        let mut t = TailPages::new(0);
        assert!(t.plan(0, 10 << 30, 0).is_empty());
        assert!(t.plan(500, 10 << 30, 0).is_empty());
    }

    #[test]
    fn gives_back_what_falls_out_of_the_window_in_steps() {
        let mut t = TailPages::new(0);
        // Within the window plus one step: nothing yet.
        assert!(t.plan(0, 64 * MIB, 64 * MIB).is_empty());
        assert!(t
            .plan(0, 64 * MIB + RELEASE_STEP_BYTES - 1, 64 * MIB)
            .is_empty());
        let r = t.plan(0, 64 * MIB + RELEASE_STEP_BYTES, 64 * MIB);
        assert_eq!(
            r,
            vec![Release {
                segment_base: 0,
                from: 0,
                to: Some(RELEASE_STEP_BYTES)
            }]
        );
        // The next range starts where the last ended; never the window itself.
        let r = t.plan(0, 200 * MIB, 64 * MIB);
        assert_eq!(
            r,
            vec![Release {
                segment_base: 0,
                from: RELEASE_STEP_BYTES,
                to: Some(136 * MIB)
            }]
        );
        assert!(t.plan(0, 200 * MIB, 64 * MIB).is_empty());
    }

    #[test]
    fn a_left_segment_goes_once_the_new_one_holds_a_window() {
        let mut t = TailPages::new(0);
        t.plan(0, 100 * MIB, 64 * MIB);
        // Rolled at offset 1000: the old segment's end is still within the window.
        assert!(t.plan(1000, 10 * MIB, 64 * MIB).is_empty());
        let r = t.plan(1000, 64 * MIB, 64 * MIB);
        assert_eq!(
            r,
            vec![Release {
                segment_base: 0,
                from: 36 * MIB,
                to: None
            }]
        );
        let r = t.plan(1000, 80 * MIB, 64 * MIB);
        assert_eq!(
            r,
            vec![Release {
                segment_base: 1000,
                from: 0,
                to: Some(16 * MIB)
            }]
        );
    }

    #[test]
    fn an_older_durable_point_or_a_truncation_releases_nothing_wrong() {
        let mut t = TailPages::new(1000);
        // A durable point still in an older segment (just after open): nothing.
        assert!(t.plan(0, 500 * MIB, 64 * MIB).is_empty());
        t.plan(1000, 200 * MIB, 64 * MIB);
        // Truncated back to 10 MiB: nothing to give back, and the mark follows.
        assert!(t.plan(1000, 10 * MIB, 64 * MIB).is_empty());
        let r = t.plan(1000, 10 * MIB + 64 * MIB + RELEASE_STEP_BYTES, 64 * MIB);
        assert_eq!(
            r,
            vec![Release {
                segment_base: 1000,
                from: 10 * MIB,
                to: Some(10 * MIB + RELEASE_STEP_BYTES)
            }]
        );
    }
}
