//! The KIP-932 share group APIs on the wire: ShareGroupHeartbeat (76), ShareGroupDescribe
//! (77), and share groups in ListGroups. Thin: decode, call the share coordinator
//! (`coordinator::share`), encode.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self as m, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::group::ListedGroup;
use crate::coordinator::runtime::RuntimeError;
use crate::coordinator::share::group::{Assignment, Heartbeat, HeartbeatError};
use crate::error::runtime_error_code;
use crate::group_api::Client;
use crate::state::BrokerState;
use crate::topics::is_internal;

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Every partition of the subscribed topics that exist (every member of a share group may
/// consume every partition).
fn assign(state: &BrokerState, topics: &BTreeSet<String>) -> Assignment {
    topics
        .iter()
        .filter(|t| !is_internal(t))
        .filter_map(|t| state.topics.get(t))
        .map(|t| (t.id, (0..t.partitions).collect()))
        .collect()
}

fn wire_assignment(a: &Assignment) -> m::share_group_heartbeat_response::Assignment {
    m::share_group_heartbeat_response::Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(id, parts)| {
                m::share_group_heartbeat_response::TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_partitions(parts.iter().copied().collect())
            })
            .collect(),
    )
}

/// Whether `group_id` is a classic or consumer group (a share group may not take its id).
fn other_group_exists(state: &BrokerState, group_id: &str) -> bool {
    state.groups.list().iter().any(|g| g.id == group_id)
}

/// ShareGroupHeartbeat v1. A join that creates the group records it (answered once the
/// record is durable), so the group outlives its members and a restart.
pub async fn heartbeat(
    state: &Arc<BrokerState>,
    client: &Client,
    r: m::ShareGroupHeartbeatRequest,
) -> m::ShareGroupHeartbeatResponse {
    let error = |code: i16, message: &str| {
        m::ShareGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message)))
    };
    let group_id = r.group_id.0.to_string();
    if group_id.is_empty() {
        return error(
            ResponseError::InvalidRequest.code(),
            "GroupId can't be empty.",
        );
    }
    if other_group_exists(state, &group_id) {
        return error(
            ResponseError::GroupIdNotFound.code(),
            &format!("Group {group_id} is not a share group."),
        );
    }
    if r.subscribed_topic_names
        .as_ref()
        .is_some_and(|t| t.len() > 10_000)
    {
        return error(ResponseError::InvalidRequest.code(), "too many topics");
    }
    let member_id = r.member_id.to_string();
    let hb = Heartbeat {
        member_id: &member_id,
        member_epoch: r.member_epoch,
        rack_id: r.rack_id.as_ref().map(|r| r.to_string()),
        subscribed: r
            .subscribed_topic_names
            .as_ref()
            .map(|t| t.iter().map(|n| n.0.to_string()).collect()),
        client_id: &client.client_id,
        client_host: &client.host,
    };
    let now = crate::broker::now_ms();
    let settings = crate::share_settings::share_settings(state, &group_id);
    match state
        .shares
        .heartbeat(&group_id, hb, now, settings.session_timeout_ms, |t| {
            assign(state, t)
        }) {
        Ok(ok) => {
            if ok.member_epoch > 0 && state.shares.recorded_epoch(&group_id).is_none() {
                if let Err((code, message)) = record(state, &group_id, ok.member_epoch).await {
                    return error(code, &message);
                }
            }
            if ok.member_epoch == -1 {
                let session = state
                    .shares
                    .sessions()
                    .lock()
                    .remove_member(&group_id, &member_id);
                let ended = session.map(|session| (group_id.clone(), member_id.clone(), session));
                crate::share_fetch::release_ended(
                    state,
                    "share group leave",
                    ended.into_iter().collect(),
                )
                .await;
            }
            m::ShareGroupHeartbeatResponse::default()
                .with_member_id(Some(s(member_id)))
                .with_member_epoch(ok.member_epoch)
                .with_heartbeat_interval_ms(settings.heartbeat_interval_ms)
                .with_assignment(ok.assignment.as_ref().map(wire_assignment))
        }
        Err(HeartbeatError::UnknownMember) => error(
            ResponseError::UnknownMemberId.code(),
            &format!("Member {member_id} is not a member of group {group_id}."),
        ),
        Err(HeartbeatError::FencedEpoch) => error(
            ResponseError::FencedMemberEpoch.code(),
            "The share group member has a smaller or larger member epoch than the group.",
        ),
        Err(HeartbeatError::Invalid(why)) => error(ResponseError::InvalidRequest.code(), why),
        Err(HeartbeatError::GroupFull) => error(
            ResponseError::GroupMaxSizeReached.code(),
            "The share group has reached its maximum size.",
        ),
    }
}

