//! Producer state of one partition (Kafka's `ProducerStateManager`, `ProducerStateEntry` and
//! `ProducerAppendInfo`): for every producer id that wrote here, its epoch and its last
//! [`BATCHES_RETAINED`] batches. It is what makes an idempotent producer's retry harmless:
//! the log checks each batch's producer id, epoch and sequence against it before writing.
//!
//! Rules (Kafka 4.x, client-origin appends; checked under the log's append lock, before
//! anything is written, so concurrent producers cannot race and a refused append leaves no
//! trace):
//! - a batch equal (epoch, first and last sequence) to one of the producer's retained batches
//!   is a **duplicate**: the append succeeds with the offsets it got the first time and
//!   writes nothing;
//! - an epoch below the producer's current one is **INVALID_PRODUCER_EPOCH**;
//! - a new (higher) epoch must start at sequence 0 (KIP-360 epoch bumps), unless the producer
//!   is unknown here;
//! - within an epoch the first sequence must follow the last one (wrapping after
//!   `i32::MAX`), else **OUT_OF_ORDER_SEQUENCE_NUMBER**;
//! - a producer unknown here (never seen, or expired) is accepted at any sequence: Kafka 4.x
//!   no longer answers UNKNOWN_PRODUCER_ID (KIP-360), and neither does Rill.
//! - control batches from clients are INVALID_RECORD. (The broker refuses transactional
//!   batches in a produce request without a transactional id before they get here, with
//!   TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka 4.x.)
//!
//! Transactions (Kafka 4.x's `ProducerAppendInfo.appendDataBatch` / `appendEndTxnMarker`):
//! - a transactional batch from a producer with no open transaction here **opens** one, whose
//!   first offset is the batch's (the broker verified the partition is part of the
//!   producer's transaction with the coordinator before appending, KIP-890);
//! - a non-transactional batch from a producer with an open transaction is
//!   **INVALID_TXN_STATE**;
//! - a commit or abort marker ([`ProducerStateManager::check_marker`]) with an epoch below
//!   the producer's is **INVALID_PRODUCER_EPOCH**, with a coordinator epoch below the last
//!   one seen is **TRANSACTION_COORDINATOR_FENCED**; otherwise it closes the open transaction
//!   (if any: a marker with none is still written, as Kafka does), records the coordinator
//!   epoch and may bump the producer epoch (forgetting the old epoch's batches).
//!
//! Open transactions are kept ordered by first offset; the oldest bounds the last stable offset
//! (LSO). A completed transaction still bounds it until its marker is below the high watermark
//! (Kafka's "unreplicated" transactions: here, until the marker is durable under durable
//! visibility), so a read_committed reader never sees data whose marker a crash could lose.
//!
//! Durability: [`ProducerStateManager::encode_snapshot`] writes the whole map as one file
//! `<offset>.snapshot` (20 digits, as Kafka names them) holding the state after every batch
//! below `offset`, with a CRC-32C. The log writes one at its recovery-point checkpoint; on the
//! first batch with a producer id after open it loads the newest snapshot not beyond the log
//! end and replays the batch headers after it ([`ProducerStateManager::replay`]), so
//! deduplication survives SIGKILL and power loss. Snapshots above the recovered end (their
//! batches were lost) are deleted at open.
//!
//! For the log cleaner (compaction): the state lives in snapshots, not only in the log, and
//! the newest snapshot is never older than the last checkpoint, so compaction below it does
//! not change what is loaded. The one case that reads older log is a missing or corrupt
//! snapshot (a rebuild from the log start), or a state never loaded since the last restart
//! (no snapshot written since). To make that rebuild exact the cleaner would have to keep the
//! last batch of each producer id (at least its header) as Kafka's cleaner does; it does not
//! yet (see ARCHITECTURE.md), and it never deletes `.snapshot` files.
//!
//! Open transactions are in the snapshot (each entry's `current_txn_first_offset`) and are
//! rebuilt from it at load ([`ProducerStateManager::decode_snapshot`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::batch::BatchHeader;
use crate::txn_marker::{MarkerRecord, TxnMarker};

