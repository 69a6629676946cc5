//! What the page cache holds of a file range, and reads that leave the page cache as it was.
//!
//! The fetch path sends file ranges with `sendfile(2)`. When the range's pages are not in
//! memory, `sendfile` waits for the disk inside the calling thread, and a catch-up read of old
//! data pulls pages into the cache that push out the hot tail live consumers read (Kafka's
//! KAFKA-7504). [`residency`] tells the two cases apart without touching the pages, and
//! [`read_uncached`] reads a cold range without keeping it cached, so the broker can send hot
//! ranges with zero copy and cold ones from a buffer filled on a read pool.
//!
//! Blocking: [`residency`] only walks the page cache (no disk I/O); [`read_uncached`] reads
//! the disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use rustix::fs::Advice;
use rustix::io::{Errno, ReadWriteFlags};

/// Page size assumed for counting pages. Only counts depend on it (the kernel reports pages
/// of its own size), so a larger real page size makes counts smaller, not wrong.
pub const PAGE_BYTES: u64 = 4096;

/// `RWF_DONTCACHE` (Linux 6.14): a buffered read whose newly cached pages are dropped once
/// read. Pages that were cached before stay. Not yet in rustix's flag names.
const RWF_DONTCACHE: u32 = 0x80;

/// `cachestat(2)`'s number (Linux 6.5), the same on every architecture (the unified syscall
/// table); the libc crate does not name it for x86_64 yet.
const SYS_CACHESTAT: libc::c_long = 451;

/// How much of a file range the page cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residency {
    /// Pages of the range found in the page cache.
    pub resident_pages: u64,
    /// Pages the range spans.
    pub total_pages: u64,
}

impl Residency {
    /// True when every page of the range is in memory: sending it cannot wait for the disk.
    pub fn is_resident(&self) -> bool {
        self.resident_pages >= self.total_pages
    }
}

/// How a cold range is read; chosen by measurement (ARCHITECTURE.md, "Hot and cold reads").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UncachedRead {
    /// `preadv2(RWF_DONTCACHE)`, falling back to [`UncachedRead::DropBehind`] on kernels
    /// without it (`EOPNOTSUPP`, `EINVAL`).
    DontCache,
    /// `pread`, then `posix_fadvise(DONTNEED)` over the range read.
    DropBehind,
}

/// Turns kernel readahead off for reads through this descriptor (`POSIX_FADV_RANDOM`). Segment
/// `.log` descriptors get it: the reads a fetch makes through them are single batch headers,
/// and readahead after each would pull up to `read_ahead_kb` (8 MiB on the benchmark
/// machine) of old data into the cache on the fetching thread, which also makes the range
/// look resident to the hot/cold check. Advice only: a failure costs readahead, not
/// correctness.
pub fn no_readahead(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, Advice::Random);
}

/// Pages spanned by `len` bytes at `position`.
pub fn pages_spanned(position: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let first = position / PAGE_BYTES;
    let last = (position + len - 1) / PAGE_BYTES;
    last - first + 1
}

/// How much of `len` bytes at `position` of `file` is in the page cache. Reads no data.
///
/// Uses `cachestat(2)`; where the kernel lacks it (`ENOSYS`, or a seccomp filter's `EPERM`),
/// probes up to [`PROBES_MAX`] pages spread over the range with one-byte
/// `preadv2(RWF_NOWAIT)` reads, which never wait for the disk, and scales the count.
///
/// # Errors
/// Errors of the calls other than those fallbacks.
pub fn residency(file: &File, position: u64, len: u64) -> io::Result<Residency> {
    let total_pages = pages_spanned(position, len);
    if total_pages == 0 {
        return Ok(Residency {
            resident_pages: 0,
            total_pages: 0,
        });
    }
    match cachestat(file, position, len) {
        Ok(cached) => Ok(Residency {
            resident_pages: cached.min(total_pages),
            total_pages,
        }),
        Err(e) if e == Errno::NOSYS || e == Errno::PERM => probe_nowait(file, position, len),
        Err(e) => Err(e.into()),
    }
}

/// Pages sampled by the `RWF_NOWAIT` fallback of [`residency`].
pub const PROBES_MAX: u64 = 16;

