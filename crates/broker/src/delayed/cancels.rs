//! Pending cancellations of one delay store (`rill-delay-cancel`).
//!
//! A cancel record names a `rill-delay-id`; it cancels every waiting record of its partition
//! with that id stored before it (a lower delay log offset). The deliverer checks each record
//! it is about to deliver against this set and skips cancelled ones (they count as delivered:
//! the cursor passes them). A cancel is pending while a record it could match may still wait,
//! that is while the lowest waiting delay log offset is below it; then it is dropped.
//!
//! The set is derived state: the cancel records stay in the delay log at least as long as
//! they are pending (the log start never passes the lowest waiting offset), and the first
//! scan after a restart re-reads them. Memory is bounded: at most `capacity` ids of at most
//! [`super::headers::ID_MAX_BYTES`] bytes; a cancel beyond that is refused at produce.
//!
//! Pure state, no I/O: the store calls it under its index lock.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct Cancels {
    /// Id → delay log offset of its latest cancel record.
    by_id: HashMap<Vec<u8>, i64>,
    /// The same entries by offset (an id cancelled twice appears twice; the older entry is
    /// stale once `by_id` points at the newer one), to drop them in offset order.
    by_offset: BTreeMap<i64, Vec<u8>>,
    capacity: usize,
    /// Records skipped because they were cancelled (a counter for /metrics).
    skipped_total: u64,
}

/// Refused: more pending cancels than the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{capacity} cancels are pending in this partition (rill.delivery.cancel.max.pending); retry when earlier records are delivered")]
pub struct Full {
    pub capacity: usize,
}

impl Cancels {
    pub fn new(capacity: usize) -> Cancels {
        assert!(capacity > 0, "at least one pending cancel");
        Cancels {
            by_id: HashMap::new(),
            by_offset: BTreeMap::new(),
            capacity,
            skipped_total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped_total
    }

    /// Whether `count` more distinct ids fit (checked before the append, so a refused
    /// request writes nothing).
    pub fn check_room(&self, ids: &[&[u8]]) -> Result<(), Full> {
        let new: std::collections::HashSet<&[u8]> = ids
            .iter()
            .copied()
            .filter(|id| !self.by_id.contains_key(*id))
            .collect();
        let new = new.len();
        if self.by_id.len() + new > self.capacity {
            return Err(Full {
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Records a cancel of `id` stored at delay log offset `offset` (at produce, or found by
    /// the first scan after a restart; the same record twice changes nothing).
    pub fn insert(&mut self, id: &[u8], offset: i64) {
        let latest = self.by_id.entry(id.to_vec()).or_insert(offset);
        *latest = (*latest).max(offset);
        self.by_offset.insert(offset, id.to_vec());
        debug_assert!(self.by_offset.len() >= self.by_id.len());
    }

    /// Whether the record with `id` at delay log offset `record_offset` is cancelled.
    pub fn cancels(&self, id: Option<&[u8]>, record_offset: i64) -> bool {
        id.and_then(|id| self.by_id.get(id))
            .is_some_and(|&cancel| cancel > record_offset)
    }

    /// Counts records the deliverer skipped.
    pub fn skipped(&mut self, count: u64) {
        self.skipped_total += count;
    }

    /// Drops the cancels below `lowest_waiting`: no record they could match still waits.
    pub fn drop_below(&mut self, lowest_waiting: i64) {
        // Bounded by the entries held.
        while let Some(entry) = self.by_offset.first_entry() {
            if *entry.key() >= lowest_waiting {
                break;
            }
            let (offset, id) = entry.remove_entry();
            if self.by_id.get(&id) == Some(&offset) {
                self.by_id.remove(&id);
            }
        }
        debug_assert!(self.by_id.values().all(|&o| o >= lowest_waiting));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_matches_earlier_records_with_its_id_only() {
        let mut c = Cancels::new(4);
        c.insert(b"a", 10);
        assert!(c.cancels(Some(b"a"), 9));
        assert!(!c.cancels(Some(b"a"), 10));
        assert!(
            !c.cancels(Some(b"a"), 11),
            "a later record with the id stays"
        );
        assert!(!c.cancels(Some(b"b"), 1));
        assert!(!c.cancels(None, 1));
    }

    #[test]
    fn cancels_are_dropped_once_nothing_below_them_waits() {
        let mut c = Cancels::new(4);
        c.insert(b"a", 10);
        c.insert(b"b", 20);
        c.insert(b"a", 30);
        c.insert(b"a", 30);
        assert_eq!(c.len(), 2);
        c.drop_below(15);
        assert!(c.cancels(Some(b"a"), 25), "the newer cancel of a stays");
        c.drop_below(31);
        assert!(c.is_empty());
        assert!(!c.cancels(Some(b"a"), 25));
    }

    #[test]
    fn room_is_bounded_by_distinct_ids() {
        let mut c = Cancels::new(2);
        c.insert(b"a", 1);
        assert_eq!(c.check_room(&[b"a", b"b"]), Ok(()));
        assert_eq!(c.check_room(&[b"b", b"c"]), Err(Full { capacity: 2 }));
        c.insert(b"b", 2);
        assert_eq!(c.check_room(&[b"a"]), Ok(()));
        assert_eq!(c.check_room(&[b"c"]), Err(Full { capacity: 2 }));
    }
}
