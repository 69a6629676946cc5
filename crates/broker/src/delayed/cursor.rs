//! Where delivery got to, recovered after a crash.
//!
//! Deliveries are appended to the target partition as batches of one reserved idempotent
//! producer ([`super::store::DELIVERY_PRODUCER_ID`]), whose records name their delay log key
//! in headers. The target partition's own producer state therefore says, atomically with the
//! data, what was delivered: its last batch's last record is the cursor. A small cursor file,
//! written only once the target's flushed offset covers a delivery, keeps the cursor when the
//! producer state has expired (`producer.id.expiration.ms` after the last delivery); the
//! recovered cursor is the greater of the two.

use std::io::Write;
use std::path::Path;

use rill_storage::batch::BatchHeader;
use rill_storage::records::{ReaderBuffers, RecordReader};
use rill_storage::Log;

use super::headers;
use super::index::Key;
use super::store::DELIVERY_PRODUCER_ID;

/// The delivery cursor and the sequence the next delivery takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub key: Key,
    pub next_sequence: i32,
}

/// Parses a cursor file: `due_ms offset index next_sequence`.
pub fn parse(text: &str) -> Option<Cursor> {
    let mut parts = text.split_ascii_whitespace().map(str::parse::<i64>);
    let mut next = || parts.next()?.ok();
    let cursor = Cursor {
        key: Key {
            due_ms: next()?,
            offset: next()?,
            index: u32::try_from(next()?).ok()?,
        },
        next_sequence: i32::try_from(next()?).ok()?,
    };
    Some(cursor)
}

pub fn render(c: &Cursor) -> String {
    format!(
        "{} {} {} {}\n",
        c.key.due_ms, c.key.offset, c.key.index, c.next_sequence
    )
}

/// Reads the cursor file; a missing or unreadable one is `None` (the target's producer state
/// decides then).
pub fn read_file(path: &Path) -> Option<Cursor> {
    let text = std::fs::read_to_string(path).ok()?;
    let cursor = parse(&text);
    if cursor.is_none() {
        tracing::warn!(path = %path.display(), "unreadable delivery cursor file ignored");
    }
    cursor
}

/// Writes the cursor file atomically (temporary file, fsync, rename, directory fsync).
pub fn write_file(path: &Path, cursor: &Cursor) -> std::io::Result<()> {
    let dir = path.parent().expect("cursor files live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(render(cursor).as_bytes())?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The cursor the target partition's data shows: the last record the delivery producer
/// wrote there, if its state is still known.
pub fn from_target(target: &Log, max_decompressed_bytes: u64) -> Option<Cursor> {
    let entry = target.producer_state(DELIVERY_PRODUCER_ID)?;
    let last = *entry.batches.back()?;
    let bytes = target.read_bytes(last.first_offset, 1).ok()?;
    let header = BatchHeader::parse(&bytes)?;
    let batch = bytes.get(..header.total_size())?;
    let mut reader =
        RecordReader::for_batch(batch, max_decompressed_bytes, ReaderBuffers::default()).ok()?;
    let mut key = None;
    while let Ok(Some(record)) = reader.next_record() {
        key = key_of(record.headers).or(key);
    }
    Some(Cursor {
        key: key?,
        next_sequence: last.last_seq.wrapping_add(1).max(0),
    })
}

/// The delay log key a delivered record names in its headers.
pub fn key_of(h: rill_storage::records::Headers<'_>) -> Option<Key> {
    let mut due_ms = None;
    let mut source = None;
    for (k, v) in h.iter() {
        if k == headers::DELIVERED_FOR {
            due_ms = std::str::from_utf8(v?).ok()?.parse::<i64>().ok();
        } else if k == headers::SOURCE {
            let text = std::str::from_utf8(v?).ok()?;
            let (offset, index) = text.split_once('.')?;
            source = Some((offset.parse::<i64>().ok()?, index.parse::<u32>().ok()?));
        }
    }
    let (offset, index) = source?;
    Some(Key {
        due_ms: due_ms?,
        offset,
        index,
    })
}

/// The greater of the two cursors (by key; the sequence goes with the key that won, and
/// never backwards).
pub fn recover(file: Option<Cursor>, target: Option<Cursor>) -> Option<Cursor> {
    match (file, target) {
        (Some(f), Some(t)) => Some(if t.key >= f.key { t } else { f }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_garbage_is_none() {
        let c = Cursor {
            key: Key {
                due_ms: 1_700_000_000_000,
                offset: 42,
                index: 3,
            },
            next_sequence: 9,
        };
        assert_eq!(parse(&render(&c)), Some(c));
        assert_eq!(parse("1 2 x 4"), None);
        assert_eq!(parse("1 2 3"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        assert_eq!(read_file(&path), None);
        write_file(&path, &c).unwrap();
        assert_eq!(read_file(&path), Some(c));
    }

    #[test]
    fn recovery_takes_the_later_cursor() {
        let at = |due_ms, next_sequence| Cursor {
            key: Key {
                due_ms,
                offset: 0,
                index: 0,
            },
            next_sequence,
        };
        assert_eq!(recover(Some(at(5, 1)), Some(at(7, 3))), Some(at(7, 3)));
        assert_eq!(recover(Some(at(8, 4)), Some(at(7, 3))), Some(at(8, 4)));
        assert_eq!(recover(None, Some(at(7, 3))), Some(at(7, 3)));
        assert_eq!(recover(None, None), None);
    }
}
