//! DescribeAcls (29), CreateAcls (30), DeleteAcls (31).
//!
//! ACLs belong to the authorizer ([`crate::authorizer`]). Rill's only authorizer is
//! `AllowAll` (Kafka with no `authorizer.class.name`), which keeps no ACLs, so every call is
//! answered as Apache Kafka answers it in that state: SECURITY_DISABLED with Kafka's messages.
//! The security work replaces these answers with an ACL store behind the same trait.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

fn disabled() -> i16 {
    ResponseError::SecurityDisabled.code()
}

/// Kafka's message for a describe without an authorizer.
const DESCRIBE_DISABLED: &str = "No Authorizer is configured on the broker";
/// Kafka's message for a create or delete without an authorizer.
const CHANGE_DISABLED: &str = "No Authorizer is configured.";

pub fn describe(_request: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(disabled())
        .with_error_message(Some(StrBytes::from_static_str(DESCRIBE_DISABLED)))
}

/// One SECURITY_DISABLED result per requested creation, in request order.
pub fn create(request: CreateAclsRequest) -> CreateAclsResponse {
    let results = request
        .creations
        .iter()
        .map(|_| {
            AclCreationResult::default()
                .with_error_code(disabled())
                .with_error_message(Some(StrBytes::from_static_str(CHANGE_DISABLED)))
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// One SECURITY_DISABLED result per filter, in request order.
pub fn delete(request: DeleteAclsRequest) -> DeleteAclsResponse {
    let results = request
        .filters
        .iter()
        .map(|_| {
            DeleteAclsFilterResult::default()
                .with_error_code(disabled())
                .with_error_message(Some(StrBytes::from_static_str(CHANGE_DISABLED)))
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
