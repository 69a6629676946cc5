//! The consumer group APIs on the wire: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and
//! OffsetDelete. Each handler turns a request into calls on the [`GroupCoordinator`] and
//! encodes the answer for the request's version (fields a version lacks are left at their
//! defaults, which the encoder requires).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self as m, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use rill_storage::TopicPartition;

use crate::coordinator::group::{
    self as group_coordinator, CommitEntry, GroupCoordinator, GroupState, JoinOutcome, JoinRequest,
    Reply, SyncOutcome,
};
use crate::coordinator::txn::coordinator::TxnCoordinator;
use crate::state::BrokerState;

/// Who sent a request: the header's client id and the peer address, for DescribeGroups.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub client_id: String,
    pub host: String,
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn coordinator(state: &BrokerState) -> &GroupCoordinator {
    &state.groups
}

/// FindCoordinator: a single node coordinates every group. Transaction coordinators are not
/// served yet (COORDINATOR_NOT_AVAILABLE).
pub fn find_coordinator(
    state: &BrokerState,
    version: i16,
    request: m::FindCoordinatorRequest,
) -> m::FindCoordinatorResponse {
    let answer = |key: &StrBytes| {
        let error = match request.key_type {
            0 => GroupCoordinator::validate_group_id(key).err().unwrap_or(0),
            1 => TxnCoordinator::validate_id(key)
                .err()
                .map_or(0, |e| e.code()),
            _ => ResponseError::InvalidRequest.code(),
        };
        let ok = error == 0;
        m::find_coordinator_response::Coordinator::default()
            .with_key(key.clone())
            .with_node_id(m::BrokerId(if ok { state.config.node_id } else { -1 }))
            .with_host(if ok {
                s(state.advertised.host.clone())
            } else {
                s("")
            })
            .with_port(if ok { state.advertised.port } else { -1 })
            .with_error_code(error)
    };
    if version >= 4 {
        return m::FindCoordinatorResponse::default()
            .with_coordinators(request.coordinator_keys.iter().map(answer).collect());
    }
    let c = answer(&request.key);
    let mut response = m::FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 && c.error_code != 0 {
        response = response.with_error_message(Some(s(ResponseError::try_from_code(c.error_code)
            .map_or("error".to_string(), |e| e.to_string()))));
    }
    response
}

pub async fn join_group(
    state: &Arc<BrokerState>,
    version: i16,
    client: &Client,
    r: m::JoinGroupRequest,
) -> m::JoinGroupResponse {
    let req = JoinRequest {
        group_id: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|i| i.to_string()),
        client_id: client.client_id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = req.member_id.clone();
    let joined = state
        .coordinate("join group", move |state| {
            let topics = crate::consumer_group_api::RegistryTopics(&state.topics);
            coordinator(state).join(req, &topics)
        })
        .await;
    let outcome = match joined {
        Err(e) => JoinOutcome::error(e, &member_id),
        Ok(Reply::Now(o)) => o,
        Ok(Reply::Later(rx, pending)) => {
            let outcome = rx.await.unwrap_or_else(|_| {
                JoinOutcome::error(ResponseError::UnknownMemberId.code(), &member_id)
            });
            match group_coordinator::durable(pending).await {
                Ok(()) => outcome,
                Err(e) => JoinOutcome::error(e, &outcome.member_id),
            }
        }
    };
    let mut response = m::JoinGroupResponse::default()
        .with_error_code(outcome.error)
        .with_generation_id(outcome.generation_id)
        .with_protocol_name(outcome.protocol_name.map(s).or(if version >= 7 {
            None
        } else {
            Some(s(""))
        }))
        .with_leader(s(outcome.leader_id))
        .with_member_id(s(outcome.member_id))
        .with_members(
            outcome
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let member = m::join_group_response::JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_metadata(metadata);
                    if version >= 5 {
                        member.with_group_instance_id(instance.map(s))
                    } else {
                        member
                    }
                })
                .collect(),
        );
    if version >= 7 {
        response = response.with_protocol_type(outcome.protocol_type.map(s));
    }
    if version >= 9 {
        response = response.with_skip_assignment(outcome.skip_assignment);
    }
    response
}