/// Batches kept per producer: Kafka clients have at most 5 requests in flight per partition,
/// so a retry is always one of the last 5.
pub const BATCHES_RETAINED: usize = 5;
/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Kafka's `RecordBatch.NO_SEQUENCE`.
pub const NO_SEQUENCE: i32 = -1;
/// Default `producer.id.expiration.ms`: one day, as Kafka.
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;
/// Default `transactional.id.expiration.ms`: seven days, as Kafka (used by the transaction
/// coordinator; accepted now so configurations carry over).
pub const DEFAULT_TRANSACTIONAL_ID_EXPIRATION_MS: i64 = 604_800_000;

/// Snapshot file extension.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// First bytes of a snapshot file (format version 1).
const SNAPSHOT_MAGIC: &[u8; 4] = b"RPS1";
/// Bytes of the fixed part of an entry: id, epoch, coordinator epoch, txn first offset,
/// last timestamp, batch count.
const ENTRY_FIXED_BYTES: usize = 8 + 2 + 4 + 8 + 8 + 1;
/// Bytes of one batch in a snapshot.
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;
/// Header: magic, CRC, entry count.
const SNAPSHOT_HEADER_BYTES: usize = 4 + 4 + 4;

/// Why a producer's batch was refused. The broker maps each to its Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    #[error(
        "out of order sequence for producer {producer_id} epoch {epoch}: batch starts at \
         {first_seq}, expected {expected}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        expected: i32,
    },
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: {reason}")]
    InvalidTxnState {
        producer_id: i64,
        reason: &'static str,
    },
    /// A marker from a transaction coordinator older than the last one that wrote for this
    /// producer (a zombie coordinator): Kafka's TRANSACTION_COORDINATOR_FENCED.
    #[error(
        "marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, older \
         than {current}"
    )]
    TransactionCoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
}

/// A transaction that a marker ended here (Kafka's `CompletedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// One retained batch of a producer: enough to answer its retry with the same offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp.
    pub timestamp_ms: i64,
}

/// A producer's last batches, oldest first, at most [`BATCHES_RETAINED`], held inline: the
/// append path copies an entry per batch, and this keeps that copy free of allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecentBatches {
    items: [BatchMetadata; BATCHES_RETAINED],
    len: u8,
}

impl RecentBatches {
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &BatchMetadata> {
        self.items[..self.len()].iter()
    }

    /// The newest batch.
    pub fn back(&self) -> Option<&BatchMetadata> {
        self.len().checked_sub(1).map(|i| &self.items[i])
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds the newest batch, forgetting the oldest when full.
    pub fn push(&mut self, batch: BatchMetadata) {
        if self.len() == BATCHES_RETAINED {
            self.items.copy_within(1.., 0);
            self.items[BATCHES_RETAINED - 1] = batch;
        } else {
            self.items[self.len()] = batch;
            self.len += 1;
        }
    }
}

/// What the partition knows about one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateEntry {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The last batches of the current epoch, oldest first, at most [`BATCHES_RETAINED`].
    pub batches: RecentBatches,
    /// Epoch of the transaction coordinator that last wrote a marker for this producer (-1:
    /// none yet).
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction here, if one is open.
    pub current_txn_first_offset: Option<i64>,
    /// Timestamp of the producer's last batch; expiry counts from it.
    pub last_timestamp_ms: i64,
}

impl ProducerStateEntry {
    fn empty(producer_id: i64) -> Self {
        ProducerStateEntry {
            producer_id,
            producer_epoch: NO_PRODUCER_EPOCH,
            batches: RecentBatches::default(),
            coordinator_epoch: -1,
            current_txn_first_offset: None,
            last_timestamp_ms: -1,
        }
    }

