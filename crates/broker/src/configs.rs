//! DescribeConfigs (32), AlterConfigs (33) and IncrementalAlterConfigs (44).
//!
//! - TOPIC: the table of `rill_storage::topic_configs`; overrides are kept in the topic
//!   registry and applied to every partition's log.
//! - BROKER: this broker's id or the cluster default `""`: the static (command-line) settings,
//!   read-only, with the broker's counters under `rill.metrics.*`, and the dynamic ones of
//!   [`crate::broker_configs`].
//! - GROUP: per-group configs ([`crate::group_configs`]), read by the group coordinators.
//! - BROKER_LOGGER: log levels changed at runtime ([`crate::log_levels`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListConfigResourcesRequest,
    ListConfigResourcesResponse,
};
use kafka_protocol::protocol::StrBytes;

use rill_storage::topic_configs::{topic_config, ConfigDef, ConfigKind, TOPIC_CONFIGS};

use crate::atomic_file::FileError;
use crate::broker_configs::{self, BrokerConfigError, BrokerKey, Dynamic};
use crate::error::NONE;
use crate::group_configs::GroupConfigError;
use crate::log_levels::{LevelChange, LogLevelError};
use crate::state::BrokerState;
use crate::topics::TopicError;

/// ConfigResource.Type values.
pub const RESOURCE_TOPIC: i8 = 2;
/// ConfigResource.Type BROKER.
pub const RESOURCE_BROKER: i8 = 4;
/// ConfigResource.Type BROKER_LOGGER: log levels.
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
/// ConfigResource.Type GROUP: per-group configs ([`crate::group_configs`]).
pub const RESOURCE_GROUP: i8 = 32;

/// ConfigEntry.ConfigSource values.
pub const CONFIG_SOURCE_DYNAMIC_TOPIC: i8 = 1;
/// A dynamic config set for this broker.
pub const CONFIG_SOURCE_DYNAMIC_BROKER: i8 = 2;
/// A dynamic config set as the cluster default.
pub const CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
/// Source of broker settings: they come from the command line.
pub const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
/// Source of topic configs that are not overridden.
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// ConfigEntry.ConfigType (v3+) of a broker setting, so tools can show and validate values.
/// Topic configs take theirs from the table.
fn config_type(name: &str) -> i8 {
    const BOOLEAN: i8 = 1;
    const STRING: i8 = 2;
    const INT: i8 = 3;
    const LONG: i8 = 5;
    match name {
        "num.partitions" | "socket.request.max.bytes" | "max.connections" => INT,
        "node.id" | "broker.id" => INT,
        "auto.create.topics.enable" => BOOLEAN,
        name if name.starts_with("rill.metrics.") => LONG,
        _ => STRING,
    }
}

fn is_list(name: &str) -> bool {
    topic_config(name).is_some_and(|d| d.kind == ConfigKind::List)
}

