//! The accept loop: one task per connection, bounded by a semaphore, and graceful shutdown.
//!
//! As in mini-redis, a permit is taken *before* `accept`, so at most `max_connections`
//! connections are served and the rest wait in the kernel's backlog instead of costing us
//! memory. On shutdown the loop stops accepting, tells every connection to stop after its
//! current request, and waits for them (bounded by `shutdown_grace_ms`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::connection::{Connection, RequestMemory};
use crate::dispatch;
use crate::error::ConnectionError;
use crate::metrics::Metrics;
use crate::state::BrokerState;

/// Longest pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MS_MAX: u64 = 5_000;

/// The connection limit (`max.connections`), changeable at runtime as a dynamic broker
/// config: raising it adds permits at once; lowering it takes permits away as they are free,
/// so open connections are never cut and new ones wait until the count is under the limit.
pub struct ConnectionLimit {
    semaphore: Arc<Semaphore>,
    limit: parking_lot::Mutex<usize>,
}

impl ConnectionLimit {
    /// A limit of `max_connections` (at least 1).
    pub fn new(max_connections: usize) -> ConnectionLimit {
        let limit = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: parking_lot::Mutex::new(limit),
        }
    }

    /// The permits the listener takes one of per connection.
    pub fn semaphore(&self) -> Arc<Semaphore> {
        Arc::clone(&self.semaphore)
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        *self.limit.lock()
    }

    /// Changes the limit. Must run inside the tokio runtime (lowering it below the open
    /// connections waits for them in a task).
    pub fn set(&self, max_connections: usize) {
        let wanted = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let mut limit = self.limit.lock();
        if wanted > *limit {
            self.semaphore.add_permits(wanted - *limit);
        } else if wanted < *limit {
            let excess = *limit - wanted;
            let rest = excess - self.semaphore.forget_permits(excess);
            if rest > 0 {
                let semaphore = Arc::clone(&self.semaphore);
                // `rest` is below the limit, itself below MAX_PERMITS (< u32::MAX).
                let rest = u32::try_from(rest).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many_owned(rest).await {
                        permits.forget();
                    }
                });
            }
        }
        *limit = wanted;
    }
}

/// Accepts until `shutdown` completes, then drains the connections.
pub async fn run(
    listener: TcpListener,
    state: Arc<BrokerState>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = state.connection_limit.semaphore();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let memory = RequestMemory::new(state.config.queued_max_request_bytes);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                // Only a closed semaphore fails, and nothing closes this one.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            () = &mut shutdown => break,
        };
        Metrics::add(&state.metrics.connections_accepted_total, 1);
        let connection_state = Arc::clone(&state);
        let stop = stop_rx.clone();
        let memory = memory.clone();
        connections.spawn(async move {
            serve(stream, connection_state, memory, stop).await;
            drop(permit);
        });
        // Reap finished connections so the set does not grow with every client ever seen.
        while let Some(done) = connections.try_join_next() {
            reap(&state.metrics, done);
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = connections.join_next().await {
            reap(&state.metrics, done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections still busy after the shutdown grace period; aborting them"
        );
        connections.abort_all();
        while let Some(done) = connections.join_next().await {
            reap(&state.metrics, done);
        }
    }
}

/// Counts a connection task that panicked instead of returning (a bug that would otherwise
/// look like a closed connection).
fn reap(metrics: &Metrics, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        metrics.task_failed("connection", &e);
    }
}

/// Accepts one connection, backing off on errors (e.g. EMFILE) instead of spinning.
async fn accept(listener: &TcpListener) -> TcpStream {
    let mut backoff_ms = 50;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "accepted connection");
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "set_nodelay failed");
                }
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms, "accept failed");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(ACCEPT_BACKOFF_MS_MAX);
            }
        }
    }
}

/// Serves one connection: read a frame, handle it, write the response, repeat. Stops at EOF,
/// on a protocol error (closing the connection), when shutdown is signalled between
/// requests, or when the connection makes no progress for `connections_max_idle_ms`
/// (Kafka's `connections.max.idle.ms`), so idle or stalled clients cannot hold slots forever.
async fn serve(
    stream: TcpStream,
    state: Arc<BrokerState>,
    memory: RequestMemory,
    mut stop: watch::Receiver<bool>,
) {
    let peer = stream.peer_addr().ok();
    // Counts this connection as open until the task ends, aborted or not.
    let _open = state.metrics.connection_opened();
    let mut connection = Connection::new(
        stream,
        state.config.socket_request_max_bytes,
        memory,
        state.write_mode,
        Arc::clone(&state.metrics),
    );
    let idle_ms = state.config.connections_max_idle_ms;
    let idle = Duration::from_millis(idle_ms);
    let result: Result<(), ConnectionError> = async {
        loop {
            let frame = tokio::select! {
                frame = connection.read_frame() => frame?,
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                () = tokio::time::sleep(idle) => return Err(ConnectionError::Idle { idle_ms }),
            };
            let Some(frame) = frame else {
                return Ok(());
            };
            // The frame's share of the request budget is held until the request is handled.
            let _memory = frame.memory;
            if let Some(response) = dispatch::dispatch(&state, frame.body, peer).await? {
                // A client that stops reading holds its connection slot only this long.
                tokio::time::timeout(idle, connection.write_response(&response))
                    .await
                    .map_err(|_| ConnectionError::Idle { idle_ms })??;
            }
        }
    }
    .await;
    match result {
        Ok(()) => tracing::debug!(?peer, "connection closed"),
        Err(ConnectionError::Io(e)) => tracing::debug!(?peer, error = %e, "connection i/o error"),
        Err(ConnectionError::Idle { idle_ms }) => {
            tracing::info!(?peer, idle_ms, "closing idle connection");
        }
        Err(e) => {
            Metrics::add(&state.metrics.connections_rejected_total, 1);
            tracing::warn!(?peer, error = %e, "closing connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_connection_task_is_counted_not_taken_for_a_close() {
        let metrics = Metrics::default();
        let mut set = JoinSet::new();
        set.spawn(async {});
        set.spawn(async { panic!("connection bug") });
        while let Some(done) = set.join_next().await {
            reap(&metrics, done);
        }
        assert_eq!(metrics.task_panics(), 1);
        // A task aborted at shutdown is not a bug.
        set.spawn(std::future::pending::<()>());
        set.abort_all();
        while let Some(done) = set.join_next().await {
            reap(&metrics, done);
        }
        assert_eq!(metrics.task_panics(), 1);
    }
}
