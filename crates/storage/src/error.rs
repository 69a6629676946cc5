//! Typed errors at the storage boundary. The broker maps them to Kafka error codes; nothing
//! here knows the wire protocol.

use std::io;
use std::path::PathBuf;

use crate::TopicPartition;

/// Everything that can go wrong in `rill-storage`. Each variant carries the context an operator
/// needs (which file, which offset); the broker decides which Kafka error code it becomes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A batch failed validation (bad magic, CRC, lengths). Nothing of the append was written.
    #[error("corrupt record batch: {reason}")]
    CorruptRecord { reason: String },
    /// A batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: u64, max: u64 },
    /// A compressed batch inflates past the broker's bound on decompressed batch size.
    #[error("record batch decompresses to more than {max_bytes} bytes")]
    DecompressedTooLarge { max_bytes: u64 },
    /// A batch is well formed but not acceptable (e.g. no records, inconsistent counts).
    #[error("invalid record batch: {reason}")]
    InvalidRecord { reason: String },
    /// A record's timestamp is outside the topic's `message.timestamp.before.max.ms` /
    /// `after.max.ms` window (Kafka's INVALID_TIMESTAMP).
    #[error("invalid timestamp: {reason}")]
    InvalidTimestamp { reason: String },
    /// A read or delete asked for an offset outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("unknown partition {tp}")]
    UnknownPartition { tp: TopicPartition },
    #[error("partition {tp} already exists")]
    LogAlreadyExists { tp: TopicPartition },
    /// A topic name that cannot be a directory name or a Kafka topic.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: String },
    #[error("invalid value for config {key}: {reason}")]
    InvalidConfig { key: String, reason: String },
    /// ENOSPC or EDQUOT: the append failed and left the log as it was.
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("read-only file system at {path}")]
    ReadOnly { path: PathBuf },
    #[error("{op} failed on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// On-disk state that recovery cannot repair (it repairs a torn tail or a bad index itself).
    #[error("corrupt log data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// The log's disk failed (an fsync or a write of its indexes): it is offline and takes no
    /// more reads or writes (fail fast: after a failed fsync the page cache state is unknown).
    /// Other logs are not affected.
    #[error("partition {tp} is offline after a storage failure")]
    Offline { tp: TopicPartition },
    /// The log was deleted; a handle kept across the deletion cannot write into, or read from,
    /// a partition created again under the same name.
    #[error("partition {tp} was deleted")]
    Deleted { tp: TopicPartition },
    /// An idempotent or transactional producer's batch refused by the partition's producer
    /// state (sequence gap, stale epoch, no open transaction). Nothing was written.
    #[error("{tp}: {source}")]
    Producer {
        tp: TopicPartition,
        #[source]
        source: crate::producer_state::ProducerError,
    },
}

impl StorageError {
    /// Wraps an `io::Error`, turning ENOSPC/EDQUOT and EROFS into their own variants so callers
    /// can report them precisely.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => {
                Self::DiskFull { path }
            }
            Some(code) if code == rustix::io::Errno::DQUOT.raw_os_error() => {
                Self::DiskFull { path }
            }
            Some(code) if code == rustix::io::Errno::ROFS.raw_os_error() => Self::ReadOnly { path },
            _ => Self::Io { op, path, source },
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
