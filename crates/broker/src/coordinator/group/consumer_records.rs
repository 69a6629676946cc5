//! The `__consumer_offsets` records of KIP-848 consumer groups, in Kafka's own schemas so a
//! data directory stays readable by Kafka's tools.
//!
//! ```text
//! key (not flexible): version i16, group string [, member string]
//!   3 ConsumerGroupMetadataKey                value v0: epoch i32
//!   5 ConsumerGroupMemberMetadataKey          value v0: instance id string?, rack string?,
//!                                              client id, client host, topics [string],
//!                                              regex string?, rebalance timeout i32,
//!                                              server assignor string?; tagged field 0:
//!                                              ClassicMemberMetadata { session timeout
//!                                              i32, [protocol name, metadata bytes] }
//!   6 ConsumerGroupTargetAssignmentMetadataKey value v0: assignment epoch i32
//!   7 ConsumerGroupTargetAssignmentMemberKey   value v0: [topic id uuid, partitions [i32]]
//!   8 ConsumerGroupCurrentMemberAssignmentKey  value v0: member epoch i32, previous epoch
//!                                              i32, state i8, assigned [..], pending
//!                                              revocation [..]
//! ```
//! Values are flexible (compact strings and arrays, tagged fields), with the value version
//! (0) first. Tagged fields Kafka added later (metadata hash, assignment epochs) are skipped
//! on decode and not written. Key 4 (partition metadata, which Kafka 4.1 stopped writing) is
//! neither written nor read.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::coordinator::runtime::RecordError;

/// Partitions per topic id, ordered so that encodings and answers are deterministic.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// `ConsumerGroupMemberMetadataValue`: what a member asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberMetadata {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
    /// Set for a member that speaks the classic protocol (JoinGroup/SyncGroup) inside a
    /// consumer group (Kafka's `ClassicMemberMetadata`, tagged field 0); `None` for a
    /// ConsumerGroupHeartbeat member.
    pub classic: Option<ClassicMemberMetadata>,
}

/// What a classic member of a consumer group joined with: its session timeout and the
/// protocols (assignor name, ConsumerProtocolSubscription bytes) of its JoinGroup, in its
/// order of preference. Kept so the group can turn back into a classic group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassicMemberMetadata {
    pub session_timeout_ms: i32,
    pub supported_protocols: Vec<(String, Bytes)>,
}

/// A classic member's protocol list is bounded (JoinGroup itself is bounded by the request
/// size; this bounds what a record may claim).
pub const CLASSIC_PROTOCOLS_MAX: usize = 64;

/// Kafka's `MemberState`, with its stored byte values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemberState {
    #[default]
    Stable,
    /// Must revoke partitions before it moves to the next epoch.
    UnrevokedPartitions,
    /// At the latest epoch, waiting for partitions their previous owners still hold.
    UnreleasedPartitions,
}

impl MemberState {
    fn to_byte(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }

    fn from_byte(b: i8) -> MemberState {
        match b {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }

    /// The name Kafka's tools show.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked_partitions",
            MemberState::UnreleasedPartitions => "unreleased_partitions",
        }
    }
}

/// `ConsumerGroupCurrentMemberAssignmentValue`: where a member is in its reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// One KIP-848 record: key fields and the value (`None` is a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerRecord {
    /// The group epoch and the hash of the subscribed topics' metadata it was computed
    /// with (Kafka's `MetadataHash` tagged field; Rill's own hash function).
    GroupEpoch {
        group: String,
        epoch: Option<(i32, i64)>,
    },
    Member {
        group: String,
        member: String,
        value: Option<MemberMetadata>,
    },
    TargetEpoch {
        group: String,
        epoch: Option<i32>,
    },
    TargetMember {
        group: String,
        member: String,
        value: Option<Assignment>,
    },
    Current {
        group: String,
        member: String,
        value: Option<CurrentAssignment>,
    },
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_compact_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(out, 0),
        Some(s) => {
            put_uvarint(out, s.len() as u64 + 1);
            out.put_slice(s.as_bytes());
        }
    }
}

