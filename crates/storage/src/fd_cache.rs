//! A bounded cache of open files shared by all logs of a data directory, so that 10 000
//! partitions with several segments each do not exhaust the file descriptor limit.
//!
//! Files are handed out as `Arc<IoFile>`: an evicted file stays open until its last user (a
//! fetch being sent, say) drops it, so eviction never breaks a read in flight.
//!
//! Active segments own their `.log` write descriptor outside the LRU (an fsync must run on
//! the descriptor that wrote: fsyncgate), but those count in the same budget: each
//! [`OwnedFile`] is one slot, and the LRU shrinks to make room for them, so open logs plus
//! cached files stay within `capacity` (as long as the owned ones alone fit; idle logs whose
//! data is synced give theirs back, `Log::release_idle_write_file`).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

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
pub struct FdCache {
    capacity: usize,
    lru: Mutex<Lru>,
    next_segment_id: AtomicU64,
    opens: AtomicU64,
    /// Descriptors owned outside the LRU ([`OwnedFile`]s alive), counted in `capacity`.
    owned: AtomicUsize,
    /// Whoever may own a write descriptor (every open log), to ask idle ones to give theirs
    /// back when owned descriptors crowd the budget.
    owners: Mutex<Vec<Weak<dyn IdleRelease>>>,
    /// Where the next pressure sweep starts in `owners`.
    sweep_hand: AtomicUsize,
}

/// An owner of write descriptors that can give its descriptor back when it is idle and
/// synced (a `Log`). Must never block: it is asked while another log holds its own lock.
pub trait IdleRelease: Send + Sync + std::fmt::Debug {
    /// Gives the descriptor back if idle and synced; whether it did.
    fn release_idle(&self) -> bool;
}

/// Descriptors one pressure sweep asks back at most, bounding its work.
pub const RELEASES_PER_SWEEP: usize = 256;

/// Owners one pressure sweep looks at, at most.
pub const OWNERS_PER_SWEEP: usize = 1024;

impl std::fmt::Debug for FdCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdCache")
            .field("capacity", &self.capacity)
            .field("owned", &self.owned())
            .finish_non_exhaustive()
    }
}

/// A descriptor owned outside the LRU (an active segment's write descriptor), holding one
/// slot of the cache's budget until dropped.
#[derive(Debug)]
pub struct OwnedFile {
    file: Arc<IoFile>,
    cache: Arc<FdCache>,
}

impl OwnedFile {
    pub fn file(&self) -> &Arc<IoFile> {
        &self.file
    }
}