fn probe_nowait(file: &File, position: u64, len: u64) -> io::Result<Residency> {
    let total_pages = pages_spanned(position, len);
    let probes = total_pages.min(PROBES_MAX);
    let mut found = 0;
    let mut byte = [0u8; 1];
    for i in 0..probes {
        // Evenly spread page indexes, first and last included.
        let page = if probes == 1 {
            0
        } else {
            i * (total_pages - 1) / (probes - 1)
        };
        let at = (position / PAGE_BYTES + page) * PAGE_BYTES;
        let at = at.max(position).min(position + len - 1);
        match rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(&mut byte)],
            at,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(_) => found += 1,
            Err(Errno::AGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Residency {
        resident_pages: found * total_pages / probes,
        total_pages,
    })
}

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat(2)` over the range: the pages it finds cached (dirty and under writeback
/// included: they are in memory).
fn cachestat(file: &File, position: u64, len: u64) -> Result<u64, Errno> {
    let range = CachestatRange { off: position, len };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat(fd, const struct cachestat_range *, struct cachestat *, unsigned int
    // flags) reads `range` and writes `stat`; both are live, properly aligned #[repr(C)]
    // structs of the kernel's layout (two and five u64 fields, include/uapi/linux/mman.h)
    // borrowed for the duration of the call, and the fd is owned by `file`, open for the
    // call. flags must be 0. It touches no other memory.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if rc != 0 {
        return Err(Errno::from_raw_os_error(
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    Ok(stat.nr_cache)
}

/// Reads `buf.len()` bytes at `position` (fewer at end of file) without leaving newly read
/// pages in the page cache, by `method`. Returns the bytes read; short only at end of file.
///
/// # Errors
/// Read errors.
pub fn read_uncached(
    file: &File,
    position: u64,
    buf: &mut [u8],
    method: UncachedRead,
) -> io::Result<usize> {
    let mut done = 0;
    let mut method = method;
    while done < buf.len() {
        let at = position + done as u64;
        let n = match method {
            UncachedRead::DontCache => match rustix::io::preadv2(
                file,
                &mut [io::IoSliceMut::new(&mut buf[done..])],
                at,
                ReadWriteFlags::from_bits_retain(RWF_DONTCACHE),
            ) {
                Ok(n) => n,
                Err(Errno::OPNOTSUPP) | Err(Errno::INVAL) => {
                    method = UncachedRead::DropBehind;
                    continue;
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            },
            UncachedRead::DropBehind => {
                match rustix::io::pread(file, &mut buf[done..], at) {
                    Ok(n) => {
                        // Advice only: a failure costs cache, not correctness.
                        let _ = rustix::fs::fadvise(
                            file,
                            at,
                            std::num::NonZeroU64::new(n as u64),
                            Advice::DontNeed,
                        );
                        n
                    }
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: usize) -> (tempfile::TempDir, File, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        (dir, File::open(&path).unwrap(), data)
    }

    #[test]
    fn pages_spanned_counts_partial_pages() {
        assert_eq!(pages_spanned(0, 0), 0);
        assert_eq!(pages_spanned(0, 1), 1);
        assert_eq!(pages_spanned(0, 4096), 1);
        assert_eq!(pages_spanned(4095, 2), 2);
        assert_eq!(pages_spanned(100, 8192), 3);
    }

    #[test]
    fn written_pages_are_resident_and_dropped_ones_are_not() {
        let (_dir, file, _) = file_with(64 << 10);
        let r = residency(&file, 0, 64 << 10).unwrap();
        assert_eq!(r.total_pages, 16);
        assert!(r.is_resident(), "{r:?}");
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, Advice::DontNeed).unwrap();
        let r = residency(&file, 0, 64 << 10).unwrap();
        assert!(!r.is_resident(), "{r:?}");
        assert_eq!(r.resident_pages, 0, "{r:?}");
    }

    #[test]
    fn probe_fallback_sees_the_same() {
        let (_dir, file, _) = file_with(256 << 10);
        assert!(probe_nowait(&file, 10, (256 << 10) - 10)
            .unwrap()
            .is_resident());
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, Advice::DontNeed).unwrap();
        assert_eq!(
            probe_nowait(&file, 10, (256 << 10) - 10)
                .unwrap()
                .resident_pages,
            0
        );
    }

    #[test]
    fn uncached_reads_return_the_bytes_and_leave_cold_pages_cold() {
        for method in [UncachedRead::DontCache, UncachedRead::DropBehind] {
            let (_dir, file, data) = file_with(1 << 20);
            file.sync_all().unwrap();
            rustix::fs::fadvise(&file, 0, None, Advice::DontNeed).unwrap();
            let mut buf = vec![0u8; (1 << 20) - 100];
            let n = read_uncached(&file, 100, &mut buf, method).unwrap();
            assert_eq!(n, buf.len());
            assert_eq!(&buf[..], &data[100..], "{method:?}");
            let r = residency(&file, 0, 1 << 20).unwrap();
            // Both methods drop what they read (RWF_DONTCACHE on 6.14+, else the fallback).
            assert!(r.resident_pages <= 2, "{method:?}: {r:?}");
            // Reading past the end is short, not an error.
            let mut tail = vec![0u8; 4096];
            assert_eq!(
                read_uncached(&file, (1 << 20) - 10, &mut tail, method).unwrap(),
                10
            );
        }
    }
}
