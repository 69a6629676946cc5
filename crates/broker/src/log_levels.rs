//! Log levels changed at runtime: the BROKER_LOGGER resource (ConfigResource type 8) of
//! DescribeConfigs and IncrementalAlterConfigs, as Kafka answers it.
//!
//! Kafka's loggers are log4j's: `root` and one per class. Rill's are `root` and the `tracing`
//! targets, which are Rust module paths (`rill_broker::fetch`, `rill_storage::log`): a level
//! set on a path applies to it and the modules under it, as a log4j level applies to the
//! loggers under a package. Levels are log4j's names (`TRACE`, `DEBUG`, `INFO`, `WARN`,
//! `ERROR`, `FATAL`, which is `ERROR` in `tracing`). As in Kafka, changes last until the
//! broker stops (they are not persisted), `root` cannot be deleted, and APPEND/SUBTRACT are
//! refused.
//!
//! The broker crate does not own the subscriber: the binary gives it a [`LogFilterSink`] that
//! installs a filter built from [`LogLevels::directives`] (a `tracing_subscriber` reload
//! handle). Without one (embedded brokers, tests) levels are kept and described only.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Where a new filter goes: the subscriber's reload handle in the binary.
pub trait LogFilterSink: Send + Sync {
    /// Installs `directives` (`tracing_subscriber::EnvFilter` syntax).
    ///
    /// # Errors
    /// Directives the subscriber refuses, as text.
    fn install(&self, directives: &str) -> Result<(), String>;
}

/// The root logger's name, as Kafka names it.
pub const ROOT: &str = "root";

/// The loggers DescribeConfigs lists: the crates and their top-level modules. Deeper module
/// paths under them are accepted too.
pub const LOGGERS: &[&str] = &[
    "rill",
    "rill_broker",
    "rill_broker::admin",
    "rill_broker::broker",
    "rill_broker::configs",
    "rill_broker::connection",
    "rill_broker::coordinator",
    "rill_broker::delayed",
    "rill_broker::dispatch",
    "rill_broker::fetch",
    "rill_broker::fetch_session",
    "rill_broker::group_api",
    "rill_broker::listener",
    "rill_broker::produce",
    "rill_broker::topics",
    "rill_broker::txn_api",
    "rill_broker::view",
    "rill_storage",
    "rill_storage::cleaner",
    "rill_storage::flusher",
    "rill_storage::log",
    "rill_storage::log_manager",
    "rill_storage::recovery",
    "rill_storage::segment",
    "rill_client",
];

/// Kafka's valid levels, in its message's order.
pub const LEVELS: &[&str] = &["DEBUG", "ERROR", "FATAL", "INFO", "TRACE", "WARN"];

/// Why a logger change is refused: INVALID_CONFIG or INVALID_REQUEST, with Kafka's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogLevelError {
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
}

/// One change to a logger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChange {
    Set(String, String),
    Delete(String),
}

/// The levels set at runtime over the filter the broker started with.
pub struct LogLevels {
    /// The filter given at start (`--log-level`): its bare level is root's, its
    /// `target=level` directives are the modules' until overridden.
    base_root: String,
    base_targets: Vec<(String, String)>,
    /// Levels set at runtime, by logger (log4j names), `root` included.
    set: Mutex<BTreeMap<String, String>>,
    sink: Option<Arc<dyn LogFilterSink>>,
}

impl std::fmt::Debug for LogLevels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLevels")
            .field("directives", &self.directives())
            .field("installs", &self.sink.is_some())
            .finish()
    }
}

impl Default for LogLevels {
    /// `info`, described only (no subscriber to change).
    fn default() -> Self {
        LogLevels::new("info", None)
    }
}

