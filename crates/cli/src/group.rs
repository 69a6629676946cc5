//! `rill group list|describe|reset-offsets|delete`, over the Kafka group APIs.

use std::collections::BTreeMap;

use clap::{ArgGroup, Args, Subcommand};
use rill_client::client::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use rill_client::group::CommittedOffset;
use rill_client::Client;
use serde_json::json;

use crate::common::{usage, ConnectArgs};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups (classic, consumer and share) with their state.
    List(ListArgs),
    /// Show a group's state, members, and per partition its committed offset, end offset
    /// and lag; for a share group, per share-partition its start offset, end offset, lag,
    /// in-flight records and dead letters.
    Describe(DescribeArgs),
    /// Move a group's committed offsets for a topic (the group must have no members).
    /// Shows the plan; applies it only with --execute.
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets (it must have no members).
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print a JSON array of {group, state, protocol_type} (protocol_type "share" for a
    /// share group).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Group id.
    pub group: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
pub struct ResetArgs {
    /// Group id.
    pub group: String,
    /// Topic whose offsets to move (every partition).
    #[arg(long, short = 't')]
    pub topic: String,
    /// To the first offset still in each partition.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end of each partition (skip everything).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (clamped to each partition's range).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time (ms since the epoch).
    #[arg(long, value_name = "MS")]
    pub to_datetime: Option<i64>,
    /// By this many records from the committed offset (negative to re-read).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Apply the new offsets (without it, only print them).
    #[arg(long)]
    pub execute: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Group id.
    pub group: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs a group subcommand.
///
/// # Errors
/// Usage errors, unreachable broker, broker errors.
pub async fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List(a) => list(a).await,
        GroupCommand::Describe(a) => describe(a).await,
        GroupCommand::ResetOffsets(a) => reset(a).await,
        GroupCommand::Delete(a) => delete(a).await,
    }
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let client = a.connect.connect().await?;
    let groups = client.list_groups().await?;
    if a.json {
        let out: Vec<_> = groups
            .iter()
            .map(|g| json!({"group": g.group_id, "state": g.state, "protocol_type": g.protocol_type}))
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        for g in &groups {
            println!("{}\t{}", g.group_id, g.state);
        }
    }
    Ok(())
}

/// One partition's line of `describe`.
struct LagRow {
    topic: String,
    partition: i32,
    committed: i64,
    end: i64,
    owner: Option<String>,
}

