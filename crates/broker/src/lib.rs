//! Rill's Kafka wire-protocol server.
//!
//! The crate turns TCP connections speaking the Kafka protocol into calls on
//! [`rill_storage`]. A request travels through these modules, in order:
//!
//! - [`broker`]: [`Broker`] opens storage, loads the topic registry, binds the socket and
//!   runs until shutdown. It is what the `rill` binary and the integration tests start.
//! - [`listener`]: the accept loop, bounded by a connection semaphore, and graceful shutdown.
//! - [`connection`]: one TCP connection; reads size-prefixed frames ([`frame`]) and writes
//!   responses through the zero-copy [`response_writer`].
//! - [`dispatch`]: decodes the request header and routes to one module per API family:
//!   [`api_versions`], [`metadata`], [`produce`], [`fetch`], [`list_offsets`],
//!   [`leader_epoch`], [`admin`], [`configs`], [`producer_id`], [`sasl`].
//! - [`coordinator`]: log-backed coordinators on one runtime; the group coordinator behind
//!   [`group_api`] and [`txn_offset_commit`].
//! - [`topics`]: the persisted topic registry (names, ids, partition counts, configs).
//! - [`state`]: what every handler shares (storage, registry, metrics, long-poll notifiers).
//! - [`error`]: error enums and the mapping from storage errors to Kafka error codes.
//! - [`metrics`]: atomic counters, notably bytes sent by `sendfile(2)` versus copied.
//!
//! **Invariant:** record batches are never re-encoded, and never decoded on the produce or
//! fetch path. Produce hands the client's bytes to `Log::append`; fetch sends file ranges
//! straight from the segment files. The one exception is read-only: ListOffsets by timestamp
//! decompresses a single stored batch to find a record inside it (storage has no codecs).

pub mod acls;
pub mod admin;
pub mod api_versions;
pub mod atomic_file;
pub mod authorizer;
pub mod broker;
pub mod broker_configs;
pub mod client_quotas;
pub mod cold_read;
pub mod configs;
pub mod connection;
pub mod consumer_group_api;
pub mod coordinator;
pub mod credentials;
pub mod delayed;
pub mod describe_topic_partitions;
pub mod dispatch;
pub mod error;
pub mod fetch;
pub mod fetch_session;
pub mod filter;
pub mod frame;
pub mod group_api;
pub mod group_configs;
pub mod hand_codec;
pub mod in_flight;
pub mod io_pool;
pub mod leader_epoch;
pub mod line_field;
pub mod list_offsets;
pub mod listener;
pub mod log_levels;
pub mod metadata;
pub mod metrics;
pub mod produce;
pub mod producer_id;
pub mod quorum;
pub mod quota_sensors;
pub mod quotas;
pub mod replica_admin;
pub mod response;
pub mod response_writer;
pub mod sasl;
pub mod scram;
pub mod share_admin;
pub mod share_dlq;
pub mod share_fetch;
pub mod share_group_api;
pub mod share_settings;
pub mod state;
pub mod streams_groups;
pub mod topics;
pub mod txn_api;
pub mod txn_offset_commit;
pub mod update_features;
pub mod view;
pub mod voters;
pub mod write_txn_markers;

pub use broker::{Broker, BrokerConfig};
pub use cold_read::{ColdReadConfig, ReadPathPolicy};
pub use coordinator::txn::coordinator::TxnConfig;
pub use error::BrokerError;
pub use metrics::{Metrics, MetricsSnapshot};
pub use response_writer::WriteMode;