impl LogLevels {
    /// Levels over `base` (an `EnvFilter` string such as `info,rill_storage=debug`), installed
    /// through `sink`.
    pub fn new(base: &str, sink: Option<Arc<dyn LogFilterSink>>) -> LogLevels {
        let mut base_root = "INFO".to_string();
        let mut base_targets = Vec::new();
        for directive in base.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => {
                    base_targets.push((target.to_string(), level.to_ascii_uppercase()))
                }
                None => base_root = directive.to_ascii_uppercase(),
            }
        }
        LogLevels {
            base_root,
            base_targets,
            set: Mutex::default(),
            sink,
        }
    }

    /// Whether `name` is a logger: `root`, a listed one, or a module path under one.
    pub fn exists(name: &str) -> bool {
        if name == ROOT || LOGGERS.contains(&name) {
            return true;
        }
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit())
        };
        LOGGERS.iter().any(|l| {
            name.strip_prefix(l)
                .and_then(|rest| rest.strip_prefix("::"))
                .is_some_and(|rest| rest.split("::").all(ident))
        })
    }

    /// The level in force for `logger`: its own, else its nearest parent's, else root's.
    pub fn level_of(&self, logger: &str) -> String {
        let set = self.set.lock();
        let mut path = logger;
        loop {
            if let Some(level) = set.get(path) {
                return level.clone();
            }
            if let Some((_, level)) = self.base_targets.iter().find(|(t, _)| t == path) {
                return level.clone();
            }
            match path.rsplit_once("::") {
                Some((parent, _)) => path = parent,
                None => break,
            }
        }
        set.get(ROOT)
            .cloned()
            .unwrap_or_else(|| self.base_root.clone())
    }

    /// Every logger with its level, as DescribeConfigs lists them.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut names: Vec<String> = std::iter::once(ROOT)
            .chain(LOGGERS.iter().copied())
            .map(str::to_string)
            .collect();
        for name in self.set.lock().keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
            .into_iter()
            .map(|n| {
                let level = self.level_of(&n);
                (n, level)
            })
            .collect()
    }

    /// Checks `changes` as Kafka does, then (unless `validate_only`) applies them all and
    /// installs the new filter.
    ///
    /// # Errors
    /// The first refused change (nothing applies then), or a filter the sink refuses.
    pub fn change(
        &self,
        changes: &[LevelChange],
        validate_only: bool,
    ) -> Result<(), LogLevelError> {
        for change in changes {
            let name = match change {
                LevelChange::Set(name, _) | LevelChange::Delete(name) => name,
            };
            if !Self::exists(name) {
                return Err(LogLevelError::InvalidConfig(format!(
                    "Logger {name} does not exist!"
                )));
            }
            match change {
                LevelChange::Set(name, level) if !LEVELS.contains(&level.as_str()) => {
                    return Err(LogLevelError::InvalidConfig(format!(
                        "Cannot set the log level of {name} to {level} as it is not a supported log level. Valid log levels are {}",
                        LEVELS.join(", ")
                    )));
                }
                LevelChange::Delete(name) if name == ROOT => {
                    return Err(LogLevelError::InvalidRequest(
                        "Removing the log level of the root logger is not allowed".into(),
                    ));
                }
                _ => {}
            }
        }
        if validate_only {
            return Ok(());
        }
        let mut set = self.set.lock();
        let mut next = set.clone();
        for change in changes {
            match change {
                LevelChange::Set(name, level) => next.insert(name.clone(), level.clone()),
                LevelChange::Delete(name) => next.remove(name),
            };
        }
        if let Some(sink) = &self.sink {
            sink.install(&self.directives_of(&next))
                .map_err(LogLevelError::InvalidConfig)?;
        }
        *set = next;
        Ok(())
    }

    /// The filter in force, in `EnvFilter` syntax.
    pub fn directives(&self) -> String {
        self.directives_of(&self.set.lock())
    }

    fn directives_of(&self, set: &BTreeMap<String, String>) -> String {
        let root = set.get(ROOT).unwrap_or(&self.base_root);
        let mut out = vec![tracing_level(root)];
        for (target, level) in &self.base_targets {
            if !set.contains_key(target) {
                out.push(format!("{target}={}", tracing_level(level)));
            }
        }
        for (target, level) in set.iter().filter(|(t, _)| t.as_str() != ROOT) {
            out.push(format!("{target}={}", tracing_level(level)));
        }
        out.join(",")
    }
}

/// A log4j level as `tracing` names it (it has no FATAL).
fn tracing_level(level: &str) -> String {
    match level {
        "FATAL" => "error".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Mutex<Vec<String>>);

    impl LogFilterSink for Recorder {
        fn install(&self, directives: &str) -> Result<(), String> {
            self.0.lock().push(directives.to_string());
            Ok(())
        }
    }

    #[test]
    fn levels_inherit_and_build_filters() {
        let sink = Arc::new(Recorder(Mutex::default()));
        let levels = LogLevels::new("info,rill_storage=debug", Some(sink.clone()));
        assert_eq!(levels.level_of("rill_storage::log"), "DEBUG");
        assert_eq!(levels.level_of("rill_broker::fetch"), "INFO");
        let set = |n: &str, l: &str| LevelChange::Set(n.into(), l.into());
        levels
            .change(&[set("rill_broker", "TRACE"), set(ROOT, "WARN")], false)
            .unwrap();
        assert_eq!(levels.level_of("rill_broker::fetch"), "TRACE");
        assert_eq!(levels.level_of("rill"), "WARN");
        assert_eq!(
            sink.0.lock().last().unwrap(),
            "warn,rill_storage=debug,rill_broker=trace"
        );
        levels
            .change(&[LevelChange::Delete("rill_broker".into())], false)
            .unwrap();
        assert_eq!(levels.level_of("rill_broker::fetch"), "WARN");
        assert!(levels
            .describe()
            .iter()
            .any(|(n, l)| n == ROOT && l == "WARN"));
    }

    #[test]
    fn refuses_as_kafka_does() {
        let levels = LogLevels::new("info", None);
        let set = |n: &str, l: &str| LevelChange::Set(n.into(), l.into());
        assert_eq!(
            levels.change(&[set("no.such.Logger", "DEBUG")], false),
            Err(LogLevelError::InvalidConfig(
                "Logger no.such.Logger does not exist!".into()
            ))
        );
        assert!(matches!(
            levels.change(&[set("rill_broker", "BOGUS")], false),
            Err(LogLevelError::InvalidConfig(m)) if m.ends_with("Valid log levels are DEBUG, ERROR, FATAL, INFO, TRACE, WARN")
        ));
        assert!(matches!(
            levels.change(&[LevelChange::Delete(ROOT.into())], false),
            Err(LogLevelError::InvalidRequest(_))
        ));
        // One bad change: none applies.
        assert!(levels
            .change(&[set("rill_broker", "DEBUG"), set("nope", "DEBUG")], false)
            .is_err());
        assert_eq!(levels.level_of("rill_broker"), "INFO");
        assert!(LogLevels::exists("rill_broker::coordinator::group"));
        assert!(!LogLevels::exists("rill_broker::"));
        assert!(!LogLevels::exists("tokio"));
    }
}
