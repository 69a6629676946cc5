//! Changes to the KRaft quorum: AddRaftVoter (80), RemoveRaftVoter (81) and
//! UnregisterController (94), Admin's `addRaftVoter`, `removeRaftVoter` and
//! `unregisterController`, answered as a single-node combined-mode Kafka 4.4 answers them
//! (`scripts/kafka-local`: a `--standalone` quorum at `kraft.version` 1).
//!
//! Rill's quorum is the one voter [`crate::quorum`] describes: this node, leader of
//! `__cluster_metadata-0`, whose directory id is unknown (`<undefined>` in Kafka's replica
//! keys) and whose controller listener is named `CONTROLLER`. Nothing can join it: there is
//! no metadata log a new voter could fetch to catch up. So, in Kafka's order of checks
//! (`KafkaRaftClient`, `AddVoterHandler`, `RemoveVoterHandler`, `QuorumController`):
//!
//! - a cluster id other than this cluster's is INCONSISTENT_CLUSTER_ID;
//! - a voter without an id or a directory id is INVALID_REQUEST;
//! - adding: no `CONTROLLER` endpoint is INVALID_REQUEST; this node's id is DUPLICATE_VOTER;
//!   otherwise the new voter's endpoint is asked for its ApiVersions, as Kafka's leader does:
//!   no answer is REQUEST_TIMED_OUT ("... API_VERSIONS returned an error
//!   BROKER_NOT_AVAILABLE"), a `kraft.version` range without 1 is INVALID_REQUEST, and a voter
//!   that answers is REQUEST_TIMED_OUT because it is lagging behind, which is what Kafka
//!   answers a voter that has not caught up with the metadata log;
//! - removing: VOTER_NOT_FOUND, also for this node (Kafka will not remove the last voter);
//! - unregistering a controller: this node is INVALID_REQUEST (the active controller cannot
//!   unregister itself), any other id CONTROLLER_ID_NOT_REGISTERED.
//!
//! A Raft quorum (cluster mode, see DESIGN.md) replaces this module.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    RemoveRaftVoterRequest, RemoveRaftVoterResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::state::BrokerState;

/// The name of the quorum's listener, as `controller.listener.names` usually has it: a voter
/// to add must name its endpoint on it.
pub const CONTROLLER_LISTENER: &str = "CONTROLLER";

/// The `kraft.version` this quorum runs at: 1 (reconfigurable), as a `--standalone` Kafka.
pub const KRAFT_VERSION: i16 = 1;

/// How long the leader waits for a new voter's ApiVersions answer (Kafka's
/// `controller.quorum.request.timeout.ms` default).
const PROBE_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Largest ApiVersions answer read from a new voter.
const PROBE_RESPONSE_MAX_BYTES: usize = 1 << 20;

const REQUEST_TIMED_OUT: i16 = 7;
const INVALID_REQUEST: i16 = 42;
const INCONSISTENT_CLUSTER_ID: i16 = 104;
const DUPLICATE_VOTER: i16 = 126;
const VOTER_NOT_FOUND: i16 = 127;
const CONTROLLER_ID_NOT_REGISTERED: i16 = 136;

/// A code and its message, as the responses carry them.
type Refusal = (i16, Option<String>);

/// Kafka's `Uuid.toString`: the 16 bytes in unpadded URL-safe base64.
pub fn kafka_uuid(id: Uuid) -> String {
    crate::topics::base64url(id.as_bytes())
}

/// Kafka's `ReplicaKey.toString`; a nil directory id is unknown.
fn replica_key(id: i32, directory: Uuid) -> String {
    let directory = if directory.is_nil() {
        "<undefined>".to_string()
    } else {
        kafka_uuid(directory)
    };
    format!("ReplicaKey(id={id}, directoryId={directory})")
}

/// This quorum's voter set as Kafka prints it.
fn voters(node_id: i32) -> String {
    format!("[{}]", replica_key(node_id, Uuid::nil()))
}