/// DescribeConfigs: topic configs from storage's `LogConfig::entries` (overrides marked as
/// DYNAMIC_TOPIC_CONFIG), and the broker's static settings and counters.
pub fn describe(
    state: &BrokerState,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => topic_entries(state, resource.resource_name.as_str()),
                RESOURCE_BROKER => match broker_scope(state, resource.resource_name.as_str()) {
                    Ok(Scope::Cluster) => Ok(dynamic_entries(state, true)),
                    Ok(Scope::Broker) => Ok(broker_entries(state)),
                    Err(e) => Err(e),
                },
                RESOURCE_BROKER_LOGGER => logger_entries(state, resource.resource_name.as_str()),
                RESOURCE_GROUP => group_entries(state, resource.resource_name.as_str()),
                other => Err((
                    ResponseError::InvalidRequest.code(),
                    format!("unsupported resource type {other}"),
                )),
            };
            // Null or empty key lists both mean "every config", as in Kafka.
            let wanted = resource
                .configuration_keys
                .as_ref()
                .filter(|k| !k.is_empty());
            match entries {
                Ok(entries) => {
                    result.error_code = NONE;
                    result.configs = entries
                        .into_iter()
                        .filter(|e| match wanted {
                            None => true,
                            Some(keys) => keys.iter().any(|k| k == &e.name),
                        })
                        .map(|e| {
                            e.into_result(
                                version,
                                request.include_synonyms,
                                request.include_documentation,
                            )
                        })
                        .collect();
                }
                Err((code, text)) => {
                    result.error_code = code;
                    result.error_message = Some(StrBytes::from_string(text));
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// One described config, before encoding.
struct Entry {
    name: StrBytes,
    /// `None` for a broker config with no value (Kafka's null).
    value: Option<String>,
    source: i8,
    read_only: bool,
    config_type: i8,
    /// `(name, value, source)`, most specific first, as Kafka lists them.
    synonyms: Vec<(StrBytes, Option<String>, i8)>,
    documentation: Option<&'static str>,
}

impl Entry {
    fn into_result(
        self,
        version: i16,
        include_synonyms: bool,
        include_documentation: bool,
    ) -> DescribeConfigsResourceResult {
        let mut result = DescribeConfigsResourceResult::default()
            .with_value(self.value.clone().map(StrBytes::from_string))
            .with_read_only(self.read_only)
            .with_config_source(self.source)
            .with_is_sensitive(false)
            .with_config_type(self.config_type);
        if include_synonyms && version >= 1 {
            result.synonyms = self
                .synonyms
                .into_iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(name)
                        .with_value(value.map(StrBytes::from_string))
                        .with_source(source)
                })
                .collect();
        }
        if include_documentation && version >= 3 {
            result.documentation = self.documentation.map(StrBytes::from_static_str);
        }
        // v0 reported "is_default" instead of a source; the crate maps the field per version.
        result.name = self.name;
        result
    }
}

/// One topic config as a topic has it: its definition, the value in force, and whether the
/// topic overrides it.
pub struct TopicConfigValue {
    pub def: &'static ConfigDef,
    pub value: String,
    pub overridden: bool,
}

/// Every topic config of the table with the value `overrides` give it (written as Kafka writes
/// values back) or its default, for DescribeConfigs and the CreateTopics answer.
pub fn topic_config_values(
    defaults: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Vec<TopicConfigValue> {
    TOPIC_CONFIGS
        .iter()
        .map(
            |def| match overrides.get(def.name).or(defaults.get(def.name)) {
                Some(raw) => TopicConfigValue {
                    def,
                    value: def
                        .parse(raw)
                        .map(|v| v.canonical())
                        .unwrap_or_else(|_| raw.clone()),
                    overridden: overrides.contains_key(def.name),
                },
                None => TopicConfigValue {
                    def,
                    value: def.default.to_string(),
                    overridden: false,
                },
            },
        )
        .collect()
}

fn topic_entries(state: &BrokerState, name: &str) -> Result<Vec<Entry>, (i16, String)> {
    let Some(meta) = state.topics.get(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition.code(),
            format!("unknown topic {name}"),
        ));
    };
    let dynamic = state.dynamic.snapshot();
    Ok(topic_config_values(&state.topics.defaults(), &meta.configs)
        .into_iter()
        .map(|c| {
            let mut synonyms = Vec::new();
            if c.overridden {
                let name = StrBytes::from_static_str(c.def.name);
                synonyms.push((name, Some(c.value.clone()), CONFIG_SOURCE_DYNAMIC_TOPIC));
            }
            if let Some(broker) = c.def.broker_synonym {
                synonyms.extend(broker_synonyms(&dynamic, broker, c.def));
            }
            Entry {
                name: StrBytes::from_static_str(c.def.name),
                value: Some(c.value),
                source: synonyms.first().map_or(CONFIG_SOURCE_DEFAULT, |s| s.2),
                read_only: false,
                config_type: c.def.kind as i8,
                synonyms,
                documentation: Some(c.def.doc),
            }
        })
        .collect())
}

