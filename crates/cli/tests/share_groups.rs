//! `rill group list` / `rill group describe` on a share group (KIP-932), against a real
//! `rill serve` process: a share member driven with the Rust client acquires records, accepts
//! some and rejects one, and the command line shows the member, the share-partition's start
//! offset, the records in flight and acquired, and the dead letter.

mod common;

use std::time::Duration;

use common::{assert_exit, stdout, Broker};
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch,
};
use kafka_protocol::messages::share_fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    GroupId, ShareAcknowledgeRequest, ShareFetchRequest, ShareGroupHeartbeatRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rill_client::client::{Client, ClientConfig};
use serde_json::Value;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A share member "m1" of group "work" on topic "jobs": joins, opens its session, waits
/// for `produce` to run, acquires the 10 records, accepts 0-3 and rejects 4. Returns the
/// client, whose connection holds the share session (and so the acquired records).
async fn share_member(addr: String, produce: impl FnOnce()) -> Client {
    let client = Client::connect(ClientConfig {
        bootstrap: addr,
        timeout: Duration::from_secs(20),
    })
    .await
    .expect("connect");
    let topic = client.topic("jobs").await.expect("topic");
    let conn = client.any_connection();
    let r = client
        .call(
            &conn,
            &ShareGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s("work")))
                .with_member_id(s("m1"))
                .with_member_epoch(0)
                .with_subscribed_topic_names(Some(vec![TopicName(s("jobs"))])),
        )
        .await
        .expect("heartbeat");
    assert_eq!(r.error_code, 0);
    let fetch = |epoch: i32, wait_ms: i32| {
        ShareFetchRequest::default()
            .with_group_id(Some(GroupId(s("work"))))
            .with_member_id(Some(s("m1")))
            .with_share_session_epoch(epoch)
            .with_max_wait_ms(wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_max_records(100)
            .with_batch_size(100)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(topic.id)
                .with_partitions(vec![
                    FetchPartition::default().with_partition_index(0)
                ])])
    };
    // The first fetch sets the share-partition's start at the log end (latest).
    let r = client.call(&conn, &fetch(0, 0)).await.expect("fetch");
    assert_eq!(r.error_code, 0);
    produce();
    let r = client.call(&conn, &fetch(1, 5_000)).await.expect("fetch");
    let acquired: Vec<(i64, i64)> = r
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .flat_map(|p| p.acquired_records.iter())
        .map(|a| (a.first_offset, a.last_offset))
        .collect();
    assert_eq!(acquired, vec![(0, 9)]);
    let r = client
        .call(
            &conn,
            &ShareAcknowledgeRequest::default()
                .with_group_id(Some(GroupId(s("work"))))
                .with_member_id(Some(s("m1")))
                .with_share_session_epoch(2)
                .with_topics(vec![AcknowledgeTopic::default()
                    .with_topic_id(topic.id)
                    .with_partitions(vec![AcknowledgePartition::default()
                        .with_partition_index(0)
                        .with_acknowledgement_batches(vec![
                            AcknowledgementBatch::default()
                                .with_first_offset(0)
                                .with_last_offset(3)
                                .with_acknowledge_types(vec![1]),
                            AcknowledgementBatch::default()
                                .with_first_offset(4)
                                .with_last_offset(4)
                                .with_acknowledge_types(vec![3]),
                        ])])]),
        )
        .await
        .expect("acknowledge");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    client
}

#[test]
fn group_list_and_describe_show_share_groups() {
    let broker = Broker::start();
    assert_exit(&broker.rill(&["topic", "create", "jobs", "-p", "1"]), 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lines: String = (0..10).map(|i| format!("job{i}\n")).collect();
    let member = runtime.block_on(share_member(broker.addr.clone(), || {
        assert_exit(&broker.rill_stdin(&["produce", "jobs"], &lines), 0);
    }));

    let o = broker.rill(&["group", "list", "--json"]);
    assert_exit(&o, 0);
    let groups: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let work = groups
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "work"))
        .unwrap_or_else(|| panic!("work in {groups}"));
    assert_eq!(work["protocol_type"], "share");
    assert_eq!(work["state"], "Stable");

    let o = broker.rill(&["group", "describe", "work", "--json"]);
    assert_exit(&o, 0);
    let d: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(d["type"], "share");
    assert_eq!(d["state"], "Stable");
    assert_eq!(d["members"][0]["member_id"], "m1");
    assert_eq!(d["members"][0]["assignment"][0]["topic"], "jobs");
    let p = &d["partitions"][0];
    assert_eq!(p["topic"], "jobs");
    // 0-3 accepted and 4 rejected: the start moved to 5; 5-9 are in flight, all acquired.
    assert_eq!(p["start_offset"], 5, "{d}");
    assert_eq!(p["log_end_offset"], 10);
    assert_eq!(p["lag"], 5);
    assert_eq!(p["in_flight"], 5);
    assert_eq!(p["acquired"], 5);
    assert_eq!(p["dead_letters"], 1);

    let o = broker.rill(&["group", "describe", "work"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.starts_with("Share group: work  State: Stable"),
        "{text}"
    );
    assert!(text.contains("member m1"), "{text}");
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("jobs"))
        .unwrap_or_else(|| panic!("a jobs row in {text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, vec!["jobs", "0", "5", "10", "5", "5", "5", "1"]);

    // The member's connection closes (with the runtime that runs its tasks): what it
    // acquired is available again at once.
    runtime.block_on(async move { drop(member) });
    drop(runtime);
    let mut acquired = Value::Null;
    for _ in 0..100 {
        let o = broker.rill(&["group", "describe", "work", "--json"]);
        assert_exit(&o, 0);
        let d: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        acquired = d["partitions"][0]["acquired"].clone();
        if acquired == 0 {
            assert_eq!(d["partitions"][0]["in_flight"], 5);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(acquired, 0, "released on close");
}
