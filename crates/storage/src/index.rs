//! Sparse, fixed-size-entry index files, the shared part of [`crate::offset_index`] and
//! [`crate::time_index`] (Kafka's `AbstractIndex`).
//!
//! The active segment keeps its entries in memory and writes the new ones to its file at each
//! flush, before the fdatasync; a sealed segment's index is memory-mapped on first use. Index
//! files are not checksummed: recovery rebuilds any index it cannot trust from the log.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::fd_cache::{FdCache, FileKind};
use crate::file_io::{FileIo, IoFile};

/// One fixed-size, big-endian index entry.
pub trait IndexEntry: Copy + Debug + PartialEq {
    const SIZE: usize;
    const KIND: FileKind;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
}

#[derive(Debug)]
enum Entries<E> {
    /// Active segment: all entries, of which the first `written` are in the file.
    Memory { entries: Vec<E>, written: usize },
    /// Sealed segment, not looked at yet.
    Unloaded,
    /// Sealed segment, mapped.
    Mapped(Mmap),
}

/// An index over one segment.
#[derive(Debug)]
pub struct Index<E: IndexEntry> {
    path: PathBuf,
    entries: Entries<E>,
}

impl<E: IndexEntry> Index<E> {
    /// An index of the active segment, starting from `entries` (all already in the file).
    pub fn active(path: PathBuf, entries: Vec<E>) -> Self {
        let written = entries.len();
        Index {
            path,
            entries: Entries::Memory { entries, written },
        }
    }

    /// An index of a sealed segment, mapped when first used.
    pub fn sealed(path: PathBuf) -> Self {
        Index {
            path,
            entries: Entries::Unloaded,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_loaded(&self) -> bool {
        !matches!(self.entries, Entries::Unloaded)
    }

    pub fn push(&mut self, entry: E) {
        match &mut self.entries {
            Entries::Memory { entries, .. } => {
                debug_assert!(entries.last().is_none_or(|last| *last != entry));
                entries.push(entry)
            }
            _ => unreachable!("only the active segment's index grows"),
        }
    }

    /// Number of entries; the index must be loaded.
    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Memory { entries, .. } => entries.len(),
            Entries::Mapped(map) => map.len() / E::SIZE,
            Entries::Unloaded => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> E {
        match &self.entries {
            Entries::Memory { entries, .. } => entries[i],
            Entries::Mapped(map) => E::decode(&map[i * E::SIZE..(i + 1) * E::SIZE]),
            Entries::Unloaded => unreachable!("load() before get()"),
        }
    }

    pub fn last(&self) -> Option<E> {
        let n = self.len();
        (n > 0).then(|| self.get(n - 1))
    }

    /// The last entry for which `is_at_or_before` holds, assuming it holds for a prefix.
    pub fn floor(&self, is_at_or_before: impl Fn(&E) -> bool) -> Option<E> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if is_at_or_before(&self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo > 0).then(|| self.get(lo - 1))
    }

    /// All entries, copied (recovery and tests).
    pub fn to_vec(&self) -> Vec<E> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Writes the entries not yet in the file. Called before the segment's fdatasync.
    pub fn write_pending(
        &mut self,
        io: &dyn FileIo,
        cache: &FdCache,
        segment_id: u64,
    ) -> io::Result<Option<Arc<IoFile>>> {
        let Entries::Memory { entries, written } = &mut self.entries else {
            return Ok(None);
        };
        if *written == entries.len() {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity((entries.len() - *written) * E::SIZE);
        for e in &entries[*written..] {
            e.encode(&mut buf);
        }
        let file = cache.get((segment_id, E::KIND), io, &self.path, true)?;
        io.write_at(&file, &[&buf], (*written * E::SIZE) as u64)?;
        *written = entries.len();
        Ok(Some(file))
    }

    /// Maps a sealed index. `check` decides whether the entries can be trusted; when it says
    /// no, the caller rebuilds the index from the log. Returns whether the index is usable.
    pub fn load(&mut self, check: impl Fn(&[E]) -> bool) -> io::Result<bool> {
        if self.is_loaded() {
            return Ok(true);
        }
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len() as usize;
        if !len.is_multiple_of(E::SIZE) {
            return Ok(false);
        }
        if len == 0 {
            self.entries = Entries::Memory {
                entries: Vec::new(),
                written: 0,
            };
            return Ok(check(&[]));
        }
        // SAFETY: the map is read-only and the file is never written, truncated or extended in
        // place once its segment is sealed: this process only replaces a sealed index by
        // renaming a new file over it (a new inode; this mapping keeps the old one), and the
        // data directory belongs to this process alone (documented in ARCHITECTURE.md).
        let map = unsafe { Mmap::map(&file)? };
        let entries: Vec<E> = map.chunks_exact(E::SIZE).map(E::decode).collect();
        if !check(&entries) {
            return Ok(false);
        }
        self.entries = Entries::Mapped(map);
        Ok(true)
    }

    /// Replaces the file with `entries` (written to a temporary file, synced, renamed over),
    /// and keeps them in memory.
    pub fn rebuild(&mut self, entries: Vec<E>, io: &dyn FileIo) -> io::Result<()> {
        let tmp = self.path.with_extension(format!(
            "{}.tmp",
            self.path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("index")
        ));
        let mut buf = Vec::with_capacity(entries.len() * E::SIZE);
        for e in &entries {
            e.encode(&mut buf);
        }
        let file = io.open(&tmp, true)?;
        io.set_len(&file, 0)?;
        io.write_at(&file, &[&buf], 0)?;
        io.sync_data(&file)?;
        io.rename(&tmp, &self.path)?;
        let written = entries.len();
        self.entries = Entries::Memory { entries, written };
        Ok(())
    }

    /// Forgets the in-memory entries of a segment that stops being active; the next lookup
    /// maps the file. All entries must have been written.
    pub fn seal(&mut self) {
        if let Entries::Memory { entries, written } = &self.entries {
            debug_assert_eq!(*written, entries.len(), "seal after write_pending");
        }
        self.entries = Entries::Unloaded;
    }

    /// Drops entries for which `keep` is false from the end (truncation after recovery).
    pub fn truncate_to(&mut self, keep: impl Fn(&E) -> bool) {
        if let Entries::Memory { entries, written } = &mut self.entries {
            while entries.last().is_some_and(|e| !keep(e)) {
                entries.pop();
            }
            *written = (*written).min(entries.len());
        }
    }
}
