//! WriteTxnMarkers (27) from a client: Kafka's Admin `abortTransaction` (what
//! `kafka-transactions.sh abort` sends for a hanging transaction) asks the partition's leader
//! to write an abort marker for a producer id and epoch, bypassing the transaction coordinator.
//!
//! Each partition is answered as Kafka 4.4 answers it: UNKNOWN_TOPIC_OR_PARTITION when it is
//! not here; otherwise the marker goes through the partition's producer state as a
//! coordinator's marker does (`Log::append_marker`), so an epoch older than the producer's is
//! INVALID_PRODUCER_EPOCH and a coordinator epoch older than the last marker's is
//! TRANSACTION_COORDINATOR_FENCED. A producer with no open transaction there still gets its
//! marker, as in Kafka. The answer waits until the marker is durable, and the partition's last
//! stable offset moves past the aborted transaction.
//!
//! Markers for the coordinators' own topics (`__consumer_offsets`, `__transaction_state`,
//! `__share_group_state`) go through the coordinator runtime, which appends them under the
//! partition's shard lock (so no coordinator write interleaves) and replays them: the group
//! coordinator applies or drops the producer's pending offsets; the transaction and share
//! coordinators hold no transactional records, so a marker changes nothing there (also at
//! load, where control batches are replayed the same way). Kafka appends these markers too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use rill_storage::{TopicPartition, TxnMarker};

use crate::coordinator::runtime::RuntimeError;
use crate::coordinator::{group, share, txn};
use crate::error::{runtime_error_code, storage_error_code, NONE};
use crate::state::BrokerState;

/// Durability of one written marker, as the partition's error code once known.
type Durable = Pin<Box<dyn Future<Output = i16> + Send>>;

/// Answers a WriteTxnMarkers request, each partition in turn.
pub async fn handle(
    state: &Arc<BrokerState>,
    r: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut markers = Vec::with_capacity(r.markers.len());
    for m in r.markers {
        let marker = TxnMarker {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            coordinator_epoch: m.coordinator_epoch,
            commit: m.transaction_result,
            timestamp_ms: now,
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for p in t.partition_indexes {
                let tp = TopicPartition::new(t.name.0.to_string(), p);
                let code = write(state, tp, marker).await;
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// Writes `marker` to `tp` on the I/O pool (a page-cache append) and waits for its
/// durability, to the partition's error code.
async fn write(state: &Arc<BrokerState>, tp: TopicPartition, marker: TxnMarker) -> i16 {
    let written = state
        .coordinate("txn marker", move |state| append(state, &tp, &marker))
        .await;
    match written {
        Ok(Ok(durable)) => durable.await,
        Ok(Err(code)) | Err(code) => code,
    }
}

/// Appends `marker` to `tp`, to its durability.
fn append(state: &BrokerState, tp: &TopicPartition, marker: &TxnMarker) -> Result<Durable, i16> {
    let coordinator = match tp.topic.as_str() {
        // The group coordinator applies or drops the producer's pending offsets as it
        // replays the marker.
        group::TOPIC => Some(state.groups.write_marker(tp.partition, marker)),
        txn::records::TOPIC => Some(state.txns.write_marker(tp.partition, marker)),
        share::records::TOPIC => Some(state.shares.write_marker(tp.partition, marker)),
        _ => None,
    };
    if let Some(written) = coordinator {
        let written = written.map_err(|e| match e {
            RuntimeError::NoPartition { .. } => ResponseError::UnknownTopicOrPartition.code(),
            e => runtime_error_code(&e),
        })?;
        return Ok(Box::pin(async move {
            match written.committed().await {
                Ok(()) => NONE,
                Err(e) => runtime_error_code(&e),
            }
        }));
    }
    let log = state.log(tp)?;
    let info = log
        .append_marker(marker)
        .map_err(|e| storage_error_code(&e))?;
    // Wake read_committed fetchers whose last stable offset just moved (under durable
    // visibility the flush does).
    state.logs.notify_listener(tp);
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.on_durable(
        info.last_offset + 1,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    Ok(Box::pin(async move {
        match rx.await {
            Ok(Ok(())) => NONE,
            Ok(Err(e)) => storage_error_code(&e),
            Err(_) => ResponseError::KafkaStorageError.code(),
        }
    }))
}