fn cluster_id_refusal(given: Option<&StrBytes>, cluster_id: &str) -> Option<Refusal> {
    let given = given?;
    (given.as_str() != cluster_id).then(|| {
        (
            INCONSISTENT_CLUSTER_ID,
            Some(format!(
                "The given id \"{}\" doesn't match the cluster id \"{cluster_id}\"",
                given.as_str()
            )),
        )
    })
}

/// UnregisterController: the code and message for `controller_id` on this node.
pub fn unregister_controller(node_id: i32, controller_id: i32) -> Refusal {
    if controller_id == node_id {
        (
            INVALID_REQUEST,
            Some("Controller cannot unregister itself while it is active.".into()),
        )
    } else {
        (
            CONTROLLER_ID_NOT_REGISTERED,
            Some(format!(
                "Controller ID {controller_id} is not currently registered."
            )),
        )
    }
}

/// RemoveRaftVoter v0.
pub fn remove_voter(state: &BrokerState, r: &RemoveRaftVoterRequest) -> RemoveRaftVoterResponse {
    let (code, message) = remove_refusal(
        state.topics.cluster_id(),
        state.config.node_id,
        r.cluster_id.as_ref(),
        r.voter_id,
        r.voter_directory_id,
    );
    RemoveRaftVoterResponse::default()
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
}

fn remove_refusal(
    cluster_id: &str,
    node_id: i32,
    given_cluster: Option<&StrBytes>,
    voter_id: i32,
    directory: Uuid,
) -> Refusal {
    if let Some(refusal) = cluster_id_refusal(given_cluster, cluster_id) {
        return refusal;
    }
    if voter_id < 0 || directory.is_nil() {
        return (
            INVALID_REQUEST,
            Some("Remove voter request didn't include a valid voter".into()),
        );
    }
    (
        VOTER_NOT_FOUND,
        Some(format!(
            "Cannot remove voter {} from the set of voters {}",
            replica_key(voter_id, directory),
            voters(node_id)
        )),
    )
}

/// The refusals of AddRaftVoter that need no network, in Kafka's order; `Ok` carries the
/// new voter's `CONTROLLER` endpoint to probe.
fn add_refusal(
    cluster_id: &str,
    node_id: i32,
    r: &AddRaftVoterRequest,
) -> Result<(String, u16), Refusal> {
    if let Some(refusal) = cluster_id_refusal(r.cluster_id.as_ref(), cluster_id) {
        return Err(refusal);
    }
    if r.voter_id < 0 || r.voter_directory_id.is_nil() {
        return Err((
            INVALID_REQUEST,
            Some("Add voter request didn't include a valid voter".into()),
        ));
    }
    let Some(endpoint) = r
        .listeners
        .iter()
        .find(|l| l.name.as_str() == CONTROLLER_LISTENER)
    else {
        let endpoints: Vec<String> = r
            .listeners
            .iter()
            .map(|l| {
                format!(
                    "ListenerName({})={}/<unresolved>:{}",
                    l.name, l.host, l.port
                )
            })
            .collect();
        return Err((
            INVALID_REQUEST,
            Some(format!(
                "Add voter request didn't include the endpoint (Endpoints(endpoints={{{}}})) for \
                 the default listener ListenerName({CONTROLLER_LISTENER})",
                endpoints.join(", ")
            )),
        ));
    };
    if r.voter_id == node_id {
        return Err((
            DUPLICATE_VOTER,
            Some(format!(
                "The voter id for {} is already part of the set of voters {}.",
                replica_key(r.voter_id, r.voter_directory_id),
                voters(node_id)
            )),
        ));
    }
    Ok((endpoint.host.to_string(), endpoint.port))
}

/// What the new voter's ApiVersions answer showed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// No answer within the timeout.
    TimedOut,
    /// The connection failed or closed (Kafka's client reports BROKER_NOT_AVAILABLE).
    Unreachable,
    /// An answer: its error code and `kraft.version` range, if it has one.
    Answered {
        error_code: i16,
        kraft: Option<(i16, i16)>,
    },
}

