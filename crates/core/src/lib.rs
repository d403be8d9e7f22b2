//! hatrunk-core: every decision hatrunk makes about a call, as pure functions and small state machines.
//!
//! Nothing here does I/O, reads a clock or draws a random number: time and randomness come in as
//! arguments, so the same code runs in the node, in unit tests and in deterministic simulation.
//!
//! # Layout
//! - [`trunk`]: the trunk model, its file format and validation (errors name the field).
//! - [`cps`]: a trunk's calls-per-second limit as escrow tokens held for a second.
//! - [`credentials`]: digest HA1 derivation, so passwords are never stored.
//! - [`policy`]: failover policies (`current`, `legacy`, `custom`) over attempt outcomes.
//! - [`plan`]: the attempt chain of one call under a mode (Only Primary, Load Balancing, Auto Fail-over).
//! - [`cdr`]: dispositions, causes and the CDR record.
//! - [`pool`]: concurrent-call accounting, strict and idempotent.
//! - [`escrow`]: per-node shares of the pools, so admission needs no consensus round trip per call.
//! - [`guard`]: per-source rate limits with an expiring ban list, digest brute-force limits.
//! - [`episode`]: bursts (shedding, failover storms) said once when they start and once when they end.
//! - [`health`]: account health from OPTIONS probes with up/down thresholds.
//! - [`rewrite`]: per-account number rules, removed headers, Diversion/History-Info on failover.
//! - [`rr`]: round-robin selection.
//! - [`slot`]: a call's claim on its trunk's pool, by name.
//! - [`srv`]: the order a resolved name's targets are tried in (RFC 2782 priorities and weights).
//! - [`ha`]: Advanced HA: failure detector, quorum, egress node order per `advanced_ha`.

pub mod cdr;
pub mod cps;
pub mod credentials;
pub mod episode;
pub mod error;
pub mod escrow;
pub mod guard;
pub mod ha;
pub mod health;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod rewrite;
pub mod rr;
pub mod slot;
pub mod srv;
pub mod trunk;

pub use error::CoreError;
