//! `rill bench rebalance`: how long a consumer group takes to settle when one of its members
//! leaves, with the KIP-848 protocol (ConsumerGroupHeartbeat, the broker assigns) or the
//! classic one (JoinGroup/SyncGroup/Heartbeat, eager: every member rejoins and a leader
//! assigns ranges). Members are raw protocol clients, one connection each, in this process,
//! so 50 of them fit on a small machine; they behave as the Java client does by default:
//! classic members heartbeat every `--classic-heartbeat-interval-ms` (Java's
//! heartbeat.interval.ms, 3 s) and rejoin at once when told to; KIP-848 members heartbeat at
//! the interval the broker gives and at once after taking a new assignment.
//!
//! Settled means: every remaining member at one new generation (classic) or member epoch
//! (KIP-848), every partition owned by exactly one of them. The figure is printed next to
//! the heartbeat interval, the floor of what a member-driven protocol can do (a member
//! learns of the change at its next heartbeat).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rill_client::connection::Connection;
use rill_client::group::{decode_assignment, encode_versioned, range_assign};
use rill_client::TopicInfo;
use serde_json::json;
use tokio::sync::watch;

use crate::common::{usage, ConnectArgs};

const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
/// Most members a run may have (each is a task and a connection).
const MEMBERS_MAX: usize = 1_000;
/// FindCoordinator attempts, 500 ms apart.
const COORDINATOR_ATTEMPTS: u32 = 60;
/// How often the settle condition is checked.
const POLL: Duration = Duration::from_millis(2);

#[derive(Args, Debug)]
pub struct RebalanceBench {
    /// `consumer` (KIP-848) or `classic`.
    #[arg(long, default_value = "consumer")]
    pub protocol: String,
    /// Members in the group; one of them leaves.
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Topic to consume; created with --partitions when missing.
    #[arg(long, short = 't', default_value = "rill-bench-rebalance")]
    pub topic: String,
    /// Partitions of the topic when it is created (at least --members).
    #[arg(long, default_value_t = 100)]
    pub partitions: i32,
    /// Classic members' heartbeat interval (Java's heartbeat.interval.ms).
    #[arg(long, default_value_t = 3_000)]
    pub classic_heartbeat_interval_ms: u64,
    /// Classic members' session timeout (Java's session.timeout.ms).
    #[arg(long, default_value_t = 45_000)]
    pub classic_session_timeout_ms: i32,
    /// Bound on each phase (the group forming, then settling).
    #[arg(long, default_value_t = 180)]
    pub timeout_s: u64,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What a member holds, as the settle check sees it.
#[derive(Debug, Clone, Default)]
struct View {
    /// Generation (classic) or member epoch (KIP-848) of `owns`.
    generation: i32,
    owns: BTreeSet<i32>,
    /// True once the member runs, false once its task ended.
    active: bool,
    /// Set by the run when it tells the member to leave: from then on it no longer counts,
    /// whatever its task still reports.
    left: bool,
    /// Heartbeat interval it runs at, in ms.
    interval_ms: u64,
    errors: u64,
}

/// Every member's view; locked for microseconds, never across an await.
impl View {
    /// Whether the settle checks count this member.
    fn counts(&self) -> bool {
        self.active && !self.left
    }
}

type Views = Arc<std::sync::Mutex<Vec<View>>>;

/// One member's fixed setup.
#[derive(Clone)]
struct MemberSetup {
    index: usize,
    group: String,
    topic: TopicInfo,
    partitions: Vec<i32>,
    classic_heartbeat_interval_ms: u64,
    classic_session_timeout_ms: i32,
}

/// Runs the benchmark.
///
/// # Errors
/// Usage errors, an unreachable broker, a group that never forms or never settles.
pub async fn run(b: RebalanceBench) -> anyhow::Result<()> {
    let classic = match b.protocol.as_str() {
        "classic" => true,
        "consumer" => false,
        other => {
            return Err(usage(format!(
                "--protocol {other}: expected consumer or classic"
            )))
        }
    };
    if b.members < 2 || b.members > MEMBERS_MAX {
        return Err(usage(format!("--members must be 2..={MEMBERS_MAX}")));
    }
    if b.partitions < b.members as i32 {
        return Err(usage("--partitions must be at least --members"));
    }
    let client = b.connect.connect().await?;
    let topic = crate::bench::ensure_topic(&client, &b.topic, b.partitions).await?;
    let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let group = format!("rill-bench-rebalance-{}-{nanos}", b.protocol);
    // A broker creating `__consumer_offsets` (Kafka's first group) answers
    // COORDINATOR_NOT_AVAILABLE for a while: bounded retries.
    let mut attempt = 0;
    let coordinator = loop {
        match client.coordinator(&group).await {
            Ok(c) => break c,
            Err(e) if attempt < COORDINATOR_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "finding the coordinator");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("finding the group's coordinator"),
        }
    };
    let addr = coordinator.addr().to_string();
    let timeout = client.timeout();

