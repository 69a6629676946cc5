//! Rill's log-backed coordinators, on one runtime ([`runtime`]): each keeps its state as
//! records in an internal topic, one shard per partition, and changes its durable state only
//! by replaying records (at load and at run time alike).
//!
//! - [`runtime`]: the generic part (load, write under the shard lock, answer when durable).
//! - [`txn`]: the transaction coordinator (`__transaction_state`).

pub mod runtime;
pub mod txn;
