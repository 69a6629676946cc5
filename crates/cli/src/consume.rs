//! `rill consume`: read records by assignment (chosen partitions, or all) from a starting
//! point, print them as values or JSON lines.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgGroup, Args, ValueEnum};
use rill_client::batch::{batch_infos, decode_records};
use rill_client::client::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use rill_client::connection::Connection;
use rill_client::group::{CommittedOffset, GroupSession};
use rill_client::{Client, ClientError, FetchSpec, TopicInfo};
use serde_json::json;

use crate::common::{usage, ConnectArgs};

/// How records are printed.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// The value only, one per line.
    Value,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "from_end", "offset", "timestamp"])))]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only these partitions (repeatable); default all.
    #[arg(long, short = 'p')]
    pub partition: Vec<i32>,
    /// Start at the first record still in the log.
    #[arg(long)]
    pub from_beginning: bool,
    /// Start after the last record: only new records (the default).
    #[arg(long)]
    pub from_end: bool,
    /// Start at this offset in every chosen partition.
    #[arg(long)]
    pub offset: Option<i64>,
    /// Start at the first record with a timestamp at or after this (ms since the epoch).
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    pub format: Format,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// Stop once every partition is read up to the end it had at start.
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Stop when no record arrived for this long.
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Bytes fetched per partition per request.
    #[arg(long, default_value_t = 1_048_576)]
    pub fetch_max_bytes: i32,
    /// Consume as a member of this consumer group: partitions are assigned by the group
    /// (range assignment), reading starts at the group's committed offsets (else at the end,
    /// or the beginning with --from-beginning), and offsets are committed every 5 s and on
    /// exit.
    #[arg(long, short = 'g', conflicts_with_all = ["partition", "offset", "timestamp"])]
    pub group: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where each partition is being read.
struct Position {
    partition: i32,
    offset: i64,
    /// The end at start, for `--exit-at-end`.
    end_at_start: i64,
}

/// Runs `rill consume`.
///
/// # Errors
/// Usage errors, unreachable broker, missing topic or partition, fetch errors.
pub async fn run(a: ConsumeArgs) -> anyhow::Result<()> {
    // Before joining a group: a SIGTERM that arrives once we are a member must be handled.
    let stop = stop_on_signal()?;
    if a.fetch_max_bytes < 1 {
        return Err(usage("--fetch-max-bytes must be positive"));
    }
    let client = a.connect.connect().await?;
    let topic = client.topic(&a.topic).await?;
    let all: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let mut session = match &a.group {
        Some(group) => Some(client.join_group(group, &topic.name, &all).await?),
        None => None,
    };
    let chosen: Vec<i32> = if let Some(s) = &session {
        s.assigned.clone()
    } else if a.partition.is_empty() {
        all.clone()
    } else {
        for &p in &a.partition {
            if !all.contains(&p) {
                return Err(ClientError::UnknownPartition {
                    topic: a.topic.clone(),
                    partition: p,
                    partitions: all.len(),
                }
                .into());
            }
        }
        a.partition.clone()
    };
    let mut positions = start_positions(&client, &topic, &chosen, &a).await?;
    if let Some(s) = &session {
        apply_committed(&client, s, &topic.name, &mut positions).await?;
    }
    let mut leaders = leaders_of(&client, &topic, &positions).await?;
    let mut last_heartbeat = Instant::now();
    let mut last_commit = Instant::now();
    let mut printed: u64 = 0;
    let mut last_record_at = Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if a.exit_at_end && positions.iter().all(|p| p.offset >= p.end_at_start) {
            break;
        }
        if a.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        if let Some(idle) = a.idle_timeout_ms {
            if last_record_at.elapsed() >= Duration::from_millis(idle) {
                break;
            }
        }
        if let Some(session) = &mut session {
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                commit(&client, session, &topic.name, &positions).await?;
                last_commit = Instant::now();
            }
            if last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                if !session.heartbeat().await? {
                    // A rebalance: hand over what was read, then take the new assignment.
                    commit(&client, session, &topic.name, &positions).await?;
                    *session = client.join_group(&session.group, &topic.name, &all).await?;
                    positions = start_positions(&client, &topic, &session.assigned, &a).await?;
                    apply_committed(&client, session, &topic.name, &mut positions).await?;
                    leaders = leaders_of(&client, &topic, &positions).await?;
                }
            }
        }
        if leaders.is_empty() {
            // A group member with no partitions: stay in the group, wait.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut got_any = false;
        for (connection, indexes) in &leaders {
            let specs: Vec<FetchSpec> = indexes
                .iter()
                .map(|&i| FetchSpec {
                    topic: topic.name.clone(),
                    partition: positions[i].partition,
                    offset: positions[i].offset,
                    max_bytes: a.fetch_max_bytes,
                })
                .collect();
            let wait_ms = a.idle_timeout_ms.map_or(500, |t| t.min(500)) as i32;
            let fetched = client
                .start_fetch(
                    connection,
                    &specs,
                    wait_ms,
                    1,
                    a.fetch_max_bytes.saturating_mul(4),
                )?
                .await?;
            for part in fetched {
                ClientError::check(part.error_code, || {
                    format!("fetching {}-{} at offset {}", part.topic, part.partition, {
                        positions
                            .iter()
                            .find(|p| p.partition == part.partition)
                            .map_or(-1, |p| p.offset)
                    })
                })?;
                let Some(pos) = positions.iter_mut().find(|p| p.partition == part.partition) else {
                    continue;
                };
                let infos = batch_infos(&part.records);
                if infos.is_empty() {
                    continue;
                }
                let records = decode_records(&part.records).with_context(|| {
                    format!("decoding records of {}-{}", part.topic, part.partition)
                })?;
                for r in records {
                    if r.offset < pos.offset {
                        continue;
                    }
                    if a.max_messages.is_some_and(|m| printed >= m) {
                        break;
                    }
                    print_record(&mut out, a.format, &topic.name, part.partition, &r)?;
                    printed += 1;
                    got_any = true;
                    pos.offset = r.offset + 1;
                }
                // Whole batches were read (control batches included): move past them unless
                // we stopped early for --max-messages.
                if a.max_messages.is_none_or(|m| printed < m) {
                    if let Some(last) = infos.last() {
                        pos.offset = pos.offset.max(last.last_offset + 1);
                    }
                }
            }
        }
        out.flush().context("writing to stdout")?;
        if got_any {
            last_record_at = Instant::now();
        }
    }
    out.flush().context("writing to stdout")?;
    if let Some(session) = &session {
        commit(&client, session, &topic.name, &positions).await?;
        session.leave().await?;
    }
    Ok(())
}

