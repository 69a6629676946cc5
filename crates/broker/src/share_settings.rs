//! The settings one share group works under: its group configs (`share.*` and Rill's
//! `rill.share.*` keys, `group_configs.rs`), whose defaults are the broker's `group.share.*`
//! settings. [`share_settings`] is the one place share groups read them.

use std::sync::Arc;

use crate::coordinator::share::partition::Limits;
use crate::filter::Filter;
use crate::group_configs::{ShareAutoOffsetReset, ShareIsolationLevel};
use crate::state::BrokerState;

/// Where a share-partition starts when the group first uses it (`share.auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// The first record at most this many ms old (`by_duration:`).
    ByDurationMs(i64),
}

/// One share group's settings.
#[derive(Debug, Clone)]
pub struct ShareSettings {
    pub limits: Limits,
    /// `share.session.timeout.ms`.
    pub session_timeout_ms: i64,
    /// `share.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `share.auto.offset.reset` (default latest).
    pub auto_offset_reset: OffsetReset,
    /// `share.isolation.level` = read_committed: aborted records are archived, never
    /// delivered, and nothing past the last stable offset is acquired.
    pub read_committed: bool,
    /// `rill.share.dlq.topic` (else Kafka's `errors.deadletterqueue.topic.name`): where dead
    /// letters go (none by default).
    pub dlq_topic: Option<String>,
    /// `rill.share.filter` (+ `rill.share.filter.type`): records that do not match are
    /// archived without being delivered.
    pub filter: Option<Arc<Filter>>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The settings of `group_id`.
pub fn share_settings(state: &BrokerState, group_id: &str) -> ShareSettings {
    let c = state.groups.group_configs().effective(group_id);
    ShareSettings {
        limits: Limits {
            lock_duration_ms: i64_of(c.share_record_lock_duration_ms),
            delivery_count_limit: i16::try_from(c.share_delivery_count_limit).unwrap_or(i16::MAX),
            max_in_flight: i64::from(c.share_partition_max_record_locks),
            backoff_ms: i64_of(c.rill_share_redelivery_backoff_ms),
            backoff_max_ms: i64_of(c.rill_share_redelivery_backoff_max_ms),
        },
        session_timeout_ms: i64_of(c.share_session_timeout_ms),
        heartbeat_interval_ms: i32::try_from(c.share_heartbeat_interval_ms).unwrap_or(i32::MAX),
        auto_offset_reset: match c.share_auto_offset_reset {
            ShareAutoOffsetReset::Earliest => OffsetReset::Earliest,
            ShareAutoOffsetReset::Latest => OffsetReset::Latest,
            ShareAutoOffsetReset::ByDurationMs(ms) => OffsetReset::ByDurationMs(i64_of(ms)),
        },
        read_committed: c.share_isolation_level == ShareIsolationLevel::ReadCommitted,
        dlq_topic: c.share_dlq_topic().map(str::to_string),
        filter: c.rill_share_filter.clone(),
    }
}