    let views: Views = Arc::new(std::sync::Mutex::new(vec![View::default(); b.members]));
    let mut stops = Vec::with_capacity(b.members);
    let mut tasks = Vec::with_capacity(b.members);
    for index in 0..b.members {
        let conn = Connection::connect(&addr, timeout).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        stops.push(stop_tx);
        let setup = MemberSetup {
            index,
            group: group.clone(),
            topic: topic.clone(),
            partitions: partitions.clone(),
            classic_heartbeat_interval_ms: b.classic_heartbeat_interval_ms,
            classic_session_timeout_ms: b.classic_session_timeout_ms,
        };
        let views = Arc::clone(&views);
        tasks.push(tokio::spawn(async move {
            let r = if classic {
                classic_member(conn, setup, views, stop_rx).await
            } else {
                consumer_member(conn, setup, views, stop_rx).await
            };
            if let Err(e) = &r {
                eprintln!("member failed: {e:#}");
            }
        }));
    }

    let phase = Duration::from_secs(b.timeout_s.max(1));
    let started = Instant::now();
    let all: BTreeSet<i32> = partitions.iter().copied().collect();
    let formed_at = wait_settled(&views, &all, b.members, started + phase)
        .await
        .context("the group never formed")?;
    let form_s = formed_at.0.duration_since(started).as_secs_f64();
    let before = formed_at.1;

