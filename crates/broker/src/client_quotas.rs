//! Client quotas (KIP-13, KIP-55, KIP-546): the limits AlterClientQuotas sets per entity,
//! DescribeClientQuotas reports, and [`crate::quota_sensors`] enforces.
//!
//! An entity is a user, a client id, a user and client id together, or an IP address; a name
//! of `None` is that type's default (`<default>` in Kafka's tools). Keys per entity, with
//! Kafka 4.4's types (`QuotaConfig`): `producer_byte_rate` and `consumer_byte_rate` (LONG),
//! `request_percentage` and `controller_mutation_rate` (DOUBLE) for users and client ids;
//! `connection_creation_rate` (INT) for IPs. Validation and the describe filter are Kafka's
//! (`ClientQuotaControlManager`, `ClientQuotasImage`), messages included.
//!
//! File `client-quotas` in the data directory, replaced atomically on every change
//! ([`crate::atomic_file`]), one key of one entity a line; `-` is a default name and `.` an
//! absent entity type:
//!
//! ```text
//! # rill client quotas; rewritten by the broker
//! alice - . producer_byte_rate 1048576
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use thiserror::Error;

use crate::line_field::{escape, unescape};

/// The file in the data directory.
pub const FILE_NAME: &str = "client-quotas";

/// Most entities with quotas: the file is read whole at start and rewritten on each change.
/// Kafka has no such limit; an alteration that would pass it is refused.
pub const ENTITIES_MAX: usize = 10_000;

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

/// Kafka's entity types, in the order entities sort and are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityType {
    User,
    ClientId,
    Ip,
}

impl EntityType {
    /// The wire name (`ClientQuotaEntity.USER`, `CLIENT_ID`, `IP`).
    pub fn name(self) -> &'static str {
        match self {
            EntityType::User => "user",
            EntityType::ClientId => "client-id",
            EntityType::Ip => "ip",
        }
    }

    pub fn from_name(name: &str) -> Option<EntityType> {
        [EntityType::User, EntityType::ClientId, EntityType::Ip]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// A quota entity: each type at most once, `None` naming the type's default.
pub type Entity = BTreeMap<EntityType, Option<String>>;

/// The quota values of one entity, by key.
pub type Values = BTreeMap<String, f64>;

/// The type of a quota key's value, which decides how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Long,
    Int,
    Double,
}

fn key_type(ip: bool, key: &str) -> Option<KeyType> {
    match (ip, key) {
        (false, PRODUCER_BYTE_RATE | CONSUMER_BYTE_RATE) => Some(KeyType::Long),
        (false, REQUEST_PERCENTAGE | CONTROLLER_MUTATION_RATE) => Some(KeyType::Double),
        (true, CONNECTION_CREATION_RATE) => Some(KeyType::Int),
        _ => None,
    }
}

/// One entity's alteration as the request has it: entity types by wire name (the last of a
/// repeated type wins, as Kafka's entity map does), and per key a value or `None` (remove).
#[derive(Debug, Clone)]
pub struct Alteration {
    pub entity: Vec<(String, Option<String>)>,
    pub ops: Vec<(String, Option<f64>)>,
}

/// The answer for one entity of an alteration: its entity as named, and `Err(message)` for
/// Kafka's INVALID_REQUEST.
pub type AlterResult = (Vec<(String, Option<String>)>, Result<(), Refusal>);

/// Why an alteration or a describe filter was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refusal {
    /// Kafka's INVALID_REQUEST, with its message.
    #[error("{0}")]
    Invalid(String),
    /// Kafka's UNSUPPORTED_VERSION (an unknown entity type in a describe filter).
    #[error("{0}")]
    Unsupported(String),
    /// The quotas could not be stored; nothing of the request was applied.
    #[error("{0}")]
    Storage(String),
}

/// One component of a DescribeClientQuotas filter.
#[derive(Debug, Clone)]
pub struct FilterComponent {
    pub entity_type: String,
    /// 0 EXACT, 1 DEFAULT, 2 SPECIFIED (any name).
    pub match_type: i8,
    pub name: Option<String>,
}

