//! Crash-test plumbing shared by the SIGKILL tests (`crash_loop.rs`, `delayed_crash.rs`): a
//! `rill serve` child process on a data directory that outlives it, SIGKILL and restart, and
//! the reproducible random source of the kill timing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::rill_bin;

/// An environment variable as a number, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: kill timings and test data, reproducible from the seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Starts `rill serve` on `dir` (loopback, port 0, no metrics) and returns it with its
/// address (at most 30 s).
pub fn serve(dir: &Path) -> (Child, String) {
    serve_with(Command::new(rill_bin()), dir, Duration::from_secs(30))
}

/// [`serve`] through `command` (the `rill` binary itself, or a shell that execs it with
/// other limits), waiting at most `ready_within` for its listening line.
pub fn serve_with(mut command: Command, dir: &Path, ready_within: Duration) -> (Child, String) {
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--no-metrics"])
        .arg("--data-dir")
        .arg(dir)
        .env("RILL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rill serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("rill listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(ready_within)
        .unwrap_or_else(|_| panic!("broker ready within {ready_within:?}"));
    (child, addr)
}

/// SIGKILLs `child` (our own `rill serve`) and waits for it to be gone.
pub fn sigkill(child: &mut Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}
