//! Request dispatch: header checks, decoding with the `kafka-protocol` crate, and routing to
//! one module per API family.
//!
//! Anything that shows the peer is not speaking our protocol closes the connection (as Kafka
//! does): an unknown or unserved API key, an unsupported version (except ApiVersions, which
//! gets the KIP-511 v0 fallback), or a body that does not decode.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::error::ConnectionError;
use crate::frame::HeaderPrefix;
use crate::group_api::{self, Client};
use crate::metrics::Metrics;
use crate::quota_sensors::{self, QuotaKind};
use crate::response::{self, Response};
use crate::state::BrokerState;
use crate::{
    acls, admin, api_versions, configs, credentials, describe_topic_partitions, fetch, hand_codec,
    leader_epoch, list_offsets, metadata, produce, producer_id, quorum, quotas, replica_admin,
    sasl, share_admin, txn_api, update_features, voters, write_txn_markers,
};

/// The rest of a request that is waiting (for durability, or in a fetch's long poll), to be
/// awaited for its response.
pub type Waiting = Pin<Box<dyn Future<Output = Result<Option<Response>, ConnectionError>> + Send>>;

/// A request after the part of it that must run in request order.
pub enum Handled {
    /// The response (or `None` for a request that gets none: produce with acks=0).
    Ready(Option<Response>),
    /// The request's effects are done (a produce appended, a fetch read once) and its answer
    /// waits for something else; later requests on the connection may start meanwhile.
    Waiting(Waiting),
}

/// Handles one request frame, to its response. `connection_id` names the connection (unique
/// in this broker's life; share sessions end with theirs).
///
/// # Returns
/// The response to write, or `None` when the request gets none (produce with acks=0).
///
/// # Errors
/// A [`ConnectionError`] when the connection must be closed.
pub async fn dispatch(
    state: &Arc<BrokerState>,
    frame: Bytes,
    peer: Option<std::net::SocketAddr>,
    connection_id: u64,
) -> Result<Option<Response>, ConnectionError> {
    match start(state, frame, peer, connection_id).await? {
        Handled::Ready(response) => Ok(response),
        Handled::Waiting(waiting) => waiting.await,
    }
}

/// Handles one request frame up to the point where its answer only waits: a produce's
/// appends, a fetch's first read, everything of any other request. A pipelined connection
/// awaits this for each request in turn, so requests take effect in request order.
///
/// # Errors
/// A [`ConnectionError`] when the connection must be closed.
pub async fn start(
    state: &Arc<BrokerState>,
    frame: Bytes,
    peer: Option<std::net::SocketAddr>,
    connection_id: u64,
) -> Result<Handled, ConnectionError> {
    let prefix = HeaderPrefix::parse(&frame)?;
    if let Some((min, max)) = hand_codec::supported_range(prefix.api_key) {
        if !(min..=max).contains(&prefix.api_version) {
            return Err(ConnectionError::UnsupportedVersion {
                api_key: prefix.api_key,
                api_version: prefix.api_version,
            });
        }
        Metrics::add(&state.metrics.requests_total, 1);
        let started = std::time::Instant::now();
        let response = hand_codec::handle(state, prefix, frame);
        state
            .metrics
            .observe_request(prefix.api_key, started.elapsed());
        return response.map(|r| Handled::Ready(Some(r)));
    }
    let api_key = ApiKey::try_from(prefix.api_key).map_err(|_| ConnectionError::UnknownApiKey {
        api_key: prefix.api_key,
    })?;
    let Some((min, max)) = api_versions::supported_range(prefix.api_key) else {
        return Err(ConnectionError::UnknownApiKey {
            api_key: prefix.api_key,
        });
    };
    let version = prefix.api_version;
    if version > max && api_key == ApiKey::ApiVersions {
        return api_versions::unsupported_version(prefix).map(|r| Handled::Ready(Some(r)));
    }
    if version < min || version > max {
        return Err(ConnectionError::UnsupportedVersion {
            api_key: prefix.api_key,
            api_version: version,
        });
    }
    Metrics::add(&state.metrics.requests_total, 1);
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api_key.request_header_version(version))
        .map_err(decode_error(prefix))?;
    tracing::trace!(
        ?api_key,
        version,
        correlation_id = header.correlation_id,
        "request"
    );
    let started = std::time::Instant::now();
    let result = if is_group_api(api_key) {
        let client = Client {
            client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
            host: peer.map_or_else(String::new, |p| format!("/{}", p.ip())),
        };
        route_group(state, api_key, prefix, &client, body)
            .await
            .map(|r| Handled::Ready(Some(r)))
    } else {
        let client_id = header.client_id.as_deref().unwrap_or("");
        route(state, api_key, prefix, body, connection_id, client_id).await
    };
    match result {
        Ok(Handled::Waiting(waiting)) => {
            let metrics = Arc::clone(&state.metrics);
            Ok(Handled::Waiting(Box::pin(async move {
                let result = waiting.await;
                metrics.observe_request(prefix.api_key, started.elapsed());
                result
            })))
        }
        other => {
            state
                .metrics
                .observe_request(prefix.api_key, started.elapsed());
            other
        }
    }
}

