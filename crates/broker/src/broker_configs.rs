//! Dynamic broker configs: what `AlterConfigs`/`IncrementalAlterConfigs` set on the BROKER
//! resource, for this broker (its id) or as the cluster default (the empty name), persisted in
//! the data directory and applied without a restart.
//!
//! Dynamic here, as in Kafka: every broker config that a topic config defaults from (the
//! table's `broker_synonym`s: `log.retention.ms`, `log.segment.bytes`, `message.max.bytes`,
//! the `log.cleaner.*` compaction settings, the `log.flush.*` defaults, ...), the
//! `log.retention.minutes/hours` and `log.roll.hours` forms of them, and `max.connections`.
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
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rill_storage::topic_configs::{ConfigDef, ConfigKind, TOPIC_CONFIGS};
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
    /// A name rill does not know: kept and described, as Kafka keeps custom configs.
    Custom,
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
    #[error("i/o on {path} failed while {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The key a broker config name stands for.
pub fn broker_key(name: &str) -> BrokerKey {
    if name == "max.connections" {
        return BrokerKey::MaxConnections;
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
        BrokerKey::Custom => Ok(value.to_string()),
    }
}

/// The ConfigType (DescribeConfigs v3+) of a broker config.
pub fn config_type(name: &str) -> i8 {
    match broker_key(name) {
        BrokerKey::TopicDefault(def, _) => def.kind as i8,
        BrokerKey::MaxConnections => ConfigKind::Int as i8,
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
        let current = match fs::read_to_string(&path) {
            Ok(text) => parse(&path, &text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Dynamic::default(),
            Err(source) => {
                return Err(BrokerConfigError::Io {
                    op: "reading",
                    path,
                    source,
                })
            }
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
        let error = |reason: &str| BrokerConfigError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.to_string(),
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
    crate::atomic_file::write(path, contents).map_err(|(op, source)| BrokerConfigError::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
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