/// Why the quotas file cannot be loaded.
pub type QuotaStoreError = crate::atomic_file::FileError;

/// The broker's client quotas, persisted in the data directory.
pub struct ClientQuotas {
    path: PathBuf,
    /// Read on every produce and fetch (by [`ClientQuotas::limit`]); written rarely. Changes
    /// are serialized by `write_lock`, held across the file write.
    current: RwLock<BTreeMap<Entity, Values>>,
    write_lock: parking_lot::Mutex<()>,
}

impl ClientQuotas {
    /// Loads `data_dir`'s file (none yet: no quotas). Blocks.
    ///
    /// # Errors
    /// An unreadable or malformed file.
    pub fn load(data_dir: &Path) -> Result<ClientQuotas, QuotaStoreError> {
        let path = data_dir.join(FILE_NAME);
        let current = match crate::atomic_file::read_optional(&path)? {
            Some(text) => parse(&path, &text)?,
            None => BTreeMap::new(),
        };
        Ok(ClientQuotas::with(path, current))
    }

    /// No quotas, stored at `data_dir` once some are set (for a state built before load).
    pub fn empty(data_dir: &Path) -> ClientQuotas {
        ClientQuotas::with(data_dir.join(FILE_NAME), BTreeMap::new())
    }

    fn with(path: PathBuf, current: BTreeMap<Entity, Values>) -> ClientQuotas {
        ClientQuotas {
            path,
            current: RwLock::new(current),
            write_lock: parking_lot::Mutex::new(()),
        }
    }

    /// Whether any quota is set (the produce and fetch paths skip all accounting when not).
    pub fn is_empty(&self) -> bool {
        self.current.read().is_empty()
    }

    /// The `key` quota that applies to `user` with `client_id`, with Kafka's precedence
    /// (`DefaultQuotaCallback.quotaLimit` over the entity `quotaMetricTags` picks):
    /// user+client, user+default client, user, default user+client, default user+default
    /// client, default user, client, default client. Also returns the entity that matched,
    /// whose users/clients share one rate (Kafka's metric tags).
    pub fn limit(&self, user: &str, client_id: &str, key: &str) -> Option<(f64, Entity)> {
        let quotas = self.current.read();
        if quotas.is_empty() {
            // The common case, on every produce and fetch: no allocation.
            return None;
        }
        let u = || Some(user.to_string());
        let c = || Some(client_id.to_string());
        let candidates: [Vec<(EntityType, Option<String>)>; 8] = [
            vec![(EntityType::User, u()), (EntityType::ClientId, c())],
            vec![(EntityType::User, u()), (EntityType::ClientId, None)],
            vec![(EntityType::User, u())],
            vec![(EntityType::User, None), (EntityType::ClientId, c())],
            vec![(EntityType::User, None), (EntityType::ClientId, None)],
            vec![(EntityType::User, None)],
            vec![(EntityType::ClientId, c())],
            vec![(EntityType::ClientId, None)],
        ];
        candidates.into_iter().find_map(|candidate| {
            let entity: Entity = candidate.into_iter().collect();
            let value = *quotas.get(&entity)?.get(key)?;
            // A default entity's rate is kept per user/client, as Kafka's tags name them.
            let tags = entity
                .keys()
                .map(|t| {
                    let name = if *t == EntityType::User { u() } else { c() };
                    (*t, name)
                })
                .collect();
            Some((value, tags))
        })
    }

