//! One KIP-848 consumer group (Kafka's `ConsumerGroup`): members with their epochs, the group
//! epoch, the target assignment the broker's assignor computed, and each member's
//! reconciliation towards it (Kafka's `CurrentAssignmentBuilder`). Pure state and pure
//! functions: no locks, no I/O, `now` passed in.
//!
//! Durable fields change only in [`ConsumerGroup::replay`]; the operations in
//! `consumer_ops.rs` compute records with the functions here and replay them onto a scratch
//! copy to build their answer, and the runtime replays the same records once appended.
//! Deadlines (session, revocation) are in-memory and set by the operations.
//!
//! Reconciliation, per member (the invariant: a partition has at most one owner, counting
//! both assigned and pending-revocation partitions):
//! ```text
//!   Stable ──target epoch moved──▶ compute next:
//!      partitions to revoke?      ──▶ UnrevokedPartitions (epoch kept, new ones withheld)
//!      new ones still owned?      ──▶ UnreleasedPartitions (new epoch, free ones given)
//!      otherwise                  ──▶ Stable at the target epoch
//!   UnrevokedPartitions ──heartbeat shows them revoked──▶ compute next
//!   UnreleasedPartitions ──previous owners released──▶ compute next
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use super::consumer_records::{
    Assignment, ConsumerRecord, CurrentAssignment, MemberMetadata, MemberState,
};

/// The server-side assignors this broker implements, in the default order of
/// `group.consumer.assignors` (Kafka 4's default: uniform, then range).
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// The assignor a `group.consumer.assignors` entry names: a short name, or the class name
/// Kafka's configs use for it. `None` for an assignor this broker does not implement.
pub fn assignor_named(name: &str) -> Option<&'static str> {
    match name.trim() {
        "uniform" | "org.apache.kafka.coordinator.group.assignor.UniformAssignor" => {
            Some("uniform")
        }
        "range" | "org.apache.kafka.coordinator.group.assignor.RangeAssignor" => Some("range"),
        _ => None,
    }
}

/// Topic metadata as the assignor sees it: name → (id, partition count).
pub type TopicsSnapshot = BTreeMap<String, (Uuid, i32)>;

/// The broker's topics as a consumer group sees them.
pub trait TopicLookup {
    /// (id, partition count) of a topic clients may subscribe to.
    fn get(&self, name: &str) -> Option<(Uuid, i32)>;
    /// Whether `pattern` compiles (within the broker's bounds).
    fn is_valid_pattern(&self, pattern: &str) -> bool;
    /// The topic names (internal topics excluded) that `pattern` (already validated)
    /// matches whole. Called on every heartbeat of a group with a regex subscription, so
    /// an implementation caches it until the topic set changes.
    fn matching(&self, pattern: &str) -> Arc<[String]>;
    /// The name of the topic with this id (a classic member's assignment names topics).
    fn name_of(&self, id: &Uuid) -> Option<String>;
}

/// The states Kafka's ListGroups and ConsumerGroupDescribe show for a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerMember {
    pub id: String,
    pub meta: MemberMetadata,
    pub current: CurrentAssignment,
}

