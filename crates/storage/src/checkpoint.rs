//! Offset checkpoint files, in Kafka's text format so operators' tools can read them:
//!
//! ```text
//! 0                 <- version
//! 2                 <- entry count
//! orders 0 1200     <- topic partition offset
//! orders 1 990
//! ```
//! Written to a temporary file, synced and renamed, so a crash leaves the old or the new one.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::file_io::FileIo;
use crate::TopicPartition;

/// Per-data-directory file holding each log's recovery point.
pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";

pub fn read(path: &Path) -> Result<HashMap<TopicPartition, i64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(StorageError::io("read", path, e)),
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(corrupt("unknown version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt("bad entry count"))?;
    let mut out = HashMap::with_capacity(count);
    for line in lines.by_ref().take(count) {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt("bad entry"));
        };
        let offset: i64 = offset.parse().map_err(|_| corrupt("bad offset"))?;
        let partition: i32 = partition.parse().map_err(|_| corrupt("bad partition"))?;
        out.insert(TopicPartition::new(topic, partition), offset);
    }
    if out.len() != count {
        return Err(corrupt("fewer entries than its count"));
    }
    Ok(out)
}

pub fn write(io: &dyn FileIo, path: &Path, entries: &HashMap<TopicPartition, i64>) -> Result<()> {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort();
    let mut text = format!("0\n{}\n", sorted.len());
    for (tp, offset) in sorted {
        text.push_str(&format!("{} {} {}\n", tp.topic, tp.partition, offset));
    }
    crate::file_io::write_atomically(io, path, text.as_bytes())
        .map_err(|e| StorageError::io("write checkpoint", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_io::OsIo;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECOVERY_POINT_FILE);
        assert!(read(&path).unwrap().is_empty());
        let entries = HashMap::from([
            (TopicPartition::new("a-b c", 3), 42),
            (TopicPartition::new("x", 0), 0),
        ]);
        write(&OsIo, &path, &entries).unwrap();
        assert_eq!(read(&path).unwrap(), entries);
        std::fs::write(&path, "0\n3\nx 0 1\n").unwrap();
        assert!(matches!(read(&path), Err(StorageError::Corrupt { .. })));
    }
}