/// The synonyms of broker config `name` (a topic default), most specific first: this broker's
/// dynamic value, the cluster default, and Kafka's default when Kafka lists it.
fn broker_synonyms(
    dynamic: &Dynamic,
    name: &'static str,
    def: &ConfigDef,
) -> Vec<(StrBytes, Option<String>, i8)> {
    let mut out = Vec::new();
    let named = || StrBytes::from_static_str(name);
    if let Some(v) = dynamic.broker.get(name) {
        out.push((named(), Some(v.clone()), CONFIG_SOURCE_DYNAMIC_BROKER));
    }
    if let Some(v) = dynamic.cluster.get(name) {
        out.push((
            named(),
            Some(v.clone()),
            CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER,
        ));
    }
    if def.synonym_default_listed {
        out.push((
            named(),
            Some(def.default.to_string()),
            CONFIG_SOURCE_DEFAULT,
        ));
    }
    out
}

/// The dynamic broker configs of one resource: the cluster default (`""`, only what is set,
/// as Kafka answers) or this broker.
fn dynamic_entries(state: &BrokerState, cluster: bool) -> Vec<Entry> {
    let dynamic = state.dynamic.snapshot();
    let mut entries = Vec::new();
    if cluster {
        for (name, value) in &dynamic.cluster {
            let synonym = (
                s(name),
                Some(value.clone()),
                CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER,
            );
            entries.push(dynamic_entry(name, Some(value.clone()), vec![synonym]));
        }
        return entries;
    }
    // Every topic default, as Kafka lists its `log.*` configs, then max.connections and
    // the custom names set.
    let mut names: Vec<String> = TOPIC_CONFIGS
        .iter()
        .filter_map(|d| d.broker_synonym)
        .map(str::to_string)
        .collect();
    names.push("max.connections".to_string());
    names.extend(broker_configs::CleanerKey::names().map(str::to_string));
    for name in dynamic.broker.keys().chain(dynamic.cluster.keys()) {
        if !names.contains(name) && !broker_configs::READ_ONLY.contains(&name.as_str()) {
            names.push(name.clone());
        }
    }
    for name in names {
        let mut synonyms = Vec::new();
        if let Some(v) = dynamic.broker.get(&name) {
            synonyms.push((s(&name), Some(v.clone()), CONFIG_SOURCE_DYNAMIC_BROKER));
        }
        if let Some(v) = dynamic.cluster.get(&name) {
            synonyms.push((
                s(&name),
                Some(v.clone()),
                CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER,
            ));
        }
        match broker_configs::broker_key(&name) {
            BrokerKey::TopicDefault(def, 1) if def.synonym_default_listed => {
                synonyms.push((
                    s(&name),
                    Some(def.default.to_string()),
                    CONFIG_SOURCE_DEFAULT,
                ));
            }
            BrokerKey::MaxConnections => {
                let configured = state.config.max_connections.to_string();
                synonyms.push((s(&name), Some(configured), CONFIG_SOURCE_STATIC_BROKER));
            }
            BrokerKey::Cleaner(key) => {
                // The command line's value; rill cannot tell it from the default, so it is
                // described as Kafka describes a default.
                let base = key.value_in(&state.config.cleaner);
                synonyms.push((s(&name), Some(base), CONFIG_SOURCE_DEFAULT));
            }
            _ => {}
        }
        let value = synonyms.first().and_then(|s| s.1.clone());
        entries.push(dynamic_entry(&name, value, synonyms));
    }
    entries
}

