//! Advanced HA, decided purely: which members answer (a heartbeat failure detector whose clock comes
//! in as an argument), whether this node still reaches a majority of voters, and, for a trunk's
//! `advanced_ha` level, the ordered list of nodes its next call should leave from (2T zone
//! round-robin, 4T region failover, both).
//!
//! The order is the whole plan: the ingress tries the first node and moves down the list when a
//! node does not take the call (PRODUCT.md "Advanced HA").

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::trunk::AdvancedHa;

/// A member as Raft membership describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub region: String,
    pub zone: String,
    /// Runs SIP (a witness does not).
    pub sip: bool,
    pub voter: bool,
    /// Where its SIP listens (`ip:port`, UDP), empty for a witness.
    pub sip_addr: String,
}

/// A member and what the failure detector says of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberHealth {
    #[serde(flatten)]
    pub member: Member,
    /// Answered a heartbeat within the threshold (always true for this node).
    pub alive: bool,
    /// Says it reaches a majority of voters (its last heartbeat answer; this node: its own view).
    pub quorum: bool,
}

impl MemberHealth {
    /// Can deliver calls: runs SIP, answers, and can admit.
    pub fn healthy(&self) -> bool {
        self.member.sip && self.alive && self.quorum
    }
}

/// The cluster as one node sees it at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthView {
    pub self_id: u64,
    /// This node reaches a majority of voters (itself included).
    pub quorum: bool,
    pub members: Vec<MemberHealth>,
}

impl HealthView {
    /// A node alone: the one-voter cluster `hatrunk run` starts with.
    pub fn single(member: Member) -> HealthView {
        let self_id = member.id;
        HealthView { self_id, quorum: true, members: vec![MemberHealth { member, alive: true, quorum: true }] }
    }

    pub fn get(&self, id: u64) -> Option<&MemberHealth> {
        self.members.iter().find(|m| m.member.id == id)
    }

    /// The member whose SIP address is `addr` (how a forwarded INVITE's sender is recognised).
    pub fn by_sip_addr(&self, addr: &str) -> Option<&MemberHealth> {
        self.members.iter().find(|m| m.member.sip && m.member.sip_addr == addr)
    }

    /// Count a SIP member down while its SIP does not answer (`sip`: answers to the OPTIONS this
    /// node sends members), whatever its cluster heartbeat says: a wedged engine or a SIP port
    /// blocked between members would otherwise keep taking forwarded calls that all wait out the
    /// forward timer. Quorum is left alone: it is about reaching the Raft voters.
    pub fn require_sip(&mut self, sip: &Liveness, now: u64, threshold_ms: u64) {
        let me = self.self_id;
        for m in self.members.iter_mut().filter(|m| m.member.sip && m.member.id != me) {
            if !sip.state(m.member.id, now, threshold_ms).0 {
                m.alive = false;
            }
        }
    }
}

/// The detector's verdict. Heartbeats go over gRPC, that is TCP, where a segment lost twice in a row
/// holds back every later heartbeat on the connection for over a second (two retransmission
/// timeouts, the second doubled), so they are judged against `grace_ms`. A SIP member must also
/// answer the OPTIONS this node sends it over UDP (`sip`, when this node probes) within
/// `threshold_ms`: datagrams are lost one by one, so that path reacts fast without false alarms
/// (docs/decisions.md, Raft and detector timing). This node's quorum counts the voters that answered
/// either within `threshold_ms`, so a node cut off from the others stops taking calls as fast as
/// before (simulation seed 3500088: judged at the grace, a cut-off zone took calls for 3 s).
pub fn judge(
    beats: &Liveness,
    sip: Option<&Liveness>,
    self_id: u64,
    members: &[Member],
    now: u64,
    threshold_ms: u64,
    grace_ms: u64,
) -> HealthView {
    let mut v = beats.view(self_id, members, now, grace_ms);
    if let Some(sip) = sip {
        v.require_sip(sip, now, threshold_ms);
        let q = majority(self_id, members, |id| beats.state(id, now, threshold_ms).0 || sip.state(id, now, threshold_ms).0);
        v.quorum = q;
        if let Some(me) = v.members.iter_mut().find(|m| m.member.id == self_id) {
            me.quorum = q;
        }
    }
    v
}

/// `self_id` is a member and more than half the voters, itself included, are `heard`.
fn majority(self_id: u64, members: &[Member], heard: impl Fn(u64) -> bool) -> bool {
    let voters = members.iter().filter(|m| m.voter).count();
    let reached = members.iter().filter(|m| m.voter && (m.id == self_id || heard(m.id))).count();
    voters > 0 && members.iter().any(|m| m.id == self_id) && reached * 2 > voters
}

/// Heartbeat answers seen so far: when each peer last answered, and whether it then had quorum.
///
/// With hysteresis (`recover_after` > 1), a member that was down (a gap longer than the threshold
/// between two answers) counts as up again only after that many answers in a row, each within the
/// threshold of the one before: a flapping link then does not flip traffic with every answer. A
/// member never seen down is up from its first answer (a cluster starting does not wait).
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    last_ok: BTreeMap<u64, Peer>,
    recover_after: u32,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    at: u64,
    quorum: bool,
    /// Answers in a row, none further than the threshold from the one before.
    streak: u32,
    /// It was down at some point (a gap longer than the threshold between answers).
    was_down: bool,
}

