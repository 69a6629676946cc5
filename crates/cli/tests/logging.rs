//! Broker logs on a real `rill serve` process with stderr on a pipe: plain text with no ANSI
//! escape codes, or one JSON object per line with `--log-format json`; and log levels changed
//! at runtime through the BROKER_LOGGER resource (`rill config alter --broker-logger`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_exit, rill_bin, run, stdout};

/// A `rill serve` whose stderr lines the test reads; killed on drop.
struct Served {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(extra: &[&str]) -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(rill_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env_remove("RILL_LOG")
            .env_remove("RILL_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rill serve");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("rill listening on ") {
                    let _ = addr_tx.send(addr.to_string());
                }
            }
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("broker ready within 30 s");
        Served {
            child,
            addr,
            lines,
            _dir: dir,
        }
    }

    fn rill(&self, args: &[&str]) -> std::process::Output {
        let mut full = args.to_vec();
        full.extend(["--bootstrap-server", &self.addr]);
        run(&full, None)
    }

    /// Lines logged so far (waiting up to `wait` for more while none arrive).
    fn drain(&self, wait: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self.lines.recv_timeout(wait) {
            out.push(line);
            if Instant::now() > deadline {
                break;
            }
        }
        out
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn text_logs_have_no_colour_codes_on_a_pipe() {
    let served = Served::start(&["--log-level", "info"]);
    let o = served.rill(&["topic", "create", "plain"]);
    assert_exit(&o, 0);
    let lines = served.drain(Duration::from_millis(500));
    assert!(
        lines.iter().any(|l| l.contains("broker ready")),
        "{lines:?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "text, not JSON: {line}"
        );
    }
}

#[test]
fn json_logs_and_levels_changed_at_runtime() {
    let served = Served::start(&["--log-level", "warn", "--log-format", "json"]);
    // An info event while the level is warn: not logged.
    assert_exit(
        &served.rill(&[
            "config",
            "alter",
            "--broker",
            "0",
            "--set",
            "message.max.bytes=500000",
        ]),
        0,
    );
    let o = served.rill(&["config", "describe", "--broker-logger", "0"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("root=WARN (DYNAMIC_BROKER_LOGGER_CONFIG)"),
        "{}",
        stdout(&o)
    );
    // rill_broker to INFO at runtime: its info events appear, in JSON.
    assert_exit(
        &served.rill(&[
            "config",
            "alter",
            "--broker-logger",
            "0",
            "--set",
            "rill_broker=INFO",
        ]),
        0,
    );
    assert_exit(
        &served.rill(&[
            "config",
            "alter",
            "--broker",
            "0",
            "--set",
            "message.max.bytes=400000",
        ]),
        0,
    );
    let o = served.rill(&["config", "describe", "--broker-logger", "0"]);
    assert!(
        stdout(&o).contains("rill_broker::fetch=INFO"),
        "{}",
        stdout(&o)
    );
    let bad = served.rill(&[
        "config",
        "alter",
        "--broker-logger",
        "0",
        "--set",
        "no.such.Logger=DEBUG",
    ]);
    assert_ne!(bad.status.code(), Some(0), "unknown logger refused");

    let lines = served.drain(Duration::from_millis(500));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for e in &events {
        assert!(
            e["level"].is_string() && e["target"].is_string() && e["timestamp"].is_string(),
            "{e}"
        );
    }
    let changed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["message"] == "changed dynamic broker configs")
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "only the change after the level went to INFO: {lines:?}"
    );
    assert_eq!(changed[0]["level"], "INFO");
    assert!(
        events.iter().any(|e| e["message"] == "log levels changed"),
        "{lines:?}"
    );
}
