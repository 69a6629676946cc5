//! The in-memory part of a delay store: the near window of waiting records, by due time.
//!
//! Every waiting record has a [`Key`] (due time, delay log offset of its batch, index in the
//! batch); delivery goes in key order, so "delivered" is one cursor: every key at or below it
//! was delivered. The index keeps at most `capacity` keys in memory: exactly the waiting keys
//! at or below `horizon`. Keys above the horizon live only in the delay log; when the window
//! runs dry, a scan of the log ([`super::scan`]) pages in the next `capacity` keys. Memory is
//! therefore bounded by `capacity` whatever the number of waiting records.
//!
//! Pure state, no I/O: the store calls it under its lock.

use std::collections::BTreeSet;

/// One waiting record, ordered by due time and then by position in the delay log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub due_ms: i64,
    /// Base offset of the record's batch in the delay log.
    pub offset: i64,
    /// The record's index in that batch.
    pub index: u32,
}

/// What a scan of the delay log found above a cursor.
#[derive(Debug, Default)]
pub struct PageIn {
    /// The smallest keys above the cursor, at most the index's capacity, any order.
    pub keys: Vec<Key>,
    /// Whether more keys than `keys` holds were above the cursor.
    pub truncated: bool,
    /// How many keys were above the cursor.
    pub waiting: u64,
    /// The lowest delay log offset of those keys (where the next scan may start).
    pub min_offset: Option<i64>,
}

#[derive(Debug)]
pub struct DelayIndex {
    near: BTreeSet<Key>,
    capacity: usize,
    /// `None`: every waiting key is in `near`. `Some(h)`: `near` holds exactly the waiting
    /// keys `<= h`; greater ones must be paged in from the log.
    horizon: Option<Key>,
    /// The last key delivered (durably or not: delivery is idempotent past a crash).
    cursor: Option<Key>,
    /// Waiting records, in memory or not.
    waiting: u64,
    /// Deliveries since the running scan started (subtracted from its count).
    delivered_during_scan: u64,
    /// Where the next scan starts: no waiting key has a lower offset.
    scan_from: i64,
}

/// The lowest possible key: a horizon below every record (nothing in memory yet).
const BOTTOM: Key = Key {
    due_ms: i64::MIN,
    offset: i64::MIN,
    index: 0,
};

impl DelayIndex {
    /// An index that knows nothing in memory yet: everything above `cursor` is paged in by
    /// the first scan, which starts at `scan_from` (the log start after a restart).
    pub fn new(capacity: usize, cursor: Option<Key>, scan_from: i64) -> DelayIndex {
        assert!(capacity > 0, "the near window holds at least one key");
        DelayIndex {
            near: BTreeSet::new(),
            capacity,
            horizon: Some(cursor.unwrap_or(BOTTOM)),
            cursor,
            waiting: 0,
            delivered_during_scan: 0,
            scan_from,
        }
    }

    pub fn cursor(&self) -> Option<Key> {
        self.cursor
    }

    pub fn waiting(&self) -> u64 {
        self.waiting
    }

    pub fn in_memory(&self) -> usize {
        self.near.len()
    }

    pub fn scan_from(&self) -> i64 {
        self.scan_from
    }

    /// The earliest due time in memory (what the deliverer sleeps until).
    pub fn next_due_ms(&self) -> Option<i64> {
        self.near.first().map(|k| k.due_ms)
    }

    /// Whether the window is empty while the log may hold waiting keys above it.
    pub fn needs_page_in(&self) -> bool {
        self.near.is_empty() && self.horizon.is_some()
    }

    /// Adds a key just written to the delay log. Returns whether it became the earliest.
    pub fn insert(&mut self, key: Key) -> bool {
        debug_assert!(
            self.cursor.is_none_or(|c| key > c),
            "{key:?} at or below the cursor"
        );
        self.waiting += 1;
        if self.horizon.is_some_and(|h| key > h) {
            return false; // on disk only; a later page-in finds it
        }
        self.near.insert(key);
        self.trim();
        self.near.first() == Some(&key)
    }

    /// Keeps `near` within capacity by moving the horizon down, and drops keys above the
    /// horizon (a key delivered before a smaller one still on disk would move the cursor past
    /// that one: a loss).
    fn trim(&mut self) {
        if let Some(h) = self.horizon {
            while self.near.last().is_some_and(|&k| k > h) {
                self.near.pop_last();
            }
        }
        while self.near.len() > self.capacity {
            self.near.pop_last();
            self.horizon = self.near.last().copied().or(Some(BOTTOM));
        }
        debug_assert!(self.near.len() <= self.capacity);
    }