impl Drop for OwnedFile {
    fn drop(&mut self) {
        self.cache.owned.fetch_sub(1, Ordering::Relaxed);
    }
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
            owned: AtomicUsize::new(0),
            owners: Mutex::new(Vec::new()),
            sweep_hand: AtomicUsize::new(0),
        }
    }

    /// Registers a possible owner of write descriptors (see [`FdCache::relieve_pressure`]).
    ///
    /// Forgets owners that are gone whenever the list is full, before it would grow: logs are
    /// opened and dropped for the life of the process (topics deleted and created, lazily
    /// opened logs), and each dead `Weak` keeps its log's allocation. Found by fuzzing, which
    /// grew the process by about a kilobyte per log opened. Leaving room for as many more as
    /// there are live owners keeps the cost O(1) per registration, amortized.
    pub fn register_owner(&self, owner: Weak<dyn IdleRelease>) {
        let mut owners = self.owners.lock();
        if owners.len() == owners.capacity() {
            owners.retain(|o| o.strong_count() > 0);
            let live = owners.len();
            owners.reserve(live.max(8));
            if owners.capacity() > 4 * live.max(8) {
                owners.shrink_to(2 * live.max(8));
            }
        }
        owners.push(owner);
    }

    /// Owners registered and not yet forgotten (live or not).
    #[cfg(test)]
    fn owner_entries(&self) -> usize {
        self.owners.lock().len()
    }

    /// When owned descriptors crowd the budget ([`FdCache::owned_pressure`]), asks idle
    /// owners to give theirs back, up to [`RELEASES_PER_SWEEP`], looking at no more than
    /// [`OWNERS_PER_SWEEP`] of them from where the last sweep stopped (a clock hand): every
    /// new owner calls this, and with 10 000 logs open a walk over all of them per call was
    /// the broker's top user function in issue 13's profile. Owners that are gone are skipped
    /// here and forgotten by [`FdCache::register_owner`]. Never waits for a lock, so it is safe
    /// under any log's lock (that log is simply skipped).
    pub fn relieve_pressure(&self) {
        if !self.owned_pressure() {
            return;
        }
        let Some(owners) = self.owners.try_lock() else {
            return;
        };
        let count = owners.len();
        if count == 0 {
            return;
        }
        let start = self.sweep_hand.load(Ordering::Relaxed) % count;
        let mut released = 0;
        let mut looked = 0;
        // Bounded by OWNERS_PER_SWEEP and the list's length.
        while looked < count.min(OWNERS_PER_SWEEP) && released < RELEASES_PER_SWEEP {
            let owner = &owners[(start + looked) % count];
            looked += 1;
            if owner.upgrade().is_some_and(|o| o.release_idle()) {
                released += 1;
            }
        }
        self.sweep_hand
            .store((start + looked) % count, Ordering::Relaxed);
    }

    /// The budget: cached plus owned descriptors.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Descriptors owned outside the LRU right now.
    pub fn owned(&self) -> usize {
        self.owned.load(Ordering::Relaxed)
    }

    /// True when owned descriptors take more than three quarters of the budget: idle logs
    /// should give theirs back so cached reads keep room. (Half was the line before issue 13:
    /// with the default budget of 15 000 descriptors, 10 000 partitions written at once were
    /// always past it, and every synced log gave its descriptor back between two appends,
    /// each append reopening one.)
    pub fn owned_pressure(&self) -> bool {
        self.owned() * 4 > self.capacity * 3
    }

    /// Takes one budget slot for `file`, owned outside the LRU, evicting cached files to make
    /// room for it.
    pub fn own(self: &Arc<Self>, file: Arc<IoFile>) -> OwnedFile {
        self.relieve_pressure();
        let owned = self.owned.fetch_add(1, Ordering::Relaxed) + 1;
        let mut lru = self.lru.lock();
        evict_to(&mut lru, self.capacity.saturating_sub(owned));
        OwnedFile {
            file,
            cache: Arc::clone(self),
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
        // Room for one more beside the owned descriptors (at least one cached file, so a read
        // works even when owned descriptors take the whole budget).
        let room = self.capacity.saturating_sub(self.owned()).max(1);
        evict_to(&mut lru, room - 1);
        let file = Arc::new(io.open(path, create)?);
        self.opens.fetch_add(1, Ordering::Relaxed);
        if key.1 == FileKind::Log {
            // Cached `.log` descriptors read old segments (fetches, the cleaner): no kernel
            // readahead on them. With it, the first batch header a catch-up fetch reads pulls
            // in up to `read_ahead_kb` (8 MiB on the benchmark machine) on the caller's
            // thread, polluting the cache and making the range look resident to the hot/cold
            // check. Advice only: a failure costs readahead, not correctness.
            crate::page_cache::no_readahead(file.file());
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

/// Evicts least recently used files until at most `keep` remain. Bounded: at most the
/// entries above `keep`.
fn evict_to(lru: &mut Lru, keep: usize) {
    while lru.files.len() > keep {
        let Some((&oldest, &victim)) = lru.by_use.iter().next() else {
            break;
        };
        lru.by_use.remove(&oldest);
        lru.files.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_io::OsIo;

    #[derive(Debug)]
    struct Owner;

    impl IdleRelease for Owner {
        fn release_idle(&self) -> bool {
            false
        }
    }

    #[test]
    fn owners_that_are_gone_are_forgotten_as_new_ones_register() {
        let cache = FdCache::new(3);
        let kept: Vec<Arc<Owner>> = (0..10).map(|_| Arc::new(Owner)).collect();
        for owner in &kept {
            let owner: Arc<dyn IdleRelease> = owner.clone();
            cache.register_owner(Arc::downgrade(&owner));
        }
        // Opened and dropped, as the logs of a topic deleted and created again and again.
        for _ in 0..100_000 {
            let owner: Arc<dyn IdleRelease> = Arc::new(Owner);
            cache.register_owner(Arc::downgrade(&owner));
        }
        let entries = cache.owner_entries();
        assert!(
            entries <= 64,
            "{entries} owners remembered for 10 alive: dropped ones are never forgotten"
        );
        drop(kept);
    }

    /// An owner that counts how often it was asked and never lets go.
    #[derive(Debug, Default)]
    struct Counted(AtomicUsize);

    impl IdleRelease for Counted {
        fn release_idle(&self) -> bool {
            self.0.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    #[test]
    fn a_pressure_sweep_looks_at_a_bounded_window_and_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(FdCache::new(4));
        let owners: Vec<Arc<Counted>> = (0..3000).map(|_| Arc::default()).collect();
        for owner in &owners {
            let owner: Arc<dyn IdleRelease> = owner.clone();
            cache.register_owner(Arc::downgrade(&owner));
        }
        let asked = || {
            owners
                .iter()
                .map(|o| o.0.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        let open = |i: u64| Arc::new(OsIo.open(&dir.path().join(format!("{i}")), true).unwrap());
        // Three owned of four: not yet pressure, nobody is asked.
        let mut held: Vec<OwnedFile> = (0..3).map(|i| cache.own(open(i))).collect();
        assert!(!cache.owned_pressure());
        assert!(asked().iter().all(|n| *n == 0));
        held.push(cache.own(open(3)));
        assert!(cache.owned_pressure(), "four of four owned");
        cache.relieve_pressure();
        let after_one = asked();
        assert_eq!(after_one.iter().sum::<usize>(), OWNERS_PER_SWEEP);
        assert!(after_one[..OWNERS_PER_SWEEP].iter().all(|n| *n == 1));
        cache.relieve_pressure();
        let after_two = asked();
        assert_eq!(after_two.iter().sum::<usize>(), 2 * OWNERS_PER_SWEEP);
        assert!(
            after_two[..2 * OWNERS_PER_SWEEP].iter().all(|n| *n == 1),
            "the second sweep starts where the first stopped"
        );
        drop(held);
    }

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

    #[test]
    fn owned_descriptors_count_in_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(FdCache::new(4));
        let path = |i: u64| dir.path().join(format!("{i}"));
        for i in 0..4 {
            cache
                .get((i, FileKind::Log), &OsIo, &path(i), true)
                .unwrap();
        }
        assert_eq!(cache.len(), 4);
        let open = |i: u64| Arc::new(OsIo.open(&path(100 + i), true).unwrap());
        let a = cache.own(open(0));
        let b = cache.own(open(1));
        assert_eq!(cache.owned(), 2);
        assert_eq!(
            cache.len(),
            2,
            "the LRU shrank to make room for two owned files"
        );
        assert!(!cache.owned_pressure());
        cache
            .get((9, FileKind::Log), &OsIo, &path(9), true)
            .unwrap();
        assert_eq!(cache.len() + cache.owned(), 4, "still within the budget");
        let c = cache.own(open(2));
        let d = cache.own(open(3));
        let e = cache.own(open(4));
        assert!(cache.owned_pressure());
        // Owned alone exceed the budget: one cached file is still allowed for reads.
        cache
            .get((10, FileKind::Log), &OsIo, &path(10), true)
            .unwrap();
        assert_eq!(cache.len(), 1);
        drop((a, b, c, d, e));
        assert_eq!(cache.owned(), 0);
        for i in 0..4 {
            cache
                .get((20 + i, FileKind::Log), &OsIo, &path(20 + i), true)
                .unwrap();
        }
        assert_eq!(cache.len(), 4, "released slots are the cache's again");
    }

    #[test]
    fn cached_log_descriptors_read_without_readahead() {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 4 << 20]).unwrap();
        f.sync_all().unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let cache = FdCache::new(3);
        let log = cache.get((1, FileKind::Log), &OsIo, &path, false).unwrap();
        let mut byte = [0u8; 1];
        log.file().read_at(&mut byte, 0).unwrap();
        let resident = crate::page_cache::residency(log.file(), 0, 4 << 20).unwrap();
        // One page (or a few), not a readahead window of 128 KiB or more.
        assert!(resident.resident_pages <= 4, "{resident:?}");
    }
}
