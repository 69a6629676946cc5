//! One `__transaction_state` partition's transactional ids: the state the runtime replays
//! records into, at load and after every write.

use std::collections::HashMap;

use bytes::Bytes;

use super::records::TxnRecord;
use super::state::TxnMetadata;
use crate::coordinator::runtime::{RecordError, Shard};

/// The transactional ids of one partition of `__transaction_state`.
#[derive(Debug, Default)]
pub struct TxnShard {
    txns: HashMap<String, TxnMetadata>,
}

impl TxnShard {
    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    pub fn all(&self) -> impl Iterator<Item = &TxnMetadata> {
        self.txns.values()
    }
}

impl Shard for TxnShard {
    type Record = TxnRecord;

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<TxnRecord>, RecordError> {
        TxnRecord::decode(key, value).map_err(|_| RecordError::Malformed {
            what: "transaction log record",
        })
    }

    fn encode(record: &TxnRecord) -> (Bytes, Option<Bytes>) {
        (record.key(), record.value())
    }

    fn replay(&mut self, _offset: i64, _producer: Option<(i64, i16)>, record: TxnRecord) {
        match record.value {
            Some(m) => {
                self.txns.insert(record.transactional_id, m);
            }
            None => {
                self.txns.remove(&record.transactional_id);
            }
        }
    }
}
