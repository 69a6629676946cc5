//! The `__consumer_offsets` topic: where committed offsets and group metadata live, in
//! Kafka's own key and value schemas so that tools that read that topic understand it.
//!
//! ```text
//! offset commit   key   v1: group string, topic string, partition i32
//!                 value v3: offset i64, leader epoch i32, metadata string, commit time i64
//! group metadata  key   v2: group string
//!                 value v3: protocol type string, generation i32, protocol string?,
//!                           leader string?, state time i64, members [member]
//!                 member:   id string, instance id string?, client id string, client host
//!                           string, rebalance timeout i32, session timeout i32,
//!                           subscription bytes, assignment bytes
//! ```
//! KIP-848 consumer groups' records (key versions 3 to 8) are in `consumer_records.rs`.
//! A null value is a tombstone. Each group lives in one partition, chosen as Kafka does from
//! the Java hash of its id, so a group's records are totally ordered.

use bytes::{BufMut, Bytes, BytesMut};
use rill_storage::TopicPartition;

use crate::coordinator::runtime::RecordError;

/// The internal topic's name, as in Kafka.
pub const TOPIC: &str = "__consumer_offsets";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// One record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRecord {
    Offset {
        group: String,
        tp: TopicPartition,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
    /// A KIP-848 consumer group's record (key versions 3, 5, 6, 7, 8).
    Consumer(super::consumer_records::ConsumerRecord),
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

/// A bounds-checked reader: malformed input is an error, never a panic.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Malformed { what: self.what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| RecordError::Malformed { what: self.what })
    }
    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?
            .ok_or(RecordError::Malformed { what: self.what })
    }
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

impl StoredRecord {
    /// The stored key (Kafka's key schema, version first).
    pub fn key(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            StoredRecord::Consumer(c) => return c.key(),
            StoredRecord::Offset { group, tp, .. } => {
                out.put_i16(1);
                put_string(&mut out, group);
                put_string(&mut out, &tp.topic);
                out.put_i32(tp.partition);
            }
            StoredRecord::Group { group, .. } => {
                out.put_i16(2);
                put_string(&mut out, group);
            }
        }
        out.freeze()
    }

    /// The stored value; `None` is a tombstone.
    pub fn value(&self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        match self {
            StoredRecord::Consumer(c) => return c.value(),
            StoredRecord::Offset { value: None, .. } | StoredRecord::Group { value: None, .. } => {
                return None
            }
            StoredRecord::Offset { value: Some(v), .. } => {
                out.put_i16(3);
                out.put_i64(v.offset);
                out.put_i32(v.leader_epoch);
                put_string(&mut out, &v.metadata);
                out.put_i64(v.commit_timestamp_ms);
            }
            StoredRecord::Group { value: Some(v), .. } => {
                out.put_i16(3);
                put_string(&mut out, &v.protocol_type);
                out.put_i32(v.generation_id);
                put_nullable_string(&mut out, v.protocol_name.as_deref());
                put_nullable_string(&mut out, v.leader_id.as_deref());
                out.put_i64(v.state_timestamp_ms);
                out.put_i32(v.members.len() as i32);
                for m in &v.members {
                    put_string(&mut out, &m.member_id);
                    put_nullable_string(&mut out, m.group_instance_id.as_deref());
                    put_string(&mut out, &m.client_id);
                    put_string(&mut out, &m.client_host);
                    out.put_i32(m.rebalance_timeout_ms);
                    out.put_i32(m.session_timeout_ms);
                    put_bytes(&mut out, &m.subscription);
                    put_bytes(&mut out, &m.assignment);
                }
            }
        }
        Some(out.freeze())
    }

    /// Decodes a record; `Ok(None)` for key versions this broker does not know (skipped, as a
    /// newer Kafka's records would be).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<StoredRecord>, RecordError> {
        let mut k = Reader {
            buf: key,
            what: "key",
        };
        match k.i16()? {
            0 | 1 => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let tp = TopicPartition::new(topic, partition);
                let value = value.map(decode_offset_value).transpose()?;
                Ok(Some(StoredRecord::Offset { group, tp, value }))
            }
            2 => {
                let group = k.string()?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(Some(StoredRecord::Group { group, value }))
            }
            v @ (3 | 5 | 6 | 7 | 8) => Ok(super::consumer_records::ConsumerRecord::decode(
                v, k.buf, value,
            )?
            .map(StoredRecord::Consumer)),
            _ => Ok(None),
        }
    }
}

fn decode_offset_value(bytes: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader {
        buf: bytes,
        what: "offset value",
    };
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp_ms = r.i64()?;
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(bytes: &[u8]) -> Result<GroupValue, RecordError> {
    let mut r = Reader {
        buf: bytes,
        what: "group value",
    };
    let version = r.i16()?;
    if version != 3 {
        return Err(RecordError::Malformed {
            what: "group value version",
        });
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol_name = r.nullable_string()?;
    let leader_id = r.nullable_string()?;
    let state_timestamp_ms = r.i64()?;
    let count = r.i32()?;
    // Bounded by the bytes present: each member takes at least 28 bytes.
    if count < 0 || count as usize > r.buf.len() / 28 {
        return Err(RecordError::Malformed {
            what: "group member count",
        });
    }
    let mut members = Vec::with_capacity(count as usize);
    for _ in 0..count {
        members.push(MemberValue {
            member_id: r.string()?,
            group_instance_id: r.nullable_string()?,
            client_id: r.string()?,
            client_host: r.string()?,
            rebalance_timeout_ms: r.i32()?,
            session_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = vec![
            StoredRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 3),
                value: Some(OffsetValue {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_timestamp_ms: 7,
                }),
            },
            StoredRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 4),
                value: None,
            },
            StoredRecord::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    protocol_type: "consumer".into(),
                    generation_id: 5,
                    protocol_name: Some("range".into()),
                    leader_id: Some("m-1".into()),
                    state_timestamp_ms: 9,
                    members: vec![MemberValue {
                        member_id: "m-1".into(),
                        group_instance_id: Some("i-1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300_000,
                        session_timeout_ms: 45_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                }),
            },
            StoredRecord::Group {
                group: "gone".into(),
                value: None,
            },
        ];
        for r in &records {
            let decoded = StoredRecord::decode(&r.key(), r.value().as_deref())
                .unwrap()
                .unwrap();
            assert_eq!(&decoded, r);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            &[0, 1, 0, 9, b'x'],
            &[0, 2, 0xff, 0xff],
            &[0, 3, 1, 2, 3],
        ] {
            let _ = StoredRecord::decode(bytes, Some(bytes));
        }
        assert!(StoredRecord::decode(&[0, 1, 0, 9, b'x'], None).is_err());
        assert!(
            StoredRecord::decode(&[0, 9], None).unwrap().is_none(),
            "unknown key versions are skipped"
        );
    }
}
