//! The requests a pipelined connection has started and not yet answered.
//!
//! Each request first runs the part that must happen in request order (a produce's appends, a
//! fetch's first read, all of any other request; `dispatch::start`). What is left waits for
//! something outside the connection: a flusher pass, an append to a long-polled partition. Those
//! waits progress together here, and answers come out strictly in request order, as Kafka
//! promises per connection. The queue is bounded by count and by request bytes, so a client
//! that pipelines without limit, or stops reading, costs a bounded amount of memory.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::task::Poll;

use tokio::sync::OwnedSemaphorePermit;

use crate::dispatch::Waiting;
use crate::error::ConnectionError;
use crate::response::Response;

/// Requests a connection may have started and not answered. Kafka's clients send at most 5 by
/// default (`max.in.flight.requests.per.connection`); librdkafka without idempotence allows
/// far more, which we simply stop reading beyond (TCP flow control holds them back).
pub const MAX_IN_FLIGHT_REQUESTS: usize = 16;

/// Request bytes a connection may have started and not answered. A frame is read only while
/// the connection is below this, so it holds at most this plus one frame
/// (`socket.request.max.bytes`), and large frames are also charged to the broker-wide
/// request budget until answered.
pub const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;

/// What a request answered: its response, none (acks=0), or a reason to close the connection.
pub type Answer = Result<Option<Response>, ConnectionError>;

/// One started request.
struct Slot {
    state: SlotState,
    frame_bytes: usize,
    /// The frame's share of the request budget, given back when the request is answered.
    _memory: Option<OwnedSemaphorePermit>,
}

enum SlotState {
    Waiting(Waiting),
    Answered(Answer),
}

/// Started requests in request order.
#[derive(Default)]
pub struct InFlight {
    queue: VecDeque<Slot>,
    frame_bytes: usize,
}

impl InFlight {
    /// Requests started and not answered.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether every started request has been answered.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether another request may be read and started.
    pub fn has_room(&self) -> bool {
        self.has_room_beside(0, 0)
    }

    /// Whether another request may be read while `requests` more (of `frame_bytes` in all)
    /// are read and not yet queued here: the connection's read-ahead counts against the same
    /// bounds, so it holds at most the bounds plus one frame.
    pub fn has_room_beside(&self, requests: usize, frame_bytes: usize) -> bool {
        self.queue.len() + requests < MAX_IN_FLIGHT_REQUESTS
            && self.frame_bytes + frame_bytes < MAX_IN_FLIGHT_BYTES
    }

    /// Queues a request already answered; it goes out after those before it.
    pub fn push_answered(
        &mut self,
        answer: Answer,
        frame_bytes: usize,
        memory: Option<OwnedSemaphorePermit>,
    ) {
        self.push(SlotState::Answered(answer), frame_bytes, memory);
    }

    /// Queues a request whose answer is still waiting.
    pub fn push_waiting(
        &mut self,
        waiting: Waiting,
        frame_bytes: usize,
        memory: Option<OwnedSemaphorePermit>,
    ) {
        self.push(SlotState::Waiting(waiting), frame_bytes, memory);
    }

    fn push(&mut self, state: SlotState, frame_bytes: usize, memory: Option<OwnedSemaphorePermit>) {
        debug_assert!(self.queue.len() < MAX_IN_FLIGHT_REQUESTS);
        self.frame_bytes += frame_bytes;
        self.queue.push_back(Slot {
            state,
            frame_bytes,
            _memory: memory,
        });
    }

    /// The oldest request's answer, once it has one. Every waiting request is polled, so all
    /// of them progress while the oldest one waits. Cancel-safe: nothing is taken from the
    /// queue until the answer is returned. Pending forever when the queue is empty.
    pub fn next_answer(&mut self) -> impl Future<Output = Answer> + '_ {
        poll_fn(|cx| {
            for slot in &mut self.queue {
                if let SlotState::Waiting(waiting) = &mut slot.state {
                    if let Poll::Ready(answer) = waiting.as_mut().poll(cx) {
                        slot.state = SlotState::Answered(answer);
                    }
                }
            }
            if !matches!(
                self.queue.front(),
                Some(Slot {
                    state: SlotState::Answered(_),
                    ..
                })
            ) {
                return Poll::Pending;
            }
            let Some(slot) = self.queue.pop_front() else {
                return Poll::Pending;
            };
            self.frame_bytes -= slot.frame_bytes;
            match slot.state {
                SlotState::Answered(answer) => Poll::Ready(answer),
                // Checked just above.
                SlotState::Waiting(_) => unreachable!("the front slot was answered"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn waiting_on(rx: oneshot::Receiver<u8>) -> Waiting {
        Box::pin(async move {
            let tag = rx.await.expect("sender kept");
            // The tag travels in the error so the test can tell answers apart.
            Err(ConnectionError::TruncatedFrame {
                buffered_bytes: usize::from(tag),
            })
        })
    }

    fn tag(answer: Answer) -> usize {
        match answer {
            Err(ConnectionError::TruncatedFrame { buffered_bytes }) => buffered_bytes,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_leave_in_request_order_whatever_order_they_complete_in() {
        let mut in_flight = InFlight::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        in_flight.push_waiting(waiting_on(rx1), 10, None);
        in_flight.push_waiting(waiting_on(rx2), 20, None);
        in_flight.push_answered(Ok(None), 30, None);
        assert_eq!(in_flight.frame_bytes, 60);
        // The second completes first: nothing may come out before the first.
        tx2.send(2).expect("send");
        let early = tokio::time::timeout(Duration::from_millis(50), in_flight.next_answer()).await;
        assert!(early.is_err(), "an answer overtook an earlier request");
        tx1.send(1).expect("send");
        assert_eq!(tag(in_flight.next_answer().await), 1);
        assert_eq!(tag(in_flight.next_answer().await), 2);
        assert!(matches!(in_flight.next_answer().await, Ok(None)));
        assert!(in_flight.is_empty());
        assert_eq!(in_flight.frame_bytes, 0);
    }

    #[test]
    fn room_is_bounded_by_count_and_bytes() {
        let mut in_flight = InFlight::default();
        for _ in 0..MAX_IN_FLIGHT_REQUESTS - 1 {
            in_flight.push_answered(Ok(None), 1, None);
        }
        assert!(in_flight.has_room());
        // A request being started beside the queue takes the last place.
        assert!(!in_flight.has_room_beside(1, 1));
        in_flight.push_answered(Ok(None), 1, None);
        assert!(!in_flight.has_room());
        let mut big = InFlight::default();
        assert!(!big.has_room_beside(1, MAX_IN_FLIGHT_BYTES));
        big.push_answered(Ok(None), MAX_IN_FLIGHT_BYTES, None);
        assert!(!big.has_room());
        assert_eq!(big.len(), 1);
    }
}
