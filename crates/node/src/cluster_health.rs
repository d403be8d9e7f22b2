//! The failure detector at the edge: a heartbeat (`Ping` on the cluster gRPC) to every other member
//! each interval, answers fed to the pure [`Liveness`] in `core`, and the resulting [`HealthView`]
//! handed to the proxy (egress choice) and the admin API (`members`). On a SIP node the engine also
//! sends every SIP member an OPTIONS each interval (`proxy/members.rs`); a member whose SIP stops
//! answering is down even while its heartbeat answers. Membership comes from Raft; nothing is
//! gossiped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hatrunk_consensus::pb::cluster_client::ClusterClient;
use hatrunk_consensus::raft::{ping, Consensus};
use hatrunk_core::ha::{HealthView, Liveness, Member};
use tonic::transport::Channel;

/// What the proxy needs from the cluster: who is there and who answers, now.
pub trait ClusterView: Send + Sync {
    fn view(&self, now_ms: u64) -> HealthView;

    /// Whether this node reaches a majority of voters (asked for every new INVITE: keep it cheap).
    fn quorum(&self, now_ms: u64) -> bool {
        self.view(now_ms).quorum
    }

    /// Member `id`'s SIP answered this node's OPTIONS at `now_ms`.
    fn sip_answered(&self, _id: u64, _now_ms: u64) {}
}

/// A fixed view (a node alone, or a test's).
impl ClusterView for HealthView {
    fn view(&self, _now_ms: u64) -> HealthView {
        self.clone()
    }
}

/// Detector timing (`[cluster] ping_interval_ms`, `failure_threshold_ms`, `heartbeat_grace_ms`).
#[derive(Debug, Clone, Copy)]
pub struct DetectorTiming {
    pub interval_ms: u64,
    /// SIP answers (UDP).
    pub threshold_ms: u64,
    /// Heartbeat answers (gRPC over TCP).
    pub grace_ms: u64,
    /// A member back from being down counts as up after this many answers in a row.
    pub recover_after: u32,
}

pub struct ClusterHealth {
    consensus: Arc<Consensus>,
    timing: DetectorTiming,
    liveness: Mutex<Liveness>,
    /// Answers to the engine's OPTIONS, when this node runs SIP (a witness sends none).
    sip: Option<Mutex<Liveness>>,
    /// Members whose heartbeat answers while their SIP does not (logged when it changes).
    sip_silent: Mutex<BTreeSet<u64>>,
    /// Shared with the cluster service, which reports it in `Ping` answers.
    pub quorum: Arc<AtomicBool>,
    clients: Mutex<HashMap<u64, (String, ClusterClient<Channel>)>>,
    in_flight: Mutex<HashSet<u64>>,
    clock: fn() -> u64,
    /// What was last announced in the log (leader, members, zones, regions down).
    changes: Mutex<crate::cluster_events::Changes>,
}

impl ClusterHealth {
    /// `probes_sip`: this node's engine probes the other members' SIP, and its view requires answers.
    pub fn new(consensus: Arc<Consensus>, timing: DetectorTiming, clock: fn() -> u64, probes_sip: bool) -> Arc<ClusterHealth> {
        let h = Arc::new(ClusterHealth {
            consensus,
            timing,
            liveness: Mutex::new(Liveness::with_recovery(timing.recover_after)),
            sip: probes_sip.then(|| Mutex::new(Liveness::with_recovery(timing.recover_after))),
            sip_silent: Mutex::new(BTreeSet::new()),
            quorum: Arc::new(AtomicBool::new(false)),
            clients: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            clock,
            changes: Mutex::new(Default::default()),
        });
        h.refresh_quorum();
        h
    }

