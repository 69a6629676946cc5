//! Small files replaced whole and durably (the topic registry, the dynamic broker and group
//! configs, client quotas, SCRAM credentials): written to a temporary file, synced, renamed over
//! the old one, and the directory synced, so a crash leaves either the old file or the new one.
//! The settings stores read theirs with [`read_optional`] and report [`FileError`].

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a settings file could not be read, understood or replaced.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("i/o on {path} failed while {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The text of `path`, or `None` when it does not exist yet (nothing was ever stored).
pub fn read_optional(path: &Path) -> Result<Option<String>, FileError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// [`write`], with the failure as a [`FileError`] naming `path`.
pub fn replace(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    write(path, contents).map_err(|(op, source)| FileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `contents`. The error names the step that failed.
pub fn write(path: &Path, contents: &[u8]) -> Result<(), (&'static str, io::Error)> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(|e| ("creating temp file", e))?;
    file.write_all(contents).map_err(|e| ("writing", e))?;
    file.sync_all().map_err(|e| ("syncing", e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| ("renaming", e))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ("syncing directory", e))?;
    }
    Ok(())
}
