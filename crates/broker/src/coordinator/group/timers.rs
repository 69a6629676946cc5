//! The group coordinator's deadlines (session expiry, join and sync deadlines, the initial
//! rebalance delay, pending member ids), kept earliest first so each fires at its time rather
//! than on a periodic sweep: a static member's session ends when it should, and a DeleteGroups
//! sent just after it sees the group empty, as on Kafka.
//!
//! One entry per group: the earliest deadline the group had when it was last changed. Deadlines
//! that move later (a heartbeat) need no entry change: the timer fires at the old time, finds
//! nothing due, and the group is scheduled again for its real next deadline. Deadlines that
//! move earlier replace the entry and wake the timer task.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Now, on the clock group deadlines are kept in: tokio's. In the broker it is
/// `std::time::Instant::now()`; on a runtime whose clock is paused (tokio's test-util, as the
/// `request` fuzz target runs the broker) it is the runtime's virtual time, so a session or
/// rebalance deadline passes when that clock reaches it, together with the timer task's sleep,
/// instead of the timer waking early in virtual time and spinning until the wall clock
/// catches up.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Past this many stale heap entries per live one, the heap is rebuilt from the live entries
/// (stale entries come from deadlines that moved earlier before the old one fired).
const HEAP_SLACK_FACTOR: usize = 2;
const HEAP_SLACK_MIN: usize = 1024;

#[derive(Default)]
struct Schedule {
    /// The deadline each group is scheduled for.
    by_group: HashMap<String, Instant>,
    /// The same deadlines, earliest first; entries that no longer match `by_group` are stale
    /// and skipped.
    heap: BinaryHeap<Reverse<(Instant, String)>>,
}

/// Deadlines of all groups; see the module doc.
#[derive(Default)]
pub struct GroupTimers {
    schedule: Mutex<Schedule>,
    /// Woken when a deadline earlier than every scheduled one appears.
    wake: Notify,
}

impl GroupTimers {
    /// Schedules `group_id` for `at` unless it is already scheduled at or before it.
    pub fn schedule(&self, group_id: &str, at: Instant) {
        let mut s = self.schedule.lock();
        let earliest_before = s.heap.peek().map(|Reverse((t, _))| *t);
        if s.by_group.get(group_id).is_some_and(|t| *t <= at) {
            return;
        }
        s.by_group.insert(group_id.to_string(), at);
        s.heap.push(Reverse((at, group_id.to_string())));
        if s.heap.len() > HEAP_SLACK_MIN.max(HEAP_SLACK_FACTOR * s.by_group.len()) {
            let live: Vec<_> = s
                .by_group
                .iter()
                .map(|(g, t)| Reverse((*t, g.clone())))
                .collect();
            s.heap = BinaryHeap::from(live);
        }
        drop(s);
        if earliest_before.is_none_or(|t| at < t) {
            self.wake.notify_one();
        }
    }

    /// The earliest scheduled deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut s = self.schedule.lock();
        Self::drop_stale(&mut s);
        s.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Removes and returns the groups whose deadline is at or before `now`, at most `max`.
    pub fn take_due(&self, now: Instant, max: usize) -> Vec<String> {
        let mut s = self.schedule.lock();
        let mut due = Vec::new();
        while due.len() < max {
            Self::drop_stale(&mut s);
            match s.heap.peek() {
                Some(Reverse((t, _))) if *t <= now => {
                    let Reverse((_, group)) = s.heap.pop().expect("peeked");
                    s.by_group.remove(&group);
                    due.push(group);
                }
                _ => break,
            }
        }
        due
    }

    /// Waits until woken by an earlier deadline (or a spurious wake-up).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    fn drop_stale(s: &mut Schedule) {
        while let Some(Reverse((t, g))) = s.heap.peek() {
            if s.by_group.get(g) == Some(t) {
                return;
            }
            s.heap.pop();
        }
    }

    /// Scheduled groups (tests, metrics).
    pub fn len(&self) -> usize {
        self.schedule.lock().by_group.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_deadline_wins_and_due_groups_come_out_once() {
        let timers = GroupTimers::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        timers.schedule("a", ms(50));
        timers.schedule("b", ms(20));
        timers.schedule("a", ms(80)); // later: ignored, a keeps 50
        assert_eq!(timers.next_deadline(), Some(ms(20)));
        timers.schedule("a", ms(10)); // earlier: replaces
        assert_eq!(timers.next_deadline(), Some(ms(10)));
        assert_eq!(timers.take_due(ms(5), 10), Vec::<String>::new());
        assert_eq!(timers.take_due(ms(20), 10), vec!["a", "b"]);
        assert!(timers.is_empty());
        assert_eq!(
            timers.next_deadline(),
            None,
            "the stale a@50 entry is gone too"
        );
    }

    #[test]
    fn the_heap_stays_bounded_when_deadlines_keep_moving_earlier() {
        let timers = GroupTimers::default();
        let t0 = Instant::now() + Duration::from_secs(3600);
        for i in 0..10_000u64 {
            timers.schedule("g", t0 - Duration::from_millis(i));
        }
        let heap_len = timers.schedule.lock().heap.len();
        assert!(
            heap_len <= HEAP_SLACK_MIN + 1,
            "{heap_len} entries for one group"
        );
        assert_eq!(timers.take_due(t0, 10), vec!["g"]);
    }

    /// The `request` fuzz target runs the broker on a paused clock: group deadlines must
    /// follow it (on the runtime and on its blocking threads, where group ticks run), or the
    /// timer task wakes at each deadline in virtual time and spins until the wall clock
    /// reaches it.
    #[test]
    fn now_follows_a_paused_runtime_clock() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let before = now();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let on_runtime = now() - before;
            assert!(on_runtime >= Duration::from_secs(3600), "{on_runtime:?}");
            let on_blocking = tokio::task::spawn_blocking(now).await.unwrap() - before;
            assert!(on_blocking >= Duration::from_secs(3600), "{on_blocking:?}");
        });
    }

    #[test]
    fn take_due_is_bounded() {
        let timers = GroupTimers::default();
        let now = Instant::now();
        for i in 0..10 {
            timers.schedule(&format!("g{i}"), now);
        }
        assert_eq!(timers.take_due(now, 4).len(), 4);
        assert_eq!(timers.len(), 6);
    }
}
