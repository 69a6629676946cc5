//! Rill's log-backed coordinators, on one runtime ([`runtime`]): each keeps its state as
//! records in an internal topic, one shard per partition, and changes its durable state only
//! by replaying records (at load and at run time alike).
//!
//! - [`runtime`]: the generic part (load, write under the shard lock, answer when durable).
//! - [`group`]: the group coordinator, one shard per `__consumer_offsets` partition.
//! - [`txn`]: the transaction coordinator (`__transaction_state`).
//! - [`share`]: KIP-932 share groups (`__share_group_state`).

pub mod group;
pub mod runtime;
pub mod share;
pub mod txn;
