//! The one seam through which storage changes files on disk. Production uses [`OsIo`]; the
//! power-loss simulator in tests wraps it to learn which bytes were written since the last
//! fdatasync of each file, so it can destroy exactly those at a simulated power cut.
//!
//! Reads do not go through the seam: a power cut only loses what was never synced, and the
//! simulator rewrites the real files before the log is reopened. The seam is only told of
//! them ([`FileIo::reading`]), so tests can see which thread reads which segment.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file and the path it was opened from, so errors and the simulator can name it.
#[derive(Debug)]
pub struct IoFile {
    file: Arc<File>,
    path: PathBuf,
}

impl IoFile {
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Reads as much of `buf` as the file holds at `offset`; returns the count read.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        // Bounded: each iteration reads at least one byte or stops.
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// File operations that change durable state. Every write to a segment or index file goes
/// through here.
pub trait FileIo: Send + Sync + Debug + 'static {
    /// Opens (and with `create`, creates) a file for reading and writing.
    fn open(&self, path: &Path, create: bool) -> io::Result<IoFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(path)?;
        Ok(IoFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Called before storage reads from a segment's `.log` (every batch header an index
    /// lookup's walk or a read's end reads). The read itself does not go through the seam;
    /// this lets tests record which thread reads which segment (the broker must read old
    /// segments, which may be on disk only, off its async workers). Does nothing by default.
    fn reading(&self, _file: &IoFile) {}

    /// Writes all of `bufs`, in order, at `offset`.
    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> io::Result<()>;

    /// fdatasync: the data written so far, and the size, survive a power cut.
    fn sync_data(&self, file: &IoFile) -> io::Result<()>;

    /// Reserves disk blocks up to `len` bytes without changing what reads return
    /// (fallocate with KEEP_SIZE unset: the file grows, zero-filled).
    fn allocate(&self, file: &IoFile, len: u64) -> io::Result<()>;

    /// syncfs: makes everything written to the file system holding `file` durable, data and
    /// metadata of every file, in one call. The flusher uses it when a pass has several files
    /// to sync (measured: 8 files in one syncfs ~0.3 ms against ~1.3 ms for 8 fdatasyncs). Its
    /// error names no file, so the flusher then asks each file with [`FileIo::sync_data`].
    fn sync_fs(&self, file: &IoFile) -> io::Result<()>;

    /// Truncates or extends the file.
    fn set_len(&self, file: &IoFile, len: u64) -> io::Result<()>;

    /// fsyncs a directory, making the creation or removal of its entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Renames a file (atomically replacing `to`); durable after `sync_dir` of its directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}

/// The real file system.
#[derive(Debug, Default)]
pub struct OsIo;

impl FileIo for OsIo {
    fn write_at(&self, file: &IoFile, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| IoSlice::new(b))
            .collect();
        let mut slices = &mut slices[..];
        let mut offset = offset;
        // Bounded: each iteration writes at least one byte, or fails.
        while !slices.is_empty() {
            // Stay under IOV_MAX (1024 on Linux).
            let take = slices.len().min(512);
            match rustix::io::pwritev(&*file.file, &slices[..take], offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "pwritev wrote nothing",
                    ))
                }
                Ok(n) => {
                    offset += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn sync_data(&self, file: &IoFile) -> io::Result<()> {
        file.file.sync_data()
    }

    fn allocate(&self, file: &IoFile, len: u64) -> io::Result<()> {
        match rustix::fs::fallocate(&*file.file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            // File systems without fallocate (some overlay and network file systems): grow the
            // file instead so the write path stays the same.
            Err(rustix::io::Errno::OPNOTSUPP) => {
                if file.file_len()? < len {
                    file.file.set_len(len)?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn set_len(&self, file: &IoFile, len: u64) -> io::Result<()> {
        file.file.set_len(len)
    }

    fn sync_fs(&self, file: &IoFile) -> io::Result<()> {
        rustix::fs::syncfs(&*file.file).map_err(io::Error::from)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new contents: a
/// temporary file, fdatasync, rename over, directory sync.
pub fn write_atomically(io: &dyn FileIo, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = io.open(&tmp, true)?;
    io.set_len(&file, 0)?;
    io.write_at(&file, &[bytes], 0)?;
    io.sync_data(&file)?;
    io.rename(&tmp, path)?;
    io.sync_dir(path.parent().unwrap_or(Path::new(".")))
}
