//! What the client commands share: how to reach the cluster, usage errors, and turning
//! errors into messages a person can act on.

use std::time::Duration;

use clap::Args;
use rill_client::{Client, ClientConfig, ClientError};

/// How to reach a Kafka-compatible cluster.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker(s) to bootstrap from, `host:port[,host:port...]`.
    #[arg(
        long,
        short = 'b',
        env = "RILL_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap_server: String,
    /// Bound on connecting and on each request, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
}

impl ConnectArgs {
    /// Connects (the error says which address and what to check).
    ///
    /// # Errors
    /// No bootstrap server reachable.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(ClientConfig {
            bootstrap: self.bootstrap_server.clone(),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
        })
        .await
        .map_err(anyhow::Error::from)
    }
}

/// A mistake in the command line that clap cannot see (conflicting values, bad formats):
/// exit code 2, like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns a usage error (exit code 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Exit code for an error: 2 for usage errors, 1 for everything else.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// The message printed for an error, with a hint where one helps.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = format!("error: {error:#}");
    let client = error.chain().find_map(|e| e.downcast_ref::<ClientError>());
    if let Some(e) = client {
        if let Some(hint) = hint(e) {
            text.push_str("\n  hint: ");
            text.push_str(&hint);
        }
    }
    if error.downcast_ref::<UsageError>().is_some() {
        text.push_str("\n\nFor more information, try '--help'.");
    }
    text
}

fn hint(error: &ClientError) -> Option<String> {
    match error {
        ClientError::Connect { addr, .. } | ClientError::Timeout { op: "connect", addr, .. } => Some(format!(
            "is a Kafka-compatible broker running and listening on {addr}? Start one with `rill serve`, \
             or point at another with --bootstrap-server HOST:PORT"
        )),
        ClientError::UnknownTopic { topic } => Some(format!(
            "list topics with `rill topic list`; create it with `rill topic create {topic}`"
        )),
        ClientError::ConnectionLost { addr, .. } => Some(format!(
            "the broker at {addr} closed the connection; its log may say why"
        )),
        _ => None,
    }
}
