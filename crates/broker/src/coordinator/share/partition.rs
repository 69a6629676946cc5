//! One share-partition (KIP-932's `SharePartition`): the records of one topic-partition that
//! one share group has in flight, as pure state (no I/O), unit-tested below.
//!
//! Every offset in `[start_offset, end_offset)` that holds a record has an entry; offsets
//! below `start_offset` are done (acknowledged or archived) and offsets at or past
//! `end_offset` were never acquired. A record is AVAILABLE (may be acquired), ACQUIRED (by
//! one member, under a lock that expires), ACKNOWLEDGED (accepted) or ARCHIVED (rejected, past
//! the delivery limit, a control record, or filtered out). The window `end - start` is
//! bounded by `group.share.partition.max.record.locks`, so an entry map never grows past it.
//!
//! What is durable is the [`PersistedState`] (start offset, and per record its state and
//! delivery count, an ACQUIRED record being persisted as AVAILABLE: locks do not survive a
//! restart). A change that needs persisting is made on a clone, its `persisted()` written,
//! and the clone kept only once the write succeeded (see `coordinator::share`).

use std::collections::BTreeMap;
use std::sync::Arc;

/// The state of one in-flight record (Kafka's `RecordState`; the wire values of
/// `DeliveryState` in the share coordinator's records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available = 0,
    Acquired = 1,
    Acknowledged = 2,
    Archived = 4,
}

impl RecordState {
    pub fn from_wire(v: i8) -> Option<RecordState> {
        match v {
            0 => Some(RecordState::Available),
            1 => Some(RecordState::Acquired),
            2 => Some(RecordState::Acknowledged),
            4 => Some(RecordState::Archived),
            _ => None,
        }
    }

    fn is_terminal(self) -> bool {
        matches!(self, RecordState::Acknowledged | RecordState::Archived)
    }
}

/// What a member does with a record it acquired (ShareFetch/ShareAcknowledge
/// `AcknowledgeTypes`: 0 gap, 1 accept, 2 release, 3 reject).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    Gap,
    Accept,
    Release,
    Reject,
}

impl AckType {
    pub fn from_wire(v: i8) -> Option<AckType> {
        match v {
            0 => Some(AckType::Gap),
            1 => Some(AckType::Accept),
            2 => Some(AckType::Release),
            3 => Some(AckType::Reject),
            _ => None,
        }
    }
}

/// One in-flight record.
#[derive(Debug, Clone)]
struct InFlight {
    state: RecordState,
    delivery_count: i16,
    /// The member holding it while ACQUIRED.
    owner: Option<Arc<str>>,
    /// When its acquisition lock expires (ACQUIRED only).
    lock_deadline_ms: i64,
    /// Not acquired again before this time (the redelivery backoff after a release).
    available_at_ms: i64,
}

/// The settings a share-partition works under (the group's, see `ShareSettings`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `share.record.lock.duration.ms`.
    pub lock_duration_ms: i64,
    /// `group.share.delivery.count.limit`: a record delivered this many times is archived
    /// instead of becoming available again.
    pub delivery_count_limit: i16,
    /// `group.share.partition.max.record.locks`: the in-flight window, in offsets.
    pub max_in_flight: i64,
    /// `rill.share.redelivery.backoff.ms` (0 = none): a released record waits
    /// `backoff * 2^(delivery_count - 1)`, capped at `backoff_max_ms`.
    pub backoff_ms: i64,
    pub backoff_max_ms: i64,
}

/// A record that reached a terminal state without being accepted: a dead letter when the
/// group has a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub offset: i64,
    pub delivery_count: i16,
    /// "rejected" or "delivery count limit reached".
    pub reason: &'static str,
}

/// One range of the persisted state (Kafka's `PersisterStateBatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub state: RecordState,
    pub delivery_count: i16,
}

/// The durable part of a share-partition (Kafka's `ShareSnapshotValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersistedState {
    pub start_offset: i64,
    pub batches: Vec<StateBatch>,
}

/// A range of acquired records for the ShareFetch response (`AcquiredRecords`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_count: i16,
}

/// Why an acknowledgement was refused (the whole partition's batches are refused together,
/// leaving the state unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// A record not acquired by this member, already acknowledged, or whose lock expired
    /// (INVALID_RECORD_STATE).
    InvalidRecordState,
    /// Malformed batches: last before first, a types array of the wrong length, an unknown
    /// type, overlapping or out-of-order batches (INVALID_REQUEST).
    InvalidRequest,
}

