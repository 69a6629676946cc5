//! ApiVersions (key 18): which APIs and versions this broker speaks.
//!
//! [`SUPPORTED`] is the single source of truth: the dispatcher refuses anything outside it,
//! and ApiVersions advertises exactly it. Each range is what we implement, intersected with
//! what the `kafka-protocol` crate (0.18) can decode and encode; a unit test checks the
//! latter.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use crate::error::{ConnectionError, NONE};
use crate::frame::HeaderPrefix;
use crate::response::{self, Response};

/// (api, min version, max version) for every API we serve.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    // v12 is a transactions-v2 client (KIP-890): the broker adds partitions to its
    // transaction.
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    // v5 is transactions v2 (KIP-890: the epoch is bumped at every end).
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::DescribeProducers, 0, 0),
    // From Admin's abortTransaction. Kafka 4.4 has v2 (a transaction version field for
    // KIP-890 markers); the kafka-protocol crate has v1, which Admin uses.
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    // v2 adds a transactional id regular expression filter.
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::TxnOffsetCommit, 0, 5),
    // KIP-848; v1 (KIP-1082) has the client choose its member id.
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    // KIP-932 share groups; v1 is the GA version (Kafka 4.4 also has v2 of ShareFetch and
    // ShareAcknowledge, for renew acknowledgements, which its clients use only if offered).
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
    // The share group admin APIs. Kafka 4.4 has DescribeShareGroupOffsets v1 (adds the lag);
    // the kafka-protocol crate has v0 only, and Kafka's Admin falls back to it.
    (ApiKey::DescribeShareGroupOffsets, 0, 0),
    (ApiKey::AlterShareGroupOffsets, 0, 0),
    (ApiKey::DeleteShareGroupOffsets, 0, 0),
    // Inter-broker in Kafka, but a single node serves it on its one listener.
    (ApiKey::DeleteShareGroupState, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::CreateDelegationToken, 1, 3),
    (ApiKey::RenewDelegationToken, 1, 2),
    (ApiKey::ExpireDelegationToken, 1, 2),
    (ApiKey::DescribeDelegationToken, 1, 3),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // A single-node KRaft quorum, and features fixed by the binary (quorum, update_features).
    (ApiKey::DescribeQuorum, 0, 2),
    // Changes to that quorum (voters.rs). Kafka 4.4 has AddRaftVoter v1 (AckWhenCommitted);
    // the crate has v0.
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
    (ApiKey::UpdateFeatures, 0, 2),
    (ApiKey::ListConfigResources, 0, 1),
];

/// The version range we serve for `api_key`, if any: through the crate ([`SUPPORTED`]) or
/// by hand ([`crate::hand_codec::HAND_CODED`]).
pub fn supported_range(api_key: i16) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key as i16 == api_key)
        .map(|&(_, min, max)| (min, max))
        .or_else(|| crate::hand_codec::supported_range(api_key))
}

fn api_version_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| (key as i16, min, max))
        .chain(crate::hand_codec::HAND_CODED.iter().copied())
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

/// Answers a supported ApiVersions request.
/// The feature level this broker runs transactions at: `transaction.version` 2 is KIP-890's
/// transactions v2 (epoch bump at every end, partitions added by the broker on produce).
/// Kafka 4.x clients read the finalized level and use v2 when it is 2.
pub const TRANSACTION_VERSION: i16 = 2;
/// Epoch of the finalized features: a single node finalizes them once, at its first start.
const FINALIZED_FEATURES_EPOCH: i64 = 1;

/// `group.version` 1 enables the KIP-848 consumer group protocol, as in Kafka 4.x.
pub const GROUP_VERSION: i16 = 1;

/// `share.version` 1 enables KIP-932 share groups, as in Kafka 4.x.
pub const SHARE_VERSION: i16 = 1;

/// Every feature this broker has, at the one level it finalizes and supports at most.
pub const FEATURES: &[(&str, i16)] = &[
    ("group.version", GROUP_VERSION),
    ("share.version", SHARE_VERSION),
    ("transaction.version", TRANSACTION_VERSION),
];

pub fn handle(_request: ApiVersionsRequest) -> ApiVersionsResponse {
    let features = FEATURES;
    let name = kafka_protocol::protocol::StrBytes::from_static_str;
    ApiVersionsResponse::default()
        .with_error_code(NONE)
        .with_api_keys(api_version_list())
        .with_supported_features(
            features
                .iter()
                .map(|(n, level)| {
                    SupportedFeatureKey::default()
                        .with_name(name(n))
                        .with_min_version(0)
                        .with_max_version(*level)
                })
                .collect(),
        )
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(
            features
                .iter()
                .map(|(n, level)| {
                    FinalizedFeatureKey::default()
                        .with_name(name(n))
                        .with_min_version_level(*level)
                        .with_max_version_level(*level)
                })
                .collect(),
        )
}

/// Answers an ApiVersions request whose version is newer than ours. Per KIP-511 the broker
/// replies in the v0 format (which every client can read) with UNSUPPORTED_VERSION and at
/// least its ApiVersions range; the client then retries with a version we support.
///
/// # Errors
/// Encoding failure (a bug).
pub fn unsupported_version(prefix: HeaderPrefix) -> Result<Response, ConnectionError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_version_list());
    response::encode(ApiKey::ApiVersions as i16, 0, prefix.correlation_id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_within_the_crate() {
        for &(key, min, max) in SUPPORTED {
            let crate_range = key.valid_versions();
            assert!(min <= max, "{key:?}");
            assert!(
                min >= crate_range.min,
                "{key:?} min {min} < {}",
                crate_range.min
            );
            assert!(
                max <= crate_range.max,
                "{key:?} max {max} > {}",
                crate_range.max
            );
        }
    }

    #[test]
    fn keys_are_unique() {
        let keys: Vec<i16> = api_version_list().iter().map(|v| v.api_key).collect();
        for (i, a) in keys.iter().enumerate() {
            assert!(!keys[i + 1..].contains(a), "key {a} listed twice");
        }
    }

    /// APIs served by hand are exactly those the crate cannot decode.
    #[test]
    fn hand_coded_apis_are_unknown_to_the_crate() {
        for &(key, min, max) in crate::hand_codec::HAND_CODED {
            assert!(ApiKey::try_from(key).is_err(), "{key}");
            assert!(min <= max);
        }
    }
}
