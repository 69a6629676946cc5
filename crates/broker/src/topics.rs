//! The topic registry: which topics exist, their UUIDs, partition counts and config
//! overrides, plus the cluster id. Storage knows partitions (`<topic>-<n>` directories) but
//! not topics, ids or configs, so the broker keeps them in one small file in the data
//! directory root, [`REGISTRY_FILE_NAME`]. It is a file, never a directory, so storage's scan
//! for partition directories does not see it.
//!
//! # Format
//! ```text
//! # rill topic registry
//! version 1
//! cluster.id q1Sh-9_ISia_zwGINzRvyQ
//! topic orders 3f0c6e5e-52cd-4a40-9ad1-7d0bd1f8b0a2 3
//! config orders retention.ms 86400000
//! ```
//! Config values are percent-escaped (anything outside printable ASCII, space and `%`).
//! The file is replaced atomically (write, fsync, rename, fsync the directory) on every
//! change; topic changes are rare, so simplicity wins over an append-only journal.
//!
//! # Concurrency
//! Reads (every metadata, produce and fetch request) take a read lock for a map lookup.
//! Mutations do slow work (creating partition directories, writing the file) while holding
//! only `write_lock`, which serializes them; they take the map's write lock just to publish.
//! Mutating methods block: call them from `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rill_storage::{LogConfig, LogManager, StorageError, TopicPartition};
use thiserror::Error;

use crate::line_field::{escape, unescape};
use uuid::Uuid;

use crate::view;
use kafka_protocol::error::ResponseError;

/// Name of the registry file in the data directory root.
pub const REGISTRY_FILE_NAME: &str = "rill-topics.meta";

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Upper bound on partitions per topic: each is a directory and open files, so refuse
/// requests that would exhaust the machine rather than fail halfway.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// One topic as the registry knows it. Immutable once published; a change publishes a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka config names), applied over `LogConfig::default()`.
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    /// The storage config for this topic's partitions under no broker-level defaults.
    ///
    /// # Errors
    /// The first override storage rejects.
    pub fn log_config(&self) -> Result<LogConfig, StorageError> {
        log_config(&BTreeMap::new(), &self.configs)
    }
}

/// Builds a [`LogConfig`] from the broker's topic defaults (dynamic broker configs, by topic
/// key) and a topic's overrides.
///
/// # Errors
/// The first value storage rejects, or overrides that contradict each other.
pub fn log_config(
    defaults: &BTreeMap<String, String>,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, StorageError> {
    rill_storage::topic_configs::build_log_config(defaults, configs)
}

/// Failures of the registry file itself.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("i/o on topic registry {path} failed while {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("topic registry {path} line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("storage failed while reconciling topic {topic} with the registry")]
    Storage {
        topic: String,
        #[source]
        source: StorageError,
    },
}

/// Why a topic operation was refused; each maps to a Kafka error code.
#[derive(Debug, Error)]
pub enum TopicError {
    #[error("topic {name} already exists")]
    AlreadyExists { name: String },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("unknown topic {name}")]
    Unknown { name: String },
    #[error("invalid partition count for topic {name}: {reason}")]
    InvalidPartitions { name: String, reason: String },
    #[error("invalid config for topic {name}")]
    InvalidConfig {
        name: String,
        #[source]
        source: StorageError,
    },
    #[error("storage failed for topic {name}")]
    Storage {
        name: String,
        #[source]
        source: StorageError,
    },
    #[error("topic registry could not be written")]
    Registry(#[from] RegistryError),
    #[error("internal error: {reason}")]
    Internal { reason: String },
    /// A broker-owned topic (`__consumer_offsets`): its partition count and existence are the
    /// group coordinator's, and only it writes there.
    #[error("topic {name} is internal to the broker")]
    InternalTopic { name: String },
}

/// Whether `name` is a topic the broker itself owns.
pub fn is_internal(name: &str) -> bool {
    name == crate::coordinator::group::TOPIC
        || name == crate::coordinator::txn::records::TOPIC
        || name == crate::coordinator::share::TOPIC
}

