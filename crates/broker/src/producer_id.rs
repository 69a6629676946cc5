//! InitProducerId (22): hands out producer ids so idempotent producers can start.
//!
//! Java (3.0+) and franz-go producers are idempotent by default and will not produce without
//! an id. This single-node broker does not yet track producer sequences (no duplicate
//! detection) nor transactions: a request with a transactional id is refused with
//! COORDINATOR_NOT_AVAILABLE, since there is no transaction coordinator to find.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::error::NONE;
use crate::state::BrokerState;

/// A fresh producer id with epoch 0, or an error for transactional producers.
pub fn handle(state: &BrokerState, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let transactional = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty());
    if transactional {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // KIP-360: a producer that already has an id asks for an epoch bump to reset sequences.
    if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        let epoch = request.producer_epoch.checked_add(1).unwrap_or(0);
        if epoch > 0 {
            return InitProducerIdResponse::default()
                .with_error_code(NONE)
                .with_producer_id(request.producer_id)
                .with_producer_epoch(epoch);
        }
    }
    let producer_id = state.next_producer_id();
    tracing::debug!(producer_id, "allocated producer id");
    InitProducerIdResponse::default()
        .with_error_code(NONE)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(0)
}
