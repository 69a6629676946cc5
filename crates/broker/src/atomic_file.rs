//! Small files replaced whole and durably (the topic registry, the dynamic broker configs):
//! written to a temporary file, synced, renamed over the old one, and the directory synced, so
//! a crash leaves either the old file or the new one.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

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
