//! The accept loop: one task per connection, bounded by a semaphore, and graceful shutdown.
//!
//! As in mini-redis, a permit is taken *before* `accept`, so at most `max_connections`
//! connections are served and the rest wait in the kernel's backlog instead of costing us
//! memory. On shutdown the loop stops accepting, tells every connection to stop after its
//! current request, and waits for them (bounded by `shutdown_grace_ms`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::connection::{Connection, Frame, RequestMemory};
use crate::dispatch::{self, Handled};
use crate::error::ConnectionError;
use crate::in_flight::{Answer, InFlight};
use crate::metrics::Metrics;
use crate::response::Response;
use crate::state::BrokerState;

/// Longest pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MS_MAX: u64 = 5_000;

/// The next connection id: unique for the life of the process (share sessions are tied to
/// the connection that last used them and end with it). Starts at 1; 0 is "no connection".
static NEXT_CONNECTION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

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

/// What woke a connection's loop.
enum Event {
    Frame(Result<Option<Frame>, ConnectionError>),
    Started(Result<Handled, ConnectionError>),
    Answer(Answer),
    /// The quota mute is over: reading resumes.
    Unmuted,
    Stop,
}

/// A request whose in-order part (`dispatch::start`) is running.
type Starting = Pin<Box<dyn Future<Output = Result<Handled, ConnectionError>> + Send>>;

/// Starts a request's in-order part; with its frame size and its share of the request budget.
fn start(
    state: &Arc<BrokerState>,
    frame: Frame,
    peer: Option<std::net::SocketAddr>,
    connection_id: u64,
) -> (Starting, usize, Option<OwnedSemaphorePermit>) {
    let state = Arc::clone(state);
    let frame_bytes = frame.body.len();
    let body = frame.body;
    let start: Starting =
        Box::pin(async move { dispatch::start(&state, body, peer, connection_id).await });
    (start, frame_bytes, frame.memory)
}