pub async fn sync_group(
    state: &Arc<BrokerState>,
    version: i16,
    r: m::SyncGroupRequest,
) -> m::SyncGroupResponse {
    let assignments = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
    let (group_id, generation_id, member_id) = (
        r.group_id.to_string(),
        r.generation_id,
        r.member_id.to_string(),
    );
    let reply = state
        .coordinate("sync group", move |state| {
            coordinator(state).sync(
                &group_id,
                generation_id,
                &member_id,
                instance.as_deref(),
                assignments,
                &crate::consumer_group_api::RegistryTopics(&state.topics),
            )
        })
        .await;
    let outcome = match reply {
        Err(e) => SyncOutcome::error(e),
        Ok(Reply::Now(o)) => o,
        Ok(Reply::Later(rx, pending)) => {
            let outcome = rx
                .await
                .unwrap_or_else(|_| SyncOutcome::error(ResponseError::UnknownMemberId.code()));
            match group_coordinator::durable(pending).await {
                Ok(()) => outcome,
                Err(e) => SyncOutcome::error(e),
            }
        }
    };
    let mut response = m::SyncGroupResponse::default()
        .with_error_code(outcome.error)
        .with_assignment(outcome.assignment);
    if version >= 5 {
        response = response
            .with_protocol_type(outcome.protocol_type.map(s))
            .with_protocol_name(outcome.protocol_name.map(s));
    }
    response
}

/// On the I/O pool: a heartbeat may write (a static member's or a group's change).
pub async fn heartbeat(state: &Arc<BrokerState>, r: m::HeartbeatRequest) -> m::HeartbeatResponse {
    let code = state
        .coordinate("heartbeat", move |state| {
            let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
            coordinator(state).heartbeat(
                &r.group_id,
                r.generation_id,
                &r.member_id,
                instance.as_deref(),
            )
        })
        .await;
    m::HeartbeatResponse::default().with_error_code(code.unwrap_or_else(|e| e))
}

/// On the I/O pool: a leave writes the group's new state.
pub async fn leave_group(
    state: &Arc<BrokerState>,
    version: i16,
    r: m::LeaveGroupRequest,
) -> m::LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    let (group_id, leaving) = (r.group_id.to_string(), members.clone());
    let left = state
        .coordinate("leave group", move |state| {
            coordinator(state).leave(&group_id, &leaving)
        })
        .await
        .and_then(|left| left);
    let left = match left {
        Ok((codes, pending)) => group_coordinator::durable(pending).await.map(|()| codes),
        Err(e) => Err(e),
    };
    match left {
        Err(e) => m::LeaveGroupResponse::default().with_error_code(e),
        Ok(codes) if version >= 3 => m::LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(codes)
                .map(|((id, instance), code)| {
                    m::leave_group_response::MemberResponse::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_error_code(code)
                })
                .collect(),
        ),
        Ok(codes) => {
            m::LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
        }
    }
}

pub async fn offset_commit(
    state: &Arc<BrokerState>,
    r: m::OffsetCommitRequest,
) -> m::OffsetCommitResponse {
    let mut shape: Vec<(TopicName, Vec<i32>)> = Vec::new();
    let mut entries = Vec::new();
    for t in &r.topics {
        shape.push((
            t.name.clone(),
            t.partitions.iter().map(|p| p.partition_index).collect(),
        ));
        for p in &t.partitions {
            entries.push(CommitEntry {
                tp: TopicPartition::new(t.name.to_string(), p.partition_index),
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            });
        }
    }
    let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
    let n = entries.len();
    let (group_id, generation, member_id) = (
        r.group_id.to_string(),
        r.generation_id_or_member_epoch,
        r.member_id.to_string(),
    );
    let committed = state
        .coordinate("offset commit", move |state| {
            let topic_exists =
                |tp: &TopicPartition| state.partition_exists(&tp.topic, tp.partition);
            coordinator(state).commit(
                &group_id,
                generation,
                &member_id,
                instance.as_deref(),
                entries,
                topic_exists,
            )
        })
        .await;
    let (mut codes, pending) = committed.unwrap_or_else(|e| (vec![e; n], None));
    if let Err(e) = group_coordinator::durable(pending).await {
        codes.iter_mut().filter(|c| **c == 0).for_each(|c| *c = e);
    }
    let mut codes = codes.into_iter();
    m::OffsetCommitResponse::default().with_topics(
        shape
            .into_iter()
            .map(|(name, partitions)| {
                m::offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                m::offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(codes.next().unwrap_or(0))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Committed offsets of one group as (topic, [(partition, offset, epoch, metadata, error)]).
type FetchedTopic = (String, Vec<(i32, i64, i32, String, i16)>);

/// `require_stable` (v7+): partitions an open transaction holds offsets of answer
/// UNSTABLE_OFFSET_COMMIT.
fn fetch_group(
    state: &BrokerState,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<FetchedTopic> {
    let wanted: Option<Vec<TopicPartition>> = topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| TopicPartition::new(t.clone(), *p)))
            .collect()
    });
    let found = coordinator(state).fetch_offsets_checked(group, wanted.as_deref(), require_stable);
    let mut out: Vec<FetchedTopic> = Vec::new();
    for (tp, committed, error) in found {
        let entry = match committed {
            Some(c) => (tp.partition, c.offset, c.leader_epoch, c.metadata, error),
            None => (tp.partition, -1, -1, String::new(), error),
        };
        match out.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, ps)) => ps.push(entry),
            None => out.push((tp.topic, vec![entry])),
        }
    }
    out
}

