//! One partition of `__consumer_offsets` and the groups it holds: the group coordinator's
//! [`Shard`].
//!
//! Durable state (committed offsets, transactional offsets pending a marker, a group's
//! existence and deletion) changes only in [`GroupShard::replay`] and
//! [`GroupShard::replay_end_txn`], so a start-up replay rebuilds exactly what the writes built.
//! Membership (members, generations, join and sync phases, waiters) is in-memory state the
//! group operations change directly; a group metadata record is a snapshot of it, written when
//! a rebalance completes and when the group empties. At load such a record restores the
//! group; at run time the group already is in the state it records, so its replay changes
//! nothing (Kafka's classic groups likewise write their metadata record without replaying it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rill_storage::TopicPartition;

use super::consumer::{ConsumerGroup, MemberDeadlines};
use super::consumer_records::ConsumerRecord;
use super::records::StoredRecord;
use super::state::{Committed, Group, GroupState};
use crate::coordinator::runtime::{RecordError, Shard};

/// Offsets a producer's open transaction committed, per (group, partition), until its marker.
type TxnOffsets = HashMap<(String, TopicPartition), Committed>;

pub struct GroupShard {
    groups: HashMap<String, Group>,
    /// Groups of every shard (`group.max.size`'s sibling `max_groups` bounds them all).
    group_count: Arc<AtomicUsize>,
    /// Set once the start-up replay is done (see the module doc on group metadata records).
    loaded: bool,
    /// Transactional offsets not yet committed or aborted, per producer id.
    pending_txn: HashMap<i64, TxnOffsets>,
    /// The producers with pending offsets, per group.
    txn_producers: HashMap<String, HashSet<i64>>,
    /// KIP-848 consumer groups (their committed offsets stay in `groups`, under the same id).
    consumers: HashMap<String, ConsumerGroup>,
    /// Consumer group members' deadlines (in-memory; set by heartbeats, started at load by the
    /// sweep), per group and member.
    pub consumer_deadlines: HashMap<String, HashMap<String, MemberDeadlines>>,
}

impl GroupShard {
    pub fn new(group_count: Arc<AtomicUsize>) -> GroupShard {
        GroupShard {
            groups: HashMap::new(),
            group_count,
            loaded: false,
            pending_txn: HashMap::new(),
            txn_producers: HashMap::new(),
            consumers: HashMap::new(),
            consumer_deadlines: HashMap::new(),
        }
    }

    pub fn consumer_group(&self, id: &str) -> Option<&ConsumerGroup> {
        self.consumers.get(id)
    }

    pub fn consumer_group_mut(&mut self, id: &str) -> Option<&mut ConsumerGroup> {
        self.consumers.get_mut(id)
    }

    pub fn consumer_groups(&self) -> impl Iterator<Item = &ConsumerGroup> {
        self.consumers.values()
    }

    pub fn consumer_groups_mut(&mut self) -> impl Iterator<Item = &mut ConsumerGroup> {
        self.consumers.values_mut()
    }

    /// Whether a new group may be created (`max_groups` counts both kinds).
    pub fn may_create(&self, max_groups: usize) -> bool {
        self.group_count.load(Ordering::Relaxed) < max_groups
    }

