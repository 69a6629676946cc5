//! Dynamic broker configs: what `AlterConfigs`/`IncrementalAlterConfigs` set on the BROKER
//! resource, for this broker (its id) or as the cluster default (the empty name), persisted in
//! the data directory and applied without a restart.
//!
//! Dynamic here, as in Kafka: every broker config that a topic config defaults from (the
//! table's `broker_synonym`s: `log.retention.ms`, `log.segment.bytes`, `message.max.bytes`,
//! the `log.cleaner.*` compaction settings, the `log.flush.*` defaults, ...), the
//! `log.retention.minutes/hours` and `log.roll.hours` forms of them, `max.connections`, and the
//! log cleaner's settings that Kafka 4.4 reconfigures live (`LogCleaner.RECONFIGURABLE_CONFIGS`:
//! `log.cleaner.threads`, `.dedupe.buffer.size`, `.io.buffer.size`, `.io.buffer.load.factor`,
//! `.io.max.bytes.per.second`, `.backoff.ms`; see [`CleanerKey`]).
//! The command-line settings are read-only and refused as Kafka refuses them
//! (INVALID_REQUEST, "Cannot update these configs dynamically"). Other names are kept and
//! described, as Kafka keeps unknown ("custom") broker configs.
//!
//! File `broker-configs`, replaced atomically on every change:
//!
//! ```text
//! # rill dynamic broker configs; rewritten by the broker
//! cluster log.retention.ms 86400000
//! broker message.max.bytes 500000
//! ```
//!
//! Values are percent-escaped as in the topic registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rill_storage::topic_configs::{ConfigDef, ConfigKind, TOPIC_CONFIGS};
use rill_storage::CleanerConfig;
use thiserror::Error;

use crate::line_field::{escape, unescape};

/// The file in the data directory.
pub const FILE_NAME: &str = "broker-configs";

/// Most entries a scope may hold: the file is read whole at start.
pub const ENTRIES_PER_SCOPE_MAX: usize = 1_000;

/// Broker settings that come from the command line and cannot change at runtime.
pub const READ_ONLY: &[&str] = &[
    "node.id",
    "broker.id",
    "log.dirs",
    "log.dir",
    "listeners",
    "advertised.listeners",
    "process.roles",
    "num.partitions",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "queued.max.request.bytes",
    "connections.max.idle.ms",
];

/// Broker configs that set a topic default in another unit: (name, topic key, ms per unit).
const UNIT_ALIASES: &[(&str, &str, i64)] = &[
    ("log.retention.minutes", "retention.ms", 60_000),
    ("log.retention.hours", "retention.ms", 3_600_000),
    ("log.roll.hours", "segment.ms", 3_600_000),
    ("log.roll.jitter.hours", "segment.jitter.ms", 3_600_000),
];

/// What a dynamic broker config does.
#[derive(Debug, Clone, Copy)]
pub enum BrokerKey {
    /// The default of a topic config (its definition, and the unit factor for aliases).
    TopicDefault(&'static ConfigDef, i64),
    /// `max.connections`: the listener's connection limit.
    MaxConnections,
    /// A log cleaner setting.
    Cleaner(CleanerKey),
    /// A name rill does not know: kept and described, as Kafka keeps custom configs.
    Custom,
}

/// The log cleaner's dynamic settings, as Kafka 4.4's `LogCleaner.RECONFIGURABLE_CONFIGS`
/// lists them (its `message.max.bytes` is a topic default here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanerKey {
    /// `log.cleaner.threads` (INT, at least 1, at most double and at least half the threads
    /// in force, as Kafka checks).
    Threads,
    /// `log.cleaner.dedupe.buffer.size` (LONG): the key maps of all threads.
    DedupeBufferSize,
    /// `log.cleaner.io.buffer.size` (INT, at least 0): the read buffers of all threads.
    IoBufferSize,
    /// `log.cleaner.io.buffer.load.factor` (DOUBLE): validated and kept; rill's key map is
    /// bounded by bytes, not by a hash table's fill (Kafka itself ignores it too).
    IoBufferLoadFactor,
    /// `log.cleaner.io.max.bytes.per.second` (DOUBLE): the shared throttle.
    IoMaxBytesPerSecond,
    /// `log.cleaner.backoff.ms` (LONG, at least 0).
    BackoffMs,
}