    // One member leaves.
    let left = Instant::now();
    let moved: BTreeSet<i32> = views.lock().expect("views")[0].owns.clone();
    set_view(&views, 0, |v| v.left = true);
    stops[0].send_replace(true);
    let mut reassigned_ms = None;
    let deadline = left + phase;
    let settled = loop {
        if Instant::now() > deadline {
            bail!("the group did not settle within {} s", b.timeout_s);
        }
        if reassigned_ms.is_none() && owned_once_by_others(&views, &moved) {
            reassigned_ms = Some(left.elapsed().as_secs_f64() * 1e3);
        }
        if let Some((_, generation)) = settled(&views, &all, before, b.members - 1) {
            break generation;
        }
        tokio::time::sleep(POLL).await;
    };
    let settle_ms = left.elapsed().as_secs_f64() * 1e3;
    let (interval_ms, errors) = {
        let v = views.lock().expect("views");
        (
            v.iter().map(|m| m.interval_ms).max().unwrap_or(0),
            v.iter().map(|m| m.errors).sum::<u64>(),
        )
    };
    for s in &stops {
        s.send_replace(true);
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let ratio = settle_ms / interval_ms.max(1) as f64;
    if b.json {
        println!(
            "{}",
            json!({
                "mode": "rebalance",
                "protocol": b.protocol,
                "members": b.members,
                "partitions": partitions.len(),
                "form_s": form_s,
                "settle_ms": settle_ms,
                "reassigned_ms": reassigned_ms,
                "heartbeat_interval_ms": interval_ms,
                "settle_per_heartbeat_interval": ratio,
                "generation_before": before,
                "generation_after": settled,
                "member_errors": errors,
            })
        );
    } else {
        println!(
            "{} protocol, {} members, {} partitions: formed in {form_s:.1} s; one member left: \
             its partitions owned again after {:.0} ms, group settled after {settle_ms:.0} ms \
             ({ratio:.2}x the {interval_ms} ms heartbeat interval); generation {before} -> \
             {settled}; {errors} member errors",
            b.protocol,
            b.members,
            partitions.len(),
            reassigned_ms.unwrap_or(f64::NAN),
        );
    }
    Ok(())
}

/// Waits until [`settled`] holds for all `members` (the group formed); the time it did and
/// the generation.
async fn wait_settled(
    views: &Views,
    all: &BTreeSet<i32>,
    members: usize,
    deadline: Instant,
) -> anyhow::Result<(Instant, i32)> {
    // Bounded by the deadline.
    loop {
        if let Some(s) = settled(views, all, i32::MIN, members) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("timed out");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `members` members that count, all at one generation above `above`, every partition of
/// `all` owned by exactly one of them.
fn settled(
    views: &Views,
    all: &BTreeSet<i32>,
    above: i32,
    members: usize,
) -> Option<(Instant, i32)> {
    let v = views.lock().expect("views");
    let active: Vec<&View> = v.iter().filter(|m| m.counts()).collect();
    if active.len() != members {
        return None;
    }
    let generation = active.first()?.generation;
    if generation <= above || active.iter().any(|m| m.generation != generation) {
        return None;
    }
    let count: usize = active.iter().map(|m| m.owns.len()).sum();
    let union: BTreeSet<i32> = active.iter().flat_map(|m| m.owns.iter().copied()).collect();
    (count == all.len() && &union == all).then(|| (Instant::now(), generation))
}

/// Whether every partition of `moved` is owned by exactly one member that counts.
fn owned_once_by_others(views: &Views, moved: &BTreeSet<i32>) -> bool {
    let v = views.lock().expect("views");
    moved.iter().all(|p| {
        v.iter()
            .filter(|m| m.counts() && m.owns.contains(p))
            .count()
            == 1
    })
}

fn set_view(views: &Views, index: usize, f: impl FnOnce(&mut View)) {
    f(&mut views.lock().expect("views")[index]);
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Waits `ms` or until told to stop; true when told to stop.
async fn pause(stop: &mut watch::Receiver<bool>, ms: u64) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// A KIP-848 member: joins, heartbeats at the broker's interval (at once after taking a new
/// assignment), leaves with epoch -1 when told to stop.
async fn consumer_member(
    conn: Connection,
    m: MemberSetup,
    views: Views,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let member_id = format!("{}-{}", m.group, m.index);
    let mut epoch = 0;
    let mut owns: BTreeSet<i32> = BTreeSet::new();
    let mut interval_ms = 1_000;
    let mut immediate = false;
    // Bounded: ends when told to stop (the run's phases are bounded).
    loop {
        if immediate {
            immediate = false;
        } else if pause(&mut stop, interval_ms).await {
            break;
        }
        let mut r = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(&m.group)))
            .with_member_id(s(&member_id))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if epoch == 0 { 60_000 } else { -1 })
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic_id(m.topic.id)
                .with_partitions(owns.iter().copied().collect())]));
        if epoch == 0 {
            r = r
                .with_subscribed_topic_names(Some(vec![TopicName(s(&m.topic.name))]))
                .with_topic_partitions(Some(Vec::new()));
        }
        let resp = conn.send(&r).await?;
        if resp.error_code != 0 {
            // Fenced or unknown: start over, as the Java client does.
            set_view(&views, m.index, |v| v.errors += 1);
            epoch = 0;
            owns.clear();
            continue;
        }
        epoch = resp.member_epoch;
        interval_ms = u64::try_from(resp.heartbeat_interval_ms)
            .unwrap_or(1_000)
            .max(1);
        if let Some(a) = &resp.assignment {
            let next: BTreeSet<i32> = a
                .topic_partitions
                .iter()
                .filter(|t| t.topic_id == m.topic.id)
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
            // A reconciled assignment is acknowledged by the next heartbeat, sent at once.
            immediate = next != owns;
            owns = next;
        }
        set_view(&views, m.index, |v| {
            v.generation = epoch;
            v.owns = owns.clone();
            v.active = true;
            v.interval_ms = interval_ms;
        });
    }
    set_view(&views, m.index, |v| v.active = false);
    if epoch > 0 {
        let leave = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(&m.group)))
            .with_member_id(s(&member_id))
            .with_member_epoch(-1);
        conn.send(&leave).await?;
    }
    Ok(())
}

