//! hatrunk-node: the running node. It wires the pure decisions of `hatrunk-core` and the SIP layer of
//! `hatrunk-sip` to sockets, storage, the admin API and metrics.
//!
//! # Layout
//! - [`config`]: the node TOML, defaults and validation.
//! - [`cluster_health`]: the heartbeat failure detector and the health view the proxy routes on;
//!   [`cluster_events`]: the leader, member, zone and region changes it logs.
//! - [`proxy`]: the SIP proxy engine (calls, failover, dialogs, registrar, probes), pure over events.
//! - [`runtime`]: the node's tasks; turns engine actions into I/O.
//! - [`store`], [`admission`]: the configuration and pool interfaces, single-node implementations.
//! - [`admin`]: the admin gRPC service; [`http`]: `/metrics` and `/health`; [`cdr`]: the CDR writer.
//! - [`status`], [`metrics`]: live state shared with the API; [`dns`]: PBX targets by name.
//! - [`tls`], [`gate`]: TLS material from the config; who may call the gRPC services.

/// The data format this release writes (`hatrunk --version` names it).
pub const DATA_FORMAT: u32 = hatrunk_consensus::sm_store::DATA_FORMAT;

pub mod admin;
pub mod admission;
pub mod cdr;
pub mod cluster_events;
pub mod cluster_health;
pub mod config;
pub mod dns;
pub mod error;
pub mod gate;
pub mod http;
pub mod metrics;
pub mod proxy;
pub mod recent;
pub mod runtime;
pub mod status;
pub mod store;
pub mod tls;
pub mod tls_pin;
pub mod upgrade;

pub use error::NodeError;
