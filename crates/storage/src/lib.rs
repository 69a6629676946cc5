//! Rill's storage engine: per-partition segmented logs of Kafka v2 record batches.
//!
//! Map of the crate (read in this order):
//! - [`log_manager`]: all logs of a data directory; entry point for the broker.
//! - [`log`]: one partition log: append (offset assignment, one pwritev), read (file ranges
//!   for sendfile), grouped flushes, retention, DeleteRecords.
//! - [`segment`]: one `.log` file with its `.index` and `.timeindex`.
//! - [`offset_index`], [`time_index`], [`index`]: sparse fixed-size-entry indexes.
//! - [`producer_state`]: per-producer epochs and last sequences (idempotent producers:
//!   duplicates, gaps, fencing) and open transactions; [`producer_snapshots`]: its snapshot
//!   files beside the segments.
//! - [`txn_marker`]: commit/abort control batches; [`txn_index`]: the per-segment aborted
//!   transaction index (`.txnindex`) behind read_committed reads.
//! - [`recovery`]: scanning a segment after a crash to find the valid end.
//! - [`batch`]: the v2 record batch format and its validation.
//! - [`records`]: the records inside a batch, read one at a time or built into a batch;
//!   [`compression`]: the four Kafka codecs, with bounded streaming decompression.
//! - [`file_io`]: the seam through which every durable write goes (tests simulate power cuts
//!   behind it); [`fd_cache`]: the bounded cache of open files.
//! - [`flusher`]: the data directory's group commit thread (durability and visibility);
//!   [`job_queue`]: the queue between a thread pool's callers and its threads.
//! - [`checkpoint`]: recovery point file; [`config`]: Kafka-named topic configs.
//! - [`cleaner`]: one compaction pass and its crash-safe segment swap; [`offset_map`]: its
//!   bounded key map; [`keyed_records`]: records seen by key; [`cleaner_manager`]: the bounded
//!   pool of cleaner threads, its throttle and log selection.
//!
//! The crate knows nothing of the Kafka wire protocol, sockets or tokio: its blocking calls
//! (`wait_durable`, `flush`, opening logs) are meant for a blocking thread pool, and
//! `Log::on_durable` takes a callback instead, for callers that must not block.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod cleaner_manager;
pub mod compression;
pub mod config;
pub mod error;
pub mod fd_cache;
pub mod file_io;
pub mod flusher;
pub mod index;
pub mod job_queue;
pub mod keyed_records;
pub mod log;
pub mod log_manager;
pub mod offset_index;
pub mod offset_map;
pub mod page_cache;
pub mod producer_snapshots;
pub mod producer_state;
pub mod records;
pub mod recovery;
pub mod segment;
pub mod sync_helpers;
pub mod tail_pages;
pub mod time_index;
pub mod topic_configs;
pub mod txn_index;
pub mod txn_marker;

#[cfg(test)]
mod tests;

pub use cleaner::{CleanStats, CleanerMetrics};
pub use cleaner_manager::CleanerConfig;
pub use config::{FlushPolicy, LogConfig, TimestampType, TopicCompression, Visibility};
pub use error::StorageError;
pub use flusher::{FlushListener, GroupSync};
pub use log::{
    AppendInfo, DurableCallback, FileSlice, Isolation, Log, ReadResult, TimestampOffset,
};
pub use log_manager::{LogManager, LogManagerConfig};
pub use producer_state::{ProducerError, ProducerStateEntry};
pub use txn_index::AbortedTxn;
pub use txn_marker::TxnMarker;

use std::fmt;

/// A topic name and partition number; the log directory is `<topic>-<partition>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Kafka's limit on topic name length (so that `<topic>-<partition>` fits a file name).
const MAX_TOPIC_NAME_LEN: usize = 249;

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Parses `<topic>-<partition>`; topics may themselves contain '-'.
    pub fn from_dir_name(name: &str) -> Option<TopicPartition> {
        let (topic, partition) = name.rsplit_once('-')?;
        let partition: i32 = partition.parse().ok()?;
        let tp = TopicPartition::new(topic, partition);
        tp.validate().ok().map(|_| tp)
    }

    /// Kafka's rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`; partition >= 0.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid = |reason: &str| StorageError::InvalidTopic {
            topic: self.topic.clone(),
            reason: reason.to_string(),
        };
        if self.topic.is_empty() || self.topic.len() > MAX_TOPIC_NAME_LEN {
            return Err(invalid("must be 1 to 249 characters"));
        }
        if self.topic == "." || self.topic == ".." {
            return Err(invalid("'.' and '..' are not allowed"));
        }
        if !self
            .topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "only ASCII letters, digits, '.', '_' and '-' are allowed",
            ));
        }
        if self.partition < 0 {
            return Err(invalid("partition must not be negative"));
        }
        Ok(())
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