/// A classic member (eager): joins, the leader assigns ranges, heartbeats every interval,
/// drops everything and rejoins when a rebalance starts, leaves when told to stop.
async fn classic_member(
    conn: Connection,
    m: MemberSetup,
    views: Views,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let subscription = encode_versioned(
        &ConsumerProtocolSubscription::default().with_topics(vec![s(&m.topic.name)]),
        0,
    )?;
    let mut member_id = String::new();
    set_view(&views, m.index, |v| {
        v.active = true;
        v.interval_ms = m.classic_heartbeat_interval_ms;
    });
    // Bounded: ends when told to stop (the run's phases are bounded).
    'join: loop {
        if *stop.borrow() {
            break;
        }
        let join = JoinGroupRequest::default()
            .with_group_id(GroupId(s(&m.group)))
            .with_session_timeout_ms(m.classic_session_timeout_ms)
            .with_rebalance_timeout_ms(60_000)
            .with_member_id(s(&member_id))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription.clone())]);
        let joined = conn.send(&join).await?;
        if joined.error_code == MEMBER_ID_REQUIRED {
            member_id = joined.member_id.to_string();
            continue;
        }
        if joined.error_code != 0 {
            set_view(&views, m.index, |v| v.errors += 1);
            if joined.error_code != REBALANCE_IN_PROGRESS {
                member_id.clear();
            }
            continue;
        }
        member_id = joined.member_id.to_string();
        let assignments = if joined.leader == joined.member_id {
            let mut members: Vec<String> = joined
                .members
                .iter()
                .map(|x| x.member_id.to_string())
                .collect();
            members.sort();
            range_assign(&m.topic.name, &m.partitions, &members)?
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&m.group)))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone())
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(joined.protocol_name.clone())
            .with_assignments(assignments);
        let synced = conn.send(&sync).await?;
        if synced.error_code != 0 {
            set_view(&views, m.index, |v| v.errors += 1);
            continue;
        }
        let owns: BTreeSet<i32> = decode_assignment(&synced.assignment)
            .unwrap_or_default()
            .into_iter()
            .filter(|(t, _)| *t == m.topic.name)
            .flat_map(|(_, ps)| ps)
            .collect();
        set_view(&views, m.index, |v| {
            v.generation = joined.generation_id;
            v.owns = owns;
        });
        loop {
            if pause(&mut stop, m.classic_heartbeat_interval_ms).await {
                break 'join;
            }
            let hb = HeartbeatRequest::default()
                .with_group_id(GroupId(s(&m.group)))
                .with_generation_id(joined.generation_id)
                .with_member_id(s(&member_id));
            let r = conn.send(&hb).await?;
            if r.error_code != 0 {
                // Eager: everything is revoked before rejoining.
                set_view(&views, m.index, |v| v.owns.clear());
                if r.error_code != REBALANCE_IN_PROGRESS {
                    set_view(&views, m.index, |v| v.errors += 1);
                    member_id.clear();
                }
                continue 'join;
            }
        }
    }
    set_view(&views, m.index, |v| v.active = false);
    if !member_id.is_empty() {
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&m.group)))
            .with_members(vec![MemberIdentity::default().with_member_id(s(&member_id))]);
        let version = conn.version_for(kafka_protocol::messages::ApiKey::LeaveGroup)?;
        let leave = if version >= 3 {
            leave
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&m.group)))
                .with_member_id(s(&member_id))
        };
        conn.send_versioned(&leave, version)?.await?;
    }
    Ok(())
}
