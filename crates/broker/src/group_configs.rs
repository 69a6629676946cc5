//! Group configs: what DescribeConfigs / AlterConfigs / IncrementalAlterConfigs read and set
//! on GROUP resources (ConfigResource type 32), per group id, and the one accessor the group
//! coordinators read them through, [`GroupConfigs::effective`].
//!
//! The table is Kafka 4.4's `GroupConfig` (names, types, defaults, validators, the broker
//! config each defaults from, and which are internal: those are described only once set),
//! plus rill's own `rill.share.*` keys for share groups. Values are checked as Kafka checks
//! them: first the config's own validator ("Invalid value 999 for configuration ...: Value
//! must be at least 1000"), then the broker's bounds for the group type ("... must be in the
//! range 45000 to 60000 inclusive."), on the group's whole config after the change.
//!
//! Kafka keeps group configs in its metadata log; rill keeps them in `<data-dir>/group-configs`,
//! replaced atomically (`atomic_file::write`) on every change:
//!
//! ```text
//! # rill group configs; rewritten by the broker
//! orders consumer.session.timeout.ms 50000
//! ```
//!
//! Group id, key and value are percent-escaped as in `broker-configs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rill_storage::topic_configs::ConfigKind;
use thiserror::Error;

use crate::filter::{Filter, FilterType};

/// The file in the data directory.
pub const FILE_NAME: &str = "group-configs";

/// Most groups that may have configs set: the file is read whole at start and rewritten on
/// every change.
pub const GROUPS_MAX: usize = 10_000;

/// Longest value accepted for a string config (filters have their own, smaller bound).
pub const VALUE_BYTES_MAX: usize = 16 * 1024;

/// The rill keys (share groups), documented in docs/group-configs.md.
pub const RILL_SHARE_DLQ_TOPIC: &str = "rill.share.dlq.topic";
pub const RILL_SHARE_REDELIVERY_BACKOFF_MS: &str = "rill.share.redelivery.backoff.ms";
pub const RILL_SHARE_REDELIVERY_BACKOFF_MAX_MS: &str = "rill.share.redelivery.backoff.max.ms";
pub const RILL_SHARE_FILTER: &str = "rill.share.filter";
pub const RILL_SHARE_FILTER_TYPE: &str = "rill.share.filter.type";

/// What a group config accepts, beyond parsing as its kind (Kafka's `ConfigDef` validator).
#[derive(Debug, Clone, Copy)]
pub enum GroupCheck {
    Any,
    /// `Range.atLeast`.
    AtLeast(i64),
    /// `ValidString.in`.
    OneOf(&'static [&'static str]),
    /// `share.auto.offset.reset`: latest, earliest or `by_duration:<ISO-8601 duration>`.
    AutoOffsetReset,
    /// A topic name, or empty for none.
    TopicOrEmpty,
    /// A filter expression of the group's `rill.share.filter.type` (checked with the type).
    Filter,
}

/// One group config.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfigDef {
    pub name: &'static str,
    pub kind: ConfigKind,
    /// Kafka's default, written as DescribeConfigs shows it (the broker may set another, see
    /// [`GroupDefaults`]).
    pub default: &'static str,
    pub check: GroupCheck,
    /// The broker config it defaults from (Kafka's `ALL_GROUP_CONFIG_SYNONYMS`); DescribeConfigs
    /// names the default's synonym after it, or after the key itself when there is none.
    pub broker_synonym: Option<&'static str>,
    /// Internal (Kafka's `GroupConfig.isInternal`): described only when set.
    pub internal: bool,
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    kind: ConfigKind,
    default: &'static str,
    check: GroupCheck,
    broker_synonym: Option<&'static str>,
    internal: bool,
    doc: &'static str,
) -> GroupConfigDef {
    GroupConfigDef {
        name,
        kind,
        default,
        check,
        broker_synonym,
        internal,
        doc,
    }
}

use ConfigKind::{Boolean, Int, List, Long, String as Str};
use GroupCheck::{Any, AtLeast, OneOf};

