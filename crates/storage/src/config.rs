//! Per-log configuration, named and defaulted as Kafka's topic configs so operators' settings
//! carry over.

use crate::error::{Result, StorageError};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// When the log makes its writes durable on its own (independently of what acks=all asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync before an append returns (`flush.messages=1`).
    EveryAppend,
    /// fdatasync once this many messages are unflushed (`flush.messages=N`).
    Messages(u64),
    /// fdatasync from the housekeeping tick when the oldest unflushed write is this old
    /// (`flush.ms=N`).
    IntervalMs(u64),
    /// Nothing flushes on its own; acks=all producers still wait for a grouped fdatasync. The
    /// default: durable acknowledgements on a single node, at the cost of one shared sync.
    OnAck,
    /// Leave it to the OS (`flush.messages` set to its Kafka default, Long.MAX_VALUE): acks=all
    /// does not wait for a sync. Acknowledged data can be lost on power failure.
    Never,
}

/// When appended records become visible to readers (the high watermark): Kafka's behaviour, or
/// only once a power cut can no longer take them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// `durable` (the default): the high watermark is the flushed offset, so no reader sees a
    /// record that a power cut removes and no offset a consumer saw is ever reused. Applies
    /// under the flush policies that sync promptly ([`FlushPolicy::OnAck`],
    /// [`FlushPolicy::EveryAppend`]); the background flusher keeps the delay near one sync.
    Durable,
    /// `written`: visible once in the page cache, as in Kafka.
    Written,
}

/// Which time a batch's timestamps carry (`message.timestamp.type`), as Kafka's
/// `TimestampType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// `CreateTime` (the default): the producer's timestamps, stored as sent.
    #[default]
    CreateTime,
    /// `LogAppendTime`: the log stamps every appended batch with the time of the append
    /// (attributes bit 3, maxTimestamp; `batch::stamp_log_append_time`), which readers then
    /// take as every record's timestamp. Time lookups and retention see that time.
    LogAppendTime,
}

/// Configuration of one partition log. Field names follow Kafka's topic config keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when it is this old and not empty.
    pub segment_ms: u64,
    /// `index.interval.bytes`: one offset index entry per this many log bytes.
    pub index_interval_bytes: u32,
    /// `rill.preallocate.step.bytes`: how far ahead of the write position the active segment is
    /// preallocated. Bounded so that idle partitions do not reserve whole segments.
    pub preallocate_step_bytes: u64,
    /// `retention.ms`; -1 keeps data forever.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 means no size limit.
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: u32,
    /// `flush.messages`; `None` when unset.
    pub flush_messages: Option<u64>,
    /// `flush.ms`; `None` when unset.
    pub flush_ms: Option<u64>,
    /// `cleanup.policy`: `delete`, `compact` or both. Time and size retention apply only when
    /// it includes `delete` ([`LogConfig::deletes_by_retention`]).
    pub cleanup_policy: String,
    /// `rill.high.watermark.visibility`: `durable` or `written`.
    pub visibility: Visibility,
    /// `delete.retention.ms`: how long a tombstone (null value) stays in a compacted log after
    /// it was first cleaned, so that consumers reading from the start see the delete.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty record is older than this is cleaned
    /// whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`, in millionths (a float in Kafka; kept exact here so the
    /// config stays `Eq`): the cleaner picks a log once dirty bytes / cleanable bytes reach it.
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// `message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub timestamp_type: TimestampType,
    /// `rill.delivery.delayed.enable`: records produced to the topic go through the broker's
    /// delay store (the broker decodes their headers). Storage only keeps the setting: it is a
    /// topic config like the others, persisted and described with them.
    pub delivery_delayed_enable: bool,
    /// `rill.delivery.delay.ms`: the delay of records that carry no delay header, on a topic
    /// with delayed delivery enabled (0: delivered at once).
    pub delivery_delay_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: GIB,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            preallocate_step_bytes: 16 * MIB,
            retention_ms: 7 * DAY_MS as i64,
            retention_bytes: -1,
            max_message_bytes: 1024 * 1024 + 12,
            flush_messages: None,
            flush_ms: None,
            cleanup_policy: "delete".to_string(),
            visibility: Visibility::Durable,
            delete_retention_ms: DAY_MS as i64,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio_ppm: 500_000,
            timestamp_type: TimestampType::CreateTime,
            delivery_delayed_enable: false,
            delivery_delay_ms: 0,
        }
    }
}