impl TopicError {
    /// The Kafka error code for this failure.
    pub fn code(&self) -> i16 {
        let kind = match self {
            TopicError::AlreadyExists { .. } => ResponseError::TopicAlreadyExists,
            TopicError::InvalidName { .. } => ResponseError::InvalidTopicException,
            TopicError::Unknown { .. } => ResponseError::UnknownTopicOrPartition,
            TopicError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
            TopicError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            TopicError::Storage { source, .. } => {
                return crate::error::storage_error_code(source);
            }
            TopicError::Registry(_) => ResponseError::KafkaStorageError,
            TopicError::Internal { .. } => ResponseError::UnknownServerError,
            TopicError::InternalTopic { .. } => ResponseError::InvalidTopicException,
        };
        kind.code()
    }

    /// A message for the response's `error_message` field, with the underlying cause.
    pub fn message(&self) -> String {
        match self {
            TopicError::InvalidConfig { source, .. } | TopicError::Storage { source, .. } => {
                format!("{self}: {source}")
            }
            _ => self.to_string(),
        }
    }
}

/// Checks a topic name the way Kafka does: 1..=249 bytes of `[a-zA-Z0-9._-]`, not `.`/`..`.
///
/// # Errors
/// [`TopicError::InvalidName`] with the rule that failed.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| {
        Err(TopicError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("longer than 249 characters");
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if !name.chars().all(legal) {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if crate::delayed::is_delay_log(name) {
        return invalid("the prefix __rill_delayed. is reserved for delay logs");
    }
    Ok(())
}

#[derive(Default)]
struct Topics {
    by_name: BTreeMap<String, Arc<TopicMeta>>,
    by_id: HashMap<Uuid, Arc<TopicMeta>>,
    /// Changes with every insert or removal (see [`TopicRegistry::generation`]).
    generation: u64,
}

/// Generations are drawn from one process-wide counter, so two registries (brokers in one
/// test process, or one data directory reopened) never share a generation: a cache keyed
/// by generation alone cannot mix up their topic sets.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Topics {
    fn insert(&mut self, meta: Arc<TopicMeta>) {
        self.by_id.insert(meta.id, Arc::clone(&meta));
        self.by_name.insert(meta.name.clone(), meta);
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&mut self, name: &str) -> Option<Arc<TopicMeta>> {
        let meta = self.by_name.remove(name)?;
        self.by_id.remove(&meta.id);
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        Some(meta)
    }
}

/// See the module docs.
pub struct TopicRegistry {
    path: PathBuf,
    cluster_id: String,
    /// Serializes mutations; held across their disk work.
    write_lock: Mutex<()>,
    topics: RwLock<Topics>,
    /// Topic config defaults set as dynamic broker configs (`log.retention.ms` →
    /// `retention.ms`), by topic key; every topic's config is built over them.
    defaults: RwLock<BTreeMap<String, String>>,
    /// Most partitions a topic may be created with or grown to (1..=
    /// [`PARTITIONS_PER_TOPIC_MAX`]); see [`TopicRegistry::set_max_partitions`].
    max_partitions: AtomicI32,
}