    /// The members Raft's membership names, with their place and role.
    pub fn members(&self) -> Vec<Member> {
        let m = self.consensus.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
        m.membership()
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                name: n.name.clone(),
                region: n.region.clone(),
                zone: n.zone.clone(),
                sip: n.role == hatrunk_consensus::NodeRole::Sip,
                voter: voters.contains(id),
                sip_addr: n.sip_addr.clone(),
            })
            .collect()
    }

    fn refresh_quorum(&self) {
        let now = (self.clock)();
        let v = self.view(now);
        self.quorum.store(v.quorum, Ordering::Relaxed);
        self.log_sip_silence(&v, now);
    }

    /// One line when a member's SIP goes silent while its heartbeat answers, and one when that
    /// ends, saying how: its SIP answers again, its heartbeat went silent too, or it left.
    fn log_sip_silence(&self, v: &HealthView, now: u64) {
        let Some(sip) = &self.sip else { return };
        // per SIP member: (heartbeat answers, SIP answers)
        let states: BTreeMap<u64, (bool, bool)> = {
            let sip = sip.lock().unwrap_or_else(|p| p.into_inner());
            let live = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
            v.members
                .iter()
                .filter(|m| m.member.sip && m.member.id != v.self_id)
                .map(|m| {
                    let id = m.member.id;
                    (id, (live.state(id, now, self.timing.grace_ms).0, sip.state(id, now, self.timing.threshold_ms).0))
                })
                .collect()
        };
        let silent: BTreeSet<u64> = states.iter().filter(|(_, (beat, sip))| *beat && !*sip).map(|(id, _)| *id).collect();
        let mut was = self.sip_silent.lock().unwrap_or_else(|p| p.into_inner());
        for id in silent.difference(&was) {
            tracing::warn!(member = id, "member's SIP does not answer while its cluster heartbeat does: counted down, calls go elsewhere");
        }
        for id in was.difference(&silent) {
            match states.get(id) {
                Some((_, true)) => tracing::info!(member = id, "member's SIP answers again"),
                Some((false, false)) => tracing::warn!(member = id, "member's cluster heartbeat is silent too: member down"),
                _ => tracing::info!(member = id, "member is no longer a SIP member of the cluster"),
            }
        }
        *was = silent;
    }

    /// Heartbeat every member each interval until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(me.timing.interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.round();
                me.refresh_quorum();
                me.announce();
            }
        });
    }

    /// The Raft leader this node knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        self.consensus.raft.metrics().borrow().current_leader
    }

    /// Raft log entries each member is behind the leader, known on the leader only (empty elsewhere).
    pub fn lag(&self) -> std::collections::BTreeMap<u64, u64> {
        let m = self.consensus.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        m.replication.iter().flatten().map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index)))).collect()
    }

    /// The health view now (the detector's clock).
    pub fn view_now(&self) -> HealthView {
        self.view((self.clock)())
    }

    /// Log what changed since the last round: the leader, members, zones and regions down and up.
    fn announce(&self) {
        use crate::cluster_events::Event;
        let leader = self.consensus.raft.metrics().borrow().current_leader;
        let view = self.view((self.clock)());
        let events = self.changes.lock().unwrap_or_else(|p| p.into_inner()).observe(leader, &view);
        for e in events {
            match e {
                Event::Leader(Some(n)) => tracing::info!(leader = %n, "cluster leader changed"),
                Event::Leader(None) => tracing::warn!("no cluster leader known: trunk changes and share grants wait"),
                Event::MemberDown(n) => tracing::warn!(member = %n, "member down: calls go to the others"),
                Event::MemberUp(n) => tracing::info!(member = %n, "member up"),
                Event::ZoneDown(z) => tracing::warn!(zone = %z, "zone down: none of its members answers"),
                Event::ZoneUp(z) => tracing::info!(zone = %z, "zone up"),
                Event::RegionDown(r) => tracing::warn!(region = %r, "region down: none of its members answers"),
                Event::RegionUp(r) => tracing::info!(region = %r, "region up"),
            }
        }
    }

    fn round(self: &Arc<Self>) {
        let members = self.members();
        let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
        self.liveness.lock().unwrap_or_else(|p| p.into_inner()).retain(&ids);
        if let Some(sip) = &self.sip {
            sip.lock().unwrap_or_else(|p| p.into_inner()).retain(&ids);
        }
        let self_id = self.consensus.id;
        for m in members.into_iter().filter(|m| m.id != self_id) {
            if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(m.id) {
                continue; // the previous heartbeat is still out (a hung peer): do not pile up
            }
            let Some(mut client) = self.client(m.id) else {
                self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.id);
                continue;
            };
            let me = self.clone();
            // an answer later than the grace is as good as none
            let timeout = Duration::from_millis(self.timing.grace_ms);
            tokio::spawn(async move {
                let r = ping(&mut client, self_id, timeout).await;
                if let Ok((id, quorum)) = r {
                    if id == m.id {
                        let grace = me.timing.grace_ms;
                        me.liveness.lock().unwrap_or_else(|p| p.into_inner()).observe_within(id, (me.clock)(), quorum, grace);
                    }
                }
                me.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.id);
            });
        }
    }

    /// A channel per member, rebuilt when its address changes.
    fn client(&self, id: u64) -> Option<ClusterClient<Channel>> {
        let addr = self.consensus.raft.metrics().borrow().membership_config.membership().get_node(&id)?.cluster_addr.clone();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, c)) = clients.get(&id) {
            if *a == addr {
                return Some(c.clone());
            }
        }
        let c = ClusterClient::new(self.consensus.dial(&addr).ok()?);
        clients.insert(id, (addr, c.clone()));
        Some(c)
    }
}

impl ClusterView for ClusterHealth {
    fn view(&self, now_ms: u64) -> HealthView {
        let members = self.members();
        let t = self.timing;
        // sip before liveness, as in log_sip_silence: one order, no deadlock
        let sip = self.sip.as_ref().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()));
        let beats = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        hatrunk_core::ha::judge(&beats, sip.as_deref(), self.consensus.id, &members, now_ms, t.threshold_ms, t.grace_ms)
    }

    fn sip_answered(&self, id: u64, now_ms: u64) {
        if let Some(sip) = &self.sip {
            sip.lock().unwrap_or_else(|p| p.into_inner()).observe_within(id, now_ms, true, self.timing.threshold_ms);
        }
    }

    /// As of the last detector round (at most one interval old).
    fn quorum(&self, _now_ms: u64) -> bool {
        self.quorum.load(Ordering::Relaxed)
    }
}
