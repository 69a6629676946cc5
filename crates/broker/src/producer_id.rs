//! InitProducerId (22): hands out producer ids so idempotent producers can start, and the
//! block allocator that keeps them unique across restarts.
//!
//! As Kafka 4.x for a request without a transactional id: always a fresh producer id with
//! epoch 0, whatever id and epoch the client sent (its KIP-360 epoch bumps for idempotent
//! producers happen in the client, and the partitions accept a bumped epoch at sequence 0).
//! A request with a transactional id goes to the transaction coordinator
//! (`coordinator::txn`), which keeps one producer id per transactional id and bumps its epoch.
//!
//! Ids come in blocks of [`BLOCK_SIZE`], as Kafka's controller hands them to brokers: before
//! the first id of a block is handed out, the end of the block is written durably to
//! `rill-producer-ids.meta`, so after any crash the broker starts past every id it ever gave.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use parking_lot::Mutex;
use rill_storage::file_io::{write_atomically, OsIo};

use crate::error::NONE;
use crate::state::BrokerState;

/// File in the data directory holding the first id of the next block.
pub const PRODUCER_ID_FILE: &str = "rill-producer-ids.meta";
/// Ids per durable allocation: one fsync per 1000 producers, as Kafka's blocks.
pub const BLOCK_SIZE: i64 = 1000;

/// Why the allocator cannot hand out ids.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt: {content:?}")]
    Corrupt { path: PathBuf, content: String },
    #[error("producer ids exhausted")]
    Exhausted,
}

#[derive(Debug)]
struct Block {
    next: i64,
    /// First id past the current block; persisted before any id of the block is handed out.
    end: i64,
}

/// Unique producer ids, across restarts.
#[derive(Debug)]
pub struct ProducerIdManager {
    path: PathBuf,
    block: Mutex<Block>,
}

impl ProducerIdManager {
    /// Reads the allocation state from `data_dir`. On a data directory that has none (new, or
    /// written by a version that took ids from the clock), ids start from `now_ms * 1024`,
    /// above anything the clock-based scheme gave out.
    ///
    /// # Errors
    /// An unreadable or corrupt file: handing out ids without it could repeat one.
    pub fn open(data_dir: &Path, now_ms: i64) -> Result<ProducerIdManager, ProducerIdError> {
        let path = data_dir.join(PRODUCER_ID_FILE);
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| ProducerIdError::Corrupt {
                path: path.clone(),
                content: text.chars().take(80).collect(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => now_ms.max(1).saturating_mul(1024),
            Err(source) => return Err(ProducerIdError::Io { path, source }),
        };
        Ok(ProducerIdManager {
            path,
            block: Mutex::new(Block {
                next: start,
                end: start,
            }),
        })
    }

    /// The next unused id. Blocking: allocating a block writes and syncs a file (once per
    /// [`BLOCK_SIZE`] ids); run it on the blocking pool.
    ///
    /// # Errors
    /// The block could not be persisted; no id is handed out then.
    pub fn next_id(&self) -> Result<i64, ProducerIdError> {
        let mut block = self.block.lock();
        if block.next >= block.end {
            let end = block
                .next
                .checked_add(BLOCK_SIZE)
                .ok_or(ProducerIdError::Exhausted)?;
            let text = format!("{end} {:08x}\n", crc32c::crc32c(end.to_string().as_bytes()));
            write_atomically(&OsIo, &self.path, text.as_bytes()).map_err(|source| {
                ProducerIdError::Io {
                    path: self.path.clone(),
                    source,
                }
            })?;
            block.end = end;
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }
}

/// `"<next block start> <crc32c of the number, hex>"`.
fn parse(text: &str) -> Option<i64> {
    let (number, crc) = text.trim().split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    (crc32c::crc32c(number.as_bytes()) == crc).then_some(())?;
    number.parse().ok().filter(|&n: &i64| n >= 0)
}

fn refused(code: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

/// With a transactional id: the transaction coordinator's producer id and bumped epoch
/// (fencing any earlier producer of the id). An empty id is INVALID_REQUEST, as in Kafka.
async fn transactional(
    state: &Arc<BrokerState>,
    version: i16,
    transactional_id: &str,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    // v3+ (KIP-360): a producer that knows its id and epoch asks to bump that epoch.
    let expected =
        (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    match state
        .txns
        .init_producer_id(transactional_id, request.transaction_timeout_ms, expected)
        .await
    {
        Ok((producer_id, epoch)) => InitProducerIdResponse::default()
            .with_error_code(NONE)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => refused(crate::txn_api::fenced_code(e.code(), version, 4)),
    }
}

/// A fresh producer id with epoch 0 for an idempotent producer; for a transactional one, the
/// transaction coordinator's answer.
pub async fn handle(
    state: &Arc<BrokerState>,
    version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if let Some(id) = &request.transactional_id {
        return transactional(state, version, &id.0, &request).await;
    }
    let ids = Arc::clone(state);
    let allocated = tokio::task::spawn_blocking(move || ids.producer_ids.next_id()).await;
    match allocated {
        Ok(Ok(producer_id)) => {
            tracing::debug!(producer_id, "allocated producer id");
            InitProducerIdResponse::default()
                .with_error_code(NONE)
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(0)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            refused(ResponseError::KafkaStorageError.code())
        }
        Err(e) => {
            tracing::error!(error = %e, "producer id allocation task failed");
            refused(ResponseError::UnknownServerError.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopens_and_blocks_are_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            let m = ProducerIdManager::open(dir.path(), 5).unwrap();
            // Crossing a block boundary in some rounds, stopping mid-block in all.
            for _ in 0..(BLOCK_SIZE + 10 * round) {
                assert!(
                    seen.insert(m.next_id().unwrap()),
                    "round {round}: id repeated"
                );
            }
        }
        assert!(seen.iter().all(|&id| id >= 5 * 1024));
    }

    #[test]
    fn a_corrupt_allocation_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PRODUCER_ID_FILE), "12345 deadbeef\n").unwrap();
        assert!(matches!(
            ProducerIdManager::open(dir.path(), 1),
            Err(ProducerIdError::Corrupt { .. })
        ));
        std::fs::write(dir.path().join(PRODUCER_ID_FILE), "garbage").unwrap();
        assert!(ProducerIdManager::open(dir.path(), 1).is_err());
    }
}
