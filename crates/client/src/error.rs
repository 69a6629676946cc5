//! The client's error type: every variant says which broker or topic it is about, so the
//! command line can print something a person can act on.

use std::io;

/// What went wrong talking to a Kafka-compatible broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No TCP connection could be made (nothing listening, wrong address, firewall).
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// Connecting or a request took longer than allowed.
    #[error("{op} timed out after {timeout_ms} ms (broker {addr})")]
    Timeout {
        op: &'static str,
        addr: String,
        timeout_ms: u64,
    },
    /// The connection failed or was closed by the broker while requests were outstanding.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost { addr: String, reason: String },
    /// A response could not be decoded, or did not answer the request it should have.
    #[error("protocol error with {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    /// The broker does not support any version of an API this client can speak.
    #[error("broker {addr} does not support {api} versions {min}..={max}")]
    UnsupportedApi {
        addr: String,
        api: &'static str,
        min: i16,
        max: i16,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {name} (Kafka error code {code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        context: String,
        code: i16,
        name: String,
        message: Option<String>,
    },
    /// The topic does not exist on the cluster.
    #[error("topic '{topic}' does not exist")]
    UnknownTopic { topic: String },
    /// The partition does not exist in an existing topic.
    #[error("topic '{topic}' has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        partitions: usize,
    },
    /// Bad input to the client itself (not the broker's fault).
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// Turns a Kafka error code into `Ok(())` for 0 and [`ClientError::Broker`] otherwise.
    pub fn check(code: i16, context: impl FnOnce() -> String) -> Result<(), ClientError> {
        Self::check_msg(code, None, context)
    }

    /// As [`ClientError::check`], keeping the broker's error message.
    pub fn check_msg(
        code: i16,
        message: Option<&str>,
        context: impl FnOnce() -> String,
    ) -> Result<(), ClientError> {
        if code == 0 {
            return Ok(());
        }
        Err(ClientError::Broker {
            context: context(),
            code,
            name: error_name(code),
            message: message.map(str::to_string),
        })
    }

    /// True when the broker could not be reached at all (the command line says what to check).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Timeout { op: "connect", .. }
        )
    }
}

/// The Kafka name of an error code (`UNKNOWN_TOPIC_OR_PARTITION`), or `UNKNOWN(code)`.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => screaming_snake(&format!("{e:?}")),
        None => format!("UNKNOWN({code})"),
    }
}

/// Results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// `UnknownTopicOrPartition` → `UNKNOWN_TOPIC_OR_PARTITION`, the spelling Kafka users know.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafka_spelling() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(-2), "UNKNOWN(-2)");
    }
}
