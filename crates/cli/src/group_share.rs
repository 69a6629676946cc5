//! `rill group describe` for a share group (KIP-932): members with their epochs and
//! assignments, then per share-partition its start offset, log end, lag (records from the
//! start offset to the log end; acknowledged ones above the start count too), and, from a
//! Rill broker, the records
//! in flight, how many are acquired, and the dead letters.

use rill_client::client::LATEST_TIMESTAMP;
use rill_client::share_group::{ShareGroupDescription, ShareOffset};
use rill_client::Client;
use serde_json::json;

/// One share-partition's line.
struct Row {
    offset: ShareOffset,
    end: i64,
}

/// Describes `group` if it is a share group; false when it is not one.
///
/// # Errors
/// Broker and connection errors.
pub async fn describe(client: &Client, group: &str, as_json: bool) -> anyhow::Result<bool> {
    let Some(description) = client.describe_share_group(group).await? else {
        return Ok(false);
    };
    let offsets = client.share_group_offsets(group).await?;
    let mut rows = Vec::with_capacity(offsets.len());
    for o in offsets {
        let end = match client.topic(&o.topic).await {
            Ok(info) => client
                .list_offsets(&info, &[o.partition], LATEST_TIMESTAMP)
                .await?
                .first()
                .map_or(-1, |e| e.1),
            Err(_) => -1, // deleted topic
        };
        rows.push(Row { offset: o, end });
    }
    if as_json {
        print_json(group, &description, &rows);
    } else {
        print_text(group, &description, &rows);
    }
    Ok(true)
}

fn lag(r: &Row) -> i64 {
    if r.offset.start_offset < 0 || r.end < 0 {
        return 0;
    }
    (r.end - r.offset.start_offset).max(0)
}

fn print_json(group: &str, d: &ShareGroupDescription, rows: &[Row]) {
    let members: Vec<_> = d
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id, "member_epoch": m.member_epoch,
                "client_id": m.client_id, "host": m.host,
                "assignment": m.assignment.iter()
                    .map(|(t, ps)| json!({"topic": t, "partitions": ps}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let partitions: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "topic": r.offset.topic, "partition": r.offset.partition,
                "start_offset": r.offset.start_offset, "log_end_offset": r.end, "lag": lag(r),
                "in_flight": r.offset.in_flight, "acquired": r.offset.acquired,
                "dead_letters": r.offset.dead_letters,
            })
        })
        .collect();
    let out = json!({
        "group": group, "type": "share", "state": d.state, "group_epoch": d.group_epoch,
        "members": members, "partitions": partitions,
    });
    println!("{out}");
}

fn print_text(group: &str, d: &ShareGroupDescription, rows: &[Row]) {
    println!(
        "Share group: {group}  State: {}  Group epoch: {}  Members: {}",
        d.state,
        d.group_epoch,
        d.members.len()
    );
    for m in &d.members {
        let assigned: Vec<String> = m
            .assignment
            .iter()
            .map(|(t, ps)| format!("{t}:{ps:?}"))
            .collect();
        println!(
            "  member {} (client {}, {}) epoch {}  assigned {}",
            m.member_id,
            m.client_id,
            m.host,
            m.member_epoch,
            assigned.join(" ")
        );
    }
    println!(
        "{:<24} {:>9} {:>14} {:>14} {:>10} {:>9} {:>9} {:>12}",
        "TOPIC",
        "PARTITION",
        "START-OFFSET",
        "LOG-END",
        "LAG",
        "IN-FLIGHT",
        "ACQUIRED",
        "DEAD-LETTERS"
    );
    let show = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    for r in rows {
        println!(
            "{:<24} {:>9} {:>14} {:>14} {:>10} {:>9} {:>9} {:>12}",
            r.offset.topic,
            r.offset.partition,
            r.offset.start_offset,
            r.end,
            lag(r),
            show(r.offset.in_flight),
            show(r.offset.acquired),
            show(r.offset.dead_letters)
        );
    }
}