/// A member's deadlines: in-memory, kept by the shard beside the group (never replayed).
#[derive(Debug, Clone, Copy)]
pub struct MemberDeadlines {
    /// When the session ends without a heartbeat.
    pub session: Instant,
    /// Set while the member must revoke partitions: past it the member is fenced (its
    /// rebalance timeout).
    pub revocation: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub id: String,
    /// The group epoch: bumped whenever membership, subscriptions or topic metadata change.
    pub epoch: i32,
    /// The hash of the subscribed topics' metadata at the last epoch bump.
    pub metadata_hash: i64,
    /// The epoch of the target assignment.
    pub target_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// Since when (wall ms) the group has had no members, as the sweep saw it: in-memory, for
    /// offset retention (`offsets.retention.minutes` counts from then; after a load, from the
    /// first sweep).
    pub empty_since_ms: Option<i64>,
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            ..ConsumerGroup::default()
        }
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.target_epoch != self.epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            m.current.member_epoch != self.target_epoch || m.current.state != MemberState::Stable
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// The member holding `instance_id`, if any.
    pub fn static_member(&self, instance_id: &str) -> Option<&ConsumerMember> {
        self.members
            .values()
            .find(|m| m.meta.instance_id.as_deref() == Some(instance_id))
    }

    /// Applies one record of this group (the only way its durable fields change).
    pub fn replay(&mut self, record: &ConsumerRecord) {
        match record {
            ConsumerRecord::GroupEpoch { epoch, .. } => {
                if let Some((epoch, hash)) = epoch {
                    self.epoch = *epoch;
                    self.metadata_hash = *hash;
                }
            }
            ConsumerRecord::TargetEpoch { epoch, .. } => {
                if let Some(e) = epoch {
                    self.target_epoch = *e;
                }
            }
            ConsumerRecord::Member { member, value, .. } => match value {
                Some(meta) => {
                    let m = self
                        .members
                        .entry(member.clone())
                        .or_insert_with(|| ConsumerMember {
                            id: member.clone(),
                            ..ConsumerMember::default()
                        });
                    m.meta = meta.clone();
                }
                None => {
                    self.members.remove(member);
                }
            },
            ConsumerRecord::TargetMember { member, value, .. } => match value {
                Some(a) => {
                    self.target.insert(member.clone(), a.clone());
                }
                None => {
                    self.target.remove(member);
                }
            },
            ConsumerRecord::Current { member, value, .. } => {
                if let Some(m) = self.members.get_mut(member) {
                    m.current = value.clone().unwrap_or_default();
                }
            }
        }
    }

    /// Every partition a member other than `except` holds (assigned or pending revocation).
    fn owned_by_others(&self, except: &str) -> HashMap<Uuid, BTreeSet<i32>> {
        let mut owned: HashMap<Uuid, BTreeSet<i32>> = HashMap::new();
        for m in self.members.values().filter(|m| m.id != except) {
            for a in [&m.current.assigned, &m.current.pending_revocation] {
                for (t, ps) in a {
                    owned.entry(*t).or_default().extend(ps);
                }
            }
        }
        owned
    }

    /// The member's next current assignment (Kafka's `CurrentAssignmentBuilder`), given the
    /// partitions its heartbeat says it owns (`None`: not sent).
    pub fn reconcile(&self, member_id: &str, owned: Option<&Assignment>) -> CurrentAssignment {
        let m = &self.members[member_id];
        let c = &m.current;
        let empty = Assignment::new();
        let target = self.target.get(member_id).unwrap_or(&empty);
        match c.state {
            MemberState::Stable if c.member_epoch == self.target_epoch => c.clone(),
            MemberState::Stable => self.next_assignment(member_id, self.target_epoch, target),
            MemberState::UnrevokedPartitions => {
                let still_owns = |owned: &Assignment| {
                    c.pending_revocation.iter().any(|(t, ps)| {
                        owned
                            .get(t)
                            .is_some_and(|o| ps.iter().any(|p| o.contains(p)))
                    })
                };
                match owned {
                    Some(o) if !still_owns(o) => self.next_assignment(
                        member_id,
                        (c.member_epoch + 1).min(self.target_epoch),
                        target,
                    ),
                    _ => c.clone(),
                }
            }
            MemberState::UnreleasedPartitions => {
                self.next_assignment(member_id, self.target_epoch, target)
            }
        }
    }

    fn next_assignment(
        &self,
        member_id: &str,
        target_epoch: i32,
        target: &Assignment,
    ) -> CurrentAssignment {
        let c = &self.members[member_id].current;
        let others = self.owned_by_others(member_id);
        let mut assigned = Assignment::new();
        let mut revoke = Assignment::new();
        let mut unreleased = false;
        let topics: BTreeSet<&Uuid> = c.assigned.keys().chain(target.keys()).collect();
        for t in topics {
            let cur = c.assigned.get(t).cloned().unwrap_or_default();
            let tgt = target.get(t).cloned().unwrap_or_default();
            let mut kept: BTreeSet<i32> = cur.intersection(&tgt).copied().collect();
            let gone: BTreeSet<i32> = cur.difference(&tgt).copied().collect();
            for p in tgt.difference(&cur) {
                if others.get(t).is_some_and(|o| o.contains(p)) {
                    unreleased = true;
                } else {
                    kept.insert(*p);
                }
            }
            if !gone.is_empty() {
                revoke.insert(*t, gone);
            }
            if !kept.is_empty() {
                assigned.insert(*t, kept);
            }
        }
        if !revoke.is_empty() {
            // Keep only what stays; new partitions wait until the revocation is done.
            let kept: Assignment = c
                .assigned
                .iter()
                .filter_map(|(t, ps)| {
                    let tgt = target.get(t)?;
                    let both: BTreeSet<i32> = ps.intersection(tgt).copied().collect();
                    (!both.is_empty()).then_some((*t, both))
                })
                .collect();
            return CurrentAssignment {
                member_epoch: c.member_epoch,
                previous_member_epoch: c.previous_member_epoch,
                state: MemberState::UnrevokedPartitions,
                assigned: kept,
                pending_revocation: revoke,
            };
        }
        CurrentAssignment {
            member_epoch: target_epoch,
            previous_member_epoch: if target_epoch != c.member_epoch {
                c.member_epoch
            } else {
                c.previous_member_epoch
            },
            state: if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            },
            assigned,
            pending_revocation: Assignment::new(),
        }
    }

    /// The topics any member subscribes to, by name or by pattern (`matches` decides a
    /// pattern), that exist in `topics`.
    pub fn subscriptions(&self, topics: &dyn TopicLookup) -> (Subscriptions, TopicsSnapshot) {
        let mut subs = Subscriptions::new();
        let mut snapshot = TopicsSnapshot::new();
        for m in self.members.values() {
            let mine = subs.entry(m.id.clone()).or_default();
            for name in &m.meta.subscribed_topic_names {
                if let Some(t) = topics.get(name) {
                    snapshot.insert(name.clone(), t);
                    mine.insert(name.clone());
                }
            }
            if let Some(re) = &m.meta.subscribed_topic_regex {
                for name in topics.matching(re).iter() {
                    if let Some(t) = topics.get(name) {
                        snapshot.insert(name.clone(), t);
                        mine.insert(name.clone());
                    }
                }
            }
        }
        (subs, snapshot)
    }

    /// The assignor the group runs, of those `enabled` (`group.consumer.assignors`, never
    /// empty): the one most members ask for, else the first enabled. A member's choice of
    /// an assignor no longer enabled (the broker restarted with another list) is ignored.
    pub fn assignor(&self, enabled: &[&'static str]) -> &'static str {
        debug_assert!(
            !enabled.is_empty(),
            "group.consumer.assignors is never empty"
        );
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.meta.server_assignor.as_deref() {
                if enabled.contains(&a) {
                    *votes.entry(a).or_default() += 1;
                }
            }
        }
        let best = votes.into_iter().max_by_key(|(_, n)| *n).map(|(a, _)| a);
        enabled
            .iter()
            .find(|a| Some(**a) == best)
            .or(enabled.first())
            .copied()
            .unwrap_or(ASSIGNORS[0])
    }
}

