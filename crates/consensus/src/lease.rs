//! Admission leases: a node admits new calls only while it holds a lease granted through the Raft
//! group, and what it may have admitted is bounded by what it last reported, so capacity stranded
//! on a lost node comes back by a rule that cannot over-admit.
//!
//! ```text
//!            Renew (every RENEW_EVERY_MS)             Lapse (leader, LEASE_MS + margin unrenewed)
//!   Boot ──► Live ◄──────────────────────── Lapsed ◄──────────────────────── Live
//!                                            │  shares cut to what the node kept at its last renewal
//!   Retire (cluster remove) ──► Retired      │  Expire (leader, the longest call's duration later)
//!                                            ▼  every share of the node goes back
//! ```
//!
//! Each renewal reports, per trunk, `keep`: the node's calls in progress plus the slots kept for
//! its earlier runs' calls plus a headroom (a batch, about 3 s of calls at the current rate, or
//! the calls waiting there to be decided, whichever is most: `Escrow::propose`). Until the next renewal commits, the node
//! admits no more than that (`hatrunk_core::escrow` caps), so at any moment its calls in progress
//! are within the `keep` of its last committed renewal. Hence cutting its share to `keep` once its
//! lease lapsed never frees a slot a call holds. A node stops admitting when its lease runs out by
//! its own monotonic clock, `DRIFT_MARGIN_MS` before the members will act on it, so `Expire`,
//! the longest call's duration after the lapse was seen, frees only slots of calls that cannot be
//! up any more. Timing here is on each member's monotonic clock, never replicated: the leader that
//! acts uses the moment it saw the last renewal applied, which is never before it was sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::Command;

/// How long a renewal lets a node admit, from when it sent the renewal. It must outlast a leader
/// election with room to spare, or losing the leader stops admission everywhere: the node's last
/// renewal may be half a second old when the leader goes, and elections take 2.4-3.2 s with the
/// default Raft timing, one more timeout (0.8-1.6 s) after a split vote, and were seen at 4.6 s on
/// a loaded two-core box. At 4 s (3.1-3.6 s left after the loss) a cluster refused every call
/// through such elections; `hatrunk demo` refused calls for 2 s with a 2 s lease. The price of a
/// longer lease: a lost node's unused reserve comes back that much later.
pub const LEASE_MS: u64 = 7000;
/// A node renews this often, so several renewals may fail before its lease runs out.
pub const RENEW_EVERY_MS: u64 = 500;
/// A node stops admitting this much before its lease ends, and the leader waits this much after:
/// clocks whose rates differ by up to 10% over a lease cannot make them overlap.
pub const DRIFT_MARGIN_MS: u64 = LEASE_MS / 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// Renewed; the node may admit.
    Live,
    /// Not renewed in time: shares cut to what it kept; its calls' slots wait for `Expire`.
    Lapsed,
    /// Removed from the cluster: never renewed again unless it rejoins.
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRec {
    /// Renewals so far; a `Lapse` or `Expire` applies only to the renewal it was decided on.
    pub seq: u64,
    pub state: LeaseState,
    /// Per trunk, the most the node may hold for calls until its next renewal.
    pub keep: BTreeMap<String, u32>,
    /// Taking no new calls (a drain before removal).
    pub draining: bool,
}

impl LeaseRec {
    fn new(state: LeaseState) -> LeaseRec {
        LeaseRec { seq: 0, state, keep: BTreeMap::new(), draining: false }
    }
}

/// Why a renewal was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoLease {
    Retired,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    nodes: BTreeMap<String, LeaseRec>,
}

impl Leases {
    pub fn get(&self, node: &str) -> Option<&LeaseRec> {
        self.nodes.get(node)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &LeaseRec)> {
        self.nodes.iter()
    }

    /// A node booted: a lease record from now, keeping what its earlier runs hold. A retired node
    /// stays retired (a removed node restarted is still not a member).
    pub fn boot(&mut self, node: &str, keep: BTreeMap<String, u32>) {
        let rec = self.nodes.entry(node.to_string()).or_insert(LeaseRec::new(LeaseState::Live));
        rec.seq += 1;
        rec.keep = keep;
        if rec.state != LeaseState::Retired {
            rec.state = LeaseState::Live;
        }
    }