/// Kafka's name of an error code (`Errors.name()`, e.g. `UNSUPPORTED_VERSION`).
fn error_name(code: i16) -> String {
    let Some(e) = kafka_protocol::error::ResponseError::try_from_code(code) else {
        return format!("UNKNOWN_SERVER_ERROR({code})");
    };
    let mut out = String::new();
    for (i, c) in format!("{e:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The answer after the probe, as `AddVoterHandler.handleApiVersionsResponse` gives it.
fn after_probe(voter: &str, probe: Probe) -> Refusal {
    match probe {
        // The pending operation expired: Kafka answers with no message.
        Probe::TimedOut => (REQUEST_TIMED_OUT, None),
        Probe::Unreachable => (
            REQUEST_TIMED_OUT,
            Some(
                "Aborted add voter operation for since API_VERSIONS returned an error \
                 BROKER_NOT_AVAILABLE"
                    .into(),
            ),
        ),
        Probe::Answered { error_code, .. } if error_code != 0 => (
            REQUEST_TIMED_OUT,
            Some(format!(
                "Aborted add voter operation for since API_VERSIONS returned an error {}",
                error_name(error_code)
            )),
        ),
        Probe::Answered { kraft, .. } => match kraft {
            Some((min, max)) if min <= KRAFT_VERSION && KRAFT_VERSION <= max => (
                REQUEST_TIMED_OUT,
                Some(format!(
                    "Aborted add voter operation for {voter} since it is lagging behind"
                )),
            ),
            range => {
                let (min, max) = range.unwrap_or((0, 0));
                (
                    INVALID_REQUEST,
                    Some(format!(
                        "Aborted add voter operation for {voter} since the kraft.version range \
                         (min: {min}, max: {max} doesn't support the finalized version \
                         {KRAFT_VERSION}"
                    )),
                )
            }
        },
    }
}

/// AddRaftVoter v0.
pub async fn add_voter(state: &BrokerState, r: AddRaftVoterRequest) -> AddRaftVoterResponse {
    let (code, message) = match add_refusal(state.topics.cluster_id(), state.config.node_id, &r) {
        Err(refusal) => refusal,
        Ok((host, port)) => {
            let probe = probe(&host, port).await;
            after_probe(&replica_key(r.voter_id, r.voter_directory_id), probe)
        }
    };
    AddRaftVoterResponse::default()
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
}

/// Asks `host:port` for its ApiVersions (v4), bounded by [`PROBE_TIMEOUT`] and
/// [`PROBE_RESPONSE_MAX_BYTES`].
async fn probe(host: &str, port: u16) -> Probe {
    match tokio::time::timeout(PROBE_TIMEOUT, exchange(host, port)).await {
        Err(_) => Probe::TimedOut,
        Ok(Err(_)) => Probe::Unreachable,
        Ok(Ok(response)) => Probe::Answered {
            error_code: response.error_code,
            kraft: response
                .supported_features
                .iter()
                .find(|f| f.name.as_str() == "kraft.version")
                .map(|f| (f.min_version, f.max_version)),
        },
    }
}

async fn exchange(host: &str, port: u16) -> std::io::Result<ApiVersionsResponse> {
    // v4: the first version whose SupportedFeatures may list a range starting at 0
    // (KAFKA-17011), as `kraft.version` 0-1 does; v3 answers leave it out.
    const VERSION: i16 = 4;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("rill-quorum")));
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("rill"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, 2)
        .map_err(|e| invalid(e.to_string()))?;
    body.encode(&mut payload, VERSION)
        .map_err(|e| invalid(e.to_string()))?;
    let mut frame = BytesMut::with_capacity(4 + payload.len());
    frame.put_i32(i32::try_from(payload.len()).map_err(|e| invalid(e.to_string()))?);
    frame.extend_from_slice(&payload);
    stream.write_all(&frame).await?;
    let size = usize::try_from(stream.read_i32().await?).map_err(|e| invalid(e.to_string()))?;
    if size > PROBE_RESPONSE_MAX_BYTES {
        return Err(invalid(format!("answer of {size} bytes")));
    }
    let mut buf = vec![0u8; size];
    stream.read_exact(&mut buf).await?;
    let mut bytes = bytes::Bytes::from(buf);
    // ApiVersions answers always carry response header v0.
    ResponseHeader::decode(&mut bytes, 0).map_err(|e| invalid(e.to_string()))?;
    let response =
        ApiVersionsResponse::decode(&mut bytes, VERSION).map_err(|e| invalid(e.to_string()))?;
    if bytes.has_remaining() && response.error_code == 0 {
        return Err(invalid("bytes after the answer".into()));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::add_raft_voter_request::Listener;

    const CLUSTER: &str = "tyTmlJUeR4STuC1YXbhgKQ";

    fn dir() -> Uuid {
        Uuid::from_u128(0x436a_426c_cd73_4fbb_b470_36f7_a46f_08bb)
    }

    /// Admin sends no cluster id unless asked to (an empty one is another cluster's, in
    /// Kafka too).
    fn add(id: i32, directory: Uuid, listener: &str) -> AddRaftVoterRequest {
        AddRaftVoterRequest::default()
            .with_cluster_id(None)
            .with_voter_id(id)
            .with_voter_directory_id(directory)
            .with_listeners(vec![Listener::default()
                .with_name(StrBytes::from_string(listener.into()))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(1)])
    }

    /// The messages are Kafka 4.4's, byte for byte, as its single-node quorum answered them.
    #[test]
    fn add_voter_refusals_in_kafkas_order() {
        assert_eq!(kafka_uuid(dir()), "Q2pCbM1zT7u0cDb3pG8Iuw");
        let foreign = add(101, dir(), "CONTROLLER")
            .with_cluster_id(Some(StrBytes::from_static_str("wrongcluster")));
        assert_eq!(
            add_refusal(CLUSTER, 1, &foreign),
            Err((
                INCONSISTENT_CLUSTER_ID,
                Some(format!(
                    "The given id \"wrongcluster\" doesn't match the cluster id \"{CLUSTER}\""
                ))
            ))
        );
        assert_eq!(
            add_refusal(CLUSTER, 1, &add(101, Uuid::nil(), "CONTROLLER")),
            Err((
                INVALID_REQUEST,
                Some("Add voter request didn't include a valid voter".into())
            ))
        );
        assert_eq!(
            add_refusal(CLUSTER, 1, &add(101, dir(), "PLAINTEXT")),
            Err((
                INVALID_REQUEST,
                Some(
                    "Add voter request didn't include the endpoint (Endpoints(endpoints=\
                     {ListenerName(PLAINTEXT)=127.0.0.1/<unresolved>:1})) for the default \
                     listener ListenerName(CONTROLLER)"
                        .into()
                )
            ))
        );
        assert_eq!(
            add_refusal(CLUSTER, 1, &add(1, dir(), "CONTROLLER")),
            Err((
                DUPLICATE_VOTER,
                Some(
                    "The voter id for ReplicaKey(id=1, directoryId=Q2pCbM1zT7u0cDb3pG8Iuw) is \
                     already part of the set of voters [ReplicaKey(id=1, \
                     directoryId=<undefined>)]."
                        .into()
                )
            ))
        );
        assert_eq!(
            add_refusal(CLUSTER, 1, &add(101, dir(), "CONTROLLER")),
            Ok(("127.0.0.1".to_string(), 1))
        );
    }

    #[test]
    fn add_voter_answers_after_the_probe() {
        let voter = replica_key(101, dir());
        assert_eq!(
            after_probe(&voter, Probe::TimedOut),
            (REQUEST_TIMED_OUT, None)
        );
        assert_eq!(
            after_probe(&voter, Probe::Unreachable).1.as_deref(),
            Some(
                "Aborted add voter operation for since API_VERSIONS returned an error \
                 BROKER_NOT_AVAILABLE"
            )
        );
        let answered = |kraft| Probe::Answered {
            error_code: 0,
            kraft,
        };
        assert_eq!(
            after_probe(&voter, answered(Some((0, 1)))),
            (
                REQUEST_TIMED_OUT,
                Some(
                    "Aborted add voter operation for ReplicaKey(id=101, \
                     directoryId=Q2pCbM1zT7u0cDb3pG8Iuw) since it is lagging behind"
                        .into()
                )
            )
        );
        assert_eq!(after_probe(&voter, answered(None)).0, INVALID_REQUEST);
        assert_eq!(
            after_probe(&voter, answered(Some((0, 0)))).0,
            INVALID_REQUEST
        );
    }

    #[test]
    fn remove_voter_and_unregister_controller() {
        assert_eq!(
            remove_refusal(CLUSTER, 1, None, 101, dir()),
            (
                VOTER_NOT_FOUND,
                Some(
                    "Cannot remove voter ReplicaKey(id=101, directoryId=Q2pCbM1zT7u0cDb3pG8Iuw) \
                     from the set of voters [ReplicaKey(id=1, directoryId=<undefined>)]"
                        .into()
                )
            )
        );
        // The only voter is not removed either.
        assert_eq!(
            remove_refusal(CLUSTER, 1, None, 1, dir()).0,
            VOTER_NOT_FOUND
        );
        assert_eq!(
            remove_refusal(CLUSTER, 1, None, -1, dir()).0,
            INVALID_REQUEST
        );
        assert_eq!(
            remove_refusal(CLUSTER, 1, None, 1, Uuid::nil()).0,
            INVALID_REQUEST
        );
        let foreign = StrBytes::from_static_str("x");
        assert_eq!(
            remove_refusal(CLUSTER, 1, Some(&foreign), 1, dir()).0,
            INCONSISTENT_CLUSTER_ID
        );
        assert_eq!(
            unregister_controller(1, 1),
            (
                INVALID_REQUEST,
                Some("Controller cannot unregister itself while it is active.".into())
            )
        );
        assert_eq!(
            unregister_controller(1, 101),
            (
                CONTROLLER_ID_NOT_REGISTERED,
                Some("Controller ID 101 is not currently registered.".into())
            )
        );
    }

    /// A node that answers ApiVersions v4 with its `kraft.version` range (v3 would leave a
    /// range starting at 0 out).
    #[tokio::test]
    async fn probe_reads_the_kraft_version_range() {
        use kafka_protocol::messages::api_versions_response::SupportedFeatureKey;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let size = socket.read_i32().await.unwrap() as usize;
            let mut buf = vec![0u8; size];
            socket.read_exact(&mut buf).await.unwrap();
            let mut bytes = bytes::Bytes::from(buf);
            let header = RequestHeader::decode(&mut bytes, 2).unwrap();
            assert_eq!(header.request_api_key, ApiKey::ApiVersions as i16);
            let version = header.request_api_version;
            ApiVersionsRequest::decode(&mut bytes, version).unwrap();
            let response = ApiVersionsResponse::default().with_supported_features(vec![
                SupportedFeatureKey::default()
                    .with_name(StrBytes::from_static_str("kraft.version"))
                    .with_min_version(0)
                    .with_max_version(1),
            ]);
            let mut body = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut body, 0)
                .unwrap();
            response.encode(&mut body, version).unwrap();
            socket.write_i32(body.len() as i32).await.unwrap();
            socket.write_all(&body).await.unwrap();
            version
        });
        assert_eq!(
            probe("127.0.0.1", port).await,
            Probe::Answered {
                error_code: 0,
                kraft: Some((0, 1))
            }
        );
        assert_eq!(server.await.unwrap(), 4);
    }

    /// A closed port is unreachable; a listener that never answers times out (bounded).
    #[tokio::test]
    async fn probe_of_closed_and_silent_endpoints() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert_eq!(probe("127.0.0.1", port).await, Probe::Unreachable);
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        assert_eq!(probe("127.0.0.1", port).await, Probe::TimedOut);
    }
}