    /// Applies a request's alterations, as Kafka's controller does: each entity is checked
    /// on its own; the valid ones are applied (unless `validate_only`) and written once.
    /// `unresolvable` holds the IP entity names that are neither addresses nor resolvable
    /// host names (the caller resolves, off this lock). Blocks.
    pub fn alter(
        &self,
        alterations: &[Alteration],
        validate_only: bool,
        unresolvable: &HashSet<String>,
    ) -> Vec<AlterResult> {
        let _writer = self.write_lock.lock();
        let mut next = self.current.read().clone();
        // Keyed as Kafka's `ClientQuotaEntity` is: the request's types and names, as a map.
        let mut results: Vec<(BTreeMap<String, Option<String>>, AlterResult)> = Vec::new();
        let mut changed: Vec<usize> = Vec::new();
        for alteration in alterations {
            let entity: BTreeMap<String, Option<String>> =
                alteration.entity.iter().cloned().collect();
            if let Some(done) = results.iter_mut().find(|(e, _)| *e == entity) {
                let message = format!("Ignoring duplicate entity {}", describe_names(&entity));
                done.1 .1 = Err(Refusal::Invalid(message));
                continue;
            }
            // A key named twice refuses the entity before any other check, and Kafka's
            // controller then reports it as a duplicate entity.
            let mut keys: HashSet<&str> = HashSet::new();
            let verdict = if alteration.ops.iter().all(|(k, _)| keys.insert(k)) {
                alter_entity(&mut next, alteration, unresolvable)
            } else {
                let message = format!("Ignoring duplicate entity {}", describe_names(&entity));
                Err(Refusal::Invalid(message))
            };
            if verdict.is_ok() {
                changed.push(results.len());
            }
            results.push((entity, (alteration.entity.clone(), verdict)));
        }
        let mut results: Vec<AlterResult> = results.into_iter().map(|(_, r)| r).collect();
        if validate_only || changed.is_empty() {
            return results;
        }
        let stored = if next.len() > ENTITIES_MAX {
            Err(Refusal::Invalid(format!(
                "rill holds quotas for at most {ENTITIES_MAX} entities"
            )))
        } else {
            crate::atomic_file::write(&self.path, render(&next).as_bytes())
                .map(|()| *self.current.write() = next)
                .map_err(|(op, e)| {
                    tracing::error!(path = %self.path.display(), op, error = %e, "cannot write client quotas");
                    Refusal::Storage(format!("cannot store the quotas: {op}: {e}"))
                })
        };
        if let Err(refusal) = stored {
            for i in changed {
                results[i].1 = Err(refusal.clone());
            }
        }
        results
    }

    /// The entities a DescribeClientQuotas filter matches, with their values.
    ///
    /// # Errors
    /// Kafka's refusals of a malformed filter.
    pub fn describe(
        &self,
        components: &[FilterComponent],
        strict: bool,
    ) -> Result<Vec<(Entity, Values)>, Refusal> {
        let (exact, any) = filter_of(components)?;
        let quotas = self.current.read();
        Ok(quotas
            .iter()
            .filter(|(entity, _)| matches(entity, &exact, &any, strict))
            .map(|(e, v)| (e.clone(), v.clone()))
            .collect())
    }
}

/// Applies one entity's alteration to `quotas`, or refuses it leaving `quotas` as it was.
fn alter_entity(
    quotas: &mut BTreeMap<Entity, Values>,
    alteration: &Alteration,
    unresolvable: &HashSet<String>,
) -> Result<(), Refusal> {
    let invalid = |m: String| Err(Refusal::Invalid(m));
    let mut entity = Entity::new();
    if alteration.entity.is_empty() {
        return invalid("Invalid empty client quota entity".into());
    }
    for (type_name, name) in &alteration.entity {
        let Some(t) = EntityType::from_name(type_name) else {
            return invalid(format!("Unhandled client quota entity type: {type_name}"));
        };
        if name.as_deref() == Some("") {
            return invalid(format!("Empty {type_name} not supported"));
        }
        entity.insert(t, name.clone());
    }
    let ip = entity.contains_key(&EntityType::Ip);
    if ip && entity.len() > 1 {
        // Kafka's message, missing space included.
        return invalid("Invalid quota entity combination, IP entity shouldnot be combined with User or ClientId".into());
    }
    if let Some(Some(name)) = entity.get(&EntityType::Ip) {
        if unresolvable.contains(name) {
            return invalid(format!("{name} is not a valid IP or resolvable host."));
        }
    }
    let mut values = quotas.get(&entity).cloned().unwrap_or_default();
    for (key, value) in &alteration.ops {
        match value {
            None => {
                values.remove(key);
            }
            Some(v) => {
                check_value(ip, key, *v).map_err(Refusal::Invalid)?;
                values.insert(key.clone(), *v);
            }
        }
    }
    if values.is_empty() {
        quotas.remove(&entity);
    } else {
        quotas.insert(entity, values);
    }
    Ok(())
}

