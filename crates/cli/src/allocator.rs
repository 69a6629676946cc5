//! Allocator settings for every `rill` command: the broker and the load generators.
//!
//! A pipelined connection holds two large request buffers at once (the frame being appended
//! and the one read ahead, `rill_broker::listener`), freed and allocated again for every
//! request. glibc's defaults return freed memory at the top of an arena to the kernel once
//! more than about twice the last large allocation is free there (its dynamic trim threshold),
//! so every few requests a fresh 1 MB buffer was faulted in page by page while `recv` copied
//! into it: 6-10 % of the connection thread's CPU in `perf` (`do_anonymous_page`, on a VM
//! where each first touch of a page also costs the host a fault), none with the settings here.
//! `rill bench produce` built each 1 MB batch in fresh pages the same way: page faults were a
//! quarter of its CPU, and the bench client shares the benchmark machine's cores with the
//! broker it measures (its system time per GB halved with these settings).
//! Fixed thresholds keep up to [`TRIM_THRESHOLD_BYTES`] free per arena for reuse (glibc
//! keeps at most 8 arenas per core), and serve buffers up to [`MMAP_THRESHOLD_BYTES`] from
//! the arenas rather than from a fresh `mmap` each time.

/// Free memory an arena keeps at its top before giving it back to the kernel.
pub const TRIM_THRESHOLD_BYTES: i32 = 16 << 20;

/// Allocations at least this large get their own `mmap` (and `munmap` when freed).
pub const MMAP_THRESHOLD_BYTES: i32 = 8 << 20;

const _: () = assert!(MMAP_THRESHOLD_BYTES < TRIM_THRESHOLD_BYTES);

/// Applies the thresholds. Call before the runtime's threads start; a no-op off glibc.
pub fn keep_freed_request_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and only changes glibc's malloc parameters under
        // its own lock; it touches no memory of ours, and a refused value (return 0) leaves
        // the previous setting, which is only slower.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) };
        // SAFETY: as above.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        debug_assert!(trim == 1 && mmap == 1, "mallopt refused a threshold");
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far (field 10 of its stat line).
    fn thread_minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // The command name (field 2) is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        after_name
            .split(' ')
            .nth(7)
            .and_then(|f| f.parse().ok())
            .expect("minflt")
    }

    /// Three 3 MiB buffers allocated, written and freed over and over, as a pipelined
    /// connection does with its request buffers: after the first round they come back
    /// without page faults (glibc's default trim gave them back to the kernel every round,
    /// about 2 300 faults a round).
    #[test]
    fn freed_request_buffers_are_reused_without_page_faults() {
        keep_freed_request_buffers();
        let round = || {
            let buffers: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 + 1; 3 << 20]).collect();
            assert!(buffers.iter().all(|b| b[b.len() - 1] != 0));
        };
        round();
        let before = thread_minor_faults();
        for _ in 0..10 {
            round();
        }
        let faults = thread_minor_faults() - before;
        assert!(faults < 500, "{faults} page faults in 10 rounds");
    }
}
