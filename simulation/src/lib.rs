//! hatrunk-sim: whole hatrunk clusters in a turmoil simulation. Every node runs the real node code
//! (SIP call path, Raft over gRPC, escrow admission, failure detector, egress forwarding) on
//! simulated sockets, a simulated clock and a memory disk that survives crashes as a real one
//! would; carriers, PBXes and an operator are SIP and gRPC peers inside the simulation. One seed
//! derives every choice, so a failing run replays exactly.
//!
//! # Layout
//! - [`topology`]: layouts (2T, 4T, 2T+4T), node configurations, the trunk files.
//! - [`net`]: turmoil's sockets behind the node's I/O seams.
//! - [`ua`]: the carrier, the PBXes, the operator.
//! - [`oracle`]: what they saw; the trace and its hash.
//! - [`scenario`]: named scenarios and seed-derived ones; faults.
//! - [`run`]: one run of a scenario; `faults`: what each fault does to the simulated world;
//!   [`invariants`]: the judges; [`report`]: the pictures.
//! - [`broken`]: deliberately broken builds the judges must catch.

pub mod broken;
mod faults;
pub mod invariants;
pub mod net;
pub mod oracle;
pub mod report;
pub mod run;
pub mod scenario;
pub mod topology;
pub mod ua;
pub mod wan;

use invariants::Verdict;
use scenario::Scenario;

/// A judged run.
pub struct Judged {
    pub scenario: Scenario,
    pub seed: u64,
    pub verdicts: Vec<Verdict>,
    pub trace_hash: String,
    pub sim_ms: u64,
    pub calls: usize,
    pub outcome: run::Outcome,
}

impl Judged {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(Verdict::ok)
    }
}

pub fn judge(scenario: Scenario, seed: u64, opts: run::Options) -> Judged {
    let outcome = run::run(&scenario, seed, opts);
    let verdicts = invariants::check_all(&scenario, &outcome);
    Judged {
        seed,
        trace_hash: outcome.oracle.trace_hash(),
        sim_ms: outcome.sim_ms,
        calls: outcome.oracle.calls.len(),
        verdicts,
        scenario,
        outcome,
    }
}