/// Kafka's `validateQuotaKeyValue`.
fn check_value(ip: bool, key: &str, value: f64) -> Result<(), String> {
    let Some(kind) = key_type(ip, key) else {
        return Err(format!("Invalid configuration key {key}"));
    };
    // NaN is not > 0 either, so it is refused here too.
    if value.is_nan() || value <= 0.0 {
        return Err(format!("Quota {key} must be greater than 0"));
    }
    let max = match kind {
        KeyType::Double => return Ok(()),
        KeyType::Int => f64::from(i32::MAX),
        KeyType::Long => i64::MAX as f64,
    };
    if value > max {
        let name = if kind == KeyType::Int {
            "an INT"
        } else {
            "a LONG"
        };
        return Err(format!("Proposed value for {key} is too large for {name}."));
    }
    if (value % 1.0).abs() > 1e-6 {
        return Err(format!("{key} cannot be a fractional value."));
    }
    Ok(())
}

/// An entity as Kafka's `ClientQuotaEntity.toString` prints it.
fn describe_names(entity: &BTreeMap<String, Option<String>>) -> String {
    let parts: Vec<String> = entity
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("null")))
        .collect();
    format!("ClientQuotaEntity(entries={{{}}})", parts.join(", "))
}

type ExactMatch = HashMap<EntityType, Option<String>>;

/// Kafka's `ClientQuotasImage.describe` checks of a filter: exact names (or defaults) by type,
/// and the types that must merely be present.
fn filter_of(components: &[FilterComponent]) -> Result<(ExactMatch, HashSet<EntityType>), Refusal> {
    let invalid = |m: String| Err(Refusal::Invalid(m));
    let mut exact = ExactMatch::new();
    let mut any: HashSet<EntityType> = HashSet::new();
    let mut named: HashSet<&str> = HashSet::new();
    for c in components {
        let type_name = c.entity_type.as_str();
        if type_name.is_empty() {
            return invalid("Invalid empty entity type.".into());
        }
        if !named.insert(type_name) {
            return invalid(format!(
                "Entity type {type_name} cannot appear more than once in the filter."
            ));
        }
        let Some(t) = EntityType::from_name(type_name) else {
            return Err(Refusal::Unsupported(format!(
                "Unsupported entity type {type_name}"
            )));
        };
        match (c.match_type, &c.name) {
            (0, None) => {
                return invalid(
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                )
            }
            (0, Some(name)) => {
                exact.insert(t, Some(name.clone()));
            }
            (1, Some(_)) => {
                return invalid(
                    "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                        .into(),
                )
            }
            (1, None) => {
                exact.insert(t, None);
            }
            (2, Some(_)) => {
                return invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                        .into(),
                )
            }
            (2, None) => {
                any.insert(t);
            }
            (other, _) => return invalid(format!("Unknown match type {other}")),
        }
    }
    let has = |t| exact.contains_key(&t) || any.contains(&t);
    if has(EntityType::Ip) && (has(EntityType::User) || has(EntityType::ClientId)) {
        return invalid("Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into());
    }
    Ok((exact, any))
}

fn matches(entity: &Entity, exact: &ExactMatch, any: &HashSet<EntityType>, strict: bool) -> bool {
    if strict && entity.len() != exact.len() + any.len() {
        return false;
    }
    exact.iter().all(|(t, name)| entity.get(t) == Some(name))
        && any.iter().all(|t| entity.contains_key(t))
}