    /// Sequence of the last record written in the current epoch.
    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    /// The retained batch `(epoch, first_seq, last_seq)` repeats, if any.
    pub fn find_duplicate(
        &self,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Option<BatchMetadata> {
        if epoch != self.producer_epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }

    /// Records a written batch; a new epoch forgets the previous epoch's batches.
    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.producer_epoch {
            self.batches.clear();
            self.producer_epoch = epoch;
        }
        self.batches.push(batch);
        self.last_timestamp_ms = batch.timestamp_ms;
    }

    /// Applies a marker (Kafka's `ProducerStateEntry.update`): a new epoch forgets the old
    /// epoch's batches; the transaction is closed.
    fn apply_marker(&mut self, epoch: i16, coordinator_epoch: i32, timestamp_ms: i64) {
        if epoch != self.producer_epoch {
            self.batches.clear();
            self.producer_epoch = epoch;
        }
        self.coordinator_epoch = coordinator_epoch;
        self.last_timestamp_ms = timestamp_ms;
        self.current_txn_first_offset = None;
    }
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// What a checked batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchVerdict {
    /// Write it (producer state is updated once the write succeeds).
    Append,
    /// A retry of a batch already in the log, at these offsets: write nothing.
    Duplicate(BatchMetadata),
}

/// The producer state of one append in progress: updated copies of the entries it touches,
/// applied with [`ProducerStateManager::commit`] only once the write succeeded.
#[derive(Debug, Default)]
pub struct PendingProducers {
    /// Usually one entry (one producer per partition per request): a vector, not a map.
    updated: Vec<ProducerStateEntry>,
}

/// Every producer id's state in one partition.
#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerStateEntry>,
    /// Open transactions: first offset → producer id (Kafka's `ongoingTxns`). Always the
    /// entries' `current_txn_first_offset`s.
    ongoing: BTreeMap<i64, i64>,
    /// Completed transactions whose marker may not yet be below the high watermark, in marker
    /// order (Kafka's `unreplicatedTxns`). Pruned as the high watermark passes them; bounded
    /// by the markers written since the last flush.
    unreplicated: VecDeque<CompletedTxn>,
    /// Bumped by every change, so a snapshot knows whether it is still current.
    generation: u64,
    /// `generation` when the last snapshot was taken (or loaded).
    snapshot_generation: u64,
    /// Offset of the last snapshot written or loaded.
    last_snapshot_offset: Option<i64>,
}