/// Every group config, in Kafka's order, then rill's.
pub const GROUP_CONFIGS: &[GroupConfigDef] = &[
    def("consumer.session.timeout.ms", Int, "45000", AtLeast(1), Some("group.consumer.session.timeout.ms"), false,
        "The timeout to detect client failures when using the consumer group protocol."),
    def("consumer.heartbeat.interval.ms", Int, "5000", AtLeast(1), Some("group.consumer.heartbeat.interval.ms"), false,
        "The heartbeat interval given to the members of a consumer group."),
    def("consumer.assignment.interval.ms", Int, "1000", AtLeast(0), Some("group.consumer.assignment.interval.ms"), false,
        "The interval between assignment updates for a consumer group."),
    def("consumer.assignor.offload.enable", Boolean, "true", Any, Some("group.consumer.assignor.offload.enable"), true,
        "Whether to offload consumer group assignment to a group coordinator background thread."),
    def("share.session.timeout.ms", Int, "45000", AtLeast(1), Some("group.share.session.timeout.ms"), false,
        "The timeout to detect client failures when using the share group protocol."),
    def("share.heartbeat.interval.ms", Int, "5000", AtLeast(1), Some("group.share.heartbeat.interval.ms"), false,
        "The heartbeat interval given to the members of a share group."),
    def("share.record.lock.duration.ms", Int, "30000", AtLeast(1000), Some("group.share.record.lock.duration.ms"), false,
        "The record acquisition lock duration in milliseconds for share groups."),
    def("share.delivery.count.limit", Int, "5", AtLeast(2), Some("group.share.delivery.count.limit"), false,
        "The maximum number of delivery attempts for a record delivered to a share group."),
    def("share.partition.max.record.locks", Int, "2000", AtLeast(100), Some("group.share.partition.max.record.locks"), false,
        "Share-group record lock limit per share-partition."),
    def("share.auto.offset.reset", Str, "latest", GroupCheck::AutoOffsetReset, None, false,
        "The strategy to initialize the share-partition start offset. <ul><li>earliest: automatically reset the offset to the earliest offset</li><li>latest: automatically reset the offset to the latest offset</li><li>by_duration:&lt;duration&gt;: automatically reset the offset to a configured duration from the current timestamp. &lt;duration&gt; must be specified in ISO8601 format (PnDTnHnMn.nS). Negative duration is not allowed.</li><li>anything else: throw exception to the share consumer.</li></ul>"),
    def("share.isolation.level", Str, "read_uncommitted", OneOf(&["read_committed", "read_uncommitted"]), None, false,
        "Controls how to read records written transactionally. If set to \"read_committed\", the share group will only deliver transactional records which have been committed. If set to \"read_uncommitted\", the share group will return all messages, even transactional messages which have been aborted. Non-transactional records will be returned unconditionally in either mode."),
    def("share.renew.acknowledge.enable", Boolean, "true", Any, None, false,
        "Whether the renew acknowledge type is enabled for the share group."),
    def("share.assignment.interval.ms", Int, "1000", AtLeast(0), Some("group.share.assignment.interval.ms"), false,
        "The interval between assignment updates for a share group."),
    def("share.assignor.offload.enable", Boolean, "true", Any, Some("group.share.assignor.offload.enable"), true,
        "Whether to offload share group assignment to a group coordinator background thread."),
    def("streams.session.timeout.ms", Int, "45000", AtLeast(1), Some("group.streams.session.timeout.ms"), false,
        "The timeout to detect client failures when using the streams group protocol."),
    def("streams.heartbeat.interval.ms", Int, "5000", AtLeast(1), Some("group.streams.heartbeat.interval.ms"), false,
        "The heartbeat interval given to the members."),
    def("streams.num.standby.replicas", Int, "0", AtLeast(0), Some("group.streams.num.standby.replicas"), false,
        "The number of standby replicas for each task."),
    def("streams.initial.rebalance.delay.ms", Int, "3000", AtLeast(0), Some("group.streams.initial.rebalance.delay.ms"), false,
        "The amount of time the group coordinator will wait for more streams clients to join a new group before performing the first rebalance. A longer delay means potentially fewer rebalances."),
    def("streams.assignment.interval.ms", Int, "1000", AtLeast(0), Some("group.streams.assignment.interval.ms"), false,
        "The interval between assignment updates for a streams group."),
    def("streams.assignor.offload.enable", Boolean, "true", Any, Some("group.streams.assignor.offload.enable"), true,
        "Whether to offload streams group assignment to a group coordinator background thread."),
    def("streams.task.offset.interval.ms", Int, "60000", AtLeast(1), Some("group.streams.task.offset.interval.ms"), true,
        "The interval in which the warmup task changelog offsets on a client are updated on the broker. The offsets are sent with the next heartbeat after this time has passed."),
    def("streams.num.warmup.replicas", Int, "2", AtLeast(0), Some("group.streams.num.warmup.replicas"), true,
        "The maximum number of warmup task replicas."),
    def("streams.rack.aware.assignment.tags", List, "", Any, Some("group.streams.rack.aware.assignment.tags"), false,
        "List of client tag keys used to distribute standby replicas across Kafka Streams instances. When configured, and the used broker-side assignor supports it, it will make a best-effort to distribute standby tasks over each client tag dimension."),
    def("streams.acceptable.recovery.lag", Long, "10000", AtLeast(0), Some("group.streams.acceptable.recovery.lag"), true,
        "The maximum acceptable lag (number of offsets to catch up) for a client to be considered caught-up enough to receive an active task assignment."),
    def("streams.assignor.name", Str, "sticky", OneOf(&["sticky"]), Some("group.streams.assignors"), false,
        "The task assignor to use for this streams group, selected by short name from the assignors registered via the broker configuration group.streams.assignors. When unset, the group defaults to the first assignor configured in the broker's group.streams.assignors setting. Changing the assignor does not trigger a rebalance for the group; the new assignor takes effect on the next rebalance."),
    def("errors.deadletterqueue.topic.name", Str, "", GroupCheck::TopicOrEmpty, None, false,
        "The name of the topic to be used as the dead-letter queue (DLQ) topic for this share group. If blank (the default), the group does not have a DLQ topic."),
    def("errors.deadletterqueue.copy.record.enable", Boolean, "false", Any, None, false,
        "When writing onto the dead-letter queue topic, whether to copy the original record onto the DLQ topic, or just write a record containing the context information headers."),
    def(RILL_SHARE_DLQ_TOPIC, Str, "", GroupCheck::TopicOrEmpty, None, false,
        "Rill: the topic a share group's record goes to when it is rejected or reaches share.delivery.count.limit, with headers naming its source; empty for none. Wins over errors.deadletterqueue.topic.name."),
    def(RILL_SHARE_REDELIVERY_BACKOFF_MS, Long, "0", AtLeast(0), None, false,
        "Rill: the first wait before a released share-group record can be acquired again; doubled on each further delivery up to rill.share.redelivery.backoff.max.ms. 0 for none."),
    def(RILL_SHARE_REDELIVERY_BACKOFF_MAX_MS, Long, "60000", AtLeast(0), None, false,
        "Rill: the longest redelivery backoff of a share-group record."),
    def(RILL_SHARE_FILTER, Str, "", GroupCheck::Filter, None, false,
        "Rill: a filter expression (of rill.share.filter.type) a share group delivers matching records of; the others are archived undelivered. Empty for none."),
    def(RILL_SHARE_FILTER_TYPE, Str, "SQL92", OneOf(&["SQL92", "TAG"]), None, false,
        "Rill: the language of rill.share.filter, SQL92 or TAG."),
];