fn dynamic_entry(
    name: &str,
    value: Option<String>,
    synonyms: Vec<(StrBytes, Option<String>, i8)>,
) -> Entry {
    Entry {
        name: s(name),
        value,
        source: synonyms.first().map_or(CONFIG_SOURCE_DEFAULT, |s| s.2),
        read_only: false,
        config_type: broker_configs::config_type(name),
        synonyms,
        documentation: None,
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn broker_entries(state: &BrokerState) -> Vec<Entry> {
    let c = &state.config;
    let m = state.metrics.snapshot();
    let statics = [
        ("node.id", c.node_id.to_string()),
        ("broker.id", c.node_id.to_string()),
        ("log.dirs", c.data_dir.display().to_string()),
        ("num.partitions", c.num_partitions.to_string()),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
        ),
        (
            "rill.metrics.sendfile.bytes.total",
            m.sendfile_bytes_total.to_string(),
        ),
        (
            "rill.metrics.copied.bytes.total",
            m.copied_bytes_total.to_string(),
        ),
        ("rill.metrics.requests.total", m.requests_total.to_string()),
        (
            "rill.metrics.produced.bytes.total",
            m.produced_bytes_total.to_string(),
        ),
    ];
    let mut entries: Vec<Entry> = statics
        .into_iter()
        .map(|(name, value)| Entry {
            name: StrBytes::from_static_str(name),
            synonyms: vec![(
                StrBytes::from_static_str(name),
                Some(value.clone()),
                CONFIG_SOURCE_STATIC_BROKER,
            )],
            config_type: config_type(name),
            value: Some(value),
            source: CONFIG_SOURCE_STATIC_BROKER,
            read_only: true,
            documentation: None,
        })
        .collect();
    entries.extend(dynamic_entries(state, false));
    entries
}

/// A group's configs (Kafka answers an empty name with INVALID_REQUEST).
fn group_entries(state: &BrokerState, group_id: &str) -> Result<Vec<Entry>, (i16, String)> {
    if group_id.is_empty() {
        let text = "Group name must not be empty".to_string();
        return Err((ResponseError::InvalidRequest.code(), text));
    }
    Ok(state
        .groups
        .group_configs()
        .describe(group_id)
        .into_iter()
        .map(|c| Entry {
            name: StrBytes::from_static_str(c.def.name),
            value: Some(c.value),
            source: c.synonyms.first().map_or(CONFIG_SOURCE_DEFAULT, |s| s.2),
            read_only: false,
            config_type: c.def.kind as i8,
            synonyms: c
                .synonyms
                .into_iter()
                .map(|(name, value, source)| (StrBytes::from_static_str(name), Some(value), source))
                .collect(),
            documentation: Some(c.def.doc),
        })
        .collect())
}

/// Changes group `group_id`'s configs with `change` (checked, persisted unless
/// `validate_only`).
async fn alter_group(
    state: &Arc<BrokerState>,
    group_id: String,
    validate_only: bool,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), GroupConfigError> + Send + 'static,
) -> Result<(), (i16, String)> {
    if group_id.len() > crate::coordinator::group::GROUP_ID_BYTES_MAX {
        let text = format!(
            "group id longer than {} bytes",
            crate::coordinator::group::GROUP_ID_BYTES_MAX
        );
        return Err((ResponseError::InvalidRequest.code(), text));
    }
    let outcome = state
        .blocking(move |s| {
            Ok(s.groups
                .group_configs()
                .update(&group_id, validate_only, change))
        })
        .await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let code = match e {
                GroupConfigError::Invalid(_) => ResponseError::InvalidConfig.code(),
                GroupConfigError::File(FileError::Io { .. }) => {
                    ResponseError::KafkaStorageError.code()
                }
                _ => ResponseError::InvalidRequest.code(),
            };
            Err((code, e.to_string()))
        }
        Err(e) => Err((e.code(), e.message())),
    }
}