impl ProducerStateManager {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producer ids known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks one client batch that would be written at `first_offset`, in request order
    /// (earlier batches of the same append are in `pending`). Refuses it with the error
    /// Kafka gives, or says whether to write it or answer it as a duplicate.
    pub fn check_batch(
        &self,
        pending: &mut PendingProducers,
        h: &BatchHeader,
        first_offset: i64,
    ) -> Result<BatchVerdict, BatchCheckError> {
        if h.is_control() {
            return Err(BatchCheckError::Invalid(
                "clients are not allowed to write control records",
            ));
        }
        if h.producer_id < 0 {
            if h.is_transactional() {
                return Err(BatchCheckError::Invalid(
                    "transactional batch without a producer id",
                ));
            }
            return Ok(BatchVerdict::Append);
        }
        if h.base_sequence < 0 {
            return Err(BatchCheckError::Invalid(
                "record batch with a producer id has a negative sequence",
            ));
        }
        let pid = h.producer_id;
        let last_seq = h.last_sequence();
        let current = self.producers.get(&pid);
        // Kafka checks duplicates against the state before this request (one batch per
        // partition per request is what clients send).
        if let Some(dup) =
            current.and_then(|e| e.find_duplicate(h.producer_epoch, h.base_sequence, last_seq))
        {
            return Ok(BatchVerdict::Duplicate(dup));
        }
        let current_epoch = current.map_or(NO_PRODUCER_EPOCH, |e| e.producer_epoch);
        let updated = self.pending_entry(pending, pid);
        if h.producer_epoch < updated.producer_epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id: pid,
                epoch: h.producer_epoch,
                current: updated.producer_epoch,
            }
            .into());
        }
        if h.producer_epoch != updated.producer_epoch {
            // A new epoch (KIP-360 bump) starts its sequences again at 0.
            if h.base_sequence != 0 && updated.producer_epoch != NO_PRODUCER_EPOCH {
                return Err(ProducerError::OutOfOrderSequence {
                    producer_id: pid,
                    epoch: h.producer_epoch,
                    first_seq: h.base_sequence,
                    expected: 0,
                }
                .into());
            }
        } else if current_epoch != NO_PRODUCER_EPOCH
            && !in_sequence(updated.last_seq(), h.base_sequence)
        {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id: pid,
                epoch: h.producer_epoch,
                first_seq: h.base_sequence,
                expected: increment_sequence(updated.last_seq(), 1),
            }
            .into());
        }
        match (updated.current_txn_first_offset, h.is_transactional()) {
            // Opens the producer's transaction here (the broker verified it with the
            // coordinator); `commit` adds it to the open transactions.
            (None, true) => updated.current_txn_first_offset = Some(first_offset),
            (Some(_), false) => {
                return Err(ProducerError::InvalidTxnState {
                    producer_id: pid,
                    reason: "non-transactional batch inside an open transaction",
                }
                .into())
            }
            _ => {}
        }
        updated.add_batch(
            h.producer_epoch,
            BatchMetadata {
                first_seq: h.base_sequence,
                last_seq,
                first_offset,
                last_offset: first_offset + i64::from(h.last_offset_delta),
                timestamp_ms: h.max_timestamp,
            },
        );
        Ok(BatchVerdict::Append)
    }

    /// The entry an append in progress works on: its pending copy, made on first use.
    fn pending_entry<'p>(
        &self,
        pending: &'p mut PendingProducers,
        pid: i64,
    ) -> &'p mut ProducerStateEntry {
        let index = match pending.updated.iter().position(|e| e.producer_id == pid) {
            Some(index) => index,
            None => {
                let entry = self
                    .producers
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| ProducerStateEntry::empty(pid));
                pending.updated.push(entry);
                pending.updated.len() - 1
            }
        };
        &mut pending.updated[index]
    }

    /// Checks a commit or abort marker the transaction coordinator asks to write at `offset`
    /// (Kafka's `appendEndTxnMarker`, coordinator origin). Returns the transaction it ends,
    /// if the producer has one open here; the state changes with [`Self::commit`] once the
    /// marker is written, then [`Self::complete_txn`].
    pub fn check_marker(
        &self,
        pending: &mut PendingProducers,
        marker: &TxnMarker,
        offset: i64,
    ) -> Result<Option<CompletedTxn>, ProducerError> {
        let pid = marker.producer_id;
        let entry = self.pending_entry(pending, pid);
        if marker.producer_epoch < entry.producer_epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id: pid,
                epoch: marker.producer_epoch,
                current: entry.producer_epoch,
            });
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerError::TransactionCoordinatorFenced {
                producer_id: pid,
                coordinator_epoch: marker.coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        let completed = entry.current_txn_first_offset.map(|first| CompletedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: offset,
            aborted: !marker.commit,
        });
        entry.apply_marker(
            marker.producer_epoch,
            marker.coordinator_epoch,
            marker.timestamp_ms,
        );
        Ok(completed)
    }

    /// Applies an append's checked state once its bytes are written, keeping the open
    /// transactions in step with the entries.
    pub fn commit(&mut self, pending: PendingProducers) {
        if pending.updated.is_empty() {
            return;
        }
        for entry in pending.updated {
            let before = self
                .producers
                .get(&entry.producer_id)
                .and_then(|e| e.current_txn_first_offset);
            self.track_txn(entry.producer_id, before, entry.current_txn_first_offset);
            self.producers.insert(entry.producer_id, entry);
        }
        self.generation += 1;
    }

    /// Moves a producer's open transaction in `ongoing` from `before` to `after`.
    fn track_txn(&mut self, pid: i64, before: Option<i64>, after: Option<i64>) {
        if before == after {
            return;
        }
        if let Some(first) = before {
            let removed = self.ongoing.remove(&first);
            debug_assert_eq!(removed, Some(pid));
        }
        if let Some(first) = after {
            let previous = self.ongoing.insert(first, pid);
            debug_assert!(
                previous.is_none(),
                "two transactions open at offset {first}"
            );
        }
    }

    /// Records a transaction a written marker ended: it bounds the LSO until the high
    /// watermark passes its marker.
    pub fn complete_txn(&mut self, txn: CompletedTxn) {
        debug_assert!(self
            .unreplicated
            .back()
            .is_none_or(|t| t.last_offset < txn.last_offset));
        self.unreplicated.push_back(txn);
    }

    /// The first offset of the oldest open transaction (or completed one whose marker is not
    /// yet below `high_watermark`): the LSO, unless the high watermark is lower (Kafka's
    /// `firstUndecidedOffset`).
    pub fn first_undecided_offset(&mut self, high_watermark: i64) -> Option<i64> {
        // Bounded by the markers written since the last flush.
        while self
            .unreplicated
            .front()
            .is_some_and(|t| t.last_offset < high_watermark)
        {
            self.unreplicated.pop_front();
        }
        let unreplicated = self.unreplicated.iter().map(|t| t.first_offset).min();
        let ongoing = self.ongoing.keys().next().copied();
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The partition's LSO once a transaction ended by a marker at `marker_offset` is
    /// complete, as the `.txnindex` records it (Kafka's `lastStableOffset(completedTxn)`):
    /// the oldest other open transaction's first offset, else the offset after the marker.
    /// Called after [`Self::commit`] closed it.
    pub fn stable_offset_after(&self, marker_offset: i64) -> i64 {
        self.ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(marker_offset + 1)
    }

    /// Number of open transactions.
    pub fn open_transactions(&self) -> usize {
        self.ongoing.len()
    }

    /// Every entry, by producer id (DescribeProducers).
    pub fn entries(&self) -> Vec<ProducerStateEntry> {
        let mut out: Vec<ProducerStateEntry> = self.producers.values().cloned().collect();
        out.sort_unstable_by_key(|e| e.producer_id);
        out
    }

    /// Applies a batch read back from the log (recovery), without checks: it was checked when
    /// it was written. `h.base_offset` is its offset in the log; `marker` is what a control
    /// batch says ([`crate::txn_marker::parse_marker`]). Returns the transaction a marker
    /// ended, which is also recorded as by [`Self::complete_txn`].
    pub fn replay(
        &mut self,
        h: &BatchHeader,
        marker: Option<MarkerRecord>,
    ) -> Option<CompletedTxn> {
        if h.producer_id < 0 {
            return None;
        }
        if h.is_control() {
            // An empty or unreadable control batch ends nothing (Kafka's cleaner may empty one).
            let marker = marker?;
            let entry = self
                .producers
                .entry(h.producer_id)
                .or_insert_with(|| ProducerStateEntry::empty(h.producer_id));
            let before = entry.current_txn_first_offset;
            let completed = before.map(|first| CompletedTxn {
                producer_id: h.producer_id,
                first_offset: first,
                last_offset: h.base_offset,
                aborted: !marker.commit,
            });
            entry.apply_marker(h.producer_epoch, marker.coordinator_epoch, h.max_timestamp);
            self.track_txn(h.producer_id, before, None);
            if let Some(txn) = completed {
                self.complete_txn(txn);
            }
            self.generation += 1;
            return completed;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerStateEntry::empty(h.producer_id));
        let before = entry.current_txn_first_offset;
        if h.is_transactional() && before.is_none() {
            entry.current_txn_first_offset = Some(h.base_offset);
        }
        let after = entry.current_txn_first_offset;
        entry.add_batch(
            h.producer_epoch,
            BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: h.last_sequence(),
                first_offset: h.base_offset,
                last_offset: h.last_offset(),
                timestamp_ms: h.max_timestamp,
            },
        );
        self.track_txn(h.producer_id, before, after);
        self.generation += 1;
        None
    }

    /// Forgets producers whose last batch is older than `expiration_ms` before `now_ms` and
    /// that have no open transaction (`producer.id.expiration.ms`). Returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms
        });
        let removed = before - self.producers.len();
        if removed > 0 {
            self.generation += 1;
        }
        removed
    }

    /// Whether a snapshot at the checkpoint would say something the last one does not: the
    /// state changed, or there is none yet at or after `min_offset` (the active segment's
    /// base, so a rebuild after a crash never replays more than about one segment).
    pub fn needs_snapshot(&self, min_offset: i64) -> bool {
        if self.producers.is_empty() && self.last_snapshot_offset.is_none() {
            // Nothing to remember, and no snapshot to supersede.
            return false;
        }
        self.generation != self.snapshot_generation
            || self.last_snapshot_offset.is_none_or(|o| o < min_offset)
    }

    /// Marks the state as snapshotted at `offset` (the caller wrote what
    /// [`Self::encode_snapshot`] returned, taken at `generation`).
    pub fn snapshot_written(&mut self, offset: i64, generation: u64) {
        self.snapshot_generation = generation;
        self.last_snapshot_offset = Some(offset);
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The whole state as snapshot file bytes.
    ///
    /// # Format
    /// ```text
    /// "RPS1" | crc32c u32 (of everything after it) | entry count u32 | entries
    /// entry: producer id i64 | epoch i16 | coordinator epoch i32 | txn first offset i64 (-1)
    ///        | last timestamp i64 | batch count u8 | batches
    /// batch: first seq i32 | last seq i32 | first offset i64 | last offset i64 | timestamp i64
    /// ```
    /// Big-endian, entries sorted by producer id (the same state gives the same bytes).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES
                + ids.len() * (ENTRY_FIXED_BYTES + BATCHES_RETAINED * BATCH_BYTES),
        );
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&e.producer_id.to_be_bytes());
            out.extend_from_slice(&e.producer_epoch.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
            debug_assert!(e.batches.len() <= BATCHES_RETAINED);
            out.push(e.batches.len() as u8);
            for b in e.batches.iter() {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.timestamp_ms.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads snapshot bytes back. Any damage (short, bad magic or CRC, counts that do not fit,
    /// trailing bytes) is an error: the caller then falls back to an older snapshot or the log.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ProducerStateManager, SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError("not a producer state snapshot"));
        }
        let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4-byte slice"));
        if crc32c::crc32c(&bytes[8..]) != crc {
            return Err(SnapshotError("CRC mismatch"));
        }
        let mut r = Reader { bytes, at: 8 };
        let count = r.u32()? as usize;
        // Bounded by the bytes present, not the (checked but still untrusted) count.
        if count > bytes.len() / ENTRY_FIXED_BYTES {
            return Err(SnapshotError("entry count exceeds the file"));
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let producer_id = r.i64()?;
            let producer_epoch = r.i16()?;
            let coordinator_epoch = r.i32()?;
            let txn = r.i64()?;
            let last_timestamp_ms = r.i64()?;
            let batch_count = r.u8()? as usize;
            if batch_count > BATCHES_RETAINED {
                return Err(SnapshotError("too many batches in an entry"));
            }
            let mut batches = RecentBatches::default();
            for _ in 0..batch_count {
                batches.push(BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp_ms: r.i64()?,
                });
            }
            let entry = ProducerStateEntry {
                producer_id,
                producer_epoch,
                batches,
                coordinator_epoch,
                current_txn_first_offset: (txn >= 0).then_some(txn),
                last_timestamp_ms,
            };
            if producers.insert(producer_id, entry).is_some() {
                return Err(SnapshotError("producer id listed twice"));
            }
        }
        if r.at != bytes.len() {
            return Err(SnapshotError("trailing bytes"));
        }
        let ongoing = producers
            .values()
            .filter_map(|e| Some((e.current_txn_first_offset?, e.producer_id)))
            .collect::<BTreeMap<i64, i64>>();
        if ongoing.len()
            != producers
                .values()
                .filter(|e| e.current_txn_first_offset.is_some())
                .count()
        {
            return Err(SnapshotError("two open transactions at one offset"));
        }
        Ok(ProducerStateManager {
            producers,
            ongoing,
            unreplicated: VecDeque::new(),
            generation: 0,
            snapshot_generation: 0,
            last_snapshot_offset: None,
        })
    }
}