impl Liveness {
    /// A detector where a member that was down needs `recover_after` answers in a row to be up.
    pub fn with_recovery(recover_after: u32) -> Liveness {
        Liveness { recover_after, ..Liveness::default() }
    }

    /// `id` answered a heartbeat at `now` (ms); `threshold_ms` says how old the previous answer
    /// may be for this one to continue its run.
    pub fn observe_within(&mut self, id: u64, now: u64, quorum: bool, threshold_ms: u64) {
        let p = match self.last_ok.get(&id) {
            Some(p) if now.saturating_sub(p.at) <= threshold_ms => Peer { at: now, quorum, streak: p.streak.saturating_add(1), ..*p },
            Some(_) => Peer { at: now, quorum, streak: 1, was_down: true },
            None => Peer { at: now, quorum, streak: 1, was_down: false },
        };
        self.last_ok.insert(id, p);
    }

    /// `id` answered a heartbeat at `now` (ms), with no hysteresis bookkeeping.
    pub fn observe(&mut self, id: u64, now: u64, quorum: bool) {
        self.observe_within(id, now, quorum, u64::MAX);
    }

    /// Forget members that left.
    pub fn retain(&mut self, ids: &BTreeSet<u64>) {
        self.last_ok.retain(|id, _| ids.contains(id));
    }

    /// Whether `id` answered within `threshold_ms` before `now` (and, back from being down, enough
    /// times in a row), and its quorum flag then.
    pub fn state(&self, id: u64, now: u64, threshold_ms: u64) -> (bool, bool) {
        match self.last_ok.get(&id) {
            Some(p) if now.saturating_sub(p.at) <= threshold_ms && (!p.was_down || p.streak >= self.recover_after.max(1)) => {
                (true, p.quorum)
            }
            _ => (false, false),
        }
    }

    /// The view from `self_id` at `now`: members alive per the threshold; this node has quorum when
    /// more than half the voters (itself included) are alive.
    pub fn view(&self, self_id: u64, members: &[Member], now: u64, threshold_ms: u64) -> HealthView {
        let quorum = majority(self_id, members, |id| self.state(id, now, threshold_ms).0);
        let members = members
            .iter()
            .map(|m| {
                let (alive, q) = if m.id == self_id { (true, quorum) } else { self.state(m.id, now, threshold_ms) };
                MemberHealth { member: m.clone(), alive, quorum: q }
            })
            .collect();
        HealthView { self_id, quorum, members }
    }
}

/// The region calls prefer under 4T: the configured one, else the one whose name sorts first.
fn region_order(view: &HealthView, primary_region: Option<&str>) -> Vec<String> {
    let mut regions: Vec<String> =
        view.members.iter().filter(|m| m.member.sip).map(|m| m.member.region.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let first = primary_region.filter(|p| regions.iter().any(|r| r == p)).map(str::to_string).or_else(|| regions.first().cloned());
    if let Some(first) = first {
        regions.retain(|r| *r != first);
        regions.insert(0, first);
    }
    regions
}

/// Healthy SIP nodes of `zone` in `region`: this node first when it is one of them (no extra hop),
/// otherwise rotated by `turn` so the zone's nodes share the load.
fn nodes_in(view: &HealthView, region: &str, zone: Option<&str>, turn: u64) -> Vec<u64> {
    let mut ids: Vec<u64> = view
        .members
        .iter()
        .filter(|m| m.healthy() && m.member.region == region && zone.is_none_or(|z| m.member.zone == z))
        .map(|m| m.member.id)
        .collect();
    ids.sort_unstable();
    if let Some(pos) = ids.iter().position(|&i| i == view.self_id) {
        let me = ids.remove(pos);
        ids.insert(0, me);
    } else if !ids.is_empty() {
        let k = (turn as usize) % ids.len();
        ids.rotate_left(k);
    }
    ids
}

/// Zones of `region` (every SIP member's zone, healthy or not, so the rotation keeps its rhythm
/// while a zone is down), starting at the one `turn` picks; each contributes its healthy nodes.
fn zone_round_robin(view: &HealthView, region: &str, turn: u64) -> Vec<u64> {
    let zones: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.member.sip && m.member.region == region)
        .map(|m| m.member.zone.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if zones.is_empty() {
        return Vec::new();
    }
    let n = zones.len();
    let start = (turn as usize) % n;
    let within = turn / n as u64;
    (0..n).flat_map(|i| nodes_in(view, region, Some(&zones[(start + i) % n]), within)).collect()
}

/// The nodes a call should leave from, best first. `turn` is the trunk's round-robin counter at
/// this ingress (one step per call). Empty when no node can take the call.
pub fn egress_order(level: AdvancedHa, view: &HealthView, primary_region: Option<&str>, turn: u64) -> Vec<u64> {
    let me = view.get(view.self_id);
    match level {
        AdvancedHa::None => me.filter(|m| m.healthy()).map(|m| vec![m.member.id]).unwrap_or_default(),
        AdvancedHa::TwoT => match me {
            Some(m) => zone_round_robin(view, &m.member.region, turn),
            None => Vec::new(),
        },
        AdvancedHa::FourT => region_order(view, primary_region).iter().flat_map(|r| nodes_in(view, r, None, turn)).collect(),
        AdvancedHa::TwoTFourT => region_order(view, primary_region).iter().flat_map(|r| zone_round_robin(view, r, turn)).collect(),
    }
}

#[cfg(test)]
#[path = "ha_tests.rs"]
mod tests;