fn put_assignment(out: &mut BytesMut, a: &Assignment) {
    put_uvarint(out, a.len() as u64 + 1);
    for (id, partitions) in a {
        out.put_slice(id.as_bytes());
        put_uvarint(out, partitions.len() as u64 + 1);
        for p in partitions {
            out.put_i32(*p);
        }
        put_uvarint(out, 0); // tagged fields
    }
}

impl ConsumerRecord {
    pub fn group(&self) -> &str {
        match self {
            ConsumerRecord::GroupEpoch { group, .. }
            | ConsumerRecord::Member { group, .. }
            | ConsumerRecord::TargetEpoch { group, .. }
            | ConsumerRecord::TargetMember { group, .. }
            | ConsumerRecord::Current { group, .. } => group,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        match self {
            ConsumerRecord::GroupEpoch { epoch, .. } => epoch.is_none(),
            ConsumerRecord::TargetEpoch { epoch, .. } => epoch.is_none(),
            ConsumerRecord::Member { value, .. } => value.is_none(),
            ConsumerRecord::TargetMember { value, .. } => value.is_none(),
            ConsumerRecord::Current { value, .. } => value.is_none(),
        }
    }

    pub fn key(&self) -> Bytes {
        let mut out = BytesMut::new();
        let (version, group, member) = match self {
            ConsumerRecord::GroupEpoch { group, .. } => (3, group, None),
            ConsumerRecord::Member { group, member, .. } => (5, group, Some(member)),
            ConsumerRecord::TargetEpoch { group, .. } => (6, group, None),
            ConsumerRecord::TargetMember { group, member, .. } => (7, group, Some(member)),
            ConsumerRecord::Current { group, member, .. } => (8, group, Some(member)),
        };
        out.put_i16(version);
        put_string(&mut out, group);
        if let Some(m) = member {
            put_string(&mut out, m);
        }
        out.freeze()
    }

    pub fn value(&self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        out.put_i16(0);
        match self {
            ConsumerRecord::GroupEpoch { epoch, .. } => {
                let (epoch, hash) = (*epoch)?;
                out.put_i32(epoch);
                // One tagged field: tag 0, 8 bytes, the metadata hash.
                put_uvarint(&mut out, 1);
                put_uvarint(&mut out, 0);
                put_uvarint(&mut out, 8);
                out.put_i64(hash);
                return Some(out.freeze());
            }
            ConsumerRecord::TargetEpoch { epoch, .. } => {
                out.put_i32((*epoch)?);
            }
            ConsumerRecord::Member { value, .. } => {
                let v = value.as_ref()?;
                put_compact_string(&mut out, v.instance_id.as_deref());
                put_compact_string(&mut out, v.rack_id.as_deref());
                put_compact_string(&mut out, Some(&v.client_id));
                put_compact_string(&mut out, Some(&v.client_host));
                put_uvarint(&mut out, v.subscribed_topic_names.len() as u64 + 1);
                for t in &v.subscribed_topic_names {
                    put_compact_string(&mut out, Some(t));
                }
                put_compact_string(&mut out, v.subscribed_topic_regex.as_deref());
                out.put_i32(v.rebalance_timeout_ms);
                put_compact_string(&mut out, v.server_assignor.as_deref());
                if let Some(c) = &v.classic {
                    let mut field = BytesMut::new();
                    field.put_i32(c.session_timeout_ms);
                    put_uvarint(&mut field, c.supported_protocols.len() as u64 + 1);
                    for (name, metadata) in &c.supported_protocols {
                        put_compact_string(&mut field, Some(name));
                        put_uvarint(&mut field, metadata.len() as u64 + 1);
                        field.put_slice(metadata);
                        put_uvarint(&mut field, 0); // tagged fields
                    }
                    put_uvarint(&mut field, 0); // tagged fields
                                                // One tagged field: tag 0, the ClassicMemberMetadata struct.
                    put_uvarint(&mut out, 1);
                    put_uvarint(&mut out, 0);
                    put_uvarint(&mut out, field.len() as u64);
                    out.put_slice(&field);
                    return Some(out.freeze());
                }
            }
            ConsumerRecord::TargetMember { value, .. } => put_assignment(&mut out, value.as_ref()?),
            ConsumerRecord::Current { value, .. } => {
                let v = value.as_ref()?;
                out.put_i32(v.member_epoch);
                out.put_i32(v.previous_member_epoch);
                out.put_i8(v.state.to_byte());
                put_assignment(&mut out, &v.assigned);
                put_assignment(&mut out, &v.pending_revocation);
            }
        }
        put_uvarint(&mut out, 0); // tagged fields
        Some(out.freeze())
    }

    /// Decodes a record of key version 3, 5, 6, 7 or 8 (`key` is past the version);
    /// `Ok(None)` for other versions.
    pub fn decode(
        version: i16,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<ConsumerRecord>, RecordError> {
        let mut k = Reader {
            buf: key,
            what: "consumer group key",
        };
        let group = k.string()?;
        let record = match version {
            3 => ConsumerRecord::GroupEpoch {
                group,
                epoch: value.map(group_epoch_value).transpose()?,
            },
            6 => ConsumerRecord::TargetEpoch {
                group,
                epoch: value
                    .map(|v| epoch_value(v, "target assignment epoch value"))
                    .transpose()?,
            },
            5 | 7 | 8 => {
                let member = k.string()?;
                match version {
                    5 => ConsumerRecord::Member {
                        group,
                        member,
                        value: value.map(member_value).transpose()?,
                    },
                    7 => ConsumerRecord::TargetMember {
                        group,
                        member,
                        value: value
                            .map(|v| {
                                let mut r = Reader::value(v, "target assignment member value")?;
                                r.assignment()
                            })
                            .transpose()?,
                    },
                    _ => ConsumerRecord::Current {
                        group,
                        member,
                        value: value.map(current_value).transpose()?,
                    },
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(record))
    }
}

fn epoch_value(v: &[u8], what: &'static str) -> Result<i32, RecordError> {
    Reader::value(v, what)?.i32()
}

fn group_epoch_value(v: &[u8]) -> Result<(i32, i64), RecordError> {
    let mut r = Reader::value(v, "group epoch value")?;
    let epoch = r.i32()?;
    let mut hash = 0;
    if !r.buf.is_empty() {
        let count = r.uvarint()?;
        for _ in 0..count {
            let tag = r.uvarint()?;
            let len = r.uvarint()? as usize;
            let field = r.take(len)?;
            if tag == 0 && len == 8 {
                hash = i64::from_be_bytes(field.try_into().expect("8"));
            }
        }
    }
    Ok((epoch, hash))
}

fn member_value(v: &[u8]) -> Result<MemberMetadata, RecordError> {
    let mut r = Reader::value(v, "consumer member value")?;
    let instance_id = r.compact_string()?;
    let rack_id = r.compact_string()?;
    let client_id = r.compact_string()?.unwrap_or_default();
    let client_host = r.compact_string()?.unwrap_or_default();
    let n = r.compact_len()?;
    let mut subscribed_topic_names = Vec::with_capacity(n.min(r.buf.len()));
    for _ in 0..n {
        subscribed_topic_names.push(r.compact_string()?.unwrap_or_default());
    }
    let subscribed_topic_regex = r.compact_string()?;
    let rebalance_timeout_ms = r.i32()?;
    let server_assignor = r.compact_string()?;
    let mut classic = None;
    if !r.buf.is_empty() {
        let count = r.uvarint()?;
        for _ in 0..count {
            let tag = r.uvarint()?;
            let len = r.uvarint()? as usize;
            let field = r.take(len)?;
            if tag == 0 {
                classic = Some(classic_value(field)?);
            }
        }
    }
    Ok(MemberMetadata {
        instance_id,
        rack_id,
        client_id,
        client_host,
        subscribed_topic_names,
        subscribed_topic_regex,
        rebalance_timeout_ms,
        server_assignor,
        classic,
    })
}

fn classic_value(field: &[u8]) -> Result<ClassicMemberMetadata, RecordError> {
    let mut r = Reader {
        buf: field,
        what: "classic member metadata",
    };
    let session_timeout_ms = r.i32()?;
    let n = r.compact_len()?;
    if n > CLASSIC_PROTOCOLS_MAX {
        return Err(r.err());
    }
    let mut supported_protocols = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.compact_string()?.unwrap_or_default();
        let len = r.compact_len()?;
        let metadata = Bytes::copy_from_slice(r.take(len)?);
        r.skip_tags()?;
        supported_protocols.push((name, metadata));
    }
    r.skip_tags()?;
    Ok(ClassicMemberMetadata {
        session_timeout_ms,
        supported_protocols,
    })
}

fn current_value(v: &[u8]) -> Result<CurrentAssignment, RecordError> {
    let mut r = Reader::value(v, "current member assignment value")?;
    Ok(CurrentAssignment {
        member_epoch: r.i32()?,
        previous_member_epoch: r.i32()?,
        state: MemberState::from_byte(r.take(1)?[0] as i8),
        assigned: r.assignment()?,
        pending_revocation: r.assignment()?,
    })
}

/// A bounds-checked reader: malformed input is an error, never a panic, and no length is
/// trusted beyond the bytes present.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A value reader past its version (only version 0 is known; later versions of these
    /// schemas only add tagged fields, which are skipped).
    fn value(buf: &'a [u8], what: &'static str) -> Result<Reader<'a>, RecordError> {
        let mut r = Reader { buf, what };
        if r.i16()? < 0 {
            return Err(r.err());
        }
        Ok(r)
    }
    fn err(&self) -> RecordError {
        RecordError::Malformed { what: self.what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Err(self.err());
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err())
    }
    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err())
    }
    /// A compact array's length; never more than the bytes left.
    fn compact_len(&mut self) -> Result<usize, RecordError> {
        let n = self.uvarint()?;
        let n = n.saturating_sub(1) as usize;
        if n > self.buf.len() {
            return Err(self.err());
        }
        Ok(n)
    }
    fn compact_string(&mut self) -> Result<Option<String>, RecordError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let bytes = self.take((n - 1) as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| self.err())
    }
    fn skip_tags(&mut self) -> Result<(), RecordError> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len)?;
        }
        Ok(())
    }
    fn assignment(&mut self) -> Result<Assignment, RecordError> {
        let mut out = Assignment::new();
        for _ in 0..self.compact_len()? {
            let id = Uuid::from_slice(self.take(16)?).map_err(|_| self.err())?;
            let mut partitions = BTreeSet::new();
            for _ in 0..self.compact_len()? {
                partitions.insert(self.i32()?);
            }
            self.skip_tags()?;
            out.entry(id).or_default().extend(partitions);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: ConsumerRecord) {
        let key = r.key();
        let version = i16::from_be_bytes([key[0], key[1]]);
        let value = r.value();
        let got = ConsumerRecord::decode(version, &key[2..], value.as_deref())
            .unwrap()
            .unwrap();
        assert_eq!(got, r);
    }

    #[test]
    fn records_round_trip() {
        let id = Uuid::from_u128(0x1234);
        let a: Assignment = [(id, BTreeSet::from([0, 2, 5]))].into();
        round_trip(ConsumerRecord::GroupEpoch {
            group: "g".into(),
            epoch: Some((7, -3)),
        });
        round_trip(ConsumerRecord::TargetEpoch {
            group: "g".into(),
            epoch: None,
        });
        round_trip(ConsumerRecord::Member {
            group: "g".into(),
            member: "m".into(),
            value: Some(MemberMetadata {
                instance_id: Some("i".into()),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                subscribed_topic_names: vec!["a".into(), "b".into()],
                subscribed_topic_regex: Some("t.*".into()),
                rebalance_timeout_ms: 300_000,
                server_assignor: Some("uniform".into()),
                classic: None,
            }),
        });
        round_trip(ConsumerRecord::Member {
            group: "g".into(),
            member: "classic".into(),
            value: Some(MemberMetadata {
                client_id: "c".into(),
                subscribed_topic_names: vec!["a".into()],
                rebalance_timeout_ms: 60_000,
                classic: Some(ClassicMemberMetadata {
                    session_timeout_ms: 45_000,
                    supported_protocols: vec![
                        ("range".into(), Bytes::from_static(b"\0\x03sub")),
                        ("cooperative-sticky".into(), Bytes::new()),
                    ],
                }),
                ..MemberMetadata::default()
            }),
        });
        round_trip(ConsumerRecord::TargetMember {
            group: "g".into(),
            member: "m".into(),
            value: Some(a.clone()),
        });
        round_trip(ConsumerRecord::Current {
            group: "g".into(),
            member: "m".into(),
            value: Some(CurrentAssignment {
                member_epoch: 4,
                previous_member_epoch: 3,
                state: MemberState::UnrevokedPartitions,
                assigned: a.clone(),
                pending_revocation: [(id, BTreeSet::from([1]))].into(),
            }),
        });
    }

    /// Kafka's `ConsumerGroupMetadataValue` v0 layout: version, epoch, then the tagged
    /// fields (one: tag 0 `MetadataHash`, 8 bytes).
    #[test]
    fn group_epoch_value_is_kafkas_layout() {
        let r = ConsumerRecord::GroupEpoch {
            group: "g".into(),
            epoch: Some((5, 1)),
        };
        assert_eq!(
            &r.value().unwrap()[..],
            &[0, 0, 0, 0, 0, 5, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        // Without the tag (as Kafka before 4.1 wrote it) the hash reads as 0.
        assert_eq!(group_epoch_value(&[0, 0, 0, 0, 0, 5, 0]).unwrap(), (5, 0));
        assert_eq!(&r.key()[..], &[0, 3, 0, 1, b'g']);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], &[0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f], &[0, 0, 5]] {
            for v in [3, 5, 6, 7, 8] {
                let _ = ConsumerRecord::decode(v, &[0, 1, b'g', 0, 1, b'm'], Some(bytes));
            }
        }
        assert!(ConsumerRecord::decode(7, &[0, 1, b'g', 0, 1, b'm'], Some(&[0, 0, 0x7f])).is_err());
    }

    use proptest::prelude::*;

    fn assignment() -> impl Strategy<Value = Assignment> {
        proptest::collection::btree_map(
            any::<u128>().prop_map(Uuid::from_u128),
            proptest::collection::btree_set(0i32..10_000, 1..8),
            0..4,
        )
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{0,20}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_record_round_trips(
            group in name(), member in name(), epoch in any::<i32>(), hash in any::<i64>(),
            topics in proptest::collection::vec(name(), 0..5), regex in proptest::option::of(name()),
            a in assignment(), b in assignment(), state in 0i8..3,
        ) {
            for r in [
                ConsumerRecord::GroupEpoch { group: group.clone(), epoch: Some((epoch, hash)) },
                ConsumerRecord::TargetEpoch { group: group.clone(), epoch: Some(epoch) },
                ConsumerRecord::Member {
                    group: group.clone(),
                    member: member.clone(),
                    value: Some(MemberMetadata {
                        instance_id: regex.clone(),
                        rack_id: None,
                        client_id: member.clone(),
                        client_host: group.clone(),
                        subscribed_topic_names: topics.clone(),
                        subscribed_topic_regex: regex.clone(),
                        rebalance_timeout_ms: epoch,
                        server_assignor: Some("range".into()),
                        classic: regex.clone().map(|r| ClassicMemberMetadata {
                            session_timeout_ms: epoch,
                            supported_protocols: vec![(r.clone(), Bytes::from(r.into_bytes()))],
                        }),
                    }),
                },
                ConsumerRecord::TargetMember { group: group.clone(), member: member.clone(), value: Some(a.clone()) },
                ConsumerRecord::Current {
                    group: group.clone(),
                    member: member.clone(),
                    value: Some(CurrentAssignment {
                        member_epoch: epoch,
                        previous_member_epoch: epoch.wrapping_sub(1),
                        state: MemberState::from_byte(state),
                        assigned: a.clone(),
                        pending_revocation: b.clone(),
                    }),
                },
                ConsumerRecord::Current { group: group.clone(), member: member.clone(), value: None },
            ] {
                round_trip(r);
            }
        }

        /// Any bytes: an error or a record, never a panic.
        #[test]
        fn garbage_values_never_panic(key in proptest::collection::vec(any::<u8>(), 0..40),
                                      value in proptest::collection::vec(any::<u8>(), 0..200)) {
            for v in [3, 5, 6, 7, 8] {
                let _ = ConsumerRecord::decode(v, &key, Some(&value));
            }
        }
    }
}
