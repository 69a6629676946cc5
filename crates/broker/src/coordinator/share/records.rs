//! The records of `__share_group_state`, in the shape of Kafka's share coordinator's
//! `ShareSnapshotKey` / `ShareSnapshotValue`: one key per (group, topic id, partition), whose
//! value is the share-partition's whole persisted state (start offset, and the state and
//! delivery count of every in-flight record, as ranges). Every write is a snapshot, so the
//! compacted topic keeps one record per share-partition, bounded by the in-flight window.
//! A tombstone deletes the share-partition's state (DeleteShareGroupOffsets, group deletion).
//!
//! Format (big-endian, as Kafka's records): key = version i16 (0), group id (i16 length +
//! UTF-8), topic id (16 bytes), partition i32; value = version i16 (0), start offset i64,
//! batch count i32, then per batch first offset i64, last offset i64, state i8, delivery
//! count i16.
//!
//! A second key type records that a share group exists (Kafka keeps a
//! `ShareGroupMetadata` record for it in `__consumer_offsets`): key = version i16 (1), group
//! id (i16 length + UTF-8); value = version i16 (0), group epoch i32; a tombstone when the
//! group is deleted. A group with no members and no share-partition state (its offsets
//! deleted) still exists through it, across restarts, as in Kafka. Brokers that do not know
//! key version 1 skip it.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::partition::{PersistedState, RecordState, StateBatch};

/// The internal topic of share-partition states.
pub const TOPIC: &str = "__share_group_state";

const KEY_VERSION: i16 = 0;
/// Key version of the record that a share group exists.
const GROUP_KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 0;
const BATCH_BYTES: usize = 8 + 8 + 1 + 2;

/// Which share-partition a state belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    pub group_id: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

/// One record: a snapshot, or a tombstone (`state` None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    pub key: StateKey,
    pub state: Option<PersistedState>,
}

/// Why a record does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed share state record: {0}")]
pub struct Malformed(&'static str);

/// The record that a share group exists: its group epoch, or a tombstone (`group_epoch`
/// None) when the group is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub group_id: String,
    pub group_epoch: Option<i32>,
}

/// Any record of `__share_group_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRecord {
    State(ShareRecord),
    Group(GroupRecord),
}

impl StoredRecord {
    pub fn key_bytes(&self) -> Bytes {
        match self {
            StoredRecord::State(r) => r.key_bytes(),
            StoredRecord::Group(g) => {
                let group = g.group_id.as_bytes();
                let len = group.len().min(i16::MAX as usize);
                let mut out = BytesMut::with_capacity(2 + 2 + len);
                out.put_i16(GROUP_KEY_VERSION);
                out.put_i16(len as i16);
                out.put_slice(&group[..len]);
                out.freeze()
            }
        }
    }

    pub fn value_bytes(&self) -> Option<Bytes> {
        match self {
            StoredRecord::State(r) => r.value_bytes(),
            StoredRecord::Group(g) => {
                let epoch = g.group_epoch?;
                let mut out = BytesMut::with_capacity(2 + 4);
                out.put_i16(VALUE_VERSION);
                out.put_i32(epoch);
                Some(out.freeze())
            }
        }
    }

    /// Decodes a stored record by its key version. `Ok(None)`: a key version this broker
    /// does not know (skipped).
    ///
    /// # Errors
    /// [`Malformed`] for bytes that are not a record of these formats.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<StoredRecord>, Malformed> {
        let mut k = Reader(key);
        match k.i16()? {
            KEY_VERSION => Ok(ShareRecord::decode(key, value)?.map(StoredRecord::State)),
            GROUP_KEY_VERSION => {
                let len = usize::try_from(k.i16()?).map_err(|_| Malformed("group length"))?;
                let group_id = std::str::from_utf8(k.take(len)?)
                    .map_err(|_| Malformed("group id"))?
                    .to_string();
                if !k.0.is_empty() {
                    return Err(Malformed("bytes after the group key"));
                }
                let group_epoch = match value {
                    None => None,
                    Some(value) => {
                        let mut v = Reader(value);
                        if v.i16()? != VALUE_VERSION {
                            return Err(Malformed("group value version"));
                        }
                        Some(v.i32()?)
                    }
                };
                Ok(Some(StoredRecord::Group(GroupRecord {
                    group_id,
                    group_epoch,
                })))
            }
            _ => Ok(None),
        }
    }
}

impl ShareRecord {
    pub fn key_bytes(&self) -> Bytes {
        let k = &self.key;
        let mut out = BytesMut::with_capacity(2 + 2 + k.group_id.len() + 16 + 4);
        out.put_i16(KEY_VERSION);
        let group = k.group_id.as_bytes();
        out.put_i16(group.len().min(i16::MAX as usize) as i16);
        out.put_slice(&group[..group.len().min(i16::MAX as usize)]);
        out.put_slice(k.topic_id.as_bytes());
        out.put_i32(k.partition);
        out.freeze()
    }

