//! A flush pass run by the thread that appended, when no pass runs: the acks=all produce path
//! without a hand-off to a flusher thread.
//!
//! The plain path hands a request off three times before it is answered: the runtime to the
//! I/O pool (append), the pool to a flusher thread (sync), the flusher to the runtime (ack).
//! On a loaded 2-core machine each hand-off waits for the woken thread to be scheduled, and
//! that wait, not the fdatasync, was the tail (issue 11). An I/O-pool thread that has just
//! appended for an acks=all request must wait for that sync anyway; when no pass is running it
//! runs the next pass itself ([`Flusher::pass_here`]), with everything queued on the directory
//! (the group commit is unchanged: appends that arrive meanwhile queue for the next pass); the
//! durability callback then answers from here. That next pass runs here too, at once, when the
//! same rules allow ([`INLINE_PASSES_MAX`] passes per call): handed to a flusher thread it
//! waited for that thread's wake-up after the sync it had already waited for, an append that
//! arrived during a sync waiting about two syncs and a scheduling delay.
//!
//! Two rules keep a slow disk from holding the I/O pool: a pass runs here only when no other
//! pass runs (so at most one pool thread syncs at a time), and never when a queued log's last
//! sync was slow (by the flusher's own per-file threshold, at least
//! [`STRAGGLER_AFTER`](super::STRAGGLER_AFTER)); those go to the flusher threads, which start
//! passes beside a stuck one.
//!
//! While the pool thread appends, the wake-up of a flusher thread by those appends is deferred
//! ([`DeferredWakes`]): it would start the very pass this thread is about to run. The deferred
//! wake-up is made when the scope ends (when no pass ran here, the flusher takes the logs as
//! before), and before any blocking wait for the flusher inside it (`Log::wait_durable`).

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{take_free, Flusher, Gate};
use crate::file_io::FileIo;

/// Most passes one call of [`Flusher::pass_here`] runs back to back: its own, and one over
/// what was queued meanwhile. Bounded so an I/O-pool thread under a steady stream of
/// appends returns to the pool (the flusher threads take over from there).
pub const INLINE_PASSES_MAX: usize = 2;

/// The flusher whose wake-ups this thread defers, and whether one was deferred.
struct Deferred {
    flusher: Arc<Flusher>,
    pending: bool,
}

thread_local! {
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// While alive, appends on this thread queue their logs on `flusher` without waking its
/// threads; dropping it wakes one if a log is still queued. Drop it on the thread that began
/// it (the broker's I/O-pool job does). Scopes do not nest: a guard begun inside another does
/// nothing.
#[must_use = "wake-ups are deferred only while the guard lives"]
pub struct DeferredWakes {
    /// The flusher whose wake-ups this guard defers; `None` for a nested guard.
    flusher: Option<Arc<Flusher>>,
}

impl DeferredWakes {
    pub(crate) fn begin(flusher: &Arc<Flusher>) -> DeferredWakes {
        let active = DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_some() {
                return false;
            }
            *d = Some(Deferred {
                flusher: Arc::clone(flusher),
                pending: false,
            });
            true
        });
        DeferredWakes {
            flusher: active.then(|| Arc::clone(flusher)),
        }
    }
}

impl Drop for DeferredWakes {
    fn drop(&mut self) {
        let Some(flusher) = self.flusher.take() else {
            return;
        };
        // Ends this thread's deferral if it is this guard's (dropped elsewhere, the thread's
        // own is left alone), and wakes a thread whether or not a wake-up was recorded: a
        // check of the queue costs one lock, a lost wake-up a stuck log.
        DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            if d.as_ref()
                .is_some_and(|deferred| Arc::ptr_eq(&deferred.flusher, &flusher))
            {
                *d = None;
            }
        });
        flusher.wake_if_queued();
    }
}

/// Called by `Flusher::enqueue` after queuing a log: true when this thread defers `flusher`'s
/// wake-up (the caller then does not wake a thread).
pub(super) fn defer_wake(flusher: &Flusher) -> bool {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(deferred) if std::ptr::eq(Arc::as_ptr(&deferred.flusher), flusher) => {
            deferred.pending = true;
            true
        }
        _ => false,
    })
}

/// Makes the wake-up this thread deferred now (before it blocks waiting for a flusher
/// thread, which would otherwise never come).
pub(crate) fn wake_deferred() {
    let flusher = DEFERRED.with(|d| {
        d.borrow_mut().as_mut().and_then(|deferred| {
            let pending = std::mem::take(&mut deferred.pending);
            pending.then(|| Arc::clone(&deferred.flusher))
        })
    });
    if let Some(flusher) = flusher {
        flusher.wake_if_queued();
    }
}

impl Flusher {
    /// Wakes one flusher thread if a log is queued; every thread once the flusher is
    /// stopping (each must see the queue drained to end).
    pub(crate) fn wake_if_queued(&self) {
        let (queued, stopped) = {
            let queue = self.queue.lock();
            (!queue.logs.is_empty(), queue.stopped)
        };
        if stopped {
            self.wake.notify_all();
        } else if queued {
            self.wake.notify_one();
        }
    }

    /// Runs a pass on the calling thread, over every log queued, if no pass is running, the
    /// threads are up, and no queued log's last sync was slow; then, while logs were queued
    /// during it and the same holds, up to [`INLINE_PASSES_MAX`] passes in all. Returns whether
    /// it ran one. Blocks for the passes' syncs.
    pub(crate) fn pass_here(self: &Arc<Self>, io: &dyn FileIo) -> bool {
        let mut queue = self.queue.lock();
        let mut ran = 0;
        let mut panicked = None;
        // Bounded: at most INLINE_PASSES_MAX iterations.
        while ran < INLINE_PASSES_MAX {
            // The flusher's own rule for a slow log (`Flusher::pass`).
            let slow = queue.file_history.straggler_after();
            let slow_nanos = u64::try_from(slow.as_nanos()).unwrap_or(u64::MAX);
            if queue.stopped
                || !self.running.load(Ordering::Acquire)
                || !queue.running.is_empty()
                || queue.logs.is_empty()
                || queue
                    .logs
                    .iter()
                    .any(|log| log.last_sync_nanos() >= slow_nanos)
            {
                break;
            }
            let logs = take_free(&mut queue.logs);
            if logs.is_empty() {
                break;
            }
            let (alone, thresholds, pass) = self.begin_pass(&mut queue);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                parking_lot::MutexGuard::unlocked(&mut queue, || {
                    let gates: Vec<Gate> = logs.into_iter().map(Gate).collect();
                    self.pass(io, gates, alone, thresholds, pass);
                });
            }));
            self.end_pass(&mut queue, pass);
            ran += 1;
            if let Err(panic) = outcome {
                panicked = Some(panic);
                break;
            }
            // Logs queued during this pass (appends that found it running) go in the next
            // one, run here at once under the same lock: handing them to a flusher thread
            // costs its wake-up (the gate release woke it, it found this pass running and
            // went back to waiting), which on a loaded 2-core machine is scheduling delay
            // on top of a sync.
        }
        if ran == 0 {
            return false;
        }
        // Logs still queued: a flusher thread found a pass running and waits for its end (or
        // the straggler delay); wake one to take them now.
        let (more, stopped) = (!queue.logs.is_empty(), queue.stopped);
        drop(queue);
        if stopped {
            self.wake.notify_all();
        } else if more {
            self.wake.notify_one();
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        true
    }
}