/// The cleaner settings by name.
const CLEANER_KEYS: &[(&str, CleanerKey)] = &[
    ("log.cleaner.threads", CleanerKey::Threads),
    (
        "log.cleaner.dedupe.buffer.size",
        CleanerKey::DedupeBufferSize,
    ),
    ("log.cleaner.io.buffer.size", CleanerKey::IoBufferSize),
    (
        "log.cleaner.io.buffer.load.factor",
        CleanerKey::IoBufferLoadFactor,
    ),
    (
        "log.cleaner.io.max.bytes.per.second",
        CleanerKey::IoMaxBytesPerSecond,
    ),
    ("log.cleaner.backoff.ms", CleanerKey::BackoffMs),
];

/// Kafka caps one thread's key map below 2 GiB (`validateReconfiguration`).
const DEDUPE_BYTES_PER_THREAD_MAX: u64 = i32::MAX as u64;

impl CleanerKey {
    /// The broker config names of the cleaner's dynamic settings.
    pub fn names() -> impl Iterator<Item = &'static str> {
        CLEANER_KEYS.iter().map(|(n, _)| *n)
    }

    fn of(name: &str) -> Option<CleanerKey> {
        CLEANER_KEYS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
    }

    /// The setting's value in `c`, as Kafka describes it (DEFAULT or STATIC_BROKER_CONFIG).
    pub fn value_in(self, c: &CleanerConfig) -> String {
        match self {
            CleanerKey::Threads => c.threads.to_string(),
            CleanerKey::DedupeBufferSize => c.dedupe_buffer_bytes.to_string(),
            CleanerKey::IoBufferSize => c.io_buffer_bytes.to_string(),
            CleanerKey::IoBufferLoadFactor => "0.9".to_string(),
            CleanerKey::IoMaxBytesPerSecond => java_double(c.io_max_bytes_per_second),
            CleanerKey::BackoffMs => c.backoff_ms.to_string(),
        }
    }

    fn kind(self) -> ConfigKind {
        match self {
            CleanerKey::Threads | CleanerKey::IoBufferSize => ConfigKind::Int,
            CleanerKey::DedupeBufferSize | CleanerKey::BackoffMs => ConfigKind::Long,
            CleanerKey::IoBufferLoadFactor | CleanerKey::IoMaxBytesPerSecond => ConfigKind::Double,
        }
    }

    /// Parses and range-checks a value; returns it as Kafka writes it back.
    fn check(self, value: &str) -> Result<String, String> {
        let v = value.trim();
        match self {
            CleanerKey::Threads => match v.parse::<i32>() {
                Ok(n) if n >= 1 => Ok(n.to_string()),
                Ok(_) => Err("Log cleaner threads should be at least 1".into()),
                Err(_) => Err("Not a number of type INT".into()),
            },
            CleanerKey::IoBufferSize => match v.parse::<i32>() {
                Ok(n) if n >= 0 => Ok(n.to_string()),
                _ => Err("Value must be at least 0".into()),
            },
            CleanerKey::DedupeBufferSize | CleanerKey::BackoffMs => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n.to_string()),
                _ => Err("Not a number of type LONG at least 0".into()),
            },
            CleanerKey::IoBufferLoadFactor | CleanerKey::IoMaxBytesPerSecond => {
                match v.parse::<f64>() {
                    Ok(d) if d.is_finite() && d > 0.0 => Ok(java_double(d)),
                    _ => Err("Not a positive number of type DOUBLE".into()),
                }
            }
        }
    }

    /// Sets this setting in `c` from a value [`CleanerKey::check`] accepted.
    fn set(self, c: &mut CleanerConfig, value: &str) {
        match self {
            CleanerKey::Threads => c.threads = value.parse().unwrap_or(c.threads),
            CleanerKey::DedupeBufferSize => {
                c.dedupe_buffer_bytes = value.parse().unwrap_or(c.dedupe_buffer_bytes)
            }
            CleanerKey::IoBufferSize => {
                c.io_buffer_bytes = value.parse().unwrap_or(c.io_buffer_bytes)
            }
            CleanerKey::IoBufferLoadFactor => {}
            CleanerKey::IoMaxBytesPerSecond => {
                c.io_max_bytes_per_second = value.parse().unwrap_or(c.io_max_bytes_per_second)
            }
            CleanerKey::BackoffMs => c.backoff_ms = value.parse().unwrap_or(c.backoff_ms),
        }
    }
}

