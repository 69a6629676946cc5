//! Broker counters.
//!
//! Plain atomics rather than a metrics framework: the broker has no HTTP endpoint yet, and the
//! integration tests and benchmarks read these directly through [`crate::Broker::metrics`].
//! The counters are also logged at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every connection. Relaxed ordering is enough: each counter is
/// independent and only read for reporting.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Record bytes sent to sockets with `sendfile(2)` (never copied through user space).
    pub sendfile_bytes_total: AtomicU64,
    /// Record bytes sent through the copying path (`pread` into a buffer, then `write`).
    pub copied_bytes_total: AtomicU64,
    /// Requests decoded and handled, of any API.
    pub requests_total: AtomicU64,
    /// Connections accepted since start.
    pub connections_accepted_total: AtomicU64,
    /// Connections closed because the peer broke the protocol (bad frame, unknown API).
    pub connections_rejected_total: AtomicU64,
    /// Record-batch bytes appended by produce requests.
    pub produced_bytes_total: AtomicU64,
}

/// A point-in-time copy of [`Metrics`], for assertions and log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub sendfile_bytes_total: u64,
    pub copied_bytes_total: u64,
    pub requests_total: u64,
    pub connections_accepted_total: u64,
    pub connections_rejected_total: u64,
    pub produced_bytes_total: u64,
}

impl Metrics {
    /// Adds `n` to `counter`. A helper so call sites stay one short line.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            sendfile_bytes_total: self.sendfile_bytes_total.load(Ordering::Relaxed),
            copied_bytes_total: self.copied_bytes_total.load(Ordering::Relaxed),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            connections_accepted_total: self.connections_accepted_total.load(Ordering::Relaxed),
            connections_rejected_total: self.connections_rejected_total.load(Ordering::Relaxed),
            produced_bytes_total: self.produced_bytes_total.load(Ordering::Relaxed),
        }
    }
}
