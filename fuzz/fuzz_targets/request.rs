//! Request framing and decoding through the real dispatch of an in-process broker: the input
//! is what a client would write to the socket (size-prefixed frames, back to back). Each frame
//! is checked by `frame::check` as the connection does and handed to `dispatch::dispatch`.
//! The broker runs (its tickers complete rebalances and expire sessions) on a current-thread
//! runtime whose clock is paused, so long polls, group deadlines (on tokio's clock,
//! `group_timers::now`) and other waits end at once in virtual time, and each request is
//! bounded by 5 s of that time. The broker lives across inputs, as across a client's
//! requests; past 32 topics or 256 partitions, the input's remaining frames are skipped and
//! the fuzzed topics deleted, and a topic may have at most 16 partitions.
//! Any panic (including in a broker task, counted by the broker) and any real hang
//! (libFuzzer's -timeout) is a finding.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rill_broker::state::BrokerState;
use rill_broker::{frame, topics, Broker, BrokerConfig};

/// Largest frame the fuzzed broker accepts (as `socket.request.max.bytes`).
const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Frames dispatched per input, so one input cannot run for long.
const MAX_FRAMES: usize = 16;
/// Virtual time a request may wait; one still waiting then is dropped, as when a client
/// disconnects. While a request waits, the broker's tickers run at every 100 ms (groups) and
/// second (storage) of virtual time on the blocking pool, so this bound sets what a waiting
/// input costs (an hour made such inputs run 36 000 group ticks, and most of the target's
/// time). Five seconds covers clients' default long polls (500 ms) and rebalances whose
/// members' rebalance timeouts are short; fuzzed timeouts reach those easily.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// Topics and partitions the broker may hold between inputs (one topic may have 10 000
/// partitions): past either, every topic but the internal one is deleted (as DeleteTopics
/// does) after the input, so memory, open files, storage's tick (which visits every partition)
/// and the data directory do not grow with the inputs run.
const MAX_TOPICS: usize = 32;
const MAX_PARTITIONS: i64 = 256;
/// Partitions one fuzzed topic may have (`max_partitions_per_topic`). Each is a directory and
/// files created, then deleted at the reset above: with the broker's 10 000, a CreateTopics
/// whose count the fuzzer bumped made one input cost seconds, and such inputs took most of
/// the target's time. Sixteen still covers every multi-partition path.
const PARTITIONS_PER_TOPIC: i32 = 16;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    state: Arc<BrokerState>,
    _dir: tempfile::TempDir,
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
            max_partitions_per_topic: PARTITIONS_PER_TOPIC,
            ..BrokerConfig::default()
        };
        // Group deadlines use the wall clock, not tokio's paused one: no initial delay, so a
        // JoinGroup costs a tick, not three seconds.
        let mut config = config;
        config.groups.initial_rebalance_delay_ms = 0;
        let broker = runtime
            .block_on(Broker::start(config))
            .expect("broker starts");
        let state = broker.state();
        // Runs whenever an input is dispatched (block_on drives every task).
        runtime.spawn(broker.run(std::future::pending()));
        Fixture {
            runtime,
            state,
            _dir: dir,
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
        let _ = f.runtime.block_on(async {
            tokio::time::timeout(
                REQUEST_WAIT,
                rill_broker::dispatch::dispatch(&f.state, frame, None, 0),
            )
            .await
        });
        if over_limits(f) {
            break; // the rest of the input would only create more to delete
        }
    }
    assert_eq!(f.state.metrics.task_panics(), 0, "a broker task panicked");
    if over_limits(f) {
        let all = f.state.topics.all();
        let fuzzed = || all.iter().filter(|m| !topics::is_internal(&m.name));
        for meta in fuzzed() {
            let deleted = f.state.topics.delete(&f.state.logs, &meta.name);
            deleted.unwrap_or_else(|e| panic!("deleting topic {}: {e}", meta.name));
            f.state.forget_topic(&meta.name);
        }
    }
});

/// Whether the fuzzed topics passed `MAX_TOPICS` or `MAX_PARTITIONS`.
fn over_limits(f: &Fixture) -> bool {
    let all = f.state.topics.all();
    let fuzzed = all.iter().filter(|m| !topics::is_internal(&m.name));
    let (count, partitions) =
        fuzzed.fold((0, 0i64), |(n, p), m| (n + 1, p + i64::from(m.partitions)));
    count > MAX_TOPICS || partitions > MAX_PARTITIONS
}