/// A double as Java's `Double.toString` writes the values these configs take (`1.0`,
/// `1.7976931348623157E308`).
fn java_double(d: f64) -> String {
    if d >= 1e7 {
        let text = format!("{d:E}");
        // Rust writes `1.7976931348623157E308`, or `1E7` where Java writes `1.0E7`.
        match text.split_once('E') {
            Some((m, e)) if !m.contains('.') => format!("{m}.0E{e}"),
            _ => text,
        }
    } else if d.fract() == 0.0 {
        format!("{d:.1}")
    } else {
        d.to_string()
    }
}

/// Checks a whole cleaner configuration against the one in force, as Kafka's
/// `LogCleaner.validateReconfiguration` does.
///
/// # Errors
/// A thread count more than double or less than half of the current one, or a key map over
/// 2 GiB per thread.
pub fn check_cleaner_change(
    current: &CleanerConfig,
    next: &CleanerConfig,
) -> Result<(), BrokerConfigError> {
    let invalid = |name: &str, value: String, reason: String| BrokerConfigError::Invalid {
        name: name.to_string(),
        value,
        reason,
    };
    let (now, new) = (current.threads.max(1), next.threads);
    if new < now / 2 {
        let reason = format!(
            "Log cleaner threads cannot be reduced to less than half the current value {now}"
        );
        return Err(invalid("log.cleaner.threads", new.to_string(), reason));
    }
    if new > now * 2 {
        let reason = format!(
            "Log cleaner threads cannot be increased to more than double the current value {now}"
        );
        return Err(invalid("log.cleaner.threads", new.to_string(), reason));
    }
    if next.dedupe_buffer_bytes as u64 / new.max(1) as u64 > DEDUPE_BYTES_PER_THREAD_MAX {
        let reason = format!("log.cleaner.dedupe.buffer.size / log.cleaner.threads cannot exceed {DEDUPE_BYTES_PER_THREAD_MAX}");
        return Err(invalid(
            "log.cleaner.dedupe.buffer.size",
            next.dedupe_buffer_bytes.to_string(),
            reason,
        ));
    }
    Ok(())
}

/// Why a broker config change is refused.
#[derive(Debug, Error)]
pub enum BrokerConfigError {
    #[error("Cannot update these configs dynamically: [{0}]")]
    ReadOnly(String),
    #[error("Invalid value {value} for configuration {name}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    #[error("too many dynamic broker configs (at most {ENTRIES_PER_SCOPE_MAX})")]
    TooMany,
    /// Its file could not be read, understood or replaced.
    #[error(transparent)]
    File(#[from] crate::atomic_file::FileError),
}

/// The key a broker config name stands for.
pub fn broker_key(name: &str) -> BrokerKey {
    if name == "max.connections" {
        return BrokerKey::MaxConnections;
    }
    if let Some(key) = CleanerKey::of(name) {
        return BrokerKey::Cleaner(key);
    }
    if let Some(def) = TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_synonym == Some(name))
    {
        return BrokerKey::TopicDefault(def, 1);
    }
    for (alias, topic_key, factor) in UNIT_ALIASES {
        if *alias == name {
            if let Some(def) = TOPIC_CONFIGS.iter().find(|d| d.name == *topic_key) {
                return BrokerKey::TopicDefault(def, *factor);
            }
        }
    }
    BrokerKey::Custom
}