/// The definition of group config `name`.
pub fn group_config(name: &str) -> Option<&'static GroupConfigDef> {
    GROUP_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a group config change is refused: Kafka's INVALID_CONFIG, or INVALID_REQUEST for a bad
/// resource name; storage errors map to KAFKA_STORAGE_ERROR.
#[derive(Debug, Error)]
pub enum GroupConfigError {
    /// INVALID_CONFIG, with Kafka's text.
    #[error("{0}")]
    Invalid(String),
    /// INVALID_REQUEST, with Kafka's text.
    #[error("{0}")]
    BadResource(String),
    #[error("too many groups with configs (at most {GROUPS_MAX})")]
    TooMany,
    /// Its file could not be read, understood or replaced.
    #[error(transparent)]
    File(#[from] crate::atomic_file::FileError),
}

/// The broker side of group configs: the defaults (the broker configs they come from) and the
/// bounds a group's value must keep (Kafka's `group.*.min/max.*` broker configs).
#[derive(Debug, Clone)]
pub struct GroupDefaults {
    /// The value in force for each key a broker setting changes from Kafka's default, by
    /// group config key (e.g. `consumer.session.timeout.ms` from
    /// `--group-consumer-session-timeout-ms`).
    pub broker: BTreeMap<&'static str, String>,
    /// Closed bounds per key, with the broker config names Kafka's message cites.
    pub bounds: BTreeMap<&'static str, (i64, i64)>,
}

impl GroupDefaults {
    /// Kafka 4.4's broker defaults, with the KIP-848 session and heartbeat the broker runs
    /// with (`group.consumer.session.timeout.ms` / `group.consumer.heartbeat.interval.ms`):
    /// their bounds widen to include them, as Kafka requires min <= default <= max.
    pub fn new(consumer_session_timeout_ms: u64, consumer_heartbeat_interval_ms: u64) -> Self {
        let mut bounds: BTreeMap<&'static str, (i64, i64)> = BTreeMap::from([
            ("consumer.session.timeout.ms", (45_000, 60_000)),
            ("consumer.heartbeat.interval.ms", (5_000, 15_000)),
            ("share.session.timeout.ms", (45_000, 60_000)),
            ("share.heartbeat.interval.ms", (5_000, 15_000)),
            ("share.record.lock.duration.ms", (15_000, 60_000)),
            ("share.delivery.count.limit", (2, 10)),
            ("share.partition.max.record.locks", (100, 4_000)),
            ("streams.session.timeout.ms", (45_000, 60_000)),
            ("streams.heartbeat.interval.ms", (5_000, 15_000)),
            ("streams.num.standby.replicas", (0, 2)),
            (
                "streams.task.offset.interval.ms",
                (15_000, i64::from(i32::MAX)),
            ),
        ]);
        let mut broker = BTreeMap::new();
        for (key, value) in [
            ("consumer.session.timeout.ms", consumer_session_timeout_ms),
            (
                "consumer.heartbeat.interval.ms",
                consumer_heartbeat_interval_ms,
            ),
        ] {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            if let Some((min, max)) = bounds.get_mut(key) {
                *min = (*min).min(value);
                *max = (*max).max(value);
            }
            let kafka = group_config(key).map(|d| d.default);
            if kafka != Some(value.to_string().as_str()) {
                broker.insert(key, value.to_string());
            }
        }
        GroupDefaults { broker, bounds }
    }

    /// `key`'s default on this broker is `value` (a broker setting such as
    /// `--group-share-record-lock-duration-ms`); its bounds widen to include it, as for the
    /// KIP-848 defaults in [`GroupDefaults::new`].
    pub fn with_broker_value(mut self, key: &'static str, value: i64) -> Self {
        if let Some((min, max)) = self.bounds.get_mut(key) {
            *min = (*min).min(value);
            *max = (*max).max(value);
        }
        if group_config(key).map(|d| d.default) != Some(value.to_string().as_str()) {
            self.broker.insert(key, value.to_string());
        }
        self
    }

    /// The default of `def` on this broker.
    pub fn default_of(&self, def: &GroupConfigDef) -> String {
        self.broker
            .get(def.name)
            .cloned()
            .unwrap_or_else(|| def.default.to_string())
    }
}

impl Default for GroupDefaults {
    fn default() -> Self {
        GroupDefaults::new(45_000, 5_000)
    }
}