pub fn offset_fetch(
    state: &BrokerState,
    version: i16,
    r: m::OffsetFetchRequest,
) -> m::OffsetFetchResponse {
    let epoch = |e: i32| if version >= 5 { e } else { -1 };
    if version >= 8 {
        let groups = r
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
                let mut error = GroupCoordinator::validate_group_id(&g.group_id).err().unwrap_or(0);
                if error == 0 && version >= 9 {
                    // KIP-848 members name themselves and their epoch.
                    error = coordinator(state).check_consumer_fetch(&g.group_id, g.member_id.as_deref(), g.member_epoch);
                }
                let fetched = if error == 0 { fetch_group(state, &g.group_id, topics, r.require_stable) } else { Vec::new() };
                m::offset_fetch_response::OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_error_code(error).with_topics(
                    fetched
                        .into_iter()
                        .map(|(t, ps)| {
                            m::offset_fetch_response::OffsetFetchResponseTopics::default().with_name(TopicName(s(t))).with_partitions(
                                ps.into_iter()
                                    .map(|(p, o, e, md, error)| {
                                        m::offset_fetch_response::OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_error_code(error)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(e)
                                            .with_metadata(Some(s(md)))
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        return m::OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let error = GroupCoordinator::validate_group_id(&r.group_id)
        .err()
        .unwrap_or(0);
    let fetched = if error == 0 {
        fetch_group(state, &r.group_id, topics, version >= 7 && r.require_stable)
    } else {
        Vec::new()
    };
    let mut response = m::OffsetFetchResponse::default().with_topics(
        fetched
            .into_iter()
            .map(|(t, ps)| {
                m::offset_fetch_response::OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, o, e, md, error)| {
                                m::offset_fetch_response::OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(error)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(epoch(e))
                                    .with_metadata(Some(s(md)))
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    if version >= 2 {
        response = response.with_error_code(error);
    }
    response
}

pub fn list_groups(
    state: &BrokerState,
    version: i16,
    r: m::ListGroupsRequest,
) -> m::ListGroupsResponse {
    let states: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = r.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = coordinator(state)
        .list()
        .into_iter()
        .chain(crate::share_group_api::listed(state))
        .filter(|l| states.is_empty() || states.contains(&l.state.to_lowercase()))
        .filter(|l| types.is_empty() || types.iter().any(|t| t == l.group_type))
        .map(|l| {
            let mut g = m::list_groups_response::ListedGroup::default()
                .with_group_id(GroupId(s(l.id)))
                .with_protocol_type(s(l.protocol_type));
            if version >= 4 {
                g = g.with_group_state(s(l.state));
            }
            if version >= 5 {
                g = g.with_group_type(s(l.group_type));
            }
            g
        })
        .collect();
    m::ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(
    state: &BrokerState,
    version: i16,
    r: m::DescribeGroupsRequest,
) -> m::DescribeGroupsResponse {
    let groups = r
        .groups
        .into_iter()
        .map(|id| {
            let base =
                m::describe_groups_response::DescribedGroup::default().with_group_id(id.clone());
            let base = if version < 3 {
                base
            } else if r.include_authorized_operations {
                base.with_authorized_operations(
                    state.authorized_operations(crate::authorizer::ResourceType::Group, &id),
                )
            } else {
                base.with_authorized_operations(i32::MIN)
            };
            if let Err(e) = GroupCoordinator::validate_group_id(&id) {
                return base
                    .with_error_code(e)
                    .with_group_state(s(GroupState::Dead.name()));
            }
            // From v6 (KIP-1043), as Kafka: a group that is not a classic group is
            // GROUP_ID_NOT_FOUND with Kafka's message and no state (Java's Admin raises
            // GroupIdNotFoundException); before v6, it is Dead with no error.
            let not_found = |reason: &str| {
                if version >= 6 {
                    base.clone()
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(s(format!("Group {} {reason}.", id.as_str()))))
                } else {
                    base.clone().with_group_state(s(GroupState::Dead.name()))
                }
            };
            // A deadline that has passed is applied first, as at the deadline.
            coordinator(state).fire_if_due(&id, crate::coordinator::group::timers::now());
            if coordinator(state)
                .with_consumer_group(&id, |_| ())
                .is_some()
            {
                // Clients describe a consumer group with ConsumerGroupDescribe.
                return not_found("is not a classic group");
            }
            coordinator(state)
                .with_group(&id, |g| {
                    let protocol = g.protocol_name.clone().unwrap_or_default();
                    let show_assignment = g.state == GroupState::Stable;
                    base.clone()
                        .with_group_state(s(g.state.name()))
                        .with_protocol_type(s(g.protocol_type.clone().unwrap_or_default()))
                        .with_protocol_data(s(protocol.clone()))
                        .with_members(
                            g.members
                                .values()
                                .map(|mem| {
                                    let metadata = mem
                                        .protocols
                                        .iter()
                                        .find(|(n, _)| *n == protocol)
                                        .map(|(_, m)| m.clone())
                                        .unwrap_or_default();
                                    let d =
                                        m::describe_groups_response::DescribedGroupMember::default(
                                        )
                                        .with_member_id(s(mem.member_id.clone()))
                                        .with_client_id(s(mem.client_id.clone()))
                                        .with_client_host(s(mem.client_host.clone()))
                                        .with_member_metadata(metadata)
                                        .with_member_assignment(if show_assignment {
                                            mem.assignment.clone()
                                        } else {
                                            Bytes::new()
                                        });
                                    if version >= 4 {
                                        d.with_group_instance_id(
                                            mem.group_instance_id.clone().map(s),
                                        )
                                    } else {
                                        d
                                    }
                                })
                                .collect(),
                        )
                })
                .unwrap_or_else(|| not_found("not found"))
        })
        .collect();
    m::DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    state: &Arc<BrokerState>,
    r: m::DeleteGroupsRequest,
) -> m::DeleteGroupsResponse {
    let mut results = Vec::with_capacity(r.groups_names.len());
    for id in r.groups_names {
        // A share group's deletion also deletes its share state (share_admin).
        if state.shares.is_share_group(&id) {
            let error = crate::share_admin::delete_group(state, &id).await;
            results.push(
                m::delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(error),
            );
            continue;
        }
        let (mut error, pending) = match GroupCoordinator::validate_group_id(&id) {
            Err(e) => (e, None),
            Ok(()) => {
                let deleting = id.to_string();
                state
                    .coordinate("delete group", move |state| {
                        coordinator(state).delete_group(&deleting)
                    })
                    .await
                    .unwrap_or_else(|e| (e, None))
            }
        };
        if let Err(e) = group_coordinator::durable(pending).await {
            error = e;
        }
        results.push(
            m::delete_groups_response::DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(error),
        );
    }
    m::DeleteGroupsResponse::default().with_results(results)
}

pub async fn offset_delete(
    state: &Arc<BrokerState>,
    r: m::OffsetDeleteRequest,
) -> m::OffsetDeleteResponse {
    let tps: Vec<TopicPartition> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.name.to_string(), p.partition_index))
        })
        .collect();
    let group_id = r.group_id.to_string();
    let deleted = state
        .coordinate("offset delete", move |state| {
            coordinator(state).delete_offsets(&group_id, &tps)
        })
        .await
        .and_then(|deleted| deleted);
    let (codes, pending) = match deleted {
        Ok(x) => x,
        Err(e) => return m::OffsetDeleteResponse::default().with_error_code(e),
    };
    let durable_error = group_coordinator::durable(pending).await.err();
    let mut codes = codes.into_iter();
    m::OffsetDeleteResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                m::offset_delete_response::OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                let c = codes.next().unwrap_or(0);
                                m::offset_delete_response::OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if c == 0 {
                                        durable_error.unwrap_or(0)
                                    } else {
                                        c
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