/// Checks one broker config value; returns it as Kafka writes it back.
///
/// # Errors
/// Read-only names and bad values.
pub fn check(name: &str, value: &str) -> Result<String, BrokerConfigError> {
    if READ_ONLY.contains(&name) {
        return Err(BrokerConfigError::ReadOnly(name.to_string()));
    }
    let invalid = |reason: String| BrokerConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    match broker_key(name) {
        BrokerKey::TopicDefault(def, factor) => {
            let parsed = def.parse(value).map_err(|e| invalid(e.to_string()))?;
            if factor != 1 {
                // The alias's value in its unit must fit the topic config in ms.
                let ms = parsed.int().checked_mul(factor);
                let ms = ms.ok_or_else(|| invalid("too large".into()))?;
                def.parse(&ms.to_string())
                    .map_err(|e| invalid(e.to_string()))?;
            }
            Ok(parsed.canonical())
        }
        BrokerKey::MaxConnections => match value.trim().parse::<i32>() {
            Ok(n) if n >= 1 => Ok(n.to_string()),
            _ => Err(invalid("Not a number of type INT at least 1".into())),
        },
        BrokerKey::Cleaner(key) => key.check(value).map_err(invalid),
        BrokerKey::Custom => Ok(value.to_string()),
    }
}

/// The ConfigType (DescribeConfigs v3+) of a broker config.
pub fn config_type(name: &str) -> i8 {
    match broker_key(name) {
        BrokerKey::TopicDefault(def, _) => def.kind as i8,
        BrokerKey::MaxConnections => ConfigKind::Int as i8,
        BrokerKey::Cleaner(key) => key.kind() as i8,
        BrokerKey::Custom => ConfigKind::String as i8,
    }
}

/// The two scopes of dynamic broker configs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// The cluster default (resource name `""`).
    pub cluster: BTreeMap<String, String>,
    /// This broker (resource name = its node id); wins over the cluster default.
    pub broker: BTreeMap<String, String>,
}

impl Dynamic {
    /// The value in force for `name` and its source (DYNAMIC_BROKER_CONFIG 2 or
    /// DYNAMIC_DEFAULT_BROKER_CONFIG 3), if set dynamically.
    pub fn get(&self, name: &str) -> Option<(&str, i8)> {
        if let Some(v) = self.broker.get(name) {
            return Some((v, 2));
        }
        self.cluster.get(name).map(|v| (v.as_str(), 3))
    }

    /// The topic defaults these configs set, by topic key. For a topic key with several
    /// broker forms the finest unit wins (`log.retention.ms` over `.minutes` over `.hours`), as
    /// in Kafka.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        // The broker scope replaces the cluster scope key by key.
        let mut out = scope_defaults(&self.cluster);
        out.extend(scope_defaults(&self.broker));
        out
    }

    /// The log cleaner's settings: `base` (the command line) with the dynamic ones over it,
    /// the broker scope winning.
    pub fn cleaner(&self, base: &CleanerConfig) -> CleanerConfig {
        let mut c = base.clone();
        for name in CleanerKey::names() {
            if let (Some((value, _)), Some(key)) = (self.get(name), CleanerKey::of(name)) {
                key.set(&mut c, value);
            }
        }
        c
    }

    /// `max.connections`, if set dynamically.
    pub fn max_connections(&self) -> Option<usize> {
        self.get("max.connections")
            .and_then(|(v, _)| v.parse::<usize>().ok())
    }
}

