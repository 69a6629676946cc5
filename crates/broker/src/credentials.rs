//! Credentials: DescribeUserScramCredentials (50) and AlterUserScramCredentials (51) over
//! [`crate::scram`], and the delegation token APIs (38–41).
//!
//! SCRAM credentials are stored as Kafka stores them even with no SASL listener, and
//! described and refused with Kafka 4.4's codes and messages. Rill issues no delegation
//! tokens: every token request gets DELEGATION_TOKEN_REQUEST_NOT_ALLOWED, as Kafka answers a
//! PLAINTEXT client.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    CreateDelegationTokenResponse, DescribeDelegationTokenResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    ExpireDelegationTokenResponse, RenewDelegationTokenResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::NONE;
use crate::scram::{Alteration, Refusal};
use crate::state::BrokerState;

/// Kafka's `ScramImage.describe`: the named users (all users when none are named), each once;
/// a user named twice is DUPLICATE_RESOURCE, one with no credential RESOURCE_NOT_FOUND.
pub fn describe_scram(
    state: &BrokerState,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let named: Vec<String> = request
        .users
        .unwrap_or_default()
        .iter()
        .map(|u| u.name.to_string())
        .collect();
    let users = if named.is_empty() {
        state.scram.users()
    } else {
        named.clone()
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for user in &named {
        *seen.entry(user.as_str()).or_default() += 1;
    }
    let mut reported = std::collections::HashSet::new();
    let results = users
        .iter()
        .filter(|u| reported.insert(u.as_str()))
        .map(|name| {
            let result = DescribeUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(name.clone()));
            let refused = |code: i16, text: &str| {
                result
                    .clone()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(format!("{text}{name}"))))
            };
            if seen.get(name.as_str()).copied().unwrap_or(0) > 1 {
                return refused(
                    ResponseError::DuplicateResource.code(),
                    "Cannot describe SCRAM credentials for the same user twice in a single request: ",
                );
            }
            let infos = state.scram.describe(name);
            if infos.is_empty() {
                return refused(
                    ResponseError::ResourceNotFound.code(),
                    "Attempt to describe a user credential that does not exist: ",
                );
            }
            result.clone().with_error_code(NONE).with_credential_infos(
                infos
                    .into_iter()
                    .map(|(m, iterations)| {
                        CredentialInfo::default()
                            .with_mechanism(m.type_code())
                            .with_iterations(iterations)
                    })
                    .collect(),
            )
        })
        .collect();
    DescribeUserScramCredentialsResponse::default()
        .with_error_code(NONE)
        .with_results(results)
}

fn code_of(refusal: &Refusal) -> i16 {
    match refusal {
        Refusal::Duplicate => ResponseError::DuplicateResource.code(),
        Refusal::EmptyUser
        | Refusal::TooFewIterations
        | Refusal::TooManyIterations
        | Refusal::Limit(_) => ResponseError::UnacceptableCredential.code(),
        Refusal::UnknownMechanism => ResponseError::UnsupportedSaslMechanism.code(),
        Refusal::NotFound => ResponseError::ResourceNotFound.code(),
        Refusal::Storage(_) => ResponseError::KafkaStorageError.code(),
    }
}

/// Kafka's `ScramControlManager.alterCredentials`; the file write runs off the runtime.
pub async fn alter_scram(
    state: &Arc<BrokerState>,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let deletions = request.deletions.iter().map(|d| Alteration::Delete {
        user: d.name.to_string(),
        mechanism: d.mechanism,
    });
    let upsertions = request.upsertions.iter().map(|u| Alteration::Upsert {
        user: u.name.to_string(),
        mechanism: u.mechanism,
        iterations: u.iterations,
        salt: u.salt.to_vec(),
        salted_password: u.salted_password.to_vec(),
    });
    let alterations: Vec<Alteration> = deletions.chain(upsertions).collect();
    let scram = Arc::clone(&state.scram);
    let results = match tokio::task::spawn_blocking(move || scram.alter(&alterations)).await {
        Ok(results) => results,
        Err(e) => {
            tracing::error!(error = %e, "SCRAM alteration task failed");
            let users = request.deletions.iter().map(|d| d.name.to_string());
            let users = users.chain(request.upsertions.iter().map(|u| u.name.to_string()));
            let mut seen = std::collections::HashSet::new();
            users
                .filter(|u| seen.insert(u.clone()))
                .map(|u| (u, Err(Refusal::Storage("the alteration failed".into()))))
                .collect()
        }
    };
    let results = results
        .into_iter()
        .map(|(user, result)| {
            let (code, message) = match &result {
                Ok(()) => (NONE, None),
                Err(r) => (code_of(r), Some(StrBytes::from_string(r.to_string()))),
            };
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user))
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn not_allowed() -> i16 {
    ResponseError::DelegationTokenRequestNotAllowed.code()
}

pub fn describe_tokens() -> DescribeDelegationTokenResponse {
    DescribeDelegationTokenResponse::default().with_error_code(not_allowed())
}

pub fn create_token() -> CreateDelegationTokenResponse {
    CreateDelegationTokenResponse::default().with_error_code(not_allowed())
}

pub fn renew_token() -> RenewDelegationTokenResponse {
    RenewDelegationTokenResponse::default().with_error_code(not_allowed())
}

pub fn expire_token() -> ExpireDelegationTokenResponse {
    ExpireDelegationTokenResponse::default().with_error_code(not_allowed())
}