/// `share.auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareAutoOffsetReset {
    Latest,
    Earliest,
    /// `by_duration:<d>`: the offset of the first record at most this many ms old.
    ByDurationMs(u64),
}

/// `share.isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareIsolationLevel {
    ReadUncommitted,
    ReadCommitted,
}

/// A group's configs in force (its overrides over the broker's defaults), typed. Built by
/// [`GroupConfigs::effective`]; every field has passed its check.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub consumer_session_timeout_ms: u64,
    pub consumer_heartbeat_interval_ms: u64,
    pub consumer_assignment_interval_ms: u64,
    pub share_session_timeout_ms: u64,
    pub share_heartbeat_interval_ms: u64,
    pub share_record_lock_duration_ms: u64,
    pub share_delivery_count_limit: u32,
    pub share_partition_max_record_locks: u32,
    pub share_auto_offset_reset: ShareAutoOffsetReset,
    pub share_isolation_level: ShareIsolationLevel,
    pub share_renew_acknowledge_enable: bool,
    pub streams_session_timeout_ms: u64,
    pub streams_heartbeat_interval_ms: u64,
    pub streams_num_standby_replicas: u32,
    pub streams_initial_rebalance_delay_ms: u64,
    /// Kafka's share-group dead-letter topic (`errors.deadletterqueue.topic.name`).
    pub errors_dlq_topic: Option<String>,
    pub errors_dlq_copy_record_enable: bool,
    /// `rill.share.dlq.topic`.
    pub rill_share_dlq_topic: Option<String>,
    pub rill_share_redelivery_backoff_ms: u64,
    pub rill_share_redelivery_backoff_max_ms: u64,
    /// `rill.share.filter` with its type, parsed (`None`: deliver everything).
    pub rill_share_filter: Option<Arc<Filter>>,
}

impl GroupConfig {
    /// The dead-letter topic of a share group: rill's key, else Kafka's.
    pub fn share_dlq_topic(&self) -> Option<&str> {
        self.rill_share_dlq_topic
            .as_deref()
            .or(self.errors_dlq_topic.as_deref())
    }

    fn from_values(v: &BTreeMap<&'static str, String>) -> Result<GroupConfig, String> {
        let int = |k: &str| -> Result<u64, String> {
            let raw = v.get(k).map(String::as_str).unwrap_or("0");
            raw.parse::<u64>()
                .map_err(|_| format!("{k}: bad stored value {raw:?}"))
        };
        let small = |k: &str| int(k).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let text = |k: &str| v.get(k).cloned().unwrap_or_default();
        let optional = |k: &str| Some(text(k)).filter(|s| !s.is_empty());
        let flag = |k: &str| text(k) == "true";
        let filter = match optional(RILL_SHARE_FILTER) {
            None => None,
            Some(expr) => Some(Arc::new(parse_filter(
                &text(RILL_SHARE_FILTER_TYPE),
                &expr,
            )?)),
        };
        Ok(GroupConfig {
            consumer_session_timeout_ms: int("consumer.session.timeout.ms")?,
            consumer_heartbeat_interval_ms: int("consumer.heartbeat.interval.ms")?,
            consumer_assignment_interval_ms: int("consumer.assignment.interval.ms")?,
            share_session_timeout_ms: int("share.session.timeout.ms")?,
            share_heartbeat_interval_ms: int("share.heartbeat.interval.ms")?,
            share_record_lock_duration_ms: int("share.record.lock.duration.ms")?,
            share_delivery_count_limit: small("share.delivery.count.limit")?,
            share_partition_max_record_locks: small("share.partition.max.record.locks")?,
            share_auto_offset_reset: parse_auto_offset_reset(&text("share.auto.offset.reset"))
                .ok_or("share.auto.offset.reset: bad stored value")?,
            share_isolation_level: if text("share.isolation.level") == "read_committed" {
                ShareIsolationLevel::ReadCommitted
            } else {
                ShareIsolationLevel::ReadUncommitted
            },
            share_renew_acknowledge_enable: flag("share.renew.acknowledge.enable"),
            streams_session_timeout_ms: int("streams.session.timeout.ms")?,
            streams_heartbeat_interval_ms: int("streams.heartbeat.interval.ms")?,
            streams_num_standby_replicas: small("streams.num.standby.replicas")?,
            streams_initial_rebalance_delay_ms: int("streams.initial.rebalance.delay.ms")?,
            errors_dlq_topic: optional("errors.deadletterqueue.topic.name"),
            errors_dlq_copy_record_enable: flag("errors.deadletterqueue.copy.record.enable"),
            rill_share_dlq_topic: optional(RILL_SHARE_DLQ_TOPIC),
            rill_share_redelivery_backoff_ms: int(RILL_SHARE_REDELIVERY_BACKOFF_MS)?,
            rill_share_redelivery_backoff_max_ms: int(RILL_SHARE_REDELIVERY_BACKOFF_MAX_MS)?,
            rill_share_filter: filter,
        })
    }
}

fn parse_filter(kind: &str, expr: &str) -> Result<Filter, String> {
    let kind = FilterType::parse(kind).ok_or_else(|| format!("{kind:?} is not SQL92 or TAG"))?;
    Filter::parse(kind, expr).map_err(|e| e.to_string())
}