/// A flag set on SIGINT or SIGTERM, so the loop ends cleanly: a group member commits what it
/// printed and leaves the group (its partitions move to the others at once).
fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered here, synchronously: a signal arriving before the task first runs is kept.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        flag.store(true, Ordering::Relaxed);
    });
    Ok(stop)
}

/// How often a group member commits what it has printed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// How often a group member heartbeats (a third of its session timeout).
const HEARTBEAT_INTERVAL: Duration =
    Duration::from_millis(rill_client::group::SESSION_TIMEOUT_MS as u64 / 3);

/// The connection to each leader with the indexes of the positions it leads.
async fn leaders_of(
    client: &Client,
    topic: &TopicInfo,
    positions: &[Position],
) -> anyhow::Result<Vec<(Arc<Connection>, Vec<usize>)>> {
    let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, pos) in positions.iter().enumerate() {
        let leader = topic
            .partitions
            .iter()
            .find(|p| p.partition == pos.partition)
            .map_or(-1, |p| p.leader);
        by_leader.entry(leader).or_default().push(i);
    }
    let mut leaders = Vec::new();
    for (leader, indexes) in by_leader {
        leaders.push((client.broker(leader).await?, indexes));
    }
    Ok(leaders)
}

/// Starts each assigned partition at the group's committed offset, where there is one.
async fn apply_committed(
    client: &Client,
    session: &GroupSession,
    topic: &str,
    positions: &mut [Position],
) -> anyhow::Result<()> {
    let committed = client.committed_offsets(&session.group).await?;
    for pos in positions.iter_mut() {
        if let Some(c) = committed
            .iter()
            .find(|c| c.topic == topic && c.partition == pos.partition)
        {
            pos.offset = c.offset;
        }
    }
    Ok(())
}

/// Commits every position as this member of its generation.
async fn commit(
    client: &Client,
    session: &GroupSession,
    topic: &str,
    positions: &[Position],
) -> anyhow::Result<()> {
    if positions.is_empty() {
        return Ok(());
    }
    let offsets: Vec<CommittedOffset> = positions
        .iter()
        .map(|p| CommittedOffset {
            topic: topic.to_string(),
            partition: p.partition,
            offset: p.offset,
        })
        .collect();
    client
        .commit_offsets(
            &session.coordinator,
            &session.group,
            session.generation,
            &session.member_id,
            &offsets,
        )
        .await
        .with_context(|| format!("committing offsets of group '{}'", session.group))
}

async fn start_positions(
    client: &Client,
    topic: &TopicInfo,
    chosen: &[i32],
    a: &ConsumeArgs,
) -> anyhow::Result<Vec<Position>> {
    let ends = client.list_offsets(topic, chosen, LATEST_TIMESTAMP).await?;
    let end_of = |p: i32| ends.iter().find(|e| e.0 == p).map_or(0, |e| e.1);
    let starts: Vec<(i32, i64)> = if a.from_beginning {
        client
            .list_offsets(topic, chosen, EARLIEST_TIMESTAMP)
            .await?
            .into_iter()
            .map(|(p, o, _)| (p, o))
            .collect()
    } else if let Some(offset) = a.offset {
        if offset < 0 {
            return Err(usage(format!("--offset {offset}: offsets start at 0")));
        }
        chosen.iter().map(|&p| (p, offset)).collect()
    } else if let Some(ts) = a.timestamp {
        if ts < 0 {
            return Err(usage(format!(
                "--timestamp {ts}: give milliseconds since the epoch"
            )));
        }
        client
            .list_offsets(topic, chosen, ts)
            .await?
            .into_iter()
            // -1: no record that late; start at the end.
            .map(|(p, o, _)| (p, if o < 0 { end_of(p) } else { o }))
            .collect()
    } else {
        chosen.iter().map(|&p| (p, end_of(p))).collect()
    };
    Ok(starts
        .into_iter()
        .map(|(partition, offset)| Position {
            partition,
            offset,
            end_at_start: end_of(partition),
        })
        .collect())
}

fn print_record(
    out: &mut impl Write,
    format: Format,
    topic: &str,
    partition: i32,
    r: &kafka_protocol::records::Record,
) -> anyhow::Result<()> {
    let text =
        |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    match format {
        Format::Value => {
            if let Some(v) = &r.value {
                out.write_all(v)?;
            }
            out.write_all(b"\n")?;
        }
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(text(v))))
                .collect();
            let line = json!({
                "topic": topic,
                "partition": partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": text(&r.key),
                "value": text(&r.value),
                "headers": headers,
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