/// One scope's topic defaults, the finest unit winning per topic key.
fn scope_defaults(scope: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for (name, value) in scope {
        let BrokerKey::TopicDefault(def, factor) = broker_key(name) else {
            continue;
        };
        let ms = if factor == 1 {
            value.clone()
        } else {
            let Ok(v) = value.parse::<i64>() else {
                continue;
            };
            v.saturating_mul(factor).to_string()
        };
        let finer = out.get(def.name).is_none_or(|(unit, _)| factor < *unit);
        if finer {
            out.insert(def.name.to_string(), (factor, ms));
        }
    }
    out.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// The persisted dynamic broker configs.
pub struct DynamicConfigs {
    path: PathBuf,
    /// Serializes changes; held across the file write so file and memory agree.
    current: Mutex<Dynamic>,
}

impl DynamicConfigs {
    /// Loads `data_dir`'s file (none yet: nothing set). Blocks.
    ///
    /// # Errors
    /// An unreadable or malformed file.
    pub fn load(data_dir: &Path) -> Result<DynamicConfigs, BrokerConfigError> {
        let path = data_dir.join(FILE_NAME);
        let current = match crate::atomic_file::read_optional(&path)? {
            Some(text) => parse(&path, &text)?,
            None => Dynamic::default(),
        };
        Ok(DynamicConfigs {
            path,
            current: Mutex::new(current),
        })
    }

    /// Nothing set, stored at `data_dir` once something is (for a state built before load).
    pub fn empty(data_dir: &Path) -> DynamicConfigs {
        DynamicConfigs {
            path: data_dir.join(FILE_NAME),
            current: Mutex::new(Dynamic::default()),
        }
    }

    /// The configs in force.
    pub fn snapshot(&self) -> Dynamic {
        self.current.lock().clone()
    }

    /// Replaces the configs with what `change` makes of them, after `apply` accepted the
    /// result (it applies it to the running broker); then writes the file. Blocks.
    ///
    /// # Errors
    /// What `change` or `apply` refuse, or the file write; nothing changes then (except
    /// that a failed write leaves the running broker on the new values until restart).
    pub fn update(
        &self,
        change: impl FnOnce(&mut Dynamic) -> Result<(), BrokerConfigError>,
        apply: impl FnOnce(&Dynamic) -> Result<(), BrokerConfigError>,
    ) -> Result<(), BrokerConfigError> {
        let mut current = self.current.lock();
        let mut next = current.clone();
        change(&mut next)?;
        if next.cluster.len() > ENTRIES_PER_SCOPE_MAX || next.broker.len() > ENTRIES_PER_SCOPE_MAX {
            return Err(BrokerConfigError::TooMany);
        }
        apply(&next)?;
        write_atomically(&self.path, render(&next).as_bytes())?;
        *current = next;
        Ok(())
    }
}

fn render(d: &Dynamic) -> String {
    let mut text = String::from("# rill dynamic broker configs; rewritten by the broker\n");
    for (scope, map) in [("cluster", &d.cluster), ("broker", &d.broker)] {
        for (k, v) in map {
            text.push_str(&format!("{scope} {} {}\n", escape(k), escape(v)));
        }
    }
    text
}

fn parse(path: &Path, text: &str) -> Result<Dynamic, BrokerConfigError> {
    let mut d = Dynamic::default();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let error = |reason: &str| {
            BrokerConfigError::from(crate::atomic_file::FileError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: reason.to_string(),
            })
        };
        let parts: Vec<&str> = line.split(' ').collect();
        let [scope, key, value] = parts[..] else {
            return Err(error("expected: scope key value"));
        };
        let (key, value) = match (unescape(key), unescape(value)) {
            (Some(k), Some(v)) => (k, v),
            _ => return Err(error("bad escape")),
        };
        let map = match scope {
            "cluster" => &mut d.cluster,
            "broker" => &mut d.broker,
            _ => return Err(error("scope must be cluster or broker")),
        };
        if map.len() >= ENTRIES_PER_SCOPE_MAX {
            return Err(error("too many entries"));
        }
        map.insert(key, value);
    }
    Ok(d)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), BrokerConfigError> {
    Ok(crate::atomic_file::replace(path, contents)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trips_any_value() {
        let mut d = Dynamic::default();
        d.cluster.insert("log.retention.ms".into(), "1000".into());
        d.broker.insert("custom key".into(), "a b%c\u{e9}\n".into());
        d.broker.insert("empty".into(), String::new());
        assert_eq!(parse(Path::new("x"), &render(&d)).unwrap(), d);
        assert!(parse(Path::new("x"), "nowhere a b\n").is_err());
        assert!(parse(Path::new("x"), "cluster a\n").is_err());
    }

    #[test]
    fn checks_read_only_bad_and_custom_names() {
        assert!(matches!(
            check("node.id", "3"),
            Err(BrokerConfigError::ReadOnly(_))
        ));
        assert!(matches!(
            check("message.max.bytes", "abc"),
            Err(BrokerConfigError::Invalid { .. })
        ));
        assert!(check("max.connections", "0").is_err());
        assert_eq!(
            check("log.cleaner.min.cleanable.ratio", "1").unwrap(),
            "1.0"
        );
        assert_eq!(check("anything.custom", "x").unwrap(), "x");
        assert!(check("log.retention.hours", "9223372036854775807").is_err());
    }

    #[test]
    fn cleaner_settings_are_checked_and_layered() {
        assert!(check("log.cleaner.threads", "0").is_err());
        assert!(check("log.cleaner.backoff.ms", "-1").is_err());
        assert!(check("log.cleaner.io.max.bytes.per.second", "0").is_err());
        assert_eq!(
            check("log.cleaner.io.max.bytes.per.second", "1000000").unwrap(),
            "1000000.0"
        );
        assert_eq!(java_double(f64::MAX), "1.7976931348623157E308");
        assert_eq!(java_double(1e7), "1.0E7");
        assert_eq!(config_type("log.cleaner.threads"), ConfigKind::Int as i8);
        let base = CleanerConfig::default();
        let mut d = Dynamic::default();
        d.cluster.insert("log.cleaner.threads".into(), "2".into());
        d.broker
            .insert("log.cleaner.io.max.bytes.per.second".into(), "5.0".into());
        d.cluster
            .insert("log.cleaner.backoff.ms".into(), "7".into());
        let c = d.cleaner(&base);
        assert_eq!(
            (c.threads, c.io_max_bytes_per_second, c.backoff_ms),
            (2, 5.0, 7)
        );
        assert_eq!(c.dedupe_buffer_bytes, base.dedupe_buffer_bytes);
        let mut three = base.clone();
        three.threads = 3;
        assert!(check_cleaner_change(&base, &c).is_ok());
        assert!(
            check_cleaner_change(&base, &three).is_err(),
            "more than double"
        );
        let mut four = base.clone();
        four.threads = 4;
        let mut one = base.clone();
        one.threads = 1;
        assert!(
            check_cleaner_change(&three, &one).is_ok(),
            "3 / 2 = 1, as in Kafka"
        );
        assert!(check_cleaner_change(&four, &one).is_err(), "less than half");
        let mut huge = base.clone();
        huge.dedupe_buffer_bytes = 4 << 30;
        assert!(check_cleaner_change(&base, &huge).is_err());
    }

    #[test]
    fn topic_defaults_follow_units_and_scopes() {
        let mut d = Dynamic::default();
        d.cluster.insert("log.retention.hours".into(), "2".into());
        assert_eq!(d.topic_defaults()["retention.ms"], "7200000");
        d.cluster.insert("log.retention.ms".into(), "5".into());
        assert_eq!(
            d.topic_defaults()["retention.ms"],
            "5",
            "ms wins over hours"
        );
        d.broker.insert("log.retention.minutes".into(), "1".into());
        assert_eq!(
            d.topic_defaults()["retention.ms"],
            "60000",
            "the broker scope wins"
        );
        d.broker.insert("message.max.bytes".into(), "100".into());
        assert_eq!(d.topic_defaults()["max.message.bytes"], "100");
        assert_eq!(d.get("message.max.bytes"), Some(("100", 2)));
        assert_eq!(d.get("log.retention.ms"), Some(("5", 3)));
    }
}
