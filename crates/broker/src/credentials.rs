//! Credentials: DescribeUserScramCredentials (50) and the delegation token APIs (38–41).
//!
//! Rill has no SASL yet, so it holds no SCRAM credentials and issues no tokens. Each call gets
//! the answer Apache Kafka 4.4 gives a PLAINTEXT client of a cluster with no SCRAM users: every
//! named user RESOURCE_NOT_FOUND (DUPLICATE_RESOURCE when named twice), and every token request
//! DELEGATION_TOKEN_REQUEST_NOT_ALLOWED. The security work stores credentials behind these.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResult;
use kafka_protocol::messages::{
    CreateDelegationTokenResponse, DescribeDelegationTokenResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    ExpireDelegationTokenResponse, RenewDelegationTokenResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::NONE;

pub fn describe_scram(
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let users = request.users.unwrap_or_default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for user in &users {
        *seen.entry(user.name.as_str()).or_default() += 1;
    }
    let mut reported = std::collections::HashSet::new();
    let results = users
        .iter()
        .filter(|u| reported.insert(u.name.as_str()))
        .map(|u| {
            let name = u.name.as_str();
            let (code, text) = if seen[name] > 1 {
                (
                    ResponseError::DuplicateResource.code(),
                    "Cannot describe SCRAM credentials for the same user twice in a single request: ",
                )
            } else {
                (
                    ResponseError::ResourceNotFound.code(),
                    "Attempt to describe a user credential that does not exist: ",
                )
            };
            DescribeUserScramCredentialsResult::default()
                .with_user(u.name.clone())
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(format!("{text}{name}"))))
        })
        .collect();
    DescribeUserScramCredentialsResponse::default()
        .with_error_code(NONE)
        .with_results(results)
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