/// A new record batch from the log, as acquisition sees it.
#[derive(Debug, Clone, Copy)]
pub struct LogBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    /// Control batches (transaction markers) and records to skip (aborted, filtered out)
    /// are archived without being delivered.
    pub deliver: bool,
}

/// One topic-partition's in-flight records for one share group.
#[derive(Debug, Clone)]
pub struct SharePartition {
    start_offset: i64,
    end_offset: i64,
    records: BTreeMap<i64, InFlight>,
    /// Records archived as dead letters since load (for `rill group describe`).
    pub dead_letters: u64,
}

impl SharePartition {
    /// A share-partition starting at `start_offset` with nothing in flight.
    pub fn new(start_offset: i64) -> SharePartition {
        SharePartition {
            start_offset,
            end_offset: start_offset,
            records: BTreeMap::new(),
            dead_letters: 0,
        }
    }

    /// The share-partition as persisted: every record not terminal is AVAILABLE again, with
    /// its delivery count (an acquisition lost in a crash is delivered again).
    pub fn from_persisted(p: &PersistedState) -> SharePartition {
        let mut sp = SharePartition::new(p.start_offset);
        for b in &p.batches {
            let state = match b.state {
                RecordState::Acquired => RecordState::Available,
                s => s,
            };
            for offset in b.first_offset.max(p.start_offset)..=b.last_offset {
                sp.records.insert(offset, entry(state, b.delivery_count));
                sp.end_offset = sp.end_offset.max(offset + 1);
            }
        }
        sp.advance_start();
        sp
    }

    pub fn start_offset(&self) -> i64 {
        self.start_offset
    }

    /// The next offset to read new records from.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Records in flight (entries between start and end), and how many are acquired.
    pub fn in_flight(&self) -> (usize, usize) {
        let acquired = self
            .records
            .values()
            .filter(|r| r.state == RecordState::Acquired)
            .count();
        (self.records.len(), acquired)
    }

    /// The log start moved past our start (retention, DeleteRecords): what is below it is
    /// gone and can neither be delivered nor acknowledged.
    pub fn skip_to(&mut self, log_start_offset: i64) {
        if log_start_offset <= self.start_offset {
            return;
        }
        self.records = self.records.split_off(&log_start_offset);
        self.start_offset = log_start_offset;
        self.end_offset = self.end_offset.max(log_start_offset);
    }

    /// How many new offsets the window admits.
    pub fn room(&self, limits: &Limits) -> i64 {
        (self.start_offset + limits.max_in_flight - self.end_offset).max(0)
    }

    /// Releases expired locks: each record whose lock ended before `now_ms` becomes
    /// AVAILABLE, or ARCHIVED when it reached the delivery limit (returned as dead letters).
    /// Returns whether anything changed.
    pub fn expire_locks(&mut self, now_ms: i64, limits: &Limits) -> (bool, Vec<DeadLetter>) {
        let mut changed = false;
        let mut dead = Vec::new();
        for (&offset, r) in self.records.iter_mut() {
            if r.state != RecordState::Acquired || r.lock_deadline_ms > now_ms {
                continue;
            }
            changed = true;
            r.owner = None;
            if r.delivery_count >= limits.delivery_count_limit {
                r.state = RecordState::Archived;
                dead.push(DeadLetter {
                    offset,
                    delivery_count: r.delivery_count,
                    reason: "delivery count limit reached (acquisition lock expired)",
                });
            } else {
                r.state = RecordState::Available;
                r.available_at_ms = now_ms;
            }
        }
        self.dead_letters += dead.len() as u64;
        if changed {
            self.advance_start();
        }
        (changed, dead)
    }

