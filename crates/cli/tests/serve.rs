//! The `rill serve` process contract that test harnesses rely on: exactly one ready line on
//! stdout with the real port, a working listener, exit 0 on SIGTERM and SIGINT, and a clear
//! failure for a data directory already in use.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

fn data_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rill-cli-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn spawn(dir: &PathBuf) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RILL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rill")
}

/// Reads stdout on a thread: (first line, everything after it at exit).
fn watch_stdout(child: &mut Child) -> (String, mpsc::Receiver<String>) {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        let _ = reader.read_line(&mut first);
        let _ = tx.send(first);
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    let first = rx.recv_timeout(TIMEOUT).expect("ready line in time");
    (first, rx)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(started.elapsed() < TIMEOUT, "rill did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn prints_one_ready_line_serves_and_exits_zero_on_signals() {
    for sig in ["TERM", "INT"] {
        let dir = data_dir(sig);
        let mut child = spawn(&dir);
        let (first, rest) = watch_stdout(&mut child);
        let addr = first
            .trim_end()
            .strip_prefix("rill listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {first:?}"))
            .to_string();
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addr}"
        );
        let stream = TcpStream::connect(&addr).expect("listener works");
        drop(stream);
        signal(&child, sig);
        let status = wait_exit(&mut child);
        assert!(status.success(), "SIG{sig}: {status}");
        let rest = rest.recv_timeout(TIMEOUT).expect("stdout closed");
        assert_eq!(rest, "", "stdout has only the ready line");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_data_dir_in_use_is_refused() {
    let dir = data_dir("locked");
    let mut first = spawn(&dir);
    let _ready = watch_stdout(&mut first);
    let mut second = spawn(&dir);
    let status = wait_exit(&mut second);
    assert!(!status.success());
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("in use by another rill process"),
        "{stderr}"
    );
    signal(&first, "TERM");
    assert!(wait_exit(&mut first).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Log lines written to a pipe (a file, a log shipper) carry no ANSI colour codes.
#[test]
fn logs_to_a_pipe_are_plain_text() {
    let dir = data_dir("plain-logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--data-dir",
        ])
        .arg(&dir)
        .env("RILL_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rill");
    let _ready = watch_stdout(&mut child);
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(stderr.contains("INFO"), "info lines were logged: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes: {stderr:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
