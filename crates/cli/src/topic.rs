//! `rill topic create|list|describe|delete|alter`, over the Kafka admin APIs.

use anyhow::Context;
use clap::{Args, Subcommand};
use rill_client::client::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use rill_client::{Client, ClientError};
use serde_json::json;

use crate::common::{usage, ConnectArgs};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics, one name per line (or JSON with --json).
    List(ListArgs),
    /// Show a topic's partitions (leader, replicas, offsets) and its non-default configs.
    Describe(DescribeArgs),
    /// Delete a topic and all its data.
    Delete(DeleteArgs),
    /// Add partitions, set or remove topic configs.
    Alter(AlterArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Topic name.
    pub topic: String,
    /// Number of partitions (default 1; for a view, its source's count).
    #[arg(long, short = 'p')]
    pub partitions: Option<i32>,
    /// Replication factor (a single rill node supports only 1).
    #[arg(long, short = 'r', default_value_t = 1)]
    pub replication_factor: i16,
    /// Topic config `key=value` (repeatable), e.g. `--config retention.ms=3600000`.
    #[arg(long, short = 'c', value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Make the topic a filtered view of SOURCE: it holds the source records that match
    /// `--filter` (sets `rill.view.source`).
    #[arg(long, value_name = "SOURCE", requires = "filter")]
    pub view_of: Option<String>,
    /// The view's filter, e.g. `"region = 'eu' AND amount > 100"` (sets `rill.view.filter`).
    #[arg(long, value_name = "EXPRESSION", requires = "view_of")]
    pub filter: Option<String>,
    /// The filter's language: `sql92` (default) or `tag` (`TagA || TagB`).
    #[arg(long, value_name = "TYPE", requires = "view_of")]
    pub filter_type: Option<String>,
    /// Succeed when the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Leave out internal topics (`__consumer_offsets`).
    #[arg(long)]
    pub exclude_internal: bool,
    /// Print a JSON array of {name, partitions, internal}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Topic name.
    pub topic: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The broker's `/metrics` endpoint, read for the log cleaner's dirty ratio and delayed
    /// delivery's waiting records per partition (not part of the Kafka protocol).
    /// Unreachable: the ratio is shown as unknown, waiting records as 0.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9644")]
    pub metrics: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Topic name.
    pub topic: String,
    /// Succeed when the topic does not exist.
    #[arg(long)]
    pub if_exists: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct AlterArgs {
    /// Topic name.
    pub topic: String,
    /// New (larger) number of partitions.
    #[arg(long, short = 'p')]
    pub partitions: Option<i32>,
    /// Set a topic config `key=value` (repeatable).
    #[arg(long, short = 'c', value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Remove a topic config, reverting it to the broker default (repeatable).
    #[arg(long, value_name = "KEY")]
    pub delete_config: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs a topic subcommand.
///
/// # Errors
/// Usage errors, unreachable broker, broker errors.
pub async fn run(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create(a) => create(a).await,
        TopicCommand::List(a) => list(a).await,
        TopicCommand::Describe(a) => describe(a).await,
        TopicCommand::Delete(a) => delete(a).await,
        TopicCommand::Alter(a) => alter(a).await,
    }
}

/// Parses `key=value` pairs.
///
/// # Errors
/// A usage error naming the malformed pair.
pub fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(usage(format!("invalid {what} '{p}': expected KEY=VALUE"))),
        })
        .collect()
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    if let Some(p) = a.partitions.filter(|&p| p < 1) {
        return Err(usage(format!("--partitions must be at least 1, not {p}")));
    }
    let mut configs = parse_pairs(&a.config, "--config")?;
    let client = a.connect.connect().await?;
    let partitions = match (&a.view_of, a.partitions) {
        (_, Some(p)) => p,
        (Some(source), None) => {
            let topic = client
                .topic(source)
                .await
                .with_context(|| format!("reading the view's source topic '{source}'"))?;
            topic.partitions.len() as i32
        }
        (None, None) => 1,
    };
    if let (Some(source), Some(filter)) = (&a.view_of, &a.filter) {
        configs.push(("rill.view.source".into(), source.clone()));
        configs.push(("rill.view.filter".into(), filter.clone()));
        if let Some(kind) = &a.filter_type {
            configs.push(("rill.view.filter.type".into(), kind.to_ascii_uppercase()));
        }
    }
    match client
        .create_topic(&a.topic, partitions, a.replication_factor, &configs)
        .await
    {
        Ok(()) => {
            match &a.view_of {
                Some(source) => println!(
                    "created topic {} with {partitions} partition(s), a filtered view of {source}",
                    a.topic
                ),
                None => println!("created topic {} with {partitions} partition(s)", a.topic),
            }
            Ok(())
        }
        Err(ClientError::Broker { code: 36, .. }) if a.if_not_exists => {
            println!("topic {} already exists", a.topic);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let client = a.connect.connect().await?;
    let topics = client.metadata(None).await?;
    let topics: Vec<_> = topics
        .into_iter()
        .filter(|t| !(a.exclude_internal && (t.is_internal || t.name.starts_with("__"))))
        .collect();
    if a.json {
        let out: Vec<_> = topics
            .iter()
            .map(|t| json!({"name": t.name, "partitions": t.partitions.len(), "internal": t.is_internal || t.name.starts_with("__")}))
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        for t in &topics {
            println!("{}", t.name);
        }
    }
    Ok(())
}

async fn describe(a: DescribeArgs) -> anyhow::Result<()> {
    let client = a.connect.connect().await?;
    let topic = client.topic(&a.topic).await?;
    let ids: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let starts = client
        .list_offsets(&topic, &ids, EARLIEST_TIMESTAMP)
        .await?;
    let ends = client.list_offsets(&topic, &ids, LATEST_TIMESTAMP).await?;
    let configs = client
        .describe_topic_configs(&a.topic)
        .await
        .with_context(|| format!("reading configs of topic '{}'", a.topic))?;
    let set: Vec<_> = configs.iter().filter(|c| !c.is_default).collect();
    let policy = configs
        .iter()
        .find(|c| c.name == "cleanup.policy")
        .and_then(|c| c.value.clone())
        .unwrap_or_else(|| "delete".into());
    let compacted = policy.split(',').any(|p| p.trim() == "compact");
    let delayed = configs
        .iter()
        .any(|c| c.name == "rill.delivery.delayed.enable" && c.value.as_deref() == Some("true"));
    let metrics_text = if compacted || delayed {
        fetch_metrics(&a.metrics)
    } else {
        None
    };
    let gauge = |metric: &str, p: i32| {
        metrics_text
            .as_deref()
            .and_then(|text| partition_values(text, metric, &a.topic).get(&p).copied())
    };
    let ratio = |p: i32| gauge("rill_log_cleaner_dirty_ratio", p);
    // Delayed delivery: records waiting, the earliest due time (epoch ms) and the last
    // delivery's lateness (ms); `None` before the partition's delay store opened.
    let delay_stats = |p: i32| {
        Some((
            gauge("rill_delayed_pending_records", p)? as i64,
            gauge("rill_delayed_next_due_ms", p)? as i64,
            gauge("rill_delayed_delivery_lag_ms", p)? as i64,
        ))
    };
    let offset = |list: &[(i32, i64, i64)], p: i32| {
        list.iter()
            .find(|(q, _, _)| *q == p)
            .map_or(-1, |(_, o, _)| *o)
    };
    if a.json {
        let partitions: Vec<_> = topic
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "log_start_offset": offset(&starts, p.partition),
                    "log_end_offset": offset(&ends, p.partition),
                    "dirty_ratio": ratio(p.partition),
                    "delayed": delay_stats(p.partition).map(|(pending, next_due_ms, lag_ms)| json!({
                        "pending": pending,
                        "next_due_ms": next_due_ms,
                        "delivery_lag_ms": lag_ms,
                    })),
                })
            })
            .collect();
        let configs: serde_json::Map<String, serde_json::Value> = set
            .iter()
            .map(|c| (c.name.clone(), json!(c.value)))
            .collect();
        println!(
            "{}",
            json!({"name": topic.name, "id": topic.id.to_string(), "cleanup_policy": policy, "partitions": partitions, "configs": configs})
        );
        return Ok(());
    }
    println!(
        "Topic: {}  TopicId: {}  PartitionCount: {}",
        topic.name,
        topic.id,
        topic.partitions.len()
    );
    let configs: Vec<String> = set
        .iter()
        .map(|c| format!("{}={}", c.name, c.value.as_deref().unwrap_or("")))
        .collect();
    println!("Configs: {}", configs.join(","));
    println!("CleanupPolicy: {policy}");
    for p in &topic.partitions {
        let dirty = if !compacted {
            String::new()
        } else {
            match ratio(p.partition) {
                Some(r) => format!("  DirtyRatio: {r:.3}"),
                None => "  DirtyRatio: unknown".into(),
            }
        };
        let delayed = if !delayed {
            String::new()
        } else {
            match delay_stats(p.partition) {
                Some((pending, next_due_ms, lag_ms)) => format!(
                    "  DelayedPending: {pending}  NextDueMs: {next_due_ms}  DeliveryLagMs: {lag_ms}"
                ),
                None => "  DelayedPending: 0".into(),
            }
        };
        println!(
            "  Partition: {}  Leader: {}  Replicas: {:?}  Isr: {:?}  LogStartOffset: {}  LogEndOffset: {}{dirty}{delayed}",
            p.partition,
            p.leader,
            p.replicas,
            p.isr,
            offset(&starts, p.partition),
            offset(&ends, p.partition),
        );
    }
    Ok(())
}

