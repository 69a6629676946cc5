//! Per-log configuration, named and defaulted as Kafka's topic configs so operators' settings
//! carry over.

use crate::compression::Compression;
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
    /// `rill.tail.cache.bytes`: flushed data further than this behind the log's durable end is
    /// given back from the page cache (`tail_pages.rs`); 0 keeps every page, as Kafka does.
    pub tail_cache_bytes: u64,
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
    /// `message.timestamp.before.max.ms`: a CreateTime record more than this older than the
    /// broker's clock is refused (INVALID_TIMESTAMP).
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: a CreateTime record more than this ahead of the
    /// broker's clock is refused (INVALID_TIMESTAMP).
    pub timestamp_after_max_ms: i64,
    /// `compression.type`: `producer` keeps batches as sent; a codec makes the broker
    /// recompress every batch that arrives in another codec.
    pub compression_type: TopicCompression,
    /// `compression.gzip.level`: -1 (the codec's default) or 1–9.
    pub compression_gzip_level: i32,
    /// `compression.lz4.level`: 1–17.
    pub compression_lz4_level: i32,
    /// `compression.zstd.level`.
    pub compression_zstd_level: i32,
    /// `min.insync.replicas`: an acks=all produce needs this many in-sync replicas, and a
    /// single node has one, so above 1 such produces get NOT_ENOUGH_REPLICAS, as in Kafka.
    pub min_insync_replicas: u32,
    /// `rill.delivery.delayed.enable`: records produced to the topic go through the broker's
    /// delay store (the broker decodes their headers). Storage only keeps the setting.
    pub delivery_delayed_enable: bool,
    /// `rill.delivery.delay.ms`: the delay of records that carry no delay header, on a topic
    /// with delayed delivery enabled (0: delivered at once).
    pub delivery_delay_ms: i64,
}

/// A topic's `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicCompression {
    /// `producer` (the default): batches are stored in the codec the producer chose, never
    /// decoded for it.
    #[default]
    Producer,
    /// `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd`: batches arriving in another codec are
    /// recompressed into this one on produce.
    Codec(Compression),
}

impl TopicCompression {
    /// The topic compression named by a (checked) `compression.type` value.
    pub fn parse(name: &str) -> TopicCompression {
        match name {
            "uncompressed" => TopicCompression::Codec(Compression::None),
            "gzip" => TopicCompression::Codec(Compression::Gzip),
            "snappy" => TopicCompression::Codec(Compression::Snappy),
            "lz4" => TopicCompression::Codec(Compression::Lz4),
            "zstd" => TopicCompression::Codec(Compression::Zstd),
            _ => TopicCompression::Producer,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: GIB,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            preallocate_step_bytes: 16 * MIB,
            tail_cache_bytes: DEFAULT_TAIL_CACHE_BYTES,
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
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            compression_type: TopicCompression::Producer,
            compression_gzip_level: -1,
            compression_lz4_level: 9,
            compression_zstd_level: 3,
            min_insync_replicas: 1,
            delivery_delayed_enable: false,
            delivery_delay_ms: 0,
        }
    }
}

/// `rill.tail.cache.bytes` by default: 0, every page stays, as in Kafka. A window small enough
/// to save CPU (64 MiB halved the CPU per GB produced on the benchmark VM) sends a consumer a
/// fraction of a second behind a fast producer to the disk: a full-speed fetch from the start
/// of a freshly written log fell from 0.77 to 0.24 of loopback sendfile. It is a per-topic
/// choice for topics whose consumers keep up.
pub const DEFAULT_TAIL_CACHE_BYTES: u64 = 0;

/// Kafka's default for `flush.messages`/`flush.ms`: "never".
const KAFKA_NEVER: u64 = i64::MAX as u64;

impl LogConfig {
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

    /// Applies one topic config ([`crate::topic_configs::TOPIC_CONFIGS`]). Unknown keys and
    /// bad values are errors that name the key; configs kept for compatibility only are
    /// checked and change nothing.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        crate::topic_configs::apply(self, key, value)
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
    use crate::topic_configs::{build_log_config, canonical, ConfigKind, Effect, TOPIC_CONFIGS};
    use std::collections::BTreeMap;

    #[test]
    fn flush_settings_choose_the_policy() {
        let mut c = LogConfig::default();
        assert_eq!(c.flush_policy(), FlushPolicy::OnAck);
        c.set("flush.messages", "1").unwrap();
        assert_eq!(c.flush_policy(), FlushPolicy::EveryAppend);
        c.set("flush.messages", "100").unwrap();
        assert_eq!(c.flush_policy(), FlushPolicy::Messages(100));
        c.set("flush.messages", &i64::MAX.to_string()).unwrap();
        assert_eq!(c.flush_policy(), FlushPolicy::Never);
        c.set("min.cleanable.dirty.ratio", "0.01").unwrap();
        assert_eq!(c.min_cleanable_dirty_ratio(), 0.01);
        c.set("min.compaction.lag.ms", "10").unwrap();
        c.set("max.compaction.lag.ms", "5").unwrap();
        assert!(c.validate().is_err(), "min lag above max lag is refused");
    }

    /// Pair assertion: the table's defaults and `LogConfig::default()` say the same thing,
    /// so a key left unset and a key set to its default behave alike (except the flush keys,
    /// whose unset state is rill's grouped sync on ack).
    #[test]
    fn table_defaults_match_log_config_default() {
        for def in TOPIC_CONFIGS {
            if matches!(def.name, "flush.messages" | "flush.ms") {
                continue;
            }
            let mut c = LogConfig::default();
            c.set(def.name, def.default).unwrap();
            assert_eq!(c, LogConfig::default(), "default of {}", def.name);
            assert_eq!(def.default_value().canonical(), def.default, "{}", def.name);
        }
    }