    pub fn value_bytes(&self) -> Option<Bytes> {
        let s = self.state.as_ref()?;
        let mut out = BytesMut::with_capacity(2 + 8 + 4 + s.batches.len() * BATCH_BYTES);
        out.put_i16(VALUE_VERSION);
        out.put_i64(s.start_offset);
        out.put_i32(s.batches.len() as i32);
        for b in &s.batches {
            out.put_i64(b.first_offset);
            out.put_i64(b.last_offset);
            out.put_i8(b.state as i8);
            out.put_i16(b.delivery_count);
        }
        Some(out.freeze())
    }

    /// Decodes a stored record. `Ok(None)`: a key version this broker does not know (skipped).
    ///
    /// # Errors
    /// [`Malformed`] for bytes that are not a record of this format.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<ShareRecord>, Malformed> {
        let mut k = Reader(key);
        if k.i16()? != KEY_VERSION {
            return Ok(None);
        }
        let len = usize::try_from(k.i16()?).map_err(|_| Malformed("group length"))?;
        let group_id = std::str::from_utf8(k.take(len)?)
            .map_err(|_| Malformed("group id"))?
            .to_string();
        let topic_id = Uuid::from_slice(k.take(16)?).map_err(|_| Malformed("topic id"))?;
        let partition = k.i32()?;
        let key = StateKey {
            group_id,
            topic_id,
            partition,
        };
        let Some(value) = value else {
            return Ok(Some(ShareRecord { key, state: None }));
        };
        let mut v = Reader(value);
        if v.i16()? != VALUE_VERSION {
            return Err(Malformed("value version"));
        }
        let start_offset = v.i64()?;
        let count = usize::try_from(v.i32()?).map_err(|_| Malformed("batch count"))?;
        // Bounded by the bytes present, not by what the count claims.
        if count > v.0.len() / BATCH_BYTES {
            return Err(Malformed("batch count"));
        }
        let mut batches = Vec::with_capacity(count);
        for _ in 0..count {
            let first_offset = v.i64()?;
            let last_offset = v.i64()?;
            let state = RecordState::from_wire(v.i8()?).ok_or(Malformed("delivery state"))?;
            let delivery_count = v.i16()?;
            if last_offset < first_offset {
                return Err(Malformed("batch range"));
            }
            batches.push(StateBatch {
                first_offset,
                last_offset,
                state,
                delivery_count,
            });
        }
        Ok(Some(ShareRecord {
            key,
            state: Some(PersistedState {
                start_offset,
                batches,
            }),
        }))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i8(&mut self) -> Result<i8, Malformed> {
        Ok(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Result<i16, Malformed> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let r = ShareRecord {
            key: StateKey {
                group_id: "g".into(),
                topic_id: Uuid::from_u128(7),
                partition: 3,
            },
            state: Some(PersistedState {
                start_offset: 5,
                batches: vec![StateBatch {
                    first_offset: 6,
                    last_offset: 9,
                    state: RecordState::Acknowledged,
                    delivery_count: 2,
                }],
            }),
        };
        let (k, v) = (r.key_bytes(), r.value_bytes());
        assert_eq!(ShareRecord::decode(&k, v.as_deref()), Ok(Some(r.clone())));
        assert_eq!(ShareRecord::decode(&k, None).unwrap().unwrap().state, None);
        let v = v.unwrap();
        assert!(ShareRecord::decode(&k, Some(&v[..v.len() - 1])).is_err());
        let mut huge = v.to_vec();
        huge[10..14].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(ShareRecord::decode(&k, Some(&huge)).is_err());
        assert!(ShareRecord::decode(&k[..5], None).is_err());
    }

    #[test]
    fn group_records_round_trip_beside_state_records() {
        let group = StoredRecord::Group(GroupRecord {
            group_id: "sg".into(),
            group_epoch: Some(3),
        });
        let (k, v) = (group.key_bytes(), group.value_bytes());
        assert_eq!(StoredRecord::decode(&k, v.as_deref()), Ok(Some(group)));
        let tombstone = StoredRecord::decode(&k, None).unwrap().unwrap();
        assert_eq!(
            tombstone,
            StoredRecord::Group(GroupRecord {
                group_id: "sg".into(),
                group_epoch: None
            })
        );
        let state = StoredRecord::State(ShareRecord {
            key: StateKey {
                group_id: "sg".into(),
                topic_id: Uuid::from_u128(1),
                partition: 0,
            },
            state: None,
        });
        assert_eq!(
            StoredRecord::decode(&state.key_bytes(), None),
            Ok(Some(state))
        );
        // Truncated keys and values are garbage; an unknown key version is skipped.
        for cut in 0..k.len() {
            assert!(StoredRecord::decode(&k[..cut], None).is_err(), "cut {cut}");
        }
        assert!(StoredRecord::decode(&k, Some(&[0, 0, 0])).is_err());
        assert_eq!(StoredRecord::decode(&[0, 9, 0, 0], None), Ok(None));
    }
}
