//! The cleaner's key → latest offset map (Kafka's `SkimpyOffsetMap`), bounded by
//! `log.cleaner.dedupe.buffer.size`. Kafka keeps a 16-byte MD5 per key and accepts the rare
//! collision; this map keeps the keys themselves, so two keys never share an entry, and counts
//! their bytes plus a fixed per-entry overhead against the bound. A log whose dirty part has
//! more distinct key bytes than the map holds is cleaned in several passes.

use std::collections::HashMap;

/// Bytes charged per entry besides the key: the offset, the boxed slice's pointer and length,
/// and the hash table's slot and control byte, rounded up.
pub const ENTRY_OVERHEAD_BYTES: usize = 48;

#[derive(Debug)]
pub struct OffsetMap {
    map: HashMap<Box<[u8]>, i64>,
    bytes_used: usize,
    capacity_bytes: usize,
}

impl OffsetMap {
    pub fn new(capacity_bytes: usize) -> Self {
        OffsetMap {
            map: HashMap::new(),
            bytes_used: 0,
            capacity_bytes,
        }
    }

    /// Records `offset` as the latest for each key, all or nothing: if the keys not yet in the
    /// map would take it past its bound, nothing is inserted and `false` is returned. Offsets
    /// must come in increasing order (the log's).
    pub fn put_all(&mut self, entries: &[(&[u8], i64)]) -> bool {
        let mut new_keys: Vec<&[u8]> = entries
            .iter()
            .map(|&(k, _)| k)
            .filter(|k| !self.map.contains_key(*k))
            .collect();
        new_keys.sort_unstable();
        new_keys.dedup();
        let extra: usize = new_keys
            .iter()
            .map(|k| k.len() + ENTRY_OVERHEAD_BYTES)
            .sum();
        if self.bytes_used + extra > self.capacity_bytes {
            return false;
        }
        self.bytes_used += extra;
        for &(key, offset) in entries {
            match self.map.get_mut(key) {
                Some(o) => {
                    debug_assert!(*o < offset);
                    *o = offset;
                }
                None => {
                    self.map.insert(key.into(), offset);
                }
            }
        }
        true
    }

    /// The latest offset seen for `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.map.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes charged against the bound so far.
    pub fn bytes_used(&self) -> usize {
        self.bytes_used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_and_its_bound() {
        let mut m = OffsetMap::new(2 * (1 + ENTRY_OVERHEAD_BYTES));
        assert!(m.put_all(&[(b"a", 0), (b"b", 1), (b"a", 2)]));
        assert_eq!((m.get(b"a"), m.get(b"b"), m.len()), (Some(2), Some(1), 2));
        // Updates of known keys cost nothing; a new key does not fit: nothing is inserted.
        assert!(m.put_all(&[(b"b", 3)]));
        assert!(!m.put_all(&[(b"a", 4), (b"c", 5)]));
        assert_eq!((m.get(b"a"), m.get(b"c")), (Some(2), None));
        assert_eq!(m.bytes_used(), 2 * (1 + ENTRY_OVERHEAD_BYTES));
    }
}
