//! A transactional id's metadata and the rules that move it from state to state (Kafka's
//! `TransactionMetadata` and the checks of its `TransactionCoordinator`), as pure functions:
//! each takes the current metadata and a request and returns the metadata to write, or the
//! Kafka error to answer. No I/O, so every rule is unit-tested here; `coordinator.rs` appends
//! what they return and the shard replays it.
//!
//! ```text
//!            InitProducerId            AddPartitions/AddOffsets        EndTxn
//!  (none) ─────────────────▶ Empty ──────────────────────────▶ Ongoing ──────▶ PrepareCommit/Abort
//!                              ▲                                  │ timeout         │ markers durable
//!                              │ InitProducerId (epoch + 1)       ▼ (epoch + 1)     ▼
//!                     CompleteCommit/Abort ◀──────────────────── PrepareAbort ─▶ CompleteCommit/Abort
//! ```
//! An InitProducerId for an id with an ongoing transaction fences it: the epoch is bumped, the
//! transaction aborted with the new epoch (so its partitions refuse the old producer), and the
//! caller told CONCURRENT_TRANSACTIONS until the abort is complete (it retries).

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;

/// Kafka's `transaction.max.timeout.ms` default: 15 minutes.
pub const DEFAULT_MAX_TIMEOUT_MS: i32 = 900_000;
/// An epoch this high cannot be bumped again: the id gets a new producer id (Kafka's
/// `isProducerEpochExhausted`, which keeps one epoch for the fencing bump).
const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// Kafka's `TransactionState`, with its stored ids and DescribeTransactions names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use (and their state filters).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: only completion may follow.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What the coordinator knows of one transactional id (one `__transaction_state` value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last epoch exhaustion (-1: none).
    pub prev_producer_id: i64,
    /// A producer id allocated for after this transaction (-1: none; transactions v2).
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, so a retried InitProducerId is recognized (not
    /// stored, as in Kafka; -1 after a restart).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the ongoing (or preparing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction started (-1: none).
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// 0 or 1: the client adds partitions itself; 2: KIP-890 transactions v2.
    pub client_txn_version: i16,
}

impl TxnMetadata {
    /// A new id: no epoch yet (the first InitProducerId bumps it to 0).
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            prev_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            client_txn_version: 0,
        }
    }

    /// The ongoing transaction ran past its timeout.
    pub fn has_timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }

    /// Whether a batch of (producer id, epoch) may be written to `tp` in this transaction
    /// (KIP-890 verification): None if yes, else the error the produce gets.
    pub fn verify(
        &self,
        producer_id: i64,
        epoch: i16,
        tp: &(String, i32),
    ) -> Option<ResponseError> {
        if producer_id != self.producer_id {
            return Some(ResponseError::InvalidProducerIdMapping);
        }
        if epoch < self.producer_epoch {
            return Some(ResponseError::InvalidProducerEpoch);
        }
        if epoch != self.producer_epoch
            || self.state != TxnState::Ongoing
            || !self.partitions.contains(tp)
        {
            return Some(ResponseError::InvalidTxnState);
        }
        None
    }

    fn bumped(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.last_producer_epoch = self.producer_epoch;
        next.producer_epoch = self.producer_epoch.saturating_add(1);
        next.last_update_ms = now_ms;
        next
    }
}

/// A checked transaction timeout, or INVALID_TRANSACTION_TIMEOUT.
pub fn validate_timeout(timeout_ms: i32, max_timeout_ms: i32) -> Result<(), ResponseError> {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        return Err(ResponseError::InvalidTransactionTimeout);
    }
    Ok(())
}

/// What an InitProducerId with a transactional id does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Write this and answer with its producer id and epoch.
    Ready(TxnMetadata),
    /// An ongoing transaction is fenced: write this (PrepareAbort with the bumped epoch),
    /// complete the abort, and answer CONCURRENT_TRANSACTIONS (the client retries).
    FenceOngoing(TxnMetadata),
}

