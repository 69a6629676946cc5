//! End-to-end tests of the `rill` command line against a real `rill serve` process on
//! loopback: every subcommand, its output (JSON parsed), error paths and exit codes.

mod common;

use common::{assert_exit, run, run_env, stderr, stdout, Broker};
use serde_json::Value;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn topic_lifecycle() {
    let broker = Broker::start();
    let o = broker.rill(&[
        "topic",
        "create",
        "orders",
        "-p",
        "3",
        "-c",
        "retention.ms=600000",
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("created topic orders with 3 partition(s)"));

    let o = broker.rill(&["topic", "create", "orders"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        stderr(&o)
    );
    assert_exit(
        &broker.rill(&["topic", "create", "orders", "--if-not-exists"]),
        0,
    );

    let o = broker.rill(&["topic", "list", "--json", "--exclude-internal"]);
    assert_exit(&o, 0);
    let list: Value = serde_json::from_str(&stdout(&o)).expect("list JSON");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["partitions"], 3);
    let o = broker.rill(&["topic", "list"]);
    assert!(stdout(&o).lines().any(|l| l == "orders"));

    let o = broker.rill(&["topic", "describe", "orders", "--json"]);
    assert_exit(&o, 0);
    let d: Value = serde_json::from_str(&stdout(&o)).expect("describe JSON");
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(3));
    assert_eq!(d["configs"]["retention.ms"], "600000");
    assert_eq!(d["partitions"][0]["log_end_offset"], 0);
    let o = broker.rill(&["topic", "describe", "orders"]);
    assert!(stdout(&o).contains("PartitionCount: 3"), "{}", stdout(&o));

    // An invalid value is refused by the broker, and the message says which.
    let o = broker.rill(&["topic", "alter", "orders", "-c", "retention.ms=soon"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("INVALID_CONFIG"), "{}", stderr(&o));
    assert!(stderr(&o).contains("retention.ms"), "{}", stderr(&o));
    // Fewer partitions are refused.
    let o = broker.rill(&["topic", "alter", "orders", "-p", "2"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("INVALID_PARTITIONS"), "{}", stderr(&o));
    let o = broker.rill(&[
        "topic",
        "alter",
        "orders",
        "-p",
        "5",
        "-c",
        "retention.ms=1000",
    ]);
    assert_exit(&o, 0);
    let d: Value = serde_json::from_str(&stdout(
        &broker.rill(&["topic", "describe", "orders", "--json"]),
    ))
    .expect("JSON");
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(5));
    assert_eq!(d["configs"]["retention.ms"], "1000");
    let o = broker.rill(&[
        "topic",
        "alter",
        "orders",
        "--delete-config",
        "retention.ms",
    ]);
    assert_exit(&o, 0);
    let d: Value = serde_json::from_str(&stdout(
        &broker.rill(&["topic", "describe", "orders", "--json"]),
    ))
    .expect("JSON");
    assert!(d["configs"].get("retention.ms").is_none(), "{d}");

    let o = broker.rill(&["topic", "alter", "orders"]);
    assert_exit(&o, 2);

    assert_exit(&broker.rill(&["topic", "delete", "orders"]), 0);
    let o = broker.rill(&["topic", "describe", "orders"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("topic 'orders' does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("rill topic create"),
        "hint: {}",
        stderr(&o)
    );
    assert_exit(&broker.rill(&["topic", "delete", "orders"]), 1);
    assert_exit(
        &broker.rill(&["topic", "delete", "orders", "--if-exists"]),
        0,
    );
}

/// `rill produce --delay` / `--deliver-at` on a delay-enabled topic: records wait (describe
/// shows them pending) and arrive when due with the delivery headers; a bad `--delay` is a
/// usage error.
#[test]
fn produce_with_delay() {
    let broker = Broker::start();
    let create = [
        "topic",
        "create",
        "later",
        "--config",
        "rill.delivery.delayed.enable=true",
    ];
    assert_exit(&broker.rill(&create), 0);
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let o = broker.rill_stdin(&["produce", "later", "--delay", "2s"], "a\nb\n");
    assert_exit(&o, 0);
    let at = (sent + 60_000).to_string();
    let o = broker.rill_stdin(&["produce", "later", "--deliver-at", &at], "far\n");
    assert_exit(&o, 0);
    let describe = [
        "topic",
        "describe",
        "later",
        "--metrics",
        &broker.metrics_addr,
    ];
    let o = broker.rill(&describe);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("DelayedPending: 3"), "{}", stdout(&o));
    assert_exit(&broker.rill(&["produce", "later", "--delay", "soon"]), 2);
    // Bounded: the records are due in 2 s.
    let mut records = Vec::new();
    for _ in 0..100 {
        let o = broker.rill(&[
            "consume",
            "later",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
        ]);
        assert_exit(&o, 0);
        records = json_lines(&stdout(&o));
        if records.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(records.len(), 2, "only the 2 s records are due");
    for r in &records {
        assert_eq!(r["headers"]["rill-delay-ms"], "2000");
        let due: i64 = r["headers"]["rill-delayed-deliver-at"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("due time header");
        assert!(due >= sent + 2000, "{r}");
        assert!(r["timestamp"].as_i64().unwrap_or(0) >= due, "{r}");
    }
    let o = broker.rill(&describe);
    assert!(stdout(&o).contains("DelayedPending: 1"), "{}", stdout(&o));
}

#[test]
fn produce_and_consume() {
    let broker = Broker::start();
    assert_exit(&broker.rill(&["topic", "create", "events", "-p", "2"]), 0);
    let input = "k1:v1\nk2:v2\nno-key-line\nk1:v3\n";
    let o = broker.rill_stdin(
        &[
            "produce",
            "events",
            "-K",
            ":",
            "-H",
            "source=test",
            "-H",
            "n=1",
            "--acks",
            "all",
        ],
        input,
    );
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("produced 4 records"), "{}", stderr(&o));

    let o = broker.rill(&[
        "consume",
        "events",
        "--from-beginning",
        "--exit-at-end",
        "--format",
        "json",
    ]);
    assert_exit(&o, 0);
    let records = json_lines(&stdout(&o));
    assert_eq!(records.len(), 4, "{}", stdout(&o));
    for r in &records {
        assert_eq!(r["topic"], "events");
        assert_eq!(r["headers"]["source"], "test");
        assert_eq!(r["headers"]["n"], "1");
        assert!(r["timestamp"].as_i64().unwrap_or(0) > 1_600_000_000_000);
    }
    let mut values: Vec<&str> = records.iter().filter_map(|r| r["value"].as_str()).collect();
    values.sort_unstable();
    assert_eq!(values, ["no-key-line", "v1", "v2", "v3"]);
    // Same key, same partition, in order.
    let k1: Vec<&Value> = records.iter().filter(|r| r["key"] == "k1").collect();
    assert_eq!(k1.len(), 2);
    assert_eq!(k1[0]["partition"], k1[1]["partition"]);
    assert!(k1[0]["offset"].as_i64() < k1[1]["offset"].as_i64());
    let unkeyed = records
        .iter()
        .find(|r| r["value"] == "no-key-line")
        .expect("record");
    assert!(unkeyed["key"].is_null());

    // Value format, one partition, from an offset, bounded count.
    let p = k1[0]["partition"].as_i64().unwrap_or(0).to_string();
    let o = broker.rill(&["consume", "events", "-p", &p, "--offset", "1", "-n", "1"]);
    assert_exit(&o, 0);
    let first_after = records
        .iter()
        .find(|r| {
            r["partition"].as_i64().map(|v| v.to_string()).as_deref() == Some(p.as_str())
                && r["offset"] == 1
        })
        .expect("offset 1 exists");
    assert_eq!(
        stdout(&o).trim_end(),
        first_after["value"].as_str().unwrap_or("")
    );

    // From a timestamp in the future: nothing, and --idle-timeout-ms ends the wait.
    let future = (records[0]["timestamp"].as_i64().unwrap_or(0) + 3_600_000).to_string();
    let o = broker.rill(&[
        "consume",
        "events",
        "--timestamp",
        &future,
        "--idle-timeout-ms",
        "300",
    ]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "");
    // From a timestamp in the past: everything.
    let o = broker.rill(&["consume", "events", "--timestamp", "0", "-e"]);
    assert_eq!(stdout(&o).lines().count(), 4);
    // From the end (default): nothing new.
    let o = broker.rill(&["consume", "events", "-e"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "");

    // A file as input, a fixed partition, compression.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("in.txt");
    std::fs::write(&file, "a\nb\nc\n").expect("write");
    let path = file.to_string_lossy().into_owned();
    let o = broker.rill(&[
        "produce",
        "events",
        "-f",
        &path,
        "-p",
        "1",
        "--compression",
        "zstd",
    ]);
    assert_exit(&o, 0);
    let o = broker.rill(&["consume", "events", "-p", "1", "--from-beginning", "-e"]);
    let text = stdout(&o);
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    assert_eq!(tail, ["c", "b", "a"]);
}

#[test]
fn errors_and_exit_codes() {
    // Broker unreachable: exit 1, names the address, says what to check.
    let o = run(
        &[
            "topic",
            "list",
            "--bootstrap-server",
            "127.0.0.1:1",
            "--timeout-ms",
            "2000",
        ],
        None,
    );
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("127.0.0.1:1"), "{e}");
    assert!(
        e.contains("hint:") && e.contains("--bootstrap-server"),
        "{e}"
    );

    // Usage errors: exit 2.
    assert_exit(&run(&["topic", "list", "--no-such-flag"], None), 2);
    assert_exit(
        &run(&["consume", "t", "--from-beginning", "--offset", "3"], None),
        2,
    );
    assert_exit(&run(&["produce", "t", "--acks", "2"], None), 2);
    assert_exit(&run(&["produce", "t", "--compression", "brotli"], None), 2);
    assert_exit(&run(&["nonsense"], None), 2);
    let o = run(&["topic", "create", "t", "-c", "novalue"], None);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("novalue"), "{}", stderr(&o));

    let broker = Broker::start();
    // Topic missing.
    let o = broker.rill_stdin(&["produce", "missing"], "x\n");
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("topic 'missing' does not exist"),
        "{}",
        stderr(&o)
    );
    let o = broker.rill(&["consume", "missing", "-e"]);
    assert_exit(&o, 1);
    // Partition missing.
    assert_exit(&broker.rill(&["topic", "create", "one"]), 0);
    let o = broker.rill(&["consume", "one", "-p", "7", "-e"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("no partition 7"), "{}", stderr(&o));
    let o = broker.rill_stdin(&["produce", "one", "-p", "7"], "x\n");
    assert_exit(&o, 2);
    // Offset past the end.
    let o = broker.rill(&["consume", "one", "--offset", "100", "-n", "1"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("OFFSET_OUT_OF_RANGE"), "{}", stderr(&o));
    // Bad topic name: the broker's error is shown.
    let o = broker.rill(&["topic", "create", "bad/name"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("INVALID_TOPIC_EXCEPTION"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_config_precedence_and_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("rill.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7001\"\nnum_partitions = 4\nmax_connections = 10\nmetrics = false\n",
    )
    .expect("write");
    let path = file.to_string_lossy().into_owned();

    // Defaults.
    let o = run_env(&["serve", "--print-config"], None, &[]);
    assert_exit(&o, 0);
    let c: toml::Table = stdout(&o).parse().expect("TOML");
    assert_eq!(c["listen"].as_str(), Some("127.0.0.1:9092"));
    assert_eq!(c["data_dir"].as_str(), Some("./rill-data"));
    assert_eq!(c["metrics_listen"].as_str(), Some("127.0.0.1:9644"));
    assert_eq!(c["metrics"].as_bool(), Some(true));

    // File < environment < flag.
    let o = run_env(
        &[
            "serve",
            "--config",
            &path,
            "--num-partitions",
            "8",
            "--print-config",
        ],
        None,
        &[
            ("RILL_LISTEN", "127.0.0.1:7002"),
            ("RILL_NUM_PARTITIONS", "6"),
            ("RILL_MAX_CONNECTIONS", "20"),
        ],
    );
    assert_exit(&o, 0);
    let c: toml::Table = stdout(&o).parse().expect("TOML");
    assert_eq!(
        c["listen"].as_str(),
        Some("127.0.0.1:7002"),
        "env beats file"
    );
    assert_eq!(c["num_partitions"].as_integer(), Some(8), "flag beats env");
    assert_eq!(c["max_connections"].as_integer(), Some(20));
    assert_eq!(c["metrics"].as_bool(), Some(false), "file beats default");

    // The printed config loads back as a config file.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, stdout(&o)).expect("write");
    let o2 = run_env(
        &[
            "serve",
            "--config",
            &printed.to_string_lossy(),
            "--print-config",
        ],
        None,
        &[],
    );
    assert_exit(&o2, 0);
    assert_eq!(stdout(&o2), stdout(&o));

    // Unknown key in the file: usage error naming it.
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nnum_partitons = 2\n").expect("write");
    let o = run(&["serve", "--config", &path, "--print-config"], None);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("num_partitons"), "{}", stderr(&o));
    // Invalid value in the file, the environment, a flag.
    std::fs::write(&file, "max_connections = -3\n").expect("write");
    let o = run(&["serve", "--config", &path, "--print-config"], None);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("max_connections"), "{}", stderr(&o));
    let o = run_env(
        &["serve", "--print-config"],
        None,
        &[("RILL_NUM_PARTITIONS", "many")],
    );
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("num-partitions"), "{}", stderr(&o));
    let o = run(
        &["serve", "--fetch-write-mode", "mmap", "--print-config"],
        None,
    );
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("fetch_write_mode"), "{}", stderr(&o));
    let o = run(&["serve", "--config", "/nonexistent/rill.toml"], None);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("/nonexistent/rill.toml"),
        "{}",
        stderr(&o)
    );

    // --help explains options and defaults.
    let o = run(&["serve", "--help"], None);
    assert_exit(&o, 0);
    for needle in [
        "--listen",
        "127.0.0.1:9092",
        "--metrics-listen",
        "127.0.0.1:9644",
        "--no-metrics",
        "RILL_DATA_DIR",
        "--config",
    ] {
        assert!(stdout(&o).contains(needle), "help lacks {needle}");
    }
}

#[test]
fn serve_banner_and_metrics_off() {
    // Metrics off: the banner says so; the broker still serves.
    let dir = tempfile::tempdir().expect("dir");
    let mut child = std::process::Command::new(common::rill_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("ready line");
    assert!(line.starts_with("rill listening on 127.0.0.1:"), "{line}");
    let addr = line
        .trim()
        .trim_start_matches("rill listening on ")
        .to_string();
    assert_exit(&run(&["topic", "list", "-b", &addr], None), 0);
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!("rill {}", env!("CARGO_PKG_VERSION"))),
        "{err}"
    );
    assert!(err.contains("metrics         off"), "{err}");
    assert!(err.contains("storage opened in"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn consumer_groups() {
    let broker = Broker::start();
    assert_exit(&broker.rill(&["topic", "create", "g", "-p", "3"]), 0);
    let lines: String = (0..30).map(|i| format!("m{i}\n")).collect();
    assert_exit(&broker.rill_stdin(&["produce", "g"], &lines), 0);

    // A group member reads everything from the beginning and commits on exit.
    let o = broker.rill(&[
        "consume",
        "g",
        "--group",
        "readers",
        "--from-beginning",
        "-e",
    ]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 30);
    // The next member of the same group starts at the committed offsets: nothing new.
    let o = broker.rill(&[
        "consume",
        "g",
        "--group",
        "readers",
        "--from-beginning",
        "-e",
    ]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "");

    let o = broker.rill(&["group", "list", "--json"]);
    assert_exit(&o, 0);
    let groups: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let readers = groups
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "readers"))
        .unwrap_or_else(|| panic!("readers in {groups}"));
    assert_eq!(readers["protocol_type"], "consumer");

    // Lag appears per partition once more is produced.
    assert_exit(
        &broker.rill_stdin(&["produce", "g", "-p", "2"], "x\ny\n"),
        0,
    );
    let o = broker.rill(&["group", "describe", "readers", "--json"]);
    assert_exit(&o, 0);
    let d: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let parts = d["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3);
    let total_lag: i64 = parts.iter().map(|p| p["lag"].as_i64().unwrap_or(-1)).sum();
    assert_eq!(total_lag, 2);
    let p2 = parts
        .iter()
        .find(|p| p["partition"] == 2)
        .expect("partition 2");
    assert_eq!(p2["lag"], 2);
    assert_eq!(
        p2["log_end_offset"].as_i64(),
        p2["committed_offset"].as_i64().map(|c| c + 2)
    );
    let o = broker.rill(&["group", "describe", "readers"]);
    assert!(stdout(&o).contains("LAG"), "{}", stdout(&o));

    // Reset: dry run changes nothing; --execute moves the offsets.
    let o = broker.rill(&[
        "group",
        "reset-offsets",
        "readers",
        "-t",
        "g",
        "--to-earliest",
        "--json",
    ]);
    assert_exit(&o, 0);
    let plan: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(plan["executed"], false);
    assert!(plan["partitions"]
        .as_array()
        .expect("array")
        .iter()
        .all(|p| p["new_offset"] == 0));
    let o = broker.rill(&["consume", "g", "--group", "readers", "-e"]);
    assert_eq!(stdout(&o).lines().count(), 2, "dry run kept offsets");
    let o = broker.rill(&[
        "group",
        "reset-offsets",
        "readers",
        "-t",
        "g",
        "--shift-by",
        "-1",
        "--execute",
    ]);
    assert_exit(&o, 0);
    let o = broker.rill(&["consume", "g", "--group", "readers", "-e"]);
    assert_eq!(
        stdout(&o).lines().count(),
        3,
        "one record per partition again"
    );
    assert_exit(
        &broker.rill(&["group", "reset-offsets", "readers", "-t", "g"]),
        2,
    );

    // An active member blocks reset and delete.
    let mut member = std::process::Command::new(common::rill_bin())
        .args([
            "consume",
            "g",
            "--group",
            "readers",
            "--idle-timeout-ms",
            "20000",
            "-b",
            &broker.addr,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn member");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let o = broker.rill(&["group", "describe", "readers", "--json"]);
        let d: Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
        if d["members"].as_array().is_some_and(|m| m.len() == 1) && d["state"] == "Stable" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "member never joined: {d}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = broker.rill(&[
        "group",
        "reset-offsets",
        "readers",
        "-t",
        "g",
        "--to-latest",
        "--execute",
    ]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("active member"), "{}", stderr(&o));
    let o = broker.rill(&["group", "delete", "readers"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("NON_EMPTY_GROUP"), "{}", stderr(&o));
    // SIGTERM: the member commits, leaves the group, exits 0; the group is empty at once.
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = member.wait().expect("member exits");
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    assert_exit(&broker.rill(&["group", "delete", "readers"]), 0);
    let o = broker.rill(&["group", "describe", "readers"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn no_command_is_serve_with_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = std::process::Command::new(common::rill_bin())
        .env("RILL_LISTEN", "127.0.0.1:0")
        .env("RILL_DATA_DIR", dir.path())
        .env("RILL_NO_METRICS", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("ready line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("rill listening on 127.0.0.1:"), "{line}");
    assert!(
        !line.trim_end().ends_with(":9092"),
        "RILL_LISTEN applied: {line}"
    );
    assert!(dir.path().join(".lock").exists(), "RILL_DATA_DIR applied");
}

#[test]
fn serve_advertised_listeners_and_decompression_bound() {
    let o = run(
        &[
            "serve",
            "--advertised-listeners",
            "PLAINTEXT://rill.example:9093",
            "--print-config",
        ],
        None,
    );
    assert_exit(&o, 0);
    let c: toml::Table = stdout(&o).parse().expect("TOML");
    assert_eq!(
        c["advertised_listeners"].as_str(),
        Some("PLAINTEXT://rill.example:9093")
    );
    assert_eq!(
        c["decompressed_batch_max_bytes"].as_integer(),
        Some(64 << 20)
    );
    // A wildcard cannot be connected to: refused at start, naming Kafka's setting.
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_string_lossy().into_owned();
    let o = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--no-metrics",
            "--advertised-listeners",
            "0.0.0.0:9092",
        ],
        None,
    );
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("advertised.listeners"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &[
            "serve",
            "--decompressed-batch-max-bytes",
            "10",
            "--print-config",
        ],
        None,
    );
    assert_exit(&o, 2);
}

/// `rill topic create --view-of --filter`: the view takes its source's partition count and
/// holds the matching records (with their source offsets); a bad filter names the column.
#[test]
fn filtered_view_from_the_command_line() {
    let broker = Broker::start();
    assert_exit(&broker.rill(&["topic", "create", "orders", "-p", "2"]), 0);
    for (region, lines) in [("eu", "a\nb\nc\n"), ("us", "d\ne\n")] {
        let header = format!("region={region}");
        let o = broker.rill_stdin(
            &[
                "produce", "orders", "-p", "1", "-H", &header, "--acks", "all",
            ],
            lines,
        );
        assert_exit(&o, 0);
    }
    let o = broker.rill(&[
        "topic",
        "create",
        "orders-eu",
        "--view-of",
        "orders",
        "--filter",
        "region = 'eu'",
    ]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("orders-eu with 2 partition(s), a filtered view of orders"),
        "{}",
        stdout(&o)
    );
    // The maintainer copies within milliseconds; bounded retries.
    let mut records = Vec::new();
    for _ in 0..100 {
        let o = broker.rill(&[
            "consume",
            "orders-eu",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
        ]);
        assert_exit(&o, 0);
        records = json_lines(&stdout(&o));
        if records.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let got: Vec<(&str, &str, i64)> = records
        .iter()
        .map(|r| {
            (
                r["value"].as_str().unwrap_or(""),
                r["headers"]["rill-source-offset"].as_str().unwrap_or(""),
                r["partition"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(got, [("a", "0", 1), ("b", "1", 1), ("c", "2", 1)]);
    // Caught up: /metrics shows no lag for the view's partitions.
    let metrics = broker.scrape();
    let lag_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("rill_view_lag{") && l.contains("topic=\"orders-eu\""))
        .collect();
    assert_eq!(lag_lines.len(), 2, "{metrics}");
    assert!(lag_lines.iter().all(|l| l.ends_with(" 0")), "{lag_lines:?}");

    let o = broker.rill(&[
        "topic",
        "create",
        "bad-view",
        "--view-of",
        "orders",
        "--filter",
        "region = ",
    ]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("column 10"), "{}", stderr(&o));
}

#[test]
fn config_describe_and_alter_topics_and_brokers() {
    let broker = Broker::start();
    assert_exit(&broker.rill(&["topic", "create", "conf"]), 0);
    let o = broker.rill(&[
        "config",
        "alter",
        "--topic",
        "conf",
        "--set",
        "compression.type=zstd",
    ]);
    assert_exit(&o, 0);
    let o = broker.rill(&["config", "describe", "--topic", "conf"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l == "compression.type=zstd (DYNAMIC_TOPIC_CONFIG)"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == "retention.ms=604800000 (DEFAULT_CONFIG)"),
        "{out}"
    );

    let o = broker.rill(&[
        "config",
        "alter",
        "--broker",
        "",
        "--set",
        "log.retention.ms=3600000",
    ]);
    assert_exit(&o, 0);
    let o = broker.rill(&["config", "describe", "--topic", "conf"]);
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l == "retention.ms=3600000 (DYNAMIC_DEFAULT_BROKER_CONFIG)"),
        "{}",
        stdout(&o)
    );
    let o = broker.rill(&[
        "config",
        "alter",
        "--broker",
        "0",
        "--set",
        "message.max.bytes=500000",
    ]);
    assert_exit(&o, 0);
    let o = broker.rill(&["config", "describe", "--broker", "0"]);
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l == "message.max.bytes=500000 (DYNAMIC_BROKER_CONFIG)"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == "node.id=0 (STATIC_BROKER_CONFIG read-only)"),
        "{out}"
    );

    let o = broker.rill(&["config", "alter", "--broker", "0", "--set", "node.id=3"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("Cannot update these configs dynamically"),
        "{}",
        stderr(&o)
    );
    let o = broker.rill(&[
        "config",
        "alter",
        "--topic",
        "conf",
        "--delete",
        "compression.type",
    ]);
    assert_exit(&o, 0);
    let o = broker.rill(&["config", "describe", "--topic", "conf", "--broker", "0"]);
    assert_exit(&o, 2);
}

/// `rill bench rebalance` with both protocols on a broker with fast KIP-848 heartbeats: the
/// group forms, one member leaves, the rest settle at a newer generation with no errors
/// within the bound; bad options are usage errors.
#[test]
fn bench_rebalance_measures_both_protocols() {
    let b = Broker::start_with(&["--group-consumer-heartbeat-interval-ms", "200"]);
    for protocol in ["consumer", "classic"] {
        let o = b.rill(&[
            "bench",
            "rebalance",
            "--protocol",
            protocol,
            "--members",
            "4",
            "--partitions",
            "8",
            "--classic-heartbeat-interval-ms",
            "200",
            "--timeout-s",
            "60",
            "--json",
        ]);
        assert_exit(&o, 0);
        let r: Value = serde_json::from_str(stdout(&o).trim()).expect("bench JSON");
        assert_eq!(r["protocol"].as_str(), Some(protocol), "{r}");
        assert_eq!(r["members"].as_u64(), Some(4));
        assert_eq!(r["heartbeat_interval_ms"].as_u64(), Some(200), "{r}");
        assert_eq!(r["member_errors"].as_u64(), Some(0), "{r}");
        assert!(
            r["generation_after"].as_i64() > r["generation_before"].as_i64(),
            "{r}"
        );
        let settle_ms = r["settle_ms"].as_f64().expect("settle_ms");
        assert!((0.0..60_000.0).contains(&settle_ms), "{r}");
    }
    let o = b.rill(&["bench", "rebalance", "--protocol", "sticky"]);
    assert_exit(&o, 2);
    let o = b.rill(&["bench", "rebalance", "--members", "10", "--partitions", "4"]);
    assert_exit(&o, 2);
}