/// The broker's Prometheus text (for what the Kafka protocol does not carry: the cleaner's
/// dirty ratio, delayed delivery). `None` when it cannot be read: a plain HTTP/1.1 GET with a
/// 2 s timeout and a 16 MiB bound on the answer.
fn fetch_metrics(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    use std::time::Duration;
    let timeout = Duration::from_secs(2);
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut stream = std::net::TcpStream::connect_timeout(&sock, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = Vec::new();
    stream.take(16 << 20).read_to_end(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// The values of a per-partition metric (`topic` and `partition` labels) for `topic`.
fn partition_values(text: &str, metric: &str, topic: &str) -> std::collections::HashMap<i32, f64> {
    let mut out = std::collections::HashMap::new();
    let prefix = format!("{metric}{{");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        if label("topic").as_deref() != Some(topic) {
            continue;
        }
        if let (Some(p), Ok(v)) = (
            label("partition").and_then(|p| p.parse().ok()),
            value.trim().parse::<f64>(),
        ) {
            out.insert(p, v);
        }
    }
    out
}

async fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    let client = a.connect.connect().await?;
    match client.delete_topic(&a.topic).await {
        Ok(()) => {
            println!("deleted topic {}", a.topic);
            Ok(())
        }
        Err(ClientError::UnknownTopic { .. }) if a.if_exists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn alter(a: AlterArgs) -> anyhow::Result<()> {
    if a.partitions.is_none() && a.config.is_empty() && a.delete_config.is_empty() {
        return Err(usage(
            "nothing to alter: give --partitions, --config or --delete-config",
        ));
    }
    let set = parse_pairs(&a.config, "--config")?;
    let client: Client = a.connect.connect().await?;
    if let Some(n) = a.partitions {
        client.create_partitions(&a.topic, n).await?;
        println!("topic {} now has {n} partition(s)", a.topic);
    }
    if !set.is_empty() || !a.delete_config.is_empty() {
        client
            .alter_topic_configs(&a.topic, &set, &a.delete_config)
            .await?;
        println!("altered configs of topic {}", a.topic);
    }
    Ok(())
}
