//! One `__share_group_state` partition: the persisted state of each share-partition whose
//! key hashes to it (Kafka's `ShareCoordinatorShard`), and the share groups recorded in it.
//! Changed only by replaying records.

use std::collections::HashMap;

use bytes::Bytes;

use super::partition::PersistedState;
use super::records::{StateKey, StoredRecord};
use crate::coordinator::runtime::{RecordError, Shard};

/// The persisted share-partition states of one partition of `__share_group_state`.
#[derive(Debug, Default)]
pub struct ShareStateShard {
    states: HashMap<StateKey, PersistedState>,
    /// Share groups that exist, with their recorded group epoch.
    groups: HashMap<String, i32>,
}

impl ShareStateShard {
    pub fn get(&self, key: &StateKey) -> Option<&PersistedState> {
        self.states.get(key)
    }

    /// Every persisted share-partition (describe, list, admin).
    pub fn all(&self) -> impl Iterator<Item = (&StateKey, &PersistedState)> {
        self.states.iter()
    }

    /// The recorded group epoch of `group_id`, if it is a recorded share group.
    pub fn group_epoch(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).copied()
    }

    /// Every recorded share group.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }
}

impl Shard for ShareStateShard {
    type Record = StoredRecord;

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<StoredRecord>, RecordError> {
        StoredRecord::decode(key, value).map_err(|_| RecordError::Malformed {
            what: "share state record",
        })
    }

    fn encode(record: &StoredRecord) -> (Bytes, Option<Bytes>) {
        (record.key_bytes(), record.value_bytes())
    }

    fn replay(&mut self, _offset: i64, _producer: Option<(i64, i16)>, record: StoredRecord) {
        match record {
            StoredRecord::State(record) => match record.state {
                Some(state) => {
                    self.states.insert(record.key, state);
                }
                None => {
                    self.states.remove(&record.key);
                }
            },
            StoredRecord::Group(group) => match group.group_epoch {
                Some(epoch) => {
                    self.groups.insert(group.group_id, epoch);
                }
                None => {
                    self.groups.remove(&group.group_id);
                }
            },
        }
    }
}