/// `latest`, `earliest` or `by_duration:<ISO-8601 duration>` (`PnDTnHnMn.nS`, not negative).
pub fn parse_auto_offset_reset(raw: &str) -> Option<ShareAutoOffsetReset> {
    match raw.to_ascii_lowercase().as_str() {
        "latest" => Some(ShareAutoOffsetReset::Latest),
        "earliest" => Some(ShareAutoOffsetReset::Earliest),
        _ => {
            let (prefix, duration) = raw.split_at_checked("by_duration:".len())?;
            if !prefix.eq_ignore_ascii_case("by_duration:") {
                return None;
            }
            parse_iso_duration_ms(duration).map(ShareAutoOffsetReset::ByDurationMs)
        }
    }
}

/// Java's `Duration.parse` for the non-negative forms: `PnDTnHnMn.nS`, case-insensitive.
fn parse_iso_duration_ms(text: &str) -> Option<u64> {
    let upper = text.to_ascii_uppercase();
    let rest = upper.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut ms: u64 = 0;
    let mut any = false;
    if !days.is_empty() {
        let n: u64 = days.strip_suffix('D')?.parse().ok()?;
        ms = ms.checked_add(n.checked_mul(86_400_000)?)?;
        any = true;
    }
    if let Some(mut t) = time {
        if t.is_empty() {
            return None;
        }
        for (unit, factor) in [('H', 3_600_000u64), ('M', 60_000)] {
            if let Some((n, tail)) = t.split_once(unit) {
                let n: u64 = n.parse().ok()?;
                ms = ms.checked_add(n.checked_mul(factor)?)?;
                t = tail;
                any = true;
            }
        }
        if !t.is_empty() {
            let seconds: f64 = t.strip_suffix('S')?.parse().ok()?;
            if !seconds.is_finite() || !(0.0..=1e15).contains(&seconds) {
                return None;
            }
            ms = ms.checked_add((seconds * 1000.0) as u64)?;
            any = true;
        }
    }
    any.then_some(ms)
}

/// Checks one value against its definition's own validator; returns it as Kafka writes it
/// back.
fn check_value(def: &GroupConfigDef, raw: &str) -> Result<String, String> {
    let name = def.name;
    let invalid = |why: &str| format!("Invalid value {raw} for configuration {name}: {why}");
    if raw.len() > VALUE_BYTES_MAX {
        return Err(invalid("too long"));
    }
    let value = raw.trim();
    match def.kind {
        Int | Long => {
            let n: i64 = value.parse().map_err(|_| {
                let ty = if def.kind == Int { "INT" } else { "LONG" };
                invalid(&format!("Not a number of type {ty}"))
            })?;
            if def.kind == Int && i32::try_from(n).is_err() {
                return Err(invalid("Not a number of type INT"));
            }
            if let GroupCheck::AtLeast(min) = def.check {
                if n < min {
                    return Err(invalid(&format!("Value must be at least {min}")));
                }
            }
            Ok(n.to_string())
        }
        Boolean => match value.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(value.to_ascii_lowercase()),
            _ => Err(invalid("Expected value to be either true or false")),
        },
        List => Ok(value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(",")),
        _ => {
            match def.check {
                GroupCheck::OneOf(allowed) if !allowed.contains(&value) => {
                    return Err(invalid(&format!(
                        "String must be one of: {}",
                        allowed.join(", ")
                    )));
                }
                GroupCheck::AutoOffsetReset if parse_auto_offset_reset(value).is_none() => {
                    return Err(invalid(&format!(
                        "Invalid value `{value}` for configuration {name}. The value must be either 'earliest', 'latest' or of the format 'by_duration:<PnDTnHnMn.nS>'."
                    )));
                }
                GroupCheck::TopicOrEmpty if !value.is_empty() => {
                    crate::topics::validate_name(value).map_err(|e| invalid(&e.to_string()))?;
                }
                _ => {}
            }
            Ok(value.to_string())
        }
    }
}