fn is_group_api(api_key: ApiKey) -> bool {
    matches!(
        api_key,
        ApiKey::FindCoordinator
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroups
            | ApiKey::DeleteGroups
            | ApiKey::OffsetDelete
            | ApiKey::TxnOffsetCommit
            | ApiKey::ConsumerGroupHeartbeat
            | ApiKey::ConsumerGroupDescribe
            | ApiKey::ShareGroupHeartbeat
            | ApiKey::ShareGroupDescribe
    )
}

async fn route_group(
    state: &Arc<BrokerState>,
    api_key: ApiKey,
    prefix: HeaderPrefix,
    client: &Client,
    mut body: Bytes,
) -> Result<Response, ConnectionError> {
    let v = prefix.api_version;
    match api_key {
        ApiKey::FindCoordinator => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::find_coordinator(state, v, request))
        }
        ApiKey::JoinGroup => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &group_api::join_group(state, v, client, request).await,
            )
        }
        ApiKey::SyncGroup => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::sync_group(state, v, request).await)
        }
        ApiKey::Heartbeat => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::heartbeat(state, request).await)
        }
        ApiKey::LeaveGroup => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::leave_group(state, v, request).await)
        }
        ApiKey::OffsetCommit => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::offset_commit(state, request).await)
        }
        ApiKey::OffsetFetch => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::offset_fetch(state, v, request))
        }
        ApiKey::ListGroups => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::list_groups(state, v, request))
        }
        ApiKey::DescribeGroups => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::describe_groups(state, v, request))
        }
        ApiKey::DeleteGroups => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::delete_groups(state, request).await)
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &crate::consumer_group_api::heartbeat(state, client, request).await,
            )
        }
        ApiKey::ConsumerGroupDescribe => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &crate::consumer_group_api::describe(state, request))
        }
        ApiKey::OffsetDelete => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &group_api::offset_delete(state, request).await)
        }
        ApiKey::ShareGroupHeartbeat => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &crate::share_group_api::heartbeat(state, client, request).await,
            )
        }
        ApiKey::ShareGroupDescribe => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &crate::share_group_api::describe(state, request))
        }
        ApiKey::TxnOffsetCommit => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &crate::txn_offset_commit::txn_offset_commit(state, v, request).await,
            )
        }
        // is_group_api() admitted only the keys routed above.
        _ => Err(ConnectionError::UnknownApiKey {
            api_key: prefix.api_key,
        }),
    }
}