/// FNV-1a over the sorted (name, id, partitions) of the subscribed topics: a change of any
/// (partitions added, a topic re-created) changes the hash and bumps the group epoch.
pub fn metadata_hash(topics: &TopicsSnapshot) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, (id, partitions)) in topics {
        eat(name.as_bytes());
        eat(&[0]);
        eat(id.as_bytes());
        eat(&partitions.to_be_bytes());
    }
    h as i64
}

/// Each member's subscribed topics (of `topics`).
pub type Subscriptions = BTreeMap<String, BTreeSet<String>>;

/// The `uniform` assignor: every partition of a subscribed topic goes to one subscriber,
/// loads differ by at most one where subscriptions allow, and a partition stays with its
/// previous target owner when that keeps the balance (sticky, so few partitions move).
pub fn assign_uniform(
    subs: &Subscriptions,
    topics: &TopicsSnapshot,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut load: BTreeMap<&str, usize> = subs.keys().map(|m| (m.as_str(), 0)).collect();
    let mut owner: BTreeMap<(String, i32), &str> = BTreeMap::new();
    let eligible = |topic: &str| -> Vec<&str> {
        subs.iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m.as_str())
            .collect()
    };
    let prev_owner: HashMap<(Uuid, i32), &str> = previous
        .iter()
        .flat_map(|(m, a)| {
            a.iter()
                .flat_map(move |(t, ps)| ps.iter().map(move |p| ((*t, *p), m.as_str())))
        })
        .collect();
    // Total partitions and subscribers decide each member's fair share (homogeneous case).
    let total: usize = topics
        .iter()
        .filter(|(name, _)| subs.values().any(|ts| ts.contains(*name)))
        .map(|(_, (_, n))| *n as usize)
        .sum();
    let quota = if subs.is_empty() {
        0
    } else {
        total.div_ceil(subs.len())
    };
    // Sticky pass.
    for (name, (id, n)) in topics {
        let el = eligible(name);
        for p in 0..*n {
            if let Some(m) = prev_owner.get(&(*id, p)) {
                if el.contains(m) && load[m] < quota {
                    *load.get_mut(m).expect("member") += 1;
                    owner.insert((name.clone(), p), m);
                }
            }
        }
    }
    // The rest to the least loaded subscriber.
    for (name, (_, n)) in topics {
        let el = eligible(name);
        if el.is_empty() {
            continue;
        }
        for p in 0..*n {
            if owner.contains_key(&(name.clone(), p)) {
                continue;
            }
            let m = *el
                .iter()
                .min_by_key(|m| (load[*m], **m))
                .expect("non-empty");
            *load.get_mut(m).expect("member") += 1;
            owner.insert((name.clone(), p), m);
        }
    }
    // Heterogeneous subscriptions can leave a member above another that could take over one
    // of its partitions: move such partitions (bounded: each move lowers the imbalance).
    for _ in 0..total {
        let mut moved = false;
        for ((name, p), m) in owner.clone() {
            let el = eligible(&name);
            let Some(least) = el.iter().min_by_key(|x| (load[*x], **x)).copied() else {
                continue;
            };
            if load[m] > load[least] + 1 {
                *load.get_mut(m).expect("member") -= 1;
                *load.get_mut(least).expect("member") += 1;
                owner.insert((name, p), least);
                moved = true;
                break;
            }
        }
        if !moved {
            break;
        }
    }
    collect(subs, topics, owner)
}