    /// Removes up to `max` keys due at `now_ms`, in key order.
    pub fn take_due(&mut self, now_ms: i64, max: usize) -> Vec<Key> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.near.first() {
                Some(k) if k.due_ms <= now_ms => out.push(self.near.pop_first().expect("first")),
                _ => break,
            }
        }
        out
    }

    /// Puts back keys taken by [`DelayIndex::take_due`] whose delivery failed.
    pub fn restore(&mut self, keys: &[Key]) {
        for &k in keys {
            self.near.insert(k);
        }
        self.trim();
    }

    /// Records the delivery of `keys` (taken in order; the last is the new cursor).
    pub fn delivered(&mut self, keys: &[Key]) {
        let Some(&last) = keys.last() else { return };
        debug_assert!(self.cursor.is_none_or(|c| last > c));
        self.cursor = Some(last);
        let n = keys.len() as u64;
        self.waiting = self.waiting.saturating_sub(n);
        self.delivered_during_scan += n;
    }

    /// Drops the in-memory window (keys taken by a delivery that never reported back): the
    /// next page-in reloads every key above the cursor from the log.
    pub fn forget_memory(&mut self) {
        self.near.clear();
        self.horizon = Some(self.cursor.unwrap_or(BOTTOM));
    }

    /// Marks the start of a scan (under the store's lock).
    pub fn scan_started(&mut self) {
        self.delivered_during_scan = 0;
    }

    /// Merges a scan's result (under the store's lock, the scan having read to the log's end
    /// under that same lock, so no key written since is missed).
    pub fn page_in(&mut self, found: PageIn) {
        assert!(found.keys.len() <= self.capacity);
        let cursor = self.cursor;
        let mut max_found = None;
        for k in found.keys {
            max_found = max_found.max(Some(k));
            if cursor.is_none_or(|c| k > c) {
                self.near.insert(k);
            }
        }
        self.horizon = if found.truncated { max_found } else { None };
        self.trim();
        self.waiting = found.waiting.saturating_sub(self.delivered_during_scan);
        if let Some(o) = found.min_offset {
            self.scan_from = self.scan_from.max(o);
        }
    }
}

/// Keeps the `capacity` smallest keys offered (a scan's selection): a bounded max-heap.
pub struct Smallest {
    heap: std::collections::BinaryHeap<Key>,
    capacity: usize,
    truncated: bool,
}

impl Smallest {
    pub fn new(capacity: usize) -> Smallest {
        Smallest {
            heap: std::collections::BinaryHeap::with_capacity(capacity.min(1 << 16)),
            capacity,
            truncated: false,
        }
    }

    pub fn offer(&mut self, key: Key) {
        if self.heap.len() < self.capacity {
            self.heap.push(key);
            return;
        }
        self.truncated = true;
        if let Some(mut top) = self.heap.peek_mut() {
            if key < *top {
                *top = key;
            }
        }
    }

    pub fn into_parts(self) -> (Vec<Key>, bool) {
        (self.heap.into_vec(), self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(due_ms: i64, offset: i64) -> Key {
        Key {
            due_ms,
            offset,
            index: 0,
        }
    }

    fn loaded(capacity: usize) -> DelayIndex {
        let mut index = DelayIndex::new(capacity, None, 0);
        index.scan_started();
        index.page_in(PageIn::default());
        index
    }

    #[test]
    fn delivers_in_due_order_and_moves_the_cursor() {
        let mut index = loaded(10);
        for (due, offset) in [(30, 0), (10, 1), (20, 2), (10, 3)] {
            index.insert(key(due, offset));
        }
        assert_eq!(index.next_due_ms(), Some(10));
        let due = index.take_due(20, 100);
        assert_eq!(due, vec![key(10, 1), key(10, 3), key(20, 2)]);
        index.delivered(&due);
        assert_eq!(index.cursor(), Some(key(20, 2)));
        assert_eq!(index.waiting(), 1);
        assert!(index.take_due(29, 100).is_empty());
    }

    #[test]
    fn memory_stays_within_capacity_and_far_keys_wait_for_a_page_in() {
        let mut index = loaded(3);
        for i in 0..10 {
            index.insert(key(100 - i, i));
        }
        assert_eq!(index.in_memory(), 3);
        assert_eq!(index.waiting(), 10);
        let due = index.take_due(i64::MAX, 100);
        assert_eq!(due, vec![key(91, 9), key(92, 8), key(93, 7)]);
        index.delivered(&due);
        assert!(index.needs_page_in());
        // A key below the horizon arriving now is kept; one above is left on disk.
        assert!(!index.insert(key(200, 10)));
        assert_eq!(index.in_memory(), 0);
    }

    #[test]
    fn a_page_in_keeps_the_smallest_keys_and_skips_delivered_ones() {
        let mut index = DelayIndex::new(2, Some(key(5, 0)), 0);
        assert!(index.needs_page_in());
        index.scan_started();
        let mut smallest = Smallest::new(2);
        for k in [key(9, 1), key(7, 2), key(8, 3), key(6, 4)] {
            smallest.offer(k);
        }
        let (keys, truncated) = smallest.into_parts();
        assert!(truncated);
        index.page_in(PageIn {
            keys,
            truncated,
            waiting: 4,
            min_offset: Some(1),
        });
        assert_eq!(index.take_due(i64::MAX, 10), vec![key(6, 4), key(7, 2)]);
        assert!(index.needs_page_in());
        assert_eq!(index.waiting(), 4, "delivered() was not called");
    }

    #[test]
    fn restore_puts_failed_deliveries_back_in_order() {
        let mut index = loaded(4);
        index.insert(key(1, 0));
        index.insert(key(2, 1));
        let due = index.take_due(10, 10);
        index.restore(&due);
        assert_eq!(index.take_due(10, 10), due);
    }
}
