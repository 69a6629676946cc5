//! `rill-client`: a small async client for Kafka-compatible brokers, written for the `rill`
//! command line (topic admin, produce, consume, benchmarks) on the `kafka-protocol` crate.
//!
//! - [`connection`]: one TCP connection; pipelined requests matched to responses in order;
//!   API versions negotiated at connect.
//! - [`client`]: bootstrap, metadata, a connection per broker, admin calls, ListOffsets,
//!   fetch.
//! - [`batch`]: record batches (v2): building them (with compression) and reading them.
//! - [`group`]: consumer group admin (list, describe, offsets, delete) and a simple member.
//! - [`share_group`]: share groups (KIP-932) described: members, start offsets, in-flight
//!   and dead-letter counts.
//! - [`producer`]: batching per partition, linger, pipelined produce requests.
//! - [`error`]: [`ClientError`], with the broker address or topic in every variant.
//!
//! It speaks only what it needs and has no retries: it is a tool's client, not a library
//! for applications.

pub mod batch;
pub mod client;
pub mod connection;
pub mod error;
pub mod group;
pub mod producer;
pub mod share_group;

pub use batch::Compression;
pub use client::{Client, ClientConfig, ConfigResource, FetchSpec, FetchedPartition, TopicInfo};
pub use error::{ClientError, Result};
pub use producer::{Ack, Producer, ProducerConfig};