/// The `range` assignor: per topic, its subscribers sorted by member id get contiguous ranges
/// (the first `partitions % members` one more).
pub fn assign_range(subs: &Subscriptions, topics: &TopicsSnapshot) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(String, i32), &str> = BTreeMap::new();
    for (name, (_, n)) in topics {
        let el: Vec<&str> = subs
            .iter()
            .filter(|(_, ts)| ts.contains(name))
            .map(|(m, _)| m.as_str())
            .collect();
        if el.is_empty() {
            continue;
        }
        let each = *n as usize / el.len();
        let extra = *n as usize % el.len();
        let mut p = 0;
        for (i, m) in el.iter().enumerate() {
            for _ in 0..each + usize::from(i < extra) {
                owner.insert((name.clone(), p), m);
                p += 1;
            }
        }
    }
    collect(subs, topics, owner)
}

fn collect(
    subs: &Subscriptions,
    topics: &TopicsSnapshot,
    owner: BTreeMap<(String, i32), &str>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for ((name, p), m) in owner {
        let id = topics[&name].0;
        out.get_mut(m)
            .expect("member")
            .entry(id)
            .or_default()
            .insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(n: i32) -> TopicsSnapshot {
        [("t".to_string(), (Uuid::from_u128(1), n))].into()
    }

    fn subs(members: &[&str]) -> Subscriptions {
        members
            .iter()
            .map(|m| (m.to_string(), BTreeSet::from(["t".to_string()])))
            .collect()
    }

    fn count(a: &BTreeMap<String, Assignment>, m: &str) -> usize {
        a[m].values().map(BTreeSet::len).sum()
    }

    #[test]
    fn uniform_is_balanced_complete_and_sticky() {
        let t = topics(6);
        let first = assign_uniform(&subs(&["a", "b", "c"]), &t, &BTreeMap::new());
        for m in ["a", "b", "c"] {
            assert_eq!(count(&first, m), 2);
        }
        // A fourth member: only partitions it needs move; nobody loses more than needed.
        let second = assign_uniform(&subs(&["a", "b", "c", "d"]), &t, &first);
        let all: BTreeSet<i32> = second
            .values()
            .flat_map(|a| a.values().flatten())
            .copied()
            .collect();
        assert_eq!(all, (0..6).collect());
        let moved = ["a", "b", "c"]
            .iter()
            .map(|m| {
                first[*m][&Uuid::from_u128(1)]
                    .difference(
                        &second[*m]
                            .get(&Uuid::from_u128(1))
                            .cloned()
                            .unwrap_or_default(),
                    )
                    .count()
            })
            .sum::<usize>();
        assert_eq!(moved, count(&second, "d"), "only d's partitions moved");
        assert!((1..=2).contains(&count(&second, "d")));
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let a = assign_range(&subs(&["a", "b"]), &topics(5));
        assert_eq!(a["a"][&Uuid::from_u128(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(a["b"][&Uuid::from_u128(1)], BTreeSet::from([3, 4]));
    }

    fn member(g: &mut ConsumerGroup, id: &str, epoch: i32, assigned: &[i32]) {
        let t = Uuid::from_u128(1);
        g.members.insert(
            id.into(),
            ConsumerMember {
                id: id.into(),
                current: CurrentAssignment {
                    member_epoch: epoch,
                    assigned: if assigned.is_empty() {
                        Assignment::new()
                    } else {
                        [(t, assigned.iter().copied().collect())].into()
                    },
                    ..CurrentAssignment::default()
                },
                ..ConsumerMember::default()
            },
        );
    }

    /// A partition moves to its new owner only after the old owner revoked it.
    #[test]
    fn revocation_comes_before_reassignment() {
        let t = Uuid::from_u128(1);
        let mut g = ConsumerGroup::new("g");
        member(&mut g, "a", 1, &[0, 1]);
        member(&mut g, "b", 0, &[]);
        g.epoch = 2;
        g.target_epoch = 2;
        g.target
            .insert("a".into(), [(t, BTreeSet::from([0]))].into());
        g.target
            .insert("b".into(), [(t, BTreeSet::from([1]))].into());

        // b first: partition 1 is still a's, so b is at epoch 2 with nothing yet.
        let b = g.reconcile("b", None);
        assert_eq!(b.state, MemberState::UnreleasedPartitions);
        assert_eq!(b.member_epoch, 2);
        assert!(b.assigned.is_empty());

        // a must revoke 1 and stays at epoch 1 until it does.
        let a = g.reconcile("a", Some(&[(t, BTreeSet::from([0, 1]))].into()));
        assert_eq!(a.state, MemberState::UnrevokedPartitions);
        assert_eq!(a.member_epoch, 1);
        assert_eq!(a.pending_revocation, [(t, BTreeSet::from([1]))].into());
        g.members.get_mut("a").unwrap().current = a;
        let a = g.reconcile("a", Some(&[(t, BTreeSet::from([0, 1]))].into()));
        assert_eq!(a.state, MemberState::UnrevokedPartitions, "still owns 1");
        let a = g.reconcile("a", Some(&[(t, BTreeSet::from([0]))].into()));
        assert_eq!(a.state, MemberState::Stable);
        assert_eq!(a.member_epoch, 2);
        assert_eq!(a.previous_member_epoch, 1);
        g.members.get_mut("a").unwrap().current = a;

        g.members.get_mut("b").unwrap().current = b;
        let b = g.reconcile("b", None);
        assert_eq!(b.state, MemberState::Stable);
        assert_eq!(b.assigned, [(t, BTreeSet::from([1]))].into());
    }

    use proptest::prelude::*;

    /// One step of a simulated group: a member joins or leaves (bumping the epoch and
    /// computing a new target), or heartbeats, revoking first what it was told to revoke when
    /// `revokes` (a slow client does not).
    #[derive(Debug, Clone)]
    enum Step {
        Join(u8),
        Leave(u8),
        Heartbeat { member: u8, revokes: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..5).prop_map(Step::Join),
            (0u8..5).prop_map(Step::Leave),
            ((0u8..5), any::<bool>())
                .prop_map(|(member, revokes)| Step::Heartbeat { member, revokes }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the order of joins, leaves and heartbeats, no partition ever has two
        /// owners (assigned or pending revocation), and members that keep heartbeating end up
        /// with the whole target.
        #[test]
        fn a_partition_never_has_two_owners(steps in proptest::collection::vec(step(), 1..60)) {
            let t = Uuid::from_u128(1);
            let topics = topics(7);
            let mut g = ConsumerGroup::new("g");
            let retarget = |g: &mut ConsumerGroup| {
                g.epoch += 1;
                let subs: Subscriptions = g
                    .members
                    .keys()
                    .map(|m| (m.clone(), BTreeSet::from(["t".to_string()])))
                    .collect();
                g.target = assign_uniform(&subs, &topics, &g.target);
                g.target_epoch = g.epoch;
            };
            let check = |g: &ConsumerGroup| {
                let mut seen = BTreeSet::new();
                for m in g.members.values() {
                    for a in [&m.current.assigned, &m.current.pending_revocation] {
                        for p in a.get(&t).into_iter().flatten() {
                            assert!(seen.insert(*p), "partition {p} has two owners: {g:?}");
                        }
                    }
                }
            };
            for s in steps {
                match s {
                    Step::Join(m) => {
                        let id = format!("m{m}");
                        if !g.members.contains_key(&id) {
                            g.members.insert(id.clone(), ConsumerMember { id, ..ConsumerMember::default() });
                            retarget(&mut g);
                        }
                    }
                    Step::Leave(m) => {
                        if g.members.remove(&format!("m{m}")).is_some() {
                            g.target.remove(&format!("m{m}"));
                            retarget(&mut g);
                        }
                    }
                    Step::Heartbeat { member, revokes } => {
                        let id = format!("m{member}");
                        let Some(m) = g.members.get(&id) else { continue };
                        // What the client owns: everything it was given, minus what it
                        // revoked if it did.
                        let mut owned = m.current.assigned.clone();
                        if !revokes {
                            for (t, ps) in &m.current.pending_revocation {
                                owned.entry(*t).or_default().extend(ps);
                            }
                        }
                        let next = g.reconcile(&id, Some(&owned));
                        g.members.get_mut(&id).expect("member").current = next;
                    }
                }
                check(&g);
            }
            // Everyone heartbeats and revokes until nothing changes (bounded).
            for _ in 0..10 {
                let ids: Vec<String> = g.members.keys().cloned().collect();
                for id in ids {
                    let owned = g.members[&id].current.assigned.clone();
                    let next = g.reconcile(&id, Some(&owned));
                    g.members.get_mut(&id).expect("member").current = next;
                    check(&g);
                }
            }
            for (id, m) in &g.members {
                prop_assert_eq!(m.current.state, MemberState::Stable);
                prop_assert_eq!(m.current.member_epoch, g.target_epoch);
                let empty = Assignment::new();
                prop_assert!(same_parts(&m.current.assigned, g.target.get(id).unwrap_or(&empty)));
            }
        }
    }

    fn same_parts(a: &Assignment, b: &Assignment) -> bool {
        let flat = |a: &Assignment| -> BTreeSet<(Uuid, i32)> {
            a.iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
                .collect()
        };
        flat(a) == flat(b)
    }
}