    /// The earliest lock deadline or backoff end, to know when to look again.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.records
            .values()
            .filter_map(|r| match r.state {
                RecordState::Acquired => Some(r.lock_deadline_ms),
                RecordState::Available => Some(r.available_at_ms),
                _ => None,
            })
            .min()
    }

    /// Acquires up to `max_records` AVAILABLE records already in the window (redeliveries,
    /// whose backoff has ended), for `member`.
    pub fn acquire_available(
        &mut self,
        member: &Arc<str>,
        now_ms: i64,
        max_records: usize,
        limits: &Limits,
    ) -> Vec<Acquired> {
        let mut out = Vec::new();
        let mut taken = 0;
        for (&offset, r) in self.records.iter_mut() {
            if taken >= max_records {
                break;
            }
            if r.state != RecordState::Available || r.available_at_ms > now_ms {
                continue;
            }
            acquire_one(r, member, now_ms, limits);
            push_acquired(&mut out, offset, r.delivery_count);
            taken += 1;
        }
        out
    }

    /// Acquires new records from the log (batches in offset order, starting at
    /// `end_offset`), whole batches while `max_records` and the window allow (the first one
    /// always, if the window has room for it). A batch larger than the whole window (a
    /// producer's 10 000-record batch against the default 2 000 locks) is taken when nothing
    /// is in flight, so it cannot stall the share-partition forever: the window is then
    /// bounded by the larger of `max_in_flight` and one batch (itself bounded by the
    /// maximum batch size). Records not to deliver are archived.
    pub fn acquire_new(
        &mut self,
        member: &Arc<str>,
        now_ms: i64,
        max_records: usize,
        batches: &[LogBatch],
        limits: &Limits,
    ) -> Vec<Acquired> {
        let mut out = Vec::new();
        let mut taken = 0usize;
        for b in batches {
            if b.last_offset < self.end_offset {
                continue;
            }
            let first = b.first_offset.max(self.end_offset);
            let count = b.last_offset - first + 1;
            let oversized_alone = self.records.is_empty() && taken == 0;
            if (count > self.room(limits) && !oversized_alone)
                || (taken > 0 && taken >= max_records)
            {
                break;
            }
            for offset in first..=b.last_offset {
                if b.deliver {
                    let mut r = entry(RecordState::Available, 0);
                    acquire_one(&mut r, member, now_ms, limits);
                    push_acquired(&mut out, offset, r.delivery_count);
                    self.records.insert(offset, r);
                    taken += 1;
                } else {
                    self.records.insert(offset, entry(RecordState::Archived, 0));
                }
            }
            self.end_offset = b.last_offset + 1;
        }
        self.advance_start();
        out
    }

    /// Applies a member's acknowledgement batches: all of them, or none (the state is left
    /// unchanged on an error). Returns the dead letters (rejected, or released at the
    /// delivery limit).
    ///
    /// # Errors
    /// [`AckError`], see there.
    pub fn acknowledge(
        &mut self,
        member: &str,
        batches: &[(i64, i64, Vec<i8>)],
        now_ms: i64,
        limits: &Limits,
    ) -> Result<Vec<DeadLetter>, AckError> {
        let plan = self.check_acks(member, batches)?;
        let mut dead = Vec::new();
        for (offset, ack) in plan {
            let Some(r) = self.records.get_mut(&offset) else {
                continue; // a gap
            };
            r.owner = None;
            match ack {
                AckType::Accept => r.state = RecordState::Acknowledged,
                AckType::Gap => r.state = RecordState::Archived,
                AckType::Reject => {
                    r.state = RecordState::Archived;
                    dead.push(DeadLetter {
                        offset,
                        delivery_count: r.delivery_count,
                        reason: "rejected",
                    });
                }
                AckType::Release if r.delivery_count >= limits.delivery_count_limit => {
                    r.state = RecordState::Archived;
                    dead.push(DeadLetter {
                        offset,
                        delivery_count: r.delivery_count,
                        reason: "delivery count limit reached",
                    });
                }
                AckType::Release => {
                    r.state = RecordState::Available;
                    r.available_at_ms = now_ms.saturating_add(backoff_ms(r.delivery_count, limits));
                }
            }
        }
        self.dead_letters += dead.len() as u64;
        self.advance_start();
        Ok(dead)
    }

    /// The per-offset plan of `batches`, checked against the state without changing it.
    fn check_acks(
        &self,
        member: &str,
        batches: &[(i64, i64, Vec<i8>)],
    ) -> Result<Vec<(i64, AckType)>, AckError> {
        let mut plan = Vec::new();
        let mut previous_last = i64::MIN;
        for (first, last, types) in batches {
            let (first, last) = (*first, *last);
            if first > last || first <= previous_last {
                return Err(AckError::InvalidRequest);
            }
            previous_last = last;
            let len = last - first + 1;
            // Nothing outside the window can be acknowledged; this also bounds the plan.
            if first < self.start_offset || last >= self.end_offset {
                return Err(AckError::InvalidRecordState);
            }
            if types.len() != 1 && types.len() as i64 != len {
                return Err(AckError::InvalidRequest);
            }
            for offset in first..=last {
                let wire = if types.len() == 1 {
                    types[0]
                } else {
                    types[(offset - first) as usize]
                };
                let ack = AckType::from_wire(wire).ok_or(AckError::InvalidRequest)?;
                match self.records.get(&offset) {
                    Some(r)
                        if r.state == RecordState::Acquired
                            && r.owner.as_deref() == Some(member) => {}
                    // Kafka lets a gap be acknowledged where there is no record.
                    None if ack == AckType::Gap => {}
                    _ => return Err(AckError::InvalidRecordState),
                }
                plan.push((offset, ack));
            }
        }
        Ok(plan)
    }

    /// Makes every record `member` holds available again (its share session closed or it
    /// left the group), as a release without backoff or delivery-count penalty beyond the
    /// delivery already counted. Returns whether anything changed.
    pub fn release_member(
        &mut self,
        member: &str,
        now_ms: i64,
        limits: &Limits,
    ) -> (bool, Vec<DeadLetter>) {
        let mut changed = false;
        for r in self.records.values_mut() {
            if r.state == RecordState::Acquired && r.owner.as_deref() == Some(member) {
                // Expire its lock now; expire_locks applies the delivery limit.
                r.lock_deadline_ms = now_ms;
                changed = true;
            }
        }
        if !changed {
            return (false, Vec::new());
        }
        let (_, dead) = self.expire_locks(now_ms, limits);
        debug_assert!(dead.iter().all(|d| d.delivery_count >= 1));
        (true, dead)
    }

    /// The durable view: start offset and the states and delivery counts of the window,
    /// coalesced into ranges.
    pub fn persisted(&self) -> PersistedState {
        let mut batches: Vec<StateBatch> = Vec::new();
        for (&offset, r) in &self.records {
            let state = match r.state {
                RecordState::Acquired => RecordState::Available,
                s => s,
            };
            match batches.last_mut() {
                Some(b)
                    if b.last_offset + 1 == offset
                        && b.state == state
                        && b.delivery_count == r.delivery_count =>
                {
                    b.last_offset = offset;
                }
                _ => batches.push(StateBatch {
                    first_offset: offset,
                    last_offset: offset,
                    state,
                    delivery_count: r.delivery_count,
                }),
            }
        }
        PersistedState {
            start_offset: self.start_offset,
            batches,
        }
    }

    /// The state of one offset (tests, describe).
    pub fn state_of(&self, offset: i64) -> Option<(RecordState, i16)> {
        if offset < self.start_offset {
            return Some((RecordState::Acknowledged, 0));
        }
        self.records
            .get(&offset)
            .map(|r| (r.state, r.delivery_count))
    }

    /// Moves the start past terminal records and gaps at the front.
    fn advance_start(&mut self) {
        // Bounded by the window: every iteration removes an entry or moves past a gap.
        while self.start_offset < self.end_offset {
            match self.records.first_key_value() {
                Some((&o, r)) if o == self.start_offset && r.state.is_terminal() => {
                    self.records.pop_first();
                    self.start_offset += 1;
                }
                Some((&o, _)) if o > self.start_offset => self.start_offset = o,
                None => self.start_offset = self.end_offset,
                _ => break,
            }
        }
        debug_assert!(self.start_offset <= self.end_offset);
    }
}