/// Kafka's default for `flush.messages`/`flush.ms`: "never".
const KAFKA_NEVER: u64 = i64::MAX as u64;

impl LogConfig {
    /// Every key [`LogConfig::set`] accepts.
    pub const KEYS: [&'static str; 18] = [
        "segment.bytes",
        "segment.ms",
        "index.interval.bytes",
        "rill.preallocate.step.bytes",
        "retention.ms",
        "retention.bytes",
        "max.message.bytes",
        "flush.messages",
        "flush.ms",
        "cleanup.policy",
        "rill.high.watermark.visibility",
        "delete.retention.ms",
        "min.compaction.lag.ms",
        "max.compaction.lag.ms",
        "min.cleanable.dirty.ratio",
        "message.timestamp.type",
        "rill.delivery.delayed.enable",
        "rill.delivery.delay.ms",
    ];

    /// Whether `retention.ms` and `retention.bytes` apply: only when `cleanup.policy` includes
    /// `delete`. A compact-only topic holds "current state" (Connect's offsets, changelogs, CDC
    /// tables) and Kafka never deletes it by age or size.
    pub fn deletes_by_retention(&self) -> bool {
        self.policy_includes("delete")
    }

    /// Whether `cleanup.policy` includes `compact`.
    pub fn compacts(&self) -> bool {
        self.policy_includes("compact")
    }

    fn policy_includes(&self, policy: &str) -> bool {
        self.cleanup_policy.split(',').any(|p| p.trim() == policy)
    }

    /// Whether the high watermark waits for durability: `durable` visibility under a flush
    /// policy that syncs promptly. Under `flush.ms`/`flush.messages`/never the user chose to
    /// leave data unsynced for a while, and readers see it when written.
    pub fn visible_when_durable(&self) -> bool {
        self.visibility == Visibility::Durable
            && matches!(
                self.flush_policy(),
                FlushPolicy::OnAck | FlushPolicy::EveryAppend
            )
    }

    /// `min.cleanable.dirty.ratio` as Kafka states it.
    pub fn min_cleanable_dirty_ratio(&self) -> f64 {
        f64::from(self.min_cleanable_dirty_ratio_ppm) / 1e6
    }

    /// The flush policy these settings describe.
    pub fn flush_policy(&self) -> FlushPolicy {
        match (self.flush_messages, self.flush_ms) {
            (Some(1), _) | (_, Some(0)) => FlushPolicy::EveryAppend,
            (Some(n), _) if n < KAFKA_NEVER => FlushPolicy::Messages(n),
            (_, Some(ms)) if ms < KAFKA_NEVER => FlushPolicy::IntervalMs(ms),
            (None, None) => FlushPolicy::OnAck,
            _ => FlushPolicy::Never,
        }
    }

