//! hatrunk-consensus: the Raft group that makes trunk configuration and the call pool authoritative
//! cluster-wide (openraft 0.9 with the storage-v2 traits).
//!
//! # Layout
//! - [`types`]: the openraft type configuration, the node record and the replicated commands.
//! - [`state`]: the replicated state machine's data and its pure `apply` (through `hatrunk-core`).
//! - [`log_store`]: the Raft log in sled; an append is acknowledged only after sled has flushed.
//! - [`sm_store`]: the state machine store: state in memory, snapshots (bincode) persisted in sled.
//! - [`error`]: the crate's error type.

pub mod error;
pub mod log_store;
pub mod sm_store;
pub mod state;
pub mod types;

pub use error::ConsensusError;
pub use types::{Command, CommandResult, NodeInfo, Request, Response, TypeConfig};