/// Serves one connection, pipelined: reads a frame, starts its request (`dispatch::start`:
/// the part that takes effect, in request order), and reads one more frame while that part
/// runs (a produce's append on the I/O pool), so receiving request N+1 overlaps appending
/// request N; that frame is started once request N's part is done. Earlier requests wait for
/// durability or long-poll meanwhile; answers are written strictly in request order
/// ([`InFlight`]) and keep being written while a request starts. Stops at
/// EOF, on a protocol error (after answering the requests before it), when shutdown is
/// signalled (after answering what was started), or when the connection makes no progress for
/// `connections_max_idle_ms` (Kafka's `connections.max.idle.ms`), so idle or stalled clients
/// cannot hold slots forever.
async fn serve(
    stream: TcpStream,
    state: Arc<BrokerState>,
    memory: RequestMemory,
    mut stop: watch::Receiver<bool>,
) {
    let peer = stream.peer_addr().ok();
    let connection_id = NEXT_CONNECTION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Counts this connection as open until the task ends, aborted or not.
    let _open = state.metrics.connection_opened();
    let mut connection = Connection::new(
        stream,
        state.config.socket_request_max_bytes,
        memory,
        state.write_mode,
        state.cold_reads.clone(),
        Arc::clone(&state.metrics),
    );
    let idle_ms = state.config.connections_max_idle_ms;
    let idle = Duration::from_millis(idle_ms);
    let mut in_flight = InFlight::default();
    // The request being started, its frame size and its share of the request budget.
    let mut starting: Option<(Starting, usize, Option<OwnedSemaphorePermit>)> = None;
    // The one frame read while `starting` runs; started as soon as that is done.
    let mut read_ahead: Option<Frame> = None;
    let result: Result<(), ConnectionError> = async {
        // Set once nothing more is read: the requests already started are answered first.
        let mut closing: Option<Result<(), ConnectionError>> = None;
        // Set after sending a throttled response (client quotas): nothing is read until then.
        let mut muted_until: Option<tokio::time::Instant> = None;
        loop {
            if starting.is_none() {
                if let Some(frame) = read_ahead.take() {
                    starting = Some(start(&state, frame, peer, connection_id));
                }
            }
            let is_starting = starting.is_some();
            if closing.is_some() && in_flight.is_empty() && !is_starting {
                return closing.unwrap_or(Ok(()));
            }
            let muted = muted_until.is_some();
            let answering = !in_flight.is_empty();
            // The request being started counts against the connection's in-flight bounds.
            let starting_bytes = starting.as_ref().map_or(0, |(_, bytes, _)| *bytes);
            let reading = closing.is_none()
                && read_ahead.is_none()
                && in_flight.has_room_beside(usize::from(is_starting), starting_bytes)
                && !muted;
            // A muted connection is waiting on the broker, not idle.
            let idling = !answering && !is_starting && !muted;
            let unmute_at = muted_until.unwrap_or_else(tokio::time::Instant::now);
            let event = tokio::select! {
                biased;
                answer = in_flight.next_answer(), if answering => Event::Answer(answer),
                handled = async {
                    match starting.as_mut() {
                        Some((start, _, _)) => start.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if is_starting => Event::Started(handled),
                _ = stop.wait_for(|stopped| *stopped), if closing.is_none() => Event::Stop,
                frame = connection.read_frame(), if reading => Event::Frame(frame),
                () = tokio::time::sleep_until(unmute_at), if muted => Event::Unmuted,
                () = tokio::time::sleep(idle), if idling => {
                    return Err(ConnectionError::Idle { idle_ms })
                }
            };
            match event {
                Event::Stop | Event::Frame(Ok(None)) => closing = Some(Ok(())),
                // A request's in-order part is never cut off halfway: a bad frame read behind
                // it closes the connection once the requests before it are answered.
                Event::Frame(Err(e)) if is_starting => closing = Some(Err(e)),
                Event::Frame(Err(e)) => return Err(e),
                Event::Unmuted => muted_until = None,
                Event::Answer(answer) => {
                    let throttle_ms = write(&mut connection, answer?, idle, idle_ms).await?;
                    mute(&mut muted_until, throttle_ms);
                }
                Event::Frame(Ok(Some(frame))) => {
                    if !in_flight.is_empty() || is_starting {
                        Metrics::add(&state.metrics.pipelined_requests_total, 1);
                    }
                    if is_starting {
                        read_ahead = Some(frame);
                    } else {
                        starting = Some(start(&state, frame, peer, connection_id));
                    }
                }
                Event::Started(handled) => {
                    let Some((_, frame_bytes, memory)) = starting.take() else {
                        continue;
                    };
                    match handled {
                        // Nothing before it to wait for: answer at once, without queueing.
                        Ok(Handled::Ready(response)) if in_flight.is_empty() => {
                            drop(memory);
                            let throttle_ms =
                                write(&mut connection, response, idle, idle_ms).await?;
                            mute(&mut muted_until, throttle_ms);
                        }
                        Ok(Handled::Ready(response)) => {
                            in_flight.push_answered(Ok(response), frame_bytes, memory);
                        }
                        Ok(Handled::Waiting(waiting)) => {
                            in_flight.push_waiting(waiting, frame_bytes, memory);
                        }
                        // The requests before this one still get their answers, then the close;
                        // a frame read behind it is not started.
                        Err(e) => {
                            read_ahead = None;
                            closing = Some(Err(e));
                        }
                    }
                }
            }
        }
    }
    .await;
    // What the connection's share sessions acquired is released now, not at lock expiry.
    crate::share_fetch::connection_closed(&state, connection_id).await;
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

/// Writes one response, if the request has one. A client that stops reading holds its
/// connection slot only `idle` long.
///
/// # Returns
/// How long the connection is to be muted now (the response's quota throttle, in ms).
async fn write(
    connection: &mut Connection,
    response: Option<Response>,
    idle: Duration,
    idle_ms: u64,
) -> Result<u64, ConnectionError> {
    let Some(response) = response else {
        return Ok(0);
    };
    tokio::time::timeout(idle, connection.write_response(&response))
        .await
        .map_err(|_| ConnectionError::Idle { idle_ms })??;
    Ok(response.throttle_ms())
}

/// Mutes the connection for `throttle_ms` from now (KIP-219: after the throttled response is
/// sent), extending a mute already in force, never shortening it.
fn mute(muted_until: &mut Option<tokio::time::Instant>, throttle_ms: u64) {
    if throttle_ms == 0 {
        return;
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(throttle_ms);
    *muted_until = Some(muted_until.map_or(until, |m| m.max(until)));
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
