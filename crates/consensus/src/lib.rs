//! hatrunk-consensus: the Raft group that makes trunk configuration and the call pool authoritative
//! cluster-wide (openraft 0.9 with the storage-v2 traits).
//!
//! # Layout
//! - [`types`]: the openraft type configuration, the node record and the replicated commands.
//! - [`state`]: the replicated state machine's data and its pure `apply` (through `hatrunk-core`).
//! - [`trunk_wire`]: a trunk in the log and snapshots: format 2's bytes while they fit, else JSON.
//! - [`fence`]: trunk revisions, boot epochs and ended calls: what refuses a delayed older write.
//! - [`lease`]: admission leases: renewals, lapse and expiry, and the watch that says when.
//! - [`backend`]: the key-value interface the stores write through.
//! - [`disk`]: the production store behind it (an fdatasync'd append-only file), its file layer and
//!   the memory disk that yields the states a power cut may leave.
//! - [`log_store`]: the Raft log; an append is acknowledged only after the backend has flushed.
//! - [`sm_store`]: the state machine store: state in memory, snapshots (bincode) in the backend.
//! - [`network`], [`server`]: the tonic Raft network (client and service) of `proto/cluster.proto`;
//!   [`codec`] bounds every decode.
//! - [`channels`]: the channels a member keeps to the others for its forwarded requests.
//! - [`raft`]: the running member: writes (forwarded to the leader), linearizable reads, membership.
//! - [`quorum`]: check-quorum: a leader that hears no quorum goes quiet so another is elected.
//! - [`membership`]: membership policy (who may join, hand-off before the leader's removal) and status.
//! - [`rt`]: openraft's runtime: tokio with a seedable random source (replayable elections).
//! - [`error`]: the crate's error type.

pub mod backend;
pub mod channels;
pub mod codec;
pub mod disk;
pub mod error;
pub mod fence;
pub mod lease;
mod legacy;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod quorum;
pub mod raft;
pub mod rt;
pub mod server;
pub mod sm_store;
pub mod state;
pub mod trunk_wire;
pub mod types;

/// Generated from `proto/cluster.proto`.
pub mod pb {
    tonic::include_proto!("hatrunk.cluster.v1");
}

pub use error::ConsensusError;
pub use types::{Command, CommandResult, Expect, NodeInfo, NodeRole, Request, Response, Secret, TypeConfig};
