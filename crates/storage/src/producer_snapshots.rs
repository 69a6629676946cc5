//! The producer state snapshot files of one partition directory (`<offset>.snapshot`): finding
//! the newest usable one at open, writing one at a checkpoint, pruning old ones. The format is
//! in [`crate::producer_state::ProducerStateManager::encode_snapshot`].

use std::path::Path;

use crate::error::{Result, StorageError};
use crate::file_io::{self, FileIo};
use crate::producer_state::{parse_snapshot_file_name, snapshot_file_name, ProducerStateManager};

/// Snapshots kept per partition: the newest, and one older to fall back to when a power cut
/// takes the log below the newest (its offset may lie past the recovery point).
const SNAPSHOTS_KEPT: usize = 2;

/// Offsets of the snapshot files in `dir`, ascending.
fn list(dir: &Path) -> Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        if let Some(offset) = entry
            .file_name()
            .to_str()
            .and_then(parse_snapshot_file_name)
        {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Whether `dir` holds any snapshot (the log has had producer ids).
pub(crate) fn any(dir: &Path) -> Result<bool> {
    Ok(!list(dir)?.is_empty())
}

/// Deletes the snapshots above `log_end_offset`: they describe batches that are gone (lost
/// in a crash). Run at open, before any append could reach their offsets again. Returns
/// whether it deleted any.
pub(crate) fn delete_beyond(dir: &Path, log_end_offset: i64) -> Result<bool> {
    let mut deleted = false;
    for offset in list(dir)?.into_iter().filter(|&o| o > log_end_offset) {
        deleted = true;
        let path = dir.join(snapshot_file_name(offset));
        tracing::info!(path = %path.display(), log_end_offset, "deleting producer snapshot beyond the log end");
        std::fs::remove_file(&path).map_err(|e| StorageError::io("delete", &path, e))?;
    }
    Ok(deleted)
}

/// Loads the newest readable snapshot at or below `log_end_offset` and returns it with its
/// offset; unreadable ones are skipped with a warning. `None`: rebuild from the log.
pub(crate) fn load(dir: &Path, log_end_offset: i64) -> Result<Option<(i64, ProducerStateManager)>> {
    let offsets = list(dir)?;
    // Bounded by the number of snapshot files.
    for &offset in offsets.iter().rev().filter(|&&o| o <= log_end_offset) {
        let path = dir.join(snapshot_file_name(offset));
        let bytes = std::fs::read(&path).map_err(|e| StorageError::io("read", &path, e))?;
        match ProducerStateManager::decode_snapshot(&bytes) {
            Ok(mut state) => {
                let generation = state.generation();
                state.snapshot_written(offset, generation);
                return Ok(Some((offset, state)));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable producer snapshot");
            }
        }
    }
    Ok(None)
}

/// Writes `bytes` as the snapshot at `offset` (durably: temporary file, fdatasync, rename,
/// directory sync, through the I/O seam) and deletes all but the newest [`SNAPSHOTS_KEPT`].
pub(crate) fn write(io: &dyn FileIo, dir: &Path, offset: i64, bytes: &[u8]) -> Result<()> {
    let path = dir.join(snapshot_file_name(offset));
    file_io::write_atomically(io, &path, bytes).map_err(|e| StorageError::io("write", &path, e))?;
    let offsets = list(dir)?;
    let excess = offsets.len().saturating_sub(SNAPSHOTS_KEPT);
    for &old in &offsets[..excess] {
        let old_path = dir.join(snapshot_file_name(old));
        // A failed delete leaves an old snapshot, which only costs disk space.
        if let Err(e) = std::fs::remove_file(&old_path) {
            tracing::warn!(path = %old_path.display(), error = %e, "cannot delete old producer snapshot");
        }
    }
    Ok(())
}