/// Whether `name` is an IP address literal; other IP entity names must resolve as hosts.
pub fn is_ip_literal(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
}

fn render(quotas: &BTreeMap<Entity, Values>) -> String {
    let mut text = String::from("# rill client quotas; rewritten by the broker\n");
    for (entity, values) in quotas {
        let field = |t| match entity.get(&t) {
            None => ".".to_string(),
            Some(None) => "-".to_string(),
            Some(Some(name)) => escape(name),
        };
        let names = format!(
            "{} {} {}",
            field(EntityType::User),
            field(EntityType::ClientId),
            field(EntityType::Ip)
        );
        for (key, value) in values {
            // `{:?}` writes an f64 so that it parses back to the same value.
            text.push_str(&format!("{names} {} {value:?}\n", escape(key)));
        }
    }
    text
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<Entity, Values>, QuotaStoreError> {
    let mut out: BTreeMap<Entity, Values> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let error = |reason: &str| QuotaStoreError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = line.split(' ').collect();
        let [user, client, ip, key, value] = parts[..] else {
            return Err(error("expected: user client-id ip key value"));
        };
        let mut entity = Entity::new();
        for (t, field) in [
            (EntityType::User, user),
            (EntityType::ClientId, client),
            (EntityType::Ip, ip),
        ] {
            match field {
                "." => {}
                "-" => {
                    entity.insert(t, None);
                }
                name => {
                    let name = unescape(name).ok_or_else(|| error("bad escape"))?;
                    entity.insert(t, Some(name));
                }
            }
        }
        let key = unescape(key).ok_or_else(|| error("bad escape"))?;
        let value: f64 = value.parse().map_err(|_| error("bad value"))?;
        if entity.is_empty()
            || check_value(entity.contains_key(&EntityType::Ip), &key, value).is_err()
        {
            return Err(error("not a valid quota"));
        }
        if !out.contains_key(&entity) && out.len() >= ENTITIES_MAX {
            return Err(error("too many entities"));
        }
        out.entry(entity).or_default().insert(key, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alteration(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> Alteration {
        Alteration {
            entity: entity
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect(),
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn refusal(r: &AlterResult) -> String {
        match &r.1 {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refuses_what_kafka_refuses() {
        let dir = tempfile::tempdir().expect("dir");
        let q = ClientQuotas::load(dir.path()).expect("load");
        let none = HashSet::from(["nowhere.invalid".to_string()]);
        let cases: &[(Alteration, &str)] = &[
            (alteration(&[], &[(PRODUCER_BYTE_RATE, Some(1.0))]), "Invalid empty client quota entity"),
            (alteration(&[("group", Some("g"))], &[]), "Unhandled client quota entity type: group"),
            (alteration(&[("user", Some(""))], &[]), "Empty user not supported"),
            (
                alteration(&[("user", Some("u")), ("ip", Some("1.2.3.4"))], &[]),
                "Invalid quota entity combination, IP entity shouldnot be combined with User or ClientId",
            ),
            (alteration(&[("ip", Some("nowhere.invalid"))], &[]), "nowhere.invalid is not a valid IP or resolvable host."),
            (alteration(&[("user", Some("u"))], &[("bogus", Some(1.0))]), "Invalid configuration key bogus"),
            (alteration(&[("ip", None)], &[(PRODUCER_BYTE_RATE, Some(1.0))]), "Invalid configuration key producer_byte_rate"),
            (alteration(&[("user", Some("u"))], &[(CONNECTION_CREATION_RATE, Some(1.0))]), "Invalid configuration key connection_creation_rate"),
            (alteration(&[("user", Some("u"))], &[(PRODUCER_BYTE_RATE, Some(-1.0))]), "Quota producer_byte_rate must be greater than 0"),
            (alteration(&[("user", Some("u"))], &[(CONSUMER_BYTE_RATE, Some(1.5))]), "consumer_byte_rate cannot be a fractional value."),
            (alteration(&[("ip", None)], &[(CONNECTION_CREATION_RATE, Some(3e9))]), "Proposed value for connection_creation_rate is too large for an INT."),
            (
                alteration(&[("user", Some("u"))], &[(PRODUCER_BYTE_RATE, Some(1.0)), (PRODUCER_BYTE_RATE, None)]),
                "Ignoring duplicate entity ClientQuotaEntity(entries={user=u})",
            ),
            (
                // The repeated key is found before the entity's unknown type.
                alteration(&[("group", Some("g"))], &[(PRODUCER_BYTE_RATE, Some(1.0)), (PRODUCER_BYTE_RATE, None)]),
                "Ignoring duplicate entity ClientQuotaEntity(entries={group=g})",
            ),
        ];
        for (a, want) in cases {
            let results = q.alter(std::slice::from_ref(a), false, &none);
            assert_eq!(refusal(&results[0]), *want, "{a:?}");
        }
        assert!(q.is_empty(), "nothing refused was stored");
        assert!(!dir.path().join(FILE_NAME).exists());
        // A fractional DOUBLE key is fine; validate_only stores nothing.
        let ok = alteration(&[("user", None)], &[(REQUEST_PERCENTAGE, Some(12.5))]);
        assert_eq!(
            refusal(&q.alter(std::slice::from_ref(&ok), true, &none)[0]),
            "ok"
        );
        assert!(q.is_empty());
        assert_eq!(refusal(&q.alter(&[ok], false, &none)[0]), "ok");
        assert!(!q.is_empty());
    }

    #[test]
    fn a_repeated_entity_is_refused_and_the_others_applied() {
        let dir = tempfile::tempdir().expect("dir");
        let q = ClientQuotas::load(dir.path()).expect("load");
        let a = alteration(
            &[("client-id", Some("c"))],
            &[(PRODUCER_BYTE_RATE, Some(10.0))],
        );
        let b = alteration(&[("user", Some("u"))], &[(CONSUMER_BYTE_RATE, Some(20.0))]);
        let results = q.alter(&[a.clone(), b, a], false, &HashSet::new());
        assert_eq!(results.len(), 2);
        assert_eq!(
            refusal(&results[0]),
            "Ignoring duplicate entity ClientQuotaEntity(entries={client-id=c})"
        );
        assert_eq!(refusal(&results[1]), "ok");
    }

    #[test]
    fn precedence_is_kafkas() {
        let dir = tempfile::tempdir().expect("dir");
        let q = ClientQuotas::load(dir.path()).expect("load");
        let set = |entity: &[(&str, Option<&str>)], v: f64| {
            let r = q.alter(
                &[alteration(entity, &[(PRODUCER_BYTE_RATE, Some(v))])],
                false,
                &HashSet::new(),
            );
            assert_eq!(refusal(&r[0]), "ok");
        };
        let limit = |u: &str, c: &str| q.limit(u, c, PRODUCER_BYTE_RATE).map(|(v, _)| v);
        assert_eq!(limit("u", "c"), None);
        set(&[("client-id", None)], 8.0);
        assert_eq!(limit("u", "c"), Some(8.0));
        set(&[("client-id", Some("c"))], 7.0);
        assert_eq!(limit("u", "c"), Some(7.0));
        assert_eq!(limit("u", "other"), Some(8.0));
        set(&[("user", None)], 6.0);
        assert_eq!(
            limit("u", "c"),
            Some(6.0),
            "a user default beats a client id"
        );
        set(&[("user", None), ("client-id", None)], 5.0);
        set(&[("user", None), ("client-id", Some("c"))], 4.0);
        assert_eq!(limit("u", "c"), Some(4.0));
        assert_eq!(limit("u", "x"), Some(5.0));
        set(&[("user", Some("u"))], 3.0);
        assert_eq!(limit("u", "c"), Some(3.0));
        set(&[("user", Some("u")), ("client-id", None)], 2.0);
        set(&[("user", Some("u")), ("client-id", Some("c"))], 1.0);
        assert_eq!(limit("u", "c"), Some(1.0));
        assert_eq!(limit("u", "x"), Some(2.0));
        // A default entity's rate is kept per user: its tags name the user and client.
        let (_, tags) = q.limit("v", "x", PRODUCER_BYTE_RATE).expect("default");
        assert_eq!(tags.get(&EntityType::User), Some(&Some("v".to_string())));
        assert_eq!(q.limit("u", "c", CONSUMER_BYTE_RATE), None);
    }

    #[test]
    fn describe_filters_as_kafka() {
        let dir = tempfile::tempdir().expect("dir");
        let q = ClientQuotas::load(dir.path()).expect("load");
        for entity in [
            vec![("user", Some("u"))],
            vec![("user", None)],
            vec![("user", Some("u")), ("client-id", Some("c"))],
            vec![("client-id", Some("c"))],
            vec![("ip", Some("10.0.0.1"))],
        ] {
            let key = if entity[0].0 == "ip" {
                CONNECTION_CREATION_RATE
            } else {
                CONSUMER_BYTE_RATE
            };
            let r = q.alter(
                &[alteration(&entity, &[(key, Some(100.0))])],
                false,
                &HashSet::new(),
            );
            assert_eq!(refusal(&r[0]), "ok");
        }
        let c = |t: &str, m: i8, n: Option<&str>| FilterComponent {
            entity_type: t.into(),
            match_type: m,
            name: n.map(str::to_string),
        };
        let count = |f: &[FilterComponent], strict| q.describe(f, strict).map(|v| v.len());
        assert_eq!(count(&[], false), Ok(5));
        assert_eq!(count(&[], true), Ok(0));
        assert_eq!(count(&[c("user", 0, Some("u"))], false), Ok(2));
        assert_eq!(count(&[c("user", 0, Some("u"))], true), Ok(1));
        assert_eq!(count(&[c("user", 1, None)], false), Ok(1));
        assert_eq!(count(&[c("user", 2, None)], false), Ok(3));
        assert_eq!(
            count(&[c("user", 2, None), c("client-id", 2, None)], true),
            Ok(1)
        );
        assert_eq!(count(&[c("ip", 2, None)], true), Ok(1));
        assert!(matches!(
            q.describe(&[c("group", 2, None)], false),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            q.describe(&[c("user", 0, None)], false),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            q.describe(&[c("user", 1, Some("x"))], false),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            q.describe(&[c("user", 2, None), c("user", 1, None)], false),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            q.describe(&[c("ip", 2, None), c("user", 1, None)], false),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            q.describe(&[c("user", 7, None)], false),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn survives_a_reload_and_removal_empties_an_entity() {
        let dir = tempfile::tempdir().expect("dir");
        let q = ClientQuotas::load(dir.path()).expect("load");
        let odd = "a b%\u{e9}";
        let set = alteration(
            &[("user", Some(odd)), ("client-id", None)],
            &[
                (PRODUCER_BYTE_RATE, Some(1024.0)),
                (REQUEST_PERCENTAGE, Some(0.1)),
            ],
        );
        assert_eq!(refusal(&q.alter(&[set], false, &HashSet::new())[0]), "ok");
        let reloaded = ClientQuotas::load(dir.path()).expect("reload");
        let all = reloaded.describe(&[], false).expect("describe");
        assert_eq!(all, q.describe(&[], false).expect("describe"));
        assert_eq!(all[0].1.get(REQUEST_PERCENTAGE), Some(&0.1));
        let remove = alteration(
            &[("user", Some(odd)), ("client-id", None)],
            &[(PRODUCER_BYTE_RATE, None), (REQUEST_PERCENTAGE, None)],
        );
        assert_eq!(
            refusal(&reloaded.alter(&[remove], false, &HashSet::new())[0]),
            "ok"
        );
        assert!(ClientQuotas::load(dir.path()).expect("reload").is_empty());
    }
}
