//! The settings one share group works under: the broker's `group.share.*` defaults, then the
//! group's own configs (`share.*` and Rill's `rill.share.*` keys). [`share_settings`] is the
//! one place that reads them.

use std::sync::Arc;

use crate::coordinator::share::partition::Limits;
use crate::filter::Filter;
use crate::state::BrokerState;

/// Where a share-partition starts when the group first uses it (`share.auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

/// One share group's settings.
#[derive(Debug, Clone)]
pub struct ShareSettings {
    pub limits: Limits,
    /// `share.auto.offset.reset` (default latest).
    pub auto_offset_reset: OffsetReset,
    /// `share.isolation.level` = read_committed: aborted records are archived, never
    /// delivered, and nothing past the last stable offset is acquired.
    pub read_committed: bool,
    /// `rill.share.dlq.topic`: where dead letters go (none by default).
    pub dlq_topic: Option<String>,
    /// `rill.share.filter` (+ `rill.share.filter.type`): records that do not match are
    /// archived without being delivered.
    pub filter: Option<Arc<Filter>>,
}

/// The settings of `group_id`: broker defaults (group configs are not stored yet).
pub fn share_settings(state: &BrokerState, _group_id: &str) -> ShareSettings {
    let c = state.shares.config();
    ShareSettings {
        limits: Limits {
            lock_duration_ms: c.record_lock_duration_ms,
            delivery_count_limit: c.delivery_count_limit,
            max_in_flight: c.partition_max_record_locks,
            backoff_ms: 0,
            backoff_max_ms: 0,
        },
        auto_offset_reset: OffsetReset::Latest,
        read_committed: false,
        dlq_topic: None,
        filter: None,
    }
}