    /// Applies one topic config. Unknown keys and bad values are errors that name the key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let invalid = |reason: &str| StorageError::InvalidConfig {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let int = |min: i64| -> Result<i64> {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| invalid(&format!("{value:?} is not an integer")))?;
            if v < min {
                return Err(invalid(&format!("{v} is below the minimum {min}")));
            }
            Ok(v)
        };
        match key {
            "segment.bytes" => {
                // File positions in the offset index are 4 bytes, as in Kafka.
                let v = int(14)?;
                if v > i64::from(i32::MAX) {
                    return Err(invalid("above 2147483647"));
                }
                self.segment_bytes = v as u64
            }
            "segment.ms" => self.segment_ms = int(1)? as u64,
            "index.interval.bytes" => {
                self.index_interval_bytes =
                    u32::try_from(int(0)?).map_err(|_| invalid("too large"))?
            }
            "rill.preallocate.step.bytes" => self.preallocate_step_bytes = int(0)? as u64,
            "retention.ms" => self.retention_ms = int(-1)?,
            "retention.bytes" => self.retention_bytes = int(-1)?,
            "max.message.bytes" => {
                self.max_message_bytes = u32::try_from(int(0)?).map_err(|_| invalid("too large"))?
            }
            "flush.messages" => self.flush_messages = Some(int(1)? as u64),
            "flush.ms" => self.flush_ms = Some(int(0)? as u64),
            "cleanup.policy" => {
                let ok = value
                    .split(',')
                    .all(|p| matches!(p.trim(), "delete" | "compact"));
                if !ok || value.trim().is_empty() {
                    return Err(invalid("must be delete, compact or both"));
                }
                self.cleanup_policy = value.trim().to_string();
            }
            "rill.high.watermark.visibility" => {
                self.visibility = match value.trim() {
                    "durable" => Visibility::Durable,
                    "written" => Visibility::Written,
                    _ => return Err(invalid("must be durable or written")),
                }
            }
            "delete.retention.ms" => self.delete_retention_ms = int(0)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = int(0)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = int(1)?,
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(&format!("{value:?} is not a number")))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(invalid(&format!("{v} is not between 0 and 1")));
                }
                self.min_cleanable_dirty_ratio_ppm = (v * 1e6).round() as u32;
            }
            // Case-sensitive, as Kafka's `ValidString`.
            "message.timestamp.type" => {
                self.timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid("must be one of: CreateTime, LogAppendTime")),
                }
            }
            "rill.delivery.delayed.enable" => {
                self.delivery_delayed_enable = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("must be true or false")),
                }
            }
            "rill.delivery.delay.ms" => self.delivery_delay_ms = int(0)?,
            _ => return Err(invalid("unknown topic config")),
        }
        Ok(())
    }

    /// Resets one key to its default (IncrementalAlterConfigs DELETE).
    pub fn reset(&mut self, key: &str) -> Result<()> {
        let default = LogConfig::default();
        let value = default
            .value_of(key)
            .ok_or_else(|| StorageError::InvalidConfig {
                key: key.to_string(),
                reason: "unknown topic config".to_string(),
            })?;
        match key {
            "flush.messages" => self.flush_messages = None,
            "flush.ms" => self.flush_ms = None,
            _ => self.set(key, &value)?,
        }
        Ok(())
    }

    fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "rill.preallocate.step.bytes" => self.preallocate_step_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "flush.messages" => self.flush_messages.unwrap_or(KAFKA_NEVER).to_string(),
            "flush.ms" => self.flush_ms.unwrap_or(KAFKA_NEVER).to_string(),
            "cleanup.policy" => self.cleanup_policy.clone(),
            "rill.high.watermark.visibility" => match self.visibility {
                Visibility::Durable => "durable".to_string(),
                Visibility::Written => "written".to_string(),
            },
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio().to_string(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_string(),
                TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            },
            "rill.delivery.delayed.enable" => self.delivery_delayed_enable.to_string(),
            "rill.delivery.delay.ms" => self.delivery_delay_ms.to_string(),
            _ => return None,
        })
    }

    /// `(key, value, is_default)` for every supported key, for DescribeConfigs.
    pub fn entries(&self) -> Vec<(&'static str, String, bool)> {
        let default = LogConfig::default();
        Self::KEYS
            .iter()
            .map(|&key| {
                let value = self.value_of(key).expect("KEYS lists only known keys");
                let is_default = default.value_of(key) == Some(value.clone());
                (key, value, is_default)
            })
            .collect()
    }

    /// Checks relations between settings that each key alone cannot.
    pub fn validate(&self) -> Result<()> {
        if self.segment_bytes < 14 {
            return Err(StorageError::InvalidConfig {
                key: "segment.bytes".into(),
                reason: "below 14".into(),
            });
        }
        // Kafka's LogConfig.validate: the lags must not contradict each other.
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms {
            return Err(StorageError::InvalidConfig {
                key: "min.compaction.lag.ms".into(),
                reason: format!(
                    "{} conflicts with max.compaction.lag.ms {}",
                    self.min_compaction_lag_ms, self.max_compaction_lag_ms
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reset_and_entries_round_trip() {
        let mut c = LogConfig::default();
        assert_eq!(c.flush_policy(), FlushPolicy::OnAck);
        c.set("flush.messages", "1").unwrap();
        assert_eq!(c.flush_policy(), FlushPolicy::EveryAppend);
        c.set("flush.messages", "100").unwrap();
        assert_eq!(c.flush_policy(), FlushPolicy::Messages(100));
        c.set("flush.messages", &i64::MAX.to_string()).unwrap();
        assert_eq!(c.flush_policy(), FlushPolicy::Never);
        c.reset("flush.messages").unwrap();
        c.set("retention.ms", "-1").unwrap();
        let e = c.entries();
        assert!(e.contains(&("retention.ms", "-1".to_string(), false)));
        assert!(e.contains(&("segment.bytes", GIB.to_string(), true)));
        assert_eq!(e.len(), LogConfig::KEYS.len());
        assert!(e.contains(&("min.cleanable.dirty.ratio", "0.5".to_string(), true)));
        assert!(e.contains(&("delete.retention.ms", "86400000".to_string(), true)));
        c.set("min.cleanable.dirty.ratio", "0.01").unwrap();
        assert_eq!(c.min_cleanable_dirty_ratio(), 0.01);
        c.set("min.compaction.lag.ms", "10").unwrap();
        c.set("max.compaction.lag.ms", "5").unwrap();
        assert!(c.validate().is_err(), "min lag above max lag is refused");
    }

    #[test]
    fn retention_follows_the_cleanup_policy() {
        let mut c = LogConfig::default();
        assert!(c.deletes_by_retention() && !c.compacts());
        c.set("cleanup.policy", "compact").unwrap();
        assert!(!c.deletes_by_retention() && c.compacts());
        c.set("cleanup.policy", "compact, delete").unwrap();
        assert!(c.deletes_by_retention() && c.compacts());
        c.set("cleanup.policy", "delete").unwrap();
        assert!(c.deletes_by_retention() && !c.compacts());
    }

    #[test]
    fn visibility_is_durable_by_default_and_only_under_prompt_flushes() {
        let mut c = LogConfig::default();
        assert!(c.visible_when_durable());
        c.set("rill.high.watermark.visibility", "written").unwrap();
        assert!(!c.visible_when_durable());
        c.reset("rill.high.watermark.visibility").unwrap();
        assert!(c.visible_when_durable());
        c.set("flush.ms", "1000").unwrap();
        assert!(
            !c.visible_when_durable(),
            "flush.ms leaves data unsynced for a while"
        );
        assert!(c.set("rill.high.watermark.visibility", "maybe").is_err());
    }

    #[test]
    fn timestamp_type_is_create_time_by_default_and_settable() {
        let mut c = LogConfig::default();
        assert_eq!(c.timestamp_type, TimestampType::CreateTime);
        assert!(c
            .entries()
            .contains(&("message.timestamp.type", "CreateTime".to_string(), true)));
        c.set("message.timestamp.type", "LogAppendTime").unwrap();
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        assert!(c.entries().contains(&(
            "message.timestamp.type",
            "LogAppendTime".to_string(),
            false
        )));
        c.reset("message.timestamp.type").unwrap();
        assert_eq!(c, LogConfig::default());
    }

    #[test]
    fn delayed_delivery_is_off_by_default_and_settable() {
        let mut c = LogConfig::default();
        assert!(!c.delivery_delayed_enable);
        assert!(c
            .entries()
            .contains(&("rill.delivery.delayed.enable", "false".to_string(), true)));
        c.set("rill.delivery.delayed.enable", "true").unwrap();
        c.set("rill.delivery.delay.ms", "30000").unwrap();
        assert!(c.delivery_delayed_enable);
        assert_eq!(c.delivery_delay_ms, 30_000);
        assert!(c
            .entries()
            .contains(&("rill.delivery.delay.ms", "30000".to_string(), false)));
        c.reset("rill.delivery.delayed.enable").unwrap();
        c.reset("rill.delivery.delay.ms").unwrap();
        assert_eq!(c, LogConfig::default());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = LogConfig::default();
        for (k, v) in [
            ("segment.bytes", "x"),
            ("segment.bytes", "3"),
            ("nope", "1"),
            ("cleanup.policy", "zap"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "x"),
            ("delete.retention.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
            ("message.timestamp.type", "logappendtime"),
            ("message.timestamp.type", "LogAppend"),
            ("message.timestamp.type", ""),
            ("rill.delivery.delayed.enable", "yes"),
            ("rill.delivery.delayed.enable", "TRUE"),
            ("rill.delivery.delay.ms", "-1"),
            ("rill.delivery.delay.ms", "30s"),
        ] {
            match c.set(k, v) {
                Err(StorageError::InvalidConfig { key, .. }) => assert_eq!(key, k),
                other => panic!("{k}={v} gave {other:?}"),
            }
        }
        assert_eq!(c, LogConfig::default());
    }
}
