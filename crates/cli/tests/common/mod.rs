//! A real `rill serve` process on loopback for the command-line tests, and helpers to run
//! `rill` commands against it with bounded time.

#![allow(dead_code)]

pub mod crash;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest any single command may run before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub fn rill_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rill")
}

/// A broker process with its own data directory, killed on drop.
pub struct Broker {
    child: Child,
    pub addr: String,
    pub metrics_addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// The `rill serve` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `rill serve` on 127.0.0.1:0 (metrics on 127.0.0.1:0 too) and waits for the
    /// readiness line and the banner's metrics address (at most 30 s).
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Broker {
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
            .env("RILL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rill serve");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((true, line));
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send((false, line));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut addr, mut metrics_addr) = (None, None);
        while addr.is_none() || metrics_addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let (is_stdout, line) = rx.recv_timeout(left).expect("broker ready within 30 s");
            if is_stdout {
                addr = line.strip_prefix("rill listening on ").map(str::to_string);
            } else if let Some(rest) = line.split("http://").nth(1) {
                metrics_addr = rest.strip_suffix("/metrics").map(str::to_string);
            }
        }
        // Keep draining so the broker never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Broker {
            child,
            addr: addr.unwrap_or_default(),
            metrics_addr: metrics_addr.unwrap_or_default(),
            _dir: dir,
        }
    }

    /// Runs `rill ARGS... --bootstrap-server ADDR` (the flag is appended).
    pub fn rill(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--bootstrap-server", &self.addr]);
        run(&full, None)
    }

    /// As [`Broker::rill`], with `input` on stdin.
    pub fn rill_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--bootstrap-server", &self.addr]);
        run(&full, Some(input))
    }

    /// GET /metrics.
    pub fn scrape(&self) -> String {
        let mut stream = TcpStream::connect(&self.metrics_addr).expect("connect to /metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("http response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `rill ARGS` with optional stdin, killing it after [`COMMAND_TIMEOUT`].
pub fn run(args: &[&str], input: Option<&str>) -> Output {
    run_env(args, input, &[])
}

pub fn run_env(args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Output {
    run_command(rill_bin(), args, input, env)
}

/// Runs another program (e.g. `script`) with the same bounds.
pub fn run_program(program: &str, args: &[&str]) -> Output {
    run_command(program, args, None, &[])
}

fn run_command(program: &str, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn rill");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    // Read both pipes on threads so a chatty command never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("rill {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit code `code`, showing the output when it differs.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}
