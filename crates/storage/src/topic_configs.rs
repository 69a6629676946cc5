//! Every topic config rill accepts, in one table: Kafka 4.4's topic configs (names, types,
//! defaults, validation and documentation as Kafka's `TopicConfig`/`LogConfig` state them, and
//! the broker config each defaults from, as `ServerTopicConfigSynonyms`) and rill's own
//! `rill.*` keys.
//!
//! Each entry either takes effect (it sets a field of [`LogConfig`]) or is kept for
//! compatibility only, with the reason: tools and clients that set Kafka configs keep working,
//! and DescribeConfigs shows what they set. Adding a key is one [`ConfigDef`] in
//! [`TOPIC_CONFIGS`]; `LogConfig::set`, DescribeConfigs, CreateTopics and both AlterConfigs
//! read this table.

use std::collections::BTreeMap;

use crate::config::{LogConfig, TimestampType, TopicCompression, Visibility};
use crate::error::{Result, StorageError};

/// A config's type, numbered as DescribeConfigs' `ConfigType` (v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// What values a config accepts, beyond parsing as its [`ConfigKind`] (Kafka's validators).
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Anything of the right type.
    Any,
    /// An integer at least this (`Range.atLeast`).
    AtLeast(i64),
    /// An integer in this closed range (`Range.between`; also the int/long bounds).
    Range(i64, i64),
    /// One of these strings, case-sensitive (`ValidString.in`).
    OneOf(&'static [&'static str]),
    /// A list whose items are all among these (`ValidList.in`); may be empty.
    ListOf(&'static [&'static str]),
    /// A double between 0 and 1.
    Ratio,
    /// gzip's levels: -1 (the codec default) or 1 to 9.
    GzipLevel,
    /// `*` or `partition:broker` pairs (`ThrottledReplicaListValidator`).
    ThrottledReplicas,
    /// A boolean that may not be `true` here, with Kafka's reason.
    NotTrue(&'static str),
}

/// What setting a config does in rill.
#[derive(Clone, Copy)]
pub enum Effect {
    /// It takes effect: the function sets the [`LogConfig`] field from the checked value.
    Applies(fn(&mut LogConfig, &Value)),
    /// It is validated, kept in the topic registry and described, but changes nothing, for
    /// the reason given (also in docs/topic-configs.md).
    Stored(&'static str),
    /// It takes effect in the broker, which reads it from the topic's configs and checks it
    /// further (said here); storage keeps and describes it.
    Broker(&'static str),
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Applies(_) => f.write_str("Applies"),
            Effect::Stored(reason) => write!(f, "Stored({reason:?})"),
            Effect::Broker(what) => write!(f, "Broker({what:?})"),
        }
    }
}

/// One topic config.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    /// The topic config key.
    pub name: &'static str,
    pub kind: ConfigKind,
    /// The default, written as DescribeConfigs shows it.
    pub default: &'static str,
    pub check: Check,
    /// The broker config this topic config defaults from (`log.retention.ms` for
    /// `retention.ms`), if any.
    pub broker_synonym: Option<&'static str>,
    /// Whether Kafka lists the broker synonym's own default among the synonyms
    /// (`DEFAULT_CONFIG`); it does not when that broker config has no default of its own
    /// (`log.retention.ms` defaults through `log.retention.hours`).
    pub synonym_default_listed: bool,
    pub effect: Effect,
    /// Kafka's documentation of the config, as DescribeConfigs returns it.
    pub doc: &'static str,
}

/// A checked config value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Str(String),
    Int(i64),
    Double(f64),
    List(Vec<String>),
}

impl Value {
    /// The integer of an Int/Long config (0 for other kinds, which the table never asks).
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(v) => *v,
            _ => 0,
        }
    }

    /// The double of a Double config.
    pub fn double(&self) -> f64 {
        match self {
            Value::Double(v) => *v,
            _ => 0.0,
        }
    }

    /// The string of a String config.
    pub fn str(&self) -> &str {
        match self {
            Value::Str(v) => v,
            _ => "",
        }
    }

    /// The boolean of a Boolean config.
    pub fn bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// The items of a List config.
    pub fn list(&self) -> &[String] {
        match self {
            Value::List(v) => v,
            _ => &[],
        }
    }

    /// The value written as Kafka writes it back (`ConfigDef.convertToString`): Java's
    /// `Double.toString`, lists joined with commas.
    pub fn canonical(&self) -> String {
        match self {
            Value::Bool(v) => v.to_string(),
            Value::Str(v) => v.clone(),
            Value::Int(v) => v.to_string(),
            Value::Double(v) if v.fract() == 0.0 && v.abs() < 1e7 => format!("{v:.1}"),
            Value::Double(v) => v.to_string(),
            Value::List(v) => v.join(","),
        }
    }
}