impl TopicRegistry {
    /// Loads the registry from `logs`' data directory (creating it on first start) and
    /// reconciles it with the partitions storage recovered: missing partition logs are
    /// created, partitions on disk that the registry does not know are adopted as topics
    /// (so a lost registry file loses ids and configs, not data). Blocks.
    ///
    /// # Errors
    /// An unreadable or malformed registry file, or storage failing to create a log.
    pub fn load(logs: &LogManager) -> Result<TopicRegistry, RegistryError> {
        let path = logs.data_dir().join(REGISTRY_FILE_NAME);
        let (cluster_id, mut topics, existed) = match fs::read_to_string(&path) {
            Ok(text) => {
                let (cluster_id, topics) = parse(&path, &text)?;
                (cluster_id, topics, true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (new_cluster_id(), BTreeMap::new(), false)
            }
            Err(source) => {
                return Err(RegistryError::Io {
                    op: "reading",
                    path,
                    source,
                })
            }
        };
        let adopted = adopt_orphans(logs, &mut topics);
        for meta in topics.values() {
            reconcile(logs, meta)?;
        }
        let registry = TopicRegistry {
            path,
            cluster_id,
            write_lock: Mutex::new(()),
            topics: RwLock::new(Topics::default()),
            defaults: RwLock::new(BTreeMap::new()),
            max_partitions: AtomicI32::new(PARTITIONS_PER_TOPIC_MAX),
        };
        {
            let mut published = registry.topics.write();
            for meta in topics.into_values() {
                published.insert(Arc::new(meta));
            }
        }
        if !existed || adopted {
            registry.persist()?;
        }
        Ok(registry)
    }

    /// The cluster id, generated on first start and stable afterwards.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The topic named `name`, if it exists (a read-locked map lookup).
    pub fn get(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.topics.read().by_name.get(name).cloned()
    }

    /// The topic with id `id` (Fetch v13+, Metadata and DeleteTopics by id).
    pub fn get_by_id(&self, id: &Uuid) -> Option<Arc<TopicMeta>> {
        self.topics.read().by_id.get(id).cloned()
    }

    /// Every topic, sorted by name.
    pub fn all(&self) -> Vec<Arc<TopicMeta>> {
        self.topics.read().by_name.values().cloned().collect()
    }

    /// Every topic name with the registry's generation: a number that changes whenever a
    /// topic is created, deleted or replaced (partitions added, configs set), unique across
    /// registries of one process. Consumer groups cache what a subscription pattern matches
    /// by it.
    pub fn names_at_generation(&self) -> (u64, Vec<String>) {
        let topics = self.topics.read();
        (topics.generation, topics.by_name.keys().cloned().collect())
    }

    /// The current generation (see [`TopicRegistry::names_at_generation`]).
    pub fn generation(&self) -> u64 {
        self.topics.read().generation
    }

    /// Creates a topic with `partitions` partitions and the given config overrides. With
    /// `validate_only`, checks everything and creates nothing. Blocks.
    ///
    /// # Errors
    /// Invalid name, partition count or config; the topic exists; storage or file failures.
    pub fn create(
        &self,
        logs: &LogManager,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, TopicError> {
        validate_name(name)?;
        self.validate_partitions(name, partitions)?;
        let meta = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        let config =
            self.log_config_of(&meta.configs)
                .map_err(|source| TopicError::InvalidConfig {
                    name: name.to_string(),
                    source,
                })?;
        self.validate_view(name, &meta.configs, None)?;
        let _guard = self.write_lock.lock();
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists {
                name: name.to_string(),
            });
        }
        let meta = Arc::new(meta);
        if validate_only {
            return Ok(meta);
        }
        // Recorded first, so a log reopened later (or one left by an interrupted creation,
        // reused below) has the topic's config.
        logs.set_topic_config(name, 0, config.clone());
        for partition in 0..partitions {
            create_partition_log(logs, name, partition, &config)?;
        }
        self.topics.write().insert(Arc::clone(&meta));
        self.persist()?;
        tracing::info!(topic = name, partitions, id = %meta.id, "created topic");
        Ok(meta)
    }

    /// Returns the topic, creating it with `partitions` partitions when it does not exist
    /// (auto topic creation). Blocks when it creates.
    ///
    /// # Errors
    /// As [`TopicRegistry::create`], except that losing a creation race is not an error.
    pub fn get_or_create(
        &self,
        logs: &LogManager,
        name: &str,
        partitions: i32,
    ) -> Result<Arc<TopicMeta>, TopicError> {
        if let Some(meta) = self.get(name) {
            return Ok(meta);
        }
        match self.create(logs, name, partitions, BTreeMap::new(), false) {
            Err(TopicError::AlreadyExists { .. }) => self.get(name).ok_or(TopicError::Unknown {
                name: name.to_string(),
            }),
            other => other,
        }
    }