/// Applies IncrementalAlterConfigs operations to a group's overrides. APPEND and SUBTRACT are
/// refused for every group config, as Kafka 4.4 refuses them (it does not find a group
/// config's type when checking them, so even the LIST one is refused).
fn apply_group_ops(
    overrides: &mut BTreeMap<String, String>,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<(), GroupConfigError> {
    for op in ops {
        let key = op.name.to_string();
        match (op.config_operation, op.value.as_ref()) {
            (OP_SET, Some(value)) => {
                overrides.insert(key, value.to_string());
            }
            (OP_DELETE, _) => {
                overrides.remove(&key);
            }
            (OP_APPEND | OP_SUBTRACT, _) => {
                let verb = if op.config_operation == OP_APPEND {
                    "APPEND"
                } else {
                    "SUBTRACT"
                };
                return Err(GroupConfigError::Invalid(format!(
                    "Can't {verb} to key {key} because its type is not LIST."
                )));
            }
            (OP_SET, None) => {
                return Err(GroupConfigError::Invalid(format!(
                    "SET of {key} needs a value"
                )));
            }
            (other, _) => {
                return Err(GroupConfigError::Invalid(format!(
                    "unknown config operation {other}"
                )));
            }
        }
    }
    Ok(())
}

/// ConfigSource DYNAMIC_BROKER_LOGGER_CONFIG: every logger's level, as Kafka answers.
const CONFIG_SOURCE_BROKER_LOGGER: i8 = 6;

/// A BROKER_LOGGER resource names this broker, as Kafka requires.
fn logger_scope(state: &BrokerState, name: &str) -> Result<(), (i16, String)> {
    let id = state.config.node_id;
    if name.parse::<i32>().ok() == Some(id) {
        return Ok(());
    }
    let text = format!("Unexpected broker id, expected {id}, but received {name}");
    Err((ResponseError::InvalidRequest.code(), text))
}

/// Every logger with its level (source DYNAMIC_BROKER_LOGGER_CONFIG, type UNKNOWN, no
/// synonyms, as Kafka answers).
fn logger_entries(state: &BrokerState, name: &str) -> Result<Vec<Entry>, (i16, String)> {
    logger_scope(state, name)?;
    Ok(state
        .config
        .log_levels
        .describe()
        .into_iter()
        .map(|(logger, level)| Entry {
            name: StrBytes::from_string(logger),
            value: Some(level),
            source: CONFIG_SOURCE_BROKER_LOGGER,
            read_only: false,
            config_type: 0,
            synonyms: Vec::new(),
            documentation: None,
        })
        .collect())
}

/// Changes log levels (BROKER_LOGGER); every change is checked before any applies.
fn alter_loggers(
    state: &BrokerState,
    name: &str,
    changes: Result<Vec<LevelChange>, (i16, String)>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    logger_scope(state, name)?;
    let changes = changes?;
    match state.config.log_levels.change(&changes, validate_only) {
        Ok(()) => {
            tracing::info!(?changes, validate_only, "log levels changed");
            Ok(())
        }
        Err(LogLevelError::InvalidConfig(text)) => Err((ResponseError::InvalidConfig.code(), text)),
        Err(LogLevelError::InvalidRequest(text)) => {
            Err((ResponseError::InvalidRequest.code(), text))
        }
    }
}

/// IncrementalAlterConfigs operations on loggers: SET and DELETE; APPEND and SUBTRACT are
/// refused as Kafka refuses them.
fn logger_changes(
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<LevelChange>, (i16, String)> {
    ops.iter()
        .map(|op| {
            let name = op.name.to_string();
            match (op.config_operation, op.value.as_ref()) {
                (OP_SET, Some(level)) => Ok(LevelChange::Set(name, level.to_string())),
                (OP_DELETE, _) => Ok(LevelChange::Delete(name)),
                (OP_APPEND | OP_SUBTRACT, _) => {
                    let verb = if op.config_operation == OP_APPEND {
                        "APPEND"
                    } else {
                        "SUBTRACT"
                    };
                    let text =
                        format!("{verb} operation is not allowed for the BROKER_LOGGER resource");
                    Err((ResponseError::InvalidRequest.code(), text))
                }
                (other, _) => Err((
                    ResponseError::InvalidConfig.code(),
                    format!("config operation {other} with no value for logger {name}"),
                )),
            }
        })
        .collect()
}

/// Applies `overrides` as the topic's complete override set.
async fn set_topic_configs(
    state: &Arc<BrokerState>,
    name: &str,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let name = name.to_string();
    let outcome: Result<_, TopicError> = state
        .blocking(move |s| {
            s.topics
                .set_configs(&s.logs, &name, overrides, validate_only)
        })
        .await;
    outcome.map(|_| ()).map_err(|e| (e.code(), e.message()))
}

/// Which dynamic configs a BROKER resource names.
enum Scope {
    /// `""`: the cluster default.
    Cluster,
    /// This broker's id.
    Broker,
}

fn broker_scope(state: &BrokerState, name: &str) -> Result<Scope, (i16, String)> {
    if name.is_empty() {
        return Ok(Scope::Cluster);
    }
    match name.parse::<i32>() {
        Ok(id) if id == state.config.node_id => Ok(Scope::Broker),
        _ => Err((
            ResponseError::InvalidRequest.code(),
            format!(
                "broker {name} is not this broker ({})",
                state.config.node_id
            ),
        )),
    }
}

/// Changes one scope of the dynamic broker configs with `change`, applies the result to the
/// running broker (topic defaults on every log, the connection limit) and persists it; with
/// `validate_only`, only checks.
async fn alter_broker(
    state: &Arc<BrokerState>,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerConfigError> + Send + 'static,
) -> Result<(), (i16, String)> {
    let scope = broker_scope(state, name)?;
    let outcome = state
        .blocking(move |s| {
            let change = |d: &mut Dynamic| match scope {
                Scope::Cluster => change(&mut d.cluster),
                Scope::Broker => change(&mut d.broker),
            };
            let apply = |d: &Dynamic| {
                broker_configs::check_cleaner_change(
                    &s.logs.cleaner_config(),
                    &d.cleaner(&s.config.cleaner),
                )?;
                s.topics
                    .set_defaults(&s.logs, d.topic_defaults(), validate_only)
                    .map_err(|e| BrokerConfigError::Invalid {
                        name: "topic defaults".into(),
                        value: String::new(),
                        reason: e.message(),
                    })
            };
            let result = if validate_only {
                let mut next = s.dynamic.snapshot();
                change(&mut next).and_then(|()| apply(&next))
            } else {
                s.dynamic.update(change, apply).map(|()| {
                    let cleaner = s.dynamic.snapshot().cleaner(&s.config.cleaner);
                    if cleaner != s.logs.cleaner_config() {
                        s.logs.reconfigure_cleaner(cleaner);
                    }
                })
            };
            Ok(result)
        })
        .await;
    match outcome {
        Ok(Ok(())) => {
            let limit = state.dynamic.snapshot().max_connections();
            state
                .connection_limit
                .set(limit.unwrap_or(state.config.max_connections));
            tracing::info!(resource = name, "changed dynamic broker configs");
            Ok(())
        }
        Ok(Err(e)) => {
            let code = match e {
                BrokerConfigError::File(FileError::Io { .. }) => {
                    ResponseError::KafkaStorageError.code()
                }
                _ => ResponseError::InvalidRequest.code(),
            };
            Err((code, e.to_string()))
        }
        Err(e) => Err((e.code(), e.message())),
    }
}

fn not_alterable(resource_type: i8) -> (i16, String) {
    if resource_type == RESOURCE_BROKER {
        let text = "broker configs are set on the command line and cannot be altered".into();
        (ResponseError::InvalidRequest.code(), text)
    } else {
        let text = format!("unsupported resource type {resource_type}");
        (ResponseError::InvalidRequest.code(), text)
    }
}

/// AlterConfigs: the given entries replace all of the topic's overrides.
pub async fn alter(state: &Arc<BrokerState>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = if resource.resource_type == RESOURCE_BROKER {
            let entries: Vec<(String, String)> = resource
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let name = resource.resource_name.to_string();
            let replace = move |map: &mut BTreeMap<String, String>| {
                map.clear();
                for (key, value) in entries {
                    let value = broker_configs::check(&key, &value)?;
                    map.insert(key, value);
                }
                Ok(())
            };
            alter_broker(state, &name, request.validate_only, replace).await
        } else if resource.resource_type == RESOURCE_TOPIC {
            let overrides = resource
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let name = resource.resource_name.as_str();
            set_topic_configs(state, name, overrides, request.validate_only).await
        } else if resource.resource_type == RESOURCE_BROKER_LOGGER {
            // Kafka applies legacy AlterConfigs on loggers as SETs (other loggers keep theirs).
            let changes = resource
                .configs
                .iter()
                .map(|c| {
                    let level = c.value.as_ref().map_or(String::new(), |v| v.to_string());
                    LevelChange::Set(c.name.to_string(), level)
                })
                .collect();
            let name = resource.resource_name.as_str();
            alter_loggers(state, name, Ok(changes), request.validate_only)
        } else if resource.resource_type == RESOURCE_GROUP {
            // As for topics, the entries replace the group's whole override set.
            let entries: Vec<(String, String)> = resource
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let replace = move |map: &mut BTreeMap<String, String>| {
                *map = entries.into_iter().collect();
                Ok(())
            };
            let name = resource.resource_name.to_string();
            alter_group(state, name, request.validate_only, replace).await
        } else {
            Err(not_alterable(resource.resource_type))
        };
        let mut response = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        match outcome {
            Ok(()) => response.error_code = NONE,
            Err((code, text)) => {
                response.error_code = code;
                response.error_message = Some(StrBytes::from_string(text));
            }
        }
        responses.push(response);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET, DELETE, and APPEND/SUBTRACT for list configs.
pub async fn incremental_alter(
    state: &Arc<BrokerState>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = if resource.resource_type == RESOURCE_BROKER {
            let ops = resource.configs.clone();
            let name = resource.resource_name.to_string();
            let change = move |map: &mut BTreeMap<String, String>| {
                let keys: Vec<String> = ops.iter().map(|o| o.name.to_string()).collect();
                if let Some(key) = keys
                    .iter()
                    .find(|k| broker_configs::READ_ONLY.contains(&k.as_str()))
                {
                    return Err(BrokerConfigError::ReadOnly(key.clone()));
                }
                apply_ops(map, &ops).map_err(|(_, reason)| BrokerConfigError::Invalid {
                    name: keys.join(","),
                    value: String::new(),
                    reason,
                })?;
                for key in keys {
                    if let Some(value) = map.get(&key) {
                        let value = broker_configs::check(&key, value)?;
                        map.insert(key, value);
                    }
                }
                Ok(())
            };
            alter_broker(state, &name, request.validate_only, change).await
        } else if resource.resource_type == RESOURCE_TOPIC {
            let name = resource.resource_name.as_str();
            match state.topics.get(name) {
                None => Err((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("unknown topic {name}"),
                )),
                Some(meta) => {
                    let mut overrides = meta.configs.clone();
                    match apply_ops(&mut overrides, &resource.configs) {
                        Ok(()) => {
                            set_topic_configs(state, name, overrides, request.validate_only).await
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        } else if resource.resource_type == RESOURCE_BROKER_LOGGER {
            let changes = logger_changes(&resource.configs);
            let name = resource.resource_name.as_str();
            alter_loggers(state, name, changes, request.validate_only)
        } else if resource.resource_type == RESOURCE_GROUP {
            let ops = resource.configs.clone();
            let change = move |map: &mut BTreeMap<String, String>| apply_group_ops(map, &ops);
            let name = resource.resource_name.to_string();
            alter_group(state, name, request.validate_only, change).await
        } else {
            Err(not_alterable(resource.resource_type))
        };
        let mut response =
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
        match outcome {
            Ok(()) => response.error_code = NONE,
            Err((code, text)) => {
                response.error_code = code;
                response.error_message = Some(StrBytes::from_string(text));
            }
        }
        responses.push(response);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn apply_ops(
    overrides: &mut BTreeMap<String, String>,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<(), (i16, String)> {
    let invalid = |text: String| (ResponseError::InvalidConfig.code(), text);
    for op in ops {
        let key = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        match (op.config_operation, value) {
            (OP_SET, Some(value)) => {
                overrides.insert(key, value);
            }
            (OP_DELETE, _) => {
                overrides.remove(&key);
            }
            (OP_APPEND | OP_SUBTRACT, Some(value)) if is_list(&key) => {
                // Without an override the list starts from the default, as in Kafka.
                let current = overrides
                    .get(&key)
                    .cloned()
                    .or_else(|| topic_config(&key).map(|d| d.default.to_string()))
                    .unwrap_or_default();
                let mut items: Vec<String> = split_list(&current);
                for item in split_list(&value) {
                    let present = items.contains(&item);
                    if op.config_operation == OP_APPEND && !present {
                        items.push(item);
                    } else if op.config_operation == OP_SUBTRACT {
                        items.retain(|i| i != &item);
                    }
                }
                overrides.insert(key, items.join(","));
            }
            (OP_APPEND | OP_SUBTRACT, _) => {
                return Err(invalid(format!("{key} is not a list config")));
            }
            (OP_SET, None) => return Err(invalid(format!("SET of {key} needs a value"))),
            (other, _) => return Err(invalid(format!("unknown config operation {other}"))),
        }
    }
    Ok(())
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect()
}

/// ConfigResource.Type CLIENT_METRICS (none exist: rill has no client metrics subscriptions).
const RESOURCE_CLIENT_METRICS: i8 = 16;

/// ListConfigResources (74, Kafka 4.1+; v0 was ListClientMetricsResources): the resources
/// of the asked types that have configs, as Kafka lists them: every topic, this broker and
/// its loggers, and the groups with configs set. v0 lists client metrics resources only (none
/// here). A type Kafka cannot list is UNSUPPORTED_VERSION, as Kafka answers.
pub fn list_resources(
    state: &BrokerState,
    version: i16,
    request: ListConfigResourcesRequest,
) -> ListConfigResourcesResponse {
    use kafka_protocol::messages::list_config_resources_response::ConfigResource;
    let all = [
        RESOURCE_GROUP,
        RESOURCE_BROKER_LOGGER,
        RESOURCE_BROKER,
        RESOURCE_TOPIC,
    ];
    let types: Vec<i8> = if version == 0 {
        vec![RESOURCE_CLIENT_METRICS]
    } else if request.resource_types.is_empty() {
        all.to_vec()
    } else {
        request.resource_types.clone()
    };
    let mut response = ListConfigResourcesResponse::default();
    if let Some(bad) = types
        .iter()
        .find(|t| !all.contains(t) && **t != RESOURCE_CLIENT_METRICS)
    {
        tracing::debug!(
            resource_type = bad,
            "ListConfigResources of an unknown type"
        );
        response.error_code = ResponseError::UnsupportedVersion.code();
        return response;
    }
    let node = state.config.node_id.to_string();
    let resource = |resource_type: i8, name: String| {
        ConfigResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name))
    };
    for t in all.into_iter().filter(|t| types.contains(t)) {
        match t {
            RESOURCE_GROUP => {
                let groups = state.groups.group_configs().groups();
                response
                    .config_resources
                    .extend(groups.into_iter().map(|g| resource(t, g)));
            }
            RESOURCE_TOPIC => {
                let topics = state.topics.all();
                response
                    .config_resources
                    .extend(topics.iter().map(|m| resource(t, m.name.clone())));
            }
            _ => response.config_resources.push(resource(t, node.clone())),
        }
    }
    response
}
