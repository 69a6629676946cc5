//! Request framing and decoding through the real dispatch of an in-process broker: the input
//! is what a client would write to the socket (size-prefixed frames, back to back). Each frame
//! is checked by `frame::check` as the connection does and handed to `dispatch::dispatch`.
//! Tokio's clock is paused, so long polls and other waits end at once instead of stalling.
//! Any panic (including in a blocking task, counted by the broker) is a finding.

#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rill_broker::state::BrokerState;
use rill_broker::{frame, Broker, BrokerConfig};

/// Largest frame the fuzzed broker accepts (as `socket.request.max.bytes`).
const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Frames dispatched per input, so one input cannot run for long.
const MAX_FRAMES: usize = 16;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    state: Arc<BrokerState>,
    _dir: tempfile::TempDir,
    _broker: Broker,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            socket_request_max_bytes: MAX_FRAME_BYTES,
            ..BrokerConfig::default()
        };
        let broker = runtime
            .block_on(Broker::start(config))
            .expect("broker starts");
        let state = broker.state();
        Fixture {
            runtime,
            state,
            _dir: dir,
            _broker: broker,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut rest = data;
    for _ in 0..MAX_FRAMES {
        let size = match frame::check(rest, MAX_FRAME_BYTES) {
            Ok(Some(size)) => size,
            // Too short for a prefix, or a prefix the connection would close on.
            Ok(None) | Err(_) => break,
        };
        let Some(body) = rest.get(4..4 + size) else {
            break; // the connection would wait for more bytes
        };
        rest = &rest[4 + size..];
        let frame = Bytes::copy_from_slice(body);
        let _ = f
            .runtime
            .block_on(rill_broker::dispatch::dispatch(&f.state, frame, None));
    }
    assert_eq!(f.state.metrics.task_panics(), 0, "a broker task panicked");
});