    /// Deletes a topic and all its partition logs. Blocks.
    ///
    /// # Errors
    /// Unknown topic, storage or file failures.
    pub fn delete(&self, logs: &LogManager, name: &str) -> Result<Arc<TopicMeta>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::InternalTopic {
                name: name.to_string(),
            });
        }
        let _guard = self.write_lock.lock();
        let meta = self.get(name).ok_or_else(|| TopicError::Unknown {
            name: name.to_string(),
        })?;
        // Unpublish first so new requests stop finding the topic while its logs go away.
        self.topics.write().remove(name);
        for partition in 0..meta.partitions {
            let tp = TopicPartition {
                topic: name.to_string(),
                partition,
            };
            let delay_log = crate::delayed::delay_log_of(&tp);
            match logs
                .delete_log(&tp)
                .and_then(|()| match logs.delete_log(&delay_log) {
                    Err(StorageError::UnknownPartition { .. }) => Ok(()),
                    other => other,
                }) {
                Ok(()) | Err(StorageError::UnknownPartition { .. }) => {}
                Err(source) => {
                    tracing::error!(%tp, error = %source, "failed to delete partition log");
                    return Err(TopicError::Storage {
                        name: name.to_string(),
                        source,
                    });
                }
            }
        }
        self.persist()?;
        tracing::info!(topic = name, "deleted topic");
        Ok(meta)
    }

    /// Grows a topic to `count` partitions. Blocks.
    ///
    /// # Errors
    /// Unknown topic; `count` not larger than the current count; storage or file failures.
    pub fn add_partitions(
        &self,
        logs: &LogManager,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::InternalTopic {
                name: name.to_string(),
            });
        }
        let _guard = self.write_lock.lock();
        let meta = self.get(name).ok_or_else(|| TopicError::Unknown {
            name: name.to_string(),
        })?;
        self.validate_partitions(name, count)?;
        if count <= meta.partitions {
            return Err(TopicError::InvalidPartitions {
                name: name.to_string(),
                reason: format!(
                    "topic has {} partitions; the new count {count} must be larger",
                    meta.partitions
                ),
            });
        }
        let grown = Arc::new(TopicMeta {
            partitions: count,
            ..(*meta).clone()
        });
        if validate_only {
            return Ok(grown);
        }
        let config = self
            .log_config_of(&meta.configs)
            .map_err(|source| TopicError::Storage {
                name: name.to_string(),
                source,
            })?;
        for partition in meta.partitions..count {
            create_partition_log(logs, name, partition, &config)?;
        }
        self.topics.write().insert(Arc::clone(&grown));
        self.persist()?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(grown)
    }

    /// Replaces a topic's config overrides and applies them to every partition log. Blocks.
    ///
    /// # Errors
    /// Unknown topic; a config storage rejects; file failures.
    pub fn set_configs(
        &self,
        logs: &LogManager,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, TopicError> {
        let _guard = self.write_lock.lock();
        let meta = self.get(name).ok_or_else(|| TopicError::Unknown {
            name: name.to_string(),
        })?;
        let config = self
            .log_config_of(&configs)
            .map_err(|source| TopicError::InvalidConfig {
                name: name.to_string(),
                source,
            })?;
        self.validate_view(name, &configs, Some(&meta))?;
        let changed = Arc::new(TopicMeta {
            configs,
            ..(*meta).clone()
        });
        if validate_only {
            return Ok(changed);
        }
        // Open logs change now; unopened ones open with it (none is opened for this).
        logs.set_topic_config(name, meta.partitions, config);
        self.topics.write().insert(Arc::clone(&changed));
        self.persist()?;
        tracing::info!(topic = name, "changed topic configs");
        Ok(changed)
    }

    /// Checks the view configs among `configs` (see [`view::validate`]).
    fn validate_view(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
        previous: Option<&TopicMeta>,
    ) -> Result<(), TopicError> {
        view::validate(name, configs, previous, |source| self.get(source)).map_err(|e| {
            TopicError::InvalidConfig {
                name: name.to_string(),
                source: StorageError::InvalidConfig {
                    key: e.key().to_string(),
                    reason: e.to_string(),
                },
            }
        })
    }

    /// The storage config that `overrides` give a topic over the broker's current defaults.
    ///
    /// # Errors
    /// A value storage rejects.
    pub fn log_config_of(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<LogConfig, StorageError> {
        log_config(&self.defaults.read(), overrides)
    }

    /// The broker-level topic defaults in force, by topic key.
    pub fn defaults(&self) -> BTreeMap<String, String> {
        self.defaults.read().clone()
    }

    /// Checks that `defaults` (topic defaults from dynamic broker configs, by topic key) give
    /// every topic a valid config; unless `validate_only`, makes them the defaults and applies
    /// them to every partition log. Blocks.
    ///
    /// # Errors
    /// A topic whose overrides contradict the new defaults (e.g. a min lag above a new max),
    /// or a bad value; nothing is changed then.
    pub fn set_defaults(
        &self,
        logs: &LogManager,
        defaults: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _guard = self.write_lock.lock();
        let topics = self.all();
        let mut configs = Vec::with_capacity(topics.len());
        // Everything is checked before anything is applied.
        log_config(&defaults, &BTreeMap::new()).map_err(|source| TopicError::InvalidConfig {
            name: String::new(),
            source,
        })?;
        for meta in &topics {
            let config = log_config(&defaults, &meta.configs).map_err(|source| {
                TopicError::InvalidConfig {
                    name: meta.name.clone(),
                    source,
                }
            })?;
            configs.push(config);
        }
        if validate_only {
            return Ok(());
        }
        *self.defaults.write() = defaults;
        // Open logs get the config now, the others when first opened: a change (or the
        // defaults applied at start) does not open every log.
        for (meta, config) in topics.iter().zip(configs) {
            logs.set_topic_config(&meta.name, meta.partitions, config);
        }
        tracing::info!("changed broker-level topic defaults");
        Ok(())
    }

    /// Lowers the partitions a topic may be created with or grown to, for requests from
    /// now on (`BrokerConfig::max_partitions_per_topic`); clamped to
    /// 1..=[`PARTITIONS_PER_TOPIC_MAX`]. Topics already there keep their count.
    pub fn set_max_partitions(&self, max: i32) {
        self.max_partitions
            .store(max.clamp(1, PARTITIONS_PER_TOPIC_MAX), Ordering::Relaxed);
    }

    fn validate_partitions(&self, name: &str, partitions: i32) -> Result<(), TopicError> {
        let max = self.max_partitions.load(Ordering::Relaxed);
        if !(1..=max).contains(&partitions) {
            return Err(TopicError::InvalidPartitions {
                name: name.to_string(),
                reason: format!("{partitions} is outside 1..={max}"),
            });
        }
        Ok(())
    }

    /// Writes the whole registry atomically.
    fn persist(&self) -> Result<(), RegistryError> {
        let text = render(&self.cluster_id, &self.topics.read().by_name);
        write_atomically(&self.path, text.as_bytes())
    }
}

fn create_partition_log(
    logs: &LogManager,
    name: &str,
    partition: i32,
    config: &LogConfig,
) -> Result<(), TopicError> {
    let tp = TopicPartition {
        topic: name.to_string(),
        partition,
    };
    match logs.create_log(&tp, config.clone()) {
        Ok(_) => Ok(()),
        // Left over from an earlier, interrupted creation: reuse it with the new config.
        Err(StorageError::LogAlreadyExists { .. }) => {
            if let Some(log) = logs.get_log(&tp).map_err(|source| TopicError::Storage {
                name: name.to_string(),
                source,
            })? {
                log.set_config(config.clone());
            }
            Ok(())
        }
        Err(source) => Err(TopicError::Storage {
            name: name.to_string(),
            source,
        }),
    }
}

/// Registers partitions found on disk whose topic the registry does not know. Returns whether
/// anything changed.
fn adopt_orphans(logs: &LogManager, topics: &mut BTreeMap<String, TopicMeta>) -> bool {
    let mut changed = false;
    for tp in logs.partitions() {
        if crate::delayed::is_delay_log(&tp.topic) {
            continue; // a delay log belongs to its topic, never a topic of its own
        }
        let count = tp.partition.saturating_add(1);
        match topics.get_mut(&tp.topic) {
            Some(meta) if meta.partitions >= count => {}
            Some(meta) => {
                tracing::warn!(%tp, "partition on disk beyond the registry's count; adopting");
                meta.partitions = count;
                changed = true;
            }
            None => {
                tracing::warn!(%tp, "partition on disk without a registry entry; adopting");
                topics.insert(
                    tp.topic.clone(),
                    TopicMeta {
                        name: tp.topic.clone(),
                        id: Uuid::new_v4(),
                        partitions: count,
                        configs: BTreeMap::new(),
                    },
                );
                changed = true;
            }
        }
    }
    changed
}

/// Makes storage match one registry entry: every partition has a log with the topic config.
fn reconcile(logs: &LogManager, meta: &TopicMeta) -> Result<(), RegistryError> {
    let storage_error = |source| RegistryError::Storage {
        topic: meta.name.clone(),
        source,
    };
    let config = meta.log_config().map_err(storage_error)?;
    // Logs on disk stay unopened: they open with this config on first use.
    logs.set_topic_config(&meta.name, meta.partitions, config.clone());
    for partition in 0..meta.partitions {
        let tp = TopicPartition {
            topic: meta.name.clone(),
            partition,
        };
        if !logs.contains(&tp) {
            logs.create_log(&tp, config.clone())
                .map_err(storage_error)?;
        }
    }
    Ok(())
}

/// The registry file's text for `cluster_id` and `topics`. Public, with [`parse`], so the
/// file format can be checked in memory (the fuzz target round-trips it); the registry writes
/// it with `persist`.
pub fn render(cluster_id: &str, topics: &BTreeMap<String, Arc<TopicMeta>>) -> String {
    let mut text = String::from("# rill topic registry; rewritten by the broker\nversion 1\n");
    text.push_str(&format!("cluster.id {cluster_id}\n"));
    for meta in topics.values() {
        text.push_str(&format!(
            "topic {} {} {}\n",
            meta.name, meta.id, meta.partitions
        ));
        for (key, value) in &meta.configs {
            text.push_str(&format!(
                "config {} {} {}\n",
                meta.name,
                escape(key),
                escape(value)
            ));
        }
    }
    text
}

/// A parsed registry file: the cluster id and the topics by name.
pub type Parsed = (String, BTreeMap<String, TopicMeta>);

/// Parses the registry file's text; `path` only names the file in errors. [`TopicRegistry::load`]
/// reads the file with it and then reconciles storage with the result.
///
/// # Errors
/// [`RegistryError::Parse`] for the first line it cannot use, or a missing `cluster.id`.
pub fn parse(path: &Path, text: &str) -> Result<Parsed, RegistryError> {
    let mut cluster_id = None;
    let mut topics = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let error = |reason: String| RegistryError::Parse {
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        };
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            [] | [""] => {}
            [first, ..] if first.starts_with('#') => {}
            ["version", "1"] => {}
            ["version", other] => return Err(error(format!("unsupported version {other}"))),
            ["cluster.id", id] => {
                validate_cluster_id(id).map_err(error)?;
                cluster_id = Some(id.to_string());
            }
            ["topic", name, id, partitions] => {
                validate_name(name).map_err(|e| error(e.to_string()))?;
                let id = Uuid::parse_str(id).map_err(|e| error(e.to_string()))?;
                let partitions: i32 = partitions.parse().map_err(|_| error("bad count".into()))?;
                if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
                    return Err(error(format!("partition count {partitions} out of range")));
                }
                let meta = TopicMeta {
                    name: name.to_string(),
                    id,
                    partitions,
                    configs: BTreeMap::new(),
                };
                topics.insert(name.to_string(), meta);
            }
            ["config", name, key, value] => {
                let meta: &mut TopicMeta = topics
                    .get_mut(*name)
                    .ok_or_else(|| error(format!("config for unknown topic {name}")))?;
                let key = unescape(key).ok_or_else(|| error("bad escape".into()))?;
                let value = unescape(value).ok_or_else(|| error("bad escape".into()))?;
                meta.configs.insert(key, value);
            }
            _ => return Err(error(format!("unrecognized line {line:?}"))),
        }
    }
    let cluster_id = cluster_id.ok_or_else(|| RegistryError::Parse {
        path: path.to_path_buf(),
        line: 0,
        reason: "no cluster.id line".into(),
    })?;
    Ok((cluster_id, topics))
}

