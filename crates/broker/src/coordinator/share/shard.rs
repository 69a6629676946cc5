//! One `__share_group_state` partition: the persisted state of each share-partition whose
//! key hashes to it (Kafka's `ShareCoordinatorShard`). Changed only by replaying records.

use std::collections::HashMap;

use bytes::Bytes;

use super::partition::PersistedState;
use super::records::{ShareRecord, StateKey};
use crate::coordinator::runtime::{RecordError, Shard};

/// The persisted share-partition states of one partition of `__share_group_state`.
#[derive(Debug, Default)]
pub struct ShareStateShard {
    states: HashMap<StateKey, PersistedState>,
}

impl ShareStateShard {
    pub fn get(&self, key: &StateKey) -> Option<&PersistedState> {
        self.states.get(key)
    }

    /// Every persisted share-partition (describe, list, admin).
    pub fn all(&self) -> impl Iterator<Item = (&StateKey, &PersistedState)> {
        self.states.iter()
    }
}

impl Shard for ShareStateShard {
    type Record = ShareRecord;

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<ShareRecord>, RecordError> {
        ShareRecord::decode(key, value).map_err(|_| RecordError::Malformed {
            what: "share state record",
        })
    }

    fn encode(record: &ShareRecord) -> (Bytes, Option<Bytes>) {
        (record.key_bytes(), record.value_bytes())
    }

    fn replay(&mut self, _offset: i64, _producer: Option<(i64, i16)>, record: ShareRecord) {
        match record.state {
            Some(state) => {
                self.states.insert(record.key, state);
            }
            None => {
                self.states.remove(&record.key);
            }
        }
    }
}