/// InitProducerId for `existing` (None: a new id, given `fresh_producer_id` and its epoch
/// starts at 0). `expected`: the (producer id, epoch) a client sends to bump its own epoch
/// (KIP-360); a mismatch is PRODUCER_FENCED. `new_producer_id` is called when the epoch is
/// exhausted.
pub fn init_producer_id(
    existing: Option<&TxnMetadata>,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    now_ms: i64,
    mut new_producer_id: impl FnMut() -> Result<i64, ResponseError>,
) -> Result<InitOutcome, ResponseError> {
    let Some(m) = existing else {
        if expected.is_some() {
            // A client bumping an epoch the coordinator never gave (or forgot: the id expired).
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        let mut m = TxnMetadata::new(transactional_id, new_producer_id()?, timeout_ms, now_ms);
        m.producer_epoch = 0;
        return Ok(InitOutcome::Ready(m));
    };
    if let Some((pid, epoch)) = expected {
        let current = pid == m.producer_id && epoch == m.producer_epoch;
        let retry = pid == m.producer_id && epoch == m.last_producer_epoch && epoch >= 0;
        let after_overflow = pid == m.prev_producer_id;
        if !(current || retry || after_overflow) {
            return Err(ResponseError::ProducerFenced);
        }
        if (retry || after_overflow) && !m.state.is_preparing() && m.state != TxnState::Ongoing {
            // The bump this client asks for already happened (its answer was lost).
            return Ok(InitOutcome::Ready(m.clone()));
        }
    }
    match m.state {
        TxnState::PrepareCommit
        | TxnState::PrepareAbort
        | TxnState::Dead
        | TxnState::PrepareEpochFence => Err(ResponseError::ConcurrentTransactions),
        TxnState::Ongoing => {
            let mut next = m.bumped(now_ms);
            if m.producer_epoch >= EPOCH_EXHAUSTED {
                // No epoch left to fence with: abort with the current one.
                next.producer_epoch = m.producer_epoch;
            }
            next.state = TxnState::PrepareAbort;
            Ok(InitOutcome::FenceOngoing(next))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let mut next = m.bumped(now_ms);
            if m.producer_epoch >= EPOCH_EXHAUSTED {
                next.prev_producer_id = m.producer_id;
                next.producer_id = new_producer_id()?;
                next.producer_epoch = 0;
                next.last_producer_epoch = -1;
            }
            next.timeout_ms = timeout_ms;
            next.state = TxnState::Empty;
            next.partitions.clear();
            next.start_ms = -1;
            Ok(InitOutcome::Ready(next))
        }
    }
}

/// Checks that (producer id, epoch) is the id's current producer: INVALID_PRODUCER_ID_MAPPING
/// or PRODUCER_FENCED otherwise.
fn check_producer(
    m: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
) -> Result<&TxnMetadata, ResponseError> {
    let m = m.ok_or(ResponseError::InvalidProducerIdMapping)?;
    if m.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if m.producer_epoch != epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(m)
}

/// AddPartitionsToTxn / AddOffsetsToTxn: Some(metadata to write), or None when every partition
/// is already in the ongoing transaction (nothing to write).
pub fn add_partitions(
    existing: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Result<Option<TxnMetadata>, ResponseError> {
    let m = check_producer(existing, producer_id, epoch)?;
    match m.state {
        TxnState::PrepareCommit
        | TxnState::PrepareAbort
        | TxnState::Dead
        | TxnState::PrepareEpochFence => return Err(ResponseError::ConcurrentTransactions),
        TxnState::Ongoing if partitions.iter().all(|tp| m.partitions.contains(tp)) => {
            return Ok(None)
        }
        _ => {}
    }
    let mut next = m.clone();
    if m.state != TxnState::Ongoing {
        next.partitions.clear();
        next.start_ms = now_ms;
    }
    next.state = TxnState::Ongoing;
    next.partitions.extend(partitions.iter().cloned());
    next.last_update_ms = now_ms;
    Ok(Some(next))
}

/// What an EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Write this (PrepareCommit or PrepareAbort), answer once durable, then write the markers.
    Prepare(TxnMetadata),
    /// A retry of an EndTxn that already completed: answer success, write nothing.
    AlreadyDone,
}

/// EndTxn from the client.
pub fn end_txn(
    existing: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndOutcome, ResponseError> {
    let m = check_producer(existing, producer_id, epoch)?;
    match (m.state, commit) {
        (TxnState::Ongoing, _) => Ok(EndOutcome::Prepare(prepare(m, commit, now_ms))),
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
            Ok(EndOutcome::AlreadyDone)
        }
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Err(ResponseError::ConcurrentTransactions)
        }
        _ => Err(ResponseError::InvalidTxnState),
    }
}