/// Cluster ids are what [`new_cluster_id`] makes, and what Kafka's `kafka-storage format`
/// accepts: base64url text. Anything else in the file is corruption: a control character
/// would not even survive the file's own write back (a trailing `\r` is lost to `lines()`),
/// and clients would be handed the garbage in every Metadata answer.
fn validate_cluster_id(id: &str) -> Result<(), String> {
    const MAX_LEN: usize = 64;
    if id.is_empty() || id.len() > MAX_LEN {
        return Err(format!("cluster id of {} bytes (1 to {MAX_LEN})", id.len()));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(format!(
            "cluster id has {c:?} (only A-Z, a-z, 0-9, - and _)"
        )),
        None => Ok(()),
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), RegistryError> {
    crate::atomic_file::write(path, contents).map_err(|(op, source)| RegistryError::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// A Kafka-style cluster id: the 16 bytes of a random UUID in unpadded URL-safe base64.
fn new_cluster_id() -> String {
    let out = base64url(&Uuid::new_v4().into_bytes());
    debug_assert_eq!(out.len(), 22);
    out
}

/// Unpadded URL-safe base64, as Kafka prints a `Uuid` (cluster ids, directory ids).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for &byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        bit_count += 8;
        while bit_count >= 6 {
            bit_count -= 6;
            out.push(ALPHABET[((bits >> bit_count) & 0x3f) as usize] as char);
        }
    }
    if bit_count > 0 {
        out.push(ALPHABET[((bits << (6 - bit_count)) & 0x3f) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `topic_registry` fuzz target: a cluster id ending in `\r` parsed, but
    /// lost the `\r` when the registry was written back and read again.
    #[test]
    fn cluster_ids_are_base64url_text() {
        let path = Path::new(REGISTRY_FILE_NAME);
        let id = new_cluster_id();
        assert!(validate_cluster_id(&id).is_ok(), "{id}");
        assert_eq!(parse(path, &format!("cluster.id {id}\n")).unwrap().0, id);
        for bad in ["Qtu\r", "Qtu\0q", "a%b", "é", &"x".repeat(65)] {
            let text = format!("version 1\ncluster.id {bad}\r\n");
            assert!(
                matches!(
                    parse(path, &text),
                    Err(RegistryError::Parse { line: 2, .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_name("orders.v1_x-2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(250)).is_err());
    }

    /// `BrokerConfig::max_partitions_per_topic` bounds creation and growth; topics already
    /// larger stay as they are, and the bound never exceeds the hard limit.
    #[test]
    fn the_partition_limit_bounds_create_and_grow() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::open(rill_storage::LogManagerConfig::new(dir.path())).unwrap();
        let registry = TopicRegistry::load(&logs).unwrap();
        registry
            .create(&logs, "big", 6, BTreeMap::new(), false)
            .unwrap();
        registry.set_max_partitions(4);
        let refused =
            |r: Result<_, TopicError>| matches!(r, Err(TopicError::InvalidPartitions { .. }));
        assert!(refused(registry.create(
            &logs,
            "a",
            5,
            BTreeMap::new(),
            false
        )));
        assert!(registry
            .create(&logs, "a", 4, BTreeMap::new(), false)
            .is_ok());
        assert!(refused(registry.add_partitions(&logs, "big", 7, false)));
        assert_eq!(registry.get("big").unwrap().partitions, 6);
        registry.set_max_partitions(i32::MAX);
        assert!(refused(registry.create(
            &logs,
            "b",
            PARTITIONS_PER_TOPIC_MAX + 1,
            BTreeMap::new(),
            true
        )));
    }

    #[test]
    fn escape_round_trips() {
        for s in ["plain", "with space", "100%", "", "ünïcode", "a,b"] {
            assert_eq!(unescape(&escape(s)).as_deref(), Some(s));
        }
    }

    proptest::proptest! {
        /// Any set of topics with any config values (spaces, '%', non-ASCII, empty) survives
        /// a write and a read of the registry file.
        #[test]
        fn any_registry_round_trips(
            topics in proptest::collection::btree_map(
                "[a-zA-Z0-9._-]{1,30}",
                (1i32..100, proptest::collection::btree_map("[a-z.]{1,20}", ".{0,20}", 0..4)),
                0..6,
            ),
        ) {
            let mut published = BTreeMap::new();
            for (name, (partitions, configs)) in &topics {
                if validate_name(name).is_err() {
                    continue;
                }
                let meta = TopicMeta {
                    name: name.clone(),
                    id: Uuid::new_v4(),
                    partitions: *partitions,
                    configs: configs.clone(),
                };
                published.insert(name.clone(), Arc::new(meta));
            }
            let cluster_id = new_cluster_id();
            let text = render(&cluster_id, &published);
            let (parsed_id, parsed) = parse(Path::new("x"), &text).expect("parses");
            proptest::prop_assert_eq!(parsed_id, cluster_id);
            proptest::prop_assert_eq!(parsed.len(), published.len());
            for (name, meta) in &published {
                proptest::prop_assert_eq!(parsed.get(name), Some(meta.as_ref()));
            }
        }
    }

    #[test]
    fn registry_text_round_trips() {
        let mut topics = BTreeMap::new();
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        configs.insert("cleanup.policy".to_string(), "compact, delete".to_string());
        let meta = TopicMeta {
            name: "t-1".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs,
        };
        topics.insert(meta.name.clone(), Arc::new(meta.clone()));
        let id = new_cluster_id();
        let text = render(&id, &topics);
        let (parsed_id, parsed) = parse(Path::new("x"), &text).expect("parses");
        assert_eq!(parsed_id, id);
        assert_eq!(parsed.get("t-1"), Some(&meta));
    }
}