fn entry(state: RecordState, delivery_count: i16) -> InFlight {
    InFlight {
        state,
        delivery_count,
        owner: None,
        lock_deadline_ms: 0,
        available_at_ms: 0,
    }
}

fn acquire_one(r: &mut InFlight, member: &Arc<str>, now_ms: i64, limits: &Limits) {
    debug_assert_eq!(r.state, RecordState::Available);
    r.state = RecordState::Acquired;
    r.delivery_count = r.delivery_count.saturating_add(1);
    r.owner = Some(Arc::clone(member));
    r.lock_deadline_ms = now_ms.saturating_add(limits.lock_duration_ms);
}

fn push_acquired(out: &mut Vec<Acquired>, offset: i64, delivery_count: i16) {
    match out.last_mut() {
        Some(a) if a.last_offset + 1 == offset && a.delivery_count == delivery_count => {
            a.last_offset = offset;
        }
        _ => out.push(Acquired {
            first_offset: offset,
            last_offset: offset,
            delivery_count,
        }),
    }
}

/// The redelivery backoff after the `delivery_count`-th delivery was released: exponential
/// from `backoff_ms`, capped at `backoff_max_ms`.
pub fn backoff_ms(delivery_count: i16, limits: &Limits) -> i64 {
    if limits.backoff_ms <= 0 {
        return 0;
    }
    let doublings = u32::try_from(delivery_count.max(1) - 1)
        .unwrap_or(0)
        .min(30);
    limits
        .backoff_ms
        .saturating_mul(1i64 << doublings)
        .min(limits.backoff_max_ms.max(limits.backoff_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            lock_duration_ms: 1_000,
            delivery_count_limit: 3,
            max_in_flight: 100,
            backoff_ms: 0,
            backoff_max_ms: 0,
        }
    }

    fn batch(first: i64, last: i64) -> LogBatch {
        LogBatch {
            first_offset: first,
            last_offset: last,
            deliver: true,
        }
    }

    fn a(first: i64, last: i64, count: i16) -> Acquired {
        Acquired {
            first_offset: first,
            last_offset: last,
            delivery_count: count,
        }
    }

    #[test]
    fn acquire_accept_advances_start() {
        let l = limits();
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(0);
        let got = sp.acquire_new(&m, 0, 10, &[batch(0, 4)], &l);
        assert_eq!(got, vec![a(0, 4, 1)]);
        assert_eq!(sp.end_offset(), 5);
        sp.acknowledge("m1", &[(0, 2, vec![1])], 1, &l).unwrap();
        assert_eq!(sp.start_offset(), 3);
        assert_eq!(sp.in_flight(), (2, 2));
    }

    #[test]
    fn a_batch_larger_than_the_window_is_taken_when_nothing_is_in_flight() {
        let l = limits();
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(0);
        // In flight: a big batch waits for the window to empty.
        sp.acquire_new(&m, 0, 10, &[batch(0, 4)], &l);
        assert_eq!(sp.acquire_new(&m, 0, 10, &[batch(5, 204)], &l), vec![]);
        sp.acknowledge("m1", &[(0, 4, vec![1])], 1, &l).unwrap();
        assert_eq!(sp.in_flight(), (0, 0));
        // Then it is taken whole (more than max_in_flight = 100), and nothing after it.
        let got = sp.acquire_new(&m, 0, 10, &[batch(5, 204), batch(205, 205)], &l);
        assert_eq!(got, vec![a(5, 204, 1)]);
        assert_eq!(sp.end_offset(), 205);
        assert_eq!(sp.room(&l), 0);
    }

    #[test]
    fn bad_acks_leave_the_state_unchanged() {
        let l = limits();
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(0);
        sp.acquire_new(&m, 0, 10, &[batch(0, 4)], &l);
        let before = sp.persisted();
        // Another member's records.
        assert_eq!(
            sp.acknowledge("m2", &[(0, 0, vec![1])], 1, &l),
            Err(AckError::InvalidRecordState)
        );
        // Second batch bad: the first is not applied either.
        assert_eq!(
            sp.acknowledge("m1", &[(0, 0, vec![1]), (1, 1, vec![9])], 1, &l),
            Err(AckError::InvalidRequest)
        );
        assert_eq!(
            sp.acknowledge("m1", &[(0, 3, vec![1, 1])], 1, &l),
            Err(AckError::InvalidRequest)
        );
        assert_eq!(
            sp.acknowledge("m1", &[(3, 9, vec![1])], 1, &l),
            Err(AckError::InvalidRecordState)
        );
        assert_eq!(
            sp.acknowledge("m1", &[(2, 1, vec![1])], 1, &l),
            Err(AckError::InvalidRequest)
        );
        assert_eq!(sp.persisted(), before);
        assert_eq!(sp.state_of(0), Some((RecordState::Acquired, 1)));
        // Acknowledged twice.
        sp.acknowledge("m1", &[(1, 1, vec![1])], 1, &l).unwrap();
        assert_eq!(
            sp.acknowledge("m1", &[(1, 1, vec![1])], 1, &l),
            Err(AckError::InvalidRecordState)
        );
    }

    #[test]
    fn expired_locks_redeliver_then_archive_at_the_limit() {
        let l = limits();
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(0);
        sp.acquire_new(&m, 0, 10, &[batch(0, 0)], &l);
        for delivery in 2..=3 {
            let (changed, dead) = sp.expire_locks(1_000 * (delivery - 1), &l);
            assert!(changed && dead.is_empty());
            // An expired lock cannot be acknowledged.
            assert_eq!(
                sp.acknowledge("m1", &[(0, 0, vec![1])], 0, &l),
                Err(AckError::InvalidRecordState)
            );
            let got = sp.acquire_available(&m, 1_000 * (delivery - 1), 10, &l);
            assert_eq!(got, vec![a(0, 0, delivery as i16)]);
        }
        let (_, dead) = sp.expire_locks(10_000, &l);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].delivery_count, 3);
        assert_eq!(sp.start_offset(), 1);
        assert_eq!(sp.dead_letters, 1);
    }

    #[test]
    fn release_backs_off_exponentially() {
        let mut l = limits();
        l.backoff_ms = 100;
        l.backoff_max_ms = 250;
        l.delivery_count_limit = 10;
        assert_eq!(backoff_ms(1, &l), 100);
        assert_eq!(backoff_ms(2, &l), 200);
        assert_eq!(backoff_ms(3, &l), 250);
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(0);
        sp.acquire_new(&m, 0, 10, &[batch(0, 0)], &l);
        sp.acknowledge("m1", &[(0, 0, vec![2])], 1_000, &l).unwrap();
        assert!(sp.acquire_available(&m, 1_099, 10, &l).is_empty());
        assert_eq!(sp.acquire_available(&m, 1_100, 10, &l), vec![a(0, 0, 2)]);
        sp.acknowledge("m1", &[(0, 0, vec![2])], 2_000, &l).unwrap();
        assert!(sp.acquire_available(&m, 2_199, 10, &l).is_empty());
        assert_eq!(sp.acquire_available(&m, 2_200, 10, &l), vec![a(0, 0, 3)]);
    }

    #[test]
    fn reject_and_release_at_limit_are_dead_letters() {
        let mut l = limits();
        l.delivery_count_limit = 1;
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(0);
        sp.acquire_new(&m, 0, 10, &[batch(0, 2)], &l);
        let dead = sp
            .acknowledge("m1", &[(0, 0, vec![3]), (1, 2, vec![2])], 0, &l)
            .unwrap();
        assert_eq!(dead.len(), 3);
        assert_eq!(dead[0].reason, "rejected");
        assert_eq!(sp.start_offset(), 3);
    }

    #[test]
    fn window_bounds_acquisition_and_skipped_records_are_archived() {
        let mut l = limits();
        l.max_in_flight = 5;
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(0);
        let skip = LogBatch {
            first_offset: 0,
            last_offset: 1,
            deliver: false,
        };
        // The skipped batch moves the start; then 3 + 3 > 5: the second batch waits.
        let got = sp.acquire_new(&m, 0, 100, &[skip, batch(2, 4), batch(5, 7)], &l);
        assert_eq!(got, vec![a(2, 4, 1)]);
        assert_eq!(sp.start_offset(), 2);
        assert_eq!(sp.room(&l), 2);
        let got = sp.acquire_new(&m, 0, 100, &[batch(5, 7)], &l);
        assert!(got.is_empty());
    }

    #[test]
    fn persisted_state_round_trips_acquired_as_available() {
        let l = limits();
        let m: Arc<str> = "m1".into();
        let mut sp = SharePartition::new(10);
        sp.acquire_new(&m, 0, 100, &[batch(10, 19)], &l);
        sp.acknowledge("m1", &[(12, 13, vec![1]), (15, 15, vec![2])], 0, &l)
            .unwrap();
        let p = sp.persisted();
        let back = SharePartition::from_persisted(&p);
        assert_eq!(back.start_offset(), 10);
        assert_eq!(back.end_offset(), 20);
        assert_eq!(back.state_of(10), Some((RecordState::Available, 1)));
        assert_eq!(back.state_of(12), Some((RecordState::Acknowledged, 1)));
        assert_eq!(back.state_of(15), Some((RecordState::Available, 1)));
        assert_eq!(back.in_flight(), (10, 0));
    }

    #[test]
    fn releasing_a_member_frees_only_its_records() {
        let l = limits();
        let (m1, m2): (Arc<str>, Arc<str>) = ("m1".into(), "m2".into());
        let mut sp = SharePartition::new(0);
        sp.acquire_new(&m1, 0, 2, &[batch(0, 1)], &l);
        sp.acquire_new(&m2, 0, 2, &[batch(2, 3)], &l);
        assert!(sp.release_member("m1", 5, &l).0);
        assert_eq!(sp.state_of(0), Some((RecordState::Available, 1)));
        assert_eq!(sp.state_of(2), Some((RecordState::Acquired, 1)));
        assert_eq!(sp.acquire_available(&m2, 5, 10, &l), vec![a(0, 1, 2)]);
    }
}