async fn describe(a: DescribeArgs) -> anyhow::Result<()> {
    let client = a.connect.connect().await?;
    if crate::group_share::describe(&client, &a.group, a.json).await? {
        return Ok(());
    }
    let description = client.describe_group(&a.group).await?;
    let committed = client.committed_offsets(&a.group).await?;
    if description.state == "Dead" && committed.is_empty() {
        anyhow::bail!("group '{}' does not exist", a.group);
    }
    let rows = lag_rows(&client, &description, &committed).await?;
    if a.json {
        let partitions: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "topic": r.topic, "partition": r.partition, "committed_offset": r.committed,
                    "log_end_offset": r.end, "lag": (r.end - r.committed).max(0), "member": r.owner,
                })
            })
            .collect();
        let members: Vec<_> = description
            .members
            .iter()
            .map(|m| {
                let mut v = json!({"member_id": m.member_id, "protocol": m.protocol, "client_id": m.client_id, "host": m.host, "assignment": m.assignment.iter().map(|(t, ps)| json!({"topic": t, "partitions": ps})).collect::<Vec<_>>()});
                if let Some(epoch) = m.member_epoch {
                    v["member_epoch"] = json!(epoch);
                    v["target_assignment"] = json!(m.target_assignment.iter().map(|(t, ps)| json!({"topic": t, "partitions": ps})).collect::<Vec<_>>());
                }
                v
            })
            .collect();
        let mut out = json!({"group": a.group, "state": description.state, "protocol": description.protocol, "members": members, "partitions": partitions});
        if let Some((group_epoch, assignment_epoch)) = description.epochs {
            out["group_epoch"] = json!(group_epoch);
            out["assignment_epoch"] = json!(assignment_epoch);
        }
        println!("{out}");
        return Ok(());
    }
    println!(
        "Group: {}  State: {}  Members: {}",
        a.group,
        description.state,
        description.members.len()
    );
    if let Some((group_epoch, assignment_epoch)) = description.epochs {
        // A KIP-848 group: epochs, and each member's current and target assignment.
        println!(
            "Group epoch: {group_epoch}  Assignment epoch: {assignment_epoch}  Assignor: {}",
            description.protocol
        );
        let show = |a: &[(String, Vec<i32>)]| {
            a.iter()
                .map(|(t, ps)| format!("{t}:{ps:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for m in &description.members {
            println!(
                "  member {} ({} protocol, client {}) epoch {}  assigned {}  target {}",
                m.member_id,
                m.protocol,
                m.client_id,
                m.member_epoch.unwrap_or(-1),
                show(&m.assignment),
                show(&m.target_assignment)
            );
        }
    }
    println!(
        "{:<24} {:>9} {:>16} {:>16} {:>10}  MEMBER",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    for r in &rows {
        println!(
            "{:<24} {:>9} {:>16} {:>16} {:>10}  {}",
            r.topic,
            r.partition,
            r.committed,
            r.end,
            (r.end - r.committed).max(0),
            r.owner.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// Committed offsets joined with log end offsets and owners.
async fn lag_rows(
    client: &Client,
    description: &rill_client::group::GroupDescription,
    committed: &[CommittedOffset],
) -> anyhow::Result<Vec<LagRow>> {
    let mut by_topic: BTreeMap<String, Vec<&CommittedOffset>> = BTreeMap::new();
    for c in committed {
        by_topic.entry(c.topic.clone()).or_default().push(c);
    }
    let mut rows = Vec::new();
    for (topic, offsets) in by_topic {
        let Ok(info) = client.topic(&topic).await else {
            continue; // deleted topic: its offsets linger until expiry
        };
        let ids: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
        let ends = client.list_offsets(&info, &ids, LATEST_TIMESTAMP).await?;
        for o in offsets {
            let end = ends.iter().find(|e| e.0 == o.partition).map_or(-1, |e| e.1);
            let owner = description
                .members
                .iter()
                .find(|m| {
                    m.assignment
                        .iter()
                        .any(|(t, ps)| *t == topic && ps.contains(&o.partition))
                })
                .map(|m| m.member_id.clone());
            rows.push(LagRow {
                topic: topic.clone(),
                partition: o.partition,
                committed: o.offset,
                end,
                owner,
            });
        }
    }
    Ok(rows)
}

async fn reset(a: ResetArgs) -> anyhow::Result<()> {
    let client = a.connect.connect().await?;
    let topic = client.topic(&a.topic).await?;
    let description = client.describe_group(&a.group).await?;
    if !description.members.is_empty() {
        anyhow::bail!(
            "group '{}' has {} active member(s) (state {}); stop its consumers first",
            a.group,
            description.members.len(),
            description.state
        );
    }
    let ids: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let starts = client
        .list_offsets(&topic, &ids, EARLIEST_TIMESTAMP)
        .await?;
    let ends = client.list_offsets(&topic, &ids, LATEST_TIMESTAMP).await?;
    let committed = client.committed_offsets(&a.group).await?;
    let by_time = match a.to_datetime {
        Some(ts) if ts < 0 => {
            return Err(usage("--to-datetime takes milliseconds since the epoch"))
        }
        Some(ts) => Some(client.list_offsets(&topic, &ids, ts).await?),
        None => None,
    };
    let mut plan = Vec::with_capacity(ids.len());
    for &p in &ids {
        let start = starts.iter().find(|s| s.0 == p).map_or(0, |s| s.1);
        let end = ends.iter().find(|s| s.0 == p).map_or(0, |s| s.1);
        let current = committed
            .iter()
            .find(|c| c.topic == a.topic && c.partition == p)
            .map(|c| c.offset);
        let target = if a.to_earliest {
            start
        } else if a.to_latest {
            end
        } else if let Some(o) = a.to_offset {
            o
        } else if let Some(times) = &by_time {
            times
                .iter()
                .find(|t| t.0 == p)
                .map_or(end, |t| if t.1 < 0 { end } else { t.1 })
        } else {
            current.unwrap_or(start) + a.shift_by.unwrap_or(0)
        };
        plan.push((p, current, target.clamp(start, end)));
    }
    if a.execute {
        let coordinator = client.coordinator(&a.group).await?;
        let offsets: Vec<CommittedOffset> = plan
            .iter()
            .map(|&(partition, _, offset)| CommittedOffset {
                topic: a.topic.clone(),
                partition,
                offset,
            })
            .collect();
        client
            .commit_offsets(&coordinator, &a.group, -1, "", &offsets)
            .await?;
    }
    if a.json {
        let out: Vec<_> = plan
            .iter()
            .map(|(p, cur, new)| json!({"topic": a.topic, "partition": p, "current_offset": cur, "new_offset": new}))
            .collect();
        println!(
            "{}",
            json!({"group": a.group, "executed": a.execute, "partitions": out})
        );
    } else {
        println!(
            "{:<24} {:>9} {:>16} {:>16}",
            "TOPIC", "PARTITION", "CURRENT", "NEW"
        );
        for (p, cur, new) in &plan {
            let cur = cur.map_or_else(|| "-".to_string(), |c| c.to_string());
            println!("{:<24} {:>9} {:>16} {:>16}", a.topic, p, cur, new);
        }
        if !a.execute {
            eprintln!("(dry run: add --execute to apply)");
        }
    }
    Ok(())
}

async fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    let client = a.connect.connect().await?;
    client.delete_group(&a.group).await?;
    println!("deleted group {}", a.group);
    Ok(())
}
