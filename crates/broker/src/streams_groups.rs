//! StreamsGroupDescribe (89, KIP-1071): Admin's `describeStreamsGroups`.
//!
//! Kafka 4.4 enables streams groups by default (`streams.version` 1) and advertises
//! StreamsGroupHeartbeat and StreamsGroupDescribe. Rill has no streams groups (the streams
//! rebalance protocol is not built), so every group it is asked about is answered as Kafka
//! answers a group that is not a streams group: an empty id is INVALID_GROUP_ID with no
//! message; a classic, consumer or share group is GROUP_ID_NOT_FOUND "Group G is not a streams
//! group."; any other id is GROUP_ID_NOT_FOUND "Group G not found.". Each error entry carries
//! Kafka's defaults: empty state, epochs 0, null topology, no members, and authorized
//! operations `i32::MIN` (not asked for, as Kafka reports them on an error).

use crate::hand_codec::{flexible_response, put_nullable_string, StreamsGroupDescribeRequest};
use crate::response::{ChunkBuilder, Response};
use crate::state::BrokerState;

/// GROUP_ID_NOT_FOUND.
const GROUP_ID_NOT_FOUND: i16 = 69;
/// INVALID_GROUP_ID.
const INVALID_GROUP_ID: i16 = 24;

/// What a describe of `group_id` answers: the error code and message.
pub fn describe_error(state: &BrokerState, group_id: &str) -> (i16, Option<String>) {
    if group_id.is_empty() {
        return (INVALID_GROUP_ID, None);
    }
    let other_type = state.groups.list().iter().any(|g| g.id == group_id)
        || state.shares.is_share_group(group_id);
    let message = if other_type {
        format!("Group {group_id} is not a streams group.")
    } else {
        format!("Group {group_id} not found.")
    };
    (GROUP_ID_NOT_FOUND, Some(message))
}

/// Answers a StreamsGroupDescribe request (v0 or v1), one entry per group id in request
/// order.
pub fn describe(
    state: &BrokerState,
    version: i16,
    correlation_id: i32,
    request: &StreamsGroupDescribeRequest,
) -> Response {
    let mut b = flexible_response(correlation_id);
    b.put_i32(0); // throttle_time_ms
    b.put_array_len(Some(request.group_ids.len()), true);
    for group_id in &request.group_ids {
        let (code, message) = describe_error(state, group_id);
        put_error_group(&mut b, version, group_id, code, message.as_deref());
    }
    b.put_empty_tags();
    b.finish()
}

/// One DescribedGroup entry that carries an error and Kafka's default for every other field.
fn put_error_group(
    b: &mut ChunkBuilder,
    version: i16,
    group_id: &str,
    code: i16,
    message: Option<&str>,
) {
    b.put_i16(code);
    put_nullable_string(b, message);
    b.put_string(group_id, true);
    b.put_string("", true); // group_state
    b.put_i32(0); // group_epoch
    b.put_i32(0); // assignment_epoch
    b.put_i8(-1); // topology: a null struct
    b.put_array_len(Some(0), true); // members
    b.put_i32(i32::MIN); // authorized_operations
    if version >= 1 {
        b.put_i8(-1); // topology_description: a null struct
        b.put_i8(0); // topology_description_status: NOT_REQUESTED
        put_nullable_string(b, None); // assignor_name
    }
    b.put_empty_tags();
}
