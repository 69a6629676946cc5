//! `/metrics` after real traffic (parsed with a Prometheus exposition parser and checked for
//! series and values), and `rill bench` (JSON results, progress bar off without a terminal,
//! drawn and cleared with one).

mod common;

use std::collections::HashMap;

use common::{assert_exit, stderr, stdout, Broker};
use serde_json::Value;

/// Samples by name, each with its labels and value.
fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("exposition parses")
        .samples
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

fn find<'a>(
    all: &'a [prometheus_parse::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    all.iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// Every line is a comment or `name{labels} value`, and the exposition ends with `# EOF`.
fn assert_well_formed(text: &str) {
    assert_eq!(
        text.lines().last(),
        Some("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad value in {line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.starts_with("rill_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line}"
        );
    }
}

#[test]
fn metrics_after_produce_and_consume() {
    let broker = Broker::start();
    assert_exit(&broker.rill(&["topic", "create", "m", "-p", "2"]), 0);
    let lines: String = (0..10).map(|i| format!("value-{i}\n")).collect();
    assert_exit(
        &broker.rill_stdin(&["produce", "m", "-p", "1", "--acks", "all"], &lines),
        0,
    );
    let o = broker.rill(&["consume", "m", "--from-beginning", "-e"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 10);
    // A group whose offsets were set to 4 (an admin commit): lag 6 on partition 1.
    assert_exit(
        &broker.rill(&[
            "group",
            "reset-offsets",
            "lagging",
            "-t",
            "m",
            "--to-offset",
            "4",
            "--execute",
        ]),
        0,
    );
    // One refused request: a fetch past the end is an error the broker counts.
    assert_exit(
        &broker.rill(&["consume", "m", "-p", "1", "--offset", "99", "-n", "1"]),
        1,
    );

    // Every client command has exited: their connections close on the broker too (a count
    // that leaked would stay above zero).
    let mut text = broker.scrape();
    // Bounded: 50 scrapes, 100 ms apart.
    for _ in 0..50 {
        if find(&samples(&text), "rill_connections_open", &[]).map(value) == Some(0.0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        text = broker.scrape();
    }
    let fds_now = std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
        .expect("the broker's fd table")
        .count() as f64;
    assert_well_formed(&text);
    let all = samples(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        find(&all, name, labels)
            .map(value)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
    };
    assert_eq!(get("rill_topic_records_in_total", &[("topic", "m")]), 10.0);
    let bytes_in = get("rill_topic_in_bytes_total", &[("topic", "m")]);
    assert!(bytes_in > 10.0 * 7.0, "{bytes_in}");
    assert_eq!(
        get("rill_topic_out_bytes_total", &[("topic", "m")]),
        bytes_in,
        "read once, all of it"
    );
    assert!(get("rill_requests_total", &[("api", "Produce")]) >= 1.0);
    assert!(get("rill_requests_total", &[("api", "Fetch")]) >= 2.0);
    assert!(get("rill_requests_total", &[("api", "Metadata")]) >= 3.0);
    assert_eq!(
        get(
            "rill_fetch_errors_total",
            &[("error", "OFFSET_OUT_OF_RANGE")]
        ),
        1.0
    );
    assert_eq!(
        get("rill_log_end_offset", &[("topic", "m"), ("partition", "1")]),
        10.0
    );
    assert_eq!(
        get("rill_high_watermark", &[("topic", "m"), ("partition", "1")]),
        10.0
    );
    assert_eq!(
        get("rill_log_end_offset", &[("topic", "m"), ("partition", "0")]),
        0.0
    );
    assert_eq!(
        get("rill_sendfile_bytes_total", &[]),
        bytes_in,
        "fetches use sendfile"
    );
    assert_eq!(get("rill_copied_bytes_total", &[]), 0.0);
    assert!(get("rill_partitions", &[]) >= 2.0);
    // rill-client fetches with the final epoch (no session): none is created.
    assert_eq!(get("rill_fetch_sessions", &[]), 0.0);
    assert_eq!(get("rill_fetch_session_partitions", &[]), 0.0);
    // The broker's own count matches its fd table (give or take the scrape's connection).
    let fds = get("rill_process_open_fds", &[]);
    assert!(
        (fds - fds_now).abs() <= 3.0,
        "{fds} open fds reported, {fds_now} in /proc"
    );
    assert!(
        get("rill_log_flushes_total", &[]) >= 1.0,
        "acks=all flushed"
    );
    assert!(
        get("rill_log_flush_seconds_total", &[]) > 0.0,
        "flush time measured"
    );
    assert!(get("rill_connections_accepted_total", &[]) >= 4.0);
    assert_eq!(
        get("rill_connections_open", &[]),
        0.0,
        "connections of exited clients still counted"
    );
    let group = [("group", "lagging"), ("topic", "m"), ("partition", "1")];
    assert_eq!(get("rill_consumer_group_committed_offset", &group), 4.0);
    assert_eq!(get("rill_consumer_group_lag", &group), 6.0);
    // Partition 0 is empty: offset 4 is clamped to its end, 0, so no lag.
    let group0 = [("group", "lagging"), ("topic", "m"), ("partition", "0")];
    assert_eq!(get("rill_consumer_group_lag", &group0), 0.0);
    // Histograms: the latency of Produce has a count, a sum and buckets.
    let produce_latency = all
        .iter()
        .find(|s| {
            s.metric == "rill_request_latency_seconds" && s.labels.get("api") == Some("Produce")
        })
        .unwrap_or_else(|| panic!("no Produce latency histogram in\n{text}"));
    assert!(
        matches!(produce_latency.value, prometheus_parse::Value::Histogram(ref b) if !b.is_empty())
    );
    // Counts agree across series: one latency observation per Produce request, and one
    // durable wait per acks=all produce request (stdin may arrive in more than one batch).
    let count_line = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    let produces = get("rill_requests_total", &[("api", "Produce")]);
    assert_eq!(
        count_line("rill_request_latency_seconds_count{api=\"Produce\"}"),
        produces
    );
    assert_eq!(count_line("rill_durable_wait_seconds_count"), produces);
    assert!(text.contains("# HELP rill_sendfile_bytes "));

    // Not found and other methods.
    let mut s = std::net::TcpStream::connect(&broker.metrics_addr).expect("connect");
    std::io::Write::write_all(&mut s, b"GET /nope HTTP/1.1\r\n\r\n").expect("send");
    let mut r = String::new();
    std::io::Read::read_to_string(&mut s, &mut r).expect("read");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
}

#[test]
fn bench_json_results_and_no_progress_bar_when_piped() {
    let broker = Broker::start();
    let o = broker.rill(&[
        "bench",
        "produce",
        "-t",
        "b",
        "--partitions",
        "3",
        "-n",
        "30000",
        "-s",
        "64",
        "--json",
    ]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    // Not a terminal: exactly one line, the JSON object, no escape codes or spinner.
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    let r: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(r["mode"], "produce");
    assert_eq!(r["records"], 30000);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["settings"]["partitions"], 3);
    assert!(r["records_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    let lat = &r["latency_ms"];
    assert_eq!(lat["samples"], 30000);
    let p = |k: &str| lat[k].as_f64().unwrap_or(-1.0);
    assert!(0.0 < p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99"));
    assert!(p("p99") <= p("p999") && p("p999") <= p("max"));

    let o = broker.rill(&["bench", "consume", "-t", "b", "--json"]);
    assert_exit(&o, 0);
    let r: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(r["mode"], "consume");
    assert_eq!(r["records"], 30000);

    let o = broker.rill(&[
        "bench", "e2e", "-t", "e", "-n", "5000", "--rate", "10000", "--json",
    ]);
    assert_exit(&o, 0);
    let r: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(r["mode"], "e2e");
    assert_eq!(r["records"], 5000);
    assert_eq!(r["latency_ms"]["samples"], 5000);
    let secs = r["seconds"].as_f64().unwrap_or(0.0);
    assert!(
        secs >= 0.45,
        "rate limit of 10000/s for 5000 records: {secs} s"
    );

    // Text output; compression and acks=all.
    let o = broker.rill(&[
        "bench",
        "produce",
        "-t",
        "b",
        "-n",
        "5000",
        "--acks",
        "all",
        "--compression",
        "lz4",
    ]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("produce: 5000 records in"), "{out}");
    assert!(out.contains("latency ms: p50"), "{out}");

    // Wire bytes are the batches as sent: compressed, far below the values.
    let o = broker.rill(&[
        "bench",
        "produce",
        "-t",
        "z",
        "-n",
        "20000",
        "--compression",
        "zstd",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let (wire, values) = (
        r["wire_bytes"].as_u64().unwrap_or(0),
        r["value_bytes"].as_u64().unwrap_or(0),
    );
    assert!(
        wire > 0 && wire * 4 < values,
        "zstd: {wire} wire bytes for {values} value bytes"
    );

    // Batches stop at --batch-size: right under the broker's max.message.bytes (1048588)
    // nothing is refused.
    let o = broker.rill(&[
        "bench",
        "produce",
        "-t",
        "big",
        "-n",
        "40000",
        "-s",
        "1000",
        "--batch-size",
        "1048000",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(r["errors"], 0);
    assert_eq!(r["records"], 40000);

    // Usage errors.
    assert_exit(
        &broker.rill(&["bench", "produce", "-n", "5", "--duration-s", "1"]),
        2,
    );
    let o = broker.rill(&["bench", "consume", "-t", "empty-topic-x"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

/// Runs the bench under `script(1)`, which gives it a pseudo-terminal: the progress bar is
/// drawn (with its rate), then cleared, and the results follow.
#[test]
fn bench_progress_bar_renders_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let broker = Broker::start();
    let command = format!(
        "{} bench produce -t pty -n 400000 -s 100 --rate 200000 -b {}",
        common::rill_bin(),
        broker.addr
    );
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("typescript");
    let o = common::run_program(
        "script",
        &["-q", "-e", "-c", &command, &log.to_string_lossy()],
    );
    assert_exit(&o, 0);
    let bytes = std::fs::read(&log).expect("typescript");
    let screen = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        screen.contains("records ("),
        "bar with rate drawn: {screen:?}"
    );
    assert!(screen.contains("/s"), "rate shown: {screen:?}");
    assert!(
        screen.contains("\u{1b}[2K") || screen.contains('\r'),
        "bar redrawn in place"
    );
    let after_bar = screen.rsplit("\u{1b}[2K").next().unwrap_or(&screen);
    assert!(
        after_bar.contains("produce: 400000 records in"),
        "results after the cleared bar: {after_bar:?}"
    );
    let mut seen = HashMap::new();
    for l in screen.lines() {
        *seen
            .entry(l.contains("produce: 400000 records"))
            .or_insert(0) += 1;
    }
    assert_eq!(seen.get(&true), Some(&1), "results printed once");
}