    fn replay_consumer(&mut self, record: ConsumerRecord) {
        let id = record.group().to_string();
        if let ConsumerRecord::GroupEpoch { epoch: None, .. } = record {
            if self.consumers.remove(&id).is_some() {
                self.group_count.fetch_sub(1, Ordering::Relaxed);
            }
            self.consumer_deadlines.remove(&id);
            return;
        }
        if record.is_tombstone() && !self.consumers.contains_key(&id) {
            // A tombstone of a removed group (compaction may keep it alone): nothing to do.
            return;
        }
        let count = &self.group_count;
        let g = self.consumers.entry(id.clone()).or_insert_with(|| {
            count.fetch_add(1, Ordering::Relaxed);
            ConsumerGroup::new(&id)
        });
        g.replay(&record);
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn group_mut(&mut self, id: &str) -> Option<&mut Group> {
        self.groups.get_mut(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn groups_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        self.groups.values_mut()
    }

    /// The group, created (Empty) if it does not exist and fewer than `max_groups` exist.
    pub fn group_or_create(&mut self, id: &str, max_groups: usize) -> Option<&mut Group> {
        if !self.groups.contains_key(id) && self.group_count.load(Ordering::Relaxed) >= max_groups {
            return None;
        }
        Some(self.entry(id))
    }

    /// The group, created if missing (replay applies what the log holds, with no limit).
    fn entry(&mut self, id: &str) -> &mut Group {
        let count = &self.group_count;
        self.groups.entry(id.to_string()).or_insert_with(|| {
            count.fetch_add(1, Ordering::Relaxed);
            Group::new(id, super::now_ms())
        })
    }

    fn remove_group(&mut self, id: &str) {
        if let Some(mut g) = self.groups.remove(id) {
            g.set_state(GroupState::Dead, super::now_ms());
            self.group_count.fetch_sub(1, Ordering::Relaxed);
        }
        for producer in self.txn_producers.remove(id).unwrap_or_default() {
            if let Some(offsets) = self.pending_txn.get_mut(&producer) {
                offsets.retain(|(group, _), _| group != id);
            }
        }
    }

    /// Whether an open transaction holds offsets of `group` for `tp` (OffsetFetch with
    /// `require_stable` answers UNSTABLE_OFFSET_COMMIT for it).
    pub fn has_pending_txn_offset(&self, group: &str, tp: &TopicPartition) -> bool {
        let key = (group.to_string(), tp.clone());
        self.txn_producers.get(group).is_some_and(|producers| {
            producers.iter().any(|p| {
                self.pending_txn
                    .get(p)
                    .is_some_and(|offsets| offsets.contains_key(&key))
            })
        })
    }

    /// Whether an open transaction holds offsets of `group` (such a group does not expire).
    pub fn has_pending_txn(&self, group: &str) -> bool {
        self.txn_producers
            .get(group)
            .is_some_and(|producers| !producers.is_empty())
    }

    /// Partitions with offsets of `group` pending in a transaction.
    pub fn pending_txn_partitions(&self, group: &str) -> Vec<TopicPartition> {
        let mut out: Vec<TopicPartition> = self
            .txn_producers
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|p| self.pending_txn.get(p))
            .flat_map(|offsets| offsets.keys())
            .filter(|(g, _)| g == group)
            .map(|(_, tp)| tp.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Drops what the replay left of groups that hold nothing (a group whose only offsets were
    /// aborted), and marks the shard live.
    fn finish_loading(&mut self) {
        let empty: Vec<String> = self
            .groups
            .values()
            .filter(|g| {
                g.offsets.is_empty()
                    && g.members.is_empty()
                    && g.protocol_type.is_none()
                    && !self.has_pending_txn(&g.id)
            })
            .map(|g| g.id.clone())
            .collect();
        for id in empty {
            self.remove_group(&id);
        }
        self.loaded = true;
    }

    fn replay_offset(
        &mut self,
        offset: i64,
        producer: Option<(i64, i16)>,
        group: String,
        tp: TopicPartition,
        value: Option<super::records::OffsetValue>,
    ) {
        match (producer, value) {
            (None, Some(v)) => {
                self.entry(&group)
                    .offsets
                    .insert(tp, Committed::from_record(v, offset));
            }
            (None, None) => {
                // A deleted offset is deleted, pending transactional ones included.
                if let Some(g) = self.groups.get_mut(&group) {
                    g.offsets.remove(&tp);
                }
                let key = (group.clone(), tp);
                let producers: Vec<i64> = self
                    .txn_producers
                    .get(&group)
                    .map(|ps| ps.iter().copied().collect())
                    .unwrap_or_default();
                for p in producers {
                    if let Some(offsets) = self.pending_txn.get_mut(&p) {
                        offsets.remove(&key);
                    }
                    self.forget_if_done(p, &group);
                }
            }
            (Some((producer_id, _)), Some(v)) => {
                self.entry(&group);
                self.txn_producers
                    .entry(group.clone())
                    .or_default()
                    .insert(producer_id);
                self.pending_txn
                    .entry(producer_id)
                    .or_default()
                    .insert((group, tp), Committed::from_record(v, offset));
            }
            (Some((producer_id, _)), None) => {
                if let Some(offsets) = self.pending_txn.get_mut(&producer_id) {
                    offsets.remove(&(group.clone(), tp));
                }
                self.forget_if_done(producer_id, &group);
            }
        }
    }

    /// Drops `producer` from `group`'s producers once it holds no pending offset of it.
    fn forget_if_done(&mut self, producer: i64, group: &str) {
        let holds = self
            .pending_txn
            .get(&producer)
            .is_some_and(|offsets| offsets.keys().any(|(g, _)| g == group));
        if holds {
            return;
        }
        if let Some(producers) = self.txn_producers.get_mut(group) {
            producers.remove(&producer);
            if producers.is_empty() {
                self.txn_producers.remove(group);
            }
        }
    }
}

impl Shard for GroupShard {
    type Record = StoredRecord;

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<StoredRecord>, RecordError> {
        StoredRecord::decode(key, value)
    }

    fn encode(record: &StoredRecord) -> (Bytes, Option<Bytes>) {
        (record.key(), record.value())
    }

    fn replay(&mut self, offset: i64, producer: Option<(i64, i16)>, record: StoredRecord) {
        match record {
            StoredRecord::Offset { group, tp, value } => {
                self.replay_offset(offset, producer, group, tp, value)
            }
            StoredRecord::Group {
                group,
                value: Some(v),
            } => {
                let loaded = self.loaded;
                let g = self.entry(&group);
                if !loaded {
                    g.restore(v, super::timers::now());
                } else if g.members.is_empty() && !v.members.is_empty() {
                    // Only a downgrade writes a group with members the in-memory group does
                    // not have (see `mixed`): the classic group is rebuilt from the record
                    // and rebalances, so its members rejoin under the classic protocol.
                    let now = super::timers::now();
                    g.restore(v, now);
                    g.prepare_rebalance(now, super::now_ms(), std::time::Duration::ZERO);
                }
            }
            StoredRecord::Group { group, value: None } => {
                // A group's committed offsets outlive its classic membership (an upgrade
                // to a consumer group tombstones the classic record and keeps them, as
                // Kafka's offsets live apart from groups): a group with no committed offset
                // goes, with its pending transactional ones (DeleteGroups and retention
                // tombstone every offset first).
                let keep = self
                    .groups
                    .get(&group)
                    .is_some_and(|g| !g.offsets.is_empty());
                match self.groups.get_mut(&group) {
                    Some(g) if keep => g.clear_membership(super::now_ms()),
                    _ => self.remove_group(&group),
                }
            }
            StoredRecord::Consumer(c) => self.replay_consumer(c),
        }
    }

    fn on_loaded(&mut self) {
        self.finish_loading();
    }

    /// A commit makes the producer's pending offsets the committed ones, unless a later
    /// (by log offset) plain commit replaced one meanwhile, as Kafka keeps the most recent; an
    /// abort drops them.
    fn replay_end_txn(&mut self, producer_id: i64, _producer_epoch: i16, commit: bool) {
        let Some(offsets) = self.pending_txn.remove(&producer_id) else {
            return;
        };
        self.txn_producers.retain(|_, producers| {
            producers.remove(&producer_id);
            !producers.is_empty()
        });
        for ((group, tp), committed) in offsets {
            if commit {
                let g = self.entry(&group);
                let newer = g
                    .offsets
                    .get(&tp)
                    .is_none_or(|c| c.record_offset < committed.record_offset);
                if newer {
                    g.offsets.insert(tp, committed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::{GroupValue, OffsetValue};
    use super::*;

    fn shard() -> GroupShard {
        GroupShard::new(Arc::new(AtomicUsize::new(0)))
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn offset(group: &str, p: i32, offset: i64) -> StoredRecord {
        StoredRecord::Offset {
            group: group.into(),
            tp: tp(p),
            value: Some(OffsetValue {
                offset,
                leader_epoch: 0,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            }),
        }
    }

    fn tombstone(group: &str, p: i32) -> StoredRecord {
        StoredRecord::Offset {
            group: group.into(),
            tp: tp(p),
            value: None,
        }
    }

    fn committed(s: &GroupShard, group: &str, p: i32) -> Option<i64> {
        s.group(group)
            .and_then(|g| g.offsets.get(&tp(p)))
            .map(|c| c.offset)
    }

    #[test]
    fn transactional_offsets_wait_for_their_marker() {
        let mut s = shard();
        s.on_loaded();
        s.replay(0, None, offset("g", 0, 5));
        s.replay(1, Some((7, 0)), offset("g", 0, 10));
        s.replay(2, Some((7, 0)), offset("g", 1, 11));
        s.replay(3, Some((8, 0)), offset("g", 2, 12));
        assert_eq!(committed(&s, "g", 0), Some(5), "pending until the marker");
        assert_eq!(committed(&s, "g", 1), None);
        assert!(s.has_pending_txn_offset("g", &tp(0)));
        assert!(!s.has_pending_txn_offset("g", &tp(3)));
        assert!(!s.has_pending_txn_offset("other", &tp(0)));
        assert_eq!(s.pending_txn_partitions("g"), vec![tp(0), tp(1), tp(2)]);

        s.replay_end_txn(7, 0, true);
        assert_eq!(committed(&s, "g", 0), Some(10));
        assert_eq!(committed(&s, "g", 1), Some(11));
        assert!(!s.has_pending_txn_offset("g", &tp(0)));
        assert!(s.has_pending_txn("g"), "producer 8 still holds one");

        s.replay_end_txn(8, 0, false);
        assert_eq!(committed(&s, "g", 2), None, "aborted");
        assert!(!s.has_pending_txn("g"));
        // A marker for a producer with nothing pending here changes nothing.
        s.replay_end_txn(9, 0, true);
        assert_eq!(committed(&s, "g", 0), Some(10));
    }

    /// Of a transactional and a plain commit of one partition, the later record wins, whatever
    /// order the marker comes in (Kafka keeps the most recent by record offset).
    #[test]
    fn a_later_plain_commit_beats_an_earlier_transactional_one() {
        let mut s = shard();
        s.replay(0, Some((7, 0)), offset("g", 0, 10));
        s.replay(1, None, offset("g", 0, 20));
        s.replay_end_txn(7, 0, true);
        assert_eq!(committed(&s, "g", 0), Some(20));

        s.replay(2, None, offset("g", 1, 20));
        s.replay(3, Some((7, 1)), offset("g", 1, 30));
        s.replay_end_txn(7, 1, true);
        assert_eq!(committed(&s, "g", 1), Some(30));
    }

    #[test]
    fn deleting_offsets_or_the_group_drops_pending_ones() {
        let mut s = shard();
        s.on_loaded();
        s.replay(0, Some((7, 0)), offset("g", 0, 10));
        s.replay(1, Some((7, 0)), offset("g", 1, 11));
        s.replay(2, None, tombstone("g", 0));
        assert!(!s.has_pending_txn_offset("g", &tp(0)));
        assert!(s.has_pending_txn_offset("g", &tp(1)));
        s.replay(
            3,
            None,
            StoredRecord::Group {
                group: "g".into(),
                value: None,
            },
        );
        assert!(s.group("g").is_none(), "removed");
        assert!(!s.has_pending_txn("g"));
        s.replay_end_txn(7, 0, true);
        assert!(s.group("g").is_none(), "the commit finds nothing of it");
        assert_eq!(s.group_count.load(Ordering::Relaxed), 0);
    }

    /// At load a group metadata record restores membership; once loaded, the record is a
    /// snapshot of what the operation already did, and replaying it changes nothing.
    #[test]
    fn group_records_restore_at_load_and_are_snapshots_after() {
        let value = |generation_id| GroupValue {
            protocol_type: "consumer".into(),
            generation_id,
            protocol_name: Some("range".into()),
            leader_id: None,
            state_timestamp_ms: 0,
            members: Vec::new(),
        };
        let record = |generation| StoredRecord::Group {
            group: "g".into(),
            value: Some(value(generation)),
        };
        let mut s = shard();
        s.replay(0, None, record(3));
        s.replay(1, None, record(4));
        assert_eq!(s.group("g").unwrap().generation_id, 4);
        s.on_loaded();
        s.group_mut("g").unwrap().generation_id = 6;
        s.replay(2, None, record(5));
        assert_eq!(s.group("g").unwrap().generation_id, 6, "not replayed over");
    }

    #[test]
    fn loading_drops_groups_left_with_nothing_and_counts_groups() {
        let mut s = shard();
        s.replay(0, Some((7, 0)), offset("aborted", 0, 1));
        s.replay(1, None, offset("kept", 0, 1));
        s.replay(2, Some((8, 0)), offset("open", 0, 1));
        s.replay_end_txn(7, 0, false);
        s.on_loaded();
        let mut ids: Vec<&str> = s.groups().map(|g| g.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, vec!["kept", "open"]);
        assert_eq!(s.group_count.load(Ordering::Relaxed), 2);
        assert!(s.group_or_create("new", 2).is_none(), "max_groups reached");
        assert!(s.group_or_create("kept", 2).is_some());
    }
}
