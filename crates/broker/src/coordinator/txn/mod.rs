//! The transaction coordinator: transactional ids, their producer ids and epochs, and the
//! two-phase end of each transaction, kept as records in `__transaction_state`.
//!
//! - [`state`]: the metadata of one id and the rules of its transitions (pure);
//! - [`records`]: its records, in Kafka's schemas;
//! - [`shard`]: one partition's ids, replayed by the runtime;
//! - `coordinator`: the operations on the runtime, marker writing, timeouts.

pub mod records;
pub mod shard;
pub mod state;
