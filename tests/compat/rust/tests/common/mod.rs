//! What the suites here share: starting and stopping a real `rill` (or using KAFKA_BOOTSTRAP).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The broker under test; stops a started rill on drop (SIGTERM, then SIGKILL).
pub struct Broker {
    pub bootstrap: String,
    child: Option<Child>,
    tmp: Option<PathBuf>,
    /// Names the temp dir and the copied stderr log (`<name>-rill.log`).
    name: String,
}

impl Broker {
    pub fn start(name: &str) -> Broker {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            if !b.is_empty() {
                return Broker {
                    bootstrap: b,
                    child: None,
                    tmp: None,
                    name: name.to_string(),
                };
            }
        }
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
        let bin = std::env::var("RILL_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo.join("target/release/rill"));
        assert!(
            bin.exists(),
            "rill binary not found at {} (build it or set RILL_BIN)",
            bin.display()
        );
        let tmp = std::env::temp_dir().join(format!("rill-compat-{name}-{}", std::process::id()));
        let data = tmp.join("data");
        std::fs::create_dir_all(&data).expect("create temp data dir");
        let stderr = std::fs::File::create(tmp.join("rill-stderr.log")).expect("stderr log");
        let mut child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn rill");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines
                .next()
                .and_then(|l| l.ok())
                .unwrap_or_else(|| "<eof>".into());
            let _ = tx.send(first);
            for _ in lines {} // drain so the broker never blocks on stdout
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "rill printed no listening line within {READY_TIMEOUT:?}; see {}",
                    tmp.display()
                );
            }
        };
        let addr = line
            .strip_prefix("rill listening on ")
            .map(str::trim)
            .filter(|a| a.starts_with("127.0.0.1:"));
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("unexpected first line from rill: {line:?}");
        };
        Broker {
            bootstrap: addr.to_string(),
            child: Some(child),
            tmp: Some(tmp),
            name: name.to_string(),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(tmp) = &self.tmp {
            if let Ok(dir) = std::env::var("RILL_COMPAT_LOG_DIR") {
                let _ = std::fs::copy(
                    tmp.join("rill-stderr.log"),
                    PathBuf::from(dir).join(format!("{}-rill.log", self.name)),
                );
            }
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
}
