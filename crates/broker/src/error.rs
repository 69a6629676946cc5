//! Error types, and the one place where storage errors become Kafka error codes.
//!
//! Two kinds of failure exist on the wire. *Per-partition* failures (a corrupt batch, an
//! unknown partition) are answered with an error code and the rest of the request goes on:
//! they are [`rill_storage::StorageError`]s or [`crate::topics::TopicError`]s, mapped by
//! [`storage_error_code`] and [`crate::topics::TopicError::code`]. *Connection* failures (a
//! frame over the size limit, an unknown API key, bytes that do not decode) mean the peer does
//! not speak our protocol, and the connection is closed: they are [`ConnectionError`]s.

use std::io;
use std::path::PathBuf;

use kafka_protocol::error::ResponseError;
use rill_storage::{ProducerError, StorageError};
use thiserror::Error;

use crate::frame::FrameError;

/// Errors that stop the broker from starting or from shutting down cleanly.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error("failed to bind listener on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("data directory {path} is in use by another rill process (lock held)")]
    DataDirLocked { path: PathBuf },
    #[error("cannot lock data directory {path}")]
    DataDirLock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("storage failed while {op}")]
    Storage {
        op: &'static str,
        #[source]
        source: StorageError,
    },
    /// The consumer group coordinator cannot start (its offsets topic cannot be created or
    /// read).
    #[error("consumer groups: {reason}")]
    Groups { reason: String },
    /// `__transaction_state` could not be created or loaded.
    #[error("transactions: {reason}")]
    Transactions { reason: String },
    #[error("topic registry {path} could not be loaded")]
    Registry {
        path: PathBuf,
        #[source]
        source: crate::topics::RegistryError,
    },
    /// The dynamic broker configs file is unreadable, or its values no longer apply.
    #[error("dynamic broker configs cannot be loaded")]
    BrokerConfigs(#[source] crate::broker_configs::BrokerConfigError),
    /// The client quotas file is unreadable or malformed.
    #[error("client quotas cannot be loaded")]
    ClientQuotas(#[source] crate::client_quotas::QuotaStoreError),
    /// The SCRAM credentials file is unreadable or malformed.
    #[error("SCRAM credentials cannot be loaded")]
    Scram(#[source] crate::scram::ScramError),
    /// The group configs file is unreadable, or its values no longer pass the checks.
    #[error("group configs cannot be loaded")]
    GroupConfigs(#[source] crate::group_configs::GroupConfigError),
    /// The cold-read pool's threads could not be started.
    #[error("cannot start the cold-read pool")]
    ColdReadPool(#[source] io::Error),
    #[error("producer id allocation cannot start")]
    ProducerIds(#[from] crate::producer_id::ProducerIdError),
    /// A setting that cannot be used (named as Kafka names it).
    #[error("invalid {key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("cannot start the I/O pool threads")]
    IoPool {
        #[source]
        source: std::io::Error,
    },
    #[error("a blocking task panicked or was cancelled while {op}")]
    Join {
        op: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why a connection was closed by the broker.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectionError {
    #[error("socket i/o failed")]
    Io(#[from] io::Error),
    #[error("bad frame")]
    Frame(#[from] FrameError),
    #[error(
        "connection closed by peer in the middle of a frame ({buffered_bytes} bytes buffered)"
    )]
    TruncatedFrame { buffered_bytes: usize },
    #[error("unknown api key {api_key}")]
    UnknownApiKey { api_key: i16 },
    #[error("unsupported version {api_version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, api_version: i16 },
    #[error("request of api key {api_key} v{api_version} did not decode: {reason}")]
    Decode {
        api_key: i16,
        api_version: i16,
        reason: String,
    },
    #[error("response of api key {api_key} v{api_version} did not encode: {reason}")]
    Encode {
        api_key: i16,
        api_version: i16,
        reason: String,
    },
    #[error("no request or response progress for {idle_ms} ms")]
    Idle { idle_ms: u64 },
    #[error("segment file {position}+{len} ended early while sending a fetch response")]
    FileShrunk { position: u64, len: u32 },
}

/// Kafka's "no error" code; `ResponseError` has no variant for it.
pub const NONE: i16 = 0;

/// Maps a storage error to the Kafka error code the client understands, per the table in
/// `docs/storage-api.md`. Anything about the disk itself is `KAFKA_STORAGE_ERROR`, which
/// clients treat as retriable.
pub fn storage_error_code(error: &StorageError) -> i16 {
    let kind = match error {
        StorageError::CorruptRecord { .. } => ResponseError::CorruptMessage,
        StorageError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        // As too large: the Java producer then splits the batch and retries the halves.
        StorageError::DecompressedTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::InvalidRecord { .. } => ResponseError::InvalidRecord,
        StorageError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        StorageError::LogAlreadyExists { .. } => ResponseError::TopicAlreadyExists,
        StorageError::InvalidTopic { .. } => ResponseError::InvalidTopicException,
        StorageError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        // A handle that outlived its partition: the partition it named is gone.
        StorageError::Deleted { .. } => ResponseError::UnknownTopicOrPartition,
        // An offline log (failed fsync), like any other disk failure.
        StorageError::Offline { .. } => ResponseError::KafkaStorageError,
        StorageError::Producer { source, .. } => return producer_error_code(source),
        _ => ResponseError::KafkaStorageError,
    };
    kind.code()
}

/// Maps a coordinator runtime error (a write to a coordinator topic) to a Kafka error code:
/// storage errors as for any append, the rest (a bug, storage gone) UNKNOWN_SERVER_ERROR.
pub fn runtime_error_code(error: &crate::coordinator::runtime::RuntimeError) -> i16 {
    use crate::coordinator::runtime::RuntimeError;
    match error {
        RuntimeError::Storage(e) => storage_error_code(e),
        _ => ResponseError::UnknownServerError.code(),
    }
}

/// A batch refused by a partition's producer state. Kafka answers a stale epoch with
/// INVALID_PRODUCER_EPOCH (since 2.7, also for transactional producers on produce; fencing by
/// a newer transactional producer is PRODUCER_FENCED from the transaction coordinator).
fn producer_error_code(error: &ProducerError) -> i16 {
    let kind = match error {
        ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        ProducerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ProducerError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
        ProducerError::TransactionCoordinatorFenced { .. } => {
            ResponseError::TransactionCoordinatorFenced
        }
        _ => ResponseError::InvalidRecord,
    };
    kind.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_documented_codes() {
        let corrupt = StorageError::CorruptRecord {
            reason: "crc".into(),
        };
        assert_eq!(storage_error_code(&corrupt), 2);
        let too_large = StorageError::RecordTooLarge { size: 2, max: 1 };
        assert_eq!(storage_error_code(&too_large), 10);
        let invalid = StorageError::InvalidRecord { reason: "x".into() };
        assert_eq!(storage_error_code(&invalid), 87);
        let tp = rill_storage::TopicPartition::new("t", 0);
        let offline = StorageError::Offline { tp: tp.clone() };
        assert_eq!(storage_error_code(&offline), 56);
        assert_eq!(storage_error_code(&StorageError::Deleted { tp }), 3);
        let invalid_topic = StorageError::InvalidTopic {
            topic: "a/b".into(),
            reason: "slash".into(),
        };
        assert_eq!(storage_error_code(&invalid_topic), 17);
        let tp = rill_storage::TopicPartition::new("t", 0);
        let producer = |source| StorageError::Producer {
            tp: tp.clone(),
            source,
        };
        let gap = ProducerError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            first_seq: 5,
            expected: 2,
        };
        assert_eq!(storage_error_code(&producer(gap)), 45);
        let stale = ProducerError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current: 1,
        };
        assert_eq!(storage_error_code(&producer(stale)), 47);
        let txn = ProducerError::InvalidTxnState {
            producer_id: 1,
            reason: "no transaction",
        };
        assert_eq!(storage_error_code(&producer(txn)), 48);
    }
}