    /// A renewal: the lease is live again with `keep`. Returns whether it had lapsed (the node's
    /// shares were cut meanwhile) and whether the node is draining.
    pub fn renew(&mut self, node: &str, keep: BTreeMap<String, u32>) -> Result<(bool, bool), NoLease> {
        let rec = self.nodes.entry(node.to_string()).or_insert(LeaseRec::new(LeaseState::Lapsed));
        if rec.state == LeaseState::Retired {
            return Err(NoLease::Retired);
        }
        let lapsed = rec.state == LeaseState::Lapsed;
        rec.seq += 1;
        rec.state = LeaseState::Live;
        rec.keep = keep;
        Ok((lapsed, rec.draining))
    }

    /// The leader decided renewal `seq` ran out. Returns what to cut the node's shares to, if it
    /// still applies (no renewal since).
    pub fn lapse(&mut self, node: &str, seq: u64) -> Option<BTreeMap<String, u32>> {
        let rec = self.nodes.get_mut(node).filter(|r| r.seq == seq && r.state == LeaseState::Live)?;
        rec.state = LeaseState::Lapsed;
        Some(rec.keep.clone())
    }

    /// Whether `Expire` decided on `seq` still applies.
    pub fn expire(&mut self, node: &str, seq: u64) -> bool {
        match self.nodes.get_mut(node) {
            Some(rec) if rec.seq == seq && rec.state != LeaseState::Live => {
                rec.keep.clear();
                true
            }
            _ => false,
        }
    }

    /// The node was removed: what to cut its shares to (its calls stay held until `Expire`).
    pub fn retire(&mut self, node: &str) -> BTreeMap<String, u32> {
        let rec = self.nodes.entry(node.to_string()).or_insert(LeaseRec::new(LeaseState::Retired));
        rec.state = LeaseState::Retired;
        rec.draining = false;
        rec.seq += 1;
        rec.keep.clone()
    }

    /// The node was added (again): it may renew.
    pub fn rejoin(&mut self, node: &str) {
        if let Some(rec) = self.nodes.get_mut(node).filter(|r| r.state == LeaseState::Retired) {
            rec.state = LeaseState::Lapsed;
            rec.seq += 1;
        }
    }

    pub fn set_draining(&mut self, node: &str, on: bool) {
        if let Some(rec) = self.nodes.get_mut(node) {
            rec.draining = on;
        }
    }
}

/// What one member saw of each lease, on its own monotonic clock; the leader acts on it.
#[derive(Debug, Default)]
pub struct Watch {
    seen: BTreeMap<String, (u64, LeaseState, u64)>,
}

