//! The KIP-848 consumer group APIs on the wire: ConsumerGroupHeartbeat (68) and
//! ConsumerGroupDescribe (69). Thin: decode, call the [`GroupCoordinator`], encode. The
//! topic registry is what the coordinator's assignors see ([`RegistryTopics`]).

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self as m, TopicName};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use regex::Regex;

use crate::coordinator::group::consumer_records::Assignment;
use crate::coordinator::group::TopicLookup;
use crate::coordinator::group::{self as group_coordinator, ConsumerHeartbeat, GroupCoordinator};
use crate::group_api::Client;
use crate::state::BrokerState;
use crate::topics::{is_internal, TopicRegistry};

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Compiled subscription patterns, shared by all groups; cleared when it reaches its bound.
static PATTERNS: Mutex<Option<HashMap<String, Option<Regex>>>> = Mutex::new(None);
const PATTERNS_MAX: usize = 1_024;
/// A compiled pattern's size bound (the `regex` crate's NFA size limit), against patterns
/// that would take megabytes.
const PATTERN_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// `pattern` compiled to match whole topic names, as RE2/J's `matches()` in Kafka; `None`
/// if it does not compile (or is too big). Differences from RE2/J: the `regex` crate's
/// `\w`, `\d`, `\s` and `\b` are Unicode-aware (RE2/J's are ASCII) and it refuses `\Q...\E`;
/// both refuse backreferences and lookaround and match in linear time.
fn compiled(pattern: &str) -> Option<Regex> {
    let mut cache = PATTERNS.lock();
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(r) = cache.get(pattern) {
        return r.clone();
    }
    if cache.len() >= PATTERNS_MAX {
        cache.clear();
    }
    let r = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE_LIMIT_BYTES)
        .build()
        .ok();
    cache.insert(pattern.to_string(), r.clone());
    r
}

/// What each subscription pattern matched, at a registry generation: a group with a regex
/// subscription heartbeats every few seconds per member, and without this every heartbeat
/// would run the pattern over every topic name. Shared by all groups (and, in one test
/// process, all registries: generations are unique across them); cleared at its bound.
static MATCHES: Mutex<Option<HashMap<String, MatchesAt>>> = Mutex::new(None);
/// The registry generation a pattern was matched at, and the names it matched.
type MatchesAt = (u64, Arc<[String]>);
const MATCHES_MAX: usize = 1_024;

/// The names `pattern` matches in the registry at `generation`: from the cache when it
/// holds this pattern at this generation, else computed by `scan` (which returns the
/// generation it read, maybe newer) and cached.
fn matches_at(
    pattern: &str,
    generation: u64,
    scan: impl FnOnce() -> (u64, Vec<String>),
) -> Arc<[String]> {
    if let Some((g, names)) = MATCHES.lock().get_or_insert_with(HashMap::new).get(pattern) {
        if *g == generation {
            return Arc::clone(names);
        }
    }
    // Scanned without the lock: a slow pattern over many names holds up no other group.
    let (scanned_at, names) = scan();
    let names: Arc<[String]> = names.into();
    let mut cache = MATCHES.lock();
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= MATCHES_MAX && !cache.contains_key(pattern) {
        cache.clear();
    }
    cache.insert(pattern.to_string(), (scanned_at, Arc::clone(&names)));
    names
}

/// The topic registry as consumer groups see it (internal topics are never subscribed).
pub struct RegistryTopics<'a>(pub &'a TopicRegistry);

impl TopicLookup for RegistryTopics<'_> {
    fn get(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        if is_internal(name) {
            return None;
        }
        self.0.get(name).map(|t| (t.id, t.partitions))
    }
    fn is_valid_pattern(&self, pattern: &str) -> bool {
        compiled(pattern).is_some()
    }
    fn matching(&self, pattern: &str) -> Arc<[String]> {
        matches_at(pattern, self.0.generation(), || {
            let (generation, names) = self.0.names_at_generation();
            let Some(re) = compiled(pattern) else {
                return (generation, Vec::new());
            };
            let names = names
                .into_iter()
                .filter(|n| !is_internal(n) && re.is_match(n))
                .collect();
            (generation, names)
        })
    }
    fn name_of(&self, id: &uuid::Uuid) -> Option<String> {
        self.0.get_by_id(id).map(|t| t.name.clone())
    }
}

fn coordinator(state: &BrokerState) -> &GroupCoordinator {
    &state.groups
}

fn assignment_in(tps: Vec<m::consumer_group_heartbeat_request::TopicPartitions>) -> Assignment {
    let mut a = Assignment::new();
    for t in tps {
        a.entry(t.topic_id).or_default().extend(t.partitions);
    }
    a
}