async fn route(
    state: &Arc<BrokerState>,
    api_key: ApiKey,
    prefix: HeaderPrefix,
    mut body: Bytes,
    connection_id: u64,
    client_id: &str,
) -> Result<Handled, ConnectionError> {
    let v = prefix.api_version;
    let request_bytes = body.len() as u64;
    let response = match api_key {
        ApiKey::ApiVersions => {
            let request: m::ApiVersionsRequest = decode(&mut body, prefix)?;
            reply(prefix, &api_versions::handle(request))?
        }
        ApiKey::Metadata => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &metadata::handle(state, v, request).await)?
        }
        ApiKey::Produce => {
            let request = decode(&mut body, prefix)?;
            let throttle_ms = throttle(state, QuotaKind::Produce, client_id, request_bytes);
            let appending = produce::start(state, v, request).await;
            let answer = move |response: Option<m::ProduceResponse>| match response {
                Some(r) => {
                    let r = r.with_throttle_time_ms(throttle_time_ms(throttle_ms));
                    reply(prefix, &r).map(|r| Some(r.with_throttle_ms(throttle_ms)))
                }
                // acks=0: no answer, but the connection is muted all the same.
                None if throttle_ms > 0 => Ok(Some(Response::mute_only(throttle_ms))),
                None => Ok(None),
            };
            if appending.is_answered() {
                return answer(appending.finish().await).map(Handled::Ready);
            }
            return Ok(Handled::Waiting(Box::pin(async move {
                answer(appending.finish().await)
            })));
        }
        ApiKey::Fetch => {
            let request: m::FetchRequest = decode(&mut body, prefix)?;
            // A log first used here is opened (recovered) on the I/O pool, not inline, whether
            // the request names its topic or (v13+) only the topic's id.
            state
                .open_logs_off_runtime(&fetch::partitions_of(state, &request))
                .await;
            match fetch::start(state, v, prefix.correlation_id, request, client_id) {
                fetch::Fetched::Ready(response) => response,
                fetch::Fetched::Parked(long_poll) => {
                    return Ok(Handled::Waiting(Box::pin(async move {
                        Ok(Some(long_poll.await))
                    })))
                }
            }
        }
        ApiKey::ShareFetch => {
            let request = decode(&mut body, prefix)?;
            match crate::share_fetch::start(state, request, connection_id).await {
                crate::share_fetch::Started::Ready(r) => reply(prefix, &r)?,
                crate::share_fetch::Started::Waiting(waiting) => {
                    return Ok(Handled::Waiting(Box::pin(async move {
                        reply(prefix, &waiting.await).map(Some)
                    })))
                }
            }
        }
        ApiKey::ShareAcknowledge => {
            let request = decode(&mut body, prefix)?;
            let acknowledged =
                crate::share_fetch::acknowledge_request(state, request, connection_id).await;
            return Ok(Handled::Waiting(Box::pin(async move {
                reply(prefix, &acknowledged.await).map(Some)
            })));
        }
        ApiKey::DescribeShareGroupOffsets => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &share_admin::describe_offsets(state, request))?
        }
        ApiKey::AlterShareGroupOffsets => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &share_admin::alter_offsets(state, request).await)?
        }
        ApiKey::DeleteShareGroupOffsets => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &share_admin::delete_offsets(state, request).await)?
        }
        ApiKey::DeleteShareGroupState => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &share_admin::delete_state(state, request).await)?
        }
        ApiKey::ListOffsets => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &list_offsets::handle(state, v, request).await)?
        }
        ApiKey::OffsetForLeaderEpoch => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &leader_epoch::handle(state, request))?
        }
        ApiKey::InitProducerId => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &producer_id::handle(state, v, request).await)?
        }
        ApiKey::AddPartitionsToTxn => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &txn_api::add_partitions_to_txn(state, v, request).await,
            )?
        }
        ApiKey::AddOffsetsToTxn => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &txn_api::add_offsets_to_txn(state, v, request).await,
            )?
        }
        ApiKey::EndTxn => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &txn_api::end_txn(state, v, request).await)?
        }
        ApiKey::DescribeTransactions => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &txn_api::describe_transactions(state, request))?
        }
        ApiKey::ListTransactions => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &txn_api::list_transactions(state, v, request))?
        }
        ApiKey::WriteTxnMarkers => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &write_txn_markers::handle(state, request).await)?
        }
        ApiKey::DescribeProducers => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &txn_api::describe_producers(state, request))?
        }
        _ => {
            return route_admin(state, api_key, prefix, body)
                .await
                .map(|r| Handled::Ready(Some(r)))
        }
    };
    Ok(Handled::Ready(Some(response)))
}

async fn route_admin(
    state: &Arc<BrokerState>,
    api_key: ApiKey,
    prefix: HeaderPrefix,
    mut body: Bytes,
) -> Result<Response, ConnectionError> {
    let v = prefix.api_version;
    match api_key {
        ApiKey::CreateTopics => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &admin::create_topics(state, v, request).await)
        }
        ApiKey::DeleteTopics => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &admin::delete_topics(state, v, request).await)
        }
        ApiKey::CreatePartitions => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &admin::create_partitions(state, request).await)
        }
        ApiKey::DeleteRecords => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &admin::delete_records(state, request).await)
        }
        ApiKey::DescribeLogDirs => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &admin::describe_log_dirs(state, request))
        }
        ApiKey::DescribeCluster => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &metadata::describe_cluster(state, request))
        }
        ApiKey::DescribeTopicPartitions => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &describe_topic_partitions::handle(state, request))
        }
        ApiKey::DescribeConfigs => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &configs::describe(state, v, request))
        }
        ApiKey::AlterConfigs => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &configs::alter(state, request).await)
        }
        ApiKey::IncrementalAlterConfigs => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &configs::incremental_alter(state, request).await)
        }
        ApiKey::AddRaftVoter => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &voters::add_voter(state, request).await)
        }
        ApiKey::AlterClientQuotas => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &quotas::alter(state, request).await)
        }
        ApiKey::AlterUserScramCredentials => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &credentials::alter_scram(state, request).await)
        }
        _ => route_cluster_admin(state, api_key, prefix, body),
    }
}