    #[test]
    fn every_config_takes_effect_or_says_why_not() {
        let mut names: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let sorted = {
            let mut s = names.clone();
            s.sort();
            s
        };
        assert_eq!(names, sorted, "the table is sorted by name");
        names.dedup();
        assert_eq!(names.len(), TOPIC_CONFIGS.len(), "no key twice");
        for def in TOPIC_CONFIGS {
            match def.effect {
                Effect::Stored(reason) | Effect::Broker(reason) => {
                    assert!(!reason.is_empty(), "{}", def.name)
                }
                Effect::Applies(_) => {}
            }
            assert!(!def.doc.is_empty(), "{}", def.name);
        }
    }

    #[test]
    fn values_are_checked_and_written_back_as_kafka_does() {
        assert_eq!(canonical("min.cleanable.dirty.ratio", "1").unwrap(), "1.0");
        assert_eq!(
            canonical("min.cleanable.dirty.ratio", "0.50").unwrap(),
            "0.5"
        );
        assert_eq!(
            canonical("cleanup.policy", " compact , delete").unwrap(),
            "compact,delete"
        );
        assert_eq!(canonical("cleanup.policy", "").unwrap(), "");
        assert_eq!(canonical("preallocate", "TRUE").unwrap(), "true");
        assert_eq!(
            canonical("leader.replication.throttled.replicas", "0:1, 1:1").unwrap(),
            "0:1,1:1"
        );
        assert_eq!(
            canonical("follower.replication.throttled.replicas", "*").unwrap(),
            "*"
        );
        let kinds: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.kind).collect();
        assert!(kinds.contains(&ConfigKind::Double) && kinds.contains(&ConfigKind::Boolean));
    }

    #[test]
    fn effective_keys_change_the_log_config() {
        let mut overrides = BTreeMap::new();
        for (k, v) in [
            ("compression.type", "zstd"),
            ("compression.zstd.level", "7"),
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "2000"),
            ("min.insync.replicas", "2"),
            ("preallocate", "true"),
        ] {
            overrides.insert(k.to_string(), v.to_string());
        }
        let c = build_log_config(&BTreeMap::new(), &overrides).unwrap();
        assert_eq!(
            c.compression_type,
            TopicCompression::Codec(Compression::Zstd)
        );
        assert_eq!(c.compression_zstd_level, 7);
        assert_eq!(
            (c.timestamp_before_max_ms, c.timestamp_after_max_ms),
            (1000, 2000)
        );
        assert_eq!(c.min_insync_replicas, 2);
        let mut defaults = BTreeMap::new();
        defaults.insert("retention.ms".to_string(), "5".to_string());
        let c = build_log_config(&defaults, &BTreeMap::new()).unwrap();
        assert_eq!(
            c.retention_ms, 5,
            "broker defaults apply under the overrides"
        );
        overrides.insert("retention.ms".to_string(), "6".to_string());
        assert_eq!(
            build_log_config(&defaults, &overrides)
                .unwrap()
                .retention_ms,
            6
        );
    }

    #[test]
    fn retention_follows_the_cleanup_policy() {
        let mut c = LogConfig::default();
        assert!(c.deletes_by_retention() && !c.compacts());
        c.set("cleanup.policy", "compact").unwrap();
        assert!(!c.deletes_by_retention() && c.compacts());
        c.set("cleanup.policy", "compact, delete").unwrap();
        assert!(c.deletes_by_retention() && c.compacts());
        c.set("cleanup.policy", "").unwrap();
        assert!(
            !c.deletes_by_retention() && !c.compacts(),
            "empty: keep forever"
        );
        c.set("cleanup.policy", "delete").unwrap();
        assert!(c.deletes_by_retention() && !c.compacts());
    }

    #[test]
    fn visibility_is_durable_by_default_and_only_under_prompt_flushes() {
        let mut c = LogConfig::default();
        assert!(c.visible_when_durable());
        c.set("rill.high.watermark.visibility", "written").unwrap();
        assert!(!c.visible_when_durable());
        c.set("rill.high.watermark.visibility", "durable").unwrap();
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
        c.set("message.timestamp.type", "LogAppendTime").unwrap();
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        c.set("message.timestamp.type", "CreateTime").unwrap();
        assert_eq!(c, LogConfig::default());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = LogConfig::default();
        for (k, v) in [
            ("segment.bytes", "x"),
            ("segment.bytes", "3"),
            ("segment.bytes", "4294967296"),
            ("nope", "1"),
            ("cleanup.policy", "zap"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "x"),
            ("min.cleanable.dirty.ratio", "NaN"),
            ("delete.retention.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
            ("message.timestamp.type", "logappendtime"),
            ("message.timestamp.type", "LogAppend"),
            ("message.timestamp.type", ""),
            ("compression.type", "brotli"),
            ("compression.gzip.level", "0"),
            ("compression.lz4.level", "18"),
            ("compression.zstd.level", "23"),
            ("min.insync.replicas", "0"),
            ("message.timestamp.after.max.ms", "-1"),
            ("preallocate", "yes"),
            ("remote.storage.enable", "true"),
            ("leader.replication.throttled.replicas", "0-1"),
            ("follower.replication.throttled.replicas", "*,0:1"),
            ("local.retention.ms", "-3"),
            ("segment.index.bytes", "3"),
        ] {
            match c.set(k, v) {
                Err(StorageError::InvalidConfig { key, .. }) => assert_eq!(key, k),
                other => panic!("{k}={v} gave {other:?}"),
            }
        }
        assert_eq!(c, LogConfig::default());
    }
}
