//! Where the transaction coordinator's markers go: a commit or abort control batch appended to
//! each partition of a transaction, through storage (`Log::append_marker`), which closes the
//! producer's transaction there and moves the partition's last stable offset; for
//! `__consumer_offsets` through the group coordinator, which must replay them.

use std::sync::Arc;

use rill_storage::{LogManager, StorageError, TopicPartition, TxnMarker};

use super::coordinator::{MarkerDurable, MarkerError, MarkerWriter};
use crate::coordinator::group::GroupCoordinator;

/// Writes markers into this broker's partitions.
pub struct PartitionMarkers {
    logs: Arc<LogManager>,
    /// The offsets topic's partitions are the group coordinator's: it applies or drops the
    /// transaction's offsets when it sees the marker.
    groups: Arc<GroupCoordinator>,
}

impl PartitionMarkers {
    pub fn new(logs: Arc<LogManager>, groups: Arc<GroupCoordinator>) -> Self {
        PartitionMarkers { logs, groups }
    }
}

fn failed(tp: &TopicPartition, e: &StorageError) -> MarkerError {
    match e {
        StorageError::Deleted { .. } => MarkerError::PartitionGone,
        _ => MarkerError::Failed(format!("{tp}: {e}")),
    }
}

impl MarkerWriter for PartitionMarkers {
    fn write(&self, tp: &TopicPartition, marker: &TxnMarker) -> Result<MarkerDurable, MarkerError> {
        if tp.topic == crate::coordinator::group::TOPIC {
            // The group coordinator applies or drops the transaction's offsets as it replays
            // the marker.
            let written = self
                .groups
                .write_marker(tp.partition, marker)
                .map_err(|e| MarkerError::Failed(format!("{tp}: {e}")))?;
            let tp = tp.clone();
            return Ok(Box::pin(async move {
                written
                    .committed()
                    .await
                    .map_err(|e| MarkerError::Failed(format!("{tp}: {e}")))
            }));
        }
        let log = match self.logs.get_log(tp) {
            Ok(Some(log)) => log,
            Ok(None) => return Err(MarkerError::PartitionGone),
            Err(e) => return Err(failed(tp, &e)),
        };
        let info = log.append_marker(marker).map_err(|e| failed(tp, &e))?;
        // Under "written" visibility the last stable offset has moved already: wake
        // read_committed fetchers now (under durable visibility the flush does).
        self.logs.notify_listener(tp);
        let (tx, rx) = tokio::sync::oneshot::channel();
        log.on_durable(
            info.last_offset + 1,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        let tp = tp.clone();
        Ok(Box::pin(async move {
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(failed(&tp, &e)),
                Err(_) => Err(MarkerError::Failed(format!("{tp}: durability unknown"))),
            }
        }))
    }
}