/// Security and replica placement: answered as a single node without an authorizer, SASL or
/// other brokers answers them (see each module).
fn route_cluster_admin(
    state: &Arc<BrokerState>,
    api_key: ApiKey,
    prefix: HeaderPrefix,
    mut body: Bytes,
) -> Result<Response, ConnectionError> {
    match api_key {
        ApiKey::DescribeAcls => reply(prefix, &acls::describe(decode(&mut body, prefix)?)),
        ApiKey::CreateAcls => reply(prefix, &acls::create(decode(&mut body, prefix)?)),
        ApiKey::DeleteAcls => reply(prefix, &acls::delete(decode(&mut body, prefix)?)),
        ApiKey::ElectLeaders => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &replica_admin::elect_leaders(state, request))
        }
        ApiKey::DescribeQuorum => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &quorum::describe(state, prefix.api_version, request),
            )
        }
        ApiKey::RemoveRaftVoter => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &voters::remove_voter(state, &request))
        }
        ApiKey::UpdateFeatures => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &update_features::handle(state.config.node_id, prefix.api_version, request),
            )
        }
        ApiKey::UnregisterBroker => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &replica_admin::unregister_broker(state, request))
        }
        ApiKey::ListPartitionReassignments => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &replica_admin::list_reassignments(request))
        }
        ApiKey::AlterPartitionReassignments => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &replica_admin::alter_reassignments(state, request))
        }
        ApiKey::AlterReplicaLogDirs => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &replica_admin::alter_log_dirs(state, request))
        }
        ApiKey::DescribeUserScramCredentials => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &credentials::describe_scram(state, request))
        }
        ApiKey::DescribeDelegationToken => {
            let _: m::DescribeDelegationTokenRequest = decode(&mut body, prefix)?;
            reply(prefix, &credentials::describe_tokens())
        }
        ApiKey::CreateDelegationToken => {
            let _: m::CreateDelegationTokenRequest = decode(&mut body, prefix)?;
            reply(prefix, &credentials::create_token())
        }
        ApiKey::RenewDelegationToken => {
            let _: m::RenewDelegationTokenRequest = decode(&mut body, prefix)?;
            reply(prefix, &credentials::renew_token())
        }
        ApiKey::ExpireDelegationToken => {
            let _: m::ExpireDelegationTokenRequest = decode(&mut body, prefix)?;
            reply(prefix, &credentials::expire_token())
        }
        ApiKey::ListConfigResources => {
            let request = decode(&mut body, prefix)?;
            reply(
                prefix,
                &configs::list_resources(state, prefix.api_version, request),
            )
        }
        ApiKey::DescribeClientQuotas => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &quotas::describe(state, request))
        }
        ApiKey::SaslHandshake => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &sasl::handshake(request))
        }
        ApiKey::SaslAuthenticate => {
            let request = decode(&mut body, prefix)?;
            reply(prefix, &sasl::authenticate(request))
        }
        // supported_range() admitted only the keys routed above.
        _ => Err(ConnectionError::UnknownApiKey {
            api_key: prefix.api_key,
        }),
    }
}

/// Records a request's bytes against the client's byte-rate quota; the throttle time in ms.
/// Every connection is the ANONYMOUS user until authentication exists.
fn throttle(state: &BrokerState, kind: QuotaKind, client_id: &str, bytes: u64) -> u64 {
    state.quota_sensors.record(
        &state.client_quotas,
        kind,
        quota_sensors::ANONYMOUS_USER,
        client_id,
        bytes,
        u64::try_from(crate::broker::now_ms()).unwrap_or(0),
    )
}

/// The wire field for a throttle time (bounded by `THROTTLE_MS_MAX`, far below i32::MAX).
fn throttle_time_ms(throttle_ms: u64) -> i32 {
    i32::try_from(throttle_ms).unwrap_or(i32::MAX)
}

fn decode<R: Decodable>(body: &mut Bytes, prefix: HeaderPrefix) -> Result<R, ConnectionError> {
    R::decode(body, prefix.api_version).map_err(decode_error(prefix))
}

fn reply<R: Encodable + HeaderVersion>(
    prefix: HeaderPrefix,
    body: &R,
) -> Result<Response, ConnectionError> {
    response::encode(
        prefix.api_key,
        prefix.api_version,
        prefix.correlation_id,
        body,
    )
}

fn decode_error<E: std::fmt::Display>(
    prefix: HeaderPrefix,
) -> impl Fn(E) -> ConnectionError + Copy {
    move |e| ConnectionError::Decode {
        api_key: prefix.api_key,
        api_version: prefix.api_version,
        reason: e.to_string(),
    }
}
