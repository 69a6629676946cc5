//! `rill config describe|alter`: the configs of a topic, a broker, a group or a broker's log
//! levels, over DescribeConfigs and IncrementalAlterConfigs (as Kafka's
//! `kafka-configs.sh --describe|--alter`). Broker and group configs changed here are applied
//! at once and kept across restarts; log levels last until the broker stops.

use clap::{Args, Subcommand};
use rill_client::ConfigResource;

use crate::common::{usage, ConnectArgs};
use crate::topic::parse_pairs;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every config of a topic or broker: name, value, and where the value comes from.
    Describe(DescribeArgs),
    /// Set or delete (revert to the default) configs of a topic or broker.
    Alter(AlterArgs),
}

/// Which resource: exactly one of `--topic`, `--broker`, `--group` and `--broker-logger`.
#[derive(Args, Debug)]
pub struct Target {
    /// A topic.
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// A broker by id, or `""` for the cluster-wide default of dynamic broker configs.
    #[arg(long, value_name = "ID")]
    pub broker: Option<String>,
    /// A group (consumer, share or streams): its group configs.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A broker's log levels (`root` and module paths such as `rill_broker::fetch`).
    #[arg(long, value_name = "ID")]
    pub broker_logger: Option<String>,
}

impl Target {
    fn resource(&self) -> anyhow::Result<ConfigResource> {
        match (&self.topic, &self.broker, &self.group, &self.broker_logger) {
            (Some(topic), None, None, None) => Ok(ConfigResource::Topic(topic.clone())),
            (None, Some(broker), None, None) => Ok(ConfigResource::Broker(broker.clone())),
            (None, None, Some(group), None) => Ok(ConfigResource::Group(group.clone())),
            (None, None, None, Some(id)) => Ok(ConfigResource::BrokerLogger(id.clone())),
            _ => Err(usage(
                "give exactly one of --topic NAME, --broker ID, --group GROUP and --broker-logger ID",
            )),
        }
    }
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct AlterArgs {
    #[command(flatten)]
    pub target: Target,
    /// Set a config `key=value` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Delete a config, reverting it to its default (repeatable).
    #[arg(long, value_name = "KEY")]
    pub delete: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs a config subcommand.
pub async fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Describe(a) => describe(a).await,
        ConfigCommand::Alter(a) => alter(a).await,
    }
}

/// Kafka's ConfigSource, as `kafka-configs.sh` names it.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        8 => "DYNAMIC_GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

async fn describe(a: DescribeArgs) -> anyhow::Result<()> {
    let resource = a.target.resource()?;
    let client = a.connect.connect().await?;
    for entry in client.describe_configs(&resource).await? {
        let value = if entry.sensitive {
            "(sensitive)".to_string()
        } else {
            entry.value.unwrap_or_else(|| "null".to_string())
        };
        let read_only = if entry.read_only { " read-only" } else { "" };
        println!(
            "{}={value} ({}{read_only})",
            entry.name,
            source_name(entry.source)
        );
    }
    Ok(())
}

async fn alter(a: AlterArgs) -> anyhow::Result<()> {
    let resource = a.target.resource()?;
    if a.set.is_empty() && a.delete.is_empty() {
        return Err(usage(
            "nothing to alter: give --set KEY=VALUE or --delete KEY",
        ));
    }
    let set = parse_pairs(&a.set, "--set")?;
    let client = a.connect.connect().await?;
    client.alter_configs(&resource, &set, &a.delete).await?;
    println!("altered {} config(s)", set.len() + a.delete.len());
    Ok(())
}
