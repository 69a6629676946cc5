//! The transaction coordinator: transactional ids, their producer ids and epochs, and the
//! two-phase end of each transaction, kept as records in `__transaction_state`.

pub mod records;
pub mod state;