fn prepare(m: &TxnMetadata, commit: bool, now_ms: i64) -> TxnMetadata {
    let mut next = m.clone();
    next.state = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    next.last_update_ms = now_ms;
    next
}

/// The abort of a transaction that ran past its timeout: the epoch is bumped (when one is
/// left) so the producer that let it time out is fenced.
pub fn abort_timed_out(m: &TxnMetadata, now_ms: i64) -> Option<TxnMetadata> {
    if !m.has_timed_out(now_ms) {
        return None;
    }
    let mut next = if m.producer_epoch >= EPOCH_EXHAUSTED {
        m.clone()
    } else {
        m.bumped(now_ms)
    };
    next.state = TxnState::PrepareAbort;
    next.last_update_ms = now_ms;
    Some(next)
}

/// The completion written once every marker of a prepared transaction is durable; None if
/// `m` is not prepared (another operation got there first).
pub fn complete(m: &TxnMetadata, now_ms: i64) -> Option<TxnMetadata> {
    let state = match m.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort => TxnState::CompleteAbort,
        _ => return None,
    };
    let mut next = m.clone();
    next.state = state;
    next.partitions.clear();
    next.last_update_ms = now_ms;
    Some(next)
}

/// Whether an idle id may be forgotten (`transactional.id.expiration.ms`): no transaction in
/// flight, and no update for that long.
pub fn is_expired(m: &TxnMetadata, now_ms: i64, expiration_ms: i64) -> bool {
    matches!(
        m.state,
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
    ) && now_ms.saturating_sub(m.last_update_ms) > expiration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    fn no_ids() -> Result<i64, ResponseError> {
        panic!("no new producer id expected")
    }

    fn ready(o: InitOutcome) -> TxnMetadata {
        match o {
            InitOutcome::Ready(m) => m,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn ongoing() -> TxnMetadata {
        let m = ready(init_producer_id(None, "t", 60_000, None, 0, || Ok(7)).unwrap());
        add_partitions(Some(&m), 7, 0, &[tp("a", 0), tp("a", 1)], 10)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_new_id_gets_epoch_zero_and_each_init_bumps_it() {
        let m = ready(init_producer_id(None, "t", 60_000, None, 0, || Ok(7)).unwrap());
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (7, 0, TxnState::Empty)
        );
        let m2 = ready(init_producer_id(Some(&m), "t", 30_000, None, 5, no_ids).unwrap());
        assert_eq!(
            (m2.producer_id, m2.producer_epoch, m2.timeout_ms),
            (7, 1, 30_000)
        );
        // A KIP-360 bump with the current epoch bumps; its retry (the old epoch) does not.
        let m3 = ready(init_producer_id(Some(&m2), "t", 30_000, Some((7, 1)), 6, no_ids).unwrap());
        assert_eq!(m3.producer_epoch, 2);
        let again =
            ready(init_producer_id(Some(&m3), "t", 30_000, Some((7, 1)), 7, no_ids).unwrap());
        assert_eq!(again.producer_epoch, 2);
        // Someone else's id or a stale epoch is fenced.
        assert_eq!(
            init_producer_id(Some(&m3), "t", 30_000, Some((8, 2)), 8, no_ids),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            init_producer_id(Some(&m3), "t", 30_000, Some((7, 0)), 8, no_ids),
            Err(ResponseError::ProducerFenced)
        );
    }

    #[test]
    fn an_exhausted_epoch_moves_to_a_new_producer_id() {
        let mut m = ready(init_producer_id(None, "t", 60_000, None, 0, || Ok(7)).unwrap());
        m.producer_epoch = EPOCH_EXHAUSTED;
        let next = ready(init_producer_id(Some(&m), "t", 60_000, None, 1, || Ok(99)).unwrap());
        assert_eq!(
            (next.producer_id, next.producer_epoch, next.prev_producer_id),
            (99, 0, 7)
        );
    }

    #[test]
    fn init_during_an_ongoing_transaction_fences_and_aborts_it() {
        let m = ongoing();
        let InitOutcome::FenceOngoing(f) =
            init_producer_id(Some(&m), "t", 60_000, None, 20, no_ids).unwrap()
        else {
            panic!("expected a fence")
        };
        assert_eq!((f.state, f.producer_epoch), (TxnState::PrepareAbort, 1));
        assert_eq!(
            f.partitions, m.partitions,
            "the abort covers every partition"
        );
        // While the markers are written, callers retry.
        assert_eq!(
            init_producer_id(Some(&f), "t", 60_000, None, 21, no_ids),
            Err(ResponseError::ConcurrentTransactions)
        );
        let done = complete(&f, 22).unwrap();
        assert_eq!(
            (done.state, done.partitions.len()),
            (TxnState::CompleteAbort, 0)
        );
        let m2 = ready(init_producer_id(Some(&done), "t", 60_000, None, 23, no_ids).unwrap());
        assert_eq!(m2.producer_epoch, 2);
        // The fenced producer's calls now fail.
        assert_eq!(
            add_partitions(Some(&m2), 7, 0, &[tp("a", 0)], 24),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            end_txn(Some(&m2), 7, 0, true, 24),
            Err(ResponseError::ProducerFenced)
        );
    }

    #[test]
    fn add_partitions_opens_and_extends_the_transaction() {
        let m = ongoing();
        assert_eq!(
            (m.state, m.start_ms, m.partitions.len()),
            (TxnState::Ongoing, 10, 2)
        );
        assert_eq!(add_partitions(Some(&m), 7, 0, &[tp("a", 1)], 11), Ok(None));
        let more = add_partitions(Some(&m), 7, 0, &[tp("b", 0)], 12)
            .unwrap()
            .unwrap();
        assert_eq!((more.partitions.len(), more.start_ms), (3, 10));
        assert_eq!(
            add_partitions(None, 7, 0, &[tp("a", 0)], 1),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            add_partitions(Some(&m), 8, 0, &[tp("a", 0)], 1),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        let prepared = prepare(&m, true, 13);
        assert_eq!(
            add_partitions(Some(&prepared), 7, 0, &[tp("a", 0)], 14),
            Err(ResponseError::ConcurrentTransactions)
        );
    }

    #[test]
    fn end_txn_follows_kafkas_table() {
        let m = ongoing();
        let EndOutcome::Prepare(p) = end_txn(Some(&m), 7, 0, true, 20).unwrap() else {
            panic!("expected prepare")
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(
            end_txn(Some(&p), 7, 0, true, 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            end_txn(Some(&p), 7, 0, false, 21),
            Err(ResponseError::InvalidTxnState)
        );
        let c = complete(&p, 22).unwrap();
        assert_eq!(
            end_txn(Some(&c), 7, 0, true, 23),
            Ok(EndOutcome::AlreadyDone)
        );
        assert_eq!(
            end_txn(Some(&c), 7, 0, false, 23),
            Err(ResponseError::InvalidTxnState)
        );
        let empty = ready(init_producer_id(None, "t", 60_000, None, 0, || Ok(7)).unwrap());
        assert_eq!(
            end_txn(Some(&empty), 7, 0, true, 1),
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            end_txn(None, 7, 0, true, 1),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            complete(&c, 24),
            None,
            "only a prepared transaction completes"
        );
    }

    #[test]
    fn timeouts_abort_with_a_bumped_epoch() {
        let m = ongoing();
        assert_eq!(abort_timed_out(&m, 10 + 60_000), None);
        let a = abort_timed_out(&m, 10 + 60_001).unwrap();
        assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 1));
        let v = m.verify(7, 0, &tp("a", 0));
        assert_eq!(v, None);
        assert_eq!(
            a.verify(7, 0, &tp("a", 0)),
            Some(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            m.verify(7, 0, &tp("z", 0)),
            Some(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn timeouts_and_expiry_bounds() {
        assert_eq!(
            validate_timeout(0, DEFAULT_MAX_TIMEOUT_MS),
            Err(ResponseError::InvalidTransactionTimeout)
        );
        assert_eq!(
            validate_timeout(DEFAULT_MAX_TIMEOUT_MS + 1, DEFAULT_MAX_TIMEOUT_MS),
            Err(ResponseError::InvalidTransactionTimeout)
        );
        assert_eq!(validate_timeout(1, DEFAULT_MAX_TIMEOUT_MS), Ok(()));
        let m = ongoing();
        assert!(
            !is_expired(&m, i64::MAX, 1),
            "an ongoing transaction never expires"
        );
        let c = complete(&prepare(&m, false, 20), 30).unwrap();
        assert!(!is_expired(&c, 30 + 1000, 1000));
        assert!(is_expired(&c, 30 + 1001, 1000));
    }
}
