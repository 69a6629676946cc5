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

use std::collections::{BTreeMap, BTreeSet};

use super::cancels::Cancels;

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
    /// The lowest delay log offset of the keys above `keys` (left on disk).
    pub disk_min_offset: Option<i64>,
    /// Cancel records read (id, delay log offset), by the first scan after opening only.
    pub cancels: Vec<(Vec<u8>, i64)>,
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
    /// Batch offsets of the keys in `near` and of those taken for delivery and not yet
    /// delivered or restored (a multiset: offset → keys), for [`DelayIndex::lowest_waiting`].
    pending: BTreeMap<i64, u32>,
    /// No waiting key above the horizon has a lower batch offset (`None`: there is none).
    disk_min_offset: Option<i64>,
    /// Pending cancellations, changed under the same lock as the keys.
    pub cancels: Cancels,
    /// Whether a scan has read the cancel records of the log (once after opening).
    cancels_loaded: bool,
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
    pub fn new(
        capacity: usize,
        cursor: Option<Key>,
        scan_from: i64,
        cancels_capacity: usize,
    ) -> DelayIndex {
        assert!(capacity > 0, "the near window holds at least one key");
        DelayIndex {
            pending: BTreeMap::new(),
            disk_min_offset: Some(scan_from),
            cancels: Cancels::new(cancels_capacity),
            cancels_loaded: false,
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

    /// The lowest delay log offset a waiting record may have (`None`: no record waits).
    /// Everything below it was delivered or cancelled: the delay log may drop it.
    pub fn lowest_waiting(&self) -> Option<i64> {
        let near = self.pending.first_key_value().map(|(&o, _)| o);
        match (near, self.disk_min_offset) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops the cancels no waiting record can match (all of them when nothing waits: a
    /// record stored later has a higher offset than any cancel).
    pub fn drop_moot_cancels(&mut self) {
        let lowest = self.lowest_waiting().unwrap_or(i64::MAX);
        self.cancels.drop_below(lowest);
    }

    fn pend(&mut self, offset: i64) {
        *self.pending.entry(offset).or_insert(0) += 1;
    }

    fn unpend(&mut self, offset: i64) {
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.pending.entry(offset) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        } else {
            debug_assert!(false, "offset {offset} was not pending");
        }
    }

    fn left_on_disk(&mut self, key: Key) {
        self.disk_min_offset = Some(
            self.disk_min_offset
                .map_or(key.offset, |m| m.min(key.offset)),
        );
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
            self.left_on_disk(key);
            return false; // on disk only; a later page-in finds it
        }
        if self.near.insert(key) {
            self.pend(key.offset);
        }
        self.trim();
        self.near.first() == Some(&key)
    }

    /// Keeps `near` within capacity by moving the horizon down, and drops keys above the
    /// horizon (a key delivered before a smaller one still on disk would move the cursor past
    /// that one: a loss).
    fn trim(&mut self) {
        if let Some(h) = self.horizon {
            while self.near.last().is_some_and(|&k| k > h) {
                let k = self.near.pop_last().expect("last");
                self.unpend(k.offset);
                self.left_on_disk(k);
            }
        }
        while self.near.len() > self.capacity {
            let k = self.near.pop_last().expect("over capacity");
            self.unpend(k.offset);
            self.left_on_disk(k);
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
            // Still pending: take_due left its offset counted.
            let fresh = self.near.insert(k);
            debug_assert!(fresh, "{k:?} restored twice");
        }
        self.trim();
    }

    /// Records the delivery of `keys` (taken in order; the last is the new cursor).
    pub fn delivered(&mut self, keys: &[Key]) {
        let Some(&last) = keys.last() else { return };
        debug_assert!(self.cursor.is_none_or(|c| last > c));
        self.cursor = Some(last);
        for k in keys {
            self.unpend(k.offset);
        }
        self.drop_moot_cancels();
        let n = keys.len() as u64;
        self.waiting = self.waiting.saturating_sub(n);
        self.delivered_during_scan += n;
    }

    /// Drops the in-memory window (keys taken by a delivery that never reported back): the
    /// next page-in reloads every key above the cursor from the log.
    pub fn forget_memory(&mut self) {
        self.disk_min_offset = self.lowest_waiting();
        self.pending.clear();
        self.near.clear();
        self.horizon = Some(self.cursor.unwrap_or(BOTTOM));
    }

    /// Marks the start of a scan (under the store's lock). Returns whether the scan is to
    /// collect the cancel records it passes (the first scan after the store opened: at run
    /// time the produce path records cancels itself).
    pub fn scan_started(&mut self) -> bool {
        self.delivered_during_scan = 0;
        !self.cancels_loaded
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
        // The scan read the whole log to its end under this lock: it knows every waiting key.
        // No key is taken while a scan runs (the deliverer runs both in turn).
        self.pending.clear();
        let offsets: Vec<i64> = self.near.iter().map(|k| k.offset).collect();
        for o in offsets {
            self.pend(o);
        }
        self.disk_min_offset = found.disk_min_offset;
        self.trim();
        for (id, offset) in &found.cancels {
            self.cancels.insert(id, *offset);
        }
        self.cancels_loaded = true;
        self.drop_moot_cancels();
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
    /// The lowest batch offset of the keys not kept (all above the kept ones).
    dropped_min_offset: Option<i64>,
}

impl Smallest {
    pub fn new(capacity: usize) -> Smallest {
        Smallest {
            heap: std::collections::BinaryHeap::with_capacity(capacity.min(1 << 16)),
            capacity,
            truncated: false,
            dropped_min_offset: None,
        }
    }

    pub fn offer(&mut self, key: Key) {
        if self.heap.len() < self.capacity {
            self.heap.push(key);
            return;
        }
        self.truncated = true;
        let mut dropped = key;
        if let Some(mut top) = self.heap.peek_mut() {
            if key < *top {
                dropped = std::mem::replace(&mut *top, key);
            }
        }
        let o = dropped.offset;
        self.dropped_min_offset = Some(self.dropped_min_offset.map_or(o, |m| m.min(o)));
    }

    pub fn into_parts(self) -> (Vec<Key>, bool) {
        (self.heap.into_vec(), self.truncated)
    }

    /// The lowest batch offset of the keys offered and not kept.
    pub fn dropped_min_offset(&self) -> Option<i64> {
        self.dropped_min_offset
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
        let mut index = DelayIndex::new(capacity, None, 0, 8);
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
        let mut index = DelayIndex::new(2, Some(key(5, 0)), 0, 8);
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
            disk_min_offset: Some(1),
            cancels: vec![(b"x".to_vec(), 3)],
        });
        assert_eq!(index.lowest_waiting(), Some(1));
        assert!(index.cancels.cancels(Some(b"x"), 2));
        assert_eq!(index.take_due(i64::MAX, 10), vec![key(6, 4), key(7, 2)]);
        assert!(index.needs_page_in());
        assert_eq!(index.waiting(), 4, "delivered() was not called");
    }

    #[test]
    fn the_lowest_waiting_offset_follows_deliveries_and_the_window() {
        let mut index = loaded(2);
        assert_eq!(index.lowest_waiting(), None);
        index.insert(key(30, 1));
        index.insert(key(10, 2));
        index.insert(key(20, 3)); // pushes (30, 1) to disk
        assert_eq!(index.in_memory(), 2);
        assert_eq!(
            index.lowest_waiting(),
            Some(1),
            "a key on disk still counts"
        );
        let due = index.take_due(20, 10);
        assert_eq!(index.lowest_waiting(), Some(1));
        index.restore(&due[1..]);
        index.delivered(&due[..1]);
        assert_eq!(index.lowest_waiting(), Some(1));
        index.insert(key(40, 4));
        let due = index.take_due(20, 10);
        index.delivered(&due);
        // (30, 1) waits on disk: nothing below offset 1 may be dropped, whatever was delivered.
        assert_eq!(index.lowest_waiting(), Some(1));
        index.scan_started();
        index.page_in(PageIn {
            keys: vec![key(30, 1), key(40, 4)],
            truncated: false,
            waiting: 2,
            min_offset: Some(1),
            disk_min_offset: None,
            cancels: Vec::new(),
        });
        let due = index.take_due(35, 10);
        assert_eq!(due, vec![key(30, 1)]);
        index.delivered(&due);
        assert_eq!(index.lowest_waiting(), Some(4));
        let due = index.take_due(40, 10);
        index.delivered(&due);
        assert_eq!(index.lowest_waiting(), None);
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