/// A check's refusal: malformed for the producer protocol, or refused by producer state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchCheckError {
    Invalid(&'static str),
    Producer(ProducerError),
}

impl From<ProducerError> for BatchCheckError {
    fn from(e: ProducerError) -> Self {
        BatchCheckError::Producer(e)
    }
}

/// A snapshot file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("producer state snapshot unreadable: {0}")]
pub struct SnapshotError(&'static str);

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self.at.checked_add(N).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(SnapshotError("truncated"))?;
        let out = self.bytes[self.at..end].try_into().expect("N-byte slice");
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take::<4>()?))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.take::<8>()?))
    }
    fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.take::<2>()?))
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.take::<4>()?))
    }
}

/// File name of the snapshot at `offset`.
pub fn snapshot_file_name(offset: i64) -> String {
    format!("{offset:020}{SNAPSHOT_SUFFIX}")
}

/// The offset a snapshot file name stands for.
pub fn parse_snapshot_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    (stem.len() == 20).then_some(())?;
    stem.parse().ok().filter(|&o: &i64| o >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_producer_batch, ProducerFields};
    use proptest::prelude::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: usize, attributes: i16) -> BatchHeader {
        let fields = ProducerFields {
            attributes,
            ..ProducerFields::idempotent(pid, epoch, seq)
        };
        BatchHeader::parse(&build_producer_batch(count, b"v", 1_000, fields)).unwrap()
    }

    /// Checks and commits one batch at `offset`.
    fn append(
        m: &mut ProducerStateManager,
        h: &BatchHeader,
        offset: i64,
    ) -> Result<BatchVerdict, BatchCheckError> {
        let mut pending = PendingProducers::default();
        let verdict = m.check_batch(&mut pending, h, offset)?;
        m.commit(pending);
        Ok(verdict)
    }

    #[test]
    fn sequences_wrap_as_kafka() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(!in_sequence(3, 5));
    }

    #[test]
    fn only_the_last_five_batches_are_duplicates() {
        let mut m = ProducerStateManager::new();
        for i in 0..7 {
            assert_eq!(
                append(&mut m, &header(1, 0, i * 2, 2, 0), i64::from(i) * 2),
                Ok(BatchVerdict::Append)
            );
        }
        // Batches 2..7 are retained; batch 0 and 1 are forgotten.
        let dup = append(&mut m, &header(1, 0, 4, 2, 0), 100).unwrap();
        assert!(
            matches!(dup, BatchVerdict::Duplicate(b) if b.first_offset == 4 && b.last_offset == 5)
        );
        let old = append(&mut m, &header(1, 0, 0, 2, 0), 100);
        assert!(matches!(
            old,
            Err(BatchCheckError::Producer(
                ProducerError::OutOfOrderSequence { expected: 14, .. }
            ))
        ));
        // A batch matching only the first sequence is not a duplicate.
        let partial = append(&mut m, &header(1, 0, 4, 1, 0), 100);
        assert!(matches!(
            partial,
            Err(BatchCheckError::Producer(
                ProducerError::OutOfOrderSequence { .. }
            ))
        ));
    }

    #[test]
    fn refused_batches_leave_no_state() {
        let mut m = ProducerStateManager::new();
        let control = append(&mut m, &header(9, 0, 0, 1, 0x20), 0);
        assert!(matches!(control, Err(BatchCheckError::Invalid(_))));
        let negative = append(&mut m, &header(9, 0, -5, 1, 0), 0);
        assert!(matches!(negative, Err(BatchCheckError::Invalid(_))));
        assert!(m.is_empty());
        assert_eq!(m.generation(), 0);
    }

    #[test]
    fn expiry_spares_open_transactions() {
        let mut m = ProducerStateManager::new();
        append(&mut m, &header(1, 0, 0, 1, 0), 0).unwrap();
        append(&mut m, &header(2, 0, 0, 1, 0), 1).unwrap();
        m.producers.get_mut(&2).unwrap().current_txn_first_offset = Some(1);
        assert_eq!(
            m.remove_expired(1_000 + 500, 1_000),
            0,
            "not idle long enough"
        );
        assert_eq!(m.remove_expired(1_000 + 1_000, 1_000), 1);
        assert!(m.get(1).is_none() && m.get(2).is_some());
    }

    fn arb_entry() -> impl Strategy<Value = ProducerStateEntry> {
        (
            any::<i64>(),
            any::<i16>(),
            any::<i32>(),
            proptest::option::of(0i64..i64::MAX),
            any::<i64>(),
            proptest::collection::vec(
                (
                    any::<i32>(),
                    any::<i32>(),
                    any::<i64>(),
                    any::<i64>(),
                    any::<i64>(),
                ),
                0..=BATCHES_RETAINED,
            ),
        )
            .prop_map(|(pid, epoch, coord, txn, ts, batches)| ProducerStateEntry {
                producer_id: pid,
                producer_epoch: epoch,
                batches: {
                    let mut recent = RecentBatches::default();
                    for (a, b, c, d, e) in batches {
                        recent.push(BatchMetadata {
                            first_seq: a,
                            last_seq: b,
                            first_offset: c,
                            last_offset: d,
                            timestamp_ms: e,
                        });
                    }
                    recent
                },
                coordinator_epoch: coord,
                current_txn_first_offset: txn,
                last_timestamp_ms: ts,
            })
    }

    proptest! {
        /// Every state survives a snapshot round trip exactly.
        #[test]
        fn snapshot_round_trips(entries in proptest::collection::vec(arb_entry(), 0..20)) {
            let mut m = ProducerStateManager::new();
            for e in entries {
                m.producers.insert(e.producer_id, e);
            }
            let bytes = m.encode_snapshot();
            let back = ProducerStateManager::decode_snapshot(&bytes).unwrap();
            prop_assert_eq!(&back.producers, &m.producers);
            prop_assert_eq!(back.encode_snapshot(), bytes);
        }

        /// Any flipped bit or truncation is refused, never a panic or a wrong state.
        #[test]
        fn damaged_snapshots_are_refused(entries in proptest::collection::vec(arb_entry(), 1..5), pos in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
            let mut m = ProducerStateManager::new();
            for e in entries {
                m.producers.insert(e.producer_id, e);
            }
            let bytes = m.encode_snapshot();
            let mut flipped = bytes.clone();
            let pos = pos % flipped.len();
            flipped[pos] ^= 1 << bit;
            prop_assert!(ProducerStateManager::decode_snapshot(&flipped).is_err());
            let cut = cut % bytes.len();
            prop_assert!(ProducerStateManager::decode_snapshot(&bytes[..cut]).is_err());
        }

        /// Garbage never panics.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ProducerStateManager::decode_snapshot(&bytes);
        }
    }
}