impl ConfigDef {
    /// Parses and checks `raw` as this config's value.
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] naming the key and saying why.
    pub fn parse(&self, raw: &str) -> Result<Value> {
        let invalid = |reason: String| StorageError::InvalidConfig {
            key: self.name.to_string(),
            reason,
        };
        let raw = raw.trim();
        let value = match self.kind {
            ConfigKind::Boolean => match raw.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(invalid(format!("{raw:?} is not true or false"))),
            },
            ConfigKind::String => Value::Str(raw.to_string()),
            ConfigKind::Int | ConfigKind::Long => {
                let v: i64 = raw
                    .parse()
                    .map_err(|_| invalid(format!("{raw:?} is not an integer")))?;
                if self.kind == ConfigKind::Int && i32::try_from(v).is_err() {
                    return Err(invalid(format!("{v} is not a 32-bit integer")));
                }
                Value::Int(v)
            }
            ConfigKind::Double => {
                let v: f64 = raw
                    .parse()
                    .map_err(|_| invalid(format!("{raw:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(invalid(format!("{raw:?} is not a finite number")));
                }
                Value::Double(v)
            }
            ConfigKind::List => Value::List(
                raw.split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        };
        self.check_value(&value).map_err(invalid)?;
        Ok(value)
    }

    fn check_value(&self, value: &Value) -> std::result::Result<(), String> {
        match (self.check, value) {
            (Check::Any, _) => Ok(()),
            (Check::AtLeast(min), Value::Int(v)) if *v < min => {
                Err(format!("{v} is below the minimum {min}"))
            }
            (Check::Range(min, max), Value::Int(v)) if *v < min || *v > max => {
                Err(format!("{v} is not in the range [{min}, {max}]"))
            }
            (Check::OneOf(allowed), Value::Str(v)) if !allowed.contains(&v.as_str()) => {
                Err(format!("{v:?} must be one of: {}", allowed.join(", ")))
            }
            (Check::ListOf(allowed), Value::List(items)) => {
                match items.iter().find(|i| !allowed.contains(&i.as_str())) {
                    Some(bad) => Err(format!("{bad:?} must be among: {}", allowed.join(", "))),
                    None => Ok(()),
                }
            }
            (Check::Ratio, Value::Double(v)) if !(0.0..=1.0).contains(v) => {
                Err(format!("{v} is not between 0 and 1"))
            }
            (Check::GzipLevel, Value::Int(v)) if *v != -1 && !(1..=9).contains(v) => {
                Err(format!("{v} is not -1 or a gzip level from 1 to 9"))
            }
            (Check::ThrottledReplicas, Value::List(items)) => {
                let pair = |i: &str| {
                    let mut parts = i.split(':');
                    let ok = |p: Option<&str>| p.is_some_and(|p| p.trim().parse::<i32>().is_ok());
                    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
                };
                let star_alone = items.len() == 1 && items[0] == "*";
                if star_alone || items.iter().all(|i| pair(i)) {
                    Ok(())
                } else {
                    Err("must be '*' or a list of partition:broker pairs".to_string())
                }
            }
            (Check::NotTrue(reason), Value::Bool(true)) => Err(reason.to_string()),
            _ => Ok(()),
        }
    }

    /// The default as a checked value (the table's defaults are checked by a test).
    pub fn default_value(&self) -> Value {
        self.parse(self.default)
            .expect("every default in TOPIC_CONFIGS passes its own check")
    }

    /// Whether setting this config changes what rill does.
    pub fn takes_effect(&self) -> bool {
        matches!(self.effect, Effect::Applies(_))
    }
}

/// The definition of topic config `name`, if rill knows it.
pub fn topic_config(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks `raw` for topic config `name` and returns it as Kafka writes it back.
///
/// # Errors
/// Unknown key or bad value, naming the key.
pub fn canonical(name: &str, raw: &str) -> Result<String> {
    Ok(definition(name)?.parse(raw)?.canonical())
}

fn definition(name: &str) -> Result<&'static ConfigDef> {
    topic_config(name).ok_or_else(|| StorageError::InvalidConfig {
        key: name.to_string(),
        reason: format!("Unknown topic config name: {name}"),
    })
}

/// Builds a log's config: `defaults` (broker-level topic defaults, by topic key) over
/// [`LogConfig::default`], then the topic's `overrides`; then the relations between keys.
///
/// # Errors
/// An unknown key, a bad value, or contradicting keys.
pub fn build_log_config(
    defaults: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig> {
    let mut config = LogConfig::default();
    for (key, raw) in defaults.iter().chain(overrides) {
        config.set(key, raw)?;
    }
    config.validate()?;
    Ok(config)
}

pub(crate) fn apply(config: &mut LogConfig, name: &str, raw: &str) -> Result<()> {
    let def = definition(name)?;
    let value = def.parse(raw)?;
    if let Effect::Applies(set) = def.effect {
        set(config, &value);
    }
    Ok(())
}

/// Every topic config, sorted by name as DescribeConfigs lists them.
pub static TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        kind: ConfigKind::List,
        default: "delete",
        check: Check::ListOf(&["compact", "delete"]),
        broker_synonym: Some("log.cleanup.policy"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.cleanup_policy = v.list().join(",")),
        doc: r#"This config designates the retention policy to use on log segments. The "delete" policy (which is the default) will discard old segments when their retention time or size limit has been reached. The "compact" policy will enable <a href="https://kafka.apache.org/documentation/#compaction">log compaction</a>, which retains the latest value for each key. It is also possible to specify both policies in a comma-separated list (e.g. "delete,compact"). In this case, old segments will be discarded per the retention time and size configuration, while retained segments will be compacted. An empty list means infinite retention - no cleanup policies will be applied and log segments will be retained indefinitely. Note that with remote storage enabled, local retention limits (log.local.retention.ms and log.local.retention.bytes) are still applied to local segments."#,
    },
    ConfigDef {
        name: "compression.gzip.level",
        kind: ConfigKind::Int,
        default: "-1",
        check: Check::GzipLevel,
        broker_synonym: Some("compression.gzip.level"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.compression_gzip_level = v.int() as i32),
        doc: r#"The compression level to use if compression.type is set to <code>gzip</code>."#,
    },
    ConfigDef {
        name: "compression.lz4.level",
        kind: ConfigKind::Int,
        default: "9",
        check: Check::Range(1, 17),
        broker_synonym: Some("compression.lz4.level"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.compression_lz4_level = v.int() as i32),
        doc: r#"The compression level to use if compression.type is set to <code>lz4</code>."#,
    },
    ConfigDef {
        name: "compression.type",
        kind: ConfigKind::String,
        default: "producer",
        check: Check::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        broker_synonym: Some("compression.type"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.compression_type = TopicCompression::parse(v.str())),
        doc: r#"Specify the final compression type for a given topic. This configuration accepts the standard compression codecs ('gzip', 'snappy', 'lz4', 'zstd'). It additionally accepts 'uncompressed' which is equivalent to no compression; and 'producer' which means retain the original compression codec set by the producer."#,
    },
    ConfigDef {
        name: "compression.zstd.level",
        kind: ConfigKind::Int,
        default: "3",
        check: Check::Range(-131_072, 22),
        broker_synonym: Some("compression.zstd.level"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.compression_zstd_level = v.int() as i32),
        doc: r#"The compression level to use if compression.type is set to <code>zstd</code>."#,
    },
    ConfigDef {
        name: "delete.retention.ms",
        kind: ConfigKind::Long,
        default: "86400000",
        check: Check::AtLeast(0),
        broker_synonym: Some("log.cleaner.delete.retention.ms"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.delete_retention_ms = v.int()),
        doc: r#"The amount of time to retain delete tombstone markers for <a href="https://kafka.apache.org/documentation/#compaction">log compacted</a> topics. This setting also gives a bound on the time in which a consumer must complete a read if they begin from offset 0 to ensure that they get a valid snapshot of the final stage (otherwise delete tombstones may be collected before they complete their scan)."#,
    },
    ConfigDef {
        name: "errors.deadletterqueue.group.enable",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Stored("no share groups yet, so no dead-letter queues to write"),
        doc: r#"Enable this topic to be used as a dead-letter queue for share groups. When set to <code>true</code>, share groups can write undeliverable records to this topic. When set to <code>false</code> (the default), attempts to use this topic as a DLQ will be rejected."#,
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        kind: ConfigKind::Long,
        default: "60000",
        check: Check::AtLeast(0),
        broker_synonym: Some("log.segment.delete.delay.ms"),
        synonym_default_listed: true,
        effect: Effect::Stored("segments are unlinked at once: readers keep open descriptors, so deleting later protects nothing"),
        doc: r#"The time to wait before deleting a file from the filesystem"#,
    },
    ConfigDef {
        name: "flush.messages",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        check: Check::AtLeast(1),
        broker_synonym: Some("log.flush.interval.messages"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.flush_messages = Some(v.int() as u64)),
        doc: r#"This setting allows specifying an interval at which we will force an fsync of data written to the log. For example if this was set to 1 we would fsync after every message; if it were 5 we would fsync after every five messages. In general we recommend you not set this and use replication for durability and allow the operating system's background flush capabilities as it is more efficient. This setting can be overridden on a per-topic basis (see <a href="https://kafka.apache.org/documentation/#topicconfigs">the per-topic configuration section</a>)."#,
    },
    ConfigDef {
        name: "flush.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        check: Check::AtLeast(0),
        broker_synonym: Some("log.flush.interval.ms"),
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| c.flush_ms = Some(v.int() as u64)),
        doc: r#"This setting allows specifying a time interval at which we will force an fsync of data written to the log. For example if this was set to 1000 we would fsync after 1000 ms had passed. Note that this setting depends on the broker-level configuration <code>log.flush.scheduler.interval.ms</code>, which controls how frequently the flush check occurs. In general we recommend you not set this and use replication for durability and allow the operating system's background flush capabilities as it is more efficient."#,
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        kind: ConfigKind::List,
        default: "",
        check: Check::ThrottledReplicas,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Stored("no replication yet: a single node has one replica, so there is nothing to throttle or elect"),
        doc: r#"A list of replicas for which log replication should be throttled on the follower side. The list should describe a set of replicas in the form [PartitionId]:[BrokerId],[PartitionId]:[BrokerId]:... or alternatively the wildcard '*' can be used to throttle all replicas for this topic."#,
    },
    ConfigDef {
        name: "index.interval.bytes",
        kind: ConfigKind::Int,
        default: "4096",
        check: Check::Range(0, i32::MAX as i64),
        broker_synonym: Some("log.index.interval.bytes"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.index_interval_bytes = v.int() as u32),
        doc: r#"This setting controls how frequently Kafka adds entries to its offset index and, conditionally, to its time index. The default setting ensures that we index a message roughly every 4096 bytes. More frequent indexing allows reads to jump closer to the exact position in the log but results in larger index files. You probably don't need to change this.<p> Note: the time index will be inserted only when the timestamp is greater than the last indexed timestamp.</p>"#,
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        kind: ConfigKind::List,
        default: "",
        check: Check::ThrottledReplicas,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Stored("no replication yet: a single node has one replica, so there is nothing to throttle or elect"),
        doc: r#"A list of replicas for which log replication should be throttled on the leader side. The list should describe a set of replicas in the form [PartitionId]:[BrokerId],[PartitionId]:[BrokerId]:... or alternatively the wildcard '*' can be used to throttle all replicas for this topic."#,
    },
    ConfigDef {
        name: "local.retention.bytes",
        kind: ConfigKind::Long,
        default: "-2",
        check: Check::AtLeast(-2),
        broker_synonym: Some("log.local.retention.bytes"),
        synonym_default_listed: true,
        effect: Effect::Stored("no tiered storage: every segment stays local"),
        doc: r#"The maximum size of local log segments that can grow for a partition before it deletes the old segments. Default value is -2, it represents <code>retention.bytes</code> value to be used. The effective value should always be less than or equal to <code>retention.bytes</code> value."#,
    },
    ConfigDef {
        name: "local.retention.ms",
        kind: ConfigKind::Long,
        default: "-2",
        check: Check::AtLeast(-2),
        broker_synonym: Some("log.local.retention.ms"),
        synonym_default_listed: true,
        effect: Effect::Stored("no tiered storage: every segment stays local"),
        doc: r#"The number of milliseconds to keep the local log segment before it gets deleted. Default value is -2, it represents <code>retention.ms</code> value is to be used. The effective value should always be less than or equal to <code>retention.ms</code> value."#,
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        check: Check::AtLeast(1),
        broker_synonym: Some("log.cleaner.max.compaction.lag.ms"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.max_compaction_lag_ms = v.int()),
        doc: r#"The maximum time a message will remain ineligible for compaction in the log. Only applicable for logs that are being compacted. Because the active segment is never compacted, for compacted topics this value also drives active segment rolling: the effective time-based roll threshold is the smaller of <code>segment.ms</code> and <code>max.compaction.lag.ms</code>. Active segment rolling moves records out of the active segment, after which <code>max.compaction.lag.ms</code> makes them eligible for compaction even if <code>min.cleanable.dirty.ratio</code> is not met. See <a href="https://kafka.apache.org/documentation/#compaction">log compaction</a>."#,
    },
    ConfigDef {
        name: "max.decompressed.message.bytes",
        kind: ConfigKind::Int,
        default: "2147483639",
        check: Check::Range(0, i32::MAX as i64),
        broker_synonym: Some("max.decompressed.message.bytes"),
        synonym_default_listed: true,
        effect: Effect::Stored("rill bounds decompression per batch with the broker setting rill.decompressed.batch.max.bytes (stricter than a per-record bound), on every path that decompresses"),
        doc: r#"The maximum decompressed size, in bytes, of a single record the broker will accept; larger records are rejected with an <code>InvalidRecordException</code>. It is enforced where the broker decompresses records: produce validation of compressed batches, log compaction, and offset lookups by timestamp or max timestamp against the local log or remote storage. Unlike <code>max.message.bytes</code>, which bounds the compressed batch on the wire, this bounds the decompressed size of an individual record. Lowering it below the size of already-stored records makes compaction and timestamp offset lookups of affected partitions fail until it is raised again. The default imposes no limit beyond the largest record the broker could allocate anyway; set a smaller value to enforce a per-record cap."#,
    },
    ConfigDef {
        name: "max.message.bytes",
        kind: ConfigKind::Int,
        default: "1048588",
        check: Check::Range(0, i32::MAX as i64),
        broker_synonym: Some("message.max.bytes"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.max_message_bytes = v.int() as u32),
        doc: r#"The largest record batch size allowed by Kafka (after compression if compression is enabled)."#,
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        kind: ConfigKind::Long,
        default: "3600000",
        check: Check::AtLeast(0),
        broker_synonym: Some("log.message.timestamp.after.max.ms"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.timestamp_after_max_ms = v.int()),
        doc: r#"This configuration sets the allowable timestamp difference between the message timestamp and the broker's timestamp. The message timestamp can be later than or equal to the broker's timestamp, with the maximum allowable difference determined by the value set in this configuration. If message.timestamp.type=CreateTime, the message will be rejected if the difference in timestamps exceeds this specified threshold. This configuration is ignored if message.timestamp.type=LogAppendTime."#,
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        kind: ConfigKind::Long,
        default: "9223372036854775807",
        check: Check::AtLeast(0),
        broker_synonym: Some("log.message.timestamp.before.max.ms"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.timestamp_before_max_ms = v.int()),
        doc: r#"This configuration sets the allowable timestamp difference between the broker's timestamp and the message timestamp. The message timestamp can be earlier than or equal to the broker's timestamp, with the maximum allowable difference determined by the value set in this configuration. If message.timestamp.type=CreateTime, the message will be rejected if the difference in timestamps exceeds this specified threshold. This configuration is ignored if message.timestamp.type=LogAppendTime."#,
    },
    ConfigDef {
        name: "message.timestamp.type",
        kind: ConfigKind::String,
        default: "CreateTime",
        check: Check::OneOf(&["CreateTime", "LogAppendTime"]),
        broker_synonym: Some("log.message.timestamp.type"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.timestamp_type = if v.str() == "LogAppendTime" { TimestampType::LogAppendTime } else { TimestampType::CreateTime }),
        doc: r#"Define whether the timestamp in the message is message create time or log append time."#,
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigKind::Double,
        default: "0.5",
        check: Check::Ratio,
        broker_synonym: Some("log.cleaner.min.cleanable.ratio"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.min_cleanable_dirty_ratio_ppm = (v.double() * 1e6).round() as u32),
        doc: r#"This configuration controls how frequently the log compactor will attempt to clean the log (assuming <a href="https://kafka.apache.org/documentation/#compaction">log compaction</a> is enabled). By default we will avoid cleaning a log where more than 50% of the log has been compacted. This ratio bounds the maximum space wasted in the log by duplicates (at 50% at most 50% of the log could be duplicates). A higher ratio will mean fewer, more efficient cleanings but will mean more wasted space in the log. If the max.compaction.lag.ms or the min.compaction.lag.ms configurations are also specified, then the log compactor considers the log to be eligible for compaction as soon as either: (i) the dirty ratio threshold has been met and the log has had dirty (uncompacted) records for at least the min.compaction.lag.ms duration, or (ii) if the log has had dirty (uncompacted) records for at most the max.compaction.lag.ms period."#,
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        kind: ConfigKind::Long,
        default: "0",
        check: Check::AtLeast(0),
        broker_synonym: Some("log.cleaner.min.compaction.lag.ms"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.min_compaction_lag_ms = v.int()),
        doc: r#"The minimum time a message will remain uncompacted in the log. Only applicable for logs that are being compacted."#,
    },
    ConfigDef {
        name: "min.insync.replicas",
        kind: ConfigKind::Int,
        default: "1",
        check: Check::Range(1, i32::MAX as i64),
        broker_synonym: Some("min.insync.replicas"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.min_insync_replicas = v.int() as u32),
        doc: r#"Specifies the <i>minimum</i> number of in-sync replicas (including the leader) required for a write to succeed when a producer sets <code>acks</code> to "all" (or "-1"). In the <code>acks=all</code> case, every in-sync replica must acknowledge a write for it to be considered successful. E.g., if a topic has <code>replication.factor</code> of 3 and the ISR set includes all three replicas, then all three replicas must acknowledge an <code>acks=all</code> write for it to succeed, even if <code>min.insync.replicas</code> happens to be less than 3. If <code>acks=all</code> and the current ISR set contains fewer than <code>min.insync.replicas</code> members, then the producer will raise an exception (either <code>NotEnoughReplicas</code> or <code>NotEnoughReplicasAfterAppend</code>).<br> Regardless of the <code>acks</code> setting, the messages will not be visible to the consumers until they are replicated to all in-sync replicas and the <code>min.insync.replicas</code> condition is met.<br> When used together, <code>min.insync.replicas</code> and <code>acks</code> allow you to enforce greater durability guarantees. A typical scenario would be to create a topic with a replication factor of 3, set <code>min.insync.replicas</code> to 2, and produce with <code>acks</code> of "all". This ensures that a majority of replicas must persist a write before it's considered successful by the producer and it's visible to consumers.<p>Note that when the Eligible Leader Replicas feature is enabled, the semantics of this config changes. Please refer to <a href="https://kafka.apache.org/documentation/#eligible_leader_replicas">the ELR section</a> for more info.</p>"#,
    },
    ConfigDef {
        name: "preallocate",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        broker_synonym: Some("log.preallocate"),
        synonym_default_listed: true,
        effect: Effect::Stored("rill always preallocates the active segment, rill.preallocate.step.bytes ahead of the writes (pwrite into preallocated files is its write path)"),
        doc: r#"True if we should preallocate the file on disk when creating a new log segment."#,
    },
    ConfigDef {
        name: "remote.copy.lag.bytes",
        kind: ConfigKind::Long,
        default: "-1",
        check: Check::AtLeast(-1),
        broker_synonym: Some("log.remote.copy.lag.bytes"),
        synonym_default_listed: true,
        effect: Effect::Stored("no tiered storage: every segment stays local"),
        doc: r#"Controls one of the two upload eligibility checks (time and size) for copying segments to remote storage. A non-active segment is upload-eligible when either this size-based check or <code>remote.copy.lag.ms</code> is satisfied. When set to 0, uploads are immediately eligible regardless of lag checks. When set to a positive value (bytes), the segment is size-eligible once bytes of newer local log data after that segment reaches this value. When set to -1, this value is derived from effective local retention size (<code>local.retention.bytes</code>). If that effective local retention size is unlimited (-1), this size-based check is not applied. A positive value should not exceed effective local retention size unless local retention is unlimited (-1)."#,
    },
    ConfigDef {
        name: "remote.copy.lag.ms",
        kind: ConfigKind::Long,
        default: "0",
        check: Check::AtLeast(-1),
        broker_synonym: Some("log.remote.copy.lag.ms"),
        synonym_default_listed: true,
        effect: Effect::Stored("no tiered storage: every segment stays local"),
        doc: r#"Controls one of the two upload eligibility checks (time and size) for copying segments to remote storage. A non-active segment is upload-eligible when either this time-based check or <code>remote.copy.lag.bytes</code> is satisfied. When set to 0, uploads are immediately eligible regardless of lag checks. When set to a positive value (ms), the segment is time-eligible once elapsed time since its latest record reaches this value. When set to -1, this value is derived from effective local retention time (<code>local.retention.ms</code>). If that effective local retention time is unlimited (-1), this time-based check is not applied. A positive value should not exceed effective local retention time unless local retention is unlimited (-1)."#,
    },
    ConfigDef {
        name: "remote.log.copy.disable",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Stored("no tiered storage: every segment stays local"),
        doc: r#"Determines whether tiered data for a topic should become read only, and no more data uploading on a topic. Once this config is set to true, the local retention configuration (i.e. local.retention.ms/bytes) becomes irrelevant, and all data expiration follows the topic-wide retention configuration(i.e. retention.ms/bytes)."#,
    },
    ConfigDef {
        name: "remote.log.delete.on.disable",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Stored("no tiered storage: every segment stays local"),
        doc: r#"Determines whether tiered data for a topic should be deleted after tiered storage is disabled on a topic. This configuration should be enabled when trying to set <code>remote.storage.enable</code> from true to false"#,
    },
    ConfigDef {
        name: "remote.storage.enable",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::NotTrue("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage."),
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Stored("no tiered storage: every segment stays local"),
        doc: r#"To enable tiered storage for a topic, set this configuration to true. To disable tiered storage for a topic that has it enabled, set this configuration to false. When disabling, you must also set <code>remote.log.delete.on.disable</code> to true."#,
    },
    ConfigDef {
        name: "retention.bytes",
        kind: ConfigKind::Long,
        default: "-1",
        check: Check::AtLeast(-1),
        broker_synonym: Some("log.retention.bytes"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.retention_bytes = v.int()),
        doc: r#"This configuration controls the maximum size a partition (which consists of log segments) can grow to before we will discard old log segments to free up space if we are using the "delete" retention policy. By default there is no size limit only a time limit. Since this limit is enforced at the partition level, multiply it by the number of partitions to compute the topic retention in bytes. Additionally, retention.bytes configuration operates independently of "segment.ms" and "segment.bytes" configurations. Moreover, it triggers the rolling of new segment if the retention.bytes is configured to zero."#,
    },
    ConfigDef {
        name: "retention.ms",
        kind: ConfigKind::Long,
        default: "604800000",
        check: Check::AtLeast(-1),
        broker_synonym: Some("log.retention.ms"),
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| c.retention_ms = v.int()),
        doc: r#"This configuration controls the maximum time we will retain a log before we will discard old log segments to free up space if we are using the "delete" retention policy. This represents an SLA on how soon consumers must read their data. If set to -1, no time limit is applied. Additionally, retention.ms configuration operates independently of "segment.ms" and "segment.bytes" configurations. Moreover, it triggers the rolling of new segment if the retention.ms condition is satisfied."#,
    },
    ConfigDef {
        name: "rill.delivery.delay.ms",
        kind: ConfigKind::Long,
        default: "0",
        check: Check::AtLeast(0),
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| c.delivery_delay_ms = v.int()),
        doc: r#"On a topic with rill.delivery.delayed.enable=true, the delay of records that carry neither a rill-deliver-at nor a rill-delay-ms header (0: delivered at once)."#,
    },
    ConfigDef {
        name: "rill.delivery.delayed.enable",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| c.delivery_delayed_enable = v.bool()),
        doc: r#"Delayed delivery: records produced to the topic are held by the broker until the time their rill-deliver-at (epoch ms) or rill-delay-ms header names, then appended to the topic. Only such topics have their records decoded on produce."#,
    },
    ConfigDef {
        name: "rill.high.watermark.visibility",
        kind: ConfigKind::String,
        default: "durable",
        check: Check::OneOf(&["durable", "written"]),
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| {
            c.visibility = if v.str() == "written" {
                Visibility::Written
            } else {
                Visibility::Durable
            }
        }),
        doc: r#"When appended records become visible to consumers. "durable" (the default): only once they are on disk, so no consumer sees a record that a power cut removes. "written": once written to the page cache, as in Kafka."#,
    },
    ConfigDef {
        name: "rill.preallocate.step.bytes",
        kind: ConfigKind::Long,
        default: "16777216",
        check: Check::AtLeast(0),
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| c.preallocate_step_bytes = v.int() as u64),
        doc: r#"How far ahead of the write position the active segment is preallocated on disk. Bounded so that idle partitions do not reserve whole segments."#,
    },
    ConfigDef {
        name: "rill.tail.cache.bytes",
        kind: ConfigKind::Long,
        default: "0",
        check: Check::AtLeast(0),
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| c.tail_cache_bytes = v.int() as u64),
        doc: r#"How much of the partition's newest flushed data stays in the page cache. Older flushed pages are given back as the log grows (they are clean, so nothing is written), which spares the CPU cost of taking fresh memory for every write; consumers further behind read through the cold-read path. 0, the default, keeps every page (Kafka's behaviour)."#,
    },
    ConfigDef {
        name: "rill.view.filter",
        kind: ConfigKind::String,
        default: "",
        check: Check::Any,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Broker("the filter a filtered view applies to its source (checked by the broker's view module: a bad expression is refused naming its column)"),
        doc: r#"For a filtered view (with rill.view.source): the expression its records match, in RocketMQ's SQL92 subset over headers, __key and __timestamp, or a TAG expression (rill.view.filter.type)."#,
    },
    ConfigDef {
        name: "rill.view.filter.type",
        kind: ConfigKind::String,
        default: "SQL92",
        check: Check::Any,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Broker("SQL92 or TAG, case-insensitive (checked by the broker's view module)"),
        doc: r#"For a filtered view: the language of rill.view.filter, SQL92 (the default) or TAG (TagA || TagB over the TAGS header)."#,
    },
    ConfigDef {
        name: "rill.view.source",
        kind: ConfigKind::String,
        default: "",
        check: Check::Any,
        broker_synonym: None,
        synonym_default_listed: false,
        effect: Effect::Broker("makes the topic a filtered view of this topic; set at creation only (checked by the broker's view module)"),
        doc: r#"Makes the topic a filtered view: it holds the committed records of this source topic that match rill.view.filter, each with a rill-source-offset header. Set at creation; it cannot change or be removed."#,
    },
    ConfigDef {
        name: "segment.bytes",
        kind: ConfigKind::Int,
        default: "1073741824",
        check: Check::Range(14, i32::MAX as i64),
        broker_synonym: Some("log.segment.bytes"),
        synonym_default_listed: true,
        effect: Effect::Applies(|c, v| c.segment_bytes = v.int() as u64),
        doc: r#"This configuration controls the segment file size for the log. Retention and cleaning is always done a file at a time so a larger segment size means fewer files but less granular control over retention. The active segment is rolled once it reaches this size."#,
    },
    ConfigDef {
        name: "segment.index.bytes",
        kind: ConfigKind::Int,
        default: "10485760",
        check: Check::Range(4, i32::MAX as i64),
        broker_synonym: Some("log.index.size.max.bytes"),
        synonym_default_listed: true,
        effect: Effect::Stored("the active segment keeps its index entries in memory and writes them as they come, without preallocating an index file, so there is no index size to cap"),
        doc: r#"This configuration controls the size of the index that maps offsets to file positions. We preallocate this index file and shrink it only after log rolls. You generally should not need to change this setting."#,
    },
    ConfigDef {
        name: "segment.jitter.ms",
        kind: ConfigKind::Long,
        default: "0",
        check: Check::AtLeast(0),
        broker_synonym: Some("log.roll.jitter.ms"),
        synonym_default_listed: false,
        effect: Effect::Stored("rolls are spread by each segment's own creation time; no jitter is added"),
        doc: r#"The maximum random jitter subtracted from the scheduled segment roll time to avoid thundering herds of segment rolling"#,
    },
    ConfigDef {
        name: "segment.ms",
        kind: ConfigKind::Long,
        default: "604800000",
        check: Check::AtLeast(1),
        broker_synonym: Some("log.roll.ms"),
        synonym_default_listed: false,
        effect: Effect::Applies(|c, v| c.segment_ms = v.int() as u64),
        doc: r#"This configuration controls the period of time after which Kafka will force the log to roll even if the segment file isn't full to ensure that retention can delete or compact old data. This forces active segment rolling by time, even if the active segment has not reached <code>segment.bytes</code>. For compacted topics, <code>max.compaction.lag.ms</code> can trigger active segment rolling sooner: the effective time-based roll threshold is the smaller of <code>segment.ms</code> and <code>max.compaction.lag.ms</code>."#,
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        kind: ConfigKind::Boolean,
        default: "false",
        check: Check::Any,
        broker_synonym: Some("unclean.leader.election.enable"),
        synonym_default_listed: true,
        effect: Effect::Stored("no replication yet: a single node has one replica, so there is nothing to throttle or elect"),
        doc: r#"Indicates whether to enable replicas not in the ISR set to be elected as leader as a last resort, even though doing so may result in data loss.<p>Note: In KRaft mode, when enabling this config dynamically, it needs to wait for the unclean leader electionthread to trigger election periodically (default is 5 minutes). Please run <code>kafka-leader-election.sh</code> with <code>unclean</code> option to trigger the unclean leader election immediately if needed.</p>"#,
    },
];