pub async fn heartbeat(
    state: &Arc<BrokerState>,
    client: &Client,
    r: m::ConsumerGroupHeartbeatRequest,
) -> m::ConsumerGroupHeartbeatResponse {
    let request = ConsumerHeartbeat {
        group_id: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        member_epoch: r.member_epoch,
        instance_id: r.instance_id.map(|i| i.to_string()),
        rack_id: r.rack_id.map(|i| i.to_string()),
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        subscribed_topic_names: r
            .subscribed_topic_names
            .map(|ns| ns.into_iter().map(|n| n.to_string()).collect()),
        subscribed_topic_regex: r.subscribed_topic_regex.map(|re| re.to_string()),
        server_assignor: r.server_assignor.map(|a| a.to_string()),
        owned: r.topic_partitions.map(assignment_in),
        client_id: client.client_id.clone(),
        client_host: client.host.clone(),
    };
    let member_id = request.member_id.clone();
    let beat = state
        .coordinate("consumer group heartbeat", move |state| {
            coordinator(state).consumer_heartbeat(request, &RegistryTopics(&state.topics))
        })
        .await;
    let (answer, pending) = match beat {
        Ok(beat) => beat,
        Err(e) => {
            return m::ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e)
                .with_member_id(Some(s(member_id)))
                .with_member_epoch(-1)
        }
    };
    let mut error = answer.error;
    if let Err(e) = group_coordinator::durable(pending).await {
        error = e;
    }
    if error != 0 {
        return m::ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error)
            .with_error_message(answer.message.map(s))
            .with_member_epoch(-1);
    }
    m::ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(s(answer.member_id)))
        .with_member_epoch(answer.member_epoch)
        .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
        .with_assignment(answer.assignment.map(|a| {
            m::consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(t, ps)| {
                        m::consumer_group_heartbeat_response::TopicPartitions::default()
                            .with_topic_id(t)
                            .with_partitions(ps.into_iter().collect())
                    })
                    .collect(),
            )
        }))
}

fn described(
    state: &BrokerState,
    a: &Assignment,
) -> m::consumer_group_describe_response::Assignment {
    m::consumer_group_describe_response::Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(t, ps)| {
                let name = state
                    .topics
                    .get_by_id(t)
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                m::consumer_group_describe_response::TopicPartitions::default()
                    .with_topic_id(*t)
                    .with_topic_name(TopicName(s(name)))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

pub fn describe(
    state: &BrokerState,
    r: m::ConsumerGroupDescribeRequest,
) -> m::ConsumerGroupDescribeResponse {
    let groups = r
        .group_ids
        .into_iter()
        .map(|id| {
            let base = m::consumer_group_describe_response::DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(if r.include_authorized_operations {
                    state.authorized_operations(crate::authorizer::ResourceType::Group, &id)
                } else {
                    i32::MIN
                });
            if let Err(e) = GroupCoordinator::validate_group_id(&id) {
                return base.with_error_code(e);
            }
            let found = coordinator(state).with_consumer_group(&id, |g| {
                base.clone()
                    .with_group_state(s(g.state().name()))
                    .with_group_epoch(g.epoch)
                    .with_assignment_epoch(g.target_epoch)
                    .with_assignor_name(s(
                        g.assignor(&coordinator(state).config().consumer_assignors)
                    ))
                    .with_members(
                        g.members
                            .values()
                            .map(|mem| {
                                m::consumer_group_describe_response::Member::default()
                                    .with_member_id(s(mem.id.clone()))
                                    .with_instance_id(mem.meta.instance_id.clone().map(s))
                                    .with_rack_id(mem.meta.rack_id.clone().map(s))
                                    .with_member_epoch(mem.current.member_epoch)
                                    .with_client_id(s(mem.meta.client_id.clone()))
                                    .with_client_host(s(mem.meta.client_host.clone()))
                                    .with_subscribed_topic_names(
                                        mem.meta
                                            .subscribed_topic_names
                                            .iter()
                                            .map(|n| TopicName(s(n.clone())))
                                            .collect(),
                                    )
                                    .with_subscribed_topic_regex(
                                        mem.meta.subscribed_topic_regex.clone().map(s),
                                    )
                                    .with_assignment(described(state, &mem.current.assigned))
                                    .with_target_assignment(described(
                                        state,
                                        g.target.get(&mem.id).unwrap_or(&Assignment::new()),
                                    ))
                                    // 0: a classic-protocol member (a mixed group), 1: a
                                    // member of the consumer protocol.
                                    .with_member_type(if mem.meta.classic.is_some() {
                                        0
                                    } else {
                                        1
                                    })
                            })
                            .collect(),
                    )
            });
            found.unwrap_or_else(|| {
                base.with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s(format!("Group {} not found.", id.as_str()))))
            })
        })
        .collect();
    m::ConsumerGroupDescribeResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matches_are_scanned_once_per_generation() {
        // A pattern no other test uses, so the shared cache holds only this test's entry.
        let pattern = "cache-test-[a-z]+";
        let scans = std::cell::Cell::new(0);
        let scan = |generation: u64, names: &[&str]| {
            let scans = &scans;
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            move || {
                scans.set(scans.get() + 1);
                (generation, names)
            }
        };
        let first = matches_at(pattern, 7, scan(7, &["cache-test-a"]));
        let again = matches_at(pattern, 7, scan(7, &["stale"]));
        assert_eq!(scans.get(), 1, "same generation: served from the cache");
        assert_eq!(&*again, &*first);
        // A topic created: a new generation, a new scan.
        let next = matches_at(pattern, 8, scan(8, &["cache-test-a", "cache-test-b"]));
        assert_eq!(scans.get(), 2);
        assert_eq!(next.len(), 2);
        // A scan that read a newer generation than asked caches under what it read.
        matches_at(pattern, 9, scan(10, &["cache-test-c"]));
        let at_10 = matches_at(pattern, 10, scan(10, &["never"]));
        assert_eq!(scans.get(), 3);
        assert_eq!(&*at_10, &["cache-test-c".to_string()]);
    }
}
