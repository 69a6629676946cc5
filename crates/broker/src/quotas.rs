//! DescribeClientQuotas (48) and AlterClientQuotas (49): the wire side of
//! [`crate::client_quotas`], answered as Kafka 4.4 answers them (INVALID_REQUEST with Kafka's
//! message for a refused entity or filter, UNSUPPORTED_VERSION for an unknown entity type in a
//! filter).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlterEntityData, EntryData as AlterEntryData,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::client_quotas::{self, Alteration, FilterComponent, Refusal};
use crate::error::NONE;
use crate::state::BrokerState;

/// How long one IP entity's host name may take to resolve (Kafka's controller asks
/// `InetAddress.getByName`, which waits on the system resolver).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most host names resolved for one request; further ones are refused as unresolvable, so a
/// request cannot hold its connection for long.
const HOSTS_RESOLVED_MAX: usize = 16;

fn code_of(refusal: &Refusal) -> i16 {
    match refusal {
        Refusal::Invalid(_) => ResponseError::InvalidRequest.code(),
        Refusal::Unsupported(_) => ResponseError::UnsupportedVersion.code(),
        Refusal::Storage(_) => ResponseError::KafkaStorageError.code(),
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn describe(
    state: &BrokerState,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let components: Vec<FilterComponent> = request
        .components
        .iter()
        .map(|c| FilterComponent {
            entity_type: c.entity_type.to_string(),
            match_type: c.match_type,
            name: c._match.as_ref().map(|m| m.to_string()),
        })
        .collect();
    match state.client_quotas.describe(&components, request.strict) {
        Ok(found) => {
            let entries = found
                .into_iter()
                .map(|(entity, values)| {
                    EntryData::default()
                        .with_entity(
                            entity
                                .iter()
                                .map(|(t, n)| {
                                    EntityData::default()
                                        .with_entity_type(text(t.name()))
                                        .with_entity_name(n.as_deref().map(text))
                                })
                                .collect(),
                        )
                        .with_values(
                            values
                                .iter()
                                .map(|(k, v)| ValueData::default().with_key(text(k)).with_value(*v))
                                .collect(),
                        )
                })
                .collect();
            DescribeClientQuotasResponse::default()
                .with_error_code(NONE)
                .with_entries(Some(entries))
        }
        Err(refusal) => DescribeClientQuotasResponse::default()
            .with_error_code(code_of(&refusal))
            .with_error_message(Some(text(&refusal.to_string())))
            .with_entries(None),
    }
}

pub async fn alter(
    state: &Arc<BrokerState>,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let alterations: Vec<Alteration> = request
        .entries
        .iter()
        .map(|e| Alteration {
            entity: e
                .entity
                .iter()
                .map(|d| {
                    (
                        d.entity_type.to_string(),
                        d.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect(),
            ops: e
                .ops
                .iter()
                .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
                .collect(),
        })
        .collect();
    let unresolvable = unresolvable_hosts(&alterations).await;
    let quotas = Arc::clone(&state.client_quotas);
    let validate_only = request.validate_only;
    let results = tokio::task::spawn_blocking(move || {
        quotas.alter(&alterations, validate_only, &unresolvable)
    })
    .await;
    let entries = match results {
        Ok(results) => results
            .into_iter()
            .map(|(entity, result)| {
                let (code, message) = match &result {
                    Ok(()) => (NONE, None),
                    Err(r) => (code_of(r), Some(text(&r.to_string()))),
                };
                AlterEntryData::default()
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_entity(
                        entity
                            .into_iter()
                            .map(|(t, n)| {
                                AlterEntityData::default()
                                    .with_entity_type(StrBytes::from_string(t))
                                    .with_entity_name(n.map(StrBytes::from_string))
                            })
                            .collect(),
                    )
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "client quota alteration task failed");
            request
                .entries
                .into_iter()
                .map(|e| {
                    AlterEntryData::default()
                        .with_error_code(ResponseError::UnknownServerError.code())
                        .with_entity(
                            e.entity
                                .into_iter()
                                .map(|d| {
                                    AlterEntityData::default()
                                        .with_entity_type(d.entity_type)
                                        .with_entity_name(d.entity_name)
                                })
                                .collect(),
                        )
                })
                .collect()
        }
    };
    AlterClientQuotasResponse::default().with_entries(entries)
}

/// The IP entity names that are neither addresses nor host names the resolver knows.
async fn unresolvable_hosts(alterations: &[Alteration]) -> HashSet<String> {
    let mut out = HashSet::new();
    let hosts: HashSet<&str> = alterations
        .iter()
        .flat_map(|a| a.entity.iter())
        .filter(|(t, _)| t == "ip")
        .filter_map(|(_, n)| n.as_deref())
        .filter(|n| !n.is_empty() && !client_quotas::is_ip_literal(n))
        .collect();
    for (i, host) in hosts.into_iter().enumerate() {
        if i >= HOSTS_RESOLVED_MAX {
            out.insert(host.to_string());
            continue;
        }
        let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0)))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|mut addrs| addrs.next().is_some());
        if !resolved {
            out.insert(host.to_string());
        }
    }
    out
}
