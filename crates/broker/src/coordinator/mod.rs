//! Log-backed coordinators.

pub mod txn;