/// Every key's value for one group: its overrides over `defaults`.
fn merged(
    defaults: &GroupDefaults,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, String> {
    GROUP_CONFIGS
        .iter()
        .map(|d| {
            (
                d.name,
                overrides
                    .get(d.name)
                    .cloned()
                    .unwrap_or_else(|| defaults.default_of(d)),
            )
        })
        .collect()
}

/// Checks a group's whole override set as Kafka's `GroupConfig.validate` does: names, each
/// value, then the broker's bounds and the relations between keys. Returns the overrides as
/// Kafka writes them back.
///
/// # Errors
/// [`GroupConfigError::Invalid`] with Kafka's message.
pub fn validate(
    defaults: &GroupDefaults,
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, GroupConfigError> {
    let invalid = GroupConfigError::Invalid;
    let mut out = BTreeMap::new();
    for (name, raw) in overrides {
        let def = group_config(name)
            .ok_or_else(|| invalid(format!("Unknown group config name: {name}")))?;
        out.insert(name.clone(), check_value(def, raw).map_err(invalid)?);
    }
    let all = merged(defaults, &out);
    let int = |k: &str| all.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    for (name, (min, max)) in &defaults.bounds {
        if !out.contains_key(*name) {
            continue;
        }
        let v = int(name);
        if v >= *min && v <= *max {
            continue;
        }
        let text = match *name {
            "streams.num.standby.replicas" => format!("{name} must be less than or equal to {max}"),
            "streams.task.offset.interval.ms" => {
                format!("{name} must be greater than or equal to {min}")
            }
            _ => format!("{name} must be in the range {min} to {max} inclusive."),
        };
        return Err(invalid(text));
    }
    for kind in ["consumer", "share", "streams"] {
        let session = format!("{kind}.session.timeout.ms");
        let heartbeat = format!("{kind}.heartbeat.interval.ms");
        if int(&session) <= int(&heartbeat) {
            return Err(invalid(format!(
                "{session} must be greater than {heartbeat}"
            )));
        }
    }
    if int(RILL_SHARE_REDELIVERY_BACKOFF_MAX_MS) < int(RILL_SHARE_REDELIVERY_BACKOFF_MS) {
        return Err(invalid(format!(
            "{RILL_SHARE_REDELIVERY_BACKOFF_MAX_MS} must be at least {RILL_SHARE_REDELIVERY_BACKOFF_MS}"
        )));
    }
    let filter = &all[RILL_SHARE_FILTER];
    if !filter.is_empty() {
        parse_filter(&all[RILL_SHARE_FILTER_TYPE], filter).map_err(|why| {
            invalid(format!(
                "Invalid value {filter} for configuration {RILL_SHARE_FILTER}: {why}"
            ))
        })?;
    }
    Ok(out)
}

/// One group config as DescribeConfigs shows it.
#[derive(Debug, Clone)]
pub struct DescribedGroupConfig {
    pub def: &'static GroupConfigDef,
    pub value: String,
    /// Set for this group (DYNAMIC_GROUP_CONFIG) rather than the default.
    pub overridden: bool,
    /// `(name, value, source)`, most specific first, as Kafka lists them.
    pub synonyms: Vec<(&'static str, String, i8)>,
}

/// ConfigSource GROUP_CONFIG (Kafka's `DYNAMIC_GROUP_CONFIG`).
pub const SOURCE_GROUP: i8 = 8;
/// ConfigSource STATIC_BROKER_CONFIG.
pub const SOURCE_STATIC_BROKER: i8 = 4;
/// ConfigSource DEFAULT_CONFIG.
pub const SOURCE_DEFAULT: i8 = 5;

/// The persisted group configs, and the broker defaults they are read over.
pub struct GroupConfigs {
    /// `None`: in memory only (coordinator unit tests).
    path: Option<PathBuf>,
    defaults: GroupDefaults,
    /// Overrides per group id; serializes changes, held across the file write so that file
    /// and memory agree.
    groups: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Each group's effective config, built on first read after a change (heartbeats read it).
    cache: Mutex<BTreeMap<String, Arc<GroupConfig>>>,
    /// The config of every group without overrides.
    plain: Arc<GroupConfig>,
}

impl GroupConfigs {
    /// No overrides, nothing persisted (for a coordinator built without a data directory).
    pub fn in_memory(defaults: GroupDefaults) -> GroupConfigs {
        let plain = GroupConfig::from_values(&merged(&defaults, &BTreeMap::new()))
            .expect("the table's defaults are valid (unit test)");
        GroupConfigs {
            path: None,
            defaults,
            groups: Mutex::default(),
            cache: Mutex::default(),
            plain: Arc::new(plain),
        }
    }

    /// Loads `data_dir`'s file (none yet: nothing set). Blocks.
    ///
    /// # Errors
    /// An unreadable or malformed file, or one with values the checks now refuse.
    pub fn load(
        data_dir: &Path,
        defaults: GroupDefaults,
    ) -> Result<GroupConfigs, GroupConfigError> {
        let path = data_dir.join(FILE_NAME);
        let groups = match crate::atomic_file::read_optional(&path)? {
            Some(text) => parse(&path, &text)?,
            None => BTreeMap::new(),
        };
        for (group, overrides) in &groups {
            validate(&defaults, overrides).map_err(|e| crate::atomic_file::FileError::Parse {
                path: path.clone(),
                line: 0,
                reason: format!("group {group}: {e}"),
            })?;
        }
        let mut configs = GroupConfigs::in_memory(defaults);
        configs.path = Some(path);
        *configs.groups.get_mut() = groups;
        Ok(configs)
    }

    /// The broker defaults and bounds.
    pub fn defaults(&self) -> &GroupDefaults {
        &self.defaults
    }

    /// The configs group `group_id` runs with: its overrides over the broker defaults. Cheap
    /// (a cached `Arc`), for every heartbeat.
    pub fn effective(&self, group_id: &str) -> Arc<GroupConfig> {
        if let Some(c) = self.cache.lock().get(group_id) {
            return Arc::clone(c);
        }
        let overrides = self.groups.lock().get(group_id).cloned();
        let Some(overrides) = overrides else {
            return Arc::clone(&self.plain);
        };
        // Stored overrides passed `validate`; a failure here is a bug, and the defaults are
        // the safe answer.
        let config = match GroupConfig::from_values(&merged(&self.defaults, &overrides)) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "stored group configs do not parse; using defaults");
                Arc::clone(&self.plain)
            }
        };
        let mut cache = self.cache.lock();
        if cache.len() >= GROUPS_MAX {
            cache.clear();
        }
        cache.insert(group_id.to_string(), Arc::clone(&config));
        config
    }

    /// The overrides set for `group_id`.
    pub fn overrides(&self, group_id: &str) -> BTreeMap<String, String> {
        self.groups
            .lock()
            .get(group_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The group ids with configs set (ListConfigResources).
    pub fn groups(&self) -> Vec<String> {
        self.groups.lock().keys().cloned().collect()
    }

    /// Every config of `group_id` as DescribeConfigs shows it: internal ones only when set.
    pub fn describe(&self, group_id: &str) -> Vec<DescribedGroupConfig> {
        let overrides = self.overrides(group_id);
        GROUP_CONFIGS
            .iter()
            .filter(|d| !d.internal || overrides.contains_key(d.name))
            .map(|def| {
                let mut synonyms = Vec::new();
                let set = overrides.get(def.name);
                if let Some(v) = set {
                    synonyms.push((def.name, v.clone(), SOURCE_GROUP));
                }
                let synonym = def.broker_synonym.unwrap_or(def.name);
                if let Some(v) = self.defaults.broker.get(def.name) {
                    synonyms.push((synonym, v.clone(), SOURCE_STATIC_BROKER));
                }
                synonyms.push((synonym, def.default.to_string(), SOURCE_DEFAULT));
                DescribedGroupConfig {
                    def,
                    value: synonyms[0].1.clone(),
                    overridden: set.is_some(),
                    synonyms,
                }
            })
            .collect()
    }

    /// Replaces group `group_id`'s overrides with what `change` makes of them, after checking
    /// the result; writes the file unless `validate_only`. Blocks.
    ///
    /// # Errors
    /// An empty group id (INVALID_REQUEST, as Kafka: "Default group resources are not
    /// allowed."), what `change` or the checks refuse, or the file write (nothing changes).
    pub fn update(
        &self,
        group_id: &str,
        validate_only: bool,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), GroupConfigError>,
    ) -> Result<(), GroupConfigError> {
        if group_id.is_empty() {
            return Err(GroupConfigError::BadResource(
                "Default group resources are not allowed.".into(),
            ));
        }
        let mut groups = self.groups.lock();
        let mut overrides = groups.get(group_id).cloned().unwrap_or_default();
        change(&mut overrides)?;
        let overrides = validate(&self.defaults, &overrides)?;
        if validate_only {
            return Ok(());
        }
        let mut next = groups.clone();
        if overrides.is_empty() {
            next.remove(group_id);
        } else {
            next.insert(group_id.to_string(), overrides);
        }
        if next.len() > GROUPS_MAX {
            return Err(GroupConfigError::TooMany);
        }
        if let Some(path) = &self.path {
            crate::atomic_file::replace(path, render(&next).as_bytes())?;
        }
        *groups = next;
        self.cache.lock().remove(group_id);
        Ok(())
    }
}

fn render(groups: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    use crate::line_field::escape;
    let mut text = String::from("# rill group configs; rewritten by the broker\n");
    for (group, configs) in groups {
        for (k, v) in configs {
            text.push_str(&format!("{} {} {}\n", escape(group), escape(k), escape(v)));
        }
    }
    text
}

fn parse(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, GroupConfigError> {
    use crate::line_field::unescape;
    let mut groups: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let error = |reason: &str| {
            GroupConfigError::from(crate::atomic_file::FileError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: reason.to_string(),
            })
        };
        let parts: Vec<&str> = line.split(' ').collect();
        let [group, key, value] = parts[..] else {
            return Err(error("expected: group key value"));
        };
        let (Some(group), Some(key), Some(value)) =
            (unescape(group), unescape(key), unescape(value))
        else {
            return Err(error("bad escape"));
        };
        if !groups.contains_key(&group) && groups.len() >= GROUPS_MAX {
            return Err(error("too many groups"));
        }
        let configs = groups.entry(group).or_default();
        if configs.len() >= GROUP_CONFIGS.len() {
            return Err(error("more entries than group configs"));
        }
        configs.insert(key, value);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        match validate(&GroupDefaults::default(), &set(pairs)) {
            Err(GroupConfigError::Invalid(text)) => text,
            other => panic!("{pairs:?} accepted or refused oddly: {other:?}"),
        }
    }

    #[test]
    fn table_defaults_pass_their_own_checks() {
        let d = GroupDefaults::default();
        for def in GROUP_CONFIGS {
            assert_eq!(
                check_value(def, def.default).as_deref(),
                Ok(def.default),
                "{}",
                def.name
            );
        }
        let plain = GroupConfig::from_values(&merged(&d, &BTreeMap::new())).unwrap();
        assert_eq!(plain.consumer_session_timeout_ms, 45_000);
        assert_eq!(plain.share_auto_offset_reset, ShareAutoOffsetReset::Latest);
        assert_eq!(plain.share_delivery_count_limit, 5);
        assert!(plain.rill_share_filter.is_none());
        assert!(plain.share_dlq_topic().is_none());
    }

    #[test]
    fn refuses_as_kafka_does() {
        assert_eq!(
            refused(&[("nonsense.key", "1")]),
            "Unknown group config name: nonsense.key"
        );
        assert_eq!(
            refused(&[("consumer.session.timeout.ms", "1000")]),
            "consumer.session.timeout.ms must be in the range 45000 to 60000 inclusive."
        );
        assert_eq!(
            refused(&[("consumer.session.timeout.ms", "abc")]),
            "Invalid value abc for configuration consumer.session.timeout.ms: Not a number of type INT"
        );
        assert_eq!(
            refused(&[("share.record.lock.duration.ms", "999")]),
            "Invalid value 999 for configuration share.record.lock.duration.ms: Value must be at least 1000"
        );
        assert_eq!(
            refused(&[("share.delivery.count.limit", "11")]),
            "share.delivery.count.limit must be in the range 2 to 10 inclusive."
        );
        assert_eq!(
            refused(&[("streams.num.standby.replicas", "5")]),
            "streams.num.standby.replicas must be less than or equal to 2"
        );
        assert!(refused(&[("share.auto.offset.reset", "bogus")]).contains("by_duration"));
        assert!(refused(&[(RILL_SHARE_FILTER, "a = ")]).contains(RILL_SHARE_FILTER));
        assert!(refused(&[(RILL_SHARE_DLQ_TOPIC, "bad name")]).contains(RILL_SHARE_DLQ_TOPIC));
        assert!(
            refused(&[(RILL_SHARE_REDELIVERY_BACKOFF_MS, "70000")]).contains("must be at least")
        );
    }

    #[test]
    fn accepts_and_types_overrides() {
        let d = GroupDefaults::default();
        let ok = validate(
            &d,
            &set(&[
                ("consumer.session.timeout.ms", " 50000"),
                ("share.auto.offset.reset", "by_duration:PT1H"),
                ("share.isolation.level", "read_committed"),
                (RILL_SHARE_FILTER, "TagA || TagB"),
                (RILL_SHARE_FILTER_TYPE, "TAG"),
                (RILL_SHARE_DLQ_TOPIC, "dead"),
            ]),
        )
        .unwrap();
        assert_eq!(ok["consumer.session.timeout.ms"], "50000");
        let c = GroupConfig::from_values(&merged(&d, &ok)).unwrap();
        assert_eq!(c.consumer_session_timeout_ms, 50_000);
        assert_eq!(
            c.share_auto_offset_reset,
            ShareAutoOffsetReset::ByDurationMs(3_600_000)
        );
        assert_eq!(c.share_isolation_level, ShareIsolationLevel::ReadCommitted);
        assert!(c.rill_share_filter.is_some());
        assert_eq!(c.share_dlq_topic(), Some("dead"));
        // A TAG expression is not SQL92.
        assert!(validate(&d, &set(&[(RILL_SHARE_FILTER, "TagA || TagB")])).is_err());
    }

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration_ms("P1DT2H3M4.5S"), Some(93_784_500));
        assert_eq!(parse_iso_duration_ms("PT0S"), Some(0));
        assert_eq!(parse_iso_duration_ms("P"), None);
        assert_eq!(parse_iso_duration_ms("PT"), None);
        assert_eq!(parse_iso_duration_ms("PT-1S"), None);
        assert_eq!(parse_iso_duration_ms("1H"), None);
    }

    #[test]
    fn broker_defaults_widen_bounds_and_show_as_static() {
        let d = GroupDefaults::new(2_000, 500);
        assert_eq!(d.bounds["consumer.session.timeout.ms"], (2_000, 60_000));
        let configs = GroupConfigs::in_memory(d);
        assert_eq!(configs.effective("g").consumer_session_timeout_ms, 2_000);
        let described = configs.describe("g");
        let session = described
            .iter()
            .find(|c| c.def.name == "consumer.session.timeout.ms")
            .unwrap();
        assert_eq!(session.value, "2000");
        assert_eq!(
            session.synonyms[0],
            (
                "group.consumer.session.timeout.ms",
                "2000".to_string(),
                SOURCE_STATIC_BROKER
            )
        );
        assert!(!described.iter().any(|c| c.def.internal));
    }

    #[test]
    fn persists_and_reloads_and_refuses_the_default_group() {
        let dir = tempfile::tempdir().unwrap();
        let configs = GroupConfigs::load(dir.path(), GroupDefaults::default()).unwrap();
        assert!(matches!(
            configs.update("", false, |_| Ok(())),
            Err(GroupConfigError::BadResource(_))
        ));
        assert_eq!(configs.effective("g a").consumer_session_timeout_ms, 45_000);
        configs
            .update("g a", false, |m| {
                m.insert("consumer.session.timeout.ms".into(), "50000".into());
                m.insert(RILL_SHARE_FILTER.into(), "region = 'eu west'".into());
                Ok(())
            })
            .unwrap();
        assert_eq!(
            configs.effective("g a").consumer_session_timeout_ms,
            50_000,
            "cache dropped on change"
        );
        configs
            .update("g a", true, |m| {
                m.insert("consumer.session.timeout.ms".into(), "55000".into());
                Ok(())
            })
            .unwrap();
        assert_eq!(
            configs.effective("g a").consumer_session_timeout_ms,
            50_000,
            "validate_only changes nothing"
        );
        let reloaded = GroupConfigs::load(dir.path(), GroupDefaults::default()).unwrap();
        assert_eq!(reloaded.overrides("g a"), configs.overrides("g a"));
        assert_eq!(reloaded.groups(), vec!["g a".to_string()]);
        reloaded
            .update("g a", false, |m| {
                m.clear();
                Ok(())
            })
            .unwrap();
        assert!(GroupConfigs::load(dir.path(), GroupDefaults::default())
            .unwrap()
            .groups()
            .is_empty());
    }
}
