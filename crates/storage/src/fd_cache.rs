//! A bounded cache of open files shared by all logs of a data directory, so that 10 000
//! partitions with several segments each do not exhaust the file descriptor limit.
//!
//! Files are handed out as `Arc<IoFile>`: an evicted file stays open until its last user (a
//! fetch being sent, say) drops it, so eviction never breaks a read in flight.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::file_io::{FileIo, IoFile};

/// Identifies one file: a segment id and which of its files.
pub type FileKey = (u64, FileKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Log,
    OffsetIndex,
    TimeIndex,
    TxnIndex,
}

#[derive(Debug, Default)]
struct Lru {
    files: HashMap<FileKey, (Arc<IoFile>, u64)>,
    by_use: BTreeMap<u64, FileKey>,
    tick: u64,
}

/// Least-recently-used cache of open files with a fixed capacity.
#[derive(Debug)]
pub struct FdCache {
    capacity: usize,
    lru: Mutex<Lru>,
    next_segment_id: AtomicU64,
    opens: AtomicU64,
}

impl FdCache {
    pub fn new(capacity: usize) -> FdCache {
        assert!(
            capacity >= 3,
            "a cache must hold at least one segment's files"
        );
        FdCache {
            capacity,
            lru: Mutex::new(Lru::default()),
            next_segment_id: AtomicU64::new(1),
            opens: AtomicU64::new(0),
        }
    }

    /// A fresh id for a segment's cache keys.
    pub fn segment_id(&self) -> u64 {
        self.next_segment_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How many times a file was opened (tests check that eviction happened).
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.lru.lock().files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the cached file for `key`, opening `path` if needed (and evicting the least
    /// recently used file when full). The open happens under the cache lock: opening a file
    /// is a few microseconds and keeps two callers from opening the same file twice.
    pub fn get(
        &self,
        key: FileKey,
        io: &dyn FileIo,
        path: &Path,
        create: bool,
    ) -> io::Result<Arc<IoFile>> {
        let mut lru = self.lru.lock();
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((file, used)) = lru.files.get_mut(&key) {
            let file = file.clone();
            let old = std::mem::replace(used, tick);
            lru.by_use.remove(&old);
            lru.by_use.insert(tick, key);
            return Ok(file);
        }
        let file = Arc::new(io.open(path, create)?);
        self.opens.fetch_add(1, Ordering::Relaxed);
        // Bounded: removes at most the entries above capacity.
        while lru.files.len() >= self.capacity {
            let (&oldest, &victim) = lru
                .by_use
                .iter()
                .next()
                .expect("non-empty when files is full");
            lru.by_use.remove(&oldest);
            lru.files.remove(&victim);
        }
        lru.files.insert(key, (file.clone(), tick));
        lru.by_use.insert(tick, key);
        debug_assert_eq!(lru.files.len(), lru.by_use.len());
        Ok(file)
    }

    /// Drops the cached handles of a segment (it was deleted or renamed).
    pub fn forget(&self, segment_id: u64) {
        let mut lru = self.lru.lock();
        for kind in [
            FileKind::Log,
            FileKind::OffsetIndex,
            FileKind::TimeIndex,
            FileKind::TxnIndex,
        ] {
            if let Some((_, used)) = lru.files.remove(&(segment_id, kind)) {
                lru.by_use.remove(&used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_io::OsIo;

    #[test]
    fn evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FdCache::new(3);
        let path = |i: u64| dir.path().join(format!("{i}"));
        for i in 0..3 {
            cache
                .get((i, FileKind::Log), &OsIo, &path(i), true)
                .unwrap();
        }
        cache
            .get((0, FileKind::Log), &OsIo, &path(0), true)
            .unwrap(); // 0 is now the newest
        cache
            .get((3, FileKind::Log), &OsIo, &path(3), true)
            .unwrap(); // evicts 1
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.opens(), 4);
        cache
            .get((0, FileKind::Log), &OsIo, &path(0), true)
            .unwrap();
        assert_eq!(cache.opens(), 4, "0 stayed cached");
        cache
            .get((1, FileKind::Log), &OsIo, &path(1), true)
            .unwrap();
        assert_eq!(cache.opens(), 5, "1 was evicted and reopened");
        cache.forget(1);
        assert_eq!(cache.len(), 2);
    }
}