impl Watch {
    /// Look at the leases at `now_ms` and say which commands are due: a `Lapse` for a lease not
    /// renewed within `LEASE_MS + DRIFT_MARGIN_MS` of when this member saw it renewed, of a node
    /// that holds shares (one holding none has nothing to give back), an `Expire`
    /// once `hold_ms(node)` (the longest call any of its trunks allows) passed since it saw the lapse
    /// or retirement, for a node that still holds shares (`holds`).
    /// A node no longer in the membership (`member`) whose lease is not retired gets a `Retire`,
    /// and a member whose lease is retired a `Rejoin`: so a removal or join whose own write failed
    /// is finished by whichever member leads next.
    pub fn due(
        &mut self,
        leases: &Leases,
        member: impl Fn(&str) -> bool,
        holds: impl Fn(&str) -> bool,
        hold_ms: impl Fn(&str) -> u64,
        now_ms: u64,
    ) -> Vec<Command> {
        self.seen.retain(|n, _| leases.get(n).is_some());
        let mut out = Vec::new();
        for (node, rec) in leases.iter() {
            let at = match self.seen.get(node) {
                Some((seq, state, at)) if *seq == rec.seq && *state == rec.state => *at,
                _ => {
                    self.seen.insert(node.clone(), (rec.seq, rec.state, now_ms));
                    now_ms
                }
            };
            let waited = now_ms.saturating_sub(at);
            match (rec.state == LeaseState::Retired, member(node)) {
                (false, false) => {
                    out.push(Command::Retire { node: node.clone() });
                    continue;
                }
                (true, true) => {
                    out.push(Command::Rejoin { node: node.clone() });
                    continue;
                }
                _ => {}
            }
            match rec.state {
                LeaseState::Live if holds(node) && waited >= LEASE_MS + DRIFT_MARGIN_MS => {
                    out.push(Command::Lapse { node: node.clone(), seq: rec.seq })
                }
                LeaseState::Lapsed | LeaseState::Retired if holds(node) && waited >= hold_ms(node) => {
                    out.push(Command::Expire { node: node.clone(), seq: rec.seq })
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(n: u32) -> BTreeMap<String, u32> {
        [("t".to_string(), n)].into()
    }

    #[test]
    fn a_lease_lapses_only_for_the_renewal_it_was_decided_on() {
        let mut l = Leases::default();
        l.boot("n1", keep(0));
        assert_eq!(l.renew("n1", keep(3)), Ok((false, false)));
        let seq = l.get("n1").map(|r| r.seq).expect("rec");
        assert_eq!(l.renew("n1", keep(4)), Ok((false, false)));
        assert_eq!(l.lapse("n1", seq), None, "renewed since the decision");
        assert_eq!(l.lapse("n1", seq + 1), Some(keep(4)));
        assert_eq!(l.get("n1").map(|r| r.state), Some(LeaseState::Lapsed));
        assert_eq!(l.renew("n1", keep(1)), Ok((true, false)), "the node hears its shares were cut");
        assert!(!l.expire("n1", seq + 2), "a live lease does not expire");
    }

    #[test]
    fn a_retired_node_renews_only_after_it_rejoins() {
        let mut l = Leases::default();
        l.boot("n1", keep(0));
        l.renew("n1", keep(2)).expect("renew");
        assert_eq!(l.retire("n1"), keep(2));
        assert_eq!(l.renew("n1", keep(2)), Err(NoLease::Retired));
        l.boot("n1", keep(2));
        assert_eq!(l.renew("n1", keep(2)), Err(NoLease::Retired), "restarting does not make it a member");
        l.rejoin("n1");
        assert_eq!(l.renew("n1", keep(2)), Ok((true, false)));
    }

    #[test]
    fn the_watch_lapses_after_the_lease_and_expires_after_the_longest_call() {
        let mut l = Leases::default();
        let mut w = Watch::default();
        l.boot("n1", keep(0));
        l.renew("n1", keep(2)).expect("renew");
        let seq = l.get("n1").map(|r| r.seq).expect("rec");
        let due = |w: &mut Watch, l: &Leases, now| w.due(l, |_| true, |_| true, |_| 10_000, now);
        assert!(due(&mut w, &l, 1000).is_empty(), "first seen at 1000");
        assert!(due(&mut w, &l, 1000 + LEASE_MS + DRIFT_MARGIN_MS - 1).is_empty());
        assert_eq!(due(&mut w, &l, 1000 + LEASE_MS + DRIFT_MARGIN_MS), vec![Command::Lapse { node: "n1".into(), seq }]);
        l.lapse("n1", seq).expect("lapsed");
        assert!(due(&mut w, &l, 5000).is_empty(), "lapse seen at 5000");
        assert!(due(&mut w, &l, 14_999).is_empty());
        assert_eq!(due(&mut w, &l, 15_000), vec![Command::Expire { node: "n1".into(), seq }]);
        assert!(w.due(&l, |_| true, |_| false, |_| 0, 20_000).is_empty(), "nothing held: nothing to expire");
        assert_eq!(
            w.due(&l, |_| false, |_| false, |_| 0, 20_000),
            vec![Command::Retire { node: "n1".into() }],
            "removed, retire unwritten"
        );
        l.retire("n1");
        assert_eq!(
            w.due(&l, |_| true, |_| false, |_| 0, 20_000),
            vec![Command::Rejoin { node: "n1".into() }],
            "added back, rejoin unwritten"
        );
    }
}