/// Records that `group_id` exists: the append runs on the I/O pool (it may wait for the disk),
/// then the record is waited for until durable. Errors as the answer's (code, message).
async fn record(
    state: &Arc<BrokerState>,
    group_id: &str,
    group_epoch: i32,
) -> Result<(), (i16, String)> {
    let failed = |e: RuntimeError| (runtime_error_code(&e), e.to_string());
    let group = group_id.to_string();
    let written = state
        .coordinate("share group record", move |state| {
            state.shares.record_group(&group, group_epoch)
        })
        .await
        .map_err(|code| (code, "The coordinator is not available.".to_string()))?
        .map_err(failed)?;
    if let Some(written) = written {
        written.committed().await.map_err(failed)?;
    }
    Ok(())
}

/// ShareGroupDescribe v1.
pub fn describe(
    state: &BrokerState,
    r: m::ShareGroupDescribeRequest,
) -> m::ShareGroupDescribeResponse {
    let groups = r
        .group_ids
        .iter()
        .map(|id| {
            let group_id = id.0.to_string();
            let base = m::share_group_describe_response::DescribedGroup::default()
                .with_group_id(id.clone());
            let base = if r.include_authorized_operations {
                base.with_authorized_operations(
                    state.authorized_operations(crate::authorizer::ResourceType::Group, &group_id),
                )
            } else {
                base.with_authorized_operations(i32::MIN)
            };
            if !state.shares.is_share_group(&group_id) {
                return base
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s(format!("Group {group_id} not found."))))
                    .with_group_state(s("Dead"));
            }
            let group = state
                .shares
                .group_or_recorded(&group_id)
                .unwrap_or_default();
            base.with_group_state(s(group.state_name()))
                .with_group_epoch(group.group_epoch)
                .with_assignment_epoch(group.group_epoch)
                .with_assignor_name(s("simple"))
                .with_members(
                    group
                        .members
                        .values()
                        .map(|mb| {
                            m::share_group_describe_response::Member::default()
                                .with_member_id(s(mb.member_id.clone()))
                                .with_rack_id(mb.rack_id.clone().map(s))
                                .with_member_epoch(mb.member_epoch)
                                .with_client_id(s(mb.client_id.clone()))
                                .with_client_host(s(mb.client_host.clone()))
                                .with_subscribed_topic_names(
                                    mb.subscribed
                                        .iter()
                                        .map(|t| TopicName(s(t.clone())))
                                        .collect(),
                                )
                                .with_assignment(describe_assignment(state, &mb.assignment))
                        })
                        .collect(),
                )
        })
        .collect();
    m::ShareGroupDescribeResponse::default().with_groups(groups)
}

fn describe_assignment(
    state: &BrokerState,
    a: &Assignment,
) -> m::share_group_describe_response::Assignment {
    m::share_group_describe_response::Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(id, parts)| {
                let name = state
                    .topics
                    .get_by_id(id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                m::share_group_describe_response::TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(TopicName(s(name)))
                    .with_partitions(parts.iter().copied().collect())
            })
            .collect(),
    )
}

/// Share groups as ListGroups lists them (protocol type and group type `share`).
pub fn listed(state: &BrokerState) -> Vec<ListedGroup> {
    state
        .shares
        .list()
        .into_iter()
        .map(|(id, group_state)| ListedGroup {
            id,
            protocol_type: "share".to_string(),
            state: group_state,
            group_type: "share",
        })
        .collect()
}

/// In-flight and dead-letter counts of a group's live share-partitions, by topic name and
/// partition (for `rill group describe`, through DescribeShareGroupOffsets' companion).
pub fn in_flight(
    state: &BrokerState,
    group_id: &str,
) -> BTreeMap<(String, i32), (i64, usize, usize, u64)> {
    state
        .shares
        .live_partitions()
        .into_iter()
        .filter(|(k, _)| k.group_id == group_id)
        .filter_map(|(k, sp)| {
            let name = state.topics.get_by_id(&k.topic_id)?.name.clone();
            let sp = sp.lock();
            let (in_flight, acquired) = sp.in_flight();
            Some((
                (name, k.partition),
                (sp.start_offset(), in_flight, acquired, sp.dead_letters),
            ))
        })
        .collect()
}
