//! A [`FileIo`] that remembers which byte ranges of each file were written since its last
//! fdatasync, and which new files were not yet made durable by a directory sync, so a test can
//! simulate a power cut: unsynced ranges are overwritten with zeros, garbage or a torn prefix,
//! unsynced new files may vanish. Decisions come from a seeded RNG, so a failing seed replays.
//!
//! Real fdatasync is skipped: what survives is the simulator's decision, and skipping it keeps
//! thousands of cases fast.
//!
//! After the cut the power stays off: every later change or sync fails with EIO, so threads
//! still running (the flusher) cannot make anything durable after the fact.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rand::Rng;

use crate::file_io::{FileIo, IoFile, OsIo};

#[derive(Debug, Default)]
struct SimState {
    /// Per file: (offset, len) ranges written since its last sync.
    unsynced: HashMap<PathBuf, Vec<(u64, u64)>>,
    /// Per directory: files created in it since its last sync.
    new_files: HashMap<PathBuf, Vec<PathBuf>>,
    /// Set by the power cut.
    off: bool,
}

#[derive(Debug)]
pub struct SimIo {
    state: Mutex<SimState>,
    /// Durable operations left before the simulated process dies: from then on every one
    /// fails, as if the process stopped there (`u64::MAX`: never).
    ops_left: std::sync::atomic::AtomicU64,
    /// Durable operations let through so far (a test sizes its freeze points with it).
    ops_done: std::sync::atomic::AtomicU64,
    /// With [`SimIo::freeze_after`]: the operation that ran out parks its thread here until
    /// [`SimIo::thaw`], so the files can be copied as a SIGKILL would leave them (no error
    /// handling has run yet).
    freeze: Mutex<Freeze>,
    frozen: parking_lot::Condvar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Freeze {
    #[default]
    Off,
    Armed,
    Frozen,
    Thawed,
}

impl Default for SimIo {
    fn default() -> Self {
        SimIo {
            state: Mutex::default(),
            ops_left: std::sync::atomic::AtomicU64::new(u64::MAX),
            ops_done: std::sync::atomic::AtomicU64::new(0),
            freeze: Mutex::default(),
            frozen: parking_lot::Condvar::new(),
        }
    }
}

impl SimIo {
    /// Lets `n` more durable operations through, then fails every later one.
    pub fn die_after(&self, n: u64) {
        self.ops_left.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets `n` more durable operations through; the next one parks its thread (see
    /// [`SimIo::wait_frozen`]), and fails once thawed, as does every later one.
    pub fn freeze_after(&self, n: u64) {
        *self.freeze.lock() = Freeze::Armed;
        self.die_after(n);
    }

    /// Waits up to `timeout` for an operation to park; false if none did.
    pub fn wait_frozen(&self, timeout: std::time::Duration) -> bool {
        let mut freeze = self.freeze.lock();
        let deadline = std::time::Instant::now() + timeout;
        // Bounded by the deadline.
        while *freeze != Freeze::Frozen {
            if self.frozen.wait_until(&mut freeze, deadline).timed_out() {
                return *freeze == Freeze::Frozen;
            }
        }
        true
    }

    /// Releases the parked operation (it fails, as does every later one).
    pub fn thaw(&self) {
        *self.freeze.lock() = Freeze::Thawed;
        self.frozen.notify_all();
    }

    /// Durable operations that went through so far.
    pub fn ops_done(&self) -> u64 {
        self.ops_done.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn step(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let left = self.ops_left.load(Ordering::SeqCst);
        if left == u64::MAX {
            self.ops_done.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if left == 0 {
            let mut freeze = self.freeze.lock();
            if *freeze == Freeze::Armed {
                *freeze = Freeze::Frozen;
                self.frozen.notify_all();
                // Bounded by the test, which always thaws.
                while *freeze == Freeze::Frozen {
                    self.frozen.wait(&mut freeze);
                }
            }
            return Err(io::Error::other("simulated process death"));
        }
        self.ops_left.store(left - 1, Ordering::SeqCst);
        self.ops_done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn power_off() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())
}

impl SimState {
    fn check_power(&self) -> io::Result<()> {
        if self.off {
            return Err(power_off());
        }
        Ok(())
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).to_path_buf()
}

impl FileIo for SimIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<IoFile> {
        self.step()?;
        self.state.lock().check_power()?;
        let existed = path.exists();
        let file = OsIo.open(path, create)?;
        if !existed {
            let mut state = self.state.lock();
            state.unsynced.remove(path);
            state
                .new_files
                .entry(parent(path))
                .or_default()
                .push(path.to_path_buf());
        }
        Ok(file)
    }

    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.step()?;
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let mut state = self.state.lock();
        state.check_power()?;
        state
            .unsynced
            .entry(file.path().to_path_buf())
            .or_default()
            .push((offset, len));
        // Written under the lock, so the cut sees it whole or not at all.
        OsIo.write_at(file, bufs, offset)
    }

    fn sync_data(&self, file: &IoFile) -> io::Result<()> {
        self.step()?;
        let mut state = self.state.lock();
        state.check_power()?;
        state.unsynced.remove(file.path());
        Ok(())
    }

    fn allocate(&self, file: &IoFile, len: u64) -> io::Result<()> {
        self.step()?;
        let state = self.state.lock();
        state.check_power()?;
        OsIo.allocate(file, len)
    }

    fn sync_fs(&self, _file: &IoFile) -> io::Result<()> {
        // The whole simulated file system: every file's data and every directory entry.
        let mut state = self.state.lock();
        state.check_power()?;
        state.unsynced.clear();
        state.new_files.clear();
        Ok(())
    }

    fn set_len(&self, file: &IoFile, len: u64) -> io::Result<()> {
        self.step()?;
        let state = self.state.lock();
        state.check_power()?;
        OsIo.set_len(file, len)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        let mut state = self.state.lock();
        state.check_power()?;
        state.new_files.remove(dir);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        let mut state = self.state.lock();
        state.check_power()?;
        std::fs::rename(from, to)?;
        let ranges = state.unsynced.remove(from);
        state.unsynced.remove(to);
        if let Some(r) = ranges {
            state.unsynced.insert(to.to_path_buf(), r);
        }
        Ok(())
    }
}

impl SimIo {
    /// Applies a power cut to the files on disk. Returns how many ranges were damaged.
    pub fn power_cut(&self, rng: &mut impl Rng) -> usize {
        let mut state = self.state.lock();
        let mut damaged = 0;
        let mut paths: Vec<_> = state.unsynced.keys().cloned().collect();
        paths.sort();
        for path in paths {
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            for &(offset, len) in &state.unsynced[&path] {
                let bytes: Vec<u8> = match rng.random_range(0..4) {
                    0 => continue, // the write made it
                    1 => vec![0; len as usize],
                    2 => {
                        let mut g = vec![0; len as usize];
                        rng.fill_bytes(&mut g);
                        g
                    }
                    _ => {
                        // torn: a prefix made it, the rest is zeros
                        let keep = rng.random_range(0..=len);
                        let _ = file.write_all_at(&vec![0; (len - keep) as usize], offset + keep);
                        damaged += 1;
                        continue;
                    }
                };
                let _ = file.write_all_at(&bytes, offset);
                damaged += 1;
            }
        }
        let mut dirs: Vec<_> = state.new_files.keys().cloned().collect();
        dirs.sort();
        for dir in dirs {
            for file in &state.new_files[&dir] {
                if rng.random_bool(0.5) {
                    let _ = std::fs::remove_file(file);
                    damaged += 1;
                }
            }
        }
        state.unsynced.clear();
        state.new_files.clear();
        state.off = true;
        damaged
    }
}
